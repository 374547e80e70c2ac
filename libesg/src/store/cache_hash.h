/*
 * The cache's key hash, on its own so that bench/bench_w2.c can build its
 * baseline hash map on the very same function (both sides of the comparison
 * pay the same for hashing). Self-contained: no other libesg header.
 */
#ifndef ESG_CACHE_HASH_H
#define ESG_CACHE_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A fast 64-bit hash of short keys: eight bytes at a time, then a final mix. */
static inline uint64_t key_hash(const char *k, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, k, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
    k += 8;
    n -= 8;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= (uint64_t)(unsigned char)k[i] << (8 * i);
  h = (h ^ v) * 0x94D049BB133111EBULL;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ULL;
  h ^= h >> 32;
  return h;
}

#endif
