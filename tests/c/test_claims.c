/* Claims: every outcome of the contract, with time moved by the fake clock. */
#include "testutil.h"

static const uint8_t H1[32] = {1}, H2[32] = {2};
#define LEASE 1000
#define TTL 60000

static void test_lifecycle(void) {
  int64_t now = 1000000;
  esg_store *s = tu_open(tu_path("life.db"), &now);
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
  esg_store *s = tu_open(tu_path("results.db"), &now);
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
  esg_store *s = tu_open(tu_path("mismatch.db"), &now);
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
  esg_store *s = tu_open(tu_path("takeover.db"), &now);
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
  esg_store *s = tu_open(tu_path("release.db"), &now);
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
  esg_store *s = tu_open(tu_path("bad.db"), &now);
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
  const char *path = tu_path("wait.db");
  esg_store *s = tu_open(path, &now);
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

int main(void) {
  RUN(test_lifecycle);
  RUN(test_results);
  RUN(test_mismatch);
  RUN(test_takeover);
  RUN(test_release_and_expiry);
  RUN(test_bad_input);
  RUN(test_wait);
  return tu_done();
}
