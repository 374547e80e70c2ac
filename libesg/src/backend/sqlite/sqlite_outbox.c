/*
 * SQLite backend: the outbox. A rendered request (its bytes, opaque here) kept under
 * the key of the claim it belongs to, so a retry, a takeover after a crash or a
 * resubmission sends exactly what the first attempt sent.
 */
#include "sqlite_int.h"

/* Migration 6. */
const char esg__sq_outbox_schema[] =
    "CREATE TABLE esg_outbox (key TEXT PRIMARY KEY, created INTEGER NOT NULL, request BLOB NOT NULL) WITHOUT ROWID;";

static const char SQL_PUT[] =
    "INSERT INTO esg_outbox (key, created, request) VALUES (?1, ?2, ?3)"
    " ON CONFLICT(key) DO UPDATE SET created = excluded.created, request = excluded.request";
static const char SQL_GET[] = "SELECT request FROM esg_outbox WHERE key = ?1";
static const char SQL_DEL[] = "DELETE FROM esg_outbox WHERE key = ?1";
/* The rows of the claims a purge at now deletes: nothing will ask for them again. */
static const char SQL_PURGE[] =
    "DELETE FROM esg_outbox WHERE key IN (SELECT key FROM esg_claims WHERE expires <= ?1)";

int esg__sq_outbox_put(esg__sq *q, const char *key, const void *data, size_t len, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PUT);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now);
  sqlite3_bind_blob64(st, 3, len ? data : "", len, SQLITE_STATIC);
  return esg__sq_write(q, st, "writing a request to the outbox", NULL);
}

int esg__sq_outbox_get(esg__sq *q, const char *key, esg__buf *out) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_GET);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? ESG_NOT_FOUND : esg__sq_fail(q, rc, "reading the outbox");
  }
  rc = esg__buf_set(out, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
  sqlite3_reset(st);
  return rc == ESG_OK ? ESG_OK : esg__fail(q->err, ESG_ENOMEM, "out of memory reading the outbox");
}

int esg__sq_outbox_delete(esg__sq *q, const char *key) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_DEL);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  return esg__sq_write(q, st, "deleting from the outbox", NULL);
}

int esg__sq_outbox_purge(esg__sq *q, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PURGE);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, now);
  return esg__sq_write(q, st, "purging the outbox", NULL);
}
