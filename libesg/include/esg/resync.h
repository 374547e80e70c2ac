/*
 * Resync of slow data (see docs/resync.md): for systems that have no change
 * feed, lag, or miss events.
 *   - cursor jobs fetch pages after a durable, named cursor and emit each item as
 *     an event with a deterministic id; the new cursor is stored in the same
 *     transaction as the page, so a crash resumes from the last committed page;
 *   - snapshot diff turns full listings of an external system into created,
 *     updated and deleted events for what changed since the previous listing,
 *     with the listing state kept in the store (listings may exceed memory);
 *   - replay re-emits stored events by correlation key, type and time range.
 *
 * Emitted events go to the store's event log (deduplicated by id) and, if a sink
 * is given, to the sink as well, as esg_stored_event values.
 */
#ifndef ESG_RESYNC_H
#define ESG_RESYNC_H

#include "esg/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Options shared by cursor jobs and snapshot diffs: start from ESG_RESYNC_OPTS_INIT
 * (or pass NULL); zero fields mean the defaults.
 */
typedef struct esg_resync_opts {
  size_t size;               /* sizeof(esg_resync_opts): start from ESG_RESYNC_OPTS_INIT */
  /* Called for each event newly stored in the log (with no_log: for each event),
     inside the transaction that stores it (and,
     for a cursor job, the page's cursor): return 0 to go on, non-zero to fail
     the page or batch, which is then rolled back (ESG_ECALLBACK). A sink sees an
     event at least once: after a crash the uncommitted part runs again with the
     same ids. NULL: no sink. The pointers are valid during the call only. */
  esg_event_cb sink;
  void *sink_ud;
  /* 1: do not store events in the event log (the sink is then required, and
     re-emissions after a crash are not deduplicated). 0: store them. */
  int no_log;
  /* TTL of events stored in the log, in ms; 0 = never expire. */
  int64_t log_ttl_ms;
  /* The envelope member that carries the item or content; NULL = "entity". */
  const char *entity_field;
  /* Snapshot: event types are "<type>-created", "-updated", "-deleted"; NULL = "entity". */
  const char *type;
  /* Snapshot: entries per transaction; 0 = 1000. */
  int batch;
  /* Cursor job: pages per esg_cursor_run call; 0 = until the source says it is done. */
  int max_pages;
} esg_resync_opts;
#define ESG_RESYNC_OPTS_INIT {.size = sizeof(esg_resync_opts)}

/** What a run did. Zeroed by the call, then counted. */
typedef struct esg_resync_stats {
  int64_t pages;      /* cursor: pages committed */
  int64_t emitted;    /* events newly stored (or, with no_log, handed to the sink) */
  int64_t duplicates; /* events already in the log (re-emissions), not stored again */
  int64_t created, updated, deleted, unchanged; /* snapshot: entries by outcome */
  int done;           /* cursor: 1 when the source reported its end */
} esg_resync_stats;

/* ---------------------------------------------------------------- cursors -- */

/** One item of a fetched page. The strings are the fetcher's, valid until the next fetch. */
typedef struct esg_resync_item {
  const char *id;            /* the item's id in the source: required, non-empty */
  const char *version;       /* its version (updatedAt, etag, revision): required, non-empty */
  const char *type;          /* the event type to emit: required, non-empty */
  int64_t timestamp;         /* the event's timestamp, epoch ms; 0 = now (store clock) */
  const char *partition_key; /* NULL = id */
  const char *data;          /* the item as JSON (any JSON value): required */
  size_t data_len;
} esg_resync_item;

/** A page filled by the fetcher; its memory stays the fetcher's until the next fetch. */
typedef struct esg_resync_page {
  const esg_resync_item *items;
  size_t n;
  const char *next_cursor;   /* the cursor after this page (required unless n == 0 and done) */
  int done;                  /* 1: nothing follows this page for now */
} esg_resync_page;

/**
 * Fetches the page after cursor (NULL before the first page) into *page (zeroed
 * by the caller). Return 0 on success, non-zero on failure (the run then stops
 * with ESG_ECALLBACK, nothing of that page written). May block (it is the
 * caller's I/O); no store lock is held while it runs.
 */
typedef int (*esg_fetch_fn)(void *ud, const char *cursor, esg_resync_page *page);

/** Longest cursor accepted, in bytes. */
#define ESG_CURSOR_MAX 65536

/**
 * Reads the cursor called name. ESG_OK: *out is a NUL-terminated copy owned by
 * the caller (free with esg_free). ESG_NOT_FOUND: none stored (*out NULL).
 * Blocks on the store.
 */
ESG_API int esg_cursor_get(esg_store *s, const char *name, char **out);

/**
 * Stores cursor (a string of at most ESG_CURSOR_MAX bytes; "" allowed) under
 * name, e.g. to rewind a job. ESG_OK or an error. Joins an open batch or group.
 * Blocks on the store.
 */
ESG_API int esg_cursor_set(esg_store *s, const char *name, const char *cursor);

/** Deletes the cursor called name (the job then starts over): ESG_OK or ESG_NOT_FOUND. Blocks on the store. */
ESG_API int esg_cursor_delete(esg_store *s, const char *name);

/**
 * Runs the cursor job called name over source: repeatedly reads the stored
 * cursor, calls fetch for the page after it (outside any transaction), then in
 * one transaction emits each item as an event and stores page->next_cursor.
 * The event id is UUIDv5(ESG_UUID_NS_EVENT, source "\0" item id "\0" version),
 * so a page emitted again after a crash yields the same ids and the log keeps
 * one of each. The envelope: {"id", "type", "timestamp", "partitionKey",
 * "<entity_field>": data, "tags": {"source", "itemId", "itemVersion"}}.
 * If another process moved the cursor meanwhile, the fetched page is dropped
 * and the job goes on from the new cursor.
 * Stops when the fetcher sets page->done (stats->done = 1) or after
 * opts->max_pages pages. Returns ESG_OK, or the first error: ESG_ECALLBACK
 * (fetch or sink failed), ESG_EINVAL / ESG_EJSON / ESG_ETOOBIG (a bad item:
 * the text names it and its index; the whole page is rolled back and the
 * cursor stays), or a store error. Pages committed before an error stay.
 * stats may be NULL. Not inside a batch (ESG_ESTATE): each page needs its own
 * transaction. Blocks on fetch and on the store.
 */
ESG_API int esg_cursor_run(esg_store *s, const char *name, const char *source, esg_fetch_fn fetch, void *fetch_ud,
                           const esg_resync_opts *opts, esg_resync_stats *stats);

/* --------------------------------------------------------------- snapshot -- */

/** A listing of one source in progress. Opaque; one per store handle at a time. */
typedef struct esg_snapshot esg_snapshot;

/**
 * Starts (or resumes) a full listing of source. The store keeps, per source, each
 * key's content hash and the generation (listing number) that last saw it; this
 * listing gets the next generation, or the same one if the previous listing of
 * source was never finished, so a listing interrupted by a crash can simply be
 * run again: what it already emitted is not emitted twice. On ESG_OK *out is
 * the handle (esg_errmsg(*out) gives its errors); close it with
 * esg_snapshot_close. Blocks on the store. Not inside a batch (ESG_ESTATE).
 */
ESG_API int esg_snapshot_begin(esg_snapshot **out, esg_store *s, const char *source, const esg_resync_opts *opts);

/**
 * Adds one entry of the listing, in any order: key (non-empty, at most
 * ESG_KEY_MAX bytes) and content[0..len) (JSON, at most ESG_EVENT_MAX_BYTES).
 * Emits "<type>-created" if the key is new, "<type>-updated" if its canonical
 * content hash (esg_content_hash) differs from the stored one; nothing if it is
 * unchanged. Event id: UUIDv5(ESG_UUID_NS_EVENT, source "\0" key "\0" kind "\0"
 * generation "\0" content hash). Writes are batched: opts->batch entries per
 * transaction, which stays open between calls (other processes wait for it).
 * Returns ESG_OK, or for a bad entry ESG_EINVAL (absent or empty key),
 * ESG_ETOOBIG, ESG_EJSON (content not JSON): the text names the problem, nothing
 * is written for the entry and the listing may go on; so does ESG_ENOMEM when
 * hashing the content ran out of memory (the text says so). A store or sink
 * failure, or running out of memory while recording or emitting the entry, rolls
 * back the open batch and fails the listing (later calls: ESG_ESTATE).
 * Blocks on the store.
 */
ESG_API int esg_snapshot_add(esg_snapshot *sn, const char *key, const char *content, size_t len);

/**
 * Ends the listing: every key of source not seen by it is gone from the external
 * system, so a "<type>-deleted" event is emitted for it (id as for add, with
 * kind "deleted" and the last content hash) and its state is removed; then the
 * generation is closed. stats (may be NULL) gets the counts of this listing as
 * seen by this handle. ESG_OK or an error (the listing then stays open and may be
 * run again). Blocks on the store.
 */
ESG_API int esg_snapshot_finish(esg_snapshot *sn, esg_resync_stats *stats);

/**
 * Frees the handle. An unfinished listing commits its open batch and stays open
 * (a later esg_snapshot_begin of the source resumes it); no deletions are
 * emitted. NULL is fine.
 */
ESG_API void esg_snapshot_close(esg_snapshot *sn);

/* ----------------------------------------------------------------- replay -- */

/** Which stored events to replay. Zeroed fields select everything. */
typedef struct esg_replay_filter {
  const char *corr_key; /* NULL = every key */
  const char *type;     /* NULL = every type */
  int64_t since;        /* timestamp >= since (epoch ms); 0 = no lower bound */
  int64_t until;        /* timestamp < until; 0 = no upper bound */
} esg_replay_filter;

/**
 * Calls cb for each unexpired stored event that matches filter (NULL = all), in
 * (timestamp, id) order; the event is handed as stored (same id, so consumers
 * dedupe a replay). cb may call into the store; events it stores during the
 * replay may or may not be included. *n (if not NULL) gets how many were handed
 * over. ESG_OK, ESG_ECALLBACK if cb stopped, or an error. Reads only; blocks on
 * the store.
 */
ESG_API int esg_replay(esg_store *s, const esg_replay_filter *filter, esg_event_cb cb, void *ud, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif
