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

typedef struct lines {
  int fd;
  bool own, eof;
  char *buf;
  size_t start, end, cap;
} lines;

static int lines_next(void *ud, const char **data, size_t *len) {
  lines *l = ud;
  for (;;) {
    char *nl = l->start < l->end ? memchr(l->buf + l->start, '\n', l->end - l->start) : NULL;
    if (nl) {
      *data = l->buf + l->start;
      *len = (size_t)(nl - *data);
      l->start += *len + 1;
      return ESG_OK;
    }
    if (l->eof) {
      if (l->start == l->end) return ESG_NOT_FOUND;
      *data = l->buf + l->start; /* the last line, without its newline */
      *len = l->end - l->start;
      l->start = l->end;
      return ESG_OK;
    }
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
      if (cap > (size_t)ESG_EVENT_MAX_BYTES * 4 + 65536)
        return esg__fail(NULL, ESG_ETOOBIG, "a line of the source is longer than %d bytes", 4 * ESG_EVENT_MAX_BYTES);
      char *b = esg__realloc(l->buf, cap);
      if (!b) return esg__fail(NULL, ESG_ENOMEM, "out of memory reading the source");
      l->buf = b;
      l->cap = cap;
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
  esg__free(l);
}

static int open_lines(esg_gateway_source *out, int fd, bool own) {
  lines *l = esg__calloc(1, sizeof *l);
  if (!l) {
    if (own) close(fd);
    return esg__fail(NULL, ESG_ENOMEM, "out of memory opening the source");
  }
  l->fd = fd;
  l->own = own;
  *out = (esg_gateway_source){lines_next, lines_close, l, fd};
  return ESG_OK;
}

int esg_gateway_source_fd(esg_gateway_source *out, int fd) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (fd < 0) return esg__fail(NULL, ESG_EINVAL, "fd %d is not open", fd);
  return open_lines(out, fd, false);
}

int esg_gateway_source_jsonl(esg_gateway_source *out, const char *path) {
  if (!out) return esg__fail(NULL, ESG_EINVAL, "out is NULL");
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (!path || !*path) return esg__fail(NULL, ESG_EINVAL, "source path is NULL or empty");
  if (strcmp(path, "-") == 0) return open_lines(out, 0, false);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return esg__fail(NULL, ESG_EIO, "cannot open the source %s: %s", path, strerror(errno));
  return open_lines(out, fd, true);
}
