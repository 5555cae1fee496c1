/*
 * A live-block counter for the pytest plugin's cheap pass: PEP 445 hooks on
 * the MEM and OBJ domains that add one for each block handed out, take one
 * off for each block freed, and do nothing else.
 *
 * Why: sys.getallocatedblocks() counts pymalloc's blocks by walking every
 * pool of every arena.  On packaging's 64k-test session heap that is
 * 0.17 ms a reading, taken 2-3 times a test; this counter is read in
 * nanoseconds (130 ns with its probe).  It counts the same blocks (those
 * over 512 bytes, which pymalloc hands to malloc, too).  Blocks allocated
 * before the hooks went in are taken off when they are freed: only the
 * difference between two readings means anything.
 *
 * The hooks go in for one measured test and come out after it.  Another
 * tool may hook on top meanwhile (tracemalloc while the plugin finds
 * examples): taking ours out then would drop its hooks too, so ours stay
 * chained, still counting, and the next start reuses them.  A tool whose
 * hooks were in before ours may restore its allocator and drop ours (a
 * test calling tracemalloc.stop() under PYTHONTRACEMALLOC): a reading
 * probes for that and reports it (PY_SSIZE_T_MIN), and the caller starts
 * again.  Free-threaded builds are refused by _compat.h: the GIL guards
 * the count.
 */
#ifndef MEMWATCH_BLOCKS_H
#define MEMWATCH_BLOCKS_H

#include <Python.h>

#include "_alloc.h"

typedef struct {
    PyMemAllocatorEx orig;
    PyMemAllocatorDomain domain;
} mw_blocks_hook;

static mw_blocks_hook mw_blocks_hooks[2];
static int mw_blocks_installed = 0;
static Py_ssize_t mw_blocks_live = 0;

#define MW_BLOCKS_HOOKS(NAME, D)                                              \
static void *                                                                 \
mw_blocks_##NAME##_malloc(void *ctx, size_t size)                             \
{                                                                             \
    (void)ctx;                                                                \
    void *p = mw_blocks_hooks[D].orig.malloc(mw_blocks_hooks[D].orig.ctx, size); \
    mw_blocks_live += (p != NULL);                                            \
    return p;                                                                 \
}                                                                             \
static void *                                                                 \
mw_blocks_##NAME##_calloc(void *ctx, size_t nelem, size_t elsize)             \
{                                                                             \
    (void)ctx;                                                                \
    void *p = mw_blocks_hooks[D].orig.calloc(mw_blocks_hooks[D].orig.ctx, nelem, elsize); \
    mw_blocks_live += (p != NULL);                                            \
    return p;                                                                 \
}                                                                             \
static void *                                                                 \
mw_blocks_##NAME##_realloc(void *ctx, void *ptr, size_t size)                 \
{                                                                             \
    (void)ctx;                                                                \
    /* realloc(NULL, n) is a new block; a failed realloc keeps the old one */ \
    void *p = mw_blocks_hooks[D].orig.realloc(mw_blocks_hooks[D].orig.ctx, ptr, size); \
    mw_blocks_live += (p != NULL && ptr == NULL);                             \
    return p;                                                                 \
}                                                                             \
static void                                                                   \
mw_blocks_##NAME##_free(void *ctx, void *ptr)                                 \
{                                                                             \
    (void)ctx;                                                                \
    mw_blocks_live -= (ptr != NULL);                                          \
    mw_blocks_hooks[D].orig.free(mw_blocks_hooks[D].orig.ctx, ptr);           \
}

MW_BLOCKS_HOOKS(mem, 0)
MW_BLOCKS_HOOKS(obj, 1)

static const PyMemAllocatorEx mw_blocks_fns[2] = {
    {&mw_blocks_hooks[0], mw_blocks_mem_malloc, mw_blocks_mem_calloc,
     mw_blocks_mem_realloc, mw_blocks_mem_free},
    {&mw_blocks_hooks[1], mw_blocks_obj_malloc, mw_blocks_obj_calloc,
     mw_blocks_obj_realloc, mw_blocks_obj_free},
};

/* Are our hooks called, in both domains, whoever is on top?  A block
 * allocated through each domain must move the count by one. */
static int
mw_blocks_in_chain(void)
{
    Py_ssize_t before = mw_blocks_live;
    void *a = PyMem_Malloc(1);
    int ok = a != NULL && mw_blocks_live == before + 1;
    before = mw_blocks_live;
    void *b = PyObject_Malloc(1);
    ok = ok && b != NULL && mw_blocks_live == before + 1;
    PyObject_Free(b);
    PyMem_Free(a);
    return ok;
}

/* 1 if the hooks went in now, 0 if they were still chained and counting. */
static int
mw_blocks_start(void)
{
    if (mw_blocks_installed && mw_blocks_in_chain()) {
        return 0;
    }
    mw_blocks_hooks[0].domain = PYMEM_DOMAIN_MEM;
    mw_blocks_hooks[1].domain = PYMEM_DOMAIN_OBJ;
    for (int i = 0; i < 2; i++) {
        PyMem_GetAllocator(mw_blocks_hooks[i].domain, &mw_blocks_hooks[i].orig);
    }
    for (int i = 0; i < 2; i++) {
        PyMemAllocatorEx hook = mw_blocks_fns[i];
        PyMem_SetAllocator(mw_blocks_hooks[i].domain, &hook);
    }
    mw_blocks_installed = 1;
    return 1;
}

/* The count (below zero when blocks older than the hooks are freed), or
 * PY_SSIZE_T_MIN when the hooks are not in or not called any more. */
static Py_ssize_t
mw_blocks_read(void)
{
    if (!mw_blocks_installed || !mw_blocks_in_chain()) {
        return PY_SSIZE_T_MIN;
    }
    return mw_blocks_live;
}

static int
mw_blocks_on_top(void)
{
    for (int i = 0; i < 2; i++) {
        if (!mw_allocator_is(mw_blocks_hooks[i].domain, &mw_blocks_fns[i])) {
            return 0;
        }
    }
    return 1;
}

/* 1 if the allocators are as before the start, 0 if another tool's hooks
 * are on top of ours (ours stay chained and counting). */
static int
mw_blocks_stop(void)
{
    if (!mw_blocks_installed) {
        return 1;
    }
    if (!mw_blocks_on_top()) {
        if (mw_blocks_in_chain()) {
            return 0;
        }
        mw_blocks_installed = 0;     /* dropped by someone else already */
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        PyMem_SetAllocator(mw_blocks_hooks[i].domain, &mw_blocks_hooks[i].orig);
    }
    mw_blocks_installed = 0;
    return 1;
}

#endif /* MEMWATCH_BLOCKS_H */
