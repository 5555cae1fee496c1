# cython: freethreading_compatible = False
"""The sampling allocator hooks (C, in _sampler.h) and the copy of their
tables into Python objects.  The public API is memwatch.heapprofile."""

from cpython.object cimport PyObject
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "_sampler.h":
    ctypedef struct mw_frame:
        PyObject *code
        int addr
    ctypedef struct mw_stack_row:
        uint32_t nframe
        uint32_t flags
        size_t first
        double live_bytes
        double live_objects
        uint64_t live_samples
        double alloc_bytes
        double alloc_objects
        uint64_t alloc_samples
    ctypedef struct mw_profile_copy:
        uint32_t nrows
        mw_stack_row *rows
        mw_frame *frames
        size_t nframes

    int MW_MAX_NFRAME
    unsigned int MW_STACK_OVERFLOW
    int mw_active
    double mw_mean
    int mw_nframe
    size_t mw_nlive
    size_t mw_max_live
    uint32_t mw_nstacks
    uint32_t mw_max_stacks
    uint64_t mw_samples
    uint64_t mw_dropped_live
    uint64_t mw_dropped_stacks
    uint64_t mw_reentries

    int mw_start(double mean, int nframe, size_t max_live, uint32_t max_stacks, uint64_t seed)
    int mw_stop()
    int mw_hook_state()
    void mw_clear_tables(int decref)
    void mw_after_fork_child()
    int mw_profile_copy_take(mw_profile_copy *c)
    void mw_profile_copy_free(mw_profile_copy *c)
    size_t mw_bookkeeping_bytes()
    int mw_code_line(object code, int addr)

cdef extern from "Python.h":
    ctypedef enum PyMemAllocatorDomain:
        PYMEM_DOMAIN_RAW
        PYMEM_DOMAIN_MEM
        PYMEM_DOMAIN_OBJ
    ctypedef struct PyMemAllocatorEx:
        void *ctx
        void *malloc
        void *free
    void PyMem_GetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator)

cdef extern from "_alloc.h":
    void mw_fail_allocation_after(Py_ssize_t n)

MAX_NFRAME = MW_MAX_NFRAME


def start(double interval, int nframe, size_t max_samples, uint32_t max_stacks, uint64_t seed=0):
    """Install (or re-activate) the hooks.  Returns True if they were
    installed now, False if an earlier session's hooks were still chained
    under another tool's and were re-activated."""
    if mw_active:
        raise RuntimeError("sampling is already running")
    return bool(mw_start(interval, nframe, max_samples, max_stacks, seed))


def stop():
    """Deactivate sampling and drop the profile.  Returns True if the
    allocators in place before start() were restored, False if another
    PEP 445 hook sits on top of ours (ours then stay chained, pass-through)."""
    return bool(mw_stop())


def is_active():
    return bool(mw_active) and mw_hook_state() >= 0


def hook_state():
    """1: our hooks on top; 0: chained under another tool's; -1: removed
    by another tool; -2: not installed."""
    return mw_hook_state()


def allocators():
    """Tests: the (malloc, ctx) pointers installed on the MEM and OBJ domains,
    as integers, to prove that stop() restores them exactly."""
    cdef PyMemAllocatorEx a
    out = []
    for dom in (PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ):
        PyMem_GetAllocator(dom, &a)
        out.append((<size_t>a.malloc, <size_t>a.ctx, <size_t>a.free))
    return tuple(out)


def clear():
    """Forget every sample but keep sampling."""
    mw_clear_tables(1)


def after_fork_child():
    mw_after_fork_child()


def fail_allocation_after(Py_ssize_t n):
    """Tests: make the n-th bookkeeping allocation from now fail (-1: never)."""
    mw_fail_allocation_after(n)


def stats():
    return {
        "active": bool(mw_active),
        "interval": mw_mean,
        "nframe": mw_nframe,
        "samples": mw_samples,
        "live_samples": mw_nlive,
        "max_samples": mw_max_live,
        "stacks": mw_nstacks,
        "max_stacks": mw_max_stacks,
        "dropped_samples": mw_dropped_live,
        "dropped_stacks": mw_dropped_stacks,
        "reentries": mw_reentries,
        "bookkeeping_bytes": mw_bookkeeping_bytes(),
    }


cdef object _frame_info(object code, int addr, dict cache):
    key = (id(code), addr)
    info = cache.get(key)
    if info is None:
        name = getattr(code, "co_qualname", None) or code.co_name
        info = (code.co_filename, mw_code_line(code, addr), name, code.co_firstlineno)
        cache[key] = info
    return info


def profile():
    """The current tables as a list of rows, one per stack:
    (frames, overflow, live_bytes, live_objects, live_samples,
    alloc_bytes, alloc_objects, alloc_samples), frames innermost first as
    (filename, lineno, name, firstlineno) tuples."""
    cdef mw_profile_copy c
    cdef uint32_t i
    cdef size_t k
    cdef mw_stack_row *r
    if mw_profile_copy_take(&c) < 0:
        raise MemoryError("memwatch sampling: no memory to copy the heap profile")
    rows = []
    cache = {}
    try:
        for i in range(c.nrows):
            r = &c.rows[i]
            if r.live_samples == 0 and r.alloc_samples == 0:
                continue
            frames = tuple([
                _frame_info(<object>c.frames[k].code, c.frames[k].addr, cache)
                for k in range(r.first, r.first + r.nframe)])
            rows.append((frames, bool(r.flags & MW_STACK_OVERFLOW),
                         r.live_bytes, r.live_objects, r.live_samples,
                         r.alloc_bytes, r.alloc_objects, r.alloc_samples))
    finally:
        mw_profile_copy_free(&c)
    return rows


def stack_keys():
    """Tests: each interned stack as a tuple of (id(code), bytecode offset),
    read from a private copy (building the tuples may take samples)."""
    cdef mw_profile_copy c
    cdef uint32_t i
    cdef size_t k
    if mw_profile_copy_take(&c) < 0:
        raise MemoryError("memwatch sampling: no memory to copy the stacks")
    try:
        return [tuple([(id(<object>c.frames[k].code), c.frames[k].addr)
                       for k in range(c.rows[i].first, c.rows[i].first + c.rows[i].nframe)])
                for i in range(c.nrows)]
    finally:
        mw_profile_copy_free(&c)
