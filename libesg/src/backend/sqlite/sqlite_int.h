/*
 * Shared by the SQLite backend's files: the connection state, the prepared
 * statement cache and error mapping. One file per feature holds that feature's SQL.
 */
#ifndef ESG_SQLITE_INT_H
#define ESG_SQLITE_INT_H

#include <sqlite3.h>
#include "backend/backend.h"

#define ESG__STMT_SLOTS 128

typedef struct esg__ckpt esg__ckpt;

typedef struct esg__sq {
  sqlite3 *db;
  esg__ckpt *ckpt;            /* WAL checkpoints on a thread (sqlite_checkpoint.c); NULL: SQLite's inline ones */
  struct {
    const char *sql; /* keyed by the address of a static SQL string */
    sqlite3_stmt *stmt;
  } cache[ESG__STMT_SLOTS];
} esg__sq;

/* The connection of store s. */
#define ESG__DB(s) (((esg__sq *)(s)->db)->db)

/* The prepared statement for sql (a static string), reset and unbound, or NULL (error recorded). */
sqlite3_stmt *esg__sq_stmt(esg_store *s, const char *sql);

/* Records SQLite's error for rc (as returned by a call) and returns the esg code. */
int esg__sq_fail(esg_store *s, int rc, const char *what);

/* Runs a statement that returns no rows; SQLITE_DONE -> ESG_OK. */
int esg__sq_exec(esg_store *s, sqlite3_stmt *st, const char *what);

/* Binds text/blob, tolerating NULL for an empty blob. */
void esg__sq_bind_text(sqlite3_stmt *st, int i, const char *v);
void esg__sq_bind_blob(sqlite3_stmt *st, int i, const void *v, size_t len);

/* Moves db's WAL checkpoints to a thread of the handle's own (NULL: they stay inline). */
esg__ckpt *esg__ckpt_attach(sqlite3 *db);
/* Stops that thread; before db is closed. */
void esg__ckpt_detach(sqlite3 *db, esg__ckpt *c);

/* Each feature's operations, in its own file. */
int esg__sq_claim_get(esg_store *s, const char *key, esg__claim_row *row);
int esg__sq_claim_insert(esg_store *s, const char *key, const esg__claim_row *row);
int esg__sq_claim_replace(esg_store *s, const char *key, const esg__claim_row *row);
int esg__sq_claim_complete(esg_store *s, const char *key, int64_t token, const void *result, size_t len, int64_t now);
int esg__sq_claim_release(esg_store *s, const char *key, int64_t token, int64_t now);
int esg__sq_claim_extend(esg_store *s, const char *key, int64_t token, int64_t lease_until, int64_t now);
int esg__sq_claims_purge(esg_store *s, int64_t now, int64_t *n);

int esg__sq_event_insert(esg_store *s, const esg_stored_event *ev, int64_t now);
int esg__sq_events_by_key(esg_store *s, const char *corr_key, int64_t now, esg_event_cb cb, void *ud);
int esg__sq_event_get(esg_store *s, const char *id, int64_t now, esg_event_cb cb, void *ud);
int esg__sq_events_expired(esg_store *s, int64_t now, esg_event_cb cb, void *ud);
int esg__sq_event_delete_expired(esg_store *s, const char *id, int64_t now);
/* Keeps a connection inherited across fork() reachable, never to be used or closed. */
void esg__sq_keep_inherited(sqlite3 *db);

int esg__sq_entity_get(esg_store *s, const char *key, esg_entity *out);
int esg__sq_entity_put_if_newer(esg_store *s, const char *key, int64_t version, const char *doc, size_t len);

int esg__sq_fault_insert(esg_store *s, const esg_fault *f, int64_t *id);
int esg__sq_faults_each(esg_store *s, int64_t only_id, esg_fault_cb cb, void *ud, int *count);
int esg__sq_fault_delete(esg_store *s, int64_t id);
int esg__sq_faults_purge(esg_store *s, int64_t before, int64_t *n);

/* Schema steps kept beside each feature's SQL; sqlite.c lists them in order. */
extern const char esg__sq_faults_schema[];
extern const char esg__sq_cache_schema[];
extern const char esg__sq_latch_schema[];
extern const char esg__sq_resync_schema[];
extern const struct esg__cache_ops esg__sq_cache_ops;
extern const struct esg__latch_ops esg__sq_latch_ops;
extern const struct esg__resync_ops esg__sq_resync_ops;

#endif
