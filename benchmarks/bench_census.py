"""Census and HeapDiff cost against gc.collect() and the peer tools.

Usage:  python benchmarks/bench_census.py [--sizes 1000000,5000000] [--repeat 5]

For each heap size a fresh interpreter builds a synthetic heap (application
objects holding strings, ints, lists and tuples, as a service's caches do) and
measures, side by side in that one process:

* time: CPU time of this process (time.process_time: what the watched
  program pays, and stable when other work shares the machine), median of
  --repeat runs (slow peers: fewer runs, said in the table), and the ratio
  to one gc.collect() on the same heap;
* objects and bytes each tool reports;
* extra peak memory: tracemalloc's peak during the call minus before it
  (memwatch's C bookkeeping uses PyMem_Raw*, which tracemalloc traces), per
  object of the heap;
* HeapDiff start+end against the work it cannot avoid (two full collections
  plus two censuses), and the bytes per object an open HeapDiff holds.

Peers (objgraph, guppy3, pympler) are optional: `pip install .[peers]`.
Nothing here is asserted; it prints tables.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))


class Record:
    """One cached application object: ~7 heap objects with what it holds."""

    def __init__(self, i: int) -> None:
        self.name = "record-%d" % i
        self.value = i * 1000 + 7
        self.tags = ["tag-%d" % (i % 1000), "x"]
        self.pair = (i, self.name)


def build_heap(target_objects: int) -> list:
    import memwatch
    base = memwatch.census().total_count
    per = 7
    heap = [Record(i) for i in range(max(0, (target_objects - base) // per))]
    gc.collect()
    return heap


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        result = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), result


def peak_extra(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return peak - before


def measure(size: int, repeat: int, peers: bool) -> dict:
    import memwatch
    from memwatch import _core

    heap = build_heap(size)
    objects = memwatch.census().total_count
    rows = []

    def add(name, fn, runs, counts):
        t, res = timed(fn, runs)
        n_obj, n_bytes = counts(res)
        rows.append({"tool": name, "seconds": t, "runs": runs, "objects": n_obj,
                     "bytes": n_bytes, "peak": None, "_fn": fn})

    add("gc.collect()", gc.collect, repeat, lambda r: (None, None))
    add("memwatch.census()", memwatch.census, repeat, lambda c: (c.total_count, c.total_size))
    add("memwatch.census(tracked_only=True)", lambda: memwatch.census(tracked_only=True), repeat,
        lambda c: (c.total_count, c.total_size))
    # HeapDiff: start+end back to back, against the work it cannot avoid (two
    # collections + two censuses), both measured now, on the same heap, before
    # any peer tool has added its own objects to it.
    def heapdiff():
        hd = memwatch.HeapDiff()
        return hd.end()

    def floor():
        gc.collect()
        memwatch.census()
        gc.collect()
        memwatch.census()

    hd_runs = max(3, repeat)
    t_hd, _ = timed(heapdiff, hd_runs)
    t_floor, _ = timed(floor, hd_runs)
    hd = memwatch.HeapDiff()
    open_bytes = hd._before.record_bytes / hd._before.total_count
    hd.end()

    if peers:
        try:
            import objgraph
            add("objgraph.typestats()", objgraph.typestats, max(1, repeat // 2),
                lambda r: (sum(r.values()), None))
        except ImportError:
            pass
        try:
            from guppy import hpy
            hp = hpy()
            add("guppy3 hpy().heap()", hp.heap, 1, lambda h: (h.count, h.size))
        except ImportError:
            pass
        try:
            from pympler import muppy, summary
            if size <= 2_000_000:
                def pympler_summary():
                    return summary.summarize(muppy.get_objects())
                add("pympler summarize(get_objects())", pympler_summary, 1,
                    lambda s: (sum(r[1] for r in s), sum(r[2] for r in s)))
        except ImportError:
            pass

    # Extra peak memory, one traced call each (tracing slows the call, so the
    # times above come from untraced runs).
    for row in rows:
        if row["tool"] != "gc.collect()":
            row["peak"] = peak_extra(row["_fn"])

    for row in rows:
        row.pop("_fn")
    return {"size_target": size, "objects": objects, "rows": rows,
            "heapdiff_seconds": t_hd, "heapdiff_floor": t_floor,
            "heapdiff_open_bytes_per_object": open_bytes,
            "python": sys.version.split()[0], "heap_len": len(heap)}


def fmt_bytes(n):
    from memwatch import format_size
    return "-" if n is None else format_size(n)


def report(res: dict) -> None:
    gc_t = res["rows"][0]["seconds"]
    print(f"\nHeap of {res['objects']:,} objects (CPython {res['python']})")
    print(f"{'tool':<36} {'CPU med.':>10} {'x gc':>7} {'objects':>12} {'bytes':>11} "
          f"{'extra peak':>11} {'B/obj':>6}")
    for r in res["rows"]:
        runs = "" if r["runs"] > 1 else " (1 run)"
        peak = r["peak"]
        per = "-" if peak is None else f"{peak / res['objects']:.1f}"
        objs = "-" if r["objects"] is None else f"{r['objects']:,}"
        print(f"{r['tool'] + runs:<36} {r['seconds'] * 1000:>8.1f}ms {r['seconds'] / gc_t:>6.2f}x "
              f"{objs:>12} {fmt_bytes(r['bytes']):>11} {fmt_bytes(peak):>11} {per:>6}")
    census_t = res["rows"][1]["seconds"]
    for r in res["rows"]:
        if r["tool"].startswith("guppy3"):
            print(f"memwatch.census() is {r['seconds'] / census_t:.1f}x faster than guppy3")
    print(f"HeapDiff start+end: {res['heapdiff_seconds'] * 1000:.1f}ms = "
          f"{res['heapdiff_seconds'] / res['heapdiff_floor']:.2f}x of 2 gc.collect() + 2 censuses "
          f"({res['heapdiff_floor'] * 1000:.1f}ms); open HeapDiff holds "
          f"{res['heapdiff_open_bytes_per_object']:.1f} bytes/object")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeat, not args.no_peers)))
        return
    for size in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(size),
               "--repeat", str(args.repeat)] + (["--no-peers"] if args.no_peers else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        report(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
