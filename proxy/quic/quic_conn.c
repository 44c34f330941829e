/*
 * One QUIC server connection. See quic_conn.h for the life cycle.
 *
 * Output is produced only by conn_write(), called from
 * h3g_quic_env_flush() once per loop iteration. ngtcp2 forbids writing from
 * its callbacks, and batching the output of all events of one iteration
 * fills packets better and lets equal-sized packets leave as one GSO send.
 */
#include "quic_conn.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* wolfSSL headers need their build options first and quic.h after ssl.h. */
#include <wolfssl/options.h>

#include <wolfssl/ssl.h>

#include <wolfssl/quic.h>

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "h3_session.h"
#include "quic_ticket.h"
#include "log.h"
#include "metrics.h"
#include "secrets.h"

/*
 * Packets one connection may write per flush. A connection with a large
 * response must not fill the socket queue while other connections wait for
 * their turn: past this cap it goes to the back of the dirty list and
 * continues in the next loop iteration. The pacing quantum (64 KiB, about
 * 44 full packets) usually ends a round first.
 */
#define MAX_PKTS_PER_WRITE 64
/*
 * Packets sent back to back before pacing waits (with the precise timer).
 * ngtcp2's send quantum is about a millisecond of the pacing rate, up to
 * 64 KiB: 45 full packets in one burst at line rate, which a shallow
 * bottleneck queue or a client's socket buffer drops from (and BBR then
 * reads as congestion). Ten is still one GSO send.
 */
#define PACING_BURST_PKTS 10
/*
 * Below this round-trip time (loopback, a LAN, a data centre) there is no
 * slow, shallow bottleneck for a burst to overflow, and the cap would only
 * multiply wake-ups: ngtcp2's own quantum applies, as Linux's TCP sizes its
 * bursts (about a millisecond of the pacing rate, up to 64 KiB).
 */
#define PACING_BURST_MIN_RTT_NS (2 * 1000 * 1000)
/* Expired deadlines handled per timerfd wake-up before yielding. */
#define TIMER_BATCH 256
#define UNI_STREAM_WINDOW (64 * 1024)
#define ACTIVE_CID_LIMIT 8
/* TLS alert no_application_protocol (RFC 8446 §6). */
#define TLS_ALERT_NO_APPLICATION_PROTOCOL 120
/* wolfSSL's codepoint of the quic_transport_parameters extension of
 * RFC 9001 (not the draft codepoint). */
#define QUIC_TP_EXTENSION_V1 0x39

_Static_assert(sizeof(nghttp3_vec) == sizeof(ngtcp2_vec) &&
                   offsetof(nghttp3_vec, base) == offsetof(ngtcp2_vec, base) &&
                   offsetof(nghttp3_vec, len) == offsetof(ngtcp2_vec, len),
               "nghttp3_vec and ngtcp2_vec must have the same layout");

typedef enum conn_state {
  CONN_HANDSHAKING = 0,
  CONN_ESTABLISHED,
  CONN_CLOSING,
  CONN_DRAINING,
  CONN_DEAD,
} conn_state;

/* The TLS handshake bytes of one encryption level, as far as they were
 * handed on: a message header cut short by the end of what arrived waits
 * in hold for the rest (see on_recv_crypto_data). */
typedef struct {
  uint8_t hold[3];
  uint8_t holdlen;
  uint32_t left; /* bytes still due of the message in progress */
} crypto_in;

struct h3g_quic_conn {
  h3g_quic_env *env;
  conn_state state;
  ngtcp2_conn *conn;
  WOLFSSL *ssl;
  ngtcp2_crypto_conn_ref conn_ref;
  h3g_h3_session *h3;
  uv_timer_t timer;      /* the closing period; ngtcp2 deadlines when the
                          * heap had no room */
  h3g_theap_node tnode;  /* the next ngtcp2 deadline in env->timers */

  ngtcp2_ccerr ccerr;
  unsigned ccerr_set : 1;
  unsigned close_pending : 1; /* close with ccerr at the next write */
  /* Streams whose lone FIN nghttp3 handed out but ngtcp2 did not take
   * (pacing or congestion said "not now"). nghttp3 never offers such a FIN
   * again, so we offer it ourselves until it is sent. */
  int64_t *fin_q;
  size_t fin_n, fin_cap;
  FILE *qlog; /* [debug] qlog_dir: this connection's JSON-SEQ trace */
  unsigned in_dirty : 1;
  unsigned alpn_checked : 1;
  unsigned goaway_sent : 1;
  crypto_in crypto_in[4]; /* per encryption level */

  /* CLOSING: the CONNECTION_CLOSE packet, repeated on incoming packets. */
  uint8_t *close_pkt;
  size_t close_len;
  h3g_udp_addr close_local, close_remote;
  uint64_t close_rx;

  ngtcp2_cid scid;  /* the first connection ID we issued */
  ngtcp2_cid odcid; /* the client's original destination connection ID */
  /* odcid's first bytes in hex, for the access log: the ID the client
   * chose, which qlog traces (ours, qlog_dir, and the client's) are named
   * after; it is at least 8 bytes long (RFC 9000 §7.2). */
  char odcid_hex[H3G_ACCESS_CID_LEN + 1];
  char client[64];  /* "ip:port" */
  /* While HANDSHAKING: counted in env->sources under source, and in
   * env->nunvalidated when no token validated the client's address. */
  h3g_source_key source;
  unsigned source_counted : 1;
  unsigned unvalidated : 1;

  h3g_quic_conn *prev, *next; /* env->conns */
  h3g_quic_conn *dirty_prev, *dirty_next;
  h3g_quic_conn *dead_next;
};

static void on_timer(uv_timer_t *t);
static void on_close_timer(uv_timer_t *t);
static void conn_expire(h3g_quic_conn *c);
static void on_timer_fd(uv_poll_t *p, int status, int events);
static void conn_set_state(h3g_quic_conn *c, conn_state next);

/* ---- randomness ---- */

static uint64_t prng_next(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dull;
}

/* ngtcp2 uses this only where unpredictability does not matter (RFC 9000
 * §17.3.1 "unused" bits and the like), so a fast generator will do. */
static void on_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  h3g_quic_env *env = ctx->native_handle;
  while (len > 0) {
    uint64_t v = prng_next(&env->prng);
    size_t n = H3G_MIN(len, sizeof(v));
    memcpy(dest, &v, n);
    dest += n;
    len -= n;
  }
}

/* ---- env: lists ---- */

static void on_idle(uv_idle_t *idle) {
  H3G_UNUSED(idle);
}

void h3g_quic_env_wake(h3g_quic_env *env) {
  if (!uv_is_active((uv_handle_t *)&env->idle))
    uv_idle_start(&env->idle, on_idle);
}

uint64_t h3g_quic_env_random(h3g_quic_env *env) {
  return prng_next(&env->prng);
}

uint64_t h3g_quic_token_now(void) {
  return h3g_wall_us() * 1000;
}

static void dirty_remove(h3g_quic_env *env, h3g_quic_conn *c) {
  if (!c->in_dirty)
    return;
  if (c->dirty_prev != NULL)
    c->dirty_prev->dirty_next = c->dirty_next;
  else
    env->dirty_head = c->dirty_next;
  if (c->dirty_next != NULL)
    c->dirty_next->dirty_prev = c->dirty_prev;
  else
    env->dirty_tail = c->dirty_prev;
  c->dirty_prev = c->dirty_next = NULL;
  c->in_dirty = 0;
  env->ndirty--;
}

static void dirty_push(h3g_quic_env *env, h3g_quic_conn *c, int front) {
  assert(!c->in_dirty);
  c->in_dirty = 1;
  env->ndirty++;
  if (front) {
    c->dirty_prev = NULL;
    c->dirty_next = env->dirty_head;
    if (env->dirty_head != NULL)
      env->dirty_head->dirty_prev = c;
    else
      env->dirty_tail = c;
    env->dirty_head = c;
  } else {
    c->dirty_next = NULL;
    c->dirty_prev = env->dirty_tail;
    if (env->dirty_tail != NULL)
      env->dirty_tail->dirty_next = c;
    else
      env->dirty_head = c;
    env->dirty_tail = c;
  }
  h3g_quic_env_wake(env);
}

void h3g_quic_conn_mark_dirty(h3g_quic_conn *c) {
  if (c->in_dirty || c->state >= CONN_CLOSING)
    return;
  dirty_push(c->env, c, 0);
}

int h3g_quic_env_quiet(const h3g_quic_env *env) {
  return env->dirty_head == NULL && env->dead == NULL;
}

/* ---- connection IDs ---- */

static int map_cid(h3g_quic_conn *c, const ngtcp2_cid *cid) {
  return h3g_cid_map_put(&c->env->cids, cid->data, cid->datalen, c);
}

static int new_cid(h3g_quic_env *env, ngtcp2_cid *cid, size_t len) {
  cid->datalen = len;
  for (int tries = 0; tries < 8; tries++) {
    if (h3g_random_bytes(cid->data, len) != 0)
      return H3G_ERR_IO;
    if (h3g_cid_map_get(&env->cids, cid->data, len) == NULL)
      return 0;
  }
  return H3G_ERR_IO;
}

static void unmap_cids(h3g_quic_conn *c) {
  h3g_cid_map *m = &c->env->cids;

  h3g_cid_map_remove(m, c->scid.data, c->scid.datalen, c);
  h3g_cid_map_remove(m, c->odcid.data, c->odcid.datalen, c);
  if (c->conn == NULL)
    return;

  ngtcp2_cid local[16];
  ngtcp2_cid *cids = local;
  size_t n = ngtcp2_conn_get_scid(c->conn, NULL);
  if (n > H3G_ARRAY_LEN(local)) {
    cids = malloc(n * sizeof(*cids));
    if (cids == NULL) {
      /* Cannot list them: remove every entry that points at c. */
      for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].value == c) {
          h3g_cid_map_remove(m, m->slots[i].cid, m->slots[i].len, c);
          i = (size_t)-1; /* the table shifted: rescan */
        }
      }
      return;
    }
  }
  n = ngtcp2_conn_get_scid(c->conn, cids);
  for (size_t i = 0; i < n; i++)
    h3g_cid_map_remove(m, cids[i].data, cids[i].datalen, c);
  if (cids != local)
    free(cids);
}

/* ---- errors and closing ---- */

static void conn_set_ccerr_liberr(h3g_quic_conn *c, int liberr) {
  if (c->ccerr_set)
    return;
  if (liberr == NGTCP2_ERR_CRYPTO)
    ngtcp2_ccerr_set_tls_alert(&c->ccerr, ngtcp2_conn_get_tls_alert(c->conn),
                               NULL, 0);
  else
    ngtcp2_ccerr_set_liberr(&c->ccerr, liberr, NULL, 0);
  c->ccerr_set = 1;
}

static void conn_set_app_error(h3g_quic_conn *c, uint64_t code) {
  if (c->ccerr_set)
    return;
  ngtcp2_ccerr_set_application_error(&c->ccerr, code, NULL, 0);
  c->ccerr_set = 1;
}

void h3g_quic_conn_fail(h3g_quic_conn *c, uint64_t app_error_code) {
  if (c->state >= CONN_CLOSING)
    return;
  conn_set_app_error(c, app_error_code);
  c->close_pending = 1;
  h3g_quic_conn_mark_dirty(c);
}

/* An HTTP/3 or QPACK connection error that blames the client (RFC 9114
 * §8.1, RFC 9204 §6): not H3_NO_ERROR, not our H3_INTERNAL_ERROR, not
 * H3_EXCESSIVE_LOAD (counted as h3_excessive_load_closes). */
static int is_protocol_error(uint64_t code) {
  switch (code) {
  case NGHTTP3_H3_GENERAL_PROTOCOL_ERROR:
  case NGHTTP3_H3_STREAM_CREATION_ERROR:
  case NGHTTP3_H3_CLOSED_CRITICAL_STREAM:
  case NGHTTP3_H3_FRAME_UNEXPECTED:
  case NGHTTP3_H3_FRAME_ERROR:
  case NGHTTP3_H3_ID_ERROR:
  case NGHTTP3_H3_SETTINGS_ERROR:
  case NGHTTP3_H3_MISSING_SETTINGS:
  case NGHTTP3_QPACK_DECOMPRESSION_FAILED:
  case NGHTTP3_QPACK_ENCODER_STREAM_ERROR:
  case NGHTTP3_QPACK_DECODER_STREAM_ERROR: return 1;
  default: return 0;
  }
}

/* Writes CONNECTION_CLOSE with c->ccerr, sends it and enters CLOSING (or
 * DEAD when nothing can be sent). */
static void conn_start_closing(h3g_quic_conn *c) {
  h3g_udp_socket *sock = c->env->sock;
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;

  if (c->state >= CONN_CLOSING)
    return;
  if (!c->ccerr_set)
    conn_set_app_error(c, NGHTTP3_H3_INTERNAL_ERROR);

  h3g_debug("quic %s: closing (%s error 0x%llx)", c->client,
            c->ccerr.type == NGTCP2_CCERR_TYPE_APPLICATION ? "application"
                                                           : "transport",
            (unsigned long long)c->ccerr.error_code);
  if (c->ccerr.type == NGTCP2_CCERR_TYPE_APPLICATION &&
      is_protocol_error(c->ccerr.error_code))
    H3G_INC(h3_protocol_error_closes);

  size_t cap = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
  c->close_pkt = malloc(cap);
  if (c->close_pkt == NULL) {
    conn_set_state(c, CONN_DEAD);
    return;
  }
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      c->conn, &ps.path, &pi, c->close_pkt, cap, &c->ccerr, h3g_now_ns());
  if (n <= 0) {
    conn_set_state(c, CONN_DEAD);
    return;
  }
  c->close_len = (size_t)n;
  memcpy(&c->close_local.su, ps.path.local.addr, ps.path.local.addrlen);
  c->close_local.len = ps.path.local.addrlen;
  memcpy(&c->close_remote.su, ps.path.remote.addr, ps.path.remote.addrlen);
  c->close_remote.len = ps.path.remote.addrlen;
  (void)h3g_udp_tx_send(sock, &c->close_local.su.sa, c->close_local.len,
                        &c->close_remote.su.sa, c->close_remote.len, 0,
                        c->close_pkt, c->close_len);
  conn_set_state(c, CONN_CLOSING);
}

/* Sets env->timer_fd to the earliest deadline, if that changed. */
static void env_timer_rearm(h3g_quic_env *env) {
  h3g_theap_node *top = h3g_theap_top(&env->timers);
  uint64_t at = top != NULL ? top->at : 0;
  if (at == env->timer_armed)
    return;
  /* A deadline already past fires at once (absolute time). */
  struct itimerspec its = {
      .it_value = {.tv_sec = (time_t)(at / 1000000000u),
                   .tv_nsec = (long)(at % 1000000000u)},
  };
  if (at != 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
    its.it_value.tv_nsec = 1;
  if (timerfd_settime(env->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
    env->timer_armed = at;
}

/* c has no ngtcp2 deadline any more. */
static void conn_disarm(h3g_quic_conn *c) {
  uv_timer_stop(&c->timer);
  if (h3g_theap_contains(&c->tnode)) {
    h3g_theap_remove(&c->env->timers, &c->tnode);
    env_timer_rearm(c->env);
  }
}

static void conn_arm_timer(h3g_quic_conn *c) {
  h3g_quic_env *env = c->env;
  ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn);
  if (expiry == UINT64_MAX) {
    conn_disarm(c);
    return;
  }
  if (h3g_theap_set(&env->timers, &c->tnode, expiry) == 0) {
    env_timer_rearm(env);
    return;
  }
  /* No memory for the heap: libuv timers count milliseconds; round up,
   * and let ngtcp2's pacing compensate for the lateness. */
  ngtcp2_tstamp now = h3g_now_ns();
  uint64_t ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* The connection leaves the handshake: it no longer counts against the
 * handshake limits of quic_listener.c. */
static void handshake_uncount(h3g_quic_conn *c) {
  h3g_quic_env *env = c->env;
  if (c->source_counted)
    h3g_source_map_dec(&env->sources, &c->source);
  if (c->unvalidated)
    env->nunvalidated--;
  c->source_counted = 0;
  c->unvalidated = 0;
}

/*
 * The transition function of quic_conn.h's life cycle. Entering CLOSING,
 * DRAINING or DEAD releases the HTTP/3 session (and so every bridge); it is
 * never called from inside an ngtcp2 or nghttp3 callback for those states.
 */
static void conn_set_state(h3g_quic_conn *c, conn_state next) {
  h3g_quic_env *env = c->env;
  conn_state prev = c->state;

  H3G_UNUSED(prev); /* only asserted */
  switch (next) {
  case CONN_ESTABLISHED: assert(prev == CONN_HANDSHAKING); break;
  case CONN_CLOSING:
  case CONN_DRAINING: assert(prev <= CONN_ESTABLISHED); break;
  case CONN_DEAD: assert(prev != CONN_DEAD); break;
  case CONN_HANDSHAKING:
    assert(0 && "no transition back to the handshake");
    return;
  }
  c->state = next;
  if (prev == CONN_HANDSHAKING) {
    env->nhandshaking--;
    handshake_uncount(c);
  }

  if (next == CONN_ESTABLISHED)
    return;

  h3g_h3_session_free(c->h3);
  c->h3 = NULL;
  dirty_remove(env, c);

  conn_disarm(c);
  if (next == CONN_DEAD) {
    unmap_cids(c);
    c->dead_next = env->dead;
    env->dead = c;
    h3g_quic_env_wake(env);
    return;
  }

  /* CLOSING or DRAINING: three PTOs (RFC 9000 §10.2). */
  uint64_t ms = (3 * ngtcp2_conn_get_pto(c->conn) + 999999) / 1000000;
  uv_timer_start(&c->timer, on_close_timer, ms, 0);
  h3g_debug("quic %s: %s for %llu ms", c->client,
            next == CONN_CLOSING ? "closing" : "draining",
            (unsigned long long)ms);
}

static void on_close_timer(uv_timer_t *t) {
  h3g_quic_conn *c = t->data;
  if (c->state == CONN_CLOSING || c->state == CONN_DRAINING)
    conn_set_state(c, CONN_DEAD);
}

static void on_timer(uv_timer_t *t) {
  conn_expire(t->data);
}

/* One of c's ngtcp2 deadlines passed. */
static void conn_expire(h3g_quic_conn *c) {
  /* After a fatal error ngtcp2 allows nothing but the close. */
  if (c->state >= CONN_CLOSING || c->close_pending)
    return;
  int rv = ngtcp2_conn_handle_expiry(c->conn, h3g_now_ns());
  switch (rv) {
  case 0: h3g_quic_conn_mark_dirty(c); return;
  case NGTCP2_ERR_IDLE_CLOSE:
    h3g_debug("quic %s: idle timeout", c->client);
    if (c->state == CONN_HANDSHAKING) {
      conn_set_state(c, CONN_DEAD);
      return;
    }
    /* RFC 9000 §10.1 lets both ends forget the connection silently, but a
     * client that still believes it alive (libcurl reuses one just past
     * the idle timeout) would send a request into the void and fail. A
     * CONNECTION_CLOSE waiting in its socket tells it to reconnect, and
     * the closing period answers a request that crossed it. */
    conn_set_app_error(c, NGHTTP3_H3_NO_ERROR);
    c->close_pending = 1;
    h3g_quic_conn_mark_dirty(c);
    return;
  case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
    h3g_debug("quic %s: handshake timeout", c->client);
    conn_set_state(c, CONN_DEAD);
    return;
  default:
    conn_set_ccerr_liberr(c, rv);
    c->close_pending = 1;
    h3g_quic_conn_mark_dirty(c);
    return;
  }
}

/* ---- ngtcp2 callbacks ---- */

static ngtcp2_conn *on_get_conn(ngtcp2_crypto_conn_ref *ref) {
  h3g_quic_conn *c = ref->user_data;
  return c->conn;
}

/* The session's way back to its connection (h3_session.h). */
static void on_h3_dirty(void *owner) {
  h3g_quic_conn_mark_dirty(owner);
}

static void on_h3_fail(void *owner, uint64_t app_error_code) {
  h3g_quic_conn_fail(owner, app_error_code);
}

static const char *on_h3_conn_id(void *owner) {
  return ((h3g_quic_conn *)owner)->odcid_hex;
}

static const h3g_h3_conn_ops h3_conn_ops = {
    .mark_dirty = on_h3_dirty,
    .fail = on_h3_fail,
    .conn_id = on_h3_conn_id,
};

static int ensure_h3(h3g_quic_conn *c) {
  if (c->h3 != NULL)
    return 0;
  int rv = h3g_h3_session_new(&c->h3, &h3_conn_ops, c, c->conn, c->env->cfg,
                              c->env->bridge_env, c->client);
  if (rv != 0) {
    /* A client that allows us no unidirectional streams is its own
     * problem; anything else is ours. */
    if (rv == NGHTTP3_ERR_H3_GENERAL_PROTOCOL_ERROR)
      h3g_debug("quic %s: cannot start HTTP/3: %s", c->client,
                nghttp3_strerror(rv));
    else
      h3g_warn("quic %s: cannot start HTTP/3: %s", c->client,
               nghttp3_strerror(rv));
    conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
    return -1;
  }
  return 0;
}

/* How many bytes of p[0..n) may go to the TLS stack now: all but a
 * handshake message header (type and 24-bit length) cut short at the end.
 * *left counts what is still due of the message in progress. */
static size_t crypto_whole_prefix(uint32_t *left, const uint8_t *p, size_t n) {
  size_t pos = 0;
  while (pos < n) {
    if (*left == 0) {
      if (n - pos < 4)
        break;
      *left = 4 + ((uint32_t)p[pos + 1] << 16 | (uint32_t)p[pos + 2] << 8 |
                   (uint32_t)p[pos + 3]);
    }
    size_t take = H3G_MIN((size_t)*left, n - pos);
    pos += take;
    *left -= (uint32_t)take;
  }
  return pos;
}

/*
 * TLS handshake bytes, in order, as ngtcp2 has them. wolfSSL (5.7) fails
 * the handshake, with no alert, when one piece ends inside a message's
 * 4-byte header and the next ends exactly where the header does: a
 * ClientHello sent in CRYPTO frames cut at byte 2 and byte 4 was refused
 * with CRYPTO_ERROR 0x100. So a header cut short waits here (at most 3
 * bytes) and goes with the bytes after it.
 *
 * Then ngtcp2's handler, and ALPN "h3" insisted on: wolfSSL refuses a
 * client whose list lacks "h3" (no_application_protocol), but completes
 * the handshake when the client sends no ALPN extension at all, which RFC
 * 9001 §8.1 forbids. The check runs once the ClientHello has been
 * processed.
 */
static int on_recv_crypto_data(ngtcp2_conn *conn, ngtcp2_encryption_level lvl,
                               uint64_t offset, const uint8_t *data,
                               size_t datalen, void *user_data) {
  h3g_quic_conn *c = user_data;
  if ((size_t)lvl >= H3G_ARRAY_LEN(c->crypto_in))
    return NGTCP2_ERR_CALLBACK_FAILURE;
  crypto_in *in = &c->crypto_in[lvl];
  const uint8_t *p = data;
  size_t n = datalen;
  uint8_t *joined = NULL;
  if (in->holdlen > 0) {
    joined = malloc(in->holdlen + datalen);
    if (joined == NULL)
      return NGTCP2_ERR_CALLBACK_FAILURE;
    memcpy(joined, in->hold, in->holdlen);
    memcpy(joined + in->holdlen, data, datalen);
    p = joined;
    n = in->holdlen + datalen;
    offset -= in->holdlen;
  }
  size_t whole = crypto_whole_prefix(&in->left, p, n);
  in->holdlen = (uint8_t)(n - whole);
  memcpy(in->hold, p + whole, in->holdlen);
  int rv = whole == 0 ? 0
                      : ngtcp2_crypto_recv_crypto_data_cb(conn, lvl, offset, p,
                                                          whole, user_data);
  free(joined);
  if (rv != 0 || c->alpn_checked ||
      wolfSSL_quic_write_level(c->ssl) == wolfssl_encryption_initial)
    return rv;

  char *proto = NULL;
  unsigned short protolen = 0;
  c->alpn_checked = 1;
  if (wolfSSL_ALPN_GetProtocol(c->ssl, &proto, &protolen) != WOLFSSL_SUCCESS ||
      protolen != 2 || memcmp(proto, "h3", 2) != 0) {
    h3g_debug("quic %s: client offered no ALPN", c->client);
    ngtcp2_conn_set_tls_alert(conn, TLS_ALERT_NO_APPLICATION_PROTOCOL);
    return NGTCP2_ERR_CRYPTO;
  }
  return 0;
}

_Static_assert(H3G_QUIC_V1 == NGTCP2_PROTO_VER_V1 &&
                   H3G_QUIC_V2 == NGTCP2_PROTO_VER_V2,
               "config.h names ngtcp2's versions");

int h3g_quic_version_served(const h3g_config *cfg, uint32_t version) {
  for (uint32_t i = 0; i < cfg->nquic_versions; i++)
    if (cfg->quic_version[i] == version)
      return 1;
  return 0;
}

void h3g_quic_new_token_key(const h3g_quic_env *env, uint32_t version,
                            uint8_t out[H3G_QUIC_TOKEN_KEY_LEN]) {
  _Static_assert(sizeof(env->token_secret) + 4 == H3G_QUIC_TOKEN_KEY_LEN,
                 "token key layout");
  memcpy(out, env->token_secret, sizeof(env->token_secret));
  out[32] = (uint8_t)(version >> 24);
  out[33] = (uint8_t)(version >> 16);
  out[34] = (uint8_t)(version >> 8);
  out[35] = (uint8_t)version;
}

/*
 * A NEW_TOKEN token (RFC 9000 §8.1.3) for the client's next connection: it
 * seals the client's IP address (not the port) and the time under the
 * token secret and a version, so that the next connection from that
 * address skips the Retry round trip and the unvalidated-handshake limit
 * while the token is younger than [listener] new_token_lifetime. Losing it
 * costs nothing but that, so failures are not errors.
 *
 * The version is the one this connection started in (its Initial packets'),
 * not the one it may have been moved to (RFC 9368): a token is checked in
 * the next connection's first Initial, before any negotiation, against the
 * version of that packet (quic_listener.c). So a client that starts in the
 * same version again uses it, one that starts in another cannot (RFC 9369
 * §3.3).
 */
static void submit_new_token(h3g_quic_conn *c) {
  uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
  uint8_t key[H3G_QUIC_TOKEN_KEY_LEN];
  const ngtcp2_path *path = ngtcp2_conn_get_path(c->conn);

  if (c->env->cfg->new_token_lifetime_ms == 0)
    return;
  h3g_quic_new_token_key(c->env, ngtcp2_conn_get_client_chosen_version(c->conn),
                         key);
  ngtcp2_ssize n = ngtcp2_crypto_generate_regular_token(
      token, key, sizeof(key), path->remote.addr, path->remote.addrlen,
      h3g_quic_token_now());
  explicit_bzero(key, sizeof(key));
  if (n < 0 || ngtcp2_conn_submit_new_token(c->conn, token, (size_t)n) != 0) {
    h3g_debug("quic %s: no NEW_TOKEN token", c->client);
    return;
  }
  H3G_INC(quic_new_tokens_sent);
}

static int on_handshake_completed(ngtcp2_conn *conn, void *user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  conn_set_state(c, CONN_ESTABLISHED);
  uint32_t version = ngtcp2_conn_get_negotiated_version(conn);
  if (version == NGTCP2_PROTO_VER_V2)
    H3G_INC(quic_connections_v2);
  h3g_debug("quic %s: handshake completed (%s, version 0x%08x%s)", c->client,
            wolfSSL_get_cipher_name(c->ssl), version,
            version != ngtcp2_conn_get_client_chosen_version(conn)
                ? ", negotiated"
                : "");
  submit_new_token(c);
  int resumed = wolfSSL_session_reused(c->ssl);
  if (resumed)
    H3G_INC(quic_resumptions);
#ifdef WOLFSSL_EARLY_DATA
  /* wolfSSL marks early data accepted as soon as the ClientHello offers it
   * (with max early data set), before it knows whether the ticket opens:
   * without a resumed session there were no 0-RTT keys. */
  if (resumed &&
      wolfSSL_get_early_data_status(c->ssl) == WOLFSSL_EARLY_DATA_ACCEPTED)
    H3G_INC(quic_early_data_accepted);
#endif
  if (ensure_h3(c) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  /* Requests that came as 0-RTT and were held may go upstream now. */
  h3g_h3_session_handshake_completed(c->h3);
  return 0;
}

/* Our 1-RTT keys exist once the server's handshake flight is written:
 * HTTP/3 starts then (its SETTINGS leave as 0.5-RTT data), so that 0-RTT
 * requests, which arrive before the handshake completes, find it. */
static int on_recv_tx_key(ngtcp2_conn *conn, ngtcp2_encryption_level level,
                          void *user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT)
    return 0;
  return ensure_h3(c) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int on_recv_stream_data(ngtcp2_conn *conn, uint32_t flags,
                               int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen,
                               void *user_data, void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(offset);

  H3G_UNUSED(conn);
  if (ensure_h3(c) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  /* Stream errors (a malformed request) are the session's; what comes back
   * is fatal for the connection. Data before the handshake completed came
   * as 0-RTT: replayable (RFC 9001 §9.2), so the session only lets safe
   * requests go upstream early. */
  int rv = h3g_h3_session_recv_stream_data(
      c->h3, stream_id, data, datalen, flags & NGTCP2_STREAM_DATA_FLAG_FIN,
      (flags & NGTCP2_STREAM_DATA_FLAG_0RTT) ||
          !ngtcp2_conn_get_handshake_completed(conn),
      stream_user_data);
  if (rv != 0) {
    conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_acked_stream_data_offset(ngtcp2_conn *conn, int64_t stream_id,
                                       uint64_t offset, uint64_t datalen,
                                       void *user_data,
                                       void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  H3G_UNUSED(offset);
  H3G_UNUSED(stream_user_data);
  if (c->h3 == NULL)
    return 0;
  int rv = h3g_h3_session_acked(c->h3, stream_id, datalen);
  if (rv != 0) {
    conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(stream_user_data);

  if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
    app_error_code = NGHTTP3_H3_NO_ERROR;
  if (c->h3 != NULL) {
    int rv = h3g_h3_session_stream_close(c->h3, stream_id, app_error_code);
    if (rv != 0) {
      conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
  } else if (ngtcp2_is_bidi_stream(stream_id)) {
    ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  } else if ((stream_id & 0x3) == 0x2) {
    ngtcp2_conn_extend_max_streams_uni(conn, 1);
  }
  /* MAX_STREAMS to send, or a drained connection to close. */
  h3g_quic_conn_mark_dirty(c);
  return 0;
}

static int on_stream_reset(ngtcp2_conn *conn, int64_t stream_id,
                           uint64_t final_size, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  H3G_UNUSED(final_size);
  H3G_UNUSED(app_error_code);
  H3G_UNUSED(stream_user_data);
  if (c->h3 == NULL)
    return 0;
  int rv = h3g_h3_session_stream_reset(c->h3, stream_id);
  if (rv != 0) {
    conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* Despite its name, ngtcp2 calls this when *we* stop reading a stream (it
 * is about to send STOP_SENDING), e.g. after ngtcp2_conn_shutdown_stream;
 * nghttp3 must then stop expecting data. A client's STOP_SENDING is
 * on_recv_stop_sending. */
static int on_stream_stop_sending(ngtcp2_conn *conn, int64_t stream_id,
                                  uint64_t app_error_code, void *user_data,
                                  void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  H3G_UNUSED(app_error_code);
  H3G_UNUSED(stream_user_data);
  if (c->h3 == NULL)
    return 0;
  int rv = h3g_h3_session_read_stopped(c->h3, stream_id);
  if (rv != 0) {
    conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* The client's STOP_SENDING (ngtcp2 answers it with RESET_STREAM). On one
 * of our unidirectional streams, all critical (control, QPACK encoder and
 * decoder; we never push), it closes the connection at once: RFC 9114
 * §6.2.1, RFC 9204 §4.2. On a request stream the response is cut now,
 * rather than at its next write: the upstream exchange ends with it. */
static int on_recv_stop_sending(ngtcp2_conn *conn, int64_t stream_id,
                                uint64_t app_error_code, void *user_data,
                                void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  H3G_UNUSED(stream_user_data);
  if (c->h3 == NULL)
    return 0;
  if ((stream_id & 0x3) == 0x3) {
    h3g_debug("quic %s: STOP_SENDING (0x%llx) on our critical stream %lld",
              c->client, (unsigned long long)app_error_code,
              (long long)stream_id);
    conn_set_app_error(c, NGHTTP3_H3_CLOSED_CRITICAL_STREAM);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  if (ngtcp2_is_bidi_stream(stream_id))
    h3g_h3_session_shutdown_write(c->h3, stream_id);
  return 0;
}

static int on_extend_max_remote_streams_bidi(ngtcp2_conn *conn,
                                             uint64_t max_streams,
                                             void *user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  if (c->h3 != NULL)
    h3g_h3_session_set_max_streams(c->h3, max_streams);
  return 0;
}

static int on_extend_max_stream_data(ngtcp2_conn *conn, int64_t stream_id,
                                     uint64_t max_data, void *user_data,
                                     void *stream_user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  H3G_UNUSED(max_data);
  H3G_UNUSED(stream_user_data);
  if (c->h3 == NULL)
    return 0;
  int rv = h3g_h3_session_unblock(c->h3, stream_id);
  if (rv != 0) {
    conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_get_new_connection_id(ngtcp2_conn *conn, ngtcp2_cid *cid,
                                    uint8_t *token, size_t cidlen,
                                    void *user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  if (new_cid(c->env, cid, cidlen) != 0 ||
      ngtcp2_crypto_generate_stateless_reset_token(token, c->env->reset_secret,
                                                   sizeof(c->env->reset_secret),
                                                   cid) != 0 ||
      map_cid(c, cid) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int on_remove_connection_id(ngtcp2_conn *conn, const ngtcp2_cid *cid,
                                   void *user_data) {
  h3g_quic_conn *c = user_data;
  H3G_UNUSED(conn);
  h3g_cid_map_remove(&c->env->cids, cid->data, cid->datalen, c);
  return 0;
}

/*
 * Connection migration (RFC 9000 §9). ngtcp2 does the protocol: a
 * non-probing packet from a new client address (a rebound NAT, or a client
 * that moved, usually with one of the spare connection IDs we issue) makes
 * that path the active one at once, under the 3x anti-amplification limit
 * of an unvalidated path, and sends PATH_CHALLENGE; on success the path is
 * validated, on timeout ngtcp2 goes back to the old path. On a server
 * every validation it reports here is such a migration (old_path is the
 * path it left); validations of the old path afterwards and aborted ones
 * (the client moved again, or back) are not reported as a result. We only
 * count, and offer a NEW_TOKEN token when the IP address itself changed
 * (ngtcp2's NEW_TOKEN flag), since the last token names the old address.
 * c->client keeps the address the connection started from, which is what
 * the access log and forwarded headers of every request name.
 */
static int on_path_validation(ngtcp2_conn *conn, uint32_t flags,
                              const ngtcp2_path *path,
                              const ngtcp2_path *old_path,
                              ngtcp2_path_validation_result res,
                              void *user_data) {
  h3g_quic_conn *c = user_data;
  char addr[64];
  H3G_UNUSED(conn);

  h3g_udp_addr_format((const struct sockaddr *)path->remote.addr, addr,
                      sizeof(addr));
  switch (res) {
  case NGTCP2_PATH_VALIDATION_RESULT_SUCCESS:
    H3G_INC(quic_path_validations_succeeded);
    if (old_path != NULL && !ngtcp2_path_eq(path, old_path)) {
      H3G_INC(quic_migrations);
      h3g_debug("quic %s: migrated to %s", c->client, addr);
    }
    if (flags & NGTCP2_PATH_VALIDATION_FLAG_NEW_TOKEN)
      submit_new_token(c);
    return 0;
  case NGTCP2_PATH_VALIDATION_RESULT_FAILURE:
    H3G_INC(quic_path_validations_failed);
    h3g_debug("quic %s: path to %s not validated, back to the old path",
              c->client, addr);
    return 0;
  case NGTCP2_PATH_VALIDATION_RESULT_ABORTED: return 0;
  }
  return 0;
}

static const ngtcp2_callbacks conn_callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = on_recv_crypto_data,
    .handshake_completed = on_handshake_completed,
    .recv_tx_key = on_recv_tx_key,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = on_recv_stream_data,
    .acked_stream_data_offset = on_acked_stream_data_offset,
    .stream_close = on_stream_close,
    .rand = on_rand,
    .get_new_connection_id = on_get_new_connection_id,
    .remove_connection_id = on_remove_connection_id,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = on_stream_reset,
    .extend_max_remote_streams_bidi = on_extend_max_remote_streams_bidi,
    .extend_max_stream_data = on_extend_max_stream_data,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = on_stream_stop_sending,
    .recv_stop_sending = on_recv_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .path_validation = on_path_validation,
};

/*
 * What a client remembers with a ticket and may rely on when it sends
 * 0-RTT: the transport parameters of RFC 9000 §7.4.1 and our HTTP/3
 * settings (RFC 9114 §7.2.4.2), all derived from cfg as
 * h3g_quic_conn_accept() and h3_session.c derive them.
 */
void h3g_quic_ticket_context(const h3g_config *cfg, char *buf, size_t cap) {
  snprintf(buf, cap,
           "quic v1 bidi=%u uni=3 sd_bidi=%u sd_uni=%u data=%llu cids=%u "
           "h3 fsize=%u qpack=0/0 early=%u",
           cfg->max_streams, cfg->stream_buffer_size, UNI_STREAM_WINDOW,
           (unsigned long long)cfg->connection_window, ACTIVE_CID_LIMIT,
           cfg->max_header_size, cfg->early_data);
}

/* ---- creation and release ---- */

static void on_timer_closed(uv_handle_t *h) {
  h3g_quic_conn *c = h->data;
  h3g_quic_env *env = c->env;
  free(c);
  env->nfreeing--;
  /* A shutting-down listener waits for the last handle. */
  if (env->shutting_down)
    h3g_quic_env_wake(env);
}

static void conn_free(h3g_quic_conn *c) {
  h3g_quic_env *env = c->env;

  handshake_uncount(c); /* no-op: leaving HANDSHAKING did it */
  if (c->qlog != NULL) {
    fclose(c->qlog);
    c->qlog = NULL;
  }
  free(c->fin_q);
  c->fin_q = NULL;
  h3g_h3_session_free(c->h3);
  c->h3 = NULL;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (env->conns == c)
    env->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  if (c->conn != NULL) {
    env->nconns--;
    H3G_DEC(quic_connections_active);
    ngtcp2_conn_del(c->conn);
  }
  if (c->ssl != NULL)
    wolfSSL_free(c->ssl);
  free(c->close_pkt);
  conn_disarm(c);
  env->nfreeing++;
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/*
 * [debug] qlog_dir: one JSON-SEQ file per connection, named after the
 * client's original destination CID. Off by default: a trace holds every
 * packet's metadata and is for debugging, not production. The first record
 * is ours and states the transport settings ngtcp2's own records leave
 * out (congestion control, pacing, ECN).
 */
static int qlog_open(h3g_quic_conn *c, const h3g_config *cfg) {
  static const char *const cc[] = {"cubic", "bbr", "reno"};
  char name[2 * NGTCP2_MAX_CIDLEN + 1];
  char path[H3G_PATH_MAX + 64];
  for (size_t i = 0; i < c->odcid.datalen; i++)
    snprintf(name + 2 * i, 3, "%02x", c->odcid.data[i]);
  name[2 * c->odcid.datalen] = '\0';
  snprintf(path, sizeof(path), "%s/%s.sqlog", cfg->qlog_dir, name);
  c->qlog = fopen(path, "w");
  if (c->qlog == NULL) {
    h3g_warn("quic %s: qlog %s: cannot open", c->client, path);
    return H3G_ERR_IO;
  }
  fprintf(c->qlog,
          "\x1e{\"name\":\"h3gate:settings\",\"data\":{"
          "\"congestion_control\":\"%s\",\"pacing\":true,"
          "\"ecn\":{\"receive\":\"IP_RECVTOS\",\"send\":\"as ngtcp2 validates\"}}}\n",
          cc[cfg->congestion_control]);
  return 0;
}

static void on_qlog_write(void *user_data, uint32_t flags, const void *data,
                          size_t len) {
  h3g_quic_conn *c = user_data;
  if (c->qlog == NULL)
    return;
  fwrite(data, 1, len, c->qlog);
  if (flags & NGTCP2_QLOG_WRITE_FLAG_FIN) {
    fclose(c->qlog);
    c->qlog = NULL;
  }
}

int h3g_quic_conn_accept(h3g_quic_env *env, const ngtcp2_pkt_hd *hd,
                         const ngtcp2_path *path, const ngtcp2_cid *retry_odcid,
                         int new_token, h3g_quic_conn **pc) {
  const h3g_config *cfg = env->cfg;
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  int rv;

  *pc = NULL;
  h3g_quic_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return H3G_ERR_NOMEM;
  c->env = env;
  c->state = CONN_HANDSHAKING;
  ngtcp2_ccerr_default(&c->ccerr);
  uv_timer_init(env->loop, &c->timer);
  c->timer.data = c;
  h3g_udp_addr_format(path->remote.addr, c->client, sizeof(c->client));
  c->odcid = retry_odcid != NULL ? *retry_odcid : hd->dcid;
  for (size_t i = 0; i < c->odcid.datalen && 2 * i < H3G_ACCESS_CID_LEN; i++)
    snprintf(c->odcid_hex + 2 * i, 3, "%02x", c->odcid.data[i]);

  if (new_cid(env, &c->scid, H3G_QUIC_SCIDLEN) != 0) {
    rv = H3G_ERR_QUIC;
    goto fail;
  }

  ngtcp2_settings_default(&settings);
  settings.initial_ts = h3g_now_ns();
  settings.cc_algo = cfg->congestion_control == H3G_CC_BBR    ? NGTCP2_CC_ALGO_BBR
                     : cfg->congestion_control == H3G_CC_RENO ? NGTCP2_CC_ALGO_RENO
                                                              : NGTCP2_CC_ALGO_CUBIC;
  if (cfg->qlog_dir[0] != '\0' && qlog_open(c, cfg) == 0)
    settings.qlog_write = on_qlog_write;
  settings.rand_ctx.native_handle = env;
  /* Compatible version negotiation (RFC 9368): the client's first flight
   * is in its chosen version; when its version_information offers one we
   * prefer, ngtcp2 moves the connection to it during the handshake. */
  settings.preferred_versions = cfg->quic_version;
  settings.preferred_versionslen = cfg->nquic_versions;
  settings.available_versions = cfg->quic_version;
  settings.available_versionslen = cfg->nquic_versions;
  if (cfg->handshake_timeout_ms > 0)
    settings.handshake_timeout =
        cfg->handshake_timeout_ms * NGTCP2_MILLISECONDS;
  if (retry_odcid != NULL || new_token) {
    settings.token = hd->token;
    settings.tokenlen = hd->tokenlen;
    settings.token_type = retry_odcid != NULL ? NGTCP2_TOKEN_TYPE_RETRY
                                              : NGTCP2_TOKEN_TYPE_NEW_TOKEN;
  }

  ngtcp2_transport_params_default(&params);
  params.initial_max_streams_bidi = cfg->max_streams;
  params.initial_max_streams_uni = 3;
  params.initial_max_stream_data_bidi_remote = cfg->stream_buffer_size;
  params.initial_max_stream_data_uni = UNI_STREAM_WINDOW;
  params.initial_max_data = cfg->connection_window;
  params.max_idle_timeout = cfg->idle_timeout_ms * NGTCP2_MILLISECONDS;
  params.active_connection_id_limit = ACTIVE_CID_LIMIT;
  /* Larger datagrams would not fit our receive buffers. */
  params.max_udp_payload_size =
      H3G_MIN(params.max_udp_payload_size, (uint64_t)env->sock->rx_size);
  params.original_dcid = c->odcid;
  params.original_dcid_present = 1;
  if (retry_odcid != NULL) {
    params.retry_scid = hd->dcid;
    params.retry_scid_present = 1;
  }
  params.stateless_reset_token_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token(
          params.stateless_reset_token, env->reset_secret,
          sizeof(env->reset_secret), &c->scid) != 0) {
    rv = H3G_ERR_QUIC;
    goto fail;
  }

  rv = ngtcp2_conn_server_new(&c->conn, &hd->scid, &c->scid, path, hd->version,
                              &conn_callbacks, &settings, &params, NULL, c);
  if (rv != 0) {
    h3g_debug("quic %s: ngtcp2_conn_server_new: %s", c->client,
              ngtcp2_strerror(rv));
    c->conn = NULL;
    rv = rv == NGTCP2_ERR_NOMEM ? H3G_ERR_NOMEM : H3G_ERR_QUIC;
    goto fail;
  }
  env->nconns++;
  H3G_INC(quic_connections_active);

  c->ssl = wolfSSL_new(env->ssl_ctx);
  if (c->ssl == NULL) {
    rv = H3G_ERR_TLS;
    goto fail;
  }
  c->conn_ref =
      (ngtcp2_crypto_conn_ref){.get_conn = on_get_conn, .user_data = c};
  wolfSSL_set_app_data(c->ssl, &c->conn_ref);
  wolfSSL_set_accept_state(c->ssl);
  /* The server's ALPN list. This wolfSSL build ignores the context's ALPN
   * select callback (compiled in only with OPENSSL_ALL, NGINX or HAPROXY
   * compatibility) and matches the client's offer against this list. */
  if (wolfSSL_UseALPN(c->ssl, (char *)"h3", 2,
                      WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS) {
    rv = H3G_ERR_TLS;
    goto fail;
  }
  wolfSSL_set_quic_transport_version(c->ssl, QUIC_TP_EXTENSION_V1);
#ifdef WOLFSSL_EARLY_DATA
  /* Sets the max early data size QUIC requires (0xffffffff) in our tickets,
   * or none when 0-RTT is off. */
  wolfSSL_set_quic_early_data_enabled(c->ssl, cfg->early_data ? 1 : 0);
#endif
  ngtcp2_conn_set_tls_native_handle(c->conn, c->ssl);

  if (map_cid(c, &c->scid) != 0 || map_cid(c, &c->odcid) != 0) {
    rv = H3G_ERR_NOMEM;
    goto fail;
  }

  if (cfg->max_handshakes_per_source > 0 &&
      h3g_source_key_of(&c->source, path->remote.addr) == 0) {
    if (h3g_source_map_inc(&env->sources, &c->source) != 0) {
      rv = H3G_ERR_NOMEM;
      goto fail;
    }
    c->source_counted = 1;
  }
  c->unvalidated = retry_odcid == NULL && !new_token;
  env->nunvalidated += c->unvalidated;

  c->next = env->conns;
  if (env->conns != NULL)
    env->conns->prev = c;
  env->conns = c;
  H3G_INC(quic_connections_accepted);
  env->nhandshaking++;
  h3g_debug("quic %s: new connection, version 0x%08x%s", c->client, hd->version,
            retry_odcid != NULL ? " (after Retry)"
            : new_token         ? " (NEW_TOKEN token)"
                                : "");
  *pc = c;
  return 0;

fail:
  unmap_cids(c);
  conn_free(c);
  return rv;
}

/* ---- input ---- */

void h3g_quic_conn_recv(h3g_quic_conn *c, const ngtcp2_path *path,
                        const ngtcp2_pkt_info *pi, const uint8_t *data,
                        size_t len) {
  switch (c->state) {
  case CONN_DEAD:
  case CONN_DRAINING: return;
  case CONN_CLOSING:
    /* Repeat the close on the 1st, 2nd, 4th, 8th... packet: enough for a
     * peer that lost it, little for one that keeps sending. */
    c->close_rx++;
    if ((c->close_rx & (c->close_rx - 1)) == 0)
      (void)h3g_udp_tx_send(c->env->sock, &c->close_local.su.sa,
                            c->close_local.len, &c->close_remote.su.sa,
                            c->close_remote.len, 0, c->close_pkt, c->close_len);
    return;
  case CONN_HANDSHAKING:
  case CONN_ESTABLISHED: break;
  }
  if (c->close_pending)
    return;

  int rv = ngtcp2_conn_read_pkt(c->conn, path, pi, data, len, h3g_now_ns());
  switch (rv) {
  case 0: h3g_quic_conn_mark_dirty(c); return;
  case NGTCP2_ERR_DRAINING:
    h3g_debug("quic %s: peer closed the connection", c->client);
    conn_set_state(c, CONN_DRAINING);
    return;
  case NGTCP2_ERR_DROP_CONN:
  case NGTCP2_ERR_RETRY: conn_set_state(c, CONN_DEAD); return;
  case NGTCP2_ERR_CRYPTO: {
    char why[WOLFSSL_MAX_ERROR_SZ];
    wolfSSL_ERR_error_string_n(wolfSSL_ERR_peek_last_error(), why, sizeof(why));
    h3g_debug("quic %s: TLS handshake failed (alert %u, %s)", c->client,
              (unsigned)ngtcp2_conn_get_tls_alert(c->conn), why);
    break;
  }
  default:
    if (c->state == CONN_ESTABLISHED && !c->ccerr_set)
      h3g_warn("quic %s: %s", c->client, ngtcp2_strerror(rv));
    else
      h3g_debug("quic %s: %s", c->client, ngtcp2_strerror(rv));
    break;
  }
  conn_set_ccerr_liberr(c, rv);
  c->close_pending = 1;
  h3g_quic_conn_mark_dirty(c);
}

/* ---- output ---- */

/* Builds one packet in buf, coalescing HTTP/3 stream data from as many
 * streams as fit. Returns its length, 0 when there is nothing to send (or
 * congestion control or pacing says wait), or a negative ngtcp2 error with
 * c->ccerr set. */
/* Remembers a FIN-only write that ngtcp2 declined. Returns 0 or
 * H3G_ERR_NOMEM. */
static int fin_q_push(h3g_quic_conn *c, int64_t stream_id) {
  if (c->fin_n == c->fin_cap) {
    size_t cap = c->fin_cap ? c->fin_cap * 2 : 8;
    int64_t *q = realloc(c->fin_q, cap * sizeof(*q));
    if (q == NULL)
      return H3G_ERR_NOMEM;
    c->fin_q = q;
    c->fin_cap = cap;
  }
  c->fin_q[c->fin_n++] = stream_id;
  return 0;
}

static ngtcp2_ssize write_pkt(h3g_quic_conn *c, ngtcp2_path *path,
                              ngtcp2_pkt_info *pi, uint8_t *buf, size_t buflen,
                              ngtcp2_tstamp ts) {
  nghttp3_vec vec[16];

  for (;;) {
    int64_t stream_id = -1;
    int fin = 0;
    nghttp3_ssize nvec = 0;
    int own_fin = 0;

    if (c->fin_n > 0) {
      /* A declined FIN first: nghttp3 considers it handed out already. */
      stream_id = c->fin_q[0];
      fin = 1;
      own_fin = 1;
    } else if (c->h3 != NULL && ngtcp2_conn_get_max_data_left(c->conn) > 0) {
      nvec = h3g_h3_session_writev(c->h3, &stream_id, &fin, vec,
                                   H3G_ARRAY_LEN(vec));
      if (nvec < 0) {
        conn_set_app_error(c, nghttp3_err_infer_quic_app_error_code((int)nvec));
        return NGTCP2_ERR_CALLBACK_FAILURE;
      }
    }

    ngtcp2_ssize ndatalen = -1;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    if (fin)
      flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(
        c->conn, path, pi, buf, buflen, &ndatalen, flags, stream_id,
        (const ngtcp2_vec *)(const void *)vec, (size_t)nvec, ts);

    if (own_fin) {
      int gone = n == NGTCP2_ERR_STREAM_SHUT_WR ||
                 n == NGTCP2_ERR_STREAM_NOT_FOUND;
      if (n >= 0 && ndatalen < 0)
        return n; /* still not now: keep it queued */
      c->fin_n--;
      memmove(c->fin_q, c->fin_q + 1, c->fin_n * sizeof(*c->fin_q));
      if (gone)
        continue; /* the stream was reset or closed meanwhile */
    } else if (!own_fin && stream_id >= 0 && fin && nvec == 0 &&
               ndatalen < 0 && (n >= 0 || n == NGTCP2_ERR_WRITE_MORE)) {
      if (fin_q_push(c, stream_id) != 0) {
        conn_set_app_error(c, NGHTTP3_H3_INTERNAL_ERROR);
        return NGTCP2_ERR_CALLBACK_FAILURE;
      }
      if (n >= 0)
        return n;
      continue;
    }
    if (n < 0) {
      switch (n) {
      case NGTCP2_ERR_STREAM_DATA_BLOCKED:
        h3g_h3_session_block(c->h3, stream_id);
        continue;
      case NGTCP2_ERR_STREAM_SHUT_WR:
        h3g_h3_session_shutdown_write(c->h3, stream_id);
        continue;
      case NGTCP2_ERR_WRITE_MORE:
        if (h3g_h3_session_add_write_offset(c->h3, stream_id,
                                            (size_t)ndatalen) != 0) {
          conn_set_app_error(c, NGHTTP3_H3_INTERNAL_ERROR);
          return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        continue;
      default: conn_set_ccerr_liberr(c, (int)n); return n;
      }
    }
    if (ndatalen >= 0 && h3g_h3_session_add_write_offset(
                             c->h3, stream_id, (size_t)ndatalen) != 0) {
      conn_set_app_error(c, NGHTTP3_H3_INTERNAL_ERROR);
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return n;
  }
}

/* Writes what c has to send, up to MAX_PKTS_PER_WRITE packets or one
 * pacing quantum. Returns 0 or H3G_ERR_AGAIN (socket full). */
static int conn_write(h3g_quic_conn *c) {
  h3g_udp_socket *sock = c->env->sock;

  if (c->state >= CONN_CLOSING)
    return 0;
  if (c->close_pending) {
    conn_start_closing(c);
    return 0;
  }
  if (c->goaway_sent && c->h3 != NULL && h3g_h3_session_is_drained(c->h3)) {
    conn_set_app_error(c, NGHTTP3_H3_NO_ERROR);
    conn_start_closing(c);
    return 0;
  }

  ngtcp2_tstamp ts = h3g_now_ns();
  size_t pktmax = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
  size_t quantum = ngtcp2_conn_get_send_quantum(c->conn);
  if (quantum > PACING_BURST_PKTS * pktmax) {
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(c->conn, &ci);
    if (ci.min_rtt >= PACING_BURST_MIN_RTT_NS)
      quantum = PACING_BURST_PKTS * pktmax;
  }
  size_t bytes = 0, npkts = 0;
  int result = 0, more = 0;
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;

  ngtcp2_path_storage_zero(&ps);
  for (;;) {
    if (npkts == MAX_PKTS_PER_WRITE) {
      more = 1;
      break;
    }
    if (bytes >= quantum)
      break; /* the pacing timer (ngtcp2_conn_get_expiry) resumes us */

    uint8_t *buf = h3g_udp_tx_reserve(sock, pktmax);
    if (buf == NULL) {
      if (h3g_udp_tx_flush(sock) != 0) {
        result = H3G_ERR_AGAIN;
        break;
      }
      buf = h3g_udp_tx_reserve(sock, pktmax);
      assert(buf != NULL);
    }

    ngtcp2_ssize n = write_pkt(c, &ps.path, &pi, buf, pktmax, ts);
    if (n < 0) {
      h3g_debug("quic %s: write: %s", c->client, ngtcp2_strerror((int)n));
      c->close_pending = 1;
      conn_start_closing(c);
      return result;
    }
    if (n == 0)
      break;
    h3g_udp_tx_commit(sock, ps.path.local.addr, ps.path.local.addrlen,
                      ps.path.remote.addr, ps.path.remote.addrlen,
                      (uint8_t)pi.ecn, (size_t)n);
    bytes += (size_t)n;
    npkts++;
  }
  ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
  conn_arm_timer(c);
  if (more)
    h3g_quic_conn_mark_dirty(c);
  return result;
}

/* ---- env ---- */

int h3g_quic_env_init(h3g_quic_env *env) {
  uint8_t key[16];

  if (h3g_random_bytes(key, sizeof(key)) != 0 ||
      h3g_random_bytes(env->reset_secret, sizeof(env->reset_secret)) != 0 ||
      h3g_random_bytes(env->token_secret, sizeof(env->token_secret)) != 0 ||
      h3g_random_bytes((uint8_t *)&env->prng, sizeof(env->prng)) != 0)
    return H3G_ERR_IO;
  env->prng |= 1; /* xorshift needs a nonzero state */
  if (env->secrets != NULL &&
      (h3g_secrets_derive(env->secrets, "quic stateless reset",
                          env->reset_secret, sizeof(env->reset_secret)) != 0 ||
       h3g_secrets_derive(env->secrets, "quic address token",
                          env->token_secret, sizeof(env->token_secret)) != 0))
    return H3G_ERR_IO;
  if (h3g_cid_map_init(&env->cids, key) != 0)
    return H3G_ERR_NOMEM;
  if (h3g_random_bytes(key, sizeof(key)) != 0) {
    h3g_cid_map_free(&env->cids);
    return H3G_ERR_IO;
  }
  if (h3g_source_map_init(&env->sources, key) != 0) {
    h3g_cid_map_free(&env->cids);
    return H3G_ERR_NOMEM;
  }
  h3g_theap_init(&env->timers);
  env->timer_armed = 0;
  env->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (env->timer_fd < 0 ||
      uv_poll_init(env->loop, &env->timer_poll, env->timer_fd) != 0) {
    h3g_error("quic: timerfd: %s", strerror(errno));
    if (env->timer_fd >= 0)
      close(env->timer_fd);
    h3g_cid_map_free(&env->cids);
    h3g_source_map_free(&env->sources);
    return H3G_ERR_IO;
  }
  uv_idle_init(env->loop, &env->idle);
  env->idle.data = env;
  env->timer_poll.data = env;
  uv_poll_start(&env->timer_poll, UV_READABLE, on_timer_fd);
  return 0;
}

void h3g_quic_env_free(h3g_quic_env *env) {
  assert(env->conns == NULL && env->nfreeing == 0);
  h3g_cid_map_free(&env->cids);
  h3g_source_map_free(&env->sources);
  h3g_theap_free(&env->timers);
  if (env->timer_fd >= 0)
    close(env->timer_fd);
  env->timer_fd = -1;
}

/* The earliest deadlines passed: handle them (a batch at a time, so a
 * storm of expiries cannot hold the loop), then re-arm for the next. */
static void on_timer_fd(uv_poll_t *p, int status, int events) {
  h3g_quic_env *env = p->data;
  uint64_t ticks;
  H3G_UNUSED(status);
  H3G_UNUSED(events);
  while (read(env->timer_fd, &ticks, sizeof(ticks)) > 0)
    ;
  env->timer_armed = 0;
  uint64_t now = h3g_now_ns();
  for (int i = 0; i < TIMER_BATCH; i++) {
    h3g_theap_node *top = h3g_theap_top(&env->timers);
    if (top == NULL || top->at > now)
      break;
    h3g_theap_remove(&env->timers, top);
    conn_expire(H3G_CONTAINER_OF(top, h3g_quic_conn, tnode));
  }
  env_timer_rearm(env);
}

int h3g_quic_env_flush(h3g_quic_env *env) {
  /* Each connection dirty now gets one turn; those that mark themselves
   * dirty again queue up behind and wait for the next iteration. */
  for (size_t n = env->ndirty; n > 0 && env->dirty_head != NULL; n--) {
    h3g_quic_conn *c = env->dirty_head;
    dirty_remove(env, c);
    if (conn_write(c) == H3G_ERR_AGAIN) {
      if (!c->in_dirty && c->state < CONN_CLOSING)
        dirty_push(env, c, 1);
      return H3G_ERR_AGAIN;
    }
  }
  return 0;
}

void h3g_quic_env_reap(h3g_quic_env *env) {
  while (env->dead != NULL) {
    h3g_quic_conn *c = env->dead;
    env->dead = c->dead_next;
    conn_free(c);
  }
}

void h3g_quic_env_shutdown_notice(h3g_quic_env *env) {
  env->shutting_down = 1;
  for (h3g_quic_conn *c = env->conns; c != NULL; c = c->next) {
    if (c->state == CONN_HANDSHAKING) {
      h3g_quic_conn_fail(c, NGHTTP3_H3_NO_ERROR);
    } else if (c->state == CONN_ESTABLISHED && c->h3 != NULL) {
      int rv = h3g_h3_session_submit_shutdown_notice(c->h3);
      if (rv != 0)
        h3g_quic_conn_fail(c, nghttp3_err_infer_quic_app_error_code(rv));
      h3g_quic_conn_mark_dirty(c);
    }
  }
}

void h3g_quic_env_shutdown_goaway(h3g_quic_env *env) {
  for (h3g_quic_conn *c = env->conns; c != NULL; c = c->next) {
    if (c->state != CONN_ESTABLISHED || c->h3 == NULL || c->goaway_sent)
      continue;
    int rv = h3g_h3_session_shutdown(c->h3);
    if (rv != 0)
      h3g_quic_conn_fail(c, nghttp3_err_infer_quic_app_error_code(rv));
    c->goaway_sent = 1;
    h3g_quic_conn_mark_dirty(c);
  }
}

void h3g_quic_env_abandon(h3g_quic_env *env) {
  for (h3g_quic_conn *c = env->conns; c != NULL; c = c->next) {
    if (c->h3 != NULL)
      h3g_h3_session_expire(c->h3);
    if (c->state <= CONN_ESTABLISHED) {
      conn_set_app_error(c, NGHTTP3_H3_NO_ERROR);
      conn_start_closing(c);
    }
    if (c->state != CONN_DEAD)
      conn_set_state(c, CONN_DEAD);
  }
}

uint64_t h3g_quic_env_max_rtt(const h3g_quic_env *env) {
  uint64_t max = 0;
  for (const h3g_quic_conn *c = env->conns; c != NULL; c = c->next) {
    if (c->state != CONN_ESTABLISHED)
      continue;
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(c->conn, &ci);
    max = H3G_MAX(max, (uint64_t)ci.smoothed_rtt);
  }
  return max;
}
