"""A runaway leak: ~3 MB/s of tracked objects holding strings, from 30 s on.  Must be
reported as soon as a slow leak would, never later (RSS climbs by gigabytes otherwise)."""
from _harness import Pacer, Run, churn


class Record:
    def __init__(self, n):
        self.n = n
        self.body = "%d" % n * 100


def main():
    run = Run("leak_runaway", leaking=True, duration=240)
    kept = []
    counter = iter(range(10**9))
    while run.running() and run.now() < 30:
        churn(300)
        run.sleep(0.25)
    run.mark_leak_start()
    pacer = Pacer(run, 3 * 1024 * 1024, lambda: Record(next(counter)), kept.append)
    while run.running():
        churn(300)
        pacer.step()
        run.sleep(0.1)
    run.finish(expect_type="__main__.Record", unit=pacer.unit)


if __name__ == "__main__":
    main()
