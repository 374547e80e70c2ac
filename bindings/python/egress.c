/*
 * esg.Egress: the HTTP delivery engine (esg/egress.h) on an optional Store.
 * run/drain/close and resubmit take the store's lock (the engine completes
 * claims and records faults through the store) and the engine's own lock, and
 * run with the GIL released; the outcome and retry callbacks and a Python clock
 * are called with the GIL taken again. A callback may submit more deliveries but
 * must not use the engine's store (StateError) nor run, drain or close the engine.
 *
 * Every accepted delivery ends in exactly one outcome: on_done(result) when a
 * callback was given, else the result is kept for results(). The request's
 * context object rides along and comes back as result.context.
 */
#include <stdlib.h>
#include <string.h>
#include "esgpy.h"

#define STATE(self) ((esgpy_state *)PyModule_GetState(PyType_GetModuleByDef(Py_TYPE(self), &esgpy_module_def)))

typedef struct {
  PyObject_HEAD
  esg_egress *e;       /* detached by the store's close, freed by ours */
  StoreObject *store; /* or NULL */
  PyThread_type_lock lock;
  unsigned long owner; /* the thread inside run/drain/close/resubmit */
  PyObject *on_done, *on_retry, *clock;
  PyObject *results;   /* finished deliveries when there is no on_done */
  PyObject *cb_exc;    /* the first exception raised by a callback or the clock */
  int64_t last_now;
  long pid;            /* the process that opened it: a forked child must not use it */
} EgressObject;

/* Open, and its store (if any) too: closing the store detaches the engine. */
static int engine_open(const EgressObject *self) { return self->e && (!self->store || self->store->s); }

/* Keeps the first exception of a callback; later ones are reported as unraisable. */
static void keep_exc(EgressObject *self) {
  if (!self->cb_exc) {
    self->cb_exc = esgpy_fetch_exc();
  } else {
    PyErr_WriteUnraisable(NULL);
  }
}

static PyObject *str_or_empty(const char *s) {
  return PyUnicode_DecodeUTF8(s ? s : "", s ? (Py_ssize_t)strlen(s) : 0, "replace");
}

static void done_cb(void *ud, const esg_egress_result *r) {
  EgressObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  esgpy_state *st = STATE(self);
  PyObject *ctx = r->request_ud ? (PyObject *)r->request_ud : Py_NewRef(Py_None); /* the reference submit took */
  PyObject *t = PyStructSequence_New(st->EgressResultType);
  if (t) {
    int o = (int)r->outcome;
    PyStructSequence_SetItem(t, 0, str_or_empty(r->event_id));
    PyStructSequence_SetItem(t, 1, o >= 0 && o < 4 ? Py_NewRef(st->s_outcomes[o]) : PyLong_FromLong(o));
    PyStructSequence_SetItem(t, 2, PyLong_FromLong(r->http_status));
    PyStructSequence_SetItem(t, 3, PyLong_FromLong(r->attempts));
    PyStructSequence_SetItem(t, 4, esgpy_ms_seconds(r->first_attempt));
    PyStructSequence_SetItem(t, 5, esgpy_ms_seconds(r->last_attempt));
    PyStructSequence_SetItem(t, 6, str_or_empty(r->error));
    PyStructSequence_SetItem(t, 7, r->fault_id ? PyLong_FromLongLong(r->fault_id) : Py_NewRef(Py_None));
    PyStructSequence_SetItem(t, 8, PyLong_FromLong(r->store_rc));
    PyStructSequence_SetItem(t, 9, PyBytes_FromStringAndSize(r->body ? r->body : "", (Py_ssize_t)r->body_len));
    PyStructSequence_SetItem(t, 10, ctx);
    ctx = NULL;
    t = esgpy_struct_checked(t, 11);
  }
  Py_XDECREF(ctx);
  if (t) {
    if (self->on_done) {
      PyObject *res = PyObject_CallOneArg(self->on_done, t);
      if (res) Py_DECREF(res);
      else keep_exc(self);
    } else if (PyList_Append(self->results, t) < 0) {
      keep_exc(self);
    }
    Py_DECREF(t);
  } else {
    keep_exc(self);
  }
  PyGILState_Release(g);
}

static void retry_cb(void *ud, const char *event_id, int attempt, int http_status, int64_t delay_ms,
                     const char *error) {
  EgressObject *self = ud;
  if (!self->on_retry) return;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *res = PyObject_CallFunction(self->on_retry, "NiiNN", str_or_empty(event_id), attempt, http_status,
                                        esgpy_ms_seconds(delay_ms), str_or_empty(error));
  if (res) Py_DECREF(res);
  else keep_exc(self);
  PyGILState_Release(g);
}

static int64_t egress_clock(void *ud) {
  EgressObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  int64_t ms = self->last_now;
  PyObject *r = PyObject_CallNoArgs(self->clock);
  if (r) {
    double d = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (!(d == -1.0 && PyErr_Occurred())) {
      if (esg_ms_from_seconds(d, &ms) == ESG_OK) self->last_now = ms;
      else PyErr_SetString(PyExc_ValueError, "the clock returned a value out of range");
    }
  }
  if (PyErr_Occurred()) keep_exc(self);
  PyGILState_Release(g);
  return ms;
}

/* Frees the engine, cancelling what is unfinished (it releases claims through the store; the
   callbacks take the GIL back) with the GIL released. In a forked child libesg cancels nothing and
   runs no callback: the deliveries and connections are the parent's. */
static void free_engine(EgressObject *self) {
  esg_egress *e = self->e;
  self->e = NULL;
  Py_BEGIN_ALLOW_THREADS
  esg_egress_close(e);
  Py_END_ALLOW_THREADS
}

/* Closes the engine from a finalizer: with the store's lock (taken with the GIL released), never
   using the store unlocked; in a forked child without (a thread of the parent may hold it). */
static void egress_final_close(EgressObject *self) {
  int entered = self->store ? esgpy_store_final_enter(self->store) : 0;
  free_engine(self);
  if (self->store) esgpy_store_final_leave(self->store, entered);
}

/* ------------------------------------------------------------ lifecycle -- */

static int opt_ms(PyObject *obj, const char *what, int64_t *out) {
  *out = 0;
  if (!obj || obj == Py_None) return 0;
  if (esgpy_seconds_ms(obj, what, out) < 0) return -1;
  if (*out < 0) {
    PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
    return -1;
  }
  if (*out == 0 && PyFloat_AsDouble(obj) > 0) *out = 1;
  return 0;
}

static int opt_callable(PyObject *obj, const char *what, PyObject **out) {
  *out = NULL;
  if (!obj || obj == Py_None) return 0;
  if (!PyCallable_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be callable or None", what);
    return -1;
  }
  *out = obj;
  return 0;
}

const char *const esgpy_egress_opt_names[ESGPY_EGRESS_NOPTS + 1] = {
    "max_in_flight", "max_attempts", "max_elapsed", "backoff_base", "backoff_cap", "connect_timeout", "timeout",
    "rate", "burst", "idempotency_header", "content_type", "max_response_bytes", "claim_lease",
    "complete_on_fault", "seed", "circuit_failures", "circuit_open", NULL};

int esgpy_egress_opts(PyObject *const *a, esg_egress_opts *o) {
  int64_t v;
  int n;
  if (esgpy_opt_int32(a[0], "max_in_flight", &o->max_in_flight) < 0 ||
      esgpy_opt_int32(a[1], "max_attempts", &o->max_attempts) < 0)
    return -1;
  if (opt_ms(a[2], "max_elapsed", &o->max_elapsed_ms) < 0 || opt_ms(a[3], "backoff_base", &o->backoff_base_ms) < 0 ||
      opt_ms(a[4], "backoff_cap", &o->backoff_cap_ms) < 0 ||
      opt_ms(a[5], "connect_timeout", &o->connect_timeout_ms) < 0 || opt_ms(a[6], "timeout", &o->timeout_ms) < 0)
    return -1;
  if (a[7] && a[7] != Py_None && esgpy_float(a[7], "rate", &o->rate_per_s) < 0) return -1;
  if (esgpy_opt_int32(a[8], "burst", &o->rate_burst) < 0 ||
      esgpy_opt_str(a[9], "idempotency_header", &o->idempotency_header) < 0 ||
      esgpy_opt_str(a[10], "content_type", &o->content_type) < 0 ||
      esgpy_opt_int32(a[11], "max_response_bytes", &n) < 0)
    return -1;
  o->max_response_bytes = (size_t)n;
  if (opt_ms(a[12], "claim_lease", &o->claim_lease_ms) < 0 || esgpy_flag(a[13], &o->complete_on_fault) < 0)
    return -1;
  if (a[14] && a[14] != Py_None) {
    if (esgpy_int64(a[14], "seed", &v) < 0) return -1;
    o->seed = (uint64_t)v;
  }
  if (esgpy_opt_int32(a[15], "circuit_failures", &o->circuit_failures) < 0 ||
      opt_ms(a[16], "circuit_open", &o->circuit_open_ms) < 0)
    return -1;
  return 0;
}

static PyObject *egress_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
  static char *kw[] = {"store", "on_done", "on_retry", "clock", "max_in_flight", "max_attempts", "max_elapsed",
                       "backoff_base", "backoff_cap", "connect_timeout", "timeout", "rate", "burst",
                       "idempotency_header", "content_type", "max_response_bytes", "claim_lease",
                       "complete_on_fault", "seed", "circuit_failures", "circuit_open", NULL};
  PyObject *store_obj = Py_None, *a[3 + ESGPY_EGRESS_NOPTS] = {NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$OOOOOOOOOOOOOOOOOOOO:Egress", kw, &store_obj, &a[0], &a[1],
                                   &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &a[8], &a[9], &a[10], &a[11], &a[12],
                                   &a[13], &a[14], &a[15], &a[16], &a[17], &a[18], &a[19]))
    return NULL;
  esgpy_state *st = esgpy_state_of_type(tp);
  StoreObject *store = NULL;
  if (store_obj != Py_None && !(store = esgpy_store_arg(st, store_obj))) return NULL;
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  PyObject *on_done, *on_retry, *clock;
  if (opt_callable(a[0], "on_done", &on_done) < 0 || opt_callable(a[1], "on_retry", &on_retry) < 0 ||
      opt_callable(a[2], "clock", &clock) < 0)
    return NULL;
  if (esgpy_egress_opts(a + 3, &o) < 0) return NULL;
  EgressObject *self = (EgressObject *)tp->tp_alloc(tp, 0);
  if (!self) return NULL;
  self->pid = esgpy_pid();
  self->store = store ? (StoreObject *)Py_NewRef(store) : NULL;
  self->on_done = Py_XNewRef(on_done);
  self->on_retry = Py_XNewRef(on_retry);
  self->clock = Py_XNewRef(clock);
  if (!(self->results = PyList_New(0)) || !(self->lock = PyThread_allocate_lock())) {
    if (!PyErr_Occurred()) PyErr_NoMemory();
    Py_DECREF(self);
    return NULL;
  }
  o.on_done = done_cb;
  o.on_retry = retry_cb;
  o.ud = self;
  if (clock) {
    o.clock = egress_clock;
    o.clock_ud = self;
  }
  if (store && esgpy_store_enter(store) < 0) {
    Py_DECREF(self);
    return NULL;
  }
  esg_egress *e = NULL;
  int rc = esg_egress_open(&e, store ? store->s : NULL, &o);
  if (rc != ESG_OK || self->cb_exc) {
    esg_egress_close(e);
    if (store) esgpy_store_leave(store);
    if (self->cb_exc) {
      PyErr_SetObject((PyObject *)Py_TYPE(self->cb_exc), self->cb_exc);
      Py_CLEAR(self->cb_exc);
    } else {
      esgpy_raise(st, rc, esg_errmsg(NULL));
    }
    Py_DECREF(self);
    return NULL;
  }
  self->e = e;
  if (store) esgpy_store_leave(store);
  return (PyObject *)self;
}

/* Takes the store's lock (if any), then the engine's. -1 with StateError when closed or re-entered. */
static int egress_enter(EgressObject *self) {
  esgpy_state *st = STATE(self);
  if (!engine_open(self)) {
    esgpy_raise(st, ESG_ESTATE, "the egress engine is closed");
    return -1;
  }
  if (esgpy_forked(self->pid)) { /* before the locks: a thread of the parent may hold them */
    esgpy_raise_forked(st, "the egress engine", self->pid);
    return -1;
  }
  if (self->owner == PyThread_get_thread_ident()) {
    esgpy_raise(st, ESG_ESTATE, "the egress engine is running this call's callback (run, drain, close and resubmit are refused there)");
    return -1;
  }
  if (self->store && esgpy_store_enter(self->store) < 0) return -1;
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  if (!self->e) { /* closed by another thread while we waited (a store closed meanwhile: its enter failed) */
    PyThread_release_lock(self->lock);
    if (self->store) esgpy_store_leave(self->store);
    esgpy_raise(st, ESG_ESTATE, "the egress engine is closed");
    return -1;
  }
  self->owner = PyThread_get_thread_ident();
  return 0;
}

static void egress_leave(EgressObject *self) {
  self->owner = 0;
  PyThread_release_lock(self->lock);
  if (self->store) esgpy_store_leave(self->store);
}

/* After a call: a callback's exception, the store clock's, or rc < 0. Leaves. -1 when raised. */
static int egress_done(EgressObject *self, int rc) {
  PyObject *exc = self->cb_exc;
  self->cb_exc = NULL;
  int clock = self->store && self->store->clock_type;
  if (exc) {
    if (clock) {
      esgpy_store_check(self->store, 0);
      PyErr_Clear();
    }
    egress_leave(self);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return -1;
  }
  if (clock) {
    self->owner = 0;
    PyThread_release_lock(self->lock);
    esgpy_store_fail(self->store, 0);
    return -1;
  }
  if (rc < 0) {
    esgpy_raise(STATE(self), rc, esg_errmsg(self->e));
    egress_leave(self);
    return -1;
  }
  egress_leave(self);
  return 0;
}

static PyObject *egress_close(EgressObject *self, PyObject *unused) {
  (void)unused;
  if (!self->e) Py_RETURN_NONE;
  if (esgpy_forked(self->pid)) { /* the parent's engine: no lock (a thread of the parent may hold it) */
    free_engine(self);
    Py_RETURN_NONE;
  }
  if (!engine_open(self)) { /* detached by its store's close: nothing to cancel; a submit may race */
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
      Py_BEGIN_ALLOW_THREADS
      PyThread_acquire_lock(self->lock, WAIT_LOCK);
      Py_END_ALLOW_THREADS
    }
    esg_egress *e = self->e;
    self->e = NULL;
    PyThread_release_lock(self->lock);
    esg_egress_close(e);
    Py_RETURN_NONE;
  }
  if (egress_enter(self) < 0) {
    if (!engine_open(self)) { /* closed, or its store, while we waited */
      PyErr_Clear();
      return egress_close(self, NULL);
    }
    return NULL;
  }
  free_engine(self);
  if (egress_done(self, 0) < 0) return NULL;
  Py_RETURN_NONE;
}

/* -------------------------------------------------------------- requests -- */

/* A request built from Python arguments; owns what its pointers point to. */
typedef struct req_args {
  esg_egress_request r;
  PyObject *lines;      /* the header lines (str) */
  const char **headers;
  esgpy_bytes body, event;
  PyObject *ctx;        /* the context's new reference, handed to the request */
} req_args;

static void req_release(req_args *q) {
  Py_CLEAR(q->lines);
  free(q->headers);
  q->headers = NULL;
  esgpy_bytes_release(&q->body);
  esgpy_bytes_release(&q->event);
  Py_CLEAR(q->ctx);
}

static int header_lines(req_args *q, PyObject *h) {
  if (!h || h == Py_None) return 0;
  PyObject *items = PyMapping_Check(h) && !PyUnicode_Check(h) && !PyTuple_Check(h) && !PyList_Check(h)
                        ? PyMapping_Items(h)
                        : PySequence_List(h);
  if (!items) return -1;
  Py_ssize_t n = PyList_GET_SIZE(items);
  q->lines = PyList_New(n);
  q->headers = calloc(n ? (size_t)n : 1, sizeof *q->headers);
  if (!q->lines || !q->headers) {
    Py_DECREF(items);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *it = PyList_GET_ITEM(items, i), *line;
    if (PyUnicode_Check(it)) line = Py_NewRef(it);
    else if (PyTuple_Check(it) && PyTuple_GET_SIZE(it) == 2)
      line = PyUnicode_FromFormat("%S: %S", PyTuple_GET_ITEM(it, 0), PyTuple_GET_ITEM(it, 1));
    else {
      PyErr_SetString(PyExc_TypeError, "headers must be a mapping, or a list of 'Name: value' or (name, value)");
      line = NULL;
    }
    if (!line) {
      Py_DECREF(items);
      return -1;
    }
    PyList_SET_ITEM(q->lines, i, line);
    if (!(q->headers[i] = esgpy_str(line, "a header", NULL))) {
      Py_DECREF(items);
      return -1;
    }
  }
  Py_DECREF(items);
  q->r.headers = q->headers;
  q->r.n_headers = (size_t)n;
  return 0;
}

static int claim_arg(esgpy_state *st, req_args *q, PyObject *c) {
  if (!c || c == Py_None) return 0;
  PyObject *key, *token;
  if (PyObject_TypeCheck(c, st->ClaimType)) {
    key = PyStructSequence_GetItem(c, 6);
    token = PyStructSequence_GetItem(c, 1);
    if (token == Py_None) {
      esgpy_raise(st, ESG_EINVAL, "the claim is not owned (its status is not 'new')");
      return -1;
    }
  } else if (PyTuple_Check(c) && PyTuple_GET_SIZE(c) == 2) {
    key = PyTuple_GET_ITEM(c, 0);
    token = PyTuple_GET_ITEM(c, 1);
  } else {
    PyErr_SetString(PyExc_TypeError, "claim must be an esg.Claim or a (key, token) tuple");
    return -1;
  }
  if (!(q->r.claim_key = esgpy_str(key, "claim key", NULL))) return -1;
  return esgpy_int64(token, "claim token", &q->r.claim_token);
}

static int bytes_arg(esgpy_state *st, PyObject *obj, const char *what, esgpy_bytes *b, const void **data, size_t *len) {
  if (!obj || obj == Py_None) return 0;
  if (esgpy_event_check(st, obj)) {
    *data = esg_event_json(esgpy_event_handle(obj), len);
    return 0;
  }
  if (esgpy_json_bytes(st, obj, what, b) < 0) return -1;
  *data = b->data;
  *len = (size_t)b->len;
  return 0;
}

/* kw: url, body, event_id, method, headers, partition_key, claim, event, context */
static int req_build(esgpy_state *st, PyObject **a, req_args *q) {
  memset(q, 0, sizeof *q);
  if (!(q->r.url = esgpy_str(a[0], "url", NULL))) return -1;
  const void *ev = NULL;
  size_t ev_len = 0;
  if (bytes_arg(st, a[1], "body", &q->body, &q->r.body, &q->r.body_len) < 0 ||
      bytes_arg(st, a[7], "event", &q->event, &ev, &ev_len) < 0)
    return -1;
  q->r.event = ev;
  q->r.event_len = ev_len;
  if ((a[2] && a[2] != Py_None && !(q->r.event_id = esgpy_str(a[2], "event_id", NULL))) ||
      (a[3] && a[3] != Py_None && !(q->r.method = esgpy_str(a[3], "method", NULL))) ||
      (a[5] && a[5] != Py_None && !(q->r.partition_key = esgpy_str(a[5], "partition_key", NULL))))
    return -1;
  if (header_lines(q, a[4]) < 0 || claim_arg(st, q, a[6]) < 0) return -1;
  if (a[8] && a[8] != Py_None) {
    q->ctx = Py_NewRef(a[8]);
    q->r.ud = q->ctx;
  }
  return 0;
}

static PyObject *egress_submit(EgressObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"url", "body", "event_id", "method", "headers", "partition_key", "claim",
                                   "event", "context", NULL};
  PyObject *a[9];
  if (esgpy_args("submit", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  if (!a[2] || a[2] == Py_None) {
    PyErr_SetString(PyExc_TypeError, "submit() missing required argument 'event_id'");
    return NULL;
  }
  req_args q;
  if (req_build(st, a, &q) < 0) {
    req_release(&q);
    return NULL;
  }
  if (!self->e) {
    req_release(&q);
    return esgpy_raise(st, ESG_ESTATE, "the egress engine is closed");
  }
  if (esgpy_forked(self->pid)) {
    req_release(&q);
    return esgpy_raise_forked(st, "the egress engine", self->pid);
  }
  /* From a callback on this thread (on_done, on_retry, the clock, the store's clock) inside
     run/drain/close/resubmit, the engine is ours already: taking its lock would deadlock.
     Python code runs on the owner thread only from such a callback. Elsewhere take the lock. */
  int nested = self->owner == PyThread_get_thread_ident();
  if (!nested) {
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
      Py_BEGIN_ALLOW_THREADS
      PyThread_acquire_lock(self->lock, WAIT_LOCK);
      Py_END_ALLOW_THREADS
    }
  }
  int rc = self->e ? esg_egress_submit(self->e, &q.r) : ESG_ESTATE;
  PyObject *err = NULL;
  if (rc != ESG_OK) err = esgpy_raise(st, rc, self->e ? esg_errmsg(self->e) : "the egress engine is closed");
  if (!nested) PyThread_release_lock(self->lock);
  if (rc == ESG_OK) q.ctx = NULL; /* the request owns it until its outcome */
  req_release(&q);
  (void)err;
  if (rc != ESG_OK) return NULL;
  Py_RETURN_NONE;
}

static PyObject *egress_resubmit(EgressObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"fault_id", "url", "body", "event_id", "method", "headers", "partition_key",
                                   "claim", "context", NULL};
  PyObject *a[9];
  if (esgpy_args("resubmit", args, nargs, kwnames, kw, 2, a) < 0) return NULL;
  esgpy_state *st = STATE(self);
  int64_t id;
  if (esgpy_int64(a[0], "fault_id", &id) < 0) return NULL;
  PyObject *b[9] = {a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL, a[8]};
  req_args q;
  if (req_build(st, b, &q) < 0) {
    req_release(&q);
    return NULL;
  }
  if (egress_enter(self) < 0) {
    req_release(&q);
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_egress_resubmit(self->e, id, &q.r);
  Py_END_ALLOW_THREADS
  if (rc == ESG_OK) q.ctx = NULL;
  req_release(&q);
  if (egress_done(self, rc) < 0) return NULL;
  return PyBool_FromLong(rc == ESG_OK);
}

static PyObject *egress_run(EgressObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"timeout", NULL};
  PyObject *a[1];
  if (esgpy_args("run", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  int64_t ms = 0;
  if (a[0] == Py_None) ms = -1;
  else if (a[0] && esgpy_seconds_ms(a[0], "timeout", &ms) < 0) return NULL;
  if (ms > INT32_MAX) ms = INT32_MAX;
  if (ms < -1) ms = 0;
  if (egress_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_egress_run(self->e, (int)ms);
  Py_END_ALLOW_THREADS
  if (egress_done(self, rc) < 0) return NULL;
  return PyBool_FromLong(rc == ESG_OK);
}

static PyObject *egress_drain(EgressObject *self, PyObject *unused) {
  (void)unused;
  if (egress_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_egress_drain(self->e);
  Py_END_ALLOW_THREADS
  if (egress_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *egress_results(EgressObject *self, PyObject *unused) {
  (void)unused;
  PyObject *r = self->results;
  if (!(self->results = PyList_New(0))) {
    self->results = r;
    return NULL;
  }
  return r;
}

static PyObject *egress_stats(EgressObject *self, PyObject *unused) {
  (void)unused;
  esg_egress_stats s;
  memset(&s, 0, sizeof s);
  if (self->e) esg_egress_get_stats(self->e, &s);
  PyObject *t = PyStructSequence_New(STATE(self)->EgressStatsType);
  if (!t) return NULL;
  uint64_t v[] = {s.submitted, s.delivered, s.retried, s.faulted, s.cancelled, s.attempts, s.connects,
                  s.in_flight, s.queued};
  for (int i = 0; i < 9; i++) PyStructSequence_SetItem(t, i, PyLong_FromUnsignedLongLong(v[i]));
  return esgpy_struct_checked(t, 9);
}

static PyObject *egress_exit_ctx(EgressObject *self, PyObject *args) {
  (void)args;
  return esgpy_exit_result(egress_close(self, NULL));
}

static PyObject *egress_get_closed(EgressObject *self, void *c) {
  (void)c;
  return PyBool_FromLong(!engine_open(self));
}

static PyObject *egress_get_store(EgressObject *self, void *c) {
  (void)c;
  return Py_NewRef(self->store ? (PyObject *)self->store : Py_None);
}

static int egress_traverse(EgressObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->on_done);
  Py_VISIT(self->on_retry);
  Py_VISIT(self->clock);
  Py_VISIT(self->results);
  Py_VISIT(self->store);
  return 0;
}

static int egress_clear(EgressObject *self) {
  if (self->e) { /* closing runs callbacks: close before they go */
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    egress_final_close(self);
    PyErr_Restore(t, v, tb);
  }
  Py_CLEAR(self->on_done);
  Py_CLEAR(self->on_retry);
  Py_CLEAR(self->results);
  return 0;
}

static void egress_dealloc(EgressObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (self->e) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    egress_final_close(self); /* the callbacks get results, never self */
    Py_CLEAR(self->cb_exc);
    PyErr_Restore(t, v, tb);
  }
  if (self->lock && !esgpy_forked(self->pid)) PyThread_free_lock(self->lock); /* a child's may be held */
  Py_CLEAR(self->on_done);
  Py_CLEAR(self->on_retry);
  Py_CLEAR(self->clock);
  Py_CLEAR(self->results);
  Py_CLEAR(self->cb_exc);
  Py_CLEAR(self->store);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

/* ------------------------------------------------------ module functions -- */

PyObject *esgpy_egress_retryable(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"http_status", "curl_code", NULL};
  PyObject *a[2];
  (void)module;
  if (esgpy_args("egress_retryable", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  int64_t status, cc = 0;
  if (esgpy_int64(a[0], "http_status", &status) < 0 || (a[1] && esgpy_int64(a[1], "curl_code", &cc) < 0))
    return NULL;
  return PyBool_FromLong(esg_egress_retryable((int)cc, (int)status));
}

PyObject *esgpy_parse_retry_after(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"value", "now", NULL};
  PyObject *a[2];
  if (esgpy_args("parse_retry_after", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  const char *value = esgpy_str(a[0], "value", NULL);
  int64_t now = esg_clock_real(NULL), delay = 0;
  if (!value || (a[1] && a[1] != Py_None && esgpy_seconds_ms(a[1], "now", &now) < 0)) return NULL;
  int rc = esg_egress_parse_retry_after(value, now, &delay);
  if (rc != ESG_OK) return esgpy_raise(esgpy_state_of_module(module), rc, esg_errmsg(NULL));
  return esgpy_ms_seconds(delay);
}

static PyMethodDef egress_methods[] = {
    {"submit", FN(egress_submit), FAST,
     "submit(url, body=None, *, event_id, method='POST', headers=None, partition_key=None,\n"
     "       claim=None, event=None, context=None) -> None\n\n"
     "Queues one delivery (nothing is sent until run/drain). body: bytes/str, a\n"
     "JSON-able value or an Event. event_id goes in the idempotency header and in a\n"
     "fault. headers: a mapping or a list of 'Name: value'. Deliveries sharing a\n"
     "partition_key go one at a time in submit order. claim: an esg.Claim (status\n"
     "'new') or (key, token), completed on success and released on failure. event:\n"
     "what a fault keeps for resubmission (default: the body). context comes back as\n"
     "result.context. May be called from a callback."},
    {"resubmit", FN(egress_resubmit), FAST,
     "resubmit(fault_id, url, body=None, *, event_id=None, method='POST', headers=None,\n"
     "         partition_key=None, claim=None, context=None) -> bool\n\n"
     "Delivers the event of a fault again (same event id). False when no such fault.\n"
     "On success the fault is deleted; on failure a new one replaces it."},
    {"run", FN(egress_run), FAST,
     "run(timeout=0.0) -> bool\n\n"
     "Drives deliveries (GIL released) for up to timeout seconds of real time (0: one\n"
     "pass without waiting; None: until idle). True when nothing is left."},
    {"drain", (PyCFunction)egress_drain, METH_NOARGS, "drain() -> None\n\nRuns until every delivery has finished."},
    {"results", (PyCFunction)egress_results, METH_NOARGS,
     "results() -> list[EgressResult]\n\nThe outcomes finished since the last call (kept only without on_done)."},
    {"stats", (PyCFunction)egress_stats, METH_NOARGS, "stats() -> EgressStats\n\nThe counters since open."},
    {"close", (PyCFunction)egress_close, METH_NOARGS,
     "close() -> None\n\nCancels what has not finished (outcome 'cancelled', claims released) and frees\n"
     "the engine. Closing the store closes it too."},
    {"__enter__", esgpy_return_self, METH_NOARGS, "Returns the engine."},
    {"__exit__", (PyCFunction)egress_exit_ctx, METH_VARARGS, "Closes the engine."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef egress_getset[] = {{"closed", (getter)egress_get_closed, NULL, "True once closed", NULL},
                                      {"store", (getter)egress_get_store, NULL, "the Store, or None", NULL},
                                      {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot egress_slots[] = {
    {Py_tp_doc, "Egress(store=None, *, on_done=None, on_retry=None, clock=None, max_in_flight=16,\n"
                "       max_attempts=5, max_elapsed=60.0, backoff_base=0.1, backoff_cap=10.0,\n"
                "       connect_timeout=5.0, timeout=30.0, rate=0, burst=0,\n"
                "       idempotency_header='Idempotency-Key', content_type='application/json',\n"
                "       max_response_bytes=65536, claim_lease=None, complete_on_fault=False, seed=0,\n"
                "       circuit_failures=0, circuit_open=1.0)\n\n"
                "The HTTP delivery engine: retries with backoff and jitter (following\n"
                "Retry-After), per-partition-key order, a rate limit; on the store, success\n"
                "completes the delivery's claim and exhausted or refused deliveries become\n"
                "faults. on_done(result) runs once per finished delivery; on_retry(event_id,\n"
                "attempt, http_status, delay, error) at each retry. circuit_failures=N (0: off)\n"
                "pauses a host for circuit_open seconds after N retryable failures in a row.\n"
                "Times are seconds."},
    {Py_tp_new, egress_new},
    {Py_tp_dealloc, egress_dealloc},
    {Py_tp_traverse, egress_traverse},
    {Py_tp_clear, egress_clear},
    {Py_tp_methods, egress_methods},
    {Py_tp_getset, egress_getset},
    {0, NULL}};

PyType_Spec esgpy_egress_spec = {
    .name = "esg._esg.Egress",
    .basicsize = sizeof(EgressObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = egress_slots,
};
