/*
 * Store methods for fault records (events that could not be handled, kept to be
 * listed and resubmitted) and for correlation rules (a Python predicate over the
 * events of one key that emits a higher-order event once).
 */
#include <string.h>
#include "esgpy.h"

#define STATE(self) esgpy_store_state((PyObject *)(self))

/* A Fault named tuple from a C record (called with the GIL held). */
static PyObject *fault_tuple(esgpy_state *st, const esg_fault *f) {
  PyObject *t = PyStructSequence_New(st->FaultType);
  if (!t) return NULL;
  PyStructSequence_SetItem(t, 0, PyLong_FromLongLong(f->id));
  PyStructSequence_SetItem(t, 1, esgpy_utf8_or_none(f->event_id));
  PyStructSequence_SetItem(t, 2, esgpy_utf8_or_none(f->stage));
  PyStructSequence_SetItem(t, 3, esgpy_utf8_or_none(f->error));
  PyStructSequence_SetItem(t, 4, PyLong_FromLong(f->http_status));
  PyStructSequence_SetItem(t, 5, PyLong_FromLong(f->attempts));
  PyStructSequence_SetItem(t, 6, esgpy_ms_seconds(f->first_attempt));
  PyStructSequence_SetItem(t, 7, esgpy_ms_seconds(f->last_attempt));
  PyStructSequence_SetItem(t, 8, f->event ? PyBytes_FromStringAndSize(f->event, (Py_ssize_t)f->event_len)
                                          : Py_NewRef(Py_None));
  return esgpy_struct_checked(t, 9);
}

/* The C callback runs with the GIL released: copy each fault into a Python tuple with it taken. */
typedef struct fault_list {
  esgpy_state *st;
  PyObject *list;
} fault_list;

static int fault_cb(void *ud, const esg_fault *f) {
  fault_list *fl = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  int rc = 1;
  if (fl->list) {
    PyObject *t = fault_tuple(fl->st, f);
    if (t && PyList_Append(fl->list, t) == 0) rc = 0;
    Py_XDECREF(t);
  }
  PyGILState_Release(g);
  return rc;
}

/* The faults a C listing hands over (all of them, or the one with *id), as a new list; NULL on error. */
static PyObject *fault_query(StoreObject *self, const int64_t *id) {
  fault_list fl = {STATE(self), PyList_New(0)};
  if (!fl.list) return NULL;
  if (esgpy_store_enter(self) < 0) {
    Py_DECREF(fl.list);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = id ? esg_fault_get(self->s, *id, fault_cb, &fl) : esg_faults_list(self->s, fault_cb, &fl);
  Py_END_ALLOW_THREADS
  if (PyErr_Occurred() || esgpy_store_check(self, rc) < 0) {
    Py_DECREF(fl.list);
    esgpy_store_leave(self);
    return NULL;
  }
  esgpy_store_leave(self);
  return fl.list;
}

static int opt_time(PyObject *obj, const char *what, int64_t *ms) {
  *ms = 0;
  if (!obj || obj == Py_None) return 0;
  return esgpy_seconds_ms(obj, what, ms);
}

PyObject *esgpy_store_record_fault(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"event_id", "stage", "error", "event", "http_status", "attempts",
                                   "first_attempt", "last_attempt", NULL};
  PyObject *a[8];
  if (esgpy_args("record_fault", args, nargs, kwnames, kw, 3, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  esgpy_state *st = STATE(self);
  esg_fault f;
  memset(&f, 0, sizeof f);
  int64_t v;
  if (!(f.event_id = esgpy_str(a[0], "event_id", NULL)) || !(f.stage = esgpy_str(a[1], "stage", NULL)) ||
      !(f.error = esgpy_str(a[2], "error", NULL)))
    return NULL;
  /* Range-checked before narrowing to int: 2**32 + 503 must not become 503. */
  if (a[4] && a[4] != Py_None) {
    if (esgpy_int64(a[4], "http_status", &v) < 0) return NULL;
    if (v < 0 || v > 999) return esgpy_raise(st, ESG_EINVAL, "http_status must be between 0 and 999 (0: none)");
    f.http_status = (int)v;
  }
  if (a[5] && a[5] != Py_None) {
    if (esgpy_int64(a[5], "attempts", &v) < 0) return NULL;
    if (v < 0 || v > INT32_MAX) return esgpy_raise(st, ESG_EINVAL, "attempts must be between 0 and 2147483647");
    f.attempts = (int)v;
  }
  if (opt_time(a[6], "first_attempt", &f.first_attempt) < 0 || opt_time(a[7], "last_attempt", &f.last_attempt) < 0)
    return NULL;
  esgpy_bytes b;
  memset(&b, 0, sizeof b);
  if (a[3] && a[3] != Py_None) {
    if (esgpy_event_check(st, a[3])) {
      f.event = esg_event_json(esgpy_event_handle(a[3]), &f.event_len);
    } else {
      if (esgpy_json_bytes(st, a[3], "event", &b) < 0) return NULL;
      f.event = b.data;
      f.event_len = (size_t)b.len;
    }
  }
  if (esgpy_store_enter(self) < 0) {
    esgpy_bytes_release(&b);
    return NULL;
  }
  int rc;
  int64_t id = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_fault_record(self->s, &f, &id);
  Py_END_ALLOW_THREADS
  esgpy_bytes_release(&b);
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyLong_FromLongLong(id);
}

PyObject *esgpy_store_faults(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {NULL};
  PyObject *a[1];
  if (esgpy_args("faults", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  return fault_query((StoreObject *)op, NULL);
}

static int fault_id_arg(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int64_t *id) {
  static const char *const kw[] = {"id", NULL};
  PyObject *a[1];
  if (esgpy_args(fname, args, nargs, kwnames, kw, 1, a) < 0) return -1;
  return esgpy_int64(a[0], "id", id);
}

PyObject *esgpy_store_get_fault(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  int64_t id;
  if (fault_id_arg("get_fault", args, nargs, kwnames, &id) < 0) return NULL;
  PyObject *list = fault_query((StoreObject *)op, &id);
  if (!list) return NULL;
  PyObject *r = PyList_GET_SIZE(list) ? Py_NewRef(PyList_GET_ITEM(list, 0)) : Py_NewRef(Py_None);
  Py_DECREF(list);
  return r;
}

PyObject *esgpy_store_delete_fault(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  int64_t id;
  if (fault_id_arg("delete_fault", args, nargs, kwnames, &id) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_fault_delete(self->s, id);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyBool_FromLong(rc == ESG_OK);
}

PyObject *esgpy_store_purge_faults(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"before", NULL};
  PyObject *a[1];
  if (esgpy_args("purge_faults", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  int64_t before = INT64_MAX;
  if (a[0] && a[0] != Py_None && esgpy_seconds_ms(a[0], "before", &before) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  int64_t n = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_faults_purge(self->s, before, &n);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyLong_FromLongLong(n);
}

/* ------------------------------------------------------------ correlate -- */

typedef struct rule_ctx {
  esgpy_state *st;
  PyObject *pred;
  int raw;
  int failed;
  PyObject *t, *v, *tb; /* the predicate's exception */
  esgpy_collected emitted;
} rule_ctx;

static int rule_cb(void *ud, const esg_stored_event *events, size_t n) {
  rule_ctx *r = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  int match = -1;
  PyObject *list = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; list && i < n; i++) {
    PyObject *item = esgpy_json_item(r->st, events[i].json, events[i].json_len, r->raw);
    if (!item) Py_CLEAR(list);
    else PyList_SET_ITEM(list, (Py_ssize_t)i, item);
  }
  PyObject *res = list ? PyObject_CallOneArg(r->pred, list) : NULL;
  Py_XDECREF(list);
  if (res) {
    match = PyObject_IsTrue(res);
    Py_DECREF(res);
  }
  if (match < 0) {
    r->failed = 1;
    PyErr_Fetch(&r->t, &r->v, &r->tb);
  }
  PyGILState_Release(g);
  return match < 0 ? -1 : match;
}

PyObject *esgpy_store_correlate(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"corr_key", "rule", "predicate", "ttl", "raw", NULL};
  PyObject *a[5];
  if (esgpy_args("correlate", args, nargs, kwnames, kw, 3, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  esgpy_state *st = STATE(self);
  rule_ctx r;
  memset(&r, 0, sizeof r);
  r.st = st;
  r.pred = a[2];
  const char *key = esgpy_str(a[0], "corr_key", NULL), *rule = key ? esgpy_str(a[1], "rule", NULL) : NULL;
  if (!rule) return NULL;
  if (!PyCallable_Check(a[2])) {
    PyErr_SetString(PyExc_TypeError, "predicate must be callable");
    return NULL;
  }
  int64_t ttl = 0;
  if (a[3] && a[3] != Py_None && esgpy_seconds_ms(a[3], "ttl", &ttl) < 0) return NULL;
  if (esgpy_flag(a[4], &r.raw) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_correlate(self->s, key, rule, rule_cb, &r, ttl, esgpy_collect_cb, &r.emitted);
  Py_END_ALLOW_THREADS
  if (r.failed) {
    esgpy_store_leave(self);
    esgpy_collected_free(&r.emitted);
    PyErr_Restore(r.t, r.v, r.tb);
    return NULL;
  }
  if (esgpy_store_done(self, rc) < 0) {
    esgpy_collected_free(&r.emitted);
    return NULL;
  }
  PyObject *status = rc == ESG_OK ? st->s_fired : rc == ESG_DUPLICATE ? st->s_fired_before : st->s_no_match;
  PyObject *ev = r.emitted.n ? esgpy_json_item(st, r.emitted.json[0], r.emitted.len[0], r.raw) : Py_NewRef(Py_None);
  esgpy_collected_free(&r.emitted);
  if (!ev) return NULL;
  PyObject *t = PyTuple_Pack(2, status, ev);
  Py_DECREF(ev);
  return t;
}
