/*
 * Read-through: esg_cache_get_or_load and the loader's handle. A miss runs the
 * caller's loader once per key across the process (single flight, see
 * cache_flight.c) and stores its value or, for an absent key, a negative. When
 * the load fails, a stale value is served if the store still has one
 * (stale-if-error); the failure is what the caller reads either way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"

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
  int64_t deadline = c->load_timeout < 0 ? INT64_MAX : esg__time_add(t0, c->load_timeout);
  c->st.loads++;
  c->in_load = true;
  int lrc;
  ESG__COUNTED(c->s, lrc = loader(ud, key, deadline, &ld));
  c->in_load = false;
  int64_t now = c->clock(c->clock_ud);
  const char *why = ld.msg[0] ? ": " : "";
  int rc;
  if (now > deadline) {
    rc = esg__fail(&c->err, ESG_ETIMEDOUT,
                   "loader for cache key \"%s\" took %lld ms; the limit is %lld ms: its result was discarded%s%s", key,
                   (long long)(now - t0), (long long)c->load_timeout, why, ld.msg);
  } else if (lrc == ESG_NOT_FOUND) {
    esg__cache_row row = {true, c->version_field ? 0 : now, esg__time_add(now, c->neg_ttl), now, NULL, 0};
    rc = esg__cache_write(c, key, klen, h, &row, false, now);
    if (rc == ESG_OK) {
      memset(out, 0, sizeof *out);
      out->result = ESG_CACHE_NEGATIVE;
      out->version = row.version;
      out->expires = row.expires;
      out->loaded = 1;
      return ESG_OK;
    }
  } else if (lrc == ESG_ENOMEM && !ld.too_big && !ld.nomem) { /* the loader's own allocation */
    rc = esg__fail(&c->err, ESG_ENOMEM, "loader for cache key \"%s\" ran out of memory%s%s", key, why, ld.msg);
  } else if (lrc != ESG_OK && !ld.too_big && !ld.nomem) { /* (a loader may pass load_set's error on) */
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
    esg__cache_row row = {false, c->version_field ? 0 : now, esg__time_add(now, ld.ttl ? ld.ttl : c->ttl), now,
                          c->loaded.data, c->loaded.len};
    rc = esg__cache_check_value(c, "loaded value", key, row.value, row.len, &row.version);
    if (rc == ESG_OK) rc = esg__cache_write(c, key, klen, h, &row, false, now);
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
  int rc = esg__cache_lookup(c, key, klen, h, c->clock(c->clock_ud), out);
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

int esg_cache_get_or_load(esg_cache *c, const char *key, esg_cache_loader loader, void *ud, esg_cache_entry *out) {
  if (!c) return esg__fail(NULL, ESG_EINVAL, "cache is NULL");
  size_t klen = key ? strlen(key) : 0;
  /* one unsigned compare rejects both empty and oversized keys on the hot path */
  if (klen - 1 >= ESG_KEY_MAX || !out || !loader || c->in_load || !c->s) {
    int rc = esg__cache_check_call(c, key, &klen);
    if (rc != ESG_OK) return rc;
    if (!out) return esg__fail(&c->err, ESG_EINVAL, "out is NULL");
    if (!loader) return esg__fail(&c->err, ESG_EINVAL, "loader is NULL");
  } else if (c->s->group || c->s->forks != esg__forks) {
    int rc = esg__cache_check_idle(c); /* the store's entry (a due group commits) */
    if (rc != ESG_OK) return rc;
  }
  uint64_t h = key_hash(key, klen);
  int64_t now;
  int rc = cache_read(c, key, klen, h, &now, out);
  if (rc != ESG_OK || out->result == ESG_CACHE_HIT || out->result == ESG_CACHE_NEGATIVE) return rc;

  esg__flight *f;
  bool joined;
  int lrc = esg__cache_flight_enter(c, h, key, klen, &f, &joined);
  if (joined) {
    c->st.misses++;
    if (lrc != ESG_OK) return serve_stale(c, key, klen, h, lrc, false, out);
    /* The leader stored its result: read it like any other entry. */
    if ((rc = esg__cache_lookup(c, key, klen, h, c->clock(c->clock_ud), out)) != ESG_OK) return rc;
    if (out->result == ESG_CACHE_STALE) c->st.stale++;
    return ESG_OK;
  }
  if (lrc != ESG_OK) return lrc;

  /* Another handle's load may have finished between our read and our registration. */
  rc = esg__cache_lookup(c, key, klen, h, now, out);
  if (rc == ESG_OK && (out->result == ESG_CACHE_HIT || out->result == ESG_CACHE_NEGATIVE)) {
    esg__cache_flight_finish(c->g, f, ESG_OK, "");
    count_fresh(c, out);
    return ESG_OK;
  }
  c->st.misses++;
  lrc = rc != ESG_OK ? rc : run_loader(c, key, klen, h, loader, ud, out);
  esg__cache_flight_finish(c->g, f, lrc, lrc == ESG_OK ? "" : c->err.msg);
  if (lrc == ESG_OK) return ESG_OK;
  return serve_stale(c, key, klen, h, lrc, rc == ESG_OK, out);
}
