/*
 * Fault records: what could not be handled, with enough to look into it and to
 * resubmit it (the event itself). Delivery and script runners write them.
 */
#include <string.h>
#include "store/store_int.h"

/* Longest error text kept; longer texts are cut, not refused (they come from the world). */
#define ESG__FAULT_TEXT_MAX 4096

int esg_fault_record(esg_store *s, const esg_fault *f, int64_t *id) {
  int rc = esg__enter(s);
  if (rc != ESG_OK) return rc;
  if (!f) return esg__fail(&s->err, ESG_EINVAL, "fault is NULL");
  if ((rc = esg__check_key(&s->err, "fault event_id", f->event_id)) != ESG_OK) return rc;
  if ((rc = esg__check_key(&s->err, "fault stage", f->stage)) != ESG_OK) return rc;
  if (!f->error || !*f->error) return esg__fail(&s->err, ESG_EINVAL, "fault error is NULL or empty");
  if (f->attempts < 0) return esg__fail(&s->err, ESG_EINVAL, "fault attempts must not be negative");
  if (f->event_len && !f->event) return esg__fail(&s->err, ESG_EINVAL, "fault event is NULL with length %zu", f->event_len);
  if (f->event_len > ESG_EVENT_MAX_BYTES)
    return esg__fail(&s->err, ESG_ETOOBIG, "fault event is %zu bytes; the limit is %d", f->event_len, ESG_EVENT_MAX_BYTES);
  esg_fault row = *f;
  int64_t now = esg__now(s);
  if (!row.first_attempt) row.first_attempt = now;
  if (!row.last_attempt) row.last_attempt = now;
  char cut[ESG__FAULT_TEXT_MAX + 1];
  if (strlen(row.error) > ESG__FAULT_TEXT_MAX) {
    memcpy(cut, row.error, ESG__FAULT_TEXT_MAX);
    cut[ESG__FAULT_TEXT_MAX] = '\0';
    row.error = cut;
  }
  return s->be->fault_put(s->b, &row, id);
}

int esg_faults_list(esg_store *s, esg_fault_cb cb, void *ud) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!cb) return esg__fail(&s->err, ESG_EINVAL, "callback is NULL");
  ESG__COUNTED(s, rc = s->be->faults_each(s->b, 0, cb, ud, NULL));
  return rc;
}

int esg_fault_get(esg_store *s, int64_t id, esg_fault_cb cb, void *ud) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!cb) return esg__fail(&s->err, ESG_EINVAL, "callback is NULL");
  if (id <= 0) return esg__fail(&s->err, ESG_EINVAL, "fault id must be positive");
  int n = 0;
  ESG__COUNTED(s, rc = s->be->faults_each(s->b, id, cb, ud, &n));
  if (rc == ESG_OK && n == 0) return esg__fail(&s->err, ESG_NOT_FOUND, "no fault with id %lld", (long long)id);
  return rc;
}

int esg_fault_delete(esg_store *s, int64_t id) {
  int rc = esg__enter(s);
  return rc != ESG_OK ? rc : s->be->fault_delete(s->b, id);
}

int esg_faults_purge(esg_store *s, int64_t before_ms, int64_t *n) {
  if (n) *n = 0;
  int rc = esg__enter(s);
  return rc != ESG_OK ? rc : s->be->faults_purge(s->b, before_ms, n);
}
