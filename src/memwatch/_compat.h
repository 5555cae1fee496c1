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
#elif PY_VERSION_HEX < 0x030F0000
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
    PyObject *descr = _PyType_Lookup(tp, name);  /* borrowed */
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

#endif /* MEMWATCH_COMPAT_H */
