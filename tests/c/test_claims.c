/* Claims: every outcome of the contract, with time moved by the fake clock. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "esg/egress.h"
#include "httpd.c"
#include "testutil.h"

static const uint8_t H1[32] = {1}, H2[32] = {2};
#define LEASE 1000
#define TTL 60000

static void test_lifecycle(void) {
  int64_t now = 1000000;
  esg_store *s = tu_open(tu_store("life.db"), &now);
  esg_claim_info c, d;
  CHECK_RC(ESG_NEW, esg_claim(s, "k1", H1, 32, LEASE, TTL, &c));
  CHECK(c.token != 0);
  CHECK(c.attempts == 1);
  CHECK(c.lease_until == now + LEASE);
  CHECK(c.expires == now + TTL);
  /* in progress, lease running: busy for anyone else */
  CHECK_RC(ESG_BUSY, esg_claim(s, "k1", H1, 32, LEASE, TTL, &d));
  CHECK(d.lease_until == now + LEASE);
  CHECK_RC(ESG_OK, esg_complete(s, "k1", c.token, "result-1", 8));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k1", H1, 32, LEASE, TTL, &d));
  CHECK(d.result_len == 8 && memcmp(d.result, "result-1", 8) == 0);
  /* completed is terminal: complete, release and extend are refused, nothing changes */
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "k1", c.token, "other", 5));
  CHECK_CONTAINS(esg_errmsg(s), "no longer owns");
  CHECK_RC(ESG_ETOKEN, esg_release(s, "k1", c.token));
  CHECK_RC(ESG_ETOKEN, esg_claim_extend(s, "k1", c.token, LEASE));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k1", H1, 32, LEASE, TTL, &d));
  CHECK(d.result_len == 8 && memcmp(d.result, "result-1", 8) == 0);
  /* the ttl runs from completion; after it the key is new again */
  now += TTL - 1;
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k1", H1, 32, LEASE, TTL, NULL));
  now += 1;
  CHECK_RC(ESG_NEW, esg_claim(s, "k1", H1, 32, LEASE, TTL, &d));
  CHECK(d.attempts == 1);
  CHECK(d.token != c.token);
  esg_store_close(s);
}

static void test_results(void) {
  int64_t now = 5000;
  esg_store *s = tu_open(tu_store("results.db"), &now);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "none", NULL, 0, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "none", c.token, NULL, 0));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "none", NULL, 0, LEASE, TTL, &c));
  CHECK(c.result == NULL && c.result_len == 0);
  CHECK_RC(ESG_NEW, esg_claim(s, "empty", NULL, 0, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "empty", c.token, "", 0));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "empty", NULL, 0, LEASE, TTL, &c));
  CHECK(c.result != NULL && c.result_len == 0);
  /* binary results survive byte for byte */
  const char bin[4] = {0, 1, 0, 2};
  CHECK_RC(ESG_NEW, esg_claim(s, "bin", NULL, 0, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "bin", c.token, bin, 4));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "bin", NULL, 0, LEASE, TTL, &c));
  CHECK(c.result_len == 4 && memcmp(c.result, bin, 4) == 0);
  esg_store_close(s);
}

static void test_mismatch(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("mismatch.db"), &now);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_EMISMATCH, esg_claim(s, "k", H2, 32, LEASE, TTL, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "different payload");
  CHECK_RC(ESG_OK, esg_complete(s, "k", c.token, "r", 1));
  CHECK_RC(ESG_EMISMATCH, esg_claim(s, "k", H2, 32, LEASE, TTL, NULL));
  CHECK_RC(ESG_EMISMATCH, esg_claim(s, "k", H1, 16, LEASE, TTL, NULL)); /* a prefix is not the same hash */
  /* no hash given: the check is skipped */
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k", NULL, 0, LEASE, TTL, NULL));
  /* a mismatch after the lease ran out is still a mismatch, not a takeover */
  CHECK_RC(ESG_NEW, esg_claim(s, "k2", H1, 32, LEASE, TTL, &c));
  now += LEASE + 1;
  CHECK_RC(ESG_EMISMATCH, esg_claim(s, "k2", H2, 32, LEASE, TTL, NULL));
  CHECK_RC(ESG_OK, esg_complete(s, "k2", c.token, NULL, 0));
  esg_store_close(s);
}

static void test_takeover(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("takeover.db"), &now);
  esg_claim_info a, b, c;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &a));
  now += LEASE - 1;
  CHECK_RC(ESG_BUSY, esg_claim(s, "k", H1, 32, LEASE, TTL, NULL));
  now += 1; /* the owner "crashed": its lease ran out */
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &b));
  CHECK(b.attempts == 2);
  CHECK(b.token != a.token);
  /* the old owner is fenced off */
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "k", a.token, "late", 4));
  CHECK_RC(ESG_ETOKEN, esg_release(s, "k", a.token));
  CHECK_RC(ESG_ETOKEN, esg_claim_extend(s, "k", a.token, LEASE));
  /* a third takeover counts on */
  now += LEASE;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &c));
  CHECK(c.attempts == 3);
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "k", b.token, "x", 1));
  CHECK_RC(ESG_OK, esg_complete(s, "k", c.token, "final", 5));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "k", H1, 32, LEASE, TTL, &c));
  CHECK(c.result_len == 5 && memcmp(c.result, "final", 5) == 0);
  /* extend keeps a slow owner's claim */
  CHECK_RC(ESG_NEW, esg_claim(s, "slow", H1, 32, LEASE, TTL, &a));
  now += LEASE - 10;
  CHECK_RC(ESG_OK, esg_claim_extend(s, "slow", a.token, LEASE));
  now += 500;
  CHECK_RC(ESG_BUSY, esg_claim(s, "slow", H1, 32, LEASE, TTL, NULL));
  /* an owner whose lease ran out but was not taken over may still finish */
  now += LEASE;
  CHECK_RC(ESG_OK, esg_complete(s, "slow", a.token, NULL, 0));
  esg_store_close(s);
}

static void test_release_and_expiry(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("release.db"), &now);
  esg_claim_info a, b;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &a));
  CHECK_RC(ESG_ETOKEN, esg_release(s, "k", a.token + 1));
  CHECK_RC(ESG_OK, esg_release(s, "k", a.token));
  CHECK_RC(ESG_ETOKEN, esg_release(s, "k", a.token));
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "k", a.token, NULL, 0));
  /* released: a retry is new, with a new token */
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H2, 32, LEASE, TTL, &b));
  CHECK(b.attempts == 1 && b.token != a.token);
  /* an in-progress record past its ttl counts as absent; its owner can no longer finish */
  CHECK_RC(ESG_NEW, esg_claim(s, "t", H1, 32, 10 * TTL, TTL, &a));
  now += TTL;
  CHECK_RC(ESG_ETOKEN, esg_complete(s, "t", a.token, NULL, 0));
  CHECK_RC(ESG_NEW, esg_claim(s, "t", H2, 32, LEASE, TTL, &b)); /* no mismatch with an expired record */
  CHECK(b.attempts == 1);
  /* purge removes only expired records */
  now += TTL;
  int64_t n = -1;
  CHECK_RC(ESG_NEW, esg_claim(s, "fresh", H1, 32, LEASE, TTL, NULL));
  CHECK_RC(ESG_OK, esg_claims_purge(s, &n));
  CHECK(n == 2); /* k and t */
  CHECK_RC(ESG_BUSY, esg_claim(s, "fresh", H1, 32, LEASE, TTL, NULL));
  esg_store_close(s);
}

static void test_bad_input(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("bad.db"), &now);
  char big[ESG_KEY_MAX + 2];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_RC(ESG_EINVAL, esg_claim(s, NULL, H1, 32, LEASE, TTL, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "claim key is NULL");
  CHECK_RC(ESG_EINVAL, esg_claim(s, "", H1, 32, LEASE, TTL, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "claim key is empty");
  CHECK_RC(ESG_ETOOBIG, esg_claim(s, big, H1, 32, LEASE, TTL, NULL));
  CHECK_RC(ESG_EINVAL, esg_claim(s, "k", H1, ESG_HASH_MAX + 1, LEASE, TTL, NULL));
  CHECK_RC(ESG_EINVAL, esg_claim(s, "k", NULL, 32, LEASE, TTL, NULL));
  CHECK_RC(ESG_EINVAL, esg_claim(s, "k", H1, 32, 0, TTL, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "lease");
  CHECK_RC(ESG_EINVAL, esg_claim(s, "k", H1, 32, LEASE, -1, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "ttl");
  CHECK_RC(ESG_EINVAL, esg_complete(s, "k", 1, NULL, 3));
  CHECK_RC(ESG_EINVAL, esg_claim_wait(s, "k", H1, 32, LEASE, TTL, -1, NULL));
  CHECK_RC(ESG_EINVAL, esg_claim(NULL, "k", H1, 32, LEASE, TTL, NULL));
  CHECK_RC(ESG_EINVAL, esg_complete(NULL, "k", 1, NULL, 0));
  CHECK_RC(ESG_EINVAL, esg_claims_purge(NULL, NULL));
  /* nothing was written by any of those */
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, NULL));
  esg_store_close(s);
}

static void test_wait(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("wait.db"), &now);
  esg_claim_info a, b;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &a));
  /* nobody finishes: the wait gives up with BUSY */
  CHECK_RC(ESG_BUSY, esg_claim_wait(s, "k", H1, 32, LEASE, TTL, 30, &b));
  CHECK_RC(ESG_BUSY, esg_claim_wait(s, "k", H1, 32, LEASE, TTL, 0, &b));
  /* the holder finishes: the waiter sees the duplicate */
  CHECK_RC(ESG_OK, esg_complete(s, "k", a.token, "done", 4));
  CHECK_RC(ESG_DUPLICATE, esg_claim_wait(s, "k", H1, 32, LEASE, TTL, 30, &b));
  CHECK(b.result_len == 4);
  esg_store_close(s);
}

#define FOREVER INT64_MAX

/* A lease, a ttl and an extension of "forever" on store s (its clock at *now). */
static void forever_on(esg_store *s, int64_t *now) {
  esg_claim_info a, b;
  CHECK_RC(ESG_NEW, esg_claim(s, "f", H1, 32, FOREVER, FOREVER, &a));
  CHECK(a.lease_until == FOREVER && a.expires == FOREVER);
  *now += 1000 * TTL;
  CHECK_RC(ESG_BUSY, esg_claim(s, "f", H1, 32, LEASE, TTL, &b)); /* not a second owner */
  CHECK(b.token == a.token && b.lease_until == FOREVER);
  CHECK_RC(ESG_OK, esg_complete(s, "f", a.token, "once", 4));
  *now += 1000 * TTL;
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "f", H1, 32, FOREVER, FOREVER, &b));
  CHECK(b.result_len == 4 && memcmp(b.result, "once", 4) == 0);
  CHECK(b.expires == FOREVER);
  /* an extension forever, from a short lease */
  CHECK_RC(ESG_NEW, esg_claim(s, "x", H1, 32, LEASE, FOREVER, &a));
  CHECK_RC(ESG_OK, esg_claim_extend(s, "x", a.token, FOREVER));
  *now += 10 * LEASE;
  CHECK_RC(ESG_BUSY, esg_claim(s, "x", H1, 32, LEASE, TTL, &b));
  CHECK(b.lease_until == FOREVER);
  CHECK_RC(ESG_OK, esg_complete(s, "x", a.token, NULL, 0));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "x", H1, 32, LEASE, TTL, NULL));
}

typedef struct finisher {
  esg_store *s;
  const char *key;
  int64_t token;
  int rc;
} finisher;

static void *finish_later(void *arg) {
  finisher *f = arg;
  usleep(50000);
  f->rc = esg_complete(f->s, f->key, f->token, "late", 4);
  return NULL;
}

/*
 * INT64_MAX ("forever") as a lease, a ttl, an extension or a wait: the sums with
 * the clock are held at INT64_MAX rather than wrapping negative, which made a
 * held key look expired (a second owner: the same event processed twice) and
 * a wait end at once. Both without and with group commit (the pending claims).
 */
static void test_forever(void) {
  int64_t now = 1000000;
  esg_store *s = tu_open(tu_store("forever.db"), &now);
  forever_on(s, &now);
  esg_store_close(s);
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  o.group_commit_ms = 1000000;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("forever-group.db"), &o));
  CHECK_RC(ESG_NEW, esg_claim(s, "opens-the-group", NULL, 0, LEASE, TTL, NULL));
  forever_on(s, &now);
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "f", H1, 32, LEASE, TTL, NULL));
  esg_store_close(s);
  /* a wait of forever lasts until the holder finishes (another handle, on a thread) */
  if (!tu_store_shared()) {
    tu_skip_part("a wait on another handle", TU_NOT_SHARED);
    return;
  }
  char path[4400];
  snprintf(path, sizeof path, "%s", tu_store("forever-wait.db"));
  esg_store *holder = tu_open(path, &now), *waiter = tu_open(path, &now);
  esg_claim_info a, b;
  CHECK_RC(ESG_NEW, esg_claim(holder, "w", NULL, 0, 600000, TTL, &a));
  finisher f = {holder, "w", a.token, -100};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, finish_later, &f) == 0);
  CHECK_RC(ESG_DUPLICATE, esg_claim_wait(waiter, "w", NULL, 0, LEASE, TTL, FOREVER, &b));
  pthread_join(t, NULL);
  CHECK_RC(ESG_OK, f.rc);
  esg_store_close(waiter);
  esg_store_close(holder);
}

typedef struct outcomes {
  int n;
  char id[8][16];
  int outcome[8], store_rc[8];
} outcomes;

static void on_done(void *ud, const esg_egress_result *r) {
  outcomes *o = ud;
  if (o->n >= 8) return;
  snprintf(o->id[o->n], sizeof o->id[0], "%s", r->event_id);
  o->outcome[o->n] = r->outcome;
  o->store_rc[o->n] = r->store_rc;
  o->n++;
}

/* In a child process: claims n keys, delivers them, and drains the engine while no file may grow. */
static int deliver_unable_to_grow(const char *path, int n, int group) {
  int before = tu_failures;
  httpd *h = httpd_start();
  CHECK(h != NULL);
  if (!h) return 1;
  char url[256];
  httpd_url(h, "/deliver", url, sizeof url);
  int64_t now = 1000;
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.clock = tu_clock;
  so.clock_ud = &now;
  if (group) {
    so.group_commit_ms = 1000000;
    so.group_commit_max = 1; /* each turn's batch makes its group due */
  }
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &so));
  if (!s) return 1;
  outcomes got = {0};
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  eo.clock = tu_clock;
  eo.clock_ud = &now;
  eo.on_done = on_done;
  eo.ud = &got;
  esg_egress *e = NULL;
  CHECK_RC(ESG_OK, esg_egress_open(&e, s, &eo));
  for (int i = 0; i < n && e; i++) {
    char id[16];
    snprintf(id, sizeof id, "evt-%d", i);
    esg_claim_info c;
    CHECK_RC(ESG_NEW, esg_claim(s, id, NULL, 0, 600000, 3600000, &c));
    esg_egress_request r = {.event_id = id, .url = url, .body = "{}", .body_len = 2, .claim_key = id,
                            .claim_token = c.token};
    CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  }
  CHECK_RC(ESG_OK, esg_store_flush(s));
  /* the claims are committed; the completions' commit must append to the log, and cannot */
  CHECK(tu_no_file_growth() == 0);
  if (e) CHECK_RC(ESG_OK, esg_egress_drain(e));
  tu_file_growth();
  CHECK(got.n == n);
  CHECK(httpd_count(h) == n); /* they were delivered */
  for (int i = 0; i < got.n; i++) {
    CHECK(got.outcome[i] == ESG_EGRESS_DELIVERED);
    CHECK_RC(ESG_ESTORE, got.store_rc[i]); /* not ESG_OK: nothing was stored */
  }
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  return tu_failures == before ? 0 : 1;
}

/*
 * A loop turn's completions (esg__complete_batch, which the egress engine calls:
 * the tests reach the library's internals only through it) whose commit fails: every
 * delivery reports the store error, not ESG_OK, and no claim is completed. The
 * commit fails for real: a child process may not grow any file (RLIMIT_FSIZE 0,
 * SIGXFSZ ignored), so the write-ahead log cannot take the commit's frames.
 */
static void batch_commit_fails(int group) {
  char path[4200];
  snprintf(path, sizeof path, "%s", tu_path(group ? "batch-commit-group.db" : "batch-commit.db"));
  int n = 3;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(deliver_unable_to_grow(path, n, group));
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  int64_t now = 2000;
  esg_store *s = tu_open(path, &now);
  for (int i = 0; i < n; i++) {
    char id[16];
    snprintf(id, sizeof id, "evt-%d", i);
    esg_claim_info c;
    CHECK_RC(ESG_BUSY, esg_claim(s, id, NULL, 0, 600000, 3600000, &c)); /* in progress, not completed */
    CHECK(c.result == NULL);
  }
  esg_store_close(s);
}

static void test_batch_commit_fails(void) {
  batch_commit_fails(0); /* the batch's own transaction */
  batch_commit_fails(1); /* a group the batch makes due */
}

int main(void) {
  TU_SUITE {
    RUN(test_lifecycle);
    RUN(test_results);
    RUN(test_mismatch);
    RUN(test_takeover);
    RUN(test_release_and_expiry);
    RUN(test_bad_input);
    RUN(test_wait);
    RUN(test_forever);
  }
  TU_SQLITE {
    RUN(test_batch_commit_fails); /* a commit that fails for real: the file may not grow */
  }
  return tu_done();
}
