/*
 * Resync of slow data: cursor jobs (pages, deterministic ids, rewinds dedupe,
 * bad items roll the page back, SIGKILL mid-page many times gives the same ids
 * as an uninterrupted run), snapshot diff (created / updated / deleted only for
 * what changed, any order, small batches, resumed listings, bad entries) and
 * replay (filters and order).
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sys/resource.h>
#include "testutil.h"

static int64_t now = 1700000000000;

/* ------------------------------------------------------------ a fake source -- */

/* N items "item-<i>", version "v<i % 3>"; the cursor is the next index as text. */
typedef struct source {
  int n, page;
  int fail_fetch;          /* fetch fails when > 0 (counts down) */
  int bad_at;              /* item index made bad, -1 = none */
  int bad_kind;            /* 0 empty id, 1 non-JSON data, 2 oversized data */
  esg_resync_item items[64];
  char ids[64][32], data[64][64], next[32];
  char *big;
} source;

static int fetch(void *ud, const char *cursor, esg_resync_page *pg) {
  source *src = ud;
  if (src->fail_fetch > 0 && --src->fail_fetch == 0) return -1;
  int from = cursor ? atoi(cursor) : 0;
  int to = from + src->page < src->n ? from + src->page : src->n;
  for (int i = from; i < to; i++) {
    esg_resync_item *it = &src->items[i - from];
    memset(it, 0, sizeof *it);
    snprintf(src->ids[i - from], sizeof src->ids[0], "item-%d", i);
    snprintf(src->data[i - from], sizeof src->data[0], "{\"n\":%d,\"name\":\"thing %d\"}", i, i);
    it->id = src->ids[i - from];
    it->version = i % 3 == 0 ? "v0" : i % 3 == 1 ? "v1" : "v2";
    it->type = "thing-synced";
    it->timestamp = 1000 + i;
    it->data = src->data[i - from];
    it->data_len = strlen(it->data);
    if (i == src->bad_at) {
      if (src->bad_kind == 0) it->id = "";
      if (src->bad_kind == 1) it->data = "{oops", it->data_len = 5;
      if (src->bad_kind == 2) it->data = src->big, it->data_len = ESG_EVENT_MAX_BYTES + 1;
    }
  }
  snprintf(src->next, sizeof src->next, "%d", to);
  pg->items = src->items;
  pg->n = (size_t)(to - from);
  pg->next_cursor = src->next;
  pg->done = to == src->n;
  return 0;
}

static int count_cb(void *ud, const esg_stored_event *ev) {
  (void)ev;
  (*(int *)ud)++;
  return 0;
}

static int log_count(esg_store *s) {
  int n = 0;
  esg_replay(s, NULL, count_cb, &n, NULL);
  return n;
}

static void test_cursor_basic(void) {
  esg_store *s = tu_open(tu_store("cursor1.db"), &now);
  source src = {.n = 100, .page = 7, .bad_at = -1};
  esg_resync_stats st;
  CHECK_RC(ESG_OK, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK(st.pages == 15 && st.emitted == 100 && st.duplicates == 0 && st.done == 1);
  char *c = NULL;
  CHECK_RC(ESG_OK, esg_cursor_get(s, "job", &c));
  CHECK_STR(c, "100");
  esg_free(c);
  CHECK(log_count(s) == 100);
  /* the id is UUIDv5(source \0 id \0 version), stored under the item's id as correlation key */
  char id[37];
  CHECK_RC(ESG_OK, esg_uuid5(ESG_UUID_NS_EVENT, "crm\0item-4\0v1", 13, id));
  int got = 0;
  CHECK_RC(ESG_OK, esg_event_get(s, id, count_cb, &got));
  CHECK(got == 1);
  esg_replay_filter f = {.corr_key = "item-4"};
  int64_t n = 0;
  CHECK_RC(ESG_OK, esg_replay(s, &f, count_cb, &got, &n));
  CHECK(n == 1);
  /* rewinding re-emits the same ids: all duplicates, nothing stored twice */
  CHECK_RC(ESG_OK, esg_cursor_delete(s, "job"));
  CHECK_RC(ESG_NOT_FOUND, esg_cursor_delete(s, "job"));
  CHECK_RC(ESG_NOT_FOUND, esg_cursor_get(s, "job", &c));
  CHECK(c == NULL);
  CHECK_RC(ESG_OK, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK(st.emitted == 0 && st.duplicates == 100);
  CHECK(log_count(s) == 100);
  /* max_pages, and a cursor set by hand */
  CHECK_RC(ESG_OK, esg_cursor_set(s, "job2", "90"));
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .max_pages = 1};
  CHECK_RC(ESG_OK, esg_cursor_run(s, "job2", "erp", fetch, &src, &o, &st));
  CHECK(st.pages == 1 && st.emitted == 7 && st.done == 0);
  CHECK_RC(ESG_OK, esg_cursor_run(s, "job2", "erp", fetch, &src, NULL, &st));
  CHECK(st.pages == 1 && st.emitted == 3 && st.done == 1);
  esg_store_close(s);
}

static void test_cursor_bad_pages(void) {
  esg_store *s = tu_open(tu_store("cursor2.db"), &now);
  source src = {.n = 30, .page = 10, .bad_at = 14, .bad_kind = 0};
  esg_resync_stats st;
  char *c = NULL;
  CHECK_RC(ESG_EINVAL, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK_CONTAINS(esg_errmsg(s), "item 4: id is empty");
  CHECK(st.pages == 1 && st.emitted == 10);
  CHECK_RC(ESG_OK, esg_cursor_get(s, "job", &c));
  CHECK_STR(c, "10"); /* the bad page was not committed */
  esg_free(c);
  CHECK(log_count(s) == 10);
  src.bad_kind = 1;
  CHECK_RC(ESG_EJSON, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK_CONTAINS(esg_errmsg(s), "item-14");
  CHECK_CONTAINS(esg_errmsg(s), "not valid JSON");
  src.bad_kind = 2;
  src.big = malloc(ESG_EVENT_MAX_BYTES + 1);
  CHECK_RC(ESG_ETOOBIG, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK_CONTAINS(esg_errmsg(s), "limit");
  free(src.big);
  CHECK(log_count(s) == 10);
  src.bad_at = -1;
  src.fail_fetch = 1;
  CHECK_RC(ESG_ECALLBACK, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK_CONTAINS(esg_errmsg(s), "fetching");
  CHECK_RC(ESG_OK, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, &st));
  CHECK(st.emitted == 20 && st.done);
  /* bad arguments */
  CHECK_RC(ESG_EINVAL, esg_cursor_run(s, "", "crm", fetch, &src, NULL, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "cursor name is empty");
  CHECK_RC(ESG_EINVAL, esg_cursor_run(s, "job", NULL, fetch, &src, NULL, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "source is NULL");
  CHECK_RC(ESG_EINVAL, esg_cursor_run(s, "job", "crm", NULL, &src, NULL, NULL));
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .no_log = 1};
  CHECK_RC(ESG_EINVAL, esg_cursor_run(s, "job", "crm", fetch, &src, &o, NULL));
  esg_resync_opts o2 = {.size = sizeof(esg_resync_opts), .entity_field = "tags"};
  CHECK_RC(ESG_EINVAL, esg_cursor_run(s, "job", "crm", fetch, &src, &o2, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "envelope field");
  CHECK_RC(ESG_EINVAL, esg_cursor_set(s, "job", NULL));
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_ESTATE, esg_cursor_run(s, "job", "crm", fetch, &src, NULL, NULL));
  CHECK_RC(ESG_OK, esg_store_rollback(s));
  CHECK(log_count(s) == 30);
  esg_store_close(s);
}

typedef struct sink_ctx {
  int calls, fail_at;
  char last[2048];
} sink_ctx;

static int sink(void *ud, const esg_stored_event *ev) {
  sink_ctx *k = ud;
  k->calls++;
  snprintf(k->last, sizeof k->last, "%s", ev->json);
  return k->fail_at && k->calls == k->fail_at;
}

static void test_cursor_sink(void) {
  esg_store *s = tu_open(tu_store("cursor3.db"), &now);
  source src = {.n = 20, .page = 10, .bad_at = -1};
  sink_ctx k = {.fail_at = 15};
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = sink, .sink_ud = &k, .entity_field = "thing"};
  esg_resync_stats st;
  CHECK_RC(ESG_ECALLBACK, esg_cursor_run(s, "job", "crm", fetch, &src, &o, &st));
  CHECK_CONTAINS(esg_errmsg(s), "sink failed");
  CHECK(st.pages == 1 && log_count(s) == 10); /* the failed page rolled back */
  k.fail_at = 0;
  CHECK_RC(ESG_OK, esg_cursor_run(s, "job", "crm", fetch, &src, &o, &st));
  CHECK(st.emitted == 10 && k.calls == 25);
  /* the envelope parses, carries the item and the tags */
  esg_event *ev = NULL;
  CHECK_RC(ESG_OK, esg_event_parse(k.last, strlen(k.last), &ev));
  CHECK_STR(esg_event_type(ev), "thing-synced");
  CHECK_STR(esg_event_partition_key(ev), "item-19");
  CHECK(esg_event_timestamp(ev) == 1019);
  CHECK_CONTAINS(k.last, "\"thing\":{\"n\":19,");
  CHECK_CONTAINS(k.last, "\"tags\":{\"source\":\"crm\",\"itemId\":\"item-19\",\"itemVersion\":\"v1\"}");
  esg_event_free(ev);
  esg_store_close(s);
}

/* ---------------------------------------------------------- kill mid-page -- */

#define KILL_N 1500
static int kill_after; /* the child SIGKILLs itself at this sink call */
static int kill_calls, fetch_calls;

static int killing_sink(void *ud, const esg_stored_event *ev) {
  (void)ud;
  (void)ev;
  if (++kill_calls == kill_after) raise(SIGKILL); /* mid-page: inside the page's transaction */
  return 0;
}

static int killing_fetch(void *ud, const char *cursor, esg_resync_page *pg) {
  if (kill_after < 0 && ++fetch_calls == -kill_after) raise(SIGKILL); /* between pages */
  return fetch(ud, cursor, pg);
}

typedef struct idset {
  char (*ids)[37];
  int n;
} idset;

static int collect(void *ud, const esg_stored_event *ev) {
  idset *set = ud;
  snprintf(set->ids[set->n++], 37, "%s", ev->id);
  return 0;
}

static int by_id(const void *a, const void *b) { return strcmp(a, b); }

static void test_cursor_killed(void) {
  TU_REQUIRE(tu_store_shared(), "processes killed and resumed on one store: " TU_NOT_SHARED);
  /* the reference: one uninterrupted run */
  esg_store *ref = tu_open(tu_store("killref.db"), &now);
  source src = {.n = KILL_N, .page = 23, .bad_at = -1};
  CHECK_RC(ESG_OK, esg_cursor_run(ref, "job", "legacy", fetch, &src, NULL, NULL));
  idset want = {calloc(KILL_N * 2, 37), 0};
  CHECK_RC(ESG_OK, esg_replay(ref, NULL, collect, &want, NULL));
  esg_store_close(ref);
  /* children run the same job on one file and are killed at random points until one finishes */
  const char *path = tu_store("killed.db");
  uint64_t rng = 88172645463325252ULL;
  int kills = 0, finished = 0;
  for (int round = 0; round < 400 && !finished; round++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    int at = 1 + (int)(rng % 40);
    pid_t pid = fork();
    if (pid == 0) {
      kill_calls = fetch_calls = 0;
      kill_after = rng & 1024 ? -(1 + at % 5) : at;
      esg_store *s = NULL;
      if (esg_store_open(&s, path, NULL) != ESG_OK) _exit(3);
      esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = killing_sink};
      source csrc = {.n = KILL_N, .page = 23, .bad_at = -1};
      esg_resync_stats cst;
      int rc = esg_cursor_run(s, "job", "legacy", killing_fetch, &csrc, &o, &cst);
      if (getenv("KDEBUG")) fprintf(stderr, "child: rc %d emitted %lld dup %lld kill_after %d calls %d\n", rc, (long long)cst.emitted, (long long)cst.duplicates, kill_after, kill_calls);
      esg_store_close(s);
      _exit(rc == ESG_OK ? 0 : 4);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) kills++;
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) finished = 1;
    else CHECK(!"child failed");
  }
  CHECK(finished);
  CHECK(kills >= 40);
  esg_store *s = tu_open(path, &now);
  idset got = {calloc(KILL_N * 2, 37), 0};
  CHECK_RC(ESG_OK, esg_replay(s, NULL, collect, &got, NULL));
  char *c = NULL;
  CHECK_RC(ESG_OK, esg_cursor_get(s, "job", &c));
  CHECK_STR(c, "1500");
  esg_free(c);
  esg_store_close(s);
  /* the same set of ids, each once */
  qsort(want.ids, (size_t)want.n, 37, by_id);
  qsort(got.ids, (size_t)got.n, 37, by_id);
  CHECK(want.n == KILL_N);
  CHECK(got.n == want.n);
  int same = got.n == want.n;
  for (int i = 0; same && i < got.n; i++) same = strcmp(got.ids[i], want.ids[i]) == 0;
  CHECK(same);
  for (int i = 1; i < got.n; i++) CHECK(strcmp(got.ids[i - 1], got.ids[i]) != 0);
  fprintf(stderr, "  %d kills before a child finished\n", kills);
  free(want.ids);
  free(got.ids);
}

/* --------------------------------------------------------------- snapshot -- */

typedef struct kinds {
  int created, updated, deleted;
  char last_created[2048];
} kinds;

static int kinds_cb(void *ud, const esg_stored_event *ev) {
  kinds *k = ud;
  if (strstr(ev->type, "-created")) {
    k->created++;
    snprintf(k->last_created, sizeof k->last_created, "%s", ev->json);
  }
  k->updated += strstr(ev->type, "-updated") != NULL;
  k->deleted += strstr(ev->type, "-deleted") != NULL;
  return 0;
}

static int listing(esg_store *s, const char *const *entries, int n, const esg_resync_opts *o, esg_resync_stats *st) {
  esg_snapshot *sn = NULL;
  int rc = esg_snapshot_begin(&sn, s, "crm", o);
  for (int i = 0; rc == ESG_OK && i < n; i++) rc = esg_snapshot_add(sn, entries[2 * i], entries[2 * i + 1], strlen(entries[2 * i + 1]));
  if (rc == ESG_OK) rc = esg_snapshot_finish(sn, st);
  esg_snapshot_close(sn);
  return rc;
}

/* In a child that may not grow any file (RLIMIT_FSIZE 0): the second listing's last adds
   cannot commit; finish fails, and a second finish refuses instead of sweeping. */
static int finish_unable_to_grow(const char *path) {
  int before = tu_failures;
  esg_store *s = tu_open(path, &now);
  kinds k = {0};
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = kinds_cb, .sink_ud = &k, .type = "customer", .batch = 100};
  const char *l[] = {"a", "{\"x\":1}", "b", "{\"x\":2}"};
  CHECK_RC(ESG_OK, listing(s, l, 2, &o, NULL));
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "crm", &o));
  for (int i = 0; i < 2; i++) CHECK_RC(ESG_OK, esg_snapshot_add(sn, l[2 * i], l[2 * i + 1], strlen(l[2 * i + 1])));
  CHECK(tu_no_file_growth() == 0);
  CHECK(esg_snapshot_finish(sn, NULL) < 0); /* the adds' commit fails */
  tu_file_growth();
  CHECK_RC(ESG_ESTATE, esg_snapshot_finish(sn, NULL)); /* not a sweep without the marks */
  CHECK(k.deleted == 0);
  esg_snapshot_close(sn);
  esg_store_close(s);
  return tu_failures == before ? 0 : 1;
}

static void test_snapshot_commit_fails(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s", tu_path("snap-commit.db"));
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(finish_unable_to_grow(path));
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  kinds k = {0};
  esg_store *s = tu_open(path, &now);
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = kinds_cb, .sink_ud = &k, .type = "customer", .batch = 100};
  const char *l[] = {"a", "{\"x\":1}", "b", "{\"x\":2}"};
  esg_resync_stats st;
  CHECK_RC(ESG_OK, listing(s, l, 2, &o, &st)); /* the listing again: nothing was deleted */
  CHECK(st.deleted == 0 && st.created == 0 && k.deleted == 0);
  esg_store_close(s);
}

/* One interrupted listing (no finish) of the single entry key = content. */
static void interrupted(esg_store *s, const esg_resync_opts *o, const char *key, const char *content) {
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "crm", o));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, key, content, strlen(content)));
  esg_snapshot_close(sn);
}

/* Content that changes and changes back across resumed runs of one generation: every
   change is an update the sink sees (the event log dedupes by id, and the id holds
   the content before and after). */
static void test_snapshot_change_back(void) {
  esg_store *s = tu_open(tu_store("snap-back.db"), &now);
  kinds k = {0};
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = kinds_cb, .sink_ud = &k, .type = "customer"};
  const char *l[] = {"a", "{\"v\":1}"};
  CHECK_RC(ESG_OK, listing(s, l, 1, &o, NULL));
  interrupted(s, &o, "a", "{\"v\":2}");
  interrupted(s, &o, "a", "{\"v\":3}");
  interrupted(s, &o, "a", "{\"v\":2}");
  CHECK(k.created == 1 && k.updated == 3);
  esg_store_close(s);
}

static void test_snapshot_diff(void) {
  esg_store *s = tu_open(tu_store("snap1.db"), &now);
  kinds k = {0};
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = kinds_cb, .sink_ud = &k, .type = "customer", .batch = 2};
  const char *l1[] = {"a", "{\"x\":1,\"y\":2}", "b", "{\"x\":2}", "c", "{\"x\":3}", "e", "[1,2]"};
  esg_resync_stats st;
  CHECK_RC(ESG_OK, listing(s, l1, 4, &o, &st));
  CHECK(st.created == 4 && st.updated == 0 && st.deleted == 0 && st.unchanged == 0);
  CHECK(k.created == 4 && st.emitted == 4);
  /* the content hash in the event is the canonical one */
  char h[65];
  CHECK_RC(ESG_OK, esg_content_hash("[1,2]", 5, h));
  CHECK_CONTAINS(k.last_created, h);
  CHECK_CONTAINS(k.last_created, "\"type\":\"customer-created\"");
  /* another order; a's members reordered (same content); b changed; c gone; d new */
  const char *l2[] = {"d", "{\"x\":4}", "b", "{\"x\":20}", "a", "{ \"y\": 2, \"x\": 1 }", "e", "[1,2]"};
  memset(&k, 0, sizeof k);
  CHECK_RC(ESG_OK, listing(s, l2, 4, &o, &st));
  CHECK(st.created == 1 && st.updated == 1 && st.deleted == 1 && st.unchanged == 2);
  CHECK(k.created == 1 && k.updated == 1 && k.deleted == 1);
  /* the same listing again: nothing to emit */
  memset(&k, 0, sizeof k);
  CHECK_RC(ESG_OK, listing(s, l2, 4, &o, &st));
  CHECK(st.unchanged == 4 && st.emitted == 0 && k.created + k.updated + k.deleted == 0);
  /* everything gone: deletions swept in batches of 2 */
  CHECK_RC(ESG_OK, listing(s, NULL, 0, &o, &st));
  CHECK(st.deleted == 4 && k.deleted == 4);
  /* a key that comes back is created again, with a new id */
  CHECK_RC(ESG_OK, listing(s, l1, 1, &o, &st));
  CHECK(st.created == 1 && st.duplicates == 0);
  /* the log holds them all; replay by type */
  kinds all = {0};
  esg_replay_filter f = {.type = "customer-deleted"};
  int64_t n = 0;
  CHECK_RC(ESG_OK, esg_replay(s, &f, kinds_cb, &all, &n));
  CHECK(n == 5 && all.deleted == 5);
  esg_store_close(s);
}

static void test_snapshot_resume_and_bad_input(void) {
  esg_store *s = tu_open(tu_store("snap2.db"), &now);
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .batch = 3};
  const char *l1[] = {"k1", "{}", "k2", "{\"v\":2}", "k3", "3", "k4", "\"four\""};
  esg_resync_stats st;
  CHECK_RC(ESG_OK, listing(s, l1, 4, &o, &st));
  CHECK(st.created == 4);
  /* an interrupted listing: k1 changed and k5 new were emitted, then the process "crashed" */
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "crm", &o));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "k1", "{\"v\":1}", 7));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "k5", "5", 1));
  /* bad entries: clear errors, nothing written for them, the listing goes on */
  CHECK_RC(ESG_EINVAL, esg_snapshot_add(sn, "", "{}", 2));
  CHECK_CONTAINS(esg_errmsg(sn), "listing key is empty");
  CHECK_RC(ESG_EINVAL, esg_snapshot_add(sn, NULL, "{}", 2));
  CHECK_CONTAINS(esg_errmsg(sn), "listing key is NULL");
  CHECK_RC(ESG_EJSON, esg_snapshot_add(sn, "k2", "{v:2}", 5));
  CHECK_CONTAINS(esg_errmsg(sn), "listing entry \"k2\": content is not valid JSON");
  CHECK_RC(ESG_EJSON, esg_snapshot_add(sn, "k2", "{} {}", 5));
  CHECK_RC(ESG_EINVAL, esg_snapshot_add(sn, "k2", NULL, 0));
  CHECK_RC(ESG_ETOOBIG, esg_snapshot_add(sn, "k2", "{}", (size_t)ESG_EVENT_MAX_BYTES + 1));
  CHECK_CONTAINS(esg_errmsg(sn), "limit");
  esg_snapshot_close(sn); /* no finish: no deletions, the generation stays open */
  CHECK(log_count(s) == 6);
  /* the rerun resumes that generation: what was emitted is not emitted again */
  const char *l2[] = {"k5", "5", "k1", "{\"v\":1}", "k2", "{\"v\":2}", "k4", "\"four\""};
  CHECK_RC(ESG_OK, listing(s, l2, 4, &o, &st));
  CHECK(st.created == 0 && st.updated == 0 && st.unchanged == 4 && st.deleted == 1 && st.emitted == 1);
  CHECK(log_count(s) == 7);
  /* bad arguments */
  CHECK_RC(ESG_EINVAL, esg_snapshot_begin(&sn, s, "", NULL));
  CHECK_CONTAINS(esg_errmsg(s), "source is empty");
  CHECK(sn == NULL);
  CHECK_RC(ESG_EINVAL, esg_snapshot_begin(NULL, s, "crm", NULL));
  CHECK_RC(ESG_EINVAL, esg_snapshot_add(NULL, "k", "{}", 2));
  CHECK_RC(ESG_OK, esg_store_begin(s));
  CHECK_RC(ESG_ESTATE, esg_snapshot_begin(&sn, s, "crm", NULL));
  CHECK_RC(ESG_OK, esg_store_rollback(s));
  esg_snapshot_close(NULL);
  esg_store_close(s);
}

static void test_snapshot_sink_failure(void) {
  esg_store *s = tu_open(tu_store("snap3.db"), &now);
  sink_ctx k = {.fail_at = 2};
  esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = sink, .sink_ud = &k};
  esg_snapshot *sn = NULL;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "src", &o));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "a", "1", 1));
  CHECK_RC(ESG_ECALLBACK, esg_snapshot_add(sn, "b", "2", 1));
  CHECK_RC(ESG_ESTATE, esg_snapshot_add(sn, "c", "3", 1));
  CHECK_RC(ESG_ESTATE, esg_snapshot_finish(sn, NULL));
  esg_snapshot_close(sn);
  CHECK(log_count(s) == 0); /* the batch rolled back */
  k.fail_at = 0;
  esg_resync_stats st;
  CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, "src", &o));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "a", "1", 1));
  CHECK_RC(ESG_OK, esg_snapshot_add(sn, "b", "2", 1));
  CHECK_RC(ESG_OK, esg_snapshot_finish(sn, &st));
  esg_snapshot_close(sn);
  CHECK(st.created == 2 && log_count(s) == 2);
  esg_store_close(s);
}

static void test_snapshot_hash_is_canonical(void) {
  /* the listing's hash (fast path for documents already in canonical form, full
     path otherwise) must equal esg_content_hash for every document */
  const char *docs[] = {"{\"a\":1,\"b\":\"x\"}", "{\"b\":1,\"a\":2}", "{\"a\":[1,2,{\"c\":null,\"b\":true}]}",
                        "{\"a\":[1,2,{\"b\":true,\"c\":null}]}", "123456789012345", "1234567890123456", "-0", "1.5",
                        "\"a\\nb\"", "{\"ab\":1,\"a\":2}", "{\"a\":1,\"ab\":2}", "[]", "{}", "\"\xc3\xa9\"", "{\"k\":-12}",
                        "0", "-1", "false", " {\"a\":1} ", "[1e3,2.50]", "{\"a\":{}}"};
  esg_store *s = tu_open(tu_store("snaphash.db"), &now);
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    sink_ctx k = {0};
    esg_resync_opts o = {.size = sizeof(esg_resync_opts), .sink = sink, .sink_ud = &k, .no_log = 1};
    esg_snapshot *sn = NULL;
    char src[16], h[65];
    snprintf(src, sizeof src, "h%zu", i);
    CHECK_RC(ESG_OK, esg_snapshot_begin(&sn, s, src, &o));
    CHECK_RC(ESG_OK, esg_snapshot_add(sn, "k", docs[i], strlen(docs[i])));
    CHECK_RC(ESG_OK, esg_snapshot_finish(sn, NULL));
    esg_snapshot_close(sn);
    CHECK_RC(ESG_OK, esg_content_hash(docs[i], strlen(docs[i]), h));
    if (!strstr(k.last, h)) fprintf(stderr, "  hash differs for %s\n", docs[i]);
    CHECK_CONTAINS(k.last, h);
  }
  esg_store_close(s);
}

/* ----------------------------------------------------------------- replay -- */

static int put(esg_store *s, const char *id, const char *type, int64_t ts, const char *key) {
  char json[256];
  snprintf(json, sizeof json, "{\"id\":\"%s\",\"type\":\"%s\",\"timestamp\":%lld,\"partitionKey\":\"%s\"}", id, type,
           (long long)ts, key);
  esg_event *ev = NULL;
  int rc = esg_event_parse(json, strlen(json), &ev);
  if (rc == ESG_OK) rc = esg_event_put(s, ev, NULL, 0);
  esg_event_free(ev);
  return rc;
}

typedef struct order {
  char seen[16][8];
  int n;
} order;

static int order_cb(void *ud, const esg_stored_event *ev) {
  order *o = ud;
  if (o->n < 16) snprintf(o->seen[o->n++], 8, "%s", ev->id);
  return o->n >= 16;
}

static void test_replay(void) {
  esg_store *s = tu_open(tu_store("replay.db"), &now);
  CHECK_RC(ESG_OK, put(s, "e3", "a", 30, "k1"));
  CHECK_RC(ESG_OK, put(s, "e1", "b", 10, "k1"));
  CHECK_RC(ESG_OK, put(s, "e2", "a", 20, "k2"));
  CHECK_RC(ESG_OK, put(s, "e0", "a", 20, "k1"));
  CHECK_RC(ESG_OK, put(s, "e4", "b", 40, "k2"));
  order o = {0};
  int64_t n = 0;
  CHECK_RC(ESG_OK, esg_replay(s, NULL, order_cb, &o, &n));
  CHECK(n == 5);
  CHECK(strcmp(o.seen[0], "e1") == 0 && strcmp(o.seen[1], "e0") == 0 && strcmp(o.seen[2], "e2") == 0 &&
        strcmp(o.seen[3], "e3") == 0 && strcmp(o.seen[4], "e4") == 0);
  memset(&o, 0, sizeof o);
  esg_replay_filter f = {.corr_key = "k1", .type = "a"};
  CHECK_RC(ESG_OK, esg_replay(s, &f, order_cb, &o, &n));
  CHECK(n == 2 && strcmp(o.seen[0], "e0") == 0 && strcmp(o.seen[1], "e3") == 0);
  memset(&o, 0, sizeof o);
  esg_replay_filter r = {.since = 20, .until = 40};
  CHECK_RC(ESG_OK, esg_replay(s, &r, order_cb, &o, &n));
  CHECK(n == 3 && strcmp(o.seen[0], "e0") == 0 && strcmp(o.seen[2], "e3") == 0);
  esg_replay_filter none = {.corr_key = "nobody"};
  CHECK_RC(ESG_OK, esg_replay(s, &none, order_cb, &o, &n));
  CHECK(n == 0);
  /* the callback stops the replay */
  memset(&o, 0, sizeof o);
  o.n = 15;
  CHECK_RC(ESG_ECALLBACK, esg_replay(s, NULL, order_cb, &o, &n));
  CHECK(n == 0);
  /* bad filters */
  esg_replay_filter bad = {.corr_key = ""};
  CHECK_RC(ESG_EINVAL, esg_replay(s, &bad, order_cb, &o, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "replay correlation key is empty");
  esg_replay_filter bad2 = {.since = 50, .until = 40};
  CHECK_RC(ESG_EINVAL, esg_replay(s, &bad2, order_cb, &o, NULL));
  CHECK_RC(ESG_EINVAL, esg_replay(s, NULL, NULL, NULL, NULL));
  esg_store_close(s);
}

int main(void) {
  TU_SUITE {
    RUN(test_cursor_basic);
    RUN(test_cursor_bad_pages);
    RUN(test_cursor_sink);
    RUN(test_cursor_killed);
    RUN(test_snapshot_diff);
    RUN(test_snapshot_change_back);
    RUN(test_snapshot_resume_and_bad_input);
    RUN(test_snapshot_sink_failure);
    RUN(test_snapshot_hash_is_canonical);
    RUN(test_replay);
  }
  TU_SQLITE {
    RUN(test_snapshot_commit_fails); /* a commit that fails for real: the file may not grow */
  }
  return tu_done();
}
