/*
 * The ingress's API in a libesg built without libmicrohttpd (CMake did not find it):
 * every call says so, so a program links either way and learns it at run time.
 */
#include <string.h>
#include "core/internal.h"
#include "esg/ingress.h"

#define WITHOUT "libesg was built without libmicrohttpd: no HTTP ingress (install libmicrohttpd-dev and rebuild)"

int esg_ingress_open(esg_ingress **out, esg_gateway *g, const esg_ingress_opts *opts) {
  (void)g;
  (void)opts;
  if (out) *out = NULL;
  return esg__fail(NULL, ESG_ESTATE, WITHOUT);
}
int esg_ingress_route_add(esg_ingress *ing, const esg_ingress_route *route) {
  (void)ing;
  (void)route;
  return esg__fail(NULL, ESG_ESTATE, WITHOUT);
}
int esg_ingress_start(esg_ingress *ing) {
  (void)ing;
  return esg__fail(NULL, ESG_ESTATE, WITHOUT);
}
int esg_ingress_port(const esg_ingress *ing) {
  (void)ing;
  return 0;
}
int esg_ingress_source(esg_ingress *ing, esg_gateway_source *out) {
  (void)ing;
  if (out) memset(out, 0, sizeof *out), out->fd = -1;
  return esg__fail(NULL, ESG_ESTATE, WITHOUT);
}
void esg_ingress_stop(esg_ingress *ing) { (void)ing; }
int esg_ingress_close(esg_ingress *ing) {
  (void)ing;
  return ESG_OK;
}
