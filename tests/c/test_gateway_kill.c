/*
 * The C gateway SIGKILLed at random moments (ESG_KILLS times, default 30, per mode),
 * durable and with group commit, then run again to the end: no event is lost, every
 * repeat of a request is byte-identical to its first attempt (the outbox; the transform
 * renders differently at every call, so a second render would show), and the store
 * passes SQLite's integrity check. The receiver is a real HTTP server on 127.0.0.1.
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "httpd.c"
#include "testutil.h"

#define N_EVENTS 150

static int renders;
static int render(void *ud, esg_gateway_event *e) {
  (void)ud;
  char out[128];
  /* pid and a counter: a second render, in this process or another, gives other bytes */
  int n = snprintf(out, sizeof out, "{\"id\":\"%s\",\"render\":\"%d-%d\"}", esg_event_id(esg_gateway_event_envelope(e)),
                   (int)getpid(), ++renders);
  return esg_gateway_event_set_output(e, out, (size_t)n);
}

/* One run of the gateway over the input in a child; exits 0 when nothing was busy. */
static void child_run(const char *uri, const char *input, const char *url, int group_ms) {
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.group_commit_ms = group_ms;
  esg_store *s = NULL;
  if (esg_store_open(&s, uri, &so) != ESG_OK) _exit(10);
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  eo.backoff_base_ms = 1;
  eo.backoff_cap_ms = 5;
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = s;
  o.lease_ms = 40; /* a killed run's claims are taken over soon */
  o.transform = render;
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.http_url = url;
  o.egress = &eo;
  esg_gateway *g = NULL;
  if (esg_gateway_open(&g, &o) != ESG_OK) _exit(11);
  esg_gateway_source src;
  if (esg_gateway_source_jsonl(&src, input) != ESG_OK) _exit(12);
  int rc = esg_gateway_run(g, &src);
  esg_gateway_stats st;
  esg_gateway_get_stats(g, &st);
  esg_gateway_close(g);
  esg_store_close(s);
  _exit(rc != ESG_OK ? 13 : st.busy || st.faults ? 1 : 0);
}

static const char *self; /* argv[0]: under valgrind /proc/self/exe is valgrind's */

/* The child is this program again (exec'd: a fresh image, without the parent's server). */
static pid_t spawn(const char *uri, const char *input, const char *url, int group_ms) {
  char gms[16];
  snprintf(gms, sizeof gms, "%d", group_ms);
  pid_t pid = fork();
  if (pid == 0) {
    execl(self, self, "--child", uri, input, url, gms, (char *)NULL);
    _exit(127);
  }
  return pid;
}

static int integrity_ok(const char *path) {
  sqlite3 *db = NULL;
  int ok = 0;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return ok;
}

/* The Idempotency-Key of a recorded request ("" when none). */
static void key_of(const httpd_req *q, char *out, size_t n) {
  const char *k = strstr(q->headers, "Idempotency-Key: ");
  out[0] = '\0';
  if (!k) return;
  k += strlen("Idempotency-Key: ");
  size_t len = strcspn(k, "\r\n");
  snprintf(out, n, "%.*s", (int)(len < n - 1 ? len : n - 1), k);
}

static void sweep(int group_ms) {
  int kills = 30;
  const char *env = getenv("ESG_KILLS");
  if (env && atoi(env) > 0) kills = atoi(env);
  httpd *h = httpd_start();
  char url[128];
  httpd_url(h, "/in", url, sizeof url);
  const char *path = tu_path(group_ms ? "kill-grouped.db" : "kill-durable.db");
  char uri[4200], input[4200];
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  snprintf(input, sizeof input, "%s.jsonl", path);
  FILE *f = fopen(input, "w");
  for (int i = 0; i < N_EVENTS; i++)
    fprintf(f, "{\"id\":\"k-%d\",\"type\":\"t\",\"timestamp\":%d,\"partitionKey\":\"p-%d\"}\n", i, i + 1, i % 7);
  fclose(f);
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  for (int k = 0; k < kills; k++) {
    pid_t pid = spawn(uri, input, url, group_ms);
    usleep((useconds_t)(2000 + rand() % 25000));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  int done = 0;
  for (int tries = 0; tries < 50 && !done; tries++) {
    usleep(50000); /* past the killed runs' leases */
    int st = 0;
    waitpid(spawn(uri, input, url, group_ms), &st, 0);
    done = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  CHECK(done);
  CHECK(integrity_ok(path));
  /* every event arrived, and every repeat carried the first attempt's bytes */
  int n = httpd_count(h);
  static char first[N_EVENTS][128];
  static int seen[N_EVENTS];
  memset(seen, 0, sizeof seen);
  int mismatched = 0;
  for (int i = 0; i < n; i++) {
    httpd_req q;
    if (httpd_get(h, i, &q) != 0) continue;
    char key[64];
    key_of(&q, key, sizeof key);
    int idx = -1;
    if (sscanf(key, "k-%d", &idx) != 1 || idx < 0 || idx >= N_EVENTS) continue;
    char body[128];
    snprintf(body, sizeof body, "%.*s", (int)(q.body_len < 127 ? q.body_len : 127), q.body ? q.body : "");
    if (!seen[idx]++) snprintf(first[idx], sizeof first[idx], "%s", body);
    else if (strcmp(first[idx], body) != 0) mismatched++;
  }
  int missing = 0;
  for (int i = 0; i < N_EVENTS; i++) missing += !seen[i];
  if (missing || mismatched) fprintf(stderr, "%d events never arrived, %d repeats with other bytes\n", missing, mismatched);
  CHECK(missing == 0);
  CHECK(mismatched == 0);
  printf("# %s: %d kills, %d requests for %d events\n", group_ms ? "grouped" : "durable", kills, n, N_EVENTS);
  httpd_stop(h);
}

static void test_kill_durable(void) { sweep(0); }
static void test_kill_grouped(void) { sweep(20); }

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  self = argv[0];
  if (argc == 6 && strcmp(argv[1], "--child") == 0) child_run(argv[2], argv[3], argv[4], atoi(argv[5]));
  TU_SQLITE {
    RUN(test_kill_durable);
    RUN(test_kill_grouped);
  }
  return tu_done();
}
