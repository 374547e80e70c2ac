/*
 * The C API's growth rules (docs/c-api.md "ABI"): options structs sized by their
 * INIT macros, older and newer sizes, the checked handle header behind esg_errmsg,
 * esg_store_close's status and what it does to the handles built on the store, the
 * egress completion's store status, the allocator, and handles across fork().
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "httpd.c"
#include "testutil.h"

static int64_t now = 1700000000000;

/* Every INIT sets size to the struct's and leaves the rest zero (the defaults). */
#define CHECK_INIT(T, INIT)                                          \
  do {                                                               \
    T v_ = INIT;                                                     \
    CHECK(v_.size == sizeof(T));                                     \
    T z_;                                                            \
    memset(&z_, 0, sizeof z_);                                       \
    z_.size = sizeof(T);                                             \
    CHECK(memcmp(&v_, &z_, sizeof(T)) == 0);                         \
  } while (0)

static void test_inits(void) {
  CHECK_INIT(esg_store_opts, ESG_STORE_OPTS_INIT);
  CHECK_INIT(esg_cache_opts, ESG_CACHE_OPTS_INIT);
  CHECK_INIT(esg_egress_opts, ESG_EGRESS_OPTS_INIT);
  CHECK_INIT(esg_http_loader_opts, ESG_HTTP_LOADER_OPTS_INIT);
  CHECK_INIT(esg_resync_opts, ESG_RESYNC_OPTS_INIT);
  CHECK_INIT(esg_allocator, ESG_ALLOCATOR_INIT);
  CHECK_INIT(esg_ingress_opts, ESG_INGRESS_OPTS_INIT);
  CHECK_INIT(esg_ingress_route, ESG_INGRESS_ROUTE_INIT);
  CHECK_INIT(esg_gateway_lines_opts, ESG_GATEWAY_LINES_OPTS_INIT);
}

static void test_store_opts_sizes(void) {
  esg_store *s = NULL;
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("abi"), &o));
  esg_store_close(s);

  /* a zeroed struct never went through the INIT: refused, naming the macro */
  esg_store_opts zero;
  memset(&zero, 0, sizeof zero);
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, tu_store("abi"), &zero));
  CHECK(s == NULL);
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_STORE_OPTS_INIT");

  /* an older program's struct stops before group commit: its fields are the defaults */
  o = (esg_store_opts)ESG_STORE_OPTS_INIT;
  o.group_commit_ms = 1000; /* past the older size: must not be read */
  o.size = offsetof(esg_store_opts, group_commit_ms);
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("abi"), &o));
  CHECK_RC(ESG_NEW, esg_claim(s, "k", NULL, 0, 1000, 60000, NULL));
  int64_t next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0); /* no group open: group_commit_ms was past the older size */
  CHECK_RC(ESG_OK, esg_store_close(s));

  /* a newer program's struct: a zero tail is fine, an option set in it is refused */
  struct {
    esg_store_opts o;
    int64_t newer[2];
  } big;
  memset(&big, 0, sizeof big);
  big.o.size = sizeof big;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("abi"), &big.o));
  esg_store_close(s);
  big.newer[1] = 7;
  CHECK_RC(ESG_EINVAL, esg_store_open(&s, tu_store("abi"), &big.o));
  CHECK_CONTAINS(esg_errmsg(NULL), "does not know");
}

static void test_other_opts_sizes(void) {
  esg_store *s = tu_open(tu_store("abi"), &now);
  esg_cache *c = NULL;
  esg_cache_opts co;
  memset(&co, 0, sizeof co);
  CHECK_RC(ESG_EINVAL, esg_cache_open(&c, s, &co));
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_CACHE_OPTS_INIT");
  co.size = sizeof co;
  CHECK_RC(ESG_OK, esg_cache_open(&c, s, &co));
  esg_cache_close(c);

  esg_egress *e = NULL;
  esg_egress_opts eo;
  memset(&eo, 0, sizeof eo);
  CHECK_RC(ESG_EINVAL, esg_egress_open(&e, s, &eo));
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_EGRESS_OPTS_INIT");

  esg_http_loader *l = NULL;
  esg_http_loader_opts lo;
  memset(&lo, 0, sizeof lo);
  lo.url = "http://127.0.0.1:1/{key}";
  CHECK_RC(ESG_EINVAL, esg_http_loader_open(&l, &lo));
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_HTTP_LOADER_OPTS_INIT");

  esg_snapshot *sn = NULL;
  esg_resync_opts ro;
  memset(&ro, 0, sizeof ro);
  CHECK_RC(ESG_EINVAL, esg_snapshot_begin(&sn, s, "src", &ro));
  CHECK_CONTAINS(esg_errmsg(s), "ESG_RESYNC_OPTS_INIT");
  esg_store_close(s);
}

static void test_errmsg_checks_handles(void) {
  esg_event *ev = NULL;
  const char *j = "{\"id\":\"e1\",\"type\":\"t\",\"timestamp\":1}";
  CHECK_RC(ESG_OK, esg_event_parse(j, strlen(j), &ev));
  CHECK_CONTAINS(esg_errmsg(ev), "not an open libesg handle");
  esg_event_free(ev);
  int x = 0;
  CHECK_CONTAINS(esg_errmsg(&x), "not an open libesg handle");

  esg_store *s = tu_open(tu_store("abi"), &now);
  CHECK_RC(ESG_EINVAL, esg_claim(s, "", NULL, 0, 1, 1, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "empty");
  esg_cache *c = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&c, s, NULL));
  esg_cache_entry ent;
  CHECK_RC(ESG_EINVAL, esg_cache_get(c, "", &ent));
  CHECK_CONTAINS(esg_errmsg(c), "empty");
  esg_cache_close(c);
  esg_store_close(s);
}

/* --------------------------------------------------------------- close -- */

typedef struct closer {
  esg_store *s;
  int rc;
} closer;

static int close_from_event_cb(void *ud, const esg_stored_event *ev) {
  (void)ev;
  closer *k = ud;
  k->rc = esg_store_close(k->s);
  return 0;
}

static int64_t close_from_clock(void *ud) {
  closer *k = ud;
  if (k->s) k->rc = esg_store_close(k->s);
  return now;
}

static void test_close_from_callback_is_refused(void) {
  esg_store *s = tu_open(tu_store("abi"), &now);
  esg_event *ev = NULL;
  const char *j = "{\"id\":\"e1\",\"type\":\"t\",\"timestamp\":1,\"partitionKey\":\"p\"}";
  CHECK_RC(ESG_OK, esg_event_parse(j, strlen(j), &ev));
  CHECK_RC(ESG_OK, esg_event_put(s, ev, NULL, 0));
  esg_event_free(ev);
  closer k = {s, 99};
  CHECK_RC(ESG_OK, esg_events_by_key(s, "p", close_from_event_cb, &k));
  CHECK_RC(ESG_ESTATE, k.rc);
  CHECK_CONTAINS(esg_errmsg(s), "from a callback");
  CHECK_RC(ESG_NEW, esg_claim(s, "still-open", NULL, 0, 1000, 60000, NULL)); /* nothing was closed */
  CHECK_RC(ESG_OK, esg_store_close(s));

  /* the clock is a callback too */
  closer kc = {NULL, 99};
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = close_from_clock;
  o.clock_ud = &kc;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("abi"), &o));
  kc.s = s;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", NULL, 0, 1000, 60000, NULL));
  CHECK_RC(ESG_ESTATE, kc.rc);
  kc.s = NULL;
  CHECK_RC(ESG_OK, esg_store_close(s));
}

static void test_close_detaches_cache_and_snapshot(void) {
  const char *uri = tu_store("abi-detach");
  esg_store *s = tu_open(uri, &now);
  esg_cache *c = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&c, s, NULL));
  CHECK_RC(ESG_OK, esg_cache_put(c, "k", "{}", 2, 0));
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "src", NULL));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "a", "{\"v\":1}", 7));
  CHECK_RC(ESG_OK, esg_store_close(s));
  esg_cache_entry ent;
  CHECK_RC(ESG_ESTATE, esg_cache_get(c, "k", &ent)); /* the memory tier went with the store */
  CHECK_CONTAINS(esg_errmsg(c), "store was closed");
  CHECK_RC(ESG_ESTATE, esg_cache_put(c, "k", "{}", 2, 0));
  CHECK_RC(ESG_ESTATE, esg_snapshot_add(sn, "b", "{}", 2));
  CHECK_CONTAINS(esg_errmsg(sn), "store was closed");
  CHECK_RC(ESG_ESTATE, esg_snapshot_finish(sn, NULL));
  esg_snapshot_close(sn);
  esg_cache_close(c);

  /* the listing's open batch was rolled back: a new listing sees "a" as created again */
  TU_REQUIRE(tu_store_shared(), TU_NOT_KEPT);
  s = tu_open(uri, &now);
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "src", NULL));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "a", "{\"v\":1}", 7));
  esg_resync_stats st;
  CHECK_RC(ESG_OK, esg_snapshot_finish(sn, &st));
  CHECK(st.created == 1);
  esg_snapshot_close(sn);
  esg_store_close(s);
}

typedef struct done_log {
  int n, cancelled, last_store_rc;
  char store_error[256];
} done_log;

static void on_done(void *ud, const esg_egress_result *r) {
  done_log *d = ud;
  d->n++;
  if (r->outcome == ESG_EGRESS_CANCELLED) d->cancelled++;
  d->last_store_rc = r->store_rc;
  snprintf(d->store_error, sizeof d->store_error, "%s", r->store_error);
}

static void test_close_detaches_egress(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_KEPT);
  const char *uri = tu_store("abi-egress");
  esg_store *s = tu_open(uri, &now);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-1", NULL, 0, 60000, 600000, &ci));
  done_log d = {0};
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.on_done = on_done;
  o.ud = &d;
  esg_egress *e = NULL;
  CHECK_RC(ESG_OK, esg_egress_open(&e, s, &o));
  esg_egress_request r = {0};
  r.event_id = "evt-1";
  r.url = "http://127.0.0.1:9/never"; /* never sent: close comes first */
  r.claim_key = "evt-1";
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  CHECK_RC(ESG_OK, esg_store_close(s));
  CHECK(d.n == 1 && d.cancelled == 1);
  CHECK_RC(ESG_OK, d.last_store_rc); /* the claim was released while the store was open */
  CHECK_RC(ESG_ESTATE, esg_egress_submit(e, &r));
  CHECK_CONTAINS(esg_errmsg(e), "store was closed");
  esg_egress_close(e);
  CHECK(d.n == 1);
  s = tu_open(uri, &now);
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-1", NULL, 0, 60000, 600000, &ci)); /* released, not left busy */

  /* an open batch (here a listing's) is rolled back before the engine releases its claim */
  CHECK_RC(ESG_OK, esg_egress_open(&e, s, &o));
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "src", NULL));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "a", "{}", 2)); /* its batch is open */
  CHECK_RC(ESG_OK, esg_store_close(s));
  CHECK(d.n == 2 && d.cancelled == 2);
  esg_snapshot_close(sn);
  esg_egress_close(e);
  s = tu_open(uri, &now);
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-1", NULL, 0, 60000, 600000, NULL)); /* the release was not rolled back */
  esg_store_close(s);
}

/* A delivery whose claim was taken over reports ETOKEN and says which step failed. */
static void test_egress_reports_store_status(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_KEPT);
  httpd *h = httpd_start();
  esg_store *s = tu_open(tu_store("abi-status"), &now);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-2", NULL, 0, 60000, 600000, &ci));
  done_log d = {0};
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.on_done = on_done;
  o.ud = &d;
  esg_egress *e = NULL;
  CHECK_RC(ESG_OK, esg_egress_open(&e, s, &o));
  char url[128];
  httpd_url(h, "/in", url, sizeof url);
  esg_egress_request r = {0};
  r.event_id = "evt-2";
  r.url = url;
  r.claim_key = "evt-2";
  r.claim_token = ci.token + 1; /* not the owner's */
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(d.n == 1);
  CHECK_RC(ESG_ETOKEN, d.last_store_rc);
  CHECK_CONTAINS(d.store_error, "completing the claim");
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
}

/* ----------------------------------------------------------- allocator -- */

static size_t n_alloc;
static void *count_malloc(void *ud, size_t n) {
  (void)ud;
  n_alloc++;
  return malloc(n);
}
static void *count_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  n_alloc++;
  return realloc(p, n);
}
static void count_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

static void test_allocator(void) {
  esg_allocator a;
  memset(&a, 0, sizeof a);
  CHECK_RC(ESG_EINVAL, esg_set_allocator(&a));
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_ALLOCATOR_INIT");
  a = (esg_allocator)ESG_ALLOCATOR_INIT;
  a.malloc_fn = count_malloc;
  CHECK_RC(ESG_EINVAL, esg_set_allocator(&a));
  a.realloc_fn = count_realloc;
  a.free_fn = count_free;
  CHECK_RC(ESG_OK, esg_set_allocator(&a));
  n_alloc = 0;
  esg_store *s = tu_open(tu_store("abi"), &now);
  CHECK(n_alloc > 0);
  size_t before = n_alloc;
  esg_event *ev = NULL;
  const char *j = "{\"id\":\"e1\",\"type\":\"t\",\"timestamp\":1,\"n\":[1,2]}";
  CHECK_RC(ESG_OK, esg_event_parse(j, strlen(j), &ev)); /* cJSON's allocations come here too */
  CHECK(n_alloc > before + 1);
  esg_event_free(ev);
  esg_store_close(s);
  CHECK_RC(ESG_OK, esg_set_allocator(NULL));
  n_alloc = 0;
  s = tu_open(tu_store("abi"), &now);
  CHECK(n_alloc == 0);
  esg_store_close(s);
}

/* ------------------------------------------------------------- seconds -- */

/* The bindings' one conversion: rounded to the nearest ms, NaN, infinities and huge values refused. */
static void test_ms_from_seconds(void) {
  int64_t ms = 7;
  CHECK_RC(ESG_OK, esg_ms_from_seconds(1.5, &ms));
  CHECK(ms == 1500);
  CHECK_RC(ESG_OK, esg_ms_from_seconds(0.0004, &ms));
  CHECK(ms == 0);
  CHECK_RC(ESG_OK, esg_ms_from_seconds(0.0005, &ms)); /* halves away from zero */
  CHECK(ms == 1);
  CHECK_RC(ESG_OK, esg_ms_from_seconds(-0.0005, &ms));
  CHECK(ms == -1);
  CHECK_RC(ESG_OK, esg_ms_from_seconds(-2.25, &ms)); /* a time before the epoch */
  CHECK(ms == -2250);
  CHECK_RC(ESG_OK, esg_ms_from_seconds(ESG_SECONDS_MAX, &ms));
  CHECK(ms == INT64_C(9000000000000000000));
  CHECK_RC(ESG_OK, esg_ms_from_seconds(-ESG_SECONDS_MAX, &ms));
  CHECK(ms == -INT64_C(9000000000000000000));
  ms = 7;
  CHECK_RC(ESG_EINVAL, esg_ms_from_seconds(NAN, &ms));
  CHECK_RC(ESG_EINVAL, esg_ms_from_seconds(INFINITY, &ms));
  CHECK_RC(ESG_EINVAL, esg_ms_from_seconds(-INFINITY, &ms));
  CHECK_RC(ESG_EINVAL, esg_ms_from_seconds(9.1e15, &ms));
  CHECK_CONTAINS(esg_errmsg(NULL), "9.1e+15 seconds");
  CHECK_RC(ESG_EINVAL, esg_ms_from_seconds(-1e300, &ms));
  CHECK(ms == 7); /* untouched */
}

/* ---------------------------------------------------------------- fork -- */

/* A child's end: what it inherited is the parent's and stays unfreed on purpose, so it
   leaves by exec, which a leak checker (valgrind) does not follow. */
static void child_exit(int ok) {
  if (ok) execl("/bin/true", "true", (char *)NULL);
  _exit(1);
}

static void test_egress_refuses_child(void) {
  esg_egress *e = NULL;
  CHECK_RC(ESG_OK, esg_egress_open(&e, NULL, NULL));
  pid_t pid = fork();
  if (pid == 0) {
    esg_egress_request r = {0};
    r.event_id = "x";
    r.url = "http://127.0.0.1:9/";
    int rc = esg_egress_submit(e, &r);
    int ok = rc == ESG_ESTATE && strstr(esg_errmsg(e), "another process") != NULL;
    ok = ok && esg_egress_run(e, 0) == ESG_ESTATE;
    esg_egress_close(e); /* no callbacks, no connections touched */
    child_exit(ok);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  esg_egress_request r = {0};
  r.event_id = "x";
  r.url = "http://127.0.0.1:9/";
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r)); /* the parent's engine is unharmed */
  esg_egress_close(e);
}

/* A child forked from inside a clock callback (the parent's call counted in the store) closes
   its copy all the same, and its cache too, without writing or touching the process registry. */
typedef struct fork_clock {
  esg_store *s;
  esg_cache *c;
  int forked, child_ok;
} fork_clock;

static int64_t forking_clock(void *ud) {
  fork_clock *f = ud;
  if (f->s && !f->forked) {
    f->forked = 1;
    pid_t pid = fork();
    if (pid == 0) {
      esg_cache_entry ent;
      int ok = esg_cache_get(f->c, "k", &ent) == ESG_ESTATE;
      ok = ok && esg_store_close(f->s) == ESG_OK; /* the child is not inside the parent's call */
      ok = ok && esg_cache_get(f->c, "k", &ent) == ESG_ESTATE;
      esg_cache_close(f->c);
      child_exit(ok);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    f->child_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  return now;
}

static void test_child_closes_inside_a_callback(void) {
  fork_clock f = {0};
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = forking_clock;
  o.clock_ud = &f;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("abi-fork"), &o));
  esg_cache *c = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&c, s, NULL));
  CHECK_RC(ESG_OK, esg_cache_put(c, "k", "{}", 2, 0));
  f.s = s;
  f.c = c;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", NULL, 0, 1000, 60000, NULL));
  CHECK(f.forked && f.child_ok);
  f.s = NULL;
  esg_cache_entry ent;
  CHECK_RC(ESG_OK, esg_cache_get(c, "k", &ent)); /* the parent's are unharmed */
  CHECK(ent.result == ESG_CACHE_HIT);
  esg_cache_close(c);
  CHECK_RC(ESG_OK, esg_store_close(s));
}

int main(void) {
  RUN(test_inits);
  RUN(test_allocator);
  RUN(test_ms_from_seconds);
  RUN(test_egress_refuses_child);
  TU_SUITE {
    RUN(test_store_opts_sizes);
    RUN(test_other_opts_sizes);
    RUN(test_errmsg_checks_handles);
    RUN(test_close_from_callback_is_refused);
    RUN(test_close_detaches_cache_and_snapshot);
    RUN(test_close_detaches_egress);
    RUN(test_egress_reports_store_status);
    RUN(test_child_closes_inside_a_callback);
  }
  return tu_done();
}
