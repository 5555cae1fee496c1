/*
 * memwatch's sampling heap profiler: PEP 445 hooks on the MEM and OBJ
 * domains that pick allocations by bytes (a Poisson process over the stream
 * of allocated bytes, mean interval `mw_mean` bytes) and remember, for each
 * picked block, its size and the interned Python stack that allocated it.
 *
 * Why these choices:
 *  - Every hook runs with the GIL held (PEP 445 requires it of the MEM and
 *    OBJ domains; RAW is not hooked), and nothing here releases it, so the
 *    tables need no lock and the re-entry guard can be one global flag.
 *  - Nothing in a hook allocates from a hooked domain or creates a Python
 *    object: tables come from PyMem_Raw* (_alloc.h), frames are read from
 *    the interpreter's own frame structs (3.11+: _PyInterpreterFrame, the
 *    public PyThreadState_GetFrame() would create a frame object, i.e. run
 *    the allocator and maybe the GC inside malloc).  Nothing is DECREF'd in
 *    a hook (a dealloc would re-enter the allocator).
 *  - A block of s bytes contains at least one point of the process with
 *    probability p = 1 - exp(-s/mean), independently of every other block,
 *    so weighting it by s/p bytes and 1/p objects is unbiased.  After a
 *    picked block the distance to the next point, measured from the block's
 *    end, is again exponential (memorylessness), so one draw per sample.
 *  - Stacks are keyed by (code object, bytecode offset): no line-table walk
 *    in the hook; lines are computed when a profile is taken.  The stacks
 *    hold a reference to their code objects until sampling stops or the
 *    profile is cleared (bounded by the stack cap).
 */
#ifndef MEMWATCH_SAMPLER_H
#define MEMWATCH_SAMPLER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if PY_VERSION_HEX >= 0x030B0000
/* _PyInterpreterFrame's layout (as Cython itself does for its profiling
 * support); every field read below is guarded by version. */
#  ifndef Py_BUILD_CORE
#    define Py_BUILD_CORE 1
#    define MW_UNDEF_BUILD_CORE 1
#  endif
#  if PY_VERSION_HEX >= 0x030E0000
/* 3.14 split the frame: the struct and _PyFrame_IsIncomplete moved here. */
#    include "internal/pycore_interpframe.h"
#  else
#    include "internal/pycore_frame.h"
#  endif
#  ifdef MW_UNDEF_BUILD_CORE
#    undef Py_BUILD_CORE
#    undef MW_UNDEF_BUILD_CORE
#  endif
#endif

#include "_alloc.h"

#if defined(__GNUC__)
#  define MW_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define MW_UNLIKELY(x) (x)
#endif

/* The stack buffer lives on the C stack of whatever allocated: keep it small. */
#define MW_MAX_NFRAME 128

typedef struct {
    PyObject *code;      /* strong reference while the stack exists */
    int addr;            /* bytecode offset in bytes (PyCode_Addr2Line's unit) */
} mw_frame;

typedef struct {
    uint64_t hash;
    uint32_t nframe;
    uint32_t flags;          /* MW_STACK_OVERFLOW: stands for stacks over the cap */
    double alloc_bytes;      /* estimated bytes allocated here since start */
    double alloc_objects;
    uint64_t alloc_samples;
    mw_frame frames[1];      /* nframe entries (at least one slot), innermost first */
} mw_stack;

#define MW_STACK_OVERFLOW 1u

typedef struct {
    uintptr_t addr;          /* 0: empty slot */
    size_t size;
    uint32_t stack;
} mw_live;

typedef struct {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx orig;   /* what was installed when sampling started */
    int installed;
} mw_domain_hook;

/* ---- state (all guarded by the GIL) ---- */
static mw_domain_hook mw_hooks[2];
static int mw_active = 0;          /* sampling (hooks may stay chained while inactive) */
static int mw_reentrant = 0;
static Py_ssize_t mw_countdown = PY_SSIZE_T_MAX;
static double mw_mean = 524288.0;
static int mw_nframe = 32;
static uint64_t mw_rng = 0x9E3779B97F4A7C15ull;

static mw_live *mw_live_tab = NULL;
static size_t mw_live_mask = 0;    /* capacity - 1 (capacity a power of two) */
static size_t mw_nlive = 0;
static size_t mw_max_live = 0;

/* A counting filter in front of the live table: frees are by far the most
 * frequent call, and almost none of them is of a sampled block; one byte
 * load answers "certainly not sampled" for nearly all of them, where a hash
 * probe costs a multiply and a dependent load in a bigger table.  Counters
 * saturate at 255 and then stay (a saturated slot only costs a probe). */
#define MW_FILTER_BITS 17
static uint8_t mw_filter[1u << MW_FILTER_BITS];

static inline size_t
mw_filter_slot(uintptr_t a)
{
    /* Blocks are 16-byte aligned: the next 17 bits tell apart every block
     * in a 2 MiB window.  Blocks 2 MiB apart share a slot; that only costs
     * them a hash probe on free (the filter never gives a false negative). */
    return (size_t)(a >> 4) & ((1u << MW_FILTER_BITS) - 1);
}

static mw_stack **mw_stacks = NULL;
static uint32_t mw_nstacks = 0;
static uint32_t mw_stacks_cap = 0;
static uint32_t mw_max_stacks = 0;
static uint32_t *mw_stack_slots = NULL;   /* intern table: index + 1, 0 = empty */
static size_t mw_stack_mask = 0;
static size_t mw_stack_bytes = 0;         /* bookkeeping bytes held by stacks */

static uint64_t mw_samples = 0;
static uint64_t mw_dropped_live = 0;      /* samples not tracked as live (cap or no memory) */
static uint64_t mw_dropped_stacks = 0;    /* samples booked on the overflow stack */
static uint64_t mw_reentries = 0;

static inline PyThreadState *
mw_current_tstate(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* Sub-interpreters with their own GIL (3.12+) would run these hooks
 * concurrently with the main interpreter's threads: only the main
 * interpreter's allocations are sampled (docs/sampling.md). */
static inline int
mw_foreign_interpreter(PyThreadState *tstate)
{
    return tstate != NULL && PyThreadState_GetInterpreter(tstate) != PyInterpreterState_Main();
}

/* ---- random numbers: xorshift64*, seeded per start ---- */
static inline uint64_t
mw_rand64(void)
{
    uint64_t x = mw_rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    mw_rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Exponential with mean mw_mean, at least 1 byte. */
static inline Py_ssize_t
mw_draw_interval(void)
{
    /* u in (0, 1]: 53 random bits, never 0 so log() is finite */
    double u = ((double)(mw_rand64() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double v = -log(u) * mw_mean;
    if (v < 1.0) {
        return 1;
    }
    if (v > (double)(PY_SSIZE_T_MAX / 2)) {
        return PY_SSIZE_T_MAX / 2;
    }
    return (Py_ssize_t)v;
}

/* ---- live table: open addressing, linear probing, backward-shift delete ---- */
static inline size_t
mw_addr_hash(uintptr_t a)
{
    return (size_t)(((uint64_t)a >> 4) * 0x9E3779B97F4A7C15ull >> 17);
}

static int
mw_live_grow(void)
{
    size_t newcap = mw_live_tab ? (mw_live_mask + 1) * 2 : 1024;
    mw_live *nt = (mw_live *)mw_calloc(newcap, sizeof(mw_live));
    if (nt == NULL) {
        return -1;
    }
    size_t newmask = newcap - 1;
    if (mw_live_tab != NULL) {
        for (size_t i = 0; i <= mw_live_mask; i++) {
            if (mw_live_tab[i].addr) {
                size_t j = mw_addr_hash(mw_live_tab[i].addr) & newmask;
                while (nt[j].addr) {
                    j = (j + 1) & newmask;
                }
                nt[j] = mw_live_tab[i];
            }
        }
        mw_free(mw_live_tab);
    }
    mw_live_tab = nt;
    mw_live_mask = newmask;
    return 0;
}

static void
mw_live_insert(uintptr_t addr, size_t size, uint32_t stack)
{
    if (mw_nlive >= mw_max_live) {
        mw_dropped_live++;
        return;
    }
    if (mw_live_tab == NULL || (mw_nlive + 1) * 2 > mw_live_mask + 1) {
        if (mw_live_grow() < 0) {
            mw_dropped_live++;
            return;
        }
    }
    size_t j = mw_addr_hash(addr) & mw_live_mask;
    while (mw_live_tab[j].addr) {
        if (mw_live_tab[j].addr == addr) {
            /* A block we missed the free of cannot happen while hooked, but
             * if another tool unhooked us for a while, an address can come
             * back: the newer block replaces the stale record. */
            mw_live_tab[j].size = size;
            mw_live_tab[j].stack = stack;
            return;
        }
        j = (j + 1) & mw_live_mask;
    }
    mw_live_tab[j].addr = addr;
    mw_live_tab[j].size = size;
    mw_live_tab[j].stack = stack;
    mw_nlive++;
    uint8_t *c = &mw_filter[mw_filter_slot(addr)];
    if (*c != 255) {
        (*c)++;
    }
}

static void
mw_live_remove(uintptr_t addr)
{
    if (addr == 0 || mw_live_tab == NULL || mw_foreign_interpreter(mw_current_tstate())) {
        return;
    }
    size_t mask = mw_live_mask;
    size_t j = mw_addr_hash(addr) & mask;
    for (;;) {
        uintptr_t a = mw_live_tab[j].addr;
        if (a == addr) {
            break;
        }
        if (a == 0) {
            return;           /* the common case: not a sampled block */
        }
        j = (j + 1) & mask;
    }
    /* backward-shift deletion keeps every probe chain unbroken */
    size_t hole = j;
    size_t k = j;
    for (;;) {
        k = (k + 1) & mask;
        uintptr_t a = mw_live_tab[k].addr;
        if (a == 0) {
            break;
        }
        size_t home = mw_addr_hash(a) & mask;
        /* move k into the hole unless its home lies cyclically in (hole, k] */
        if (hole <= k ? (home <= hole || home > k) : (home <= hole && home > k)) {
            mw_live_tab[hole] = mw_live_tab[k];
            hole = k;
        }
    }
    mw_live_tab[hole].addr = 0;
    mw_nlive--;
    uint8_t *c = &mw_filter[mw_filter_slot(addr)];
    if (*c != 255) {
        (*c)--;
    }
}

/* ---- stacks ---- */
static inline uint64_t
mw_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h;
}

static int
mw_stack_slots_grow(void)
{
    size_t newcap = mw_stack_slots ? (mw_stack_mask + 1) * 2 : 1024;
    uint32_t *ns = (uint32_t *)mw_calloc(newcap, sizeof(uint32_t));
    if (ns == NULL) {
        return -1;
    }
    size_t newmask = newcap - 1;
    for (uint32_t i = 0; i < mw_nstacks; i++) {
        if (mw_stacks[i]->flags & MW_STACK_OVERFLOW) {
            continue;             /* found by index, never by key */
        }
        size_t j = (size_t)mw_stacks[i]->hash & newmask;
        while (ns[j]) {
            j = (j + 1) & newmask;
        }
        ns[j] = i + 1;
    }
    mw_free(mw_stack_slots);
    mw_stack_slots = ns;
    mw_stack_mask = newmask;
    return 0;
}

static mw_stack *
mw_stack_new(const mw_frame *frames, uint32_t n, uint64_t hash, uint32_t flags)
{
    size_t bytes = sizeof(mw_stack) + (n ? n - 1 : 0) * sizeof(mw_frame);
    if (mw_nstacks == mw_stacks_cap) {
        uint32_t newcap = mw_stacks_cap ? mw_stacks_cap * 2 : 256;
        mw_stack **na = (mw_stack **)mw_realloc(mw_stacks, (size_t)newcap * sizeof(mw_stack *));
        if (na == NULL) {
            return NULL;
        }
        mw_stacks = na;
        mw_stacks_cap = newcap;
    }
    mw_stack *s = (mw_stack *)mw_malloc(bytes);
    if (s == NULL) {
        return NULL;
    }
    s->hash = hash;
    s->nframe = n;
    s->flags = flags;
    s->alloc_bytes = 0.0;
    s->alloc_objects = 0.0;
    s->alloc_samples = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->frames[i] = frames[i];
        Py_INCREF(frames[i].code);     /* never allocates */
    }
    mw_stacks[mw_nstacks++] = s;
    mw_stack_bytes += bytes + sizeof(mw_stack *);
    return s;
}

/* Index of the overflow stack (created on first need), or UINT32_MAX. */
static uint32_t mw_overflow_index = UINT32_MAX;

static uint32_t
mw_overflow_stack(void)
{
    if (mw_overflow_index == UINT32_MAX) {
        if (mw_stack_new(NULL, 0, 0, MW_STACK_OVERFLOW) != NULL) {
            mw_overflow_index = mw_nstacks - 1;
        }
    }
    return mw_overflow_index;
}

/* Field by field, not memcmp: mw_frame has padding after addr, and the
 * capture buffer's padding is whatever was on the C stack, so memcmp would
 * tell equal stacks apart and intern one copy per sample. */
static inline int
mw_frames_equal(const mw_frame *a, const mw_frame *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (a[i].code != b[i].code || a[i].addr != b[i].addr) {
            return 0;
        }
    }
    return 1;
}

static uint32_t
mw_intern_stack(const mw_frame *frames, uint32_t n, uint64_t hash)
{
    if (mw_stack_slots == NULL && mw_stack_slots_grow() < 0) {
        return UINT32_MAX;
    }
    size_t j = (size_t)hash & mw_stack_mask;
    uint32_t v;
    while ((v = mw_stack_slots[j]) != 0) {
        mw_stack *s = mw_stacks[v - 1];
        if (s->hash == hash && s->nframe == n && mw_frames_equal(s->frames, frames, n)) {
            return v - 1;
        }
        j = (j + 1) & mw_stack_mask;
    }
    if (mw_nstacks >= mw_max_stacks) {
        mw_dropped_stacks++;
        return mw_overflow_stack();
    }
    if ((size_t)(mw_nstacks + 1) * 2 > mw_stack_mask + 1) {
        if (mw_stack_slots_grow() < 0) {
            return UINT32_MAX;
        }
        j = (size_t)hash & mw_stack_mask;
        while (mw_stack_slots[j]) {
            j = (j + 1) & mw_stack_mask;
        }
    }
    if (mw_stack_new(frames, n, hash, 0) == NULL) {
        return UINT32_MAX;
    }
    mw_stack_slots[j] = mw_nstacks;
    return mw_nstacks - 1;
}

/* ---- reading the current Python stack (no allocation, no new reference) ---- */
static uint32_t
mw_capture(PyThreadState *tstate, mw_frame *buf, uint64_t *hash_out)
{
    uint32_t n = 0;
    uint64_t h = 0x84222325CBF29CE4ull;
    uint32_t limit = (uint32_t)mw_nframe;
    if (tstate == NULL) {
        *hash_out = h;
        return 0;
    }
#if PY_VERSION_HEX < 0x030B0000
    /* 3.10: the frame objects themselves (tstate->frame, borrowed). */
    PyFrameObject *f = tstate->frame;
    while (f != NULL && n < limit) {
        buf[n].code = (PyObject *)f->f_code;
        buf[n].addr = f->f_lasti * (int)sizeof(_Py_CODEUNIT);
        h = mw_mix(mw_mix(h, (uint64_t)(uintptr_t)buf[n].code), (uint64_t)buf[n].addr);
        n++;
        f = f->f_back;
    }
#else
#  if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = tstate->current_frame;
#  else
    _PyInterpreterFrame *f = tstate->cframe->current_frame;
#  endif
    while (f != NULL && n < limit) {
#  if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
        /* 3.14+: _PyFrame_IsIncomplete below covers these (owner >=
         * FRAME_OWNED_BY_INTERPRETER; 3.15 has no FRAME_OWNED_BY_CSTACK). */
        if (f->owner == FRAME_OWNED_BY_CSTACK) {   /* entry shims: no Python code */
            f = f->previous;
            continue;
        }
#  endif
#  if PY_VERSION_HEX >= 0x030E0000
        /* 3.14+: f_executable is a tagged stack reference; public accessors.
         * Incomplete and interpreter-owned (entry) frames first: no code there. */
        if (_PyFrame_IsIncomplete(f)) {
            f = f->previous;
            continue;
        }
        PyObject *code = PyUnstable_InterpreterFrame_GetCode(f);
        if (code == NULL) {
            f = f->previous;
            continue;
        }
        Py_DECREF(code);   /* the frame still holds it: never the last reference */
        buf[n].code = code;
        buf[n].addr = PyUnstable_InterpreterFrame_GetLasti(f);
#  elif PY_VERSION_HEX >= 0x030D0000
        if (f->f_executable == NULL || !PyCode_Check(f->f_executable) || _PyFrame_IsIncomplete(f)) {
            f = f->previous;
            continue;
        }
        buf[n].code = f->f_executable;
        buf[n].addr = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
#  else
        if (_PyFrame_IsIncomplete(f)) {
            f = f->previous;
            continue;
        }
        buf[n].code = (PyObject *)f->f_code;
        buf[n].addr = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
#  endif
        h = mw_mix(mw_mix(h, (uint64_t)(uintptr_t)buf[n].code), (uint64_t)buf[n].addr);
        n++;
        f = f->previous;
    }
#endif
    *hash_out = mw_mix(h, n);
    return n;
}

/* ---- the slow path: a point of the process fell in this block ---- */
static void
mw_take_sample(void *ptr, size_t size)
{
    mw_countdown = mw_draw_interval();
    if (mw_reentrant) {
        mw_reentries++;
        return;
    }
    PyThreadState *tstate = mw_current_tstate();
    if (mw_foreign_interpreter(tstate)) {
        return;
    }
    mw_reentrant = 1;
    mw_samples++;
    mw_frame buf[MW_MAX_NFRAME];
    uint64_t hash;
    uint32_t n = mw_capture(tstate, buf, &hash);
    uint32_t si = mw_intern_stack(buf, n, hash);
    if (si == UINT32_MAX) {
        mw_dropped_live++;   /* out of memory for bookkeeping: the sample is lost */
    }
    else {
        double p = -expm1(-(double)size / mw_mean);
        mw_stack *s = mw_stacks[si];
        if (p > 0.0) {
            s->alloc_bytes += (double)size / p;
            s->alloc_objects += 1.0 / p;
        }
        s->alloc_samples++;
        mw_live_insert((uintptr_t)ptr, size, si);
    }
    mw_reentrant = 0;
}

/* ---- the hooks ----
 * The fast path (no sample, no sampled block freed) is what every
 * allocation and free of the process pays, so it is shaped to compile to a
 * handful of instructions with no stack frame, ending in a tail jump to the
 * allocator underneath:
 *  - the countdown is charged before the allocation, so nothing is left to
 *    do after it returns (a failed allocation only moves the next sample
 *    point a little earlier: the stream of bytes is still Poisson-sampled);
 *  - each domain has its own functions that read the saved allocator from a
 *    static slot (one RIP-relative load) instead of through ctx;
 *  - everything else (taking a sample, retiring a sampled block) is in
 *    separate out-of-line functions reached by a tail call.
 * No atomics and no lock: every hooked call holds the GIL (see the top). */
#if defined(__GNUC__)
#  define MW_NOINLINE __attribute__((noinline, cold))
#else
#  define MW_NOINLINE
#endif

/* May the block at ptr be a sampled one?  Never a false negative: every
 * tracked address has its filter counter above zero. */
#define MW_MAYBE_SAMPLED(ptr) MW_UNLIKELY(mw_filter[mw_filter_slot((uintptr_t)(ptr))] != 0)

static inline void
mw_count(void *ptr, size_t size)
{
    mw_countdown -= (Py_ssize_t)size;
    if (MW_UNLIKELY(mw_countdown <= 0)) {
        if (mw_active) {
            mw_take_sample(ptr, size);
        }
        else {
            mw_countdown = PY_SSIZE_T_MAX;   /* chained but inactive: never sample */
        }
    }
}

/* The countdown already reached zero for this allocation of size bytes. */
static MW_NOINLINE void *
mw_malloc_slow(mw_domain_hook *d, size_t size)
{
    void *p = d->orig.malloc(d->orig.ctx, size);
    if (p != NULL && mw_active) {
        mw_take_sample(p, size);
    }
    else if (!mw_active) {
        mw_countdown = PY_SSIZE_T_MAX;
    }
    return p;
}

static MW_NOINLINE void *
mw_calloc_slow(mw_domain_hook *d, size_t nelem, size_t elsize)
{
    void *p = d->orig.calloc(d->orig.ctx, nelem, elsize);
    if (p != NULL) {
        mw_count(p, nelem * elsize);   /* the allocator checked the overflow */
    }
    return p;
}

/* The old block may be sampled, or the countdown runs out: the general case. */
static MW_NOINLINE void *
mw_realloc_slow(mw_domain_hook *d, void *ptr, size_t size)
{
    void *p = d->orig.realloc(d->orig.ctx, ptr, size);
    if (p != NULL) {
        /* the old block is gone (or resized): retire it, then draw for the
         * new one like any allocation, so live estimates stay unbiased */
        if (MW_MAYBE_SAMPLED(ptr)) {
            mw_live_remove((uintptr_t)ptr);
        }
        mw_count(p, size);
    }
    return p;
}

static MW_NOINLINE void
mw_free_slow(mw_domain_hook *d, void *ptr)
{
    mw_live_remove((uintptr_t)ptr);
    d->orig.free(d->orig.ctx, ptr);
}

/* nelem * elsize overflows (or, without the builtin, might: the slow path,
 * which lets the allocator check, costs a call more and nothing else). */
#if defined(__GNUC__) && !defined(__INTEL_COMPILER)
#  define MW_MUL_OVERFLOWS(a, b, out) __builtin_mul_overflow((a), (b), (out))
#else
#  define MW_MUL_OVERFLOWS(a, b, out) (*(out) = 0, 1)
#endif

/* One set of hooks per domain, D the index in mw_hooks. */
#define MW_DEFINE_HOOKS(NAME, D)                                              \
static void *                                                                 \
mw_##NAME##_malloc(void *ctx, size_t size)                                    \
{                                                                             \
    (void)ctx;                                                                \
    mw_countdown -= (Py_ssize_t)size;                                         \
    if (MW_UNLIKELY(mw_countdown <= 0)) {                                     \
        return mw_malloc_slow(&mw_hooks[D], size);                            \
    }                                                                         \
    return mw_hooks[D].orig.malloc(mw_hooks[D].orig.ctx, size);               \
}                                                                             \
static void *                                                                 \
mw_##NAME##_calloc(void *ctx, size_t nelem, size_t elsize)                    \
{                                                                             \
    (void)ctx;                                                                \
    size_t size;                                                              \
    if (MW_UNLIKELY(MW_MUL_OVERFLOWS(nelem, elsize, &size))) {                \
        return mw_calloc_slow(&mw_hooks[D], nelem, elsize);  /* it fails */   \
    }                                                                         \
    Py_ssize_t left = mw_countdown - (Py_ssize_t)size;                        \
    if (MW_UNLIKELY(left <= 0)) {                                             \
        return mw_calloc_slow(&mw_hooks[D], nelem, elsize);                   \
    }                                                                         \
    mw_countdown = left;                                                      \
    return mw_hooks[D].orig.calloc(mw_hooks[D].orig.ctx, nelem, elsize);      \
}                                                                             \
static void *                                                                 \
mw_##NAME##_realloc(void *ctx, void *ptr, size_t size)                        \
{                                                                             \
    (void)ctx;                                                                \
    Py_ssize_t left = mw_countdown - (Py_ssize_t)size;                        \
    if (MW_UNLIKELY(left <= 0) || MW_MAYBE_SAMPLED(ptr)) {                    \
        return mw_realloc_slow(&mw_hooks[D], ptr, size);                      \
    }                                                                         \
    mw_countdown = left;                                                      \
    return mw_hooks[D].orig.realloc(mw_hooks[D].orig.ctx, ptr, size);         \
}                                                                             \
static void                                                                   \
mw_##NAME##_free(void *ctx, void *ptr)                                        \
{                                                                             \
    (void)ctx;                                                                \
    if (MW_MAYBE_SAMPLED(ptr)) {                                              \
        mw_free_slow(&mw_hooks[D], ptr);                                      \
        return;                                                               \
    }                                                                         \
    mw_hooks[D].orig.free(mw_hooks[D].orig.ctx, ptr);                         \
}

MW_DEFINE_HOOKS(mem, 0)
MW_DEFINE_HOOKS(obj, 1)

static const PyMemAllocatorEx mw_hook_fns[2] = {
    {&mw_hooks[0], mw_mem_malloc, mw_mem_calloc, mw_mem_realloc, mw_mem_free},
    {&mw_hooks[1], mw_obj_malloc, mw_obj_calloc, mw_obj_realloc, mw_obj_free},
};

/* ---- control (called from Python with the GIL) ---- */

/* Drop every record and the code references (not from a hook: DECREF may
 * run deallocators, which re-enter the allocator: that is fine here). */
static void
mw_clear_tables(int decref)
{
    mw_stack **stacks = mw_stacks;
    uint32_t n = mw_nstacks;
    mw_live *live = mw_live_tab;
    uint32_t *slots = mw_stack_slots;
    /* detach first: deallocations below go through the hooks */
    mw_stacks = NULL;
    mw_nstacks = 0;
    mw_stacks_cap = 0;
    mw_stack_slots = NULL;
    mw_stack_mask = 0;
    mw_live_tab = NULL;
    mw_live_mask = 0;
    mw_nlive = 0;
    mw_stack_bytes = 0;
    mw_overflow_index = UINT32_MAX;
    mw_samples = mw_dropped_live = mw_dropped_stacks = mw_reentries = 0;
    memset(mw_filter, 0, sizeof(mw_filter));
    mw_free(live);
    mw_free(slots);
    for (uint32_t i = 0; i < n; i++) {
        if (decref) {
            for (uint32_t k = 0; k < stacks[i]->nframe; k++) {
                Py_DECREF(stacks[i]->frames[k].code);
            }
        }
        mw_free(stacks[i]);
    }
    mw_free(stacks);
}

static uint64_t
mw_seed(void)
{
    struct timespec ts;
    uint64_t s = 0x853C49E6748FEA9Bull;
#if defined(CLOCK_MONOTONIC)
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        s ^= (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
    }
#endif
    s ^= (uint64_t)(uintptr_t)&ts;
    return s ? s : 1;
}

static int
mw_hooks_on_top(void)
{
    for (int i = 0; i < 2; i++) {
        if (!mw_hooks[i].installed) {
            return 0;
        }
        if (!mw_allocator_is(mw_hooks[i].domain, &mw_hook_fns[i])) {
            return 0;
        }
    }
    return 1;
}

/* Are our hooks still called?  Another tool may have hooked on top of us
 * (then we are in its chain) or restored an allocator without us (then we
 * are out).  Only the top is visible, so probe: the fast path subtracts
 * every allocation's size from the countdown, whoever is on top. */
static int
mw_in_chain(void)
{
    int saved_active = mw_active;
    int ok = 1;
    mw_active = 0;      /* the probe must not be sampled */
    Py_ssize_t before = mw_countdown = PY_SSIZE_T_MAX;
    void *p = PyMem_Malloc(8);
    if (p == NULL || mw_countdown != before - 8) {
        ok = 0;
    }
    PyMem_Free(p);
    before = mw_countdown = PY_SSIZE_T_MAX;
    p = PyObject_Malloc(8);
    if (p == NULL || mw_countdown != before - 8) {
        ok = 0;
    }
    PyObject_Free(p);
    mw_active = saved_active;
    mw_countdown = saved_active ? mw_draw_interval() : PY_SSIZE_T_MAX;
    return ok;
}

/* 1: ours on top; 0: chained under another hook; -1: out of the chain;
 * -2: never installed. */
static int
mw_hook_state(void)
{
    if (!mw_hooks[0].installed) {
        return -2;
    }
    if (mw_hooks_on_top()) {
        return 1;
    }
    return mw_in_chain() ? 0 : -1;
}

static void
mw_install(void)
{
    mw_hooks[0].domain = PYMEM_DOMAIN_MEM;
    mw_hooks[1].domain = PYMEM_DOMAIN_OBJ;
    for (int i = 0; i < 2; i++) {
        PyMem_GetAllocator(mw_hooks[i].domain, &mw_hooks[i].orig);
    }
    for (int i = 0; i < 2; i++) {
        PyMemAllocatorEx hook = mw_hook_fns[i];
        PyMem_SetAllocator(mw_hooks[i].domain, &hook);
        mw_hooks[i].installed = 1;
    }
}

static void
mw_uninstall(void)
{
    for (int i = 0; i < 2; i++) {
        PyMem_SetAllocator(mw_hooks[i].domain, &mw_hooks[i].orig);
        mw_hooks[i].installed = 0;
    }
}

/* Returns 1 if the hooks were installed now, 0 if they were still chained
 * (an inactive earlier session under another tool's hooks) and reused. */
static int
mw_start(double mean, int nframe, size_t max_live, uint32_t max_stacks, uint64_t seed)
{
    int fresh = 0;
    mw_mean = mean;
    mw_nframe = nframe;
    mw_max_live = max_live;
    mw_max_stacks = max_stacks;
    mw_rng = seed ? seed : mw_seed();
    if (!mw_hooks[0].installed) {
        mw_install();
        fresh = 1;
    }
    else if (mw_hook_state() == -1) {
        /* an earlier session's hooks were dropped by another tool: hook again */
        mw_install();
        fresh = 1;
    }
    mw_countdown = mw_draw_interval();
    mw_active = 1;
    return fresh;
}

/* Returns 1 if the original allocators were restored, 0 if another hook is
 * on top of ours: then ours stay chained but only pass calls through. */
static int
mw_stop(void)
{
    int restored = 0;
    mw_active = 0;
    mw_countdown = PY_SSIZE_T_MAX;
    int state = mw_hook_state();
    if (state == 1) {
        mw_uninstall();
        restored = 1;
    }
    else if (state == -1 || state == -2) {
        /* removed by someone else: nothing of ours is installed any more */
        mw_hooks[0].installed = mw_hooks[1].installed = 0;
        restored = 1;
    }
    mw_clear_tables(1);
    return restored;
}

/* The child of fork(): same hooks, empty profile; the code references are
 * the parent's copies, released normally. */
static void
mw_after_fork_child(void)
{
    if (mw_stacks != NULL || mw_live_tab != NULL) {
        mw_clear_tables(1);
    }
    mw_rng ^= mw_seed();
    if (mw_active) {
        mw_countdown = mw_draw_interval();
    }
}

/* ---- profile copy: phase 1, C only (no hooked allocation, no Python
 * object created), so that building the Python objects afterwards (which
 * allocates, and may run finalizers that touch the profiler) reads a
 * private copy.  The copy holds its own references to the code objects. */
typedef struct {
    uint32_t nframe;
    uint32_t flags;
    size_t first;            /* index of the first frame in the frames copy */
    double live_bytes;
    double live_objects;
    uint64_t live_samples;
    double alloc_bytes;
    double alloc_objects;
    uint64_t alloc_samples;
} mw_stack_row;

typedef struct {
    uint32_t nrows;
    mw_stack_row *rows;
    mw_frame *frames;
    size_t nframes;
} mw_profile_copy;

static void
mw_profile_copy_free(mw_profile_copy *c)
{
    if (c->frames != NULL) {
        for (size_t i = 0; i < c->nframes; i++) {
            Py_DECREF(c->frames[i].code);
        }
    }
    mw_free(c->frames);
    mw_free(c->rows);
    c->frames = NULL;
    c->rows = NULL;
    c->nrows = 0;
    c->nframes = 0;
}

/* 0 on success, -1 when out of memory (c left empty). */
static int
mw_profile_copy_take(mw_profile_copy *c)
{
    uint32_t n = mw_nstacks;
    size_t nf = 0;
    c->nrows = 0;
    c->rows = NULL;
    c->frames = NULL;
    c->nframes = 0;
    if (n == 0) {
        return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        nf += mw_stacks[i]->nframe;
    }
    c->rows = (mw_stack_row *)mw_calloc(n, sizeof(mw_stack_row));
    c->frames = (mw_frame *)mw_malloc((nf ? nf : 1) * sizeof(mw_frame));
    if (c->rows == NULL || c->frames == NULL) {
        mw_free(c->rows);
        mw_free(c->frames);
        c->rows = NULL;
        c->frames = NULL;
        return -1;
    }
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        mw_stack *s = mw_stacks[i];
        mw_stack_row *r = &c->rows[i];
        r->nframe = s->nframe;
        r->flags = s->flags;
        r->first = at;
        r->alloc_bytes = s->alloc_bytes;
        r->alloc_objects = s->alloc_objects;
        r->alloc_samples = s->alloc_samples;
        for (uint32_t k = 0; k < s->nframe; k++) {
            c->frames[at] = s->frames[k];
            Py_INCREF(c->frames[at].code);
            at++;
        }
    }
    c->nframes = at;
    c->nrows = n;
    if (mw_live_tab != NULL) {
        for (size_t j = 0; j <= mw_live_mask; j++) {
            if (mw_live_tab[j].addr) {
                double sz = (double)mw_live_tab[j].size;
                double p = -expm1(-sz / mw_mean);
                mw_stack_row *r = &c->rows[mw_live_tab[j].stack];
                if (p > 0.0) {
                    r->live_bytes += sz / p;
                    r->live_objects += 1.0 / p;
                }
                r->live_samples++;
            }
        }
    }
    return 0;
}

static inline int
mw_code_line(PyObject *code, int addr)
{
    return PyCode_Addr2Line((PyCodeObject *)code, addr);
}

static size_t
mw_bookkeeping_bytes(void)
{
    return mw_stack_bytes + (mw_live_tab ? (mw_live_mask + 1) * sizeof(mw_live) : 0)
           + (mw_stack_slots ? (mw_stack_mask + 1) * sizeof(uint32_t) : 0);
}

#endif /* MEMWATCH_SAMPLER_H */
