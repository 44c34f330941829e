/*
 * HTTP/3 session: nghttp3 callbacks on one side, h3g_frontend_ops for the
 * bridges on the other.
 *
 * Flow control. nghttp3 reports how many bytes of a stream it consumed
 * itself (frame headers, HEADERS, QPACK): that credit goes back to the
 * client at once. Request body bytes go to the bridge, and their credit
 * comes back only when the bridge calls consume(), i.e. when the upstream
 * took them; so a slow upstream stalls the client instead of our memory.
 * When a request stream is cut (reset, stop, malformed) the bytes the
 * bridge still held are credited back to the connection in one go, or the
 * connection window would shrink for good.
 *
 * Ownership. A stream object lives from the first bytes of a request
 * stream until nghttp3's stream_close (or the session's end) and owns its
 * bridge, made at begin_headers; the bridge is freed only then, because
 * nghttp3 and ngtcp2 may still reference response bytes the bridge handed
 * out until the stream is closed. Once a stream is cut, the bridge is not
 * called again except to free it, and bridge calls into the front end are
 * ignored. The stream object is both nghttp3's and ngtcp2's stream user
 * data: nghttp3 is told about the stream as soon as it exists (a read of
 * nothing), so its stream_close always finds the object.
 *
 * Shadows. Request stream bytes pass through h3_shadow.h before nghttp3,
 * which would silently drop invalid fields and turns a content-length
 * mismatch into a connection error. When the shadow refuses a request,
 * nghttp3 still gets the bytes before the defect (so the bridge learns the
 * fields before it, for the access log) but never the defect itself, nor
 * anything after it: nghttp3 never reports the end of the section holding
 * a refused field. The withheld bytes are credited back to the client at
 * once, the bridge is aborted, and the stream is reset with
 * H3_MESSAGE_ERROR. The client's unidirectional streams (control, QPACK)
 * pass through h3_uni_shadow.h, which decides their connection errors
 * where nghttp3 1.8 names them wrongly or not at all.
 *
 * Metrics. The bridge counts the resets and malformed requests it knows
 * about (its own aborts, client_abort, header validation); this file counts
 * only the ones the bridge never sees (the shadow's, nghttp3's).
 */
#include "h3_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alt_svc.h"
#include "buf.h"
#include "frontend.h"
#include "h3_shadow.h"
#include "h3_uni_shadow.h"
#include "log.h"
#include "metrics.h"

/* Response body bytes handed to nghttp3 per read_data call. nghttp3 asks
 * again only when its queue runs low, so this just bounds one DATA frame. */
#define READ_MAX_BYTES (256 * 1024)
/* Response fields handled without an allocation. */
#define NV_ON_STACK 48

typedef struct h3g_h3_stream {
  int64_t id;
  h3g_h3_session *s;
  h3g_bridge *bridge;  /* NULL if it could not be created */
  uint64_t unconsumed; /* body bytes given to the bridge, not yet credited */
  h3g_h3_shadow shadow;
  nghttp3_pri pri;         /* the priority last told to the bridge */
  unsigned pri_known : 1;  /* pri is set: the request's head was complete */
  unsigned cut : 1;        /* no more bridge calls but h3g_bridge_free */
  unsigned rx_stopped : 1; /* request no longer read; bytes credited here */
  unsigned ended : 1;      /* end_request was delivered */
  struct h3g_h3_stream *prev, *next;
} h3g_h3_stream;

struct h3g_h3_session {
  const h3g_h3_conn_ops *owner_ops; /* the QUIC connection that owns us */
  void *owner;
  ngtcp2_conn *conn;
  nghttp3_conn *h3;
  nghttp3_qpack_decoder *qdec; /* the shadows' */
  h3g_h3_uni_shadow uni;       /* the client's control and QPACK streams */
  const h3g_config *cfg;
  const h3g_bridge_env *env;
  const char *client;
  h3g_h3_stream *streams;
  /* The stream nghttp3 is being told about, before it has user data. */
  h3g_h3_stream *opening;
  /* Request body bytes nghttp3 delivered during the current read. */
  uint64_t rx_body;
  int goaway;
  int connect_offered; /* our SETTINGS enabled extended CONNECT */
  int rx_early;       /* the bytes being read came as 0-RTT */
  int handshake_done; /* early requests need no holding back */
  int dying; /* being freed: bridge calls into the front end are ignored */
  /* Streams the client cut in the current second (rapid-reset defence). */
  uint64_t reset_second;
  unsigned resets;
  uint32_t tunnels; /* WebSocket tunnels open (the bridges count them) */
};

/*
 * A client that opens and cancels requests faster than this per second is
 * attacking ("rapid reset", CVE-2023-44487): each cancel already stops the
 * upstream work at once (the bridge closes its upstream connection), so
 * upstream load stays bounded by max_streams; this bounds our own work and
 * closes the connection with H3_EXCESSIVE_LOAD (RFC 9114 §8.1) past
 * [listener] max_resets_per_second.
 */


static const h3g_frontend_ops frontend_ops;

/* The way back to the connection (h3g_h3_conn_ops). */
static void owner_dirty(h3g_h3_session *s) {
  s->owner_ops->mark_dirty(s->owner);
}

static void owner_fail(h3g_h3_session *s, uint64_t app_error_code) {
  s->owner_ops->fail(s->owner, app_error_code);
}

/* ---- streams ---- */

static void stream_unlink_free(h3g_h3_stream *st) {
  h3g_h3_session *s = st->s;
  if (st->prev != NULL)
    st->prev->next = st->next;
  else
    s->streams = st->next;
  if (st->next != NULL)
    st->next->prev = st->prev;
  st->cut = 1;
  h3g_bridge_free(st->bridge);
  st->bridge = NULL;
  h3g_h3_shadow_free(&st->shadow);
  /* ngtcp2 may outlive the object: fails harmlessly if it forgot the
   * stream already. */
  ngtcp2_conn_set_stream_user_data(s->conn, st->id, NULL);
  H3G_DEC(h3_streams_active);
  free(st);
}

/* Credits n bytes nobody will consume to the stream and the connection. */
static void credit_now(h3g_h3_session *s, int64_t stream_id, uint64_t n) {
  if (n == 0)
    return;
  ngtcp2_conn_extend_max_stream_offset(s->conn, stream_id, n);
  ngtcp2_conn_extend_max_offset(s->conn, n);
  owner_dirty(s);
}

/* Returns the request body credit the bridge still held to the connection. */
static void stream_credit_back(h3g_h3_stream *st) {
  if (st->unconsumed > 0) {
    ngtcp2_conn_extend_max_offset(st->s->conn, st->unconsumed);
    st->unconsumed = 0;
  }
}

/* Stops reading the request: STOP_SENDING with code, nghttp3 discards. */
static void stream_stop_reading(h3g_h3_stream *st, uint64_t code) {
  h3g_h3_session *s = st->s;
  if (st->rx_stopped)
    return;
  st->rx_stopped = 1;
  ngtcp2_conn_shutdown_stream_read(s->conn, 0, st->id, code);
  int rv = nghttp3_conn_shutdown_stream_read(s->h3, st->id);
  if (rv != 0)
    owner_fail(s, nghttp3_err_infer_quic_app_error_code(rv));
  stream_credit_back(st);
}

/*
 * Cuts a stream the gateway gives up on: RESET_STREAM and STOP_SENDING with
 * code. The bridge is not told (callers either come from the bridge or
 * handle a request the bridge refused) and not called again.
 */
static void stream_cut(h3g_h3_stream *st, uint64_t code) {
  h3g_h3_session *s = st->s;
  if (st->cut)
    return;
  st->cut = 1;
  ngtcp2_conn_shutdown_stream_write(s->conn, 0, st->id, code);
  nghttp3_conn_shutdown_stream_write(s->h3, st->id);
  stream_stop_reading(st, code);
  owner_dirty(s);
}

/* The bridge refused the request as malformed (RFC 9114 §4.1.2). */
static void stream_malformed(h3g_h3_stream *st, int counted_by_bridge) {
  if (!counted_by_bridge)
    H3G_INC(h3_malformed_requests);
  H3G_INC(h3_streams_reset_by_gateway);
  stream_cut(st, NGHTTP3_H3_MESSAGE_ERROR);
}

/* A bridge call failed for want of memory or another local reason. The
 * upstream side is released when the stream closes and the bridge is
 * freed. */
static void stream_internal_error(h3g_h3_stream *st) {
  H3G_INC(h3_streams_reset_by_gateway);
  stream_cut(st, NGHTTP3_H3_INTERNAL_ERROR);
}

/*
 * Counts one client cancel (RESET_STREAM or STOP_SENDING on a request
 * stream), whether or not its request was read: ngtcp2 drops the data of a
 * stream reset in the same packet, and such a stream costs us nothing
 * upstream, but it still counts towards the rapid-reset limit.
 */
static void note_client_cancel(h3g_h3_session *s) {
  uint64_t second = h3g_now_ns() / 1000000000u;
  if (second != s->reset_second) {
    s->reset_second = second;
    s->resets = 0;
  }
  if (++s->resets == s->cfg->max_resets_per_second + 1 && !s->dying) {
    h3g_warn("h3 %s: more than %u stream cancels in a second: closing "
             "(excessive load)", s->client, s->cfg->max_resets_per_second);
    H3G_INC(h3_excessive_load_closes);
    owner_fail(s, NGHTTP3_H3_EXCESSIVE_LOAD);
  }
}

/* The client reset the stream or asked us to stop: the exchange is over. */
static void stream_client_cut(h3g_h3_stream *st) {
  h3g_h3_session *s = st->s;
  if (st->cut)
    return;
  st->cut = 1;
  h3g_debug("h3 %s: stream %lld cancelled by the client", s->client,
            (long long)st->id);
  if (st->bridge != NULL)
    h3g_bridge_client_abort(st->bridge);
  /* No response can follow; the send side is reset unless it already
   * completed (then ngtcp2 ignores this). */
  ngtcp2_conn_shutdown_stream_write(s->conn, 0, st->id,
                                    NGHTTP3_H3_REQUEST_CANCELLED);
  nghttp3_conn_shutdown_stream_write(s->h3, st->id);
  stream_stop_reading(st, NGHTTP3_H3_REQUEST_CANCELLED);
  owner_dirty(s);
}

/*
 * The bridge of a request refused as malformed outside the bridge (by the
 * shadow or by nghttp3): it must not forward, or keep an upstream
 * connection that may have seen the head, and it logs "malformed".
 * Returns 1 when a bridge took the refusal, else 0.
 */
static int stream_bridge_refused(h3g_h3_stream *st) {
  if (st->bridge == NULL)
    return 0;
  h3g_bridge_reject(st->bridge);
  return 1;
}

/* The shadow refused the request (h3_shadow.h). */
static void stream_shadow_refused(h3g_h3_stream *st, const char *why) {
  h3g_h3_session *s = st->s;
  h3g_debug("h3 %s: stream %lld: malformed request: %s", s->client,
            (long long)st->id, why != NULL ? why : "refused");
  if (st->cut) {
    stream_stop_reading(st, NGHTTP3_H3_MESSAGE_ERROR);
    return;
  }
  stream_bridge_refused(st);
  stream_malformed(st, 0);
}

/*
 * Makes the object of a new request stream and tells nghttp3 about the
 * stream with a read of nothing (nghttp3 then rejects it by itself if it
 * came after our GOAWAY). Returns 0, NGHTTP3_ERR_NOMEM, or nghttp3's
 * connection error.
 */
static int stream_open(h3g_h3_session *s, int64_t stream_id,
                       h3g_h3_stream **pst) {
  h3g_h3_stream *st = calloc(1, sizeof(*st));
  *pst = NULL;
  if (st == NULL)
    return NGHTTP3_ERR_NOMEM;
  st->id = stream_id;
  st->s = s;
  h3g_h3_shadow_init(&st->shadow, stream_id);
  st->next = s->streams;
  if (s->streams != NULL)
    s->streams->prev = st;
  s->streams = st;
  H3G_INC(h3_streams_opened);
  H3G_INC(h3_streams_active);
  ngtcp2_conn_set_stream_user_data(s->conn, stream_id, st);

  s->opening = st;
  nghttp3_ssize rv = nghttp3_conn_read_stream(s->h3, stream_id, NULL, 0, 0);
  s->opening = NULL;
  if (rv < 0)
    return (int)rv; /* the connection closes; the session frees st */
  nghttp3_conn_set_stream_user_data(s->h3, stream_id, st);
  *pst = st;
  return 0;
}

/* stream_user_data of an nghttp3 callback, or the stream being opened. */
static h3g_h3_stream *cb_stream(h3g_h3_session *s, int64_t stream_id,
                                void *stream_user_data) {
  if (stream_user_data != NULL)
    return stream_user_data;
  if (s->opening != NULL && s->opening->id == stream_id)
    return s->opening;
  return NULL;
}

/* ---- nghttp3 callbacks ---- */

static int on_begin_headers(nghttp3_conn *h3, int64_t stream_id,
                            void *conn_user_data, void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  h3g_h3_stream *st = stream_user_data;

  if (st == NULL) {
    /* Only a request stream has headers, and stream_open made its object
     * before nghttp3 saw a byte of it. */
    H3G_INC(h3_streams_reset_by_gateway);
    ngtcp2_conn_shutdown_stream(s->conn, 0, stream_id,
                                NGHTTP3_H3_INTERNAL_ERROR);
    return nghttp3_conn_shutdown_stream_read(h3, stream_id);
  }
  if (st->cut || st->bridge != NULL)
    return 0;
  if (h3g_bridge_new(&st->bridge, s->env, &frontend_ops, st, s, s->client,
                     "h3") !=
      0) {
    st->bridge = NULL;
    stream_internal_error(st);
    return 0;
  }
  if (s->connect_offered)
    h3g_bridge_connect_offered(st->bridge);
  if (s->owner_ops->conn_id != NULL)
    h3g_bridge_set_conn_id(st->bridge, s->owner_ops->conn_id(s->owner));
  if (s->rx_early && !s->handshake_done)
    h3g_bridge_set_early(st->bridge);
  return 0;
}

static int on_recv_header(nghttp3_conn *h3, int64_t stream_id, int32_t token,
                          nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                          uint8_t flags, void *conn_user_data,
                          void *stream_user_data) {
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(token);
  H3G_UNUSED(flags);
  H3G_UNUSED(conn_user_data);
  if (st == NULL || st->cut)
    return 0;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
  nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
  /* H3G_ERR_TOOBIG is remembered by the bridge and answered with 431 at
   * the end of the section. */
  if (h3g_bridge_add_field(st->bridge, n.base, n.len, v.base, v.len) ==
      H3G_ERR_NOMEM)
    stream_internal_error(st);
  return 0;
}

/*
 * Tells the bridge the stream's priority as nghttp3 schedules it (RFC 9218:
 * the request's Priority field, or a PRIORITY_UPDATE, which wins even when
 * it came first), if it changed since last told. nghttp3 applies the field
 * before it reports the end of the header section.
 */
static void stream_sync_priority(h3g_h3_stream *st, int first) {
  nghttp3_pri pri;
  if (st->cut || st->bridge == NULL ||
      nghttp3_conn_get_stream_priority(st->s->h3, &pri, st->id) != 0)
    return;
  if (!first && pri.urgency == st->pri.urgency && pri.inc == st->pri.inc)
    return;
  st->pri = pri;
  st->pri_known = 1;
  h3g_bridge_set_priority(st->bridge,
                          (h3g_priority){.urgency = (uint8_t)pri.urgency,
                                         .incremental = pri.inc});
}

static int on_end_headers(nghttp3_conn *h3, int64_t stream_id, int fin,
                          void *conn_user_data, void *stream_user_data) {
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(conn_user_data);
  if (st == NULL || st->cut)
    return 0;
  /* Only for the request's head (trailers end with end_trailers). */
  stream_sync_priority(st, 1);
  int rv = h3g_bridge_end_headers(st->bridge, fin);
  if (rv == H3G_ERR_PROTO)
    stream_malformed(st, 1);
  else if (rv != 0)
    stream_internal_error(st);
  return 0;
}

static int on_recv_trailer(nghttp3_conn *h3, int64_t stream_id, int32_t token,
                           nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                           uint8_t flags, void *conn_user_data,
                           void *stream_user_data) {
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(token);
  H3G_UNUSED(flags);
  H3G_UNUSED(conn_user_data);
  if (st == NULL || st->cut)
    return 0;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
  nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
  int rv = h3g_bridge_add_trailer(st->bridge, n.base, n.len, v.base, v.len);
  if (rv == H3G_ERR_PROTO)
    stream_malformed(st, 0);
  else if (rv == H3G_ERR_NOMEM)
    stream_internal_error(st);
  /* H3G_ERR_TOOBIG: the bridge refuses the trailers at end_request. */
  return 0;
}

static int on_recv_data(nghttp3_conn *h3, int64_t stream_id,
                        const uint8_t *data, size_t len, void *conn_user_data,
                        void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);

  s->rx_body += len;
  if (st == NULL || st->cut || st->rx_stopped) {
    /* Nobody takes these bytes: credit them back at once. */
    ngtcp2_conn_extend_max_stream_offset(s->conn, stream_id, len);
    ngtcp2_conn_extend_max_offset(s->conn, len);
    return 0;
  }
  /* Counted before the call: the bridge may consume() from inside it. */
  st->unconsumed += len;
  int rv = h3g_bridge_recv_body(st->bridge, data, len);
  if (rv == H3G_ERR_PROTO) {
    stream_malformed(st, 0);
  } else if (rv == H3G_ERR_TOOBIG) {
    /* ngtcp2 enforces the stream window we advertised, so the bridge ring
     * cannot overflow; this is our bug, not the client's. */
    h3g_warn("h3 %s: stream %lld: request body over the bridge's buffer",
             s->client, (long long)stream_id);
    stream_internal_error(st);
  } else if (rv != 0) {
    stream_internal_error(st);
  }
  return 0;
}

static int on_deferred_consume(nghttp3_conn *h3, int64_t stream_id,
                               size_t consumed, void *conn_user_data,
                               void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_user_data);
  ngtcp2_conn_extend_max_stream_offset(s->conn, stream_id, consumed);
  ngtcp2_conn_extend_max_offset(s->conn, consumed);
  owner_dirty(s);
  return 0;
}

static int on_end_stream(nghttp3_conn *h3, int64_t stream_id,
                         void *conn_user_data, void *stream_user_data) {
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(conn_user_data);
  if (st == NULL || st->cut || st->ended)
    return 0;
  st->ended = 1;
  int rv = h3g_bridge_end_request(st->bridge);
  if (rv == H3G_ERR_PROTO)
    stream_malformed(st, 0);
  else if (rv != 0)
    stream_internal_error(st);
  return 0;
}

/* nghttp3 asks for STOP_SENDING: a malformed message it detected itself
 * (before the bridge saw the end of the headers), a stream opened after our
 * GOAWAY, or an unknown unidirectional stream. */
static int on_stop_sending(nghttp3_conn *h3, int64_t stream_id,
                           uint64_t app_error_code, void *conn_user_data,
                           void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  h3g_h3_stream *st = cb_stream(s, stream_id, stream_user_data);
  H3G_UNUSED(h3);

  if (st != NULL && !st->cut && app_error_code == NGHTTP3_H3_MESSAGE_ERROR) {
    h3g_debug("h3 %s: stream %lld: malformed request (nghttp3)", s->client,
              (long long)stream_id);
    H3G_INC(h3_malformed_requests);
    stream_bridge_refused(st);
  }
  if (st != NULL) {
    st->cut = 1;
    st->rx_stopped = 1;
    stream_credit_back(st);
  }
  int rv =
      ngtcp2_conn_shutdown_stream_read(s->conn, 0, stream_id, app_error_code);
  owner_dirty(s);
  return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

/* nghttp3 asks for RESET_STREAM (same cases as above). */
static int on_reset_stream(nghttp3_conn *h3, int64_t stream_id,
                           uint64_t app_error_code, void *conn_user_data,
                           void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  h3g_h3_stream *st = cb_stream(s, stream_id, stream_user_data);
  H3G_UNUSED(h3);

  if (st != NULL)
    st->cut = 1;
  H3G_INC(h3_streams_reset_by_gateway);
  int rv =
      ngtcp2_conn_shutdown_stream_write(s->conn, 0, stream_id, app_error_code);
  owner_dirty(s);
  return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int on_stream_close(nghttp3_conn *h3, int64_t stream_id,
                           uint64_t app_error_code, void *conn_user_data,
                           void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);

  if (st != NULL) {
    /* A client STOP_SENDING we had no occasion to notice while writing
     * shows only here, as the close code. */
    if (!st->cut && app_error_code != NGHTTP3_H3_NO_ERROR) {
      h3g_debug("h3 %s: stream %lld closed by the client (0x%llx)", s->client,
                (long long)stream_id, (unsigned long long)app_error_code);
      if (st->bridge != NULL)
        h3g_bridge_client_abort(st->bridge);
      st->cut = 1;
    }
    stream_credit_back(st);
    stream_unlink_free(st);
  }
  /* nghttp3 reports only request streams here; let the client open one
   * more (ngtcp2 leaves the stream limit to the application). */
  if (ngtcp2_is_bidi_stream(stream_id))
    ngtcp2_conn_extend_max_streams_bidi(s->conn, 1);
  return 0;
}

static int on_acked_stream_data(nghttp3_conn *h3, int64_t stream_id,
                                uint64_t datalen, void *conn_user_data,
                                void *stream_user_data) {
  h3g_h3_stream *st = stream_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(conn_user_data);
  if (st != NULL && !st->cut && st->bridge != NULL)
    h3g_bridge_body_done(st->bridge, (size_t)datalen);
  return 0;
}

static int on_shutdown(nghttp3_conn *h3, int64_t id, void *conn_user_data) {
  h3g_h3_session *s = conn_user_data;
  H3G_UNUSED(h3);
  h3g_debug("h3 %s: client sent GOAWAY (%lld)", s->client, (long long)id);
  return 0;
}

static const nghttp3_callbacks h3_callbacks = {
    .acked_stream_data = on_acked_stream_data,
    .stream_close = on_stream_close,
    .recv_data = on_recv_data,
    .deferred_consume = on_deferred_consume,
    .begin_headers = on_begin_headers,
    .recv_header = on_recv_header,
    .end_headers = on_end_headers,
    .recv_trailer = on_recv_trailer,
    .stop_sending = on_stop_sending,
    .end_stream = on_end_stream,
    .reset_stream = on_reset_stream,
    .shutdown = on_shutdown,
};

/* Response body for nghttp3, pulled from the bridge. The bytes stay valid
 * until acked_stream_data releases them (h3g_bridge_body_done). */
static nghttp3_ssize on_read_data(nghttp3_conn *h3, int64_t stream_id,
                                  nghttp3_vec *vec, size_t veccnt,
                                  uint32_t *pflags, void *conn_user_data,
                                  void *stream_user_data) {
  h3g_h3_session *s = conn_user_data;
  h3g_h3_stream *st = stream_user_data;
  h3g_iovec iov[READ_MAX_BYTES / H3G_RING_CHUNK];
  unsigned flags = 0;

  /* nghttp3 may offer a single vector (e.g. behind a large HEADERS frame).
   * Returning WOULDBLOCK then would park the stream until a resume that the
   * bridge has no reason to send: take what fits instead. */
  if (st == NULL || st->cut || st->bridge == NULL || veccnt == 0)
    return NGHTTP3_ERR_WOULDBLOCK;
  size_t n = h3g_bridge_take_body(st->bridge, iov,
                                  H3G_MIN(veccnt, H3G_ARRAY_LEN(iov)),
                                  READ_MAX_BYTES, &flags);
  if (n == 0 && flags == 0)
    return NGHTTP3_ERR_WOULDBLOCK;
  for (size_t i = 0; i < n; i++)
    vec[i] = (nghttp3_vec){.base = (uint8_t *)iov[i].base, .len = iov[i].len};

  if (flags & H3G_BODY_END) {
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    const h3g_field *fields = NULL;
    size_t nfields = 0;
    if (flags & H3G_BODY_TRAILERS)
      h3g_bridge_get_trailers(st->bridge, &fields, &nfields);
    if (nfields > 0) {
      /* Submitting from here is safe in nghttp3 1.8: the trailers' HEADERS
       * frame is queued behind the DATA frame being produced. */
      nghttp3_nv local[NV_ON_STACK];
      nghttp3_nv *nva =
          nfields <= NV_ON_STACK ? local : malloc(nfields * sizeof(*nva));
      if (nva == NULL)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
      for (size_t i = 0; i < nfields; i++)
        nva[i] = (nghttp3_nv){
            .name = fields[i].name,
            .value = fields[i].value,
            .namelen = fields[i].namelen,
            .valuelen = fields[i].valuelen,
        };
      *pflags |= NGHTTP3_DATA_FLAG_NO_END_STREAM;
      int rv = nghttp3_conn_submit_trailers(h3, stream_id, nva, nfields);
      if (nva != local)
        free(nva);
      if (rv != 0) {
        h3g_warn("h3 %s: stream %lld: trailers: %s", s->client,
                 (long long)stream_id, nghttp3_strerror(rv));
        return NGHTTP3_ERR_CALLBACK_FAILURE;
      }
    }
  }
  return (nghttp3_ssize)n;
}

static const nghttp3_data_reader body_reader = {.read_data = on_read_data};

/* ---- h3g_frontend_ops ---- */

static int fe_usable(const h3g_h3_stream *st) {
  return !st->cut && !st->s->dying;
}

/* Final heads carry our Alt-Svc as the TCP front end's do (h1_session.c),
 * so an HTTP/3 client refreshes its entry before max-age runs out, and
 * learns "clear" while we drain. The upstream's own field is dropped when
 * ours replaces it, passed on (and ours left out) when it is kept. */
static int fe_send_head(void *fs, int status, const h3g_field *fields, size_t n,
                        int interim, int has_body) {
  h3g_h3_stream *st = fs;
  h3g_h3_session *s = st->s;
  const h3g_alt_svc *alt =
      interim || (st->bridge != NULL && !h3g_bridge_alt_svc(st->bridge))
          ? NULL
          : s->env->alt_svc;
  char code[4];
  char alt_value[320];
  size_t alt_len = 0;

  if (!fe_usable(st))
    return H3G_ERR_CLOSED;
  if (status < 100 || status > 999 || (interim && status >= 200))
    return H3G_ERR_INVAL;
  snprintf(code, sizeof(code), "%03d", status);

  int drop_upstream_alt = alt != NULL && h3g_alt_svc_replaces_upstream(alt);
  if (alt != NULL) {
    int upstream_has = 0;
    for (size_t i = 0; i < n && !upstream_has; i++)
      upstream_has = h3g_field_name_eq(&fields[i], "alt-svc");
    if (!upstream_has || drop_upstream_alt)
      alt_len = h3g_alt_svc_value(alt, alt_value, sizeof(alt_value));
  }

  size_t cap = n + 2; /* :status, the fields, our alt-svc */
  nghttp3_nv local[NV_ON_STACK];
  nghttp3_nv *nva = cap <= NV_ON_STACK ? local : malloc(cap * sizeof(*nva));
  if (nva == NULL)
    return H3G_ERR_NOMEM;
  size_t nv = 0;
  nva[nv++] = (nghttp3_nv){
      .name = (const uint8_t *)":status",
      .value = (const uint8_t *)code,
      .namelen = 7,
      .valuelen = 3,
  };
  for (size_t i = 0; i < n; i++) {
    if (drop_upstream_alt && h3g_field_name_eq(&fields[i], "alt-svc"))
      continue;
    nva[nv++] = (nghttp3_nv){
        .name = fields[i].name,
        .value = fields[i].value,
        .namelen = fields[i].namelen,
        .valuelen = fields[i].valuelen,
    };
  }
  /* nghttp3 copies the fields at submission: alt_value may be local. */
  if (alt_len > 0)
    nva[nv++] = (nghttp3_nv){
        .name = (const uint8_t *)"alt-svc",
        .value = (const uint8_t *)alt_value,
        .namelen = 7,
        .valuelen = alt_len,
    };

  int rv;
  if (interim)
    rv = nghttp3_conn_submit_info(s->h3, st->id, nva, nv);
  else
    rv = nghttp3_conn_submit_response(s->h3, st->id, nva, nv,
                                      has_body ? &body_reader : NULL);
  if (nva != local)
    free(nva);
  if (rv != 0) {
    h3g_debug("h3 %s: stream %lld: response head: %s", s->client,
              (long long)st->id, nghttp3_strerror(rv));
    return rv == NGHTTP3_ERR_NOMEM ? H3G_ERR_NOMEM : H3G_ERR_CLOSED;
  }
  owner_dirty(s);
  return 0;
}

static void fe_body_ready(void *fs) {
  h3g_h3_stream *st = fs;
  h3g_h3_session *s = st->s;
  if (!fe_usable(st))
    return;
  int rv = nghttp3_conn_resume_stream(s->h3, st->id);
  if (rv != 0)
    owner_fail(s, nghttp3_err_infer_quic_app_error_code(rv));
  owner_dirty(s);
}

static void fe_consume(void *fs, size_t n) {
  h3g_h3_stream *st = fs;
  h3g_h3_session *s = st->s;
  if (!fe_usable(st) || st->rx_stopped)
    return; /* the credit went back when reading stopped */
  n = (size_t)H3G_MIN((uint64_t)n, st->unconsumed);
  if (n == 0)
    return;
  st->unconsumed -= n;
  ngtcp2_conn_extend_max_stream_offset(s->conn, st->id, n);
  ngtcp2_conn_extend_max_offset(s->conn, n);
  owner_dirty(s);
}

static uint64_t fe_rtt_ns(void *fs) {
  h3g_h3_stream *st = fs;
  ngtcp2_conn_info ci;
  ngtcp2_conn_get_conn_info(st->s->conn, &ci);
  return ci.smoothed_rtt;
}

static void fe_grow_window(void *fs, size_t n) {
  h3g_h3_stream *st = fs;
  if (!fe_usable(st) || st->rx_stopped)
    return;
  ngtcp2_conn_extend_max_stream_offset(st->s->conn, st->id, n);
  owner_dirty(st->s);
}

static void fe_stop_request(void *fs) {
  h3g_h3_stream *st = fs;
  if (!fe_usable(st))
    return;
  stream_stop_reading(st, NGHTTP3_H3_NO_ERROR);
  owner_dirty(st->s);
}

static void fe_abort(void *fs, h3g_abort_code code) {
  h3g_h3_stream *st = fs;
  uint64_t h3code;

  if (!fe_usable(st))
    return;
  switch (code) {
  case H3G_ABORT_MESSAGE: h3code = NGHTTP3_H3_MESSAGE_ERROR; break;
  case H3G_ABORT_INCOMPLETE: h3code = NGHTTP3_H3_REQUEST_INCOMPLETE; break;
  case H3G_ABORT_CANCELLED: h3code = NGHTTP3_H3_REQUEST_CANCELLED; break;
  case H3G_ABORT_REJECTED: h3code = NGHTTP3_H3_REQUEST_REJECTED; break;
  case H3G_ABORT_CONNECT: h3code = NGHTTP3_H3_CONNECT_ERROR; break;
  case H3G_ABORT_INTERNAL:
  default: h3code = NGHTTP3_H3_INTERNAL_ERROR; break;
  }
  /* h3_streams_reset_by_gateway is counted by the bridge. */
  stream_cut(st, h3code);
}

/* The origin's Priority response field (RFC 9218 §8): from now on it
 * decides, and nghttp3 ignores later PRIORITY_UPDATEs for the stream. */
static void fe_set_priority(void *fs, h3g_priority prio) {
  h3g_h3_stream *st = fs;
  if (!fe_usable(st))
    return;
  nghttp3_pri pri = {.urgency = prio.urgency, .inc = prio.incremental};
  if (nghttp3_conn_set_server_stream_priority(st->s->h3, st->id, &pri) == 0) {
    st->pri = pri;
    owner_dirty(st->s);
  }
}

static uint32_t *fe_tunnels(void *fs) {
  h3g_h3_stream *st = fs;
  return &st->s->tunnels;
}

static const h3g_frontend_ops frontend_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .rtt_ns = fe_rtt_ns,
    .grow_window = fe_grow_window,
    .set_priority = fe_set_priority,
    .tunnels = fe_tunnels,
};

/* ---- session ---- */

int h3g_h3_session_new(h3g_h3_session **ps, const h3g_h3_conn_ops *ops,
                       void *owner, ngtcp2_conn *conn, const h3g_config *cfg,
                       const h3g_bridge_env *env, const char *client) {
  nghttp3_settings settings;
  int64_t ctrl, qenc, qdec;
  int rv;

  *ps = NULL;
  if (ngtcp2_conn_get_streams_uni_left(conn) < 3)
    return NGHTTP3_ERR_H3_GENERAL_PROTOCOL_ERROR;

  h3g_h3_session *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NGHTTP3_ERR_NOMEM;
  *s = (h3g_h3_session){
      .owner_ops = ops,
      .owner = owner,
      .conn = conn,
      .cfg = cfg,
      .env = env,
      .client = client,
  };

  nghttp3_settings_default(&settings);
  settings.max_field_section_size = cfg->max_header_size;
  /* No dynamic table: every field section is self-contained, so the shadow
   * decodes it without following the encoder stream (h3_shadow.h). */
  settings.qpack_max_dtable_capacity = 0;
  settings.qpack_blocked_streams = 0;
  /* RFC 9220: extended CONNECT, for WebSockets, when a route takes them. */
  settings.enable_connect_protocol = cfg->websocket_any ? 1 : 0;
  s->connect_offered = settings.enable_connect_protocol;
  rv = h3g_h3_shadow_decoder_new(&s->qdec);
  if (rv != 0) {
    free(s);
    return rv;
  }
  rv = nghttp3_conn_server_new(&s->h3, &h3_callbacks, &settings,
                               nghttp3_mem_default(), s);
  if (rv != 0) {
    nghttp3_qpack_decoder_del(s->qdec);
    free(s);
    return rv;
  }
  uint64_t max_bidi =
      ngtcp2_conn_get_local_transport_params(conn)->initial_max_streams_bidi;
  nghttp3_conn_set_max_client_streams_bidi(s->h3, max_bidi);
  h3g_h3_uni_shadow_init(&s->uni, max_bidi);
  nghttp3_conn_set_max_concurrent_streams(s->h3, cfg->max_streams);

  if ((rv = ngtcp2_conn_open_uni_stream(conn, &ctrl, NULL)) != 0 ||
      (rv = ngtcp2_conn_open_uni_stream(conn, &qenc, NULL)) != 0 ||
      (rv = ngtcp2_conn_open_uni_stream(conn, &qdec, NULL)) != 0) {
    nghttp3_conn_del(s->h3);
    nghttp3_qpack_decoder_del(s->qdec);
    free(s);
    return rv == NGTCP2_ERR_NOMEM ? NGHTTP3_ERR_NOMEM
                                  : NGHTTP3_ERR_H3_GENERAL_PROTOCOL_ERROR;
  }
  if ((rv = nghttp3_conn_bind_control_stream(s->h3, ctrl)) != 0 ||
      (rv = nghttp3_conn_bind_qpack_streams(s->h3, qenc, qdec)) != 0) {
    nghttp3_conn_del(s->h3);
    nghttp3_qpack_decoder_del(s->qdec);
    free(s);
    return rv;
  }
  *ps = s;
  return 0;
}

void h3g_h3_session_expire(h3g_h3_session *s) {
  for (h3g_h3_stream *st = s->streams; st != NULL; st = st->next)
    if (st->bridge != NULL && !st->cut)
      h3g_bridge_set_outcome(st->bridge, "shutdown");
}

void h3g_h3_session_free(h3g_h3_session *s) {
  if (s == NULL)
    return;
  s->dying = 1;
  while (s->streams != NULL)
    stream_unlink_free(s->streams);
  nghttp3_conn_del(s->h3);
  nghttp3_qpack_decoder_del(s->qdec);
  free(s);
}

/* What the unidirectional stream shadow passes goes to nghttp3. */
static int on_uni_emit(void *ud, int64_t stream_id, const uint8_t *data,
                       size_t len, int fin) {
  h3g_h3_session *s = ud;
  nghttp3_ssize n = nghttp3_conn_read_stream(s->h3, stream_id, data, len, fin);
  return n < 0 ? (int)n : 0;
}

/*
 * Control and QPACK streams: the shadow, then nghttp3. Every byte is
 * credited back at once: nghttp3 consumes all it is given on these
 * streams, and the shadow holds no more than a frame header and
 * H3G_H3_UNI_HOLD_MAX bytes.
 *
 * The control stream may have carried PRIORITY_UPDATE frames (RFC 9218
 * §7.2), which nghttp3 applies to its scheduler without telling us: every
 * request's priority is read back for the bridges (a request still waiting
 * for an upstream connection moves). Control stream traffic is rare, the
 * walk is cheap.
 */
static int recv_uni(h3g_h3_session *s, int64_t stream_id, const uint8_t *data,
                    size_t len, int fin) {
  int rv = h3g_h3_uni_shadow_feed(&s->uni, stream_id, data, len, fin,
                                  on_uni_emit, s);
  if (rv != 0) {
    h3g_debug("h3 %s: stream %lld: %s", s->client, (long long)stream_id,
              s->uni.error != 0 ? s->uni.why : nghttp3_strerror(rv));
    return rv;
  }
  ngtcp2_conn_extend_max_stream_offset(s->conn, stream_id, len);
  ngtcp2_conn_extend_max_offset(s->conn, len);
  for (h3g_h3_stream *st = s->streams; st != NULL; st = st->next)
    if (st->pri_known)
      stream_sync_priority(st, 0);
  return 0;
}

int h3g_h3_session_recv_stream_data(h3g_h3_session *s, int64_t stream_id,
                                    const uint8_t *data, size_t len, int fin,
                                    int early, void *stream_user_data) {
  h3g_h3_stream *st = stream_user_data;
  const char *why = NULL;
  int rv;

  s->rx_early = early;

  /* A server receives only client-initiated bidirectional streams. */
  if (!ngtcp2_is_bidi_stream(stream_id))
    return recv_uni(s, stream_id, data, len, fin);
  if (st == NULL && (rv = stream_open(s, stream_id, &st)) != 0)
    return rv;
  if (st->rx_stopped) {
    /* Refused, cancelled or no longer needed: nghttp3 would discard these
     * bytes too. */
    credit_now(s, stream_id, len);
    return 0;
  }

  size_t good = 0;
  int shadow =
      h3g_h3_shadow_feed(&st->shadow, s->qdec, data, len, fin, &good, &why);
  if (shadow != 0 && shadow != H3G_ERR_PROTO)
    return shadow;
  if (good > 0 || (shadow == 0 && fin)) {
    s->rx_body = 0;
    nghttp3_ssize n = nghttp3_conn_read_stream(s->h3, stream_id, data, good,
                                               shadow == 0 && fin);
    if (n == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING) {
      /* A message nghttp3 refuses that the shadow let through (an empty
       * header section): still only this request's error (RFC 9114
       * §4.1.2). What went to the bridge comes back with the stream. */
      credit_now(s, stream_id, len - H3G_MIN((uint64_t)len, s->rx_body));
      stream_shadow_refused(st, "refused by nghttp3");
      return 0;
    }
    if (n < 0)
      return (int)n;
    /* What nghttp3 consumed itself; body bytes are credited by consume(). */
    ngtcp2_conn_extend_max_stream_offset(s->conn, stream_id, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(s->conn, (uint64_t)n);
  }
  if (shadow == H3G_ERR_PROTO) {
    credit_now(s, stream_id, len - good);
    stream_shadow_refused(st, why);
  }
  return 0;
}

void h3g_h3_session_handshake_completed(h3g_h3_session *s) {
  s->handshake_done = 1;
  s->rx_early = 0;
  /* A bridge may fail its stream from inside (an answered error), which
   * only marks it cut: the list itself stays intact. */
  for (h3g_h3_stream *st = s->streams; st != NULL; st = st->next)
    if (!st->cut && st->bridge != NULL)
      h3g_bridge_handshake_done(st->bridge);
}

int h3g_h3_session_acked(h3g_h3_session *s, int64_t stream_id, uint64_t n) {
  return nghttp3_conn_add_ack_offset(s->h3, stream_id, n);
}

int h3g_h3_session_stream_close(h3g_h3_session *s, int64_t stream_id,
                                uint64_t app_error_code) {
  if ((stream_id & 0x3) == 0x2) {
    /* A client unidirectional stream (an unknown type, one that ended
     * before its type): ngtcp2 leaves its slot to us, as for requests. The
     * critical ones never get here but to close the connection. */
    h3g_h3_uni_shadow_closed(&s->uni, stream_id);
    ngtcp2_conn_extend_max_streams_uni(s->conn, 1);
  }
  int rv = nghttp3_conn_close_stream(s->h3, stream_id, app_error_code);
  if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
    /* A request stream nghttp3 never saw data on. */
    if (ngtcp2_is_bidi_stream(stream_id))
      ngtcp2_conn_extend_max_streams_bidi(s->conn, 1);
    return 0;
  }
  return rv;
}

static h3g_h3_stream *find_stream(h3g_h3_session *s, int64_t stream_id) {
  for (h3g_h3_stream *st = s->streams; st != NULL; st = st->next)
    if (st->id == stream_id)
      return st;
  return NULL;
}

int h3g_h3_session_stream_reset(h3g_h3_session *s, int64_t stream_id) {
  if (!ngtcp2_is_bidi_stream(stream_id)) {
    /* RFC 9114 §6.2.1, RFC 9204 §4.2: a reset critical stream closes the
     * connection; any other may be reset, even before its type. */
    int rv = h3g_h3_uni_shadow_reset(&s->uni, stream_id);
    if (rv != 0)
      h3g_debug("h3 %s: stream %lld: %s", s->client, (long long)stream_id,
                s->uni.why);
    return rv;
  }
  h3g_h3_stream *st = find_stream(s, stream_id);
  /* After our STOP_SENDING (the response did not need the rest of the
   * request) a RESET_STREAM is the client's expected answer, not a
   * cancellation. */
  if (st != NULL && !st->rx_stopped) {
    note_client_cancel(s);
    stream_client_cut(st);
    return 0;
  }
  if (st == NULL && (stream_id & 0x3) == 0)
    note_client_cancel(s); /* a request stream we never got to read */
  return nghttp3_conn_shutdown_stream_read(s->h3, stream_id);
}

int h3g_h3_session_read_stopped(h3g_h3_session *s, int64_t stream_id) {
  return nghttp3_conn_shutdown_stream_read(s->h3, stream_id);
}

void h3g_h3_session_set_max_streams(h3g_h3_session *s, uint64_t max) {
  nghttp3_conn_set_max_client_streams_bidi(s->h3, max);
  h3g_h3_uni_shadow_set_max_streams(&s->uni, max);
}

int h3g_h3_session_unblock(h3g_h3_session *s, int64_t stream_id) {
  return nghttp3_conn_unblock_stream(s->h3, stream_id);
}

nghttp3_ssize h3g_h3_session_writev(h3g_h3_session *s, int64_t *pstream_id,
                                    int *pfin, nghttp3_vec *vec, size_t n) {
  return nghttp3_conn_writev_stream(s->h3, pstream_id, pfin, vec, n);
}

void h3g_h3_session_block(h3g_h3_session *s, int64_t stream_id) {
  nghttp3_conn_block_stream(s->h3, stream_id);
}

void h3g_h3_session_shutdown_write(h3g_h3_session *s, int64_t stream_id) {
  h3g_h3_stream *st = find_stream(s, stream_id);
  if (st != NULL && !st->cut)
    stream_client_cut(st);
  nghttp3_conn_shutdown_stream_write(s->h3, stream_id);
}

int h3g_h3_session_add_write_offset(h3g_h3_session *s, int64_t stream_id,
                                    size_t n) {
  return nghttp3_conn_add_write_offset(s->h3, stream_id, n);
}

int h3g_h3_session_submit_shutdown_notice(h3g_h3_session *s) {
  return nghttp3_conn_submit_shutdown_notice(s->h3);
}

int h3g_h3_session_shutdown(h3g_h3_session *s) {
  s->goaway = 1;
  return nghttp3_conn_shutdown(s->h3);
}

int h3g_h3_session_is_drained(h3g_h3_session *s) {
  return s->goaway && nghttp3_conn_is_drained(s->h3);
}
