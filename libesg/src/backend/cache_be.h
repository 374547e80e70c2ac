/*
 * Backend operations of the enrichment cache (the store tier). The cache_*.c files
 * hold the contract (freshness and staleness in cache_store.c, the oplock decision's
 * inputs in cache_json.c, the memory tier in cache_mem.c);
 * a backend only reads and writes rows of one table keyed by the cache key.
 */
#ifndef ESG_CACHE_BE_H
#define ESG_CACHE_BE_H
#include "backend/backend.h"

/* One stored cache entry. */
typedef struct esg__cache_row {
  bool negative;      /* known absent: value is NULL */
  int64_t version;
  int64_t expires;    /* fresh until (epoch ms) */
  int64_t stored;     /* when it was written (epoch ms) */
  const char *value;  /* get: points into the caller's buffer, NUL-terminated */
  size_t len;
} esg__cache_row;

struct esg__cache_ops {
  /* The store's file identity for the process-wide single-flight registry:
     the full path of the database file, or "" for a private store (":memory:"). */
  const char *(*path)(esg_store *s);
  /* Reads key[0..klen): OK (row filled; the value copied into val) | NOT_FOUND. */
  int (*get)(esg_store *s, const char *key, size_t klen, esg__buf *val, esg__cache_row *row);
  /* Writes key unconditionally. */
  int (*put)(esg_store *s, const char *key, size_t klen, const esg__cache_row *row);
  /* Writes key only if row->version is greater than the stored one: OK | STALE. Atomic. */
  int (*put_if_newer)(esg_store *s, const char *key, size_t klen, const esg__cache_row *row);
  /* Deletes key; OK whether or not it existed. */
  int (*del)(esg_store *s, const char *key, size_t klen);
  /* Deletes values with expires < value_before and negatives with expires < negative_before. */
  int (*purge)(esg_store *s, int64_t value_before, int64_t negative_before, int64_t *n);
};

#endif
