/*
 * What the parts of the Lua binding share (not installed): the store handle and
 * argument helpers. Handles built on a store (caches, snapshots, egress engines)
 * keep a pointer to it (their user value 1 keeps it alive); closing the store
 * detaches them in C, and they then raise as closed.
 */
#ifndef LESG_INT_H
#define LESG_INT_H

#include <lua.h>
#include <lauxlib.h>
#include "esg.h"

#define STORE_MT "esg.Store"
#define EVENT_MT "esg.Event"

typedef struct lstore {
  esg_store *s;
  lua_State *L;      /* the caller of the running method or close: the clock and the callbacks
                        of the handles built on the store run on it */
  int clock_ref;     /* the Lua clock function, or LUA_NOREF */
  int clock_failed;
  char clock_err[256];
  char path[512];
} lstore;

/* The largest time or duration the binding takes, in ms (ESG_SECONDS_MAX s; INT64_MAX is forever). */
#define LESG_MS_MAX INT64_C(9000000000000000000)

int lesg_push_fail(lua_State *L, int rc, const char *msg);
lua_Number lesg_ms_to_s(int64_t ms);
int64_t lesg_opt_ms(lua_State *L, int opts, const char *field, int64_t def);
/* As lesg_opt_ms, at most max ms; math.huge is INT64_MAX (forever) when forever is set. */
int64_t lesg_opt_ms_max(lua_State *L, int opts, const char *field, int64_t def, int64_t max, int forever);
/* Seconds n (named what, for errors) as ms, range-checked; math.huge is INT64_MAX when forever. */
int64_t lesg_num_ms(lua_State *L, lua_Number n, const char *what, int64_t max, int forever);
int lesg_opt_table(lua_State *L, int arg);
int lesg_opt_bool(lua_State *L, int opts, const char *field);
const char *lesg_json_arg(lua_State *L, int arg, size_t *len);
lstore *lesg_check_store(lua_State *L, int arg);
lstore *lesg_use_store(lua_State *L, lstore *ls);
void lesg_check_clock(lua_State *L, lstore *ls);
int lesg_push_ok(lua_State *L, lstore *ls, int rc);
int lesg_push_ok_or_nil(lua_State *L, lstore *ls, int rc);
int lesg_push_count(lua_State *L, lstore *ls, int rc, int64_t n);
void *lesg_new_handle(lua_State *L, size_t size, int nuv, const char *mt);
void lesg_new_type(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods,
                   void (*more)(lua_State *L));
const char *lesg_check_key(lua_State *L, int arg);
void lesg_push_stored(lua_State *L, const esg_stored_event *e, int decode);
/* The esg_event of an esg.Event argument, or NULL when it is not one. */
esg_event *lesg_test_event(lua_State *L, int arg);

/* lesg.c: a new esg.Event parsed from json (or nil, msg, code); an esg.Claim the caller owns,
   on the store at index store. */
int lesg_push_event(lua_State *L, const char *json, size_t len);
void lesg_push_owned_claim(lua_State *L, int store, const char *key, int64_t token);

/* lfeat.c, for the gateway (lgateway.c): option readers of store:cache and store:egress
   (strings stay on the stack or in opts), header lines from a list or a map (pushes a
   userdata holding them), an esg.HttpLoader argument or NULL, a Lua loader function at fn
   run protected as an esg_cache_loader, and an esg.Cache on a cache someone else owns
   (its close only forgets it; so does lesg_cache_view_forget, when the owner closes it). */
void lesg_cache_opts(lua_State *L, int opts, esg_cache_opts *o);
void lesg_egress_opts(lua_State *L, int opts, esg_egress_opts *o);
const char **lesg_header_lines(lua_State *L, int idx, size_t *n);
esg_http_loader *lesg_test_http_loader(lua_State *L, int arg);
int lesg_lua_load(lua_State *L, int fn, int *in_load, const char *key, int64_t deadline, esg_cache_load *ld);
void *lesg_push_cache_view(lua_State *L, int store, lstore *ls, esg_cache *c);
void lesg_cache_view_forget(void *view);

/* lgateway.c: store:gateway and the esg.Gateway type. */
void lesg_gateway_methods(lua_State *L);
void lesg_gateway_open(lua_State *L);

/* lfeat.c: the cache, latches, resync and egress; adds store methods to the table on top. */
void lesg_feat_methods(lua_State *L);
/* lfeat.c: module functions (esg.latch, esg.http_loader) and types, into the module table on top. */
void lesg_feat_open(lua_State *L);

#endif
