"""Version-specific paths of the C walk: code objects' contents on every
supported CPython (3.15's layout included), the refusal of free-threaded
builds, inline attribute names (3.11+), and the tracker under both kinds of
collector 3.14 shipped (incremental in 3.14.0-3.14.4, generational since)."""
from __future__ import annotations

import gc
import json
import os
import sys

import pytest

import memwatch
from memwatch import _core, _graph

from test_census import gc_off  # noqa: F401 - the shared fixture




def _unique_function():
    tag = "%x" % id(object())
    src = (
        "def f_%s(x):\n"
        "    y = x.attr_only_here_%s\n"
        "    return ('const-only-in-code %s', b'bytes-const %s', y)\n" % (tag, tag, tag, tag)
    )
    namespace = {}
    exec(compile(src, "<memwatch-code-%s>" % tag, "exec"), namespace)
    return namespace["f_" + tag]


def test_every_direct_field_of_a_code_object_is_counted(gc_off):
    # Code objects are not GC-tracked and gc.get_referents(code) is empty:
    # their constants, names and file name are seen only through
    # _compat.h's mw_visit_code, whose field list is per version.  On 3.15
    # it once fell to "unknown layout, report nothing", which made HeapDiff's
    # node counts drift (issue 14).
    func = _unique_function()
    code = func.__code__
    wanted = [c for c in code.co_consts if isinstance(c, (str, bytes)) and b"const" in
              (c if isinstance(c, bytes) else c.encode())]
    wanted += [n for n in code.co_names if n.startswith("attr_only_here_")]
    wanted += [code.co_filename, code.co_name]
    assert len(wanted) == 5
    raw = _core.walk(keep_objects=True)
    counted = {id(o) for o in raw.objects}
    missing = [w for w in wanted if id(w) not in counted]
    assert missing == []


def test_the_graph_sees_code_object_fields_too(gc_off):
    func = _unique_function()
    name = func.__code__.co_filename
    paths = memwatch.retainers(name, collect=False, instances=False)   # a str, not a type name
    assert paths, "the code's file name is reachable only through the code object"
    assert any("code" in str(p) for p in paths)


@pytest.mark.parametrize("call", ["census", "heapdiff", "snapshot", "retainers"])
def test_free_threaded_builds_are_refused_before_any_walk(call, tmp_path):
    # No free-threaded CPython exists on the CI machines, so the refusal is
    # exercised through the same C check with its test switch on.
    was_enabled = gc.isenabled()
    _core._pretend_free_threaded(True)
    _graph._pretend_free_threaded(True)
    target = tmp_path / "x.heapsnapshot"
    try:
        with pytest.raises(RuntimeError, match="free-threaded.*python3.14 instead of python3.14t"):
            if call == "census":
                memwatch.census()
            elif call == "heapdiff":
                memwatch.HeapDiff()
            elif call == "snapshot":
                memwatch.write_snapshot(target)
            else:
                memwatch.retainers(dict, collect=False)
    finally:
        _core._pretend_free_threaded(False)
        _graph._pretend_free_threaded(False)
    assert gc.isenabled() == was_enabled
    assert os.listdir(tmp_path) == []
    assert memwatch.census().total_count > 0


def test_inline_attributes_are_named_in_c():
    # 3.11+ keeps an instance's attributes in the object itself (no __dict__
    # until one is asked for); _compat.h reads their names from the type's
    # shared keys.  Without it (3.14 and 3.15 were once left out) retainers()
    # named them in Python through vars(), creating the __dict__ midway
    # through a search and leaving the later paths unnamed.
    class Holder:
        def __init__(self):
            self.first = [1]
            self.second = (2, 3)

    if sys.version_info < (3, 11):
        pytest.skip("3.10 keeps attributes in a __dict__: nothing is inline")
    h = Holder()
    assert _graph._INLINE_NAMES
    assert _graph.label_reference(h, h.first) == ("attr", "first")
    assert _graph.label_reference(h, h.second) == ("attr", "second")


# 3.14.0-3.14.4 shipped an incremental collector whose automatic
# collections report generation 0 or 1, never a full one; 3.14.5 went back
# to the generational collector (3.15 too).  memwatch's `stats` events follow
# full collections, so on the incremental collector they come from the
# tracker's timer (a forced full collection when none happened for
# timer_interval) and from memwatch.gc().  The README's version table says so.
INCREMENTAL_314 = (3, 14, 0) <= sys.version_info[:3] < (3, 14, 5)

_REGIME = """
    import gc, json, threading, time
    import memwatch
    from memwatch._gcstate import in_quiet_collection
    # Generations of the automatic collections: the main thread's (the only
    # one allocating), outside memwatch's own; the timer's forced ones run in
    # memwatch's worker thread.
    automatic = []
    def note(phase, info):
        if (phase == "start" and threading.current_thread() is threading.main_thread()
                and not in_quiet_collection()):
            automatic.append(info["generation"])
    gc.callbacks.append(note)
    {setup}
    events = []
    memwatch.configure(gc_callbacks=True, top_types=0, {options})
    memwatch.on("stats", events.append)
    keep, deadline = [], time.monotonic() + 60
    while len(events) < {want} and time.monotonic() < deadline:
        for _ in range(2000):
            junk = []
            junk.append(junk)            # cyclic garbage: young collections run
            {allocate}
        time.sleep(0.002)
    memwatch.stop()
    last = events[-1] if events else {{}}
    print(json.dumps([len(events), sorted(set(automatic)), last.get("num_full_gc"),
                      last.get("num_inc_gc")]))
"""


def _regime(run_script, **fmt):
    return json.loads(run_script(_REGIME.format(**fmt)).stdout)


@pytest.mark.skipif(INCREMENTAL_314, reason="3.14.0-3.14.4's incremental collector never "
                    "reports an automatic full collection (the other test covers it)")
def test_generational_collector_full_collections_give_stats_without_the_timer(run_script):
    # No timer: every `stats` event follows one of the program's own full
    # collections, which a growing heap of survivors brings on its own.
    n, gens, full, young = _regime(run_script, setup="", options="timer_interval=None", want=1,
                                   allocate="keep.append([])")
    assert n >= 1 and 2 in gens and full >= 1 and young >= 1, (n, gens, full, young)


def test_without_automatic_full_collections_stats_come_from_the_timer(run_script):
    # The incremental collector's reporting, on any CPython: automatic
    # collections never reach generation 2 (its threshold is out of reach),
    # so every `stats` event is a timer sample; the young collections are
    # counted in num_inc_gc meanwhile.
    n, gens, full, young = _regime(run_script, setup="gc.set_threshold(700, 10, 1 << 30)",
                                   options="timer_interval=0.2, timer_budget=0.5", want=3,
                                   allocate="pass")
    assert n >= 3 and 2 not in gens and full >= 3 and young >= 1, (n, gens, full, young)
