/*
 * Claims: the idempotent-consumer contract of DESIGN.md. The decision (new,
 * duplicate, busy, mismatch, takeover of a lease that ran out) is one backend
 * operation; this file checks the caller's arguments, makes the times and the
 * fencing token, and words the outcomes.
 */
#include <limits.h>
#include <string.h>
#include "store/store_int.h"

static int check_args(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms,
                      int64_t ttl_ms) {
  int rc = esg__check_key(&s->err, "claim key", key);
  if (rc != ESG_OK) return rc;
  if (hash_len > ESG_HASH_MAX)
    return esg__fail(&s->err, ESG_EINVAL, "payload hash is %zu bytes; the limit is %d", hash_len, ESG_HASH_MAX);
  if (hash_len && !hash) return esg__fail(&s->err, ESG_EINVAL, "payload hash is NULL with length %zu", hash_len);
  if (lease_ms <= 0) return esg__fail(&s->err, ESG_EINVAL, "lease must be positive (got %lld ms)", (long long)lease_ms);
  if (ttl_ms <= 0) return esg__fail(&s->err, ESG_EINVAL, "ttl must be positive (got %lld ms)", (long long)ttl_ms);
  return ESG_OK;
}

int esg_claim(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms, int64_t ttl_ms,
              esg_claim_info *out) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = check_args(s, key, hash, hash_len, lease_ms, ttl_ms);
  if (rc != ESG_OK) return rc;
  if (out) memset(out, 0, sizeof *out);
  esg__claim_req r = {key, hash_len ? hash : NULL, hash_len, esg__now(s), 0, 0, ttl_ms, esg__token(s)};
  r.lease_until = esg__time_add(r.now, lease_ms); /* a "forever" stays in the future */
  r.expires = esg__time_add(r.now, ttl_ms);
  esg__claim_row row = {0};
  rc = s->be->claim(s->b, &r, &row);
  if (rc == ESG_DUPLICATE || rc == ESG_BUSY || rc == ESG_EMISMATCH) { /* answered by a read */
    int trc = esg__tick(s);
    if (trc != ESG_OK) return trc;
  }
  if (rc < 0 && rc != ESG_EMISMATCH) return rc;
  if (out) { /* the record as it stands: the owner's token and lease for BUSY too */
    out->token = row.token;
    out->attempts = row.attempts;
    out->lease_until = row.lease_until;
    out->expires = row.expires;
    out->result = row.result;
    out->result_len = row.result_len;
  }
  if (rc == ESG_EMISMATCH)
    return esg__fail(&s->err, ESG_EMISMATCH, "claim key \"%s\" was first used with a different payload", key);
  return rc;
}

int esg_claim_wait(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms,
                   int64_t ttl_ms, int64_t wait_ms, esg_claim_info *out) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  if (wait_ms < 0) return esg__fail(&s->err, ESG_EINVAL, "wait must not be negative");
  /* Count waited time in real time: the injectable clock may stand still in tests. */
  int64_t deadline = esg__time_add(esg_clock_real(NULL), wait_ms);
  int pause = 1;
  for (;;) {
    int rc = esg_claim(s, key, hash, hash_len, lease_ms, ttl_ms, out);
    int64_t left = deadline - esg_clock_real(NULL);
    if (rc != ESG_BUSY || left <= 0) return rc;
    /* our own open group would hold the lock the holder needs to finish */
    if ((rc = esg_store_flush(s)) != ESG_OK) return rc;
    esg__sleep_ms((int)(left < pause ? left : pause));
    if (pause < 50) pause *= 2;
  }
}

/* The checks of a complete (0), release (1) or extend (2) call. */
static int check_token_args(esg_store *s, const char *key, int which, const void *result, size_t len,
                            int64_t lease_ms) {
  int rc = esg__check_key(&s->err, "claim key", key);
  if (rc != ESG_OK) return rc;
  if (which == 0 && len && !result) return esg__fail(&s->err, ESG_EINVAL, "result is NULL with length %zu", len);
  if (which == 2 && lease_ms <= 0) return esg__fail(&s->err, ESG_EINVAL, "lease must be positive");
  return ESG_OK;
}

static int stale_token(esg_store *s, const char *key, int64_t token) {
  return esg__fail(&s->err, ESG_ETOKEN,
                   "token %lld no longer owns claim \"%s\" (taken over, released, completed or expired)",
                   (long long)token, key);
}

static int by_token(esg_store *s, const char *key, int64_t token, int which, const void *result, size_t len,
                    int64_t lease_ms) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = check_token_args(s, key, which, result, len, lease_ms);
  if (rc != ESG_OK) return rc;
  int64_t now = esg__now(s);
  if (which == 0) rc = s->be->claim_complete(s->b, key, token, result, len, now);
  else if (which == 1) rc = s->be->claim_release(s->b, key, token, now);
  else rc = s->be->claim_extend(s->b, key, token, esg__time_add(now, lease_ms), now);
  return rc == ESG_ETOKEN ? stale_token(s, key, token) : rc;
}

int esg_complete(esg_store *s, const char *key, int64_t token, const void *result, size_t len) {
  return by_token(s, key, token, 0, result, len, 0);
}

int esg_release(esg_store *s, const char *key, int64_t token) { return by_token(s, key, token, 1, NULL, 0, 0); }

int esg_claim_extend(esg_store *s, const char *key, int64_t token, int64_t lease_ms) {
  return by_token(s, key, token, 2, NULL, 0, lease_ms);
}

/*
 * One unit of writes around the completions, each exactly an esg_complete inside
 * it, and counted as n writes toward group_commit_max. A store error stops the
 * batch. What each completion reports depends on the unit:
 *  - its own transaction (no group commit, no batch): one commit for all. If a
 *    completion's statement fails, the transaction rolls back and every completion
 *    reports that error; if the commit fails, nothing was stored and every
 *    completion that said ESG_OK reports the commit's error instead.
 *  - an open group (group commit): the completions join the group, as
 *    esg_complete's would. If the unit makes the group due and its commit fails,
 *    they report that error as above (they were in it); otherwise the group stays
 *    open and a later commit's failure is reported by whatever call commits it
 *    (esg_store_flush, or the call that finds the group due), per group commit.
 *  - a caller's batch (esg_store_begin): esg_store_commit reports the commit.
 */
int esg__complete_batch(esg_store *s, esg__completion *c, size_t n) {
  int rc = esg__enter(s);
  if (rc != ESG_OK) {
    for (size_t i = 0; i < n; i++) c[i].rc = rc;
    return rc;
  }
  for (size_t i = 0; i < n; i++) c[i].rc = check_token_args(s, c[i].key, 0, c[i].result, c[i].len, 0);
  rc = s->be->claims_complete(s->b, c, n, esg__now(s));
  for (size_t i = 0; rc >= 0 && i < n; i++) /* (a store error's text stays the store's) */
    if (c[i].rc == ESG_ETOKEN) stale_token(s, c[i].key, c[i].token);
  return rc;
}

int esg_claims_purge(esg_store *s, int64_t *n) {
  if (n) *n = 0;
  int rc = esg__enter(s);
  if (rc != ESG_OK) return rc;
  int64_t now = esg__now(s);
  if ((rc = s->be->outbox_purge(s->b, now)) != ESG_OK) return rc; /* first: it finds them by their claims */
  return s->be->claims_purge(s->b, now, n);
}
