/*
 * Status codes, error text, version and the clock: what every part of libesg shares.
 */
#ifndef ESG_COMMON_H
#define ESG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include "esg/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ESG_STATIC)
#define ESG_API
#elif defined(ESG_BUILDING)
#define ESG_API __attribute__((visibility("default")))
#else
#define ESG_API
#endif

/*
 * The one list of status codes: X(NAME, value, text).
 * Zero is success, positive values are normal outcomes a caller branches on
 * (they are never errors), negative values are errors.
 */
#define ESG_STATUS_MAP(X)                                                          \
  X(OK, 0, "ok")                                                                   \
  X(NEW, 1, "new: the claim is now owned by the caller")                           \
  X(DUPLICATE, 2, "duplicate: already done; the stored result is returned")        \
  X(BUSY, 3, "busy: in progress by another owner whose lease has not run out")     \
  X(STALE, 4, "stale: not newer than the stored version")                          \
  X(NOT_FOUND, 5, "not found")                                                     \
  X(EINVAL, -1, "invalid argument")                                                \
  X(ENOMEM, -2, "out of memory")                                                   \
  X(EMISMATCH, -3, "key already used with a different payload")                    \
  X(ETOKEN, -4, "stale token: the claim is no longer owned by this token")         \
  X(EEVENT, -5, "invalid event envelope")                                          \
  X(EJSON, -6, "invalid JSON")                                                     \
  X(ESTORE, -7, "storage error")                                                   \
  X(ELOCKED, -8, "store locked by another process beyond the busy timeout")        \
  X(ESCHEMA, -9, "store schema is newer than this library")                        \
  X(ESTATE, -10, "call not valid in the current state")                            \
  X(ETOOBIG, -11, "input larger than the limit")                                   \
  X(ETIMEDOUT, -12, "timed out")                                                   \
  X(EIO, -13, "input/output error")                                                \
  X(ECALLBACK, -14, "a callback reported failure")                                  \
  X(ESIGNATURE, -15, "signature verification failed")

/** Status codes; see ESG_STATUS_MAP. */
typedef enum esg_status {
#define ESG__ENUM(name, value, text) ESG_##name = value,
  ESG_STATUS_MAP(ESG__ENUM)
#undef ESG__ENUM
} esg_status;

/** Static text describing a status code ("unknown status" for others). Never NULL. */
ESG_API const char *esg_strerror(int status);

/** The code's name without prefix, e.g. "DUPLICATE" or "EMISMATCH". Never NULL. */
ESG_API const char *esg_status_name(int status);

/**
 * Detail text for the last failing call on a handle (any libesg handle: a store,
 * an event...). With NULL, the calling thread's last error from a call that has
 * no handle (or whose handle could not be created). Owned by the library, valid
 * until the next call on that handle (or, for NULL, on this thread). Never NULL:
 * "" when there was no error.
 */
ESG_API const char *esg_errmsg(const void *handle);

/** The run-time version string, e.g. "0.1.0"; compare with ESG_VERSION_STRING. */
ESG_API const char *esg_version(void);

/** The run-time version as ESG_VERSION_NUMBER, so a binding can check it matches. */
ESG_API int esg_version_number(void);

/**
 * The clock: returns now in epoch milliseconds. Every time-dependent part of
 * libesg reads time through one, so tests can move time without sleeping.
 */
typedef int64_t (*esg_clock_fn)(void *ud);

/** The real clock (CLOCK_REALTIME in ms). */
ESG_API int64_t esg_clock_real(void *ud);

/** The largest magnitude esg_ms_from_seconds converts: 9e15 s is 9e18 ms, under INT64_MAX. */
#define ESG_SECONDS_MAX 9.0e15

/**
 * Seconds, as the bindings take times and durations (a float), to milliseconds, as the C
 * API takes them: rounded to the nearest, halves away from zero (llround). ESG_OK, or
 * ESG_EINVAL for NaN, an infinity or a magnitude over ESG_SECONDS_MAX (text in
 * esg_errmsg(NULL); *out untouched). A negative value converts: it is a time before the
 * epoch, or a duration the caller refuses with its own words. The one conversion of the
 * Lua and Python bindings, so that both round and refuse alike.
 */
ESG_API int esg_ms_from_seconds(double s, int64_t *out);

/** Frees memory that libesg handed to the caller (documented per function). NULL is fine. */
ESG_API void esg_free(void *p);

/**
 * The allocator of every allocation libesg makes, cJSON's included (libesg parses and
 * prints with it). SQLite and libcurl keep their own: sqlite3_config and
 * curl_global_init_mem are process-wide and the host's to set.
 */
typedef struct esg_allocator {
  size_t size;                                   /* sizeof(esg_allocator): ESG_ALLOCATOR_INIT */
  void *(*malloc_fn)(void *ud, size_t n);          /* n > 0; NULL when out of memory */
  void *(*realloc_fn)(void *ud, void *p, size_t n); /* p may be NULL; n > 0 */
  void (*free_fn)(void *ud, void *p);             /* p is never NULL */
  void *ud;
} esg_allocator;
#define ESG_ALLOCATOR_INIT {.size = sizeof(esg_allocator)}

/**
 * Routes libesg's memory through a (NULL: back to malloc, realloc and free). Process-wide:
 * set it before any thread uses libesg. Memory allocated before the call is freed
 * through the allocator current at that time, so a later allocator must accept the
 * earlier one's blocks (a wrapper that counts or fails calls around malloc does), or be
 * set before the first libesg call. ESG_OK, or ESG_EINVAL (size or a function missing).
 * A failed allocation makes the call that needed it return ESG_ENOMEM with nothing
 * written and nothing leaked.
 */
ESG_API int esg_set_allocator(const esg_allocator *a);

#ifdef __cplusplus
}
#endif
#endif
