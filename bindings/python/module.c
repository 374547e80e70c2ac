/*
 * The module esg._esg: multi-phase init, the module state, the exception tree and
 * the one function that maps a C status code to its exception, and the argument
 * helpers the other files share. The pure-Python package esg re-exports it all.
 */
#include <math.h>
#include <string.h>
#include "esgpy.h"

esgpy_state *esgpy_state_of_module(PyObject *module) { return (esgpy_state *)PyModule_GetState(module); }

esgpy_state *esgpy_state_of_type(PyTypeObject *tp) {
  return (esgpy_state *)PyModule_GetState(PyType_GetModuleByDef(tp, &esgpy_module_def));
}

/* ------------------------------------------------------------ exceptions -- */

PyObject *esgpy_error_class(esgpy_state *st, int code) {
  if (code == ESG_BUSY) return st->BusyError;
  if (code < 0 && code > -ESGPY_MAX_ERRORS && st->errors[-code]) return st->errors[-code];
  return st->Error;
}

PyObject *esgpy_raise(esgpy_state *st, int code, const char *msg) {
  if (code == ESG_ENOMEM && (!msg || !*msg)) return PyErr_NoMemory();
  PyObject *cls = esgpy_error_class(st, code);
  const char *text = (msg && *msg) ? msg : esg_strerror(code);
  PyObject *s = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
  if (!s) return NULL;
  PyObject *exc = PyObject_CallOneArg(cls, s);
  if (!exc) {
    Py_DECREF(s);
    return NULL;
  }
  PyObject *c = PyLong_FromLong(code);
  PyObject *name = PyUnicode_FromString(esg_status_name(code));
  if (!c || !name || PyObject_SetAttrString(exc, "code", c) < 0 || PyObject_SetAttrString(exc, "name", name) < 0 ||
      PyObject_SetAttrString(exc, "errmsg", s) < 0) {
    Py_XDECREF(c);
    Py_XDECREF(name);
    Py_DECREF(s);
    Py_DECREF(exc);
    return NULL;
  }
  Py_DECREF(c);
  Py_DECREF(name);
  Py_DECREF(s);
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
  return NULL;
}

PyObject *esgpy_json_fast(esgpy_state *st, PyObject *obj) {
  if (!st->json_fast) return PyObject_CallOneArg(st->json_sorted, obj);
  PyObject *zero = PyLong_FromLong(0);
  PyObject *argv[2] = {obj, zero};
  PyObject *chunks = zero ? PyObject_Vectorcall(st->json_fast, argv, 2, NULL) : NULL;
  Py_XDECREF(zero);
  if (!chunks) return NULL;
  PyObject *r;
  if (PyList_Check(chunks) && PyList_GET_SIZE(chunks) == 1 && PyUnicode_Check(PyList_GET_ITEM(chunks, 0))) {
    r = Py_NewRef(PyList_GET_ITEM(chunks, 0));
  } else {
    PyObject *empty = PyUnicode_New(0, 0);
    r = empty ? PyUnicode_Join(empty, chunks) : NULL;
    Py_XDECREF(empty);
  }
  Py_DECREF(chunks);
  return r;
}

/* ------------------------------------------------------------- arguments -- */

int esgpy_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const *kw, int nreq, PyObject **out) {
  int n = 0;
  while (kw[n]) n++;
  if (nargs > n) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, n, nargs);
    return -1;
  }
  for (int i = 0; i < n; i++) out[i] = i < nargs ? args[i] : NULL;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < nkw; k++) {
    PyObject *name = PyTuple_GET_ITEM(kwnames, k);
    const char *s = PyUnicode_AsUTF8(name);
    if (!s) return -1;
    int i = 0;
    while (i < n && strcmp(kw[i], s) != 0) i++;
    if (i == n) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'", fname, s);
      return -1;
    }
    if (out[i]) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, s);
      return -1;
    }
    out[i] = args[nargs + k];
  }
  for (int i = 0; i < nreq; i++) {
    if (!out[i]) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, kw[i]);
      return -1;
    }
  }
  return 0;
}

const char *esgpy_str(PyObject *obj, const char *what, Py_ssize_t *len) {
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(obj)->tp_name);
    return NULL;
  }
  Py_ssize_t n;
  const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
  if (!s) return NULL;
  if ((Py_ssize_t)strlen(s) != n) {
    PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters", what);
    return NULL;
  }
  if (len) *len = n;
  return s;
}

int esgpy_seconds_ms(PyObject *obj, const char *what, int64_t *ms) {
  if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj))) {
    PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  double d = PyFloat_AsDouble(obj);
  if (d == -1.0 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
    PyErr_Clear(); /* an int beyond a double: out of range like any other too big a value */
    d = HUGE_VAL;
  }
  if (esg_ms_from_seconds(d, ms) != ESG_OK) { /* NaN, infinities, beyond 9e15 s */
    PyErr_Format(PyExc_ValueError, "%s is out of range", what);
    return -1;
  }
  return 0;
}

int esgpy_positive_seconds_ms(esgpy_state *st, PyObject *obj, const char *what, int64_t *ms) {
  if (esgpy_seconds_ms(obj, what, ms) < 0) return -1;
  if (*ms > 0) return 0;
  /* said in seconds, the caller's unit, before libesg would say it in milliseconds */
  PyObject *r = PyObject_Repr(obj);
  if (r) PyErr_Format(st->errors[-ESG_EINVAL], "%s must be at least 0.001 s (got %U s)", what, r);
  Py_XDECREF(r);
  return -1;
}

int esgpy_int64(PyObject *obj, const char *what, int64_t *out) {
  if (PyBool_Check(obj) || !PyLong_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be int, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  int overflow;
  long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
  if (v == -1 && PyErr_Occurred()) return -1;
  if (overflow) {
    PyErr_Format(PyExc_OverflowError, "%s is out of range (a signed 64-bit integer)", what);
    return -1;
  }
  *out = (int64_t)v;
  return 0;
}

int esgpy_float(PyObject *obj, const char *what, double *out) {
  if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj))) {
    PyErr_Format(PyExc_TypeError, "%s must be a number, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  double d = PyFloat_AsDouble(obj);
  if (d == -1.0 && PyErr_Occurred()) {
    if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
      PyErr_Clear();
      PyErr_Format(PyExc_ValueError, "%s is out of range", what);
    }
    return -1;
  }
  *out = d;
  return 0;
}

PyObject *esgpy_ms_seconds(int64_t ms) { return PyFloat_FromDouble((double)ms / 1000.0); }

int esgpy_raw_bytes(PyObject *obj, const char *what, esgpy_bytes *out) {
  memset(out, 0, sizeof *out);
  if (PyUnicode_Check(obj)) {
    out->data = PyUnicode_AsUTF8AndSize(obj, &out->len);
    if (!out->data) return -1;
    out->keep = Py_NewRef(obj);
    return 0;
  }
  if (PyObject_CheckBuffer(obj)) {
    if (PyObject_GetBuffer(obj, &out->view, PyBUF_SIMPLE) < 0) return -1;
    out->has_view = 1;
    out->data = out->view.buf;
    out->len = out->view.len;
    return 0;
  }
  PyErr_Format(PyExc_TypeError, "%s must be bytes or str, not %.100s", what, Py_TYPE(obj)->tp_name);
  return -1;
}

int esgpy_json_bytes(esgpy_state *st, PyObject *obj, const char *what, esgpy_bytes *out) {
  if (PyUnicode_Check(obj) || PyObject_CheckBuffer(obj)) return esgpy_raw_bytes(obj, what, out);
  memset(out, 0, sizeof *out);
  PyObject *s = PyObject_CallOneArg(st->json_dumps, obj);
  if (!s) {
    if (PyErr_ExceptionMatches(PyExc_ValueError)) { /* NaN, circular: not JSON */
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      PyObject *text = value ? PyObject_Str(value) : NULL;
      const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
      char buf[300];
      snprintf(buf, sizeof buf, "%s cannot be serialised as JSON: %s", what, t ? t : "?");
      PyErr_Clear();
      Py_XDECREF(text);
      Py_XDECREF(type);
      Py_XDECREF(value);
      Py_XDECREF(tb);
      esgpy_raise(st, ESG_EJSON, buf);
    }
    return -1;
  }
  out->data = PyUnicode_AsUTF8AndSize(s, &out->len);
  if (!out->data) {
    Py_DECREF(s);
    return -1;
  }
  out->keep = s;
  return 0;
}

void esgpy_exc_text(char *buf, size_t size) {
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  PyErr_NormalizeException(&t, &v, &tb);
  const char *name = t ? ((PyTypeObject *)t)->tp_name : "Exception";
  PyObject *text = v ? PyObject_Str(v) : NULL;
  const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
  if (!msg) PyErr_Clear();
  if (msg && *msg) snprintf(buf, size, "%s: %s", name, msg);
  else snprintf(buf, size, "%s", name);
  Py_XDECREF(text);
  PyErr_Restore(t, v, tb);
}

void esgpy_bytes_release(esgpy_bytes *b) {
  if (b->has_view) PyBuffer_Release(&b->view);
  b->has_view = 0;
  Py_CLEAR(b->keep);
}

/* ------------------------------------------------------ small functions -- */

static PyObject *m_strerror(PyObject *module, PyObject *arg) {
  (void)module;
  int64_t code;
  if (esgpy_int64(arg, "code", &code) < 0) return NULL;
  return PyUnicode_FromString(esg_strerror((int)code));
}

static PyObject *m_status_name(PyObject *module, PyObject *arg) {
  (void)module;
  int64_t code;
  if (esgpy_int64(arg, "code", &code) < 0) return NULL;
  return PyUnicode_FromString(esg_status_name((int)code));
}

static PyObject *m_error_class(PyObject *module, PyObject *arg) {
  int64_t code;
  if (esgpy_int64(arg, "code", &code) < 0) return NULL;
  return Py_NewRef(esgpy_error_class(esgpy_state_of_module(module), (int)code));
}

static PyMethodDef module_methods[] = {
    {"parse_event", (PyCFunction)esgpy_parse_event, METH_O,
     "parse_event(event) -> Event\n\nParses and validates an envelope given as bytes, str, dict or Event.\n"
     "Raises EventError naming the bad field, JSONError for text that is not JSON,\n"
     "TooBigError beyond 1 MiB, TypeError for other types."},
    {"sha256", (PyCFunction)esgpy_sha256, METH_O, "sha256(data) -> bytes\n\nThe 32-byte SHA-256 of bytes or str (UTF-8)."},
    {"content_hash", (PyCFunction)esgpy_content_hash, METH_O,
     "content_hash(doc) -> str\n\nThe canonical content hash (64 hex chars) of a JSON document given as\n"
     "bytes, str or a JSON-able value: SHA-256 of its canonical form (keys sorted,\n"
     "no insignificant white space). Raises JSONError for invalid JSON text."},
    {"content_digest", (PyCFunction)esgpy_content_digest, METH_O,
     "content_digest(doc) -> bytes\n\nLike content_hash, but the 32 raw bytes."},
    {"uuid5", (PyCFunction)(void (*)(void))esgpy_uuid5, METH_FASTCALL | METH_KEYWORDS,
     "uuid5(name, namespace=UUID_NS_EVENT) -> str\n\nA deterministic UUID version 5 of name (str or bytes)."},
    {"strerror", (PyCFunction)m_strerror, METH_O, "strerror(code) -> str\n\nThe text of a libesg status code."},
    {"status_name", (PyCFunction)m_status_name, METH_O,
     "status_name(code) -> str\n\nThe name of a libesg status code, e.g. 'EMISMATCH'."},
    {"error_class", (PyCFunction)m_error_class, METH_O,
     "error_class(code) -> type\n\nThe esg.Error subclass raised for a libesg status code."},
    {"webhook_sign", (PyCFunction)(void (*)(void))esgpy_webhook_sign, METH_FASTCALL | METH_KEYWORDS,
     "webhook_sign(secret, msg_id, timestamp, payload) -> str\n\n"
     "Standard Webhooks v1 signature 'v1,<base64>' of payload (bytes or str) sent as\n"
     "msg_id at timestamp (epoch seconds, int). secret: 'whsec_<base64>' or raw text."},
    {"webhook_verify", (PyCFunction)(void (*)(void))esgpy_webhook_verify, METH_FASTCALL | METH_KEYWORDS,
     "webhook_verify(secrets, msg_id, timestamp, signature, payload, *, now=None, tolerance=300) -> None\n\n"
     "Verifies a received webhook from its header values and raw body. secrets: one\n"
     "secret or a list (rotation). Returns None when genuine and fresh; raises\n"
     "TimeoutError (esg's) when the timestamp is outside tolerance seconds of now\n"
     "(default: the real clock) and InvalidArgumentError when no signature matches\n"
     "or the input is malformed. The C error text says which."},
    {"latch_flagged", (PyCFunction)esgpy_latch_flagged, METH_O,
     "latch_flagged(doc) -> bool\n\n"
     "Flag latch: True if doc (an Event, a dict or JSON text) was written on behalf of\n"
     "the other system: 'latched': true at the top level or in an entity member.\n"
     "Raises JSONError for text that is not a JSON object."},
    {"latch_mark", (PyCFunction)(void (*)(void))esgpy_latch_mark, METH_FASTCALL | METH_KEYWORDS,
     "latch_mark(doc, latched=True) -> dict | bytes\n\n"
     "A copy of the JSON object doc with the flag set ('latched': true at the top\n"
     "level) or cleared (every 'latched' member removed). Text or an Event in, bytes\n"
     "out; a dict in, a dict out."},
    {"egress_retryable", (PyCFunction)(void (*)(void))esgpy_egress_retryable, METH_FASTCALL | METH_KEYWORDS,
     "egress_retryable(http_status, curl_code=0) -> bool\n\n"
     "The egress retry policy: True when an attempt that got http_status (or the\n"
     "libcurl error curl_code, with http_status 0) is retried."},
    {"parse_retry_after", (PyCFunction)(void (*)(void))esgpy_parse_retry_after, METH_FASTCALL | METH_KEYWORDS,
     "parse_retry_after(value, now=None) -> float\n\n"
     "A Retry-After header value (seconds or an HTTP date) as a delay in seconds from\n"
     "now (epoch seconds; None = the real clock). InvalidArgumentError otherwise."},
    {"webhook_secret", (PyCFunction)esgpy_webhook_secret, METH_NOARGS,
     "webhook_secret() -> str\n\nA new random secret 'whsec_<base64 of 32 random bytes>'."},
    {NULL, NULL, 0, NULL}};

/* ------------------------------------------------------------------ init -- */

/*
 * Class names and extra built-in bases for the codes whose name does not simply
 * become "<Name>Error" (EMISMATCH -> MismatchError); codes added to the C list
 * later get the simple name and the C text as their doc.
 */
enum { EXTRA_NONE, EXTRA_VALUE, EXTRA_MEMORY, EXTRA_TIMEOUT, EXTRA_OS };
static const struct {
  const char *code, *cls;
  int extra;
  const char *doc;
} error_names[] = {
    {"EINVAL", "InvalidArgumentError", EXTRA_VALUE, "A bad argument value (also a ValueError)."},
    {"ENOMEM", "NoMemoryError", EXTRA_MEMORY, "libesg ran out of memory (also a MemoryError)."},
    {"EMISMATCH", NULL, EXTRA_NONE, "The claim key was first used with a different payload."},
    {"ETOKEN", NULL, EXTRA_NONE,
     "The fencing token no longer owns the claim (taken over, released, completed or expired)."},
    {"EEVENT", NULL, EXTRA_VALUE, "An invalid event envelope; the message names the field (also a ValueError)."},
    {"EJSON", "JSONError", EXTRA_VALUE, "Invalid JSON (also a ValueError)."},
    {"ESTORE", NULL, EXTRA_NONE, "The storage backend failed."},
    {"ELOCKED", NULL, EXTRA_NONE, "The store stayed locked by another process beyond the busy timeout."},
    {"ESCHEMA", NULL, EXTRA_NONE, "The store file was written by a newer libesg."},
    {"ESTATE", NULL, EXTRA_NONE,
     "A call not valid in the current state: a closed object, a nested batch, re-entrant use."},
    {"ETOOBIG", "TooBigError", EXTRA_VALUE, "Input larger than the limit (also a ValueError)."},
    {"ETIMEDOUT", "TimeoutError", EXTRA_TIMEOUT, "Timed out (also the built-in TimeoutError)."},
    {"EIO", "InputOutputError", EXTRA_OS, "An input/output error (also an OSError)."},
    {"ECALLBACK", NULL, EXTRA_NONE, "A callback reported failure."},
    {"ESIGNATURE", NULL, EXTRA_NONE, "A webhook signature did not verify (forged, tampered, or an unknown secret)."},
};

static int add_exception(PyObject *m, PyObject **slot, const char *name, const char *doc, PyObject *base,
                         PyObject *extra) {
  char full[80];
  snprintf(full, sizeof full, "esg.%s", name);
  PyObject *bases = extra ? PyTuple_Pack(2, base, extra) : PyTuple_Pack(1, base);
  if (!bases) return -1;
  *slot = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
  Py_DECREF(bases);
  if (!*slot) return -1;
  return PyModule_AddObjectRef(m, name, *slot);
}

/* The class for one negative code of ESG_STATUS_MAP. */
static int add_error_code(PyObject *m, esgpy_state *st, const char *code, int value, const char *text) {
  if (value >= 0 || value <= -ESGPY_MAX_ERRORS) return 0;
  char name[64];
  const char *doc = text;
  int extra = EXTRA_NONE;
  size_t i, n = strlen(code);
  /* default: EMISMATCH -> MismatchError */
  snprintf(name, sizeof name, "%c", code[1]);
  for (i = 2; i < n && i < 40; i++) name[i - 1] = (char)(code[i] | 0x20);
  snprintf(name + (i - 1), sizeof name - (i - 1), "Error");
  for (i = 0; i < sizeof error_names / sizeof error_names[0]; i++) {
    if (strcmp(error_names[i].code, code) == 0) {
      if (error_names[i].cls) snprintf(name, sizeof name, "%s", error_names[i].cls);
      doc = error_names[i].doc;
      extra = error_names[i].extra;
    }
  }
  PyObject *x = extra == EXTRA_VALUE     ? PyExc_ValueError
                : extra == EXTRA_MEMORY  ? PyExc_MemoryError
                : extra == EXTRA_TIMEOUT ? PyExc_TimeoutError
                : extra == EXTRA_OS      ? PyExc_OSError
                                         : NULL;
  return add_exception(m, &st->errors[-value], name, doc, st->Error, x);
}

/* esg.ABSENT: what a cache loader returns for "known absent". */
static PyObject *absent_repr(PyObject *self) {
  (void)self;
  return PyUnicode_FromString("esg.ABSENT");
}
static PyType_Slot absent_slots[] = {{Py_tp_repr, absent_repr},
                                     {Py_tp_doc, "The type of esg.ABSENT, a cache loader's 'known absent'."},
                                     {0, NULL}};
static PyType_Spec absent_spec = {"esg._Absent", 0, 0, Py_TPFLAGS_DEFAULT, absent_slots};

static PyTypeObject *new_structseq(PyObject *m, PyStructSequence_Desc *d) {
  PyTypeObject *t = PyStructSequence_NewType(d);
  if (!t) return NULL;
  const char *name = strrchr(d->name, '.') + 1;
  if (PyModule_AddObjectRef(m, name, (PyObject *)t) < 0) {
    Py_DECREF(t);
    return NULL;
  }
  return t;
}

static int add_structseqs(PyObject *m, esgpy_state *st) {
  static PyStructSequence_Field fault_fields[] = {
      {"id", "the fault's id (increasing)"},
      {"event_id", "the event's id"},
      {"stage", "where it failed, e.g. 'deliver'"},
      {"error", "what went wrong"},
      {"http_status", "the last HTTP status, 0 if none"},
      {"attempts", "how many attempts were made"},
      {"first_attempt", "epoch seconds"},
      {"last_attempt", "epoch seconds"},
      {"event", "the event's JSON (bytes) for resubmission, or None"},
      {NULL, NULL}};
  static PyStructSequence_Desc fault_desc = {"esg.Fault", "A fault record (see Store.faults).", fault_fields, 9};
  static PyStructSequence_Field entry_fields[] = {
      {"result", "'hit', 'negative', 'stale' or 'miss'"},
      {"value", "the value (decoded JSON, or bytes) for hit and stale, else None"},
      {"version", "the entry's version"},
      {"expires", "when it stops (stopped) being fresh, epoch seconds; None on a miss"},
      {"loaded", "get_or_load: True if this call ran the loader"},
      {"load_status", "get_or_load: 0, or the code of the failed load behind a stale answer"},
      {"error", "get_or_load: the failed load's text behind a stale answer, else None"},
      {NULL, NULL}};
  static PyStructSequence_Desc entry_desc = {"esg.CacheEntry", "What a cache lookup found (see Cache.get).",
                                             entry_fields, 7};
  static PyStructSequence_Field cstats_fields[] = {
      {"hits", NULL}, {"misses", NULL}, {"negatives", NULL}, {"stale", NULL}, {"loads", NULL},
      {"load_failures", NULL}, {"mem_hits", NULL}, {"evictions", NULL}, {"mem_entries", NULL},
      {"mem_bytes", NULL}, {NULL, NULL}};
  static PyStructSequence_Desc cstats_desc = {"esg.CacheStats", "Counters of one Cache since it was opened.",
                                              cstats_fields, 10};
  static PyStructSequence_Field rstats_fields[] = {
      {"pages", "cursor: pages committed"},
      {"emitted", "events newly stored (or handed to the sink with no_log)"},
      {"duplicates", "events already in the log, not stored again"},
      {"created", "snapshot"}, {"updated", "snapshot"}, {"deleted", "snapshot"}, {"unchanged", "snapshot"},
      {"done", "cursor: True when the source reported its end"},
      {NULL, NULL}};
  static PyStructSequence_Desc rstats_desc = {"esg.ResyncStats", "What a cursor job or a listing did.",
                                              rstats_fields, 8};
  static PyStructSequence_Field eres_fields[] = {
      {"event_id", NULL},
      {"outcome", "'delivered', 'refused', 'exhausted' or 'cancelled'"},
      {"http_status", "the last HTTP status; 0 when no answer came"},
      {"attempts", "HTTP attempts made"},
      {"first_attempt", "epoch seconds (engine clock)"},
      {"last_attempt", "epoch seconds (engine clock)"},
      {"error", "why it failed, '' when delivered"},
      {"fault_id", "the fault recorded for it (refused, exhausted), else None"},
      {"store_status", "the status of the store call that finished it (0 = ok)"},
      {"body", "the response body (bytes, bounded by max_response_bytes)"},
      {"context", "the context given to submit"},
      {NULL, NULL}};
  static PyStructSequence_Desc eres_desc = {"esg.EgressResult", "How one delivery ended (see Egress).",
                                            eres_fields, 11};
  static PyStructSequence_Field estats_fields[] = {
      {"submitted", NULL}, {"delivered", NULL}, {"retried", NULL}, {"faulted", NULL}, {"cancelled", NULL},
      {"attempts", NULL}, {"connects", NULL}, {"in_flight", NULL}, {"queued", NULL}, {NULL, NULL}};
  static PyStructSequence_Desc estats_desc = {"esg.EgressStats", "Counters of one Egress since it was opened.",
                                              estats_fields, 9};
  if (!(st->FaultType = new_structseq(m, &fault_desc)) || !(st->CacheEntryType = new_structseq(m, &entry_desc)) ||
      !(st->CacheStatsType = new_structseq(m, &cstats_desc)) ||
      !(st->ResyncStatsType = new_structseq(m, &rstats_desc)) ||
      !(st->EgressResultType = new_structseq(m, &eres_desc)) ||
      !(st->EgressStatsType = new_structseq(m, &estats_desc)))
    return -1;
  return 0;
}

static int module_exec(PyObject *m) {
  esgpy_state *st = esgpy_state_of_module(m);
  if (esg_version_number() / 10000 != ESG_VERSION_NUMBER / 10000) {
    PyErr_Format(PyExc_ImportError, "esg._esg was built for libesg %s but runs with %s", ESG_VERSION_STRING,
                 esg_version());
    return -1;
  }
  if (add_exception(m, &st->Error, "Error",
                    "Base class of every libesg error. Attributes: code (the C status code),\n"
                    "name (e.g. 'EMISMATCH') and errmsg (the C library's detail text).",
                    PyExc_Exception, NULL) < 0)
    return -1;
#define ESGPY__ADD(name, value, text) \
  if (add_error_code(m, st, #name, value, text) < 0) return -1;
  ESG_STATUS_MAP(ESGPY__ADD)
#undef ESGPY__ADD
  if (add_exception(m, &st->BusyError, "BusyError",
                    "Raised by @idempotent when another owner holds the key and its lease is running\n"
                    "(claim() itself returns status 'busy' instead).",
                    st->Error, NULL) < 0)
    return -1;

  /* json.dumps with these options would build a JSONEncoder per call: keep one (its encode is
     what dumps calls; it keeps no state between calls) */
  PyObject *json = PyImport_ImportModule("json");
  if (!json) return -1;
  st->json_loads = PyObject_GetAttrString(json, "loads");
  PyObject *enc_type = PyObject_GetAttrString(json, "JSONEncoder");
  Py_DECREF(json);
  if (!st->json_loads || !enc_type) {
    Py_XDECREF(enc_type);
    return -1;
  }
  PyObject *pargs = PyTuple_New(0);
  PyObject *kw = Py_BuildValue("{s:(ss),s:O,s:O}", "separators", ",", ":", "ensure_ascii", Py_False, "allow_nan",
                               Py_False);
  PyObject *enc = pargs && kw ? PyObject_Call(enc_type, pargs, kw) : NULL, *enc_default = NULL;
  if (enc) st->json_dumps = PyObject_GetAttrString(enc, "encode");
  if (st->json_dumps) enc_default = PyObject_GetAttrString(enc, "default");
  Py_XDECREF(enc);
  /* the gateway's: members sorted by name, as Lua writes a table, so one output is the same
     bytes from either language */
  if (kw && PyDict_SetItemString(kw, "sort_keys", Py_True) == 0) {
    PyObject *senc = pargs ? PyObject_Call(enc_type, pargs, kw) : NULL;
    if (senc) st->json_sorted = PyObject_GetAttrString(senc, "encode");
    Py_XDECREF(senc);
  }
  Py_XDECREF(pargs);
  Py_XDECREF(kw);
  Py_DECREF(enc_type);
  if (!st->json_sorted) return -1;
  /* json's C encoder with json_sorted's options, built once (JSONEncoder.encode builds one per
     call) for the gateway's outputs; without the circular check (a cycle is a RecursionError).
     Kept only if it encodes a sample as json_sorted does (its signature is CPython's internals). */
  PyObject *jenc = PyImport_ImportModule("json.encoder");
  PyObject *cmake = jenc ? PyObject_GetAttrString(jenc, "c_make_encoder") : NULL;
  PyObject *basestr = jenc ? PyObject_GetAttrString(jenc, "encode_basestring") : NULL;
  PyObject *deflt = enc_default ? Py_NewRef(enc_default) : NULL;
  Py_XDECREF(jenc);
  if (cmake && cmake != Py_None && basestr && deflt)
    st->json_fast = PyObject_CallFunction(cmake, "OOOOssOOO", Py_None, deflt, basestr, Py_None, ":", ",", Py_True,
                                          Py_False, Py_False);
  Py_XDECREF(cmake);
  Py_XDECREF(basestr);
  Py_XDECREF(deflt);
  Py_XDECREF(enc_default);
  PyErr_Clear();
  if (st->json_fast) {
    PyObject *sample = Py_BuildValue("{s:[i,s,d,O,O],s:i}", "k", 1, "\xc3\xa9\"", 2.5, Py_None, Py_True, "a", 2);
    PyObject *a = sample ? esgpy_json_fast(st, sample) : NULL, *b = sample ? PyObject_CallOneArg(st->json_sorted, sample) : NULL;
    int same = a && b && PyUnicode_Compare(a, b) == 0;
    Py_XDECREF(sample);
    Py_XDECREF(a);
    Py_XDECREF(b);
    PyErr_Clear();
    if (!same) Py_CLEAR(st->json_fast);
  }
  /* the C scanner json.loads ends in, called directly by the gateway (None without _json) */
  PyObject *scanner = PyImport_ImportModule("json.scanner");
  PyObject *make = scanner ? PyObject_GetAttrString(scanner, "c_make_scanner") : NULL;
  Py_XDECREF(scanner);
  PyObject *decoder = NULL;
  if (make && make != Py_None) {
    PyObject *jd = PyImport_ImportModule("json.decoder");
    PyObject *dtype = jd ? PyObject_GetAttrString(jd, "JSONDecoder") : NULL;
    Py_XDECREF(jd);
    decoder = dtype ? PyObject_CallNoArgs(dtype) : NULL;
    Py_XDECREF(dtype);
    st->json_scan = decoder ? PyObject_CallOneArg(make, decoder) : NULL;
  }
  Py_XDECREF(decoder);
  Py_XDECREF(make);
  if (!st->json_scan && PyErr_Occurred()) return -1;
  if (!st->json_dumps) return -1;

#define ESGPY__STR(f, text) \
  if (!(st->f = PyUnicode_InternFromString(text))) return -1;
  ESGPY__STR(s_new, "new")
  ESGPY__STR(s_duplicate, "duplicate")
  ESGPY__STR(s_busy, "busy")
  ESGPY__STR(s_stored, "stored")
  ESGPY__STR(s_applied, "applied")
  ESGPY__STR(s_stale, "stale")
  ESGPY__STR(s_hit, "hit")
  ESGPY__STR(s_miss, "miss")
  ESGPY__STR(s_negative, "negative")
  ESGPY__STR(s_echo, "echo")
  ESGPY__STR(s_genuine, "genuine")
  ESGPY__STR(s_fired, "fired")
  ESGPY__STR(s_fired_before, "duplicate")
  ESGPY__STR(s_no_match, "no_match")
  for (int i = 0; i < 4; i++) ESGPY__STR(s_outcomes[i], esg_egress_outcome_name(i))
#undef ESGPY__STR

  static PyStructSequence_Field claim_fields[] = {
      {"status", "'new', 'duplicate' or 'busy'"},
      {"token", "the fencing token when new (pass it to complete/release/extend), else None"},
      {"attempts", "1 on the first claim, raised at each lease takeover"},
      {"lease_until", "when the in-progress lease runs out (seconds since the epoch, store clock)"},
      {"expires", "when the record stops counting (seconds since the epoch, store clock)"},
      {"result", "the stored result (bytes) when duplicate, else None"},
      {"key", "the claimed key"},
      {NULL, NULL}};
  static PyStructSequence_Desc claim_desc = {
      "esg.Claim",
      "Claim(status, token, attempts, lease_until, expires, result, key): the answer of\n"
      "Store.claim. status is 'new' (the caller owns the key and must complete or\n"
      "release it with token), 'duplicate' (already done: result holds the stored\n"
      "result) or 'busy' (another owner's lease runs until lease_until).",
      claim_fields, 7};
  st->ClaimType = PyStructSequence_NewType(&claim_desc);
  if (!st->ClaimType || PyModule_AddObjectRef(m, "Claim", (PyObject *)st->ClaimType) < 0) return -1;
  static PyStructSequence_Field entity_fields[] = {
      {"version", "the stored version"},
      {"deleted", "True for a tombstone (doc is None)"},
      {"doc", "the document (dict, or bytes with raw=True), None for a tombstone"},
      {NULL, NULL}};
  static PyStructSequence_Desc entity_desc = {
      "esg.Entity", "Entity(version, deleted, doc): an entity as stored (see Store.get_entity).", entity_fields,
      3};
  st->EntityType = PyStructSequence_NewType(&entity_desc);
  if (!st->EntityType || PyModule_AddObjectRef(m, "Entity", (PyObject *)st->EntityType) < 0) return -1;

  if (add_structseqs(m, st) < 0) return -1;
  PyObject *absent_type = PyType_FromSpec(&absent_spec);
  if (!absent_type) return -1;
  st->ABSENT = PyObject_CallNoArgs(absent_type);
  Py_DECREF(absent_type);
  if (!st->ABSENT || PyModule_AddObjectRef(m, "ABSENT", st->ABSENT) < 0) return -1;
  st->CacheType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_cache_spec, NULL);
  if (!st->CacheType || PyModule_AddType(m, st->CacheType) < 0) return -1;
  st->SnapshotType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_snapshot_spec, NULL);
  if (!st->SnapshotType || PyModule_AddType(m, st->SnapshotType) < 0) return -1;
  st->EgressType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_egress_spec, NULL);
  if (!st->EgressType || PyModule_AddType(m, st->EgressType) < 0) return -1;
  st->EventType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_event_spec, NULL);
  if (!st->EventType || PyModule_AddType(m, st->EventType) < 0) return -1;
  st->StoreType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &esgpy_store_spec, NULL);
  if (!st->StoreType || PyModule_AddType(m, st->StoreType) < 0) return -1;
  if (esgpy_gateway_init(m, st) < 0) return -1;

  if (PyModule_AddStringConstant(m, "__version__", esg_version()) < 0 ||
      PyModule_AddStringConstant(m, "version", esg_version()) < 0 ||
      PyModule_AddIntConstant(m, "version_number", esg_version_number()) < 0 ||
      PyModule_AddStringConstant(m, "UUID_NS_EVENT", ESG_UUID_NS_EVENT) < 0 ||
      PyModule_AddIntConstant(m, "KEY_MAX", ESG_KEY_MAX) < 0 ||
      PyModule_AddIntConstant(m, "HASH_MAX", ESG_HASH_MAX) < 0 ||
      PyModule_AddIntConstant(m, "EVENT_MAX_BYTES", ESG_EVENT_MAX_BYTES) < 0)
    return -1;
#define ESGPY__CODE(name, value, text) \
  if (PyModule_AddIntConstant(m, "ESG_" #name, value) < 0) return -1;
  ESG_STATUS_MAP(ESGPY__CODE)
#undef ESGPY__CODE
  return esgpy_webhook_add_constants(m);
}

/* The references the module state holds: followed by the GC and cleared ... */
#define STATE_REFS(X) \
  X(Error) X(BusyError) X(StoreType) X(EventType) X(ClaimType) X(EntityType) X(FaultType) X(CacheType) \
  X(CacheEntryType) X(CacheStatsType) X(ResyncStatsType) X(SnapshotType) X(EgressType) X(EgressResultType) \
  X(EgressStatsType) X(GatewayType) X(GatewayContextType) X(GatewayFaultType) X(ABSENT) X(json_dumps) X(json_sorted) X(json_loads) X(json_scan) X(json_fast)
/* ... and the interned names, only cleared. */
#define STATE_NAMES(X) \
  X(s_hit) X(s_miss) X(s_negative) X(s_echo) X(s_genuine) X(s_fired) X(s_fired_before) X(s_no_match) X(s_new) \
  X(s_duplicate) X(s_busy) X(s_stored) X(s_applied) X(s_stale)

static int module_traverse(PyObject *m, visitproc visit, void *arg) {
  esgpy_state *st = esgpy_state_of_module(m);
#define VISIT(f) Py_VISIT(st->f);
  STATE_REFS(VISIT)
#undef VISIT
  for (int i = 0; i < ESGPY_MAX_ERRORS; i++) Py_VISIT(st->errors[i]);
  return 0;
}

static int module_clear(PyObject *m) {
  esgpy_state *st = esgpy_state_of_module(m);
#define CLEAR(f) Py_CLEAR(st->f);
  STATE_REFS(CLEAR)
  STATE_NAMES(CLEAR)
#undef CLEAR
  for (int i = 0; i < ESGPY_MAX_ERRORS; i++) Py_CLEAR(st->errors[i]);
  for (int i = 0; i < 4; i++) Py_CLEAR(st->s_outcomes[i]);
  for (int i = 0; i < ESGPY_GW_NOUTCOMES; i++) Py_CLEAR(st->s_gw[i]);
  return 0;
}

static void module_free(void *m) { module_clear((PyObject *)m); }

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, module_exec}, {0, NULL}};

struct PyModuleDef esgpy_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "esg._esg",
    .m_doc = "The C part of the esg package (libesg bindings). Import esg, not this module.",
    .m_size = sizeof(esgpy_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__esg(void);
PyMODINIT_FUNC PyInit__esg(void) { return PyModuleDef_Init(&esgpy_module_def); }
