/*
 * HTTP egress: the delivery engine (libcurl multi interface underneath).
 *
 * Each delivery is one HTTP request for one event, sent with an idempotency-key
 * header that carries the event id, retried with exponential backoff and full
 * jitter (following Retry-After), kept in order per partition key while
 * different keys run in parallel, rate limited by a token bucket, and finished
 * in the store: success completes the event's claim, exhausted or refused
 * deliveries become fault records that can be resubmitted. See docs/egress.md.
 *
 * A handle is used by one thread at a time, like the store it works on.
 */
#ifndef ESG_EGRESS_H
#define ESG_EGRESS_H

#include "esg/cache.h"
#include "esg/common.h"
#include "esg/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A delivery engine. Opaque. */
typedef struct esg_egress esg_egress;

/** How a delivery ended. */
typedef enum esg_egress_outcome {
  ESG_EGRESS_DELIVERED = 0, /* a 2xx answer; the claim (if any) was completed */
  ESG_EGRESS_REFUSED = 1,   /* a permanent failure (a 4xx other than 408/425/429, a 3xx, a
                               malformed URL): no retry; a fault was recorded */
  ESG_EGRESS_EXHAUSTED = 2, /* retryable failures until the attempts or the total time ran
                               out (or Retry-After asked for longer): a fault was recorded */
  ESG_EGRESS_CANCELLED = 3  /* not finished: the engine was closed, or the claim was taken
                               over by another worker; no fault, the claim is released */
} esg_egress_outcome;

/** Static name of an outcome ("delivered", "refused", "exhausted", "cancelled"). Never NULL. */
ESG_API const char *esg_egress_outcome_name(int outcome);

/**
 * What the completion callback learns about one finished delivery. Every
 * pointer is valid only during the callback.
 */
typedef struct esg_egress_result {
  const char *event_id;
  esg_egress_outcome outcome;
  int http_status;         /* the last HTTP status; 0 when no answer came (network error) */
  int attempts;            /* HTTP attempts made (a resubmission counts the earlier ones too) */
  int64_t first_attempt;   /* engine clock, epoch ms */
  int64_t last_attempt;
  const char *error;       /* why it failed, "" when delivered */
  int64_t fault_id;        /* the fault recorded for it (REFUSED, EXHAUSTED), else 0 */
  int store_rc;            /* the first failure among the store calls that finished it
                              (completing the claim, recording the fault, deleting the fault
                              it resubmitted, releasing the claim): ESG_OK when all held,
                              ESG_ETOKEN when the claim was no longer this delivery's (taken
                              over), or the store error; see store_error */
  const void *body;        /* the response body, at most max_response_bytes of it */
  size_t body_len;
  void *request_ud;        /* esg_egress_request.ud */
  const char *store_error; /* what failed and the store's text when store_rc is not ESG_OK, else "" */
} esg_egress_result;

/** Called once per finished delivery, from inside esg_egress_run/drain/close. May call esg_egress_submit. */
typedef void (*esg_egress_done_fn)(void *ud, const esg_egress_result *r);

/**
 * Called each time a retry is scheduled: attempt is the attempt that just failed
 * (1-based), delay_ms the wait chosen before the next one (the jittered backoff,
 * or what Retry-After asked for), error the reason. For logging and tests.
 */
typedef void (*esg_egress_retry_fn)(void *ud, const char *event_id, int attempt, int http_status,
                                    int64_t delay_ms, const char *error);

/** Options for esg_egress_open: start from ESG_EGRESS_OPTS_INIT (or pass NULL); zero fields mean the defaults. */
typedef struct esg_egress_opts {
  size_t size;               /* sizeof(esg_egress_opts): start from ESG_EGRESS_OPTS_INIT */
  int max_in_flight;           /* requests on the wire at once; 0 = 16 */
  int max_attempts;            /* attempts per delivery, the first included; 0 = 5 */
  int64_t max_elapsed_ms;      /* no retry is scheduled later than this after the first attempt; 0 = 60000 */
  int64_t backoff_base_ms;     /* backoff before retry n is uniform in [0, min(cap, base * 2^(n-1))]; 0 = 100 */
  int64_t backoff_cap_ms;      /* 0 = 10000 */
  int64_t connect_timeout_ms;  /* per attempt; 0 = 5000 */
  int64_t timeout_ms;          /* per attempt, the whole exchange; 0 = 30000 */
  double rate_per_s;           /* token bucket: requests started per second (retries too); 0 = unlimited */
  int rate_burst;              /* bucket size; 0 = max(1, rate_per_s) */
  const char *idempotency_header; /* header carrying the event id; NULL = "Idempotency-Key" (copied) */
  const char *content_type;    /* sent with a body unless the request has its own; NULL = "application/json" (copied) */
  size_t max_response_bytes;   /* response body kept for the digest and the callback; 0 = 65536 */
  int64_t claim_lease_ms;      /* > 0: before each retry, extend the delivery's claim to now + this;
                                  if it was taken over, the delivery stops (CANCELLED) */
  int complete_on_fault;       /* non-zero: a faulted delivery completes its claim with the result
                                  {"status":"fault","fault":<id>,"http_status":N} (later duplicates see it) instead of releasing it */
  esg_clock_fn clock;          /* for backoff, Retry-After dates, rate limit and fault times;
                                  NULL = a monotonic clock anchored at the real time of open */
  void *clock_ud;
  uint64_t seed;               /* jitter RNG seed; 0 = random */
  esg_egress_done_fn on_done;  /* may be NULL */
  esg_egress_retry_fn on_retry;/* may be NULL */
  void *ud;                    /* passed to on_done and on_retry */
  /* The circuit breaker per destination host: after circuit_failures retryable failures
     in a row (network errors, 408, 425, 429, 5xx) no delivery to that host starts for
     circuit_open_ms (0 = 1000); its deliveries wait without using attempts. Then one
     delivery goes as the probe: success closes the circuit, failure opens it again for
     twice as long (at most max(circuit_open_ms, 60000)). A delivery that would wait
     past max_elapsed_ms (from its first attempt, or from when it first waited) ends EXHAUSTED
     naming the open circuit. 0 = no breaker. */
  int circuit_failures;
  int64_t circuit_open_ms;
} esg_egress_opts;
#define ESG_EGRESS_OPTS_INIT {.size = sizeof(esg_egress_opts)}

/**
 * One delivery. esg_egress_submit copies everything it needs; the caller keeps
 * ownership of its memory.
 */
typedef struct esg_egress_request {
  const char *event_id;        /* required: the idempotency key, and the fault's event id */
  const char *method;          /* NULL = "POST" */
  const char *url;             /* required */
  const char *const *headers;  /* n_headers lines "Name: value" (no CR/LF) */
  size_t n_headers;
  const void *body;            /* may be NULL */
  size_t body_len;
  const char *partition_key;   /* deliveries sharing it go one at a time, in submit order;
                                  NULL or "" = no ordering */
  const char *claim_key;       /* NULL = none; else the claim completed on success (result
                                  {"status":N,"sha256":"<hex of the response body>"}, or
                                  {"status":N} when the answer had no body) or released on failure */
  int64_t claim_token;
  const char *event;           /* the event JSON stored in a fault for resubmission; NULL = the body */
  size_t event_len;
  void *ud;                    /* handed back as esg_egress_result.request_ud */
} esg_egress_request;

/** Counters since open. */
typedef struct esg_egress_stats {
  uint64_t submitted;          /* accepted by submit/resubmit */
  uint64_t delivered;
  uint64_t retried;            /* retries scheduled */
  uint64_t faulted;            /* REFUSED + EXHAUSTED */
  uint64_t cancelled;
  uint64_t attempts;           /* HTTP requests started */
  uint64_t connects;           /* new connections opened (the rest reused a kept-alive one) */
  uint32_t in_flight;          /* requests on the wire now */
  uint32_t queued;             /* submitted, not finished, not on the wire (waiting their turn,
                                  a backoff, a token or an open circuit) */
  uint32_t circuits_open;      /* hosts whose circuit is open or half-open now */
  uint64_t circuit_opens;      /* times a circuit opened (a failed probe reopens it) */
} esg_egress_stats;

/**
 * Opens a delivery engine on store (which it borrows: close the engine first;
 * NULL = no store: claims and faults are then not written, the callback alone
 * reports outcomes). Calls curl_global_init once per process. On success *out is
 * the handle; on failure *out is NULL and the detail is in esg_errmsg(NULL).
 * Never blocks.
 */
ESG_API int esg_egress_open(esg_egress **out, esg_store *store, const esg_egress_opts *opts);

/**
 * Closes the engine: deliveries not finished end CANCELLED (their callbacks run
 * now; their claims are released, so another worker may take them over at once;
 * one on the wire may still reach the receiver, which dedupes by its key), then
 * frees everything. NULL is fine. From inside a callback of esg_egress_run the
 * close happens when that run ends its turn; run then returns ESG_OK and the
 * handle is gone.
 */
ESG_API void esg_egress_close(esg_egress *e);

/**
 * Queues one delivery (copying the request). ESG_OK, ESG_EINVAL (a missing or
 * malformed field, named in esg_errmsg(e)), ESG_ETOOBIG or ESG_ENOMEM. Sends
 * nothing by itself: esg_egress_run does. Never blocks.
 */
ESG_API int esg_egress_submit(esg_egress *e, const esg_egress_request *req);

/**
 * Resubmits the fault fault_id (from the engine's store) through delivery, keeping
 * the event id so the receiver dedupes. tmpl gives what the fault does not keep:
 * url (required), method, headers, partition_key (NULL = the event's
 * partitionKey), claim, ud; body NULL = the stored event. tmpl->event_id must be
 * NULL or the fault's. On success the fault is deleted; on failure a new fault
 * (attempts and first attempt carried over) replaces it. ESG_OK, ESG_NOT_FOUND,
 * ESG_EINVAL (no store, no url, an event-id mismatch), ESG_ENOMEM (nothing queued,
 * the fault kept), or a store error.
 * Blocks on the store only.
 */
ESG_API int esg_egress_resubmit(esg_egress *e, int64_t fault_id, const esg_egress_request *tmpl);

/**
 * Drives deliveries: sends, waits for answers, schedules retries and finishes
 * deliveries (store writes, callbacks) until nothing is left or timeout_ms of
 * real time has passed (0 = one pass without waiting, for an outside event loop;
 * negative = no limit). Returns ESG_OK when idle, ESG_BUSY when work remains,
 * ESG_ESTATE when called from inside a callback. Blocks up to timeout_ms.
 * With an injected clock that the caller moves, a backoff ends only when the
 * clock has moved past it.
 */
ESG_API int esg_egress_run(esg_egress *e, int timeout_ms);

/** esg_egress_run with no time limit: returns once every delivery has finished. Blocks. */
ESG_API int esg_egress_drain(esg_egress *e);

/** Copies the counters into *out. */
ESG_API void esg_egress_get_stats(const esg_egress *e, esg_egress_stats *out);

/**
 * The retry policy by itself (what the engine applies after a failed attempt),
 * for tests and for scripts that want to explain a decision.
 * curl_code is 0 when an HTTP answer came (then http_status is it), else a
 * libcurl error code. Returns 1 when the attempt should be retried, 0 when it
 * succeeded (2xx) or failed for good.
 */
ESG_API int esg_egress_retryable(int curl_code, int http_status);

/**
 * Parses a Retry-After value (delta seconds, or an HTTP-date in any of the three
 * HTTP forms) into a delay in ms from now_ms (epoch ms); a date in the past gives
 * 0. ESG_OK, or ESG_EINVAL when value is neither form.
 */
ESG_API int esg_egress_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms);

/* ------------------------------------------- HTTP loader for the cache -- */

/**
 * An HTTP GET loader for the enrichment cache (esg_cache_get_or_load): fetches a
 * JSON document per key, revalidates with ETag / If-None-Match (a 304 keeps the
 * value and refreshes its TTL), and reports 404 and 410 as "known absent".
 * Blocking (libcurl easy interface; one kept-alive connection per loader).
 * One thread at a time, like the cache that calls it.
 */
typedef struct esg_http_loader esg_http_loader;

/** Options for esg_http_loader_open: start from ESG_HTTP_LOADER_OPTS_INIT; zero fields mean the defaults. */
typedef struct esg_http_loader_opts {
  size_t size;               /* sizeof(esg_http_loader_opts): start from ESG_HTTP_LOADER_OPTS_INIT */
  const char *url;             /* required: "{key}" is replaced by the URL-escaped key;
                                  without it the escaped key is appended */
  const char *const *headers;  /* n_headers lines "Name: value" sent with every GET (copied) */
  size_t n_headers;
  int64_t connect_timeout_ms;  /* 0 = 5000 */
  int64_t timeout_ms;          /* per GET, further bounded by the cache's deadline; 0 = 10000 */
  int64_t ttl_ms;              /* freshness given to loaded values; 0 = the cache's ttl_ms */
  size_t max_body_bytes;       /* larger answers fail the load; 0 = ESG_EVENT_MAX_BYTES */
  size_t max_etags;            /* validators (ETag + body) remembered for revalidation; 0 = 10000 */
  esg_clock_fn clock;          /* must read like the cache's store clock (the deadline's
                                  clock); NULL = esg_clock_real */
  void *clock_ud;
} esg_http_loader_opts;
#define ESG_HTTP_LOADER_OPTS_INIT {.size = sizeof(esg_http_loader_opts)}

/**
 * Opens a loader. On failure *out is NULL and the detail is in esg_errmsg(NULL)
 * (ESG_EINVAL: no url, a bad header). Never blocks.
 */
ESG_API int esg_http_loader_open(esg_http_loader **out, const esg_http_loader_opts *opts);

/** Frees the loader and its remembered validators. NULL is fine. */
ESG_API void esg_http_loader_close(esg_http_loader *l);

/**
 * The esg_cache_loader: pass it with the loader as ud to esg_cache_get_or_load.
 * 2xx: the body is the value (ESG_OK); 304: the remembered body again, fresh
 * again (ESG_OK); 404/410: ESG_NOT_FOUND; anything else (other statuses, network
 * errors, a deadline already passed): ESG_ECALLBACK or ESG_ETIMEDOUT, with the
 * reason given to the cache (esg_errmsg on the cache names it); a body over
 * max_body_bytes: ESG_ETOOBIG; out of memory: ESG_ENOMEM. Blocks on HTTP.
 */
ESG_API int esg_http_loader_load(void *loader, const char *key, int64_t deadline, esg_cache_load *ld);

/** Counters: GETs sent, 304 answers, 404/410 answers, failures. Any pointer may be NULL. */
ESG_API void esg_http_loader_counts(const esg_http_loader *l, uint64_t *requests, uint64_t *not_modified,
                                    uint64_t *absent, uint64_t *failed);

#ifdef __cplusplus
}
#endif
#endif
