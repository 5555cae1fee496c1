"""Leak ~100 KB/s of strings kept in a list (objects the cyclic GC never sees)."""
from _harness import Pacer, Run

import random


def main():
    run = Run("leak_fast_untracked", leaking=True, duration=240)
    kept = []
    rnd = random.Random(1)
    while run.running() and run.now() < 30:
        run.sleep(0.25)
    run.mark_leak_start()
    pacer = Pacer(run, 100 * 1024, lambda: "%x" % rnd.getrandbits(400) * 2, kept.append)
    while run.running():
        pacer.step()
        run.sleep(0.25)
    run.finish(expect_type="str", unit=pacer.unit)


if __name__ == "__main__":
    main()
