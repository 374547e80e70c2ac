/*
 * The SQLite backend: connection setup (WAL, synchronous, busy timeout), schema
 * migrations, transactions and the per-handle cache of prepared statements.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

int esg__sq_fail(esg_store *s, int rc, const char *what) {
  sqlite3 *db = s->db ? ESG__DB(s) : NULL;
  int code = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? ESG_ELOCKED : ESG_ESTORE;
  return esg__fail(&s->err, code, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

static int exec_sql(esg_store *s, const char *sql, const char *what) {
  int rc = sqlite3_exec(ESG__DB(s), sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? ESG_OK : esg__sq_fail(s, rc, what);
}

sqlite3_stmt *esg__sq_stmt(esg_store *s, const char *sql) {
  /* every statement comes through here: the last guard against an inherited
     handle (esg__check_process), for the reads that do not begin a unit */
  if (esg__check_process(s) != ESG_OK) return NULL;
  esg__sq *q = s->db;
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
        esg__sq_fail(s, rc, "prepare");
        return NULL;
      }
      q->cache[h].sql = sql;
      q->cache[h].stmt = st;
      return st;
    }
  }
  esg__fail(&s->err, ESG_ESTORE, "statement cache full");
  return NULL;
}

int esg__sq_exec(esg_store *s, sqlite3_stmt *st, const char *what) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? ESG_OK : esg__sq_fail(s, rc, what);
}

void esg__sq_bind_text(sqlite3_stmt *st, int i, const char *v) {
  sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

void esg__sq_bind_blob(sqlite3_stmt *st, int i, const void *v, size_t len) {
  if (v && len) sqlite3_bind_blob64(st, i, v, len, SQLITE_STATIC);
  else sqlite3_bind_null(st, i);
}

static int user_version(esg_store *s, int *v) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(ESG__DB(s), "PRAGMA user_version", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    *v = sqlite3_column_int(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? ESG_OK : esg__sq_fail(s, rc, "reading the schema version");
}

/* Applies the missing migrations in one transaction, so two processes opening a new file race safely. */
static int migrate(esg_store *s) {
  int v = 0, rc = user_version(s, &v);
  if (rc != ESG_OK) return rc;
  if (v == SCHEMA_VERSION) return ESG_OK;
  if ((rc = exec_sql(s, "BEGIN IMMEDIATE", "locking for migration")) != ESG_OK) return rc;
  if ((rc = user_version(s, &v)) == ESG_OK && v > SCHEMA_VERSION)
    rc = esg__fail(&s->err, ESG_ESCHEMA, "store schema version %d is newer than this libesg (%s) knows (%d)",
                   v, ESG_VERSION_STRING, SCHEMA_VERSION);
  for (; rc == ESG_OK && v < SCHEMA_VERSION; v++) {
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", v + 1);
    if ((rc = exec_sql(s, migrations[v], "migrating the schema")) == ESG_OK)
      rc = exec_sql(s, pragma, "recording the schema version");
  }
  if (rc != ESG_OK) {
    sqlite3_exec(ESG__DB(s), "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  return exec_sql(s, "COMMIT", "committing the migration");
}

static int sq_open(esg_store *s, const char *path, const esg_store_opts *o) {
  esg__sq *q = calloc(1, sizeof *q);
  if (!q) return esg__fail(&s->err, ESG_ENOMEM, "out of memory");
  s->db = q;
  int rc = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    esg__fail(&s->err, ESG_ESTORE, "opening %s: %s", path, q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
    return ESG_ESTORE;
  }
  sqlite3_extended_result_codes(q->db, 1);
  sqlite3_busy_timeout(q->db, o->busy_timeout_ms ? o->busy_timeout_ms : 5000);
  /* WAL lets readers run beside the one writer; NORMAL syncs only at checkpoints. A
     16 MiB page cache (SQLite's default is 2 MiB) keeps the indexes of large logs and
     listings in memory, where random ids would otherwise miss on every write. */
  const char *setup = o->durability == ESG_DURABILITY_FULL ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
  if ((rc = exec_sql(s, setup, "configuring the connection")) != ESG_OK ||
      (rc = exec_sql(s, "PRAGMA cache_size=-16384;", "configuring the cache")) != ESG_OK)
    return rc;
  q->ckpt = esg__ckpt_attach(q->db);
  return migrate(s);
}

/* Connections inherited across fork(), kept reachable and never touched (see sq_close). */
typedef struct inherited {
  sqlite3 *db;
  struct inherited *next;
} inherited;
static inherited *_Atomic inherited_dbs;

void esg__sq_keep_inherited(sqlite3 *db) {
  inherited *n = db ? malloc(sizeof *n) : NULL;
  if (!n) return; /* then merely unreachable: still never touched */
  n->db = db;
  n->next = atomic_load(&inherited_dbs);
  while (!atomic_compare_exchange_weak(&inherited_dbs, &n->next, n)) {
  }
}

static void sq_close(esg_store *s) {
  esg__sq *q = s->db;
  if (!q) return;
  esg__ckpt_detach(q->db, q->ckpt);
  if (esg__inherited(s)) {
    /* A child of fork(): its copy of the connection is left as it is, with its
       statements, never finalized nor closed. Closing would roll back the parent's open
       transaction in the shared WAL index (behind the parent's back), and any SQLite
       call may wait for ever on a mutex another thread of the parent held at fork. */
    esg__sq_keep_inherited(q->db);
  } else {
    for (int i = 0; i < ESG__STMT_SLOTS; i++) sqlite3_finalize(q->cache[i].stmt);
    sqlite3_close_v2(q->db);
  }
  free(q);
  s->db = NULL;
}

static int sq_schema_version(esg_store *s) {
  int v = -1;
  return user_version(s, &v) == ESG_OK ? v : -1;
}

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";

static int sq_begin(esg_store *s) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_BEGIN);
  return st ? esg__sq_exec(s, st, "beginning a transaction") : ESG_ESTORE;
}

static int sq_commit(esg_store *s) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_COMMIT);
  return st ? esg__sq_exec(s, st, "committing") : ESG_ESTORE;
}

static int sq_rollback(esg_store *s) {
  sqlite3_stmt *st = esg__sq_stmt(s, SQL_ROLLBACK);
  return st ? esg__sq_exec(s, st, "rolling back") : ESG_ESTORE;
}

const esg__backend esg__sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .claim_get = esg__sq_claim_get,
    .claim_insert = esg__sq_claim_insert,
    .claim_replace = esg__sq_claim_replace,
    .claim_complete = esg__sq_claim_complete,
    .claim_release = esg__sq_claim_release,
    .claim_extend = esg__sq_claim_extend,
    .claims_purge = esg__sq_claims_purge,
    .event_insert = esg__sq_event_insert,
    .events_by_key = esg__sq_events_by_key,
    .event_get = esg__sq_event_get,
    .events_expired = esg__sq_events_expired,
    .event_delete_expired = esg__sq_event_delete_expired,
    .entity_get = esg__sq_entity_get,
    .entity_put_if_newer = esg__sq_entity_put_if_newer,
    .fault_insert = esg__sq_fault_insert,
    .faults_each = esg__sq_faults_each,
    .fault_delete = esg__sq_fault_delete,
    .faults_purge = esg__sq_faults_purge,
    .cache = &esg__sq_cache_ops,
    .latch = &esg__sq_latch_ops,
    .resync = &esg__sq_resync_ops,
};
