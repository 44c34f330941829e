/*
 * Deliberately minimal: requests are tiny and rare, so each connection gets
 * a fixed 4 KiB request buffer and one response, then is closed.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "log.h"
#include "metrics.h"

enum { ADMIN_REQ_MAX = 4096, ADMIN_MAX_CLIENTS = 64 };

typedef struct admin_client {
  uv_tcp_t tcp;
  uv_write_t wreq;
  struct h3g_admin *admin;
  struct admin_client *prev, *next;
  size_t len;
  char *resp;
  char req[ADMIN_REQ_MAX];
} admin_client;

struct h3g_admin {
  uv_tcp_t listener;
  uint16_t port; /* bound (the kernel's pick when asked for 0) */
  admin_client *clients;
  size_t nclients;
  int draining;
  int quic_serving, tcp_serving;
  int quic_failed;
  char quic_failure[128];
  int closing;
  size_t pending_closes;
  void (*close_cb)(void *);
  void *close_arg;
  h3g_admin_render view_metrics, view_json;
  const void *view_arg;
  h3g_admin_ready_fn ready;
  const void *ready_arg;
};

static void maybe_finish(h3g_admin *a) {
  if (a->closing && a->pending_closes == 0) {
    void (*cb)(void *) = a->close_cb;
    void *arg = a->close_arg;
    free(a);
    if (cb)
      cb(arg);
  }
}

static void on_client_closed(uv_handle_t *h) {
  admin_client *c = h->data;
  h3g_admin *a = c->admin;
  if (c->prev)
    c->prev->next = c->next;
  else
    a->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  a->nclients--;
  free(c->resp);
  free(c);
  if (a->closing) {
    a->pending_closes--;
    maybe_finish(a);
  }
}

static void client_close(admin_client *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
    if (c->admin->closing)
      c->admin->pending_closes++;
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
  }
}

static void on_written(uv_write_t *req, int status) {
  H3G_UNUSED(status);
  client_close(req->data);
}

static void respond(admin_client *c, int status, const char *reason,
                    const char *ctype, const char *body, size_t blen) {
  size_t cap = blen + 256;
  c->resp = malloc(cap);
  if (c->resp == NULL) {
    client_close(c);
    return;
  }
  int n = snprintf(c->resp, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   status, reason, ctype, blen);
  memcpy(c->resp + n, body, blen);
  uv_buf_t buf = uv_buf_init(c->resp, (unsigned)((size_t)n + blen));
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
    client_close(c);
}

/* /health (quic_only 0) or /health/quic (1): see admin.h. */
static void health(admin_client *c, int quic_only) {
  const h3g_admin *a = c->admin;
  char body[256];
  int ok = 1;
  if (a->draining) {
    ok = 0;
    snprintf(body, sizeof(body), "draining\n");
  } else if (quic_only && a->quic_failed) {
    ok = 0;
    snprintf(body, sizeof(body), "down: UDP socket failed (%s)\n",
             a->quic_failure);
  } else if (quic_only && !a->quic_serving) {
    ok = 0;
    snprintf(body, sizeof(body), "off: no QUIC listener\n");
  } else if (a->quic_failed) {
    ok = a->tcp_serving;
    snprintf(body, sizeof(body), "%s: HTTP/3 down, UDP socket failed (%s)%s\n",
             ok ? "degraded" : "down", a->quic_failure,
             ok ? "; HTTPS over TCP serving" : "");
  } else {
    snprintf(body, sizeof(body), "ok\n");
  }
  if (ok)
    respond(c, 200, "OK", "text/plain", body, strlen(body));
  else
    respond(c, 503, "Service Unavailable", "text/plain", body, strlen(body));
}

/* /readyz: see admin.h. */
static void readiness(admin_client *c) {
  const h3g_admin *a = c->admin;
  char body[320];
  char why[256] = "";
  int ok = !a->draining;
  if (!ok)
    snprintf(body, sizeof(body), "draining\n");
  else if (a->ready != NULL && !a->ready(a->ready_arg, why, sizeof(why))) {
    ok = 0;
    snprintf(body, sizeof(body), "not ready: %s\n", why);
  } else {
    snprintf(body, sizeof(body), "ready\n");
  }
  if (ok)
    respond(c, 200, "OK", "text/plain", body, strlen(body));
  else
    respond(c, 503, "Service Unavailable", "text/plain", body, strlen(body));
}

/* A view's text, rendered into a buffer of the size it asks for (it may
 * have grown between the two calls: then once more). NULL without
 * memory. */
static char *render_view(h3g_admin_render fn, const void *arg, size_t *len) {
  size_t cap = 4096;
  for (int i = 0; i < 3; i++) {
    char *buf = malloc(cap);
    if (buf == NULL)
      return NULL;
    size_t need = fn(arg, buf, cap);
    if (need < cap) {
      *len = need;
      return buf;
    }
    free(buf);
    cap = need + 4096;
  }
  return NULL;
}

static void serve(admin_client *c) {
  uv_read_stop((uv_stream_t *)&c->tcp);
  const h3g_admin *a = c->admin;
  if (strncmp(c->req, "GET /metrics ", 13) == 0) {
    size_t need = h3g_metrics_render(NULL, 0) + 1;
    char *text = malloc(need);
    size_t vlen = 0;
    char *view = a->view_metrics != NULL
                     ? render_view(a->view_metrics, a->view_arg, &vlen)
                     : NULL;
    char *all = text != NULL ? realloc(text, need + vlen) : NULL;
    if (all == NULL) {
      free(text);
      free(view);
      client_close(c);
      return;
    }
    size_t len = h3g_metrics_render(all, need);
    if (view != NULL)
      memcpy(all + len, view, vlen);
    respond(c, 200, "OK", "text/plain; version=0.0.4", all, len + vlen);
    free(all);
    free(view);
  } else if (strncmp(c->req, "GET /upstreams ", 15) == 0 &&
             a->view_json != NULL) {
    size_t len = 0;
    char *json = render_view(a->view_json, a->view_arg, &len);
    if (json == NULL) {
      client_close(c);
      return;
    }
    respond(c, 200, "OK", "application/json", json, len);
    free(json);
  } else if (strncmp(c->req, "GET /healthz ", 13) == 0) {
    respond(c, 200, "OK", "text/plain", "ok\n", 3);
  } else if (strncmp(c->req, "GET /readyz ", 12) == 0) {
    readiness(c);
  } else if (strncmp(c->req, "GET /health ", 12) == 0) {
    health(c, 0);
  } else if (strncmp(c->req, "GET /health/quic ", 17) == 0) {
    health(c, 1);
  } else {
    respond(c, 404, "Not Found", "text/plain", "not found\n", 10);
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  H3G_UNUSED(hint);
  admin_client *c = h->data;
  size_t room = ADMIN_REQ_MAX - 1 - c->len;
  *buf = uv_buf_init(c->req + c->len, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  H3G_UNUSED(buf);
  admin_client *c = s->data;
  if (nread < 0) {
    client_close(c);
    return;
  }
  c->len += (size_t)nread;
  c->req[c->len] = '\0';
  if (strstr(c->req, "\r\n\r\n") != NULL)
    serve(c);
  else if (c->len >= ADMIN_REQ_MAX - 1)
    respond(c, 431, "Request Header Fields Too Large", "text/plain", "", 0);
}

static void on_connection(uv_stream_t *server, int status) {
  h3g_admin *a = server->data;
  if (status != 0)
    return;
  admin_client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  c->admin = a;
  c->next = a->clients;
  if (a->clients)
    a->clients->prev = c;
  a->clients = c;
  a->nclients++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      a->nclients > ADMIN_MAX_CLIENTS ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    client_close(c);
}

static void on_failed_close(uv_handle_t *h) { free(h->data); }

int h3g_admin_new(h3g_admin **pa, void *loop, const char *host,
                  uint16_t port) {
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    h3g_error("admin: bad address %s", host);
    return H3G_ERR_INVAL;
  }
  h3g_admin *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return H3G_ERR_NOMEM;
  uv_tcp_init(loop, &a->listener);
  a->listener.data = a;
  int rv = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
  if (rv == 0)
    rv = uv_listen((uv_stream_t *)&a->listener, 64, on_connection);
  if (rv != 0) {
    h3g_error("admin: cannot listen on %s:%u: %s", host, port, uv_strerror(rv));
    /* The handle is initialised: free a only from the close callback. */
    uv_close((uv_handle_t *)&a->listener, on_failed_close);
    return H3G_ERR_IO;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  if (uv_tcp_getsockname(&a->listener, (struct sockaddr *)&bound, &blen) == 0)
    a->port = h3g_sockaddr_port((struct sockaddr *)&bound);
  h3g_info("admin listening on tcp %s:%u", host, a->port);
  *pa = a;
  return 0;
}

uint16_t h3g_admin_port(const h3g_admin *a) {
  return a->port;
}

void h3g_admin_set_draining(h3g_admin *a) { a->draining = 1; }

void h3g_admin_set_ready(h3g_admin *a, h3g_admin_ready_fn fn,
                         const void *arg) {
  a->ready = fn;
  a->ready_arg = arg;
}

void h3g_admin_set_view(h3g_admin *a, h3g_admin_render metrics,
                        h3g_admin_render json, const void *arg) {
  a->view_metrics = metrics;
  a->view_json = json;
  a->view_arg = arg;
}

void h3g_admin_set_serving(h3g_admin *a, int quic, int tcp) {
  a->quic_serving = quic;
  a->tcp_serving = tcp;
}

void h3g_admin_set_quic_failed(h3g_admin *a, const char *why) {
  a->quic_failed = why != NULL;
  if (why == NULL)
    why = "";
  snprintf(a->quic_failure, sizeof(a->quic_failure), "%s", why);
}

static void on_listener_closed(uv_handle_t *h) {
  h3g_admin *a = h->data;
  a->pending_closes--;
  maybe_finish(a);
}

void h3g_admin_close(h3g_admin *a, void (*cb)(void *arg), void *arg) {
  a->closing = 1;
  a->close_cb = cb;
  a->close_arg = arg;
  a->pending_closes = 1;
  uv_close((uv_handle_t *)&a->listener, on_listener_closed);
  for (admin_client *c = a->clients; c != NULL; c = c->next)
    client_close(c);
}
