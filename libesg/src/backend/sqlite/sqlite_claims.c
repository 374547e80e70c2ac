/*
 * SQLite backend: the claims table. Completion, release and extension match on
 * the fencing token in the statement itself, so a stale owner changes nothing.
 */
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
