/*
 * What the parts of libesg share internally: the error slot every handle starts
 * with, the store's layout, and small helpers. Nothing here is public.
 */
#ifndef ESG_INTERNAL_H
#define ESG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include "esg.h"

/* Every handle starts with this checked header (core/handle.c): esg_errmsg reads the
   text of any handle and refuses any other pointer. */
typedef struct esg__err {
  uint32_t magic; /* an ESG__H_ kind while open, 0 once closed */
  char msg[512];
} esg__err;
enum {
  ESG__H_STORE = 0x45534753,    /* "ESGS" */
  ESG__H_CACHE = 0x45534743,    /* "ESGC" */
  ESG__H_EGRESS = 0x45534745,   /* "ESGE" */
  ESG__H_LOADER = 0x4553474c,   /* "ESGL" */
  ESG__H_SNAPSHOT = 0x45534750, /* "ESGP" */
  ESG__H_GATEWAY = 0x45534757,  /* "ESGW" */
  ESG__H_INGRESS = 0x45534749,  /* "ESGI" */
};
void esg__handle_init(esg__err *err, uint32_t kind);
void esg__handle_end(esg__err *err);

/* Copies the caller's options struct (NULL: all defaults) into dst of the library's
   size, by the ABI rule in core/handle.c; EINVAL names what is wrong. */
int esg__opts_copy(esg__err *err, const char *type, void *dst, size_t known, const void *src);
#define ESG__OPTS_COPY(err, T, dst, src) esg__opts_copy((err), #T, (dst), sizeof(T), (src))

/* Every allocation goes through the allocator of esg_set_allocator (core/alloc.c). */
void *esg__malloc(size_t n);
void *esg__calloc(size_t n, size_t size);
void *esg__realloc(void *p, size_t n);
void esg__free(void *p);
char *esg__strdup(const char *s);
char *esg__strndup(const char *s, size_t n);
/* How many allocations failed on this thread so far: compare before and after a cJSON
   call that returned NULL to tell out of memory (ESG_ENOMEM) from bad input. */
unsigned esg__nomem_count(void);

/* Records a formatted detail text on handle err (NULL: the thread's slot) and returns code. */
int esg__fail(esg__err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The thread-local slot for calls without a handle. */
esg__err *esg__tls_err(void);

/* SHA-256 over data that comes in pieces (a line too long to keep, hashed as it goes). */
typedef struct esg__sha256 {
  uint64_t state[16]; /* a SHA256_CTX (checked in hash.c) */
} esg__sha256;
void esg__sha256_init(esg__sha256 *h);
void esg__sha256_update(esg__sha256 *h, const void *data, size_t len);
void esg__sha256_final(esg__sha256 *h, uint8_t out[32]);

/* FNV-1a of a string: the hash of the library's small in-memory tables (pending
   claims, egress lanes, a batch's keys, the HTTP loader's validators). */
uint64_t esg__fnv1a(const char *s);

/* t + d in milliseconds, held at INT64_MAX / INT64_MIN instead of wrapping: a duration
   of "forever" (INT64_MAX, or a huge Retry-After) must stay in the future. */
static inline int64_t esg__time_add(int64_t t, int64_t d) {
  int64_t r;
  if (__builtin_add_overflow(t, d, &r)) return d > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

/* The text rules (core/text.c): the offset of the first byte that is not well-formed
   UTF-8 or is a NUL (len when none), and of the first "\u0000" escape in JSON text. */
size_t esg__utf8_invalid_at(const char *s, size_t len);
size_t esg__json_nul_escape_at(const char *s, size_t len);
/* Parses s[0..len) as exactly one JSON value (white space may follow, nothing else): the
   value, or NULL with *at (if given) the offset where it went wrong. NULL is also out of
   memory: compare esg__nomem_count() before and after. */
struct cJSON *esg__json_parse(const char *s, size_t len, size_t *at);

/* Checks a key: non-NULL, non-empty, at most ESG_KEY_MAX bytes, well-formed UTF-8. */
int esg__check_key(esg__err *err, const char *what, const char *key);

/* A growable byte buffer owned by its holder. */
typedef struct esg__buf {
  char *data;
  size_t len, cap;
} esg__buf;
int esg__buf_set(esg__buf *b, const void *data, size_t len); /* copies, NUL-terminates */
void esg__buf_free(esg__buf *b);

/*
 * A process's fork() count. A handle belongs to the process that opened it; after
 * fork() the child's copy shares the parent's connection but not its locks (fcntl
 * locks are not inherited), so a write from it would corrupt the database. A
 * pthread_atfork child handler bumps the count, so checking a handle costs a
 * compare, not a getpid() system call. esg__watch_forks installs the handler once.
 */
extern unsigned esg__forks;
void esg__watch_forks(void);

/* An event's parsed envelope (a JSON object), owned by the event. */
struct cJSON;
const struct cJSON *esg__event_root(const esg_event *ev);

/* SHA-256 of the canonical form of one JSON value: ESG_OK, ESG_EJSON or ESG_ENOMEM (no text recorded). */
int esg__content_hash_bin(const char *json, size_t len, uint8_t hash[32]);

/* Sleeps ms of real time. */
void esg__sleep_ms(int ms);

#endif
