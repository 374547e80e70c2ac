/*
 * SQLite backend: the latch table. One row per pending latch, keyed by
 * (key, side, seq) so the latches of one (key, side) sit together in write order
 * and every operation is a range of one primary-key prefix.
 */
#include "sqlite_int.h"
#include "backend/latch_be.h"

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
static const char SQL_MATCH[] =
    "SELECT seq FROM esg_latches WHERE key = ?1 AND side = ?2 AND hash = ?3 AND expires > ?4"
    " ORDER BY seq LIMIT 1";
static const char SQL_NEWEST[] =
    "SELECT seq FROM esg_latches WHERE key = ?1 AND side = ?2 AND hash = ?3 ORDER BY seq DESC LIMIT 1";
static const char SQL_LAST[] = "SELECT MAX(seq) FROM esg_latches WHERE key = ?1 AND side = ?2 HAVING COUNT(*) > 0";
static const char SQL_DROP[] = "DELETE FROM esg_latches WHERE key = ?1 AND side = ?2 AND seq BETWEEN ?3 AND ?4";
static const char SQL_COUNT[] = "SELECT COUNT(*) FROM esg_latches WHERE key = ?1 AND side = ?2 AND expires > ?3";
static const char SQL_PURGE[] = "DELETE FROM esg_latches WHERE expires <= ?1";

/* Steps a statement that yields at most one integer: OK (*v set) | NOT_FOUND. */
static int one_int(esg_store *s, sqlite3_stmt *st, int64_t *v, const char *what) {
  int rc = sqlite3_step(st);
  int out = ESG_NOT_FOUND;
  if (rc == SQLITE_ROW) {
    if (v) *v = sqlite3_column_int64(st, 0);
    out = ESG_OK;
  } else if (rc != SQLITE_DONE) {
    out = esg__sq_fail(s, rc, what);
  }
  sqlite3_reset(st);
  return out;
}

static sqlite3_stmt *prep(esg_store *s, const char *sql, const char *key, const char *side) {
  sqlite3_stmt *st = esg__sq_stmt(s, sql);
  if (st) {
    esg__sq_bind_text(st, 1, key);
    esg__sq_bind_text(st, 2, side);
  }
  return st;
}

static int sq_any(esg_store *s, const char *key, const char *side, bool *any) {
  sqlite3_stmt *st = prep(s, SQL_ANY, key, side);
  if (!st) return ESG_ESTORE;
  int rc = one_int(s, st, NULL, "reading latches");
  *any = rc == ESG_OK;
  return rc == ESG_NOT_FOUND ? ESG_OK : rc;
}

static int sq_add(esg_store *s, const char *key, const char *side, const char *hash, int64_t expires, int64_t *seq) {
  sqlite3_stmt *st = prep(s, SQL_ADD, key, side);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 3, hash);
  sqlite3_bind_int64(st, 4, expires);
  int rc = one_int(s, st, seq, "storing a latch");
  return rc == ESG_NOT_FOUND ? esg__fail(&s->err, ESG_ESTORE, "storing a latch: no row inserted") : rc;
}

static int sq_match(esg_store *s, const char *key, const char *side, const char *hash, int64_t now, int64_t *seq) {
  sqlite3_stmt *st = prep(s, SQL_MATCH, key, side);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 3, hash);
  sqlite3_bind_int64(st, 4, now);
  return one_int(s, st, seq, "matching a latch");
}

static int sq_newest(esg_store *s, const char *key, const char *side, const char *hash, int64_t *seq) {
  sqlite3_stmt *st = prep(s, SQL_NEWEST, key, side);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 3, hash);
  return one_int(s, st, seq, "reading a latch");
}

static int sq_last(esg_store *s, const char *key, const char *side, int64_t *seq) {
  sqlite3_stmt *st = prep(s, SQL_LAST, key, side);
  if (!st) return ESG_ESTORE;
  return one_int(s, st, seq, "reading latches");
}

static int sq_drop(esg_store *s, const char *key, const char *side, int64_t lo, int64_t hi) {
  sqlite3_stmt *st = prep(s, SQL_DROP, key, side);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 3, lo);
  sqlite3_bind_int64(st, 4, hi);
  return esg__sq_exec(s, st, "deleting latches");
}

static int sq_count(esg_store *s, const char *key, const char *side, int64_t now, int *n) {
  sqlite3_stmt *st = prep(s, SQL_COUNT, key, side);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 3, now);
  int64_t v = 0;
  int rc = one_int(s, st, &v, "counting latches");
  *n = (int)v;
  return rc == ESG_NOT_FOUND ? ESG_OK : rc;
}

static int sq_purge(esg_store *s, int64_t now, int64_t *n) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_PURGE);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, now);
  int rc = esg__sq_exec(s, st, "purging latches");
  if (n) *n = rc == ESG_OK ? sqlite3_changes(ESG__DB(s)) : 0;
  return rc;
}

const struct esg__latch_ops esg__sq_latch_ops = {
    .any = sq_any,
    .add = sq_add,
    .match = sq_match,
    .newest = sq_newest,
    .last = sq_last,
    .drop = sq_drop,
    .count = sq_count,
    .purge = sq_purge,
};
