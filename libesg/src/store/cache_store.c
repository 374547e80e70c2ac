/*
 * The cache's store tier: reading and writing rows through the backend
 * (cache_be.h) and judging a row by the contract of DESIGN.md "Enrichment
 * cache". An entry is fresh until `expires`; a value (never a negative) past it
 * is still served as *stale* for max_stale_ms; everything else is a miss. Both
 * keep the memory tier and the process-wide stamps in step, so that no handle
 * serves from memory what the store no longer holds.
 */
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"

int esg__cache_relay(esg_cache *c, int rc) { return esg__fail(&c->err, rc, "%s", c->s->err.msg); }

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
    if (!c->s->batch) esg__cache_mem_put(c, h, key, klen, row, stamp, now); /* a batch may still roll back */
  } else if (!row->negative && c->max_stale >= 0 && now < esg__time_add(row->expires, c->max_stale)) {
    out->result = ESG_CACHE_STALE;
    out->value = row->value;
    out->len = row->len;
  } else {
    out->result = ESG_CACHE_MISS;
    out->version = out->expires = 0;
  }
}

int esg__cache_lookup(esg_cache *c, const char *key, size_t klen, uint64_t h, int64_t now, esg_cache_entry *out) {
  /* The stamp is read before the row: a write that lands after the read bumps it
     afterwards, so the memory copy made from this read is then seen as changed. */
  uint64_t stamp = atomic_load_explicit(stamp_of(c, h), memory_order_acquire);
  esg__cache_row row;
  out->loaded = 0;
  out->load_status = ESG_OK;
  int rc = c->s->be->cache_get(c->s->b, key, klen, &c->val, &row);
  if (rc == ESG_NOT_FOUND) {
    memset(out, 0, sizeof *out);
    out->result = ESG_CACHE_MISS;
    return ESG_OK;
  }
  if (rc != ESG_OK) return esg__cache_relay(c, rc);
  classify(c, key, klen, h, &row, stamp, now, out);
  return ESG_OK;
}

int esg__cache_write(esg_cache *c, const char *key, size_t klen, uint64_t h, const esg__cache_row *row,
                     bool conditional, int64_t now) {
  esg_store *s = c->s;
  _Atomic uint64_t *stamp = stamp_of(c, h);
  uint64_t pre = atomic_load_explicit(stamp, memory_order_acquire);
  esg__cache_mem_drop(c, h, key, klen);
  int rc = conditional ? s->be->cache_put_if_newer(s->b, key, klen, row) : s->be->cache_put(s->b, key, klen, row);
  if (rc < 0) return esg__cache_relay(c, rc);
  if (rc != ESG_OK) return rc;
  /* Other handles of the process see the bump and re-read the store. Keep our own
     copy only if nobody else wrote the bucket meanwhile (else the order of the two
     writes is unknown), and not inside a batch, which may still roll back. */
  uint64_t prev = atomic_fetch_add_explicit(stamp, 1, memory_order_acq_rel);
  if (prev == pre && !s->batch && now < row->expires) esg__cache_mem_put(c, h, key, klen, row, pre + 1, now);
  return ESG_OK;
}
