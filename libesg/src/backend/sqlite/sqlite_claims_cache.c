/*
 * SQLite backend: the completed claims a handle knows, so that repeats of a key
 * are answered without a read. A completed claim is final until it expires: only
 * a purge after its expiry or a takeover after its expiry changes it. This
 * handle's own purges and takeovers update the cache (sqlite_claims.c); any other
 * connection's commit (another process, another handle, the sqlite3 shell) may
 * have done one, so the cache is forgotten whole when one has happened. Nothing
 * is written: it is a read cache, lost with the handle.
 *
 * Noticing another connection's commit cheaply. PRAGMA data_version changes when
 * another connection commits (not when this one does), but it costs a read
 * transaction, about as much as the read it would save. The first page of the WAL
 * index (shared memory, mapped by SQLite through its VFS) starts with a header
 * that every commit rewrites, and that SQLite's own readers compare to decide
 * whether their page cache is still good (walIndexTryHdr in wal.c; its layout is
 * part of the file format, walformat.html). So a hit reads that header, a few
 * nanoseconds: unchanged since the cache was known good means no commit at all
 * since. When it has changed, PRAGMA data_version tells this handle's own commits
 * (cache kept) from another's (cache forgotten). Stores not in WAL mode
 * (:memory:) ask the pragma on every hit.
 *
 * Rollbacks: the cache learns completions made inside a transaction (a batch, a
 * group, a unit of its own) before they commit, which is right for this handle
 * (it reads its own uncommitted writes), until the transaction rolls back. So any
 * rollback, asked for or SQLite's own after an error (its rollback hook), and any
 * failed commit forget the cache whole: they are rare.
 *
 * Forgetting is O(1): entries carry the generation they were learnt in, and an
 * entry of an older one is a miss, removed when met. Memory is bounded by bytes;
 * when full, a hand sweeping the table evicts whatever it meets next.
 */
#include <stdlib.h>
#include <string.h>
#include "sqlite_int.h"

#define MAX_BYTES ((size_t)16 << 20)  /* as much again as the page cache (sqlite.c) */
#define MAX_ENTRY (MAX_BYTES / 256)   /* a larger record is read from the table each time */
#define MIN_SLOTS 1024
#define HDR 48                        /* one copy of the WAL-index header */
#define HDR_IS_INIT 12                /* its isInit byte: 0 while the index is being built */
#define WALINDEX_PGSZ 32768           /* the size SQLite maps the WAL index in */
#define WALINDEX_VERSION 3007000      /* its iVersion field, the layout read here */

/* Small, so that a hit's key, hash and fields share a cache line or two. */
typedef struct ent {
  int64_t token, lease_until, expires;
  uint64_t gen;                 /* learnt in this generation; older ones are forgotten */
  int32_t attempts;
  uint32_t rlen;
  uint16_t klen;                /* (ESG_KEY_MAX) */
  uint8_t hlen;                 /* (ESG_HASH_MAX) */
  bool has_result;              /* a NULL result and an empty one stay apart */
  char data[];                  /* key \0, hash, result */
} ent;

typedef struct slot {
  uint64_t h;
  ent *e;                       /* NULL: empty */
} slot;

struct esg__cc {
  slot *slots;
  size_t mask, count, bytes, hand;
  uint64_t gen;
  /* what is known good: the WAL-index header (hdr_ok) and data_version (dv_ok) of a
     moment before every live entry was learnt, with no other connection's commit since */
  const volatile unsigned char *shm; /* the WAL index's first page; NULL: ask the pragma each time */
  unsigned char hdr[HDR];
  bool hdr_ok, dv_ok;
  int64_t dv;
};

static const char SQL_DATA_VERSION[] = "PRAGMA data_version";

/* ------------------------------------------------------------ the table -- */

/* Bytes an entry accounts for: itself and its share of the table (kept at most half full). */
static size_t cost_of(size_t klen, size_t hlen, size_t rlen) {
  return sizeof(ent) + klen + 1 + hlen + rlen + 2 * sizeof(slot);
}

static ent *find(const esg__cc *c, uint64_t h, const char *key, size_t klen, size_t *at) {
  for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
    ent *e = c->slots[i].e;
    if (!e) return NULL;
    if (c->slots[i].h == h && e->klen == klen && memcmp(e->data, key, klen) == 0) {
      *at = i;
      return e;
    }
  }
}

/* Removes the entry at slot i; backward-shift deletion keeps every probe chain unbroken. */
static void remove_at(esg__cc *c, size_t i) {
  ent *e = c->slots[i].e;
  c->count--;
  c->bytes -= cost_of(e->klen, e->hlen, e->rlen);
  free(e);
  for (size_t j = i;;) {
    j = (j + 1) & c->mask;
    if (!c->slots[j].e) break;
    size_t k = c->slots[j].h & c->mask; /* where the entry at j would like to be */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      c->slots[i] = c->slots[j];
      i = j;
    }
  }
  c->slots[i].e = NULL;
}

static bool grow(esg__cc *c) {
  size_t cap = c->slots ? (c->mask + 1) * 2 : MIN_SLOTS;
  slot *ns = calloc(cap, sizeof *ns);
  if (!ns) return false;
  for (size_t i = 0; c->slots && i <= c->mask; i++) {
    if (!c->slots[i].e) continue;
    size_t j = c->slots[i].h & (cap - 1);
    while (ns[j].e) j = (j + 1) & (cap - 1);
    ns[j] = c->slots[i];
  }
  free(c->slots);
  c->slots = ns;
  c->mask = cap - 1;
  return true;
}

/* Forgets every entry, in O(1). */
static void forget(esg__cc *c) { c->gen++; }

/* --------------------------------------------------------- validity -- */

/* Reads the WAL-index header as SQLite's readers do: copy [0], barrier, copy [1]
   (writers write [1] first); false while they differ (being written) or it is not built. */
static bool peek(const esg__cc *c, unsigned char h[HDR]) {
  unsigned char h2[HDR];
  memcpy(h, (const void *)c->shm, HDR);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  memcpy(h2, (const void *)(c->shm + HDR), HDR);
  return memcmp(h, h2, HDR) == 0 && h[HDR_IS_INIT] != 0;
}

static bool data_version(esg__sq *q, int64_t *dv) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_DATA_VERSION);
  if (!st) return false;
  bool ok = sqlite3_step(st) == SQLITE_ROW;
  if (ok) *dv = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return ok;
}

/*
 * Whether the live entries still hold: no other connection has committed since
 * the moment known good. If one has, or it cannot tell, the cache is forgotten
 * and false returned; either way the moment known good becomes now. (The header
 * is read before the pragma: a commit between the two changes the header again,
 * so the next hit asks again.)
 */
static bool still_good(esg__sq *q, esg__cc *c) {
  unsigned char h[HDR];
  bool stable = c->shm && peek(c, h);
  if (stable && c->hdr_ok && memcmp(h, c->hdr, HDR) == 0) return true; /* no commit at all since */
  int64_t dv = 0;
  bool ok = data_version(q, &dv);
  bool good = ok && c->dv_ok && dv == c->dv; /* only this connection's own commits since */
  if (!good) forget(c);
  c->dv = dv;
  c->dv_ok = ok;
  c->hdr_ok = ok && stable;
  if (c->hdr_ok) memcpy(c->hdr, h, HDR);
  return good;
}

/* In WAL mode, maps the WAL index's first page (already mapped by SQLite: this returns
   its mapping); NULL otherwise, or when the layout is not the one read here. */
static const volatile unsigned char *wal_index(esg__sq *q) {
  sqlite3_stmt *st = NULL;
  bool wal = false;
  if (sqlite3_prepare_v2(q->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    const char *m = (const char *)sqlite3_column_text(st, 0);
    wal = m && strcmp(m, "wal") == 0;
  }
  sqlite3_finalize(st);
  sqlite3_file *f = NULL;
  if (!wal || sqlite3_file_control(q->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
      !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
    return NULL;
  void volatile *p = NULL;
  if (f->pMethods->xShmMap(f, 0, WALINDEX_PGSZ, 0, &p) != SQLITE_OK || !p) return NULL;
  uint32_t version;
  memcpy(&version, (const void *)p, sizeof version); /* native byte order, like the whole index */
  return version == WALINDEX_VERSION ? (const volatile unsigned char *)p : NULL;
}

/* SQLite's rollback hook: any rollback, asked for or after an error. */
static void on_rollback(void *ud) { forget(ud); }

/* ------------------------------------------------------------- the API -- */

void esg__cc_open(esg__sq *q) {
  esg__cc *c = calloc(1, sizeof *c);
  if (!c) return; /* then none: every claim reads the table */
  c->gen = 1;
  c->shm = wal_index(q);
  q->cc = c;
  still_good(q, c); /* the first moment known good */
  sqlite3_rollback_hook(q->db, on_rollback, c);
}

void esg__cc_free(esg__sq *q) {
  esg__cc *c = q->cc;
  if (!c) return;
  for (size_t i = 0; c->slots && i <= c->mask; i++) free(c->slots[i].e);
  free(c->slots);
  free(c);
  q->cc = NULL;
}

bool esg__cc_get(esg__sq *q, const char *key, int64_t now, esg__sq_row *row) {
  esg__cc *c = q->cc;
  if (!c || !c->count) return false;
  size_t i;
  ent *e = find(c, esg__fnv1a(key), key, strlen(key), &i);
  if (!e) return false;
  if (e->gen != c->gen || e->expires <= now) { /* forgotten, or expired: the table decides */
    remove_at(c, i);
    return false;
  }
  if (!still_good(q, c)) return false;
  /* the result is copied, as a read's is, so it outlives any change to the cache */
  if (esg__buf_set(&q->result, e->data + e->klen + 1 + e->hlen, e->rlen) != ESG_OK) return false;
  row->done = true;
  row->hash = e->hlen ? e->data + e->klen + 1 : NULL;
  row->hash_len = e->hlen;
  row->token = e->token;
  row->attempts = e->attempts;
  row->lease_until = e->lease_until;
  row->expires = e->expires;
  row->ttl = 0; /* (not kept: only a completion uses it, and a completed claim has none) */
  row->result = e->has_result ? q->result.data : NULL;
  row->result_len = e->rlen;
  return true;
}

void esg__cc_put(esg__sq *q, const char *key, const esg__sq_row *row) {
  esg__cc *c = q->cc;
  if (!c || !row->done) return;
  uint64_t h = esg__fnv1a(key);
  size_t i, klen = strlen(key);
  if (c->count && find(c, h, key, klen, &i)) remove_at(c, i);
  size_t rlen = row->result ? row->result_len : 0;
  size_t cost = cost_of(klen, row->hash_len, rlen);
  if (cost > MAX_ENTRY || row->hash_len > ESG_HASH_MAX || klen > ESG_KEY_MAX) return;
  while (c->count && c->bytes + cost > MAX_BYTES) { /* evict what the hand meets next */
    while (!c->slots[c->hand & c->mask].e) c->hand++;
    remove_at(c, c->hand & c->mask);
  }
  if ((c->count + 1) * 2 > (c->slots ? c->mask + 1 : 0) && !grow(c)) return;
  ent *e = malloc(sizeof(ent) + klen + 1 + row->hash_len + rlen);
  if (!e) return;
  e->gen = c->gen;
  e->token = row->token;
  e->lease_until = row->lease_until;
  e->expires = row->expires;
  e->attempts = row->attempts;
  e->has_result = row->result != NULL;
  e->klen = (uint16_t)klen;
  e->hlen = (uint8_t)row->hash_len;
  e->rlen = (uint32_t)rlen;
  memcpy(e->data, key, klen + 1);
  if (row->hash_len) memcpy(e->data + klen + 1, row->hash, row->hash_len);
  if (e->rlen) memcpy(e->data + klen + 1 + e->hlen, row->result, e->rlen);
  for (i = h & c->mask; c->slots[i].e; i = (i + 1) & c->mask) {
  }
  c->slots[i].h = h;
  c->slots[i].e = e;
  c->count++;
  c->bytes += cost;
}

void esg__cc_purged(esg__sq *q, int64_t now) {
  esg__cc *c = q->cc;
  if (!c) return;
  /* backward shifts may move a later entry into slot i: look at i again */
  for (size_t i = 0; c->count && i <= c->mask;) {
    ent *e = c->slots[i].e;
    if (e && (e->expires <= now || e->gen != c->gen)) remove_at(c, i);
    else i++;
  }
}

void esg__cc_commit_failed(esg__sq *q) {
  if (q->cc) forget(q->cc);
}
