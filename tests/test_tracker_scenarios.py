"""The leak verdict on real programs: the scenario corpus in tests/scenarios/.

Every scenario runs in its own interpreter, all at once, at a time scale of
1/10 (five nominal minutes in thirty seconds; the bytes are not scaled), and
reports its leak events.  Leaking scenarios must be reported (and name the
leaking type among the top types); the others must never be.  Nothing here
asserts timings: a loaded machine only makes a scenario slower, and each
leaking one runs long past its expected detection time.
``benchmarks/bench_scenarios.py`` runs the same corpus slower and prints the
time to detection."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SCALE = float(os.environ.get("MEMWATCH_SCENARIO_SCALE", "0.1"))
NAMES = sorted(p.stem for p in SCENARIOS.glob("*.py") if not p.stem.startswith("_"))

pytestmark = pytest.mark.slow

# Big heaps are smaller here (time is scaled, a heap walk is not: at 1/20, one
# second of walking is twenty nominal seconds) and skip the retainer searches.
ARGS = {name: ["--heap", "150000", "--retainers", "0"]
        for name in ("leak_bigheap_untracked", "ok_cyclic_bigheap")}
ARGS["ok_cache_big"] = ["--mb", "40"]
# The clean scenarios run five nominal minutes here (ten in the benchmark).
for _name in NAMES:
    if _name.startswith("ok_"):
        ARGS.setdefault(_name, []).extend(["--duration", "300"])


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SCENARIOS)] + [p for p in sys.path if p])
    env.pop("MEMWATCH_TRACE_GC", None)
    procs = {name: subprocess.Popen([sys.executable, str(SCENARIOS / f"{name}.py"),
                                     "--scale", str(SCALE), *ARGS.get(name, [])],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
             for name in NAMES}
    out = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        out[name] = (json.loads(lines[-1][7:]) if lines else None, proc.returncode, stderr)
    return out


def test_corpus_has_both_kinds():
    assert sum(n.startswith("leak_") for n in NAMES) >= 5
    assert sum(n.startswith("ok_") for n in NAMES) >= 6


@pytest.mark.parametrize("name", NAMES)
def test_scenario_verdict(results, name):
    result, returncode, stderr = results[name]
    assert returncode == 0 and result is not None, stderr[-3000:]
    assert result["stats"] + result["clock_samples"] >= 5, "the tracker hardly sampled"
    if result["leaking"]:
        assert result["leaks"], f"{name}: leak never reported ({result})"
        leak = result["leaks"][0]
        assert leak["after_leak_start"] > 0, f"{name}: reported before the leak began: {leak}"
        expected = result.get("expect_type")
        if expected:
            assert expected in leak["top_types"], leak
    else:
        assert result["leaks"] == [], f"{name}: false alarm {result['leaks']}"
