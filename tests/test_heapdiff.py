"""HeapDiff: node-memwatch's shape, identity semantics, lifetime, errors."""
from __future__ import annotations

import gc
import json
import threading
import weakref

import pytest

import memwatch
from memwatch import _core, _gcstate


class LeakingClass:
    pass


@pytest.fixture(autouse=True, params=["packed", "wide"])
def record_width(request):
    """Every HeapDiff test runs with 8-byte packed identity records (the
    normal case) and with the 16-byte records used when an address or a type
    index does not pack."""
    _core._force_wide_records(request.param == "wide")
    yield 8 if request.param == "packed" else 16
    _core._force_wide_records(False)


class Freed:
    pass


def test_reproduces_the_seed_example():
    keep = []
    hd = memwatch.HeapDiff()
    keep.extend(LeakingClass() for _ in range(9998))
    diff = hd.end()
    assert set(diff) == {"before", "after", "change"}
    for side in ("before", "after"):
        assert set(diff[side]) == {"nodes", "size_bytes", "size"}
    assert set(diff["change"]) == {"size_bytes", "size", "freed_nodes", "allocated_nodes", "details"}
    top = diff["change"]["details"][0]
    assert set(top) == {"what", "size_bytes", "size", "+", "-"}
    assert top["what"] == memwatch.type_name(LeakingClass)
    assert (top["+"], top["-"]) == (9998, 0)
    assert top["size_bytes"] == 9998 * memwatch.census().size(top["what"]) // len(keep)
    assert diff["after"]["nodes"] - diff["before"]["nodes"] >= 9998
    assert diff["change"]["allocated_nodes"] >= 9998
    assert diff["change"]["size_bytes"] == diff["after"]["size_bytes"] - diff["before"]["size_bytes"]
    assert diff["before"]["size"] == memwatch.format_size(diff["before"]["size_bytes"])
    json.dumps(diff)


def test_frees_are_counted_by_identity():
    doomed = [Freed() for _ in range(5000)]
    survivors = [Freed() for _ in range(100)]
    hd = memwatch.HeapDiff()
    del doomed
    diff = hd.end()
    row = next(d for d in diff["change"]["details"] if d["what"] == memwatch.type_name(Freed))
    assert (row["+"], row["-"]) == (0, 5000)
    assert row["size_bytes"] < 0 and row["size"].startswith("-")
    assert diff["change"]["freed_nodes"] >= 5000
    assert len(survivors) == 100


def test_churn_of_one_type_shows_both_columns():
    pool = [Freed() for _ in range(300)]
    hd = memwatch.HeapDiff()
    pool = pool[150:] + [Freed() for _ in range(150)]
    # Hold the old ones in a way that defeats address reuse: the new ones are
    # allocated while the old ones are still alive.
    diff = hd.end()
    row = next(d for d in diff["change"]["details"] if d["what"] == memwatch.type_name(Freed))
    assert row["+"] == 150 and row["-"] == 150 and row["size_bytes"] == 0
    assert len(pool) == 300


class SameSizeA:
    __slots__ = ("x",)


class SameSizeB:
    __slots__ = ("y",)


def test_reused_address_with_another_type_is_freed_plus_allocated():
    gc.collect()
    for _attempt in range(20):
        a = SameSizeA()
        hd = memwatch.HeapDiff()
        old_id = id(a)
        del a
        b = SameSizeB()          # same size class: pymalloc hands back the block
        if id(b) == old_id:
            break
        hd.end()
    else:
        pytest.skip("the allocator did not reuse the address")
    diff = hd.end()
    rows = {d["what"]: d for d in diff["change"]["details"]}
    assert rows[memwatch.type_name(SameSizeA)]["-"] == 1
    assert rows[memwatch.type_name(SameSizeB)]["+"] == 1


def test_heapdiff_keeps_nothing_alive():
    before_obj = LeakingClass()
    before_ref = weakref.ref(before_obj)
    hd = memwatch.HeapDiff()
    del before_obj
    assert before_ref() is None          # the open diff holds no reference
    during = LeakingClass()
    during_ref = weakref.ref(during)
    hd.end()
    del during
    assert during_ref() is None          # nor does the ended one


def test_open_heapdiff_costs_8_bytes_per_object_or_16_when_wide(record_width):
    hd = memwatch.HeapDiff()
    raw = hd._before
    assert raw.record_bytes == record_width * raw.total_count
    hd.end()
    assert raw.record_bytes == 0         # released when the diff ends


def test_end_twice_is_a_clear_error():
    hd = memwatch.HeapDiff()
    first = hd.end()
    with pytest.raises(memwatch.HeapDiffError, match="already called.*new memwatch.HeapDiff"):
        hd.end()
    assert hd.result is first


def test_result_before_end_is_a_clear_error():
    hd = memwatch.HeapDiff()
    with pytest.raises(memwatch.HeapDiffError, match="not ended yet"):
        hd.result
    hd.end()


def test_context_manager_form():
    keep = []
    with memwatch.HeapDiff() as hd:
        keep.extend(LeakingClass() for _ in range(123))
    assert hd.ended
    row = hd.result["change"]["details"][0]
    assert row["what"] == memwatch.type_name(LeakingClass) and row["+"] == 123
    # Ending inside the block is allowed; leaving the block then does nothing.
    with memwatch.HeapDiff() as hd2:
        hd2.end()
    assert hd2.ended


def test_end_from_another_thread_and_concurrent_end_calls():
    hd = memwatch.HeapDiff()
    results, errors = [], []

    def end():
        try:
            results.append(hd.end())
        except memwatch.HeapDiffError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=end) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 3


def test_details_are_sorted_deterministically():
    keep = [LeakingClass() for _ in range(50)] + ["x" * i for i in range(1000, 1200)]
    hd = memwatch.HeapDiff()
    keep += [LeakingClass() for _ in range(500)]
    details = hd.end()["change"]["details"]
    keys = [(-abs(d["size_bytes"]), -(d["+"] + d["-"]), d["what"]) for d in details]
    assert keys == sorted(keys)
    assert all(d["+"] or d["-"] or d["size_bytes"] for d in details)


def test_collections_run_by_heapdiff_are_marked_quiet():
    seen = []

    def callback(phase, info):
        if phase == "start" and info["generation"] == 2:
            seen.append(_gcstate.in_quiet_collection())

    gc.callbacks.append(callback)
    try:
        memwatch.HeapDiff().end()
    finally:
        gc.callbacks.remove(callback)
    assert seen == [True, True]
    assert not _gcstate.in_quiet_collection()


def test_identity_diff_needs_recorded_censuses():
    with pytest.raises(ValueError, match="record=True"):
        _core.identity_diff(_core.walk(record=True), _core.walk())


def test_start_packed_end_wide_still_matches_objects(record_width):
    # A program may cross 2**19 types during a diff: the two ends then hold
    # records of different widths, and must still be compared object by object.
    _core._force_wide_records(False)
    doomed = [Freed() for _ in range(300)]
    hd = memwatch.HeapDiff()
    _core._force_wide_records(True)
    del doomed[:100]
    keep = [LeakingClass() for _ in range(77)]
    diff = hd.end()
    rows = {d["what"]: d for d in diff["change"]["details"]}
    assert (rows[memwatch.type_name(Freed)]["+"], rows[memwatch.type_name(Freed)]["-"]) == (0, 100)
    assert rows[memwatch.type_name(LeakingClass)]["+"] == 77
    assert len(keep) == 77 and len(doomed) == 200
