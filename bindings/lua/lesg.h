/*
 * The Lua binding of libesg: what the module (esg.so) and the esg command share.
 */
#ifndef LESG_H
#define LESG_H

#include <lua.h>

/* Opens the module `esg`: returns its table (store, events, JSON, webhooks). The one exported symbol of esg.so. */
__attribute__((visibility("default"))) int luaopen_esg(lua_State *L);

/* JSON <-> Lua (ljson.c). Both raise on misuse (unsupported values, bad JSON for decode). */
void lesg_json_push(lua_State *L, const char *json, size_t len); /* decodes onto the stack */
const char *lesg_json_encode(lua_State *L, int idx, size_t *len); /* pushes the JSON string */
/* Registers esg.json functions into the table on top of the stack. */
void lesg_json_open(lua_State *L);

/* A lazy object (see ljson.c) for the JSON object text at index str, pushed. */
void lesg_json_lazy(lua_State *L, int str);

/* Registry key of the lazy objects' metatable. */
#define LESG_LAZY_MT "esg.json.lazy"

/* Registry key of the array marker metatable (decoded arrays carry it). */
#define LESG_ARRAY_MT "esg.json.array"

#endif
