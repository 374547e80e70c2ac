/*
 * The event log: each event stored once per id under a correlation key, read
 * back in (timestamp, id) order, and purged on expiry with a `<type>-expired`
 * event handed to the caller to emit.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store/store_int.h"

esg_stored_event esg__stored_event(const esg_event *ev, const char *corr_key, int64_t expires) {
  esg_stored_event row = {0};
  row.id = esg_event_id(ev);
  row.type = esg_event_type(ev);
  row.timestamp = esg_event_timestamp(ev);
  row.corr_key = corr_key;
  row.json = esg_event_json(ev, &row.json_len);
  row.expires = expires;
  return row;
}

int esg__event_store(esg_store *s, const esg_stored_event *row) {
  return s->be->event_put(s->b, row, esg__now(s));
}

int esg_event_put(esg_store *s, const esg_event *ev, const char *corr_key, int64_t ttl_ms) {
  int rc = esg__enter(s);
  if (rc != ESG_OK) return rc;
  if (!ev) return esg__fail(&s->err, ESG_EINVAL, "event is NULL");
  if (ttl_ms < 0) return esg__fail(&s->err, ESG_EINVAL, "ttl must not be negative (0 = never expires)");
  if (!corr_key) corr_key = esg_event_partition_key(ev) ? esg_event_partition_key(ev) : esg_event_id(ev);
  rc = esg__check_key(&s->err, "correlation key", corr_key);
  if (rc != ESG_OK) return rc;
  esg_stored_event row = esg__stored_event(ev, corr_key, ttl_ms ? esg__time_add(esg__now(s), ttl_ms) : 0);
  return esg__event_store(s, &row);
}

int esg_events_by_key(esg_store *s, const char *corr_key, esg_event_cb cb, void *ud) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!cb) return esg__fail(&s->err, ESG_EINVAL, "callback is NULL");
  if ((rc = esg__check_key(&s->err, "correlation key", corr_key)) != ESG_OK) return rc;
  int64_t now = esg__now(s);
  ESG__COUNTED(s, rc = s->be->events_by_key(s->b, corr_key, now, cb, ud));
  return rc;
}

int esg_event_get(esg_store *s, const char *id, esg_event_cb cb, void *ud) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!cb) return esg__fail(&s->err, ESG_EINVAL, "callback is NULL");
  if ((rc = esg__check_key(&s->err, "event id", id)) != ESG_OK) return rc;
  int64_t now = esg__now(s);
  ESG__COUNTED(s, rc = s->be->event_get(s->b, id, now, cb, ud));
  return rc;
}

typedef struct purge_ctx {
  esg_store *s;
  esg_event_cb cb;
  void *ud;
  int64_t now, deleted;
  int rc;
  char msg[sizeof ((esg__err *)0)->msg]; /* rc's text: the backend words the stop over it */
} purge_ctx;

/* Builds the `<type>-expired` event for ev; NULL when out of memory, or (*bad set) when the
   stored event does not parse. Free with cJSON_free. */
static char *expired_event(const esg_stored_event *ev, char *id_out, bool *bad) {
  char name[ESG_KEY_MAX + 16];
  int n = snprintf(name, sizeof name, "%s/expired", ev->id);
  if (esg_uuid5(ESG_UUID_NS_EVENT, name, (size_t)n, id_out) != ESG_OK) return NULL;
  char type[ESG_KEY_MAX + 16];
  snprintf(type, sizeof type, "%s-expired", ev->type);
  unsigned nomem = esg__nomem_count();
  cJSON *orig = cJSON_ParseWithLength(ev->json, ev->json_len);
  *bad = orig == NULL && ev->json_len > 0 && ev->json && esg__nomem_count() == nomem;
  cJSON *out = cJSON_CreateObject();
  char *text = NULL;
  if (orig && out && cJSON_AddStringToObject(out, "id", id_out) && cJSON_AddStringToObject(out, "type", type) &&
      cJSON_AddNumberToObject(out, "timestamp", (double)ev->expires)) {
    cJSON *pk = cJSON_GetObjectItemCaseSensitive(orig, "partitionKey");
    /* (orig is out's once added; not added, it stays ours to delete) */
    if ((!cJSON_IsString(pk) || cJSON_AddStringToObject(out, "partitionKey", pk->valuestring)) &&
        cJSON_AddItemToObject(out, "expired", orig)) {
      orig = NULL;
      text = cJSON_PrintUnformatted(out);
    }
  }
  cJSON_Delete(orig);
  cJSON_Delete(out);
  return text;
}

static int purge_one(void *ud, const esg_stored_event *ev) {
  purge_ctx *p = ud;
  if (p->cb) {
    char id[37];
    bool bad = false;
    char *json = expired_event(ev, id, &bad);
    if (!json) {
      p->rc = bad ? esg__fail(&p->s->err, ESG_EJSON, "the stored event \"%s\" is not valid JSON", ev->id)
                  : esg__fail(&p->s->err, ESG_ENOMEM, "out of memory building the expired event for \"%s\"", ev->id);
      memcpy(p->msg, p->s->err.msg, sizeof p->msg);
      return 1;
    }
    char type[ESG_KEY_MAX + 16];
    snprintf(type, sizeof type, "%s-expired", ev->type);
    esg_stored_event x = *ev;
    x.id = id;
    x.type = type;
    x.timestamp = ev->expires;
    x.json = json;
    x.json_len = strlen(json);
    x.expires = 0;
    int keep;
    ESG__COUNTED(p->s, keep = p->cb(p->ud, &x));
    cJSON_free(json);
    if (keep) return 0; /* the caller could not emit it: keep the event for the next purge */
  }
  int rc = p->s->be->event_delete_expired(p->s->b, ev->id, p->now);
  if (rc == ESG_NOT_FOUND) return 0; /* stored afresh since the purge read it: not expired any more */
  if (rc != ESG_OK) {
    p->rc = rc;
    memcpy(p->msg, p->s->err.msg, sizeof p->msg);
    return 1;
  }
  p->deleted++;
  return 0;
}

int esg_events_purge(esg_store *s, esg_event_cb cb, void *ud, int64_t *n) {
  if (n) *n = 0;
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  purge_ctx p = {s, cb, ud, esg__now(s), 0, ESG_OK, ""};
  rc = s->be->events_expired(s->b, p.now, purge_one, &p);
  if (n) *n = p.deleted;
  return p.rc != ESG_OK ? esg__fail(&s->err, p.rc, "%s", p.msg) : rc;
}
