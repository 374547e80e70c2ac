/*
 * Egress delivery against a real local HTTP server (httpd.c, included below):
 * each retry class, Retry-After in both forms (on a fake clock), jitter bounds
 * and seeding, timeouts, per-key order while another key fails, the rate limit,
 * fault records and resubmission, the idempotency header, connection reuse,
 * cancel on close, and a SIGKILLed delivering process whose work a second one
 * takes over without losing an event.
 */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "httpd.c"
#include "testutil.h"

#define MAXO 512

typedef struct outc {
  char id[64];
  int outcome, status, attempts, store_rc;
  int64_t fault_id, first, last;
  char error[256], body[64];
} outc;

typedef struct retry_rec {
  char id[64];
  int attempt, status;
  int64_t delay;
} retry_rec;

typedef struct ctx {
  int n, nr;
  outc o[MAXO];
  retry_rec r[MAXO];
} ctx;

static void on_done(void *ud, const esg_egress_result *r) {
  ctx *c = ud;
  if (c->n >= MAXO) return;
  outc *o = &c->o[c->n++];
  snprintf(o->id, sizeof o->id, "%s", r->event_id);
  o->outcome = (int)r->outcome;
  o->status = r->http_status;
  o->attempts = r->attempts;
  o->store_rc = r->store_rc;
  o->fault_id = r->fault_id;
  o->first = r->first_attempt;
  o->last = r->last_attempt;
  snprintf(o->error, sizeof o->error, "%s", r->error);
  snprintf(o->body, sizeof o->body, "%.*s", (int)(r->body_len < 60 ? r->body_len : 60), (const char *)r->body);
}

static void on_retry(void *ud, const char *id, int attempt, int status, int64_t delay, const char *err) {
  (void)err;
  ctx *c = ud;
  if (c->nr >= MAXO) return;
  retry_rec *r = &c->r[c->nr++];
  snprintf(r->id, sizeof r->id, "%s", id);
  r->attempt = attempt;
  r->status = status;
  r->delay = delay;
}

static outc *outcome_of(ctx *c, const char *id) {
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->o[i].id, id) == 0) return &c->o[i];
  return NULL;
}

/* Fast defaults for tests: small backoffs. */
static esg_egress_opts fast_opts(ctx *c) {
  esg_egress_opts o = {0};
  o.backoff_base_ms = 5;
  o.backoff_cap_ms = 20;
  o.max_attempts = 4;
  o.timeout_ms = 2000;
  o.on_done = on_done;
  o.on_retry = on_retry;
  o.ud = c;
  o.seed = 42;
  return o;
}

static esg_egress *open_e(esg_store *s, const esg_egress_opts *o) {
  esg_egress *e = NULL;
  int rc = esg_egress_open(&e, s, o);
  if (rc != ESG_OK) {
    fprintf(stderr, "esg_egress_open: %s: %s\n", esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  return e;
}

static char *event_json(const char *id, const char *pkey) {
  static char buf[512];
  snprintf(buf, sizeof buf,
           "{\"id\":\"%s\",\"type\":\"thing-updated\",\"timestamp\":1700000000000,\"partitionKey\":\"%s\",\"thing\":{}}",
           id, pkey ? pkey : "none");
  return buf;
}

static int submit(esg_egress *e, const char *url, const char *id, const char *pkey) {
  esg_egress_request r = {0};
  r.event_id = id;
  r.url = url;
  r.partition_key = pkey;
  const char *b = event_json(id, pkey);
  r.body = b;
  r.body_len = strlen(b);
  return esg_egress_submit(e, &r);
}

typedef struct fault_seen {
  int n;
  int64_t id;
  char event_id[64], stage[32], error[256], event[512];
  int status, attempts;
  int64_t first, last;
} fault_seen;

static int fault_cb(void *ud, const esg_fault *f) {
  fault_seen *s = ud;
  s->n++;
  s->id = f->id;
  snprintf(s->event_id, sizeof s->event_id, "%s", f->event_id);
  snprintf(s->stage, sizeof s->stage, "%s", f->stage);
  snprintf(s->error, sizeof s->error, "%s", f->error);
  snprintf(s->event, sizeof s->event, "%.*s", (int)f->event_len, f->event ? f->event : "");
  s->status = f->http_status;
  s->attempts = f->attempts;
  s->first = f->first_attempt;
  s->last = f->last_attempt;
  return 0;
}

/* ----------------------------------------------------------------- tests -- */

static void test_policy_functions(void) {
  CHECK(esg_egress_retryable(0, 200) == 0);
  CHECK(esg_egress_retryable(0, 204) == 0);
  int retry[] = {408, 425, 429, 500, 502, 503, 504, 599};
  for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) CHECK(esg_egress_retryable(0, retry[i]) == 1);
  int fail[] = {301, 400, 401, 403, 404, 409, 410, 413, 422};
  for (size_t i = 0; i < sizeof fail / sizeof *fail; i++) CHECK(esg_egress_retryable(0, fail[i]) == 0);
  CHECK(esg_egress_retryable(7 /* CURLE_COULDNT_CONNECT */, 0) == 1);
  CHECK(esg_egress_retryable(28 /* CURLE_OPERATION_TIMEDOUT */, 0) == 1);
  CHECK(esg_egress_retryable(3 /* CURLE_URL_MALFORMAT */, 0) == 0);

  int64_t d = -1;
  CHECK_RC(ESG_OK, esg_egress_parse_retry_after("120", 0, &d));
  CHECK(d == 120000);
  CHECK_RC(ESG_OK, esg_egress_parse_retry_after(" 0", 0, &d));
  CHECK(d == 0);
  int64_t t0 = 784111777000LL; /* Sun, 06 Nov 1994 08:49:37 GMT */
  CHECK_RC(ESG_OK, esg_egress_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t0 - 5000, &d));
  CHECK(d == 5000);
  CHECK_RC(ESG_OK, esg_egress_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", t0 - 7000, &d));
  CHECK(d == 7000);
  CHECK_RC(ESG_OK, esg_egress_parse_retry_after("Sun Nov  6 08:49:37 1994", t0 - 1000, &d));
  CHECK(d == 1000);
  CHECK_RC(ESG_OK, esg_egress_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t0 + 60000, &d));
  CHECK(d == 0); /* a date in the past: go now */
  CHECK_RC(ESG_EINVAL, esg_egress_parse_retry_after("soon", 0, &d));
  CHECK_RC(ESG_EINVAL, esg_egress_parse_retry_after("12abc", 0, &d));
  CHECK_STR(esg_egress_outcome_name(ESG_EGRESS_EXHAUSTED), "exhausted");
}

static void test_bad_input(void) {
  esg_egress *e = NULL;
  esg_egress_opts o = {0};
  o.max_in_flight = -1;
  CHECK_RC(ESG_EINVAL, esg_egress_open(&e, NULL, &o));
  CHECK(e == NULL);
  o.max_in_flight = 0;
  o.idempotency_header = "Bad Header:";
  CHECK_RC(ESG_EINVAL, esg_egress_open(&e, NULL, &o));
  esg_egress_close(NULL);
  e = open_e(NULL, NULL);
  esg_egress_request r = {0};
  r.event_id = "evt-1";
  CHECK_RC(ESG_EINVAL, esg_egress_submit(e, &r)); /* no url */
  CHECK_CONTAINS(esg_errmsg(e), "url");
  r.url = "http://127.0.0.1:1/";
  r.event_id = "evt\r\nX-Evil: 1";
  CHECK_RC(ESG_EINVAL, esg_egress_submit(e, &r));
  r.event_id = "evt-1";
  const char *hdrs[] = {"X-Ok: 1", "X-Bad: 1\r\nX-Evil: 2"};
  r.headers = hdrs;
  r.n_headers = 2;
  CHECK_RC(ESG_EINVAL, esg_egress_submit(e, &r));
  r.n_headers = 0;
  CHECK_RC(ESG_EINVAL, esg_egress_resubmit(e, 1, &r)); /* no store */
  CHECK_RC(ESG_OK, esg_egress_run(e, 0)); /* nothing queued: idle */
  esg_egress_close(e);
}

/* Delivery, the request as received, the claim completed with status and digest. */
static void test_deliver_and_claim(void) {
  httpd *h = httpd_start();
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-basic.db"), &now);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  esg_egress *e = open_e(s, &o);
  char url[128];
  httpd_url(h, "/hook?x=1", url, sizeof url);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-1", NULL, 0, 30000, 3600000, &ci));
  const char *hdrs[] = {"X-Trace: abc"};
  esg_egress_request r = {0};
  r.event_id = "evt-1";
  r.url = url;
  r.headers = hdrs;
  r.n_headers = 1;
  const char *body = event_json("evt-1", "k1");
  r.body = body;
  r.body_len = strlen(body);
  r.claim_key = "evt-1";
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  esg_egress_stats st;
  esg_egress_get_stats(e, &st);
  CHECK(st.submitted == 1 && st.queued == 1 && st.in_flight == 0);
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 1);
  CHECK(c->o[0].outcome == ESG_EGRESS_DELIVERED && c->o[0].status == 200 && c->o[0].attempts == 1);
  CHECK(c->o[0].store_rc == ESG_OK);
  CHECK_STR(c->o[0].body, "ok");
  CHECK_STR(c->o[0].error, "");
  CHECK(httpd_count(h) == 1);
  httpd_req q;
  CHECK(httpd_get(h, 0, &q) == 0);
  CHECK_STR(q.method, "POST");
  CHECK_STR(q.path, "/hook?x=1");
  CHECK(q.body_len == strlen(body) && strcmp(q.body, body) == 0);
  char v[256];
  CHECK_STR(httpd_header(&q, "Idempotency-Key", v, sizeof v), "evt-1");
  CHECK_STR(httpd_header(&q, "Content-Type", v, sizeof v), "application/json");
  CHECK_STR(httpd_header(&q, "X-Trace", v, sizeof v), "abc");
  CHECK(httpd_header(&q, "Expect", v, sizeof v) == NULL || v[0] == '\0');
  /* the claim is completed: a duplicate sees the status and the digest of "ok" */
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "evt-1", NULL, 0, 30000, 3600000, &ci));
  char res[256];
  snprintf(res, sizeof res, "%.*s", (int)ci.result_len, (const char *)ci.result);
  uint8_t d[32];
  char hex[65];
  esg_sha256("ok", 2, d);
  esg_hex(d, 32, hex);
  char want[200];
  snprintf(want, sizeof want, "{\"status\":200,\"sha256\":\"%s\"}", hex);
  CHECK_STR(res, want);
  esg_egress_get_stats(e, &st);
  CHECK(st.delivered == 1 && st.attempts == 1 && st.queued == 0 && st.connects == 1);

  /* methods: PUT with a body and its own content type, GET without */
  const char *ct[] = {"Content-Type: text/plain"};
  r.method = "PUT";
  r.event_id = "evt-put";
  r.headers = ct;
  r.claim_key = NULL;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  esg_egress_request g = {0};
  g.event_id = "evt-get";
  g.method = "GET";
  g.url = url;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &g));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(httpd_count(h) == 3);
  for (int i = 1; i < 3; i++) {
    CHECK(httpd_get(h, i, &q) == 0);
    if (strcmp(q.method, "PUT") == 0) {
      CHECK_STR(httpd_header(&q, "Content-Type", v, sizeof v), "text/plain");
      CHECK(q.body_len == strlen(body));
    } else {
      CHECK_STR(q.method, "GET");
      CHECK(q.body_len == 0);
      CHECK_STR(httpd_header(&q, "Idempotency-Key", v, sizeof v), "evt-get");
    }
  }
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

/* Every retry class ends delivered on the third attempt; other 4xx fail at once with a fault. */
static void test_retry_classes(void) {
  httpd *h = httpd_start();
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-classes.db"), &now);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 8;
  esg_egress *e = open_e(s, &o);
  int retry[] = {408, 425, 429, 500, 502, 503, 504};
  int fail[] = {400, 401, 403, 404, 409, 422};
  char path[64], url[128], id[64];
  for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) {
    snprintf(path, sizeof path, "/r%d", retry[i]);
    httpd_rule rule = {path, 2, retry[i], NULL, 0, 0, NULL, NULL};
    httpd_rule_add(h, &rule);
    httpd_url(h, path, url, sizeof url);
    snprintf(id, sizeof id, "evt-r%d", retry[i]);
    CHECK_RC(ESG_OK, submit(e, url, id, NULL));
  }
  for (size_t i = 0; i < sizeof fail / sizeof *fail; i++) {
    snprintf(path, sizeof path, "/f%d", fail[i]);
    httpd_rule rule = {path, 0, fail[i], NULL, 0, 0, NULL, NULL};
    httpd_rule_add(h, &rule);
    httpd_url(h, path, url, sizeof url);
    snprintf(id, sizeof id, "evt-f%d", fail[i]);
    CHECK_RC(ESG_OK, submit(e, url, id, NULL));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) {
    snprintf(id, sizeof id, "evt-r%d", retry[i]);
    outc *x = outcome_of(c, id);
    CHECK(x && x->outcome == ESG_EGRESS_DELIVERED && x->attempts == 3 && x->status == 200);
  }
  outc *x;
  for (size_t i = 0; i < sizeof fail / sizeof *fail; i++) {
    snprintf(id, sizeof id, "evt-f%d", fail[i]);
    x = outcome_of(c, id);
    CHECK(x && x->outcome == ESG_EGRESS_REFUSED && x->attempts == 1 && x->status == fail[i] && x->fault_id > 0);
    if (x) {
      fault_seen fs = {0};
      CHECK_RC(ESG_OK, esg_fault_get(s, x->fault_id, fault_cb, &fs));
      CHECK_STR(fs.event_id, id);
      CHECK_STR(fs.stage, "deliver");
      CHECK(fs.status == fail[i] && fs.attempts == 1);
      CHECK_CONTAINS(fs.error, "not retryable");
    }
  }
  esg_egress_stats st;
  esg_egress_get_stats(e, &st);
  CHECK(st.delivered == 7 && st.faulted == 6 && st.retried == 14 && st.attempts == 7 * 3 + 6);
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

/* Network errors retry: the connection closed without an answer, twice, then 200.
   Each close is on a fresh connection here: on a reused one libcurl itself resends
   once before reporting, which would blur the count. */
static void test_network_error(void) {
  httpd *h = httpd_start();
  httpd_rule cl = {"/closed", 2, 0, NULL, 0, 1, NULL, NULL};
  httpd_rule_add(h, &cl);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 1;
  esg_egress *e = open_e(NULL, &o);
  char url[128];
  httpd_url(h, "/closed", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-closed", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_DELIVERED && c->o[0].attempts == 3 && c->o[0].status == 200);
  CHECK(c->nr == 2 && c->r[0].status == 0 && c->r[1].status == 0);
  CHECK(httpd_count(h) == 3 && httpd_connections(h) == 3);
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Exhausted: a fault with every field, the claim released, nothing released twice. */
static void test_exhausted_fault(void) {
  httpd *h = httpd_start();
  httpd_default_status(h, 503);
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-exhaust.db"), &now);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_attempts = 3;
  esg_egress *e = open_e(s, &o);
  char url[128];
  httpd_url(h, "/down", url, sizeof url);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-x", NULL, 0, 30000, 3600000, &ci));
  esg_egress_request r = {0};
  r.event_id = "evt-x";
  r.url = url;
  r.body = "{\"transformed\":true}";
  r.body_len = strlen(r.body);
  r.event = event_json("evt-x", "k");
  r.event_len = strlen(r.event);
  r.claim_key = "evt-x";
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_EXHAUSTED && c->o[0].attempts == 3 && c->o[0].status == 503);
  CHECK_CONTAINS(c->o[0].error, "HTTP 503 after 3 attempts");
  CHECK(c->o[0].store_rc == ESG_OK && c->o[0].fault_id > 0);
  CHECK(c->nr == 2 && c->r[0].attempt == 1 && c->r[1].attempt == 2);
  fault_seen fs = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, fault_cb, &fs));
  CHECK(fs.n == 1);
  CHECK_STR(fs.event_id, "evt-x");
  CHECK_STR(fs.stage, "deliver");
  CHECK(fs.status == 503 && fs.attempts == 3);
  CHECK(fs.first > 0 && fs.first <= fs.last && fs.last == c->o[0].last);
  CHECK_STR(fs.event, event_json("evt-x", "k")); /* the event, not the transformed body */
  /* released once: the old token is refused, a new claim is NEW */
  CHECK_RC(ESG_ETOKEN, esg_release(s, "evt-x", ci.token));
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-x", NULL, 0, 30000, 3600000, &ci));
  CHECK(httpd_count(h) == 3);

  /* complete_on_fault: the claim records the fault instead */
  esg_egress_close(e);
  o.complete_on_fault = 1;
  o.max_attempts = 1;
  e = open_e(s, &o);
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, "evt-x", NULL, 0, 30000, 3600000, &ci));
  char res[128];
  snprintf(res, sizeof res, "%.*s", (int)ci.result_len, (const char *)ci.result);
  CHECK_CONTAINS(res, "\"fault\":");
  CHECK_CONTAINS(res, "\"status\":503");
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

/* Retry-After as delta seconds and as an HTTP-date, on a fake clock the test moves. */
static void test_retry_after(void) {
  httpd *h = httpd_start();
  int64_t now = 1700000000000; /* a whole second, so HTTP-dates are exact */
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.clock = tu_clock;
  o.clock_ud = &now;
  o.max_elapsed_ms = 300000;
  esg_egress *e = open_e(NULL, &o);
  char url[128];
  httpd_rule ra = {"/ra", 1, 429, "120", 0, 0, NULL, NULL};
  httpd_rule_add(h, &ra);
  httpd_url(h, "/ra", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-ra", NULL));
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 200));
  CHECK(httpd_count(h) == 1);
  CHECK(c->nr == 1 && c->r[0].delay == 120000 && c->r[0].status == 429);
  now += 119999;
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 30));
  CHECK(httpd_count(h) == 1); /* not a millisecond early */
  now += 1;
  CHECK_RC(ESG_OK, esg_egress_run(e, 5000));
  CHECK(httpd_count(h) == 2);
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_DELIVERED && c->o[0].attempts == 2);
  CHECK(c->o[0].last - c->o[0].first == 120000);

  /* an HTTP-date 90 s after the fake now */
  char date[64];
  time_t t = (time_t)((now + 90000) / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  httpd_rule rd = {"/rd", 1, 503, date, 0, 0, NULL, NULL};
  httpd_rule_add(h, &rd);
  httpd_url(h, "/rd", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-rd", NULL));
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 200));
  CHECK(c->nr == 2 && c->r[1].delay == 90000 && c->r[1].status == 503);
  now += 89000;
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 30));
  CHECK(httpd_count(h) == 3);
  now += 1000;
  CHECK_RC(ESG_OK, esg_egress_run(e, 5000));
  CHECK(httpd_count(h) == 4);
  outc *x = outcome_of(c, "evt-rd");
  CHECK(x && x->outcome == ESG_EGRESS_DELIVERED && x->attempts == 2);

  /* Retry-After beyond the total time limit: give up now rather than hold the key */
  httpd_rule rl = {"/rl", 1, 503, "3600", 0, 0, NULL, NULL};
  httpd_rule_add(h, &rl);
  httpd_url(h, "/rl", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-rl", NULL));
  CHECK_RC(ESG_OK, esg_egress_run(e, 5000));
  x = outcome_of(c, "evt-rl");
  CHECK(x && x->outcome == ESG_EGRESS_EXHAUSTED && x->attempts == 1 && x->status == 503);
  if (x) CHECK_CONTAINS(x->error, "Retry-After");
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Full jitter: every delay within [0, min(cap, base * 2^(n-1))], spread out, reproducible by seed. */
static void jitter_run(ctx *c, uint64_t seed) {
  httpd *h = httpd_start();
  httpd_default_status(h, 500);
  esg_egress_opts o = fast_opts(c);
  o.seed = seed;
  o.max_attempts = 6;
  o.backoff_base_ms = 2;
  o.backoff_cap_ms = 12;
  esg_egress *e = open_e(NULL, &o);
  char url[128], id[32];
  httpd_url(h, "/j", url, sizeof url);
  for (int i = 0; i < 10; i++) {
    snprintf(id, sizeof id, "evt-j%d", i);
    CHECK_RC(ESG_OK, submit(e, url, id, "one-key")); /* one lane: a deterministic order */
  }
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  esg_egress_close(e);
  httpd_stop(h);
}

static void test_jitter(void) {
  ctx *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
  jitter_run(a, 7);
  jitter_run(b, 7);
  CHECK(a->nr == 50 && b->nr == 50);
  int64_t sum[6] = {0};
  int cnt[6] = {0}, same = 1, zero_or_full = 0;
  for (int i = 0; i < a->nr; i++) {
    int n = a->r[i].attempt;
    int64_t ceil = 2;
    for (int k = 1; k < n && ceil < 12; k++) ceil *= 2;
    if (ceil > 12) ceil = 12;
    CHECK(a->r[i].delay >= 0 && a->r[i].delay <= ceil);
    if (a->r[i].delay == 0 || a->r[i].delay == ceil) zero_or_full++;
    if (n >= 1 && n <= 5) {
      sum[n] += a->r[i].delay;
      cnt[n]++;
    }
    if (i < b->nr && (b->r[i].delay != a->r[i].delay || strcmp(b->r[i].id, a->r[i].id) != 0)) same = 0;
  }
  CHECK(same); /* same seed, same delays */
  CHECK(zero_or_full < a->nr); /* spread, not fixed */
  /* later retries wait longer on average (ceilings 2, 4, 8, 12, 12) */
  CHECK(cnt[5] == 10 && sum[5] > sum[1]);
  ctx *d = calloc(1, sizeof *d);
  jitter_run(d, 8);
  int differ = 0;
  for (int i = 0; i < d->nr && i < a->nr; i++) differ += d->r[i].delay != a->r[i].delay;
  CHECK(differ > 0);
  free(a);
  free(b);
  free(d);
}

/* Per-attempt timeouts against a stalling server; connection refused is a network error. */
static void test_timeouts(void) {
  httpd *h = httpd_start();
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.timeout_ms = 150;
  o.max_attempts = 3;
  esg_egress *e = open_e(NULL, &o);
  char url[128];
  httpd_rule st = {"/slow", 1, 200, NULL, 3000, 0, NULL, NULL};
  httpd_rule_add(h, &st);
  httpd_url(h, "/slow", url, sizeof url);
  int64_t t0 = httpd_now_ms();
  CHECK_RC(ESG_OK, submit(e, url, "evt-slow", NULL));
  httpd_rule never = {"/never", 0, 200, NULL, -1, 0, NULL, NULL};
  httpd_rule_add(h, &never);
  httpd_url(h, "/never", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-never", NULL));
  CHECK_RC(ESG_OK, submit(e, "http://127.0.0.1:1/refused", "evt-refused", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  int64_t took = httpd_now_ms() - t0;
  CHECK(took < 2500); /* three 150 ms attempts, not the 3 s stall */
  outc *x = outcome_of(c, "evt-slow");
  CHECK(x && x->outcome == ESG_EGRESS_DELIVERED && x->attempts == 2);
  x = outcome_of(c, "evt-never");
  CHECK(x && x->outcome == ESG_EGRESS_EXHAUSTED && x->attempts == 3 && x->status == 0);
  if (x) CHECK_CONTAINS(x->error, "imeout");
  x = outcome_of(c, "evt-refused");
  CHECK(x && x->outcome == ESG_EGRESS_EXHAUSTED && x->attempts == 3 && x->status == 0);
  if (x) CHECK_CONTAINS(x->error, "connect");
  esg_egress_close(e);
  httpd_stop(h);
  free(c);

  /* the total-time bound: attempts stop once max_elapsed has passed */
  h = httpd_start();
  httpd_default_status(h, 503);
  c = calloc(1, sizeof *c);
  o = fast_opts(c);
  o.max_attempts = 1000;
  o.backoff_base_ms = 10;
  o.backoff_cap_ms = 10;
  o.max_elapsed_ms = 120;
  e = open_e(NULL, &o);
  httpd_url(h, "/x", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-time", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_EXHAUSTED && c->o[0].attempts > 2 && c->o[0].attempts < 1000);
  CHECK(c->o[0].last - c->o[0].first <= 120 + 50); /* scheduled within the limit; started when the loop woke */
  CHECK_CONTAINS(c->o[0].error, "time limit");
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Per-key order: one at a time, in submit order, retries included; a failing key blocks nobody. */
static void test_order(void) {
  httpd *h = httpd_start();
  httpd_rule b = {"/b", 3, 503, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &b);
  httpd_rule cf = {"/c", 0, 500, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &cf);
  httpd_rule sl = {"/a", 0, 200, NULL, 3, 0, NULL, NULL}; /* slow enough for overlap to show */
  httpd_rule_add(h, &sl);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 4;
  o.max_attempts = 6;
  o.backoff_base_ms = 10;
  o.backoff_cap_ms = 40;
  esg_egress *e = open_e(NULL, &o);
  char ua[128], ub[128], uc[128], id[32];
  httpd_url(h, "/a", ua, sizeof ua);
  httpd_url(h, "/b", ub, sizeof ub);
  httpd_url(h, "/c", uc, sizeof uc);
  for (int i = 0; i < 6; i++) {
    snprintf(id, sizeof id, "c%d", i);
    CHECK_RC(ESG_OK, submit(e, uc, id, "key-c"));
    snprintf(id, sizeof id, "b%d", i);
    CHECK_RC(ESG_OK, submit(e, ub, id, "key-b"));
    snprintf(id, sizeof id, "a%d", i);
    CHECK_RC(ESG_OK, submit(e, ua, id, "key-a"));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  int n = httpd_count(h);
  int last_a = -1, last_b = -1, last_c = -1, last_a_at = -1, first_c5 = -1, bcount = 0;
  for (int i = 0; i < n; i++) {
    httpd_req q;
    httpd_get(h, i, &q);
    char k[64];
    httpd_header(&q, "Idempotency-Key", k, sizeof k);
    int seq = atoi(k + 1);
    int *last = k[0] == 'a' ? &last_a : k[0] == 'b' ? &last_b : &last_c;
    CHECK(seq == *last || seq == *last + 1); /* never ahead, never back */
    *last = seq;
    if (k[0] == 'a') last_a_at = i;
    if (k[0] == 'b') bcount++;
    if (k[0] == 'c' && seq == 5 && first_c5 < 0) first_c5 = i;
  }
  CHECK(last_a == 5 && last_b == 5 && last_c == 5);
  CHECK(bcount == 6 + 3);
  CHECK(last_a_at < first_c5); /* key a finished long before failing key c got to its last event */
  /* one at a time per key: each request of a key arrived after the previous one was answered */
  for (int i = 0; i < c->n; i++) {
    if (c->o[i].id[0] == 'a' || c->o[i].id[0] == 'b') CHECK(c->o[i].outcome == ESG_EGRESS_DELIVERED);
    if (c->o[i].id[0] == 'c') CHECK(c->o[i].outcome == ESG_EGRESS_EXHAUSTED && c->o[i].attempts == 6);
  }
  /* outcomes of one key are reported in order too */
  int la = -1, lb = -1;
  for (int i = 0; i < c->n; i++) {
    int seq = atoi(c->o[i].id + 1);
    if (c->o[i].id[0] == 'a') {
      CHECK(seq == la + 1);
      la = seq;
    }
    if (c->o[i].id[0] == 'b') {
      CHECK(seq == lb + 1);
      lb = seq;
    }
  }
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Concurrency: different keys overlap, up to max_in_flight and no more. */
static void test_parallel(void) {
  httpd *h = httpd_start();
  httpd_rule sl = {NULL, 0, 200, NULL, 200, 0, NULL, NULL};
  httpd_rule_add(h, &sl);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 4;
  esg_egress *e = open_e(NULL, &o);
  char url[128], id[32];
  httpd_url(h, "/p", url, sizeof url);
  for (int i = 0; i < 8; i++) {
    snprintf(id, sizeof id, "p%d", i);
    CHECK_RC(ESG_OK, submit(e, url, id, NULL));
  }
  int64_t t0 = httpd_now_ms();
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 50));
  esg_egress_stats st;
  esg_egress_get_stats(e, &st);
  CHECK(st.in_flight == 4 && st.queued == 4);
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  int64_t took = httpd_now_ms() - t0;
  CHECK(took >= 390 && took < 1200); /* two waves of 200 ms, not eight */
  CHECK(c->n == 8);
  CHECK(httpd_connections(h) <= 4);
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Token bucket: the burst goes at once, then starts are 1/rate apart. */
static void test_rate_limit(void) {
  httpd *h = httpd_start();
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 8;
  o.rate_per_s = 20;
  o.rate_burst = 3;
  esg_egress *e = open_e(NULL, &o);
  char url[128], id[32];
  httpd_url(h, "/rate", url, sizeof url);
  for (int i = 0; i < 8; i++) {
    snprintf(id, sizeof id, "q%d", i);
    CHECK_RC(ESG_OK, submit(e, url, id, NULL));
  }
  int64_t t0 = httpd_now_ms();
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  int64_t took = httpd_now_ms() - t0;
  CHECK(httpd_count(h) == 8);
  CHECK(took >= 5 * 50 - 10); /* five beyond the burst, 50 ms apart */
  httpd_req q0, q2, q3;
  httpd_get(h, 0, &q0);
  httpd_get(h, 2, &q2);
  httpd_get(h, 3, &q3);
  CHECK(q2.t_ms - q0.t_ms < 50);  /* the burst: together (one token each would be 100 ms) */
  CHECK(q3.t_ms - q0.t_ms >= 30); /* the fourth waits for a token */
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Faults: resubmitted with the same id (the receiver sees the same key), deleted on success. */
static void test_resubmit(void) {
  httpd *h = httpd_start();
  httpd_rule f = {"/flaky", 2, 503, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &f);
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-resubmit.db"), &now);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_attempts = 2;
  esg_egress *e = open_e(s, &o);
  char url[128];
  httpd_url(h, "/flaky", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-rs", "pk-1"));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_EXHAUSTED);
  int64_t fid = c->o[0].fault_id;
  CHECK(fid > 0);

  esg_egress_request t = {0};
  CHECK_RC(ESG_EINVAL, esg_egress_resubmit(e, fid, &t)); /* no url */
  t.url = url;
  t.event_id = "someone-else";
  CHECK_RC(ESG_EINVAL, esg_egress_resubmit(e, fid, &t));
  t.event_id = NULL;
  CHECK_RC(ESG_NOT_FOUND, esg_egress_resubmit(e, fid + 100, &t));
  CHECK_RC(ESG_OK, esg_egress_resubmit(e, fid, &t));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 2 && c->o[1].outcome == ESG_EGRESS_DELIVERED && c->o[1].attempts == 3);
  CHECK(c->o[1].first == c->o[0].first);
  fault_seen fs = {0};
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(s, fid, fault_cb, &fs));
  CHECK(httpd_count(h) == 3);
  char k[3][64];
  for (int i = 0; i < 3; i++) {
    httpd_req q;
    httpd_get(h, i, &q);
    httpd_header(&q, "Idempotency-Key", k[i], sizeof k[i]);
    CHECK_STR(k[i], "evt-rs");
    CHECK_STR(q.body, event_json("evt-rs", "pk-1")); /* the stored event is the body */
  }

  /* failing again: one fault replaces the other, attempts carried over */
  httpd_rule g = {"/gone", 0, 410, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &g);
  httpd_url(h, "/gone", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-gone", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  int64_t f1 = c->o[2].fault_id;
  CHECK(c->o[2].outcome == ESG_EGRESS_REFUSED && f1 > 0);
  CHECK_RC(ESG_OK, esg_egress_resubmit(e, f1, &t));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(c->n == 4 && c->o[3].outcome == ESG_EGRESS_REFUSED && c->o[3].attempts == 2);
  int64_t f2 = c->o[3].fault_id;
  CHECK(f2 > f1);
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(s, f1, fault_cb, &fs));
  memset(&fs, 0, sizeof fs);
  CHECK_RC(ESG_OK, esg_faults_list(s, fault_cb, &fs));
  CHECK(fs.n == 1 && fs.id == f2 && fs.attempts == 2 && fs.status == 410);
  CHECK_STR(fs.event_id, "evt-gone");
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

/* The idempotency header (custom name here) is present and the same on every attempt. */
static void test_idempotency_header(void) {
  httpd *h = httpd_start();
  httpd_rule f = {"/i", 3, 500, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &f);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.idempotency_header = "X-Request-Id";
  esg_egress *e = open_e(NULL, &o);
  char url[128];
  httpd_url(h, "/i", url, sizeof url);
  CHECK_RC(ESG_OK, submit(e, url, "evt-idem-1", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(httpd_count(h) == 4);
  for (int i = 0; i < 4; i++) {
    httpd_req q;
    char v[64];
    httpd_get(h, i, &q);
    CHECK_STR(httpd_header(&q, "X-Request-Id", v, sizeof v), "evt-idem-1");
    CHECK(httpd_header(&q, "Idempotency-Key", v, sizeof v) == NULL);
  }
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Keep-alive: sequential deliveries share one connection; parallel ones at most max_in_flight. */
static void test_connection_reuse(void) {
  httpd *h = httpd_start();
  httpd_rule f = {"/k", 2, 503, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &f);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 1;
  esg_egress *e = open_e(NULL, &o);
  char url[128], id[32];
  httpd_url(h, "/k", url, sizeof url);
  for (int i = 0; i < 30; i++) {
    snprintf(id, sizeof id, "k%d", i);
    CHECK_RC(ESG_OK, submit(e, url, id, NULL));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(httpd_count(h) == 32);
  CHECK(httpd_connections(h) == 1);
  for (int i = 0; i < 32; i++) {
    httpd_req q;
    httpd_get(h, i, &q);
    CHECK(q.conn == 1);
  }
  esg_egress_stats st;
  esg_egress_get_stats(e, &st);
  CHECK(st.connects == 1 && st.attempts == 32 && st.delivered == 30);
  esg_egress_close(e);
  httpd_stop(h);
  free(c);

  h = httpd_start();
  c = calloc(1, sizeof *c);
  o = fast_opts(c);
  o.max_in_flight = 4;
  e = open_e(NULL, &o);
  httpd_url(h, "/k", url, sizeof url);
  for (int round = 0; round < 5; round++) {
    for (int i = 0; i < 20; i++) {
      snprintf(id, sizeof id, "m%d-%d", round, i);
      CHECK_RC(ESG_OK, submit(e, url, id, NULL));
    }
    CHECK_RC(ESG_OK, esg_egress_drain(e));
  }
  CHECK(httpd_count(h) == 100);
  CHECK(httpd_connections(h) <= 4);
  esg_egress_get_stats(e, &st);
  CHECK(st.connects <= 4);
  esg_egress_close(e);
  httpd_stop(h);
  free(c);
}

/* Close with work left: callbacks say cancelled, claims are released at once. */
static void test_cancel_on_close(void) {
  httpd *h = httpd_start();
  httpd_default_status(h, 503);
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-cancel.db"), &now);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.backoff_base_ms = 10000;
  o.backoff_cap_ms = 10000;
  esg_egress *e = open_e(s, &o);
  char url[128], id[32];
  httpd_url(h, "/c", url, sizeof url);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "cx%d", i);
    esg_claim_info ci;
    CHECK_RC(ESG_NEW, esg_claim(s, id, NULL, 0, 30000, 3600000, &ci));
    esg_egress_request r = {0};
    r.event_id = id;
    r.url = url;
    r.partition_key = "same";
    r.claim_key = id;
    r.claim_token = ci.token;
    CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  }
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 100)); /* cx0 failed once and waits its backoff */
  esg_egress_close(e);
  CHECK(c->n == 3);
  for (int i = 0; i < c->n; i++) CHECK(c->o[i].outcome == ESG_EGRESS_CANCELLED);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "cx%d", i);
    CHECK_RC(ESG_NEW, esg_claim(s, id, NULL, 0, 30000, 3600000, NULL));
  }
  fault_seen fs = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, fault_cb, &fs));
  CHECK(fs.n == 0);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

/* A claim taken over by another worker during the backoff stops the delivery (claim_lease_ms). */
static void test_claim_takeover(void) {
  httpd *h = httpd_start();
  httpd_rule f = {"/t", 1, 503, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &f);
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-takeover.db"), &now);
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.claim_lease_ms = 30000;
  o.backoff_base_ms = 1000;
  o.backoff_cap_ms = 1000;
  o.clock = tu_clock;
  o.clock_ud = &now;
  esg_egress *e = open_e(s, &o);
  char url[128];
  httpd_url(h, "/t", url, sizeof url);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-t", NULL, 0, 1000, 3600000, &ci));
  esg_egress_request r = {0};
  r.event_id = "evt-t";
  r.url = url;
  r.claim_key = "evt-t";
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  CHECK_RC(ESG_BUSY, esg_egress_run(e, 100)); /* 503, waits (fake clock) */
  now += 5000;                                /* lease ran out: another worker takes over */
  esg_claim_info other;
  CHECK_RC(ESG_NEW, esg_claim(s, "evt-t", NULL, 0, 1000, 3600000, &other));
  CHECK(other.attempts == 2);
  CHECK_RC(ESG_OK, esg_egress_run(e, 1000));
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_CANCELLED);
  CHECK_CONTAINS(c->o[0].error, "taken over");
  CHECK(httpd_count(h) == 1);
  CHECK_RC(ESG_OK, esg_complete(s, "evt-t", other.token, NULL, 0)); /* the new owner's claim is intact */
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

/* The cache's HTTP loader: 200 with an ETag, then a 304 revalidation that refreshes the TTL, 404 negative. */
static void test_cache_loader(void) {
  httpd *h = httpd_start();
  httpd_rule first = {"/things/t%201", 1, 200, NULL, 0, 0, "{\"name\":\"one\"}", "\"v1\""};
  httpd_rule_add(h, &first);
  httpd_rule again = {"/things/t%201", 0, 304, NULL, 0, 0, NULL, "\"v1\""};
  httpd_rule_add(h, &again);
  httpd_rule gone = {"/things/t2", 0, 404, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &gone);
  httpd_rule boom = {"/things/t3", 0, 500, NULL, 0, 0, NULL, NULL};
  httpd_rule_add(h, &boom);
  int64_t now = 1700000000000;
  esg_store *s = tu_open(tu_path("egress-loader.db"), &now);
  esg_cache_opts co = {0};
  co.ttl_ms = 1000;
  co.mem_entries = -1; /* store tier only: every refresh is visible */
  esg_cache *cache = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&cache, s, &co));
  char url[128];
  httpd_url(h, "/things/{key}", url, sizeof url);
  esg_http_loader_opts lo = {0};
  lo.url = url;
  lo.clock = tu_clock;
  lo.clock_ud = &now;
  esg_http_loader *l = NULL;
  CHECK_RC(ESG_OK, esg_http_loader_open(&l, &lo));
  esg_cache_entry ent;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t 1", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_HIT && ent.loaded == 1);
  CHECK(ent.value && strcmp(ent.value, "{\"name\":\"one\"}") == 0);
  now += 2000; /* past the TTL: revalidate */
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t 1", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_HIT && ent.loaded == 1);
  CHECK(ent.value && strcmp(ent.value, "{\"name\":\"one\"}") == 0);
  CHECK(ent.expires >= now + 1000 - 1);
  CHECK(httpd_count(h) == 2);
  httpd_req q;
  char v[64];
  httpd_get(h, 0, &q);
  CHECK(httpd_header(&q, "If-None-Match", v, sizeof v) == NULL);
  httpd_get(h, 1, &q);
  CHECK_STR(q.method, "GET");
  CHECK_STR(httpd_header(&q, "If-None-Match", v, sizeof v), "\"v1\"");
  CHECK(q.conn == 1); /* kept alive */
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t2", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_NEGATIVE);
  CHECK(esg_cache_get_or_load(cache, "t3", esg_http_loader_load, l, &ent) < 0);
  CHECK_CONTAINS(esg_errmsg(cache), "HTTP 500");
  uint64_t req, nm, absent, failed;
  esg_http_loader_counts(l, &req, &nm, &absent, &failed);
  CHECK(req == 4 && nm == 1 && absent == 1 && failed == 1);
  esg_http_loader_close(l);
  esg_http_loader_close(NULL);
  esg_cache_close(cache);
  esg_store_close(s);
  httpd_stop(h);
}

/* ---------------------------------------------------------------- crash -- */

#define CRASH_N 300

static int64_t skew_ms;
static int64_t skewed_clock(void *ud) {
  (void)ud;
  return esg_clock_real(NULL) + skew_ms;
}

/* Claims and delivers events [0, CRASH_N) with egress; the parent kills it part way. */
static void crash_child(const char *path, const char *url) {
  esg_store *s = NULL;
  if (esg_store_open(&s, path, NULL) != ESG_OK) _exit(3);
  esg_egress_opts o = {0};
  o.max_in_flight = 8;
  o.backoff_base_ms = 5;
  o.backoff_cap_ms = 20;
  esg_egress *e = NULL;
  if (esg_egress_open(&e, s, &o) != ESG_OK) _exit(4);
  for (int i = 0; i < CRASH_N; i++) {
    char id[32], pk[32];
    snprintf(id, sizeof id, "evt-%d", i);
    snprintf(pk, sizeof pk, "thing-%d", i % 20);
    const char *body = event_json(id, pk);
    uint8_t hash[32];
    esg_sha256(body, strlen(body), hash);
    esg_claim_info ci;
    if (esg_claim(s, id, hash, 32, 2000, 3600000, &ci) != ESG_NEW) _exit(5);
    esg_egress_request r = {0};
    r.event_id = id;
    r.url = url;
    r.partition_key = pk;
    r.body = body;
    r.body_len = strlen(body);
    r.claim_key = id;
    r.claim_token = ci.token;
    if (esg_egress_submit(e, &r) != ESG_OK) _exit(6);
    if (i % 10 == 9) esg_egress_run(e, 0); /* deliver while claiming, like a gateway */
  }
  esg_egress_drain(e);
  esg_egress_close(e);
  esg_store_close(s);
  _exit(0);
}

static void test_crash_takeover(void) {
  httpd *h = httpd_start();
  httpd_rule slow = {NULL, 0, 200, NULL, 4, 0, NULL, NULL}; /* 4 ms each: the kill lands mid-run */
  httpd_rule_add(h, &slow);
  char url[128];
  httpd_url(h, "/deliver", url, sizeof url);
  char path[4096];
  snprintf(path, sizeof path, "%s", tu_path("egress-crash.db"));
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) crash_child(path, url);
  CHECK(pid > 0);
  int got = httpd_wait(h, CRASH_N / 4, 20000);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK(got >= CRASH_N / 4);
  int before = httpd_count(h);
  CHECK(before < CRASH_N); /* it really died part way */

  /* restart on the same store, with a clock past the dead owner's leases */
  skew_ms = 10000;
  esg_store_opts so = {0};
  so.clock = skewed_clock;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &so));
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 8;
  esg_egress *e = open_e(s, &o);
  int dups = 0, taken = 0;
  for (int i = 0; i < CRASH_N; i++) {
    char id[32], pk[32];
    snprintf(id, sizeof id, "evt-%d", i);
    snprintf(pk, sizeof pk, "thing-%d", i % 20);
    const char *body = event_json(id, pk);
    uint8_t hash[32];
    esg_sha256(body, strlen(body), hash);
    esg_claim_info ci;
    int rc = esg_claim(s, id, hash, 32, 2000, 3600000, &ci);
    if (rc == ESG_DUPLICATE) {
      dups++;
      continue;
    }
    CHECK(rc == ESG_NEW);
    if (rc != ESG_NEW) continue;
    if (ci.attempts > 1) taken++;
    esg_egress_request r = {0};
    r.event_id = id;
    r.url = url;
    r.partition_key = pk;
    r.body = body;
    r.body_len = strlen(body);
    r.claim_key = id;
    r.claim_token = ci.token;
    CHECK_RC(ESG_OK, esg_egress_submit(e, &r));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(e));
  CHECK(dups > 0 && taken > 0 && dups + c->n == CRASH_N);
  for (int i = 0; i < c->n; i++) CHECK(c->o[i].outcome == ESG_EGRESS_DELIVERED && c->o[i].store_rc == ESG_OK);
  /* now every event is completed */
  int done = 0;
  for (int i = 0; i < CRASH_N; i++) {
    char id[32];
    snprintf(id, sizeof id, "evt-%d", i);
    done += esg_claim(s, id, NULL, 0, 2000, 3600000, NULL) == ESG_DUPLICATE;
  }
  CHECK(done == CRASH_N);
  /* the receiver's view: every event at least once, every repeat with the same key */
  int *seen = calloc(CRASH_N, sizeof *seen);
  int n = httpd_count(h), bad_key = 0, repeats = 0;
  for (int i = 0; i < n; i++) {
    httpd_req q;
    httpd_get(h, i, &q);
    char k[64], want[64];
    int idx = -1;
    if (sscanf(q.body, "{\"id\":\"evt-%d\"", &idx) != 1 || idx < 0 || idx >= CRASH_N) {
      bad_key++;
      continue;
    }
    snprintf(want, sizeof want, "evt-%d", idx);
    if (!httpd_header(&q, "Idempotency-Key", k, sizeof k) || strcmp(k, want) != 0) bad_key++;
    if (seen[idx]++) repeats++;
  }
  int missing = 0;
  for (int i = 0; i < CRASH_N; i++) missing += seen[i] == 0;
  CHECK(missing == 0);
  CHECK(bad_key == 0);
  fprintf(stderr, "  crash: child got %d requests through, %d completed before the kill, %d taken over, "
                  "%d repeats at the receiver\n",
          before, dups, taken, repeats);
  free(seen);
  esg_egress_close(e);
  esg_store_close(s);
  httpd_stop(h);
  free(c);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  RUN(test_policy_functions);
  RUN(test_bad_input);
  RUN(test_deliver_and_claim);
  RUN(test_retry_classes);
  RUN(test_network_error);
  RUN(test_exhausted_fault);
  RUN(test_retry_after);
  RUN(test_jitter);
  RUN(test_timeouts);
  RUN(test_order);
  RUN(test_parallel);
  RUN(test_rate_limit);
  RUN(test_resubmit);
  RUN(test_idempotency_header);
  RUN(test_connection_reuse);
  RUN(test_cancel_on_close);
  RUN(test_claim_takeover);
  RUN(test_cache_loader);
  RUN(test_crash_takeover);
  return tu_done();
}
