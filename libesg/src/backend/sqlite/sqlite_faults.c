/* SQLite backend: fault records. */
#include <stdlib.h>
#include <string.h>
#include "sqlite_int.h"

const char esg__sq_faults_schema[] =
    "CREATE TABLE esg_faults ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, stage TEXT NOT NULL, error TEXT NOT NULL,"
    "  http_status INTEGER NOT NULL, attempts INTEGER NOT NULL, first_attempt INTEGER NOT NULL,"
    "  last_attempt INTEGER NOT NULL, event TEXT);"
    "CREATE INDEX esg_faults_event ON esg_faults(event_id);";

static const char SQL_INSERT[] =
    "INSERT INTO esg_faults (event_id, stage, error, http_status, attempts, first_attempt, last_attempt, event)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
static const char SQL_ALL[] =
    "SELECT id, event_id, stage, error, http_status, attempts, first_attempt, last_attempt, event"
    " FROM esg_faults ORDER BY id";
static const char SQL_ONE[] =
    "SELECT id, event_id, stage, error, http_status, attempts, first_attempt, last_attempt, event"
    " FROM esg_faults WHERE id = ?1";
static const char SQL_DELETE[] = "DELETE FROM esg_faults WHERE id = ?1";
static const char SQL_PURGE[] = "DELETE FROM esg_faults WHERE last_attempt < ?1";

int esg__sq_fault_put(esg__sq *q, const esg_fault *f, int64_t *id) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_INSERT);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, f->event_id);
  esg__sq_bind_text(st, 2, f->stage);
  esg__sq_bind_text(st, 3, f->error);
  sqlite3_bind_int(st, 4, f->http_status);
  sqlite3_bind_int(st, 5, f->attempts);
  sqlite3_bind_int64(st, 6, f->first_attempt);
  sqlite3_bind_int64(st, 7, f->last_attempt);
  if (f->event) sqlite3_bind_text64(st, 8, f->event, f->event_len, SQLITE_STATIC, SQLITE_UTF8);
  int rc = esg__sq_write(q, st, "recording a fault", NULL);
  if (rc == ESG_OK && id) *id = sqlite3_last_insert_rowid(q->db); /* (a commit keeps it) */
  return rc;
}

static char *dup_col(sqlite3_stmt *st, int i, size_t *len) {
  const unsigned char *t = sqlite3_column_text(st, i);
  size_t n = (size_t)sqlite3_column_bytes(st, i);
  if (len) *len = n;
  if (!t) return NULL;
  char *p = esg__malloc(n + 1);
  if (p) {
    memcpy(p, t, n);
    p[n] = '\0';
  }
  return p;
}

/* Rows are copied out before any callback runs, so a callback may write to the store (e.g. delete). */
int esg__sq_faults_each(esg__sq *q, int64_t only_id, esg_fault_cb cb, void *ud, int *count) {
  sqlite3_stmt *st = esg__sq_stmt(q, only_id ? SQL_ONE : SQL_ALL);
  if (!st) return ESG_ESTORE;
  if (only_id) sqlite3_bind_int64(st, 1, only_id);
  esg_fault *rows = NULL;
  size_t n = 0, cap = 0;
  int rc, out = ESG_OK;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      esg_fault *r = esg__realloc(rows, cap * sizeof *r);
      if (!r) break;
      rows = r;
    }
    esg_fault *f = &rows[n++];
    memset(f, 0, sizeof *f);
    f->id = sqlite3_column_int64(st, 0);
    f->event_id = dup_col(st, 1, NULL);
    f->stage = dup_col(st, 2, NULL);
    f->error = dup_col(st, 3, NULL);
    f->http_status = sqlite3_column_int(st, 4);
    f->attempts = sqlite3_column_int(st, 5);
    f->first_attempt = sqlite3_column_int64(st, 6);
    f->last_attempt = sqlite3_column_int64(st, 7);
    f->event = dup_col(st, 8, &f->event_len);
    if (!f->event_id || !f->stage || !f->error || (!f->event && f->event_len)) break; /* out of memory */
  }
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    out = rc == SQLITE_ROW ? esg__fail(q->err, ESG_ENOMEM, "out of memory reading faults")
                           : esg__sq_fail(q, rc, "reading faults");
  for (size_t i = 0; i < n; i++) {
    if (out == ESG_OK && cb(ud, &rows[i]) != 0)
      out = esg__fail(q->err, ESG_ECALLBACK, "the fault callback stopped at fault %lld", (long long)rows[i].id);
    esg__free((char *)rows[i].event_id);
    esg__free((char *)rows[i].stage);
    esg__free((char *)rows[i].error);
    esg__free((char *)rows[i].event);
  }
  esg__free(rows);
  if (count) *count = (int)n;
  return out;
}

int esg__sq_fault_delete(esg__sq *q, int64_t id) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_DELETE);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, id);
  int64_t n;
  int rc = esg__sq_write(q, st, "deleting a fault", &n);
  if (rc == ESG_OK && n == 0)
    return esg__fail(q->err, ESG_NOT_FOUND, "no fault with id %lld", (long long)id);
  return rc;
}

int esg__sq_faults_purge(esg__sq *q, int64_t before, int64_t *n) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_PURGE);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, before);
  return esg__sq_write(q, st, "purging faults", n);
}
