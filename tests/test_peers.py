"""Dev-only oracles: the census against objgraph and guppy3.

Skipped unless the peers are installed (`pip install .[peers]`); CI installs
them for the default interpreter."""
from __future__ import annotations

import gc
import sys

import pytest

import memwatch

pytestmark = pytest.mark.peers


class PeerLeak:
    def __init__(self, i: int) -> None:
        self.i = i
        self.label = "peer-leak-%d" % i


class GuppyLeak(PeerLeak):
    pass


@pytest.fixture
def heap(request):
    memwatch.census()                      # import memwatch's modules first
    cls = request.param if hasattr(request, "param") else PeerLeak
    keep = [cls(i) for i in range(1234)]
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    yield keep
    if was:
        gc.enable()


def test_objgraph_typestats_agree_on_tracked_objects(heap):
    objgraph = pytest.importorskip("objgraph")
    stats = objgraph.typestats(shortnames=False)
    census = memwatch.census(tracked_only=True)
    name = memwatch.type_name(PeerLeak)
    assert stats[f"{__name__}.PeerLeak"] == census.count(name) == 1234
    # Function and class objects do not change between the two calls.
    assert stats["builtins.function"] == census.count("function")
    assert stats["builtins.type"] == census.count("type")
    # Totals: both count gc.get_objects(); objgraph's own result dict differs.
    assert abs(sum(stats.values()) - census.total_count) <= 5


@pytest.mark.parametrize("heap", [GuppyLeak], indirect=True)
def test_guppy3_agrees_on_counts_and_bytes_and_sees_less(heap):
    guppy = pytest.importorskip("guppy")
    h = guppy.hpy().heap()
    by_kind = {}
    rows = h.bytype
    for i in range(len(rows)):
        by_kind[str(rows[i].kind)] = (rows[i].count, rows[i].size)
    census = memwatch.census()
    name = memwatch.type_name(GuppyLeak)
    count, size = by_kind[f"{__name__}.GuppyLeak"]
    assert (count, size) == (census.count(name), census.size(name))
    assert size == 1234 * sys.getsizeof(heap[0])
    # memwatch reaches every str and int guppy does, and more (dict keys, code constants).
    for kind in ("str", "int"):
        assert census.count(kind) >= by_kind[kind][0]
