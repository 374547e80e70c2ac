/*
 * esg.Cache: the enrichment cache (esg/cache.h) on a Store. Every call takes the
 * store's lock and runs with the GIL released; a Python loader is called through
 * a trampoline that takes the GIL again. Single flight across threads comes from
 * the C library: each thread opens its own Store and Cache on the same file and
 * concurrent get_or_load calls for one key run the loader once.
 *
 * A loader returns the value (a JSON-able value, or bytes/str taken as the
 * value's text), or esg.ABSENT / None for "known absent" (cached as a negative).
 * An exception in it is a failed load: the C library then serves the stale value
 * when one is within max_stale, else the call raises CallbackError whose text
 * carries the exception's, chained to it (__cause__). BaseExceptions that are not
 * Exceptions (KeyboardInterrupt, SystemExit) propagate as they are.
 */
#include <string.h>
#include "esgpy.h"

#define STATE(self) ((esgpy_state *)PyModule_GetState(PyType_GetModuleByDef(Py_TYPE(self), &esgpy_module_def)))

typedef struct {
  PyObject_HEAD
  StoreObject *store;
  esg_cache *c;  /* detached by the store's close, freed by ours */
  int json; /* values are JSON: decode them */
} CacheObject;

/* Frees the C handle: memory only, but it unlinks from the store, so under the store's lock
   (taken with the GIL released; none in a forked child). From close() (not a finalizer), refused
   inside a call on the store, a loader's say. 0, or -1 with StateError. */
static int cache_free(CacheObject *self, int from_close) {
  int entered = esgpy_store_final_enter(self->store);
  if (entered == 0 && from_close) {
    esgpy_store_in_use(self->store);
    return -1;
  }
  esg_cache_close(self->c);
  self->c = NULL;
  esgpy_store_final_leave(self->store, entered);
  return 0;
}

/* seconds -> ms for an option: absent = 0 (the C default); zero_means is what 0 s maps to. */
static int opt_ms(PyObject *obj, const char *what, int64_t zero_means, int none_means_unlimited, int64_t *out) {
  *out = 0;
  if (!obj) return 0;
  if (obj == Py_None) {
    if (!none_means_unlimited) return 0;
    *out = -1;
    return 0;
  }
  if (esgpy_seconds_ms(obj, what, out) < 0) return -1;
  if (*out < 0) {
    PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
    return -1;
  }
  if (*out == 0) *out = zero_means;
  return 0;
}

static int opt_count(PyObject *obj, const char *what, int64_t *out) {
  *out = 0;
  if (!obj || obj == Py_None) return 0;
  if (esgpy_int64(obj, what, out) < 0) return -1;
  if (*out < 0) {
    PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
    return -1;
  }
  if (*out == 0) *out = -1; /* 0: no memory tier */
  return 0;
}

const char *const esgpy_cache_opt_names[ESGPY_CACHE_NOPTS + 1] = {
    "ttl", "negative_ttl", "max_stale", "load_timeout", "mem_entries", "mem_bytes", "mem_ttl", "max_value_bytes",
    "json", "collect_field", "collect_id_field", "version_field", NULL};

int esgpy_cache_opts(PyObject *const *a, esg_cache_opts *o) {
  int64_t mvb = 0;
  int json = 1;
  if (opt_ms(a[0], "ttl", 0, 0, &o->ttl_ms) < 0 || opt_ms(a[1], "negative_ttl", 0, 0, &o->negative_ttl_ms) < 0 ||
      opt_ms(a[2], "max_stale", -1, 0, &o->max_stale_ms) < 0 ||
      opt_ms(a[3], "load_timeout", -1, 1, &o->load_timeout_ms) < 0 ||
      opt_count(a[4], "mem_entries", &o->mem_entries) < 0 || opt_count(a[5], "mem_bytes", &o->mem_bytes) < 0 ||
      opt_ms(a[6], "mem_ttl", 0, 0, &o->mem_ttl_ms) < 0 ||
      (a[7] && a[7] != Py_None && esgpy_int64(a[7], "max_value_bytes", &mvb) < 0) || esgpy_flag(a[8], &json) < 0 ||
      esgpy_opt_str(a[9], "collect_field", &o->collect_field) < 0 ||
      esgpy_opt_str(a[10], "collect_id_field", &o->collect_id_field) < 0 ||
      esgpy_opt_str(a[11], "version_field", &o->version_field) < 0)
    return -1;
  if (!a[8]) json = 1;
  if (mvb < 0) {
    PyErr_SetString(PyExc_ValueError, "max_value_bytes must not be negative");
    return -1;
  }
  o->max_value_bytes = (size_t)mvb;
  o->no_json_check = !json;
  return 0;
}

static PyObject *cache_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
  static char *kw[] = {"store", "ttl", "negative_ttl", "max_stale", "load_timeout", "mem_entries", "mem_bytes",
                       "mem_ttl", "max_value_bytes", "json", "collect_field", "collect_id_field", "version_field",
                       NULL};
  PyObject *store_obj, *a[ESGPY_CACHE_NOPTS] = {NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OOOOOOOOOOOO:Cache", kw, &store_obj, &a[0], &a[1], &a[2], &a[3],
                                   &a[4], &a[5], &a[6], &a[7], &a[8], &a[9], &a[10], &a[11]))
    return NULL;
  esgpy_state *st = esgpy_state_of_type(tp);
  StoreObject *store = esgpy_store_arg(st, store_obj);
  if (!store) return NULL;
  esg_cache_opts o = ESG_CACHE_OPTS_INIT;
  if (esgpy_cache_opts(a, &o) < 0) return NULL;
  int json = !o.no_json_check;
  CacheObject *self = (CacheObject *)tp->tp_alloc(tp, 0);
  if (!self) return NULL;
  self->store = (StoreObject *)Py_NewRef(store);
  self->json = json;
  if (esgpy_store_enter(store) < 0) {
    Py_DECREF(self);
    return NULL;
  }
  esg_cache *c = NULL;
  int rc = esg_cache_open(&c, store->s, &o);
  if (rc != ESG_OK || store->clock_type) {
    esg_cache_close(c);
    if (store->clock_type) esgpy_store_check(store, 0);
    else esgpy_raise(st, rc, esg_errmsg(NULL));
    esgpy_store_leave(store);
    Py_DECREF(self);
    return NULL;
  }
  self->c = c;
  esgpy_store_leave(store);
  return (PyObject *)self;
}

static int cache_is_open(PyObject *self) { return ((CacheObject *)self)->c && ((CacheObject *)self)->store->s; }

static int cache_enter(CacheObject *self) {
  return esgpy_dep_enter((PyObject *)self, self->store, cache_is_open, "the cache is closed");
}

/* After a C call on the cache: the clock's exception, or rc < 0 with the cache's text. Leaves. -1 if raised. */
static int cache_check(CacheObject *self, int rc) {
  StoreObject *store = self->store;
  if (store->clock_type) {
    esgpy_store_fail(store, 0);
    return -1;
  }
  if (rc < 0) {
    esgpy_raise(STATE(self), rc, esg_errmsg(self->c));
    esgpy_store_leave(store);
    return -1;
  }
  esgpy_store_leave(store);
  return 0;
}

static PyObject *entry_tuple(CacheObject *self, const esg_cache_entry *e, int raw, PyObject *error) {
  esgpy_state *st = STATE(self);
  PyObject *t = PyStructSequence_New(st->CacheEntryType);
  if (!t) return NULL;
  PyObject *result = e->result == ESG_CACHE_HIT        ? st->s_hit
                     : e->result == ESG_CACHE_NEGATIVE ? st->s_negative
                     : e->result == ESG_CACHE_STALE    ? st->s_stale
                                                       : st->s_miss;
  PyObject *value = e->value ? esgpy_json_item(st, e->value, e->len, raw || !self->json) : Py_NewRef(Py_None);
  PyStructSequence_SetItem(t, 0, Py_NewRef(result));
  PyStructSequence_SetItem(t, 1, value);
  PyStructSequence_SetItem(t, 2, PyLong_FromLongLong(e->version));
  PyStructSequence_SetItem(t, 3, e->result == ESG_CACHE_MISS ? Py_NewRef(Py_None) : esgpy_ms_seconds(e->expires));
  PyStructSequence_SetItem(t, 4, PyBool_FromLong(e->loaded));
  PyStructSequence_SetItem(t, 5, PyLong_FromLong(e->load_status));
  PyStructSequence_SetItem(t, 6, Py_NewRef(error ? error : Py_None));
  return esgpy_struct_checked(t, 7);
}

static const char *key_arg(PyObject *obj) { return esgpy_str(obj, "key", NULL); }

static PyObject *cache_get(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "raw", NULL};
  PyObject *a[2];
  int raw;
  if (esgpy_args("get", args, nargs, kwnames, kw, 1, a) < 0 || esgpy_flag(a[1], &raw) < 0) return NULL;
  const char *key = key_arg(a[0]);
  if (!key || cache_enter(self) < 0) return NULL;
  esg_cache_entry e;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_get(self->c, key, &e);
  Py_END_ALLOW_THREADS
  if (rc >= 0 && !self->store->clock_type) {
    /* the value points into the cache: convert it before another thread may use the store */
    PyObject *r = entry_tuple(self, &e, raw, NULL);
    esgpy_store_leave(self->store);
    return r;
  }
  cache_check(self, rc);
  return NULL;
}

static PyObject *cache_put(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "value", "ttl", NULL};
  PyObject *a[3];
  if (esgpy_args("put", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  const char *key = key_arg(a[0]);
  int64_t ttl = 0;
  if (!key || (a[2] && a[2] != Py_None && esgpy_seconds_ms(a[2], "ttl", &ttl) < 0)) return NULL;
  esgpy_bytes b;
  if (esgpy_json_bytes(STATE(self), a[1], "value", &b) < 0) return NULL;
  if (cache_enter(self) < 0) {
    esgpy_bytes_release(&b);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_put(self->c, key, b.data, (size_t)b.len, ttl);
  Py_END_ALLOW_THREADS
  esgpy_bytes_release(&b);
  if (cache_check(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *cache_put_negative(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "ttl", NULL};
  PyObject *a[2];
  if (esgpy_args("put_negative", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  const char *key = key_arg(a[0]);
  int64_t ttl = 0;
  if (!key || (a[1] && a[1] != Py_None && esgpy_seconds_ms(a[1], "ttl", &ttl) < 0)) return NULL;
  if (cache_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_put_negative(self->c, key, ttl);
  Py_END_ALLOW_THREADS
  if (cache_check(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *cache_invalidate(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", NULL};
  PyObject *a[1];
  if (esgpy_args("invalidate", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  const char *key = key_arg(a[0]);
  if (!key || cache_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_invalidate(self->c, key);
  Py_END_ALLOW_THREADS
  if (cache_check(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

/* ------------------------------------------------------------ read-through -- */

typedef struct load_ctx {
  CacheObject *self;
  esgpy_state *st;
  PyObject *loader;
  int pass_deadline;
  int64_t ttl;
  PyObject *exc;   /* the loader's exception (an Exception): the failure's __cause__ */
  PyObject *fatal; /* a BaseException that must propagate as it is */
} load_ctx;

int esgpy_load(esgpy_state *st, PyObject *loader, int pass_deadline, int sorted, int64_t ttl, const char *key,
               int64_t deadline, esg_cache_load *ld, PyObject **exc, PyObject **fatal) {
  PyGILState_STATE g = PyGILState_Ensure();
  int rc = ESG_ECALLBACK;
  PyObject *k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)strlen(key), "replace"), *r = NULL;
  if (k) {
    if (pass_deadline) {
      PyObject *d = deadline == INT64_MAX ? Py_NewRef(Py_None) : esgpy_ms_seconds(deadline);
      PyObject *argv[2] = {k, d};
      r = d ? PyObject_Vectorcall(loader, argv, 2, NULL) : NULL;
      Py_XDECREF(d);
    } else {
      r = PyObject_CallOneArg(loader, k);
    }
    Py_DECREF(k);
  }
  if (r) {
    if (r == Py_None || r == st->ABSENT) {
      rc = ESG_NOT_FOUND;
    } else {
      esgpy_bytes b;
      if (sorted && !PyUnicode_Check(r) && !PyObject_CheckBuffer(r)) Py_SETREF(r, esgpy_json_fast(st, r));
      if (r && esgpy_json_bytes(st, r, "the loaded value", &b) == 0) {
        /* a refused value (too big, no memory) is noted in ld: returning OK lets the
           library report it with its own code */
        rc = esg_cache_load_set(ld, b.data, (size_t)b.len, ttl);
        if (rc == ESG_ETOOBIG || rc == ESG_ENOMEM) rc = ESG_OK;
        else if (rc != ESG_OK) esg_cache_load_error(ld, esg_strerror(rc));
        esgpy_bytes_release(&b);
      }
    }
    Py_XDECREF(r);
  }
  if (PyErr_Occurred()) {
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
      char text[256];
      esgpy_exc_text(text, sizeof text);
      esg_cache_load_error(ld, text);
      Py_XSETREF(*exc, esgpy_fetch_exc());
    } else {
      Py_XSETREF(*fatal, esgpy_fetch_exc());
      esg_cache_load_error(ld, "interrupted");
    }
    rc = ESG_ECALLBACK;
  }
  PyGILState_Release(g);
  return rc;
}

static int loader_cb(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  load_ctx *l = ud;
  return esgpy_load(l->st, l->loader, l->pass_deadline, 0, l->ttl, key, deadline, ld, &l->exc, &l->fatal);
}

static PyObject *cache_get_or_load(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "loader", "ttl", "raw", "deadline", NULL};
  PyObject *a[5];
  int raw;
  load_ctx l;
  memset(&l, 0, sizeof l);
  l.self = self;
  l.st = STATE(self);
  if (esgpy_args("get_or_load", args, nargs, kwnames, kw, 2, a) < 0 || esgpy_flag(a[3], &raw) < 0 ||
      esgpy_flag(a[4], &l.pass_deadline) < 0)
    return NULL;
  const char *key = key_arg(a[0]);
  if (!key) return NULL;
  if (!PyCallable_Check(a[1])) {
    PyErr_SetString(PyExc_TypeError, "loader must be callable");
    return NULL;
  }
  l.loader = a[1];
  if (a[2] && a[2] != Py_None && esgpy_seconds_ms(a[2], "ttl", &l.ttl) < 0) return NULL;
  if (cache_enter(self) < 0) return NULL;
  esg_cache_entry e;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_get_or_load(self->c, key, loader_cb, &l, &e);
  Py_END_ALLOW_THREADS
  PyObject *r = NULL;
  if (l.fatal) {
    esgpy_store_leave(self->store);
    PyErr_SetObject((PyObject *)Py_TYPE(l.fatal), l.fatal);
  } else if (rc >= 0 && !self->store->clock_type) {
    PyObject *err = NULL;
    if (e.load_status != ESG_OK) {
      const char *m = esg_errmsg(self->c);
      err = PyUnicode_DecodeUTF8(m, (Py_ssize_t)strlen(m), "replace");
    }
    if (e.load_status == ESG_OK || err) r = entry_tuple(self, &e, raw, err);
    Py_XDECREF(err);
    esgpy_store_leave(self->store);
  } else if (cache_check(self, rc) < 0 && l.exc && PyErr_Occurred()) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v) PyException_SetCause(v, Py_NewRef(l.exc));
    PyErr_Restore(t, v, tb);
  }
  Py_XDECREF(l.exc);
  Py_XDECREF(l.fatal);
  return r;
}

static PyObject *cache_collect(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"event", NULL};
  PyObject *a[1];
  if (esgpy_args("collect", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  esg_event *own;
  const esg_event *ev = esgpy_event_arg(st, a[0], &own);
  if (!ev) return NULL;
  if (cache_enter(self) < 0) {
    esg_event_free(own);
    return NULL;
  }
  const char *key = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_collect(self->c, ev, &key);
  Py_END_ALLOW_THREADS
  esg_event_free(own);
  PyObject *k = NULL;
  if (rc >= 0 && key) k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)strlen(key), "replace");
  if (cache_check(self, rc) < 0) {
    Py_XDECREF(k);
    return NULL;
  }
  if (!k && key) return NULL;
  PyObject *status = rc == ESG_OK ? st->s_applied : rc == ESG_STALE ? st->s_stale : st->s_no_match;
  PyObject *t = PyTuple_Pack(2, status, k ? k : Py_None);
  Py_XDECREF(k);
  return t;
}

static PyObject *cache_stats(CacheObject *self, PyObject *unused) {
  (void)unused;
  if (cache_enter(self) < 0) return NULL;
  esg_cache_stats s;
  int rc = esg_cache_stats_get(self->c, &s);
  if (cache_check(self, rc) < 0) return NULL;
  PyObject *t = PyStructSequence_New(STATE(self)->CacheStatsType);
  if (!t) return NULL;
  uint64_t v[] = {s.hits, s.misses, s.negatives, s.stale, s.loads, s.load_failures, s.mem_hits, s.evictions,
                  s.mem_entries, s.mem_bytes};
  for (int i = 0; i < 10; i++) PyStructSequence_SetItem(t, i, PyLong_FromUnsignedLongLong(v[i]));
  return esgpy_struct_checked(t, 10);
}

static PyObject *cache_purge(CacheObject *self, PyObject *unused) {
  (void)unused;
  if (cache_enter(self) < 0) return NULL;
  int rc;
  int64_t n = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_cache_purge(self->c, &n);
  Py_END_ALLOW_THREADS
  if (cache_check(self, rc) < 0) return NULL;
  return PyLong_FromLongLong(n);
}

static PyObject *cache_close(CacheObject *self, PyObject *unused) {
  (void)unused;
  if (self->c && cache_free(self, 1) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *cache_exit_ctx(CacheObject *self, PyObject *args) {
  (void)args;
  return esgpy_exit_result(cache_close(self, NULL));
}

static PyObject *cache_get_closed(CacheObject *self, void *c) {
  (void)c;
  return PyBool_FromLong(!cache_is_open((PyObject *)self));
}

static PyObject *cache_get_store(CacheObject *self, void *c) {
  (void)c;
  return Py_NewRef(self->store);
}

static void cache_dealloc(CacheObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  if (self->c) cache_free(self, 0);
  Py_CLEAR(self->store);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyMethodDef cache_methods[] = {
    {"get", FN(cache_get), FAST,
     "get(key, *, raw=False) -> CacheEntry\n\n"
     "Looks key up (memory tier, then the store). entry.result is 'hit', 'negative'\n"
     "(known absent), 'stale' (past its TTL, within max_stale) or 'miss'; entry.value\n"
     "is the value (decoded JSON; bytes with raw=True or a json=False cache) for hit\n"
     "and stale, else None."},
    {"put", FN(cache_put), FAST,
     "put(key, value, ttl=None) -> None\n\n"
     "Stores value (a JSON-able value, or bytes/str as the JSON text) under key, fresh\n"
     "for ttl seconds (None: the cache's ttl), replacing what was there."},
    {"put_negative", FN(cache_put_negative), FAST,
     "put_negative(key, ttl=None) -> None\n\nRecords that key is known absent for ttl seconds (None: negative_ttl)."},
    {"invalidate", FN(cache_invalidate), FAST,
     "invalidate(key) -> None\n\nForgets key in both tiers (and in this process's other caches on the file)."},
    {"get_or_load", FN(cache_get_or_load), FAST,
     "get_or_load(key, loader, *, ttl=None, raw=False, deadline=False) -> CacheEntry\n\n"
     "Read-through. A fresh value or negative answers at once; otherwise loader(key)\n"
     "(loader(key, deadline) with deadline=True: epoch seconds on the store's clock, or\n"
     "None) runs once per key at a time across the threads of this process (single\n"
     "flight; each thread with its own Store and Cache). It returns the value (JSON-able,\n"
     "or bytes/str as JSON text; cached for ttl seconds) or esg.ABSENT / None (cached\n"
     "as a negative). If it raises an Exception, times out or returns what cannot be\n"
     "cached, the load fails: a stale value within max_stale is served (result 'stale',\n"
     "load_status the code, error the text, which includes the exception's), else\n"
     "CallbackError / TimeoutError / JSONError / TooBigError is raised, chained to the\n"
     "loader's exception. The loader must not use this cache's store (StateError)."},
    {"collect", FN(cache_collect), FAST,
     "collect(event) -> (status, key)\n\n"
     "Materialises the entity carried by event under '<field>/<entity id>' if its\n"
     "version (the event's timestamp, or version_field) is newer than the cached one.\n"
     "status: 'applied', 'stale' (not newer) or 'no_match' (no entity; key None)."},
    {"stats", (PyCFunction)cache_stats, METH_NOARGS, "stats() -> CacheStats\n\nThis cache's counters since it was opened."},
    {"purge", (PyCFunction)cache_purge, METH_NOARGS,
     "purge() -> int\n\nDeletes the store entries too old to be served even as stale; returns how many."},
    {"close", (PyCFunction)cache_close, METH_NOARGS,
     "close() -> None\n\nFrees the memory tier (the store tier stays). Closing the store closes it too."},
    {"__enter__", esgpy_return_self, METH_NOARGS, "Returns the cache."},
    {"__exit__", (PyCFunction)cache_exit_ctx, METH_VARARGS, "Closes the cache."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef cache_getset[] = {{"closed", (getter)cache_get_closed, NULL, "True once closed", NULL},
                                     {"store", (getter)cache_get_store, NULL, "the Store it works on", NULL},
                                     {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot cache_slots[] = {
    {Py_tp_doc, "Cache(store, *, ttl=300.0, negative_ttl=30.0, max_stale=3600.0, load_timeout=10.0,\n"
                "      mem_entries=10000, mem_bytes=64 MiB, mem_ttl=None, max_value_bytes=1 MiB, json=True,\n"
                "      collect_field=None, collect_id_field='id', version_field=None)\n\n"
                "The enrichment cache on a Store: a bounded in-memory LRU in front of a table\n"
                "in the store. Times are seconds. max_stale=0: never serve stale;\n"
                "load_timeout=None: no limit; mem_entries=0 or mem_bytes=0: no memory tier;\n"
                "json=False: values are any bytes (returned as bytes). One Cache per Store,\n"
                "used by the Store's thread. A context manager that closes on exit."},
    {Py_tp_new, cache_new},
    {Py_tp_dealloc, cache_dealloc},
    {Py_tp_methods, cache_methods},
    {Py_tp_getset, cache_getset},
    {0, NULL}};

PyType_Spec esgpy_cache_spec = {
    .name = "esg.Cache",
    .basicsize = sizeof(CacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cache_slots,
};
