/*
 * The envelope parser, esg_event_parse. Whatever the bytes: only the documented codes,
 * text with every failure; on success the event keeps the bytes exactly (esg_event_json
 * round trip equals the input), their SHA-256, a non-empty id and type, and parsing its
 * own bytes again gives the same fields.
 */
#include <string.h>
#include <esg.h>
#include "fuzz.h"

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  esg_event *ev = NULL;
  int rc = esg_event_parse((const char *)data, size, &ev);
  if (rc != ESG_OK) {
    FUZZ_CHECK_RC(rc == ESG_EJSON || rc == ESG_EEVENT || rc == ESG_ETOOBIG, rc, NULL);
    FUZZ_CHECK(ev == NULL);
    FUZZ_CHECK(esg_errmsg(NULL)[0] != '\0');
    return 0;
  }
  FUZZ_CHECK(ev != NULL);
  size_t n = 0;
  const char *json = esg_event_json(ev, &n);
  FUZZ_CHECK(n == size && memcmp(json, data, size) == 0 && json[n] == '\0');
  uint8_t h[32];
  esg_sha256(data, size, h);
  FUZZ_CHECK(memcmp(esg_event_hash(ev), h, 32) == 0);
  const char *id = esg_event_id(ev), *type = esg_event_type(ev);
  FUZZ_CHECK(id && *id && type && *type);

  esg_event *again = NULL;
  rc = esg_event_parse(json, n, &again);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  FUZZ_CHECK(strcmp(esg_event_id(again), id) == 0 && strcmp(esg_event_type(again), type) == 0);
  FUZZ_CHECK(esg_event_timestamp(again) == esg_event_timestamp(ev));
  FUZZ_CHECK(same_str(esg_event_partition_key(again), esg_event_partition_key(ev)));
  esg_event_free(again);
  esg_event_free(ev);
  return 0;
}
