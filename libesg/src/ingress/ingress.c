/*
 * The ingress handle: its options and routes, start, stop and close. The server is in
 * ingress_http.c, the gateway source in ingress_source.c, the envelope in
 * ingress_envelope.c, /metrics in ingress_metrics.c; why two threads: ingress_int.h.
 */
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "ingress_int.h"

#define DEFAULT_LISTEN "127.0.0.1:8080"

static int check_opts(esg_ingress_opts *o) {
  if (!o->header_max) o->header_max = 16 * 1024;
  if (!o->body_max) o->body_max = 256 * 1024;
  if (!o->connections_max) o->connections_max = 256;
  if (!o->request_timeout_ms) o->request_timeout_ms = 10000;
  if (!o->queue_max) o->queue_max = 1024;
  if (!o->queue_bytes_max) o->queue_bytes_max = 64 * 1024 * 1024;
  if (!o->retry_after_s) o->retry_after_s = 1;
  if (!o->clock) o->clock = esg_clock_real;
  if (o->body_max > ESG_INGRESS_BODY_MAX)
    return esg__fail(NULL, ESG_EINVAL, "body_max %zu is over ESG_INGRESS_BODY_MAX (%d)", o->body_max,
                     ESG_INGRESS_BODY_MAX);
  if (o->header_max < 1024) return esg__fail(NULL, ESG_EINVAL, "header_max %zu is under 1024", o->header_max);
  if (o->request_timeout_ms < 0 || o->retry_after_s < 0)
    return esg__fail(NULL, ESG_EINVAL, "request_timeout_ms and retry_after_s must not be negative");
  return ESG_OK;
}

int esg_ingress_open(esg_ingress **out, esg_gateway *g, const esg_ingress_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if (!g) return esg__fail(NULL, ESG_EINVAL, "the gateway is NULL");
  esg_ingress_opts o;
  int rc = ESG__OPTS_COPY(NULL, esg_ingress_opts, &o, opts);
  if (rc == ESG_OK) rc = check_opts(&o);
  if (rc != ESG_OK) return rc;
  esg_ingress *ing = esg__calloc(1, sizeof *ing);
  if (!ing) return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the ingress");
  esg__handle_init(&ing->err, ESG__H_INGRESS);
  ing->o = o;
  ing->g = g;
  ing->wake = ing->swake = -1;
  pthread_mutex_init(&ing->mu, NULL);
  ing->listen = esg__strdup(o.listen ? o.listen : DEFAULT_LISTEN);
  ing->o.listen = ing->listen;
  ing->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ing->swake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!ing->listen || ing->wake < 0 || ing->swake < 0) {
    rc = ing->listen ? esg__fail(NULL, ESG_EIO, "eventfd failed") : esg__fail(NULL, ESG_ENOMEM, "out of memory");
    esg_ingress_close(ing);
    return rc;
  }
  *out = ing;
  return ESG_OK;
}

static void free_route(esg__route *r) {
  esg__free(r->path);
  esg__free(r->source);
  esg__free(r->type);
  for (size_t i = 0; r->secrets && i < r->n_secrets; i++) esg__free(r->secrets[i]);
  esg__free(r->secrets);
}

int esg_ingress_route_add(esg_ingress *ing, const esg_ingress_route *route) {
  if (!ing) return esg__fail(NULL, ESG_EINVAL, "ingress is NULL");
  if (ing->started) return esg__fail(&ing->err, ESG_ESTATE, "routes are added before esg_ingress_start");
  if (!route) return esg__fail(&ing->err, ESG_EINVAL, "route is NULL");
  esg_ingress_route r;
  int rc = ESG__OPTS_COPY(&ing->err, esg_ingress_route, &r, route);
  if (rc != ESG_OK) return rc;
  if (!r.path || r.path[0] != '/')
    return esg__fail(&ing->err, ESG_EINVAL, "a route's path must start with '/' (e.g. \"/hooks/acme\")");
  if (strcmp(r.path, "/healthz") == 0 || strcmp(r.path, "/metrics") == 0)
    return esg__fail(&ing->err, ESG_EINVAL, "%s is the ingress's own", r.path);
  for (size_t i = 0; i < ing->n_routes; i++)
    if (strcmp(ing->routes[i].path, r.path) == 0) return esg__fail(&ing->err, ESG_EINVAL, "route %s is there already", r.path);
  if (r.scheme != ESG_INGRESS_STANDARD_WEBHOOKS)
    return esg__fail(&ing->err, ESG_EINVAL, "route %s: scheme %d is not one of ESG_INGRESS_*", r.path, (int)r.scheme);
  if (!r.secrets || !r.n_secrets) return esg__fail(&ing->err, ESG_EINVAL, "route %s needs secrets", r.path);
  if (r.tolerance_s < 0) return esg__fail(&ing->err, ESG_EINVAL, "route %s: tolerance_s is negative", r.path);
  const char *source = r.source ? r.source : r.path + 1;
  size_t slen = strlen(source);
  if (!slen || slen > ESG__NAME_MAX || strchr(source, ':') || esg__utf8_invalid_at(source, slen) != slen)
    return esg__fail(&ing->err, ESG_EINVAL,
                     "route %s: the source name must be UTF-8, 1 to %d bytes, without ':' (it starts the event ids)",
                     r.path, ESG__NAME_MAX);
  const char *type = r.type ? r.type : "webhook-received";
  if (!type[0] || esg__utf8_invalid_at(type, strlen(type)) != strlen(type))
    return esg__fail(&ing->err, ESG_EINVAL, "route %s: type must be UTF-8, not empty", r.path);
  for (size_t i = 0; i < r.n_secrets; i++) { /* a bad secret found now, not at the first webhook */
    char sig[ESG_WEBHOOK_SIGNATURE_SIZE];
    if (!r.secrets[i] || esg_webhook_sign(r.secrets[i], "check", 0, "", 0, sig, sizeof sig) != ESG_OK)
      return esg__fail(&ing->err, ESG_EINVAL, "route %s: secret %zu: %s", r.path, i + 1,
                       r.secrets[i] ? esg_errmsg(NULL) : "NULL");
  }
  esg__route *routes = esg__realloc(ing->routes, (ing->n_routes + 1) * sizeof *routes);
  if (!routes) return esg__fail(&ing->err, ESG_ENOMEM, "out of memory");
  ing->routes = routes;
  esg__route *n = &routes[ing->n_routes];
  memset(n, 0, sizeof *n);
  n->path = esg__strdup(r.path);
  n->source = esg__strdup(source);
  n->type = esg__strdup(type);
  n->secrets = esg__calloc(r.n_secrets, sizeof *n->secrets);
  bool oom = !n->path || !n->source || !n->type || !n->secrets;
  for (size_t i = 0; !oom && i < r.n_secrets; i++) {
    n->n_secrets = i + 1;
    oom = !(n->secrets[i] = esg__strdup(r.secrets[i]));
  }
  n->tolerance_s = r.tolerance_s ? r.tolerance_s : ESG_WEBHOOK_DEFAULT_TOLERANCE_S;
  if (oom) {
    free_route(n);
    return esg__fail(&ing->err, ESG_ENOMEM, "out of memory");
  }
  ing->n_routes++;
  return ESG_OK;
}

int esg_ingress_start(esg_ingress *ing) {
  if (!ing) return esg__fail(NULL, ESG_EINVAL, "ingress is NULL");
  if (ing->started) return esg__fail(&ing->err, ESG_ESTATE, "the ingress is started already");
  if (!ing->n_routes) return esg__fail(&ing->err, ESG_EINVAL, "the ingress has no route (esg_ingress_route_add)");
  int rc = esg__ingress_http_start(ing);
  if (rc == ESG_OK) ing->started = true;
  return rc;
}

int esg_ingress_port(const esg_ingress *ing) { return ing && ing->started ? ing->port : 0; }

void esg_ingress_stop(esg_ingress *ing) {
  if (!ing) return;
  atomic_store(&ing->stop, 1);
  uint64_t one = 1;
  ssize_t n = write(ing->wake, &one, sizeof one); /* wakes the gateway's loop */
  n = write(ing->swake, &one, sizeof one);        /* and the server thread */
  (void)n;
}

int esg_ingress_close(esg_ingress *ing) {
  if (!ing) return ESG_OK;
  if (ing->started) {
    esg_ingress_stop(ing);
    esg__ingress_refuse_all(ing); /* no suspended connection may remain for MHD_stop_daemon */
    esg__ingress_http_stop(ing);
  }
  for (size_t i = 0; i < ing->n_routes; i++) free_route(&ing->routes[i]);
  esg__free(ing->routes);
  esg__free(ing->listen);
  if (ing->wake >= 0) close(ing->wake);
  if (ing->swake >= 0) close(ing->swake);
  pthread_mutex_destroy(&ing->mu);
  esg__handle_end(&ing->err);
  esg__free(ing);
  return ESG_OK;
}
