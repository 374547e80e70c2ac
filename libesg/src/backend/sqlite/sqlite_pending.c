/*
 * SQLite backend: claims pending in an open group. Under group commit, a claim
 * made while the group's transaction is open is kept in memory, and its row is
 * written once:
 * completed when the owner completes it within the group (one write instead of
 * an insert and an update), or as in progress when the group commits. Nothing is
 * lost by waiting: the open group holds the write lock, so no other process can
 * claim the key meanwhile, and a crash loses the group whole either way.
 */
#include <stdlib.h>
#include <string.h>
#include "sqlite_int.h"

struct esg__pend {
  char *key;                  /* NULL: empty slot */
  bool gone;                  /* removed (a tombstone, until the next write_all) */
  esg__sq_row row;         /* row.hash is re-pointed at hash[] on every use */
  uint8_t hash[ESG_HASH_MAX];
};

esg__pend *esg__pend_find(esg__sq *q, const char *key) {
  if (!q->pend_live) return NULL;
  size_t mask = q->pend_cap - 1;
  for (size_t i = esg__fnv1a(key) & mask;; i = (i + 1) & mask) {
    esg__pend *p = &q->pend[i];
    if (!p->key) return NULL;
    if (!p->gone && strcmp(p->key, key) == 0) {
      p->row.hash = p->row.hash_len ? p->hash : NULL;
      return p;
    }
  }
}

static void clear(esg__sq *q) {
  for (size_t i = 0; i < q->pend_cap; i++) esg__free(q->pend[i].key);
  if (q->pend) memset(q->pend, 0, q->pend_cap * sizeof *q->pend);
  q->pend_used = q->pend_live = 0;
}

/* Keeps the table at most half full, tombstones included; growing rehashes the live entries. */
static int reserve(esg__sq *q) {
  if ((q->pend_used + 1) * 2 <= q->pend_cap) return ESG_OK;
  size_t cap = q->pend_cap ? q->pend_cap : 64;
  while ((q->pend_live + 1) * 2 > cap / 2) cap *= 2;
  esg__pend *old = q->pend, *t = esg__calloc(cap, sizeof *t);
  if (!t) return esg__fail(q->err, ESG_ENOMEM, "out of memory for pending claims");
  size_t old_cap = q->pend_cap;
  for (size_t i = 0; i < old_cap; i++) {
    if (!old[i].key) continue;
    if (old[i].gone) {
      esg__free(old[i].key);
      continue;
    }
    size_t j = esg__fnv1a(old[i].key) & (cap - 1);
    while (t[j].key) j = (j + 1) & (cap - 1);
    t[j] = old[i];
  }
  esg__free(old);
  q->pend = t;
  q->pend_cap = cap;
  q->pend_used = q->pend_live;
  return ESG_OK;
}

int esg__pend_add(esg__sq *q, const char *key, const esg__sq_row *row) {
  int rc = reserve(q);
  if (rc != ESG_OK) return rc;
  char *k = esg__strdup(key);
  if (!k) return esg__fail(q->err, ESG_ENOMEM, "out of memory for pending claims");
  size_t mask = q->pend_cap - 1, i = esg__fnv1a(key) & mask;
  while (q->pend[i].key) i = (i + 1) & mask;
  esg__pend *p = &q->pend[i];
  p->key = k;
  p->gone = false;
  p->row = *row;
  if (row->hash_len) memcpy(p->hash, row->hash, row->hash_len);
  p->row.hash = row->hash_len ? p->hash : NULL;
  q->pend_used++;
  q->pend_live++;
  return ESG_OK;
}

esg__sq_row *esg__pend_row(esg__pend *p) { return &p->row; }

void esg__pend_set(esg__pend *p, const esg__sq_row *row) {
  p->row = *row;
  if (row->hash_len) memmove(p->hash, row->hash, row->hash_len);
  p->row.hash = row->hash_len ? p->hash : NULL;
}

void esg__pend_drop(esg__sq *q, esg__pend *p) {
  p->gone = true;
  q->pend_live--;
}

int esg__pend_write_all(esg__sq *q) {
  int rc = ESG_OK;
  for (size_t i = 0; i < q->pend_cap && q->pend_live; i++) {
    esg__pend *p = &q->pend[i];
    if (!p->key || p->gone) continue;
    p->row.hash = p->row.hash_len ? p->hash : NULL;
    int wrc = esg__sq_claim_replace(q, p->key, &p->row);
    if (wrc != ESG_OK && rc == ESG_OK) rc = wrc;
  }
  clear(q);
  return rc;
}

void esg__pend_free(esg__sq *q) {
  clear(q);
  esg__free(q->pend);
  q->pend = NULL;
  q->pend_cap = 0;
}
