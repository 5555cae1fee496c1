"""Benchmark: memwatch.write_snapshot() on big heaps (1M and 5M objects).

For each size, in a fresh interpreter: build a heap of records (an instance
with inline attributes, a str, a list and two ints each: five objects a
record), then measure

* the census (``_core.walk()``) for reference,
* ``write_snapshot`` wall time = how long the process is stalled (GC off, GIL held),
* the peak RSS growth during the snapshot (Linux: VmHWM reset via
  /proc/self/clear_refs), in total and per heap object,
* memwatch's own C bookkeeping (``overhead_bytes``) and the file size,
* ``retainers(type, limit=1)`` time.

Usage: python benchmarks/bench_snapshot.py [--sizes 1000000,5000000] [--dir /tmp] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import gc, json, os, sys, time
import memwatch
from memwatch import _core

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

class Record:
    def __init__(self, i):
        self.name = "record-%d" % i
        self.values = [i + 100000, i + 200001]

n_objects, path = int(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
DATA = [Record(i) for i in range(n_objects // 5)]
build = time.perf_counter() - t
gc.collect()
base = _core.walk()
census_s = base.elapsed_ns / 1e9
del base
rss_before = rss("VmRSS")
ok = reset_peak()
t = time.perf_counter()
info = memwatch.write_snapshot(path, collect=False)
snap_s = time.perf_counter() - t
peak = rss("VmHWM") if ok else 0
t = time.perf_counter()
paths = memwatch.retainers(Record, limit=1, collect=False)
ret_s = time.perf_counter() - t
size = os.path.getsize(path)
os.unlink(path)
print(json.dumps({
    "objects": info["nodes"], "edges": info["edges"], "build_s": build, "census_s": census_s,
    "snapshot_s": snap_s, "rss_before": rss_before,
    "peak_growth": (peak - rss_before) if ok else None,
    "overhead_bytes": info["overhead_bytes"], "file_bytes": size,
    "retainers_s": ret_s, "path": str(paths[0]) if paths else None,
    "python": sys.version.split()[0]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    sys.path.insert(0, os.path.abspath(src))
    from memwatch.formatting import format_size
    results = []
    print(f"{'objects':>10} {'census':>8} {'snapshot':>9} {'peak RSS +':>11} {'B/obj':>6} "
          f"{'C bookkeeping':>14} {'file':>9} {'B/obj':>6} {'retainers':>10}")
    for n in (int(s) for s in args.sizes.split(",")):
        path = os.path.join(args.dir, f"bench-{os.getpid()}-{n}.heapsnapshot")
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), path], capture_output=True,
                             text=True, env=env, check=True)
        r = json.loads(out.stdout)
        results.append(r)
        peak = r["peak_growth"]
        print(f"{r['objects']:>10} {r['census_s']:>7.2f}s {r['snapshot_s']:>8.2f}s "
              f"{format_size(peak or 0):>11} {(peak or 0) / r['objects']:>6.1f} "
              f"{format_size(r['overhead_bytes']):>14} {format_size(r['file_bytes']):>9} "
              f"{r['file_bytes'] / r['objects']:>6.1f} {r['retainers_s']:>9.2f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
