/*
 * Resync of slow data: Store methods for cursor jobs (with a Python fetch
 * callable), cursors and replay, and esg.Snapshot, a full listing in progress
 * (snapshot diff). The C calls run with the GIL released; the fetch and sink
 * callables are called with it taken again. Neither may use the store they run
 * on (StateError): the store is inside a call.
 */
#include <stdlib.h>
#include <string.h>
#include "esgpy.h"

#define STATE(self) ((esgpy_state *)PyModule_GetState(PyType_GetModuleByDef(Py_TYPE(self), &esgpy_module_def)))

static PyObject *stats_tuple(esgpy_state *st, const esg_resync_stats *s) {
  PyObject *t = PyStructSequence_New(st->ResyncStatsType);
  if (!t) return NULL;
  int64_t v[] = {s->pages, s->emitted, s->duplicates, s->created, s->updated, s->deleted, s->unchanged};
  for (int i = 0; i < 7; i++) PyStructSequence_SetItem(t, i, PyLong_FromLongLong(v[i]));
  PyStructSequence_SetItem(t, 7, PyBool_FromLong(s->done));
  return esgpy_struct_checked(t, 8);
}

/* A sink callable shared by cursor jobs and snapshots; its first exception is kept. Or a
   Gateway (gw): its pipeline runs each event, inside the transaction that records it. */
typedef struct sink_ctx {
  esgpy_state *st;
  PyObject *sink;
  int raw;
  PyObject *t, *v, *tb;
  int gw;
} sink_ctx;

static int sink_cb(void *ud, const esg_stored_event *ev) {
  sink_ctx *k = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  int rc = 1;
  if (!k->t) {
    PyObject *item = esgpy_json_item(k->st, ev->json, ev->json_len, k->raw);
    PyObject *r = item ? PyObject_CallOneArg(k->sink, item) : NULL;
    Py_XDECREF(item);
    if (r) {
      rc = 0;
      Py_DECREF(r);
    } else {
      PyErr_Fetch(&k->t, &k->v, &k->tb);
    }
  }
  PyGILState_Release(g);
  return rc;
}

/* Raises the kept exception (if any). Returns 1 when it did. */
static int sink_raise(sink_ctx *k) {
  if (!k->t) return 0;
  PyErr_Restore(k->t, k->v, k->tb);
  k->t = k->v = k->tb = NULL;
  return 1;
}

static int sink_arg(PyObject *obj, sink_ctx *k, esgpy_state *st, StoreObject *store, esg_resync_opts *o) {
  memset(k, 0, sizeof *k);
  k->st = st;
  if (!obj || obj == Py_None) return 0;
  int r = esgpy_gateway_sink(st, obj, store, o);
  if (r < 0) return -1;
  if (r == 0) {
    k->sink = obj;
    k->gw = 1;
    return 0;
  }
  if (!PyCallable_Check(obj)) {
    PyErr_SetString(PyExc_TypeError, "sink must be callable, a Gateway or None");
    return -1;
  }
  k->sink = obj;
  o->sink = sink_cb;
  o->sink_ud = k;
  return 0;
}

/* ---------------------------------------------------------------- cursors -- */

PyObject *esgpy_store_cursor_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"name", NULL};
  PyObject *a[1];
  if (esgpy_args("cursor_get", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  const char *name = esgpy_str(a[0], "name", NULL);
  if (!name || esgpy_store_enter(self) < 0) return NULL;
  char *cur = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cursor_get(self->s, name, &cur);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) {
    esg_free(cur);
    return NULL;
  }
  PyObject *r = esgpy_utf8_or_none(cur);
  esg_free(cur);
  return r;
}

PyObject *esgpy_store_cursor_set(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"name", "cursor", NULL};
  PyObject *a[2];
  if (esgpy_args("cursor_set", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  const char *name = esgpy_str(a[0], "name", NULL), *cur = name ? esgpy_str(a[1], "cursor", NULL) : NULL;
  if (!cur || esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cursor_set(self->s, name, cur);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

PyObject *esgpy_store_cursor_delete(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"name", NULL};
  PyObject *a[1];
  if (esgpy_args("cursor_delete", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  const char *name = esgpy_str(a[0], "name", NULL);
  if (!name || esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cursor_delete(self->s, name);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyBool_FromLong(rc == ESG_OK);
}

/* What the fetch trampoline keeps alive until the next fetch (the page's strings are Python's). */
typedef struct fetch_ctx {
  esgpy_state *st;
  PyObject *fetch;
  PyObject *keep;          /* the page object and the item fields' str objects */
  esg_resync_item *items;
  esgpy_bytes *data;
  size_t n;
  PyObject *t, *v, *tb;    /* the fetch's exception */
} fetch_ctx;

static void fetch_release(fetch_ctx *f) {
  for (size_t i = 0; i < f->n; i++) esgpy_bytes_release(&f->data[i]);
  free(f->items);
  free(f->data);
  f->items = NULL;
  f->data = NULL;
  f->n = 0;
  Py_CLEAR(f->keep);
}

/* A string field of an item: str, or int (made str); kept alive in f->keep. */
static int item_str(fetch_ctx *f, PyObject *item, const char *name, int required, const char **out) {
  *out = NULL;
  PyObject *v = PyMapping_GetItemString(item, name);
  if (!v) {
    if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
    PyErr_Clear();
    if (!required) return 0;
    PyErr_Format(PyExc_KeyError, "a fetched item has no \"%s\"", name);
    return -1;
  }
  if (v == Py_None && !required) {
    Py_DECREF(v);
    return 0;
  }
  if (PyLong_Check(v) && !PyBool_Check(v)) Py_SETREF(v, PyObject_Str(v));
  if (!v) return -1;
  int rc = PyList_Append(f->keep, v);
  Py_DECREF(v);
  if (rc < 0) return -1;
  char what[64];
  snprintf(what, sizeof what, "item \"%s\"", name);
  return (*out = esgpy_str(v, what, NULL)) ? 0 : -1;
}

static int fill_page(fetch_ctx *f, PyObject *page, esg_resync_page *out) {
  if (!PyTuple_Check(page) || PyTuple_GET_SIZE(page) < 2 || PyTuple_GET_SIZE(page) > 3) {
    PyErr_SetString(PyExc_TypeError, "fetch must return a tuple (items, next_cursor[, done])");
    return -1;
  }
  PyObject *seq = PySequence_Fast(PyTuple_GET_ITEM(page, 0), "the items of a page must be a sequence");
  if (!seq) return -1;
  if (PyList_Append(f->keep, seq) < 0) {
    Py_DECREF(seq);
    return -1;
  }
  Py_DECREF(seq);
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  f->items = calloc(n ? (size_t)n : 1, sizeof *f->items);
  f->data = calloc(n ? (size_t)n : 1, sizeof *f->data);
  if (!f->items || !f->data) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
    esg_resync_item *it = &f->items[i];
    if (!PyMapping_Check(item)) {
      PyErr_Format(PyExc_TypeError, "fetched item %zd must be a mapping", i);
      return -1;
    }
    const char *pk = NULL;
    if (item_str(f, item, "id", 1, &it->id) < 0 || item_str(f, item, "version", 1, &it->version) < 0 ||
        item_str(f, item, "type", 1, &it->type) < 0 || item_str(f, item, "partitionKey", 0, &pk) < 0)
      return -1;
    it->partition_key = pk;
    PyObject *ts = PyMapping_GetItemString(item, "timestamp");
    if (ts) {
      int bad = ts != Py_None && esgpy_int64(ts, "item \"timestamp\" (epoch ms)", &it->timestamp) < 0;
      Py_DECREF(ts);
      if (bad) return -1;
    } else if (PyErr_ExceptionMatches(PyExc_KeyError)) {
      PyErr_Clear();
    } else {
      return -1;
    }
    PyObject *data = PyMapping_GetItemString(item, "data");
    if (!data) {
      if (PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_KeyError, "fetched item %zd has no \"data\"", i);
      }
      return -1;
    }
    int rc = esgpy_json_bytes(f->st, data, "item \"data\"", &f->data[i]);
    Py_DECREF(data);
    if (rc < 0) return -1;
    f->n = (size_t)i + 1;
    it->data = f->data[i].data;
    it->data_len = (size_t)f->data[i].len;
  }
  out->items = f->items;
  out->n = (size_t)n;
  PyObject *next = PyTuple_GET_ITEM(page, 1);
  if (next != Py_None) {
    if (PyLong_Check(next) && !PyBool_Check(next)) {
      if (!(next = PyObject_Str(next))) return -1;
      int rc = PyList_Append(f->keep, next);
      Py_DECREF(next);
      if (rc < 0) return -1;
    }
    if (!(out->next_cursor = esgpy_str(next, "next_cursor", NULL))) return -1;
  }
  if (PyTuple_GET_SIZE(page) == 3) {
    int d = PyObject_IsTrue(PyTuple_GET_ITEM(page, 2));
    if (d < 0) return -1;
    out->done = d;
  }
  return 0;
}

static int fetch_cb(void *ud, const char *cursor, esg_resync_page *page) {
  fetch_ctx *f = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  int rc = 1;
  fetch_release(f);
  if (!f->t && (f->keep = PyList_New(0))) {
    PyObject *c = esgpy_utf8_or_none(cursor);
    PyObject *r = c ? PyObject_CallOneArg(f->fetch, c) : NULL;
    Py_XDECREF(c);
    if (r) {
      int ok = PyList_Append(f->keep, r) == 0 && fill_page(f, r, page) == 0;
      Py_DECREF(r);
      if (ok) rc = 0;
    }
  }
  if (rc && !f->t) PyErr_Fetch(&f->t, &f->v, &f->tb);
  PyGILState_Release(g);
  return rc;
}

PyObject *esgpy_store_cursor_run(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"name", "source", "fetch", "sink", "no_log", "log_ttl", "entity_field",
                                   "max_pages", "raw", NULL};
  PyObject *a[9];
  if (esgpy_args("cursor_run", args, nargs, kwnames, kw, 3, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  esgpy_state *st = STATE(self);
  esg_resync_opts o = ESG_RESYNC_OPTS_INIT;
  sink_ctx k;
  const char *name = esgpy_str(a[0], "name", NULL), *source = name ? esgpy_str(a[1], "source", NULL) : NULL;
  if (!source) return NULL;
  if (!PyCallable_Check(a[2])) {
    PyErr_SetString(PyExc_TypeError, "fetch must be callable");
    return NULL;
  }
  if (sink_arg(a[3], &k, st, self, &o) < 0 || esgpy_flag(a[4], &o.no_log) < 0 || esgpy_flag(a[8], &k.raw) < 0 ||
      esgpy_opt_str(a[6], "entity_field", &o.entity_field) < 0 || esgpy_opt_int32(a[7], "max_pages", &o.max_pages) < 0)
    return NULL;
  if (a[5] && a[5] != Py_None && esgpy_seconds_ms(a[5], "log_ttl", &o.log_ttl_ms) < 0) return NULL;
  fetch_ctx f;
  memset(&f, 0, sizeof f);
  f.st = st;
  f.fetch = a[2];
  if (esgpy_store_enter(self) < 0) return NULL;
  if (k.gw && esgpy_gateway_sink_enter(k.sink) < 0) {
    esgpy_store_leave(self);
    return NULL;
  }
  esg_resync_stats stats;
  memset(&stats, 0, sizeof stats);
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cursor_run(self->s, name, source, fetch_cb, &f, &o, &stats);
  Py_END_ALLOW_THREADS
  fetch_release(&f);
  if (k.gw && esgpy_gateway_sink_done(k.sink) < 0) { /* what stopped the gateway comes first */
    esgpy_store_leave(self);
    Py_XDECREF(f.t);
    Py_XDECREF(f.v);
    Py_XDECREF(f.tb);
    return NULL;
  }
  if (f.t) {
    esgpy_store_leave(self);
    sink_raise(&k);
    Py_XDECREF(k.t);
    PyErr_Restore(f.t, f.v, f.tb);
    return NULL;
  }
  if (sink_raise(&k)) {
    esgpy_store_leave(self);
    return NULL;
  }
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return stats_tuple(st, &stats);
}

/* ----------------------------------------------------------------- replay -- */

PyObject *esgpy_store_replay(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"corr_key", "type", "since", "until", "raw", NULL};
  PyObject *a[5];
  if (esgpy_args("replay", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  StoreObject *self = (StoreObject *)op;
  esg_replay_filter flt;
  memset(&flt, 0, sizeof flt);
  int raw;
  if (esgpy_opt_str(a[0], "corr_key", &flt.corr_key) < 0 || esgpy_opt_str(a[1], "type", &flt.type) < 0 ||
      esgpy_flag(a[4], &raw) < 0)
    return NULL;
  if (a[2] && a[2] != Py_None && esgpy_int64(a[2], "since (epoch ms)", &flt.since) < 0) return NULL;
  if (a[3] && a[3] != Py_None && esgpy_int64(a[3], "until (epoch ms)", &flt.until) < 0) return NULL;
  esgpy_collected c;
  memset(&c, 0, sizeof c);
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  int64_t n = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_replay(self->s, &flt, esgpy_collect_cb, &c, &n);
  Py_END_ALLOW_THREADS
  if (esgpy_collect_done(self, rc, &c) < 0) return NULL;
  PyObject *list = esgpy_collected_list(STATE(self), &c, raw);
  esgpy_collected_free(&c);
  return list;
}

/* --------------------------------------------------------------- Snapshot -- */

typedef struct {
  PyObject_HEAD
  StoreObject *store;
  esg_snapshot *sn; /* detached by the store's close, freed by ours */
  sink_ctx sink;
  PyObject *keep; /* the option strings the C listing points to */
  esg_resync_stats stats;
} SnapshotObject;

/* Frees the listing under the store's lock (taken with the GIL released; none in a forked child,
   where libesg commits nothing); closing commits its open batch, the GIL released (it may wait
   busy_timeout), and the listing stays open in the store. From close() (not a finalizer),
   refused inside a call on the store, its sink's say. 0, or -1 with StateError. */
static int snap_free(SnapshotObject *self, int from_close) {
  int entered = esgpy_store_final_enter(self->store);
  if (entered == 0 && from_close) {
    esgpy_store_in_use(self->store);
    return -1;
  }
  esg_snapshot *sn = self->sn;
  self->sn = NULL;
  Py_BEGIN_ALLOW_THREADS
  esg_snapshot_close(sn);
  Py_END_ALLOW_THREADS
  esgpy_store_final_leave(self->store, entered);
  return 0;
}

PyObject *esgpy_store_snapshot(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"source", "sink", "no_log", "log_ttl", "entity_field", "type", "batch",
                                   "raw", NULL};
  PyObject *a[8];
  if (esgpy_args("snapshot", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  StoreObject *store = (StoreObject *)op;
  esgpy_state *st = STATE(store);
  const char *source = esgpy_str(a[0], "source", NULL);
  if (!source) return NULL;
  SnapshotObject *self = PyObject_GC_New(SnapshotObject, st->SnapshotType);
  if (!self) return NULL;
  self->store = (StoreObject *)Py_NewRef(store);
  self->sn = NULL;
  memset(&self->stats, 0, sizeof self->stats);
  self->keep = PyTuple_Pack(2, a[4] ? a[4] : Py_None, a[5] ? a[5] : Py_None);
  memset(&self->sink, 0, sizeof self->sink);
  PyObject_GC_Track(self);
  esg_resync_opts o = ESG_RESYNC_OPTS_INIT;
  if (!self->keep || sink_arg(a[1], &self->sink, st, store, &o) < 0) goto fail;
  Py_XINCREF(self->sink.sink);
  if (esgpy_flag(a[2], &o.no_log) < 0 || esgpy_flag(a[7], &self->sink.raw) < 0 ||
      esgpy_opt_str(a[4], "entity_field", &o.entity_field) < 0 || esgpy_opt_str(a[5], "type", &o.type) < 0 ||
      esgpy_opt_int32(a[6], "batch", &o.batch) < 0)
    goto fail;
  if (a[3] && a[3] != Py_None && esgpy_seconds_ms(a[3], "log_ttl", &o.log_ttl_ms) < 0) goto fail;
  if (esgpy_store_enter(store) < 0) goto fail;
  int rc;
  esg_snapshot *sn = NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_snapshot_begin(&sn, store->s, source, &o);
  Py_END_ALLOW_THREADS
  if (esgpy_store_check(store, rc) < 0) {
    esgpy_store_leave(store);
    goto fail;
  }
  self->sn = sn;
  esgpy_store_leave(store);
  return (PyObject *)self;
fail:
  Py_DECREF(self);
  return NULL;
}

/* Enters the store for a call on the listing; -1 with StateError when closed (or its store). */
static int snap_is_open(PyObject *self) { return ((SnapshotObject *)self)->sn && ((SnapshotObject *)self)->store->s; }

static int snap_enter(SnapshotObject *self) {
  if (esgpy_dep_enter((PyObject *)self, self->store, snap_is_open, "the snapshot is closed") < 0) return -1;
  if (self->sink.gw && esgpy_gateway_sink_enter(self->sink.sink) < 0) {
    esgpy_store_leave(self->store);
    return -1;
  }
  return 0;
}

/* After a C call on the listing: the sink's exception first, then rc (text from the listing). */
static PyObject *snap_done(SnapshotObject *self, int rc) {
  StoreObject *store = self->store;
  if (self->sink.gw && esgpy_gateway_sink_done(self->sink.sink) < 0) {
    esgpy_store_leave(store);
    return NULL;
  }
  if (store->clock_type) return esgpy_store_fail(store, 0);
  if (sink_raise(&self->sink)) {
    esgpy_store_leave(store);
    return NULL;
  }
  esgpy_store_leave(store);
  if (rc < 0) return esgpy_raise(STATE(self), rc, esg_errmsg(self->sn));
  Py_RETURN_NONE;
}

static PyObject *snap_add(SnapshotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "content", NULL};
  PyObject *a[2];
  if (esgpy_args("add", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  const char *key = esgpy_str(a[0], "key", NULL);
  if (!key) return NULL;
  esgpy_bytes b;
  if (esgpy_json_bytes(STATE(self), a[1], "content", &b) < 0) return NULL;
  if (snap_enter(self) < 0) {
    esgpy_bytes_release(&b);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_snapshot_add(self->sn, key, b.data, (size_t)b.len);
  Py_END_ALLOW_THREADS
  esgpy_bytes_release(&b);
  return snap_done(self, rc);
}

static PyObject *snap_finish(SnapshotObject *self, PyObject *unused) {
  (void)unused;
  if (snap_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_snapshot_finish(self->sn, &self->stats);
  Py_END_ALLOW_THREADS
  PyObject *r = snap_done(self, rc);
  if (!r) return NULL;
  Py_DECREF(r);
  return stats_tuple(STATE(self), &self->stats);
}

static PyObject *snap_close(SnapshotObject *self, PyObject *unused) {
  (void)unused;
  if (self->sn && snap_free(self, 1) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *snap_exit_ctx(SnapshotObject *self, PyObject *args) {
  (void)args;
  return esgpy_exit_result(snap_close(self, NULL));
}

static PyObject *snap_get_closed(SnapshotObject *self, void *c) {
  (void)c;
  return PyBool_FromLong(!snap_is_open((PyObject *)self));
}

static int snap_traverse(SnapshotObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->sink.sink);
  Py_VISIT(self->store);
  return 0;
}

static int snap_clear(SnapshotObject *self) {
  Py_CLEAR(self->sink.sink);
  return 0;
}

static void snap_dealloc(SnapshotObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (self->sn) { /* the store is alive (we hold it), but maybe in use by another thread */
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    snap_free(self, 0);
    PyErr_Restore(t, v, tb);
  }
  Py_CLEAR(self->sink.sink);
  Py_CLEAR(self->sink.t);
  Py_CLEAR(self->sink.v);
  Py_CLEAR(self->sink.tb);
  Py_CLEAR(self->keep);
  Py_CLEAR(self->store);
  PyObject_GC_Del(self);
  Py_DECREF(tp);
}

static PyMethodDef snap_methods[] = {
    {"add", FN(snap_add), FAST,
     "add(key, content) -> None\n\n"
     "Adds one entry of the listing (any order): content is a JSON-able value or JSON\n"
     "text. Emits '<type>-created' for a new key, '<type>-updated' when its canonical\n"
     "content changed, nothing when unchanged. A bad entry raises (InvalidArgumentError,\n"
     "JSONError, TooBigError) and the listing may go on."},
    {"finish", (PyCFunction)snap_finish, METH_NOARGS,
     "finish() -> ResyncStats\n\n"
     "Ends the listing: keys not seen are emitted as '<type>-deleted'. Returns the\n"
     "counts (created, updated, deleted, unchanged, emitted, duplicates)."},
    {"close", (PyCFunction)snap_close, METH_NOARGS,
     "close() -> None\n\nFrees the listing. Unfinished, it stays open in the store and a later\n"
     "Store.snapshot(source) resumes it (no deletions are emitted)."},
    {"__enter__", esgpy_return_self, METH_NOARGS, "Returns the snapshot."},
    {"__exit__", (PyCFunction)snap_exit_ctx, METH_VARARGS, "Closes the snapshot (without finishing it)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef snap_getset[] = {{"closed", (getter)snap_get_closed, NULL, "True once closed", NULL},
                                    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot snap_slots[] = {
    {Py_tp_doc, "A full listing of one external source in progress (snapshot diff).\n\n"
                "Made by Store.snapshot(source, ...). Call add(key, content) for every entry,\n"
                "then finish(). A context manager that closes on exit."},
    {Py_tp_dealloc, snap_dealloc},
    {Py_tp_traverse, snap_traverse},
    {Py_tp_clear, snap_clear},
    {Py_tp_methods, snap_methods},
    {Py_tp_getset, snap_getset},
    {0, NULL}};

PyType_Spec esgpy_snapshot_spec = {
    .name = "esg.Snapshot",
    .basicsize = sizeof(SnapshotObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = snap_slots,
};
