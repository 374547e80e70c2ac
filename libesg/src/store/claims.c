/*
 * Claims: the idempotent-consumer contract of DESIGN.md. The common cases take
 * one statement each (a read answers duplicates and busy keys without writing; an
 * insert that finds no row makes a new claim); only takeovers of expired leases
 * or records take the slow path, re-deciding inside a write transaction.
 */
#include <limits.h>
#include <string.h>
#include "backend/backend.h"

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

static void report(esg_claim_info *out, const esg__claim_row *row) {
  if (!out) return;
  out->token = row->token;
  out->attempts = row->attempts;
  out->lease_until = row->lease_until;
  out->expires = row->expires;
  out->result = row->done ? row->result : NULL;
  out->result_len = row->done ? row->result_len : 0;
}

/* What an unexpired record means for a new claimer; -1 when the lease ran out (take over). */
static int judge(esg_store *s, const char *key, const esg__claim_row *row, const void *hash, size_t hash_len,
                 int64_t now) {
  if (hash_len && row->hash_len && (row->hash_len != hash_len || memcmp(row->hash, hash, hash_len) != 0))
    return esg__fail(&s->err, ESG_EMISMATCH, "claim key \"%s\" was first used with a different payload", key);
  if (row->done) return ESG_DUPLICATE;
  if (row->lease_until > now) return ESG_BUSY;
  return -1;
}

static esg__claim_row fresh(esg_store *s, const void *hash, size_t hash_len, int64_t lease_ms, int64_t ttl_ms,
                            int64_t now, int attempts) {
  esg__claim_row r = {0};
  r.hash = hash;
  r.hash_len = hash_len;
  r.token = esg__token(s);
  r.attempts = attempts;
  r.lease_until = esg__time_add(now, lease_ms); /* a "forever" stays in the future */
  r.expires = esg__time_add(now, ttl_ms);
  r.ttl = ttl_ms;
  return r;
}

/* Takes the key over inside a write transaction, re-reading it first: another process may have moved. */
static int slow_claim(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms,
                      int64_t ttl_ms, esg_claim_info *out) {
  bool own;
  int rc = esg__unit_begin(s, true, &own);
  if (rc != ESG_OK) return rc;
  int64_t now = s->clock(s->clock_ud);
  esg__claim_row row;
  int attempts = 1;
  rc = s->be->claim_get(s, key, &row);
  if (rc == ESG_OK && row.expires > now) {
    rc = judge(s, key, &row, hash, hash_len, now);
    if (rc >= 0 || rc == ESG_EMISMATCH) {
      report(out, &row);
      return esg__unit_end(s, own, rc);
    }
    attempts = row.attempts + 1; /* the owner's lease ran out: take over */
  } else if (rc < 0 && rc != ESG_NOT_FOUND) {
    return esg__unit_end(s, own, rc);
  }
  row = fresh(s, hash, hash_len, lease_ms, ttl_ms, now, attempts);
  rc = s->be->claim_replace(s, key, &row);
  if (rc == ESG_OK) {
    report(out, &row);
    rc = ESG_NEW;
  }
  return esg__unit_end(s, own, rc);
}

/* One conflict-checked insert: ESG_NEW, ESG_DUPLICATE when the key exists (in any state), or an error. */
static int try_insert(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms,
                      int64_t ttl_ms, int64_t now, esg_claim_info *out) {
  bool own;
  int rc = esg__unit_begin(s, false, &own);
  if (rc != ESG_OK) return rc;
  esg__claim_row row = fresh(s, hash, hash_len, lease_ms, ttl_ms, now, 1);
  rc = s->be->claim_insert(s, key, &row);
  if (rc == ESG_OK) {
    report(out, &row);
    rc = ESG_NEW;
  }
  return esg__unit_end(s, own, rc);
}

/*
 * A claim while a group is open (claims_pending.c): the read runs inside the
 * group's transaction, which holds the write lock, and a new claim is kept in
 * memory rather than written, so its completion writes the row once.
 */
static int group_claim(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms,
                       int64_t ttl_ms, esg_claim_info *out) {
  int64_t now = s->clock(s->clock_ud);
  esg__pend *p = esg__pend_find(s, key);
  if (p) {
    esg__claim_row *held = esg__pend_row(p);
    int rc = judge(s, key, held, hash, hash_len, now);
    if (rc == -1 && held->expires > now) { /* its lease ran out inside the group: take over */
      int attempts = held->attempts + 1;
      esg__pend_drop(s, p);
      esg__claim_row row = fresh(s, hash, hash_len, lease_ms, ttl_ms, now, attempts);
      if ((rc = esg__pend_add(s, key, &row)) == ESG_OK) rc = ESG_NEW;
      report(out, &row);
      return rc;
    }
    if (rc != -1) {
      report(out, held);
      return rc;
    }
    esg__pend_drop(s, p); /* expired: as if absent */
  }
  esg__claim_row row;
  int rc = s->be->claim_get(s, key, &row);
  if (rc == ESG_OK && row.expires > now) {
    rc = judge(s, key, &row, hash, hash_len, now);
    if (rc >= 0 || rc == ESG_EMISMATCH) {
      report(out, &row);
      return rc;
    }
    return slow_claim(s, key, hash, hash_len, lease_ms, ttl_ms, out);
  }
  if (rc < 0 && rc != ESG_NOT_FOUND) return rc;
  /* absent, or an expired row that the completion's write will replace */
  bool own;
  if ((rc = esg__unit_begin(s, false, &own)) != ESG_OK) return rc;
  row = fresh(s, hash, hash_len, lease_ms, ttl_ms, now, 1);
  rc = esg__pend_add(s, key, &row);
  if (rc == ESG_OK) {
    report(out, &row);
    rc = ESG_NEW;
  }
  return esg__unit_end(s, own, rc);
}

/*
 * Which statement goes first is a guess from the previous claim on this handle:
 * streams come in runs of new events or of redeliveries, so after a new key the
 * insert is tried first (one statement when it is new again), and after a
 * duplicate the read is (answered without taking the write lock). A wrong guess
 * costs one extra statement, never a wrong answer.
 */
int esg_claim(esg_store *s, const char *key, const void *hash, size_t hash_len, int64_t lease_ms, int64_t ttl_ms,
              esg_claim_info *out) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = check_args(s, key, hash, hash_len, lease_ms, ttl_ms);
  if (rc == ESG_OK) rc = esg__check_process(s); /* before the reads, which skip esg__unit_begin */
  if (rc != ESG_OK) return rc;
  if (out) memset(out, 0, sizeof *out);
  if (s->group_open && !s->batch) return group_claim(s, key, hash, hash_len, lease_ms, ttl_ms, out);
  int64_t now = s->clock(s->clock_ud);
  bool inserted = false;
  /* (in group mode, a read never opens a group: only insert first into a group already open) */
  if (!s->expect_seen && (s->group_ms == 0 || s->group_open || s->batch)) {
    rc = try_insert(s, key, hash, hash_len, lease_ms, ttl_ms, now, out);
    if (rc != ESG_DUPLICATE) return rc;
    inserted = true;
  }
  esg__claim_row row;
  rc = s->be->claim_get(s, key, &row);
  if (rc == ESG_OK && row.expires > now) {
    rc = judge(s, key, &row, hash, hash_len, now);
    if (rc >= 0 || rc == ESG_EMISMATCH) {
      s->expect_seen = true;
      report(out, &row);
      return rc;
    }
  } else if (rc == ESG_NOT_FOUND && !inserted) {
    rc = try_insert(s, key, hash, hash_len, lease_ms, ttl_ms, now, out);
    if (rc != ESG_DUPLICATE) {
      s->expect_seen = false;
      return rc;
    }
  } else if (rc < 0 && rc != ESG_NOT_FOUND) {
    return rc;
  }
  /* an expired record, a lease that ran out, or a lost race: decide again under the write lock */
  s->expect_seen = false;
  return slow_claim(s, key, hash, hash_len, lease_ms, ttl_ms, out);
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

/* complete (0), release (1) or extend (2) a claim pending in the open group: the same rules as the backend's. */
static int pending_by_token(esg_store *s, esg__pend *p, const char *key, int64_t token, int which, const void *result,
                            size_t len, int64_t lease_ms, int64_t now) {
  esg__claim_row *row = esg__pend_row(p);
  if (row->token != token || row->expires <= now) return ESG_ETOKEN;
  if (which == 2) {
    row->lease_until = esg__time_add(now, lease_ms);
    return ESG_OK;
  }
  int rc = ESG_OK;
  if (which == 0) {
    esg__claim_row done = *row;
    done.done = true;
    done.result = result ? (len ? result : "") : NULL;
    done.result_len = result ? len : 0;
    done.expires = esg__time_add(now, row->ttl);
    rc = s->be->claim_replace(s, key, &done);
  }
  if (rc == ESG_OK) esg__pend_drop(s, p);
  return rc;
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

/* complete (0), release (1) or extend (2), inside a unit of writes the caller began. */
static int token_op(esg_store *s, const char *key, int64_t token, int which, const void *result, size_t len,
                    int64_t lease_ms) {
  int64_t now = s->clock(s->clock_ud);
  esg__pend *p = s->group_open ? esg__pend_find(s, key) : NULL;
  int rc;
  if (p) {
    rc = pending_by_token(s, p, key, token, which, result, len, lease_ms, now);
  } else if (which == 0) {
    rc = s->be->claim_complete(s, key, token, result, len, now);
  } else if (which == 1) {
    rc = s->be->claim_release(s, key, token, now);
  } else {
    rc = s->be->claim_extend(s, key, token, esg__time_add(now, lease_ms), now);
  }
  if (rc == ESG_ETOKEN)
    esg__fail(&s->err, rc, "token %lld no longer owns claim \"%s\" (taken over, released, completed or expired)",
              (long long)token, key);
  return rc;
}

static int by_token(esg_store *s, const char *key, int64_t token, int which, const void *result, size_t len,
                    int64_t lease_ms) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = check_token_args(s, key, which, result, len, lease_ms);
  if (rc != ESG_OK) return rc;
  bool own;
  if ((rc = esg__unit_begin(s, false, &own)) != ESG_OK) return rc;
  return esg__unit_end(s, own, token_op(s, key, token, which, result, len, lease_ms));
}

int esg_complete(esg_store *s, const char *key, int64_t token, const void *result, size_t len) {
  return by_token(s, key, token, 0, result, len, 0);
}

/* The completions c[0..n) that said ESG_OK get rc instead: the commit that was to store them failed. */
static void lost(esg__completion *c, size_t n, int rc) {
  for (size_t i = 0; i < n; i++)
    if (c[i].rc == ESG_OK) c[i].rc = rc;
}

/*
 * One unit of writes around the completions, each exactly an esg_complete inside
 * it, and counted as n writes toward group_commit_max. A store error stops the
 * batch. What the unit's end reports depends on the unit:
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
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  bool own;
  int rc = esg__unit_begin(s, true, &own);
  if (rc != ESG_OK) {
    for (size_t i = 0; i < n; i++) c[i].rc = rc;
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    if (rc != ESG_OK) {
      c[i].rc = rc;
      continue;
    }
    c[i].rc = check_token_args(s, c[i].key, 0, c[i].result, c[i].len, 0);
    if (c[i].rc == ESG_OK) c[i].rc = token_op(s, c[i].key, c[i].token, 0, c[i].result, c[i].len, 0);
    if (c[i].rc < 0 && c[i].rc != ESG_ETOKEN && c[i].rc != ESG_EINVAL) rc = c[i].rc;
  }
  if (own && rc < 0) {
    for (size_t i = 0; i < n; i++) c[i].rc = rc;
    return esg__unit_end(s, own, rc); /* rolls back */
  }
  /* asked with ESG_OK, the unit's end returns what its commit (if any) did, alone */
  int writes = n == 0 ? 1 : n < (size_t)INT_MAX ? (int)n : INT_MAX;
  int crc = esg__unit_end_n(s, own, ESG_OK, writes);
  if (crc < 0) {
    lost(c, n, crc);
    return crc;
  }
  return rc;
}

int esg_release(esg_store *s, const char *key, int64_t token) { return by_token(s, key, token, 1, NULL, 0, 0); }

int esg_claim_extend(esg_store *s, const char *key, int64_t token, int64_t lease_ms) {
  return by_token(s, key, token, 2, NULL, 0, lease_ms);
}

int esg_claims_purge(esg_store *s, int64_t *n) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  bool own;
  int rc = esg__unit_begin(s, false, &own);
  if (rc != ESG_OK) return rc;
  return esg__unit_end(s, own, s->be->claims_purge(s, s->clock(s->clock_ud), n));
}
