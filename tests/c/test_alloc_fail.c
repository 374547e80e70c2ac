/*
 * Allocation failure: a counting allocator (esg_set_allocator around malloc, realloc
 * and free) fails the 1st, 2nd, ... Nth allocation of one operation in turn, on each
 * main path, until a run makes no allocation that could fail. Every run must answer
 * ESG_ENOMEM with text (or absorb the failure and give a success's state), leak
 * nothing (the allocator's live count, then ASan and valgrind), and leave the store as
 * it was: after the allocator is restored the same operation gives exactly what one
 * successful run gives, and the SQLite file passes PRAGMA integrity_check.
 *
 * Each path is swept twice: failing the Nth allocation only, and failing the Nth and
 * every later one (sticky), which drives the error paths' own allocations.
 * ESG_ALLOC_SWEEP=full also sweeps larger inputs (more entries, events and keys).
 * SQLite and libcurl keep their own allocators: their failures are not injected.
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "httpd.c"
#include "testutil.h"

static int64_t now = 1700000000000;
static bool full;   /* ESG_ALLOC_SWEEP=full */
static httpd *web;  /* the receiver of the egress paths */

/* ---------------------------------------------------- the allocator -- */

static struct {
  _Atomic long live;     /* blocks alive (all of libesg's, armed or not) */
  _Atomic long calls;    /* allocations since arm() */
  _Atomic long fail_at;  /* 0: none fail */
  _Atomic long injected; /* failures given since arm() */
  bool sticky;           /* fail_at and every later allocation fail */
} fa;

static bool fa_fail(void) {
  long c = ++fa.calls, at = fa.fail_at;
  if (!at || (c != at && !(fa.sticky && c > at))) return false;
  fa.injected++;
  return true;
}

static void *fa_malloc(void *ud, size_t n) {
  (void)ud;
  if (fa_fail()) return NULL;
  void *p = malloc(n);
  if (p) fa.live++;
  return p;
}

static void *fa_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  if (fa_fail()) return NULL;
  void *q = realloc(p, n);
  if (q && !p) fa.live++;
  return q;
}

static void fa_free(void *ud, void *p) {
  (void)ud;
  fa.live--;
  free(p);
}

/* From here the nth allocation fails (and, sticky, every later one); n 0: none. */
static void arm(long n, bool sticky) {
  fa.calls = 0;
  fa.injected = 0;
  fa.sticky = sticky;
  fa.fail_at = n;
}

/* Back to allocations that succeed; returns whether a failure was injected since arm. */
static bool disarm(void) {
  fa.fail_at = 0;
  return fa.injected > 0;
}

/* ------------------------------------------------------ the harness -- */

static long absorbed;       /* runs that succeeded although a failure was injected */
static const char *cur_path; /* for messages */
static long cur_n;
static bool cur_sticky;

#define FAILED_AT() fprintf(stderr, "  (path %s, allocation %ld%s)\n", cur_path, cur_n, cur_sticky ? " on" : "")

/* A call's code when a failure was injected: ENOMEM, with text naming it. */
static void expect_nomem(int rc, const void *handle) {
  int before = tu_failures;
  CHECK_RC(ESG_ENOMEM, rc);
  CHECK_CONTAINS(esg_errmsg(handle), "memory");
  if (tu_failures != before) fprintf(stderr, "  errmsg: \"%s\"\n", esg_errmsg(handle));
}

/* Marks the thread's error slot, so that a call that fails without text is seen. */
static void reset_tls(void) { esg_content_hash(NULL, 0, NULL); }

/* One run of a path with allocation n failing (0: the reference run, nothing fails);
   returns whether a failure was injected. */
typedef bool (*run_fn)(long n, bool sticky);

static void sweep1(const char *name, run_fn fn, bool sticky) {
  cur_path = name;
  cur_sticky = sticky;
  cur_n = 0;
  long live = fa.live, a0 = absorbed, n = 1;
  int64_t t0 = httpd_now_ms();
  fn(0, false);
  for (;; n++) {
    cur_n = n;
    int before = tu_failures;
    bool injected = fn(n, sticky);
    if (fa.live != live) {
      fprintf(stderr, "%s%s: %ld blocks leaked (or freed twice)\n", tu_where(), name, fa.live - live);
      live = fa.live;
      tu_failures++;
    }
    if (tu_failures != before) FAILED_AT();
    if (!injected) break;
    if (n > 100000) {
      CHECK(!"the sweep does not end");
      break;
    }
  }
  fprintf(stderr, "  %-26s %-7s %3ld allocations, %ld absorbed (%lld ms)\n", name, sticky ? "sticky" : "single",
          n - 1, absorbed - a0, (long long)(httpd_now_ms() - t0));
}

static void sweep(const char *name, run_fn fn) {
  sweep1(name, fn, false);
  sweep1(name, fn, true);
}

/* ------------------------------------------------------- the stores -- */

static char uri[4400];
static char template_path[4400]; /* an empty store, migrated once per store entry */

/* The file behind a store URI of the sqlite and path entries. */
static const char *file_of(const char *u) { return strncmp(u, "sqlite:", 7) == 0 ? u + 7 : u; }

/* Copies the template to path: creating a store makes SQLite sync the file several
   times, and a thousand runs would spend most of their time there. */
static void copy_template(const char *path) {
  FILE *in = fopen(template_path, "rb"), *out = fopen(path, "wb");
  char buf[65536];
  size_t k;
  while (in && out && (k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
  if (!in || !out || ferror(in) || fclose(out) != 0) {
    fprintf(stderr, "copying %s to %s failed\n", template_path, path);
    exit(2);
  }
  fclose(in);
}

/* A fresh store under test, named name; group: group commit on (a minute, so it stays open). */
static esg_store *fresh(const char *name, bool group) {
  snprintf(uri, sizeof uri, "%s", tu_store(name));
  if (tu_store_shared()) {
    if (!template_path[0]) {
      snprintf(template_path, sizeof template_path, "%s", file_of(tu_store("alloc-template")));
      esg_store *t = NULL;
      if (esg_store_open(&t, template_path, NULL) != ESG_OK) exit(2);
      esg_store_close(t);
    }
    copy_template(file_of(uri));
  }
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  o.group_commit_ms = group ? 60000 : 0;
  esg_store *s = NULL;
  int rc = esg_store_open(&s, uri, &o);
  if (rc != ESG_OK) {
    fprintf(stderr, "esg_store_open(%s): %s: %s\n", uri, esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  /* a write opens the group, so that claims then go to its pending table */
  if (group && esg_cursor_set(s, "group", "open") != ESG_OK) exit(2);
  return s;
}

/* Closes s and checks the file with SQLite's own integrity check. */
static void done(esg_store *s) {
  CHECK_RC(ESG_OK, esg_store_flush(s));
  esg_store_close(s);
  if (!tu_store_shared()) return;
  const char *path = file_of(uri);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  const char *r = NULL;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    r = (const char *)sqlite3_column_text(st, 0);
  CHECK_STR(r, "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* ------------------------------------------------------------- open -- */

static int schema_version;

static bool run_open(long n, bool sticky) {
  snprintf(uri, sizeof uri, "%s", tu_store("alloc-open"));
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  esg_store *s = (esg_store *)&o; /* anything but NULL: a failed open must set NULL */
  reset_tls();
  arm(n, sticky);
  int rc = esg_store_open(&s, uri, &o);
  bool inj = disarm();
  if (n == 0) schema_version = esg_store_schema_version(s);
  if (rc == ESG_OK) {
    absorbed += inj; /* (the checkpoint thread's state: SQLite's inline checkpoints stay) */
  } else {
    expect_nomem(rc, NULL);
    CHECK(s == NULL);
    CHECK_RC(ESG_OK, esg_store_open(&s, uri, &o));
  }
  CHECK(esg_store_schema_version(s) == schema_version);
  CHECK_RC(ESG_NEW, esg_claim(s, "k", NULL, 0, 1000, 60000, NULL));
  done(s);
  return inj;
}

/* Reopening a store that holds data: a failed open changes none of it. */
static bool run_reopen(long n, bool sticky) {
  esg_store *s = fresh("alloc-reopen", false);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", NULL, 0, 1000, 60000, &ci));
  CHECK_RC(ESG_OK, esg_complete(s, "k", ci.token, "r", 1));
  esg_store_close(s);
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  reset_tls();
  arm(n, sticky);
  int rc = esg_store_open(&s, uri, &o);
  bool inj = disarm();
  if (rc == ESG_OK) {
    absorbed += inj;
  } else {
    expect_nomem(rc, NULL);
    CHECK_RC(ESG_OK, esg_store_open(&s, uri, &o));
  }
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k", NULL, 0, 1000, 60000, &ci));
  CHECK(ci.result_len == 1 && memcmp(ci.result, "r", 1) == 0);
  done(s);
  return inj;
}

/* ----------------------------------------------------------- claims -- */

static const uint8_t hash32[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static bool group_mode;

/* A new claim: a failed one leaves no claim behind (the retry is NEW, attempt 1). */
static bool run_claim_new(long n, bool sticky) {
  esg_store *s = fresh("alloc-claim-new", group_mode);
  esg_claim_info ci;
  arm(n, sticky);
  int rc = esg_claim(s, "k", hash32, 32, 1000, 60000, &ci);
  bool inj = disarm();
  if (rc == ESG_NEW) absorbed += inj;
  else {
    expect_nomem(rc, s);
    rc = esg_claim(s, "k", hash32, 32, 1000, 60000, &ci);
  }
  CHECK_RC(ESG_NEW, rc);
  CHECK(ci.attempts == 1);
  CHECK_RC(ESG_OK, esg_complete(s, "k", ci.token, "r", 1));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k", hash32, 32, 1000, 60000, NULL));
  done(s);
  return inj;
}

/* A duplicate: the stored result is returned, and stays. */
static bool run_claim_dup(long n, bool sticky) {
  esg_store *s = fresh("alloc-claim-dup", group_mode);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", hash32, 32, 1000, 60000, &ci));
  CHECK_RC(ESG_OK, esg_complete(s, "k", ci.token, "result", 6));
  memset(&ci, 0, sizeof ci);
  arm(n, sticky);
  int rc = esg_claim(s, "k", hash32, 32, 1000, 60000, &ci);
  bool inj = disarm();
  if (rc == ESG_DUPLICATE) absorbed += inj;
  else {
    expect_nomem(rc, s);
    rc = esg_claim(s, "k", hash32, 32, 1000, 60000, &ci);
  }
  CHECK_RC(ESG_DUPLICATE, rc);
  CHECK(ci.result_len == 6 && ci.result && memcmp(ci.result, "result", 6) == 0);
  done(s);
  return inj;
}

/* A takeover of a lease that ran out: a failed one leaves the first owner's claim as it
   was (the retry takes it over as attempt 2, and the first token no longer owns it). */
static bool run_claim_takeover(long n, bool sticky) {
  esg_store *s = fresh("alloc-claim-takeover", group_mode);
  esg_claim_info first, ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", hash32, 32, 1000, 60000, &first));
  now += 2000;
  arm(n, sticky);
  int rc = esg_claim(s, "k", hash32, 32, 1000, 60000, &ci);
  bool inj = disarm();
  if (rc == ESG_NEW) absorbed += inj;
  else {
    expect_nomem(rc, s);
    rc = esg_claim(s, "k", hash32, 32, 1000, 60000, &ci);
  }
  CHECK_RC(ESG_NEW, rc);
  CHECK(ci.attempts == 2);
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "k", first.token, NULL, 0));
  CHECK_RC(ESG_OK, esg_complete(s, "k", ci.token, "r", 1));
  now -= 2000;
  done(s);
  return inj;
}

static bool run_complete(long n, bool sticky) {
  esg_store *s = fresh("alloc-complete", group_mode);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", hash32, 32, 1000, 60000, &ci));
  arm(n, sticky);
  int rc = esg_complete(s, "k", ci.token, "result", 6);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, s);
    CHECK_RC(ESG_OK, esg_complete(s, "k", ci.token, "result", 6));
  }
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k", hash32, 32, 1000, 60000, &ci));
  CHECK(ci.result_len == 6 && memcmp(ci.result, "result", 6) == 0);
  done(s);
  return inj;
}

/* ------------------------------------------------------- event log -- */

static const char EVENT[] =
    "{\"id\":\"evt-1\",\"type\":\"order-created\",\"timestamp\":1700000000000,\"partitionKey\":\"order-7\","
    "\"tags\":{\"source\":\"shop\",\"region\":\"eu\"},\"order\":{\"id\":7,\"lines\":[1,2,3],\"total\":9.5}}";

typedef struct got {
  int n;
  char id[16][64];
  char *json[16];
} got;

static int got_cb(void *ud, const esg_stored_event *ev) {
  got *g = ud;
  if (g->n < 16) {
    snprintf(g->id[g->n], sizeof g->id[0], "%s", ev->id);
    g->json[g->n] = strndup(ev->json, ev->json_len);
    g->n++;
  }
  return 0;
}

static void got_free(got *g) {
  for (int i = 0; i < g->n; i++) free(g->json[i]);
  g->n = 0;
}

/* Whether two collections hold the same events, in the same order. */
static bool got_same(const got *a, const got *b) {
  if (a->n != b->n) return false;
  for (int i = 0; i < a->n; i++)
    if (strcmp(a->id[i], b->id[i]) != 0 || strcmp(a->json[i], b->json[i]) != 0) return false;
  return true;
}

/* Parse then put: a failure stores nothing; the retry stores the event as given. */
static bool run_event_put(long n, bool sticky) {
  esg_store *s = fresh("alloc-event", false);
  esg_event *ev = NULL;
  reset_tls();
  arm(n, sticky);
  int rc = esg_event_parse(EVENT, strlen(EVENT), &ev);
  const void *h = NULL;
  if (rc == ESG_OK) {
    rc = esg_event_put(s, ev, NULL, 0);
    h = s;
  }
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, h);
    CHECK(h || ev == NULL);
    got g = {0};
    CHECK_RC(ESG_NOT_FOUND, esg_event_get(s, "evt-1", got_cb, &g));
    esg_event_free(ev);
    CHECK_RC(ESG_OK, esg_event_parse(EVENT, strlen(EVENT), &ev));
    CHECK_RC(ESG_OK, esg_event_put(s, ev, NULL, 0));
  }
  CHECK_STR(esg_event_partition_key(ev), "order-7");
  esg_event_free(ev);
  got g = {0};
  CHECK_RC(ESG_OK, esg_event_get(s, "evt-1", got_cb, &g));
  CHECK(g.n == 1 && strcmp(g.json[0], EVENT) == 0);
  got_free(&g);
  done(s);
  return inj;
}

static void put_events(esg_store *s, const char *key, int count, int64_t ttl) {
  for (int i = 0; i < count; i++) {
    char json[256];
    snprintf(json, sizeof json,
             "{\"id\":\"e%d\",\"type\":\"t\",\"timestamp\":%d,\"partitionKey\":\"%s\",\"x\":{\"i\":%d}}", i, 1000 + i,
             key, i);
    esg_event *ev = NULL;
    CHECK_RC(ESG_OK, esg_event_parse(json, strlen(json), &ev));
    CHECK_RC(ESG_OK, esg_event_put(s, ev, NULL, ttl));
    esg_event_free(ev);
  }
}

static got purge_ref;

/* Purge with expired events: each event is either purged (after its `-expired` event was
   handed over, once, as a clean purge builds it) or kept for the retry. */
static bool run_purge(long n, bool sticky) {
  int count = full ? 12 : 3;
  esg_store *s = fresh("alloc-purge", false);
  put_events(s, "k", count, 1000);
  now += 2000;
  got g = {0};
  int64_t deleted = 0, more = 0;
  arm(n, sticky);
  int rc = esg_events_purge(s, got_cb, &g, &deleted);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, s);
    CHECK(deleted == g.n);
    CHECK_RC(ESG_OK, esg_events_purge(s, got_cb, &g, &more));
  }
  CHECK(deleted + more == count);
  if (n == 0) {
    got_free(&purge_ref); /* (the other mode's) */
    purge_ref = g;
  }
  else {
    CHECK(got_same(&g, &purge_ref));
    got_free(&g);
  }
  now -= 2000;
  done(s);
  return inj;
}

static int always(void *ud, const esg_stored_event *evs, size_t n) {
  (void)ud, (void)evs;
  return n > 0;
}

static got corr_ref;

/* A correlation rule that fires: a failure stores no higher-order event (the retry fires
   it, with every trigger). */
static bool run_correlate(long n, bool sticky) {
  esg_store *s = fresh("alloc-correlate", false);
  put_events(s, "k", full ? 12 : 3, 0);
  got emitted = {0};
  reset_tls();
  arm(n, sticky);
  int rc = esg_correlate(s, "k", "rule", always, NULL, 0, got_cb, &emitted);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, s);
    got g = {0};
    CHECK_RC(ESG_NOT_FOUND, esg_event_get(s, "k.rule", got_cb, &g));
    CHECK(emitted.n == 0);
    CHECK_RC(ESG_OK, esg_correlate(s, "k", "rule", always, NULL, 0, got_cb, &emitted));
  }
  CHECK_RC(ESG_DUPLICATE, esg_correlate(s, "k", "rule", always, NULL, 0, got_cb, &emitted));
  got g = {0};
  CHECK_RC(ESG_OK, esg_event_get(s, "k.rule", got_cb, &g));
  CHECK(emitted.n == 1 && g.n == 1 && strcmp(emitted.json[0], g.json[0]) == 0);
  if (n == 0) {
    got_free(&corr_ref); /* (the other mode's) */
    corr_ref = g;
  }
  else {
    CHECK(got_same(&g, &corr_ref));
    got_free(&g);
  }
  got_free(&emitted);
  done(s);
  return inj;
}

/* ------------------------------------------------------------ cache -- */

static const char VALUE[] = "{\"name\": \"Ada\", \"langs\": [\"en\", \"fr\"], \"n\": 1}";
static const char USER[] = "{\"id\": 7, \"name\": \"Ada\"}"; /* what the server answers for /user/7 */
static int loads;

static int loader(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  (void)ud, (void)key, (void)deadline;
  loads++;
  return esg_cache_load_set(ld, VALUE, strlen(VALUE), 0); /* its failure is the load's */
}

static esg_cache *cache_on(esg_store *s) {
  esg_cache *c = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&c, s, NULL));
  if (!c) exit(2);
  return c;
}

static void expect_value(esg_cache *c, const char *key) {
  esg_cache_entry e;
  CHECK_RC(ESG_OK, esg_cache_get(c, key, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.len == strlen(VALUE) && memcmp(e.value, VALUE, e.len) == 0);
}

static bool run_cache_open(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-open", false);
  esg_cache_opts o = ESG_CACHE_OPTS_INIT;
  o.collect_field = "user";
  o.collect_id_field = "uid";
  o.version_field = "rev";
  esg_cache *c = (esg_cache *)&o;
  reset_tls();
  arm(n, sticky);
  int rc = esg_cache_open(&c, s, &o);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, NULL);
    CHECK(c == NULL);
    CHECK_RC(ESG_OK, esg_cache_open(&c, s, &o));
  }
  CHECK_RC(ESG_OK, esg_cache_put(c, "k", VALUE, strlen(VALUE), 0));
  expect_value(c, "k");
  esg_cache_close(c);
  done(s);
  return inj;
}

/* A hit in the memory tier: documented not to allocate. */
static bool run_cache_mem(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-mem", false);
  esg_cache *c = cache_on(s);
  CHECK_RC(ESG_OK, esg_cache_put(c, "k", VALUE, strlen(VALUE), 0));
  esg_cache_entry e;
  arm(n, sticky);
  int rc = esg_cache_get(c, "k", &e);
  long calls = fa.calls;
  bool inj = disarm();
  CHECK(calls == 0);
  CHECK_RC(ESG_OK, rc);
  CHECK(e.result == ESG_CACHE_HIT);
  esg_cache_stats st;
  esg_cache_stats_get(c, &st);
  CHECK(st.mem_hits == 1);
  esg_cache_close(c);
  done(s);
  return inj;
}

/* A read of the store tier (another handle wrote the value): the memory copy is best effort. */
static bool run_cache_store(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-store", false);
  esg_cache *w = cache_on(s);
  CHECK_RC(ESG_OK, esg_cache_put(w, "k", VALUE, strlen(VALUE), 0));
  esg_cache_close(w);
  esg_cache *c = cache_on(s);
  esg_cache_entry e;
  arm(n, sticky);
  int rc = esg_cache_get(c, "k", &e);
  bool inj = disarm();
  if (rc == ESG_OK) {
    absorbed += inj;
    CHECK(e.result == ESG_CACHE_HIT && e.len == strlen(VALUE) && memcmp(e.value, VALUE, e.len) == 0);
  } else {
    expect_nomem(rc, c);
  }
  expect_value(c, "k");
  esg_cache_close(c);
  done(s);
  return inj;
}

/* Read-through of a key nobody holds: a failed load writes nothing (no negative either). */
static bool run_cache_load(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-load", false);
  esg_cache *c = cache_on(s);
  esg_cache_entry e;
  loads = 0;
  arm(n, sticky);
  int rc = esg_cache_get_or_load(c, "k", loader, NULL, &e);
  bool inj = disarm();
  if (rc == ESG_OK) {
    absorbed += inj;
  } else {
    expect_nomem(rc, c);
    CHECK(e.result == ESG_CACHE_MISS);
    esg_cache_entry m;
    CHECK_RC(ESG_OK, esg_cache_get(c, "k", &m));
    CHECK(m.result == ESG_CACHE_MISS);
    CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "k", loader, NULL, &e));
  }
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 1 && e.len == strlen(VALUE) && memcmp(e.value, VALUE, e.len) == 0);
  int l = loads;
  expect_value(c, "k");
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "k", loader, NULL, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 0 && loads == l);
  esg_cache_close(c);
  done(s);
  return inj;
}

/* Read-through of a key the store holds: answered without the loader. */
static bool run_cache_load_hit(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-load-hit", false);
  esg_cache *w = cache_on(s);
  CHECK_RC(ESG_OK, esg_cache_put(w, "k", VALUE, strlen(VALUE), 0));
  esg_cache_close(w);
  esg_cache *c = cache_on(s);
  esg_cache_entry e;
  loads = 0;
  arm(n, sticky);
  int rc = esg_cache_get_or_load(c, "k", loader, NULL, &e);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, c);
    CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "k", loader, NULL, &e));
  }
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 0 && loads == 0);
  CHECK(e.len == strlen(VALUE) && memcmp(e.value, VALUE, e.len) == 0);
  esg_cache_close(c);
  done(s);
  return inj;
}

/* Collect: the entity an event carries; a failure stores nothing. */
static bool run_cache_collect(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-collect", false);
  esg_cache *c = cache_on(s);
  esg_event *ev = NULL;
  CHECK_RC(ESG_OK, esg_event_parse(EVENT, strlen(EVENT), &ev));
  const char *key = NULL;
  arm(n, sticky);
  int rc = esg_cache_collect(c, ev, &key);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, c);
    esg_cache_entry m;
    CHECK_RC(ESG_OK, esg_cache_get(c, "order/7", &m));
    CHECK(m.result == ESG_CACHE_MISS);
    CHECK_RC(ESG_OK, esg_cache_collect(c, ev, &key));
  }
  CHECK_STR(key, "order/7");
  esg_cache_entry e;
  CHECK_RC(ESG_OK, esg_cache_get(c, "order/7", &e));
  CHECK(e.result == ESG_CACHE_HIT && e.value && strcmp(e.value, "{\"id\":7,\"lines\":[1,2,3],\"total\":9.5}") == 0);
  CHECK_RC(ESG_STALE, esg_cache_collect(c, ev, NULL));
  esg_event_free(ev);
  esg_cache_close(c);
  done(s);
  return inj;
}

/* Read-through with the HTTP loader against the local server. */
static bool run_cache_http(long n, bool sticky) {
  esg_store *s = fresh("alloc-cache-http", false);
  esg_cache *c = cache_on(s);
  char url[256];
  httpd_url(web, "/user/{key}", url, sizeof url);
  esg_http_loader_opts lo = ESG_HTTP_LOADER_OPTS_INIT;
  lo.url = url;
  lo.clock = tu_clock;
  lo.clock_ud = &now;
  esg_http_loader *l = NULL;
  CHECK_RC(ESG_OK, esg_http_loader_open(&l, &lo));
  esg_cache_entry e;
  arm(n, sticky);
  int rc = esg_cache_get_or_load(c, "7", esg_http_loader_load, l, &e);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, c);
    esg_cache_entry m;
    CHECK_RC(ESG_OK, esg_cache_get(c, "7", &m));
    CHECK(m.result == ESG_CACHE_MISS);
    CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "7", esg_http_loader_load, l, &e));
  }
  CHECK(e.result == ESG_CACHE_HIT && e.value && strcmp(e.value, USER) == 0);
  esg_http_loader_close(l);
  esg_cache_close(c);
  done(s);
  return inj;
}

static bool run_http_loader_open(long n, bool sticky) {
  char url[256];
  httpd_url(web, "/user/{key}", url, sizeof url);
  const char *hdrs[] = {"X-Api-Key: k"};
  esg_http_loader_opts lo = ESG_HTTP_LOADER_OPTS_INIT;
  lo.url = url;
  lo.headers = hdrs;
  lo.n_headers = 1;
  esg_http_loader *l = (esg_http_loader *)&lo;
  reset_tls();
  arm(n, sticky);
  int rc = esg_http_loader_open(&l, &lo);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, NULL);
    CHECK(l == NULL);
    CHECK_RC(ESG_OK, esg_http_loader_open(&l, &lo));
  }
  esg_http_loader_close(l);
  return inj;
}

/* An entity upsert (the document is checked as JSON): a failure writes nothing. */
static bool run_entity(long n, bool sticky) {
  esg_store *s = fresh("alloc-entity", false);
  arm(n, sticky);
  int rc = esg_entity_upsert(s, "k", 3, VALUE, strlen(VALUE));
  bool inj = disarm();
  esg_entity en;
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, s);
    CHECK_RC(ESG_NOT_FOUND, esg_entity_get(s, "k", &en));
    CHECK_RC(ESG_OK, esg_entity_upsert(s, "k", 3, VALUE, strlen(VALUE)));
  }
  CHECK_RC(ESG_OK, esg_entity_get(s, "k", &en));
  CHECK(en.version == 3 && en.doc_len == strlen(VALUE) && memcmp(en.doc, VALUE, en.doc_len) == 0);
  done(s);
  return inj;
}

/* ----------------------------------------------------------- latches -- */

/* Not in canonical form (spaces, keys out of order), so hashing it builds a tree. */
static const char DOC[] = "{ \"b\": [1, {\"y\": 2, \"x\": 1}], \"a\": \"text\", \"c\": {\"latched\": true} }";
static const char DOC2[] = "{\"c\":{\"latched\":true},\"a\":\"text\",\"b\":[1,{\"x\":1,\"y\":2}]}"; /* the same state */

static int pending(esg_store *s) {
  int p = -1;
  CHECK_RC(ESG_OK, esg_latch_pending(s, "k", "crm", &p));
  return p;
}

static bool run_latch_set(long n, bool sticky) {
  esg_store *s = fresh("alloc-latch-set", false);
  arm(n, sticky);
  int rc = esg_latch_doc(s, "k", "crm", DOC, strlen(DOC), 60000);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, s);
    CHECK(pending(s) == 0);
    CHECK_RC(ESG_OK, esg_latch_doc(s, "k", "crm", DOC, strlen(DOC), 60000));
  }
  CHECK(pending(s) == 1);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check_doc(s, "k", "crm", DOC2, strlen(DOC2)));
  done(s);
  return inj;
}

/* The echo of a latched write: a failed check consumes nothing. */
static bool run_latch_check(long n, bool sticky) {
  esg_store *s = fresh("alloc-latch-check", false);
  CHECK_RC(ESG_OK, esg_latch_doc(s, "k", "crm", DOC, strlen(DOC), 60000));
  arm(n, sticky);
  int rc = esg_latch_check_doc(s, "k", "crm", DOC2, strlen(DOC2));
  bool inj = disarm();
  if (rc == ESG_LATCH_ECHO) absorbed += inj;
  else {
    expect_nomem(rc, s);
    CHECK(pending(s) == 1);
    rc = esg_latch_check_doc(s, "k", "crm", DOC2, strlen(DOC2));
  }
  CHECK_RC(ESG_LATCH_ECHO, rc);
  CHECK(pending(s) == 0);
  done(s);
  return inj;
}

static char *mark_ref[2];

/* The flag helpers: mark (set, replacing the member, and clear) and the flag tests. */
static bool run_latch_flags(long n, bool sticky) {
  static const char doc[] = "{\"id\":1,\"latched\":false,\"user\":{\"latched\":true,\"n\":2},\"z\":[1]}";
  bool inj = false;
  for (int latched = 0; latched < 2; latched++) {
    char *out = (char *)doc;
    size_t len = 1;
    reset_tls();
    arm(n, sticky);
    int rc = esg_latch_mark(doc, strlen(doc), latched, &out, &len);
    inj |= disarm();
    if (rc != ESG_OK) {
      expect_nomem(rc, NULL);
      CHECK(out == NULL && len == 0);
      CHECK_RC(ESG_OK, esg_latch_mark(doc, strlen(doc), latched, &out, &len));
    } else if (fa.injected) {
      absorbed++;
    }
    if (n == 0) {
      free(mark_ref[latched]); /* (the other mode's) */
      mark_ref[latched] = strdup(out);
    } else {
      CHECK_STR(out, mark_ref[latched]);
    }
    CHECK(out && len == strlen(out));
    esg_free(out);
  }
  int flagged = -1;
  reset_tls();
  arm(n, sticky);
  int rc = esg_latch_flagged_json(doc, strlen(doc), &flagged);
  inj |= disarm();
  if (rc != ESG_OK) {
    expect_nomem(rc, NULL);
    CHECK_RC(ESG_OK, esg_latch_flagged_json(doc, strlen(doc), &flagged));
  }
  CHECK(flagged == 1);
  esg_event *ev = NULL;
  CHECK_RC(ESG_OK, esg_event_parse(EVENT, strlen(EVENT), &ev));
  static const char latched_ev[] = "{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1,\"user\":{\"latched\":true}}";
  esg_event *lev = NULL;
  CHECK_RC(ESG_OK, esg_event_parse(latched_ev, strlen(latched_ev), &lev));
  arm(n, sticky);
  int f1 = esg_latch_flagged(ev), f2 = esg_latch_flagged(lev); /* "never fails" */
  inj |= disarm();
  CHECK(f1 == 0 && f2 == 1);
  esg_event_free(ev);
  esg_event_free(lev);
  return inj;
}

/* --------------------------------------------------------- snapshot -- */

typedef struct entry {
  const char *key, *content;
} entry;

static const entry LIST1[] = {{"a", "{\"v\":1}"}, {"b", "{\"v\":2}"}, {"c", "{\"v\":3}"}, {"e", "{\"v\":5}"}};
/* a unchanged, b updated (spelled non-canonically), c deleted, d created, e unchanged respelled */
static const entry LIST2[] = {{"a", "{\"v\":1}"}, {"b", "{ \"w\": [2], \"v\": 22 }"}, {"d", "[4, {\"k\": 1}]"},
                              {"e", "{ \"v\" : 5 }"}};
static entry big1[40], big2[40];
static char bigbuf[2][40][64];

static const entry *list1 = LIST1, *list2 = LIST2;
static size_t n1 = 4, n2 = 4;
static int64_t updated2 = 1, unchanged2 = 2; /* what the second listing finds (created 1, deleted 1) */

/* One listing of "src": begin, add each entry, finish, close. The first failure's code. */
static int listing(esg_store *s, const entry *l, size_t n, esg_resync_stats *st) {
  esg_resync_opts o = ESG_RESYNC_OPTS_INIT;
  o.type = "item";
  o.batch = 2;
  esg_snapshot *sn = NULL;
  int rc = esg_snapshot_begin(&sn, s, "src", &o);
  if (rc != ESG_OK) {
    if (rc == ESG_ENOMEM) CHECK_CONTAINS(esg_errmsg(s), "memory");
    return rc;
  }
  for (size_t i = 0; rc == ESG_OK && i < n; i++) {
    rc = esg_snapshot_add(sn, l[i].key, l[i].content, strlen(l[i].content));
    if (rc != ESG_ENOMEM) continue;
    CHECK_CONTAINS(esg_errmsg(sn), "memory");
    /* out of memory hashing the entry: nothing written, the listing goes on; later (in
       recording or emitting it) the open batch is rolled back and the listing failed */
    bool entry_only = strstr(esg_errmsg(sn), "hashing content") != NULL;
    int again = esg_snapshot_add(sn, l[i].key, l[i].content, strlen(l[i].content));
    if (entry_only) CHECK(again == ESG_OK || (fa.sticky && again == ESG_ENOMEM));
    else CHECK_RC(ESG_ESTATE, again);
    if (again == ESG_OK) rc = ESG_OK;
  }
  if (rc == ESG_OK) {
    rc = esg_snapshot_finish(sn, st);
    if (rc == ESG_ENOMEM) {
      CHECK_CONTAINS(esg_errmsg(sn), "memory");
      int again = esg_snapshot_finish(sn, st); /* the listing stays open: finish may run again */
      CHECK(again == ESG_OK || (fa.sticky && again == ESG_ENOMEM));
      if (again == ESG_OK) rc = ESG_OK;
    }
  }
  esg_snapshot_close(sn);
  return rc;
}

static got snap_ref;

static int replay_all(esg_store *s, got *g) {
  int64_t k = 0;
  return esg_replay(s, NULL, got_cb, g, &k);
}

/* The second listing of a source: a failure anywhere (begin, an add, finish) and the
   listing run again give the very events of one clean run, and its state is exact (a
   third identical listing changes nothing). */
static bool run_snapshot(long n, bool sticky) {
  esg_store *s = fresh("alloc-snapshot", false);
  CHECK_RC(ESG_OK, listing(s, list1, n1, NULL));
  esg_resync_stats st;
  arm(n, sticky);
  int rc = listing(s, list2, n2, &st);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    CHECK_RC(ESG_ENOMEM, rc);
    CHECK_RC(ESG_OK, listing(s, list2, n2, &st));
  }
  got g = {0};
  CHECK_RC(ESG_OK, replay_all(s, &g));
  if (n == 0) {
    got_free(&snap_ref); /* (the other mode's) */
    snap_ref = g;
    CHECK(st.created == 1 && st.updated == updated2 && st.deleted == 1 && st.unchanged == unchanged2);
  } else {
    CHECK(got_same(&g, &snap_ref));
    got_free(&g);
  }
  CHECK_RC(ESG_OK, listing(s, list2, n2, &st));
  CHECK(st.created == 0 && st.updated == 0 && st.deleted == 0 && st.unchanged == (int64_t)n2);
  done(s);
  return inj;
}

static void big_lists(void) {
  for (int i = 0; i < 40; i++) {
    snprintf(bigbuf[0][i], sizeof bigbuf[0][i], "%s%02d", "key-", i);
    big1[i].key = big2[i].key = bigbuf[0][i];
    snprintf(bigbuf[1][i], sizeof bigbuf[1][i], "{ \"v\": %d }", i % 7 == 0 ? 1000 + i : i);
    big1[i].content = "{\"v\":0}";
    big2[i].content = i % 5 == 0 ? "{\"v\":0}" : bigbuf[1][i];
  }
  /* a deleted key: in the first listing only */
  big2[39].key = "key-zz";
  list1 = big1, list2 = big2, n1 = n2 = 40;
  updated2 = 31, unchanged2 = 8; /* every fifth is unchanged; key-39 goes, key-zz comes */
}

/* A cursor job's page: its items are checked (JSON) and emitted with the new cursor in
   one transaction; a failure writes neither. */
typedef struct page_src {
  esg_resync_item items[2];
} page_src;

static int fetch_page(void *ud, const char *cursor, esg_resync_page *pg) {
  page_src *p = ud;
  if (cursor) return -1; /* one page, then done */
  static const char *data[2] = {"{ \"n\": 1, \"tags\": [\"a\"] }", "[1, 2, {\"x\": null}]"};
  for (int i = 0; i < 2; i++) {
    esg_resync_item *it = &p->items[i];
    memset(it, 0, sizeof *it);
    it->id = i ? "item-2" : "item-1";
    it->version = "v1";
    it->type = "thing-synced";
    it->timestamp = 1000 + i;
    it->data = data[i];
    it->data_len = strlen(data[i]);
  }
  pg->items = p->items;
  pg->n = 2;
  pg->next_cursor = "2";
  pg->done = 1;
  return 0;
}

static got cursor_ref;

static bool run_cursor(long n, bool sticky) {
  esg_store *s = fresh("alloc-cursor", false);
  page_src src;
  esg_resync_stats st;
  arm(n, sticky);
  int rc = esg_cursor_run(s, "job", "crm", fetch_page, &src, NULL, &st);
  bool inj = disarm();
  char *cur = NULL;
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, s);
    CHECK_RC(ESG_NOT_FOUND, esg_cursor_get(s, "job", &cur));
    got g = {0};
    CHECK_RC(ESG_OK, replay_all(s, &g));
    CHECK(g.n == 0);
    CHECK_RC(ESG_OK, esg_cursor_run(s, "job", "crm", fetch_page, &src, NULL, &st));
  }
  CHECK(st.pages == 1 && st.emitted == 2 && st.done == 1);
  CHECK_RC(ESG_OK, esg_cursor_get(s, "job", &cur));
  CHECK_STR(cur, "2");
  esg_free(cur);
  got g = {0};
  CHECK_RC(ESG_OK, replay_all(s, &g));
  if (n == 0) {
    got_free(&cursor_ref); /* (the other mode's) */
    cursor_ref = g;
  }
  else {
    CHECK(got_same(&g, &cursor_ref));
    got_free(&g);
  }
  done(s);
  return inj;
}

/* ----------------------------------------------------------- egress -- */

typedef struct deliveries {
  int n, outcome, store_rc, attempts;
  char error[256];
} deliveries;

static void on_done(void *ud, const esg_egress_result *r) {
  deliveries *d = ud;
  d->n++;
  d->outcome = (int)r->outcome;
  d->store_rc = r->store_rc;
  d->attempts = r->attempts;
  snprintf(d->error, sizeof d->error, "%s", r->error);
}

static esg_egress_opts egress_opts(deliveries *d) {
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.backoff_base_ms = 1;
  o.backoff_cap_ms = 2;
  o.max_attempts = 4;
  o.timeout_ms = 5000;
  o.on_done = on_done;
  o.ud = d;
  return o;
}

static bool run_egress_open(long n, bool sticky) {
  esg_store *s = fresh("alloc-egress-open", false);
  deliveries d = {0};
  esg_egress_opts o = egress_opts(&d);
  o.idempotency_header = "X-Key";
  esg_egress *e = (esg_egress *)&o;
  reset_tls();
  arm(n, sticky);
  int rc = esg_egress_open(&e, s, &o);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, NULL);
    CHECK(e == NULL);
    CHECK_RC(ESG_OK, esg_egress_open(&e, s, &o));
  }
  esg_egress_close(e);
  done(s);
  return inj;
}

/* Submit, then run to completion: a failed submit queues nothing and sends nothing; a
   failure while running is retried (the receiver dedupes by the key), or ends the
   delivery with a fault and its claim released, for the caller to claim and send again. */
static bool run_egress(long n, bool sticky) {
  esg_store *s = fresh("alloc-egress", false);
  deliveries d = {0};
  esg_egress_opts o = egress_opts(&d);
  esg_egress *e = NULL;
  CHECK_RC(ESG_OK, esg_egress_open(&e, s, &o));
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-1", NULL, 0, 60000, 3600000, &ci));
  char url[256];
  httpd_url(web, "/alloc", url, sizeof url);
  const char *hdrs[] = {"X-Trace: 1"};
  esg_egress_request r = {0};
  r.event_id = "evt-1";
  r.url = url;
  r.body = EVENT;
  r.body_len = strlen(EVENT);
  r.headers = hdrs;
  r.n_headers = 1;
  r.partition_key = "order-7";
  r.claim_key = "evt-1";
  r.claim_token = ci.token;
  int sent = httpd_count(web);
  arm(n, sticky);
  int rc = esg_egress_submit(e, &r);
  int drc = rc == ESG_OK ? esg_egress_drain(e) : ESG_OK;
  bool inj = disarm();
  CHECK_RC(ESG_OK, drc);
  esg_egress_stats st;
  if (rc != ESG_OK) {
    expect_nomem(rc, e);
    esg_egress_get_stats(e, &st);
    CHECK(st.submitted == 0 && st.queued == 0 && d.n == 0 && httpd_count(web) == sent);
    CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
    CHECK_RC(ESG_OK, esg_egress_drain(e));
  } else if (d.outcome != ESG_EGRESS_DELIVERED) {
    CHECK(inj);
    CHECK(d.n == 1 && (d.outcome == ESG_EGRESS_EXHAUSTED || d.outcome == ESG_EGRESS_REFUSED));
    CHECK(d.store_rc == ESG_OK); /* the fault is recorded */
    CHECK_RC(ESG_NEW, esg_claim(s, "evt-1", NULL, 0, 60000, 3600000, &ci)); /* released */
    r.claim_token = ci.token;
    d.n = 0;
    CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
    CHECK_RC(ESG_OK, esg_egress_drain(e));
  } else {
    absorbed += inj;
  }
  CHECK(d.n == 1 && d.outcome == ESG_EGRESS_DELIVERED && d.store_rc == ESG_OK);
  CHECK(httpd_count(web) > sent);
  for (int i = sent; i < httpd_count(web); i++) {
    httpd_req q;
    char key[64];
    CHECK(httpd_get(web, i, &q) == 0 && httpd_header(&q, "Idempotency-Key", key, sizeof key) &&
          strcmp(key, "evt-1") == 0);
  }
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "evt-1", NULL, 0, 60000, 3600000, &ci));
  CHECK(ci.result && ci.result_len > 12 && memcmp(ci.result, "{\"status\":200", 13) == 0);
  esg_egress_close(e);
  done(s);
  return inj;
}

static int fault_seen(void *ud, const esg_fault *f) {
  (void)f;
  ++*(int *)ud;
  return 0;
}

/* Resubmitting a fault: it goes in its event's partition-key lane, behind a delivery of
   that key (one pass of run starts only the lane's head); a failed resubmit queues
   nothing and keeps the fault. */
static bool run_resubmit(long n, bool sticky) {
  esg_store *s = fresh("alloc-resubmit", false);
  deliveries d = {0};
  esg_egress_opts o = egress_opts(&d);
  esg_egress *e = NULL;
  CHECK_RC(ESG_OK, esg_egress_open(&e, s, &o));
  esg_fault f = {0};
  f.event_id = "evt-1";
  f.stage = "deliver";
  f.error = "HTTP 503";
  f.attempts = 2;
  f.event = EVENT;
  f.event_len = strlen(EVENT);
  int64_t fid = 0;
  CHECK_RC(ESG_OK, esg_fault_record(s, &f, &fid));
  char url[256];
  httpd_url(web, "/alloc", url, sizeof url);
  esg_egress_request first = {0};
  first.event_id = "evt-0";
  first.url = url;
  first.partition_key = "order-7"; /* the fault's event's key */
  CHECK_RC(ESG_OK, esg_egress_submit(e, &first));
  esg_egress_request t = {0};
  t.url = url;
  arm(n, sticky);
  int rc = esg_egress_resubmit(e, fid, &t);
  bool inj = disarm();
  if (rc == ESG_OK) absorbed += inj;
  else {
    expect_nomem(rc, e);
    esg_egress_stats st;
    esg_egress_get_stats(e, &st);
    CHECK(st.submitted == 1);
    int seen = 0;
    CHECK_RC(ESG_OK, esg_fault_get(s, fid, fault_seen, &seen)); /* kept */
    CHECK_RC(ESG_OK, esg_egress_resubmit(e, fid, &t));
  }
  esg_egress_run(e, 0);
  esg_egress_stats st;
  esg_egress_get_stats(e, &st);
  CHECK(st.submitted == 2 && st.attempts == 1); /* behind evt-0, in its lane */
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(d.n == 2 && d.outcome == ESG_EGRESS_DELIVERED && d.attempts == 3);
  int seen = 0;
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(s, fid, fault_seen, &seen)); /* deleted once delivered */
  esg_egress_close(e);
  done(s);
  return inj;
}

/* -------------------------------------------------------------- main -- */

static void test_open(void) {
  sweep("open", run_open);
  if (tu_store_shared()) sweep("reopen", run_reopen);
}

static void test_claims(void) {
  for (int g = 0; g < 2; g++) {
    group_mode = g;
    sweep(g ? "claim new (group)" : "claim new", run_claim_new);
    sweep(g ? "claim duplicate (group)" : "claim duplicate", run_claim_dup);
    sweep(g ? "claim takeover (group)" : "claim takeover", run_claim_takeover);
    sweep(g ? "complete (group)" : "complete", run_complete);
  }
  group_mode = false;
}

static void test_events(void) {
  sweep("event parse+put", run_event_put);
  sweep("events purge", run_purge);
  got_free(&purge_ref);
  sweep("correlate", run_correlate);
  got_free(&corr_ref);
  sweep("entity upsert", run_entity);
}

static void test_cache(void) {
  sweep("cache open", run_cache_open);
  sweep("cache get (memory)", run_cache_mem);
  sweep("cache get (store)", run_cache_store);
  sweep("cache get_or_load (load)", run_cache_load);
  sweep("cache get_or_load (store)", run_cache_load_hit);
  sweep("http loader open", run_http_loader_open);
  sweep("cache get_or_load (http)", run_cache_http);
  sweep("cache collect", run_cache_collect);
}

static void test_latches(void) {
  sweep("latch doc", run_latch_set);
  sweep("latch check doc", run_latch_check);
}

static void test_snapshot(void) {
  sweep("snapshot diff", run_snapshot);
  got_free(&snap_ref);
  sweep("cursor run", run_cursor);
  got_free(&cursor_ref);
}

static void test_egress(void) {
  sweep("egress open", run_egress_open);
  sweep("egress submit+run", run_egress);
  sweep("egress resubmit", run_resubmit);
}

static void test_flags(void) {
  sweep("latch flags", run_latch_flags);
  free(mark_ref[0]);
  free(mark_ref[1]);
}

int main(void) {
  esg_allocator a = ESG_ALLOCATOR_INIT;
  a.malloc_fn = fa_malloc;
  a.realloc_fn = fa_realloc;
  a.free_fn = fa_free;
  if (esg_set_allocator(&a) != ESG_OK) return 2;
  signal(SIGPIPE, SIG_IGN);
  const char *mode = getenv("ESG_ALLOC_SWEEP");
  full = mode && strcmp(mode, "full") == 0;
  if (full) big_lists();
  web = httpd_start();
  if (!web) return 2;
  httpd_rule user = {.path = "/user/7", .body = USER, .etag = "\"v1\""};
  httpd_rule_add(web, &user);
  RUN(test_flags);
  TU_SUITE {
    template_path[0] = '\0'; /* one per store entry */
    RUN(test_open);
    RUN(test_claims);
    RUN(test_events);
    RUN(test_cache);
    RUN(test_latches);
    RUN(test_snapshot);
    RUN(test_egress);
  }
  httpd_stop(web);
  long live = fa.live;
  esg_set_allocator(NULL);
  if (live != 0) fprintf(stderr, "%ld blocks of libesg still allocated at the end\n", live);
  CHECK(live == 0);
  return tu_done();
}
