/*
 * Latches (loop prevention in two-way sync): Store methods for content latches,
 * and the module functions for flag latches (latch_flagged, latch_mark), which
 * need no store.
 */
#include <string.h>
#include "esgpy.h"

#define STATE(self) esgpy_store_state((PyObject *)(self))

/*
 * The content hash of a latch from (doc, hash): exactly one of them. doc is an
 * Event, a JSON-able value or JSON text, hashed canonically (esg_content_hash);
 * hash is any non-empty text naming the state.
 */
static int latch_hash(esgpy_state *st, PyObject *doc, PyObject *hash, char buf[65], const char **out) {
  if (doc == Py_None) doc = NULL;
  if (hash == Py_None) hash = NULL;
  if (!doc == !hash) {
    PyErr_SetString(PyExc_TypeError, "give exactly one of doc and hash");
    return -1;
  }
  if (hash) return (*out = esgpy_str(hash, "hash", NULL)) ? 0 : -1;
  int rc;
  if (esgpy_event_check(st, doc)) {
    size_t n;
    const char *j = esg_event_json(esgpy_event_handle(doc), &n);
    rc = esg_content_hash(j, n, buf);
  } else {
    esgpy_bytes b;
    if (esgpy_json_bytes(st, doc, "doc", &b) < 0) return -1;
    rc = esg_content_hash(b.data, (size_t)b.len, buf);
    esgpy_bytes_release(&b);
  }
  if (rc != ESG_OK) {
    esgpy_raise(st, rc, esg_errmsg(NULL));
    return -1;
  }
  *out = buf;
  return 0;
}

typedef int (*latch_fn)(esg_store *, const char *, const char *, const char *);

static PyObject *latch_call(PyObject *op, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, int kind) {
  static const char *const kw_set[] = {"key", "side", "doc", "hash", "ttl", NULL};
  static const char *const kw[] = {"key", "side", "doc", "hash", NULL};
  PyObject *a[5] = {NULL};
  if (esgpy_args(fname, args, nargs, kwnames, kind == 0 ? kw_set : kw, 2, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  esgpy_state *st = STATE(self);
  const char *key = esgpy_str(a[0], "key", NULL), *side = key ? esgpy_str(a[1], "side", NULL) : NULL;
  if (!side) return NULL;
  int64_t ttl = 300000;
  if (kind == 0 && a[4] && a[4] != Py_None && esgpy_positive_seconds_ms(st, a[4], "ttl", &ttl) < 0) return NULL;
  char buf[65];
  const char *hash;
  if (latch_hash(st, a[2] ? a[2] : Py_None, a[3] ? a[3] : Py_None, buf, &hash) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  if (kind == 0) rc = esg_latch(self->s, key, side, hash, ttl);
  else if (kind == 1) rc = esg_latch_check(self->s, key, side, hash);
  else rc = esg_latch_cancel(self->s, key, side, hash);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  if (kind == 0) return PyUnicode_FromString(hash);
  if (kind == 1) return Py_NewRef(rc == ESG_LATCH_ECHO ? st->s_echo : st->s_genuine);
  return PyBool_FromLong(rc == ESG_OK);
}

PyObject *esgpy_store_latch(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  return latch_call(op, "latch", args, nargs, kwnames, 0);
}

PyObject *esgpy_store_latch_check(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  return latch_call(op, "latch_check", args, nargs, kwnames, 1);
}

PyObject *esgpy_store_latch_cancel(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  return latch_call(op, "latch_cancel", args, nargs, kwnames, 2);
}

PyObject *esgpy_store_latch_pending(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "side", NULL};
  PyObject *a[2];
  if (esgpy_args("latch_pending", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  const char *key = esgpy_str(a[0], "key", NULL), *side = key ? esgpy_str(a[1], "side", NULL) : NULL;
  if (!side) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc, n = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_latch_pending(self->s, key, side, &n);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyLong_FromLong(n);
}

PyObject *esgpy_store_purge_latches(PyObject *op, PyObject *unused) {
  (void)unused;
  return esgpy_store_purge((StoreObject *)op, esg_latches_purge);
}

/* ----------------------------------------------------------- flag latches -- */

PyObject *esgpy_latch_flagged(PyObject *module, PyObject *arg) {
  esgpy_state *st = esgpy_state_of_module(module);
  if (esgpy_event_check(st, arg)) return PyBool_FromLong(esg_latch_flagged(esgpy_event_handle(arg)));
  esgpy_bytes b;
  if (esgpy_json_bytes(st, arg, "doc", &b) < 0) return NULL;
  int flagged = 0;
  int rc = esg_latch_flagged_json(b.data, (size_t)b.len, &flagged);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) return esgpy_raise(st, rc, esg_errmsg(NULL));
  return PyBool_FromLong(flagged);
}

PyObject *esgpy_latch_mark(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"doc", "latched", NULL};
  PyObject *a[2];
  if (esgpy_args("latch_mark", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  esgpy_state *st = esgpy_state_of_module(module);
  int latched = 1;
  if (a[1] && (latched = PyObject_IsTrue(a[1])) < 0) return NULL;
  /* The answer has the argument's form: text in, bytes out; a value in, a value out. */
  int text = 1;
  esgpy_bytes b;
  memset(&b, 0, sizeof b);
  const char *data;
  size_t len;
  if (esgpy_event_check(st, a[0])) {
    data = esg_event_json(esgpy_event_handle(a[0]), &len);
  } else {
    text = PyUnicode_Check(a[0]) || PyObject_CheckBuffer(a[0]);
    if (esgpy_json_bytes(st, a[0], "doc", &b) < 0) return NULL;
    data = b.data;
    len = (size_t)b.len;
  }
  char *out = NULL;
  size_t out_len = 0;
  int rc = esg_latch_mark(data, len, latched, &out, &out_len);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) return esgpy_raise(st, rc, esg_errmsg(NULL));
  PyObject *r = esgpy_json_item(st, out, out_len, text);
  esg_free(out);
  return r;
}
