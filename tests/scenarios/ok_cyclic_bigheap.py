"""Cyclic garbage piling up on a big heap between rare full collections (no leak).

Sessions (dicts in reference cycles, ~1 KB each) live for ~10 s in a bounded deque, long
enough to reach the oldest generation, then are dropped: only a full collection frees
them, and on a heap of --heap objects (default 500k dicts) CPython runs one only when a
quarter as many objects have been promoted since the last, minutes apart.  Between them
RSS and the live block count rise by ~200 KB/s, like a leak; a forced full collection
takes it all back."""
from collections import deque

from _harness import Run, heap_arg, heap_facts, long_lived_heap


def main():
    heap = long_lived_heap(*heap_arg())
    run = Run("ok_cyclic_bigheap", leaking=False, duration=600)
    live = deque(maxlen=2000)
    n = 0
    while run.running():
        for _ in range(50):       # 200 sessions per nominal second
            s = {"id": n, "payload": "x" * 800}
            s["self"] = s
            s["items"] = [s, n]
            live.append(s)
            n += 1
        run.sleep(0.25)
    run.finish(**heap_facts(heap), sessions=n)


if __name__ == "__main__":
    main()
