"""Heap snapshots on demand: on a signal (heapdump's contract) or on a leak.

``memwatch.dump_on_signal(signal.SIGUSR2, directory="/var/tmp")`` makes
``kill -USR2 <pid>`` write ``heapdump-<pid>-<UTC timestamp>.heapsnapshot`` into
the directory and log its path (logger ``memwatch``, level WARNING), as
node-heapdump does.  ``memwatch.dump_on_leak(directory=...)`` writes one when
a ``leak`` event fires, at most ``max_files`` files and ``max_bytes`` bytes in
all (the oldest of its own files are removed first), never more often than
``min_interval`` seconds.

Python runs signal handlers in the main thread, between bytecodes, so the
snapshot is taken at a safe point of the program.
"""
from __future__ import annotations

import logging
import os
import signal as _signal
import threading
import time
from typing import Any, Callable

__all__ = ["dump_on_signal", "dump_on_leak", "snapshot_name", "write_dump"]

log = logging.getLogger("memwatch")

_lock = threading.Lock()
_previous: dict[int, Any] = {}
# Signal handlers run only in the main thread, one frame inside another: a
# plain dict (no lock, which a nested handler would deadlock on) is enough.
_signal_dump = {"busy": False, "pending": False}


def snapshot_name(prefix: str = "heapdump") -> str:
    """``heapdump-<pid>-<YYYYmmddTHHMMSS.ffffff>Z.heapsnapshot`` (UTC)."""
    t = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)
    return f"{prefix}-{os.getpid()}-{stamp}.heapsnapshot"


def write_dump(directory: str | os.PathLike | None = None, *, prefix: str = "heapdump",
               include_strings: bool = False) -> str:
    """Write a snapshot named by :func:`snapshot_name` into ``directory``
    (default: the current directory); log and return its path."""
    from memwatch.snapshot import write_snapshot
    directory = os.fspath(directory) if directory is not None else os.getcwd()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, snapshot_name(prefix))
    info = write_snapshot(path, include_strings=include_strings)
    log.warning("memwatch: wrote heap snapshot %s (%d objects, %d bytes, %.2fs)",
                path, info["nodes"], info["bytes"], info["elapsed"])
    return path


def dump_on_signal(signum: int = getattr(_signal, "SIGUSR2", 0), directory: str | os.PathLike | None = None,
                   *, include_strings: bool = False, prefix: str = "heapdump",
                   callback: Callable[[str], Any] | None = None) -> Callable[[], None]:
    """Write a heap snapshot into ``directory`` each time ``signum`` arrives.

    Must be called from the main thread (Python's rule for signal handlers).
    Errors while writing are logged, never raised into the interrupted code.

    :param callback: called with each written path.
    :returns: a function that restores the previous handler.
    """
    if not signum:
        raise ValueError("dump_on_signal needs a signal number (SIGUSR2 is not available here)")
    directory = os.fspath(directory) if directory is not None else os.getcwd()

    def dump_once(received: int) -> None:
        try:
            path = write_dump(directory, prefix=prefix, include_strings=include_strings)
        except Exception as e:  # never break the program being diagnosed
            log.error("memwatch: could not write a heap snapshot on signal %d: %s", received, e)
            return
        if callback is not None:
            callback(path)

    def handler(received: int, frame: Any) -> None:
        # Python runs a handler between bytecodes, also those of a dump that
        # is being written: a signal then would start a whole dump inside it
        # (nested dumps multiply the peak memory and, in a steady stream,
        # starve the program).  One dump at a time: the signals that arrive
        # during a dump ask for one more, written after it; the signals that
        # arrive during that one are dropped (it already reflects them).
        if _signal_dump["busy"]:
            _signal_dump["pending"] = True
            return
        _signal_dump["busy"] = True
        try:
            _signal_dump["pending"] = False
            dump_once(received)
            if _signal_dump["pending"]:
                _signal_dump["pending"] = False
                dump_once(received)
                if _signal_dump["pending"]:
                    log.warning("memwatch: signal %d during a heap snapshot: coalesced "
                                "(one snapshot at a time)", received)
        finally:
            _signal_dump["busy"] = False
            _signal_dump["pending"] = False

    previous = _signal.signal(signum, handler)
    with _lock:
        _previous.setdefault(signum, previous)

    def restore() -> None:
        with _lock:
            prev = _previous.pop(signum, _signal.SIG_DFL)
        _signal.signal(signum, prev if prev is not None else _signal.SIG_DFL)

    return restore


class _LeakDumper:
    def __init__(self, directory: str, max_files: int, max_bytes: int, min_interval: float,
                 include_strings: bool, prefix: str) -> None:
        self.directory = directory
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.min_interval = min_interval
        self.include_strings = include_strings
        self.prefix = prefix
        self.written: list[str] = []
        self.last = float("-inf")
        self.lock = threading.Lock()

    def _prune(self, room_for: int, adding: int = 1) -> None:
        """Drop our oldest files until ``adding`` more of ``room_for`` bytes fit."""
        def used() -> int:
            total = 0
            for p in self.written:
                try:
                    total += os.path.getsize(p)
                except OSError:
                    pass
            return total
        while self.written and (len(self.written) + adding > self.max_files
                                or used() + room_for > self.max_bytes):
            old = self.written.pop(0)
            try:
                os.unlink(old)
            except OSError:
                pass

    def __call__(self, info: dict) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last < self.min_interval:
                return
            self.last = now
            expected = 0
            for p in self.written[-1:]:
                try:
                    expected = os.path.getsize(p)
                except OSError:
                    pass
            self._prune(expected)
            if expected > self.max_bytes or self.max_files <= 0:
                log.warning("memwatch: leak snapshot skipped (over the disk budget)")
                return
            try:
                path = write_dump(self.directory, prefix=self.prefix,
                                  include_strings=self.include_strings)
            except Exception as e:
                log.error("memwatch: could not write a heap snapshot on leak: %s", e)
                return
            self.written.append(path)
            self._prune(0, adding=0)
            if path not in self.written:
                log.warning("memwatch: leak snapshot %s removed: over the disk budget", path)


def dump_on_leak(directory: str | os.PathLike | None = None, *, max_files: int = 3,
                 max_bytes: int = 1 << 30, min_interval: float = 60.0,
                 include_strings: bool = False, prefix: str = "leak") -> Callable[[], None]:
    """Write a heap snapshot when the tracker emits a ``leak`` event.

    :param max_files: keep at most this many of these snapshots (oldest removed).
    :param max_bytes: keep their total size under this many bytes.
    :param min_interval: seconds between two snapshots at least.
    :returns: a function that stops it (``memwatch.off('leak', ...)``).
    """
    import memwatch
    if max_files < 1 or max_bytes < 1:
        raise ValueError("max_files and max_bytes must be positive")
    directory = os.fspath(directory) if directory is not None else os.getcwd()
    dumper = _LeakDumper(directory, max_files, max_bytes, min_interval, include_strings, prefix)
    memwatch.on("leak", dumper)

    def stop() -> None:
        memwatch.off("leak", dumper)

    stop.dumper = dumper  # type: ignore[attr-defined]
    return stop
