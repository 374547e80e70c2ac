/*
 * The egress tests' HTTP server (see httpd.h): plain sockets and threads, no
 * dependencies, enough HTTP/1.1 for libcurl (Content-Length bodies, keep-alive).
 */
#include "httpd.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTPD_MAX_RULES 64
#define HTTPD_MAX_CONNS 1024

typedef struct httpd_rule_int {
  char path[256];
  int any, count, status, stall_ms, close;
  char retry_after[128], body[512], etag[512];
  int has_body;
} httpd_rule_int;

typedef struct httpd_conn {
  httpd *h;
  int fd, id;
  pthread_t th;
} httpd_conn;

struct httpd {
  int lfd, port, wake[2];
  volatile int stop;
  pthread_t accept_th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  httpd_rule_int rules[HTTPD_MAX_RULES];
  int nrules, default_status;
  httpd_req *reqs;
  int nreqs, capreqs;
  httpd_conn *conns[HTTPD_MAX_CONNS];
  int nconns;
};

int64_t httpd_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *httpd_reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 422: return "Unprocessable Content";
  case 425: return "Too Early";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  }
  return "Status";
}

static int httpd_send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

const char *httpd_header(const httpd_req *req, const char *name, char *out, size_t n) {
  size_t nl = strlen(name);
  const char *p = req->headers;
  while (*p) {
    const char *eol = strstr(p, "\r\n");
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (len > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
      const char *v = p + nl + 1;
      while (*v == ' ' || *v == '\t') v++;
      size_t vl = len - (size_t)(v - p);
      if (vl >= n) vl = n - 1;
      memcpy(out, v, vl);
      out[vl] = '\0';
      return out;
    }
    if (!eol) break;
    p = eol + 2;
  }
  return NULL;
}

/* Picks the rule for path under the lock; returns a copy (status 200 if none). */
static httpd_rule_int httpd_pick(httpd *h, const char *path) {
  httpd_rule_int r;
  memset(&r, 0, sizeof r);
  r.status = h->default_status;
  for (int i = 0; i < h->nrules; i++) {
    httpd_rule_int *x = &h->rules[i];
    if (x->count == -2) continue; /* used up */
    if (!x->any && strcmp(x->path, path) != 0) continue;
    r = *x;
    if (x->count > 0 && --x->count == 0) x->count = -2;
    break;
  }
  return r;
}

/* Waits ms (or for ever when ms < 0) unless the peer closes or the server stops; 1 if the peer closed. */
static int httpd_stall(httpd *h, int fd, int ms) {
  int64_t until = ms < 0 ? INT64_MAX : httpd_now_ms() + ms;
  while (!h->stop) {
    int64_t left = until - httpd_now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, left > 20 ? 20 : (int)left);
    if (r > 0) {
      char c;
      ssize_t k = recv(fd, &c, 1, MSG_PEEK);
      if (k <= 0) return 1;
    }
  }
  return 1;
}

static void *httpd_conn_main(void *arg) {
  httpd_conn *c = arg;
  httpd *h = c->h;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap + 1);
  while (buf && !h->stop) {
    /* read one request head */
    char *end;
    buf[len] = '\0';
    while (!(end = strstr(buf, "\r\n\r\n"))) {
      if (len == cap) goto out;
      ssize_t k = recv(c->fd, buf + len, cap - len, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) goto out;
      len += (size_t)k;
      buf[len] = '\0';
    }
    size_t head = (size_t)(end - buf) + 4;
    httpd_req rq;
    memset(&rq, 0, sizeof rq);
    rq.t_ms = httpd_now_ms();
    rq.conn = c->id;
    char *line_end = strstr(buf, "\r\n");
    *line_end = '\0';
    if (sscanf(buf, "%15s %511s", rq.method, rq.path) != 2) goto out;
    size_t hl = (size_t)(end - (line_end + 2));
    if (hl >= sizeof rq.headers) hl = sizeof rq.headers - 1;
    memcpy(rq.headers, line_end + 2, hl);
    rq.headers[hl] = '\0';
    char v[64];
    size_t clen = 0;
    if (httpd_header(&rq, "Content-Length", v, sizeof v)) clen = (size_t)strtoull(v, NULL, 10);
    if (httpd_header(&rq, "Expect", v, sizeof v) && strcasecmp(v, "100-continue") == 0)
      httpd_send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    if (head + clen > cap) goto out;
    while (len < head + clen) {
      ssize_t k = recv(c->fd, buf + len, cap - len, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) goto out;
      len += (size_t)k;
    }
    rq.body = malloc(clen + 1);
    if (!rq.body) goto out;
    memcpy(rq.body, buf + head, clen);
    rq.body[clen] = '\0';
    rq.body_len = clen;
    memmove(buf, buf + head + clen, len - head - clen);
    len -= head + clen;

    pthread_mutex_lock(&h->mu);
    httpd_rule_int r = httpd_pick(h, rq.path);
    if (h->nreqs == h->capreqs) {
      int nc = h->capreqs ? h->capreqs * 2 : 256;
      httpd_req *n = realloc(h->reqs, (size_t)nc * sizeof *n);
      if (!n) {
        pthread_mutex_unlock(&h->mu);
        free(rq.body);
        goto out;
      }
      h->reqs = n;
      h->capreqs = nc;
    }
    int idx = h->nreqs++;
    h->reqs[idx] = rq;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);

    if (r.close) goto out;
    if (r.stall_ms && httpd_stall(h, c->fd, r.stall_ms)) goto out;
    int status = r.status ? r.status : 200;
    const char *body = r.has_body ? r.body : (status == 204 || status == 304 ? "" : "ok");
    char resp[2048];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n", status, httpd_reason(status),
                     strlen(body));
    if (r.retry_after[0]) n += snprintf(resp + n, sizeof resp - (size_t)n, "Retry-After: %s\r\n", r.retry_after);
    if (r.etag[0]) n += snprintf(resp + n, sizeof resp - (size_t)n, "ETag: %s\r\n", r.etag);
    n += snprintf(resp + n, sizeof resp - (size_t)n, "\r\n%s", body);
    pthread_mutex_lock(&h->mu);
    h->reqs[idx].status = status;
    pthread_mutex_unlock(&h->mu);
    if (httpd_send_all(c->fd, resp, (size_t)n) != 0) goto out;
  }
out:
  free(buf);
  shutdown(c->fd, SHUT_RDWR);
  return NULL;
}

static void *httpd_accept_main(void *arg) {
  httpd *h = arg;
  while (!h->stop) {
    struct pollfd p[2] = {{h->lfd, POLLIN, 0}, {h->wake[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (h->stop || p[1].revents) break;
    int fd = accept(h->lfd, NULL, NULL);
    if (fd < 0) continue;
    pthread_mutex_lock(&h->mu);
    if (h->nconns == HTTPD_MAX_CONNS) {
      pthread_mutex_unlock(&h->mu);
      close(fd);
      continue;
    }
    httpd_conn *c = calloc(1, sizeof *c);
    if (!c) {
      pthread_mutex_unlock(&h->mu);
      close(fd);
      continue;
    }
    c->h = h;
    c->fd = fd;
    c->id = h->nconns + 1;
    h->conns[h->nconns++] = c;
    pthread_mutex_unlock(&h->mu);
    pthread_create(&c->th, NULL, httpd_conn_main, c);
  }
  return NULL;
}

httpd *httpd_start(void) {
  httpd *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->default_status = 200;
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(h->lfd, 256) != 0 ||
      getsockname(h->lfd, (struct sockaddr *)&a, &al) != 0 || pipe(h->wake) != 0) {
    perror("httpd_start");
    if (h->lfd >= 0) close(h->lfd);
    free(h);
    return NULL;
  }
  h->port = ntohs(a.sin_port);
  pthread_create(&h->accept_th, NULL, httpd_accept_main, h);
  return h;
}

void httpd_stop(httpd *h) {
  if (!h) return;
  h->stop = 1;
  if (write(h->wake[1], "x", 1) < 0) perror("httpd_stop");
  pthread_join(h->accept_th, NULL);
  for (int i = 0; i < h->nconns; i++) shutdown(h->conns[i]->fd, SHUT_RDWR);
  for (int i = 0; i < h->nconns; i++) {
    pthread_join(h->conns[i]->th, NULL);
    close(h->conns[i]->fd);
    free(h->conns[i]);
  }
  for (int i = 0; i < h->nreqs; i++) free(h->reqs[i].body);
  free(h->reqs);
  close(h->lfd);
  close(h->wake[0]);
  close(h->wake[1]);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  free(h);
}

int httpd_port(const httpd *h) { return h->port; }

void httpd_url(const httpd *h, const char *path, char *out, size_t n) {
  snprintf(out, n, "http://127.0.0.1:%d%s", h->port, path);
}

void httpd_rule_add(httpd *h, const httpd_rule *r) {
  pthread_mutex_lock(&h->mu);
  if (h->nrules < HTTPD_MAX_RULES) {
    httpd_rule_int *x = &h->rules[h->nrules++];
    memset(x, 0, sizeof *x);
    x->any = r->path == NULL;
    if (r->path) snprintf(x->path, sizeof x->path, "%s", r->path);
    x->count = r->count > 0 ? r->count : -1;
    x->status = r->status ? r->status : 200;
    x->stall_ms = r->stall_ms;
    x->close = r->close;
    if (r->retry_after) snprintf(x->retry_after, sizeof x->retry_after, "%s", r->retry_after);
    if (r->etag) snprintf(x->etag, sizeof x->etag, "%s", r->etag);
    if (r->body) {
      snprintf(x->body, sizeof x->body, "%s", r->body);
      x->has_body = 1;
    }
  }
  pthread_mutex_unlock(&h->mu);
}

void httpd_default_status(httpd *h, int status) {
  pthread_mutex_lock(&h->mu);
  h->default_status = status;
  pthread_mutex_unlock(&h->mu);
}

int httpd_count(httpd *h) {
  pthread_mutex_lock(&h->mu);
  int n = h->nreqs;
  pthread_mutex_unlock(&h->mu);
  return n;
}

int httpd_connections(httpd *h) {
  pthread_mutex_lock(&h->mu);
  int n = h->nconns;
  pthread_mutex_unlock(&h->mu);
  return n;
}

int httpd_get(httpd *h, int i, httpd_req *out) {
  pthread_mutex_lock(&h->mu);
  int ok = i >= 0 && i < h->nreqs;
  if (ok) *out = h->reqs[i];
  pthread_mutex_unlock(&h->mu);
  return ok ? 0 : -1;
}

int httpd_wait(httpd *h, int n, int timeout_ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&h->mu);
  while (h->nreqs < n && pthread_cond_timedwait(&h->cv, &h->mu, &until) == 0) {
  }
  int got = h->nreqs;
  pthread_mutex_unlock(&h->mu);
  return got;
}
