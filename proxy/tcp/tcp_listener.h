/*
 * The TCP front end: a libuv TCP listener whose connections carry HTTP/1.1
 * (h1_session.h) over TLS (wolfSSL with memory I/O callbacks), or over
 * plain TCP for the redirect listener. HTTP/2 will be chosen here by ALPN
 * ("h2") and get a session of its own beside h1_session.
 *
 * Per connection: one WOLFSSL, one timer, and fixed buffers (ciphertext
 * in, plaintext in, ciphertext out) allocated at accept; reads stop while
 * the session takes no bytes, while the input is full, or while the
 * output is over its soft limit; nothing is allocated per read or write.
 */
#ifndef H3G_TCP_LISTENER_H
#define H3G_TCP_LISTENER_H

#include <stdint.h>

#include "common.h"
#include "config.h"
#include "h1_session.h"
#include "tls_ctx.h"

typedef struct h3g_tcp_listener h3g_tcp_listener;

/*
 * Binds address:port (an IP literal; port 0 picks one) and starts
 * accepting. tls is the context of h3g_tls_ctx_new_tcp, or NULL for plain
 * TCP (the redirect listener). env (and what it points to) and tls must
 * outlive the listener. max_connections beyond: accepted and closed at
 * once (metric tcp_connections_refused). name is used in logs ("tcp",
 * "redirect"). Returns 0, H3G_ERR_INUSE (the port is taken; logged),
 * H3G_ERR_IO (bind or listen failed otherwise; logged), H3G_ERR_INVAL
 * (bad address, or [tcp] congestion_control unknown) or H3G_ERR_NOMEM.
 */
int h3g_tcp_listener_new(h3g_tcp_listener **pl, void *loop,
                         const h3g_config *cfg, const char *name,
                         const char *address, uint16_t port, h3g_tls_ctx *tls,
                         const h3g_h1_env *env);

/*
 * Whether the kernel has the TCP congestion control algorithm name (""
 * is the system's default: always), as h3g_tcp_listener_new would find
 * out: for a reload to refuse the name before anything changes. Returns
 * 0 or H3G_ERR_INVAL (logged as at start). A name the kernel has but
 * does not allow this process passes (the listener warns).
 */
int h3g_tcp_congestion_check(const char *name);

/*
 * Connections accepted from now on use TCP congestion control name (""
 * the system's default); those open keep theirs. Returns 0 or
 * H3G_ERR_INVAL (the kernel has no such algorithm; logged). Not allowed
 * to this process: a warning, the one set before stays.
 */
int h3g_tcp_listener_set_congestion_control(h3g_tcp_listener *l,
                                            const char *name);

/* The port actually bound. */
uint16_t h3g_tcp_listener_port(const h3g_tcp_listener *l);

/*
 * Graceful shutdown: stops accepting, closes idle connections and those
 * still in their handshake, lets requests in flight finish (their
 * responses say "Connection: close") until deadline_ms, then closes the
 * rest. When every connection and handle is gone, cb(arg) runs and the
 * listener is freed.
 */
/* New connections use tls from now on (a reload's certificates); those
 * open keep theirs. tls must outlive every connection made with it. A
 * listener made without TLS (redirect) ignores it. */
void h3g_tcp_listener_set_tls(h3g_tcp_listener *l, h3g_tls_ctx *tls);

/* After h3g_tcp_listener_shutdown(): the deadline is now (a second
 * SIGTERM). No-op before it. */
void h3g_tcp_listener_expire(h3g_tcp_listener *l);

void h3g_tcp_listener_shutdown(h3g_tcp_listener *l, uint64_t deadline_ms,
                               void (*cb)(void *arg), void *arg);

#endif /* H3G_TCP_LISTENER_H */
