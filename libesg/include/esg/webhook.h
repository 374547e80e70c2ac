/*
 * Standard Webhooks v1 (https://www.standardwebhooks.com): signing outgoing
 * webhooks and verifying incoming ones. See docs/webhooks.md.
 *
 * The signature is HMAC-SHA256 over "<msg_id>.<timestamp>.<payload>", base64
 * encoded and prefixed with "v1,". Timestamps here are epoch SECONDS, as on the
 * wire (the rest of libesg uses milliseconds: pass esg_clock_real(NULL) / 1000).
 *
 * Secrets: a string starting with "whsec_" is decoded as standard base64 (with
 * or without '=' padding) after the prefix, and the decoded bytes are the key;
 * any other string is used as the key byte for byte (its strlen bytes).
 */
#ifndef ESG_WEBHOOK_H
#define ESG_WEBHOOK_H

#include "esg/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** HTTP header names of a Standard Webhooks request. */
#define ESG_WEBHOOK_HEADER_ID "webhook-id"
#define ESG_WEBHOOK_HEADER_TIMESTAMP "webhook-timestamp"
#define ESG_WEBHOOK_HEADER_SIGNATURE "webhook-signature"

/** Prefix of base64-encoded secrets. */
#define ESG_WEBHOOK_SECRET_PREFIX "whsec_"

/** Buffer size, NUL included, that always holds one signature "v1,<44 base64 chars>". */
#define ESG_WEBHOOK_SIGNATURE_SIZE 48

/** Buffer size, NUL included, that holds a secret made by esg_webhook_secret_generate. */
#define ESG_WEBHOOK_SECRET_SIZE 64

/** Timestamp tolerance, in seconds, used when a caller passes tolerance_s <= 0. */
#define ESG_WEBHOOK_DEFAULT_TOLERANCE_S 300

/** Largest secret accepted, in characters (the "whsec_" prefix excluded). */
#define ESG_WEBHOOK_SECRET_MAX 1024

/**
 * Signs one webhook: writes "v1,<base64 HMAC-SHA256>" and a NUL into out, which
 * the caller owns and which must hold outcap >= ESG_WEBHOOK_SIGNATURE_SIZE bytes.
 * The signed content is "<msg_id>.<timestamp_s>.<payload[0..len)>"; send msg_id,
 * timestamp_s (decimal) and out as the webhook-id, webhook-timestamp and
 * webhook-signature headers. secret: see the top of this header.
 * Returns ESG_OK, or ESG_EINVAL (NULL or empty secret or msg_id, a bad "whsec_"
 * secret, negative timestamp, NULL payload with len > 0, out too small) or
 * ESG_ENOMEM; the detail is in esg_errmsg(NULL). On failure out is set to ""
 * when outcap > 0. Never blocks.
 */
ESG_API int esg_webhook_sign(const char *secret, const char *msg_id, int64_t timestamp_s,
                             const void *payload, size_t len, char *out, size_t outcap);

/**
 * Verifies one received webhook from its three header values and its raw body.
 * secrets[0..nsecrets) are the accepted secrets (several during a rotation);
 * signature_header holds space-separated signatures ("v1,aaa v1,bbb"), entries of
 * other versions (e.g. "v1a,...") are skipped. The webhook is genuine when any v1
 * signature matches any secret; comparisons are constant-time. The timestamp
 * must lie within tolerance_s seconds of now_s, either way (tolerance_s <= 0
 * means ESG_WEBHOOK_DEFAULT_TOLERANCE_S). Nothing is retained or allocated for
 * the caller. Returns:
 *   ESG_OK         genuine and fresh;
 *   ESG_ETIMEDOUT  the timestamp is too old or too new (possible replay);
 *   ESG_ESIGNATURE no v1 signature matched (tampered body, id or timestamp, an
 *                  unknown secret, or no v1 signature at all): answer 401;
 *   ESG_EINVAL     malformed input: a missing or empty header, a timestamp that is
 *                  not a decimal integer, no secrets, a NULL/empty or bad secret,
 *                  NULL payload with len > 0: answer 400;
 *   ESG_ENOMEM.
 * The detail text, in esg_errmsg(NULL), says which. Never blocks.
 * After ESG_OK, claim msg_id (esg_claim) so a redelivery is seen as a duplicate.
 */
ESG_API int esg_webhook_verify(const char *const *secrets, size_t nsecrets, const char *msg_id,
                               const char *timestamp_header, const char *signature_header,
                               const void *payload, size_t len, int64_t now_s,
                               int64_t tolerance_s);

/**
 * Makes a new random secret "whsec_<base64 of 32 random bytes>" (from the
 * OpenSSL CSPRNG) into out, which the caller owns and which must hold
 * outcap >= ESG_WEBHOOK_SECRET_SIZE bytes. Returns ESG_OK, ESG_EINVAL (out NULL
 * or too small) or ESG_EIO (no randomness available); detail in esg_errmsg(NULL).
 */
ESG_API int esg_webhook_secret_generate(char *out, size_t outcap);

#ifdef __cplusplus
}
#endif
#endif
