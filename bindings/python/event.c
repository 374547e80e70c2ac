/*
 * esg.Event (a parsed, validated envelope) and the hash and id functions:
 * sha256, content_hash, uuid5. None of these block, so the GIL stays held.
 */
#include <string.h>
#include "esgpy.h"

typedef struct {
  PyObject_HEAD
  esg_event *ev;
  PyObject *dict; /* the envelope as a dict, made on first use */
  PyObject *id;   /* the id as str, made on first use */
} EventObject;

int esgpy_event_check(esgpy_state *st, PyObject *obj) { return PyObject_TypeCheck(obj, st->EventType); }

const esg_event *esgpy_event_handle(PyObject *obj) { return ((EventObject *)obj)->ev; }

esg_event *esgpy_parse(esgpy_state *st, PyObject *obj) {
  esgpy_bytes b;
  if (PyBytes_CheckExact(obj)) { /* the common case: no buffer protocol round trip */
    esg_event *ev = NULL;
    int rc = esg_event_parse(PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj), &ev);
    if (rc != ESG_OK) {
      esgpy_raise(st, rc, esg_errmsg(NULL));
      return NULL;
    }
    return ev;
  }
  if (!PyDict_Check(obj) && !PyUnicode_Check(obj) && !PyObject_CheckBuffer(obj)) {
    PyErr_Format(PyExc_TypeError, "event must be an Event, dict, bytes or str, not %.100s", Py_TYPE(obj)->tp_name);
    return NULL;
  }
  if (esgpy_json_bytes(st, obj, "event", &b) < 0) return NULL;
  esg_event *ev = NULL;
  int rc = esg_event_parse(b.data, (size_t)b.len, &ev);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) {
    esgpy_raise(st, rc, esg_errmsg(NULL));
    return NULL;
  }
  return ev;
}

PyObject *esgpy_event_new(esgpy_state *st, esg_event *ev) {
  EventObject *self = PyObject_New(EventObject, st->EventType);
  if (!self) {
    esg_event_free(ev);
    return NULL;
  }
  self->ev = ev;
  self->dict = NULL;
  self->id = NULL;
  return (PyObject *)self;
}

PyObject *esgpy_parse_event(PyObject *module, PyObject *arg) {
  esgpy_state *st = esgpy_state_of_module(module);
  if (esgpy_event_check(st, arg)) return Py_NewRef(arg);
  esg_event *ev = esgpy_parse(st, arg);
  return ev ? esgpy_event_new(st, ev) : NULL;
}

static PyObject *event_tp_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
  static char *kw[] = {"event", NULL};
  PyObject *obj;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Event", kw, &obj)) return NULL;
  esgpy_state *st = esgpy_state_of_type(tp);
  esg_event *ev = esgpy_parse(st, obj);
  if (!ev) return NULL;
  EventObject *self = (EventObject *)tp->tp_alloc(tp, 0);
  if (!self) {
    esg_event_free(ev);
    return NULL;
  }
  self->ev = ev;
  return (PyObject *)self;
}

static void event_dealloc(EventObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  esg_event_free(self->ev);
  Py_XDECREF(self->dict);
  Py_XDECREF(self->id);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyObject *event_get_id(EventObject *self, void *c) {
  (void)c;
  if (!self->id && !(self->id = esgpy_utf8_or_none(esg_event_id(self->ev)))) return NULL;
  return Py_NewRef(self->id);
}
static PyObject *event_get_type(EventObject *self, void *c) {
  (void)c;
  return esgpy_utf8_or_none(esg_event_type(self->ev));
}
static PyObject *event_get_timestamp(EventObject *self, void *c) {
  (void)c;
  return PyLong_FromLongLong(esg_event_timestamp(self->ev));
}
static PyObject *event_get_pkey(EventObject *self, void *c) {
  (void)c;
  return esgpy_utf8_or_none(esg_event_partition_key(self->ev));
}
static PyObject *event_get_json(EventObject *self, void *c) {
  (void)c;
  size_t n;
  const char *j = esg_event_json(self->ev, &n);
  return PyBytes_FromStringAndSize(j, (Py_ssize_t)n);
}
static PyObject *event_get_hash(EventObject *self, void *c) {
  (void)c;
  return PyBytes_FromStringAndSize((const char *)esg_event_hash(self->ev), 32);
}

static PyObject *event_dict(EventObject *self) {
  if (!self->dict) {
    size_t n;
    const char *j = esg_event_json(self->ev, &n);
    PyObject *b = PyBytes_FromStringAndSize(j, (Py_ssize_t)n);
    if (!b) return NULL;
    esgpy_state *st = esgpy_state_of_type(Py_TYPE(self));
    self->dict = PyObject_CallOneArg(st->json_loads, b);
    Py_DECREF(b);
  }
  return self->dict;
}

static PyObject *event_to_dict(EventObject *self, PyObject *unused) {
  (void)unused;
  PyObject *d = event_dict(self);
  return d ? PyDict_Copy(d) : NULL;
}

static PyObject *event_subscript(EventObject *self, PyObject *key) {
  PyObject *d = event_dict(self);
  if (!d) return NULL;
  PyObject *v = PyDict_GetItemWithError(d, key);
  if (!v) {
    if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
    return NULL;
  }
  return Py_NewRef(v);
}

static PyObject *event_getitem_default(EventObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "get() takes 1 or 2 arguments");
    return NULL;
  }
  PyObject *d = event_dict(self);
  if (!d) return NULL;
  PyObject *v = PyDict_GetItemWithError(d, args[0]);
  if (v) return Py_NewRef(v);
  if (PyErr_Occurred()) return NULL;
  return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static int event_contains(EventObject *self, PyObject *key) {
  PyObject *d = event_dict(self);
  return d ? PyDict_Contains(d, key) : -1;
}

static PyObject *event_repr2(EventObject *self) {
  PyObject *id = event_get_id(self, NULL), *type = event_get_type(self, NULL);
  PyObject *r = NULL;
  if (id && type)
    r = PyUnicode_FromFormat("esg.Event(id=%R, type=%R, timestamp=%lld)", id, type,
                             (long long)esg_event_timestamp(self->ev));
  Py_XDECREF(id);
  Py_XDECREF(type);
  return r;
}

static PyObject *event_richcompare(EventObject *self, PyObject *other, int op) {
  esgpy_state *st = esgpy_state_of_type(Py_TYPE(self));
  if (!esgpy_event_check(st, other) || (op != Py_EQ && op != Py_NE)) Py_RETURN_NOTIMPLEMENTED;
  size_t n1, n2;
  const char *a = esg_event_json(self->ev, &n1), *b = esg_event_json(((EventObject *)other)->ev, &n2);
  int eq = n1 == n2 && memcmp(a, b, n1) == 0;
  return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyGetSetDef event_getset[] = {
    {"id", (getter)event_get_id, NULL, "the event id (str)", NULL},
    {"type", (getter)event_get_type, NULL, "the event type (str)", NULL},
    {"timestamp", (getter)event_get_timestamp, NULL, "the timestamp (int, epoch milliseconds)", NULL},
    {"partition_key", (getter)event_get_pkey, NULL, "the partitionKey (str) or None", NULL},
    {"json", (getter)event_get_json, NULL, "the envelope's bytes exactly as parsed", NULL},
    {"hash", (getter)event_get_hash, NULL, "SHA-256 of the envelope's bytes (32 bytes)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef event_methods[] = {
    {"to_dict", (PyCFunction)event_to_dict, METH_NOARGS, "to_dict() -> dict\n\nThe envelope as a new dict."},
    {"get", (PyCFunction)(void (*)(void))event_getitem_default, METH_FASTCALL,
     "get(field, default=None)\n\nA top-level field of the envelope, or default."},
    {NULL, NULL, 0, NULL}};

static PyType_Slot event_slots[] = {
    {Py_tp_doc, "Event(event): a parsed, validated, immutable event envelope.\n\n"
                "Made by esg.parse_event() or Event(bytes | str | dict). Fields are read with\n"
                "ev['field'] or ev.get('field'); id, type, timestamp, partition_key, json and\n"
                "hash are attributes. Raises EventError naming a bad field."},
    {Py_tp_new, event_tp_new},
    {Py_tp_dealloc, event_dealloc},
    {Py_tp_repr, event_repr2},
    {Py_tp_getset, event_getset},
    {Py_tp_methods, event_methods},
    {Py_tp_richcompare, event_richcompare},
    {Py_mp_subscript, event_subscript},
    {Py_sq_contains, event_contains},
    {0, NULL}};

PyType_Spec esgpy_event_spec = {
    .name = "esg.Event",
    .basicsize = sizeof(EventObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = event_slots,
};

/* ------------------------------------------------------------- hashes -- */

PyObject *esgpy_sha256(PyObject *module, PyObject *arg) {
  (void)module;
  esgpy_bytes b;
  if (esgpy_raw_bytes(arg, "data", &b) < 0) return NULL;
  uint8_t out[32];
  esg_sha256(b.data, (size_t)b.len, out);
  esgpy_bytes_release(&b);
  return PyBytes_FromStringAndSize((const char *)out, 32);
}

static int content_hash(PyObject *module, PyObject *arg, char out[65]) {
  esgpy_state *st = esgpy_state_of_module(module);
  esgpy_bytes b;
  if (esgpy_event_check(st, arg)) {
    size_t n;
    const char *j = esg_event_json(esgpy_event_handle(arg), &n);
    int rc = esg_content_hash(j, n, out);
    if (rc != ESG_OK) return esgpy_raise(st, rc, esg_errmsg(NULL)), -1;
    return 0;
  }
  if (esgpy_json_bytes(st, arg, "doc", &b) < 0) return -1;
  int rc = esg_content_hash(b.data, (size_t)b.len, out);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) {
    esgpy_raise(st, rc, esg_errmsg(NULL));
    return -1;
  }
  return 0;
}

PyObject *esgpy_content_hash(PyObject *module, PyObject *arg) {
  char out[65];
  if (content_hash(module, arg, out) < 0) return NULL;
  return PyUnicode_FromStringAndSize(out, 64);
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

PyObject *esgpy_content_digest(PyObject *module, PyObject *arg) {
  char out[65];
  if (content_hash(module, arg, out) < 0) return NULL;
  unsigned char raw[32];
  for (int i = 0; i < 32; i++) raw[i] = (unsigned char)(hexval(out[2 * i]) << 4 | hexval(out[2 * i + 1]));
  return PyBytes_FromStringAndSize((const char *)raw, 32);
}

PyObject *esgpy_uuid5(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"name", "namespace", NULL};
  PyObject *a[2];
  if (esgpy_args("uuid5", args, nargs, kwnames, kw, 1, a) < 0) return NULL;
  esgpy_state *st = esgpy_state_of_module(module);
  const char *ns = ESG_UUID_NS_EVENT;
  if (a[1] && a[1] != Py_None && !(ns = esgpy_str(a[1], "namespace", NULL))) return NULL;
  esgpy_bytes b;
  if (esgpy_raw_bytes(a[0], "name", &b) < 0) return NULL;
  char out[37];
  int rc = esg_uuid5(ns, b.data, (size_t)b.len, out);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) return esgpy_raise(st, rc, esg_errmsg(NULL));
  return PyUnicode_FromStringAndSize(out, 36);
}
