/* The envelope, hashes and ids: every required field, bad JSON, size limits. */
#include <stdlib.h>
#include "testutil.h"

static int parse(const char *json) {
  esg_event *ev = NULL;
  int rc = esg_event_parse(json, strlen(json), &ev);
  CHECK((rc == ESG_OK) == (ev != NULL));
  esg_event_free(ev);
  return rc;
}

static void test_valid(void) {
  const char *j = "{\"id\":\"e1\",\"type\":\"t\",\"timestamp\":1700000000000,\"partitionKey\":\"k\","
                  "\"tags\":{\"a\":1},\"raw\":[1,2],\"thing\":{\"x\":1}}";
  esg_event *ev = NULL;
  CHECK_RC(ESG_OK, esg_event_parse(j, strlen(j), &ev));
  CHECK_STR(esg_event_id(ev), "e1");
  CHECK_STR(esg_event_type(ev), "t");
  CHECK(esg_event_timestamp(ev) == 1700000000000LL);
  CHECK_STR(esg_event_partition_key(ev), "k");
  size_t len = 0;
  CHECK_STR(esg_event_json(ev, &len), j);
  CHECK(len == strlen(j));
  uint8_t h[32];
  esg_sha256(j, strlen(j), h);
  CHECK(memcmp(h, esg_event_hash(ev), 32) == 0);
  esg_event_free(ev);
  esg_event_free(NULL);
  /* optional fields may be absent */
  CHECK_RC(ESG_OK, parse("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":0}"));
  CHECK_RC(ESG_OK, parse("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":-5}"));
}

static void expect_bad(const char *json, int code, const char *needle) {
  CHECK_RC(code, parse(json));
  if (!strstr(esg_errmsg(NULL), needle)) {
    fprintf(stderr, "  for %s: message \"%s\" lacks \"%s\"\n", json, esg_errmsg(NULL), needle);
    CHECK(0);
  }
}

static void test_bad_envelopes(void) {
  expect_bad("{\"type\":\"t\",\"timestamp\":1}", ESG_EEVENT, "\"id\" is missing");
  expect_bad("{\"id\":5,\"type\":\"t\",\"timestamp\":1}", ESG_EEVENT, "\"id\" must be a string");
  expect_bad("{\"id\":\"\",\"type\":\"t\",\"timestamp\":1}", ESG_EEVENT, "\"id\" is empty");
  expect_bad("{\"id\":\"e\",\"timestamp\":1}", ESG_EEVENT, "\"type\" is missing");
  expect_bad("{\"id\":\"e\",\"type\":null,\"timestamp\":1}", ESG_EEVENT, "\"type\" must be a string");
  expect_bad("{\"id\":\"e\",\"type\":\"t\"}", ESG_EEVENT, "\"timestamp\" is missing");
  expect_bad("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":\"1\"}", ESG_EEVENT, "\"timestamp\" must be an integer");
  expect_bad("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1.5}", ESG_EEVENT, "\"timestamp\" must be an integer");
  expect_bad("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1e300}", ESG_EEVENT, "\"timestamp\" must be an integer");
  expect_bad("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1,\"partitionKey\":3}", ESG_EEVENT,
             "\"partitionKey\" must be a string");
  expect_bad("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1,\"tags\":[]}", ESG_EEVENT, "\"tags\" must be an object");
  expect_bad("[1,2]", ESG_EEVENT, "must be a JSON object");
  expect_bad("{\"id\":\"e\",", ESG_EJSON, "not valid JSON");
  expect_bad("", ESG_EJSON, "not valid JSON");
  expect_bad("{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1} trailing", ESG_EJSON, "not valid JSON");
  esg_event *ev = (esg_event *)1;
  CHECK_RC(ESG_EINVAL, esg_event_parse(NULL, 0, &ev));
  CHECK(ev == NULL);
  CHECK_RC(ESG_EINVAL, esg_event_parse("{}", 2, NULL));
}

static void test_huge(void) {
  size_t n = ESG_EVENT_MAX_BYTES + 100;
  char *big = malloc(n + 1);
  memset(big, ' ', n);
  big[n] = '\0';
  memcpy(big, "{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1}", 35);
  esg_event *ev = NULL;
  CHECK_RC(ESG_ETOOBIG, esg_event_parse(big, n, &ev));
  CHECK(ev == NULL);
  CHECK_CONTAINS(esg_errmsg(NULL), "limit");
  /* a long id is refused too: keys have a limit */
  char *j = malloc(ESG_KEY_MAX + 100);
  strcpy(j, "{\"id\":\"");
  memset(j + 7, 'x', ESG_KEY_MAX + 1);
  strcpy(j + 7 + ESG_KEY_MAX + 1, "\",\"type\":\"t\",\"timestamp\":1}");
  CHECK_RC(ESG_ETOOBIG, parse(j));
  free(j);
  free(big);
}

static void test_hashes(void) {
  char hex[65];
  uint8_t h[32];
  esg_sha256("abc", 3, h);
  esg_hex(h, 32, hex);
  CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  char a[65], b[65];
  const char *x = "{\"b\":1,\"a\":{\"y\":2,\"x\":[1,{\"q\":1,\"p\":2}]}}";
  const char *y = " { \"a\" : {\"x\":[1,{\"p\":2,\"q\":1}],\"y\":2}, \"b\":1 } ";
  CHECK_RC(ESG_OK, esg_content_hash(x, strlen(x), a));
  CHECK_RC(ESG_OK, esg_content_hash(y, strlen(y), b));
  CHECK_STR(a, b);
  CHECK_RC(ESG_OK, esg_content_hash("{\"a\":1}", 7, b));
  CHECK(strcmp(a, b) != 0);
  CHECK_RC(ESG_EJSON, esg_content_hash("{nope", 5, b));
  /* -0 is 0: a side that writes it back as 0 has not changed the content */
  CHECK_RC(ESG_OK, esg_content_hash("{\"n\":-0,\"m\":[-0.0]}", 19, a));
  CHECK_RC(ESG_OK, esg_content_hash("{\"m\":[0],\"n\":0}", 15, b));
  CHECK_STR(a, b);
}

static void test_uuid5(void) {
  char id[37];
  /* RFC 9562 appendix A.4: "www.example.com" in the DNS namespace */
  CHECK_RC(ESG_OK, esg_uuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com", 15, id));
  CHECK_STR(id, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
  char again[37];
  CHECK_RC(ESG_OK, esg_uuid5(ESG_UUID_NS_EVENT, "src/1/7", 7, id));
  CHECK_RC(ESG_OK, esg_uuid5(ESG_UUID_NS_EVENT, "src/1/7", 7, again));
  CHECK_STR(id, again);
  CHECK_RC(ESG_OK, esg_uuid5(ESG_UUID_NS_EVENT, "src/1/8", 7, again));
  CHECK(strcmp(id, again) != 0);
  CHECK_RC(ESG_EINVAL, esg_uuid5("not-a-uuid", "x", 1, id));
  CHECK_CONTAINS(esg_errmsg(NULL), "not a UUID");
  CHECK_RC(ESG_EINVAL, esg_uuid5(NULL, "x", 1, id));
}

static void test_status(void) {
  CHECK_STR(esg_status_name(ESG_DUPLICATE), "DUPLICATE");
  CHECK_STR(esg_status_name(ESG_EMISMATCH), "EMISMATCH");
  CHECK_STR(esg_status_name(12345), "UNKNOWN");
  CHECK_STR(esg_strerror(ESG_OK), "ok");
  CHECK_STR(esg_strerror(-999), "unknown status");
  CHECK_STR(esg_version(), ESG_VERSION_STRING);
  CHECK(esg_version_number() == ESG_VERSION_NUMBER);
}

/* Hostile envelopes (issue 14, defects 7 and 8): one parser decides for every binding. */
static int parse_rc(const char *json, size_t len) {
  esg_event *ev = NULL;
  int rc = esg_event_parse(json, len, &ev);
  esg_event_free(ev);
  return rc;
}
#define PARSE(lit) parse_rc(lit, sizeof(lit) - 1)

static void test_hostile_envelopes(void) {
  /* duplicate members, at the top or below, named in the error */
  CHECK_RC(ESG_EEVENT, PARSE("{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1,\"id\":\"b\"}"));
  CHECK_CONTAINS(esg_errmsg(NULL), "\"id\" twice");
  CHECK_RC(ESG_EEVENT, PARSE("{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1,\"x\":[{\"k\":1,\"k\":2}]}"));
  CHECK_CONTAINS(esg_errmsg(NULL), "\"k\" twice");
  /* many members: the sorted check */
  char big[4096];
  int n = snprintf(big, sizeof big, "{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1");
  for (int i = 0; i < 40; i++) n += snprintf(big + n, sizeof big - (size_t)n, ",\"m%d\":%d", i, i);
  char whole[4200];
  int w = snprintf(whole, sizeof whole, "%s}", big);
  CHECK_RC(ESG_OK, parse_rc(whole, (size_t)w));
  w = snprintf(whole, sizeof whole, "%s,\"m17\":0}", big);
  CHECK_RC(ESG_EEVENT, parse_rc(whole, (size_t)w));
  CHECK_CONTAINS(esg_errmsg(NULL), "\"m17\" twice");
  /* NUL: escaped, raw; an escaped backslash before u0000 is text, not a NUL */
  CHECK_RC(ESG_EEVENT, PARSE("{\"id\":\"a\\u0000b\",\"type\":\"t\",\"timestamp\":1}"));
  CHECK_CONTAINS(esg_errmsg(NULL), "NUL");
  CHECK_RC(ESG_EEVENT, PARSE("{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1,\"x\":\"\\u0000\"}"));
  CHECK_RC(ESG_EEVENT, PARSE("{\"id\":\"a\0b\",\"type\":\"t\",\"timestamp\":1}"));
  CHECK_RC(ESG_OK, PARSE("{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1,\"x\":\"\\\\u0000\"}"));
  /* invalid UTF-8: a stray continuation, an overlong form, an encoded surrogate, a cut
     sequence, past U+10FFFF; well-formed multi-byte text passes */
  CHECK_RC(ESG_EJSON, PARSE("{\"id\":\"\x80\",\"type\":\"t\",\"timestamp\":1}"));
  CHECK_CONTAINS(esg_errmsg(NULL), "UTF-8");
  CHECK_RC(ESG_EJSON, PARSE("{\"id\":\"\xc0\xaf\",\"type\":\"t\",\"timestamp\":1}"));
  CHECK_RC(ESG_EJSON, PARSE("{\"id\":\"\xed\xa0\x80\",\"type\":\"t\",\"timestamp\":1}"));
  CHECK_RC(ESG_EJSON, PARSE("{\"id\":\"a\",\"type\":\"t\",\"timestamp\":1,\"x\":\"\xe2\x82"));
  CHECK_RC(ESG_EJSON, PARSE("{\"id\":\"\xf4\x90\x80\x80\",\"type\":\"t\",\"timestamp\":1}"));
  CHECK_RC(ESG_OK, PARSE("{\"id\":\"caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80\",\"type\":\"t\",\"timestamp\":1}"));
  /* keys everywhere follow the same rule */
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, ":memory:", NULL));
  CHECK_RC(ESG_EINVAL, esg_claim(s, "bad\xff", NULL, 0, 1000, 1000, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "UTF-8");
  CHECK_RC(ESG_NEW, esg_claim(s, "gut-\xc3\xbc", NULL, 0, 1000, 1000, NULL));
  esg_store_close(s);
}

int main(void) {
  RUN(test_valid);
  RUN(test_bad_envelopes);
  RUN(test_huge);
  RUN(test_hashes);
  RUN(test_uuid5);
  RUN(test_status);
  RUN(test_hostile_envelopes);
  return tu_done();
}
