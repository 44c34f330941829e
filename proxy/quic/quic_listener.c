/*
 * The QUIC listener: reads datagrams in batches, finds each one's
 * connection by destination connection ID, accepts new connections, and
 * once per loop iteration (a check handle, after all I/O callbacks of the
 * iteration ran) writes every connection that has output and flushes the
 * socket queue. When the socket buffer is full the queue waits for
 * UV_WRITABLE; nothing is dropped.
 */
#include "quic_listener.h"

#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>

#include <ngtcp2/ngtcp2.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <uv.h>

#include "log.h"
#include "metrics.h"
#include "quic_conn.h"
#include "udp_socket.h"

/*
 * recvmmsg batches per readable event. Reading until the socket is empty
 * would let a flood of datagrams starve everything else the loop does:
 * timers (loss recovery, pacing), upstream reads, and our own writes, which
 * carry the ACKs that slow the senders down. Four batches (up to 256
 * datagrams, more with GRO) keep one callback short; the socket stays
 * readable, so the rest is read in the next iteration.
 */
#define RX_BATCHES_PER_EVENT 4
/*
 * Stateless CONNECTION_REFUSED answers per second. Each costs an Initial
 * encryption, and some clients (libcurl 8.14) reconnect at once when
 * refused, thousands of times a second; past the budget, Initials are
 * dropped and those clients wait for their retransmission timer instead.
 */
#define REFUSALS_PER_SECOND 256
/*
 * CONNECTION_REFUSED answers per client source (IPv4 address, IPv6 /64)
 * per second. A client told "refused" may try again at once (libcurl
 * 8.14 takes it for a weird reply: one measured client made 1,479
 * attempts in 5.3 s against a draining gateway); past this many in a
 * second its Initials are dropped silently, and a client whose attempt
 * goes unanswered waits for its own timeout before it tries again.
 */
#define REFUSALS_PER_SOURCE 3
/* Stateless Resets sent per second at most: each answers one datagram of
 * an unknown connection, so an attacker must not turn us into a
 * reflector of unlimited volume. */
#define RESETS_PER_SECOND 256
/* A reset is kept at the size of a small short-header packet. */
#define RESET_MAX_LEN 43
/* How long a Retry token stays valid: one round trip plus slack. */
#define RETRY_TOKEN_LIFETIME (10 * NGTCP2_SECONDS)
/* Before the final GOAWAY, let a notice reach clients and requests they
 * sent meanwhile arrive: two round trips, within these bounds (ms). */
#define GOAWAY_DELAY_MIN_MS 20
#define GOAWAY_DELAY_MAX_MS 1000
/* Poll errors survived in a row (no datagram read in between) before the
 * socket counts as failed: an error that comes back at once, every time,
 * is not a one-off, and watching again would only spin. */
#define POLL_ERRORS_MAX 16

struct h3g_quic_listener {
  uv_loop_t *loop;
  const h3g_config *cfg;
  h3g_udp_socket sock;
  h3g_quic_env env;
  uv_poll_t poll;
  uv_check_t check;
  uv_timer_t goaway_timer;
  uv_timer_t deadline_timer;
  int tx_blocked; /* the socket is full: waiting for UV_WRITABLE */
  /* The socket failed for good (h3g_udp_socket.failed), and the listener
   * gave up its connections and stopped watching it. */
  int failed;
  unsigned poll_errors; /* one-off poll errors since the last datagram */
  void (*failure_cb)(void *arg, const char *why);
  void *failure_arg;
  uint64_t refusal_second;
  unsigned refusals;
  /* Refusals per source in refused_second (REFUSALS_PER_SOURCE); the
   * table starts empty each second. */
  h3g_source_map refused;
  uint64_t refused_second;
  uint8_t refused_key[16];
  uint64_t reset_second;
  unsigned resets;
  int shutting_down;
  int closing; /* handles are being closed */
  int open_handles;
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;
};

static void on_poll(uv_poll_t *h, int status, int events);

static void send_raw(h3g_quic_listener *l, const h3g_udp_msg *m,
                     const uint8_t *pkt, size_t len) {
  if (h3g_udp_tx_send(&l->sock, &m->local.su.sa, m->local.len, &m->remote.su.sa,
                      m->remote.len, 0, pkt, len) != 0)
    H3G_INC(quic_packets_dropped);
}

/* The smallest datagram that can carry a client's first Initial (RFC 9000
 * §14.1): only those may be answered with Version Negotiation. */
#define MIN_INITIAL_DATAGRAM 1200

/* A long header packet of a version we do not speak (RFC 9000 §6). */
static void send_version_negotiation(h3g_quic_listener *l, const h3g_udp_msg *m,
                                     const ngtcp2_version_cid *vc) {
  uint8_t buf[1024];
  uint64_t r = h3g_quic_env_random(&l->env);
  /* A reserved version first, so clients keep handling unknown ones
   * (RFC 9000 §15: 0x?a?a?a?a). */
  uint32_t versions[1 + H3G_MAX_QUIC_VERSIONS] = {
      ((uint32_t)(r >> 32) & 0xf0f0f0f0u) | 0x0a0a0a0au,
  };
  size_t nversions = 1 + l->cfg->nquic_versions;
  memcpy(versions + 1, l->cfg->quic_version,
         l->cfg->nquic_versions * sizeof(versions[0]));
  ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(
      buf, sizeof(buf), (uint8_t)r, vc->scid, vc->scidlen, vc->dcid,
      vc->dcidlen, versions, nversions);
  if (n < 0) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  H3G_INC(quic_version_negotiations);
  send_raw(l, m, buf, (size_t)n);
}

/*
 * A stateless CONNECTION_CLOSE with a transport error code, in an Initial
 * answering hd, so the client fails fast without us keeping state. Each
 * costs an Initial encryption: at most REFUSALS_PER_SECOND, past that the
 * Initial is only dropped.
 */
static void close_stateless(h3g_quic_listener *l, const h3g_udp_msg *m,
                            const ngtcp2_pkt_hd *hd, uint64_t error_code) {
  uint8_t buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
  uint64_t second = uv_now(l->loop) / 1000;
  if (second != l->refusal_second) {
    l->refusal_second = second;
    l->refusals = 0;
  }
  if (l->refusals++ >= REFUSALS_PER_SECOND)
    return;
  ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(
      buf, sizeof(buf), hd->version, &hd->scid, &hd->dcid, error_code, NULL,
      0);
  if (n > 0)
    send_raw(l, m, buf, (size_t)n);
}

/* Whether source sa may be told "refused" once more this second. */
static int refusal_allowed(h3g_quic_listener *l, const struct sockaddr *sa) {
  uint64_t second = uv_now(l->loop) / 1000;
  h3g_source_key k;
  if (second != l->refused_second || l->refused.slots == NULL) {
    h3g_source_map_free(&l->refused);
    if (h3g_source_map_init(&l->refused, l->refused_key) != 0)
      return 1; /* no memory to count with: the global budget still holds */
    l->refused_second = second;
  }
  if (h3g_source_key_of(&k, sa) != 0)
    return 1;
  if (h3g_source_map_get(&l->refused, &k) >= REFUSALS_PER_SOURCE)
    return 0;
  (void)h3g_source_map_inc(&l->refused, &k);
  return 1;
}

/* An Initial we will not serve (too many connections, shutting down):
 * CONNECTION_REFUSED, or silence for a source refused often already. */
static void refuse_connection(h3g_quic_listener *l, const h3g_udp_msg *m,
                              const ngtcp2_pkt_hd *hd) {
  H3G_INC(quic_connections_refused);
  if (!refusal_allowed(l, &m->remote.su.sa))
    return;
  close_stateless(l, m, hd, NGTCP2_CONNECTION_REFUSED);
}

/* Whether a new client must first prove its address with a Retry. */
static int need_retry(const h3g_quic_listener *l) {
  switch (l->cfg->retry) {
  case 1: return 1;
  case 2: return 0;
  default: return l->env.nhandshaking >= l->cfg->retry_threshold;
  }
}

/* Whether Retry may be sent at all (retry is not "never"). */
static int retry_allowed(const h3g_quic_listener *l) {
  return l->cfg->retry != 2;
}

/*
 * Answers an Initial with a Retry (RFC 9000 §8.1.2, §17.2.5): a fresh
 * source CID and a token sealing the client's address, the original
 * destination CID and the time. No state is kept; the packet is far
 * smaller than the Initial it answers, so nothing is amplified.
 */
static void send_retry(h3g_quic_listener *l, const h3g_udp_msg *m,
                       const ngtcp2_pkt_hd *hd) {
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2];
  uint8_t buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
  uint8_t raw[H3G_QUIC_SCIDLEN];
  ngtcp2_cid scid;
  if (getrandom(raw, sizeof(raw), GRND_NONBLOCK) != (ssize_t)sizeof(raw)) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  ngtcp2_cid_init(&scid, raw, sizeof(raw));
  ngtcp2_ssize tl = ngtcp2_crypto_generate_retry_token2(
      token, l->env.token_secret, sizeof(l->env.token_secret), hd->version,
      (const ngtcp2_sockaddr *)&m->remote.su.sa, m->remote.len, &scid,
      &hd->dcid, h3g_quic_token_now());
  if (tl < 0) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version,
                                             &hd->scid, &scid, &hd->dcid,
                                             token, (size_t)tl);
  if (n <= 0) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  H3G_INC(quic_retries_sent);
  send_raw(l, m, buf, (size_t)n);
}

/*
 * A Retry token that does not verify (forged, expired, or for another
 * address): RFC 9000 §8.1.3 asks for INVALID_TOKEN, so the client gives up
 * at once instead of retrying into a wall.
 */
static void refuse_token(h3g_quic_listener *l, const h3g_udp_msg *m,
                         const ngtcp2_pkt_hd *hd) {
  H3G_INC(quic_invalid_tokens);
  close_stateless(l, m, hd, NGTCP2_INVALID_TOKEN);
}

/*
 * A short header packet for a connection we do not know (we restarted, or
 * the connection is gone): answered with a Stateless Reset (RFC 9000
 * §10.3) so the peer stops at once instead of after its idle timeout. The
 * token comes from the per-process reset secret and the DCID, as the token
 * we announced for that CID did. The reset is shorter than the packet that
 * caused it (§10.3.3: two endpoints can then never loop) and no longer
 * than a small packet, so nothing is amplified; packets too short for that
 * get nothing.
 */
static void on_unknown_short_header(h3g_quic_listener *l, const h3g_udp_msg *m,
                                    const ngtcp2_version_cid *vc, size_t len) {
  size_t reset_len = H3G_MIN(len - 1, (size_t)RESET_MAX_LEN);
  if (len < 2 || reset_len < 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN +
                                   NGTCP2_STATELESS_RESET_TOKENLEN ||
      vc->dcidlen != H3G_QUIC_SCIDLEN) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  uint64_t second = uv_now(l->loop) / 1000;
  if (second != l->reset_second) {
    l->reset_second = second;
    l->resets = 0;
  }
  if (l->resets >= RESETS_PER_SECOND) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, vc->dcid, vc->dcidlen);
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
  uint8_t rand_bytes[RESET_MAX_LEN];
  uint8_t buf[RESET_MAX_LEN];
  if (ngtcp2_crypto_generate_stateless_reset_token(
          token, l->env.reset_secret, sizeof(l->env.reset_secret), &cid) !=
          0 ||
      getrandom(rand_bytes, sizeof(rand_bytes), GRND_NONBLOCK) !=
          (ssize_t)sizeof(rand_bytes)) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(
      buf, reset_len, token, rand_bytes, sizeof(rand_bytes));
  if (n <= 0) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  l->resets++;
  H3G_INC(quic_stateless_resets_sent);
  send_raw(l, m, buf, (size_t)n);
}

/*
 * Whether the packet hd (an Initial, or a 0-RTT packet that arrived first)
 * may create a connection (RFC 9000 §8.1). Returns 1 with *retry_odcid
 * (NULL or odcid) and *new_token set for h3g_quic_conn_accept; 0 when hd
 * was answered or dropped here.
 *
 * A token validates the client's address. A Retry token that does not
 * verify is refused with INVALID_TOKEN (it can only be forged, stale or
 * replayed from elsewhere). A NEW_TOKEN token that does not verify
 * (expired, issued to another address or under an earlier secret) counts
 * as no token (RFC 9000 §8.1.3): clients keep them for a long time, and
 * must not fail for it.
 *
 * Then two limits on handshakes in progress bound the state that clients
 * who never finish can make us hold:
 * - max_handshakes_per_source covers every handshake of one source
 *   (quic_conn.h). A source over it gets a Retry while its address is not
 *   validated (a spoofed source never returns the token, so spoofing cannot
 *   exhaust a real client's share), and CONNECTION_REFUSED, rate-limited,
 *   once it is: the address is real, and the client should fail fast
 *   rather than time out. With retry = never the Initial is dropped.
 * - max_unvalidated_handshakes covers the handshakes that no token
 *   validated, from all sources: over it, a Retry (validated clients still
 *   get in), or a drop with retry = never.
 * Otherwise the retry setting decides. A 0-RTT packet cannot carry a token
 * and is never answered with a Retry: it is dropped wherever an Initial
 * would need one, and the client's Initial gets the answer.
 */
static int admit(h3g_quic_listener *l, const h3g_udp_msg *m,
                 const ngtcp2_pkt_hd *hd, const ngtcp2_path *path,
                 ngtcp2_cid *odcid, const ngtcp2_cid **retry_odcid,
                 int *new_token) {
  const h3g_config *cfg = l->cfg;
  int initial = hd->type == NGTCP2_PKT_INITIAL;
  int validated = 0;

  *retry_odcid = NULL;
  *new_token = 0;
  if (initial && hd->tokenlen > 0 &&
      hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
    if (ngtcp2_crypto_verify_retry_token2(
            odcid, hd->token, hd->tokenlen, l->env.token_secret,
            sizeof(l->env.token_secret), hd->version, path->remote.addr,
            path->remote.addrlen, &hd->dcid, RETRY_TOKEN_LIFETIME,
            h3g_quic_token_now()) != 0) {
      refuse_token(l, m, hd);
      return 0;
    }
    *retry_odcid = odcid;
    validated = 1;
  } else if (initial && hd->tokenlen > 0 &&
             hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR) {
    uint8_t key[H3G_QUIC_TOKEN_KEY_LEN];
    h3g_quic_new_token_key(&l->env, hd->version, key);
    int ok = cfg->new_token_lifetime_ms > 0 &&
             ngtcp2_crypto_verify_regular_token(
                 hd->token, hd->tokenlen, key, sizeof(key), path->remote.addr,
                 path->remote.addrlen,
                 cfg->new_token_lifetime_ms * NGTCP2_MILLISECONDS,
                 h3g_quic_token_now()) == 0;
    explicit_bzero(key, sizeof(key));
    if (ok) {
      H3G_INC(quic_new_tokens_accepted);
      *new_token = 1;
      validated = 1;
    } else {
      H3G_INC(quic_new_tokens_rejected);
    }
  }

  h3g_source_key source;
  if (cfg->max_handshakes_per_source > 0 &&
      h3g_source_key_of(&source, path->remote.addr) == 0 &&
      h3g_source_map_get(&l->env.sources, &source) >=
          cfg->max_handshakes_per_source) {
    H3G_INC(quic_handshakes_capped_source);
    if (validated)
      refuse_connection(l, m, hd);
    else if (initial && retry_allowed(l))
      send_retry(l, m, hd);
    else
      H3G_INC(quic_packets_dropped);
    return 0;
  }
  if (validated)
    return 1;
  if (cfg->max_unvalidated_handshakes > 0 &&
      l->env.nunvalidated >= cfg->max_unvalidated_handshakes) {
    H3G_INC(quic_handshakes_capped_total);
    if (initial && retry_allowed(l))
      send_retry(l, m, hd);
    else
      H3G_INC(quic_packets_dropped);
    return 0;
  }
  if (need_retry(l)) {
    if (initial)
      send_retry(l, m, hd);
    else
      H3G_INC(quic_packets_dropped);
    return 0;
  }
  return 1;
}

static void handle_datagram(h3g_quic_listener *l, const h3g_udp_msg *m,
                            const uint8_t *data, size_t len) {
  ngtcp2_version_cid vc;
  /* An unknown version gets Version Negotiation only in a datagram big
   * enough to start a connection (RFC 9000 §6.1, §14.1); ngtcp2 checks the
   * size for versions it does not know (anything but v1 and v2), we for
   * those [listener] quic_versions leaves out. */
  int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, H3G_QUIC_SCIDLEN);
  int unserved = rv == 0 && vc.version != 0 &&
                 !h3g_quic_version_served(l->cfg, vc.version);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION ||
      (unserved && len >= MIN_INITIAL_DATAGRAM)) {
    send_version_negotiation(l, m, &vc);
    return;
  }
  if (rv != 0 || unserved) {
    H3G_INC(quic_packets_dropped);
    return;
  }

  ngtcp2_path path = {
      .local = {.addr = (ngtcp2_sockaddr *)&m->local.su.sa,
                .addrlen = m->local.len},
      .remote = {.addr = (ngtcp2_sockaddr *)&m->remote.su.sa,
                 .addrlen = m->remote.len},
  };
  ngtcp2_pkt_info pi = {.ecn = m->ecn};

  h3g_quic_conn *c = h3g_cid_map_get(&l->env.cids, vc.dcid, vc.dcidlen);
  if (c != NULL) {
    h3g_quic_conn_recv(c, &path, &pi, data, len);
    return;
  }
  if (!(data[0] & 0x80)) {
    on_unknown_short_header(l, m, &vc, len);
    return;
  }

  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, data, len) != 0) {
    /* Not an Initial that can start a connection (a late Handshake or
     * 0-RTT packet of a connection that is gone, or garbage). */
    H3G_INC(quic_packets_dropped);
    return;
  }
  if (l->shutting_down || l->env.nconns >= l->cfg->max_connections) {
    refuse_connection(l, m, &hd);
    return;
  }
  ngtcp2_cid odcid;
  const ngtcp2_cid *retry_odcid;
  int new_token;
  if (!admit(l, m, &hd, &path, &odcid, &retry_odcid, &new_token))
    return;
  if (h3g_quic_conn_accept(&l->env, &hd, &path, retry_odcid, new_token, &c) !=
      0) {
    H3G_INC(quic_packets_dropped);
    return;
  }
  h3g_quic_conn_recv(c, &path, &pi, data, len);
}

static void read_datagrams(h3g_quic_listener *l) {
  for (int batch = 0; batch < RX_BATCHES_PER_EVENT; batch++) {
    int n = h3g_udp_recv(&l->sock);
    if (n <= 0)
      return;
    l->poll_errors = 0;
    H3G_INC(quic_recv_batches);
    for (int i = 0; i < n; i++) {
      const h3g_udp_msg *m = &l->sock.rx_msgs[i];
      for (size_t off = 0; off < m->len; off += m->segsize) {
        H3G_INC(quic_datagrams_received);
        handle_datagram(l, m, m->data + off, H3G_MIN(m->segsize, m->len - off));
      }
    }
    if ((size_t)n < l->sock.rx_count)
      return; /* the socket is (almost certainly) empty */
  }
}

/* UV_DISCONNECT: a UDP socket "hangs up" only when shut down for reading
 * (it then stays readable forever with nothing to read). */
static int poll_events(const h3g_quic_listener *l) {
  return UV_READABLE | UV_DISCONNECT | (l->tx_blocked ? UV_WRITABLE : 0);
}

static void set_blocked(h3g_quic_listener *l, int blocked) {
  if (l->tx_blocked == blocked || l->closing || l->failed || l->sock.failed)
    return;
  l->tx_blocked = blocked;
  uv_poll_start(&l->poll, poll_events(l), on_poll);
}

/*
 * The socket is dead for good: nothing can be sent or received on it, so
 * every QUIC connection is given up at once (their requests' upstream
 * connections are closed instead of waiting for idle timeouts), the socket
 * is no longer watched (a shut-down socket would wake the loop forever),
 * and the owner is told, once, so that HTTP/3 stops being advertised and
 * health checks say why. The listener stays until shutdown closes it.
 */
static void listener_fail(h3g_quic_listener *l) {
  if (l->failed)
    return;
  l->failed = 1;
  l->tx_blocked = 0;
  uv_poll_stop(&l->poll);
  h3g_stats.quic_socket_failed = 1;
  h3g_error("quic: the UDP socket failed (%s): HTTP/3 is no longer served; "
            "QUIC connections dropped: %zu",
            l->sock.failure, l->env.nconns);
  h3g_quic_env_abandon(&l->env);
  (void)h3g_udp_tx_flush(&l->sock); /* drops what the closes queued */
  h3g_quic_env_reap(&l->env);
  if (l->failure_cb != NULL)
    l->failure_cb(l->failure_arg, l->sock.failure);
}

/* Found from inside I/O: stop watching now, give up the connections from
 * the check handle (not from inside a connection's own callbacks). */
static void listener_fail_soon(h3g_quic_listener *l) {
  uv_poll_stop(&l->poll);
  h3g_quic_env_wake(&l->env);
}

static void on_handle_closed(uv_handle_t *h) {
  h3g_quic_listener *l = h->data;
  if (--l->open_handles > 0)
    return;
  void (*cb)(void *) = l->shutdown_cb;
  void *arg = l->shutdown_arg;
  h3g_quic_env_free(&l->env);
  h3g_source_map_free(&l->refused);
  h3g_udp_close(&l->sock);
  free(l);
  if (cb != NULL)
    cb(arg);
}

/* During shutdown: once every connection is gone, close the handles; the
 * last close callback frees the listener and reports. */
static void maybe_finish(h3g_quic_listener *l) {
  if (!l->shutting_down || l->closing || l->env.nconns > 0 ||
      l->env.nfreeing > 0)
    return;
  (void)h3g_udp_tx_flush(&l->sock); /* the last CONNECTION_CLOSE packets */
  l->closing = 1;
  uv_poll_stop(&l->poll);
  l->open_handles = 6;
  uv_close((uv_handle_t *)&l->poll, on_handle_closed);
  uv_close((uv_handle_t *)&l->check, on_handle_closed);
  uv_close((uv_handle_t *)&l->env.idle, on_handle_closed);
  l->env.timer_poll.data = l;
  uv_close((uv_handle_t *)&l->env.timer_poll, on_handle_closed);
  uv_close((uv_handle_t *)&l->goaway_timer, on_handle_closed);
  uv_close((uv_handle_t *)&l->deadline_timer, on_handle_closed);
  h3g_debug("quic: listener closed");
}

static void on_poll(uv_poll_t *h, int status, int events) {
  h3g_quic_listener *l = h->data;
  if (l->failed)
    return;
  if (status < 0) {
    /* The socket reported an error (POLLERR) and libuv stopped watching
     * it: a one-off is cleared and the socket watched again; left
     * stopped, the listener would go deaf without a word. */
    if (h3g_udp_clear_error(&l->sock) == 0 &&
        ++l->poll_errors <= POLL_ERRORS_MAX) {
      uv_poll_start(&l->poll, poll_events(l), on_poll);
      return;
    }
    h3g_udp_fail(&l->sock, "the socket keeps reporting errors");
    listener_fail_soon(l);
    return;
  }
  if (events & UV_DISCONNECT) {
    h3g_udp_fail(&l->sock, "shut down");
    listener_fail_soon(l);
    return;
  }
  if ((events & UV_WRITABLE) && h3g_udp_tx_flush(&l->sock) == 0)
    set_blocked(l, 0); /* the check handle resumes the connections */
  if (events & UV_READABLE)
    read_datagrams(l);
  if (l->sock.failed)
    listener_fail_soon(l);
}

/* Once per loop iteration, after the I/O callbacks: write, flush, reap. */
static void on_check(uv_check_t *h) {
  h3g_quic_listener *l = h->data;

  if (!l->failed && !l->tx_blocked &&
      (h3g_quic_env_flush(&l->env) == H3G_ERR_AGAIN ||
       h3g_udp_tx_flush(&l->sock) == H3G_ERR_AGAIN))
    set_blocked(l, 1);
  if (l->sock.failed)
    listener_fail(l);
  h3g_quic_env_reap(&l->env);
  /* Keep the loop from blocking only while there is work we can do. */
  if (l->tx_blocked || l->failed || h3g_quic_env_quiet(&l->env))
    uv_idle_stop(&l->env.idle);
  maybe_finish(l);
}

int h3g_quic_listener_new(h3g_quic_listener **pl, void *loop,
                          const h3g_config *cfg, h3g_tls_ctx *tls,
                          const struct h3g_secrets *secrets,
                          const h3g_bridge_env *bridge_env) {
  char addr[80];
  int rv;

  *pl = NULL;
  h3g_quic_listener *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return H3G_ERR_NOMEM;
  l->loop = loop;
  l->cfg = cfg;
  if (h3g_random_bytes(l->refused_key, sizeof(l->refused_key)) != 0) {
    free(l);
    return H3G_ERR_IO;
  }

  rv = h3g_udp_open(&l->sock, cfg->listen_address,
                    h3g_bind_port(cfg->listen_port));
  if (rv != 0) {
    free(l);
    return rv == H3G_ERR_NOMEM ? H3G_ERR_NOMEM : H3G_ERR_IO;
  }
  l->env = (h3g_quic_env){
      .loop = loop,
      .cfg = cfg,
      .ssl_ctx = h3g_tls_ctx_native(tls),
      .secrets = secrets,
      .bridge_env = bridge_env,
      .sock = &l->sock,
  };
  rv = h3g_quic_env_init(&l->env);
  if (rv != 0) {
    h3g_udp_close(&l->sock);
    free(l);
    return rv == H3G_ERR_NOMEM ? H3G_ERR_NOMEM : H3G_ERR_IO;
  }
  l->env.idle.data = l;

  uv_poll_init(loop, &l->poll, l->sock.fd);
  l->poll.data = l;
  uv_check_init(loop, &l->check);
  l->check.data = l;
  uv_timer_init(loop, &l->goaway_timer);
  l->goaway_timer.data = l;
  uv_timer_init(loop, &l->deadline_timer);
  l->deadline_timer.data = l;
  uv_poll_start(&l->poll, poll_events(l), on_poll);
  uv_check_start(&l->check, on_check);

  h3g_udp_addr_format(&l->sock.bound.su.sa, addr, sizeof(addr));
  h3g_info("listening on udp %s", addr);
  *pl = l;
  return 0;
}

void h3g_quic_listener_on_failure(h3g_quic_listener *l,
                                  void (*cb)(void *arg, const char *why),
                                  void *arg) {
  l->failure_cb = cb;
  l->failure_arg = arg;
}

uint16_t h3g_quic_listener_port(const h3g_quic_listener *l) {
  return h3g_sockaddr_port(&l->sock.bound.su.sa);
}

static void on_goaway_timer(uv_timer_t *t) {
  h3g_quic_listener *l = t->data;
  h3g_quic_env_shutdown_goaway(&l->env);
}

static void on_deadline_timer(uv_timer_t *t) {
  h3g_quic_listener *l = t->data;
  if (l->env.nconns > 0)
    h3g_info("quic: shutdown deadline: closing %zu connections", l->env.nconns);
  h3g_quic_env_abandon(&l->env);
  (void)h3g_udp_tx_flush(&l->sock);
  h3g_quic_env_reap(&l->env);
  maybe_finish(l);
}

void h3g_quic_listener_set_tls(h3g_quic_listener *l, h3g_tls_ctx *tls) {
  l->env.ssl_ctx = h3g_tls_ctx_native(tls);
}

void h3g_quic_listener_expire(h3g_quic_listener *l) {
  if (l->shutting_down && !l->closing)
    uv_timer_start(&l->deadline_timer, on_deadline_timer, 0, 0);
}

void h3g_quic_listener_shutdown(h3g_quic_listener *l, uint64_t deadline_ms,
                                void (*cb)(void *arg), void *arg) {
  if (l->shutting_down)
    return;
  l->shutting_down = 1;
  l->shutdown_cb = cb;
  l->shutdown_arg = arg;

  h3g_quic_env_shutdown_notice(&l->env);
  uint64_t delay = 2 * h3g_quic_env_max_rtt(&l->env) / 1000000;
  delay = H3G_MAX(delay, (uint64_t)GOAWAY_DELAY_MIN_MS);
  delay = H3G_MIN(delay, (uint64_t)GOAWAY_DELAY_MAX_MS);
  uv_timer_start(&l->goaway_timer, on_goaway_timer, delay, 0);
  uv_timer_start(&l->deadline_timer, on_deadline_timer, deadline_ms, 0);
  /* Let the check handle run soon (and finish at once when idle). */
  h3g_quic_env_wake(&l->env);
}

void h3g_quic_versions(char *buf, size_t cap) {
  snprintf(buf, cap, "ngtcp2 %s, nghttp3 %s", ngtcp2_version(0)->version_str,
           nghttp3_version(0)->version_str);
}
