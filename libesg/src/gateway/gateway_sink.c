/*
 * The gateway's sinks. A file line is written before the claim completes (one write
 * per event: a buffered line lost in a crash after its claim's commit would be an event
 * lost). The HTTP sink hands the event's claim to the egress engine with the request,
 * which completes it on delivery or with the fault (the one fault convention); the
 * gateway keeps the claim keys in flight, so a copy of the event meeting its own
 * delivery's claim counts as a duplicate.
 *
 * The outbox: the rendered request (method, URL, headers, body) is stored under the
 * event's claim key before the first attempt, and an event that finds one (a takeover
 * after a crash, a retry after a release, a resubmission) sends exactly those bytes
 * without rendering again. In grouped mode the rows wait in the open group: the group
 * is committed before the engine sends them (every 64 deliveries, or when the loop
 * waits), so no request leaves before its row is durable.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gateway_int.h"
#include "io/egress_int.h"

/* ------------------------------------------------------------------- HTTP -- */

static void on_done(void *ud, const esg_egress_result *r) {
  esg_gateway *g = ud;
  size_t slot = (size_t)(uintptr_t)r->request_ud;
  int64_t lineno = 0;
  if (slot && slot <= g->cap_flights) {
    esg__gw_flight *f = &g->flights[slot - 1];
    lineno = f->lineno;
    /* delivered: nothing will send it again (a fault keeps it for resubmission) */
    if (r->outcome == ESG_EGRESS_DELIVERED && g->s) esg__outbox_delete(g->s, f->key);
    esg__free(f->key);
    f->key = NULL;
    g->n_flights--;
  }
  g->st.in_flight--;
  if (g->resub.id) g->resub.outcome = (int)r->outcome;
  if (r->outcome == ESG_EGRESS_DELIVERED) {
    g->st.delivered++;
  } else if (r->outcome == ESG_EGRESS_CANCELLED) {
    g->st.cancelled++;
  } else {
    g->st.faults++;
    if (g->o.on_fault) {
      esg_gateway_fault f = {r->fault_id, r->event_id, "deliver", r->error, r->http_status, r->attempts, lineno};
      g->in_step = true;
      g->o.on_fault(g->o.ud, &f);
      g->in_step = false;
    }
  }
}

static void on_retry(void *ud, const char *event_id, int attempt, int status, int64_t delay, const char *error) {
  esg_gateway *g = ud;
  g->st.retries++;
  if (g->o.on_retry) {
    g->in_step = true;
    g->o.on_retry(g->o.ud, event_id, attempt, status, delay, error);
    g->in_step = false;
  }
}

static int open_http(esg_gateway *g) {
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  if (g->o.egress) {
    int rc = ESG__OPTS_COPY(&g->err, esg_egress_opts, &eo, g->o.egress);
    if (rc != ESG_OK) return rc;
  }
  eo.complete_on_fault = 1;
  /* the gateway's default: pause a failing host; -1 turns the breaker off */
  eo.circuit_failures = eo.circuit_failures == 0 ? 5 : eo.circuit_failures < 0 ? 0 : eo.circuit_failures;
  eo.on_done = on_done;
  eo.on_retry = on_retry;
  eo.ud = g;
  int rc = esg_egress_open(&g->egress, g->s, &eo);
  if (rc != ESG_OK) return esg__fail(&g->err, rc, "the HTTP sink: %s", esg_errmsg(NULL));
  g->backlog = 4 * (size_t)(eo.max_in_flight ? eo.max_in_flight : 16);
  g->cap_flights = g->backlog;
  g->flights = esg__calloc(g->cap_flights, sizeof *g->flights);
  if (!g->flights) return esg__fail(&g->err, ESG_ENOMEM, "out of memory opening the HTTP sink");
  return ESG_OK;
}

bool esg__gw_in_flight(const esg_gateway *g, const char *key) {
  for (size_t i = 0; g->n_flights && i < g->cap_flights; i++)
    if (g->flights[i].key && strcmp(g->flights[i].key, key) == 0) return true;
  return false;
}

int esg__gw_outbox_commit(esg_gateway *g) {
  if (!g->outbox_dirty) return ESG_OK;
  g->outbox_dirty = false;
  g->unflushed = 0;
  int rc = esg_store_flush(g->s);
  return rc == ESG_OK ? ESG_OK : esg__fail(&g->err, rc, "committing the outbox: %s", esg_errmsg(g->s));
}

int esg__gw_engine(esg_gateway *g, int fd, int timeout_ms, bool force) {
  if (g->outbox_dirty) {
    if (!force && g->unflushed < 64) return ESG_OK;
    int rc = esg__gw_outbox_commit(g);
    if (rc != ESG_OK) return rc;
  }
  int rc = esg__egress_wait(g->egress, fd, timeout_ms);
  return rc == ESG_OK ? ESG_OK : esg__fail(&g->err, rc, "%s", esg_errmsg(g->egress));
}

/* A free flight slot (1-based); the loop turns (committing the outbox first, and due
   groups) until one frees. */
static size_t take_flight(esg_gateway *g) {
  while (g->n_flights >= g->cap_flights)
    if (esg__gw_turn(g, -1, 50) != ESG_OK) return 0;
  for (size_t i = 0; i < g->cap_flights; i++)
    if (!g->flights[i].key) return i + 1;
  return 0;
}

/* The outbox row: "ESGO1\n" method "\n" url "\n" n "\n" n header lines, then the body. Method,
   URL and headers never hold a newline (the engine refuses control characters). */
static int encode(esg__buf *b, const esg_gateway_request *r) {
  size_t n = 6 + strlen(r->method) + strlen(r->url) + 24 + r->body_len;
  for (size_t i = 0; i < r->n_headers; i++) n += strlen(r->headers[i]) + 1;
  if (esg__buf_set(b, NULL, n) != ESG_OK) return ESG_ENOMEM;
  int w = snprintf(b->data, n + 1, "ESGO1\n%s\n%s\n%zu\n", r->method, r->url, r->n_headers);
  size_t at = (size_t)w;
  for (size_t i = 0; i < r->n_headers; i++) at += (size_t)snprintf(b->data + at, n + 1 - at, "%s\n", r->headers[i]);
  if (r->body_len) memcpy(b->data + at, r->body, r->body_len);
  b->len = at + r->body_len;
  return ESG_OK;
}

/* Splits the row in b (in place) into r; false when it is not one. */
static bool decode(esg_gateway *g, esg__buf *b, esg_gateway_request *r) {
  char *p = b->data, *end = b->data + b->len, *fields[4];
  for (int i = 0; i < 4; i++) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return false;
    *nl = '\0';
    fields[i] = p;
    p = nl + 1;
  }
  size_t n = strtoull(fields[3], NULL, 10);
  if (strcmp(fields[0], "ESGO1") != 0 || n > 10000) return false;
  if (n > g->ohdrs_cap) {
    const char **h = esg__realloc(g->ohdrs, n * sizeof *h);
    if (!h) return false;
    g->ohdrs = h;
    g->ohdrs_cap = n;
  }
  for (size_t i = 0; i < n; i++) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return false;
    *nl = '\0';
    g->ohdrs[i] = p;
    p = nl + 1;
  }
  *r = (esg_gateway_request){fields[1], fields[2], g->ohdrs, n, p, (size_t)(end - p)};
  return true;
}

int esg__gw_outbox_find(esg_gateway *g, esg_gateway_event *e) {
  e->stored = false;
  if (!e->okey || (g->resub.id && g->o.http_rerender)) return ESG_OK;
  int rc = esg__outbox_get(g->s, e->okey, &g->obuf);
  if (rc == ESG_NOT_FOUND) return ESG_OK;
  if (rc < 0) return esg_gateway_event_fail(e, "the outbox: %s", esg_errmsg(g->s));
  if (!decode(g, &g->obuf, &g->oreq)) return esg_gateway_event_fail(e, "the outbox row of \"%s\" is damaged", e->okey);
  e->stored = true;
  return ESG_OK;
}

static int write_http(esg_gateway *g, esg_gateway_event *e, const char *key, int64_t token) {
  const esg_gateway_opts *o = &g->o;
  esg_gateway_request r = {o->http_method ? o->http_method : "POST", o->http_url, o->http_headers,
                           o->http_n_headers, e->out.data, e->out.len};
  const char *okey = e->okey; /* the claim's key: the outbox's too */
  bool stored = e->stored;
  if (stored) r = g->oreq;
  if (!stored && o->render) {
    g->in_step = true;
    e->msg[0] = '\0';
    int rc = o->render(o->ud, e, &r);
    g->in_step = false;
    if (rc < 0) return rc;
  }
  if (!r.url) return esg_gateway_event_fail(e, "the HTTP sink has no url for this event");
  if (!stored && okey) { /* before the first attempt: every later one sends these bytes */
    if (encode(&g->obuf, &r) != ESG_OK) return esg_gateway_event_fail(e, "out of memory writing the outbox");
    if (esg__outbox_put(g->s, okey, g->obuf.data, g->obuf.len) != ESG_OK)
      return esg_gateway_event_fail(e, "the outbox: %s", esg_errmsg(g->s));
    if (g->s->group) g->outbox_dirty = true;
  }
  size_t slot = 0;
  char *kcopy = NULL;
  if (okey) {
    if (!(slot = take_flight(g)) || !(kcopy = esg__strdup(okey)))
      return esg_gateway_event_fail(e, "out of memory (or the engine failed) waiting for a delivery slot");
  }
  esg_egress_request q = {0};
  q.event_id = esg_event_id(e->ev);
  q.method = r.method;
  q.url = r.url;
  q.headers = r.headers;
  q.n_headers = r.n_headers;
  q.body = r.body;
  q.body_len = r.body_len;
  q.partition_key = esg_event_partition_key(e->ev);
  q.claim_key = key;
  q.claim_token = token;
  q.event = e->line;
  q.event_len = e->line_len;
  q.ud = (void *)(uintptr_t)slot;
  g->resub.via_http = g->resub.id != 0;
  int rc = g->resub.id ? esg_egress_resubmit(g->egress, g->resub.id, &q) : esg_egress_submit(g->egress, &q);
  if (rc != ESG_OK) {
    esg__free(kcopy);
    return esg_gateway_event_fail(e, "%s", esg_errmsg(g->egress));
  }
  if (slot) {
    g->flights[slot - 1].key = kcopy;
    g->flights[slot - 1].lineno = e->lineno;
    g->n_flights++;
  }
  g->st.in_flight++;
  g->unflushed++;
  esg__gw_engine(g, -1, 0, false); /* start it now (or with the next outbox commit) */
  return ESG_BUSY;
}

/* ------------------------------------------------------------------- file -- */

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -errno;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int write_file(esg_gateway *g, esg_gateway_event *e) {
  /* the line and its newline in one write, so concurrent appenders never interleave */
  if (esg__buf_set(&g->wbuf, e->out.data, e->out.len + 1) != ESG_OK)
    return esg_gateway_event_fail(e, "out of memory writing the output");
  g->wbuf.data[e->out.len] = '\n';
  int err = write_all(g->fd, g->wbuf.data, e->out.len + 1);
  return err ? esg_gateway_event_fail(e, "writing the output: %s", strerror(-err)) : ESG_OK;
}

/* --------------------------------------------------------------- the sink -- */

int esg__gw_sink_open(esg_gateway *g) {
  switch (g->o.sink) {
  case ESG_GATEWAY_SINK_FILE:
    if (g->o.sink_path) {
      g->fd = open(g->o.sink_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (g->fd < 0) return esg__fail(&g->err, ESG_EIO, "cannot open the sink %s: %s", g->o.sink_path, strerror(errno));
      g->own_fd = true;
    } else {
      g->fd = g->o.sink_fd > 0 ? g->o.sink_fd : 1;
    }
    return ESG_OK;
  case ESG_GATEWAY_SINK_HTTP:
    return open_http(g);
  default:
    return ESG_OK;
  }
}

int esg__gw_sink_write(esg_gateway *g, esg_gateway_event *e, const char *key, int64_t token) {
  const esg_gateway_opts *o = &g->o;
  switch (o->sink) {
  case ESG_GATEWAY_SINK_FILE:
    return write_file(g, e);
  case ESG_GATEWAY_SINK_EVENTLOG: {
    esg_event *ev = NULL;
    int rc = esg_event_parse(e->out.data, e->out.len, &ev);
    if (rc != ESG_OK) return esg_gateway_event_fail(e, "the event log sink needs an envelope: %s", esg_errmsg(NULL));
    rc = esg_event_put(g->s, ev, o->eventlog_key, o->eventlog_ttl_ms);
    esg_event_free(ev);
    return rc < 0 ? esg_gateway_event_fail(e, "the event log: %s", esg_errmsg(g->s)) : ESG_OK;
  }
  case ESG_GATEWAY_SINK_CALLBACK: {
    g->in_step = true;
    e->msg[0] = '\0';
    int rc = o->write(o->ud, e, e->out.data, e->out.len);
    g->in_step = false;
    return rc < 0 ? rc : ESG_OK;
  }
  case ESG_GATEWAY_SINK_HTTP:
    return write_http(g, e, key, token);
  }
  return ESG_EINVAL;
}

void esg__gw_sink_close(esg_gateway *g) {
  if (g->egress && g->s) esg__gw_drain(g);
  if (g->egress) {
    esg_egress_drain(g->egress); /* what a failed commit left */
    esg_egress_close(g->egress);
    g->egress = NULL;
  }
  for (size_t i = 0; g->flights && i < g->cap_flights; i++) esg__free(g->flights[i].key);
  esg__free(g->flights);
  g->flights = NULL;
  if (g->own_fd) close(g->fd);
  g->fd = -1;
  esg__buf_free(&g->wbuf);
  esg__buf_free(&g->obuf);
  esg__free(g->ohdrs);
  g->ohdrs = NULL;
}
