"""memwatch.write_snapshot(): the V8 .heapsnapshot writer (memwatch._graph)."""
from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import sys
import types
import uuid

import pytest
from conftest import allocation_failures

import memwatch
from memwatch import _core, _graph
from memwatch.snapshot import Snapshot, load_snapshot


@pytest.fixture
def gc_off():
    was = gc.isenabled()
    gc.disable()
    yield
    if was:
        gc.enable()


class Slotted:
    __slots__ = ("payload", "other")

    def __init__(self):
        self.payload = bytearray(100)
        self.other = None


def _write_raw(path, include_strings=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return _graph.write_heapsnapshot(fd, include_strings)
    finally:
        os.close(fd)


def _by_name(raw):
    out = {}
    for name, count, _size in raw.rows():
        out[name] = out.get(name, 0) + count
    return out


def test_nodes_are_exactly_the_census_objects(tmp_path, gc_off):
    path = str(tmp_path / "a.heapsnapshot")
    raw = _core.walk()
    info = _write_raw(path)
    # Only the RawCensus itself was created between the two walks.
    assert info["nodes"] == raw.total_count + 1
    snap = load_snapshot(path)
    counts = {k: c for k, (c, _s) in snap.type_counts().items()}
    expected = _by_name(raw)
    expected["memwatch._core.RawCensus"] = expected.get("memwatch._core.RawCensus", 0) + 1
    assert counts == expected
    assert sum(counts.values()) == info["nodes"]


def test_file_structure_is_v8(tmp_path):
    path = tmp_path / "b.heapsnapshot"
    info = memwatch.write_snapshot(path)
    assert info.path == str(path)
    assert (os.stat(path).st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["b.heapsnapshot"]  # no temporary left
    data = json.loads(path.read_bytes())
    meta = data["snapshot"]["meta"]
    nfc, efc = len(meta["node_fields"]), len(meta["edge_fields"])
    assert meta["node_fields"][:5] == ["type", "name", "id", "self_size", "edge_count"]
    assert data["snapshot"]["node_count"] * nfc == len(data["nodes"])
    assert data["snapshot"]["edge_count"] * efc == len(data["edges"])
    assert sum(data["nodes"][4::nfc]) * efc == len(data["edges"])
    ids = data["nodes"][2::nfc]
    assert len(set(ids)) == len(ids) and all(i % 2 == 1 for i in ids)
    assert meta["node_types"][0][data["nodes"][0]] == "synthetic" and ids[0] == 1
    assert all(t % nfc == 0 for t in data["edges"][2::efc])
    assert info["nodes"] + 2 == data["snapshot"]["node_count"]
    assert info["bytes"] == path.stat().st_size


HOLD = {}


def test_sizes_and_edge_names(tmp_path):
    marker_type = type("SizeMarker", (), {"__module__": "snapmod"})
    m = marker_type()
    s = Slotted()
    mod = types.ModuleType("snapmod_root")
    mod.BOX = {"first": [None, s], 7: m}
    sys.modules["snapmod_root"] = mod
    try:
        snap = load_snapshot(memwatch.write_snapshot(tmp_path / "c.heapsnapshot"))
    finally:
        del sys.modules["snapmod_root"]
    # The root names the module; the module's dict names BOX; and so on.
    root_edges = {name: v for _t, name, v in snap.edges_of(0)}
    module_node = root_edges["snapmod_root"]
    (dict_node,) = [v for t, name, v in snap.edges_of(module_node) if name == "__dict__"]
    box = {name: (t, v) for t, name, v in snap.edges_of(dict_node)}["BOX"][1]
    box_edges = {(t, name): v for t, name, v in snap.edges_of(box)}
    lst = box_edges[("property", "first")]
    marker = box_edges[("element", 7)]
    assert snap.node_name(marker) == "snapmod.SizeMarker"
    assert snap.node_size(marker) == sys.getsizeof(m)
    slotted = {(t, name): v for t, name, v in snap.edges_of(lst)}[("element", 1)]
    assert snap.node_name(slotted) == memwatch.type_name(Slotted)
    assert snap.node_size(slotted) == sys.getsizeof(s)
    names = {(t, name) for t, name, _v in snap.edges_of(slotted)}
    assert ("property", "payload") in names and ("property", "other") in names
    payload = {name: v for _t, name, v in snap.edges_of(slotted)}["payload"]
    assert snap.node_name(payload) == "bytearray"
    assert snap.node_size(payload) == sys.getsizeof(s.payload)


def test_string_contents_are_left_out_unless_asked(tmp_path):
    secret = "tok-" + uuid.uuid4().hex
    HOLD["secrets"] = {secret + "-key": secret + "-value"}
    try:
        plain = tmp_path / "plain.heapsnapshot"
        memwatch.write_snapshot(plain)
        assert uuid.UUID(secret[4:]).hex.encode() not in plain.read_bytes()
        full = tmp_path / "full.heapsnapshot"
        memwatch.write_snapshot(full, include_strings=True)
        data = full.read_bytes()
        assert (secret + "-value").encode() in data and (secret + "-key").encode() in data
        snap = load_snapshot(full)
        assert snap.type_counts()["str"][0] > 100   # string nodes count as str
    finally:
        HOLD.clear()


def test_non_ascii_strings_are_valid_json(tmp_path):
    HOLD["s"] = ["\u20ac\U0001F600\x00\"\\\n" + uuid.uuid4().hex, "\udc80lone"]
    try:
        path = tmp_path / "u.heapsnapshot"
        memwatch.write_snapshot(path, include_strings=True)
        strings = json.loads(path.read_bytes())["strings"]
        assert HOLD["s"][0] in strings and "\udc80lone" in strings
    finally:
        HOLD.clear()


def test_a_million_long_linked_list(tmp_path):
    head = None
    for _ in range(1_000_000):
        head = [head]
    HOLD["chain"] = head
    del head
    try:
        info = memwatch.write_snapshot(tmp_path / "deep.heapsnapshot")
        assert info["nodes"] > 1_000_000
    finally:
        HOLD.clear()


def _sample_refcounts():
    sample = [Slotted(), "x" * 50, (1, 2, object())]
    HOLD["sample"] = sample
    return sample, [sys.getrefcount(o) for o in sample]


def test_every_allocation_failure_raises_memoryerror_and_restores(tmp_path):
    sample, before = _sample_refcounts()
    path = tmp_path / "oom.heapsnapshot"
    try:
        for n, enabled in allocation_failures(_graph._fail_allocation_after):
            try:
                memwatch.write_snapshot(path, collect=False)
            except MemoryError:
                assert not path.exists()
            else:
                _graph._fail_allocation_after(-1)
                path.unlink()
            assert gc.isenabled() == enabled
            assert [p for p in tmp_path.iterdir()] == []
        assert [sys.getrefcount(o) for o in sample] == before   # every pin released
    finally:
        HOLD.clear()


def test_write_error_raises_oserror_and_restores():
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError):
            _graph.write_heapsnapshot(fd)
    finally:
        os.close(fd)
    assert gc.isenabled()


def test_unwritable_directory_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        memwatch.write_snapshot(tmp_path / "missing" / "x.heapsnapshot")


def test_dump_on_signal_writes_a_named_file_and_logs(tmp_path, caplog):
    before = signal.getsignal(signal.SIGUSR2)
    written = []
    restore = memwatch.dump_on_signal(signal.SIGUSR2, directory=tmp_path, callback=written.append)
    try:
        with caplog.at_level(logging.WARNING, logger="memwatch"):
            os.kill(os.getpid(), signal.SIGUSR2)
            for _ in range(100):   # the handler runs between bytecodes
                if written:
                    break
    finally:
        restore()
    assert signal.getsignal(signal.SIGUSR2) is before
    assert len(written) == 1
    name = os.path.basename(written[0])
    assert re.fullmatch(r"heapdump-%d-\d{8}T\d{6}\.\d{6}Z\.heapsnapshot" % os.getpid(), name)
    assert (os.stat(written[0]).st_mode & 0o777) == 0o600
    assert written[0] in caplog.text


def test_dump_on_leak_is_bounded(tmp_path):
    pytest.importorskip("memwatch.tracker")
    stop = memwatch.dump_on_leak(tmp_path, max_files=2, max_bytes=1 << 40, min_interval=0)
    try:
        dumper = stop.dumper
        for _ in range(4):
            dumper({"growth": 1, "reason": "test"})
        files = sorted(tmp_path.iterdir())
        assert len(files) == 2 and all(f.name.startswith("leak-") for f in files)
        # A byte budget smaller than one snapshot keeps none on disk.
        dumper.max_bytes = 10
        dumper({"growth": 1, "reason": "test"})
        assert len(list(tmp_path.iterdir())) <= 1
    finally:
        stop()


def test_dump_on_leak_fires_on_a_leak_event(tmp_path):
    tracker = pytest.importorskip("memwatch.tracker")
    t = getattr(tracker, "_tracker", None)
    if t is None or not hasattr(t, "_outbox") or not hasattr(t, "_emit"):
        pytest.skip("tracker internals changed")
    stop = memwatch.dump_on_leak(tmp_path, min_interval=0)
    try:
        t._outbox.append(("leak", {"growth": 1, "reason": "test"}))
        t._emit()
    finally:
        stop()
        memwatch.stop()
    assert len(list(tmp_path.glob("leak-%d-*.heapsnapshot" % os.getpid()))) == 1


def test_snapshot_round_trips_through_the_reader(tmp_path):
    path = tmp_path / "r.heapsnapshot"
    info = memwatch.write_snapshot(path)
    snap = load_snapshot(path)
    assert isinstance(snap, Snapshot)
    assert sum(c for c, _s in snap.type_counts().values()) == info["nodes"]
    assert snap.census().total_count == info["nodes"]


ASYNC_SCENARIO = r"""
import asyncio, os, sys, threading, time
from memwatch import _graph
import memwatch

async def worker(state):
    loop = asyncio.get_running_loop()
    while not state["stop"]:
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 1)
        await fut
        await asyncio.sleep(0)

async def many(state):
    await asyncio.gather(*[worker(state) for _ in range(10)])

state = {"stop": False}
t = threading.Thread(target=lambda: asyncio.run(many(state)))
t.start()
time.sleep(0.1)
for i in range(8):
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    _graph.write_heapsnapshot(fd)
    os.close(fd)
    memwatch.retainers(dict, limit=1, collect=False)
state["stop"] = True
t.join()

async def again():
    loop = asyncio.get_running_loop()
    for _ in range(3000):
        f = loop.create_future()
        loop.call_soon(f.set_result, 1)
        await f
asyncio.run(again())
import gc
gc.collect()
print("ok")
"""


def test_free_listed_objects_are_never_pinned(run_script, tmp_path):
    # On 3.12 free-listed _asyncio.FutureIter objects (refcount 0) are still
    # reachable; pinning one would deallocate it twice and loop its free list.
    proc = run_script(ASYNC_SCENARIO, str(tmp_path / "a.heapsnapshot"), timeout=120)
    assert proc.stdout.strip().endswith("ok")
