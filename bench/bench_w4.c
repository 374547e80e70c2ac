/*
 * W4: snapshot diff (../shared/bench/WORKLOAD.md).
 *
 *   bench_w4 [N [REPS]]      N entities (default 1000000), REPS repetitions (default 1)
 *
 * Environment: ESG_BENCH_N, ESG_BENCH_REPS (used when the argument is absent),
 * ESG_BENCH_DIR (where the database files go; default $TMPDIR or /tmp),
 * ESG_BENCH_ONLY (run only the approach with this label, for profiling).
 *
 * Listing 1: N entities thing-<i> with content {"id","name","price"}. Listing 2:
 * every 200th entity gone (0.5%), every 100th (offset 1) changed (1%), N/200 new
 * (0.5%); streamed in reverse order, since a listing may come in any order.
 * Two approaches on fresh database files, both with 1000 entries per transaction:
 *   raw-upsert  the baseline: a raw SQLite `INSERT ... ON CONFLICT DO UPDATE` of
 *               (key, content) per entry, WAL, synchronous=NORMAL, statements reused
 *               (it detects nothing: no hashing, no events, no deletions);
 *   esg-diff    esg_snapshot_begin/add/finish: content validated and hashed
 *               canonically, listing state kept in the store, created/updated/
 *               deleted events built and handed to a sink (no_log) that counts them;
 *   esg-diff-log the same, with the events also stored in the event log (the
 *               default): the log's random-id index makes pass 1 cost more.
 * Prints RUN lines per repetition, then RESULT lines (median over repetitions)
 * and RATIO lines against the target esg-diff >= 0.5 x raw-upsert. Exits
 * non-zero if the created/updated/deleted counts are not exactly as expected.
 */
#include <sqlite3.h>
#include "esg.h"
#define BENCH_NAME "bench_w4"
#include "bench_util.h"

#define BATCH 1000
#define TARGET 0.5

typedef struct listing {
  size_t n;
  char **key, **content;
} listing;

typedef struct counts {
  int64_t created, updated, deleted;
} counts;

static char *dupf(const char *fmt, size_t a, size_t b) {
  char tmp[160];
  snprintf(tmp, sizeof tmp, fmt, a, a, b);
  return strdup(tmp);
}

/* Listing 1 (pass 1) or listing 2 (pass 2) with the expected counts. */
static int make_listing(listing *l, size_t n, int pass, counts *want) {
  size_t extra = n / 200, cap = n + extra;
  l->key = calloc(cap, sizeof *l->key);
  l->content = calloc(cap, sizeof *l->content);
  if (!l->key || !l->content) return -1;
  memset(want, 0, sizeof *want);
  const char *fmt = "{\"id\":\"thing-%zu\",\"name\":\"name-%zu\",\"price\":%zu}";
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    size_t price = i;
    if (pass == 2) {
      if (i % 200 == 0) {
        want->deleted++;
        continue;
      }
      if (i % 100 == 1) {
        price = i + 1;
        want->updated++;
      }
    } else {
      want->created++;
    }
    char key[32];
    snprintf(key, sizeof key, "thing-%zu", i);
    l->key[m] = strdup(key);
    l->content[m] = dupf(fmt, i, price);
    m++;
  }
  if (pass == 2)
    for (size_t j = 0; j < extra; j++, m++) {
      char key[32];
      snprintf(key, sizeof key, "thing-%zu", n + j);
      l->key[m] = strdup(key);
      l->content[m] = dupf(fmt, n + j, n + j);
      want->created++;
    }
  l->n = m;
  if (pass == 2) /* reverse: the second listing arrives in another order */
    for (size_t i = 0; i < m / 2; i++) {
      char *k = l->key[i], *c = l->content[i];
      l->key[i] = l->key[m - 1 - i], l->content[i] = l->content[m - 1 - i];
      l->key[m - 1 - i] = k, l->content[m - 1 - i] = c;
    }
  for (size_t i = 0; i < m; i++)
    if (!l->key[i] || !l->content[i]) return -1;
  return 0;
}

static void free_listing(listing *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->key[i]);
    free(l->content[i]);
  }
  free(l->key);
  free(l->content);
}

/* ------------------------------------------------------------ raw-upsert -- */

static int raw_pass(sqlite3 *db, sqlite3_stmt *up, const listing *l) {
  for (size_t i = 0; i < l->n; i++) {
    if (i % BATCH == 0 && sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_text(up, 1, l->key[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(up, 2, l->content[i], -1, SQLITE_STATIC);
    if (sqlite3_step(up) != SQLITE_DONE) return -1;
    sqlite3_reset(up);
    if ((i + 1) % BATCH == 0 || i + 1 == l->n)
      if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) return -1;
  }
  return 0;
}

static int raw_run(const char *path, const listing *l1, const listing *l2, double secs[2]) {
  remove_db(path);
  sqlite3 *db = NULL;
  sqlite3_stmt *up = NULL;
  int rc = -1;
  if (sqlite3_open(path, &db) != SQLITE_OK) goto out;
  if (sqlite3_exec(db,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE listing (key TEXT PRIMARY KEY, content TEXT NOT NULL) WITHOUT ROWID;",
                   NULL, NULL, NULL) != SQLITE_OK)
    goto out;
  if (sqlite3_prepare_v3(db,
                         "INSERT INTO listing (key, content) VALUES (?1, ?2)"
                         " ON CONFLICT(key) DO UPDATE SET content = excluded.content",
                         -1, SQLITE_PREPARE_PERSISTENT, &up, NULL) != SQLITE_OK)
    goto out;
  const listing *ls[2] = {l1, l2};
  for (int p = 0; p < 2; p++) {
    double t0 = now_s();
    if (raw_pass(db, up, ls[p]) != 0) goto out;
    secs[p] = now_s() - t0;
  }
  rc = 0;
out:
  if (rc) fprintf(stderr, "bench_w4: raw: %s\n", db ? sqlite3_errmsg(db) : "open failed");
  sqlite3_finalize(up);
  sqlite3_close(db);
  remove_db(path);
  return rc;
}

/* -------------------------------------------------------------- esg-diff -- */

static int count_sink(void *ud, const esg_stored_event *ev) {
  counts *c = ud;
  size_t n = strlen(ev->type);
  if (n > 8 && strcmp(ev->type + n - 8, "-created") == 0) c->created++;
  else if (n > 8 && strcmp(ev->type + n - 8, "-updated") == 0) c->updated++;
  else if (n > 8 && strcmp(ev->type + n - 8, "-deleted") == 0) c->deleted++;
  return 0;
}

static int esg_run(const char *path, int no_log, const listing *l1, const listing *l2, double secs[2],
                   counts got[2], esg_resync_stats st[2]) {
  remove_db(path);
  esg_store *s = NULL;
  if (esg_store_open(&s, path, NULL) != ESG_OK) {
    fprintf(stderr, "bench_w4: esg open: %s\n", esg_errmsg(NULL));
    return -1;
  }
  const listing *ls[2] = {l1, l2};
  int rc = 0;
  for (int p = 0; p < 2 && rc == 0; p++) {
    memset(&got[p], 0, sizeof got[p]);
    esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = count_sink, .sink_ud = &got[p], .no_log = no_log, .type = "thing", .batch = BATCH};
    double t0 = now_s();
    esg_snapshot *sn = NULL;
    int r = esg_snapshot_begin(&sn, s, "w4", &o);
    for (size_t i = 0; r == ESG_OK && i < ls[p]->n; i++)
      r = esg_snapshot_add(sn, ls[p]->key[i], ls[p]->content[i], strlen(ls[p]->content[i]));
    if (r == ESG_OK) r = esg_snapshot_finish(sn, &st[p]);
    secs[p] = now_s() - t0;
    if (r != ESG_OK) {
      fprintf(stderr, "bench_w4: esg pass %d: %s: %s\n", p + 1, esg_status_name(r), sn ? esg_errmsg(sn) : esg_errmsg(s));
      rc = -1;
    }
    esg_snapshot_close(sn);
  }
  esg_store_close(s);
  remove_db(path);
  return rc;
}

int main(int argc, char **argv) {
  const char *en = getenv("ESG_BENCH_N"), *er = getenv("ESG_BENCH_REPS");
  size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : en ? strtoull(en, NULL, 10) : 1000000;
  int reps = argc > 2 ? atoi(argv[2]) : er ? atoi(er) : 1;
  if (n < 200 || reps < 1 || reps > 50) {
    fprintf(stderr, "usage: bench_w4 [N >= 200 [REPS 1..50]]\n");
    return 2;
  }
  const char *dir = bench_base_dir();
  char raw_path[4096], esg_path[4096];
  snprintf(raw_path, sizeof raw_path, "%s/bench_w4_raw_%d.db", dir, (int)getpid());
  snprintf(esg_path, sizeof esg_path, "%s/bench_w4_esg_%d.db", dir, (int)getpid());

  listing l1 = {0}, l2 = {0};
  counts want[2];
  if (make_listing(&l1, n, 1, &want[0]) != 0 || make_listing(&l2, n, 2, &want[1]) != 0) {
    fprintf(stderr, "bench_w4: out of memory generating the listings\n");
    return 1;
  }
  static const char *const label[3] = {"raw-upsert", "esg-diff", "esg-diff-log"};
  double *eps[3][2]; /* [approach][pass] */
  for (int a = 0; a < 3; a++)
    for (int p = 0; p < 2; p++) eps[a][p] = calloc((size_t)reps, sizeof(double));
  int bad = 0;
  const char *only = getenv("ESG_BENCH_ONLY");
  for (int r = 0; r < reps && !bad; r++) {
    /* rotate which approach runs first so machine noise hits all alike */
    for (int k = 0; k < 3 && !bad; k++) {
      int a = (k + r) % 3;
      double secs[2];
      if (only && strcmp(only, label[a]) != 0) {
        for (int p = 0; p < 2; p++) eps[a][p][r] = 1;
        continue;
      }
      if (a == 0) {
        if (raw_run(raw_path, &l1, &l2, secs) != 0) bad = 1;
      } else {
        counts got[2];
        esg_resync_stats st[2];
        if (esg_run(esg_path, a == 1, &l1, &l2, secs, got, st) != 0) bad = 1;
        for (int p = 0; p < 2 && !bad; p++) {
          if (got[p].created != want[p].created || got[p].updated != want[p].updated ||
              got[p].deleted != want[p].deleted || st[p].created != want[p].created ||
              st[p].updated != want[p].updated || st[p].deleted != want[p].deleted) {
            fprintf(stderr,
                    "bench_w4: %s pass %d miscounted: created %lld/%lld updated %lld/%lld deleted %lld/%lld (got/want)\n",
                    label[a], p + 1, (long long)got[p].created, (long long)want[p].created, (long long)got[p].updated,
                    (long long)want[p].updated, (long long)got[p].deleted, (long long)want[p].deleted);
            bad = 1;
          }
        }
      }
      for (int p = 0; p < 2 && !bad; p++) {
        size_t m = p == 0 ? l1.n : l2.n;
        eps[a][p][r] = (double)m / secs[p];
        printf("RUN label=%s pass=%d rep=%d n=%zu eps=%.0f\n", label[a], p + 1, r + 1, m, eps[a][p][r]);
        fflush(stdout);
      }
    }
  }
  if (!bad) {
    double med[3][2];
    for (int a = 0; a < 3; a++)
      for (int p = 0; p < 2; p++) med[a][p] = median(eps[a][p], reps);
    for (int p = 0; p < 2; p++) {
      size_t m = p == 0 ? l1.n : l2.n;
      printf("RESULT label=raw-upsert pass=%d n=%zu eps=%.0f\n", p + 1, m, med[0][p]);
      for (int a = 1; a < 3; a++)
        printf("RESULT label=%s pass=%d n=%zu eps=%.0f created=%lld updated=%lld deleted=%lld\n", label[a], p + 1, m,
               med[a][p], (long long)want[p].created, (long long)want[p].updated, (long long)want[p].deleted);
    }
    for (int a = 1; a < 3; a++)
      for (int p = 0; p < 2; p++) {
        double ratio = med[a][p] / med[0][p];
        printf("RATIO label=%s/raw-upsert pass=%d ratio=%.2f target=%.2f %s\n", label[a], p + 1, ratio, TARGET,
               a == 2 ? "(informative)" : ratio >= TARGET ? "met" : "MISSED");
      }
  }
  for (int a = 0; a < 3; a++)
    for (int p = 0; p < 2; p++) free(eps[a][p]);
  free_listing(&l1);
  free_listing(&l2);
  return bad;
}
