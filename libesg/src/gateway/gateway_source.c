/*
 * JSON-lines sources over a file or an fd. A read happens only when poll says the fd is
 * readable, so a pipe or a socket that pauses makes next() answer ESG_BUSY instead of
 * blocking, and the gateway's loop goes on delivering and committing meanwhile. The fd's
 * flags are left alone: O_NONBLOCK on an inherited stdin would change it for every
 * process sharing it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include "gateway_int.h"

/* A line longer than the limit (at most an event's, ESG_EVENT_MAX_BYTES: a longer one could
   never parse) is not kept whole: its first CUT bytes are (fewer if the limit is lower), and
   it is hashed as it goes by, so any length ends as a fault record. */
#define MAX_LINE ((size_t)ESG_EVENT_MAX_BYTES)
#define CUT ((size_t)65536)

typedef struct lines {
  int fd;
  bool own, eof;
  size_t max, cut_max; /* the line limit, and how much of a longer line is kept */
  char *buf;
  size_t start, end, cap;
  /* the line too long being skipped */
  bool skipping;
  size_t skipped;
  esg__sha256 sh;
  char *cut;
  size_t cut_len;
} lines;

/* The too-long line ends: ESG_ETOOBIG with its first bytes and, in the text, its length and hash. */
static int too_long(lines *l, const char **data, size_t *len) {
  uint8_t h[32];
  char hex[65];
  esg__sha256_final(&l->sh, h);
  esg_hex(h, 32, hex);
  l->skipping = false;
  *data = l->cut;
  *len = l->cut_len;
  return esg__fail(NULL, ESG_ETOOBIG,
                   "a line of %zu bytes is over the limit of %zu: kept as its first %zu bytes (sha256 %s)", l->skipped,
                   l->max, l->cut_len, hex);
}

static int lines_next(void *ud, const char **data, size_t *len) {
  lines *l = ud;
  for (;;) {
    char *nl = l->start < l->end ? memchr(l->buf + l->start, '\n', l->end - l->start) : NULL;
    if (l->skipping) {
      size_t upto = nl ? (size_t)(nl - l->buf) : l->end;
      esg__sha256_update(&l->sh, l->buf + l->start, upto - l->start);
      l->skipped += upto - l->start;
      l->start = nl ? upto + 1 : l->end;
      if (nl || l->eof) return too_long(l, data, len);
    } else if (nl && (size_t)(nl - (l->buf + l->start)) <= l->max) {
      *data = l->buf + l->start;
      *len = (size_t)(nl - *data);
      l->start += *len + 1;
      return ESG_OK;
    } else if (nl || l->end - l->start > l->max) {
      /* no newline within the limit: keep the first bytes, hash the whole line as it is skipped */
      l->cut_len = l->cut_max;
      if (!l->cut && !(l->cut = esg__malloc(l->cut_max)))
        return esg__fail(NULL, ESG_ENOMEM, "out of memory reading the source");
      memcpy(l->cut, l->buf + l->start, l->cut_max);
      esg__sha256_init(&l->sh);
      l->skipping = true;
      l->skipped = 0;
      continue;
    } else if (l->eof) {
      if (l->start == l->end) return ESG_NOT_FOUND;
      *data = l->buf + l->start; /* the last line, without its newline */
      *len = l->end - l->start;
      l->start = l->end;
      return ESG_OK;
    }
    if (l->eof) return ESG_NOT_FOUND;
    struct pollfd p = {l->fd, POLLIN, 0};
    int n = poll(&p, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return ESG_BUSY;
    /* keep the partial line; make room */
    if (l->start) {
      memmove(l->buf, l->buf + l->start, l->end - l->start);
      l->end -= l->start;
      l->start = 0;
    }
    if (l->end == l->cap) {
      size_t cap = l->cap ? 2 * l->cap : 65536;
      if (cap > MAX_LINE + CUT) cap = MAX_LINE + CUT;
      if (cap > l->cap) {
        char *b = esg__realloc(l->buf, cap);
        if (!b) return esg__fail(NULL, ESG_ENOMEM, "out of memory reading the source");
        l->buf = b;
        l->cap = cap;
      }
    }
    ssize_t r = read(l->fd, l->buf + l->end, l->cap - l->end);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) return esg__fail(NULL, ESG_EIO, "reading the source: %s", strerror(errno));
    if (r == 0) l->eof = true;
    l->end += (size_t)r;
  }
}

static void lines_close(void *ud) {
  lines *l = ud;
  if (!l) return;
  if (l->own) close(l->fd);
  esg__free(l->buf);
  esg__free(l->cut);
  esg__free(l);
}

static int open_lines(esg_gateway_source *out, int fd, bool own, size_t max) {
  lines *l = esg__calloc(1, sizeof *l);
  if (!l) {
    if (own) close(fd);
    return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the source");
  }
  l->fd = fd;
  l->own = own;
  l->max = max;
  l->cut_max = max < CUT ? max : CUT;
  *out = (esg_gateway_source){lines_next, lines_close, l, fd};
  return ESG_OK;
}

int esg_gateway_source_lines(esg_gateway_source *out, const char *path, int fd, const esg_gateway_lines_opts *opts) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  memset(out, 0, sizeof *out);
  out->fd = -1;
  esg_gateway_lines_opts o = ESG_GATEWAY_LINES_OPTS_INIT;
  if (opts) {
    int rc = ESG__OPTS_COPY(NULL, esg_gateway_lines_opts, &o, opts);
    if (rc != ESG_OK) return rc;
  }
  if (o.max_line > MAX_LINE)
    return esg__fail(NULL, ESG_EINVAL, "max_line %zu is over %zu, the most an event may be (ESG_EVENT_MAX_BYTES)",
                     o.max_line, MAX_LINE);
  size_t max = o.max_line ? o.max_line : MAX_LINE;
  if (!path) {
    if (fd < 0) return esg__fail(NULL, ESG_EINVAL, "fd %d is not open", fd);
    return open_lines(out, fd, false, max);
  }
  if (!*path) return esg__fail(NULL, ESG_EINVAL, "source path is empty");
  if (strcmp(path, "-") == 0) return open_lines(out, 0, false, max);
  int pfd = open(path, O_RDONLY | O_CLOEXEC);
  if (pfd < 0) return esg__fail(NULL, ESG_EIO, "cannot open the source %s: %s", path, strerror(errno));
  return open_lines(out, pfd, true, max);
}

int esg_gateway_source_fd(esg_gateway_source *out, int fd) { return esg_gateway_source_lines(out, NULL, fd, NULL); }

int esg_gateway_source_jsonl(esg_gateway_source *out, const char *path) {
  if (out && !path) {
    memset(out, 0, sizeof *out);
    out->fd = -1;
    return esg__fail(NULL, ESG_EINVAL, "source path is NULL");
  }
  return esg_gateway_source_lines(out, path, -1, NULL);
}
