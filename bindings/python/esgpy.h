/*
 * The C part of the Python package `esg` (the extension module esg._esg): what its
 * files share. The module follows CPython's Modules/_sqlite: multi-phase init, a
 * module-state struct instead of globals, heap types, one exception tree rooted at
 * esg.Error filled from the C status codes by one function (esgpy_raise).
 *
 * Only the public C API is used: esg.h.
 */
#ifndef ESGPY_H
#define ESGPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "esg.h"

/* Error classes are indexed by -code; every negative code of ESG_STATUS_MAP gets one. */
#define ESGPY_MAX_ERRORS 64

typedef struct esgpy_state {
  PyObject *Error;
  PyObject *errors[ESGPY_MAX_ERRORS]; /* errors[-code]: the class for that code */
  PyObject *BusyError;
  PyTypeObject *StoreType;
  PyTypeObject *EventType;
  PyTypeObject *ClaimType;
  PyTypeObject *EntityType;
  PyObject *json_dumps; /* compact json.dumps (functools.partial) */
  PyObject *json_loads;
  PyObject *s_new, *s_duplicate, *s_busy, *s_stored, *s_applied, *s_stale;
} esgpy_state;

extern struct PyModuleDef esgpy_module_def;
esgpy_state *esgpy_state_of_module(PyObject *module);
esgpy_state *esgpy_state_of_type(PyTypeObject *tp);

/* Raises the esg.Error subclass for code, carrying code, name and msg (or the code's text). Returns NULL. */
PyObject *esgpy_raise(esgpy_state *st, int code, const char *msg);
/* The class esgpy_raise uses for code (borrowed). */
PyObject *esgpy_error_class(esgpy_state *st, int code);

/*
 * Argument parsing for METH_FASTCALL|METH_KEYWORDS: fills out[0..n) from the
 * positional and keyword arguments by the names in kw (NULL-terminated), NULL for
 * those not given. The first nreq are required. Returns 0, or -1 with TypeError.
 */
int esgpy_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const *kw, int nreq, PyObject **out);

/* A str argument as UTF-8 (owned by obj); TypeError/ValueError for non-str or NUL inside. */
const char *esgpy_str(PyObject *obj, const char *what, Py_ssize_t *len);
/* Seconds (int or float) to milliseconds; -1 with an exception on error. */
int esgpy_seconds_ms(PyObject *obj, const char *what, int64_t *ms);
/* An integer argument (not bool). */
int esgpy_int64(PyObject *obj, const char *what, int64_t *out);
/* Milliseconds to float seconds. */
PyObject *esgpy_ms_seconds(int64_t ms);

/*
 * JSON text for obj: bytes-like objects and str are taken as JSON text, anything
 * else (dict, list, ...) is serialised with json.dumps. *keep receives a new
 * reference that owns *data until released (PyBuffer in *view when used).
 * Returns 0, or -1 with an exception (TypeError for what cannot be serialised).
 */
typedef struct esgpy_bytes {
  Py_buffer view;
  int has_view;
  PyObject *keep;
  const char *data;
  Py_ssize_t len;
} esgpy_bytes;
int esgpy_json_bytes(esgpy_state *st, PyObject *obj, const char *what, esgpy_bytes *out);
/* Bytes-like or str only (no serialising). */
int esgpy_raw_bytes(PyObject *obj, const char *what, esgpy_bytes *out);
void esgpy_bytes_release(esgpy_bytes *b);

/* Type specs and helpers of the other files. */
extern PyType_Spec esgpy_store_spec;
extern PyType_Spec esgpy_event_spec;
int esgpy_event_check(esgpy_state *st, PyObject *obj);
const esg_event *esgpy_event_handle(PyObject *obj);
/* Parses obj (Event, bytes, str, dict) into a new C event; NULL with EventError/JSONError/TypeError. */
esg_event *esgpy_parse(esgpy_state *st, PyObject *obj);
PyObject *esgpy_event_new(esgpy_state *st, esg_event *ev);

/* Module-level functions defined in event.c and webhook.c. */
PyObject *esgpy_parse_event(PyObject *module, PyObject *arg);
PyObject *esgpy_sha256(PyObject *module, PyObject *arg);
PyObject *esgpy_content_hash(PyObject *module, PyObject *arg);
PyObject *esgpy_content_digest(PyObject *module, PyObject *arg);
PyObject *esgpy_uuid5(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *esgpy_webhook_sign(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *esgpy_webhook_verify(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *esgpy_webhook_secret(PyObject *module, PyObject *unused);
int esgpy_webhook_add_constants(PyObject *module);

#endif
