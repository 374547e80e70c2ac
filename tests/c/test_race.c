/*
 * Concurrency between processes: 4 processes race to claim the same 10,000 keys
 * in one store file; every key must be completed exactly once, by one owner.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"

#define PROCS 4
#define KEYS 10000

static void worker(const char *path, int id, int fd, int group_ms) {
  esg_store *s = NULL;
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.busy_timeout_ms = 30000;
  o.group_commit_ms = group_ms; /* > 0: claims pend in memory inside each open group */
  o.group_commit_max = 50;
  if (esg_store_open(&s, path, &o) != ESG_OK) _exit(3);
  unsigned char *mine = calloc(KEYS, 1);
  unsigned seed = (unsigned)id * 7919u;
  for (int n = 0; n < KEYS; n++) {
    /* each process walks the keys from a different place and direction */
    int i = id % 2 ? (n + id * 2500) % KEYS : (KEYS - 1 - n + id * 1234) % KEYS;
    char key[32];
    snprintf(key, sizeof key, "key-%d", i);
    esg_claim_info c;
    int rc = esg_claim(s, key, &i, sizeof i, 60000, 3600000, &c);
    if (rc == ESG_NEW) {
      if (rand_r(&seed) % 16 == 0) usleep(50); /* let others collide with in-progress work */
      char result[8];
      snprintf(result, sizeof result, "p%d", id);
      if (esg_complete(s, key, c.token, result, strlen(result)) != ESG_OK) _exit(4);
      mine[i] = 1;
    } else if (rc != ESG_DUPLICATE && rc != ESG_BUSY) {
      fprintf(stderr, "worker %d: %s: %s\n", id, esg_status_name(rc), esg_errmsg(s));
      _exit(5);
    }
  }
  esg_store_close(s); /* commits the last group */
  ssize_t w = write(fd, mine, KEYS);
  _exit(w == KEYS ? 0 : 6);
}

static void race(const char *name, int group_ms) {
  TU_REQUIRE(tu_store_shared(), "4 processes on one store: " TU_NOT_SHARED);
  const char *path = tu_store(name);
  int64_t now = 0;
  esg_store_close(tu_open(path, &now)); /* create the schema once, before the race */
  int fds[PROCS][2];
  pid_t pids[PROCS];
  for (int p = 0; p < PROCS; p++) {
    if (pipe(fds[p]) != 0) abort();
    pids[p] = fork();
    if (pids[p] == 0) {
      close(fds[p][0]);
      worker(path, p, fds[p][1], group_ms);
    }
    close(fds[p][1]);
  }
  int owners[KEYS] = {0};
  unsigned char *buf = malloc(KEYS);
  for (int p = 0; p < PROCS; p++) {
    size_t got = 0;
    ssize_t r;
    while (got < KEYS && (r = read(fds[p][0], buf + got, KEYS - got)) > 0) got += (size_t)r;
    close(fds[p][0]);
    int status = 0;
    waitpid(pids[p], &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(got == KEYS);
    for (int i = 0; i < KEYS && got == KEYS; i++) owners[i] += buf[i];
  }
  free(buf);
  int once = 0, twice = 0;
  for (int i = 0; i < KEYS; i++) {
    once += owners[i] == 1;
    twice += owners[i] > 1;
  }
  fprintf(stderr, "  keys completed once: %d, more than once: %d\n", once, twice);
  CHECK(twice == 0);
  CHECK(once == KEYS);
  /* and the store agrees: every key is a duplicate carrying its one owner's result */
  esg_store *s = NULL;
  CHECK_RC(ESG_OK, esg_store_open(&s, path, NULL));
  int dup = 0;
  for (int i = 0; i < KEYS; i++) {
    char key[32];
    snprintf(key, sizeof key, "key-%d", i);
    esg_claim_info c;
    dup += esg_claim(s, key, &i, sizeof i, 60000, 3600000, &c) == ESG_DUPLICATE && c.result_len == 2;
  }
  CHECK(dup == KEYS);
  esg_store_close(s);
}

static void test_race(void) { race("race.db", 0); }

/* The same race with group commit: every process holds its group's claims in memory. */
static void test_race_grouped(void) { race("race-grouped.db", 5); }

int main(void) {
  TU_SUITE {
    RUN(test_race);
    RUN(test_race_grouped);
  }
  return tu_done();
}
