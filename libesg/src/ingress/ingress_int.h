/*
 * What the ingress's files share. Two threads: the server thread runs libmicrohttpd
 * (ingress_http.c: every MHD callback, the cut of slow connections, /healthz and
 * /metrics) and the gateway's thread runs the source (ingress_source.c: takes requests
 * from the queue, runs them, commits, decides their answers). They meet in the queue
 * and the counters, under mu; a request's answer is written by the gateway's thread
 * before it resumes the request's connection, and read by the server thread after.
 *
 * Why this split: the gateway's loop owns timing and the store is one handle of one
 * thread, so every store call stays on the gateway's thread; the server thread keeps
 * reading, verifying and answering (503 when the queue is full, /healthz) while that
 * thread waits for a commit or a locked store, and verification (HMAC) runs beside the
 * pipeline on the second core. External-poll mode on a thread of our own, rather than
 * MHD's internal thread, so the cut of slow connections runs between MHD's turns, on
 * its thread, where a connection's socket cannot be closed under it.
 */
#ifndef ESG_INGRESS_INT_H
#define ESG_INGRESS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include "core/internal.h"
#include "esg/ingress.h"

struct MHD_Daemon;
struct MHD_Connection;

typedef struct esg__route {
  char *path, *source, *type;
  char **secrets;
  size_t n_secrets;
  int64_t tolerance_s;
} esg__route;

/* A connection as the cut of slow clients sees it (server thread only). */
typedef struct esg__conn {
  struct esg__conn *prev, *next;
  int fd;
  int64_t deadline_us;           /* monotonic; 0 = none (its request is with the gateway) */
} esg__conn;

/* Room for an answer: its status words and the event id (source and webhook id, each
   at most ESG__NAME_MAX bytes, as a JSON string: up to 6 bytes per byte escaped). */
#define ESG__NAME_MAX 256
#define ESG__ANSWER_MAX (6 * (2 * ESG__NAME_MAX + 1) + 128)

/* One request, from its headers to its answer. Freed by the server thread when MHD
   says the request is over, which cannot happen while its connection is suspended,
   that is while the gateway's thread holds it. */
typedef struct esg__req {
  struct esg__req *next;         /* in the queue or the list waiting for a commit */
  struct MHD_Connection *c;
  esg__conn *cn;
  const esg__route *route;
  int64_t t0_us;                 /* headers read (monotonic): the latency's start */
  esg__buf body;
  bool too_big;
  bool endpoint;                 /* /healthz or /metrics: answered once the request is read */
  bool suspended;                /* with the gateway (queued, running, waiting for a commit) */
  char *env;                     /* the envelope */
  size_t env_len;
  uint8_t hash[32];              /* SHA-256 of the body: the payload the webhook id is claimed with */
  char *id_json;                 /* the event id as a JSON string (quotes included), for the answer */
  /* the answer */
  int status;                    /* 0 until decided */
  char answer[ESG__ANSWER_MAX];  /* the body of the answer (JSON) */
  bool retry_after;
  bool close;                    /* Connection: close */
} esg__req;

/* Latency buckets of /metrics, in seconds (and +Inf). */
#define ESG__LAT_BUCKETS 12

/* The statuses counted by /metrics. */
#define ESG__STATUSES(X) X(200) X(202) X(400) X(401) X(404) X(405) X(409) X(413) X(503)
enum {
#define ESG__ST_ENUM(code) ESG__ST_##code,
  ESG__STATUSES(ESG__ST_ENUM)
#undef ESG__ST_ENUM
  ESG__ST_OTHER,
  ESG__ST_N
};

struct esg_ingress {
  esg__err err;                  /* first: see esg__err */
  esg_ingress_opts o;
  esg_gateway *g;
  esg__route *routes;
  size_t n_routes;
  char *listen;
  struct MHD_Daemon *d;
  int port;
  pthread_t thread;
  bool started;
  atomic_bool quit;              /* the server thread ends */
  atomic_int stop;               /* esg_ingress_stop: no new requests */
  int wake;                      /* eventfd the gateway's loop polls: the queue got a request, or stop came */
  int swake;                     /* eventfd the server thread polls: an answer to send, or stop came */
  esg__conn conns;               /* ring of live connections (server thread) */
  bool quiesced;                 /* the listening socket closed (server thread) */

  pthread_mutex_t mu;            /* guards what follows */
  esg__req *qhead, *qtail;       /* waiting for the gateway */
  unsigned qlen;
  size_t qbytes;                 /* of their envelopes */
  bool closed;                   /* stopping and the queue was found empty: refuse the rest */
  unsigned answering;            /* answers decided, their requests not yet over */
  uint64_t by_status[ESG__ST_N];
  uint64_t lat[ESG__LAT_BUCKETS];
  double lat_sum;
  uint64_t lat_count, cut;
  esg_gateway_stats gst;         /* the gateway's counters as the source last saw them */
  unsigned waiting_seen;         /* answers waiting for a commit, as the source last saw */

  /* the gateway's thread only */
  esg__req *cur;                 /* the request the gateway runs now */
  uint64_t dup_before;           /* the duplicates counter before it */
  esg__req *whead, *wtail;       /* answered, waiting for the commit that makes them true */
  unsigned wlen;
  int64_t woldest_us;
};

/* Monotonic microseconds. */
int64_t esg__mono_us(void);

/* The server (ingress_http.c): starts and stops MHD and its thread. */
int esg__ingress_http_start(esg_ingress *ing);
void esg__ingress_http_stop(esg_ingress *ing);
/* Hands a request back to its connection with its answer (any thread; under no lock):
   the server thread sends it. */
void esg__ingress_answer(esg_ingress *ing, esg__req *r, int status, const char *answer, bool retry_after);

/* What the gateway never answered (its run ended early, or never ran): 503, and waits
   (a while) for the server to send those answers. Gateway's thread, or close. */
void esg__ingress_refuse_all(esg_ingress *ing);

/* The route's checks and the envelope (ingress_envelope.c), on the server thread: 0 with
   r->env, r->id_json and r->hash set, or an HTTP status with r->answer saying why. */
int esg__ingress_envelope(esg_ingress *ing, esg__req *r, const char *wid, const char *wts, const char *wsig,
                          const char *content_type);

/* /metrics' text (ingress_metrics.c), under mu; the caller frees it (esg__free). */
char *esg__ingress_metrics(esg_ingress *ing, unsigned connections, size_t *len);
/* Counts an answer sent: its status and latency (under mu). */
void esg__ingress_count(esg_ingress *ing, int status, int64_t latency_us);

#endif
