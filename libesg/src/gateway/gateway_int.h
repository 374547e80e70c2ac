/*
 * What the gateway's files share: the handle, the event on its way, and the steps'
 * entry points into the sinks (gateway_sink.c) and the loop (gateway_loop.c).
 */
#ifndef ESG_GATEWAY_INT_H
#define ESG_GATEWAY_INT_H

#include "core/internal.h"
#include "store/store_int.h"
#include "esg/gateway.h"

struct esg_gateway_event {
  esg_gateway *g;
  esg_event *ev;          /* the parsed envelope */
  const char *line;       /* the bytes received (without a trailing CR) */
  size_t line_len;
  esg__buf json;          /* the JSON after enrichment; empty: the line */
  esg__buf out;           /* the output */
  bool has_out;
  char msg[1024];         /* why a step failed */
  int64_t lineno;
  const char *okey;       /* the event's claim key (owned or not): the outbox's key; NULL without */
  bool stored;            /* its request came from the outbox (g->oreq): no step renders it again */
  void *user;             /* the steps' scratch, freed with user_free when the event ends */
  void (*user_free)(void *p);
  const char *claim_key;  /* the claim owned for it, or NULL */
  int64_t claim_token;
  esg__buf entity_doc;    /* set by the entity step (has_entity_doc) */
  bool has_entity_doc;
  esg__buf detail;        /* a failing step's extra text for the fault record */
};

/* An HTTP delivery in flight: its claim key, so that a copy of the event meeting its own
   delivery's claim (busy) counts as a duplicate. */
typedef struct esg__gw_flight {
  char *key;              /* NULL: a free slot */
  int64_t lineno;
} esg__gw_flight;

struct esg_gateway {
  esg__err err;           /* first: see esg__err */
  esg_gateway_opts o;
  char *name;
  char *source_name, *fault_note; /* for fault records, or NULL */
  esg_store *s;           /* NULL once the store closed (see esg__dep) */
  esg__dep dep;
  esg_cache *cache;
  bool cache_failed;
  int64_t lease, ttl, latch_ttl;
  /* sink */
  int fd;                 /* FILE */
  bool own_fd;
  esg__buf wbuf;          /* FILE: lines not yet written */
  esg_egress *egress;     /* HTTP */
  esg__buf obuf;          /* the outbox row being written or read */
  const char **ohdrs;     /* headers decoded from it */
  esg_gateway_request oreq; /* the request decoded from it */
  size_t ohdrs_cap;
  bool outbox_dirty;      /* a row written in the open group: commit it before the engine sends */
  unsigned unflushed;     /* HTTP deliveries held back for that commit */
  esg__gw_flight *flights;
  size_t n_flights, cap_flights, backlog;
  esg_gateway_stats st;
  esg_gateway_event cur;  /* the event on its way (one at a time) */
  int64_t lineno;         /* of the source being run */
  /* the fault being resubmitted (id 0: none) */
  struct {
    int64_t id, first;
    int attempts;
    int outcome;          /* the HTTP delivery's, once done; -1 before */
    bool via_http;        /* handed to the engine, which deletes or replaces the fault */
  } resub;
  bool in_step;           /* a step is running: the gateway's own calls are refused */
  /* for a source that answers for each event (the HTTP ingress; gateway_ack.c) */
  const void *src_hash;   /* the next event's payload hash in place of its bytes' (one shot) */
  size_t src_hash_len;
  int last_rc;            /* what the last event's run returned */
  int last_claim;         /* its claim's answer (0 before the claim step) */
  int64_t last_fault;     /* the id its fault record got (0: none) */
};

/* The stages, as fault records name them. */
#define ESG__GW_STAGES(X) X(parse) X(filter) X(idempotence) X(latch) X(enrich) X(transform) X(sink) X(complete) X(deliver)

/* Records a fault of stage for the current event (parsed: its id is known) and completes
   its claim (key/token, if owned) with {"status":"fault","fault":<id>}. Returns ESG_ECALLBACK. */
int esg__gw_fault(esg_gateway *g, const char *stage, const char *msg, const char *claim_key, int64_t token);

/* Where the gateway's public calls begin: NULL, a call from a step, a closed store. */
int esg__gw_enter(esg_gateway *g, const char *call);

/* The sinks: open (from the options), write one output (delivered now: ESG_OK; handed to
   the engine: ESG_BUSY), flush buffered lines, close. */
int esg__gw_sink_open(esg_gateway *g);
int esg__gw_sink_write(esg_gateway *g, esg_gateway_event *e, const char *claim_key, int64_t token);
void esg__gw_sink_close(esg_gateway *g);
/* A line the source could not hand over whole (ESG_ETOOBIG: data is its cut), recorded
   as a fault of stage parse with msg, the source's text (gateway.c). */
int esg__gw_fault_line(esg_gateway *g, const char *data, size_t len, const char *msg);
/* One event (a line without its newline) through the pipeline (gateway.c). */
int esg__gw_push(esg_gateway *g, const char *json, size_t len);
/* Lets the engine send: commits the open group first when outbox rows are in it (with
   force, or once enough deliveries wait), then one turn of the engine with a wait of up
   to timeout_ms on fd (if >= 0). */
int esg__gw_engine(esg_gateway *g, int fd, int timeout_ms, bool force);
/* For an HTTP sink: the event's request stored by an earlier attempt, if any (e->stored,
   g->oreq). ESG_OK (found or not), or a fault's code with the text on the event. */
int esg__gw_outbox_find(esg_gateway *g, esg_gateway_event *e);
/* One turn of the loop (gateway_loop.c): commits the group if due, then lets the engine
   deliver (or waits for fd, if >= 0) up to timeout_ms, at most until the group is due. */
int esg__gw_turn(esg_gateway *g, int fd, int timeout_ms);
/* Turns until no delivery is left (the outbox committed first). */
int esg__gw_drain(esg_gateway *g);
/* Commits the outbox rows of the open group, if any. */
int esg__gw_outbox_commit(esg_gateway *g);
/* Whether claim key is held by one of this gateway's deliveries in flight. */
bool esg__gw_in_flight(const esg_gateway *g, const char *key);

#endif
