/*
 * The promise of content latching, as a property over thousands of random runs:
 * two systems A and B each hold a few keys; users edit both sides at random
 * (often writing back an earlier value, sometimes the value already there); a
 * gateway each way reads the side's change feed and, for a genuine change,
 * latches and writes the state to the other side, using the real C latch API on
 * one real store. Writes land later, interleaved with user edits (racing echoes).
 *
 * Model (what a real deployment must also provide, see docs/latching.md): each
 * side reports every write (user's or gateway's) as one change, in the order it
 * applied them per key; writes to one side for one key land in order; latches
 * do not expire during a run (the TTL exceeds the round trip).
 *
 * Asserted for every seed:
 *   1. echoes never cross back unless raced: the echo of a gateway write is
 *      suppressed, except when, between its latch and its echo, the written side
 *      reported for that key a change that was not an undisturbed echo (a user
 *      edit, or an echo that itself crossed back), or its pending set overflowed,
 *      or its latch was consumed by the report of the same value written again
 *      after it (an echo takes the newest latch with its value: docs/latching.md).
 *      Every such chain therefore starts at a user edit racing a write, or at a
 *      value written twice within one echo window;
 *   2. no genuine edit is lost: a user change is suppressed only if the other side
 *      already holds its value, or a gateway write of that same value to this side
 *      lands after it (so that value is reported again and carried across);
 *      every other user change is written to the other side;
 *   3. quiescence, bounded: every run drains (no change or write left in flight)
 *      within MAX_STEPS, with at most WRITES_PER_EDIT gateway writes per user edit,
 *      and no latch is left pending;
 *   4. both sides end equal.
 * The first 100 seeds run on each store under test (TU_SUITE), the rest once on
 * SQLite in memory. ESG_LATCH_SEEDS=n changes the number of seeds; TRACE=seed
 * prints one run.
 */
#include <stdbool.h>
#include <stdlib.h>
#include "testutil.h"

#define SEEDS 3000
#define STORE_SEEDS 100 /* on the store under test; the rest on SQLite in memory */
#define MAXK 3
#define NVALS 4
#define TTL_MS 3600000
#define MAX_STEPS 20000
#define MAXW 4096
#define WRITES_PER_EDIT 8 /* the most seen: 6.76 over these 3000 seeds (4.0 before an echo took the newest latch) */

typedef struct change {
  int key, val;
  int write;      /* gateway write id, or -1 for a user edit */
  long landed;    /* landing order on its side */
} change;

typedef struct fifo {
  change *v;
  int head, tail, cap;
} fifo;

typedef struct write_rec {
  int side, key, val;
  bool landed, echoed, raced, overflow;
  bool preempted; /* its latch was consumed by a report of the same value written later */
  long landed_at;
} write_rec;

typedef struct sim {
  esg_store *s;
  uint64_t rng;
  int seed, nkeys;
  int value[2][MAXK];
  fifo feed[2];    /* changes each side reported, not yet processed by its gateway */
  fifo flight[2];  /* gateway writes on their way to a side */
  write_rec w[MAXW];
  int nw;
  long land_seq;
  /* counters */
  int crossed, preempted, suppressed_user, forwarded_user;
} sim;

static int64_t now = 1700000000000;
static long total_writes, total_crossed, total_preempted, total_suppressed_user, total_edits, total_outstanding_max;
static int failed_seed = -1;
static double worst_ratio;
static int trace = -1; /* the seed to print, from TRACE */

static uint64_t rnd(sim *m) {
  uint64_t x = m->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return m->rng = x;
}
static int below(sim *m, int n) { return (int)(rnd(m) % (uint64_t)n); }

static void push(fifo *f, change c) {
  if (f->tail == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 64;
    f->v = realloc(f->v, (size_t)f->cap * sizeof *f->v);
    if (!f->v) abort();
  }
  f->v[f->tail++] = c;
}
static bool empty(const fifo *f) { return f->head == f->tail; }
static change pop(fifo *f) { return f->v[f->head++]; }

static const char *side_name(int side) { return side ? "B" : "A"; }

static void key_name(sim *m, int k, char *out, size_t n) { snprintf(out, n, "s%d/k%d", m->seed, k); }
static void hash_name(int val, char *out, size_t n) { snprintf(out, n, "v%d", val); }

static bool fail_seed(sim *m, const char *what) {
  if (failed_seed < 0) {
    failed_seed = m->seed;
    fprintf(stderr, "%sseed %d: %s\n", tu_where(), m->seed, what);
  }
  return false;
}

/* A change lands on side: the side applies it and reports it on its feed. */
static void land(sim *m, int side, int key, int val, int write) {
  if (trace == m->seed)
    fprintf(stderr, "land %s: k%d v%d (%s %d) seq %ld\n", side_name(side), key, val, write < 0 ? "user" : "write", write, m->land_seq + 1);
  m->value[side][key] = val;
  change c = {key, val, write, ++m->land_seq};
  if (write >= 0) {
    m->w[write].landed = true;
    m->w[write].landed_at = c.landed;
  }
  push(&m->feed[side], c);
}

/* Writes to side for key awaiting their echo (latched, echo not yet processed). */
static int outstanding(sim *m, int side, int key) {
  int n = 0;
  for (int i = 0; i < m->nw; i++)
    if (m->w[i].side == side && m->w[i].key == key && !m->w[i].echoed) n++;
  return n;
}

/* The gateway from side x to the other side processes x's next change. */
static bool gateway(sim *m, int x) {
  int y = 1 - x;
  change c = pop(&m->feed[x]);
  char key[64], hash[16];
  key_name(m, c.key, key, sizeof key);
  hash_name(c.val, hash, sizeof hash);
  int verdict = esg_latch_check(m->s, key, side_name(x), hash);
  if (trace == m->seed)
    fprintf(stderr, "  gw %s: %s k%d v%d (write %d, landed %ld) -> %s\n", side_name(x), c.write < 0 ? "user" : "echo",
            c.key, c.val, c.write, c.landed, verdict == ESG_LATCH_ECHO ? "ECHO" : "GENUINE");
  if (verdict != ESG_LATCH_ECHO && verdict != ESG_LATCH_GENUINE) return fail_seed(m, "esg_latch_check failed");
  /* A change other than the undisturbed echo of our own write moves the side's state
     on: every write to x for this key still awaiting its echo is raced by it. */
  bool disturbing = c.write < 0 || m->w[c.write].raced || m->w[c.write].overflow || m->w[c.write].preempted;
  /* An echo consumes the newest pending latch with its value and every older one (the
     report may be that newest write's echo, the side having coalesced the rest): the
     echoes of the other writes so consumed will cross back as changes, once. */
  if (verdict == ESG_LATCH_ECHO) {
    int newest = -1;
    for (int i = 0; i < m->nw; i++)
      if (m->w[i].side == x && m->w[i].key == c.key && !m->w[i].echoed && m->w[i].val == c.val) newest = i;
    for (int i = 0; i <= newest; i++)
      if (i != c.write && m->w[i].side == x && m->w[i].key == c.key && !m->w[i].echoed) m->w[i].preempted = true;
  }
  if (disturbing)
    for (int i = 0; i < m->nw; i++)
      if (i != c.write && m->w[i].side == x && m->w[i].key == c.key && !m->w[i].echoed) m->w[i].raced = true;
  if (c.write >= 0) {
    write_rec *w = &m->w[c.write];
    w->echoed = true;
    if (verdict == ESG_LATCH_GENUINE) {
      m->crossed++;
      if (w->preempted && !w->raced && !w->overflow) m->preempted++;
      else if (!w->raced && !w->overflow) return fail_seed(m, "an echo crossed back without a race");
    }
  } else {
    if (verdict == ESG_LATCH_ECHO) {
      m->suppressed_user++;
      bool justified = m->value[y][c.key] == c.val;
      for (int i = 0; i < m->nw && !justified; i++) {
        write_rec *w = &m->w[i];
        if (w->side == x && w->key == c.key && w->val == c.val && (!w->landed || w->landed_at > c.landed))
          justified = true;
      }
      if (!justified) return fail_seed(m, "a genuine user edit was suppressed and lost");
    } else {
      m->forwarded_user++;
    }
  }
  if (verdict == ESG_LATCH_GENUINE) {
    if (m->nw == MAXW) return fail_seed(m, "too many writes (no quiescence)");
    int id = m->nw++;
    write_rec *w = &m->w[id];
    memset(w, 0, sizeof *w);
    w->side = y;
    w->key = c.key;
    w->val = c.val;
    /* more pending than the latch set keeps: the oldest latches are dropped, so their echoes may pass */
    if (outstanding(m, y, c.key) >= ESG_LATCH_MAX_PENDING)
      for (int i = 0; i <= id; i++)
        if (m->w[i].side == y && m->w[i].key == c.key) m->w[i].overflow = true;
    /* latch before the write, as the contract says */
    if (esg_latch(m->s, key, side_name(y), hash, TTL_MS) != ESG_OK) return fail_seed(m, "esg_latch failed");
    if (trace == m->seed)
      fprintf(stderr, "    -> write %d to %s v%d\n", id, side_name(y), c.val);
    change wc = {c.key, c.val, id, 0};
    push(&m->flight[y], wc);
  }
  return true;
}

static bool run_seed(esg_store *s, int seed) {
  sim *m = calloc(1, sizeof *m);
  if (!m) abort();
  m->s = s;
  m->seed = seed;
  m->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)seed * 0xD1B54A32D192ED03ULL);
  if (!m->rng) m->rng = 1;
  m->nkeys = 1 + below(m, MAXK);
  int edits = 5 + below(m, 36);
  int edit_bias = 1 + below(m, 4); /* how often users edit versus gateways working */
  bool ok = true;
  int done_edits = 0, outstanding_at_last = -1;
  long steps = 0;
  for (; ok; steps++) {
    if (steps > MAX_STEPS) {
      ok = fail_seed(m, "the run did not quiesce");
      break;
    }
    now += below(m, 3);
    /* pick one enabled action at random */
    int choices[2 * 4 + 4], n = 0; /* edits twice per bias (at most 4), plus 4 queues */
    if (done_edits < edits)
      for (int i = 0; i < edit_bias; i++) {
        choices[n++] = 0;
        choices[n++] = 1;
      }
    if (!empty(&m->feed[0])) choices[n++] = 2;
    if (!empty(&m->feed[1])) choices[n++] = 3;
    if (!empty(&m->flight[0])) choices[n++] = 4;
    if (!empty(&m->flight[1])) choices[n++] = 5;
    if (n == 0) break;
    int a = choices[below(m, n)];
    if (a <= 1) {
      land(m, a, below(m, m->nkeys), below(m, NVALS), -1);
      done_edits++;
    } else if (a <= 3) {
      int x = a - 2;
      bool user = m->feed[x].v[m->feed[x].head].write < 0;
      ok = gateway(m, x);
      /* is this the last user change either gateway will see? */
      if (user && done_edits == edits) {
        bool more = false;
        for (int side = 0; side < 2; side++)
          for (int i = m->feed[side].head; i < m->feed[side].tail; i++) more |= m->feed[side].v[i].write < 0;
        if (!more) {
          outstanding_at_last = 0;
          for (int i = 0; i < m->nw; i++) outstanding_at_last += !m->w[i].echoed;
        }
      }
    } else {
      int y = a - 4;
      change c = pop(&m->flight[y]);
      land(m, y, c.key, c.val, c.write);
    }
  }
  if (ok) {
    for (int k = 0; k < m->nkeys; k++) {
      if (m->value[0][k] != m->value[1][k]) ok = fail_seed(m, "the sides ended different");
    }
    if (ok && m->nw > WRITES_PER_EDIT * done_edits) ok = fail_seed(m, "too many gateway writes per user edit");
    if (ok && (double)m->nw / done_edits > worst_ratio) worst_ratio = (double)m->nw / done_edits;
    if (ok && outstanding_at_last > total_outstanding_max) total_outstanding_max = outstanding_at_last;
    /* no latch may be left pending: every write's echo came back */
    for (int k = 0; ok && k < m->nkeys; k++)
      for (int side = 0; side < 2; side++) {
        char key[64];
        key_name(m, k, key, sizeof key);
        int p = -1;
        if (esg_latch_pending(s, key, side_name(side), &p) != ESG_OK || p != 0)
          ok = fail_seed(m, "a latch was left pending after the run drained");
      }
  }
  total_writes += m->nw;
  total_crossed += m->crossed;
  total_preempted += m->preempted;
  total_suppressed_user += m->suppressed_user;
  total_edits += done_edits;
  for (int i = 0; i < 2; i++) {
    free(m->feed[i].v);
    free(m->flight[i].v);
  }
  free(m);
  return ok;
}

/* The number of seeds in all: SEEDS, or ESG_LATCH_SEEDS; TRACE=seed prints that run. */
static int seeds_wanted(void) {
  const char *env = getenv("ESG_LATCH_SEEDS");
  if (getenv("TRACE")) trace = atoi(getenv("TRACE"));
  return env && atoi(env) > 0 ? atoi(env) : SEEDS;
}

/* Runs seeds first..last on store s (named on, for the summary). */
static void run_seeds(esg_store *s, int first, int last, const char *on) {
  total_writes = total_crossed = total_preempted = total_suppressed_user = total_edits = total_outstanding_max = 0;
  failed_seed = -1;
  worst_ratio = 0;
  int bad = 0;
  for (int seed = first; seed <= last; seed++) bad += !run_seed(s, seed);
  CHECK(bad == 0);
  CHECK(total_edits > 0);
  fprintf(stderr,
          "seeds %d-%d on %s: %ld user edits, %ld gateway writes, %ld echoes crossed back (%ld of them of a value written "
          "twice, the rest in races), %ld user edits "
          "suppressed (justified), at most %ld writes awaiting echo at the last user change, at most %.2f "
          "writes per user edit\n",
          first, last, on, total_edits, total_writes, total_crossed, total_preempted, total_suppressed_user,
          total_outstanding_max,
          worst_ratio);
}

/* The first STORE_SEEDS seeds run on the store under test (for a file: the real on-disk
   path, one transaction per call). */
static void test_two_way_sync(void) {
  int seeds = seeds_wanted();
  esg_store *s = tu_open(tu_store("latch-prop.db"), &now);
  run_seeds(s, 1, seeds < STORE_SEEDS ? seeds : STORE_SEEDS, tu_store_entry());
  esg_store_close(s);
}

/* The rest on an in-memory SQLite store, same SQL, so that thousands of seeds fit in a
   few seconds of CPU: once, whatever the stores under test. */
static void test_two_way_sync_bulk(void) {
  int seeds = seeds_wanted();
  if (seeds <= STORE_SEEDS) return;
  esg_store *mem = tu_open(":memory:", &now);
  run_seeds(mem, STORE_SEEDS + 1, seeds, "a private :memory:");
  esg_store_close(mem);
}

int main(void) {
  TU_SUITE {
    RUN(test_two_way_sync);
  }
  TU_SQLITE {
    RUN(test_two_way_sync_bulk);
  }
  return tu_done();
}
