/*
 * SQLite backend: the resync feature's tables. Cursors are one row per job; the
 * listing state of snapshot diffs is one row per (source, key) holding the
 * content hash (32 bytes) and the generation that last saw the key, so a listing
 * costs one primary-key update per unchanged entry and deletions are one ordered
 * range scan of the source. Replay reads the event log.
 */
#include <stdlib.h>
#include <string.h>
#include "sqlite_int.h"

const char esg__sq_resync_schema[] =
    "CREATE TABLE esg_cursors ("
    "  name TEXT PRIMARY KEY, cursor TEXT NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE esg_snapshots ("
    "  source TEXT PRIMARY KEY, gen INTEGER NOT NULL, open INTEGER NOT NULL, started INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE esg_snapshot_keys ("
    "  source TEXT NOT NULL, key TEXT NOT NULL, hash BLOB NOT NULL, gen INTEGER NOT NULL,"
    "  PRIMARY KEY (source, key)) WITHOUT ROWID;";

static const char SQL_CUR_GET[] = "SELECT cursor FROM esg_cursors WHERE name = ?1";
static const char SQL_CUR_PUT[] =
    "INSERT INTO esg_cursors (name, cursor, updated) VALUES (?1, ?2, ?3)"
    " ON CONFLICT(name) DO UPDATE SET cursor = excluded.cursor, updated = excluded.updated";
static const char SQL_CUR_DEL[] = "DELETE FROM esg_cursors WHERE name = ?1";
/* an open (unfinished) generation is resumed; a finished one is followed by the next */
static const char SQL_SNAP_OPEN[] =
    "INSERT INTO esg_snapshots (source, gen, open, started) VALUES (?1, 1, 1, ?2)"
    " ON CONFLICT(source) DO UPDATE SET gen = CASE WHEN open THEN gen ELSE gen + 1 END,"
    " started = CASE WHEN open THEN started ELSE excluded.started END, open = 1"
    " RETURNING gen";
static const char SQL_SNAP_CLOSE[] = "UPDATE esg_snapshots SET open = 0 WHERE source = ?1 AND gen = ?2";
static const char SQL_TOUCH[] =
    "UPDATE esg_snapshot_keys SET gen = ?4 WHERE source = ?1 AND key = ?2 AND hash = ?3";
static const char SQL_INSERT[] =
    "INSERT INTO esg_snapshot_keys (source, key, hash, gen) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT(source, key) DO NOTHING";
static const char SQL_HASH[] = "SELECT hash FROM esg_snapshot_keys WHERE source = ?1 AND key = ?2";
static const char SQL_UPDATE[] =
    "UPDATE esg_snapshot_keys SET hash = ?3, gen = ?4 WHERE source = ?1 AND key = ?2";
static const char SQL_UNSEEN[] =
    "SELECT key, hash FROM esg_snapshot_keys WHERE source = ?1 AND key > ?3 AND gen < ?2 ORDER BY key LIMIT ?4";
static const char SQL_FORGET[] = "DELETE FROM esg_snapshot_keys WHERE source = ?1 AND key = ?2";
/* two queries, so that a replay by key can use the (corr, ts, id) index for order */
static const char SQL_REPLAY_KEY[] =
    "SELECT id, type, ts, corr, json, expires FROM esg_events WHERE corr = ?1 AND (?2 IS NULL OR type = ?2)"
    " AND ts >= ?3 AND ts < ?4 AND (expires = 0 OR expires > ?5) ORDER BY ts, id";
static const char SQL_REPLAY_ALL[] =
    "SELECT id, type, ts, corr, json, expires FROM esg_events WHERE (?2 IS NULL OR type = ?2)"
    " AND ts >= ?3 AND ts < ?4 AND (expires = 0 OR expires > ?5) ORDER BY ts, id";

int esg__sq_cursor_get(esg__sq *q, const char *name, const char **cursor) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_CUR_GET);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, name);
  int rc = sqlite3_step(st), out = ESG_NOT_FOUND;
  if (rc == SQLITE_ROW) {
    const void *t = sqlite3_column_text(st, 0);
    out = esg__buf_set(&q->result, t, (size_t)sqlite3_column_bytes(st, 0));
    if (out != ESG_OK) out = esg__fail(q->err, ESG_ENOMEM, "out of memory reading a cursor");
    *cursor = q->result.data;
  } else if (rc != SQLITE_DONE) {
    out = esg__sq_fail(q, rc, "reading a cursor");
  }
  sqlite3_reset(st);
  return out;
}

int esg__sq_cursor_put(esg__sq *q, const char *name, const char *cursor, int64_t now) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_CUR_PUT);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, name);
  esg__sq_bind_text(st, 2, cursor);
  sqlite3_bind_int64(st, 3, now);
  return esg__sq_write(q, st, "storing a cursor", NULL);
}

int esg__sq_cursor_delete(esg__sq *q, const char *name) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_CUR_DEL);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, name);
  int64_t n;
  int rc = esg__sq_write(q, st, "deleting a cursor", &n);
  return rc == ESG_OK && n == 0 ? ESG_NOT_FOUND : rc;
}

int esg__sq_snap_open(esg__sq *q, const char *source, int64_t now, int64_t *gen) {
  bool own;
  int out = esg__sq_unit_begin(q, true, &own);
  if (out != ESG_OK) return out;
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_SNAP_OPEN);
  if (!st) return esg__sq_unit_end(q, own, ESG_ESTORE, 1);
  esg__sq_bind_text(st, 1, source);
  sqlite3_bind_int64(st, 2, now);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *gen = sqlite3_column_int64(st, 0);
  else out = esg__sq_fail(q, rc == SQLITE_DONE ? SQLITE_ERROR : rc, "opening a listing");
  sqlite3_reset(st);
  return esg__sq_unit_end(q, own, out, 1);
}

int esg__sq_snap_close(esg__sq *q, const char *source, int64_t gen) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_SNAP_CLOSE);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, source);
  sqlite3_bind_int64(st, 2, gen);
  return esg__sq_write(q, st, "closing a listing", NULL);
}

static sqlite3_stmt *key_stmt(esg__sq *q, const char *sql, const char *source, const char *key,
                              const uint8_t *hash, int64_t gen) {
  sqlite3_stmt *st = esg__sq_stmt(q, sql);
  if (!st) return NULL;
  esg__sq_bind_text(st, 1, source);
  esg__sq_bind_text(st, 2, key);
  if (hash) sqlite3_bind_blob(st, 3, hash, 32, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, gen);
  return st;
}

static int changed_one(esg__sq *q, sqlite3_stmt *st, const char *what, int none) {
  int64_t n;
  int rc = esg__sq_write(q, st, what, &n);
  return rc != ESG_OK ? rc : n ? ESG_OK : none;
}

static int snap_touch(esg__sq *q, const char *source, const char *key, const uint8_t hash[32], int64_t gen) {
  sqlite3_stmt *st = key_stmt(q, SQL_TOUCH, source, key, hash, gen);
  return st ? changed_one(q, st, "marking a listed key", ESG_NOT_FOUND) : ESG_ESTORE;
}

static int snap_insert(esg__sq *q, const char *source, const char *key, const uint8_t hash[32], int64_t gen) {
  sqlite3_stmt *st = key_stmt(q, SQL_INSERT, source, key, hash, gen);
  return st ? changed_one(q, st, "storing a listed key", ESG_DUPLICATE) : ESG_ESTORE;
}

static int snap_update(esg__sq *q, const char *source, const char *key, const uint8_t hash[32], int64_t gen,
                          uint8_t prev[32]) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_HASH);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, source);
  esg__sq_bind_text(st, 2, key);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const void *h = sqlite3_column_blob(st, 0);
    memset(prev, 0, 32);
    if (h && sqlite3_column_bytes(st, 0) == 32) memcpy(prev, h, 32);
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) return ESG_NOT_FOUND;
  if (rc != SQLITE_ROW) return esg__sq_fail(q, rc, "reading a listed key's hash");
  st = key_stmt(q, SQL_UPDATE, source, key, hash, gen);
  return st ? changed_one(q, st, "updating a listed key", ESG_NOT_FOUND) : ESG_ESTORE;
}

/*
 * One listed key: a first listing is all new keys and a later one mostly
 * unchanged, so the statement tried first follows the last outcome. Inside its
 * own unit, so the read of the old hash and the update are one decision.
 */
int esg__sq_snap_see(esg__sq *q, const char *source, const char *key, const uint8_t hash[32], int64_t gen,
                     uint8_t prev[32]) {
  bool own;
  int rc = esg__sq_unit_begin(q, true, &own);
  if (rc != ESG_OK) return rc;
  int out;
  if (q->snap_insert_first && (rc = snap_insert(q, source, key, hash, gen)) != ESG_DUPLICATE) {
    out = rc == ESG_OK ? ESG__SNAP_CREATED : rc;
  } else if ((rc = snap_touch(q, source, key, hash, gen)) != ESG_NOT_FOUND) {
    q->snap_insert_first = false;
    out = rc == ESG_OK ? ESG__SNAP_UNCHANGED : rc;
  } else if ((rc = snap_update(q, source, key, hash, gen, prev)) != ESG_NOT_FOUND) {
    q->snap_insert_first = false;
    out = rc == ESG_OK ? ESG__SNAP_UPDATED : rc;
  } else {
    rc = snap_insert(q, source, key, hash, gen);
    if (rc == ESG_DUPLICATE) rc = esg__fail(q->err, ESG_ESTORE, "storing a listed key: it appeared meanwhile");
    q->snap_insert_first = true;
    out = rc == ESG_OK ? ESG__SNAP_CREATED : rc;
  }
  return esg__sq_unit_end(q, own, out, 1);
}

int esg__sq_cursor_advance(esg__sq *q, const char *name, const char *expected, const char *next, int64_t now) {
  bool own;
  int rc = esg__sq_unit_begin(q, true, &own);
  if (rc != ESG_OK) return rc;
  const char *c = NULL;
  rc = esg__sq_cursor_get(q, name, &c);
  if (rc == ESG_NOT_FOUND) {
    c = NULL;
    rc = ESG_OK;
  }
  if (rc == ESG_OK && !((!c && !expected) || (c && expected && strcmp(c, expected) == 0))) rc = ESG_BUSY;
  if (rc == ESG_OK && next) rc = esg__sq_cursor_put(q, name, next, now);
  return esg__sq_unit_end(q, own, rc, 1);
}

int esg__sq_snap_forget(esg__sq *q, const char *source, const char *key) {
  sqlite3_stmt *st = key_stmt(q, SQL_FORGET, source, key, NULL, 0);
  return esg__sq_write(q, st, "forgetting a listed key", NULL);
}

int esg__sq_snap_unseen(esg__sq *q, const char *source, int64_t gen, const char *after, int limit,
                          esg__snap_key_cb cb, void *ud, int *count) {
  sqlite3_stmt *st = esg__sq_stmt(q, SQL_UNSEEN);
  if (!st) return ESG_ESTORE;
  esg__sq_bind_text(st, 1, source);
  sqlite3_bind_int64(st, 2, gen);
  esg__sq_bind_text(st, 3, after);
  sqlite3_bind_int(st, 4, limit);
  /* copied out first: cb deletes rows of this very table */
  typedef struct {
    char *key;
    uint8_t hash[32];
  } row_t;
  row_t *rows = esg__calloc((size_t)limit, sizeof *rows);
  int n = 0, rc = SQLITE_DONE, out = ESG_OK;
  if (!rows) {
    sqlite3_reset(st);
    return esg__fail(q->err, ESG_ENOMEM, "out of memory listing unseen keys");
  }
  while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    size_t kl = (size_t)sqlite3_column_bytes(st, 0);
    rows[n].key = esg__malloc(kl + 1);
    if (!rows[n].key) {
      out = esg__fail(q->err, ESG_ENOMEM, "out of memory listing unseen keys");
      break;
    }
    memcpy(rows[n].key, sqlite3_column_text(st, 0), kl + 1);
    if (sqlite3_column_bytes(st, 1) == 32) memcpy(rows[n].hash, sqlite3_column_blob(st, 1), 32);
    n++;
  }
  if (out == ESG_OK && n < limit && rc != SQLITE_DONE) out = esg__sq_fail(q, rc, "listing unseen keys");
  sqlite3_reset(st);
  for (int i = 0; i < n; i++) {
    if (out == ESG_OK && cb(ud, rows[i].key, rows[i].hash) != 0) out = ESG_ECALLBACK;
    esg__free(rows[i].key);
  }
  esg__free(rows);
  *count = n;
  return out;
}

/* A private statement, not the cache: cb may call into the store, which reuses cached statements. */
int esg__sq_replay(esg__sq *q, const esg_replay_filter *f, int64_t now, esg_event_cb cb, void *ud, int64_t *n) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(q->db, f->corr_key ? SQL_REPLAY_KEY : SQL_REPLAY_ALL, -1, &st, NULL);
  if (rc != SQLITE_OK) return esg__sq_fail(q, rc, "preparing a replay");
  if (f->corr_key) esg__sq_bind_text(st, 1, f->corr_key);
  if (f->type) esg__sq_bind_text(st, 2, f->type);
  sqlite3_bind_int64(st, 3, f->since ? f->since : INT64_MIN);
  sqlite3_bind_int64(st, 4, f->until ? f->until : INT64_MAX);
  sqlite3_bind_int64(st, 5, now);
  esg__buf row = {0};
  int out = ESG_OK;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    /* copy the row: cb may write, and our column pointers would not survive that */
    size_t l[4] = {(size_t)sqlite3_column_bytes(st, 0), (size_t)sqlite3_column_bytes(st, 1),
                   (size_t)sqlite3_column_bytes(st, 3), (size_t)sqlite3_column_bytes(st, 4)};
    if (esg__buf_set(&row, NULL, l[0] + l[1] + l[2] + l[3] + 4) != ESG_OK) {
      out = esg__fail(q->err, ESG_ENOMEM, "out of memory replaying events");
      break;
    }
    char *p = row.data;
    esg_stored_event ev = {0};
    int cols[4] = {0, 1, 3, 4};
    const char **dst[4] = {&ev.id, &ev.type, &ev.corr_key, &ev.json};
    for (int i = 0; i < 4; i++) {
      memcpy(p, sqlite3_column_text(st, cols[i]), l[i]);
      p[l[i]] = '\0';
      *dst[i] = p;
      p += l[i] + 1;
    }
    ev.json_len = l[3];
    ev.timestamp = sqlite3_column_int64(st, 2);
    ev.expires = sqlite3_column_int64(st, 5);
    if (cb(ud, &ev) != 0) {
      out = esg__fail(q->err, ESG_ECALLBACK, "the replay callback stopped at event \"%s\"", ev.id);
      break;
    }
    if (n) (*n)++;
  }
  if (out == ESG_OK && rc != SQLITE_DONE) out = esg__sq_fail(q, rc, "replaying events");
  sqlite3_finalize(st);
  esg__buf_free(&row);
  return out;
}

