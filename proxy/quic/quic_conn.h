/*
 * One QUIC server connection (ngtcp2 + a wolfSSL session) and the state all
 * connections of a listener share (h3g_quic_env).
 *
 * Life cycle, driven by one transition function in quic_conn.c:
 *
 *   HANDSHAKING -> ESTABLISHED -> CLOSING  -> DEAD
 *        |              |     \-> DRAINING -> DEAD
 *        \--------------+-------------------> DEAD
 *
 * CLOSING: we sent CONNECTION_CLOSE and answer further packets with the same
 * packet (exponentially less often) for three PTOs. DRAINING: the peer
 * closed; we stay silent for three PTOs. DEAD: unmapped from the CID table,
 * freed by the next h3g_quic_env_reap(). Idle and handshake timeouts go
 * straight to DEAD (silently, RFC 9000 §10.1). The HTTP/3 session and its
 * bridges are freed on entering CLOSING, DRAINING or DEAD.
 *
 * Nothing here writes packets from inside an ngtcp2 or nghttp3 callback or
 * frees a connection from one: events mark the connection dirty (or
 * "close pending"), and h3g_quic_env_flush() writes all dirty connections
 * once per loop iteration, so that output caused by many events (reads,
 * upstream data, timers) leaves in as few packets and system calls as
 * possible.
 */
#ifndef H3G_QUIC_CONN_H
#define H3G_QUIC_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <ngtcp2/ngtcp2.h>
#include <uv.h>

#include "cid_map.h"
#include "config.h"
#include "source_map.h"
#include "stream_bridge.h"
#include "timer_heap.h"
#include "udp_socket.h"

/* Length of the connection IDs we issue. */
#define H3G_QUIC_SCIDLEN 18

typedef struct h3g_quic_conn h3g_quic_conn;

/*
 * The QUIC versions served are [listener] quic_versions (cfg->quic_version,
 * preferred first), among v1 (RFC 9000) and v2 (RFC 9369), exactly
 * ngtcp2's. Others get Version Negotiation listing these; they are also
 * the available_versions of our version_information transport parameter,
 * and a client that starts in one and offers another in its own is moved
 * to the one we prefer during the handshake (compatible version
 * negotiation, RFC 9368). Returns whether version is served.
 */
int h3g_quic_version_served(const h3g_config *cfg, uint32_t version);

/* What every connection of one listener shares; owned by the listener. */
typedef struct h3g_quic_env {
  uv_loop_t *loop;
  const h3g_config *cfg;
  void *ssl_ctx; /* WOLFSSL_CTX * */
  const h3g_bridge_env *bridge_env;
  h3g_udp_socket *sock;
  h3g_cid_map cids;
  /* Derived from the listener's secrets (secrets.h) when set, else
   * random: shared by instances with the same secrets file. */
  const struct h3g_secrets *secrets;
  uint8_t reset_secret[32]; /* stateless reset tokens */
  uint8_t token_secret[32]; /* Retry and NEW_TOKEN tokens */
  size_t nhandshaking;      /* connections not yet past the handshake */
  /* Of those, the ones whose client's address no token validated, and
   * how many each source has ([listener] max_unvalidated_handshakes and
   * max_handshakes_per_source; sources are counted only when that limit
   * is on). */
  size_t nunvalidated;
  h3g_source_map sources;
  uint64_t prng;            /* ngtcp2's non-cryptographic randomness */
  /* Active while connections are dirty or dead, so that the loop does not
   * block in poll before the flush (the flush runs in a check handle). */
  uv_idle_t idle;
  h3g_quic_conn *conns; /* every connection not yet freed */
  size_t nconns;
  size_t nfreeing; /* freed connections whose timer is still closing */
  h3g_quic_conn *dirty_head, *dirty_tail;
  size_t ndirty;
  h3g_quic_conn *dead;
  int shutting_down;
  /* Every connection's next ngtcp2 deadline (loss detection, ACK delay,
   * idle, pacing), and a timerfd the loop sleeps on until the earliest,
   * with sub-millisecond precision (timer_heap.h says why). */
  h3g_theap timers;
  int timer_fd;
  uv_poll_t timer_poll; /* closed by the owner, like idle */
  uint64_t timer_armed; /* the deadline timer_fd is set to, 0: disarmed */
} h3g_quic_env;

/*
 * Prepares env (loop, cfg, ssl_ctx, bridge_env, sock must be set by the
 * caller first): the CID table, secrets, the idle handle and the timer
 * poll handle. Returns 0, H3G_ERR_NOMEM or H3G_ERR_IO (no randomness).
 */
int h3g_quic_env_init(h3g_quic_env *env);

/* Releases the CID table and the timerfd. Every connection must be freed;
 * the idle and timer_poll handles are closed by the owner. */
void h3g_quic_env_free(h3g_quic_env *env);

/*
 * Writes every dirty connection (each at most once, up to a packet cap) into
 * the socket's queue. Returns 0, or H3G_ERR_AGAIN when the socket is full:
 * the remaining connections stay dirty; call again once it is writable.
 */
int h3g_quic_env_flush(h3g_quic_env *env);

/* Frees dead connections. Call from the loop, outside any callback of
 * ngtcp2, nghttp3 or the bridge. */
void h3g_quic_env_reap(h3g_quic_env *env);

/* Makes the loop run the flush soon (starts the idle handle). */
void h3g_quic_env_wake(h3g_quic_env *env);

/* A non-cryptographic random number. */
uint64_t h3g_quic_env_random(h3g_quic_env *env);

/* The clock of address tokens, Retry and NEW_TOKEN (nanoseconds):
 * wall-clock time, unlike every other ngtcp2 timestamp, because a token
 * outlives the process that issued it whenever the token secret does (a
 * secrets file shared by restarts or by several instances: the instance
 * that checks a Retry token may not be the one that made it). */
uint64_t h3g_quic_token_now(void);

/*
 * The key NEW_TOKEN tokens of QUIC version `version` are sealed and
 * checked with: the token secret and the version, so that a token issued
 * on a v1 connection never validates a v2 one or the other way round (RFC
 * 9369 §3.3). Retry tokens carry their version already.
 */
#define H3G_QUIC_TOKEN_KEY_LEN 36
void h3g_quic_new_token_key(const h3g_quic_env *env, uint32_t version,
                            uint8_t out[H3G_QUIC_TOKEN_KEY_LEN]);

/* 1 when no connection is dirty or dead. */
int h3g_quic_env_quiet(const h3g_quic_env *env);

/* Graceful shutdown of every connection (see quic_listener.h): a GOAWAY
 * notice (connections still in the handshake are closed), later the final
 * GOAWAY, at the deadline CONNECTION_CLOSE and immediate release. */
void h3g_quic_env_shutdown_notice(h3g_quic_env *env);
void h3g_quic_env_shutdown_goaway(h3g_quic_env *env);
void h3g_quic_env_abandon(h3g_quic_env *env);

/* The largest smoothed RTT of the established connections (ns), 0 if none. */
uint64_t h3g_quic_env_max_rtt(const h3g_quic_env *env);

/*
 * Creates a connection for a client Initial hd (from ngtcp2_accept) that
 * arrived on path, and maps its connection IDs. Returns 0, H3G_ERR_NOMEM,
 * H3G_ERR_TLS or H3G_ERR_QUIC.
 *
 * retry_odcid: NULL, or the original destination CID a valid Retry token
 * vouched for (the client's address is then validated and hd->dcid is the
 * Retry's source CID). new_token: 1 when hd's token is a NEW_TOKEN token
 * that verified (the address is validated too), else 0. The token of a
 * validated address is handed to ngtcp2, which then lifts the
 * anti-amplification limit. Until its handshake ends the connection counts
 * in env->nhandshaking, its source's count in env->sources (when
 * max_handshakes_per_source is on), and env->nunvalidated when no token
 * validated its address.
 */
int h3g_quic_conn_accept(h3g_quic_env *env, const ngtcp2_pkt_hd *hd,
                         const ngtcp2_path *path, const ngtcp2_cid *retry_odcid,
                         int new_token, h3g_quic_conn **pc);

/* Feeds one datagram. Never frees c (it may become dead). */
void h3g_quic_conn_recv(h3g_quic_conn *c, const ngtcp2_path *path,
                        const ngtcp2_pkt_info *pi, const uint8_t *data,
                        size_t len);

/* c has output to write at the next flush. */
void h3g_quic_conn_mark_dirty(h3g_quic_conn *c);

/* A fatal HTTP/3 error: c is closed with app_error_code at the next flush. */
void h3g_quic_conn_fail(h3g_quic_conn *c, uint64_t app_error_code);

#endif /* H3G_QUIC_CONN_H */
