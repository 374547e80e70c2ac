/*
 * Backend operations of the latch feature. latch.c holds the contract (which
 * latch an echo consumes, what a genuine change clears); a backend only stores
 * the pending latches of each (key, side) in write order (seq increasing).
 */
#ifndef ESG_LATCH_BE_H
#define ESG_LATCH_BE_H
#include "backend/backend.h"

struct esg__latch_ops {
  /* *any = whether any latch row, expired or not, exists for (key, side) */
  int (*any)(esg_store *s, const char *key, const char *side, bool *any);
  /* appends a latch after the newest of (key, side); *seq gets its position */
  int (*add)(esg_store *s, const char *key, const char *side, const char *hash, int64_t expires, int64_t *seq);
  /* the oldest unexpired latch of (key, side) with hash: OK (*seq set) | NOT_FOUND */
  int (*match)(esg_store *s, const char *key, const char *side, const char *hash, int64_t now, int64_t *seq);
  /* the newest latch of (key, side) with hash, expired or not: OK (*seq set) | NOT_FOUND */
  int (*newest)(esg_store *s, const char *key, const char *side, const char *hash, int64_t *seq);
  /* the newest latch of (key, side), expired or not: OK (*seq set) | NOT_FOUND */
  int (*last)(esg_store *s, const char *key, const char *side, int64_t *seq);
  /* deletes the latches of (key, side) with seq in [lo, hi] */
  int (*drop)(esg_store *s, const char *key, const char *side, int64_t lo, int64_t hi);
  /* counts the unexpired latches of (key, side) */
  int (*count)(esg_store *s, const char *key, const char *side, int64_t now, int *n);
  /* deletes every expired latch */
  int (*purge)(esg_store *s, int64_t now, int64_t *n);
};
#endif
