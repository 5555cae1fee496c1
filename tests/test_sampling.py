"""The sampling heap profiler (issue 11): estimates against tracemalloc's
exact numbers, hook chaining, fork, threads, asyncio, caps, pprof and
folded-stack output.  Scenarios that hook the allocator run in a fresh
interpreter (tests/sampling/), so one test's hooks never meet another's."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import tracemalloc

import pytest

import memwatch
from memwatch import heapprofile
from memwatch.heapprofile import Frame, HeapProfile, StackSample

HERE = os.path.dirname(os.path.abspath(__file__))
# The memwatch under test (the installed wheel in CI, ./src in a dev checkout).
SRC = os.path.dirname(os.path.dirname(os.path.abspath(memwatch.__file__)))


def run_script(*args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scenario(name, *args):
    return run_script(os.path.join(HERE, "sampling", "scenarios.py"), name, *args)


@pytest.fixture
def sampling():
    """In-process sampling for the API tests; always stopped afterwards."""
    assert not memwatch.is_sampling()
    yield
    memwatch.stop_sampling()


# ---- accuracy against tracemalloc ----

@pytest.mark.parametrize("order", ["sampling-first", "tracemalloc-first"])
def test_estimates_within_bounds_at_default_interval(order):
    d = run_script(os.path.join(HERE, "sampling", "accuracy.py"), "default", order)
    assert d["interval"] == heapprofile.DEFAULT_INTERVAL
    lines = {k: str(v) for k, v in d["lines"].items()}
    exact, est = d["exact"], d["est"]
    a_exact, a_est = exact[lines["A"]], est[lines["A"]][0]
    b_exact, b_est = exact[lines["B"]], est[lines["B"]][0]
    assert a_exact > 19_000_000 and b_exact > 4_900_000   # the scenario is what it claims
    assert abs(a_est - a_exact) <= 0.15 * a_exact, (a_est, a_exact)
    assert abs(b_est - b_exact) <= 0.30 * b_exact, (b_est, b_exact)
    # line C: 50 MB allocated, all freed: nothing live, the allocation seen
    c_live, c_alloc, _ = est.get(lines["C"], [0, 0, 0])
    assert c_live <= 0.02 * 50_000_000
    assert 0.7 * 50_000_000 <= c_alloc <= 1.3 * 50_000_000
    assert d["info"]["dropped_samples"] == 0


# Margins: a site of S bytes gets about S / interval samples, so its estimate
# has a relative standard error of about sqrt(interval / S); each bound below
# is at least 5 of those (a failure < 1e-6 likely).  20 MB at 16 KiB: 2.9%.

def test_threads():
    d = scenario("threads")
    assert abs(d["est"][0] - d["exact"]) <= 0.25 * d["exact"], d


def test_asyncio():
    d = scenario("asyncio")
    assert abs(d["est"][0] - d["exact"]) <= 0.25 * d["exact"], d
    assert d["names"] == ["coro_alloc"]


LIVE_20000 = 21_300_000    # [bytearray(1000) for _ in range(20000)], as tracemalloc counts it


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_starts_clean():
    d = scenario("fork")
    child = d["child"]
    # Nothing of the parent's survives the fork (its ~320 samples and 21 MB
    # are gone); the child may already have sampled an allocation of its own.
    assert d["parent_samples_at_fork"] >= 20
    assert child["before_samples"] <= 3
    assert child["before_total"] <= 3 * 64 * 1024
    assert child["parent_site_in_child"] is None
    assert child["sampling"] is True
    # 20000 bytearrays of 56 + 1001 bytes and the list: 21.3 MB (64 KiB: 5.5%)
    assert abs(child["child_site"][0] - LIVE_20000) <= 0.3 * LIVE_20000
    assert abs(d["parent_site"][0] - LIVE_20000) <= 0.3 * LIVE_20000


def test_stop_then_start_again_starts_empty():
    d = scenario("restart")
    assert d["first"][0] > 0.5 * LIVE_20000
    assert d["first_after_restart"] is None
    assert abs(d["second"][0] - LIVE_20000) <= 0.3 * LIVE_20000


def test_stays_chained_under_a_later_hook_and_restores_exactly():
    d = scenario("chained")
    assert d["state_after_stop"] == 0          # chained under tracemalloc
    assert d["traced"] >= 1_000_000            # tracemalloc kept working
    assert d["is_on"] is True and d["sampled"][0] > 2_500_000
    assert d["restored_to_hooks"] is True
    assert d["final_is_original"] is True


def test_removed_by_another_tool_is_reported_and_reinstalls():
    d = scenario("removed")
    assert d["is_sampling"] is False and d["warning"] is True and d["state"] == -1
    assert d["final_is_original"] and d["final2_is_original"]
    assert d["after_reinstall"][0] > 2_500_000


def test_start_stop_restores_the_allocators_exactly(sampling):
    from memwatch import _sampler
    before = _sampler.allocators()
    memwatch.start_sampling()
    assert _sampler.allocators() != before
    memwatch.stop_sampling()
    assert _sampler.allocators() == before
    assert not memwatch.is_sampling()


# ---- API, in process ----

def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="interval must be at least 1"):
        memwatch.start_sampling(interval=0)
    with pytest.raises(TypeError, match="interval must be an int"):
        memwatch.start_sampling(interval=1.5)
    with pytest.raises(ValueError, match="nframe must be between 1 and"):
        memwatch.start_sampling(nframe=0)
    with pytest.raises(ValueError, match="nframe must be between 1 and"):
        memwatch.start_sampling(nframe=100000)
    with pytest.raises(heapprofile.SamplingError, match="start_sampling"):
        memwatch.take_heap_profile()
    assert not memwatch.is_sampling()


def test_start_twice_is_an_error(sampling):
    memwatch.start_sampling()
    with pytest.raises(memwatch.SamplingError, match="stop_sampling"):
        memwatch.start_sampling(interval=1000)
    assert memwatch.is_sampling()


def _alloc_here(n, size):
    return [bytearray(size) for _ in range(n)]


def _deep(depth, n, size):
    if depth == 0:
        return _alloc_here(n, size)
    return _deep(depth - 1, n, size)


def test_nframe_limits_the_traceback(sampling):
    memwatch.start_sampling(interval=4096, nframe=3, seed=7)
    keep = _deep(10, 2000, 500)
    prof = memwatch.take_heap_profile()
    tbs = [s.traceback for s in prof.stacks if s.traceback[0].name == "<listcomp>"
           or "_alloc_here" in s.traceback[0].name]
    assert tbs and all(len(tb) <= 3 for tb in tbs)
    del keep


def test_each_stack_is_interned_once(sampling):
    # 5 distinct call paths, ~3000 samples: every sample of a path finds the
    # stack interned by the first one (the frames' padding bytes once made
    # equal stacks differ, one copy per few samples)
    from memwatch import _sampler
    memwatch.start_sampling(interval=4096, seed=3)
    keep = [_deep(i % 5, 2000, 1000) for i in range(5)]
    keys = _sampler.stack_keys()
    assert memwatch.sampling_info()["samples"] > 1000
    assert len(keys) == len(set(keys)), (len(keys), len(set(keys)))
    del keep


def test_realloc_and_free_retire_samples(sampling):
    memwatch.start_sampling(interval=4096, seed=11)
    grown = []
    for i in range(200_000):
        grown.append(i)           # the list's array is realloc'd many times
    keep = _alloc_here(3000, 1000)
    mid = memwatch.take_heap_profile()
    del grown, keep
    end = memwatch.take_heap_profile()
    here = os.path.abspath(__file__)
    mid_live = sum(r.size for r in mid.statistics("filename") if r.key == here)
    end_live = sum(r.size for r in end.statistics("filename") if r.key == here)
    assert mid_live > 3_000_000
    assert end_live < 0.05 * mid_live
    assert end.total_alloc_size >= mid.total_alloc_size
    # compare_to sees the drop at the allocating line
    diffs = end.compare_to(mid, "filename")
    mine = [d for d in diffs if d.key == here]
    assert mine and mine[0].size_diff < -0.9 * mid_live


def test_caps_are_counted(sampling):
    memwatch.start_sampling(interval=1024, max_samples=10, max_stacks=2, seed=3)
    keep = _alloc_here(2000, 1000)
    keep2 = _deep(3, 2000, 1000)
    keep3 = [bytes(1000) for _ in range(2000)]
    info = memwatch.sampling_info()
    assert info["live_samples"] == 10
    assert info["dropped_samples"] > 100
    assert info["stacks"] <= 3           # two stacks and the overflow one
    assert info["dropped_stacks"] > 0
    prof = memwatch.take_heap_profile()
    assert any(s.traceback == (heapprofile.OVERFLOW_FRAME,) for s in prof.stacks)
    assert "caps max_samples/max_stacks reached" in prof.format()
    del keep, keep2, keep3


def test_bookkeeping_allocation_failure_drops_the_sample(sampling):
    from memwatch import _sampler
    memwatch.start_sampling(interval=1024, seed=5)
    _sampler.fail_allocation_after(0)     # the next table allocation fails
    try:
        keep = _alloc_here(500, 1000)
    finally:
        _sampler.fail_allocation_after(-1)
    assert memwatch.sampling_info()["dropped_samples"] >= 1
    keep2 = _alloc_here(500, 1000)
    assert memwatch.take_heap_profile().total_size > 0
    # the copy's first allocation fails (called directly: no Python code
    # in between whose own allocations could be sampled and use the failure)
    with pytest.raises(MemoryError, match="heap profile"):
        try:
            _sampler.fail_allocation_after(0); _sampler.profile()  # noqa: E702
        finally:
            _sampler.fail_allocation_after(-1)
    del keep, keep2


def test_own_objects_are_not_counted(sampling):
    memwatch.start_sampling(interval=256, seed=9)
    kept = [memwatch.take_heap_profile() for _ in range(20)]
    prof = memwatch.take_heap_profile()
    own = {os.path.join(os.path.dirname(heapprofile.__file__), n)
           for n in ("heapprofile.py", "pprof.py")}
    assert not any(s.traceback[0].filename in own for s in prof.stacks)
    assert prof.info["own_samples"] > 0
    del kept


def test_sampled_objects_are_not_kept_alive(sampling):
    import weakref

    class Big:
        def __init__(self):
            self.payload = bytearray(100_000)

    memwatch.start_sampling(interval=1024)
    objs = [Big() for _ in range(50)]
    refs = [weakref.ref(o) for o in objs]
    del objs
    memwatch.take_heap_profile()
    assert all(r() is None for r in refs)


def _profile():
    f_a = Frame("/app/a.py", 10, "leak")
    f_b = Frame("/app/b.py", 20, "cache")
    f_main = Frame("/app/main.py", 1, "<module>")
    stacks = [StackSample((f_a, f_main), 3_000_000.0, 3000.0, 90, 4_000_000.0, 4000.0, 120),
              StackSample((f_b, f_main), 1_000_000.0, 10.0, 30, 1_000_000.0, 10.0, 30),
              StackSample((f_a, f_b, f_main), 500_000.0, 500.0, 15, 9_000_000.0, 9000.0, 270)]
    return HeapProfile(stacks, interval=32768, nframe=32)


def test_statistics_grouping_and_format():
    p = _profile()
    by_line = p.statistics("lineno")
    assert [r.key for r in by_line] == [Frame("/app/a.py", 10, "leak"), Frame("/app/b.py", 20, "cache")]
    assert by_line[0].size == 3_500_000 and by_line[0].samples == 105
    assert p.statistics("filename")[0].key == "/app/a.py"
    assert len(p.statistics("traceback")) == 3
    assert p.statistics("lineno", allocated=True)[0].alloc_size == 13_000_000
    assert p.total_size == 4_500_000
    text = p.format()
    assert "/app/a.py:10 (leak)" in text.splitlines()[2]
    with pytest.raises(ValueError, match="key_type must be one of"):
        p.statistics("line")
    d = p.to_dict(limit=1)
    json.dumps(d)
    assert d["sites"][0]["where"] == {"filename": "/app/a.py", "lineno": 10, "name": "leak"}
    with pytest.raises(TypeError, match="HeapProfile"):
        p.compare_to({})


def test_collapsed_stacks(tmp_path):
    p = _profile()
    path = tmp_path / "heap.folded"
    p.write_collapsed(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "<module> (/app/main.py:1);leak (/app/a.py:10) 3000000"
    assert "<module> (/app/main.py:1);cache (/app/b.py:20);leak (/app/a.py:10) 500000" in lines
    alloc = p.collapsed("alloc_space").splitlines()
    assert alloc[0].endswith(" 9000000")
    with pytest.raises(ValueError, match="value must be one of"):
        p.collapsed("bogus")


# An independent protobuf reader (wire format only) to check the pprof file.
def _read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def _fields(buf):
    i, out = 0, []
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((field, v))
    return out


def _packed(data):
    vals, i = [], 0
    while i < len(data):
        v, i = _read_varint(data, i)
        vals.append(v)
    return vals


def test_pprof_structure(tmp_path):
    p = _profile()
    path = tmp_path / "heap.pb.gz"
    p.write_pprof(path)
    raw = gzip.decompress(path.read_bytes())
    top = _fields(raw)
    strings = [v.decode() for f, v in top if f == 6]
    assert strings[0] == ""
    types = [[strings[x] for _, x in _fields(v)] for f, v in top if f == 1]
    assert types == [["alloc_objects", "count"], ["alloc_space", "bytes"],
                     ["inuse_objects", "count"], ["inuse_space", "bytes"]]
    funcs = {}
    for f, v in top:
        if f == 5:
            d = dict(_fields(v))
            funcs[d[1]] = (strings[d[2]], strings[d[4]])
    locs = {}
    for f, v in top:
        if f == 4:
            d = _fields(v)
            lid = dict(d)[1]
            line = dict(_fields(dict(d)[4]))
            locs[lid] = (funcs[line[1]], line[2])
    samples = []
    for f, v in top:
        if f == 2:
            d = dict(_fields(v))
            samples.append(([locs[x] for x in _packed(d[1])], _packed(d[2])))
    first = samples[0]
    assert first[0][0] == (("leak", "/app/a.py"), 10)
    assert first[0][-1] == (("<module>", "/app/main.py"), 1)
    assert first[1] == [4000, 4_000_000, 3000, 3_000_000]
    period = [v for f, v in top if f == 12]
    assert period == [32768]
    default = [v for f, v in top if f == 14]
    assert strings[default[0]] == "inuse_space"


@pytest.mark.skipif(shutil.which("go") is None, reason="go tool pprof needs the go command")
def test_go_tool_pprof_lists_the_leaking_function_first(tmp_path):
    path = str(tmp_path / "heap.pb.gz")
    scenario("pprof", path)
    env = dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache"),
               GOFLAGS="", PPROF_TMPDIR=str(tmp_path))
    out = subprocess.run(["go", "tool", "pprof", "-top", "-sample_index=inuse_space", path],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    rows = [l for l in out.stdout.splitlines() if "%" in l and "flat%" not in l
            and "Showing" not in l]
    assert rows and rows[0].split()[-1].endswith("leaky_function"), out.stdout


def test_tracemalloc_started_in_process_still_works(sampling):
    memwatch.start_sampling()
    tracemalloc.start()
    try:
        keep = _alloc_here(1000, 1000)
        snap = tracemalloc.take_snapshot()
        assert sum(st.size for st in snap.statistics("filename")
                   if st.traceback[0].filename == os.path.abspath(__file__)) > 900_000
    finally:
        tracemalloc.stop()
    assert memwatch.is_sampling()
    memwatch.stop_sampling()
    from memwatch import _sampler
    assert _sampler.hook_state() == -2
    del keep


# ---- everywhere the user looks ----

def _wsgi_get(app, path, query="", method="GET", body=b""):
    import io
    got = {}

    def start_response(status, headers):
        got["status"], got["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    answer = b"".join(app(environ, start_response))
    return got["status"], got["headers"], answer


def test_http_turns_sampling_on_and_off(sampling):
    import time
    from memwatch.httpapi import MemwatchState, make_wsgi_app
    app = make_wsgi_app(state=MemwatchState())

    def call(method, path, query="", body=b""):
        status, _, answer = _wsgi_get(app, path, query, method, body)
        return int(status.split()[0]), json.loads(answer)

    assert call("GET", "/ah/sampling")[1]["sampling"] is False
    code, d = call("POST", "/ah/profile")
    assert code == 405
    code, d = call("GET", "/ah/profile")
    assert code == 409 and "POST /ah/sampling/start" in d["fix"]
    assert call("POST", "/ah/sampling/stop") == (200, {"stopped": False,
                                                        "message": "allocation sampling was not running"})
    # bad settings are refused before anything starts
    for query, words in [("interval=8", "from 64 to"), ("nframe=0", "nframe"),
                         ("seconds=abc", "not a whole number")]:
        code, d = call("POST", "/ah/sampling/start", query)
        assert code == 400 and words in d["error"] + d["fix"], (query, d)
    code, d = call("POST", "/ah/sampling/start", body=b'{"interval": 4096, "every": 1}')
    assert code == 400 and "every" in d["error"] and not memwatch.is_sampling()
    # on, from the body; the profile route then serves this session
    code, d = call("POST", "/ah/sampling/start", body=b'{"interval": 4096, "nframe": 8}')
    assert code == 201 and d["sampling"] and d["started_by"] == "http" and d["stops_at"] is None
    assert memwatch.is_sampling() and memwatch.sampling_info()["nframe"] == 8
    code, d = call("POST", "/ah/sampling/start")
    assert code == 409 and "over HTTP" in d["error"] and "POST /ah/sampling/stop" in d["fix"]
    keep = _alloc_here(3000, 1000)
    code, d = call("GET", "/ah/profile", "top=3")
    assert code == 200 and d["interval"] == 4096 and d["total_size"] > 1_000_000
    assert call("POST", "/ah/sampling/stop")[1]["stopped"] is True
    assert not memwatch.is_sampling()
    # with a time limit: stopped by itself, and the timer thread is gone
    code, d = call("POST", "/ah/sampling/start", "seconds=1")
    assert code == 201 and d["stops_at"] is not None
    deadline = time.monotonic() + 30
    while memwatch.is_sampling() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not memwatch.is_sampling()
    deadline = time.monotonic() + 30
    while (any(t.name == "memwatch-sampling-timer" for t in threading.enumerate())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert not any(t.name == "memwatch-sampling-timer" for t in threading.enumerate())
    # the program's own session is the program's to stop
    memwatch.start_sampling(interval=8192)
    code, d = call("POST", "/ah/sampling/stop")
    assert code == 409 and "the program" in d["error"] and "memwatch.stop_sampling()" in d["fix"]
    assert memwatch.is_sampling() and call("GET", "/ah/sampling")[1]["started_by"] == "program"
    # a session over HTTP that the program stops cancels its timer
    memwatch.stop_sampling()
    assert call("POST", "/ah/sampling/start", "seconds=600")[0] == 201
    memwatch.stop_sampling()
    deadline = time.monotonic() + 30
    while (any(t.name == "memwatch-sampling-timer" for t in threading.enumerate())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert not any(t.name == "memwatch-sampling-timer" for t in threading.enumerate())
    del keep


def test_http_routes_serve_the_profile(sampling):
    from memwatch.httpapi import MemwatchState, make_wsgi_app
    app = make_wsgi_app(state=MemwatchState())
    status, _, body = _wsgi_get(app, "/ah/profile")
    assert status.startswith("409") and "start_sampling" in json.loads(body)["fix"]
    memwatch.start_sampling(interval=4096, seed=13)
    keep = _alloc_here(3000, 1000)
    status, headers, body = _wsgi_get(app, "/ah/profile", "top=5")
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    d = json.loads(body)
    assert len(d["sites"]) <= 5 and d["interval"] == 4096
    # 3.10 has no co_qualname: the comprehension is '<listcomp>' there
    assert any(s["where"]["filename"] == os.path.abspath(__file__)
               and ("_alloc_here" in s["where"]["name"] or s["where"]["name"] == "<listcomp>")
               for s in d["sites"])
    status, headers, body = _wsgi_get(app, "/ah/profile", "key=bogus")
    assert status.startswith("400") and "lineno, filename or traceback" in json.loads(body)["fix"]
    status, headers, body = _wsgi_get(app, "/ah/profile.pprof")
    assert status.startswith("200") and headers["Content-Type"] == "application/octet-stream"
    assert gzip.decompress(body)[:1] == b"\x0a"     # field 1 (sample_type) first
    del keep


def test_run_sample_puts_the_leaking_line_in_the_leak_event(tmp_path):
    app = os.path.join(HERE, "sampling", "leaky_app.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    jsonl = tmp_path / "ev.jsonl"
    proc = subprocess.run([sys.executable, "-m", "memwatch.runner", "--sample", "--time-scale",
                           "0.05", "-q", "--jsonl", str(jsonl), app],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    leak_line = next(i for i, l in enumerate(open(app).read().splitlines(), 1)
                     if l.endswith("# THE LEAK"))
    leaks = [e for e in map(json.loads, jsonl.read_text().splitlines()) if e["event"] == "leak"]
    assert leaks, proc.stderr
    top = leaks[0]["top_sites"][0]
    assert top["where"] == f"{app}:{leak_line}" and top["function"] == "handle_request"
    assert top["size_change"] > 1_000_000
    assert f"allocated at: {app}:{leak_line} handle_request" in proc.stderr
    # the profile recorded at exit: memwatch report's table and flame graph
    from memwatch.report import load_events, render_html
    with open(jsonl) as fh:
        page = render_html(load_events(fh))
    section = page[page.index("Where the live heap was allocated"):]
    first_row = section[section.index("<tr><td"):]
    assert f"{app}:{leak_line}</code> handle_request" in first_row.split("</tr>")[0]
    assert 'class=flame' in section and "handle_request (" in section


def test_leak_info_has_no_top_sites_without_sampling():
    from memwatch.runner import format_leak
    assert "allocated at" not in format_leak({"reason": "r", "growth": 1, "top_types": []})
    assert memwatch.heapprofile.leak_top_sites(0.0) == []


@pytest.fixture
def tracker_clean():
    """The tracker stopped, with its default options, before and after."""
    from memwatch import tracker
    memwatch.stop()
    memwatch.configure(**tracker.DEFAULTS)
    yield
    memwatch.stop()
    memwatch.configure(**tracker.DEFAULTS)
    memwatch.stop_sampling()


def test_configure_sample_allocations_follows_the_tracker(tracker_clean):
    memwatch.configure(sample_allocations=True)
    assert not memwatch.is_sampling()            # the tracker is not running yet
    memwatch.start()
    assert memwatch.is_sampling()
    assert memwatch.sampling_info()["interval"] == heapprofile.DEFAULT_INTERVAL
    memwatch.configure(sample_allocations=8192)  # a new interval restarts the session
    assert memwatch.sampling_info()["interval"] == 8192
    memwatch.stop()
    assert not memwatch.is_sampling()            # stopped with the tracker
    memwatch.start()
    assert memwatch.is_sampling()
    memwatch.configure(sample_allocations=False)
    assert not memwatch.is_sampling()
    assert memwatch.configure()["sample_allocations"] is False


def test_configure_sample_allocations_leaves_the_programs_own_session(tracker_clean):
    memwatch.start_sampling(interval=4096)
    memwatch.configure(sample_allocations=True)
    memwatch.start()
    memwatch.stop()
    memwatch.configure(sample_allocations=False)
    # started by the program: neither the tracker's stop nor the option touch it
    assert memwatch.is_sampling() and memwatch.sampling_info()["interval"] == 4096


def test_configure_sample_allocations_bad_values(tracker_clean):
    for bad, err, words in [(0, ValueError, "positive interval"),
                            (-5, ValueError, "positive interval"),
                            (1.5, TypeError, r"in bytes \(an int\), not float"),
                            ("yes", TypeError, "not str")]:
        with pytest.raises(err, match=words):
            memwatch.configure(sample_allocations=bad)
    assert memwatch.configure()["sample_allocations"] is False
