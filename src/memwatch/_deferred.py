"""Work that memwatch's GC callbacks hand off, done right after the collection.

Why not in the callback itself: ``gc.callbacks`` run inside the collector.
There ``gc.collect()`` silently does nothing, so a listener could not call
``memwatch.gc()`` or take a ``HeapDiff``; and a listener that logs, locks or
blocks would do so with the whole collection half-done.  The callbacks
therefore only *record* (a tuple appended to a deque: atomic under the GIL,
no lock a collecting thread could already hold) and :func:`post` a job.

Who runs the jobs, and why two mechanisms:

* **The main thread, via ``Py_AddPendingCall``** (``memwatch._gchook``) when
  the collection ran in the main thread.  CPython runs a pending call at the
  next eval-breaker check, i.e. microseconds after the collection returns to
  the bytecode loop, in the thread that collected: the same "right after GC,
  on the program's own thread" that node-memwatch gives.  No thread switch.
* **A daemon worker thread** (``memwatch-tracker``) for collections in other
  threads (a pending call would wait for the main thread, which may sit in
  ``join()`` for the whole run), as a safety net when the main thread is
  blocked in C code and has not reached its pending call, when the pending
  queue is full, or when the C module is not built.  The same thread runs the
  tracker's timer (sampling when no full collection happens for a while).

Jobs run in the order they were posted, one drainer at a time (whichever
thread gets there first), and never re-entrantly: a job that triggers a
collection, or a listener that calls ``memwatch.gc()``, just posts more work
that the running drain picks up after the current job returns.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
TYPE_CHECKING = False   # typing is ~700 objects that every full collection traverses
if TYPE_CHECKING:
    from typing import Callable

try:  # the C helper; without it every job goes through the worker thread
    from memwatch import _gchook
except ImportError:  # pragma: no cover - source checkout without a build
    _gchook = None

from memwatch._log import log  # noqa: E402 - logging is imported on first use

_jobs: deque = deque()
_drain_lock = threading.Lock()      # held by the one thread draining
_wake = threading.Lock()            # locked = worker may sleep; release() wakes it
_wake.acquire()
# Held from a wake() until the worker has taken that wake-up: at most one
# release of _wake is ever in flight.  Two releases racing while the worker
# is being handed the lock trip an assertion in 3.14's debug build
# (_PyMutex_LockTimed, CPython gh-143424) although a release build is fine.
_wake_guard = threading.Lock()
_main_ident = threading.main_thread().ident
_worker: threading.Thread | None = None
_worker_stop = False
_tick_hooks: list[Callable[[], None]] = []
_tick_interval = 1.0
_early_tick: float | None = None    # monotonic time of one extra tick (tick_soon)
_state_lock = threading.Lock()      # start/stop of the worker (never taken in a GC callback)


def post(job: Callable[[], None]) -> None:
    """Queue ``job`` to run soon, outside the collector.  Safe in a GC callback."""
    _jobs.append(job)
    if _restart_pending and _gchook is not None:
        _gchook.schedule()      # the main thread restarts the worker, then drains
    if threading.get_ident() == _main_ident and _gchook is not None and _gchook.schedule():
        return
    wake()


def wake() -> None:
    """Wake the worker thread without ever blocking (safe in a GC callback)."""
    if not _wake_guard.acquire(False):
        return            # a wake-up is already on its way
    try:
        _wake.release()
    except RuntimeError:  # already awake
        _wake_guard.release()


def drain() -> None:
    """Run the queued jobs unless another drain is running (in any thread)."""
    while _jobs:
        if not _drain_lock.acquire(False):
            return  # the running drain will get to them
        try:
            while _jobs:
                try:
                    job = _jobs.popleft()
                except IndexError:
                    break
                try:
                    job()
                except Exception:
                    log.exception("memwatch: internal error in deferred work (ignored)")
        finally:
            _drain_lock.release()
        # A job posted between our last check and the release found the lock
        # held and returned: loop to pick it up.


def _drain_handler() -> None:
    global _restart_pending
    if _restart_pending:
        if _inside_fork_hooks():
            # Still inside os.fork() (its hooks run Python code, which runs
            # pending calls): try again once fork() has returned.
            _gchook.schedule()
            return
        _restart_pending = False
        ensure_worker()
    drain()


def _inside_fork_hooks() -> bool:
    frame = sys._getframe(1)
    code = _after_fork_in_parent.__code__
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def set_tick(hooks: list[Callable[[], None]], interval: float) -> None:
    """What the worker runs every ``interval`` seconds (the tracker's timer)."""
    global _tick_hooks, _tick_interval
    _tick_hooks = list(hooks)
    _tick_interval = max(0.005, float(interval))
    wake()


def tick_soon(delay: float) -> None:
    """Run the tick hooks once, ``delay`` seconds from now, besides the regular ticks
    (the tracker's first look at the young-collection rate, sooner than a tick)."""
    global _early_tick
    _early_tick = time.monotonic() + max(0.0, float(delay))
    wake()


def ensure_worker() -> None:
    global _worker, _worker_stop
    with _state_lock:
        if _gchook is not None:
            _gchook.set_handler(_drain_handler)
        if _worker is not None and _worker.is_alive():
            return
        _worker_stop = False
        _worker = threading.Thread(target=_run_worker, name="memwatch-tracker", daemon=True)
        _worker.start()


def stop_worker(timeout: float = 5.0) -> None:
    global _worker, _worker_stop
    with _state_lock:
        worker = _worker
        _worker = None
        _worker_stop = True
        if _gchook is not None:
            _gchook.set_handler(None)
    wake()
    if worker is not None and worker is not threading.current_thread() and worker.is_alive():
        worker.join(timeout)
    drain()  # whatever was recorded before the stop is still delivered


_hook_owners: set = set()


def acquire_hooks(owner: str) -> None:
    """Install the C bracket callbacks (gc_begin first, gc_end last) for ``owner``."""
    with _state_lock:
        _hook_owners.add(owner)
        if _gchook is not None:
            _gchook.install()


def release_hooks(owner: str) -> None:
    """Remove them when no owner is left (gc.callbacks back as it was)."""
    with _state_lock:
        _hook_owners.discard(owner)
        if not _hook_owners and _gchook is not None:
            _gchook.uninstall()


def hooks_in_use() -> bool:
    return bool(_hook_owners)


def worker_thread() -> threading.Thread | None:
    return _worker


def _run_worker() -> None:
    global _early_tick
    me = threading.current_thread()
    next_tick = time.monotonic() + _tick_interval
    while not _worker_stop and _worker is me:
        early = _early_tick
        due = next_tick if early is None else min(next_tick, early)
        timeout = max(0.0, due - time.monotonic())
        if _wake.acquire(timeout=timeout):   # early when post()/wake() released it
            try:
                _wake_guard.release()        # that wake-up is taken: the next may come
            except RuntimeError:
                pass
        if _worker_stop or _worker is not me:
            break
        # Jobs from other threads, and main-thread jobs whose pending call has
        # not run yet (main thread blocked in C): the safety net.  Wait for a
        # collection still running in another thread to end first: its Python
        # callbacks release the GIL, and a listener running meanwhile could not
        # collect (gc.collect() returns 0 while another collection runs).
        _wait_for_collection_end()
        drain()
        now = time.monotonic()
        early = _early_tick
        if early is not None and now >= early:
            _early_tick = None           # one extra tick: the regular ones keep their pace
        elif now >= next_tick:
            next_tick = now + _tick_interval
        else:
            continue
        for hook in _tick_hooks:
            try:
                hook()
            except Exception:
                log.exception("memwatch: internal error in the tracker timer (ignored)")
        drain()


def _wait_for_collection_end(limit: float = 1.0) -> None:
    if _gchook is None:
        return
    deadline = time.monotonic() + limit
    while _gchook.in_collection() and time.monotonic() < deadline:
        time.sleep(0.0005)


_restart_after_fork = False


def _before_fork() -> None:
    """Stop the worker across fork(): no thread of ours is running when the
    process forks (CPython 3.12+ warns that forking a multi-threaded process
    may deadlock, and a pre-fork server should not see memwatch as the cause);
    it is restarted in the parent and, clean, in the child."""
    global _restart_after_fork, _worker, _worker_stop
    worker = _worker
    _restart_after_fork = False
    if worker is None or not worker.is_alive() or worker is threading.current_thread():
        return
    _restart_after_fork = True
    before = _os_thread_count()
    _worker_stop = True
    _worker = None
    wake()
    worker.join(2.0)
    # join() returns when the Python thread state is done; the OS thread may
    # linger a moment, and CPython 3.12+ counts OS threads when it warns.
    if before is not None:
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            now = _os_thread_count()
            if now is None or now < before:
                break
            time.sleep(0.0005)


def _os_thread_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


_restart_pending = False


def _after_fork_in_parent() -> None:
    # Not right here: CPython 3.13 runs these hooks before it counts threads
    # for its warning.  A pending call restarts the worker as soon as the
    # main thread is back in Python code (and post() wakes it if needed).
    global _restart_pending
    if _restart_after_fork:
        if threading.current_thread() is not threading.main_thread():
            # Pending calls run only in the main thread, which may be blocked
            # (join, select, C code) for as long as it likes: restart here.
            ensure_worker()
            return
        _restart_pending = True
        if _gchook is None or not _gchook.schedule():
            ensure_worker()


def _after_fork_in_child() -> None:
    """The child has one thread: the worker and every lock state are stale."""
    global _drain_lock, _wake, _wake_guard, _main_ident, _worker, _state_lock, _restart_pending
    _restart_pending = False
    _jobs.clear()
    _drain_lock = threading.Lock()
    _wake = threading.Lock()
    _wake.acquire()
    _wake_guard = threading.Lock()
    _state_lock = threading.Lock()
    _main_ident = threading.get_ident()
    _worker = None
    if _gchook is not None:
        _gchook.reset(counters=False)
    if _restart_after_fork or _hook_owners:
        ensure_worker()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
