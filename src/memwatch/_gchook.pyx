# cython: language_level=3
"""The tracker's hooks into the collector, in C, and its way out of it.

Two problems this module solves, and why it is C:

1. **Cost.**  ``gc.callbacks`` are called twice for *every* collection, and
   young collections happen thousands of times a second in an allocating
   program.  Here the per-collection work for young generations is one C
   counter increment; Python is called only for full collections (generation
   2), which are rare.

2. **Getting out of the collector.**  Listeners must run right after the
   collection, never inside it (there ``gc.collect()`` silently does nothing).
   ``Py_AddPendingCall`` is CPython's mechanism for "run this in the main
   thread at the next eval-breaker check": the path signal handlers take, no
   thread switch, and the events stay on the program's main thread as in
   node-memwatch.  The catch: *any* Python bytecode that runs inside the
   collection (a Python ``gc.callbacks`` entry: ours, ``gctrace``'s, or the
   program's) reaches eval-breaker checks, and an already queued pending call
   would then run *inside* the collection.  So:

   * ``gc_begin`` is kept first in ``gc.callbacks`` and ``gc_end`` last; they
     bracket every collection with the ``_in_gc`` flag, in C (no bytecode);
   * a pending call is only ever queued outside a collection, or by
     ``gc_end`` as the very last thing of a collection (C, nothing after it);
     inside a collection, ``schedule()`` just notes the request;
   * the pending-call function itself refuses to run inside a collection
     (``_in_gc``, or a foreign Python gc callback on the stack) and asks
     ``gc_end`` to queue it again.

``memwatch._deferred`` pairs this with a worker thread for collections in
other threads and for when the main thread is blocked in C.
"""
import gc as _gc
import sys as _sys

from cpython.exc cimport PyErr_SetObject

cdef extern from "Python.h":
    int Py_AddPendingCall(int (*func)(void *) noexcept, void *arg)
    unsigned long PyThread_get_thread_ident()

cdef object _handler = None          # Python callable: runs the deferred work
cdef object _full_start = None       # Python callable(info): a full collection starts
cdef object _full_stop = None        # Python callable(info): a full collection ended
cdef bint _queued = False            # a pending call is in CPython's queue
cdef bint _wanted = False            # queue one at the end of this collection
cdef int _in_gc = 0                  # between gc_begin('start') and gc_end('stop')
cdef long long _young = 0            # collections of generations 0 and 1
cdef long long _full = 0             # collections of generation 2 (all, quiet or not)
cdef unsigned long _collector = 0    # thread ident of the collecting thread
cdef bint _detach = False            # uninstall() asked during a collection: gc_end does it


cdef inline int _generation(dict info) except? -2:
    gen = info.get("generation")
    if gen is None:
        return -1
    return <int>gen


def gc_begin(str phase, dict info):
    """First entry of gc.callbacks."""
    global _in_gc, _collector
    if phase == "start":
        _in_gc = 1
        _collector = PyThread_get_thread_ident()
        cbs = _gc.callbacks
        if cbs[len(cbs) - 1] is not gc_end and gc_end in cbs:
            # Something was appended after gc_end: move gc_end back to the end
            # (safe while CPython iterates: every entry is still visited once).
            cbs.remove(gc_end)
            cbs.append(gc_end)
        if _generation(info) >= 2 and _full_start is not None:
            _full_start(info)
    # On "stop", gc_end (last) clears the flag.


def gc_end(str phase, dict info):
    """Last entry of gc.callbacks."""
    global _in_gc, _young, _full, _wanted, _queued, _detach
    if phase != "stop":
        return
    try:
        if _generation(info) >= 2:
            _full += 1
            if _full_stop is not None:
                _full_stop(info)
        else:
            _young += 1
    except BaseException:
        _in_gc = 0            # a signal's exception must not leave the flag set
        raise
    cbs = _gc.callbacks
    if cbs[0] is not gc_begin:
        # Something was inserted before gc_begin: put it back in front, so the
        # next collection runs no foreign bytecode before _in_gc is set (safe:
        # gc_end is the last entry; identity only, no __eq__ runs).
        for i in range(len(cbs)):
            if cbs[i] is gc_begin:
                del cbs[i]
                cbs.insert(0, gc_begin)
                break
    _in_gc = 0
    if _detach:
        _remove_hooks()       # gc_end is the entry being visited and the last one
    if _wanted and not _queued:
        _wanted = False
        if Py_AddPendingCall(_run, NULL) == 0:
            _queued = True
    # Nothing after this: no bytecode runs before the collector returns.


cdef bint _foreign_callback_running():
    # A Python gc callback other than ours is executing: we are inside a
    # collection even though _in_gc may already be clear (a callback appended
    # after gc_end).  Only looked at when such callbacks exist.
    cbs = _gc.callbacks
    if len(cbs) <= 2:
        return False
    codes = set()
    for cb in cbs:
        if cb is gc_begin or cb is gc_end:
            continue
        fn = getattr(cb, "__func__", cb)
        code = getattr(fn, "__code__", None)
        if code is None:
            call = getattr(type(cb), "__call__", None)
            code = getattr(call, "__code__", None)
        if code is not None:
            codes.add(code)
    if not codes:
        return False
    frame = _sys._getframe(0)
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


cdef int _run(void *arg) noexcept with gil:
    # CPython calls this in the main thread, holding the GIL.
    global _queued, _wanted
    _queued = False
    handler = _handler
    if handler is None:
        return 0
    try:
        if _in_gc or _foreign_callback_running():
            _wanted = True        # gc_end queues us again when the collection is over
            return 0
        handler()
    except Exception:
        # The handler logs its own errors; nothing may escape into whatever
        # code the main thread happened to be running.
        return 0
    except BaseException as exc:
        # KeyboardInterrupt / SystemExit from a listener: raise it in the main
        # thread, as a signal handler's exception would be.  Leaving the
        # except block clears the caught exception: set it again, or the
        # eval loop gets -1 with no exception (SystemError).
        PyErr_SetObject(type(exc), exc)
        return -1
    return 0


def set_handler(handler):
    """The callable (no arguments) the pending call runs; None disarms it."""
    global _handler
    _handler = handler


def set_full_hooks(start, stop):
    """Python callables(info) for the start and end of each full collection."""
    global _full_start, _full_stop
    _full_start = start
    _full_stop = stop


def schedule():
    """Ask for the handler to run in the main thread, outside any collection.

    Inside a collection the request is noted and ``gc_end`` queues the call.
    Returns False when CPython's pending-call queue is full."""
    global _queued, _wanted
    if _queued:
        return True
    if _in_gc:
        _wanted = True
        return True
    if Py_AddPendingCall(_run, NULL) != 0:
        return False
    _queued = True
    return True


def install():
    """Put gc_begin first and gc_end last in gc.callbacks (idempotent)."""
    global _detach
    _detach = False
    cbs = _gc.callbacks
    if not cbs or cbs[0] is not gc_begin:
        while gc_begin in cbs:
            cbs.remove(gc_begin)
        cbs.insert(0, gc_begin)
    if cbs[len(cbs) - 1] is not gc_end:
        while gc_end in cbs:
            cbs.remove(gc_end)
        cbs.append(gc_end)


def uninstall():
    """Remove both hooks from gc.callbacks, leaving the others in their order."""
    global _detach
    if _in_gc and gc_end in _gc.callbacks:
        # Another thread's collection is iterating gc.callbacks (its Python
        # callbacks released the GIL): removing entries in front of its index
        # would skip callbacks, and without gc_end _in_gc would stay set.
        _detach = True
        return
    _remove_hooks()


def _remove_hooks():
    global _detach
    _detach = False
    cbs = _gc.callbacks
    while gc_begin in cbs:
        cbs.remove(gc_begin)
    while gc_end in cbs:
        cbs.remove(gc_end)


def installed():
    return gc_begin in _gc.callbacks and not _detach


def in_collection():
    """True between the start and the end of a collection (any thread)."""
    return bool(_in_gc)


def collecting_thread():
    """Ident of the thread running the current collection (None outside one)."""
    return _collector if _in_gc else None


def counts():
    """(young collections, full collections) seen since the last reset()."""
    return (_young, _full)


def reset(bint counters=True):
    """Forget a queued call and the counters (after fork(), or on start)."""
    global _queued, _wanted, _young, _full, _in_gc
    _queued = False
    _wanted = False
    _in_gc = 0
    if counters:
        _young = 0
        _full = 0
