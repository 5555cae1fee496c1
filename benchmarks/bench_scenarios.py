"""The leak verdict on the scenario corpus: verdict and time to detection.

    python benchmarks/bench_scenarios.py [--scale 0.25] [--jobs 4] [names...]

Runs every program of ``tests/scenarios/`` (the tests run them 20 times
faster) at ``--scale`` (1 = real time: a slow leak then takes ten minutes to
report) with the tracker's default settings, and prints, per scenario, whether
it was expected to leak, what the tracker said, and for leaks the nominal
time from the start of the leak to the first ``leak`` event, its reason and
the top growing types.  Times are nominal seconds (real seconds / scale).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--jobs", type=int, default=4, help="scenarios run at once")
    parser.add_argument("--measure", default="rss")
    parser.add_argument("--heap", type=int, default=None,
                        help="long-lived objects of the big-heap scenarios (default theirs: 500k)")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in SCENARIOS.glob("*.py")
                                 if not p.stem.startswith("_"))
    extra = ["--measure", args.measure]
    print(f"scale {args.scale} (nominal seconds = real / {args.scale}), measure {args.measure}, "
          f"{len(names)} scenarios, {args.jobs} at a time\n")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(
            lambda n: run(n, args.scale, extra + (["--heap", str(args.heap)]
                                                  if args.heap and n in BIG_HEAP else [])),
            names))
    header = (f"{'scenario':<24}{'expected':>8}{'verdict':>9}{'detected':>10}  "
              "reason / top types (detected: nominal s after the leak began)")
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
            holders = [h for h in first.get("holders") or [] if h]
            detail = (f"[{first.get('kind')}] {first['reason']}; top: "
                      f"{', '.join(first['top_types'][:3])}"
                      + (f"; held by: {holders[0]}" if holders else ""))
        else:
            after = "-"
            detail = (f"{r['stats']} gc + {r.get('clock_samples', 0)} clock samples over "
                      f"{r['ran']:.0f} s, {r.get('suspects', 0)} suspected, "
                      f"{r.get('rejected', 0)} rejected by a full collection")
        mark = "" if ok else "  <-- WRONG"
        print(f"{r['scenario']:<24}{expected:>8}{verdict:>9}{after:>10}  {detail}{mark}"
              f"  (full GCs {r.get('num_full_gc')})")
    print(f"\n{len(results) - wrong}/{len(results)} verdicts right. Reasons quote real time "
          f"(durations and rates are real, not nominal).")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
