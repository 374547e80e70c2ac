/*
 * Latches: the flag helpers (read, set, clear, bad input) and the content latch
 * contract of DESIGN.md on a real store: an echo is suppressed and consumes its
 * latch, a genuine change passes and clears, expired latches never suppress,
 * several pending writes per (key, side), cancel, purge, bad input leaves the
 * store as it was. The two-system property test is in test_latch_property.c.
 */
#include <stdlib.h>
#include "testutil.h"

static int64_t now = 1700000000000;

static esg_event *parse(const char *json) {
  esg_event *ev = NULL;
  if (esg_event_parse(json, strlen(json), &ev) != ESG_OK) {
    fprintf(stderr, "parse failed: %s\n", esg_errmsg(NULL));
    exit(2);
  }
  return ev;
}

static int flagged_json(const char *json) {
  int f = -1;
  int rc = esg_latch_flagged_json(json, strlen(json), &f);
  return rc == ESG_OK ? f : rc;
}

static void test_flag_read(void) {
  esg_event *e1 = parse("{\"id\":\"e1\",\"type\":\"t\",\"timestamp\":1,\"latched\":true}");
  esg_event *e2 = parse("{\"id\":\"e2\",\"type\":\"t\",\"timestamp\":1,\"thing\":{\"id\":\"x\",\"latched\":true}}");
  esg_event *e3 = parse("{\"id\":\"e3\",\"type\":\"t\",\"timestamp\":1,\"thing\":{\"id\":\"x\"}}");
  esg_event *e4 = parse("{\"id\":\"e4\",\"type\":\"t\",\"timestamp\":1,\"latched\":\"true\"}");
  esg_event *e5 = parse("{\"id\":\"e5\",\"type\":\"t\",\"timestamp\":1,\"tags\":{\"latched\":true},"
                        "\"raw\":{\"latched\":true}}");
  esg_event *e6 = parse("{\"id\":\"e6\",\"type\":\"t\",\"timestamp\":1,\"latched\":false,\"thing\":{\"latched\":1}}");
  CHECK(esg_latch_flagged(e1) == 1);
  CHECK(esg_latch_flagged(e2) == 1);
  CHECK(esg_latch_flagged(e3) == 0);
  CHECK(esg_latch_flagged(e4) == 0); /* only the JSON boolean counts */
  CHECK(esg_latch_flagged(e5) == 0); /* tags and raw are not the entity */
  CHECK(esg_latch_flagged(e6) == 0);
  CHECK(esg_latch_flagged(NULL) == 0);
  esg_event_free(e1);
  esg_event_free(e2);
  esg_event_free(e3);
  esg_event_free(e4);
  esg_event_free(e5);
  esg_event_free(e6);
  CHECK(flagged_json("{\"latched\":true}") == 1);
  CHECK(flagged_json(" {\"a\":{\"latched\":true}} \n") == 1);
  CHECK(flagged_json("{}") == 0);
}

static void test_flag_bad_input(void) {
  int f = 7;
  CHECK_RC(ESG_EJSON, esg_latch_flagged_json("{nope", 5, &f));
  CHECK_CONTAINS(esg_errmsg(NULL), "not valid JSON");
  CHECK(f == 0);
  CHECK_RC(ESG_EJSON, esg_latch_flagged_json("[true]", 6, &f));
  CHECK_CONTAINS(esg_errmsg(NULL), "JSON object");
  CHECK_RC(ESG_EJSON, esg_latch_flagged_json("{} x", 4, &f));
  CHECK_RC(ESG_EINVAL, esg_latch_flagged_json(NULL, 0, &f));
  CHECK_RC(ESG_EINVAL, esg_latch_flagged_json("{}", 2, NULL));
  size_t big = ESG_EVENT_MAX_BYTES + 1;
  char *doc = malloc(big);
  memset(doc, ' ', big);
  doc[0] = '{';
  doc[big - 1] = '}';
  CHECK_RC(ESG_ETOOBIG, esg_latch_flagged_json(doc, big, &f));
  CHECK_CONTAINS(esg_errmsg(NULL), "limit");
  char *out = (char *)1;
  CHECK_RC(ESG_ETOOBIG, esg_latch_mark(doc, big, 1, &out, NULL));
  CHECK(out == NULL);
  free(doc);
  out = (char *)1;
  CHECK_RC(ESG_EJSON, esg_latch_mark("\"str\"", 5, 1, &out, NULL));
  CHECK(out == NULL);
  CHECK_RC(ESG_EINVAL, esg_latch_mark("{}", 2, 1, NULL, NULL));
}

static void test_flag_mark(void) {
  const char *doc = "{\"id\":\"x\",\"latched\":false,\"n\":1}";
  char *set = NULL, *clr = NULL;
  size_t n = 0;
  CHECK_RC(ESG_OK, esg_latch_mark(doc, strlen(doc), 1, &set, &n));
  CHECK_STR(set, "{\"id\":\"x\",\"latched\":true,\"n\":1}");
  CHECK(n == strlen(set));
  CHECK(flagged_json(set) == 1);
  CHECK_RC(ESG_OK, esg_latch_mark(set, n, 0, &clr, NULL));
  CHECK_STR(clr, "{\"id\":\"x\",\"n\":1}");
  CHECK(flagged_json(clr) == 0);
  esg_free(set);
  esg_free(clr);
  /* clearing an envelope clears the entity's flag too; tags and raw are left alone */
  const char *env = "{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1,\"latched\":true,\"thing\":{\"latched\":true,\"a\":1},"
                    "\"raw\":{\"latched\":true}}";
  CHECK_RC(ESG_OK, esg_latch_mark(env, strlen(env), 0, &clr, NULL));
  CHECK_STR(clr, "{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1,\"thing\":{\"a\":1},\"raw\":{\"latched\":true}}");
  esg_event *ev = parse(clr);
  CHECK(esg_latch_flagged(ev) == 0);
  esg_event_free(ev);
  esg_free(clr);
  /* setting an unflagged envelope: still a valid envelope, now latched */
  const char *plain = "{\"id\":\"e\",\"type\":\"t\",\"timestamp\":1}";
  CHECK_RC(ESG_OK, esg_latch_mark(plain, strlen(plain), 1, &set, NULL));
  ev = parse(set);
  CHECK(esg_latch_flagged(ev) == 1);
  esg_event_free(ev);
  esg_free(set);
}

static int pending(esg_store *s, const char *key, const char *side) {
  int n = -1;
  int rc = esg_latch_pending(s, key, side, &n);
  return rc == ESG_OK ? n : -100 + rc;
}

static void test_echo_and_genuine(void) {
  esg_store *s = tu_open(tu_store("latch1.db"), &now);
  /* nothing pending: genuine, and nothing is written */
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h1"));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK(pending(s, "k", "B") == 1);
  CHECK(pending(s, "k", "A") == 0); /* sides are separate */
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "A", "h1"));
  CHECK(pending(s, "k", "B") == 1);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  CHECK(pending(s, "k", "B") == 0);
  /* consumed: the same state coming again is a genuine change */
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h1"));
  /* a different hash is genuine and clears what was pending */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h3"));
  CHECK(pending(s, "k", "B") == 0);
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h2"));
  /* keys are separate */
  CHECK_RC(ESG_OK, esg_latch(s, "k1", "B", "h", 60000));
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k2", "B", "h"));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k1", "B", "h"));
  esg_store_close(s);
}

static void test_several_pending(void) {
  esg_store *s = tu_open(tu_store("latch2.db"), &now);
  /* two quick writes, both echoes come back in order: both suppressed */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK(pending(s, "k", "B") == 2);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h2"));
  CHECK(pending(s, "k", "B") == 0);
  /* the side coalesced them (only the last state is reported): the older latch goes too */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h2"));
  CHECK(pending(s, "k", "B") == 0);
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h1")); /* a later restore of h1 is real */
  /* writes that go back to an earlier state: h1, h2, h1. A report of h1 matches the
     newest h1 (it may be the last write's echo, the side having coalesced the others)
     and consumes all three, so that nothing is left pending to swallow a genuine edit
     back to h2 (docs/latching.md); a side that reports every write then sends h2 and
     h1 on as changes, once */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  CHECK(pending(s, "k", "B") == 0);
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h2")); /* a user's edit back to h2 is not lost */
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h1"));
  /* h1, h2, h1, h3: a report of h1 consumes up to the newest h1; h3 is still ahead */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h3", 60000));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  CHECK(pending(s, "k", "B") == 1);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h3"));
  CHECK(pending(s, "k", "B") == 0);
  /* a genuine change while two writes are pending clears the newest only: the older
     echo still comes first and is suppressed; the newest must cross back */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h3"));
  CHECK(pending(s, "k", "B") == 1);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h2"));
  CHECK(pending(s, "k", "B") == 0);
  /* the bound: beyond ESG_LATCH_MAX_PENDING the oldest are dropped */
  char h[16];
  for (int i = 0; i < ESG_LATCH_MAX_PENDING + 4; i++) {
    snprintf(h, sizeof h, "h%d", i);
    CHECK_RC(ESG_OK, esg_latch(s, "k", "C", h, 60000));
  }
  CHECK(pending(s, "k", "C") == ESG_LATCH_MAX_PENDING);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "C", "h4")); /* the oldest kept */
  CHECK(pending(s, "k", "C") == ESG_LATCH_MAX_PENDING - 1);
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "C", "h0"));
  esg_store_close(s);
}

static void test_expiry(void) {
  esg_store *s = tu_open(tu_store("latch3.db"), &now);
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 1000));
  now += 999;
  CHECK(pending(s, "k", "B") == 1);
  now += 1;
  CHECK(pending(s, "k", "B") == 0);
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h1")); /* expired latches never suppress */
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check(s, "k", "B", "h1"));
  /* an expired older latch does not hide a live newer one */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 10));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  now += 20;
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  /* purge deletes only expired rows */
  CHECK_RC(ESG_OK, esg_latch(s, "p1", "B", "h", 10));
  CHECK_RC(ESG_OK, esg_latch(s, "p2", "B", "h", 10));
  CHECK_RC(ESG_OK, esg_latch(s, "p3", "B", "h", 60000));
  now += 10;
  int64_t n = -1;
  CHECK_RC(ESG_OK, esg_latches_purge(s, &n));
  CHECK(n == 2);
  CHECK(pending(s, "p3", "B") == 1);
  CHECK_RC(ESG_OK, esg_latches_purge(s, NULL));
  esg_store_close(s);
}

static void test_cancel_and_durability(void) {
  const char *path = tu_store("latch4.db");
  esg_store *s = tu_open(path, &now);
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h1", 60000));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h2", 60000));
  CHECK_RC(ESG_OK, esg_latch_cancel(s, "k", "B", "h2")); /* the write of h2 failed */
  CHECK_RC(ESG_NOT_FOUND, esg_latch_cancel(s, "k", "B", "h2"));
  CHECK_CONTAINS(esg_errmsg(s), "no latch pending");
  CHECK(pending(s, "k", "B") == 1);
  /* latches survive a restart */
  s = tu_reopen(s, path, &now);
  CHECK(pending(s, "k", "B") == 1);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h1"));
  /* inside a batch that rolls back, nothing happened */
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h3", 60000));
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h3"));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h4", 60000));
  CHECK_RC(ESG_OK, esg_store_rollback(s));
  CHECK(pending(s, "k", "B") == 1);
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h3"));
  esg_store_close(s);
}

static void test_docs(void) {
  esg_store *s = tu_open(tu_store("latch5.db"), &now);
  const char *w = "{\"a\":1,\"b\":[1,2]}";
  const char *echo = "{ \"b\": [1, 2], \"a\": 1 }"; /* same content, other order and spacing */
  CHECK_RC(ESG_OK, esg_latch_doc(s, "k", "B", w, strlen(w), 60000));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check_doc(s, "k", "B", echo, strlen(echo)));
  CHECK_RC(ESG_OK, esg_latch_doc(s, "k", "B", w, strlen(w), 60000));
  CHECK_RC(ESG_LATCH_GENUINE, esg_latch_check_doc(s, "k", "B", "{\"a\":2}", 7));
  /* a hash from esg_content_hash and a doc latch agree */
  char h[65];
  CHECK_RC(ESG_OK, esg_content_hash(w, strlen(w), h));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", h, 60000));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check_doc(s, "k", "B", w, strlen(w)));
  /* bad documents: an error naming the problem, nothing written or consumed */
  CHECK_RC(ESG_OK, esg_latch_doc(s, "k", "B", w, strlen(w), 60000));
  CHECK_RC(ESG_EJSON, esg_latch_doc(s, "k", "B", "{oops", 5, 60000));
  CHECK_CONTAINS(esg_errmsg(s), "latch document");
  CHECK_RC(ESG_EJSON, esg_latch_check_doc(s, "k", "B", "not json", 8));
  CHECK_RC(ESG_EINVAL, esg_latch_doc(s, "k", "B", NULL, 0, 60000));
  CHECK_RC(ESG_ETOOBIG, esg_latch_doc(s, "k", "B", w, (size_t)ESG_EVENT_MAX_BYTES + 1, 60000));
  CHECK(pending(s, "k", "B") == 1);
  esg_store_close(s);
}

static void test_bad_input(void) {
  esg_store *s = tu_open(tu_store("latch6.db"), &now);
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h", 60000));
  CHECK_RC(ESG_EINVAL, esg_latch(s, NULL, "B", "h", 60000));
  CHECK_CONTAINS(esg_errmsg(s), "latch key is NULL");
  CHECK_RC(ESG_EINVAL, esg_latch(s, "", "B", "h", 60000));
  CHECK_CONTAINS(esg_errmsg(s), "latch key is empty");
  CHECK_RC(ESG_EINVAL, esg_latch(s, "k", "", "h", 60000));
  CHECK_CONTAINS(esg_errmsg(s), "latch side is empty");
  CHECK_RC(ESG_EINVAL, esg_latch(s, "k", "B", NULL, 60000));
  CHECK_CONTAINS(esg_errmsg(s), "latch content hash is NULL");
  CHECK_RC(ESG_EINVAL, esg_latch(s, "k", "B", "h", 0));
  CHECK_CONTAINS(esg_errmsg(s), "ttl");
  CHECK_RC(ESG_EINVAL, esg_latch(s, "k", "B", "h", -5));
  char big[ESG_KEY_MAX + 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_RC(ESG_ETOOBIG, esg_latch(s, big, "B", "h", 60000));
  CHECK_CONTAINS(esg_errmsg(s), "limit");
  CHECK_RC(ESG_ETOOBIG, esg_latch_check(s, "k", "B", big));
  CHECK_RC(ESG_EINVAL, esg_latch_check(s, "k", NULL, "h"));
  CHECK_RC(ESG_EINVAL, esg_latch_cancel(s, "", "B", "h"));
  CHECK_RC(ESG_EINVAL, esg_latch_pending(s, "k", "B", NULL));
  CHECK_RC(ESG_EINVAL, esg_latch_check(NULL, "k", "B", "h"));
  CHECK_CONTAINS(esg_errmsg(NULL), "store is NULL");
  CHECK(pending(s, "k", "B") == 1); /* the store is as it was */
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h"));
  esg_store_close(s);
}

static void test_group_commit(void) {
  /* in group-commit mode latches join the open group and are seen at once by the same handle */
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = &now;
  o.group_commit_ms = 60000;
  o.group_commit_max = 1000;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, tu_store("latch7.db"), &o));
  if (!s) return;
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h", 60000));
  CHECK_RC(ESG_LATCH_ECHO, esg_latch_check(s, "k", "B", "h"));
  CHECK_RC(ESG_OK, esg_latch(s, "k", "B", "h", 60000));
  CHECK_RC(ESG_OK, esg_store_flush(s));
  CHECK(pending(s, "k", "B") == 1);
  esg_store_close(s);
}

int main(void) {
  RUN(test_flag_read); /* no store */
  RUN(test_flag_bad_input);
  RUN(test_flag_mark);
  TU_SUITE {
    RUN(test_echo_and_genuine);
    RUN(test_several_pending);
    RUN(test_expiry);
    RUN(test_cancel_and_durability);
    RUN(test_docs);
    RUN(test_bad_input);
    RUN(test_group_commit);
  }
  return tu_done();
}
