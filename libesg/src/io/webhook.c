/*
 * Standard Webhooks v1: signs outgoing webhooks and verifies incoming ones, so a
 * gateway can reject forged or replayed requests before it claims and processes
 * them. HMAC-SHA256 over "id.timestamp.payload", base64, "v1," prefix; several
 * signatures per header and several secrets (rotation); timestamp tolerance.
 * All work is on the caller's buffers and the stack: nothing is kept between calls.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/internal.h"

#define SIG_PREFIX "v1,"
#define SIG_PREFIX_LEN 3
#define MAC_LEN 32     /* SHA-256 */
#define MAC_B64_LEN 44 /* base64 of 32 bytes, padded */
#define SECRET_BYTES 32

/* A key ready for HMAC: either points into the caller's secret or into bytes. */
typedef struct key {
  const unsigned char *data;
  size_t len;
  unsigned char bytes[ESG_WEBHOOK_SECRET_MAX / 4 * 3 + 3];
} key;

static void key_wipe(key *k) {
  OPENSSL_cleanse(k->bytes, sizeof k->bytes);
  k->data = NULL;
  k->len = 0;
}

static int b64_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '/';
}

/*
 * Decodes standard base64 strictly. EVP_DecodeBlock alone is too lenient for
 * secrets (it skips white space, counts padding as zero bytes and needs a length
 * that is a multiple of 4), so the shape is checked here and padding restored.
 */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t *outlen) {
  size_t pad = 0;
  while (n > 0 && in[n - 1] == '=' && pad < 2) {
    n--;
    pad++;
  }
  if (n == 0 || n % 4 == 1) return -1;
  if (pad && (n + pad) % 4 != 0) return -1;
  for (size_t i = 0; i < n; i++)
    if (!b64_char((unsigned char)in[i])) return -1;
  char buf[ESG_WEBHOOK_SECRET_MAX + 4];
  if (n + 4 > sizeof buf) return -1;
  memcpy(buf, in, n);
  size_t m = n;
  while (m % 4) buf[m++] = '=';
  int r = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)m);
  OPENSSL_cleanse(buf, sizeof buf);
  if (r < 0) return -1;
  *outlen = (size_t)r - (m - n); /* EVP_DecodeBlock counts each '=' as a zero byte */
  return 0;
}

/* Turns a secret string into key bytes; what names it in error texts. */
static int secret_key(const char *secret, const char *what, key *k) {
  if (!secret) return esg__fail(NULL, ESG_EINVAL, "%s is NULL", what);
  size_t n = strlen(secret);
  if (n == 0) return esg__fail(NULL, ESG_EINVAL, "%s is empty", what);
  size_t plen = sizeof ESG_WEBHOOK_SECRET_PREFIX - 1;
  if (strncmp(secret, ESG_WEBHOOK_SECRET_PREFIX, plen) != 0) {
    if (n > ESG_WEBHOOK_SECRET_MAX)
      return esg__fail(NULL, ESG_EINVAL, "%s is %zu bytes; the limit is %d", what, n,
                       ESG_WEBHOOK_SECRET_MAX);
    k->data = (const unsigned char *)secret;
    k->len = n;
    return ESG_OK;
  }
  const char *b64 = secret + plen;
  size_t m = n - plen;
  if (m == 0) return esg__fail(NULL, ESG_EINVAL, "%s has no key after \"whsec_\"", what);
  if (m > ESG_WEBHOOK_SECRET_MAX)
    return esg__fail(NULL, ESG_EINVAL, "%s is %zu characters after \"whsec_\"; the limit is %d",
                     what, m, ESG_WEBHOOK_SECRET_MAX);
  size_t len = 0;
  if (b64_decode(b64, m, k->bytes, &len) != 0 || len == 0)
    return esg__fail(NULL, ESG_EINVAL, "%s: the part after \"whsec_\" is not valid base64", what);
  k->data = k->bytes;
  k->len = len;
  return ESG_OK;
}

/*
 * HMAC-SHA256 of "id.ts.payload" into b64out[MAC_B64_LEN + 1]. Fed piece by piece
 * so the payload is never copied. EVP_PKEY HMAC rather than HMAC_CTX (deprecated
 * in OpenSSL 3) or EVP_MAC (missing before 3) keeps one code path for both.
 */
static int mac_b64(const key *k, const char *id, const char *ts, const void *payload, size_t len,
                   char *b64out) {
  int rc = ESG_ENOMEM;
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = sizeof mac;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_HMAC, NULL, k->data, k->len);
  if (ctx && pkey && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
      EVP_DigestSignUpdate(ctx, id, strlen(id)) == 1 && EVP_DigestSignUpdate(ctx, ".", 1) == 1 &&
      EVP_DigestSignUpdate(ctx, ts, strlen(ts)) == 1 && EVP_DigestSignUpdate(ctx, ".", 1) == 1 &&
      (len == 0 || EVP_DigestSignUpdate(ctx, payload, len) == 1) &&
      EVP_DigestSignFinal(ctx, mac, &maclen) == 1 && maclen == MAC_LEN) {
    EVP_EncodeBlock((unsigned char *)b64out, mac, MAC_LEN);
    rc = ESG_OK;
  }
  OPENSSL_cleanse(mac, sizeof mac);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  if (rc != ESG_OK) return esg__fail(NULL, rc, "HMAC-SHA256 failed in OpenSSL (out of memory?)");
  return rc;
}

static int check_common(const char *msg_id, const void *payload, size_t len) {
  if (!msg_id) return esg__fail(NULL, ESG_EINVAL, "webhook id is NULL");
  if (!*msg_id) return esg__fail(NULL, ESG_EINVAL, "webhook id is empty");
  if (!payload && len > 0)
    return esg__fail(NULL, ESG_EINVAL, "payload is NULL but its length is %zu", len);
  return ESG_OK;
}

int esg_webhook_sign(const char *secret, const char *msg_id, int64_t timestamp_s,
                     const void *payload, size_t len, char *out, size_t outcap) {
  esg__tls_err()->msg[0] = '\0';
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  if (outcap > 0) out[0] = '\0';
  if (outcap < ESG_WEBHOOK_SIGNATURE_SIZE)
    return esg__fail(NULL, ESG_EINVAL, "out buffer too small: %zu bytes; need %d", outcap,
                     ESG_WEBHOOK_SIGNATURE_SIZE);
  int rc = check_common(msg_id, payload, len);
  if (rc != ESG_OK) return rc;
  if (timestamp_s < 0)
    return esg__fail(NULL, ESG_EINVAL, "timestamp %" PRId64 " is negative", timestamp_s);
  key k;
  rc = secret_key(secret, "secret", &k);
  if (rc != ESG_OK) return rc;
  char ts[24];
  snprintf(ts, sizeof ts, "%" PRId64, timestamp_s);
  memcpy(out, SIG_PREFIX, SIG_PREFIX_LEN);
  rc = mac_b64(&k, msg_id, ts, payload, len, out + SIG_PREFIX_LEN);
  key_wipe(&k);
  if (rc != ESG_OK) out[0] = '\0';
  return rc;
}

/*
 * Parses the webhook-timestamp header: decimal digits only, as the standard
 * sends them. At most 18 digits so the value cannot overflow int64.
 */
static int parse_timestamp(const char *h, int64_t *out) {
  if (!h) return esg__fail(NULL, ESG_EINVAL, "webhook-timestamp header is missing (NULL)");
  if (!*h) return esg__fail(NULL, ESG_EINVAL, "webhook-timestamp header is empty");
  int64_t v = 0;
  size_t i = 0;
  for (; h[i]; i++) {
    if (h[i] < '0' || h[i] > '9' || i >= 18)
      return esg__fail(NULL, ESG_EINVAL,
                       "malformed webhook-timestamp \"%.40s\": want decimal epoch seconds", h);
    v = v * 10 + (h[i] - '0');
  }
  *out = v;
  return ESG_OK;
}

int esg_webhook_verify(const char *const *secrets, size_t nsecrets, const char *msg_id,
                       const char *timestamp_header, const char *signature_header,
                       const void *payload, size_t len, int64_t now_s, int64_t tolerance_s) {
  esg__tls_err()->msg[0] = '\0';
  if (!secrets || nsecrets == 0) return esg__fail(NULL, ESG_EINVAL, "no secrets given");
  if (!msg_id) return esg__fail(NULL, ESG_EINVAL, "webhook-id header is missing (NULL)");
  if (!*msg_id) return esg__fail(NULL, ESG_EINVAL, "webhook-id header is empty");
  int rc = check_common(msg_id, payload, len);
  if (rc != ESG_OK) return rc;
  if (!signature_header)
    return esg__fail(NULL, ESG_EINVAL, "webhook-signature header is missing (NULL)");
  int64_t ts = 0;
  rc = parse_timestamp(timestamp_header, &ts);
  if (rc != ESG_OK) return rc;

  /* The timestamp is public, so checking it first leaks nothing and spares the HMACs. */
  if (tolerance_s <= 0) tolerance_s = ESG_WEBHOOK_DEFAULT_TOLERANCE_S;
  /*
   * ts >= 0 and tolerance_s > 0, so neither comparison can overflow; the distances
   * in the texts are taken unsigned because now_s may be anything.
   */
  if (now_s > ts && now_s - tolerance_s > ts)
    return esg__fail(NULL, ESG_ETIMEDOUT,
                     "webhook-timestamp %" PRId64 " is too old: %" PRIu64
                     " s before now, tolerance %" PRId64 " s",
                     ts, (uint64_t)now_s - (uint64_t)ts, tolerance_s);
  if (ts > now_s && ts - tolerance_s > now_s)
    return esg__fail(NULL, ESG_ETIMEDOUT,
                     "webhook-timestamp %" PRId64 " is too new: %" PRIu64
                     " s after now, tolerance %" PRId64 " s",
                     ts, (uint64_t)ts - (uint64_t)now_s, tolerance_s);

  /* Find the v1 entries before computing anything, to tell "none" from "no match". */
  size_t nentries = 0, nv1 = 0;
  for (const char *p = signature_header; *p;) {
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) break;
    const char *e = p;
    while (*e && !isspace((unsigned char)*e)) e++;
    nentries++;
    if ((size_t)(e - p) >= SIG_PREFIX_LEN && memcmp(p, SIG_PREFIX, SIG_PREFIX_LEN) == 0) nv1++;
    p = e;
  }
  if (nentries == 0) return esg__fail(NULL, ESG_EINVAL, "webhook-signature header is empty");
  if (nv1 == 0)
    return esg__fail(NULL, ESG_ESIGNATURE,
                     "webhook-signature header has no v1 signature (%zu other entries)", nentries);

  /* Every secret must be usable, so a bad one in a rotation list is found at once. */
  for (size_t i = 0; i < nsecrets; i++) {
    char what[40];
    snprintf(what, sizeof what, "secret %zu", i);
    key k;
    rc = secret_key(secrets[i], what, &k);
    key_wipe(&k);
    if (rc != ESG_OK) return rc;
  }

  char ts_text[24];
  snprintf(ts_text, sizeof ts_text, "%" PRId64, ts);
  int matched = 0;
  for (size_t i = 0; i < nsecrets && !matched; i++) {
    key k;
    char expected[MAC_B64_LEN + 1];
    secret_key(secrets[i], "secret", &k); /* cannot fail: checked above */
    rc = mac_b64(&k, msg_id, ts_text, payload, len, expected);
    key_wipe(&k);
    if (rc != ESG_OK) return rc;
    for (const char *p = signature_header; *p;) {
      while (*p && isspace((unsigned char)*p)) p++;
      const char *e = p;
      while (*e && !isspace((unsigned char)*e)) e++;
      /* The length is public (always 44); only the content is compared in constant time. */
      if ((size_t)(e - p) == SIG_PREFIX_LEN + MAC_B64_LEN &&
          memcmp(p, SIG_PREFIX, SIG_PREFIX_LEN) == 0 &&
          CRYPTO_memcmp(p + SIG_PREFIX_LEN, expected, MAC_B64_LEN) == 0)
        matched = 1;
      p = e;
    }
    OPENSSL_cleanse(expected, sizeof expected);
  }
  if (!matched)
    return esg__fail(NULL, ESG_ESIGNATURE,
                     "no matching signature: none of %zu v1 signature(s) matches any of %zu "
                     "secret(s); the payload, id or timestamp was tampered with, or the secret "
                     "is wrong",
                     nv1, nsecrets);
  esg__tls_err()->msg[0] = '\0';
  return ESG_OK;
}

int esg_webhook_secret_generate(char *out, size_t outcap) {
  esg__tls_err()->msg[0] = '\0';
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  if (outcap > 0) out[0] = '\0';
  if (outcap < ESG_WEBHOOK_SECRET_SIZE)
    return esg__fail(NULL, ESG_EINVAL, "out buffer too small: %zu bytes; need %d", outcap,
                     ESG_WEBHOOK_SECRET_SIZE);
  unsigned char raw[SECRET_BYTES];
  if (RAND_bytes(raw, (int)sizeof raw) != 1)
    return esg__fail(NULL, ESG_EIO, "no randomness available from OpenSSL RAND_bytes");
  size_t plen = sizeof ESG_WEBHOOK_SECRET_PREFIX - 1;
  memcpy(out, ESG_WEBHOOK_SECRET_PREFIX, plen);
  EVP_EncodeBlock((unsigned char *)out + plen, raw, (int)sizeof raw);
  OPENSSL_cleanse(raw, sizeof raw);
  return ESG_OK;
}
