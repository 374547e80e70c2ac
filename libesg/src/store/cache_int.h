/*
 * What the enrichment cache's files share: the handle, the memory tier's entry
 * and table, the process-wide group of handles on one store file, and the hot
 * path (hash, memory lookup, the read that tries memory before the store),
 * which lives here as inline code so that esg_cache_get and
 * esg_cache_get_or_load answer a memory hit without a call.
 * The files: cache.c (open/close, get/put, stats, purge), cache_mem.c (the
 * memory tier), cache_store.c (the store tier), cache_flight.c (the registry
 * and single flight), cache_load.c (read-through), cache_json.c (value checks
 * and collect), cache_hash.h (the key hash, shared with bench_w2).
 * Nothing here is public; see esg/cache.h for the contract.
 */
#ifndef ESG_CACHE_INT_H
#define ESG_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include "store/store_int.h"
#include "cache_hash.h"

struct cJSON;

#define ESG__CACHE_STAMPS 4096 /* power of two; more buckets, fewer false "changed" signals */

/* One load in progress, shared by the leader that runs it and the followers that wait. */
typedef struct esg__flight {
  struct esg__flight *next;
  uint64_t hash;
  size_t klen;
  char *key;
  bool done;
  int rc;        /* the leader's outcome: ESG_OK (a value or a negative is stored) or its failure */
  char msg[256]; /* the leader's error text, for followers to report */
  int waiters;   /* followers that still have to read rc; the last one out frees a done flight */
} esg__flight;

/* What every cache handle of this process on one store file shares. */
typedef struct esg__cache_group {
  struct esg__cache_group *next;
  char *path; /* NULL: a private store, not in the registry */
  int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC: waits are in real time whatever the store's clock */
  esg__flight *flights;
  _Atomic uint64_t stamps[ESG__CACHE_STAMPS];
} esg__cache_group;

/* A memory-tier entry: one allocation holding key\0value\0. */
typedef struct esg__ment {
  struct esg__ment *prev, *next; /* LRU list: head is the most recently used */
  uint64_t hash;
  uint64_t stamp;           /* the key bucket's stamp when the entry was read or written */
  int64_t fresh_until;      /* min(expires, read time + mem_ttl) */
  int64_t version, expires;
  uint32_t klen, vlen;
  size_t cost;              /* bytes accounted to mem_bytes */
  bool negative;
  char data[];
} esg__ment;

typedef struct esg__mslot {
  uint64_t hash;
  esg__ment *e; /* NULL: empty */
} esg__mslot;

struct esg_cache {
  esg__err err; /* first: see esg__err */
  esg_store *s; /* NULL once the store closed (see esg__dep) */
  esg__dep dep;
  esg_clock_fn clock;
  void *clock_ud;
  esg__cache_group *g;
  unsigned forks; /* esg__forks at open: a child of fork() leaves the process registry alone */
  int64_t ttl, neg_ttl, max_stale, load_timeout, mem_ttl; /* max_stale, load_timeout: -1 = none */
  size_t max_value;
  bool json;
  char *collect_field, *id_field, *version_field;
  bool in_load; /* the loader is running: the handle is not to be used */
  /* With the real clock, memory hits read CLOCK_REALTIME_COARSE (a third of the
     cost of a precise read here) plus guard_ms, more than the coarse clock can lag:
     coarse + guard < fresh_until implies real now < fresh_until, so a hit is never
     late; entries in their last guard_ms go to the store path and its precise clock. */
  bool coarse;
  int64_t guard_ms;

  bool mem_on;
  size_t mem_max_entries, mem_max_bytes;
  esg__mslot *slots;
  size_t mask, count, bytes; /* capacity is mask + 1, a power of two, at least 2 * count */
  esg__ment *head, *tail;

  esg__buf val;      /* store-tier values handed out */
  esg__buf loaded;   /* the loader's value */
  esg__buf keybuf;   /* collect's key */
  esg_cache_stats st;
};

struct esg_cache_load {
  esg_cache *c;
  bool set, too_big, nomem;
  int64_t ttl;
  char msg[256];
};

/* ------------------------------------------------------- small helpers -- */

/* Key equality without a call into libc: keys are short, and this is the hot path. */
static inline __attribute__((always_inline)) bool key_eq(const char *a, const char *b, size_t n) {
  while (n >= 8) {
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    if (x != y) return false;
    a += 8;
    b += 8;
    n -= 8;
  }
  while (n--)
    if (*a++ != *b++) return false;
  return true;
}

/* The stamp of key hash h's bucket, bumped by every write of a key in it. */
static inline _Atomic uint64_t *stamp_of(const esg_cache *c, uint64_t h) {
  return &c->g->stamps[h & (ESG__CACHE_STAMPS - 1)];
}

static inline int64_t coarse_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------- the memory tier -- */

/* cache_mem.c: puts a fresh row in memory (best effort), drops a key, frees all. */
void esg__cache_mem_put(esg_cache *c, uint64_t h, const char *key, size_t klen, const esg__cache_row *row,
                        uint64_t stamp, int64_t now);
void esg__cache_mem_drop(esg_cache *c, uint64_t h, const char *key, size_t klen);
void esg__cache_mem_free_all(esg_cache *c);

static inline __attribute__((always_inline)) esg__ment *mem_find(const esg_cache *c, uint64_t h, const char *key,
                                                                 size_t klen, size_t *slot) {
  size_t i = h & c->mask;
  for (;;) {
    esg__ment *e = c->slots[i].e;
    if (!e) return NULL;
    if (c->slots[i].hash == h && e->klen == klen && key_eq(e->data, key, klen)) {
      *slot = i;
      return e;
    }
    i = (i + 1) & c->mask;
  }
}

static inline void lru_unlink(esg_cache *c, esg__ment *e) {
  if (e->prev) e->prev->next = e->next;
  else c->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else c->tail = e->prev;
}

static inline void lru_push_front(esg_cache *c, esg__ment *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head) c->head->prev = e;
  c->head = e;
  if (!c->tail) c->tail = e;
}

/* The hot path: a fresh entry that no other handle of the process has changed since. */
static inline __attribute__((always_inline)) bool mem_hit(esg_cache *c, uint64_t h, const char *key, size_t klen,
                                                          int64_t now, esg_cache_entry *out) {
  size_t slot;
  esg__ment *e;
  if (!c->count || !(e = mem_find(c, h, key, klen, &slot))) return false;
  if (now >= e->fresh_until || atomic_load_explicit(stamp_of(c, h), memory_order_acquire) != e->stamp) return false;
  if (c->head != e) {
    lru_unlink(c, e);
    lru_push_front(c, e);
  }
  out->result = e->negative ? ESG_CACHE_NEGATIVE : ESG_CACHE_HIT;
  out->value = e->negative ? NULL : e->data + e->klen + 1;
  out->len = e->vlen;
  out->version = e->version;
  out->expires = e->expires;
  out->loaded = 0;
  out->load_status = ESG_OK;
  c->st.mem_hits++;
  if (e->negative) c->st.negatives++;
  else c->st.hits++;
  return true;
}

/* --------------------------------------------------------- the store tier -- */

/* cache_store.c. Relays the store's error text onto the cache handle. */
int esg__cache_relay(esg_cache *c, int rc);

/* Reads key from the store as seen at now into out (MISS when absent); fresh rows also go to memory. */
int esg__cache_lookup(esg_cache *c, const char *key, size_t klen, uint64_t h, int64_t now, esg_cache_entry *out);

/*
 * Writes row under key (only if newer, when conditional) and keeps this handle's
 * memory in step. Returns ESG_OK, ESG_STALE (conditional, not newer) or an error.
 */
int esg__cache_write(esg_cache *c, const char *key, size_t klen, uint64_t h, const esg__cache_row *row,
                     bool conditional, int64_t now);

/* Counts a fresh answer (HIT or NEGATIVE) in the stats; other results are the caller's to count. */
static inline void count_fresh(esg_cache *c, const esg_cache_entry *out) {
  if (out->result == ESG_CACHE_HIT) c->st.hits++;
  else if (out->result == ESG_CACHE_NEGATIVE) c->st.negatives++;
}

/*
 * A read of key (hash h) by get and get_or_load: memory first, else the store.
 * *now is the time the answer is as of (the precise clock when the store was
 * read). Fresh answers (HIT, NEGATIVE) from either tier are counted; STALE and
 * MISS are left to the caller, which does different things with them.
 */
static inline __attribute__((always_inline)) int cache_read(esg_cache *c, const char *key, size_t klen,
                                                                 uint64_t h, int64_t *now, esg_cache_entry *out) {
  *now = c->coarse ? coarse_now_ms() + c->guard_ms : c->clock(c->clock_ud);
  if (c->mem_on && mem_hit(c, h, key, klen, *now, out)) return ESG_OK;
  if (c->coarse) *now = c->clock(c->clock_ud);
  int rc = esg__cache_lookup(c, key, klen, h, *now, out);
  if (rc == ESG_OK) count_fresh(c, out);
  return rc;
}

/* ------------------------------------------------------ calls and values -- */

/* cache.c. ESG_ESTATE while the handle's loader runs (a loader must not call its own cache), else ESG_OK. */
int esg__cache_check_idle(esg_cache *c);

/* check_idle, then key: ESG_OK with *klen its length, or the error. */
int esg__cache_check_call(esg_cache *c, const char *key, size_t *klen);

/* cache_json.c. Whether n is a JSON number holding an integer (exact in a double); *out gets it. */
bool esg__cache_integral(const struct cJSON *n, int64_t *out);

/*
 * Checks a value about to be stored: its size and, when the cache checks JSON,
 * that it is one JSON document. With version_field, a JSON object's integer
 * member of that name becomes *version (else *version is left as it is).
 */
int esg__cache_check_value(esg_cache *c, const char *what, const char *key, const void *v, size_t len,
                           int64_t *version);

/* ------------------------------------------------ registry, single flight -- */

/* cache_flight.c. The group of the store file at path ("" = private: a group of its own); NULL when out of memory. */
esg__cache_group *esg__cache_group_acquire(const char *path);
void esg__cache_group_release(esg__cache_group *g);

/*
 * Joins the load of key in progress in the group, or else registers the caller
 * as its leader. Joined (*joined true): waits for the leader and returns its
 * outcome, ESG_OK when it stored its result, or its failure (or ESG_ETIMEDOUT)
 * with the text on c->err. Leading: ESG_OK with *mine to hand to
 * esg__cache_flight_finish, or ESG_ENOMEM.
 */
int esg__cache_flight_enter(esg_cache *c, uint64_t h, const char *key, size_t klen, esg__flight **mine,
                            bool *joined);

/* The leader's outcome (msg: its error text) to the followers; frees the flight when nobody waits. */
void esg__cache_flight_finish(esg__cache_group *g, esg__flight *f, int rc, const char *msg);

#endif
