/*
 * numpy arrays for memwatch's walks, without numpy: no import, no headers.
 *
 * An ndarray is no GC container (no tp_traverse), so a walk that follows
 * tp_traverse never sees what an array keeps alive: its `base` (the array a
 * view was taken from, or the bytes/buffer exporter it wraps), its dtype, and
 * the items of an object array.  A small view of a big array is a classic leak
 * that would then be invisible.  The array's leading fields have had this
 * layout since numpy 1.7 and are public (tagPyArrayObject_fields, and the
 * first fields of PyArray_Descr, type_num "kept stable" in numpy 2).
 *
 * The ndarray type is looked up in the already-loaded numpy module at the
 * start of a walk (never imported); NULL means "numpy is not loaded".
 */
#ifndef MEMWATCH_NDARRAY_H
#define MEMWATCH_NDARRAY_H

#include <Python.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
} mw_ndarray_head;

typedef struct {
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind;
    char type;
    char byteorder;
    char former_flags;
    int type_num;
} mw_descr_head;

#define MW_NPY_OBJECT 17
#define MW_NPY_MAXDIMS 64

/* A strong reference for the length of one walk (mw_ndarray_clear() drops it). */
static PyTypeObject *mw_ndarray_type = NULL;

static inline void
mw_ndarray_clear(void)
{
    Py_CLEAR(mw_ndarray_type);
}

/* numpy.ndarray if numpy is loaded (looked up in C: no code runs). */
static inline void
mw_ndarray_lookup(void)
{
    PyObject *modules = PySys_GetObject("modules");   /* borrowed */
    PyObject *np, *dict, *tp;
    mw_ndarray_clear();
    if (modules == NULL || !PyDict_CheckExact(modules)) {
        return;
    }
    np = PyDict_GetItemString(modules, "numpy");
    if (np == NULL || !PyModule_Check(np)) {
        return;
    }
    dict = PyModule_GetDict(np);
    tp = dict != NULL && PyDict_CheckExact(dict) ? PyDict_GetItemString(dict, "ndarray") : NULL;
    if (tp == NULL || !PyType_Check(tp)
            || ((PyTypeObject *)tp)->tp_basicsize < (Py_ssize_t)sizeof(mw_ndarray_head)) {
        return;
    }
    Py_INCREF(tp);
    mw_ndarray_type = (PyTypeObject *)tp;
}

static inline int
mw_is_ndarray(PyObject *o)
{
    PyTypeObject *nd = mw_ndarray_type, *tp = Py_TYPE(o);
    if (nd == NULL) {
        return 0;
    }
    if (tp == nd) {
        return 1;
    }
    /* Cheap filter first: str, int, float... are smaller than an array. */
    if (tp->tp_basicsize < nd->tp_basicsize) {
        return 0;
    }
    return PyType_IsSubtype(tp, nd);
}

/* The dtype says "object": the data holds PyObject pointers. */
static inline int
mw_ndarray_holds_objects(PyObject *o)
{
    mw_ndarray_head *a = (mw_ndarray_head *)o;
    return a->descr != NULL && ((mw_descr_head *)a->descr)->type_num == MW_NPY_OBJECT
           && a->data != NULL && a->nd >= 0 && a->nd <= MW_NPY_MAXDIMS;
}

/* Visit base, dtype, then (object arrays) every item in C order, iteratively:
 * an N-d index, no recursion.  NULL items (possible in fresh arrays) are skipped. */
static inline int
mw_visit_ndarray(PyObject *o, visitproc visit, void *arg)
{
    mw_ndarray_head *a = (mw_ndarray_head *)o;
    Py_ssize_t idx[MW_NPY_MAXDIMS];
    int k, r, nd;
    if (a->base != NULL && (r = visit(a->base, arg)) != 0) {
        return r;
    }
    if (a->descr != NULL && (r = visit(a->descr, arg)) != 0) {
        return r;
    }
    if (!mw_ndarray_holds_objects(o)) {
        return 0;
    }
    nd = a->nd;
    for (k = 0; k < nd; k++) {
        if (a->dimensions[k] <= 0) {
            return 0;
        }
        idx[k] = 0;
    }
    for (;;) {
        char *p = a->data;
        PyObject *item;
        for (k = 0; k < nd; k++) {
            p += idx[k] * a->strides[k];
        }
        memcpy(&item, p, sizeof(item));
        if (item != NULL && (r = visit(item, arg)) != 0) {
            return r;
        }
        for (k = nd - 1; k >= 0; k--) {
            if (++idx[k] < a->dimensions[k]) {
                break;
            }
            idx[k] = 0;
        }
        if (k < 0) {
            return 0;
        }
    }
}

/* How o (an ndarray) refers to r: 1 base, 2 dtype, 0 an item (or unknown). */
static inline int
mw_ndarray_role(PyObject *o, PyObject *r)
{
    mw_ndarray_head *a = (mw_ndarray_head *)o;
    if (r == a->base) {
        return 1;
    }
    if (r == a->descr) {
        return 2;
    }
    return 0;
}

/* References mw_visit_ndarray reports before the items (base, dtype). */
static inline Py_ssize_t
mw_ndarray_leading(PyObject *o)
{
    mw_ndarray_head *a = (mw_ndarray_head *)o;
    return (a->base != NULL) + (a->descr != NULL);
}

#endif /* MEMWATCH_NDARRAY_H */
