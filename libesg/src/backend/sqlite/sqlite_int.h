/*
 * Shared by the SQLite backend's files: the handle (connection, statement
 * cache, units of writes and the open group with its pending claims) and error
 * mapping. One file per feature holds that feature's SQL.
 */
#ifndef ESG_SQLITE_INT_H
#define ESG_SQLITE_INT_H

#include <sqlite3.h>
#include "backend/backend.h"

#define ESG__STMT_SLOTS 128

typedef struct esg__ckpt esg__ckpt;
typedef struct esg__pend esg__pend;
typedef struct esg__cc esg__cc;

/* A claim record as the claims table holds it. */
typedef struct esg__sq_row {
  bool done;
  const void *hash;
  size_t hash_len;
  int64_t token;
  int attempts;
  int64_t lease_until, expires;
  int64_t ttl;                /* kept so completion can restart the ttl */
  const void *result;
  size_t result_len;
} esg__sq_row;

typedef struct esg__be {
  sqlite3 *db;
  esg__err *err;              /* the store's error slot */
  esg__ckpt *ckpt;            /* WAL checkpoints on a thread (sqlite_checkpoint.c); NULL: SQLite's inline ones */
  esg_clock_fn clock;
  void *clock_ud;
  int group_ms, group_max;    /* group commit (group_ms 0 = off) */
  bool batch;                 /* a caller's batch is open */
  bool group_open;            /* a group's transaction is open */
  int group_n;                /* writes in the open group */
  int64_t group_started;
  int page_size;              /* read once, for bytes_written */
  bool expect_seen;           /* the last claim found its key: try the read first (sqlite_claims.c) */
  bool snap_insert_first;     /* the last listed key was new: try an insert first (sqlite_resync.c) */
  esg__pend *pend;            /* claims pending in the open group (sqlite_pending.c) */
  size_t pend_cap, pend_used, pend_live;
  esg__cc *cc;                /* completed claims known to this handle (sqlite_claims_cache.c); NULL: none */
  esg__buf result, doc;       /* memory behind pointers handed out */
  struct {
    const char *sql; /* keyed by the address of a static SQL string */
    sqlite3_stmt *stmt;
  } cache[ESG__STMT_SLOTS];
} esg__sq;

/* The prepared statement for sql (a static string), reset and unbound, or NULL (error recorded). */
sqlite3_stmt *esg__sq_stmt(esg__sq *q, const char *sql);

/* Records SQLite's error for rc (as returned by a call) and returns the esg code. */
int esg__sq_fail(esg__sq *q, int rc, const char *what);

/* Runs a statement that returns no rows; SQLITE_DONE -> ESG_OK. */
int esg__sq_exec(esg__sq *q, sqlite3_stmt *st, const char *what);

/* Binds text/blob, tolerating NULL for an empty blob. */
void esg__sq_bind_text(sqlite3_stmt *st, int i, const char *v);
void esg__sq_bind_blob(sqlite3_stmt *st, int i, const void *v, size_t len);

/*
 * A unit of writes (sqlite_tx.c). esg__sq_unit_begin makes the statements that
 * follow atomic together: inside a batch or an open group nothing more is
 * needed; with group commit it opens the group; otherwise, when need_tx, it
 * begins a transaction (*own = true) that esg__sq_unit_end commits (rc >= 0) or
 * rolls back. esg__sq_unit_end also counts the unit's n writes into the group
 * and commits it when due; it returns rc, or the commit's error.
 */
int esg__sq_unit_begin(esg__sq *q, bool need_tx, bool *own);
int esg__sq_unit_end(esg__sq *q, bool own, int rc, int n);
/* Runs one writing statement st (NULL: the error is recorded) as a unit of its own,
   joining a batch or the group; *changes (may be NULL) gets the rows it changed. */
int esg__sq_write(esg__sq *q, sqlite3_stmt *st, const char *what, int64_t *changes);
int esg__sq_begin(esg__sq *q);
int esg__sq_commit(esg__sq *q);
int esg__sq_rollback(esg__sq *q);
int esg__sq_flush(esg__sq *q);
int esg__sq_flush_due(esg__sq *q, int64_t now, int64_t *next);
/* Whether writes now are inside a group's transaction (pending claims apply). */
static inline bool esg__sq_in_group(const esg__sq *q) { return q->group_open && !q->batch; }

/* Moves db's WAL checkpoints to a thread of the handle's own (NULL: they stay inline). */
esg__ckpt *esg__ckpt_attach(sqlite3 *db);
/* Stops that thread; before db is closed. */
void esg__ckpt_detach(sqlite3 *db, esg__ckpt *c);
/* Keeps a connection inherited across fork() reachable, never to be used or closed. */
void esg__sq_keep_inherited(sqlite3 *db);

/* Claims pending in an open group (sqlite_pending.c). */
esg__pend *esg__pend_find(esg__sq *q, const char *key); /* NULL when not pending */
int esg__pend_add(esg__sq *q, const char *key, const esg__sq_row *row);
esg__sq_row *esg__pend_row(esg__pend *p);
void esg__pend_set(esg__pend *p, const esg__sq_row *row); /* a new row for its key, in place */
void esg__pend_drop(esg__sq *q, esg__pend *p);
int esg__pend_write_all(esg__sq *q); /* writes the in-progress rows, then forgets them all */
void esg__pend_free(esg__sq *q);
/*
 * Completed claims known to this handle (sqlite_claims_cache.c): a bounded read
 * cache that answers repeats of a completed key while no other connection has
 * committed. esg__cc_get fills row (the result copied to q->result) with the
 * completed, unexpired record of key, or returns false, leaving no record of key:
 * the table decides.
 * esg__cc_put learns a completed record (others are ignored), replacing the key's.
 * esg__cc_purged drops what a purge at now deletes; esg__cc_commit_failed forgets
 * everything (a rollback does too, through SQLite's rollback hook).
 */
void esg__cc_open(esg__sq *q); /* after the schema; without memory, the handle has none */
void esg__cc_free(esg__sq *q);
bool esg__cc_get(esg__sq *q, const char *key, int64_t now, esg__sq_row *row);
void esg__cc_put(esg__sq *q, const char *key, const esg__sq_row *row);
void esg__cc_put_completed(esg__sq *q, const char *key, const esg__sq_row *row); /* a claim of this handle's */
void esg__cc_purged(esg__sq *q, int64_t now);
void esg__cc_commit_failed(esg__sq *q);
/* The record of the handle's latest claim written to the table (row, as written), so
   that its completion by the statement is learnt without reading the row back; an
   extension by its token updates it. */
void esg__cc_claimed(esg__sq *q, const char *key, const esg__sq_row *row);
void esg__cc_extended(esg__sq *q, const char *key, int64_t token, int64_t lease_until);
void esg__cc_completed(esg__sq *q, const char *key, int64_t token, const void *result, size_t len, int64_t now);
/* Writes a whole claim row, replacing any (sqlite_claims.c). */
int esg__sq_claim_replace(esg__sq *q, const char *key, const esg__sq_row *row);

/* Each feature's operations, in its own file. */
int esg__sq_claim(esg__sq *q, const esg__claim_req *r, esg__claim_row *row);
int esg__sq_claim_complete(esg__sq *q, const char *key, int64_t token, const void *result, size_t len, int64_t now);
int esg__sq_claim_release(esg__sq *q, const char *key, int64_t token, int64_t now);
int esg__sq_claim_extend(esg__sq *q, const char *key, int64_t token, int64_t lease_until, int64_t now);
int esg__sq_claims_complete(esg__sq *q, esg__completion *c, size_t n, int64_t now);
int esg__sq_claims_purge(esg__sq *q, int64_t now, int64_t *n);

int esg__sq_event_put(esg__sq *q, const esg_stored_event *ev, int64_t now);
int esg__sq_events_by_key(esg__sq *q, const char *corr_key, int64_t now, esg_event_cb cb, void *ud);
int esg__sq_event_get(esg__sq *q, const char *id, int64_t now, esg_event_cb cb, void *ud);
int esg__sq_events_expired(esg__sq *q, int64_t now, esg_event_cb cb, void *ud);
int esg__sq_event_delete_expired(esg__sq *q, const char *id, int64_t now);

int esg__sq_entity_get(esg__sq *q, const char *key, esg_entity *out);
int esg__sq_entity_put_if_newer(esg__sq *q, const char *key, int64_t version, const char *doc, size_t len);

int esg__sq_fault_put(esg__sq *q, const esg_fault *f, int64_t *id);
int esg__sq_faults_each(esg__sq *q, int64_t only_id, esg_fault_cb cb, void *ud, int *count);
int esg__sq_fault_delete(esg__sq *q, int64_t id);
int esg__sq_faults_purge(esg__sq *q, int64_t before, int64_t *n);

int esg__sq_latch_set(esg__sq *q, const char *key, const char *side, const char *hash, int64_t expires,
                      int max_pending);
int esg__sq_latch_consume(esg__sq *q, const char *key, const char *side, const char *hash, int64_t now);
int esg__sq_latch_cancel(esg__sq *q, const char *key, const char *side, const char *hash);
int esg__sq_latch_count(esg__sq *q, const char *key, const char *side, int64_t now, int *n);
int esg__sq_latches_purge(esg__sq *q, int64_t now, int64_t *n);

const char *esg__sq_identity(esg__sq *q);
int esg__sq_cache_get(esg__sq *q, const char *key, size_t klen, esg__buf *val, esg__cache_row *row);
extern const char esg__sq_outbox_schema[];
int esg__sq_outbox_put(esg__sq *q, const char *key, const void *data, size_t len, int64_t now);
int esg__sq_outbox_get(esg__sq *q, const char *key, esg__buf *out);
int esg__sq_outbox_delete(esg__sq *q, const char *key);
int esg__sq_outbox_purge(esg__sq *q, int64_t now);
int esg__sq_cache_put(esg__sq *q, const char *key, size_t klen, const esg__cache_row *row);
int esg__sq_cache_put_if_newer(esg__sq *q, const char *key, size_t klen, const esg__cache_row *row);
int esg__sq_cache_delete(esg__sq *q, const char *key, size_t klen);
int esg__sq_cache_purge(esg__sq *q, int64_t value_before, int64_t negative_before, int64_t *n);

int esg__sq_cursor_get(esg__sq *q, const char *name, const char **cursor);
int esg__sq_cursor_put(esg__sq *q, const char *name, const char *cursor, int64_t now);
int esg__sq_cursor_delete(esg__sq *q, const char *name);
int esg__sq_cursor_advance(esg__sq *q, const char *name, const char *expected, const char *next, int64_t now);
int esg__sq_snap_open(esg__sq *q, const char *source, int64_t now, int64_t *gen);
int esg__sq_snap_close(esg__sq *q, const char *source, int64_t gen);
int esg__sq_snap_see(esg__sq *q, const char *source, const char *key, const uint8_t hash[32], int64_t gen,
                     uint8_t prev[32]);
int esg__sq_snap_unseen(esg__sq *q, const char *source, int64_t gen, const char *after, int limit,
                        esg__snap_key_cb cb, void *ud, int *count);
int esg__sq_snap_forget(esg__sq *q, const char *source, const char *key);
int esg__sq_replay(esg__sq *q, const esg_replay_filter *f, int64_t now, esg_event_cb cb, void *ud, int64_t *n);

/* Schema steps kept beside each feature's SQL; sqlite.c lists them in order. */
extern const char esg__sq_faults_schema[];
extern const char esg__sq_cache_schema[];
extern const char esg__sq_latch_schema[];
extern const char esg__sq_resync_schema[];

#endif
