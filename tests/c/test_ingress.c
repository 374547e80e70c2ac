/*
 * The HTTP ingress (esg/ingress.h, docs/serve.md): a gateway runs the ingress's source
 * on a thread, real clients (libcurl, and raw sockets where libcurl would be polite)
 * talk to it over 127.0.0.1. Each answer of the acknowledgement rule; the envelope;
 * limits; a slow client cut without holding the others; a full queue; a 2xx only once
 * its event is visible to another handle (committed); graceful stop; and a SIGKILL of
 * a serving process after which every acknowledged webhook is in the store once.
 *
 * The contract tests run per store entry (label conformance); the ones that need a
 * second handle or a reopen skip on :memory:. Webhook timestamps come from a fixed
 * clock given to the ingress (tolerance without sleeping).
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "testutil.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET_OLD "whsec_dGhlIG9sZCBzZWNyZXQgb2YgdGhlIHJvdGF0aW9u"
#define ROUTE "/hooks/acme"

/* The ingress's clock: webhook timestamps are judged against it (never moved while serving). */
static int64_t wnow = 1614265330000;
#define TS (wnow / 1000)

/* ------------------------------------------------------------ the server -- */

typedef struct ctl {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int transforms;
  int blocked;
  bool release;
} ctl;

static ctl C = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, false};

/* Counts its calls; type "fail" fails, type "block" waits until released. */
static int transform(void *ud, esg_gateway_event *e) {
  ctl *c = ud;
  const char *type = esg_event_type(esg_gateway_event_envelope(e));
  pthread_mutex_lock(&c->mu);
  c->transforms++;
  if (strcmp(type, "block") == 0) {
    c->blocked++;
    pthread_cond_broadcast(&c->cv);
    while (!c->release) pthread_cond_wait(&c->cv, &c->mu);
  }
  pthread_mutex_unlock(&c->mu);
  if (strcmp(type, "fail") == 0) return esg_gateway_event_fail(e, "failing on purpose");
  size_t n;
  const char *j = esg_gateway_event_json(e, &n);
  return esg_gateway_event_set_output(e, j, n);
}

static int transforms(void) {
  pthread_mutex_lock(&C.mu);
  int n = C.transforms;
  pthread_mutex_unlock(&C.mu);
  return n;
}

typedef struct server {
  esg_store *s;
  esg_gateway *g;
  esg_ingress *ing;
  pthread_t th;
  int run_rc;
  int port;
} server;

/* The busy timeout of the stores serve() opens (0: the default). */
static int busy_ms;

static void *run_thread(void *p) {
  server *sv = p;
  esg_gateway_source src;
  esg_ingress_source(sv->ing, &src);
  sv->run_rc = esg_gateway_run(sv->g, &src);
  return NULL;
}

/* Opens the store at uri (group commit if group_ms), a gateway with the event log sink,
   an ingress with one route (ROUTE, SECRET and SECRET_OLD) and io's options, and runs
   it on a thread. */
static int serve(server *sv, const char *uri, int group_ms, const esg_ingress_opts *io) {
  memset(sv, 0, sizeof *sv);
  pthread_mutex_lock(&C.mu);
  C.transforms = C.blocked = 0;
  C.release = false;
  pthread_mutex_unlock(&C.mu);
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.group_commit_ms = group_ms;
  so.group_commit_max = group_ms ? 100000 : 0; /* commits come from the ingress, or the delay */
  so.busy_timeout_ms = busy_ms;
  int rc = esg_store_open(&sv->s, uri, &so);
  if (rc != ESG_OK) {
    fprintf(stderr, "store %s: %s\n", uri, esg_errmsg(NULL));
    return rc;
  }
  esg_gateway_opts go = ESG_GATEWAY_OPTS_INIT;
  go.store = sv->s;
  go.name = "ingress-test";
  go.ud = &C;
  go.transform = transform;
  go.sink = ESG_GATEWAY_SINK_EVENTLOG;
  if ((rc = esg_gateway_open(&sv->g, &go)) != ESG_OK) return rc;
  esg_ingress_opts o = ESG_INGRESS_OPTS_INIT;
  if (io) o = *io;
  o.listen = "127.0.0.1:0";
  o.clock = tu_clock;
  o.clock_ud = &wnow;
  if ((rc = esg_ingress_open(&sv->ing, sv->g, &o)) != ESG_OK) {
    fprintf(stderr, "esg_ingress_open: %s\n", esg_errmsg(NULL));
    return rc;
  }
  const char *secrets[] = {SECRET_OLD, SECRET};
  esg_ingress_route r = ESG_INGRESS_ROUTE_INIT;
  r.path = ROUTE;
  r.source = "acme";
  r.secrets = secrets;
  r.n_secrets = 2;
  if ((rc = esg_ingress_route_add(sv->ing, &r)) != ESG_OK) return rc;
  if ((rc = esg_ingress_start(sv->ing)) != ESG_OK) {
    fprintf(stderr, "esg_ingress_start: %s\n", esg_errmsg(sv->ing));
    return rc;
  }
  sv->port = esg_ingress_port(sv->ing);
  pthread_create(&sv->th, NULL, run_thread, sv);
  return ESG_OK;
}

/* Graceful stop: the run must end by itself, with ESG_OK. The store stays open. */
static void stop(server *sv) {
  esg_ingress_stop(sv->ing);
  pthread_join(sv->th, NULL);
  CHECK_RC(ESG_OK, sv->run_rc);
  esg_ingress_close(sv->ing);
  sv->ing = NULL;
}

static void shut(server *sv) {
  if (sv->ing) stop(sv);
  esg_gateway_close(sv->g);
  esg_store_close(sv->s);
  memset(sv, 0, sizeof *sv);
}

/* ------------------------------------------------------------ the client -- */

typedef struct resp {
  long status;
  char body[8192];
  size_t len;
  char retry_after[32];
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  resp *r = ud;
  size_t k = sz * n, room = sizeof r->body - 1 - r->len;
  memcpy(r->body + r->len, p, k < room ? k : room);
  r->len += k < room ? k : room;
  r->body[r->len] = '\0';
  return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  resp *r = ud;
  size_t k = sz * n;
  if (k > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
    size_t i = 12;
    while (i < k && p[i] == ' ') i++;
    size_t j = i;
    while (j < k && p[j] != '\r' && p[j] != '\n' && j - i < sizeof r->retry_after - 1) j++;
    memcpy(r->retry_after, p + i, j - i);
    r->retry_after[j - i] = '\0';
  }
  return k;
}

/* One request on h (kept for keep-alive); status 0 when the connection failed. */
static resp request(CURL *h, const char *method, int port, const char *path, struct curl_slist *hdrs, const char *body,
                    size_t blen) {
  resp r;
  memset(&r, 0, sizeof r);
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  curl_easy_reset(h);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)blen);
  } else if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 20000L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  return r;
}

/* A Standard Webhooks POST of body, signed with secret at ts; sig (if not NULL) replaces the signature header. */
static resp post_as(CURL *h, int port, const char *path, const char *secret, const char *id, int64_t ts,
                    const char *body, size_t blen, const char *sig) {
  char signature[ESG_WEBHOOK_SIGNATURE_SIZE] = "";
  if (secret) esg_webhook_sign(secret, id, ts, body, blen, signature, sizeof signature);
  char line[600];
  struct curl_slist *hl = NULL;
  hl = curl_slist_append(hl, "Content-Type: application/json");
  hl = curl_slist_append(hl, "Expect:");
  if (id) {
    snprintf(line, sizeof line, "webhook-id: %s", id);
    hl = curl_slist_append(hl, line);
  }
  snprintf(line, sizeof line, "webhook-timestamp: %lld", (long long)ts);
  hl = curl_slist_append(hl, line);
  snprintf(line, sizeof line, "webhook-signature: %s", sig ? sig : signature);
  hl = curl_slist_append(hl, line);
  resp r = request(h, "POST", port, path, hl, body, blen);
  curl_slist_free_all(hl);
  return r;
}

static resp post(CURL *h, int port, const char *id, const char *body) {
  return post_as(h, port, ROUTE, SECRET, id, TS, body, strlen(body), NULL);
}

static resp get(CURL *h, int port, const char *path) { return request(h, "GET", port, path, NULL, NULL, 0); }

/* The event id of webhook id (as the route "acme" makes it). */
static const char *event_id(const char *wid, char out[300]) {
  snprintf(out, 300, "acme:%s", wid);
  return out;
}

typedef struct found {
  int n;
  char json[4096];
} found;

static int found_cb(void *ud, const esg_stored_event *ev) {
  found *f = ud;
  f->n++;
  snprintf(f->json, sizeof f->json, "%.*s", (int)ev->json_len, ev->json);
  return 0;
}

/* The stored envelope of webhook wid in s ("" when absent). */
static found stored(esg_store *s, const char *wid) {
  found f = {0, ""};
  char id[300];
  esg_event_get(s, event_id(wid, id), found_cb, &f);
  return f;
}

/* ----------------------------------------------------------- raw sockets -- */

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reads what comes within timeout_ms into buf; returns bytes read, and *closed when the
   server closed or reset the connection. */
static size_t raw_read(int fd, char *buf, size_t cap, int timeout_ms, bool *closed) {
  size_t len = 0;
  *closed = false;
  int64_t end = (int64_t)time(NULL) * 1000 + timeout_ms;
  while (len + 1 < cap) {
    struct pollfd p = {fd, POLLIN, 0};
    int left = (int)(end - (int64_t)time(NULL) * 1000);
    if (left <= 0 || poll(&p, 1, left < 100 ? left : 100) < 0) break;
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) {
      if ((int64_t)time(NULL) * 1000 >= end) break;
      continue;
    }
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n <= 0) {
      *closed = true;
      break;
    }
    len += (size_t)n;
    buf[len] = '\0';
    if (strstr(buf, "\r\n\r\n")) break;
  }
  buf[len] = '\0';
  return len;
}

/* ------------------------------------------------------------------ tests -- */

static CURL *H; /* the main thread's client */


/* A signed webhook is stored as an envelope: deterministic id, raw body byte for byte. */
static void test_signed(void) {
  server sv;
  TU_REQUIRE(serve(&sv, tu_store("signed"), 0, NULL) == ESG_OK, "cannot serve");
  const char *body = "{\n  \"type\": \"invoice.paid\",\n  \"data\": {\"note\": \"caf\xc3\xa9 \\\"q\\\" \\\\ \\u0001\", "
                     "\"n\": 1}\n}\n";
  resp r = post(H, sv.port, "msg_1", body);
  CHECK(r.status == 200);
  char id[300];
  event_id("msg_1", id);
  CHECK_CONTAINS(r.body, "\"accepted\"");
  CHECK_CONTAINS(r.body, id);
  /* signed with the old secret of a rotation, and a header with two signatures */
  CHECK(post_as(H, sv.port, ROUTE, SECRET_OLD, "msg_2", TS, "{}", 2, NULL).status == 200);
  char good[ESG_WEBHOOK_SIGNATURE_SIZE], two[200];
  esg_webhook_sign(SECRET, "msg_3", TS, "[1]", 3, good, sizeof good);
  snprintf(two, sizeof two, "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= %s", good);
  CHECK(post_as(H, sv.port, ROUTE, NULL, "msg_3", TS, "[1]", 3, two).status == 200);
  /* a webhook id that JSON must escape: the event id keeps it as sent */
  r = post(H, sv.port, "m\"q\\", "{}");
  CHECK(r.status == 200);
  CHECK_CONTAINS(r.body, "\"id\":\"acme:m\\\"q\\\\\"");
  /* within the tolerance either way */
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "msg_4", TS - 300, "{}", 2, NULL).status == 200);
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "msg_5", TS + 300, "{}", 2, NULL).status == 200);
  CHECK(transforms() == 6);
  stop(&sv);
  CHECK(stored(sv.s, "m\"q\\").n == 1);
  found f = stored(sv.s, "msg_1");
  CHECK(f.n == 1);
  char head[400];
  snprintf(head, sizeof head, "{\"id\":\"%s\",\"type\":\"invoice.paid\",\"timestamp\":%lld000,", id, (long long)TS);
  CHECK(strncmp(f.json, head, strlen(head)) == 0);
  CHECK_CONTAINS(f.json, "\"tags\":{\"source\":\"acme\"}");
  CHECK_CONTAINS(f.json, "\"webhook-id\":\"msg_1\"");
  CHECK_CONTAINS(f.json, "\"content-type\":\"application/json\"");
  /* raw.body decodes to the bytes received */
  cJSON *j = cJSON_Parse(f.json);
  const cJSON *raw = cJSON_GetObjectItemCaseSensitive(j, "raw");
  const cJSON *rb = cJSON_GetObjectItemCaseSensitive(raw, "body");
  CHECK(cJSON_IsString(rb) && strcmp(rb->valuestring, body) == 0);
  CHECK(strchr(f.json, '\n') == NULL); /* one line */
  cJSON_Delete(j);
  /* a body without "type": the route's default */
  CHECK_CONTAINS(stored(sv.s, "msg_2").json, "\"type\":\"webhook-received\"");
  if (strstr(f.json, "\"body\":") == NULL) fprintf(stderr, "stored: %s\n", f.json);
  shut(&sv);
}

/* A redelivery (same id and body, new timestamp and signature) is a duplicate: 200 at
   once, the steps not run again; the same id with another body is 409. */
static void test_duplicate_and_reuse(void) {
  server sv;
  TU_REQUIRE(serve(&sv, tu_store("dup"), 0, NULL) == ESG_OK, "cannot serve");
  CHECK(post(H, sv.port, "msg_d", "{\"a\":1}").status == 200);
  resp r = post_as(H, sv.port, ROUTE, SECRET, "msg_d", TS - 10, "{\"a\":1}", 7, NULL);
  CHECK(r.status == 200);
  CHECK_CONTAINS(r.body, "\"duplicate\"");
  CHECK(transforms() == 1);
  r = post(H, sv.port, "msg_d", "{\"a\":2}");
  CHECK(r.status == 409);
  CHECK(transforms() == 1);
  /* a step that fails: stored as a fault record, 202 */
  r = post(H, sv.port, "msg_f", "{\"type\":\"fail\"}");
  CHECK(r.status == 202);
  CHECK_CONTAINS(r.body, "\"fault\"");
  CHECK(post(H, sv.port, "msg_f", "{\"type\":\"fail\"}").status == 200); /* a duplicate of the fault's claim */
  stop(&sv);
  CHECK(stored(sv.s, "msg_d").n == 1);
  CHECK_CONTAINS(stored(sv.s, "msg_d").json, "\"body\":\"{\\\"a\\\":1}\"");
  shut(&sv);
}

/* Forged, tampered, stale: 401; malformed: 400; wrong path 404, method 405; nothing stored. */
static void test_refused(void) {
  server sv;
  TU_REQUIRE(serve(&sv, tu_store("refused"), 0, NULL) == ESG_OK, "cannot serve");
  const char *b = "{\"x\":1}";
  size_t n = strlen(b);
  resp r = post_as(H, sv.port, ROUTE, "whsec_c29tZW9uZSBlbHNlJ3Mgc2VjcmV0", "f1", TS, b, n, NULL);
  CHECK(r.status == 401);
  CHECK_CONTAINS(r.body, "signature");
  char sig[ESG_WEBHOOK_SIGNATURE_SIZE];
  esg_webhook_sign(SECRET, "f2", TS, "{\"x\":2}", 7, sig, sizeof sig); /* signed for another body */
  CHECK(post_as(H, sv.port, ROUTE, NULL, "f2", TS, b, n, sig).status == 401);
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "f3", TS - 301, b, n, NULL).status == 401); /* stale */
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "f4", TS + 301, b, n, NULL).status == 401); /* from the future */
  CHECK(post_as(H, sv.port, ROUTE, SECRET, NULL, TS, b, n, NULL).status == 400);       /* no webhook-id */
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "f5", TS, "not json", 8, NULL).status == 400);
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "f6", TS, "\"\xff\"", 3, NULL).status == 400); /* not UTF-8 */
  struct curl_slist *hl = curl_slist_append(NULL, "webhook-id: f7");
  hl = curl_slist_append(hl, "webhook-timestamp: soon");
  hl = curl_slist_append(hl, "webhook-signature: v1,abc");
  CHECK(request(H, "POST", sv.port, ROUTE, hl, b, n).status == 400);
  curl_slist_free_all(hl);
  CHECK(post_as(H, sv.port, "/hooks/other", SECRET, "f8", TS, b, n, NULL).status == 404);
  CHECK(get(H, sv.port, ROUTE).status == 405);
  CHECK(transforms() == 0);
  stop(&sv);
  CHECK(stored(sv.s, "f1").n == 0 && stored(sv.s, "f2").n == 0 && stored(sv.s, "f3").n == 0);
  shut(&sv);
}

/* Over body_max: 413, by Content-Length and by a chunked body; the server goes on. */
static void test_too_large(void) {
  server sv;
  esg_ingress_opts o = ESG_INGRESS_OPTS_INIT;
  o.body_max = 1024;
  TU_REQUIRE(serve(&sv, tu_store("large"), 0, &o) == ESG_OK, "cannot serve");
  char big[2001];
  memset(big, ' ', 2000);
  big[0] = '[';
  big[1999] = ']';
  big[2000] = '\0';
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "big", TS, big, 2000, NULL).status == 413);
  int fd = raw_connect(sv.port);
  CHECK(fd >= 0);
  char req[4096];
  int k = snprintf(req, sizeof req,
                   "POST " ROUTE " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nwebhook-id: big2\r\n\r\n"
                   "7d0\r\n%s\r\n0\r\n\r\n",
                   big);
  CHECK(send(fd, req, (size_t)k, MSG_NOSIGNAL) == k);
  char buf[2048];
  bool closed;
  raw_read(fd, buf, sizeof buf, 5000, &closed);
  CHECK(strncmp(buf, "HTTP/1.1 413", 12) == 0);
  close(fd);
  /* headers past header_max: refused by the server (431), which goes on */
  fd = raw_connect(sv.port);
  static char hreq[40000];
  k = snprintf(hreq, sizeof hreq, "POST " ROUTE " HTTP/1.1\r\nHost: x\r\nX-Big: %0*d\r\n\r\n", 30000, 7);
  send(fd, hreq, (size_t)k, MSG_NOSIGNAL);
  raw_read(fd, buf, sizeof buf, 5000, &closed);
  CHECK(strncmp(buf, "HTTP/1.1 431", 12) == 0 || strncmp(buf, "HTTP/1.1 413", 12) == 0);
  if (strncmp(buf, "HTTP/1.1 4", 10) != 0) fprintf(stderr, "headers too large: got \"%.40s\"\n", buf);
  close(fd);
  /* exactly at the limit is fine */
  big[1023] = ']';
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "max", TS, big, 1024, NULL).status == 200);
  shut(&sv);
}

/* /healthz and /metrics (Prometheus text: answers by status, the latency histogram, the
   gateway's counters). */
static void test_endpoints(void) {
  server sv;
  TU_REQUIRE(serve(&sv, tu_store("metrics"), 0, NULL) == ESG_OK, "cannot serve");
  resp r = get(H, sv.port, "/healthz");
  CHECK(r.status == 200);
  CHECK_CONTAINS(r.body, "ok");
  CHECK(post(H, sv.port, "m1", "{}").status == 200);
  CHECK(post(H, sv.port, "m1", "{}").status == 200);
  CHECK(post_as(H, sv.port, ROUTE, SECRET, "m2", TS - 1000, "{}", 2, NULL).status == 401);
  r = get(H, sv.port, "/metrics");
  CHECK(r.status == 200);
  CHECK_CONTAINS(r.body, "esg_ingress_requests_total{code=\"200\"} 3\n"); /* with the healthz */
  if (!strstr(r.body, "outcome=\"received\"} 2\n")) fprintf(stderr, "%s\n", r.body);
  CHECK_CONTAINS(r.body, "esg_ingress_requests_total{code=\"401\"} 1\n");
  CHECK_CONTAINS(r.body, "# TYPE esg_ingress_request_duration_seconds histogram\n");
  CHECK_CONTAINS(r.body, "esg_ingress_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"); /* with the healthz */
  CHECK_CONTAINS(r.body, "esg_gateway_events_total{outcome=\"received\"} 2\n");
  CHECK_CONTAINS(r.body, "esg_gateway_events_total{outcome=\"duplicate\"} 1\n");
  CHECK_CONTAINS(r.body, "esg_ingress_queue_depth 0\n");
  CHECK(get(H, sv.port, "/metrics").status == 200);
  CHECK(request(H, "POST", sv.port, "/healthz", NULL, "x", 1).status == 405);
  /* keep-alive: two requests on one connection, both answered, the connection kept */
  int fd = raw_connect(sv.port);
  const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < 2; i++) {
    char buf[1024];
    bool closed;
    CHECK(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req));
    raw_read(fd, buf, sizeof buf, 5000, &closed);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    CHECK(strstr(buf, "Connection: close") == NULL);
  }
  close(fd);
  shut(&sv);
}

/* ------------------------------------------------------------ concurrency -- */

typedef struct client {
  int port, first, n, ok;
  int *acked;      /* per webhook: 1 once a 2xx came */
  int stop_after;  /* for the kill: stop once the shared count passes this (0: never) */
  int *shared;
} client;

/* Webhook i of the load: its id and body. */
static void webhook(int i, char id[32], char body[160]) {
  snprintf(id, 32, "w-%d", i);
  snprintf(body, 160, "{\"type\":\"thing-updated\",\"thing\":{\"id\":%d,\"pad\":\"%060d\"}}", i, i);
}

static void *client_run(void *p) {
  client *c = p;
  CURL *h = curl_easy_init();
  for (int i = c->first; i < c->first + c->n; i++) {
    char id[32], body[160];
    webhook(i, id, body);
    resp r = post(h, c->port, id, body);
    if (r.status == 200) {
      c->ok++;
      if (c->acked) c->acked[i] = 1;
      if (c->shared) __atomic_add_fetch(c->shared, 1, __ATOMIC_SEQ_CST);
    } else if (r.status == 0 && c->stop_after) {
      break; /* the server is gone */
    }
  }
  curl_easy_cleanup(h);
  return NULL;
}

/* Many clients at once, each on its keep-alive connection: all stored, once each. */
static void test_concurrent(void) {
  server sv;
  TU_REQUIRE(serve(&sv, tu_store("concurrent"), 5, NULL) == ESG_OK, "cannot serve");
  enum { T = 8, N = 40 };
  client c[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    c[t] = (client){sv.port, t * N, N, 0, NULL, 0, NULL};
    pthread_create(&th[t], NULL, client_run, &c[t]);
  }
  int ok = 0;
  for (int t = 0; t < T; t++) {
    pthread_join(th[t], NULL);
    ok += c[t].ok;
  }
  CHECK(ok == T * N);
  stop(&sv);
  esg_gateway_stats st;
  esg_gateway_get_stats(sv.g, &st);
  CHECK(st.received == T * N && st.delivered == T * N && st.faults == 0);
  int missing = 0;
  for (int i = 0; i < T * N; i++) {
    char id[32];
    snprintf(id, sizeof id, "w-%d", i);
    missing += stored(sv.s, id).n != 1;
  }
  CHECK(missing == 0);
  shut(&sv);
}

/* The 2xx waits for the commit: under group commit (a delay the store would not reach
   by itself), each acknowledged webhook is already visible to another handle. */
static void test_ack_after_commit(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  const char *uri = tu_store("ack");
  server sv;
  TU_REQUIRE(serve(&sv, uri, 600000, NULL) == ESG_OK, "cannot serve");
  esg_store *other = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&other, uri, NULL));
  int visible = 0;
  for (int i = 0; i < 20; i++) {
    char id[32];
    snprintf(id, sizeof id, "c-%d", i);
    if (post(H, sv.port, id, "{\"type\":\"t\"}").status == 200) visible += stored(other, id).n == 1;
  }
  CHECK(visible == 20);
  /* and a duplicate of an event waiting for its group is not acknowledged before it */
  enum { T = 4, N = 25 };
  client c[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    c[t] = (client){sv.port, 1000, N, 0, NULL, 0, NULL}; /* the same webhooks from every client */
    pthread_create(&th[t], NULL, client_run, &c[t]);
  }
  for (int t = 0; t < T; t++) {
    pthread_join(th[t], NULL);
    CHECK(c[t].ok == N);
  }
  int missing = 0;
  for (int i = 1000; i < 1000 + N; i++) {
    char id[32];
    snprintf(id, sizeof id, "w-%d", i);
    missing += stored(other, id).n != 1;
  }
  CHECK(missing == 0);
  esg_store_close(other);
  shut(&sv);
}

typedef struct bg {
  pthread_t th;
  int port;
  char id[32];
  char body[64];
  resp r;
  bool done;
} bg;

static void *bg_run(void *p) {
  bg *b = p;
  CURL *h = curl_easy_init();
  b->r = post(h, b->port, b->id, b->body);
  curl_easy_cleanup(h);
  __atomic_store_n(&b->done, true, __ATOMIC_SEQ_CST);
  return NULL;
}

static void bg_post(bg *b, int port, const char *id, const char *body) {
  memset(b, 0, sizeof *b);
  b->port = port;
  snprintf(b->id, sizeof b->id, "%s", id);
  snprintf(b->body, sizeof b->body, "%s", body);
  pthread_create(&b->th, NULL, bg_run, b);
}

/* Waits until /metrics shows text (up to 5 s). */
static bool metrics_show(int port, const char *text) {
  for (int i = 0; i < 500; i++) {
    resp r = get(H, port, "/metrics");
    if (strstr(r.body, text)) return true;
    if (i == 499) fprintf(stderr, "metrics: status %ld\n%.300s\n", r.status, r.body);
    usleep(10000);
  }
  return false;
}

/* A full queue (by count or by bytes): 503 with Retry-After at once, while the gateway
   is busy; the queued ones are answered once it goes on; then a graceful stop. */
static void test_backpressure_and_stop(void) {
  server sv;
  esg_ingress_opts o = ESG_INGRESS_OPTS_INIT;
  o.queue_max = 2;
  o.queue_bytes_max = 16 * 1024;
  o.retry_after_s = 7;
  TU_REQUIRE(serve(&sv, tu_store("backpressure"), 0, &o) == ESG_OK, "cannot serve");
  bg a, b, c;
  bg_post(&a, sv.port, "b-a", "{\"type\":\"block\"}");
  pthread_mutex_lock(&C.mu);
  while (!C.blocked) pthread_cond_wait(&C.cv, &C.mu); /* the gateway is inside a's transform */
  pthread_mutex_unlock(&C.mu);
  bg_post(&b, sv.port, "b-b", "{}");
  CHECK(metrics_show(sv.port, "esg_ingress_queue_depth 1\n"));
  /* past queue_bytes_max: 503 though the count has room */
  static char big[20001];
  memset(big, ' ', 20000);
  big[0] = '[';
  big[19999] = ']';
  resp r = post_as(H, sv.port, ROUTE, SECRET, "b-big", TS, big, 20000, NULL);
  CHECK(r.status == 503);
  CHECK_STR(r.retry_after, "7");
  bg_post(&c, sv.port, "b-c", "{}");
  CHECK(metrics_show(sv.port, "esg_ingress_queue_depth 2\n"));
  r = post(H, sv.port, "b-d", "{}"); /* past queue_max */
  CHECK(r.status == 503);
  CHECK_STR(r.retry_after, "7");
  CHECK(get(H, sv.port, "/healthz").status == 200); /* the server answers while the gateway is busy */
  CHECK(!__atomic_load_n(&a.done, __ATOMIC_SEQ_CST));
  /* stop while a is running and b, c are queued: they are finished, new ones refused */
  esg_ingress_stop(sv.ing);
  r = post(H, sv.port, "b-e", "{}");
  CHECK(r.status == 503 || r.status == 0); /* refused, or no longer accepted */
  pthread_mutex_lock(&C.mu);
  C.release = true;
  pthread_cond_broadcast(&C.cv);
  pthread_mutex_unlock(&C.mu);
  pthread_join(a.th, NULL);
  pthread_join(b.th, NULL);
  pthread_join(c.th, NULL);
  CHECK(a.r.status == 200 && b.r.status == 200 && c.r.status == 200);
  pthread_join(sv.th, NULL); /* the run ends by itself */
  CHECK_RC(ESG_OK, sv.run_rc);
  esg_ingress_close(sv.ing);
  sv.ing = NULL;
  CHECK(stored(sv.s, "b-a").n == 1 && stored(sv.s, "b-c").n == 1 && stored(sv.s, "b-d").n == 0);
  CHECK(stored(sv.s, "b-big").n == 0);
  shut(&sv);
}

/* A store that cannot take the event (another handle holds its write lock past the
   busy timeout): 503 with Retry-After, nothing acknowledged, and the same webhook is
   taken once the store is free again. */
static void test_store_locked(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_SHARED);
  const char *uri = tu_store("locked");
  server sv;
  busy_ms = 100;
  int rc = serve(&sv, uri, 0, NULL);
  busy_ms = 0;
  TU_REQUIRE(rc == ESG_OK, "cannot serve");
  esg_store *other = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&other, uri, NULL));
  CHECK_RC(ESG_OK, esg_store_begin(other)); /* holds the write lock */
  CHECK_RC(ESG_OK, esg_fault_record(other, &(esg_fault){.event_id = "x", .stage = "t", .error = "e"}, NULL));
  resp r = post(H, sv.port, "k-1", "{}");
  CHECK(r.status == 503);
  CHECK_STR(r.retry_after, "1");
  CHECK(transforms() == 0);
  CHECK_RC(ESG_OK, esg_store_rollback(other));
  r = post(H, sv.port, "k-1", "{}");
  CHECK(r.status == 200);
  CHECK_CONTAINS(r.body, "\"accepted\"");
  CHECK(stored(other, "k-1").n == 1);
  esg_store_close(other);
  shut(&sv);
}

/* A client sending one byte a second is cut at the request timeout, and holds no one
   else up meanwhile. */
static void test_slow_client(void) {
  server sv;
  esg_ingress_opts o = ESG_INGRESS_OPTS_INIT;
  o.request_timeout_ms = 1500;
  TU_REQUIRE(serve(&sv, tu_store("slow"), 0, &o) == ESG_OK, "cannot serve");
  int fd = raw_connect(sv.port);
  CHECK(fd >= 0);
  const char *head = "POST " ROUTE " HTTP/1.1\r\nHost: x\r\n";
  int64_t t0 = (int64_t)time(NULL);
  bool closed = false;
  int served = 0;
  for (size_t i = 0; head[i] && !closed; i++) {
    if (send(fd, head + i, 1, MSG_NOSIGNAL) != 1) {
      closed = true;
      break;
    }
    char id[32];
    snprintf(id, sizeof id, "s-%zu", i);
    served += post(H, sv.port, id, "{}").status == 200; /* others go on meanwhile */
    char buf[512];
    raw_read(fd, buf, sizeof buf, 1000, &closed); /* one byte a second */
  }
  int64_t took = (int64_t)time(NULL) - t0;
  CHECK(closed);
  CHECK(took <= 4);
  CHECK(served >= 1);
  close(fd);
  CHECK(metrics_show(sv.port, "esg_ingress_connections_cut_total 1\n"));
  /* an idle keep-alive connection is cut the same way */
  fd = raw_connect(sv.port);
  char buf[512];
  raw_read(fd, buf, sizeof buf, 4000, &closed);
  CHECK(closed);
  close(fd);
  shut(&sv);
}

/* connections_max: never more connections open at once (libmicrohttpd leaves the rest
   in the backlog); as they go (here: cut, idle), the waiting ones are served. */
static void test_connection_limit(void) {
  server sv;
  esg_ingress_opts o = ESG_INGRESS_OPTS_INIT;
  o.connections_max = 3;
  o.request_timeout_ms = 1000; /* the idle ones are cut soon, and the waiting ones get in */
  TU_REQUIRE(serve(&sv, tu_store("conns"), 0, &o) == ESG_OK, "cannot serve");
  int fds[6];
  for (int i = 0; i < 6; i++) fds[i] = raw_connect(sv.port);
  usleep(200000);
  resp r = get(H, sv.port, "/metrics"); /* on a seventh */
  const char *at = strstr(r.body, "\nesg_ingress_connections ");
  int n = at ? atoi(at + 25) : -1;
  if (n < 1 || n > 3) fprintf(stderr, "connections: %d\n", n);
  CHECK(n >= 1 && n <= 3); /* the others wait in the backlog, or were let go */
  for (int i = 0; i < 6; i++) close(fds[i]);
  usleep(100000);
  CHECK(post(H, sv.port, "l-1", "{}").status == 200);
  shut(&sv);
}

/* SIGTERM to a serving process whose handler calls esg_ingress_stop (async-signal-
   safe): the run ends by itself. */
static esg_ingress *term_ing;
static void on_term(int sig) {
  (void)sig;
  esg_ingress_stop(term_ing);
}

/* A child process serving the store at path (group commit); *port is its port (-1 if it
   could not start). stop_on_term: SIGTERM stops it, and it exits 0 once the run ended
   and everything closed cleanly; else it serves until killed. */
static pid_t fork_server(const char *path, int stop_on_term, int *port) {
  int pfd[2];
  CHECK(pipe(pfd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    server sv;
    int rc = serve(&sv, path, 5, NULL);
    if (stop_on_term) {
      term_ing = sv.ing;
      signal(SIGTERM, on_term);
    }
    int p = rc == ESG_OK ? sv.port : -1;
    if (write(pfd[1], &p, sizeof p) != sizeof p || rc != ESG_OK) _exit(3);
    pthread_join(sv.th, NULL); /* until killed, or stopped */
    if (!stop_on_term) _exit(2);
    int run_rc = sv.run_rc;
    esg_ingress_close(sv.ing);
    esg_gateway_close(sv.g);
    _exit(run_rc == ESG_OK && esg_store_close(sv.s) == ESG_OK ? 0 : 1);
  }
  close(pfd[1]);
  *port = -1;
  CHECK(read(pfd[0], port, sizeof *port) == sizeof *port);
  close(pfd[0]);
  return pid;
}

/* --------------------------------------------------------------- SIGKILL -- */

/* A child serves (group commit), clients post and record every 2xx, the child is
   killed with SIGKILL: every acknowledged webhook is in the store, once. */
static void test_kill(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_KEPT);
  const char *uri = tu_store("kill");
  char path[512];
  snprintf(path, sizeof path, "%s", uri);
  int port = -1;
  pid_t pid = fork_server(path, 0, &port);
  if (port <= 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK(port > 0);
    return;
  }
  enum { T = 4, N = 100000 };
  static int acked[T * 1000];
  memset(acked, 0, sizeof acked);
  int shared = 0;
  client c[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    c[t] = (client){port, t * 1000, 1000, 0, acked, 1, &shared};
    pthread_create(&th[t], NULL, client_run, &c[t]);
  }
  while (__atomic_load_n(&shared, __ATOMIC_SEQ_CST) < 600) usleep(1000);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, NULL));
  int acks = 0, missing = 0;
  for (int i = 0; i < T * 1000; i++) {
    if (!acked[i]) continue;
    acks++;
    char id[32];
    snprintf(id, sizeof id, "w-%d", i);
    missing += stored(s, id).n != 1;
  }
  fprintf(stderr, "     %d webhooks acknowledged before the kill, %d of them missing\n", acks, missing);
  CHECK(acks >= 600);
  CHECK(missing == 0);
  esg_store_close(s);
  /* served again on the store: every acknowledged webhook, redelivered, is a duplicate */
  server sv;
  if (serve(&sv, path, 5, NULL) != ESG_OK) {
    CHECK(!"cannot serve again");
    return;
  }
  int dups = 0;
  for (int i = 0; i < T * 1000; i++) {
    if (!acked[i]) continue;
    char id[32], body[160];
    webhook(i, id, body);
    resp r = post(H, sv.port, id, body);
    dups += r.status == 200 && strstr(r.body, "\"duplicate\"") != NULL;
  }
  CHECK(dups == acks);
  CHECK(transforms() == 0);
  shut(&sv);
  (void)N;
}

/* SIGTERM to a serving process: the run ends by itself, the process exits 0, what was
   acknowledged is stored. */

static void test_sigterm(void) {
  TU_REQUIRE(tu_store_shared(), TU_NOT_KEPT);
  const char *uri = tu_store("term");
  char path[512];
  snprintf(path, sizeof path, "%s", uri);
  int port = -1;
  pid_t pid = fork_server(path, 1, &port);
  int ok = 0;
  for (int i = 0; port > 0 && i < 10; i++) {
    char id[32];
    snprintf(id, sizeof id, "t-%d", i);
    ok += post(H, port, id, "{}").status == 200;
  }
  CHECK(ok == 10);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, NULL));
  int n = 0;
  for (int i = 0; i < 10; i++) {
    char id[32];
    snprintf(id, sizeof id, "t-%d", i);
    n += stored(s, id).n;
  }
  CHECK(n == 10);
  esg_store_close(s);
}

/* ------------------------------------------------------------------- API -- */

static void test_api(void) {
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, ":memory:", NULL));
  esg_gateway_opts go = ESG_GATEWAY_OPTS_INIT;
  go.store = s;
  esg_gateway *g = NULL;
  CHECK_RC(ESG_OK, esg_gateway_open(&g, &go));
  esg_ingress *ing = NULL;
  esg_ingress_opts o = ESG_INGRESS_OPTS_INIT;
  esg_ingress_opts zero;
  memset(&zero, 0, sizeof zero);
  CHECK_RC(ESG_EINVAL, esg_ingress_open(&ing, g, &zero)); /* not from the INIT macro */
  CHECK_CONTAINS(esg_errmsg(NULL), "ESG_INGRESS_OPTS_INIT");
  CHECK(ing == NULL);
  o.body_max = ESG_INGRESS_BODY_MAX + 1;
  CHECK_RC(ESG_EINVAL, esg_ingress_open(&ing, g, &o));
  o.body_max = 0;
  o.listen = "localhost";
  CHECK_RC(ESG_OK, esg_ingress_open(&ing, g, &o));
  esg_ingress_route r = ESG_INGRESS_ROUTE_INIT;
  CHECK_RC(ESG_EINVAL, esg_ingress_route_add(ing, &r)); /* no path */
  r.path = "/metrics";
  CHECK_RC(ESG_EINVAL, esg_ingress_route_add(ing, &r));
  r.path = "/h";
  CHECK_RC(ESG_EINVAL, esg_ingress_route_add(ing, &r)); /* no secrets */
  const char *bad[] = {"whsec_!!!"};
  r.secrets = bad;
  r.n_secrets = 1;
  CHECK_RC(ESG_EINVAL, esg_ingress_route_add(ing, &r));
  CHECK_CONTAINS(esg_errmsg(ing), "secret 1");
  CHECK_RC(ESG_EINVAL, esg_ingress_start(ing)); /* no route */
  const char *good[] = {SECRET};
  r.secrets = good;
  r.source = "a:b"; /* ':' ends the source in event ids */
  CHECK_RC(ESG_EINVAL, esg_ingress_route_add(ing, &r));
  r.source = NULL;
  CHECK_RC(ESG_OK, esg_ingress_route_add(ing, &r));
  CHECK_RC(ESG_EINVAL, esg_ingress_route_add(ing, &r)); /* twice */
  CHECK_RC(ESG_EINVAL, esg_ingress_start(ing));         /* "localhost" is not ADDRESS:PORT */
  CHECK_CONTAINS(esg_errmsg(ing), "ADDRESS:PORT");
  CHECK(esg_ingress_port(ing) == 0);
  CHECK_RC(ESG_OK, esg_ingress_close(ing));
  /* a port in use */
  o.listen = "127.0.0.1:0";
  esg_ingress *a = NULL, *b = NULL;
  CHECK_RC(ESG_OK, esg_ingress_open(&a, g, &o));
  CHECK_RC(ESG_OK, esg_ingress_route_add(a, &r));
  CHECK_RC(ESG_OK, esg_ingress_start(a));
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", esg_ingress_port(a));
  o.listen = addr;
  CHECK_RC(ESG_OK, esg_ingress_open(&b, g, &o));
  CHECK_RC(ESG_OK, esg_ingress_route_add(b, &r));
  CHECK_RC(ESG_EIO, esg_ingress_start(b));
  CHECK_CONTAINS(esg_errmsg(b), addr);
  CHECK_RC(ESG_ESTATE, esg_ingress_route_add(a, &r));
  esg_ingress_close(b);
  esg_ingress_close(a); /* never run: closes cleanly */
  CHECK_RC(ESG_OK, esg_ingress_close(NULL));
  esg_gateway_close(g);
  esg_store_close(s);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_ALL);
  H = curl_easy_init();
  RUN(test_api);
  TU_SUITE {
    RUN(test_signed);
    RUN(test_duplicate_and_reuse);
    RUN(test_refused);
    RUN(test_too_large);
    RUN(test_endpoints);
    RUN(test_concurrent);
    RUN(test_ack_after_commit);
    RUN(test_backpressure_and_stop);
    RUN(test_store_locked);
    RUN(test_kill);
    RUN(test_sigterm);
  }
  RUN(test_slow_client);
  RUN(test_connection_limit);
  curl_easy_cleanup(H);
  curl_global_cleanup();
  return tu_done();
}
