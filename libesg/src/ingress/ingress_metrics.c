/*
 * GET /metrics: Prometheus text format (version 0.0.4). The answers by status, their
 * latency as a histogram (from the request's headers read to its answer queued: a
 * 2xx's includes its commit), the queue, connections cut for slowness, and the
 * gateway's counters as the source last saw them (the gateway's thread owns them).
 */
#include <stdio.h>
#include <string.h>
#include "ingress_int.h"

static const double bounds[ESG__LAT_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0};

static const int codes[] = {
#define ESG__ST_CODE(code) code,
  ESG__STATUSES(ESG__ST_CODE)
#undef ESG__ST_CODE
};

void esg__ingress_count(esg_ingress *ing, int status, int64_t latency_us) {
  size_t i = 0;
  while (i < ESG__ST_OTHER && codes[i] != status) i++;
  ing->by_status[i]++;
  double s = (double)latency_us / 1e6;
  size_t b = 0;
  while (b < ESG__LAT_BUCKETS - 1 && s > bounds[b]) b++;
  ing->lat[b]++;
  ing->lat_sum += s;
  ing->lat_count++;
}

typedef struct text {
  char *p;
  size_t len, cap;
  bool oom;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...) {
  if (t->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->oom = true;
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = t->cap * 2 + (size_t)n;
    char *p = esg__realloc(t->p, cap);
    if (!p) {
      t->oom = true;
      return;
    }
    t->p = p;
    t->cap = cap;
  }
}

char *esg__ingress_metrics(esg_ingress *ing, unsigned connections, size_t *len) {
  text t = {esg__malloc(4096), 0, 4096, false};
  if (!t.p) return NULL;
  add(&t, "# HELP esg_ingress_requests_total Answers sent, by HTTP status.\n");
  add(&t, "# TYPE esg_ingress_requests_total counter\n");
  for (size_t i = 0; i < ESG__ST_OTHER; i++)
    add(&t, "esg_ingress_requests_total{code=\"%d\"} %llu\n", codes[i], (unsigned long long)ing->by_status[i]);
  add(&t, "esg_ingress_requests_total{code=\"other\"} %llu\n", (unsigned long long)ing->by_status[ESG__ST_OTHER]);
  add(&t, "# HELP esg_ingress_request_duration_seconds From the request's headers read to its answer queued.\n");
  add(&t, "# TYPE esg_ingress_request_duration_seconds histogram\n");
  uint64_t cum = 0;
  for (size_t b = 0; b < ESG__LAT_BUCKETS - 1; b++) {
    cum += ing->lat[b];
    add(&t, "esg_ingress_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bounds[b], (unsigned long long)cum);
  }
  cum += ing->lat[ESG__LAT_BUCKETS - 1];
  add(&t, "esg_ingress_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
  add(&t, "esg_ingress_request_duration_seconds_sum %.6f\n", ing->lat_sum);
  add(&t, "esg_ingress_request_duration_seconds_count %llu\n", (unsigned long long)ing->lat_count);
  add(&t, "# HELP esg_ingress_queue_depth Requests waiting for the gateway.\n# TYPE esg_ingress_queue_depth gauge\n");
  add(&t, "esg_ingress_queue_depth %u\n", ing->qlen);
  add(&t, "# HELP esg_ingress_commit_waiting Answers waiting for their commit.\n# TYPE esg_ingress_commit_waiting gauge\n");
  add(&t, "esg_ingress_commit_waiting %u\n", ing->waiting_seen);
  add(&t, "# HELP esg_ingress_connections Open connections.\n# TYPE esg_ingress_connections gauge\n");
  add(&t, "esg_ingress_connections %u\n", connections);
  add(&t, "# HELP esg_ingress_connections_cut_total Connections cut for not sending a request in time.\n");
  add(&t, "# TYPE esg_ingress_connections_cut_total counter\n");
  add(&t, "esg_ingress_connections_cut_total %llu\n", (unsigned long long)ing->cut);
  const esg_gateway_stats *g = &ing->gst;
  add(&t, "# HELP esg_gateway_events_total The gateway's events, by outcome.\n");
  add(&t, "# TYPE esg_gateway_events_total counter\n");
  const struct {
    const char *name;
    uint64_t v;
  } outcomes[] = {{"received", g->received}, {"filtered", g->filtered},   {"duplicate", g->duplicates},
                  {"busy", g->busy},         {"stale", g->stale},         {"echo", g->echoes},
                  {"dropped", g->dropped},   {"delivered", g->delivered}, {"fault", g->faults},
                  {"cancelled", g->cancelled}, {"resubmitted", g->resubmitted}};
  for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
    add(&t, "esg_gateway_events_total{outcome=\"%s\"} %llu\n", outcomes[i].name, (unsigned long long)outcomes[i].v);
  add(&t, "# TYPE esg_gateway_retries_total counter\nesg_gateway_retries_total %llu\n", (unsigned long long)g->retries);
  add(&t, "# TYPE esg_gateway_in_flight gauge\nesg_gateway_in_flight %llu\n", (unsigned long long)g->in_flight);
  add(&t, "# TYPE esg_gateway_circuits_open gauge\nesg_gateway_circuits_open %llu\n",
      (unsigned long long)g->circuits_open);
  if (t.oom) {
    esg__free(t.p);
    return NULL;
  }
  *len = t.len;
  return t.p;
}
