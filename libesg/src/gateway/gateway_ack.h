/*
 * What a source that answers for each event (the HTTP ingress, libesg/src/ingress/)
 * needs of the gateway beyond the public source interface: to give the next event's
 * payload hash, to learn what became of the event it gave last, and the store it
 * commits. Kept apart from gateway_int.h so that such a source does not depend on the
 * gateway's layout.
 */
#ifndef ESG_GATEWAY_ACK_H
#define ESG_GATEWAY_ACK_H

#include "esg/gateway.h"

/* The payload hash of the next event the gateway runs, in place of the SHA-256 of its
   bytes (unless the options' hash step or no_hash decide): for envelopes whose bytes
   vary between deliveries of one payload (a webhook's timestamp header). hash must stay
   valid until that event has run; used once. */
void esg__gw_ack_hash(esg_gateway *g, const void *hash, size_t len);

/* What became of the last event run (push, or one of esg_gateway_run's). */
typedef struct esg__gw_ack {
  int rc;            /* ESG_OK handled, ESG_BUSY held elsewhere, ESG_ECALLBACK a fault, or a store error */
  int claim;         /* the claim's answer (ESG_NEW, ESG_DUPLICATE, ESG_EMISMATCH...), 0 if none was made */
  int64_t fault;     /* the fault record's id, 0 if none was recorded */
} esg__gw_ack;
void esg__gw_ack_last(const esg_gateway *g, esg__gw_ack *out);

/* The gateway's store (NULL once it was closed). */
esg_store *esg__gw_ack_store(const esg_gateway *g);

#endif
