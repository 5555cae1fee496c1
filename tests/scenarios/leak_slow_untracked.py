"""Leak ~10 KB/s of 1 KiB bytes objects kept in a list, with some churn."""
import os

from _harness import Pacer, Run, churn


def main():
    run = Run("leak_slow_untracked", leaking=True, duration=1200)
    kept = []
    while run.running() and run.now() < 30:
        churn(100)
        run.sleep(0.5)
    run.mark_leak_start()
    pacer = Pacer(run, 10 * 1024, lambda: os.urandom(1024), kept.append)
    while run.running():
        churn(100)
        pacer.step()
        run.sleep(0.5)
    run.finish(expect_type="bytes", unit=pacer.unit)


if __name__ == "__main__":
    main()
