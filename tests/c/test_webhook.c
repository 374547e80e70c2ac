/* Tests for Standard Webhooks v1 signing and verification (esg/webhook.h). */
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

/* The published Standard Webhooks reference vector. */
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define MSG_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define TS 1614265330
#define TS_TEXT "1614265330"
#define PAYLOAD "{\"test\": 2432232314}"
#define SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* Another valid-looking v1 signature that belongs to nothing. */
#define WRONG "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static const char *const one_secret[] = {SECRET};

static int verify(const char *id, const char *ts, const char *sig, const char *payload,
                  int64_t now) {
  return esg_webhook_verify(one_secret, 1, id, ts, sig, payload, payload ? strlen(payload) : 0,
                            now, 0);
}

static void test_reference_vector(void) {
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  CHECK_RC(ESG_OK, esg_webhook_sign(SECRET, MSG_ID, TS, PAYLOAD, strlen(PAYLOAD), out, sizeof out));
  CHECK_STR(out, SIG);
  CHECK_STR(esg_errmsg(NULL), "");
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, SIG, PAYLOAD, TS));
  CHECK_STR(esg_errmsg(NULL), "");
}

static void test_sign_roundtrip_raw_secret(void) {
  /* A secret without "whsec_" is used byte for byte. */
  const char *raw = "not-base64 but fine";
  const char *secrets[] = {raw};
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  CHECK_RC(ESG_OK, esg_webhook_sign(raw, "id1", 100, "body", 4, out, sizeof out));
  CHECK(strncmp(out, "v1,", 3) == 0 && strlen(out) == 47);
  CHECK_RC(ESG_OK, esg_webhook_verify(secrets, 1, "id1", "100", out, "body", 4, 100, 0));
  /* whsec_ with the same characters would be a different key. */
  char out2[ESG_WEBHOOK_SIGNATURE_SIZE];
  CHECK_RC(ESG_OK, esg_webhook_sign("whsec_bm90LWJhc2U2NCBidXQgZmluZQ==", "id1", 100, "body", 4,
                                    out2, sizeof out2));
  CHECK_STR(out, out2); /* base64 of "not-base64 but fine" decodes to the same key bytes */
  /* Padding is optional in whsec_ secrets. */
  CHECK_RC(ESG_OK, esg_webhook_sign("whsec_bm90LWJhc2U2NCBidXQgZmluZQ", "id1", 100, "body", 4,
                                    out2, sizeof out2));
  CHECK_STR(out, out2);
  /* An empty payload is signable, with or without a pointer. */
  CHECK_RC(ESG_OK, esg_webhook_sign(SECRET, "id1", 0, NULL, 0, out, sizeof out));
  CHECK_RC(ESG_OK, esg_webhook_verify(one_secret, 1, "id1", "0", out, NULL, 0, 0, 0));
  CHECK_RC(ESG_OK, esg_webhook_verify(one_secret, 1, "id1", "0", out, "", 0, 0, 0));
}

static void test_multiple_signatures(void) {
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, WRONG " " SIG, PAYLOAD, TS));
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, SIG " " WRONG, PAYLOAD, TS));
  /* Other versions are skipped, extra spaces are fine. */
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, "v1a,abcdef  " WRONG "   " SIG " ", PAYLOAD, TS));
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, "v2,xyz " SIG, PAYLOAD, TS));
  /* A truncated or extended v1 signature never matches. */
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", PAYLOAD, TS));
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, SIG "x", PAYLOAD, TS));
  /* Differs only near the end: the whole signature is compared. */
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", PAYLOAD, TS));
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, "v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", PAYLOAD, TS));
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "no v1 signature");
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, "v1a,abc v2,def", PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "no v1 signature");
}

static void test_rotation(void) {
  const char *secrets[] = {"whsec_c2VjcmV0LW51bWJlci10d28tMTIzNDU2Nzg=", SECRET};
  CHECK_RC(ESG_OK, esg_webhook_verify(secrets, 2, MSG_ID, TS_TEXT, SIG, PAYLOAD, strlen(PAYLOAD),
                                      TS, 0));
  /* Only the old secret: no match. */
  CHECK_RC(ESG_ESIGNATURE, esg_webhook_verify(secrets, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD,
                                          strlen(PAYLOAD), TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "no matching signature");
  /* Both sides of a rotation: the sender signs with both, the receiver knows one. */
  char a[ESG_WEBHOOK_SIGNATURE_SIZE], b[ESG_WEBHOOK_SIGNATURE_SIZE], header[128];
  CHECK_RC(ESG_OK, esg_webhook_sign(secrets[0], "m", 5, "x", 1, a, sizeof a));
  CHECK_RC(ESG_OK, esg_webhook_sign(secrets[1], "m", 5, "x", 1, b, sizeof b));
  CHECK(strcmp(a, b) != 0);
  snprintf(header, sizeof header, "%s %s", a, b);
  CHECK_RC(ESG_OK, esg_webhook_verify(&secrets[1], 1, "m", "5", header, "x", 1, 5, 0));
  CHECK_RC(ESG_OK, esg_webhook_verify(&secrets[0], 1, "m", "5", header, "x", 1, 5, 0));
}

static void test_tampering(void) {
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, TS_TEXT, SIG, "{\"test\": 2432232315}", TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "no matching signature");
  CHECK_CONTAINS(esg_errmsg(NULL), "tampered");
  CHECK_RC(ESG_ESIGNATURE, verify("msg_p5jXN8AQM9LWM0D4loKWxJeK", TS_TEXT, SIG, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "no matching signature");
  CHECK_RC(ESG_ESIGNATURE, verify(MSG_ID, "1614265331", SIG, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "no matching signature");
  /* A payload with a NUL inside is signed over its whole length. */
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  CHECK_RC(ESG_OK, esg_webhook_sign(SECRET, "id", 1, "a\0b", 3, out, sizeof out));
  CHECK_RC(ESG_OK, esg_webhook_verify(one_secret, 1, "id", "1", out, "a\0b", 3, 1, 0));
  CHECK_RC(ESG_ESIGNATURE, esg_webhook_verify(one_secret, 1, "id", "1", out, "a\0c", 3, 1, 0));
  CHECK_RC(ESG_ESIGNATURE, esg_webhook_verify(one_secret, 1, "id", "1", out, "a", 1, 1, 0));
  /* Wrong secret. */
  const char *other[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"};
  CHECK_RC(ESG_ESIGNATURE, esg_webhook_verify(other, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD,
                                          strlen(PAYLOAD), TS, 0));
}

static void test_tolerance(void) {
  /* Default tolerance 300 s, both ways, inclusive. */
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, SIG, PAYLOAD, TS + 300));
  CHECK_RC(ESG_OK, verify(MSG_ID, TS_TEXT, SIG, PAYLOAD, TS - 300));
  CHECK_RC(ESG_ETIMEDOUT, verify(MSG_ID, TS_TEXT, SIG, PAYLOAD, TS + 301));
  CHECK_CONTAINS(esg_errmsg(NULL), "too old");
  CHECK_RC(ESG_ETIMEDOUT, verify(MSG_ID, TS_TEXT, SIG, PAYLOAD, TS - 301));
  CHECK_CONTAINS(esg_errmsg(NULL), "too new");
  CHECK_RC(ESG_ETIMEDOUT, verify(MSG_ID, TS_TEXT, SIG, PAYLOAD, TS + 86400));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-timestamp");
  /* A chosen tolerance. */
  size_t n = strlen(PAYLOAD);
  CHECK_RC(ESG_OK, esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS + 10, 10));
  CHECK_RC(ESG_ETIMEDOUT,
           esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS + 11, 10));
  CHECK_RC(ESG_ETIMEDOUT,
           esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS - 11, 10));
  CHECK_RC(ESG_OK, esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS + 3600, 3600));
  CHECK_RC(ESG_OK, esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS - 299, -5));
  /* Extreme clocks do not overflow. */
  CHECK_RC(ESG_ETIMEDOUT,
           esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, INT64_MIN, 10));
  CHECK_RC(ESG_ETIMEDOUT,
           esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, INT64_MAX, 10));
  CHECK_RC(ESG_OK,
           esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS, INT64_MAX));
  /* A leading zero is the same number, and the signature covers the number. */
  CHECK_RC(ESG_OK, verify(MSG_ID, "0" TS_TEXT, SIG, PAYLOAD, TS));
}

static void test_malformed_timestamp(void) {
  const char *bad[] = {"abc", "1614265330.5", "-1614265330", "+1614265330", " 1614265330",
                       "1614265330 ", "0x10", "1e9", "9999999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_RC(ESG_EINVAL, verify(MSG_ID, bad[i], SIG, PAYLOAD, TS));
    CHECK_CONTAINS(esg_errmsg(NULL), "malformed webhook-timestamp");
  }
  CHECK_RC(ESG_EINVAL, verify(MSG_ID, "", SIG, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-timestamp header is empty");
  CHECK_RC(ESG_EINVAL, verify(MSG_ID, NULL, SIG, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-timestamp header is missing");
}

static void test_missing_arguments(void) {
  size_t n = strlen(PAYLOAD);
  CHECK_RC(ESG_EINVAL, verify(NULL, TS_TEXT, SIG, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-id header is missing");
  CHECK_RC(ESG_EINVAL, verify("", TS_TEXT, SIG, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-id header is empty");
  CHECK_RC(ESG_EINVAL, verify(MSG_ID, TS_TEXT, NULL, PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-signature header is missing");
  CHECK_RC(ESG_EINVAL, verify(MSG_ID, TS_TEXT, "", PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-signature header is empty");
  CHECK_RC(ESG_EINVAL, verify(MSG_ID, TS_TEXT, "   ", PAYLOAD, TS));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook-signature header is empty");
  CHECK_RC(ESG_EINVAL, esg_webhook_verify(one_secret, 1, MSG_ID, TS_TEXT, SIG, NULL, n, TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "payload is NULL");
  CHECK_RC(ESG_EINVAL, esg_webhook_verify(NULL, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "no secrets");
  CHECK_RC(ESG_EINVAL, esg_webhook_verify(one_secret, 0, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "no secrets");
  const char *with_null[] = {SECRET, NULL};
  CHECK_RC(ESG_EINVAL, esg_webhook_verify(with_null, 2, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "secret 1 is NULL");
  const char *with_empty[] = {""};
  CHECK_RC(ESG_EINVAL, esg_webhook_verify(with_empty, 1, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "secret 0 is empty");

  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(NULL, MSG_ID, TS, PAYLOAD, n, out, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "secret is NULL");
  CHECK_STR(out, "");
  CHECK_RC(ESG_EINVAL, esg_webhook_sign("", MSG_ID, TS, PAYLOAD, n, out, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "secret is empty");
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, NULL, TS, PAYLOAD, n, out, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook id is NULL");
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, "", TS, PAYLOAD, n, out, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "webhook id is empty");
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, MSG_ID, TS, NULL, n, out, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "payload is NULL");
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, MSG_ID, -1, PAYLOAD, n, out, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "negative");
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, MSG_ID, TS, PAYLOAD, n, NULL, sizeof out));
  CHECK_CONTAINS(esg_errmsg(NULL), "out is NULL");
}

static void test_bad_secret(void) {
  const char *bad[] = {"whsec_", "whsec_!!!!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwQ",
                       "whsec_MfKQ 9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8G=KYq",
                       "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw===", "whsec_QQ=",
                       "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"};
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  size_t n = strlen(PAYLOAD);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_RC(ESG_EINVAL, esg_webhook_sign(bad[i], MSG_ID, TS, PAYLOAD, n, out, sizeof out));
    CHECK_CONTAINS(esg_errmsg(NULL), "secret");
    CHECK(strstr(esg_errmsg(NULL), "base64") || strstr(esg_errmsg(NULL), "no key"));
  }
  /* A bad secret anywhere in the list fails verification, even if another matches. */
  const char *list[] = {SECRET, "whsec_!!!!"};
  CHECK_RC(ESG_EINVAL, esg_webhook_verify(list, 2, MSG_ID, TS_TEXT, SIG, PAYLOAD, n, TS, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "secret 1");
  CHECK_CONTAINS(esg_errmsg(NULL), "base64");
  /* Over-long secrets are refused, not truncated. */
  char *big = malloc(ESG_WEBHOOK_SECRET_MAX + 16);
  CHECK(big != NULL);
  if (big) {
    memcpy(big, "whsec_", 6);
    memset(big + 6, 'A', ESG_WEBHOOK_SECRET_MAX + 4);
    big[6 + ESG_WEBHOOK_SECRET_MAX + 4] = '\0';
    CHECK_RC(ESG_EINVAL, esg_webhook_sign(big, MSG_ID, TS, PAYLOAD, n, out, sizeof out));
    CHECK_CONTAINS(esg_errmsg(NULL), "limit");
    /* The largest one accepted still works. */
    big[6 + ESG_WEBHOOK_SECRET_MAX] = '\0';
    CHECK_RC(ESG_OK, esg_webhook_sign(big, MSG_ID, TS, PAYLOAD, n, out, sizeof out));
    memset(big, 'r', ESG_WEBHOOK_SECRET_MAX + 1);
    big[ESG_WEBHOOK_SECRET_MAX + 1] = '\0';
    CHECK_RC(ESG_EINVAL, esg_webhook_sign(big, MSG_ID, TS, PAYLOAD, n, out, sizeof out));
    CHECK_CONTAINS(esg_errmsg(NULL), "limit");
    free(big);
  }
}

static void test_out_too_small(void) {
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  size_t n = strlen(PAYLOAD);
  memset(out, 'x', sizeof out);
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, MSG_ID, TS, PAYLOAD, n, out, 47));
  CHECK_CONTAINS(esg_errmsg(NULL), "too small");
  CHECK(out[0] == '\0');
  CHECK_RC(ESG_EINVAL, esg_webhook_sign(SECRET, MSG_ID, TS, PAYLOAD, n, out, 0));
  CHECK_CONTAINS(esg_errmsg(NULL), "too small");
  CHECK_RC(ESG_OK, esg_webhook_sign(SECRET, MSG_ID, TS, PAYLOAD, n, out, sizeof out));
  CHECK_STR(out, SIG);
  /* An error text is cleared by the next successful call. */
  CHECK_STR(esg_errmsg(NULL), "");
}

static void test_secret_generate(void) {
  char a[ESG_WEBHOOK_SECRET_SIZE], b[ESG_WEBHOOK_SECRET_SIZE];
  CHECK_RC(ESG_OK, esg_webhook_secret_generate(a, sizeof a));
  CHECK_RC(ESG_OK, esg_webhook_secret_generate(b, sizeof b));
  CHECK(strncmp(a, "whsec_", 6) == 0);
  CHECK(strlen(a) == 6 + 44);
  CHECK(strcmp(a, b) != 0);
  char sig[ESG_WEBHOOK_SIGNATURE_SIZE];
  const char *secrets[] = {a};
  CHECK_RC(ESG_OK, esg_webhook_sign(a, "id", 7, "p", 1, sig, sizeof sig));
  CHECK_RC(ESG_OK, esg_webhook_verify(secrets, 1, "id", "7", sig, "p", 1, 7, 0));
  CHECK_RC(ESG_EINVAL, esg_webhook_secret_generate(a, ESG_WEBHOOK_SECRET_SIZE - 1));
  CHECK_CONTAINS(esg_errmsg(NULL), "too small");
  CHECK_RC(ESG_EINVAL, esg_webhook_secret_generate(NULL, 64));
}

int main(void) {
  RUN(test_reference_vector);
  RUN(test_sign_roundtrip_raw_secret);
  RUN(test_multiple_signatures);
  RUN(test_rotation);
  RUN(test_tampering);
  RUN(test_tolerance);
  RUN(test_malformed_timestamp);
  RUN(test_missing_arguments);
  RUN(test_bad_secret);
  RUN(test_out_too_small);
  RUN(test_secret_generate);
  return tu_done();
}
