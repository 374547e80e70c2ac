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
 * Forgetting is O(1): records carry the generation they were learnt in, and one
 * of an older generation is a miss, removed when met. Records are appended to
 * chunks of a fixed number, outside the general heap (100,000 small allocations
 * among the caller's slowed its own by a sixth, and replays in order read the
 * chunks in order); when all are used, the oldest chunk is emptied for the next
 * records (first in, first out). The table holds 8-byte slots, at most half full:
 * in all, at most 16 MiB of records and 8 MiB of table (records of 64 bytes; the
 * benchmark's are 104), taken as used.
 */
#include <stdlib.h>
#include <string.h>
#include "sqlite_int.h"

#define CHUNK ((size_t)256 << 10)     /* bytes of records per chunk (a power of two) */
#define NCHUNK 64                     /* 16 MiB of records at most, as much as the page cache */
#define MAX_REC (CHUNK / 4)           /* a larger record is read from the table each time */
#define MIN_SLOTS 1024
#define HDR 48                        /* one copy of the WAL-index header */
#define HDR_IS_INIT 12                /* its isInit byte: 0 while the index is being built */
#define WALINDEX_PGSZ 32768           /* the size SQLite maps the WAL index in */
#define WALINDEX_VERSION 3007000      /* its iVersion field, the layout read here */

enum { REC_RESULT = 1, REC_GONE = 2 };

/* A completed record; small, so that a hit's key, hash and fields share a line or two. */
typedef struct rec {
  uint32_t size;                /* bytes taken in the chunk, a multiple of 8 */
  uint32_t hlo;                 /* the low half of the key's hash (its slot's) */
  uint64_t gen;                 /* learnt in this generation; older ones are forgotten */
  int64_t token, lease_until, expires;
  int32_t attempts;
  uint32_t rlen;
  uint16_t klen;                /* (ESG_KEY_MAX) */
  uint8_t hlen;                 /* (ESG_HASH_MAX) */
  uint8_t flags;                /* REC_RESULT: a result (a NULL one and "" stay apart); REC_GONE: not in the table */
  char data[];                  /* key \0, hash, result */
} rec;

typedef struct slot {
  uint32_t hlo;                 /* the low half of the key's hash: its home, and a first check */
  uint32_t ref;                 /* 1 + the record's offset / 8 across the chunks; 0: empty */
} slot;

struct esg__cc {
  slot *slots;
  size_t mask, count;
  char *chunk[NCHUNK];
  uint32_t fill[NCHUNK];        /* bytes of records in each chunk */
  int cur;                      /* the chunk records go to; -1: none yet */
  uint64_t gen;
  /* what is known good: the WAL-index header (hdr_ok) and data_version (dv_ok) of a
     moment before every live record was learnt, with no other connection's commit since */
  const volatile unsigned char *shm; /* the WAL index's first page; NULL: ask the pragma each time */
  unsigned char hdr[HDR];
  bool hdr_ok, dv_ok;
  int64_t dv;
  /* the handle's latest claim written to the table, learnt when its token completes it,
     if nothing was forgotten since (mgen: the generation it was made in; 0: none) */
  esg__buf mkey;
  esg__sq_row mrow;
  uint8_t mhash[ESG_HASH_MAX];
  uint64_t mgen;
};

static const char SQL_DATA_VERSION[] = "PRAGMA data_version";

/* ------------------------------------------------------------ the table -- */

static rec *rec_at(const esg__cc *c, uint32_t ref) {
  size_t off = (size_t)(ref - 1) * 8;
  return (rec *)(c->chunk[off / CHUNK] + off % CHUNK);
}

static slot *find(const esg__cc *c, uint64_t h, const char *key) {
  for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
    slot *sl = &c->slots[i];
    if (!sl->ref) return NULL;
    if (sl->hlo == (uint32_t)h && strcmp(rec_at(c, sl->ref)->data, key) == 0) return sl;
  }
}

/* Takes the record of slot i out of the table; backward-shift deletion keeps every
   probe chain unbroken. Its bytes stay until its chunk is reused. */
static void remove_at(esg__cc *c, size_t i) {
  rec_at(c, c->slots[i].ref)->flags |= REC_GONE;
  c->count--;
  for (size_t j = i;;) {
    j = (j + 1) & c->mask;
    if (!c->slots[j].ref) break;
    size_t k = c->slots[j].hlo & c->mask; /* where the slot at j would like to be */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      c->slots[i] = c->slots[j];
      i = j;
    }
  }
  c->slots[i].ref = 0;
}

static bool grow(esg__cc *c) {
  size_t cap = c->slots ? (c->mask + 1) * 2 : MIN_SLOTS;
  slot *ns = calloc(cap, sizeof *ns);
  if (!ns) return false;
  for (size_t i = 0; c->slots && i <= c->mask; i++) {
    if (!c->slots[i].ref) continue;
    size_t j = c->slots[i].hlo & (cap - 1);
    while (ns[j].ref) j = (j + 1) & (cap - 1);
    ns[j] = c->slots[i];
  }
  free(c->slots);
  c->slots = ns;
  c->mask = cap - 1;
  return true;
}

/* Moves records to the next chunk: a new one, or the oldest, whose records leave the table. */
static bool next_chunk(esg__cc *c) {
  int n = (c->cur + 1) % NCHUNK;
  if (!c->chunk[n] && !(c->chunk[n] = malloc(CHUNK))) return false;
  for (uint32_t off = 0; off < c->fill[n];) {
    rec *r = (rec *)(c->chunk[n] + off);
    if (!(r->flags & REC_GONE)) {
      uint32_t ref = (uint32_t)(((size_t)n * CHUNK + off) / 8 + 1);
      size_t i = r->hlo & c->mask;
      while (c->slots[i].ref != ref) i = (i + 1) & c->mask;
      remove_at(c, i);
    }
    off += r->size;
  }
  c->fill[n] = 0;
  c->cur = n;
  return true;
}

/* Forgets every record, in O(1). */
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
 * Whether the live records still hold: no other connection has committed since
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
  c->cur = -1;
  c->gen = 1;
  c->shm = wal_index(q);
  q->cc = c;
  still_good(q, c); /* the first moment known good */
  sqlite3_rollback_hook(q->db, on_rollback, c);
}

void esg__cc_free(esg__sq *q) {
  esg__cc *c = q->cc;
  if (!c) return;
  for (int i = 0; i < NCHUNK; i++) free(c->chunk[i]);
  free(c->slots);
  esg__buf_free(&c->mkey);
  free(c);
  q->cc = NULL;
}

bool esg__cc_get(esg__sq *q, const char *key, int64_t now, esg__sq_row *row) {
  esg__cc *c = q->cc;
  if (!c || !c->count) return false;
  slot *sl = find(c, esg__fnv1a(key), key);
  if (!sl) return false;
  const rec *r = rec_at(c, sl->ref);
  const char *hash = r->data + r->klen + 1;
  /* forgotten, or expired (the table decides), or no longer good (a rollback while it
     asked forgets too): out, so that a miss leaves no record of the key */
  if (r->gen != c->gen || r->expires <= now || !still_good(q, c) || r->gen != c->gen ||
      esg__buf_set(&q->result, hash + r->hlen, r->rlen) != ESG_OK) { /* (the result is copied, as a read's is) */
    remove_at(c, (size_t)(sl - c->slots));
    return false;
  }
  row->done = true;
  row->hash = r->hlen ? hash : NULL; /* (valid until the cache changes: judge reads it at once) */
  row->hash_len = r->hlen;
  row->token = r->token;
  row->attempts = r->attempts;
  row->lease_until = r->lease_until;
  row->expires = r->expires;
  row->ttl = 0; /* (not kept: only a completion uses it, and a completed claim has none) */
  row->result = r->flags & REC_RESULT ? q->result.data : NULL;
  row->result_len = r->rlen;
  return true;
}

/* Learns row for key; replace: the table may hold a record of key (else it holds none). */
static void learn(esg__cc *c, const char *key, const esg__sq_row *row, bool replace) {
  if (!c || !row->done) return;
  uint64_t h = esg__fnv1a(key);
  size_t klen = strlen(key), rlen = row->result ? row->result_len : 0;
  slot *old = replace && c->count ? find(c, h, key) : NULL;
  if (old) remove_at(c, (size_t)(old - c->slots));
  size_t size = (sizeof(rec) + klen + 1 + row->hash_len + rlen + 7) & ~(size_t)7;
  if (size > MAX_REC || row->hash_len > ESG_HASH_MAX || klen > ESG_KEY_MAX) return;
  if ((c->count + 1) * 2 > (c->slots ? c->mask + 1 : 0) && !grow(c)) return;
  if ((c->cur < 0 || c->fill[c->cur] + size > CHUNK) && !next_chunk(c)) return;
  size_t off = (size_t)c->cur * CHUNK + c->fill[c->cur];
  rec *r = (rec *)(c->chunk[c->cur] + c->fill[c->cur]);
  c->fill[c->cur] += (uint32_t)size;
  r->size = (uint32_t)size;
  r->hlo = (uint32_t)h;
  r->gen = c->gen;
  r->token = row->token;
  r->lease_until = row->lease_until;
  r->expires = row->expires;
  r->attempts = row->attempts;
  r->rlen = (uint32_t)rlen;
  r->klen = (uint16_t)klen;
  r->hlen = (uint8_t)row->hash_len;
  r->flags = row->result ? REC_RESULT : 0;
  memcpy(r->data, key, klen + 1);
  if (row->hash_len) memcpy(r->data + klen + 1, row->hash, row->hash_len);
  if (rlen) memcpy(r->data + klen + 1 + row->hash_len, row->result, rlen);
  size_t i = h & c->mask;
  while (c->slots[i].ref) i = (i + 1) & c->mask;
  c->slots[i].hlo = (uint32_t)h;
  c->slots[i].ref = (uint32_t)(off / 8 + 1);
  c->count++;
}

void esg__cc_put(esg__sq *q, const char *key, const esg__sq_row *row) { learn(q->cc, key, row, true); }

/* A completion: its claim missed the cache (a miss leaves no record of the key), and
   nothing learns a key while it is in progress, so the table has none: no lookup. */
void esg__cc_put_completed(esg__sq *q, const char *key, const esg__sq_row *row) { learn(q->cc, key, row, false); }

void esg__cc_purged(esg__sq *q, int64_t now) {
  esg__cc *c = q->cc;
  if (!c) return;
  /* a backward shift may move a later slot into slot i: look at i again */
  for (size_t i = 0; c->count && i <= c->mask;) {
    const rec *r = c->slots[i].ref ? rec_at(c, c->slots[i].ref) : NULL;
    if (r && (r->expires <= now || r->gen != c->gen)) remove_at(c, i);
    else i++;
  }
}

void esg__cc_commit_failed(esg__sq *q) {
  if (q->cc) forget(q->cc);
}

/* Whether key and token are the latest claim's, made since the last forgetting. */
static bool latest(const esg__cc *c, const char *key, int64_t token) {
  return c && c->mgen == c->gen && c->mrow.token == token && strcmp(c->mkey.data, key) == 0;
}

void esg__cc_claimed(esg__sq *q, const char *key, const esg__sq_row *row) {
  esg__cc *c = q->cc;
  if (!c) return;
  c->mgen = 0;
  if (row->hash_len > ESG_HASH_MAX || esg__buf_set(&c->mkey, key, strlen(key)) != ESG_OK) return;
  c->mrow = *row;
  if (row->hash_len) memcpy(c->mhash, row->hash, row->hash_len);
  c->mgen = c->gen;
}

void esg__cc_extended(esg__sq *q, const char *key, int64_t token, int64_t lease_until) {
  if (latest(q->cc, key, token)) q->cc->mrow.lease_until = lease_until;
}

/*
 * The record as the completion statement left it: the claim as written, done, with
 * the result and expires = now + ttl. Between the claim and its completion only
 * this handle's extension (kept above) or another connection's commit (one given
 * the token extends it, say) can change it; a commit of another connection either
 * made a hit forget the cache since the claim (then mgen is stale: nothing learnt),
 * or is still to be noticed, and the next hit forgets what is learnt here.
 */
void esg__cc_completed(esg__sq *q, const char *key, int64_t token, const void *result, size_t len, int64_t now) {
  esg__cc *c = q->cc;
  if (!latest(c, key, token)) return;
  esg__sq_row done = c->mrow;
  done.done = true;
  done.hash = done.hash_len ? c->mhash : NULL;
  done.result = result ? (len ? result : "") : NULL;
  done.result_len = result ? len : 0;
  done.expires = esg__time_add(now, c->mrow.ttl);
  c->mgen = 0;
  learn(c, key, &done, false);
}
