/*
 * The gateway's pipeline: one event at a time through parse, filter, claim, latch
 * check, enrich, transform, latch mark and the sink, then its claim completed or its
 * fault recorded (the one fault convention: docs/gateway.md "Faults"). The sinks are
 * in gateway_sink.c, the loop that owns timing in gateway_loop.c, the sources in
 * gateway_source.c.
 */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "gateway_int.h"
#include "io/egress_int.h"

#define RESULT_STALE "{\"status\":\"stale\"}"
#define RESULT_ECHO "{\"status\":\"echo\"}"
#define RESULT_DROPPED "{\"status\":\"dropped\"}"

/* ------------------------------------------------------- the event's face -- */

const esg_event *esg_gateway_event_envelope(const esg_gateway_event *e) { return e ? e->ev : NULL; }

const char *esg_gateway_event_json(const esg_gateway_event *e, size_t *len) {
  if (!e) return NULL;
  if (e->json.data) {
    if (len) *len = e->json.len;
    return e->json.data;
  }
  if (len) *len = e->line_len;
  return e->line;
}

int esg_gateway_event_set_json(esg_gateway_event *e, const char *json, size_t len) {
  if (!e || !json) return esg__fail(NULL, ESG_EINVAL, "event or json is NULL");
  cJSON *v = esg__json_parse(json, len, NULL);
  bool object = cJSON_IsObject(v);
  cJSON_Delete(v);
  if (!object) return esg_gateway_event_fail(e, "the event's new JSON is not a JSON object"), ESG_EJSON;
  return esg__buf_set(&e->json, json, len) == ESG_OK ? ESG_OK : ESG_ENOMEM;
}

int esg_gateway_event_set_output(esg_gateway_event *e, const void *data, size_t len) {
  if (!e || (!data && len)) return esg__fail(NULL, ESG_EINVAL, "event or data is NULL");
  if (esg__buf_set(&e->out, data, len) != ESG_OK) return ESG_ENOMEM;
  e->has_out = true;
  return ESG_OK;
}

const void *esg_gateway_event_output(const esg_gateway_event *e, size_t *len) {
  if (!e || !e->has_out) return NULL;
  if (len) *len = e->out.len;
  return e->out.data;
}

int esg_gateway_event_fail(esg_gateway_event *e, const char *fmt, ...) {
  if (!e) return ESG_ECALLBACK;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return ESG_ECALLBACK;
}

void *esg_gateway_event_user(const esg_gateway_event *e) { return e ? e->user : NULL; }

static void drop_user(esg_gateway_event *e) {
  if (e->user && e->user_free) e->user_free(e->user);
  e->user = NULL;
  e->user_free = NULL;
}

void esg_gateway_event_set_user(esg_gateway_event *e, void *p, void (*free_fn)(void *p)) {
  if (!e) return;
  drop_user(e);
  e->user = p;
  e->user_free = free_fn;
}

const char *esg_gateway_event_claim(const esg_gateway_event *e, int64_t *token) {
  if (token) *token = e && e->claim_key ? e->claim_token : 0;
  return e ? e->claim_key : NULL;
}

int esg_gateway_event_set_entity_doc(esg_gateway_event *e, const char *json, size_t len) {
  if (!e || (!json && len)) return esg__fail(NULL, ESG_EINVAL, "event or json is NULL");
  if (esg__buf_set(&e->entity_doc, json, len) != ESG_OK) return ESG_ENOMEM;
  e->has_entity_doc = true;
  return ESG_OK;
}

#define DETAIL_MAX 8000

void esg_gateway_event_set_detail(esg_gateway_event *e, const char *text, size_t len) {
  if (!e) return;
  if (!text) len = 0;
  if (esg__buf_set(&e->detail, text, len < DETAIL_MAX ? len : DETAIL_MAX) != ESG_OK) e->detail.len = 0;
}

esg_store *esg_gateway_event_store(const esg_gateway_event *e) { return e ? e->g->s : NULL; }

esg_cache *esg_gateway_event_cache(esg_gateway_event *e) {
  if (!e) return NULL;
  esg_gateway *g = e->g;
  if (!g->cache && !g->cache_failed && esg_cache_open(&g->cache, g->s, g->o.cache) != ESG_OK) {
    g->cache_failed = true;
    snprintf(e->msg, sizeof e->msg, "cannot open the cache: %s", esg_errmsg(NULL));
  }
  return g->cache;
}

/* ------------------------------------------------------------ open/close -- */

static int copy_str(const char *v, char **out) {
  *out = NULL;
  return !v || (*out = esg__strdup(v)) ? ESG_OK : ESG_ENOMEM;
}

static int check_opts(const esg_gateway_opts *o) {
  if (!o->store) return esg__fail(NULL, ESG_EINVAL, "esg_gateway_opts.store is required");
  if (o->lease_ms < 0 || o->ttl_ms < 0 || o->latch_ttl_ms < 0)
    return esg__fail(NULL, ESG_EINVAL, "lease_ms, ttl_ms and latch_ttl_ms must not be negative");
  if ((o->latch_from || o->latch_to) && !o->latch_key)
    return esg__fail(NULL, ESG_EINVAL, "latch_from and latch_to need latch_key");
  if (o->enrich_required && !o->enrich_key)
    return esg__fail(NULL, ESG_EINVAL, "enrich_required needs enrich_key");
  if (o->load && !o->enrich_key) return esg__fail(NULL, ESG_EINVAL, "load needs enrich_key");
  switch (o->sink) {
  case ESG_GATEWAY_SINK_FILE:
  case ESG_GATEWAY_SINK_EVENTLOG:
    break;
  case ESG_GATEWAY_SINK_CALLBACK:
    if (!o->write) return esg__fail(NULL, ESG_EINVAL, "the callback sink needs write");
    break;
  case ESG_GATEWAY_SINK_HTTP:
    if (!o->http_url && !o->render) return esg__fail(NULL, ESG_EINVAL, "the HTTP sink needs http_url or render");
    break;
  default:
    return esg__fail(NULL, ESG_EINVAL, "sink kind %d is not one of ESG_GATEWAY_SINK_*", (int)o->sink);
  }
  return ESG_OK;
}

int esg__gw_enter(esg_gateway *g, const char *call) {
  if (!g) return esg__fail(NULL, ESG_EINVAL, "gateway is NULL");
  if (g->in_step) return esg__fail(&g->err, ESG_ESTATE, "%s called from a step", call);
  if (!g->s) return esg__fail(&g->err, ESG_ESTATE, "the gateway's store was closed");
  return ESG_OK;
}

/* The store is closing: deliveries are cancelled (their claims released), the cache closed. */
static void detach(esg__dep *d) {
  esg_gateway *g = (esg_gateway *)((char *)d - offsetof(esg_gateway, dep));
  if (g->egress) {
    esg_egress_close(g->egress);
    g->egress = NULL;
  }
  esg_cache_close(g->cache);
  g->cache = NULL;
  g->cache_failed = true;
  g->s = NULL;
}

int esg_gateway_open(esg_gateway **out, const esg_gateway_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!opts) return esg__fail(NULL, ESG_EINVAL, "opts is NULL: a gateway needs at least a store");
  esg_gateway_opts o;
  int rc = ESG__OPTS_COPY(NULL, esg_gateway_opts, &o, opts);
  if (rc == ESG_OK) rc = check_opts(&o);
  if (rc != ESG_OK) return rc;
  esg_gateway *g = esg__calloc(1, sizeof *g);
  if (!g) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the gateway");
  esg__handle_init(&g->err, ESG__H_GATEWAY);
  g->o = o;
  g->s = o.store;
  g->fd = -1;
  g->lease = o.lease_ms ? o.lease_ms : 30000;
  g->ttl = o.ttl_ms ? o.ttl_ms : 3600000;
  g->latch_ttl = o.latch_ttl_ms ? o.latch_ttl_ms : 600000;
  g->cur.g = g;
  /* the option strings are the caller's: keep copies */
  char *latch_from = NULL, *latch_to = NULL, *into = NULL, *path = NULL, *elkey = NULL, *url = NULL,
       *method = NULL;
  rc = copy_str(o.name ? o.name : "gateway", &g->name);
  if (rc == ESG_OK) rc = copy_str(o.source_name, &g->source_name);
  if (rc == ESG_OK) rc = copy_str(o.fault_note, &g->fault_note);
  if (rc == ESG_OK) rc = copy_str(o.latch_from, &latch_from);
  if (rc == ESG_OK) rc = copy_str(o.latch_to, &latch_to);
  if (rc == ESG_OK) rc = copy_str(o.enrich_into ? o.enrich_into : "enriched", &into);
  if (rc == ESG_OK) rc = copy_str(o.sink_path, &path);
  if (rc == ESG_OK) rc = copy_str(o.eventlog_key, &elkey);
  if (rc == ESG_OK) rc = copy_str(o.http_url, &url);
  if (rc == ESG_OK) rc = copy_str(o.http_method, &method);
  g->o.latch_from = latch_from;
  g->o.latch_to = latch_to;
  g->o.enrich_into = into;
  g->o.sink_path = path;
  g->o.eventlog_key = elkey;
  g->o.http_url = url;
  g->o.http_method = method;
  g->o.name = g->name;
  /* the headers too, in one block: the lines, then their text */
  g->o.http_headers = NULL;
  if (rc == ESG_OK && o.http_n_headers) {
    size_t bytes = o.http_n_headers * sizeof(char *);
    for (size_t i = 0; i < o.http_n_headers; i++) bytes += o.http_headers[i] ? strlen(o.http_headers[i]) + 1 : 1;
    char **h = esg__malloc(bytes);
    if (!h) {
      rc = ESG_ENOMEM;
    } else {
      char *at = (char *)(h + o.http_n_headers);
      for (size_t i = 0; i < o.http_n_headers; i++) {
        const char *line = o.http_headers[i] ? o.http_headers[i] : "";
        size_t n = strlen(line) + 1;
        h[i] = memcpy(at, line, n);
        at += n;
      }
      g->o.http_headers = (const char *const *)h;
    }
  }
  g->o.cache = NULL; /* the caller's struct is not kept: with options, the cache opens now */
  g->o.source_name = g->source_name;
  g->o.fault_note = g->fault_note;
  if (rc != ESG_OK) {
    esg__fail(NULL, ESG_ENOMEM, "out of memory opening the gateway");
  } else if (o.cache && (rc = esg_cache_open(&g->cache, g->s, o.cache)) != ESG_OK) {
    esg__fail(NULL, rc, "the gateway's cache: %s", esg_errmsg(NULL));
  } else if ((rc = esg__gw_sink_open(g)) != ESG_OK) {
    esg__fail(NULL, rc, "%s", g->err.msg);
  }
  if (rc != ESG_OK) {
    esg_gateway_close(g);
    return rc;
  }
  esg__dep_link(g->s, &g->dep, detach);
  *out = g;
  return ESG_OK;
}

int esg_gateway_close(esg_gateway *g) {
  if (!g) return ESG_OK;
  int rc = g->in_step ? esg__fail(&g->err, ESG_ESTATE, "esg_gateway_close called from a step") : ESG_OK;
  if (rc != ESG_OK) return rc;
  esg__dep_unlink(&g->dep);
  esg__gw_sink_close(g);
  esg_cache_close(g->cache);
  if (g->s && (rc = esg_store_flush(g->s)) != ESG_OK) esg__fail(NULL, rc, "%s", esg_errmsg(g->s));
  esg__buf_free(&g->cur.json);
  esg__buf_free(&g->cur.out);
  esg__buf_free(&g->cur.entity_doc);
  esg__buf_free(&g->cur.detail);
  esg__free(g->name);
  esg__free(g->source_name);
  esg__free(g->fault_note);
  esg__free((char *)g->o.latch_from);
  esg__free((char *)g->o.latch_to);
  esg__free((char *)g->o.enrich_into);
  esg__free((char *)g->o.sink_path);
  esg__free((char *)g->o.eventlog_key);
  esg__free((char *)g->o.http_url);
  esg__free((char *)g->o.http_method);
  esg__free((void *)g->o.http_headers);
  esg__handle_end(&g->err);
  esg__free(g);
  return rc;
}

void esg_gateway_get_stats(const esg_gateway *g, esg_gateway_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!g) return;
  *out = g->st;
  if (g->egress) {
    esg_egress_stats es;
    esg_egress_get_stats(g->egress, &es);
    out->circuits_open = es.circuits_open;
  }
}

/* ----------------------------------------------------------------- faults -- */

/* The id a fault of an unparsable line is recorded under: its id if it has one. */
static void unparsed_id(const char *line, size_t len, char out[ESG_KEY_MAX + 1]) {
  cJSON *j = cJSON_ParseWithLength(line, len);
  cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
  if (cJSON_IsString(id) && id->valuestring[0] && strlen(id->valuestring) <= ESG_KEY_MAX) {
    snprintf(out, ESG_KEY_MAX + 1, "%s", id->valuestring);
  } else {
    uint8_t h[32];
    char hex[65];
    esg_sha256(line, len, h);
    esg_hex(h, 8, hex);
    snprintf(out, ESG_KEY_MAX + 1, "unparsed:%s", hex);
  }
  cJSON_Delete(j);
}

/* The fault record's text: the message, a line naming where (the input line or the fault
   resubmitted, the source, the gateway or the note), then the detail, if any. */
static char *fault_text(esg_gateway *g, const char *msg, const esg__buf *detail, char *small, size_t n) {
  char where[600], paren[300];
  const esg_gateway_event *e = &g->cur;
  if (g->fault_note) snprintf(paren, sizeof paren, "(%s)", g->fault_note);
  else snprintf(paren, sizeof paren, "(gateway %s)", g->name);
  const char *of = g->source_name ? " of " : "", *src = g->source_name ? g->source_name : "";
  if (e->lineno) snprintf(where, sizeof where, "at line %lld%s%s %s", (long long)e->lineno, of, src, paren);
  else if (g->resub.id) snprintf(where, sizeof where, "at fault %lld %s", (long long)g->resub.id, paren);
  else snprintf(where, sizeof where, "%s", paren);
  size_t dlen = detail ? detail->len : 0;
  size_t need = strlen(msg) + strlen(where) + dlen + 3;
  char *text = need <= n ? small : esg__malloc(need);
  if (!text) text = small, dlen = 0; /* out of memory: without the detail */
  snprintf(text, text == small ? n : need, "%s\n%s%s%.*s", msg, where, dlen ? "\n" : "", (int)dlen,
           dlen ? detail->data : "");
  return text;
}

static int record_fault(esg_gateway *g, const char *stage, const char *msg, const esg__buf *detail,
                        const char *claim_key, int64_t token) {
  esg_gateway_event *e = &g->cur;
  char idbuf[ESG_KEY_MAX + 1];
  const char *event_id = e->ev ? esg_event_id(e->ev) : (unparsed_id(e->line, e->line_len, idbuf), idbuf);
  char small[2048];
  char *text = fault_text(g, msg, detail, small, sizeof small);
  esg_fault f = {0};
  f.event_id = event_id;
  f.stage = stage;
  f.error = text;
  f.attempts = g->resub.id ? g->resub.attempts + 1 : 1;
  f.first_attempt = g->resub.id ? g->resub.first : 0;
  f.event = e->line;
  f.event_len = e->line_len;
  int64_t id = 0;
  int rc = esg_fault_record(g->s, &f, &id);
  g->last_fault = id;
  if (text != small) esg__free(text);
  if (rc == ESG_OK && g->resub.id) esg_fault_delete(g->s, g->resub.id); /* the new record replaces it */
  g->st.faults++;
  if (claim_key) {
    char result[80];
    int n = snprintf(result, sizeof result, "{\"status\":\"fault\",\"fault\":%lld}", (long long)id);
    if (rc == ESG_OK) rc = esg_complete(g->s, claim_key, token, result, (size_t)n);
    else esg_release(g->s, claim_key, token); /* no record to point to: let a retry run it */
  }
  if (g->o.on_fault) {
    esg_gateway_fault r = {id, event_id, stage, msg, 0, f.attempts, e->lineno};
    g->in_step = true;
    g->o.on_fault(g->o.ud, &r);
    g->in_step = false;
  }
  return ESG_ECALLBACK;
}

int esg__gw_fault(esg_gateway *g, const char *stage, const char *msg, const char *claim_key, int64_t token) {
  return record_fault(g, stage, msg, NULL, claim_key, token);
}

/* ------------------------------------------------------------------ steps -- */

/* A step's failure as a fault: its own text, or the status's. */
static int step_fault(esg_gateway *g, const char *stage, int rc, const char *key, int64_t token) {
  esg_gateway_event *e = &g->cur;
  char msg[1100];
  if (e->msg[0]) snprintf(msg, sizeof msg, "%s", e->msg);
  else snprintf(msg, sizeof msg, "%s failed: %s", stage, esg_strerror(rc));
  return record_fault(g, stage, msg, &e->detail, key, token);
}

/* A store call's failure inside a stage, with the store's text. */
static int store_fault(esg_gateway *g, const char *stage, const char *what, const char *key, int64_t token) {
  char msg[1100];
  snprintf(msg, sizeof msg, "%s: %s", what, esg_errmsg(g->s));
  return esg__gw_fault(g, stage, msg, key, token);
}

/* Runs a step with the gateway marked busy (a step must not call the gateway). */
#define STEP(g, call) \
  ((g)->in_step = true, (g)->cur.msg[0] = '\0', (g)->cur.detail.len = 0, rc_ = (call), (g)->in_step = false, rc_)

/* The event without its envelope fields, as JSON: what a side reports as the content. */
static char *content_of(const char *json, size_t len) {
  static const char *const envelope[] = {"id", "type", "timestamp", "partitionKey", "tags", "raw", NULL};
  cJSON *j = cJSON_ParseWithLength(json, len);
  if (!j) return NULL;
  for (int i = 0; envelope[i]; i++) cJSON_DeleteItemFromObjectCaseSensitive(j, envelope[i]);
  char *text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  return text;
}

/* The value (JSON text) put under member into of the event's JSON. */
static int put_member(esg_gateway_event *e, const char *into, const char *value, size_t vlen) {
  size_t len;
  const char *json = esg_gateway_event_json(e, &len);
  cJSON *j = cJSON_ParseWithLength(json, len);
  cJSON *v = esg__json_parse(value, vlen, NULL);
  int rc = ESG_OK;
  if (!j || !v) {
    rc = !v ? esg_gateway_event_fail(e, "enrich: the cached value for \"%s\" is not JSON", into)
            : esg_gateway_event_fail(e, "enrich: out of memory");
    cJSON_Delete(j);
    cJSON_Delete(v);
    return rc;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(j, into);
  if (!cJSON_AddItemToObject(j, into, v)) {
    cJSON_Delete(v);
    rc = esg_gateway_event_fail(e, "enrich: out of memory");
  }
  char *text = rc == ESG_OK ? cJSON_PrintUnformatted(j) : NULL;
  cJSON_Delete(j);
  if (rc == ESG_OK && !text) rc = esg_gateway_event_fail(e, "enrich: out of memory");
  if (text && esg__buf_set(&e->json, text, strlen(text)) != ESG_OK) rc = esg_gateway_event_fail(e, "enrich: out of memory");
  cJSON_free(text);
  return rc;
}

static int run_enrich(esg_gateway *g, esg_gateway_event *e) {
  const esg_gateway_opts *o = &g->o;
  int rc_;
  esg_cache *c = (o->collect || o->enrich_key) ? esg_gateway_event_cache(e) : NULL;
  if ((o->collect || o->enrich_key) && !c) return ESG_ECALLBACK;
  int yes = 1;
  if (o->collect && o->collect_if && (yes = STEP(g, o->collect_if(o->ud, e))) < 0) return yes;
  if (o->collect && yes) {
    int rc = esg_cache_collect(c, e->ev, NULL);
    if (rc < 0) return esg_gateway_event_fail(e, "enrich: collect: %s", esg_errmsg(c));
  }
  if (o->enrich_key) {
    const char *key = NULL;
    size_t klen = 0;
    if (STEP(g, o->enrich_key(o->ud, e, &key, &klen)) < 0) return rc_;
    if (key) {
      esg_cache_entry ent;
      int rc = o->load ? esg_cache_get_or_load(c, key, o->load, o->load_ud, &ent) : esg_cache_get(c, key, &ent);
      if (rc < 0) return esg_gateway_event_fail(e, "enrich: %s", esg_errmsg(c));
      if (ent.value) {
        if ((rc = put_member(e, o->enrich_into, ent.value, ent.len)) != ESG_OK) return rc;
      } else if (o->enrich_required) {
        return esg_gateway_event_fail(e, "enrich: no value for %s (%s)", key,
                                      ent.result == ESG_CACHE_NEGATIVE ? "known absent" : "miss");
      }
    } else if (o->enrich_required) {
      return esg_gateway_event_fail(e, "enrich: no key for this event");
    }
  }
  if (o->enrich && STEP(g, o->enrich(o->ud, e)) < 0) return rc_;
  return ESG_OK;
}

/* The latch check: 1 = an echo, 0 = genuine, negative = failed (text on the event). */
static int latch_check(esg_gateway *g, esg_gateway_event *e) {
  const esg_gateway_opts *o = &g->o;
  int rc_;
  if (o->latch_flag && esg_latch_flagged(e->ev)) return 1;
  if (o->echo) {
    int r = STEP(g, o->echo(o->ud, e));
    if (r != 0) return r < 0 ? r : 1;
  }
  if (!o->latch_from) return 0;
  const char *key = NULL, *doc = NULL;
  size_t klen = 0, dlen = 0;
  if (STEP(g, o->latch_key(o->ud, e, &key, &klen)) < 0) return rc_;
  if (!key) return 0;
  char *own = NULL;
  if (o->latch_doc) {
    if (STEP(g, o->latch_doc(o->ud, e, &doc, &dlen)) < 0) return rc_;
  }
  if (!doc) {
    size_t len;
    const char *json = esg_gateway_event_json(e, &len);
    if (!(own = content_of(json, len))) return esg_gateway_event_fail(e, "latch: out of memory");
    doc = own;
    dlen = strlen(own);
  }
  int rc = esg_latch_check_doc(g->s, key, o->latch_from, doc, dlen);
  cJSON_free(own);
  if (rc < 0) return esg_gateway_event_fail(e, "latch: %s", esg_errmsg(g->s));
  return rc == ESG_LATCH_ECHO;
}

/* The latch mark, before the write: the content the other side will report back. */
static int latch_mark(esg_gateway *g, esg_gateway_event *e) {
  const esg_gateway_opts *o = &g->o;
  int rc_;
  const char *key = NULL, *doc = NULL;
  size_t klen = 0, dlen = 0;
  if (STEP(g, o->latch_key(o->ud, e, &key, &klen)) < 0) return rc_;
  if (!key) return ESG_OK;
  if (o->latch_out_doc) {
    if (STEP(g, o->latch_out_doc(o->ud, e, &doc, &dlen)) < 0) return rc_;
  }
  if (!doc) {
    doc = e->out.data;
    dlen = e->out.len;
  }
  int rc = esg_latch_doc(g->s, key, o->latch_to, doc, dlen, g->latch_ttl);
  return rc < 0 ? esg_gateway_event_fail(e, "latch: %s", esg_errmsg(g->s)) : ESG_OK;
}

/* Whether a claim's stored result came from a fault (ours or the egress engine's). */
static bool names_fault(const void *result, size_t len) {
  if (!result || !len || !memmem(result, len, "\"fault\"", 7)) return false;
  cJSON *j = cJSON_ParseWithLength(result, len);
  cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "fault");
  bool yes = cJSON_IsNumber(f) && f->valuedouble == (double)(int64_t)f->valuedouble;
  cJSON_Delete(j);
  return yes;
}

/* Strips a trailing CR; true for a line with nothing but blanks. */
static bool blank(const char *json, size_t *len) {
  if (*len && json[*len - 1] == '\r') (*len)--;
  for (size_t i = 0; i < *len; i++)
    if (json[i] != ' ' && json[i] != '\t') return false;
  return true;
}

/*
 * One event through the pipeline. The stage names are those of the fault records; the
 * claim, once owned, ends exactly once: completed (delivered, stale, echo, dropped,
 * fault), handed to the egress engine with the delivery, or released when no fault
 * could be recorded.
 */
static int run_event(esg_gateway *g, const char *json, size_t len) {
  const esg_gateway_opts *o = &g->o;
  esg_gateway_event *e = &g->cur;
  int rc_, rc;
  e->line = json;
  e->line_len = len;
  e->lineno = g->lineno;
  e->json.len = 0;
  esg__buf_free(&e->json);
  e->has_out = false;
  e->msg[0] = '\0';
  e->detail.len = 0;
  e->ev = NULL;
  e->okey = NULL;
  e->stored = false;
  e->claim_key = NULL;
  e->claim_token = 0;
  e->has_entity_doc = false;
  g->st.received++;
  if ((rc = esg_event_parse(json, len, &e->ev)) != ESG_OK) {
    if (rc == ESG_ENOMEM) return esg__fail(&g->err, rc, "out of memory parsing an event");
    return esg__gw_fault(g, "parse", esg_errmsg(NULL), NULL, 0);
  }
  if (o->filter) {
    int keep = STEP(g, o->filter(o->ud, e));
    if (keep < 0) return step_fault(g, "filter", keep, NULL, 0);
    if (!keep) {
      g->st.filtered++;
      return ESG_OK;
    }
  }
  /* idempotence */
  const char *key = NULL;
  int64_t token = 0;
  const char *ekey = NULL;
  int64_t version = 0;
  if (!o->no_idempotence) {
    const char *k = NULL;
    size_t klen = 0;
    if (o->key && STEP(g, o->key(o->ud, e, &k, &klen)) < 0) return step_fault(g, "idempotence", rc_, NULL, 0);
    k = k ? k : esg_event_id(e->ev);
    const void *hash = o->no_hash ? NULL : g->src_hash ? g->src_hash : esg_event_hash(e->ev);
    size_t hlen = o->no_hash ? 0 : g->src_hash ? g->src_hash_len : 32;
    if (o->hash && !o->no_hash) {
      const char *h = NULL;
      if (STEP(g, o->hash(o->ud, e, &h, &hlen)) < 0) return step_fault(g, "idempotence", rc_, NULL, 0);
      hash = h;
      if (!h) hlen = 0;
    }
    esg_claim_info ci;
    rc = esg_claim(g->s, k, hash, hlen, g->lease, g->ttl, &ci);
    g->last_claim = rc;
    if (rc == ESG_DUPLICATE && g->resub.id && names_fault(ci.result, ci.result_len)) {
      rc = ESG_OK; /* not done yet: the event goes on without owning the claim */
    } else if (rc == ESG_DUPLICATE) {
      g->st.duplicates++;
      return ESG_OK;
    }
    if (rc == ESG_BUSY) {
      if (esg__gw_in_flight(g, k)) { /* our own delivery still in flight: a copy of it */
        g->st.duplicates++;
        return ESG_OK;
      }
      g->st.busy++;
      return ESG_BUSY;
    }
    if (rc != ESG_NEW && rc != ESG_OK) return store_fault(g, "idempotence", "claim", NULL, 0);
    if (rc == ESG_NEW) {
      key = k;
      token = ci.token;
      e->claim_key = key;
      e->claim_token = token;
    }
    e->okey = k;
    if (o->entity) {
      if (STEP(g, o->entity(o->ud, e, &ekey, &version)) < 0) return step_fault(g, "idempotence", rc_, key, token);
      if (ekey) {
        esg_entity cur;
        rc = esg_entity_get(g->s, ekey, &cur);
        if (rc < 0) return store_fault(g, "idempotence", "entity", key, token);
        /* a resubmission may meet its own version, written before its HTTP delivery failed, and
           so may a takeover after a crash that finds the request its first attempt stored */
        bool own = g->resub.id != 0;
        if (rc == ESG_OK && cur.version == version && !own && o->sink == ESG_GATEWAY_SINK_HTTP) {
          if ((rc = esg__gw_outbox_find(g, e)) < 0) return step_fault(g, "sink", rc, key, token);
          own = e->stored;
          rc = ESG_OK;
        }
        if (rc == ESG_OK && (cur.version > version || (cur.version == version && !own))) {
          g->st.stale++;
          if (key && esg_complete(g->s, key, token, RESULT_STALE, strlen(RESULT_STALE)) != ESG_OK)
            return store_fault(g, "complete", "completing the claim", NULL, 0);
          return ESG_OK;
        }
      }
    }
  }
  /* an HTTP request an earlier attempt stored goes as it was: no step renders it again */
  bool http = o->sink == ESG_GATEWAY_SINK_HTTP;
  if (http && e->okey) {
    if ((rc = esg__gw_outbox_find(g, e)) < 0) return step_fault(g, "sink", rc, key, token);
    if (e->stored) {
      rc = esg__gw_sink_write(g, e, key, token);
      return rc == ESG_BUSY ? ESG_OK : rc < 0 ? step_fault(g, "sink", rc, key, token) : rc;
    }
  }
  /* latch check */
  if (o->latch_flag || o->echo || o->latch_from) {
    int echo = latch_check(g, e);
    if (echo < 0) return step_fault(g, "latch", echo, key, token);
    if (echo) {
      g->st.echoes++;
      if (key && esg_complete(g->s, key, token, RESULT_ECHO, strlen(RESULT_ECHO)) != ESG_OK)
        return store_fault(g, "complete", "completing the claim", NULL, 0);
      return ESG_OK;
    }
  }
  /* enrich */
  if (o->collect || o->enrich_key || o->enrich) {
    if ((rc = run_enrich(g, e)) < 0) return step_fault(g, "enrich", rc, key, token);
  }
  /* transform */
  if (o->transform) {
    if (STEP(g, o->transform(o->ud, e)) < 0) return step_fault(g, "transform", rc_, key, token);
    if (!e->has_out) {
      g->st.dropped++;
      if (key && esg_complete(g->s, key, token, RESULT_DROPPED, strlen(RESULT_DROPPED)) != ESG_OK)
        return store_fault(g, "complete", "completing the claim", NULL, 0);
      return ESG_OK;
    }
  } else {
    size_t n;
    const char *j = esg_gateway_event_json(e, &n);
    if (esg_gateway_event_set_output(e, j, n) != ESG_OK) return esg__fail(&g->err, ESG_ENOMEM, "out of memory");
  }
  if (o->latch_to && (rc = latch_mark(g, e)) < 0) return step_fault(g, "latch", rc, key, token);
  /* sink: an HTTP delivery finishes later, so the entity goes first */
  size_t elen = 0;
  const char *edoc = !ekey ? NULL
                     : e->has_entity_doc ? (elen = e->entity_doc.len, e->entity_doc.data)
                                         : esg_gateway_event_json(e, &elen);
  if (ekey && http && esg_entity_upsert(g->s, ekey, version, edoc, elen) < 0)
    return store_fault(g, "sink", "entity", key, token);
  rc = esg__gw_sink_write(g, e, key, token);
  if (rc == ESG_BUSY) return ESG_OK; /* the engine owns the claim now */
  if (rc < 0) return step_fault(g, "sink", rc, key, token);
  g->st.delivered++;
  if (ekey && !http && esg_entity_upsert(g->s, ekey, version, edoc, elen) < 0)
    return store_fault(g, "complete", "entity", key, token);
  if (key && esg_complete(g->s, key, token, NULL, 0) != ESG_OK)
    return store_fault(g, "complete", "completing the claim", NULL, 0);
  return ESG_OK;
}

int esg__gw_push(esg_gateway *g, const char *json, size_t len) {
  g->last_claim = 0;
  g->last_fault = 0;
  int rc = blank(json, &len) ? ESG_OK : run_event(g, json, len);
  g->src_hash = NULL; /* one event's only */
  g->last_rc = rc;
  esg_event_free(g->cur.ev);
  g->cur.ev = NULL;
  drop_user(&g->cur);
  return rc;
}

/* ------------------------------------------------------------- resubmit -- */

#define RESUBMIT_PREFIX "esg.resubmit/"

typedef struct fault_copy {
  esg__buf event;
  int attempts;
  int64_t first;
  bool oom;
} fault_copy;

static int copy_fault(void *ud, const esg_fault *f) {
  fault_copy *c = ud;
  c->attempts = f->attempts;
  c->first = f->first_attempt;
  c->oom = esg__buf_set(&c->event, f->event ? f->event : "", f->event ? f->event_len : 0) != ESG_OK;
  return 0;
}

int esg_gateway_resubmit(esg_gateway *g, int64_t fault_id) {
  int rc = esg__gw_enter(g, "esg_gateway_resubmit");
  if (rc != ESG_OK) return rc;
  fault_copy c = {0};
  rc = esg_fault_get(g->s, fault_id, copy_fault, &c);
  if (rc == ESG_OK && c.oom) rc = esg__fail(&g->err, ESG_ENOMEM, "out of memory reading fault %lld", (long long)fault_id);
  else if (rc != ESG_OK) esg__fail(&g->err, rc, "%s", esg_errmsg(g->s));
  /* one resubmitter per fault: a claim on esg.resubmit/<id> */
  char gkey[64];
  snprintf(gkey, sizeof gkey, RESUBMIT_PREFIX "%lld", (long long)fault_id);
  esg_claim_info gi;
  int grc = rc == ESG_OK ? esg_claim(g->s, gkey, NULL, 0, g->lease, 86400000, &gi) : rc;
  if (rc != ESG_OK) {
  } else if (grc == ESG_DUPLICATE) { /* resubmitted before; the deletion did not land */
    esg_fault_delete(g->s, fault_id);
    g->st.resubmitted++;
  } else if (grc == ESG_BUSY) {
    rc = esg__fail(&g->err, ESG_BUSY, "fault %lld is being resubmitted by another worker", (long long)fault_id);
  } else if (grc != ESG_NEW) {
    rc = esg__fail(&g->err, grc, "%s", esg_errmsg(g->s));
  } else {
    g->resub.id = fault_id;
    g->resub.attempts = c.attempts;
    g->resub.first = c.first;
    g->resub.outcome = -1;
    g->resub.via_http = false;
    g->lineno = 0;
    uint64_t busy = g->st.busy;
    rc = esg__gw_push(g, c.event.data ? c.event.data : "", c.event.len);
    if (g->resub.via_http && rc == ESG_OK) { /* the engine resubmitted the fault: it deletes or replaces it */
      esg__gw_drain(g);
      rc = g->resub.outcome == ESG_EGRESS_DELIVERED ? ESG_OK : ESG_ECALLBACK;
    } else if (rc == ESG_OK) {
      esg_fault_delete(g->s, fault_id);
    }
    g->resub.id = 0;
    if (rc == ESG_OK) {
      g->st.resubmitted++;
      esg_complete(g->s, gkey, gi.token, "{\"status\":\"resubmitted\"}", 24);
    } else {
      esg_release(g->s, gkey, gi.token);
      if (g->st.busy > busy) rc = esg__fail(&g->err, ESG_BUSY, "the event of fault %lld is in progress elsewhere", (long long)fault_id);
    }
  }
  esg__buf_free(&c.event);
  return rc;
}

int esg__gw_fault_line(esg_gateway *g, const char *data, size_t len, const char *msg) {
  esg_gateway_event *e = &g->cur;
  char text[600];
  snprintf(text, sizeof text, "%s", msg); /* msg may be the thread's slot, which the record reuses */
  e->line = data;
  e->line_len = len;
  e->lineno = g->lineno;
  e->ev = NULL;
  e->okey = NULL;
  g->st.received++;
  return esg__gw_fault(g, "parse", text, NULL, 0);
}

int esg_gateway_event_cb(void *gateway, const esg_stored_event *ev) {
  esg_gateway *g = gateway;
  if (!ev || esg__gw_enter(g, "esg_gateway_event_cb") != ESG_OK) return 1;
  g->lineno++;
  int rc = esg__gw_push(g, ev->json, ev->json_len);
  return rc < 0 && rc != ESG_ECALLBACK; /* a fault is recorded and the resync goes on */
}

int esg_gateway_push(esg_gateway *g, const char *json, size_t len) {
  int rc = esg__gw_enter(g, "esg_gateway_push");
  if (rc != ESG_OK) return rc;
  if (!json) return esg__fail(&g->err, ESG_EINVAL, "json is NULL");
  g->lineno = 0;
  return esg__gw_push(g, json, len);
}
