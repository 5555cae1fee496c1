/*
 * Version-specific CPython details used by the heap walk (_core.pyx).
 *
 * Everything here that reads an interpreter internal is guarded with
 * PY_VERSION_HEX, and the module checks at import time (see
 * _core._self_check) that the sizes computed here agree with
 * sys.getsizeof(); if they ever disagree, the census falls back to the
 * exact slow path instead of reporting wrong numbers.
 */
#ifndef MEMWATCH_COMPAT_H
#define MEMWATCH_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>   /* PyMemberDef (in Python.h itself only from 3.12) */
#include <stdint.h>
#include <string.h>

/* The GC pre-header (PyGC_Head) is two machine words on every default
 * (GIL) build from 3.8 on; free-threaded builds are not supported. */
#define MW_GC_HEAD_SIZE ((Py_ssize_t)(2 * sizeof(void *)))

/* Free-threaded builds (3.13t, 3.14t: Py_GIL_DISABLED) are refused.  Their
 * objects have another header (ob_tid, a split reference count), the GC
 * keeps no PyGC_Head lists, and other threads run during the walk, so the
 * borrowed pointers the walk follows could be freed under it.  The module
 * still imports (so `import memwatch` and its pure-Python parts work); the
 * first call that would walk the heap raises instead of crashing. */
#ifdef Py_GIL_DISABLED
#define MW_FREE_THREADED 1
#else
#define MW_FREE_THREADED 0
#endif

/* Test harness: pretend to be a free-threaded build (one flag per module). */
static int mw_pretend_free_threaded = 0;

static inline int
mw_refuse_unsupported_build(void)
{
    if (MW_FREE_THREADED || mw_pretend_free_threaded) {
        PyErr_SetString(PyExc_RuntimeError,
            "memwatch does not support free-threaded CPython builds "
            "(Py_GIL_DISABLED, e.g. python3.13t or python3.14t): its heap walk "
            "follows borrowed pointers that other threads could free. "
            "Run the program under the default build of the same version "
            "(python3.14 instead of python3.14t).");
        return -1;
    }
    return 0;
}

/* One object's size above this is a lie (a hostile or broken __sizeof__): no
 * 64-bit CPU maps more than 2**57 bytes, and x86-64/arm64 user space is 2**47
 * or 2**48.  A C constant, so the walk's hot path compares C integers (a
 * Cython DEF of 1 << 48 became a Python int: one PyLong per object counted,
 * +13% instructions per census). */
#define MW_ABSURD_SIZE ((Py_ssize_t)1 << 48)

/* The "pre-header" that sys.getsizeof() adds on top of __sizeof__(). */
static inline Py_ssize_t
mw_presize(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
#if PY_VERSION_HEX < 0x030B0000
    /* 3.10: GC head when the object is GC-capable (tp_is_gc honoured). */
    (void)tp;
    return PyObject_IS_GC(o) ? MW_GC_HEAD_SIZE : 0;
#else
    Py_ssize_t size = 0;
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13+: static types report no pre-header at all. */
    if (Py_IS_TYPE(o, &PyType_Type) &&
        !PyType_HasFeature((PyTypeObject *)o, Py_TPFLAGS_HEAPTYPE)) {
        return 0;
    }
#endif
    /* 3.11+: _PyType_PreHeaderSize(Py_TYPE(o)): the type's GC flag (not
     * tp_is_gc) plus two words for managed dict / weakref pointers. */
    if (PyType_HasFeature(tp, Py_TPFLAGS_HAVE_GC)) {
        size += MW_GC_HEAD_SIZE;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF)) {
        size += (Py_ssize_t)(2 * sizeof(PyObject *));
    }
#else
    if (PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT)) {
        size += (Py_ssize_t)(2 * sizeof(PyObject *));
    }
#endif
    return size;
#endif
}

/* Does gc.get_referents() look inside this object?  Mirrors
 * gc_get_referents: only GC-capable objects (tp_is_gc honoured). */
static inline int
mw_is_gc(PyObject *o)
{
    return PyObject_IS_GC(o);
}

static inline int
mw_traverse(PyObject *o, visitproc visit, void *arg)
{
    traverseproc trav = Py_TYPE(o)->tp_traverse;
    if (trav == NULL || !PyObject_IS_GC(o)) {
        return 0;
    }
    return trav(o, visit, arg);
}

/* Objects that tp_traverse does not report but that a code object owns:
 * its constants, names and the bytes/str objects describing it.  Code
 * objects are not GC-capable, so gc.get_referents(code) is always empty. */
static inline int
mw_visit_code(PyObject *o, visitproc visit, void *arg)
{
    PyCodeObject *co = (PyCodeObject *)o;
#define MW_VISIT(x) do { if ((x) != NULL) { int r_ = visit((PyObject *)(x), arg); if (r_) return r_; } } while (0)
#if PY_VERSION_HEX < 0x030B0000
    MW_VISIT(co->co_code);
    MW_VISIT(co->co_consts);
    MW_VISIT(co->co_names);
    MW_VISIT(co->co_varnames);
    MW_VISIT(co->co_freevars);
    MW_VISIT(co->co_cellvars);
    MW_VISIT(co->co_filename);
    MW_VISIT(co->co_name);
    MW_VISIT(co->co_linetable);
#elif PY_VERSION_HEX < 0x03100000
    /* 3.11 to 3.15: the same fields (3.15's _PyCode_DEF is 3.14's). */
    MW_VISIT(co->co_consts);
    MW_VISIT(co->co_names);
    MW_VISIT(co->co_exceptiontable);
    MW_VISIT(co->co_localsplusnames);
    MW_VISIT(co->co_localspluskinds);
    MW_VISIT(co->co_filename);
    MW_VISIT(co->co_name);
    MW_VISIT(co->co_qualname);
    MW_VISIT(co->co_linetable);
#if PY_VERSION_HEX < 0x030C0000
    MW_VISIT(co->_co_code);
#else
    if (co->_co_cached != NULL) {
        MW_VISIT(co->_co_cached->_co_code);
        MW_VISIT(co->_co_cached->_co_varnames);
        MW_VISIT(co->_co_cached->_co_cellvars);
        MW_VISIT(co->_co_cached->_co_freevars);
    }
#endif
#else
    /* Unknown future layout: only what the public attributes would give
     * without allocating is not knowable here, so report nothing extra. */
    (void)co;
#endif
#undef MW_VISIT
    return 0;
}

/* The keys of a dict: for str-keyed dicts (module, class and instance
 * dicts) dict_traverse reports only the values. */
static inline int
mw_visit_dict_keys(PyObject *o, visitproc visit, void *arg)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(o, &pos, &key, &value)) {
        int r = visit(key, arg);
        if (r) {
            return r;
        }
    }
    return 0;
}

/* The attribute `name` as tp's MRO defines it (borrowed), like
 * _PyType_Lookup but without the type attribute cache.  The cache keeps a
 * strong reference to each name it holds, and filling a slot releases the
 * name it evicts: a walk that looked __sizeof__ up through the cache could
 * free a mortal interned str it had just counted (one only the cache still
 * held, found through the interned-strings dict on 3.14), and the test
 * harness's keep_objects then took a reference to freed memory (a crash).
 * Reading the MRO's dicts releases nothing. */
static inline PyObject *
mw_type_lookup_nocache(PyTypeObject *tp, PyObject *name)
{
    PyObject *mro = tp->tp_mro;                     /* borrowed */
    if (mro == NULL || !PyTuple_Check(mro)) {
        return NULL;                                /* not ready: no answer */
    }
    Py_ssize_t n = PyTuple_GET_SIZE(mro);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        if (!PyType_Check(base)) {
            continue;
        }
#if PY_VERSION_HEX >= 0x030C0000
        /* 3.12+: a static builtin type's dict lives in the interpreter */
        PyObject *dict = PyType_GetDict((PyTypeObject *)base);   /* new ref */
#else
        PyObject *dict = ((PyTypeObject *)base)->tp_dict;
        Py_XINCREF(dict);
#endif
        if (dict == NULL) {
            continue;
        }
        PyObject *res = PyDict_GetItemWithError(dict, name);      /* borrowed */
        Py_DECREF(dict);    /* the type still holds its dict: res stays valid */
        if (res != NULL) {
            return res;
        }
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
    }
    return NULL;
}

/* How an object's __sizeof__ can be computed during the walk. */
enum {
    MW_SIZEOF_OBJECT = 0,   /* object.__sizeof__: inline formula            */
    MW_SIZEOF_CFUNC = 1,    /* a builtin type's C method: call it directly   */
    MW_SIZEOF_DEFERRED = 2  /* anything else: call sys.getsizeof after walk  */
};

/* Classify the __sizeof__ that sys.getsizeof(o) would use for instances of
 * tp.  Only C methods of CPython's own static types are called during the
 * walk (they cannot run Python code, so no object can be freed under the
 * walk's borrowed references); everything else is deferred. */
static inline int
mw_classify_sizeof(PyTypeObject *tp, PyObject *name, PyCFunction object_sizeof,
                   PyCFunction *out)
{
    PyObject *descr = mw_type_lookup_nocache(tp, name);  /* borrowed */
    *out = NULL;
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        return MW_SIZEOF_DEFERRED;
    }
    PyMethodDescrObject *md = (PyMethodDescrObject *)descr;
    PyTypeObject *owner = md->d_common.d_type;
    if ((md->d_method->ml_flags & (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O |
                                   METH_FASTCALL | METH_METHOD)) != METH_NOARGS) {
        return MW_SIZEOF_DEFERRED;
    }
    if (owner == NULL || PyType_HasFeature(owner, Py_TPFLAGS_HEAPTYPE) ||
        strchr(owner->tp_name, '.') != NULL) {
        /* Extension types ("module.Name") may run Python code in C. */
        return MW_SIZEOF_DEFERRED;
    }
    *out = md->d_method->ml_meth;
    return md->d_method->ml_meth == object_sizeof ? MW_SIZEOF_OBJECT : MW_SIZEOF_CFUNC;
}

/* object.__sizeof__ (Objects/typeobject.c, object___sizeof___impl) */
static inline Py_ssize_t
mw_object_sizeof(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    Py_ssize_t res = 0;
    if (tp->tp_itemsize > 0) {
        res = Py_SIZE(o) * tp->tp_itemsize;
    }
    return res + tp->tp_basicsize;
}

/* list.__sizeof__ (Objects/listobject.c): the same on 3.10 to 3.14. */
static inline Py_ssize_t
mw_list_sizeof(PyObject *o)
{
    return Py_TYPE(o)->tp_basicsize + ((PyListObject *)o)->allocated * (Py_ssize_t)sizeof(void *);
}

static inline PyCFunction
mw_method_cfunc(PyObject *descr)
{
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        return NULL;
    }
    return ((PyMethodDescrObject *)descr)->d_method->ml_meth;
}

static inline PyObject *
mw_call_cfunc(PyCFunction fn, PyObject *o)
{
    return fn(o, NULL);
}

/* Call a C __sizeof__ and decode its result; -1 (with no exception set)
 * when it raised or returned something that is not a non-negative int. */
static inline Py_ssize_t
mw_sizeof_via(PyCFunction fn, PyObject *o)
{
    Py_ssize_t size;
    PyObject *res = fn(o, NULL);
    if (res == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (!PyLong_Check(res)) {
        Py_DECREF(res);
        return -1;
    }
    size = PyLong_AsSsize_t(res);
    Py_DECREF(res);
    if (size == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return size < 0 ? -1 : size;
}

static inline Py_ssize_t mw_basicsize(PyObject *o) { return Py_TYPE(o)->tp_basicsize; }
static inline PyTypeObject *mw_type(PyObject *o) { return Py_TYPE(o); }
static inline int mw_is_code(PyObject *o) { return PyCode_Check(o); }
static inline int mw_is_dict(PyObject *o) { return PyDict_Check(o); }

/* dict's own tp_traverse, on any dict (or subclass): what it reports is the
 * values, and the keys too unless every key is a str. */
static inline int
mw_dict_traverse(PyObject *o, visitproc visit, void *arg)
{
    return PyDict_Type.tp_traverse(o, visit, arg);
}

/* Is the reference the walk is following this object's only one?  Then no
 * other path can reach it and it needs no deduplication.  From 3.14 on,
 * references held by frames may be uncounted ("stack refs"), so a count of 1
 * no longer proves a single path: the shortcut is off there. */
static inline int
mw_sole_reference(PyObject *o)
{
#if PY_VERSION_HEX < 0x030E0000
    return Py_REFCNT(o) == 1;
#else
    (void)o;
    return 0;
#endif
}


/* ------------------------------------------------------------------------
 * Helpers for the object graph (_graph.pyx): naming references.
 * They only read pointers and compare them; they never allocate, never
 * materialise a __dict__ and never run Python code.
 * ------------------------------------------------------------------------ */

/* The __dict__ an object already has, or NULL (never creates one). */
static inline PyObject *
mw_existing_dict(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
#if PY_VERSION_HEX >= 0x030B0000
    if (PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT)) {
        /* 3.11: dict pointer; 3.12: dict-or-values (tagged, low bit 1 =
         * values); 3.13+: PyManagedDictPointer.  Only compared, never
         * dereferenced when tagged. */
        PyObject *p = ((PyObject **)o)[-3];
        if (((uintptr_t)p) & 1) {
            return NULL;
        }
        return p;
    }
#endif
    if (tp->tp_dictoffset > 0) {
        return *(PyObject **)((char *)o + tp->tp_dictoffset);
    }
    return NULL;
}

/* Member slot i of a type's tp_members that holds an object reference
 * (__slots__, and C types' T_OBJECT members); NULL name ends the array. */
static inline const char *
mw_member_name(PyTypeObject *tp, Py_ssize_t i, Py_ssize_t *offset)
{
    PyMemberDef *m = tp->tp_members;
    if (m == NULL || m[i].name == NULL) {
        return NULL;
    }
    *offset = (m[i].type == 6 || m[i].type == 16) ? m[i].offset : -1;
    return m[i].name;
}

static inline PyObject *
mw_member_value(PyObject *o, Py_ssize_t offset)
{
    return *(PyObject **)((char *)o + offset);
}

static inline PyTypeObject *mw_tp_base(PyTypeObject *tp) { return tp->tp_base; }
static inline PyObject *mw_tp_dict(PyTypeObject *tp) { return tp->tp_dict; }
static inline PyObject *mw_tp_mro(PyTypeObject *tp) { return tp->tp_mro; }
static inline PyObject *mw_tp_bases(PyTypeObject *tp) { return tp->tp_bases; }
static inline int mw_is_heaptype(PyTypeObject *tp) { return PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE); }
static inline PyObject *mw_ht_name(PyTypeObject *tp) { return ((PyHeapTypeObject *)tp)->ht_name; }
static inline PyObject *mw_ht_qualname(PyTypeObject *tp) { return ((PyHeapTypeObject *)tp)->ht_qualname; }
static inline PyObject *mw_ht_slots(PyTypeObject *tp) { return ((PyHeapTypeObject *)tp)->ht_slots; }

static inline int mw_is_function(PyObject *o) { return PyFunction_Check(o); }
static inline PyObject *mw_func_code(PyObject *o) { return ((PyFunctionObject *)o)->func_code; }
static inline PyObject *mw_func_globals(PyObject *o) { return ((PyFunctionObject *)o)->func_globals; }
static inline PyObject *mw_func_defaults(PyObject *o) { return ((PyFunctionObject *)o)->func_defaults; }
static inline PyObject *mw_func_kwdefaults(PyObject *o) { return ((PyFunctionObject *)o)->func_kwdefaults; }
static inline PyObject *mw_func_closure(PyObject *o) { return ((PyFunctionObject *)o)->func_closure; }
static inline PyObject *mw_func_name(PyObject *o) { return ((PyFunctionObject *)o)->func_name; }
static inline PyObject *mw_func_qualname(PyObject *o) { return ((PyFunctionObject *)o)->func_qualname; }
static inline PyObject *mw_func_annotations(PyObject *o) { return ((PyFunctionObject *)o)->func_annotations; }
static inline int mw_is_cell(PyObject *o) { return PyCell_Check(o); }
static inline PyObject *mw_cell_contents(PyObject *o) { return PyCell_GET(o); }
static inline int mw_is_module(PyObject *o) { return PyModule_Check(o); }
static inline int mw_is_type(PyObject *o) { return PyType_Check(o); }
static inline int mw_is_list(PyObject *o) { return PyList_CheckExact(o); }
static inline int mw_is_tuple(PyObject *o) { return PyTuple_CheckExact(o); }
static inline int mw_is_str(PyObject *o) { return PyUnicode_Check(o); }
static inline int mw_is_anyset(PyObject *o) { return PyAnySet_Check(o); }
static inline int mw_is_long(PyObject *o) { return PyLong_CheckExact(o); }
static inline Py_ssize_t mw_refcnt(PyObject *o) { return Py_REFCNT(o); }

/* A str's characters, read without creating a UTF-8 copy. */
static inline int mw_str_kind(PyObject *o) { return (int)PyUnicode_KIND(o); }
static inline const void *mw_str_data(PyObject *o) { return PyUnicode_DATA(o); }
static inline Py_ssize_t mw_str_len(PyObject *o) { return PyUnicode_GET_LENGTH(o); }
static inline Py_UCS4 mw_str_char(int kind, const void *data, Py_ssize_t i) { return PyUnicode_READ(kind, data, i); }
static inline int mw_str_interned(PyObject *o) { return PyUnicode_CHECK_INTERNED(o) != 0; }

/* A small int's value, or -1 when it is negative or does not fit. */
static inline long long
mw_small_index(PyObject *o)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || v < 0 || v > 0x7FFFFFFF) {
        if (v == -1) {
            PyErr_Clear();
        }
        return -1;
    }
    return v;
}


/* The name of the attribute of o, kept inline (3.11+: values stored in
 * the instance, names in the type's shared keys, no __dict__ object), whose
 * value is r; NULL when there is none or the layout is not known.  Mirrors
 * CPython's internal PyDictKeysObject / PyDictValues layouts (default GIL
 * builds); _graph checks the result against known objects at import.
 * 3.14 and 3.15 keep 3.13's layouts (pycore_dict.h: the same
 * _dictkeysobject and _dictvalues, values at tp_basicsize behind
 * Py_TPFLAGS_INLINE_VALUES, ht_cached_keys); checked against their headers.
 * Without this reader, retainers() names such an attribute in Python
 * through the instance's __dict__, which materialises that dict: on 3.14 the
 * instance's references then go through the new dict, so the later paths of
 * the same search lost their attribute names.  A newer CPython reads NULL
 * (unnamed edges, never a wrong read) until its layout is checked. */
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[1];
} mw_dictkeys;

typedef struct {
    PyObject *me_key;
    PyObject *me_value;
} mw_unicode_entry;

typedef struct {
    uint8_t capacity;
    uint8_t size;
    uint8_t embedded;
    uint8_t valid;
    PyObject *values[1];
} mw_values313;

static inline PyObject *
mw_inline_attr_name(PyObject *o, PyObject *r)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x03100000 && !defined(Py_GIL_DISABLED)
    PyTypeObject *tp = Py_TYPE(o);
    PyObject **values;
    mw_dictkeys *keys;
    mw_unicode_entry *entries;
    Py_ssize_t i;
    if (!PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT) ||
        !PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    values = (PyObject **)((void **)o)[-4];
    if (values == NULL) {
        return NULL;
    }
#elif PY_VERSION_HEX < 0x030D0000
    {
        uintptr_t v = (uintptr_t)((void **)o)[-3];
        if (!(v & 1)) {
            return NULL;
        }
        values = (PyObject **)(v + 1);
    }
#else
    {
        mw_values313 *v;
        if (!PyType_HasFeature(tp, Py_TPFLAGS_INLINE_VALUES)) {
            return NULL;
        }
        v = (mw_values313 *)((char *)o + tp->tp_basicsize);
        if (!v->valid) {
            return NULL;
        }
        values = v->values;
    }
#endif
    keys = (mw_dictkeys *)((PyHeapTypeObject *)tp)->ht_cached_keys;
    if (keys == NULL || keys->dk_kind == 0 /* DICT_KEYS_GENERAL */) {
        return NULL;
    }
    entries = (mw_unicode_entry *)(keys->dk_indices + ((size_t)1 << keys->dk_log2_index_bytes));
    for (i = 0; i < keys->dk_nentries; i++) {
        if (values[i] == r && entries[i].me_key != NULL && PyUnicode_Check(entries[i].me_key)) {
            return entries[i].me_key;
        }
    }
#else
    (void)o;
    (void)r;
#endif
    return NULL;
}

#endif /* MEMWATCH_COMPAT_H */
