/*
 * The gateway's side of sources that answer for each event (gateway_ack.h): a few
 * accessors over the fields the pipeline keeps for them (gateway.c sets them).
 */
#include "gateway_ack.h"
#include "gateway_int.h"

void esg__gw_ack_hash(esg_gateway *g, const void *hash, size_t len) {
  g->src_hash = hash;
  g->src_hash_len = len;
}

void esg__gw_ack_last(const esg_gateway *g, esg__gw_ack *out) {
  out->rc = g->last_rc;
  out->claim = g->last_claim;
  out->fault = g->last_fault;
}

esg_store *esg__gw_ack_store(const esg_gateway *g) { return g->s; }
