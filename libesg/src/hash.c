/*
 * Hashes and deterministic ids: SHA-256 (payload and content hashes) and UUID v5
 * for replay-stable ids. Canonical JSON for content hashes is in canonical.c.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Fetching the digest once saves OpenSSL 3's per-call algorithm lookup on the hot path,
   and one context per thread saves EVP_Digest's allocation of a context per call. */
static EVP_MD *md_sha256, *md_sha1;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key;

static void ctx_free(void *ctx) { EVP_MD_CTX_free(ctx); }

static void md_fetch(void) {
  md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  md_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
  pthread_key_create(&ctx_key, ctx_free);
}

/* This thread's digest context, or NULL when out of memory. */
static EVP_MD_CTX *thread_ctx(void) {
  pthread_once(&md_once, md_fetch);
  EVP_MD_CTX *ctx = pthread_getspecific(ctx_key);
  if (!ctx && (ctx = EVP_MD_CTX_new()) != NULL && pthread_setspecific(ctx_key, ctx) != 0) {
    EVP_MD_CTX_free(ctx);
    ctx = NULL;
  }
  return ctx;
}

void esg_sha256(const void *data, size_t len, uint8_t out[32]) {
  EVP_MD_CTX *ctx = thread_ctx();
  unsigned int n = 0;
  if (!ctx || !EVP_DigestInit_ex(ctx, md_sha256, NULL) || !EVP_DigestUpdate(ctx, data, len) ||
      !EVP_DigestFinal_ex(ctx, out, &n))
    EVP_Digest(data, len, out, &n, md_sha256, NULL); /* the allocating path still answers */
}

void esg_hex(const void *data, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * len] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int uuid_parse(const char *s, uint8_t out[16]) {
  if (!s || strlen(s) != 36) return -1;
  int j = 0;
  for (int i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i++] != '-') return -1;
      continue;
    }
    int hi = hexval(s[i]), lo = hexval(s[i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[j++] = (uint8_t)(hi << 4 | lo);
    i += 2;
  }
  return 0;
}

int esg_uuid5(const char *ns, const char *name, size_t len, char out[37]) {
  uint8_t nsb[16];
  if (uuid_parse(ns, nsb) != 0) return esg__fail(NULL, ESG_EINVAL, "namespace \"%s\" is not a UUID", ns ? ns : "(null)");
  if (!name || !out) return esg__fail(NULL, ESG_EINVAL, "name or out is NULL");
  EVP_MD_CTX *ctx = thread_ctx();
  uint8_t h[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!ctx || !EVP_DigestInit_ex(ctx, md_sha1, NULL) || !EVP_DigestUpdate(ctx, nsb, 16) ||
      !EVP_DigestUpdate(ctx, name, len) || !EVP_DigestFinal_ex(ctx, h, &n))
    return esg__fail(NULL, ESG_ENOMEM, "SHA-1 failed");
  h[6] = (uint8_t)((h[6] & 0x0f) | 0x50); /* version 5 */
  h[8] = (uint8_t)((h[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  char hex[33];
  esg_hex(h, 16, hex);
  snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
  return ESG_OK;
}
