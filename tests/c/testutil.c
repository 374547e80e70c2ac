/* The shared part of the C test harness; see testutil.h. */
#include "testutil.h"
#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int tu_failures;
int tu_checks;

/* ------------------------------------------------ contexts and counts -- */

/* A context is one entry's runs of the suite ("store <entry>") or the SQLite section;
   checks outside any context count only in the totals. */
typedef struct tu_ctx {
  char label[300];
  char entry[256];
  int checks, failures, tests, skipped, parts_skipped;
} tu_ctx;

#define TU_MAX_ENTRIES 16
static tu_ctx ctxs[TU_MAX_ENTRIES + 1];
static int nctx, cur = -1, mark_checks, mark_failures;
static char where[320];

static char entries[TU_MAX_ENTRIES][256];
static int nentries = -1, suite_pos;

static const char *test_name;
static int test_failures, test_skipped;

static void ctx_open(const char *label, const char *entry) {
  int i = 0;
  while (i < nctx && strcmp(ctxs[i].label, label) != 0) i++;
  if (i == (int)(sizeof ctxs / sizeof ctxs[0])) i--; /* cannot happen: entries are bounded */
  if (i == nctx) {
    nctx++;
    snprintf(ctxs[i].label, sizeof ctxs[i].label, "%s", label);
    snprintf(ctxs[i].entry, sizeof ctxs[i].entry, "%s", entry);
  }
  cur = i;
  mark_checks = tu_checks;
  mark_failures = tu_failures;
  snprintf(where, sizeof where, "[%s] ", label);
  fprintf(stderr, "== %s\n", label);
}

static void ctx_close(void) {
  if (cur < 0) return;
  ctxs[cur].checks += tu_checks - mark_checks;
  ctxs[cur].failures += tu_failures - mark_failures;
  cur = -1;
  where[0] = '\0';
}

const char *tu_where(void) { return where; }

const char *tu_store_entry(void) { return cur >= 0 ? ctxs[cur].entry : "sqlite"; }

static int is_server(const char *entry) {
  const char *sep = strstr(entry, "://");
  if (!sep || sep == entry) return 0;
  for (const char *p = entry; p < sep; p++)
    if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.') return 0;
  return 1;
}

/* Reads ESG_TEST_STORES once; an entry the harness does not know ends the test binary. */
static void read_entries(void) {
  if (nentries >= 0) return;
  const char *list = getenv("ESG_TEST_STORES");
  if (!list || strspn(list, " \t\n") == strlen(list)) list = "sqlite :memory:";
  nentries = 0;
  for (const char *p = list; *p;) {
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    size_t n = strcspn(p, " \t\n");
    if (n == 0) break;
    if (nentries == TU_MAX_ENTRIES || n >= sizeof entries[0]) {
      fprintf(stderr, "ESG_TEST_STORES: more than %d entries, or one over %zu bytes\n", TU_MAX_ENTRIES,
              sizeof entries[0] - 1);
      exit(2);
    }
    memcpy(entries[nentries], p, n);
    entries[nentries][n] = '\0';
    const char *e = entries[nentries];
    if (strcmp(e, "sqlite") != 0 && strcmp(e, "path") != 0 && strcmp(e, ":memory:") != 0 && !is_server(e)) {
      fprintf(stderr,
              "ESG_TEST_STORES: unknown entry \"%s\" (known: sqlite, path, :memory:, or a server URI such as "
              "postgres://host/db)\n",
              e);
      exit(2);
    }
    nentries++;
    p += n;
  }
}

void tu_suite_begin(void) {
  read_entries();
  ctx_close();
  suite_pos = -1;
}

int tu_suite_next(void) {
  ctx_close();
  if (++suite_pos >= nentries) return 0;
  char label[300];
  snprintf(label, sizeof label, "store %s", entries[suite_pos]);
  ctx_open(label, entries[suite_pos]);
  return 1;
}

int tu_sqlite_begin(void) {
  ctx_close();
  ctx_open("sqlite backend", "sqlite");
  return 1;
}

int tu_sqlite_end(void) {
  ctx_close();
  return 0;
}

void tu_test_begin(const char *name) {
  test_name = name;
  test_failures = tu_failures;
  test_skipped = 0;
}

void tu_test_end(void) {
  int failed = tu_failures != test_failures;
  if (failed) fprintf(stderr, "FAIL %s%s%s\n", test_name, cur >= 0 ? " on " : "", cur >= 0 ? ctxs[cur].label : "");
  else if (!test_skipped) fprintf(stderr, "ok   %s\n", test_name);
  if (cur >= 0) {
    ctxs[cur].tests++;
    ctxs[cur].skipped += test_skipped && !failed;
  }
  test_name = NULL;
}

static void print_skip(const char *part, const char *reason) {
  fprintf(stderr, "skip %s%s%s%s on %s: %s\n", test_name ? test_name : "(test)", part ? " (" : "", part ? part : "",
          part ? ")" : "", tu_store_entry(), reason);
}

void tu_skip(const char *reason) {
  print_skip(NULL, reason);
  test_skipped = 1;
}

void tu_skip_part(const char *part, const char *reason) {
  print_skip(part, reason);
  if (cur >= 0) ctxs[cur].parts_skipped++;
}

int tu_done(void) {
  ctx_close();
  int checks = 0, failures = 0;
  for (int i = 0; i < nctx; i++) {
    printf("%s: %d passed, %d failed; %d tests, %d skipped, %d skipped in part\n", ctxs[i].label,
           ctxs[i].checks - ctxs[i].failures, ctxs[i].failures, ctxs[i].tests, ctxs[i].skipped,
           ctxs[i].parts_skipped);
    checks += ctxs[i].checks;
    failures += ctxs[i].failures;
  }
  if (nctx && tu_checks > checks)
    printf("without a store: %d passed, %d failed\n", tu_checks - checks - (tu_failures - failures),
           tu_failures - failures);
  printf("%d passed, %d failed\n", tu_checks - tu_failures, tu_failures);
  return tu_failures ? 1 : 0;
}

int64_t tu_clock(void *ud) { return *(int64_t *)ud; }

/* ------------------------------------------------------------- stores -- */

/* A fresh file path for name in the test's temporary folder, into buf. */
static void fresh_path(const char *name, char *buf, size_t size) {
  const char *dir = getenv("ESG_TEST_TMP");
  if (!dir) dir = "/tmp/esg-test";
  mkdir(dir, 0777);
  snprintf(buf, size, "%s/%d-%s", dir, (int)getpid(), name);
  const char *suffixes[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    char p[4200];
    snprintf(p, sizeof p, "%s%s", buf, suffixes[i]);
    unlink(p);
  }
}

const char *tu_path(const char *name) {
  static char path[4096];
  fresh_path(name, path, sizeof path);
  return path;
}

/*
 * The hook of a server backend: makes schema `schema` of the database named by
 * `entry` (the ESG_TEST_STORES entry, without the schema option) exist and be
 * empty, so that tu_store's URI (entry plus schema=<schema>) opens a fresh store.
 * 0 when done. Each test binary's schemas carry its pid, so binaries that ctest
 * runs in parallel never share one; like the SQLite files in ESG_TEST_TMP, they
 * stay after the run, for a look at what a failing test left.
 *
 * To be written with backend/postgres, in C with libpq, and compiled in only when
 * that backend is (the harness must build without libpq):
 *   PGconn *c = PQconnectdb(entry);
 *   PQexec(c, "DROP SCHEMA IF EXISTS \"<schema>\" CASCADE; CREATE SCHEMA \"<schema>\"");
 *   (check both results, PQfinish(c))
 * Until then a server entry is refused here, rather than run on a schema left over.
 */
static int fresh_schema(const char *entry, const char *schema) {
  (void)schema;
  fprintf(stderr, "ESG_TEST_STORES entry \"%s\": the harness has no fresh-schema hook for this backend yet "
                  "(tests/c/testutil.c, fresh_schema)\n",
          entry);
  return -1;
}

const char *tu_store(const char *name) {
  static char ring[8][4400];
  static int next;
  char *out = ring[next];
  next = (next + 1) % 8;
  const char *entry = tu_store_entry();
  if (strcmp(entry, ":memory:") == 0) {
    snprintf(out, sizeof ring[0], ":memory:");
  } else if (strcmp(entry, "sqlite") == 0 || strcmp(entry, "path") == 0) {
    char path[4096];
    fresh_path(name, path, sizeof path);
    snprintf(out, sizeof ring[0], "%s%s", entry[0] == 's' ? "sqlite:" : "", path);
  } else {
    /* esg_<pid>_<name> in lower case letters, digits and _; a name too long for
       PostgreSQL's 63 bytes is cut and ends in a hash of the whole, so two stay apart */
    char schema[64];
    int n = snprintf(schema, sizeof schema, "esg_%d_", (int)getpid());
    uint32_t h = 2166136261u; /* FNV-1a */
    bool cut = false;
    for (const char *p = name; *p; p++) {
      h = (h ^ (unsigned char)*p) * 16777619u;
      if (n < (int)sizeof schema - 1)
        schema[n++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
      else
        cut = true;
    }
    schema[n] = '\0';
    if (cut) snprintf(schema + sizeof schema - 10, 10, "_%08x", (unsigned)h);
    if (fresh_schema(entry, schema) != 0) exit(2);
    snprintf(out, sizeof ring[0], "%s%cschema=%s", entry, strchr(entry, '?') ? '&' : '?', schema);
  }
  return out;
}

bool tu_store_shared(void) { return strcmp(tu_store_entry(), ":memory:") != 0; }

const char *tu_store_backend(void) {
  static char scheme[64];
  const char *entry = tu_store_entry();
  if (!is_server(entry)) return "sqlite";
  size_t n = (size_t)(strstr(entry, "://") - entry);
  if (n >= sizeof scheme) n = sizeof scheme - 1;
  memcpy(scheme, entry, n);
  scheme[n] = '\0';
  return strcmp(scheme, "postgresql") == 0 ? "postgres" : scheme;
}

bool tu_store_is(const char *backend) { return backend && strcmp(tu_store_backend(), backend) == 0; }

esg_store *tu_open(const char *uri, int64_t *now) {
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.clock = tu_clock;
  o.clock_ud = now;
  esg_store *s = NULL;
  int rc = esg_store_open(&s, uri, &o);
  if (rc != ESG_OK) {
    fprintf(stderr, "%sesg_store_open(%s): %s: %s\n", tu_where(), uri, esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  return s;
}

esg_store *tu_reopen(esg_store *s, const char *uri, int64_t *now) {
  if (!tu_store_shared()) {
    tu_skip_part("restart", TU_NOT_KEPT);
    return s;
  }
  esg_store_close(s);
  return tu_open(uri, now);
}

static struct rlimit growth;

int tu_no_file_growth(void) {
  if (getrlimit(RLIMIT_FSIZE, &growth) != 0) return -1;
  struct rlimit none = growth;
  none.rlim_cur = 0;
  signal(SIGXFSZ, SIG_IGN);
  return setrlimit(RLIMIT_FSIZE, &none);
}

void tu_file_growth(void) { setrlimit(RLIMIT_FSIZE, &growth); }
