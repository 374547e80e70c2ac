/*
 * Entities under the inverse optimistic lock: a write applies only when its
 * version is newer than what is stored, and deletes leave versioned tombstones
 * so a late, older update cannot bring an entity back.
 */
#include <cjson/cJSON.h>
#include "store/store_int.h"

/* Largest entity document, in bytes. */
#define ESG__DOC_MAX ESG_EVENT_MAX_BYTES

int esg_entity_upsert(esg_store *s, const char *key, int64_t version, const char *doc, size_t len) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "entity key", key);
  if (rc != ESG_OK) return rc;
  if (!doc) return esg__fail(&s->err, ESG_EINVAL, "entity document is NULL (use esg_entity_delete to delete)");
  if (len > ESG__DOC_MAX)
    return esg__fail(&s->err, ESG_ETOOBIG, "entity document is %zu bytes; the limit is %d", len, ESG__DOC_MAX);
  unsigned nomem = esg__nomem_count();
  cJSON *root = esg__json_parse(doc, len, NULL);
  if (!root && esg__nomem_count() != nomem)
    return esg__fail(&s->err, ESG_ENOMEM, "out of memory checking the document for \"%s\"", key);
  bool object = cJSON_IsObject(root);
  cJSON_Delete(root);
  if (!object) return esg__fail(&s->err, ESG_EJSON, "entity document for \"%s\" is not a JSON object", key);
  return s->be->entity_put_if_newer(s->b, key, version, doc, len);
}

int esg_entity_get(esg_store *s, const char *key, esg_entity *out) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!out) return esg__fail(&s->err, ESG_EINVAL, "out is NULL");
  if ((rc = esg__check_key(&s->err, "entity key", key)) != ESG_OK) return rc;
  return s->be->entity_get(s->b, key, out);
}

int esg_entity_delete(esg_store *s, const char *key, int64_t version) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "entity key", key);
  if (rc != ESG_OK) return rc;
  return s->be->entity_put_if_newer(s->b, key, version, NULL, 0);
}
