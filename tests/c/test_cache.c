/*
 * The enrichment cache: every outcome (hit, miss, negative, stale), TTLs and max
 * staleness on the fake clock, read-through with negative caching and
 * stale-if-error, loader failures, timeouts and garbage, single flight across
 * threads, the LRU bounds, restarts, collect under the oplock, counters, and bad
 * input leaving the stored state as it was.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include "testutil.h"

#define T0 1700000000000LL

static esg_cache *open_cache(esg_store *s, const esg_cache_opts *o) {
  esg_cache *c = NULL;
  int rc = esg_cache_open(&c, s, o);
  if (rc != ESG_OK) {
    fprintf(stderr, "esg_cache_open: %s: %s\n", esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  return c;
}

/* Closes c and opens a new cache on the same store with o (changed since, or NULL: the defaults). */
static esg_cache *reopen(esg_cache *c, esg_store *s, const esg_cache_opts *o) {
  esg_cache_close(c);
  return open_cache(s, o);
}

/* Closes the cache, then its store. */
static void close_all(esg_cache *c, esg_store *s) {
  esg_cache_close(c);
  esg_store_close(s);
}

static esg_cache_stats stats(esg_cache *c) {
  esg_cache_stats st;
  memset(&st, 0xff, sizeof st);
  CHECK_RC(ESG_OK, esg_cache_stats_get(c, &st));
  return st;
}

/* Expects key to answer res (and the value val, when not NULL); failures name the caller's line. */
static void expect(esg_cache *c, const char *key, esg_cache_result res, const char *val, int line) {
  esg_cache_entry e;
  int before = tu_failures;
  CHECK_RC(ESG_OK, esg_cache_get(c, key, &e));
  CHECK(e.result == res);
  if (val) {
    CHECK_STR(e.value, val);
    CHECK(e.value && e.len == strlen(val));
  }
  if (tu_failures != before) fprintf(stderr, "  (expect \"%s\" from line %d: got result %d)\n", key, line, e.result);
}
#define EXPECT(c, key, res, val) expect((c), (key), (res), (val), __LINE__)
static const char *ns(const char *s) { return s; }

/* ----------------------------------------------------------- loaders -- */

typedef struct ldr {
  atomic_int calls;
  int mode;           /* see below */
  const char *value;  /* for LD_VALUE */
  int64_t *now;       /* the fake clock, for LD_SLOW */
  int64_t advance;    /* LD_SLOW: how far the clock moves during the load */
  int64_t deadline;   /* the last deadline seen */
  int sleep_ms;       /* real sleep, for the single-flight race */
  int64_t ttl;        /* for LD_VALUE: esg_cache_load_set's ttl */
  esg_cache *self;    /* LD_REENTER: the cache the loader must not use */
  int reenter_rc;
} ldr;

enum { LD_VALUE, LD_ABSENT, LD_FAIL, LD_SLOW, LD_NOVALUE, LD_GARBAGE, LD_HUGE, LD_ODD, LD_REENTER };

static int loader(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  ldr *l = ud;
  atomic_fetch_add(&l->calls, 1);
  l->deadline = deadline;
  if (l->sleep_ms) usleep((useconds_t)l->sleep_ms * 1000);
  char buf[128];
  switch (l->mode) {
  case LD_VALUE:
    if (l->value) return esg_cache_load_set(ld, l->value, strlen(l->value), l->ttl);
    snprintf(buf, sizeof buf, "{\"id\":\"%s\"}", key);
    return esg_cache_load_set(ld, buf, strlen(buf), l->ttl);
  case LD_ABSENT:
    return ESG_NOT_FOUND;
  case LD_FAIL:
    esg_cache_load_error(ld, "upstream answered 503");
    return ESG_EIO;
  case LD_SLOW:
    *l->now += l->advance;
    return esg_cache_load_set(ld, "{\"slow\":true}", 13, 0);
  case LD_NOVALUE:
    return ESG_OK;
  case LD_GARBAGE:
    esg_cache_load_set(ld, "<html>oops</html>", 17, 0);
    return ESG_OK;
  case LD_HUGE: {
    static char big[5000];
    memset(big, ' ', sizeof big);
    big[0] = '1';
    int rc = esg_cache_load_set(ld, big, sizeof big, 0);
    return rc == ESG_ETOOBIG ? ESG_OK : ESG_EINVAL; /* a careless loader ignores the refusal */
  }
  case LD_ODD:
    return 42;
  case LD_REENTER: {
    esg_cache_entry e;
    l->reenter_rc = esg_cache_get(l->self, key, &e);
    return ESG_NOT_FOUND;
  }
  }
  return ESG_EINVAL;
}

/* ------------------------------------------------------------ outcomes -- */

static void test_outcomes(void) {
  int64_t now = T0;
  esg_store *s = tu_open(tu_store("cache-outcomes.db"), &now);
  esg_cache *c = open_cache(s, NULL);
  esg_cache_entry e;

  CHECK_RC(ESG_OK, esg_cache_get(c, "thing/1", &e));
  CHECK(e.result == ESG_CACHE_MISS && e.value == NULL && e.len == 0);

  CHECK_RC(ESG_OK, esg_cache_put(c, "thing/1", "{\"a\":1}", 7, 0));
  CHECK_RC(ESG_OK, esg_cache_get(c, "thing/1", &e));
  CHECK(e.result == ESG_CACHE_HIT);
  CHECK_STR(e.value, "{\"a\":1}");
  CHECK(e.len == 7 && e.value[7] == '\0');
  CHECK(e.expires == T0 + 300000); /* the default ttl */
  CHECK(e.version == T0);          /* put's version is the write time */
  CHECK(e.loaded == 0 && e.load_status == ESG_OK);

  CHECK_RC(ESG_OK, esg_cache_put_negative(c, "thing/2", 0));
  CHECK_RC(ESG_OK, esg_cache_get(c, "thing/2", &e));
  CHECK(e.result == ESG_CACHE_NEGATIVE && e.value == NULL);
  CHECK(e.expires == T0 + 30000); /* the default negative ttl */

  /* a value replaces a negative and the other way round */
  CHECK_RC(ESG_OK, esg_cache_put(c, "thing/2", "[2]", 3, 0));
  EXPECT(c, "thing/2", ESG_CACHE_HIT, ns("[2]"));
  CHECK_RC(ESG_OK, esg_cache_put_negative(c, "thing/2", 0));
  EXPECT(c, "thing/2", ESG_CACHE_NEGATIVE, NULL);

  CHECK_RC(ESG_OK, esg_cache_invalidate(c, "thing/1"));
  EXPECT(c, "thing/1", ESG_CACHE_MISS, NULL);
  CHECK_RC(ESG_OK, esg_cache_invalidate(c, "thing/1")); /* idempotent */
  CHECK_RC(ESG_OK, esg_cache_invalidate(c, "never-there"));

  esg_cache_stats st = stats(c);
  CHECK(st.hits == 2);
  CHECK(st.negatives == 2);
  CHECK(st.misses == 2);
  CHECK(st.stale == 0 && st.loads == 0 && st.load_failures == 0);
  CHECK(st.mem_hits == 4); /* every fresh answer after a put came from memory */
  CHECK(st.mem_entries == 1 && st.mem_bytes > 0);

  esg_cache_close(NULL);
  close_all(c, s);
}

/* ------------------------------------------------- TTL and staleness -- */

static void test_ttl(void) {
  int64_t now = T0;
  esg_cache_opts o = {.size = sizeof(esg_cache_opts), .ttl_ms = 1000, .negative_ttl_ms = 200, .max_stale_ms = 5000};
  esg_store *s = tu_open(tu_store("cache-ttl.db"), &now);
  esg_cache *c = open_cache(s, &o);
  esg_cache_entry e;

  CHECK_RC(ESG_OK, esg_cache_put(c, "k", "\"v\"", 3, 0));
  now = T0 + 999;
  EXPECT(c, "k", ESG_CACHE_HIT, ns("\"v\""));
  now = T0 + 1000; /* fresh means now < expires */
  CHECK_RC(ESG_OK, esg_cache_get(c, "k", &e));
  CHECK(e.result == ESG_CACHE_STALE);
  CHECK_STR(e.value, "\"v\"");
  CHECK(e.expires == T0 + 1000);
  now = T0 + 1000 + 4999;
  EXPECT(c, "k", ESG_CACHE_STALE, ns("\"v\""));
  now = T0 + 1000 + 5000;
  EXPECT(c, "k", ESG_CACHE_MISS, NULL);

  /* a per-put ttl overrides the default */
  now = T0;
  CHECK_RC(ESG_OK, esg_cache_put(c, "long", "1", 1, 60000));
  now = T0 + 59999;
  EXPECT(c, "long", ESG_CACHE_HIT, ns("1"));
  now = T0 + 60000;
  EXPECT(c, "long", ESG_CACHE_STALE, ns("1"));

  /* negatives: their own ttl, and never served stale */
  now = T0;
  CHECK_RC(ESG_OK, esg_cache_put_negative(c, "gone", 0));
  now = T0 + 199;
  EXPECT(c, "gone", ESG_CACHE_NEGATIVE, NULL);
  now = T0 + 200;
  EXPECT(c, "gone", ESG_CACHE_MISS, NULL);
  now = T0;
  CHECK_RC(ESG_OK, esg_cache_put_negative(c, "gone2", 50));
  now = T0 + 50;
  EXPECT(c, "gone2", ESG_CACHE_MISS, NULL);

  esg_cache_stats st = stats(c);
  CHECK(st.stale == 3);

  /* max_stale_ms -1: never stale */
  o.max_stale_ms = -1;
  c = reopen(c, s, &o);
  now = T0;
  CHECK_RC(ESG_OK, esg_cache_put(c, "k", "\"v\"", 3, 0));
  now = T0 + 1000;
  EXPECT(c, "k", ESG_CACHE_MISS, NULL);

  /* mem_ttl_ms: memory is trusted only that long, then the store is read again */
  o.max_stale_ms = 0;
  o.mem_ttl_ms = 100;
  c = reopen(c, s, &o);
  now = T0;
  CHECK_RC(ESG_OK, esg_cache_put(c, "m", "1", 1, 0));
  now = T0 + 99;
  EXPECT(c, "m", ESG_CACHE_HIT, ns("1"));
  CHECK(stats(c).mem_hits == 1);
  now = T0 + 100;
  EXPECT(c, "m", ESG_CACHE_HIT, ns("1"));
  CHECK(stats(c).mem_hits == 1); /* from the store, then memory again */
  EXPECT(c, "m", ESG_CACHE_HIT, ns("1"));
  CHECK(stats(c).mem_hits == 2);

  /* purge drops what can no longer be served, and only that */
  o.mem_ttl_ms = 0;
  o.max_stale_ms = 5000;
  c = reopen(c, s, &o);
  now = T0 + 100000;
  CHECK_RC(ESG_OK, esg_cache_put(c, "fresh", "1", 1, 0));
  CHECK_RC(ESG_OK, esg_cache_put(c, "stale", "1", 1, 0));
  CHECK_RC(ESG_OK, esg_cache_put_negative(c, "neg", 0));
  now = T0 + 100000 + 2000; /* "stale" past ttl but servable, "neg" expired */
  CHECK_RC(ESG_OK, esg_cache_put(c, "fresh", "2", 1, 0));
  int64_t n = -1;
  CHECK_RC(ESG_OK, esg_cache_purge(c, &n));
  CHECK(n == 6); /* k, long, gone, gone2, m and neg; "stale" and "fresh" stay */
  EXPECT(c, "stale", ESG_CACHE_STALE, ns("1"));
  EXPECT(c, "fresh", ESG_CACHE_HIT, ns("2"));
  EXPECT(c, "neg", ESG_CACHE_MISS, NULL);

  close_all(c, s);
}

/* --------------------------------------------------------- read-through -- */

static void test_read_through(void) {
  int64_t now = T0;
  esg_cache_opts o = {.size = sizeof(esg_cache_opts), .ttl_ms = 1000, .negative_ttl_ms = 100};
  esg_store *s = tu_open(tu_store("cache-rt.db"), &now);
  esg_cache *c = open_cache(s, &o);
  ldr l = {0};
  esg_cache_entry e;

  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "thing-1", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 1 && e.load_status == ESG_OK);
  CHECK_STR(e.value, "{\"id\":\"thing-1\"}");
  CHECK(atomic_load(&l.calls) == 1);
  CHECK(l.deadline == T0 + 10000); /* the default load timeout */

  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "thing-1", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 0);
  CHECK_STR(e.value, "{\"id\":\"thing-1\"}");
  CHECK(atomic_load(&l.calls) == 1);
  EXPECT(c, "thing-1", ESG_CACHE_HIT, ns("{\"id\":\"thing-1\"}"));

  /* past the ttl the loader runs again */
  now = T0 + 1000;
  l.value = "{\"id\":\"thing-1\",\"v\":2}";
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "thing-1", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 1);
  CHECK_STR(e.value, "{\"id\":\"thing-1\",\"v\":2}");
  CHECK(atomic_load(&l.calls) == 2);

  /* negative caching: "absent" is remembered for the negative ttl */
  l.mode = LD_ABSENT;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "ghost", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_NEGATIVE && e.loaded == 1 && e.value == NULL);
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "ghost", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_NEGATIVE && e.loaded == 0);
  CHECK(atomic_load(&l.calls) == 3);
  EXPECT(c, "ghost", ESG_CACHE_NEGATIVE, NULL);
  now += 100;
  l.mode = LD_VALUE;
  l.value = "{\"back\":1}";
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "ghost", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 1);
  CHECK(atomic_load(&l.calls) == 4);

  /* the loader's own ttl */
  l.value = "7";
  l.ttl = 50;
  int64_t t = now;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "short", loader, &l, &e));
  CHECK(e.expires == t + 50);
  l.ttl = 0;

  /* a loader must not use its own cache */
  l.mode = LD_REENTER;
  l.self = c;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "reenter", loader, &l, &e));
  CHECK(l.reenter_rc == ESG_ESTATE);
  CHECK(e.result == ESG_CACHE_NEGATIVE);

  esg_cache_stats st = stats(c);
  CHECK(st.loads == 6);
  CHECK(st.load_failures == 0);
  CHECK(st.misses == 6);
  CHECK(st.hits == 2);
  CHECK(st.negatives == 2);

  close_all(c, s);
}

/* ---------------------------------------- failures and stale-if-error -- */

static void test_stale_if_error(void) {
  int64_t now = T0;
  esg_cache_opts o = {.size = sizeof(esg_cache_opts), .ttl_ms = 1000, .max_stale_ms = 10000, .load_timeout_ms = 500};
  esg_store *s = tu_open(tu_store("cache-sie.db"), &now);
  esg_cache *c = open_cache(s, &o);
  ldr l = {0};
  l.now = &now;
  esg_cache_entry e;

  CHECK_RC(ESG_OK, esg_cache_put(c, "k", "{\"old\":1}", 9, 0));
  now = T0 + 2000; /* expired, within max staleness */

  int modes[] = {LD_FAIL, LD_SLOW, LD_NOVALUE, LD_GARBAGE, LD_HUGE, LD_ODD};
  int codes[] = {ESG_ECALLBACK, ESG_ETIMEDOUT, ESG_ECALLBACK, ESG_EJSON, ESG_ETOOBIG, ESG_ECALLBACK};
  const char *texts[] = {"upstream answered 503", "took 501 ms", "without a value", "not JSON",
                         "over max_value_bytes", "returned UNKNOWN"};
  esg_cache_opts small = o;
  small.max_value_bytes = 4096;
  c = reopen(c, s, &small);
  for (int i = 0; i < 6; i++) {
    l.mode = modes[i];
    l.advance = 501;
    int64_t before = now;
    memset(&e, 0, sizeof e);
    CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "k", loader, &l, &e));
    CHECK(e.result == ESG_CACHE_STALE);
    CHECK_STR(e.value, "{\"old\":1}");
    CHECK(e.loaded == 1);
    CHECK(e.load_status == codes[i]);
    CHECK_CONTAINS(esg_errmsg(c), texts[i]);
    CHECK_CONTAINS(esg_errmsg(c), "\"k\"");
    now = before; /* undo LD_SLOW's clock move */
    EXPECT(c, "k", ESG_CACHE_STALE, ns("{\"old\":1}")); /* the stored state is as it was */
  }
  esg_cache_stats st = stats(c);
  CHECK(st.loads == 6 && st.load_failures == 6);
  CHECK(st.stale == 12);

  /* the same failures without a stale value: the failure itself, nothing written */
  for (int i = 0; i < 6; i++) {
    l.mode = modes[i];
    memset(&e, 0xff, sizeof e);
    CHECK_RC(codes[i], esg_cache_get_or_load(c, "fresh-key", loader, &l, &e));
    CHECK(e.result == ESG_CACHE_MISS && e.value == NULL && e.loaded == 1 && e.load_status == codes[i]);
    CHECK_CONTAINS(esg_errmsg(c), texts[i]);
    now = T0 + 2000;
    EXPECT(c, "fresh-key", ESG_CACHE_MISS, NULL);
  }

  /* beyond max staleness the failure is returned */
  now = T0 + 1000 + 10000;
  l.mode = LD_FAIL;
  CHECK_RC(ESG_ECALLBACK, esg_cache_get_or_load(c, "k", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_MISS);
  CHECK_CONTAINS(esg_errmsg(c), "503");

  /* a timed-out load of an absent key is not cached as a negative either */
  now = T0;
  l.mode = LD_SLOW;
  l.advance = 10000;
  CHECK_RC(ESG_ETIMEDOUT, esg_cache_get_or_load(c, "slow", loader, &l, &e));
  now = T0;
  EXPECT(c, "slow", ESG_CACHE_MISS, NULL);
  /* exactly at the deadline is in time */
  l.advance = 500;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "slow", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 1);

  /* a non-JSON value is fine when the cache does not check JSON */
  o.no_json_check = 1;
  c = reopen(c, s, &o);
  l.mode = LD_GARBAGE;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "html", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT);
  CHECK_STR(e.value, "<html>oops</html>");
  CHECK_RC(ESG_OK, esg_cache_put(c, "bin", "\x01\x00\x02", 3, 0));
  CHECK_RC(ESG_OK, esg_cache_get(c, "bin", &e));
  CHECK(e.result == ESG_CACHE_HIT && e.len == 3 && memcmp(e.value, "\x01\x00\x02", 3) == 0);
  /* ... and no load timeout when -1 */
  o.load_timeout_ms = -1;
  c = reopen(c, s, &o);
  l.mode = LD_SLOW;
  l.advance = 1000000;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "unhurried", loader, &l, &e));
  CHECK(l.deadline == INT64_MAX);

  close_all(c, s);
}

/* --------------------------------------------------------- single flight -- */

#define THREADS 8

typedef struct racer {
  const char *path;
  int64_t *now;
  ldr *l;
  pthread_barrier_t *bar;
  int rc;
  esg_cache_entry e;
  char value[64];
  esg_cache_stats st;
} racer;

static void *race(void *p) {
  racer *r = p;
  esg_store *s = tu_open(r->path, r->now);
  esg_cache *c = open_cache(s, &(esg_cache_opts)ESG_CACHE_OPTS_INIT);
  pthread_barrier_wait(r->bar);
  r->rc = esg_cache_get_or_load(c, "hot", loader, r->l, &r->e);
  snprintf(r->value, sizeof r->value, "%s", r->e.value ? r->e.value : "(null)");
  esg_cache_stats_get(c, &r->st);
  close_all(c, s);
  return NULL;
}

static void run_race(const char *path, int64_t *now, ldr *l, racer *rs) {
  pthread_t th[THREADS];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, THREADS);
  for (int i = 0; i < THREADS; i++) {
    rs[i] = (racer){.path = path, .now = now, .l = l, .bar = &bar};
    pthread_create(&th[i], NULL, race, &rs[i]);
  }
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&bar);
}

static void test_single_flight(void) {
  TU_REQUIRE(tu_store_shared(), "8 handles on one store: " TU_NOT_SHARED);
  int64_t now = T0;
  const char *path = tu_store("cache-sf.db");
  esg_store_close(tu_open(path, &now)); /* the schema first */
  ldr l = {0};
  l.sleep_ms = 200; /* long enough for every thread to arrive while the load runs */
  racer rs[THREADS];
  run_race(path, &now, &l, rs);
  CHECK(atomic_load(&l.calls) == 1);
  int loaded = 0;
  uint64_t misses = 0;
  for (int i = 0; i < THREADS; i++) {
    CHECK_RC(ESG_OK, rs[i].rc);
    CHECK(rs[i].e.result == ESG_CACHE_HIT);
    CHECK_STR(rs[i].value, "{\"id\":\"hot\"}");
    loaded += rs[i].e.loaded;
    misses += rs[i].st.misses;
  }
  CHECK(loaded == 1);
  CHECK(misses >= 1);

  /* a failing leader: its waiting followers report its failure, nothing is cached */
  now = T0 + 400000; /* "hot" expired and is served stale to everyone */
  atomic_store(&l.calls, 0);
  l.mode = LD_FAIL;
  run_race(path, &now, &l, rs);
  CHECK(atomic_load(&l.calls) >= 1);
  for (int i = 0; i < THREADS; i++) {
    CHECK_RC(ESG_OK, rs[i].rc);
    CHECK(rs[i].e.result == ESG_CACHE_STALE);
    CHECK(rs[i].e.load_status == ESG_ECALLBACK);
    CHECK_STR(rs[i].value, "{\"id\":\"hot\"}");
  }
}

/* a follower that waits longer than load_timeout_ms gives up with ESG_ETIMEDOUT */
typedef struct waiter {
  const char *path;
  int64_t *now;
  int rc;
  int result;
} waiter;

static void *wait_follower(void *p) {
  waiter *w = p;
  esg_store *s = tu_open(w->path, w->now);
  esg_cache *c = open_cache(s, &(esg_cache_opts){.size = sizeof(esg_cache_opts), .load_timeout_ms = 50});
  ldr l = {0};
  esg_cache_entry e;
  usleep(50000); /* the leader is inside its loader by now */
  w->rc = esg_cache_get_or_load(c, "sloth", loader, &l, &e);
  w->result = e.result;
  if (atomic_load(&l.calls) != 0) w->rc = 99; /* a follower must not load */
  close_all(c, s);
  return NULL;
}

static void test_follower_timeout(void) {
  TU_REQUIRE(tu_store_shared(), "a follower on another handle: " TU_NOT_SHARED);
  int64_t now = T0;
  const char *path = tu_store("cache-wait.db");
  esg_store *s = tu_open(path, &now);
  esg_cache *c = open_cache(s, NULL);
  waiter w = {.path = path, .now = &now};
  pthread_t th;
  pthread_create(&th, NULL, wait_follower, &w);
  ldr l = {0};
  l.sleep_ms = 400;
  esg_cache_entry e;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "sloth", loader, &l, &e));
  pthread_join(th, NULL);
  CHECK_RC(ESG_ETIMEDOUT, w.rc);
  CHECK(w.result == ESG_CACHE_MISS);
  CHECK(atomic_load(&l.calls) == 1);
  close_all(c, s);
}

/* ------------------------------------------------------------ two tiers -- */

static void test_lru(void) {
  int64_t now = T0;
  esg_cache_opts o = {.size = sizeof(esg_cache_opts), .mem_entries = 3};
  esg_store *s = tu_open(tu_store("cache-lru.db"), &now);
  esg_cache *c = open_cache(s, &o);
  char key[16], val[16];
  for (int i = 1; i <= 3; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "%d", i);
    CHECK_RC(ESG_OK, esg_cache_put(c, key, val, strlen(val), 0));
  }
  esg_cache_stats st = stats(c);
  CHECK(st.mem_entries == 3 && st.evictions == 0);
  EXPECT(c, "k1", ESG_CACHE_HIT, ns("1")); /* k1 becomes the most recent: k2 is now the oldest */
  CHECK_RC(ESG_OK, esg_cache_put(c, "k4", "4", 1, 0));
  st = stats(c);
  CHECK(st.mem_entries == 3 && st.evictions == 1 && st.mem_hits == 1);
  EXPECT(c, "k1", ESG_CACHE_HIT, ns("1"));
  EXPECT(c, "k3", ESG_CACHE_HIT, ns("3"));
  EXPECT(c, "k4", ESG_CACHE_HIT, ns("4"));
  CHECK(stats(c).mem_hits == 4);
  /* the evicted key still answers, from the store tier, and comes back into memory */
  EXPECT(c, "k2", ESG_CACHE_HIT, ns("2"));
  st = stats(c);
  CHECK(st.mem_hits == 4 && st.hits == 5 && st.evictions == 2 && st.mem_entries == 3);
  EXPECT(c, "k2", ESG_CACHE_HIT, ns("2"));
  CHECK(stats(c).mem_hits == 5);
  /* k1 was the oldest at k2's return */
  EXPECT(c, "k1", ESG_CACHE_HIT, ns("1"));
  CHECK(stats(c).mem_hits == 5);

  /* the byte bound */
  o.mem_entries = 0;
  o.mem_bytes = 1000;
  c = reopen(c, s, &o);
  char big[301];
  memset(big, 'x', 300);
  big[0] = '"';
  big[299] = '"';
  big[300] = '\0';
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "b%d", i);
    CHECK_RC(ESG_OK, esg_cache_put(c, key, big, 300, 0));
    st = stats(c);
    CHECK(st.mem_bytes <= 1000);
  }
  CHECK(st.mem_entries >= 2 && st.mem_entries <= 3);
  CHECK(st.evictions == 10 - st.mem_entries);
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "b%d", i);
    EXPECT(c, key, ESG_CACHE_HIT, ns(big));
  }
  /* a value over the whole byte bound is never kept in memory, yet served from the store */
  char huge[1200];
  memset(huge, '1', sizeof huge - 1);
  huge[sizeof huge - 1] = '\0';
  CHECK_RC(ESG_OK, esg_cache_put(c, "huge", huge, strlen(huge), 0));
  uint64_t mh = stats(c).mem_hits;
  EXPECT(c, "huge", ESG_CACHE_HIT, ns(huge));
  EXPECT(c, "huge", ESG_CACHE_HIT, ns(huge));
  CHECK(stats(c).mem_hits == mh);
  CHECK(stats(c).mem_bytes <= 1000);

  /* no memory tier at all */
  o.mem_entries = -1;
  c = reopen(c, s, &o);
  EXPECT(c, "k1", ESG_CACHE_HIT, ns("1"));
  EXPECT(c, "k1", ESG_CACHE_HIT, ns("1"));
  st = stats(c);
  CHECK(st.mem_hits == 0 && st.mem_entries == 0 && st.hits == 2);

  /* many keys: the table grows and entries are found after many evictions and deletes */
  o.mem_entries = 500;
  o.mem_bytes = 0;
  c = reopen(c, s, &o);
  for (int i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "g%d", i);
    snprintf(val, sizeof val, "%d", i);
    CHECK_RC(ESG_OK, esg_cache_put(c, key, val, strlen(val), 0));
    if (i % 7 == 0) CHECK_RC(ESG_OK, esg_cache_invalidate(c, key));
  }
  st = stats(c);
  CHECK(st.mem_entries >= 499 && st.mem_entries <= 500);
  int bad = 0;
  for (int i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "g%d", i);
    snprintf(val, sizeof val, "%d", i);
    esg_cache_entry e;
    if (esg_cache_get(c, key, &e) != ESG_OK) bad++;
    else if (i % 7 == 0 ? e.result != ESG_CACHE_MISS : (e.result != ESG_CACHE_HIT || strcmp(e.value, val) != 0)) bad++;
  }
  CHECK(bad == 0);
  close_all(c, s);
}

static void test_restart(void) {
  int64_t now = T0;
  esg_store *s = NULL;
  esg_cache *c = NULL;
  if (tu_store_shared()) {
    const char *path = tu_store("cache-restart.db");
    s = tu_open(path, &now);
    c = open_cache(s, NULL);
    CHECK_RC(ESG_OK, esg_cache_put(c, "kept", "{\"k\":1}", 7, 0));
    CHECK_RC(ESG_OK, esg_cache_put_negative(c, "absent", 0));
    close_all(c, s);

    s = tu_open(path, &now);
    c = open_cache(s, NULL);
    EXPECT(c, "kept", ESG_CACHE_HIT, ns("{\"k\":1}"));
    EXPECT(c, "absent", ESG_CACHE_NEGATIVE, NULL);
    esg_cache_stats st = stats(c);
    CHECK(st.mem_hits == 0 && st.hits == 1 && st.negatives == 1);
    close_all(c, s);
  } else {
    tu_skip_part("restart", TU_NOT_KEPT);
  }

  /* a private in-memory store works too (and shares nothing) */
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.clock = tu_clock;
  so.clock_ud = &now;
  CHECK_RC(ESG_OK, esg_store_open(&s, ":memory:", &so));
  c = open_cache(s, NULL);
  EXPECT(c, "kept", ESG_CACHE_MISS, NULL);
  ldr l = {0};
  esg_cache_entry e;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(c, "m", loader, &l, &e));
  CHECK(e.result == ESG_CACHE_HIT && e.loaded == 1);
  close_all(c, s);
}

/* Two handles of one process on one store: writes through one are seen by the other's memory tier;
   a batch's writes reach memory only once committed. */
static void test_coherence(void) {
  int64_t now = T0;
  const char *path = tu_store("cache-coh.db");
  esg_store *s1 = tu_open(path, &now), *s2 = NULL;
  esg_cache *c1 = open_cache(s1, NULL), *c2 = NULL;
  if (tu_store_shared()) {
    s2 = tu_open(path, &now);
    c2 = open_cache(s2, NULL);
    CHECK_RC(ESG_OK, esg_cache_put(c1, "k", "1", 1, 0));
    EXPECT(c2, "k", ESG_CACHE_HIT, ns("1"));
    EXPECT(c2, "k", ESG_CACHE_HIT, ns("1"));
    CHECK(stats(c2).mem_hits == 1);
    CHECK_RC(ESG_OK, esg_cache_put(c1, "k", "2", 1, 0));
    EXPECT(c2, "k", ESG_CACHE_HIT, ns("2"));
    CHECK_RC(ESG_OK, esg_cache_invalidate(c1, "k"));
    EXPECT(c2, "k", ESG_CACHE_MISS, NULL);
    CHECK_RC(ESG_OK, esg_cache_put_negative(c2, "k", 0));
    EXPECT(c1, "k", ESG_CACHE_NEGATIVE, NULL);
  } else {
    tu_skip_part("two handles", TU_NOT_SHARED);
  }
  /* a write inside a batch is not kept in memory until it is committed */
  CHECK_RC(ESG_OK, esg_store_begin(s1));
  CHECK_RC(ESG_OK, esg_cache_put(c1, "b", "1", 1, 0));
  EXPECT(c1, "b", ESG_CACHE_HIT, ns("1"));
  CHECK_RC(ESG_OK, esg_store_rollback(s1));
  EXPECT(c1, "b", ESG_CACHE_MISS, NULL);
  esg_cache_close(c1);
  esg_cache_close(c2);
  esg_store_close(s1);
  esg_store_close(s2);
}

/* ---------------------------------------------------------------- collect -- */

static esg_event *event(const char *json) {
  esg_event *ev = NULL;
  if (esg_event_parse(json, strlen(json), &ev) != ESG_OK) {
    fprintf(stderr, "bad test event %s: %s\n", json, esg_errmsg(NULL));
    exit(2);
  }
  return ev;
}

static int collect(esg_cache *c, const char *json, const char **key) {
  esg_event *ev = event(json);
  int rc = esg_cache_collect(c, ev, key);
  esg_event_free(ev);
  return rc;
}

static void test_collect(void) {
  int64_t now = T0;
  esg_store *s = tu_open(tu_store("cache-collect.db"), &now);
  esg_cache *c = open_cache(s, NULL);
  const char *key = NULL;
  esg_cache_entry e;

  CHECK_RC(ESG_OK, collect(c,
                           "{\"id\":\"e2\",\"type\":\"thing-updated\",\"timestamp\":2000,\"partitionKey\":\"t1\","
                           "\"tags\":{\"a\":1},\"raw\":{\"x\":1},\"thing\":{\"id\":\"t1\",\"name\":\"two\"}}",
                           &key));
  CHECK_STR(key, "thing/t1");
  CHECK_RC(ESG_OK, esg_cache_get(c, "thing/t1", &e));
  CHECK(e.result == ESG_CACHE_HIT && e.version == 2000);
  CHECK_STR(e.value, "{\"id\":\"t1\",\"name\":\"two\"}");

  /* older and equal events never overwrite the newer snapshot */
  CHECK_RC(ESG_STALE, collect(c, "{\"id\":\"e1\",\"type\":\"t\",\"timestamp\":1000,\"thing\":{\"id\":\"t1\",\"name\":\"one\"}}", &key));
  CHECK_STR(key, "thing/t1");
  CHECK_RC(ESG_STALE, collect(c, "{\"id\":\"e2b\",\"type\":\"t\",\"timestamp\":2000,\"thing\":{\"id\":\"t1\",\"name\":\"dup\"}}", NULL));
  EXPECT(c, "thing/t1", ESG_CACHE_HIT, ns("{\"id\":\"t1\",\"name\":\"two\"}"));
  CHECK_RC(ESG_OK, collect(c, "{\"id\":\"e3\",\"type\":\"t\",\"timestamp\":3000,\"thing\":{\"id\":\"t1\",\"name\":\"three\"}}", NULL));
  EXPECT(c, "thing/t1", ESG_CACHE_HIT, ns("{\"id\":\"t1\",\"name\":\"three\"}"));

  /* integer ids; a put (version = write time) is newer than events from before it */
  CHECK_RC(ESG_OK, collect(c, "{\"id\":\"e4\",\"type\":\"t\",\"timestamp\":1,\"order\":{\"id\":42}}", &key));
  CHECK_STR(key, "order/42");
  CHECK_RC(ESG_OK, esg_cache_put(c, "order/42", "{\"id\":42,\"loaded\":true}", 23, 0));
  CHECK_RC(ESG_STALE, collect(c, "{\"id\":\"e5\",\"type\":\"t\",\"timestamp\":5,\"order\":{\"id\":42}}", NULL));
  CHECK_RC(ESG_OK, collect(c, "{\"id\":\"e6\",\"type\":\"t\",\"timestamp\":1700000000001,\"order\":{\"id\":42}}", NULL));
  EXPECT(c, "order/42", ESG_CACHE_HIT, ns("{\"id\":42}"));

  /* no entity, two entities, no id: nothing written */
  CHECK_RC(ESG_NOT_FOUND, collect(c, "{\"id\":\"n1\",\"type\":\"t\",\"timestamp\":1,\"tags\":{\"id\":\"x\"},\"n\":3}", &key));
  CHECK(key == NULL);
  CHECK_CONTAINS(esg_errmsg(c), "carries no entity");
  CHECK_RC(ESG_EEVENT, collect(c, "{\"id\":\"n2\",\"type\":\"t\",\"timestamp\":1,\"a\":{\"id\":1},\"b\":{\"id\":2}}", NULL));
  CHECK_CONTAINS(esg_errmsg(c), "collect_field");
  CHECK_RC(ESG_EEVENT, collect(c, "{\"id\":\"n3\",\"type\":\"t\",\"timestamp\":1,\"a\":{\"name\":1}}", NULL));
  CHECK_CONTAINS(esg_errmsg(c), "\"id\"");
  CHECK_RC(ESG_EEVENT, collect(c, "{\"id\":\"n4\",\"type\":\"t\",\"timestamp\":1,\"a\":{\"id\":1.5}}", NULL));
  CHECK_RC(ESG_EEVENT, collect(c, "{\"id\":\"n5\",\"type\":\"t\",\"timestamp\":1,\"a\":{\"id\":\"\"}}", NULL));
  EXPECT(c, "a/1", ESG_CACHE_MISS, NULL);
  EXPECT(c, "b/2", ESG_CACHE_MISS, NULL);
  CHECK_RC(ESG_EINVAL, esg_cache_collect(c, NULL, NULL));

  /* a configured field, id member and version field */
  c = reopen(c, s, &(esg_cache_opts){.size = sizeof(esg_cache_opts), .collect_field = "after", .collect_id_field = "sku", .version_field = "rev"});
  CHECK_RC(ESG_OK, collect(c, "{\"id\":\"v1\",\"type\":\"t\",\"timestamp\":9000,\"before\":{\"sku\":\"A\",\"rev\":4},"
                              "\"after\":{\"sku\":\"A\",\"rev\":5}}", &key));
  CHECK_STR(key, "after/A");
  CHECK_RC(ESG_OK, esg_cache_get(c, "after/A", &e));
  CHECK(e.version == 5);
  /* a later event with an older revision is stale, whatever its timestamp */
  CHECK_RC(ESG_STALE, collect(c, "{\"id\":\"v2\",\"type\":\"t\",\"timestamp\":9999,\"after\":{\"sku\":\"A\",\"rev\":4}}", NULL));
  CHECK_RC(ESG_OK, collect(c, "{\"id\":\"v3\",\"type\":\"t\",\"timestamp\":1,\"after\":{\"sku\":\"A\",\"rev\":6}}", NULL));
  CHECK_RC(ESG_EEVENT, collect(c, "{\"id\":\"v4\",\"type\":\"t\",\"timestamp\":1,\"after\":{\"sku\":\"A\"}}", NULL));
  CHECK_CONTAINS(esg_errmsg(c), "rev");
  CHECK_RC(ESG_EEVENT, collect(c, "{\"id\":\"v5\",\"type\":\"t\",\"timestamp\":1,\"after\":[1]}", NULL));
  CHECK_RC(ESG_NOT_FOUND, collect(c, "{\"id\":\"v6\",\"type\":\"t\",\"timestamp\":1,\"before\":{\"sku\":\"A\",\"rev\":9}}", NULL));
  /* with a version field, a put's version comes from the value */
  CHECK_RC(ESG_OK, esg_cache_put(c, "after/B", "{\"sku\":\"B\",\"rev\":10}", 20, 0));
  CHECK_RC(ESG_STALE, collect(c, "{\"id\":\"v7\",\"type\":\"t\",\"timestamp\":1,\"after\":{\"sku\":\"B\",\"rev\":10}}", NULL));
  CHECK_RC(ESG_OK, collect(c, "{\"id\":\"v8\",\"type\":\"t\",\"timestamp\":1,\"after\":{\"sku\":\"B\",\"rev\":11}}", NULL));

  /* an entity over max_value_bytes */
  c = reopen(c, s, &(esg_cache_opts){.size = sizeof(esg_cache_opts), .max_value_bytes = 16});
  CHECK_RC(ESG_ETOOBIG, collect(c, "{\"id\":\"w1\",\"type\":\"t\",\"timestamp\":1,\"w\":{\"id\":\"x\",\"pad\":\"0123456789\"}}", NULL));
  EXPECT(c, "w/x", ESG_CACHE_MISS, NULL);
  close_all(c, s);
}

/* --------------------------------------------------------------- bad input -- */

static void test_bad_input(void) {
  int64_t now = T0;
  esg_store *s = tu_open(tu_store("cache-bad.db"), &now);
  esg_cache *c = NULL;
  esg_cache_opts o = ESG_CACHE_OPTS_INIT;

  CHECK_RC(ESG_EINVAL, esg_cache_open(NULL, s, NULL));
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, NULL, NULL));
  CHECK(c == NULL);
  o.ttl_ms = -1;
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, s, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "ttl_ms");
  o = (esg_cache_opts){.size = sizeof(esg_cache_opts), .max_stale_ms = -2};
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, s, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "max_stale_ms");
  o = (esg_cache_opts){.size = sizeof(esg_cache_opts), .mem_bytes = -5};
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, s, &o));
  o = (esg_cache_opts){.size = sizeof(esg_cache_opts), .collect_field = ""};
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, s, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "collect_field");
  o = (esg_cache_opts){.size = sizeof(esg_cache_opts), .no_json_check = 7};
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, s, &o));
  CHECK(c == NULL);

  o = (esg_cache_opts){.size = sizeof(esg_cache_opts), .max_value_bytes = 32};
  c = open_cache(s, &o);
  CHECK_RC(ESG_OK, esg_cache_put(c, "k", "{\"good\":1}", 10, 0));
  esg_cache_entry e;
  ldr l = {0};

  CHECK_RC(ESG_EINVAL, esg_cache_get(NULL, "k", &e));
  CHECK_RC(ESG_EINVAL, esg_cache_get(c, NULL, &e));
  CHECK_CONTAINS(esg_errmsg(c), "cache key is NULL");
  CHECK_RC(ESG_EINVAL, esg_cache_get(c, "", &e));
  CHECK_CONTAINS(esg_errmsg(c), "cache key is empty");
  CHECK_RC(ESG_EINVAL, esg_cache_get(c, "k", NULL));
  CHECK_CONTAINS(esg_errmsg(c), "out is NULL");
  char longkey[ESG_KEY_MAX + 2];
  memset(longkey, 'x', sizeof longkey - 1);
  longkey[sizeof longkey - 1] = '\0';
  CHECK_RC(ESG_ETOOBIG, esg_cache_get(c, longkey, &e));
  CHECK_CONTAINS(esg_errmsg(c), "limit");
  CHECK_RC(ESG_ETOOBIG, esg_cache_put(c, longkey, "1", 1, 0));
  CHECK_RC(ESG_ETOOBIG, esg_cache_put_negative(c, longkey, 0));
  CHECK_RC(ESG_ETOOBIG, esg_cache_invalidate(c, longkey));
  CHECK_RC(ESG_ETOOBIG, esg_cache_get_or_load(c, longkey, loader, &l, &e));
  longkey[ESG_KEY_MAX] = '\0'; /* exactly the limit is fine */
  CHECK_RC(ESG_OK, esg_cache_put(c, longkey, "1", 1, 0));
  EXPECT(c, longkey, ESG_CACHE_HIT, ns("1"));

  CHECK_RC(ESG_EINVAL, esg_cache_put(c, "", "1", 1, 0));
  CHECK_RC(ESG_EINVAL, esg_cache_put(c, NULL, "1", 1, 0));
  CHECK_RC(ESG_EINVAL, esg_cache_put(c, "k", NULL, 1, 0));
  CHECK_CONTAINS(esg_errmsg(c), "NULL");
  CHECK_RC(ESG_EINVAL, esg_cache_put(c, "k", "1", 1, -5));
  CHECK_CONTAINS(esg_errmsg(c), "ttl");
  CHECK_RC(ESG_EINVAL, esg_cache_put_negative(c, "k", -1));
  CHECK_RC(ESG_ETOOBIG, esg_cache_put(c, "k", "\"0123456789012345678901234567890123\"", 36, 0));
  CHECK_CONTAINS(esg_errmsg(c), "36 bytes");
  CHECK_RC(ESG_EJSON, esg_cache_put(c, "k", "not json", 8, 0));
  CHECK_CONTAINS(esg_errmsg(c), "not JSON");
  CHECK_CONTAINS(esg_errmsg(c), "\"k\"");
  CHECK_RC(ESG_EJSON, esg_cache_put(c, "k", "{\"a\":1} x", 9, 0)); /* trailing garbage */
  CHECK_RC(ESG_EJSON, esg_cache_put(c, "k", "{\"a\":", 5, 0));
  CHECK_RC(ESG_EJSON, esg_cache_put(c, "k", "", 0, 0));
  CHECK_RC(ESG_EJSON, esg_cache_put(c, "k", "{\"a\":1}\0", 8, 0));
  CHECK_RC(ESG_OK, esg_cache_put(c, "ws", " [1, 2]\n", 8, 0)); /* white space around is fine */
  CHECK_RC(ESG_EINVAL, esg_cache_get_or_load(c, "k", NULL, &l, &e));
  CHECK_CONTAINS(esg_errmsg(c), "loader is NULL");
  CHECK_RC(ESG_EINVAL, esg_cache_get_or_load(c, "", loader, &l, &e));
  CHECK_RC(ESG_EINVAL, esg_cache_get_or_load(c, "k", loader, &l, NULL));
  CHECK_RC(ESG_EINVAL, esg_cache_put(NULL, "k", "1", 1, 0));
  CHECK_RC(ESG_EINVAL, esg_cache_put_negative(NULL, "k", 0));
  CHECK_RC(ESG_EINVAL, esg_cache_invalidate(NULL, "k"));
  CHECK_RC(ESG_EINVAL, esg_cache_get_or_load(NULL, "k", loader, &l, &e));
  CHECK_RC(ESG_EINVAL, esg_cache_collect(NULL, NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_cache_stats_get(NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_cache_stats_get(c, NULL));
  CHECK_RC(ESG_EINVAL, esg_cache_purge(NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_cache_load_set(NULL, "1", 1, 0));
  esg_cache_load_error(NULL, "ignored");
  CHECK(atomic_load(&l.calls) == 0);

  /* after all of that the stored state is as it was */
  EXPECT(c, "k", ESG_CACHE_HIT, ns("{\"good\":1}"));
  c = reopen(c, s, NULL); /* and in the store tier, not just in memory */
  EXPECT(c, "k", ESG_CACHE_HIT, ns("{\"good\":1}"));
  CHECK(stats(c).mem_hits == 0);
  close_all(c, s);
}

/* With the real clock the memory tier reads a coarse clock plus a guard band: never late. */
static void test_real_clock(void) {
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("cache-real.db"), NULL));
  esg_cache *c = open_cache(s, NULL);
  CHECK_RC(ESG_OK, esg_cache_put(c, "long", "1", 1, 60000));
  EXPECT(c, "long", ESG_CACHE_HIT, ns("1"));
  CHECK(stats(c).mem_hits == 1);
  /* 1 ms of freshness is inside the guard band: answered by the store and its precise clock */
  CHECK_RC(ESG_OK, esg_cache_put(c, "brief", "2", 1, 1));
  esg_cache_entry e;
  CHECK_RC(ESG_OK, esg_cache_get(c, "brief", &e));
  CHECK(e.result == ESG_CACHE_HIT || e.result == ESG_CACHE_STALE);
  CHECK(stats(c).mem_hits == 1);
  close_all(c, s);
}

int main(void) {
  TU_SUITE {
    RUN(test_outcomes);
    RUN(test_ttl);
    RUN(test_read_through);
    RUN(test_stale_if_error);
    RUN(test_single_flight);
    RUN(test_follower_timeout);
    RUN(test_lru);
    RUN(test_restart);
    RUN(test_coherence);
    RUN(test_collect);
    RUN(test_bad_input);
    RUN(test_real_clock);
  }
  return tu_done();
}
