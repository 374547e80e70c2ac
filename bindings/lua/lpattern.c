/*
 * string.find, string.match, string.gmatch and string.gsub for sandboxed scripts, with
 * Lua 5.4's pattern semantics (the reference manual, §6.4.1) and a step count.
 *
 * Lua's own matcher backtracks inside C, where no instruction hook runs: a pattern such
 * as ("a*"):rep(40) .. "b" against a run of a's, or ".-x" over a long string, takes
 * hours and no budget can stop it. This matcher charges its steps to the host's budget
 * (lesg_host.charge: as instructions, with the deadline checked too), so the call fails
 * like a runaway loop does. Without a host (plain Lua) the steps are not charged.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <ctype.h>
#include <string.h>
#include <lauxlib.h>
#include "lesg.h"

#define MAX_CAPTURES 32
#define MAX_DEPTH 200     /* recursion of the matcher: "pattern too complex" past it */
#define CHARGE_EVERY 4096 /* steps between two charges to the host */
#define CAP_POSITION (-2) /* a () capture */
#define CAP_OPEN (-1)     /* a capture not closed yet */

typedef struct mstate {
  const char *src, *src_end, *pat_end;
  lua_State *L;
  const lesg_host *host;
  int depth;
  int steps;
  int level; /* captures so far */
  struct {
    const char *init;
    ptrdiff_t len;
  } cap[MAX_CAPTURES];
} mstate;

static void step(mstate *ms) {
  if (++ms->steps < CHARGE_EVERY) return;
  if (ms->host && ms->host->charge) ms->host->charge(ms->L, ms->steps);
  ms->steps = 0;
}

/* The end of the single-character class at p (p past it). */
static const char *class_end(mstate *ms, const char *p) {
  if (*p++ == '%') {
    if (p >= ms->pat_end) luaL_error(ms->L, "malformed pattern (ends with '%%')");
    return p + 1;
  }
  if (p[-1] == '[') {
    if (p < ms->pat_end && *p == '^') p++;
    do { /* the first ']' of a set is a member */
      if (p >= ms->pat_end) luaL_error(ms->L, "malformed pattern (missing ']')");
      if (*p++ == '%' && p < ms->pat_end) p++;
    } while (p >= ms->pat_end || *p != ']');
    return p + 1;
  }
  return p;
}

/* Whether c is in the class %cl. */
static int in_class(int c, int cl) {
  int r;
  switch (tolower(cl)) {
  case 'a': r = isalpha(c); break;
  case 'c': r = iscntrl(c); break;
  case 'd': r = isdigit(c); break;
  case 'g': r = isgraph(c); break;
  case 'l': r = islower(c); break;
  case 'p': r = ispunct(c); break;
  case 's': r = isspace(c); break;
  case 'u': r = isupper(c); break;
  case 'w': r = isalnum(c); break;
  case 'x': r = isxdigit(c); break;
  case 'z': r = c == 0; break; /* deprecated in Lua 5.2, still matched */
  default: return cl == c;
  }
  if (isupper(cl)) r = !r;
  return r != 0;
}

/* Whether c is in the set [p .. ec] (p on '[', ec on its ']'). */
static int in_set(int c, const char *p, const char *ec) {
  int yes = 1;
  if (*++p == '^') {
    yes = 0;
    p++;
  }
  while (p < ec) {
    if (*p == '%') {
      p++;
      if (in_class(c, (unsigned char)*p)) return yes;
      p++;
    } else if (p[1] == '-' && p + 2 < ec) {
      if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) return yes;
      p += 3;
    } else {
      if ((unsigned char)*p == c) return yes;
      p++;
    }
  }
  return !yes;
}

/* Whether the character at s matches the class [p, ep). */
static int single(mstate *ms, const char *s, const char *p, const char *ep) {
  if (s >= ms->src_end) return 0;
  int c = (unsigned char)*s;
  switch (*p) {
  case '.': return 1;
  case '%': return in_class(c, (unsigned char)p[1]);
  case '[': return in_set(c, p, ep - 1);
  default: return (unsigned char)*p == c;
  }
}

static const char *match(mstate *ms, const char *s, const char *p);

static int capture_index(mstate *ms, int l) {
  l -= '1';
  if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_OPEN)
    return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
  return l;
}

static const char *max_expand(mstate *ms, const char *s, const char *p, const char *ep) {
  ptrdiff_t i = 0;
  while (single(ms, s + i, p, ep)) {
    i++;
    step(ms);
  }
  for (; i >= 0; i--) { /* the longest first, then shorter */
    const char *r = match(ms, s + i, ep + 1);
    if (r) return r;
    step(ms);
  }
  return NULL;
}

static const char *min_expand(mstate *ms, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = match(ms, s, ep + 1);
    if (r) return r;
    if (!single(ms, s, p, ep)) return NULL;
    s++;
    step(ms);
  }
}

static const char *open_capture(mstate *ms, const char *s, const char *p, ptrdiff_t what) {
  if (ms->level >= MAX_CAPTURES) luaL_error(ms->L, "too many captures");
  ms->cap[ms->level].init = s;
  ms->cap[ms->level].len = what;
  ms->level++;
  const char *r = match(ms, s, p);
  if (!r) ms->level--; /* undone on failure */
  return r;
}

static const char *close_capture(mstate *ms, const char *s, const char *p) {
  int l = -1;
  for (int i = ms->level - 1; i >= 0; i--)
    if (ms->cap[i].len == CAP_OPEN) {
      l = i;
      break;
    }
  if (l < 0) luaL_error(ms->L, "invalid pattern capture");
  ms->cap[l].len = s - ms->cap[l].init;
  const char *r = match(ms, s, p);
  if (!r) ms->cap[l].len = CAP_OPEN;
  return r;
}

static const char *balance(mstate *ms, const char *s, const char *p) {
  if (p + 1 >= ms->pat_end) luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
  if (s >= ms->src_end || *s != *p) return NULL;
  int open = *p, close = p[1], depth = 1;
  while (++s < ms->src_end) {
    step(ms);
    if (*s == close) {
      if (--depth == 0) return s + 1;
    } else if (*s == open) {
      depth++;
    }
  }
  return NULL;
}

static const char *backref(mstate *ms, const char *s, int l) {
  l = capture_index(ms, l);
  size_t len = (size_t)ms->cap[l].len;
  if ((size_t)(ms->src_end - s) >= len && memcmp(ms->cap[l].init, s, len) == 0) return s + len;
  return NULL;
}

/* Matches p against s: the end of the match, or NULL. */
static const char *match(mstate *ms, const char *s, const char *p) {
  if (++ms->depth > MAX_DEPTH) luaL_error(ms->L, "pattern too complex");
  step(ms);
  const char *r = NULL;
  for (;;) {
    if (p == ms->pat_end) {
      r = s;
      break;
    }
    if (*p == '(') {
      r = p + 1 < ms->pat_end && p[1] == ')' ? open_capture(ms, s, p + 2, CAP_POSITION) : open_capture(ms, s, p + 1, CAP_OPEN);
      break;
    }
    if (*p == ')') {
      r = close_capture(ms, s, p + 1);
      break;
    }
    if (*p == '$' && p + 1 == ms->pat_end) {
      r = s == ms->src_end ? s : NULL;
      break;
    }
    if (*p == '%' && p + 1 < ms->pat_end && p[1] == 'b') {
      s = balance(ms, s, p + 2);
      if (!s) break;
      p += 4;
      continue;
    }
    if (*p == '%' && p + 1 < ms->pat_end && p[1] == 'f') {
      p += 2;
      if (p >= ms->pat_end || *p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
      const char *ep = class_end(ms, p);
      int prev = s == ms->src ? 0 : (unsigned char)s[-1];
      int cur = s < ms->src_end ? (unsigned char)*s : 0;
      if (in_set(prev, p, ep - 1) || !in_set(cur, p, ep - 1)) break;
      p = ep;
      continue;
    }
    if (*p == '%' && p + 1 < ms->pat_end && isdigit((unsigned char)p[1])) {
      s = backref(ms, s, (unsigned char)p[1]);
      if (!s) break;
      p += 2;
      continue;
    }
    const char *ep = class_end(ms, p);
    int q = ep < ms->pat_end ? *ep : 0;
    if (!single(ms, s, p, ep)) {
      if (q == '*' || q == '?' || q == '-') { /* zero of them is a match */
        p = ep + 1;
        continue;
      }
      break;
    }
    if (q == '?') {
      r = match(ms, s + 1, ep + 1);
      if (r) break;
      p = ep + 1;
      continue;
    }
    if (q == '+') {
      r = max_expand(ms, s + 1, p, ep);
      break;
    }
    if (q == '*') {
      r = max_expand(ms, s, p, ep);
      break;
    }
    if (q == '-') {
      r = min_expand(ms, s, p, ep);
      break;
    }
    s++;
    p = ep;
  }
  ms->depth--;
  return r;
}

static const lesg_host *host_of(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LESG_HOST_KEY);
  const lesg_host *h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h;
}

static void ms_init(mstate *ms, lua_State *L, const lesg_host *h, const char *s, size_t ls, const char *p, size_t lp) {
  ms->L = L;
  ms->host = h;
  ms->src = s;
  ms->src_end = s + ls;
  ms->pat_end = p + lp;
  ms->depth = 0;
  ms->level = 0;
  ms->steps = 0;
}

/* Pushes capture i (the whole match [s, e) when there are none and i is 0). */
static void push_capture(mstate *ms, int i, const char *s, const char *e) {
  if (i >= ms->level) {
    if (i != 0) luaL_error(ms->L, "invalid capture index %%%d", i + 1);
    lua_pushlstring(ms->L, s, (size_t)(e - s));
    return;
  }
  ptrdiff_t len = ms->cap[i].len;
  if (len == CAP_OPEN) luaL_error(ms->L, "unfinished capture");
  if (len == CAP_POSITION) lua_pushinteger(ms->L, (ms->cap[i].init - ms->src) + 1);
  else lua_pushlstring(ms->L, ms->cap[i].init, (size_t)len);
}

static int push_captures(mstate *ms, const char *s, const char *e, int whole) {
  int n = ms->level == 0 && whole ? 1 : ms->level;
  luaL_checkstack(ms->L, n, "too many captures");
  for (int i = 0; i < n; i++) push_capture(ms, i, s, e);
  return n;
}

static void charge_rest(mstate *ms) {
  if (ms->steps && ms->host && ms->host->charge) ms->host->charge(ms->L, ms->steps);
  ms->steps = 0;
}

/* A 1-based init, negative from the end, as Lua takes it: a 0-based offset (> len: none). */
static size_t start_at(lua_Integer init, size_t len) {
  if (init > 0) return (size_t)init - 1;
  if (init == 0) return 0;
  if ((size_t)-(init + 1) >= len) return 0;
  return len - (size_t)-init;
}

static int no_specials(const char *p, size_t lp) {
  return strpbrk(p, "^$*+?.([%-") == NULL && strlen(p) == lp;
}

static int find_aux(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls), *p = luaL_checklstring(L, 2, &lp);
  size_t init = start_at(luaL_optinteger(L, 3, 1), ls);
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
    const char *at = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
    if (!at) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (at - s) + 1);
    lua_pushinteger(L, (at - s) + (lua_Integer)lp);
    return 2;
  }
  mstate ms;
  int anchor = lp > 0 && *p == '^';
  if (anchor) p++, lp--;
  ms_init(&ms, L, host_of(L), s, ls, p, lp);
  const char *from = s + init;
  do {
    ms.level = 0;
    ms.depth = 0;
    const char *e = match(&ms, from, p);
    if (e) {
      charge_rest(&ms);
      if (find) {
        lua_pushinteger(L, (from - s) + 1);
        lua_pushinteger(L, e - s);
        return push_captures(&ms, NULL, NULL, 0) + 2;
      }
      return push_captures(&ms, from, e, 1);
    }
  } while (from++ < ms.src_end && !anchor);
  charge_rest(&ms);
  luaL_pushfail(L);
  return 1;
}

static int l_find(lua_State *L) { return find_aux(L, 1); }
static int l_match(lua_State *L) { return find_aux(L, 0); }

/* gmatch's state: a userdata upvalue beside the string and the pattern. */
typedef struct gstate {
  size_t pos;       /* where the next search starts */
  ptrdiff_t last;   /* the end of the last match (-1: none): no empty match there again */
  const lesg_host *host;
} gstate;

static int gmatch_next(lua_State *L) {
  size_t ls, lp;
  const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls), *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
  gstate *g = lua_touserdata(L, lua_upvalueindex(3));
  mstate ms;
  ms_init(&ms, L, g->host, s, ls, p, lp);
  for (const char *from = s + g->pos; from <= ms.src_end; from++) {
    ms.level = 0;
    ms.depth = 0;
    const char *e = match(&ms, from, p);
    if (e && e - s != g->last) {
      g->pos = (size_t)(e - s);
      g->last = e - s;
      charge_rest(&ms);
      return push_captures(&ms, from, e, 1);
    }
  }
  charge_rest(&ms);
  g->pos = ls + 1;
  return 0;
}

static int l_gmatch(lua_State *L) {
  size_t ls;
  luaL_checklstring(L, 1, &ls);
  luaL_checkstring(L, 2);
  size_t init = start_at(luaL_optinteger(L, 3, 1), ls);
  lua_settop(L, 2);
  gstate *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->pos = init > ls ? ls + 1 : init;
  g->last = -1;
  g->host = host_of(L);
  lua_pushcclosure(L, gmatch_next, 3);
  return 1;
}

/* Appends the replacement of the match [s, e) to b. */
static void add_value(mstate *ms, luaL_Buffer *b, const char *s, const char *e, int tr) {
  lua_State *L = ms->L;
  if (tr == LUA_TSTRING || tr == LUA_TNUMBER) {
    size_t l;
    const char *r = lua_tolstring(L, 3, &l), *end = r + l;
    for (; r < end; r++) {
      if (*r != '%') {
        luaL_addchar(b, *r);
        continue;
      }
      r++;
      if (r >= end) luaL_error(L, "invalid use of '%%' in replacement string");
      if (*r == '%') {
        luaL_addchar(b, '%');
      } else if (isdigit((unsigned char)*r)) {
        if (*r == '0') {
          luaL_addlstring(b, s, (size_t)(e - s));
        } else {
          push_capture(ms, *r - '1', s, e);
          luaL_tolstring(L, -1, NULL); /* a position capture is a number */
          lua_remove(L, -2);
          luaL_addvalue(b);
        }
      } else {
        luaL_error(L, "invalid use of '%%' in replacement string");
      }
    }
    return;
  }
  if (tr == LUA_TFUNCTION) { /* f(captures...) */
    lua_pushvalue(L, 3);
    lua_call(L, push_captures(ms, s, e, 1), 1);
  } else { /* t[first capture] */
    push_capture(ms, 0, s, e);
    lua_gettable(L, 3);
  }
  if (!lua_toboolean(L, -1)) { /* nil or false: the match stays */
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  } else {
    luaL_addvalue(b);
  }
}

static int l_gsub(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls), *p = luaL_checklstring(L, 2, &lp);
  int tr = lua_type(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
  luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                   "string/function/table");
  int anchor = lp > 0 && *p == '^';
  if (anchor) p++, lp--;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  mstate ms;
  ms_init(&ms, L, host_of(L), s, ls, p, lp);
  const char *src = s, *last = NULL;
  lua_Integer n = 0;
  while (n < max) {
    ms.level = 0;
    ms.depth = 0;
    const char *e = match(&ms, src, p);
    if (e && e != last) {
      n++;
      add_value(&ms, &b, src, e, tr);
      src = last = e;
    } else if (src < ms.src_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchor) break;
  }
  charge_rest(&ms);
  luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

void lesg_pattern_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch}, {"gsub", l_gsub},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
