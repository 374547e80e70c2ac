/* SQLite backend: versioned entities; the version test is in the upsert itself, so it is atomic. */
#include <string.h>
#include "sqlite_int.h"

static const char SQL_GET[] = "SELECT version, deleted, doc FROM esg_entities WHERE key = ?1";
static const char SQL_PUT[] =
    "INSERT INTO esg_entities (key, version, deleted, doc) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT(key) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, doc = excluded.doc"
    " WHERE excluded.version > esg_entities.version";

int esg__sq_entity_get(esg__sq *q, const char *key, esg_entity *out) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_GET);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? ESG_NOT_FOUND : esg__sq_fail(q, rc, "reading an entity");
  }
  out->version = sqlite3_column_int64(st, 0);
  out->deleted = sqlite3_column_int(st, 1);
  out->doc = NULL;
  out->doc_len = 0;
  rc = ESG_OK;
  if (!out->deleted) {
    size_t n = (size_t)sqlite3_column_bytes(st, 2);
    rc = esg__buf_set(&q->doc, sqlite3_column_text(st, 2), n);
    out->doc = q->doc.data;
    out->doc_len = n;
  }
  sqlite3_reset(st);
  return rc == ESG_OK ? ESG_OK : esg__fail(q->err, rc, "out of memory reading an entity");
}

int esg__sq_entity_put_if_newer(esg__sq *q, const char *key, int64_t version, const char *doc, size_t len) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PUT);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, key);
  sqlite3_bind_int64(st, 2, version);
  sqlite3_bind_int(st, 3, doc == NULL);
  if (doc) sqlite3_bind_text64(st, 4, doc, len, SQLITE_STATIC, SQLITE_UTF8);
  int64_t n;
  int rc = esg__sq_write(q, st, "writing an entity", &n);
  return rc != ESG_OK ? rc : n == 1 ? ESG_OK : ESG_STALE;
}
