/*
 * The event envelope, content hashes and deterministic ids.
 *
 * An envelope is a JSON object: required "id" (non-empty string), "type"
 * (non-empty string), "timestamp" (integer epoch ms); optional "partitionKey"
 * (string), "tags" (object), "raw" (anything), and the entity under any other key.
 */
#ifndef ESG_EVENT_H
#define ESG_EVENT_H

#include "esg/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Largest envelope accepted, in bytes (1 MiB). */
#define ESG_EVENT_MAX_BYTES (1024 * 1024)

/** A parsed, validated event. Opaque; immutable once parsed. */
typedef struct esg_event esg_event;

/**
 * Parses and validates an envelope from json[0..len). The bytes are copied.
 * On success *out is a new event (free with esg_event_free) and ESG_OK is returned.
 * On failure *out is NULL and the code is ESG_EJSON (not JSON), ESG_EEVENT (a field
 * is missing or has the wrong type; the text names it), ESG_ETOOBIG or ESG_ENOMEM
 * (not the envelope's fault: it may parse on a retry); the detail is in
 * esg_errmsg(NULL). Never blocks.
 */
ESG_API int esg_event_parse(const char *json, size_t len, esg_event **out);

/** Frees an event; NULL is fine. */
ESG_API void esg_event_free(esg_event *ev);

/** Accessors; the strings are owned by the event. partition_key may be NULL. */
ESG_API const char *esg_event_id(const esg_event *ev);
ESG_API const char *esg_event_type(const esg_event *ev);
ESG_API int64_t esg_event_timestamp(const esg_event *ev);
ESG_API const char *esg_event_partition_key(const esg_event *ev);
/** The envelope's bytes exactly as parsed (NUL-terminated); *len gets the length if not NULL. */
ESG_API const char *esg_event_json(const esg_event *ev, size_t *len);
/** SHA-256 of the envelope's bytes (32 bytes, owned by the event). */
ESG_API const uint8_t *esg_event_hash(const esg_event *ev);

/** SHA-256 of data[0..len) into out[32]. */
ESG_API void esg_sha256(const void *data, size_t len, uint8_t out[32]);

/** Lower-case hex of data[0..len) into out, which must hold 2*len+1 bytes. */
ESG_API void esg_hex(const void *data, size_t len, char *out);

/**
 * The canonical content hash of a JSON document: SHA-256 of its canonical form
 * (object keys sorted, no insignificant white space), as 64 hex chars + NUL in
 * out[65]. Two documents that differ only in key order or spacing hash equal.
 * Returns ESG_OK or ESG_EJSON (detail in esg_errmsg(NULL)).
 */
ESG_API int esg_content_hash(const char *json, size_t len, char out[65]);

/** Namespace for event ids made by libesg (a fixed UUID). */
#define ESG_UUID_NS_EVENT "5b1c4a52-7a8e-4f0e-9c3b-6f2d0e1a9b47"

/**
 * Deterministic UUID version 5 (RFC 9562, SHA-1) of name[0..len) in the namespace
 * ns (textual UUID). The same inputs always give the same id, so a replay emits
 * the same id. Writes 36 chars + NUL into out[37]. ESG_EINVAL if ns is not a UUID.
 */
ESG_API int esg_uuid5(const char *ns, const char *name, size_t len, char out[37]);

#ifdef __cplusplus
}
#endif
#endif
