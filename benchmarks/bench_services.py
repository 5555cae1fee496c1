"""Leaks in real services, at memwatch's defaults: verdict and time to detection.

    python benchmarks/bench_services.py [--quick] [--rate 100] [--jobs 8] [--cost] [names...]

Serves every app of ``tests/services/`` (Flask and Django under gunicorn,
FastAPI under uvicorn, Flask under waitress, a job worker), each leaky and clean, with
memwatch's leak listener inside the serving process and a bounded load
generator on loopback (``tests/services/_harness.py``), all at once by
default (``--jobs``), and prints per run: the verdict, the time from the start
of the load (and of the server) to the first ``leak`` event, the request
rate, how fast the server's RSS grew, and the top growing types.

Default: real time and the tracker's defaults (no ``configure()`` call); a
leaky run stops at its first report or after ``--cap`` seconds, a clean one
after the same number of seconds.  ``--quick``: the tests' setting (time scale
1/10, 200 requests/s, clean twins 9000 requests).  ``--cost``: instead of
the verdicts, the server's CPU time per request with and without memwatch
(clean apps, alternating runs, medians).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "services"))
if (ROOT / "src" / "memwatch").is_dir():
    sys.path.insert(1, str(ROOT / "src"))
from _harness import SCENARIOS, Result  # noqa: E402

HARNESS = ROOT / "tests" / "services" / "_harness.py"


def run_scenario(name: str, *, leak: bool, scale: float, duration: float, rate: float,
                 requests: int | None = None, memwatch: bool = True) -> Result:
    """One run in its own process (its load generator does not share our GIL)."""
    cmd = [sys.executable, str(HARNESS), name, "--scale", repr(scale), "--duration",
           repr(duration), "--rate", repr(rate)]
    cmd += ["--leak"] if leak else []
    cmd += ["--requests", str(requests)] if requests else []
    cmd += [] if memwatch else ["--no-memwatch"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return Result(name, leak, scale, memwatch, returncode=-1,
                      errors=[f"harness failed: {proc.stderr[-500:]}"])
    return Result(**json.loads(lines[-1][7:]))


def fmt_rate(first: int | None, last: int | None, seconds: float) -> str:
    if first is None or last is None or seconds <= 0:
        return "-"
    return f"{(last - first) / seconds / 1024:+.0f} KB/s"


def verdicts(args, names: list[str]) -> int:
    runs = [(n, leak) for n in names for leak in (True, False)]

    def one(run):
        name, leak = run
        if leak:
            return run_scenario(name, leak=True, scale=args.scale, duration=args.cap,
                                rate=args.rate)
        return run_scenario(name, leak=False, scale=args.scale, rate=args.rate,
                            duration=args.clean_cap, requests=args.clean_requests)

    print(f"time scale {args.scale} ({'defaults, no configure()' if args.scale == 1 else 'tests'}),"
          f" {args.rate:g} requests/s per server, {len(runs)} runs, {args.jobs} at once; "
          f"leaky runs stop at the first report (cap {args.cap:g} s)\n")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, runs))
    header = (f"{'app':<15}{'variant':<8}{'verdict':>9}{'detected':>10}{'(server)':>10}"
              f"{'requests':>10}{'req/s':>8}{'RSS growth':>12}  top types (expected type's rank)")
    print(header)
    print("-" * len(header))
    wrong = 0
    for r in results:
        scenario = SCENARIOS[r.scenario]
        verdict = "leak" if r.leaks else "no leak"
        ok = bool(r.leaks) == r.leaking and r.returncode is None and not r.errors
        detail = ""
        detected = server = "-"
        if r.leaks:
            first = r.leaks[0]
            detected = f"{first['after_load_start']:.0f} s"
            server = f"{first['after_server_start']:.0f} s"
            top = first["top_types"]
            rank = top.index(scenario.expect_type) + 1 if scenario.expect_type in top else None
            ok = ok and (rank is not None or not r.leaking)
            detail = f"{', '.join(top[:4])} ({scenario.expect_type}: " + (
                f"#{rank})" if rank else "absent)")
        else:
            detail = f"{r.stats} stats samples in {r.ran:.0f} s"
        if r.errors or r.returncode is not None:
            detail += f"; errors {r.errors} server rc {r.returncode} {r.stderr[-200:]!r}"
        wrong += not ok
        print(f"{r.scenario:<15}{'leaky' if r.leaking else 'clean':<8}{verdict:>9}{detected:>10}"
              f"{server:>10}{r.requests:>10}{r.rate:>8.0f}"
              f"{fmt_rate(r.rss_first, r.rss_last, r.ran):>12}  {detail}"
              + ("" if ok else "  <-- WRONG"))
    print(f"\n{len(results) - wrong}/{len(results)} right.  'detected': seconds from the start of "
          f"the load (the leak starts with it) to the first leak event; '(server)': from the "
          f"server's start.  RSS growth: between the first and last stats samples, per second "
          f"of load.  Times are real seconds.")
    for r in results:
        if r.leaks:
            print(f"  {r.scenario} leaky: {r.leaks[0]['reason']}; "
                  f"growth {r.leaks[0]['growth'] / 2**20:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=1))
    return 1 if wrong else 0


def cost(args, names: list[str]) -> int:
    print(f"server CPU per request, clean apps, with and without memwatch (defaults), "
          f"{args.rate:g} requests/s for {args.cost_seconds:g} s per run, {args.repeat} runs "
          f"each, alternating, one run at a time; machine shared, medians\n")
    header = f"{'app':<15}{'plain us/req':>14}{'memwatch us/req':>17}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name in names:
        per = {True: [], False: []}
        for _ in range(args.repeat):
            for with_mw in (False, True):
                r = run_scenario(name, leak=False, scale=1.0, duration=args.cost_seconds,
                                 rate=args.rate, memwatch=with_mw)
                if r.server_cpu is not None and r.requests:
                    per[with_mw].append(r.server_cpu / r.requests * 1e6)
        if not per[True] or not per[False]:
            print(f"{name:<15}  (no CPU measure: psutil missing?)")
            continue
        plain, tracked = statistics.median(per[False]), statistics.median(per[True])
        print(f"{name:<15}{plain:>14.0f}{tracked:>17.0f}{tracked / plain:>8.3f}")
    print("\nCPU: user + system of the serving processes (gunicorn's master and worker) "
          "from the start of the load to its end (start-up left out), divided by the requests "
          "served.")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"apps to run (default all: {', '.join(SCENARIOS)})")
    p.add_argument("--quick", action="store_true", help="the tests' setting (time scale 0.1)")
    p.add_argument("--scale", type=float, default=None, help="the tracker's time_scale")
    p.add_argument("--rate", type=float, default=None, help="requests per second per server")
    p.add_argument("--cap", type=float, default=None, help="longest leaky run (real seconds)")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (default: all)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--cost", action="store_true", help="server CPU per request instead")
    p.add_argument("--cost-seconds", type=float, default=30.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    names = args.names or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown app(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    missing = {n: SCENARIOS[n].missing() for n in names if SCENARIOS[n].missing()}
    if missing:
        print("skipped (pip install 'memwatch[services]'): " + "; ".join(
            f"{n} needs {', '.join(m)}" for n, m in missing.items()) + "\n")
        names = [n for n in names if n not in missing]
    if args.jobs is None:
        args.jobs = 2 * len(names) or 1
    if args.quick:
        defaults = {"scale": 0.1, "rate": 200.0, "cap": 150.0}
        args.clean_requests, args.clean_cap = 9000, 450.0
    else:
        defaults = {"scale": 1.0, "rate": 100.0, "cap": 300.0}
        args.clean_requests = None
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.quick:
        args.clean_cap = args.cap
    os.environ.pop("MEMWATCH_TRACE_GC", None)
    sys.exit(cost(args, names) if args.cost else verdicts(args, names))


if __name__ == "__main__":
    main()
