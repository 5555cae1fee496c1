# cython: language_level=3
"""memwatch._core: one pass over the whole CPython heap, in C.

The walk starts from every object the cyclic GC tracks (``gc.get_objects()``)
and follows references (``tp_traverse``) to the objects the GC does not track
(str, int, float, bytes, untracked tuples and dicts, code objects, ...), plus
the references ``tp_traverse`` does not report (the keys of str-keyed dicts,
the constants and names of code objects).  Each object is counted exactly once
(deduplicated by address) and its size is exactly ``sys.getsizeof(obj)``.

Invariants that keep the walk safe:

* The GC is disabled for the whole walk and restored on every exit path.
* No Python code runs while the walk holds borrowed pointers: only C
  ``__sizeof__`` methods of CPython's own static types are called inline; any
  other ``__sizeof__`` is called after the walk, with a strong reference held.
* The work list is an explicit heap-allocated stack, so memory depth, not C
  stack depth, bounds how deep a structure can be.
* All bookkeeping lives in ``PyMem_Raw*`` memory (traced by tracemalloc, never
  part of the Python heap), so the census never counts itself.
"""

from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uintptr_t, uint32_t, uint64_t, int64_t
from libc.string cimport memset, memcpy, memcmp
from libc.stdlib cimport qsort

import gc as _gc
from array import array as _array
import os as _os
import sys as _sys
import time as _time

cdef extern from "Python.h":
    ctypedef int (*visitproc)(PyObject*, void*)
    ctypedef PyObject* (*PyCFunction)(PyObject*, PyObject*)
    int PyGC_Enable()
    int PyGC_Disable()
    int PyObject_GC_IsTracked(PyObject*)
    PyObject* PyList_GET_ITEM(PyObject*, Py_ssize_t)
    Py_ssize_t PyList_GET_SIZE(PyObject*)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyUnicode_Check(object)
    bint PyUnicode_CheckExact(object)
    object PyUnicode_FromObject(object)

cdef extern from "Python.h":
    """
    /* The type decides per object whether it is a GC object (tp_is_gc). */
    static inline int mw_type_has_is_gc(PyObject *o) {
        return Py_TYPE(o)->tp_is_gc != NULL;
    }
    """
    int mw_type_has_is_gc(PyObject*)

cdef extern from "_ndarray.h":
    void mw_ndarray_lookup()
    void mw_ndarray_clear()
    int mw_is_ndarray(PyObject*)
    int mw_visit_ndarray(PyObject*, visitproc, void*)

cdef extern from "_compat.h":
    Py_ssize_t MW_ABSURD_SIZE   # 2**48: a bigger size of one object is a lie
    Py_ssize_t mw_presize(PyObject*)
    int mw_is_gc(PyObject*)
    int mw_traverse(PyObject*, visitproc, void*)
    int mw_visit_code(PyObject*, visitproc, void*)
    int mw_visit_dict_keys(PyObject*, visitproc, void*)
    int mw_refuse_unsupported_build() except -1
    int mw_pretend_free_threaded
    int mw_classify_sizeof(PyTypeObject*, object name, PyCFunction object_sizeof, PyCFunction* out)
    Py_ssize_t mw_object_sizeof(PyObject*)
    PyCFunction mw_method_cfunc(object descr)
    object mw_call_cfunc(PyCFunction fn, PyObject* o)
    Py_ssize_t mw_sizeof_via(PyCFunction fn, PyObject* o)
    Py_ssize_t mw_basicsize(PyObject*)
    PyTypeObject* mw_type(PyObject*)
    int mw_is_code(PyObject*)
    int mw_is_dict(PyObject*)
    int mw_sole_reference(PyObject*)
    Py_ssize_t mw_refcnt(PyObject*)
    int MW_SIZEOF_OBJECT
    int MW_SIZEOF_CFUNC
    int MW_SIZEOF_DEFERRED
    Py_ssize_t mw_list_sizeof(PyObject*)
    Py_ssize_t MW_GC_HEAD_SIZE


# --------------------------------------------------------------------------
# Bookkeeping structures (all in PyMem_Raw memory)
# --------------------------------------------------------------------------

from memwatch._alloc cimport (_malloc, _calloc, _realloc, _free, mw_fail_allocation_after,
                              mw_gc_hold, mw_gc_release, mw_gc_after_fork_child)


def _after_fork_in_child():
    """A child forked while a walk had the GC off gets it back on (the walking
    thread does not exist in the child, so it would never restore it)."""
    return bool(mw_gc_after_fork_child())


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


def _fail_allocation_after(Py_ssize_t n):
    """Test harness: the allocation after the next ``n`` ones fails (-1 disarms)."""
    mw_fail_allocation_after(n)


def _pretend_free_threaded(bint on):
    """Test harness: refuse to walk as a free-threaded build would."""
    global mw_pretend_free_threaded
    mw_pretend_free_threaded = on


cdef uint64_t _FIB = 0x9E3779B97F4A7C15ULL

cdef inline size_t _next_pow2(size_t n) noexcept nogil:
    cdef size_t p = 16
    while p < n:
        p <<= 1
    return p


cdef struct PtrSet:
    uintptr_t* slots
    size_t cap          # a power of two
    size_t used
    int shift           # 64 - log2(cap), for Fibonacci hashing


cdef inline size_t _set_slot(uintptr_t p, int shift) noexcept nogil:
    """Slot for an object address in the seen-set: Fibonacci hashing.

    Objects are at least 8-byte aligned and 16 bytes apart, so the low 3 bits
    carry nothing; the multiply spreads the rest uniformly.  (Order-preserving
    hashes looked cache-friendlier but made long linear-probing clusters.)"""
    return <size_t>(((<uint64_t>p >> 3) * _FIB) >> shift)


cdef int ptrset_init(PtrSet* s, size_t want) noexcept nogil:
    cdef size_t cap = _next_pow2(want)
    s.slots = <uintptr_t*>_calloc(cap, sizeof(uintptr_t))
    if s.slots == NULL:
        return -1
    s.cap = cap
    s.used = 0
    s.shift = 64
    while cap > 1:
        cap >>= 1
        s.shift -= 1
    return 0


cdef void ptrset_free(PtrSet* s) noexcept nogil:
    if s.slots != NULL:
        _free(s.slots)
    s.slots = NULL
    s.cap = s.used = 0


cdef inline size_t _slot(uintptr_t p, int shift) noexcept nogil:
    return <size_t>(((<uint64_t>p >> 4) * _FIB) >> shift)


cdef int ptrset_grow(PtrSet* s) noexcept nogil:
    cdef PtrSet bigger
    cdef size_t i, j, mask
    cdef uintptr_t p
    if ptrset_init(&bigger, s.cap * 2) < 0:
        return -1
    mask = bigger.cap - 1
    for i in range(s.cap):
        p = s.slots[i]
        if p != 0:
            j = _set_slot(p, bigger.shift)
            while bigger.slots[j] != 0:
                j = (j + 1) & mask
            bigger.slots[j] = p
            bigger.used += 1
    ptrset_free(s)
    s[0] = bigger
    return 0


cdef inline int ptrset_add(PtrSet* s, uintptr_t p) noexcept nogil:
    """1 if p was added, 0 if it was already there, -1 on allocation failure."""
    cdef size_t mask, j
    if (s.used + 1) * 4 > s.cap * 3:
        if ptrset_grow(s) < 0:
            return -1
    mask = s.cap - 1
    j = _set_slot(p, s.shift)
    while True:
        if s.slots[j] == p:
            return 0
        if s.slots[j] == 0:
            s.slots[j] = p
            s.used += 1
            return 1
        j = (j + 1) & mask


cdef struct PtrStack:
    PyObject** items
    size_t size
    size_t cap


cdef inline int stack_push(PtrStack* st, PyObject* o) noexcept nogil:
    cdef size_t newcap
    cdef PyObject** grown
    if st.size == st.cap:
        newcap = st.cap * 2 if st.cap else 1024
        grown = <PyObject**>_realloc(st.items, newcap * sizeof(PyObject*))
        if grown == NULL:
            return -1
        st.items = grown
        st.cap = newcap
    st.items[st.size] = o
    st.size += 1
    return 0


cdef struct Record:
    # One counted object, for HeapDiff: its address and its type's index.
    uintptr_t addr
    uint32_t tidx
    uint32_t _pad


# Identity records come packed in 8 bytes, (address >> 3) << 19 | type index,
# whenever every address is below 2**48 (user space on x86-64 and arm64) and
# there are fewer than 2**19 types; otherwise they are 16-byte Records.  Packed,
# they sort with half the memory traffic and an open HeapDiff holds 8 bytes per
# object.  Sorting packed values sorts by address: the address is the high part.
DEF PACK_TIDX_BITS = 19
DEF PACK_TIDX_MASK = (1 << 19) - 1
DEF PACK_ADDR_BITS = 48


cdef struct RecordBuf:
    uint64_t* packed       # packed mode
    Record* items          # wide mode
    size_t size
    size_t cap
    bint wide


cdef inline uintptr_t rec_addr(RecordBuf* rb, size_t i) noexcept nogil:
    if rb.wide:
        return rb.items[i].addr
    return <uintptr_t>((rb.packed[i] >> PACK_TIDX_BITS) << 3)


cdef inline uint32_t rec_tidx(RecordBuf* rb, size_t i) noexcept nogil:
    if rb.wide:
        return rb.items[i].tidx
    return <uint32_t>(rb.packed[i] & PACK_TIDX_MASK)


cdef inline size_t rec_width(RecordBuf* rb) noexcept nogil:
    return sizeof(Record) if rb.wide else sizeof(uint64_t)


cdef void records_free(RecordBuf* rb) noexcept nogil:
    _free(rb.packed)
    _free(rb.items)
    rb.packed = NULL
    rb.items = NULL
    rb.size = rb.cap = 0


cdef int records_widen(RecordBuf* rb) noexcept nogil:
    """Switch to 16-byte records (an address or a type index does not pack)."""
    cdef size_t cap = rb.cap if rb.cap > rb.size else rb.size + 1024
    cdef Record* items = <Record*>_malloc(cap * sizeof(Record))
    cdef size_t i
    if items == NULL:
        return -1
    for i in range(rb.size):
        items[i].addr = rec_addr(rb, i)
        items[i].tidx = rec_tidx(rb, i)
        items[i]._pad = 0
    _free(rb.packed)
    rb.packed = NULL
    rb.items = items
    rb.cap = cap
    rb.wide = True
    return 0


cdef bint _force_wide = False     # test harness: exercise the 16-byte records


def _force_wide_records(bint on):
    """Test harness: record identities as 16-byte records even where they pack."""
    global _force_wide
    _force_wide = on


cdef inline int records_push(RecordBuf* rb, uintptr_t addr, uint32_t tidx) noexcept nogil:
    cdef size_t newcap
    cdef void* grown
    if not rb.wide:
        if (<uint64_t>addr >> PACK_ADDR_BITS) == 0 and tidx <= PACK_TIDX_MASK and not _force_wide:
            if rb.size == rb.cap:
                newcap = rb.cap + rb.cap // 2 if rb.cap else 4096
                grown = _realloc(rb.packed, newcap * sizeof(uint64_t))
                if grown == NULL:
                    return -1
                rb.packed = <uint64_t*>grown
                rb.cap = newcap
            rb.packed[rb.size] = ((<uint64_t>addr >> 3) << PACK_TIDX_BITS) | tidx
            rb.size += 1
            return 0
        if records_widen(rb) < 0:
            return -1
    if rb.size == rb.cap:
        newcap = rb.cap + rb.cap // 2 if rb.cap else 4096
        grown = _realloc(rb.items, newcap * sizeof(Record))
        if grown == NULL:
            return -1
        rb.items = <Record*>grown
        rb.cap = newcap
    rb.items[rb.size].addr = addr
    rb.items[rb.size].tidx = tidx
    rb.items[rb.size]._pad = 0
    rb.size += 1
    return 0


cdef struct TypeEntry:
    uintptr_t tp           # the type's address (dereferenced only during the walk)
    uint64_t count
    uint64_t size
    int kind               # MW_SIZEOF_*
    PyCFunction fn


cdef struct TypeTable:
    TypeEntry* entries     # dense, in order of first sight
    uint32_t n
    uint32_t cap
    uint32_t* index        # open addressing: slot -> entry index + 1 (0 = empty)
    size_t index_cap
    int index_shift
    uintptr_t last_tp      # one-entry cache: runs of one type are common
    uint32_t last_idx


cdef int types_init(TypeTable* t) noexcept nogil:
    t.n = 0
    t.cap = 256
    t.entries = <TypeEntry*>_malloc(t.cap * sizeof(TypeEntry))
    t.index_cap = 1024
    t.index_shift = 64 - 10
    t.index = <uint32_t*>_calloc(t.index_cap, sizeof(uint32_t))
    t.last_tp = 0
    t.last_idx = 0
    if t.entries == NULL or t.index == NULL:
        return -1
    return 0


cdef void types_free(TypeTable* t) noexcept nogil:
    if t.entries != NULL:
        _free(t.entries)
    if t.index != NULL:
        _free(t.index)
    t.entries = NULL
    t.index = NULL
    t.n = 0


cdef int types_reindex(TypeTable* t) noexcept nogil:
    cdef size_t newcap = t.index_cap * 2
    cdef uint32_t* idx = <uint32_t*>_calloc(newcap, sizeof(uint32_t))
    cdef size_t j, mask = newcap - 1
    cdef uint32_t i
    if idx == NULL:
        return -1
    _free(t.index)
    t.index = idx
    t.index_cap = newcap
    t.index_shift -= 1
    for i in range(t.n):
        j = _slot(t.entries[i].tp, t.index_shift)
        while idx[j] != 0:
            j = (j + 1) & mask
        idx[j] = i + 1
    return 0


# --------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------

cdef enum:
    ERR_NONE = 0
    ERR_NOMEM = 1
    ERR_PYTHON = 2


cdef struct Walk:
    PtrSet seen
    PtrStack stack
    TypeTable types
    RecordBuf records
    int recording
    int sole_ref_ok        # see _visit: set while tp_traverse of a non-dict runs
    int dedup_tracked
    int slow_sizes         # self-check failed: size every object via sys.getsizeof
    int count_only         # walk(sizes=False): no object is sized
    int error
    uint64_t total_count
    uint64_t total_size
    uint64_t sizeof_errors
    PyObject* deferred     # a list (strong refs) of objects sized after the walk
    PyObject* deferred_ti  # ... and, in step, the type index each was counted under
    PyObject* sizeof_name  # the interned string "__sizeof__"
    PyCFunction object_sizeof


cdef object _SIZEOF_NAME = _sys.intern("__sizeof__")
cdef PyCFunction _OBJECT_SIZEOF = mw_method_cfunc(object.__dict__["__sizeof__"])
cdef PyCFunction _LIST_SIZEOF = mw_method_cfunc(list.__dict__["__sizeof__"])
DEF SIZEOF_LIST = 3    # list.__sizeof__ (list and subclasses that keep it): inline
cdef bint _slow_sizes = False   # set by _self_check() if the inline sizes disagree
cdef size_t _untracked_hint = 0  # untracked objects the last full walk found


cdef inline long _type_index(Walk* w, PyTypeObject* tp) noexcept:
    """Index of tp in the type table, adding it on first sight; -1 on failure."""
    cdef uintptr_t key = <uintptr_t>tp
    cdef TypeTable* t = &w.types
    cdef size_t j, mask
    cdef uint32_t i
    cdef TypeEntry* grown
    cdef TypeEntry* e
    if key == t.last_tp:
        return t.last_idx
    mask = t.index_cap - 1
    j = _slot(key, t.index_shift)
    while t.index[j] != 0:
        i = t.index[j] - 1
        if t.entries[i].tp == key:
            t.last_tp = key
            t.last_idx = i
            return i
        j = (j + 1) & mask
    # New type.
    if t.n == t.cap:
        grown = <TypeEntry*>_realloc(t.entries, 2 * t.cap * sizeof(TypeEntry))
        if grown == NULL:
            return -1
        t.entries = grown
        t.cap *= 2
    e = &t.entries[t.n]
    e.tp = key
    e.count = 0
    e.size = 0
    if w.slow_sizes:
        e.kind = MW_SIZEOF_DEFERRED
        e.fn = NULL
    else:
        e.kind = mw_classify_sizeof(tp, <object>w.sizeof_name, w.object_sizeof, &e.fn)
        if e.kind == MW_SIZEOF_CFUNC and e.fn == _LIST_SIZEOF:
            e.kind = SIZEOF_LIST
    t.index[j] = t.n + 1
    i = t.n
    t.n += 1
    t.last_tp = key
    t.last_idx = i
    if (<size_t>t.n) * 2 > t.index_cap:
        if types_reindex(t) < 0:
            return -1
    return i


# One object's size of MW_ABSURD_SIZE (2**48, _compat.h) or more is a lie (a
# hostile or broken __sizeof__): it is counted as a sizeof error (basic size
# instead), and every total saturates instead of wrapping at 2**64.


cdef inline uint64_t _sat_add(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t r = a + b
    return r if r >= a else <uint64_t>0xFFFFFFFFFFFFFFFFULL


cdef inline void _add_size(Walk* w, TypeEntry* e, uint64_t size) noexcept nogil:
    e.size = _sat_add(e.size, size)
    w.total_size = _sat_add(w.total_size, size)


cdef inline int _account(Walk* w, PyObject* o) noexcept:
    """Count o once: its type's count and its exact sys.getsizeof() bytes."""
    cdef long ti = _type_index(w, mw_type(o))
    cdef TypeEntry* e
    cdef Py_ssize_t size
    if ti < 0:
        w.error = ERR_NOMEM
        return -1
    e = &w.types.entries[ti]
    e.count += 1
    w.total_count += 1
    if w.recording:
        if records_push(&w.records, <uintptr_t>o, <uint32_t>ti) < 0:
            w.error = ERR_NOMEM
            return -1
    if w.count_only:
        return 0
    if e.kind == MW_SIZEOF_OBJECT:
        size = mw_object_sizeof(o)
    elif e.kind == SIZEOF_LIST:
        size = mw_list_sizeof(o)
    elif e.kind == MW_SIZEOF_CFUNC:
        size = mw_sizeof_via(e.fn, o)
        if size < 0 or size >= MW_ABSURD_SIZE:
            w.sizeof_errors += 1
            size = mw_basicsize(o)
            e.size += <uint64_t>size
            w.total_size += <uint64_t>size
            return 0
    else:
        # Sized after the walk, when running Python code is safe.
        try:
            (<list>w.deferred).append(<object>o)
            (<list>w.deferred_ti).append(ti)
        except BaseException:
            w.error = ERR_PYTHON
            return -1
        return 0
    # Plain sums here, in the hot path: these are real sizes of live C objects
    # (below 2**48 each, their sum below the address space).  Only the sizes
    # Python code reports, added after the walk, can be absurd: those saturate.
    size += mw_presize(o)
    e.size += <uint64_t>size
    w.total_size += <uint64_t>size
    return 0


cdef inline bint _has_hidden_referents(PyObject* o) noexcept:
    return mw_is_gc(o) or mw_is_code(o) or mw_is_ndarray(o)


cdef inline int _take(Walk* w, PyObject* o) noexcept:
    """A referent seen for the first time: queue it, or count it now."""
    if _has_hidden_referents(o):
        if stack_push(&w.stack, o) < 0:
            w.error = ERR_NOMEM
            return 1
        return 0
    # A leaf (str, int, float, bytes, ...): count it now, no need to queue.
    return 1 if _account(w, o) < 0 else 0


cdef int _visit(PyObject* o, void* arg) noexcept:
    """tp_traverse callback: queue or count each referent seen for the first time."""
    cdef Walk* w = <Walk*>arg
    cdef int added
    if o == NULL:
        return 0
    if mw_refcnt(o) <= 0:
        # A stale pointer to a freed, free-listed object (seen on 3.12 from
        # _asyncio.FutureIter): not alive, so not counted; its type slot may
        # hold a free-list link, so nothing reads it.
        return 0
    if PyObject_GC_IsTracked(o):
        if not w.dedup_tracked:
            return 0      # reached on its own from gc.get_objects()
    elif w.sole_ref_ok and mw_sole_reference(o) and not mw_type_has_is_gc(o):
        # (Not for a type with tp_is_gc: its object may also be listed in
        # gc.get_objects() while "untracked", see walk(); the seen-set decides.)
        # The reference being traversed is this object's only one, so no
        # other path can lead here again: count it without the seen-set.
        return _take(w, o)
    added = ptrset_add(&w.seen, <uintptr_t>o)
    if added == 0:
        return 0
    if added < 0:
        w.error = ERR_NOMEM
        return 1
    return _take(w, o)


cdef inline int _expand(Walk* w, PyObject* o) noexcept:
    """Visit everything o refers to."""
    cdef int r
    # dict_traverse reports the keys of non-str-keyed dicts, and the key
    # enumeration below reports them again: a dict's referents must always go
    # through the seen-set.  Everything else reports each reference once.
    w.sole_ref_ok = not mw_is_dict(o)
    r = mw_traverse(o, _visit, w)
    w.sole_ref_ok = 0
    if r != 0 or w.error:
        return -1
    if mw_is_dict(o):
        if mw_visit_dict_keys(o, _visit, w) != 0 or w.error:
            return -1
    elif mw_is_code(o):
        if mw_visit_code(o, _visit, w) != 0 or w.error:
            return -1
    elif mw_is_ndarray(o):
        # A view's base, an object array's items: no tp_traverse reports them
        # (see _ndarray.h).  Several arrays may share them: seen-set always.
        if mw_visit_ndarray(o, _visit, w) != 0 or w.error:
            return -1
    return 0


cdef int _drain(Walk* w) noexcept:
    cdef PyObject* o
    while w.stack.size:
        w.stack.size -= 1
        o = w.stack.items[w.stack.size]
        if _account(w, o) < 0 or _expand(w, o) < 0:
            return -1
    return 0


cdef void _walk_free(Walk* w) noexcept:
    ptrset_free(&w.seen)
    if w.stack.items != NULL:
        _free(w.stack.items)
        w.stack.items = NULL
    types_free(&w.types)
    records_free(&w.records)


cdef size_t _walk_overhead(Walk* w) noexcept:
    return (w.seen.cap * sizeof(uintptr_t) + w.stack.cap * sizeof(PyObject*)
            + w.types.cap * sizeof(TypeEntry) + w.types.index_cap * sizeof(uint32_t))


cdef object _TYPE_QUALNAME = type.__dict__["__qualname__"]
cdef object _TYPE_MODULE = type.__dict__["__module__"]


cdef object _type_name(uintptr_t tp_addr):
    """'dict' for builtins, 'package.module.Qual.Name' for everything else.

    Reads type's own descriptors rather than getattr(), so a metaclass can
    neither run code nor lie; two classes named alike in different modules
    never merge."""
    cdef object tp = <object><PyObject*>tp_addr
    cdef bytes raw = (<PyTypeObject*>tp_addr).tp_name
    tp_name = raw.decode("utf-8", "replace")
    try:
        qual = _exact_str(_TYPE_QUALNAME.__get__(tp))
    except BaseException:
        qual = None
    try:
        mod = _exact_str(_TYPE_MODULE.__get__(tp))
    except BaseException:
        mod = None
    if qual is None:
        qual = tp_name.rpartition(".")[2]
    if mod is None:
        mod = tp_name.rpartition(".")[0] or "builtins"
    if mod == "builtins":
        return qual
    return mod + "." + qual


cdef object _exact_str(object value):
    """value as an exact str, or None if it is no str.

    A class's ``__module__`` (and ``__qualname__``) may be a str subclass whose
    ``__eq__``, ``__add__`` or ``__hash__`` runs code, or raises: comparing or
    concatenating it with Python semantics would let one class break every
    heap call.  PyUnicode_FromObject copies a subclass's characters into a
    plain str in C, so what follows runs no program code."""
    if PyUnicode_CheckExact(value):
        return value
    if PyUnicode_Check(value):
        return PyUnicode_FromObject(value)
    return None


def type_name(tp):
    """The name memwatch reports for type ``tp`` (see the census docs)."""
    if not isinstance(tp, type):
        raise TypeError(f"type_name() needs a type, not {type(tp).__name__}")
    return _type_name(<uintptr_t><PyObject*>tp)


cdef class RawCensus:
    """The C-side result of one walk: per-type totals and, optionally, the
    sorted identity records (address, type index) that HeapDiff compares.

    Type addresses are kept only as integers for identity; they are never
    dereferenced after the walk, so a RawCensus keeps no object alive."""

    cdef TypeEntry* entries
    cdef uint32_t ntypes
    cdef RecordBuf recs                 # identity records (record=True), sorted
    cdef char* name_buf                 # type names, UTF-8, NUL-separated
    cdef size_t* name_off               # by type index; C memory so a kept
                                        # RawCensus adds no str to the heap
    cdef readonly uint64_t total_count
    cdef readonly uint64_t total_size
    cdef readonly uint64_t sizeof_errors
    cdef readonly int64_t elapsed_ns
    cdef readonly uint64_t overhead_bytes  # peak bookkeeping bytes of the walk
    cdef readonly bint tracked_only
    cdef readonly bint recorded           # identity records present (record=True)
    cdef readonly object objects          # test harness only: the counted objects

    def __dealloc__(self):
        _free(self.entries)
        records_free(&self.recs)
        _free(self.name_buf)
        _free(self.name_off)

    cdef int _set_names(self, list names) except -1:
        encoded = [n.encode("utf-8", "replace") for n in names]
        cdef size_t total = 0, off = 0
        cdef Py_ssize_t i
        cdef bytes b
        for b in encoded:
            total += len(b) + 1
        self.name_buf = <char*>_malloc(total + 1)
        self.name_off = <size_t*>_malloc((len(encoded) + 1) * sizeof(size_t))
        if self.name_buf == NULL or self.name_off == NULL:
            raise MemoryError("memwatch: cannot allocate the type name table")
        for i, b in enumerate(encoded):
            self.name_off[i] = off
            memcpy(self.name_buf + off, <char*>b, len(b) + 1)
            off += len(b) + 1
        self.name_off[len(encoded)] = off
        return 0

    cdef object _name(self, uint32_t ti):
        return self.name_buf[self.name_off[ti]:self.name_off[ti + 1] - 1].decode("utf-8")

    @property
    def names(self):
        """Type names, by type index (decoded anew on each access)."""
        return [self._name(i) for i in range(self.ntypes)]

    @property
    def nrecords(self):
        """Number of identity records kept (0 unless recorded)."""
        return self.recs.size

    @property
    def record_bytes(self):
        """Bytes of C memory the identity records take."""
        return self.recs.size * rec_width(&self.recs)

    def rows(self):
        """Per-type ``(name, count, size)`` tuples, one per type object seen
        (two types with the same qualified name give two tuples)."""
        cdef uint32_t i
        return [(self._name(i), self.entries[i].count, self.entries[i].size)
                for i in range(self.ntypes)]

    def record_ids(self):
        """The ids of every counted object, sorted (needs ``record=True``)."""
        cdef size_t i
        return [rec_addr(&self.recs, i) for i in range(self.recs.size)]


cdef int _finish_deferred(Walk* w) except -1:
    """Size the objects whose __sizeof__ may run Python code (walk is over).

    Each object's bytes go to the type it was counted under during the walk:
    a __sizeof__ may re-class another object that is still waiting, and the
    type table (and its names) must not change after the walk."""
    cdef uint32_t ti
    cdef PyObject* o
    getsizeof = _sys.getsizeof
    for obj, tidx in zip(<list>w.deferred, <list>w.deferred_ti):
        o = <PyObject*>obj
        ti = tidx
        try:
            size = getsizeof(obj)
        except Exception:
            size = -1
        if not isinstance(size, int) or not 0 <= size < MW_ABSURD_SIZE:
            w.sizeof_errors += 1
            size = mw_basicsize(o)
        _add_size(w, &w.types.entries[ti], <uint64_t>size)
    return 0


def walk(bint tracked_only=False, bint record=False, bint keep_objects=False, bint sizes=True):
    """Count every object on the heap by type.

    :param tracked_only: count only the objects the cyclic GC tracks (one pass
        over ``gc.get_objects()``, no reference following): cheaper, but blind
        to str, int, bytes and other untracked objects.
    :param record: also keep each object's (address, type) for HeapDiff:
        8 bytes an object, packed (16 where an address or type does not pack).
    :param keep_objects: test harness: also return every counted object (strong
        references, taken while the walk still pins them); implies record.
    :param sizes: size each object (``sys.getsizeof``); with False only counts
        (every size is 0).  A C ``__sizeof__`` returns a new int for most
        objects, and while tracemalloc traces, each new object costs a
        16-frame traceback (``_PyTraceMalloc_NewReference``): the pytest
        plugin's scan under tracing took 0.3 s sized, 0.03 s unsized.
    :returns: a :class:`RawCensus`.
    :raises MemoryError: if the bookkeeping cannot be allocated; the heap and
        the GC state are left as they were.
    """
    cdef Walk w
    cdef Py_ssize_t i, n
    cdef int added
    cdef PyObject* o
    cdef int was_enabled
    cdef bint held = False
    cdef int64_t t0 = _time.perf_counter_ns()
    cdef RawCensus result
    cdef list objects
    cdef uint32_t ti
    cdef void* shrunk
    global _untracked_hint

    mw_refuse_unsupported_build()   # free-threaded builds: an error, not a crash
    memset(&w, 0, sizeof(Walk))
    if keep_objects:
        record = True
    w.recording = record
    w.slow_sizes = _slow_sizes
    w.count_only = not sizes
    w.sizeof_name = <PyObject*>_SIZEOF_NAME
    w.object_sizeof = _OBJECT_SIZEOF
    deferred = deferred_ti = None

    mw_ndarray_lookup()
    was_enabled = mw_gc_hold()
    held = True
    try:
        objects = _gc.get_objects()
        # Created after the object list, so the walk can never reach (and
        # count) its own bookkeeping.
        deferred = []
        deferred_ti = []
        w.deferred = <PyObject*>deferred
        w.deferred_ti = <PyObject*>deferred_ti
        n = PyList_GET_SIZE(<PyObject*>objects)
        # Objects frozen with gc.freeze() are tracked but absent from
        # gc.get_objects(); when there are any, tracked referents must be
        # deduplicated too, or they would be skipped.
        w.dedup_tracked = (not tracked_only) and _gc.get_freeze_count() > 0
        # Size the seen-set so that it need not grow: the last walk's count of
        # untracked objects is the best guess of this one's.
        want = 1024
        if not tracked_only:
            want = max(_untracked_hint, n // 2) + n // 8 + 1024
            if w.dedup_tracked:
                want += n
            want = want * 4 // 3
        if ptrset_init(&w.seen, want) < 0 or types_init(&w.types) < 0:
            raise MemoryError("memwatch: cannot allocate the census tables")
        if record:
            # Room for every object the last walk found, so the array of
            # records is not copied over and over as it grows.
            w.records.cap = n + (0 if tracked_only else _untracked_hint + n // 16) + 1024
            w.records.packed = <uint64_t*>_malloc(w.records.cap * sizeof(uint64_t))
            if w.records.packed == NULL:
                raise MemoryError("memwatch: cannot allocate the HeapDiff records")
        if w.dedup_tracked:
            # Looked up before the walk: an attribute lookup during it may
            # release a name the walk has counted (see mw_type_lookup_nocache).
            roots = [_sys.modules]
            roots.extend(_sys._current_frames().values())
            for i in range(n):
                if ptrset_add(&w.seen, <uintptr_t>PyList_GET_ITEM(<PyObject*>objects, i)) < 0:
                    raise MemoryError("memwatch: cannot allocate the census tables")
        for i in range(n):
            o = PyList_GET_ITEM(<PyObject*>objects, i)
            if not tracked_only and not w.dedup_tracked and not mw_is_gc(o):
                # An extension type's tp_is_gc may deny what gc.get_objects()
                # shows (a suspended greenlet: listed, yet "no GC object", so
                # not "tracked"): whatever the flags claim, such an object
                # goes through the seen-set, or it would be counted here and
                # again where a reference reaches it.
                added = ptrset_add(&w.seen, <uintptr_t>o)
                if added < 0:
                    raise MemoryError("memwatch: cannot allocate the census tables")
                if added == 0:
                    continue       # reached (and counted) by reference already
            if _account(&w, o) < 0:
                break
            if not tracked_only:
                if _expand(&w, o) < 0 or _drain(&w) < 0:
                    break
        if w.dedup_tracked and not w.error:
            # Frozen objects are live but absent from gc.get_objects(): reach
            # them from what keeps a program alive, the modules and the thread
            # stacks (fetched before the walk: see frozen_roots).  The root
            # containers are visited through, not counted (their items are
            # visited, they themselves are not).
            for root in roots:
                if _visit(<PyObject*>root, &w) != 0 or _drain(&w) < 0:
                    break
            roots = None
        if not tracked_only and not w.error:
            _untracked_hint = w.seen.used - (n if w.dedup_tracked else 0)
        if w.error == ERR_NOMEM:
            raise MemoryError("memwatch: out of memory during the heap census "
                              "(the census needs about 24 bytes per object)")
        if w.error == ERR_PYTHON:
            raise MemoryError("memwatch: could not queue an object for sizing")

        if keep_objects:
            # At once, before anything that looks an attribute up (the names
            # below): a lookup may fill a type-cache slot, releasing the name
            # it evicts, and a str counted above may have had no other owner.
            kept = [<object><PyObject*>rec_addr(&w.records, i)
                    for i in range(<Py_ssize_t>w.records.size)]
        result = RawCensus.__new__(RawCensus)
        if keep_objects:
            result.objects = kept
            kept = None
        result.overhead_bytes = (_walk_overhead(&w) + n * sizeof(PyObject*)
                                 + w.records.cap * rec_width(&w.records))
        # Names are computed while every type is still pinned by the walk.
        names = []
        for ti in range(w.types.n):
            names.append(_type_name(w.types.entries[ti].tp))
        result._set_names(names)
        del names
        # From here on Python code may run (user __sizeof__ methods): the GC
        # state goes back to what it was first, so another thread that runs
        # meanwhile sees its own state (its gc.disable() is never undone, a
        # fork() gives a child with the GC as the program set it).  What is
        # still to be sized is held by strong references in w.deferred.
        held = False
        mw_gc_release(was_enabled)
        _finish_deferred(&w)
        del deferred, deferred_ti
        objects = None
        w.deferred = NULL
        w.deferred_ti = NULL
        result.tracked_only = tracked_only
        result.total_count = w.total_count
        result.total_size = w.total_size
        result.sizeof_errors = w.sizeof_errors
        result.ntypes = w.types.n
        # Hand the C arrays over to the result.
        result.entries = w.types.entries
        w.types.entries = NULL
        if record:
            if w.records.wide:
                _sort_wide(w.records.items, w.records.size)
            else:
                _sort_packed(w.records.packed, w.records.size)
            # Give back the slack of the presized buffer: an open HeapDiff
            # holds exactly 8 (or 16) bytes per object.
            if w.records.size and w.records.cap > w.records.size:
                shrunk = _realloc(w.records.items if w.records.wide else <void*>w.records.packed,
                                  w.records.size * rec_width(&w.records))
                if shrunk != NULL:
                    if w.records.wide:
                        w.records.items = <Record*>shrunk
                    else:
                        w.records.packed = <uint64_t*>shrunk
                    w.records.cap = w.records.size
            result.recs = w.records
            result.recorded = True
            memset(&w.records, 0, sizeof(RecordBuf))
        result.elapsed_ns = _time.perf_counter_ns() - t0
        return result
    finally:
        _walk_free(&w)
        if held:
            mw_gc_release(was_enabled)
        mw_ndarray_clear()


# --------------------------------------------------------------------------
# Identity diff (HeapDiff)
# --------------------------------------------------------------------------

DEF RADIX_BITS = 9                   # 512 buckets: scatter writes stay within the TLB's reach
DEF RADIX_SIZE = 1 << RADIX_BITS
DEF RADIX_MAX_PASSES = 5             # 5 * 9 = 45: the packed address bits


cdef int _sort_packed(uint64_t* keys, size_t n) except -1:
    """LSD radix sort of packed records by address, 9 bits a pass: the 45
    address bits in 5 passes, with 512 write streams (4096 thrashed the TLB
    past a few million objects; 256 needed a sixth pass).

    All digit histograms are built in one read pass, and a digit that is the
    same for every record (the high bits) costs nothing.  The type index in
    the low bits needs no pass: addresses are unique."""
    cdef size_t i, total, c
    cdef int p, npasses = 0
    cdef int shifts[RADIX_MAX_PASSES]
    cdef size_t* counts
    cdef size_t* hist
    cdef uint64_t* tmp
    cdef uint64_t* src
    cdef uint64_t* dst
    cdef uint64_t* swap
    cdef uint64_t key
    cdef uint32_t digit
    if n < 2:
        return 0
    counts = <size_t*>_calloc(RADIX_MAX_PASSES * RADIX_SIZE, sizeof(size_t))
    if counts == NULL:
        raise MemoryError("memwatch: cannot allocate the HeapDiff sort buffer")
    for i in range(n):
        key = keys[i] >> PACK_TIDX_BITS
        for p in range(RADIX_MAX_PASSES):
            counts[p * RADIX_SIZE + ((key >> (p * RADIX_BITS)) & (RADIX_SIZE - 1))] += 1
    for p in range(RADIX_MAX_PASSES):
        hist = counts + p * RADIX_SIZE
        for digit in range(RADIX_SIZE):
            if hist[digit] == n:
                break          # one digit value for all: this pass is a no-op
        else:
            shifts[npasses] = p
            npasses += 1
    if npasses == 0:
        _free(counts)
        return 0
    tmp = <uint64_t*>_malloc(n * sizeof(uint64_t))
    if tmp == NULL:
        _free(counts)
        raise MemoryError("memwatch: cannot allocate the HeapDiff sort buffer")
    src = keys
    dst = tmp
    for i in range(<size_t>npasses):
        p = shifts[i]
        hist = counts + p * RADIX_SIZE
        total = 0
        for digit in range(RADIX_SIZE):
            c = hist[digit]
            hist[digit] = total
            total += c
        for c in range(n):
            digit = ((src[c] >> PACK_TIDX_BITS) >> (p * RADIX_BITS)) & (RADIX_SIZE - 1)
            dst[hist[digit]] = src[c]
            hist[digit] += 1
        swap = src
        src = dst
        dst = swap
    if src != keys:
        memcpy(keys, src, n * sizeof(uint64_t))
    _free(tmp)
    _free(counts)
    return 0


cdef int _cmp_record(const void* a, const void* b) noexcept nogil:
    cdef uintptr_t x = (<const Record*>a).addr
    cdef uintptr_t y = (<const Record*>b).addr
    return -1 if x < y else (1 if x > y else 0)


cdef int _sort_wide(Record* recs, size_t n) except -1:
    """16-byte records (rare: a huge number of types, or very high
    addresses): a plain comparison sort is good enough."""
    qsort(recs, n, sizeof(Record), _cmp_record)
    return 0


cdef bint _same_name(RawCensus a, uint32_t i, RawCensus b, uint32_t j):
    cdef size_t la = a.name_off[i + 1] - a.name_off[i]
    cdef size_t lb = b.name_off[j + 1] - b.name_off[j]
    return la == lb and memcmp(a.name_buf + a.name_off[i], b.name_buf + b.name_off[j], la) == 0


def identity_diff(RawCensus before, RawCensus after):
    """Compare two recorded censuses object by object.

    An object is the same in both when its address and its type are the same
    (its type: the same type object, still carrying the same name).  A reused
    address with a different type counts as one freed and one allocated; a
    reused address with the same type cannot be told from a survivor.

    :returns: ``(freed, allocated)``: two dicts ``{type name: count}``.
    """
    cdef size_t i = 0, j = 0
    cdef RecordBuf* b = &before.recs
    cdef RecordBuf* a = &after.recs
    cdef size_t nb = b.size, na = a.size
    cdef uintptr_t ba, aa
    cdef uint32_t bt, at
    cdef uint64_t* freed
    cdef uint64_t* alloc
    cdef long* b2a
    cdef uint32_t ti, tj
    if not (before.recorded and after.recorded):
        raise ValueError("identity_diff needs censuses taken with record=True "
                         "(and not yet released)")
    freed = <uint64_t*>_calloc(before.ntypes + 1, sizeof(uint64_t))
    alloc = <uint64_t*>_calloc(after.ntypes + 1, sizeof(uint64_t))
    b2a = <long*>_malloc((before.ntypes + 1) * sizeof(long))
    if freed == NULL or alloc == NULL or b2a == NULL:
        _free(freed)
        _free(alloc)
        _free(b2a)
        raise MemoryError("memwatch: cannot allocate the HeapDiff tables")
    try:
        # Which after-type is each before-type (same address and same name)?
        after_index = {}
        for tj in range(after.ntypes):
            after_index[after.entries[tj].tp] = tj
        for ti in range(before.ntypes):
            tj_obj = after_index.get(before.entries[ti].tp)
            if tj_obj is not None and _same_name(before, ti, after, <uint32_t>tj_obj):
                b2a[ti] = tj_obj
            else:
                b2a[ti] = -1
        while i < nb and j < na:
            ba = rec_addr(b, i)
            aa = rec_addr(a, j)
            if ba < aa:
                freed[rec_tidx(b, i)] += 1
                i += 1
            elif ba > aa:
                alloc[rec_tidx(a, j)] += 1
                j += 1
            else:
                bt = rec_tidx(b, i)
                at = rec_tidx(a, j)
                if b2a[bt] != <long>at:
                    freed[bt] += 1
                    alloc[at] += 1
                i += 1
                j += 1
        while i < nb:
            freed[rec_tidx(b, i)] += 1
            i += 1
        while j < na:
            alloc[rec_tidx(a, j)] += 1
            j += 1
        freed_by_name = {}
        alloc_by_name = {}
        for ti in range(before.ntypes):
            if freed[ti]:
                name = before._name(ti)
                freed_by_name[name] = freed_by_name.get(name, 0) + freed[ti]
        for tj in range(after.ntypes):
            if alloc[tj]:
                name = after._name(tj)
                alloc_by_name[name] = alloc_by_name.get(name, 0) + alloc[tj]
        return freed_by_name, alloc_by_name
    finally:
        _free(freed)
        _free(alloc)
        _free(b2a)


def release_records(RawCensus census):
    """Free a census's identity records early (HeapDiff.end() is done with them)."""
    records_free(&census.recs)
    census.recorded = False


# --------------------------------------------------------------------------
# Self-check and test harness
# --------------------------------------------------------------------------

def inline_size(obj):
    """Test harness: the size the walk computes for ``obj`` without calling
    ``sys.getsizeof`` (``None`` where the walk would defer to it)."""
    cdef PyCFunction fn = NULL
    cdef int kind = mw_classify_sizeof(mw_type(<PyObject*>obj), _SIZEOF_NAME, _OBJECT_SIZEOF, &fn)
    if kind == MW_SIZEOF_OBJECT:
        return mw_object_sizeof(<PyObject*>obj) + mw_presize(<PyObject*>obj)
    if kind == MW_SIZEOF_CFUNC and fn == _LIST_SIZEOF:
        return mw_list_sizeof(<PyObject*>obj) + mw_presize(<PyObject*>obj)
    if kind == MW_SIZEOF_CFUNC:
        return mw_call_cfunc(fn, <PyObject*>obj) + mw_presize(<PyObject*>obj)
    return None


cdef int _cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef unsigned long long x = (<const unsigned long long*>a)[0]
    cdef unsigned long long y = (<const unsigned long long*>b)[0]
    return -1 if x < y else (1 if x > y else 0)


def sorted_addresses(list objects not None):
    """The addresses of ``objects``, sorted, as an ``array('Q')``: what
    :func:`new_objects` compares against.

    ``array('Q', sorted(map(id, objects)))`` makes an int per object (60-90 ms
    for the 250k objects of a pytest session); this fills the array's buffer
    in C and sorts it with qsort, and the objects are no longer needed after
    it returns (the plugin drops them before the measured call)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(<PyObject*>objects)
    out = _array("Q", bytes(8 * n))
    cdef unsigned long long[::1] view = out
    for i in range(n):
        view[i] = <unsigned long long><uintptr_t>PyList_GET_ITEM(<PyObject*>objects, i)
    if n > 1:
        qsort(&view[0], <size_t>n, sizeof(unsigned long long), _cmp_u64)
    return out


cdef extern from "Python.h":
    PyObject* PyTuple_New(Py_ssize_t n)
    void Py_DECREF(PyObject* o)
    void PyErr_Clear()

# CPython keeps freed tuples for reuse, up to 2000 of each size: sizes 1 to
# 19 up to 3.12, 1 to 20 from 3.13 (PyTuple_MAXSAVESIZE 20 and
# PyTuple_MAXFREELIST / Py_tuple_MAXFREELIST 2000 on 3.10 to 3.15).
DEF _TUPLE_SIZES = 21
DEF _TUPLES_KEPT = 2000


def fill_tuple_free_lists():
    """Leave CPython's tuple free lists full: make 2000 tuples of each size
    from 1 to 20 at once, then drop them all.

    The pytest plugin's first pass compares ``sys.getallocatedblocks()``
    between calls, and a free-listed tuple is an allocated block: a test
    that makes its tuples at one size and frees them at another (a tuple
    resized while built) moves a few dozen blocks a call into a free list
    that fills over some 80 calls, which reads as growth (packaging's
    ``test_requirements``: +25 blocks a call, 46% of its tests sent on to the
    full-collection pass).  Full before each reading, the lists move no
    block, and a leaked tuple (taken from a list) is a new block again.
    About 40,000 allocations (1.2 ms): called only where growth was seen.
    The GC is held off meanwhile (no collection runs while the tuples
    exist) and restored on every path."""
    cdef PyObject** held = <PyObject**>_malloc(_TUPLES_KEPT * sizeof(PyObject*))
    cdef Py_ssize_t n, i, made
    cdef int was_enabled
    cdef bint failed = False
    if held == NULL:
        raise MemoryError("memwatch: cannot allocate room to fill the tuple free lists")
    was_enabled = mw_gc_hold()
    try:
        for n in range(1, _TUPLE_SIZES):
            made = 0
            while made < _TUPLES_KEPT:
                held[made] = PyTuple_New(n)
                if held[made] == NULL:
                    PyErr_Clear()      # replaced by the MemoryError below
                    failed = True
                    break
                made += 1
            for i in range(made):
                Py_DECREF(held[i])
            if failed:
                break
    finally:
        mw_gc_release(was_enabled)
        _free(held)
    if failed:
        raise MemoryError("memwatch: out of memory filling the tuple free lists")


def new_objects(list objects not None, types, addresses):
    """The objects of ``objects`` whose address is not in ``addresses`` (a
    sorted ``array('Q')``, see :func:`sorted_addresses`), in their order;
    only those whose type is one of ``types`` (a tuple, compared by
    identity), or of any type when ``types`` is None.

    Allocates nothing but the list it returns (and a view of the array): the
    pytest plugin calls it over every object of the heap while tracemalloc
    traces each allocation with 16 frames, where the same loop in Python
    (an ``id()`` int per object, a set of the old addresses) cost seconds.
    No Python code runs in the loop (types are compared as pointers).  The
    type test is linear in ``len(types)``: pass a few wanted types or None,
    never every type on the heap (thousands in a pytest session: 0.4 s)."""
    cdef const unsigned long long[::1] addrs = addresses
    cdef Py_ssize_t i = 0, j, lo, hi, mid
    cdef Py_ssize_t nt, na = addrs.shape[0]
    cdef PyObject* o
    cdef PyObject* tp
    cdef unsigned long long a
    cdef bint wanted
    cdef bint any_type = types is None
    cdef tuple wanted_types = () if any_type else types
    cdef list out = []
    nt = len(wanted_types)
    while i < PyList_GET_SIZE(<PyObject*>objects):
        o = PyList_GET_ITEM(<PyObject*>objects, i)
        i += 1
        if not any_type:
            tp = <PyObject*>(<PyTypeObject*>o.ob_type)
            wanted = False
            for j in range(nt):
                if <PyObject*>wanted_types[j] == tp:
                    wanted = True
                    break
            if not wanted:
                continue
        a = <unsigned long long><uintptr_t>o
        lo = 0
        hi = na
        while lo < hi:
            mid = (lo + hi) >> 1
            if addrs[mid] < a:
                lo = mid + 1
            else:
                hi = mid
        if lo < na and addrs[lo] == a:
            continue
        out.append(<object>o)
    return out


cdef extern from "_blocks.h":
    Py_ssize_t PY_SSIZE_T_MIN
    int mw_blocks_start()
    Py_ssize_t mw_blocks_read()
    int mw_blocks_stop()


def start_block_counter():
    """Start counting the blocks Python's allocators hand out and take
    back (the MEM and OBJ domains, through PEP 445 hooks that only count).

    Returns True if the hooks went in now, False if they were still in
    place from an earlier start.  ``live_blocks()`` reads the count in
    nanoseconds, where ``sys.getallocatedblocks()`` walks every pymalloc
    pool (0.17 ms on a 64k-test pytest session's heap).  Call
    :func:`stop_block_counter` when done: every allocation meanwhile pays
    an extra indirect call."""
    return bool(mw_blocks_start())


def live_blocks():
    """Blocks allocated less blocks freed since the counter started (only
    the difference between two readings means anything; it goes below zero
    when older objects are freed), or None when the counter is not running:
    never started, stopped, or its hooks are no longer called (another tool
    restored an allocator from before them).  Start it again then."""
    cdef Py_ssize_t n = mw_blocks_read()
    if n == PY_SSIZE_T_MIN:
        return None
    return n


def stop_block_counter():
    """Take the counting hooks out.  Returns False when another tool's hooks
    are on top of them: they then stay chained (still counting, nothing
    else), since taking them out would drop the other tool's too."""
    return bool(mw_blocks_stop())


cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int mw_malloc_trim(void) { return malloc_trim(0); }
    #define MW_HAVE_MALLOC_TRIM 1
    #else
    static int mw_malloc_trim(void) { return 0; }
    #define MW_HAVE_MALLOC_TRIM 0
    #endif
    """
    int mw_malloc_trim() nogil
    int MW_HAVE_MALLOC_TRIM


def trim_free_memory():
    """Give glibc's free heap memory back to the OS (``malloc_trim(0)``), as
    after a walk has freed its bookkeeping.  Returns False where there is no
    such call (musl, macOS, Windows: nothing done).  In C rather than through
    ctypes: ctypes is ~340 objects that every full collection of the watched
    program would traverse."""
    if not MW_HAVE_MALLOC_TRIM:
        return False
    with nogil:
        mw_malloc_trim()
    return True


def gc_head_size():
    """Bytes of the GC pre-header this build assumes (``sizeof(PyGC_Head)``)."""
    return MW_GC_HEAD_SIZE


def _self_check():
    """Verify the inline size paths against sys.getsizeof on sample objects.

    Returns the list of mismatches; if there are any, the census switches to
    the exact (slower) path of calling sys.getsizeof for every object."""
    global _slow_sizes

    class _Plain:
        pass

    class _Slotted:
        __slots__ = ("a",)

    class _ListSub(list):
        pass

    grown = []
    grown.extend(range(37))
    samples = [object(), [], [1, 2, 3], grown, _ListSub([1]), (), (1, 2), {}, {"a": 1}, "", "abc", "\u20ac" * 9,
               b"xy", 0, 1, 2 ** 100, -(2 ** 70), 1.5, 1j, set(), frozenset([1]), bytearray(5),
               _Plain(), _Slotted(), _Plain, int, type, len, _self_check.__code__, range(3),
               True, None, Ellipsis]
    bad = []
    for obj in samples:
        size = inline_size(obj)
        if size is not None and size != _sys.getsizeof(obj):
            bad.append((type(obj).__name__, size, _sys.getsizeof(obj)))
    _slow_sizes = bool(bad)
    return bad


_SELF_CHECK_MISMATCHES = _self_check()
