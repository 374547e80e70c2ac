/*
 * The storage seam. A backend is one table of operations (esg__backend) that
 * are decisions: each contract outcome of DESIGN.md is one operation, atomic by
 * itself, so the store layer above never reads a row to decide what to write and
 * a backend with row locks is as correct as one with a database lock.
 *
 * An operation takes the backend's own handle (esg__be: its connection, its
 * statements, its group state), never the store. It records detail text on the
 * error slot it was opened with and returns an esg status. Pointers it hands out
 * stay valid until the next operation on the handle. The store layer checks the
 * calling process (fork) and passes the time; a backend decides nothing from
 * the store's state.
 *
 * Adding a backend adds a folder backend/<name>/ and one line in backend.c.
 */
#ifndef ESG_BACKEND_H
#define ESG_BACKEND_H

#include "core/internal.h"

#define ESG__BACKEND_VERSION 1

/* A backend's handle; each backend defines the struct in its own folder. */
typedef struct esg__be esg__be;

/* What a backend is opened with. */
typedef struct esg__be_opts {
  const char *target;        /* the URI less the scheme: a path, ":memory:", a conninfo */
  const char *uri;           /* the whole URI, for messages */
  esg_durability durability;
  int busy_timeout_ms;       /* 0 = the backend's default */
  int group_ms, group_max;   /* group commit (group_ms 0 = off; group_max > 0) */
  esg_clock_fn clock;        /* the store's clock, for the group's age */
  void *clock_ud;
  esg__err *err;             /* where every operation records its detail text */
} esg__be_opts;

/* A claim request: the caller's key and payload hash, the times a new or taken-over
   record gets, and the fencing token it gets. */
typedef struct esg__claim_req {
  const char *key;
  const void *hash;
  size_t hash_len;           /* 0: no mismatch check */
  int64_t now, lease_until, expires, ttl, token;
} esg__claim_req;

/* The claim record an operation answers with. */
typedef struct esg__claim_row {
  bool done;                 /* completed (terminal until expiry) or in progress */
  int64_t token;
  int attempts;
  int64_t lease_until;
  int64_t expires;
  const void *result;        /* done: the stored result (NULL: none) */
  size_t result_len;
} esg__claim_row;

/* One completion of a batch (claims_complete). */
typedef struct esg__completion {
  const char *key;
  int64_t token;
  const void *result;        /* as esg_complete's */
  size_t len;
  int rc;                    /* out: what esg_complete would have returned */
} esg__completion;

/* One stored cache entry. */
typedef struct esg__cache_row {
  bool negative;             /* known absent: value is NULL */
  int64_t version;
  int64_t expires;           /* fresh until (epoch ms) */
  int64_t stored;            /* when it was written (epoch ms) */
  const char *value;         /* get: points into the caller's buffer, NUL-terminated */
  size_t len;
} esg__cache_row;

/* Called for each key of a page of unseen snapshot keys; non-zero stops. */
typedef int (*esg__snap_key_cb)(void *ud, const char *key, const uint8_t hash[32]);

/* What snap_see found for a listed key. */
enum { ESG__SNAP_UNCHANGED = 0, ESG__SNAP_CREATED = 1, ESG__SNAP_UPDATED = 2 };

typedef struct esg__backend {
  unsigned version;          /* ESG__BACKEND_VERSION */
  const char *name;

  /* ---- the handle */
  int (*open)(esg__be **out, const esg__be_opts *o); /* on failure *out may be set: close it */
  /* inherited: the handle came from another process (fork); write nothing, free what is ours */
  void (*close)(esg__be *b, bool inherited);
  int (*schema_version)(esg__be *b);
  /* The store's identity for the process-wide single-flight registry of the cache:
     the same text for every handle on one database, "" for a private one. */
  const char *(*identity)(esg__be *b);
  /* Bytes this handle has written to the store so far (0: not known): the write volume
     that `esg run` reports per event. */
  uint64_t (*bytes_written)(esg__be *b);

  /* ---- units of writes. A batch (esg_store_begin) holds every operation in one
     transaction until commit or rollback. Outside one, each operation is atomic by
     itself, and with group commit it joins the open group (opening one), which
     commits once group_ms old or group_max writes: checked by flush_due, which the
     store calls on every call, reads included. */
  int (*begin)(esg__be *b);
  int (*commit)(esg__be *b);
  int (*rollback)(esg__be *b);
  int (*flush)(esg__be *b); /* commits the open group now, if any */
  /* commits the open group if due at now; *next = when the group still open is due, 0 if none */
  int (*flush_due)(esg__be *b, int64_t now, int64_t *next);

  /* ---- claims. claim decides: ESG_NEW (absent, expired, or a lease that ran out: taken
     over with attempts + 1 and r->token), ESG_DUPLICATE (completed: row has the
     result), ESG_BUSY (a running lease), ESG_EMISMATCH (both hashes given and differ;
     no text recorded). row tells the record as it stands after the decision. */
  int (*claim)(esg__be *b, const esg__claim_req *r, esg__claim_row *row);
  /* by token on an unexpired record in progress: OK | ETOKEN (no text recorded) */
  int (*claim_complete)(esg__be *b, const char *key, int64_t token, const void *result, size_t len, int64_t now);
  int (*claim_release)(esg__be *b, const char *key, int64_t token, int64_t now);
  int (*claim_extend)(esg__be *b, const char *key, int64_t token, int64_t lease_until, int64_t now);
  /* n completions as n claim_complete in one unit; entries whose rc is not ESG_OK on entry
     (refused arguments) are skipped (see store/claims.c for what each rc says) */
  int (*claims_complete)(esg__be *b, esg__completion *c, size_t n, int64_t now);
  int (*claims_purge)(esg__be *b, int64_t now, int64_t *n);

  /* ---- event log; "unexpired" means expires == 0 or expires > now */
  int (*event_put)(esg__be *b, const esg_stored_event *ev, int64_t now); /* OK | DUPLICATE: stored once per id */
  int (*events_by_key)(esg__be *b, const char *corr_key, int64_t now, esg_event_cb cb, void *ud);
  int (*event_get)(esg__be *b, const char *id, int64_t now, esg_event_cb cb, void *ud); /* OK | NOT_FOUND */
  int (*events_expired)(esg__be *b, int64_t now, esg_event_cb cb, void *ud);
  int (*event_delete_expired)(esg__be *b, const char *id, int64_t now); /* NOT_FOUND: stored afresh since, kept */

  /* ---- entities; doc NULL writes a tombstone */
  int (*entity_get)(esg__be *b, const char *key, esg_entity *out);         /* OK | NOT_FOUND */
  int (*entity_put_if_newer)(esg__be *b, const char *key, int64_t version, const char *doc, size_t len); /* OK | STALE */

  /* ---- faults */
  int (*fault_put)(esg__be *b, const esg_fault *f, int64_t *id);
  int (*faults_each)(esg__be *b, int64_t only_id, esg_fault_cb cb, void *ud, int *count); /* only_id 0 = all */
  int (*fault_delete)(esg__be *b, int64_t id);                               /* OK | NOT_FOUND */
  int (*faults_purge)(esg__be *b, int64_t before, int64_t *n);

  /* ---- latches of (key, side), in write order. latch_set appends one and keeps at
     most max_pending (dropping the oldest). latch_consume decides one reported change:
     ESG_LATCH_ECHO when an unexpired latch has its hash (the newest such latch and every
     older one are consumed: a side reports in order, so the states before the one it
     reports were coalesced or lost), else ESG_LATCH_GENUINE (the newest latch is dropped:
     the change supersedes it). See docs/latching.md. */
  int (*latch_set)(esg__be *b, const char *key, const char *side, const char *hash, int64_t expires,
                   int max_pending);
  int (*latch_consume)(esg__be *b, const char *key, const char *side, const char *hash, int64_t now);
  int (*latch_cancel)(esg__be *b, const char *key, const char *side, const char *hash); /* the newest: OK | NOT_FOUND */
  int (*latch_count)(esg__be *b, const char *key, const char *side, int64_t now, int *n);
  int (*latches_purge)(esg__be *b, int64_t now, int64_t *n);

  /* ---- cache (the store tier), keyed by key[0..klen) */
  /* outbox: a rendered request under its claim's key, sent again byte for byte */
  int (*outbox_put)(esg__be *b, const char *key, const void *data, size_t len, int64_t now); /* replaces */
  int (*outbox_get)(esg__be *b, const char *key, esg__buf *out);                              /* OK | NOT_FOUND */
  int (*outbox_delete)(esg__be *b, const char *key);
  int (*outbox_purge)(esg__be *b, int64_t now); /* the rows of the claims a claims purge at now deletes */

  int (*cache_get)(esg__be *b, const char *key, size_t klen, esg__buf *val, esg__cache_row *row); /* OK | NOT_FOUND */
  int (*cache_put)(esg__be *b, const char *key, size_t klen, const esg__cache_row *row);
  int (*cache_put_if_newer)(esg__be *b, const char *key, size_t klen, const esg__cache_row *row); /* OK | STALE */
  int (*cache_delete)(esg__be *b, const char *key, size_t klen);
  /* deletes values with expires < value_before and negatives with expires < negative_before */
  int (*cache_purge)(esg__be *b, int64_t value_before, int64_t negative_before, int64_t *n);

  /* ---- cursors: get points *cursor at the handle's memory: OK | NOT_FOUND */
  int (*cursor_get)(esg__be *b, const char *name, const char **cursor);
  int (*cursor_put)(esg__be *b, const char *name, const char *cursor, int64_t now);
  int (*cursor_delete)(esg__be *b, const char *name); /* OK | NOT_FOUND */
  /* Inside a batch: moves cursor name from expected (NULL: none stored) to next (NULL:
     left as it is), holding it to the batch's end: OK | BUSY (it is no longer expected) */
  int (*cursor_advance)(esg__be *b, const char *name, const char *expected, const char *next, int64_t now);

  /* ---- snapshot listings of a source: the open generation, creating or advancing it */
  int (*snap_open)(esg__be *b, const char *source, int64_t now, int64_t *gen);
  int (*snap_close)(esg__be *b, const char *source, int64_t gen);
  /* records key seen in gen with hash: ESG__SNAP_CREATED, ESG__SNAP_UPDATED (prev gets the
     hash it had) or ESG__SNAP_UNCHANGED, or an error (< 0) */
  int (*snap_see)(esg__be *b, const char *source, const char *key, const uint8_t hash[32], int64_t gen,
                  uint8_t prev[32]);
  /* up to limit keys of source with generation < gen and key > after ("" = from the
     start), in key order, copied out before cb runs; *count gets how many */
  int (*snap_unseen)(esg__be *b, const char *source, int64_t gen, const char *after, int limit, esg__snap_key_cb cb,
                     void *ud, int *count);
  int (*snap_forget)(esg__be *b, const char *source, const char *key);

  /* ---- replay: unexpired events matching the filter in (ts, id) order; rows copied before cb */
  int (*replay)(esg__be *b, const esg_replay_filter *f, int64_t now, esg_event_cb cb, void *ud, int64_t *n);
} esg__backend;

/* The backend for uri and the target it names (what follows the scheme), or NULL with
   the error recorded on err (an unknown scheme names the schemes built in). */
const esg__backend *esg__backend_for(const char *uri, const char **target, esg__err *err);

#endif
