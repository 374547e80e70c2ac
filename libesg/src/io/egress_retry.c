/*
 * The egress retry policy, kept apart from the engine so it reads as one rule:
 * which failures retry (network errors, 408, 425, 429, 5xx), how long to wait
 * (exponential backoff with full jitter: uniform in [0, min(cap, base * 2^n)]),
 * and how a Retry-After answer overrides the wait (delta seconds or HTTP-date).
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "egress_int.h"
#include "core/internal.h"

/* xorshift64*: fast, seedable, plenty for jitter. */
uint64_t esg__rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

int64_t esg__backoff(uint64_t *rng, int retry, int64_t base, int64_t cap) {
  if (retry < 1) retry = 1;
  int64_t ceil = base;
  for (int i = 1; i < retry && ceil < cap; i++) ceil = ceil > INT64_MAX / 2 ? INT64_MAX : ceil * 2;
  if (ceil > cap) ceil = cap;
  if (ceil <= 0) return 0;
  /* full jitter: every value in [0, ceil] alike, so synchronised clients spread out */
  return (int64_t)(esg__rng_next(rng) % ((uint64_t)ceil + 1));
}

bool esg__curl_permanent(int curl_code) {
  switch (curl_code) {
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
  case CURLE_NOT_BUILT_IN:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_UNKNOWN_OPTION:
  case CURLE_OUT_OF_MEMORY: /* ours, not the receiver's; a retry would only repeat it */
    return true;
  default:
    return false;
  }
}

int esg_egress_retryable(int curl_code, int http_status) {
  if (curl_code != 0) return esg__curl_permanent(curl_code) ? 0 : 1;
  if (http_status >= 200 && http_status < 300) return 0;
  if (http_status == 408 || http_status == 425 || http_status == 429) return 1;
  if (http_status >= 500 && http_status < 600) return 1;
  return 0; /* other 4xx, 3xx (we do not follow redirects), 1xx: no retry helps */
}

int esg_egress_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms) {
  if (!value || !delay_ms) return esg__fail(NULL, ESG_EINVAL, "Retry-After: NULL argument");
  while (*value == ' ' || *value == '\t') value++;
  if (isdigit((unsigned char)*value)) {
    char *end;
    errno = 0;
    long long s = strtoll(value, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
    if (*end == '\0') {
      if (errno == ERANGE || s > INT64_MAX / 1000) s = INT64_MAX / 1000;
      *delay_ms = (int64_t)s * 1000;
      return ESG_OK;
    }
    /* digits then more: not delta-seconds; may still be a date ("06 Nov 1994"?) */
  }
  time_t t = curl_getdate(value, NULL);
  if (t == (time_t)-1) return esg__fail(NULL, ESG_EINVAL, "Retry-After: not seconds nor an HTTP-date: %.64s", value);
  int64_t d = (t > INT64_MAX / 1000 ? INT64_MAX / 1000 : (int64_t)t) * 1000 - now_ms; /* clamped as delta seconds are */
  *delay_ms = d > 0 ? d : 0;
  return ESG_OK;
}
