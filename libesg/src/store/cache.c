/*
 * The enrichment cache's public face: opening and closing a handle, and the
 * direct calls (get, put, put_negative, invalidate, stats, purge), by the
 * contract of DESIGN.md "Enrichment cache" on top of the store tier
 * (cache_store.c) and a bounded in-memory LRU per handle (cache_mem.c).
 * Read-through is in cache_load.c, collect in cache_json.c; what the files
 * share is in cache_int.h.
 */
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"

#define DEFAULT_TTL_MS 300000
#define DEFAULT_NEG_TTL_MS 30000
#define DEFAULT_MAX_STALE_MS 3600000
#define DEFAULT_LOAD_TIMEOUT_MS 10000
#define DEFAULT_MEM_ENTRIES 10000
#define DEFAULT_MEM_BYTES (64 * 1024 * 1024)

/* ---------------------------------------------------------------- checks -- */

/* (also the store's entry: a due group commits even on a hit in memory) */
int esg__cache_check_idle(esg_cache *c) {
  if (!c->s) return esg__fail(&c->err, ESG_ESTATE, "the cache's store was closed");
  if (c->in_load)
    return esg__fail(&c->err, ESG_ESTATE, "the cache is in use by its loader (a loader must not call its own cache)");
  int rc = esg__enter_read(c->s);
  return rc == ESG_OK ? ESG_OK : esg__cache_relay(c, rc);
}

int esg__cache_check_call(esg_cache *c, const char *key, size_t *klen) {
  int rc = esg__cache_check_idle(c);
  if (rc == ESG_OK) rc = esg__check_key(&c->err, "cache key", key);
  if (rc == ESG_OK) *klen = strlen(key);
  return rc;
}

/* ------------------------------------------------------------- open/close -- */

/* The store is closing: its rows are gone to this handle, and so are the copies. */
static void detach(esg__dep *d) {
  esg_cache *c = (esg_cache *)((char *)d - offsetof(esg_cache, dep));
  esg__cache_mem_free_all(c);
  c->mem_on = false;
  c->s = NULL;
}

static int dup_opt(const char *v, const char *name, char **out) {
  *out = NULL;
  if (!v) return ESG_OK;
  if (!*v) return esg__fail(NULL, ESG_EINVAL, "cache option %s is empty (use NULL for the default)", name);
  if (!(*out = esg__strdup(v))) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the cache");
  return ESG_OK;
}

int esg_cache_open(esg_cache **out, esg_store *s, const esg_cache_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  esg_cache_opts o;
  int orc = ESG__OPTS_COPY(NULL, esg_cache_opts, &o, opts);
  if (orc != ESG_OK) return orc;
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

  esg_cache *c = esg__calloc(1, sizeof *c);
  if (!c) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the cache");
  esg__handle_init(&c->err, ESG__H_CACHE);
  c->s = s;
  c->forks = esg__forks; /* the group acquired below is this process's */
  esg__dep_link(s, &c->dep, detach);
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
  c->slots = esg__calloc(c->mask + 1, sizeof *c->slots);
  c->g = esg__cache_group_acquire(s->be->identity(s->b));
  if (!c->slots || !c->g) {
    esg_cache_close(c);
    return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the cache");
  }
  *out = c;
  return ESG_OK;
}

void esg_cache_close(esg_cache *c) {
  if (!c) return;
  esg__dep_unlink(&c->dep);
  esg__cache_mem_free_all(c);
  /* in a child of fork() its lock may have been held by a thread of the parent: the group leaks */
  if (c->forks == esg__forks) esg__cache_group_release(c->g);
  esg__buf_free(&c->val);
  esg__buf_free(&c->loaded);
  esg__buf_free(&c->keybuf);
  esg__free(c->collect_field);
  esg__free(c->id_field);
  esg__free(c->version_field);
  esg__handle_end(&c->err);
  esg__free(c);
}

/* ----------------------------------------------------------- get / put -- */

int esg_cache_get(esg_cache *c, const char *key, esg_cache_entry *out) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = key ? strlen(key) : 0;
  /* one unsigned compare rejects both empty and oversized keys on the hot path */
  if (klen - 1 >= ESG_KEY_MAX || !out || c->in_load || !c->s) {
    int rc = esg__cache_check_call(c, key, &klen);
    if (rc != ESG_OK) return rc;
    if (!out) return esg__fail(&c->err, ESG_EINVAL, "out is NULL");
  } else if (c->s->group || c->s->forks != esg__forks) {
    int rc = esg__cache_check_idle(c); /* the store's entry (a due group commits) */
    if (rc != ESG_OK) return rc;
  }
  int64_t now;
  int rc = cache_read(c, key, klen, key_hash(key, klen), &now, out);
  if (rc != ESG_OK) return rc;
  if (out->result == ESG_CACHE_STALE) c->st.stale++;
  else if (out->result == ESG_CACHE_MISS) c->st.misses++;
  return ESG_OK;
}

static int check_ttl(esg_cache *c, int64_t ttl_ms) {
  return ttl_ms < 0 ? esg__fail(&c->err, ESG_EINVAL, "ttl must not be negative (got %lld ms)", (long long)ttl_ms)
                    : ESG_OK;
}

int esg_cache_put(esg_cache *c, const char *key, const void *value, size_t len, int64_t ttl_ms) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = 0;
  int rc = esg__cache_check_call(c, key, &klen);
  if (rc != ESG_OK) return rc;
  if (!value) return esg__fail(&c->err, ESG_EINVAL, "value for cache key \"%s\" is NULL (use esg_cache_put_negative)", key);
  if ((rc = check_ttl(c, ttl_ms)) != ESG_OK) return rc;
  int64_t now = c->clock(c->clock_ud);
  esg__cache_row row = {false, c->version_field ? 0 : now, esg__time_add(now, ttl_ms ? ttl_ms : c->ttl), now, value, len};
  if ((rc = esg__cache_check_value(c, "value", key, value, len, &row.version)) != ESG_OK) return rc;
  return esg__cache_write(c, key, klen, key_hash(key, klen), &row, false, now);
}

int esg_cache_put_negative(esg_cache *c, const char *key, int64_t ttl_ms) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = 0;
  int rc = esg__cache_check_call(c, key, &klen);
  if (rc != ESG_OK) return rc;
  if ((rc = check_ttl(c, ttl_ms)) != ESG_OK) return rc;
  int64_t now = c->clock(c->clock_ud);
  esg__cache_row row = {true, c->version_field ? 0 : now, esg__time_add(now, ttl_ms ? ttl_ms : c->neg_ttl), now, NULL, 0};
  return esg__cache_write(c, key, klen, key_hash(key, klen), &row, false, now);
}

int esg_cache_invalidate(esg_cache *c, const char *key) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = 0;
  int rc = esg__cache_check_call(c, key, &klen);
  if (rc != ESG_OK) return rc;
  uint64_t h = key_hash(key, klen);
  esg__cache_mem_drop(c, h, key, klen);
  rc = c->s->be->cache_delete(c->s->b, key, klen);
  if (rc != ESG_OK) return esg__cache_relay(c, rc);
  atomic_fetch_add_explicit(stamp_of(c, h), 1, memory_order_acq_rel);
  return ESG_OK;
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
  int rc = esg__cache_check_idle(c);
  if (rc != ESG_OK) return rc;
  int64_t now = c->clock(c->clock_ud);
  int64_t value_before = c->max_stale < 0 ? now : esg__time_add(now, -c->max_stale);
  rc = c->s->be->cache_purge(c->s->b, value_before, now, n);
  return rc == ESG_OK ? ESG_OK : esg__cache_relay(c, rc);
}
