/*
 * The esg command: Lua 5.4 embedded with the esg module and its pure-Lua parts
 * preloaded (the command line itself is lua/esg/cli.lua).
 *
 * The host adds what a sandboxed gateway needs and plain Lua lacks, as the
 * module esg.host (removed from reach once the sandbox is on):
 *   - a memory limit: the state's allocator counts bytes and refuses to grow
 *     past the limit, so a runaway script gets "not enough memory" (after an
 *     emergency collection), which the runner turns into a fault;
 *   - an instruction budget: a count hook raises "instruction budget exceeded"
 *     once the armed budget is spent, so a runaway loop becomes a fault too;
 *   - isatty and a monotonic clock for the progress line, and the C-API W1 loop
 *     and C gateway the benchmark compares the Lua gateway against;
 *   - generational garbage collection (per-event garbage dies young).
 * The gateway binding (lgateway.c) arms the same budget around each Lua step of an
 * event through lesg_host, registered in the registry (never visible to scripts).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lualib.h>
#include "esg.h"
#include "lesg.h"
#include "lesg_embedded.h"

#define HOOK_EVERY 1000

typedef struct host_limits {
  size_t used, peak, limit; /* bytes of the Lua state (plus libesg's counted, below); limit 0 = none */
  lua_Integer budget;       /* instructions per arming; 0 = none */
  lua_Integer spent;
  double deadline_s;        /* wall-clock seconds per arming; 0 = none */
  double deadline;          /* while armed: the monotonic time it ends at (0 = none) */
  const char *over;         /* while armed: why the hook now raises at every instruction */
  char msg[160];            /* the text of over */
  size_t held;              /* the live bytes found after a full collection that failed (0 = none) */
  double held_checked;      /* when held was last checked (monotonic seconds) */
} host_limits;

static host_limits g_limits = {.deadline_s = 30}; /* esg run --deadline */

/* Bytes libesg allocated for the script while a call was armed (the JSON decoder's tree,
   buffers handed to Lua): atomic, as libesg may free them on another thread. */
static size_t g_esg_used;
static unsigned g_refusals; /* allocations refused by the limit (lesg_host.refusals) */
static _Thread_local int t_armed; /* this thread runs an armed call: libesg's blocks count */

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t total_used(const host_limits *lm) {
  return lm->used + __atomic_load_n(&g_esg_used, __ATOMIC_RELAXED);
}

/*
 * The state's allocator. While script code runs (an armed call), a grow past the limit
 * is refused; between calls the runner's own code is not, so a script that filled the
 * state cannot make the runner fail outside a step. Refused, Lua collects everything
 * (an emergency collection) and asks again. If that retry finds the state still nine
 * tenths full of live data, the script holds its memory: the retry is refused too and
 * the armed calls that follow fail at once (see arm) instead of each paying a full
 * collection of a heap that cannot shrink, which made every event cost seconds.
 */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  host_limits *lm = ud;
  size_t old = ptr ? osize : 0; /* without ptr, osize tells the kind of object */
  static void *refused_ptr;
  static size_t refused_size;
  if (nsize == 0) {
    free(ptr);
    lm->used -= old;
    return NULL;
  }
  /* not refused: the runner's own code between calls, and a call being stopped (its error
     message and traceback need memory; no script code runs any more) */
  if (lm->limit && nsize > old && t_armed && !lm->over) {
    size_t total = total_used(lm);
    int retry = refused_size == nsize && refused_ptr == ptr;
    refused_size = 0;
    if (retry && total > lm->limit / 10 * 9) { /* the emergency collection freed next to nothing */
      lm->held = total;
      lm->held_checked = mono();
      g_refusals++;
      return NULL;
    }
    if (total - old + nsize > lm->limit) {
      refused_ptr = ptr, refused_size = nsize;
      g_refusals++;
      return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  lm->used = lm->used - old + nsize;
  size_t total = total_used(lm);
  if (total > lm->peak) lm->peak = total;
  return p;
}

/* libesg's allocator in the command: its blocks count against the script's limit while
   an armed call runs on this thread (what libesg allocates then, it allocates for the
   script: the JSON decoder's tree, buffers handed to Lua). */
typedef union blk {
  struct {
    size_t size;
    int counted;
  } h;
  max_align_t align;
} blk;

static void *cli_malloc(void *ud, size_t n) {
  (void)ud;
  if (n > SIZE_MAX - sizeof(blk)) return NULL;
  int count = t_armed && g_limits.limit;
  if (count && !g_limits.over && total_used(&g_limits) + n > g_limits.limit) {
    __atomic_add_fetch(&g_refusals, 1, __ATOMIC_RELAXED);
    return NULL;
  }
  blk *b = malloc(sizeof(blk) + n);
  if (!b) return NULL;
  b->h.size = n;
  b->h.counted = count;
  if (count) __atomic_add_fetch(&g_esg_used, n, __ATOMIC_RELAXED);
  return b + 1;
}

static void cli_free(void *ud, void *p) {
  (void)ud;
  blk *b = (blk *)p - 1;
  if (b->h.counted) __atomic_sub_fetch(&g_esg_used, b->h.size, __ATOMIC_RELAXED);
  free(b);
}

static void *cli_realloc(void *ud, void *p, size_t n) {
  if (!p) return cli_malloc(ud, n);
  blk *b = (blk *)p - 1;
  if (!b->h.counted && !(t_armed && g_limits.limit)) { /* nothing to count: in place */
    if (n > SIZE_MAX - sizeof(blk)) return NULL;
    blk *nb = realloc(b, sizeof(blk) + n);
    if (!nb) return NULL;
    nb->h.size = n;
    return nb + 1;
  }
  void *q = cli_malloc(ud, n); /* a copy, so that a refused grow leaves p as it was */
  if (!q) return NULL;
  memcpy(q, p, b->h.size < n ? b->h.size : n);
  cli_free(ud, p);
  return q;
}

/* Counts n instructions: whether the armed call is now over its budget or deadline. */
static int spend(lua_Integer n) {
  g_limits.spent += n;
  if (g_limits.budget && g_limits.spent > g_limits.budget)
    snprintf(g_limits.msg, sizeof g_limits.msg, "instruction budget exceeded (%lld instructions)",
             (long long)g_limits.budget);
  else if (g_limits.deadline && mono() > g_limits.deadline)
    snprintf(g_limits.msg, sizeof g_limits.msg, "deadline exceeded (%g s of wall-clock time)", g_limits.deadline_s);
  else
    return 0;
  g_limits.over = g_limits.msg;
  return 1;
}

static void raise_over(lua_State *L) {
  luaL_where(L, 0);
  lua_pushstring(L, g_limits.over);
  lua_concat(L, 2);
  lua_error(L);
}

/*
 * Counts instructions against the armed budget and watches the armed deadline. Once
 * either is spent the hook raises at every instruction of the thread it runs on, so a
 * script that catches the error (pcall, coroutines) cannot go on: each protected level
 * unwinds at its next instruction, up to the C caller, which disarms. Disarmed, no hook
 * is installed at all: with any hook set, Lua 5.4's VM traps at every instruction,
 * which would double the cost of the runner's own code.
 */
static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  int every = lua_gethookcount(L);
  if (!g_limits.over) {
    if (!g_limits.budget && !g_limits.deadline) { /* disarmed: a hook makes the VM trap at every instruction */
      lua_sethook(L, NULL, 0, 0);
      return;
    }
    if (!spend(every)) return;
  }
  if (every != 1) lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  raise_over(L);
}

/* Arms a budget of n instructions (0: none) and the deadline from now, for the calling
   thread's Lua code and libesg's allocations on its behalf. A script that held its memory
   at the last failed collection fails at its first instruction while the state stays
   nine tenths full, confirmed by a full collection at most once a second. */
static void arm(lua_State *L, lua_Integer n) {
  g_limits.budget = n;
  g_limits.spent = 0;
  g_limits.over = NULL;
  g_limits.deadline = g_limits.deadline_s > 0 ? mono() + g_limits.deadline_s : 0;
  if (g_limits.held && g_limits.limit) {
    size_t nine_tenths = g_limits.limit / 10 * 9;
    if (total_used(&g_limits) <= nine_tenths) { /* it came back (the runner collects after a failure) */
      g_limits.held = 0;
    } else if (mono() - g_limits.held_checked >= 1.0) {
      lua_gc(L, LUA_GCCOLLECT);
      g_limits.held_checked = mono();
      g_limits.held = total_used(&g_limits) > nine_tenths ? total_used(&g_limits) : 0;
    }
    if (g_limits.held) {
      snprintf(g_limits.msg, sizeof g_limits.msg,
               "not enough memory: the script holds %zu of its %zu MB after a full collection",
               g_limits.held >> 20, g_limits.limit >> 20);
      g_limits.over = g_limits.msg;
      lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
      t_armed = 1;
      return;
    }
  }
  if (n || g_limits.deadline) lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  t_armed = 1;
}

static lua_Integer disarm(lua_State *L) {
  lua_sethook(L, NULL, 0, 0);
  g_limits.budget = 0;
  g_limits.deadline = 0;
  g_limits.over = NULL;
  t_armed = 0;
  return g_limits.spent;
}

/* host.budget(n): arms a budget of n instructions from now (nil or 0: off). Returns the instructions spent before. */
static int h_budget(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, n >= 0, 1, "budget must be >= 0");
  lua_Integer spent = disarm(L);
  if (n) arm(L, n);
  lua_pushinteger(L, spent);
  return 1;
}

/* host.deadline(seconds): the wall-clock limit of each armed call (0: none). */
static int h_deadline(lua_State *L) {
  lua_Number n = luaL_checknumber(L, 1);
  luaL_argcheck(L, n >= 0, 1, "deadline must be >= 0");
  g_limits.deadline_s = n;
  return 0;
}

/* host.exhausted() -> whether the armed call is past its budget or deadline (the hook is raising). */
static int h_exhausted(lua_State *L) {
  lua_pushboolean(L, g_limits.over != NULL);
  return 1;
}

/* host.resume(co, ...): coroutine.resume with the caller's armed hook installed in co
   first (a coroutine made before the arming would run unbudgeted), and the caller stopped
   at once if co spent the budget. */
static int h_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  if (co != L) lua_sethook(co, lua_gethook(L), lua_gethookmask(L), lua_gethookcount(L));
  lua_pushvalue(L, lua_upvalueindex(1)); /* the original coroutine.resume */
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  if (g_limits.over) raise_over(L);
  return lua_gettop(L);
}

static unsigned refusals(void) {
  return __atomic_load_n(&g_refusals, __ATOMIC_RELAXED);
}

/* Steps of C work for the script (the pattern matcher) counted as instructions. */
static void charge(lua_State *L, lua_Integer steps) {
  if (g_limits.over || ((g_limits.budget || g_limits.deadline) && spend(steps))) raise_over(L);
}

/* The gateway's per-step arming, the JSON decoder's memory check, the pattern matcher's
   charge (lesg_host). */
static const lesg_host host_budget = {arm, disarm, refusals, charge};

#define ERR_MT "esg.host.error"

/* Message handler: wraps a string error with its traceback ({msg, traceback}, marked). */
static int traceback_handler(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) return 1;
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  lua_rawseti(L, -2, 2);
  luaL_setmetatable(L, ERR_MT);
  return 1;
}

/*
 * host.pcall(budget, f, ...) -> true, f's results | false, error, traceback.
 * Calls f under an instruction budget (0 = none), disarmed before any Lua code
 * of the caller runs again. traceback is nil for memory errors and non-string errors.
 */
static int h_pcall(lua_State *L) {
  lua_Integer budget = luaL_checkinteger(L, 1);
  luaL_checkany(L, 2);
  int base = 2;
  lua_pushcfunction(L, traceback_handler);
  lua_replace(L, 1); /* the handler replaces the budget */
  arm(L, budget);
  int rc = lua_pcall(L, lua_gettop(L) - base, LUA_MULTRET, 1);
  disarm(L);
  if (rc == LUA_OK) {
    lua_pushboolean(L, 1);
    lua_replace(L, 1);
    return lua_gettop(L);
  }
  lua_pushboolean(L, 0);
  lua_replace(L, 1);
  lua_settop(L, 2); /* false, error object */
  if (lua_type(L, 2) == LUA_TTABLE && lua_getmetatable(L, 2)) {
    luaL_getmetatable(L, ERR_MT);
    int ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (ours) {
      lua_rawgeti(L, 2, 1);
      lua_rawgeti(L, 2, 2);
      lua_remove(L, 2);
      return 3;
    }
  }
  return 2;
}

/* host.memory() -> used, peak, limit (bytes; limit 0 = none). */
static int h_memory(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)g_limits.used);
  lua_pushinteger(L, (lua_Integer)g_limits.peak);
  lua_pushinteger(L, (lua_Integer)g_limits.limit);
  return 3;
}

/* host.memory_limit(bytes): sets the limit (0 = none), counted from the whole state. */
static int h_memory_limit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "limit must be >= 0");
  g_limits.limit = (size_t)n;
  return 0;
}

static int h_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static double cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* host.monotonic() -> seconds from an arbitrary origin (for elapsed times). */
static int h_monotonic(lua_State *L) {
  lua_pushnumber(L, mono());
  return 1;
}

/*
 * host.w1_c(path, lines [, group_commit_s]) -> seconds of pass 1, seconds of pass 2,
 * then the process CPU seconds of pass 1 and of pass 2.
 * WORKLOAD.md W1 on the C API directly (parse, claim id with the SHA-256 of the
 * bytes, ttl 3600 s, complete), over the strings of the list `lines`, on a fresh
 * store at path: the baseline the Lua gateway is measured against in the same run.
 */
static int h_w1_c(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Number group = luaL_optnumber(L, 3, 0);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  o.group_commit_ms = (int)(group * 1000);
  esg_store *s;
  int rc = esg_store_open(&s, path, &o);
  if (rc != ESG_OK) return luaL_error(L, "w1_c: %s", esg_errmsg(NULL));
  double cpus[2];
  for (int pass = 1; pass <= 2; pass++) {
    double t0 = mono(), c0 = cpu();
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      size_t len;
      const char *line = lua_tolstring(L, -1, &len);
      esg_event *ev;
      rc = line ? esg_event_parse(line, len, &ev) : ESG_EINVAL;
      lua_pop(L, 1);
      if (rc != ESG_OK) break;
      esg_claim_info ci;
      rc = esg_claim(s, esg_event_id(ev), esg_event_hash(ev), 32, 30000, 3600000, &ci);
      if (rc == ESG_NEW) rc = esg_complete(s, esg_event_id(ev), ci.token, NULL, 0);
      esg_event_free(ev);
      if (rc < 0) break;
    }
    if (rc >= 0) rc = esg_store_flush(s);
    lua_pushnumber(L, mono() - t0);
    cpus[pass - 1] = cpu() - c0;
    if (rc < 0) {
      lua_pushfstring(L, "w1_c: %s", esg_errmsg(s));
      esg_store_close(s);
      return lua_error(L);
    }
  }
  esg_store_close(s);
  lua_pushnumber(L, cpus[0]);
  lua_pushnumber(L, cpus[1]);
  return 4;
}

/* W5's transform in C (bench/bench_w1.c): {"id": ev.id, "price": ev.thing.price}. */
static int w5_transform(void *ud, esg_gateway_event *e) {
  (void)ud;
  size_t len;
  const char *json = esg_gateway_event_json(e, &len);
  cJSON *root = cJSON_ParseWithLength(json, len);
  cJSON *price = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "thing"), "price");
  char out[256];
  int n = snprintf(out, sizeof out, "{\"id\":\"%s\",\"price\":%.17g}", esg_event_id(esg_gateway_event_envelope(e)),
                   cJSON_IsNumber(price) ? price->valuedouble : 0.0);
  cJSON_Delete(root);
  return esg_gateway_event_set_output(e, out, (size_t)n);
}

/*
 * host.w5_c(db, input, output [, group_commit_s [, group_max]]) -> seconds of pass 1, of
 * pass 2, then the process CPU seconds of each. WORKLOAD.md W5 on the C gateway: the JSON
 * lines file input through esg_gateway with a C transform into the file output, on a
 * fresh store at db: the baseline of the Lua gateway in the same run.
 */
static int h_w5_c(lua_State *L) {
  const char *db = luaL_checkstring(L, 1), *in = luaL_checkstring(L, 2), *outp = luaL_checkstring(L, 3);
  esg_store_opts so = ESG_STORE_OPTS_INIT;
  so.group_commit_ms = (int)(luaL_optnumber(L, 4, 0) * 1000);
  so.group_commit_max = (int)luaL_optinteger(L, 5, 0);
  esg_store *s;
  if (esg_store_open(&s, db, &so) != ESG_OK) return luaL_error(L, "w5_c: %s", esg_errmsg(NULL));
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = s;
  o.name = "w5";
  o.transform = w5_transform;
  o.sink_path = outp;
  esg_gateway *g;
  if (esg_gateway_open(&g, &o) != ESG_OK) {
    esg_store_close(s);
    return luaL_error(L, "w5_c: %s", esg_errmsg(NULL));
  }
  double cpus[2];
  int rc = ESG_OK;
  for (int pass = 0; pass < 2 && rc == ESG_OK; pass++) {
    double t0 = mono(), c0 = cpu();
    esg_gateway_source src;
    rc = esg_gateway_source_jsonl(&src, in);
    if (rc == ESG_OK) {
      rc = esg_gateway_run(g, &src); /* ends with the group's last commit */
      src.close(src.ud);
    }
    lua_pushnumber(L, mono() - t0);
    cpus[pass] = cpu() - c0;
  }
  if (rc != ESG_OK) lua_pushfstring(L, "w5_c: %s", esg_errmsg(g));
  esg_gateway_close(g);
  esg_store_close(s);
  if (rc != ESG_OK) return lua_error(L);
  lua_pushnumber(L, cpus[0]);
  lua_pushnumber(L, cpus[1]);
  return 4;
}

static int luaopen_esg_host(lua_State *L) {
  static const luaL_Reg fns[] = {{"budget", h_budget},       {"memory", h_memory},
                                 {"memory_limit", h_memory_limit}, {"isatty", h_isatty},
                                 {"monotonic", h_monotonic}, {"w1_c", h_w1_c}, {"w5_c", h_w5_c},
                                 {"pcall", h_pcall}, {"deadline", h_deadline}, {"exhausted", h_exhausted},
                                 {NULL, NULL}};
  luaL_newmetatable(L, ERR_MT);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  lua_newtable(L); /* host.string: the budgeted pattern functions */
  lesg_pattern_open(L);
  lua_setfield(L, -2, "string");
  lua_getglobal(L, "coroutine");
  lua_getfield(L, -1, "resume");
  lua_pushcclosure(L, h_resume, 1);
  lua_setfield(L, -3, "resume");
  lua_pop(L, 1);
  return 1;
}

/* package.preload loader of an embedded module; upvalue 1: its index in lesg_embedded. */
static int load_embedded(lua_State *L) {
  const struct lesg_embedded *m = &lesg_embedded[lua_tointeger(L, lua_upvalueindex(1))];
  char chunk[128];
  snprintf(chunk, sizeof chunk, "@[esg]/%s.lua", m->name);
  if (luaL_loadbufferx(L, (const char *)m->src, m->len, chunk, "t") != LUA_OK) return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  luaL_openlibs(L);
  /* Generational collection: a gateway's garbage is per event and dies young (about 1k
     instructions less per event than incremental collection, in W5). */
  lua_gc(L, LUA_GCGEN, 0, 0);
  lua_pushlightuserdata(L, (void *)&host_budget);
  lua_setfield(L, LUA_REGISTRYINDEX, LESG_HOST_KEY);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_esg);
  lua_setfield(L, -2, "esg");
  lua_pushcfunction(L, luaopen_esg_host);
  lua_setfield(L, -2, "esg.host");
  for (int i = 0; lesg_embedded[i].name; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, lesg_embedded[i].name);
  }
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "esg.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
  esg_allocator a = ESG_ALLOCATOR_INIT; /* before any libesg call: every block carries our header */
  a.malloc_fn = cli_malloc;
  a.realloc_fn = cli_realloc;
  a.free_fn = cli_free;
  esg_set_allocator(&a);
  lua_State *L = lua_newstate(host_alloc, &g_limits);
  if (!L) {
    fprintf(stderr, "esg: cannot create the Lua state\n");
    return 2;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = 2;
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "esg: %s\n", msg ? msg : "(error object is not a string)");
  } else {
    status = (int)luaL_optinteger(L, -1, 0);
  }
  fflush(stdout);
  lua_close(L);
  return status;
}
