/*
 * The HTTP/3 session of one QUIC connection (nghttp3), and the front end of
 * the stream bridge: every request stream gets a bridge, and the session
 * implements h3g_frontend_ops for it.
 *
 * The session never writes packets and never frees its connection, and
 * knows it only through h3g_h3_conn_ops (dependencies point one way: the
 * connection uses the session). Events that need output (a response head,
 * body bytes, flow-control credit, a reset) mark the connection dirty; its
 * owner writes once per loop iteration. A fatal HTTP/3 error is reported
 * with fail() and acted upon after the current callback returned. Bridge
 * operations may therefore run inside nghttp3 or ngtcp2 callbacks or from
 * upstream events: both are safe.
 *
 * Functions returning int return 0 or a negative nghttp3 (or ngtcp2) error
 * code that is fatal for the connection; the caller closes it with
 * nghttp3_err_infer_quic_app_error_code().
 */
#ifndef H3G_H3_SESSION_H
#define H3G_H3_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>

#include "config.h"
#include "stream_bridge.h"

typedef struct h3g_h3_session h3g_h3_session;

/*
 * What the session asks of the QUIC connection that owns it. Both calls
 * only take note (nothing is written or freed before they return), so the
 * session makes them from inside nghttp3 and ngtcp2 callbacks.
 */
typedef struct h3g_h3_conn_ops {
  /* The connection has output to write at its next flush. */
  void (*mark_dirty)(void *owner);
  /* A fatal HTTP/3 error: the connection is closed with app_error_code
   * once the current callback returned. */
  void (*fail)(void *owner, uint64_t app_error_code);
  /* Optional (NULL: none). The connection's ID for the access log, in hex
   * (the bridge keeps its first H3G_ACCESS_CID_LEN digits). */
  const char *(*conn_id)(void *owner);
} h3g_h3_conn_ops;

/*
 * Creates the session of an established connection: opens the control and
 * QPACK streams and queues SETTINGS. ops and owner (the QUIC connection)
 * must outlive the session. client is "ip:port" (kept by reference: it
 * must outlive the session). Returns 0, NGHTTP3_ERR_NOMEM, or
 * NGHTTP3_ERR_H3_GENERAL_PROTOCOL_ERROR when the client does not allow the
 * three unidirectional streams HTTP/3 needs.
 */
int h3g_h3_session_new(h3g_h3_session **ps, const h3g_h3_conn_ops *ops,
                       void *owner, ngtcp2_conn *conn, const h3g_config *cfg,
                       const h3g_bridge_env *env, const char *client);

/* Frees every stream's bridge, then the session. NULL is a no-op. Must not
 * be called from inside an nghttp3 or ngtcp2 callback. */
void h3g_h3_session_free(h3g_h3_session *s);

/*
 * ngtcp2 events, forwarded by the connection.
 *
 * recv_stream_data takes stream_user_data as ngtcp2 passed it: the session
 * sets it on request streams (ngtcp2_conn_set_stream_user_data) and clears
 * it when it forgets the stream. A malformed request (RFC 9114 §4.1.2) is
 * a stream error handled inside; only connection errors are returned.
 */
/* early: the bytes came before the handshake completed (0-RTT): a request
 * whose head arrives so is replayable and goes upstream early only if it is
 * safe (stream_bridge.h, RFC 8470). */
int h3g_h3_session_recv_stream_data(h3g_h3_session *s, int64_t stream_id,
                                    const uint8_t *data, size_t len, int fin,
                                    int early, void *stream_user_data);
/* The handshake completed: requests held back as early data may go. */
void h3g_h3_session_handshake_completed(h3g_h3_session *s);
int h3g_h3_session_acked(h3g_h3_session *s, int64_t stream_id, uint64_t n);
int h3g_h3_session_stream_close(h3g_h3_session *s, int64_t stream_id,
                                uint64_t app_error_code);
/* The client reset the stream (RESET_STREAM). */
int h3g_h3_session_stream_reset(h3g_h3_session *s, int64_t stream_id);
/* We stopped reading the stream (ngtcp2 is sending STOP_SENDING). */
int h3g_h3_session_read_stopped(h3g_h3_session *s, int64_t stream_id);
void h3g_h3_session_set_max_streams(h3g_h3_session *s, uint64_t max);
int h3g_h3_session_unblock(h3g_h3_session *s, int64_t stream_id);

/* The write loop's side of nghttp3 (see nghttp3_conn_writev_stream). */
nghttp3_ssize h3g_h3_session_writev(h3g_h3_session *s, int64_t *pstream_id,
                                    int *pfin, nghttp3_vec *vec, size_t n);
void h3g_h3_session_block(h3g_h3_session *s, int64_t stream_id);
/* ngtcp2 refused data for the stream (NGTCP2_ERR_STREAM_SHUT_WR): unless we
 * reset it, the client sent STOP_SENDING (ngtcp2 answers that by itself and
 * has no callback for it), which cancels the exchange. */
void h3g_h3_session_shutdown_write(h3g_h3_session *s, int64_t stream_id);
int h3g_h3_session_add_write_offset(h3g_h3_session *s, int64_t stream_id,
                                    size_t n);

/* Graceful shutdown: a GOAWAY announcing it, then the final GOAWAY. */
int h3g_h3_session_submit_shutdown_notice(h3g_h3_session *s);
int h3g_h3_session_shutdown(h3g_h3_session *s);

/* The shutdown deadline passed: the streams still open are logged as
 * "shutdown" when the session is freed (next). */
void h3g_h3_session_expire(h3g_h3_session *s);
/* 1 once the final GOAWAY was queued and no request stream is left. */
int h3g_h3_session_is_drained(h3g_h3_session *s);

#endif /* H3G_H3_SESSION_H */
