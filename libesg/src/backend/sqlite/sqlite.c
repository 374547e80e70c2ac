/*
 * The SQLite backend: connection setup (WAL, synchronous, busy timeout), schema
 * migrations, the per-handle cache of prepared statements, and the table of
 * operations (units of writes and group commit are in sqlite_tx.c).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sqlite_int.h"

/*
 * Migrations: entry i takes the schema from version i to i+1. Append only;
 * never edit a step that has shipped. PRAGMA user_version holds the version.
 */
static const char *const migrations[] = {
    /* 1: claims, event log, entities */
    "CREATE TABLE esg_claims ("
    "  key TEXT PRIMARY KEY, done INTEGER NOT NULL, hash BLOB, token INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, lease_until INTEGER NOT NULL, expires INTEGER NOT NULL,"
    "  ttl INTEGER NOT NULL, result BLOB) WITHOUT ROWID;"
    /* no index on expires: it would add pages to every claim's commit, and purging
       (rare) can afford a scan */
    "CREATE TABLE esg_events ("
    "  id TEXT PRIMARY KEY, type TEXT NOT NULL, ts INTEGER NOT NULL, corr TEXT NOT NULL,"
    "  json TEXT NOT NULL, expires INTEGER NOT NULL);"
    "CREATE INDEX esg_events_corr ON esg_events(corr, ts, id);"
    "CREATE INDEX esg_events_expires ON esg_events(expires) WHERE expires != 0;"
    "CREATE TABLE esg_entities ("
    "  key TEXT PRIMARY KEY, version INTEGER NOT NULL, deleted INTEGER NOT NULL, doc TEXT) WITHOUT ROWID;",
    esg__sq_faults_schema, /* 2 */
    esg__sq_cache_schema,  /* 3 */
    esg__sq_latch_schema,  /* 4 */
    esg__sq_resync_schema, /* 5 */
    esg__sq_outbox_schema, /* 6 */
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

int esg__sq_fail(esg__sq *q, int rc, const char *what) {
  sqlite3 *db = q->db;
  int code = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? ESG_ELOCKED : ESG_ESTORE;
  return esg__fail(q->err, code, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

static int exec_sql(esg__sq *q, const char *sql, const char *what) {
  int rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? ESG_OK : esg__sq_fail(q, rc, what);
}

sqlite3_stmt *esg__sq_stmt(esg__sq *q, const char *sql) {
  size_t h = ((uintptr_t)sql >> 4) % ESG__STMT_SLOTS;
  for (size_t i = 0; i < ESG__STMT_SLOTS; i++, h = (h + 1) % ESG__STMT_SLOTS) {
    if (q->cache[h].sql == sql) {
      sqlite3_stmt *st = q->cache[h].stmt;
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      return st;
    }
    if (!q->cache[h].sql) {
      sqlite3_stmt *st = NULL;
      int rc = sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
      if (rc != SQLITE_OK) {
        esg__sq_fail(q, rc, "prepare");
        return NULL;
      }
      q->cache[h].sql = sql;
      q->cache[h].stmt = st;
      return st;
    }
  }
  esg__fail(q->err, ESG_ESTORE, "statement cache full");
  return NULL;
}

int esg__sq_exec(esg__sq *q, sqlite3_stmt *st, const char *what) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? ESG_OK : esg__sq_fail(q, rc, what);
}

void esg__sq_bind_text(sqlite3_stmt *st, int i, const char *v) {
  sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

void esg__sq_bind_blob(sqlite3_stmt *st, int i, const void *v, size_t len) {
  if (v && len) sqlite3_bind_blob64(st, i, v, len, SQLITE_STATIC);
  else sqlite3_bind_null(st, i);
}

static int user_version(esg__sq *q, int *v) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    *v = sqlite3_column_int(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? ESG_OK : esg__sq_fail(q, rc, "reading the schema version");
}

/* Applies the missing migrations in one transaction, so two processes opening a new file race safely. */
static int migrate(esg__sq *q) {
  int v = 0, rc = user_version(q, &v);
  if (rc != ESG_OK) return rc;
  if (v == SCHEMA_VERSION) return ESG_OK;
  if ((rc = exec_sql(q, "BEGIN IMMEDIATE", "locking for migration")) != ESG_OK) return rc;
  /* the migration table is indexed by the version: anything outside 0..SCHEMA_VERSION is
     another program's file (negative: no libesg writes one), refused before it is used */
  if ((rc = user_version(q, &v)) == ESG_OK && v > SCHEMA_VERSION)
    rc = esg__fail(q->err, ESG_ESCHEMA,
                   "schema version %d is newer than this libesg (%s) knows: it reads versions 0 to %d", v,
                   ESG_VERSION_STRING, SCHEMA_VERSION);
  else if (rc == ESG_OK && v < 0)
    rc = esg__fail(q->err, ESG_ESCHEMA,
                   "schema version %d is not one libesg writes (this libesg, %s, reads versions 0 to %d)", v,
                   ESG_VERSION_STRING, SCHEMA_VERSION);
  for (; rc == ESG_OK && v < SCHEMA_VERSION; v++) {
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", v + 1);
    if ((rc = exec_sql(q, migrations[v], "migrating the schema")) == ESG_OK)
      rc = exec_sql(q, pragma, "recording the schema version");
  }
  if (rc != ESG_OK) {
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  return exec_sql(q, "COMMIT", "committing the migration");
}

/* Why a file cannot be opened, in the words of the system, with what to do: SQLite says
   "unable to open database file" for a missing folder, a permission and a read-only file
   system alike. Empty when nothing is found wrong. */
static void open_cause(const char *path, char *out, size_t n) {
  out[0] = '\0';
  if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) return;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = '\0';
  else if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  struct stat st;
  if (stat(dir, &st) != 0)
    snprintf(out, n, "the folder %.300s: %s (create it first)", dir, strerror(errno));
  else if (!S_ISDIR(st.st_mode))
    snprintf(out, n, "%.300s is not a folder", dir);
  else if (access(path, F_OK) != 0 && access(dir, W_OK) != 0)
    snprintf(out, n, "cannot create a file in %.300s: %s", dir, strerror(errno));
  else if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) != 0)
    snprintf(out, n, "the file: %s", strerror(errno));
}

/* An open's failure with the file named first: "store PATH: what". */
static int named(esg__sq *q, const char *path, int rc) {
  char msg[sizeof q->err->msg];
  snprintf(msg, sizeof msg, "%s", q->err->msg);
  return esg__fail(q->err, rc, "store %s: %s", path, msg);
}

static int sq_open(esg__sq **out, const esg__be_opts *o) {
  esg__sq *q = esg__calloc(1, sizeof *q);
  if (!q) return esg__fail(o->err, ESG_ENOMEM, "out of memory");
  *out = q;
  q->err = o->err;
  q->clock = o->clock;
  q->clock_ud = o->clock_ud;
  q->group_ms = o->group_ms;
  q->group_max = o->group_max;
  q->snap_insert_first = true;
  int rc = sqlite3_open_v2(o->target, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    char cause[600];
    open_cause(o->target, cause, sizeof cause);
    esg__fail(q->err, ESG_ESTORE, "cannot open the store %s: %s", o->target,
              cause[0] ? cause : q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
    return ESG_ESTORE;
  }
  sqlite3_extended_result_codes(q->db, 1);
  sqlite3_busy_timeout(q->db, o->busy_timeout_ms ? o->busy_timeout_ms : 5000);
  /* WAL lets readers run beside the one writer; NORMAL syncs only at checkpoints. A
     16 MiB page cache (SQLite's default is 2 MiB) keeps the indexes of large logs and
     listings in memory, where random ids would otherwise miss on every write. */
  const char *setup = o->durability == ESG_DURABILITY_FULL ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
  if (sqlite3_db_readonly(q->db, "main") == 1)
    return esg__fail(q->err, ESG_ESTORE,
                     "store %s is read-only (no write permission on the file or its folder): libesg writes to its store",
                     o->target);
  if ((rc = exec_sql(q, setup, "configuring the connection")) != ESG_OK ||
      (rc = exec_sql(q, "PRAGMA cache_size=-16384;", "configuring the cache")) != ESG_OK) {
    char cause[600];
    open_cause(o->target, cause, sizeof cause);
    if (cause[0]) return esg__fail(q->err, ESG_ESTORE, "cannot open the store %s: %s", o->target, cause);
    return named(q, o->target, rc);
  }
  q->ckpt = esg__ckpt_attach(q->db);
  if ((rc = migrate(q)) != ESG_OK) return named(q, o->target, rc);
  esg__cc_open(q);
  return ESG_OK;
}

/* Connections inherited across fork(), kept reachable and never touched (see sq_close). */
typedef struct kept {
  sqlite3 *db;
  struct kept *next;
} kept;
static kept *_Atomic inherited_dbs;

void esg__sq_keep_inherited(sqlite3 *db) {
  kept *n = db ? esg__malloc(sizeof *n) : NULL;
  if (!n) return; /* then merely unreachable: still never touched */
  n->db = db;
  n->next = atomic_load(&inherited_dbs);
  while (!atomic_compare_exchange_weak(&inherited_dbs, &n->next, n)) {
  }
}

static void sq_close(esg__sq *q, bool inherited) {
  if (!q) return;
  if (q->db) esg__ckpt_detach(q->db, q->ckpt);
  if (inherited) {
    /* A child of fork(): its copy of the connection is left as it is, with its
       statements, never finalized nor closed. Closing would roll back the parent's open
       transaction in the shared WAL index (behind the parent's back), and any SQLite
       call may wait for ever on a mutex another thread of the parent held at fork. */
    esg__sq_keep_inherited(q->db);
  } else {
    for (int i = 0; i < ESG__STMT_SLOTS; i++) sqlite3_finalize(q->cache[i].stmt);
    sqlite3_close_v2(q->db);
  }
  esg__cc_free(q); /* (after the close, whose rollback of an open batch calls its hook) */
  esg__pend_free(q);
  esg__buf_free(&q->result);
  esg__buf_free(&q->doc);
  esg__free(q);
}

static int sq_schema_version(esg__sq *q) {
  int v = -1;
  return user_version(q, &v) == ESG_OK ? v : -1;
}

/* The WAL frames this connection's commits appended: each a page and a 24-byte header.
   Checkpoints copy them once more into the database file (on the checkpoint thread). */
static uint64_t sq_bytes_written(esg__sq *q) {
  if (!q->page_size) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      q->page_size = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!q->page_size) return 0;
  }
  int pages = 0, high = 0;
  if (sqlite3_db_status(q->db, SQLITE_DBSTATUS_CACHE_WRITE, &pages, &high, 0) != SQLITE_OK) return 0;
  return (uint64_t)pages * (uint64_t)(q->page_size + 24);
}

const esg__backend esg__sqlite_backend = {
    .version = ESG__BACKEND_VERSION,
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .identity = esg__sq_identity,
    .bytes_written = sq_bytes_written,
    .begin = esg__sq_begin,
    .commit = esg__sq_commit,
    .rollback = esg__sq_rollback,
    .flush = esg__sq_flush,
    .flush_due = esg__sq_flush_due,
    .claim = esg__sq_claim,
    .claim_complete = esg__sq_claim_complete,
    .claim_release = esg__sq_claim_release,
    .claim_extend = esg__sq_claim_extend,
    .claims_complete = esg__sq_claims_complete,
    .claims_purge = esg__sq_claims_purge,
    .event_put = esg__sq_event_put,
    .events_by_key = esg__sq_events_by_key,
    .event_get = esg__sq_event_get,
    .events_expired = esg__sq_events_expired,
    .event_delete_expired = esg__sq_event_delete_expired,
    .entity_get = esg__sq_entity_get,
    .entity_put_if_newer = esg__sq_entity_put_if_newer,
    .fault_put = esg__sq_fault_put,
    .faults_each = esg__sq_faults_each,
    .fault_delete = esg__sq_fault_delete,
    .faults_purge = esg__sq_faults_purge,
    .latch_set = esg__sq_latch_set,
    .latch_consume = esg__sq_latch_consume,
    .latch_cancel = esg__sq_latch_cancel,
    .latch_count = esg__sq_latch_count,
    .latches_purge = esg__sq_latches_purge,
    .cache_get = esg__sq_cache_get,
    .outbox_put = esg__sq_outbox_put,
    .outbox_get = esg__sq_outbox_get,
    .outbox_delete = esg__sq_outbox_delete,
    .outbox_purge = esg__sq_outbox_purge,
    .cache_put = esg__sq_cache_put,
    .cache_put_if_newer = esg__sq_cache_put_if_newer,
    .cache_delete = esg__sq_cache_delete,
    .cache_purge = esg__sq_cache_purge,
    .cursor_get = esg__sq_cursor_get,
    .cursor_put = esg__sq_cursor_put,
    .cursor_delete = esg__sq_cursor_delete,
    .cursor_advance = esg__sq_cursor_advance,
    .snap_open = esg__sq_snap_open,
    .snap_close = esg__sq_snap_close,
    .snap_see = esg__sq_snap_see,
    .snap_unseen = esg__sq_snap_unseen,
    .snap_forget = esg__sq_snap_forget,
    .replay = esg__sq_replay,
};
