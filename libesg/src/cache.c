/*
 * The enrichment cache: the contract of DESIGN.md "Enrichment cache" on top of
 * the store tier (cache_be.h) and a bounded in-memory LRU per handle.
 *
 * - Freshness: an entry is fresh until `expires`; a value (never a negative) past
 *   it is still served as *stale* for max_stale_ms, by get, and by get_or_load
 *   when the loader fails (stale-if-error). Everything else is a miss.
 * - Memory tier: an open-addressing table (linear probing, backward-shift delete)
 *   plus an intrusive LRU list, bounded by entries and bytes. It holds only fresh
 *   entries, so a memory hit needs one clock read, no allocation and no SQL; any
 *   doubt (not fresh, or changed by another handle) falls back to the store.
 * - Process-wide state lives in a registry keyed by the store file's path: the
 *   in-flight loads (single flight across handles, i.e. threads) and an array of
 *   per-key-bucket "stamps" bumped on every write, so a handle notices that
 *   another handle of the process changed a key it holds in memory.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cache_be.h"

#define DEFAULT_TTL_MS 300000
#define DEFAULT_NEG_TTL_MS 30000
#define DEFAULT_MAX_STALE_MS 3600000
#define DEFAULT_LOAD_TIMEOUT_MS 10000
#define DEFAULT_MEM_ENTRIES 10000
#define DEFAULT_MEM_BYTES (64 * 1024 * 1024)
#define STAMPS 4096 /* power of two; more buckets, fewer false "changed" signals */

/* ----------------------------------------------------------- registry -- */

/* One load in progress, shared by the leader that runs it and the followers that wait. */
typedef struct flight {
  struct flight *next;
  uint64_t hash;
  size_t klen;
  char *key;
  bool done;
  int rc;        /* the leader's outcome: ESG_OK (a value or a negative is stored) or its failure */
  char msg[256]; /* the leader's error text, for followers to report */
  int waiters;   /* followers that still have to read rc; the last one out frees a done flight */
} flight;

/* What every cache handle of this process on one store file shares. */
typedef struct group {
  struct group *next;
  char *path; /* NULL: a private store, not in the registry */
  int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC: waits are in real time whatever the store's clock */
  flight *flights;
  _Atomic uint64_t stamps[STAMPS];
} group;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static group *reg_head;

static group *group_new(const char *path) {
  group *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  if (path && !(g->path = strdup(path))) {
    free(g);
    return NULL;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, &ca);
  pthread_condattr_destroy(&ca);
  for (int i = 0; i < STAMPS; i++) atomic_init(&g->stamps[i], 0);
  g->refs = 1;
  return g;
}

static void group_free(group *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  free(g->path);
  free(g);
}

/* The group of path ("" = private: a group of its own). */
static group *group_acquire(const char *path) {
  if (!*path) return group_new(NULL);
  pthread_mutex_lock(&reg_mu);
  group *g = reg_head;
  while (g && strcmp(g->path, path) != 0) g = g->next;
  if (g) {
    g->refs++;
  } else if ((g = group_new(path))) {
    g->next = reg_head;
    reg_head = g;
  }
  pthread_mutex_unlock(&reg_mu);
  return g;
}

static void group_release(group *g) {
  if (!g) return;
  if (!g->path) {
    group_free(g);
    return;
  }
  pthread_mutex_lock(&reg_mu);
  if (--g->refs == 0) {
    group **p = &reg_head;
    while (*p != g) p = &(*p)->next;
    *p = g->next;
    group_free(g);
  }
  pthread_mutex_unlock(&reg_mu);
}

/* ------------------------------------------------------------ the handle -- */

/* A memory-tier entry: one allocation holding key\0value\0. */
typedef struct ment {
  struct ment *prev, *next; /* LRU list: head is the most recently used */
  uint64_t hash;
  uint64_t stamp;           /* the key bucket's stamp when the entry was read or written */
  int64_t fresh_until;      /* min(expires, read time + mem_ttl) */
  int64_t version, expires;
  uint32_t klen, vlen;
  size_t cost;              /* bytes accounted to mem_bytes */
  bool negative;
  char data[];
} ment;

typedef struct mslot {
  uint64_t hash;
  ment *e; /* NULL: empty */
} mslot;

struct esg_cache {
  esg__err err; /* first: see esg__err */
  esg_store *s;
  esg_clock_fn clock;
  void *clock_ud;
  group *g;
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
  mslot *slots;
  size_t mask, count, bytes; /* capacity is mask + 1, a power of two, at least 2 * count */
  ment *head, *tail;

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

static int64_t add_sat(int64_t a, int64_t b) { return b > 0 && a > INT64_MAX - b ? INT64_MAX : a + b; }

/* A fast 64-bit hash of short keys: eight bytes at a time, then a final mix. */
static inline uint64_t key_hash(const char *k, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, k, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
    k += 8;
    n -= 8;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= (uint64_t)(unsigned char)k[i] << (8 * i);
  h = (h ^ v) * 0x94D049BB133111EBULL;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ULL;
  h ^= h >> 32;
  return h;
}

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

static inline _Atomic uint64_t *stamp_of(const esg_cache *c, uint64_t h) { return &c->g->stamps[h & (STAMPS - 1)]; }

static inline int64_t coarse_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------- the memory tier -- */

static inline __attribute__((always_inline)) ment *mem_find(const esg_cache *c, uint64_t h, const char *key, size_t klen, size_t *slot) {
  size_t i = h & c->mask;
  for (;;) {
    ment *e = c->slots[i].e;
    if (!e) return NULL;
    if (c->slots[i].hash == h && e->klen == klen && key_eq(e->data, key, klen)) {
      *slot = i;
      return e;
    }
    i = (i + 1) & c->mask;
  }
}

static inline void lru_unlink(esg_cache *c, ment *e) {
  if (e->prev) e->prev->next = e->next;
  else c->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else c->tail = e->prev;
}

static inline void lru_push_front(esg_cache *c, ment *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head) c->head->prev = e;
  c->head = e;
  if (!c->tail) c->tail = e;
}

/* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
static void slot_delete(esg_cache *c, size_t i) {
  size_t j = i;
  for (;;) {
    j = (j + 1) & c->mask;
    if (!c->slots[j].e) break;
    size_t k = c->slots[j].hash & c->mask; /* where the entry at j would like to be */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      c->slots[i] = c->slots[j];
      i = j;
    }
  }
  c->slots[i].e = NULL;
}

static void mem_remove(esg_cache *c, ment *e, size_t slot) {
  slot_delete(c, slot);
  lru_unlink(c, e);
  c->count--;
  c->bytes -= e->cost;
  free(e);
}

static void mem_drop(esg_cache *c, uint64_t h, const char *key, size_t klen) {
  size_t slot;
  ment *e;
  if (c->mem_on && c->count && (e = mem_find(c, h, key, klen, &slot))) mem_remove(c, e, slot);
}

static bool mem_grow(esg_cache *c) {
  size_t cap = (c->mask + 1) * 2;
  mslot *ns = calloc(cap, sizeof *ns);
  if (!ns) return false;
  for (size_t i = 0; i <= c->mask; i++) {
    if (!c->slots[i].e) continue;
    size_t j = c->slots[i].hash & (cap - 1);
    while (ns[j].e) j = (j + 1) & (cap - 1);
    ns[j] = c->slots[i];
  }
  free(c->slots);
  c->slots = ns;
  c->mask = cap - 1;
  return true;
}

/*
 * Puts a fresh entry in memory, evicting from the LRU tail to stay within the
 * bounds. Best effort: when memory is short or the entry alone is over the byte
 * bound it is simply not kept (the store tier still has it).
 */
static void mem_put(esg_cache *c, uint64_t h, const char *key, size_t klen, const esg__cache_row *row,
                    uint64_t stamp, int64_t now) {
  if (!c->mem_on) return;
  mem_drop(c, h, key, klen);
  size_t vlen = row->negative ? 0 : row->len;
  size_t cost = sizeof(ment) + klen + vlen + 2;
  if (cost > c->mem_max_bytes) return;
  if ((c->count + 1) * 2 > c->mask + 1 && !mem_grow(c)) return;
  ment *e = malloc(cost);
  if (!e) return;
  e->hash = h;
  e->stamp = stamp;
  e->fresh_until = c->mem_ttl > 0 && add_sat(now, c->mem_ttl) < row->expires ? add_sat(now, c->mem_ttl) : row->expires;
  e->version = row->version;
  e->expires = row->expires;
  e->klen = (uint32_t)klen;
  e->vlen = (uint32_t)vlen;
  e->cost = cost;
  e->negative = row->negative;
  memcpy(e->data, key, klen);
  e->data[klen] = '\0';
  if (vlen) memcpy(e->data + klen + 1, row->value, vlen);
  e->data[klen + 1 + vlen] = '\0';
  size_t i = h & c->mask;
  while (c->slots[i].e) i = (i + 1) & c->mask;
  c->slots[i].hash = h;
  c->slots[i].e = e;
  lru_push_front(c, e);
  c->count++;
  c->bytes += cost;
  while ((c->count > c->mem_max_entries || c->bytes > c->mem_max_bytes) && c->tail != e) {
    ment *victim = c->tail;
    size_t slot = 0;
    mem_find(c, victim->hash, victim->data, victim->klen, &slot);
    mem_remove(c, victim, slot);
    c->st.evictions++;
  }
}

static void mem_free_all(esg_cache *c) {
  for (ment *e = c->head, *n; e; e = n) {
    n = e->next;
    free(e);
  }
  free(c->slots);
  c->slots = NULL;
  c->head = c->tail = NULL;
  c->count = c->bytes = 0;
}

/* The hot path: a fresh entry that no other handle of the process has changed since. */
static inline __attribute__((always_inline)) bool mem_hit(esg_cache *c, uint64_t h, const char *key, size_t klen, int64_t now,
                           esg_cache_entry *out) {
  size_t slot;
  ment *e;
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

/* -------------------------------------------------------- shared checks -- */

/* Relays the store's error text onto the cache handle. */
static int relay(esg_cache *c, int rc) { return esg__fail(&c->err, rc, "%s", c->s->err.msg); }

static int check_call(esg_cache *c, const char *key, size_t *klen) {
  if (c->in_load)
    return esg__fail(&c->err, ESG_ESTATE, "the cache is in use by its loader (a loader must not call its own cache)");
  int rc = esg__check_key(&c->err, "cache key", key);
  if (rc == ESG_OK) *klen = strlen(key);
  return rc;
}

/* Whether p[0..n) is only JSON white space. */
static bool only_space(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') return false;
  return true;
}

static bool integral(const cJSON *n, int64_t *out) {
  if (!cJSON_IsNumber(n)) return false;
  double d = n->valuedouble;
  if (d != d || d < -9007199254740992.0 || d > 9007199254740992.0 || (double)(int64_t)d != d) return false;
  *out = (int64_t)d;
  return true;
}

/*
 * Checks a value about to be stored: its size and, when the cache checks JSON,
 * that it is one JSON document. With version_field, a JSON object's integer
 * member of that name becomes *version (else *version is left as it is).
 */
static int check_value(esg_cache *c, const char *what, const char *key, const void *v, size_t len, int64_t *version) {
  if (len > c->max_value)
    return esg__fail(&c->err, ESG_ETOOBIG, "%s for cache key \"%s\" is %zu bytes; the limit is %zu", what, key, len,
                     c->max_value);
  if (!c->json && !c->version_field) return ESG_OK;
  const char *end = NULL;
  cJSON *root = len ? cJSON_ParseWithLengthOpts(v, len, &end, 0) : NULL;
  if (c->json && (!root || !only_space(end, len - (size_t)(end - (const char *)v)))) {
    size_t at = root || end ? (size_t)(end - (const char *)v) : 0;
    cJSON_Delete(root);
    return esg__fail(&c->err, ESG_EJSON, "%s for cache key \"%s\" is not JSON (%s at byte %zu)", what, key,
                     len ? "error" : "empty", at);
  }
  if (c->version_field && cJSON_IsObject(root)) {
    int64_t ver;
    if (integral(cJSON_GetObjectItemCaseSensitive(root, c->version_field), &ver)) *version = ver;
  }
  cJSON_Delete(root);
  return ESG_OK;
}

/* ---------------------------------------------------------- store tier -- */

/* Fills out from a stored row as seen at now; fresh rows also go to memory. */
static void classify(esg_cache *c, const char *key, size_t klen, uint64_t h, const esg__cache_row *row, uint64_t stamp,
                     int64_t now, esg_cache_entry *out) {
  out->version = row->version;
  out->expires = row->expires;
  out->value = NULL;
  out->len = 0;
  if (now < row->expires) {
    out->result = row->negative ? ESG_CACHE_NEGATIVE : ESG_CACHE_HIT;
    if (!row->negative) {
      out->value = row->value;
      out->len = row->len;
    }
    if (!c->s->batch) mem_put(c, h, key, klen, row, stamp, now); /* a batch may still roll back */
  } else if (!row->negative && c->max_stale >= 0 && now < add_sat(row->expires, c->max_stale)) {
    out->result = ESG_CACHE_STALE;
    out->value = row->value;
    out->len = row->len;
  } else {
    out->result = ESG_CACHE_MISS;
    out->version = out->expires = 0;
  }
}

static int store_lookup(esg_cache *c, const char *key, size_t klen, uint64_t h, int64_t now, esg_cache_entry *out) {
  /* The stamp is read before the row: a write that lands after the read bumps it
     afterwards, so the memory copy made from this read is then seen as changed. */
  uint64_t stamp = atomic_load_explicit(stamp_of(c, h), memory_order_acquire);
  esg__cache_row row;
  out->loaded = 0;
  out->load_status = ESG_OK;
  int rc = c->s->be->cache->get(c->s, key, klen, &c->val, &row);
  if (rc == ESG_NOT_FOUND) {
    memset(out, 0, sizeof *out);
    out->result = ESG_CACHE_MISS;
    return ESG_OK;
  }
  if (rc != ESG_OK) return relay(c, rc);
  classify(c, key, klen, h, &row, stamp, now, out);
  return ESG_OK;
}

/*
 * Writes row under key (only if newer, when conditional) and keeps this handle's
 * memory in step. Returns ESG_OK, ESG_STALE (conditional, not newer) or an error.
 */
static int store_write(esg_cache *c, const char *key, size_t klen, uint64_t h, const esg__cache_row *row,
                       bool conditional, int64_t now) {
  esg_store *s = c->s;
  _Atomic uint64_t *stamp = stamp_of(c, h);
  uint64_t pre = atomic_load_explicit(stamp, memory_order_acquire);
  mem_drop(c, h, key, klen);
  bool own;
  int rc = esg__unit_begin(s, false, &own);
  if (rc != ESG_OK) return relay(c, rc);
  rc = conditional ? s->be->cache->put_if_newer(s, key, klen, row) : s->be->cache->put(s, key, klen, row);
  rc = esg__unit_end(s, own, rc);
  if (rc < 0) return relay(c, rc);
  if (rc != ESG_OK) return rc;
  /* Other handles of the process see the bump and re-read the store. Keep our own
     copy only if nobody else wrote the bucket meanwhile (else the order of the two
     writes is unknown), and not inside a batch, which may still roll back. */
  uint64_t prev = atomic_fetch_add_explicit(stamp, 1, memory_order_acq_rel);
  if (prev == pre && !s->batch && now < row->expires) mem_put(c, h, key, klen, row, pre + 1, now);
  return ESG_OK;
}

/* ------------------------------------------------------------- open/close -- */

static int dup_opt(const char *v, const char *name, char **out) {
  *out = NULL;
  if (!v) return ESG_OK;
  if (!*v) return esg__fail(NULL, ESG_EINVAL, "cache option %s is empty (use NULL for the default)", name);
  if (!(*out = strdup(v))) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the cache");
  return ESG_OK;
}

int esg_cache_open(esg_cache **out, esg_store *s, const esg_cache_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  if (!s->be->cache || !s->be->cache->get)
    return esg__fail(NULL, ESG_ESTATE, "the %s backend has no cache support", s->be->name);
  esg_cache_opts o = {0};
  if (opts) o = *opts;
  if (o.ttl_ms < 0) return esg__fail(NULL, ESG_EINVAL, "cache option ttl_ms must not be negative");
  if (o.negative_ttl_ms < 0) return esg__fail(NULL, ESG_EINVAL, "cache option negative_ttl_ms must not be negative");
  if (o.max_stale_ms < -1) return esg__fail(NULL, ESG_EINVAL, "cache option max_stale_ms must be -1 (never) or more");
  if (o.load_timeout_ms < -1)
    return esg__fail(NULL, ESG_EINVAL, "cache option load_timeout_ms must be -1 (no limit) or more");
  if (o.mem_entries < -1 || o.mem_bytes < -1)
    return esg__fail(NULL, ESG_EINVAL, "cache options mem_entries and mem_bytes must be -1 (no memory tier) or more");
  if (o.mem_ttl_ms < 0) return esg__fail(NULL, ESG_EINVAL, "cache option mem_ttl_ms must not be negative");
  if (o.no_json_check != 0 && o.no_json_check != 1)
    return esg__fail(NULL, ESG_EINVAL, "cache option no_json_check must be 0 or 1");

  esg_cache *c = calloc(1, sizeof *c);
  if (!c) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the cache");
  c->s = s;
  c->clock = s->clock;
  c->clock_ud = s->clock_ud;
  c->ttl = o.ttl_ms ? o.ttl_ms : DEFAULT_TTL_MS;
  c->neg_ttl = o.negative_ttl_ms ? o.negative_ttl_ms : DEFAULT_NEG_TTL_MS;
  c->max_stale = o.max_stale_ms ? o.max_stale_ms : DEFAULT_MAX_STALE_MS;
  c->load_timeout = o.load_timeout_ms ? o.load_timeout_ms : DEFAULT_LOAD_TIMEOUT_MS;
  c->mem_ttl = o.mem_ttl_ms;
  c->max_value = o.max_value_bytes ? o.max_value_bytes : ESG_EVENT_MAX_BYTES;
  c->json = !o.no_json_check;
  c->mem_on = o.mem_entries >= 0 && o.mem_bytes >= 0;
  c->mem_max_entries = o.mem_entries > 0 ? (size_t)o.mem_entries : DEFAULT_MEM_ENTRIES;
  c->mem_max_bytes = o.mem_bytes > 0 ? (size_t)o.mem_bytes : DEFAULT_MEM_BYTES;
  int rc;
  if ((rc = dup_opt(o.collect_field, "collect_field", &c->collect_field)) != ESG_OK ||
      (rc = dup_opt(o.collect_id_field ? o.collect_id_field : "id", "collect_id_field", &c->id_field)) != ESG_OK ||
      (rc = dup_opt(o.version_field, "version_field", &c->version_field)) != ESG_OK) {
    esg_cache_close(c);
    return rc;
  }
  struct timespec res;
  if (c->clock == esg_clock_real && clock_getres(CLOCK_REALTIME_COARSE, &res) == 0 && res.tv_sec == 0 &&
      res.tv_nsec <= 50000000L) {
    c->coarse = true;
    c->guard_ms = 2 * ((res.tv_nsec + 999999L) / 1000000L) + 1;
  }
  c->mask = 15;
  c->slots = calloc(c->mask + 1, sizeof *c->slots);
  c->g = group_acquire(s->be->cache->path(s));
  if (!c->slots || !c->g) {
    esg_cache_close(c);
    return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the cache");
  }
  *out = c;
  return ESG_OK;
}

void esg_cache_close(esg_cache *c) {
  if (!c) return;
  mem_free_all(c);
  group_release(c->g);
  esg__buf_free(&c->val);
  esg__buf_free(&c->loaded);
  esg__buf_free(&c->keybuf);
  free(c->collect_field);
  free(c->id_field);
  free(c->version_field);
  free(c);
}

/* ----------------------------------------------------------- get / put -- */

int esg_cache_get(esg_cache *c, const char *key, esg_cache_entry *out) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = key ? strlen(key) : 0;
  /* one unsigned compare rejects both empty and oversized keys on the hot path */
  if (klen - 1 >= ESG_KEY_MAX || !out || c->in_load) {
    int rc = check_call(c, key, &klen);
    if (rc != ESG_OK) return rc;
    if (!out) return esg__fail(&c->err, ESG_EINVAL, "out is NULL");
  }
  uint64_t h = key_hash(key, klen);
  int64_t now = c->coarse ? coarse_now_ms() + c->guard_ms : c->clock(c->clock_ud);
  if (c->mem_on && mem_hit(c, h, key, klen, now, out)) return ESG_OK;
  if (c->coarse) now = c->clock(c->clock_ud);
  int rc = store_lookup(c, key, klen, h, now, out);
  if (rc != ESG_OK) return rc;
  switch (out->result) {
  case ESG_CACHE_HIT: c->st.hits++; break;
  case ESG_CACHE_NEGATIVE: c->st.negatives++; break;
  case ESG_CACHE_STALE: c->st.stale++; break;
  case ESG_CACHE_MISS: c->st.misses++; break;
  }
  return ESG_OK;
}

static int check_ttl(esg_cache *c, int64_t ttl_ms) {
  return ttl_ms < 0 ? esg__fail(&c->err, ESG_EINVAL, "ttl must not be negative (got %lld ms)", (long long)ttl_ms)
                    : ESG_OK;
}

int esg_cache_put(esg_cache *c, const char *key, const void *value, size_t len, int64_t ttl_ms) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = 0;
  int rc = check_call(c, key, &klen);
  if (rc != ESG_OK) return rc;
  if (!value) return esg__fail(&c->err, ESG_EINVAL, "value for cache key \"%s\" is NULL (use esg_cache_put_negative)", key);
  if ((rc = check_ttl(c, ttl_ms)) != ESG_OK) return rc;
  int64_t now = c->clock(c->clock_ud);
  esg__cache_row row = {false, c->version_field ? 0 : now, add_sat(now, ttl_ms ? ttl_ms : c->ttl), now, value, len};
  if ((rc = check_value(c, "value", key, value, len, &row.version)) != ESG_OK) return rc;
  return store_write(c, key, klen, key_hash(key, klen), &row, false, now);
}

int esg_cache_put_negative(esg_cache *c, const char *key, int64_t ttl_ms) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = 0;
  int rc = check_call(c, key, &klen);
  if (rc != ESG_OK) return rc;
  if ((rc = check_ttl(c, ttl_ms)) != ESG_OK) return rc;
  int64_t now = c->clock(c->clock_ud);
  esg__cache_row row = {true, c->version_field ? 0 : now, add_sat(now, ttl_ms ? ttl_ms : c->neg_ttl), now, NULL, 0};
  return store_write(c, key, klen, key_hash(key, klen), &row, false, now);
}

int esg_cache_invalidate(esg_cache *c, const char *key) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = 0;
  int rc = check_call(c, key, &klen);
  if (rc != ESG_OK) return rc;
  uint64_t h = key_hash(key, klen);
  mem_drop(c, h, key, klen);
  bool own;
  if ((rc = esg__unit_begin(c->s, false, &own)) != ESG_OK) return relay(c, rc);
  rc = esg__unit_end(c->s, own, c->s->be->cache->del(c->s, key, klen));
  if (rc != ESG_OK) return relay(c, rc);
  atomic_fetch_add_explicit(stamp_of(c, h), 1, memory_order_acq_rel);
  return ESG_OK;
}

/* ---------------------------------------------------------- read-through -- */

int esg_cache_load_set(esg_cache_load *ld, const void *value, size_t len, int64_t ttl_ms) {
  if (!ld) return esg__fail(NULL, ESG_EINVAL, "load handle is NULL");
  esg_cache *c = ld->c;
  if (!value) return esg__fail(NULL, ESG_EINVAL, "loaded value is NULL (return ESG_NOT_FOUND for an absent key)");
  if (ttl_ms < 0) return esg__fail(NULL, ESG_EINVAL, "loaded value's ttl must not be negative");
  if (len > c->max_value) {
    ld->too_big = true;
    return esg__fail(NULL, ESG_ETOOBIG, "loaded value is %zu bytes; the limit is %zu", len, c->max_value);
  }
  if (esg__buf_set(&c->loaded, value, len) != ESG_OK) {
    ld->nomem = true;
    return esg__fail(NULL, ESG_ENOMEM, "out of memory keeping a loaded value");
  }
  ld->set = true;
  ld->ttl = ttl_ms;
  return ESG_OK;
}

void esg_cache_load_error(esg_cache_load *ld, const char *msg) {
  if (!ld || !msg) return;
  snprintf(ld->msg, sizeof ld->msg, "%s", msg);
}

/*
 * Runs the loader once and stores what it gives. ESG_OK with out filled (HIT or
 * NEGATIVE), or the failure with its text on c->err; nothing is written then.
 */
static int run_loader(esg_cache *c, const char *key, size_t klen, uint64_t h, esg_cache_loader loader, void *ud,
                      esg_cache_entry *out) {
  esg_cache_load ld = {.c = c};
  int64_t t0 = c->clock(c->clock_ud);
  int64_t deadline = c->load_timeout < 0 ? INT64_MAX : add_sat(t0, c->load_timeout);
  c->st.loads++;
  c->in_load = true;
  int lrc = loader(ud, key, deadline, &ld);
  c->in_load = false;
  int64_t now = c->clock(c->clock_ud);
  const char *why = ld.msg[0] ? ": " : "";
  int rc;
  if (now > deadline) {
    rc = esg__fail(&c->err, ESG_ETIMEDOUT,
                   "loader for cache key \"%s\" took %lld ms; the limit is %lld ms: its result was discarded%s%s", key,
                   (long long)(now - t0), (long long)c->load_timeout, why, ld.msg);
  } else if (lrc == ESG_NOT_FOUND) {
    esg__cache_row row = {true, c->version_field ? 0 : now, add_sat(now, c->neg_ttl), now, NULL, 0};
    rc = store_write(c, key, klen, h, &row, false, now);
    if (rc == ESG_OK) {
      memset(out, 0, sizeof *out);
      out->result = ESG_CACHE_NEGATIVE;
      out->version = row.version;
      out->expires = row.expires;
      out->loaded = 1;
      return ESG_OK;
    }
  } else if (lrc != ESG_OK) {
    rc = esg__fail(&c->err, ESG_ECALLBACK, "loader for cache key \"%s\" failed (returned %s)%s%s", key,
                   esg_status_name(lrc), why, ld.msg);
  } else if (ld.too_big || ld.nomem) {
    rc = esg__fail(&c->err, ld.too_big ? ESG_ETOOBIG : ESG_ENOMEM,
                   "loader for cache key \"%s\" gave a value %s", key,
                   ld.too_big ? "over max_value_bytes" : "that could not be kept (out of memory)");
  } else if (!ld.set) {
    rc = esg__fail(&c->err, ESG_ECALLBACK,
                   "loader for cache key \"%s\" returned ESG_OK without a value (call esg_cache_load_set, or "
                   "return ESG_NOT_FOUND)", key);
  } else {
    esg__cache_row row = {false, c->version_field ? 0 : now, add_sat(now, ld.ttl ? ld.ttl : c->ttl), now,
                          c->loaded.data, c->loaded.len};
    rc = check_value(c, "loaded value", key, row.value, row.len, &row.version);
    if (rc == ESG_OK) rc = store_write(c, key, klen, h, &row, false, now);
    if (rc == ESG_OK) {
      out->result = ESG_CACHE_HIT;
      out->value = c->loaded.data;
      out->len = c->loaded.len;
      out->version = row.version;
      out->expires = row.expires;
      out->loaded = 1;
      out->load_status = ESG_OK;
      return ESG_OK;
    }
  }
  /* a store error while keeping a good result is not the loader's failure */
  if (rc != ESG_ESTORE && rc != ESG_ELOCKED) c->st.load_failures++;
  return rc;
}

/* After a failed load (lrc, text on c->err): the stale value if there is one, else the failure. */
static int serve_stale(esg_cache *c, const char *key, size_t klen, uint64_t h, int lrc, bool loaded,
                       esg_cache_entry *out) {
  char msg[sizeof c->err.msg];
  memcpy(msg, c->err.msg, sizeof msg);
  int rc = store_lookup(c, key, klen, h, c->clock(c->clock_ud), out);
  memcpy(c->err.msg, msg, sizeof msg); /* the load's failure is what the caller needs to read */
  out->loaded = loaded;
  out->load_status = lrc;
  if (rc == ESG_OK && out->result == ESG_CACHE_STALE) {
    c->st.stale++;
    return ESG_OK;
  }
  if (rc == ESG_OK && (out->result == ESG_CACHE_HIT || out->result == ESG_CACHE_NEGATIVE))
    return ESG_OK; /* someone else (another process) stored it meanwhile */
  memset(out, 0, sizeof *out);
  out->result = ESG_CACHE_MISS;
  out->loaded = loaded;
  out->load_status = lrc;
  return lrc;
}

static flight *flight_find(group *g, uint64_t h, const char *key, size_t klen) {
  for (flight *f = g->flights; f; f = f->next)
    if (f->hash == h && f->klen == klen && memcmp(f->key, key, klen) == 0) return f;
  return NULL;
}

static void flight_finish(group *g, flight *f, int rc, const char *msg) {
  pthread_mutex_lock(&g->mu);
  f->done = true;
  f->rc = rc;
  snprintf(f->msg, sizeof f->msg, "%s", msg);
  flight **p = &g->flights;
  while (*p != f) p = &(*p)->next;
  *p = f->next; /* new callers now read the store instead of joining */
  bool last = f->waiters == 0;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  if (last) {
    free(f->key);
    free(f);
  }
}

/* Waits for f (g->mu held; released on return). Returns the leader's outcome or ESG_ETIMEDOUT. */
static int flight_wait(esg_cache *c, group *g, flight *f, const char *key) {
  f->waiters++;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  if (c->load_timeout >= 0) {
    until.tv_sec += (time_t)(c->load_timeout / 1000);
    until.tv_nsec += (long)(c->load_timeout % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  }
  while (!f->done) {
    int w = c->load_timeout < 0 ? pthread_cond_wait(&g->cv, &g->mu) : pthread_cond_timedwait(&g->cv, &g->mu, &until);
    if (w == ETIMEDOUT) break;
  }
  int rc;
  if (f->done) {
    rc = f->rc;
    if (rc != ESG_OK) esg__fail(&c->err, rc, "%s", f->msg);
  } else {
    rc = esg__fail(&c->err, ESG_ETIMEDOUT, "waited %lld ms for another caller's load of cache key \"%s\"",
                   (long long)c->load_timeout, key);
  }
  bool last = --f->waiters == 0 && f->done;
  pthread_mutex_unlock(&g->mu);
  if (last) {
    free(f->key);
    free(f);
  }
  return rc;
}

int esg_cache_get_or_load(esg_cache *c, const char *key, esg_cache_loader loader, void *ud, esg_cache_entry *out) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = key ? strlen(key) : 0;
  if (klen - 1 >= ESG_KEY_MAX || !out || !loader || c->in_load) {
    int rc = check_call(c, key, &klen);
    if (rc != ESG_OK) return rc;
    if (!out) return esg__fail(&c->err, ESG_EINVAL, "out is NULL");
    if (!loader) return esg__fail(&c->err, ESG_EINVAL, "loader is NULL");
  }
  uint64_t h = key_hash(key, klen);
  int64_t now = c->coarse ? coarse_now_ms() + c->guard_ms : c->clock(c->clock_ud);
  if (c->mem_on && mem_hit(c, h, key, klen, now, out)) return ESG_OK;
  if (c->coarse) now = c->clock(c->clock_ud);
  int rc = store_lookup(c, key, klen, h, now, out);
  if (rc != ESG_OK) return rc;
  if (out->result == ESG_CACHE_HIT || out->result == ESG_CACHE_NEGATIVE) {
    if (out->result == ESG_CACHE_HIT) c->st.hits++;
    else c->st.negatives++;
    return ESG_OK;
  }

  group *g = c->g;
  pthread_mutex_lock(&g->mu);
  flight *f = flight_find(g, h, key, klen);
  if (f) {
    c->st.misses++;
    int lrc = flight_wait(c, g, f, key);
    if (lrc != ESG_OK) return serve_stale(c, key, klen, h, lrc, false, out);
    /* The leader stored its result: read it like any other entry. */
    if ((rc = store_lookup(c, key, klen, h, c->clock(c->clock_ud), out)) != ESG_OK) return rc;
    if (out->result == ESG_CACHE_STALE) c->st.stale++;
    return ESG_OK;
  }
  f = calloc(1, sizeof *f);
  char *kcopy = f ? malloc(klen + 1) : NULL;
  if (!kcopy) {
    pthread_mutex_unlock(&g->mu);
    free(f);
    return esg__fail(&c->err, ESG_ENOMEM, "out of memory starting a load");
  }
  memcpy(kcopy, key, klen + 1);
  f->key = kcopy;
  f->klen = klen;
  f->hash = h;
  f->next = g->flights;
  g->flights = f;
  pthread_mutex_unlock(&g->mu);

  /* Another handle's load may have finished between our read and our registration. */
  rc = store_lookup(c, key, klen, h, now, out);
  if (rc == ESG_OK && (out->result == ESG_CACHE_HIT || out->result == ESG_CACHE_NEGATIVE)) {
    flight_finish(g, f, ESG_OK, "");
    if (out->result == ESG_CACHE_HIT) c->st.hits++;
    else c->st.negatives++;
    return ESG_OK;
  }
  c->st.misses++;
  int lrc = rc != ESG_OK ? rc : run_loader(c, key, klen, h, loader, ud, out);
  flight_finish(g, f, lrc, lrc == ESG_OK ? "" : c->err.msg);
  if (lrc == ESG_OK) return ESG_OK;
  return serve_stale(c, key, klen, h, lrc, rc == ESG_OK, out);
}

/* --------------------------------------------------------------- collect -- */

static bool envelope_key(const char *k) {
  static const char *const keys[] = {"id", "type", "timestamp", "partitionKey", "tags", "raw"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (strcmp(k, keys[i]) == 0) return true;
  return false;
}

static int collect_parsed(esg_cache *c, const esg_event *ev, cJSON *root, const char **key) {
  const char *id = esg_event_id(ev);
  const char *field = c->collect_field;
  cJSON *entity = NULL;
  if (field) {
    entity = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!entity) return esg__fail(&c->err, ESG_NOT_FOUND, "event %s has no \"%s\": nothing to collect", id, field);
    if (!cJSON_IsObject(entity))
      return esg__fail(&c->err, ESG_EEVENT, "\"%s\" of event %s is not an object", field, id);
  } else {
    cJSON *item;
    cJSON_ArrayForEach(item, root) {
      if (!cJSON_IsObject(item) || envelope_key(item->string)) continue;
      if (entity)
        return esg__fail(&c->err, ESG_EEVENT,
                         "event %s carries two entities (\"%s\" and \"%s\"): set collect_field", id, entity->string,
                         item->string);
      entity = item;
    }
    if (!entity) return esg__fail(&c->err, ESG_NOT_FOUND, "event %s carries no entity: nothing to collect", id);
    field = entity->string;
  }

  cJSON *eid = cJSON_GetObjectItemCaseSensitive(entity, c->id_field);
  char idbuf[32];
  const char *idtext = NULL;
  int64_t n;
  if (cJSON_IsString(eid) && eid->valuestring[0]) {
    idtext = eid->valuestring;
  } else if (integral(eid, &n)) {
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)n);
    idtext = idbuf;
  } else {
    return esg__fail(&c->err, ESG_EEVENT, "entity \"%s\" of event %s has no string or integer \"%s\"", field, id,
                     c->id_field);
  }
  size_t flen = strlen(field), ilen = strlen(idtext), klen = flen + 1 + ilen;
  if (klen > ESG_KEY_MAX)
    return esg__fail(&c->err, ESG_ETOOBIG, "cache key for entity \"%s\" of event %s is %zu bytes; the limit is %d",
                     field, id, klen, ESG_KEY_MAX);
  if (esg__buf_set(&c->keybuf, NULL, klen) != ESG_OK)
    return esg__fail(&c->err, ESG_ENOMEM, "out of memory collecting event %s", id);
  memcpy(c->keybuf.data, field, flen);
  c->keybuf.data[flen] = '/';
  memcpy(c->keybuf.data + flen + 1, idtext, ilen + 1);
  const char *ckey = c->keybuf.data;
  if (key) *key = ckey;

  int64_t version = esg_event_timestamp(ev);
  if (c->version_field && !integral(cJSON_GetObjectItemCaseSensitive(entity, c->version_field), &version))
    return esg__fail(&c->err, ESG_EEVENT, "entity \"%s\" of event %s has no integer \"%s\" (the version field)", field,
                     id, c->version_field);

  char *doc = cJSON_PrintUnformatted(entity);
  if (!doc) return esg__fail(&c->err, ESG_ENOMEM, "out of memory collecting event %s", id);
  size_t len = strlen(doc);
  int rc = ESG_OK;
  if (len > c->max_value)
    rc = esg__fail(&c->err, ESG_ETOOBIG, "entity \"%s\" of event %s is %zu bytes; the limit is %zu", field, id, len,
                   c->max_value);
  if (rc == ESG_OK) {
    int64_t now = c->clock(c->clock_ud);
    esg__cache_row row = {false, version, add_sat(now, c->ttl), now, doc, len};
    rc = store_write(c, ckey, klen, key_hash(ckey, klen), &row, true, now);
  }
  cJSON_free(doc);
  return rc;
}

int esg_cache_collect(esg_cache *c, const esg_event *ev, const char **key) {
  if (key) *key = NULL;
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  if (c->in_load)
    return esg__fail(&c->err, ESG_ESTATE, "the cache is in use by its loader (a loader must not call its own cache)");
  if (!ev) return esg__fail(&c->err, ESG_EINVAL, "event is NULL");
  size_t len = 0;
  const char *json = esg_event_json(ev, &len);
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return esg__fail(&c->err, ESG_EJSON, "event %s is not a JSON object", esg_event_id(ev));
  }
  int rc = collect_parsed(c, ev, root, key);
  cJSON_Delete(root);
  return rc;
}

/* ------------------------------------------------------- stats and purge -- */

int esg_cache_stats_get(esg_cache *c, esg_cache_stats *out) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  if (!out) return esg__fail(&c->err, ESG_EINVAL, "out is NULL");
  *out = c->st;
  out->mem_entries = c->count;
  out->mem_bytes = c->bytes;
  return ESG_OK;
}

int esg_cache_purge(esg_cache *c, int64_t *n) {
  if (n) *n = 0;
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  if (c->in_load)
    return esg__fail(&c->err, ESG_ESTATE, "the cache is in use by its loader (a loader must not call its own cache)");
  int64_t now = c->clock(c->clock_ud);
  int64_t value_before = c->max_stale < 0 ? now : now - c->max_stale;
  bool own;
  int rc = esg__unit_begin(c->s, false, &own);
  if (rc != ESG_OK) return relay(c, rc);
  rc = esg__unit_end(c->s, own, c->s->be->cache->purge(c->s, value_before, now, n));
  return rc == ESG_OK ? ESG_OK : relay(c, rc);
}
