/*
 * Helpers every benchmark program needs (../shared/bench/WORKLOAD.md): the
 * monotonic clock, W1's events, the median of repetitions, N and REPS from the
 * arguments or the environment, and the temporary directory and database files.
 * Static functions in a header, since bench/CMakeLists.txt builds every
 * bench_*.c as a program of its own. Define BENCH_NAME (the program's name, for
 * messages) before including it.
 */
#ifndef ESG_BENCH_UTIL_H
#define ESG_BENCH_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_util.h"
#endif

/* Seconds on the monotonic clock. */
static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------- W1's events -- */

/* The events, generated before any clock starts: one buffer, offsets into it. */
typedef struct events {
  size_t n;
  char *buf;
  size_t *off, *len;
} events;

/* Event i is evt-<i> about thing-<i % 1000>; 0, or -1 when out of memory. */
static inline int make_events(events *ev, size_t n) {
  ev->n = n;
  ev->buf = malloc(n * 200 + 1);
  ev->off = malloc(n * sizeof *ev->off);
  ev->len = malloc(n * sizeof *ev->len);
  if (!ev->buf || !ev->off || !ev->len) return -1;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    int w = snprintf(ev->buf + at, 201,
                     "{\"id\":\"evt-%zu\",\"type\":\"thing-updated\",\"timestamp\":%lld,"
                     "\"partitionKey\":\"thing-%zu\",\"thing\":{\"id\":\"thing-%zu\",\"name\":\"name-%zu\","
                     "\"price\":%zu}}",
                     i, 1700000000000LL + (long long)i, i % 1000, i % 1000, i, i);
    if (w < 0 || w > 200) return -1;
    ev->off[i] = at;
    ev->len[i] = (size_t)w;
    at += (size_t)w + 1; /* keep the NUL: handy, and not part of the event's bytes */
  }
  return 0;
}

static inline void free_events(events *ev) {
  free(ev->buf);
  free(ev->off);
  free(ev->len);
}

/* ------------------------------------------------------------- figures -- */

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of v[0..n) (n > 0); sorts v. */
static inline double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * argv[i] when there is one, else the environment variable env, else def: an
 * integer of at least min; anything else ends the program (exit 2).
 */
static inline long arg_or_env(int argc, char **argv, int i, const char *env, long def, long min) {
  const char *v = argc > i ? argv[i] : getenv(env);
  if (!v || !*v) return def;
  char *end = NULL;
  long x = strtol(v, &end, 10);
  if (*end || x < min) {
    fprintf(stderr, BENCH_NAME ": bad value \"%s\" (usage: " BENCH_NAME " [N [REPS]])\n", v);
    exit(2);
  }
  return x;
}

/* ------------------------------------------------------ temporary files -- */

/* Where temporary files go: $ESG_BENCH_DIR, else $TMPDIR, else /tmp. */
static inline const char *bench_base_dir(void) {
  const char *base = getenv("ESG_BENCH_DIR");
  if (!base || !*base) base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  return base;
}

/* Makes a fresh directory <base>/esg-bench-<tag>-XXXXXX in dir[cap]; 0, or -1 (reported). */
static inline int bench_mkdtemp(char *dir, size_t cap, const char *tag) {
  int w = snprintf(dir, cap, "%s/esg-bench-%s-XXXXXX", bench_base_dir(), tag);
  if (w < 0 || (size_t)w >= cap || !mkdtemp(dir)) {
    fprintf(stderr, BENCH_NAME ": mkdtemp %s: %s\n", dir, strerror(errno));
    return -1;
  }
  return 0;
}

/* Removes a database file and its companions (WAL, shared memory, journal); absent ones are fine. */
static inline void remove_db(const char *path) {
  static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
  char p[4200];
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    int w = snprintf(p, sizeof p, "%s%s", path, suffix[i]);
    if (w < 0 || (size_t)w >= sizeof p) continue;
    if (unlink(p) != 0 && errno != ENOENT) fprintf(stderr, BENCH_NAME ": unlink %s: %s\n", p, strerror(errno));
  }
}

#endif
