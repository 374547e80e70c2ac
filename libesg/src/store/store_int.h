/*
 * The store handle and what the store layer's files share. The store holds what
 * is the caller's (the clock, the batch it opened, the process that opened it);
 * everything about the database, group commit included, is the backend's.
 */
#ifndef ESG_STORE_INT_H
#define ESG_STORE_INT_H

#include "backend/backend.h"

/*
 * A handle built on a store (a cache, an egress engine, a listing) links one of these
 * into it, so that esg_store_close can detach it first: detach finishes what the
 * handle has in flight on the store and lets go of it, leaving the handle valid (its
 * calls then fail with ESG_ESTATE) until its own close frees it.
 */
typedef struct esg__dep esg__dep;
struct esg__dep {
  esg__dep *prev, *next;        /* NULL when not linked */
  void (*detach)(esg__dep *d);
};
void esg__dep_link(esg_store *s, esg__dep *d, void (*detach)(esg__dep *d));
void esg__dep_unlink(esg__dep *d);

struct esg_store {
  esg__err err;                 /* first: see esg__err */
  const esg__backend *be;
  esg__be *b;                   /* the backend's handle */
  esg_clock_fn clock;           /* esg_clock_real, or the caller's counted in in_cb */
  void *clock_ud;
  esg_clock_fn user_clock;      /* the caller's, or NULL */
  void *user_clock_ud;
  bool batch;                   /* inside esg_store_begin .. commit */
  bool group;                   /* group commit is on */
  uint64_t rng;                 /* xorshift state for fencing tokens */
  unsigned forks;               /* esg__forks when opened */
  long pid;                     /* the process that opened it, for messages */
  esg__dep deps;                /* the handles built on it: a ring through this head */
  int in_cb;                    /* the caller's callbacks running inside calls on it */
};

/* Runs stmt, which calls the caller's callbacks from inside a call on s, counted in
   s->in_cb so that esg_store_close from inside one is refused instead of freeing s
   under the call. */
#define ESG__COUNTED(s, stmt) \
  do {                          \
    (s)->in_cb++;               \
    stmt;                       \
    (s)->in_cb--;               \
  } while (0)

/* The store's clock. */
static inline int64_t esg__now(esg_store *s) { return s->clock(s->clock_ud); }

/*
 * Where every call on a store begins: NULL is refused, and a handle inherited
 * across fork() is refused (ESG_ESTATE naming both processes). ESG_OK, or the code
 * to return (text on s or, for a NULL s, on the thread's slot).
 */
int esg__enter_fail(esg_store *s);
static inline int esg__enter(esg_store *s) { return s && s->forks == esg__forks ? ESG_OK : esg__enter_fail(s); }

/*
 * Group commit's bounds hold on every call: the call that finds the open group due
 * commits it, its own write included. A write's unit does so at its end (in the
 * backend); a call that only reads calls esg__tick, which commits a due group and
 * returns the commit's error, if any, in place of the call's own result. Reading
 * calls begin with esg__enter_read (before or after a read is the same to a group);
 * calls that may answer from a read (claims, latch checks) tick after.
 */
int esg__tick(esg_store *s);
static inline int esg__enter_read(esg_store *s) {
  int rc = esg__enter(s);
  return rc == ESG_OK && s->group ? esg__tick(s) : rc;
}

/* Whether s came from another process (the counter, or for a fork() that skipped the
   atfork handlers, such as a raw clone, the pid): for the close path. */
bool esg__inherited(const esg_store *s);

/* A fresh random fencing token (never 0). */
int64_t esg__token(esg_store *s);

/* An event as the log stores it (pointers into ev). */
esg_stored_event esg__stored_event(const esg_event *ev, const char *corr_key, int64_t expires);

/* Stores row in the event log once per id (eventlog.c): OK | DUPLICATE. Every writer of
   the log (esg_event_put, resync) goes through it. */
int esg__event_store(esg_store *s, const esg_stored_event *row);

/* Completes n claims as n esg_complete calls would, in one unit of writes: one
   transaction for all (the egress engine completes a loop turn's deliveries so; on
   SQLite one statement over a list of rows measured 2.5 times dearer per row than one
   statement each).
   ESG_OK, or the store error that stopped it or that its commit failed with (each rc
   says which; see claims.c for what a group's commit reports). */
int esg__complete_batch(esg_store *s, esg__completion *c, size_t n);

/* The outbox (outbox.c): a rendered request under its claim's key. get: OK | NOT_FOUND. */
int esg__outbox_put(esg_store *s, const char *key, const void *data, size_t len);
int esg__outbox_get(esg_store *s, const char *key, esg__buf *out);
int esg__outbox_delete(esg_store *s, const char *key);

#endif
