/*
 * Text rules every parser of libesg applies, so C, Lua and Python decide alike: UTF-8
 * that is well formed (no overlong forms, no surrogates, nothing past U+10FFFF), and no
 * NUL, raw or escaped: a NUL would cut a C string short, so two ids that differ after it
 * would collide. And one JSON value is the whole text: cJSON alone stops after the first
 * value and ignores what follows ({"a":1} xyz), which every caller here must refuse.
 */
#include <cjson/cJSON.h>
#include <string.h>
#include "core/internal.h"

struct cJSON *esg__json_parse(const char *s, size_t len, size_t *at) {
  const char *end = NULL;
  cJSON *v = cJSON_ParseWithLengthOpts(s, len, &end, 0);
  if (v && end) { /* only white space may follow the value */
    while (end < s + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (end != s + len) {
      cJSON_Delete(v);
      v = NULL;
    }
  }
  if (at) *at = end && end >= s && end <= s + len ? (size_t)(end - s) : 0;
  return v;
}

size_t esg__utf8_invalid_at(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    /* eight ASCII bytes without a NUL at a time: ids and JSON are mostly that */
    while (len - i >= 8) {
      uint64_t x;
      memcpy(&x, p + i, 8);
      if ((x & 0x8080808080808080ULL) || ((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL)) break;
      i += 8;
    }
    if (i >= len) break;
    unsigned c = p[i];
    if (c < 0x80) {
      if (c == 0) return i;
      i++;
      continue;
    }
    size_t n;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) n = 1, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 2, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 3, min = 0x10000;
    else return i;
    if (len - i <= n) return i;
    unsigned cp = c & (0x3f >> n);
    for (size_t k = 1; k <= n; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return len;
}

/* The offset of a "\u0000" escape in JSON text (len if none). A backslash escapes the
   next character, so "\\u0000" (an escaped backslash, then text) is not one. */
size_t esg__json_nul_escape_at(const char *s, size_t len) {
  for (size_t i = 0; i + 1 < len; i++) {
    if (s[i] != '\\') continue;
    if (s[i + 1] == 'u' && i + 5 < len && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' && s[i + 5] == '0')
      return i;
    i++; /* skip the escaped character */
  }
  return len;
}
