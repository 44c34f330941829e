/*
 * HTTP/2 server side of one TCP + TLS connection (ALPN "h2"), beside
 * h1_session: nghttp2 parses and frames, every HTTP/2 stream gets its own
 * bridge (protocol "h2"), and the bridge's responses go back through
 * nghttp2's data provider. Same transport ops as h1_session (written
 * plaintext, kicks, one timer, close), so the listener drives both alike.
 *
 * The session does no I/O and never frees itself; the owner frees it after
 * the transport closed (close() only asks for that).
 */
#ifndef H3G_H2_SESSION_H
#define H3G_H2_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "h1_session.h"

typedef struct h3g_h2_session h3g_h2_session;

/* Creates the session of a connection whose handshake selected "h2"
 * (client is "ip:port", copied), queues the server SETTINGS and arms the
 * idle timer. env->redirect_port must be 0. Returns 0 or H3G_ERR_NOMEM. */
int h3g_h2_session_new(h3g_h2_session **ps, const h3g_h1_env *env,
                       const h3g_h1_transport_ops *tops, void *t,
                       const char *client);

/* Cuts every stream in flight (their upstream connections are not reused),
 * frees s. NULL is a no-op. */
void h3g_h2_session_free(h3g_h2_session *s);

/* Plaintext from the client. Returns how many bytes were used (all of them
 * unless the session closed; HTTP/2 flow control bounds what a client may
 * send, so there is no "not now"). */
size_t h3g_h2_session_recv(h3g_h2_session *s, const uint8_t *data, size_t len);

/* The client closed its side: every stream is cut, the connection closes. */
void h3g_h2_session_eof(h3g_h2_session *s);

/* Deferred work (after kick, or when the output drained): frees closed
 * streams, writes frames while the output has room. */
void h3g_h2_session_process(h3g_h2_session *s);

/* The timer set with set_timer expired. */
void h3g_h2_session_on_timer(h3g_h2_session *s);

/* Graceful shutdown: GOAWAY with the last stream id processed; streams in
 * flight finish, then the connection closes. */
void h3g_h2_session_shutdown(h3g_h2_session *s);

/* The shutdown deadline passed: every exchange still open is cut (its
 * upstream side closed; a tunnel's reset) and logged as "shutdown". The
 * session is freed next. */
void h3g_h2_session_expire(h3g_h2_session *s);

#endif /* H3G_H2_SESSION_H */
