/*
 * The gateway: the pipeline that makes libesg a gateway, as one handle that C, Lua and
 * Python all run (docs/gateway.md):
 *
 *   source -> parse -> filter -> claim -> latch check -> enrich -> transform
 *          -> latch mark -> sink -> complete | fault
 *
 * Steps are callbacks with user data; the declarative parts are options. One loop owns
 * timing: while the source has nothing to give it still delivers, retries after
 * Retry-After and commits due groups, sleeping until the earliest of those deadlines or
 * the source's fd becoming readable.
 */
#ifndef ESG_GATEWAY_H
#define ESG_GATEWAY_H

#include "esg/common.h"
#include "esg/event.h"
#include "esg/store.h"
#include "esg/cache.h"
#include "esg/egress.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct esg_gateway esg_gateway;

/** One event on its way through the pipeline, as the steps see it. Valid during the step. */
typedef struct esg_gateway_event esg_gateway_event;

/** The parsed envelope (id, type, timestamp, partitionKey, the bytes received). */
ESG_API const esg_event *esg_gateway_event_envelope(const esg_gateway_event *e);

/**
 * The event's JSON as it now is: the bytes received (without a trailing CR), or what the
 * enrich step made of them. *len (may be NULL) gets its length.
 */
ESG_API const char *esg_gateway_event_json(const esg_gateway_event *e, size_t *len);

/** Replaces the event's JSON (from an enrich step): a JSON object; copied. ESG_OK, ESG_EJSON, ESG_ENOMEM. */
ESG_API int esg_gateway_event_set_json(esg_gateway_event *e, const char *json, size_t len);

/**
 * Sets the output (from the transform step): the bytes the sink writes (a file sink adds
 * a newline; an HTTP sink sends them as the body unless render says otherwise); copied.
 * A transform that returns ESG_OK without setting one drops the event.
 */
ESG_API int esg_gateway_event_set_output(esg_gateway_event *e, const void *data, size_t len);

/** The output set so far (NULL before the transform). */
ESG_API const void *esg_gateway_event_output(const esg_gateway_event *e, size_t *len);

/**
 * From a step that fails: records why (formatted, cut at 1000 bytes) and returns
 * ESG_ECALLBACK for the step to return. The event becomes a fault of that stage.
 */
ESG_API int esg_gateway_event_fail(esg_gateway_event *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * Per-event scratch for the steps (e.g. the event parsed once into the caller's JSON
 * tree): set by one step, read by the later ones, handed to free_fn (if not NULL) when
 * the event ends or the slot is set again. NULL before a step sets it.
 */
ESG_API void *esg_gateway_event_user(const esg_gateway_event *e);
ESG_API void esg_gateway_event_set_user(esg_gateway_event *e, void *p, void (*free_fn)(void *p));

/**
 * The claim this event holds, owned by the gateway (then by its HTTP delivery): its key,
 * with *token (may be NULL) its token; NULL when none (idempotence off, a duplicate's
 * claim, a resubmitted fault's completed claim, or before the claim step).
 */
ESG_API const char *esg_gateway_event_claim(const esg_gateway_event *e, int64_t *token);

/**
 * From the entity step: the document stored with the entity's version once the event is
 * delivered (default: the event's JSON as it then is); copied. ESG_OK or ESG_ENOMEM.
 */
ESG_API int esg_gateway_event_set_entity_doc(esg_gateway_event *e, const char *json, size_t len);

/**
 * From a step that fails: more text for its fault record, put after the line naming where
 * the event came from (e.g. a traceback); copied, cut at 8000 bytes. Cleared before each step.
 */
ESG_API void esg_gateway_event_set_detail(esg_gateway_event *e, const char *text, size_t len);

/** The gateway's store and its enrichment cache (opened on first use; NULL on failure). */
ESG_API esg_store *esg_gateway_event_store(const esg_gateway_event *e);
ESG_API esg_cache *esg_gateway_event_cache(esg_gateway_event *e);

/** Where a step's strings go: ESG_OK with *out (and *len) set, or *out NULL for "none". */
typedef int (*esg_gateway_str_fn)(void *ud, esg_gateway_event *e, const char **out, size_t *len);
/** A yes/no step (filter, echo check): 1 yes, 0 no, negative to fail (see esg_gateway_event_fail). */
typedef int (*esg_gateway_test_fn)(void *ud, esg_gateway_event *e);
/** A step that acts on the event (enrich fn, transform): ESG_OK, or negative to fail. */
typedef int (*esg_gateway_step_fn)(void *ud, esg_gateway_event *e);
/** The entity step: *key (NULL: none) and *version of the entity this event carries. */
typedef int (*esg_gateway_entity_fn)(void *ud, esg_gateway_event *e, const char **key, int64_t *version);

/** A rendered HTTP request; the gateway fills the defaults before render runs. */
typedef struct esg_gateway_request {
  const char *method;            /* the sink's method, or "POST" */
  const char *url;               /* the sink's url */
  const char *const *headers;    /* the sink's headers ("Name: value") */
  size_t n_headers;
  const void *body;              /* the output */
  size_t body_len;
} esg_gateway_request;
/** Changes the request for one event; what it points to must stay valid until it returns... */
typedef int (*esg_gateway_render_fn)(void *ud, esg_gateway_event *e, esg_gateway_request *r);

/** Where delivered outputs go. */
typedef enum esg_gateway_sink_kind {
  ESG_GATEWAY_SINK_FILE = 0,     /* lines appended to path, or written to fd (path NULL; 1 = stdout) */
  ESG_GATEWAY_SINK_EVENTLOG = 1, /* the output must be an envelope: stored once per id in the event log */
  ESG_GATEWAY_SINK_CALLBACK = 2, /* write(ud, e, output, len) */
  ESG_GATEWAY_SINK_HTTP = 3      /* the egress engine: url, method, headers, render, egress options */
} esg_gateway_sink_kind;

/** A fault the gateway recorded, handed to on_fault. Pointers valid during the call. */
typedef struct esg_gateway_fault {
  int64_t id;                    /* the fault record's id (0 if it could not be recorded) */
  const char *event_id;
  const char *stage;             /* parse, filter, idempotence, latch, enrich, transform, sink, complete, deliver */
  const char *error;             /* the message */
  int http_status;               /* deliver: the last HTTP status */
  int attempts;
  int64_t lineno;                /* the source's line number, 0 if none */
} esg_gateway_fault;

/** Options for esg_gateway_open: start from ESG_GATEWAY_OPTS_INIT; zero fields mean the defaults. */
typedef struct esg_gateway_opts {
  size_t size;                   /* sizeof(esg_gateway_opts): start from ESG_GATEWAY_OPTS_INIT */
  esg_store *store;              /* required; borrowed: close the gateway first */
  const char *name;              /* shown in fault records; NULL = "gateway" */
  void *ud;                      /* passed to every step */

  /* parse -> filter */
  esg_gateway_test_fn filter;    /* 0 drops the event before anything is stored (filtered) */

  /* idempotence: on unless no_idempotence */
  int no_idempotence;
  int64_t lease_ms;              /* 0 = 30000 */
  int64_t ttl_ms;                /* 0 = 3600000 */
  esg_gateway_str_fn key;        /* NULL = the event id */
  esg_gateway_str_fn hash;       /* the payload hash (<= 64 bytes; *out NULL: no check); NULL = SHA-256 of the bytes */
  int no_hash;                   /* non-zero: no payload check at all */
  esg_gateway_entity_fn entity;  /* inverse optimistic lock: not newer than stored = stale */

  /* latch: a custom check, or content latches between two sides */
  esg_gateway_test_fn echo;      /* 1 = an echo (suppressed) */
  esg_gateway_str_fn latch_key;  /* required for from/to; *out NULL = no latching for this event */
  const char *latch_from;        /* the side read: content matching a latch set for it is an echo */
  const char *latch_to;          /* the side written: its content is latched before each write */
  esg_gateway_str_fn latch_doc;  /* the state as `from` reports it; NULL = the event without its envelope */
  esg_gateway_str_fn latch_out_doc; /* the state as `to` will report it; NULL = the output */
  int64_t latch_ttl_ms;          /* 0 = 600000 */
  int latch_flag;                /* non-zero: an event flagged "latched": true is an echo */

  /* enrich */
  const esg_cache_opts *cache;   /* options of the run's cache: with them it opens with the gateway
                                    (NULL = defaults, opened on first use) */
  int collect;                   /* non-zero: cache the entity each event carries (esg_cache_collect) */
  esg_gateway_str_fn enrich_key; /* *out NULL: no lookup */
  esg_cache_loader load;         /* NULL: only cached values are used */
  void *load_ud;
  const char *enrich_into;       /* the value goes to this member of the event; NULL = "enriched" */
  int enrich_required;           /* non-zero: no value is a fault */
  esg_gateway_step_fn enrich;    /* then this */

  /* transform: sets the output; without one the output is the event's JSON */
  esg_gateway_step_fn transform;

  /* sink */
  esg_gateway_sink_kind sink;
  const char *sink_path;         /* FILE: appended to; NULL = sink_fd */
  int sink_fd;                   /* FILE without a path: 0 = stdout (1) */
  const char *eventlog_key;      /* EVENTLOG: correlation key (NULL: the event's partitionKey) */
  int64_t eventlog_ttl_ms;
  int (*write)(void *ud, esg_gateway_event *e, const void *out, size_t len); /* CALLBACK */
  const char *http_url;          /* HTTP: required unless render sets it */
  const char *http_method;
  const char *const *http_headers; /* copied, as every string of these options */
  size_t http_n_headers;
  esg_gateway_render_fn render;
  int http_rerender;             /* non-zero: a resubmission renders the request again (after a fix
                                    to the transform) instead of sending the outbox's bytes */
  const esg_egress_opts *egress; /* the engine's options (on_done and ud are the gateway's; circuit_failures
                                    0 = 5 here, -1 = no breaker) */

  /* reporting */
  void (*on_fault)(void *ud, const esg_gateway_fault *f);

  /* later additions (kept last: the struct is sized) */
  esg_gateway_test_fn collect_if; /* with collect: 1 collects this event, 0 not; NULL = every event */
  const char *source_name;       /* fault records say "at line N of SOURCE"; NULL: "at line N" */
  const char *fault_note;        /* fault records end the line with "(NOTE)"; NULL: "(gateway NAME)" */
  esg_egress_retry_fn on_retry;  /* HTTP: each retry scheduled (after it is counted), with ud */
} esg_gateway_opts;
#define ESG_GATEWAY_OPTS_INIT {.size = sizeof(esg_gateway_opts)}

/** Counters since open, readable at any time. */
typedef struct esg_gateway_stats {
  uint64_t received;             /* events read (blank lines not counted) */
  uint64_t filtered, duplicates, busy, stale, echoes, dropped;
  uint64_t delivered, faults, cancelled;
  uint64_t resubmitted;          /* faults resubmitted and handled (esg_gateway_resubmit) */
  uint64_t in_flight;            /* HTTP deliveries not finished */
  uint64_t retries;              /* HTTP retries scheduled */
  uint64_t circuits_open;        /* HTTP destinations whose circuit is open now */
} esg_gateway_stats;

/**
 * A source of events. next gives the next event's bytes (valid until the next call):
 * ESG_OK, ESG_BUSY when it has none yet (the loop then waits for fd to become readable,
 * if fd >= 0, or for its next deadline), ESG_NOT_FOUND at the end, ESG_ETOOBIG for an
 * event it cannot hand over whole (data, len: what it kept of it; esg_errmsg(NULL): why,
 * e.g. its length and hash): recorded as a fault of stage parse, and the run goes on;
 * or another error, which stops the run.
 */
typedef struct esg_gateway_source {
  int (*next)(void *ud, const char **data, size_t *len);
  void (*close)(void *ud);       /* may be NULL */
  void *ud;
  int fd;                        /* readable when next may have more; -1 = none */
} esg_gateway_source;

/**
 * A source of JSON lines from path ("-" = stdin); close it with src->close(src->ud). A
 * line longer than ESG_EVENT_MAX_BYTES (it could never parse) is handed over as its
 * first 64 KiB with ESG_ETOOBIG, its length and SHA-256 in the text: any line length
 * ends as a stored fault and the run goes on.
 */
ESG_API int esg_gateway_source_jsonl(esg_gateway_source *out, const char *path);
/** The same over an open fd (not closed by the source); a pipe or socket may pause. */
ESG_API int esg_gateway_source_fd(esg_gateway_source *out, int fd);

/** Options of a JSON lines source: start from ESG_GATEWAY_LINES_OPTS_INIT. */
typedef struct esg_gateway_lines_opts {
  size_t size;                   /* sizeof(esg_gateway_lines_opts): start from ESG_GATEWAY_LINES_OPTS_INIT */
  size_t max_line;               /* the longest line handed over whole, in bytes: a longer one is a parse fault
                                    kept as its first 64 KiB (or max_line bytes if less); 0 = and at most
                                    ESG_EVENT_MAX_BYTES, since no longer event parses */
} esg_gateway_lines_opts;
#define ESG_GATEWAY_LINES_OPTS_INIT {.size = sizeof(esg_gateway_lines_opts)}
/** esg_gateway_source_jsonl(path), or esg_gateway_source_fd(fd) when path is NULL, with options (NULL: defaults). */
ESG_API int esg_gateway_source_lines(esg_gateway_source *out, const char *path, int fd, const esg_gateway_lines_opts *o);

/**
 * Opens a gateway on opts->store (borrowed). On failure *out is NULL and esg_errmsg(NULL)
 * names what is wrong. Closing the store first detaches the gateway: its deliveries are
 * cancelled (claims released), its cache closed, and its calls return ESG_ESTATE until
 * esg_gateway_close frees it.
 */
ESG_API int esg_gateway_open(esg_gateway **out, const esg_gateway_opts *opts);

/**
 * Runs one event (caller-fed) through the pipeline now. Returns ESG_OK when it was
 * handled (delivered, filtered, duplicate, stale, echo, dropped: see the counters),
 * ESG_BUSY when another worker holds it, ESG_ECALLBACK when it became a fault (recorded,
 * its claim completed with it), or an error of the store that stopped the gateway.
 * With an HTTP sink the delivery finishes later, inside run/poll/drain.
 */
ESG_API int esg_gateway_push(esg_gateway *g, const char *json, size_t len);

/**
 * The gateway as the sink of a resync or the callback of a replay: esg_resync_opts.sink
 * (with sink_ud the gateway) for esg_cursor_run and esg_snapshot_begin, or the cb of
 * esg_replay. Each event runs through the pipeline as esg_gateway_push would, inside the
 * transaction that records it (cursor, snapshot), so a crash loses nothing: the page or
 * listing runs again. Returns 0 when the event was handled or became a fault (recorded;
 * the resync goes on), 1 when the store failed (the page or batch then rolls back).
 * Events are numbered from 1 per gateway for the fault records' "line".
 */
ESG_API int esg_gateway_event_cb(void *gateway, const esg_stored_event *ev);

/**
 * Runs the source to its end: each event through the pipeline, deliveries and due groups
 * handled while the source waits. Then waits for every delivery. ESG_OK, or the error
 * that stopped it (the source's, or the store's).
 */
ESG_API int esg_gateway_run(esg_gateway *g, const esg_gateway_source *src);

/**
 * One turn of the loop without a source: delivers, retries and commits what is due,
 * waiting up to timeout_ms (0 = do not wait) for something to happen. ESG_OK.
 */
ESG_API int esg_gateway_poll(esg_gateway *g, int timeout_ms);

/** Waits until every delivery has finished. ESG_OK or the store's error. */
ESG_API int esg_gateway_drain(esg_gateway *g);

/**
 * Resubmits fault fault_id: its stored event runs through the pipeline again with the
 * same event id (docs/gateway.md "Faults", resubmission). Its own claim, completed with
 * the fault, lets it through without owning the claim (a claim completed any other way
 * makes it a duplicate: handled since, and the fault is deleted). Exclusive per fault
 * through a claim on "esg.resubmit/<id>". Returns ESG_OK when the event was handled (the
 * fault deleted), ESG_ECALLBACK when it failed again (a new fault replaced the old one,
 * attempts + 1, first attempt kept), ESG_BUSY when another resubmitter holds the fault or
 * another worker the event, ESG_NOT_FOUND, or a store error. With an HTTP sink the engine
 * resubmits the fault itself and the call waits for the delivery's outcome.
 */
ESG_API int esg_gateway_resubmit(esg_gateway *g, int64_t fault_id);

/** The counters. */
ESG_API void esg_gateway_get_stats(const esg_gateway *g, esg_gateway_stats *out);

/** Drains, closes the sink and the cache, commits. ESG_OK or the final commit's error. NULL is fine. */
ESG_API int esg_gateway_close(esg_gateway *g);

#ifdef __cplusplus
}
#endif
#endif
