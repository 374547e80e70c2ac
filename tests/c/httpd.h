/*
 * A small HTTP/1.1 server for the egress tests: listens on 127.0.0.1 on an
 * ephemeral port, one thread per connection (keep-alive), answers by rules set
 * per path (and per request count, so a sequence such as "503, 503, 200" is a
 * list of rules), and records every request it reads: method, path, headers,
 * body, arrival time and the id of the connection it came on.
 *
 * Include httpd.c into the one test file that uses it (the test build links
 * only testutil.c besides each test).
 */
#ifndef ESG_TEST_HTTPD_H
#define ESG_TEST_HTTPD_H

#include <stddef.h>
#include <stdint.h>

/* What to do with a request that matches path. */
typedef struct httpd_rule {
  const char *path;        /* exact path; NULL = any */
  int count;               /* how many requests this rule answers; 0 = all */
  int status;              /* answer status; 0 = 200 */
  const char *retry_after; /* Retry-After value (seconds or HTTP-date); NULL = none */
  int stall_ms;            /* wait this long before answering (the client may time out); -1 = never answer */
  int close;               /* close the connection after reading the request, no answer */
  const char *body;        /* answer body; NULL = "ok" (nothing for 204/304) */
  const char *etag;        /* ETag header; NULL = none */
} httpd_rule;

/* One request as read. Strings are NUL-terminated copies owned by the server (valid until stop). */
typedef struct httpd_req {
  char method[16];
  char path[512];
  char headers[4096];      /* the header lines as received, "\r\n"-separated */
  char *body;
  size_t body_len;
  int64_t t_ms;            /* arrival (monotonic ms) */
  int conn;                /* connection id, from 1 in accept order */
  int status;              /* what was answered; 0 = closed or stalled without answer */
} httpd_req;

typedef struct httpd httpd;

/* Starts a server; NULL on failure (a message on stderr). */
httpd *httpd_start(void);
/* Stops it: closes every connection, joins its threads, frees everything. NULL is fine. */
void httpd_stop(httpd *h);
int httpd_port(const httpd *h);
/* Writes "http://127.0.0.1:<port><path>" into out. */
void httpd_url(const httpd *h, const char *path, char *out, size_t n);
/* Adds a rule after the existing ones (the first matching rule with answers left wins; else 200 "ok"). */
void httpd_rule_add(httpd *h, const httpd_rule *r);
/* Status for requests no rule matches (default 200). */
void httpd_default_status(httpd *h, int status);
/* Requests recorded so far / connections accepted so far. */
int httpd_count(httpd *h);
int httpd_connections(httpd *h);
/* Copies request i (0-based, in arrival order) into *out; 0 on success, -1 if there is none. */
int httpd_get(httpd *h, int i, httpd_req *out);
/* Waits until at least n requests were recorded or timeout_ms passed; returns the count. */
int httpd_wait(httpd *h, int n, int timeout_ms);
/* Header value of name (case-insensitive) in req into out; returns out, or NULL if absent. */
const char *httpd_header(const httpd_req *req, const char *name, char *out, size_t n);
/* Monotonic ms, the clock of httpd_req.t_ms. */
int64_t httpd_now_ms(void);

#endif
