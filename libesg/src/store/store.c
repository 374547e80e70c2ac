/*
 * The store handle: opening a backend, the clock, batches and group commit.
 * Features call esg__unit_begin/end around their writes so one place decides
 * whether a write commits alone, joins a caller's batch, or joins a group.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include "backend/backend.h"

/* See esg__check_process. The child handler runs in the child alone, before any
   thread of its own exists, so a plain counter needs no atomics. */
unsigned esg__forks;
static pthread_once_t forks_once = PTHREAD_ONCE_INIT;
static void count_fork(void) { esg__forks++; }
static void watch_forks(void) { pthread_atfork(NULL, NULL, count_fork); }

int esg__inherited_fail(esg_store *s) {
  return esg__fail(&s->err, ESG_ESTATE,
                   "store handle was opened by process %ld; open the store again in this process (pid %ld)",
                   s->pid, (long)getpid());
}

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

int esg_store_open(esg_store **out, const char *path, const esg_store_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!path || !*path) return esg__fail(NULL, ESG_EINVAL, "store path is NULL or empty");
  esg_store_opts o = {0};
  if (opts) o = *opts;
  int rc = check_opts(&o);
  if (rc != ESG_OK) return rc;
  esg_store *s = calloc(1, sizeof *s);
  if (!s) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the store");
  pthread_once(&forks_once, watch_forks);
  s->forks = esg__forks;
  s->pid = (long)getpid();
  s->be = &esg__sqlite_backend;
  s->clock = o.clock ? o.clock : esg_clock_real;
  s->clock_ud = o.clock ? o.clock_ud : NULL;
  s->group_ms = o.group_commit_ms;
  s->group_max = o.group_commit_max ? o.group_commit_max : 1000;
  /* Tokens only need to be unpredictable across processes, not secret. */
  uint64_t seed = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed = 0;
    close(fd);
  }
  s->rng = seed ^ ((uint64_t)s->pid << 32) ^ (uint64_t)esg_clock_real(NULL) ^ (uintptr_t)s;
  if (!s->rng) s->rng = 0x9e3779b97f4a7c15ULL;
  rc = s->be->open(s, path, &o);
  if (rc != ESG_OK) {
    esg__fail(NULL, rc, "%s", s->err.msg);
    s->be->close(s);
    free(s);
    return rc;
  }
  *out = s;
  return ESG_OK;
}

void esg_store_close(esg_store *s) {
  if (!s) return;
  if (esg__inherited(s)) {
    /* A child's copy: the open group or batch is the parent's to commit, so it is
       dropped here, unwritten; the backend closes without writing (sq_close). */
    s->group_open = s->batch = false;
  } else {
    if (s->group_open) esg_store_flush(s);
    if (s->batch) s->be->rollback(s);
  }
  esg__pend_free(s);
  s->be->close(s);
  esg__buf_free(&s->result);
  esg__buf_free(&s->doc);
  free(s);
}

int64_t esg_store_now(esg_store *s) { return s->clock(s->clock_ud); }
const char *esg_store_backend(const esg_store *s) { return s->be->name; }
int esg_store_schema_version(esg_store *s) {
  return esg__check_process(s) == ESG_OK ? s->be->schema_version(s) : -1;
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
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = esg__check_process(s);
  if (rc != ESG_OK) return rc;
  if (!s->group_open) return ESG_OK;
  rc = esg__pend_write_all(s); /* claims still in progress go in as such */
  s->group_open = false;
  s->group_n = 0;
  int crc = s->be->commit(s);
  return rc != ESG_OK ? rc : crc;
}

int esg_store_begin(esg_store *s) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  if (s->batch) return esg__fail(&s->err, ESG_ESTATE, "a batch is already open (batches do not nest)");
  int rc = esg_store_flush(s); /* (refuses an inherited handle) */
  if (rc == ESG_OK) rc = s->be->begin(s);
  if (rc == ESG_OK) s->batch = true;
  return rc;
}

int esg_store_commit(esg_store *s) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = esg__check_process(s);
  if (rc != ESG_OK) return rc;
  if (!s->batch) return esg__fail(&s->err, ESG_ESTATE, "no batch is open");
  s->batch = false;
  return s->be->commit(s);
}

int esg_store_rollback(esg_store *s) {
  if (!s) return esg__fail(NULL, ESG_EINVAL, "store is NULL");
  int rc = esg__check_process(s);
  if (rc != ESG_OK) return rc;
  if (!s->batch) return esg__fail(&s->err, ESG_ESTATE, "no batch is open");
  s->batch = false;
  return s->be->rollback(s);
}

/* Every feature's writes begin here, so this is where an inherited handle stops them. */
int esg__unit_begin(esg_store *s, bool need_tx, bool *own) {
  *own = false;
  int prc = esg__check_process(s);
  if (prc != ESG_OK) return prc;
  if (s->batch || s->group_open) return ESG_OK;
  if (s->group_ms > 0) {
    int rc = s->be->begin(s);
    if (rc != ESG_OK) return rc;
    s->group_open = true;
    s->group_n = 0;
    s->group_started = s->clock(s->clock_ud);
    return ESG_OK;
  }
  if (!need_tx) return ESG_OK;
  int rc = s->be->begin(s);
  if (rc == ESG_OK) *own = true;
  return rc;
}

int esg__unit_end(esg_store *s, bool own, int rc) { return esg__unit_end_n(s, own, rc, 1); }

int esg__unit_end_n(esg_store *s, bool own, int rc, int n) {
  if (own) {
    if (rc < 0) {
      s->be->rollback(s);
      return rc;
    }
    int crc = s->be->commit(s);
    return crc == ESG_OK ? rc : crc;
  }
  if (s->group_open && !s->batch) {
    /* (group_n < group_max between units: held at group_max, the sum cannot overflow) */
    s->group_n = n < s->group_max - s->group_n ? s->group_n + n : s->group_max;
    if (s->group_n >= s->group_max || s->clock(s->clock_ud) - s->group_started >= s->group_ms) {
      int crc = esg_store_flush(s);
      if (crc != ESG_OK) return crc;
    }
  }
  return rc;
}
