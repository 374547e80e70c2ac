/*
 * Webhook verification, esg_webhook_verify, with headers and body from the input:
 *   byte 0        now = the timestamp header's value + 4 * (int8)byte 0 s (fresh when
 *                 within 300 s), and which byte of the body to flip below;
 *   then lines    the secrets (space-separated, up to 3), webhook-id, webhook-timestamp,
 *                 webhook-signature (a header missing when its line is: NULL);
 *   the rest      the body (any bytes).
 * Invariants: only the documented codes; ESG_OK only when some secret's signature over
 * exactly these id, timestamp and body is one of the header's entries. Then, for one of
 * the secrets (byte 0 picks it), a signature made here verifies, or both sign and verify
 * refuse the secret; and (byte 0's top bits pick which, or all) it verifies among other
 * entries, and fails with ESG_ESIGNATURE for the body with one byte changed, one byte
 * more, another id, another timestamp, or a secret that is not it.
 */
#include <string.h>
#include <esg.h>
#include "fuzz.h"

#define MAXSEC 3

/* Whether sig is one of the white-space separated entries of header. */
static int has_entry(const char *header, const char *sig) {
  size_t n = strlen(sig);
  for (const char *p = header; *p;) {
    while (*p == ' ' || (*p >= '\t' && *p <= '\r')) p++;
    const char *e = p;
    while (*e && !(*e == ' ' || (*e >= '\t' && *e <= '\r'))) e++;
    if ((size_t)(e - p) == n && memcmp(p, sig, n) == 0) return 1;
    p = e;
  }
  return 0;
}

static int ok_code(int rc) {
  return rc == ESG_OK || rc == ESG_ETIMEDOUT || rc == ESG_ESIGNATURE || rc == ESG_EINVAL;
}

/* The next line of [*p, e) as a new string, or NULL when there is no '\n' left. */
static char *line(const char **p, const char *e) {
  const char *nl = memchr(*p, '\n', (size_t)(e - *p));
  if (!nl) return NULL;
  size_t n = (size_t)(nl - *p);
  char *s = malloc(n + 1);
  FUZZ_CHECK(s != NULL);
  memcpy(s, *p, n);
  s[n] = '\0';
  *p = nl + 1;
  return s;
}

static int verify1(const char *secret, const char *id, const char *ts, const char *sig, const void *body,
                   size_t len, int64_t now) {
  const char *secrets[1] = {secret};
  return esg_webhook_verify(secrets, 1, id, ts, sig, body, len, now, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int8_t skew = (int8_t)data[0];
  const char *p = (const char *)data + 1, *e = (const char *)data + size;
  char *secline = line(&p, e);
  char *id = secline ? line(&p, e) : NULL;
  char *ts = id ? line(&p, e) : NULL;
  char *sig = ts ? line(&p, e) : NULL;
  const char *body = p;
  size_t len = (size_t)(e - p);

  const char *secrets[MAXSEC];
  size_t nsec = 0;
  char *save = NULL;
  for (char *tok = secline ? strtok_r(secline, " ", &save) : NULL; tok && nsec < MAXSEC;
       tok = nsec < MAXSEC ? strtok_r(NULL, " ", &save) : NULL)
    secrets[nsec++] = tok;

  int64_t tsv = 1700000000; /* the header's value when it is decimal (<= 18 digits) */
  if (ts && *ts && strlen(ts) <= 18 && strspn(ts, "0123456789") == strlen(ts)) tsv = strtoll(ts, NULL, 10);
  int64_t now = tsv + 4 * skew;

  /* 1. the input as received */
  int rc = esg_webhook_verify(nsec ? secrets : NULL, nsec, id, ts, sig, body, len, now, 0);
  FUZZ_CHECK_RC(ok_code(rc), rc, NULL);
  if (rc != ESG_OK) FUZZ_CHECK(esg_errmsg(NULL)[0] != '\0');
  if (rc == ESG_OK) {
    int found = 0;
    for (size_t i = 0; i < nsec && !found; i++) {
      char mine[ESG_WEBHOOK_SIGNATURE_SIZE];
      if (esg_webhook_sign(secrets[i], id, tsv, body, len, mine, sizeof mine) == ESG_OK)
        found = has_entry(sig, mine);
    }
    FUZZ_CHECK(found);
  }

  /* 2. signatures made here over these bytes, and over others */
  const char *mid = id && *id ? id : "msg_fuzz";
  char tstext[24], tsnext[24];
  snprintf(tstext, sizeof tstext, "%lld", (long long)tsv);
  /* another timestamp, still fresh and of at most 18 digits */
  snprintf(tsnext, sizeof tsnext, "%lld", (long long)(tsv < INT64_C(999999999999999999) ? tsv + 1 : tsv - 1));
  size_t flip = len ? (size_t)(uint8_t)skew % len : 0;
  char *alt = malloc(len + 1);
  FUZZ_CHECK(alt != NULL);
  if (len) memcpy(alt, body, len);
  char *idx = malloc(strlen(mid) + 2);
  FUZZ_CHECK(idx != NULL);
  strcpy(idx, mid);
  strcat(idx, "x");
  /* one secret, picked by byte 0, and the tampering its top 3 bits pick (6, 7: all) */
  size_t i = nsec ? (size_t)(uint8_t)skew % nsec : 0;
  int what = (uint8_t)skew >> 5;
  char mine[ESG_WEBHOOK_SIGNATURE_SIZE], several[3 * ESG_WEBHOOK_SIGNATURE_SIZE + 16];
  rc = nsec ? esg_webhook_sign(secrets[i], mid, tsv, body, len, mine, sizeof mine) : ESG_EINVAL;
  FUZZ_CHECK_RC(rc == ESG_OK || rc == ESG_EINVAL, rc, NULL);
  if (nsec && rc != ESG_OK) { /* a secret sign refuses, verify refuses too */
    FUZZ_CHECK(mine[0] == '\0');
    FUZZ_CHECK(verify1(secrets[i], mid, tstext, "v1,x", body, len, tsv) == ESG_EINVAL);
  } else if (nsec) {
    FUZZ_CHECK(strlen(mine) == ESG_WEBHOOK_SIGNATURE_SIZE - 1 && memcmp(mine, "v1,", 3) == 0);
    rc = verify1(secrets[i], mid, tstext, mine, body, len, tsv);
    FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
    if (what == 0 || what >= 6) { /* among other entries */
      snprintf(several, sizeof several, "v1a,%s  v1,AAAA\t%s v2,x", mine + 3, mine);
      rc = verify1(secrets[i], mid, tstext, several, body, len, tsv);
      FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
    }
    if ((what == 1 || what >= 6) && len) { /* one byte changed */
      alt[flip] ^= (char)(1u << ((uint8_t)skew % 8));
      rc = verify1(secrets[i], mid, tstext, mine, alt, len, tsv);
      alt[flip] = body[flip];
      FUZZ_CHECK_RC(rc == ESG_ESIGNATURE, rc, NULL);
    }
    if (what == 2 || what >= 6) { /* one byte more */
      alt[len] = 'x';
      rc = verify1(secrets[i], mid, tstext, mine, alt, len + 1, tsv);
      FUZZ_CHECK_RC(rc == ESG_ESIGNATURE, rc, NULL);
    }
    if (what == 3 || what >= 6) { /* another id */
      rc = verify1(secrets[i], idx, tstext, mine, body, len, tsv);
      FUZZ_CHECK_RC(rc == ESG_ESIGNATURE, rc, NULL);
    }
    if (what == 4 || what >= 6) { /* another timestamp */
      rc = verify1(secrets[i], mid, tsnext, mine, body, len, tsv);
      FUZZ_CHECK_RC(rc == ESG_ESIGNATURE, rc, NULL);
    }
    if (what == 5 || what >= 6) { /* another secret: the text plus a byte, unless it is the same key */
      char *other = malloc(strlen(secrets[i]) + 2);
      FUZZ_CHECK(other != NULL);
      strcpy(other, secrets[i]);
      strcat(other, strncmp(other, "whsec_", 6) == 0 ? "A" : "x");
      char theirs[ESG_WEBHOOK_SIGNATURE_SIZE];
      if (esg_webhook_sign(other, mid, tsv, body, len, theirs, sizeof theirs) == ESG_OK &&
          strcmp(theirs, mine) != 0) {
        rc = verify1(other, mid, tstext, mine, body, len, tsv);
        FUZZ_CHECK_RC(rc == ESG_ESIGNATURE, rc, NULL);
      }
      free(other);
    }
  }
  free(idx);
  free(alt);
  free(secline);
  free(id);
  free(ts);
  free(sig);
  return 0;
}
