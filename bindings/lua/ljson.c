/*
 * JSON <-> Lua for the esg module, on cJSON.
 *
 * Objects become tables, arrays become tables carrying the esg.json.array
 * metatable (so they encode back as arrays, even when empty), null becomes
 * esg.null (a light userdata). Integral numbers decode as Lua integers.
 * Encoding (straight to text, no tree): a table is an array if it carries the
 * array metatable or if its keys are exactly 1..n (n > 0); otherwise an object,
 * whose keys must be strings, written sorted by name (bytewise) so the text does
 * not depend on insertion order. Integers are written exactly (not through a double).
 *
 * Decoding goes straight from text to Lua values (fast_value) and falls back to
 * cJSON for anything that path does not take, so the results are cJSON's; cJSON
 * trees live in a "box" userdata while Lua code that may raise (memory errors)
 * runs, so a longjmp never leaks them.
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

static const char array_mt_key = 0; /* registry[&array_mt_key]: the array metatable, found without a name lookup */
#define PUSH_ARRAY_MT(L) lua_rawgetp((L), LUA_REGISTRYINDEX, &array_mt_key)
/* Marks the table on top as an array. */
static void set_array_mt(lua_State *L) {
  PUSH_ARRAY_MT(L);
  lua_setmetatable(L, -2);
}
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
    set_array_mt(L);
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

/* ------------------------------------------------------- fast decode -- */

/*
 * JSON text straight to Lua values, without a cJSON tree (no allocation but Lua's own).
 * It takes only what it decodes exactly as the cJSON path does and gives up on anything
 * else (a raw control character or \u0000 in a string, non-standard numbers or spacing,
 * deep nesting): the caller then runs the cJSON path, which decides.
 */
typedef struct fastp {
  lua_State *L;
  const char *p, *end;
} fastp;

static void fast_ws(fastp *f) {
  while (f->p < f->end && (*f->p == ' ' || *f->p == '\n' || *f->p == '\r' || *f->p == '\t')) f->p++;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

/* Pushes the string at f->p (on its opening quote). Raw control characters are taken as
   they are, as cJSON takes them. */
static int fast_string(fastp *f) {
  const char *s = ++f->p, *end = f->end;
  const char *q = memchr(s, '"', (size_t)(end - s));
  if (!q) return 0;
  int escaped = memchr(s, '\\', (size_t)(q - s)) != NULL;
  if (escaped) { /* the quote found may be an escaped one: scan again, escape by escape */
    q = s;
    for (;;) {
      while (q < end && *q != '"' && *q != '\\') q++;
      if (q >= end) return 0;
      if (*q == '"') break;
      q += 2;
    }
  }
  if (q >= f->end) return 0;
  /* a raw NUL: the cJSON path decides (a Lua string may hold one, JSON text may not) */
  if (memchr(s, '\0', (size_t)(q - s))) return 0;
  f->p = q + 1;
  if (!escaped) {
    lua_pushlstring(f->L, s, (size_t)(q - s));
    return 1;
  }
  size_t n = (size_t)(q - s);
  char small[256] = "";
  char *out = n <= sizeof small ? small : lua_newuserdatauv(f->L, n, 0);
  size_t o = 0;
  for (const char *r = s; r < q; r++) {
    if (*r != '\\') {
      out[o++] = *r;
      continue;
    }
    switch (*++r) {
    case '"': out[o++] = '"'; break;
    case '\\': out[o++] = '\\'; break;
    case '/': out[o++] = '/'; break;
    case 'b': out[o++] = '\b'; break;
    case 'f': out[o++] = '\f'; break;
    case 'n': out[o++] = '\n'; break;
    case 'r': out[o++] = '\r'; break;
    case 't': out[o++] = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (q - r < 5 || !hex4(r + 1, &cp) || cp == 0) return 0;
      r += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (q - r < 7 || r[1] != '\\' || r[2] != 'u' || !hex4(r + 3, &lo) || lo < 0xDC00 || lo > 0xDFFF) return 0;
        r += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (cp < 0x80) {
        out[o++] = (char)cp;
      } else if (cp < 0x800) {
        out[o++] = (char)(0xC0 | (cp >> 6));
        out[o++] = (char)(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out[o++] = (char)(0xE0 | (cp >> 12));
        out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[o++] = (char)(0x80 | (cp & 0x3F));
      } else {
        out[o++] = (char)(0xF0 | (cp >> 18));
        out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[o++] = (char)(0x80 | (cp & 0x3F));
      }
      break;
    }
    default:
      return 0;
    }
  }
  lua_pushlstring(f->L, out, o);
  if (out != small) lua_remove(f->L, -2);
  return 1;
}

/* A number as the cJSON path makes it: integral values as integers, through a double
   beyond 15 digits. */
static int fast_number(fastp *f) {
  const char *s = f->p, *q = s;
  if (q < f->end && *q == '-') q++;
  if (q >= f->end || *q < '0' || *q > '9') return 0;
  if (*q == '0') q++;
  else while (q < f->end && *q >= '0' && *q <= '9') q++;
  int plain = 1;
  if (q < f->end && *q == '.') {
    plain = 0;
    if (++q >= f->end || *q < '0' || *q > '9') return 0;
    while (q < f->end && *q >= '0' && *q <= '9') q++;
  }
  if (q < f->end && (*q == 'e' || *q == 'E')) {
    plain = 0;
    if (++q < f->end && (*q == '+' || *q == '-')) q++;
    if (q >= f->end || *q < '0' || *q > '9') return 0;
    while (q < f->end && *q >= '0' && *q <= '9') q++;
  }
  if (q < f->end && (*q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-' || (*q >= '0' && *q <= '9')))
    return 0;
  size_t n = (size_t)(q - s);
  f->p = q;
  if (plain && n - (*s == '-') <= 15) {
    lua_Integer v = 0;
    for (const char *r = s + (*s == '-'); r < q; r++) v = v * 10 + (*r - '0');
    lua_pushinteger(f->L, *s == '-' ? -v : v);
    return 1;
  }
  char buf[64];
  if (n >= sizeof buf) return 0;
  memcpy(buf, s, n);
  buf[n] = '\0';
  double d = strtod(buf, NULL);
  if (d == floor(d) && d >= -9.2233720368547758e18 && d < 9.2233720368547758e18) lua_pushinteger(f->L, (lua_Integer)d);
  else lua_pushnumber(f->L, d);
  return 1;
}

static int fast_value(fastp *f, int depth);

/* The members of an object (f->p past its '{') into the table at t. */
static int fast_members(fastp *f, int t, int depth) {
  fast_ws(f);
  if (f->p < f->end && *f->p == '}') {
    f->p++;
    return 1;
  }
  for (;;) {
    if (f->p >= f->end || *f->p != '"' || !fast_string(f)) return 0;
    fast_ws(f);
    if (f->p >= f->end || *f->p != ':') return 0;
    f->p++;
    fast_ws(f);
    if (!fast_value(f, depth + 1)) return 0;
    lua_rawset(f->L, t);
    fast_ws(f);
    if (f->p >= f->end) return 0;
    if (*f->p == '}') {
      f->p++;
      return 1;
    }
    if (*f->p++ != ',') return 0;
    fast_ws(f);
  }
}

static int fast_value(fastp *f, int depth) {
  lua_State *L = f->L;
  if (depth > MAX_DEPTH || f->p >= f->end) return 0;
  switch (*f->p) {
  case '{': {
    if (!lua_checkstack(L, 6)) return 0; /* the members' key and value, and what a scalar pushes */
    f->p++;
    lua_createtable(L, 0, 4);
    return fast_members(f, lua_gettop(L), depth);
  }
  case '[': {
    if (!lua_checkstack(L, 6)) return 0;
    f->p++;
    lua_createtable(L, 4, 0);
    int t = lua_gettop(L);
    set_array_mt(L);
    fast_ws(f);
    if (f->p < f->end && *f->p == ']') {
      f->p++;
      return 1;
    }
    for (lua_Integer i = 1;; i++) {
      if (!fast_value(f, depth + 1)) return 0;
      lua_rawseti(L, t, i);
      fast_ws(f);
      if (f->p >= f->end) return 0;
      if (*f->p == ']') {
        f->p++;
        return 1;
      }
      if (*f->p++ != ',') return 0;
      fast_ws(f);
    }
  }
  case '"':
    return fast_string(f);
  case 't':
    if (f->end - f->p < 4 || memcmp(f->p, "true", 4) != 0) return 0;
    f->p += 4;
    lua_pushboolean(L, 1);
    return 1;
  case 'f':
    if (f->end - f->p < 5 || memcmp(f->p, "false", 5) != 0) return 0;
    f->p += 5;
    lua_pushboolean(L, 0);
    return 1;
  case 'n':
    if (f->end - f->p < 4 || memcmp(f->p, "null", 4) != 0) return 0;
    f->p += 4;
    lua_pushlightuserdata(L, NULL);
    return 1;
  default:
    return fast_number(f);
  }
}

/* The allocations the host's memory limit refused so far (0 without such a host): cJSON
   says NULL for bad input and for memory alike. */
static unsigned refusals(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LESG_HOST_KEY);
  const lesg_host *h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h && h->refusals ? h->refusals() : 0;
}

/* One JSON value and nothing after it but white space (cJSON alone would accept {"a":1} xyz),
   as the library's own parser decides; NULL with *off where it went wrong. */
static cJSON *parse_whole(const char *s, size_t len, size_t *off) {
  const char *end = NULL;
  cJSON *v = cJSON_ParseWithLengthOpts(s, len, &end, 0);
  fastp f = {NULL, end, s + len};
  if (v) fast_ws(&f);
  *off = end && end >= s && end <= s + len ? (size_t)(end - s) : 0;
  if (v && f.p != f.end) {
    cJSON_Delete(v);
    v = NULL;
    *off = (size_t)(f.p - s);
  }
  return v;
}

void lesg_json_push(lua_State *L, const char *json, size_t len) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
  int top = lua_gettop(L);
  fastp f = {L, json, json + len};
  fast_ws(&f);
  if (fast_value(&f, 0) && (fast_ws(&f), f.p == f.end)) return;
  lua_settop(L, top);
  box *b = box_new(L);
  size_t off;
  unsigned refused = refusals(L);
  b->root = parse_whole(json, len, &off);
  if (!b->root && refusals(L) != refused) luaL_error(L, "not enough memory (decoding %I bytes of JSON)", (LUAI_UACINT)len);
  if (!b->root) luaL_error(L, "invalid JSON near byte %d", (int)off);
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
  int text = lua_gettop(L);
  lua_pushnil(L);
  lua_rawsetp(L, idx, &lazy_key);
  lua_pushnil(L);
  lua_setmetatable(L, idx);
  fastp f = {L, s, s + len};
  fast_ws(&f);
  if (f.p < f.end && *f.p == '{' && (f.p++, fast_members(&f, idx, 0)) && (fast_ws(&f), f.p == f.end)) {
    lua_settop(L, text - 1);
    return;
  }
  lua_settop(L, text); /* what the fast path left in the table goes; cJSON decides */
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, idx);
  }
  box *b = box_new(L);
  size_t off;
  b->root = parse_whole(s, len, &off);
  if (!b->root || !cJSON_IsObject(b->root)) {
    lua_pushvalue(L, text); /* still lazy: the same error on the next access */
    lua_rawsetp(L, idx, &lazy_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
    lua_setmetatable(L, idx);
    luaL_error(L, "lazy JSON object: not a JSON object");
  }
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
  lua_createtable(L, 0, 8); /* room for the members it decodes into (an envelope has 4 to 7) */
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
    PUSH_ARRAY_MT(L);
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

/* ------------------------------------------------------------ encode -- */

/*
 * The encoder writes JSON text straight into a growable buffer, no tree in between.
 * Object members come out sorted by name (bytewise), so the same table always encodes
 * to the same text, whatever order its keys were inserted in (Lua's table order is not
 * stable across states).
 */

static void jb_reserve(lua_State *L, lesg_jbuf *b, size_t n) {
  if (b->cap - b->len >= n) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) {
    if (cap > ((size_t)-1) / 2) luaL_error(L, "cannot encode: too large");
    cap *= 2;
  }
  if (!b->alloc) b->alloc = lua_getallocf(L, &b->alloc_ud);
  char *p = b->alloc(b->alloc_ud, b->p, b->cap, cap);
  if (!p) luaL_error(L, "not enough memory");
  b->p = p;
  b->cap = cap;
}

void lesg_jbuf_free(lesg_jbuf *b) {
  if (b->p) b->alloc(b->alloc_ud, b->p, b->cap, 0);
  b->p = NULL;
  b->len = b->cap = 0;
}

static inline void jb_add(lua_State *L, lesg_jbuf *b, const char *s, size_t n) {
  jb_reserve(L, b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static inline void jb_char(lua_State *L, lesg_jbuf *b, char c) {
  if (b->len == b->cap) jb_reserve(L, b, 1);
  b->p[b->len++] = c;
}

/* A JSON string (escaped as cJSON does: quote, backslash and control characters). */
static void enc_string(lua_State *L, lesg_jbuf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  jb_reserve(L, b, len + 2);
  b->p[b->len++] = '"';
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    jb_add(L, b, s + run, i - run);
    run = i + 1;
    char esc[6] = {'\\', 0};
    size_t n = 2;
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    case 0: luaL_error(L, "cannot encode a string with a NUL byte as JSON"); break;
    default:
      esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
      n = 6;
    }
    jb_add(L, b, esc, n);
  }
  jb_add(L, b, s + run, len - run);
  jb_char(L, b, '"');
}

static void enc_number(lua_State *L, lesg_jbuf *b, int idx) {
  char buf[40];
  int n;
  if (lua_isinteger(L, idx)) {
    uint64_t v = (uint64_t)lua_tointeger(L, idx), neg = (int64_t)v < 0;
    if (neg) v = 0 - v;
    char *e = buf + sizeof buf, *p = e;
    do *--p = (char)('0' + v % 10); while ((v /= 10));
    if (neg) *--p = '-';
    jb_add(L, b, p, (size_t)(e - p));
    return;
  } else {
    double d = lua_tonumber(L, idx);
    if (!isfinite(d)) luaL_error(L, "cannot encode a non-finite number as JSON");
    for (int prec = 15; prec <= 17; prec++) { /* the shortest text that reads back as the same double */
      n = snprintf(buf, sizeof buf, "%.*g", prec, d);
      if (strtod(buf, NULL) == d) break;
    }
  }
  jb_add(L, b, buf, (size_t)n);
}

typedef struct member {
  const char *name;
  size_t len;
  int at; /* stack index of the name; the value is above it */
} member;

static int member_cmp(const void *pa, const void *pb) {
  const member *a = pa, *b = pb;
  int c = memcmp(a->name, b->name, a->len < b->len ? a->len : b->len);
  return c ? c : (a->len > b->len) - (a->len < b->len);
}

static void enc_value(lua_State *L, int idx, lesg_jbuf *b, int depth);

static void enc_table(lua_State *L, int idx, lesg_jbuf *b, int depth) {
  if (depth > MAX_DEPTH) luaL_error(L, "cannot encode: nested too deeply (or a cycle)");
  luaL_checkstack(L, 6, "cannot encode: nested too deeply");
  if (is_lazy(L, idx)) { /* the text as it came: nobody changed it */
    size_t len;
    lua_rawgetp(L, idx, &lazy_key);
    const char *t = lua_tolstring(L, -1, &len);
    jb_add(L, b, t, len);
    lua_pop(L, 1);
    return;
  }
  int marked = 0;
  if (lua_getmetatable(L, idx)) {
    PUSH_ARRAY_MT(L);
    marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  lua_Integer n = 0;
  int base = lua_gettop(L);
  if (!marked) { /* every pair goes onto the stack: name, value, name, value, ... */
    lua_Integer count = 0, max = 0;
    int ints = 1, strs = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      luaL_checkstack(L, 3, "cannot encode: too many members");
      if (lua_type(L, -2) == LUA_TSTRING) {
        ints = 0;
      } else {
        strs = 0;
        lua_Integer k = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;
        if (k < 1) ints = 0;
        else if (k > max) max = k;
      }
      count++;
      lua_pushvalue(L, -2);
    }
    if (ints && count > 0 && count == max) {
      marked = 1;
      n = max;
      lua_settop(L, base);
    } else if (!strs) {
      for (int i = base + 1; i <= lua_gettop(L); i += 2)
        if (lua_type(L, i) != LUA_TSTRING)
          luaL_error(L, "cannot encode a table with a %s key as a JSON object", luaL_typename(L, i));
    }
  } else {
    n = (lua_Integer)lua_rawlen(L, idx);
  }
  if (marked) {
    jb_char(L, b, '[');
    for (lua_Integer i = 1; i <= n; i++) {
      if (i > 1) jb_char(L, b, ',');
      lua_rawgeti(L, idx, i);
      enc_value(L, lua_gettop(L), b, depth + 1);
      lua_pop(L, 1);
    }
    jb_char(L, b, ']');
    return;
  }
  int count = (lua_gettop(L) - base) / 2;
  member small[16];
  member *m = small;
  if (count > 16) m = lua_newuserdatauv(L, (size_t)count * sizeof *m, 0); /* above the pairs */
  for (int i = 0; i < count; i++) {
    m[i].at = base + 1 + 2 * i;
    m[i].name = lua_tolstring(L, m[i].at, &m[i].len);
  }
  if (count <= 16) { /* insertion sort: members are few */
    for (int i = 1; i < count; i++) {
      member x = m[i];
      int j = i - 1;
      while (j >= 0 && member_cmp(&m[j], &x) > 0) {
        m[j + 1] = m[j];
        j--;
      }
      m[j + 1] = x;
    }
  } else {
    qsort(m, (size_t)count, sizeof *m, member_cmp);
  }
  jb_char(L, b, '{');
  for (int i = 0; i < count; i++) {
    if (i) jb_char(L, b, ',');
    enc_string(L, b, m[i].name, m[i].len);
    jb_char(L, b, ':');
    enc_value(L, m[i].at + 1, b, depth + 1);
  }
  jb_char(L, b, '}');
  lua_settop(L, base);
}

static void enc_value(lua_State *L, int idx, lesg_jbuf *b, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    jb_add(L, b, "null", 4);
    return;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      jb_add(L, b, "null", 4);
      return;
    }
    break;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx)) jb_add(L, b, "true", 4);
    else jb_add(L, b, "false", 5);
    return;
  case LUA_TNUMBER:
    enc_number(L, b, idx);
    return;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    enc_string(L, b, s, len);
    return;
  }
  case LUA_TTABLE:
    enc_table(L, idx, b, depth);
    return;
  default:
    break;
  }
  luaL_error(L, "cannot encode a %s as JSON", luaL_typename(L, idx));
}

void lesg_json_encode_buf(lua_State *L, int idx, lesg_jbuf *b) {
  enc_value(L, lua_absindex(L, idx), b, 0);
}

const char *lesg_json_bytes(lua_State *L, int idx, lesg_jbuf *b, size_t *len) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
  if (lua_type(L, idx) == LUA_TTABLE && is_lazy(L, idx)) {
    lua_rawgetp(L, idx, &lazy_key); /* anchored in the table */
    const char *t = lua_tolstring(L, -1, len);
    lua_pop(L, 1);
    return t;
  }
  b->len = 0;
  enc_value(L, idx, b, 0);
  *len = b->len;
  return b->p ? b->p : "";
}

/* The buffer of lesg_json_encode: a userdata, so a raise in the middle frees it. */
#define JBUF_MT "esg.json.buffer"

static int jbuf_gc(lua_State *L) {
  lesg_jbuf_free(lua_touserdata(L, 1));
  return 0;
}

const char *lesg_json_encode(lua_State *L, int idx, size_t *len) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE && is_lazy(L, idx)) {
    lua_rawgetp(L, idx, &lazy_key); /* the very string: no copy */
    return lua_tolstring(L, -1, len);
  }
  lesg_jbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, JBUF_MT)) {
    lua_pushcfunction(L, jbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  enc_value(L, idx, b, 0);
  const char *s = lua_pushlstring(L, b->p ? b->p : "", b->len);
  lesg_jbuf_free(b); /* now rather than at the next collection */
  lua_remove(L, -2);
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
  set_array_mt(L);
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
  lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
  luaL_newmetatable(L, LESG_LAZY_MT);
  luaL_setfuncs(L, lazy_meta, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
  luaL_setfuncs(L, fns, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}

int lesg_json_islazy(lua_State *L, int idx) { return lua_type(L, idx) == LUA_TTABLE && is_lazy(L, idx); }
