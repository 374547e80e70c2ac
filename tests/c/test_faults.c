/* Fault records: record, list, get, delete, purge, and bad input that writes nothing. */
#include <stdlib.h>
#include "testutil.h"

typedef struct {
  int n;
  int64_t ids[8];
  char text[8][128];
  int status[8];
  esg_store *del; /* if set, delete each fault from inside the callback */
} seen_t;

static int seen(void *ud, const esg_fault *f) {
  seen_t *s = ud;
  if (s->n < 8) {
    s->ids[s->n] = f->id;
    snprintf(s->text[s->n], 128, "%s|%s|%s|%d|%lld|%lld|%s", f->event_id, f->stage, f->error, f->attempts,
             (long long)f->first_attempt, (long long)f->last_attempt, f->event ? f->event : "-");
    s->status[s->n] = f->http_status;
  }
  s->n++;
  if (s->del) esg_fault_delete(s->del, f->id);
  return 0;
}

static void test_faults(void) {
  int64_t now = 5000;
  esg_store *s = tu_open(tu_store("faults.db"), &now);
  esg_fault f = {0};
  f.event_id = "evt-1";
  f.stage = "deliver";
  f.error = "HTTP 503 after 5 attempts";
  f.http_status = 503;
  f.attempts = 5;
  f.first_attempt = 1000;
  f.event = "{\"id\":\"evt-1\"}";
  f.event_len = strlen(f.event);
  int64_t id1 = 0, id2 = 0;
  CHECK_RC(ESG_OK, esg_fault_record(s, &f, &id1));
  esg_fault g = {0};
  g.event_id = "evt-2";
  g.stage = "transform";
  g.error = "script error: boom";
  now = 6000;
  CHECK_RC(ESG_OK, esg_fault_record(s, &g, &id2));
  CHECK(id2 > id1 && id1 > 0);
  seen_t all = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, seen, &all));
  CHECK(all.n == 2);
  CHECK_STR(all.text[0], "evt-1|deliver|HTTP 503 after 5 attempts|5|1000|5000|{\"id\":\"evt-1\"}");
  CHECK(all.status[0] == 503);
  CHECK_STR(all.text[1], "evt-2|transform|script error: boom|0|6000|6000|-");
  seen_t one = {0};
  CHECK_RC(ESG_OK, esg_fault_get(s, id2, seen, &one));
  CHECK(one.n == 1 && one.ids[0] == id2);
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(s, id2 + 100, seen, &one));
  CHECK_RC(ESG_EINVAL, esg_fault_get(s, 0, seen, &one));
  /* purge by age: only the older one */
  int64_t n = -1;
  CHECK_RC(ESG_OK, esg_faults_purge(s, 5500, &n));
  CHECK(n == 1);
  CHECK_RC(ESG_NOT_FOUND, esg_fault_get(s, id1, seen, &one));
  CHECK_RC(ESG_OK, esg_fault_delete(s, id2));
  CHECK_RC(ESG_NOT_FOUND, esg_fault_delete(s, id2));
  /* a callback may delete what it is shown */
  CHECK_RC(ESG_OK, esg_fault_record(s, &f, NULL));
  CHECK_RC(ESG_OK, esg_fault_record(s, &g, NULL));
  seen_t del = {.del = s};
  CHECK_RC(ESG_OK, esg_faults_list(s, seen, &del));
  CHECK(del.n == 2);
  seen_t empty = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, seen, &empty));
  CHECK(empty.n == 0);
  /* long error texts are cut, not refused */
  char *big = malloc(10000);
  memset(big, 'e', 9999);
  big[9999] = '\0';
  g.error = big;
  CHECK_RC(ESG_OK, esg_fault_record(s, &g, NULL));
  free(big);
  /* bad input names the field and writes nothing */
  esg_fault bad = f;
  bad.event_id = NULL;
  CHECK_RC(ESG_EINVAL, esg_fault_record(s, &bad, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "event_id");
  bad = f;
  bad.stage = "";
  CHECK_RC(ESG_EINVAL, esg_fault_record(s, &bad, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "stage");
  bad = f;
  bad.error = NULL;
  CHECK_RC(ESG_EINVAL, esg_fault_record(s, &bad, NULL));
  CHECK_CONTAINS(esg_errmsg(s), "error");
  bad = f;
  bad.event = NULL;
  CHECK_RC(ESG_EINVAL, esg_fault_record(s, &bad, NULL));
  bad = f;
  bad.attempts = -1;
  CHECK_RC(ESG_EINVAL, esg_fault_record(s, &bad, NULL));
  CHECK_RC(ESG_EINVAL, esg_fault_record(s, NULL, NULL));
  CHECK_RC(ESG_EINVAL, esg_faults_list(s, NULL, NULL));
  seen_t last = {0};
  CHECK_RC(ESG_OK, esg_faults_list(s, seen, &last));
  CHECK(last.n == 1);
  esg_store_close(s);
}

int main(void) {
  TU_SUITE {
    RUN(test_faults);
  }
  return tu_done();
}
