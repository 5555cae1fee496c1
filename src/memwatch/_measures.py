"""The measures the tracker can use for ``current_base``, and the process RSS.

Each measure is read right after a full collection.  The cheap ones
(``rss``, ``blocks``, ``tracemalloc``) are read inside the GC callback itself,
before the program allocates again, which is node-memwatch's "stable
baseline".  The expensive or user-supplied ones (``uss``, ``python``, a
callable) run right after the collection, outside the collector, with the
listeners (they may allocate, and a callable is user code).

Costs per read, measured by ``benchmarks/bench_tracker.py`` (Linux, 3.11):
``rss`` a few microseconds (one ``pread`` of ``/proc/self/statm`` on a file
descriptor kept open), ``blocks`` one C call, ``tracemalloc`` one C call
(tracing itself roughly doubles allocation cost, hence never the default),
``uss`` a full parse of ``/proc/self/smaps`` (milliseconds, grows with the
number of mappings), ``python`` a walk of the whole heap (like a census).
"""
from __future__ import annotations

import os
import sys
import threading
TYPE_CHECKING = False   # typing is ~700 objects that every full collection traverses
if TYPE_CHECKING:
    from typing import Callable

__all__ = ["Measure", "get_measure", "read_rss", "rss_source", "check_readable",
           "MeasureUnavailable", "MEASURES", "trim_free_memory"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm_fd: int | None = None
_statm_lock = threading.Lock()
_psutil_proc = None


def _open_statm() -> int | None:
    # "/proc/self" is resolved when the file is opened: a descriptor opened in
    # the parent keeps reading the parent after fork(), hence the reopen below.
    try:
        return os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


class MeasureUnavailable(RuntimeError):
    """A measure cannot be read on this system (no /proc, no psutil, ...)."""


def read_rss() -> int | None:
    """Resident set size of this process, in bytes; None if it cannot be read.

    Never 0 for "unknown": a zero RSS in a payload would read as a real value
    (issue 14: without /proc the tracker silently reported ``rss`` 0)."""
    global _statm_fd, _psutil_proc
    fd = _statm_fd
    if fd is None and sys.platform.startswith("linux"):
        with _statm_lock:
            if _statm_fd is None:
                _statm_fd = _open_statm()
            fd = _statm_fd
    if fd is not None:
        try:
            return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            pass
    try:
        if _psutil_proc is None:
            import psutil
            _psutil_proc = psutil.Process()
        return int(_psutil_proc.memory_info().rss)
    except Exception:
        return None




def trim_free_memory() -> None:
    """Give the C allocator's free memory back to the OS (glibc's ``malloc_trim(0)``).

    Why: a heap walk (the census behind ``top_types``) allocates its
    bookkeeping with ``malloc`` (tens of MB on a million-object heap) and frees
    it at once; glibc keeps such memory in the process once its dynamic mmap
    threshold has risen, so RSS stays up by that much and a leak that refills
    it does not show in RSS until it is used up (measured: +23 MB after the
    second census of a 500k-dict heap, 0.7 ms to trim back to the heap's own
    size; leak_bigheap_untracked was reported 67 s after it began, not 60).
    Elsewhere (musl, macOS, Windows) there is nothing to call: a no-op."""
    from memwatch import _core
    _core.trim_free_memory()


def rss_source() -> str | None:
    """Where :func:`read_rss` gets its number: 'statm', 'psutil' or None (unreadable)."""
    if read_rss() is None:
        return None
    return "statm" if _statm_fd is not None else "psutil"


def _read_rss_strict() -> int:
    rss = read_rss()
    if rss is None:
        raise MeasureUnavailable(
            "cannot read the process RSS: /proc/self/statm is not readable (is /proc "
            "mounted?) and psutil is not installed or failed; install psutil, mount /proc, "
            "or use another measure: memwatch.configure(measure='blocks')")
    return rss

def _reset_after_fork() -> None:
    global _statm_fd, _psutil_proc, _statm_lock
    old, _statm_fd, _psutil_proc = _statm_fd, None, None
    _statm_lock = threading.Lock()
    if old is not None:
        try:
            os.close(old)
        except OSError:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class Measure:
    """One way to measure the base: ``read()`` returns an int in ``unit``."""

    __slots__ = ("name", "read", "in_callback", "unit", "default_min_growth", "doc")

    def __init__(self, name: str, read: Callable[[], int], *, in_callback: bool,
                 unit: str = "bytes", default_min_growth: int = 4 * 1024 * 1024,
                 doc: str = "") -> None:
        self.name = name
        self.read = read
        self.in_callback = in_callback
        self.unit = unit
        self.default_min_growth = default_min_growth
        self.doc = doc

    def __repr__(self) -> str:
        return f"<memwatch measure {self.name!r} ({self.unit})>"


def _read_uss() -> int:
    global _psutil_proc
    import psutil
    if _psutil_proc is None:
        _psutil_proc = psutil.Process()
    return int(_psutil_proc.memory_full_info().uss)


def _read_python() -> int:
    from memwatch import _core
    return int(_core.walk().total_size)


def _read_tracemalloc() -> int:
    import tracemalloc
    return tracemalloc.get_traced_memory()[0]


MEASURES: dict[str, Measure] = {
    "rss": Measure(
        "rss", _read_rss_strict, in_callback=True,
        doc="process resident set size (bytes): everything the process holds in RAM, "
            "Python objects and C extensions alike"),
    "uss": Measure(
        "uss", _read_uss, in_callback=False,
        doc="process unique set size via psutil (bytes): RSS minus pages shared with "
            "other processes, e.g. a pre-fork server's workers; slow to read"),
    "python": Measure(
        "python", _read_python, in_callback=False,
        doc="total size of live Python objects (bytes), from a census heap walk; "
            "exact but costs a walk of the heap per sample"),
    "blocks": Measure(
        "blocks", sys.getallocatedblocks, in_callback=True, unit="blocks",
        default_min_growth=50_000,
        doc="memory blocks allocated by CPython's allocator (sys.getallocatedblocks()): "
            "a count of live allocations, not bytes; blind to memory C extensions "
            "take from malloc directly"),
    "tracemalloc": Measure(
        "tracemalloc", _read_tracemalloc, in_callback=True,
        doc="bytes traced by tracemalloc (requires tracemalloc.start(); tracing slows "
            "every allocation)"),
}


def check_readable(measure: Measure) -> None:
    """Read ``measure`` once; raise :class:`MeasureUnavailable` naming it and the fix if
    it cannot be read here (called when the tracker starts or is reconfigured)."""
    try:
        value = measure.read()
    except MeasureUnavailable:
        raise
    except Exception as exc:
        raise MeasureUnavailable(f"measure {measure.name!r} cannot be read: {exc!r}; "
                                 "fix it or choose another measure with "
                                 "memwatch.configure(measure=...)") from exc
    if value is None:
        raise MeasureUnavailable(f"measure {measure.name!r} returned None; it must return "
                                 "a number (bytes)")


def get_measure(spec: "str | Callable[[], int] | Measure") -> Measure:
    """A :class:`Measure` from a name, a callable returning bytes, or a Measure."""
    if isinstance(spec, Measure):
        return spec
    if callable(spec):
        name = getattr(spec, "__name__", None) or type(spec).__name__
        return Measure(name, lambda: int(spec()), in_callback=False,
                       doc="user-supplied callable (bytes)")
    if isinstance(spec, str):
        measure = MEASURES.get(spec)
        if measure is None:
            raise ValueError(f"unknown measure {spec!r}: use one of "
                             f"{', '.join(repr(m) for m in MEASURES)} or a callable returning bytes")
        if spec == "tracemalloc":
            import tracemalloc
            if not tracemalloc.is_tracing():
                raise ValueError("measure='tracemalloc' needs tracemalloc to be tracing: "
                                 "call tracemalloc.start() first (or set PYTHONTRACEMALLOC=1)")
        if spec == "uss":
            import psutil  # noqa: F401  (fail now, not in the first sample)
        return measure
    raise TypeError(f"measure must be a name or a callable, not {type(spec).__name__}")
