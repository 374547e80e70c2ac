/*
 * Standard Webhooks v1 signing and verification (esg/webhook.h). These calls
 * never block (HMAC over memory), so the GIL stays held.
 */
#include <stdlib.h>
#include <string.h>
#include "esgpy.h"

PyObject *esgpy_webhook_sign(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"secret", "msg_id", "timestamp", "payload", NULL};
  PyObject *a[4];
  if (esgpy_args("webhook_sign", args, nargs, kwnames, kw, 4, a) < 0) return NULL;
  esgpy_state *st = esgpy_state_of_module(module);
  const char *secret = esgpy_str(a[0], "secret", NULL);
  const char *id = secret ? esgpy_str(a[1], "msg_id", NULL) : NULL;
  int64_t ts;
  if (!id || esgpy_int64(a[2], "timestamp", &ts) < 0) return NULL;
  esgpy_bytes b;
  if (esgpy_raw_bytes(a[3], "payload", &b) < 0) return NULL;
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  int rc = esg_webhook_sign(secret, id, ts, b.data, (size_t)b.len, out, sizeof out);
  esgpy_bytes_release(&b);
  if (rc != ESG_OK) return esgpy_raise(st, rc, esg_errmsg(NULL));
  return PyUnicode_FromString(out);
}

PyObject *esgpy_webhook_verify(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const kw[] = {"secrets", "msg_id", "timestamp", "signature", "payload", "now", "tolerance",
                                   NULL};
  PyObject *a[7];
  if (esgpy_args("webhook_verify", args, nargs, kwnames, kw, 5, a) < 0) return NULL;
  esgpy_state *st = esgpy_state_of_module(module);
  /* secrets: one str or a sequence of str */
  PyObject *seq;
  if (PyUnicode_Check(a[0])) {
    seq = PyTuple_Pack(1, a[0]);
  } else {
    seq = PySequence_Fast(a[0], "secrets must be a str or a sequence of str");
  }
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  const char **secrets = PyMem_Calloc((size_t)n + 1, sizeof *secrets);
  PyObject *ret = NULL;
  esgpy_bytes b;
  memset(&b, 0, sizeof b);
  if (!secrets) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    if (!(secrets[i] = esgpy_str(PySequence_Fast_GET_ITEM(seq, i), "secret", NULL))) goto done;
  }
  const char *id = esgpy_str(a[1], "msg_id", NULL);
  if (!id) goto done;
  /* The timestamp header as received (str), or an int for convenience. */
  char tsbuf[32];
  const char *ts;
  if (PyLong_Check(a[2]) && !PyBool_Check(a[2])) {
    int64_t v;
    if (esgpy_int64(a[2], "timestamp", &v) < 0) goto done;
    snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)v);
    ts = tsbuf;
  } else if (!(ts = esgpy_str(a[2], "timestamp", NULL))) {
    goto done;
  }
  const char *sig = esgpy_str(a[3], "signature", NULL);
  if (!sig) goto done;
  int64_t now_s, tol = 0;
  if (a[5] && a[5] != Py_None) {
    int64_t ms;
    if (esgpy_seconds_ms(a[5], "now", &ms) < 0) goto done;
    now_s = ms / 1000;
  } else {
    now_s = esg_clock_real(NULL) / 1000;
  }
  if (a[6] && a[6] != Py_None) {
    int64_t ms;
    if (esgpy_seconds_ms(a[6], "tolerance", &ms) < 0) goto done;
    tol = ms / 1000;
    if (tol <= 0) {
      esgpy_raise(st, ESG_EINVAL, "tolerance must be at least 1 second");
      goto done;
    }
  }
  if (esgpy_raw_bytes(a[4], "payload", &b) < 0) goto done;
  int rc = esg_webhook_verify(secrets, (size_t)n, id, ts, sig, b.data, (size_t)b.len, now_s, tol);
  if (rc != ESG_OK) {
    esgpy_raise(st, rc, esg_errmsg(NULL));
    goto done;
  }
  ret = Py_NewRef(Py_None);
done:
  esgpy_bytes_release(&b);
  PyMem_Free(secrets);
  Py_DECREF(seq);
  return ret;
}

PyObject *esgpy_webhook_secret(PyObject *module, PyObject *unused) {
  (void)unused;
  char out[ESG_WEBHOOK_SECRET_SIZE];
  int rc = esg_webhook_secret_generate(out, sizeof out);
  if (rc != ESG_OK) return esgpy_raise(esgpy_state_of_module(module), rc, esg_errmsg(NULL));
  return PyUnicode_FromString(out);
}

int esgpy_webhook_add_constants(PyObject *m) {
  if (PyModule_AddStringConstant(m, "WEBHOOK_HEADER_ID", ESG_WEBHOOK_HEADER_ID) < 0 ||
      PyModule_AddStringConstant(m, "WEBHOOK_HEADER_TIMESTAMP", ESG_WEBHOOK_HEADER_TIMESTAMP) < 0 ||
      PyModule_AddStringConstant(m, "WEBHOOK_HEADER_SIGNATURE", ESG_WEBHOOK_HEADER_SIGNATURE) < 0 ||
      PyModule_AddStringConstant(m, "WEBHOOK_SECRET_PREFIX", ESG_WEBHOOK_SECRET_PREFIX) < 0 ||
      PyModule_AddIntConstant(m, "WEBHOOK_DEFAULT_TOLERANCE", ESG_WEBHOOK_DEFAULT_TOLERANCE_S) < 0)
    return -1;
  return 0;
}
