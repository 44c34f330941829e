/*
 * One client request mapped onto one HTTP/1.1 exchange.
 *
 * Three ordered life cycles, one per direction, each changed only by its
 * transition function (req_enter, resp_enter, up_enter), which asserts
 * that the step is one of these:
 *
 *   request: what the client sent (req_state)
 *     HEADERS  -> BODY      end_headers; a body may follow
 *     HEADERS  -> END       end_headers with the end of the stream
 *     BODY     -> TRAILERS  the first trailer field
 *     BODY     -> END       end_request
 *     TRAILERS -> END       end_request
 *
 *   response: what the client was given (resp_state)
 *     NONE     -> BODY      the upstream's final head was sent
 *     NONE     -> COMPLETE  a generated answer (an error, 431, 404...)
 *     BODY     -> COMPLETE  the upstream's response ended
 *     NONE     -> ABORTED   malformed request, header timeout, cut
 *     BODY     -> ABORTED   a failure after the head (reset), cut
 *     COMPLETE -> ABORTED   cut (client reset, request refused late), or
 *                           a generated head the front end refused
 *
 *   upstream: the connection we hold (up_state)
 *     NONE     -> WAITING   acquire accepted
 *     NONE     -> RELEASED  acquire refused, or the exchange failed first
 *     WAITING  -> ACTIVE    on_ready
 *     WAITING  -> RELEASED  on_fail, or our cancel
 *     ACTIVE   -> RELEASED  release (reusable or closed)
 *     ACTIVE   -> NONE      rewind: the request goes again from the start
 *
 * Every step goes forward in its enum's order but the upstream's rewind (a
 * request sent again on a fresh connection after a kept-alive one died
 * under it, or after a 425 to early data); END, ABORTED and RELEASED are
 * final. The upstream connection is given back to the pool as reusable
 * only when both messages ended cleanly.
 *
 * Memory: two rings of cfg->stream_buffer_size, allocated on first use; the
 * serialized request head (kept until the response starts, for a retry);
 * the request field section (capped by max_header_size). Nothing grows with
 * body sizes.
 */
#include "stream_bridge.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge_log.h"
#include "buf.h"
#include "early_data.h"
#include "expect_continue.h"
#include "forwarding.h"
#include "h1_codec.h"
#include "log.h"
#include "metrics.h"
#include "route.h"
#include "ws_key.h"

/* Request side: what the client has sent so far. */
typedef enum req_state {
  /* Receiving the header section: add_field collects it (up to
   * max_header_size), the header timer runs. end_headers moves on to BODY,
   * or to END when the stream ended with the head. */
  REQ_HEADERS,
  /* The head is complete (and validated, unless the exchange already
   * failed); body bytes may follow, within the credit given. add_trailer
   * moves on to TRAILERS, end_request to END. */
  REQ_BODY,
  /* Receiving trailer fields; no body byte may follow. end_request moves
   * on to END. */
  REQ_TRAILERS,
  /* The client ended its stream: nothing more arrives. Final. */
  REQ_END,
} req_state;

/* Response side: what the client has been given so far. */
typedef enum resp_state {
  /* Nothing, or only interim heads, sent: a failure can still answer with
   * a generated response. The final head going out moves on to BODY; a
   * generated answer to COMPLETE; a malformed request, the header timeout
   * or a cut exchange to ABORTED. */
  RESP_NONE,
  /* The upstream's final head was sent; its body streams through the
   * response ring. The upstream's end of message moves on to COMPLETE; a
   * failure or a cut (only a reset is honest now) to ABORTED. */
  RESP_BODY,
  /* The whole response is in the ring (or was handed out): the upstream's,
   * or one generated here. The client's reset or refused request still
   * moves on to ABORTED, as does a generated head that could not be sent. */
  RESP_COMPLETE,
  /* The stream was cut off; no further front-end call. Final. */
  RESP_ABORTED,
} resp_state;

/* Upstream side: the connection we hold, if any. */
typedef enum up_state {
  /* Not asked yet (held as early data, or not started), or rewound to send
   * the request again. An accepted acquire moves on to WAITING; a refused
   * one, or an exchange that failed first, to RELEASED. */
  UP_NONE,
  /* acquire pending in the pool: on_ready moves on to ACTIVE; on_fail, or
   * our cancel when the exchange ends, to RELEASED. */
  UP_WAITING,
  /* The connection is held (b->conn): the request is written, the response
   * read. Releasing it moves on to RELEASED; a rewind back to NONE. */
  UP_ACTIVE,
  /* Given back (or never had, or failed); never held again. Final. */
  UP_RELEASED,
} up_state;

/*
 * WebSocket tunnel (RFC 6455 behind RFC 8441 / RFC 9220 extended CONNECT,
 * or an HTTP/1.1 Upgrade): a request that asks for one goes upstream as
 * the HTTP/1.1 handshake; a 101 with the right Sec-WebSocket-Accept turns
 * the exchange into a tunnel, whose bytes flow through the same two rings
 * as bodies do, with the same credit and pauses:
 *
 *   NONE   a plain exchange (final)
 *   ASKED  the handshake is (to be) sent; the client's bytes wait in the
 *          request ring, never written before the 101
 *   OPEN   the 101 came: raw bytes both ways. The client's end of stream
 *          shuts our write side down; the upstream's end of its side ends
 *          the response. The connection left the pool at the 101 and is
 *          closed when both sides ended (never reused).
 *
 * Any other answer to the handshake ends the exchange as usual (the
 * connection may be reused: nothing of the tunnel was written).
 */
typedef enum tunnel_state {
  TUN_NONE,
  TUN_ASKED,
  TUN_OPEN,
} tunnel_state;

enum {
  MAX_IOV = 8,
  ERROR_BODY_MAX = 128,
  /* Route response fields a generated answer carries at most. */
  ERROR_ROUTE_FIELDS = 16,
};

struct h3g_bridge {
  const h3g_bridge_env *env;
  const h3g_frontend_ops *fe;
  void *fs;

  /* The request's route, chosen at end_headers (NULL before): its
   * settings and its upstream (a group's ops table, or a test's fake). */
  h3g_route *route;
  h3g_router *router; /* held while route is used (route.h) */
  const h3g_route_settings *rs;
  const h3g_upstream_ops *ops;
  void *pool;
  int resends; /* sent again after a reset, without a response */

  req_state req;
  resp_state resp;
  up_state up;

  h3g_upstream_waiter waiter;
  h3g_upconn *conn;
  /* RFC 9218: the client's priority (its request field, or what the front
   * end reported: a PRIORITY_UPDATE, its own library's view). It orders
   * the wait for an upstream connection among this client connection's
   * requests, and an origin's Priority response field adjusts it. */
  h3g_priority prio;
  int prio_known; /* set by the front end; the request field is not read */
  int conn_reused;
  int retried;
  /* The upstream was involved: a connection was handed to this request,
   * or one opened for it failed. Otherwise the gateway answered alone and
   * the access log names no upstream. */
  int up_named;

  /* 0-RTT (RFC 8470): the request came as early data, before the client's
   * TLS handshake completed, and may be a replay (early_data.h). */
  h3g_early early;

  /* request */
  h3g_headers req_fields;
  h3g_headers req_trailers;
  h3g_request_pseudo pseudo;
  int validated;
  int connect_offered; /* h3g_bridge_connect_offered */
  int head_too_big;
  int trailers_too_big; /* a trailer field did not fit: refused at the end */
  int stop_asked;       /* the client was asked to stop sending its body */
  int is_head;
  h3g_expect expect; /* "expect: 100-continue" (expect_continue.h) */
  h3g_timer *hdr_timer; /* request_header_timeout */
  h3g_timer *body_timer; /* request_body_timeout, re-armed lazily */
  uint64_t body_seen_ns; /* when the client last sent body bytes */
  uint64_t body_submitted; /* body bytes handed to writes (incl. in flight) */
  /* Request window autotuning (h3g_bridge_env / frontend.h): the window
   * (the request ring's cap), the credit given back in all, and where the
   * current measuring epoch started (time, credit). */
  size_t req_window;
  uint64_t req_credited;
  uint64_t win_epoch_ns;
  uint64_t win_epoch_credit;
  int64_t req_content_length; /* declared by the client, -1 if absent */
  int64_t up_content_length;  /* framing towards upstream, see h1_codec.h */
  uint64_t req_body_received;
  uint8_t *req_head;
  size_t req_head_len;
  int req_head_written;
  int req_fully_written;
  h3g_ring req_ring;

  /* the write in flight */
  int writing;
  size_t write_body;  /* body bytes in the write */
  int write_final;    /* the write ends the request message */
  uint8_t chunk_line[24];
  uint8_t *trailer_block;

  /* response */
  h3g_h1_parser *parser;
  h3g_ring resp_ring;
  uint8_t *read_region;
  int read_paused;
  int status;
  int keep_alive;
  h3g_headers resp_head;  /* final head held until its read parsed clean */
  int head_pending;
  int head_has_body;
  h3g_headers resp_trailers;
  int end_reported;

  /* tunnel (the table above tunnel_state) */
  tunnel_state tunnel;
  char ws_key[H3G_WS_KEY_LEN + 1]; /* the key sent upstream */
  uint32_t *conn_tunnels;  /* the front end's count, while counted in it */
  int up_shut;             /* our write side to the upstream is shut */
  const char *bad_upgrade; /* why the upstream's 101 was refused */
  h3g_timer *tunnel_timer; /* tunnel_idle_timeout, re-armed lazily */
  uint64_t tunnel_seen_ns; /* the last tunnel byte either way */

  /* accounting (bridge_log.h) */
  h3g_bridge_log log;
  const char *outcome;
  char client[64];
  char protocol[16];
  char cid[H3G_ACCESS_CID_LEN + 1]; /* HTTP/3: the connection's ID, hex */
  int was_early; /* received as 0-RTT (b->early forgets at the handshake) */
};

static const h3g_upstream_events upstream_events;
static const h3g_h1_callbacks h1_callbacks;

static void start_upstream(h3g_bridge *b);
static void on_header_timeout(void *arg);
static void on_expect_timeout(void *arg);
static int request_submitted(const h3g_bridge *b);
static void cancel_timer(h3g_bridge *b, h3g_timer **t);
static void pump_request(h3g_bridge *b);
static void upstream_release(h3g_bridge *b, int reusable);
static void drop_request_body(h3g_bridge *b);
static void upstream_rewind(h3g_bridge *b);
static void fail_exchange(h3g_bridge *b, int status, const char *outcome);
static void fail_exchange_after(h3g_bridge *b, int status, const char *outcome,
                                uint32_t retry_after);
static int choose_route(h3g_bridge *b);
static int tunnel_admit(h3g_bridge *b);
static void balance_key(h3g_bridge *b);
static int flush_head(h3g_bridge *b);
static void refuse_request(h3g_bridge *b);
static void stop_client_body(h3g_bridge *b);
static void pump_tunnel(h3g_bridge *b);
static void on_tunnel_timeout(void *arg);
static void tunnel_open(h3g_bridge *b, size_t consumed, size_t nread);
static void tunnel_maybe_close(h3g_bridge *b);
static const char *check_upgrade(const h3g_bridge *b, int status,
                                 const h3g_headers *fields);

/* ---- the life cycles -------------------------------------------------- */

void h3g_bridge_connect_offered(h3g_bridge *b) {
  b->connect_offered = 1;
}

/*
 * The one place each direction's state changes (the tables at the top of
 * this file). A step that is not in them is impossible: a bug here or a
 * front end or pool breaking its contract, so it asserts rather than
 * returning an error. The callers keep the side effects; these only keep
 * the order.
 */
static void req_enter(h3g_bridge *b, req_state to) {
  req_state from = b->req;
  H3G_UNUSED(from); /* only asserted */
  switch (to) {
  case REQ_HEADERS: assert(0 && "no way back to the request head"); return;
  case REQ_BODY: assert(from == REQ_HEADERS); break;
  case REQ_TRAILERS: assert(from == REQ_BODY); break;
  case REQ_END: assert(from != REQ_END); break;
  }
  b->req = to;
}

static void resp_enter(h3g_bridge *b, resp_state to) {
  resp_state from = b->resp;
  H3G_UNUSED(from);
  switch (to) {
  case RESP_NONE: assert(0 && "a response cannot be taken back"); return;
  case RESP_BODY: assert(from == RESP_NONE); break;
  case RESP_COMPLETE: assert(from == RESP_NONE || from == RESP_BODY); break;
  case RESP_ABORTED: assert(from != RESP_ABORTED); break;
  }
  b->resp = to;
}

static void up_enter(h3g_bridge *b, up_state to) {
  up_state from = b->up;
  H3G_UNUSED(from);
  switch (to) {
  case UP_NONE: assert(from == UP_ACTIVE && "only a rewind goes back"); break;
  case UP_WAITING: assert(from == UP_NONE); break;
  case UP_ACTIVE: assert(from == UP_WAITING); break;
  case UP_RELEASED: assert(from != UP_RELEASED); break;
  }
  b->up = to;
}

int h3g_bridge_new(h3g_bridge **pb, const h3g_bridge_env *env,
                   const h3g_frontend_ops *fe, void *fs, const void *conn_key,
                   const char *client, const char *protocol) {
  h3g_bridge *b = malloc(sizeof(*b));
  if (b == NULL)
    return H3G_ERR_NOMEM;
  *b = (h3g_bridge){
      .env = env,
      .fe = fe,
      .fs = fs,
      .req_content_length = -1,
      .outcome = "ok",
      .prio = H3G_PRIORITY_DEFAULT,
  };
  h3g_bridge_log_start(&b->log);
  b->waiter.ev = &upstream_events;
  b->waiter.ctx = b;
  b->waiter.group = conn_key;
  h3g_headers_init(&b->req_fields, env->cfg->max_header_size);
  h3g_headers_init(&b->req_trailers, env->cfg->max_header_size);
  h3g_headers_init(&b->resp_trailers, env->cfg->max_header_size);
  h3g_headers_init(&b->resp_head, env->cfg->max_header_size);
  h3g_ring_init(&b->req_ring, env->cfg->stream_buffer_size);
  b->req_window = env->cfg->stream_buffer_size;
  h3g_ring_init(&b->resp_ring, env->cfg->stream_buffer_size);
  h3g_ring_set_inflight(&b->resp_ring, env->resp_inflight);
  snprintf(b->client, sizeof(b->client), "%s", client ? client : "-");
  snprintf(b->protocol, sizeof(b->protocol), "%s", protocol ? protocol : "-");
  H3G_INC(requests_total);
  H3G_INC(bridges_active);
  if (env->timers != NULL && env->cfg->request_header_timeout_ms > 0)
    b->hdr_timer = env->timers->start(env->loop,
                                      env->cfg->request_header_timeout_ms,
                                      on_header_timeout, b);
  *pb = b;
  return 0;
}

/* The exchange's access log line, route statistics and upstream finish
 * (bridge_log.h). The upstream counts only when it was involved. */
static void write_access_log(h3g_bridge *b) {
  int named = b->up_named && b->ops != NULL;
  h3g_bridge_log_end(
      &b->log,
      &(h3g_bridge_end){
          .client = b->client,
          .protocol = b->protocol,
          .fields = &b->req_fields,
          .pseudo = b->validated ? &b->pseudo : NULL,
          /* An aborted exchange shows no interim status, but a 101
           * opened a tunnel: the client had it. */
          .status = b->resp == RESP_ABORTED && b->status < 200 &&
                            b->tunnel != TUN_OPEN
                        ? 0
                        : b->status,
          .outcome = b->outcome,
          .route = b->route,
          .ops = named ? b->ops : NULL,
          .pool = b->pool,
          .waiter = &b->waiter,
          .tunnel = b->tunnel == TUN_OPEN ? "websocket" : NULL,
          .cid = b->cid[0] != '\0' ? b->cid : NULL,
          .early = b->was_early,
      });
}

void h3g_bridge_free(h3g_bridge *b) {
  if (b == NULL)
    return;
  if (b->resp != RESP_COMPLETE && b->resp != RESP_ABORTED &&
      strcmp(b->outcome, "ok") == 0)
    b->outcome = "client-gone";
  cancel_timer(b, &b->hdr_timer);
  cancel_timer(b, &b->body_timer);
  cancel_timer(b, &b->tunnel_timer);
  h3g_expect_cancel(&b->expect, b->env->timers);
  if (b->up == UP_WAITING)
    b->ops->cancel(b->pool, &b->waiter);
  if (b->up == UP_ACTIVE)
    upstream_release(b, 0);
  if (b->up != UP_RELEASED)
    up_enter(b, UP_RELEASED);
  if (b->validated && b->pseudo.protocol.namelen != 0 && b->tunnel != TUN_OPEN)
    H3G_INC(tunnels_refused);
  if (b->conn_tunnels != NULL) {
    (*b->conn_tunnels)--;
    H3G_DEC(tunnels_open);
  }
  write_access_log(b);
  if (b->router != NULL)
    h3g_router_put(b->router);
  h3g_h1_parser_free(b->parser);
  h3g_headers_free(&b->req_fields);
  h3g_headers_free(&b->req_trailers);
  h3g_headers_free(&b->resp_trailers);
  h3g_headers_free(&b->resp_head);
  free(b->req_head);
  free(b->trailer_block);
  h3g_ring_free(&b->req_ring);
  h3g_ring_free(&b->resp_ring);
  free(b);
  H3G_DEC(bridges_active);
}

static void cancel_timer(h3g_bridge *b, h3g_timer **t) {
  if (*t != NULL && b->env->timers != NULL)
    b->env->timers->cancel(*t);
  *t = NULL;
}

/* The request head did not complete in time (a slow or stalled client):
 * reject the stream; nothing reached the upstream. */
static void on_header_timeout(void *arg) {
  h3g_bridge *b = arg;
  b->hdr_timer = NULL;
  if (b->req != REQ_HEADERS || b->resp == RESP_ABORTED)
    return;
  b->outcome = "header-timeout";
  resp_enter(b, RESP_ABORTED);
  b->fe->abort(b->fs, H3G_ABORT_REJECTED);
}

/*
 * A request body that stalls (RFC 9110 §15.5.9): while the client has
 * credit (nothing of its body waits for the upstream) and sends nothing for
 * request_body_timeout, the exchange ends with 408 (or a reset once the
 * response began); the upstream connection, left mid-message, is closed.
 * Without it, a client trickling bodies holds upstream connections for as
 * long as it keeps its QUIC or TCP connection alive. The timer is armed
 * once and re-armed when it fires early, so body bytes cost only a clock
 * read, not a timer each.
 */
static void on_body_timeout(void *arg);

static void arm_body_timer(h3g_bridge *b, uint64_t ms) {
  if (b->env->timers == NULL || b->rs->request_body_timeout_ms == 0 ||
      b->body_timer != NULL || b->tunnel != TUN_NONE)
    return;
  b->body_timer = b->env->timers->start(b->env->loop, ms, on_body_timeout, b);
}

static void on_body_timeout(void *arg) {
  h3g_bridge *b = arg;
  uint64_t limit = b->rs->request_body_timeout_ms;
  b->body_timer = NULL;
  if (b->req != REQ_BODY && b->req != REQ_TRAILERS)
    return;
  if (b->resp == RESP_ABORTED || b->resp == RESP_COMPLETE)
    return;
  uint64_t idle_ms = (h3g_now_ns() - b->body_seen_ns) / 1000000;
  /* Bytes still waiting for the upstream, or a write in flight: the client
   * is out of credit, and the stall is the upstream's (response_timeout
   * covers that). Also not while the body is held on purpose. */
  int ours = h3g_ring_len(&b->req_ring) > 0 || b->writing || b->expect.hold ||
             b->early.hold;
  if (ours || idle_ms < limit) {
    arm_body_timer(b, ours ? limit : limit - idle_ms);
    return;
  }
  h3g_debug("%s: request body stalled for %llu ms", b->client,
            (unsigned long long)idle_ms);
  H3G_INC(request_body_timeouts);
  fail_exchange(b, 408, "body-timeout");
}

/* ---- request side ------------------------------------------------------ */

int h3g_bridge_add_field(h3g_bridge *b, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen) {
  if (b->req != REQ_HEADERS)
    return H3G_ERR_PROTO;
  /* Known before validation, for a 431 to a head that never is: no
   * content in any answer to what claims to be HEAD. */
  if (namelen == 7 && memcmp(name, ":method", 7) == 0 && valuelen == 4 &&
      memcmp(value, "HEAD", 4) == 0)
    b->is_head = 1;
  if (b->head_too_big)
    return 0; /* keep counting nothing; 431 at end of headers */
  int rv = h3g_headers_add(&b->req_fields, name, namelen, value, valuelen);
  if (rv == H3G_ERR_TOOBIG) {
    b->head_too_big = 1;
    return 0;
  }
  return rv;
}

static int method_is(const h3g_bridge *b, const char *m) {
  size_t n = strlen(m);
  return b->pseudo.method.valuelen == n &&
         memcmp(b->pseudo.method.value, m, n) == 0;
}

/* Methods whose requests are safe to send twice (RFC 9110 §9.2.2). */
static int method_idempotent(const h3g_bridge *b) {
  return method_is(b, "GET") || method_is(b, "HEAD") ||
         method_is(b, "OPTIONS") || method_is(b, "TRACE") ||
         method_is(b, "PUT") || method_is(b, "DELETE");
}

/* Methods for which an empty body is still announced with a length. */
static int method_expects_body(const h3g_bridge *b) {
  return method_is(b, "POST") || method_is(b, "PUT") || method_is(b, "PATCH");
}

/* Whether the client speaks HTTP/1.1 (its front end passes requests as
 * HTTP/3 fields, with protocol "http/1.1"). */
static int client_is_h1(const h3g_bridge *b) {
  return strcmp(b->protocol, "h3") != 0 && strcmp(b->protocol, "h2") != 0;
}

/* The request's authority: :authority, else Host (HTTP/1.1, or HTTP/2
 * without :authority); NULL when it has neither. */
static const h3g_field *request_host(const h3g_bridge *b) {
  return b->pseudo.authority.namelen ? &b->pseudo.authority
                                     : h3g_headers_find(&b->req_fields, "host");
}

/*
 * Serializes the request head once; it is kept until the response starts so
 * that a request that failed on a stale kept-alive connection can be sent
 * again on a fresh one. Which fields go, and which we add, is
 * forwarding.h's.
 */
static int build_request_head(h3g_bridge *b) {
  const h3g_field *host = request_host(b);
  h3g_forward fw;
  int rv = h3g_forward_build(&fw, &(h3g_forward_in){
                                      .fields = &b->req_fields,
                                      .host = host,
                                      .client = b->client,
                                      .protocol = b->protocol,
                                      .cfg = b->env->cfg,
                                      .rs = b->rs,
                                      .early_data = b->early.added,
                                      .websocket_key = b->tunnel != TUN_NONE
                                                           ? b->ws_key
                                                           : NULL,
                                  });
  if (rv != 0)
    return rv;
  /* A WebSocket handshake is a GET (RFC 6455 §4.1), whatever the
   * client's protocol called it. */
  int get = b->tunnel != TUN_NONE;
  h3g_h1_request rq = {
      .method = get ? (const uint8_t *)"GET" : b->pseudo.method.value,
      .methodlen = get ? 3 : b->pseudo.method.valuelen,
      .target = b->pseudo.path.value,
      .targetlen = b->pseudo.path.valuelen,
      .host = host ? host->value : NULL,
      .hostlen = host ? host->valuelen : 0,
      .fields = fw.fields,
      .nfields = fw.nfields,
      .extra = fw.extra,
      .nextra = fw.nextra,
      .content_length = b->up_content_length,
  };
  size_t cap = b->req_fields.section_size + rq.methodlen + rq.targetlen +
               rq.hostlen + fw.extra_size + 256;
  b->req_head = malloc(cap);
  int64_t len = b->req_head ? h3g_h1_write_request(&rq, b->req_head, cap)
                            : H3G_ERR_NOMEM;
  h3g_forward_free(&fw);
  if (len < 0)
    return (int)len;
  b->req_head_len = (size_t)len;
  return 0;
}

/*
 * An extended CONNECT (or an HTTP/1.1 WebSocket Upgrade, which its front
 * end passes as one) on its route: returns 1 when it goes on as a tunnel
 * handshake (counted against the limits from now on) or, for an
 * HTTP/1.1 client on a route without WebSockets, as the plain GET it is
 * underneath (RFC 9110 §7.8 lets a server ignore Upgrade); 0 when it was
 * answered here.
 */
static int tunnel_admit(h3g_bridge *b) {
  static const h3g_field get = {(const uint8_t *)":method", 7,
                                (const uint8_t *)"GET", 3};
  const h3g_config *cfg = b->env->cfg;
  const h3g_field *proto = &b->pseudo.protocol;
  uint32_t *count = b->fe->tunnels != NULL ? b->fe->tunnels(b->fs) : NULL;
  int h1 = client_is_h1(b);
  int able = b->rs->websocket && count != NULL && b->ops->upgrade != NULL;

  if (h1 && !able) {
    /* The handshake's GET ended with its head (the front end held back
     * what follows, in case it became a tunnel). */
    b->pseudo.method = get;
    b->pseudo.protocol = (h3g_field){0};
    /* A declared body still follows (its front end passes it as any
     * request's): the upstream is told its length and waits for it. */
    if (b->req == REQ_BODY && b->req_content_length <= 0)
      req_enter(b, REQ_END);
    return 1;
  }
  /* Upgrade tokens compare case-insensitively (RFC 6455 §4.2.1). */
  if (proto->valuelen != 9 ||
      strncasecmp((const char *)proto->value, "websocket", 9) != 0) {
    fail_exchange(b, 501, "unknown-protocol");
    return 0;
  }
  if (!able) {
    fail_exchange(b, 501, "websocket-off");
    return 0;
  }
  if (b->req_content_length > 0) {
    fail_exchange(b, 400, "tunnel-with-body");
    return 0;
  }
  if ((uint64_t)h3g_stats.tunnels_open >= cfg->max_tunnels ||
      *count >= cfg->max_tunnels_per_connection) {
    h3g_debug("%s: WebSocket refused: %s tunnels open", b->client,
              *count >= cfg->max_tunnels_per_connection ? "connection's"
                                                        : "all");
    fail_exchange(b, 503, "too-many-tunnels");
    return 0;
  }
  if (h1) {
    /* The client checks the upstream's Accept against its own key, so it
     * goes upstream as it is (RFC 6455 §4.2.1: a handshake without a key
     * or of another version is refused). */
    const h3g_field *key = h3g_headers_find(&b->req_fields,
                                            "sec-websocket-key");
    const h3g_field *ver = h3g_headers_find(&b->req_fields,
                                            "sec-websocket-version");
    if (key == NULL || key->valuelen != H3G_WS_KEY_LEN || ver == NULL ||
        ver->valuelen != 2 || memcmp(ver->value, "13", 2) != 0) {
      fail_exchange(b, 400, "bad-websocket-handshake");
      return 0;
    }
    memcpy(b->ws_key, key->value, H3G_WS_KEY_LEN);
    b->ws_key[H3G_WS_KEY_LEN] = '\0';
    b->pseudo.method = get;
  } else if (h3g_ws_key_new(b->ws_key) != 0) {
    fail_exchange(b, 500, "internal");
    return 0;
  }
  (*count)++;
  b->conn_tunnels = count;
  H3G_INC(tunnels_open);
  b->tunnel = TUN_ASKED;
  /* What follows the head is the tunnel's, not a body of a length. */
  b->req_content_length = -1;
  return 1;
}

int h3g_bridge_end_headers(h3g_bridge *b, int end_stream) {
  if (b->req != REQ_HEADERS)
    return H3G_ERR_PROTO;
  cancel_timer(b, &b->hdr_timer);
  req_enter(b, end_stream ? REQ_END : REQ_BODY);
  if (!end_stream) {
    b->body_seen_ns = h3g_now_ns();
    b->win_epoch_ns = b->body_seen_ns;
  }
  if (b->head_too_big) {
    fail_exchange(b, 431, "header-too-large");
    return 0;
  }
  const char *why = NULL;
  int rv = h3g_request_validate(&b->req_fields, &b->pseudo,
                                &b->req_content_length, &why);
  if (rv != 0) {
    h3g_debug("%s: malformed request: %s", b->client, why ? why : "?");
    H3G_INC(h3_malformed_requests);
    b->outcome = "malformed";
    resp_enter(b, RESP_ABORTED);
    return H3G_ERR_PROTO;
  }
  b->validated = 1;
  /* RFC 8441 §3, RFC 9220 §3: :protocol may be used only after the
   * server's SETTINGS_ENABLE_CONNECT_PROTOCOL, which a connection is sent
   * when a route takes WebSockets as it opens. */
  if (b->pseudo.protocol.namelen != 0 && !b->connect_offered) {
    h3g_debug("%s: malformed request: :protocol, but extended CONNECT was "
              "not offered",
              b->client);
    H3G_INC(h3_malformed_requests);
    b->outcome = "malformed";
    resp_enter(b, RESP_ABORTED);
    return H3G_ERR_PROTO;
  }
  if (end_stream && b->req_content_length > 0) {
    H3G_INC(h3_malformed_requests);
    b->outcome = "malformed";
    resp_enter(b, RESP_ABORTED);
    return H3G_ERR_PROTO;
  }
  if (choose_route(b) != 0) {
    /* RFC 9110 §15.5.20: 421 tells an HTTP/2 or HTTP/3 client that reused
     * a connection for another host to open one of its own; an HTTP/1.1
     * connection serves one host, so there it is plainly not found. */
    int h1 = client_is_h1(b);
    H3G_INC(requests_unrouted);
    fail_exchange(b,
                  b->env->cfg->no_route == H3G_NO_ROUTE_MISDIRECTED && !h1
                      ? 421
                      : 404,
                  "no-route");
    return 0;
  }
  if (b->pseudo.protocol.namelen != 0) {
    if (!tunnel_admit(b))
      return 0;
    end_stream = b->req == REQ_END;
  }
  if (!end_stream)
    arm_body_timer(b, b->rs->request_body_timeout_ms);
  b->is_head = method_is(b, "HEAD");
  uint64_t max_body = b->rs->max_request_body;
  if (max_body > 0 && b->req_content_length > 0 &&
      (uint64_t)b->req_content_length > max_body) {
    fail_exchange(b, 413, "body-too-large");
    return 0;
  }
  h3g_expect_on_head(&b->expect, &b->req_fields);
  if (b->tunnel != TUN_NONE)
    b->up_content_length = -2; /* the handshake has no body */
  else if (b->req_content_length >= 0)
    b->up_content_length = b->req_content_length;
  else if (!end_stream)
    b->up_content_length = -1;
  else
    b->up_content_length = method_expects_body(b) ? 0 : -2;

  h3g_early_on_head(&b->early, &b->req_fields, &b->pseudo.method, end_stream,
                    b->rs->early_data);
  if (!b->prio_known)
    b->prio = h3g_priority_of_request(&b->req_fields);
  b->waiter.urgency = b->prio.urgency;
  balance_key(b);
  rv = build_request_head(b);
  if (rv != 0) {
    fail_exchange(b, rv == H3G_ERR_TOOBIG ? 431 : 500, "internal");
    return 0;
  }
  if (!b->early.hold)
    start_upstream(b);
  return 0;
}

void h3g_bridge_set_priority(h3g_bridge *b, h3g_priority prio) {
  b->prio = prio;
  b->prio_known = 1;
  if (b->up == UP_WAITING && b->ops->set_urgency != NULL)
    b->ops->set_urgency(b->pool, &b->waiter, prio.urgency);
  else
    b->waiter.urgency = prio.urgency;
}

void h3g_bridge_set_early(h3g_bridge *b) {
  if (b->req == REQ_HEADERS) {
    h3g_early_received(&b->early);
    b->was_early = 1;
  }
}

void h3g_bridge_set_conn_id(h3g_bridge *b, const char *cid) {
  snprintf(b->cid, sizeof(b->cid), "%s", cid != NULL ? cid : "");
}

void h3g_bridge_handshake_done(h3g_bridge *b) {
  if (h3g_early_handshake_done(&b->early) && b->resp == RESP_NONE &&
      b->up == UP_NONE)
    start_upstream(b);
}

/*
 * The upstream answered 425 (Too Early) to a request we sent ahead of the
 * handshake: send it again, without Early-Data, once the handshake is
 * complete (RFC 8470 §5.2), so the client never sees the 425. Not when the
 * client itself marked the request early: it is an intermediary that
 * retries by itself. The answered connection is mid-response: closed.
 */
static void redo_too_early(h3g_bridge *b) {
  h3g_early_resend(&b->early);
  upstream_rewind(b);
  free(b->req_head);
  b->req_head = NULL;
  int rv = build_request_head(b);
  if (rv != 0) {
    fail_exchange(b, 500, "internal");
    return;
  }
  int wait = h3g_early_wait_handshake(&b->early);
  h3g_debug("%s: upstream said 425 to an early request: %s", b->client,
            wait ? "sending again after the handshake" : "sending again");
  if (!wait)
    start_upstream(b);
}

int h3g_bridge_recv_body(h3g_bridge *b, const uint8_t *data, size_t len) {
  if (b->req != REQ_BODY)
    return H3G_ERR_PROTO;
  b->body_seen_ns = h3g_now_ns();
  b->req_body_received += len;
  b->log.bytes_in += len;
  if (b->tunnel != TUN_NONE) {
    H3G_ADD(tunnel_bytes_up, len);
    b->tunnel_seen_ns = b->body_seen_ns;
  } else {
    H3G_ADD(request_body_bytes, len);
  }
  if (b->req_content_length >= 0 &&
      b->req_body_received > (uint64_t)b->req_content_length) {
    refuse_request(b);
    return H3G_ERR_PROTO;
  }
  /* No route when the head was answered before one was chosen (431, 404):
   * that answer is complete, and bytes the client sent before it saw it
   * are only credited back below. */
  uint64_t max_body =
      b->rs != NULL && b->tunnel == TUN_NONE ? b->rs->max_request_body : 0;
  if (max_body > 0 && b->req_body_received > max_body &&
      b->resp != RESP_COMPLETE && b->resp != RESP_ABORTED) {
    /* A body of unknown length grew past the limit: 413 if no response
     * started, else only a reset is honest. Either way the upstream
     * connection saw half a message and is closed. */
    fail_exchange(b, 413, "body-too-large");
  }
  if (b->resp == RESP_ABORTED)
    return 0;
  if ((b->resp == RESP_COMPLETE && b->tunnel != TUN_OPEN) ||
      b->up == UP_RELEASED) {
    /* Nobody will read it: the answer is already decided. Give the credit
     * straight back so the client can finish. */
    b->fe->consume(b->fs, len);
    return 0;
  }
  int rv = h3g_ring_write(&b->req_ring, data, len);
  if (rv != 0)
    return rv == H3G_ERR_TOOBIG ? H3G_ERR_TOOBIG : rv;
  pump_request(b);
  return 0;
}

int h3g_bridge_add_trailer(h3g_bridge *b, const uint8_t *name, size_t namelen,
                           const uint8_t *value, size_t valuelen) {
  if (b->req == REQ_BODY)
    req_enter(b, REQ_TRAILERS);
  if (b->req != REQ_TRAILERS)
    return H3G_ERR_PROTO;
  int rv = h3g_headers_add(&b->req_trailers, name, namelen, value, valuelen);
  if (rv == H3G_ERR_TOOBIG)
    b->trailers_too_big = 1;
  return rv;
}

int h3g_bridge_end_request(h3g_bridge *b) {
  if (b->req == REQ_END)
    return 0;
  if (b->req == REQ_HEADERS)
    return H3G_ERR_PROTO;
  req_enter(b, REQ_END);
  /* The body was declined (an answer came first and the client was asked
   * to stop): the front end may have stopped passing its bytes on, so
   * their count means nothing, and the answer given stands. */
  if (b->stop_asked)
    return 0;
  const char *why = NULL;
  /* A trailer section that did not fit is refused whole: forwarding the
   * fields that fit would drop the others silently. */
  if ((b->req_content_length >= 0 &&
       b->req_body_received != (uint64_t)b->req_content_length) ||
      b->trailers_too_big ||
      h3g_trailers_validate(&b->req_trailers, &why) != 0) {
    refuse_request(b);
    return H3G_ERR_PROTO;
  }
  pump_request(b);
  return 0;
}

/* Ends the upstream side at once: the exchange will not complete. */
static void cut_exchange(h3g_bridge *b) {
  cancel_timer(b, &b->hdr_timer);
  cancel_timer(b, &b->body_timer);
  cancel_timer(b, &b->tunnel_timer);
  h3g_expect_cancel(&b->expect, b->env->timers);
  if (b->up == UP_WAITING) {
    b->ops->cancel(b->pool, &b->waiter);
    up_enter(b, UP_RELEASED);
  }
  if (b->up == UP_ACTIVE)
    upstream_release(b, 0);
  /* Cut once more (a reset after a failure's reset): already there. */
  if (b->resp != RESP_ABORTED)
    resp_enter(b, RESP_ABORTED);
}

/* The request turned out malformed after its head (the front end resets
 * the stream on our H3G_ERR_PROTO): whether its connection is held or
 * still awaited, nothing more of it may reach the upstream. */
static void refuse_request(h3g_bridge *b) {
  b->outcome = "malformed";
  cut_exchange(b);
}

void h3g_bridge_client_abort(h3g_bridge *b) {
  if (b->resp != RESP_COMPLETE || h3g_ring_len(&b->resp_ring) > 0 ||
      b->tunnel == TUN_OPEN)
    b->outcome = "client-reset";
  H3G_INC(h3_streams_reset_by_client);
  /* A reset tunnel resets its TCP connection too (RFC 9220 §3 by way of
   * RFC 9114 §4.4: the abort goes on to the other side). */
  if (b->tunnel == TUN_OPEN && b->up == UP_ACTIVE) {
    b->ops->reset(b->conn);
    b->conn = NULL;
    b->writing = 0;
    up_enter(b, UP_RELEASED);
  }
  cut_exchange(b);
}

void h3g_bridge_reject(h3g_bridge *b) {
  b->outcome = "malformed";
  cut_exchange(b);
}

/* ---- the route --------------------------------------------------------- */

static int choose_route(h3g_bridge *b) {
  const h3g_bridge_env *env = b->env;
  h3g_route *r = env->route;
  if (env->router != NULL) {
    const h3g_field *host = request_host(b);
    r = h3g_router_match(env->router,
                         host != NULL ? (const char *)host->value : NULL,
                         host != NULL ? host->valuelen : 0,
                         (const char *)b->pseudo.path.value,
                         b->pseudo.path.valuelen);
  }
  if (r == NULL)
    return H3G_ERR_NOTFOUND;
  if (env->router != NULL) {
    b->router = env->router;
    h3g_router_hold(b->router);
  }
  b->route = r;
  b->rs = &r->conf->s;
  b->ops = r->ops;
  b->pool = r->pool;
  r->stats->requests++;
  return 0;
}

/* The value of cookie `name` in the request's Cookie fields (RFC 6265
 * §5.4: "a=1; b=2", possibly in several fields on HTTP/2 and HTTP/3). */
static int find_cookie(const h3g_bridge *b, const char *name,
                       const uint8_t **value, size_t *len) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < b->req_fields.nfields; i++) {
    const h3g_field *f = &b->req_fields.fields[i];
    if (!h3g_field_name_eq(f, "cookie"))
      continue;
    const uint8_t *p = f->value, *end = f->value + f->valuelen;
    while (p < end) {
      while (p < end && (*p == ' ' || *p == ';'))
        p++;
      const uint8_t *pair = p;
      while (p < end && *p != ';')
        p++;
      if ((size_t)(p - pair) > nl && pair[nl] == '=' &&
          memcmp(pair, name, nl) == 0) {
        *value = pair + nl + 1;
        *len = (size_t)(p - pair) - nl - 1;
        return 1;
      }
    }
  }
  return 0;
}

/* Sets the waiter's balancing key when the route's group hashes. */
static void balance_key(h3g_bridge *b) {
  const h3g_group_conf *g = b->route->group;
  b->waiter.has_hash = 0;
  if (g == NULL || g->balance != H3G_BALANCE_HASH)
    return;
  const uint8_t *v = NULL;
  size_t n = 0;
  char ip[64];
  if (g->hash_key == H3G_HASH_CLIENT_IP) {
    h3g_forward_client_ip(b->client, ip, sizeof(ip));
    v = (const uint8_t *)ip;
    n = strlen(ip);
  } else if (g->hash_key == H3G_HASH_HEADER) {
    const h3g_field *f = h3g_headers_find(&b->req_fields, g->hash_name);
    if (f != NULL) {
      v = f->value;
      n = f->valuelen;
    }
  } else if (!find_cookie(b, g->hash_name, &v, &n)) {
    v = NULL;
  }
  if (v == NULL)
    return; /* no key: round robin */
  b->waiter.hash = h3g_fnv1a(v, n);
  b->waiter.has_hash = 1;
}

int h3g_bridge_alt_svc(const h3g_bridge *b) {
  return b->rs == NULL || b->rs->alt_svc;
}

/* ---- talking to the upstream ------------------------------------------ */

static void start_upstream(h3g_bridge *b) {
  int rv = b->ops->acquire(b->pool, &b->waiter);
  if (rv == 0) {
    up_enter(b, UP_WAITING);
    return;
  }
  up_enter(b, UP_RELEASED);
  if (rv == H3G_ERR_UNAVAILABLE) {
    uint32_t after = b->ops->retry_after != NULL ? b->ops->retry_after(b->pool)
                                                 : 0;
    fail_exchange_after(b, 503, "upstream-down", after);
  } else if (rv == H3G_ERR_NOMEM) {
    fail_exchange(b, 503, "queue-full");
  } else {
    fail_exchange(b, 503, "shutting-down");
  }
}

/* Gives up the connection of an exchange that will be sent again from the
 * start (the head is kept; the request had no body bytes to resend). */
static void upstream_rewind(h3g_bridge *b) {
  if (b->up == UP_ACTIVE) {
    b->ops->release(b->conn, 0);
    b->conn = NULL;
    b->writing = 0;
  }
  up_enter(b, UP_NONE);
  b->req_head_written = 0;
  b->req_fully_written = 0;
}

/* Upstream counters (reuses, timeouts, poisoned connections, queue
 * rejections) are the pool's to keep; the bridge counts only its own. */
static void upstream_release(h3g_bridge *b, int reusable) {
  if (b->up != UP_ACTIVE)
    return;
  b->ops->release(b->conn, reusable);
  b->conn = NULL;
  up_enter(b, UP_RELEASED);
  b->writing = 0;
}

/*
 * The request body bytes held for the upstream will never go (the exchange
 * ended, or the upstream answered without them): they are freed and their
 * credit goes back to the client, whose stream or connection window would
 * otherwise shrink for good. Only once no upstream write is in flight
 * (upstream_release abandons one).
 */
static void drop_request_body(h3g_bridge *b) {
  size_t held = h3g_ring_len(&b->req_ring);
  if (held == 0)
    return;
  h3g_ring_drop_unsent(&b->req_ring);
  h3g_ring_release(&b->req_ring, h3g_ring_len(&b->req_ring));
  if (b->resp != RESP_ABORTED)
    b->fe->consume(b->fs, held);
}

/* Hands n vectors (body bytes of the request among them, the message's
 * end if final) to the upstream connection; a write refused at once fails
 * the exchange. */
static void start_write(h3g_bridge *b, const h3g_iovec *iov, size_t n,
                        size_t body, int final) {
  if (n == 0)
    return;
  if (b->ops->write(b->conn, iov, n) != 0) {
    fail_exchange(b, 502, "upstream-write");
    return;
  }
  b->writing = 1;
  b->write_body = body;
  b->write_final = final;
}

/*
 * Writes whatever is ready: the head, buffered body bytes (chunk-framed when
 * the length is unknown) and, once the client ended, the message end. One
 * write is in flight at a time; the next starts from on_written.
 */
static void pump_request(h3g_bridge *b) {
  if (b->tunnel == TUN_OPEN) {
    pump_tunnel(b);
    return;
  }
  if (b->up != UP_ACTIVE || b->writing || b->req_fully_written)
    return;
  if (b->tunnel == TUN_ASKED) {
    /* The handshake alone: the client's bytes wait for the 101. */
    if (!b->req_head_written) {
      h3g_iovec head = {b->req_head, b->req_head_len};
      start_write(b, &head, 1, 0, 1);
    }
    return;
  }
  h3g_iovec iov[MAX_IOV];
  size_t n = 0;
  if (!b->req_head_written)
    iov[n++] = (h3g_iovec){b->req_head, b->req_head_len};

  /* With "expect: 100-continue" the body waits for the upstream's 100 (or
   * the timeout); after a final answer it is never sent. */
  if (h3g_expect_blocks_body(&b->expect)) {
    start_write(b, iov, n, 0, 0);
    return;
  }
  /* Room for the head, a chunk line, the CRLF after the chunk and the
   * last chunk (or trailers) around the body vectors; the rest of the body
   * goes in the next write. */
  h3g_iovec bv[MAX_IOV - 4];
  size_t nv = h3g_ring_take(&b->req_ring, SIZE_MAX, bv, H3G_ARRAY_LEN(bv));
  size_t body = 0;
  for (size_t i = 0; i < nv; i++)
    body += bv[i].len;
  int chunked = b->up_content_length == -1;
  if (body > 0) {
    if (chunked) {
      size_t cl = h3g_h1_chunk_header(body, b->chunk_line,
                                      sizeof(b->chunk_line));
      iov[n++] = (h3g_iovec){b->chunk_line, cl};
    }
    for (size_t i = 0; i < nv; i++)
      iov[n++] = bv[i];
    if (chunked)
      iov[n++] = (h3g_iovec){(const uint8_t *)H3G_H1_CRLF, 2};
  }
  b->body_submitted += body;
  /* With Content-Length framing the message ends with its last declared
   * byte, whether or not the client's FIN has arrived yet. */
  int final = b->up_content_length >= 0 &&
              b->body_submitted == (uint64_t)b->up_content_length;
  if (b->req == REQ_END && h3g_ring_unsent(&b->req_ring) == 0) {
    final = 1;
    if (chunked) {
      if (b->req_trailers.nfields > 0 && b->trailer_block == NULL) {
        size_t cap = b->req_trailers.section_size + 16;
        b->trailer_block = malloc(cap);
        int64_t tl = b->trailer_block
                         ? h3g_h1_write_trailers(b->req_trailers.fields,
                                                 b->req_trailers.nfields,
                                                 b->trailer_block, cap)
                         : H3G_ERR_NOMEM;
        if (tl < 0) {
          fail_exchange(b, 500, "internal");
          return;
        }
        iov[n++] = (h3g_iovec){b->trailer_block, (size_t)tl};
      } else {
        iov[n++] = (h3g_iovec){(const uint8_t *)H3G_H1_LAST_CHUNK,
                               sizeof(H3G_H1_LAST_CHUNK) - 1};
      }
    }
  }
  start_write(b, iov, n, body, final);
}

/*
 * Grows the request window when it, not the upstream, limits the upload:
 * each time a whole window's worth of credit was given back, if that took
 * less than two round trips the client was sending as fast as the window
 * let it, and the window doubles (up to max_stream_window), as TCP's
 * receive window autotunes and QUIC stacks do for their own windows. The
 * upstream's pace is what gives credit back, so a slow upstream never
 * grows it. Memory is used only for bytes really held.
 */
static void autotune_request_window(h3g_bridge *b) {
  const h3g_config *cfg = b->env->cfg;
  size_t max = H3G_MAX(cfg->max_stream_window, cfg->stream_buffer_size);
  if (b->fe->grow_window == NULL || b->fe->rtt_ns == NULL ||
      b->req_window >= max ||
      b->req_credited - b->win_epoch_credit < b->req_window)
    return;
  uint64_t now = h3g_now_ns();
  uint64_t rtt = b->fe->rtt_ns(b->fs);
  if (rtt > 0 && now - b->win_epoch_ns < 2 * rtt) {
    size_t grow = H3G_MIN(b->req_window, max - b->req_window);
    b->req_window += grow;
    h3g_ring_set_cap(&b->req_ring, b->req_window);
    H3G_INC(request_window_grows);
    b->fe->grow_window(b->fs, grow);
  }
  b->win_epoch_ns = now;
  b->win_epoch_credit = b->req_credited;
}

static void on_up_written(void *ctx, int status) {
  h3g_bridge *b = ctx;
  b->writing = 0;
  if (status != 0) {
    fail_exchange(b, 502, "upstream-write");
    return;
  }
  b->req_head_written = 1;
  if (b->resp != RESP_NONE) {
    free(b->req_head); /* kept for this write only (flush_head) */
    b->req_head = NULL;
  }
  if (b->write_body > 0) {
    h3g_ring_release(&b->req_ring, b->write_body);
    if (b->resp != RESP_ABORTED) {
      b->fe->consume(b->fs, b->write_body);
      b->req_credited += b->write_body;
      autotune_request_window(b);
    }
  }
  /* The handshake's write of a tunnel that opened meanwhile ends no
   * message: the tunnel's bytes follow it (pump_tunnel). */
  if (b->write_final && b->tunnel != TUN_OPEN) {
    b->req_fully_written = 1;
    b->ops->set_read_timeout(b->conn, b->rs->response_timeout_ms);
    if (b->resp == RESP_COMPLETE) {
      /* The response finished first; only now is the message boundary
       * known on both sides. */
      upstream_release(b, b->keep_alive);
      return;
    }
  }
  pump_request(b);
}

static void on_up_ready(void *ctx, h3g_upconn *conn, int reused) {
  h3g_bridge *b = ctx;
  up_enter(b, UP_ACTIVE);
  b->up_named = 1;
  h3g_bridge_log_sent(&b->log, b->waiter.connect_us);
  b->conn = conn;
  b->conn_reused = reused;
  if (b->parser == NULL &&
      h3g_h1_parser_new(&b->parser, &h1_callbacks, b,
                        b->env->cfg->max_header_size) != 0) {
    fail_exchange(b, 500, "internal");
    return;
  }
  h3g_h1_parser_reset(b->parser, b->is_head);
  if (b->tunnel == TUN_ASKED)
    h3g_h1_parser_expect_upgrade(b->parser);
  /* No response timeout while the request is still being uploaded: a slow
   * client must not look like a slow upstream. */
  b->ops->set_read_timeout(conn, 0);
  b->ops->read_start(conn);
  /* A body is to follow unless the message has none or the client ended
   * its stream with the head. */
  int body_follows = b->up_content_length != -2 &&
                     !(b->req == REQ_END && b->req_body_received == 0);
  h3g_expect_hold(&b->expect, body_follows, b->env->timers, b->env->loop,
                  b->rs->expect_continue_timeout_ms, on_expect_timeout, b);
  pump_request(b);
}

static void on_expect_timeout(void *arg) {
  h3g_bridge *b = arg;
  if (h3g_expect_timed_out(&b->expect))
    pump_request(b);
}

/* The upstream answered an expect-continue request: 100 releases the body,
 * a final status means the body is not wanted. */
static void expect_answered(h3g_bridge *b, int status) {
  if (h3g_expect_answered(&b->expect, status, b->env->timers))
    pump_request(b);
}

/* TIMEOUT: a connect or the response took too long; AGAIN: every
 * connection stayed busy for the whole wait in the pool's queue. */
static int status_for_error(int err) {
  return err == H3G_ERR_TIMEOUT || err == H3G_ERR_AGAIN ? 504 : 502;
}

static void on_up_fail(void *ctx, int err) {
  h3g_bridge *b = ctx;
  up_enter(b, UP_RELEASED);
  /* Refused, unreachable or timed out: the upstream is the cause. Not when
   * the pool shut down or could not try. */
  if (err != H3G_ERR_CLOSED && err != H3G_ERR_NOMEM)
    b->up_named = 1;
  if (err == H3G_ERR_CLOSED)
    fail_exchange(b, 503, "shutting-down");
  else
    fail_exchange(b, status_for_error(err),
                  err == H3G_ERR_TIMEOUT ? "upstream-connect-timeout"
                  : err == H3G_ERR_AGAIN ? "upstream-queue-timeout"
                                         : "upstream-refused");
}

/*
 * A kept-alive connection can be closed by the upstream just as we reuse it,
 * and a server can die with the request in hand. If nothing of the response
 * arrived and the request can safely be sent again (idempotent, no body),
 * it goes again on a new connection, which the group gives to another
 * server when it has one (the waiter remembers the servers tried).
 */
static int retry_on_fresh(h3g_bridge *b) {
  /* A handshake is safe to send again: the client's bytes wait for the
   * 101 and none of them went. */
  int safe = b->tunnel == TUN_ASKED ||
             (b->req_body_received == 0 && b->req == REQ_END &&
              method_idempotent(b));
  if (h3g_h1_parser_started(b->parser) || b->resp != RESP_NONE || !safe)
    return 0;
  /* A kept-alive connection closed under us is a race, not the server's
   * failing: once, on top of the group's retries (RFC 9110 §9.2.2). */
  /* Another server only: the one that just dropped it may be the reason
   * (a request that crashes its server must not crash it three times). */
  const h3g_group_conf *g = b->route->group;
  uint32_t limit = g != NULL && g->nservers > 1
                       ? H3G_MIN(g->retries, g->nservers - 1)
                       : 0;
  if (b->conn_reused && !b->retried)
    b->retried = 1;
  else if ((uint32_t)b->resends < limit)
    b->resends++;
  else
    return 0;
  upstream_rewind(b);
  h3g_debug("%s: sending again on another upstream connection", b->client);
  start_upstream(b);
  return 1;
}

static void on_up_alloc(void *ctx, uint8_t **buf, size_t *len) {
  h3g_bridge *b = ctx;
  if (h3g_ring_reserve(&b->resp_ring, buf, len) != 0)
    *len = 0;
  if (*len == 0) {
    b->read_paused = 1;
    H3G_INC(upstream_read_pauses);
  }
  b->read_region = *buf;
}

/*
 * Tells the front end that body bytes or the body's end are waiting. Called
 * once per upstream read that produced either, never before the head went
 * out. It must not be skipped when the front end did not ask: a front end
 * that took the previous bytes only writes again on an event, so new bytes
 * (or the end of the stream) would otherwise wait for an unrelated one.
 */
static void notify_body(h3g_bridge *b) {
  if (b->resp == RESP_ABORTED || b->resp == RESP_NONE || b->head_pending ||
      b->end_reported)
    return;
  b->fe->body_ready(b->fs);
}

/*
 * The upstream gave its complete final response before the whole request
 * went out (RFC 9110 §15, RFC 9112 §9.5: a 413 or 401 before reading an
 * upload; also the final answer to "expect: 100-continue"). The response
 * is passed on; the rest of the request is not sent: what is buffered is
 * dropped and credited back, the client is asked to stop (unless it has
 * finished), and the connection is closed, never reused. Bytes the
 * application did not read stay behind on that connection only, so they
 * can never be taken for the start of a next request (the desync a reused
 * connection would risk). The outcome does not depend on how much of the
 * body went before the answer.
 */
static void end_request_early(h3g_bridge *b) {
  H3G_INC(upstream_early_responses);
  upstream_release(b, 0);
  drop_request_body(b);
  stop_client_body(b);
}

/* Asks the client, once, to stop sending a body nobody will read (an early
 * answer followed by a 502 when its head cannot be passed on asks once). */
static void stop_client_body(h3g_bridge *b) {
  if (b->req == REQ_END || b->stop_asked)
    return;
  b->stop_asked = 1;
  b->fe->stop_request(b->fs);
}

static void response_complete(h3g_bridge *b) {
  resp_enter(b, RESP_COMPLETE);
  if (b->tunnel == TUN_ASKED) {
    /* The app answered the handshake without the upgrade: bytes the client
     * sent for the tunnel go nowhere, and it is told to stop sending. */
    drop_request_body(b);
    stop_client_body(b);
  }
  b->keep_alive = h3g_h1_parser_keep_alive(b->parser);
  if (b->up != UP_ACTIVE) {
    /* Ended early (end_request_early): the connection is closed. */
  } else if (!b->req_fully_written) {
    /* The last write is with the kernel; on_up_written decides reuse. */
  } else {
    upstream_release(b, b->keep_alive);
  }
  notify_body(b);
}

/* Every byte of the request was handed to the socket (the last write may
 * still be in flight: the upstream can have read it already). */
static int request_submitted(const h3g_bridge *b) {
  return b->req_fully_written || (b->writing && b->write_final);
}

static void on_up_read(void *ctx, size_t nread) {
  h3g_bridge *b = ctx;
  h3g_bridge_log_read(&b->log, nread);
  if (b->tunnel == TUN_OPEN) {
    h3g_ring_commit(&b->resp_ring, nread);
    b->tunnel_seen_ns = h3g_now_ns();
    notify_body(b);
    return;
  }
  size_t consumed = 0;
  int rv = h3g_h1_parser_feed(b->parser, b->read_region, nread, &consumed);
  if (b->early.redo) {
    redo_too_early(b);
    return;
  }
  if (b->up != UP_ACTIVE)
    return; /* a callback ended the exchange */
  if (rv != 0 && b->bad_upgrade != NULL) {
    h3g_warn("%s: upstream's answer to the WebSocket handshake refused: %s",
             b->client, b->bad_upgrade);
    b->head_pending = 0;
    fail_exchange(b, 502, "upstream-bad-upgrade");
    return;
  }
  if (rv != 0) {
    H3G_INC(upstream_malformed_responses);
    h3g_warn("%s: malformed upstream response: %s", b->client,
             h3g_h1_parser_reason(b->parser));
    b->head_pending = 0;
    fail_exchange(b, 502, "upstream-malformed");
    return;
  }
  if (h3g_h1_parser_upgraded(b->parser)) {
    tunnel_open(b, consumed, nread);
    return;
  }
  if (h3g_h1_parser_complete(b->parser) && consumed < nread) {
    /* Bytes after the end of the response: the upstream and we disagree on
     * where its messages end (a response desync, or an attempt at one).
     * Nothing of it is trusted: 502, or a reset if the head went out in an
     * earlier read. */
    H3G_INC(upstream_malformed_responses);
    h3g_warn("%s: upstream sent %zu bytes after the response", b->client,
             nread - consumed);
    b->head_pending = 0;
    fail_exchange(b, 502, "upstream-extra-bytes");
    return;
  }
  if (h3g_h1_parser_complete(b->parser) && !request_submitted(b))
    end_request_early(b);
  if (flush_head(b) != 0) {
    fail_exchange(b, 502, "internal");
    return;
  }
  if (h3g_h1_parser_complete(b->parser)) {
    response_complete(b);
    return;
  }
  notify_body(b);
}

static void on_up_eof(void *ctx) {
  h3g_bridge *b = ctx;
  if (b->tunnel == TUN_OPEN) {
    /* The upstream ended its side: so does the client's stream, once it
     * has the bytes before the end. */
    resp_enter(b, RESP_COMPLETE);
    tunnel_maybe_close(b);
    notify_body(b);
    return;
  }
  if (b->resp == RESP_COMPLETE) {
    /* The response ended before the close, while the request's last write
     * was still in flight (on_up_written releases the connection then):
     * the close only says the connection cannot be reused. */
    b->keep_alive = 0;
    return;
  }
  if (retry_on_fresh(b))
    return;
  int rv = h3g_h1_parser_finish(b->parser);
  if (rv == 0 && h3g_h1_parser_complete(b->parser)) {
    if (!request_submitted(b))
      end_request_early(b);
    if (flush_head(b) == 0) {
      b->keep_alive = 0;
      response_complete(b);
      return;
    }
  }
  H3G_INC(upstream_malformed_responses);
  fail_exchange(b, 502,
                h3g_h1_parser_started(b->parser) ? "upstream-truncated"
                                                 : "upstream-closed");
}

static void on_up_error(void *ctx, int err) {
  h3g_bridge *b = ctx;
  if (err != H3G_ERR_TIMEOUT && retry_on_fresh(b))
    return;
  fail_exchange(b, status_for_error(err),
                err == H3G_ERR_TIMEOUT ? "upstream-timeout" : "upstream-reset");
}

static const h3g_upstream_events upstream_events = {
    .on_ready = on_up_ready,
    .on_fail = on_up_fail,
    .on_alloc = on_up_alloc,
    .on_read = on_up_read,
    .on_eof = on_up_eof,
    .on_error = on_up_error,
    .on_written = on_up_written,
};

/* ---- tunnels ---------------------------------------------------------- */

/*
 * What makes a final answer to the handshake unacceptable, or NULL. A 101
 * must say it switched to websocket and carry the Accept for our key (RFC
 * 6455 §4.1: the client's checks, made here for clients that cannot);
 * anything else is passed on as an ordinary response, except a 2xx to an
 * HTTP/2 or HTTP/3 client, which would read it as the tunnel opening.
 */
static const char *check_upgrade(const h3g_bridge *b, int status,
                                 const h3g_headers *fields) {
  if (status != 101)
    return status >= 200 && status < 300 && !client_is_h1(b)
               ? "a 2xx without upgrading"
               : NULL;
  if (!h3g_headers_list_has(fields, "upgrade", "websocket"))
    return "101 without Upgrade: websocket";
  if (!h3g_headers_list_has(fields, "connection", "upgrade"))
    return "101 without Connection: upgrade";
  const h3g_field *accept = h3g_headers_find(fields, "sec-websocket-accept");
  if (accept == NULL)
    return "101 without Sec-WebSocket-Accept";
  if (!h3g_ws_accept_matches((const uint8_t *)b->ws_key, H3G_WS_KEY_LEN,
                             accept->value, accept->valuelen))
    return "wrong Sec-WebSocket-Accept";
  return NULL;
}

static void arm_tunnel_timer(h3g_bridge *b, uint64_t ms) {
  if (b->env->timers == NULL || b->env->cfg->tunnel_idle_timeout_ms == 0 ||
      b->tunnel_timer != NULL)
    return;
  b->tunnel_timer =
      b->env->timers->start(b->env->loop, ms, on_tunnel_timeout, b);
}

/* tunnel_idle_timeout: no byte either way for that long. Armed once and
 * re-armed when it fires early, so bytes cost a clock read only. */
static void on_tunnel_timeout(void *arg) {
  h3g_bridge *b = arg;
  uint64_t limit = b->env->cfg->tunnel_idle_timeout_ms;
  b->tunnel_timer = NULL;
  if (b->tunnel != TUN_OPEN || b->resp == RESP_ABORTED)
    return;
  uint64_t idle_ms = (h3g_now_ns() - b->tunnel_seen_ns) / 1000000;
  if (idle_ms < limit) {
    arm_tunnel_timer(b, limit - idle_ms);
    return;
  }
  h3g_debug("%s: tunnel idle for %llu ms: closing it", b->client,
            (unsigned long long)idle_ms);
  b->outcome = "tunnel-idle-timeout";
  if (b->up == UP_ACTIVE)
    upstream_release(b, 0);
  drop_request_body(b);
  resp_enter(b, RESP_ABORTED);
  b->fe->abort(b->fs, H3G_ABORT_CANCELLED);
}

/* Both sides of an open tunnel ended (the upstream's EOF came, ours was
 * sent): the connection has nothing more to carry. */
static void tunnel_maybe_close(h3g_bridge *b) {
  if (b->tunnel == TUN_OPEN && b->up == UP_ACTIVE && b->up_shut &&
      b->resp == RESP_COMPLETE && !b->writing) {
    cancel_timer(b, &b->tunnel_timer);
    upstream_release(b, 0);
  }
}

/*
 * The upstream switched protocols (its 101 passed check_upgrade): the
 * connection leaves the pool, bytes that came behind the head are the
 * tunnel's first, the client gets its head, and the client's bytes held
 * so far go.
 */
static void tunnel_open(h3g_bridge *b, size_t consumed, size_t nread) {
  b->ops->upgrade(b->conn);
  b->ops->set_read_timeout(b->conn, 0);
  if (consumed < nread)
    h3g_ring_commit_from(&b->resp_ring, b->read_region + consumed,
                         nread - consumed);
  if (flush_head(b) != 0) {
    fail_exchange(b, 502, "internal");
    return;
  }
  b->tunnel = TUN_OPEN;
  H3G_INC(tunnels_opened);
  b->tunnel_seen_ns = h3g_now_ns();
  arm_tunnel_timer(b, b->env->cfg->tunnel_idle_timeout_ms);
  pump_request(b);
  notify_body(b);
}

/* Client bytes of an open tunnel go as they are; once the client ended its
 * side and all of them went, our side ends too. */
static void pump_tunnel(h3g_bridge *b) {
  if (b->up != UP_ACTIVE || b->writing || b->up_shut)
    return;
  h3g_iovec v[MAX_IOV];
  size_t nv = h3g_ring_take(&b->req_ring, SIZE_MAX, v, H3G_ARRAY_LEN(v));
  size_t n = 0;
  for (size_t i = 0; i < nv; i++)
    n += v[i].len;
  if (n > 0) {
    b->body_submitted += n;
    start_write(b, v, nv, n, 0);
    return;
  }
  if (b->req != REQ_END)
    return;
  if (b->ops->shutdown_write(b->conn) != 0) {
    fail_exchange(b, 502, "upstream-write");
    return;
  }
  b->up_shut = 1;
  tunnel_maybe_close(b);
}

/* ---- the response ----------------------------------------------------- */

static void count_status(int status) {
  if (status < 200)
    H3G_INC(responses_1xx);
  else if (status < 300)
    H3G_INC(responses_2xx);
  else if (status < 400)
    H3G_INC(responses_3xx);
  else if (status < 500)
    H3G_INC(responses_4xx);
  else
    H3G_INC(responses_5xx);
}

/*
 * Interim heads go out at once. The final head is held (copied, filtered)
 * until the read that carried it has been parsed without error: a response
 * whose head and broken body arrive together then becomes a 502 rather than
 * a reset stream.
 */
static int on_h1_head(void *ud, int status, h3g_headers *fields, int interim) {
  h3g_bridge *b = ud;
  if (b->resp == RESP_ABORTED)
    return H3G_ERR_CLOSED;
  if (!interim && h3g_early_too_early(&b->early, status))
    return H3G_ERR_CLOSED; /* stop parsing: on_up_read sends it again */
  if (b->tunnel == TUN_ASKED && !interim &&
      (b->bad_upgrade = check_upgrade(b, status, fields)) != NULL)
    return H3G_ERR_PROTO;
  if (status == 100 || !interim) {
    expect_answered(b, status);
    /* Releasing the body can fail the exchange (a dead connection): its
     * 502 went out, nothing of this response may follow. */
    if (b->up != UP_ACTIVE)
      return H3G_ERR_CLOSED;
  }
  /* 100 goes only to a client that asked for it (RFC 9110 §15.2.1); 103 is
   * always useful; other 1xx codes have no meaning to forward. */
  if (interim &&
      !((status == 100 && b->expect.asked) || status == 103))
    return 0;
  h3g_field *out = malloc(sizeof(*out) * (fields->nfields + 1));
  if (out == NULL)
    return H3G_ERR_NOMEM;
  size_t n = 0;
  int rv = h3g_response_filter(fields, out, fields->nfields + 1, &n);
  int has_body = !(interim || b->is_head || status == 204 || status == 304);
  int upgrade = status == 101;
  if (rv == 0 && interim) {
    rv = b->fe->send_head(b->fs, status, out, n, 1, 0);
    if (rv == 0)
      count_status(status);
  } else if (rv == 0) {
    h3g_headers_clear(&b->resp_head);
    for (size_t i = 0; rv == 0 && i < n; i++) {
      /* RFC 9110 §8.6: no Content-Length in a 204 or a 1xx (nor in the
       * 2xx that stands for a 101: the tunnel's bytes are not content). */
      if ((status == 204 || upgrade) &&
          h3g_field_name_eq(&out[i], "content-length"))
        continue;
      /* The Accept answers a key only an HTTP/1.1 client knows of. */
      if (upgrade && !client_is_h1(b) &&
          h3g_field_name_eq(&out[i], "sec-websocket-accept"))
        continue;
      rv = h3g_headers_add(&b->resp_head, out[i].name, out[i].namelen,
                           out[i].value, out[i].valuelen);
    }
    for (uint32_t i = 0; rv == 0 && i < b->rs->nadd_response; i++) {
      const h3g_header_edit *e = &b->rs->add_response[i];
      rv = h3g_headers_add(&b->resp_head, (const uint8_t *)e->name,
                           strlen(e->name), (const uint8_t *)e->value,
                           strlen(e->value));
    }
    /* RFC 8441 §5, RFC 9220 §3: a tunnel opens with a 2xx on HTTP/2 and
     * HTTP/3; an HTTP/1.1 client gets the 101 itself. */
    b->status = upgrade && !client_is_h1(b) ? 200 : status;
    b->head_pending = 1;
    b->head_has_body = has_body || upgrade;
  }
  free(out);
  return rv;
}

/* Sends the held final head. Returns 0 or an error from the front end. */
static int flush_head(h3g_bridge *b) {
  if (!b->head_pending)
    return 0;
  b->head_pending = 0;
  /* RFC 9218 §8: the origin's view of this response's priority. */
  if (h3g_priority_merge_response(&b->prio, b->resp_head.fields,
                                  b->resp_head.nfields) &&
      b->fe->set_priority != NULL)
    b->fe->set_priority(b->fs, b->prio);
  int rv = b->fe->send_head(b->fs, b->status, b->resp_head.fields,
                            b->resp_head.nfields, 0, b->head_has_body);
  if (rv != 0)
    return rv;
  count_status(b->status);
  resp_enter(b, RESP_BODY);
  /* The request cannot be retried once a response started, so its head
   * can go, unless a write still holds it: the upstream may answer before
   * it has read the whole request (on_up_written frees it then). */
  if (b->req_head_written || !b->writing) {
    free(b->req_head);
    b->req_head = NULL;
  }
  if (!b->head_has_body)
    b->end_reported = 1;
  return 0;
}

static int on_h1_body(void *ud, const uint8_t *data, size_t len) {
  h3g_bridge *b = ud;
  if (b->is_head || b->status == 204 || b->status == 304)
    return 0;
  h3g_ring_commit_from(&b->resp_ring, data, len);
  return 0;
}

static int on_h1_trailers(void *ud, h3g_headers *fields) {
  h3g_bridge *b = ud;
  size_t n = fields->nfields;
  h3g_field *tmp = malloc(sizeof(*tmp) * (n + 1));
  if (tmp == NULL)
    return H3G_ERR_NOMEM;
  size_t kept = 0;
  int rv = h3g_response_filter(fields, tmp, n + 1, &kept);
  for (size_t i = 0; rv == 0 && i < kept; i++)
    rv = h3g_headers_add(&b->resp_trailers, tmp[i].name, tmp[i].namelen,
                         tmp[i].value, tmp[i].valuelen);
  free(tmp);
  return rv;
}

static int on_h1_complete(void *ud) {
  H3G_UNUSED(ud);
  return 0;
}

static const h3g_h1_callbacks h1_callbacks = {
    .on_head = on_h1_head,
    .on_body = on_h1_body,
    .on_trailers = on_h1_trailers,
    .on_complete = on_h1_complete,
};

/*
 * Ends the exchange because of an error. Before a final head went out the
 * client gets a short response made here; after, only a stream reset is
 * honest (ending the stream would make a truncated body look complete).
 */
static void fail_exchange(h3g_bridge *b, int status, const char *outcome) {
  fail_exchange_after(b, status, outcome, 0);
}

static void fail_exchange_after(h3g_bridge *b, int status, const char *outcome,
                                uint32_t retry_after) {
  b->outcome = outcome;
  if (b->up == UP_WAITING)
    b->ops->cancel(b->pool, &b->waiter);
  if (b->up == UP_ACTIVE)
    upstream_release(b, 0);
  if (b->up != UP_RELEASED)
    up_enter(b, UP_RELEASED);
  drop_request_body(b);
  cancel_timer(b, &b->tunnel_timer);
  if (b->resp == RESP_COMPLETE && b->tunnel == TUN_OPEN)
    stop_client_body(b); /* the upstream is gone both ways now */
  if (b->resp == RESP_ABORTED || b->resp == RESP_COMPLETE)
    return;
  if (b->resp == RESP_BODY) {
    resp_enter(b, RESP_ABORTED);
    H3G_INC(h3_streams_reset_by_gateway);
    b->fe->abort(b->fs, b->tunnel == TUN_OPEN ? H3G_ABORT_CONNECT
                                              : H3G_ABORT_INTERNAL);
    return;
  }
  char body[ERROR_BODY_MAX];
  const char *reason = status == 502   ? "Bad Gateway"
                       : status == 503 ? "Service Unavailable"
                       : status == 504 ? "Gateway Timeout"
                       : status == 431 ? "Request Header Fields Too Large"
                       : status == 413 ? "Content Too Large"
                       : status == 408 ? "Request Timeout"
                       : status == 400 ? "Bad Request"
                       : status == 421 ? "Misdirected Request"
                       : status == 404 ? "Not Found"
                       : status == 501 ? "Not Implemented"
                                       : "Internal Server Error";
  int blen = snprintf(body, sizeof(body), "%d %s\n", status, reason);
  char clen[24];
  int cl = snprintf(clen, sizeof(clen), "%d", blen);
  char after[16];
  int al = snprintf(after, sizeof(after), "%u", (unsigned)retry_after);
  h3g_field fields[4 + ERROR_ROUTE_FIELDS] = {
      {(const uint8_t *)"content-type", 12,
       (const uint8_t *)"text/plain; charset=utf-8", 25},
      {(const uint8_t *)"content-length", 14, (const uint8_t *)clen,
       (size_t)cl},
      {(const uint8_t *)"cache-control", 13, (const uint8_t *)"no-store", 8},
  };
  size_t nfields = 3;
  if (retry_after > 0)
    fields[nfields++] = (h3g_field){(const uint8_t *)"retry-after", 11,
                                    (const uint8_t *)after, (size_t)al};
  /* The route's own response fields (a Strict-Transport-Security, say)
   * belong on the gateway's answers too. */
  for (uint32_t i = 0; b->rs != NULL && i < b->rs->nadd_response &&
                       nfields < H3G_ARRAY_LEN(fields);
       i++) {
    const h3g_header_edit *e = &b->rs->add_response[i];
    fields[nfields++] =
        (h3g_field){(const uint8_t *)e->name, strlen(e->name),
                    (const uint8_t *)e->value, strlen(e->value)};
  }
  int has_body = !b->is_head;
  /* Body bytes of the refused response may already sit in the ring. */
  h3g_ring_drop_unsent(&b->resp_ring);
  if (has_body &&
      h3g_ring_write(&b->resp_ring, (const uint8_t *)body, (size_t)blen) != 0)
    has_body = 0;
  b->status = status;
  H3G_INC(responses_generated);
  count_status(status);
  resp_enter(b, RESP_COMPLETE);
  if (!has_body)
    b->end_reported = 1;
  stop_client_body(b);
  if (b->fe->send_head(b->fs, status, fields, nfields, 0, has_body) != 0) {
    resp_enter(b, RESP_ABORTED);
    b->fe->abort(b->fs, H3G_ABORT_INTERNAL);
    return;
  }
  notify_body(b);
}

/* Upstream reads paused on a full response buffer go on once it has
 * room again. */
static void resume_reads(h3g_bridge *b) {
  if (b->read_paused && b->up == UP_ACTIVE &&
      h3g_ring_space(&b->resp_ring) > 0) {
    b->read_paused = 0;
    b->ops->read_start(b->conn);
  }
}

size_t h3g_bridge_take_body(h3g_bridge *b, h3g_iovec *v, size_t nv,
                            size_t max, unsigned *flags) {
  *flags = 0;
  if (b->resp == RESP_ABORTED || b->end_reported || nv == 0)
    return 0;
  size_t n = h3g_ring_take(&b->resp_ring, max, v, nv);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += v[i].len;
  b->log.bytes_out += total;
  if (b->tunnel == TUN_OPEN)
    H3G_ADD(tunnel_bytes_down, total);
  else
    H3G_ADD(response_body_bytes, total);
  if (b->resp == RESP_COMPLETE && h3g_ring_unsent(&b->resp_ring) == 0) {
    *flags = H3G_BODY_END;
    if (b->resp_trailers.nfields > 0)
      *flags |= H3G_BODY_TRAILERS;
    b->end_reported = 1;
  }
  /* Within the front end's in-flight allowance, handing bytes out makes
   * room by itself. */
  if (total > 0)
    resume_reads(b);
  return n;
}

void h3g_bridge_body_done(h3g_bridge *b, size_t n) {
  h3g_ring_release(&b->resp_ring, n);
  resume_reads(b);
}

void h3g_bridge_get_trailers(h3g_bridge *b, const h3g_field **fields,
                             size_t *n) {
  *fields = b->resp_trailers.fields;
  *n = b->resp_trailers.nfields;
}

int h3g_bridge_response_done(const h3g_bridge *b) {
  return b->resp == RESP_COMPLETE && b->end_reported;
}

void h3g_bridge_get_usage(const h3g_bridge *b, h3g_bridge_usage *out) {
  *out = (h3g_bridge_usage){
      .req_held = h3g_ring_len(&b->req_ring),
      .req_cap = b->req_ring.cap,
      .resp_held = h3g_ring_len(&b->resp_ring),
      .resp_cap = b->resp_ring.cap,
      .resp_inflight = b->resp_ring.inflight,
      .outcome = b->outcome,
  };
}


void h3g_bridge_set_outcome(h3g_bridge *b, const char *outcome) {
  b->outcome = outcome;
}
