/*
 * Retry-After parsing, esg_egress_parse_retry_after. The input is the header value. Never
 * a negative delay; ESG_OK or ESG_EINVAL only; delta seconds do not depend on now and are
 * exactly the number (clamped) in ms; a date's delay does not grow as now moves on.
 */
#include <string.h>
#include <esg.h>
#include "fuzz.h"

static const int64_t nows[] = {0, INT64_C(1700000000000), INT64_C(1700000000001), INT64_C(4102444800000),
                               INT64_C(253402300799000)};
#define NNOWS (sizeof nows / sizeof nows[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *v = malloc(size + 1);
  if (!v) return 0;
  memcpy(v, data, size);
  v[size] = '\0';
  int64_t d[NNOWS];
  int rc0 = 0;
  for (size_t i = 0; i < NNOWS; i++) {
    d[i] = -1;
    int rc = esg_egress_parse_retry_after(v, nows[i], &d[i]);
    FUZZ_CHECK_RC(rc == ESG_OK || rc == ESG_EINVAL, rc, NULL);
    if (i == 0) rc0 = rc;
    FUZZ_CHECK(rc == rc0); /* the form does not depend on now */
    if (rc == ESG_OK) FUZZ_CHECK(d[i] >= 0);
    else FUZZ_CHECK(esg_errmsg(NULL)[0] != '\0');
  }
  if (rc0 == ESG_OK) {
    for (size_t i = 1; i < NNOWS; i++) FUZZ_CHECK(d[i] <= d[i - 1]);
    /* delta-seconds: optional blanks, digits, optional trailing white space */
    const char *p = v;
    while (*p == ' ' || *p == '\t') p++;
    const char *q = p;
    while (*q >= '0' && *q <= '9') q++;
    const char *r = q;
    while (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n') r++;
    if (q > p && *r == '\0') {
      int64_t s = 0; /* saturates just past the clamp */
      for (const char *c = p; c < q; c++)
        if (s <= INT64_MAX / 1000) s = s * 10 + (*c - '0');
      if (s > INT64_MAX / 1000) s = INT64_MAX / 1000;
      for (size_t i = 0; i < NNOWS; i++) FUZZ_CHECK(d[i] == s * 1000);
    }
  }
  free(v);
  return 0;
}
