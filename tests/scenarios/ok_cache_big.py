"""A bounded cache that fills ~110 MB during the first minute (2 MB/s of 1 KiB values),
then stays bounded (LRU eviction of a few entries a second): never a leak.

``--mb N`` sets the size (the scenario tests use less: at 1/10 of real time the
fill is ten times the bytes per real second, more than a loaded 2-core machine
gives ten processes at once)."""
import argparse
import sys
from collections import OrderedDict

from _harness import Run, churn


def _capacity() -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mb", type=float, default=110)
    ns, rest = pre.parse_known_args()
    sys.argv[1:] = rest
    return int(ns.mb * 1000)


def main():
    capacity = _capacity()
    rate = capacity / 55          # entries per nominal second: full at 55 s
    run = Run("ok_cache_big", leaking=False, duration=600)
    cache = OrderedDict()
    n = 0
    filled_at = None
    while run.running():
        t = run.now()
        # 2000 misses per nominal second while it fills (55 s), then 20.
        due = int(min(t, 55) * rate + max(0.0, t - 55) * 20)
        while n < due:
            cache[n] = b"%d" % n * 128
            n += 1
            if len(cache) > capacity:
                cache.popitem(last=False)
                if filled_at is None:
                    filled_at = round(t, 1)
        churn(200)
        run.sleep(0.25)
    run.finish(cache_size=len(cache), filled_at=filled_at)


if __name__ == "__main__":
    main()
