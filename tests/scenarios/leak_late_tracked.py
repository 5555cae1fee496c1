"""An old process: five minutes of steady churn, then ~100 KB/s of tracked objects kept
(target: reported within 60 s of the leak's start)."""
from _harness import Pacer, Run, churn


class Job:
    def __init__(self, n):
        self.n = n
        self.args = {"n": n, "name": "job%d" % n}
        self.log = [n, n * 2]


def main():
    run = Run("leak_late_tracked", leaking=True, duration=480)
    done = []
    counter = iter(range(10**9))
    while run.running() and run.now() < 300:
        churn(300)
        run.sleep(0.25)
    run.mark_leak_start()
    pacer = Pacer(run, 100 * 1024, lambda: Job(next(counter)), done.append)
    while run.running():
        churn(300)
        pacer.step()
        run.sleep(0.25)
    run.finish(expect_type="__main__.Job", unit=pacer.unit)


if __name__ == "__main__":
    main()
