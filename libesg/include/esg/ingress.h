/*
 * The HTTP ingress: webhooks received over HTTP as a source of esg_gateway
 * (docs/serve.md). A route verifies each request (Standard Webhooks v1), makes it an
 * envelope with a deterministic id, and the gateway runs it through its pipeline as it
 * runs JSON lines: claim, latch, transform, sink. The answer follows the event:
 *
 *   2xx  only once the event is durably stored (with group commit: once its group has
 *        committed); a duplicate gets 200 without running the steps again;
 *   401  forged or stale signature;  400 malformed;  413 body over the limit;
 *   409  a webhook id reused with another body;
 *   503  with Retry-After: the queue to the gateway is full, or the store failed.
 *
 * The server (libmicrohttpd) runs on a thread of its own; requests reach the gateway's
 * thread through a bounded queue, and the gateway's thread decides every answer.
 */
#ifndef ESG_INGRESS_H
#define ESG_INGRESS_H

#include "esg/common.h"
#include "esg/gateway.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct esg_ingress esg_ingress;

/** How a route verifies its requests. */
typedef enum esg_ingress_scheme {
  ESG_INGRESS_STANDARD_WEBHOOKS = 0 /* webhook-id, webhook-timestamp, webhook-signature (v1) */
} esg_ingress_scheme;

/** One route: start from ESG_INGRESS_ROUTE_INIT; zero fields mean the defaults. Copied by esg_ingress_route_add. */
typedef struct esg_ingress_route {
  size_t size;                   /* sizeof(esg_ingress_route): start from ESG_INGRESS_ROUTE_INIT */
  const char *path;              /* required: the exact path, e.g. "/hooks/acme"; POST only */
  const char *source;            /* the source's name: event ids are "SOURCE:WEBHOOK-ID" (1 to 256
                                    bytes, no ':'); NULL = the path without its leading '/' */
  esg_ingress_scheme scheme;
  const char *const *secrets;    /* required: the accepted secrets (several during a rotation) */
  size_t n_secrets;
  int64_t tolerance_s;           /* of the webhook-timestamp, either way; 0 = 300 */
  const char *type;              /* the envelope's type when the body has no "type" string;
                                    NULL = "webhook-received" */
} esg_ingress_route;
#define ESG_INGRESS_ROUTE_INIT {.size = sizeof(esg_ingress_route)}

/** Options for esg_ingress_open: start from ESG_INGRESS_OPTS_INIT; zero fields mean the defaults. */
typedef struct esg_ingress_opts {
  size_t size;                   /* sizeof(esg_ingress_opts): start from ESG_INGRESS_OPTS_INIT */
  const char *listen;            /* "ADDRESS:PORT" (IPv4), port 0 = any free one (esg_ingress_port);
                                    NULL = "127.0.0.1:8080" */
  size_t header_max;             /* bytes of request line and headers; 0 = 16 KiB */
  size_t body_max;               /* bytes of a body; 0 = 256 KiB, at most ESG_INGRESS_BODY_MAX (a body
                                    whose envelope would pass ESG_EVENT_MAX_BYTES is refused too: 413) */
  unsigned connections_max;      /* connections at once; 0 = 256 */
  int request_timeout_ms;        /* a connection has this long to send each whole request (from its
                                    start or its previous answer): slower ones are cut; 0 = 10000 */
  unsigned queue_max;            /* requests waiting for the gateway; more: 503; 0 = 1024 */
  size_t queue_bytes_max;        /* and the bytes of their envelopes; more: 503; 0 = 64 MiB */
  int retry_after_s;             /* the Retry-After of a 503; 0 = 1 */
  int no_keepalive;              /* non-zero: every answer closes its connection */
  esg_clock_fn clock;            /* the webhook timestamps' clock; NULL = esg_clock_real */
  void *clock_ud;
} esg_ingress_opts;
#define ESG_INGRESS_OPTS_INIT {.size = sizeof(esg_ingress_opts)}

/** The largest body_max: room for the envelope around the body within ESG_EVENT_MAX_BYTES. */
#define ESG_INGRESS_BODY_MAX (ESG_EVENT_MAX_BYTES - 16 * 1024)

/**
 * Opens an ingress for gateway g (borrowed: close the ingress first), not yet listening:
 * add routes, then start. On failure *out is NULL and esg_errmsg(NULL) says why;
 * ESG_ESTATE when libesg was built without libmicrohttpd.
 */
ESG_API int esg_ingress_open(esg_ingress **out, esg_gateway *g, const esg_ingress_opts *opts);

/** Adds a route before esg_ingress_start (its strings copied). ESG_OK, ESG_EINVAL, ESG_ESTATE (started). */
ESG_API int esg_ingress_route_add(esg_ingress *ing, const esg_ingress_route *route);

/**
 * Listens and starts the server thread. Requests are answered (2xx or not) only while
 * esg_gateway_run runs the ingress's source; until then they wait in the queue.
 * ESG_OK, or ESG_EIO (cannot listen: the text says why), ESG_EINVAL, ESG_ESTATE.
 */
ESG_API int esg_ingress_start(esg_ingress *ing);

/** The port it listens on (after start; 0 before). */
ESG_API int esg_ingress_port(const esg_ingress *ing);

/**
 * The gateway source of the ingress, for esg_gateway_run on the gateway it was opened
 * with: each request is an event; the run returns once esg_ingress_stop was called and
 * every request taken was answered. Its close is NULL (esg_ingress_close frees it all).
 */
ESG_API int esg_ingress_source(esg_ingress *ing, esg_gateway_source *out);

/**
 * Graceful stop, from any thread or a signal handler (async-signal-safe): stops
 * accepting connections, refuses new requests (503, Connection: close), finishes those
 * already queued, commits, answers them, and lets esg_gateway_run return ESG_OK.
 */
ESG_API void esg_ingress_stop(esg_ingress *ing);

/**
 * Stops the server: what was never answered (the run ended early) gets 503, every
 * connection is closed, and the thread joined. ESG_OK. NULL is fine. Not while
 * esg_gateway_run runs its source.
 */
ESG_API int esg_ingress_close(esg_ingress *ing);

#ifdef __cplusplus
}
#endif
#endif
