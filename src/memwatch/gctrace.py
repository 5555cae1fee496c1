"""A GC trace log, like node's ``--trace_gc``: one line per collection.

Switch it on with ``memwatch.trace_gc()`` or the environment variable
``MEMWATCH_TRACE_GC=1`` (read when memwatch is imported).  Each collection of
any generation gives one line through ``logging`` (logger ``memwatch.gc``,
level INFO)::

    [4242]     1834 ms: gen 2, 41.2 mb -> 38.9 mb rss, 120418 -> 98311 blocks, 12.31 ms, collected 2211, uncollectable 0
    [4242]     1902 ms: gen 0, 38.9 mb -> 38.9 mb rss, 98772 -> 98510 blocks, 0.04 ms, collected 262, uncollectable 0 [memwatch]

The time is milliseconds since tracing started, as node prints it; "heap"
is given twice: the process RSS and CPython's allocated block count
(``sys.getallocatedblocks()``), since young collections rarely move RSS but
always move the block count.  ``[memwatch]`` marks memwatch's own quiet
collections (HeapDiff, census).  The lines are formatted and logged right
after the collection, outside it (see ``memwatch._deferred``), so a slow or
odd logging handler never runs inside the collector.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections import deque

from memwatch import _deferred
from memwatch._gcstate import in_quiet_collection
from memwatch._measures import read_rss
from memwatch.formatting import format_size

__all__ = ["trace_gc", "is_tracing"]

logger = logging.getLogger("memwatch.gc")

_records: deque = deque()
_t0 = 0.0
_start: tuple | None = None
_enabled = False
_level = logging.INFO
_logger = logger


def _callback(phase: str, info: dict) -> None:
    global _start
    try:
        if phase == "start":
            _start = (time.perf_counter(), read_rss(), sys.getallocatedblocks())
            return
        end = time.perf_counter()
        rss = read_rss()
        blocks = sys.getallocatedblocks()
        t_start, rss0, blocks0 = _start if _start is not None else (end, rss, blocks)
        _start = None
        _records.append((end, info["generation"], end - t_start, rss0, rss, blocks0, blocks,
                         info.get("collected", 0), info.get("uncollectable", 0),
                         in_quiet_collection()))
        _deferred.post(_flush)
    except Exception:  # pragma: no cover - never raise inside the collector
        pass


def _flush() -> None:
    pid = os.getpid()
    while True:
        try:
            rec = _records.popleft()
        except IndexError:
            return
        (end, gen, pause, rss0, rss, blocks0, blocks, collected, uncollectable, quiet) = rec
        _logger.log(
            _level,
            "[%d] %8d ms: gen %d, %s -> %s rss, %d -> %d blocks, %.2f ms, collected %d, "
            "uncollectable %d%s",
            pid, (end - _t0) * 1000, gen, _size(rss0), _size(rss), blocks0, blocks,
            pause * 1000, collected, uncollectable, " [memwatch]" if quiet else "")


def _size(rss: int | None) -> str:
    # read_rss() is None where RSS cannot be read (no /proc, no psutil): say so.
    return "?" if rss is None else format_size(rss)


def is_tracing() -> bool:
    return _enabled


def trace_gc(enable: bool = True, *, logger: logging.Logger | None = None,
             level: int = logging.INFO) -> None:
    """Log one line per garbage collection (node's ``--trace_gc``); ``False`` stops.

    Lines go to ``logger`` (default ``logging.getLogger('memwatch.gc')``) at
    ``level``.  Configure logging to see them (``logging.basicConfig(level=logging.INFO)``);
    ``MEMWATCH_TRACE_GC=1`` also adds a stderr handler when logging is not configured."""
    global _enabled, _t0, _level, _logger
    if enable:
        _logger = logger if logger is not None else globals()["logger"]
        _level = level
        if not _enabled:
            _t0 = time.perf_counter()
            _enabled = True
            _deferred.ensure_worker()
            if _callback not in gc.callbacks:
                gc.callbacks.append(_callback)
            # memwatch._gchook's brackets (first and last) keep the deferred
            # log lines from running inside the collection.
            _deferred.acquire_hooks("trace")
    else:
        _enabled = False
        while _callback in gc.callbacks:
            gc.callbacks.remove(_callback)
        _deferred.release_hooks("trace")
        _deferred.drain()
        tracker = sys.modules.get("memwatch.tracker")
        if tracker is None or not tracker._tracker.running:
            _deferred.stop_worker()


def _from_environment() -> None:
    """``MEMWATCH_TRACE_GC=1`` (any value but '', '0', 'false', 'no', 'off')."""
    value = os.environ.get("MEMWATCH_TRACE_GC", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return
    root = logging.getLogger()
    if not root.handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    trace_gc(True)
