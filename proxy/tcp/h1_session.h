/*
 * HTTP/1.1 server side of one TCP (+ TLS) connection: requests parsed by
 * h1_codec's request parser are mapped onto the stream bridge exactly like
 * HTTP/3 requests (pseudo fields, lowercase names, connection-specific
 * fields dropped), and the bridge's responses are written back as
 * HTTP/1.1 (h3g_frontend_ops). One request at a time: pipelined requests
 * wait, unread, until the previous response was written.
 *
 * In redirect mode (env->redirect_port != 0) no bridge is involved: every
 * request is answered 308 to https://<host>[:port]<path-and-query>.
 *
 * The session does no I/O: it writes plaintext through h3g_h1_transport
 * ops and is fed plaintext by its owner (the TCP listener), so a test can
 * drive it with fakes. It never frees itself; the owner frees it after the
 * transport closed (close() only asks for that).
 */
#ifndef H3G_H1_SESSION_H
#define H3G_H1_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "alt_svc.h"
#include "config.h"
#include "stream_bridge.h"

/* What the session needs from its connection. t is the owner's object. */
typedef struct h3g_h1_transport_ops {
  /* Plaintext bytes write() takes now without going over the output's soft
   * limit; body bytes are written only within it, heads always. */
  size_t (*room)(void *t);
  /* Queues len bytes for the client (encrypted and copied at once). Returns
   * 0, H3G_ERR_CLOSED, or H3G_ERR_TOOBIG (the output's hard cap: the owner
   * closes the connection). */
  int (*write)(void *t, const uint8_t *data, size_t len);
  /* Asks for h3g_h1_session_process() (and another delivery of unread
   * bytes) from the event loop, outside the current call stack. */
  void (*kick)(void *t);
  /* Arms the connection's one timer (ms > 0) or stops it (0); on expiry
   * the owner calls h3g_h1_session_on_timer(). */
  void (*set_timer)(void *t, uint64_t ms);
  /* Closes the connection: graceful 1 after the queued output was sent,
   * 0 at once. The session is freed later by the owner. */
  void (*close)(void *t, int graceful);
  /* The kernel's smoothed RTT of the connection (ns), 0 if unknown. */
  uint64_t (*rtt_ns)(void *t);
} h3g_h1_transport_ops;

/* What every session of one listener shares. */
typedef struct h3g_h1_env {
  const h3g_config *cfg;
  const h3g_bridge_env *bridge_env; /* unused in redirect mode */
  const h3g_alt_svc *alt_svc;       /* NULL: no Alt-Svc */
  uint16_t redirect_port;           /* != 0: redirect mode, the HTTPS port */
} h3g_h1_env;

typedef struct h3g_h1_session h3g_h1_session;

/* Creates the session of a connection whose handshake completed (client
 * is "ip:port", copied). Arms the idle timer. Returns 0 or H3G_ERR_NOMEM. */
int h3g_h1_session_new(h3g_h1_session **ps, const h3g_h1_env *env,
                       const h3g_h1_transport_ops *tops, void *t,
                       const char *client);

/* Cuts any exchange in flight (the upstream connection is not reused when
 * a request or response was incomplete), frees s. NULL is a no-op. */
void h3g_h1_session_free(h3g_h1_session *s);

/*
 * Plaintext from the client. Returns how many bytes were used; fewer than
 * len means "not now" (a pipelined request, or the request body window is
 * full): the owner keeps the rest, stops reading, and offers it again after
 * a kick.
 */
size_t h3g_h1_session_recv(h3g_h1_session *s, const uint8_t *data, size_t len);

/* The client closed its side (or sent close_notify). */
void h3g_h1_session_eof(h3g_h1_session *s);

/* Deferred work (after kick): response body, finishing an exchange. Also
 * called by the owner when the output drained below its soft limit. */
void h3g_h1_session_process(h3g_h1_session *s);

/* The timer set with set_timer expired. */
void h3g_h1_session_on_timer(h3g_h1_session *s);

/* Graceful shutdown: an idle connection closes now; otherwise the response
 * in flight says "Connection: close" (if its head is not sent yet) and the
 * connection closes after it. */
void h3g_h1_session_shutdown(h3g_h1_session *s);

/* The shutdown deadline passed: the exchange still open, if any, is cut
 * and logged as "shutdown". The session is freed next. */
void h3g_h1_session_expire(h3g_h1_session *s);

#endif /* H3G_H1_SESSION_H */
