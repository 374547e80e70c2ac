/*
 * Latches: loop prevention in two-way sync (DESIGN.md "Latches",
 * docs/latching.md); the decisions are the backend's latch_consume. Flag latches
 * are a JSON convention and need no store;
 * content latches keep, per (key, side), the hashes of the states we wrote to
 * that side and have not yet seen come back, in write order.
 *
 * Why a set and not only the last hash: two quick writes to one side produce two
 * echoes; with only the last hash the first echo would look genuine and be sent
 * back, regressing the other side for a moment. Why an echo also drops the older
 * latches: a side reports one key's changes in order, so once the echo of a later
 * write arrives the earlier echoes were coalesced or lost, and keeping them would
 * only risk suppressing a genuine change that restores that earlier state.
 * Why an echo takes the newest latch with its hash, not the oldest: after writes
 * h1, h2, h1, a report of h1 may be the first write's echo or the last one's (the
 * side coalesced the others); taking the oldest would leave h2 and h1 pending, and
 * a later genuine edit back to h2 would be swallowed as an echo. Taking the newest
 * can at worst let a late true echo cross once more as a change (it converges); a
 * real change is never lost.
 * Why a genuine change clears only the newest latch: under in-order reporting
 * every pending write lands after that change, so the side ends at the newest
 * write's state while the other side is about to receive the genuine change;
 * the newest echo must therefore cross back, but the older echoes carry states
 * the newest supersedes. Clearing them all (the first version) stays correct but
 * sent up to 2.5 times more messages in the two-system property test.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "store/store_int.h"

/* ------------------------------------------------------------ flag latches -- */

static bool is_flagged(const cJSON *obj) {
  return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, "latched"));
}

/* The entity members of an envelope: object members other than the reserved ones. */
static bool is_entity(const cJSON *item) {
  return cJSON_IsObject(item) && item->string && strcmp(item->string, "tags") != 0 &&
         strcmp(item->string, "raw") != 0;
}

static bool root_flagged(const cJSON *root) {
  if (is_flagged(root)) return true;
  for (const cJSON *it = root->child; it; it = it->next)
    if (is_entity(it) && is_flagged(it)) return true;
  return false;
}

/* Parses a JSON object for the flag helpers; NULL with the error recorded (in *rc). */
static cJSON *parse_object(const char *json, size_t len, int *rc) {
  if (!json) {
    *rc = esg__fail(NULL, ESG_EINVAL, "document is NULL");
    return NULL;
  }
  if (len > ESG_EVENT_MAX_BYTES) {
    *rc = esg__fail(NULL, ESG_ETOOBIG, "document is %zu bytes; the limit is %d", len, ESG_EVENT_MAX_BYTES);
    return NULL;
  }
  unsigned nomem = esg__nomem_count();
  cJSON *root = esg__json_parse(json, len, NULL);
  if (!root) {
    *rc = esg__nomem_count() != nomem ? esg__fail(NULL, ESG_ENOMEM, "out of memory parsing a document")
                                      : esg__fail(NULL, ESG_EJSON, "document is not valid JSON");
    return NULL;
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    *rc = esg__fail(NULL, ESG_EJSON, "document must be a JSON object");
    return NULL;
  }
  *rc = ESG_OK;
  return root;
}

/* From the event's own tree: parsing its bytes again could run out of memory, and this
   never fails (a flagged event read as not flagged would echo back). */
int esg_latch_flagged(const esg_event *ev) { return ev && root_flagged(esg__event_root(ev)); }

int esg_latch_flagged_json(const char *json, size_t len, int *flagged) {
  if (!flagged) return esg__fail(NULL, ESG_EINVAL, "flagged is NULL");
  *flagged = 0;
  int rc;
  cJSON *root = parse_object(json, len, &rc);
  if (!root) return rc;
  *flagged = root_flagged(root);
  cJSON_Delete(root);
  return ESG_OK;
}

int esg_latch_mark(const char *json, size_t len, int latched, char **out, size_t *out_len) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (out_len) *out_len = 0;
  int rc;
  cJSON *root = parse_object(json, len, &rc);
  if (!root) return rc;
  bool ok = true;
  if (latched) {
    cJSON *t = cJSON_CreateTrue();
    if (!t) ok = false;
    /* (cJSON 1.7 replaces even when it could not copy the name: a member named NULL) */
    else if (cJSON_GetObjectItemCaseSensitive(root, "latched"))
      ok = cJSON_ReplaceItemInObjectCaseSensitive(root, "latched", t) && t->string;
    else if (!(ok = cJSON_AddItemToObject(root, "latched", t))) cJSON_Delete(t); /* not attached: ours to free */
  } else {
    /* clear every place esg_latch_flagged looks, so a cleared record never reads as latched */
    while (cJSON_GetObjectItemCaseSensitive(root, "latched")) cJSON_DeleteItemFromObjectCaseSensitive(root, "latched");
    for (cJSON *it = root->child; it; it = it->next)
      while (is_entity(it) && cJSON_GetObjectItemCaseSensitive(it, "latched"))
        cJSON_DeleteItemFromObjectCaseSensitive(it, "latched");
  }
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  if (!text) return esg__fail(NULL, ESG_ENOMEM, "out of memory marking a document");
  /* copy into malloc'd memory: the caller frees with esg_free, whatever cJSON's allocator */
  size_t n = strlen(text);
  char *copy = esg__malloc(n + 1);
  if (copy) memcpy(copy, text, n + 1);
  cJSON_free(text);
  if (!copy) return esg__fail(NULL, ESG_ENOMEM, "out of memory marking a document");
  *out = copy;
  if (out_len) *out_len = n;
  return ESG_OK;
}

/* --------------------------------------------------------- content latches -- */

static int check_args(esg_store *s, const char *key, const char *side, const char *hash) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "latch key", key);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "latch side", side);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "latch content hash", hash);
  return rc;
}

int esg_latch(esg_store *s, const char *key, const char *side, const char *content_hash, int64_t ttl_ms) {
  int rc = check_args(s, key, side, content_hash);
  if (rc != ESG_OK) return rc;
  if (ttl_ms <= 0) return esg__fail(&s->err, ESG_EINVAL, "latch ttl must be positive (got %lld ms)", (long long)ttl_ms);
  return s->be->latch_set(s->b, key, side, content_hash, esg__time_add(esg__now(s), ttl_ms), ESG_LATCH_MAX_PENDING);
}

int esg_latch_check(esg_store *s, const char *key, const char *side, const char *content_hash) {
  int rc = check_args(s, key, side, content_hash);
  if (rc != ESG_OK) return rc;
  rc = s->be->latch_consume(s->b, key, side, content_hash, esg__now(s));
  int trc = rc >= 0 ? esg__tick(s) : ESG_OK; /* (the common answer is a read) */
  return trc != ESG_OK ? trc : rc;
}

/* The content hash of doc for the _doc variants, recording errors on s. */
static int doc_hash(esg_store *s, const char *doc, size_t len, char out[65]) {
  if (!doc) return esg__fail(&s->err, ESG_EINVAL, "latch document is NULL");
  if (len > ESG_EVENT_MAX_BYTES)
    return esg__fail(&s->err, ESG_ETOOBIG, "latch document is %zu bytes; the limit is %d", len, ESG_EVENT_MAX_BYTES);
  int rc = esg_content_hash(doc, len, out);
  if (rc != ESG_OK) return esg__fail(&s->err, rc, "latch document: %s", esg_errmsg(NULL));
  return ESG_OK;
}

int esg_latch_doc(esg_store *s, const char *key, const char *side, const char *doc, size_t len, int64_t ttl_ms) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  char h[65];
  int rc = doc_hash(s, doc, len, h);
  return rc == ESG_OK ? esg_latch(s, key, side, h, ttl_ms) : rc;
}

int esg_latch_check_doc(esg_store *s, const char *key, const char *side, const char *doc, size_t len) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  char h[65];
  int rc = doc_hash(s, doc, len, h);
  return rc == ESG_OK ? esg_latch_check(s, key, side, h) : rc;
}

int esg_latch_cancel(esg_store *s, const char *key, const char *side, const char *content_hash) {
  int rc = check_args(s, key, side, content_hash);
  if (rc != ESG_OK) return rc;
  rc = s->be->latch_cancel(s->b, key, side, content_hash);
  if (rc == ESG_NOT_FOUND)
    esg__fail(&s->err, rc, "no latch pending for key \"%s\" side \"%s\" with that content hash", key, side);
  return rc;
}

int esg_latch_pending(esg_store *s, const char *key, const char *side, int *n) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!n) return esg__fail(&s->err, ESG_EINVAL, "n is NULL");
  *n = 0;
  rc = esg__check_key(&s->err, "latch key", key);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "latch side", side);
  if (rc != ESG_OK) return rc;
  return s->be->latch_count(s->b, key, side, esg__now(s), n);
}

int esg_latches_purge(esg_store *s, int64_t *n) {
  if (n) *n = 0;
  int rc = esg__enter(s);
  return rc != ESG_OK ? rc : s->be->latches_purge(s->b, esg__now(s), n);
}
