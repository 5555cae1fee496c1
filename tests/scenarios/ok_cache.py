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
        misses = 2000 if run.now() < 20 else 100
        for _ in range(misses):
            cache[n] = {"key": n, "value": "v" * 200, "meta": [n, n]}
            n += 1
            if len(cache) > CAPACITY:
                cache.popitem(last=False)
        churn(300)
        run.sleep(0.25)
    run.finish(cache_size=len(cache))


if __name__ == "__main__":
    main()
