/*
 * The enrichment cache: values that egress needs but events lack, kept beside
 * the store so a gateway calls the external system as little as possible.
 *
 * Two tiers: a bounded in-memory LRU per cache handle in front of a table in the
 * store (which survives restarts and is shared by every process on the file).
 * Reads answer hit, miss, negative (known absent) or stale; esg_cache_get_or_load
 * reads through a loader callback with single flight, negative caching and
 * stale-if-error; esg_cache_collect materialises entities carried by events under
 * the inverse optimistic lock. See docs/cache.md.
 *
 * One cache handle per store handle, used by one thread at a time (like the store).
 */
#ifndef ESG_CACHE_H
#define ESG_CACHE_H

#include "esg/common.h"
#include "esg/event.h"
#include "esg/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A cache opened on a store. Opaque. */
typedef struct esg_cache esg_cache;

/** Options for esg_cache_open: start from ESG_CACHE_OPTS_INIT (or pass NULL); zero fields mean the defaults. */
typedef struct esg_cache_opts {
  size_t size;               /* sizeof(esg_cache_opts): start from ESG_CACHE_OPTS_INIT */
  int64_t ttl_ms;          /* how long a value stays fresh; 0 = 300000 (5 min) */
  int64_t negative_ttl_ms; /* how long "known absent" stays fresh; 0 = 30000 (30 s) */
  int64_t max_stale_ms;    /* how long past its TTL a value may still be served as
                              stale (by esg_cache_get, and by get_or_load when the
                              loader fails); 0 = 3600000 (1 h); -1 = never */
  int64_t load_timeout_ms; /* the loader's time budget, read on the store's clock;
                              0 = 10000 (10 s); -1 = no limit */
  int64_t mem_entries;     /* memory tier: most entries; 0 = 10000; -1 = no memory tier */
  int64_t mem_bytes;       /* memory tier: most bytes (keys, values and per-entry
                              overhead); 0 = 64 MiB; -1 = no memory tier */
  int64_t mem_ttl_ms;      /* longest a memory entry is trusted before the store is
                              read again (bounds how long another process's write
                              goes unseen); 0 = as long as the entry is fresh */
  size_t max_value_bytes;  /* largest value; 0 = ESG_EVENT_MAX_BYTES (1 MiB) */
  int no_json_check;       /* 0: values must be JSON (checked on put, load, collect);
                              1: values are any bytes */
  const char *collect_field;    /* esg_cache_collect: the envelope key holding the
                                   entity; NULL = the one non-envelope key whose
                                   value is an object */
  const char *collect_id_field; /* the entity's id member; NULL = "id" */
  const char *version_field;    /* an integer member of the entity (or of a put or
                                   loaded JSON object) used as its version; NULL =
                                   versions are event timestamps (collect) and the
                                   write time (put, load) */
} esg_cache_opts;
#define ESG_CACHE_OPTS_INIT {.size = sizeof(esg_cache_opts)}

/** What a lookup found. */
typedef enum esg_cache_result {
  ESG_CACHE_MISS = 0,     /* nothing usable: absent, or past its TTL and max staleness */
  ESG_CACHE_HIT = 1,      /* a fresh value */
  ESG_CACHE_NEGATIVE = 2, /* fresh "known absent": do not ask the external system */
  ESG_CACHE_STALE = 3     /* a value past its TTL but within max_stale_ms */
} esg_cache_result;

/**
 * What a lookup reports. value points into the cache: valid until the next call
 * on the cache handle; it is NUL-terminated (the NUL is not counted in len).
 */
typedef struct esg_cache_entry {
  esg_cache_result result;
  const char *value;   /* HIT and STALE: the value; NULL otherwise */
  size_t len;
  int64_t version;     /* the entry's version (see esg_cache_opts.version_field) */
  int64_t expires;     /* epoch ms when it stops (stopped) being fresh; 0 on MISS */
  int loaded;          /* get_or_load: 1 if this call ran the loader */
  int load_status;     /* get_or_load: ESG_OK, or why the load failed (ECALLBACK,
                          ETIMEDOUT, EJSON, ETOOBIG, or the store's error) when the
                          answer is STALE after a failed load */
} esg_cache_entry;

/** Counters of one cache handle since it was opened. */
typedef struct esg_cache_stats {
  uint64_t hits;          /* answered with a fresh value without loading */
  uint64_t misses;        /* found nothing fresh (get: MISS; get_or_load: had to
                             load or wait for another caller's load) */
  uint64_t negatives;     /* answered with a fresh negative */
  uint64_t stale;         /* answered with a stale value */
  uint64_t loads;         /* loader calls */
  uint64_t load_failures; /* loader calls that failed, timed out or returned garbage */
  uint64_t mem_hits;      /* hits and negatives answered by the memory tier */
  uint64_t evictions;     /* memory entries dropped to respect the bounds */
  uint64_t mem_entries;   /* entries now in the memory tier */
  uint64_t mem_bytes;     /* bytes now accounted to the memory tier */
} esg_cache_stats;

/**
 * Opens a cache on store s, which must stay open until esg_cache_close and is
 * used through the cache by the same thread. opts may be NULL (the defaults);
 * its strings are copied. On success *out is the handle and ESG_OK is returned;
 * on failure *out is NULL and the detail is in esg_errmsg(NULL) (ESG_EINVAL names
 * the bad option). Does not block.
 */
ESG_API int esg_cache_open(esg_cache **out, esg_store *s, const esg_cache_opts *opts);

/** Frees the cache and its memory tier; the store tier stays in the store. NULL is fine. */
ESG_API void esg_cache_close(esg_cache *c);

/**
 * Looks key up: the memory tier first, then the store. Returns ESG_OK with
 * out->result HIT, NEGATIVE, STALE or MISS, or an error (ESG_EINVAL for a NULL
 * or empty key or NULL out, ESG_ETOOBIG for a key over ESG_KEY_MAX bytes, or the
 * store's error). A memory hit neither allocates nor touches the store, and
 * reads the clock once; otherwise blocks on the store (up to its busy timeout).
 */
ESG_API int esg_cache_get(esg_cache *c, const char *key, esg_cache_entry *out);

/**
 * Stores value[0..len) (copied) under key, fresh for ttl_ms (0 = the cache's
 * ttl_ms), replacing whatever was there, whatever its version (a put is an
 * authoritative write). ESG_OK, or ESG_EINVAL (NULL value, negative ttl),
 * ESG_ETOOBIG (value over max_value_bytes), ESG_EJSON (not JSON when the cache
 * checks JSON) or the store's error; nothing is written on error. Blocks on the store.
 */
ESG_API int esg_cache_put(esg_cache *c, const char *key, const void *value, size_t len, int64_t ttl_ms);

/**
 * Records that key is known absent, fresh for ttl_ms (0 = negative_ttl_ms).
 * ESG_OK or an error as for esg_cache_put. Blocks on the store.
 */
ESG_API int esg_cache_put_negative(esg_cache *c, const char *key, int64_t ttl_ms);

/**
 * Forgets key in both tiers (and in the memory tier of every other cache handle
 * of this process on the same store file). ESG_OK whether or not it was cached.
 * Blocks on the store.
 */
ESG_API int esg_cache_invalidate(esg_cache *c, const char *key);

/** Handed to a loader to receive its value. Opaque; valid only during the loader call. */
typedef struct esg_cache_load esg_cache_load;

/**
 * A loader fetches key from the external system. It must finish by deadline
 * (epoch ms on the store's clock; INT64_MAX when there is no limit): pass it on
 * as the timeout of the HTTP call. It returns:
 *   ESG_OK         after esg_cache_load_set (the value is cached and returned);
 *   ESG_NOT_FOUND  the key does not exist (cached as a negative);
 *   anything else  failure (see esg_cache_get_or_load).
 * It must not use the cache handle it was called from.
 */
typedef int (*esg_cache_loader)(void *ud, const char *key, int64_t deadline, esg_cache_load *ld);

/**
 * From a loader: sets the loaded value (copied), fresh for ttl_ms (0 = the
 * cache's ttl_ms). ESG_OK, ESG_EINVAL (NULL ld or value, negative ttl),
 * ESG_ETOOBIG (over max_value_bytes: the load then fails) or ESG_ENOMEM.
 */
ESG_API int esg_cache_load_set(esg_cache_load *ld, const void *value, size_t len, int64_t ttl_ms);

/** From a loader that is about to fail: the text esg_errmsg will give (copied, cut at 256 bytes). */
ESG_API void esg_cache_load_error(esg_cache_load *ld, const char *msg);

/**
 * Read-through: answers like esg_cache_get when the key is fresh (HIT or
 * NEGATIVE); otherwise calls loader(ud, key, deadline, ld) once per key at a time
 * across every cache handle of this process on the same store file (single
 * flight: concurrent callers wait for that load, then read its result).
 * - loader returns ESG_OK with a value: cached; ESG_OK, out->result HIT, out->loaded 1.
 * - loader returns ESG_NOT_FOUND: a negative is cached; ESG_OK, result NEGATIVE.
 * - loader fails (ESG_ECALLBACK), runs past its deadline (ESG_ETIMEDOUT: the
 *   result is discarded), returns ESG_OK with no value (ESG_ECALLBACK), a value
 *   over max_value_bytes (ESG_ETOOBIG) or non-JSON when the cache checks JSON
 *   (ESG_EJSON), or it runs out of memory (ESG_ENOMEM, its own or
 *   esg_cache_load_set's, returned by the loader): nothing is written; if a stale value within max_stale_ms exists
 *   it is served: ESG_OK, result STALE, out->load_status the failure; otherwise
 *   the failure code is returned with result MISS. esg_errmsg(c) names the failure.
 * A caller waiting for another's load waits at most load_timeout_ms (then
 * ESG_ETIMEDOUT, or the stale value). Blocks on the loader and the store.
 */
ESG_API int esg_cache_get_or_load(esg_cache *c, const char *key, esg_cache_loader loader, void *ud,
                                  esg_cache_entry *out);

/**
 * Materialises the entity carried by event ev: the object under collect_field
 * (or the one non-envelope key holding an object), cached under
 * "<field>/<entity id>" with version ev's timestamp (or the entity's
 * version_field), fresh for ttl_ms, only if that version is newer than the
 * stored one (inverse optimistic lock). Returns ESG_OK (written), ESG_STALE (an
 * equal or newer version is stored: nothing written, a normal outcome),
 * ESG_NOT_FOUND (the event carries no entity: nothing written), ESG_EEVENT (two
 * candidate keys, an entity without a string or integer id, a missing or
 * non-integer version field), ESG_ETOOBIG, or the store's error. *key (if not
 * NULL) gets the cache key, owned by the cache, valid until the next call on it.
 * Blocks on the store.
 */
ESG_API int esg_cache_collect(esg_cache *c, const esg_event *ev, const char **key);

/** Copies the handle's counters into *out. ESG_OK or ESG_EINVAL. Does not block. */
ESG_API int esg_cache_stats_get(esg_cache *c, esg_cache_stats *out);

/**
 * Deletes from the store the entries too old to be served even as stale (past
 * their TTL by more than max_stale_ms). *n (if not NULL) gets how many. An
 * entry's version is forgotten with it. Blocks on the store.
 */
ESG_API int esg_cache_purge(esg_cache *c, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif
