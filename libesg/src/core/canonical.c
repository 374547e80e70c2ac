/*
 * Canonical JSON for content hashes: object keys sorted, no white space, so two
 * spellings of one state hash equal. Documents already in that form (the usual
 * case for machine-written listings) are recognised and hashed from their bytes
 * without building a tree.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "core/internal.h"

static int by_name(const void *a, const void *b) {
  return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Sorts every object's members by key, in place, so printing gives one form per document;
   -0 becomes 0 (cJSON prints "-0", and a system that writes -0 back as 0 means the same). */
static bool canonicalise(cJSON *item) {
  if (cJSON_IsNumber(item) && item->valuedouble == 0) cJSON_SetNumberValue(item, 0.0);
  if (!cJSON_IsObject(item) && !cJSON_IsArray(item)) return true;
  size_t n = 0;
  for (cJSON *c = item->child; c; c = c->next, n++)
    if (!canonicalise(c)) return false;
  if (!cJSON_IsObject(item) || n < 2) return true;
  cJSON **v = esg__malloc(n * sizeof *v);
  if (!v) return false;
  size_t i = 0;
  for (cJSON *c = item->child; c; c = c->next) v[i++] = c;
  qsort(v, n, sizeof *v, by_name);
  for (i = 0; i < n; i++) {
    v[i]->prev = i ? v[i - 1] : v[n - 1]; /* cJSON: the head's prev is the tail */
    v[i]->next = i + 1 < n ? v[i + 1] : NULL;
  }
  item->child = v[0];
  esg__free(v);
  return true;
}

/*
 * The fast path of content hashing. Listings usually serialise each entity the
 * same way, often already in canonical form: no white space, object keys in
 * order, plain strings and small integers. Such a document prints back to the
 * very same bytes, so its canonical hash is the SHA-256 of the bytes and no tree
 * needs to be built. canon_* accept exactly the documents whose cJSON canonical
 * print is byte-identical to the input (strings without escapes or control
 * characters, integers of at most 15 digits, no "-0"); anything else returns
 * false and takes the full path, which also validates.
 */
static bool canon_value(const char **p, const char *e, int depth);

static bool canon_string(const char **p, const char *e, const char **s, size_t *n) {
  const char *q = *p;
  if (q >= e || *q != '"') return false;
  const char *start = ++q;
  while (q < e && *q != '"') {
    if ((unsigned char)*q < 0x20 || *q == '\\') return false;
    q++;
  }
  if (q >= e) return false;
  *s = start;
  *n = (size_t)(q - start);
  *p = q + 1;
  return true;
}

static bool canon_number(const char **p, const char *e) {
  const char *q = *p;
  bool neg = q < e && *q == '-';
  if (neg) q++;
  const char *d = q;
  while (q < e && *q >= '0' && *q <= '9') q++;
  size_t n = (size_t)(q - d);
  if (n == 0 || n > 15 || (n > 1 && *d == '0') || (neg && n == 1 && *d == '0')) return false;
  if (q < e && (*q == '.' || *q == 'e' || *q == 'E')) return false;
  *p = q;
  return true;
}

static bool canon_lit(const char **p, const char *e, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(e - *p) < n || memcmp(*p, lit, n) != 0) return false;
  *p += n;
  return true;
}

static bool canon_value(const char **p, const char *e, int depth) {
  if (*p >= e || depth > 64) return false;
  const char *s;
  size_t n;
  switch (**p) {
    case '"': return canon_string(p, e, &s, &n);
    case 't': return canon_lit(p, e, "true");
    case 'f': return canon_lit(p, e, "false");
    case 'n': return canon_lit(p, e, "null");
    case '[':
      if (++*p < e && **p == ']') return ++*p, true;
      for (;;) {
        if (!canon_value(p, e, depth + 1) || *p >= e) return false;
        if (**p == ']') return ++*p, true;
        if (**p != ',') return false;
        ++*p;
      }
    case '{': {
      if (++*p < e && **p == '}') return ++*p, true;
      const char *prev = NULL;
      size_t prev_n = 0;
      for (;;) {
        if (!canon_string(p, e, &s, &n) || *p >= e || **p != ':') return false;
        if (prev) { /* strictly increasing, as strcmp orders them */
          int c = memcmp(prev, s, prev_n < n ? prev_n : n);
          if (c > 0 || (c == 0 && prev_n >= n)) return false;
        }
        prev = s, prev_n = n;
        ++*p;
        if (!canon_value(p, e, depth + 1) || *p >= e) return false;
        if (**p == '}') return ++*p, true;
        if (**p != ',') return false;
        ++*p;
      }
    }
    default: return canon_number(p, e);
  }
}

/* Validates content (one JSON value) and hashes its canonical form, with at most one parse. */
int esg__content_hash_bin(const char *content, size_t len, uint8_t hash[32]) {
  const char *q = content;
  if (canon_value(&q, content + len, 0) && q == content + len) {
    esg_sha256(content, len, hash);
    return ESG_OK;
  }
  unsigned nomem = esg__nomem_count();
  cJSON *v = esg__json_parse(content, len, NULL);
  if (!v) {
    return esg__nomem_count() != nomem ? ESG_ENOMEM : ESG_EJSON; /* (cJSON says NULL for both) */
  }
  char *text = canonicalise(v) ? cJSON_PrintUnformatted(v) : NULL;
  cJSON_Delete(v);
  if (!text) return ESG_ENOMEM;
  esg_sha256(text, strlen(text), hash);
  cJSON_free(text);
  return ESG_OK;
}

int esg_content_hash(const char *json, size_t len, char out[65]) {
  if (!json || !out) return esg__fail(NULL, ESG_EINVAL, "json or out is NULL");
  uint8_t h[32];
  int rc = esg__content_hash_bin(json, len, h);
  if (rc == ESG_EJSON) return esg__fail(NULL, rc, "content is not valid JSON");
  if (rc != ESG_OK) return esg__fail(NULL, rc, "out of memory hashing content");
  esg_hex(h, 32, out);
  return ESG_OK;
}
