/*
 * Backend operations of the resync feature: durable cursors, the per-source
 * listing state of snapshot diffs (key, content hash, generation last seen) and
 * the event query behind replay. resync.c holds the contract logic.
 */
#ifndef ESG_RESYNC_BE_H
#define ESG_RESYNC_BE_H
#include "backend/backend.h"

/* Called for each key of a page of unseen snapshot keys; non-zero stops. */
typedef int (*esg__snap_key_cb)(void *ud, const char *key, const uint8_t hash[32]);

struct esg__resync_ops {
  /* cursors: get points *cursor into s->result (valid until the next operation): OK | NOT_FOUND */
  int (*cursor_get)(esg_store *s, const char *name, const char **cursor);
  int (*cursor_put)(esg_store *s, const char *name, const char *cursor, int64_t now);
  int (*cursor_delete)(esg_store *s, const char *name); /* OK | NOT_FOUND */

  /* listings: the open generation of source, creating or advancing it */
  int (*snap_open)(esg_store *s, const char *source, int64_t now, int64_t *gen);
  int (*snap_close)(esg_store *s, const char *source, int64_t gen);
  /* marks key seen in gen if its hash is unchanged: OK | NOT_FOUND (absent or changed) */
  int (*snap_touch)(esg_store *s, const char *source, const char *key, const uint8_t hash[32], int64_t gen);
  /* inserts a new key: OK | DUPLICATE (exists) */
  int (*snap_insert)(esg_store *s, const char *source, const char *key, const uint8_t hash[32], int64_t gen);
  /* sets hash and gen of an existing key, *prev getting the hash it had: OK | NOT_FOUND */
  int (*snap_update)(esg_store *s, const char *source, const char *key, const uint8_t hash[32], int64_t gen,
                     uint8_t prev[32]);
  /* up to limit keys of source with generation < gen and key > after ("" = from the start), in key
     order, copied out before cb runs; *count gets how many */
  int (*snap_unseen)(esg_store *s, const char *source, int64_t gen, const char *after, int limit,
                     esg__snap_key_cb cb, void *ud, int *count);
  int (*snap_forget)(esg_store *s, const char *source, const char *key);

  /* replay: unexpired events matching the filter in (ts, id) order; rows are copied before cb */
  int (*replay)(esg_store *s, const esg_replay_filter *f, int64_t now, esg_event_cb cb, void *ud, int64_t *n);
};
#endif
