/*
 * The egress delivery engine (esg/egress.h) on the libcurl multi interface.
 *
 * A delivery (job) waits in its lane; only a lane's head is ever sent, so a
 * partition key's deliveries go one at a time and in order, while lanes of
 * other keys fill the in-flight slots meanwhile. A slot is an easy handle kept
 * for the engine's life; the multi handle keeps the connections, so both are
 * reused. After each answer the policy (egress_retry.c) decides: finish, or
 * park the lane in the timer heap until its backoff ends. Finishing writes the
 * store (complete the claim, or record a fault and release the claim), calls
 * the caller back, and lets the lane's next delivery go.
 */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "egress_int.h"
#include "store/store_int.h"

typedef struct esg__slot {
  CURL *easy;
  esg__job *job;
  char *resp;                  /* response body, at most max_response_bytes */
  size_t resp_len, resp_cap, resp_max;
  char errbuf[CURL_ERROR_SIZE];
  bool plain_post;             /* the handle is set up for a POST with a body: skip the reset */
  char *url;                   /* the URL the handle has (owned), so the same one is not set again */
  CURLU *uh;                   /* that URL parsed once, for all the deliveries that go there */
  CURLcode cc;                 /* how the last transfer ended, and its HTTP status (reap) */
  long status;
  char result[200];            /* the claim result of a delivered transfer (complete_round) */
  struct esg__slot *next_free;
} esg__slot;

struct esg_egress {
  esg__err err; /* first: see esg__err */
  esg_store *store;            /* borrowed; NULL without one or once it closed */
  esg__dep dep;
  bool store_closed;
  unsigned forks;              /* esg__forks at open: the connections belong to that process */
  CURLM *multi;
  int max_in_flight, max_attempts;
  int64_t max_elapsed, base, cap, connect_timeout, timeout, lease;
  double rate;
  double burst;
  bool complete_on_fault;
  char *idem_header, *content_type;
  char *proxy[3], *no_proxy;   /* the proxy environment as libcurl reads it: http, https, all */
  size_t max_resp;
  esg_clock_fn clock;
  void *clock_ud;
  int64_t anchor_real, anchor_mono; /* the default clock */
  esg_egress_done_fn on_done;
  esg_egress_retry_fn on_retry;
  void *ud;
  uint64_t rng;
  double tokens;
  int64_t tokens_at;
  esg__slot *slots, *free_slots;
  esg__slot **round;           /* the transfers one reap finished */
  esg__completion *batch;      /* their claims' completions */
  esg__lanes lanes;
  esg__heap heap;
  esg__circuits circuits;      /* per host, when the breaker is on */
  esg__circuit_policy cp;
  esg__ready ready;
  esg__lane *all;              /* every lane, for close */
  struct esg__lane_node *spare; /* emptied lanes for reuse, linked by next */
  int n_spare;
  esg_egress_stats st;
  uint64_t jobs;               /* unfinished deliveries */
  bool in_callback, running, closing;
  bool close_pending;
  char store_msg[600];         /* esg_egress_result.store_error of the callback running */          /* closed from a callback: run closes on its way out */
};

/* A lane, its links in the list of every lane (for close), and its key. */
typedef struct esg__lane_node {
  esg__lane lane;              /* first, so a lane pointer is a node pointer */
  struct esg__lane_node *prev, *next;
  size_t cap;                  /* bytes in key[] */
  char key[];
} esg__lane_node;

/* Emptied lanes kept for reuse: a busy engine empties and refills lanes all the time. */
#define SPARE_LANES 256

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Real time that cannot step backwards: a wall-clock jump must not stretch a backoff. */
static int64_t default_clock(void *ud) {
  const esg_egress *e = ud;
  return e->anchor_real + (mono_ms() - e->anchor_mono);
}

static int64_t now_of(const esg_egress *e) { return e->clock(e->clock_ud); }

const char *esg_egress_outcome_name(int outcome) {
  switch (outcome) {
  case ESG_EGRESS_DELIVERED: return "delivered";
  case ESG_EGRESS_REFUSED: return "refused";
  case ESG_EGRESS_EXHAUSTED: return "exhausted";
  case ESG_EGRESS_CANCELLED: return "cancelled";
  }
  return "unknown";
}

/* ------------------------------------------------------------ open/close -- */

static void lane_link(esg_egress *e, esg__lane *l) {
  esg__lane_node *n = (esg__lane_node *)l, *head = (esg__lane_node *)e->all;
  n->prev = NULL;
  n->next = head;
  if (head) head->prev = n;
  e->all = l;
}

static void lane_unlink(esg_egress *e, esg__lane *l) {
  esg__lane_node *n = (esg__lane_node *)l;
  if (n->prev) n->prev->next = n->next;
  else e->all = (esg__lane *)n->next;
  if (n->next) n->next->prev = n->prev;
}

/* A variable's value, NULL when unset or empty: libcurl takes an empty one as unset. */
static const char *env_value(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* *out: a copy of the first of two environment variables that is set, or NULL. False when out of memory. */
static bool env_copy(char **out, const char *a, const char *b) {
  const char *v = env_value(a);
  if (!v && b) v = env_value(b);
  *out = v ? esg__strdup(v) : NULL;
  return !v || *out;
}

/*
 * The proxy variables, read once: libcurl would read them on every transfer
 * (five getenv calls a request). The same rules as libcurl's: http_proxy only in
 * lower case, the others in either, an empty one as unset, all_proxy when the
 * scheme has none, and no_proxy's exceptions. False when out of memory.
 */
static bool read_proxy_env(esg_egress *e) {
  bool ok = env_copy(&e->proxy[0], "http_proxy", NULL);
  ok &= env_copy(&e->proxy[1], "https_proxy", "HTTPS_PROXY");
  ok &= env_copy(&e->proxy[2], "all_proxy", "ALL_PROXY");
  ok &= env_copy(&e->no_proxy, "no_proxy", "NO_PROXY");
  return ok;
}

/* Sets the proxy for a URL from the snapshot; other schemes keep libcurl's own lookup. */
static void set_proxy(const esg_egress *e, CURL *h, const char *url) {
  int which = strncasecmp(url, "http://", 7) == 0 ? 0 : strncasecmp(url, "https://", 8) == 0 ? 1 : -1;
  if (which < 0) {
    curl_easy_setopt(h, CURLOPT_PROXY, NULL);
    curl_easy_setopt(h, CURLOPT_NOPROXY, NULL);
    return;
  }
  const char *p = e->proxy[which] ? e->proxy[which] : e->proxy[2];
  curl_easy_setopt(h, CURLOPT_PROXY, p ? p : ""); /* "": none, and no lookup */
  curl_easy_setopt(h, CURLOPT_NOPROXY, e->no_proxy ? e->no_proxy : "");
}

static void detach(esg__dep *d);

static int forked(esg_egress *e) {
  return esg__fail(&e->err, ESG_ESTATE, "the engine was opened by another process (before fork); open one in this process");
}

int esg_egress_open(esg_egress **out, esg_store *store, const esg_egress_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  esg_egress_opts o;
  int orc = ESG__OPTS_COPY(NULL, esg_egress_opts, &o, opts);
  if (orc != ESG_OK) return orc;
  const struct {
    const char *name;
    double value;
  } counts[] = {{"max_in_flight", o.max_in_flight},     {"max_attempts", o.max_attempts},
                {"max_elapsed_ms", (double)o.max_elapsed_ms}, {"backoff_base_ms", (double)o.backoff_base_ms},
                {"backoff_cap_ms", (double)o.backoff_cap_ms}, {"connect_timeout_ms", (double)o.connect_timeout_ms},
                {"timeout_ms", (double)o.timeout_ms},   {"rate_per_s", o.rate_per_s},
                {"rate_burst", o.rate_burst},           {"claim_lease_ms", (double)o.claim_lease_ms},
                {"circuit_failures", o.circuit_failures}, {"circuit_open_ms", (double)o.circuit_open_ms}};
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
    if (!(counts[i].value >= 0)) /* NaN too */
      return esg__fail(NULL, ESG_EINVAL, "egress option %s is %g; it must be 0 (the default) or more", counts[i].name,
                       counts[i].value);
  if (o.max_in_flight > 100000) return esg__fail(NULL, ESG_EINVAL, "max_in_flight %d is too many", o.max_in_flight);
  const char *hdr = o.idempotency_header ? o.idempotency_header : "Idempotency-Key";
  if (!*hdr || strpbrk(hdr, ": \t\r\n"))
    return esg__fail(NULL, ESG_EINVAL, "idempotency_header \"%s\" is not a header name", hdr);
  const char *ct = o.content_type ? o.content_type : "application/json";
  if (strpbrk(ct, "\r\n")) return esg__fail(NULL, ESG_EINVAL, "content_type holds a line break");
  if (esg__curl_global_init() != ESG_OK) return ESG_EIO;

  esg_egress *e = esg__calloc(1, sizeof *e);
  if (!e) return esg__fail(NULL, ESG_ENOMEM, "out of memory");
  esg__handle_init(&e->err, ESG__H_EGRESS);
  esg__watch_forks();
  e->forks = esg__forks;
  e->store = store;
  e->max_in_flight = o.max_in_flight ? o.max_in_flight : 16;
  e->max_attempts = o.max_attempts ? o.max_attempts : 5;
  e->max_elapsed = o.max_elapsed_ms ? o.max_elapsed_ms : 60000;
  e->base = o.backoff_base_ms ? o.backoff_base_ms : 100;
  e->cap = o.backoff_cap_ms ? o.backoff_cap_ms : 10000;
  e->connect_timeout = o.connect_timeout_ms ? o.connect_timeout_ms : 5000;
  e->timeout = o.timeout_ms ? o.timeout_ms : 30000;
  e->lease = o.claim_lease_ms;
  e->cp.failures = o.circuit_failures;
  e->cp.open_ms = o.circuit_open_ms ? o.circuit_open_ms : 1000;
  e->cp.cap_ms = e->cp.open_ms > 60000 ? e->cp.open_ms : 60000;
  e->rate = o.rate_per_s;
  e->burst = o.rate_burst ? o.rate_burst : (o.rate_per_s > 1 ? floor(o.rate_per_s) : 1);
  e->complete_on_fault = o.complete_on_fault != 0;
  e->max_resp = o.max_response_bytes ? o.max_response_bytes : 65536;
  e->anchor_real = esg_clock_real(NULL);
  e->anchor_mono = mono_ms();
  e->clock = o.clock ? o.clock : default_clock;
  e->clock_ud = o.clock ? o.clock_ud : e;
  e->on_done = o.on_done;
  e->on_retry = o.on_retry;
  e->ud = o.ud;
  e->rng = o.seed ? o.seed : ((uint64_t)e->anchor_real * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)(uintptr_t)e;
  if (!e->rng) e->rng = 1;
  e->tokens = e->burst;
  e->tokens_at = now_of(e);
  bool env_ok = read_proxy_env(e);
  e->idem_header = esg__strdup(hdr);
  e->content_type = esg__strdup(ct);
  e->slots = esg__calloc((size_t)e->max_in_flight, sizeof *e->slots);
  e->round = esg__calloc((size_t)e->max_in_flight, sizeof *e->round);
  e->batch = esg__calloc((size_t)e->max_in_flight, sizeof *e->batch);
  e->multi = curl_multi_init();
  if (!env_ok || !e->idem_header || !e->content_type || !e->slots || !e->round || !e->batch || !e->multi) goto nomem;
  for (int i = e->max_in_flight - 1; i >= 0; i--) {
    esg__slot *s = &e->slots[i];
    if (!(s->easy = curl_easy_init())) goto nomem;
    s->resp_max = e->max_resp;
    s->next_free = e->free_slots;
    e->free_slots = s;
  }
  /* keep a connection per slot alive, and no more: the receiver sees at most N */
  curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->max_in_flight);
  if (store) esg__dep_link(store, &e->dep, detach);
  *out = e;
  return ESG_OK;
nomem:
  esg_egress_close(e);
  return esg__fail(NULL, ESG_ENOMEM, "out of memory (or curl init failed) opening egress");
}

/* A job is one block (make_job): freeing it frees its strings and header list. */
static void job_free(esg__job *j) { esg__free(j); }

static void finish(esg_egress *e, esg__job *j, esg_egress_outcome outcome, const esg__slot *slot);

/* Ends every delivery not finished with CANCELLED (callbacks run, claims released). */
static void cancel_all(esg_egress *e, const char *why) {
  /* what is on the wire first: detach it so its slot is clean */
  for (int i = 0; e->slots && i < e->max_in_flight; i++) {
    esg__slot *s = &e->slots[i];
    if (s->job) {
      curl_multi_remove_handle(e->multi, s->easy);
      s->job = NULL;
    }
  }
  while (e->all) {
    esg__lane *l = e->all;
    while (l->head) {
      esg__job *j = l->head;
      l->head = j->next;
      snprintf(j->error, sizeof j->error, "cancelled: %s", why);
      finish(e, j, ESG_EGRESS_CANCELLED, NULL);
      job_free(j);
    }
    lane_unlink(e, l);
    esg__free(l);
  }
}

/* The store is closing: what is in flight ends now, while the claims can be released. */
static void detach(esg__dep *d) {
  esg_egress *e = (esg_egress *)((char *)d - offsetof(esg_egress, dep));
  e->store_closed = true;
  if (e->forks != esg__forks) { /* a child of fork(): what is in flight is the parent's */
    e->store = NULL;
    return;
  }
  bool was = e->closing;
  e->closing = true; /* finish() leaves the lanes to cancel_all, as in close */
  cancel_all(e, "the store was closed");
  esg__lanes_free(&e->lanes);
  e->heap.n = 0;
  e->ready.head = e->ready.tail = NULL;
  e->closing = was;
  e->store = NULL;
}

void esg_egress_close(esg_egress *e) {
  if (!e || e->closing) return; /* closing already: a cancelled delivery's callback closed again */
  if (e->running) {
    /* from a callback inside run: freeing now would pull the engine from under the loop */
    e->close_pending = true;
    return;
  }
  e->closing = true;
  if (e->forks != esg__forks) {
    /* a child of fork(): the deliveries, their callbacks and connections are the parent's */
    esg__handle_end(&e->err);
    return;
  }
  if (e->store) esg__dep_unlink(&e->dep);
  cancel_all(e, "the engine was closed");
  while (e->spare) {
    esg__lane_node *n = e->spare;
    e->spare = n->next;
    esg__free(n);
  }
  for (int i = 0; e->slots && i < e->max_in_flight; i++) {
    if (e->slots[i].easy) curl_easy_cleanup(e->slots[i].easy);
    esg__free(e->slots[i].resp);
    esg__free(e->slots[i].url);
    curl_url_cleanup(e->slots[i].uh);
  }
  if (e->multi) curl_multi_cleanup(e->multi);
  esg__lanes_free(&e->lanes);
  esg__heap_free(&e->heap);
  esg__circuits_free(&e->circuits);
  esg__free(e->slots);
  esg__free(e->round);
  esg__free(e->batch);
  esg__free(e->idem_header);
  esg__free(e->content_type);
  for (int i = 0; i < 3; i++) esg__free(e->proxy[i]);
  esg__free(e->no_proxy);
  esg__handle_end(&e->err);
  esg__free(e);
}

/* ---------------------------------------------------------------- submit -- */

static bool has_ctl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 && *s != '\t') return true;
  return false;
}

static char *dupmem(const void *p, size_t n) {
  char *d = esg__malloc(n + 1);
  if (!d) return NULL;
  if (n) memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

/* Copies n bytes and a NUL to *at, advancing it; returns the copy. */
static char *put(char **at, const void *p, size_t n) {
  char *d = *at;
  if (n) memcpy(d, p, n);
  d[n] = '\0';
  *at += n + 1;
  return d;
}

/* Writes "name: value" to *at, advancing it; returns the line. */
static char *put_line(char **at, const char *name, const char *value) {
  size_t a = strlen(name), b = strlen(value);
  char *d = *at;
  memcpy(d, name, a);
  memcpy(d + a, ": ", 2);
  memcpy(d + a + 2, value, b + 1);
  *at += a + b + 3;
  return d;
}

/*
 * Checks a request and copies it into one block: the job, its header list (our
 * own curl_slist nodes, which libcurl only reads) and every string, so a
 * delivery costs one allocation rather than one per field and header.
 */
static int make_job(esg_egress *e, const esg_egress_request *r, esg__job **out) {
  *out = NULL;
  int rc = esg__check_key(&e->err, "event_id", r->event_id);
  if (rc != ESG_OK) return rc;
  if (has_ctl(r->event_id)) return esg__fail(&e->err, ESG_EINVAL, "event_id holds a control character");
  if (!r->url || !*r->url) return esg__fail(&e->err, ESG_EINVAL, "url is NULL or empty");
  if (has_ctl(r->url)) return esg__fail(&e->err, ESG_EINVAL, "url holds a control character");
  const char *method = r->method && *r->method ? r->method : "POST";
  if (strpbrk(method, " \t\r\n:")) return esg__fail(&e->err, ESG_EINVAL, "method \"%s\" is not a token", method);
  if (r->body_len && !r->body) return esg__fail(&e->err, ESG_EINVAL, "body is NULL with length %zu", r->body_len);
  if (r->event_len && !r->event) return esg__fail(&e->err, ESG_EINVAL, "event is NULL with length %zu", r->event_len);
  if (r->n_headers && !r->headers) return esg__fail(&e->err, ESG_EINVAL, "headers is NULL with n_headers %zu", r->n_headers);
  if (r->partition_key && strlen(r->partition_key) > ESG_KEY_MAX)
    return esg__fail(&e->err, ESG_ETOOBIG, "partition_key is longer than %d bytes", ESG_KEY_MAX);
  if (r->claim_key && (rc = esg__check_key(&e->err, "claim_key", r->claim_key)) != ESG_OK) return rc;
  bool own_ct = false;
  size_t ctl = strlen("content-type:"), hdr_bytes = 0;
  for (size_t i = 0; i < r->n_headers; i++) {
    const char *h = r->headers[i];
    if (!h || !strchr(h, ':') || has_ctl(h))
      return esg__fail(&e->err, ESG_EINVAL, "header %zu is not one line \"Name: value\"", i);
    if (strncasecmp(h, "content-type:", ctl) == 0) own_ct = true;
    hdr_bytes += strlen(h) + 1;
  }
  bool ct = r->body && !own_ct;
  /* libcurl asks "Expect: 100-continue" (a round trip) before large bodies; an empty
     Expect header stops it. Below 1 KiB no libcurl version asks, so no header. */
  bool no_expect = r->body && r->body_len >= 1024;
  size_t id_len = strlen(r->event_id), method_len = strlen(method), url_len = strlen(r->url);
  size_t claim_len = r->claim_key ? strlen(r->claim_key) : 0;
  size_t nh = 1 + ct + no_expect + r->n_headers; /* idempotency key, [content type], [Expect], the caller's */
  size_t size = sizeof(esg__job) + nh * sizeof(struct curl_slist) + id_len + 1 + method_len + 1 + url_len + 1 +
                (r->claim_key ? claim_len + 1 : 0) + (r->body ? r->body_len + 1 : 0) +
                (r->event ? r->event_len + 1 : 0) + strlen(e->idem_header) + id_len + 3 +
                (ct ? strlen("Content-Type") + strlen(e->content_type) + 3 : 0) + hdr_bytes;
  esg__job *j = esg__malloc(size);
  if (!j) return esg__fail(&e->err, ESG_ENOMEM, "out of memory");
  memset(j, 0, sizeof *j);
  struct curl_slist *h = (struct curl_slist *)(j + 1);
  char *at = (char *)(h + nh);
  j->event_id = put(&at, r->event_id, id_len);
  j->method = put(&at, method, method_len);
  j->url = put(&at, r->url, url_len);
  j->claim_key = r->claim_key ? put(&at, r->claim_key, claim_len) : NULL;
  j->claim_token = r->claim_token;
  j->body = r->body ? put(&at, r->body, r->body_len) : NULL;
  j->body_len = r->body ? r->body_len : 0;
  j->event = r->event ? put(&at, r->event, r->event_len) : NULL;
  j->event_len = r->event ? r->event_len : 0;
  j->ud = r->ud;
  if (e->cp.failures && !(j->circuit = esg__circuit_for(&e->circuits, j->url))) {
    esg__free(j);
    return esg__fail(&e->err, ESG_ENOMEM, "out of memory");
  }
  size_t k = 0;
  h[k++].data = put_line(&at, e->idem_header, r->event_id);
  if (ct) h[k++].data = put_line(&at, "Content-Type", e->content_type);
  if (no_expect) h[k++].data = (char *)"Expect:";
  for (size_t i = 0; i < r->n_headers; i++) h[k++].data = put(&at, r->headers[i], strlen(r->headers[i]));
  for (size_t i = 0; i < nh; i++) h[i].next = i + 1 < nh ? &h[i + 1] : NULL;
  j->headers = h;
  *out = j;
  return ESG_OK;
}

/* A cleared lane with room for a key of len bytes: a spare one if it fits. */
static esg__lane_node *lane_new(esg_egress *e, size_t len) {
  esg__lane_node *n = e->spare;
  if (n && n->cap > len) {
    e->spare = n->next;
    e->n_spare--;
  } else {
    size_t cap = len < 48 ? 48 : len + 1;
    if (!(n = esg__malloc(sizeof *n + cap))) return NULL;
    n->cap = cap;
  }
  memset(&n->lane, 0, sizeof n->lane);
  n->prev = n->next = NULL;
  return n;
}

static void lane_free(esg_egress *e, esg__lane *l) {
  esg__lane_node *n = (esg__lane_node *)l;
  if (e->n_spare >= SPARE_LANES) {
    esg__free(n);
    return;
  }
  n->next = e->spare;
  e->spare = n;
  e->n_spare++;
}

/* Appends j to its key's lane (or a lane of its own); a lane that was empty becomes ready. */
static int enqueue(esg_egress *e, esg__job *j, const char *pkey) {
  esg__lane *l = NULL;
  uint64_t h = 0;
  bool keyed = pkey && *pkey;
  if (keyed) {
    h = esg__fnv1a(pkey);
    l = esg__lanes_find(&e->lanes, pkey, h);
  }
  if (l) {
    j->lane = l;
    l->tail->next = j;
    l->tail = j;
  } else {
    size_t len = keyed ? strlen(pkey) : 0;
    esg__lane_node *n = lane_new(e, len);
    if (!n) return esg__fail(&e->err, ESG_ENOMEM, "out of memory");
    l = &n->lane;
    if (keyed) {
      memcpy(n->key, pkey, len + 1);
      l->key = n->key;
      l->hash = h;
      if (esg__lanes_add(&e->lanes, l) != ESG_OK) {
        lane_free(e, l);
        return esg__fail(&e->err, ESG_ENOMEM, "out of memory");
      }
    }
    lane_link(e, l);
    j->lane = l;
    l->head = l->tail = j;
    l->state = ESG__LANE_READY;
    esg__ready_push(&e->ready, l);
  }
  e->jobs++;
  e->st.submitted++;
  return ESG_OK;
}

int esg_egress_submit(esg_egress *e, const esg_egress_request *req) {
  if (!e) return esg__fail(NULL, ESG_EINVAL, "egress is NULL");
  if (!req) return esg__fail(&e->err, ESG_EINVAL, "request is NULL");
  if (e->forks != esg__forks) return forked(e);
  if (e->store_closed) return esg__fail(&e->err, ESG_ESTATE, "the engine's store was closed");
  if (e->closing || e->close_pending) return esg__fail(&e->err, ESG_ESTATE, "the engine is closing");
  esg__job *j;
  int rc = make_job(e, req, &j);
  if (rc != ESG_OK) return rc;
  if ((rc = enqueue(e, j, req->partition_key)) != ESG_OK) job_free(j);
  return rc;
}

/* ------------------------------------------------------------ resubmit -- */

typedef struct fault_copy {
  char *event_id, *event;
  size_t event_len;
  int attempts;
  int64_t first;
  bool oom;
} fault_copy;

static int copy_fault(void *ud, const esg_fault *f) {
  fault_copy *c = ud;
  c->event_id = esg__strdup(f->event_id);
  c->event = f->event ? dupmem(f->event, f->event_len) : NULL;
  c->event_len = f->event ? f->event_len : 0;
  c->attempts = f->attempts;
  c->first = f->first_attempt;
  c->oom = !c->event_id || (f->event && !c->event);
  return 0;
}

int esg_egress_resubmit(esg_egress *e, int64_t fault_id, const esg_egress_request *tmpl) {
  if (!e) return esg__fail(NULL, ESG_EINVAL, "egress is NULL");
  if (!tmpl) return esg__fail(&e->err, ESG_EINVAL, "request template is NULL");
  if (e->forks != esg__forks) return forked(e);
  if (e->store_closed) return esg__fail(&e->err, ESG_ESTATE, "the engine's store was closed");
  if (!e->store) return esg__fail(&e->err, ESG_EINVAL, "the engine has no store to read faults from");
  if (e->closing || e->close_pending) return esg__fail(&e->err, ESG_ESTATE, "the engine is closing");
  fault_copy c = {0};
  int rc = esg_fault_get(e->store, fault_id, copy_fault, &c);
  if (rc != ESG_OK) {
    esg__fail(&e->err, rc, "fault %lld: %s", (long long)fault_id, esg_errmsg(e->store));
  } else if (c.oom) {
    rc = esg__fail(&e->err, ESG_ENOMEM, "out of memory");
  } else if (tmpl->event_id && strcmp(tmpl->event_id, c.event_id) != 0) {
    rc = esg__fail(&e->err, ESG_EINVAL, "fault %lld is for event \"%s\", not \"%s\"", (long long)fault_id,
                   c.event_id, tmpl->event_id);
  } else {
    esg_egress_request r = *tmpl;
    r.event_id = c.event_id;
    if (!r.body) {
      r.body = c.event;
      r.body_len = c.event_len;
    }
    r.event = c.event;
    r.event_len = c.event_len;
    esg_event *ev = NULL;
    int prc = !r.partition_key && c.event ? esg_event_parse(c.event, c.event_len, &ev) : ESG_OK;
    if (ev) r.partition_key = esg_event_partition_key(ev);
    esg__job *j;
    if (prc == ESG_ENOMEM) { /* without its partition key it would overtake its key's deliveries */
      rc = esg__fail(&e->err, ESG_ENOMEM, "out of memory reading the event of fault %lld", (long long)fault_id);
    } else if ((rc = make_job(e, &r, &j)) == ESG_OK) {
      j->fault_id = fault_id;
      j->prior_attempts = c.attempts;
      j->prior_first = c.first;
      if ((rc = enqueue(e, j, r.partition_key)) != ESG_OK) job_free(j);
    }
    esg_event_free(ev);
  }
  esg__free(c.event_id);
  esg__free(c.event);
  return rc;
}

/* ------------------------------------------------------------- sending -- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  esg__slot *s = ud;
  size_t len = size * n, keep = len;
  if (s->resp_len + keep > s->resp_max) keep = s->resp_max - s->resp_len;
  if (keep) {
    if (s->resp_len + keep > s->resp_cap) {
      size_t cap = s->resp_cap ? s->resp_cap : 1024;
      while (cap < s->resp_len + keep) cap *= 2;
      char *b = esg__realloc(s->resp, cap);
      if (!b) return 0; /* curl fails the attempt with a write error; it retries */
      s->resp = b;
      s->resp_cap = cap;
    }
    memcpy(s->resp + s->resp_len, p, keep);
    s->resp_len += keep;
  }
  return len; /* what is beyond the cap is read and dropped */
}

static int start(esg_egress *e, esg__job *j, int64_t now) {
  esg__slot *s = e->free_slots;
  e->free_slots = s->next_free;
  CURL *h = s->easy;
  s->job = j;
  s->resp_len = 0;
  s->errbuf[0] = '\0';
  bool plain_post = strcmp(j->method, "POST") == 0;
  if (!(plain_post && s->plain_post)) {
    /* the common case (POST after POST) keeps the handle's settings; others start clean */
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)e->connect_timeout);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)e->timeout);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_PRIVATE, s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf);
    esg__free(s->url);
    s->url = NULL;
  }
  s->plain_post = plain_post;
  if (!s->url || strcmp(s->url, j->url) != 0) {
    /* Most deliveries go where the previous one went. Handing libcurl the URL parsed
       (CURLOPT_CURLU) spares it parsing and normalising the string on every transfer;
       a URL our parse refuses goes as a string, for libcurl to fail as it would. */
    esg__free(s->url);
    s->url = NULL;
    set_proxy(e, h, j->url);
    if (!s->uh) s->uh = curl_url();
    bool parsed =
        s->uh && curl_url_set(s->uh, CURLUPART_URL, j->url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK;
    curl_easy_setopt(h, CURLOPT_CURLU, parsed ? s->uh : NULL);
    curl_easy_setopt(h, CURLOPT_URL, parsed ? NULL : j->url);
    if (parsed) s->url = esg__strdup(j->url); /* kept only for a parsed URL; NULL: set again next time */
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, j->headers);
  if (strcmp(j->method, "GET") == 0 && !j->body) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(j->method, "HEAD") == 0 && !j->body) {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, j->body ? j->body : "");
    if (!plain_post) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, j->method);
  }
  j->attempts++;
  if (j->attempts == 1) j->first_at = now;
  j->last_at = now;
  e->st.attempts++;
  CURLMcode mc = curl_multi_add_handle(e->multi, h);
  if (mc != CURLM_OK) {
    s->job = NULL;
    s->next_free = e->free_slots;
    e->free_slots = s;
    snprintf(j->error, sizeof j->error, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    return ESG_EIO;
  }
  e->st.in_flight++;
  j->lane->state = ESG__LANE_FLIGHT;
  return ESG_OK;
}

/* Takes a token if one is there; else *wait_ms gets how long until one is. */
static bool take_token(esg_egress *e, int64_t now, int64_t *wait_ms) {
  if (e->rate <= 0) return true;
  if (now > e->tokens_at) {
    e->tokens += (double)(now - e->tokens_at) * e->rate / 1000.0;
    if (e->tokens > e->burst) e->tokens = e->burst;
    e->tokens_at = now;
  }
  if (e->tokens >= 1.0) {
    e->tokens -= 1.0;
    return true;
  }
  *wait_ms = (int64_t)ceil((1.0 - e->tokens) * 1000.0 / e->rate);
  if (*wait_ms < 1) *wait_ms = 1;
  return false;
}

/* Moves due retries to the ready list and starts what slots and tokens allow.
   *wait_ms (if something must wait for a token or a backoff) gets how long. */
/* A ready lane whose head's host has an open circuit waits for it (without an attempt),
   or ends exhausted when that would take it past its time limit. True when it was
   taken off the ready list so. */
static bool circuit_defers(esg_egress *e, esg__lane *l, int64_t now) {
  esg__job *j = l->head;
  int64_t until;
  if (esg__circuit_allows(j->circuit, now, &until)) return false;
  esg__ready_pop(&e->ready);
  if (!j->submitted_at) j->submitted_at = now; /* submit does not read the clock (it may be a callback) */
  int64_t start = j->attempts ? j->first_at : j->submitted_at;
  if (until > esg__time_add(start, e->max_elapsed)) {
    snprintf(j->error, sizeof j->error, "the circuit for %.150s is open (time limit %lld ms)",
             esg__circuit_host(j->circuit), (long long)e->max_elapsed);
    finish(e, j, ESG_EGRESS_EXHAUSTED, NULL);
    return true;
  }
  j->next_at = until;
  l->state = ESG__LANE_WAIT;
  if (esg__heap_push(&e->heap, l) != ESG_OK) {
    snprintf(j->error, sizeof j->error, "out of memory waiting for the circuit of %.150s", esg__circuit_host(j->circuit));
    finish(e, j, ESG_EGRESS_EXHAUSTED, NULL);
  }
  return true;
}

static void pump(esg_egress *e, int64_t *wait_ms) {
  int64_t now = now_of(e);
  esg__lane *top;
  while ((top = esg__heap_top(&e->heap)) && top->head->next_at <= now) {
    esg__heap_pop(&e->heap);
    top->state = ESG__LANE_READY;
    esg__ready_push(&e->ready, top);
  }
  while (e->free_slots && e->ready.head) {
    int64_t w;
    if (e->cp.failures && circuit_defers(e, e->ready.head, now)) continue;
    if (!take_token(e, now, &w)) {
      if (w < *wait_ms) *wait_ms = w;
      break;
    }
    esg__lane *l = esg__ready_pop(&e->ready);
    esg__job *j = l->head;
    if (j->attempts > 0 && e->lease > 0 && j->claim_key && e->store) {
      int rc = esg_claim_extend(e->store, j->claim_key, j->claim_token, e->lease);
      if (rc == ESG_ETOKEN) {
        snprintf(j->error, sizeof j->error, "cancelled: claim \"%.200s\" was taken over by another worker",
                 j->claim_key);
        j->claim_key = NULL; /* not ours to release any more */
        finish(e, j, ESG_EGRESS_CANCELLED, NULL);
        continue;
      }
    }
    if (start(e, j, now) != ESG_OK) finish(e, j, ESG_EGRESS_REFUSED, NULL);
  }
  if ((top = esg__heap_top(&e->heap))) {
    int64_t w = top->head->next_at - now;
    if (w < *wait_ms) *wait_ms = w < 0 ? 0 : w;
  }
}

/* ----------------------------------------------------------- finishing -- */

/*
 * Writes the result a delivery completes its claim with, and returns its length:
 * {"status":N,"sha256":"<hex of the body>"}, or {"status":N} for an answer without a
 * body (204, most 202s), whose digest would say nothing. Every byte of it is stored
 * in the claim row: the short form costs the store a fifth less work per delivery.
 */
static size_t delivered_result(char out[200], int status, const void *body, size_t len) {
  static const char head[] = "{\"status\":", mid[] = ",\"sha256\":\"", tail[] = "\"}";
  char *o = out;
  memcpy(o, head, sizeof head - 1);
  o += sizeof head - 1;
  char digits[12];
  int nd = 0;
  unsigned v = status < 0 ? 0 : (unsigned)status;
  do digits[nd++] = (char)('0' + v % 10);
  while ((v /= 10) && nd < 11);
  while (nd) *o++ = digits[--nd];
  if (!len) {
    memcpy(o, "}", 2);
    return (size_t)(o - out) + 1;
  }
  memcpy(o, mid, sizeof mid - 1);
  o += sizeof mid - 1;
  uint8_t d[32];
  esg_sha256(body, len, d);
  esg_hex(d, 32, o);
  o += 64;
  memcpy(o, tail, sizeof tail); /* with its NUL */
  return (size_t)(o - out) + sizeof tail - 1;
}

/* Keeps the first failure among the store calls that finish a delivery, with its text:
   the callback's store_rc and store_error report it. A fault already gone is fine. */
static void store_step(esg_egress *e, esg_egress_result *r, int rc, const char *what) {
  if (rc == ESG_OK || (rc == ESG_NOT_FOUND && strcmp(what, "deleting the earlier fault") == 0)) return;
  if (r->store_rc != ESG_OK) return;
  r->store_rc = rc;
  snprintf(e->store_msg, sizeof e->store_msg, "%s: %s", what,
           rc == ESG_ETOKEN ? "the claim is no longer this delivery's" : esg_errmsg(e->store));
  r->store_error = e->store_msg;
}

static void finish(esg_egress *e, esg__job *j, esg_egress_outcome outcome, const esg__slot *slot) {
  esg_egress_result r = {0};
  r.store_error = "";
  r.event_id = j->event_id;
  r.outcome = outcome;
  r.http_status = j->http_status;
  r.attempts = j->prior_attempts + j->attempts;
  r.first_attempt = j->prior_first ? j->prior_first : j->first_at;
  r.last_attempt = j->last_at;
  r.error = outcome == ESG_EGRESS_DELIVERED ? "" : j->error;
  r.request_ud = j->ud;
  if (slot) {
    r.body = slot->resp;
    r.body_len = slot->resp_len;
  }
  char result[200];
  if (outcome == ESG_EGRESS_DELIVERED) {
    e->st.delivered++;
    store_step(e, &r, j->complete_rc, "completing the claim"); /* reap completed it (complete_round) */
    if (e->store && j->fault_id) store_step(e, &r, esg_fault_delete(e->store, j->fault_id), "deleting the earlier fault");
  } else if (outcome == ESG_EGRESS_REFUSED || outcome == ESG_EGRESS_EXHAUSTED) {
    e->st.faulted++;
    if (e->store) {
      esg_fault f = {0};
      f.event_id = j->event_id;
      f.stage = "deliver";
      f.error = j->error[0] ? j->error : esg_egress_outcome_name(outcome);
      f.http_status = j->http_status;
      f.attempts = r.attempts;
      f.first_attempt = r.first_attempt ? r.first_attempt : r.last_attempt;
      f.last_attempt = r.last_attempt;
      f.event = j->event ? j->event : j->body;
      f.event_len = j->event ? j->event_len : j->body_len;
      int frc = esg_fault_record(e->store, &f, &r.fault_id);
      store_step(e, &r, frc, "recording the fault");
      if (frc == ESG_OK && j->fault_id)
        store_step(e, &r, esg_fault_delete(e->store, j->fault_id), "deleting the earlier fault");
      if (j->claim_key) {
        if (e->complete_on_fault && frc == ESG_OK) {
          int n = snprintf(result, sizeof result, "{\"status\":\"fault\",\"fault\":%lld,\"http_status\":%d}", (long long)r.fault_id,
                           j->http_status);
          store_step(e, &r, esg_complete(e->store, j->claim_key, j->claim_token, result, (size_t)n),
                     "completing the claim with the fault");
        } else {
          store_step(e, &r, esg_release(e->store, j->claim_key, j->claim_token), "releasing the claim");
        }
      }
    }
  } else {
    e->st.cancelled++;
    if (e->store && j->claim_key)
      store_step(e, &r, esg_release(e->store, j->claim_key, j->claim_token), "releasing the claim");
  }
  /* the claim is settled: nothing may complete or release it again */
  j->claim_key = NULL;
  e->jobs--;
  if (e->on_done) {
    bool was = e->in_callback;
    e->in_callback = true;
    if (e->store) ESG__COUNTED(e->store, e->on_done(e->ud, &r));
    else e->on_done(e->ud, &r);
    e->in_callback = was;
  }
  if (e->closing) return; /* close unlinks and frees the lanes itself */
  esg__lane *l = j->lane;
  l->head = j->next;
  job_free(j);
  if (l->head) {
    l->state = ESG__LANE_READY;
    esg__ready_push(&e->ready, l);
  } else {
    if (l->key) esg__lanes_remove(&e->lanes, l);
    lane_unlink(e, l);
    lane_free(e, l);
  }
}

/*
 * Completes the claims of the round's delivered transfers in one store batch,
 * before their outcomes are settled one by one (finish reports what the batch
 * said): the store's cost per statement is paid once per round, not per delivery.
 */
static bool delivered(const esg__slot *s) { return s->cc == CURLE_OK && s->status >= 200 && s->status < 300; }

/* Whether a finished transfer completes a claim: delivered, with a claim and a store. */
static bool completes(const esg_egress *e, const esg__slot *s) {
  return e->store && s->job->claim_key && delivered(s);
}

static void complete_round(esg_egress *e, int n) {
  size_t k = 0;
  for (int i = 0; i < n; i++) {
    esg__slot *s = e->round[i];
    if (!completes(e, s)) continue;
    esg__completion *c = &e->batch[k++];
    c->key = s->job->claim_key;
    c->token = s->job->claim_token;
    c->result = s->result;
    c->len = delivered_result(s->result, (int)s->status, s->resp, s->resp_len);
  }
  if (!k) return;
  esg__complete_batch(e->store, e->batch, k);
  for (int i = 0, b = 0; i < n; i++)
    if (completes(e, e->round[i])) e->round[i]->job->complete_rc = e->batch[b++].rc;
}

/* The policy applied to one finished attempt. */
static void settle(esg_egress *e, esg__slot *s) {
  esg__job *j = s->job;
  CURL *h = s->easy;
  CURLcode cc = s->cc;
  long status = s->status;
  long connects = 0;
  curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
  e->st.connects += (uint64_t)connects;
  j->http_status = cc == CURLE_OK ? (int)status : 0;
  if (j->circuit)
    esg__circuit_result(j->circuit, !delivered(s) && esg_egress_retryable((int)cc, (int)status), &e->cp, now_of(e),
                        &e->st.circuits_open, &e->st.circuit_opens);
  if (delivered(s)) {
    finish(e, j, ESG_EGRESS_DELIVERED, s);
    return;
  }
  int64_t now = now_of(e);
  char why[200];
  if (cc != CURLE_OK)
    snprintf(why, sizeof why, "%s%s%.120s", curl_easy_strerror(cc), s->errbuf[0] ? ": " : "", s->errbuf);
  else
    snprintf(why, sizeof why, "HTTP %ld", status);
  int total = j->prior_attempts + j->attempts;
  if (!esg_egress_retryable((int)cc, (int)status)) {
    snprintf(j->error, sizeof j->error, "%s (attempt %d, not retryable)", why, total);
    finish(e, j, ESG_EGRESS_REFUSED, s);
    return;
  }
  if (j->attempts >= e->max_attempts) {
    snprintf(j->error, sizeof j->error, "%s after %d attempts", why, total);
    finish(e, j, ESG_EGRESS_EXHAUSTED, s);
    return;
  }
  int64_t delay = -1;
  struct curl_header *ra = NULL;
  if (cc == CURLE_OK && curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &ra) == CURLHE_OK &&
      esg_egress_parse_retry_after(ra->value, now, &delay) == ESG_OK) {
    if (esg__time_add(now, delay) > esg__time_add(j->first_at, e->max_elapsed)) {
      snprintf(j->error, sizeof j->error, "%s with Retry-After %lld ms beyond the %lld ms limit (attempt %d)", why,
               (long long)delay, (long long)e->max_elapsed, total);
      finish(e, j, ESG_EGRESS_EXHAUSTED, s);
      return;
    }
  } else {
    delay = esg__backoff(&e->rng, j->attempts, e->base, e->cap);
  }
  if (esg__time_add(now, delay) > esg__time_add(j->first_at, e->max_elapsed)) {
    snprintf(j->error, sizeof j->error, "%s after %d attempts (time limit %lld ms)", why, total,
             (long long)e->max_elapsed);
    finish(e, j, ESG_EGRESS_EXHAUSTED, s);
    return;
  }
  snprintf(j->error, sizeof j->error, "%s", why);
  j->next_at = esg__time_add(now, delay);
  e->st.retried++;
  if (e->on_retry) {
    bool was = e->in_callback;
    e->in_callback = true;
    if (e->store) ESG__COUNTED(e->store, e->on_retry(e->ud, j->event_id, j->attempts, j->http_status, delay, why));
    else e->on_retry(e->ud, j->event_id, j->attempts, j->http_status, delay, why);
    e->in_callback = was;
  }
  esg__lane *l = j->lane;
  l->state = ESG__LANE_WAIT;
  if (esg__heap_push(&e->heap, l) != ESG_OK) {
    snprintf(j->error, sizeof j->error, "%s; out of memory scheduling the retry", why);
    finish(e, j, ESG_EGRESS_EXHAUSTED, s);
  }
}

/* Handles every finished transfer; returns how many. */
static int reap(esg_egress *e) {
  int n = 0, left;
  CURLMsg *m;
  while ((m = curl_multi_info_read(e->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    esg__slot *s = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
    s->cc = m->data.result;
    s->status = 0;
    curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &s->status);
    curl_multi_remove_handle(e->multi, m->easy_handle); /* m is invalid from here */
    e->st.in_flight--;
    e->round[n++] = s;
  }
  complete_round(e, n);
  for (int i = 0; i < n; i++) {
    esg__slot *s = e->round[i];
    settle(e, s);
    s->job = NULL;
    s->next_free = e->free_slots;
    e->free_slots = s;
  }
  return n;
}

int esg_egress_run(esg_egress *e, int timeout_ms) {
  if (!e) return esg__fail(NULL, ESG_EINVAL, "egress is NULL");
  if (e->forks != esg__forks) return forked(e);
  if (e->in_callback || e->running || e->closing)
    return esg__fail(&e->err, ESG_ESTATE, "esg_egress_run called from a callback");
  e->running = true;
  int64_t until = timeout_ms >= 0 ? mono_ms() + timeout_ms : INT64_MAX;
  int rc = ESG_OK;
  for (;;) {
    int64_t wait = 1000;
    pump(e, &wait);
    int running;
    curl_multi_perform(e->multi, &running);
    int done = reap(e);
    if (e->jobs == 0 || e->close_pending) break;
    int64_t left = until == INT64_MAX ? INT64_MAX : until - mono_ms();
    if (left <= 0) {
      rc = ESG_BUSY;
      break;
    }
    if (done) continue; /* their lanes may go on at once */
    if (wait > left) wait = left;
    if (wait > 0) curl_multi_poll(e->multi, NULL, 0, (int)wait, NULL);
  }
  e->running = false;
  if (e->close_pending) {
    esg_egress_close(e); /* as the callback asked; the handle is gone */
    return ESG_OK;
  }
  return rc;
}

int esg_egress_drain(esg_egress *e) { return esg_egress_run(e, -1); }

int esg__egress_wait(esg_egress *e, int fd, int timeout_ms) {
  if (e->forks != esg__forks) return forked(e);
  if (e->in_callback || e->running || e->closing)
    return esg__fail(&e->err, ESG_ESTATE, "esg_egress_run called from a callback");
  e->running = true;
  int running;
  for (int turn = 0; turn < 2; turn++) {
    int64_t wait = timeout_ms;
    pump(e, &wait);
    curl_multi_perform(e->multi, &running);
    int done = reap(e);
    if (turn || done || e->jobs == 0 || e->close_pending || wait <= 0) break;
    struct curl_waitfd w = {fd, CURL_WAIT_POLLIN, 0};
    int n = 0;
    curl_multi_poll(e->multi, fd >= 0 ? &w : NULL, fd >= 0 ? 1 : 0, (int)wait, &n);
    if (fd >= 0 && (w.revents & CURL_WAIT_POLLIN)) {
      curl_multi_perform(e->multi, &running); /* what came meanwhile, without waiting again */
      reap(e);
      break;
    }
  }
  e->running = false;
  if (e->close_pending) esg_egress_close(e);
  return ESG_OK;
}

size_t esg__egress_jobs(const esg_egress *e) { return (size_t)e->jobs; }

void esg_egress_get_stats(const esg_egress *e, esg_egress_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!e) return;
  *out = e->st;
  out->queued = (uint32_t)(e->jobs - e->st.in_flight);
}
