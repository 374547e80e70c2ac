/*
 * The ingress as a gateway source, on the gateway's thread: next() takes a request from
 * the queue and hands its envelope to the pipeline, and the next call learns what
 * became of it (gateway_ack.h) and decides its answer.
 *
 * The acknowledgement rule: a 2xx is sent only once what the event wrote is committed.
 * Answers that would be 2xx wait in a list; the list's commit is esg_store_flush, done
 * as soon as the queue is empty (nothing more to put in the group), or when 128
 * answers wait or the oldest has waited 5 ms (a queue that never empties). So under
 * load a group holds what arrived while the last one committed, and alone a request
 * waits for no timer. Without group commit every write is committed when made and the
 * flush costs nothing. A commit that fails turns the list's answers into 503: the
 * sender retries, and what did land is a duplicate then.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "gateway/gateway_ack.h"
#include "ingress_int.h"

#define WAIT_MAX 128
#define WAIT_US 5000
/* How long the end of a run waits for the answers to be sent. */
#define SEND_WAIT_MS 2000

static void wait_commit(esg_ingress *ing, esg__req *r, int status, const char *answer) {
  r->status = status;
  snprintf(r->answer, sizeof r->answer, "%s", answer);
  r->next = NULL;
  if (ing->wtail) ing->wtail->next = r;
  else ing->whead = r, ing->woldest_us = esg__mono_us();
  ing->wtail = r;
  ing->wlen++;
}

/* Commits and sends the answers waiting for it. */
static void commit(esg_ingress *ing) {
  if (!ing->whead) return;
  esg_store *s = esg__gw_ack_store(ing->g);
  int rc = s ? esg_store_flush(s) : ESG_ESTATE;
  esg__req *r = ing->whead;
  ing->whead = ing->wtail = NULL;
  ing->wlen = 0;
  pthread_mutex_lock(&ing->mu);
  ing->waiting_seen = 0;
  pthread_mutex_unlock(&ing->mu);
  while (r) {
    esg__req *next = r->next; /* read before the resume hands r over */
    if (rc == ESG_OK) esg__ingress_answer(ing, r, r->status, NULL, false);
    else esg__ingress_answer(ing, r, 503, "{\"error\":\"the store could not commit\"}", true);
    r = next;
  }
}

/* The event of the request given last has run: its answer. */
static void finish(esg_ingress *ing) {
  esg__req *r = ing->cur;
  ing->cur = NULL;
  esg__gw_ack a;
  esg__gw_ack_last(ing->g, &a);
  esg_gateway_stats st;
  esg_gateway_get_stats(ing->g, &st);
  char answer[ESG__ANSWER_MAX];
  if (a.rc == ESG_BUSY) {
    esg__ingress_answer(ing, r, 503, "{\"error\":\"in progress elsewhere\"}", true);
  } else if (a.rc == ESG_ECALLBACK && a.claim == ESG_EMISMATCH) {
    esg__ingress_answer(ing, r, 409, "{\"error\":\"this webhook id came before with another body\"}", false);
  } else if (a.rc == ESG_ECALLBACK && a.fault > 0) { /* stored as a fault record, for resubmission */
    snprintf(answer, sizeof answer, "{\"status\":\"fault\",\"id\":%s,\"fault\":%lld}", r->id_json, (long long)a.fault);
    wait_commit(ing, r, 202, answer);
  } else if (a.rc != ESG_OK) {
    esg__ingress_answer(ing, r, 503, "{\"error\":\"the event could not be stored\"}", true);
  } else {
    snprintf(answer, sizeof answer, "{\"status\":\"%s\",\"id\":%s}",
             st.duplicates > ing->dup_before ? "duplicate" : "accepted", r->id_json);
    wait_commit(ing, r, 200, answer);
  }
}

static int src_next(void *ud, const char **data, size_t *len) {
  esg_ingress *ing = ud;
  if (ing->cur) finish(ing);
  if (ing->whead && (ing->wlen >= WAIT_MAX || esg__mono_us() - ing->woldest_us >= WAIT_US)) commit(ing);
  uint64_t n;
  while (read(ing->wake, &n, sizeof n) > 0) {
  } /* drained before the queue is looked at: a request queued after this wakes the next poll */
  esg_gateway_stats st;
  esg_gateway_get_stats(ing->g, &st);
  pthread_mutex_lock(&ing->mu);
  esg__req *r = ing->qhead;
  if (r) {
    ing->qhead = r->next;
    if (!ing->qhead) ing->qtail = NULL;
    ing->qlen--;
    ing->qbytes -= r->env_len;
  } else if (atomic_load(&ing->stop)) {
    ing->closed = true; /* from now on the server refuses what comes */
  }
  ing->gst = st;
  ing->waiting_seen = ing->wlen;
  bool closed = ing->closed;
  pthread_mutex_unlock(&ing->mu);
  if (r) {
    r->next = NULL;
    ing->cur = r;
    ing->dup_before = st.duplicates;
    esg__gw_ack_hash(ing->g, r->hash, sizeof r->hash);
    *data = r->env;
    *len = r->env_len;
    return ESG_OK;
  }
  commit(ing); /* nothing more for this group */
  if (!closed) return ESG_BUSY;
  /* stopping, and every request taken is answered: let the server send the answers */
  for (int waited = 0; waited < SEND_WAIT_MS; waited += 5) {
    pthread_mutex_lock(&ing->mu);
    unsigned left = ing->answering;
    pthread_mutex_unlock(&ing->mu);
    if (!left) break;
    esg__sleep_ms(5);
  }
  return ESG_NOT_FOUND;
}

int esg_ingress_source(esg_ingress *ing, esg_gateway_source *out) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (!ing) return esg__fail(NULL, ESG_EINVAL, "ingress is NULL");
  out->next = src_next;
  out->ud = ing;
  out->fd = ing->wake;
  return ESG_OK;
}

void esg__ingress_refuse_all(esg_ingress *ing) {
  pthread_mutex_lock(&ing->mu);
  esg__req *q = ing->qhead;
  ing->qhead = ing->qtail = NULL;
  ing->qlen = 0;
  ing->qbytes = 0;
  ing->closed = true;
  pthread_mutex_unlock(&ing->mu);
  static const char busy[] = "{\"error\":\"the gateway stopped\"}";
  if (ing->cur) esg__ingress_answer(ing, ing->cur, 503, busy, true);
  ing->cur = NULL;
  for (esg__req *w = ing->whead, *next; w; w = next) {
    next = w->next;
    esg__ingress_answer(ing, w, 503, busy, true);
  }
  ing->whead = ing->wtail = NULL;
  ing->wlen = 0;
  for (esg__req *next; q; q = next) {
    next = q->next;
    esg__ingress_answer(ing, q, 503, busy, true);
  }
  for (int waited = 0; waited < SEND_WAIT_MS; waited += 5) {
    pthread_mutex_lock(&ing->mu);
    unsigned left = ing->answering;
    pthread_mutex_unlock(&ing->mu);
    if (!left) break;
    esg__sleep_ms(5);
  }
}
