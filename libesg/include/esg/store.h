/*
 * The store: one database behind a backend (SQLite is the embedded default),
 * and the micro event store built on it: claims, the event log, entities.
 *
 * One store handle per thread. Many processes on one host may open the same file;
 * claims stay atomic across all of them.
 */
#ifndef ESG_STORE_H
#define ESG_STORE_H

#include "esg/common.h"
#include "esg/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct esg_store esg_store;

/** Durability of a commit; see docs/concepts.md "Durability". */
typedef enum esg_durability {
  ESG_DURABILITY_NORMAL = 0, /* WAL + synchronous=NORMAL: survives a process crash;
                                a power loss may lose the last commits */
  ESG_DURABILITY_FULL = 1    /* WAL + synchronous=FULL: survives power loss too */
} esg_durability;

/** Options for esg_store_open: start from ESG_STORE_OPTS_INIT (or pass NULL); zero fields mean the defaults. */
typedef struct esg_store_opts {
  size_t size;               /* sizeof(esg_store_opts): start from ESG_STORE_OPTS_INIT */
  esg_durability durability;
  int busy_timeout_ms;       /* wait for another process's lock; 0 = 5000 */
  esg_clock_fn clock;        /* NULL = esg_clock_real */
  void *clock_ud;
  /* Group commit: when group_commit_ms > 0, writes accumulate in one open
     transaction that is committed once it is group_commit_ms old (checked at each
     call), after group_commit_max writes (0 = 1000), on esg_store_flush or on
     close. A crash loses at most the uncommitted group: claims taken or completed
     in it are as if never made, so their events are processed again (at least
     once, never lost). Other processes wait for the group's lock meanwhile. */
  int group_commit_ms;
  int group_commit_max;
} esg_store_opts;
#define ESG_STORE_OPTS_INIT {.size = sizeof(esg_store_opts)}

/**
 * Opens (creating if needed) the store at path, or a private in-memory store for
 * ":memory:". Applies pending schema migrations. On success *out is the handle.
 * On failure *out is NULL, the code is returned and the detail is in
 * esg_errmsg(NULL) (ESG_ESCHEMA if the file was written by a newer libesg).
 * Blocks on file I/O and, up to the busy timeout, on other processes' locks.
 */
ESG_API int esg_store_open(esg_store **out, const char *path, const esg_store_opts *opts);

/**
 * Closes the store. First the handles still open on it are detached: an egress engine
 * cancels what it has queued or on the wire (each delivery's callback runs with
 * ESG_EGRESS_CANCELLED and its claim is released), a listing (esg_snapshot) is abandoned
 * with its open batch rolled back, a cache lets go of the store (its memory tier is
 * dropped). Each stays a valid handle whose calls return ESG_ESTATE ("its store was
 * closed") until its own close frees it. Then an open group is committed and an open
 * batch (esg_store_begin without commit) is rolled back, as a crash would.
 * Returns ESG_OK, or the error of the group's final commit (the group is then lost; the
 * detail in esg_errmsg(NULL)): the store is closed and freed either way. The one
 * exception: called from a callback of a call running on this store (the clock, an
 * event or fault callback, a sink, a loader, an egress callback of an engine on it), it
 * returns ESG_ESTATE and closes nothing. In a child of fork() it frees the handle and
 * writes nothing. NULL is fine (ESG_OK).
 */
ESG_API int esg_store_close(esg_store *s);

/** Now, as the store's clock reads it (epoch ms). */
ESG_API int64_t esg_store_now(esg_store *s);

/** The backend's name ("sqlite"). */
ESG_API const char *esg_store_backend(const esg_store *s);

/** The schema version of the open store. */
ESG_API int esg_store_schema_version(esg_store *s);

/**
 * The bytes this handle has written to the store since it was opened (0 if the backend
 * cannot tell). SQLite: the WAL frames its commits appended (a page and a 24-byte header
 * each; checkpoints copy them once more into the database file).
 */
ESG_API uint64_t esg_store_bytes_written(esg_store *s);

/**
 * Batches: every call between esg_store_begin and esg_store_commit runs in one
 * transaction, durable only at commit; esg_store_rollback undoes them all.
 * Nesting is an error (ESG_ESTATE). An open group commit is flushed first.
 */
ESG_API int esg_store_begin(esg_store *s);
ESG_API int esg_store_commit(esg_store *s);
ESG_API int esg_store_rollback(esg_store *s);

/** Commits the open group-commit transaction now, if any. ESG_OK when nothing is open. */
ESG_API int esg_store_flush(esg_store *s);

/**
 * For event loops that go idle: commits the open group if it is due (group_commit_ms
 * old by the store's clock, or group_commit_max writes), as any call on the store
 * would. *next_ms (may be NULL) gets when the group still open becomes due, in the
 * store's clock (epoch ms), or 0 when no group is open after the call: a loop can
 * sleep exactly until then. ESG_OK, or the commit's error (the group is then lost).
 */
ESG_API int esg_store_flush_due(esg_store *s, int64_t *next_ms);

/* ---------------------------------------------------------------- claims -- */

/** Largest key, in bytes, for claims, events, entities. */
#define ESG_KEY_MAX 1024
/** Largest payload hash for a claim, in bytes. */
#define ESG_HASH_MAX 64

/** What a claim call reports. Strings and result point into the store: valid until the next call on it. */
typedef struct esg_claim_info {
  int64_t token;        /* fencing token: pass to complete/release (when ESG_NEW) */
  int attempts;         /* 1 on the first claim, raised at each lease takeover */
  int64_t lease_until;  /* when the in-progress lease runs out */
  int64_t expires;      /* when the record stops counting */
  const void *result;   /* ESG_DUPLICATE: the stored result (may be NULL) */
  size_t result_len;
} esg_claim_info;

/**
 * Claims key for the caller. hash[0..hash_len) identifies the payload (e.g. the
 * SHA-256 of the event; hash_len 0 disables the mismatch check); lease_ms is how
 * long the caller may work before another may take over; ttl_ms how long the
 * record counts (from the claim, then from completion). Returns:
 *   ESG_NEW        the caller owns the key: out->token, out->attempts;
 *   ESG_DUPLICATE  already completed: out->result holds the stored result;
 *   ESG_BUSY       another owner's lease is running: out->lease_until says until when;
 *   ESG_EMISMATCH  the key was used with another payload hash (an error);
 *   or another error. Atomic across threads and processes sharing the store.
 * out may be NULL. Blocks on the store (up to the busy timeout).
 */
ESG_API int esg_claim(esg_store *s, const char *key, const void *hash, size_t hash_len,
                      int64_t lease_ms, int64_t ttl_ms, esg_claim_info *out);

/**
 * Like esg_claim, but while the answer is ESG_BUSY polls until the holder
 * completes, releases or loses its lease, or wait_ms passes (then ESG_BUSY).
 * Sleeps between polls (real time, up to 50 ms each).
 */
ESG_API int esg_claim_wait(esg_store *s, const char *key, const void *hash, size_t hash_len,
                           int64_t lease_ms, int64_t ttl_ms, int64_t wait_ms, esg_claim_info *out);

/**
 * Completes the claim held with token, storing result[0..len) (may be NULL/0)
 * to be returned to later duplicates. The record counts for its ttl from now.
 * ESG_OK, or ESG_ETOKEN if token no longer owns key (lease taken over, released,
 * completed or expired): then nothing is written.
 */
ESG_API int esg_complete(esg_store *s, const char *key, int64_t token, const void *result, size_t len);

/** Deletes the in-progress claim held with token so the work can be retried. ESG_OK or ESG_ETOKEN. */
ESG_API int esg_release(esg_store *s, const char *key, int64_t token);

/** Extends the lease of the claim held with token to now + lease_ms. ESG_OK or ESG_ETOKEN. */
ESG_API int esg_claim_extend(esg_store *s, const char *key, int64_t token, int64_t lease_ms);

/** Deletes expired claim records; *n (if not NULL) gets how many. */
ESG_API int esg_claims_purge(esg_store *s, int64_t *n);

/* ------------------------------------------------------------- event log -- */

/** A stored event as handed to callbacks; pointers valid only during the callback. */
typedef struct esg_stored_event {
  const char *id;
  const char *type;
  int64_t timestamp;
  const char *corr_key;   /* correlation key it was stored under */
  const char *json;       /* the envelope */
  size_t json_len;
  int64_t expires;        /* 0 = never */
} esg_stored_event;

/** Called once per event; return 0 to go on, non-zero to stop (the call then returns ESG_ECALLBACK). */
typedef int (*esg_event_cb)(void *ud, const esg_stored_event *ev);

/**
 * Stores ev once under correlation key corr_key (NULL = the event's
 * partitionKey, or its id if it has none), to expire ttl_ms from now (0 = never).
 * ESG_OK when stored, ESG_DUPLICATE when an event with this id is already stored
 * (nothing is written).
 */
ESG_API int esg_event_put(esg_store *s, const esg_event *ev, const char *corr_key, int64_t ttl_ms);

/** Calls cb for each unexpired event stored under corr_key, in (timestamp, id) order. */
ESG_API int esg_events_by_key(esg_store *s, const char *corr_key, esg_event_cb cb, void *ud);

/** Looks up one unexpired event by id: ESG_OK (cb called once) or ESG_NOT_FOUND. */
ESG_API int esg_event_get(esg_store *s, const char *id, esg_event_cb cb, void *ud);

/**
 * Deletes expired events. If cb is not NULL it is called first for each, with an
 * `<type>-expired` event built by the library: id UUIDv5(ESG_UUID_NS_EVENT,
 * "<id>/expired") (stable across retries), type "<type>-expired", timestamp its
 * expiry, the same partitionKey, and the original envelope under "expired". An
 * event whose callback fails is kept for the next purge. *n gets how many were
 * deleted.
 */
ESG_API int esg_events_purge(esg_store *s, esg_event_cb cb, void *ud, int64_t *n);

/**
 * A correlation rule's predicate over the unexpired events of one key, given in
 * (timestamp, id) order: return 1 when the rule matches, 0 when not, negative to
 * fail the evaluation (ESG_ECALLBACK).
 */
typedef int (*esg_rule_fn)(void *ud, const esg_stored_event *events, size_t n);

/**
 * Evaluates rule over the events stored under corr_key. When it matches, the
 * higher-order event {"id":"<corr_key>.<rule>","type":"<rule>","timestamp":<newest
 * event's>,"partitionKey":"<corr_key>","triggers":[ids...]} is put into the event
 * log under corr_key (ttl_ms as esg_event_put) and, only the first time, handed to
 * emit (may be NULL). Its deterministic id makes the rule fire once per key however
 * often it is evaluated. Returns ESG_OK (fired now), ESG_DUPLICATE (fired before),
 * ESG_NOT_FOUND (did not match), or an error.
 */
ESG_API int esg_correlate(esg_store *s, const char *corr_key, const char *rule, esg_rule_fn pred, void *pred_ud,
                          int64_t ttl_ms, esg_event_cb emit, void *emit_ud);

/* -------------------------------------------------------------- entities -- */

/** An entity as stored; doc points into the store, valid until the next call. */
typedef struct esg_entity {
  int64_t version;
  int deleted;        /* 1 for a tombstone (doc is NULL) */
  const char *doc;
  size_t doc_len;
} esg_entity;

/**
 * Inverse optimistic lock: stores doc (a JSON object) as key's state at version
 * only if version is greater than the stored one (tombstones included).
 * ESG_OK when applied, ESG_STALE when not (a normal outcome), ESG_EJSON for a doc
 * that is not a JSON object (nothing written).
 */
ESG_API int esg_entity_upsert(esg_store *s, const char *key, int64_t version, const char *doc, size_t len);

/** Reads key: ESG_OK (out filled; out->deleted for a tombstone) or ESG_NOT_FOUND. */
ESG_API int esg_entity_get(esg_store *s, const char *key, esg_entity *out);

/** Deletes key at version, leaving a tombstone so an older update cannot revive it. ESG_OK or ESG_STALE. */
ESG_API int esg_entity_delete(esg_store *s, const char *key, int64_t version);

/* ---------------------------------------------------------------- faults -- */

/**
 * A fault record: an event that could not be handled (delivery exhausted or
 * refused, a script error...). Strings point into the store or the caller's
 * memory; in callbacks they are valid only during the call.
 */
typedef struct esg_fault {
  int64_t id;               /* assigned by esg_fault_record, increasing */
  const char *event_id;     /* the event's id (required) */
  const char *stage;        /* where it failed, e.g. "deliver", "transform" (required) */
  const char *error;        /* what went wrong (required) */
  int http_status;          /* the last HTTP status, 0 if none */
  int attempts;             /* how many attempts were made */
  int64_t first_attempt;    /* epoch ms; 0 = now */
  int64_t last_attempt;     /* epoch ms; 0 = now */
  const char *event;        /* the event's JSON so it can be resubmitted (may be NULL) */
  size_t event_len;
} esg_fault;

/** Called once per fault; return 0 to go on, non-zero to stop (the call then returns ESG_ECALLBACK). */
typedef int (*esg_fault_cb)(void *ud, const esg_fault *f);

/** Records a fault; *id (if not NULL) gets its id. ESG_EINVAL names a missing field; nothing is written then. */
ESG_API int esg_fault_record(esg_store *s, const esg_fault *f, int64_t *id);

/** Calls cb for each fault in id order (oldest first). */
ESG_API int esg_faults_list(esg_store *s, esg_fault_cb cb, void *ud);

/** Calls cb for fault id: ESG_OK or ESG_NOT_FOUND. */
ESG_API int esg_fault_get(esg_store *s, int64_t id, esg_fault_cb cb, void *ud);

/** Deletes fault id (e.g. once resubmitted and delivered): ESG_OK or ESG_NOT_FOUND. */
ESG_API int esg_fault_delete(esg_store *s, int64_t id);

/** Deletes every fault whose last attempt is older than before_ms (epoch ms; INT64_MAX = all); *n gets how many. */
ESG_API int esg_faults_purge(esg_store *s, int64_t before_ms, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif
