/*
 * The C gateway SIGKILLed at random moments (ESG_KILLS times, default 30, per mode),
 * durable and with group commit, then run again to the end: no event is lost, every
 * repeat of a request is byte-identical to its first attempt (the outbox; the transform
 * renders differently at every call, so a second render would show), and the store
 * passes SQLite's integrity check. The receiver is a real HTTP server on 127.0.0.1.
 * With group commit, a delivery answered while the gateway waits for others (draining,
 * or for a free slot) is committed within the group's delay, so a kill loses no more
 * (found by the runners' kill sweep, tests/kill).
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

/* ---- the open group while the gateway waits for deliveries ---- */

#define GROUP_MS 100 /* longer than the engine turns a wait was once made of (50 ms) */
#define N_HOLD 33 /* s-0, s-1, f-2 .. f-11, s-12 .. s-32 */

static char slow_url[200], fast_url[200];
/* Events "s-*" go to a path whose answer stalls, "f-*" to one answered at once. */
static int route(void *ud, esg_gateway_event *e, esg_gateway_request *r) {
  (void)ud;
  r->url = esg_event_id(esg_gateway_event_envelope(e))[0] == 's' ? slow_url : fast_url;
  return ESG_OK;
}

/* The child, in one of three modes: "drain" pushes s-0, s-1 and f-2, then drains;
   "prepare" pushes the N_HOLD events with 8 deliveries on the wire (their requests
   stored in the outbox), until it waits for a slot for good; "takeover" pushes them
   again, after the lease, with 3 on the wire: each is a stored request (no new outbox
   row to commit), the fast ones go through the third connection while s-12 .. wait
   behind s-0, and once the fast ones are done the gateway waits for a slot (31 > 4 * 3
   in flight), then it drains. */
static void child_hold(const char *uri, const char *base, const char *mode) {
  snprintf(slow_url, sizeof slow_url, "%s/slow", base);
  snprintf(fast_url, sizeof fast_url, "%s/fast", base);
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.group_commit_ms = GROUP_MS;
  esg_store *s = NULL;
  if (esg_store_open(&s, uri, &so) != ESG_OK) _exit(10);
  bool drain = strcmp(mode, "drain") == 0;
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  eo.max_in_flight = strcmp(mode, "prepare") == 0 ? 8 : 3;
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = s;
  o.lease_ms = drain ? 0 : 200; /* the takeover comes soon after the kill */
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.http_url = fast_url;
  o.render = route;
  o.egress = &eo;
  esg_gateway *g = NULL;
  if (esg_gateway_open(&g, &o) != ESG_OK) _exit(11);
  char ev[160];
  for (int i = 0; i < (drain ? 3 : N_HOLD); i++) {
    int fast = i >= 2 && i < 12;
    /* s-12 .. queue behind s-0 (one partition): they hold flight slots, not the wire */
    int n = snprintf(ev, sizeof ev, "{\"id\":\"%c-%d\",\"type\":\"t\",\"timestamp\":1,\"partitionKey\":\"%s\"}",
                     fast ? 'f' : 's', i, fast ? "pf" : i == 1 ? "ps-1" : "ps-0");
    if (esg_gateway_push(g, ev, (size_t)n) != ESG_OK) _exit(12);
  }
  esg_gateway_drain(g);
  _exit(0);
}

/* One integer the file at path answers to sql (with key bound, if given), as another reader sees it; -1 if none. */
static int64_t query(const char *path, const char *sql, const char *key) {
  sqlite3 *db = NULL;
  int64_t v = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
      if (key) sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
      if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return v;
}

static int completed(const char *path, const char *key) {
  return query(path, "SELECT done FROM esg_claims WHERE key = ?", key) == 1;
}

static pid_t spawn_hold(const char *uri, const char *base, const char *mode) {
  pid_t pid = fork();
  if (pid == 0) {
    execl(self, self, "--hold", uri, base, mode, (char *)NULL);
    _exit(127);
  }
  return pid;
}

/* Whether the receiver got a request to path whose body holds the event id. */
static int got(httpd *h, const char *path, const char *id) {
  char quoted[40];
  snprintf(quoted, sizeof quoted, "\"%s\"", id);
  for (int i = 0, n = httpd_count(h); i < n; i++) {
    httpd_req q;
    if (httpd_get(h, i, &q) == 0 && strcmp(q.path, path) == 0 && q.body && strstr(q.body, quoted)) return 1;
  }
  return 0;
}

/* A delivery answered while the gateway waits (in drain, or for a free slot, for
   stalled deliveries) is completed within the group's delay, not when the wait ends:
   a crash meanwhile loses only the open group's last GROUP_MS. */
static void group_due_while_waiting(int takeover) {
  httpd *h = httpd_start();
  httpd_rule first_fast = {.path = "/fast", .count = 1, .stall_ms = -1}; /* the prepare run's, cut by its kill */
  httpd_rule stall = {.path = "/slow", .stall_ms = 5000};
  if (takeover) httpd_rule_add(h, &first_fast);
  httpd_rule_add(h, &stall);
  char base[128];
  httpd_url(h, "", base, sizeof base);
  const char *path = tu_path(takeover ? "hold-takeover.db" : "hold-drain.db");
  char uri[4200];
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  const char *last = takeover ? "f-11" : "f-2";
  if (takeover) {
    pid_t pid = spawn_hold(uri, base, "prepare");
    int64_t t0 = httpd_now_ms();
    while (query(path, "SELECT count(*) FROM esg_outbox", NULL) < N_HOLD && httpd_now_ms() - t0 < 10000) usleep(5000);
    CHECK(query(path, "SELECT count(*) FROM esg_outbox", NULL) == N_HOLD);
    /* and its first fast request on the wire, so that it, not the takeover's, meets the
       rule that never answers (on a loaded machine the kill could come before it) */
    while (!got(h, "/fast", "f-2") && httpd_now_ms() - t0 < 10000) usleep(2000);
    CHECK(got(h, "/fast", "f-2"));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    int64_t until = query(path, "SELECT max(lease_until) FROM esg_claims", NULL); /* the store's clock: real time */
    while (until > 0 && esg_clock_real(NULL) <= until) usleep(5000);
  }
  pid_t pid = spawn_hold(uri, base, takeover ? "takeover" : "drain");
  int64_t t0 = httpd_now_ms();
  while (!got(h, "/fast", last) && httpd_now_ms() - t0 < 10000) usleep(2000);
  CHECK(got(h, "/fast", last));
  t0 = httpd_now_ms();
  while (!completed(path, last) && httpd_now_ms() - t0 < 2000) usleep(5000);
  int64_t took = httpd_now_ms() - t0;
  int done = completed(path, last);
  CHECK(done); /* before the fix: only once the stalled deliveries ended (5 s) */
  if (done)
    printf("# %s: %s completed %lld ms after its request\n", takeover ? "waiting for a slot" : "draining", last,
           (long long)took);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  httpd_stop(h);
}

static void test_group_due_while_draining(void) { group_due_while_waiting(0); }
static void test_group_due_while_waiting_for_a_slot(void) { group_due_while_waiting(1); }

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
  if (argc == 5 && strcmp(argv[1], "--hold") == 0) child_hold(argv[2], argv[3], argv[4]);
  TU_SQLITE {
    RUN(test_group_due_while_draining);
    RUN(test_group_due_while_waiting_for_a_slot);
    RUN(test_kill_durable);
    RUN(test_kill_grouped);
  }
  return tu_done();
}
