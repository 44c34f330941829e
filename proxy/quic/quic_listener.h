/*
 * The QUIC front end's entry point: one UDP socket (batched reads and
 * writes), the table of QUIC connections keyed by connection ID, and their
 * HTTP/3 sessions. Each request stream is handed to a stream bridge.
 */
#ifndef H3G_QUIC_LISTENER_H
#define H3G_QUIC_LISTENER_H

#include "common.h"
#include "config.h"
#include "stream_bridge.h"
#include "tls_ctx.h"

/* Response bytes one HTTP/3 stream may have sent and not yet had
 * acknowledged, beyond its stream_buffer_size of unsent ones
 * (h3g_bridge_env.resp_inflight). */
#define H3G_QUIC_STREAM_INFLIGHT_MAX ((size_t)32 * 1024 * 1024)

typedef struct h3g_quic_listener h3g_quic_listener;

/*
 * Binds the UDP socket on cfg->listen_address:listen_port (loop is a
 * uv_loop_t *). bridge_env and tls must outlive the listener. Returns 0,
 * H3G_ERR_IO (bind failed; logged) or H3G_ERR_NOMEM.
 */
struct h3g_secrets;
/* secrets (secrets.h) key the stateless reset and address tokens; it must
 * outlive the listener. */
int h3g_quic_listener_new(h3g_quic_listener **pl, void *loop,
                          const h3g_config *cfg, h3g_tls_ctx *tls,
                          const struct h3g_secrets *secrets,
                          const h3g_bridge_env *bridge_env);

/*
 * cb(arg, why) runs once, from the event loop, if the UDP socket fails for
 * good at run time (closed or shut down under us, no longer bound to its
 * port, errors that never stop; see udp_socket.h): every QUIC connection
 * was then dropped and HTTP/3 is no longer served. why is a short text
 * ("sendmmsg: Broken pipe ..."), valid until the listener is freed. The
 * listener lives on until h3g_quic_listener_shutdown().
 */
void h3g_quic_listener_on_failure(h3g_quic_listener *l,
                                  void (*cb)(void *arg, const char *why),
                                  void *arg);

/* The port actually bound (useful when the config says 0). */
uint16_t h3g_quic_listener_port(const h3g_quic_listener *l);

/*
 * Graceful shutdown: new connections are refused, every connection gets an
 * HTTP/3 GOAWAY and closes once its requests finished. After deadline_ms,
 * the remaining connections are closed (CONNECTION_CLOSE with H3_NO_ERROR).
 * When every connection and handle is gone, cb(arg) runs and the listener
 * is freed.
 */
/* New connections use tls from now on (a reload's certificates); those
 * open keep theirs. tls must outlive every connection made with it. */
void h3g_quic_listener_set_tls(h3g_quic_listener *l, h3g_tls_ctx *tls);

/* After h3g_quic_listener_shutdown(): the deadline is now (a second
 * SIGTERM). No-op before it. */
void h3g_quic_listener_expire(h3g_quic_listener *l);

void h3g_quic_listener_shutdown(h3g_quic_listener *l, uint64_t deadline_ms,
                                void (*cb)(void *arg), void *arg);

/* "ngtcp2 X, nghttp3 Y" as linked, for --version. */
void h3g_quic_versions(char *buf, size_t cap);

#endif /* H3G_QUIC_LISTENER_H */
