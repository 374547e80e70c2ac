/*
 * The HTTP GET loader for the enrichment cache (esg_http_loader in esg/egress.h).
 * The cache keeps values, not HTTP validators, so the loader remembers each
 * key's last ETag with its body: a 304 then hands the cache the same body again,
 * which refreshes its TTL without transferring it. The table is bounded; past
 * the bound keys are simply loaded without revalidation.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "egress_int.h"
#include "core/internal.h"

typedef struct etag_ent {
  struct etag_ent *next;
  uint64_t hash;
  char *key, *etag, *body;
  size_t body_len;
} etag_ent;

struct esg_http_loader {
  esg__err err; /* first: see esg__err */
  unsigned forks; /* esg__forks at open: its connection belongs to that process */
  CURL *easy;
  char *url_pre, *url_post;   /* the URL around "{key}" (url_post "" when appended) */
  struct curl_slist *headers; /* the caller's lines; If-None-Match is linked on per GET */
  int64_t connect_timeout, timeout, ttl;
  size_t max_body, max_etags;
  esg_clock_fn clock;
  void *clock_ud;
  etag_ent **b;
  size_t nb, n;
  char *body;
  size_t body_len, body_cap;
  bool too_big, nomem;        /* why on_data stopped the transfer */
  uint64_t requests, not_modified, absent, failed;
};

int esg_http_loader_open(esg_http_loader **out, const esg_http_loader_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!opts) return esg__fail(NULL, ESG_EINVAL, "opts is NULL: the loader needs at least a url");
  esg_http_loader_opts lo;
  int orc = ESG__OPTS_COPY(NULL, esg_http_loader_opts, &lo, opts);
  if (orc != ESG_OK) return orc;
  opts = &lo;
  if (!opts->url || !*opts->url) return esg__fail(NULL, ESG_EINVAL, "loader url is required");
  if (opts->connect_timeout_ms < 0)
    return esg__fail(NULL, ESG_EINVAL, "loader connect_timeout_ms is %lld; it must not be negative",
                     (long long)opts->connect_timeout_ms);
  if (opts->timeout_ms < 0)
    return esg__fail(NULL, ESG_EINVAL, "loader timeout_ms is %lld; it must not be negative", (long long)opts->timeout_ms);
  if (opts->ttl_ms < 0)
    return esg__fail(NULL, ESG_EINVAL, "loader ttl_ms is %lld; it must not be negative", (long long)opts->ttl_ms);
  if (opts->n_headers && !opts->headers) return esg__fail(NULL, ESG_EINVAL, "headers is NULL");
  for (size_t i = 0; i < opts->n_headers; i++)
    if (!opts->headers[i] || !strchr(opts->headers[i], ':') || strpbrk(opts->headers[i], "\r\n"))
      return esg__fail(NULL, ESG_EINVAL, "header %zu is not one line \"Name: value\"", i);
  if (esg__curl_global_init() != ESG_OK) return ESG_EIO;
  esg_http_loader *l = esg__calloc(1, sizeof *l);
  if (!l) return esg__fail(NULL, ESG_ENOMEM, "out of memory");
  esg__handle_init(&l->err, ESG__H_LOADER);
  esg__watch_forks();
  l->forks = esg__forks;
  const char *at = strstr(opts->url, "{key}");
  l->url_pre = at ? esg__strndup(opts->url, (size_t)(at - opts->url)) : esg__strdup(opts->url);
  l->url_post = esg__strdup(at ? at + 5 : "");
  l->connect_timeout = opts->connect_timeout_ms ? opts->connect_timeout_ms : 5000;
  l->timeout = opts->timeout_ms ? opts->timeout_ms : 10000;
  l->ttl = opts->ttl_ms;
  l->max_body = opts->max_body_bytes ? opts->max_body_bytes : ESG_EVENT_MAX_BYTES;
  l->max_etags = opts->max_etags ? opts->max_etags : 10000;
  l->clock = opts->clock ? opts->clock : esg_clock_real;
  l->clock_ud = opts->clock_ud;
  l->easy = curl_easy_init();
  bool bad = !l->url_pre || !l->url_post || !l->easy;
  struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
  bad = bad || !h;
  l->headers = h;
  for (size_t i = 0; !bad && i < opts->n_headers; i++) {
    struct curl_slist *n = curl_slist_append(l->headers, opts->headers[i]);
    if (!n) bad = true;
    else l->headers = n;
  }
  if (bad) {
    esg_http_loader_close(l);
    return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the loader");
  }
  *out = l;
  return ESG_OK;
}

static void ent_free(etag_ent *e) {
  esg__free(e->key);
  esg__free(e->etag);
  esg__free(e->body);
  esg__free(e);
}

void esg_http_loader_close(esg_http_loader *l) {
  if (!l) return;
  for (size_t i = 0; i < l->nb; i++)
    for (etag_ent *e = l->b[i], *next; e; e = next) {
      next = e->next;
      ent_free(e);
    }
  esg__free(l->b);
  /* in a child of fork() the connection is the parent's: closing it could end its TLS session */
  if (l->easy && l->forks == esg__forks) curl_easy_cleanup(l->easy);
  curl_slist_free_all(l->headers);
  esg__free(l->url_pre);
  esg__free(l->url_post);
  esg__free(l->body);
  esg__handle_end(&l->err);
  esg__free(l);
}

void esg_http_loader_counts(const esg_http_loader *l, uint64_t *requests, uint64_t *not_modified, uint64_t *absent,
                            uint64_t *failed) {
  if (requests) *requests = l ? l->requests : 0;
  if (not_modified) *not_modified = l ? l->not_modified : 0;
  if (absent) *absent = l ? l->absent : 0;
  if (failed) *failed = l ? l->failed : 0;
}

static etag_ent **find_slot(esg_http_loader *l, const char *key, uint64_t h) {
  if (!l->nb) return NULL;
  for (etag_ent **p = &l->b[h & (l->nb - 1)]; *p; p = &(*p)->next)
    if ((*p)->hash == h && strcmp((*p)->key, key) == 0) return p;
  return NULL;
}

static void forget(esg_http_loader *l, const char *key, uint64_t h) {
  etag_ent **p = find_slot(l, key, h);
  if (!p) return;
  etag_ent *e = *p;
  *p = e->next;
  ent_free(e);
  l->n--;
}

static void remember(esg_http_loader *l, const char *key, uint64_t h, const char *etag, const char *body,
                     size_t len) {
  forget(l, key, h);
  if (l->n >= l->max_etags) return; /* full: this key is loaded without revalidation */
  if (l->n >= l->nb) {
    size_t nb = l->nb ? l->nb * 2 : 64;
    etag_ent **b = esg__calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < l->nb; i++)
      for (etag_ent *e = l->b[i], *next; e; e = next) {
        next = e->next;
        e->next = b[e->hash & (nb - 1)];
        b[e->hash & (nb - 1)] = e;
      }
    esg__free(l->b);
    l->b = b;
    l->nb = nb;
  }
  etag_ent *e = esg__calloc(1, sizeof *e);
  if (!e) return;
  e->hash = h;
  e->key = esg__strdup(key);
  e->etag = esg__strdup(etag);
  e->body = esg__malloc(len + 1);
  if (!e->key || !e->etag || !e->body) {
    ent_free(e);
    return;
  }
  memcpy(e->body, body, len);
  e->body[len] = '\0';
  e->body_len = len;
  e->next = l->b[h & (l->nb - 1)];
  l->b[h & (l->nb - 1)] = e;
  l->n++;
}

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
  esg_http_loader *l = ud;
  size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(l->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) return len; /* only a 2xx body is a value: a 404's page is read and dropped */
  if (l->body_len + len > l->max_body) {
    l->too_big = true;
    return 0; /* abort the transfer */
  }
  if (l->body_len + len + 1 > l->body_cap) {
    size_t cap = l->body_cap ? l->body_cap : 4096;
    while (cap < l->body_len + len + 1) cap *= 2;
    char *b = esg__realloc(l->body, cap);
    if (!b) {
      l->nomem = true; /* ours, not the server's: ESG_ENOMEM, not a failed GET */
      return 0;
    }
    l->body = b;
    l->body_cap = cap;
  }
  memcpy(l->body + l->body_len, p, len);
  l->body_len += len;
  return len;
}

static int load_fail(esg_http_loader *l, esg_cache_load *ld, int code, const char *msg) {
  l->failed++;
  esg_cache_load_error(ld, msg);
  return code;
}

int esg_http_loader_load(void *loader, const char *key, int64_t deadline, esg_cache_load *ld) {
  esg_http_loader *l = loader;
  char msg[300];
  if (!l || !key) return ESG_EINVAL;
  if (l->forks != esg__forks)
    return load_fail(l, ld, ESG_ESTATE, "loader: opened by another process (before fork); open one in this process");
  int64_t budget = l->timeout;
  if (deadline != INT64_MAX) {
    int64_t left = deadline - l->clock(l->clock_ud);
    if (left <= 0) return load_fail(l, ld, ESG_ETIMEDOUT, "loader: the deadline had passed before the GET");
    if (left < budget) budget = left;
  }
  char *esc = curl_easy_escape(l->easy, key, 0);
  if (!esc) return load_fail(l, ld, ESG_ENOMEM, "loader: out of memory");
  size_t ul = strlen(l->url_pre) + strlen(esc) + strlen(l->url_post) + 1;
  char *url = esg__malloc(ul);
  if (!url) {
    curl_free(esc);
    return load_fail(l, ld, ESG_ENOMEM, "loader: out of memory");
  }
  snprintf(url, ul, "%s%s%s", l->url_pre, esc, l->url_post);
  curl_free(esc);

  uint64_t h = esg__fnv1a(key);
  etag_ent **slot = find_slot(l, key, h);
  etag_ent *known = slot ? *slot : NULL;
  char *inm = NULL; /* an ETag may be long: sized to it */
  struct curl_slist extra = {NULL, NULL}, *tail = l->headers;
  while (tail->next) tail = tail->next;
  size_t il = known ? strlen(known->etag) + sizeof "If-None-Match: " : 0;
  if (known && (inm = esg__malloc(il))) { /* out of memory: a plain GET */
    snprintf(inm, il, "If-None-Match: %s", known->etag);
    extra.data = inm;
    tail->next = &extra; /* linked for this GET only */
  }
  CURL *c = l->easy;
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, l->headers);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(l->connect_timeout < budget ? l->connect_timeout : budget));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)budget);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, l);
  l->body_len = 0;
  l->too_big = l->nomem = false;
  l->requests++;
  CURLcode cc = curl_easy_perform(c);
  tail->next = NULL;
  esg__free(inm);
  esg__free(url);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (l->too_big) {
    snprintf(msg, sizeof msg, "loader: GET %s: body over %zu bytes", key, l->max_body);
    return load_fail(l, ld, ESG_ETOOBIG, msg);
  }
  if (l->nomem) return load_fail(l, ld, ESG_ENOMEM, "loader: out of memory reading the body");
  if (cc != CURLE_OK) {
    snprintf(msg, sizeof msg, "loader: GET %s: %s", key, curl_easy_strerror(cc));
    return load_fail(l, ld, cc == CURLE_OPERATION_TIMEDOUT ? ESG_ETIMEDOUT : ESG_ECALLBACK, msg);
  }
  if (status == 304) {
    if (!known) return load_fail(l, ld, ESG_ECALLBACK, "loader: 304 Not Modified for a key with no validator");
    l->not_modified++;
    return esg_cache_load_set(ld, known->body, known->body_len, l->ttl);
  }
  if (status == 404 || status == 410) {
    l->absent++;
    forget(l, key, h);
    return ESG_NOT_FOUND;
  }
  if (status < 200 || status >= 300) {
    snprintf(msg, sizeof msg, "loader: GET %s: HTTP %ld", key, status);
    return load_fail(l, ld, ESG_ECALLBACK, msg);
  }
  const char *body = l->body ? l->body : "";
  int rc = esg_cache_load_set(ld, body, l->body_len, l->ttl);
  struct curl_header *et = NULL;
  if (rc == ESG_OK && curl_easy_header(c, "ETag", 0, CURLH_HEADER, -1, &et) == CURLHE_OK && et->value[0])
    remember(l, key, h, et->value, body, l->body_len);
  else
    forget(l, key, h);
  return rc;
}
