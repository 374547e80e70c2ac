/*
 * The JSON-lines reader, esg_gateway_source_fd, over a pipe fed in chunks, so lines arrive
 * in pieces and next() answers ESG_BUSY in between. Input: byte 0 picks the chunk size
 * (low 7 bits + 1 bytes; 128: all at once; never more than some 32 writes; 0xff: 4 KiB
 * writes of the rest with 70000 spaces in its middle, a line longer than the reader's
 * first buffer, which must grow); the rest is the stream. The lines read, joined
 * with '\n', are the stream (less one final '\n'); ESG_BUSY comes only while the writer is
 * open and ESG_NOT_FOUND only at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <esg.h>
#include "fuzz.h"

typedef struct got {
  char *buf;
  size_t len, cap, lines;
} got;

static void add(got *g, const char *p, size_t n) {
  if (g->len + n + 1 > g->cap) {
    size_t cap = (g->len + n + 1) * 2;
    char *b = realloc(g->buf, cap);
    FUZZ_CHECK(b != NULL);
    g->buf = b;
    g->cap = cap;
  }
  if (n) memcpy(g->buf + g->len, p, n);
  g->len += n;
}

/* Reads what the source has now; returns the last code (ESG_BUSY or ESG_NOT_FOUND). */
static int drain(const esg_gateway_source *src, got *g) {
  for (;;) {
    const char *d = NULL;
    size_t n = 0;
    int rc = src->next(src->ud, &d, &n);
    if (rc != ESG_OK) return rc;
    FUZZ_CHECK(d != NULL || n == 0);
    FUZZ_CHECK(n == 0 || memchr(d, '\n', n) == NULL);
    if (g->lines++) add(g, "\n", 1);
    add(g, d, n);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = (data[0] & 0x7f) + 1;
  int stretch = data[0] == 0xff; /* rare: slow */
  const uint8_t *in = data + 1;
  size_t n = size - 1;
  uint8_t *own = NULL;
  if (stretch) { /* 70000 spaces in the middle: a line longer than the first buffer */
    size_t half = n / 2, pad = 70000;
    own = malloc(n + pad);
    FUZZ_CHECK(own != NULL);
    memcpy(own, in, half);
    memset(own + half, ' ', pad);
    memcpy(own + half + pad, in + half, n - half);
    in = own;
    n += pad;
    chunk = 4096;
  } else if (chunk == 128) {
    chunk = n ? n : 1;
  }
  if (chunk < n / 32) chunk = n / 32; /* at most some 32 writes: syscalls are the cost */

  int p[2];
  FUZZ_CHECK(pipe2(p, O_CLOEXEC) == 0);
  FUZZ_CHECK(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
  esg_gateway_source src;
  int rc = esg_gateway_source_fd(&src, p[0]);
  FUZZ_CHECK_RC(rc == ESG_OK, rc, NULL);
  FUZZ_CHECK(src.fd == p[0] && src.next != NULL);
  got g = {0};
  for (size_t off = 0; off < n;) {
    size_t m = n - off < chunk ? n - off : chunk;
    ssize_t w = write(p[1], in + off, m);
    if (w < 0) FUZZ_CHECK(errno == EAGAIN);
    else off += (size_t)w;
    rc = drain(&src, &g);
    FUZZ_CHECK_RC(rc == ESG_BUSY, rc, NULL);
  }
  close(p[1]);
  rc = drain(&src, &g);
  FUZZ_CHECK_RC(rc == ESG_NOT_FOUND, rc, NULL);
  rc = drain(&src, &g); /* and stays at the end */
  FUZZ_CHECK_RC(rc == ESG_NOT_FOUND, rc, NULL);
  if (src.close) src.close(src.ud);
  close(p[0]);

  size_t want = n && in[n - 1] == '\n' ? n - 1 : n;
  if (n == 0) FUZZ_CHECK(g.lines == 0);
  FUZZ_CHECK(g.len == want && (want == 0 || memcmp(g.buf, in, want) == 0));
  free(g.buf);
  free(own);
  return 0;
}
