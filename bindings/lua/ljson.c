/*
 * JSON <-> Lua for the esg module, on cJSON.
 *
 * Objects become tables, arrays become tables carrying the esg.json.array
 * metatable (so they encode back as arrays, even when empty), null becomes
 * esg.null (a light userdata). Integral numbers decode as Lua integers.
 * Encoding: a table is an array if it carries the array metatable or if its
 * keys are exactly 1..n (n > 0); otherwise an object, whose keys must be
 * strings. Integers are written exactly (not through a double).
 *
 * cJSON trees live in a "box" userdata while Lua code that may raise (memory
 * errors) runs, so a longjmp never leaks them.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <lauxlib.h>
#include "lesg.h"

#define BOX_MT "esg.json.box"
#define MAX_DEPTH 512

typedef struct box {
  cJSON *root;
  char *text;
} box;

static int box_gc(lua_State *L) {
  box *b = luaL_checkudata(L, 1, BOX_MT);
  cJSON_Delete(b->root);
  b->root = NULL;
  if (b->text) cJSON_free(b->text);
  b->text = NULL;
  return 0;
}

static box *box_new(lua_State *L) {
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->root = NULL;
  b->text = NULL;
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

static void to_lua(lua_State *L, const cJSON *j, int depth) {
  if (depth > MAX_DEPTH) luaL_error(L, "JSON nested too deeply");
  luaL_checkstack(L, 3, "JSON nested too deeply");
  if (cJSON_IsNull(j)) {
    lua_pushlightuserdata(L, NULL);
  } else if (cJSON_IsFalse(j)) {
    lua_pushboolean(L, 0);
  } else if (cJSON_IsTrue(j)) {
    lua_pushboolean(L, 1);
  } else if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    if (d == floor(d) && d >= -9.2233720368547758e18 && d < 9.2233720368547758e18)
      lua_pushinteger(L, (lua_Integer)d);
    else
      lua_pushnumber(L, d);
  } else if (cJSON_IsString(j)) {
    lua_pushstring(L, j->valuestring);
  } else if (cJSON_IsArray(j)) {
    lua_createtable(L, cJSON_GetArraySize(j), 0);
    lua_Integer i = 1;
    for (const cJSON *c = j->child; c; c = c->next) {
      to_lua(L, c, depth + 1);
      lua_rawseti(L, -2, i++);
    }
    luaL_setmetatable(L, LESG_ARRAY_MT);
  } else if (cJSON_IsObject(j)) {
    lua_createtable(L, 0, 4);
    for (const cJSON *c = j->child; c; c = c->next) {
      lua_pushstring(L, c->string);
      to_lua(L, c, depth + 1);
      lua_rawset(L, -3);
    }
  } else {
    lua_pushnil(L);
  }
}

void lesg_json_push(lua_State *L, const char *json, size_t len) {
  box *b = box_new(L);
  b->root = cJSON_ParseWithLength(json, len);
  if (!b->root) {
    const char *at = cJSON_GetErrorPtr();
    size_t off = (at && at >= json && at <= json + len) ? (size_t)(at - json) : 0;
    luaL_error(L, "invalid JSON near byte %d", (int)off);
  }
  to_lua(L, b->root, 0);
  cJSON_Delete(b->root);
  b->root = NULL;
  lua_remove(L, -2); /* the box */
}

/* ------------------------------------------------------------ lazy -- */

/*
 * A lazy object: a table that holds the JSON text of an object under a private
 * key and decodes it into itself on first access (index, assignment, pairs, #),
 * then drops its metatable and is a plain table. Until then the encoder writes
 * the text as it is, so an object nobody looked at costs neither a decode nor an
 * encode. next() and rawget() see no fields before the first access.
 */
static const char lazy_key = 0; /* its address is the private key */
static const char lazy_mt_key = 0; /* registry[&lazy_mt_key]: the metatable, found without a name lookup */

static int is_lazy(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
  int yes = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return yes;
}

/* Decodes the lazy table at idx (absolute) into itself; a no-op for a plain table. */
static void lazy_materialise(lua_State *L, int idx) {
  if (lua_rawgetp(L, idx, &lazy_key) != LUA_TSTRING) {
    lua_pop(L, 1);
    return;
  }
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  box *b = box_new(L);
  b->root = cJSON_ParseWithLength(s, len);
  if (!b->root || !cJSON_IsObject(b->root)) luaL_error(L, "lazy JSON object: not a JSON object");
  lua_pushnil(L);
  lua_rawsetp(L, idx, &lazy_key);
  lua_pushnil(L);
  lua_setmetatable(L, idx);
  for (const cJSON *c = b->root->child; c; c = c->next) {
    lua_pushstring(L, c->string);
    to_lua(L, c, 1);
    lua_rawset(L, idx);
  }
  cJSON_Delete(b->root);
  b->root = NULL;
  lua_pop(L, 2); /* the box, the text */
}

static int lazy_index(lua_State *L) {
  lazy_materialise(L, 1);
  lua_settop(L, 2);
  lua_rawget(L, 1);
  return 1;
}

static int lazy_newindex(lua_State *L) {
  lazy_materialise(L, 1);
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

static int lazy_len(lua_State *L) {
  lazy_materialise(L, 1);
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
  return 1;
}

static int lazy_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int lazy_pairs(lua_State *L) {
  lazy_materialise(L, 1);
  lua_pushcfunction(L, lazy_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

void lesg_json_lazy(lua_State *L, int str) {
  str = lua_absindex(L, str);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, str);
  lua_rawsetp(L, -2, &lazy_key);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
  lua_setmetatable(L, -2);
}

/* esg.json.lazy(text) -> a lazy object (text must be a JSON object; checked on first access). */
static int l_lazy(lua_State *L) {
  luaL_checkstring(L, 1);
  lesg_json_lazy(L, 1);
  return 1;
}

/* esg.json.islazy(t) -> true while t has not been decoded yet. */
static int l_islazy(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && is_lazy(L, 1));
  return 1;
}

/* esg.json.materialise(t) -> t, decoded (a plain table from now on). */
static int l_materialise(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lazy_materialise(L, 1);
  return 1;
}

/* Is the table at idx (absolute) an array? Sets *n to its length. */
static int is_array(lua_State *L, int idx, lua_Integer *n) {
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, LESG_ARRAY_MT);
    int arr = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (arr) {
      *n = (lua_Integer)lua_rawlen(L, idx);
      return 1;
    }
  }
  lua_Integer count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER || !lua_isinteger(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k < 1) {
      lua_pop(L, 1);
      return 0;
    }
    if (k > max) max = k;
    count++;
  }
  *n = max;
  return count > 0 && count == max;
}

static cJSON *to_json(lua_State *L, int idx, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > MAX_DEPTH) luaL_error(L, "cannot encode: nested too deeply (or a cycle)");
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return cJSON_CreateNull();
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return cJSON_CreateNull();
    break;
  case LUA_TBOOLEAN:
    return cJSON_CreateBool(lua_toboolean(L, idx));
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      char buf[32];
      snprintf(buf, sizeof buf, "%" PRId64, (int64_t)lua_tointeger(L, idx));
      return cJSON_CreateRaw(buf);
    } else {
      double d = lua_tonumber(L, idx);
      if (!isfinite(d)) luaL_error(L, "cannot encode a non-finite number as JSON");
      char buf[40]; /* the shortest text that reads back as the same double */
      for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
      }
      return cJSON_CreateRaw(buf);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (memchr(s, 0, len)) luaL_error(L, "cannot encode a string with a NUL byte as JSON");
    return cJSON_CreateString(s);
  }
  case LUA_TTABLE:
    return NULL; /* handled by the caller, which owns attachment */
  default:
    break;
  }
  luaL_error(L, "cannot encode a %s as JSON", luaL_typename(L, idx));
  return NULL;
}

/* Builds the JSON for the value at idx into parent (array: key NULL; object: key). */
static void add_value(lua_State *L, int idx, cJSON *parent, const char *key, int depth);

static void fill_table(lua_State *L, int idx, cJSON *node, int depth) {
  lua_Integer n;
  luaL_checkstack(L, 4, "cannot encode: nested too deeply");
  if (cJSON_IsArray(node)) {
    is_array(L, idx, &n);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      add_value(L, -1, node, NULL, depth + 1);
      lua_pop(L, 1);
    }
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "cannot encode a table with a %s key as a JSON object", luaL_typename(L, -2));
    add_value(L, -1, node, lua_tostring(L, -2), depth + 1);
    lua_pop(L, 1);
  }
}

static cJSON *make_node(lua_State *L, int idx, int depth) {
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_Integer n;
    if (is_lazy(L, idx)) { /* the text as it came: nobody changed it */
      lua_rawgetp(L, idx, &lazy_key);
      cJSON *raw = cJSON_CreateRaw(lua_tostring(L, -1));
      lua_pop(L, 1);
      return raw;
    }
    return is_array(L, idx, &n) ? cJSON_CreateArray() : cJSON_CreateObject();
  }
  return to_json(L, idx, depth);
}

static void add_value(lua_State *L, int idx, cJSON *parent, const char *key, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > MAX_DEPTH) luaL_error(L, "cannot encode: nested too deeply (or a cycle)");
  cJSON *node = make_node(L, idx, depth);
  if (!node) luaL_error(L, "out of memory");
  if (key) cJSON_AddItemToObject(parent, key, node);
  else cJSON_AddItemToArray(parent, node);
  if (lua_type(L, idx) == LUA_TTABLE && !cJSON_IsRaw(node)) fill_table(L, idx, node, depth);
}

const char *lesg_json_encode(lua_State *L, int idx, size_t *len) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE && is_lazy(L, idx)) {
    lua_rawgetp(L, idx, &lazy_key); /* the very string: no copy */
    return lua_tolstring(L, -1, len);
  }
  box *b = box_new(L);
  b->root = make_node(L, idx, 0);
  if (!b->root) luaL_error(L, "out of memory");
  if (lua_type(L, idx) == LUA_TTABLE) fill_table(L, idx, b->root, 0);
  b->text = cJSON_PrintUnformatted(b->root);
  if (!b->text) luaL_error(L, "out of memory");
  const char *s = lua_pushstring(L, b->text);
  cJSON_Delete(b->root);
  b->root = NULL;
  cJSON_free(b->text);
  b->text = NULL;
  lua_remove(L, -2); /* the box */
  if (len) *len = lua_rawlen(L, -1);
  return s;
}

/* esg.json.encode(value) -> string. Raises for values JSON cannot hold. */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lesg_json_encode(L, 1, NULL);
  return 1;
}

/* esg.json.decode(string) -> value, or nil, message, "EJSON". */
static int l_decode_body(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  lesg_json_push(L, s, len);
  return 1;
}

static int l_decode(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_pushcfunction(L, l_decode_body);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) return 1;
  if (lua_type(L, -1) != LUA_TSTRING) return lua_error(L); /* memory errors and the like */
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushliteral(L, "EJSON");
  return 3;
}

/* esg.json.array([t]) -> t marked as an array (encodes as [] even when empty). */
static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_setmetatable(L, LESG_ARRAY_MT);
  return 1;
}

/* esg.json.isarray(t) -> boolean. */
static int l_isarray(lua_State *L) {
  lua_Integer n;
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && is_array(L, 1, &n));
  return 1;
}

void lesg_json_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"encode", l_encode},   {"decode", l_decode},
                                 {"array", l_array},     {"isarray", l_isarray},
                                 {"lazy", l_lazy},       {"islazy", l_islazy},
                                 {"materialise", l_materialise},
                                 {NULL, NULL}};
  static const luaL_Reg lazy_meta[] = {{"__index", lazy_index}, {"__newindex", lazy_newindex},
                                       {"__len", lazy_len},     {"__pairs", lazy_pairs},
                                       {NULL, NULL}};
  luaL_newmetatable(L, LESG_ARRAY_MT);
  lua_pop(L, 1);
  luaL_newmetatable(L, LESG_LAZY_MT);
  luaL_setfuncs(L, lazy_meta, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
  luaL_setfuncs(L, fns, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}
