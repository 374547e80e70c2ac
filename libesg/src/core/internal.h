/*
 * What the parts of libesg share internally: the error slot every handle starts
 * with, the store's layout, and small helpers. Nothing here is public.
 */
#ifndef ESG_INTERNAL_H
#define ESG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include "esg.h"

/* Every handle starts with this, so esg_errmsg can read any handle's text. */
typedef struct esg__err {
  char msg[512];
} esg__err;

/* Records a formatted detail text on handle err (NULL: the thread's slot) and returns code. */
int esg__fail(esg__err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The thread-local slot for calls without a handle. */
esg__err *esg__tls_err(void);

/* FNV-1a of a string: the hash of the library's small in-memory tables (pending
   claims, egress lanes, a batch's keys, the HTTP loader's validators). */
uint64_t esg__fnv1a(const char *s);

/* t + d in milliseconds, held at INT64_MAX / INT64_MIN instead of wrapping: a duration
   of "forever" (INT64_MAX, or a huge Retry-After) must stay in the future. */
static inline int64_t esg__time_add(int64_t t, int64_t d) {
  int64_t r;
  if (__builtin_add_overflow(t, d, &r)) return d > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

/* Checks a key: non-NULL, non-empty, at most ESG_KEY_MAX bytes. */
int esg__check_key(esg__err *err, const char *what, const char *key);

/* A growable byte buffer owned by its holder. */
typedef struct esg__buf {
  char *data;
  size_t len, cap;
} esg__buf;
int esg__buf_set(esg__buf *b, const void *data, size_t len); /* copies, NUL-terminates */
void esg__buf_free(esg__buf *b);

struct esg__backend;

struct esg_store {
  esg__err err;                 /* first: see esg__err */
  const struct esg__backend *be;
  void *db;                     /* the backend's connection state */
  esg_clock_fn clock;
  void *clock_ud;
  int group_ms, group_max;      /* group commit settings; group_ms 0 = off */
  bool batch;                   /* inside esg_store_begin .. commit */
  bool group_open;              /* a group-commit transaction is open */
  int group_n;                  /* writes in the open group */
  int64_t group_started;
  bool expect_seen;             /* the last claim found its key: try the read first (claims.c) */
  struct esg__pend *pend;       /* claims pending in the open group (claims_pending.c) */
  size_t pend_cap, pend_used, pend_live;
  uint64_t rng;                 /* xorshift state for fencing tokens */
  esg__buf result, doc;         /* memory behind pointers handed to callers */
  unsigned forks;               /* esg__forks when opened (see esg__check_process) */
  long pid;                     /* the process that opened it, for messages */
};

/*
 * A handle belongs to the process that opened it. After fork() the child's copy
 * shares the parent's connection but not its locks (fcntl locks are not
 * inherited): a write from it, a commit or rollback included, would go to the
 * log and the -shm index behind the parent's back and corrupt the database. So
 * every call on an inherited handle fails with ESG_ESTATE, and closing it
 * calls no SQLite at all (sq_close keeps the connection's copy untouched). esg__forks counts the fork()s that led to this process (a
 * pthread_atfork child handler bumps it), so the check costs a compare, not a
 * getpid() system call.
 */
extern unsigned esg__forks;
int esg__inherited_fail(esg_store *s); /* records which processes, returns ESG_ESTATE */
static inline int esg__check_process(esg_store *s) {
  return s->forks == esg__forks ? ESG_OK : esg__inherited_fail(s);
}
/* Whether s came from another process: the counter, or (for a fork() that skipped
   the atfork handlers, such as a raw clone) the pid; for the close path. */
bool esg__inherited(const esg_store *s);

/*
 * A unit of writes. esg__unit_begin makes sure the writes that follow run
 * atomically: inside a batch or an open group nothing more is needed; in
 * group mode it opens the group; otherwise, when need_tx, it begins a
 * transaction (*own = true) that esg__unit_end commits (rc >= 0) or rolls back.
 * esg__unit_end also counts the unit into the group and commits it when due.
 */
int esg__unit_begin(esg_store *s, bool need_tx, bool *own);
int esg__unit_end(esg_store *s, bool own, int rc);
/* esg__unit_end for a unit of n writes (each counts toward group_commit_max). */
int esg__unit_end_n(esg_store *s, bool own, int rc, int n);

/* One completion of a batch (esg__complete_batch). */
typedef struct esg__completion {
  const char *key;
  int64_t token;
  const void *result;           /* as esg_complete's */
  size_t len;
  int rc;                       /* out: what esg_complete would have returned */
} esg__completion;

/* Completes n claims as n esg_complete calls would, in one unit of writes: one
   transaction for all (the egress engine completes a loop turn's deliveries so; one
   UPDATE .. FROM a VALUES list measured 2.5 times dearer per row than one UPDATE each).
   ESG_OK, or the store error that stopped it or that its commit failed with (each rc
   says which; see claims.c for what a group's commit reports). */
int esg__complete_batch(esg_store *s, esg__completion *c, size_t n);

/* A fresh random fencing token (never 0). */
int64_t esg__token(esg_store *s);

/* An event as the log stores it (pointers into ev). */
esg_stored_event esg__stored_event(const esg_event *ev, const char *corr_key, int64_t expires);

/* SHA-256 of the canonical form of one JSON value: ESG_OK, ESG_EJSON or ESG_ENOMEM (no text recorded). */
int esg__content_hash_bin(const char *json, size_t len, uint8_t hash[32]);

/* Sleeps ms of real time. */
void esg__sleep_ms(int ms);

#endif
