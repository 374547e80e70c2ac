/*
 * libcurl's process-wide init, once for every part of libesg that speaks HTTP (the
 * egress engine, the HTTP loader): curl_global_init is not thread-safe before
 * libcurl 7.84, so it runs under pthread_once, and its failure is kept for every
 * later open to report.
 */
#include <curl/curl.h>
#include <pthread.h>
#include "egress_int.h"
#include "core/internal.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CURLcode init_rc;
static void init(void) { init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int esg__curl_global_init(void) {
  pthread_once(&once, init);
  if (init_rc != CURLE_OK) return esg__fail(NULL, ESG_EIO, "curl_global_init: %s", curl_easy_strerror(init_rc));
  return ESG_OK;
}
