/*
 * The C gateway (esg/gateway.h, docs/gateway.md "The gateway in C"): each outcome of
 * the pipeline with its counters, claim results and fault records; the sinks; the HTTP
 * sink against a real server on 127.0.0.1; and the loop that goes on delivering and
 * committing while a pipe source pauses.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <unistd.h>
#include "httpd.c"
#include "testutil.h"

static int64_t now = 1700000000000;

#define EV(id, body) "{\"id\":\"" id "\",\"type\":\"t\",\"timestamp\":1" body "}"

/* --------------------------------------------------------------- helpers -- */

typedef struct seen {
  int n;
  char out[8][256];
  int faults;
  char fault_stage[32];
  char fault_error[512];
  int64_t fault_id;
} seen;

static int collect_write(void *ud, esg_gateway_event *e, const void *out, size_t len) {
  (void)e;
  seen *s = ud;
  if (s->n < 8) snprintf(s->out[s->n], sizeof s->out[0], "%.*s", (int)len, (const char *)out);
  __atomic_add_fetch(&s->n, 1, __ATOMIC_SEQ_CST);
  return ESG_OK;
}

static void on_fault(void *ud, const esg_gateway_fault *f) {
  seen *s = ud;
  s->faults++;
  snprintf(s->fault_stage, sizeof s->fault_stage, "%s", f->stage);
  snprintf(s->fault_error, sizeof s->fault_error, "%s", f->error);
  s->fault_id = f->id;
}

static esg_gateway_opts base_opts(esg_store *s, seen *k) {
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = s;
  o.name = "t";
  o.ud = k;
  o.sink = ESG_GATEWAY_SINK_CALLBACK;
  o.write = collect_write;
  o.on_fault = on_fault;
  return o;
}

static esg_gateway *open_gw(const esg_gateway_opts *o) {
  esg_gateway *g = NULL;
  int rc = esg_gateway_open(&g, o);
  if (rc != ESG_OK) fprintf(stderr, "esg_gateway_open: %s\n", esg_errmsg(NULL));
  CHECK(g != NULL);
  return g;
}

static esg_gateway_stats stats_of(esg_gateway *g) {
  esg_gateway_stats st;
  esg_gateway_get_stats(g, &st);
  return st;
}

/* The stored result of a completed claim, as a string ("" when none, "?" when not completed). */
static const char *claim_result(esg_store *s, const char *key, char *buf, size_t n) {
  esg_claim_info ci;
  int rc = esg_claim(s, key, NULL, 0, 1000, 60000, &ci);
  if (rc == ESG_DUPLICATE) snprintf(buf, n, "%.*s", (int)ci.result_len, ci.result ? (const char *)ci.result : "");
  else snprintf(buf, n, "?%s", esg_status_name(rc));
  if (rc == ESG_NEW) esg_release(s, key, ci.token); /* only looking */
  return buf;
}

typedef struct fault_seen {
  int n;
  char stage[32], event_id[128], error[512], event[512];
} fault_seen;

static int each_fault(void *ud, const esg_fault *f) {
  fault_seen *k = ud;
  k->n++;
  snprintf(k->stage, sizeof k->stage, "%s", f->stage);
  snprintf(k->event_id, sizeof k->event_id, "%s", f->event_id);
  snprintf(k->error, sizeof k->error, "%s", f->error);
  snprintf(k->event, sizeof k->event, "%.*s", (int)f->event_len, f->event ? f->event : "");
  return 0;
}

/* ----------------------------------------------------------- the outcomes -- */

static void test_delivered_then_duplicates(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  const char *a = EV("e1", ",\"n\":1"), *b = EV("e2", ",\"n\":2");
  CHECK_RC(ESG_OK, esg_gateway_push(g, a, strlen(a)));
  CHECK_RC(ESG_OK, esg_gateway_push(g, b, strlen(b)));
  CHECK_RC(ESG_OK, esg_gateway_push(g, "  \r", 3)); /* blank: not counted */
  CHECK_RC(ESG_OK, esg_gateway_push(g, a, strlen(a)));
  esg_gateway_stats st = stats_of(g);
  CHECK(st.received == 3 && st.delivered == 2 && st.duplicates == 1 && st.faults == 0);
  CHECK(k.n == 2);
  CHECK_STR(k.out[0], a); /* no transform: the bytes as received */
  char buf[128];
  CHECK_STR(claim_result(s, "e1", buf, sizeof buf), "");
  CHECK_RC(ESG_OK, esg_gateway_close(g));
  esg_store_close(s);
}

static int transform_fn(void *ud, esg_gateway_event *e) {
  (void)ud;
  const char *id = esg_event_id(esg_gateway_event_envelope(e));
  if (strcmp(id, "drop") == 0) return ESG_OK; /* no output: dropped */
  if (strcmp(id, "bad") == 0) return esg_gateway_event_fail(e, "cannot map %s", id);
  char out[128];
  int n = snprintf(out, sizeof out, "{\"dealId\":\"%s\"}", id);
  return esg_gateway_event_set_output(e, out, (size_t)n);
}

static int filter_fn(void *ud, esg_gateway_event *e) {
  (void)ud;
  return strcmp(esg_event_type(esg_gateway_event_envelope(e)), "skip") != 0;
}

static void test_filter_transform_drop_fault(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.filter = filter_fn;
  o.transform = transform_fn;
  esg_gateway *g = open_gw(&o);
  const char *skip = "{\"id\":\"s1\",\"type\":\"skip\",\"timestamp\":1}";
  CHECK_RC(ESG_OK, esg_gateway_push(g, skip, strlen(skip)));
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("ok", ""), strlen(EV("ok", ""))));
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("drop", ""), strlen(EV("drop", ""))));
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, EV("bad", ""), strlen(EV("bad", ""))));
  esg_gateway_stats st = stats_of(g);
  CHECK(st.received == 4 && st.filtered == 1 && st.delivered == 1 && st.dropped == 1 && st.faults == 1);
  CHECK_STR(k.out[0], "{\"dealId\":\"ok\"}");
  CHECK_STR(k.fault_stage, "transform");
  CHECK_CONTAINS(k.fault_error, "cannot map bad");
  char buf[128], want[128];
  CHECK_STR(claim_result(s, "drop", buf, sizeof buf), "{\"status\":\"dropped\"}");
  snprintf(want, sizeof want, "{\"status\":\"fault\",\"fault\":%lld}", (long long)k.fault_id);
  CHECK_STR(claim_result(s, "bad", buf, sizeof buf), want);
  CHECK_STR(claim_result(s, "s1", buf, sizeof buf), "?NEW"); /* filtered: nothing stored */
  fault_seen f = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, each_fault, &f));
  CHECK(f.n == 1);
  CHECK_STR(f.stage, "transform");
  CHECK_STR(f.event_id, "bad");
  CHECK_STR(f.event, EV("bad", "")); /* the bytes, for resubmission */
  CHECK_CONTAINS(f.error, "(gateway t)");
  /* a rerun never repeats the fault */
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("bad", ""), strlen(EV("bad", ""))));
  CHECK(stats_of(g).duplicates == 1 && stats_of(g).faults == 1);
  esg_gateway_close(g);
  esg_store_close(s);
}

static void test_parse_and_mismatch_faults(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  const char *broken = "{\"id\":\"p1\",\"type\":\"t\"}"; /* no timestamp */
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, broken, strlen(broken)));
  CHECK_STR(k.fault_stage, "parse");
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, "not json", 8));
  fault_seen f = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, each_fault, &f));
  CHECK(f.n == 2);
  CHECK(strncmp(f.event_id, "unparsed:", 9) == 0); /* the last one had no id */
  const char *a = EV("m1", ",\"v\":1"), *b = EV("m1", ",\"v\":2");
  CHECK_RC(ESG_OK, esg_gateway_push(g, a, strlen(a)));
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, b, strlen(b)));
  CHECK_STR(k.fault_stage, "idempotence");
  CHECK_CONTAINS(k.fault_error, "different payload");
  char buf[128];
  CHECK_STR(claim_result(s, "m1", buf, sizeof buf), ""); /* the first one's claim stands */
  esg_gateway_close(g);
  esg_store_close(s);
}

static void test_busy(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  const char *uri = tu_store("gw-busy");
  esg_store *s = tu_open(uri, &now), *other = tu_open(uri, &now);
  CHECK_RC(ESG_NEW, esg_claim(other, "b1", NULL, 0, 60000, 600000, NULL));
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  CHECK_RC(ESG_BUSY, esg_gateway_push(g, EV("b1", ""), strlen(EV("b1", ""))));
  CHECK(stats_of(g).busy == 1 && k.n == 0);
  esg_gateway_close(g);
  esg_store_close(other);
  esg_store_close(s);
}

static int entity_fn(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  (void)ud;
  *key = "order:1";
  *version = esg_event_timestamp(esg_gateway_event_envelope(e));
  return ESG_OK;
}

static int shorten(void *ud, esg_gateway_event *e) {
  (void)ud;
  const char *j = "{\"id\":\"o9\",\"type\":\"t\",\"timestamp\":9}";
  return esg_gateway_event_set_json(e, j, strlen(j));
}

/* The entity's document is the event as enriched, whatever its length (its length was
   once read before the enriched JSON was). */
static void test_entity_doc_after_enrich(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.entity = entity_fn;
  o.enrich = shorten;
  esg_gateway *g = open_gw(&o);
  const char *ev = "{\"id\":\"o9\",\"type\":\"t\",\"timestamp\":9,\"padding\":\"a long member the enrich step drops\"}";
  CHECK_RC(ESG_OK, esg_gateway_push(g, ev, strlen(ev)));
  esg_entity ent;
  CHECK_RC(ESG_OK, esg_entity_get(s, "order:1", &ent));
  CHECK(ent.doc_len == strlen("{\"id\":\"o9\",\"type\":\"t\",\"timestamp\":9}"));
  CHECK(ent.doc && strncmp(ent.doc, "{\"id\":\"o9\",\"type\":\"t\",\"timestamp\":9}", ent.doc_len) == 0);
  esg_gateway_close(g);
  esg_store_close(s);
}

static int set_trailing(void *ud, esg_gateway_event *e) {
  (void)ud;
  const char *j = "{\"id\":\"o9\",\"type\":\"t\",\"timestamp\":9} xyz";
  return esg_gateway_event_set_json(e, j, strlen(j));
}

/* New JSON for the event must be one object and nothing after it (cJSON alone ignores
   "xyz" after a value): the event is an enrich fault and nothing is delivered. */
static void test_set_json_trailing_text(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.enrich = set_trailing;
  esg_gateway *g = open_gw(&o);
  const char *ev = "{\"id\":\"o9\",\"type\":\"t\",\"timestamp\":9}";
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, ev, strlen(ev)));
  esg_gateway_stats st = stats_of(g);
  CHECK(st.faults == 1 && st.delivered == 0 && k.n == 0);
  CHECK_STR(k.fault_stage, "enrich");
  CHECK(strstr(k.fault_error, "not a JSON object") != NULL);
  esg_gateway_close(g);
  esg_store_close(s);
}

static void test_stale_entity(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.entity = entity_fn;
  esg_gateway *g = open_gw(&o);
  const char *v5 = "{\"id\":\"o5\",\"type\":\"t\",\"timestamp\":5}", *v3 = "{\"id\":\"o3\",\"type\":\"t\",\"timestamp\":3}";
  CHECK_RC(ESG_OK, esg_gateway_push(g, v5, strlen(v5)));
  CHECK_RC(ESG_OK, esg_gateway_push(g, v3, strlen(v3)));
  esg_gateway_stats st = stats_of(g);
  CHECK(st.delivered == 1 && st.stale == 1);
  esg_entity ent;
  CHECK_RC(ESG_OK, esg_entity_get(s, "order:1", &ent));
  CHECK(ent.version == 5);
  char buf[128];
  CHECK_STR(claim_result(s, "o3", buf, sizeof buf), "{\"status\":\"stale\"}");
  esg_gateway_close(g);
  esg_store_close(s);
}

static int latch_key_fn(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  (void)ud, (void)e;
  *out = "contact:1";
  *len = 9;
  return ESG_OK;
}

/* What the crm will report back for what we write: the contact's state. */
static int crm_doc(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  (void)ud, (void)e;
  *out = "{\"name\":\"Ann\"}";
  *len = strlen(*out);
  return ESG_OK;
}

static void test_echo_suppressed(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  /* A -> B: this gateway writes the crm side, latching what it writes */
  seen ka = {0};
  esg_gateway_opts oa = base_opts(s, &ka);
  oa.latch_key = latch_key_fn;
  oa.latch_to = "crm";
  oa.latch_out_doc = crm_doc;
  esg_gateway *a = open_gw(&oa);
  const char *change = "{\"id\":\"c1\",\"type\":\"t\",\"timestamp\":1,\"name\":\"Ann\"}";
  CHECK_RC(ESG_OK, esg_gateway_push(a, change, strlen(change)));
  /* B -> A: the crm reports the same content back: an echo */
  seen kb = {0};
  esg_gateway_opts ob = base_opts(s, &kb);
  ob.latch_key = latch_key_fn;
  ob.latch_from = "crm";
  ob.latch_out_doc = NULL;
  esg_gateway *b = open_gw(&ob);
  /* the same content under a new id (the crm's own change event) */
  const char *echo2 = "{\"id\":\"c2\",\"type\":\"t\",\"timestamp\":2,\"name\":\"Ann\"}";
  CHECK_RC(ESG_OK, esg_gateway_push(b, echo2, strlen(echo2)));
  CHECK(stats_of(b).echoes == 1 && kb.n == 0);
  /* a genuine change on that side passes */
  const char *real = "{\"id\":\"c3\",\"type\":\"t\",\"timestamp\":3,\"name\":\"Bob\"}";
  CHECK_RC(ESG_OK, esg_gateway_push(b, real, strlen(real)));
  CHECK(stats_of(b).delivered == 1 && kb.n == 1);
  char buf[128];
  CHECK_STR(claim_result(s, "c2", buf, sizeof buf), "{\"status\":\"echo\"}");
  esg_gateway_close(a);
  esg_gateway_close(b);
  esg_store_close(s);
}

static int enrich_key_fn(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  (void)ud;
  (void)e;
  *out = "customer/c-1";
  *len = strlen(*out);
  return ESG_OK;
}

static void test_enrich_collect_and_required(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.collect = 1;
  o.enrich_key = enrich_key_fn;
  o.enrich_into = "customer";
  o.enrich_required = 1;
  esg_gateway *g = open_gw(&o);
  const char *order = "{\"id\":\"o1\",\"type\":\"order\",\"timestamp\":2,\"sku\":\"x\"}";
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, order, strlen(order))); /* nothing cached yet */
  CHECK_STR(k.fault_stage, "enrich");
  CHECK_CONTAINS(k.fault_error, "no value for customer/c-1");
  const char *cust = "{\"id\":\"u1\",\"type\":\"customer\",\"timestamp\":1,\"customer\":{\"id\":\"c-1\",\"name\":\"Ann\"}}";
  CHECK_RC(ESG_OK, esg_gateway_push(g, cust, strlen(cust)));
  const char *order2 = "{\"id\":\"o2\",\"type\":\"order\",\"timestamp\":3,\"sku\":\"y\"}";
  CHECK_RC(ESG_OK, esg_gateway_push(g, order2, strlen(order2)));
  CHECK(k.n == 2);
  CHECK_CONTAINS(k.out[1], "\"customer\":{\"id\":\"c-1\",\"name\":\"Ann\"}");
  CHECK_CONTAINS(k.out[1], "\"sku\":\"y\"");
  esg_gateway_close(g);
  esg_store_close(s);
}

static int count_event(void *ud, const esg_stored_event *ev) {
  (void)ev;
  (*(int *)ud)++;
  return 0;
}

static int failing_write(void *ud, esg_gateway_event *e, const void *out, size_t len) {
  (void)ud, (void)out, (void)len;
  return esg_gateway_event_fail(e, "the receiver is down");
}

static void test_sinks(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  /* a file sink: one line per output, appended */
  const char *path = tu_path("gw-out.jsonl");
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.sink = ESG_GATEWAY_SINK_FILE;
  o.sink_path = path;
  esg_gateway *g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("f1", ""), strlen(EV("f1", ""))));
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("f2", ""), strlen(EV("f2", ""))));
  esg_gateway_close(g);
  FILE *f = fopen(path, "r");
  char text[512] = {0};
  size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
  if (f) fclose(f);
  text[n] = '\0';
  CHECK_STR(text, EV("f1", "") "\n" EV("f2", "") "\n");
  /* the event log sink */
  o = base_opts(s, &k);
  o.sink = ESG_GATEWAY_SINK_EVENTLOG;
  o.eventlog_key = "out";
  g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("l1", ""), strlen(EV("l1", ""))));
  esg_gateway_close(g);
  int logged = 0;
  CHECK_RC(ESG_OK, esg_events_by_key(s, "out", count_event, &logged));
  CHECK(logged == 1);
  /* a failing callback sink: a fault of stage sink */
  o = base_opts(s, &k);
  o.write = failing_write;
  g = open_gw(&o);
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, EV("x1", ""), strlen(EV("x1", ""))));
  CHECK_STR(k.fault_stage, "sink");
  CHECK_CONTAINS(k.fault_error, "the receiver is down");
  esg_gateway_close(g);
  /* bad options name what is wrong */
  esg_gateway *bad = NULL;
  o = base_opts(s, &k);
  o.write = NULL;
  CHECK_RC(ESG_EINVAL, esg_gateway_open(&bad, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "needs write");
  o = base_opts(s, &k);
  o.store = NULL;
  CHECK_RC(ESG_EINVAL, esg_gateway_open(&bad, &o));
  CHECK_CONTAINS(esg_errmsg(NULL), "store is required");
  CHECK(bad == NULL);
  esg_store_close(s);
}

/* -------------------------------------------------------------- HTTP sink -- */

static void test_http_sink(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  httpd *h = httpd_start();
  httpd_rule r422 = {.path = "/bad", .status = 422};
  httpd_rule r503 = {.path = "/flaky", .count = 1, .status = 503, .retry_after = "0"};
  httpd_rule_add(h, &r422);
  httpd_rule_add(h, &r503);
  const char *uri = tu_store("gw-http");
  esg_store *s = tu_open(uri, &now);
  seen k = {0};
  char url[128];
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  eo.backoff_base_ms = 1;
  eo.backoff_cap_ms = 5;
  esg_gateway_opts o = base_opts(s, &k);
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.egress = &eo;
  httpd_url(h, "/ok", url, sizeof url);
  o.http_url = url;
  char hdr[64] = "X-Source: shop";
  const char *hdrs[] = {hdr};
  o.http_headers = hdrs;
  o.http_n_headers = 1;
  esg_gateway *g = open_gw(&o);
  memset(hdr, 'z', sizeof hdr - 1); /* the options' strings are copied at open */
  o.http_headers = NULL;
  o.http_n_headers = 0;
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("h1", ""), strlen(EV("h1", ""))));
  CHECK_RC(ESG_OK, esg_gateway_drain(g));
  esg_gateway_stats st = stats_of(g);
  CHECK(st.delivered == 1 && st.in_flight == 0);
  esg_gateway_close(g);
  /* refused: a fault of stage deliver, the claim completed with it */
  httpd_url(h, "/bad", url, sizeof url);
  o.http_url = url;
  g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("h2", ""), strlen(EV("h2", ""))));
  CHECK_RC(ESG_OK, esg_gateway_drain(g));
  CHECK(stats_of(g).faults == 1);
  CHECK_STR(k.fault_stage, "deliver");
  char buf[128];
  CHECK_CONTAINS(claim_result(s, "h2", buf, sizeof buf), "\"status\":\"fault\"");
  esg_gateway_close(g);
  /* a 503 then 200: delivered after one retry */
  httpd_url(h, "/flaky", url, sizeof url);
  o.http_url = url;
  g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("h3", ""), strlen(EV("h3", ""))));
  CHECK_RC(ESG_OK, esg_gateway_drain(g));
  st = stats_of(g);
  CHECK(st.delivered == 1 && st.retries == 1);
  esg_gateway_close(g);
  CHECK(httpd_count(h) == 4);
  httpd_req q;
  CHECK(httpd_get(h, 0, &q) == 0);
  CHECK_CONTAINS(q.headers, "Idempotency-Key: h1");
  CHECK_CONTAINS(q.headers, "X-Source: shop");
  CHECK(q.body_len == strlen(EV("h1", "")) && memcmp(q.body, EV("h1", ""), q.body_len) == 0);
  esg_store_close(s);
  httpd_stop(h);
}

/* ------------------------------------------------------ a pausing source -- */

typedef struct writer {
  int fd;
  httpd *h;
  int delivered_before_second; /* the first line's delivery came while the pipe was quiet */
} writer;

static void *write_slowly(void *p) {
  writer *w = p;
  const char *a = EV("p1", "") "\n";
  if (write(w->fd, a, strlen(a)) < 0) return NULL;
  w->delivered_before_second = httpd_wait(w->h, 1, 5000) >= 1;
  const char *b = EV("p2", "") "\n";
  if (write(w->fd, b, strlen(b)) < 0) return NULL;
  close(w->fd);
  return NULL;
}

static void test_pausing_source_still_delivers(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  httpd *h = httpd_start();
  esg_store *s = tu_open(tu_store("gw-pipe"), &now);
  seen k = {0};
  char url[128];
  httpd_url(h, "/in", url, sizeof url);
  esg_gateway_opts o = base_opts(s, &k);
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.http_url = url;
  esg_gateway *g = open_gw(&o);
  int p[2];
  CHECK(pipe(p) == 0);
  writer w = {p[1], h, 0};
  pthread_t t;
  pthread_create(&t, NULL, write_slowly, &w);
  esg_gateway_source src;
  CHECK_RC(ESG_OK, esg_gateway_source_fd(&src, p[0]));
  CHECK_RC(ESG_OK, esg_gateway_run(g, &src));
  src.close(src.ud);
  pthread_join(t, NULL);
  close(p[0]);
  CHECK(w.delivered_before_second);
  CHECK(stats_of(g).delivered == 2);
  esg_gateway_close(g);
  esg_store_close(s);
  httpd_stop(h);
}

/* With group commit, the group commits while the source pauses: another handle sees the
   claim completed before the next line comes. */
typedef struct group_writer {
  int fd;
  const char *uri;
  seen *k;            /* the gateway's sink: k->n is 1 once the line went through */
  int seen_committed;
} group_writer;

static void *write_and_look(void *p) {
  group_writer *w = p;
  const char *a = EV("g1", "") "\n";
  if (write(w->fd, a, strlen(a)) < 0) return NULL;
  for (int i = 0; i < 500 && __atomic_load_n(&w->k->n, __ATOMIC_SEQ_CST) == 0; i++) usleep(10000);
  esg_store *look = NULL;
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.busy_timeout_ms = 100;
  so.clock = tu_clock; /* the same clock: the claim's expiry is in its time */
  so.clock_ud = &now;
  if (esg_store_open(&look, w->uri, &so) == ESG_OK) {
    for (int i = 0; i < 100 && !w->seen_committed; i++) {
      esg_claim_info ci;
      int rc = esg_claim(look, "g1", NULL, 0, 1000, 60000, &ci);
      if (rc == ESG_DUPLICATE) w->seen_committed = 1;
      else if (rc == ESG_NEW) esg_release(look, "g1", ci.token); /* not there yet: undo */
      if (!w->seen_committed) {
        __atomic_add_fetch(&now, 20, __ATOMIC_SEQ_CST); /* the store's clock moves on */
        usleep(20000);
      }
    }
    esg_store_close(look);
  }
  close(w->fd);
  return NULL;
}

static void test_group_commits_while_source_pauses(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  const char *uri = tu_store("gw-group");
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.clock = tu_clock;
  so.clock_ud = &now;
  so.group_commit_ms = 50;
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, uri, &so));
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  int p[2];
  CHECK(pipe(p) == 0);
  group_writer w = {p[1], uri, &k, 0};
  pthread_t t;
  pthread_create(&t, NULL, write_and_look, &w);
  esg_gateway_source src;
  CHECK_RC(ESG_OK, esg_gateway_source_fd(&src, p[0]));
  CHECK_RC(ESG_OK, esg_gateway_run(g, &src));
  src.close(src.ud);
  pthread_join(t, NULL);
  close(p[0]);
  CHECK(w.seen_committed);
  esg_gateway_close(g);
  esg_store_close(s);
}

static void test_jsonl_source(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  const char *path = tu_path("gw-in.jsonl");
  FILE *f = fopen(path, "w");
  fputs(EV("j1", "") "\r\n\n" EV("j2", ""), f); /* CRLF, a blank line, no final newline */
  fclose(f);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  esg_gateway_source src;
  CHECK_RC(ESG_OK, esg_gateway_source_jsonl(&src, path));
  CHECK_RC(ESG_OK, esg_gateway_run(g, &src));
  src.close(src.ud);
  CHECK(stats_of(g).received == 2 && k.n == 2);
  CHECK_STR(k.out[0], EV("j1", ""));
  CHECK_STR(k.out[1], EV("j2", ""));
  CHECK_RC(ESG_EIO, esg_gateway_source_jsonl(&src, "/nonexistent/x.jsonl"));
  CHECK_CONTAINS(esg_errmsg(NULL), "/nonexistent/x.jsonl");
  esg_gateway_close(g);
  esg_store_close(s);
}

static int fixed = 0;
static int sometimes_failing(void *ud, esg_gateway_event *e) {
  (void)ud;
  if (!fixed) return esg_gateway_event_fail(e, "not fixed yet");
  return esg_gateway_event_set_output(e, "{\"fixed\":true}", 14);
}

typedef struct fault_ids {
  int n;
  int64_t id[8];
  int attempts[8];
} fault_ids;

static int list_ids(void *ud, const esg_fault *f) {
  fault_ids *k = ud;
  if (k->n < 8) {
    k->id[k->n] = f->id;
    k->attempts[k->n] = f->attempts;
  }
  k->n++;
  return 0;
}

static void test_resubmit(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.transform = sometimes_failing;
  esg_gateway *g = open_gw(&o);
  fixed = 0;
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, EV("r1", ""), strlen(EV("r1", ""))));
  fault_ids f = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &f));
  CHECK(f.n == 1);
  /* still broken: a new fault replaces the old one, attempts + 1 */
  CHECK_RC(ESG_ECALLBACK, esg_gateway_resubmit(g, f.id[0]));
  fault_ids f2 = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &f2));
  CHECK(f2.n == 1 && f2.id[0] != f.id[0] && f2.attempts[0] == 2);
  /* fixed: delivered, the fault gone, and a rerun is a duplicate */
  fixed = 1;
  CHECK_RC(ESG_OK, esg_gateway_resubmit(g, f2.id[0]));
  CHECK(k.n == 1);
  CHECK_STR(k.out[0], "{\"fixed\":true}");
  fault_ids f3 = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &f3));
  CHECK(f3.n == 0);
  CHECK(stats_of(g).resubmitted == 1);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("r1", ""), strlen(EV("r1", ""))));
  CHECK(stats_of(g).duplicates == 1 && k.n == 1);
  CHECK_RC(ESG_NOT_FOUND, esg_gateway_resubmit(g, f2.id[0]));
  esg_gateway_close(g);
  esg_store_close(s);
}

static void test_resubmit_exclusive(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  const char *uri = tu_store("gw-resub");
  esg_store *s = tu_open(uri, &now), *other = tu_open(uri, &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.transform = sometimes_failing;
  esg_gateway *g = open_gw(&o);
  fixed = 0;
  CHECK_RC(ESG_ECALLBACK, esg_gateway_push(g, EV("r2", ""), strlen(EV("r2", ""))));
  fault_ids f = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &f));
  char gkey[64];
  snprintf(gkey, sizeof gkey, "esg.resubmit/%lld", (long long)f.id[0]);
  CHECK_RC(ESG_NEW, esg_claim(other, gkey, NULL, 0, 60000, 600000, NULL));
  fixed = 1;
  CHECK_RC(ESG_BUSY, esg_gateway_resubmit(g, f.id[0]));
  CHECK(k.n == 0);
  esg_gateway_close(g);
  esg_store_close(other);
  esg_store_close(s);
}

static void test_resubmit_http(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  httpd *h = httpd_start();
  httpd_rule r422 = {.path = "/once", .count = 1, .status = 422};
  httpd_rule_add(h, &r422);
  esg_store *s = tu_open(tu_store("gw-resub-http"), &now);
  seen k = {0};
  char url[128];
  httpd_url(h, "/once", url, sizeof url);
  esg_gateway_opts o = base_opts(s, &k);
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.http_url = url;
  esg_gateway *g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("r3", ""), strlen(EV("r3", ""))));
  CHECK_RC(ESG_OK, esg_gateway_drain(g));
  fault_ids f = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &f));
  CHECK(f.n == 1);
  CHECK_RC(ESG_OK, esg_gateway_resubmit(g, f.id[0]));
  fault_ids f2 = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &f2));
  CHECK(f2.n == 0);
  CHECK(httpd_count(h) == 2);
  httpd_req q;
  CHECK(httpd_get(h, 1, &q) == 0);
  CHECK_CONTAINS(q.headers, "Idempotency-Key: r3");
  esg_gateway_close(g);
  esg_store_close(s);
  httpd_stop(h);
}

static void test_resync_sources(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  /* a snapshot listing: its created events go through the pipeline in its batches */
  esg_resync_opts ro = ESG_RESYNC_OPTS_INIT;
  ro.sink = esg_gateway_event_cb;
  ro.sink_ud = g;
  ro.type = "customer";
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "crm", &ro));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "c-1", "{\"name\":\"Ann\"}", 14));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "c-2", "{\"name\":\"Bob\"}", 14));
  esg_resync_stats st;
  CHECK_RC(ESG_OK, esg_snapshot_finish(sn, &st));
  esg_snapshot_close(sn);
  CHECK(st.created == 2 && k.n == 2);
  CHECK_CONTAINS(k.out[0], "\"type\":\"customer-created\"");
  /* a replay of the same events: duplicates by their ids */
  int64_t n = 0;
  CHECK_RC(ESG_OK, esg_replay(s, NULL, esg_gateway_event_cb, g, &n));
  CHECK(n == 2);
  esg_gateway_stats gs = stats_of(g);
  CHECK(gs.received == 4 && gs.delivered == 2 && gs.duplicates == 2);
  esg_gateway_close(g);
  esg_store_close(s);
}

static int user_freed;
static void free_user(void *p) {
  free(p);
  user_freed++;
}
static int set_user(void *ud, esg_gateway_event *e) {
  (void)ud;
  CHECK(esg_gateway_event_user(e) == NULL); /* each event starts empty */
  char *p = strdup(esg_event_id(esg_gateway_event_envelope(e)));
  esg_gateway_event_set_user(e, p, free_user);
  return 1;
}
static int use_user(void *ud, esg_gateway_event *e) {
  (void)ud;
  const char *p = esg_gateway_event_user(e);
  return esg_gateway_event_set_output(e, p, strlen(p));
}

static void test_event_user_slot(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.filter = set_user;
  o.transform = use_user;
  esg_gateway *g = open_gw(&o);
  user_freed = 0;
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("u1", ""), strlen(EV("u1", ""))));
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("u2", ""), strlen(EV("u2", ""))));
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("u2", ""), strlen(EV("u2", "")))); /* a duplicate: freed too */
  CHECK(user_freed == 3);
  CHECK_STR(k.out[0], "u1");
  CHECK_STR(k.out[1], "u2");
  esg_gateway_close(g);
  esg_store_close(s);
}

/* A transform whose output differs at every call: a render can never repeat itself. */
static int renders;
static int counting_transform(void *ud, esg_gateway_event *e) {
  (void)ud;
  char out[64];
  int n = snprintf(out, sizeof out, "{\"render\":%d}", ++renders);
  return esg_gateway_event_set_output(e, out, (size_t)n);
}

static esg_gateway_opts outbox_opts(esg_store *s, seen *k, const char *url) {
  esg_gateway_opts o = base_opts(s, k);
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.http_url = url;
  o.transform = counting_transform;
  return o;
}

/* A delivery cut short (its store closed while the receiver had not answered: the
   claim released) is sent again by the next run with the first run's exact bytes. */
static void test_outbox_same_bytes_after_cancel(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  httpd *h = httpd_start();
  httpd_rule stall = {.path = "/o", .count = 1, .stall_ms = -1};
  httpd_rule_add(h, &stall);
  char url[128];
  httpd_url(h, "/o", url, sizeof url);
  const char *uri = tu_store("gw-outbox");
  esg_store *s = tu_open(uri, &now);
  seen k = {0};
  esg_gateway_opts o = outbox_opts(s, &k, url);
  renders = 0;
  esg_gateway *g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("ob1", ""), strlen(EV("ob1", ""))));
  for (int i = 0; i < 100 && httpd_count(h) < 1; i++) esg_gateway_poll(g, 50); /* the loop sends it */
  CHECK(httpd_count(h) == 1);
  /* the store closed under it: the delivery cancelled, its claim released, its row kept */
  CHECK_RC(ESG_OK, esg_store_close(s));
  CHECK(stats_of(g).cancelled == 1);
  esg_gateway_close(g);
  s = tu_open(uri, &now);
  o.store = s;
  g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("ob1", ""), strlen(EV("ob1", ""))));
  CHECK_RC(ESG_OK, esg_gateway_drain(g));
  CHECK(stats_of(g).delivered == 1);
  CHECK(renders == 1); /* the second run did not render */
  httpd_req a = {0}, b = {0};
  CHECK(httpd_get(h, 0, &a) == 0 && httpd_get(h, 1, &b) == 0);
  CHECK(a.body_len == b.body_len && memcmp(a.body, b.body, a.body_len) == 0);
  CHECK(b.body_len == 12 && memcmp(b.body, "{\"render\":1}", 12) == 0);
  esg_gateway_close(g);
  esg_store_close(s);
  httpd_stop(h);
}

/* A gateway SIGKILLed with its request on the wire: the next one takes the claim over
   after the lease and sends the very bytes the killed one sent, grouped or durable. */
static void outbox_after_kill(int group_ms) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  httpd *h = httpd_start();
  httpd_rule stall = {.path = "/k", .count = 1, .stall_ms = -1};
  httpd_rule_add(h, &stall);
  char url[128];
  httpd_url(h, "/k", url, sizeof url);
  const char *uri = tu_store(group_ms ? "gw-kill-grouped" : "gw-kill");
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.clock = tu_clock;
  so.clock_ud = &now;
  so.group_commit_ms = group_ms;
  pid_t pid = fork();
  if (pid == 0) {
    esg_store *s = NULL;
    if (esg_store_open(&s, uri, &so) != ESG_OK) _exit(2);
    seen k = {0};
    esg_gateway_opts o = outbox_opts(s, &k, url);
    renders = 100; /* the child's render is {"render":101} */
    esg_gateway *g = NULL;
    if (esg_gateway_open(&g, &o) != ESG_OK) _exit(3);
    esg_gateway_push(g, EV("ok1", ""), strlen(EV("ok1", "")));
    for (;;) esg_gateway_poll(g, 100); /* until killed */
  }
  CHECK(httpd_wait(h, 1, 10000) == 1);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  now += 31000; /* past the killed one's lease */
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, uri, &so));
  seen k = {0};
  esg_gateway_opts o = outbox_opts(s, &k, url);
  renders = 0;
  esg_gateway *g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("ok1", ""), strlen(EV("ok1", ""))));
  CHECK_RC(ESG_OK, esg_gateway_drain(g));
  CHECK(stats_of(g).delivered == 1);
  CHECK(renders == 0);
  httpd_req a = {0}, b = {0};
  CHECK(httpd_get(h, 0, &a) == 0 && httpd_get(h, 1, &b) == 0);
  CHECK(b.body_len == 14 && memcmp(b.body, "{\"render\":101}", 14) == 0);
  CHECK(a.body_len == b.body_len && memcmp(a.body, b.body, a.body_len) == 0);
  esg_gateway_close(g);
  esg_store_close(s);
  httpd_stop(h);
}

static void test_outbox_after_kill(void) { outbox_after_kill(0); }
static void test_outbox_after_kill_grouped(void) { outbox_after_kill(1000); }

/* Any line length ends as a stored fault and the run goes on (issue 14, defect 5). */
static void test_long_lines(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  const char *path = tu_path("gw-long.jsonl");
  FILE *f = fopen(path, "w");
  fputs(EV("l1", "") "\n", f);
  size_t big = 40u * 1024 * 1024; /* 40 MiB on one line */
  fputs("{\"id\":\"huge\",\"type\":\"t\",\"timestamp\":1,\"x\":\"", f);
  for (size_t i = 0; i < big / 64; i++) fputs("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", f);
  fputs("\"}\n", f);
  fputs(EV("l2", "") "\n", f);
  fclose(f);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  esg_gateway_source src;
  CHECK_RC(ESG_OK, esg_gateway_source_jsonl(&src, path));
  CHECK_RC(ESG_OK, esg_gateway_run(g, &src));
  src.close(src.ud);
  esg_gateway_stats st = stats_of(g);
  CHECK(st.received == 3 && st.delivered == 2 && st.faults == 1);
  CHECK_STR(k.out[1], EV("l2", "")); /* the one after it went through */
  CHECK_STR(k.fault_stage, "parse");
  CHECK_CONTAINS(k.fault_error, "over the limit");
  CHECK_CONTAINS(k.fault_error, "sha256 ");
  fault_seen fs = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, each_fault, &fs));
  CHECK(fs.n == 1);
  CHECK(strncmp(fs.event, "{\"id\":\"huge\"", 12) == 0); /* the kept beginning */
  CHECK_CONTAINS(fs.error, "at line 2");
  esg_gateway_close(g);
  esg_store_close(s);
  remove(path);
}

/* A lower line limit (esg_gateway_source_lines): a line over it, with its newline in the
   same read or not, is a fault kept as its first max_line bytes; one at the limit is not. */
static void test_line_limit(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  const char *path = tu_path("gw-limit.jsonl");
  char at[200], over[400];
  snprintf(at, sizeof at, "{\"id\":\"at\",\"type\":\"t\",\"timestamp\":1,\"x\":\"%0*d\"}", 100, 0);
  snprintf(over, sizeof over, "{\"id\":\"over\",\"type\":\"t\",\"timestamp\":1,\"x\":\"%0*d\"}", 300, 0);
  FILE *f = fopen(path, "w");
  fprintf(f, "%s\n%s\n%s\n", at, over, EV("l3", ""));
  fclose(f);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  esg_gateway_lines_opts lo = ESG_GATEWAY_LINES_OPTS_INIT;
  lo.max_line = strlen(at);
  esg_gateway_source src;
  CHECK_RC(ESG_OK, esg_gateway_source_lines(&src, path, -1, &lo));
  CHECK_RC(ESG_OK, esg_gateway_run(g, &src));
  src.close(src.ud);
  esg_gateway_stats st = stats_of(g);
  CHECK(st.received == 3 && st.delivered == 2 && st.faults == 1);
  CHECK_STR(k.out[0], at);
  CHECK_STR(k.out[1], EV("l3", ""));
  char want[160];
  snprintf(want, sizeof want, "a line of %zu bytes is over the limit of %zu: kept as its first %zu bytes", strlen(over),
           strlen(at), strlen(at));
  CHECK_CONTAINS(k.fault_error, want);
  fault_seen fs = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, each_fault, &fs));
  CHECK(fs.n == 1 && strncmp(fs.event, over, strlen(at)) == 0 && strlen(fs.event) == strlen(at));
  /* the limit cannot pass an event's, and the options follow the ABI rules */
  lo.max_line = (size_t)ESG_EVENT_MAX_BYTES + 1;
  CHECK_RC(ESG_EINVAL, esg_gateway_source_lines(&src, path, -1, &lo));
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_EVENT_MAX_BYTES");
  lo.size = 0;
  CHECK_RC(ESG_EINVAL, esg_gateway_source_lines(&src, path, -1, &lo));
  CHECK_RC(ESG_EINVAL, esg_gateway_source_lines(&src, NULL, -1, NULL));
  esg_gateway_close(g);
  esg_store_close(s);
  remove(path);
}

/* ------------------------------------------- what the Lua runner needs -- */

static int claim_ok;
static int claim_transform(void *ud, esg_gateway_event *e) {
  (void)ud;
  int64_t token = 0;
  const char *k = esg_gateway_event_claim(e, &token);
  const char *id = esg_event_id(esg_gateway_event_envelope(e));
  if (strcmp(id, "bad") == 0) {
    esg_gateway_event_set_detail(e, "stack traceback:\n\tstep.lua:1", 28);
    return esg_gateway_event_fail(e, "cannot map %s", id);
  }
  claim_ok += k && strcmp(k, id) == 0 && token > 0;
  return esg_gateway_event_set_output(e, id, strlen(id));
}

static int doc_entity(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  (void)ud;
  *key = "thing:1";
  *version = esg_event_timestamp(esg_gateway_event_envelope(e));
  return esg_gateway_event_set_entity_doc(e, "{\"v\":\"own\"}", 11);
}

static int only_u1(void *ud, esg_gateway_event *e) {
  (void)ud;
  return strcmp(esg_event_id(esg_gateway_event_envelope(e)), "u1") == 0;
}

typedef struct one_line {
  const char *line;
  int done;
} one_line;

static int one_next(void *ud, const char **data, size_t *len) {
  one_line *l = ud;
  if (l->done++) return ESG_NOT_FOUND;
  *data = l->line;
  *len = strlen(l->line);
  return ESG_OK;
}

static void test_runner_additions(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  o.transform = claim_transform;
  claim_ok = 0;
  o.entity = doc_entity;
  o.collect = 1;
  o.collect_if = only_u1;
  o.source_name = "in.jsonl";
  o.fault_note = "script s.lua, run r1";
  esg_gateway *g = open_gw(&o);
  /* the claim owned for the event; the entity's own document; collect_if */
  const char *cust = "{\"id\":\"u1\",\"type\":\"customer\",\"timestamp\":1,\"customer\":{\"id\":\"c-1\"}}";
  const char *other = "{\"id\":\"u2\",\"type\":\"customer\",\"timestamp\":2,\"customer\":{\"id\":\"c-2\"}}";
  CHECK_RC(ESG_OK, esg_gateway_push(g, cust, strlen(cust)));
  CHECK_RC(ESG_OK, esg_gateway_push(g, other, strlen(other)));
  CHECK(claim_ok == 2 && k.n == 2);
  esg_entity ent;
  CHECK_RC(ESG_OK, esg_entity_get(s, "thing:1", &ent));
  CHECK(ent.version == 2 && ent.doc_len == 11 && memcmp(ent.doc, "{\"v\":\"own\"}", 11) == 0);
  esg_cache *c = NULL;
  CHECK_RC(ESG_OK, esg_cache_open(&c, s, NULL));
  esg_cache_entry ce;
  CHECK_RC(ESG_OK, esg_cache_get(c, "customer/c-1", &ce));
  CHECK(ce.value != NULL);
  CHECK_RC(ESG_OK, esg_cache_get(c, "customer/c-2", &ce));
  CHECK(ce.value == NULL); /* collect_if said no */
  esg_cache_close(c);
  /* a fault's record: the message, where (line, source, note), then the detail */
  one_line src1 = {"{\"id\":\"bad\",\"type\":\"t\",\"timestamp\":3}", 0};
  esg_gateway_source src = {one_next, NULL, &src1, -1};
  CHECK_RC(ESG_OK, esg_gateway_run(g, &src));
  fault_seen f = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, each_fault, &f));
  CHECK(f.n == 1);
  CHECK_STR(f.error, "cannot map bad\nat line 1 of in.jsonl (script s.lua, run r1)\nstack traceback:\n\tstep.lua:1");
  CHECK_STR(k.fault_error, "cannot map bad"); /* on_fault: the message alone */
  /* a resubmission names the fault it resubmits */
  fault_ids ids = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, list_ids, &ids));
  CHECK_RC(ESG_ECALLBACK, esg_gateway_resubmit(g, ids.id[0]));
  fault_seen f2 = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, each_fault, &f2));
  char want[128];
  snprintf(want, sizeof want, "cannot map bad\nat fault %lld (script s.lua, run r1)\n", (long long)ids.id[0]);
  CHECK(strncmp(f2.error, want, strlen(want)) == 0);
  esg_gateway_close(g);
  esg_store_close(s);
}

static void test_store_closed_first(void) {
  esg_store *s = tu_open(tu_store("gw"), &now);
  seen k = {0};
  esg_gateway_opts o = base_opts(s, &k);
  esg_gateway *g = open_gw(&o);
  CHECK_RC(ESG_OK, esg_gateway_push(g, EV("z1", ""), strlen(EV("z1", ""))));
  CHECK_RC(ESG_OK, esg_store_close(s));
  CHECK_RC(ESG_ESTATE, esg_gateway_push(g, EV("z2", ""), strlen(EV("z2", ""))));
  CHECK_CONTAINS(esg_errmsg(g), "store was closed");
  CHECK_RC(ESG_ESTATE, esg_gateway_poll(g, 0));
  CHECK(stats_of(g).delivered == 1); /* the counters stay readable */
  CHECK_RC(ESG_OK, esg_gateway_close(g));
}

int main(void) {
  TU_SUITE {
    RUN(test_delivered_then_duplicates);
    RUN(test_filter_transform_drop_fault);
    RUN(test_parse_and_mismatch_faults);
    RUN(test_busy);
    RUN(test_stale_entity);
    RUN(test_entity_doc_after_enrich);
    RUN(test_set_json_trailing_text);
    RUN(test_echo_suppressed);
    RUN(test_enrich_collect_and_required);
    RUN(test_sinks);
    RUN(test_http_sink);
    RUN(test_pausing_source_still_delivers);
    RUN(test_group_commits_while_source_pauses);
    RUN(test_jsonl_source);
    RUN(test_store_closed_first);
    RUN(test_resync_sources);
    RUN(test_long_lines);
    RUN(test_line_limit);
    RUN(test_event_user_slot);
    RUN(test_outbox_same_bytes_after_cancel);
    RUN(test_outbox_after_kill);
    RUN(test_outbox_after_kill_grouped);
    RUN(test_resubmit);
    RUN(test_resubmit_exclusive);
    RUN(test_resubmit_http);
    RUN(test_runner_additions);
  }
  return tu_done();
}
