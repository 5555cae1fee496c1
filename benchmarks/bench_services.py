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
(clean apps, alternating runs, medians).  ``--wrk``: what memwatch costs the
HTTP apps at full speed: ``wrk`` (Debian package) saturates each clean app,
plain and with memwatch's defaults, alternating, and the medians of requests
per second and of the 50th/99th latency percentiles are printed side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "services"))

def _built_in_place(package: Path) -> bool:
    """Whether ``package`` (src/memwatch) has its C core built for this interpreter."""
    from importlib.machinery import EXTENSION_SUFFIXES
    return any((package / f"_core{suffix}").exists() for suffix in EXTENSION_SUFFIXES)


# The checkout's memwatch where it is built in place (python setup.py
# build_ext --inplace), else the one installed for this interpreter: a fresh
# clone's src/ has no C core, and every server then failed to boot.
if _built_in_place(ROOT / "src" / "memwatch"):
    sys.path.insert(1, str(ROOT / "src"))
from _harness import (SCENARIOS, Result, free_port, server_env, stop_server,  # noqa: E402
                      wait_ready)

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

    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; "
          f"time scale {args.scale} ({'defaults, no configure()' if args.scale == 1 else 'tests'}),"
          f" {args.rate:g} requests/s per server, {len(runs)} runs, {args.jobs} at once; "
          f"leaky runs stop at the first report (cap {args.cap:g} s)\n")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, runs))
    header = (f"{'app':<15}{'variant':<8}{'verdict':>9}{'detected':>10}{'(server)':>10}"
              f"{'requests':>10}{'req/s':>8}{'RSS growth':>12}{'leak rate':>11}"
              f"  top types (expected type's rank)")
    print(header)
    print("-" * len(header))
    wrong = 0
    for r in results:
        scenario = SCENARIOS[r.scenario]
        verdict = "leak" if r.leaks else "no leak"
        ok = bool(r.leaks) == r.leaking and r.returncode is None and not r.errors
        detail = ""
        detected = server = rate = "-"
        if r.leaks:
            first = r.leaks[0]
            if first.get("window"):
                rate = f"{first['growth'] / first['window'] / 1024:.0f} KB/s"
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
              f"{fmt_rate(r.rss_first, r.rss_last, r.ran):>12}{rate:>11}  {detail}"
              + ("" if ok else "  <-- WRONG"))
    print(f"\n{len(results) - wrong}/{len(results)} right.  'detected': seconds from the start of "
          f"the load (the leak starts with it) to the first leak event; '(server)': from the "
          f"server's start.  RSS growth: the server's RSS (psutil, from outside) from the start "
          f"to the end of the load, per second.  leak rate: the reported growth over the "
          f"reported window.  Times are real seconds.  Load average at the end: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores).")
    for r in results:
        if r.leaks:
            print(f"  {r.scenario} leaky: {r.leaks[0]['reason']}; "
                  f"growth {r.leaks[0]['growth'] / 2**20:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=1))
    return 1 if wrong else 0


def _order(k: int) -> tuple[bool, bool]:
    """Run k's order, plain then memwatch or the other way round (ABBA).
    With plain always first, memwatch read 4-10% faster in every app under
    wrk (stop 20): most likely a bias of the first run of a pair (caches,
    the CPU's clock), which alternating the order cancels."""
    return (False, True) if k % 2 == 0 else (True, False)


def cost(args, names: list[str]) -> int:
    print(f"server CPU per request, clean apps, with and without memwatch (defaults), "
          f"{args.rate:g} requests/s for {args.cost_seconds:g} s per run, {args.repeat} runs "
          f"each, alternating, one run at a time; machine shared, medians\n")
    header = f"{'app':<15}{'plain us/req':>14}{'memwatch us/req':>17}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name in names:
        per = {True: [], False: []}
        for k in range(args.repeat):
            for with_mw in _order(k):
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


_WRK_SCRIPT = """\
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", %s)
end
"""


def _lua_path(template: str) -> str:
    """A scenario's path template ("/page/{item}?v={n}") as a Lua expression of n."""
    parts = []
    for piece in re.split(r"(\{item\}|\{n\})", template):
        if piece == "{item}":
            parts.append("(n % 97)")
        elif piece == "{n}":
            parts.append("n")
        elif piece:
            parts.append(json.dumps(piece))     # plain ASCII: a valid Lua string literal
    return " .. ".join(parts)


def _wrk_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")


def wrk_run(name: str, *, memwatch: bool, seconds: float, connections: int) -> dict:
    """One clean app served plain or with memwatch, saturated by wrk."""
    scenario = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix=f"memwatch-wrk-{name}-") as tmp:
        jsonl = Path(tmp) / "events.jsonl" if memwatch else None
        script = Path(tmp) / "paths.lua"
        script.write_text(_WRK_SCRIPT % _lua_path(scenario.path))
        port = free_port()
        proc = subprocess.Popen(scenario.command(port, jsonl), cwd=HARNESS.parent,
                                env=server_env(jsonl, 1.0, False), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_ready(port, proc, jsonl, 120)
            cmd = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", str(script),
                   f"http://127.0.0.1:{port}/"]
            subprocess.run(cmd[:1] + ["-d2s"] + cmd[1:], capture_output=True, timeout=90)
            out = subprocess.run(cmd[:1] + [f"-d{seconds:g}s"] + cmd[1:], capture_output=True,
                                 text=True, timeout=seconds + 90).stdout
        finally:
            stop_server(proc)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"rps": float(rps.group(1)) if rps else float("nan"),
            "p50": _wrk_ms(lat.get("50", "")), "p99": _wrk_ms(lat.get("99", "")),
            "bad": int(bad.group(1)) if bad else 0}


def wrk_cost(args, names: list[str]) -> int:
    if not shutil.which("wrk"):
        print("bench_services --wrk: SKIPPED: wrk is not installed (apt-get install -y wrk)")
        return 0
    names = [n for n in names if SCENARIOS[n].path]      # HTTP apps only
    print(f"wrk -t1 -c{args.connections} for {args.cost_seconds:g} s per run against each clean "
          f"app, plain and with memwatch (defaults), alternating (ABBA), {args.repeat} runs "
          f"each, one at a time, medians; load average at the start "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared)\n")
    header = (f"{'app':<15}{'plain req/s':>12}{'memwatch':>10}{'ratio':>7}"
              f"{'p50 ms plain':>14}{'memwatch':>10}{'p99 ms plain':>14}{'memwatch':>10}")
    print(header)
    print("-" * len(header))
    for name in names:
        runs = {False: [], True: []}
        for k in range(args.repeat):
            for with_mw in _order(k):
                runs[with_mw].append(wrk_run(name, memwatch=with_mw, seconds=args.cost_seconds,
                                             connections=args.connections))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99")}
               for k, v in runs.items()}
        bad = sum(r["bad"] for v in runs.values() for r in v)
        plain, tracked = med[False], med[True]
        print(f"{name:<15}{plain['rps']:>12.0f}{tracked['rps']:>10.0f}"
              f"{tracked['rps'] / plain['rps']:>7.3f}{plain['p50']:>14.2f}{tracked['p50']:>10.2f}"
              f"{plain['p99']:>14.2f}{tracked['p99']:>10.2f}"
              + (f"  ({bad} non-2xx answers)" if bad else ""))
    print(f"\nratio: memwatch's requests/s over plain (1.000: no cost).  Load average at the end: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
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
    p.add_argument("--wrk", action="store_true",
                   help="requests/s and latency under wrk, plain vs memwatch, instead")
    p.add_argument("--connections", type=int, default=8, help="wrk's connections (--wrk)")
    p.add_argument("--cost-seconds", type=float, default=30.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    import importlib.util
    spec = importlib.util.find_spec("memwatch")
    print(f"memwatch from {Path(spec.origin).parent if spec and spec.origin else 'nowhere'}")
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
    if args.wrk:
        sys.exit(wrk_cost(args, names))
    sys.exit(cost(args, names) if args.cost else verdicts(args, names))


if __name__ == "__main__":
    main()
