/*
 * The Lua module `esg`, continued: esg.Gateway, libesg's gateway (esg/gateway.h) with
 * Lua functions as its steps. The pipeline runs in C; Lua is called for the steps a
 * script gives, each call protected, so an error becomes the event's fault (with its
 * traceback) and never unwinds through libesg. With the esg command's host (lesg_host
 * in the registry) each event's Lua steps share an instruction budget, armed only while
 * a step runs.
 *
 * What the steps see: ev, a lazy object over the event's JSON (decoded on first access,
 * its text reused when nobody decoded it), and ctx, a table of the caller's to which the
 * gateway adds line, event, claim and cache on first read. A step's output (a table is
 * encoded as JSON, members sorted by name; a string is written as is) goes to the sink.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include "esg.h"
#include "lesg.h"
#include "lesg_int.h"

#define GATEWAY_MT "esg.Gateway"

/* The hooks: the Lua functions of a gateway, by slot of its state table. */
enum {
  H_FILTER = 1, H_KEY, H_HASH, H_ENTITY, H_ECHO, H_LATCH_KEY, H_LATCH_DOC, H_LATCH_OUT_DOC,
  H_COLLECT_IF, H_ENRICH_KEY, H_ENRICH, H_TRANSFORM, H_URL, H_BODY, H_WRITE, H_LOAD,
  H_ON_FAULT, H_PROGRESS, H_SOURCE, H_ON_RETRY, H_N
};
static const char *const HOOK_NAMES[H_N] = {
    NULL, "filter", "key", "hash", "entity", "echo", "latch_key", "latch_doc", "latch_out_doc",
    "collect", "enrich_key", "enrich", "transform", "http_url", "http_body", "write", "load",
    "on_fault", "progress", "source", "on_retry"};
/* Other slots of the state table: what a hook handed back (valid until its next call) from
   ANCHOR + hook, and what must live as long as the gateway. */
#define ANCHOR 32
enum { S_HEADERS = 64, S_LOADER, S_CACHE, S_TRACEBACK, S_ERROR, S_LIST, S_N };

/* User values of the gateway: its store, its state table, the caller's ctx, and per event
   the ev given to the steps, the transform's output and the line received. */
enum { UV_STORE = 1, UV_STATE, UV_CTX, UV_EV, UV_OUT, UV_LINE, UV_N = UV_LINE };

typedef struct lgw {
  esg_gateway *g;
  lstore *ls;
  lua_State *L;              /* the caller of the running method; NULL: no Lua calls (in __gc) */
  esg_gateway_event *e;      /* the event of the running hook */
  const lesg_host *host;     /* the budget's host, or NULL */
  lua_Integer budget, left;  /* instructions per event (0: none), left for this one */
  size_t max_line;           /* the line limit of gw:run(path) (0: ESG_EVENT_MAX_BYTES) */
  int which;                 /* the hook running */
  int fresh;                 /* a new event: ev not built yet */
  int transformed;           /* the transform set UV_OUT for this event */
  int dirty;                 /* ctx holds per-event fields */
  int traceback;             /* S_TRACEBACK belongs to the fault about to be reported */
  int has[H_N];              /* which hooks are Lua functions */
  int enriches;              /* an enrich step is declared */
  const char *ev_src;        /* the JSON ev was built from (to tell whether enrich changed it) */
  int64_t version;           /* the entity step's */
  void *cache_view;          /* the esg.Cache of ctx.cache, or NULL */
  /* a hook's results */
  int yes;
  const char *str;
  size_t len;
  esg_gateway_request *req;
  const char *load_key;
  int64_t load_deadline;
  esg_cache_load *load;
  /* the running source */
  esg_gateway_source inner;  /* a file's, or next == NULL for a Lua list or function */
  lua_Integer list_i, lines;
  double t0, last_progress;
  const char **headers;
  size_t n_headers;
  esg_cache_opts cache_opts;
  lesg_jbuf jb;              /* encoded outputs and documents, reused */
  esg_gateway_stats final;   /* the counters once closed */
  double elapsed;
} lgw;

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------- calling Lua from C -- */

/* Message handler: the message with a traceback. */
static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static void state_get(lua_State *L, int slot) {
  lua_getiuservalue(L, 1, UV_STATE);
  lua_rawgeti(L, -1, slot);
  lua_remove(L, -2);
}

/* Sets state[slot] to the value on top (popped); no allocation: every slot exists. */
static void state_set(lua_State *L, int slot) {
  lua_getiuservalue(L, 1, UV_STATE);
  lua_insert(L, -2);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
}

/* The bytes of the event as received. */
static const char *line_of(esg_gateway_event *e, size_t *len) {
  const esg_event *ev = esg_gateway_event_envelope(e);
  return ev ? esg_event_json(ev, len) : NULL;
}

/* A new event: ev, a lazy object over its JSON as it now is; ctx's per-event fields cleared. */
static void begin_event(lua_State *L, lgw *w) {
  size_t jlen, llen;
  const char *json = esg_gateway_event_json(w->e, &jlen), *line = line_of(w->e, &llen);
  w->ev_src = json;
  lua_pushlstring(L, json, jlen);
  if (line && llen == jlen && memcmp(line, json, jlen) == 0) lua_pushvalue(L, -1);
  else lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_LINE);
  lesg_json_lazy(L, -1);
  lua_setiuservalue(L, 1, UV_EV);
  lua_pop(L, 1);
  if (w->dirty) {
    lua_getiuservalue(L, 1, UV_CTX);
    static const char *const fields[] = {"line", "event", "claim"};
    for (int i = 0; i < 3; i++) {
      lua_pushnil(L);
      lua_setfield(L, -2, fields[i]); /* rawset would skip __newindex, which ctx has none of */
    }
    lua_pop(L, 1);
    w->dirty = 0;
  }
  w->fresh = 0;
}

/* Pushes what the sink gets: the transform's output, else ev when enriched, else the line. */
static void push_out(lua_State *L, lgw *w) {
  if (w->transformed) {
    lua_getiuservalue(L, 1, UV_OUT);
  } else if (w->enriches) {
    lua_getiuservalue(L, 1, UV_EV);
  } else if (lua_getiuservalue(L, 1, UV_LINE) == LUA_TNIL) {
    size_t len;
    const char *line = line_of(w->e, &len);
    lua_pop(L, 1);
    lua_pushlstring(L, line ? line : "", line ? len : 0);
  }
}

/* Calls the hook's function with (ev, ctx), (out, ev, ctx) or (out, ctx) and nres results. */
enum { A_EV, A_OUT_EV, A_OUT };
static void call_step(lua_State *L, int h, int args, int nres) {
  lgw *w = lua_touserdata(L, 1);
  state_get(L, h);
  if (args != A_EV) push_out(L, w);
  if (args != A_OUT) lua_getiuservalue(L, 1, UV_EV);
  lua_getiuservalue(L, 1, UV_CTX);
  lua_call(L, args == A_OUT_EV ? 3 : 2, nres);
}

/* A string result at idx (nil or false: none), anchored for the hook's next call. */
static void str_result(lua_State *L, lgw *w, int idx, int h) {
  idx = lua_absindex(L, idx);
  w->str = NULL;
  w->len = 0;
  if (lua_isnil(L, idx) || (lua_isboolean(L, idx) && !lua_toboolean(L, idx))) return;
  if (lua_type(L, idx) == LUA_TNUMBER) lua_tostring(L, idx); /* converted in place */
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s must return a string or nil (got %s)", HOOK_NAMES[h], luaL_typename(L, idx));
  w->str = lua_tolstring(L, idx, &w->len);
  lua_pushvalue(L, idx);
  state_set(L, ANCHOR + h);
}

/* A JSON result at idx (nil: none): a string as is, anything else encoded; anchored. */
static void json_result(lua_State *L, lgw *w, int idx, int h) {
  idx = lua_absindex(L, idx);
  w->str = NULL;
  w->len = 0;
  if (lua_isnil(L, idx)) return;
  w->str = lesg_json_bytes(L, idx, &w->jb, &w->len);
  lua_pushvalue(L, idx);
  state_set(L, ANCHOR + h);
}

/* The enrich step, after libesg's part (collect, lookup): ev catches up with a value put
   into the event's JSON, then the function runs; without a transform the event's JSON
   becomes ev, since it is then the output. */
static void enrich_step(lua_State *L, lgw *w) {
  size_t jlen;
  const char *json = esg_gateway_event_json(w->e, &jlen);
  lua_getiuservalue(L, 1, UV_EV);
  int ev = lua_gettop(L);
  if (json != w->ev_src) {
    /* ev was built before libesg put the value into the event's JSON: catch up */
    lua_getiuservalue(L, 1, UV_STATE);
    lua_getfield(L, -1, "into");
    const char *into = lua_tostring(L, -1); /* anchored in the state */
    w->ev_src = json;
    if (lesg_json_islazy(L, ev)) {
      lua_pushlstring(L, json, jlen);
      lesg_json_lazy(L, -1);
      lua_replace(L, ev);
    } else if (into) {
      lesg_json_push(L, json, jlen);
      lua_getfield(L, -1, into);
      lua_setfield(L, ev, into);
      lua_pop(L, 1);
    }
    lua_settop(L, ev);
  }
  if (w->has[H_ENRICH]) {
    state_get(L, H_ENRICH);
    lua_pushvalue(L, ev);
    lua_getiuservalue(L, 1, UV_CTX);
    lua_call(L, 2, 1);
    if (!lua_isnil(L, -1)) lua_replace(L, ev);
    lua_settop(L, ev);
    if (!w->has[H_TRANSFORM]) { /* the output is the event's JSON: make it ev */
      size_t len;
      const char *text = lesg_json_bytes(L, ev, &w->jb, &len);
      if (lua_type(L, ev) != LUA_TTABLE || esg_gateway_event_set_json(w->e, text, len) != ESG_OK)
        luaL_error(L, "enrich must return the event (a table: a JSON object) or nil");
    }
  }
  lua_setiuservalue(L, 1, UV_EV);
}

/* The protected body of every hook: arg 1 is the gateway. */
static int hook_body(lua_State *L) {
  lgw *w = lua_touserdata(L, 1);
  int h = w->which;
  if (w->fresh && h != H_LOAD) begin_event(L, w); /* a loader sees no ev */
  switch (h) {
  case H_FILTER:
  case H_ECHO:
  case H_COLLECT_IF:
    call_step(L, h, A_EV, 1);
    w->yes = lua_toboolean(L, -1);
    break;
  case H_KEY:
  case H_HASH:
  case H_LATCH_KEY:
  case H_ENRICH_KEY:
    call_step(L, h, A_EV, 1);
    str_result(L, w, -1, h);
    break;
  case H_LATCH_DOC:
    call_step(L, h, A_EV, 1);
    json_result(L, w, -1, h);
    break;
  case H_LATCH_OUT_DOC:
    call_step(L, h, A_OUT_EV, 1);
    json_result(L, w, -1, h);
    break;
  case H_ENTITY: {
    call_step(L, h, A_EV, 3);
    if (lua_isnil(L, -3)) {
      w->str = NULL;
      break;
    }
    if (!lua_isinteger(L, -2)) luaL_error(L, "entity must return key, integer version [, doc]");
    int64_t version = (int64_t)lua_tointeger(L, -2);
    if (!lua_isnil(L, -1)) {
      size_t len;
      const char *doc = lesg_json_bytes(L, -1, &w->jb, &len);
      if (esg_gateway_event_set_entity_doc(w->e, doc, len) != ESG_OK) luaL_error(L, "not enough memory");
    }
    str_result(L, w, -3, h);
    if (!w->str) luaL_error(L, "entity must return key, integer version [, doc]");
    w->version = version;
    break;
  }
  case H_ENRICH:
    enrich_step(L, w);
    break;
  case H_TRANSFORM: {
    call_step(L, h, A_EV, 1);
    if (lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1))) break; /* dropped */
    size_t len;
    const char *out = lesg_json_bytes(L, -1, &w->jb, &len);
    if (esg_gateway_event_set_output(w->e, out, len) != ESG_OK) luaL_error(L, "not enough memory");
    lua_setiuservalue(L, 1, UV_OUT);
    w->transformed = 1;
    break;
  }
  case H_URL: /* render: the url and the body */
    if (w->has[H_URL]) {
      call_step(L, H_URL, A_OUT, 1);
      str_result(L, w, -1, H_URL);
      if (!w->str) luaL_error(L, "http_url must return the url (a string)");
      w->req->url = w->str;
      lua_settop(L, 1);
    }
    if (w->has[H_BODY]) {
      call_step(L, H_BODY, A_OUT, 1);
      json_result(L, w, -1, H_BODY);
      w->req->body = w->str ? w->str : "";
      w->req->body_len = w->len;
    }
    break;
  case H_WRITE:
    call_step(L, h, A_OUT, 0);
    break;
  case H_LOAD: {
    state_get(L, H_LOAD);
    int rc = lesg_lua_load(L, lua_gettop(L), NULL, w->load_key, w->load_deadline, w->load);
    lua_pushinteger(L, rc);
    w->yes = rc;
    break;
  }
  default:
    break;
  }
  return 0;
}

/* Runs hook h for event e, protected, inside the event's budget. ESG_OK, or the failure
   recorded on e (message, and its traceback as the detail). */
static int hook(lgw *w, esg_gateway_event *e, int h) {
  lua_State *L = w->L;
  if (!L || lua_touserdata(L, 1) != w) return esg_gateway_event_fail(e, "%s: the gateway's Lua caller is gone", HOOK_NAMES[h]);
  if (!lua_checkstack(L, 8)) return esg_gateway_event_fail(e, "%s: Lua stack overflow", HOOK_NAMES[h]);
  if (!esg_gateway_event_user(e)) { /* the first step of a new event */
    esg_gateway_event_set_user(e, w, NULL);
    w->fresh = 1;
    w->transformed = 0;
    w->left = w->budget;
  }
  w->e = e;
  w->which = h;
  w->traceback = 0;
  int top = lua_gettop(L);
  int budgeted = w->host && w->budget > 0;
  if (budgeted && w->left <= 0)
    return esg_gateway_event_fail(e, "%s: instruction budget exceeded (%lld instructions)", HOOK_NAMES[h],
                                  (long long)w->budget);
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, hook_body);
  lua_pushvalue(L, 1);
  /* armed even without a budget: the host's deadline and memory accounting hold */
  if (w->host) w->host->arm(L, budgeted ? w->left : 0);
  int rc = lua_pcall(L, 1, 0, top + 1);
  if (w->host) {
    lua_Integer spent = w->host->disarm(L);
    if (budgeted) w->left -= spent;
  }
  if (rc == LUA_OK) {
    lua_settop(L, top);
    return ESG_OK;
  }
  if (rc == LUA_ERRMEM) {
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT); /* the next event starts with what this one held */
    return esg_gateway_event_fail(e, "not enough memory");
  }
  size_t len;
  const char *tb = lua_tolstring(L, -1, &len);
  if (!tb) tb = "(error object is not a string)", len = strlen(tb);
  const char *cut = NULL;
  for (const char *p = tb; (p = strstr(p, "\nstack traceback:")); p++) cut = p; /* the last one is msgh's */
  size_t mlen = cut ? (size_t)(cut - tb) : len;
  esg_gateway_event_fail(e, "%.*s", (int)mlen, tb);
  if (cut) esg_gateway_event_set_detail(e, cut + 1, len - mlen - 1);
  state_set(L, S_TRACEBACK); /* for on_fault */
  w->traceback = 1;
  lua_settop(L, top);
  return ESG_ECALLBACK;
}

/* The callbacks of esg_gateway_opts. */
static int test_cb(lgw *w, esg_gateway_event *e, int h) {
  int rc = hook(w, e, h);
  return rc < 0 ? rc : w->yes != 0;
}
static int filter_cb(void *ud, esg_gateway_event *e) { return test_cb(ud, e, H_FILTER); }
static int echo_cb(void *ud, esg_gateway_event *e) { return test_cb(ud, e, H_ECHO); }
static int collect_if_cb(void *ud, esg_gateway_event *e) { return test_cb(ud, e, H_COLLECT_IF); }

static int str_cb(lgw *w, esg_gateway_event *e, int h, const char **out, size_t *len) {
  int rc = hook(w, e, h);
  *out = rc < 0 ? NULL : w->str;
  if (len) *len = rc < 0 ? 0 : w->len;
  return rc;
}
static int key_cb(void *ud, esg_gateway_event *e, const char **o, size_t *n) { return str_cb(ud, e, H_KEY, o, n); }
static int hash_cb(void *ud, esg_gateway_event *e, const char **o, size_t *n) { return str_cb(ud, e, H_HASH, o, n); }
static int latch_key_cb(void *ud, esg_gateway_event *e, const char **o, size_t *n) { return str_cb(ud, e, H_LATCH_KEY, o, n); }
static int latch_doc_cb(void *ud, esg_gateway_event *e, const char **o, size_t *n) { return str_cb(ud, e, H_LATCH_DOC, o, n); }
static int latch_out_doc_cb(void *ud, esg_gateway_event *e, const char **o, size_t *n) {
  return str_cb(ud, e, H_LATCH_OUT_DOC, o, n);
}
static int enrich_key_cb(void *ud, esg_gateway_event *e, const char **o, size_t *n) {
  return str_cb(ud, e, H_ENRICH_KEY, o, n);
}

static int entity_cb(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  lgw *w = ud;
  int rc = hook(w, e, H_ENTITY);
  *key = rc < 0 ? NULL : w->str;
  *version = w->version;
  return rc;
}

static int enrich_cb(void *ud, esg_gateway_event *e) { return hook(ud, e, H_ENRICH); }
static int transform_cb(void *ud, esg_gateway_event *e) { return hook(ud, e, H_TRANSFORM); }
static int write_cb(void *ud, esg_gateway_event *e, const void *out, size_t len) {
  (void)out, (void)len;
  return hook(ud, e, H_WRITE);
}
static int render_cb(void *ud, esg_gateway_event *e, esg_gateway_request *r) {
  lgw *w = ud;
  w->req = r;
  return hook(w, e, H_URL);
}

static int load_cb(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  lgw *w = ud;
  if (!w->e) {
    esg_cache_load_error(ld, "load: no event");
    return ESG_ECALLBACK;
  }
  w->load_key = key;
  w->load_deadline = deadline;
  w->load = ld;
  int rc = hook(w, w->e, H_LOAD);
  if (rc < 0) esg_cache_load_error(ld, "the loader failed");
  return rc < 0 ? rc : w->yes;
}

/* ------------------------------------------- faults, progress, errors -- */

/* A callback that is not a step (on_fault, progress, a source function): protected; its
   first error is kept in S_ERROR and raised when the method returns. */
static int call_plain(lua_State *L, int nargs, int nres) {
  int rc = lua_pcall(L, nargs, nres, 0);
  if (rc != LUA_OK) {
    state_get(L, S_ERROR);
    int had = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!had) state_set(L, S_ERROR);
    else lua_pop(L, 1);
  }
  return rc;
}

static int fault_body(lua_State *L) {
  lgw *w = lua_touserdata(L, 1);
  const esg_gateway_fault *f = lua_touserdata(L, 2);
  lua_settop(L, 1);
  state_get(L, H_ON_FAULT);
  lua_createtable(L, 0, 9);
  lua_pushinteger(L, (lua_Integer)f->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, f->event_id);
  lua_setfield(L, -2, "event_id");
  lua_pushstring(L, f->stage);
  lua_setfield(L, -2, "stage");
  lua_pushstring(L, f->error);
  lua_setfield(L, -2, "error");
  lua_pushinteger(L, f->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushinteger(L, f->http_status); /* 0 when none, as store:faults() and Python's GatewayFault */
  lua_setfield(L, -2, "http_status");
  if (f->lineno) {
    lua_pushinteger(L, (lua_Integer)f->lineno);
    lua_setfield(L, -2, "line");
  }
  if (w->traceback && strcmp(f->stage, "deliver") != 0) {
    state_get(L, S_TRACEBACK);
    lua_setfield(L, -2, "traceback");
    w->traceback = 0;
  }
  if (strcmp(f->stage, "deliver") != 0 && w->e && esg_gateway_event_envelope(w->e)) {
    lua_pushstring(L, esg_event_type(esg_gateway_event_envelope(w->e)));
    lua_setfield(L, -2, "event_type");
  }
  lua_call(L, 1, 0);
  return 0;
}

static void on_fault_cb(void *ud, const esg_gateway_fault *f) {
  lgw *w = ud;
  lua_State *L = w->L;
  if (!L || !w->has[H_ON_FAULT] || lua_touserdata(L, 1) != w || !lua_checkstack(L, 6)) return;
  int top = lua_gettop(L);
  lua_pushcfunction(L, fault_body);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, (void *)f);
  call_plain(L, 2, 0);
  lua_settop(L, top);
}

/* on_retry(event_id, attempt, http_status, delay_s, error), as the engine's is called */
static int retry_body(lua_State *L) {
  const char *const *s = lua_touserdata(L, 2);
  const int64_t *n = lua_touserdata(L, 3);
  lua_settop(L, 1);
  state_get(L, H_ON_RETRY);
  lua_pushstring(L, s[0]);
  lua_pushinteger(L, (lua_Integer)n[0]);
  lua_pushinteger(L, (lua_Integer)n[1]);
  lua_pushnumber(L, (lua_Number)n[2] / 1000.0);
  lua_pushstring(L, s[1]);
  lua_call(L, 5, 0);
  return 0;
}

static void on_retry_cb(void *ud, const char *event_id, int attempt, int status, int64_t delay, const char *error) {
  lgw *w = ud;
  lua_State *L = w->L;
  if (!L || !w->has[H_ON_RETRY] || lua_touserdata(L, 1) != w || !lua_checkstack(L, 8)) return;
  int top = lua_gettop(L);
  const char *s[2] = {event_id, error};
  int64_t n[3] = {attempt, status, delay};
  lua_pushcfunction(L, retry_body);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, (void *)s);
  lua_pushlightuserdata(L, (void *)n);
  call_plain(L, 3, 0);
  lua_settop(L, top);
}

static void push_stats(lua_State *L, lgw *w) {
  esg_gateway_stats st = w->final;
  if (w->g) esg_gateway_get_stats(w->g, &st);
  lua_createtable(L, 0, 16);
#define F(name) lua_pushinteger(L, (lua_Integer)st.name); lua_setfield(L, -2, #name);
  F(received) F(filtered) F(duplicates) F(busy) F(stale) F(echoes) F(dropped) F(delivered) F(faults)
  F(cancelled) F(resubmitted) F(in_flight) F(retries) F(circuits_open)
#undef F
  lua_pushnumber(L, w->g ? mono() - w->t0 : w->elapsed);
  lua_setfield(L, -2, "elapsed");
}

static int progress_body(lua_State *L) {
  lgw *w = lua_touserdata(L, 1);
  state_get(L, H_PROGRESS);
  push_stats(L, w);
  lua_call(L, 1, 0);
  return 0;
}

/* Raises the error a callback kept, if any. */
static void raise_kept(lua_State *L) {
  state_get(L, S_ERROR);
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushboolean(L, 0);
  state_set(L, S_ERROR);
  lua_error(L);
}

/* ---------------------------------------------------------- sources -- */

/* Every line of the caller's source (a file, a list or a function) passes here: the
   progress callback runs at most every 0.2 s. */
static int source_next(void *ud, const char **data, size_t *len) {
  lgw *w = ud;
  lua_State *L = w->L;
  int rc;
  if (w->inner.next) {
    rc = w->inner.next(w->inner.ud, data, len);
  } else if (!L || !lua_checkstack(L, 6)) {
    return ESG_ESTATE;
  } else if (!w->has[H_SOURCE]) { /* a list */
    state_get(L, S_LIST);
    int t = lua_rawgeti(L, -1, ++w->list_i);
    rc = t == LUA_TNIL ? ESG_NOT_FOUND : t == LUA_TSTRING ? ESG_OK : ESG_EINVAL;
    if (rc == ESG_OK) *data = lua_tolstring(L, -1, len); /* anchored in the list */
    lua_pop(L, 2);
  } else { /* a function: its line is anchored until the next call */
    int top = lua_gettop(L);
    state_get(L, H_SOURCE);
    rc = call_plain(L, 0, 1) != LUA_OK ? ESG_ECALLBACK
         : lua_isnil(L, -1)           ? ESG_NOT_FOUND
         : lua_type(L, -1) == LUA_TSTRING ? ESG_OK : ESG_EINVAL;
    if (rc == ESG_OK) {
      *data = lua_tolstring(L, -1, len);
      lua_pushvalue(L, -1);
      state_set(L, ANCHOR + H_SOURCE);
    }
    lua_settop(L, top);
  }
  if (rc == ESG_EINVAL && L && lua_checkstack(L, 2)) { /* a line that is no string: raised once run returns */
    lua_pushfstring(L, "gw:run: line %I of the source is not a string", (LUAI_UACINT)(w->list_i ? w->list_i : w->lines + 1));
    state_set(L, S_ERROR);
  }
  /* progress: at every line and while the source waits (the loop comes back at least every
     0.2 s), so a slow pipeline or an idle input still shows life */
  if ((rc == ESG_OK || rc == ESG_BUSY) && w->has[H_PROGRESS] && L) {
    if (rc == ESG_OK) w->lines++;
    double t = mono();
    if (t - w->last_progress >= 0.2 && lua_checkstack(L, 4)) {
      w->last_progress = t;
      int top = lua_gettop(L);
      lua_pushcfunction(L, progress_body);
      lua_pushvalue(L, 1);
      call_plain(L, 1, 0);
      lua_settop(L, top);
    }
  }
  return rc;
}

/* -------------------------------------------------------------- ctx -- */

/* ctx's __index (upvalue 1: the gateway): line, event, claim and cache, made on first read. */
static int ctx_index(lua_State *L) {
  lgw *w = lua_touserdata(L, lua_upvalueindex(1));
  const char *k = lua_tostring(L, 2);
  if (!k || !w || !w->g) return 0;
  esg_gateway_event *e = w->e;
  size_t len;
  const char *line = e ? line_of(e, &len) : NULL;
  if (strcmp(k, "line") == 0) {
    if (!line) return 0;
    lua_pushlstring(L, line, len);
  } else if (strcmp(k, "event") == 0) {
    if (!line || lesg_push_event(L, line, len) != 1) return 0;
  } else if (strcmp(k, "claim") == 0) {
    int64_t token;
    const char *key = line ? esg_gateway_event_claim(e, &token) : NULL;
    if (!key) return 0;
    lua_getiuservalue(L, lua_upvalueindex(1), UV_STORE);
    lesg_push_owned_claim(L, -1, key, token);
  } else if (strcmp(k, "cache") == 0) {
    if (!w->cache_view) {
      esg_cache *c = e ? esg_gateway_event_cache(e) : NULL;
      if (!c) return luaL_error(L, "ctx.cache: the gateway's cache could not be opened");
      lua_getiuservalue(L, lua_upvalueindex(1), UV_STORE);
      w->cache_view = lesg_push_cache_view(L, lua_gettop(L), w->ls, c);
      lua_pushvalue(L, lua_upvalueindex(1));
      lua_getiuservalue(L, -1, UV_STATE);
      lua_pushvalue(L, -3);
      lua_rawseti(L, -2, S_CACHE);
      lua_pop(L, 2);
    }
    lua_getiuservalue(L, lua_upvalueindex(1), UV_STATE);
    lua_rawgeti(L, -1, S_CACHE);
    return 1; /* kept in the gateway, not in ctx */
  } else {
    return 0;
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  w->dirty = 1;
  return 1;
}

/* ------------------------------------------------------------- open -- */

/* opts[field] as a hook: a function (or callable) into state[h]; 0 when absent. */
static int opt_hook(lua_State *L, int opts, int state, const char *field, int h) {
  int t = lua_getfield(L, opts, field);
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
    lua_pop(L, 1);
    return 0;
  }
  if (t != LUA_TFUNCTION && !luaL_getmetafield(L, -1, "__call"))
    return luaL_error(L, "option '%s' must be a function", field);
  lua_settop(L, lua_gettop(L) - (t != LUA_TFUNCTION));
  lua_rawseti(L, state, h);
  return 1;
}

/* opts[field] as a string kept in state (NULL when absent). */
static const char *opt_kept_str(lua_State *L, int opts, int state, const char *field) {
  int t = lua_getfield(L, opts, field);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", field);
  const char *s = lua_tostring(L, -1);
  lua_setfield(L, state, field); /* kept alive by the state table */
  return s;
}

static lgw *check_gw(lua_State *L) {
  lgw *w = luaL_checkudata(L, 1, GATEWAY_MT);
  if (!w->g) luaL_error(L, "attempt to use a closed gateway");
  w->L = L;
  if (w->ls->s) lesg_use_store(L, w->ls);
  return w;
}

/*
 * store:gateway(opts) -> esg.Gateway, or nil, msg, code. The options of esg_gateway_opts
 * (docs/lua.md "Gateways"), with Lua functions as the steps.
 */
static int m_gateway(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lgw *w = lua_newuserdatauv(L, sizeof *w, UV_N); /* 3 */
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, GATEWAY_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 3, UV_STORE);
  lua_createtable(L, S_N, 4); /* 4: the state, every slot present (false) */
  for (int i = 1; i < S_N; i++) {
    lua_pushboolean(L, 0);
    lua_rawseti(L, 4, i);
  }
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, 3, UV_STATE);
  w->ls = ls;
  w->t0 = w->last_progress = mono();
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = ls->s;
  o.ud = w;
  o.name = opt_kept_str(L, 2, 4, "name");
  o.source_name = opt_kept_str(L, 2, 4, "source_name");
  o.fault_note = opt_kept_str(L, 2, 4, "fault_note");
  /* the steps */
  static const struct { const char *field; int h; } hooks[] = {
      {"filter", H_FILTER},         {"key", H_KEY},           {"entity", H_ENTITY},
      {"echo", H_ECHO},             {"latch_key", H_LATCH_KEY}, {"latch_doc", H_LATCH_DOC},
      {"latch_out_doc", H_LATCH_OUT_DOC}, {"enrich_key", H_ENRICH_KEY}, {"enrich", H_ENRICH},
      {"transform", H_TRANSFORM},   {"http_body", H_BODY},
      {"write", H_WRITE},           {"on_fault", H_ON_FAULT}, {"progress", H_PROGRESS},
      {"on_retry", H_ON_RETRY}};
  for (size_t i = 0; i < sizeof hooks / sizeof hooks[0]; i++)
    w->has[hooks[i].h] = opt_hook(L, 2, 4, hooks[i].field, hooks[i].h);
  if (w->has[H_FILTER]) o.filter = filter_cb;
  /* idempotence */
  o.no_idempotence = lesg_opt_bool(L, 2, "no_idempotence");
  o.lease_ms = lesg_opt_ms(L, 2, "lease", 0);
  o.ttl_ms = lesg_opt_ms(L, 2, "ttl", 0);
  if (w->has[H_KEY]) o.key = key_cb;
  if (lua_getfield(L, 2, "hash") == LUA_TBOOLEAN && !lua_toboolean(L, -1)) o.no_hash = 1;
  lua_pop(L, 1);
  if (!o.no_hash && (w->has[H_HASH] = opt_hook(L, 2, 4, "hash", H_HASH))) o.hash = hash_cb;
  if (w->has[H_ENTITY]) o.entity = entity_cb;
  /* latch */
  if (w->has[H_ECHO]) o.echo = echo_cb;
  if (w->has[H_LATCH_KEY]) o.latch_key = latch_key_cb;
  if (w->has[H_LATCH_DOC]) o.latch_doc = latch_doc_cb;
  if (w->has[H_LATCH_OUT_DOC]) o.latch_out_doc = latch_out_doc_cb;
  o.latch_from = opt_kept_str(L, 2, 4, "latch_from");
  o.latch_to = opt_kept_str(L, 2, 4, "latch_to");
  o.latch_ttl_ms = lesg_opt_ms(L, 2, "latch_ttl", 0);
  o.latch_flag = lesg_opt_bool(L, 2, "latch_flag");
  /* enrich */
  if (lua_getfield(L, 2, "cache") != LUA_TNIL) {
    luaL_checktype(L, 5, LUA_TTABLE);
    lesg_cache_opts(L, 5, &w->cache_opts);
    lua_pushvalue(L, 5);
    lua_setfield(L, 4, "cache"); /* its strings live as long as it does */
    o.cache = &w->cache_opts;
  }
  lua_settop(L, 4);
  int ct = lua_getfield(L, 2, "collect");
  lua_pop(L, 1);
  if (ct == LUA_TBOOLEAN) o.collect = lesg_opt_bool(L, 2, "collect");
  else if (ct != LUA_TNIL && (w->has[H_COLLECT_IF] = opt_hook(L, 2, 4, "collect", H_COLLECT_IF)))
    o.collect = 1, o.collect_if = collect_if_cb;
  if (w->has[H_ENRICH_KEY]) o.enrich_key = enrich_key_cb;
  if (lua_getfield(L, 2, "load") != LUA_TNIL) {
    esg_http_loader *hl = lesg_test_http_loader(L, -1);
    if (hl) {
      o.load = esg_http_loader_load;
      o.load_ud = hl;
      lua_rawseti(L, 4, S_LOADER);
    } else {
      lua_pop(L, 1);
      w->has[H_LOAD] = opt_hook(L, 2, 4, "load", H_LOAD);
      o.load = load_cb;
      o.load_ud = w;
    }
  } else {
    lua_pop(L, 1);
  }
  const char *into = opt_kept_str(L, 2, 4, "enrich_into");
  lua_pushstring(L, into ? into : "enriched"); /* libesg's default */
  lua_setfield(L, 4, "into");
  o.enrich_into = into;
  o.enrich_required = lesg_opt_bool(L, 2, "enrich_required");
  w->enriches = o.collect || o.enrich_key || w->has[H_ENRICH];
  if (w->enriches && (w->has[H_ENRICH] || o.enrich_key)) o.enrich = enrich_cb;
  if (w->has[H_TRANSFORM]) o.transform = transform_cb;
  /* the sink */
  const char *sink = opt_kept_str(L, 2, 4, "sink");
  if (!sink || strcmp(sink, "file") == 0) {
    o.sink = ESG_GATEWAY_SINK_FILE;
    o.sink_path = opt_kept_str(L, 2, 4, "sink_path");
    lua_getfield(L, 2, "sink_fd");
    o.sink_fd = (int)luaL_optinteger(L, -1, 1);
    lua_pop(L, 1);
  } else if (strcmp(sink, "eventlog") == 0) {
    o.sink = ESG_GATEWAY_SINK_EVENTLOG;
    o.eventlog_key = opt_kept_str(L, 2, 4, "eventlog_key");
    o.eventlog_ttl_ms = lesg_opt_ms(L, 2, "eventlog_ttl", 0);
  } else if (strcmp(sink, "callback") == 0) {
    if (!w->has[H_WRITE]) return luaL_error(L, "sink \"callback\" needs write = function(out, ctx)");
    o.sink = ESG_GATEWAY_SINK_CALLBACK;
    o.write = write_cb;
  } else if (strcmp(sink, "http") == 0) {
    o.sink = ESG_GATEWAY_SINK_HTTP;
    if (lua_getfield(L, 2, "http_url") == LUA_TSTRING) {
      o.http_url = lua_tostring(L, -1);
      lua_setfield(L, 4, "http_url");
    } else {
      lua_pop(L, 1);
      w->has[H_URL] = opt_hook(L, 2, 4, "http_url", H_URL);
    }
    if (!o.http_url && !w->has[H_URL]) return luaL_error(L, "sink \"http\" needs http_url (a string or a function)");
    o.http_method = opt_kept_str(L, 2, 4, "http_method");
    lua_getfield(L, 2, "http_headers");
    w->headers = lesg_header_lines(L, -1, &w->n_headers); /* pushes the lines' userdata, or nothing */
    if (w->headers) lua_rawseti(L, 4, S_HEADERS);
    lua_settop(L, 4);
    o.http_headers = w->headers;
    o.http_n_headers = w->n_headers;
    if (w->has[H_URL] || w->has[H_BODY]) o.render = render_cb;
    lua_getfield(L, 2, "http_rerender");
    o.http_rerender = lua_toboolean(L, -1);
    lua_pop(L, 1);
  } else {
    return luaL_error(L, "option 'sink' must be \"file\", \"eventlog\", \"callback\" or \"http\"");
  }
  esg_egress_opts eo;
  if (lua_getfield(L, 2, "egress") != LUA_TNIL) {
    luaL_checktype(L, -1, LUA_TTABLE);
    lesg_egress_opts(L, lua_gettop(L), &eo);
    o.egress = &eo;
  }
  o.on_fault = on_fault_cb;
  if (w->has[H_ON_RETRY]) o.on_retry = on_retry_cb;
  /* ctx: the caller's table, given line, event, claim and cache */
  if (lua_getfield(L, 2, "ctx") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  luaL_checktype(L, -1, LUA_TTABLE);
  if (lua_getmetatable(L, -1)) return luaL_error(L, "option 'ctx' must be a table without a metatable");
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, ctx_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, 3, UV_CTX);
  lua_getfield(L, 2, "budget");
  w->budget = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 2, "max_line"); /* gw:run(path)'s line limit */
  lua_Integer max_line = luaL_optinteger(L, -1, 0);
  if (max_line < 0) return luaL_error(L, "max_line must be >= 0 (bytes; 0 = the most an event may be)");
  w->max_line = (size_t)max_line;
  lua_pop(L, 2);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LESG_HOST_KEY) == LUA_TLIGHTUSERDATA) w->host = lua_touserdata(L, -1);
  lua_pop(L, 1);
  ls->L = L;
  int rc = esg_gateway_open(&w->g, &o);
  lesg_check_clock(L, ls);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_settop(L, 3);
  return 1;
}

/* ---------------------------------------------------------- methods -- */

static int push_rc(lua_State *L, lgw *w, int rc) {
  raise_kept(L);
  lesg_check_clock(L, w->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(w->g));
  lua_pushboolean(L, 1);
  return 1;
}

/*
 * gw:run(source) -> true, or nil, msg, code. source: a path of JSON lines ("-" = stdin), a
 * list of lines, or a function returning the next line (nil at the end).
 */
static int g_run(lua_State *L) {
  lgw *w = check_gw(L);
  memset(&w->inner, 0, sizeof w->inner);
  w->has[H_SOURCE] = 0;
  w->list_i = 0;
  lua_settop(L, 2);
  if (lua_type(L, 2) == LUA_TSTRING) {
    esg_gateway_lines_opts lo = ESG_GATEWAY_LINES_OPTS_INIT;
    lo.max_line = w->max_line;
    int rc = esg_gateway_source_lines(&w->inner, lua_tostring(L, 2), -1, &lo);
    if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  } else if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    state_set(L, S_LIST);
  } else if (lua_isfunction(L, 2)) {
    lua_pushvalue(L, 2);
    state_set(L, H_SOURCE);
    w->has[H_SOURCE] = 1;
  } else {
    return luaL_argerror(L, 2, "a path, a list of lines or a function");
  }
  esg_gateway_source src = {source_next, NULL, w, w->inner.next ? w->inner.fd : -1};
  int rc = esg_gateway_run(w->g, &src);
  if (w->inner.close) w->inner.close(w->inner.ud);
  memset(&w->inner, 0, sizeof w->inner);
  return push_rc(L, w, rc);
}

/* gw:push(json) -> "handled" | "busy" | "fault", or nil, msg, code: one event now. */
static int g_push(lua_State *L) {
  lgw *w = check_gw(L);
  size_t len;
  const char *json = luaL_checklstring(L, 2, &len);
  int rc = esg_gateway_push(w->g, json, len);
  raise_kept(L);
  lesg_check_clock(L, w->ls);
  if (rc == ESG_OK) lua_pushliteral(L, "handled");
  else if (rc == ESG_BUSY) lua_pushliteral(L, "busy");
  else if (rc == ESG_ECALLBACK) lua_pushliteral(L, "fault");
  else return lesg_push_fail(L, rc, esg_errmsg(w->g));
  return 1;
}

/* gw:feed(json) -> true, or nil, msg, code when the store failed: the gateway as the sink
   of a resync (inside the transaction recording the event) or of a replay. */
static int g_feed(lua_State *L) {
  lgw *w = check_gw(L);
  esg_stored_event ev;
  memset(&ev, 0, sizeof ev);
  if (lua_istable(L, 2)) lua_getfield(L, 2, "json"), lua_replace(L, 2);
  ev.json = luaL_checklstring(L, 2, &ev.json_len);
  int failed = esg_gateway_event_cb(w->g, &ev);
  return push_rc(L, w, failed ? ESG_ESTORE : ESG_OK);
}

/* gw:resubmit(fault_id) -> "resubmitted" | "faulted" | "busy", nil when there is no such
   fault, or nil, msg, code. */
static int g_resubmit(lua_State *L) {
  lgw *w = check_gw(L);
  int rc = esg_gateway_resubmit(w->g, (int64_t)luaL_checkinteger(L, 2));
  raise_kept(L);
  lesg_check_clock(L, w->ls);
  if (rc == ESG_OK) lua_pushliteral(L, "resubmitted");
  else if (rc == ESG_ECALLBACK) lua_pushliteral(L, "faulted");
  else if (rc == ESG_BUSY) lua_pushliteral(L, "busy");
  else if (rc == ESG_NOT_FOUND) lua_pushnil(L);
  else return lesg_push_fail(L, rc, esg_errmsg(w->g));
  return 1;
}

/* gw:poll([timeout_s]) -> true: one turn of the loop. gw:drain() -> true: every delivery done. */
static int g_poll(lua_State *L) {
  lgw *w = check_gw(L);
  int64_t t = lua_isnoneornil(L, 2) ? 0 : lesg_num_ms(L, luaL_checknumber(L, 2), "poll timeout", 3600000, 0);
  return push_rc(L, w, esg_gateway_poll(w->g, (int)t));
}

static int g_drain(lua_State *L) {
  lgw *w = check_gw(L);
  return push_rc(L, w, esg_gateway_drain(w->g));
}

/* gw:stats() -> the counters and elapsed (s since open; once closed, as they ended). */
static int g_stats(lua_State *L) {
  lgw *w = luaL_checkudata(L, 1, GATEWAY_MT);
  push_stats(L, w);
  return 1;
}

static int gw_close(lua_State *L, lgw *w) {
  int rc = ESG_OK;
  if (w->g) {
    esg_gateway *g = w->g;
    if (w->L && w->ls->s) lesg_use_store(L, w->ls);
    esg_gateway_drain(g); /* on_fault may run */
    esg_gateway_get_stats(g, &w->final);
    w->elapsed = mono() - w->t0;
    rc = esg_gateway_close(g);
    w->g = NULL;
    lesg_cache_view_forget(w->cache_view);
    w->cache_view = NULL;
  }
  lesg_jbuf_free(&w->jb);
  return rc;
}

/* gw:close() -> true, or nil, msg, code when the final commit failed. Closing twice is fine. */
static int g_close(lua_State *L) {
  lgw *w = luaL_checkudata(L, 1, GATEWAY_MT);
  if (w->g) w->L = L;
  int rc = gw_close(L, w);
  if (rc == ESG_ESTATE) return luaL_error(L, "gw:close called from one of its own steps");
  raise_kept(L);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushboolean(L, 1);
  return 1;
}

static int g_gc(lua_State *L) {
  lgw *w = luaL_checkudata(L, 1, GATEWAY_MT);
  w->L = NULL; /* no Lua from a finalizer */
  gw_close(L, w);
  return 0;
}

static int g_tostring(lua_State *L) {
  lgw *w = luaL_checkudata(L, 1, GATEWAY_MT);
  lua_pushfstring(L, w->g ? "esg.Gateway %p" : "esg.Gateway (closed)", (void *)w);
  return 1;
}

void lesg_gateway_methods(lua_State *L) {
  lua_pushcfunction(L, m_gateway);
  lua_setfield(L, -2, "gateway");
}

void lesg_gateway_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"run", g_run},     {"push", g_push},   {"feed", g_feed},
                                     {"resubmit", g_resubmit}, {"poll", g_poll}, {"drain", g_drain},
                                     {"stats", g_stats}, {"close", g_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", g_gc}, {"__close", g_gc}, {"__tostring", g_tostring}, {NULL, NULL}};
  lesg_new_type(L, GATEWAY_MT, meta, methods, NULL);
}
