"""The memwatch command: summary, diff, retainers; errors; a fuzzed reader."""
from __future__ import annotations

import json
import os
import re
import random
import subprocess
import sys
import types

import pytest

import memwatch
from memwatch import cli
from memwatch.snapshot import SnapshotError, load_snapshot

SCENARIO = """
import sys, memwatch
class Session:
    pass
Session.__module__ = "app"
CACHE = {"CACHE": [None, None, None, Session()]}
EXTRA = [Session() for _ in range(int(sys.argv[2]))]
memwatch.write_snapshot(sys.argv[1])
"""


def _memwatch(*args, **kw):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-m", "memwatch", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120, **kw)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    d = tmp_path_factory.mktemp("snaps")
    script = d / "scenario.py"
    script.write_text(SCENARIO)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = []
    for n, extra in (("a", 0), ("b", 50)):
        path = d / f"{n}.heapsnapshot"
        subprocess.run([sys.executable, str(script), str(path), str(extra)], check=True, env=env,
                       timeout=120)
        out.append(path)
    return out


def test_summary(snapshots):
    proc = _memwatch("summary", snapshots[0], "-n", "5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["type", "count", "size"]
    assert lines[-1].startswith("total")
    assert len(lines) == 1 + 5 + 2
    js = json.loads(_memwatch("summary", snapshots[0], "--json").stdout)
    assert js["nodes"] == load_snapshot(snapshots[0]).census().total_count


def test_diff_in_heapdiffs_table_format(snapshots):
    proc = _memwatch("diff", *snapshots)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("before: ") and "after: " in lines[0] and "change: " in lines[0]
    assert lines[1].split() == ["type", "size", "change", "+", "-"]
    row = next(line for line in lines if line.startswith("app.Session"))
    assert row.split()[-2:] == ["50", "0"]
    diff = json.loads(_memwatch("diff", *snapshots, "--json").stdout)
    session = next(d for d in diff["change"]["details"] if d["what"] == "app.Session")
    assert session["+"] == 50 and session["-"] == 0


def test_retainers(snapshots):
    proc = _memwatch("retainers", snapshots[0], "app.Session")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["__main__ -> dict 'CACHE' -> dict 'CACHE' -> list[3] -> app.Session"]
    none = _memwatch("retainers", snapshots[0], "no.such.Type")
    assert none.returncode == 1 and "no.such.Type" in none.stdout


@pytest.mark.parametrize("content", [None, b"", b"{", b"[1, 2]", b'{"snapshot": {}}',
                                     b'{"snapshot": {"meta": {"node_fields": [], "edge_fields": []}},'
                                     b' "nodes": [], "edges": [], "strings": []}', b"\xff\xfe garbage"])
def test_bad_files_give_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.heapsnapshot"
    if content is not None:
        path.write_bytes(content)
    for cmd in (["summary", path], ["diff", path, path], ["retainers", path, "dict"]):
        proc = _memwatch(*cmd)
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert proc.stderr.startswith("memwatch: error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_truncated_snapshot(snapshots, tmp_path):
    data = snapshots[0].read_bytes()
    for cut in (10, len(data) // 3, len(data) - 3):
        path = tmp_path / "cut.heapsnapshot"
        path.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            load_snapshot(path)
    assert cli.main(["summary", str(path)]) == 2


def test_commands_are_registered_from_modules(monkeypatch, capsys):
    mod = types.ModuleType("memwatch_test_cmd")

    def add_parser(subparsers):
        p = subparsers.add_parser("hello")
        p.set_defaults(func=lambda args: print("hi") or 0)
    mod.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "memwatch_test_cmd", mod)
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [("hello", "memwatch_test_cmd")])
    assert cli.main(["hello"]) == 0
    assert capsys.readouterr().out == "hi\n"
    assert cli.main([]) == 2


# -- fuzzing the reader ---------------------------------------------------------------

def _tiny_snapshot() -> bytes:
    """A small valid snapshot: root -> module -> dict -> list -> object."""
    meta = {"node_fields": ["type", "name", "id", "self_size", "edge_count", "trace_node_id",
                            "detachedness"],
            "node_types": [["hidden", "array", "string", "object", "code", "closure", "regexp",
                            "number", "native", "synthetic"], "string", "number", "number",
                           "number", "number", "number"],
            "edge_fields": ["type", "name_or_index", "to_node"],
            "edge_types": [["context", "element", "property", "internal", "hidden", "shortcut",
                            "weak"], "string_or_number", "node"]}
    nodes = [9, 0, 1, 0, 1, 0, 0,
             3, 1, 3, 72, 1, 0, 0,
             3, 2, 5, 100, 1, 0, 0,
             3, 3, 7, 64, 2, 0, 0,
             3, 4, 9, 48, 0, 0, 0]
    edges = [2, 5, 7, 3, 6, 14, 2, 7, 21, 1, 0, 28, 6, 8, 0]
    strings = ["", "module", "dict", "list", "app.Session", "app", "__dict__", "CACHE", "w"]
    return json.dumps({"snapshot": {"meta": meta, "node_count": 5, "edge_count": 5},
                       "nodes": nodes, "edges": edges, "strings": strings}).encode()


def _exercise(path):
    try:
        snap = load_snapshot(path)
    except SnapshotError as e:
        assert "\n" not in str(e)
        return
    snap.type_counts()
    snap.census().format()
    for hops in snap.retainer_paths("app.Session", limit=2) + snap.retainer_paths("list", limit=2):
        snap.format_path(hops)


def test_tiny_snapshot_is_read(tmp_path):
    path = tmp_path / "tiny.heapsnapshot"
    path.write_bytes(_tiny_snapshot())
    snap = load_snapshot(path)
    (hops,) = snap.retainer_paths("app.Session")
    assert snap.format_path(hops) == "app -> dict 'CACHE' -> list[0] -> app.Session"


def test_fuzz_the_reader_with_mutations(tmp_path):
    rng = random.Random(1234)
    base = _tiny_snapshot()
    doc = json.loads(base)
    path = tmp_path / "fuzz.heapsnapshot"
    for _ in range(300):
        if rng.random() < 0.5:
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(data))
                op = rng.random()
                if op < 0.4:
                    data[i] = rng.randrange(256)
                elif op < 0.7:
                    del data[i:i + rng.randint(1, 20)]
                else:
                    data[i:i] = rng.choice([b"-1", b"1e309", b"[", b"}", b'"', b"9" * 30, b"null"])
            path.write_bytes(bytes(data))
        else:
            d = json.loads(json.dumps(doc))
            key = rng.choice(["nodes", "edges", "strings"])
            arr = d[key]
            if arr:
                arr[rng.randrange(len(arr))] = rng.choice([-1, 10**9, 3.5, None, "x", [], 7, 0])
            path.write_text(json.dumps(d))
        _exercise(path)


def test_fuzz_the_reader_with_hypothesis(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    path = tmp_path / "h.heapsnapshot"
    base = json.loads(_tiny_snapshot())
    values = st.one_of(st.integers(-5, 40), st.none(), st.text(max_size=3), st.floats(allow_nan=False))

    @hypothesis.settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(key=st.sampled_from(["nodes", "edges", "strings"]),
                      edits=st.lists(st.tuples(st.integers(0, 40), values), max_size=4),
                      cut=st.integers(0, 2000))
    def run(key, edits, cut):
        d = json.loads(json.dumps(base))
        for i, v in edits:
            if d[key]:
                d[key][i % len(d[key])] = v
        raw = json.dumps(d).encode()
        path.write_bytes(raw[:cut] if cut < len(raw) else raw)
        _exercise(path)

    run()


# ---------------------------------------------------------------------------
# The first hour (issue 12): the package's surface

def _fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)


def test_prometheus_is_an_attribute_after_import_memwatch():
    proc = _fresh("import memwatch, sys; m = memwatch.prometheus; "
                  "print(m.__name__, callable(m.register), 'prometheus_client' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    # reachable without importing prometheus_client (that waits for register())
    assert proc.stdout.split() == ["memwatch.prometheus", "True", "False"]


def test_prometheus_without_the_client_names_the_install_command():
    proc = _fresh("import sys; sys.modules['prometheus_client'] = None\n"
                  "import memwatch\n"
                  "try:\n    memwatch.prometheus.register()\n"
                  "except ModuleNotFoundError as e:\n    print('ERR', e.name, '|', e)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERR prometheus_client |")
    assert "pip install 'memwatch[prometheus]'" in proc.stdout


def test_dir_memwatch_lists_only_public_names():
    proc = _fresh("import memwatch, json; print(json.dumps(dir(memwatch)))")
    names = json.loads(proc.stdout)
    assert {"census", "HeapDiff", "serve", "prometheus", "format_heapdiff", "__version__"} <= set(names)
    assert not {"Any", "annotations", "importlib", "_importlib", "_LAZY"} & set(names)
    assert all(not n.startswith("_") or n == "__version__" for n in names)
    # and every listed name resolves
    proc = _fresh("import memwatch\nfor n in dir(memwatch): getattr(memwatch, n)\nprint('ok')")
    assert proc.stdout.strip() == "ok", proc.stderr


SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


@pytest.mark.skipif(not os.path.exists(os.path.join(SCRIPTS, "find-python.sh")),
                    reason="needs the source checkout's scripts/")
def test_find_python_resolves_a_pyenv_shim(tmp_path):
    """PYTHON=python3.X bash scripts/test.sh on a pyenv machine: the shim of a
    version that is not active fails; the real interpreter is found instead."""
    minor = sys.version_info[1]
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in (f"python3.{minor}", "python3.77"):
        shim = shims / name
        shim.write_text("#!/bin/sh\necho \"pyenv: $0: command not found\" >&2\nexit 127\n")
        shim.chmod(0o755)
    home = tmp_path / "home"
    real = home / ".pyenv" / "versions" / f"3.{minor}.99" / "bin"
    real.mkdir(parents=True)
    (real / "python3").symlink_to(sys.executable)
    env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(home)}
    script = os.path.join(SCRIPTS, "find-python.sh")
    ok = subprocess.run(["bash", script, "--resolve", f"python3.{minor}"], capture_output=True,
                        text=True, env=env, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == str(real / "python3"), ok.stderr
    bad = subprocess.run(["bash", script, "--resolve", "python3.77"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "python3.77" in bad.stderr and "find-python.sh 13" in bad.stderr
    # a PYTHON that runs is taken as given
    same = subprocess.run(["bash", script, "--resolve", sys.executable], capture_output=True,
                          text=True, env=env, timeout=60)
    assert same.stdout.strip() == sys.executable


def test_run_dash_m_unknown_module_is_one_clear_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for mod in ("nosuchmod_memwatch_test", "json.nosuchsub"):
        proc = subprocess.run([sys.executable, "-m", "memwatch", "run", "-m", mod],
                              capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"no module named {mod!r}" in proc.stderr and "Traceback" not in proc.stderr
    # a module in the current directory is found, as python -m finds it
    (tmp_path / "localmod_mw.py").write_text("print('ran')\n")
    proc = subprocess.run([sys.executable, "-m", "memwatch", "run", "-q", "-m", "localmod_mw"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "ran" in proc.stdout, proc.stderr


def test_summary_n_0_shows_every_row_and_json_has_real_times(tmp_path, capsys):
    import datetime as dt
    import time as _time
    path = tmp_path / "s.heapsnapshot"
    before = _time.time()
    memwatch.write_snapshot(str(path))
    n_types = len(memwatch.load_snapshot(str(path)).type_counts())
    assert cli.main(["summary", str(path), "-n", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + n_types + 1 and not any(ln.startswith("...") for ln in out)
    assert cli.main(["summary", str(path), "-n", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3 + 1 + 1
    with pytest.raises(SystemExit) as exc:
        cli.main(["summary", str(path), "-n", "-1"])
    assert exc.value.code == 2 and "negative" in capsys.readouterr().err
    assert cli.main(["summary", str(path), "--json", "-n", "0"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert len(body["types"]) == n_types
    ts = dt.datetime.fromisoformat(body["timestamp"]).timestamp()
    assert before - 2 <= ts <= _time.time() + 1 and body["elapsed"] > 0


def test_no_temporary_file_left_when_the_process_exits_during_a_dump(tmp_path):
    # A leak dump runs in a daemon thread; the program ends while it writes.
    # The writer is held inside the write (after the temporary file exists) so
    # the exit comes during it on any machine, however fast; the exit handler's
    # wait for unfinished writes is shortened from 10 s for the test.
    code = f"""
import os, threading, time
import memwatch
from memwatch import _graph, snapshot
in_write = threading.Event()
real_write = _graph.write_heapsnapshot
def held_write(fd, include_strings):
    in_write.set()
    time.sleep(30)
    return real_write(fd, include_strings)
_graph.write_heapsnapshot = held_write
snapshot._finish_writes_at_exit.__defaults__ = (0.2,)
d = {str(tmp_path)!r}
t = threading.Thread(target=snapshot.write_snapshot, args=(os.path.join(d, "x.heapsnapshot"),), daemon=True)
t.start()
assert in_write.wait(60)
print("exiting with", os.listdir(d))
"""
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert ".tmp" in proc.stdout, proc.stdout       # the exit did come during the write
    left = os.listdir(tmp_path)
    assert not [n for n in left if n.endswith(".tmp")], left


class ShortNameSession:
    pass


class ShortNameStore:
    def __init__(self) -> None:
        self.items = [ShortNameSession() for _ in range(4)]


SHORT_STORE = ShortNameStore()


def test_retainers_takes_a_type_name_short_or_full():
    full = f"{__name__}.ShortNameSession"
    for asked in ("ShortNameSession", full):
        paths = memwatch.retainers(asked, limit=10)
        assert len(paths) == 4, asked
        # 3.11+ keeps the attribute inline and the C reader names it on every
        # path ("Store.items"; on 3.14 a Python fallback once named only the
        # first path); 3.10 keeps a dict.
        via = r"\.items" if sys.version_info >= (3, 11) else r" -> dict 'items'"
        assert all(re.search(rf"ShortNameStore{via} -> list\[{i}\] -> {full}$", str(p))
                   for i, p in enumerate(sorted(paths, key=str))), paths
    with pytest.raises(LookupError, match="did you mean .*ShortNameSession"):
        memwatch.retainers("ShortNameSesion")
    with pytest.raises(LookupError, match="no type named 'NoSuchTypeAnywhere'"):
        memwatch.retainers("NoSuchTypeAnywhere")
    # a string can still be the object itself
    assert isinstance(memwatch.retainers("ShortNameSession", instances=False), list)


def test_cli_retainers_resolves_short_names_suggests_and_counts_holders(tmp_path, capsys):
    path = str(tmp_path / "r.heapsnapshot")
    memwatch.write_snapshot(path)
    full = f"{__name__}.ShortNameSession"
    assert cli.main(["retainers", path, "ShortNameSession"]) == 0
    cap = capsys.readouterr()
    assert f"is {full!r}" in cap.err and cap.out.count(full) == 4
    assert cli.main(["retainers", path, "ShortNameSesion"]) == 1
    assert f"did you mean {full!r}" in capsys.readouterr().out
    assert cli.main(["retainers", path, "ShortNameSession", "--holders"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"most common holders of {full} (4 instances")
    assert out[1].split(None, 1) == ["4", "__main__ -> dict 'SHORT_STORE' -> "
                                      f"{__name__}.ShortNameStore.items -> list[*]"] or \
        (out[1].split()[0] == "4" and (out[1].endswith("ShortNameStore.items -> list[*]")
                                       or out[1].endswith("ShortNameStore -> dict 'items' -> list[*]")))
