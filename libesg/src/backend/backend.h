/*
 * The storage backend interface. Features (claims.c, eventlog.c, entities.c)
 * hold the contract logic and call only these operations; each backend holds
 * all of its query language. SQLite (sqlite*.c) is the embedded default.
 *
 * Every operation returns an esg status and records detail on s->err.
 * Pointers a backend hands out stay valid until the next operation on s.
 */
#ifndef ESG_BACKEND_H
#define ESG_BACKEND_H

#include "core/internal.h"

/* One claim record. */
typedef struct esg__claim_row {
  bool done;                 /* completed (terminal until expiry) or in progress */
  const void *hash;
  size_t hash_len;
  int64_t token;
  int attempts;
  int64_t lease_until;
  int64_t expires;
  int64_t ttl;               /* kept so completion can restart the ttl */
  const void *result;
  size_t result_len;
} esg__claim_row;

typedef struct esg__backend {
  const char *name;
  int (*open)(esg_store *s, const char *path, const esg_store_opts *opts);
  void (*close)(esg_store *s);
  int (*schema_version)(esg_store *s);
  /* write transactions: begin takes the write lock at once */
  int (*begin)(esg_store *s);
  int (*commit)(esg_store *s);
  int (*rollback)(esg_store *s);

  /* claims */
  int (*claim_get)(esg_store *s, const char *key, esg__claim_row *row);   /* OK | NOT_FOUND */
  int (*claim_insert)(esg_store *s, const char *key, const esg__claim_row *row); /* OK | DUPLICATE (key exists) */
  int (*claim_replace)(esg_store *s, const char *key, const esg__claim_row *row);
  /* these match on token, an in-progress record and expires > now: OK | ETOKEN */
  int (*claim_complete)(esg_store *s, const char *key, int64_t token, const void *result, size_t len, int64_t now);
  int (*claim_release)(esg_store *s, const char *key, int64_t token, int64_t now);
  int (*claim_extend)(esg_store *s, const char *key, int64_t token, int64_t lease_until, int64_t now);
  int (*claims_purge)(esg_store *s, int64_t now, int64_t *n);

  /* event log; "unexpired" means expires == 0 or expires > now */
  int (*event_insert)(esg_store *s, const esg_stored_event *ev, int64_t now); /* OK | DUPLICATE */
  int (*events_by_key)(esg_store *s, const char *corr_key, int64_t now, esg_event_cb cb, void *ud);
  int (*event_get)(esg_store *s, const char *id, int64_t now, esg_event_cb cb, void *ud); /* OK | NOT_FOUND */
  int (*events_expired)(esg_store *s, int64_t now, esg_event_cb cb, void *ud);
  int (*event_delete_expired)(esg_store *s, const char *id, int64_t now); /* NOT_FOUND: stored afresh since, kept */

  /* entities; doc NULL writes a tombstone */
  int (*entity_get)(esg_store *s, const char *key, esg_entity *out);       /* OK | NOT_FOUND */
  int (*entity_put_if_newer)(esg_store *s, const char *key, int64_t version, const char *doc, size_t len); /* OK | STALE */

  /* faults */
  int (*fault_insert)(esg_store *s, const esg_fault *f, int64_t *id);
  int (*faults_each)(esg_store *s, int64_t only_id, esg_fault_cb cb, void *ud, int *count); /* only_id 0 = all */
  int (*fault_delete)(esg_store *s, int64_t id);                             /* OK | NOT_FOUND */
  int (*faults_purge)(esg_store *s, int64_t before, int64_t *n);

  /* Later features keep their operations in their own tables of functions,
     declared in their own *_be.h, so each can grow without touching this one. */
  const struct esg__cache_ops *cache;
  const struct esg__latch_ops *latch;
  const struct esg__resync_ops *resync;
} esg__backend;

extern const esg__backend esg__sqlite_backend;

/* Claims pending in an open group (claims_pending.c). */
typedef struct esg__pend esg__pend;
esg__pend *esg__pend_find(esg_store *s, const char *key); /* NULL when not pending */
int esg__pend_add(esg_store *s, const char *key, const esg__claim_row *row);
esg__claim_row *esg__pend_row(esg__pend *p);
void esg__pend_drop(esg_store *s, esg__pend *p);
int esg__pend_write_all(esg_store *s); /* writes the in-progress rows, then forgets them all */
void esg__pend_free(esg_store *s);

#endif
