/*
 * Bookkeeping memory for memwatch's C walks (_core, _graph).
 *
 * PyMem_Raw*: outside the Python heap (a walk never counts its own tables) and
 * traced by tracemalloc (benchmarks can measure it).  The failure injector lets
 * tests make the Nth allocation from now fail, to prove that every failure path
 * raises MemoryError and restores the interpreter's state.  Each extension
 * module that includes this header has its own countdown.
 */
#ifndef MEMWATCH_ALLOC_H
#define MEMWATCH_ALLOC_H

#include <Python.h>

static Py_ssize_t mw_fail_countdown = -1;   /* -1: never fail */

static inline int
mw_inject_failure(void)
{
    if (mw_fail_countdown < 0) {
        return 0;
    }
    if (mw_fail_countdown == 0) {
        mw_fail_countdown = -1;
        return 1;
    }
    mw_fail_countdown--;
    return 0;
}

static inline void *mw_malloc(size_t n) { return mw_inject_failure() ? NULL : PyMem_RawMalloc(n); }
static inline void *mw_calloc(size_t n, size_t size) { return mw_inject_failure() ? NULL : PyMem_RawCalloc(n, size); }
static inline void *mw_realloc(void *p, size_t n) { return mw_inject_failure() ? NULL : PyMem_RawRealloc(p, n); }
static inline void mw_free(void *p) { PyMem_RawFree(p); }

/* Is hook (its malloc and ctx) the allocator installed on domain now, on top
 * of any chain?  (The allocator hooks of _sampler.h and _blocks.h.) */
static inline int
mw_allocator_is(PyMemAllocatorDomain domain, const PyMemAllocatorEx *hook)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(domain, &cur);
    return cur.malloc == hook->malloc && cur.ctx == hook->ctx;
}

/* n items of size bytes: NULL (never a wrapped, too-small block) when the
 * product does not fit, so a caller's size computation cannot overflow. */
static inline void *
mw_malloc_array(size_t n, size_t size)
{
    if (size != 0 && n > (size_t)PY_SSIZE_T_MAX / size) {
        return NULL;
    }
    return mw_malloc(n * size);
}

static inline void *
mw_realloc_array(void *p, size_t n, size_t size)
{
    if (size != 0 && n > (size_t)PY_SSIZE_T_MAX / size) {
        return NULL;
    }
    return mw_realloc(p, n * size);
}
static inline void mw_fail_allocation_after(Py_ssize_t n) { mw_fail_countdown = n; }

/*
 * The GC stays disabled while a walk holds borrowed pointers, and only then:
 * no Python code runs inside a hold, so no other thread can take the GIL, call
 * gc.disable()/gc.enable() or fork() while memwatch has the GC off.  A hold
 * restores exactly the state it found (it never enables a GC it found off).
 * mw_gc_holds_enabled counts the holds that found the GC on: a child forked
 * while one is open (by a C thread, or by code memwatch did not foresee) would
 * otherwise keep the GC off forever, since the holding thread does not exist
 * in the child; the at-fork hook turns it back on there.
 */
static Py_ssize_t mw_gc_holds_enabled = 0;

static inline int
mw_gc_hold(void)
{
    int was = PyGC_Disable();
    if (was) {
        mw_gc_holds_enabled++;
    }
    return was;
}

static inline void
mw_gc_release(int was)
{
    if (was) {
        if (mw_gc_holds_enabled > 0) {
            mw_gc_holds_enabled--;
        }
        PyGC_Enable();
    }
}

static inline int
mw_gc_after_fork_child(void)
{
    if (mw_gc_holds_enabled > 0) {
        mw_gc_holds_enabled = 0;
        PyGC_Enable();
        return 1;
    }
    return 0;
}

#endif /* MEMWATCH_ALLOC_H */
