/*
 * SQLite backend: the store tier of the enrichment cache. One WITHOUT ROWID
 * table keyed by the cache key, so a lookup is a single b-tree search; values
 * are BLOBs because a cache may hold non-JSON bytes (no_json_check).
 */
#include <string.h>
#include "sqlite_int.h"

/* Migration 3. Small fixed columns come before the value so reading them never
   walks into a value's overflow pages. */
const char esg__sq_cache_schema[] =
    "CREATE TABLE esg_cache ("
    "  key TEXT PRIMARY KEY, negative INTEGER NOT NULL, version INTEGER NOT NULL,"
    "  expires INTEGER NOT NULL, stored INTEGER NOT NULL, value BLOB) WITHOUT ROWID;"
    "CREATE INDEX esg_cache_expires ON esg_cache(expires);";

static const char SQL_GET[] = "SELECT negative, version, expires, stored, value FROM esg_cache WHERE key = ?1";
static const char SQL_PUT[] =
    "INSERT INTO esg_cache (key, negative, version, expires, stored, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    " ON CONFLICT(key) DO UPDATE SET negative = excluded.negative, version = excluded.version,"
    " expires = excluded.expires, stored = excluded.stored, value = excluded.value";
/* The version test sits in the upsert itself, so it is atomic across processes. */
static const char SQL_PUT_IF_NEWER[] =
    "INSERT INTO esg_cache (key, negative, version, expires, stored, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    " ON CONFLICT(key) DO UPDATE SET negative = excluded.negative, version = excluded.version,"
    " expires = excluded.expires, stored = excluded.stored, value = excluded.value"
    " WHERE excluded.version > esg_cache.version";
static const char SQL_DEL[] = "DELETE FROM esg_cache WHERE key = ?1";
static const char SQL_PURGE[] = "DELETE FROM esg_cache WHERE expires < ?1 OR (negative = 1 AND expires < ?2)";

const char *esg__sq_identity(esg__sq *q) {
  const char *p = sqlite3_db_filename(q->db, "main");
  return p ? p : "";
}

int esg__sq_cache_get(esg__sq *q, const char *key, size_t klen, esg__buf *val, esg__cache_row *row) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_GET);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? ESG_NOT_FOUND : esg__sq_fail(q, rc, "reading a cache entry");
  }
  row->negative = sqlite3_column_int(st, 0) != 0;
  row->version = sqlite3_column_int64(st, 1);
  row->expires = sqlite3_column_int64(st, 2);
  row->stored = sqlite3_column_int64(st, 3);
  row->value = NULL;
  row->len = 0;
  rc = ESG_OK;
  if (!row->negative) {
    /* Copied out: the statement is reset below, and leaving it open would hold a
       read transaction (and an old snapshot) on the connection. */
    const void *v = sqlite3_column_blob(st, 4);
    size_t n = (size_t)sqlite3_column_bytes(st, 4);
    rc = esg__buf_set(val, v, n);
    row->value = val->data;
    row->len = n;
  }
  sqlite3_reset(st);
  return rc == ESG_OK ? ESG_OK : esg__fail(q->err, rc, "out of memory reading a cache entry");
}

static int write_row(esg__sq *q, const char *sql, const char *key, size_t klen, const esg__cache_row *row,
                     int64_t *changes) {
  sqlite3_stmt *st = esg__sq_stmt(q, sql);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, row->negative ? 1 : 0);
  sqlite3_bind_int64(st, 3, row->version);
  sqlite3_bind_int64(st, 4, row->expires);
  sqlite3_bind_int64(st, 5, row->stored);
  if (row->negative) sqlite3_bind_null(st, 6);
  else sqlite3_bind_blob64(st, 6, row->value ? (const void *)row->value : "", row->len, SQLITE_STATIC);
  return esg__sq_write(q, st, "writing a cache entry", changes);
}

int esg__sq_cache_put(esg__sq *q, const char *key, size_t klen, const esg__cache_row *row) {
  return write_row(q, SQL_PUT, key, klen, row, NULL);
}

int esg__sq_cache_put_if_newer(esg__sq *q, const char *key, size_t klen, const esg__cache_row *row) {
  int64_t n;
  int rc = write_row(q, SQL_PUT_IF_NEWER, key, klen, row, &n);
  return rc != ESG_OK ? rc : n == 1 ? ESG_OK : ESG_STALE;
}

int esg__sq_cache_delete(esg__sq *q, const char *key, size_t klen) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_DEL);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
  return esg__sq_write(q, st, "deleting a cache entry", NULL);
}

int esg__sq_cache_purge(esg__sq *q, int64_t value_before, int64_t negative_before, int64_t *n) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PURGE);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, value_before);
  sqlite3_bind_int64(st, 2, negative_before);
  return esg__sq_write(q, st, "purging cache entries", n);
}
