/*
 * A route's checks and the envelope a webhook becomes (docs/serve.md "The envelope").
 * Runs on the server thread, so a forged, stale or malformed request is answered there
 * and never reaches the gateway. The envelope:
 *
 *   {"id": source ":" webhook-id, "type": the body's "type" string, else the
 *    route's, "timestamp": webhook-timestamp * 1000, "tags": {"source": source},
 *    "raw": {"headers": {the webhook-* headers, content-type}, "body": the body}}
 *
 * raw.body is the body as a JSON string: the bytes received, unchanged once decoded,
 * and the envelope stays one line (a JSON lines sink keeps one per event). The id
 * depends only on the source and the webhook id, so a redelivery is the same event;
 * the timestamp (the delivery's) differs between deliveries, so the claim's payload is
 * the body's SHA-256, not the envelope's (gateway_ack.h).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ingress_int.h"


typedef struct out {
  char *p;
  size_t len, cap;
  bool oom;
} out;

static void put(out *o, const char *s, size_t n) {
  if (o->oom) return;
  if (o->len + n + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + n + 1) cap *= 2;
    char *p = esg__realloc(o->p, cap);
    if (!p) {
      o->oom = true;
      return;
    }
    o->p = p;
    o->cap = cap;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
  o->p[o->len] = '\0';
}

static void puts_(out *o, const char *s) { put(o, s, strlen(s)); }

/* s[0..n) as a JSON string; the caller checked it is well-formed UTF-8 without NUL. */
static void put_str(out *o, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  put(o, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
    put(o, s + run, i - run);
    run = i + 1;
    char esc[7] = {'\\', (char)ch, 0};
    if (ch == '"' || ch == '\\') put(o, esc, 2);
    else if (ch == '\n') put(o, "\\n", 2);
    else if (ch == '\r') put(o, "\\r", 2);
    else if (ch == '\t') put(o, "\\t", 2);
    else {
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[ch >> 4];
      esc[5] = hex[ch & 15];
      put(o, esc, 6);
    }
  }
  put(o, s + run, n - run);
  put(o, "\"", 1);
}

static bool text_ok(const char *s, size_t n) { return esg__utf8_invalid_at(s, n) == n; }

static int refuse(esg__req *r, int status, const char *why) {
  snprintf(r->answer, sizeof r->answer, "{\"error\":\"%s\"}", why);
  return status;
}

int esg__ingress_envelope(esg_ingress *ing, esg__req *r, const char *wid, const char *wts, const char *wsig,
                          const char *content_type) {
  const esg__route *rt = r->route;
  const char *body = r->body.data ? r->body.data : "";
  size_t blen = r->body.len;
  /* authenticity first: a forged or stale request costs no parse (the timestamp, which
     is public, is checked before any HMAC) */
  int64_t now_s = ing->o.clock(ing->o.clock_ud) / 1000;
  int rc = esg_webhook_verify((const char *const *)rt->secrets, rt->n_secrets, wid, wts, wsig, body, blen, now_s,
                              rt->tolerance_s);
  if (rc == ESG_ETIMEDOUT || rc == ESG_ESIGNATURE) return refuse(r, 401, "the webhook signature does not verify");
  if (rc == ESG_ENOMEM) return refuse(r, 503, "out of memory");
  if (rc != ESG_OK) return refuse(r, 400, "missing or malformed webhook headers");
  size_t idlen = strlen(wid);
  if (idlen > ESG__NAME_MAX || !text_ok(wid, idlen)) return refuse(r, 400, "malformed webhook-id");
  if (!text_ok(wsig, strlen(wsig)) || (content_type && !text_ok(content_type, strlen(content_type))))
    return refuse(r, 400, "malformed headers");
  if (!text_ok(body, blen)) return refuse(r, 400, "the body is not UTF-8 text");
  unsigned nomem = esg__nomem_count();
  cJSON *root = esg__json_parse(body, blen, NULL);
  if (!root) return esg__nomem_count() != nomem ? refuse(r, 503, "out of memory") : refuse(r, 400, "the body is not JSON");
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");
  const char *type = cJSON_IsString(t) && t->valuestring[0] && strlen(t->valuestring) <= 256 ? t->valuestring : rt->type;
  /* the id: "<source>:<webhook-id>", the same on every delivery, and as ordered as the
     sender's ids are (a hash of them, such as a UUIDv5, would scatter every insert over
     the store's indexes: measured 3.3 times slower commits with time-ordered ids) */
  out id = {0};
  put_str(&id, rt->source, strlen(rt->source));
  if (!id.oom) id.len--; /* the closing quote: the webhook id follows */
  put(&id, ":", 1);
  out wid_json = {0};
  put_str(&wid_json, wid, idlen);
  if (!wid_json.oom) put(&id, wid_json.p + 1, wid_json.len - 1);
  esg__free(wid_json.p);
  if (id.oom || wid_json.oom) {
    esg__free(id.p);
    cJSON_Delete(root);
    return refuse(r, 503, "out of memory");
  }
  char head[128];
  long long ts_ms = strtoll(wts, NULL, 10) * 1000; /* verified: decimal digits near now */
  out o = {0};
  puts_(&o, "{\"id\":");
  put(&o, id.p, id.len);
  puts_(&o, ",\"type\":");
  put_str(&o, type, strlen(type));
  cJSON_Delete(root);
  snprintf(head, sizeof head, ",\"timestamp\":%lld,\"tags\":{\"source\":", ts_ms);
  puts_(&o, head);
  put_str(&o, rt->source, strlen(rt->source));
  puts_(&o, "},\"raw\":{\"headers\":{\"webhook-id\":");
  put_str(&o, wid, idlen);
  puts_(&o, ",\"webhook-timestamp\":");
  put_str(&o, wts, strlen(wts));
  puts_(&o, ",\"webhook-signature\":");
  put_str(&o, wsig, strlen(wsig));
  if (content_type) {
    puts_(&o, ",\"content-type\":");
    put_str(&o, content_type, strlen(content_type));
  }
  puts_(&o, "},\"body\":");
  put_str(&o, body, blen);
  puts_(&o, "}}");
  if (o.oom) {
    esg__free(o.p);
    esg__free(id.p);
    return refuse(r, 503, "out of memory");
  }
  if (o.len > ESG_EVENT_MAX_BYTES) {
    esg__free(o.p);
    esg__free(id.p);
    return refuse(r, 413, "the body is too large");
  }
  r->id_json = id.p;
  esg_sha256(body, blen, r->hash);
  r->env = o.p;
  r->env_len = o.len;
  return 0;
}
