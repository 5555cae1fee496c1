"""Leaks in real services: real frameworks under real servers, driven on loopback.

Each app of ``tests/services/`` (Flask and Django under gunicorn, FastAPI
under uvicorn, Flask under waitress, a job worker) runs twice at once, leaky
and clean, with memwatch's leak listener inside the serving process and a
load generator of its own (``tests/services/_harness.py``, one subprocess per
run: ten servers and ten load generators share the machine).  The tracker runs at a
time scale of 1/10 (a one-minute verdict window in six seconds; bytes are not
scaled).  Leaky apps must be reported with the leaking type among
``top_types``; clean twins must never be, after serving at least as many
requests as got their leaky twin reported (each pair shares a "twin file":
the clean run goes on until its leaky twin has stopped, then until it has
served as many requests).  Nothing here asserts timings: a
loaded machine only makes a run slower.  ``benchmarks/bench_services.py``
runs the same at memwatch's defaults and prints time to detection.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parent / "services"
sys.path.insert(0, str(SERVICES))
from _harness import SCENARIOS  # noqa: E402

sys.path.remove(str(SERVICES))

SCALE = float(os.environ.get("MEMWATCH_SERVICE_SCALE", "0.1"))
RATE = 200               # requests (jobs) per second, per server
LEAKY_CAP = 150          # real seconds: a leaky app unreported by then fails
CLEAN_REQUESTS = 6000    # at least (30 s at RATE), and at least as many as the leaky twin

pytestmark = pytest.mark.slow


def _args(name: str, leak: bool, twin_file: Path) -> list[str]:
    args = [sys.executable, str(SERVICES / "_harness.py"), name, "--scale", str(SCALE),
            "--rate", str(RATE), "--twin-file", str(twin_file)]
    if leak:
        return args + ["--leak", "--duration", str(LEAKY_CAP)]
    return args + ["--requests", str(CLEAN_REQUESTS), "--duration", str(2 * LEAKY_CAP)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    twins = tmp_path_factory.mktemp("service-twins")
    runnable = [n for n, s in SCENARIOS.items() if not s.missing()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    procs = {(name, leak): subprocess.Popen(_args(name, leak, twins / f"{name}.requests"),
                                            stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, env=env)
             for name in runnable for leak in (True, False)}
    out = {}
    for key, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=6 * LEAKY_CAP)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        out[key] = (json.loads(lines[-1][7:]) if lines else None, proc.returncode, stderr)
    return out


def _get(runs, name, leak):
    missing = SCENARIOS[name].missing()
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)} (pip install 'memwatch[services]')")
    result, returncode, stderr = runs[(name, leak)]
    assert returncode == 0 and result is not None, stderr[-3000:]
    assert not result["errors"], f"the load generator got errors: {result['errors']}"
    assert result["returncode"] is None, f"the server died: {result['stderr']}"
    assert result["pid"] is not None, f"memwatch never said it was installed: {result}"
    return result


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_leaky_service_is_reported(runs, name):
    result = _get(runs, name, True)
    assert result["leaks"], (f"{name}: leak never reported in {result['ran']} s "
                             f"({result['requests']} requests, {result['stats']} stats samples, "
                             f"RSS {result['rss_first']} -> {result['rss_last']})")
    leak = result["leaks"][0]
    assert leak["after_load_start"] > 0, leak
    expected = SCENARIOS[name].expect_type
    assert expected in leak["top_types"], f"{name}: {expected} not in top_types: {leak}"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_clean_twin_is_never_reported(runs, name):
    result = _get(runs, name, False)
    assert result["leaks"] == [], f"{name} (clean): false alarm {result['leaks']}"
    # The tracker ran: it judges clock samples every second (not events), so
    # `stats` (after full collections: the program's, the timer's) can be few.
    assert result["stats"] >= 1, f"the tracker never sampled: {result}"
    leaky, _, _ = runs[(name, True)]
    if leaky is not None and leaky.get("leaks"):
        # The clean twin saw at least the traffic that exposed the leak.
        assert result["requests"] >= leaky["requests"], (result["requests"], leaky["requests"])
