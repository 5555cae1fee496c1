"""Version-specific paths of the C walk: code objects' contents on every
supported CPython (3.15's layout included) and the refusal of free-threaded
builds."""
from __future__ import annotations

import gc
import os

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
