/*
 * The event envelope: parse, validate with errors that name the field, and keep
 * the bytes and their SHA-256 so claims can detect a changed payload.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/internal.h"

struct esg_event {
  cJSON *root;
  const char *id, *type, *pkey;
  int64_t ts;
  size_t len;
  uint8_t hash[32];
  char json[]; /* the bytes as parsed, NUL-terminated */
};

/* The largest integer a double holds exactly: timestamps beyond it lost precision in parsing. */
#define ESG__MAX_EXACT 9007199254740992.0

static int field_string(cJSON *root, const char *name, bool required, const char **out) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
  *out = NULL;
  if (!v) {
    if (required) return esg__fail(NULL, ESG_EEVENT, "event field \"%s\" is missing", name);
    return ESG_OK;
  }
  if (!cJSON_IsString(v))
    return esg__fail(NULL, ESG_EEVENT, "event field \"%s\" must be a string", name);
  if (required && v->valuestring[0] == '\0')
    return esg__fail(NULL, ESG_EEVENT, "event field \"%s\" is empty", name);
  if (strlen(v->valuestring) > ESG_KEY_MAX)
    return esg__fail(NULL, ESG_ETOOBIG, "event field \"%s\" is longer than %d bytes", name, ESG_KEY_MAX);
  *out = v->valuestring;
  return ESG_OK;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* A member named twice, in v or below it, or NULL: parsers disagree on which one wins
   (cJSON takes the first, many take the last), so the claim and a script would see two
   different events. OOM sets *nomem. */
static const char *duplicate_member(const cJSON *v, bool *nomem) {
  if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return NULL;
  size_t n = 0;
  for (const cJSON *c = v->child; c; c = c->next) {
    const char *d = duplicate_member(c, nomem);
    if (d || *nomem) return d;
    n++;
  }
  if (!cJSON_IsObject(v) || n < 2) return NULL;
  if (n <= 16) { /* the common case: a few members, compared pairwise */
    for (const cJSON *a = v->child; a; a = a->next)
      for (const cJSON *b = a->next; b; b = b->next)
        if (strcmp(a->string, b->string) == 0) return a->string;
    return NULL;
  }
  const cJSON **m = esg__malloc(n * sizeof *m);
  if (!m) {
    *nomem = true;
    return NULL;
  }
  size_t i = 0;
  for (const cJSON *c = v->child; c; c = c->next) m[i++] = c;
  qsort(m, n, sizeof *m, cmp_name);
  const char *d = NULL;
  for (i = 1; i < n && !d; i++)
    if (strcmp(m[i - 1]->string, m[i]->string) == 0) d = m[i]->string;
  esg__free(m);
  return d;
}

static int validate(esg_event *ev) {
  cJSON *root = ev->root;
  if (!cJSON_IsObject(root)) return esg__fail(NULL, ESG_EEVENT, "event must be a JSON object");
  bool nomem = false;
  const char *dup = duplicate_member(root, &nomem);
  if (nomem) return esg__fail(NULL, ESG_ENOMEM, "out of memory checking the event's members");
  if (dup) return esg__fail(NULL, ESG_EEVENT, "event has the member \"%.200s\" twice", dup);
  int rc;
  if ((rc = field_string(root, "id", true, &ev->id)) != ESG_OK) return rc;
  if ((rc = field_string(root, "type", true, &ev->type)) != ESG_OK) return rc;
  if ((rc = field_string(root, "partitionKey", false, &ev->pkey)) != ESG_OK) return rc;
  cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "timestamp");
  if (!ts) return esg__fail(NULL, ESG_EEVENT, "event field \"timestamp\" is missing");
  double d = ts->valuedouble;
  if (!cJSON_IsNumber(ts) || d != floor(d) || fabs(d) > ESG__MAX_EXACT)
    return esg__fail(NULL, ESG_EEVENT, "event field \"timestamp\" must be an integer (epoch milliseconds)");
  ev->ts = (int64_t)d;
  cJSON *tags = cJSON_GetObjectItemCaseSensitive(root, "tags");
  if (tags && !cJSON_IsObject(tags))
    return esg__fail(NULL, ESG_EEVENT, "event field \"tags\" must be an object");
  return ESG_OK;
}

int esg_event_parse(const char *json, size_t len, esg_event **out) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!json) return esg__fail(NULL, ESG_EINVAL, "event is NULL");
  if (len > ESG_EVENT_MAX_BYTES)
    return esg__fail(NULL, ESG_ETOOBIG, "event is %zu bytes; the limit is %d", len, ESG_EVENT_MAX_BYTES);
  /* the text rules first (core/text.c): JSON is UTF-8, and a NUL would cut strings short */
  size_t bad = esg__utf8_invalid_at(json, len);
  if (bad != len)
    return esg__fail(NULL, json[bad] ? ESG_EJSON : ESG_EEVENT, json[bad] ? "event is not valid UTF-8 (at byte %zu)"
                                                                           : "event holds a NUL byte (at byte %zu)",
                     bad);
  if ((bad = esg__json_nul_escape_at(json, len)) != len)
    return esg__fail(NULL, ESG_EEVENT, "event holds a NUL (\\u0000 at byte %zu): strings of an event must not", bad);
  esg_event *ev = esg__malloc(sizeof *ev + len + 1);
  if (!ev) return esg__fail(NULL, ESG_ENOMEM, "out of memory for a %zu byte event", len);
  memcpy(ev->json, json, len);
  ev->json[len] = '\0';
  ev->len = len;
  size_t at = 0;
  unsigned nomem = esg__nomem_count();
  ev->root = esg__json_parse(ev->json, len, &at);
  if (!ev->root) {
    esg__free(ev);
    if (esg__nomem_count() != nomem) /* not the input's fault: it may parse on a retry */
      return esg__fail(NULL, ESG_ENOMEM, "out of memory parsing a %zu byte event", len);
    return esg__fail(NULL, ESG_EJSON, "event is not valid JSON (near byte %zu)", at);
  }
  int rc = validate(ev);
  if (rc != ESG_OK) {
    esg_event_free(ev);
    return rc;
  }
  esg_sha256(ev->json, len, ev->hash);
  *out = ev;
  return ESG_OK;
}

void esg_event_free(esg_event *ev) {
  if (!ev) return;
  cJSON_Delete(ev->root);
  esg__free(ev);
}

const char *esg_event_id(const esg_event *ev) { return ev->id; }
const char *esg_event_type(const esg_event *ev) { return ev->type; }
int64_t esg_event_timestamp(const esg_event *ev) { return ev->ts; }
const char *esg_event_partition_key(const esg_event *ev) { return ev->pkey; }
const uint8_t *esg_event_hash(const esg_event *ev) { return ev->hash; }

const cJSON *esg__event_root(const esg_event *ev) { return ev->root; }

const char *esg_event_json(const esg_event *ev, size_t *len) {
  if (len) *len = ev->len;
  return ev->json;
}
