"""memwatch does not count itself (issue 12's first hour): a HeapDiff or a
census comparison over a program doing nothing shows none of memwatch's own
bookkeeping."""
from __future__ import annotations

import memwatch


class Grown:
    pass


def test_empty_heapdiff_lists_no_memwatch_objects():
    for _ in range(3):
        with memwatch.HeapDiff() as hd:
            pass
        rows = {d["what"]: d for d in hd.result["change"]["details"]}
        assert "memwatch._core.RawCensus" not in rows, rows
        assert rows.get("builtin_function_or_method", {}).get("+", 0) == 0, rows
        assert not any(name.startswith("memwatch.") and d["+"] for name, d in rows.items()), rows
        del hd


def test_heapdiff_still_sees_what_the_program_keeps():
    hd = memwatch.HeapDiff()
    kept = [Grown() for _ in range(500)]
    rows = {d["what"]: d for d in hd.end()["change"]["details"]}
    assert rows[f"{__name__}.Grown"]["+"] == 500
    del kept


def test_compare_to_does_not_count_the_older_census():
    old = memwatch.census()
    new = memwatch.census()
    rows = {d.name: d for d in new.compare_to(old)}
    assert "memwatch.typestats.TypeStat" not in rows, rows
    assert "memwatch.typestats.Census" not in rows
    # the older census's type names and numbers are not counted either
    n_types = len(old.rows)
    assert rows.get("str") is None or rows["str"].count_diff < n_types // 4, rows.get("str")
    assert sum(abs(d.count_diff) for d in rows.values()) < n_types // 4, list(rows.values())[:8]


def test_compare_to_still_sees_the_program():
    old = memwatch.census()
    kept = [Grown() for _ in range(300)]
    new = memwatch.census()
    rows = {d.name: d for d in new.compare_to(old)}
    assert rows[f"{__name__}.Grown"].count_diff == 300
    # and an older census that is gone is not subtracted from anything
    del old
    third = memwatch.census()
    assert third.count(f"{__name__}.Grown") == 300
    assert third.count("memwatch.typestats.TypeStat") == 0
    del kept
