/* The store: opening, schema, the event log, entities, batches and group commit. */
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"

static esg_event *ev(const char *id, const char *type, long long ts, const char *pk) {
  char j[512];
  if (pk)
    snprintf(j, sizeof j, "{\"id\":\"%s\",\"type\":\"%s\",\"timestamp\":%lld,\"partitionKey\":\"%s\"}", id, type, ts, pk);
  else
    snprintf(j, sizeof j, "{\"id\":\"%s\",\"type\":\"%s\",\"timestamp\":%lld}", id, type, ts);
  esg_event *e = NULL;
  if (esg_event_parse(j, strlen(j), &e) != ESG_OK) abort();
  return e;
}

typedef struct {
  int n;
  char ids[16][64];
  char json[16][512];
  int64_t ts[16];
  int stop_at; /* return non-zero at this index (-1: never) */
} collect_t;

static int collect(void *ud, const esg_stored_event *e) {
  collect_t *c = ud;
  if (c->n == c->stop_at) return 1;
  if (c->n < 16) {
    snprintf(c->ids[c->n], 64, "%s", e->id);
    snprintf(c->json[c->n], 512, "%s", e->json);
    c->ts[c->n] = e->timestamp;
  }
  c->n++;
  return 0;
}

/* A purge emitter that stores the expiring event again, as another process could. */
typedef struct {
  esg_store *s;
  esg_event *ev;
  int calls;
} reput_t;

static int reput(void *ud, const esg_stored_event *e) {
  reput_t *r = ud;
  (void)e;
  r->calls++;
  return esg_event_put(r->s, r->ev, NULL, 0) == ESG_OK ? 0 : 1;
}

/* Opening: arguments and options are checked, and what an open store reports. */
static void test_open(void) {
  esg_store *s = (esg_store *)1;
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, NULL, NULL));
  CHECK(s == NULL);
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, "", NULL));
  CHECK_RC(ESG_EINVAL, esg_store_open(NULL, tu_store("x.db"), NULL));
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.durability = 7;
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, tu_store("o.db"), &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "durability");
  o.durability = ESG_DURABILITY_FULL;
  o.group_commit_ms = -1;
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, tu_store("o.db"), &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "group_commit_ms must not be negative (got -1)");
  o.group_commit_ms = 0;
  o.busy_timeout_ms = -5;
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, tu_store("o.db"), &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "busy_timeout_ms must not be negative (got -5)");
  o.busy_timeout_ms = 0;
  o.group_commit_max = -7;
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, tu_store("o.db"), &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "group_commit_max must not be negative (got -7)");
  o.group_commit_max = 0;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("o.db"), &o));
  CHECK_STR(esg_store_backend(s), tu_store_backend());
  CHECK(esg_store_schema_version(s) >= 1);
  CHECK(esg_store_now(s) > 1600000000000LL); /* the real clock by default */
  esg_store_close(s);
  esg_store_close(NULL);
}

/* Opening SQLite: a folder that is not there, ":memory:", a file that is not a database. */
/* esg_store_bytes_written: what a handle's commits appended to the WAL (0 before any, and
   for a private in-memory store, which writes no file); each commit on its own writes
   whole pages, a group shares them. */
static int64_t claim_complete_n(esg_store *s, const char *prefix, int n) {
  uint64_t b0 = esg_store_bytes_written(s);
  char key[64];
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "%s%d", prefix, i);
    esg_claim_info ci;
    CHECK_RC(ESG_NEW, esg_claim(s, key, NULL, 0, 30000, 3600000, &ci));
    CHECK_RC(ESG_OK, esg_complete(s, key, ci.token, NULL, 0));
  }
  CHECK_RC(ESG_OK, esg_store_flush(s));
  return (int64_t)(esg_store_bytes_written(s) - b0);
}

static void test_bytes_written(void) {
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, ":memory:", NULL));
  CHECK(claim_complete_n(s, "m", 10) == 0);
  esg_store_close(s);
  const char *path = tu_path("bytes.db");
  remove(path);
  CHECK_RC(ESG_OK, esg_store_open(&s, path, NULL));
  int64_t each = claim_complete_n(s, "d", 100);
  CHECK(each >= 100 * 4096); /* a page at least per commit */
  esg_store_close(s);
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.group_commit_ms = 60000;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  int64_t grouped = claim_complete_n(s, "g", 100);
  CHECK(grouped > 0 && grouped * 10 < each);
  esg_store_close(s);
}

static void test_open_sqlite(void) {
  esg_store *s = NULL;
  CHECK_RC(ESG_ESTORE, esg_store_open(&s, "/nonexistent-dir/x.db", NULL));
  CHECK_CONTAINS(esg_errmsg(NULL), "/nonexistent-dir/x.db");
  /* in memory */
  CHECK_RC(ESG_OK, esg_store_open(&s, ":memory:", NULL));
  CHECK_RC(ESG_NEW, esg_claim(s, "k", NULL, 0, 1000, 1000, NULL));
  esg_store_close(s);
  /* a file that is not a database */
  const char *junk = tu_path("junk.db");
  FILE *f = fopen(junk, "w");
  fputs("this is not a database, not at all, no no no no no no no no no no no no no", f);
  fclose(f);
  CHECK_RC(ESG_ESTORE, esg_store_open(&s, junk, NULL));
  CHECK_CONTAINS(esg_errmsg(NULL), "not a database");
}

static void test_schema_newer(void) {
  const char *path = tu_path("newer.db");
  int64_t now = 1;
  esg_store *s = tu_open(path, &now);
  int v = esg_store_schema_version(s);
  esg_store_close(s);
  /* reopening keeps the version and the data path works */
  s = tu_open(path, &now);
  CHECK(esg_store_schema_version(s) == v);
  esg_store_close(s);
  sqlite3 *db;
  sqlite3_open(path, &db);
  sqlite3_exec(db, "PRAGMA user_version=999", NULL, NULL, NULL);
  sqlite3_close(db);
  CHECK_RC(ESG_ESCHEMA, esg_store_open(&s, path, NULL));
  CHECK(s == NULL);
  CHECK_CONTAINS(esg_errmsg(NULL), "999");
  CHECK_CONTAINS(esg_errmsg(NULL), path); /* the file named */
  CHECK_CONTAINS(esg_errmsg(NULL), "reads versions 0 to");
}

/* Hostile store files (issue 14): each a clear error naming the file, never a crash. */
static void test_hostile_files(void) {
  esg_store *s = NULL;
  /* a negative schema version indexed the migration table out of bounds */
  const char *neg = tu_path("negative.db");
  sqlite3 *db;
  sqlite3_open(neg, &db);
  sqlite3_exec(db, "PRAGMA user_version=-3", NULL, NULL, NULL);
  sqlite3_close(db);
  CHECK_RC(ESG_ESCHEMA, esg_store_open(&s, neg, NULL));
  CHECK(s == NULL);
  CHECK_CONTAINS(esg_errmsg(NULL), "-3");
  CHECK_CONTAINS(esg_errmsg(NULL), neg);
  sqlite3_open(neg, &db);
  sqlite3_exec(db, "PRAGMA user_version=-2147483648", NULL, NULL, NULL);
  sqlite3_close(db);
  CHECK_RC(ESG_ESCHEMA, esg_store_open(&s, neg, NULL));
  /* a truncated database */
  int64_t now = 1;
  const char *trunc = tu_path("truncated.db");
  s = tu_open(trunc, &now);
  for (int i = 0; i < 200; i++) {
    char k[32];
    snprintf(k, sizeof k, "k%d", i);
    esg_claim(s, k, NULL, 0, 1000, 60000, NULL);
  }
  esg_store_close(s);
  char wal[4200];
  snprintf(wal, sizeof wal, "%s-wal", trunc);
  remove(wal);
  CHECK(truncate(trunc, 4096 + 100) == 0);
  int rc = esg_store_open(&s, trunc, NULL);
  if (rc == ESG_OK) { /* the cut may spare the pages an open reads: then a read must fail cleanly */
    CHECK(esg_claim(s, "k150", NULL, 0, 1000, 60000, NULL) != ESG_OK);
    esg_store_close(s);
  } else {
    CHECK_RC(ESG_ESTORE, rc);
    CHECK_CONTAINS(esg_errmsg(NULL), trunc);
  }
  /* a read-only file */
  const char *ro = tu_path("readonly.db");
  s = tu_open(ro, &now);
  esg_store_close(s);
  CHECK(chmod(ro, 0444) == 0);
  if (geteuid() != 0) { /* root writes through permissions */
    CHECK_RC(ESG_ESTORE, esg_store_open(&s, ro, NULL));
    CHECK_CONTAINS(esg_errmsg(NULL), "read-only");
  }
  chmod(ro, 0644);
  /* a missing folder and a folder that is a file: the cause said, with what to do */
  CHECK_RC(ESG_ESTORE, esg_store_open(&s, "/nonexistent-esg-dir/sub/x.db", NULL));
  CHECK_CONTAINS(esg_errmsg(NULL), "the folder /nonexistent-esg-dir/sub: No such file or directory (create it first)");
  char under_file[4200];
  snprintf(under_file, sizeof under_file, "%s/x.db", ro);
  CHECK_RC(ESG_ESTORE, esg_store_open(&s, under_file, NULL));
  CHECK_CONTAINS(esg_errmsg(NULL), "is not a folder");
  /* a new file held by a writer that does not let go: the migration waits the busy
     timeout, then ELOCKED naming the file; once let go, it opens */
  const char *held = tu_path("held.db");
  sqlite3_open(held, &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; BEGIN IMMEDIATE; CREATE TABLE other(x)", NULL, NULL, NULL);
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.busy_timeout_ms = 50;
  CHECK_RC(ESG_ELOCKED, esg_store_open(&s, held, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), held);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  sqlite3_close(db);
  CHECK_RC(ESG_OK, esg_store_open(&s, held, NULL));
  esg_store_close(s);
}

static void test_event_log(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("log.db"), &now);
  esg_event *a = ev("a", "t", 30, "k"), *b = ev("b", "t", 10, "k"), *c = ev("c", "t", 10, "k");
  esg_event *d = ev("d", "u", 5, "other"), *e = ev("e", "t", 1, NULL);
  CHECK_RC(ESG_OK, esg_event_put(s, a, NULL, 0));
  CHECK_RC(ESG_OK, esg_event_put(s, c, NULL, 0));
  CHECK_RC(ESG_OK, esg_event_put(s, b, NULL, 5000));
  CHECK_RC(ESG_OK, esg_event_put(s, d, NULL, 0));
  CHECK_RC(ESG_OK, esg_event_put(s, e, NULL, 0));
  CHECK_RC(ESG_DUPLICATE, esg_event_put(s, a, NULL, 0));
  CHECK_RC(ESG_DUPLICATE, esg_event_put(s, a, "elsewhere", 0)); /* once per id, whatever the key */
  collect_t got = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_events_by_key(s, "k", collect, &got));
  CHECK(got.n == 3);
  CHECK_STR(got.ids[0], "b"); /* (timestamp, id) order */
  CHECK_STR(got.ids[1], "c");
  CHECK_STR(got.ids[2], "a");
  CHECK_CONTAINS(got.json[2], "\"id\":\"a\"");
  collect_t none = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_events_by_key(s, "elsewhere", collect, &none));
  CHECK(none.n == 0);
  collect_t byid = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_events_by_key(s, "e", collect, &byid)); /* no partitionKey: the id */
  CHECK(byid.n == 1);
  collect_t one = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_event_get(s, "d", collect, &one));
  CHECK(one.n == 1 && one.ts[0] == 5);
  CHECK_RC(ESG_NOT_FOUND, esg_event_get(s, "zz", collect, &one));
  /* a callback can stop the walk */
  collect_t stop = {.stop_at = 1};
  CHECK_RC(ESG_ECALLBACK, esg_events_by_key(s, "k", collect, &stop));
  /* b expires: gone from queries, purge hands out b-expired, then it may be stored again */
  now += 5000;
  collect_t after = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_events_by_key(s, "k", collect, &after));
  CHECK(after.n == 2);
  CHECK_RC(ESG_NOT_FOUND, esg_event_get(s, "b", collect, &after));
  /* a failing emitter keeps the event for the next purge */
  collect_t refuse = {.stop_at = 0};
  int64_t n = -1;
  CHECK_RC(ESG_OK, esg_events_purge(s, collect, &refuse, &n));
  CHECK(n == 0);
  collect_t expired = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_events_purge(s, collect, &expired, &n));
  CHECK(n == 1 && expired.n == 1);
  CHECK_CONTAINS(expired.json[0], "\"type\":\"t-expired\"");
  CHECK_CONTAINS(expired.json[0], "\"partitionKey\":\"k\"");
  CHECK_CONTAINS(expired.json[0], "\"expired\":{\"id\":\"b\"");
  CHECK(expired.ts[0] == 6000);
  /* the expired event's id is deterministic */
  char id[37];
  CHECK_RC(ESG_OK, esg_uuid5(ESG_UUID_NS_EVENT, "b/expired", 9, id));
  CHECK_STR(expired.ids[0], id);
  CHECK_RC(ESG_OK, esg_events_purge(s, NULL, NULL, &n));
  CHECK(n == 0);
  CHECK_RC(ESG_OK, esg_event_put(s, b, NULL, 0));
  /* an expired but unpurged event does not block its id either */
  esg_event *f = ev("f", "t", 1, "k");
  CHECK_RC(ESG_OK, esg_event_put(s, f, NULL, 10));
  now += 10;
  CHECK_RC(ESG_OK, esg_event_put(s, f, NULL, 0));
  /* an expired event stored afresh while the purge hands it out (another process could) is kept */
  esg_event *g = ev("g", "t", 1, "k");
  CHECK_RC(ESG_OK, esg_event_put(s, g, NULL, 10));
  now += 20;
  reput_t again = {s, g, 0};
  CHECK_RC(ESG_OK, esg_events_purge(s, reput, &again, &n));
  CHECK(again.calls == 1 && n == 0);
  collect_t kept = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_event_get(s, "g", collect, &kept));
  esg_event_free(g);
  /* bad input */
  CHECK_RC(ESG_EINVAL, esg_event_put(s, NULL, NULL, 0));
  CHECK_RC(ESG_EINVAL, esg_event_put(s, a, "", 0));
  CHECK_RC(ESG_EINVAL, esg_event_put(s, a, NULL, -1));
  CHECK_RC(ESG_EINVAL, esg_events_by_key(s, "k", NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_events_by_key(s, NULL, collect, &got));
  CHECK_RC(ESG_EINVAL, esg_event_put(NULL, a, NULL, 0));
  esg_event_free(a), esg_event_free(b), esg_event_free(c), esg_event_free(d), esg_event_free(e), esg_event_free(f);
  esg_store_close(s);
}

static void test_entities(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("ent.db"), &now);
  esg_entity en;
  CHECK_RC(ESG_NOT_FOUND, esg_entity_get(s, "t1", &en));
  CHECK_RC(ESG_OK, esg_entity_upsert(s, "t1", 5, "{\"v\":5}", 7));
  CHECK_RC(ESG_STALE, esg_entity_upsert(s, "t1", 5, "{\"v\":55}", 8)); /* equal is stale */
  CHECK_RC(ESG_STALE, esg_entity_upsert(s, "t1", 4, "{\"v\":4}", 7));
  CHECK_RC(ESG_OK, esg_entity_get(s, "t1", &en));
  CHECK(en.version == 5 && !en.deleted && en.doc_len == 7 && memcmp(en.doc, "{\"v\":5}", 7) == 0);
  CHECK_RC(ESG_OK, esg_entity_upsert(s, "t1", 9, "{\"v\":9}", 7));
  /* delete leaves a tombstone: an older update cannot revive the entity */
  CHECK_RC(ESG_STALE, esg_entity_delete(s, "t1", 8));
  CHECK_RC(ESG_OK, esg_entity_delete(s, "t1", 10));
  CHECK_RC(ESG_OK, esg_entity_get(s, "t1", &en));
  CHECK(en.deleted && en.version == 10 && en.doc == NULL);
  CHECK_RC(ESG_STALE, esg_entity_upsert(s, "t1", 9, "{\"v\":9}", 7));
  CHECK_RC(ESG_STALE, esg_entity_delete(s, "t1", 10));
  CHECK_RC(ESG_OK, esg_entity_upsert(s, "t1", 11, "{\"v\":11}", 8)); /* a newer write may */
  CHECK_RC(ESG_OK, esg_entity_get(s, "t1", &en));
  CHECK(!en.deleted && en.version == 11);
  /* deleting an unknown key records the tombstone too */
  CHECK_RC(ESG_OK, esg_entity_delete(s, "ghost", 3));
  CHECK_RC(ESG_STALE, esg_entity_upsert(s, "ghost", 2, "{}", 2));
  /* bad documents write nothing */
  CHECK_RC(ESG_EJSON, esg_entity_upsert(s, "t2", 1, "[1]", 3));
  CHECK_CONTAINS(esg_errmsg(s), "not a JSON object");
  CHECK_RC(ESG_EJSON, esg_entity_upsert(s, "t2", 1, "{oops", 5));
  CHECK_RC(ESG_EJSON, esg_entity_upsert(s, "t2", 1, "{\"a\":1} trailing", 16)); /* only white space may follow */
  CHECK_RC(ESG_OK, esg_entity_upsert(s, "t3", 1, "{\"a\":1} \n", 9));
  CHECK_RC(ESG_EINVAL, esg_entity_upsert(s, "t2", 1, NULL, 0));
  CHECK_RC(ESG_EINVAL, esg_entity_upsert(s, "", 1, "{}", 2));
  CHECK_RC(ESG_NOT_FOUND, esg_entity_get(s, "t2", &en));
  CHECK_RC(ESG_EINVAL, esg_entity_get(s, "t2", NULL));
  esg_store_close(s);
}

static void test_batch(void) {
  TU_REQUIRE(tu_store_shared(), "what another handle sees, and a reopen: " TU_NOT_SHARED);
  int64_t now = 1000;
  const char *path = tu_store("batch.db");
  esg_store *s = tu_open(path, &now), *other = tu_open(path, &now);
  CHECK_RC(ESG_ESTATE, esg_store_commit(s));
  CHECK_RC(ESG_ESTATE, esg_store_rollback(s));
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_ESTATE, esg_store_begin(s));
  for (int i = 0; i < 100; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    CHECK_RC(ESG_NEW, esg_claim(s, k, NULL, 0, 1000, 60000, NULL));
  }
  CHECK_RC(ESG_OK, esg_store_rollback(s));
  CHECK_RC(ESG_NEW, esg_claim(other, "k5", NULL, 0, 1000, 60000, NULL)); /* rolled back: nothing stayed */
  CHECK_RC(ESG_OK, esg_store_begin(s));
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "b1", NULL, 0, 1000, 60000, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "b1", c.token, "r", 1));
  CHECK_RC(ESG_OK, esg_entity_upsert(s, "e", 1, "{}", 2));
  CHECK_RC(ESG_OK, esg_store_commit(s));
  CHECK_RC(ESG_DUPLICATE, esg_claim(other, "b1", NULL, 0, 1000, 60000, NULL));
  esg_store_close(other);
  /* closing with a batch open rolls it back */
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_NEW, esg_claim(s, "lost", NULL, 0, 1000, 60000, NULL));
  esg_store_close(s);
  s = tu_open(path, &now);
  CHECK_RC(ESG_NEW, esg_claim(s, "lost", NULL, 0, 1000, 60000, NULL));
  esg_store_close(s);
}

static void test_group_commit(void) {
  TU_REQUIRE(tu_store_shared(), "what other handles see and wait for: " TU_NOT_SHARED);
  int64_t now = 1000;
  const char *path = tu_store("group.db");
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  o.group_commit_ms = 100;
  o.group_commit_max = 10;
  o.busy_timeout_ms = 50;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  esg_store *other = tu_open(path, &now);
  esg_store_opts quick = ESG_STORE_OPTS_INIT;
  quick.busy_timeout_ms = 20;
  quick.clock = tu_clock;
  quick.clock_ud = &now;
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "g1", NULL, 0, 1000, 60000, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "g1", c.token, NULL, 0));
  /* the group is not committed yet: other handles cannot see it, and wait on its lock */
  esg_entity en;
  CHECK_RC(ESG_NOT_FOUND, esg_entity_get(other, "nothing", &en));
  esg_store *third = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&third, path, &quick));
  CHECK_RC(ESG_ELOCKED, esg_claim(third, "g1", NULL, 0, 1000, 60000, NULL));
  CHECK_CONTAINS(esg_errmsg(third), "locked");
  /* the window passes: the next write commits the group */
  now += 100;
  CHECK_RC(ESG_NEW, esg_claim(s, "g2", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_DUPLICATE, esg_claim(third, "g1", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_BUSY, esg_claim(third, "g2", NULL, 0, 1000, 60000, NULL));
  /* the count limit commits too */
  for (int i = 0; i < 10; i++) {
    char k[16];
    snprintf(k, sizeof k, "n%d", i);
    CHECK_RC(ESG_NEW, esg_claim(s, k, NULL, 0, 1000, 60000, NULL));
  }
  CHECK_RC(ESG_BUSY, esg_claim(third, "n9", NULL, 0, 1000, 60000, NULL));
  /* flush commits what is open; close commits too */
  CHECK_RC(ESG_NEW, esg_claim(s, "f1", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_BUSY, esg_claim(third, "f1", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_NEW, esg_claim(s, "c1", NULL, 0, 1000, 60000, NULL));
  esg_store_close(s);
  CHECK_RC(ESG_BUSY, esg_claim(third, "c1", NULL, 0, 1000, 60000, NULL));
  /* duplicates are answered without opening a group */
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "g1", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_NEW, esg_claim(third, "free", NULL, 0, 1000, 60000, NULL));
  esg_store_close(s);
  esg_store_close(third);
  esg_store_close(other);
}

/* The rule: an order is complete once it was both paid and shipped. */
static int paid_and_shipped(void *ud, const esg_stored_event *evs, size_t n) {
  (void)ud;
  int paid = 0, shipped = 0;
  for (size_t i = 0; i < n; i++) {
    paid |= strcmp(evs[i].type, "paid") == 0;
    shipped |= strcmp(evs[i].type, "shipped") == 0;
  }
  return paid && shipped;
}

static int failing_rule(void *ud, const esg_stored_event *evs, size_t n) {
  (void)ud, (void)evs, (void)n;
  return -1;
}

static void test_correlate(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("corr.db"), &now);
  esg_event *p = ev("p1", "paid", 10, "order-1"), *sh = ev("s1", "shipped", 20, "order-1");
  collect_t emitted = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_event_put(s, p, NULL, 0));
  CHECK_RC(ESG_NOT_FOUND, esg_correlate(s, "order-1", "order-done", paid_and_shipped, NULL, 0, collect, &emitted));
  CHECK(emitted.n == 0);
  CHECK_RC(ESG_OK, esg_event_put(s, sh, NULL, 0));
  CHECK_RC(ESG_OK, esg_correlate(s, "order-1", "order-done", paid_and_shipped, NULL, 0, collect, &emitted));
  CHECK(emitted.n == 1);
  CHECK_STR(emitted.ids[0], "order-1.order-done");
  CHECK_CONTAINS(emitted.json[0], "\"triggers\":[\"p1\",\"s1\"]");
  CHECK(emitted.ts[0] == 20);
  /* evaluating again (a replay, another host) never emits twice */
  CHECK_RC(ESG_DUPLICATE, esg_correlate(s, "order-1", "order-done", paid_and_shipped, NULL, 0, collect, &emitted));
  CHECK(emitted.n == 1);
  /* the higher-order event is in the log under the key */
  collect_t got = {.stop_at = -1};
  CHECK_RC(ESG_OK, esg_event_get(s, "order-1.order-done", collect, &got));
  CHECK(got.n == 1);
  CHECK_RC(ESG_ECALLBACK, esg_correlate(s, "order-1", "x", failing_rule, NULL, 0, NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_correlate(s, "order-1", "", paid_and_shipped, NULL, 0, NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_correlate(s, "order-1", "r", NULL, NULL, 0, NULL, NULL));
  CHECK_RC(ESG_NOT_FOUND, esg_correlate(s, "order-2", "order-done", paid_and_shipped, NULL, 0, NULL, NULL));
  esg_event_free(p);
  esg_event_free(sh);
  esg_store_close(s);
}

/* Claims made while a group is open are held in memory until completed or committed. */
static void test_group_pending_claims(void) {
  int64_t now = 1000;
  const char *path = tu_store("pending.db");
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  o.group_commit_ms = 1000000;
  o.group_commit_max = 100000;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  const uint8_t h1[32] = {1}, h2[32] = {2};
  esg_claim_info a, b, c;
  CHECK_RC(ESG_NEW, esg_claim(s, "opener", NULL, 0, 1000, 60000, NULL)); /* opens the group */
  CHECK_RC(ESG_NEW, esg_claim(s, "p1", h1, 32, 1000, 60000, &a));          /* pending */
  CHECK_RC(ESG_BUSY, esg_claim(s, "p1", h1, 32, 1000, 60000, &b));
  CHECK(b.lease_until == now + 1000);
  CHECK_RC(ESG_EMISMATCH, esg_claim(s, "p1", h2, 32, 1000, 60000, NULL));
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "p1", a.token + 1, "x", 1));
  CHECK_RC(ESG_OK, esg_complete(s, "p1", a.token, "r1", 2));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "p1", h1, 32, 1000, 60000, &b));
  CHECK(b.result_len == 2 && memcmp(b.result, "r1", 2) == 0);
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "p1", a.token, "r1", 2));
  /* release, extend and takeover of pending claims */
  CHECK_RC(ESG_NEW, esg_claim(s, "p2", h1, 32, 1000, 60000, &a));
  CHECK_RC(ESG_OK, esg_release(s, "p2", a.token));
  CHECK_RC(ESG_ETOKEN, esg_release(s, "p2", a.token));
  CHECK_RC(ESG_NEW, esg_claim(s, "p2", h2, 32, 100000, 600000, &b)); /* released: no mismatch, a fresh claim */
  CHECK(b.attempts == 1);
  CHECK_RC(ESG_NEW, esg_claim(s, "p3", h1, 32, 1000, 60000, &a));
  now += 900;
  CHECK_RC(ESG_OK, esg_claim_extend(s, "p3", a.token, 1000));
  now += 900;
  CHECK_RC(ESG_BUSY, esg_claim(s, "p3", h1, 32, 1000, 60000, NULL));
  now += 200; /* the lease ran out: taken over inside the group */
  CHECK_RC(ESG_NEW, esg_claim(s, "p3", h1, 32, 1000, 60000, &c));
  CHECK(c.attempts == 2 && c.token != a.token);
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "p3", a.token, NULL, 0));
  /* the group commits with p2 and p3 still in progress: they are written as such */
  CHECK_RC(ESG_OK, esg_store_flush(s));
  if (!tu_store_shared()) {
    tu_skip_part("what another handle sees", TU_NOT_SHARED);
    esg_store_close(s);
    return;
  }
  esg_store *other = tu_open(path, &now);
  CHECK_RC(ESG_DUPLICATE, esg_claim(other, "p1", h1, 32, 1000, 60000, &b));
  CHECK(b.result_len == 2);
  CHECK_RC(ESG_BUSY, esg_claim(other, "p2", h2, 32, 1000, 60000, NULL));
  CHECK_RC(ESG_BUSY, esg_claim(other, "p3", h1, 32, 1000, 60000, &b));
  CHECK(b.attempts == 2);
  /* and their owner still finishes them through the store */
  CHECK_RC(ESG_OK, esg_complete(s, "p3", c.token, "r3", 2));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, esg_claim(other, "p3", h1, 32, 1000, 60000, NULL));
  /* closing commits pending claims too */
  CHECK_RC(ESG_NEW, esg_claim(s, "q0", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_NEW, esg_claim(s, "q1", NULL, 0, 1000, 60000, NULL));
  esg_store_close(s);
  CHECK_RC(ESG_BUSY, esg_claim(other, "q1", NULL, 0, 1000, 60000, NULL));
  esg_store_close(other);
}

/* Claims and completes keys first .. first+n-1, scattered over the key space; how many took. */
static int fill(esg_store *s, const char *prefix, int first, int n) {
  int done = 0;
  for (int i = first; i < first + n; i++) {
    char key[48];
    snprintf(key, sizeof key, "%s%08x", prefix, (unsigned)i * 2654435761u);
    esg_claim_info c;
    if (esg_claim(s, key, NULL, 0, 60000, 3600000, &c) == ESG_NEW && esg_complete(s, key, c.token, "{}", 2) == ESG_OK)
      done++;
  }
  return done;
}

/* Group commit every 250 writes (and not by time), on the fake clock *now. */
static esg_store_opts groups_of_250(int64_t *now) {
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = now;
  o.group_commit_ms = 1000000;
  o.group_commit_max = 250;
  return o;
}

/* Completed claims in the file, read with SQLite itself. */
static int done_claims(const char *path) {
  sqlite3 *db;
  sqlite3_stmt *st;
  int n = -1;
  if (sqlite3_open(path, &db) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT count(*) FROM esg_claims WHERE done = 1", -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

/* Bytes in a file; 0 when it is not there. */
static long long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

/*
 * The write-ahead log stays bounded under a long stream of group commits: the
 * checkpoints (on the store's own thread, or inline past 4000 pages) keep copying
 * it back. Scattered keys make every commit touch about 200 pages: unchecked,
 * the log would grow past 20000 of them (80 MiB).
 */
static void test_wal_bounded(void) {
  int64_t now = 1000;
  const char *path = tu_path("wal.db");
  char wal[4200];
  snprintf(wal, sizeof wal, "%s-wal", path);
  esg_store_opts o = groups_of_250(&now);
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  long long most = 0;
  int n = 30000, done = 0;
  for (int i = 0; i < n; i += 500) {
    done += fill(s, "k", i, 500);
    if (file_size(wal) > most) most = file_size(wal);
  }
  CHECK(done == n);
  CHECK_RC(ESG_OK, esg_store_flush(s));
  long long page = 4096 + 24; /* a WAL frame */
  CHECK(most > 0 && most <= (4000 + 1000) * page);
  CHECK(file_size(path) > 100 * 4096); /* copied back while running, not only at close */
  esg_store_close(s);
  CHECK(done_claims(path) == n); /* every completion is there */
}

/*
 * The store's checkpoint thread copies the log back by itself: with the log past
 * the 1000 pages where a commit asks for a checkpoint, and short of the 4000 where
 * commits copy inline, the database file grows without a commit doing it. (The
 * thread's connection must have read the database once, or SQLite's checkpoint
 * call copies nothing and still says SQLITE_OK.)
 */
static void test_checkpoint_thread(void) {
  int64_t now = 1000;
  char path[4096], wal[4200];
  snprintf(path, sizeof path, "%s", tu_path("ckpt.db"));
  snprintf(wal, sizeof wal, "%s-wal", path);
  esg_store_opts o = groups_of_250(&now);
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  long long page = 4096 + 24, db0 = file_size(path), most = 0;
  for (int i = 0; i < 20000 && file_size(wal) < 1500 * page; i += 250) {
    CHECK(fill(s, "t", i, 250) == 250);
    if (file_size(wal) > most) most = file_size(wal);
  }
  CHECK(most >= 1000 * page && most < 4000 * page); /* asked, and never inline */
  /* the log holds about 1000 frames of a few dozen distinct pages: they land in the file */
  for (int waited = 0; waited < 10000 && file_size(path) < db0 + 16 * 4096; waited += 10) usleep(10000);
  CHECK(file_size(path) >= db0 + 16 * 4096);
  esg_store_close(s);
}

/*
 * fork() with a handle whose checkpoint thread runs: the child (as a Python
 * multiprocessing child would) closes the inherited handle, which must neither
 * wait for a thread it does not have nor touch the parent's; it then works on a
 * handle of its own, and the parent's handle and thread go on.
 */
static void test_fork_with_checkpointer(void) {
  int64_t now = 1000;
  const char *path = tu_path("forked.db");
  esg_store_opts o = groups_of_250(&now);
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  CHECK(fill(s, "p", 0, 6000) == 6000); /* well past 1000 log pages: the thread has started */
  CHECK_RC(ESG_OK, esg_store_flush(s));
  pid_t pid = fork();
  if (pid == 0) {
    esg_store_close(s); /* the parent's handle, inherited */
    esg_store *mine = NULL;
    int ok = esg_store_open(&mine, path, &o) == ESG_OK && fill(mine, "c", 0, 3000) == 3000 &&
             esg_store_flush(mine) == ESG_OK;
    esg_store_close(mine);
    _exit(ok ? 0 : 1);
  }
  CHECK(pid > 0);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(fill(s, "q", 0, 6000) == 6000);
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "c00000000", NULL, 0, 60000, 3600000, NULL)); /* the child's */
  esg_store_close(s);
  CHECK(done_claims(path) == 15000);
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  sqlite3_stmt *st;
  CHECK(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
  CHECK(sqlite3_step(st) == SQLITE_ROW);
  CHECK_STR((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* PRAGMA integrity_check of the file at path, read with SQLite itself: "ok" when sound. */
static int integrity_ok(const char *path) {
  sqlite3 *db;
  sqlite3_stmt *st;
  int ok = 0;
  if (sqlite3_open(path, &db) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) {
      const char *r = (const char *)sqlite3_column_text(st, 0);
      ok = r && strcmp(r, "ok") == 0;
      if (!ok) fprintf(stderr, "integrity_check: %s\n", r ? r : "(null)");
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return ok;
}

/* In the child: every call on the inherited handle s fails, naming both processes; then it closes s. */
static int child_with_inherited(esg_store *s, const char *key, int64_t token) {
  int before = tu_failures;
  char want[64];
  snprintf(want, sizeof want, "opened by process %ld;", (long)getppid());
  CHECK_RC(ESG_ESTATE, esg_claim(s, "child", NULL, 0, 60000, 3600000, NULL));
  CHECK_CONTAINS(esg_errmsg(s), want);
  CHECK_CONTAINS(esg_errmsg(s), "open the store again in this process");
  CHECK_RC(ESG_ESTATE, esg_claim(s, key, NULL, 0, 60000, 3600000, NULL)); /* even one pending in memory */
  CHECK_RC(ESG_ESTATE, esg_complete(s, key, token, "child", 5));
  CHECK_RC(ESG_ESTATE, esg_release(s, key, token));
  CHECK_RC(ESG_ESTATE, esg_store_flush(s));
  CHECK_RC(ESG_ESTATE, esg_store_begin(s));
  CHECK_RC(ESG_ESTATE, esg_store_commit(s));
  esg_event *e = ev("e-child", "t", 1, NULL);
  CHECK_RC(ESG_ESTATE, esg_event_put(s, e, NULL, 0)); /* another feature's write */
  esg_event_free(e);
  collect_t c = {.stop_at = -1};
  CHECK(esg_event_get(s, "e1", collect, &c) != ESG_OK); /* a read: refused by the backend */
  CHECK_CONTAINS(esg_errmsg(s), want);
  CHECK(esg_store_schema_version(s) == -1);
  CHECK_RC(ESG_ESTATE, esg_replay(s, NULL, collect, &c, NULL)); /* a read that prepares its own statement */
  esg_store_close(s); /* writes nothing: the group is the parent's */
  return tu_failures == before ? 0 : 1;
}

/*
 * fork() while a group is open, with claims since the last flush (some pending
 * in memory, some completed in the group's transaction). The child's copy of
 * the handle shares the connection but not its locks, so a commit from it (its
 * close used to flush the group) wrote the log and -shm index behind the
 * parent's back and corrupted the file. Now every call on the copy fails with
 * ESG_ESTATE and closing it writes nothing; the parent goes on writing
 * meanwhile, and its group commits whole, exactly as written.
 */
static void test_fork_open_group(void) {
  int64_t now = 1000;
  char path[4200];
  snprintf(path, sizeof path, "%s", tu_path("fork-group.db"));
  esg_store_opts o = groups_of_250(&now);
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  CHECK(fill(s, "a", 0, 1000) == 1000); /* several groups committed */
  CHECK(fill(s, "b", 0, 100) == 100);   /* completed in the open group */
  enum { PENDING = 40 }; /* 100 * 2 + 40 writes: the group of 250 stays open */
  int64_t tokens[PENDING];
  for (int i = 0; i < PENDING; i++) { /* claimed, held in memory */
    char key[16];
    snprintf(key, sizeof key, "p%d", i);
    esg_claim_info c;
    CHECK_RC(ESG_NEW, esg_claim(s, key, NULL, 0, 600000, 3600000, &c));
    tokens[i] = c.token;
  }
  CHECK(done_claims(path) == 1000); /* the b and p keys are in the open group only */
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(child_with_inherited(s, "p0", tokens[0]));
  CHECK(pid > 0);
  /* the parent keeps writing while the child runs, and after */
  int status = 0, rounds = 0, written = 0;
  pid_t done = 0;
  while (pid > 0 && done == 0 && rounds < 2000) {
    written += fill(s, "q", rounds * 20, 20);
    rounds++;
    done = waitpid(pid, &status, WNOHANG);
  }
  if (pid > 0 && done == 0) done = waitpid(pid, &status, 0);
  CHECK(done == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  written += fill(s, "q", rounds * 20, 500);
  CHECK(written == rounds * 20 + 500);
  for (int i = 0; i < PENDING; i += 2) {
    char key[16];
    snprintf(key, sizeof key, "p%d", i);
    CHECK_RC(ESG_OK, esg_complete(s, key, tokens[i], key, strlen(key)));
  }
  CHECK_RC(ESG_OK, esg_store_flush(s));
  esg_store_close(s);
  CHECK(integrity_ok(path));
  CHECK(done_claims(path) == 1000 + 100 + written + PENDING / 2);
  s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &o));
  for (int i = 0; s && i < PENDING; i++) {
    char key[16];
    snprintf(key, sizeof key, "p%d", i);
    esg_claim_info c;
    int rc = esg_claim(s, key, NULL, 0, 600000, 3600000, &c);
    if (i % 2 == 0) {
      CHECK_RC(ESG_DUPLICATE, rc);
      CHECK(c.result_len == strlen(key) && memcmp(c.result, key, c.result_len) == 0);
    } else {
      CHECK_RC(ESG_BUSY, rc); /* still the parent's, in progress */
      CHECK(c.token == tokens[i]);
    }
  }
  CHECK_RC(ESG_NEW, esg_claim(s, "child", NULL, 0, 60000, 3600000, NULL)); /* the child wrote nothing */
  esg_store_close(s);
}

/*
 * fork() inside a batch large enough that SQLite has already written some of its
 * pages to the log (a spill: more dirty pages than the 16 MiB cache holds). The
 * child's close must not roll the inherited transaction back in the shared -shm
 * index: SQLite's rollback clears the index entries past the last commit, which
 * here are the parent's spilled pages, and the parent would then read those
 * pages' old versions from the database file.
 */
static void test_fork_spilled_batch(void) {
  int64_t now = 1000;
  char path[4200];
  snprintf(path, sizeof path, "%s", tu_path("fork-spill.db"));
  esg_store *s = tu_open(path, &now);
  enum { ROWS = 400, BIG = 64 * 1024 }; /* 25 MiB of results */
  char *big = malloc(BIG);
  CHECK(big != NULL);
  if (!big) return;
  CHECK(fill(s, "committed", 0, 100) == 100);
  CHECK_RC(ESG_OK, esg_store_begin(s));
  for (int i = 0; i < ROWS; i++) {
    char key[16];
    snprintf(key, sizeof key, "big%d", i);
    memset(big, 'a' + i % 26, BIG);
    esg_claim_info c;
    CHECK_RC(ESG_NEW, esg_claim(s, key, NULL, 0, 60000, 3600000, &c));
    CHECK_RC(ESG_OK, esg_complete(s, key, c.token, big, BIG));
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    esg_store_close(s);
    free(big);
    _exit(0);
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  /* the parent reads its batch back (the early rows from the log), finishes and commits it */
  for (int i = 0; i < ROWS; i++) {
    char key[16];
    snprintf(key, sizeof key, "big%d", i);
    esg_claim_info c;
    CHECK_RC(ESG_DUPLICATE, esg_claim(s, key, NULL, 0, 60000, 3600000, &c));
    CHECK(c.result_len == BIG && ((const char *)c.result)[0] == 'a' + i % 26 &&
          ((const char *)c.result)[BIG - 1] == 'a' + i % 26);
  }
  CHECK(fill(s, "after", 0, 100) == 100);
  CHECK_RC(ESG_OK, esg_store_commit(s));
  esg_store_close(s);
  free(big);
  CHECK(integrity_ok(path));
  CHECK(done_claims(path) == 100 + ROWS + 100);
}

int main(void) {
  TU_SUITE {
    RUN(test_correlate);
    RUN(test_group_pending_claims);
    RUN(test_open);
    RUN(test_event_log);
    RUN(test_entities);
    RUN(test_batch);
    RUN(test_group_commit);
  }
  TU_SQLITE { /* the file, its write-ahead log and checkpoints, fork of a connection */
    RUN(test_open_sqlite);
    RUN(test_bytes_written);
    RUN(test_schema_newer);
    RUN(test_hostile_files);
    RUN(test_wal_bounded);
    RUN(test_checkpoint_thread);
    RUN(test_fork_with_checkpointer);
    RUN(test_fork_open_group);
    RUN(test_fork_spilled_batch);
  }
  return tu_done();
}
