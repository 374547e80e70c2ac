/*
 * Repeats of completed claims: a store may answer them from memory (the SQLite
 * backend does, sqlite_claims_cache.c), and the answers must be the table's, in
 * every field, whatever changed the claim: the fake clock passing its expiry, a
 * purge, a takeover, a rollback or a failed commit, another handle or another
 * process. No sleeps: processes take turns through pipes.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sqlite3.h>
#include "testutil.h"

static const uint8_t H1[32] = {1}, H2[32] = {2};
#define LEASE 1000
#define TTL 60000

/* The store's modes: each claim and completion committed alone, group commit, a batch. */
enum { DURABLE, GROUPED, BATCH, NMODES };
static const char *const mode_name[NMODES] = {"durable", "grouped", "batch"};

static esg_store *open_mode(const char *uri, int64_t *now, int mode) {
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = now;
  if (mode == GROUPED) {
    o.group_commit_ms = 1000000; /* the fake clock never makes it due: flushes are the test's */
    o.group_commit_max = 1000;
  }
  esg_store *s = NULL;
  int rc = esg_store_open(&s, uri, &o);
  if (rc != ESG_OK) {
    fprintf(stderr, "%sesg_store_open(%s): %s: %s\n", tu_where(), uri, esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  return s;
}

/* An answer copied out (its result points into the store's memory until the next call). */
typedef struct answer {
  int rc;
  esg_claim_info info;
  bool has_result;
  char result[64];
} answer;

static answer ask(esg_store *s, const char *key, const void *hash, size_t hash_len) {
  answer a;
  memset(&a, 0, sizeof a);
  a.rc = esg_claim(s, key, hash, hash_len, LEASE, TTL, &a.info);
  a.has_result = a.info.result != NULL;
  if (a.info.result && a.info.result_len <= sizeof a.result) memcpy(a.result, a.info.result, a.info.result_len);
  a.info.result = NULL;
  return a;
}

static bool same(const answer *a, const answer *b) {
  return a->rc == b->rc && a->info.token == b->info.token && a->info.attempts == b->info.attempts &&
         a->info.lease_until == b->info.lease_until && a->info.expires == b->info.expires &&
         a->has_result == b->has_result && a->info.result_len == b->info.result_len &&
         memcmp(a->result, b->result, a->info.result_len) == 0;
}

/* CHECK(same(got, want)), saying how they differ. */
#define CHECK_SAME(got, want) check_same(__FILE__, __LINE__, got, want)
static void check_same(const char *file, int line, const answer *got, const answer *want) {
  tu_checks++;
  if (same(got, want)) return;
  tu_failures++;
  fprintf(stderr,
          "%s:%d: %sanswers differ (got/want): rc %s/%s token %lld/%lld attempts %d/%d lease_until %lld/%lld"
          " expires %lld/%lld result %s%zu/%s%zu bytes\n",
          file, line, tu_where(), esg_status_name(got->rc), esg_status_name(want->rc), (long long)got->info.token,
          (long long)want->info.token, got->info.attempts, want->info.attempts, (long long)got->info.lease_until,
          (long long)want->info.lease_until, (long long)got->info.expires, (long long)want->info.expires,
          got->has_result ? "" : "NULL ", got->info.result_len, want->has_result ? "" : "NULL ",
          want->info.result_len);
}

static bool result_is(const answer *a, const char *r) {
  return a->has_result && a->info.result_len == strlen(r) && memcmp(a->result, r, a->info.result_len) == 0;
}

/* --------------------------------------------------------- one handle -- */

/* What a repeat reports, from the handle that completed the claim and from fresh ones. */
static void repeats_in(int mode) {
  int64_t now = 1000000;
  char uri[4200];
  snprintf(uri, sizeof uri, "%s", tu_store(mode == DURABLE ? "rep-d.db" : mode == GROUPED ? "rep-g.db" : "rep-b.db"));
  esg_store *s = open_mode(uri, &now, mode);
  if (mode == BATCH) CHECK_RC(ESG_OK, esg_store_begin(s));
  esg_claim_info a, b, c, d, x;
  CHECK_RC(ESG_NEW, esg_claim(s, "plain", H1, 32, LEASE, TTL, &a));
  CHECK_RC(ESG_NEW, esg_claim(s, "none", NULL, 0, LEASE, TTL, &b));
  CHECK_RC(ESG_NEW, esg_claim(s, "empty", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_NEW, esg_claim(s, "extended", H1, 32, LEASE, TTL, &d));
  CHECK_RC(ESG_NEW, esg_claim(s, "taken", H1, 32, LEASE, TTL, &x));
  now += 10;
  CHECK_RC(ESG_OK, esg_claim_extend(s, "extended", d.token, 5 * LEASE));
  now += LEASE; /* "taken"'s owner ran out of time */
  esg_claim_info t;
  CHECK_RC(ESG_NEW, esg_claim(s, "taken", H1, 32, LEASE, TTL, &t));
  CHECK(t.attempts == 2);
  int64_t done_at = now;
  CHECK_RC(ESG_OK, esg_complete(s, "plain", a.token, "result", 6));
  CHECK_RC(ESG_OK, esg_complete(s, "none", b.token, NULL, 0));
  CHECK_RC(ESG_OK, esg_complete(s, "empty", c.token, "", 0));
  CHECK_RC(ESG_OK, esg_complete(s, "extended", d.token, "\0bin", 4));
  CHECK_RC(ESG_OK, esg_complete(s, "taken", t.token, "second", 6));
  /* extended between its claim and its completion, with nothing else in between */
  esg_claim_info e;
  CHECK_RC(ESG_NEW, esg_claim(s, "ext2", H1, 32, LEASE, 2 * TTL, &e));
  now += 7;
  CHECK_RC(ESG_OK, esg_claim_extend(s, "ext2", e.token, 3 * LEASE));
  int64_t ext2_done = now;
  CHECK_RC(ESG_OK, esg_complete(s, "ext2", e.token, "e", 1));
  now += 5;

  static const char *const keys[] = {"plain", "none", "empty", "extended", "taken", "ext2"};
  enum { NKEYS = sizeof keys / sizeof keys[0] };
  answer first[NKEYS];
  for (int i = 0; i < NKEYS; i++) {
    first[i] = ask(s, keys[i], NULL, 0);
    CHECK_RC(ESG_DUPLICATE, first[i].rc);
    CHECK(first[i].info.expires == (i == 5 ? ext2_done + 2 * TTL : done_at + TTL)); /* the ttl runs from completion */
    for (int rep = 0; rep < 3; rep++) { /* repeats agree with the first */
      answer again = ask(s, keys[i], H1, 32);
      CHECK_SAME(&again, &first[i]);
    }
  }
  CHECK(first[0].info.token == a.token && first[0].info.attempts == 1 && first[0].info.lease_until == a.lease_until);
  CHECK(result_is(&first[0], "result"));
  CHECK(!first[1].has_result && first[1].info.result_len == 0 && first[1].info.token == b.token);
  CHECK(first[2].has_result && first[2].info.result_len == 0);
  CHECK(first[3].info.lease_until == done_at - LEASE + 5 * LEASE); /* the extended lease, as stored */
  CHECK(first[3].info.result_len == 4 && memcmp(first[3].result, "\0bin", 4) == 0);
  CHECK(first[4].info.token == t.token && first[4].info.attempts == 2 && result_is(&first[4], "second"));
  CHECK(first[5].info.token == e.token && first[5].info.lease_until == ext2_done + 3 * LEASE && result_is(&first[5], "e"));

  if (mode == BATCH) CHECK_RC(ESG_OK, esg_store_commit(s));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  for (int i = 0; i < NKEYS; i++) { /* committed: the same again */
    answer again = ask(s, keys[i], H1, 32);
    CHECK_SAME(&again, &first[i]);
  }
  if (tu_store_shared()) { /* a fresh handle reads the table: the same answers */
    esg_store *f = open_mode(uri, &now, DURABLE);
    for (int i = 0; i < NKEYS; i++) {
      answer fresh = ask(f, keys[i], H1, 32);
      CHECK_SAME(&fresh, &first[i]);
      answer again = ask(f, keys[i], H1, 32);
      CHECK_SAME(&again, &first[i]);
    }
    esg_store_close(f);
  } else {
    tu_skip_part("a fresh handle", TU_NOT_SHARED);
  }
  esg_store_close(s);
}

static void test_repeats(void) {
  for (int m = 0; m < NMODES; m++) {
    int before = tu_failures;
    repeats_in(m);
    if (tu_failures != before) fprintf(stderr, "  (in %s mode)\n", mode_name[m]);
  }
}

/* A different payload under a completed key is a mismatch, from memory as from the table. */
static void test_mismatch(void) {
  int64_t now = 1000;
  char uri[4200];
  snprintf(uri, sizeof uri, "%s", tu_store("mismatch.db"));
  esg_store *s = tu_open(uri, &now);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "k", c.token, "r", 1));
  CHECK_RC(ESG_DUPLICATE, ask(s, "k", H1, 32).rc);
  for (int rep = 0; rep < 2; rep++) {
    answer m = ask(s, "k", H2, 32);
    CHECK_RC(ESG_EMISMATCH, m.rc);
    CHECK_CONTAINS(esg_errmsg(s), "different payload");
    CHECK(m.info.token == c.token && result_is(&m, "r")); /* the record as it stands, as a read gives */
    CHECK_RC(ESG_EMISMATCH, ask(s, "k", H1, 16).rc); /* a prefix is not the same hash */
    CHECK_RC(ESG_DUPLICATE, ask(s, "k", NULL, 0).rc); /* no hash: no check */
    CHECK_RC(ESG_DUPLICATE, ask(s, "k", H1, 32).rc);
  }
  /* a completed record without a hash takes any */
  CHECK_RC(ESG_NEW, esg_claim(s, "nohash", NULL, 0, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "nohash", c.token, NULL, 0));
  CHECK_RC(ESG_DUPLICATE, ask(s, "nohash", H2, 32).rc);
  CHECK_RC(ESG_DUPLICATE, ask(s, "nohash", H1, 32).rc);
  if (tu_store_shared()) {
    esg_store *f = tu_open(uri, &now);
    answer a = ask(s, "k", H2, 32), b = ask(f, "k", H2, 32);
    CHECK_SAME(&a, &b);
    esg_store_close(f);
  }
  esg_store_close(s);
}

/* The store's clock decides expiry: the last millisecond repeats, the next one is new. */
static void test_expiry(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("expiry.db"), &now);
  esg_claim_info c, d;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &c));
  int64_t done_at = now;
  CHECK_RC(ESG_OK, esg_complete(s, "k", c.token, "one", 3));
  CHECK_RC(ESG_DUPLICATE, ask(s, "k", H1, 32).rc);
  now = done_at + TTL - 1;
  CHECK_RC(ESG_DUPLICATE, ask(s, "k", H1, 32).rc);
  CHECK_RC(ESG_EMISMATCH, ask(s, "k", H2, 32).rc);
  now = done_at + TTL;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H2, 32, LEASE, TTL, &d)); /* expired: even another payload */
  CHECK(d.attempts == 1 && d.token != c.token && d.result == NULL);
  /* the clock going back does not bring the old record back: the key is in progress */
  now = done_at + 1;
  answer a = ask(s, "k", H2, 32);
  CHECK_RC(ESG_BUSY, a.rc);
  CHECK(a.info.token == d.token);
  now = done_at + TTL + 1;
  CHECK_RC(ESG_OK, esg_complete(s, "k", d.token, "two", 3));
  a = ask(s, "k", H2, 32);
  CHECK_RC(ESG_DUPLICATE, a.rc);
  CHECK(result_is(&a, "two") && a.info.expires == done_at + TTL + 1 + TTL);
  esg_store_close(s);
}

/* A purge in this process deletes records the cache held: a clock set back must not revive them. */
static void test_purge(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("purge.db"), &now);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "old", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "old", c.token, "r", 1));
  now += TTL / 2;
  CHECK_RC(ESG_NEW, esg_claim(s, "young", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "young", c.token, "r", 1));
  CHECK_RC(ESG_DUPLICATE, ask(s, "old", H1, 32).rc);
  CHECK_RC(ESG_DUPLICATE, ask(s, "young", H1, 32).rc);
  now = 1000 + TTL;
  int64_t n = 0;
  CHECK_RC(ESG_OK, esg_claims_purge(s, &n));
  CHECK(n == 1);
  now = 1000 + 1;
  CHECK_RC(ESG_NEW, esg_claim(s, "old", H1, 32, LEASE, TTL, &c)); /* gone from the table */
  CHECK_RC(ESG_DUPLICATE, ask(s, "young", H1, 32).rc);
  esg_store_close(s);
}

/* A rolled-back batch takes its completions with it, and what was known before stays right. */
static void test_rollback(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("rollback.db"), &now);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "before", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "before", c.token, "b", 1));
  answer known = ask(s, "before", H1, 32);
  CHECK_RC(ESG_DUPLICATE, known.rc);
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_NEW, esg_claim(s, "inside", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "inside", c.token, "i", 1));
  CHECK_RC(ESG_DUPLICATE, ask(s, "inside", H1, 32).rc); /* the batch sees its own writes */
  CHECK_RC(ESG_DUPLICATE, ask(s, "before", H1, 32).rc);
  CHECK_RC(ESG_OK, esg_store_rollback(s));
  CHECK_RC(ESG_NEW, ask(s, "inside", H1, 32).rc);
  answer after = ask(s, "before", H1, 32);
  CHECK_SAME(&after, &known);
  /* and a takeover rolled back leaves the completed record as it was */
  now += TTL; /* "before" expired */
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_NEW, esg_claim(s, "before", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_store_rollback(s));
  now -= TTL;
  after = ask(s, "before", H1, 32);
  CHECK_SAME(&after, &known);
  esg_store_close(s);
}

/* More completed records than the memory holds: each repeat still gives its own result. */
static void test_many(void) {
  int64_t now = 1000;
  esg_store *s = tu_open(tu_store("many.db"), &now);
  enum { N = 400, BIG = 60000 };
  char *r = malloc(3 * BIG);
  CHECK(r != NULL);
  if (!r) return;
  CHECK_RC(ESG_OK, esg_store_begin(s));
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%d", i);
    size_t len = i % 7 == 0 ? 3 * BIG : BIG; /* some too large to keep in memory */
    memset(r, 'a' + i % 26, len);
    memcpy(r, &i, sizeof i);
    esg_claim_info c;
    CHECK_RC(ESG_NEW, esg_claim(s, key, H1, 32, LEASE, TTL, &c));
    CHECK_RC(ESG_OK, esg_complete(s, key, c.token, r, len));
  }
  CHECK_RC(ESG_OK, esg_store_commit(s));
  int bad = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < N; i++) {
      char key[32];
      snprintf(key, sizeof key, "k%d", i);
      size_t len = i % 7 == 0 ? 3 * BIG : BIG;
      esg_claim_info c;
      int rc = esg_claim(s, key, H1, 32, LEASE, TTL, &c);
      int j = -1;
      if (c.result && c.result_len >= sizeof j) memcpy(&j, c.result, sizeof j);
      bad += rc != ESG_DUPLICATE || c.result_len != len || j != i ||
             ((const char *)c.result)[len - 1] != 'a' + i % 26;
    }
  }
  CHECK(bad == 0);
  free(r);
  esg_store_close(s);
}

/* ------------------------------------------- other handles, other processes -- */

/* Another handle of this process purges and takes over what this one holds. */
static void test_other_handle(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  int64_t now = 1000, later = 1000 + 2 * TTL;
  char uri[4200];
  snprintf(uri, sizeof uri, "%s", tu_store("other-handle.db"));
  esg_store *s = tu_open(uri, &now), *o = tu_open(uri, &later);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "purged", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "purged", c.token, "r", 1));
  CHECK_RC(ESG_NEW, esg_claim(s, "taken", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "taken", c.token, "r", 1));
  CHECK_RC(ESG_DUPLICATE, ask(s, "purged", H1, 32).rc);
  CHECK_RC(ESG_DUPLICATE, ask(s, "taken", H1, 32).rc);
  esg_claim_info t;
  CHECK_RC(ESG_NEW, esg_claim(o, "taken", H2, 32, LEASE, TTL, &t));
  int64_t n = 0;
  CHECK_RC(ESG_OK, esg_claims_purge(o, &n));
  CHECK(n == 1);
  CHECK_RC(ESG_NEW, ask(s, "purged", H1, 32).rc);
  answer a = ask(s, "taken", H2, 32);
  CHECK_RC(ESG_BUSY, a.rc);
  CHECK(a.info.token == t.token && a.info.lease_until == later + LEASE);
  esg_store_close(o);

  /* a claim extended by another handle (given the token) before this one completes it,
     this one noticing the other's commit in between: the completed record has that lease */
  o = tu_open(uri, &now);
  CHECK_RC(ESG_NEW, esg_claim(s, "known", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "known", c.token, "k", 1));
  CHECK_RC(ESG_NEW, esg_claim(s, "shared", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_claim_extend(o, "shared", c.token, 7 * LEASE));
  CHECK_RC(ESG_DUPLICATE, ask(s, "known", H1, 32).rc); /* a hit: this one notices the other's commit */
  CHECK_RC(ESG_OK, esg_complete(s, "shared", c.token, "s", 1));
  answer mine = ask(s, "shared", H1, 32), theirs = ask(o, "shared", H1, 32);
  CHECK_RC(ESG_DUPLICATE, mine.rc);
  CHECK(mine.info.lease_until == now + 7 * LEASE);
  CHECK_SAME(&mine, &theirs);
  /* and without a hit in between: the next hit notices */
  CHECK_RC(ESG_NEW, esg_claim(s, "shared2", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_claim_extend(o, "shared2", c.token, 9 * LEASE));
  CHECK_RC(ESG_OK, esg_complete(s, "shared2", c.token, "s", 1));
  mine = ask(s, "shared2", H1, 32);
  theirs = ask(o, "shared2", H1, 32);
  CHECK(mine.info.lease_until == now + 9 * LEASE);
  CHECK_SAME(&mine, &theirs);
  esg_store_close(o);
  esg_store_close(s);
}

/*
 * Two processes. A (this one) holds completed claims in memory; B (a child with a
 * store of its own, and a clock past their expiry) takes one over and completes
 * it, takes another over and leaves it in progress, and purges a third: A's next
 * answers must be the table's (new, B's result, busy), not its memory's. Then A
 * learns again and B purges again. A tells B what to do through one pipe and B
 * answers through another.
 */
typedef struct order {
  char op;        /* 'c' claim, 'd' complete, 'p' purge, 'q' quit */
  char key[24];
  char result[24];
  int64_t token;
} order;
typedef struct reply {
  int rc;
  int64_t token, expires, n;
} reply;

static bool full(int fd, void *buf, size_t len, bool writing) {
  for (size_t got = 0; got < len;) {
    ssize_t r = writing ? write(fd, (char *)buf + got, len - got) : read(fd, (char *)buf + got, len - got);
    if (r <= 0) return false;
    got += (size_t)r;
  }
  return true;
}

static void b_main(const char *uri, int in, int out) {
  int64_t now = 1000 + 10 * TTL; /* past all of A's records */
  esg_store *s = NULL;
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  if (esg_store_open(&s, uri, &o) != ESG_OK) _exit(3);
  order w;
  while (full(in, &w, sizeof w, false) && w.op != 'q') {
    reply r = {0};
    esg_claim_info c = {0};
    if (w.op == 'c') {
      r.rc = esg_claim(s, w.key, H2, 32, LEASE, TTL, &c);
      r.token = c.token;
      r.expires = c.expires;
    } else if (w.op == 'd') {
      r.rc = esg_complete(s, w.key, w.token, w.result, strlen(w.result));
    } else {
      r.rc = esg_claims_purge(s, &r.n);
    }
    if (!full(out, &r, sizeof r, true)) _exit(4);
  }
  esg_store_close(s);
  _exit(0);
}

static reply tell(int fd[2], char op, const char *key, const char *result, int64_t token) {
  order w;
  memset(&w, 0, sizeof w);
  w.op = op;
  snprintf(w.key, sizeof w.key, "%s", key ? key : "");
  snprintf(w.result, sizeof w.result, "%s", result ? result : "");
  w.token = token;
  reply r = {-100, 0, 0, 0};
  if (!full(fd[1], &w, sizeof w, true) || (op != 'q' && !full(fd[0], &r, sizeof r, false)))
    fprintf(stderr, "  process B does not answer\n");
  return r;
}

static void two_processes(int mode) {
  char uri[4200];
  snprintf(uri, sizeof uri, "%s", tu_store(mode == DURABLE ? "two-proc-d.db" : "two-proc-g.db"));
  int64_t now = 1000;
  esg_store *s = open_mode(uri, &now, mode); /* created before B opens it */
  int to_b[2], to_a[2];
  if (pipe(to_b) != 0 || pipe(to_a) != 0) abort();
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    close(to_b[1]);
    close(to_a[0]);
    esg_store_close(s); /* A's, inherited: frees this copy, touches nothing */
    b_main(uri, to_b[0], to_a[1]);
  }
  close(to_b[0]);
  close(to_a[1]);
  int fd[2] = {to_a[0], to_b[1]}; /* A reads B's replies on fd[0] and writes orders on fd[1] */

  static const char *const keys[] = {"taken", "busy", "purged", "kept"};
  esg_claim_info c;
  for (int i = 0; i < 4; i++) {
    CHECK_RC(ESG_NEW, esg_claim(s, keys[i], H1, 32, LEASE, i == 3 ? 100 * TTL : TTL, &c));
    CHECK_RC(ESG_OK, esg_complete(s, keys[i], c.token, "a", 1));
  }
  CHECK_RC(ESG_OK, esg_store_flush(s)); /* (a group holds the write lock B needs) */
  for (int i = 0; i < 4; i++) CHECK_RC(ESG_DUPLICATE, ask(s, keys[i], H1, 32).rc); /* known to A */

  reply taken = tell(fd, 'c', "taken", NULL, 0);
  CHECK_RC(ESG_NEW, taken.rc);
  CHECK_RC(ESG_OK, tell(fd, 'd', "taken", "from-b", taken.token).rc);
  reply busy = tell(fd, 'c', "busy", NULL, 0);
  CHECK_RC(ESG_NEW, busy.rc);
  reply purge = tell(fd, 'p', NULL, NULL, 0);
  CHECK_RC(ESG_OK, purge.rc);
  CHECK(purge.n == 1); /* "purged" ("kept" lives on, the others B rewrote) */

  answer a = ask(s, "taken", H2, 32);
  CHECK_RC(ESG_DUPLICATE, a.rc);
  CHECK(a.info.token == taken.token && a.info.expires == 1000 + 10 * TTL + TTL && result_is(&a, "from-b"));
  CHECK_RC(ESG_EMISMATCH, ask(s, "taken", H1, 32).rc); /* B's payload now */
  a = ask(s, "busy", H2, 32);
  CHECK_RC(ESG_BUSY, a.rc);
  CHECK(a.info.token == busy.token);
  a = ask(s, "purged", H1, 32);
  CHECK_RC(ESG_NEW, a.rc);
  CHECK_RC(ESG_OK, esg_complete(s, "purged", a.info.token, "again", 5));
  a = ask(s, "kept", H1, 32);
  CHECK_RC(ESG_DUPLICATE, a.rc);
  CHECK(result_is(&a, "a"));

  /* A knows "purged" again; B purges it again (its clock is past it too) */
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, ask(s, "purged", H1, 32).rc);
  purge = tell(fd, 'p', NULL, NULL, 0);
  CHECK(purge.rc == ESG_OK && purge.n == 1);
  CHECK_RC(ESG_NEW, ask(s, "purged", H1, 32).rc);
  CHECK_RC(ESG_DUPLICATE, ask(s, "kept", H1, 32).rc);

  tell(fd, 'q', NULL, NULL, 0);
  close(fd[0]);
  close(fd[1]);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  esg_store_close(s);
}

static void test_two_processes(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  two_processes(DURABLE);
  two_processes(GROUPED);
}

/* ------------------------------------------------------- SQLite itself -- */

/* Any other connection's commit is seen, even one that edits the table behind libesg's back. */
static void test_raw_edit(void) {
  const char *path = tu_path("raw-edit.db");
  int64_t now = 1000;
  esg_store *s = tu_open(path, &now);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "k", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "k", c.token, "old", 3));
  CHECK(result_is((answer[]){ask(s, "k", H1, 32)}, "old"));
  sqlite3 *db = NULL;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "UPDATE esg_claims SET result = 'new' WHERE key = 'k'", NULL, NULL, NULL) == SQLITE_OK);
  CHECK(result_is((answer[]){ask(s, "k", H1, 32)}, "new"));
  /* this handle's own commits in between keep what it knows */
  CHECK_RC(ESG_NEW, esg_claim(s, "k2", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "k2", c.token, "x", 1));
  CHECK(result_is((answer[]){ask(s, "k", H1, 32)}, "new"));
  CHECK(sqlite3_exec(db, "DELETE FROM esg_claims WHERE key = 'k'", NULL, NULL, NULL) == SQLITE_OK);
  CHECK_RC(ESG_NEW, ask(s, "k", H1, 32).rc);
  sqlite3_close(db);
  esg_store_close(s);
}

/* A group whose commit fails for real (the file may not grow): what it completed is not repeated. */
static int group_fails_child(const char *path) {
  int before = tu_failures;
  int64_t now = 1000;
  esg_store *s = open_mode(path, &now, GROUPED);
  esg_claim_info c;
  CHECK_RC(ESG_NEW, esg_claim(s, "committed", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "committed", c.token, "c", 1));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK_RC(ESG_DUPLICATE, ask(s, "committed", H1, 32).rc);
  CHECK(tu_no_file_growth() == 0);
  CHECK_RC(ESG_NEW, esg_claim(s, "lost", H1, 32, LEASE, TTL, &c));
  CHECK_RC(ESG_OK, esg_complete(s, "lost", c.token, "l", 1));
  CHECK_RC(ESG_DUPLICATE, ask(s, "lost", H1, 32).rc); /* inside the group: its own write */
  CHECK_RC(ESG_ESTORE, esg_store_flush(s));
  tu_file_growth();
  CHECK_RC(ESG_NEW, ask(s, "lost", H1, 32).rc);
  CHECK_RC(ESG_DUPLICATE, ask(s, "committed", H1, 32).rc);
  esg_store_close(s);
  return tu_failures == before ? 0 : 1;
}

static void test_group_commit_fails(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s", tu_path("group-fails.db"));
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(group_fails_child(path));
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
  TU_SUITE {
    RUN(test_repeats);
    RUN(test_mismatch);
    RUN(test_expiry);
    RUN(test_purge);
    RUN(test_rollback);
    RUN(test_many);
    RUN(test_other_handle);
    RUN(test_two_processes);
  }
  TU_SQLITE {
    RUN(test_raw_edit);
    RUN(test_group_commit_fails);
  }
  return tu_done();
}
