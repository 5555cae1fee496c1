"""The leak verdict on the scenario corpus: verdict and time to detection.

    python benchmarks/bench_scenarios.py [--scale 0.25] [--jobs 4] [names...]

Runs every program of ``tests/scenarios/`` (the tests run them 20 times
faster) at ``--scale`` (1 = real time: a slow leak then takes ten minutes to
report) with the tracker's default settings, and prints, per scenario, whether
it was expected to leak, what the tracker said, and for leaks the nominal
time from the start of the leak to the first ``leak`` event (and from the
process's start), where that time went (the end of the window that first met
the rule, the confirming full collection and its pause, delivery), its
reason and the top growing types.  Times are nominal seconds (real seconds /
scale).  The machine's load average is printed before and after the run:
real-time scenarios are load-sensitive.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"


BIG_HEAP = ("leak_bigheap_untracked", "ok_cyclic_bigheap")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f}, {five:.1f}, {fifteen:.1f} (2 cores: {os.cpu_count()} CPUs)"


def run(name: str, scale: float, extra: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SCENARIOS), str(ROOT / "src"),
                                         env.get("PYTHONPATH", "")])
    t = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCENARIOS / f"{name}.py"), "--scale", str(scale),
                           *extra], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return {"scenario": name, "error": proc.stderr[-2000:], "real": time.monotonic() - t}
    result = json.loads(lines[-1][7:])
    result["real"] = time.monotonic() - t
    return result


def _secs(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--jobs", type=int, default=4, help="scenarios run at once")
    parser.add_argument("--measure", default="rss")
    parser.add_argument("--heap", type=int, default=None,
                        help="long-lived objects of the big-heap scenarios (default theirs: 500k)")
    parser.add_argument("--blob", type=int, default=0,
                        help="bytes of payload per long-lived item of the big-heap scenarios "
                             "(--heap 700000 --blob 1100: 2.8M objects, ~1 GB)")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in SCENARIOS.glob("*.py")
                                 if not p.stem.startswith("_"))
    extra = ["--measure", args.measure]
    print(f"scale {args.scale} (nominal seconds = real / {args.scale}), measure {args.measure}, "
          f"{len(names)} scenarios, {args.jobs} at a time; before: {load()}\n")

    def heap_args(name: str) -> list[str]:
        if name not in BIG_HEAP:
            return []
        return ((["--heap", str(args.heap)] if args.heap else [])
                + (["--blob", str(args.blob)] if args.blob else []))

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: run(n, args.scale, extra + heap_args(n)), names))
    print(f"after: {load()}\n")
    header = (f"{'scenario':<24}{'expected':>8}{'verdict':>9}{'detected':>10}{'(start)':>9}"
              f"{'window end':>11}{'confirmed':>10}{'pause':>7}  reason / top types")
    print(header)
    print("-" * len(header))
    wrong = 0
    for r in results:
        if "error" in r:
            print(f"{r['scenario']:<22}  ERROR {r['error'][-300:]}")
            wrong += 1
            continue
        expected = "leak" if r["leaking"] else "no leak"
        verdict = "leak" if r["leaks"] else "no leak"
        ok = expected == verdict
        wrong += not ok
        if r["leaks"]:
            first = r["leaks"][0]
            after = f"{first['after_leak_start']:.0f} s"
            window = first.get("window") or [None, None]
            timing = (f"{first['t']:>7.0f} s{_secs(window[1]):>11}{_secs(first.get('confirmed_at')):>10}"
                      f"{_secs(first.get('confirm_pause'), 2):>7}")
            holders = [h for h in first.get("holders") or [] if h]
            detail = (f"[{first.get('kind')}] {first['reason']}; top: "
                      f"{', '.join(first['top_types'][:3])}"
                      + (f"; held by: {holders[0]}" if holders else ""))
        else:
            after = "-"
            timing = f"{'-':>9}{'-':>11}{'-':>10}{'-':>7}"
            detail = (f"{r['stats']} gc + {r.get('clock_samples', 0)} clock samples over "
                      f"{r['ran']:.0f} s, {r.get('suspects', 0)} suspected, "
                      f"{r.get('rejected', 0)} rejected by a full collection")
        mark = "" if ok else "  <-- WRONG"
        heap = (f"; heap {r['heap']} items, {r['tracked_objects']} tracked objects, RSS "
                f"{r['rss_end'] / 2**20:.0f} MiB" if r.get("tracked_objects") else "")
        print(f"{r['scenario']:<24}{expected:>8}{verdict:>9}{after:>10}{timing}  {detail}{mark}"
              f"  (full GCs {r.get('num_full_gc')}{heap})")
    print(f"\n{len(results) - wrong}/{len(results)} verdicts right.  detected: nominal s from the "
          f"leak's start to the listener; (start), window end, confirmed: nominal s from the "
          f"process's start to the listener, to the end of the window reported (the rule met: a "
          f"suspicion) and to the confirming full collection; pause: its length (real s).  Reasons quote real time (durations and "
          f"rates are real, not nominal).")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
