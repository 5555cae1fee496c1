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


def in_quiet_collection() -> bool:
    """True while this thread is inside a collection memwatch runs for itself."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Mark collections in this block (this thread) as memwatch's own."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def quiet_collect(generation: int = 2) -> int:
    """gc.collect() that the tracker ignores; returns what gc.collect returns."""
    with quiet():
        return gc.collect(generation)
