"""Hostile input, each case in its own interpreter: a correct result or a
clean error, never a crash (issue 10).

Every script in tests/hostile/ asserts its own expected result and prints
"ok"; a crash shows as a negative return code (the signal), which is what
this module exists to catch on every supported CPython."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HOSTILE = Path(__file__).resolve().parent / "hostile"
CASES = sorted(p.name for p in HOSTILE.glob("*.py") if not p.name.startswith("_"))


def _run(script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HOSTILE.parent)] + sys.path if p)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return subprocess.run([sys.executable, str(HOSTILE / script)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("case", CASES)
def test_hostile_case(case):
    proc = _run(case)
    if proc.returncode < 0:
        pytest.fail(f"{case} crashed with {signal.Signals(-proc.returncode).name}:\n{proc.stderr[-4000:]}")
    if "SKIP:" in proc.stdout and proc.returncode == 0:
        pytest.skip(proc.stdout.split("SKIP:", 1)[1].strip())
    assert proc.returncode == 0, f"{case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.strip().endswith("ok"), proc.stdout[-2000:]


def test_cases_are_found():
    assert len(CASES) >= 4, CASES
