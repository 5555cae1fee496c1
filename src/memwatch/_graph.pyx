# cython: language_level=3
"""memwatch._graph: the heap as a graph, in C.

One discovery pass finds exactly the objects the census counts (the objects
``gc.get_objects()`` returns, plus everything ``tp_traverse``, dict keys and
code objects lead to), gives each a dense index, and counts its references.
Two consumers then re-enumerate each object's references, in C:

* :func:`write_heapsnapshot` streams a V8 ``.heapsnapshot`` (nodes, edges,
  strings) to a file descriptor, through a fixed-size buffer;
* :func:`shortest_paths` runs an iterative breadth-first walk from the roots
  and returns, for each target, the chain of objects that leads to it.

Roots are what keeps a Python heap alive: the modules in ``sys.modules``, the
frames running in each thread, and every object with references from outside
the graph (C code, the interpreter, running frames' stacks): those are found
as the GC finds them, ``refcount - references from the graph > 0``.

Safety, as in ``_core``: the GC is disabled for the whole call and restored on
every exit path; every object in the graph is pinned (a strong reference, kept
in C memory) from the moment it is discovered until the end, so running
Python code (``sys.getsizeof`` of a class with a Python ``__sizeof__``,
``type_name``) can never free one under us; bookkeeping lives in ``PyMem_Raw``
memory; the work list is the node array itself (no recursion).  If Python code
run between the passes changes an object's references, its edge list is kept
at the length announced in the node array (extra references are dropped,
missing ones are replaced by a weak self-reference named ``(stale)``).
"""

cimport cython
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uintptr_t, uint32_t, uint64_t, int64_t
from libc.string cimport memset, memcpy, strlen, memcmp
from libc.errno cimport errno, EINTR
from posix.unistd cimport write as _c_write

import gc as _gc
import os as _os
import sys as _sys
import time as _time

from memwatch import _core

cdef extern from "Python.h":
    ctypedef int (*visitproc)(PyObject*, void*)
    ctypedef PyObject* (*PyCFunction)(PyObject*, PyObject*)
    ctypedef unsigned int Py_UCS4
    int PyGC_Enable()
    int PyGC_Disable()
    PyObject* PyList_GET_ITEM(PyObject*, Py_ssize_t)
    Py_ssize_t PyList_GET_SIZE(PyObject*)
    PyObject* PyTuple_GET_ITEM(PyObject*, Py_ssize_t)
    Py_ssize_t PyTuple_GET_SIZE(PyObject*)
    int PyDict_Next(PyObject*, Py_ssize_t*, PyObject**, PyObject**)
    int PyDict_CheckExact(PyObject*)
    PyObject* PyModule_GetDict(PyObject*)
    int PyType_IsSubtype(PyTypeObject*, PyTypeObject*)
    int PyUnicode_Check(PyObject*)
    unsigned int PyUnicode_CHECK_INTERNED(PyObject*)
    void _incref "Py_INCREF"(PyObject*)
    void _decref "Py_DECREF"(PyObject*)

cdef extern from "_ndarray.h":
    void mw_ndarray_lookup()
    void mw_ndarray_clear()
    int mw_is_ndarray(PyObject*)
    int mw_visit_ndarray(PyObject*, visitproc, void*)
    int mw_ndarray_role(PyObject*, PyObject*)
    Py_ssize_t mw_ndarray_leading(PyObject*)

cdef extern from "_compat.h":
    Py_ssize_t MW_ABSURD_SIZE   # 2**48: a bigger size of one object is a lie
    Py_ssize_t mw_presize(PyObject*)
    int mw_is_gc(PyObject*)
    int mw_traverse(PyObject*, visitproc, void*)
    int mw_visit_code(PyObject*, visitproc, void*)
    int mw_visit_dict_keys(PyObject*, visitproc, void*)
    int mw_refuse_unsupported_build() except -1
    int mw_pretend_free_threaded
    int mw_dict_traverse(PyObject*, visitproc, void*)

cdef extern from "Python.h":
    Py_ssize_t PyDict_GET_SIZE(PyObject*)
    int mw_classify_sizeof(PyTypeObject*, object name, PyCFunction object_sizeof, PyCFunction* out)
    Py_ssize_t mw_object_sizeof(PyObject*)
    PyCFunction mw_method_cfunc(object descr)
    Py_ssize_t mw_sizeof_via(PyCFunction fn, PyObject* o)
    Py_ssize_t mw_basicsize(PyObject*)
    PyTypeObject* mw_type(PyObject*)
    int mw_is_code(PyObject*)
    int mw_is_dict(PyObject*)
    int MW_SIZEOF_OBJECT
    int MW_SIZEOF_CFUNC
    int MW_SIZEOF_DEFERRED
    PyObject* mw_existing_dict(PyObject*)
    const char* mw_member_name(PyTypeObject*, Py_ssize_t, Py_ssize_t*)
    PyObject* mw_member_value(PyObject*, Py_ssize_t)
    PyTypeObject* mw_tp_base(PyTypeObject*)
    PyObject* mw_tp_dict(PyTypeObject*)
    PyObject* mw_tp_mro(PyTypeObject*)
    PyObject* mw_tp_bases(PyTypeObject*)
    int mw_is_heaptype(PyTypeObject*)
    PyObject* mw_ht_name(PyTypeObject*)
    PyObject* mw_ht_qualname(PyTypeObject*)
    PyObject* mw_ht_slots(PyTypeObject*)
    int mw_is_function(PyObject*)
    PyObject* mw_func_code(PyObject*)
    PyObject* mw_func_globals(PyObject*)
    PyObject* mw_func_defaults(PyObject*)
    PyObject* mw_func_kwdefaults(PyObject*)
    PyObject* mw_func_closure(PyObject*)
    PyObject* mw_func_name(PyObject*)
    PyObject* mw_func_qualname(PyObject*)
    PyObject* mw_func_annotations(PyObject*)
    int mw_is_cell(PyObject*)
    PyObject* mw_cell_contents(PyObject*)
    int mw_is_module(PyObject*)
    int mw_is_type(PyObject*)
    int mw_is_list(PyObject*)
    int mw_is_tuple(PyObject*)
    int mw_is_str(PyObject*)
    int mw_is_anyset(PyObject*)
    int mw_is_long(PyObject*)
    Py_ssize_t mw_refcnt(PyObject*)
    int mw_str_kind(PyObject*)
    const void* mw_str_data(PyObject*)
    Py_ssize_t mw_str_len(PyObject*)
    Py_UCS4 mw_str_char(int, const void*, Py_ssize_t)
    int mw_str_interned(PyObject*)
    long long mw_small_index(PyObject*)
    PyObject* mw_inline_attr_name(PyObject*, PyObject*)


# --------------------------------------------------------------------------
# Allocation (with a failure injector for the tests)
# --------------------------------------------------------------------------

from memwatch._alloc cimport (_malloc, _calloc, _realloc, _free, _malloc_array, _realloc_array,
                              mw_fail_allocation_after, mw_gc_hold, mw_gc_release,
                              mw_gc_after_fork_child)


def _after_fork_in_child():
    """As in _core: a child forked while a walk had the GC off gets it back."""
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


cdef inline size_t _hash(uint64_t key, int shift) noexcept nogil:
    return <size_t>(((key >> 4) * _FIB) >> shift)


cdef inline size_t _pow2_at_least(size_t n) noexcept nogil:
    cdef size_t p = 64
    while p < n:
        p <<= 1
    return p


cdef inline int _log2(size_t p) noexcept nogil:
    cdef int k = 0
    while p > 1:
        p >>= 1
        k += 1
    return k


# A small map uint64 -> uint32 (types, C-string names).
cdef struct KV:
    uint64_t* keys
    uint32_t* vals
    size_t cap
    size_t used
    int shift


cdef int kv_init(KV* kv, size_t want) noexcept nogil:
    kv.cap = _pow2_at_least(want)
    kv.shift = 64 - _log2(kv.cap)
    kv.used = 0
    kv.keys = <uint64_t*>_calloc(kv.cap, sizeof(uint64_t))
    kv.vals = <uint32_t*>_malloc(kv.cap * sizeof(uint32_t))
    if kv.keys == NULL or kv.vals == NULL:
        return -1
    return 0


cdef void kv_free(KV* kv) noexcept nogil:
    _free(kv.keys)
    _free(kv.vals)
    kv.keys = NULL
    kv.vals = NULL


cdef inline long kv_get(KV* kv, uint64_t key) noexcept nogil:
    cdef size_t mask = kv.cap - 1
    cdef size_t j = _hash(key, kv.shift)
    while kv.keys[j] != 0:
        if kv.keys[j] == key:
            return kv.vals[j]
        j = (j + 1) & mask
    return -1


cdef int kv_put(KV* kv, uint64_t key, uint32_t val) noexcept nogil:
    """Insert a key that is not there yet."""
    cdef KV bigger
    cdef size_t i, j, mask
    if (kv.used + 1) * 2 > kv.cap:
        if kv_init(&bigger, kv.cap * 2) < 0:
            kv_free(&bigger)
            return -1
        mask = bigger.cap - 1
        for i in range(kv.cap):
            if kv.keys[i] != 0:
                j = _hash(kv.keys[i], bigger.shift)
                while bigger.keys[j] != 0:
                    j = (j + 1) & mask
                bigger.keys[j] = kv.keys[i]
                bigger.vals[j] = kv.vals[i]
        bigger.used = kv.used
        kv_free(kv)
        kv[0] = bigger
    mask = kv.cap - 1
    j = _hash(key, kv.shift)
    while kv.keys[j] != 0:
        j = (j + 1) & mask
    kv.keys[j] = key
    kv.vals[j] = val
    kv.used += 1
    return 0


# --------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------

cdef enum:
    F_DEFERRED = 1       # size with sys.getsizeof once Python code may run
    F_EXTERNAL = 2       # referenced from outside the graph: a root
    F_NOEXPAND = 4       # a frame of the calling thread (retainers): not a path
    F_DEAD = 8           # refcount 0 (a free-listed object still pointed to,
                         # e.g. from a stale frame stack slot): counted, as the
                         # census counts it, but never pinned, touched again or
                         # handed to Python code
    F_TARGET = 16        # one of shortest_paths_many's targets

    ERR_NONE = 0
    ERR_NOMEM = 1
    ERR_IO = 2

    # V8 node types
    NT_HIDDEN = 0
    NT_ARRAY = 1
    NT_STRING = 2
    NT_OBJECT = 3
    NT_NATIVE = 8
    NT_SYNTHETIC = 9

    # V8 edge types
    ET_CONTEXT = 0
    ET_ELEMENT = 1
    ET_PROPERTY = 2
    ET_INTERNAL = 3
    ET_HIDDEN = 4
    ET_SHORTCUT = 5
    ET_WEAK = 6

    # How an edge is named
    NK_INDEX = 0         # a number
    NK_CSTR = 1          # a C string (static)
    NK_KEY = 2           # a str object (a dict key)

    # Synthetic nodes before the heap nodes
    SYN_ROOT = 0
    SYN_EXTERNAL = 1
    NSYN = 2

DEF NODE_FIELDS = 7


cdef struct Node:
    uintptr_t addr
    uint64_t size
    uint32_t tidx
    uint32_t ecount
    uint32_t aux         # discovery: references from the graph; writing: string id + 1
    uint32_t flags


cdef struct TypeEntry:
    uintptr_t tp
    int kind
    PyCFunction fn


ctypedef int (*sink_t)(Graph*, PyObject*, int, int, uintptr_t) noexcept


cdef struct Graph:
    Node* nodes
    size_t n
    size_t cap
    uint32_t* index      # slot -> node index + 1
    size_t index_cap
    int index_shift
    TypeEntry* types
    uint32_t ntypes
    uint32_t types_cap
    KV type_map
    uintptr_t last_tp
    uint32_t last_tidx
    PyObject** scratch
    size_t scratch_n
    size_t scratch_cap
    int error
    int slow_sizes
    PyObject* sizeof_name
    PyCFunction object_sizeof
    size_t cur           # the node whose references are being enumerated
    int naming           # name the references (only the writer needs names)
    # writing
    int fd
    char* buf
    size_t buf_n
    size_t buf_cap
    uint64_t bytes_written
    uint32_t budget      # edges still to write for the current node
    uint32_t ordinal
    int include_strings
    uint32_t nstatic     # strings written from the Python list
    uint32_t nstrings    # next string id
    KV cstr_map          # const char* -> string id
    uintptr_t* dyn       # dynamic strings in order: tagged pointers (1 = C string)
    size_t dyn_n
    size_t dyn_cap
    uint64_t stale_edges
    # breadth-first walk
    uint32_t* parent
    uint32_t* queue
    size_t qhead
    size_t qtail
    uintptr_t target     # one object, or 0
    PyTypeObject* target_type
    uint32_t target_idx
    size_t limit
    uint32_t* found      # (target, referrer) pairs
    size_t nfound


cdef object _SIZEOF_NAME = _sys.intern("__sizeof__")
cdef PyCFunction _OBJECT_SIZEOF = mw_method_cfunc(object.__dict__["__sizeof__"])


cdef void _graph_free(Graph* g) noexcept:
    """Free everything and release the pins (this may run finalizers)."""
    cdef size_t i
    _free(g.index)
    g.index = NULL
    _free(g.types)
    g.types = NULL
    kv_free(&g.type_map)
    kv_free(&g.cstr_map)
    _free(g.scratch)
    g.scratch = NULL
    _free(g.buf)
    g.buf = NULL
    _free(g.dyn)
    g.dyn = NULL
    _free(g.parent)
    g.parent = NULL
    _free(g.queue)
    g.queue = NULL
    _free(g.found)
    g.found = NULL
    if g.nodes != NULL:
        for i in range(g.n):
            if not (g.nodes[i].flags & F_DEAD):
                _decref(<PyObject*>g.nodes[i].addr)
        _free(g.nodes)
        g.nodes = NULL
    g.n = 0


cdef inline long _find(Graph* g, PyObject* o) noexcept nogil:
    cdef size_t mask = g.index_cap - 1
    cdef size_t j = _hash(<uint64_t><uintptr_t>o, g.index_shift)
    cdef uint32_t v
    while True:
        v = g.index[j]
        if v == 0:
            return -1
        if g.nodes[v - 1].addr == <uintptr_t>o:
            return v - 1
        j = (j + 1) & mask


cdef int _reindex(Graph* g) noexcept nogil:
    cdef size_t newcap = g.index_cap * 2
    cdef uint32_t* idx = <uint32_t*>_calloc(newcap, sizeof(uint32_t))
    cdef size_t i, j, mask = newcap - 1
    cdef int shift = g.index_shift - 1
    if idx == NULL:
        return -1
    for i in range(g.n):
        j = _hash(<uint64_t>g.nodes[i].addr, shift)
        while idx[j] != 0:
            j = (j + 1) & mask
        idx[j] = <uint32_t>(i + 1)
    _free(g.index)
    g.index = idx
    g.index_cap = newcap
    g.index_shift = shift
    return 0


cdef inline long _type_index(Graph* g, PyTypeObject* tp) noexcept:
    cdef long t
    cdef TypeEntry* grown
    cdef TypeEntry* e
    if <uintptr_t>tp == g.last_tp:
        return g.last_tidx
    t = kv_get(&g.type_map, <uint64_t><uintptr_t>tp)
    if t < 0:
        if g.ntypes == g.types_cap:
            grown = <TypeEntry*>_realloc(g.types, 2 * g.types_cap * sizeof(TypeEntry))
            if grown == NULL:
                return -1
            g.types = grown
            g.types_cap *= 2
        e = &g.types[g.ntypes]
        e.tp = <uintptr_t>tp
        if g.slow_sizes:
            e.kind = MW_SIZEOF_DEFERRED
            e.fn = NULL
        else:
            e.kind = mw_classify_sizeof(tp, <object>g.sizeof_name, g.object_sizeof, &e.fn)
        if kv_put(&g.type_map, <uint64_t><uintptr_t>tp, g.ntypes) < 0:
            return -1
        t = g.ntypes
        g.ntypes += 1
    g.last_tp = <uintptr_t>tp
    g.last_tidx = <uint32_t>t
    return t


cdef long _add(Graph* g, PyObject* o) noexcept:
    """Add o as a new node (it is not in the graph); its index, or -1."""
    cdef Node* grown
    cdef Node* nd
    cdef size_t newcap, j, mask
    cdef long t
    cdef TypeEntry* e
    cdef Py_ssize_t size
    if g.n >= 0xFFFFFFF0:
        return -1
    if g.n == g.cap:
        newcap = g.cap + g.cap // 2 + 1024
        grown = <Node*>_realloc(g.nodes, newcap * sizeof(Node))
        if grown == NULL:
            return -1
        g.nodes = grown
        g.cap = newcap
    if (g.n + 1) * 4 > g.index_cap * 3:
        if _reindex(g) < 0:
            return -1
    t = _type_index(g, mw_type(o))
    if t < 0:
        return -1
    nd = &g.nodes[g.n]
    nd.addr = <uintptr_t>o
    nd.tidx = <uint32_t>t
    nd.ecount = 0
    nd.aux = 0
    nd.flags = 0
    e = &g.types[t]
    if mw_refcnt(o) <= 0:
        # Not alive: pinning it would deallocate it a second time at the end.
        nd.size = <uint64_t>mw_basicsize(o)
        nd.flags = F_DEAD | F_NOEXPAND
    elif e.kind == MW_SIZEOF_OBJECT:
        nd.size = <uint64_t>(mw_object_sizeof(o) + mw_presize(o))
    elif e.kind == MW_SIZEOF_CFUNC:
        size = mw_sizeof_via(e.fn, o)
        if size < 0 or size >= MW_ABSURD_SIZE:
            size = mw_basicsize(o)
        else:
            size += mw_presize(o)
        nd.size = <uint64_t>size
    else:
        nd.size = 0
        nd.flags = F_DEFERRED
    if not (nd.flags & F_DEAD):
        _incref(o)             # pinned until _graph_free
    mask = g.index_cap - 1
    j = _hash(<uint64_t><uintptr_t>o, g.index_shift)
    while g.index[j] != 0:
        j = (j + 1) & mask
    g.index[j] = <uint32_t>(g.n + 1)
    g.n += 1
    return <long>(g.n - 1)


# --------------------------------------------------------------------------
# Enumerating (and naming) one object's references
# --------------------------------------------------------------------------

cdef int _collect(PyObject* o, void* arg) noexcept:
    cdef Graph* g = <Graph*>arg
    cdef size_t newcap
    cdef PyObject** grown
    if o == NULL:
        return 0
    if g.scratch_n == g.scratch_cap:
        newcap = g.scratch_cap * 2 if g.scratch_cap else 256
        grown = <PyObject**>_realloc(g.scratch, newcap * sizeof(PyObject*))
        if grown == NULL:
            g.error = ERR_NOMEM
            return 1
        g.scratch = grown
        g.scratch_cap = newcap
    g.scratch[g.scratch_n] = o
    g.scratch_n += 1
    return 0


cdef const char* _S_KEY = "(key)"
cdef const char* _S_VALUE = "(value)"
cdef const char* _S_DICT = "__dict__"
cdef const char* _S_CLASS = "__class__"
cdef const char* _S_MRO = "__mro__"
cdef const char* _S_BASES = "__bases__"
cdef const char* _S_BASE = "__base__"
cdef const char* _S_NAME = "__name__"
cdef const char* _S_QUALNAME = "__qualname__"
cdef const char* _S_SLOTS = "__slots__"
cdef const char* _S_CODE = "__code__"
cdef const char* _S_GLOBALS = "__globals__"
cdef const char* _S_DEFAULTS = "__defaults__"
cdef const char* _S_KWDEFAULTS = "__kwdefaults__"
cdef const char* _S_CLOSURE = "__closure__"
cdef const char* _S_ANNOTATIONS = "__annotations__"
cdef const char* _S_CELL = "cell_contents"
cdef const char* _S_STRKEY = "(str key)"
cdef const char* _S_STALE = "(stale)"
cdef const char* _S_EXTERNAL = "(external references)"


cdef const char* _S_BASE_ARRAY = "base"
cdef const char* _S_DTYPE = "dtype"


cdef int _label(PyObject* o, PyObject* r, Py_ssize_t ordinal, int* etype, uintptr_t* name) noexcept:
    """Name the reference o -> r (r found by tp_traverse); returns the name kind."""
    cdef PyTypeObject* tp = mw_type(o)
    cdef PyTypeObject* t
    cdef Py_ssize_t i, off
    cdef const char* mname
    cdef PyObject* k
    etype[0] = ET_INTERNAL
    if mw_is_heaptype(tp) and r == <PyObject*>tp:
        name[0] = <uintptr_t>_S_CLASS
        return NK_CSTR
    if r == mw_existing_dict(o):
        name[0] = <uintptr_t>_S_DICT
        return NK_CSTR
    if mw_is_anyset(o):
        etype[0] = ET_ELEMENT
        name[0] = <uintptr_t>ordinal
        return NK_INDEX
    if mw_is_module(o):
        if r == PyModule_GetDict(o):
            name[0] = <uintptr_t>_S_DICT
            return NK_CSTR
    elif mw_is_cell(o):
        if r == mw_cell_contents(o):
            name[0] = <uintptr_t>_S_CELL
            return NK_CSTR
    elif mw_is_function(o):
        if r == mw_func_code(o):
            name[0] = <uintptr_t>_S_CODE
            return NK_CSTR
        if r == mw_func_globals(o):
            name[0] = <uintptr_t>_S_GLOBALS
            return NK_CSTR
        if r == mw_func_defaults(o):
            name[0] = <uintptr_t>_S_DEFAULTS
            return NK_CSTR
        if r == mw_func_kwdefaults(o):
            name[0] = <uintptr_t>_S_KWDEFAULTS
            return NK_CSTR
        if r == mw_func_closure(o):
            name[0] = <uintptr_t>_S_CLOSURE
            return NK_CSTR
        if r == mw_func_name(o):
            name[0] = <uintptr_t>_S_NAME
            return NK_CSTR
        if r == mw_func_qualname(o):
            name[0] = <uintptr_t>_S_QUALNAME
            return NK_CSTR
        if r == mw_func_annotations(o):
            name[0] = <uintptr_t>_S_ANNOTATIONS
            return NK_CSTR
    elif mw_is_type(o):
        t = <PyTypeObject*>o
        if r == mw_tp_dict(t):
            name[0] = <uintptr_t>_S_DICT
            return NK_CSTR
        if r == mw_tp_mro(t):
            name[0] = <uintptr_t>_S_MRO
            return NK_CSTR
        if r == mw_tp_bases(t):
            name[0] = <uintptr_t>_S_BASES
            return NK_CSTR
        if r == <PyObject*>mw_tp_base(t):
            name[0] = <uintptr_t>_S_BASE
            return NK_CSTR
        if mw_is_heaptype(t):
            if r == mw_ht_name(t):
                name[0] = <uintptr_t>_S_NAME
                return NK_CSTR
            if r == mw_ht_qualname(t):
                name[0] = <uintptr_t>_S_QUALNAME
                return NK_CSTR
            if r == mw_ht_slots(t):
                name[0] = <uintptr_t>_S_SLOTS
                return NK_CSTR
    # __slots__ and C members holding objects, on the type and its bases.
    t = tp
    while t != NULL:
        i = 0
        while True:
            mname = mw_member_name(t, i, &off)
            if mname == NULL:
                break
            if off >= 0 and mw_member_value(o, off) == r:
                etype[0] = ET_PROPERTY
                name[0] = <uintptr_t>mname
                return NK_CSTR
            i += 1
        t = mw_tp_base(t)
    if mw_is_ndarray(o):
        i = mw_ndarray_role(o, r)
        if i == 1:
            name[0] = <uintptr_t>_S_BASE_ARRAY
            return NK_CSTR
        if i == 2:
            name[0] = <uintptr_t>_S_DTYPE
            return NK_CSTR
        # An object array's item: its position after base and dtype.
        etype[0] = ET_ELEMENT
        name[0] = <uintptr_t>(ordinal - mw_ndarray_leading(o))
        return NK_INDEX
    if _inline_names_ok:
        k = mw_inline_attr_name(o, r)
        if k != NULL:
            etype[0] = ET_PROPERTY
            name[0] = <uintptr_t>k
            return NK_KEY
    etype[0] = ET_HIDDEN
    name[0] = <uintptr_t>ordinal
    return NK_INDEX


cdef int _edges(Graph* g, PyObject* o, sink_t sink) noexcept:
    """Call sink for every reference of o, named; nonzero to stop."""
    cdef Py_ssize_t i, n, pos
    cdef PyObject* k
    cdef PyObject* v
    cdef long long idx
    cdef size_t start, j, mid, dt
    cdef int etype, nk
    cdef uintptr_t name
    if mw_is_dict(o) and PyDict_CheckExact(o):
        pos = 0
        while PyDict_Next(o, &pos, &k, &v):
            if sink(g, k, ET_INTERNAL, NK_CSTR, <uintptr_t>_S_KEY):
                return 1
            if mw_is_str(k):
                nk = sink(g, v, ET_PROPERTY, NK_KEY, <uintptr_t>k)
            elif mw_is_long(k) and mw_small_index(k) >= 0:
                nk = sink(g, v, ET_ELEMENT, NK_INDEX, <uintptr_t>mw_small_index(k))
            else:
                nk = sink(g, v, ET_INTERNAL, NK_CSTR, <uintptr_t>_S_VALUE)
            if nk:
                return 1
        return 0
    if mw_is_list(o):
        n = PyList_GET_SIZE(o)
        for i in range(n):
            v = PyList_GET_ITEM(o, i)
            if v != NULL and sink(g, v, ET_ELEMENT, NK_INDEX, <uintptr_t>i):
                return 1
        return 0
    if mw_is_tuple(o):
        n = PyTuple_GET_SIZE(o)
        for i in range(n):
            v = PyTuple_GET_ITEM(o, i)
            if v != NULL and sink(g, v, ET_ELEMENT, NK_INDEX, <uintptr_t>i):
                return 1
        return 0
    # Everything else: what tp_traverse (plus dict keys, code constants)
    # reports, named where the layout tells.  The scratch buffer is shared,
    # so it is consumed before any sink runs.
    start = g.scratch_n
    if mw_traverse(o, _collect, g) != 0 or g.error:
        g.scratch_n = start
        return 1
    if mw_is_dict(o):
        # A dict subclass.  Its tp_traverse ends with dict_traverse, which
        # reported the values (and the keys unless all are str): each entry
        # must become exactly one edge, or the reference accounting that finds
        # external roots counts it twice.  Run dict_traverse alone after the
        # rest; if what it reports is exactly the tail of the list, replace
        # that tail by the entries, keys and values, which _label names.
        mid = g.scratch_n
        if mw_dict_traverse(o, _collect, g) != 0 or g.error:
            g.scratch_n = start
            return 1
        dt = g.scratch_n - mid
        if dt <= mid - start and memcmp(g.scratch + mid - dt, g.scratch + mid,
                                        dt * sizeof(PyObject*)) == 0:
            g.scratch_n = mid - dt
            pos = 0
            while PyDict_Next(o, &pos, &k, &v):
                if _collect(k, g) or _collect(v, g):
                    g.scratch_n = start
                    return 1
        else:
            # An unusual subclass (dict_traverse not last): keep what its
            # traverse reported, unnamed, and add only the keys it left out.
            g.scratch_n = mid
            if dt == <size_t>PyDict_GET_SIZE(o):
                if mw_visit_dict_keys(o, _collect, g) != 0 or g.error:
                    g.scratch_n = start
                    return 1
    elif mw_is_code(o):
        if mw_visit_code(o, _collect, g) != 0 or g.error:
            g.scratch_n = start
            return 1
    elif mw_is_ndarray(o):
        # base, dtype, object items (see _ndarray.h): what the census follows.
        if mw_visit_ndarray(o, _collect, g) != 0 or g.error:
            g.scratch_n = start
            return 1
    n = <Py_ssize_t>(g.scratch_n - start)
    for i in range(n):
        v = g.scratch[start + i]
        if g.naming:
            nk = _label(o, v, i, &etype, &name)
        else:
            etype = ET_HIDDEN
            nk = NK_INDEX
            name = <uintptr_t>i
        if sink(g, v, etype, nk, name):
            g.scratch_n = start
            return 1
    g.scratch_n = start
    return 0


# --------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------

cdef int _sink_discover(Graph* g, PyObject* child, int etype, int nk, uintptr_t name) noexcept:
    cdef long c
    if mw_refcnt(child) <= 0:
        # A stale pointer to a freed (free-listed) object: not alive, not a
        # node; its type slot may not even hold a type, so nothing reads it.
        return 0
    c = _find(g, child)
    if c < 0:
        c = _add(g, child)
        if c < 0:
            g.error = ERR_NOMEM
            return 1
    g.nodes[c].aux += 1
    g.nodes[g.cur].ecount += 1
    return 0


cdef int _discover(Graph* g, list objects, list extra_roots) except -1:
    """Find every object (census semantics); pin, size and count references."""
    cdef Py_ssize_t i, n = len(objects)
    cdef PyObject* o
    cdef size_t want = _pow2_at_least(<size_t>(n * 3 + 4096))
    g.index_cap = want
    g.index_shift = 64 - _log2(want)
    g.index = <uint32_t*>_calloc(want, sizeof(uint32_t))
    g.cap = <size_t>(n + n // 2 + 4096)
    g.nodes = <Node*>_malloc(g.cap * sizeof(Node))
    g.types_cap = 256
    g.types = <TypeEntry*>_malloc(g.types_cap * sizeof(TypeEntry))
    if (g.index == NULL or g.nodes == NULL or g.types == NULL
            or kv_init(&g.type_map, 512) < 0 or kv_init(&g.cstr_map, 256) < 0):
        raise MemoryError("memwatch: cannot allocate the heap graph")
    for i in range(n):
        o = PyList_GET_ITEM(<PyObject*>objects, i)
        if _find(g, o) < 0 and _add(g, o) < 0:
            raise MemoryError("memwatch: out of memory while building the heap graph")
    # Frozen objects (gc.freeze()) are absent from gc.get_objects(): reach
    # them from the modules and the thread stacks, as the census does.
    for root in extra_roots:
        o = <PyObject*>root
        if _find(g, o) < 0 and _add(g, o) < 0:
            raise MemoryError("memwatch: out of memory while building the heap graph")
    # The node array is the work list: breadth-first, no recursion.
    g.cur = 0
    while g.cur < g.n:
        o = <PyObject*>g.nodes[g.cur].addr
        if _edges(g, o, _sink_discover) or g.error:
            raise MemoryError("memwatch: out of memory while building the heap graph "
                              "(it needs about 40 bytes per object)")
        g.cur += 1
    return 0


cdef void _mark_external(Graph* g, object keeper) noexcept:
    """Flag the objects referenced from outside the graph (the GC's roots).

    Call with no other references held by memwatch than the pins and the
    ``keeper`` (an object whose references our caller knowingly holds)."""
    cdef size_t i
    cdef Py_ssize_t extra
    cdef long k
    cdef PyObject* o
    for i in range(g.n):
        o = <PyObject*>g.nodes[i].addr
        extra = mw_refcnt(o) - 1 - <Py_ssize_t>g.nodes[i].aux
        if (extra == 1 and g.nodes[i].aux == 0 and not (g.nodes[i].flags & F_DEAD)
                and <PyObject*>mw_type(o) == <PyObject*>tuple):
            # A tuple only C code holds may be one tuple(iterable) is still
            # filling in another thread, paused in the iterator: it resizes
            # the tuple when it resumes, and that fails (SystemError) if its
            # reference count is not 1.  Our pin would make it 2 while Python
            # code runs (sizes, names; other threads with it), so unpin it
            # now, while no other thread can run, and never touch it again
            # (a transient, counted as F_DEAD ones are).  Its items stay.
            g.nodes[i].flags |= F_DEAD | F_NOEXPAND
            _decref(o)
        elif extra > 0:
            g.nodes[i].flags |= F_EXTERNAL
        g.nodes[i].aux = 0
    if keeper is not None:
        k = _find(g, <PyObject*>keeper)
        if k >= 0:
            g.nodes[k].flags &= ~F_EXTERNAL


cdef int _finish_sizes(Graph* g) except -1:
    """Size the objects whose __sizeof__ may run Python code (all are pinned)."""
    cdef size_t i
    getsizeof = _sys.getsizeof
    for i in range(g.n):
        if g.nodes[i].flags & F_DEFERRED:
            obj = <object><PyObject*>g.nodes[i].addr
            try:
                size = getsizeof(obj)
            except Exception:
                size = -1
            if not isinstance(size, int) or not 0 <= size < MW_ABSURD_SIZE:
                size = mw_basicsize(<PyObject*>g.nodes[i].addr)
            g.nodes[i].size = <uint64_t>size
            g.nodes[i].flags &= ~F_DEFERRED
    return 0


@cython.no_gc
cdef class _Session:
    """One graph, alive for one call (the pins are released by close())."""
    cdef Graph g
    cdef int was_enabled
    cdef bint open
    cdef public list type_names
    cdef public object root_edges    # [(name, node index)]

    def __cinit__(self):
        memset(&self.g, 0, sizeof(Graph))
        self.open = False

    def __dealloc__(self):
        self.release()
        _graph_free(&self.g)

    cdef void hold(self) noexcept:
        """GC off for a pass that holds borrowed pointers and runs no Python
        code (so no other thread can run, nor change the GC state, meanwhile)."""
        if not self.open:
            self.was_enabled = mw_gc_hold()
            self.open = True

    cdef void release(self) noexcept:
        """The GC state back as the hold found it: before any Python code."""
        if self.open:
            self.open = False
            mw_gc_release(self.was_enabled)

    cdef void close(self) noexcept:
        # Releasing the pins may run finalizers: the GC state is restored first.
        self.release()
        _graph_free(&self.g)
        mw_ndarray_clear()


cdef list _thread_roots(object frames):
    """[(label, frame)] for every running thread, frames materialised before."""
    threading = _sys.modules.get("threading")
    names = {}
    if threading is not None:
        try:
            for t in list(getattr(threading, "_active", {}).values()):
                names[t.ident] = t.name
        except Exception:
            pass
    out = []
    for ident, frame in frames.items():
        out.append(("thread %s" % names.get(ident, ident), frame))
    return out


cdef void _ignore(Graph* g, object obj) noexcept:
    cdef long k = _find(g, <PyObject*>obj)
    if k >= 0:
        g.nodes[k].flags |= F_NOEXPAND
        g.nodes[k].flags &= ~F_EXTERNAL


cdef _Session _build(bint skip_stack, object keeper, object ignore=()):
    """Discover the heap; return an open session (GC disabled, all pinned)."""
    cdef _Session s = _Session.__new__(_Session)
    cdef Graph* g = &s.g
    cdef long k
    cdef size_t i
    mw_refuse_unsupported_build()   # free-threaded builds: an error, not a crash
    g.slow_sizes = bool(_core._SELF_CHECK_MISMATCHES)
    g.sizeof_name = <PyObject*>_SIZEOF_NAME
    g.object_sizeof = _OBJECT_SIZEOF
    # Materialise the running frames first, so they are part of the heap the
    # census and this walk both see.
    _sys._current_frames()
    mw_ndarray_lookup()        # until close(): every pass enumerates the same edges
    s.hold()
    try:
        objects = _gc.get_objects()
        extra = []
        if _gc.get_freeze_count() > 0:
            extra.append(_sys.modules)
            extra.extend(_sys._current_frames().values())
        _discover(g, objects, extra)
        del extra
        objects = None     # drop our references: only the pins remain
        _mark_external(g, keeper)
        if ignore:
            # The caller's own containers: no path goes through them.
            _ignore(g, ignore)
            for obj in ignore:
                _ignore(g, obj)
            obj = None
        if skip_stack and _sys.version_info < (3, 11):
            # The calling thread's frames hold the caller's own references
            # (the object asked about, to begin with): they are no path.
            # (3.11+ frames do not show a running frame's locals.)
            f = _sys._getframe(0)
            while f is not None:
                k = _find(g, <PyObject*>f)
                if k >= 0:
                    g.nodes[k].flags |= F_NOEXPAND
                    g.nodes[k].flags &= ~F_EXTERNAL
                f = f.f_back
            f = None
        # From here on Python code may run: every node is pinned, and the GC
        # state is the program's again (a collection frees no pinned node; an
        # edge lost meanwhile is written as a stale one).
        s.release()
        _finish_sizes(g)
        s.type_names = [_core.type_name(<object><PyObject*>g.types[i].tp) for i in range(g.ntypes)]
        roots = []
        for name, mod in list(_sys.modules.items()):
            k = _find(g, <PyObject*>mod)
            if k >= 0 and isinstance(name, str):
                roots.append((name, k))
        for label, frame in _thread_roots(_sys._current_frames()):
            k = _find(g, <PyObject*>frame)
            if k >= 0 and not (g.nodes[k].flags & F_NOEXPAND):
                roots.append((label, k))
        s.root_edges = roots
        return s
    except BaseException:
        s.close()
        raise


def node_count():
    """Test harness: how many objects the graph has (census semantics)."""
    cdef _Session s = _build(False, None)
    try:
        return s.g.n
    finally:
        s.close()


def type_counts():
    """Test harness: {type name: count} over the graph's objects."""
    cdef _Session s = _build(False, None)
    cdef size_t i
    try:
        counts = {}
        for i in range(s.g.n):
            name = s.type_names[s.g.nodes[i].tidx]
            counts[name] = counts.get(name, 0) + 1
        return counts
    finally:
        s.close()


# --------------------------------------------------------------------------
# Writing the .heapsnapshot
# --------------------------------------------------------------------------

cdef int _flush(Graph* g) noexcept:
    cdef size_t off = 0
    cdef Py_ssize_t w
    while off < g.buf_n:
        w = _c_write(g.fd, g.buf + off, g.buf_n - off)
        if w < 0:
            if errno == EINTR:
                continue
            g.error = ERR_IO
            return -1
        off += <size_t>w
    g.bytes_written += g.buf_n
    g.buf_n = 0
    return 0


cdef inline int _put(Graph* g, const char* s, size_t n) noexcept:
    cdef Py_ssize_t w
    if g.buf_n + n > g.buf_cap:
        if _flush(g) < 0:
            return -1
        while n > g.buf_cap:
            # Larger than the buffer (a long header): straight to the file.
            w = _c_write(g.fd, s, n)
            if w < 0:
                if errno == EINTR:
                    continue
                g.error = ERR_IO
                return -1
            s += w
            n -= <size_t>w
            g.bytes_written += <uint64_t>w
    memcpy(g.buf + g.buf_n, s, n)
    g.buf_n += n
    return 0


cdef inline int _putc(Graph* g, char c) noexcept:
    if g.buf_n + 1 > g.buf_cap:
        if _flush(g) < 0:
            return -1
    g.buf[g.buf_n] = c
    g.buf_n += 1
    return 0


cdef inline int _putu(Graph* g, uint64_t v) noexcept:
    cdef char tmp[24]
    cdef int i = 24
    if v == 0:
        return _putc(g, b'0')
    while v:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
    return _put(g, tmp + i, 24 - i)


cdef const char* _HEX = "0123456789abcdef"


cdef inline int _put_u16esc(Graph* g, uint32_t c) noexcept:
    cdef char tmp[6]
    tmp[0] = b'\\'
    tmp[1] = b'u'
    tmp[2] = _HEX[(c >> 12) & 15]
    tmp[3] = _HEX[(c >> 8) & 15]
    tmp[4] = _HEX[(c >> 4) & 15]
    tmp[5] = _HEX[c & 15]
    return _put(g, tmp, 6)


cdef int _put_jchar(Graph* g, uint32_t c) noexcept:
    """One code point, JSON-escaped (non-ASCII as \\u escapes: pure ASCII output)."""
    if c == 34:
        return _put(g, b'\\"', 2)
    if c == 92:
        return _put(g, b'\\\\', 2)
    if c < 0x20 or c == 0x7F:
        if c == 10:
            return _put(g, b'\\n', 2)
        return _put_u16esc(g, c)
    if c < 0x80:
        return _putc(g, <char>c)
    if c < 0x10000:
        return _put_u16esc(g, c)
    c -= 0x10000
    if _put_u16esc(g, 0xD800 + (c >> 10)) < 0:
        return -1
    return _put_u16esc(g, 0xDC00 + (c & 0x3FF))


DEF MAX_STRING_CHARS = 1024


cdef int _put_pystr(Graph* g, PyObject* s) noexcept:
    """A str's characters as a JSON string, read in place (no UTF-8 copy)."""
    cdef int kind = mw_str_kind(s)
    cdef const void* data = mw_str_data(s)
    cdef Py_ssize_t i, n = mw_str_len(s)
    cdef Py_ssize_t cut = n if n <= MAX_STRING_CHARS else MAX_STRING_CHARS
    if _putc(g, b'"') < 0:
        return -1
    for i in range(cut):
        if _put_jchar(g, mw_str_char(kind, data, i)) < 0:
            return -1
    if cut < n and _put(g, b"...", 3) < 0:
        return -1
    return _putc(g, b'"')


cdef int _put_cstr(Graph* g, const char* s) noexcept:
    cdef size_t i, n = strlen(s)
    if _putc(g, b'"') < 0:
        return -1
    for i in range(n):
        # Member names are ASCII identifiers; escape defensively anyway.
        if _put_jchar(g, <unsigned char>s[i]) < 0:
            return -1
    return _putc(g, b'"')


cdef long _dyn_push(Graph* g, uintptr_t tagged) noexcept:
    cdef size_t newcap
    cdef uintptr_t* grown
    if g.dyn_n == g.dyn_cap:
        newcap = g.dyn_cap * 2 if g.dyn_cap else 1024
        grown = <uintptr_t*>_realloc(g.dyn, newcap * sizeof(uintptr_t))
        if grown == NULL:
            g.error = ERR_NOMEM
            return -1
        g.dyn = grown
        g.dyn_cap = newcap
    g.dyn[g.dyn_n] = tagged
    g.dyn_n += 1
    g.nstrings += 1
    return g.nstrings - 1


cdef long _cstr_id(Graph* g, const char* s) noexcept:
    cdef long sid = kv_get(&g.cstr_map, <uint64_t><uintptr_t>s)
    if sid >= 0:
        return sid
    sid = _dyn_push(g, <uintptr_t>s | 1)
    if sid < 0:
        return -1
    if kv_put(&g.cstr_map, <uint64_t><uintptr_t>s, <uint32_t>sid) < 0:
        g.error = ERR_NOMEM
        return -1
    return sid


cdef long _keystr_id(Graph* g, PyObject* key) noexcept:
    """String id of a str that is not a node (a shared-keys attribute name,
    kept alive by its type, which a pinned instance keeps alive)."""
    cdef uint64_t tag = (<uint64_t><uintptr_t>key) | (<uint64_t>1 << 63)
    cdef long sid = kv_get(&g.cstr_map, tag)
    if sid >= 0:
        return sid
    sid = _dyn_push(g, <uintptr_t>key)
    if sid < 0:
        return -1
    if kv_put(&g.cstr_map, tag, <uint32_t>sid) < 0:
        g.error = ERR_NOMEM
        return -1
    return sid


cdef long _str_id(Graph* g, long node) noexcept:
    """String id of a str node's contents (assigned on first use)."""
    cdef long sid
    if g.nodes[node].aux:
        return g.nodes[node].aux - 1
    sid = _dyn_push(g, g.nodes[node].addr)
    if sid < 0:
        return -1
    g.nodes[node].aux = <uint32_t>(sid + 1)
    return sid


cdef inline size_t _fmtu(char* out, uint64_t v) noexcept nogil:
    """Decimal digits of v at out; returns how many."""
    cdef char tmp[24]
    cdef int i = 24
    cdef size_t n
    if v == 0:
        out[0] = b'0'
        return 1
    while v:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
    n = <size_t>(24 - i)
    memcpy(out, tmp + i, n)
    return n


cdef int _put_edge(Graph* g, int etype, uint64_t name, uint64_t to_node) noexcept:
    # One record formatted in place, then copied once.
    cdef char rec[96]
    cdef size_t n = 0
    if g.ordinal:
        rec[n] = b','
        n += 1
    g.ordinal += 1
    n += _fmtu(rec + n, <uint64_t>etype)
    rec[n] = b','
    n += 1
    n += _fmtu(rec + n, name)
    rec[n] = b','
    n += 1
    n += _fmtu(rec + n, to_node * NODE_FIELDS)
    rec[n] = b'\n'
    n += 1
    return _put(g, rec, n)


cdef int _sink_write(Graph* g, PyObject* child, int etype, int nk, uintptr_t name) noexcept:
    cdef long c, sid, kn
    cdef PyObject* key
    if g.budget == 0:
        return 0              # the object gained references since discovery
    c = _find(g, child)
    if c < 0:
        return 0              # a reference created since discovery
    if nk == NK_INDEX:
        sid = <long>name
    elif nk == NK_CSTR:
        sid = _cstr_id(g, <const char*>name)
    else:
        key = <PyObject*>name
        if g.include_strings or mw_str_interned(key):
            kn = _find(g, key)
            sid = _str_id(g, kn) if kn >= 0 else _keystr_id(g, key)
        else:
            sid = _cstr_id(g, _S_STRKEY)
    if sid < 0:
        return 1
    g.budget -= 1
    if _put_edge(g, etype, <uint64_t>sid, <uint64_t>(c + NSYN)) < 0:
        return 1
    return 0


cdef int _put_node(Graph* g, int ntype, uint64_t name, uint64_t nid, uint64_t size,
                   uint64_t ecount, bint first) noexcept:
    cdef char rec[160]
    cdef size_t n = 0
    if not first:
        rec[n] = b','
        n += 1
    n += _fmtu(rec + n, <uint64_t>ntype)
    rec[n] = b','
    n += 1
    n += _fmtu(rec + n, name)
    rec[n] = b','
    n += 1
    n += _fmtu(rec + n, nid)
    rec[n] = b','
    n += 1
    n += _fmtu(rec + n, size)
    rec[n] = b','
    n += 1
    n += _fmtu(rec + n, ecount)
    memcpy(rec + n, b",0,0\n", 5)
    n += 5
    return _put(g, rec, n)


cdef bytes _META = (
    b'{"snapshot":{"meta":{"node_fields":["type","name","id","self_size","edge_count",'
    b'"trace_node_id","detachedness"],"node_types":[["hidden","array","string","object",'
    b'"code","closure","regexp","number","native","synthetic","concatenated string",'
    b'"sliced string","symbol","bigint","object shape"],"string","number","number",'
    b'"number","number","number"],"edge_fields":["type","name_or_index","to_node"],'
    b'"edge_types":[["context","element","property","internal","hidden","shortcut",'
    b'"weak"],"string_or_number","node"],"trace_function_info_fields":["function_id",'
    b'"name","script_name","script_id","line","column"],"trace_node_fields":["id",'
    b'"function_info_index","count","size","children"],"sample_fields":["timestamp_us",'
    b'"last_assigned_id"],"location_fields":["object_index","script_id","line","column"]},'
)


cdef bytes _TRAILER = (b'],\n"trace_function_infos":[],\n"trace_tree":[],\n"samples":[],\n'
                      b'"locations":[],\n"strings":[')


cdef int _write_all(_Session s, list statics, uint32_t name_base, uint32_t holder_name,
                    list root_names) except -1:
    cdef Graph* g = &s.g
    cdef size_t i
    cdef uint64_t nexternal = 0, total_edges = 0
    cdef long sid
    cdef Node* nd
    cdef PyObject* o
    cdef int ntype
    cdef bytes b
    for i in range(g.n):
        if g.nodes[i].flags & F_EXTERNAL:
            nexternal += 1
        total_edges += g.nodes[i].ecount
    total_edges += len(s.root_edges) + 1 + nexternal
    header = _META + ('"node_count":%d,"edge_count":%d,"trace_function_count":0},\n"nodes":['
                      % (g.n + NSYN, total_edges)).encode()
    if _put(g, <char*>header, len(header)) < 0:
        raise OSError(errno, "memwatch: cannot write the snapshot")
    # Synthetic nodes: the root, and the holder of external references.
    if (_put_node(g, NT_SYNTHETIC, 0, 1, 0, len(s.root_edges) + 1, True) < 0
            or _put_node(g, NT_SYNTHETIC, holder_name, 3, 0, nexternal, False) < 0):
        raise OSError(errno, "memwatch: cannot write the snapshot")
    for i in range(g.n):
        nd = &g.nodes[i]
        o = <PyObject*>nd.addr
        ntype = NT_OBJECT
        sid = name_base + nd.tidx
        if g.include_strings and not (nd.flags & F_DEAD) and mw_is_str(o):
            ntype = NT_STRING
            sid = _str_id(g, <long>i)
            if sid < 0:
                raise MemoryError("memwatch: out of memory while writing the snapshot")
        if _put_node(g, ntype, <uint64_t>sid, 2 * (i + NSYN) + 1, nd.size, nd.ecount, False) < 0:
            raise OSError(errno, "memwatch: cannot write the snapshot")
    if _put(g, b'],\n"edges":[', 12) < 0:
        raise OSError(errno, "memwatch: cannot write the snapshot")
    g.ordinal = 0
    # The holder first: memlab walks a level last-in first-out, so the
    # modules are preferred on ties, as memwatch.retainers() prefers them.
    if _put_edge(g, ET_INTERNAL, holder_name, SYN_EXTERNAL) < 0:
        raise OSError(errno, "memwatch: cannot write the snapshot")
    for k, (name, node) in enumerate(s.root_edges):
        if _put_edge(g, ET_PROPERTY, root_names[k], <uint64_t>node + NSYN) < 0:
            raise OSError(errno, "memwatch: cannot write the snapshot")
    nexternal = 0
    for i in range(g.n):
        if g.nodes[i].flags & F_EXTERNAL:
            if _put_edge(g, ET_ELEMENT, nexternal, i + NSYN) < 0:
                raise OSError(errno, "memwatch: cannot write the snapshot")
            nexternal += 1
    for i in range(g.n):
        g.budget = g.nodes[i].ecount
        g.cur = i
        if g.nodes[i].flags & F_DEAD:
            pass               # not touched again: its edges are written as stale
        elif _edges(g, <PyObject*>g.nodes[i].addr, _sink_write):
            if g.error == ERR_NOMEM:
                raise MemoryError("memwatch: out of memory while writing the snapshot")
            raise OSError(errno, "memwatch: cannot write the snapshot")
        while g.budget:
            # References lost since discovery: keep the announced count.
            g.budget -= 1
            g.stale_edges += 1
            sid = _cstr_id(g, _S_STALE)
            if sid < 0 or _put_edge(g, ET_WEAK, <uint64_t>sid, i + NSYN) < 0:
                raise OSError(errno, "memwatch: cannot write the snapshot")
    if _put(g, _TRAILER, len(_TRAILER)) < 0:
        raise OSError(errno, "memwatch: cannot write the snapshot")
    for i in range(len(statics)):
        if i and _put(g, b",\n", 2) < 0:
            raise OSError(errno, "memwatch: cannot write the snapshot")
        if _put_pystr(g, <PyObject*>statics[i]) < 0:
            raise OSError(errno, "memwatch: cannot write the snapshot")
    for i in range(g.dyn_n):
        if _put(g, b",\n", 2) < 0:
            raise OSError(errno, "memwatch: cannot write the snapshot")
        if g.dyn[i] & 1:
            if _put_cstr(g, <const char*>(g.dyn[i] & ~(<uintptr_t>1))) < 0:
                raise OSError(errno, "memwatch: cannot write the snapshot")
        elif _put_pystr(g, <PyObject*>g.dyn[i]) < 0:
            raise OSError(errno, "memwatch: cannot write the snapshot")
    if _put(g, b"]}\n", 3) < 0 or _flush(g) < 0:
        raise OSError(errno, "memwatch: cannot write the snapshot")
    return 0


def write_heapsnapshot(int fd, bint include_strings=False, Py_ssize_t buffer_size=1 << 20):
    """Write the whole heap to ``fd`` as a V8 heap snapshot.

    :returns: a dict of statistics: ``nodes`` (heap objects, the census total),
        ``edges``, ``bytes``, ``roots``, ``external``, ``stale_edges``,
        ``overhead_bytes`` (peak C bookkeeping), ``elapsed`` (seconds).
    :raises MemoryError, OSError: the GC state is restored and every pin released.
    """
    cdef int64_t t0 = _time.perf_counter_ns()
    cdef _Session s = _build(False, None)
    cdef Graph* g = &s.g
    cdef size_t i
    cdef uint64_t nexternal = 0, nedges = 0, ndead = 0
    try:
        g.fd = fd
        g.naming = True
        g.include_strings = include_strings
        g.buf_cap = <size_t>max(buffer_size, 4096)
        g.buf = <char*>_malloc(g.buf_cap)
        if g.buf == NULL:
            raise MemoryError("memwatch: cannot allocate the snapshot write buffer")
        # The string table: fixed strings first, then the ones met while writing.
        statics = ["", _S_EXTERNAL.decode()]
        name_base = len(statics)
        statics.extend(s.type_names)
        root_names = []
        for name, node in s.root_edges:
            root_names.append(len(statics))
            statics.append(name)
        g.nstatic = len(statics)
        g.nstrings = g.nstatic
        # Writing keeps raw pointers to strings (dict keys) until the string
        # table is written, and runs no Python code: GC off again meanwhile.
        s.hold()
        _write_all(s, statics, name_base, 1, root_names)
        s.release()
        for i in range(g.n):
            nedges += g.nodes[i].ecount
            if g.nodes[i].flags & F_EXTERNAL:
                nexternal += 1
            if g.nodes[i].flags & F_DEAD:
                ndead += 1
        overhead = (g.cap * sizeof(Node) + g.index_cap * sizeof(uint32_t) + g.buf_cap
                    + g.dyn_cap * sizeof(uintptr_t) + g.scratch_cap * sizeof(PyObject*))
        return {"nodes": g.n, "edges": nedges, "bytes": g.bytes_written,
                "roots": len(s.root_edges), "external": nexternal,
                "stale_edges": g.stale_edges, "strings": g.nstrings, "dead": ndead,
                "overhead_bytes": overhead,
                "elapsed": (_time.perf_counter_ns() - t0) / 1e9}
    finally:
        s.close()


# --------------------------------------------------------------------------
# Shortest paths from the roots (breadth-first, iterative)
# --------------------------------------------------------------------------

cdef int _sink_bfs(Graph* g, PyObject* child, int etype, int nk, uintptr_t name) noexcept:
    cdef long c
    cdef uint32_t ci
    cdef PyObject* o
    if etype == ET_WEAK:
        return 0
    c = _find(g, child)
    if c < 0:
        return 0
    ci = <uint32_t>(c + NSYN)
    if g.nodes[c].flags & F_DEAD:
        return 0
    if g.target:
        if <uintptr_t>child == g.target:
            # Distinct referrers of the one target, nearest first (a referrer's
            # edges come together, so a repeat is always the previous entry).
            if g.nfound < g.limit and (g.nfound == 0 or
                                       g.found[g.nfound - 1] != <uint32_t>(g.cur + NSYN)):
                g.found[g.nfound] = <uint32_t>(g.cur + NSYN)
                g.nfound += 1
            return 0
    if g.parent[ci] != 0xFFFFFFFF:
        return 0
    g.parent[ci] = <uint32_t>(g.cur + NSYN)
    if g.nodes[c].flags & F_TARGET:
        g.nfound += 1
    if g.target_type != NULL and g.nfound < g.limit:
        o = <PyObject*>g.nodes[c].addr
        if (<PyObject*>mw_type(o) == <PyObject*>g.target_type
                or PyType_IsSubtype(mw_type(o), g.target_type)):
            g.found[g.nfound] = ci
            g.nfound += 1
    g.queue[g.qtail] = ci
    g.qtail += 1
    return 0


cdef int _search(_Session s, dict labels) except -1:
    """The breadth-first search of the retainer queries, from the roots
    (modules, thread frames) and then from the objects held from outside:
    fills ``g.parent`` and stops once ``g.limit`` things are found.  Runs no
    Python code; ``labels`` gets each root node's name."""
    cdef Graph* g = &s.g
    cdef size_t i
    cdef int phase
    cdef uint32_t u
    s.hold()       # the search runs no Python code (see _Session.hold)
    g.parent[SYN_ROOT] = SYN_ROOT
    # Level 1: the modules and thread frames, then the external holder.
    for name, node in s.root_edges:
        g.cur = SYN_ROOT
        if g.target and node + NSYN == g.target_idx:
            if g.nfound < g.limit:
                g.found[g.nfound] = SYN_ROOT
                g.nfound += 1
            continue
        if g.parent[node + NSYN] == 0xFFFFFFFF:
            labels.setdefault(node, name)
            g.parent[node + NSYN] = SYN_ROOT
            if g.nodes[node].flags & F_TARGET:
                g.nfound += 1
            g.queue[g.qtail] = node + NSYN
            g.qtail += 1
            if g.target_type != NULL and g.nfound < g.limit and PyType_IsSubtype(
                    mw_type(<PyObject*>g.nodes[node].addr), g.target_type):
                g.found[g.nfound] = node + NSYN
                g.nfound += 1
    # Two phases: everything the modules and threads reach first, and
    # only then the objects held from outside the graph.  "Held from
    # outside" includes the caller's own locals (3.11+ frames below the
    # top one are not objects) and the class object passed in: searched
    # in one breadth-first level with the modules, an instance held by a
    # local, or a class attribute of the class passed, would end at
    # "(external)" by the type form while the object form (whose target
    # is the keeper) finds the module path.  An object the modules
    # cannot reach still gets its external path in phase two.
    for phase in range(2):
        if phase == 1:
            if g.nfound >= g.limit:
                break
            g.parent[SYN_EXTERNAL] = SYN_ROOT
            g.queue[g.qtail] = SYN_EXTERNAL
            g.qtail += 1
        while g.qhead < g.qtail and g.nfound < g.limit:
            u = g.queue[g.qhead]
            g.qhead += 1
            g.cur = u - NSYN if u >= NSYN else 0
            if u == SYN_EXTERNAL:
                for i in range(g.n):
                    if (g.nodes[i].flags & F_EXTERNAL) and g.parent[i + NSYN] == 0xFFFFFFFF:
                        g.parent[i + NSYN] = SYN_EXTERNAL
                        if g.nodes[i].flags & F_TARGET:
                            g.nfound += 1
                        g.queue[g.qtail] = <uint32_t>(i + NSYN)
                        g.qtail += 1
                        if g.target_type != NULL and g.nfound < g.limit and PyType_IsSubtype(
                                mw_type(<PyObject*>g.nodes[i].addr), g.target_type):
                            g.found[g.nfound] = <uint32_t>(i + NSYN)
                            g.nfound += 1
                continue
            if g.nodes[u - NSYN].flags & F_NOEXPAND:
                continue
            if _edges(g, <PyObject*>g.nodes[u - NSYN].addr, _sink_bfs) or g.error:
                raise MemoryError("memwatch: out of memory during the retainer search")
    s.release()
    return 0


def shortest_paths(target, bint by_type, Py_ssize_t limit, tuple ignore=()):
    """Breadth-first walk from the roots to ``target`` (or its instances).

    :returns: ``(chains, roots)``: each chain is a list of objects from a
        root to the target (strong references: the caller drops them);
        ``roots`` maps the id of each root object to its label.
    """
    cdef _Session s
    cdef Graph* g
    cdef size_t i, total
    cdef long t
    if limit <= 0:
        raise ValueError(f"limit must be a positive number of paths, not {limit}")
    s = _build(True, None if by_type else target, ignore)
    g = &s.g
    try:
        total = g.n + NSYN
        # There are never more results than nodes (one per instance, or one
        # per distinct referrer): the buffer is sized by what can be found,
        # never by the caller's limit, so no size computation can wrap.
        g.limit = <size_t>limit if <size_t>limit < total else total
        g.parent = <uint32_t*>_malloc_array(total, sizeof(uint32_t))
        g.queue = <uint32_t*>_malloc_array(total, sizeof(uint32_t))
        g.found = <uint32_t*>_malloc_array(g.limit + 1, sizeof(uint32_t))
        if g.parent == NULL or g.queue == NULL or g.found == NULL:
            raise MemoryError("memwatch: cannot allocate the retainer search")
        memset(g.parent, 0xFF, total * sizeof(uint32_t))
        if by_type:
            g.target_type = <PyTypeObject*>target
        else:
            t = _find(g, <PyObject*>target)
            if t < 0:
                return [], {}
            g.target = <uintptr_t><PyObject*>target
            g.target_idx = <uint32_t>(t + NSYN)
        labels = {}
        _search(s, labels)
        # Chains, as objects: root-most first.
        chains = []
        for i in range(g.nfound):
            chains.append(_chain(g, g.found[i], [target] if g.target else []))
        return chains, _root_labels(g, labels)
    finally:
        s.close()


def shortest_paths_many(tuple targets not None, tuple ignore=()):
    """One breadth-first walk from the roots to each of ``targets``: what
    :func:`shortest_paths` finds for one object, for many at the price of
    one heap graph (the pytest plugin's example candidates: a graph costs
    about 70 ms on a pytest session's heap).

    The targets are held by the tuple only (it is searched through like
    ``ignore``): a target that nothing else holds has no path.

    :returns: ``(chains, roots)``: ``chains[i]`` is the shortest chain of
        objects from a root to ``targets[i]`` (ending with it), or None;
        ``roots`` maps the id of each root object to its label.
    """
    cdef _Session s
    cdef Graph* g
    cdef size_t total, wanted = 0
    cdef Py_ssize_t i
    cdef long t
    s = _build(True, None, ignore + (targets,))
    g = &s.g
    try:
        total = g.n + NSYN
        g.parent = <uint32_t*>_malloc_array(total, sizeof(uint32_t))
        g.queue = <uint32_t*>_malloc_array(total, sizeof(uint32_t))
        if g.parent == NULL or g.queue == NULL:
            raise MemoryError("memwatch: cannot allocate the retainer search")
        memset(g.parent, 0xFF, total * sizeof(uint32_t))
        index = []
        for target in targets:
            t = _find(g, <PyObject*>target)
            index.append(t)
            if t >= 0 and not (g.nodes[t].flags & F_TARGET):
                g.nodes[t].flags |= F_TARGET
                wanted += 1
        target = None
        g.limit = wanted
        labels = {}
        if wanted:
            _search(s, labels)
        chains = []
        for i in range(len(targets)):
            t = index[i]
            if t < 0 or g.parent[t + NSYN] == 0xFFFFFFFF:
                chains.append(None)
            else:
                chains.append(_chain(g, <uint32_t>(t + NSYN), []))
        return chains, _root_labels(g, labels)
    finally:
        s.close()


cdef int _sink_count(Graph* g, PyObject* child, int etype, int nk, uintptr_t name) noexcept:
    if etype != ET_WEAK and (<PyObject*>mw_type(child) == <PyObject*>g.target_type
                             or PyType_IsSubtype(mw_type(child), g.target_type)):
        # Interned strings are names (identifiers, keys), never a pile that
        # grows: 3.14's table of them is a dict held from outside the graph
        # with 84k of them, which outranked every list of new strings.
        if PyUnicode_Check(child) and PyUnicode_CHECK_INTERNED(child):
            return 0
        g.nfound += 1
    return 0


def largest_holder(tp, tuple ignore=()):
    """The object holding the most references to instances of ``tp``, and the
    shortest chain from a root to it, in one heap graph.

    For instances that hold nothing themselves (str, bytes, int: in no gc
    generation, so never among the latest allocations the tracker looks at,
    and the instance nearest a root is some module constant), the container
    that piles them up is where a leak of them shows: a list that is
    appended to, a dict that is filled.

    Interned strings are not counted (names, not a pile).

    :returns: ``(chain, count, roots)``: ``chain`` a list of objects from a
        root to the holder (None when no object holds an instance), ``count``
        its references to instances, ``roots`` as :func:`shortest_paths`.
    """
    cdef _Session s
    cdef Graph* g
    cdef size_t i, total, best_n = 0
    cdef long best = -1
    if not isinstance(tp, type):
        raise TypeError(f"largest_holder() needs a type, not {type(tp).__name__}")
    s = _build(True, None, ignore)
    g = &s.g
    try:
        # One pass over every node's references (no Python code runs: GC off).
        g.target_type = <PyTypeObject*>tp
        s.hold()
        for i in range(g.n):
            if g.nodes[i].flags & (F_NOEXPAND | F_DEAD):
                continue
            g.nfound = 0
            g.cur = i
            if _edges(g, <PyObject*>g.nodes[i].addr, _sink_count) or g.error:
                s.release()
                raise MemoryError("memwatch: out of memory while counting holders")
            if g.nfound > best_n:
                best_n = g.nfound
                best = <long>i
        s.release()
        g.target_type = NULL
        g.nfound = 0
        if best < 0:
            return None, 0, {}
        total = g.n + NSYN
        g.limit = 1
        g.parent = <uint32_t*>_malloc_array(total, sizeof(uint32_t))
        g.queue = <uint32_t*>_malloc_array(total, sizeof(uint32_t))
        g.found = <uint32_t*>_malloc_array(2, sizeof(uint32_t))
        if g.parent == NULL or g.queue == NULL or g.found == NULL:
            raise MemoryError("memwatch: cannot allocate the retainer search")
        memset(g.parent, 0xFF, total * sizeof(uint32_t))
        holder = <object><PyObject*>g.nodes[best].addr
        g.target = g.nodes[best].addr
        g.target_idx = <uint32_t>(best + NSYN)
        labels = {}
        _search(s, labels)
        if g.nfound:
            chain = _chain(g, g.found[0], [holder])
        elif g.nodes[best].flags & F_EXTERNAL:
            # Held only from outside the graph: on 3.11+ a running frame's
            # locals (another thread's list that is appended to) are not
            # objects.  It is the answer, as "(external)".
            chain = [None, holder]
        else:
            chain = None
        holder = None
        return chain, best_n, _root_labels(g, labels)
    finally:
        s.close()


cdef list _chain(Graph* g, uint32_t u, list chain):
    """``chain`` followed by the nodes from ``u`` up to the root, then
    reversed: root-most first (None for the holder of external references)."""
    while u != SYN_ROOT:
        if u == SYN_EXTERNAL:
            chain.append(None)
        else:
            chain.append(<object><PyObject*>g.nodes[u - NSYN].addr)
        u = g.parent[u]
    chain.reverse()
    return chain


cdef dict _root_labels(Graph* g, dict labels):
    return {id(<object><PyObject*>g.nodes[k].addr): v for k, v in labels.items()}


def label_reference(parent, child):
    """How ``parent`` refers to ``child``: ``(kind, name)`` with kind one of
    ``'key'`` (dict key: name is the key object), ``'index'``, ``'attr'``,
    ``'internal'``, ``'keyof'`` (child is a dict key), ``'member'`` (set),
    ``'ref'`` (unnamed: name is the reference's ordinal), or ``None``."""
    cdef Graph g
    cdef Py_ssize_t i, pos
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* o = <PyObject*>parent
    cdef PyObject* c = <PyObject*>child
    cdef int etype, nk
    cdef uintptr_t name
    if mw_is_dict(o):
        pos = 0
        while PyDict_Next(o, &pos, &k, &v):
            if v == c:
                return ("key", <object>k)
        pos = 0
        while PyDict_Next(o, &pos, &k, &v):
            if k == c:
                return ("keyof", None)
    if mw_is_list(o) or mw_is_tuple(o) or isinstance(parent, (list, tuple)):
        for i in range(len(parent)):
            try:
                if parent[i] is child:
                    return ("index", i)
            except Exception:
                break
    memset(&g, 0, sizeof(Graph))
    mw_ndarray_lookup()
    try:
        if mw_traverse(o, _collect, &g) != 0 or g.error:
            raise MemoryError("memwatch: out of memory")
        if mw_is_code(o) and (mw_visit_code(o, _collect, &g) != 0 or g.error):
            raise MemoryError("memwatch: out of memory")
        if mw_is_ndarray(o) and (mw_visit_ndarray(o, _collect, &g) != 0 or g.error):
            raise MemoryError("memwatch: out of memory")
        for i in range(<Py_ssize_t>g.scratch_n):
            if g.scratch[i] == c:
                nk = _label(o, c, i, &etype, &name)
                if nk == NK_KEY:
                    return ("attr", <object><PyObject*>name)
                if nk == NK_CSTR:
                    return ("attr" if etype == ET_PROPERTY else "internal",
                            (<bytes>(<const char*>name)).decode("utf-8", "replace"))
                if etype == ET_ELEMENT and mw_is_ndarray(o):
                    return ("index", <Py_ssize_t>name)     # flat, C order
                if etype == ET_ELEMENT:
                    return ("member", None)
                return ("ref", i)
        return None
    finally:
        _free(g.scratch)
        mw_ndarray_clear()


def _debug_refs(str name):
    """Test harness: (refcount, external?) of __main__.<name>, looked up after the walk."""
    cdef _Session s = _build(False, None)
    cdef long k
    try:
        obj = _sys.modules["__main__"].__dict__[name]
        k = _find(&s.g, <PyObject*>obj)
        if k < 0:
            return None
        return (mw_refcnt(<PyObject*>obj) - 1, bool(s.g.nodes[k].flags & F_EXTERNAL))
    finally:
        s.close()


def _debug_ids():
    """Test harness: the ids of every node."""
    cdef _Session s = _build(False, None)
    cdef size_t i
    try:
        return [s.g.nodes[i].addr for i in range(s.g.n)]
    finally:
        s.close()


cdef bint _inline_names_ok = False


def _check_inline_names():
    """Verify the inline-attribute reader on a known instance (3.11+)."""
    global _inline_names_ok

    class _Probe:
        def __init__(self):
            self.alpha = [1]
            self.beta = (2, 3)

    p = _Probe()
    _inline_names_ok = True
    try:
        a = mw_inline_attr_name(<PyObject*>p, <PyObject*>p.alpha)
        b = mw_inline_attr_name(<PyObject*>p, <PyObject*>p.beta)
        ok = ((a == NULL and b == NULL) or
              (a != NULL and b != NULL and <object>a == "alpha" and <object>b == "beta"))
    except BaseException:
        ok = False
    _inline_names_ok = ok
    return ok


_INLINE_NAMES = _check_inline_names()


def _debug_dead():
    """Test harness: type names of the objects found with a refcount of 0."""
    cdef _Session s = _build(False, None)
    cdef size_t i
    try:
        return [s.type_names[s.g.nodes[i].tidx] for i in range(s.g.n) if s.g.nodes[i].flags & F_DEAD]
    finally:
        s.close()
