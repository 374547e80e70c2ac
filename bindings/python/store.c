/*
 * esg._esg.Store: one esg_store handle, its claims, event log, entities and
 * batches (faults, correlation, latches and resync are in faults.c, latch.c and
 * resync.c). Closing it detaches, in libesg, the caches, egress engines and
 * snapshots built on it. Every call that can touch the database runs with the
 * GIL released.
 *
 * A C store handle is for one thread at a time. The documented pattern is one
 * Store per thread; to keep a shared one from crashing anyway, each Store has a
 * lock held for the length of every call (waited for with the GIL released), and
 * a call from inside one of its own callbacks (the clock, purge_events) is
 * refused with StateError instead of deadlocking.
 *
 * A Python clock is called by the C library, possibly while the GIL is released,
 * so the C callback takes the GIL with PyGILState_Ensure. An exception raised by
 * the clock cannot cross the C library: it is kept and raised when the call ends.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "esgpy.h"
#include "pythread.h"

/* This process's id, refreshed in the child of every fork(): getpid() is a system call,
   and the check runs on every call of every object. */
static long this_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static void refresh_pid(void) { this_pid = (long)getpid(); }
static void pid_init(void) {
  refresh_pid();
  pthread_atfork(NULL, NULL, refresh_pid);
}

long esgpy_pid(void) {
  pthread_once(&pid_once, pid_init);
  return this_pid;
}

int esgpy_forked(long pid) { return pid != 0 && pid != this_pid; }

PyObject *esgpy_raise_forked(esgpy_state *st, const char *what, long pid) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s was opened by process %ld; open it again in this process (pid %ld)", what, pid,
           (long)getpid());
  return esgpy_raise(st, ESG_ESTATE, msg);
}


/* esg.Store subclasses this type in Python: find the module state by definition. */
#define STATE_SLOW(self) ((esgpy_state *)PyModule_GetState(PyType_GetModuleByDef(Py_TYPE(self), &esgpy_module_def)))
#define STATE(self) esgpy_store_state((PyObject *)(self))


int esgpy_store_enter(StoreObject *self) {
  esgpy_state *st = STATE(self);
  if (esgpy_forked(self->pid) && self->s) { /* before the lock: a thread of the parent may hold it */
    esgpy_raise_forked(st, "the store", self->pid);
    return -1;
  }
  if (!self->lock || !self->s) {
    esgpy_raise(st, ESG_ESTATE, "the store is closed");
    return -1;
  }
  if (self->owner == PyThread_get_thread_ident()) {
    if (self->lent && !self->nested) { /* a gateway step, between the gateway's store calls */
      self->nested = 1;
      return 0;
    }
    esgpy_store_in_use(self);
    return -1;
  }
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  if (!self->s) { /* closed by another thread while we waited */
    PyThread_release_lock(self->lock);
    esgpy_raise(st, ESG_ESTATE, "the store is closed");
    return -1;
  }
  self->owner = PyThread_get_thread_ident();
  return 0;
}

void esgpy_store_leave(StoreObject *self) {
  if (self->nested) { /* a call from a gateway step: the gateway's call goes on holding the lock */
    self->nested = 0;
    return;
  }
  self->owner = 0;
  PyThread_release_lock(self->lock);
}

int esgpy_store_final_enter(StoreObject *self) {
  if (esgpy_forked(self->pid)) return -1;
  if (self->lent && !self->nested && self->owner == PyThread_get_thread_ident()) {
    self->nested = 1; /* from a gateway step: esgpy_store_final_leave ends the nested call */
    return 1;
  }
  if (!self->lock || self->owner == PyThread_get_thread_ident()) return 0;
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  self->owner = PyThread_get_thread_ident(); /* a callback run by the closing gets StateError */
  return 1;
}

void esgpy_store_final_leave(StoreObject *self, int entered) {
  if (entered == 1) esgpy_store_leave(self);
}

PyObject *esgpy_store_in_use(StoreObject *self) {
  return esgpy_raise(STATE(self), ESG_ESTATE, "the store is in use by this thread (a call from one of its own callbacks)");
}

/* After a C call: raises the clock's exception, or the error for rc < 0. Returns -1 when raised. */
int esgpy_store_check(StoreObject *self, int rc) {
  if (self->clock_type) {
    PyErr_Restore(self->clock_type, self->clock_value, self->clock_tb);
    self->clock_type = self->clock_value = self->clock_tb = NULL;
    return -1;
  }
  if (rc < 0) {
    esgpy_raise(STATE(self), rc, esg_errmsg(self->s));
    return -1;
  }
  return 0;
}

/* Raises for rc (or the clock), then leaves; NULL for the caller to return. */
PyObject *esgpy_store_fail(StoreObject *self, int rc) {
  esgpy_store_check(self, rc);
  esgpy_store_leave(self);
  return NULL;
}

static int64_t py_clock(void *ud) {
  StoreObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  int64_t ms = self->last_now;
  if (!self->clock_type && self->clock) {
    PyObject *r = PyObject_CallNoArgs(self->clock);
    if (r) {
      double d = PyFloat_AsDouble(r);
      Py_DECREF(r);
      if (!(d == -1.0 && PyErr_Occurred())) {
        if (esg_ms_from_seconds(d, &ms) == ESG_OK) self->last_now = ms;
        else PyErr_SetString(PyExc_ValueError, "the clock returned a value out of range");
      }
    }
    if (PyErr_Occurred()) PyErr_Fetch(&self->clock_type, &self->clock_value, &self->clock_tb);
  }
  PyGILState_Release(g);
  return ms;
}

/* ------------------------------------------------------------ lifecycle -- */

/* An optional duration in seconds as int ms (InvalidArgumentError beyond INT32_MAX ms); a positive
   value under 1 ms is 1 ms. Absent or None leaves *out. 0 or -1. */
static int opt_ms32(esgpy_state *st, PyObject *obj, const char *what, int *out) {
  int64_t v;
  if (!obj || obj == Py_None) return 0;
  if (esgpy_seconds_ms(obj, what, &v) < 0) return -1;
  if (v < 0 || v > INT32_MAX) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be between 0 and 2147483 seconds", what);
    esgpy_raise(st, ESG_EINVAL, msg);
    return -1;
  }
  *out = v == 0 && PyFloat_AsDouble(obj) > 0 ? 1 : (int)v;
  return 0;
}

static int store_init(StoreObject *self, PyObject *args, PyObject *kwds) {
  static char *kw[] = {"path", "clock", "durability", "busy_timeout", "group_commit", "group_commit_max", NULL};
  PyObject *path = NULL, *clock = Py_None, *durability = NULL, *busy = NULL, *group = NULL, *gmax = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$OOOOO:Store", kw, PyUnicode_FSConverter, &path, &clock,
                                   &durability, &busy, &group, &gmax))
    return -1;
  esgpy_state *st = self->st = STATE_SLOW(self);
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  int64_t v;
  if (self->s) {
    esgpy_raise(st, ESG_ESTATE, "the store is already open");
    goto fail;
  }
  if (clock != Py_None && !PyCallable_Check(clock)) {
    PyErr_SetString(PyExc_TypeError, "clock must be a callable returning seconds, or None");
    goto fail;
  }
  if (durability && durability != Py_None) {
    const char *d = esgpy_str(durability, "durability", NULL);
    if (!d) goto fail;
    if (strcmp(d, "normal") == 0) o.durability = ESG_DURABILITY_NORMAL;
    else if (strcmp(d, "full") == 0) o.durability = ESG_DURABILITY_FULL;
    else {
      esgpy_raise(st, ESG_EINVAL, "durability must be \"normal\" or \"full\"");
      goto fail;
    }
  }
  if (opt_ms32(st, busy, "busy_timeout", &o.busy_timeout_ms) < 0 ||
      opt_ms32(st, group, "group_commit", &o.group_commit_ms) < 0)
    goto fail;
  if (gmax && gmax != Py_None) {
    if (esgpy_int64(gmax, "group_commit_max", &v) < 0) goto fail;
    if (v < 0 || v > INT32_MAX) {
      esgpy_raise(st, ESG_EINVAL, "group_commit_max must be between 0 and 2147483647");
      goto fail;
    }
    o.group_commit_max = (int)v;
  }
  if (!self->lock && !(self->lock = PyThread_allocate_lock())) {
    PyErr_NoMemory();
    goto fail;
  }
  if (clock != Py_None) {
    Py_XSETREF(self->clock, Py_NewRef(clock));
    o.clock = py_clock;
    o.clock_ud = self;
  }
  const char *p = PyBytes_AS_STRING(path);
  esg_store *s = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_store_open(&s, p, &o);
  Py_END_ALLOW_THREADS
  if (self->clock_type) {
    esg_store_close(s);
    esgpy_store_check(self, 0);
    goto fail;
  }
  if (rc != ESG_OK) {
    esgpy_raise(st, rc, esg_errmsg(NULL));
    goto fail;
  }
  self->s = s;
  self->pid = esgpy_pid();
  Py_XSETREF(self->path, PyUnicode_DecodeFSDefault(p));
  Py_DECREF(path);
  return self->path ? 0 : -1;
fail:
  Py_DECREF(path);
  return -1;
}

/*
 * Closes the C handle with the GIL released (closing may commit); libesg first detaches what is
 * built on it, and the callbacks of the deliveries it cancels take the GIL back. self->s stays set
 * meanwhile: such a callback finds the store in use, not closed. ESG_OK or the final commit's
 * error (text in esg_errmsg(NULL)); the handle is gone either way. In a forked child libesg writes
 * nothing and runs no callback, and this runs without the lock (a thread of the parent may have
 * held it at fork).
 */
static int store_close_handle(StoreObject *self) {
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_store_close(self->s);
  Py_END_ALLOW_THREADS
  self->s = NULL;
  return rc;
}

static PyObject *store_close(StoreObject *self, PyObject *unused) {
  (void)unused;
  if (!self->s) Py_RETURN_NONE; /* closing twice is fine */
  if (esgpy_forked(self->pid)) {
    store_close_handle(self);
    Py_RETURN_NONE;
  }
  if (esgpy_store_enter(self) < 0) {
    if (!self->s) { /* closed meanwhile */
      PyErr_Clear();
      Py_RETURN_NONE;
    }
    return NULL;
  }
  if (self->nested) { /* from a gateway step: the gateway is using the handle */
    esgpy_store_leave(self);
    return esgpy_raise(STATE(self), ESG_ESTATE, "the store cannot be closed from a gateway step");
  }
  int rc = store_close_handle(self);
  if (esgpy_store_done(self, 0) < 0) return NULL;
  if (rc < 0) { /* closed all the same: the group's final commit failed */
    char msg[600];
    snprintf(msg, sizeof msg, "the store is closed, but its open group could not be committed: %s", esg_errmsg(NULL));
    return esgpy_raise(STATE(self), rc, msg);
  }
  Py_RETURN_NONE;
}

static int store_traverse(StoreObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->clock);
  return 0;
}

static int store_clear(StoreObject *self) {
  Py_CLEAR(self->clock);
  return 0;
}

static void store_dealloc(StoreObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (self->s) { /* nothing built on it is left: those hold a reference */
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    store_close_handle(self);
    PyErr_Restore(t, v, tb);
  }
  if (self->lock && !esgpy_forked(self->pid)) PyThread_free_lock(self->lock); /* a child's may be held */
  store_clear(self);
  Py_CLEAR(self->path);
  Py_CLEAR(self->clock_type);
  Py_CLEAR(self->clock_value);
  Py_CLEAR(self->clock_tb);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

/* __enter__: unlike the objects built on a store, refuses a closed one. */
static PyObject *store_enter_ctx(StoreObject *self, PyObject *unused) {
  (void)unused;
  if (!self->s) return esgpy_raise(STATE(self), ESG_ESTATE, "the store is closed");
  if (esgpy_forked(self->pid)) return esgpy_raise_forked(STATE(self), "the store", self->pid);
  return Py_NewRef(self);
}

static PyObject *store_exit_ctx(StoreObject *self, PyObject *args) {
  (void)args;
  return esgpy_exit_result(store_close(self, NULL));
}

static PyObject *store_get_closed(StoreObject *self, void *c) {
  (void)c;
  return PyBool_FromLong(self->s == NULL);
}

static PyObject *store_get_path(StoreObject *self, void *c) {
  (void)c;
  return Py_NewRef(self->path ? self->path : Py_None);
}

static PyObject *store_get_backend(StoreObject *self, void *c) {
  (void)c;
  if (esgpy_store_enter(self) < 0) return NULL;
  PyObject *r = PyUnicode_FromString(esg_store_backend(self->s));
  esgpy_store_leave(self);
  return r;
}

static PyObject *store_get_schema(StoreObject *self, void *c) {
  (void)c;
  if (esgpy_store_enter(self) < 0) return NULL;
  int v;
  Py_BEGIN_ALLOW_THREADS
  v = esg_store_schema_version(self->s);
  Py_END_ALLOW_THREADS
  esgpy_store_leave(self);
  return PyLong_FromLong(v);
}

static PyObject *store_get_bytes_written(StoreObject *self, void *c) {
  (void)c;
  if (esgpy_store_enter(self) < 0) return NULL;
  uint64_t v = esg_store_bytes_written(self->s);
  esgpy_store_leave(self);
  return PyLong_FromUnsignedLongLong(v);
}

static PyObject *store_now(StoreObject *self, PyObject *unused) {
  (void)unused;
  if (esgpy_store_enter(self) < 0) return NULL;
  int64_t ms;
  Py_BEGIN_ALLOW_THREADS
  ms = esg_store_now(self->s);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, 0) < 0) return NULL;
  return esgpy_ms_seconds(ms);
}

/* --------------------------------------------------------------- batches -- */

typedef int (*store_fn)(esg_store *);

static PyObject *simple_call(StoreObject *self, store_fn fn) {
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = fn(self->s);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *store_begin(StoreObject *self, PyObject *u) {
  (void)u;
  return simple_call(self, esg_store_begin);
}
static PyObject *store_commit(StoreObject *self, PyObject *u) {
  (void)u;
  return simple_call(self, esg_store_commit);
}
static PyObject *store_rollback(StoreObject *self, PyObject *u) {
  (void)u;
  return simple_call(self, esg_store_rollback);
}
static PyObject *store_flush(StoreObject *self, PyObject *u) {
  (void)u;
  return simple_call(self, esg_store_flush);
}

static PyObject *store_flush_due(StoreObject *self, PyObject *u) {
  (void)u;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  int64_t next = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_store_flush_due(self->s, &next);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  if (!next) Py_RETURN_NONE;
  return esgpy_ms_seconds(next);
}

/* ---------------------------------------------------------------- claims -- */

/* The payload hash: None (no check), Event (its SHA-256), bytes/str (as is up to
   HASH_MAX bytes, else their SHA-256), anything else (SHA-256 of canonical JSON). */
static int payload_hash(esgpy_state *st, PyObject *payload, uint8_t *buf, size_t *len) {
  *len = 0;
  if (!payload || payload == Py_None) return 0;
  if (esgpy_event_check(st, payload)) {
    memcpy(buf, esg_event_hash(esgpy_event_handle(payload)), 32);
    *len = 32;
    return 0;
  }
  if (PyUnicode_Check(payload) || PyObject_CheckBuffer(payload)) {
    esgpy_bytes b;
    if (esgpy_raw_bytes(payload, "payload", &b) < 0) return -1;
    if (b.len <= ESG_HASH_MAX) {
      memcpy(buf, b.data, (size_t)b.len);
      *len = (size_t)b.len;
    } else {
      esg_sha256(b.data, (size_t)b.len, buf);
      *len = 32;
    }
    esgpy_bytes_release(&b);
    return 0;
  }
  esgpy_bytes b;
  if (esgpy_json_bytes(st, payload, "payload", &b) < 0) return -1;
  char hex[65];
  int rc = esg_content_hash(b.data, (size_t)b.len, hex);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) {
    esgpy_raise(st, rc, esg_errmsg(NULL));
    return -1;
  }
  for (int i = 0; i < 32; i++) {
    unsigned hi = (unsigned)(hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10);
    unsigned lo = (unsigned)(hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10);
    buf[i] = (uint8_t)(hi << 4 | lo);
  }
  *len = 32;
  return 0;
}

static PyObject *claim_result(esgpy_state *st, int rc, PyObject *key, const esg_claim_info *ci) {
  PyObject *c = PyStructSequence_New(st->ClaimType);
  if (!c) return NULL;
  PyObject *status = rc == ESG_NEW ? st->s_new : rc == ESG_DUPLICATE ? st->s_duplicate : st->s_busy;
  PyStructSequence_SetItem(c, 0, Py_NewRef(status));
  PyStructSequence_SetItem(c, 1, rc == ESG_NEW ? PyLong_FromLongLong(ci->token) : Py_NewRef(Py_None));
  PyStructSequence_SetItem(c, 2, PyLong_FromLong(ci->attempts));
  PyStructSequence_SetItem(c, 3, esgpy_ms_seconds(ci->lease_until));
  PyStructSequence_SetItem(c, 4, esgpy_ms_seconds(ci->expires));
  PyStructSequence_SetItem(c, 5,
                           rc == ESG_DUPLICATE && ci->result
                               ? PyBytes_FromStringAndSize(ci->result, (Py_ssize_t)ci->result_len)
                               : Py_NewRef(Py_None));
  PyStructSequence_SetItem(c, 6, Py_NewRef(key));
  return esgpy_struct_checked(c, 7);
}

static PyObject *do_claim(StoreObject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames, int wait) {
  static const char *const kw[] = {"key", "payload", "lease", "ttl", "wait", NULL};
  static const char *const kw_nowait[] = {"key", "payload", "lease", "ttl", NULL};
  PyObject *a[5] = {NULL};
  if (esgpy_args(fname, args, nargs, kwnames, wait ? kw : kw_nowait, 1, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  const char *key = esgpy_str(a[0], "key", NULL);
  if (!key) return NULL;
  int64_t lease = 30000, ttl = 3600000, wait_ms = 10000;
  if (a[2] && esgpy_positive_seconds_ms(STATE(self), a[2], "lease", &lease) < 0) return NULL;
  if (a[3] && esgpy_positive_seconds_ms(STATE(self), a[3], "ttl", &ttl) < 0) return NULL;
  if (wait && a[4] && esgpy_seconds_ms(a[4], "wait", &wait_ms) < 0) return NULL;
  uint8_t hash[ESG_HASH_MAX];
  size_t hash_len;
  if (payload_hash(st, a[1], hash, &hash_len) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  esg_claim_info ci;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  if (wait) rc = esg_claim_wait(self->s, key, hash, hash_len, lease, ttl, wait_ms, &ci);
  else rc = esg_claim(self->s, key, hash, hash_len, lease, ttl, &ci);
  Py_END_ALLOW_THREADS
  if (esgpy_store_check(self, rc) < 0) return esgpy_store_fail(self, 0);
  PyObject *r = claim_result(st, rc, a[0], &ci);
  esgpy_store_leave(self);
  return r;
}

static PyObject *store_claim(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  return do_claim(self, "claim", args, nargs, kwnames, 0);
}

static PyObject *store_claim_wait(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  return do_claim(self, "claim_wait", args, nargs, kwnames, 1);
}

static PyObject *store_complete(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "token", "result", NULL};
  PyObject *a[3];
  if (esgpy_args("complete", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  const char *key = esgpy_str(a[0], "key", NULL);
  int64_t token;
  if (!key || esgpy_int64(a[1], "token", &token) < 0) return NULL;
  esgpy_bytes b;
  memset(&b, 0, sizeof b);
  if (a[2] && a[2] != Py_None && esgpy_json_bytes(st, a[2], "result", &b) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) {
    esgpy_bytes_release(&b);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_complete(self->s, key, token, b.data, (size_t)b.len);
  Py_END_ALLOW_THREADS
  esgpy_bytes_release(&b);
  if (esgpy_store_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *store_release(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "token", NULL};
  PyObject *a[2];
  if (esgpy_args("release", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  const char *key = esgpy_str(a[0], "key", NULL);
  int64_t token;
  if (!key || esgpy_int64(a[1], "token", &token) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_release(self->s, key, token);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *store_extend(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "token", "lease", NULL};
  PyObject *a[3];
  if (esgpy_args("extend", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  const char *key = esgpy_str(a[0], "key", NULL);
  int64_t token, lease = 30000;
  if (!key || esgpy_int64(a[1], "token", &token) < 0) return NULL;
  if (a[2] && esgpy_positive_seconds_ms(STATE(self), a[2], "lease", &lease) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_claim_extend(self->s, key, token, lease);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *store_purge_claims(StoreObject *self, PyObject *u) {
  (void)u;
  return esgpy_store_purge(self, esg_claims_purge);
}

/* ------------------------------------------------------------- event log -- */

static PyObject *store_put_event(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"event", "corr_key", "ttl", NULL};
  PyObject *a[3];
  if (esgpy_args("put_event", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  const char *corr = NULL;
  int64_t ttl = 0;
  if (a[1] && a[1] != Py_None && !(corr = esgpy_str(a[1], "corr_key", NULL))) return NULL;
  if (a[2] && esgpy_seconds_ms(a[2], "ttl", &ttl) < 0) return NULL;
  esg_event *own;
  const esg_event *ev = esgpy_event_arg(st, a[0], &own);
  if (!ev) return NULL;
  if (esgpy_store_enter(self) < 0) {
    esg_event_free(own);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_event_put(self->s, ev, corr, ttl);
  Py_END_ALLOW_THREADS
  esg_event_free(own);
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return Py_NewRef(rc == ESG_DUPLICATE ? st->s_duplicate : st->s_stored);
}

int esgpy_collect_cb(void *ud, const esg_stored_event *ev) {
  esgpy_collected *c = ud;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    char **j = realloc(c->json, cap * sizeof *j);
    if (!j) return 1;
    c->json = j;
    size_t *l = realloc(c->len, cap * sizeof *l);
    if (!l) return 1;
    c->len = l;
    c->cap = cap;
  }
  char *p = malloc(ev->json_len + 1);
  if (!p) return 1;
  memcpy(p, ev->json, ev->json_len);
  p[ev->json_len] = '\0';
  c->json[c->n] = p;
  c->len[c->n] = ev->json_len;
  c->n++;
  return 0;
}

void esgpy_collected_free(esgpy_collected *c) {
  for (size_t i = 0; i < c->n; i++) free(c->json[i]);
  free(c->json);
  free(c->len);
  memset(c, 0, sizeof *c);
}

PyObject *esgpy_json_item(esgpy_state *st, const char *json, size_t len, int raw) {
  PyObject *b = PyBytes_FromStringAndSize(json, (Py_ssize_t)len);
  if (!b || raw) return b;
  PyObject *d = PyObject_CallOneArg(st->json_loads, b);
  Py_DECREF(b);
  return d;
}

PyObject *esgpy_collected_list(esgpy_state *st, esgpy_collected *c, int raw) {
  PyObject *list = PyList_New((Py_ssize_t)c->n);
  for (size_t i = 0; list && i < c->n; i++) {
    PyObject *item = esgpy_json_item(st, c->json[i], c->len[i], raw);
    if (!item) Py_CLEAR(list);
    else PyList_SET_ITEM(list, (Py_ssize_t)i, item);
  }
  return list;
}

int esgpy_flag(PyObject *obj, int *raw) {
  *raw = 0;
  if (!obj) return 0;
  int r = PyObject_IsTrue(obj);
  if (r < 0) return -1;
  *raw = r;
  return 0;
}

StoreObject *esgpy_store_arg(esgpy_state *st, PyObject *obj) {
  if (!PyObject_TypeCheck(obj, st->StoreType)) {
    PyErr_Format(PyExc_TypeError, "store must be an esg.Store, not %.100s", Py_TYPE(obj)->tp_name);
    return NULL;
  }
  return (StoreObject *)obj;
}

typedef int (*query_fn)(esg_store *, const char *, esg_event_cb, void *);

static int run_query(StoreObject *self, query_fn fn, const char *arg, esgpy_collected *c) {
  memset(c, 0, sizeof *c);
  if (esgpy_store_enter(self) < 0) return -1;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = fn(self->s, arg, esgpy_collect_cb, c);
  Py_END_ALLOW_THREADS
  return esgpy_collect_done(self, rc, c);
}

static PyObject *store_events(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"corr_key", "raw", NULL};
  PyObject *a[2];
  int raw;
  if (esgpy_args("events", args, nargs, kwnames, kw, 1, a) < 0 || esgpy_flag(a[1], &raw) < 0) return NULL;
  const char *key = esgpy_str(a[0], "corr_key", NULL);
  if (!key) return NULL;
  esgpy_collected c;
  if (run_query(self, esg_events_by_key, key, &c) < 0) return NULL;
  esgpy_state *st = STATE(self);
  PyObject *list = esgpy_collected_list(st, &c, raw);
  esgpy_collected_free(&c);
  return list;
}

static PyObject *store_get_event(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"id", "raw", NULL};
  PyObject *a[2];
  int raw;
  if (esgpy_args("get_event", args, nargs, kwnames, kw, 1, a) < 0 || esgpy_flag(a[1], &raw) < 0) return NULL;
  const char *id = esgpy_str(a[0], "id", NULL);
  if (!id) return NULL;
  esgpy_collected c;
  int rc = run_query(self, esg_event_get, id, &c);
  if (rc < 0) return NULL;
  PyObject *r = rc == ESG_NOT_FOUND || c.n == 0 ? Py_NewRef(Py_None) : esgpy_json_item(STATE(self), c.json[0], c.len[0], raw);
  esgpy_collected_free(&c);
  return r;
}

typedef struct purge_ctx {
  StoreObject *self;
  PyObject *cb;
  int failed;
  PyObject *t, *v, *tb;
} purge_ctx;

/* Called by the C library with the GIL released: take it to call the Python callback. */
static int purge_cb(void *ud, const esg_stored_event *ev) {
  purge_ctx *p = ud;
  if (p->failed) return 1; /* after a failure keep the rest for the next purge */
  PyGILState_STATE g = PyGILState_Ensure();
  int keep = 0;
  PyObject *d = esgpy_json_item(STATE(p->self), ev->json, ev->json_len, 0);
  PyObject *r = d ? PyObject_CallOneArg(p->cb, d) : NULL;
  Py_XDECREF(d);
  if (!r) {
    PyErr_Fetch(&p->t, &p->v, &p->tb);
    p->failed = 1;
    keep = 1;
  } else {
    keep = r == Py_False;
    Py_DECREF(r);
  }
  PyGILState_Release(g);
  return keep;
}

static PyObject *store_purge_events(StoreObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames) {
  static const char *const kw[] = {"callback", NULL};
  PyObject *a[1];
  if (esgpy_args("purge_events", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  if (a[0] == Py_None) a[0] = NULL;
  if (a[0] && !PyCallable_Check(a[0])) {
    PyErr_SetString(PyExc_TypeError, "callback must be callable or None");
    return NULL;
  }
  purge_ctx p = {self, a[0], 0, NULL, NULL, NULL};
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  int64_t n = 0;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_events_purge(self->s, a[0] ? purge_cb : NULL, &p, &n);
  Py_END_ALLOW_THREADS
  if (p.failed) {
    esgpy_store_leave(self);
    PyErr_Restore(p.t, p.v, p.tb);
    return NULL;
  }
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return PyLong_FromLongLong(n);
}

/* -------------------------------------------------------------- entities -- */

static PyObject *store_upsert(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "version", "doc", NULL};
  PyObject *a[3];
  if (esgpy_args("upsert", args, nargs, kwnames, kw, 3, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  const char *key = esgpy_str(a[0], "key", NULL);
  int64_t version;
  if (!key || esgpy_int64(a[1], "version", &version) < 0) return NULL;
  esgpy_bytes b;
  if (!PyDict_Check(a[2]) && !PyUnicode_Check(a[2]) && !PyObject_CheckBuffer(a[2])) {
    PyErr_Format(PyExc_TypeError, "doc must be a dict, bytes or str, not %.100s", Py_TYPE(a[2])->tp_name);
    return NULL;
  }
  if (esgpy_json_bytes(st, a[2], "doc", &b) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) {
    esgpy_bytes_release(&b);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_entity_upsert(self->s, key, version, b.data, (size_t)b.len);
  Py_END_ALLOW_THREADS
  esgpy_bytes_release(&b);
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return Py_NewRef(rc == ESG_STALE ? st->s_stale : st->s_applied);
}

static PyObject *store_get_entity(StoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"key", "raw", NULL};
  PyObject *a[2];
  int raw;
  if (esgpy_args("get_entity", args, nargs, kwnames, kw, 1, a) < 0 || esgpy_flag(a[1], &raw) < 0) return NULL;
  esgpy_state *st = STATE(self);
  const char *key = esgpy_str(a[0], "key", NULL);
  if (!key) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  esg_entity e;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_entity_get(self->s, key, &e);
  Py_END_ALLOW_THREADS
  if (esgpy_store_check(self, rc) < 0) return esgpy_store_fail(self, 0);
  if (rc == ESG_NOT_FOUND) {
    esgpy_store_leave(self);
    Py_RETURN_NONE;
  }
  PyObject *doc = e.deleted || !e.doc ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(e.doc, (Py_ssize_t)e.doc_len);
  esgpy_store_leave(self);
  if (!doc) return NULL;
  if (!raw && doc != Py_None) {
    PyObject *d = PyObject_CallOneArg(st->json_loads, doc);
    Py_DECREF(doc);
    if (!d) return NULL;
    doc = d;
  }
  PyObject *r = PyStructSequence_New(st->EntityType);
  if (!r) {
    Py_DECREF(doc);
    return NULL;
  }
  PyStructSequence_SetItem(r, 0, PyLong_FromLongLong(e.version));
  PyStructSequence_SetItem(r, 1, PyBool_FromLong(e.deleted));
  PyStructSequence_SetItem(r, 2, doc);
  if (!PyStructSequence_GetItem(r, 0)) Py_CLEAR(r);
  return r;
}

static PyObject *store_delete_entity(StoreObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
  static const char *const kw[] = {"key", "version", NULL};
  PyObject *a[2];
  if (esgpy_args("delete_entity", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  const char *key = esgpy_str(a[0], "key", NULL);
  int64_t version;
  if (!key || esgpy_int64(a[1], "version", &version) < 0) return NULL;
  if (esgpy_store_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_entity_delete(self->s, key, version);
  Py_END_ALLOW_THREADS
  if (esgpy_store_done(self, rc) < 0) return NULL;
  return Py_NewRef(rc == ESG_STALE ? st->s_stale : st->s_applied);
}

/* ------------------------------------------------------------------ type -- */

static PyMethodDef store_methods[] = {
    {"close", (PyCFunction)store_close, METH_NOARGS,
     "close() -> None\n\nCommits any open group and closes the store. Closing twice is fine; any\n"
     "other use after close raises StateError."},
    {"__enter__", (PyCFunction)store_enter_ctx, METH_NOARGS, "Returns the store."},
    {"__exit__", (PyCFunction)store_exit_ctx, METH_VARARGS, "Closes the store."},
    {"now", (PyCFunction)store_now, METH_NOARGS, "now() -> float\n\nNow by the store's clock, in seconds."},
    {"claim", FN(store_claim), FAST,
     "claim(key, payload=None, lease=30.0, ttl=3600.0) -> Claim\n\n"
     "Claims key atomically across threads and processes. payload identifies the\n"
     "work, to detect a key reused with other content: None (no check), an Event\n"
     "(its SHA-256), bytes or str (as is up to 64 bytes, else their SHA-256), or a\n"
     "JSON-able value (SHA-256 of its canonical JSON). lease and ttl are seconds.\n"
     "Returns a Claim whose status is 'new', 'duplicate' or 'busy'; raises\n"
     "MismatchError when key was used with another payload."},
    {"claim_wait", FN(store_claim_wait), FAST,
     "claim_wait(key, payload=None, lease=30.0, ttl=3600.0, wait=10.0) -> Claim\n\n"
     "Like claim, but while the key is busy waits (GIL released, real time) up to\n"
     "wait seconds for the holder to complete, release or lose its lease."},
    {"complete", FN(store_complete), FAST,
     "complete(key, token, result=None) -> None\n\n"
     "Completes the claim held with token, storing result (bytes, str, or a JSON-able\n"
     "value stored as JSON) for later duplicates. Raises TokenError if token no\n"
     "longer owns key; then nothing is written."},
    {"release", FN(store_release), FAST,
     "release(key, token) -> None\n\nDeletes the in-progress claim so the work can be retried. TokenError if not owned."},
    {"extend", FN(store_extend), FAST,
     "extend(key, token, lease=30.0) -> None\n\nExtends the lease to now + lease seconds. TokenError if not owned."},
    {"purge_claims", (PyCFunction)store_purge_claims, METH_NOARGS,
     "purge_claims() -> int\n\nDeletes expired claim records; returns how many."},
    {"put_event", FN(store_put_event), FAST,
     "put_event(event, corr_key=None, ttl=0) -> str\n\n"
     "Stores event (Event, dict, bytes or str; validated) once under corr_key\n"
     "(default: its partitionKey, else its id), expiring after ttl seconds (0 =\n"
     "never). Returns 'stored', or 'duplicate' when its id is already stored."},
    {"events", FN(store_events), FAST,
     "events(corr_key, *, raw=False) -> list\n\n"
     "The unexpired events stored under corr_key in (timestamp, id) order, as dicts\n"
     "(bytes with raw=True)."},
    {"get_event", FN(store_get_event), FAST,
     "get_event(id, *, raw=False) -> dict | bytes | None\n\nOne unexpired event by id, or None."},
    {"purge_events", FN(store_purge_events), FAST,
     "purge_events(callback=None) -> int\n\n"
     "Deletes expired events; returns how many. callback, if given, is first called\n"
     "with each one's '<type>-expired' event (a dict with a deterministic id); if it\n"
     "returns False the event is kept for the next purge; if it raises, that event and\n"
     "the rest are kept and the exception propagates. The callback must not use this\n"
     "store (StateError): collect the events and put them afterwards."},
    {"upsert", FN(store_upsert), FAST,
     "upsert(key, version, doc) -> str\n\n"
     "Stores doc (dict, or JSON object text) at version only if version is greater\n"
     "than the stored one, tombstones included: 'applied' or 'stale'."},
    {"get_entity", FN(store_get_entity), FAST,
     "get_entity(key, *, raw=False) -> Entity | None\n\n"
     "The stored entity (version, deleted, doc), or None if never stored."},
    {"delete_entity", FN(store_delete_entity), FAST,
     "delete_entity(key, version) -> str\n\n"
     "Leaves a tombstone at version, so older updates cannot revive key: 'applied' or 'stale'."},
    {"record_fault", FN(esgpy_store_record_fault), FAST,
     "record_fault(event_id, stage, error, event=None, http_status=0, attempts=0,\n"
     "             first_attempt=None, last_attempt=None) -> int\n\n"
     "Records a fault (an event that could not be handled) and returns its id. event:\n"
     "the event (Event, dict, bytes or str) kept for resubmission. Times are epoch\n"
     "seconds (None = now). InvalidArgumentError names a missing field."},
    {"faults", FN(esgpy_store_faults), FAST, "faults() -> list[Fault]\n\nEvery fault, oldest first."},
    {"get_fault", FN(esgpy_store_get_fault), FAST, "get_fault(id) -> Fault | None\n\nOne fault by id."},
    {"delete_fault", FN(esgpy_store_delete_fault), FAST,
     "delete_fault(id) -> bool\n\nDeletes a fault (e.g. once resubmitted); False when there was none."},
    {"purge_faults", FN(esgpy_store_purge_faults), FAST,
     "purge_faults(before=None) -> int\n\n"
     "Deletes the faults whose last attempt is older than before (epoch seconds;\n"
     "None = all); returns how many."},
    {"correlate", FN(esgpy_store_correlate), FAST,
     "correlate(corr_key, rule, predicate, ttl=0, *, raw=False) -> (status, event)\n\n"
     "Evaluates predicate(events), a callable over the list of unexpired events stored\n"
     "under corr_key in (timestamp, id) order (dicts; bytes with raw=True). When it\n"
     "returns true, the event {'id': '<corr_key>.<rule>', 'type': rule, 'triggers':\n"
     "[ids], ...} is stored once (ttl seconds, 0 = never expires). status: 'fired' (now;\n"
     "event is it), 'duplicate' (fired before; event None) or 'no_match'. An exception in\n"
     "predicate propagates; it must not use this store."},
    {"latch", FN(esgpy_store_latch), FAST,
     "latch(key, side, doc=None, *, hash=None, ttl=300.0) -> str\n\n"
     "Content latch: records 'we are about to write this state of key to side'. Call it\n"
     "BEFORE the write. Give the document (its canonical content hash is used) or your\n"
     "own hash text. Returns the hash. Expires after ttl seconds."},
    {"latch_check", FN(esgpy_store_latch_check), FAST,
     "latch_check(key, side, doc=None, *, hash=None) -> 'echo' | 'genuine'\n\n"
     "Judges a change that came from side for key: 'echo' (our own write coming back:\n"
     "suppress it; the latch is consumed) or 'genuine' (pass it on)."},
    {"latch_cancel", FN(esgpy_store_latch_cancel), FAST,
     "latch_cancel(key, side, doc=None, *, hash=None) -> bool\n\n"
     "Withdraws the newest pending latch with that state (the write failed). False if none."},
    {"latch_pending", FN(esgpy_store_latch_pending), FAST,
     "latch_pending(key, side) -> int\n\nHow many unexpired latches are pending for (key, side)."},
    {"purge_latches", (PyCFunction)esgpy_store_purge_latches, METH_NOARGS,
     "purge_latches() -> int\n\nDeletes expired latches; returns how many."},
    {"cursor_get", FN(esgpy_store_cursor_get), FAST, "cursor_get(name) -> str | None\n\nThe stored cursor of a job."},
    {"cursor_set", FN(esgpy_store_cursor_set), FAST,
     "cursor_set(name, cursor) -> None\n\nStores a job's cursor (e.g. to rewind it)."},
    {"cursor_delete", FN(esgpy_store_cursor_delete), FAST,
     "cursor_delete(name) -> bool\n\nDeletes a job's cursor (the job starts over); False if none."},
    {"cursor_run", FN(esgpy_store_cursor_run), FAST,
     "cursor_run(name, source, fetch, *, sink=None, no_log=False, log_ttl=0, entity_field='entity',\n"
     "           max_pages=0, raw=False) -> ResyncStats\n\n"
     "Runs the cursor job name: fetch(cursor) (cursor None before the first page)\n"
     "returns (items, next_cursor[, done]); each item a mapping with 'id', 'version',\n"
     "'type', 'data' (JSON-able, or JSON text) and optional 'timestamp' (epoch ms) and\n"
     "'partitionKey'. Each page's items become events with deterministic ids, stored\n"
     "with the new cursor in one transaction (and handed to sink(event) inside it).\n"
     "Stops when done is true or after max_pages pages. An exception in fetch or sink\n"
     "rolls back that page and propagates. Neither may use this store."},
    {"snapshot", FN(esgpy_store_snapshot), FAST,
     "snapshot(source, *, sink=None, no_log=False, log_ttl=0, entity_field='entity',\n"
     "         type='entity', batch=1000, raw=False) -> Snapshot\n\n"
     "Starts (or resumes) a full listing of source for a snapshot diff: add(key,\n"
     "content) each entry, then finish() emits deletions and returns the counts."},
    {"replay", FN(esgpy_store_replay), FAST,
     "replay(corr_key=None, type=None, since=None, until=None, *, raw=False) -> list\n\n"
     "The unexpired stored events that match (since <= timestamp < until, epoch ms),\n"
     "in (timestamp, id) order, with their ids unchanged so consumers dedupe them."},
    {"begin", (PyCFunction)store_begin, METH_NOARGS,
     "begin() -> None\n\nStarts a batch: the calls until commit() run in one transaction. Prefer batch()."},
    {"commit", (PyCFunction)store_commit, METH_NOARGS, "commit() -> None\n\nCommits the open batch."},
    {"rollback", (PyCFunction)store_rollback, METH_NOARGS, "rollback() -> None\n\nUndoes the open batch."},
    {"flush", (PyCFunction)store_flush, METH_NOARGS,
     "flush() -> None\n\nCommits the open group-commit transaction now, if any."},
    {"flush_due", (PyCFunction)store_flush_due, METH_NOARGS,
     "flush_due() -> float | None\n\nCommits the open group if it is due, as any call would; returns when the "
     "group still open becomes due (seconds, the store's clock), or None when none is open. For idle loops."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef store_getset[] = {
    {"closed", (getter)store_get_closed, NULL, "True once closed", NULL},
    {"path", (getter)store_get_path, NULL, "the path the store was opened with", NULL},
    {"backend", (getter)store_get_backend, NULL, "the backend's name ('sqlite')", NULL},
    {"schema_version", (getter)store_get_schema, NULL, "the schema version of the open store", NULL},
    {"bytes_written", (getter)store_get_bytes_written, NULL,
     "bytes this handle has written to the store since it opened (0: not known; SQLite: its WAL frames)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot store_slots[] = {
    {Py_tp_doc, "Store(path, *, clock=None, durability='normal', busy_timeout=5.0, group_commit=0.0,\n"
                "      group_commit_max=0)\n\n"
                "The micro event store (claims, event log, entities, faults, correlation rules,\n"
                "latches, cursor jobs, snapshots, replay) in the SQLite file path\n"
                "(':memory:' for a private one). One Store per thread; many threads and\n"
                "processes may open the same file. clock: a callable returning seconds since\n"
                "the epoch (tests move time with it). durability: 'normal' or 'full'.\n"
                "busy_timeout: seconds to wait for another process's lock. group_commit:\n"
                "seconds a group of writes may stay uncommitted (0 = commit each call), at most\n"
                "group_commit_max writes (0 = 1000). A context manager that closes on exit."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, store_init},
    {Py_tp_dealloc, store_dealloc},
    {Py_tp_traverse, store_traverse},
    {Py_tp_clear, store_clear},
    {Py_tp_methods, store_methods},
    {Py_tp_getset, store_getset},
    {0, NULL}};

PyType_Spec esgpy_store_spec = {
    .name = "esg._esg.Store",
    .basicsize = sizeof(StoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = store_slots,
};
