/*
 * The Lua module `esg`: libesg's store (claims, event log, entities, batches),
 * events (parse, hashes, UUID v5), JSON and webhooks, for Lua 5.4.
 *
 * Conventions (those of liolib.c): one named metatable per type with methods
 * under __index; __gc and __close share one idempotent close; using a closed
 * handle raises; bad arguments raise; expected failures return
 * `nil, message, code` where code is the status name ("EMISMATCH", ...);
 * outcomes (new, duplicate, busy, stale...) are returned as strings.
 * Times and durations are seconds (float); JSON data is left as it is (the
 * envelope's "timestamp" stays integer milliseconds).
 *
 * Lua code never unwinds through libesg: every Lua call made from inside a
 * libesg callback (the clock, event iteration) is protected, and its error is
 * raised once libesg has returned.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <lauxlib.h>
#include <lualib.h>
#include "esg.h"
#include "lesg.h"
#include "lesg_int.h"

#define CLAIM_MT "esg.Claim"

/* ------------------------------------------------------------- helpers -- */

int lesg_push_fail(lua_State *L, int rc, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, (msg && *msg) ? msg : esg_strerror(rc));
  lua_pushstring(L, esg_status_name(rc));
  return 3;
}

lua_Number lesg_ms_to_s(int64_t ms) { return (lua_Number)ms / 1000.0; }

/* Seconds n as ms, raising (naming what) unless 0 <= n <= max ms; math.huge is INT64_MAX when forever. */
int64_t lesg_num_ms(lua_State *L, lua_Number n, const char *what, int64_t max, int forever) {
  if (forever && n == (lua_Number)HUGE_VAL) return INT64_MAX;
  int64_t v = 0; /* (luaL_error does not return; clang cannot tell) */
  if (!(n >= 0) || esg_ms_from_seconds(n, &v) != ESG_OK || v > max)
    luaL_error(L, "%s must be a number of seconds in [0, %f]%s (got %f)", what, (lua_Number)max / 1000.0,
               forever ? " or math.huge (forever)" : "", n);
  return v;
}

/* Reads opts[field] (seconds) as milliseconds, at most max; def when absent. Raises if not a number in range. */
int64_t lesg_opt_ms_max(lua_State *L, int opts, const char *field, int64_t def, int64_t max, int forever) {
  if (opts == 0) return def;
  int t = lua_getfield(L, opts, field);
  int64_t v = def;
  if (t != LUA_TNIL) {
    int ok;
    lua_Number n = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "option '%s' must be a number of seconds >= 0 (got %s)", field, luaL_typename(L, -1));
    char what[160];
    snprintf(what, sizeof what, "option '%s'", field);
    v = lesg_num_ms(L, n, what, max, forever);
  }
  lua_pop(L, 1);
  return v;
}

/* Reads opts[field] (seconds) as milliseconds; def when absent. Raises if not a number >= 0. */
int64_t lesg_opt_ms(lua_State *L, int opts, const char *field, int64_t def) {
  return lesg_opt_ms_max(L, opts, field, def, LESG_MS_MAX, 0);
}

/* Index of an options table argument, or 0 when absent. */
int lesg_opt_table(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  return lua_absindex(L, arg);
}

int lesg_opt_bool(lua_State *L, int opts, const char *field) {
  if (!opts) return 0;
  lua_getfield(L, opts, field);
  int b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

/* A JSON argument: a string as is, anything else encoded. Returns the text; may push. */
const char *lesg_json_arg(lua_State *L, int arg, size_t *len) {
  if (lua_type(L, arg) == LUA_TSTRING) return lua_tolstring(L, arg, len);
  luaL_checkany(L, arg);
  return lesg_json_encode(L, arg, len);
}

/* --------------------------------------------------------------- store -- */


static int64_t lua_clock(void *ud) {
  lstore *ls = ud;
  lua_State *L = ls->L;
  if (!L || ls->clock_ref == LUA_NOREF || ls->clock_failed) return esg_clock_real(NULL);
  if (!lua_checkstack(L, 2)) return esg_clock_real(NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->clock_ref);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    snprintf(ls->clock_err, sizeof ls->clock_err, "clock function failed: %s", m ? m : "(error object)");
    ls->clock_failed = 1;
    lua_pop(L, 1);
    return esg_clock_real(NULL);
  }
  int ok;
  lua_Number t = lua_tonumberx(L, -1, &ok);
  lua_pop(L, 1);
  int64_t ms;
  if (!ok || esg_ms_from_seconds(t, &ms) != ESG_OK) {
    snprintf(ls->clock_err, sizeof ls->clock_err, "clock function must return a number of seconds");
    ls->clock_failed = 1;
    return esg_clock_real(NULL);
  }
  return ms;
}

/* Checks ls open and makes L the caller of its next libesg call (for the clock). */
lstore *lesg_use_store(lua_State *L, lstore *ls) {
  if (!ls->s) luaL_error(L, "attempt to use a closed store");
  ls->L = L;
  ls->clock_failed = 0;
  return ls;
}

lstore *lesg_check_store(lua_State *L, int arg) { return lesg_use_store(L, luaL_checkudata(L, arg, STORE_MT)); }

/* Raises the clock's error, if the last call on ls hit one. */
void lesg_check_clock(lua_State *L, lstore *ls) {
  if (ls->clock_failed) {
    ls->clock_failed = 0;
    luaL_error(L, "%s", ls->clock_err);
  }
}

/* Pushes the result of a call that returns ESG_OK or an error: true, or nil, msg, code. */
int lesg_push_ok(lua_State *L, lstore *ls, int rc) {
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushboolean(L, 1);
  return 1;
}

/* Pushes the result of a call that counts: n, or nil, msg, code. */
int lesg_push_count(lua_State *L, lstore *ls, int rc, int64_t n) {
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* As lesg_push_ok, but nil (alone) for ESG_NOT_FOUND. */
int lesg_push_ok_or_nil(lua_State *L, lstore *ls, int rc) {
  lesg_check_clock(L, ls);
  if (rc == ESG_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  return lesg_push_ok(L, ls, rc);
}

/*
 * Pushes a new handle of type mt (a userdata of size bytes, zeroed, with nuv user
 * values) whose user value 1 anchors the store (or nil) at index 1.
 */
void *lesg_new_handle(lua_State *L, size_t size, int nuv, const char *mt) {
  void *h = lua_newuserdatauv(L, size, nuv);
  memset(h, 0, size);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, mt);
  return h;
}

esg_event *lesg_test_event(lua_State *L, int arg) {
  esg_event **ud = luaL_testudata(L, arg, EVENT_MT);
  return ud ? *ud : NULL;
}

/*
 * ESG_OK, or the final commit's error (text in esg_errmsg(NULL)), the store closed either way;
 * or ESG_ESTATE, nothing closed: called from one of its callbacks (libesg counts them). Closing
 * detaches the handles built on it: cancelled deliveries' callbacks run here, on L.
 */
static int store_close(lua_State *L, lstore *ls) {
  int rc = ESG_OK;
  if (ls->s) {
    lua_State *caller = ls->L;
    ls->L = L;
    if ((rc = esg_store_close(ls->s)) == ESG_ESTATE) {
      ls->L = caller; /* the call it runs inside goes on */
      return rc;
    }
    ls->s = NULL;
  }
  if (ls->clock_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ls->clock_ref);
  ls->clock_ref = LUA_NOREF;
  return rc;
}

/* store:close() -> true, or nil, msg, code when the open group's final commit failed (the
   store is closed all the same); closing twice is fine. */
static int m_close(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  int rc = store_close(L, ls);
  if (rc == ESG_ESTATE)
    return luaL_error(L, "store:close called from inside one of its own callbacks (clock, purge function, "
                         "loader, fetch, sink or egress callback)");
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushboolean(L, 1);
  return 1;
}

/* Never raises: from inside a callback (a lua_close there) nothing is closed. */
static int m_gc(lua_State *L) {
  store_close(L, luaL_checkudata(L, 1, STORE_MT));
  return 0;
}

static int m_tostring(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  if (ls->s) lua_pushfstring(L, "esg.Store (%s) %p", ls->path, (void *)ls);
  else lua_pushliteral(L, "esg.Store (closed)");
  return 1;
}

/* store:isclosed() -> boolean */
static int m_isclosed(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  lua_pushboolean(L, ls->s == NULL);
  return 1;
}

/*
 * esg.open(path [, opts]) -> store, or nil, msg, code.
 * opts: durability = "normal"|"full", busy_timeout (s), clock = function() -> seconds,
 *       group_commit (s, 0 = off), group_max (writes).
 */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int opts = lesg_opt_table(L, 2);
  lua_settop(L, 2); /* the store goes to 3 */
  esg_store_opts o = ESG_STORE_OPTS_INIT;
  lstore *ls = lua_newuserdatauv(L, sizeof *ls, 1);
  memset(ls, 0, sizeof *ls);
  ls->clock_ref = LUA_NOREF;
  ls->L = L;
  snprintf(ls->path, sizeof ls->path, "%s", path);
  luaL_setmetatable(L, STORE_MT);
  if (opts) {
    lua_getfield(L, opts, "durability");
    const char *d = luaL_optstring(L, -1, "normal");
    if (strcmp(d, "full") == 0) o.durability = ESG_DURABILITY_FULL;
    else if (strcmp(d, "normal") != 0) return luaL_error(L, "option 'durability' must be \"normal\" or \"full\"");
    lua_pop(L, 1);
    o.busy_timeout_ms = (int)lesg_opt_ms_max(L, opts, "busy_timeout", 0, INT_MAX, 0);
    o.group_commit_ms = (int)lesg_opt_ms_max(L, opts, "group_commit", 0, INT_MAX, 0);
    lua_getfield(L, opts, "group_max");
    if (!lua_isnil(L, -1)) {
      lua_Integer n = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || n < 0 || n > 1000000000)
        return luaL_error(L, "option 'group_max' must be a non-negative integer");
      o.group_commit_max = (int)n;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, opts, "clock") != LUA_TNIL) {
      if (!lua_isfunction(L, -1) && !luaL_getmetafield(L, -1, "__call"))
        return luaL_error(L, "option 'clock' must be a function returning seconds");
      lua_settop(L, 4); /* the function on top */
      ls->clock_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      o.clock = lua_clock;
      o.clock_ud = ls;
    } else {
      lua_pop(L, 1);
    }
  }
  esg_store *s = NULL;
  int rc = esg_store_open(&s, path, &o);
  if (rc == ESG_OK) ls->s = s; /* closed by __gc if the clock raised */
  lesg_check_clock(L, ls);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushvalue(L, 3);
  return 1;
}

/* store:now() -> seconds, as the store's clock reads it. */
static int m_now(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int64_t t = esg_store_now(ls->s);
  lesg_check_clock(L, ls);
  lua_pushnumber(L, lesg_ms_to_s(t));
  return 1;
}

static int m_backend(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  lua_pushstring(L, esg_store_backend(ls->s));
  return 1;
}

static int m_schema_version(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  lua_pushinteger(L, esg_store_schema_version(ls->s));
  return 1;
}

static int m_bytes_written(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  lua_pushinteger(L, (lua_Integer)esg_store_bytes_written(ls->s));
  return 1;
}

static int m_path(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  lua_pushstring(L, ls->path);
  return 1;
}

static int m_begin(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  return lesg_push_ok(L, ls, esg_store_begin(ls->s));
}

static int m_commit(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  return lesg_push_ok(L, ls, esg_store_commit(ls->s));
}

static int m_rollback(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  return lesg_push_ok(L, ls, esg_store_rollback(ls->s));
}

static int m_flush(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  return lesg_push_ok(L, ls, esg_store_flush(ls->s));
}

/* store:flush_due() -> when the group still open is due (seconds, the store's clock), 0 when none is open */
static int m_flush_due(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int64_t next = 0;
  int rc = esg_store_flush_due(ls->s, &next);
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushnumber(L, next ? lesg_ms_to_s(next) : 0);
  return 1;
}

/*
 * store:batch(fn, ...) -> true, fn's results. Runs fn(...) in one transaction:
 * committed when fn returns, rolled back (and the error re-raised) when it raises.
 * If begin or commit fails: nil, msg, code.
 */
static int m_batch(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int rc = esg_store_begin(ls->s);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  int nargs = lua_gettop(L) - 2;
  if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) {
    if (ls->s) {
      ls->L = L;
      esg_store_rollback(ls->s);
    }
    return lua_error(L);
  }
  if (!ls->s) return luaL_error(L, "store closed inside batch");
  ls->L = L;
  rc = esg_store_commit(ls->s);
  if (rc != ESG_OK) {
    esg_store_rollback(ls->s);
    return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  }
  lua_pushboolean(L, 1);
  lua_replace(L, 1); /* true in place of the store, then fn's results */
  return lua_gettop(L);
}

/* -------------------------------------------------------------- claims -- */

const char *lesg_check_key(lua_State *L, int arg) {
  size_t len;
  const char *k = luaL_checklstring(L, arg, &len);
  luaL_argcheck(L, len > 0 && len <= ESG_KEY_MAX && !memchr(k, 0, len), arg, "key must be 1..1024 bytes without NUL");
  return k;
}

/*
 * store:claim(key [, hash [, opts]]) -> outcome, claim
 *   outcome "new" | "duplicate" | "busy"; claim is a table (metatable esg.Claim):
 *   key, token, attempts, lease_until (s), expires (s), result (duplicate: the
 *   stored result string or nil), and methods complete/release/extend.
 * hash: any string up to 64 bytes identifying the payload (nil: no mismatch check).
 * opts: lease (s, default 30), ttl (s, default 3600), wait (s: poll while busy).
 * Errors, among them "EMISMATCH": nil, msg, code.
 */
static int m_claim(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  size_t hlen = 0;
  const char *hash = luaL_optlstring(L, 3, NULL, &hlen);
  luaL_argcheck(L, hlen <= ESG_HASH_MAX, 3, "hash longer than 64 bytes");
  int opts = lesg_opt_table(L, 4);
  int64_t lease = lesg_opt_ms_max(L, opts, "lease", 30000, LESG_MS_MAX, 1);
  int64_t ttl = lesg_opt_ms_max(L, opts, "ttl", 3600000, LESG_MS_MAX, 1);
  int64_t wait = lesg_opt_ms_max(L, opts, "wait", -1, LESG_MS_MAX, 1);
  luaL_argcheck(L, lease > 0, 4, "lease must be > 0");
  luaL_argcheck(L, ttl > 0, 4, "ttl must be > 0");
  esg_claim_info ci;
  memset(&ci, 0, sizeof ci);
  int rc = wait >= 0 ? esg_claim_wait(ls->s, key, hash, hlen, lease, ttl, wait, &ci)
                     : esg_claim(ls->s, key, hash, hlen, lease, ttl, &ci);
  lesg_check_clock(L, ls);
  const char *st;
  switch (rc) {
  case ESG_NEW: st = "new"; break;
  case ESG_DUPLICATE: st = "duplicate"; break;
  case ESG_BUSY: st = "busy"; break;
  default: return lesg_push_fail(L, rc < 0 ? rc : ESG_ESTATE, esg_errmsg(ls->s));
  }
  lua_pushstring(L, st);
  lua_createtable(L, 0, 8);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "store");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "key");
  lua_pushstring(L, st);
  lua_setfield(L, -2, "status");
  if (rc == ESG_NEW) {
    lua_pushinteger(L, (lua_Integer)ci.token);
    lua_setfield(L, -2, "token");
  }
  lua_pushinteger(L, ci.attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, lesg_ms_to_s(ci.lease_until));
  lua_setfield(L, -2, "lease_until");
  lua_pushnumber(L, lesg_ms_to_s(ci.expires));
  lua_setfield(L, -2, "expires");
  if (rc == ESG_DUPLICATE && ci.result) {
    lua_pushlstring(L, ci.result, ci.result_len);
    lua_setfield(L, -2, "result");
  }
  luaL_setmetatable(L, CLAIM_MT);
  return 2;
}

static int64_t check_token(lua_State *L, int arg) {
  int ok;
  lua_Integer t = lua_tointegerx(L, arg, &ok);
  if (!ok) luaL_typeerror(L, arg, "integer token");
  return (int64_t)t;
}

/* Pushes the outcome of a claim that is not new: "duplicate", result | "busy", lease_until; or nil, msg, code. */
static int push_claim_not_new(lua_State *L, lstore *ls, int rc, const esg_claim_info *ci) {
  switch (rc) {
  case ESG_DUPLICATE:
    lua_pushliteral(L, "duplicate");
    if (ci->result) lua_pushlstring(L, ci->result, ci->result_len);
    else lua_pushnil(L);
    return 2;
  case ESG_BUSY:
    lua_pushliteral(L, "busy");
    lua_pushnumber(L, lesg_ms_to_s(ci->lease_until));
    return 2;
  default:
    return lesg_push_fail(L, rc < 0 ? rc : ESG_ESTATE, esg_errmsg(ls->s));
  }
}

/*
 * store:claim_event(ev, lease_s, ttl_s [, key]) -> the gateway's fast claim: no table.
 *   "new", token, key | "duplicate", result (string or nil) | "busy", lease_until (s);
 *   or nil, msg, code. key defaults to the event id; the payload hash is the
 *   SHA-256 of the event's bytes.
 */
static int m_claim_event(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  esg_event **ud = luaL_checkudata(L, 2, EVENT_MT);
  if (!*ud) return luaL_argerror(L, 2, "event is freed");
  lua_Number lease = luaL_checknumber(L, 3), ttl = luaL_checknumber(L, 4);
  luaL_argcheck(L, lease > 0, 3, "lease must be > 0");
  luaL_argcheck(L, ttl > 0, 4, "ttl must be > 0");
  int own_key = !lua_isnoneornil(L, 5);
  const char *key = own_key ? lesg_check_key(L, 5) : esg_event_id(*ud);
  lua_settop(L, 5);
  esg_claim_info ci;
  int64_t lease_ms = lesg_num_ms(L, lease, "lease", LESG_MS_MAX, 1), ttl_ms = lesg_num_ms(L, ttl, "ttl", LESG_MS_MAX, 1);
  int rc = esg_claim(ls->s, key, esg_event_hash(*ud), 32, lease_ms, ttl_ms, &ci);
  lesg_check_clock(L, ls);
  if (rc != ESG_NEW) return push_claim_not_new(L, ls, rc, &ci);
  lua_pushliteral(L, "new");
  lua_pushinteger(L, (lua_Integer)ci.token);
  if (own_key) lua_pushvalue(L, 5);
  else lua_pushstring(L, key);
  return 3;
}

void lesg_push_owned_claim(lua_State *L, int store, const char *key, int64_t token) {
  store = lua_absindex(L, store);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, store);
  lua_setfield(L, -2, "store");
  lua_pushstring(L, key);
  lua_setfield(L, -2, "key");
  lua_pushinteger(L, (lua_Integer)token);
  lua_setfield(L, -2, "token");
  lua_pushliteral(L, "new");
  lua_setfield(L, -2, "status");
  luaL_setmetatable(L, CLAIM_MT);
}

/* store:owned_claim(key, token) -> an esg.Claim for a claim the caller owns (from claim_event). */
static int m_owned_claim(lua_State *L) {
  lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  lesg_push_owned_claim(L, 1, key, check_token(L, 3));
  return 1;
}


/* store:complete(key, token [, result]) -> true, or nil, msg, "ETOKEN". result: string, or a value stored as JSON. */
static int m_complete(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  int64_t token = check_token(L, 3);
  size_t len = 0;
  const char *res = NULL;
  if (!lua_isnoneornil(L, 4)) res = lesg_json_arg(L, 4, &len);
  return lesg_push_ok(L, ls, esg_complete(ls->s, key, token, res, len));
}

/* store:release(key, token) -> true, or nil, msg, "ETOKEN". */
static int m_release(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  return lesg_push_ok(L, ls, esg_release(ls->s, key, check_token(L, 3)));
}

/* store:extend(key, token, lease_s) -> true, or nil, msg, "ETOKEN". */
static int m_extend(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  int64_t token = check_token(L, 3);
  lua_Number lease = luaL_checknumber(L, 4);
  luaL_argcheck(L, lease > 0, 4, "lease must be > 0");
  int64_t lease_ms = lesg_num_ms(L, lease, "lease", LESG_MS_MAX, 1);
  return lesg_push_ok(L, ls, esg_claim_extend(ls->s, key, token, lease_ms));
}

/* store:purge_claims() -> number deleted */
static int m_purge_claims(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int64_t n = 0;
  int rc = esg_claims_purge(ls->s, &n);
  return lesg_push_count(L, ls, rc, n);
}

/* Claim methods: claim:complete([result]), claim:release(), claim:extend(lease). */
static void claim_fields(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "store");
  lua_getfield(L, 1, "key");
  lua_getfield(L, 1, "token");
  if (lua_isnil(L, -1)) luaL_error(L, "this claim is not owned (outcome was not \"new\")");
}

static int c_complete(lua_State *L) {
  lua_settop(L, 2);
  claim_fields(L);     /* 3 store, 4 key, 5 token */
  lua_pushvalue(L, 2); /* 6 result */
  lua_remove(L, 1);
  lua_remove(L, 1);    /* store, key, token, result */
  return m_complete(L);
}

static int c_release(lua_State *L) {
  lua_settop(L, 1);
  claim_fields(L);
  lua_remove(L, 1);
  return m_release(L);
}

static int c_extend(lua_State *L) {
  lua_settop(L, 2);
  claim_fields(L);
  lua_pushvalue(L, 2);
  lua_remove(L, 1);
  lua_remove(L, 1);
  return m_extend(L);
}

/* ----------------------------------------------------------- event log -- */

void lesg_push_stored(lua_State *L, const esg_stored_event *e, int decode) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, e->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, e->type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)e->timestamp);
  lua_setfield(L, -2, "timestamp");
  if (e->corr_key) {
    lua_pushstring(L, e->corr_key);
    lua_setfield(L, -2, "key");
  }
  lua_pushlstring(L, e->json, e->json_len);
  lua_setfield(L, -2, "json");
  if (e->expires) {
    lua_pushnumber(L, lesg_ms_to_s(e->expires));
    lua_setfield(L, -2, "expires");
  }
  if (decode) {
    lesg_json_push(L, e->json, e->json_len);
    lua_setfield(L, -2, "event");
  }
}

/*
 * A list of the items (stored events, faults) a libesg callback hands over, built
 * protected in a new table: the error of a failed append is raised after libesg returns.
 */
typedef struct collect {
  lua_State *L;
  void (*push)(lua_State *L, const void *item, int decode); /* pushes one item as a table */
  int decode;
  lua_Integer limit; /* 0 = all */
  lua_Integer n;
  int tbl;
  int failed; /* the error object is on top of L */
} collect;

/* Pushes the (empty) list of c. */
static void collect_begin(lua_State *L, collect *c) {
  lua_newtable(L);
  c->tbl = lua_gettop(L);
}

/* Appends an item to the table at 1; called protected. Args: table, collect*, item*. */
static int append_item(lua_State *L) {
  const collect *c = lua_touserdata(L, 2);
  const void *item = lua_touserdata(L, 3);
  lua_settop(L, 1);
  c->push(L, item, c->decode);
  lua_rawseti(L, 1, (lua_Integer)lua_rawlen(L, 1) + 1);
  return 0;
}

/* The body of the libesg callbacks: 0 to go on, 1 to stop. */
static int collect_item(collect *c, const void *item) {
  lua_State *L = c->L;
  if (c->limit && c->n >= c->limit) return 1;
  if (!lua_checkstack(L, 4)) return 1;
  lua_pushcfunction(L, append_item);
  lua_pushvalue(L, c->tbl);
  lua_pushlightuserdata(L, c);
  lua_pushlightuserdata(L, (void *)item);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    c->failed = 1;
    return 1;
  }
  c->n++;
  return 0;
}

/* Returns the list after the libesg call that filled it returned rc; or nil, msg, code. */
static int collect_list(lua_State *L, lstore *ls, collect *c, int rc) {
  if (c->failed) return lua_error(L);
  lesg_check_clock(L, ls);
  if (rc < 0 && !(rc == ESG_ECALLBACK && c->limit && c->n >= c->limit)) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_settop(L, c->tbl);
  return 1;
}

/* Returns the list's first item after a lookup that returned rc: nil when absent, or nil, msg, code. */
static int collect_one(lua_State *L, lstore *ls, collect *c, int rc) {
  if (c->failed) return lua_error(L);
  lesg_check_clock(L, ls);
  if (rc == ESG_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_rawgeti(L, c->tbl, 1);
  return 1;
}

static void push_stored_item(lua_State *L, const void *e, int decode) { lesg_push_stored(L, e, decode); }

static int collect_cb(void *ud, const esg_stored_event *e) { return collect_item(ud, e); }

/* The event argument of put: an esg.Event, a JSON string or a table. Returns an event to free (or NULL). */
static esg_event *event_arg(lua_State *L, int arg, const esg_event **ev, int *rc) {
  esg_event **ud = luaL_testudata(L, arg, EVENT_MT);
  if (ud) {
    if (!*ud) luaL_argerror(L, arg, "event is freed");
    *ev = *ud;
    *rc = ESG_OK;
    return NULL;
  }
  size_t len;
  const char *json = lesg_json_arg(L, arg, &len);
  esg_event *own = NULL;
  *rc = esg_event_parse(json, len, &own);
  *ev = own;
  return own;
}

/*
 * store:put(event [, opts]) -> "stored" | "duplicate", or nil, msg, code.
 * event: an esg.Event, a JSON string or a table. opts: key (correlation key;
 * default partitionKey, else id), ttl (s, default 0 = never expires).
 */
static int m_put(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int opts = lesg_opt_table(L, 3);
  const char *key = NULL;
  if (opts) {
    lua_getfield(L, opts, "key");
    if (!lua_isnil(L, -1)) {
      size_t klen;
      key = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &klen) : NULL;
      if (!key || klen == 0 || klen > ESG_KEY_MAX || memchr(key, 0, klen))
        return luaL_error(L, "store:put option 'key' must be a string of 1..1024 bytes without NUL");
    } /* stays on the stack */
  }
  int64_t ttl = lesg_opt_ms(L, opts, "ttl", 0);
  const esg_event *ev;
  int rc;
  esg_event *own = event_arg(L, 2, &ev, &rc);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  ls->L = L;
  rc = esg_event_put(ls->s, ev, key, ttl);
  esg_event_free(own);
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushstring(L, rc == ESG_DUPLICATE ? "duplicate" : "stored");
  return 1;
}

/*
 * store:events(key [, opts]) -> list of records {id, type, timestamp (ms, as in
 * the envelope), key, json, expires (s, absent = never), event (opts.decode)}
 * in (timestamp, id) order; or nil, msg, code.
 */
static int m_events(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  int opts = lesg_opt_table(L, 3);
  collect c = {.L = L, .push = push_stored_item, .decode = lesg_opt_bool(L, opts, "decode")};
  collect_begin(L, &c);
  return collect_list(L, ls, &c, esg_events_by_key(ls->s, key, collect_cb, &c));
}

/* store:event(id [, opts]) -> record (see store:events), or nil when absent, or nil, msg, code. */
static int m_event(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *id = lesg_check_key(L, 2);
  int opts = lesg_opt_table(L, 3);
  collect c = {.L = L, .push = push_stored_item, .decode = lesg_opt_bool(L, opts, "decode")};
  collect_begin(L, &c);
  return collect_one(L, ls, &c, esg_event_get(ls->s, id, collect_cb, &c));
}

typedef struct purge_lua {
  lua_State *L;
  int fn;
  int failed;
} purge_lua;

static int call_purge_fn(lua_State *L) {
  const esg_stored_event *e = lua_touserdata(L, 2);
  lua_settop(L, 1);
  lesg_push_stored(L, e, 1);
  lua_call(L, 1, 1);
  lua_pushboolean(L, lua_isnil(L, -1) || lua_toboolean(L, -1));
  return 1;
}

static int purge_cb(void *ud, const esg_stored_event *e) {
  purge_lua *p = ud;
  lua_State *L = p->L;
  if (p->failed || !lua_checkstack(L, 4)) return 1;
  lua_pushcfunction(L, call_purge_fn);
  lua_pushvalue(L, p->fn);
  lua_pushlightuserdata(L, (void *)e);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    p->failed = 1; /* error object stays on top; keep the rest */
    return 1;
  }
  int del = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return !del;
}

/*
 * store:purge_events([fn]) -> number deleted. Deletes expired events; fn(record)
 * is first called with the `<type>-expired` event (record.event decoded); if it
 * returns false the event is kept for the next purge. An error in fn is raised
 * after the purge stops calling it.
 */
static int m_purge_events(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  purge_lua p = {L, 0, 0};
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TFUNCTION);
    p.fn = 2;
  }
  lua_settop(L, 2);
  int64_t n = 0;
  int rc = esg_events_purge(ls->s, p.fn ? purge_cb : NULL, &p, &n);
  if (p.failed) return lua_error(L);
  return lesg_push_count(L, ls, rc, n);
}

/* ------------------------------------------------------------ entities -- */

static int64_t check_version(lua_State *L, int arg) {
  int ok;
  lua_Integer v = lua_tointegerx(L, arg, &ok);
  if (!ok) luaL_typeerror(L, arg, "integer version");
  return (int64_t)v;
}

/* Pushes the outcome of an entity write: "applied" | "stale", or nil, msg, code. */
static int push_applied(lua_State *L, lstore *ls, int rc) {
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushstring(L, rc == ESG_STALE ? "stale" : "applied");
  return 1;
}

/* store:upsert(key, version, doc) -> "applied" | "stale", or nil, msg, code. doc: a table or a JSON object string. */
static int m_upsert(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  int64_t version = check_version(L, 3);
  size_t len;
  const char *doc = lesg_json_arg(L, 4, &len);
  ls->L = L;
  return push_applied(L, ls, esg_entity_upsert(ls->s, key, version, doc, len));
}

/*
 * store:get(key [, opts]) -> {version, deleted, doc} or nil when absent, or nil, msg, code.
 * doc is decoded to a table unless opts.raw (then the JSON string); absent for a tombstone.
 */
static int m_get(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  int opts = lesg_opt_table(L, 3);
  int raw = lesg_opt_bool(L, opts, "raw");
  esg_entity e;
  memset(&e, 0, sizeof e);
  int rc = esg_entity_get(ls->s, key, &e);
  lesg_check_clock(L, ls);
  if (rc == ESG_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)e.version);
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, e.deleted);
  lua_setfield(L, -2, "deleted");
  if (!e.deleted && e.doc) {
    if (raw) lua_pushlstring(L, e.doc, e.doc_len);
    else lesg_json_push(L, e.doc, e.doc_len);
    lua_setfield(L, -2, "doc");
  }
  return 1;
}

/* store:delete(key, version) -> "applied" | "stale", or nil, msg, code. Leaves a tombstone. */
static int m_delete(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  const char *key = lesg_check_key(L, 2);
  return push_applied(L, ls, esg_entity_delete(ls->s, key, check_version(L, 3)));
}

/* -------------------------------------------------------------- faults -- */

static void push_fault(lua_State *L, const esg_fault *f) {
  lua_createtable(L, 0, 9);
  lua_pushinteger(L, (lua_Integer)f->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, f->event_id);
  lua_setfield(L, -2, "event_id");
  lua_pushstring(L, f->stage);
  lua_setfield(L, -2, "stage");
  lua_pushstring(L, f->error);
  lua_setfield(L, -2, "error");
  lua_pushinteger(L, f->http_status);
  lua_setfield(L, -2, "http_status");
  lua_pushinteger(L, f->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, lesg_ms_to_s(f->first_attempt));
  lua_setfield(L, -2, "first_attempt");
  lua_pushnumber(L, lesg_ms_to_s(f->last_attempt));
  lua_setfield(L, -2, "last_attempt");
  if (f->event) {
    lua_pushlstring(L, f->event, f->event_len);
    lua_setfield(L, -2, "event");
  }
}

static void push_fault_item(lua_State *L, const void *f, int decode) {
  (void)decode;
  push_fault(L, f);
}

static int fault_collect_cb(void *ud, const esg_fault *f) { return collect_item(ud, f); }

/* A string field of a table (required: raises when absent); NULL when optional and absent. */
static const char *field_str(lua_State *L, int t, const char *k, int required, size_t *len) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (required) luaL_error(L, "fault field '%s' is required", k);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "fault field '%s' must be a string", k);
  return lua_tolstring(L, -1, len); /* stays on the stack (__index may have made it) */
}

static lua_Integer field_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  lua_Integer v = 0;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < 0 || v > 2000000000) luaL_error(L, "fault field '%s' must be a non-negative integer", k);
  }
  lua_pop(L, 1);
  return v;
}

/*
 * store:fault_record{event_id=, stage=, error= [, http_status=, attempts=,
 * first_attempt= (s), last_attempt= (s), event= string or table]} -> id, or nil, msg, code.
 */
static int m_fault_record(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  esg_fault f;
  memset(&f, 0, sizeof f);
  f.event_id = field_str(L, 2, "event_id", 1, NULL);
  f.stage = field_str(L, 2, "stage", 1, NULL);
  f.error = field_str(L, 2, "error", 1, NULL);
  f.http_status = (int)field_int(L, 2, "http_status");
  f.attempts = (int)field_int(L, 2, "attempts");
  f.first_attempt = lesg_opt_ms(L, 2, "first_attempt", 0);
  f.last_attempt = lesg_opt_ms(L, 2, "last_attempt", 0);
  if (lua_getfield(L, 2, "event") != LUA_TNIL) {
    f.event = lesg_json_arg(L, lua_gettop(L), &f.event_len); /* the string stays on the stack */
  }
  int64_t id = 0;
  int rc = esg_fault_record(ls->s, &f, &id);
  lesg_check_clock(L, ls);
  if (rc < 0) return lesg_push_fail(L, rc, esg_errmsg(ls->s));
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/* store:faults([{limit = n}]) -> list of fault tables, oldest first; or nil, msg, code. */
static int m_faults(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int opts = lesg_opt_table(L, 2);
  collect c = {.L = L, .push = push_fault_item};
  if (opts) {
    lua_getfield(L, opts, "limit");
    c.limit = luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  collect_begin(L, &c);
  return collect_list(L, ls, &c, esg_faults_list(ls->s, fault_collect_cb, &c));
}

/* store:fault(id) -> fault table, or nil when absent, or nil, msg, code. */
static int m_fault(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  collect c = {.L = L, .push = push_fault_item};
  lua_settop(L, 2);
  collect_begin(L, &c);
  return collect_one(L, ls, &c, esg_fault_get(ls->s, (int64_t)id, fault_collect_cb, &c));
}

/* store:fault_delete(id) -> true, or nil when absent, or nil, msg, code. */
static int m_fault_delete(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  return lesg_push_ok_or_nil(L, ls, esg_fault_delete(ls->s, (int64_t)id));
}

/* store:purge_faults([before_s]) -> number deleted: faults whose last attempt is older than before (default: all). */
static int m_purge_faults(lua_State *L) {
  lstore *ls = lesg_check_store(L, 1);
  int64_t before = INT64_MAX;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number b = luaL_checknumber(L, 2);
    luaL_argcheck(L, b >= 0 && esg_ms_from_seconds(b, &before) == ESG_OK, 2, "before must be seconds since the epoch");
  }
  int64_t n = 0;
  int rc = esg_faults_purge(ls->s, before, &n);
  return lesg_push_count(L, ls, rc, n);
}

/* --------------------------------------------------------------- event -- */

static esg_event *check_event(lua_State *L, int arg) {
  esg_event **ud = luaL_checkudata(L, arg, EVENT_MT);
  if (!*ud) luaL_error(L, "attempt to use a freed event");
  return *ud;
}

/* Pushes a new esg.Event parsed from json; or nil, msg, code. */
int lesg_push_event(lua_State *L, const char *json, size_t len) {
  esg_event **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, EVENT_MT);
  int rc = esg_event_parse(json, len, ud);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  return 1;
}

/* esg.parse(json) -> event, or nil, msg, code ("EJSON", "EEVENT", "ETOOBIG"). json: string or table. */
static int l_parse(lua_State *L) {
  size_t len;
  const char *json = lesg_json_arg(L, 1, &len);
  return lesg_push_event(L, json, len);
}

static int e_gc(lua_State *L) {
  esg_event **ud = luaL_checkudata(L, 1, EVENT_MT);
  esg_event_free(*ud);
  *ud = NULL;
  return 0;
}

/* Pushes a SHA-256: 64 hex chars, or the 32 bytes when raw. */
static void push_sha256(lua_State *L, const uint8_t *h, int raw) {
  if (raw) {
    lua_pushlstring(L, (const char *)h, 32);
  } else {
    char hex[65];
    esg_hex(h, 32, hex);
    lua_pushstring(L, hex);
  }
}

static int e_id(lua_State *L) {
  lua_pushstring(L, esg_event_id(check_event(L, 1)));
  return 1;
}

static int e_type(lua_State *L) {
  lua_pushstring(L, esg_event_type(check_event(L, 1)));
  return 1;
}

/* ev:timestamp() -> integer epoch ms, exactly as in the envelope. */
static int e_timestamp(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)esg_event_timestamp(check_event(L, 1)));
  return 1;
}

static int e_partition_key(lua_State *L) {
  const char *pk = esg_event_partition_key(check_event(L, 1));
  if (pk) lua_pushstring(L, pk);
  else lua_pushnil(L);
  return 1;
}

static int e_json(lua_State *L) {
  size_t len;
  const char *j = esg_event_json(check_event(L, 1), &len);
  lua_pushlstring(L, j, len);
  return 1;
}

/* ev:hash([raw]) -> SHA-256 of the envelope's bytes: 64 hex chars, or 32 bytes when raw. */
static int e_hash(lua_State *L) {
  push_sha256(L, esg_event_hash(check_event(L, 1)), lua_toboolean(L, 2));
  return 1;
}

/* ev:decode() -> the envelope as a table. */
static int e_decode(lua_State *L) {
  size_t len;
  const char *j = esg_event_json(check_event(L, 1), &len);
  lesg_json_push(L, j, len);
  return 1;
}

static int e_tostring(lua_State *L) {
  esg_event **ud = luaL_checkudata(L, 1, EVENT_MT);
  if (*ud) lua_pushfstring(L, "esg.Event (%s %s)", esg_event_type(*ud), esg_event_id(*ud));
  else lua_pushliteral(L, "esg.Event (freed)");
  return 1;
}

/* ------------------------------------------------------ hashes and ids -- */

/* esg.sha256(data [, raw]) -> 64 hex chars, or 32 bytes when raw. */
static int l_sha256(lua_State *L) {
  size_t len;
  const char *d = luaL_checklstring(L, 1, &len);
  uint8_t h[32];
  esg_sha256(d, len, h);
  push_sha256(L, h, lua_toboolean(L, 2));
  return 1;
}

/* esg.content_hash(json) -> canonical content hash (hex), or nil, msg, "EJSON". json: string or table. */
static int l_content_hash(lua_State *L) {
  size_t len;
  const char *j = lesg_json_arg(L, 1, &len);
  char out[65];
  int rc = esg_content_hash(j, len, out);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushstring(L, out);
  return 1;
}

/* esg.uuid5(name [, namespace]) -> UUID v5 text; namespace defaults to esg.NS_EVENT. */
static int l_uuid5(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  const char *ns = luaL_optstring(L, 2, ESG_UUID_NS_EVENT);
  char out[37];
  int rc = esg_uuid5(ns, name, len, out);
  if (rc != ESG_OK) return luaL_argerror(L, 2, "namespace is not a UUID");
  lua_pushstring(L, out);
  return 1;
}

/* esg.now() -> the real clock, in seconds. */
static int l_now(lua_State *L) {
  lua_pushnumber(L, lesg_ms_to_s(esg_clock_real(NULL)));
  return 1;
}

/* esg.strerror(code) -> text; code is an integer or a status name. */
static int l_strerror(lua_State *L) {
  int code;
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_getfield(L, lua_upvalueindex(1), lua_tostring(L, 1));
    if (!lua_isinteger(L, -1)) return luaL_argerror(L, 1, "unknown status name");
    code = (int)lua_tointeger(L, -1);
  } else {
    code = (int)luaL_checkinteger(L, 1);
  }
  lua_pushstring(L, esg_strerror(code));
  return 1;
}

/* ------------------------------------------------------------ webhooks -- */

/* esg.webhook.sign(secret, msg_id, timestamp_s, payload) -> "v1,<base64>", or nil, msg, code. */
static int w_sign(lua_State *L) {
  const char *secret = luaL_checkstring(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lua_Integer ts = luaL_checkinteger(L, 3);
  size_t len;
  const char *payload = luaL_checklstring(L, 4, &len);
  char out[ESG_WEBHOOK_SIGNATURE_SIZE];
  int rc = esg_webhook_sign(secret, id, (int64_t)ts, payload, len, out, sizeof out);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushstring(L, out);
  return 1;
}

/* Finds a header by name, case-insensitively, in the table at idx. Returns NULL if absent. */
static const char *find_header(lua_State *L, int idx, const char *name) {
  const char *found = NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING && strcasecmp(lua_tostring(L, -2), name) == 0 &&
        lua_type(L, -1) == LUA_TSTRING) {
      found = lua_tostring(L, -1); /* anchored in the table */
      lua_pop(L, 2);
      break;
    }
    lua_pop(L, 1);
  }
  return found;
}

/*
 * esg.webhook.verify(secrets, headers, payload [, opts]) -> true, or nil, msg, code
 * (code "ETIMEDOUT" for a timestamp outside the tolerance, "ESIGNATURE" when no
 * signature matches, "EINVAL" for malformed input).
 * secrets: a string or a list; headers: a table with webhook-id, webhook-timestamp,
 * webhook-signature (names case-insensitive); opts: now (s, default real time),
 * tolerance (s, default 300).
 */
static int w_verify(lua_State *L) {
  lua_settop(L, 4); /* the secrets' array goes above the arguments */
  const char *one[1];
  const char **secrets = one;
  size_t n = 0;
  if (lua_type(L, 1) == LUA_TSTRING) {
    one[0] = lua_tostring(L, 1);
    n = 1;
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (size_t)lua_rawlen(L, 1);
    luaL_argcheck(L, n > 0, 1, "no secrets");
    secrets = lua_newuserdatauv(L, n * sizeof *secrets, 0);
    for (size_t i = 0; i < n; i++) {
      lua_rawgeti(L, 1, (lua_Integer)i + 1);
      if (lua_type(L, -1) != LUA_TSTRING) return luaL_argerror(L, 1, "secrets must be strings");
      secrets[i] = lua_tostring(L, -1);
      lua_pop(L, 1); /* anchored in the table */
    }
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t len;
  const char *payload = luaL_checklstring(L, 3, &len);
  int opts = lesg_opt_table(L, 4);
  int64_t now_s = esg_clock_real(NULL) / 1000, tol = 0;
  if (opts) {
    int64_t now_ms = lesg_opt_ms(L, opts, "now", -1);
    if (now_ms >= 0) now_s = now_ms / 1000;
    tol = lesg_opt_ms(L, opts, "tolerance", 0) / 1000;
  }
  const char *id = find_header(L, 2, ESG_WEBHOOK_HEADER_ID);
  const char *ts = find_header(L, 2, ESG_WEBHOOK_HEADER_TIMESTAMP);
  const char *sig = find_header(L, 2, ESG_WEBHOOK_HEADER_SIGNATURE);
  int rc = esg_webhook_verify(secrets, n, id, ts, sig, payload, len, now_s, tol);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushboolean(L, 1);
  return 1;
}

/* esg.webhook.secret() -> a new random "whsec_..." secret. */
static int w_secret(lua_State *L) {
  char out[ESG_WEBHOOK_SECRET_SIZE];
  int rc = esg_webhook_secret_generate(out, sizeof out);
  if (rc != ESG_OK) return lesg_push_fail(L, rc, esg_errmsg(NULL));
  lua_pushstring(L, out);
  return 1;
}

/* -------------------------------------------------------------- module -- */

static const luaL_Reg store_methods[] = {
    {"close", m_close},     {"isclosed", m_isclosed},
    {"now", m_now},         {"backend", m_backend},
    {"schema_version", m_schema_version},
    {"bytes_written", m_bytes_written},
    {"path", m_path},       {"begin", m_begin},
    {"commit", m_commit},   {"rollback", m_rollback},
    {"flush", m_flush},     {"flush_due", m_flush_due},     {"batch", m_batch},
    {"claim", m_claim},     {"complete", m_complete},
    {"claim_event", m_claim_event}, {"owned_claim", m_owned_claim},
    {"release", m_release}, {"extend", m_extend},
    {"purge_claims", m_purge_claims},
    {"put", m_put},         {"events", m_events},
    {"event", m_event},     {"purge_events", m_purge_events},
    {"upsert", m_upsert},   {"get", m_get},
    {"delete", m_delete},
    {"fault_record", m_fault_record}, {"faults", m_faults},
    {"fault", m_fault},     {"fault_delete", m_fault_delete},
    {"purge_faults", m_purge_faults},
    {NULL, NULL}};

static const luaL_Reg store_meta[] = {{"__gc", m_gc}, {"__close", m_gc}, {"__tostring", m_tostring}, {NULL, NULL}};


static const luaL_Reg claim_methods[] = {
    {"complete", c_complete}, {"release", c_release}, {"extend", c_extend}, {NULL, NULL}};

static const luaL_Reg event_methods[] = {
    {"id", e_id},     {"type", e_type}, {"timestamp", e_timestamp}, {"partition_key", e_partition_key},
    {"json", e_json}, {"hash", e_hash}, {"decode", e_decode},       {NULL, NULL}};

static const luaL_Reg event_meta[] = {{"__gc", e_gc}, {"__tostring", e_tostring}, {NULL, NULL}};

static const luaL_Reg module_fns[] = {
    {"open", l_open},     {"parse", l_parse}, {"sha256", l_sha256}, {"content_hash", l_content_hash},
    {"uuid5", l_uuid5},   {"now", l_now},     {NULL, NULL}};

static const luaL_Reg webhook_fns[] = {{"sign", w_sign}, {"verify", w_verify}, {"secret", w_secret}, {NULL, NULL}};

/* The store methods of lfeat.c and lgateway.c. */
static void lesg_store_more(lua_State *L) {
  lesg_feat_methods(L);
  lesg_gateway_methods(L);
}

/* Registers the metatable name: meta, and methods (plus those more adds) under __index. */
void lesg_new_type(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods,
                   void (*more)(lua_State *L)) {
  luaL_newmetatable(L, name);
  if (meta) luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  if (more) more(L);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen_esg(lua_State *L) {
  if (esg_version_number() != ESG_VERSION_NUMBER)
    return luaL_error(L, "esg: built for libesg %s but linked with %s", ESG_VERSION_STRING, esg_version());
  lesg_new_type(L, STORE_MT, store_meta, store_methods, lesg_store_more);
  lesg_new_type(L, EVENT_MT, event_meta, event_methods, NULL);
  lesg_new_type(L, CLAIM_MT, NULL, claim_methods, NULL);

  luaL_newlib(L, module_fns);
  lua_pushliteral(L, "esg " ESG_VERSION_STRING);
  lua_setfield(L, -2, "_VERSION");
  lua_pushstring(L, esg_version());
  lua_setfield(L, -2, "version");
  lua_pushliteral(L, ESG_UUID_NS_EVENT);
  lua_setfield(L, -2, "NS_EVENT");
  lua_pushinteger(L, ESG_KEY_MAX);
  lua_setfield(L, -2, "KEY_MAX");
  lua_pushinteger(L, ESG_EVENT_MAX_BYTES);
  lua_setfield(L, -2, "EVENT_MAX_BYTES");

  /* status codes: esg.status.DUPLICATE == 2 and esg.status[2] == "DUPLICATE" */
  lua_newtable(L);
#define LESG_STATUS(name, value, text)  \
  lua_pushinteger(L, value);            \
  lua_setfield(L, -2, #name);           \
  lua_pushliteral(L, #name);            \
  lua_rawseti(L, -2, value);
  ESG_STATUS_MAP(LESG_STATUS)
#undef LESG_STATUS
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, l_strerror, 1);
  lua_setfield(L, -3, "strerror");
  lua_setfield(L, -2, "status");

  lua_newtable(L);
  lesg_json_open(L);
  lua_getfield(L, -1, "null");
  lua_setfield(L, -3, "null");
  lua_setfield(L, -2, "json");

  luaL_newlib(L, webhook_fns);
  lua_setfield(L, -2, "webhook");
  lesg_feat_open(L);
  lesg_gateway_open(L);
  return 1;
}
