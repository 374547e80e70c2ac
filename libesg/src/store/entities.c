/*
 * Entities under the inverse optimistic lock: a write applies only when its
 * version is newer than what is stored, and deletes leave versioned tombstones
 * so a late, older update cannot bring an entity back.
 */
#include <cjson/cJSON.h>
#include "backend/backend.h"

/* Largest entity document, in bytes. */
#define ESG__DOC_MAX ESG_EVENT_MAX_BYTES

int esg_entity_upsert(esg_store *s, const char *key, int64_t version, const char *doc, size_t len) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = esg__check_key(&s->err, "entity key", key);
  if (rc != ESG_OK) return rc;
  if (!doc) return esg__fail(&s->err, ESG_EINVAL, "entity document is NULL (use esg_entity_delete to delete)");
  if (len > ESG__DOC_MAX)
    return esg__fail(&s->err, ESG_ETOOBIG, "entity document is %zu bytes; the limit is %d", len, ESG__DOC_MAX);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(doc, len, &end, 0);
  bool object = cJSON_IsObject(root);
  cJSON_Delete(root);
  if (object && end) /* only white space may follow the object */
    while (end < doc + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
  if (object && end != doc + len) object = false;
  if (!object) return esg__fail(&s->err, ESG_EJSON, "entity document for \"%s\" is not a JSON object", key);
  bool own;
  if ((rc = esg__unit_begin(s, false, &own)) != ESG_OK) return rc;
  return esg__unit_end(s, own, s->be->entity_put_if_newer(s, key, version, doc, len));
}

int esg_entity_get(esg_store *s, const char *key, esg_entity *out) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  if (!out) return esg__fail(&s->err, ESG_EINVAL, "out is NULL");
  int rc = esg__check_key(&s->err, "entity key", key);
  if (rc != ESG_OK) return rc;
  return s->be->entity_get(s, key, out);
}

int esg_entity_delete(esg_store *s, const char *key, int64_t version) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = esg__check_key(&s->err, "entity key", key);
  if (rc != ESG_OK) return rc;
  bool own;
  if ((rc = esg__unit_begin(s, false, &own)) != ESG_OK) return rc;
  return esg__unit_end(s, own, s->be->entity_put_if_newer(s, key, version, NULL, 0));
}
