"""Leak ~100 KB/s of tracked objects (instances with a __dict__) after 30 s of steady work."""
from _harness import Pacer, Run, churn


class Session:
    def __init__(self, n):
        self.user = {"id": n, "name": f"user{n}", "roles": ["a", "b"]}
        self.history = [n, n + 1, n + 2]


def main():
    run = Run("leak_fast_tracked", leaking=True, duration=240)
    sessions = []
    counter = iter(range(10**9))
    while run.running() and run.now() < 30:
        churn(300)
        run.sleep(0.25)
    run.mark_leak_start()
    pacer = Pacer(run, 100 * 1024, lambda: Session(next(counter)), sessions.append)
    while run.running():
        churn(300)
        pacer.step()
        run.sleep(0.25)
    run.finish(expect_type="__main__.Session", unit=pacer.unit)


if __name__ == "__main__":
    main()
