/*
 * The server thread: libmicrohttpd in external-poll mode (epoll) on a thread of ours,
 * every MHD callback, the cut of slow connections, and the answers MHD sends. A
 * request whose body is in and whose signature verifies is queued for the gateway
 * with its connection suspended; the gateway's thread resumes it with its answer
 * (esg__ingress_answer) and MHD calls on_request again, which sends it.
 *
 * Slow clients: MHD's connection timeout only bounds idleness (one byte a second is
 * never idle), so each connection also has a deadline for its whole request, from its
 * start or its previous answer; the sweep after each MHD turn shuts the socket of a
 * connection past it, and MHD closes it. A request with the gateway has no deadline:
 * then the server is the slow one.
 */
#include <microhttpd.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "ingress_int.h"

/* The longest MHD turn: the precision of the slow-client cut and of noticing a stop. */
#define TURN_MS 50

int64_t esg__mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t deadline(const esg_ingress *ing) { return esg__mono_us() + (int64_t)ing->o.request_timeout_ms * 1000; }

/* Queues r's answer on its connection. */
static enum MHD_Result send_answer(esg_ingress *ing, struct MHD_Connection *c, esg__req *r, const char *ctype,
                                   const char *body, size_t len, const char *allow) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  if (r->retry_after) {
    char ra[24];
    snprintf(ra, sizeof ra, "%d", ing->o.retry_after_s);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
  }
  if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
  if (r->close || ing->o.no_keepalive || atomic_load(&ing->stop))
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  enum MHD_Result ok = MHD_queue_response(c, (unsigned)r->status, resp);
  MHD_destroy_response(resp);
  pthread_mutex_lock(&ing->mu);
  esg__ingress_count(ing, r->status, esg__mono_us() - r->t0_us);
  pthread_mutex_unlock(&ing->mu);
  return ok;
}

static enum MHD_Result answer_json(esg_ingress *ing, struct MHD_Connection *c, esg__req *r) {
  return send_answer(ing, c, r, "application/json", r->answer, strlen(r->answer), NULL);
}

/* An answer decided here, on the server thread. */
static enum MHD_Result answer_now(esg_ingress *ing, struct MHD_Connection *c, esg__req *r, int status,
                                  const char *error, bool retry_after) {
  r->status = status;
  r->retry_after = retry_after;
  if (error) snprintf(r->answer, sizeof r->answer, "{\"error\":\"%s\"}", error);
  return answer_json(ing, c, r);
}

static enum MHD_Result get_endpoint(esg_ingress *ing, struct MHD_Connection *c, esg__req *r, const char *url,
                                    const char *method) {
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
    r->status = 405;
    snprintf(r->answer, sizeof r->answer, "{\"error\":\"GET only\"}");
    return send_answer(ing, c, r, "application/json", r->answer, strlen(r->answer), "GET, HEAD");
  }
  if (strcmp(url, "/healthz") == 0) {
    bool stopping = atomic_load(&ing->stop);
    r->status = stopping ? 503 : 200;
    snprintf(r->answer, sizeof r->answer, "{\"status\":\"%s\"}", stopping ? "stopping" : "ok");
    return answer_json(ing, c, r);
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(ing->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  size_t len;
  pthread_mutex_lock(&ing->mu);
  char *text = esg__ingress_metrics(ing, di ? di->num_connections : 0, &len);
  pthread_mutex_unlock(&ing->mu);
  if (!text) return answer_now(ing, c, r, 503, "out of memory", true);
  r->status = 200;
  enum MHD_Result ok = send_answer(ing, c, r, "text/plain; version=0.0.4", text, len, NULL);
  esg__free(text);
  return ok;
}

static const esg__route *find_route(const esg_ingress *ing, const char *url) {
  for (size_t i = 0; i < ing->n_routes; i++)
    if (strcmp(ing->routes[i].path, url) == 0) return &ing->routes[i];
  return NULL;
}

/* The headers are in: the answers that need no body. */
static enum MHD_Result on_headers(esg_ingress *ing, struct MHD_Connection *c, esg__req *r, const char *url,
                                  const char *method) {
  if (strcmp(url, "/healthz") == 0 || strcmp(url, "/metrics") == 0) {
    r->endpoint = true; /* answered once the request is read: an answer before closes the connection */
    return MHD_YES;
  }
  r->close = true; /* until the body is read: an early answer leaves it unread */
  if (!(r->route = find_route(ing, url))) return answer_now(ing, c, r, 404, "no such route", false);
  if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
    r->status = 405;
    snprintf(r->answer, sizeof r->answer, "{\"error\":\"POST only\"}");
    return send_answer(ing, c, r, "application/json", r->answer, strlen(r->answer), "POST");
  }
  if (atomic_load(&ing->stop)) return answer_now(ing, c, r, 503, "stopping", true);
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl && strtoull(cl, NULL, 10) > ing->o.body_max) return answer_now(ing, c, r, 413, "the body is too large", false);
  r->close = false;
  return MHD_YES;
}

/* The whole request is in: verify, build the envelope, queue it for the gateway. */
static enum MHD_Result on_body_done(esg_ingress *ing, struct MHD_Connection *c, esg__req *r) {
  if (r->too_big) return answer_now(ing, c, r, 413, "the body is too large", false);
  const char *wid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, ESG_WEBHOOK_HEADER_ID);
  const char *wts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, ESG_WEBHOOK_HEADER_TIMESTAMP);
  const char *wsig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, ESG_WEBHOOK_HEADER_SIGNATURE);
  const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  int status = esg__ingress_envelope(ing, r, wid, wts, wsig, ctype);
  esg__buf_free(&r->body);
  if (status) {
    r->status = status;
    r->retry_after = status == 503;
    return answer_json(ing, c, r);
  }
  pthread_mutex_lock(&ing->mu);
  bool refused = ing->closed || atomic_load(&ing->stop);
  bool full = ing->qlen >= ing->o.queue_max || ing->qbytes + r->env_len > ing->o.queue_bytes_max;
  if (!refused && !full) {
    /* suspended before the gateway's thread can see it, so its resume cannot come first */
    MHD_suspend_connection(c);
    r->suspended = true;
    if (r->cn) r->cn->deadline_us = 0;
    if (ing->qtail) ing->qtail->next = r;
    else ing->qhead = r;
    ing->qtail = r;
    ing->qlen++;
    ing->qbytes += r->env_len;
  }
  pthread_mutex_unlock(&ing->mu);
  if (refused) {
    r->close = true;
    return answer_now(ing, c, r, 503, "stopping", true);
  }
  if (full) return answer_now(ing, c, r, 503, "the queue is full", true);
  uint64_t one = 1;
  ssize_t n = write(ing->wake, &one, sizeof one); /* the gateway's loop polls it */
  (void)n;
  return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  (void)version;
  esg_ingress *ing = cls;
  esg__req *r = *con_cls;
  if (!r) {
    if (!(r = esg__calloc(1, sizeof *r))) return MHD_NO;
    r->c = c;
    r->t0_us = esg__mono_us();
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->cn = ci ? ci->socket_context : NULL;
    *con_cls = r;
    return on_headers(ing, c, r, url, method);
  }
  if (r->status) return answer_json(ing, c, r); /* resumed by the gateway's thread with its answer */
  if (r->endpoint) {
    if (!*upload_size) return get_endpoint(ing, c, r, url, method);
    *upload_size = 0; /* a body sent to them is read and dropped */
    return MHD_YES;
  }
  if (*upload_size) {
    if (!r->too_big && r->body.len + *upload_size > ing->o.body_max) {
      r->too_big = true; /* a chunked body past the limit: the rest is read and dropped */
      esg__buf_free(&r->body);
    }
    if (!r->too_big) {
      size_t len = r->body.len, n = *upload_size;
      if (len + n + 1 > r->body.cap) {
        size_t cap = r->body.cap ? r->body.cap : 4096;
        while (cap < len + n + 1) cap *= 2;
        char *p = esg__realloc(r->body.data, cap);
        if (!p) return MHD_NO;
        r->body.data = p;
        r->body.cap = cap;
      }
      memcpy(r->body.data + len, upload, n);
      r->body.len = len + n;
      r->body.data[r->body.len] = '\0';
    }
    *upload_size = 0;
    return MHD_YES;
  }
  return on_body_done(ing, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)c;
  (void)toe;
  esg_ingress *ing = cls;
  esg__req *r = *con_cls;
  if (!r) return;
  *con_cls = NULL;
  if (r->cn) r->cn->deadline_us = deadline(ing); /* a keep-alive connection: the next request's time */
  if (r->suspended) {
    pthread_mutex_lock(&ing->mu);
    ing->answering--;
    pthread_mutex_unlock(&ing->mu);
  }
  esg__buf_free(&r->body);
  esg__free(r->env);
  esg__free(r->id_json);
  esg__free(r);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  esg_ingress *ing = cls;
  esg__conn *cn = *socket_context;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    if (!(cn = esg__calloc(1, sizeof *cn))) return; /* not cut by us then; MHD's idle timeout still holds */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    cn->fd = ci ? ci->connect_fd : -1;
    cn->deadline_us = deadline(ing);
    cn->next = ing->conns.next;
    cn->prev = &ing->conns;
    ing->conns.next->prev = cn;
    ing->conns.next = cn;
    *socket_context = cn;
  } else if (cn) {
    cn->prev->next = cn->next;
    cn->next->prev = cn->prev;
    esg__free(cn);
    *socket_context = NULL;
  }
}

/* Cuts the connections past their deadline: MHD sees the socket end and closes it. */
static void sweep(esg_ingress *ing) {
  int64_t now = esg__mono_us();
  unsigned cut = 0;
  for (esg__conn *cn = ing->conns.next; cn != &ing->conns; cn = cn->next) {
    if (cn->deadline_us && now >= cn->deadline_us && cn->fd >= 0) {
      shutdown(cn->fd, SHUT_RDWR);
      cn->deadline_us = 0;
      cut++;
    }
  }
  if (cut) {
    pthread_mutex_lock(&ing->mu);
    ing->cut += cut;
    pthread_mutex_unlock(&ing->mu);
  }
}

/* One wait of the server thread: MHD's epoll fd or our wake fd (a resume, a stop), for
   at most TURN_MS or MHD's own timeout. Our own poll rather than MHD_run_wait, which in
   this version does not wake for a resume from another thread (measured: every answer
   a whole turn late). */
static void wait_turn(esg_ingress *ing, int epfd) {
  MHD_UNSIGNED_LONG_LONG mhd_ms = 0;
  int timeout = TURN_MS;
  if (MHD_get_timeout(ing->d, &mhd_ms) == MHD_YES && mhd_ms < (MHD_UNSIGNED_LONG_LONG)timeout) timeout = (int)mhd_ms;
  struct pollfd p[2] = {{epfd, POLLIN, 0}, {ing->swake, POLLIN, 0}};
  if (poll(p, 2, timeout) > 0 && (p[1].revents & POLLIN)) {
    uint64_t n;
    while (read(ing->swake, &n, sizeof n) > 0) {
    }
  }
}

static void *serve(void *arg) {
  esg_ingress *ing = arg;
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(ing->d, MHD_DAEMON_INFO_EPOLL_FD);
  int epfd = di ? di->epoll_fd : -1;
  while (!atomic_load(&ing->quit)) {
    wait_turn(ing, epfd);
    MHD_run(ing->d);
    sweep(ing);
    if (atomic_load(&ing->stop) && !ing->quiesced) { /* stop accepting; the connections stay */
      MHD_socket fd = MHD_quiesce_daemon(ing->d);
      if (fd != MHD_INVALID_SOCKET) close(fd);
      ing->quiesced = true;
    }
  }
  return NULL;
}

void esg__ingress_answer(esg_ingress *ing, esg__req *r, int status, const char *answer, bool retry_after) {
  r->status = status;
  r->retry_after = retry_after;
  if (answer) snprintf(r->answer, sizeof r->answer, "%s", answer);
  pthread_mutex_lock(&ing->mu);
  ing->answering++;
  pthread_mutex_unlock(&ing->mu);
  MHD_resume_connection(r->c); /* r is the server thread's from here on */
  uint64_t one = 1;
  ssize_t n = write(ing->swake, &one, sizeof one); /* its turn begins now */
  (void)n;
}

static int parse_listen(esg_ingress *ing, struct sockaddr_in *sa) {
  const char *colon = strrchr(ing->listen, ':');
  char host[64];
  char *end = NULL;
  long port = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || (size_t)(colon - ing->listen) >= sizeof host || !end || *end || colon[1] == '\0' || port < 0 ||
      port > 65535)
    return esg__fail(&ing->err, ESG_EINVAL, "listen \"%s\" is not ADDRESS:PORT (e.g. 127.0.0.1:8080)", ing->listen);
  memcpy(host, ing->listen, (size_t)(colon - ing->listen));
  host[colon - ing->listen] = '\0';
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
    return esg__fail(&ing->err, ESG_EINVAL, "listen \"%s\": \"%s\" is not an IPv4 address", ing->listen, host);
  return ESG_OK;
}

int esg__ingress_http_start(esg_ingress *ing) {
  struct sockaddr_in sa;
  int rc = parse_listen(ing, &sa);
  if (rc != ESG_OK) return rc;
  ing->conns.next = ing->conns.prev = &ing->conns;
  unsigned timeout_s = (unsigned)((ing->o.request_timeout_ms + 999) / 1000);
  /* MHD's pool per connection holds the request line and headers, its read buffer and
     the answer's headers; the body goes to our own buffer */
  size_t pool = ing->o.header_max + 8192;
  errno = 0;
  ing->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, ing,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
                            ing->o.connections_max, MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool, MHD_OPTION_NOTIFY_COMPLETED, on_completed, ing,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, ing, MHD_OPTION_END);
  if (!ing->d)
    return esg__fail(&ing->err, ESG_EIO, "cannot listen on %s: %s", ing->listen,
                     errno ? strerror(errno) : "libmicrohttpd refused to start");
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(ing->d, MHD_DAEMON_INFO_BIND_PORT);
  ing->port = di ? di->port : 0;
  if (pthread_create(&ing->thread, NULL, serve, ing) != 0) {
    MHD_stop_daemon(ing->d);
    ing->d = NULL;
    return esg__fail(&ing->err, ESG_EIO, "cannot start the server thread");
  }
  return ESG_OK;
}

void esg__ingress_http_stop(esg_ingress *ing) {
  if (!ing->d) return;
  atomic_store(&ing->quit, true);
  pthread_join(ing->thread, NULL);
  MHD_stop_daemon(ing->d); /* closes every connection: their requests end (on_completed) */
  ing->d = NULL;
}
