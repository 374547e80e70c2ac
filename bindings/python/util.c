/*
 * Small helpers the type files of esg._esg share: optional arguments, results
 * built from C values, the context-manager methods of objects that close, and
 * the end of a call on a Store. Declared in esgpy.h.
 */
#include <string.h>
#include "esgpy.h"

/* ------------------------------------------------------------- arguments -- */

int esgpy_opt_str(PyObject *obj, const char *what, const char **out) {
  *out = NULL;
  if (!obj || obj == Py_None) return 0;
  return (*out = esgpy_str(obj, what, NULL)) ? 0 : -1;
}

int esgpy_opt_int32(PyObject *obj, const char *what, int *out) {
  int64_t v = 0;
  if (obj && obj != Py_None && esgpy_int64(obj, what, &v) < 0) return -1;
  if (v < 0 || v > INT32_MAX) {
    PyErr_Format(PyExc_ValueError, "%s must be between 0 and 2147483647", what);
    return -1;
  }
  *out = (int)v;
  return 0;
}

const esg_event *esgpy_event_arg(esgpy_state *st, PyObject *obj, esg_event **own) {
  *own = NULL;
  if (esgpy_event_check(st, obj)) return esgpy_event_handle(obj);
  return *own = esgpy_parse(st, obj);
}

/* --------------------------------------------------------------- results -- */

PyObject *esgpy_utf8_or_none(const char *s) {
  if (!s) Py_RETURN_NONE;
  return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

PyObject *esgpy_struct_checked(PyObject *t, int n) {
  for (int i = 0; i < n; i++) {
    if (!PyStructSequence_GetItem(t, i)) {
      Py_DECREF(t);
      return NULL;
    }
  }
  return t;
}

PyObject *esgpy_fetch_exc(void) {
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  PyErr_NormalizeException(&t, &v, &tb);
  if (v && tb) PyException_SetTraceback(v, tb);
  Py_XDECREF(t);
  Py_XDECREF(tb);
  return v;
}

/* ------------------------------------------------------ context managers -- */

PyObject *esgpy_return_self(PyObject *self, PyObject *unused) {
  (void)unused;
  return Py_NewRef(self);
}

PyObject *esgpy_exit_result(PyObject *closed) {
  if (!closed) return NULL;
  Py_DECREF(closed);
  Py_RETURN_FALSE;
}

/* ----------------------------------------------------------------- store -- */

int esgpy_dep_enter(PyObject *obj, StoreObject *store, int (*is_open)(PyObject *obj), const char *closed_msg) {
  if (!is_open(obj)) {
    esgpy_raise(esgpy_state_of_type(Py_TYPE(obj)), ESG_ESTATE, closed_msg);
    return -1;
  }
  if (esgpy_store_enter(store) < 0) return -1;
  if (!is_open(obj)) { /* closed with the store while we waited */
    esgpy_store_leave(store);
    esgpy_raise(esgpy_state_of_type(Py_TYPE(obj)), ESG_ESTATE, closed_msg);
    return -1;
  }
  return 0;
}

int esgpy_store_done(StoreObject *self, int rc) {
  int failed = esgpy_store_check(self, rc);
  esgpy_store_leave(self);
  return failed;
}

PyObject *esgpy_store_purge(StoreObject *self, esgpy_purge_fn fn) {
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  int64_t n = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = fn(self->s, &n);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyLong_FromLongLong(n);
}

int esgpy_collect_done(StoreObject *self, int rc, esgpy_collected *c) {
  if (rc == ESG_ECALLBACK) {
    esgpy_store_leave(self);
    esgpy_collected_free(c);
    PyErr_NoMemory();
    return -1;
  }
  if (esgpy_store_done(self, rc) < 0) {
    esgpy_collected_free(c);
    return -1;
  }
  return rc;
}
