/*
 * esg._esg.Gateway: the pipeline of esg/gateway.h on a Store, with Python callables as
 * its steps (the pure-Python esg.Gateway turns the documented keywords into the flat
 * ones of this type). Every call takes the store's lock and runs the C gateway with the
 * GIL released; each step takes the GIL back (PyGILState_Ensure), so other Python
 * threads run while the loop waits and while SQLite writes.
 *
 * What the steps of one event share lives in one scratch struct that the C event's
 * scratch slot points to (esg_gateway_event_set_user): the event decoded once into a
 * dict, the transform's result (what the sinks, url, body and out_doc see), and the
 * strings handed back to C, kept until the event ends. A step that raises makes the
 * event a fault of that stage with the exception's "Type: message" as its text, exactly
 * like a Lua error in esg run; KeyboardInterrupt and SystemExit also stop the run and are
 * raised when the call ends. During a step the store is lent to it (esgpy_store_lend), so
 * ctx.store works there as a C step's store does: between the gateway's own store calls.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "esgpy.h"

/* The outcome names of push and resubmit, in the order of st->s_gw. */
enum { O_DELIVERED, O_DUPLICATE, O_FILTERED, O_DROPPED, O_STALE, O_ECHO, O_BUSY, O_FAULT, O_SUBMITTED, O_BLANK,
       O_NOT_FOUND };
static const char *const outcome_names[ESGPY_GW_NOUTCOMES] = {
    "delivered", "duplicate", "filtered", "dropped", "stale", "echo", "busy", "fault", "submitted", "blank",
    "not_found"};

/* What the steps of the current event share; cleared when the next event begins or the call ends. */
typedef struct scratch {
  PyObject *ev;        /* the event as a dict, decoded by the first step that needs it */
  const char *ev_json; /* the JSON it was decoded from: the enrich step's lookup changes the event's */
  size_t ev_len;
  PyObject *out;       /* what transform returned: what sinks, url, body and out_doc are given */
  PyObject *line;      /* ctx.line, made on first use */
  PyObject *event;     /* ctx.event, made on first use */
  PyObject *keep;      /* a list: what the strings handed to C for this event point into */
} scratch;

typedef struct GatewayObject {
  PyObject_HEAD
  esg_gateway *g;      /* detached by the store's close, freed by ours */
  StoreObject *store;
  esgpy_state *st;
  PyObject *name;
  PyObject *filter, *key, *hash, *entity, *echo, *latch_key, *latch_doc, *latch_out_doc, *enrich_key, *load,
      *enrich_fn, *transform, *write, *url, *body, *on_fault, *collect_if, *on_retry;
  PyObject *into;      /* the enrich step's member, as str (NULL without an enrich key) */
  int enriched;        /* an enrich step is set: without a transform the output is the enriched event */
  int http;            /* the HTTP sink: a push that hands the event over answers "submitted" */
  PyObject *keep;      /* what the options the C gateway keeps pointing to point into */
  esg_cache_opts cache_opts; /* read when the gateway opens its cache, at the first event that needs it */
  const char **headers;      /* read at every delivery */
  PyObject *ctx;       /* the GatewayContext handed to every step */
  esg_gateway_event *cur; /* the event of the last step (the scratch says whether it is still going) */
  scratch sc;
  uint8_t hashbuf[32]; /* a step's hash over 64 bytes, as its SHA-256 */
  unsigned long running; /* the thread inside a call on this gateway: its steps may not call it */
  PyObject *exc;       /* the first exception of a callback, raised when the call ends */
  PyObject *load_exc, *load_fatal; /* the enrich loader's (its failure is the event's fault) */
  int stop;            /* a KeyboardInterrupt or the source's exception: the source reports failure */
  esg_gateway_stats last; /* the counters when the last call ended (closed: the final ones) */
  long pid;            /* the process that opened it: a forked child must not use it */
  size_t max_line;     /* run(path)'s line limit (0: ESG_EVENT_MAX_BYTES) */
} GatewayObject;

typedef struct {
  PyObject_HEAD
  GatewayObject *gw; /* borrowed: the gateway clears it when it goes */
} ContextObject;

static int gw_is_open(PyObject *obj) {
  GatewayObject *self = (GatewayObject *)obj;
  return self->g && self->store && self->store->s;
}

/* ---------------------------------------------------------- the scratch -- */

static void sc_clear(GatewayObject *self) {
  scratch *sc = &self->sc;
  Py_CLEAR(sc->ev);
  Py_CLEAR(sc->out);
  Py_CLEAR(sc->line);
  Py_CLEAR(sc->event);
  sc->ev_json = NULL;
  sc->ev_len = 0;
  if (sc->keep && PyList_GET_SIZE(sc->keep)) PyList_SetSlice(sc->keep, 0, PyList_GET_SIZE(sc->keep), NULL);
}

/* A step of event e begins (GIL held): a new event gets the scratch, cleared of the last one's. */
static void begin(GatewayObject *self, esg_gateway_event *e) {
  if (esg_gateway_event_user(e) != &self->sc) {
    sc_clear(self);
    esg_gateway_event_set_user(e, &self->sc, NULL); /* nothing to free: the scratch is ours */
  }
  self->cur = e;
}

/* Keeps obj (a new reference, stolen) until the event ends. 0 or -1. */
static int keep_add(GatewayObject *self, PyObject *obj) {
  int rc = PyList_Append(self->sc.keep, obj);
  Py_DECREF(obj);
  return rc;
}

/* JSON text the C library parsed already as a Python value: json's C scanner called directly
   (json.loads would add three Python frames per event), json.loads for its error if it fails. */
static PyObject *decode(GatewayObject *self, const char *json, size_t len) {
  size_t skip = 0;
  while (skip < len && (json[skip] == ' ' || json[skip] == '\t' || json[skip] == '\n' || json[skip] == '\r')) skip++;
  PyObject *s = PyUnicode_DecodeUTF8(json + skip, (Py_ssize_t)(len - skip), NULL), *d = NULL;
  if (!s) return NULL;
  if (self->st->json_scan) {
    PyObject *zero = PyLong_FromLong(0);
    PyObject *argv[2] = {s, zero};
    PyObject *r = zero ? PyObject_Vectorcall(self->st->json_scan, argv, 2, NULL) : NULL;
    Py_XDECREF(zero);
    if (r && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) d = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    Py_XDECREF(r);
    if (!d) PyErr_Clear();
  }
  if (!d) d = PyObject_CallOneArg(self->st->json_loads, s);
  Py_DECREF(s);
  return d;
}

/*
 * The event as a dict (borrowed; NULL with an exception), decoded once per event. The C
 * enrich step's lookup replaces the event's JSON (the value under `into`): the dict then
 * takes that member over, so what earlier steps did to it stays.
 */
static PyObject *ev_of(GatewayObject *self, esg_gateway_event *e) {
  scratch *sc = &self->sc;
  size_t len;
  const char *json = esg_gateway_event_json(e, &len);
  if (sc->ev && json == sc->ev_json && len == sc->ev_len) return sc->ev;
  PyObject *d = decode(self, json, len);
  if (!d) return NULL;
  if (sc->ev && self->into && PyDict_Check(sc->ev) && PyDict_Check(d)) {
    PyObject *v = PyDict_GetItemWithError(d, self->into);
    int rc = v ? PyDict_SetItem(sc->ev, self->into, v) : PyErr_Occurred() ? -1 : 0;
    Py_DECREF(d);
    if (rc < 0) return NULL;
  } else {
    Py_XSETREF(sc->ev, d);
  }
  sc->ev_json = json;
  sc->ev_len = len;
  return sc->ev;
}

/* What the output-side steps get as `out` (borrowed): the transform's result; without one the
   enriched event (a dict) after an enrich step, else the bytes to be written. */
static PyObject *out_of(GatewayObject *self, esg_gateway_event *e) {
  if (self->sc.out) return self->sc.out;
  if (self->enriched && !self->transform) return ev_of(self, e);
  size_t len = 0;
  const void *p = esg_gateway_event_output(e, &len);
  return self->sc.out = PyBytes_FromStringAndSize(p ? p : "", p ? (Py_ssize_t)len : 0);
}

/* -------------------------------------------------------------- failing -- */

/* Keeps the pending exception for the end of the call (the first one; later ones are reported
   as unraisable). A BaseException that is no Exception (KeyboardInterrupt) also stops the run. */
static void keep_exc(GatewayObject *self) {
  int fatal = !PyErr_ExceptionMatches(PyExc_Exception);
  if (!self->exc) self->exc = esgpy_fetch_exc();
  else PyErr_WriteUnraisable((PyObject *)self);
  if (fatal) self->stop = 1;
}

/* A step raised: the event becomes a fault of the step's stage, with "Type: message". */
static int fail(GatewayObject *self, esg_gateway_event *e) {
  char text[1000];
  esgpy_exc_text(text, sizeof text);
  if (PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear();
  else keep_exc(self);
  return esg_gateway_event_fail(e, "%s", text);
}

/* fn(a0[, a1], ctx) with the store lent to the step. A new reference, or NULL with the exception. */
static PyObject *call_step(GatewayObject *self, PyObject *fn, PyObject *a0, PyObject *a1) {
  PyObject *argv[3];
  size_t n = 0;
  argv[n++] = a0;
  if (a1) argv[n++] = a1;
  argv[n++] = self->ctx;
  esgpy_store_lend(self->store);
  PyObject *r = PyObject_Vectorcall(fn, argv, n, NULL);
  esgpy_store_unlend(self->store);
  return r;
}

/* fn(ev, ctx) for event e. */
static PyObject *call_ev(GatewayObject *self, esg_gateway_event *e, PyObject *fn) {
  begin(self, e);
  PyObject *ev = ev_of(self, e);
  return ev ? call_step(self, fn, ev, NULL) : NULL;
}

/* -------------------------------------------------------------- results -- */

enum { AS_KEY, AS_HASH, AS_DOC };

/*
 * A step's result as text for C, kept until the event ends: None gives NULL ("none"). AS_KEY
 * takes str; AS_HASH str or bytes (beyond 64 bytes their SHA-256, as Store.claim's payload);
 * AS_DOC str, bytes or a JSON-able value (compact JSON). 0, or -1 with an exception.
 */
static int give(GatewayObject *self, PyObject *r, int as, const char *what, const char **out, size_t *len) {
  *out = NULL;
  if (len) *len = 0;
  if (r == Py_None) return 0;
  PyObject *keep;
  const char *data;
  Py_ssize_t n;
  if (PyUnicode_Check(r)) {
    keep = Py_NewRef(r);
  } else if (as != AS_KEY && PyBytes_Check(r)) {
    keep = Py_NewRef(r);
  } else if (as == AS_DOC) {
    if (!(keep = esgpy_json_fast(self->st, r))) return -1;
  } else {
    PyErr_Format(PyExc_TypeError, "%s must return str%s or None, not %.100s", what, as == AS_HASH ? ", bytes" : "",
                 Py_TYPE(r)->tp_name);
    return -1;
  }
  if (PyBytes_Check(keep)) {
    data = PyBytes_AS_STRING(keep);
    n = PyBytes_GET_SIZE(keep);
  } else if (!(data = PyUnicode_AsUTF8AndSize(keep, &n))) {
    Py_DECREF(keep);
    return -1;
  }
  if (keep_add(self, keep) < 0) return -1;
  if (as == AS_HASH && n > ESG_HASH_MAX) {
    esg_sha256(data, (size_t)n, self->hashbuf);
    data = (const char *)self->hashbuf;
    n = 32;
  }
  *out = data;
  if (len) *len = (size_t)n;
  return 0;
}

/* ------------------------------------------------------- the trampolines -- */

/* A yes/no step: filter, echo. */
static int test_step(GatewayObject *self, esg_gateway_event *e, PyObject *fn) {
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = call_ev(self, e, fn);
  int rc = r ? PyObject_IsTrue(r) : -1;
  Py_XDECREF(r);
  if (rc < 0) rc = fail(self, e);
  PyGILState_Release(g);
  return rc;
}

static int t_filter(void *ud, esg_gateway_event *e) { return test_step(ud, e, ((GatewayObject *)ud)->filter); }
static int t_echo(void *ud, esg_gateway_event *e) { return test_step(ud, e, ((GatewayObject *)ud)->echo); }
static int t_collect_if(void *ud, esg_gateway_event *e) { return test_step(ud, e, ((GatewayObject *)ud)->collect_if); }

/* A step whose result is text: fn(ev, ctx), or with out_doc fn(out, ev, ctx). */
static int str_step(GatewayObject *self, esg_gateway_event *e, PyObject *fn, int with_out, int as, const char *what,
                    const char **out, size_t *len) {
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r;
  if (with_out) {
    begin(self, e);
    PyObject *o = out_of(self, e), *ev = o ? ev_of(self, e) : NULL;
    r = ev ? call_step(self, fn, o, ev) : NULL;
  } else {
    r = call_ev(self, e, fn);
  }
  int rc = ESG_OK;
  if (!r || give(self, r, as, what, out, len) < 0) rc = fail(self, e);
  Py_XDECREF(r);
  PyGILState_Release(g);
  return rc;
}

static int t_key(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  return str_step(ud, e, ((GatewayObject *)ud)->key, 0, AS_KEY, "key", out, len);
}
static int t_hash(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  return str_step(ud, e, ((GatewayObject *)ud)->hash, 0, AS_HASH, "hash", out, len);
}
static int t_latch_key(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  return str_step(ud, e, ((GatewayObject *)ud)->latch_key, 0, AS_KEY, "latch key", out, len);
}
static int t_latch_doc(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  return str_step(ud, e, ((GatewayObject *)ud)->latch_doc, 0, AS_DOC, "latch doc", out, len);
}
static int t_latch_out_doc(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  return str_step(ud, e, ((GatewayObject *)ud)->latch_out_doc, 1, AS_DOC, "latch out_doc", out, len);
}
static int t_enrich_key(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  return str_step(ud, e, ((GatewayObject *)ud)->enrich_key, 0, AS_KEY, "enrich key", out, len);
}

/* entity(ev, ctx) -> (key, version), (key, version, doc) or None: doc (a dict or JSON text; None,
   or left out: the event's JSON) is what is stored at that version, as Lua's third result. */
static int t_entity(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = call_ev(self, e, self->entity);
  int rc = ESG_OK;
  *key = NULL;
  if (r && r != Py_None) {
    static const char usage[] = "entity must return (key, version), (key, version, doc) or None";
    PyObject *seq = PySequence_Fast(r, usage);
    Py_ssize_t n = seq ? PySequence_Fast_GET_SIZE(seq) : 0;
    const char *doc = NULL;
    size_t dlen = 0;
    if (!seq || n < 2 || n > 3) {
      if (seq) PyErr_SetString(PyExc_TypeError, usage);
      rc = -1;
    } else if (give(self, PySequence_Fast_GET_ITEM(seq, 0), AS_KEY, "entity (its key)", key, NULL) < 0 ||
               esgpy_int64(PySequence_Fast_GET_ITEM(seq, 1), "the entity's version", version) < 0 ||
               (n == 3 && give(self, PySequence_Fast_GET_ITEM(seq, 2), AS_DOC, "entity (its doc)", &doc, &dlen) < 0)) {
      rc = -1;
    } else if (doc && (rc = esg_gateway_event_set_entity_doc(e, doc, dlen)) != ESG_OK) {
      PyErr_NoMemory();
      rc = -1;
    }
    Py_XDECREF(seq);
  }
  if (!r || rc < 0) rc = fail(self, e);
  Py_XDECREF(r);
  PyGILState_Release(g);
  return rc;
}

/* enrich fn(ev, ctx) -> the enriched event (a dict, or JSON text); None keeps ev (changed in place or not). */
static int t_enrich(void *ud, esg_gateway_event *e) {
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = call_ev(self, e, self->enrich_fn);
  int rc = ESG_OK;
  if (r == Py_None) {
    Py_SETREF(r, self->sc.ev ? Py_NewRef(self->sc.ev) : NULL);
    if (!r) PyErr_SetString(PyExc_RuntimeError, "the event's dict is gone");
  }
  const char *json;
  size_t len;
  if (!r || give(self, r, AS_DOC, "enrich fn", &json, &len) < 0) {
    rc = fail(self, e);
  } else if ((rc = esg_gateway_event_set_json(e, json, len)) == ESG_OK) {
    /* the dict is the event now (text is decoded when a step asks) */
    Py_XSETREF(self->sc.ev, PyDict_Check(r) ? Py_NewRef(r) : NULL);
    self->sc.ev_json = esg_gateway_event_json(e, &self->sc.ev_len);
  }
  Py_XDECREF(r);
  PyGILState_Release(g);
  return rc;
}

/* transform(ev, ctx) -> dict/list (compact JSON, members in insertion order), str/bytes (as
   they are), None/False (dropped). */
static int t_transform(void *ud, esg_gateway_event *e) {
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = call_ev(self, e, self->transform);
  int rc = ESG_OK;
  if (!r) {
    rc = fail(self, e);
  } else if (r != Py_None && r != Py_False) {
    const char *data;
    size_t len;
    if (give(self, r, AS_DOC, "transform", &data, &len) < 0) rc = fail(self, e);
    else if ((rc = esg_gateway_event_set_output(e, data, len)) == ESG_OK) Py_XSETREF(self->sc.out, Py_NewRef(r));
  }
  Py_XDECREF(r);
  PyGILState_Release(g);
  return rc;
}

/* The callback sink: write(out, ctx); its result is not looked at. */
static int t_write(void *ud, esg_gateway_event *e, const void *data, size_t len) {
  (void)data, (void)len;
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  begin(self, e);
  PyObject *o = out_of(self, e);
  PyObject *r = o ? call_step(self, self->write, o, NULL) : NULL;
  int rc = r ? ESG_OK : fail(self, e);
  Py_XDECREF(r);
  PyGILState_Release(g);
  return rc;
}

/* The HTTP sink's url(out, ctx) and body(out, ctx), per event. */
static int t_render(void *ud, esg_gateway_event *e, esg_gateway_request *req) {
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  begin(self, e);
  PyObject *o = out_of(self, e);
  int rc = o ? ESG_OK : -1;
  if (rc == ESG_OK && self->url) {
    PyObject *r = call_step(self, self->url, o, NULL);
    if (!r || give(self, r, AS_KEY, "url", &req->url, NULL) < 0) rc = -1;
    Py_XDECREF(r);
  }
  if (rc == ESG_OK && self->body) {
    PyObject *r = call_step(self, self->body, o, NULL);
    const char *b = NULL;
    size_t n = 0;
    if (!r || give(self, r, AS_DOC, "body", &b, &n) < 0) rc = -1;
    else if (b) {
      req->body = b;
      req->body_len = n;
    }
    Py_XDECREF(r);
  }
  if (rc < 0) rc = fail(self, e);
  PyGILState_Release(g);
  return rc;
}

/* The enrich loader: load(key) as a Cache loader (esgpy_load), a value written with its members
   sorted as the outputs are; its failure becomes the event's. */
static int t_load(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  GatewayObject *self = ud;
  int rc = esgpy_load(self->st, self->load, 0, 1, 0, key, deadline, ld, &self->load_exc, &self->load_fatal);
  if (self->load_fatal) self->stop = 1;
  return rc;
}

static PyObject *opt_int_or_none(int64_t v) { return v ? PyLong_FromLongLong(v) : Py_NewRef(Py_None); }

static void t_on_fault(void *ud, const esg_gateway_fault *f) {
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *t = PyStructSequence_New(self->st->GatewayFaultType);
  if (t) {
    PyStructSequence_SetItem(t, 0, opt_int_or_none(f->id));
    PyStructSequence_SetItem(t, 1, esgpy_utf8_or_none(f->event_id));
    PyStructSequence_SetItem(t, 2, esgpy_utf8_or_none(f->stage));
    PyStructSequence_SetItem(t, 3, esgpy_utf8_or_none(f->error ? f->error : ""));
    PyStructSequence_SetItem(t, 4, PyLong_FromLong(f->http_status));
    PyStructSequence_SetItem(t, 5, PyLong_FromLong(f->attempts));
    PyStructSequence_SetItem(t, 6, opt_int_or_none(f->lineno));
    t = esgpy_struct_checked(t, 7);
  }
  PyObject *r = t ? PyObject_CallOneArg(self->on_fault, t) : NULL;
  Py_XDECREF(t);
  if (r) Py_DECREF(r);
  else keep_exc(self);
  PyGILState_Release(g);
}

/* The HTTP sink's on_retry(event_id, attempt, http_status, delay, error), as esg.Egress calls it:
   after the retry is counted; an exception is raised when the call ends. */
static void t_on_retry(void *ud, const char *event_id, int attempt, int status, int64_t delay_ms, const char *error) {
  GatewayObject *self = ud;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = PyObject_CallFunction(self->on_retry, "NiiNN", esgpy_utf8_or_none(event_id), attempt, status,
                                      PyFloat_FromDouble((double)delay_ms / 1000.0),
                                      esgpy_utf8_or_none(error ? error : ""));
  if (r) Py_DECREF(r);
  else keep_exc(self);
  PyGILState_Release(g);
}

/* ------------------------------------------------------------ the calls -- */

static PyObject *stats_dict(const esg_gateway_stats *s) {
  return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsK}", "received", (unsigned long long)s->received, "filtered",
                       (unsigned long long)s->filtered, "duplicates", (unsigned long long)s->duplicates, "busy",
                       (unsigned long long)s->busy, "stale", (unsigned long long)s->stale, "echoes",
                       (unsigned long long)s->echoes, "dropped", (unsigned long long)s->dropped, "delivered",
                       (unsigned long long)s->delivered, "faults", (unsigned long long)s->faults, "cancelled",
                       (unsigned long long)s->cancelled, "resubmitted", (unsigned long long)s->resubmitted,
                       "in_flight", (unsigned long long)s->in_flight, "retries", (unsigned long long)s->retries,
                       "circuits_open", (unsigned long long)s->circuits_open);
}

/* Takes the store's lock for a call on the gateway. -1 with StateError when closed, forked, or
   called from one of its own steps. */
static int gw_enter(GatewayObject *self) {
  esgpy_state *st = self->st;
  if (!gw_is_open((PyObject *)self)) return esgpy_raise(st, ESG_ESTATE, "the gateway is closed"), -1;
  if (esgpy_forked(self->pid)) return esgpy_raise_forked(st, "the gateway", self->pid), -1;
  if (self->running == PyThread_get_thread_ident())
    return esgpy_raise(st, ESG_ESTATE,
                       "the gateway is running this step (push, run, poll, drain, resubmit and close are refused "
                       "in its steps)"),
           -1;
  if (esgpy_dep_enter((PyObject *)self, self->store, gw_is_open, "the gateway is closed") < 0) return -1;
  self->running = PyThread_get_thread_ident();
  self->stop = 0;
  return 0;
}

/* After a call (GIL held): the kept exception, the store clock's, or rc < 0 (with the gateway's
   text); then leaves the store. 0, or -1 with the exception set. */
static int gw_done_h(GatewayObject *self, int rc, const void *errh) {
  StoreObject *store = self->store;
  sc_clear(self);
  self->cur = NULL;
  self->running = 0;
  self->stop = 0;
  if (self->g) esg_gateway_get_stats(self->g, &self->last);
  if (!self->exc && self->load_fatal) self->exc = Py_NewRef(self->load_fatal);
  Py_CLEAR(self->load_fatal);
  Py_CLEAR(self->load_exc);
  PyObject *exc = self->exc;
  self->exc = NULL;
  if (exc) {
    if (store->clock_type) {
      esgpy_store_check(store, 0);
      PyErr_Clear();
    }
    esgpy_store_leave(store);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return -1;
  }
  if (store->clock_type) {
    esgpy_store_fail(store, 0);
    return -1;
  }
  if (rc < 0) {
    esgpy_raise(self->st, rc, esg_errmsg(errh));
    esgpy_store_leave(store);
    return -1;
  }
  esgpy_store_leave(store);
  return 0;
}

static int gw_done(GatewayObject *self, int rc) { return gw_done_h(self, rc, self->g); }

/* The outcome of one event from the counters before (a) and after (b) it. */
static PyObject *outcome(GatewayObject *self, int rc, const esg_gateway_stats *a, const esg_gateway_stats *b,
                         int resubmit) {
  PyObject *const *s = self->st->s_gw;
  int o;
  if (rc == ESG_BUSY) o = O_BUSY;
  else if (rc == ESG_ECALLBACK) o = O_FAULT;
  else if (rc == ESG_NOT_FOUND) o = O_NOT_FOUND;
  else if (b->filtered > a->filtered) o = O_FILTERED;
  else if (b->duplicates > a->duplicates) o = O_DUPLICATE;
  else if (b->stale > a->stale) o = O_STALE;
  else if (b->echoes > a->echoes) o = O_ECHO;
  else if (b->dropped > a->dropped) o = O_DROPPED;
  else if (b->received == a->received) o = O_BLANK;
  else if (self->http && !resubmit) o = O_SUBMITTED; /* resubmit waits for the delivery */
  else o = O_DELIVERED;
  return Py_NewRef(s[o]);
}

static PyObject *gw_push(GatewayObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"event", NULL};
  PyObject *a[1];
  if (esgpy_args("push", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  esgpy_state *st = self->st;
  esgpy_bytes b;
  memset(&b, 0, sizeof b);
  const char *json;
  size_t len;
  if (esgpy_event_check(st, a[0])) {
    json = esg_event_json(esgpy_event_handle(a[0]), &len);
  } else {
    if (!PyUnicode_Check(a[0]) && !PyObject_CheckBuffer(a[0]) && !PyDict_Check(a[0])) {
      PyErr_Format(PyExc_TypeError, "event must be bytes, str, a dict or an Event, not %.100s",
                   Py_TYPE(a[0])->tp_name);
      return NULL;
    }
    if (esgpy_json_bytes(st, a[0], "event", &b) < 0) return NULL;
    json = b.data;
    len = (size_t)b.len;
  }
  if (gw_enter(self) < 0) {
    esgpy_bytes_release(&b);
    return NULL;
  }
  esg_gateway_stats before, after;
  esg_gateway_get_stats(self->g, &before);
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_gateway_push(self->g, json, len);
  Py_END_ALLOW_THREADS
  esg_gateway_get_stats(self->g, &after);
  esgpy_bytes_release(&b);
  if (gw_done(self, rc == ESG_BUSY || rc == ESG_ECALLBACK ? ESG_OK : rc) < 0) return NULL;
  return outcome(self, rc, &before, &after, 0);
}

static PyObject *gw_resubmit(GatewayObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"fault_id", NULL};
  PyObject *a[1];
  int64_t id;
  if (esgpy_args("resubmit", args, nargs, kwnames, kw, 1, a) < 0 || esgpy_int64(a[0], "fault_id", &id) < 0)
    return NULL;
  if (gw_enter(self) < 0) return NULL;
  esg_gateway_stats before, after;
  esg_gateway_get_stats(self->g, &before);
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_gateway_resubmit(self->g, id);
  Py_END_ALLOW_THREADS
  esg_gateway_get_stats(self->g, &after);
  if (gw_done(self, rc == ESG_BUSY || rc == ESG_ECALLBACK ? ESG_OK : rc) < 0) return NULL;
  return outcome(self, rc, &before, &after, 1);
}

static PyObject *gw_poll(GatewayObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"timeout", NULL};
  PyObject *a[1];
  int64_t ms = 0;
  if (esgpy_args("poll", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  if (a[0] && a[0] != Py_None && esgpy_seconds_ms(a[0], "timeout", &ms) < 0) return NULL;
  if (ms < 0) ms = 0;
  if (ms > INT32_MAX) ms = INT32_MAX;
  if (gw_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_gateway_poll(self->g, (int)ms);
  Py_END_ALLOW_THREADS
  if (gw_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *gw_drain(GatewayObject *self, PyObject *unused) {
  (void)unused;
  if (gw_enter(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_gateway_drain(self->g);
  Py_END_ALLOW_THREADS
  if (gw_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

/* ------------------------------------------------------------ the sources -- */

/* A source for esg_gateway_run: a C JSON-lines source (inner), or a Python iterable; either way
   it checks for signals (Ctrl-C) and calls progress now and then, and reports failure once a
   step asked to stop. */
typedef struct gw_source {
  GatewayObject *self;
  esg_gateway_source inner; /* inner.next NULL: the iterator */
  PyObject *iter, *item;    /* the line handed out last, kept until the next call */
  esgpy_bytes cur;
  PyObject *progress;
  unsigned n;
  int busy;                 /* the inner source had nothing: it may wait a while */
  double next_progress;
} gw_source;

static double mono(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#define PROGRESS_EVERY 0.2

/* With the GIL: signals and progress; for an iterator its next line. */
static int src_turn(gw_source *s, const char **data, size_t *len) {
  GatewayObject *self = s->self;
  if (PyErr_CheckSignals() < 0) {
    keep_exc(self);
    self->stop = 1;
    return ESG_ECALLBACK;
  }
  if (s->progress) {
    double t = mono();
    if (t >= s->next_progress) {
      s->next_progress = t + PROGRESS_EVERY;
      esg_gateway_stats st;
      esg_gateway_get_stats(self->g, &st);
      PyObject *d = stats_dict(&st);
      PyObject *r = d ? PyObject_CallOneArg(s->progress, d) : NULL;
      Py_XDECREF(d);
      if (!r) {
        keep_exc(self);
        self->stop = 1;
        return ESG_ECALLBACK;
      }
      Py_DECREF(r);
    }
  }
  if (!s->iter) return ESG_OK;
  esgpy_bytes_release(&s->cur);
  Py_CLEAR(s->item);
  PyObject *item = PyIter_Next(s->iter);
  if (!item) {
    if (!PyErr_Occurred()) return ESG_NOT_FOUND;
    keep_exc(self);
    self->stop = 1;
    return ESG_ECALLBACK;
  }
  s->item = item;
  if (esgpy_event_check(self->st, item)) {
    *data = esg_event_json(esgpy_event_handle(item), len);
    return ESG_OK;
  }
  if (esgpy_json_bytes(self->st, item, "a line of the source", &s->cur) < 0) {
    keep_exc(self);
    self->stop = 1;
    return ESG_ECALLBACK;
  }
  *data = s->cur.data;
  *len = (size_t)s->cur.len;
  return ESG_OK;
}

static int src_next(void *ud, const char **data, size_t *len) {
  gw_source *s = ud;
  if (s->self->stop) return ESG_ECALLBACK;
  /* the GIL every 64 lines is enough for Ctrl-C; at once after a wait, and when progress is due
     (a slow pipeline still shows life) */
  if (s->iter || s->busy || (++s->n & 63) == 0 || (s->progress && mono() >= s->next_progress)) {
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = src_turn(s, data, len);
    PyGILState_Release(g);
    if (rc != ESG_OK || s->iter) return rc;
  }
  int rc = s->inner.next(s->inner.ud, data, len);
  s->busy = rc == ESG_BUSY;
  return rc;
}

static PyObject *do_run(GatewayObject *self, gw_source *s) {
  s->self = self;
  esg_gateway_source src = {src_next, NULL, s, s->inner.next ? s->inner.fd : -1};
  PyObject *r = NULL;
  if (gw_enter(self) == 0) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = esg_gateway_run(self->g, &src);
    Py_END_ALLOW_THREADS
    if (gw_done(self, rc) == 0) r = stats_dict(&self->last);
  }
  if (s->inner.close) s->inner.close(s->inner.ud);
  esgpy_bytes_release(&s->cur);
  Py_CLEAR(s->item);
  Py_CLEAR(s->iter);
  return r;
}

/* run(source, *, progress=None): a path ("-": stdin), an open fd (int), or an iterable of events. */
static PyObject *gw_run(GatewayObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"source", "progress", NULL};
  PyObject *a[2];
  if (esgpy_args("run", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  gw_source s;
  memset(&s, 0, sizeof s);
  if (a[1] && a[1] != Py_None) {
    if (!PyCallable_Check(a[1])) {
      PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
      return NULL;
    }
    s.progress = a[1];
  }
  PyObject *src = a[0] && a[0] != Py_None ? a[0] : NULL;
  int rc = ESG_OK;
  if (!src || PyUnicode_Check(src) || PyBytes_Check(src) || PyObject_HasAttrString(src, "__fspath__")) {
    PyObject *path = NULL;
    if (src && !PyUnicode_FSConverter(src, &path)) return NULL;
    esg_gateway_lines_opts lo = ESG_GATEWAY_LINES_OPTS_INIT;
    lo.max_line = self->max_line;
    rc = esg_gateway_source_lines(&s.inner, path ? PyBytes_AS_STRING(path) : "-", -1, &lo);
    Py_XDECREF(path);
  } else if (PyLong_Check(src) && !PyBool_Check(src)) {
    int64_t fd;
    if (esgpy_int64(src, "source (a file descriptor)", &fd) < 0) return NULL;
    esg_gateway_lines_opts lo = ESG_GATEWAY_LINES_OPTS_INIT;
    lo.max_line = self->max_line;
    rc = esg_gateway_source_lines(&s.inner, NULL, fd < 0 || fd > INT32_MAX ? -1 : (int)fd, &lo);
  } else if (!(s.iter = PyObject_GetIter(src))) {
    PyErr_Format(PyExc_TypeError, "source must be a path, a file descriptor or an iterable of events, not %.100s",
                 Py_TYPE(src)->tp_name);
    return NULL;
  }
  if (rc != ESG_OK) return esgpy_raise(self->st, rc, esg_errmsg(NULL));
  return do_run(self, &s);
}

/* As a resync sink or a replay callback: the event through the pipeline; 1 stops the caller. */
static int resync_cb(void *ud, const esg_stored_event *ev) {
  GatewayObject *self = ud;
  if (self->stop) return 1;
  int rc = esg_gateway_event_cb(self->g, ev);
  return rc || self->stop;
}

/* _replay(corr_key=None, type=None, since=None, until=None): stored events through the pipeline. */
static PyObject *gw_replay(GatewayObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"corr_key", "type", "since", "until", NULL};
  PyObject *a[4];
  if (esgpy_args("_replay", args, nargs, kwnames, kw, 0, a) < 0) return NULL;
  esg_replay_filter flt;
  memset(&flt, 0, sizeof flt);
  if (esgpy_opt_str(a[0], "corr_key", &flt.corr_key) < 0 || esgpy_opt_str(a[1], "type", &flt.type) < 0) return NULL;
  if (a[2] && a[2] != Py_None && esgpy_int64(a[2], "since (epoch ms)", &flt.since) < 0) return NULL;
  if (a[3] && a[3] != Py_None && esgpy_int64(a[3], "until (epoch ms)", &flt.until) < 0) return NULL;
  if (gw_enter(self) < 0) return NULL;
  int rc;
  int64_t n = 0;
  esg_store *store = self->store->s;
  const void *errh = store; /* replay and the final commit fail with the store's text, drain with ours */
  Py_BEGIN_ALLOW_THREADS
  rc = esg_replay(store, &flt, resync_cb, self, &n);
  if (rc >= 0 && (rc = esg_gateway_drain(self->g)) < 0) errh = self->g;
  if (rc >= 0) rc = esg_store_flush(store);
  Py_END_ALLOW_THREADS
  if (gw_done_h(self, rc < 0 ? rc : ESG_OK, errh) < 0) return NULL;
  return stats_dict(&self->last);
}

int esgpy_gateway_sink(esgpy_state *st, PyObject *obj, StoreObject *store, esg_resync_opts *o) {
  if (!PyObject_TypeCheck(obj, st->GatewayType)) return 1;
  GatewayObject *self = (GatewayObject *)obj;
  if (!gw_is_open(obj)) return esgpy_raise(st, ESG_ESTATE, "the gateway is closed"), -1;
  if (self->store != store) return esgpy_raise(st, ESG_EINVAL, "the gateway (sink) is on another store"), -1;
  o->sink = resync_cb;
  o->sink_ud = self;
  return 0;
}

int esgpy_gateway_sink_enter(PyObject *obj) {
  GatewayObject *self = (GatewayObject *)obj;
  esgpy_state *st = self->st;
  if (!gw_is_open(obj)) return esgpy_raise(st, ESG_ESTATE, "the gateway (sink) is closed"), -1;
  if (esgpy_forked(self->pid)) return esgpy_raise_forked(st, "the gateway", self->pid), -1;
  if (self->running) return esgpy_raise(st, ESG_ESTATE, "the gateway (sink) is running a call"), -1;
  self->running = PyThread_get_thread_ident();
  self->stop = 0;
  return 0;
}

int esgpy_gateway_sink_done(PyObject *obj) {
  GatewayObject *self = (GatewayObject *)obj;
  sc_clear(self);
  self->cur = NULL;
  self->running = 0;
  self->stop = 0;
  if (self->g) esg_gateway_get_stats(self->g, &self->last);
  if (!self->exc && self->load_fatal) self->exc = Py_NewRef(self->load_fatal);
  Py_CLEAR(self->load_fatal);
  Py_CLEAR(self->load_exc);
  PyObject *exc = self->exc;
  self->exc = NULL;
  if (!exc) return 0;
  PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
  Py_DECREF(exc);
  return -1;
}

/* ----------------------------------------------------------- lifecycle -- */

/* Frees the C gateway (it drains, closes the sink and the cache, commits) with the GIL released,
   from a finalizer: under the store's lock taken with the GIL released, none in a forked child
   (libesg's closes there touch nothing of the parent's). The final commit's error is lost. */
static void gw_final_close(GatewayObject *self) {
  int entered = self->store ? esgpy_store_final_enter(self->store) : -1;
  esg_gateway *g = self->g;
  esg_gateway_get_stats(g, &self->last);
  self->running = PyThread_get_thread_ident(); /* the on_fault of a delivery ending now */
  Py_BEGIN_ALLOW_THREADS
  esg_gateway_close(g);
  Py_END_ALLOW_THREADS
  self->g = NULL;
  self->running = 0;
  sc_clear(self);
  Py_CLEAR(self->exc);
  Py_CLEAR(self->load_exc);
  Py_CLEAR(self->load_fatal);
  if (self->store) esgpy_store_final_leave(self->store, entered);
}

static PyObject *gw_close(GatewayObject *self, PyObject *unused) {
  (void)unused;
  if (!self->g) Py_RETURN_NONE;
  if (esgpy_forked(self->pid) || !self->store->s) { /* the parent's, or detached by its store's close */
    esg_gateway_get_stats(self->g, &self->last);
    esg_gateway_close(self->g);
    self->g = NULL;
    Py_RETURN_NONE;
  }
  if (gw_enter(self) < 0) {
    if (!gw_is_open((PyObject *)self)) { /* closed, or its store, while we waited */
      PyErr_Clear();
      return gw_close(self, NULL);
    }
    return NULL;
  }
  esg_gateway *g = self->g;
  esg_gateway_get_stats(g, &self->last);
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = esg_gateway_close(g);
  Py_END_ALLOW_THREADS
  self->g = NULL; /* gone either way */
  if (gw_done(self, rc) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *gw_exit_ctx(GatewayObject *self, PyObject *args) {
  (void)args;
  return esgpy_exit_result(gw_close(self, NULL));
}

/* The keywords of the constructor (the flat options esg.Gateway computes). */
enum {
  K_NAME, K_FILTER, K_NO_IDEMPOTENCE, K_KEY, K_HASH, K_NO_HASH, K_ENTITY, K_LEASE, K_TTL, K_ECHO, K_LATCH_KEY,
  K_LATCH_FROM, K_LATCH_TO, K_LATCH_DOC, K_LATCH_OUT_DOC, K_LATCH_TTL, K_LATCH_FLAG, K_CACHE, K_COLLECT,
  K_ENRICH_KEY, K_LOAD, K_ENRICH_INTO, K_ENRICH_REQUIRED, K_ENRICH_FN, K_TRANSFORM, K_SINK, K_SINK_PATH, K_SINK_FD,
  K_EVENTLOG_KEY, K_EVENTLOG_TTL, K_WRITE, K_HTTP_URL, K_HTTP_METHOD, K_HTTP_HEADERS, K_HTTP_BODY, K_EGRESS,
  K_ON_FAULT, K_HTTP_RERENDER, K_SOURCE_NAME, K_FAULT_NOTE, K_COLLECT_IF, K_ON_RETRY, K_MAX_LINE, K_N
};
static const char *const gw_kw[K_N + 1] = {
    "name", "filter", "no_idempotence", "key", "hash", "no_hash", "entity", "lease", "ttl", "echo", "latch_key",
    "latch_from", "latch_to", "latch_doc", "latch_out_doc", "latch_ttl", "latch_flag", "cache", "collect",
    "enrich_key", "load", "enrich_into", "enrich_required", "enrich_fn", "transform", "sink", "sink_path",
    "sink_fd", "eventlog_key", "eventlog_ttl", "write", "http_url", "http_method", "http_headers", "http_body",
    "egress", "on_fault", "http_rerender", "source_name", "fault_note", "collect_if", "on_retry", "max_line", NULL};

/* The items of a dict of options by name into a[] (None counts as absent). 0, or -1 with TypeError. */
static int opts_dict(PyObject *d, const char *const *names, PyObject **a, const char *what) {
  if (!d) return 0;
  if (!PyDict_Check(d)) {
    PyErr_Format(PyExc_TypeError, "%s must be a dict, not %.100s", what, Py_TYPE(d)->tp_name);
    return -1;
  }
  Py_ssize_t pos = 0;
  PyObject *k, *v;
  while (PyDict_Next(d, &pos, &k, &v)) {
    const char *s = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
    int i = 0;
    while (s && names[i] && strcmp(names[i], s) != 0) i++;
    if (!s || !names[i]) {
      if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s: unknown option %R", what, k);
      return -1;
    }
    a[i] = v == Py_None ? NULL : v;
  }
  return 0;
}

static int opt_callable(PyObject *obj, const char *what, PyObject **out) {
  *out = NULL;
  if (!obj) return 0;
  if (!PyCallable_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be callable or None, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  *out = Py_NewRef(obj);
  return 0;
}

/* Optional seconds as ms (non-negative; a positive value under 1 ms is 1 ms). 0 or -1. */
static int opt_ms(PyObject *obj, const char *what, int64_t *out) {
  *out = 0;
  if (!obj) return 0;
  if (esgpy_seconds_ms(obj, what, out) < 0) return -1;
  if (*out < 0) {
    PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
    return -1;
  }
  if (*out == 0 && PyFloat_Check(obj) && PyFloat_AS_DOUBLE(obj) > 0) *out = 1;
  return 0;
}

/* The HTTP sink's header lines ("Name: value", a mapping, or (name, value) pairs), kept in self. */
static int header_lines(GatewayObject *self, PyObject *h, esg_gateway_opts *o) {
  if (!h) return 0;
  PyObject *items = PyDict_Check(h) ? PyDict_Items(h) : PySequence_List(h);
  if (!items) return -1;
  Py_ssize_t n = PyList_GET_SIZE(items);
  PyObject *lines = PyList_New(n);
  self->headers = calloc(n ? (size_t)n : 1, sizeof *self->headers);
  if (!lines || !self->headers || PyList_Append(self->keep, lines) < 0) {
    Py_DECREF(items);
    Py_XDECREF(lines);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return -1;
  }
  Py_DECREF(lines); /* self->keep has it */
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
    PyList_SET_ITEM(lines, i, line);
    if (!(self->headers[i] = esgpy_str(line, "a header", NULL))) {
      Py_DECREF(items);
      return -1;
    }
  }
  Py_DECREF(items);
  o->http_headers = self->headers;
  o->http_n_headers = (size_t)n;
  return 0;
}

static int sink_kind(PyObject *obj, esg_gateway_sink_kind *out) {
  static const char *const kinds[] = {"file", "eventlog", "callback", "http", NULL};
  *out = ESG_GATEWAY_SINK_FILE;
  if (!obj) return 0;
  const char *s = esgpy_str(obj, "sink", NULL);
  if (!s) return -1;
  for (int i = 0; kinds[i]; i++)
    if (strcmp(kinds[i], s) == 0) return *out = (esg_gateway_sink_kind)i, 0;
  PyErr_Format(PyExc_ValueError, "sink must be 'file', 'eventlog', 'callback' or 'http', not %R", obj);
  return -1;
}

/* Fills o from the keywords; the steps' callables go to self. */
static int gw_opts(GatewayObject *self, PyObject **a, esg_gateway_opts *o, esg_egress_opts *eo) {
  esgpy_state *st = self->st;
  o->ud = self;
  if (esgpy_opt_str(a[K_NAME], "name", &o->name) < 0 ||
      esgpy_opt_str(a[K_SOURCE_NAME], "source_name", &o->source_name) < 0 ||
      esgpy_opt_str(a[K_FAULT_NOTE], "fault_note", &o->fault_note) < 0)
    return -1;
  self->name = a[K_NAME] ? Py_NewRef(a[K_NAME]) : PyUnicode_FromString("gateway");
  if (!self->name) return -1;
  if (a[K_MAX_LINE]) {
    int64_t n;
    if (esgpy_int64(a[K_MAX_LINE], "max_line", &n) < 0) return -1;
    if (n < 0 || n > ESG_EVENT_MAX_BYTES) {
      PyErr_Format(PyExc_ValueError, "max_line must be 0..%d bytes (0: the most, EVENT_MAX_BYTES), not %lld",
                   ESG_EVENT_MAX_BYTES, (long long)n);
      return -1;
    }
    self->max_line = (size_t)n;
  }
  struct {
    int k;
    PyObject **slot;
  } fns[] = {{K_FILTER, &self->filter},         {K_KEY, &self->key},           {K_HASH, &self->hash},
             {K_ENTITY, &self->entity},         {K_ECHO, &self->echo},         {K_LATCH_KEY, &self->latch_key},
             {K_LATCH_DOC, &self->latch_doc},   {K_LATCH_OUT_DOC, &self->latch_out_doc},
             {K_ENRICH_KEY, &self->enrich_key}, {K_LOAD, &self->load},         {K_ENRICH_FN, &self->enrich_fn},
             {K_TRANSFORM, &self->transform},   {K_WRITE, &self->write},       {K_HTTP_BODY, &self->body},
             {K_ON_FAULT, &self->on_fault},     {K_COLLECT_IF, &self->collect_if},
             {K_ON_RETRY, &self->on_retry}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
    if (opt_callable(a[fns[i].k], gw_kw[fns[i].k], fns[i].slot) < 0) return -1;
  /* idempotence */
  if (esgpy_flag(a[K_NO_IDEMPOTENCE], &o->no_idempotence) < 0 || esgpy_flag(a[K_NO_HASH], &o->no_hash) < 0 ||
      opt_ms(a[K_LEASE], "lease", &o->lease_ms) < 0 || opt_ms(a[K_TTL], "ttl", &o->ttl_ms) < 0)
    return -1;
  if (self->filter) o->filter = t_filter;
  if (self->key) o->key = t_key;
  if (self->hash) o->hash = t_hash;
  if (self->entity) o->entity = t_entity;
  /* latch */
  if (self->echo) o->echo = t_echo;
  if (self->latch_key) o->latch_key = t_latch_key;
  if (self->latch_doc) o->latch_doc = t_latch_doc;
  if (self->latch_out_doc) o->latch_out_doc = t_latch_out_doc;
  if (esgpy_opt_str(a[K_LATCH_FROM], "latch from", &o->latch_from) < 0 ||
      esgpy_opt_str(a[K_LATCH_TO], "latch to", &o->latch_to) < 0 ||
      opt_ms(a[K_LATCH_TTL], "latch ttl", &o->latch_ttl_ms) < 0 || esgpy_flag(a[K_LATCH_FLAG], &o->latch_flag) < 0)
    return -1;
  /* enrich */
  if (a[K_CACHE]) {
    PyObject *c[ESGPY_CACHE_NOPTS] = {NULL};
    esg_cache_opts init = ESG_CACHE_OPTS_INIT;
    self->cache_opts = init;
    if (opts_dict(a[K_CACHE], esgpy_cache_opt_names, c, "the enrich cache options") < 0) return -1;
    for (int i = 0; i < ESGPY_CACHE_NOPTS; i++) /* the option strings point into these */
      if (c[i] && PyList_Append(self->keep, c[i]) < 0) return -1;
    if (esgpy_cache_opts(c, &self->cache_opts) < 0) return -1;
    o->cache = &self->cache_opts;
  }
  if (esgpy_flag(a[K_COLLECT], &o->collect) < 0 || esgpy_flag(a[K_ENRICH_REQUIRED], &o->enrich_required) < 0 ||
      esgpy_opt_str(a[K_ENRICH_INTO], "enrich into", &o->enrich_into) < 0)
    return -1;
  if (self->enrich_key) {
    o->enrich_key = t_enrich_key;
    self->into = a[K_ENRICH_INTO] ? Py_NewRef(a[K_ENRICH_INTO]) : PyUnicode_FromString("enriched");
    if (!self->into) return -1;
  }
  if (self->load) {
    o->load = t_load;
    o->load_ud = self;
  }
  if (self->enrich_fn) o->enrich = t_enrich;
  if (self->collect_if) o->collect = 1, o->collect_if = t_collect_if; /* collect the events it picks */
  self->enriched = o->collect || self->enrich_key || self->enrich_fn;
  if (self->transform) o->transform = t_transform;
  /* sink */
  if (sink_kind(a[K_SINK], &o->sink) < 0 || esgpy_opt_str(a[K_SINK_PATH], "sink path", &o->sink_path) < 0 ||
      esgpy_opt_str(a[K_EVENTLOG_KEY], "eventlog key", &o->eventlog_key) < 0 ||
      opt_ms(a[K_EVENTLOG_TTL], "eventlog ttl", &o->eventlog_ttl_ms) < 0)
    return -1;
  if (a[K_SINK_FD] && esgpy_opt_int32(a[K_SINK_FD], "sink fd", &o->sink_fd) < 0) return -1;
  if (self->write) o->write = t_write;
  self->http = o->sink == ESG_GATEWAY_SINK_HTTP;
  PyObject *url = a[K_HTTP_URL];
  if (url && PyCallable_Check(url)) {
    self->url = Py_NewRef(url);
  } else if (esgpy_opt_str(url, "url", &o->http_url) < 0) {
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "url must be a str or a callable, not %.100s", Py_TYPE(url)->tp_name);
    return -1;
  }
  if (self->url || self->body) o->render = t_render;
  if (a[K_HTTP_RERENDER] && a[K_HTTP_RERENDER] != Py_None) {
    int yes = PyObject_IsTrue(a[K_HTTP_RERENDER]);
    if (yes < 0) return -1;
    o->http_rerender = yes;
  }
  if (esgpy_opt_str(a[K_HTTP_METHOD], "method", &o->http_method) < 0 || header_lines(self, a[K_HTTP_HEADERS], o) < 0)
    return -1;
  if (a[K_EGRESS]) {
    PyObject *e[ESGPY_EGRESS_NOPTS] = {NULL};
    if (opts_dict(a[K_EGRESS], esgpy_egress_opt_names, e, "the HTTP sink's options") < 0) return -1;
    if (e[13]) { /* complete_on_fault: the gateway's convention decides */
      esgpy_raise(st, ESG_EINVAL, "the HTTP sink always completes a faulted event's claim (no complete_on_fault)");
      return -1;
    }
    if (esgpy_egress_opts(e, eo) < 0) return -1;
    o->egress = eo;
  }
  if (self->on_fault) o->on_fault = t_on_fault;
  if (self->on_retry) o->on_retry = t_on_retry;
  return 0;
}

static PyObject *gateway_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
  PyObject *store_obj, *a[K_N] = {NULL};
  if (!PyArg_ParseTuple(args, "O:Gateway", &store_obj)) return NULL;
  if (kwds && opts_dict(kwds, gw_kw, a, "Gateway()") < 0) return NULL;
  esgpy_state *st = esgpy_state_of_type(tp);
  StoreObject *store = esgpy_store_arg(st, store_obj);
  if (!store) return NULL;
  GatewayObject *self = (GatewayObject *)tp->tp_alloc(tp, 0);
  if (!self) return NULL;
  self->st = st;
  self->store = (StoreObject *)Py_NewRef(store);
  self->pid = esgpy_pid();
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  if (!(self->keep = PyList_New(0)) || !(self->sc.keep = PyList_New(0)) || gw_opts(self, a, &o, &eo) < 0)
    goto fail;
  ContextObject *ctx = PyObject_New(ContextObject, st->GatewayContextType);
  if (!ctx) goto fail;
  ctx->gw = self;
  self->ctx = (PyObject *)ctx;
  if (esgpy_store_enter(store) < 0) goto fail;
  o.store = store->s;
  esg_gateway *g = NULL;
  int rc = esg_gateway_open(&g, &o);
  if (rc != ESG_OK || store->clock_type) {
    esg_gateway_close(g);
    if (store->clock_type) esgpy_store_check(store, 0);
    else esgpy_raise(st, rc, esg_errmsg(NULL));
    esgpy_store_leave(store);
    goto fail;
  }
  self->g = g;
  esgpy_store_leave(store);
  return (PyObject *)self;
fail:
  Py_DECREF(self);
  return NULL;
}

#define GW_OBJECTS(X) \
  X(name) X(filter) X(key) X(hash) X(entity) X(echo) X(latch_key) X(latch_doc) X(latch_out_doc) X(enrich_key) \
  X(load) X(enrich_fn) X(transform) X(write) X(url) X(body) X(on_fault) X(collect_if) X(on_retry) X(into) X(keep) X(exc) X(load_exc) \
  X(load_fatal) X(sc.ev) X(sc.out) X(sc.line) X(sc.event) X(sc.keep)

static int gateway_traverse(GatewayObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
#define VISIT(f) Py_VISIT(self->f);
  GW_OBJECTS(VISIT)
#undef VISIT
  Py_VISIT(self->store);
  return 0;
}

static int gateway_clear(GatewayObject *self) {
  if (self->g) { /* closing may run on_fault: close before the callables go */
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    gw_final_close(self);
    PyErr_Restore(t, v, tb);
  }
#define CLEAR(f) Py_CLEAR(self->f);
  GW_OBJECTS(CLEAR)
#undef CLEAR
  return 0;
}

static void gateway_dealloc(GatewayObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  gateway_clear(self);
  if (self->ctx) ((ContextObject *)self->ctx)->gw = NULL;
  Py_CLEAR(self->ctx);
  free(self->headers);
  Py_CLEAR(self->store);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyObject *gw_get_stats(GatewayObject *self, void *c) {
  (void)c;
  if (!gw_is_open((PyObject *)self) || esgpy_forked(self->pid)) return stats_dict(&self->last);
  if (self->running == PyThread_get_thread_ident()) { /* from a step or a callback: ours already */
    esg_gateway_stats s;
    esg_gateway_get_stats(self->g, &s);
    return stats_dict(&s);
  }
  if (esgpy_dep_enter((PyObject *)self, self->store, gw_is_open, "the gateway is closed") < 0) {
    PyErr_Clear(); /* closed meanwhile */
    return stats_dict(&self->last);
  }
  esg_gateway_get_stats(self->g, &self->last);
  esgpy_store_leave(self->store);
  return stats_dict(&self->last);
}

static PyObject *gw_get_closed(GatewayObject *self, void *c) {
  (void)c;
  return PyBool_FromLong(!gw_is_open((PyObject *)self));
}

static PyObject *gw_get_store(GatewayObject *self, void *c) {
  (void)c;
  return Py_NewRef(self->store);
}

static PyObject *gw_get_name(GatewayObject *self, void *c) {
  (void)c;
  return Py_NewRef(self->name);
}

static PyMethodDef gateway_methods[] = {
    {"run", FN(gw_run), FAST,
     "run(source=None, *, progress=None) -> dict\n\n"
     "Runs the source to its end (a path of JSON lines, '-' or None for stdin, an open\n"
     "file descriptor, or an iterable of events), then waits for every delivery and\n"
     "commits. The GIL is released while the loop waits. progress(stats) is called about\n"
     "every 0.2 s. Returns the counters."},
    {"_replay", FN(gw_replay), FAST,
     "_replay(corr_key=None, type=None, since=None, until=None) -> dict\n\n"
     "Stored events (esg.source.replay) through the pipeline, then drains and commits."},
    {"push", FN(gw_push), FAST,
     "push(event) -> str\n\n"
     "Runs one event (bytes, str, a dict or an Event) through the pipeline now. Returns\n"
     "its outcome: 'delivered', 'duplicate', 'filtered', 'dropped', 'stale', 'echo',\n"
     "'busy', 'fault', 'submitted' (handed to the HTTP sink) or 'blank'."},
    {"poll", FN(gw_poll), FAST,
     "poll(timeout=0.0) -> None\n\n"
     "One turn of the loop: delivers, retries and commits what is due, waiting up to\n"
     "timeout seconds (at most 0.2) for something to happen."},
    {"drain", (PyCFunction)gw_drain, METH_NOARGS, "drain() -> None\n\nWaits until every delivery has finished."},
    {"resubmit", FN(gw_resubmit), FAST,
     "resubmit(fault_id) -> str\n\n"
     "Runs the stored event of a fault through the pipeline again (same event id).\n"
     "Returns its outcome as push names it (the fault deleted), 'fault' (it failed again:\n"
     "a new fault replaced it), 'busy' or 'not_found'."},
    {"close", (PyCFunction)gw_close, METH_NOARGS,
     "close() -> None\n\nDrains, closes the sink and the cache, commits. Closing twice is fine."},
    {"__enter__", esgpy_return_self, METH_NOARGS, "Returns the gateway."},
    {"__exit__", (PyCFunction)gw_exit_ctx, METH_VARARGS, "Closes the gateway."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef gateway_getset[] = {
    {"stats", (getter)gw_get_stats, NULL, "the counters since open, as a dict", NULL},
    {"closed", (getter)gw_get_closed, NULL, "True once closed (or its store)", NULL},
    {"store", (getter)gw_get_store, NULL, "the Store", NULL},
    {"name", (getter)gw_get_name, NULL, "the gateway's name", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot gateway_slots[] = {
    {Py_tp_doc, "Gateway(store, **flat options): the C part of esg.Gateway (use that)."},
    {Py_tp_new, gateway_new},
    {Py_tp_dealloc, gateway_dealloc},
    {Py_tp_traverse, gateway_traverse},
    {Py_tp_clear, gateway_clear},
    {Py_tp_methods, gateway_methods},
    {Py_tp_getset, gateway_getset},
    {0, NULL}};

PyType_Spec esgpy_gateway_spec = {
    .name = "esg._esg.Gateway",
    .basicsize = sizeof(GatewayObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = gateway_slots,
};

/* ------------------------------------------------------------------ ctx -- */

/* The current event, or NULL with StateError: ctx describes it only inside a step. */
static esg_gateway_event *ctx_event(ContextObject *c) {
  GatewayObject *gw = c->gw;
  if (gw && gw->cur && gw->running == PyThread_get_thread_ident() && esg_gateway_event_user(gw->cur) == &gw->sc &&
      esg_gateway_event_envelope(gw->cur))
    return gw->cur;
  esgpy_raise(gw ? gw->st : esgpy_state_of_type(Py_TYPE(c)), ESG_ESTATE,
              "ctx describes the current event only, inside a step");
  return NULL;
}

static GatewayObject *ctx_gateway(ContextObject *c) {
  if (!c->gw) esgpy_raise(esgpy_state_of_type(Py_TYPE(c)), ESG_ESTATE, "the gateway is gone");
  return c->gw;
}

static PyObject *ctx_get_store(ContextObject *c, void *u) {
  (void)u;
  GatewayObject *gw = ctx_gateway(c);
  return gw ? Py_NewRef(gw->store) : NULL;
}

static PyObject *ctx_get_name(ContextObject *c, void *u) {
  (void)u;
  GatewayObject *gw = ctx_gateway(c);
  return gw ? Py_NewRef(gw->name) : NULL;
}

static PyObject *ctx_get_line(ContextObject *c, void *u) {
  (void)u;
  esg_gateway_event *e = ctx_event(c);
  if (!e) return NULL;
  scratch *sc = &c->gw->sc;
  if (!sc->line) {
    size_t len;
    const char *json = esg_event_json(esg_gateway_event_envelope(e), &len);
    if (!(sc->line = PyBytes_FromStringAndSize(json, (Py_ssize_t)len))) return NULL;
  }
  return Py_NewRef(sc->line);
}

static PyObject *ctx_get_event_id(ContextObject *c, void *u) {
  (void)u;
  esg_gateway_event *e = ctx_event(c);
  return e ? esgpy_utf8_or_none(esg_event_id(esg_gateway_event_envelope(e))) : NULL;
}

static PyObject *ctx_get_event(ContextObject *c, void *u) {
  (void)u;
  esg_gateway_event *e = ctx_event(c);
  if (!e) return NULL;
  scratch *sc = &c->gw->sc;
  if (!sc->event) {
    size_t len;
    const char *json = esg_event_json(esg_gateway_event_envelope(e), &len);
    esg_event *ev = NULL;
    int rc = esg_event_parse(json, len, &ev);
    if (rc != ESG_OK) return esgpy_raise(c->gw->st, rc, esg_errmsg(NULL));
    if (!(sc->event = esgpy_event_new(c->gw->st, ev))) return NULL;
  }
  return Py_NewRef(sc->event);
}

static PyObject *ctx_now(ContextObject *c, PyObject *unused) {
  (void)unused;
  GatewayObject *gw = ctx_gateway(c);
  return gw ? PyObject_CallMethod((PyObject *)gw->store, "now", NULL) : NULL;
}

/* log(*args): "[name] args..." on sys.stderr, as the Lua ctx.log. */
static PyObject *ctx_log(ContextObject *c, PyObject *args) {
  GatewayObject *gw = ctx_gateway(c);
  if (!gw) return NULL;
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  PyObject *parts = PyList_New(n), *sep = NULL, *text = NULL, *line = NULL;
  for (Py_ssize_t i = 0; parts && i < n; i++) {
    PyObject *s = PyObject_Str(PyTuple_GET_ITEM(args, i));
    if (!s) Py_CLEAR(parts);
    else PyList_SET_ITEM(parts, i, s);
  }
  if (parts && (sep = PyUnicode_FromString(" ")) && (text = PyUnicode_Join(sep, parts)))
    line = PyUnicode_FromFormat("[%S] %U\n", gw->name, text);
  Py_XDECREF(parts);
  Py_XDECREF(sep);
  Py_XDECREF(text);
  if (!line) return NULL;
  PyObject *err = PySys_GetObject("stderr"); /* borrowed */
  int rc = err && err != Py_None ? PyFile_WriteObject(line, err, Py_PRINT_RAW) : 0;
  Py_DECREF(line);
  if (rc < 0) return NULL;
  Py_RETURN_NONE;
}

static void ctx_dealloc(ContextObject *c) {
  PyTypeObject *tp = Py_TYPE(c);
  tp->tp_free((PyObject *)c);
  Py_DECREF(tp);
}

static PyMethodDef ctx_methods[] = {
    {"now", (PyCFunction)ctx_now, METH_NOARGS, "now() -> float\n\nNow by the store's clock, in seconds."},
    {"log", (PyCFunction)ctx_log, METH_VARARGS, "log(*args) -> None\n\nWrites '[name] args...' on sys.stderr."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef ctx_getset[] = {
    {"store", (getter)ctx_get_store, NULL, "the gateway's Store (usable in a step)", NULL},
    {"name", (getter)ctx_get_name, NULL, "the gateway's name", NULL},
    {"line", (getter)ctx_get_line, NULL, "the event's bytes as received (without a trailing CR)", NULL},
    {"event_id", (getter)ctx_get_event_id, NULL, "the event's id", NULL},
    {"event", (getter)ctx_get_event, NULL, "the event as an esg.Event (made on first use)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot ctx_slots[] = {
    {Py_tp_doc, "What a gateway step gets as ctx: store, name, line, event_id, event, now(), log().\n"
                "The event's attributes are valid inside a step only (StateError elsewhere)."},
    {Py_tp_dealloc, ctx_dealloc},
    {Py_tp_methods, ctx_methods},
    {Py_tp_getset, ctx_getset},
    {0, NULL}};

PyType_Spec esgpy_gateway_context_spec = {
    .name = "esg.GatewayContext",
    .basicsize = sizeof(ContextObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ctx_slots,
};

/* --------------------------------------------------------------- module -- */

int esgpy_gateway_init(PyObject *m, esgpy_state *st) {
  static PyStructSequence_Field fault_fields[] = {
      {"id", "the fault record's id (None if it could not be recorded)"},
      {"event_id", "the event's id (unparsed:<hash> for a line that is not an envelope)"},
      {"stage", "parse, filter, idempotence, latch, enrich, transform, sink, complete or deliver"},
      {"error", "the message"},
      {"http_status", "deliver: the last HTTP status (0 if none)"},
      {"attempts", "attempts, resubmissions included"},
      {"line", "the source's line number, None if none"},
      {NULL, NULL}};
  static PyStructSequence_Desc fault_desc = {"esg.GatewayFault", "A fault a Gateway recorded, as on_fault gets it.",
                                             fault_fields, 7};
  for (int i = 0; i < ESGPY_GW_NOUTCOMES; i++)
    if (!(st->s_gw[i] = PyUnicode_InternFromString(outcome_names[i]))) return -1;
  if (!(st->GatewayFaultType = PyStructSequence_NewType(&fault_desc)) ||
      PyModule_AddObjectRef(m, "GatewayFault", (PyObject *)st->GatewayFaultType) < 0)
    return -1;
  st->GatewayContextType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_gateway_context_spec, NULL);
  if (!st->GatewayContextType || PyModule_AddType(m, st->GatewayContextType) < 0) return -1;
  st->GatewayType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_gateway_spec, NULL);
  if (!st->GatewayType || PyModule_AddType(m, st->GatewayType) < 0) return -1;
  return 0;
}
