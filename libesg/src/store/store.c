/*
 * The store handle: opening a backend by URI, the clock, the process check,
 * batches, and the group-commit calls. Every public store call begins with
 * esg__enter (or esg__enter_read, where a due group commits even when the call
 * only reads).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include "store/store_int.h"

static int inherited_fail(esg_store *s) {
  return esg__fail(&s->err, ESG_ESTATE,
                   "store handle was opened by process %ld; open the store again in this process (pid %ld)",
                   s->pid, (long)getpid());
}

int esg__enter_fail(esg_store *s) {
  return s ? inherited_fail(s) : esg__fail(NULL, ESG_EINVAL, "store is NULL");
}

void esg__dep_link(esg_store *s, esg__dep *d, void (*detach)(esg__dep *d)) {
  d->detach = detach;
  d->next = &s->deps;
  d->prev = s->deps.prev;
  s->deps.prev->next = d;
  s->deps.prev = d;
}

void esg__dep_unlink(esg__dep *d) {
  if (!d->next) return;
  d->prev->next = d->next;
  d->next->prev = d->prev;
  d->next = d->prev = NULL;
}

/* The caller's clock is a callback like any other (see ESG__CALLBACK). */
static int64_t counted_clock(void *ud) {
  esg_store *s = ud;
  s->in_cb++;
  int64_t t = s->user_clock(s->user_clock_ud);
  s->in_cb--;
  return t;
}

int esg__tick(esg_store *s) { return s->group && !s->batch ? s->be->flush_due(s->b, esg__now(s), NULL) : ESG_OK; }

bool esg__inherited(const esg_store *s) { return s->forks != esg__forks || s->pid != (long)getpid(); }

/* A negative option is a caller's mistake worth naming, with the value it gave. */
static int check_opts(const esg_store_opts *o) {
  if (o->durability != ESG_DURABILITY_NORMAL && o->durability != ESG_DURABILITY_FULL)
    return esg__fail(NULL, ESG_EINVAL, "durability must be ESG_DURABILITY_NORMAL or ESG_DURABILITY_FULL (got %d)",
                     (int)o->durability);
  if (o->busy_timeout_ms < 0)
    return esg__fail(NULL, ESG_EINVAL, "busy_timeout_ms must not be negative (got %d)", o->busy_timeout_ms);
  if (o->group_commit_ms < 0)
    return esg__fail(NULL, ESG_EINVAL, "group_commit_ms must not be negative (got %d)", o->group_commit_ms);
  if (o->group_commit_max < 0)
    return esg__fail(NULL, ESG_EINVAL, "group_commit_max must not be negative (got %d)", o->group_commit_max);
  return ESG_OK;
}

int esg_store_open(esg_store **out, const char *uri, const esg_store_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!uri || !*uri) return esg__fail(NULL, ESG_EINVAL, "store path is NULL or empty");
  esg_store_opts o;
  int rc = ESG__OPTS_COPY(NULL, esg_store_opts, &o, opts);
  if (rc == ESG_OK) rc = check_opts(&o);
  if (rc != ESG_OK) return rc;
  esg__be_opts bo = {0};
  const esg__backend *be = esg__backend_for(uri, &bo.target, NULL);
  if (!be) return ESG_EINVAL;
  if (!*bo.target) return esg__fail(NULL, ESG_EINVAL, "store URI \"%s\" names no store after its scheme", uri);
  esg_store *s = esg__calloc(1, sizeof *s);
  if (!s) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the store");
  esg__handle_init(&s->err, ESG__H_STORE);
  s->deps.next = s->deps.prev = &s->deps;
  esg__watch_forks();
  s->forks = esg__forks;
  s->pid = (long)getpid();
  s->be = be;
  s->clock = o.clock ? counted_clock : esg_clock_real;
  s->clock_ud = o.clock ? s : NULL;
  s->user_clock = o.clock;
  s->user_clock_ud = o.clock_ud;
  s->group = o.group_commit_ms > 0;
  /* Tokens only need to be unpredictable across processes, not secret. */
  uint64_t seed = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed = 0;
    close(fd);
  }
  s->rng = seed ^ ((uint64_t)s->pid << 32) ^ (uint64_t)esg_clock_real(NULL) ^ (uintptr_t)s;
  if (!s->rng) s->rng = 0x9e3779b97f4a7c15ULL;
  bo.uri = uri;
  bo.durability = o.durability;
  bo.busy_timeout_ms = o.busy_timeout_ms;
  bo.group_ms = o.group_commit_ms;
  bo.group_max = o.group_commit_max ? o.group_commit_max : 1000;
  bo.clock = s->clock;
  bo.clock_ud = s->clock_ud;
  bo.err = &s->err;
  rc = be->open(&s->b, &bo);
  if (rc != ESG_OK) {
    esg__fail(NULL, rc, "%s", s->err.msg);
    if (s->b) be->close(s->b, false);
    esg__free(s);
    return rc;
  }
  *out = s;
  return ESG_OK;
}

/*
 * Close detaches the handles built on the store, commits an open group (its status is
 * the result; the text goes to the thread's slot, the handle being gone) and rolls
 * back an open batch. A child of fork() writes nothing: the group or batch is the
 * parent's.
 */
int esg_store_close(esg_store *s) {
  if (!s) return ESG_OK;
  bool inherited = esg__inherited(s);
  /* a child's copy of in_cb counts the parent's threads, which are not here */
  if (s->in_cb > 0 && !inherited)
    return esg__fail(&s->err, ESG_ESTATE,
                     "esg_store_close called from a callback of a call on this store; nothing was closed");
  /* an open batch (the caller's or a listing's) first, so that it does not take with it
     what detaching writes */
  if (s->batch && !inherited) {
    s->batch = false;
    s->be->rollback(s->b);
  }
  /* the handles built on it next: an egress engine still releases its claims */
  while (s->deps.next != &s->deps) {
    esg__dep *d = s->deps.next;
    esg__dep_unlink(d);
    d->detach(d);
  }
  int rc = ESG_OK;
  if (s->group && !inherited) rc = s->be->flush(s->b);
  if (rc != ESG_OK) esg__fail(NULL, rc, "%s", s->err.msg); /* the handle is gone: the text goes to the thread */
  s->be->close(s->b, inherited);
  esg__handle_end(&s->err);
  esg__free(s);
  return rc;
}

int64_t esg_store_now(esg_store *s) { return esg__now(s); }
const char *esg_store_backend(const esg_store *s) { return s->be->name; }
int esg_store_schema_version(esg_store *s) {
  return esg__enter_read(s) == ESG_OK ? s->be->schema_version(s->b) : -1;
}

uint64_t esg_store_bytes_written(esg_store *s) {
  if (esg__enter_read(s) != ESG_OK) return 0;
  return s->be->bytes_written ? s->be->bytes_written(s->b) : 0;
}

int64_t esg__token(esg_store *s) {
  /* xorshift64*: fast, and 63 random bits make a collision between owners negligible */
  uint64_t x = s->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  int64_t t = (int64_t)((x * 0x2545F4914F6CDD1DULL) >> 1);
  return t ? t : 1;
}

int esg_store_flush(esg_store *s) {
  int rc = esg__enter(s);
  if (rc != ESG_OK || s->batch) return rc;
  return s->be->flush(s->b);
}

int esg_store_flush_due(esg_store *s, int64_t *next_ms) {
  if (next_ms) *next_ms = 0;
  int rc = esg__enter(s);
  if (rc != ESG_OK || !s->group || s->batch) return rc;
  return s->be->flush_due(s->b, esg__now(s), next_ms);
}

int esg_store_begin(esg_store *s) {
  int rc = esg__enter(s);
  if (rc != ESG_OK) return rc;
  if (s->batch) return esg__fail(&s->err, ESG_ESTATE, "a batch is already open (batches do not nest)");
  rc = s->be->begin(s->b); /* (commits an open group first) */
  if (rc == ESG_OK) s->batch = true;
  return rc;
}

int esg_store_commit(esg_store *s) {
  int rc = esg__enter(s);
  if (rc != ESG_OK) return rc;
  if (!s->batch) return esg__fail(&s->err, ESG_ESTATE, "no batch is open");
  s->batch = false;
  return s->be->commit(s->b);
}

int esg_store_rollback(esg_store *s) {
  int rc = esg__enter(s);
  if (rc != ESG_OK) return rc;
  if (!s->batch) return esg__fail(&s->err, ESG_ESTATE, "no batch is open");
  s->batch = false;
  return s->be->rollback(s->b);
}
