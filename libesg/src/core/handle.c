/*
 * What every handle and every options struct share: the checked header that lets
 * esg_errmsg tell a handle from any other pointer, and the ABI rule that lets an
 * options struct grow without breaking programs compiled against an older one.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include "core/internal.h"

void esg__handle_init(esg__err *err, uint32_t kind) {
  err->magic = kind;
  err->msg[0] = '\0';
}

/* Cleared at close, so a call on a closed handle that still reads as one is rarer. */
void esg__handle_end(esg__err *err) { err->magic = 0; }

static bool is_handle(const esg__err *err) {
  switch (err->magic) {
  case ESG__H_STORE:
  case ESG__H_CACHE:
  case ESG__H_EGRESS:
  case ESG__H_LOADER:
  case ESG__H_SNAPSHOT:
  case ESG__H_GATEWAY:
  case ESG__H_INGRESS:
    return true;
  }
  return false;
}

const char *esg_errmsg(const void *handle) {
  if (!handle) return esg__tls_err()->msg;
  const esg__err *err = handle;
  if (!is_handle(err))
    return "esg_errmsg: not an open libesg handle (a store, cache, egress engine, HTTP loader, snapshot, "
           "gateway or ingress); "
           "errors of calls without one are in esg_errmsg(NULL)";
  return err->msg;
}

/*
 * The rule (docs/c-api.md "ABI"): an options struct starts with its size. A smaller
 * size is an older program: the fields it does not know take their defaults. A larger
 * one is a newer program: fine when every field this library does not know is zero,
 * refused otherwise, since ignoring an option silently would change behaviour.
 */
int esg__opts_copy(esg__err *err, const char *type, void *dst, size_t known, const void *src) {
  memset(dst, 0, known);
  if (!src) {
    *(size_t *)dst = known;
    return ESG_OK;
  }
  size_t size = *(const size_t *)src;
  char init[64];
  size_t i = 0;
  for (; type[i] && i < sizeof init - 6; i++) init[i] = (char)toupper((unsigned char)type[i]);
  snprintf(init + i, sizeof init - i, "_INIT");
  if (size < sizeof(size_t))
    return esg__fail(err, ESG_EINVAL, "%s.size is %zu: start the struct from %s", type, size, init);
  if (size > known) {
    const unsigned char *tail = (const unsigned char *)src + known;
    for (size_t k = 0; k < size - known; k++)
      if (tail[k])
        return esg__fail(err, ESG_EINVAL,
                         "%s is %zu bytes with options set past byte %zu, which this libesg (%s) does not know",
                         type, size, known, ESG_VERSION_STRING);
  }
  memcpy(dst, src, size < known ? size : known);
  *(size_t *)dst = known;
  return ESG_OK;
}
