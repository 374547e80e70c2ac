/*
 * W1: idempotent consume (../shared/bench/WORKLOAD.md).
 *
 *   bench_w1 [N [REPS]]      N events (default 100000), REPS repetitions (default 3)
 *
 * Environment: ESG_BENCH_N, ESG_BENCH_REPS (used when the argument is absent),
 * ESG_BENCH_DIR (where the database files go; default $TMPDIR or /tmp),
 * ESG_BENCH_ONLY (run only the approach with this label, for profiling),
 * ESG_BENCH_STRICT (non-empty and not "0": exit 3 when a ratio target is missed;
 * by default a missed target is reported, not a failure: the machine is noisy).
 *
 * Four approaches, each on a fresh database file: two raw SQLite baselines
 * (raw-tx2, raw-batch1000) and libesg (esg-durable, esg-grouped). Every
 * repetition runs all four, in an order rotated per repetition, so machine
 * noise hits all of them alike. Each prints `RUN` lines per repetition and, at
 * the end, one `RESULT` line per figure (the median over the repetitions) and
 * the `RATIO` lines of the targets. Exits non-zero when a pass miscounts
 * (pass 1 must see N new events, pass 2 N duplicates) or anything fails.
 */
#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include "esg.h"
#define BENCH_NAME "bench_w1"
#include "bench_util.h"

#define LEASE_MS 30000
#define TTL_MS 3600000
#define BATCH 1000
#define GROUP_MS 1000
#define GROUP_MAX 1000

/* What one timed pass counted. */
typedef struct pass_count {
  size_t fresh, dups;
} pass_count;

typedef struct approach approach;
struct approach {
  const char *label;
  /* open a fresh store at path; returns an opaque context or NULL */
  void *(*open)(const char *path);
  int (*pass)(void *ctx, const events *ev, pass_count *c);
  void (*close)(void *ctx);
};

static volatile uint64_t handler_sink; /* keeps the trivial handler from being optimised away */

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ raw SQLite -- */

typedef struct raw_ctx {
  sqlite3 *db;
  sqlite3_stmt *ins, *upd, *begin, *commit;
  EVP_MD *md;
  int batch; /* events per explicit transaction; 0 = every statement autocommits */
} raw_ctx;

static void raw_close(void *p) {
  raw_ctx *r = p;
  if (!r) return;
  sqlite3_finalize(r->ins);
  sqlite3_finalize(r->upd);
  sqlite3_finalize(r->begin);
  sqlite3_finalize(r->commit);
  sqlite3_close_v2(r->db);
  EVP_MD_free(r->md);
  free(r);
}

static void *raw_open(const char *path, int batch) {
  raw_ctx *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->batch = batch;
  r->md = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (!r->md) goto fail;
  if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK)
    goto fail;
  sqlite3_busy_timeout(r->db, 5000);
  if (sqlite3_exec(r->db,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE claims (id TEXT PRIMARY KEY, hash BLOB, status INTEGER, expires INTEGER);",
                   NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  static const char *const sql[4] = {
      "INSERT INTO claims (id, hash, status, expires) VALUES (?1, ?2, 0, ?3) ON CONFLICT(id) DO NOTHING",
      "UPDATE claims SET status = 1, expires = ?2 WHERE id = ?1",
      "BEGIN",
      "COMMIT",
  };
  sqlite3_stmt **st[4] = {&r->ins, &r->upd, &r->begin, &r->commit};
  for (int i = 0; i < 4; i++)
    if (sqlite3_prepare_v3(r->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, st[i], NULL) != SQLITE_OK) goto fail;
  return r;
fail:
  fprintf(stderr, "bench_w1: raw open %s: %s\n", path, r->db ? sqlite3_errmsg(r->db) : "failed");
  raw_close(r);
  return NULL;
}

static void *raw_open_tx2(const char *path) { return raw_open(path, 0); }
static void *raw_open_batch(const char *path) { return raw_open(path, BATCH); }

static int step_done(raw_ctx *r, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) return 0;
  fprintf(stderr, "bench_w1: raw: %s\n", sqlite3_errmsg(r->db));
  return -1;
}

static int raw_pass(void *p, const events *ev, pass_count *c) {
  raw_ctx *r = p;
  for (size_t i = 0; i < ev->n; i++) {
    if (r->batch && i % (size_t)r->batch == 0 && step_done(r, r->begin) != 0) return -1;
    const char *json = ev->buf + ev->off[i];
    size_t len = ev->len[i];
    cJSON *root = cJSON_ParseWithLength(json, len);
    cJSON *id = root ? cJSON_GetObjectItemCaseSensitive(root, "id") : NULL;
    if (!cJSON_IsString(id)) {
      fprintf(stderr, "bench_w1: raw: event %zu: bad JSON or id\n", i);
      cJSON_Delete(root);
      return -1;
    }
    unsigned char hash[32];
    unsigned int hn = 0;
    if (!EVP_Digest(json, len, hash, &hn, r->md, NULL) || hn != 32) {
      cJSON_Delete(root);
      return -1;
    }
    int64_t now = wall_ms();
    sqlite3_bind_text(r->ins, 1, id->valuestring, -1, SQLITE_STATIC);
    sqlite3_bind_blob(r->ins, 2, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(r->ins, 3, now + TTL_MS);
    if (step_done(r, r->ins) != 0) {
      cJSON_Delete(root);
      return -1;
    }
    if (sqlite3_changes(r->db) == 1) {
      c->fresh++;
      handler_sink += (uint64_t)len; /* the trivial handler */
      sqlite3_bind_text(r->upd, 1, id->valuestring, -1, SQLITE_STATIC);
      sqlite3_bind_int64(r->upd, 2, wall_ms() + TTL_MS);
      if (step_done(r, r->upd) != 0) {
        cJSON_Delete(root);
        return -1;
      }
    } else {
      c->dups++;
    }
    cJSON_Delete(root);
    if (r->batch && (i % (size_t)r->batch == (size_t)r->batch - 1 || i + 1 == ev->n) &&
        step_done(r, r->commit) != 0)
      return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- libesg -- */

static void *esg_open_mode(const char *path, int grouped) {
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  if (grouped) {
    o.group_commit_ms = GROUP_MS;
    o.group_commit_max = GROUP_MAX;
  }
  esg_store *s = NULL;
  int rc = esg_store_open(&s, path, &o);
  if (rc != ESG_OK) {
    fprintf(stderr, "bench_w1: esg_store_open %s: %s: %s\n", path, esg_status_name(rc), esg_errmsg(NULL));
    return NULL;
  }
  return s;
}

static void *esg_open_durable(const char *path) { return esg_open_mode(path, 0); }
static void *esg_open_grouped(const char *path) { return esg_open_mode(path, 1); }
static void esg_close(void *p) { esg_store_close(p); }

static int esg_pass(void *p, const events *ev, pass_count *c) {
  esg_store *s = p;
  for (size_t i = 0; i < ev->n; i++) {
    esg_event *e = NULL;
    int rc = esg_event_parse(ev->buf + ev->off[i], ev->len[i], &e);
    if (rc != ESG_OK) {
      fprintf(stderr, "bench_w1: event %zu: %s: %s\n", i, esg_status_name(rc), esg_errmsg(NULL));
      return -1;
    }
    const char *id = esg_event_id(e);
    esg_claim_info info;
    rc = esg_claim(s, id, esg_event_hash(e), 32, LEASE_MS, TTL_MS, &info);
    if (rc == ESG_NEW) {
      c->fresh++;
      handler_sink += (uint64_t)ev->len[i]; /* the trivial handler */
      rc = esg_complete(s, id, info.token, "ok", 2);
    } else if (rc == ESG_DUPLICATE) {
      c->dups++;
      rc = ESG_OK;
    }
    esg_event_free(e);
    if (rc != ESG_OK) {
      fprintf(stderr, "bench_w1: event %zu: %s: %s\n", i, esg_status_name(rc), esg_errmsg(s));
      return -1;
    }
  }
  int rc = esg_store_flush(s); /* inside the timed region: the group's last commit counts */
  if (rc != ESG_OK) {
    fprintf(stderr, "bench_w1: esg_store_flush: %s: %s\n", esg_status_name(rc), esg_errmsg(s));
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------ W5: the gateway -- */

/* W5 (WORKLOAD.md): W1's events as a JSON lines file through esg_gateway, with the
   transform {"id": ev.id, "price": ev.thing.price} and a JSON lines file sink. */
typedef struct gw_ctx {
  esg_store *s;
  esg_gateway *g;
  char in[4200], out[4200];
} gw_ctx;

static int w5_transform(void *ud, esg_gateway_event *e) {
  (void)ud;
  size_t len;
  const char *json = esg_gateway_event_json(e, &len);
  cJSON *root = cJSON_ParseWithLength(json, len);
  cJSON *thing = cJSON_GetObjectItemCaseSensitive(root, "thing");
  cJSON *price = cJSON_GetObjectItemCaseSensitive(thing, "price");
  char out[256];
  int n = snprintf(out, sizeof out, "{\"id\":\"%s\",\"price\":%.17g}", esg_event_id(esg_gateway_event_envelope(e)),
                   cJSON_IsNumber(price) ? price->valuedouble : 0.0);
  cJSON_Delete(root);
  return esg_gateway_event_set_output(e, out, (size_t)n);
}

static void gw_close(void *p) {
  gw_ctx *x = p;
  if (!x) return;
  esg_gateway_close(x->g);
  esg_store_close(x->s);
  remove(x->in);
  remove(x->out);
  free(x);
}

static const events *w5_events; /* the file is written at open, before the clock starts */

static void *gw_open_mode(const char *path, int grouped) {
  gw_ctx *x = calloc(1, sizeof *x);
  if (!x || !(x->s = esg_open_mode(path, grouped))) {
    free(x);
    return NULL;
  }
  snprintf(x->in, sizeof x->in, "%s.in.jsonl", path);
  snprintf(x->out, sizeof x->out, "%s.out.jsonl", path);
  FILE *f = fopen(x->in, "w");
  for (size_t i = 0; f && i < w5_events->n; i++) {
    fwrite(w5_events->buf + w5_events->off[i], 1, w5_events->len[i], f);
    fputc('\n', f);
  }
  if (!f || fclose(f) != 0) {
    fprintf(stderr, "bench_w1: cannot write %s\n", x->in);
    gw_close(x);
    return NULL;
  }
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = x->s;
  o.name = "w5";
  o.lease_ms = LEASE_MS;
  o.ttl_ms = TTL_MS;
  o.transform = w5_transform;
  o.sink = ESG_GATEWAY_SINK_FILE;
  o.sink_path = x->out;
  if (esg_gateway_open(&x->g, &o) != ESG_OK) {
    fprintf(stderr, "bench_w1: esg_gateway_open: %s\n", esg_errmsg(NULL));
    gw_close(x);
    return NULL;
  }
  return x;
}

static void *gw_open_durable(const char *path) { return gw_open_mode(path, 0); }
static void *gw_open_grouped(const char *path) { return gw_open_mode(path, 1); }

static int gw_pass(void *p, const events *ev, pass_count *c) {
  (void)ev;
  gw_ctx *x = p;
  esg_gateway_stats a, b;
  esg_gateway_get_stats(x->g, &a);
  esg_gateway_source src;
  int rc = esg_gateway_source_jsonl(&src, x->in);
  if (rc == ESG_OK) {
    rc = esg_gateway_run(x->g, &src); /* ends with the group's last commit */
    src.close(src.ud);
  }
  if (rc != ESG_OK) {
    fprintf(stderr, "bench_w1: esg_gateway_run: %s: %s\n", esg_status_name(rc), esg_errmsg(x->g));
    return -1;
  }
  esg_gateway_get_stats(x->g, &b);
  c->fresh = (size_t)(b.delivered - a.delivered);
  c->dups = (size_t)(b.duplicates - a.duplicates);
  return 0;
}

/* ------------------------------------------------------------------ main -- */

static const approach approaches[] = {
    {"raw-tx2", raw_open_tx2, raw_pass, raw_close},
    {"raw-batch1000", raw_open_batch, raw_pass, raw_close},
    {"esg-durable", esg_open_durable, esg_pass, esg_close},
    {"esg-grouped", esg_open_grouped, esg_pass, esg_close},
    {"gw-c-durable", gw_open_durable, gw_pass, gw_close},
    {"gw-c-grouped", gw_open_grouped, gw_pass, gw_close},
};
#define NAPPROACH ((int)(sizeof approaches / sizeof approaches[0]))

/* Runs both passes of one approach on a fresh file; eps[0..1] get the rates. */
static int run_one(const approach *a, const events *ev, const char *dir, int rep, double eps[2]) {
  char path[4096];
  int w = snprintf(path, sizeof path, "%s/w1-%s.db", dir, a->label);
  if (w < 0 || (size_t)w >= sizeof path) {
    fprintf(stderr, "bench_w1: path too long\n");
    return -1;
  }
  remove_db(path);
  void *ctx = a->open(path);
  if (!ctx) return -1;
  int bad = 0;
  for (int pass = 1; pass <= 2 && !bad; pass++) {
    pass_count c = {0, 0};
    double t0 = now_s();
    int rc = a->pass(ctx, ev, &c);
    double dt = now_s() - t0;
    if (rc != 0) {
      bad = 1;
      break;
    }
    size_t want_new = pass == 1 ? ev->n : 0;
    if (c.fresh != want_new || c.fresh + c.dups != ev->n) {
      fprintf(stderr, "bench_w1: %s pass %d: %zu new and %zu duplicates, expected %zu new and %zu duplicates\n",
              a->label, pass, c.fresh, c.dups, want_new, ev->n - want_new);
      bad = 1;
      break;
    }
    eps[pass - 1] = (double)ev->n / dt;
    printf("RUN rep=%d label=%s pass=%d n=%zu eps=%.0f secs=%.3f\n", rep, a->label, pass, ev->n,
           eps[pass - 1], dt);
    fflush(stdout);
  }
  a->close(ctx);
  remove_db(path);
  return bad ? -1 : 0;
}

static int find(const char *label) {
  for (int i = 0; i < NAPPROACH; i++)
    if (strcmp(approaches[i].label, label) == 0) return i;
  return -1;
}

/* Prints one RATIO line of medians; returns 1 when the target is missed. */
static int ratio(double med[][2], const char *num, const char *den, int pass, double target) {
  int a = find(num), b = find(den);
  if (a < 0 || b < 0 || med[a][pass - 1] <= 0 || med[b][pass - 1] <= 0) return 0;
  double r = med[a][pass - 1] / med[b][pass - 1];
  printf("RATIO %s/%s pass=%d = %.2f (target >= %.1f)%s\n", num, den, pass, r, target,
         r >= target ? "" : " MISSED");
  return r < target;
}

int main(int argc, char **argv) {
  size_t n = (size_t)arg_or_env(argc, argv, 1, "ESG_BENCH_N", 100000, 1);
  int reps = (int)arg_or_env(argc, argv, 2, "ESG_BENCH_REPS", 3, 1);
  const char *only = getenv("ESG_BENCH_ONLY");
  if (only && *only && find(only) < 0) {
    fprintf(stderr, "bench_w1: ESG_BENCH_ONLY=%s is not an approach\n", only);
    return 2;
  }
  char dir[4096];
  if (bench_mkdtemp(dir, sizeof dir, "w1") != 0) return 1;

  events ev;
  w5_events = &ev;
  if (make_events(&ev, n) != 0) {
    fprintf(stderr, "bench_w1: out of memory generating %zu events\n", n);
    return 1;
  }
  printf("# W1 idempotent consume: n=%zu reps=%d dir=%s sqlite=%s libesg=%s\n", n, reps, dir,
         sqlite3_libversion(), esg_version());
  fflush(stdout);

  double (*eps)[NAPPROACH][2] = calloc((size_t)reps, sizeof *eps);
  int failed = eps ? 0 : 1, missed = 0;
  for (int rep = 0; rep < reps && !failed; rep++) {
    for (int k = 0; k < NAPPROACH && !failed; k++) {
      int i = (k + rep) % NAPPROACH; /* rotate the order so no approach always runs first */
      if (only && *only && strcmp(approaches[i].label, only) != 0) continue;
      if (run_one(&approaches[i], &ev, dir, rep + 1, eps[rep][i]) != 0) failed = 1;
    }
  }

  if (!failed) {
    double med[NAPPROACH][2];
    double *v = malloc((size_t)reps * sizeof *v);
    if (!v) return 1;
    for (int i = 0; i < NAPPROACH; i++) {
      for (int pass = 0; pass < 2; pass++) {
        for (int rep = 0; rep < reps; rep++) v[rep] = eps[rep][i][pass];
        med[i][pass] = median(v, reps);
        if (med[i][pass] > 0)
          printf("RESULT label=%s pass=%d n=%zu eps=%.0f\n", approaches[i].label, pass + 1, n, med[i][pass]);
      }
    }
    free(v);
    missed += ratio(med, "esg-durable", "raw-tx2", 1, 0.9);
    missed += ratio(med, "esg-grouped", "raw-batch1000", 1, 0.8);
    missed += ratio(med, "esg-durable", "raw-tx2", 2, 2.0);
    missed += ratio(med, "esg-grouped", "raw-batch1000", 2, 2.0);
    /* W5: the C gateway beside W1's loop of the same run */
    missed += ratio(med, "gw-c-durable", "esg-durable", 1, 0.9);
    missed += ratio(med, "gw-c-grouped", "esg-grouped", 1, 0.0);
    missed += ratio(med, "gw-c-durable", "esg-durable", 2, 0.0);
    missed += ratio(med, "gw-c-grouped", "esg-grouped", 2, 0.0);
  }
  printf("# handler sink %llu\n", (unsigned long long)handler_sink);

  free(eps);
  free_events(&ev);
  if (rmdir(dir) != 0) fprintf(stderr, "bench_w1: rmdir %s: %s\n", dir, strerror(errno));
  if (failed) fprintf(stderr, "bench_w1: FAILED\n");
  if (failed) return 1;
  const char *strict = getenv("ESG_BENCH_STRICT");
  if (missed && strict && *strict && strcmp(strict, "0") != 0) {
    fprintf(stderr, "bench_w1: %d target(s) missed (ESG_BENCH_STRICT is set)\n", missed);
    return 3;
  }
  return 0;
}
