"""memwatch.census() (module memwatch.typestats): per-type object counts and sizes for the whole heap.

Shaped after CPython's tracemalloc: small ``__slots__`` value classes over the
raw tuples that the C core returns, and ``Census.compare_to()`` returning
sorted diff rows.
"""
from __future__ import annotations

import gc
import sys
import time
import weakref
from typing import Any, Iterator

from memwatch import _core
from memwatch._gcstate import quiet_collect
from memwatch.formatting import format_size

__all__ = ["census", "Census", "TypeStat", "TypeStatDiff", "type_name"]

type_name = _core.type_name


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming the argument.

    Counts (``limit=``, ``top=``) are validated before any C code sizes a
    buffer from them: a bool, a float, a string or an out-of-range number is
    a mistake in the caller, not a request for "everything"."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ValueError(f"{name} must be an int >= {minimum}, not {value!r} "
                         f"({type(value).__name__}): pass a whole number such as {name}=5")
    n = value.__index__()
    if n < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, not {n}")
    return n


class TypeStat:
    """Objects of one type in a census: how many, and their total bytes."""

    __slots__ = ("name", "count", "size")

    def __init__(self, name: str, count: int, size: int) -> None:
        self.name = name
        self.count = count
        self.size = size

    def __repr__(self) -> str:
        return f"<TypeStat {self.name}: count={self.count} size={self.size}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypeStat):
            return NotImplemented
        return (self.name, self.count, self.size) == (other.name, other.count, other.size)

    def __hash__(self) -> int:
        return hash((self.name, self.count, self.size))

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.name, "count": self.count, "size_bytes": self.size,
                "size": format_size(self.size)}


class TypeStatDiff:
    """One type's change between two censuses (``new.compare_to(old)``)."""

    __slots__ = ("name", "count", "count_diff", "size", "size_diff")

    def __init__(self, name: str, count: int, count_diff: int, size: int, size_diff: int) -> None:
        self.name = name
        self.count = count
        self.count_diff = count_diff
        self.size = size
        self.size_diff = size_diff

    def __repr__(self) -> str:
        return (f"<TypeStatDiff {self.name}: count={self.count} ({self.count_diff:+d}) "
                f"size={self.size} ({self.size_diff:+d})>")

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.name, "count": self.count, "count_change": self.count_diff,
                "size_bytes": self.size, "size_change": self.size_diff,
                "size": format_size(self.size_diff)}


def _sort_key_stat(stat: TypeStat) -> tuple:
    return (-stat.size, -stat.count, stat.name)


class Census:
    """The heap by type at one moment.

    ``rows`` is sorted by total bytes, largest first (ties: count, then name).
    A census holds only names and numbers, never the objects themselves."""

    __slots__ = ("rows", "total_count", "total_size", "elapsed", "timestamp",
                 "tracked_only", "sizeof_errors", "overhead_bytes", "_by_name", "__weakref__")

    def __init__(self, rows: list[TypeStat], *, timestamp: float, elapsed: float = 0.0,
                 tracked_only: bool = False, sizeof_errors: int = 0,
                 overhead_bytes: int = 0) -> None:
        self.rows = sorted(rows, key=_sort_key_stat)
        self.total_count = sum(r.count for r in self.rows)
        self.total_size = sum(r.size for r in self.rows)
        self.timestamp = timestamp
        self.elapsed = elapsed
        self.tracked_only = tracked_only
        self.sizeof_errors = sizeof_errors
        self.overhead_bytes = overhead_bytes
        self._by_name = {r.name: r for r in self.rows}
        _live.add(self)

    @classmethod
    def _from_raw(cls, raw: Any) -> "Census":
        merged: dict[str, list[int]] = {}
        for name, count, size in raw.rows():
            slot = merged.setdefault(name, [0, 0])
            slot[0] += count
            slot[1] += size
        # memwatch does not count itself: the censuses still alive (kept by
        # the caller, the HTTP API, the tracker) are not part of the program's heap.
        for name, (count, size) in _own_footprint(raw.tracked_only).items():
            slot = merged.get(name)
            if slot is not None:
                slot[0] -= count
                slot[1] -= size
                if slot[0] <= 0:
                    del merged[name]
        rows = [TypeStat(name, c, s) for name, (c, s) in merged.items()]
        return cls(rows, timestamp=time.time(), elapsed=raw.elapsed_ns / 1e9,
                   tracked_only=raw.tracked_only, sizeof_errors=raw.sizeof_errors,
                   overhead_bytes=raw.overhead_bytes)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TypeStat]:
        return iter(self.rows)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> TypeStat:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no objects of type {name!r} in this census") from None

    def get(self, name: str) -> TypeStat | None:
        return self._by_name.get(name)

    def count(self, name: str) -> int:
        stat = self._by_name.get(name)
        return stat.count if stat else 0

    def size(self, name: str) -> int:
        stat = self._by_name.get(name)
        return stat.size if stat else 0

    def top(self, limit: int = 10) -> list[TypeStat]:
        return self.rows[:check_count("limit", limit, minimum=0)]

    def compare_to(self, old: "Census") -> list[TypeStatDiff]:
        """Per-type change from ``old`` to this census, biggest change in bytes
        first (ties: change in count, then name); unchanged types left out."""
        diffs = []
        for name in self._by_name.keys() | old._by_name.keys():
            new = self._by_name.get(name)
            prev = old._by_name.get(name)
            count, size = (new.count, new.size) if new else (0, 0)
            pcount, psize = (prev.count, prev.size) if prev else (0, 0)
            if count != pcount or size != psize:
                diffs.append(TypeStatDiff(name, count, count - pcount, size, size - psize))
        diffs.sort(key=lambda d: (-abs(d.size_diff), -abs(d.count_diff), d.name))
        return diffs

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """JSON-ready, with node-memwatch's key names."""
        rows = self.rows if limit is None else self.rows[:check_count("limit", limit, minimum=0)]
        return {
            "nodes": self.total_count,
            "size_bytes": self.total_size,
            "size": format_size(self.total_size),
            "timestamp": self.timestamp,
            "elapsed": self.elapsed,
            "tracked_only": self.tracked_only,
            "types": [r.to_dict() for r in rows],
        }

    def format(self, limit: int = 20, width: int = 48) -> str:
        """A table a person can read; type names longer than ``width`` keep their
        package and class name (``memwatch.formatting.shorten_name``)."""
        from memwatch.formatting import shorten_name
        limit = check_count("limit", limit, minimum=0)
        width = check_count("width", width, minimum=8)
        lines = [f"{'type':<{width}} {'count':>10} {'size':>12}"]
        for r in self.rows[:limit]:
            lines.append(f"{shorten_name(r.name, width):<{width}} {r.count:>10} {format_size(r.size):>12}")
        if len(self.rows) > limit:
            lines.append(f"... {len(self.rows) - limit} more types")
        lines.append(f"{'total':<{width}} {self.total_count:>10} {format_size(self.total_size):>12}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return (f"<Census {self.total_count} objects, {format_size(self.total_size)}, "
                f"{len(self.rows)} types>")


_live: "weakref.WeakSet[Census]" = weakref.WeakSet()


def _call_refs() -> int:
    """References ``sys.getrefcount(obj.attr)`` adds to an object held once."""
    probe = TypeStat(object(), 0, 0)   # type: ignore[arg-type]
    return sys.getrefcount(probe.name) - 1


_CALL_REFS = _call_refs()


def _own_footprint(tracked_only: bool) -> dict[str, list[int]]:
    """Objects and bytes of the live censuses: each Census, its rows list and
    name dict, its TypeStats, and the name strings only they refer to."""
    out: dict[str, list[int]] = {}

    def add(obj: Any) -> None:
        if tracked_only and not gc.is_tracked(obj):
            return
        slot = out.setdefault(type_name(type(obj)), [0, 0])
        slot[0] += 1
        slot[1] += sys.getsizeof(obj)

    # An attribute value is ours when only censuses refer to it (``holders``
    # references: a TypeStat slot, a name dict key); immortal or shared
    # objects (small ints, interned names) stay counted.  The references the
    # call itself adds are measured once, in the same expression shape.
    extra = _CALL_REFS
    add(_live.data)                    # the WeakSet's table (it grows with it)
    for ref in list(_live.data):       # the WeakSet's own references count too
        c = ref()
        if c is None:
            continue
        add(ref)
        add(c)
        add(c.rows)
        add(c._by_name)
        if isinstance(c.timestamp, float) and sys.getrefcount(c.timestamp) <= 1 + extra:
            add(c.timestamp)
        if isinstance(c.elapsed, float) and sys.getrefcount(c.elapsed) <= 1 + extra:
            add(c.elapsed)
        for r in c.rows:
            add(r)
            if sys.getrefcount(r.name) <= 2 + extra:
                add(r.name)
            if sys.getrefcount(r.count) <= 1 + extra:
                add(r.count)
            if sys.getrefcount(r.size) <= 1 + extra:
                add(r.size)
        del c
    return out


def census(*, tracked_only: bool = False, collect: bool = False) -> Census:
    """Count every object on the heap by type, in one pass in C.

    :param tracked_only: count only what the cyclic GC tracks (faster, but blind
        to str, int, bytes and other untracked objects).
    :param collect: run a full collection first (not seen by the tracker), so
        garbage waiting for the GC is not counted.
    """
    if collect:
        quiet_collect()
    return Census._from_raw(_core.walk(tracked_only=tracked_only))
