/*
 * The circuit breaker per destination host. After circuit_failures retryable failures
 * in a row (network errors, 408, 425, 429, 5xx) the host's circuit opens: no delivery
 * to it starts, so its deliveries wait without burning attempts, instead of each one
 * running into the same wall until it ends as a fault. Once the open time has passed,
 * one delivery goes as the probe (half-open): its success closes the circuit, its
 * failure opens it again for twice as long (up to the backoff cap). A delivery that
 * would wait past its time limit (max_elapsed_ms from its first attempt, or from when it
 * first waited when it has none) ends exhausted, naming the open circuit.
 */
#include <curl/curl.h>
#include <string.h>
#include "egress_int.h"
#include "core/internal.h"

enum { CLOSED, OPEN, HALF_OPEN };

struct esg__circuit {
  char *host;
  int fails;        /* retryable failures in a row */
  int state;
  int64_t until;    /* OPEN: when the probe may go */
  int64_t open_ms;  /* how long it opened for the last time */
};

/* The host of url, lowercased by libcurl's parser; "" when it has none. */
static char *host_of(const char *url) {
  CURLU *u = curl_url();
  char *h = NULL, *copy = NULL;
  if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK)
    copy = esg__strdup(h);
  else
    copy = esg__strdup("");
  curl_free(h);
  curl_url_cleanup(u);
  return copy;
}

esg__circuit *esg__circuit_for(esg__circuits *t, const char *url) {
  char *host = host_of(url);
  if (!host) return NULL;
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->c[i]->host, host) == 0) {
      esg__free(host);
      return t->c[i];
    }
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 8;
    esg__circuit **c = esg__realloc(t->c, cap * sizeof *c);
    if (!c) {
      esg__free(host);
      return NULL;
    }
    t->c = c;
    t->cap = cap;
  }
  esg__circuit *c = esg__calloc(1, sizeof *c);
  if (!c) {
    esg__free(host);
    return NULL;
  }
  c->host = host;
  t->c[t->n++] = c;
  return c;
}

void esg__circuits_free(esg__circuits *t) {
  for (size_t i = 0; i < t->n; i++) {
    esg__free(t->c[i]->host);
    esg__free(t->c[i]);
  }
  esg__free(t->c);
  memset(t, 0, sizeof *t);
}

const char *esg__circuit_host(const esg__circuit *c) { return c->host; }

bool esg__circuit_allows(esg__circuit *c, int64_t now, int64_t *until) {
  if (c->state == CLOSED) return true;
  if (c->state == OPEN && now >= c->until) {
    c->state = HALF_OPEN; /* this delivery is the probe */
    return true;
  }
  *until = c->state == OPEN ? c->until : now + 50; /* half-open: wait for the probe's answer */
  return false;
}

void esg__circuit_result(esg__circuit *c, bool failed, const esg__circuit_policy *p, int64_t now, uint32_t *open,
                         uint64_t *opens) {
  if (!failed) {
    if (c->state != CLOSED) (*open)--;
    c->state = CLOSED;
    c->fails = 0;
    c->open_ms = 0;
    return;
  }
  c->fails++;
  if (c->state == HALF_OPEN) { /* the probe failed: open again, for longer */
    c->open_ms = c->open_ms * 2 < p->cap_ms ? c->open_ms * 2 : p->cap_ms;
  } else if (c->state == CLOSED && c->fails >= p->failures) {
    c->open_ms = p->open_ms;
    (*open)++;
  } else {
    return;
  }
  c->state = OPEN;
  c->until = esg__time_add(now, c->open_ms);
  (*opens)++;
}
