/*
 * SQLite backend: the claims table and the claim decision. Completion, release
 * and extension match on the fencing token in the statement itself, so a stale
 * owner changes nothing. A claim decides in the fewest statements: a read
 * answers duplicates and busy keys without writing, an insert that finds no row
 * makes a new claim, and only takeovers of expired leases or records re-decide
 * inside a write transaction (SQLite's one write lock makes that read and write
 * atomic across processes). Under group commit a new claim is held in memory
 * (sqlite_pending.c) and written once. Completed records this handle wrote or
 * read answer repeats from memory (sqlite_claims_cache.c): every path here that
 * completes a claim, reads a completed one, or deletes or replaces one (a purge, a
 * takeover after expiry) keeps that cache right.
 */
#include <limits.h>
#include <string.h>
#include "sqlite_int.h"

static const char SQL_GET[] =
    "SELECT done, hash, token, attempts, lease_until, expires, ttl, result FROM esg_claims WHERE key = ?1";
static const char SQL_INSERT[] =
    "INSERT INTO esg_claims (key, done, hash, token, attempts, lease_until, expires, ttl, result)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(key) DO NOTHING";
static const char SQL_REPLACE[] =
    "INSERT OR REPLACE INTO esg_claims (key, done, hash, token, attempts, lease_until, expires, ttl, result)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
/* (no RETURNING for the cache: here it made a completion inside a transaction five times dearer) */
static const char SQL_COMPLETE[] =
    "UPDATE esg_claims SET done = 1, result = ?3, expires = ?4 + ttl"
    " WHERE key = ?1 AND token = ?2 AND done = 0 AND expires > ?4";
static const char SQL_RELEASE[] =
    "DELETE FROM esg_claims WHERE key = ?1 AND token = ?2 AND done = 0 AND expires > ?3";
static const char SQL_EXTEND[] =
    "UPDATE esg_claims SET lease_until = ?3 WHERE key = ?1 AND token = ?2 AND done = 0 AND expires > ?4";
static const char SQL_PURGE[] = "DELETE FROM esg_claims WHERE expires <= ?1";

static int claim_get(esg__sq *q, const char *key, esg__sq_row *row) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_GET);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(st);
    return ESG_NOT_FOUND;
  }
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return esg__sq_fail(q, rc, "reading a claim");
  }
  row->done = sqlite3_column_int(st, 0) != 0;
  row->token = sqlite3_column_int64(st, 2);
  row->attempts = sqlite3_column_int(st, 3);
  row->lease_until = sqlite3_column_int64(st, 4);
  row->expires = sqlite3_column_int64(st, 5);
  row->ttl = sqlite3_column_int64(st, 6);
  /* hash and result share one buffer so both outlive the statement's reset */
  size_t hl = (size_t)sqlite3_column_bytes(st, 1), rl = (size_t)sqlite3_column_bytes(st, 7);
  int brc = esg__buf_set(&q->result, NULL, hl + rl);
  if (brc == ESG_OK) {
    if (hl) memcpy(q->result.data, sqlite3_column_blob(st, 1), hl);
    if (rl) memcpy(q->result.data + hl, sqlite3_column_blob(st, 7), rl);
  }
  row->hash = hl ? q->result.data : NULL;
  row->hash_len = hl;
  row->result = sqlite3_column_type(st, 7) == SQLITE_NULL ? NULL : q->result.data + hl;
  row->result_len = rl;
  sqlite3_reset(st);
  return brc == ESG_OK ? ESG_OK : esg__fail(q->err, ESG_ENOMEM, "out of memory reading a claim");
}

static int write_row(esg__sq *q, const char *sql, const char *key, const esg__sq_row *row) {
  sqlite3_stmt *st = esg__sq_stmt(q, sql);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int(st, 2, row->done);
  esg__sq_bind_blob(st, 3, row->hash, row->hash_len);
  sqlite3_bind_int64(st, 4, row->token);
  sqlite3_bind_int(st, 5, row->attempts);
  sqlite3_bind_int64(st, 6, row->lease_until);
  sqlite3_bind_int64(st, 7, row->expires);
  sqlite3_bind_int64(st, 8, row->ttl);
  /* an empty result is an empty blob, not NULL, as the completion statement stores it */
  if (row->result) sqlite3_bind_blob64(st, 9, row->result_len ? row->result : "", row->result_len, SQLITE_STATIC);
  return esg__sq_exec(q, st, "writing a claim");
}

static int claim_insert(esg__sq *q, const char *key, const esg__sq_row *row) {
  int rc = write_row(q, SQL_INSERT, key, row);
  if (rc != ESG_OK) return rc;
  return sqlite3_changes(q->db) == 1 ? ESG_OK : ESG_DUPLICATE;
}

int esg__sq_claim_replace(esg__sq *q, const char *key, const esg__sq_row *row) {
  return write_row(q, SQL_REPLACE, key, row);
}


/* The caller's view of a record. */
static void report(esg__claim_row *out, const esg__sq_row *row) {
  out->done = row->done;
  out->token = row->token;
  out->attempts = row->attempts;
  out->lease_until = row->lease_until;
  out->expires = row->expires;
  out->result = row->done ? row->result : NULL;
  out->result_len = row->done ? row->result_len : 0;
}

/* What an unexpired record means for a new claimer; -1 when the lease ran out (take over). */
static int judge(const esg__sq_row *row, const esg__claim_req *r) {
  if (r->hash_len && row->hash_len && (row->hash_len != r->hash_len || memcmp(row->hash, r->hash, r->hash_len) != 0))
    return ESG_EMISMATCH;
  if (row->done) return ESG_DUPLICATE;
  if (row->lease_until > r->now) return ESG_BUSY;
  return -1;
}

/* The record a new claim (or a takeover, with attempts > 1) writes. */
static esg__sq_row fresh(const esg__claim_req *r, int attempts) {
  esg__sq_row c = {0};
  c.hash = r->hash;
  c.hash_len = r->hash_len;
  c.token = r->token;
  c.attempts = attempts;
  c.lease_until = r->lease_until;
  c.expires = r->expires;
  c.ttl = r->ttl;
  return c;
}

/* Judges a record read outside a transaction: an answer (>= 0 or MISMATCH), or -1 to decide again. */
static int judged(esg__sq *q, const esg__sq_row *row, const esg__claim_req *r, esg__claim_row *out) {
  int rc = judge(row, r);
  if (rc >= 0 || rc == ESG_EMISMATCH) {
    q->expect_seen = true;
    report(out, row);
    esg__cc_put(q, r->key, row); /* (a completed record: the cache keeps no other) */
  }
  return rc;
}

/* Takes the key over inside a write transaction, re-reading it first: another process may have moved. */
static int slow_claim(esg__sq *q, const esg__claim_req *r, esg__claim_row *out) {
  bool own;
  int rc = esg__sq_unit_begin(q, true, &own);
  if (rc != ESG_OK) return rc;
  esg__sq_row row;
  int attempts = 1;
  rc = claim_get(q, r->key, &row);
  if (rc == ESG_OK && row.expires > r->now) {
    rc = judge(&row, r);
    if (rc >= 0 || rc == ESG_EMISMATCH) {
      report(out, &row);
      esg__cc_put(q, r->key, &row);
      return esg__sq_unit_end(q, own, rc, 1);
    }
    attempts = row.attempts + 1; /* the owner's lease ran out: take over */
  } else if (rc < 0 && rc != ESG_NOT_FOUND) {
    return esg__sq_unit_end(q, own, rc, 1);
  }
  row = fresh(r, attempts);
  rc = esg__sq_claim_replace(q, r->key, &row);
  if (rc == ESG_OK) {
    report(out, &row);
    esg__cc_claimed(q, r->key, &row);
    rc = ESG_NEW;
  }
  return esg__sq_unit_end(q, own, rc, 1);
}

/* One conflict-checked insert: ESG_NEW, ESG_DUPLICATE when the key exists (in any state), or an error. */
static int try_insert(esg__sq *q, const esg__claim_req *r, esg__claim_row *out) {
  bool own;
  int rc = esg__sq_unit_begin(q, false, &own);
  if (rc != ESG_OK) return rc;
  esg__sq_row row = fresh(r, 1);
  rc = claim_insert(q, r->key, &row);
  if (rc == ESG_OK) {
    report(out, &row);
    esg__cc_claimed(q, r->key, &row);
    rc = ESG_NEW;
  }
  return esg__sq_unit_end(q, own, rc, 1);
}

/*
 * A claim while a group is open: the read runs inside the group's transaction,
 * which holds the write lock, and a new claim is kept in memory rather than
 * written, so its completion writes the row once.
 */
static int group_claim(esg__sq *q, const esg__claim_req *r, esg__claim_row *out) {
  esg__pend *p = esg__pend_find(q, r->key);
  if (p) {
    esg__sq_row *held = esg__pend_row(p);
    int rc = judge(held, r);
    if (rc == -1 && held->expires > r->now) { /* its lease ran out inside the group: take over */
      /* in place, allocating nothing: a failure between dropping the old owner's claim
         and adding ours would lose the claim */
      esg__sq_row row = fresh(r, held->attempts + 1);
      esg__pend_set(p, &row);
      report(out, &row);
      return esg__sq_unit_end(q, false, ESG_NEW, 1); /* a write into the group: counted, and due is checked */
    }
    if (rc != -1) {
      report(out, held);
      return rc;
    }
    esg__pend_drop(q, p); /* expired: as if absent */
  }
  esg__sq_row row;
  int rc = claim_get(q, r->key, &row);
  if (rc == ESG_OK && row.expires > r->now) {
    rc = judge(&row, r);
    if (rc >= 0 || rc == ESG_EMISMATCH) {
      report(out, &row);
      esg__cc_put(q, r->key, &row);
      return rc;
    }
    return slow_claim(q, r, out);
  }
  if (rc < 0 && rc != ESG_NOT_FOUND) return rc;
  /* absent, or an expired row that the completion's write will replace */
  bool own;
  if ((rc = esg__sq_unit_begin(q, false, &own)) != ESG_OK) return rc;
  row = fresh(r, 1);
  rc = esg__pend_add(q, r->key, &row);
  if (rc == ESG_OK) {
    report(out, &row);
    rc = ESG_NEW;
  }
  return esg__sq_unit_end(q, own, rc, 1);
}

/*
 * Which statement goes first is a guess from the previous claim on this handle:
 * streams come in runs of new events or of redeliveries, so after a new key the
 * insert is tried first (one statement when it is new again), and after a
 * duplicate the read is (answered without taking the write lock). A wrong guess
 * costs one extra statement, never a wrong answer.
 */
int esg__sq_claim(esg__sq *q, const esg__claim_req *r, esg__claim_row *out) {
  /* A completed record known to this handle answers as the table's would: it is
     final until it expires (an expired one is dropped, and the table decides), and
     the cache is forgotten when another connection has committed. A key pending in
     the group is never in it: claiming it dropped it, and nothing learns it until
     it is completed. */
  esg__sq_row known;
  if (esg__cc_get(q, r->key, r->now, &known)) {
    int rc = judge(&known, r);
    q->expect_seen = true;
    report(out, &known);
    return rc;
  }
  if (esg__sq_in_group(q)) return group_claim(q, r, out);
  bool inserted = false;
  /* (in group mode, a read never opens a group: only insert first into a group already open) */
  if (!q->expect_seen && (q->group_ms == 0 || q->batch)) {
    int rc = try_insert(q, r, out);
    if (rc != ESG_DUPLICATE) return rc;
    inserted = true;
  }
  esg__sq_row row;
  int rc = claim_get(q, r->key, &row);
  if (rc == ESG_OK && row.expires > r->now) {
    if ((rc = judged(q, &row, r, out)) != -1) return rc;
  } else if (rc == ESG_NOT_FOUND && !inserted) {
    rc = try_insert(q, r, out);
    if (rc != ESG_DUPLICATE) {
      q->expect_seen = false;
      return rc;
    }
  } else if (rc < 0 && rc != ESG_NOT_FOUND) {
    return rc;
  }
  /* an expired record, a lease that ran out, or a lost race: decide again under the write lock */
  q->expect_seen = false;
  return slow_claim(q, r, out);
}

/* complete (0), release (1) or extend (2) a claim pending in the open group: the same rules as the statements'. */
static int pending_by_token(esg__sq *q, esg__pend *p, const char *key, int64_t token, int which, const void *result,
                            size_t len, int64_t lease_until, int64_t now) {
  esg__sq_row *row = esg__pend_row(p);
  if (row->token != token || row->expires <= now) return ESG_ETOKEN;
  if (which == 2) {
    row->lease_until = lease_until;
    return ESG_OK;
  }
  int rc = ESG_OK;
  if (which == 0) {
    esg__sq_row done = *row;
    done.done = true;
    done.result = result ? (len ? result : "") : NULL;
    done.result_len = result ? len : 0;
    done.expires = esg__time_add(now, row->ttl);
    rc = esg__sq_claim_replace(q, key, &done);
    if (rc == ESG_OK) esg__cc_put_completed(q, key, &done);
  }
  if (rc == ESG_OK) esg__pend_drop(q, p);
  return rc;
}

/* complete (0), release (1) or extend (2), inside a unit of writes the caller began. */
static int token_op(esg__sq *q, const char *key, int64_t token, int which, const void *result, size_t len,
                    int64_t lease_until, int64_t now) {
  esg__pend *p = esg__sq_in_group(q) ? esg__pend_find(q, key) : NULL;
  if (p) return pending_by_token(q, p, key, token, which, result, len, lease_until, now);
  sqlite3_stmt *st = esg__sq_stmt(q, which == 0 ? SQL_COMPLETE : which == 1 ? SQL_RELEASE : SQL_EXTEND);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int64(st, 2, token);
  if (which == 0) {
    /* an empty result is stored as an empty blob, not NULL, so "no result" and "" stay apart */
    if (result) sqlite3_bind_blob64(st, 3, len ? result : "", len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
  } else if (which == 1) {
    sqlite3_bind_int64(st, 3, now);
  } else {
    sqlite3_bind_int64(st, 3, lease_until);
    sqlite3_bind_int64(st, 4, now);
  }
  int rc = esg__sq_exec(q, st, which == 0 ? "completing a claim" : which == 1 ? "releasing a claim" : "extending a claim");
  if (rc != ESG_OK) return rc;
  if (sqlite3_changes(q->db) != 1) return ESG_ETOKEN; /* one row: the token still owned it */
  /* (release changes only a claim in progress, which the cache never holds) */
  if (which == 0) esg__cc_completed(q, key, token, result, len, now);
  else if (which == 2) esg__cc_extended(q, key, token, lease_until);
  return ESG_OK;
}

static int by_token(esg__sq *q, const char *key, int64_t token, int which, const void *result, size_t len,
                    int64_t lease_until, int64_t now) {
  bool own;
  int rc = esg__sq_unit_begin(q, false, &own);
  if (rc != ESG_OK) return rc;
  return esg__sq_unit_end(q, own, token_op(q, key, token, which, result, len, lease_until, now), 1);
}

int esg__sq_claim_complete(esg__sq *q, const char *key, int64_t token, const void *result, size_t len,
                           int64_t now) {
  return by_token(q, key, token, 0, result, len, 0, now);
}

int esg__sq_claim_release(esg__sq *q, const char *key, int64_t token, int64_t now) {
  return by_token(q, key, token, 1, NULL, 0, 0, now);
}

int esg__sq_claim_extend(esg__sq *q, const char *key, int64_t token, int64_t lease_until, int64_t now) {
  return by_token(q, key, token, 2, NULL, 0, lease_until, now);
}

/* The completions c[0..n) that said ESG_OK get rc instead: the commit that was to store them failed. */
static void lost(esg__completion *c, size_t n, int rc) {
  for (size_t i = 0; i < n; i++)
    if (c[i].rc == ESG_OK) c[i].rc = rc;
}

int esg__sq_claims_complete(esg__sq *q, esg__completion *c, size_t n, int64_t now) {
  bool own;
  int rc = esg__sq_unit_begin(q, true, &own);
  if (rc != ESG_OK) {
    for (size_t i = 0; i < n; i++) c[i].rc = rc;
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    if (c[i].rc != ESG_OK) continue; /* refused by the caller's checks */
    if (rc != ESG_OK) {
      c[i].rc = rc;
      continue;
    }
    c[i].rc = token_op(q, c[i].key, c[i].token, 0, c[i].result, c[i].len, 0, now);
    if (c[i].rc < 0 && c[i].rc != ESG_ETOKEN) rc = c[i].rc;
  }
  if (own && rc < 0) {
    for (size_t i = 0; i < n; i++) c[i].rc = rc;
    return esg__sq_unit_end(q, own, rc, 1); /* rolls back */
  }
  /* asked with ESG_OK, the unit's end returns what its commit (if any) did, alone */
  int writes = n == 0 ? 1 : n < (size_t)INT_MAX ? (int)n : INT_MAX;
  int crc = esg__sq_unit_end(q, own, ESG_OK, writes);
  if (crc < 0) {
    lost(c, n, crc);
    return crc;
  }
  return rc;
}

int esg__sq_claims_purge(esg__sq *q, int64_t now, int64_t *n) {
  bool own;
  int rc = esg__sq_unit_begin(q, false, &own);
  if (rc != ESG_OK) return rc;
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PURGE);
  if (st) sqlite3_bind_int64(st, 1, now);
  rc = st ? esg__sq_exec(q, st, "purging claims") : ESG_ESTORE;
  if (n) *n = rc == ESG_OK ? sqlite3_changes(q->db) : 0;
  esg__cc_purged(q, now); /* (even if it failed: forgetting is always safe) */
  return esg__sq_unit_end(q, own, rc, 1);
}
