/*
 * Hashes and deterministic ids: SHA-256 (payload and content hashes) and UUID v5
 * for replay-stable ids. Canonical JSON for content hashes is in canonical.c.
 */
/* The one-shot SHA functions are deprecated in OpenSSL 3 in favour of EVP, whose
   provider dispatch costs more than hashing a small event (about 3x the instructions
   for 200 bytes). They remain supported for the 3.x series; hashing is kept to this
   file so a move to EVP, if they go, is one edit. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include "core/internal.h"

void esg_sha256(const void *data, size_t len, uint8_t out[32]) {
  SHA256_CTX ctx; /* not SHA256(): in OpenSSL 3 that one goes through EVP too */
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, data, len);
  SHA256_Final(out, &ctx);
}

_Static_assert(sizeof(SHA256_CTX) <= sizeof(esg__sha256), "esg__sha256 holds a SHA256_CTX");

void esg__sha256_init(esg__sha256 *h) { SHA256_Init((SHA256_CTX *)h->state); }
void esg__sha256_update(esg__sha256 *h, const void *data, size_t len) { SHA256_Update((SHA256_CTX *)h->state, data, len); }
void esg__sha256_final(esg__sha256 *h, uint8_t out[32]) { SHA256_Final(out, (SHA256_CTX *)h->state); }

uint64_t esg__fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
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
  SHA_CTX ctx;
  uint8_t h[SHA_DIGEST_LENGTH];
  SHA1_Init(&ctx);
  SHA1_Update(&ctx, nsb, 16);
  SHA1_Update(&ctx, name, len);
  SHA1_Final(h, &ctx);
  h[6] = (uint8_t)((h[6] & 0x0f) | 0x50); /* version 5 */
  h[8] = (uint8_t)((h[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  /* 8-4-4-4-12 hex digits; written by hand because snprintf costs more than the hash */
  static const int groups[5] = {4, 2, 2, 2, 6};
  char *o = out;
  const uint8_t *b = h;
  for (int g = 0; g < 5; g++) {
    if (g) *o++ = '-';
    esg_hex(b, (size_t)groups[g], o);
    o += 2 * groups[g];
    b += groups[g];
  }
  *o = '\0';
  return ESG_OK;
}
