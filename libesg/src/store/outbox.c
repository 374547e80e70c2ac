/*
 * The outbox on the store: a rendered request kept under its claim's key (the gateway's
 * HTTP sink stores it before the first attempt and sends it again, byte for byte, on a
 * takeover after a crash or a resubmission). The bytes are opaque here.
 */
#include "store/store_int.h"

int esg__outbox_put(esg_store *s, const char *key, const void *data, size_t len) {
  int rc = esg__enter(s);
  return rc != ESG_OK ? rc : s->be->outbox_put(s->b, key, data, len, esg__now(s));
}

int esg__outbox_get(esg_store *s, const char *key, esg__buf *out) {
  int rc = esg__enter_read(s);
  return rc != ESG_OK ? rc : s->be->outbox_get(s->b, key, out);
}

int esg__outbox_delete(esg_store *s, const char *key) {
  int rc = esg__enter(s);
  return rc != ESG_OK ? rc : s->be->outbox_delete(s->b, key);
}
