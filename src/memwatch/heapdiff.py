"""memwatch.HeapDiff: what was allocated and freed between two moments.

Follows node-memwatch: ``hd = HeapDiff()`` takes the first snapshot,
``hd.end()`` the second, and returns the diff in node's JSON shape.

Identity, not counts: the before side is kept as a sorted C array of
(address, type) pairs, packed in 8 bytes an object (16 in the rare case where
an address or a type index does not fit), never as Python references, so an
open HeapDiff keeps nothing alive.  An object is a survivor when the same
address holds an object of the same type at both ends.  Address reuse can hide
churn: an object freed and replaced at the same address by another object of
the same type counts as a survivor; replaced by one of another type, it counts
as one freed and one allocated.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

from memwatch import _core
from memwatch._gcstate import quiet_collect
from memwatch.formatting import format_size

__all__ = ["HeapDiff", "HeapDiffError"]


class HeapDiffError(RuntimeError):
    """A HeapDiff was used in a way that cannot give a diff (e.g. ended twice)."""


def _totals(raw: Any) -> dict[str, Any]:
    return {"nodes": raw.total_count, "size_bytes": raw.total_size,
            "size": format_size(raw.total_size)}


def _sizes_by_name(raw: Any) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, _count, size in raw.rows():
        sizes[name] = sizes.get(name, 0) + size
    return sizes


class HeapDiff:
    """Compare the heap between now and :meth:`end`.

    Both ends run a full collection first (ignored by the ``stats`` tracker),
    so the numbers are a stable baseline.  Also a context manager::

        with memwatch.HeapDiff() as hd:
            work()
        print(hd.result["change"]["details"][:3])
    """

    __slots__ = ("_before", "_lock", "_result", "started_at", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._result: dict[str, Any] | None = None
        self.started_at = time.time()
        quiet_collect()
        self._before = _core.walk(record=True)

    @property
    def ended(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> dict[str, Any]:
        """The diff :meth:`end` returned."""
        if self._result is None:
            raise HeapDiffError("this HeapDiff has not ended yet: call end() (or leave its "
                                "'with' block) to take the second snapshot")
        return self._result

    def end(self) -> dict[str, Any]:
        """Take the second snapshot and return the diff (node-memwatch's shape)."""
        # acquire/release, not `with`: a `with` keeps the lock's bound __exit__
        # alive during the walk, and the diff would list it (+1 builtin method).
        self._lock.acquire()
        try:
            if self._result is not None:
                raise HeapDiffError("HeapDiff.end() was already called on this HeapDiff; "
                                    "its result is in .result. Start a new memwatch.HeapDiff() "
                                    "to diff again")
            before = self._before
            quiet_collect()
            after = _core.walk(record=True)
            freed, allocated = _core.identity_diff(before, after)
            # The first walk's own record object exists only at the second walk:
            # memwatch's bookkeeping, not the program's allocation.
            own = _core.type_name(type(before))
            if allocated.get(own, 0) > 0:
                allocated[own] -= 1
                if not allocated[own]:
                    del allocated[own]
            self._result = _build_diff(before, after, freed, allocated,
                                       {own: sys.getsizeof(before)})
            # Free the two record arrays (8 bytes an object) right away.
            _core.release_records(before)
            _core.release_records(after)
            return self._result
        finally:
            self._lock.release()

    def __enter__(self) -> "HeapDiff":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._result is None:
            self.end()

    def __repr__(self) -> str:
        state = "ended" if self._result is not None else "open"
        return f"<memwatch.HeapDiff {state}, before: {self._before.total_count} objects>"


def _build_diff(before: Any, after: Any, freed: dict[str, int],
                allocated: dict[str, int], own_after: dict[str, int] | None = None) -> dict[str, Any]:
    size_before = _sizes_by_name(before)
    size_after = _sizes_by_name(after)
    own_total = 0
    for name, size in (own_after or {}).items():
        if size_after.get(name, 0) >= size:
            size_after[name] -= size
            own_total += size
    details = []
    for name in size_before.keys() | size_after.keys() | freed.keys() | allocated.keys():
        plus = allocated.get(name, 0)
        minus = freed.get(name, 0)
        delta = size_after.get(name, 0) - size_before.get(name, 0)
        if plus or minus or delta:
            details.append({"what": name, "size_bytes": delta, "size": format_size(delta),
                            "+": plus, "-": minus})
    # Most significant first; the name makes the order deterministic.
    details.sort(key=lambda d: (-abs(d["size_bytes"]), -(d["+"] + d["-"]), d["what"]))
    change = after.total_size - own_total - before.total_size
    after_totals = _totals(after)
    if own_total:
        after_totals = {"nodes": after.total_count - len(own_after or {}),
                        "size_bytes": after.total_size - own_total,
                        "size": format_size(after.total_size - own_total)}
    return {
        "before": _totals(before),
        "after": after_totals,
        "change": {
            "size_bytes": change,
            "size": format_size(change),
            "freed_nodes": sum(freed.values()),
            "allocated_nodes": sum(allocated.values()),
            "details": details,
        },
    }
