"""Collections that memwatch itself runs, told apart from the program's own.

HeapDiff and census(collect=True) run full collections; node-memwatch's
contract is that these never produce `stats` events and are not counted.
gc.callbacks run in the thread that collects, so a thread-local depth counter
tells the tracker's callback whether memwatch asked for this collection.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_local = threading.local()
_quiet_full = 0   # full collections run inside quiet() blocks, all threads
_quiet_open = 0   # quiet() blocks open right now, all threads


def quiet_blocks_open() -> int:
    """Quiet blocks open in any thread: their collections are counted at exit,
    so a tracker noticing collections from gc.get_stats() waits for zero."""
    return _quiet_open


def quiet_full_collections() -> int:
    """How many full collections ran inside :func:`quiet` blocks so far.

    The tracker, when it is not in ``gc.callbacks``, notices full collections
    from ``gc.get_stats()`` and subtracts these (a collection another thread
    runs during a quiet block is subtracted too: rare, and only a missed
    sample)."""
    return _quiet_full


def _full_count() -> int:
    return gc.get_stats()[2]["collections"]


def in_quiet_collection() -> bool:
    """True while this thread is inside a collection memwatch runs for itself."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Mark collections in this block (this thread) as memwatch's own."""
    global _quiet_full, _quiet_open
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    if depth == 0:
        _quiet_open += 1
        before = _full_count()
    try:
        yield
    finally:
        _local.depth -= 1
        if depth == 0:
            _quiet_full += _full_count() - before
            _quiet_open -= 1


def quiet_collect(generation: int = 2) -> int:
    """gc.collect() that the tracker ignores; returns what gc.collect returns."""
    with quiet():
        return gc.collect(generation)
