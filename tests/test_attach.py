"""`memwatch attach PID ...` against a real child process (PEP 768, 3.14+)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from memwatch import attach
from memwatch.cli import main

TESTS_DIR = Path(__file__).resolve().parent
HAS_REMOTE_EXEC = hasattr(sys, "remote_exec")
needs_314 = pytest.mark.skipif(not HAS_REMOTE_EXEC, reason="sys.remote_exec is 3.14+")

# A service that never imports memwatch: it keeps allocating and keeps
# running Python code (injected code runs at the main thread's safe points).
SERVICE = textwrap.dedent("""
    import sys, time
    class Session:
        pass
    # Instances exist before "ready": a request can run at the very first
    # safe point after the print (a census there once found no Session).
    sessions = [Session() for _ in range(100)]
    print("ready", flush=True)
    end = time.monotonic() + 300
    while time.monotonic() < end:
        sessions.append(Session())
        if len(sessions) > 5000:
            del sessions[:1000]
        {pause}
    assert "memwatch" not in sys.modules or {allow_import}
""")


def _env(importable: bool = True) -> dict:
    env = dict(os.environ)
    if importable:
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(TESTS_DIR)] + sys.path if p)
    return env


def _start(tmp_path, *, pause="time.sleep(0.001)", args=(), importable=True):
    script = tmp_path / "service.py"
    script.write_text(SERVICE.format(pause=pause, allow_import=True))
    proc = subprocess.Popen([sys.executable, *args, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(importable))
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


@pytest.fixture
def service(tmp_path):
    proc = _start(tmp_path)
    yield proc
    proc.kill()
    proc.wait(timeout=30)


def _attach_dirs() -> set:
    tmp = attach.tempfile.gettempdir()
    return {p for p in os.listdir(tmp) if p.startswith("memwatch-attach-")}


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["attach", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.skipif(HAS_REMOTE_EXEC, reason="the caller-side error is for 3.10-3.13")
def test_older_caller_gets_a_clear_error(capsys):
    code, out, err = _cli(capsys, os.getpid(), "census")
    assert code == 2
    assert "needs Python 3.14 or newer" in err and "python3.14 -m memwatch attach" in err


def test_a_gone_process_is_reported(capsys):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    if not HAS_REMOTE_EXEC:
        pytest.skip("the caller check comes first before 3.14")
    code, out, err = _cli(capsys, proc.pid, "census")
    assert code == 2 and f"no process {proc.pid}" in err


@needs_314
def test_census_of_a_process_that_never_imported_memwatch(service, capsys):
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "census", "-n", 100000, "--json")
    assert code == 0, err
    rows = {r["what"]: r for r in json.loads(out)["types"]}
    session = rows.get("__main__.Session")
    assert session is not None and session["count"] >= 1, out[:2000]


@needs_314
def test_snapshot_comes_back_private(service, tmp_path, capsys):
    from memwatch.snapshot import load_snapshot
    dest = tmp_path / "service.heapsnapshot"
    before = _attach_dirs()
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "snapshot", dest)
    assert code == 0, err
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    counts = load_snapshot(dest).type_counts()
    assert counts["__main__.Session"][0] >= 1
    # The private directory the answer went through is gone.
    # (New ones only: another memwatch run on this machine may remove its own.)
    assert not _attach_dirs() - before


@needs_314
def test_retainers_by_type_name(service, capsys):
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "retainers", "__main__.Session", "-n", 2)
    assert code == 0, err
    assert "sessions" in out
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "retainers", "no.such.Type")
    assert code == 2 and "no class named 'no.such.Type'" in err


@needs_314
def test_start_tracker_and_serve_then_stop(service, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "start", "--jsonl", events)
    assert code == 0, err
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "serve", "--port", 0)
    assert code == 0, err
    url = out.strip().rsplit(" ", 1)[-1]
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url + "/ah/memoryProfile/status", timeout=60) as r:
        assert r.status == 200 and isinstance(json.loads(r.read()), dict)
    # The service allocates steadily, so collections (and stats events) come.
    deadline = time.monotonic() + 120
    kinds = set()
    while time.monotonic() < deadline and "stats" not in kinds:
        time.sleep(0.2)
        if events.exists():
            kinds = {json.loads(line)["event"] for line in events.read_text().splitlines() if line}
    assert {"start", "stats"} <= kinds
    assert stat.S_IMODE(events.stat().st_mode) == 0o600
    code, out, err = _cli(capsys, "--timeout", 120, service.pid, "stop")
    assert code == 0 and "tracker" in out and "HTTP API" in out


@needs_314
def test_memwatch_not_importable_in_the_target(tmp_path, capsys):
    proc = _start(tmp_path, args=("-I", "-S"), importable=False)
    try:
        code, out, err = _cli(capsys, "--timeout", 120, proc.pid, "census")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert code == 2
    assert "memwatch is not importable in process" in err and "pip install memwatch" in err


@needs_314
def test_a_target_that_never_reaches_a_safe_point_times_out(tmp_path, capsys):
    # A sleeping main thread still answers (the sleep is interrupted), but
    # one long C call never reaches a safe point: sum() over a range runs
    # in C without checking the eval breaker.
    proc = _start(tmp_path, pause="sum(range(10 ** 13))")
    time.sleep(1.0)  # a few bytecodes after "ready" it is inside sum() for good
    try:
        code, out, err = _cli(capsys, "--timeout", 1.5, proc.pid, "census")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert code == 2 and "did not run the request within 1.5s" in err


@needs_314
def test_no_permission_to_ptrace(service):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the caller as an unprivileged user")
    # The caller, as nobody, may not attach to a process of root.
    code = ("import os, sys; os.setgid(65534); os.setuid(65534); "
            "from memwatch.cli import main; sys.exit(main(['attach', str(%d), 'census']))" % service.pid)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=_env(), cwd="/")
    assert res.returncode == 2, res.stderr
    assert "not permitted to attach" in res.stderr and "ptrace" in res.stderr


# A target that made itself non-dumpable (prctl PR_SET_DUMPABLE 0): the
# kernel lets a caller of the same user signal it but refuses it ptrace
# access and its memory (ptrace_may_access without CAP_SYS_PTRACE), the same
# refusal as Yama's ptrace_scope or a hardened service.  The caller may signal
# it, so the refusal comes from sys.remote_exec itself, not from memwatch's
# own pre-checks.
NON_DUMPABLE = textwrap.dedent("""
    import ctypes, sys, time
    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:   # PR_SET_DUMPABLE
        print("no prctl", flush=True)
        sys.exit(0)
    print("ready", flush=True)
    end = time.monotonic() + 300
    while time.monotonic() < end:
        time.sleep(0.01)
""")


@needs_314
def test_a_kernel_ptrace_refusal_is_reported():
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_DUMPABLE is Linux's")
    # Root has CAP_SYS_PTRACE and attaches anyway: run both sides as nobody.
    drop = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    target = subprocess.Popen([sys.executable, "-I", "-S", "-c", NON_DUMPABLE], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd="/", **drop)
    try:
        line = target.stdout.readline().strip()
        if line == "no prctl":
            pytest.skip("prctl(PR_SET_DUMPABLE) is not available here")
        assert line == "ready", target.stderr.read()
        code = ("import sys; from memwatch.cli import main; "
                "sys.exit(main(['attach', '--timeout', '60', str(%d), 'census']))" % target.pid)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=_env(), cwd="/", **drop)
    finally:
        target.kill()
        target.wait(timeout=30)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"not permitted to attach to process {target.pid} (ptrace)" in res.stderr, res.stderr
    assert "not dumpable" in res.stderr and "CAP_SYS_PTRACE" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
