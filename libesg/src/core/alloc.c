/*
 * The allocator every allocation of libesg goes through (and cJSON's, which libesg
 * parses and prints with): the C library's by default, the host's after
 * esg_set_allocator, so a host can route and count memory and tests can fail the Nth
 * allocation. SQLite and libcurl keep their own allocators (sqlite3_config and
 * curl_global_init_mem are process-wide, the host's to set).
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "core/internal.h"

static void *std_malloc(void *ud, size_t n) { (void)ud; return malloc(n); }
static void *std_realloc(void *ud, void *p, size_t n) { (void)ud; return realloc(p, n); }
static void std_free(void *ud, void *p) { (void)ud; free(p); }

static esg_allocator cur = {sizeof cur, std_malloc, std_realloc, std_free, NULL};

/* Failed allocations of this thread: cJSON answers NULL both for bad input and when
   out of memory, and this count tells the two apart (esg__nomem_count). */
static _Thread_local unsigned nomem;

unsigned esg__nomem_count(void) { return nomem; }

/* malloc(0) may return NULL, which would read as out of memory: ask for 1 byte. */
void *esg__malloc(size_t n) {
  void *p = cur.malloc_fn(cur.ud, n ? n : 1);
  if (!p) nomem++;
  return p;
}

void *esg__calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    nomem++;
    return NULL;
  }
  void *p = esg__malloc(total);
  if (p) memset(p, 0, total);
  return p;
}

void *esg__realloc(void *p, size_t n) {
  void *q = cur.realloc_fn(cur.ud, p, n ? n : 1);
  if (!q) nomem++;
  return q;
}

void esg__free(void *p) {
  if (p) cur.free_fn(cur.ud, p);
}

char *esg__strndup(const char *s, size_t n) {
  char *p = esg__malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

char *esg__strdup(const char *s) { return esg__strndup(s, strlen(s)); }

static void *cjson_malloc(size_t n) { return esg__malloc(n); }

int esg_set_allocator(const esg_allocator *a) {
  if (!a) {
    cur = (esg_allocator){sizeof cur, std_malloc, std_realloc, std_free, NULL};
    cJSON_InitHooks(NULL);
    return ESG_OK;
  }
  if (a->size < sizeof *a)
    return esg__fail(NULL, ESG_EINVAL, "esg_allocator.size is %zu, not %zu: initialise it with ESG_ALLOCATOR_INIT",
                     a->size, sizeof *a);
  if (!a->malloc_fn || !a->realloc_fn || !a->free_fn)
    return esg__fail(NULL, ESG_EINVAL, "esg_allocator needs malloc_fn, realloc_fn and free_fn (one is NULL)");
  cur = *a;
  cur.size = sizeof cur;
  cJSON_Hooks h = {cjson_malloc, esg__free};
  cJSON_InitHooks(&h);
  return ESG_OK;
}

void esg_free(void *p) { esg__free(p); }
