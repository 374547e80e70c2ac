/*
 * The loop that owns timing. Between events, and while the source has nothing to give,
 * it delivers, retries after Retry-After and commits due groups: it sleeps until the
 * earliest of the group's deadline, the engine's next timer and the source's fd becoming
 * readable, never in a blocking read, so a pausing input stops nothing. Every wait for
 * deliveries (drain, a free slot) is made of its turns: a completion waits in the open
 * group no longer than the group's delay, however long the other deliveries take.
 */
#include <poll.h>
#include "gateway_int.h"
#include "io/egress_int.h"

/* The longest sleep: deadlines in the store's clock may be far or moved by a test clock. */
#define MAX_WAIT_MS 200

/* How long until the open group is due (ms of the store's clock), committing it if due. */
static int group_wait(esg_gateway *g, int *wait_ms) {
  int64_t next = 0;
  int rc = esg_store_flush_due(g->s, &next);
  if (rc != ESG_OK) return esg__fail(&g->err, rc, "committing the group: %s", esg_errmsg(g->s));
  if (next) {
    int64_t left = next - esg_store_now(g->s);
    if (left < *wait_ms) *wait_ms = left < 0 ? 0 : (int)left;
  }
  return ESG_OK;
}

int esg__gw_turn(esg_gateway *g, int fd, int timeout_ms) {
  int wait = timeout_ms < MAX_WAIT_MS ? timeout_ms : MAX_WAIT_MS;
  int rc = group_wait(g, &wait);
  if (rc != ESG_OK) return rc;
  if (g->egress && esg__egress_jobs(g->egress)) return esg__gw_engine(g, fd, wait, true);
  if (wait > 0) {
    struct pollfd p = {fd, POLLIN, 0};
    poll(fd >= 0 ? &p : NULL, fd >= 0 ? 1 : 0, wait);
  }
  return ESG_OK;
}

int esg_gateway_poll(esg_gateway *g, int timeout_ms) {
  int rc = esg__gw_enter(g, "esg_gateway_poll");
  if (rc != ESG_OK) return rc;
  return esg__gw_turn(g, -1, timeout_ms < 0 ? 0 : timeout_ms);
}

int esg__gw_drain(esg_gateway *g) {
  int rc = esg__gw_outbox_commit(g);
  while (rc == ESG_OK && g->egress && esg__egress_jobs(g->egress)) rc = esg__gw_turn(g, -1, MAX_WAIT_MS);
  return rc;
}

int esg_gateway_drain(esg_gateway *g) {
  int rc = esg__gw_enter(g, "esg_gateway_drain");
  return rc == ESG_OK ? esg__gw_drain(g) : rc;
}

int esg_gateway_run(esg_gateway *g, const esg_gateway_source *src) {
  int rc = esg__gw_enter(g, "esg_gateway_run");
  if (rc != ESG_OK) return rc;
  if (!src || !src->next) return esg__fail(&g->err, ESG_EINVAL, "source is NULL or has no next");
  g->lineno = 0;
  for (;;) {
    const char *data;
    size_t len;
    rc = src->next(src->ud, &data, &len);
    if (rc == ESG_OK) {
      g->lineno++;
      rc = esg__gw_push(g, data, len);
      if (rc < 0 && rc != ESG_ECALLBACK) return rc; /* the store failed: stop */
      /* deliveries go on between events too, without waiting */
      if (g->egress && esg__egress_jobs(g->egress)) esg__gw_engine(g, -1, 0, false);
      continue;
    }
    if (rc == ESG_ETOOBIG) { /* a line past the limit: a fault, and the run goes on */
      g->lineno++;
      esg__gw_fault_line(g, data, len, esg_errmsg(NULL));
      continue;
    }
    if (rc == ESG_NOT_FOUND) break;
    if (rc != ESG_BUSY) return esg__fail(&g->err, rc, "the source failed: %s", esg_errmsg(NULL));
    if ((rc = esg__gw_turn(g, src->fd, MAX_WAIT_MS)) != ESG_OK) return rc;
  }
  if ((rc = esg_gateway_drain(g)) != ESG_OK) return rc;
  rc = esg_store_flush(g->s);
  return rc == ESG_OK ? ESG_OK : esg__fail(&g->err, rc, "committing: %s", esg_errmsg(g->s));
}
