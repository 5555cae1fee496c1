"""What sampling allocations costs: pyperformance benchmarks and memwatch's
service workload, plain and under each profiler, side by side in one run.

Modes: plain; memwatch.start_sampling() at the default interval
("memwatch:N": interval N); tracemalloc.start(1) and tracemalloc.start(32)
(memwatch's default nframe; "tracemallocN" for others); ddtrace's heap profiler
(DD_PROFILING_MEMORY_ENABLED, every other collector off) when ddtrace is
installed; "imported" (memwatch's sampling modules imported, sampling not
started: what the import alone moves, such as the heap layout; not a default
mode).  Each (benchmark, mode) runs in a fresh interpreter that measures
its own CPU time (time.process_time) around the benchmark only, so startup
and profiler setup are left out.  Rounds alternate the order of the modes
(ABBA...) to spread machine drift; the table shows each mode's median CPU
time as a ratio to plain, and the geometric mean over the benchmarks.  A
mode more than 3x slower than plain in the first round is not repeated.

Usage:
    pip install pyperformance          # ships the benchmarks' sources
    python benchmarks/bench_sampling.py [--rounds 5] [--bench nbody,go] [--target 0.5]
    python benchmarks/bench_sampling.py --callgrind   # instruction counts, 1 round
    python benchmarks/bench_sampling.py --use-installed   # memwatch from site-packages

The children import memwatch from this checkout's ``src`` (put first on
PYTHONPATH), which needs an in-place build for the running interpreter
(``python setup.py build_ext --inplace``).  ``--use-installed`` leaves
PYTHONPATH alone: the children use the memwatch installed for the running
interpreter (``pip install .`` into a venv, then run the script with that
venv's python); the header line prints which memwatch was used.

A benchmark resolves through pyperformance's MANIFEST, so a variant such as
pickle_pure_python runs its parent's script (bm_pickle) with its extra
options (``--pure-python pickle``).  A benchmark whose plain run fails is
skipped: its last stderr lines are printed and its table row says
``failed: <reason>``; a failing profiler mode leaves a ``failed`` cell.

The peak RSS and memwatch's bookkeeping bytes are printed for the service
workload.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

BENCHMARKS = ["chaos", "deltablue", "deepcopy", "float", "go", "json_dumps", "nbody",
              "nqueens", "pickle_pure_python", "raytrace", "richards", "logging",
              "unpack_sequence"]
# tracemalloc with 1 frame (its cheapest) and with 32, the frames memwatch keeps
MODES = ["plain", "memwatch", "tracemalloc1", "tracemalloc32", "ddtrace"]
SLOW = 3.0


def bench_dir() -> str | None:
    try:
        import pyperformance
    except ImportError:
        return None
    return os.path.join(os.path.dirname(pyperformance.__file__), "data-files", "benchmarks")


def resolve(bench: str) -> tuple[str, list[str]]:
    """The script and extra options pyperformance runs for ``bench``: its
    MANIFEST maps a variant (``pickle_pure_python\t<local:pickle>``) onto
    another benchmark's directory, whose ``bm_<variant>.toml`` holds the
    variant's ``extra_opts``."""
    root = bench_dir()
    base, opts = bench, []
    try:
        with open(os.path.join(root, "MANIFEST")) as f:
            for line in f:
                name, _, meta = line.strip().partition("\t")
                if name == bench and meta.startswith("<local:"):
                    base = meta[len("<local:"):-1]
                    break
    except OSError:
        pass
    toml = os.path.join(root, f"bm_{base}", f"bm_{bench}.toml")
    if base != bench and os.path.exists(toml):
        try:
            import tomllib
            with open(toml, "rb") as fb:
                opts = tomllib.load(fb).get("tool", {}).get("pyperformance", {}).get(
                    "extra_opts", [])
        except ImportError:      # Python < 3.11: the one line needed
            import ast
            with open(toml) as f:
                for line in f:
                    if line.strip().startswith("extra_opts"):
                        opts = ast.literal_eval(line.partition("=")[2].strip())
    return os.path.join(root, f"bm_{base}", "run_benchmark.py"), list(opts)


def have_ddtrace() -> bool:
    try:
        import ddtrace.profiling  # noqa: F401
    except Exception:
        return False
    return True


# ---- child side ----

def service_workload(loops: int) -> None:
    sys.path.insert(0, HERE)
    from bench_http_load import make_app
    app = make_app()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
               "SERVER_NAME": "x", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}

    def start_response(status, headers):
        pass

    for _ in range(loops):
        b"".join(app(dict(environ), start_response))


def peak_rss() -> int | None:
    """This process's peak RSS in bytes.  VmHWM, not getrusage's ru_maxrss:
    Linux carries ru_maxrss over exec, so a child spawned (vfork) by a parent
    that had imported ddtrace reported the parent's 48 MiB in every mode."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except ImportError:
        return None


def setup_mode(mode: str) -> object:
    if mode == "imported":
        import memwatch.heapprofile, memwatch._sampler  # noqa: F401,E401
    elif mode.startswith("memwatch"):
        import memwatch
        # "memwatch:N": sample every N bytes on average instead of the default
        interval = mode.partition(":")[2]
        memwatch.start_sampling(**({"interval": int(interval)} if interval else {}))
    elif mode.startswith("tracemalloc"):
        import tracemalloc
        tracemalloc.start(int(mode[len("tracemalloc"):]))
    elif mode == "ddtrace":
        from ddtrace.profiling import Profiler
        prof = Profiler()
        prof.start()
        return prof
    return None


def child(mode: str, bench: str, loops: int, out: str) -> None:
    if mode == "ddtrace":
        # only the heap/allocation sampler; nothing exported (no agent here)
        os.environ.update({"DD_PROFILING_MEMORY_ENABLED": "true", "DD_PROFILING_HEAP_ENABLED": "true",
                           "DD_PROFILING_STACK_ENABLED": "false", "DD_PROFILING_LOCK_ENABLED": "false",
                           "DD_PROFILING_EXPORT_LIBDD_ENABLED": "false",
                           "DD_PROFILING_UPLOAD_INTERVAL": "3600",
                           "DD_TRACE_ENABLED": "false", "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false"})
    handle = setup_mode(mode)
    if bench == "service":
        service_workload(max(1, loops // 10))   # warm-up
        t = time.process_time()
        service_workload(loops)
        cpu = time.process_time() - t
    else:
        import runpy
        path, opts = resolve(bench)
        sys.argv = [path, "--worker", "--loops", str(loops), "--values", "3", "--warmups", "1",
                    "--processes", "1", "--quiet"] + opts
        sys.path.insert(0, os.path.dirname(path))
        if "--pure-python" in opts:
            # The benchmark blocks _pickle, imports pickle and checks that it got
            # the pure-Python one: a pickle imported before it (by a profiler or
            # this harness; none of today's modes does) would come back from
            # sys.modules with its C accelerator and fail that check.
            sys.modules.pop("pickle", None)
        t = time.process_time()
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        cpu = time.process_time() - t
    res = {"cpu": cpu}
    hwm = peak_rss()
    if hwm is not None:
        res["maxrss"] = hwm
    if mode.startswith("memwatch"):
        import memwatch
        info = memwatch.sampling_info()
        res["samples"] = info["samples"]
        res["bookkeeping"] = info["bookkeeping_bytes"]
    del handle
    with open(out, "w") as f:
        json.dump(res, f)


# ---- parent side ----

class BenchFailed(RuntimeError):
    def __init__(self, bench: str, mode: str, reason: str, tail: str):
        super().__init__(f"{bench}/{mode} failed: {reason}")
        self.reason = reason
        self.tail = tail


def run_counted(mode: str, bench: str, loops: int, prefix: list[str]) -> dict:
    """Instructions of ``loops`` loops alone: a run of 2 * loops minus a run
    of loops of the same mode.  Startup, imports and setup cancel out, and so
    do the modules the benchmark imports (a run that stopped before the
    benchmark would charge plain for the ones memwatch had already imported)."""
    res = run_child(mode, bench, 2 * loops, prefix)
    base = run_child(mode, bench, loops, prefix)
    res["instructions"] -= base["instructions"]
    return res


USE_INSTALLED = False


def run_child(mode: str, bench: str, loops: int, prefix: list[str] | None = None) -> dict:
    env = dict(os.environ)
    if not USE_INSTALLED:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    # one str hash seed for every run: randomised hashing moves instruction counts by
    # about 1% from run to run (probe lengths), as much as what is being measured
    env.setdefault("PYTHONHASHSEED", "0")
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        out = f.name
    try:
        cmd = (prefix or []) + [sys.executable, os.path.abspath(__file__), "--child", mode,
                                bench, str(loops), out]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            raise BenchFailed(bench, mode, "timed out after 900 s", "") from None
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if x.strip()]
            raise BenchFailed(bench, mode, lines[-1].strip() if lines else
                              f"exit status {proc.returncode}", "\n".join(lines[-8:]))
        with open(out) as fh:
            text = fh.read()
        res = json.loads(text) if text else {}
        if prefix:
            for line in proc.stderr.splitlines():
                if "Collected :" in line:
                    res["instructions"] = int(line.rsplit(":", 1)[1].strip())
            if "instructions" not in res:
                raise BenchFailed(bench, mode, "no instruction count from valgrind",
                                  proc.stderr[-1000:])
        return res
    finally:
        os.unlink(out)


def memwatch_location() -> str | None:
    """Where the children's memwatch (and its sampler) comes from, or None."""
    env = dict(os.environ)
    if not USE_INSTALLED:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", "import memwatch, memwatch._sampler, os; "
                           "print(os.path.dirname(memwatch.__file__))"],
                          capture_output=True, text=True, env=env, cwd=HERE)
    return proc.stdout.strip() if proc.returncode == 0 else None


def calibrate(bench: str, target: float) -> int:
    """Loops for about ``target`` seconds of CPU per plain run."""
    loops = 1 if bench != "service" else 200
    while True:
        cpu = run_child("plain", bench, loops)["cpu"]
        if cpu >= target / 4 or loops >= 1 << 20:
            return max(1, int(round(loops * target / max(cpu, 1e-9))))
        loops *= 4


def cell(ratio: float | None) -> str:
    return f"{'failed' if ratio is None else format(ratio, '.3f'):>13}"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def skip(bench: str, exc: BenchFailed, failed: dict) -> None:
    print(f"{bench} skipped: its plain run failed: {exc.reason}\n{indent(exc.tail)}",
          file=sys.stderr, flush=True)
    failed[bench] = exc.reason[:80]


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bench", default=",".join(BENCHMARKS + ["service"]))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--target", type=float, default=None,
                    help="seconds of CPU per plain run (default 0.5, 0.1 with --callgrind)")
    ap.add_argument("--callgrind", action="store_true",
                    help="instruction counts under valgrind (1 round, small runs)")
    ap.add_argument("--use-installed", action="store_true",
                    help="children use the memwatch installed for this interpreter "
                         "(no ../src on PYTHONPATH)")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "BENCH", "LOOPS", "OUT"),
                    help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        mode, bench, loops, out = ns.child
        child(mode, bench, int(loops), out)
        return 0
    benches = [b for b in ns.bench.split(",") if b]
    if bench_dir() is None:
        print("pyperformance is not installed: running the service workload only "
              "(pip install pyperformance for the rest)", file=sys.stderr)
        benches = [b for b in benches if b == "service"]
    modes = [m for m in ns.modes.split(",") if m]
    if "plain" not in modes:
        modes.insert(0, "plain")        # every ratio is to plain
    global USE_INSTALLED
    USE_INSTALLED = ns.use_installed
    where = memwatch_location()
    if where is None:
        print("memwatch does not import in the children ("
              + ("not installed for this interpreter" if USE_INSTALLED else
                 "build it in place: python setup.py build_ext --inplace, or --use-installed")
              + ")", file=sys.stderr)
        return 2
    if "ddtrace" in modes and not have_ddtrace():
        print("ddtrace is not installed: its column is left out", file=sys.stderr)
        modes.remove("ddtrace")
    prefix = None
    rounds = ns.rounds
    if ns.callgrind:
        if shutil.which("valgrind") is None:
            print("valgrind is not installed", file=sys.stderr)
            return 2
        prefix = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        rounds = 1
    if ns.target is None:
        ns.target = 0.1 if prefix else 0.5
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}; "
          f"{rounds} rounds; {'instructions' if prefix else 'median CPU time'} as a ratio to plain; "
          f"memwatch from {where}", flush=True)
    results: dict = {}      # bench -> {mode: ratio to plain, or None: that mode failed}
    failed: dict = {}       # bench -> why its plain run failed (the row is skipped)
    extra: dict = {}
    for bench in benches:
        per_mode: dict = {m: [] for m in modes}
        mode_failed: dict = {}
        try:
            loops = calibrate(bench, ns.target)
        except BenchFailed as exc:
            skip(bench, exc, failed)
            continue
        plain_error = None
        for r in range(rounds):
            order = modes if r % 2 == 0 else list(reversed(modes))
            # a mode that failed in the first round is not retried
            order = [m for m in order if m not in mode_failed]
            if r > 0 and not prefix:
                # a mode over SLOW x plain in the first round runs once: its ratio is
                # far from the range where a few % matter (tracemalloc: 10-200x)
                order = [m for m in order
                         if not per_mode[m][0] > SLOW * per_mode["plain"][0]]
            for mode in order:
                try:
                    res = (run_counted(mode, bench, loops, prefix) if prefix
                           else run_child(mode, bench, loops))
                except BenchFailed as exc:
                    if mode == "plain":
                        plain_error = exc
                        break
                    print(f"{bench}/{mode} failed, left out: {exc.reason}\n"
                          f"{indent(exc.tail)}", file=sys.stderr, flush=True)
                    if not per_mode[mode]:
                        mode_failed[mode] = exc.reason
                    continue
                per_mode[mode].append(res["instructions"] if prefix else res["cpu"])
                if mode.startswith("memwatch"):
                    extra.setdefault(bench, res)
                if bench == "service":
                    extra.setdefault(("rss", mode), []).append(res.get("maxrss", 0))
            if plain_error is not None:
                break
        if plain_error is not None:
            skip(bench, plain_error, failed)    # no ratio without its plain runs
            continue
        med = {m: statistics.median(v) if v else None for m, v in per_mode.items()}
        results[bench] = {m: (med[m] / med["plain"] if med[m] is not None else None)
                          for m in modes}
        row = " ".join(cell(results[bench][m]) for m in modes)
        print(f"{bench:<20} {row}   (plain {med['plain']:.3f}{'' if prefix else ' s'}, "
              f"{extra.get(bench, {}).get('samples', 0)} samples)", flush=True)
    print()
    print(f"| {'benchmark':<20} | " + " | ".join(f"{m:>13}" for m in modes) + " |")
    print("|" + "-" * 22 + "|" + "|".join("-" * 15 for _ in modes) + "|")
    for bench in benches:
        if bench in results:
            print(f"| {bench:<20} | " + " | ".join(cell(results[bench][m]) for m in modes) + " |")
        elif bench in failed:
            print(f"| {bench:<20} | failed: {failed[bench]} |" + " |" * (len(modes) - 1))
    gm = {m: geomean([results[b][m] for b in results if results[b][m] is not None])
          for m in modes}
    print(f"| {'geomean':<20} | " + " | ".join(cell(gm[m]) for m in modes) + " |")
    if failed:
        print(f"(geomean over {len(results)} benchmarks; failed: {', '.join(failed)})")
    if ("rss", "plain") in extra:
        print()
        print("service workload peak RSS (median): " + ", ".join(
            f"{m} {statistics.median(extra[('rss', m)]) / 2**20:.1f} MiB" for m in modes))
        print(f"memwatch bookkeeping at the end of the service run: "
              f"{extra.get('service', {}).get('bookkeeping', 0) / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
