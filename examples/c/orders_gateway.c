/*
 * The orders gateway in C: the pipeline of examples/orders/gateway.lua on esg_gateway.
 *
 *   build/examples/orders_gateway examples/orders/events.jsonl orders-c.db
 *
 * Order events from the shop become deal records for a CRM, as JSON lines on stdout:
 *   filter       only order-* events pass;
 *   idempotence  each event id is claimed once; the order is also an entity under the
 *                inverse optimistic lock, so a late, older update counts as stale;
 *   latch        an update tagged origin "crm" is the echo of the CRM's own change;
 *   enrich       the customer's tier (a static table standing in for a lookup);
 *   transform    the deal record; an item without a numeric price is a fault.
 * Run it twice: the second run counts every event as a duplicate and writes nothing.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <esg.h>

/* The event as a cJSON tree, parsed once per event by the first step that needs it and
   kept in the event's scratch slot (freed when the event ends). */
static void free_doc(void *p) { cJSON_Delete(p); }

static cJSON *doc_of(esg_gateway_event *e) {
  cJSON *doc = esg_gateway_event_user(e);
  if (!doc) {
    size_t len;
    const char *json = esg_gateway_event_json(e, &len);
    doc = cJSON_ParseWithLength(json, len);
    esg_gateway_event_set_user(e, doc, free_doc);
  }
  return doc;
}

typedef struct run {
  char key[300]; /* the entity key handed back by order_entity */
} run;

static cJSON *order_of(esg_gateway_event *e) { return cJSON_GetObjectItemCaseSensitive(doc_of(e), "order"); }

static int only_orders(void *ud, esg_gateway_event *e) {
  (void)ud;
  return strncmp(esg_event_type(esg_gateway_event_envelope(e)), "order-", 6) == 0;
}

static int order_entity(void *ud, esg_gateway_event *e, const char **key, int64_t *version) {
  run *r = ud;
  cJSON *order = order_of(e);
  cJSON *id = cJSON_GetObjectItemCaseSensitive(order, "id");
  cJSON *v = cJSON_GetObjectItemCaseSensitive(order, "version");
  if (!cJSON_IsString(id) || !cJSON_IsNumber(v)) return esg_gateway_event_fail(e, "the order has no id or version");
  snprintf(r->key, sizeof r->key, "order:%s", id->valuestring);
  *key = r->key;
  *version = (int64_t)v->valuedouble;
  return ESG_OK;
}

static int crm_echo(void *ud, esg_gateway_event *e) {
  (void)ud;
  cJSON *tags = cJSON_GetObjectItemCaseSensitive(doc_of(e), "tags");
  cJSON *origin = cJSON_GetObjectItemCaseSensitive(tags, "origin");
  return cJSON_IsString(origin) && strcmp(origin->valuestring, "crm") == 0;
}

static const char *tier_of(const char *customer) {
  if (strcmp(customer, "ada@example.com") == 0) return "gold";
  if (strcmp(customer, "grace@example.com") == 0) return "silver";
  return "standard";
}

static int to_deal(void *ud, esg_gateway_event *e) {
  (void)ud;
  const esg_event *ev = esg_gateway_event_envelope(e);
  cJSON *order = order_of(e);
  cJSON *items = cJSON_GetObjectItemCaseSensitive(order, "items");
  double amount = 0;
  cJSON *item;
  cJSON_ArrayForEach(item, items) {
    cJSON *qty = cJSON_GetObjectItemCaseSensitive(item, "qty"), *price = cJSON_GetObjectItemCaseSensitive(item, "price");
    if (!cJSON_IsNumber(qty) || !cJSON_IsNumber(price)) return esg_gateway_event_fail(e, "an item has no numeric qty or price");
    amount += qty->valuedouble * price->valuedouble;
  }
  const char *type = esg_event_type(ev);
  cJSON *customer = cJSON_GetObjectItemCaseSensitive(order, "customer");
  cJSON *currency = cJSON_GetObjectItemCaseSensitive(order, "currency");
  cJSON *deal = cJSON_CreateObject();
  cJSON_AddItemReferenceToObject(deal, "dealId", cJSON_GetObjectItemCaseSensitive(order, "id"));
  cJSON_AddStringToObject(deal, "stage", strcmp(type, "order-cancelled") == 0 ? "lost" : "open");
  cJSON_AddNumberToObject(deal, "amount", amount);
  cJSON_AddStringToObject(deal, "currency", cJSON_IsString(currency) ? currency->valuestring : "EUR");
  cJSON_AddStringToObject(deal, "contact", cJSON_IsString(customer) ? customer->valuestring : "");
  cJSON_AddStringToObject(deal, "tier", cJSON_IsString(customer) ? tier_of(customer->valuestring) : "standard");
  cJSON_AddItemReferenceToObject(deal, "version", cJSON_GetObjectItemCaseSensitive(order, "version"));
  cJSON_AddStringToObject(deal, "sourceEvent", esg_event_id(ev));
  char *text = cJSON_PrintUnformatted(deal);
  cJSON_Delete(deal);
  int rc = text ? esg_gateway_event_set_output(e, text, strlen(text)) : ESG_ENOMEM;
  cJSON_free(text);
  return rc;
}

static void report_fault(void *ud, const esg_gateway_fault *f) {
  (void)ud;
  fprintf(stderr, "fault %lld: line %lld (%s), %s: %s\n", (long long)f->id, (long long)f->lineno, f->event_id,
          f->stage, f->error);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s EVENTS.jsonl STORE\n", argv[0]);
    return 2;
  }
  esg_store *store;
  if (esg_store_open(&store, argv[2], NULL) != ESG_OK) {
    fprintf(stderr, "orders_gateway: %s\n", esg_errmsg(NULL));
    return 1;
  }
  run r = {0};
  esg_gateway_opts o = ESG_GATEWAY_OPTS_INIT;
  o.store = store;
  o.name = "orders";
  o.ud = &r;
  o.filter = only_orders;
  o.ttl_ms = 7 * 24 * 3600 * 1000LL;
  o.entity = order_entity;
  o.echo = crm_echo;
  o.transform = to_deal;
  o.sink = ESG_GATEWAY_SINK_FILE; /* stdout */
  o.on_fault = report_fault;
  esg_gateway *g;
  esg_gateway_source src;
  int rc = esg_gateway_open(&g, &o);
  if (rc != ESG_OK || (rc = esg_gateway_source_jsonl(&src, argv[1])) != ESG_OK) {
    fprintf(stderr, "orders_gateway: %s\n", esg_errmsg(NULL));
    return 1;
  }
  rc = esg_gateway_run(g, &src);
  if (rc != ESG_OK) fprintf(stderr, "orders_gateway: %s\n", esg_errmsg(g));
  src.close(src.ud);
  esg_gateway_stats st;
  esg_gateway_get_stats(g, &st);
  fprintf(stderr, "orders: %llu received: %llu delivered, %llu duplicates, %llu stale, %llu echoes, %llu filtered, %llu faults\n",
          (unsigned long long)st.received, (unsigned long long)st.delivered, (unsigned long long)st.duplicates,
          (unsigned long long)st.stale, (unsigned long long)st.echoes, (unsigned long long)st.filtered,
          (unsigned long long)st.faults);
  if (esg_gateway_close(g) != ESG_OK) rc = ESG_ESTORE;
  esg_store_close(store);
  return rc == ESG_OK ? 0 : 1;
}
