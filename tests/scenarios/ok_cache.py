"""A cache that fills at start-up (~20 MB in 20 s), then stays bounded (LRU eviction) under churn."""
from collections import OrderedDict

from _harness import Run, churn

CAPACITY = 40_000


def main():
    run = Run("ok_cache", leaking=False, duration=600)
    cache = OrderedDict()
    n = 0
    while run.running():
        # Fill fast at first (every request a miss), then mostly hits with a few misses.
        # Paced on the (nominal) clock, not per iteration: on a loaded machine an
        # iteration takes longer, and a per-iteration fill would stretch the
        # start-up fill into a slow ramp lasting minutes (which is a leak, for
        # that long).
        t = run.now()
        due = int(min(t, 20) * 8000 + max(0.0, t - 20) * 400)
        while n < due:
            cache[n] = {"key": n, "value": "v" * 200, "meta": [n, n]}
            n += 1
            if len(cache) > CAPACITY:
                cache.popitem(last=False)
        churn(300)
        run.sleep(0.25)
    run.finish(cache_size=len(cache))


if __name__ == "__main__":
    main()
