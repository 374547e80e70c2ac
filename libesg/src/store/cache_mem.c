/*
 * The cache's memory tier: per handle, an open-addressing table (linear
 * probing, backward-shift delete) plus an intrusive LRU list, bounded by
 * entries and bytes. It holds only fresh entries, so a memory hit needs one
 * clock read, no allocation and no SQL; any doubt (not fresh, or changed by
 * another handle) falls back to the store. The lookup itself (mem_hit) is
 * inline in cache_int.h, for the hot path; this file changes the tier.
 */
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"

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

static void mem_remove(esg_cache *c, esg__ment *e, size_t slot) {
  slot_delete(c, slot);
  lru_unlink(c, e);
  c->count--;
  c->bytes -= e->cost;
  esg__free(e);
}

void esg__cache_mem_drop(esg_cache *c, uint64_t h, const char *key, size_t klen) {
  size_t slot;
  esg__ment *e;
  if (c->mem_on && c->count && (e = mem_find(c, h, key, klen, &slot))) mem_remove(c, e, slot);
}

static bool mem_grow(esg_cache *c) {
  size_t cap = (c->mask + 1) * 2;
  esg__mslot *ns = esg__calloc(cap, sizeof *ns);
  if (!ns) return false;
  for (size_t i = 0; i <= c->mask; i++) {
    if (!c->slots[i].e) continue;
    size_t j = c->slots[i].hash & (cap - 1);
    while (ns[j].e) j = (j + 1) & (cap - 1);
    ns[j] = c->slots[i];
  }
  esg__free(c->slots);
  c->slots = ns;
  c->mask = cap - 1;
  return true;
}

/*
 * Puts a fresh entry in memory, evicting from the LRU tail to stay within the
 * bounds. Best effort: when memory is short or the entry alone is over the byte
 * bound it is simply not kept (the store tier still has it).
 */
void esg__cache_mem_put(esg_cache *c, uint64_t h, const char *key, size_t klen, const esg__cache_row *row,
                        uint64_t stamp, int64_t now) {
  if (!c->mem_on) return;
  esg__cache_mem_drop(c, h, key, klen);
  size_t vlen = row->negative ? 0 : row->len;
  size_t cost = sizeof(esg__ment) + klen + vlen + 2;
  if (cost > c->mem_max_bytes) return;
  if ((c->count + 1) * 2 > c->mask + 1 && !mem_grow(c)) return;
  esg__ment *e = esg__malloc(cost);
  if (!e) return;
  e->hash = h;
  e->stamp = stamp;
  e->fresh_until = c->mem_ttl > 0 && esg__time_add(now, c->mem_ttl) < row->expires ? esg__time_add(now, c->mem_ttl) : row->expires;
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
    esg__ment *victim = c->tail;
    size_t slot = 0;
    mem_find(c, victim->hash, victim->data, victim->klen, &slot);
    mem_remove(c, victim, slot);
    c->st.evictions++;
  }
}

void esg__cache_mem_free_all(esg_cache *c) {
  for (esg__ment *e = c->head, *n; e; e = n) {
    n = e->next;
    esg__free(e);
  }
  esg__free(c->slots);
  c->slots = NULL;
  c->head = c->tail = NULL;
  c->count = c->bytes = 0;
}
