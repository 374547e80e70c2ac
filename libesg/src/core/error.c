/*
 * Status codes and error text: the one list in esg/common.h becomes the text and
 * name tables here; handles keep their detail text in their leading esg__err.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/internal.h"

const char *esg_strerror(int status) {
  switch (status) {
#define ESG__TEXT(name, value, text) case value: return text;
    ESG_STATUS_MAP(ESG__TEXT)
#undef ESG__TEXT
  }
  return "unknown status";
}

const char *esg_status_name(int status) {
  switch (status) {
#define ESG__NAME(name, value, text) case value: return #name;
    ESG_STATUS_MAP(ESG__NAME)
#undef ESG__NAME
  }
  return "UNKNOWN";
}

static _Thread_local esg__err tls_err;

esg__err *esg__tls_err(void) { return &tls_err; }

int esg__fail(esg__err *err, int code, const char *fmt, ...) {
  if (!err) err = &tls_err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return code;
}

int esg__check_key(esg__err *err, const char *what, const char *key) {
  if (!key) return esg__fail(err, ESG_EINVAL, "%s is NULL", what);
  size_t n = strlen(key);
  if (n == 0) return esg__fail(err, ESG_EINVAL, "%s is empty", what);
  if (n > ESG_KEY_MAX)
    return esg__fail(err, ESG_ETOOBIG, "%s is %zu bytes; the limit is %d", what, n, ESG_KEY_MAX);
  size_t bad = esg__utf8_invalid_at(key, n);
  if (bad != n) return esg__fail(err, ESG_EINVAL, "%s is not valid UTF-8 (at byte %zu)", what, bad);
  return ESG_OK;
}

int esg__buf_set(esg__buf *b, const void *data, size_t len) {
  if (len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < len + 1) cap *= 2;
    char *p = esg__realloc(b->data, cap);
    if (!p) return ESG_ENOMEM;
    b->data = p;
    b->cap = cap;
  }
  if (len && data) memcpy(b->data, data, len); /* NULL data: just make room */
  b->data[len] = '\0';
  b->len = len;
  return ESG_OK;
}

void esg__buf_free(esg__buf *b) {
  esg__free(b->data);
  memset(b, 0, sizeof *b);
}

const char *esg_version(void) { return ESG_VERSION_STRING; }
int esg_version_number(void) { return ESG_VERSION_NUMBER; }

int64_t esg_clock_real(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int esg_ms_from_seconds(double s, int64_t *out) {
  if (!(s >= -ESG_SECONDS_MAX && s <= ESG_SECONDS_MAX)) /* NaN fails both */
    return esg__fail(NULL, ESG_EINVAL, "%g seconds is not a time or duration esg converts (|s| <= 9e15)", s);
  *out = (int64_t)llround(s * 1000.0);
  return ESG_OK;
}

void esg__sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}
