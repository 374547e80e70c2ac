/*
 * The Lua JSON codec (bindings/lua/ljson.c): Lua 5.4 with the esg module opened as the
 * esg command does (package.preload), then esg.json.decode of the input and encode of
 * what it gave, in a protected call. Invariants: decode answers a value or nil, message,
 * "EJSON", never raises; encode of a decoded value succeeds (except numbers JSON text
 * can spell but not hold: 1e999 decodes to inf) and decodes again to the same document
 * (equal canonical content hashes: Lua tables have no key order); a lazy object of the
 * input encodes as the input itself, and touching it raises at most.
 */
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include <esg.h>
#include "lesg.h"
#include "fuzz.h"

static const char check_lua[] =
    "local esg = require('esg')\n"
    "local json = esg.json\n"
    "return function(s)\n"
    "  local v, msg, code = json.decode(s)\n"
    "  if v == nil then\n"
    "    assert(type(msg) == 'string' and code == 'EJSON', 'decode failed without EJSON')\n"
    "  else\n"
    "    local ok, e1 = pcall(json.encode, v)\n"
    "    if not ok then\n"
    "      assert(tostring(e1):find('non%-finite'), 'encode of a decoded value raised: ' .. tostring(e1))\n"
    "    else\n"
    "      assert(type(e1) == 'string')\n"
    "      local v2, m2 = json.decode(e1)\n"
    "      assert(v2 ~= nil, 'encode gave text decode rejects: ' .. tostring(m2))\n"
    "      local e2 = json.encode(v2)\n"
    "      local h1, hm1 = esg.content_hash(e1)\n"
    "      local h2 = esg.content_hash(e2)\n"
    "      assert(h1 and h1 == h2, 'decode(encode(x)) changed the document: ' .. tostring(hm1))\n"
    "    end\n"
    "  end\n"
    "  local lz = json.lazy(s)\n"
    "  assert(json.islazy(lz))\n"
    "  assert(json.encode(lz) == s, 'a lazy object did not encode as its text')\n"
    "  local ok = pcall(function() return lz.id end)\n"
    "  if ok then assert(not json.islazy(lz)) end\n"
    "end\n";

static lua_State *L;
static int check_ref = LUA_NOREF;

static void init(void) {
  L = luaL_newstate();
  FUZZ_CHECK(L != NULL);
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_esg);
  lua_setfield(L, -2, "esg");
  lua_pop(L, 1);
  if (luaL_loadbufferx(L, check_lua, sizeof check_lua - 1, "=fuzz_ljson", "t") != LUA_OK ||
      lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_ljson: %s\n", lua_tostring(L, -1));
    abort();
  }
  check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) init();
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "fuzz invariant failed (Lua): %s\n", msg ? msg : "(not a string)");
    abort();
  }
  lua_settop(L, 0);
  /* all this input's garbage freed now: libFuzzer runs a leak check (slow) after an input
     that allocated more than it freed, and then reports only real leaks */
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
