"""What the tracker costs, per measure, on a GC-heavy workload.

    python benchmarks/bench_tracker.py [--repeat 7] [--seconds 1.5]

Two views, both printed as tables with medians:

1. **End to end.**  A GC-heavy workload (cyclic garbage plus a working set
   that turns over, so young *and* full collections are frequent) runs for a
   fixed amount of work in a fresh interpreter, without memwatch and with the
   tracker on for each measure; configurations are interleaved and each is
   repeated.  CPU time of the whole process (the tracker's thread included).
   On a shared machine the run-to-run noise is a few percent, more than the
   budget being checked, hence view 2.
2. **Per event.**  The tracker's cost per young collection (the C callbacks)
   and per full collection (callback, measure, stats, verdict, delivery to
   one listener) measured in tight loops, multiplied by the rates at which
   the workload collects: the overhead the tracker adds, without the noise.

The default measure must keep the tracker at or below 1% CPU.

3. **Benchmarks nobody here wrote** (``--pyperformance WHEEL``: the
   ``pyperformance`` wheel from PyPI, ``pip download --no-deps pyperformance``,
   ships their sources).  Each benchmark runs in fresh interpreters, plain and
   with the default tracker (``memwatch.on('leak', ...)``, installed before the
   benchmark starts), alternating, a fixed number of loops calibrated once;
   the table gives the median CPU time per loop (process CPU: the tracker's
   thread included) and the geometric mean of the ratios.  pyperf's timing
   is replaced by a small stand-in (no calibration, no worker processes); its
   modules are imported first when it is installed (``pip install pyperf``),
   so the benchmark runs beside the heap a real run's worker has.

memwatch comes from this checkout's ``src`` (put first on ``sys.path`` and on
the children's PYTHONPATH), which needs an in-place build for the running
interpreter (``python setup.py build_ext --inplace``).  ``--use-installed``
uses the memwatch installed for the running interpreter instead (``pip
install .`` into a venv, then run this script with that venv's python):
PYTHONPATH is left alone.  The first line printed says which memwatch ran.
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

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

# --use-installed: the memwatch installed for this interpreter, not ../src
USE_INSTALLED = False


def child_env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    if not USE_INSTALLED:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return env


def memwatch_location() -> str:
    """Where the children's memwatch comes from (an error when it does not import)."""
    out = subprocess.run([sys.executable, "-c", "import memwatch, memwatch._core, os; "
                          "print(os.path.dirname(memwatch.__file__))"], env=child_env(),
                         capture_output=True, text=True, cwd=HERE)
    if out.returncode != 0:
        sys.exit("memwatch does not import: " + (
            "it is not installed for this interpreter" if USE_INSTALLED else
            "build it in place (python setup.py build_ext --inplace) or pass --use-installed")
            + "\n" + out.stderr[-500:])
    return out.stdout.strip()


WORKLOAD = r'''
import gc, json, sys, time
config = sys.argv[1]
ops = int(sys.argv[2])
if config != "none":
    import memwatch
    if config == "tracemalloc" or config == "tracing-only":
        import tracemalloc
        tracemalloc.start()
    if config != "tracing-only":
        measure = config
        if config == "callable":
            measure = lambda: 0
        memwatch.configure(measure=measure)
        memwatch.on("stats", lambda s: None)
        memwatch.on("leak", lambda s: None)

class Node:
    __slots__ = ("a", "b", "c")

def work(n):
    keep = []
    for i in range(n):
        a = {"i": i, "s": "x"}
        b = [a, (i, i + 1)]
        a["b"] = b                       # cyclic garbage
        node = Node(); node.a = a; node.b = node; node.c = None
        if i % 8 == 0:
            keep.append(node)            # a working set that grows...
            if len(keep) > 60000:
                del keep[:30000]         # ...and turns over: full collections
    return len(keep)

counts = [0, 0, 0]
def count(phase, info):
    if phase == "stop":
        counts[info["generation"]] += 1
gc.callbacks.append(count)
gc.collect()
t0 = time.process_time(); w0 = time.perf_counter()
work(ops)
cpu = time.process_time() - t0
wall = time.perf_counter() - w0
gc.callbacks.remove(count)
print(json.dumps({"cpu": cpu, "wall": wall, "young": counts[0] + counts[1], "full": counts[2]}))
'''


def end_to_end(configs, repeat, ops):
    env = child_env()
    runs = {c: [] for c in configs}
    for _ in range(repeat):
        for c in configs:
            out = subprocess.run([sys.executable, "-c", WORKLOAD, c, str(ops)], env=env,
                                 capture_output=True, text=True, check=True)
            runs[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def per_event(measures):
    """Seconds the tracker adds per young and per full collection, for each measure."""
    if not USE_INSTALLED:
        sys.path.insert(0, SRC)
    import memwatch
    from memwatch import _deferred, tracker

    def young_loop(n=20000):
        t = time.perf_counter()
        for _ in range(n):
            gc.collect(0)
        return (time.perf_counter() - t) / n

    def best(fn, k=7):
        return min(fn() for _ in range(k))

    # Young collections: only memwatch's two C callbacks run (a counter).
    base_young = best(young_loop)
    _deferred.acquire_hooks("bench")
    hooked_young = best(young_loop)
    _deferred.release_hooks("bench")
    # The young-collection cost is the same for every measure (they are read
    # only after full collections).
    young_extra = max(0.0, hooked_young - base_young)

    t = time.perf_counter()
    for _ in range(50):
        gc.collect(2)
    base_full = (time.perf_counter() - t) / 50

    results = {}
    info = {"generation": 2, "collected": 0, "uncollectable": 0}
    trk = tracker._tracker
    for m in measures:
        if m == "tracemalloc":
            import tracemalloc
            tracemalloc.start()
        memwatch.configure(measure=m if m != "callable" else (lambda: 0))
        memwatch.on("stats", lambda s: None)
        memwatch.on("leak", lambda s: None)

        def full_loop(n=200 if m not in ("python", "uss") else 40):
            # What a full collection costs memwatch on top of the collection
            # itself: both callbacks (measure included), turning the sample
            # into stats, the verdict, and delivering it to the listeners.
            t = time.perf_counter()
            for _ in range(n):
                trk._full_start(info)
                trk._full_stop(info)
                trk._process()
                _deferred.drain()
            return (time.perf_counter() - t) / n

        results[m] = (young_extra, best(full_loop, 5))
        memwatch.off()
        memwatch.stop()
        if m == "tracemalloc":
            tracemalloc.stop()
        memwatch.configure(measure="rss")
    # The census behind top_types (taken at most every min_duration / 2, and
    # never more than census_budget of wall time).
    from memwatch import _core
    t = time.perf_counter()
    for _ in range(5):
        _core.walk()
    census = (time.perf_counter() - t) / 5
    return base_young, base_full, results, census, len(gc.get_objects())


# Issue 9's 13, then more that need no package beyond the standard library.
PYPERFORMANCE = ["richards", "json_dumps", "gc_traversal", "nbody", "float", "deltablue",
                 "chaos", "go", "unpack_sequence", "regex_v8", "raytrace", "spectral_norm",
                 "nqueens", "json_loads", "fannkuch", "hexiom", "pyflate", "deepcopy",
                 "logging", "coroutines", "generators", "gc_collect", "comprehensions"]

# A stand-in for pyperf: the benchmark's own code runs `loops` times and this
# prints the CPU time those loops took (all threads: time.process_time()).
PYPERF_SHIM = r'''
import argparse, json, runpy, sys, time, types
script, config, loops, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
layout = int(sys.argv[5]) if len(sys.argv) > 5 else 0
try:
    # The real harness's modules, when it is installed: a pyperformance run's
    # worker has pyperf (138 modules, 12k objects: collections, threading,
    # datetime, json, statistics, ...) in its heap before the benchmark
    # starts.  Without them the tracker's own stdlib imports (1,700 objects)
    # would count as its cost on benchmarks whose time is full collections of
    # a small heap (gc_collect: +8% instructions), where a real run has them
    # already.  The stand-in below still does the timing.
    import pyperf as _harness
    harness = "pyperf " + _harness.__version__
    del _harness
except ImportError:
    harness = None
if layout:
    # Another heap layout, the same in every configuration: strings that move
    # where the benchmark's objects and interned names are allocated, and
    # classes that each take a type version tag (a lookup assigns one), so
    # the benchmark's classes get other tags.  CPython's type attribute cache
    # indexes its 4096 slots by tag and name address: which of the
    # benchmark's lookups collide, and so its instruction count, moves with
    # both, as it does with any import (see docs/tracker.md, richards).
    _layout_strings = [" " * (1 + (i * 37) % 300) for i in range(layout * 97)]
    _layout_types = [type(f"_Layout{i}", (), {}) for i in range(layout * 13)]
    for _t in _layout_types:
        getattr(_t, "_layout", None)
    del _t
if config == "imported":
    # memwatch and everything the tracker imports, and no tracker: what the
    # imports alone change (the heap's layout, so the type attribute cache's
    # collisions and dict layouts) apart from what the tracker does.
    import memwatch, memwatch.tracker, memwatch._gchook, memwatch._deferred, memwatch._verdict
    import memwatch._measures, memwatch._core
elif config != "plain":
    import memwatch
    import os
    if os.environ.get("MEMWATCH_BENCH_TIME_SCALE"):
        # Under valgrind the program runs S times slower: stretch the tracker's
        # durations as much, so its per-second work per loop is what it is natively.
        memwatch.configure(time_scale=float(os.environ["MEMWATCH_BENCH_TIME_SCALE"]))
    if config == "no-callbacks":
        memwatch.configure(gc_callbacks=False)
    elif config == "callbacks":
        memwatch.configure(gc_callbacks=True)
    memwatch.on("leak", lambda info: None)
    # The tracker's start-up work (its first clock sample and census, imports)
    # runs in its thread: let it finish before the benchmark, or a short run
    # (one loop under valgrind) exits in the middle of it and a longer one
    # does not, and that one-off work is counted as a per-loop cost.
    from memwatch import tracker as _mwt
    _deadline = time.monotonic() + 600
    while not _mwt._tracker._censuses and time.monotonic() < _deadline:
        time.sleep(0.01)

class Runner:
    def __init__(self, *a, **k):
        self.metadata = {}
        self.argparser = argparse.ArgumentParser()
    def parse_args(self, args=None):
        return self.argparser.parse_args([])
    def _run(self, timed):
        import gc
        gc.collect()            # as pyperf's workers start clean (gc_traversal asserts it)
        timed(1)                                   # warm-up
        if loops <= 0:                             # calibration: loops for ~0.5 s
            n, t = 1, 0.0
            while t < 0.1:
                n *= 2
                t = timed(n)
            print(json.dumps({"loops": max(1, int(n * seconds / t)), "harness": harness}))
            return
        c = time.process_time()
        timed(loops)
        print(json.dumps({"cpu": (time.process_time() - c) / loops, "harness": harness}))
    def bench_func(self, name, func, *args, inner_loops=None, **kw):
        def timed(n):
            t = time.perf_counter()
            for _ in range(n):
                func(*args)
            return time.perf_counter() - t
        self._run(timed)
    def bench_time_func(self, name, func, *args, inner_loops=None, **kw):
        self._run(lambda n: func(n, *args))

pyperf = types.ModuleType("pyperf")
pyperf.Runner = Runner
pyperf.perf_counter = time.perf_counter
sys.modules["pyperf"] = pyperf
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
'''


def pyperformance(wheel: str, names: list[str], repeat: int, configs: list[str],
                  seconds: float = 1.0, callgrind: bool = False,
                  callgrind_seconds: float = 0.2, layouts: int = 1) -> None:
    import tempfile
    import zipfile
    tmp = tempfile.mkdtemp(prefix="memwatch-pyperf-")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
    root = os.path.join(tmp, "pyperformance", "data-files", "benchmarks")
    env = child_env(PYTHONHASHSEED="0")

    def one(script: str, config: str, loops: int, grind: bool = False,
            scale: float | None = None, layout: int = 0) -> dict:
        cmd = [sys.executable, "-c", PYPERF_SHIM, script, config, str(loops), str(seconds),
               str(layout)]
        if grind:
            cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
        run_env = dict(env)
        if scale:
            run_env["MEMWATCH_BENCH_TIME_SCALE"] = str(scale)
        t = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, env=run_env,
                             cwd=os.path.dirname(script), timeout=3600)
        lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
        if not lines:
            raise RuntimeError(out.stderr[-1500:])
        result = json.loads(lines[-1])
        result["wall"] = time.monotonic() - t
        if grind:
            import re
            m = re.search(r"Collected : (\d+)", out.stderr)
            if m is None:
                raise RuntimeError(out.stderr[-1500:])
            result["ir"] = int(m.group(1))
        return result

    def instructions(script: str, config: str, loops: int, scale: float | None,
                     layout: int = 0) -> float:
        small = one(script, config, loops, grind=True, scale=scale, layout=layout)
        big = one(script, config, 2 * loops, grind=True, scale=scale, layout=layout)
        return (big["ir"] - small["ir"]) / loops

    # Instruction counts (valgrind --tool=callgrind) of whole processes with L
    # and 2L loops: (Ir(2L) - Ir(L)) / L is the per-loop count, start-up and
    # imports cancelled out.  Repeatable on a loaded machine, where CPU times
    # are not (PYTHONHASHSEED is fixed for every run, so dict and set layouts
    # are the same in both configurations); the tracker's once-a-second work
    # is over-counted (valgrind runs ~50x slower, so there are ~50x more ticks
    # per loop) unless time_scale stretches the tracker's durations by the
    # measured slowdown (wall time under valgrind / natively, plain runs).
    one_load = os.getloadavg()
    cols = []
    if repeat > 0:
        cols.append(f"median CPU per loop of {repeat} alternating fresh runs each")
    if callgrind:
        cols.append("instructions per loop under callgrind (Ir(2L) - Ir(L)) / L"
                    + (f", median ratio over {layouts} heap layouts [min..max]"
                       if layouts > 1 else ""))
    try:
        import pyperf  # noqa: F401 - only whether the children can import it
        heap = f"the children import pyperf {pyperf.__version__} first, as a real run's worker has it"
    except ImportError:
        heap = ("pyperf is not installed (pip install pyperf): the children's heap lacks a real "
                "run's harness modules, which over-counts memwatch's stdlib imports on "
                "benchmarks of full collections on a small heap (gc_collect)")
    print(f"3. pyperformance benchmarks, plain vs {', '.join(configs[1:])} "
          f"(memwatch.on('leak', ...), defaults): {'; '.join(cols)}; load average "
          f"{one_load[0]:.1f}, {one_load[1]:.1f}, {one_load[2]:.1f} at the start;\n   {heap}\n")
    head = f"   {'benchmark':<18}"
    if repeat > 0:
        head += f"{'plain CPU':>12}" + "".join(f"{c + ' CPU':>22}" for c in configs[1:])
    if callgrind:
        head += f"{'plain Ir':>12}" + "".join(f"{c + ' Ir':>12}" for c in configs[1:])
    print(head)
    ratios: dict[str, list[float]] = {c: [] for c in configs[1:]}
    ratios_g: dict[str, list[float]] = {c: [] for c in configs[1:]}
    for name in names:
        script = os.path.join(root, f"bm_{name}", "run_benchmark.py")
        if not os.path.exists(script):
            print(f"   {name:<18}  (not in this pyperformance)")
            continue
        line = f"   {name:<18}"
        try:
            loops = one(script, "plain", 0)["loops"]
            if repeat > 0:
                runs: dict[str, list[float]] = {c: [] for c in configs}
                for _ in range(repeat):
                    for c in configs:
                        runs[c].append(one(script, c, loops)["cpu"])
                med = {c: statistics.median(v) for c, v in runs.items()}
                line += f"{med['plain'] * 1e3:>10.2f}ms"
                for c in configs[1:]:
                    r = med[c] / med["plain"]
                    ratios[c].append(r)
                    line += f"{med[c] * 1e3:>12.2f}ms {(r - 1) * 100:>+6.2f}%"
            if callgrind:
                # Fewer loops under valgrind (~50x slower): about callgrind_seconds
                # of native work per L.
                gloops = max(1, round(loops * callgrind_seconds / seconds))
                native = one(script, "plain", 2 * gloops)["wall"]
                small = one(script, "plain", gloops, grind=True)
                big = one(script, "plain", 2 * gloops, grind=True)
                plain = [(big["ir"] - small["ir"]) / gloops]
                scale = max(1.0, big["wall"] / native)
                # Each layout's ratio is of the same layout's plain count
                # (layout 0: no padding, as without --layouts).
                per_layout: dict[str, list[float]] = {c: [] for c in configs[1:]}
                for k in range(layouts):
                    if k:
                        plain.append(instructions(script, "plain", gloops, None, k))
                    for c in configs[1:]:
                        per_layout[c].append(instructions(script, c, gloops, scale, k)
                                             / plain[k])
                line += f"{plain[0] / 1e6:>10.2f}M "
                if layouts > 1:
                    # What the layout alone moves: plain in each layout
                    # against plain in layout 0, no memwatch anywhere.
                    spread = [x / plain[0] for x in plain[1:]]
                    line += (f"(plain over layouts [{(min(spread) - 1) * 100:+.2f}.."
                             f"{(max(spread) - 1) * 100:+.2f}]) ")
                for c in configs[1:]:
                    rs = per_layout[c]
                    r = statistics.median(rs)
                    ratios_g[c].append(r)
                    line += f"{(r - 1) * 100:>+11.2f}%"
                    if layouts > 1:
                        line += f" [{(min(rs) - 1) * 100:+.2f}..{(max(rs) - 1) * 100:+.2f}]"
        except Exception as exc:  # noqa: BLE001 - a benchmark that needs a missing package
            print(f"   {name:<18}  skipped: {str(exc).strip().splitlines()[-1][:80]}")
            continue
        print(line, flush=True)
    for label, table in (("CPU", ratios), ("Ir", ratios_g)):
        for c, rs in table.items():
            if rs:
                g = statistics.geometric_mean(rs)
                print(f"   {label} {c}: geomean {(g - 1) * 100:+.2f}%, max {(max(rs) - 1) * 100:+.2f}%"
                      f", min {(min(rs) - 1) * 100:+.2f}% over {len(rs)} benchmarks")
    end_load = os.getloadavg()
    print(f"   (load average {end_load[0]:.1f} at the end; CPU medians on a shared machine move "
          f"by a few percent either way, instruction counts by a few tenths)\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--ops", type=int, default=600_000, help="workload iterations per run")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--pyperformance", metavar="WHEEL",
                        help="also run pyperformance benchmarks from this wheel (view 3)")
    parser.add_argument("--only-pyperformance", action="store_true",
                        help="run view 3 only")
    parser.add_argument("--benchmarks", default=",".join(PYPERFORMANCE),
                        help="comma-separated pyperformance benchmarks (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="view 3: CPU seconds per run, calibrated on plain (default 1)")
    parser.add_argument("--callgrind", action="store_true",
                        help="view 3: also instruction counts under valgrind (--repeat 0: "
                             "instruction counts only)")
    parser.add_argument("--callgrind-seconds", type=float, default=0.2,
                        help="view 3: native seconds of loops per callgrind run (default 0.2)")
    parser.add_argument("--layouts", type=int, default=1,
                        help="view 3 with --callgrind: instruction counts over N heap layouts "
                             "(padding before the benchmark, the same in each configuration); "
                             "prints each configuration's median ratio and range (default 1)")
    parser.add_argument("--configs", default="plain,tracked",
                        help="view 3 configurations: plain, tracked (defaults), callbacks "
                             "(gc_callbacks=True), no-callbacks (gc_callbacks=False), imported "
                             "(memwatch's modules imported, no tracker)")
    parser.add_argument("--use-installed", action="store_true",
                        help="use the memwatch installed for this interpreter, not ../src "
                             "(which needs an in-place build)")
    args = parser.parse_args()
    global USE_INSTALLED
    USE_INSTALLED = args.use_installed
    print(f"memwatch from {memwatch_location()}")
    if args.pyperformance:
        pyperformance(args.pyperformance, args.benchmarks.split(","), args.repeat,
                      args.configs.split(","), args.seconds, args.callgrind,
                      args.callgrind_seconds, args.layouts)
        if args.only_pyperformance:
            return
    measures = ["rss", "blocks", "callable", "tracemalloc", "uss", "python"]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPython {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at start\n")
    base_young, base_full, per, census, nobj = per_event(measures)

    rates = None
    if not args.skip_end_to_end:
        configs = ["none", "rss", "blocks", "callable", "tracing-only", "tracemalloc", "uss",
                   "python"]
        runs = end_to_end(configs, args.repeat, args.ops)
        med = {c: statistics.median(r["cpu"] for r in runs[c]) for c in configs}
        young = statistics.median(r["young"] for r in runs["none"])
        full = statistics.median(r["full"] for r in runs["none"])
        rates = (young / med["none"], full / med["none"])
        print(f"1. End to end: {args.ops} iterations of the GC-heavy workload, "
              f"median CPU of {args.repeat} interleaved runs")
        print(f"   (no tracker: {young:.0f} young and {full:.0f} full collections, "
              f"{rates[0]:.0f}/s and {rates[1]:.1f}/s)\n")
        print(f"   {'configuration':<28}{'median CPU s':>14}{'vs none':>10}{'min..max s':>18}")
        for c in configs:
            cpus = [r["cpu"] for r in runs[c]]
            ref = med["tracing-only"] if c == "tracemalloc" else med["none"]
            label = {"none": "no memwatch", "tracing-only": "tracemalloc tracing, no tracker",
                     "tracemalloc": "tracker, tracemalloc (vs tracing)"}.get(c, f"tracker, {c}")
            print(f"   {label:<28}{med[c]:>14.3f}{(med[c] / ref - 1) * 100:>+9.1f}%"
                  f"{min(cpus):>9.3f}..{max(cpus):.3f}")
        print("   (differences within the min..max spread are noise: view 2 measures the same cost "
              "without it)\n")

    print("2. Per event (tight loops; overhead over the same collection without memwatch)\n")
    print(f"   a young collection costs {base_young * 1e6:.2f} us, a full one "
          f"{base_full * 1e3:.2f} ms ({nobj} tracked objects)")
    print(f"   {'measure':<14}{'+ per young':>14}{'+ per full':>14}"
          + (f"{'CPU share on the workload':>28}" if rates else ""))
    for m, (dy, df) in per.items():
        line = f"   {m:<14}{dy * 1e6:>11.2f} us{df * 1e6:>11.1f} us"
        if rates:
            share = dy * rates[0] + df * rates[1]
            line += f"{share * 100:>27.2f}%"
        print(line)
    print(f"\n   census for top_types: {census * 1e3:.1f} ms per heap walk here; one every "
          f"30 s (min_duration / 2) at most and never more than 0.2% of wall time "
          f"(census_budget) -> at most {min(census / 30, 0.002) * 100:.3f}% CPU")


if __name__ == "__main__":
    main()
