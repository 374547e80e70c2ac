/*
 * What the egress files share: a delivery (job), its lane (the per-partition-key
 * queue that keeps deliveries of one key in order), the lane table and the timer
 * heap (egress_queue.c), and the retry policy helpers (egress_retry.c).
 * Nothing here is public; see esg/egress.h for the contract.
 */
#ifndef ESG_EGRESS_INT_H
#define ESG_EGRESS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esg/egress.h"

struct curl_slist;
struct esg__lane;

/* One delivery, from submit to its outcome. Owns every pointer. */
typedef struct esg__job {
  struct esg__job *next;        /* next in its lane */
  struct esg__lane *lane;
  char *event_id, *method, *url, *claim_key;
  int64_t claim_token;
  struct curl_slist *headers;   /* idempotency key, content type, the caller's */
  char *body;
  size_t body_len;
  char *event;                  /* NULL: the body is the event */
  size_t event_len;
  void *ud;
  int64_t fault_id;             /* a resubmission of this fault */
  int prior_attempts;           /* attempts of the fault it resubmits */
  int64_t prior_first;
  int attempts;
  int64_t first_at, last_at, next_at;
  int http_status;
  int complete_rc;              /* how complete_round completed its claim (ESG_OK when none) */
  struct esg__circuit *circuit; /* its host's, when the breaker is on */
  int64_t submitted_at;         /* when it first waited for an open circuit (0: never) */
  char error[256];
} esg__job;

/* Where a lane is. */
enum { ESG__LANE_READY = 1, ESG__LANE_WAIT, ESG__LANE_FLIGHT };

/* The deliveries of one partition key (or of one unkeyed delivery): only the head moves. */
typedef struct esg__lane {
  char *key;                    /* NULL for an unkeyed delivery's own lane; kept beside the lane */
  uint64_t hash;
  esg__job *head, *tail;
  struct esg__lane *hnext;      /* chain in the lane table */
  struct esg__lane *rnext;      /* next in the ready list */
  size_t heap_at;               /* index in the timer heap while ESG__LANE_WAIT */
  int state;
} esg__lane;

/* Keyed lanes by key. */
typedef struct esg__lanes {
  esg__lane **b;
  size_t nb, n;
} esg__lanes;

/* Lanes waiting for a time (backoff, Retry-After), earliest head->next_at first. */
typedef struct esg__heap {
  esg__lane **a;
  size_t n, cap;
} esg__heap;

/* FIFO of lanes whose head may be sent now. */
typedef struct esg__ready {
  esg__lane *head, *tail;
} esg__ready;

esg__lane *esg__lanes_find(esg__lanes *t, const char *key, uint64_t h);
int esg__lanes_add(esg__lanes *t, esg__lane *l);
void esg__lanes_remove(esg__lanes *t, esg__lane *l);
void esg__lanes_free(esg__lanes *t);

int esg__heap_push(esg__heap *h, esg__lane *l);
esg__lane *esg__heap_top(const esg__heap *h);
esg__lane *esg__heap_pop(esg__heap *h);
void esg__heap_free(esg__heap *h);

void esg__ready_push(esg__ready *r, esg__lane *l);
esg__lane *esg__ready_pop(esg__ready *r);

/* The policy: uniform in [0, min(cap, base * 2^(retry-1))] for retry >= 1. */
int64_t esg__backoff(uint64_t *rng, int retry, int64_t base, int64_t cap);
uint64_t esg__rng_next(uint64_t *s);
/* libcurl error codes that no retry can fix (a malformed URL...). */
bool esg__curl_permanent(int curl_code);

/* The circuit breaker per destination host (egress_circuit.c). */
typedef struct esg__circuit esg__circuit;
typedef struct esg__circuits {
  esg__circuit **c;
  size_t n, cap;
} esg__circuits;
typedef struct esg__circuit_policy {
  int failures;      /* retryable failures in a row that open it; 0 = no breaker */
  int64_t open_ms;   /* how long it stays open first */
  int64_t cap_ms;    /* the longest it stays open */
} esg__circuit_policy;
/* The circuit of url's host (created closed); NULL when out of memory. */
esg__circuit *esg__circuit_for(esg__circuits *t, const char *url);
void esg__circuits_free(esg__circuits *t);
const char *esg__circuit_host(const esg__circuit *c);
/* Whether a delivery to it may start now (the first after the open time is the probe);
   if not, *until gets when to ask again. */
bool esg__circuit_allows(esg__circuit *c, int64_t now, int64_t *until);
/* An attempt's result; *open counts the circuits open now, *opens every opening. */
void esg__circuit_result(esg__circuit *c, bool failed, const esg__circuit_policy *p, int64_t now, uint32_t *open,
                         uint64_t *opens);

/* For a loop that owns an fd (the gateway's source): one turn of the engine, then a wait
   of up to timeout_ms for a transfer, a due timer or fd (if >= 0) becoming readable, and
   what that brought. ESG_OK or ESG_ESTATE (called from a callback, or in a child). */
int esg__egress_wait(esg_egress *e, int fd, int timeout_ms);
/* Deliveries not finished. */
size_t esg__egress_jobs(const esg_egress *e);

/* libcurl's global init, once per process (io/curl_global.c): ESG_OK, or ESG_EIO with the text. */
int esg__curl_global_init(void);

#endif
