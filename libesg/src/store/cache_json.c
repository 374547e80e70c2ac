/*
 * What the cache reads out of JSON: the check of a value before it is stored
 * (one JSON document, within max_value_bytes, its version field), and
 * esg_cache_collect, which takes the entity an event carries and stores it
 * under "<field>/<id>" if it is newer than what the cache holds.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include "cache_int.h"

bool esg__cache_integral(const cJSON *n, int64_t *out) {
  if (!cJSON_IsNumber(n)) return false;
  double d = n->valuedouble;
  if (d != d || d < -9007199254740992.0 || d > 9007199254740992.0 || (double)(int64_t)d != d) return false;
  *out = (int64_t)d;
  return true;
}

int esg__cache_check_value(esg_cache *c, const char *what, const char *key, const void *v, size_t len,
                           int64_t *version) {
  if (len > c->max_value)
    return esg__fail(&c->err, ESG_ETOOBIG, "%s for cache key \"%s\" is %zu bytes; the limit is %zu", what, key, len,
                     c->max_value);
  if (!c->json && !c->version_field) return ESG_OK;
  size_t at = 0;
  unsigned nomem = esg__nomem_count();
  cJSON *root = len ? esg__json_parse(v, len, &at) : NULL;
  if (!root && esg__nomem_count() != nomem)
    return esg__fail(&c->err, ESG_ENOMEM, "out of memory checking the %s for cache key \"%s\"", what, key);
  if (c->json && !root) {
    return esg__fail(&c->err, ESG_EJSON, "%s for cache key \"%s\" is not JSON (%s at byte %zu)", what, key,
                     len ? "error" : "empty", at);
  }
  if (c->version_field && cJSON_IsObject(root)) {
    int64_t ver;
    if (esg__cache_integral(cJSON_GetObjectItemCaseSensitive(root, c->version_field), &ver)) *version = ver;
  }
  cJSON_Delete(root);
  return ESG_OK;
}

/* --------------------------------------------------------------- collect -- */

static bool envelope_key(const char *k) {
  static const char *const keys[] = {"id", "type", "timestamp", "partitionKey", "tags", "raw"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (strcmp(k, keys[i]) == 0) return true;
  return false;
}

static int collect_parsed(esg_cache *c, const esg_event *ev, cJSON *root, const char **key) {
  const char *id = esg_event_id(ev);
  const char *field = c->collect_field;
  cJSON *entity = NULL;
  if (field) {
    entity = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!entity) return esg__fail(&c->err, ESG_NOT_FOUND, "event %s has no \"%s\": nothing to collect", id, field);
    if (!cJSON_IsObject(entity))
      return esg__fail(&c->err, ESG_EEVENT, "\"%s\" of event %s is not an object", field, id);
  } else {
    cJSON *item;
    cJSON_ArrayForEach(item, root) {
      if (!cJSON_IsObject(item) || envelope_key(item->string)) continue;
      if (entity)
        return esg__fail(&c->err, ESG_EEVENT,
                         "event %s carries two entities (\"%s\" and \"%s\"): set collect_field", id, entity->string,
                         item->string);
      entity = item;
    }
    if (!entity) return esg__fail(&c->err, ESG_NOT_FOUND, "event %s carries no entity: nothing to collect", id);
    field = entity->string;
  }

  cJSON *eid = cJSON_GetObjectItemCaseSensitive(entity, c->id_field);
  char idbuf[32];
  const char *idtext = NULL;
  int64_t n;
  if (cJSON_IsString(eid) && eid->valuestring[0]) {
    idtext = eid->valuestring;
  } else if (esg__cache_integral(eid, &n)) {
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)n);
    idtext = idbuf;
  } else {
    return esg__fail(&c->err, ESG_EEVENT, "entity \"%s\" of event %s has no string or integer \"%s\"", field, id,
                     c->id_field);
  }
  size_t flen = strlen(field), ilen = strlen(idtext), klen = flen + 1 + ilen;
  if (klen > ESG_KEY_MAX)
    return esg__fail(&c->err, ESG_ETOOBIG, "cache key for entity \"%s\" of event %s is %zu bytes; the limit is %d",
                     field, id, klen, ESG_KEY_MAX);
  if (esg__buf_set(&c->keybuf, NULL, klen) != ESG_OK)
    return esg__fail(&c->err, ESG_ENOMEM, "out of memory collecting event %s", id);
  memcpy(c->keybuf.data, field, flen);
  c->keybuf.data[flen] = '/';
  memcpy(c->keybuf.data + flen + 1, idtext, ilen + 1);
  const char *ckey = c->keybuf.data;
  if (key) *key = ckey;

  int64_t version = esg_event_timestamp(ev);
  if (c->version_field &&
      !esg__cache_integral(cJSON_GetObjectItemCaseSensitive(entity, c->version_field), &version))
    return esg__fail(&c->err, ESG_EEVENT, "entity \"%s\" of event %s has no integer \"%s\" (the version field)", field,
                     id, c->version_field);

  char *doc = cJSON_PrintUnformatted(entity);
  if (!doc) return esg__fail(&c->err, ESG_ENOMEM, "out of memory collecting event %s", id);
  size_t len = strlen(doc);
  int rc = ESG_OK;
  if (len > c->max_value)
    rc = esg__fail(&c->err, ESG_ETOOBIG, "entity \"%s\" of event %s is %zu bytes; the limit is %zu", field, id, len,
                   c->max_value);
  if (rc == ESG_OK) {
    int64_t now = c->clock(c->clock_ud);
    esg__cache_row row = {false, version, esg__time_add(now, c->ttl), now, doc, len};
    rc = esg__cache_write(c, ckey, klen, key_hash(ckey, klen), &row, true, now);
  }
  cJSON_free(doc);
  return rc;
}

int esg_cache_collect(esg_cache *c, const esg_event *ev, const char **key) {
  if (key) *key = NULL;
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  int rc = esg__cache_check_idle(c);
  if (rc != ESG_OK) return rc;
  if (!ev) return esg__fail(&c->err, ESG_EINVAL, "event is NULL");
  size_t len = 0;
  const char *json = esg_event_json(ev, &len);
  unsigned nomem = esg__nomem_count();
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!root && esg__nomem_count() != nomem)
    return esg__fail(&c->err, ESG_ENOMEM, "out of memory collecting event %s", esg_event_id(ev));
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return esg__fail(&c->err, ESG_EJSON, "event %s is not a JSON object", esg_event_id(ev));
  }
  rc = collect_parsed(c, ev, root, key);
  cJSON_Delete(root);
  return rc;
}
