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
#include <stdbool.h>
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
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
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

/* Submits n events to url with the ids <prefix>0 .. <prefix>n-1, each checked. */
static void submit_n(esg_egress *e, const char *url, const char *prefix, int n, const char *pkey) {
  char id[64];
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "%s%d", prefix, i);
    CHECK_RC(ESG_OK, submit(e, url, id, pkey));
  }
}

/* A request for event id to url under the claim of key id with token. */
static esg_egress_request claimed_request(const char *id, const char *url, int64_t token) {
  esg_egress_request r = {0};
  r.event_id = id;
  r.url = url;
  r.claim_key = id;
  r.claim_token = token;
  return r;
}

/* The result recorded by id's completed claim, which a new claim sees as a duplicate. */
/* The SHA-256 of "ok", the test server's default body. */
#define OK_SHA256 "2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df"

static const char *claim_result(esg_store *s, const char *id, char *out, size_t n) {
  esg_claim_info ci;
  CHECK_RC(ESG_DUPLICATE, esg_claim(s, id, NULL, 0, 30000, 3600000, &ci));
  snprintf(out, n, "%.*s", (int)ci.result_len, (const char *)ci.result);
  return out;
}

#define ANY (-1)

/* Whether x ended with outcome after attempts attempts and HTTP status (ANY: whatever they were). */
static int ended(const outc *x, int outcome, int attempts, int status) {
  return x && x->outcome == outcome && (attempts == ANY || x->attempts == attempts) &&
         (status == ANY || x->status == status);
}

static esg_egress_stats stats_of(esg_egress *e) {
  esg_egress_stats st;
  esg_egress_get_stats(e, &st);
  return st;
}

/* Request i as the server received it (zeroed if there is none). */
static httpd_req received(httpd *h, int i) {
  httpd_req q;
  memset(&q, 0, sizeof q);
  httpd_get(h, i, &q);
  return q;
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

/* Every fault in the store (the count, and the fields of the last one listed). */
static fault_seen faults_listed(esg_store *s) {
  fault_seen fs = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, fault_cb, &fs));
  return fs;
}

/* One test's world: the local server, a store on the fake clock at now (when named), the
   callbacks' record c, the options o (fast_opts to start with) and the engine e once opened. */
typedef struct fx {
  httpd *h;
  int64_t now;
  esg_store *s;
  ctx *c;
  esg_egress_opts o;
  esg_egress *e;
  char url[128];
} fx;

static void fx_start(fx *f, const char *store) {
  memset(f, 0, sizeof *f);
  f->h = httpd_start();
  f->now = 1700000000000; /* a whole second, so HTTP-dates are exact */
  if (store) f->s = tu_open(tu_path(store), &f->now);
  f->c = calloc(1, sizeof *f->c);
  f->o = fast_opts(f->c);
}

/* Opens the engine on the store with the options as they are now. */
static void fx_open(fx *f) { f->e = open_e(f->s, &f->o); }

/* The server's url for path, kept in f->url. */
static const char *fx_url(fx *f, const char *path) {
  httpd_url(f->h, path, f->url, sizeof f->url);
  return f->url;
}

static void fx_stop(fx *f) {
  esg_egress_close(f->e);
  esg_store_close(f->s);
  httpd_stop(f->h);
  free(f->c);
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
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.max_in_flight = -1;
  CHECK_RC(ESG_EINVAL, esg_egress_open(&e, NULL, &o));
  CHECK(e == NULL);
  CHECK_CONTAINS(esg_errmsg(NULL), "max_in_flight is -1");
  o.max_in_flight = 0;
  o.backoff_cap_ms = -5;
  CHECK_RC(ESG_EINVAL, esg_egress_open(&e, NULL, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "backoff_cap_ms is -5");
  o.backoff_cap_ms = 0;
  o.rate_per_s = NAN;
  CHECK_RC(ESG_EINVAL, esg_egress_open(&e, NULL, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "rate_per_s");
  o.rate_per_s = 0;
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
  fx f;
  fx_start(&f, "egress-basic.db");
  fx_open(&f);
  const char *url = fx_url(&f, "/hook?x=1");
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-1", NULL, 0, 30000, 3600000, &ci));
  const char *hdrs[] = {"X-Trace: abc"};
  esg_egress_request r = claimed_request("evt-1", url, ci.token);
  r.headers = hdrs;
  r.n_headers = 1;
  const char *body = event_json("evt-1", "k1");
  r.body = body;
  r.body_len = strlen(body);
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  esg_egress_stats st = stats_of(f.e);
  CHECK(st.submitted == 1 && st.queued == 1 && st.in_flight == 0);
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(f.c->n == 1);
  CHECK(ended(&f.c->o[0], ESG_EGRESS_DELIVERED, 1, 200));
  CHECK(f.c->o[0].store_rc == ESG_OK);
  CHECK_STR(f.c->o[0].body, "ok");
  CHECK_STR(f.c->o[0].error, "");
  CHECK(httpd_count(f.h) == 1);
  httpd_req q;
  CHECK(httpd_get(f.h, 0, &q) == 0);
  CHECK_STR(q.method, "POST");
  CHECK_STR(q.path, "/hook?x=1");
  CHECK(q.body_len == strlen(body) && strcmp(q.body, body) == 0);
  char v[256];
  CHECK_STR(httpd_header(&q, "Idempotency-Key", v, sizeof v), "evt-1");
  CHECK_STR(httpd_header(&q, "Content-Type", v, sizeof v), "application/json");
  CHECK_STR(httpd_header(&q, "X-Trace", v, sizeof v), "abc");
  CHECK(httpd_header(&q, "Expect", v, sizeof v) == NULL || v[0] == '\0');
  /* the claim is completed: a duplicate sees the status and the digest of "ok" */
  char res[256];
  claim_result(f.s, "evt-1", res, sizeof res);
  uint8_t d[32];
  char hex[65];
  esg_sha256("ok", 2, d);
  esg_hex(d, 32, hex);
  char want[200];
  snprintf(want, sizeof want, "{\"status\":200,\"sha256\":\"%s\"}", hex);
  CHECK_STR(res, want);
  st = stats_of(f.e);
  CHECK(st.delivered == 1 && st.attempts == 1 && st.queued == 0 && st.connects == 1);

  /* methods: PUT with a body and its own content type, GET without */
  const char *ct[] = {"Content-Type: text/plain"};
  r.method = "PUT";
  r.event_id = "evt-put";
  r.headers = ct;
  r.claim_key = NULL;
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  esg_egress_request g = {0};
  g.event_id = "evt-get";
  g.method = "GET";
  g.url = url;
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &g));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(httpd_count(f.h) == 3);
  for (int i = 1; i < 3; i++) {
    CHECK(httpd_get(f.h, i, &q) == 0);
    if (strcmp(q.method, "PUT") == 0) {
      CHECK_STR(httpd_header(&q, "Content-Type", v, sizeof v), "text/plain");
      CHECK(q.body_len == strlen(body));
    } else {
      CHECK_STR(q.method, "GET");
      CHECK(q.body_len == 0);
      CHECK_STR(httpd_header(&q, "Idempotency-Key", v, sizeof v), "evt-get");
    }
  }

  /* an answer without a body (204): no digest, only the status */
  httpd_default_status(f.h, 204);
  CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-204", NULL, 0, 30000, 3600000, &ci));
  esg_egress_request r204 = claimed_request("evt-204", url, ci.token);
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r204));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(f.c->n == 4 && ended(&f.c->o[3], ESG_EGRESS_DELIVERED, 1, 204) && f.c->o[3].body[0] == 0);
  claim_result(f.s, "evt-204", res, sizeof res);
  CHECK_STR(res, "{\"status\":204}");
  fx_stop(&f);
}

/* A rule answering /<tag><status> with status count times (0: always), and the event
   evt-<tag><status> submitted to it. */
static void submit_to_status(fx *f, char tag, int status, int count) {
  char path[64], id[64];
  snprintf(path, sizeof path, "/%c%d", tag, status);
  httpd_rule_add(f->h, &(httpd_rule){.path = path, .count = count, .status = status});
  snprintf(id, sizeof id, "evt-%c%d", tag, status);
  CHECK_RC(ESG_OK, submit(f->e, fx_url(f, path), id, NULL));
}

/* Every retry class ends delivered on the third attempt; other 4xx fail at once with a fault. */
static void test_retry_classes(void) {
  fx f;
  fx_start(&f, "egress-classes.db");
  f.o.max_in_flight = 8;
  fx_open(&f);
  int retry[] = {408, 425, 429, 500, 502, 503, 504};
  int fail[] = {400, 401, 403, 404, 409, 422};
  char id[64];
  for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) submit_to_status(&f, 'r', retry[i], 2);
  for (size_t i = 0; i < sizeof fail / sizeof *fail; i++) submit_to_status(&f, 'f', fail[i], 0);
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) {
    snprintf(id, sizeof id, "evt-r%d", retry[i]);
    CHECK(ended(outcome_of(f.c, id), ESG_EGRESS_DELIVERED, 3, 200));
  }
  outc *x;
  for (size_t i = 0; i < sizeof fail / sizeof *fail; i++) {
    snprintf(id, sizeof id, "evt-f%d", fail[i]);
    x = outcome_of(f.c, id);
    CHECK(ended(x, ESG_EGRESS_REFUSED, 1, fail[i]) && x->fault_id > 0);
    if (x) {
      fault_seen fs = {0};
      CHECK_RC(ESG_OK, esg_fault_get(f.s, x->fault_id, fault_cb, &fs));
      CHECK_STR(fs.event_id, id);
      CHECK_STR(fs.stage, "deliver");
      CHECK(fs.status == fail[i] && fs.attempts == 1);
      CHECK_CONTAINS(fs.error, "not retryable");
    }
  }
  esg_egress_stats st = stats_of(f.e);
  CHECK(st.delivered == 7 && st.faulted == 6 && st.retried == 14 && st.attempts == 7 * 3 + 6);
  fx_stop(&f);
}

/* Network errors retry: the connection closed without an answer, twice, then 200.
   Each close is on a fresh connection here: on a reused one libcurl itself resends
   once before reporting, which would blur the count. */
static void test_network_error(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/closed", .count = 2, .close = 1});
  f.o.max_in_flight = 1;
  fx_open(&f);
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/closed"), "evt-closed", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(f.c->n == 1 && ended(&f.c->o[0], ESG_EGRESS_DELIVERED, 3, 200));
  CHECK(f.c->nr == 2 && f.c->r[0].status == 0 && f.c->r[1].status == 0);
  CHECK(httpd_count(f.h) == 3 && httpd_connections(f.h) == 3);
  fx_stop(&f);
}

/* Exhausted: a fault with every field, the claim released, nothing released twice. */
static void test_exhausted_fault(void) {
  fx f;
  fx_start(&f, "egress-exhaust.db");
  httpd_default_status(f.h, 503);
  f.o.max_attempts = 3;
  fx_open(&f);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-x", NULL, 0, 30000, 3600000, &ci));
  esg_egress_request r = claimed_request("evt-x", fx_url(&f, "/down"), ci.token);
  r.body = "{\"transformed\":true}";
  r.body_len = strlen(r.body);
  r.event = event_json("evt-x", "k");
  r.event_len = strlen(r.event);
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  outc *x = &f.c->o[0];
  CHECK(f.c->n == 1 && ended(x, ESG_EGRESS_EXHAUSTED, 3, 503));
  CHECK_CONTAINS(x->error, "HTTP 503 after 3 attempts");
  CHECK(x->store_rc == ESG_OK && x->fault_id > 0);
  CHECK(f.c->nr == 2 && f.c->r[0].attempt == 1 && f.c->r[1].attempt == 2);
  fault_seen fs = faults_listed(f.s);
  CHECK(fs.n == 1);
  CHECK_STR(fs.event_id, "evt-x");
  CHECK_STR(fs.stage, "deliver");
  CHECK(fs.status == 503 && fs.attempts == 3);
  CHECK(fs.first > 0 && fs.first <= fs.last && fs.last == x->last);
  CHECK_STR(fs.event, event_json("evt-x", "k")); /* the event, not the transformed body */
  /* released once: the old token is refused, a new claim is NEW */
  CHECK_RC(ESG_ETOKEN, esg_release(f.s, "evt-x", ci.token));
  CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-x", NULL, 0, 30000, 3600000, &ci));
  CHECK(httpd_count(f.h) == 3);

  /* complete_on_fault: the claim records the fault instead */
  esg_egress_close(f.e);
  f.o.complete_on_fault = 1;
  f.o.max_attempts = 1;
  fx_open(&f);
  r.claim_token = ci.token;
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  char res[128];
  claim_result(f.s, "evt-x", res, sizeof res);
  CHECK_CONTAINS(res, "\"fault\":");
  CHECK_CONTAINS(res, "\"status\":\"fault\"");
  CHECK_CONTAINS(res, "\"http_status\":503");
  fx_stop(&f);
}

/* Retry-After as delta seconds and as an HTTP-date, on a fake clock the test moves. */
static void test_retry_after(void) {
  fx f;
  fx_start(&f, NULL);
  f.o.clock = tu_clock;
  f.o.clock_ud = &f.now;
  f.o.max_elapsed_ms = 300000;
  fx_open(&f);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/ra", .count = 1, .status = 429, .retry_after = "120"});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/ra"), "evt-ra", NULL));
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 200));
  CHECK(httpd_count(f.h) == 1);
  CHECK(f.c->nr == 1 && f.c->r[0].delay == 120000 && f.c->r[0].status == 429);
  f.now += 119999;
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 30));
  CHECK(httpd_count(f.h) == 1); /* not a millisecond early */
  f.now += 1;
  CHECK_RC(ESG_OK, esg_egress_run(f.e, 5000));
  CHECK(httpd_count(f.h) == 2);
  CHECK(f.c->n == 1 && ended(&f.c->o[0], ESG_EGRESS_DELIVERED, 2, ANY));
  CHECK(f.c->o[0].last - f.c->o[0].first == 120000);

  /* an HTTP-date 90 s after the fake now */
  char date[64];
  time_t t = (time_t)((f.now + 90000) / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/rd", .count = 1, .status = 503, .retry_after = date});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/rd"), "evt-rd", NULL));
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 200));
  CHECK(f.c->nr == 2 && f.c->r[1].delay == 90000 && f.c->r[1].status == 503);
  f.now += 89000;
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 30));
  CHECK(httpd_count(f.h) == 3);
  f.now += 1000;
  CHECK_RC(ESG_OK, esg_egress_run(f.e, 5000));
  CHECK(httpd_count(f.h) == 4);
  CHECK(ended(outcome_of(f.c, "evt-rd"), ESG_EGRESS_DELIVERED, 2, ANY));

  /* Retry-After beyond the total time limit: give up now rather than hold the key */
  httpd_rule_add(f.h, &(httpd_rule){.path = "/rl", .count = 1, .status = 503, .retry_after = "3600"});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/rl"), "evt-rl", NULL));
  CHECK_RC(ESG_OK, esg_egress_run(f.e, 5000));
  outc *x = outcome_of(f.c, "evt-rl");
  CHECK(ended(x, ESG_EGRESS_EXHAUSTED, 1, 503));
  if (x) CHECK_CONTAINS(x->error, "Retry-After");
  /* one too large for the clock's arithmetic: still beyond the limit, not wrapped into the past */
  httpd_rule_add(f.h, &(httpd_rule){.path = "/rx", .count = 1, .status = 503, .retry_after = "99999999999999999999"});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/rx"), "evt-rx", NULL));
  CHECK_RC(ESG_OK, esg_egress_run(f.e, 5000));
  x = outcome_of(f.c, "evt-rx");
  CHECK(ended(x, ESG_EGRESS_EXHAUSTED, 1, 503));
  if (x) CHECK_CONTAINS(x->error, "Retry-After");
  fx_stop(&f);

  /* no time limit (INT64_MAX) and a cap past what doubling can reach: the policy still retries */
  fx_start(&f, NULL);
  f.o.max_elapsed_ms = INT64_MAX;
  f.o.backoff_base_ms = 1;
  f.o.backoff_cap_ms = INT64_MAX;
  f.o.max_attempts = 2;
  fx_open(&f);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/nolimit", .count = 1, .status = 503});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/nolimit"), "evt-nolimit", NULL));
  CHECK_RC(ESG_OK, esg_egress_run(f.e, 5000));
  CHECK(ended(outcome_of(f.c, "evt-nolimit"), ESG_EGRESS_DELIVERED, 2, 200));
  fx_stop(&f);
}

/* Full jitter: every delay within [0, min(cap, base * 2^(n-1))], spread out, reproducible by seed. */
static void jitter_run(ctx *c, uint64_t seed) {
  fx f;
  fx_start(&f, NULL);
  httpd_default_status(f.h, 500);
  f.o.seed = seed;
  f.o.max_attempts = 6;
  f.o.backoff_base_ms = 2;
  f.o.backoff_cap_ms = 12;
  fx_open(&f);
  submit_n(f.e, fx_url(&f, "/j"), "evt-j", 10, "one-key"); /* one lane: a deterministic order */
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  *c = *f.c;
  fx_stop(&f);
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

/* One slot going from URL to URL (each parsed once, then reused), and a URL that does
   not parse: refused at its first attempt, and the slot still works after it. */
static void test_urls(void) {
  fx f;
  fx_start(&f, NULL);
  f.o.max_in_flight = 1;
  fx_open(&f);
  char a[256], b[256];
  snprintf(a, sizeof a, "%s", fx_url(&f, "/a?q=1"));
  snprintf(b, sizeof b, "%s", fx_url(&f, "/b"));
  CHECK_RC(ESG_OK, submit(f.e, a, "evt-a1", NULL));
  CHECK_RC(ESG_OK, submit(f.e, a, "evt-a2", NULL));
  CHECK_RC(ESG_OK, submit(f.e, "http://[::1", "evt-bad", NULL));
  CHECK_RC(ESG_OK, submit(f.e, b, "evt-b", NULL));
  CHECK_RC(ESG_OK, submit(f.e, a, "evt-a3", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  outc *x = outcome_of(f.c, "evt-bad");
  CHECK(ended(x, ESG_EGRESS_REFUSED, 1, 0));
  if (x) CHECK_CONTAINS(x->error, "not retryable");
  CHECK(ended(outcome_of(f.c, "evt-a1"), ESG_EGRESS_DELIVERED, 1, 200));
  CHECK(ended(outcome_of(f.c, "evt-b"), ESG_EGRESS_DELIVERED, 1, 200));
  CHECK(ended(outcome_of(f.c, "evt-a3"), ESG_EGRESS_DELIVERED, 1, 200));
  CHECK(httpd_count(f.h) == 4);
  const char *want[] = {"/a?q=1", "/a?q=1", "/b", "/a?q=1"};
  for (int i = 0; i < 4 && i < httpd_count(f.h); i++) {
    httpd_req q;
    CHECK(httpd_get(f.h, i, &q) == 0);
    CHECK_STR(q.path, want[i]);
  }

  /* a larger body goes in one exchange, without an "Expect: 100-continue" wait */
  static char big[40000];
  memset(big, 'x', sizeof big);
  esg_egress_request r = {0};
  r.event_id = "evt-big";
  r.url = b;
  r.body = big;
  r.body_len = sizeof big;
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(ended(outcome_of(f.c, "evt-big"), ESG_EGRESS_DELIVERED, 1, 200));
  httpd_req q;
  CHECK(httpd_get(f.h, 4, &q) == 0);
  CHECK(q.body_len == sizeof big);
  char v[64];
  CHECK(httpd_header(&q, "Expect", v, sizeof v) == NULL || v[0] == '\0');
  fx_stop(&f);
}

/* The proxy environment, read when the engine opens (as libcurl would read it per
   transfer): http_proxy sends through the proxy, no_proxy exempts a host. */
static void test_proxy_env(void) {
  const char *names[] = {"http_proxy", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"};
  for (int i = 0; i < 5; i++) unsetenv(names[i]);
  fx f;
  fx_start(&f, NULL);
  char proxy[128];
  snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", httpd_port(f.h));
  setenv("http_proxy", proxy, 1);
  fx_open(&f);
  unsetenv("http_proxy"); /* read once: this engine keeps using it */
  CHECK_RC(ESG_OK, submit(f.e, "http://gateway.invalid/orders", "evt-proxied", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(ended(outcome_of(f.c, "evt-proxied"), ESG_EGRESS_DELIVERED, 1, 200));
  httpd_req q;
  CHECK(httpd_get(f.h, 0, &q) == 0);
  CHECK_STR(q.path, "http://gateway.invalid/orders"); /* the absolute form a proxy receives */
  fx_stop(&f);

  fx_start(&f, NULL);
  setenv("http_proxy", "http://127.0.0.1:1", 1); /* nothing listens there */
  setenv("no_proxy", "127.0.0.1", 1);
  fx_open(&f);
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/direct"), "evt-direct", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(ended(outcome_of(f.c, "evt-direct"), ESG_EGRESS_DELIVERED, 1, 200));
  CHECK(httpd_get(f.h, 0, &q) == 0);
  CHECK_STR(q.path, "/direct");
  fx_stop(&f);

  /* an empty variable is unset, as libcurl has it: NO_PROXY applies under an empty no_proxy */
  fx_start(&f, NULL);
  setenv("no_proxy", "", 1);
  setenv("NO_PROXY", "127.0.0.1", 1);
  fx_open(&f);
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/direct2"), "evt-direct2", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(ended(outcome_of(f.c, "evt-direct2"), ESG_EGRESS_DELIVERED, 1, 200));
  fx_stop(&f);
  /* and an empty http_proxy leaves all_proxy in force */
  fx_start(&f, NULL);
  snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", httpd_port(f.h));
  unsetenv("no_proxy");
  unsetenv("NO_PROXY");
  setenv("http_proxy", "", 1);
  setenv("all_proxy", proxy, 1);
  fx_open(&f);
  CHECK_RC(ESG_OK, submit(f.e, "http://gateway.invalid/all", "evt-all", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(ended(outcome_of(f.c, "evt-all"), ESG_EGRESS_DELIVERED, 1, 200));
  CHECK(httpd_get(f.h, 0, &q) == 0);
  CHECK_STR(q.path, "http://gateway.invalid/all");
  for (int i = 0; i < 5; i++) unsetenv(names[i]);
  fx_stop(&f);
}

/* Per-attempt timeouts against a stalling server; connection refused is a network error. */
static void test_timeouts(void) {
  fx f;
  fx_start(&f, NULL);
  f.o.timeout_ms = 150;
  f.o.max_attempts = 3;
  fx_open(&f);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/slow", .count = 1, .status = 200, .stall_ms = 3000});
  int64_t t0 = httpd_now_ms();
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/slow"), "evt-slow", NULL));
  httpd_rule_add(f.h, &(httpd_rule){.path = "/never", .status = 200, .stall_ms = -1});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/never"), "evt-never", NULL));
  CHECK_RC(ESG_OK, submit(f.e, "http://127.0.0.1:1/refused", "evt-refused", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  int64_t took = httpd_now_ms() - t0;
  CHECK(took < 2500); /* three 150 ms attempts, not the 3 s stall */
  CHECK(ended(outcome_of(f.c, "evt-slow"), ESG_EGRESS_DELIVERED, 2, ANY));
  outc *x = outcome_of(f.c, "evt-never");
  CHECK(ended(x, ESG_EGRESS_EXHAUSTED, 3, 0));
  if (x) CHECK_CONTAINS(x->error, "imeout");
  x = outcome_of(f.c, "evt-refused");
  CHECK(ended(x, ESG_EGRESS_EXHAUSTED, 3, 0));
  if (x) CHECK_CONTAINS(x->error, "connect");
  fx_stop(&f);

  /* the total-time bound: attempts stop once max_elapsed has passed */
  fx_start(&f, NULL);
  httpd_default_status(f.h, 503);
  f.o.max_attempts = 1000;
  f.o.backoff_base_ms = 10;
  f.o.backoff_cap_ms = 10;
  f.o.max_elapsed_ms = 120;
  fx_open(&f);
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/x"), "evt-time", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  x = &f.c->o[0];
  CHECK(f.c->n == 1 && ended(x, ESG_EGRESS_EXHAUSTED, ANY, ANY) && x->attempts > 2 && x->attempts < 1000);
  CHECK(x->last - x->first <= 120 + 50); /* scheduled within the limit; started when the loop woke */
  CHECK_CONTAINS(x->error, "time limit");
  fx_stop(&f);
}

/* Per-key order: one at a time, in submit order, retries included; a failing key blocks nobody. */
static void test_order(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/b", .count = 3, .status = 503});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/c", .status = 500});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/a", .status = 200, .stall_ms = 3}); /* slow enough for overlap to show */
  f.o.max_in_flight = 4;
  f.o.max_attempts = 6;
  f.o.backoff_base_ms = 10;
  f.o.backoff_cap_ms = 40;
  fx_open(&f);
  char ua[128], ub[128], uc[128], id[32];
  httpd_url(f.h, "/a", ua, sizeof ua);
  httpd_url(f.h, "/b", ub, sizeof ub);
  httpd_url(f.h, "/c", uc, sizeof uc);
  for (int i = 0; i < 6; i++) {
    snprintf(id, sizeof id, "c%d", i);
    CHECK_RC(ESG_OK, submit(f.e, uc, id, "key-c"));
    snprintf(id, sizeof id, "b%d", i);
    CHECK_RC(ESG_OK, submit(f.e, ub, id, "key-b"));
    snprintf(id, sizeof id, "a%d", i);
    CHECK_RC(ESG_OK, submit(f.e, ua, id, "key-a"));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  int n = httpd_count(f.h);
  int last_a = -1, last_b = -1, last_c = -1, last_a_at = -1, first_c5 = -1, bcount = 0;
  for (int i = 0; i < n; i++) {
    httpd_req q = received(f.h, i);
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
  ctx *c = f.c;
  for (int i = 0; i < c->n; i++) {
    if (c->o[i].id[0] == 'a' || c->o[i].id[0] == 'b') CHECK(c->o[i].outcome == ESG_EGRESS_DELIVERED);
    if (c->o[i].id[0] == 'c') CHECK(ended(&c->o[i], ESG_EGRESS_EXHAUSTED, 6, ANY));
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
  fx_stop(&f);
}

/* Concurrency: different keys overlap, up to max_in_flight and no more. */
static void test_parallel(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_rule_add(f.h, &(httpd_rule){.status = 200, .stall_ms = 200});
  f.o.max_in_flight = 4;
  fx_open(&f);
  submit_n(f.e, fx_url(&f, "/p"), "p", 8, NULL);
  int64_t t0 = httpd_now_ms();
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 50));
  esg_egress_stats st = stats_of(f.e);
  CHECK(st.in_flight == 4 && st.queued == 4);
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  int64_t took = httpd_now_ms() - t0;
  CHECK(took >= 390 && took < 1200); /* two waves of 200 ms, not eight */
  CHECK(f.c->n == 8);
  CHECK(httpd_connections(f.h) <= 4);
  fx_stop(&f);
}

/* Token bucket: the burst goes at once, then starts are 1/rate apart. */
static void test_rate_limit(void) {
  fx f;
  fx_start(&f, NULL);
  f.o.max_in_flight = 8;
  f.o.rate_per_s = 20;
  f.o.rate_burst = 3;
  fx_open(&f);
  submit_n(f.e, fx_url(&f, "/rate"), "q", 8, NULL);
  int64_t t0 = httpd_now_ms();
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  int64_t took = httpd_now_ms() - t0;
  CHECK(httpd_count(f.h) == 8);
  CHECK(took >= 5 * 50 - 10); /* five beyond the burst, 50 ms apart */
  httpd_req q0 = received(f.h, 0), q2 = received(f.h, 2), q3 = received(f.h, 3);
  CHECK(q2.t_ms - q0.t_ms < 50);  /* the burst: together (one token each would be 100 ms) */
  CHECK(q3.t_ms - q0.t_ms >= 30); /* the fourth waits for a token */
  fx_stop(&f);
}

/* Faults: resubmitted with the same id (the receiver sees the same key), deleted on success. */
static void test_resubmit(void) {
  fx f;
  fx_start(&f, "egress-resubmit.db");
  httpd_rule_add(f.h, &(httpd_rule){.path = "/flaky", .count = 2, .status = 503});
  f.o.max_attempts = 2;
  fx_open(&f);
  const char *url = fx_url(&f, "/flaky"); /* f.url: the /gone below replaces it for t too */
  ctx *c = f.c;
  CHECK_RC(ESG_OK, submit(f.e, url, "evt-rs", "pk-1"));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(c->n == 1 && c->o[0].outcome == ESG_EGRESS_EXHAUSTED);
  int64_t fid = c->o[0].fault_id;
  CHECK(fid > 0);

  esg_egress_request t = {0};
  CHECK_RC(ESG_EINVAL, esg_egress_resubmit(f.e, fid, &t)); /* no url */
  t.url = url;
  t.event_id = "someone-else";
  CHECK_RC(ESG_EINVAL, esg_egress_resubmit(f.e, fid, &t));
  t.event_id = NULL;
  CHECK_RC(ESG_NOT_FOUND, esg_egress_resubmit(f.e, fid + 100, &t));
  CHECK_RC(ESG_OK, esg_egress_resubmit(f.e, fid, &t));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(c->n == 2 && ended(&c->o[1], ESG_EGRESS_DELIVERED, 3, ANY));
  CHECK(c->o[1].first == c->o[0].first);
  fault_seen fs = {0};
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(f.s, fid, fault_cb, &fs));
  CHECK(httpd_count(f.h) == 3);
  char k[3][64];
  for (int i = 0; i < 3; i++) {
    httpd_req q = received(f.h, i);
    httpd_header(&q, "Idempotency-Key", k[i], sizeof k[i]);
    CHECK_STR(k[i], "evt-rs");
    CHECK_STR(q.body, event_json("evt-rs", "pk-1")); /* the stored event is the body */
  }

  /* failing again: one fault replaces the other, attempts carried over */
  httpd_rule_add(f.h, &(httpd_rule){.path = "/gone", .status = 410});
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/gone"), "evt-gone", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  int64_t f1 = c->o[2].fault_id;
  CHECK(c->o[2].outcome == ESG_EGRESS_REFUSED && f1 > 0);
  CHECK_RC(ESG_OK, esg_egress_resubmit(f.e, f1, &t));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(c->n == 4 && ended(&c->o[3], ESG_EGRESS_REFUSED, 2, ANY));
  int64_t f2 = c->o[3].fault_id;
  CHECK(f2 > f1);
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(f.s, f1, fault_cb, &fs));
  fs = faults_listed(f.s);
  CHECK(fs.n == 1 && fs.id == f2 && fs.attempts == 2 && fs.status == 410);
  CHECK_STR(fs.event_id, "evt-gone");
  fx_stop(&f);
}

/* The idempotency header (custom name here) is present and the same on every attempt. */
static void test_idempotency_header(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/i", .count = 3, .status = 500});
  f.o.idempotency_header = "X-Request-Id";
  fx_open(&f);
  CHECK_RC(ESG_OK, submit(f.e, fx_url(&f, "/i"), "evt-idem-1", NULL));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(httpd_count(f.h) == 4);
  for (int i = 0; i < 4; i++) {
    httpd_req q = received(f.h, i);
    char v[64];
    CHECK_STR(httpd_header(&q, "X-Request-Id", v, sizeof v), "evt-idem-1");
    CHECK(httpd_header(&q, "Idempotency-Key", v, sizeof v) == NULL);
  }
  fx_stop(&f);
}

/* Keep-alive: sequential deliveries share one connection; parallel ones at most max_in_flight. */
static void test_connection_reuse(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_rule_add(f.h, &(httpd_rule){.path = "/k", .count = 2, .status = 503});
  f.o.max_in_flight = 1;
  fx_open(&f);
  submit_n(f.e, fx_url(&f, "/k"), "k", 30, NULL);
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(httpd_count(f.h) == 32);
  CHECK(httpd_connections(f.h) == 1);
  for (int i = 0; i < 32; i++) CHECK(received(f.h, i).conn == 1);
  esg_egress_stats st = stats_of(f.e);
  CHECK(st.connects == 1 && st.attempts == 32 && st.delivered == 30);
  fx_stop(&f);

  fx_start(&f, NULL);
  f.o.max_in_flight = 4;
  fx_open(&f);
  const char *url = fx_url(&f, "/k");
  char prefix[32];
  for (int round = 0; round < 5; round++) {
    snprintf(prefix, sizeof prefix, "m%d-", round);
    submit_n(f.e, url, prefix, 20, NULL);
    CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  }
  CHECK(httpd_count(f.h) == 100);
  CHECK(httpd_connections(f.h) <= 4);
  CHECK(stats_of(f.e).connects <= 4);
  fx_stop(&f);
}

/* Close with work left: callbacks say cancelled, claims are released at once. */
static void test_cancel_on_close(void) {
  fx f;
  fx_start(&f, "egress-cancel.db");
  httpd_default_status(f.h, 503);
  f.o.backoff_base_ms = 10000;
  f.o.backoff_cap_ms = 10000;
  fx_open(&f);
  const char *url = fx_url(&f, "/c");
  char id[32];
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "cx%d", i);
    esg_claim_info ci;
    CHECK_RC(ESG_NEW, esg_claim(f.s, id, NULL, 0, 30000, 3600000, &ci));
    esg_egress_request r = claimed_request(id, url, ci.token);
    r.partition_key = "same";
    CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  }
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 100)); /* cx0 failed once and waits its backoff */
  esg_egress_close(f.e);
  f.e = NULL;
  CHECK(f.c->n == 3);
  for (int i = 0; i < f.c->n; i++) CHECK(f.c->o[i].outcome == ESG_EGRESS_CANCELLED);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "cx%d", i);
    CHECK_RC(ESG_NEW, esg_claim(f.s, id, NULL, 0, 30000, 3600000, NULL));
  }
  CHECK(faults_listed(f.s).n == 0);
  fx_stop(&f);
}

/* on_done that closes the engine (first delivery) or feeds it malformed URLs forever. */
typedef struct reentry {
  esg_egress *e;
  int done, cancelled, refused_submit;
  bool close, feed;
} reentry;

static void reentry_done(void *ud, const esg_egress_result *r) {
  reentry *x = ud;
  x->done++;
  x->cancelled += r->outcome == ESG_EGRESS_CANCELLED;
  if (x->close && x->done == 1) {
    esg_egress_close(x->e);
    x->refused_submit = submit(x->e, "http://127.0.0.1:1/", "evt-late", NULL) == ESG_ESTATE;
  }
  if (x->feed) submit(x->e, "http://[::1:bad/", "evt-again", NULL); /* fails at once, every time */
}

/* Closing from a callback takes effect when run returns; run's time limit holds while
   every turn finishes something. */
static void test_callback_reentry(void) {
  httpd *h = httpd_start();
  char url[128];
  httpd_url(h, "/r", url, sizeof url);
  reentry x = {.close = true};
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.on_done = reentry_done;
  o.ud = &x;
  o.max_in_flight = 1;
  x.e = open_e(NULL, &o);
  for (int i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "evt-r%d", i);
    CHECK_RC(ESG_OK, submit(x.e, url, id, "one-key"));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(x.e)); /* and the handle is gone: ASan/valgrind watch */
  CHECK(x.done == 5 && x.cancelled == 4 && x.refused_submit);
  httpd_stop(h);

  reentry y = {.feed = true};
  o.ud = &y;
  y.e = open_e(NULL, &o);
  CHECK_RC(ESG_OK, submit(y.e, "http://[::1:bad/", "evt-first", NULL));
  CHECK_RC(ESG_BUSY, esg_egress_run(y.e, 50));
  CHECK(y.done > 0);
  y.feed = false;
  esg_egress_close(y.e);
}

/* A claim taken over by another worker during the backoff stops the delivery (claim_lease_ms). */
static void test_claim_takeover(void) {
  fx f;
  fx_start(&f, "egress-takeover.db");
  httpd_rule_add(f.h, &(httpd_rule){.path = "/t", .count = 1, .status = 503});
  f.o.claim_lease_ms = 30000;
  f.o.backoff_base_ms = 1000;
  f.o.backoff_cap_ms = 1000;
  f.o.clock = tu_clock;
  f.o.clock_ud = &f.now;
  fx_open(&f);
  esg_claim_info ci;
  CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-t", NULL, 0, 1000, 3600000, &ci));
  esg_egress_request r = claimed_request("evt-t", fx_url(&f, "/t"), ci.token);
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  CHECK_RC(ESG_BUSY, esg_egress_run(f.e, 100)); /* 503, waits (fake clock) */
  f.now += 5000;                                /* lease ran out: another worker takes over */
  esg_claim_info other;
  CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-t", NULL, 0, 1000, 3600000, &other));
  CHECK(other.attempts == 2);
  CHECK_RC(ESG_OK, esg_egress_run(f.e, 1000));
  CHECK(f.c->n == 1 && f.c->o[0].outcome == ESG_EGRESS_CANCELLED);
  CHECK_CONTAINS(f.c->o[0].error, "taken over");
  CHECK(httpd_count(f.h) == 1);
  CHECK_RC(ESG_OK, esg_complete(f.s, "evt-t", other.token, NULL, 0)); /* the new owner's claim is intact */
  fx_stop(&f);
}

/*
 * A loop turn's deliveries complete their claims in one store batch: each gets the
 * outcome a completion of its own would have had. Of 24 delivered at once, three
 * claims were taken over meanwhile (ETOKEN, the new owner's claim intact), one key
 * comes twice with one token (whichever is second finds it completed: ETOKEN), one claim is
 * still pending in the open group (completed in memory), and the rest complete.
 */
static void test_batch_completion(void) {
  for (int grouped = 0; grouped < 2; grouped++) {
    fx f;
    fx_start(&f, NULL);
    esg_store_opts so = ESG_STORE_OPTS_INIT;
    so.clock = tu_clock;
    so.clock_ud = &f.now;
    so.group_commit_ms = grouped ? 1000000 : 0;
    char path[4200];
    snprintf(path, sizeof path, "%s", tu_path(grouped ? "egress-batch-g.db" : "egress-batch.db"));
    CHECK_RC(ESG_OK, esg_store_open(&f.s, path, &so));
    esg_store *other = tu_open(path, &f.now);
    f.o.max_in_flight = 32;
    fx_open(&f);
    const char *url = fx_url(&f, "/b");
    int64_t tok[24];
    char id[24][16];
    for (int i = 0; i < 20; i++) {
      snprintf(id[i], sizeof id[i], "evt-b%02d", i);
      esg_claim_info ci;
      CHECK_RC(ESG_NEW, esg_claim(f.s, id[i], NULL, 0, i < 3 ? 1000 : 600000, 3600000, &ci));
      tok[i] = ci.token;
    }
    CHECK_RC(ESG_OK, esg_store_flush(f.s));
    f.now += 5000; /* the first three leases ran out: another worker takes them */
    int64_t theirs[3];
    for (int i = 0; i < 3; i++) {
      esg_claim_info ci;
      CHECK_RC(ESG_NEW, esg_claim(other, id[i], NULL, 0, 600000, 3600000, &ci));
      theirs[i] = ci.token;
    }
    esg_claim_info ci;
    CHECK_RC(ESG_NEW, esg_claim(f.s, "evt-bp", NULL, 0, 600000, 3600000, &ci)); /* pending if grouped */
    for (int i = 0; i < 20; i++) {
      esg_egress_request r = claimed_request(id[i], url, tok[i]);
      CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
    }
    esg_egress_request twice = claimed_request(id[5], url, tok[5]);
    twice.event_id = "evt-b05-again";
    CHECK_RC(ESG_OK, esg_egress_submit(f.e, &twice));
    esg_egress_request pend = claimed_request("evt-bp", url, ci.token);
    CHECK_RC(ESG_OK, esg_egress_submit(f.e, &pend));
    CHECK_RC(ESG_OK, esg_egress_drain(f.e));
    CHECK(f.c->n == 22);
    for (int i = 0; i < 20; i++) {
      outc *x = outcome_of(f.c, id[i]);
      CHECK(ended(x, ESG_EGRESS_DELIVERED, 1, 200));
      if (x && i != 5) CHECK_RC(i < 3 ? ESG_ETOKEN : ESG_OK, x->store_rc);
    }
    /* the key delivered twice: whichever answer came first completed it, the other found it done */
    outc *x = outcome_of(f.c, "evt-b05-again"), *y = outcome_of(f.c, id[5]);
    CHECK(ended(x, ESG_EGRESS_DELIVERED, 1, 200));
    if (x && y)
      CHECK((x->store_rc == ESG_OK && y->store_rc == ESG_ETOKEN) || (x->store_rc == ESG_ETOKEN && y->store_rc == ESG_OK));
    x = outcome_of(f.c, "evt-bp");
    if (x) CHECK_RC(ESG_OK, x->store_rc);
    CHECK_RC(ESG_OK, esg_store_flush(f.s));
    char res[256];
    CHECK_STR(claim_result(f.s, "evt-bp", res, sizeof res), "{\"status\":200,\"sha256\":\"" OK_SHA256 "\"}");
    CHECK_STR(claim_result(f.s, id[19], res, sizeof res), "{\"status\":200,\"sha256\":\"" OK_SHA256 "\"}");
    for (int i = 0; i < 3; i++) CHECK_RC(ESG_OK, esg_complete(other, id[i], theirs[i], NULL, 0));
    esg_store_close(other);
    fx_stop(&f);
  }
}

/*
 * A store error in a loop turn's batch: another handle holds the write lock (its
 * group is open), so the turn's transaction cannot begin. Every delivery of the
 * turn reports it (ESG_ELOCKED), nothing is completed, and the claims stay theirs:
 * once the lock is free, the owner can still complete them.
 */
static void test_batch_store_error(void) {
  fx f;
  fx_start(&f, NULL);
  char path[4200];
  snprintf(path, sizeof path, "%s", tu_path("egress-batch-locked.db"));
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.clock = tu_clock;
  so.clock_ud = &f.now;
  so.busy_timeout_ms = 50;
  CHECK_RC(ESG_OK, esg_store_open(&f.s, path, &so));
  f.o.max_in_flight = 8;
  fx_open(&f);
  int64_t tok[3];
  char id[3][16];
  for (int i = 0; i < 3; i++) {
    snprintf(id[i], sizeof id[i], "evt-l%d", i);
    esg_claim_info ci;
    CHECK_RC(ESG_NEW, esg_claim(f.s, id[i], NULL, 0, 600000, 3600000, &ci));
    tok[i] = ci.token;
    esg_egress_request r = claimed_request(id[i], fx_url(&f, "/l"), tok[i]);
    CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  }
  esg_store_opts go = so;
  go.group_commit_ms = 1000000;
  esg_store *holder = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&holder, path, &go));
  CHECK_RC(ESG_NEW, esg_claim(holder, "held", NULL, 0, 600000, 3600000, NULL)); /* its group holds the lock */
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  CHECK(f.c->n == 3);
  for (int i = 0; i < 3; i++) {
    outc *x = outcome_of(f.c, id[i]);
    CHECK(ended(x, ESG_EGRESS_DELIVERED, 1, 200));
    if (x) CHECK_RC(ESG_ELOCKED, x->store_rc);
  }
  CHECK_RC(ESG_OK, esg_store_flush(holder));
  for (int i = 0; i < 3; i++) CHECK_RC(ESG_OK, esg_complete(f.s, id[i], tok[i], NULL, 0));
  esg_store_close(holder);
  fx_stop(&f);
}

/* The cache's HTTP loader: 200 with an ETag, then a 304 revalidation that refreshes the TTL, 404 negative. */
static void test_cache_loader(void) {
  fx f;
  fx_start(&f, "egress-loader.db");
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t%201", .count = 1, .status = 200,
                                    .body = "{\"name\":\"one\"}", .etag = "\"v1\""});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t%201", .status = 304, .etag = "\"v1\""});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t2", .status = 404});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t3", .status = 500});
  esg_cache_opts co = ESG_CACHE_OPTS_INIT;
  co.ttl_ms = 1000;
  co.mem_entries = -1; /* store tier only: every refresh is visible */
  esg_cache *cache = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&cache, f.s, &co));
  esg_http_loader_opts lo = ESG_HTTP_LOADER_OPTS_INIT;
  lo.url = fx_url(&f, "/things/{key}");
  lo.clock = tu_clock;
  lo.clock_ud = &f.now;
  esg_http_loader *l = NULL;
  CHECK_RC(ESG_OK, esg_http_loader_open(&l, &lo));
  esg_cache_entry ent;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t 1", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_HIT && ent.loaded == 1);
  CHECK(ent.value && strcmp(ent.value, "{\"name\":\"one\"}") == 0);
  f.now += 2000; /* past the TTL: revalidate */
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t 1", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_HIT && ent.loaded == 1);
  CHECK(ent.value && strcmp(ent.value, "{\"name\":\"one\"}") == 0);
  CHECK(ent.expires >= f.now + 1000 - 1);
  CHECK(httpd_count(f.h) == 2);
  httpd_req q = received(f.h, 0);
  char v[64];
  CHECK(httpd_header(&q, "If-None-Match", v, sizeof v) == NULL);
  q = received(f.h, 1);
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

  /* a 404 whose page is over max_body_bytes is still absent (only a 2xx body is a value);
     an ETag longer than any fixed buffer revalidates whole */
  static char long_etag[420];
  long_etag[0] = '"';
  memset(long_etag + 1, 'e', 400);
  strcpy(long_etag + 401, "\"");
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t4", .status = 404, .body = "<html>a page of a 404, long</html>"});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t5", .count = 1, .status = 200, .body = "{}", .etag = long_etag});
  httpd_rule_add(f.h, &(httpd_rule){.path = "/things/t5", .status = 304, .etag = long_etag});
  lo.max_body_bytes = 8;
  CHECK_RC(ESG_OK, esg_http_loader_open(&l, &lo));
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t4", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_NEGATIVE);
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t5", esg_http_loader_load, l, &ent));
  f.now += 2000;
  CHECK_RC(ESG_OK, esg_cache_get_or_load(cache, "t5", esg_http_loader_load, l, &ent));
  CHECK(ent.result == ESG_CACHE_HIT && ent.value && strcmp(ent.value, "{}") == 0);
  esg_http_loader_counts(l, &req, &nm, &absent, &failed);
  CHECK(req == 3 && nm == 1 && absent == 1 && failed == 0);
  char big[512];
  q = received(f.h, httpd_count(f.h) - 1);
  CHECK_STR(httpd_header(&q, "If-None-Match", big, sizeof big), long_etag);
  esg_http_loader_close(l);
  lo.timeout_ms = -3;
  CHECK_RC(ESG_EINVAL, esg_http_loader_open(&l, &lo));
  CHECK_CONTAINS(esg_errmsg(NULL), "timeout_ms is -3");
  esg_cache_close(cache);
  fx_stop(&f);
}

/* ---------------------------------------------------------------- crash -- */

#define CRASH_N 300

static int64_t skew_ms;
static int64_t skewed_clock(void *ud) {
  (void)ud;
  return esg_clock_real(NULL) + skew_ms;
}

/* Event i of the crash run, on one of 20 partition keys, and its claim. */
typedef struct crash_evt {
  char id[32], pk[32];
  const char *body;
  esg_claim_info ci;
} crash_evt;

/* Claims event i with its body's hash as the payload hash; returns esg_claim's status. */
static int crash_claim(esg_store *s, int i, crash_evt *ev) {
  snprintf(ev->id, sizeof ev->id, "evt-%d", i);
  snprintf(ev->pk, sizeof ev->pk, "thing-%d", i % 20);
  ev->body = event_json(ev->id, ev->pk);
  uint8_t hash[32];
  esg_sha256(ev->body, strlen(ev->body), hash);
  return esg_claim(s, ev->id, hash, 32, 2000, 3600000, &ev->ci);
}

/* Submits a claimed event to url, under its claim. */
static int crash_submit(esg_egress *e, const char *url, const crash_evt *ev) {
  esg_egress_request r = claimed_request(ev->id, url, ev->ci.token);
  r.partition_key = ev->pk;
  r.body = ev->body;
  r.body_len = strlen(ev->body);
  return esg_egress_submit(e, &r);
}

/* Claims and delivers events [0, CRASH_N) with egress; the parent kills it part way. */
static void crash_child(const char *path, const char *url) {
  esg_store *s = NULL;
  if (esg_store_open(&s, path, NULL) != ESG_OK) _exit(3);
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.max_in_flight = 8;
  o.backoff_base_ms = 5;
  o.backoff_cap_ms = 20;
  esg_egress *e = NULL;
  if (esg_egress_open(&e, s, &o) != ESG_OK) _exit(4);
  for (int i = 0; i < CRASH_N; i++) {
    crash_evt ev;
    if (crash_claim(s, i, &ev) != ESG_NEW) _exit(5);
    if (crash_submit(e, url, &ev) != ESG_OK) _exit(6);
    if (i % 10 == 9) esg_egress_run(e, 0); /* deliver while claiming, like a gateway */
  }
  esg_egress_drain(e);
  esg_egress_close(e);
  esg_store_close(s);
  _exit(0);
}

static void test_crash_takeover(void) {
  httpd *h = httpd_start();
  httpd_rule_add(h, &(httpd_rule){.status = 200, .stall_ms = 4}); /* 4 ms each: the kill lands mid-run */
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
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.clock = skewed_clock;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, &so));
  ctx *c = calloc(1, sizeof *c);
  esg_egress_opts o = fast_opts(c);
  o.max_in_flight = 8;
  esg_egress *e = open_e(s, &o);
  int dups = 0, taken = 0;
  for (int i = 0; i < CRASH_N; i++) {
    crash_evt ev;
    int rc = crash_claim(s, i, &ev);
    if (rc == ESG_DUPLICATE) {
      dups++;
      continue;
    }
    CHECK(rc == ESG_NEW);
    if (rc != ESG_NEW) continue;
    if (ev.ci.attempts > 1) taken++;
    CHECK_RC(ESG_OK, crash_submit(e, url, &ev));
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
    httpd_req q = received(h, i);
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

/* The circuit breaker: two failures in a row open the host's circuit; the deliveries
   behind them wait without attempts, a probe closes it, and they all go through. */
static void test_circuit_breaker(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_rule down = {.path = "/down", .count = 3, .status = 503};
  httpd_rule_add(f.h, &down);
  f.o.max_in_flight = 1; /* one at a time, so the order of attempts is known */
  f.o.max_attempts = 10;
  f.o.circuit_failures = 2;
  f.o.circuit_open_ms = 150;
  fx_open(&f);
  const char *ids[] = {"c1", "c2", "c3", "c4"};
  for (int i = 0; i < 4; i++) {
    esg_egress_request r = {0};
    r.event_id = ids[i];
    r.url = fx_url(&f, "/down");
    CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  }
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  esg_egress_stats st;
  esg_egress_get_stats(f.e, &st);
  CHECK(st.delivered == 4);
  CHECK(st.circuit_opens == 2); /* opened after two failures, reopened by the failed probe */
  CHECK(st.circuits_open == 0);
  CHECK(httpd_count(f.h) == 3 + 4); /* no attempt while open: the three failures, then one each */
  httpd_req a, b, c;
  CHECK(httpd_get(f.h, 1, &a) == 0 && httpd_get(f.h, 2, &b) == 0 && httpd_get(f.h, 3, &c) == 0);
  CHECK(b.t_ms - a.t_ms >= 140);     /* the probe waited out the open time */
  CHECK(c.t_ms - b.t_ms >= 290);     /* and the failed probe doubled it */
  outc *o3 = outcome_of(f.c, "c3"), *o4 = outcome_of(f.c, "c4");
  CHECK(o3 && o3->attempts == 1);    /* they waited out the open circuit without using attempts */
  CHECK(o4 && o4->attempts == 1);
  fx_stop(&f);
}

/* A circuit that stays open past a delivery's time limit ends it exhausted, naming it. */
static void test_circuit_time_limit(void) {
  fx f;
  fx_start(&f, NULL);
  httpd_default_status(f.h, 503);
  f.o.max_in_flight = 1;
  f.o.max_attempts = 10;
  f.o.max_elapsed_ms = 300;
  f.o.circuit_failures = 1;
  f.o.circuit_open_ms = 1000;
  fx_open(&f);
  esg_egress_request r = {0};
  r.event_id = "t1";
  r.url = fx_url(&f, "/x");
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  r.event_id = "t2";
  CHECK_RC(ESG_OK, esg_egress_submit(f.e, &r));
  CHECK_RC(ESG_OK, esg_egress_drain(f.e));
  outc *o1 = outcome_of(f.c, "t1"), *o2 = outcome_of(f.c, "t2");
  CHECK(o1 && o1->outcome == ESG_EGRESS_EXHAUSTED);
  CHECK(o2 && o2->outcome == ESG_EGRESS_EXHAUSTED && o2->attempts == 0);
  CHECK(o2 && strstr(o2->error, "circuit for 127.0.0.1 is open") != NULL);
  CHECK(httpd_count(f.h) == 1);
  fx_stop(&f);
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
  RUN(test_urls);
  RUN(test_proxy_env);
  RUN(test_timeouts);
  RUN(test_order);
  RUN(test_parallel);
  RUN(test_rate_limit);
  RUN(test_resubmit);
  RUN(test_idempotency_header);
  RUN(test_connection_reuse);
  RUN(test_cancel_on_close);
  RUN(test_callback_reentry);
  RUN(test_claim_takeover);
  RUN(test_batch_completion);
  RUN(test_batch_store_error);
  RUN(test_cache_loader);
  RUN(test_crash_takeover);
  RUN(test_circuit_breaker);
  RUN(test_circuit_time_limit);
  return tu_done();
}
