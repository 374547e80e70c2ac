/*
 * Backends by URI: the scheme picks one from the table of those built in.
 * "sqlite:PATH", a plain PATH and ":memory:" are SQLite's. A scheme is letters,
 * digits, '+', '-' or '.' before the first ':', at least two of them (so a path
 * with a colon after a '/' stays a path; "./a:b" names the file a:b).
 */
#include <ctype.h>
#include <string.h>
#include "backend/backend.h"

extern const esg__backend esg__sqlite_backend;

static const struct {
  const char *scheme;
  const esg__backend *be;
} schemes[] = {
    {"sqlite", &esg__sqlite_backend},
};
#define N_SCHEMES (sizeof schemes / sizeof schemes[0])

/* The length of uri's scheme, 0 when it has none (a plain path). */
static size_t scheme_len(const char *uri) {
  if (strcmp(uri, ":memory:") == 0) return 0;
  size_t n = 0;
  if (!isalpha((unsigned char)uri[0])) return 0;
  while (isalnum((unsigned char)uri[n]) || uri[n] == '+' || uri[n] == '-' || uri[n] == '.') n++;
  return uri[n] == ':' && n >= 2 ? n : 0;
}

const esg__backend *esg__backend_for(const char *uri, const char **target, esg__err *err) {
  size_t n = scheme_len(uri);
  if (n == 0) {
    *target = uri;
    return &esg__sqlite_backend;
  }
  for (size_t i = 0; i < N_SCHEMES; i++) {
    if (strlen(schemes[i].scheme) == n && strncmp(uri, schemes[i].scheme, n) == 0) {
      *target = uri + n + 1;
      if (strncmp(*target, "//", 2) == 0) { /* "sqlite:///abs/path": an empty authority */
        if ((*target)[2] != '/') {
          esg__fail(err, ESG_EINVAL, "store URI \"%s\": write sqlite:PATH, or sqlite:///PATH for an absolute path", uri);
          return NULL;
        }
        *target += 2;
      }
      return schemes[i].be;
    }
  }
  char built[128] = "";
  for (size_t i = 0; i < N_SCHEMES; i++) {
    if (i) strncat(built, ", ", sizeof built - strlen(built) - 1);
    strncat(built, schemes[i].scheme, sizeof built - strlen(built) - 1);
  }
  esg__fail(err, ESG_EINVAL,
            "unknown store scheme \"%.*s\" in \"%s\"; built in: %s (a plain path, or ./PATH for a file whose "
            "name has a colon, is a SQLite file)",
            (int)n, uri, uri, built);
  return NULL;
}
