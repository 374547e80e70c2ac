/*
 * Process-wide state of the cache, in a registry keyed by the store file's
 * path: every handle of the process on one file shares a group holding the
 * in-flight loads (single flight across handles, i.e. threads: one caller runs
 * the loader, the others wait for its outcome) and the per-key-bucket stamps
 * bumped on every write, so a handle notices that another handle of the process
 * changed a key it holds in memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static esg__cache_group *reg_head;

/* ------------------------------------------------------------- registry -- */

static esg__cache_group *group_new(const char *path) {
  esg__cache_group *g = esg__calloc(1, sizeof *g);
  if (!g) return NULL;
  if (path && !(g->path = esg__strdup(path))) {
    esg__free(g);
    return NULL;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, &ca);
  pthread_condattr_destroy(&ca);
  for (int i = 0; i < ESG__CACHE_STAMPS; i++) atomic_init(&g->stamps[i], 0);
  g->refs = 1;
  return g;
}

static void group_free(esg__cache_group *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  esg__free(g->path);
  esg__free(g);
}

esg__cache_group *esg__cache_group_acquire(const char *path) {
  if (!*path) return group_new(NULL);
  pthread_mutex_lock(&reg_mu);
  esg__cache_group *g = reg_head;
  while (g && strcmp(g->path, path) != 0) g = g->next;
  if (g) {
    g->refs++;
  } else if ((g = group_new(path))) {
    g->next = reg_head;
    reg_head = g;
  }
  pthread_mutex_unlock(&reg_mu);
  return g;
}

void esg__cache_group_release(esg__cache_group *g) {
  if (!g) return;
  if (!g->path) {
    group_free(g);
    return;
  }
  pthread_mutex_lock(&reg_mu);
  if (--g->refs == 0) {
    esg__cache_group **p = &reg_head;
    while (*p != g) p = &(*p)->next;
    *p = g->next;
    group_free(g);
  }
  pthread_mutex_unlock(&reg_mu);
}

/* -------------------------------------------------------- single flight -- */

static void flight_free(esg__flight *f) {
  esg__free(f->key);
  esg__free(f);
}

static esg__flight *flight_find(esg__cache_group *g, uint64_t h, const char *key, size_t klen) {
  for (esg__flight *f = g->flights; f; f = f->next)
    if (f->hash == h && f->klen == klen && memcmp(f->key, key, klen) == 0) return f;
  return NULL;
}

void esg__cache_flight_finish(esg__cache_group *g, esg__flight *f, int rc, const char *msg) {
  pthread_mutex_lock(&g->mu);
  f->done = true;
  f->rc = rc;
  snprintf(f->msg, sizeof f->msg, "%s", msg);
  esg__flight **p = &g->flights;
  while (*p != f) p = &(*p)->next;
  *p = f->next; /* new callers now read the store instead of joining */
  bool last = f->waiters == 0;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  if (last) flight_free(f);
}

/* Waits for f (g->mu held; released on return). Returns the leader's outcome or ESG_ETIMEDOUT. */
static int flight_wait(esg_cache *c, esg__cache_group *g, esg__flight *f, const char *key) {
  f->waiters++;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  if (c->load_timeout >= 0) {
    until.tv_sec += (time_t)(c->load_timeout / 1000);
    until.tv_nsec += (long)(c->load_timeout % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  }
  while (!f->done) {
    int w = c->load_timeout < 0 ? pthread_cond_wait(&g->cv, &g->mu) : pthread_cond_timedwait(&g->cv, &g->mu, &until);
    if (w == ETIMEDOUT) break;
  }
  int rc;
  if (f->done) {
    rc = f->rc;
    if (rc != ESG_OK) esg__fail(&c->err, rc, "%s", f->msg);
  } else {
    rc = esg__fail(&c->err, ESG_ETIMEDOUT, "waited %lld ms for another caller's load of cache key \"%s\"",
                   (long long)c->load_timeout, key);
  }
  bool last = --f->waiters == 0 && f->done;
  pthread_mutex_unlock(&g->mu);
  if (last) flight_free(f);
  return rc;
}

int esg__cache_flight_enter(esg_cache *c, uint64_t h, const char *key, size_t klen, esg__flight **mine,
                            bool *joined) {
  esg__cache_group *g = c->g;
  *mine = NULL;
  pthread_mutex_lock(&g->mu);
  esg__flight *f = flight_find(g, h, key, klen);
  *joined = f != NULL;
  if (f) return flight_wait(c, g, f, key);
  f = esg__calloc(1, sizeof *f);
  char *kcopy = f ? esg__malloc(klen + 1) : NULL;
  if (!kcopy) {
    pthread_mutex_unlock(&g->mu);
    esg__free(f);
    return esg__fail(&c->err, ESG_ENOMEM, "out of memory starting a load");
  }
  memcpy(kcopy, key, klen + 1);
  f->key = kcopy;
  f->klen = klen;
  f->hash = h;
  f->next = g->flights;
  g->flights = f;
  pthread_mutex_unlock(&g->mu);
  *mine = f;
  return ESG_OK;
}
