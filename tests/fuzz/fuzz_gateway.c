/*
 * A gateway's input: each line of the input, esg_gateway_push'ed through a gateway on an
 * in-memory store (":memory:") with a trivial transform and a callback sink. Byte 0 picks
 * options (bit 0: no payload hash; 1: the claim key is the partitionKey; 2: an entity step,
 * the partitionKey at the timestamp as version; 3: content latches on the partitionKey);
 * the event's type steers the steps: "skip" is filtered, "filterfail" fails the filter,
 * "drop" gets no output, "fail" fails the transform, "sinkfail" fails the sink; anything
 * else is delivered as it came. Every input runs in a transaction that is rolled back, so
 * each starts from the same empty store (and memory stays bounded).
 * Invariants: a push is handled or a recorded fault (never a store error, never busy);
 * the counters add up to the events received (the non-blank lines); the sink gets each
 * delivered event's bytes, once; on_fault is told of each fault.
 */
#include <string.h>
#include <esg.h>
#include "fuzz.h"

typedef struct counts {
  uint64_t written, faults;
} counts;

static int is_type(esg_gateway_event *e, const char *t) {
  return strcmp(esg_event_type(esg_gateway_event_envelope(e)), t) == 0;
}

static int filter(void *ud, esg_gateway_event *e) {
  (void)ud;
  if (is_type(e, "filterfail")) return esg_gateway_event_fail(e, "filter says no: %s", "filterfail");
  return !is_type(e, "skip");
}

static int transform(void *ud, esg_gateway_event *e) {
  (void)ud;
  if (is_type(e, "drop")) return ESG_OK;
  if (is_type(e, "fail")) return esg_gateway_event_fail(e, "transform failed on purpose");
  size_t n = 0;
  const char *j = esg_gateway_event_json(e, &n);
  FUZZ_CHECK(j != NULL);
  return esg_gateway_event_set_output(e, j, n);
}

static int write_cb(void *ud, esg_gateway_event *e, const void *out, size_t len) {
  counts *c = ud;
  size_t n = 0;
  const char *j = esg_gateway_event_json(e, &n);
  FUZZ_CHECK(len == n && memcmp(out, j, n) == 0);
  size_t on = 0;
  const void *o = esg_gateway_event_output(e, &on);
  FUZZ_CHECK(o != NULL && on == len);
  if (is_type(e, "sinkfail")) return esg_gateway_event_fail(e, "the sink is down");
  c->written++;
  return 0;
}

static int pkey(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  (void)ud;
  *out = esg_event_partition_key(esg_gateway_event_envelope(e));
  if (*out) *len = strlen(*out);
  return ESG_OK;
}

static int entity(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  (void)ud;
  const esg_event *ev = esg_gateway_event_envelope(e);
  *key = esg_event_partition_key(ev);
  *version = esg_event_timestamp(ev);
  return ESG_OK;
}

static void on_fault(void *ud, const esg_gateway_fault *f) {
  counts *c = ud;
  FUZZ_CHECK(f->stage && f->error && f->event_id);
  c->faults++;
}

static esg_store *store;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  if (!store) {
    int rc = esg_store_open(&store, ":memory:", NULL);
    FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  }
  uint8_t mode = data[0];
  counts c = {0};
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = store;
  o.name = "fuzz";
  o.ud = &c;
  o.filter = filter;
  o.transform = transform;
  o.sink = ESG_GATEWAY_SINK_CALLBACK;
  o.write = write_cb;
  o.on_fault = on_fault;
  o.no_hash = mode & 1;
  if (mode & 2) o.key = pkey;
  if (mode & 4) o.entity = entity;
  if (mode & 8) {
    o.latch_key = pkey;
    o.latch_from = "a";
    o.latch_to = "a";
  }
  esg_gateway *g = NULL;
  int rc = esg_gateway_open(&g, &o);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  rc = esg_store_begin(store);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, store);

  uint64_t lines = 0;
  const char *p = (const char *)data + 1, *e = (const char *)data + size;
  while (p < e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(e - p);
    size_t m = n && p[n - 1] == '\r' ? n - 1 : n;
    int blank = 1; /* a line of nothing but spaces and tabs (before a CR) is skipped */
    for (size_t i = 0; i < m && blank; i++) blank = p[i] == ' ' || p[i] == '\t';
    lines += !blank;
    rc = esg_gateway_push(g, p, n);
    FUZZ_CHECK_RC(rc == ESG_OK || rc == ESG_ECALLBACK, rc, g);
    p += n + 1;
  }

  esg_gateway_stats st;
  esg_gateway_get_stats(g, &st);
  FUZZ_CHECK(st.received == lines);
  FUZZ_CHECK(st.filtered + st.duplicates + st.busy + st.stale + st.echoes + st.dropped + st.delivered +
                 st.faults == st.received);
  FUZZ_CHECK(st.busy == 0 && st.in_flight == 0 && st.cancelled == 0);
  FUZZ_CHECK(c.written == st.delivered);
  FUZZ_CHECK(c.faults == st.faults);
  rc = esg_gateway_close(g);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  rc = esg_store_rollback(store);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, store);
  return 0;
}
