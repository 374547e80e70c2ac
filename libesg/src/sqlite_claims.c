/*
 * SQLite backend: the claims table. Completion, release and extension match on
 * the fencing token in the statement itself, so a stale owner changes nothing.
 */
#include <pthread.h>
#include <stdio.h>
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
static const char SQL_COMPLETE[] =
    "UPDATE esg_claims SET done = 1, result = ?3, expires = ?4 + ttl"
    " WHERE key = ?1 AND token = ?2 AND done = 0 AND expires > ?4";
static const char SQL_RELEASE[] =
    "DELETE FROM esg_claims WHERE key = ?1 AND token = ?2 AND done = 0 AND expires > ?3";
static const char SQL_EXTEND[] =
    "UPDATE esg_claims SET lease_until = ?3 WHERE key = ?1 AND token = ?2 AND done = 0 AND expires > ?4";
static const char SQL_PURGE[] = "DELETE FROM esg_claims WHERE expires <= ?1";

int esg__sq_claim_get(esg_store *s, const char *key, esg__claim_row *row) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_GET);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(st);
    return ESG_NOT_FOUND;
  }
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return esg__sq_fail(s, rc, "reading a claim");
  }
  row->done = sqlite3_column_int(st, 0) != 0;
  row->token = sqlite3_column_int64(st, 2);
  row->attempts = sqlite3_column_int(st, 3);
  row->lease_until = sqlite3_column_int64(st, 4);
  row->expires = sqlite3_column_int64(st, 5);
  row->ttl = sqlite3_column_int64(st, 6);
  /* hash and result share one buffer so both outlive the statement's reset */
  size_t hl = (size_t)sqlite3_column_bytes(st, 1), rl = (size_t)sqlite3_column_bytes(st, 7);
  int brc = esg__buf_set(&s->result, NULL, hl + rl);
  if (brc == ESG_OK) {
    if (hl) memcpy(s->result.data, sqlite3_column_blob(st, 1), hl);
    if (rl) memcpy(s->result.data + hl, sqlite3_column_blob(st, 7), rl);
  }
  row->hash = hl ? s->result.data : NULL;
  row->hash_len = hl;
  row->result = sqlite3_column_type(st, 7) == SQLITE_NULL ? NULL : s->result.data + hl;
  row->result_len = rl;
  sqlite3_reset(st);
  return brc == ESG_OK ? ESG_OK : esg__fail(&s->err, ESG_ENOMEM, "out of memory reading a claim");
}

static int write_row(esg_store *s, const char *sql, const char *key, const esg__claim_row *row) {
  sqlite3_stmt *st = esg__sq_stmt(s, sql);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int(st, 2, row->done);
  esg__sq_bind_blob(st, 3, row->hash, row->hash_len);
  sqlite3_bind_int64(st, 4, row->token);
  sqlite3_bind_int(st, 5, row->attempts);
  sqlite3_bind_int64(st, 6, row->lease_until);
  sqlite3_bind_int64(st, 7, row->expires);
  sqlite3_bind_int64(st, 8, row->ttl);
  esg__sq_bind_blob(st, 9, row->result, row->result_len);
  return esg__sq_exec(s, st, "writing a claim");
}

int esg__sq_claim_insert(esg_store *s, const char *key, const esg__claim_row *row) {
  int rc = write_row(s, SQL_INSERT, key, row);
  if (rc != ESG_OK) return rc;
  return sqlite3_changes(ESG__DB(s)) == 1 ? ESG_OK : ESG_DUPLICATE;
}

int esg__sq_claim_replace(esg_store *s, const char *key, const esg__claim_row *row) {
  return write_row(s, SQL_REPLACE, key, row);
}

/* Runs a token-matched statement: one changed row means the token still owned the claim. */
static int by_token(esg_store *s, sqlite3_stmt *st, const char *what) {
  int rc = esg__sq_exec(s, st, what);
  if (rc != ESG_OK) return rc;
  return sqlite3_changes(ESG__DB(s)) == 1 ? ESG_OK : ESG_ETOKEN;
}

int esg__sq_claim_complete(esg_store *s, const char *key, int64_t token, const void *result, size_t len,
                           int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_COMPLETE);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int64(st, 2, token);
  /* an empty result is stored as an empty blob, not NULL, so "no result" and "" stay apart */
  if (result) sqlite3_bind_blob64(st, 3, len ? result : "", len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, now);
  return by_token(s, st, "completing a claim");
}

/*
 * Completing several claims in one statement: SQLite's cost per statement (bind,
 * step, halt, reset) is a third of a completion's, and an egress engine finishes
 * eight to thirty deliveries per turn of its loop. One UPDATE .. FROM a VALUES
 * list of (key, token, result), RETURNING the keys it completed; the others were
 * not the token's to complete (ETOKEN). Statements for 2, 4 .. 32 rows, built once.
 */
#define MANY_SIZES 5
static char many_sql[MANY_SIZES][1024];
static pthread_once_t many_once = PTHREAD_ONCE_INIT;

static void many_build(void) {
  for (int i = 0; i < MANY_SIZES; i++) {
    int rows = 2 << i, at = snprintf(many_sql[i], sizeof many_sql[i],
                                     "UPDATE esg_claims SET done = 1, result = v.column3, expires = ?1 + ttl FROM (VALUES ");
    for (int r = 0; r < rows; r++) at += snprintf(many_sql[i] + at, sizeof many_sql[i] - (size_t)at, "%s(?,?,?)", r ? "," : "");
    snprintf(many_sql[i] + at, sizeof many_sql[i] - (size_t)at,
             ") AS v WHERE esg_claims.key = v.column1 AND esg_claims.token = v.column2 AND esg_claims.done = 0"
             " AND esg_claims.expires > ?1 RETURNING esg_claims.key");
  }
}

/* rows (2, 4 .. 32) of c in one statement; ESG_NOT_FOUND when this SQLite has no UPDATE .. FROM. */
static int complete_rows(esg_store *s, esg__completion *c, int size_i, int64_t now) {
  size_t rows = (size_t)2 << size_i;
  sqlite3_stmt *st = esg__sq_stmt(s, many_sql[size_i]);
  if (!st) return ESG_NOT_FOUND;
  sqlite3_bind_int64(st, 1, now);
  for (size_t r = 0; r < rows; r++) {
    int p = 2 + 3 * (int)r;
    esg__sq_bind_text(st, p, c[r].key);
    sqlite3_bind_int64(st, p + 1, c[r].token);
    if (c[r].result) sqlite3_bind_blob64(st, p + 2, c[r].len ? c[r].result : "", c[r].len, SQLITE_STATIC);
    c[r].rc = ESG_ETOKEN; /* until the statement returns its key */
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *key = (const char *)sqlite3_column_text(st, 0);
    for (size_t r = 0; key && r < rows; r++)
      if (c[r].rc == ESG_ETOKEN && strcmp(c[r].key, key) == 0) {
        c[r].rc = ESG_OK;
        break;
      }
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) return ESG_OK;
  int err = esg__sq_fail(s, rc, "completing claims");
  for (size_t r = 0; r < rows; r++) c[r].rc = err;
  return err;
}

int esg__sq_claim_complete_many(esg_store *s, esg__completion *c, size_t n, int64_t now) {
  pthread_once(&many_once, many_build);
  size_t at = 0;
  while (at < n) {
    int size_i = MANY_SIZES - 1;
    while (size_i >= 0 && ((size_t)2 << size_i) > n - at) size_i--;
    int rc = size_i >= 0 ? complete_rows(s, c + at, size_i, now) : ESG_NOT_FOUND;
    if (rc == ESG_NOT_FOUND) { /* one left, or no UPDATE .. FROM here: one at a time */
      c[at].rc = esg__sq_claim_complete(s, c[at].key, c[at].token, c[at].result, c[at].len, now);
      if (c[at].rc != ESG_OK && c[at].rc != ESG_ETOKEN) return c[at].rc;
      at++;
      continue;
    }
    if (rc != ESG_OK) return rc;
    at += (size_t)2 << size_i;
  }
  return ESG_OK;
}

int esg__sq_claim_release(esg_store *s, const char *key, int64_t token, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_RELEASE);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int64(st, 2, token);
  sqlite3_bind_int64(st, 3, now);
  return by_token(s, st, "releasing a claim");
}

int esg__sq_claim_extend(esg_store *s, const char *key, int64_t token, int64_t lease_until, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_EXTEND);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int64(st, 2, token);
  sqlite3_bind_int64(st, 3, lease_until);
  sqlite3_bind_int64(st, 4, now);
  return by_token(s, st, "extending a claim");
}

int esg__sq_claims_purge(esg_store *s, int64_t now, int64_t *n) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_PURGE);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, now);
  int rc = esg__sq_exec(s, st, "purging claims");
  if (n) *n = rc == ESG_OK ? sqlite3_changes(ESG__DB(s)) : 0;
  return rc;
}
