/*
 * SQLite backend: the latch table and its decisions. One row per pending latch,
 * keyed by (key, side, seq) so the latches of one (key, side) sit together in
 * write order and every operation is a range of one primary-key prefix. The
 * rules (which latch an echo consumes, what a genuine change drops) are those of
 * backend.h's latch_consume; docs/latching.md says why.
 */
#include "sqlite_int.h"

const char esg__sq_latch_schema[] =
    "CREATE TABLE esg_latches ("
    "  key TEXT NOT NULL, side TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,"
    "  expires INTEGER NOT NULL, PRIMARY KEY (key, side, seq)) WITHOUT ROWID;"
    "CREATE INDEX esg_latches_expires ON esg_latches(expires);";

static const char SQL_ANY[] = "SELECT 1 FROM esg_latches WHERE key = ?1 AND side = ?2 LIMIT 1";
/* seq restarts at 1 once a (key, side) is empty: order matters only among the pending */
static const char SQL_ADD[] =
    "INSERT INTO esg_latches (key, side, seq, hash, expires)"
    " SELECT ?1, ?2, COALESCE(MAX(seq), 0) + 1, ?3, ?4 FROM esg_latches WHERE key = ?1 AND side = ?2"
    " RETURNING seq";
/* the newest: a report of h after writes h1, h2, h1 is the last write's echo (the side
   coalesced the others); taking the oldest would leave h2 pending to swallow a genuine
   change back to h2 */
static const char SQL_MATCH[] =
    "SELECT seq FROM esg_latches WHERE key = ?1 AND side = ?2 AND hash = ?3 AND expires > ?4"
    " ORDER BY seq DESC LIMIT 1";
static const char SQL_NEWEST[] =
    "SELECT seq FROM esg_latches WHERE key = ?1 AND side = ?2 AND hash = ?3 ORDER BY seq DESC LIMIT 1";
static const char SQL_LAST[] = "SELECT MAX(seq) FROM esg_latches WHERE key = ?1 AND side = ?2 HAVING COUNT(*) > 0";
static const char SQL_DROP[] = "DELETE FROM esg_latches WHERE key = ?1 AND side = ?2 AND seq BETWEEN ?3 AND ?4";
static const char SQL_COUNT[] = "SELECT COUNT(*) FROM esg_latches WHERE key = ?1 AND side = ?2 AND expires > ?3";
static const char SQL_PURGE[] = "DELETE FROM esg_latches WHERE expires <= ?1";

/* Steps a statement that yields at most one integer: OK (*v set) | NOT_FOUND. */
static int one_int(esg__sq *q, sqlite3_stmt *st, int64_t *v, const char *what) {
  int rc = sqlite3_step(st);
  int out = ESG_NOT_FOUND;
  if (rc == SQLITE_ROW) {
    if (v) *v = sqlite3_column_int64(st, 0);
    out = ESG_OK;
  } else if (rc != SQLITE_DONE) {
    out = esg__sq_fail(q, rc, what);
  }
  sqlite3_reset(st);
  return out;
}

static sqlite3_stmt *prep(esg__sq *q, const char *sql, const char *key, const char *side) {
  sqlite3_stmt *st = esg__sq_stmt(q, sql);
  if (st) {
    esg__sq_bind_text(st, 1, key);
    esg__sq_bind_text(st, 2, side);
  }
  return st;
}

/* Deletes the latches of (key, side) with seq in [lo, hi]; inside the caller's unit. */
static int drop(esg__sq *q, const char *key, const char *side, int64_t lo, int64_t hi) {
  sqlite3_stmt *st = prep(q, SQL_DROP, key, side);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 3, lo);
  sqlite3_bind_int64(st, 4, hi);
  return esg__sq_exec(q, st, "deleting latches");
}

int esg__sq_latch_set(esg__sq *q, const char *key, const char *side, const char *hash, int64_t expires,
                      int max_pending) {
  bool own;
  int rc = esg__sq_unit_begin(q, true, &own);
  if (rc != ESG_OK) return rc;
  sqlite3_stmt *st = prep(q, SQL_ADD, key, side);
  int64_t seq = 0;
  if (!st) rc = ESG_ESTORE;
  else {
    esg__sq_bind_text(st, 3, hash);
    sqlite3_bind_int64(st, 4, expires);
    rc = one_int(q, st, &seq, "storing a latch");
    if (rc == ESG_NOT_FOUND) rc = esg__fail(q->err, ESG_ESTORE, "storing a latch: no row inserted");
  }
  /* bound the set: a side that never echoes must not grow it without end */
  if (rc == ESG_OK && seq > max_pending) rc = drop(q, key, side, 0, seq - max_pending);
  return esg__sq_unit_end(q, own, rc, 1);
}

int esg__sq_latch_consume(esg__sq *q, const char *key, const char *side, const char *hash, int64_t now) {
  /* the common case, a change with nothing pending, answers with one read and no write lock */
  sqlite3_stmt *st = prep(q, SQL_ANY, key, side);
  if (!st) return ESG_ESTORE;
  int rc = one_int(q, st, NULL, "reading latches");
  if (rc == ESG_NOT_FOUND) return ESG_LATCH_GENUINE;
  if (rc != ESG_OK) return rc;
  bool own;
  if ((rc = esg__sq_unit_begin(q, true, &own)) != ESG_OK) return rc;
  int64_t seq = 0;
  if (!(st = prep(q, SQL_MATCH, key, side))) return esg__sq_unit_end(q, own, ESG_ESTORE, 1);
  esg__sq_bind_text(st, 3, hash);
  sqlite3_bind_int64(st, 4, now);
  rc = one_int(q, st, &seq, "matching a latch");
  if (rc == ESG_OK) { /* the echo: it and every older latch are consumed */
    rc = drop(q, key, side, INT64_MIN, seq);
    if (rc == ESG_OK) rc = ESG_LATCH_ECHO;
  } else if (rc == ESG_NOT_FOUND) { /* a genuine change supersedes the newest latch */
    if (!(st = prep(q, SQL_LAST, key, side))) return esg__sq_unit_end(q, own, ESG_ESTORE, 1);
    rc = one_int(q, st, &seq, "reading latches");
    if (rc == ESG_OK) rc = drop(q, key, side, seq, seq);
    if (rc == ESG_OK || rc == ESG_NOT_FOUND) rc = ESG_LATCH_GENUINE;
  }
  return esg__sq_unit_end(q, own, rc, 1);
}

int esg__sq_latch_cancel(esg__sq *q, const char *key, const char *side, const char *hash) {
  bool own;
  int rc = esg__sq_unit_begin(q, true, &own);
  if (rc != ESG_OK) return rc;
  sqlite3_stmt *st = prep(q, SQL_NEWEST, key, side);
  int64_t seq = 0;
  if (!st) rc = ESG_ESTORE;
  else {
    esg__sq_bind_text(st, 3, hash);
    rc = one_int(q, st, &seq, "reading a latch");
  }
  if (rc == ESG_OK) rc = drop(q, key, side, seq, seq);
  return esg__sq_unit_end(q, own, rc, 1);
}

int esg__sq_latch_count(esg__sq *q, const char *key, const char *side, int64_t now, int *n) {
  sqlite3_stmt *st = prep(q, SQL_COUNT, key, side);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 3, now);
  int64_t v = 0;
  int rc = one_int(q, st, &v, "counting latches");
  *n = (int)v;
  return rc == ESG_NOT_FOUND ? ESG_OK : rc;
}

int esg__sq_latches_purge(esg__sq *q, int64_t now, int64_t *n) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PURGE);
  if (st) sqlite3_bind_int64(st, 1, now);
  return esg__sq_write(q, st, "purging latches", n);
}
