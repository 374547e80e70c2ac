/*
 * The Lua module `esg`, continued: the enrichment cache (esg.Cache), latches
 * (store methods and esg.latch), resync (cursors, snapshots, replay) and HTTP
 * egress (esg.Egress, esg.HttpLoader), on the public C API. Conventions as in
 * lesg.c: misuse raises, expected failures return nil, message, code, times are
 * seconds. Lua callbacks (loaders, fetchers, sinks, completion callbacks) run
 * protected inside libesg's callbacks; their errors are raised once libesg has
 * returned (a loader's error is a failed load instead: see cache:get_or_load).
 * Handles built on a store keep a pointer to it: closing the store detaches them
 * in libesg (an egress engine's cancelled deliveries call back on the closer's
 * state), and then they raise as closed until their own close frees them.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "esg.h"
#include "lesg.h"
#include "lesg_int.h"

#define CACHE_MT "esg.Cache"
#define SNAPSHOT_MT "esg.Snapshot"
#define EGRESS_MT "esg.Egress"
#define LOADER_MT "esg.HttpLoader"

#define ms_to_s lesg_ms_to_s

/* opts[field] as an integer (def when absent); raises when not an integer in [lo, hi]. */
static lua_Integer opt_int(lua_State *L, int opts, const char *field, lua_Integer def, lua_Integer lo, lua_Integer hi) {
  if (!opts) return def;
  lua_getfield(L, opts, field);
  lua_Integer v = def;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < lo || v > hi) luaL_error(L, "option '%s' must be an integer in [%I, %I]", field, (LUAI_UACINT)lo, (LUAI_UACINT)hi);
  }
  lua_pop(L, 1);
  return v;
}

/*
 * opts[field] as a string (NULL when absent). The string stays on the stack
 * (an __index metamethod may have made it, so the table need not anchor it).
 */
static const char *opt_str(lua_State *L, int opts, const char *field) {
  if (!opts) return NULL;
  luaL_checkstack(L, 2, "too many options");
  lua_getfield(L, opts, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", field);
  return lua_tostring(L, -1);
}

/* A duration option in seconds where false or a negative number means -1 ("never"/"none"). */
static int64_t opt_ms_or_never(lua_State *L, int opts, const char *field) {
  if (!opts) return 0;
  lua_getfield(L, opts, field);
  int64_t v = 0;
  if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) v = -1;
  else if (!lua_isnil(L, -1)) {
    int ok;
    lua_Number n = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "option '%s' must be a number of seconds or false", field);
    char what[160];
    snprintf(what, sizeof what, "option '%s'", field);
    v = n < 0 ? -1 : lesg_num_ms(L, n, what, LESG_MS_MAX, 0);
  }
  lua_pop(L, 1);
  return v;
}

/* Calls the function at fn protected with the nargs values on top; on error keeps it in *err_ref. */
typedef struct cb_state {
  lua_State *L;
  int fn;       /* stack index of the Lua function */
  int err_ref;  /* LUA_NOREF, or a registry ref to the first error */
  int spare;    /* LUA_NOREF, or a registry slot reserved for the error (keeping it allocates nothing) */
} cb_state;

#define CB_INIT(L, fn) {(L), (fn), LUA_NOREF, LUA_NOREF}

/* Reserves the registry slot an error raised by a callback goes to (outside libesg: may raise). */
static void cb_arm(lua_State *L, cb_state *cb) {
  if (cb->spare == LUA_NOREF) {
    lua_pushboolean(L, 1);
    cb->spare = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

static void cb_disarm(lua_State *L, cb_state *cb) {
  if (cb->spare != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, cb->spare);
  cb->spare = LUA_NOREF;
}

/* Keeps the error on top of cb->L (pops it); inside a libesg callback, so it must not raise. */
static void cb_keep_error(cb_state *cb) {
  if (cb->err_ref == LUA_NOREF && cb->spare != LUA_NOREF) {
    lua_rawseti(cb->L, LUA_REGISTRYINDEX, cb->spare); /* replaces a value: no allocation */
    cb->err_ref = cb->spare;
    cb->spare = LUA_NOREF;
  } else if (cb->err_ref == LUA_NOREF) {
    cb->err_ref = luaL_ref(cb->L, LUA_REGISTRYINDEX); /* not armed: best effort */
  } else {
    lua_pop(cb->L, 1);
  }
}

/* Raises the error a callback left, if any. */
static void cb_raise(cb_state *cb) {
  if (cb->err_ref != LUA_NOREF) {
    lua_rawgeti(cb->L, LUA_REGISTRYINDEX, cb->err_ref);
    luaL_unref(cb->L, LUA_REGISTRYINDEX, cb->err_ref);
    cb->err_ref = LUA_NOREF;
    lua_error(cb->L);
  }
}

/* -------------------------------------------------------------- cache -- */

typedef struct lcache {
  lstore *ls;
  esg_cache *c;
  int in_load; /* > 0 while a Lua loader runs */
  int view;    /* c belongs to someone else (a gateway): closing only forgets it */
} lcache;

static lcache *check_cache(lua_State *L, int arg) {
  lcache *lc = luaL_checkudata(L, arg, CACHE_MT);
  if (!lc->c || !lc->ls->s) luaL_error(L, "attempt to use a closed cache"); /* closed, or detached */
  lesg_use_store(L, lc->ls);
  return lc;
}

/*
 * store:cache([opts]) -> esg.Cache, or nil, msg, code. opts (seconds): ttl,
 * negative_ttl, max_stale (false = never serve stale), load_timeout (false = no
 * limit), mem_entries, mem_bytes (0 = default, -1 = no memory tier), mem_ttl,
 * max_value_bytes, raw (values need not be JSON), collect_field,
 * collect_id_field, version_field.
 */
void lesg_cache_opts(lua_State *L, int opts, esg_cache_opts *out) {
  esg_cache_opts o = ESG_CACHE_OPTS_INIT;
  o.ttl_ms = lesg_opt_ms(L, opts, "ttl", 0);
  o.negative_ttl_ms = lesg_opt_ms(L, opts, "negative_ttl", 0);
  o.max_stale_ms = opt_ms_or_never(L, opts, "max_stale");
  o.load_timeout_ms = opt_ms_or_never(L, opts, "load_timeout");
  o.mem_entries = opt_int(L, opts, "mem_entries", 0, -1, INT64_MAX);
  o.mem_bytes = opt_int(L, opts, "mem_bytes", 0, -1, INT64_MAX);
  o.mem_ttl_ms = lesg_opt_ms(L, opts, "mem_ttl", 0);
  o.max_value_bytes = (size_t)opt_int(L, opts, "max_value_bytes", 0, 0, INT32_MAX);
  o.no_json_check = lesg_opt_bool(L, opts, "raw");
  o.collect_field = opt_str(L, opts, "collect_field");
  o.collect_id_field = opt_str(L, opts, "collect_id_field");
  o.version_field = opt_str(L, opts, "version_field");
  *out = o;
}

static int m_cache(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int opts = lesg_opt_table(L, 2);
  esg_cache_opts o;
  lesg_cache_opts(L, opts, &o);
  lcache *lc = lesg_new_handle(L, sizeof *lc, 1, CACHE_MT);
  int rc = esg_cache_open(&lc->c, ls->s, &o);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lc->ls = ls;
  return 1;
}

void *lesg_push_cache_view(lua_State *L, int store, lstore *ls, esg_cache *c) {
  lcache *lc = lua_newuserdatauv(L, sizeof *lc, 1);
  memset(lc, 0, sizeof *lc);
  lua_pushvalue(L, store);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, CACHE_MT);
  lc->ls = ls;
  lc->c = c;
  lc->view = 1;
  return lc;
}

void lesg_cache_view_forget(void *view) {
  if (view) ((lcache *)view)->c = NULL;
}

static int cache_close(lua_State *L) {
  lcache *lc = luaL_checkudata(L, 1, CACHE_MT);
  if (lc->c && lc->in_load > 0) {
    return luaL_error(L, "cache:close called from inside its own loader");
  }
  if (!lc->view) esg_cache_close(lc->c);
  lc->c = NULL;
  return 0;
}

static const char *const CACHE_RESULTS[] = {"miss", "hit", "negative", "stale"};

/* Pushes result, value (string or nil), version, expires (s); returns 4. */
static int push_entry(lua_State *L, const esg_cache_entry *e) {
  lua_pushstring(L, CACHE_RESULTS[e->result & 3]);
  if (e->value) lua_pushlstring(L, e->value, e->len);
  else lua_pushnil(L);
  lua_pushinteger(L, (lua_Integer)e->version);
  lua_pushnumber(L, ms_to_s(e->expires));
  return 4;
}

/* Pushes the result of a cache call that returns ESG_OK or an error: true, or nil, msg, code. */
static int cache_push_ok(lua_State *L, lcache *lc, int rc) {
  lesg_check_clock(L, lc->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(lc->c));
  lua_pushboolean(L, 1);
  return 1;
}

/* cache:get(key) -> "hit"|"miss"|"negative"|"stale", value (JSON string or nil), version, expires. */
static int c_get(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  const char *key = lesg_check_key(L, 2);
  esg_cache_entry e;
  int rc = esg_cache_get(lc->c, key, &e);
  lesg_check_clock(L, lc->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(lc->c));
  return push_entry(L, &e);
}

/* cache:put(key, value [, ttl]) -> true, or nil, msg, code. value: a string, or a table stored as JSON. */
static int c_put(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  const char *key = lesg_check_key(L, 2);
  int64_t ttl = lua_isnoneornil(L, 4) ? 0 : lesg_num_ms(L, luaL_checknumber(L, 4), "cache:put ttl", LESG_MS_MAX, 0);
  lua_settop(L, 3);
  size_t len;
  const char *v = lesg_json_arg(L, 3, &len);
  return cache_push_ok(L, lc, esg_cache_put(lc->c, key, v, len, ttl));
}

/* cache:put_negative(key [, ttl]) -> true, or nil, msg, code. */
static int c_put_negative(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  const char *key = lesg_check_key(L, 2);
  int64_t ttl = lua_isnoneornil(L, 3) ? 0 : lesg_num_ms(L, luaL_checknumber(L, 3), "cache:put_negative ttl", LESG_MS_MAX, 0);
  return cache_push_ok(L, lc, esg_cache_put_negative(lc->c, key, ttl));
}

/* cache:invalidate(key) -> true, or nil, msg, code. */
static int c_invalidate(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  return cache_push_ok(L, lc, esg_cache_invalidate(lc->c, lesg_check_key(L, 2)));
}

typedef struct loader_call {
  lua_State *L;
  int fn;
  lcache *lc;
} loader_call;

/*
 * Protected body of a Lua loader call: (fn, key (light userdata), deadline) -> kind, value, ttl
 * where kind is 1 (value: a JSON string), 0 (absent) or -1 (failed: value is the message).
 */
static int loader_body(lua_State *L) {
  lua_settop(L, 3);
  lua_pushstring(L, (const char *)lua_touserdata(L, 2));
  lua_replace(L, 2);
  lua_call(L, 2, 3); /* value|nil|false, ttl|message */
  if (lua_isnil(L, 1) && lua_isnil(L, 2)) {
    lua_pushinteger(L, 0);
    return 1;
  }
  if (lua_isnil(L, 1) || (lua_isboolean(L, 1) && !lua_toboolean(L, 1))) {
    lua_pushinteger(L, -1);
    if (lua_type(L, 2) == LUA_TSTRING) lua_pushvalue(L, 2);
    else lua_pushliteral(L, "the loader failed");
    return 2;
  }
  lua_pushinteger(L, 1);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushvalue(L, 1); /* a string as is */
  } else {
    size_t len;
    lesg_json_arg(L, 1, &len); /* a table encoded (pushed) */
  }
  lua_pushvalue(L, 2);
  return 3;
}

/* The esg_cache_loader of a Lua function: fn(key, deadline_s) -> value [, ttl] | nil (absent) | nil, message. */
static int lua_loader(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  loader_call *lcall = ud;
  return lesg_lua_load(lcall->L, lcall->fn, &lcall->lc->in_load, key, deadline, ld);
}

int lesg_lua_load(lua_State *L, int fn, int *in_load, const char *key, int64_t deadline, esg_cache_load *ld) {
  if (!lua_checkstack(L, 8)) {
    esg_cache_load_error(ld, "Lua stack overflow");
    return ESG_ECALLBACK;
  }
  int top = lua_gettop(L);
  lua_pushcfunction(L, loader_body);
  lua_pushvalue(L, fn);
  lua_pushlightuserdata(L, (void *)key); /* made a string inside the protected call */
  if (deadline == INT64_MAX) lua_pushnil(L);
  else lua_pushnumber(L, ms_to_s(deadline));
  int rc;
  if (in_load) (*in_load)++;
  int prc = lua_pcall(L, 3, 3, 0);
  if (in_load) (*in_load)--;
  if (prc != LUA_OK) {
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    esg_cache_load_error(ld, m ? m : "the loader raised an error");
    rc = ESG_ECALLBACK;
  } else {
    lua_Integer kind = lua_tointeger(L, -3);
    if (kind == 0) {
      rc = ESG_NOT_FOUND;
    } else if (kind < 0) {
      esg_cache_load_error(ld, lua_tostring(L, -2));
      rc = ESG_ECALLBACK;
    } else {
      size_t len;
      const char *v = lua_tolstring(L, -2, &len);
      int64_t ttl = 0; /* the default, also for a ttl that is no duration */
      if (lua_isnumber(L, -1) && esg_ms_from_seconds(lua_tonumber(L, -1), &ttl) != ESG_OK) ttl = 0;
      rc = esg_cache_load_set(ld, v, len, ttl < 0 ? 0 : ttl);
    }
  }
  lua_settop(L, top);
  return rc;
}

/* An esg.HttpLoader argument, or NULL. */
static esg_http_loader **test_http_loader(lua_State *L, int arg) { return luaL_testudata(L, arg, LOADER_MT); }

esg_http_loader *lesg_test_http_loader(lua_State *L, int arg) {
  esg_http_loader **hl = test_http_loader(L, arg);
  if (hl && !*hl) luaL_argerror(L, arg, "closed loader");
  return hl ? *hl : NULL;
}

/*
 * cache:get_or_load(key, loader) -> result, value, version, expires, loaded, load_error
 * Read-through. loader is a function(key, deadline_s) returning value [, ttl]
 * (a string or a table stored as JSON), nil (the key does not exist: cached as a
 * negative) or nil, message (a failure; raising counts as one too), or an
 * esg.HttpLoader. A failure serves a stale value if one is within max_stale
 * (result "stale", load_error the message); otherwise nil, message, code.
 */
static int c_get_or_load(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  const char *key = lesg_check_key(L, 2);
  esg_http_loader **hl = test_http_loader(L, 3);
  loader_call lcall = {L, 3, lc};
  if (!hl) luaL_checktype(L, 3, LUA_TFUNCTION);
  else if (!*hl) return luaL_argerror(L, 3, "closed loader");
  lua_settop(L, 3);
  esg_cache_entry e;
  int rc = hl ? esg_cache_get_or_load(lc->c, key, esg_http_loader_load, *hl, &e)
              : esg_cache_get_or_load(lc->c, key, lua_loader, &lcall, &e);
  lesg_check_clock(L, lc->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(lc->c));
  push_entry(L, &e);
  lua_pushboolean(L, e.loaded);
  if (e.result == ESG_CACHE_STALE && e.load_status != ESG_OK) lua_pushstring(L, esg_errmsg(lc->c));
  else lua_pushnil(L);
  return 6;
}

/*
 * cache:collect(event) -> "written" | "stale" | "none", cache key; or nil, msg, code.
 * event: an esg.Event, a JSON string or a table.
 */
static int c_collect(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  esg_event *ev = lesg_test_event(L, 2), *own = NULL;
  if (!ev) {
    size_t len;
    const char *json = lesg_json_arg(L, 2, &len);
    int prc = esg_event_parse(json, len, &own);
    if (prc != ESG_OK) return lesg_push_fail(L, prc, esg_errmsg(NULL));
    ev = own;
  }
  const char *key = NULL;
  int rc = esg_cache_collect(lc->c, ev, &key);
  esg_event_free(own);
  lesg_check_clock(L, lc->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(lc->c));
  lua_pushstring(L, rc == ESG_OK ? "written" : rc == ESG_STALE ? "stale" : "none");
  if (key) lua_pushstring(L, key);
  else lua_pushnil(L);
  return 2;
}

/* cache:stats() -> table of counters. */
static int c_stats(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  esg_cache_stats st;
  esg_cache_stats_get(lc->c, &st);
  lua_createtable(L, 0, 10);
#define F(name) lua_pushinteger(L, (lua_Integer)st.name); lua_setfield(L, -2, #name);
  F(hits) F(misses) F(negatives) F(stale) F(loads) F(load_failures) F(mem_hits) F(evictions) F(mem_entries) F(mem_bytes)
#undef F
  return 1;
}

/* cache:purge() -> number deleted. */
static int c_purge(lua_State *L) {
  lcache *lc = check_cache(L, 1);
  int64_t n = 0;
  int rc = esg_cache_purge(lc->c, &n);
  lesg_check_clock(L, lc->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(lc->c));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* --------------------------------------------------------- HTTP loader -- */

/* A list of header lines from a table: {"Name: v", ...} or {Name = "v", ...}. Pushes a userdata holding them. */
const char **lesg_header_lines(lua_State *L, int idx, size_t *n) {
  *n = 0;
  if (lua_isnoneornil(L, idx)) return NULL;
  luaL_checktype(L, idx, LUA_TTABLE);
  idx = lua_absindex(L, idx);
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    count++;
    lua_pop(L, 1);
  }
  const char **lines = lua_newuserdatauv(L, (count ? count : 1) * sizeof *lines, 1);
  lua_newtable(L); /* keeps the strings alive */
  int keep = lua_gettop(L);
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TNUMBER) {
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "headers: a list entry must be a \"Name: value\" string");
      lua_pushvalue(L, -1);
    } else {
      if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1)) luaL_error(L, "headers: names and values must be strings");
      lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
    }
    lines[i] = lua_tostring(L, -1);
    lua_rawseti(L, keep, (lua_Integer)++i);
    lua_pop(L, 1);
  }
  lua_setiuservalue(L, -2, 1);
  *n = i;
  return lines;
}

/*
 * esg.http_loader{url = "https://.../{key}", headers = {...}, timeout = s,
 * connect_timeout = s, ttl = s, max_body_bytes = n} -> esg.HttpLoader, to pass to
 * cache:get_or_load: GET per key, ETag revalidation, 404/410 = absent.
 */
static int l_http_loader(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  esg_http_loader_opts o = ESG_HTTP_LOADER_OPTS_INIT;
  o.url = opt_str(L, 1, "url");
  lua_getfield(L, 1, "headers");
  o.headers = lesg_header_lines(L, lua_gettop(L), &o.n_headers);
  o.timeout_ms = lesg_opt_ms(L, 1, "timeout", 0);
  o.connect_timeout_ms = lesg_opt_ms(L, 1, "connect_timeout", 0);
  o.ttl_ms = lesg_opt_ms(L, 1, "ttl", 0);
  o.max_body_bytes = (size_t)opt_int(L, 1, "max_body_bytes", 0, 0, INT32_MAX);
  esg_http_loader **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, LOADER_MT);
  int rc = esg_http_loader_open(ud, &o);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  return 1;
}

static int hl_close(lua_State *L) {
  esg_http_loader **ud = luaL_checkudata(L, 1, LOADER_MT);
  esg_http_loader_close(*ud);
  *ud = NULL;
  return 0;
}

/* loader:counts() -> requests, not_modified, absent, failed */
static int hl_counts(lua_State *L) {
  esg_http_loader **ud = luaL_checkudata(L, 1, LOADER_MT);
  if (!*ud) return luaL_error(L, "attempt to use a closed loader");
  uint64_t r, nm, a, f;
  esg_http_loader_counts(*ud, &r, &nm, &a, &f);
  lua_pushinteger(L, (lua_Integer)r);
  lua_pushinteger(L, (lua_Integer)nm);
  lua_pushinteger(L, (lua_Integer)a);
  lua_pushinteger(L, (lua_Integer)f);
  return 4;
}

/* ------------------------------------------------------------- latches -- */

/* A JSON document argument: string, table, or esg.Event (its bytes). */
static const char *doc_arg(lua_State *L, int arg, size_t *len) {
  esg_event *ev = lesg_test_event(L, arg);
  if (ev) return esg_event_json(ev, len);
  return lesg_json_arg(L, arg, len);
}

/* esg.latch.flagged(doc) -> boolean, or nil, msg, code. doc: JSON string, table or esg.Event. */
static int lt_flagged(lua_State *L) {
  size_t len;
  const char *doc = doc_arg(L, 1, &len);
  int flagged = 0;
  int rc = esg_latch_flagged_json(doc, len, &flagged);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushboolean(L, flagged);
  return 1;
}

/* esg.latch.mark(doc, latched) -> JSON string with the flag set (latched true) or cleared. */
static int lt_mark(lua_State *L) {
  int latched = lua_toboolean(L, 2);
  lua_settop(L, 2);
  size_t len;
  const char *doc = doc_arg(L, 1, &len);
  char *out = NULL;
  size_t out_len = 0;
  int rc = esg_latch_mark(doc, len, latched, &out, &out_len);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushlstring(L, out, out_len);
  esg_free(out);
  return 1;
}

static int64_t check_ttl(lua_State *L, int arg) {
  lua_Number t = luaL_checknumber(L, arg);
  luaL_argcheck(L, t > 0, arg, "ttl must be > 0 seconds");
  return lesg_num_ms(L, t, "latch ttl", LESG_MS_MAX, 0);
}

/* store:latch(key, side, content_hash, ttl) -> true, or nil, msg, code. Call before writing to side. */
static int m_latch(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2), *side = lesg_check_key(L, 3), *hash = lesg_check_key(L, 4);
  return lesg_push_ok(L, ls, esg_latch(ls->s, key, side, hash, check_ttl(L, 5)));
}

/* store:latch_doc(key, side, doc, ttl): store:latch with the canonical content hash of doc. */
static int m_latch_doc(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2), *side = lesg_check_key(L, 3);
  int64_t ttl = check_ttl(L, 5);
  size_t len;
  const char *doc = doc_arg(L, 4, &len);
  return lesg_push_ok(L, ls, esg_latch_doc(ls->s, key, side, doc, len, ttl));
}

static int push_verdict(lua_State *L, lstore *ls, int rc) {
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushstring(L, rc == ESG_LATCH_ECHO ? "echo" : "genuine");
  return 1;
}

/* store:latch_check(key, side, content_hash) -> "echo" | "genuine", or nil, msg, code. */
static int m_latch_check(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2), *side = lesg_check_key(L, 3), *hash = lesg_check_key(L, 4);
  return push_verdict(L, ls, esg_latch_check(ls->s, key, side, hash));
}

/* store:latch_check_doc(key, side, doc) -> "echo" | "genuine", or nil, msg, code. */
static int m_latch_check_doc(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2), *side = lesg_check_key(L, 3);
  size_t len;
  const char *doc = doc_arg(L, 4, &len);
  return push_verdict(L, ls, esg_latch_check_doc(ls->s, key, side, doc, len));
}

/* store:latch_cancel(key, side, content_hash) -> true, or nil when none is pending, or nil, msg, code. */
static int m_latch_cancel(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2), *side = lesg_check_key(L, 3), *hash = lesg_check_key(L, 4);
  return lesg_push_ok_or_nil(L, ls, esg_latch_cancel(ls->s, key, side, hash));
}

/* store:latch_pending(key, side) -> number of unexpired pending latches. */
static int m_latch_pending(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2), *side = lesg_check_key(L, 3);
  int n = 0;
  int rc = esg_latch_pending(ls->s, key, side, &n);
  return lesg_push_count(L, ls, rc, n);
}

/* store:purge_latches() -> number deleted. */
static int m_purge_latches(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int64_t n = 0;
  int rc = esg_latches_purge(ls->s, &n);
  return lesg_push_count(L, ls, rc, n);
}

/* -------------------------------------------------------------- resync -- */

/* store:cursor(name) -> the stored cursor string, or nil; or nil, msg, code. */
static int m_cursor(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  char *out = NULL;
  int rc = esg_cursor_get(ls->s, lesg_check_key(L, 2), &out);
  if (ls->clock_failed) {
    esg_free(out);
    out = NULL;
  }
  lesg_check_clock(L, ls);
  if (rc == ESG_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushstring(L, out);
  esg_free(out);
  return 1;
}

/* store:set_cursor(name, cursor) -> true, or nil, msg, code. */
static int m_set_cursor(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *name = lesg_check_key(L, 2);
  return lesg_push_ok(L, ls, esg_cursor_set(ls->s, name, luaL_checkstring(L, 3)));
}

/* store:delete_cursor(name) -> true, or nil when there was none, or nil, msg, code. */
static int m_delete_cursor(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  return lesg_push_ok_or_nil(L, ls, esg_cursor_delete(ls->s, lesg_check_key(L, 2)));
}

/* The sink of resync and replay: a Lua function(record) called protected; false stops. */
typedef struct sink_call {
  cb_state cb;
  int stop_on_false;
  int running; /* > 0 while the sink runs */
} sink_call;

static int sink_body(lua_State *L) {
  const esg_stored_event *e = lua_touserdata(L, 2);
  lua_settop(L, 1);
  lesg_push_stored(L, e, 1);
  lua_call(L, 1, 1);
  lua_pushboolean(L, lua_isboolean(L, -1) && !lua_toboolean(L, -1));
  return 1;
}

static int lua_sink(void *ud, const esg_stored_event *e) {
  sink_call *sc = ud;
  lua_State *L = sc->cb.L;
  if (sc->cb.err_ref != LUA_NOREF || !lua_checkstack(L, 4)) return 1;
  lua_pushcfunction(L, sink_body);
  lua_pushvalue(L, sc->cb.fn);
  lua_pushlightuserdata(L, (void *)e);
  sc->running++;
  int prc = lua_pcall(L, 2, 1, 0);
  sc->running--;
  if (prc != LUA_OK) {
    cb_keep_error(&sc->cb);
    return 1;
  }
  int stop = sc->stop_on_false && lua_toboolean(L, -1);
  lua_pop(L, 1);
  return stop;
}

/* Reads the resync options at opts into o; a sink function goes to sc. */
static void resync_opts(lua_State *L, int opts, esg_resync_opts *o, sink_call *sc) {
  *o = (esg_resync_opts)ESG_RESYNC_OPTS_INIT;
  if (!opts) return;
  lua_getfield(L, opts, "sink");
  if (!lua_isnil(L, -1)) {
    luaL_checktype(L, -1, LUA_TFUNCTION);
    sc->cb.fn = lua_gettop(L); /* stays on the stack for the call */
    o->sink = lua_sink;
    o->sink_ud = sc;
  } else {
    lua_pop(L, 1);
  }
  o->no_log = lesg_opt_bool(L, opts, "no_log");
  o->log_ttl_ms = lesg_opt_ms(L, opts, "log_ttl", 0);
  o->entity_field = opt_str(L, opts, "entity_field");
  o->type = opt_str(L, opts, "type");
  o->batch = (int)opt_int(L, opts, "batch", 0, 0, 1000000);
  o->max_pages = (int)opt_int(L, opts, "max_pages", 0, 0, INT32_MAX);
}

static void push_resync_stats(lua_State *L, const esg_resync_stats *st) {
  lua_createtable(L, 0, 9);
#define F(name) lua_pushinteger(L, (lua_Integer)st->name); lua_setfield(L, -2, #name);
  F(pages) F(emitted) F(duplicates) F(created) F(updated) F(deleted) F(unchanged)
#undef F
  lua_pushboolean(L, st->done);
  lua_setfield(L, -2, "done");
}

typedef struct fetch_call {
  cb_state cb;
  int page_ref;   /* the last page table, kept alive until the next fetch */
  esg_resync_item *items;
  size_t cap;
} fetch_call;

/* Protected: calls fetch(cursor) (cursor: light userdata or nil) and returns the page table (validated shape). */
static int fetch_body(lua_State *L) {
  lua_settop(L, 2);
  if (lua_islightuserdata(L, 2)) {
    lua_pushstring(L, (const char *)lua_touserdata(L, 2));
    lua_replace(L, 2);
  }
  lua_call(L, 1, 2);
  if (lua_isnil(L, -2)) {
    const char *m = lua_tostring(L, -1);
    return luaL_error(L, "fetch failed: %s", m ? m : "no page");
  }
  luaL_checktype(L, -2, LUA_TTABLE);
  lua_pop(L, 1);
  return 1;
}

/* item[k] as a string (numbers converted), kept alive in the item under "\1<k>" (rawset). */
static const char *item_str(lua_State *L, int t, const char *k, int required) {
  lua_getfield(L, t, k);
  const char *s = NULL;
  if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
    s = lua_tostring(L, -1); /* a number is converted on the stack only: anchor the string */
    lua_pushfstring(L, "\1%s", k);
    lua_pushvalue(L, -2);
    lua_rawset(L, t);
  } else if (required || !lua_isnil(L, -1)) {
    luaL_error(L, "page item field '%s' must be a string", k);
  }
  lua_pop(L, 1);
  return s;
}

/* Protected: fills fc->items from the page at 1 (kept in fc->page_ref); returns n, next cursor, done. */
static int page_body(lua_State *L) {
  fetch_call *fc = lua_touserdata(L, 2);
  lua_settop(L, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, 1);
  fc->page_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* the page stays alive until the next fetch */
  lua_getfield(L, 1, "items");
  int items = lua_gettop(L);
  size_t n = lua_istable(L, items) ? (size_t)lua_rawlen(L, items) : 0;
  if (n > fc->cap) {
    esg_resync_item *p = realloc(fc->items, n * sizeof *p);
    if (!p) return luaL_error(L, "out of memory");
    fc->items = p;
    fc->cap = n;
  }
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, items, (lua_Integer)i + 1);
    int it = lua_gettop(L);
    if (!lua_istable(L, it))
      return luaL_error(L, "cursor_run: page item %d must be a table (got %s)", (int)i + 1, luaL_typename(L, it));
    esg_resync_item *x = &fc->items[i];
    memset(x, 0, sizeof *x);
    x->id = item_str(L, it, "id", 1);
    x->version = item_str(L, it, "version", 1);
    x->type = item_str(L, it, "type", 1);
    x->partition_key = item_str(L, it, "partition_key", 0);
    lua_getfield(L, it, "timestamp");
    x->timestamp = lua_isinteger(L, -1) ? (int64_t)lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    lua_getfield(L, it, "data");
    size_t len;
    x->data = lesg_json_arg(L, -1, &len);
    x->data_len = len;
    lua_setfield(L, it, "\1json"); /* keep the encoded data alive with the item */
    lua_pop(L, 2); /* data, item */
  }
  lua_pushinteger(L, (lua_Integer)n);
  lua_getfield(L, 1, "next");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "page field 'next' must be a string");
  lua_pushliteral(L, "\1next");
  lua_pushvalue(L, -2);
  lua_rawset(L, 1); /* anchored in the page, even when __index made it */
  lua_getfield(L, 1, "done");
  return 3;
}

static int lua_fetch(void *ud, const char *cursor, esg_resync_page *page) {
  fetch_call *fc = ud;
  lua_State *L = fc->cb.L;
  if (fc->cb.err_ref != LUA_NOREF || !lua_checkstack(L, 8)) return 1;
  if (fc->page_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, fc->page_ref);
    fc->page_ref = LUA_NOREF;
  }
  lua_pushcfunction(L, fetch_body);
  lua_pushvalue(L, fc->cb.fn);
  if (cursor) lua_pushlightuserdata(L, (void *)cursor); /* made a string inside the protected call */
  else lua_pushnil(L);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    cb_keep_error(&fc->cb);
    return 1;
  }
  lua_pushcfunction(L, page_body);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, fc);
  if (lua_pcall(L, 2, 3, 0) != LUA_OK) {
    cb_keep_error(&fc->cb);
    return 1;
  }
  page->items = fc->items;
  page->n = (size_t)lua_tointeger(L, -3);
  page->next_cursor = lua_tostring(L, -2); /* anchored in the page */
  page->done = lua_toboolean(L, -1);
  lua_pop(L, 3);
  return 0;
}

/*
 * store:cursor_run(name, source, fetch [, opts]) -> stats, or nil, msg, code.
 * fetch(cursor) -> page {items = {{id=, version=, type=, data=, timestamp=,
 * partition_key=}, ...}, next = "cursor after", done = bool} or nil, message.
 * opts: sink = function(record) (each newly stored event), no_log, log_ttl,
 * entity_field, max_pages. An error raised by fetch or sink is raised.
 */
static int m_cursor_run(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *name = lesg_check_key(L, 2), *source = lesg_check_key(L, 3);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  int opts = lesg_opt_table(L, 5);
  lua_settop(L, 5);
  sink_call sc = {CB_INIT(L, 0), 0, 0};
  esg_resync_opts o;
  resync_opts(L, opts, &o, &sc);
  fetch_call fc = {CB_INIT(L, 4), LUA_NOREF, NULL, 0};
  esg_resync_stats st;
  memset(&st, 0, sizeof st);
  cb_arm(L, &sc.cb);
  cb_arm(L, &fc.cb);
  ls->L = L;
  int rc = esg_cursor_run(ls->s, name, source, lua_fetch, &fc, &o, &st);
  free(fc.items);
  if (fc.page_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, fc.page_ref);
  cb_disarm(L, &sc.cb);
  cb_disarm(L, &fc.cb);
  cb_raise(&fc.cb);
  cb_raise(&sc.cb);
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  push_resync_stats(L, &st);
  return 1;
}

typedef struct lsnap {
  lstore *ls;
  esg_snapshot *sn;
  sink_call sc;
  int sink_ref;
} lsnap;

static lsnap *check_snap(lua_State *L) {
  lsnap *s = luaL_checkudata(L, 1, SNAPSHOT_MT);
  if (!s->sn || !s->ls->s) luaL_error(L, "attempt to use a closed snapshot"); /* closed, or detached */
  s->ls->L = L;
  s->sc.cb.L = L;
  return s;
}

/* Puts the snapshot's sink function on the stack (for the call) and points sc at it. */
static void snap_arm(lua_State *L, lsnap *s) {
  if (s->sink_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->sink_ref);
    s->sc.cb.fn = lua_gettop(L);
  }
  cb_arm(L, &s->sc.cb);
}

/*
 * store:snapshot(source [, opts]) -> esg.Snapshot, or nil, msg, code: a full
 * listing of source; opts as cursor_run plus type ("<type>-created"...) and batch.
 */
static int m_snapshot(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *source = lesg_check_key(L, 2);
  int opts = lesg_opt_table(L, 3);
  lua_settop(L, 3);
  lsnap *s = lesg_new_handle(L, sizeof *s, 2, SNAPSHOT_MT);
  s->sink_ref = LUA_NOREF;
  s->sc.cb.err_ref = s->sc.cb.spare = LUA_NOREF;
  s->sc.cb.L = L;
  int ud = lua_gettop(L);
  esg_resync_opts o;
  resync_opts(L, opts, &o, &s->sc);
  /* libesg keeps the option strings: copies live in the snapshot's user value 2 */
  lua_createtable(L, 2, 0);
  if (o.type) {
    lua_pushstring(L, o.type);
    o.type = lua_tostring(L, -1);
    lua_rawseti(L, -2, 1);
  }
  if (o.entity_field) {
    lua_pushstring(L, o.entity_field);
    o.entity_field = lua_tostring(L, -1);
    lua_rawseti(L, -2, 2);
  }
  lua_setiuservalue(L, ud, 2);
  if (o.sink) {
    lua_pushvalue(L, s->sc.cb.fn);
    s->sink_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  ls->L = L;
  int rc = esg_snapshot_begin(&s->sn, ls->s, source, &o);
  lesg_check_clock(L, ls);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  s->ls = ls;
  lua_pushvalue(L, ud);
  return 1;
}

/* sn:add(key, content) -> true, or nil, msg, code (a bad entry; the listing may go on). */
static int sn_add(lua_State *L) {
  lsnap *s = check_snap(L);
  const char *key = lesg_check_key(L, 2);
  size_t len;
  const char *content = lesg_json_arg(L, 3, &len);
  snap_arm(L, s);
  int rc = esg_snapshot_add(s->sn, key, content, len);
  cb_raise(&s->sc.cb);
  lesg_check_clock(L, s->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(s->sn));
  lua_pushboolean(L, 1);
  return 1;
}

/* sn:finish() -> stats, or nil, msg, code: emits deletions for the keys not listed. */
static int sn_finish(lua_State *L) {
  lsnap *s = check_snap(L);
  lua_settop(L, 1);
  snap_arm(L, s);
  esg_resync_stats st;
  memset(&st, 0, sizeof st);
  int rc = esg_snapshot_finish(s->sn, &st);
  cb_raise(&s->sc.cb);
  lesg_check_clock(L, s->ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(s->sn));
  push_resync_stats(L, &st);
  return 1;
}

static int sn_close(lua_State *L) {
  lsnap *s = luaL_checkudata(L, 1, SNAPSHOT_MT);
  if (s->sn && s->sc.running > 0) {
    return luaL_error(L, "snapshot:close called from inside its own sink");
  }
  if (s->sn) {
    s->ls->L = L; /* an open batch commits: the store's clock */
    esg_snapshot_close(s->sn);
    s->sn = NULL;
  }
  cb_disarm(L, &s->sc.cb);
  if (s->sink_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->sink_ref);
    s->sink_ref = LUA_NOREF;
  }
  return 0;
}

/*
 * store:replay(filter, fn) -> number handed over, or nil, msg, code.
 * filter: {key=, type=, since= (ms), ["until"]= (ms)} (nil = all); fn(record)
 * gets each stored event (record.event decoded); returning false stops.
 */
static int m_replay(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int f = lesg_opt_table(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  esg_replay_filter flt;
  memset(&flt, 0, sizeof flt);
  flt.corr_key = opt_str(L, f, "key");
  flt.type = opt_str(L, f, "type");
  flt.since = opt_int(L, f, "since", 0, 0, INT64_MAX);
  flt.until = opt_int(L, f, "until", 0, 0, INT64_MAX);
  sink_call sc = {CB_INIT(L, 3), 1, 0};
  int64_t n = 0;
  cb_arm(L, &sc.cb);
  ls->L = L;
  int rc = esg_replay(ls->s, &flt, lua_sink, &sc, &n);
  cb_disarm(L, &sc.cb);
  cb_raise(&sc.cb);
  lesg_check_clock(L, ls);
  if (rc < 0 && rc != ESG_ECALLBACK) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* -------------------------------------------------------------- egress -- */

typedef struct legress {
  lstore *ls;               /* its store, or NULL */
  esg_egress *e;
  cb_state cb;              /* the caller, and the first error a callback raised (fn unused) */
  int done_ref, retry_ref;  /* Lua callbacks, or LUA_NOREF */
} legress;

static legress *check_egress(lua_State *L) {
  legress *g = luaL_checkudata(L, 1, EGRESS_MT);
  if (!g->e || (g->ls && !g->ls->s)) luaL_error(L, "attempt to use a closed egress engine"); /* or detached */
  g->cb.L = L;
  if (g->ls) g->ls->L = L;
  cb_arm(L, &g->cb);
  return g;
}

/* The state a callback runs on: the caller of run, drain or close, or of the store's close, which
   cancels the deliveries of the engines on it (never a coroutine gone since it submitted them). */
static lua_State *egress_state(legress *g) {
  if (g->ls) g->cb.L = g->ls->L;
  return g->cb.L;
}

static int done_body(lua_State *L) {
  const esg_egress_result *r = lua_touserdata(L, 2);
  lua_settop(L, 1);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, r->event_id);
  lua_setfield(L, -2, "event_id");
  lua_pushstring(L, esg_egress_outcome_name(r->outcome));
  lua_setfield(L, -2, "outcome");
  lua_pushinteger(L, r->http_status);
  lua_setfield(L, -2, "http_status");
  lua_pushinteger(L, r->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, ms_to_s(r->first_attempt));
  lua_setfield(L, -2, "first_attempt");
  lua_pushnumber(L, ms_to_s(r->last_attempt));
  lua_setfield(L, -2, "last_attempt");
  lua_pushstring(L, r->error ? r->error : "");
  lua_setfield(L, -2, "error");
  if (r->fault_id) {
    lua_pushinteger(L, (lua_Integer)r->fault_id);
    lua_setfield(L, -2, "fault_id");
  }
  lua_pushstring(L, esg_status_name(r->store_rc));
  lua_setfield(L, -2, "store_status");
  if (r->body) {
    lua_pushlstring(L, r->body, r->body_len);
    lua_setfield(L, -2, "body");
  }
  if (r->request_ud) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, (int)(intptr_t)r->request_ud);
    lua_setfield(L, -2, "ud");
  }
  lua_call(L, 1, 0);
  return 0;
}

static void egress_on_done(void *ud, const esg_egress_result *r) {
  legress *g = ud;
  lua_State *L = egress_state(g);
  if (L && g->done_ref != LUA_NOREF && g->cb.err_ref == LUA_NOREF && lua_checkstack(L, 6)) {
    lua_pushcfunction(L, done_body);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->done_ref);
    lua_pushlightuserdata(L, (void *)r);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) cb_keep_error(&g->cb);
  }
  if (L && r->request_ud) luaL_unref(L, LUA_REGISTRYINDEX, (int)(intptr_t)r->request_ud);
}

typedef struct retry_args {
  const char *event_id, *error;
} retry_args;

/* Protected: (fn, retry_args*, attempt, status, delay) -> fn(event_id, attempt, status, delay, error). */
static int retry_body(lua_State *L) {
  const retry_args *a = lua_touserdata(L, 2);
  lua_settop(L, 5);
  lua_pushstring(L, a->event_id);
  lua_replace(L, 2);
  lua_pushstring(L, a->error ? a->error : "");
  lua_call(L, 5, 0);
  return 0;
}

static void egress_on_retry(void *ud, const char *event_id, int attempt, int http_status, int64_t delay_ms,
                            const char *error) {
  legress *g = ud;
  lua_State *L = egress_state(g);
  if (!L || g->retry_ref == LUA_NOREF || g->cb.err_ref != LUA_NOREF || !lua_checkstack(L, 8)) return;
  retry_args a = {event_id, error};
  lua_pushcfunction(L, retry_body);
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->retry_ref);
  lua_pushlightuserdata(L, &a);
  lua_pushinteger(L, attempt);
  lua_pushinteger(L, http_status);
  lua_pushnumber(L, ms_to_s(delay_ms));
  if (lua_pcall(L, 5, 0, 0) != LUA_OK) cb_keep_error(&g->cb);
}

/* opts[field]: a registry reference to a function, or LUA_NOREF when absent. */
static int opt_fn_ref(lua_State *L, int opts, const char *field) {
  lua_getfield(L, opts, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  luaL_checktype(L, -1, LUA_TFUNCTION);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Reads the engine's options (all but on_done, on_retry and ud) from the table at opts (0: none). */
void lesg_egress_opts(lua_State *L, int opts, esg_egress_opts *out) {
  esg_egress_opts o = ESG_EGRESS_OPTS_INIT;
  o.max_in_flight = (int)opt_int(L, opts, "max_in_flight", 0, 0, 100000);
  o.max_attempts = (int)opt_int(L, opts, "max_attempts", 0, 0, 1000000);
  o.max_elapsed_ms = lesg_opt_ms(L, opts, "max_elapsed", 0);
  o.backoff_base_ms = lesg_opt_ms(L, opts, "backoff_base", 0);
  o.backoff_cap_ms = lesg_opt_ms(L, opts, "backoff_cap", 0);
  o.connect_timeout_ms = lesg_opt_ms(L, opts, "connect_timeout", 0);
  o.timeout_ms = lesg_opt_ms(L, opts, "timeout", 0);
  if (opts) {
    lua_getfield(L, opts, "rate");
    o.rate_per_s = luaL_optnumber(L, -1, 0);
    lua_pop(L, 1);
  }
  o.rate_burst = (int)opt_int(L, opts, "burst", 0, 0, INT32_MAX);
  o.idempotency_header = opt_str(L, opts, "idempotency_header");
  o.content_type = opt_str(L, opts, "content_type");
  o.max_response_bytes = (size_t)opt_int(L, opts, "max_response_bytes", 0, 0, INT32_MAX);
  o.claim_lease_ms = lesg_opt_ms(L, opts, "claim_lease", 0);
  o.complete_on_fault = lesg_opt_bool(L, opts, "complete_on_fault");
  o.seed = (uint64_t)opt_int(L, opts, "seed", 0, 0, INT64_MAX);
  *out = o;
}

/*
 * esg.egress([store,] opts) / store:egress(opts) -> esg.Egress, or nil, msg, code.
 * opts: max_in_flight, max_attempts, max_elapsed (s), backoff_base, backoff_cap,
 * connect_timeout, timeout (s), rate (per s), burst, idempotency_header,
 * content_type, max_response_bytes, claim_lease (s), complete_on_fault, seed,
 * on_done = function(result), on_retry = function(event_id, attempt, status, delay_s, error).
 */
static int l_egress(lua_State *L) {
  lstore *ls = NULL;
  int opts;
  if (luaL_testudata(L, 1, STORE_MT)) {
    ls = lesg_check_store(L, 1);
    opts = lesg_opt_table(L, 2);
  } else {
    opts = lesg_opt_table(L, 1);
    lua_pushnil(L);
    lua_insert(L, 1);
  }
  lua_settop(L, 2);
  esg_egress_opts o;
  lesg_egress_opts(L, opts, &o);
  legress *g = lesg_new_handle(L, sizeof *g, 1, EGRESS_MT);
  g->done_ref = g->retry_ref = g->cb.err_ref = g->cb.spare = LUA_NOREF;
  g->cb.L = L;
  cb_arm(L, &g->cb);
  if (opts) {
    g->done_ref = opt_fn_ref(L, opts, "on_done");
    g->retry_ref = opt_fn_ref(L, opts, "on_retry");
  }
  o.on_done = egress_on_done;
  o.on_retry = egress_on_retry;
  o.ud = g;
  int rc = esg_egress_open(&g->e, ls ? ls->s : NULL, &o);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  g->ls = ls;
  return 1;
}

static int eg_close(lua_State *L) {
  legress *g = luaL_checkudata(L, 1, EGRESS_MT);
  if (g->e) {
    esg_egress *e = g->e;
    g->e = NULL;
    g->cb.L = L;
    if (g->ls) g->ls->L = L;
    esg_egress_close(e); /* unfinished deliveries end cancelled: their callbacks run now, on L */
  }
  if (g->done_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, g->done_ref);
  if (g->retry_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, g->retry_ref);
  if (g->cb.err_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, g->cb.err_ref);
  g->done_ref = g->retry_ref = g->cb.err_ref = LUA_NOREF;
  cb_disarm(L, &g->cb);
  return 0;
}

/* Reads a request table at idx into r (strings anchored in the table or on the stack). */
static void request_arg(lua_State *L, int idx, esg_egress_request *r) {
  luaL_checktype(L, idx, LUA_TTABLE);
  memset(r, 0, sizeof *r);
  r->event_id = opt_str(L, idx, "event_id");
  r->method = opt_str(L, idx, "method");
  r->url = opt_str(L, idx, "url");
  r->partition_key = opt_str(L, idx, "partition_key");
  r->claim_key = opt_str(L, idx, "claim_key");
  lua_getfield(L, idx, "claim_token");
  r->claim_token = (int64_t)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "headers");
  r->headers = lesg_header_lines(L, -1, &r->n_headers); /* stays on the stack */
  lua_getfield(L, idx, "body");
  if (!lua_isnil(L, -1)) r->body = lesg_json_arg(L, -1, &r->body_len); /* stays on the stack */
  lua_getfield(L, idx, "event");
  if (!lua_isnil(L, -1)) r->event = lesg_json_arg(L, -1, &r->event_len);
  lua_getfield(L, idx, "ud");
  if (!lua_isnil(L, -1)) r->ud = (void *)(intptr_t)luaL_ref(L, LUA_REGISTRYINDEX);
  else lua_pop(L, 1);
}

/*
 * eg:submit{event_id=, url=, method=, headers=, body=, partition_key=,
 * claim_key=, claim_token=, event=, ud=} -> true, or nil, msg, code. body and
 * event: strings, or tables sent as JSON; ud comes back in the result.
 */
static int eg_submit(lua_State *L) {
  legress *g = check_egress(L);
  esg_egress_request r;
  request_arg(L, 2, &r);
  int rc = esg_egress_submit(g->e, &r);
  if (rc != ESG_OK) {
    if (r.ud) luaL_unref(L, LUA_REGISTRYINDEX, (int)(intptr_t)r.ud);
    return lesg_push_fail(L, rc, esg_errmsg(g->e));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* eg:resubmit(fault_id, template) -> true, or nil when the fault is gone, or nil, msg, code. */
static int eg_resubmit(lua_State *L) {
  legress *g = check_egress(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  esg_egress_request r;
  request_arg(L, 3, &r);
  int rc = esg_egress_resubmit(g->e, (int64_t)id, &r);
  if (rc != ESG_OK && r.ud) luaL_unref(L, LUA_REGISTRYINDEX, (int)(intptr_t)r.ud);
  if (rc == ESG_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(g->e));
  lua_pushboolean(L, 1);
  return 1;
}

/* eg:run([timeout_s]) -> "idle" | "busy", or nil, msg, code. 0 = one pass; nil or negative = until idle. */
static int eg_run(lua_State *L) {
  legress *g = check_egress(L);
  int timeout = -1;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number t = luaL_checknumber(L, 2);
    timeout = t < 0 ? -1 : (int)lesg_num_ms(L, t, "egress:run timeout", INT_MAX, 0);
  }
  int rc = esg_egress_run(g->e, timeout);
  cb_raise(&g->cb);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(g->e));
  lua_pushstring(L, rc == ESG_BUSY ? "busy" : "idle");
  return 1;
}

/* eg:drain() -> true once every delivery has finished. */
static int eg_drain(lua_State *L) {
  legress *g = check_egress(L);
  int rc = esg_egress_drain(g->e);
  cb_raise(&g->cb);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(g->e));
  lua_pushboolean(L, 1);
  return 1;
}

/* eg:stats() -> counters table. */
static int eg_stats(lua_State *L) {
  legress *g = check_egress(L);
  esg_egress_stats st;
  esg_egress_get_stats(g->e, &st);
  lua_createtable(L, 0, 9);
#define F(name) lua_pushinteger(L, (lua_Integer)st.name); lua_setfield(L, -2, #name);
  F(submitted) F(delivered) F(retried) F(faulted) F(cancelled) F(attempts) F(connects) F(in_flight) F(queued)
#undef F
  return 1;
}

/* esg.egress_retryable(curl_code, http_status) -> boolean (the retry policy). */
static int l_retryable(lua_State *L) {
  lua_pushboolean(L, esg_egress_retryable((int)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)));
  return 1;
}

/* ------------------------------------------------------------- module -- */

void lesg_feat_methods(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"cache", m_cache},
      {"latch", m_latch},           {"latch_doc", m_latch_doc},
      {"latch_check", m_latch_check}, {"latch_check_doc", m_latch_check_doc},
      {"latch_cancel", m_latch_cancel}, {"latch_pending", m_latch_pending},
      {"purge_latches", m_purge_latches},
      {"cursor", m_cursor},         {"set_cursor", m_set_cursor},
      {"delete_cursor", m_delete_cursor}, {"cursor_run", m_cursor_run},
      {"snapshot", m_snapshot},     {"replay", m_replay},
      {"egress", l_egress},
      {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}

void lesg_feat_open(lua_State *L) {
  static const luaL_Reg cache_methods[] = {
      {"get", c_get},       {"put", c_put},         {"put_negative", c_put_negative},
      {"invalidate", c_invalidate}, {"get_or_load", c_get_or_load}, {"collect", c_collect},
      {"stats", c_stats},   {"purge", c_purge},     {"close", cache_close},
      {NULL, NULL}};
  static const luaL_Reg cache_meta[] = {{"__gc", cache_close}, {"__close", cache_close}, {NULL, NULL}};
  static const luaL_Reg snap_methods[] = {{"add", sn_add}, {"finish", sn_finish}, {"close", sn_close}, {NULL, NULL}};
  static const luaL_Reg snap_meta[] = {{"__gc", sn_close}, {"__close", sn_close}, {NULL, NULL}};
  static const luaL_Reg egress_methods[] = {
      {"submit", eg_submit}, {"resubmit", eg_resubmit}, {"run", eg_run}, {"drain", eg_drain},
      {"stats", eg_stats},   {"close", eg_close},       {NULL, NULL}};
  static const luaL_Reg egress_meta[] = {{"__gc", eg_close}, {"__close", eg_close}, {NULL, NULL}};
  static const luaL_Reg loader_methods[] = {{"counts", hl_counts}, {"close", hl_close}, {NULL, NULL}};
  static const luaL_Reg loader_meta[] = {{"__gc", hl_close}, {"__close", hl_close}, {NULL, NULL}};
  static const luaL_Reg latch_fns[] = {{"flagged", lt_flagged}, {"mark", lt_mark}, {NULL, NULL}};
  lesg_new_type(L, CACHE_MT, cache_meta, cache_methods, NULL);
  lesg_new_type(L, SNAPSHOT_MT, snap_meta, snap_methods, NULL);
  lesg_new_type(L, EGRESS_MT, egress_meta, egress_methods, NULL);
  lesg_new_type(L, LOADER_MT, loader_meta, loader_methods, NULL);
  luaL_newlib(L, latch_fns);
  lua_setfield(L, -2, "latch");
  lua_pushcfunction(L, l_http_loader);
  lua_setfield(L, -2, "http_loader");
  lua_pushcfunction(L, l_egress);
  lua_setfield(L, -2, "egress");
  lua_pushcfunction(L, l_retryable);
  lua_setfield(L, -2, "egress_retryable");
}
