/*
 * The scenario pipeline in C, on esg_gateway (tests/README.md, "Scenarios"):
 *
 *   gateway_c run CONFIG EVENTS STORE     the events through the gateway
 *   gateway_c resubmit CONFIG STORE       every fault resubmitted
 *   gateway_c dump CONFIG STORE           what the store holds, as JSON on stdout
 *
 * The same steps as gateway.lua and gateway.py: only order-* events; claim "evt:<id>";
 * the order as an entity at its version (its document: the order); content latches of
 * "order:<id>" (read from "shop", written to "crm"); the customer enriched from a fixed
 * table by a loader (its value counts the loads of this process, so a cache hit shows as
 * an older count); a transform that refuses orders marked fail = "transform" and drops
 * those marked drop; PUT to the receiver. JSON this program writes has its members
 * sorted by name, as Lua and Python write tables. Like the esg commands, fault records
 * name the source and the run ("at line N of EVENTS (script gateway_c, run ID)"), and
 * each run stores its counters as an "esg.run" event under "esg.runs", so the three
 * languages are read back alike.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <esg.h>

typedef struct cfg {
  cJSON *root;
  const char *url;
  double lease, timeout, backoff_base, backoff_cap;
  int max_attempts;
  cJSON *customers, *dump;
} cfg;

typedef struct steps {
  const cfg *c;
  int loads, renders;
  char key[300], ekey[300], lkey[300], ckey[300]; /* strings handed back to the gateway */
  char *doc_text;                                 /* the latch doc handed back */
} steps;

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int64_t ms(double s) { return (int64_t)(s * 1000 + 0.5); }

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      char *more = realloc(buf, cap = 2 * cap + 4096 + 1);
      if (!more) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = more;
    }
    size_t r = fread(buf + n, 1, 4096, f);
    n += r;
    if (r == 0) break;
  }
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static int load_cfg(cfg *c, const char *path) {
  char *text = slurp(path);
  c->root = text ? cJSON_Parse(text) : NULL;
  free(text);
  if (!c->root) return fprintf(stderr, "gateway_c: cannot read %s\n", path), -1;
  const cJSON *url = cJSON_GetObjectItemCaseSensitive(c->root, "url");
  c->url = cJSON_IsString(url) ? url->valuestring : NULL;
  c->lease = num(c->root, "lease");
  c->timeout = num(c->root, "timeout");
  c->backoff_base = num(c->root, "backoff_base");
  c->backoff_cap = num(c->root, "backoff_cap");
  c->max_attempts = (int)num(c->root, "max_attempts");
  c->customers = cJSON_GetObjectItemCaseSensitive(c->root, "customers");
  c->dump = cJSON_GetObjectItemCaseSensitive(c->root, "dump");
  return 0;
}

/* ------------------------------------------------------------ the steps -- */

/* The event parsed once per version of its JSON (the enrich lookup replaces it), kept in
   the event's scratch slot and freed when the event ends. */
typedef struct parsed {
  cJSON *doc;
  const char *src;
} parsed;

static void free_parsed(void *p) {
  cJSON_Delete(((parsed *)p)->doc);
  free(p);
}

static cJSON *doc_of(esg_gateway_event *e) {
  parsed *p = esg_gateway_event_user(e);
  size_t len;
  const char *json = esg_gateway_event_json(e, &len);
  if (!p) {
    if (!(p = calloc(1, sizeof *p))) return NULL;
    esg_gateway_event_set_user(e, p, free_parsed);
  }
  if (p->src != json) {
    cJSON_Delete(p->doc);
    p->doc = cJSON_ParseWithLength(json, len);
    p->src = json;
  }
  return p->doc;
}

/* Sorts the members of every object in v by name (bytewise), as Lua and Python write tables. */
static void sort_members(cJSON *v) {
  for (cJSON *c = v ? v->child : NULL; c; c = c->next) sort_members(c);
  if (!cJSON_IsObject(v) || !v->child) return;
  cJSON *sorted = NULL, *prev = NULL;
  for (cJSON *c = v->child, *next; c; c = next) { /* insertion sort of the member list */
    next = c->next;
    cJSON **at = &sorted;
    while (*at && strcmp((*at)->string, c->string) <= 0) at = &(*at)->next;
    c->next = *at;
    *at = c;
  }
  for (cJSON *c = sorted; c; c = c->next) c->prev = prev, prev = c;
  sorted->prev = prev; /* cJSON's convention: the first member's prev is the last one */
  v->child = sorted;
}

/* v's JSON text, its members sorted; v is deleted. */
static char *sorted_text(cJSON *v) {
  sort_members(v);
  char *text = cJSON_PrintUnformatted(v);
  cJSON_Delete(v);
  return text;
}

static const char *order_str(esg_gateway_event *e, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc_of(e), "order"), k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int only_orders(void *ud, esg_gateway_event *e) {
  (void)ud;
  return strncmp(esg_event_type(esg_gateway_event_envelope(e)), "order-", 6) == 0;
}

static int claim_key(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  steps *r = ud;
  *len = (size_t)snprintf(r->key, sizeof r->key, "evt:%s", esg_event_id(esg_gateway_event_envelope(e)));
  *out = r->key;
  return ESG_OK;
}

static int order_entity(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  steps *r = ud;
  const char *id = order_str(e, "id");
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc_of(e), "order"), "version");
  if (!id || !cJSON_IsNumber(v)) return esg_gateway_event_fail(e, "the order has no id or version");
  snprintf(r->ekey, sizeof r->ekey, "order:%s", id);
  *key = r->ekey;
  *version = (int64_t)v->valuedouble;
  char *doc = sorted_text(cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(doc_of(e), "order"), 1));
  int rc = doc ? esg_gateway_event_set_entity_doc(e, doc, strlen(doc)) : ESG_ENOMEM;
  cJSON_free(doc);
  return rc;
}

static int latch_key(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  steps *r = ud;
  const char *id = order_str(e, "id");
  if (!id) return esg_gateway_event_fail(e, "the order has no id");
  *len = (size_t)snprintf(r->lkey, sizeof r->lkey, "order:%s", id);
  *out = r->lkey;
  return ESG_OK;
}

static int latch_doc(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  steps *r = ud;
  cJSON_free(r->doc_text);
  r->doc_text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc_of(e), "order"));
  if (!r->doc_text) return esg_gateway_event_fail(e, "the event has no order");
  *out = r->doc_text;
  *len = strlen(r->doc_text);
  return ESG_OK;
}

static int customer_key(void *ud, esg_gateway_event *e, const char **out, size_t *len) {
  steps *r = ud;
  const char *id = order_str(e, "customer");
  if (!id) return esg_gateway_event_fail(e, "the order has no customer");
  *len = (size_t)snprintf(r->ckey, sizeof r->ckey, "customer/%s", id);
  *out = r->ckey;
  return ESG_OK;
}

/* The fixed table: {"loads": n, "name": ..., "tier": ...}, or known absent. */
static int load_customer(void *ud, const char *key, int64_t deadline, esg_cache_load *ld) {
  (void)deadline;
  steps *r = ud;
  const cJSON *c = strncmp(key, "customer/", 9) == 0 ? cJSON_GetObjectItemCaseSensitive(r->c->customers, key + 9) : NULL;
  if (!c) return ESG_NOT_FOUND;
  cJSON *v = cJSON_CreateObject();
  cJSON_AddItemToObject(v, "name", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, "name"), 1));
  cJSON_AddItemToObject(v, "tier", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, "tier"), 1));
  cJSON_AddNumberToObject(v, "loads", ++r->loads);
  char *text = sorted_text(v);
  int rc = text ? esg_cache_load_set(ld, text, strlen(text), 0) : ESG_ENOMEM;
  cJSON_free(text);
  return rc;
}

static int to_output(void *ud, esg_gateway_event *e) {
  steps *r = ud;
  cJSON *doc = doc_of(e), *order = cJSON_GetObjectItemCaseSensitive(doc, "order");
  const char *id = esg_event_id(esg_gateway_event_envelope(e)), *fail = order_str(e, "fail");
  if (fail && strcmp(fail, "transform") == 0) return esg_gateway_event_fail(e, "transform refused: %s", id);
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(order, "drop"))) return ESG_OK; /* no output: dropped */
  cJSON *out = cJSON_CreateObject(), *reply = cJSON_GetObjectItemCaseSensitive(doc, "reply");
  cJSON_AddStringToObject(out, "event", id);
  cJSON_AddItemToObject(out, "order", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(order, "id"), 1));
  cJSON_AddItemToObject(out, "version", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(order, "version"), 1));
  cJSON_AddItemToObject(out, "amount", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(order, "amount"), 1));
  cJSON_AddItemToObject(out, "customer", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(doc, "customer"), 1));
  cJSON_AddNumberToObject(out, "n", ++r->renders);
  if (reply) cJSON_AddItemToObject(out, "reply", cJSON_Duplicate(reply, 1));
  char *text = sorted_text(out);
  int rc = text ? esg_gateway_event_set_output(e, text, strlen(text)) : ESG_ENOMEM;
  cJSON_free(text);
  return rc;
}

/* ---------------------------------------------------------- the gateway -- */

static const char *const headers[] = {"X-Gateway: scenarios"};

static int open_gateway(esg_gateway **g, esg_store *s, steps *r, esg_egress_opts *eo, const char *source,
                        const char *note) {
  eo->timeout_ms = ms(r->c->timeout);
  eo->max_attempts = r->c->max_attempts;
  eo->backoff_base_ms = ms(r->c->backoff_base);
  eo->backoff_cap_ms = ms(r->c->backoff_cap);
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = s;
  o.name = "scenarios";
  o.source_name = source;
  o.fault_note = note;
  o.ud = r;
  o.filter = only_orders;
  o.key = claim_key;
  o.lease_ms = ms(r->c->lease);
  o.entity = order_entity;
  o.latch_key = latch_key;
  o.latch_from = "shop";
  o.latch_to = "crm";
  o.latch_doc = latch_doc;
  o.enrich_key = customer_key;
  o.load = load_customer;
  o.load_ud = r;
  o.enrich_into = "customer";
  o.enrich_required = 1;
  o.transform = to_output;
  o.sink = ESG_GATEWAY_SINK_HTTP;
  o.http_url = r->c->url;
  o.http_method = "PUT";
  o.http_headers = headers;
  o.http_n_headers = 1;
  o.egress = eo;
  return esg_gateway_open(g, &o);
}

/* The run's counters as the esg commands store them (lua/esg/gateway.lua, python/esg/__main__.py). */
static int record_run(esg_store *s, const esg_gateway_stats *st, const char *run_id, const char *kind,
                      const char *source) {
  char name[64], id[37];
  int n = snprintf(name, sizeof name, "esg.run/%s", run_id);
  esg_uuid5(ESG_UUID_NS_EVENT, name, (size_t)n, id);
  cJSON *rec = cJSON_CreateObject(), *run = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "id", id);
  cJSON_AddStringToObject(rec, "type", "esg.run");
  cJSON_AddNumberToObject(rec, "timestamp", (double)esg_store_now(s));
  cJSON_AddStringToObject(rec, "partitionKey", "esg.runs");
  cJSON_AddItemToObject(rec, "run", run);
  cJSON_AddStringToObject(run, "kind", kind);
  cJSON_AddStringToObject(run, "name", "scenarios");
  cJSON_AddStringToObject(run, "source", source);
#define C(f) cJSON_AddNumberToObject(run, #f, (double)st->f);
  C(received) C(delivered) C(duplicates) C(echoes) C(stale) C(faults) C(filtered) C(dropped) C(busy) C(cancelled)
#undef C
  char *text = cJSON_PrintUnformatted(rec);
  cJSON_Delete(rec);
  esg_event *ev = NULL;
  int rc = text ? esg_event_parse(text, strlen(text), &ev) : ESG_ENOMEM;
  if (rc == ESG_OK) rc = esg_event_put(s, ev, "esg.runs", 0);
  esg_event_free(ev);
  cJSON_free(text);
  return rc < 0 ? rc : ESG_OK;
}

static int fault_id_cb(void *ud, const esg_fault *f) {
  cJSON_AddItemToArray(ud, cJSON_CreateNumber((double)f->id));
  return 0;
}

static int cmd_gateway(const cfg *c, esg_store *s, const char *events) {
  steps r = {.c = c};
  char name[128], run_id[37], note[80];
  int n = snprintf(name, sizeof name, "gateway_c/%ld/%lld", (long)getpid(), (long long)esg_store_now(s));
  esg_uuid5(ESG_UUID_NS_EVENT, name, (size_t)n, run_id);
  snprintf(note, sizeof note, "script gateway_c, run %s", run_id);
  esg_egress_opts eo = ESG_EGRESS_OPTS_INIT;
  esg_gateway *g;
  int rc = open_gateway(&g, s, &r, &eo, events, note);
  if (rc != ESG_OK) return fprintf(stderr, "gateway_c: %s\n", esg_errmsg(NULL)), rc;
  if (events) {
    esg_gateway_source src;
    if ((rc = esg_gateway_source_jsonl(&src, events)) == ESG_OK) {
      rc = esg_gateway_run(g, &src);
      src.close(src.ud);
    }
  } else {
    cJSON *ids = cJSON_CreateArray(), *id;
    rc = esg_faults_list(s, fault_id_cb, ids);
    cJSON_ArrayForEach(id, ids) {
      int r2 = esg_gateway_resubmit(g, (int64_t)id->valuedouble);
      if (r2 < 0 && r2 != ESG_ECALLBACK && r2 != ESG_BUSY) rc = r2;
    }
    cJSON_Delete(ids);
  }
  if (rc != ESG_OK) fprintf(stderr, "gateway_c: %s\n", esg_errmsg(g));
  esg_gateway_stats st;
  int drc = esg_gateway_drain(g); /* the counters once every delivery has ended */
  esg_gateway_get_stats(g, &st);
  int crc = esg_gateway_close(g);
  if (rc == ESG_OK) rc = drc != ESG_OK ? drc : crc;
  if (rc == ESG_OK) rc = record_run(s, &st, run_id, events ? "run" : "resubmit", events ? events : "faults");
  cJSON_free(r.doc_text);
  return rc;
}

/* ------------------------------------------------------------- the dump -- */

static int run_cb(void *ud, const esg_stored_event *ev) {
  cJSON *doc = cJSON_ParseWithLength(ev->json, ev->json_len), *run = cJSON_GetObjectItemCaseSensitive(doc, "run");
  static const char *const counters[] = {"received", "delivered", "duplicates", "echoes", "stale",
                                         "faults", "filtered", "dropped", "busy", "cancelled"};
  cJSON *item = cJSON_CreateObject(), *c = cJSON_AddObjectToObject(item, "counters");
  cJSON_AddItemReferenceToObject(item, "kind", cJSON_GetObjectItemCaseSensitive(run, "kind"));
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
    cJSON_AddItemToObject(c, counters[i], cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(run, counters[i]), 1));
  cJSON_AddItemToArray(ud, cJSON_Duplicate(item, 1));
  cJSON_Delete(item);
  cJSON_Delete(doc);
  return 0;
}

static cJSON *text_or_null(const char *p, size_t n) {
  if (!p) return cJSON_CreateNull();
  char *t = strndup(p, n);
  cJSON *v = cJSON_CreateString(t ? t : "");
  free(t);
  return v;
}

static int fault_cb(void *ud, const esg_fault *f) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "id", (double)f->id);
  cJSON_AddStringToObject(o, "event_id", f->event_id);
  cJSON_AddStringToObject(o, "stage", f->stage);
  cJSON_AddStringToObject(o, "error", f->error);
  cJSON_AddNumberToObject(o, "http_status", f->http_status);
  cJSON_AddNumberToObject(o, "attempts", f->attempts);
  cJSON_AddItemToObject(o, "event", text_or_null(f->event, f->event_len));
  cJSON_AddNumberToObject(o, "first_attempt", (double)f->first_attempt / 1000.0);
  cJSON_AddNumberToObject(o, "last_attempt", (double)f->last_attempt / 1000.0);
  cJSON_AddItemToArray(ud, o);
  return 0;
}

/* A claim read by claiming it without a payload check: new means there was none (released again). */
static cJSON *claim_of(esg_store *s, const char *key) {
  esg_claim_info ci;
  int rc = esg_claim(s, key, NULL, 0, 1000, 1000, &ci);
  if (rc == ESG_NEW) {
    esg_release(s, key, ci.token);
    return cJSON_CreateString("absent");
  }
  if (rc == ESG_BUSY) return cJSON_CreateString("busy");
  if (rc != ESG_DUPLICATE) return cJSON_CreateString(esg_errmsg(s));
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "result", text_or_null(ci.result, ci.result_len));
  return o;
}

static int cmd_dump(const cfg *c, esg_store *s) {
  cJSON *out = cJSON_CreateObject(), *item;
  cJSON *runs = cJSON_AddArrayToObject(out, "runs"), *faults = cJSON_AddArrayToObject(out, "faults");
  cJSON *claims = cJSON_AddObjectToObject(out, "claims"), *entities = cJSON_AddObjectToObject(out, "entities");
  cJSON *latches = cJSON_AddObjectToObject(out, "latches");
  int rc = esg_events_by_key(s, "esg.runs", run_cb, runs);
  if (rc == ESG_OK) rc = esg_faults_list(s, fault_cb, faults);
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(c->dump, "claims"))
    cJSON_AddItemToObject(claims, item->valuestring, claim_of(s, item->valuestring));
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(c->dump, "entities")) {
    esg_entity ent;
    if (esg_entity_get(s, item->valuestring, &ent) != ESG_OK) {
      cJSON_AddNullToObject(entities, item->valuestring);
      continue;
    }
    cJSON *o = cJSON_AddObjectToObject(entities, item->valuestring);
    cJSON_AddNumberToObject(o, "version", (double)ent.version);
    cJSON_AddItemToObject(o, "doc", text_or_null(ent.doc, ent.doc_len));
  }
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(c->dump, "latches")) {
    const char *key = cJSON_GetArrayItem(item, 0)->valuestring, *side = cJSON_GetArrayItem(item, 1)->valuestring;
    char name[700];
    int n = 0;
    snprintf(name, sizeof name, "%s %s", key, side);
    esg_latch_pending(s, key, side, &n);
    cJSON_AddNumberToObject(latches, name, n);
  }
  char *text = cJSON_PrintUnformatted(out);
  cJSON_Delete(out);
  if (text) fputs(text, stdout);
  cJSON_free(text);
  if (rc != ESG_OK) fprintf(stderr, "gateway_c: %s\n", esg_errmsg(s));
  return rc;
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  int run = strcmp(cmd, "run") == 0 && argc == 5;
  if (!run && !((strcmp(cmd, "resubmit") == 0 || strcmp(cmd, "dump") == 0) && argc == 4)) {
    fprintf(stderr, "usage: gateway_c run CONFIG EVENTS STORE | resubmit CONFIG STORE | dump CONFIG STORE\n");
    return 2;
  }
  cfg c;
  memset(&c, 0, sizeof c);
  if (load_cfg(&c, argv[2]) < 0) return 2;
  esg_store *s;
  if (esg_store_open(&s, argv[run ? 4 : 3], NULL) != ESG_OK) {
    fprintf(stderr, "gateway_c: %s\n", esg_errmsg(NULL));
    cJSON_Delete(c.root);
    return 2;
  }
  int rc = strcmp(cmd, "dump") == 0 ? cmd_dump(&c, s) : cmd_gateway(&c, s, run ? argv[3] : NULL);
  if (esg_store_close(s) != ESG_OK && rc == ESG_OK) rc = ESG_ESTORE;
  cJSON_Delete(c.root);
  return rc == ESG_OK ? 0 : 1;
}
