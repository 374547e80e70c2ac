/*
 * The Lua binding of libesg: what the module (esg.so) and the esg command share.
 */
#ifndef LESG_H
#define LESG_H

#include <lua.h>

/* Opens the module `esg`: returns its table (store, events, JSON, webhooks). The one exported symbol of esg.so. */
__attribute__((visibility("default"))) int luaopen_esg(lua_State *L);

/*
 * What a host embedding Lua (the esg command) lends the gateway: an instruction budget
 * armed around each Lua step (arm: a budget of n instructions from now; disarm: off again,
 * returning the instructions spent since arm), and the count of allocations its memory
 * limit refused (so that a parse that failed for memory is not called bad input). Registered as a light userdata under
 * LESG_HOST_KEY in the registry, out of reach of sandboxed scripts.
 */
typedef struct lesg_host {
  void (*arm)(lua_State *L, lua_Integer n);
  lua_Integer (*disarm)(lua_State *L);
  unsigned (*refusals)(void); /* allocations the host's memory limit refused so far */
  void (*charge)(lua_State *L, lua_Integer steps); /* work done in C for the script: raises past the budget */
} lesg_host;

/* string.find, match, gmatch and gsub with Lua's semantics whose matching steps are charged
   to the host's budget (lpattern.c): registered into the table on top of the stack. */
void lesg_pattern_open(lua_State *L);
#define LESG_HOST_KEY "esg.host.budget"

/* JSON <-> Lua (ljson.c). Both raise on misuse (unsupported values, bad JSON for decode). */
void lesg_json_push(lua_State *L, const char *json, size_t len); /* decodes onto the stack */
const char *lesg_json_encode(lua_State *L, int idx, size_t *len); /* pushes the JSON string */
/* A growable buffer of JSON text, from the Lua state's allocator (so it counts against a
   host's memory limit); its owner frees it with lesg_jbuf_free, also after a raise. */
typedef struct lesg_jbuf {
  char *p;
  size_t len, cap;
  lua_Alloc alloc; /* set at the first grow */
  void *alloc_ud;
} lesg_jbuf;
void lesg_jbuf_free(lesg_jbuf *b); /* frees p; b is then empty, ready for reuse */
/* Appends the JSON text of the value at idx to b (members sorted by name); raises like lesg_json_encode. */
void lesg_json_encode_buf(lua_State *L, int idx, lesg_jbuf *b);
/* The JSON bytes of the value at idx: a string as is, a lazy object's text, else encoded into b
   (emptied first). Valid while the value lives and b is not used again. */
const char *lesg_json_bytes(lua_State *L, int idx, lesg_jbuf *b, size_t *len);
/* Whether the value at idx is a lazy object not decoded yet. */
int lesg_json_islazy(lua_State *L, int idx);

/* Registers esg.json functions into the table on top of the stack. */
void lesg_json_open(lua_State *L);

/* A lazy object (see ljson.c) for the JSON object text at index str, pushed. */
void lesg_json_lazy(lua_State *L, int str);

/* Registry key of the lazy objects' metatable. */
#define LESG_LAZY_MT "esg.json.lazy"

/* Registry key of the array marker metatable (decoded arrays carry it). */
#define LESG_ARRAY_MT "esg.json.array"

#endif
