/*
 * Latches: loop prevention in two-way sync (see docs/latching.md).
 *
 * Two kinds:
 *   - flag latches: a record or event written on behalf of the other system
 *     carries "latched": true; egress skips it, and a local change clears it.
 *     The helpers below read and write the flag in JSON; they need no store.
 *   - content latches: before writing a state to a side, record its content hash
 *     with esg_latch(); when a change later comes from that side, esg_latch_check()
 *     says whether it is the echo of that write (suppress it) or a genuine change
 *     (pass it on). Latches live in the store, so they survive restarts and are
 *     shared by every process that opens it.
 */
#ifndef ESG_LATCH_H
#define ESG_LATCH_H

#include "esg/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ flag latches -- */

/**
 * True (1) if the event was written on behalf of the other system: its envelope
 * has "latched": true at the top level, or one of its entity members (any
 * object-valued top-level member other than "tags" and "raw") has "latched": true.
 * Only the JSON boolean true counts ("true" as a string does not). False (0) for
 * NULL. Reads the event as parsed (no parse, no allocation); never blocks, never fails.
 */
ESG_API int esg_latch_flagged(const esg_event *ev);

/**
 * Like esg_latch_flagged for any JSON document json[0..len) (an envelope or a bare
 * record), reporting problems: on ESG_OK *flagged is 1 or 0. Errors, with the
 * detail in esg_errmsg(NULL): ESG_EINVAL (NULL argument), ESG_ETOOBIG (longer
 * than ESG_EVENT_MAX_BYTES), ESG_EJSON (not JSON, or not a JSON object), ESG_ENOMEM.
 * Never blocks.
 */
ESG_API int esg_latch_flagged_json(const char *json, size_t len, int *flagged);

/**
 * Returns a copy of the JSON object json[0..len) with the flag set (latched != 0:
 * "latched": true at the top level, replacing any "latched" member there) or
 * cleared (latched == 0: every "latched" member is removed from the top level and
 * from the entity members, so esg_latch_flagged_json then answers 0). Use it to
 * mark what a gateway writes on behalf of the other system, and to clear the
 * mark on a local change. Other members keep their order and values; the output
 * is compact JSON.
 * On ESG_OK *out is a NUL-terminated string owned by the caller (free with
 * esg_free) and *out_len (if not NULL) its length. On error *out is NULL and the
 * code is ESG_EINVAL, ESG_ETOOBIG, ESG_EJSON (not JSON / not an object) or
 * ESG_ENOMEM, with the detail in esg_errmsg(NULL). Never blocks.
 */
ESG_API int esg_latch_mark(const char *json, size_t len, int latched, char **out, size_t *out_len);

/* --------------------------------------------------------- content latches -- */

/** How many latches are kept pending per (key, side); older ones are dropped beyond it. */
#define ESG_LATCH_MAX_PENDING 16

/**
 * Verdicts of esg_latch_check. They are status values (ESG_OK and
 * ESG_DUPLICATE), so a caller may compare with either name.
 */
typedef enum esg_latch_verdict {
  ESG_LATCH_GENUINE = ESG_OK,       /* a real change: pass it on */
  ESG_LATCH_ECHO = ESG_DUPLICATE    /* the echo of our own write: suppress it */
} esg_latch_verdict;

/**
 * Records "we are about to write the state with content_hash to side for key":
 * call it BEFORE the write, so the echo can never arrive first. The latch is
 * pending until its echo is checked, a genuine change from side clears it, or
 * ttl_ms (> 0) passes. Several latches may be pending for one (key, side), e.g.
 * two quick writes before their echoes return; they are kept in write order, at
 * most ESG_LATCH_MAX_PENDING (the oldest is dropped beyond that). Call it once per
 * write that will produce one change notification.
 * key, side and content_hash are non-empty strings of at most ESG_KEY_MAX bytes;
 * content_hash is any text naming the state, typically esg_content_hash() of the
 * document as the side will report it. Returns ESG_OK or an error (ESG_EINVAL,
 * ESG_ETOOBIG, ESG_ESTORE, ESG_ELOCKED) with nothing written. Joins an open batch
 * or group. Blocks on the store (up to the busy timeout).
 */
ESG_API int esg_latch(esg_store *s, const char *key, const char *side, const char *content_hash, int64_t ttl_ms);

/**
 * Judges a change that came from side for key, with the content hash of the state
 * it reports:
 *   ESG_LATCH_ECHO (= ESG_DUPLICATE): an unexpired pending latch has this hash; the
 *     change is the echo of our write: suppress it. The oldest matching latch is
 *     consumed, together with any older pending latch of (key, side) (their echoes,
 *     arriving in order, are behind us: they were coalesced or lost).
 *   ESG_LATCH_GENUINE (= ESG_OK): no unexpired pending latch has this hash; the
 *     change is real: pass it on. The newest pending latch of (key, side) is
 *     cleared: that write lands after this change, so its echo will carry the
 *     side's final state, which the other side (about to receive this change)
 *     must then get back. Older pending latches stay: their echoes still come
 *     in order and carry states the newest one supersedes.
 * Expired latches never suppress. Assumes one side reports the changes of one key
 * in the order it applied them. Errors: ESG_EINVAL, ESG_ETOOBIG, ESG_ESTORE,
 * ESG_ELOCKED (nothing changed). A change with no pending latch is answered by one
 * read, without writing. Atomic across processes sharing the store. Blocks on the
 * store (up to the busy timeout).
 */
ESG_API int esg_latch_check(esg_store *s, const char *key, const char *side, const char *content_hash);

/**
 * Convenience: esg_latch with the canonical content hash (esg_content_hash) of the
 * JSON document doc[0..len). ESG_EJSON if doc is not JSON, ESG_ETOOBIG beyond
 * ESG_EVENT_MAX_BYTES; nothing is written then. Blocks like esg_latch.
 */
ESG_API int esg_latch_doc(esg_store *s, const char *key, const char *side, const char *doc, size_t len,
                          int64_t ttl_ms);

/** Convenience: esg_latch_check with the canonical content hash of doc[0..len); errors as esg_latch_doc. */
ESG_API int esg_latch_check_doc(esg_store *s, const char *key, const char *side, const char *doc, size_t len);

/**
 * Withdraws the newest pending latch of (key, side) with content_hash: use it when
 * the write it announced failed, so no echo will come and a later genuine change
 * to that state is not taken for one. ESG_OK, or ESG_NOT_FOUND when no such latch
 * is pending. Blocks on the store.
 */
ESG_API int esg_latch_cancel(esg_store *s, const char *key, const char *side, const char *content_hash);

/**
 * *n gets how many unexpired latches are pending for (key, side) (0 if none).
 * ESG_OK or an error. Reads only; blocks on the store.
 */
ESG_API int esg_latch_pending(esg_store *s, const char *key, const char *side, int *n);

/** Deletes expired latches of every key; *n (if not NULL) gets how many. Blocks on the store. */
ESG_API int esg_latches_purge(esg_store *s, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif
