"""memwatch run: the event log, and whole runs of small programs under the tracker."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import memwatch
from memwatch.runner import EventLog, format_leak, format_stats

HAVE_TRACKER = "on" in getattr(memwatch, "_LAZY", {})
TESTS_DIR = Path(__file__).resolve().parent


def _stats(n=1):
    return {"num_full_gc": n, "num_inc_gc": 2, "heap_compactions": n, "estimated_base": 2_000_000,
            "current_base": 2_100_000, "min": 1_900_000, "max": 2_100_000, "usage_trend": 0.5,
            "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "pause": 0.0042,
            "collected": 12, "uncollectable": 0, "rss": 31_000_000, "measure": "census"}


LEAK = {"start": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "end": dt.datetime(2026, 1, 1, 0, 0, 20, tzinfo=dt.timezone.utc), "growth": 67984,
        "reason": "heap growth over 5 consecutive GCs (20s) - 11.67 mb/hr", "samples": 5,
        "top_types": [{"what": "app.LeakingClass", "count_change": 9998, "size_change": 239952}]}


def test_event_lines_read_well():
    line = format_stats(_stats(17))
    assert line.startswith("memwatch: stats #17, current_base 2 mb")
    assert "rss 29.56 mb" in line and "pause 4.2 ms" in line and "trend +0.5%" in line
    leak = format_leak(LEAK)
    assert "LEAK heap growth over 5 consecutive GCs (20s) - 11.67 mb/hr" in leak
    assert "growth 66.39 kb" in leak and "app.LeakingClass +9998 (234.33 kb)" in leak


def test_event_log_prints_and_writes_json_lines():
    out, jl = io.StringIO(), io.StringIO()
    log = EventLog(out=out, jsonl=jl, print_stats=False)
    log.on_stats(_stats(1))
    log.on_leak(LEAK)
    log.on_stats(_stats(2))
    log.flush()
    assert out.getvalue().count("\n") == 1 and "LEAK" in out.getvalue()  # stats not printed
    events = [json.loads(x) for x in jl.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stats", "leak", "stats"]
    assert list(events[0])[1:9] == ["num_full_gc", "num_inc_gc", "heap_compactions", "estimated_base",
                                    "current_base", "min", "max", "usage_trend"]
    assert events[0]["timestamp"] == "2026-01-01T00:00:00+00:00"
    assert events[1]["end"] == "2026-01-01T00:00:20+00:00"
    assert log.counts == {"stats": 2, "leak": 1}


def _memwatch_run(tmp_path, script_src, *args, timeout=180):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(script_src))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-m", "memwatch.cli", "run", *args, str(script), "a1", "--flag"],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_run_reports_missing_script(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "memwatch.runner", str(tmp_path / "nope.py")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "no such script" in proc.stderr


needs_tracker = pytest.mark.skipif(not HAVE_TRACKER,
                                   reason="memwatch.on (the tracker, issue 3) is not in this tree yet")

PROGRAM = """
    import gc, sys
    print("argv", sys.argv[1:], "main", __name__)
    for _ in range(4):
        junk = [[] for _ in range(2000)]
        for j in junk: j.append(j)
        del junk
        gc.collect()
    sys.exit(3)
"""


@needs_tracker
def test_run_prints_events_keeps_stdout_and_exit_code(tmp_path):
    proc = _memwatch_run(tmp_path, PROGRAM, "--jsonl", "ev.jsonl")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "argv ['a1', '--flag'] main __main__"
    assert "memwatch: stats #" in proc.stderr
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit" and kinds.count("stats") >= 4
    assert events[-1]["code"] == 3
    stats = [e for e in events if e["event"] == "stats"]
    assert all("current_base" in e and "rss" in e for e in stats)
    # and the report draws them
    from memwatch.report import load_events, render_html
    with open(tmp_path / "ev.jsonl") as fh:
        page = render_html(load_events(fh))
    assert page.count("<polyline") == 3


@needs_tracker
def test_run_serves_the_http_api_while_the_program_runs(tmp_path):
    prog = """
        import http.client, json, os, re, sys, time
        # the runner printed the URL on stderr before starting us; find the port from the env
        port = int(os.environ["MW_PORT"])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/ah/memoryProfile/status", headers={"Authorization": "Bearer tk"})
        r = c.getresponse()
        print(r.status, sorted(json.loads(r.read()))[:4])
    """
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["MW_PORT"] = str(port)
    try:
        proc = _memwatch_run(tmp_path, prog, "--serve", str(port), "--token", "tk")
    finally:
        del os.environ["MW_PORT"]
    assert proc.returncode == 0, proc.stderr
    assert f"HTTP API on http://127.0.0.1:{port}/ah" in proc.stderr
    assert proc.stdout.strip() == "200 ['counts', 'lastDiff', 'lastEvent', 'lastGC']"


def test_subcommands_register_with_an_argparse_dispatcher():
    import argparse

    from memwatch import report, runner

    parser = argparse.ArgumentParser(prog="memwatch")
    sub = parser.add_subparsers(dest="command")
    runner.add_parser(sub)
    report.add_parser(sub)
    ns = parser.parse_args(["run", "--jsonl", "ev.jsonl", "--serve", "0", "app.py", "--its", "-x"])
    assert ns.func is runner.run and ns.jsonl == "ev.jsonl" and ns.serve == 0
    assert ns.target == ["app.py", "--its", "-x"]                 # the program's own args untouched
    ns = parser.parse_args(["report", "ev.jsonl", "-o", "r.html"])
    assert ns.func is report.run and ns.output == "r.html"


@needs_tracker
def test_run_then_report_through_the_memwatch_command(tmp_path):
    proc = _memwatch_run(tmp_path, PROGRAM, "-q", "--jsonl", "ev.jsonl")
    assert proc.returncode == 3 and "memwatch: stats" not in proc.stderr   # -q: leaks only
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    rep = subprocess.run([sys.executable, "-m", "memwatch.cli", "report", "ev.jsonl", "-o", "r.html"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "prog.py a1 --flag" in page and "exit code 3" in page


def test_leak_line_names_holders_and_sample_kind():
    leak = dict(LEAK, kind="clock", top_types=[
        {"what": "app.Session", "count_change": 900, "size_change": 300_000,
         "holder": "app -> dict 'SESSIONS' -> list[17] -> app.Session"}])
    line = format_leak(leak)
    assert "app.Session held by app -> dict 'SESSIONS' -> list[17] -> app.Session" in line
    assert line.endswith("[clock samples]")


def test_verdict_flags_become_configure_options():
    import argparse
    from memwatch.runner import add_arguments, tracker_options
    from memwatch.tracker import DEFAULTS
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--min-growth", "2mb", "--min-duration", "30", "--segments", "3",
                            "--sample-interval", "none", "--confirm", "none", "--retainers", "0",
                            "--top-types", "4", "--warmup", "5", "--min-samples", "7",
                            "script.py", "x"])
    assert tracker_options(ns) == {
        "min_growth": 2 << 20, "min_duration": 30.0, "segments": 3, "sample_interval": None,
        "confirm": None, "retainers": 0, "top_types": 4, "warmup": 5.0, "min_samples": 7}
    assert tracker_options(parser.parse_args(["script.py"])) == {}
    ns = parser.parse_args(["--min-growth", "500KB", "--timer-interval", "2.5", "s.py"])
    assert tracker_options(ns) == {"min_growth": 500 * 1024, "timer_interval": 2.5}
    for bad in (["--min-growth", "lots"], ["--min-growth", "-3mb"], ["--min-duration", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad + ["s.py"])
    # every flag is a real tracker option
    assert set(tracker_options(parser.parse_args(
        ["--min-growth", "1", "--min-duration", "1", "--min-samples", "2", "--segments", "2",
         "--warmup", "1", "--sample-interval", "1", "--timer-interval", "1", "--confirm",
         "blocks", "--top-types", "1", "--retainers", "1", "s.py"]))) <= set(DEFAULTS)


@needs_tracker
def test_run_passes_verdict_flags_to_the_tracker(tmp_path):
    program = textwrap.dedent("""
        import json, memwatch
        print(json.dumps(memwatch.tracker_info()["options"]))
    """)
    proc = _memwatch_run(tmp_path, program, "--min-growth", "3mb", "--min-duration", "45",
                         "--sample-interval", "2")
    assert proc.returncode == 0, proc.stderr
    options = json.loads(proc.stdout.strip().splitlines()[-1])
    assert options["min_growth"] == 3 << 20 and options["min_duration"] == 45.0
    assert options["sample_interval"] == 2.0


def test_bad_flag_value_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "memwatch.runner", "--min-growth", "lots",
                           "x.py"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert proc.returncode == 2 and "not a size: 'lots'" in proc.stderr
