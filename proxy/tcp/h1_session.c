/*
 * HTTP/1.1 session: the request parser on one side, the bridge
 * (h3g_frontend_ops) on the other, the connection's transport ops below.
 *
 * One exchange at a time. Its life: IDLE (keep-alive wait, idle timer) ->
 * HEAD (first byte seen, header timer: a slow head is cut off before any
 * upstream connection is taken) -> ACTIVE (bridge made; request body fed
 * as the bridge gives credit; response written as the bridge hands it
 * out) -> back to IDLE once both the request was read and the response
 * written, or CLOSED. Finishing an exchange frees its bridge, so it is
 * never done from inside a bridge callback: callbacks only kick, and
 * h3g_h1_session_process() does it from the event loop.
 *
 * Flow control mirrors QUIC's: at most stream_buffer_size request body
 * bytes are handed to the bridge and not yet consumed; past that the
 * session takes no more bytes, so the owner stops reading the socket.
 * Response body is taken from the bridge only while the connection's
 * output has room, and released (body_done) once encrypted into it.
 *
 * HTTP/1.1 has no way to cut one response short but closing the
 * connection: an abort closes at once, and a chunked body that did not
 * complete never gets its last chunk, so the client sees the truncation.
 *
 * WebSocket (RFC 6455): a GET with "Upgrade: websocket" and "Connection:
 * upgrade" goes to the bridge as the extended CONNECT it means on HTTP/2
 * and HTTP/3 (:protocol websocket), with the client's Sec-WebSocket-*
 * fields. Bytes behind its head wait unread until the answer: a 101 turns
 * the connection into the tunnel (raw bytes both ways, through the bridge's
 * rings, with the same window; the client's end of stream is the tunnel's
 * request end; the upstream's end closes the connection once its bytes are
 * out), anything else is an ordinary response after which the connection
 * closes (what the client sent behind the head was meant for a tunnel).
 * Other Upgrade tokens (h2c...) are dropped with Upgrade and Connection,
 * which are hop-by-hop, and the request is served as an ordinary one (RFC
 * 9110 §7.8 lets a server ignore Upgrade). CONNECT is answered 501.
 */
#include "h1_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "frontend.h"
#include "h1_codec.h"
#include "log.h"
#include "metrics.h"

/* Plaintext staged per TLS write: one record's worth. */
#define STAGE_CAP 16384
/* Room a chunk needs around its data: hex size, CRLF, CRLF. */
#define CHUNK_OVERHEAD 24
typedef enum h1_state {
  ST_IDLE,   /* between requests */
  ST_HEAD,   /* a request head is arriving */
  ST_ACTIVE, /* an exchange is in flight */
  ST_CLOSED, /* close() was called; waiting to be freed */
} h1_state;

struct h3g_h1_session {
  const h3g_h1_env *env;
  const h3g_h1_transport_ops *tops;
  void *t;
  char client[64];
  h3g_h1_request_parser *parser;
  h3g_bridge *bridge;
  h1_state state;
  uint64_t unconsumed;      /* body bytes the bridge holds, not yet consumed */
  unsigned req_done : 1;    /* the request was read completely */
  unsigned resp_done : 1;   /* the response was written completely */
  unsigned head_sent : 1;   /* a final head was written */
  unsigned chunked : 1;     /* the response body is chunked */
  unsigned close_body : 1;  /* the response body ends with the connection */
  unsigned close_after : 1; /* close once this exchange is done */
  unsigned discard : 1;     /* request body bytes are dropped */
  unsigned http10 : 1;      /* the request is HTTP/1.0 */
  unsigned head_method : 1; /* HEAD: the response has no body */
  unsigned draining : 1;
  unsigned dying : 1;
  unsigned aborted : 1; /* the bridge aborted: it is only freed now */
  unsigned ws : 1;      /* the request asked for a WebSocket */
  unsigned tunnel : 1;  /* the 101 went: the connection is the tunnel */
  unsigned client_eof : 1; /* the client ended its side */
  uint32_t tunnels;     /* the bridge's count (frontend.h): 0 or 1 */
  int error_status;     /* refuse the request with this (400, 431), or 0 */
  uint8_t stage[STAGE_CAP];
  size_t staged;
  int write_err;
};

static const h3g_frontend_ops frontend_ops;

/* ---- output ---- */

static void stage_flush(h3g_h1_session *s) {
  if (s->staged == 0)
    return;
  if (s->write_err == 0)
    s->write_err = s->tops->write(s->t, s->stage, s->staged);
  s->staged = 0;
}

static void stage_put(h3g_h1_session *s, const void *data, size_t n) {
  const uint8_t *p = data;
  while (n > 0) {
    if (s->staged == STAGE_CAP)
      stage_flush(s);
    size_t k = H3G_MIN(n, STAGE_CAP - s->staged);
    memcpy(s->stage + s->staged, p, k);
    s->staged += k;
    p += k;
    n -= k;
  }
}

static void stage_str(h3g_h1_session *s, const char *str) {
  stage_put(s, str, strlen(str));
}

static void stage_field(h3g_h1_session *s, const char *name,
                        const uint8_t *value, size_t valuelen) {
  stage_str(s, name);
  stage_put(s, ": ", 2);
  stage_put(s, value, valuelen);
  stage_put(s, "\r\n", 2);
}

static const char *reason_phrase(int status) {
  switch (status) {
  case 100: return "Continue";
  case 103: return "Early Hints";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 413: return "Content Too Large";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return status < 200 ? "Informational" : "";
  }
}

static void stage_status_line(h3g_h1_session *s, int status) {
  char line[64];
  int n = snprintf(line, sizeof(line), "HTTP/1.1 %03d %s\r\n", status,
                   reason_phrase(status));
  stage_put(s, line, (size_t)n);
}

/* Our Alt-Svc, if one is to be sent (upstream_has: the response carries
 * one of its own, which upstream = keep passes on instead). */
static void stage_alt_svc(h3g_h1_session *s, int upstream_has) {
  char v[320];
  const h3g_alt_svc *a = s->env->alt_svc;
  if (s->bridge != NULL && !h3g_bridge_alt_svc(s->bridge))
    a = NULL; /* the route says no */
  if (a == NULL || (upstream_has && !h3g_alt_svc_replaces_upstream(a)))
    return;
  size_t n = h3g_alt_svc_value(a, v, sizeof(v));
  if (n > 0)
    stage_field(s, "alt-svc", (const uint8_t *)v, n);
}

static void session_close(h3g_h1_session *s, int graceful) {
  if (s->state == ST_CLOSED)
    return;
  s->state = ST_CLOSED;
  s->tops->set_timer(s->t, 0);
  s->tops->close(s->t, graceful);
}

/* A response the session makes itself (no bridge, or the bridge refused
 * the head), then the connection closes. */
static void write_error(h3g_h1_session *s, int status) {
  if (!s->head_sent && s->state != ST_CLOSED) {
    stage_status_line(s, status);
    stage_alt_svc(s, 0);
    stage_str(s, "content-type: text/plain\r\n"
                 "connection: close\r\n");
    char body[64];
    int n =
        snprintf(body, sizeof(body), "%d %s\n", status, reason_phrase(status));
    char cl[32];
    snprintf(cl, sizeof(cl), "%d", n);
    stage_field(s, "content-length", (const uint8_t *)cl, strlen(cl));
    stage_put(s, "\r\n", 2);
    stage_put(s, body, (size_t)n);
    stage_flush(s);
    s->head_sent = 1;
  }
  session_close(s, 1);
}

/* ---- the exchange ---- */

static void exchange_cut(h3g_h1_session *s) {
  if (s->bridge != NULL && !s->aborted && !(s->req_done && s->resp_done))
    h3g_bridge_client_abort(s->bridge);
}

static void exchange_reset(h3g_h1_session *s) {
  h3g_bridge_free(s->bridge);
  s->bridge = NULL;
  h3g_h1_request_parser_reset(s->parser);
  s->unconsumed = 0;
  s->req_done = s->resp_done = s->head_sent = 0;
  s->chunked = s->close_body = s->discard = 0;
  s->http10 = s->head_method = 0;
  s->error_status = 0;
  s->aborted = 0;
  s->ws = s->tunnel = s->client_eof = 0;
}

/* Both sides of the exchange are done: next request, or close. */
static void exchange_finish(h3g_h1_session *s) {
  int close_now = s->close_after || s->close_body || s->draining;
  exchange_reset(s);
  if (close_now) {
    session_close(s, 1);
    return;
  }
  s->state = ST_IDLE;
  s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
  s->tops->kick(s->t); /* a pipelined request may be waiting */
}

static int exchange_finished(const h3g_h1_session *s) {
  return s->state == ST_ACTIVE && s->resp_done && (s->req_done || s->discard);
}

/* Writes response body from the bridge while the output has room. */
static void pump_body(h3g_h1_session *s) {
  while (s->state == ST_ACTIVE && s->bridge != NULL && s->head_sent &&
         !s->resp_done && s->write_err == 0) {
    size_t room = s->tops->room(s->t);
    if (room < STAGE_CAP / 4)
      return;
    size_t max = H3G_MIN(room, (size_t)STAGE_CAP) - CHUNK_OVERHEAD;
    h3g_iovec v[2];
    unsigned flags = 0;
    size_t n = h3g_bridge_take_body(s->bridge, v, 2, max, &flags);
    if (n == 0 && flags == 0)
      return;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
      total += v[i].len;
    if (total > 0) {
      if (s->chunked) {
        uint8_t hdr[20];
        size_t hl = h3g_h1_chunk_header(total, hdr, sizeof(hdr));
        stage_put(s, hdr, hl);
      }
      for (size_t i = 0; i < n; i++)
        stage_put(s, v[i].base, v[i].len);
      if (s->chunked)
        stage_put(s, "\r\n", 2);
    }
    if (flags & H3G_BODY_END) {
      if (s->chunked) {
        const h3g_field *tf = NULL;
        size_t nt = 0;
        if (flags & H3G_BODY_TRAILERS)
          h3g_bridge_get_trailers(s->bridge, &tf, &nt);
        stage_put(s, "0\r\n", 3);
        for (size_t i = 0; i < nt; i++) {
          stage_put(s, tf[i].name, tf[i].namelen);
          stage_put(s, ": ", 2);
          stage_put(s, tf[i].value, tf[i].valuelen);
          stage_put(s, "\r\n", 2);
        }
        stage_put(s, "\r\n", 2);
      }
      s->resp_done = 1;
    }
    stage_flush(s);
    if (s->write_err != 0) {
      session_close(s, 0);
      return;
    }
    /* Encrypted and copied: the bridge may reuse the bytes. */
    if (total > 0) {
      if (s->req_done)
        s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
      h3g_bridge_body_done(s->bridge, total);
    }
  }
}

/* ---- request mapping ---- */

static int is_hex(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

static int name_is(const h3g_field *f, const char *name) {
  size_t n = strlen(name);
  if (f->namelen != n)
    return 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = f->name[i];
    if (c >= 'A' && c <= 'Z')
      c = (uint8_t)(c + 32);
    if (c != (uint8_t)name[i])
      return 0;
  }
  return 1;
}


/*
 * Splits the request target into :authority and :path. Origin-form keeps
 * the Host; absolute-form overrides it (RFC 9112 §3.2.2); asterisk-form
 * only with OPTIONS. Returns 0 or H3G_ERR_PROTO.
 */
static int split_target(const h3g_h1_request_head *h, const uint8_t **path,
                        size_t *pathlen, const uint8_t **auth,
                        size_t *authlen) {
  const uint8_t *t = h->target;
  size_t n = h->targetlen;
  if (n == 1 && t[0] == '*') {
    if (strcmp(h->method, "OPTIONS") != 0)
      return H3G_ERR_PROTO;
    *path = t;
    *pathlen = 1;
    return 0;
  }
  if (t[0] == '/') {
    *path = t;
    *pathlen = n;
    return 0;
  }
  size_t skip = 0;
  if (n > 7 && strncasecmp((const char *)t, "http://", 7) == 0)
    skip = 7;
  else if (n > 8 && strncasecmp((const char *)t, "https://", 8) == 0)
    skip = 8;
  else
    return H3G_ERR_PROTO;
  size_t a = skip;
  while (a < n && t[a] != '/' && t[a] != '?')
    a++;
  if (a == skip)
    return H3G_ERR_PROTO;
  *auth = t + skip;
  *authlen = a - skip;
  *path = t + a;
  *pathlen = n - a;
  return 0;
}

static int add(h3g_h1_session *s, const char *name, const uint8_t *v,
               size_t vl) {
  return h3g_bridge_add_field(s->bridge, (const uint8_t *)name, strlen(name), v,
                              vl);
}

/* The head of a request for the bridge. Returns 0 or the status to
 * answer with. */
static int start_exchange(h3g_h1_session *s, h3g_h1_request_head *h) {
  const uint8_t *path = NULL, *auth = NULL;
  size_t pathlen = 0, authlen = 0;
  h3g_headers *fh = h->fields;

  if (strcmp(h->method, "CONNECT") == 0)
    return 501;
  /* RFC 6455 §4.1: the opening handshake. */
  s->ws = h->upgrade && strcmp(h->method, "GET") == 0 &&
          s->env->cfg->websocket_any &&
          h3g_headers_list_has(fh, "upgrade", "websocket") &&
          h3g_headers_list_has(fh, "connection", "upgrade");
  if (split_target(h, &path, &pathlen, &auth, &authlen) != 0)
    return 400;
  if (auth == NULL) {
    const h3g_field *host = NULL;
    for (size_t i = 0; i < fh->nfields; i++)
      if (name_is(&fh->fields[i], "host"))
        host = &fh->fields[i];
    if (host != NULL) {
      auth = host->value;
      authlen = host->valuelen;
    }
  }
  if (h3g_bridge_new(&s->bridge, s->env->bridge_env, &frontend_ops, s, s,
                     s->client, "http/1.1") != 0) {
    s->bridge = NULL;
    return 503;
  }
  if (s->ws)
    h3g_bridge_connect_offered(s->bridge);
  int rv = s->ws ? add(s, ":method", (const uint8_t *)"CONNECT", 7)
                 : add(s, ":method", (const uint8_t *)h->method,
                       strlen(h->method));
  if (rv == 0 && s->ws)
    rv = add(s, ":protocol", (const uint8_t *)"websocket", 9);
  if (rv == 0)
    rv = add(s, ":scheme", (const uint8_t *)"https", 5);
  if (rv == 0 && auth != NULL)
    rv = add(s, ":authority", auth, authlen);
  if (rv == 0)
    rv = add(s, ":path", path, pathlen);
  for (size_t i = 0; i < fh->nfields && rv != H3G_ERR_NOMEM; i++) {
    h3g_field *f = &fh->fields[i];
    if (name_is(f, "connection") || name_is(f, "keep-alive") ||
        name_is(f, "proxy-connection") || name_is(f, "transfer-encoding") ||
        name_is(f, "upgrade") || name_is(f, "te") || name_is(f, "host") ||
        h3g_headers_list_has_n(fh, "connection", f->name, f->namelen))
      continue;
    /* The parser's arena is ours to modify (h1_codec.h): HTTP/3 field
     * names are lowercase, and so are the bridge's. */
    uint8_t *name = (uint8_t *)(uintptr_t)f->name;
    for (size_t k = 0; k < f->namelen; k++)
      if (name[k] >= 'A' && name[k] <= 'Z')
        name[k] = (uint8_t)(name[k] + 32);
    rv = h3g_bridge_add_field(s->bridge, name, f->namelen, f->value,
                              f->valuelen);
  }
  if (rv == H3G_ERR_NOMEM)
    return 503;
  /* H3G_ERR_TOOBIG: the bridge answers 431 from end_headers. A handshake
   * does not end with its head: the tunnel's bytes may follow it. */
  rv = h3g_bridge_end_headers(s->bridge, h->body == 0 && !s->ws);
  if (rv == H3G_ERR_PROTO) {
    H3G_INC(h1_malformed_requests);
    return 400;
  }
  if (rv != 0)
    return 503;
  return 0;
}

/* Redirect mode: 308 to https://host[:port]/path. */
static int redirect(h3g_h1_session *s, h3g_h1_request_head *h) {
  const uint8_t *path = NULL, *auth = NULL;
  size_t pathlen = 0, authlen = 0;
  char port[8] = "";

  if (split_target(h, &path, &pathlen, &auth, &authlen) != 0 ||
      (pathlen == 1 && path[0] == '*'))
    return 400;
  if (auth == NULL)
    for (size_t i = 0; i < h->fields->nfields; i++)
      if (name_is(&h->fields->fields[i], "host")) {
        auth = h->fields->fields[i].value;
        authlen = h->fields->fields[i].valuelen;
      }
  if (auth == NULL || authlen == 0)
    return 400;
  /* Host without its port; only name and address characters, so nothing
   * the client sent can change the Location's meaning. */
  size_t hl = authlen;
  if (auth[0] == '[') {
    hl = 0;
    while (hl < authlen && auth[hl] != ']')
      hl++;
    if (hl == authlen)
      return 400;
    hl++;
    for (size_t i = 1; i + 1 < hl; i++)
      if (!(is_hex(auth[i]) || auth[i] == ':' || auth[i] == '.'))
        return 400;
  } else {
    for (size_t i = 0; i < authlen; i++)
      if (auth[i] == ':') {
        hl = i;
        break;
      }
    if (hl == 0)
      return 400;
    for (size_t i = 0; i < hl; i++) {
      uint8_t c = auth[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
        return 400;
    }
  }
  if (s->env->redirect_port != 443)
    snprintf(port, sizeof(port), ":%u", s->env->redirect_port);
  stage_status_line(s, 308);
  stage_str(s, "location: https://");
  stage_put(s, auth, hl);
  stage_str(s, port);
  /* absolute-form "http://h" or "http://h?q": the path is "/" */
  if (pathlen == 0 || path[0] == '?')
    stage_str(s, "/");
  stage_put(s, path, pathlen);
  stage_str(s, "\r\ncontent-length: 0\r\n");
  if (!h->keep_alive || h->body != 0 || s->draining) {
    stage_str(s, "connection: close\r\n");
    s->close_after = 1;
  } else if (h->version_minor == 0) {
    stage_str(s, "connection: keep-alive\r\n");
  }
  stage_str(s, "\r\n");
  stage_flush(s);
  s->head_sent = 1;
  s->resp_done = 1;
  s->discard = h->body != 0;
  H3G_INC(h1_redirects);
  return 0;
}

/* ---- parser callbacks ---- */

static int on_head(void *ud, h3g_h1_request_head *h) {
  h3g_h1_session *s = ud;
  H3G_INC(h1_requests);
  s->state = ST_ACTIVE;
  s->http10 = h->version_minor == 0;
  s->head_method = strcmp(h->method, "HEAD") == 0;
  if (!h->keep_alive)
    s->close_after = 1;
  /* While the body arrives, a silent client is cut off after idle_timeout;
   * once the request is complete, the upstream's timeouts apply. */
  s->tops->set_timer(s->t, h->body != 0 ? s->env->cfg->tcp_idle_timeout_ms : 0);
  int status =
      s->env->redirect_port != 0 ? redirect(s, h) : start_exchange(s, h);
  if (status != 0) {
    if (status != 400 || s->bridge == NULL)
      H3G_INC(h1_malformed_requests);
    s->error_status = status;
    return H3G_ERR_PROTO;
  }
  return 0;
}

static int on_body(void *ud, const uint8_t *data, size_t len) {
  h3g_h1_session *s = ud;
  if (s->discard || s->bridge == NULL)
    return 0;
  s->unconsumed += len;
  int rv = h3g_bridge_recv_body(s->bridge, data, len);
  if (rv == H3G_ERR_PROTO) {
    s->error_status = 400;
    return rv;
  }
  if (rv != 0) {
    h3g_warn("h1 %s: request body refused by the bridge (%s)", s->client,
             h3g_strerror(rv));
    s->error_status = 500;
    return rv;
  }
  return 0;
}

static int on_trailers(void *ud, h3g_headers *t) {
  h3g_h1_session *s = ud;
  if (s->discard || s->bridge == NULL)
    return 0;
  for (size_t i = 0; i < t->nfields; i++) {
    h3g_field *f = &t->fields[i];
    uint8_t *name = (uint8_t *)(uintptr_t)f->name;
    for (size_t k = 0; k < f->namelen; k++)
      if (name[k] >= 'A' && name[k] <= 'Z')
        name[k] = (uint8_t)(name[k] + 32);
    int rv = h3g_bridge_add_trailer(s->bridge, name, f->namelen, f->value,
                                    f->valuelen);
    if (rv == H3G_ERR_PROTO) {
      s->error_status = 400;
      return rv;
    }
    if (rv == H3G_ERR_NOMEM) {
      s->error_status = 500;
      return rv;
    }
  }
  return 0;
}

static int on_complete(void *ud) {
  h3g_h1_session *s = ud;
  s->req_done = 1;
  /* From now on the timer watches the client reading the response. */
  s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
  if (s->ws) {
    /* The handshake's message is over; what follows waits for the
     * answer, and unless it opens the tunnel, the connection closes. */
    s->close_after = 1;
    return 0;
  }
  if (s->discard || s->bridge == NULL)
    return 0;
  int rv = h3g_bridge_end_request(s->bridge);
  if (rv == H3G_ERR_PROTO) {
    s->error_status = 400;
    return rv;
  }
  if (rv != 0) {
    s->error_status = 500;
    return rv;
  }
  return 0;
}

static const h3g_h1_request_callbacks parser_callbacks = {
    .on_head = on_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
};

/* ---- h3g_frontend_ops ---- */

static int fe_usable(const h3g_h1_session *s) {
  return s->state == ST_ACTIVE && !s->dying;
}

static int has_field(const h3g_field *fields, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (name_is(&fields[i], name))
      return 1;
  return 0;
}

static int fe_send_head(void *fs, int status, const h3g_field *fields, size_t n,
                        int interim, int has_body) {
  h3g_h1_session *s = fs;
  if (!fe_usable(s) || s->head_sent)
    return H3G_ERR_CLOSED;
  if (status < 100 || status > 999 || (interim && status >= 200) ||
      (status == 101 && (interim || !s->ws)))
    return H3G_ERR_INVAL;
  /* HTTP/1.0 clients know no interim responses (RFC 9110 §15.2). */
  if (interim && s->http10)
    return 0;

  stage_status_line(s, status);
  int upstream_alt_svc = has_field(fields, n, "alt-svc");
  int replace_alt_svc =
      s->env->alt_svc != NULL &&
      h3g_alt_svc_replaces_upstream(s->env->alt_svc) &&
      (s->bridge == NULL || h3g_bridge_alt_svc(s->bridge));
  for (size_t i = 0; i < n; i++) {
    const h3g_field *f = &fields[i];
    if (replace_alt_svc && name_is(f, "alt-svc"))
      continue;
    stage_put(s, f->name, f->namelen);
    stage_put(s, ": ", 2);
    stage_put(s, f->value, f->valuelen);
    stage_put(s, "\r\n", 2);
  }
  if (status == 101) {
    stage_str(s, "connection: upgrade\r\nupgrade: websocket\r\n\r\n");
    stage_flush(s);
    if (s->write_err != 0) {
      session_close(s, 0);
      return H3G_ERR_CLOSED;
    }
    /* The tunnel: no timer of ours (the bridge's tunnel_idle_timeout
     * watches it), and bytes that came behind the head are its first. */
    s->head_sent = 1;
    s->tunnel = 1;
    s->req_done = s->client_eof;
    s->tops->set_timer(s->t, 0);
    s->tops->kick(s->t);
    return 0;
  }
  if (!interim) {
    stage_alt_svc(s, upstream_alt_svc);
    int has_cl = has_field(fields, n, "content-length");
    if (has_body && !has_cl) {
      if (s->http10)
        s->close_body = 1; /* HTTP/1.0 knows no chunked coding */
      else {
        s->chunked = 1;
        stage_str(s, "transfer-encoding: chunked\r\n");
      }
    } else if (!has_body && !has_cl && !s->head_method && status != 204 &&
               status != 304) {
      stage_str(s, "content-length: 0\r\n");
    }
    if (s->draining)
      s->close_after = 1;
    if (s->close_after || s->close_body)
      stage_str(s, "connection: close\r\n");
    else if (s->http10)
      stage_str(s, "connection: keep-alive\r\n");
    s->head_sent = 1;
    if (!has_body)
      s->resp_done = 1;
  }
  stage_put(s, "\r\n", 2);
  stage_flush(s);
  if (s->write_err != 0) {
    session_close(s, 0);
    return H3G_ERR_CLOSED;
  }
  s->tops->kick(s->t);
  return 0;
}

static void fe_body_ready(void *fs) {
  h3g_h1_session *s = fs;
  if (fe_usable(s))
    s->tops->kick(s->t);
}

static void fe_consume(void *fs, size_t n) {
  h3g_h1_session *s = fs;
  if (!fe_usable(s))
    return;
  n = (size_t)H3G_MIN((uint64_t)n, s->unconsumed);
  int was_full = s->unconsumed >= s->env->cfg->stream_buffer_size;
  s->unconsumed -= n;
  if (was_full && n > 0)
    s->tops->kick(s->t);
}

static void fe_stop_request(void *fs) {
  h3g_h1_session *s = fs;
  if (!fe_usable(s) || s->req_done)
    return;
  /* The rest of the body is read and dropped, and the connection closes
   * after the response: a client that still sends it cannot be told to
   * stop otherwise. */
  s->discard = 1;
  s->close_after = 1;
  s->tops->kick(s->t);
}

static void fe_abort(void *fs, h3g_abort_code code) {
  h3g_h1_session *s = fs;
  if (!fe_usable(s))
    return;
  h3g_debug("h1 %s: exchange aborted (%d): closing", s->client, (int)code);
  s->aborted = 1;
  if (s->head_sent) {
    /* Mid-response: only the close tells the client it is truncated. */
    session_close(s, 0);
    return;
  }
  write_error(
      s, code == H3G_ABORT_MESSAGE || code == H3G_ABORT_INCOMPLETE ? 400 : 502);
}

static uint32_t *fe_tunnels(void *fs) {
  h3g_h1_session *s = fs;
  return &s->tunnels;
}

static const h3g_frontend_ops frontend_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .tunnels = fe_tunnels,
};

/* ---- session ---- */

int h3g_h1_session_new(h3g_h1_session **ps, const h3g_h1_env *env,
                       const h3g_h1_transport_ops *tops, void *t,
                       const char *client) {
  h3g_h1_session *s = malloc(sizeof(*s));
  *ps = NULL;
  if (s == NULL)
    return H3G_ERR_NOMEM;
  *s = (h3g_h1_session){.env = env, .tops = tops, .t = t, .state = ST_IDLE};
  snprintf(s->client, sizeof(s->client), "%s", client);
  if (h3g_h1_request_parser_new(&s->parser, &parser_callbacks, s,
                                env->cfg->max_header_size) != 0) {
    free(s);
    return H3G_ERR_NOMEM;
  }
  tops->set_timer(t, env->cfg->tcp_idle_timeout_ms);
  *ps = s;
  return 0;
}

void h3g_h1_session_free(h3g_h1_session *s) {
  if (s == NULL)
    return;
  s->dying = 1;
  exchange_cut(s);
  h3g_bridge_free(s->bridge);
  h3g_h1_request_parser_free(s->parser);
  free(s);
}

size_t h3g_h1_session_recv(h3g_h1_session *s, const uint8_t *data, size_t len) {
  size_t off = 0;

  while (off < len) {
    if (s->state == ST_CLOSED)
      return len;
    if (s->state == ST_ACTIVE && s->tunnel) {
      /* Tunnel bytes, as they are, within the window. */
      uint64_t window = s->env->cfg->stream_buffer_size;
      if (s->req_done || s->discard || s->unconsumed >= window)
        break;
      size_t want =
          (size_t)H3G_MIN((uint64_t)(len - off), window - s->unconsumed);
      s->unconsumed += want;
      if (h3g_bridge_recv_body(s->bridge, data + off, want) != 0) {
        exchange_cut(s);
        session_close(s, 0);
        return len;
      }
      off += want;
      continue;
    }
    if (s->state == ST_ACTIVE && s->req_done)
      break; /* pipelined: waits for the response */
    if (s->state == ST_ACTIVE && s->discard) {
      /* Body nobody wants; parse on only to find its end (or drop the
       * rest, as the connection closes after the response anyway). */
      size_t used = 0;
      if (h3g_h1_request_parser_feed(s->parser, data + off, len - off, &used) !=
              0 ||
          h3g_h1_request_parser_complete(s->parser)) {
        s->req_done = 1;
        return len;
      }
      off += used;
      continue;
    }
    if (s->state == ST_IDLE) {
      s->state = ST_HEAD;
      s->tops->set_timer(s->t, s->env->cfg->tcp_header_timeout_ms);
    }
    size_t want = len - off;
    if (s->state == ST_ACTIVE) {
      uint64_t window = s->env->cfg->stream_buffer_size;
      if (s->unconsumed >= window)
        break;
      want = (size_t)H3G_MIN((uint64_t)want, window - s->unconsumed);
      s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
    }
    size_t used = 0;
    int rv = h3g_h1_request_parser_feed(s->parser, data + off, want, &used);
    off += used;
    if (s->state == ST_CLOSED)
      return len;
    if (rv != 0) {
      int status = s->error_status        ? s->error_status
                   : rv == H3G_ERR_TOOBIG ? 431
                                          : 400;
      if (s->error_status == 0)
        H3G_INC(h1_malformed_requests);
      h3g_debug("h1 %s: request refused (%d): %s", s->client, status,
                h3g_h1_request_parser_reason(s->parser));
      if (s->bridge != NULL && status == 400 && !s->aborted)
        h3g_bridge_reject(s->bridge);
      else
        exchange_cut(s);
      write_error(s, status);
      return len;
    }
    if (exchange_finished(s)) {
      /* Answered without waiting (redirect, or a response the bridge
       * completed at once): finish outside the parser's callbacks. */
      s->tops->kick(s->t);
      break;
    }
    if (used == 0)
      break;
  }
  return off;
}

void h3g_h1_session_eof(h3g_h1_session *s) {
  switch (s->state) {
  case ST_IDLE:
  case ST_HEAD: session_close(s, 0); break;
  case ST_ACTIVE:
    s->client_eof = 1;
    if (s->ws && !s->tunnel && !s->aborted)
      (void)h3g_bridge_end_request(s->bridge); /* a tunnel would end at once */
    if (s->tunnel && !s->req_done) {
      /* The client ended its side of the tunnel: so does the upstream's
       * connection; the other way goes on until the upstream ends. */
      s->req_done = 1;
      s->close_after = 1;
      if (!s->aborted && h3g_bridge_end_request(s->bridge) != 0) {
        exchange_cut(s);
        session_close(s, 0);
      }
    } else if (s->req_done || s->discard) {
      s->close_after = 1; /* the response may still go out */
    } else {
      exchange_cut(s); /* logged as client-reset */
      session_close(s, 0);
    }
    break;
  case ST_CLOSED: break;
  }
}

void h3g_h1_session_process(h3g_h1_session *s) {
  if (s->state != ST_ACTIVE)
    return;
  pump_body(s);
  if (s->tunnel && s->resp_done) {
    /* The upstream ended the tunnel and its last bytes are out: an
     * HTTP/1.1 connection ends both ways. */
    s->req_done = 1;
    s->close_after = 1;
  }
  if (exchange_finished(s))
    exchange_finish(s);
}

void h3g_h1_session_on_timer(h3g_h1_session *s) {
  switch (s->state) {
  case ST_IDLE:
    h3g_debug("h1 %s: idle timeout", s->client);
    session_close(s, 0);
    break;
  case ST_HEAD:
    /* Slowloris: the head did not arrive in time; nothing reached the
     * upstream. */
    h3g_debug("h1 %s: request head timeout", s->client);
    H3G_INC(tcp_timeouts);
    write_error(s, 408);
    break;
  case ST_ACTIVE:
    if (!s->req_done && !s->discard) {
      h3g_debug("h1 %s: request body stalled", s->client);
    } else if (s->head_sent && !s->resp_done &&
               s->tops->room(s->t) < STAGE_CAP / 4) {
      h3g_debug("h1 %s: client stopped reading the response", s->client);
    } else {
      /* Waiting for the upstream: its own timeouts apply. */
      s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
      break;
    }
    H3G_INC(tcp_timeouts);
    exchange_cut(s);
    if (s->bridge != NULL)
      h3g_bridge_set_outcome(s->bridge, "client timeout");
    session_close(s, 0);
    break;
  case ST_CLOSED: break;
  }
}

void h3g_h1_session_expire(h3g_h1_session *s) {
  if (s->bridge == NULL || s->aborted || (s->req_done && s->resp_done))
    return;
  exchange_cut(s);
  h3g_bridge_set_outcome(s->bridge, "shutdown");
  s->aborted = 1;
}

void h3g_h1_session_shutdown(h3g_h1_session *s) {
  s->draining = 1;
  if (s->state == ST_IDLE)
    session_close(s, 1);
  else if (s->state == ST_ACTIVE && s->head_sent)
    s->close_after = 1;
}
