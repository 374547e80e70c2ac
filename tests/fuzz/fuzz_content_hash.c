/*
 * Canonical JSON and the content hash, esg_content_hash. libesg hashes documents already
 * in canonical form straight from their bytes (a hand-written fast path) and the rest
 * through cJSON; the canonical form itself is not public, so it is rebuilt here the way
 * the library documents it (cJSON, keys sorted by strcmp, no white space, -0 as 0) and:
 *   - the hash succeeds exactly for what cJSON takes as one JSON value (white space around);
 *   - it is the SHA-256 of that canonical text;
 *   - canonical is idempotent: the hash of the canonical text is the same hash;
 *   - spacing and key order do not matter: the document printed with white space, and
 *     with every object's members reversed, hashes the same (not with duplicate keys,
 *     whose order the sort keeps).
 */
#include <cjson/cJSON.h>
#include <string.h>
#include <esg.h>
#include "fuzz.h"

static int by_name(const void *a, const void *b) {
  return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Puts the members of every object in the order given (sort: strcmp; else reversed). */
static void reorder(cJSON *item, int sort, int *dups) {
  if (cJSON_IsNumber(item) && item->valuedouble == 0) cJSON_SetNumberValue(item, 0.0);
  if (!cJSON_IsObject(item) && !cJSON_IsArray(item)) return;
  size_t n = 0;
  for (cJSON *c = item->child; c; c = c->next, n++) reorder(c, sort, dups);
  if (!cJSON_IsObject(item) || n < 2) return;
  cJSON **v = malloc(n * sizeof *v);
  FUZZ_CHECK(v != NULL);
  size_t i = 0;
  for (cJSON *c = item->child; c; c = c->next) v[i++] = c;
  if (sort) {
    qsort(v, n, sizeof *v, by_name);
    for (i = 1; i < n; i++)
      if (strcmp(v[i - 1]->string, v[i]->string) == 0) *dups = 1;
  } else {
    for (i = 0; i < n / 2; i++) {
      cJSON *t = v[i];
      v[i] = v[n - 1 - i];
      v[n - 1 - i] = t;
    }
  }
  for (i = 0; i < n; i++) {
    v[i]->prev = i ? v[i - 1] : v[n - 1];
    v[i]->next = i + 1 < n ? v[i + 1] : NULL;
  }
  item->child = v[0];
  free(v);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void hash_text(const char *text, const char *want) {
  char h[65];
  int rc = esg_content_hash(text, strlen(text), h);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  FUZZ_CHECK(strcmp(h, want) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *json = (const char *)data;
  char out[65];
  memset(out, 'x', sizeof out);
  int rc = esg_content_hash(json, size, out);
  FUZZ_CHECK_RC(rc == ESG_OK || rc == ESG_EJSON, rc, NULL);

  /* the reference: what cJSON takes, then its canonical print */
  const char *end = NULL;
  cJSON *v = cJSON_ParseWithLengthOpts(json, size, &end, 0);
  if (v && end) {
    while (end < json + size && is_ws(*end)) end++;
    if (end != json + size) {
      cJSON_Delete(v);
      v = NULL;
    }
  }
  if (!v) {
    FUZZ_CHECK_RC(rc == ESG_EJSON, rc, NULL);
    FUZZ_CHECK(esg_errmsg(NULL)[0] != '\0');
    return 0;
  }
  FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  FUZZ_CHECK(strlen(out) == 64);

  int dups = 0;
  reorder(v, 1, &dups);
  char *canon = cJSON_PrintUnformatted(v);
  FUZZ_CHECK(canon != NULL);
  uint8_t bin[32];
  char hex[65];
  esg_sha256(canon, strlen(canon), bin);
  esg_hex(bin, 32, hex);
  FUZZ_CHECK(strcmp(hex, out) == 0); /* the SHA-256 of the canonical text */
  hash_text(canon, out);             /* idempotent */

  char *pretty = cJSON_Print(v); /* spacing */
  FUZZ_CHECK(pretty != NULL);
  hash_text(pretty, out);
  if (!dups) { /* key order */
    reorder(v, 0, &dups);
    char *rev = cJSON_Print(v);
    FUZZ_CHECK(rev != NULL);
    hash_text(rev, out);
    cJSON_free(rev);
  }
  cJSON_free(pretty);
  cJSON_free(canon);
  cJSON_Delete(v);
  return 0;
}
