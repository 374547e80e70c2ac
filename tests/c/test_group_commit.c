/*
 * Group commit's bounds (docs/concepts.md "Durability"). With group_commit_ms = D
 * and group_commit_max = M, the open group commits at the first call on the store
 * made once it is D ms old by the store's clock or holds M writes, whatever that
 * call is: reads, duplicate and busy claims included, not only writes.
 * esg_store_flush_due commits a due group for a loop that goes idle and says when
 * the open one falls due (0: none open). So other processes wait at most D (plus
 * their busy timeout) for the group's lock, and a SIGKILL loses no completion
 * older than D.
 *
 * Part of the conformance suite: every test runs on each store of ESG_TEST_STORES
 * that several handles and processes can share (skipped on :memory:).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "testutil.h"

#define LONG 1000000000LL /* leases and ttls that never run out here */
#define T0 1000000        /* the fake clock's start */

static int64_t real_ms(void) { return esg_clock_real(NULL); }

static void sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* A fresh store under test for name, kept in buf (tu_store's results do not last). */
static void shared_store(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s", tu_store(name)); }

/* Options: group commit (ms 0 = off), busy timeout, and the fake clock at *now (NULL = the real clock). */
static esg_store_opts opts(int group_ms, int group_max, int busy_ms, int64_t *now) {
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.group_commit_ms = group_ms;
  o.group_commit_max = group_max;
  o.busy_timeout_ms = busy_ms;
  if (now) {
    o.clock = tu_clock;
    o.clock_ud = now;
  }
  return o;
}

static esg_store *open_or_die(const char *path, esg_store_opts o) {
  esg_store *s = NULL;
  int rc = esg_store_open(&s, path, &o);
  if (rc != ESG_OK) {
    fprintf(stderr, "%sesg_store_open(%s): %s: %s\n", tu_where(), path, esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  return s;
}

static esg_event *mkev(const char *id, const char *pk) {
  char j[256];
  snprintf(j, sizeof j, "{\"id\":\"%s\",\"type\":\"t\",\"timestamp\":5,\"partitionKey\":\"%s\"}", id, pk);
  esg_event *e = NULL;
  if (esg_event_parse(j, strlen(j), &e) != ESG_OK) abort();
  return e;
}

static int put(esg_store *s, const char *id) {
  esg_event *e = mkev(id, "w");
  int rc = esg_event_put(s, e, NULL, 0);
  esg_event_free(e);
  return rc;
}

static int count_cb(void *ud, const esg_stored_event *e) {
  (void)e;
  ++*(int *)ud;
  return 0;
}

/* Whether event id is committed, as a handle that is not in the group sees it (a read, never a lock). */
static int seen(esg_store *other, const char *id) {
  int n = 0;
  int rc = esg_event_get(other, id, count_cb, &n);
  return rc == ESG_OK && n == 1;
}

/* ------------------------------------------- every call commits a due group -- */

typedef struct {
  esg_store *s; /* group commit on, fake clock */
  esg_cache *cache;
  int64_t fault_id;
} fix_t;

static int call_claim_duplicate(fix_t *f) {
  esg_claim_info c;
  int rc = esg_claim(f->s, "done", "h1", 2, LONG, LONG, &c);
  return rc == ESG_DUPLICATE && !(c.result_len == 4 && memcmp(c.result, "r-dn", 4) == 0) ? -100 : rc;
}
static int call_claim_busy(fix_t *f) { return esg_claim(f->s, "held", NULL, 0, LONG, LONG, NULL); }
static int call_claim_mismatch(fix_t *f) { return esg_claim(f->s, "done", "h2", 2, LONG, LONG, NULL); }
static int call_claim_wait(fix_t *f) { return esg_claim_wait(f->s, "done", "h1", 2, LONG, LONG, 0, NULL); }
static int call_event_put_dup(fix_t *f) { return put(f->s, "e-setup"); }
static int call_event_get(fix_t *f) {
  int n = 0;
  return esg_event_get(f->s, "e-setup", count_cb, &n);
}
static int call_event_get_missing(fix_t *f) {
  int n = 0;
  return esg_event_get(f->s, "no-such-event", count_cb, &n);
}
static int call_events_by_key(fix_t *f) {
  int n = 0;
  return esg_events_by_key(f->s, "setup", count_cb, &n);
}
static int call_entity_get(fix_t *f) {
  esg_entity en;
  return esg_entity_get(f->s, "ent", &en);
}
static int call_entity_stale(fix_t *f) { return esg_entity_upsert(f->s, "ent", 1, "{}", 2); }
static int fault_cb(void *ud, const esg_fault *x) {
  (void)x;
  ++*(int *)ud;
  return 0;
}
static int call_faults_list(fix_t *f) {
  int n = 0;
  return esg_faults_list(f->s, fault_cb, &n);
}
static int call_fault_get(fix_t *f) {
  int n = 0;
  return esg_fault_get(f->s, f->fault_id, fault_cb, &n);
}
static int call_latch_check(fix_t *f) { return esg_latch_check(f->s, "lk", "B", "nothing-pending"); }
static int call_latch_pending(fix_t *f) {
  int n = -1;
  return esg_latch_pending(f->s, "lk", "B", &n);
}
static int call_cursor_get(fix_t *f) {
  char *c = NULL;
  int rc = esg_cursor_get(f->s, "job", &c);
  esg_free(c);
  return rc;
}
static int call_cache_get_mem(fix_t *f) {
  esg_cache_entry e;
  int rc = esg_cache_get(f->cache, "cached", &e);
  return rc == ESG_OK && e.result != ESG_CACHE_HIT ? -100 : rc;
}
static int call_cache_get_store(fix_t *f) {
  esg_cache_entry e;
  int rc = esg_cache_get(f->cache, "never-cached", &e);
  return rc == ESG_OK && e.result != ESG_CACHE_MISS ? -100 : rc;
}
static int never(void *ud, const esg_stored_event *evs, size_t n) {
  (void)ud, (void)evs, (void)n;
  return 0;
}
static int call_correlate_nomatch(fix_t *f) {
  return esg_correlate(f->s, "setup", "rule", never, NULL, 0, NULL, NULL);
}
static int call_replay(fix_t *f) {
  int n = 0;
  esg_replay_filter flt = {.corr_key = "setup"};
  return esg_replay(f->s, &flt, count_cb, &n, NULL);
}
static int call_flush_due(fix_t *f) {
  int64_t next = -1;
  int rc = esg_store_flush_due(f->s, &next);
  return rc == ESG_OK && next != 0 ? -100 : rc;
}
static int call_write(fix_t *f) { return put(f->s, "e-control"); }

typedef struct {
  const char *name;
  int (*call)(fix_t *f);
  int expect;
} row_t;

static const row_t rows[] = {
    {"esg_event_put (a new event: a write, the control)", call_write, ESG_OK},
    {"esg_claim answering DUPLICATE", call_claim_duplicate, ESG_DUPLICATE},
    {"esg_claim answering BUSY", call_claim_busy, ESG_BUSY},
    {"esg_claim answering EMISMATCH", call_claim_mismatch, ESG_EMISMATCH},
    {"esg_claim_wait answering DUPLICATE", call_claim_wait, ESG_DUPLICATE},
    {"esg_event_put answering DUPLICATE", call_event_put_dup, ESG_DUPLICATE},
    {"esg_event_get", call_event_get, ESG_OK},
    {"esg_event_get answering NOT_FOUND", call_event_get_missing, ESG_NOT_FOUND},
    {"esg_events_by_key", call_events_by_key, ESG_OK},
    {"esg_entity_get", call_entity_get, ESG_OK},
    {"esg_entity_upsert answering STALE", call_entity_stale, ESG_STALE},
    {"esg_faults_list", call_faults_list, ESG_OK},
    {"esg_fault_get", call_fault_get, ESG_OK},
    {"esg_latch_check answering GENUINE", call_latch_check, ESG_LATCH_GENUINE},
    {"esg_latch_pending", call_latch_pending, ESG_OK},
    {"esg_cursor_get", call_cursor_get, ESG_OK},
    {"esg_cache_get (a memory-tier hit)", call_cache_get_mem, ESG_OK},
    {"esg_cache_get (a store-tier miss)", call_cache_get_store, ESG_OK},
    {"esg_correlate answering NOT_FOUND", call_correlate_nomatch, ESG_NOT_FOUND},
    {"esg_replay", call_replay, ESG_OK},
    {"esg_store_flush_due", call_flush_due, ESG_OK},
};

/* Counts one check, naming the call it was about when it fails. */
static void check_call(int ok, const char *call, const char *what) {
  tu_checks++;
  if (!ok) {
    tu_failures++;
    fprintf(stderr, "  %s%s: %s\n", tu_where(), call, what);
  }
}

/*
 * For each kind of call: a write opens a group (other handles do not see it), the
 * fake clock moves to exactly D after the group's first write, and the call alone
 * (no write after it) must have committed the group, while answering what it
 * answers without a group.
 */
static void test_every_call_commits_a_due_group(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  enum { D = 100 };
  int64_t now = T0;
  char path[4096];
  shared_store(path, sizeof path, "gc-every-call.db");
  esg_store *s = open_or_die(path, opts(D, 1000, 50, &now));
  esg_store *other = open_or_die(path, opts(0, 0, 50, &now));
  fix_t f = {.s = s};
  CHECK_RC(ESG_OK, esg_cache_open(&f.cache, s, NULL));
  if (!f.cache) return;

  /* what the calls read, committed */
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "done", "h1", 2, LONG, LONG, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "done", c.token, "r-dn", 4));
  CHECK_RC(ESG_NEW, esg_claim(s, "held", NULL, 0, LONG, LONG, NULL));
  esg_event *e = mkev("e-setup", "setup");
  CHECK_RC(ESG_OK, esg_event_put(s, e, NULL, 0));
  esg_event_free(e);
  CHECK_RC(ESG_OK, esg_entity_upsert(s, "ent", 5, "{\"v\":5}", 7));
  esg_fault ft = {.event_id = "e-setup", .stage = "deliver", .error = "refused"};
  CHECK_RC(ESG_OK, esg_fault_record(s, &ft, &f.fault_id));
  CHECK_RC(ESG_OK, esg_cursor_set(s, "job", "c1"));
  CHECK_RC(ESG_OK, esg_cache_put(f.cache, "cached", "{\"a\":1}", 7, LONG));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK(seen(other, "e-setup"));

  char id[32];
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const row_t *r = &rows[i];
    CHECK_RC(ESG_OK, esg_store_flush(s));
    snprintf(id, sizeof id, "w%zu", i);
    int64_t start = now;
    CHECK_RC(ESG_OK, put(s, id)); /* opens the group at start */
    check_call(!seen(other, id), r->name, "the group's write is visible before the group is due");
    now = start + D;
    int rc = r->call(&f);
    if (rc != r->expect)
      fprintf(stderr, "  %s%s returned %s, expected %s\n", tu_where(), r->name, esg_status_name(rc),
              esg_status_name(r->expect));
    check_call(rc == r->expect, r->name, "its answer changed");
    check_call(seen(other, id), r->name, "did not commit the group that was due (D old)");
    now += 1;
  }
  esg_cache_close(f.cache);
  esg_store_close(s);
  esg_store_close(other);
}

/* ------------------------------------------------------ esg_store_flush_due -- */

/* *next_ms: the open group's due time, 0 once it committed or with none open; the count bound too. */
static void test_flush_due_deadline(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  enum { D = 100 };
  int64_t now = T0;
  char path[4096];
  shared_store(path, sizeof path, "gc-flush-due.db");
  esg_store *s = open_or_die(path, opts(D, 1000, 50, &now));
  esg_store *other = open_or_die(path, opts(0, 0, 50, &now));
  int64_t next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0); /* no group open */

  CHECK_RC(ESG_OK, put(s, "x1")); /* the group opens at T0 */
  now = T0 + 10;
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == T0 + D);
  CHECK(!seen(other, "x1")); /* not due: still open */
  CHECK_RC(ESG_OK, put(s, "x2")); /* joins the group: the deadline stays the first write's */
  now = T0 + D - 1;
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == T0 + D);
  CHECK(!seen(other, "x1") && !seen(other, "x2"));
  CHECK_RC(ESG_OK, esg_store_flush_due(s, NULL)); /* NULL next_ms: fine, still not due */
  CHECK(!seen(other, "x1"));
  now = T0 + D; /* due: committed by flush_due, nothing open after it */
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);
  CHECK(seen(other, "x1") && seen(other, "x2"));
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);

  /* a later group has its own deadline; a read long past it commits it; then nothing is open */
  CHECK_RC(ESG_OK, esg_store_flush(s)); /* (nothing open: a write cannot be what commits x3) */
  now = T0 + 1000;
  CHECK_RC(ESG_OK, put(s, "x3"));
  now = T0 + 1050;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == T0 + 1000 + D);
  now = T0 + 5000;
  esg_entity en;
  CHECK_RC(ESG_NOT_FOUND, esg_entity_get(s, "nobody", &en));
  CHECK(seen(other, "x3"));
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);
  /* NULL next_ms on a due group: commits */
  CHECK_RC(ESG_OK, put(s, "x4"));
  now += D;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, NULL));
  CHECK(seen(other, "x4"));
  esg_store_close(s);

  /* the count bound: M writes make the group due without the clock moving */
  enum { M = 3 };
  s = open_or_die(path, opts(1000000, M, 50, &now));
  int64_t start = now;
  CHECK_RC(ESG_OK, put(s, "m1"));
  CHECK_RC(ESG_OK, put(s, "m2"));
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == start + 1000000); /* M - 1 writes: open, due by time only */
  CHECK(!seen(other, "m1"));
  CHECK_RC(ESG_OK, put(s, "m3"));
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);
  CHECK(seen(other, "m1") && seen(other, "m2") && seen(other, "m3"));
  /* M writes, then only a read: committed */
  CHECK_RC(ESG_OK, put(s, "m4"));
  CHECK_RC(ESG_OK, put(s, "m5"));
  CHECK_RC(ESG_OK, put(s, "m6"));
  CHECK_RC(ESG_NOT_FOUND, esg_entity_get(s, "nobody", &en));
  CHECK(seen(other, "m4") && seen(other, "m5") && seen(other, "m6"));
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);
  esg_store_close(s);
  esg_store_close(other);
}

/* Without group commit there is never a group: ESG_OK, *next_ms 0. NULL next_ms; NULL store. */
static void test_flush_due_without_group(void) {
  int64_t now = T0;
  char path[4096];
  shared_store(path, sizeof path, "gc-no-group.db");
  esg_store *s = open_or_die(path, opts(0, 0, 50, &now));
  int64_t next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);
  CHECK_RC(ESG_OK, put(s, "y1"));
  next = -1;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, &next));
  CHECK(next == 0);
  CHECK_RC(ESG_OK, esg_store_flush_due(s, NULL));
  esg_store_close(s);
  next = -1;
  CHECK_RC(ESG_EINVAL, esg_store_flush_due(NULL, &next));
  CHECK_RC(ESG_EINVAL, esg_store_flush_due(NULL, NULL));
}

/* After fork() the parent's group stays the parent's: flush_due on the inherited handle refuses, commits nothing. */
static void test_flush_due_inherited(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  enum { D = 100 };
  int64_t now = T0;
  char path[4096];
  shared_store(path, sizeof path, "gc-fork.db");
  esg_store *s = open_or_die(path, opts(D, 1000, 50, &now));
  esg_store *other = open_or_die(path, opts(0, 0, 50, &now));
  CHECK_RC(ESG_OK, put(s, "f1"));
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    now = T0 + 10 * D; /* due, in the child's copy of the clock */
    int64_t next = -1;
    int rc = esg_store_flush_due(s, &next);
    esg_store_close(s); /* frees an inherited handle without touching the parent's group */
    esg_store_close(other);
    _exit(rc == ESG_ESTATE ? 0 : 10 + (rc < 0 ? -rc : rc));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    fprintf(stderr, "  the child's esg_store_flush_due on the inherited handle: exit %d\n", WEXITSTATUS(status));
  CHECK(!seen(other, "f1"));
  now = T0 + D;
  CHECK_RC(ESG_OK, esg_store_flush_due(s, NULL));
  CHECK(seen(other, "f1"));
  esg_store_close(s);
  esg_store_close(other);
}

/* ---------------------------------------------- a due group's failed commit -- */

/*
 * In a child process: a group whose commit cannot be written (no file may grow,
 * so the log cannot take its frames). The call that finds it due, a read or
 * esg_store_flush_due, returns the commit's error in place of its own answer, and
 * the group is lost whole.
 */
static int due_commit_fails(const char *path, int by_flush_due) {
  int before = tu_failures;
  int64_t now = T0;
  esg_store *s = open_or_die(path, opts(100, 1000, 50, &now));
  CHECK_RC(ESG_OK, put(s, "lost-1"));
  CHECK_RC(ESG_OK, put(s, "lost-2"));
  CHECK(tu_no_file_growth() == 0);
  now += 100;
  if (by_flush_due) {
    int64_t next = -1;
    CHECK_RC(ESG_ESTORE, esg_store_flush_due(s, &next));
    CHECK(next == 0); /* lost: no group is open */
  } else {
    int n = 0;
    CHECK_RC(ESG_ESTORE, esg_event_get(s, "lost-1", count_cb, &n)); /* not the read's own ESG_OK */
  }
  tu_file_growth();
  esg_store_close(s);
  return tu_failures == before ? 0 : 1;
}

static void test_due_commit_failure_reported(void) {
  for (int by_flush_due = 0; by_flush_due < 2; by_flush_due++) {
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_path(by_flush_due ? "gc-fail-flush-due.db" : "gc-fail-read.db"));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(due_commit_fails(path, by_flush_due));
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    int64_t now = T0;
    esg_store *s = open_or_die(path, opts(0, 0, 50, &now));
    CHECK(!seen(s, "lost-1") && !seen(s, "lost-2"));
    esg_store_close(s);
  }
}

/* ------------------------------------- two processes: a group that only reads -- */

#define A_DELAY 100 /* the reader's group_commit_ms */
#define A_KEYS 20
#define B_BUSY 300 /* the writer's busy_timeout_ms */

typedef struct {
  int64_t first, last; /* real clock around the reader's writes */
} wrote_t;

/*
 * Process A: with group commit, claims and completes A_KEYS keys, puts an event
 * and an entity (one open group), reports, then only reads (mode 0: duplicate
 * claims, event and entity reads; mode 1: an idle loop sleeping until
 * esg_store_flush_due's deadline) until killed. It never closes the store (that
 * would commit).
 */
static void reader(const char *path, int fd, int idle) {
  esg_store *s = NULL;
  esg_store_opts o = opts(A_DELAY, 1000, 0, NULL);
  if (esg_store_open(&s, path, &o) != ESG_OK) _exit(3);
  wrote_t w = {.first = real_ms()};
  char key[32], res[32];
  for (int i = 0; i < A_KEYS; i++) {
    snprintf(key, sizeof key, "a%d", i);
    snprintf(res, sizeof res, "ra%d", i);
    esg_claim_info c;
    if (esg_claim(s, key, NULL, 0, LONG, LONG, &c) != ESG_NEW) _exit(4);
    if (esg_complete(s, key, c.token, res, strlen(res)) != ESG_OK) _exit(5);
  }
  esg_event *e = mkev("a-ev", "a");
  if (esg_event_put(s, e, NULL, 0) != ESG_OK) _exit(6);
  esg_event_free(e);
  if (esg_entity_upsert(s, "a-ent", 1, "{\"a\":1}", 7) != ESG_OK) _exit(7);
  w.last = real_ms();
  if (write(fd, &w, sizeof w) != (ssize_t)sizeof w) _exit(8);
  int64_t stop = real_ms() + 5000; /* bounded, should the parent be gone */
  while (real_ms() < stop) {
    if (idle) {
      int64_t next = 0;
      if (esg_store_flush_due(s, &next) != ESG_OK) _exit(9);
      int64_t wait = next ? next - real_ms() : 5;
      sleep_ms(wait < 1 ? 1 : wait > 50 ? 50 : wait);
    } else {
      for (int i = 0; i < A_KEYS; i++) {
        snprintf(key, sizeof key, "a%d", i);
        esg_claim(s, key, NULL, 0, LONG, LONG, NULL);
      }
      int n = 0;
      esg_event_get(s, "a-ev", count_cb, &n);
      esg_entity en;
      esg_entity_get(s, "a-ent", &en);
      sleep_ms(1);
    }
  }
  _exit(0);
}

static int read_full(int fd, void *buf, size_t len, int timeout_ms) {
  size_t got = 0;
  while (got < len) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    ssize_t r = read(fd, (char *)buf + got, len - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/*
 * A holds an open group and then only reads; B (this process) writes within
 * A_DELAY + B_BUSY without ELOCKED; a SIGKILL of A more than A_DELAY after its
 * last write loses none of its completions.
 */
static void reader_and_writer(int idle) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  char path[4096];
  shared_store(path, sizeof path, idle ? "gc-idle-writer.db" : "gc-reader-writer.db");
  esg_store_close(open_or_die(path, opts(0, 0, 0, NULL))); /* created before the race */
  int fd[2];
  if (pipe(fd) != 0) abort();
  fflush(NULL);
  pid_t a = fork();
  if (a == 0) {
    close(fd[0]);
    reader(path, fd[1], idle);
  }
  close(fd[1]);
  wrote_t w;
  int got = read_full(fd[0], &w, sizeof w, 10000);
  CHECK(got == 0);
  if (got == 0) {
    int64_t b0 = real_ms();
    esg_store *b = NULL;
    esg_store_opts bo = opts(0, 0, B_BUSY, NULL);
    int rc = esg_store_open(&b, path, &bo);
    CHECK_RC(ESG_OK, rc);
    if (rc == ESG_OK) {
      esg_claim_info c;
      CHECK_RC(ESG_NEW, rc = esg_claim(b, "b1", NULL, 0, LONG, LONG, &c));
      if (rc == ESG_NEW) CHECK_RC(ESG_OK, esg_complete(b, "b1", c.token, "rb1", 3));
      esg_event *e = mkev("b-ev", "b");
      CHECK_RC(ESG_OK, esg_event_put(b, e, NULL, 0));
      esg_event_free(e);
      int64_t took = real_ms() - b0;
      fprintf(stderr, "  %s: the writer's calls took %lld ms (it started %lld ms after A's first write)\n",
              idle ? "idle loop" : "reads", (long long)took, (long long)(b0 - w.first));
      CHECK(took <= A_DELAY + B_BUSY);
      esg_store_close(b);
    }
    /* the kill comes more than A_DELAY after A's last completion (with a margin) */
    sleep_ms(w.last + A_DELAY + 100 - real_ms());
  }
  kill(a, SIGKILL);
  int status = 0;
  waitpid(a, &status, 0);
  close(fd[0]);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  if (WIFEXITED(status)) fprintf(stderr, "  reader exited %d before the kill\n", WEXITSTATUS(status));

  esg_store *f = open_or_die(path, opts(0, 0, 1000, NULL));
  int kept = 0;
  char key[32], res[32];
  for (int i = 0; i < A_KEYS; i++) {
    snprintf(key, sizeof key, "a%d", i);
    snprintf(res, sizeof res, "ra%d", i);
    esg_claim_info c;
    int rc = esg_claim(f, key, NULL, 0, LONG, LONG, &c);
    kept += rc == ESG_DUPLICATE && c.result_len == strlen(res) && memcmp(c.result, res, c.result_len) == 0;
  }
  if (kept != A_KEYS) fprintf(stderr, "  after the kill: %d of A's %d completions kept\n", kept, A_KEYS);
  CHECK(kept == A_KEYS);
  CHECK(seen(f, "a-ev"));
  esg_entity en;
  CHECK_RC(ESG_OK, esg_entity_get(f, "a-ent", &en));
  esg_claim_info c;
  CHECK_RC(ESG_DUPLICATE, esg_claim(f, "b1", NULL, 0, LONG, LONG, &c));
  CHECK(seen(f, "b-ev"));
  esg_store_close(f);
}

static void test_reader_holds_no_lock_past_its_delay(void) { reader_and_writer(0); }
static void test_idle_loop_holds_no_lock_past_its_delay(void) { reader_and_writer(1); }

/* ------------------------------------------------------------ a SIGKILL sweep -- */

#define K_DELAY 50   /* the worker's group_commit_ms */
#define K_SLACK 100  /* scheduling margin: completions older than K_DELAY + K_SLACK must survive */
#define K_BURST 10   /* completions per burst */
#define K_IDLE 400   /* ms between bursts: reads (even bursts) or an idle flush_due loop (odd) */
#define K_KILLS 10

typedef struct {
  int32_t kind; /* 1: key n completed at t; 2: burst n done at t */
  int32_t n;
  int64_t t;
} rec_t;

static void worker(const char *path, int fd, int iter) {
  esg_store *s = NULL;
  esg_store_opts o = opts(K_DELAY, 1000, 0, NULL);
  if (esg_store_open(&s, path, &o) != ESG_OK) _exit(3);
  char key[32];
  for (int burst = 0; burst < 8; burst++) {
    for (int j = 0; j < K_BURST; j++) {
      int n = burst * K_BURST + j;
      snprintf(key, sizeof key, "d%d-%d", iter, n);
      esg_claim_info c;
      if (esg_claim(s, key, NULL, 0, LONG, LONG, &c) != ESG_NEW) _exit(4);
      if (esg_complete(s, key, c.token, key, strlen(key)) != ESG_OK) _exit(5);
      rec_t r = {1, n, real_ms()};
      if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(6);
    }
    rec_t done = {2, burst, real_ms()};
    if (write(fd, &done, sizeof done) != (ssize_t)sizeof done) _exit(6);
    int64_t until = real_ms() + K_IDLE;
    while (real_ms() < until) {
      if (burst % 2) {
        int64_t next = 0;
        if (esg_store_flush_due(s, &next) != ESG_OK) _exit(7);
        int64_t wait = next ? next - real_ms() : 5;
        sleep_ms(wait < 1 ? 1 : wait > 20 ? 20 : wait);
      } else {
        snprintf(key, sizeof key, "d%d-%d", iter, burst * K_BURST);
        esg_claim(s, key, NULL, 0, LONG, LONG, NULL); /* a duplicate */
        int n = 0;
        esg_event_get(s, "no-such-event", count_cb, &n);
        esg_entity en;
        esg_entity_get(s, "no-such-entity", &en);
        sleep_ms(1);
      }
    }
  }
  _exit(0);
}

/*
 * Kills a group-committing worker K_KILLS times, each time in the reads or idle
 * phase after its first or second burst, at a growing distance from the burst.
 * Every completion older than K_DELAY (+ K_SLACK) at the kill survives, and what
 * survives is a prefix of the completions (groups commit whole, in order).
 */
static void test_sigkill_sweep(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  char path[4096];
  shared_store(path, sizeof path, "gc-sweep.db");
  esg_store_close(open_or_die(path, opts(0, 0, 0, NULL)));
  int old_checked = 0, old_lost = 0, out_of_order = 0, kills_asserting_last_burst = 0;
  for (int i = 0; i < K_KILLS; i++) {
    int bursts = 1 + i % 2; /* even i: in a reads phase; odd i: in an idle flush_due phase */
    int64_t delay = 20 + 35 * (int64_t)i; /* after the burst */
    int fd[2];
    if (pipe(fd) != 0) abort();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      close(fd[0]);
      worker(path, fd[1], i);
    }
    close(fd[1]);
    rec_t recs[8 * (K_BURST + 1)];
    int nrec = 0, markers = 0, ok = 1;
    while (markers < bursts) {
      if (read_full(fd[0], &recs[nrec], sizeof(rec_t), 5000) != 0) {
        ok = 0;
        break;
      }
      markers += recs[nrec].kind == 2;
      nrec++;
    }
    CHECK(ok);
    sleep_ms(delay);
    int64_t killed = real_ms();
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    while (nrec < (int)(sizeof recs / sizeof recs[0]) && read_full(fd[0], &recs[nrec], sizeof(rec_t), 0) == 0) nrec++;
    close(fd[0]);

    esg_store *f = open_or_die(path, opts(0, 0, 1000, NULL));
    int missing_seen = 0, last_burst_old = 1, lost_here = 0;
    char key[32];
    for (int r = 0; r < nrec; r++) {
      if (recs[r].kind != 1) continue;
      snprintf(key, sizeof key, "d%d-%d", i, recs[r].n);
      esg_claim_info c;
      int rc = esg_claim(f, key, NULL, 0, LONG, LONG, &c);
      int kept = rc == ESG_DUPLICATE && c.result_len == strlen(key) && memcmp(c.result, key, c.result_len) == 0;
      int old = recs[r].t < killed - K_DELAY - K_SLACK;
      if (recs[r].n / K_BURST == bursts - 1 && !old) last_burst_old = 0;
      if (old) {
        old_checked++;
        if (!kept) old_lost++, lost_here++;
      }
      if (kept && missing_seen) out_of_order++;
      if (!kept) missing_seen = 1;
    }
    if (last_burst_old) kills_asserting_last_burst++;
    if (lost_here)
      fprintf(stderr, "  kill %d (%s phase, %lld ms after burst %d): %d completions older than %d ms lost\n", i,
              bursts == 1 ? "reads" : "idle flush_due", (long long)delay, bursts, lost_here, K_DELAY + K_SLACK);
    esg_store_close(f);
  }
  fprintf(stderr, "  %d kills: %d completions older than %d ms checked, %d lost; %d kills long after the last burst\n",
          K_KILLS, old_checked, K_DELAY + K_SLACK, old_lost, kills_asserting_last_burst);
  CHECK(old_lost == 0);
  CHECK(out_of_order == 0);
  CHECK(kills_asserting_last_burst >= 3); /* the sweep did test groups left open after a burst */
}

int main(void) {
  TU_SUITE {
    RUN(test_every_call_commits_a_due_group);
    RUN(test_flush_due_deadline);
    RUN(test_flush_due_without_group);
    RUN(test_flush_due_inherited);
    RUN(test_reader_holds_no_lock_past_its_delay);
    RUN(test_idle_loop_holds_no_lock_past_its_delay);
    RUN(test_sigkill_sweep);
  }
  TU_SQLITE { RUN(test_due_commit_failure_reported); }
  return tu_done();
}
