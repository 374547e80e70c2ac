/*
 * SQLite backend: units of writes, the caller's batches and group commit. One
 * place decides whether a write commits alone, joins a caller's batch, or joins
 * the open group; the group is SQLite's one write transaction held open, so it
 * also holds the database's write lock until it commits.
 */
#include "sqlite_int.h"

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";

static int run(esg__sq *q, const char *sql, const char *what) {
  sqlite3_stmt *st = esg__sq_stmt(q, sql);
  return st ? esg__sq_exec(q, st, what) : ESG_ESTORE;
}

static int tx_begin(esg__sq *q) { return run(q, SQL_BEGIN, "beginning a transaction"); }
static int tx_commit(esg__sq *q) {
  int rc = run(q, SQL_COMMIT, "committing");
  if (rc != ESG_OK) esg__cc_commit_failed(q); /* what it learnt inside may be lost */
  return rc;
}
static int tx_rollback(esg__sq *q) { return run(q, SQL_ROLLBACK, "rolling back"); }

int esg__sq_flush(esg__sq *q) {
  if (!q->group_open || q->batch) return ESG_OK;
  int rc = esg__pend_write_all(q); /* claims still in progress go in as such */
  q->group_open = false;
  q->group_n = 0;
  int crc = tx_commit(q);
  if (crc != ESG_OK && sqlite3_get_autocommit(q->db) == 0) tx_rollback(q); /* a failed COMMIT may leave it open */
  return rc != ESG_OK ? rc : crc;
}

static bool due(const esg__sq *q, int64_t now) {
  return q->group_n >= q->group_max || now - q->group_started >= q->group_ms;
}

int esg__sq_flush_due(esg__sq *q, int64_t now, int64_t *next) {
  if (next) *next = 0;
  if (!q->group_open || q->batch) return ESG_OK;
  if (due(q, now)) return esg__sq_flush(q);
  if (next) *next = esg__time_add(q->group_started, q->group_ms);
  return ESG_OK;
}

int esg__sq_begin(esg__sq *q) {
  int rc = esg__sq_flush(q);
  if (rc == ESG_OK) rc = tx_begin(q);
  if (rc == ESG_OK) q->batch = true;
  return rc;
}

int esg__sq_commit(esg__sq *q) {
  q->batch = false;
  return tx_commit(q);
}

int esg__sq_rollback(esg__sq *q) {
  q->batch = false;
  return tx_rollback(q);
}

int esg__sq_unit_begin(esg__sq *q, bool need_tx, bool *own) {
  *own = false;
  if (q->batch || q->group_open) return ESG_OK;
  if (q->group_ms > 0) {
    int rc = tx_begin(q);
    if (rc != ESG_OK) return rc;
    q->group_open = true;
    q->group_n = 0;
    q->group_started = q->clock(q->clock_ud);
    return ESG_OK;
  }
  if (!need_tx) return ESG_OK;
  int rc = tx_begin(q);
  if (rc == ESG_OK) *own = true;
  return rc;
}

int esg__sq_unit_end(esg__sq *q, bool own, int rc, int n) {
  if (own) {
    if (rc < 0) {
      tx_rollback(q);
      return rc;
    }
    int crc = tx_commit(q);
    return crc == ESG_OK ? rc : crc;
  }
  if (esg__sq_in_group(q)) {
    /* (group_n < group_max between units: held at group_max, the sum cannot overflow) */
    q->group_n = n < q->group_max - q->group_n ? q->group_n + n : q->group_max;
    if (due(q, q->clock(q->clock_ud))) {
      int crc = esg__sq_flush(q);
      if (crc != ESG_OK) return crc;
    }
  }
  return rc;
}

int esg__sq_write(esg__sq *q, sqlite3_stmt *st, const char *what, int64_t *changes) {
  if (changes) *changes = 0;
  if (!st) return ESG_ESTORE;
  bool own;
  int rc = esg__sq_unit_begin(q, false, &own);
  if (rc != ESG_OK) {
    sqlite3_reset(st);
    return rc;
  }
  rc = esg__sq_exec(q, st, what);
  if (rc == ESG_OK && changes) *changes = sqlite3_changes64(q->db);
  return esg__sq_unit_end(q, own, rc, 1);
}
