/* SQLite backend: the event log table. */
#include <stdlib.h>
#include <string.h>
#include "sqlite_int.h"

/* An expired event still in the table (not yet purged) counts as absent, so its id may be stored again. */
static const char SQL_INSERT[] =
    "INSERT INTO esg_events (id, type, ts, corr, json, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    " ON CONFLICT(id) DO UPDATE SET type = excluded.type, ts = excluded.ts, corr = excluded.corr,"
    " json = excluded.json, expires = excluded.expires"
    " WHERE esg_events.expires != 0 AND esg_events.expires <= ?7";
static const char SQL_BY_KEY[] =
    "SELECT id, type, ts, corr, json, expires FROM esg_events"
    " WHERE corr = ?1 AND (expires = 0 OR expires > ?2) ORDER BY ts, id";
static const char SQL_GET[] =
    "SELECT id, type, ts, corr, json, expires FROM esg_events WHERE id = ?1 AND (expires = 0 OR expires > ?2)";
static const char SQL_EXPIRED[] =
    "SELECT id, type, ts, corr, json, expires FROM esg_events WHERE expires != 0 AND expires <= ?1"
    " ORDER BY expires, id";
/* only while still expired: the id may have been stored afresh since the purge read it */
static const char SQL_DELETE[] = "DELETE FROM esg_events WHERE id = ?1 AND expires != 0 AND expires <= ?2";

int esg__sq_event_put(esg__sq *q, const esg_stored_event *ev, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_INSERT);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, ev->id);
  esg__sq_bind_text(st, 2, ev->type);
  sqlite3_bind_int64(st, 3, ev->timestamp);
  esg__sq_bind_text(st, 4, ev->corr_key);
  sqlite3_bind_text64(st, 5, ev->json, ev->json_len, SQLITE_STATIC, SQLITE_UTF8);
  sqlite3_bind_int64(st, 6, ev->expires);
  sqlite3_bind_int64(st, 7, now);
  int64_t n;
  int rc = esg__sq_write(q, st, "storing an event", &n);
  return rc != ESG_OK ? rc : n == 1 ? ESG_OK : ESG_DUPLICATE;
}

/*
 * Hands each row to cb. Rows are copied out first so that cb may call back into
 * the store (which reuses statements) without disturbing this iteration.
 */
static int each_row(esg__sq *q, sqlite3_stmt *st, esg_event_cb cb, void *ud, int *count) {
  typedef struct {
    esg_stored_event ev;
    char *mem;
  } row_t;
  row_t *rows = NULL;
  size_t n = 0, cap = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      row_t *r = esg__realloc(rows, cap * sizeof *r);
      if (!r) break;
      rows = r;
    }
    const char *cols[3] = {(const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
                           (const char *)sqlite3_column_text(st, 3)};
    size_t l0 = strlen(cols[0]), l1 = strlen(cols[1]), l3 = strlen(cols[2]);
    size_t lj = (size_t)sqlite3_column_bytes(st, 4);
    char *mem = esg__malloc(l0 + l1 + l3 + lj + 4);
    if (!mem) break;
    row_t *r = &rows[n++];
    r->mem = mem;
    r->ev.id = memcpy(mem, cols[0], l0 + 1);
    r->ev.type = memcpy(mem + l0 + 1, cols[1], l1 + 1);
    r->ev.corr_key = memcpy(mem + l0 + l1 + 2, cols[2], l3 + 1);
    char *j = mem + l0 + l1 + l3 + 3;
    memcpy(j, sqlite3_column_text(st, 4), lj);
    j[lj] = '\0';
    r->ev.json = j;
    r->ev.json_len = lj;
    r->ev.timestamp = sqlite3_column_int64(st, 2);
    r->ev.expires = sqlite3_column_int64(st, 5);
  }
  sqlite3_reset(st);
  int out = ESG_OK;
  if (rc != SQLITE_DONE)
    out = rc == SQLITE_ROW ? esg__fail(q->err, ESG_ENOMEM, "out of memory reading events")
                           : esg__sq_fail(q, rc, "reading events");
  for (size_t i = 0; i < n; i++) {
    if (out == ESG_OK && cb(ud, &rows[i].ev) != 0)
      out = esg__fail(q->err, ESG_ECALLBACK, "the event callback stopped at event \"%s\"", rows[i].ev.id);
    esg__free(rows[i].mem);
  }
  esg__free(rows);
  if (count) *count = (int)n;
  return out;
}

int esg__sq_events_by_key(esg__sq *q, const char *corr_key, int64_t now, esg_event_cb cb, void *ud) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_BY_KEY);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, corr_key);
  sqlite3_bind_int64(st, 2, now);
  return each_row(q, st, cb, ud, NULL);
}

int esg__sq_event_get(esg__sq *q, const char *id, int64_t now, esg_event_cb cb, void *ud) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_GET);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, id);
  sqlite3_bind_int64(st, 2, now);
  int n = 0, rc = each_row(q, st, cb, ud, &n);
  return rc == ESG_OK && n == 0 ? ESG_NOT_FOUND : rc;
}

int esg__sq_events_expired(esg__sq *q, int64_t now, esg_event_cb cb, void *ud) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_EXPIRED);
  if (!st) return ESG_ESTORE;
  sqlite3_bind_int64(st, 1, now);
  return each_row(q, st, cb, ud, NULL);
}

int esg__sq_event_delete_expired(esg__sq *q, const char *id, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_DELETE);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, id);
  sqlite3_bind_int64(st, 2, now);
  int64_t n;
  int rc = esg__sq_write(q, st, "deleting an event", &n);
  return rc == ESG_OK && n == 0 ? ESG_NOT_FOUND : rc;
}
