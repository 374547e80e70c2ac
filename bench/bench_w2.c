/*
 * W2: enrichment lookups (../shared/bench/WORKLOAD.md).
 *
 *   bench_w2 [N [REPS]]      N lookups (default 1000000), REPS repetitions (default 3)
 *
 * Environment: ESG_BENCH_N, ESG_BENCH_REPS (used when the argument is absent),
 * ESG_BENCH_DIR (where the database files go; default $TMPDIR or /tmp),
 * ESG_BENCH_ONLY (run only the approach with this label, for profiling).
 *
 * 1000 entities thing-0 .. thing-999 exist; N lookups draw a rank from Zipf(1.1)
 * over 1000 ranks (fixed seed) and, with probability 0.1, ask for the absent
 * entity thing-<1000 + rank> instead (a negative). Keys are generated before any
 * clock starts. Five approaches, each timed over the same N lookups:
 *   hashmap          a bare open-addressing hash map in this process holding the
 *                    same entries (values and negative markers): the ceiling;
 *   esg-memory       esg_cache_get answered by the memory tier (warmed first);
 *   raw-select       a raw SQLite point select by primary key on a fresh
 *                    connection (same rows, WITHOUT ROWID, prepared once);
 *   esg-store        esg_cache_get with the memory tier off, on a fresh store
 *                    handle (a cold process: nothing cached in it yet);
 *   esg-readthrough  esg_cache_get_or_load on an empty cache whose loader costs
 *                    100 us per call (a busy wait), plus the number of loads.
 * The machine is shared and noisy, so each libesg tier is timed interleaved with
 * its baseline: the N lookups are cut into slices, and slice by slice the
 * baseline and libesg take turns (alternating which goes first), each summing
 * only its own time. Noise then falls on both sides of a ratio alike.
 * RUN lines give every repetition, RESULT lines the medians, RATIO lines the
 * medians of the per-repetition ratios against the targets (memory >= 0.25x
 * hashmap, store >= 0.8x raw-select). Exits non-zero when any answer is wrong.
 */
#include <math.h>
#include <stdbool.h>
#include <sqlite3.h>
#include "esg.h"
#define BENCH_NAME "bench_w2"
#include "bench_util.h"

#define ENTITIES 1000
#define ABSENT_P 0.1
#define ZIPF_S 1.1
#define SEED 0x5EEDC0FFEEULL
#define LOAD_COST_NS 100000

typedef struct workload {
  size_t n;
  char *keys[2 * ENTITIES];   /* [0, 1000) present, [1000, 2000) absent */
  char *values[ENTITIES];
  size_t vlen[ENTITIES];
  uint16_t *pick;             /* the key index of each lookup */
  size_t expect_present;      /* how many lookups ask for a present key */
  char dir[4096];
} workload;

typedef struct figure {
  double eps;
  long loads; /* -1: not applicable */
} figure;

static volatile uint64_t sink; /* keeps the lookups from being optimised away */

/* splitmix64: a fixed, portable sequence. */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

static int make_workload(workload *w, size_t n) {
  memset(w->keys, 0, sizeof w->keys);
  memset(w->values, 0, sizeof w->values);
  w->n = n;
  for (int k = 0; k < 2 * ENTITIES; k++) {
    char buf[64];
    snprintf(buf, sizeof buf, "thing-%d", k);
    if (!(w->keys[k] = strdup(buf))) return -1;
    if (k < ENTITIES) {
      snprintf(buf, sizeof buf, "{\"id\":\"thing-%d\",\"name\":\"name-%d\",\"price\":%d}", k, k, k);
      if (!(w->values[k] = strdup(buf))) return -1;
      w->vlen[k] = strlen(buf);
    }
  }
  double cdf[ENTITIES], total = 0;
  for (int r = 0; r < ENTITIES; r++) cdf[r] = total += 1.0 / pow(r + 1, ZIPF_S);
  if (!(w->pick = malloc(n * sizeof *w->pick))) return -1;
  uint64_t seed = SEED;
  w->expect_present = 0;
  for (size_t i = 0; i < n; i++) {
    double u = rng_unit(&seed) * total;
    int lo = 0, hi = ENTITIES - 1;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    bool absent = rng_unit(&seed) < ABSENT_P;
    w->pick[i] = (uint16_t)(absent ? ENTITIES + lo : lo);
    if (!absent) w->expect_present++;
  }
  return 0;
}

static void free_workload(workload *w) {
  for (int k = 0; k < 2 * ENTITIES; k++) free(w->keys[k]);
  for (int k = 0; k < ENTITIES; k++) free(w->values[k]);
  free(w->pick);
}

/* ------------------------------------------------------------- slices -- */

/* One side of a comparison: looks up lookups [from, to) and counts what it found. */
typedef struct side {
  const char *label;
  void *ctx;
  void (*slice)(struct side *sd, const workload *w, size_t from, size_t to);
  double secs;     /* time spent in this side's slices only */
  size_t present;  /* lookups that found a value */
  size_t bad;      /* lookups that failed or answered something impossible */
  uint64_t acc;    /* value bytes seen, so nothing is optimised away */
} side;

static void timed_slice(side *sd, const workload *w, size_t from, size_t to) {
  double t0 = now_s();
  sd->slice(sd, w, from, to);
  sd->secs += now_s() - t0;
}

/* Runs a and b (b may be NULL) over all N lookups, taking turns slice by slice. */
static void interleave(const workload *w, side *a, side *b, size_t slice) {
  for (size_t from = 0, k = 0; from < w->n; from += slice, k++) {
    size_t to = from + slice < w->n ? from + slice : w->n;
    side *first = b && k % 2 ? b : a, *second = first == a ? b : a;
    timed_slice(first, w, from, to);
    if (second) timed_slice(second, w, from, to);
  }
}

static void reset_side(side *sd) {
  sd->secs = 0;
  sd->present = sd->bad = 0;
}

/* Checks a side's answers and turns its time into a figure. */
static int finish_side(side *sd, const workload *w, figure *f) {
  sink += sd->acc;
  f->eps = sd->secs > 0 ? (double)w->n / sd->secs : 0;
  if (sd->bad) {
    fprintf(stderr, "bench_w2: %s: %zu lookups failed or answered wrongly\n", sd->label, sd->bad);
    return -1;
  }
  if (sd->present != w->expect_present) {
    fprintf(stderr, "bench_w2: %s: %zu lookups found a value; expected %zu\n", sd->label, sd->present,
            w->expect_present);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- hash map -- */

/* The cache's own key hash (see cache_hash.h), so both sides pay the same for it. */
#include "../libesg/src/store/cache_hash.h"

typedef struct hslot {
  uint64_t hash;
  const char *key;
  size_t klen;
  const char *value; /* NULL: known absent */
  size_t vlen;
} hslot;

#define HCAP 4096

static hslot *hashmap_build(const workload *w) {
  hslot *t = calloc(HCAP, sizeof *t);
  if (!t) return NULL;
  for (int k = 0; k < 2 * ENTITIES; k++) {
    size_t klen = strlen(w->keys[k]);
    uint64_t h = key_hash(w->keys[k], klen);
    size_t i = h & (HCAP - 1);
    while (t[i].key) i = (i + 1) & (HCAP - 1);
    t[i] = (hslot){h, w->keys[k], klen, k < ENTITIES ? w->values[k] : NULL, k < ENTITIES ? w->vlen[k] : 0};
  }
  return t;
}

static void hashmap_slice(side *sd, const workload *w, size_t from, size_t to) {
  const hslot *t = sd->ctx;
  for (size_t j = from; j < to; j++) {
    const char *key = w->keys[w->pick[j]];
    size_t klen = strlen(key);
    uint64_t h = key_hash(key, klen);
    size_t i = h & (HCAP - 1);
    while (t[i].key && !(t[i].hash == h && t[i].klen == klen && memcmp(t[i].key, key, klen) == 0))
      i = (i + 1) & (HCAP - 1);
    if (!t[i].key) sd->bad++;
    else if (t[i].value) {
      sd->present++;
      sd->acc += t[i].vlen;
    }
  }
}

/* -------------------------------------------------------------- libesg -- */

static int fail_esg(const char *what, int rc, const void *h) {
  fprintf(stderr, "bench_w2: %s: %s: %s\n", what, esg_status_name(rc), esg_errmsg(h));
  return -1;
}

static void db_path(char *out, size_t cap, const workload *w, const char *name) {
  snprintf(out, cap, "%s/%s", w->dir, name);
  remove_db(out);
}

/* Opens a store and a cache on it (mem_entries: 0 default, -1 none). */
static int esg_open_cache(const char *path, int64_t mem_entries, esg_store **s, esg_cache **c) {
  *s = NULL;
  *c = NULL;
  int rc = esg_store_open(s, path, NULL);
  if (rc != ESG_OK) return fail_esg("opening the store", rc, NULL);
  esg_cache_opts o = ESG_CACHE_OPTS_INIT;
  o.mem_entries = mem_entries;
  if ((rc = esg_cache_open(c, *s, &o)) != ESG_OK) {
    esg_store_close(*s);
    *s = NULL;
    return fail_esg("opening the cache", rc, NULL);
  }
  return 0;
}

static void esg_close_cache(esg_store *s, esg_cache *c) {
  esg_cache_close(c);
  esg_store_close(s);
}

/* Fills the cache with the 1000 entities and the 1000 negatives. */
static int fill(esg_cache *c, const workload *w) {
  for (int k = 0; k < 2 * ENTITIES; k++) {
    int rc = k < ENTITIES ? esg_cache_put(c, w->keys[k], w->values[k], w->vlen[k], 0)
                          : esg_cache_put_negative(c, w->keys[k], 0);
    if (rc != ESG_OK) return fail_esg("filling the cache", rc, c);
  }
  return 0;
}

/* esg_cache_get: every answer must be a fresh value or a fresh negative. */
static void esg_get_slice(side *sd, const workload *w, size_t from, size_t to) {
  esg_cache *c = sd->ctx;
  esg_cache_entry e;
  for (size_t j = from; j < to; j++) {
    if (esg_cache_get(c, w->keys[w->pick[j]], &e) != ESG_OK) sd->bad++;
    else if (e.result == ESG_CACHE_HIT) {
      sd->present++;
      sd->acc += e.len;
    } else if (e.result != ESG_CACHE_NEGATIVE) sd->bad++;
  }
}

static void spin_ns(long ns) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < ns);
}

/* The external system: 100 us per call; thing-0 .. thing-999 exist. */
static int slow_loader(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  const workload *w = ud;
  (void)deadline;
  spin_ns(LOAD_COST_NS);
  int k = atoi(key + 6);
  if (k < 0 || k >= ENTITIES) return ESG_NOT_FOUND;
  return esg_cache_load_set(ld, w->values[k], w->vlen[k], 0);
}

static void esg_load_slice(side *sd, const workload *w, size_t from, size_t to) {
  esg_cache *c = sd->ctx;
  esg_cache_entry e;
  for (size_t j = from; j < to; j++) {
    if (esg_cache_get_or_load(c, w->keys[w->pick[j]], slow_loader, (void *)w, &e) != ESG_OK) sd->bad++;
    else if (e.result == ESG_CACHE_HIT) {
      sd->present++;
      sd->acc += e.len;
    } else if (e.result != ESG_CACHE_NEGATIVE) sd->bad++;
  }
}

/* ---------------------------------------------------------- raw SQLite -- */

typedef struct raw_ctx {
  sqlite3 *db;
  sqlite3_stmt *sel;
} raw_ctx;

/* The same rows in a plain table shaped like a hand-rolled cache's. */
static int raw_create(const char *path, const workload *w) {
  sqlite3 *db = NULL;
  sqlite3_stmt *ins = NULL;
  int ok = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) ==
               SQLITE_OK &&
           sqlite3_exec(db,
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB, expires INTEGER NOT NULL) WITHOUT ROWID;"
                        "BEGIN",
                        NULL, NULL, NULL) == SQLITE_OK &&
           sqlite3_prepare_v2(db, "INSERT INTO kv (key, value, expires) VALUES (?1, ?2, ?3)", -1, &ins, NULL) ==
               SQLITE_OK;
  for (int k = 0; ok && k < 2 * ENTITIES; k++) {
    sqlite3_bind_text(ins, 1, w->keys[k], -1, SQLITE_STATIC);
    if (k < ENTITIES) sqlite3_bind_blob(ins, 2, w->values[k], (int)w->vlen[k], SQLITE_STATIC);
    else sqlite3_bind_null(ins, 2);
    sqlite3_bind_int64(ins, 3, INT64_MAX);
    ok = sqlite3_step(ins) == SQLITE_DONE;
    sqlite3_reset(ins);
  }
  sqlite3_finalize(ins);
  if (ok) ok = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
  if (!ok) fprintf(stderr, "bench_w2: raw-select: %s\n", db ? sqlite3_errmsg(db) : "cannot open");
  sqlite3_close_v2(db);
  return ok ? 0 : -1;
}

static int raw_open(const char *path, raw_ctx *r) {
  memset(r, 0, sizeof *r);
  if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK &&
      sqlite3_prepare_v3(r->db, "SELECT value, expires FROM kv WHERE key = ?1", -1, SQLITE_PREPARE_PERSISTENT,
                         &r->sel, NULL) == SQLITE_OK)
    return 0;
  fprintf(stderr, "bench_w2: raw-select: %s\n", r->db ? sqlite3_errmsg(r->db) : "cannot open");
  return -1;
}

static void raw_close(raw_ctx *r) {
  sqlite3_finalize(r->sel);
  sqlite3_close_v2(r->db);
}

static void raw_slice(side *sd, const workload *w, size_t from, size_t to) {
  raw_ctx *r = sd->ctx;
  for (size_t j = from; j < to; j++) {
    sqlite3_bind_text(r->sel, 1, w->keys[w->pick[j]], -1, SQLITE_STATIC);
    int rc = sqlite3_step(r->sel);
    if (rc == SQLITE_ROW) {
      if (sqlite3_column_type(r->sel, 0) != SQLITE_NULL) {
        sd->present++;
        sd->acc += (uint64_t)sqlite3_column_bytes(r->sel, 0);
      }
      sd->acc ^= (uint64_t)sqlite3_column_int64(r->sel, 1);
    } else {
      sd->bad++;
    }
    sqlite3_reset(r->sel);
  }
}

/* ------------------------------------------------------------ the groups -- */

enum { HASHMAP, ESG_MEMORY, RAW_SELECT, ESG_STORE, ESG_READTHROUGH, NLABEL };
static const char *const labels[NLABEL] = {"hashmap", "esg-memory", "raw-select", "esg-store", "esg-readthrough"};

/* hashmap and esg-memory, interleaved in slices of 10000 lookups, after a warm-up pass each. */
static int group_memory(const workload *w, figure *f) {
  char path[4200];
  db_path(path, sizeof path, w, "esg-memory.db");
  esg_store *s;
  esg_cache *c;
  hslot *t = hashmap_build(w);
  int out = -1;
  if (!t || esg_open_cache(path, 0, &s, &c) != 0) {
    free(t);
    return -1;
  }
  side a = {.label = "hashmap", .ctx = t, .slice = hashmap_slice};
  side b = {.label = "esg-memory", .ctx = c, .slice = esg_get_slice};
  if (fill(c, w) != 0) goto done;
  /* The warm-up also re-reads the few entries whose stamp bucket a later put of
     another key bumped (see docs/cache.md), so the timed pass is all memory. */
  interleave(w, &a, &b, 10000);
  reset_side(&a);
  reset_side(&b);
  esg_cache_stats st0, st;
  esg_cache_stats_get(c, &st0);
  interleave(w, &a, &b, 10000);
  esg_cache_stats_get(c, &st);
  if (st.mem_hits - st0.mem_hits != (uint64_t)w->n) {
    fprintf(stderr, "bench_w2: esg-memory: %llu of %zu lookups came from memory\n",
            (unsigned long long)(st.mem_hits - st0.mem_hits), w->n);
    goto done;
  }
  if (finish_side(&a, w, &f[HASHMAP]) == 0 && finish_side(&b, w, &f[ESG_MEMORY]) == 0) out = 0;
done:
  esg_close_cache(s, c);
  free(t);
  remove_db(path);
  return out;
}

/* raw-select and esg-store, both on a new connection (a cold process), interleaved in slices of 1000. */
static int group_store(const workload *w, figure *f) {
  char rpath[4200], epath[4200];
  db_path(rpath, sizeof rpath, w, "raw-select.db");
  db_path(epath, sizeof epath, w, "esg-store.db");
  esg_store *s;
  esg_cache *c;
  raw_ctx r;
  int out = -1;
  if (raw_create(rpath, w) != 0 || esg_open_cache(epath, 0, &s, &c) != 0) return -1;
  int rc = fill(c, w);
  esg_close_cache(s, c);
  if (rc != 0) return -1;
  if (raw_open(rpath, &r) != 0) {
    raw_close(&r);
    return -1;
  }
  if (esg_open_cache(epath, -1, &s, &c) != 0) {
    raw_close(&r);
    return -1;
  }
  side a = {.label = "raw-select", .ctx = &r, .slice = raw_slice};
  side b = {.label = "esg-store", .ctx = c, .slice = esg_get_slice};
  interleave(w, &a, &b, 1000);
  if (finish_side(&a, w, &f[RAW_SELECT]) == 0 && finish_side(&b, w, &f[ESG_STORE]) == 0) out = 0;
  raw_close(&r);
  esg_close_cache(s, c);
  remove_db(rpath);
  remove_db(epath);
  return out;
}

/* esg-readthrough on an empty cache; loads = loader calls. */
static int group_readthrough(const workload *w, figure *f) {
  char path[4200];
  db_path(path, sizeof path, w, "esg-readthrough.db");
  esg_store *s;
  esg_cache *c;
  if (esg_open_cache(path, 0, &s, &c) != 0) return -1;
  side a = {.label = "esg-readthrough", .ctx = c, .slice = esg_load_slice};
  interleave(w, &a, NULL, 10000);
  esg_cache_stats st;
  esg_cache_stats_get(c, &st);
  f[ESG_READTHROUGH].loads = (long)st.loads;
  int out = finish_side(&a, w, &f[ESG_READTHROUGH]);
  if (a.bad) fprintf(stderr, "bench_w2: esg-readthrough: %s\n", esg_errmsg(c));
  esg_close_cache(s, c);
  remove_db(path);
  return out;
}

typedef struct group {
  int (*run)(const workload *w, figure *f);
  int first, count; /* the labels it measures */
} group;

static const group groups[] = {
    {group_memory, HASHMAP, 2},
    {group_store, RAW_SELECT, 2},
    {group_readthrough, ESG_READTHROUGH, 1},
};
#define NGROUP ((int)(sizeof groups / sizeof groups[0]))

/* ------------------------------------------------------------------ main -- */

static int find(const char *label) {
  for (int i = 0; i < NLABEL; i++)
    if (strcmp(labels[i], label) == 0) return i;
  return -1;
}

/* The median over the repetitions of the same-run ratio num/den. */
static void ratio(figure (*fig)[NLABEL], int reps, int num, int den, double target) {
  double v[reps];
  int m = 0;
  for (int rep = 0; rep < reps; rep++)
    if (fig[rep][num].eps > 0 && fig[rep][den].eps > 0) v[m++] = fig[rep][num].eps / fig[rep][den].eps;
  if (!m) return;
  double r = median(v, m);
  printf("RATIO %s/%s = %.2f (target >= %.2f)%s\n", labels[num], labels[den], r, target,
         r >= target ? "" : " MISSED");
}

int main(int argc, char **argv) {
  size_t n = (size_t)arg_or_env(argc, argv, 1, "ESG_BENCH_N", 1000000, 1);
  int reps = (int)arg_or_env(argc, argv, 2, "ESG_BENCH_REPS", 3, 1);
  const char *only = getenv("ESG_BENCH_ONLY");
  int only_label = only && *only ? find(only) : -1;
  if (only && *only && only_label < 0) {
    fprintf(stderr, "bench_w2: ESG_BENCH_ONLY=%s is not an approach\n", only);
    return 2;
  }
  static workload w;
  if (bench_mkdtemp(w.dir, sizeof w.dir, "w2") != 0) return 1;
  if (make_workload(&w, n) != 0) {
    fprintf(stderr, "bench_w2: out of memory generating %zu lookups\n", n);
    return 1;
  }
  printf("# W2 enrichment lookups: n=%zu reps=%d present=%zu dir=%s sqlite=%s libesg=%s\n", n, reps,
         w.expect_present, w.dir, sqlite3_libversion(), esg_version());
  fflush(stdout);

  figure (*fig)[NLABEL] = calloc((size_t)reps, sizeof *fig);
  int failed = fig ? 0 : 1;
  for (int rep = 0; rep < reps && !failed; rep++) {
    for (int i = 0; i < NLABEL; i++) fig[rep][i].loads = -1;
    for (int k = 0; k < NGROUP && !failed; k++) {
      const group *g = &groups[(k + rep) % NGROUP]; /* rotate the order so no group always runs first */
      if (only_label >= 0 && (only_label < g->first || only_label >= g->first + g->count)) continue;
      if (g->run(&w, fig[rep]) != 0) {
        failed = 1;
        break;
      }
      for (int i = g->first; i < g->first + g->count; i++) {
        printf("RUN rep=%d label=%s n=%zu eps=%.0f", rep + 1, labels[i], n, fig[rep][i].eps);
        if (fig[rep][i].loads >= 0) printf(" loads=%ld", fig[rep][i].loads);
        printf("\n");
      }
      fflush(stdout);
    }
  }
  if (!failed) {
    double v[reps];
    for (int i = 0; i < NLABEL; i++) {
      for (int rep = 0; rep < reps; rep++) v[rep] = fig[rep][i].eps;
      double med = median(v, reps);
      if (med <= 0) continue;
      printf("RESULT label=%s n=%zu eps=%.0f", labels[i], n, med);
      if (fig[reps - 1][i].loads >= 0) printf(" loads=%ld", fig[reps - 1][i].loads);
      printf("\n");
    }
    ratio(fig, reps, ESG_MEMORY, HASHMAP, 0.25);
    ratio(fig, reps, ESG_STORE, RAW_SELECT, 0.8);
  }
  printf("# sink %llu\n", (unsigned long long)sink);
  free(fig);
  free_workload(&w);
  if (rmdir(w.dir) != 0) fprintf(stderr, "bench_w2: rmdir %s: %s\n", w.dir, strerror(errno));
  if (failed) fprintf(stderr, "bench_w2: FAILED\n");
  return failed ? 1 : 0;
}
