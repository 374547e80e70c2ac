/*
 * Correlation rules: a predicate over the events of one correlation key that,
 * when it holds, emits one higher-order event whose id is derived from the key
 * and the rule, so re-evaluating (after a replay, on another host) never emits twice.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store/store_int.h"

typedef struct gather {
  esg_stored_event *evs;
  size_t n, cap;
  bool oom;
} gather;

/* Copies each event (the store reuses its memory after the callback). */
static int gather_one(void *ud, const esg_stored_event *ev) {
  gather *g = ud;
  if (g->n == g->cap) {
    size_t cap = g->cap ? 2 * g->cap : 16;
    esg_stored_event *p = esg__realloc(g->evs, cap * sizeof *p);
    if (!p) return g->oom = true;
    g->evs = p;
    g->cap = cap;
  }
  esg_stored_event c = *ev;
  c.id = esg__strdup(ev->id);
  c.type = esg__strdup(ev->type);
  c.corr_key = esg__strdup(ev->corr_key);
  char *json = esg__malloc(ev->json_len + 1);
  if (json) {
    memcpy(json, ev->json, ev->json_len);
    json[ev->json_len] = '\0';
  }
  c.json = json;
  g->evs[g->n++] = c;
  if (!c.id || !c.type || !c.corr_key || !json) return g->oom = true;
  return 0;
}

static void gather_free(gather *g) {
  for (size_t i = 0; i < g->n; i++) {
    esg__free((char *)g->evs[i].id);
    esg__free((char *)g->evs[i].type);
    esg__free((char *)g->evs[i].corr_key);
    esg__free((char *)g->evs[i].json);
  }
  esg__free(g->evs);
}

/* The higher-order event's JSON; NULL when out of memory. Free with cJSON_free. */
static char *build(const char *corr_key, const char *rule, const gather *g) {
  cJSON *o = cJSON_CreateObject(), *ids = cJSON_CreateArray();
  char *text = NULL;
  size_t idlen = strlen(corr_key) + 1 + strlen(rule) + 1;
  char *id = esg__malloc(idlen);
  /* Every add is checked: an event short of a trigger or a field would be stored under
     its deterministic id for good (the rule never fires again). */
  bool ok = o && ids && id;
  for (size_t i = 0; ok && i < g->n; i++) {
    cJSON *t = cJSON_CreateString(g->evs[i].id);
    if (!t || !cJSON_AddItemToArray(ids, t)) {
      cJSON_Delete(t);
      ok = false;
    }
  }
  if (ok) {
    snprintf(id, idlen, "%s.%s", corr_key, rule);
    ok = cJSON_AddStringToObject(o, "id", id) && cJSON_AddStringToObject(o, "type", rule) &&
         cJSON_AddNumberToObject(o, "timestamp", (double)(g->n ? g->evs[g->n - 1].timestamp : 0)) &&
         cJSON_AddStringToObject(o, "partitionKey", corr_key) && cJSON_AddItemToObject(o, "triggers", ids);
  }
  if (ok) {
    ids = NULL; /* o's now */
    text = cJSON_PrintUnformatted(o);
  }
  esg__free(id);
  cJSON_Delete(ids);
  cJSON_Delete(o);
  return text;
}

int esg_correlate(esg_store *s, const char *corr_key, const char *rule, esg_rule_fn pred, void *pred_ud,
                  int64_t ttl_ms, esg_event_cb emit, void *emit_ud) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = esg__check_key(&s->err, "correlation key", corr_key);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "rule name", rule);
  if (rc != ESG_OK) return rc;
  if (!pred) return esg__fail(&s->err, ESG_EINVAL, "rule predicate is NULL");
  gather g = {0};
  rc = esg_events_by_key(s, corr_key, gather_one, &g);
  if (g.oom) rc = esg__fail(&s->err, ESG_ENOMEM, "out of memory reading the events of \"%s\"", corr_key);
  int match = 0;
  if (rc == ESG_OK) {
    ESG__COUNTED(s, match = pred(pred_ud, g.evs, g.n));
    if (match < 0) rc = esg__fail(&s->err, ESG_ECALLBACK, "rule \"%s\" failed on key \"%s\"", rule, corr_key);
  }
  char *json = rc == ESG_OK && match ? build(corr_key, rule, &g) : NULL;
  gather_free(&g);
  if (rc != ESG_OK) return rc;
  if (!match) return ESG_NOT_FOUND;
  if (!json) return esg__fail(&s->err, ESG_ENOMEM, "out of memory building the event of rule \"%s\"", rule);
  esg_event *ev = NULL;
  rc = esg_event_parse(json, strlen(json), &ev);
  cJSON_free(json);
  if (rc != ESG_OK) return esg__fail(&s->err, rc, "rule \"%s\": %s", rule, esg_errmsg(NULL));
  rc = esg_event_put(s, ev, corr_key, ttl_ms);
  if (rc == ESG_OK && emit) {
    esg_stored_event x = esg__stored_event(ev, corr_key, 0);
    int bad;
    ESG__COUNTED(s, bad = emit(emit_ud, &x));
    if (bad) rc = esg__fail(&s->err, ESG_ECALLBACK, "the emit callback of rule \"%s\" failed", rule);
  }
  esg_event_free(ev);
  return rc;
}
