/*
 * TCP listener and connections.
 *
 * TLS runs over memory: wolfSSL's I/O callbacks read ciphertext from the
 * connection's input buffer (filled by uv_read) and append ciphertext to
 * its output buffer (drained by uv_write). Neither callback ever blocks:
 * an empty input is WANT_READ, and the output is sized so that a write
 * the session may make always fits (heads beyond the soft limit, body
 * only within it), so a full output is a bug that closes the connection
 * rather than a state to resume from.
 *
 * Output buffer: linear. One uv_write at a time covers [0, inflight);
 * new bytes go after it; when the write completes the rest moves to the
 * front. Reading pauses while the output is over its soft limit, so a
 * client that does not read cannot make us produce more.
 *
 * Work is never done re-entrantly: whatever the session or the bridge
 * asks for from inside a callback (kick) runs from an idle handle, once
 * per loop iteration, for every connection that asked.
 *
 * Closing: graceful closes wait for the output to drain, send TLS
 * close_notify, shut the write side down, and read (discarding) for a
 * short while so that the client's unread request bytes do not turn our
 * close into a reset that destroys the response in flight (RFC 9112
 * §9.6). The session is freed once the handles are closed.
 */
#include "tcp_listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

/* wolfSSL needs its build options before any of its headers. */
#include <wolfssl/options.h>

#include <wolfssl/ssl.h>
#include <wolfssl/wolfio.h>

#include "h2_session.h"
#include "log.h"
#include "metrics.h"

/* Ciphertext read ahead: a bit more than one TLS record. */
#define CIN_CAP (16384 + 2048)
/* Plaintext handed to the session per wolfSSL_read: one record. */
#define PIN_CAP 16384
/* Output over this: reads pause and the session writes no body. */
#define OUT_SOFT (64 * 1024)
/* TLS overhead allowance of one write (records of 16 KiB; header, MAC or
 * tag, padding). */
#define TLS_SLACK 4096
/* How long a graceful close keeps reading (and dropping) the client's
 * bytes after our last one was sent. */
#define LINGER_MS 2000
/* Reads delivered per connection per processing round: a client sending
 * fast cannot starve the others. */
#define ROUNDS_PER_PROCESS 16

enum {
  PAUSE_SESSION = 1u << 0, /* the session left plaintext unread */
  PAUSE_CIN = 1u << 1,     /* the ciphertext input is full */
  PAUSE_OUT = 1u << 2,     /* the output is over its soft limit */
};

/* A connection's life: HANDSHAKE -> OPEN -> (DRAIN -> LINGER) -> CLOSED. */
typedef enum conn_state {
  CS_HANDSHAKE, /* TLS handshake (plain connections skip it) */
  CS_OPEN,      /* the session runs */
  CS_DRAIN,     /* graceful close: sending what is queued */
  CS_LINGER,    /* write side shut; dropping what the client still sends */
  CS_CLOSED,    /* handles closing; freed in on_handle_closed */
} conn_state;

typedef struct tcp_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  h3g_tcp_listener *l;
  WOLFSSL *ssl;            /* NULL for plain TCP */
  h3g_h1_session *session; /* HTTP/1.1, or */
  h3g_h2_session *h2;      /* HTTP/2 (ALPN "h2") */
  conn_state state;
  unsigned pause;
  int reading;
  int eof;      /* the client closed its side */
  int eof_told; /* the session was told */
  int writing;  /* a uv_write is in flight */
  int open_handles;
  int queued; /* in l->kicked */
  int fatal;  /* output overflow or TLS error: close hard */
  int in_process;
  uint8_t *cin; /* ciphertext (or plain bytes) from the client */
  size_t cin_off, cin_len;
  uint8_t *pin; /* plaintext the session has not taken yet */
  size_t pin_off, pin_len;
  uint8_t *out; /* bytes for the client */
  size_t out_len, out_cap, inflight;
  char client[64];
  struct tcp_conn *prev, *next;   /* l->conns */
  struct tcp_conn *kprev, *knext; /* l->kicked, oldest first */
} tcp_conn;

struct h3g_tcp_listener {
  uv_loop_t *loop;
  const h3g_config *cfg;
  const char *name;
  WOLFSSL_CTX *ssl_ctx;
  const h3g_h1_env *env;
  uv_tcp_t server;
  uv_idle_t kick;
  uv_timer_t deadline;
  uint16_t port;
  size_t nconns;
  tcp_conn *conns;
  tcp_conn *kicked, *kicked_tail;
  size_t nkicked;
  int shutting_down;
  int closing;      /* the listener's own handles are closing */
  int open_handles; /* ours, plus refused sockets still closing */
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;
};

static void conn_process(tcp_conn *c);
static void conn_close(tcp_conn *c);
static void update_reading(tcp_conn *c);
static void maybe_finish_shutdown(h3g_tcp_listener *l);

/* ---- the session: HTTP/1.1 or HTTP/2, chosen by ALPN ---- */

static size_t sess_recv(tcp_conn *c, const uint8_t *data, size_t len) {
  return c->h2 != NULL ? h3g_h2_session_recv(c->h2, data, len)
                       : h3g_h1_session_recv(c->session, data, len);
}

static void sess_eof(tcp_conn *c) {
  if (c->h2 != NULL)
    h3g_h2_session_eof(c->h2);
  else
    h3g_h1_session_eof(c->session);
}

static void sess_process(tcp_conn *c) {
  if (c->h2 != NULL)
    h3g_h2_session_process(c->h2);
  else
    h3g_h1_session_process(c->session);
}

static void sess_on_timer(tcp_conn *c) {
  if (c->h2 != NULL)
    h3g_h2_session_on_timer(c->h2);
  else
    h3g_h1_session_on_timer(c->session);
}

static void sess_shutdown(tcp_conn *c) {
  if (c->h2 != NULL)
    h3g_h2_session_shutdown(c->h2);
  else
    h3g_h1_session_shutdown(c->session);
}

/* The shutdown deadline passed: what is still in flight ends now. */
static void sess_expire(tcp_conn *c) {
  if (c->h2 != NULL)
    h3g_h2_session_expire(c->h2);
  else if (c->session != NULL)
    h3g_h1_session_expire(c->session);
}

static void sess_free(tcp_conn *c) {
  h3g_h2_session_free(c->h2);
  c->h2 = NULL;
  h3g_h1_session_free(c->session);
  c->session = NULL;
}

/* ---- wolfSSL memory I/O ---- */

static int on_tls_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx) {
  tcp_conn *c = ctx;
  H3G_UNUSED(ssl);
  size_t avail = c->cin_len - c->cin_off;
  if (avail == 0)
    return c->eof ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
  size_t n = H3G_MIN(avail, (size_t)sz);
  memcpy(buf, c->cin + c->cin_off, n);
  c->cin_off += n;
  if (c->cin_off == c->cin_len)
    c->cin_off = c->cin_len = 0;
  return (int)n;
}

static int on_tls_send(WOLFSSL *ssl, char *buf, int sz, void *ctx) {
  tcp_conn *c = ctx;
  H3G_UNUSED(ssl);
  if ((size_t)sz > c->out_cap - c->out_len) {
    c->fatal = 1;
    return WOLFSSL_CBIO_ERR_GENERAL;
  }
  memcpy(c->out + c->out_len, buf, (size_t)sz);
  c->out_len += (size_t)sz;
  return sz;
}

/* ---- kicks ---- */

static void on_kick(uv_idle_t *h);

static void kick(tcp_conn *c) {
  h3g_tcp_listener *l = c->l;
  if (c->queued || c->state == CS_CLOSED)
    return;
  c->queued = 1;
  c->knext = NULL;
  c->kprev = l->kicked_tail;
  if (l->kicked_tail != NULL)
    l->kicked_tail->knext = c;
  else
    l->kicked = c;
  l->kicked_tail = c;
  if (l->nkicked++ == 0)
    uv_idle_start(&l->kick, on_kick);
}

static void unkick(tcp_conn *c) {
  h3g_tcp_listener *l = c->l;
  if (!c->queued)
    return;
  if (c->kprev != NULL)
    c->kprev->knext = c->knext;
  else
    l->kicked = c->knext;
  if (c->knext != NULL)
    c->knext->kprev = c->kprev;
  else
    l->kicked_tail = c->kprev;
  c->queued = 0;
  c->knext = c->kprev = NULL;
  if (--l->nkicked == 0)
    uv_idle_stop(&l->kick);
}

/* Runs once per loop iteration while connections are queued. Only as many
 * as were queued on entry are processed: one that kicks itself again
 * waits for the next iteration, after the loop polled for I/O. */
static void on_kick(uv_idle_t *h) {
  h3g_tcp_listener *l = h->data;
  for (size_t n = l->nkicked; n > 0 && l->kicked != NULL; n--) {
    tcp_conn *c = l->kicked;
    unkick(c);
    conn_process(c);
  }
}

/* ---- output ---- */

static void on_write(uv_write_t *req, int status);

static void flush(tcp_conn *c) {
  if (c->writing || c->out_len == 0 || c->state == CS_CLOSED)
    return;
  uv_buf_t b = uv_buf_init((char *)c->out, (unsigned)c->out_len);
  c->inflight = c->out_len;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    c->inflight = 0;
    c->fatal = 1;
    return;
  }
  c->writing = 1;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  tcp_conn *c = req->data;
  H3G_UNUSED(status);
  if (c->state != CS_LINGER)
    return;
  if (c->eof)
    conn_close(c);
}

static void on_linger_timer(uv_timer_t *t) {
  conn_close(t->data);
}

/* In DRAIN once the output is empty: close_notify, then shut down. */
static void drain_step(tcp_conn *c) {
  if (c->state != CS_DRAIN || c->writing || c->out_len > 0)
    return;
  c->state = CS_LINGER;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_linger_timer, LINGER_MS, 0);
  c->pause = 0;
  update_reading(c);
}

static void on_write(uv_write_t *req, int status) {
  tcp_conn *c = H3G_CONTAINER_OF(req, tcp_conn, wreq);
  c->writing = 0;
  if (c->state == CS_CLOSED)
    return;
  if (status != 0) {
    h3g_debug("%s %s: write: %s", c->l->name, c->client, uv_strerror(status));
    conn_close(c);
    return;
  }
  memmove(c->out, c->out + c->inflight, c->out_len - c->inflight);
  c->out_len -= c->inflight;
  c->inflight = 0;
  if (c->state == CS_DRAIN) {
    flush(c);
    drain_step(c);
    return;
  }
  /* The session may have more body for the room made. */
  kick(c);
}

/* ---- transport ops for the session ---- */

static size_t t_room(void *t) {
  tcp_conn *c = t;
  if (c->state != CS_OPEN || c->out_len >= OUT_SOFT)
    return 0;
  return OUT_SOFT - c->out_len;
}

static int t_write(void *t, const uint8_t *data, size_t len) {
  tcp_conn *c = t;
  if (c->state != CS_OPEN || c->fatal)
    return H3G_ERR_CLOSED;
  if (c->ssl == NULL) {
    if (len > c->out_cap - c->out_len) {
      c->fatal = 1;
      kick(c);
      return H3G_ERR_TOOBIG;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
  } else {
    while (len > 0) {
      int n = (int)H3G_MIN(len, (size_t)PIN_CAP);
      int rv = wolfSSL_write(c->ssl, data, n);
      if (rv != n) {
        c->fatal = 1;
        kick(c);
        return H3G_ERR_TOOBIG;
      }
      data += n;
      len -= (size_t)n;
    }
  }
  kick(c);
  return 0;
}

static void t_kick(void *t) {
  kick(t);
}

static void on_session_timer(uv_timer_t *h);

static void t_set_timer(void *t, uint64_t ms) {
  tcp_conn *c = t;
  if (c->state != CS_OPEN)
    return;
  uv_timer_stop(&c->timer);
  if (ms > 0)
    uv_timer_start(&c->timer, on_session_timer, ms, 0);
}

static void t_close(void *t, int graceful) {
  tcp_conn *c = t;
  if (c->state != CS_OPEN)
    return;
  if (!graceful) {
    /* Not now: the session is on the stack; conn_process closes. */
    c->fatal = 1;
    kick(c);
    return;
  }
  c->state = CS_DRAIN;
  uv_timer_stop(&c->timer);
  /* The shutdown deadline (or LINGER_MS once the output is out) bounds a
   * client that never reads. */
  uv_timer_start(&c->timer, on_linger_timer, c->l->cfg->tcp_idle_timeout_ms, 0);
  if (c->ssl != NULL)
    wolfSSL_shutdown(c->ssl); /* close_notify into the output */
  kick(c);
}

static uint64_t t_rtt_ns(void *t) {
  tcp_conn *c = t;
  uv_os_fd_t fd;
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
      getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
    return 0;
  return (uint64_t)ti.tcpi_rtt * 1000u;
}

static const h3g_h1_transport_ops transport_ops = {
    .room = t_room,
    .write = t_write,
    .kick = t_kick,
    .set_timer = t_set_timer,
    .close = t_close,
    .rtt_ns = t_rtt_ns,
};

/* ---- input ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tcp_conn *c = h->data;
  H3G_UNUSED(suggested);
  /* Lingering, what is left of the input is dropped: a full buffer would
   * make libuv report ENOBUFS, and the close that follows would reset the
   * connection under the response it is lingering for. */
  if (c->state == CS_LINGER || (c->cin_off > 0 && c->cin_off == c->cin_len))
    c->cin_off = c->cin_len = 0;
  if (c->cin_off > 0 && c->cin_len == CIN_CAP) {
    memmove(c->cin, c->cin + c->cin_off, c->cin_len - c->cin_off);
    c->cin_len -= c->cin_off;
    c->cin_off = 0;
  }
  *buf = uv_buf_init((char *)c->cin + c->cin_len,
                     (unsigned)(CIN_CAP - c->cin_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tcp_conn *c = s->data;
  H3G_UNUSED(buf);
  if (nread == 0 || c->state == CS_CLOSED)
    return;
  if (c->state == CS_LINGER) {
    /* Dropped: the exchange is over. */
    c->cin_off = c->cin_len = 0;
    if (nread < 0)
      conn_close(c);
    return;
  }
  if (nread == UV_EOF) {
    c->eof = 1;
  } else if (nread < 0) {
    h3g_debug("%s %s: read: %s", c->l->name, c->client,
              uv_strerror((int)nread));
    conn_close(c);
    return;
  } else {
    c->cin_len += (size_t)nread;
  }
  conn_process(c);
}

static void update_reading(tcp_conn *c) {
  if (c->state == CS_CLOSED)
    return;
  int want;
  if (c->state == CS_LINGER) {
    want = !c->eof;
  } else if (c->state == CS_DRAIN) {
    want = 0;
  } else {
    c->pause &= ~(unsigned)(PAUSE_CIN | PAUSE_OUT);
    if (c->cin_len == CIN_CAP && c->cin_off == 0)
      c->pause |= PAUSE_CIN;
    if (c->out_len >= OUT_SOFT)
      c->pause |= PAUSE_OUT;
    want = c->pause == 0 && !c->eof;
  }
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

static void on_session_timer(uv_timer_t *h) {
  tcp_conn *c = h->data;
  if (c->state == CS_HANDSHAKE) {
    h3g_debug("%s %s: handshake timeout", c->l->name, c->client);
    H3G_INC(tcp_handshake_failures);
    conn_close(c);
    return;
  }
  if (c->state == CS_OPEN && (c->session != NULL || c->h2 != NULL)) {
    sess_on_timer(c);
    conn_process(c);
  }
}

/* Completes the handshake as far as the bytes allow. 0: go on (done or
 * waiting), -1: closed. */
static int handshake(tcp_conn *c) {
  if (c->ssl != NULL) {
    int rv = wolfSSL_accept(c->ssl);
    if (rv != WOLFSSL_SUCCESS) {
      int err = wolfSSL_get_error(c->ssl, rv);
      if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
        if (c->eof) {
          H3G_INC(tcp_handshake_failures);
          conn_close(c);
          return -1;
        }
        return 0;
      }
      char buf[WOLFSSL_MAX_ERROR_SZ];
      h3g_debug("%s %s: TLS handshake failed: %s", c->l->name, c->client,
                wolfSSL_ERR_error_string((unsigned long)err, buf));
      H3G_INC(tcp_handshake_failures);
      /* The alert wolfSSL queued goes out before the close. */
      flush(c);
      conn_close(c);
      return -1;
    }
  }
  uv_timer_stop(&c->timer);
  c->state = CS_OPEN;
  if (c->ssl != NULL && wolfSSL_session_reused(c->ssl))
    H3G_INC(tcp_resumptions);
  char *proto = NULL;
  unsigned short plen = 0;
  int h2 = c->ssl != NULL &&
           wolfSSL_ALPN_GetProtocol(c->ssl, &proto, &plen) == WOLFSSL_SUCCESS &&
           plen == 2 && memcmp(proto, "h2", 2) == 0;
  int rv =
      h2 ? h3g_h2_session_new(&c->h2, c->l->env, &transport_ops, c, c->client)
         : h3g_h1_session_new(&c->session, c->l->env, &transport_ops, c,
                              c->client);
  if (h2 && rv == 0)
    H3G_INC(h2_connections);
  if (rv != 0) {
    conn_close(c);
    return -1;
  }
  if (c->l->shutting_down)
    sess_shutdown(c);
  return 0;
}

/* Reads plaintext into pin. Returns >0 bytes, 0 nothing now, -1 closed. */
static int read_plain(tcp_conn *c) {
  if (c->ssl == NULL) {
    size_t n = H3G_MIN(c->cin_len - c->cin_off, (size_t)PIN_CAP);
    if (n == 0)
      return 0;
    memcpy(c->pin, c->cin + c->cin_off, n);
    c->cin_off += n;
    if (c->cin_off == c->cin_len)
      c->cin_off = c->cin_len = 0;
    c->pin_off = 0;
    c->pin_len = n;
    return (int)n;
  }
  int rv = wolfSSL_read(c->ssl, c->pin, PIN_CAP);
  if (rv > 0) {
    c->pin_off = 0;
    c->pin_len = (size_t)rv;
    return rv;
  }
  int err = wolfSSL_get_error(c->ssl, rv);
  if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
    return 0;
  if (err == WOLFSSL_ERROR_ZERO_RETURN || c->eof) {
    c->eof = 1; /* close_notify, or TCP EOF */
    return 0;
  }
  char buf[WOLFSSL_MAX_ERROR_SZ];
  h3g_debug("%s %s: TLS read: %s", c->l->name, c->client,
            wolfSSL_ERR_error_string((unsigned long)err, buf));
  conn_close(c);
  return -1;
}

/*
 * Everything a connection can do now: handshake, deliver plaintext to the
 * session, let the session write, flush, and adjust reading.
 */
static void conn_process(tcp_conn *c) {
  if (c->state == CS_CLOSED || c->in_process)
    return;
  c->in_process = 1;
  if (c->state == CS_HANDSHAKE && handshake(c) != 0)
    return; /* closed */
  if (c->state == CS_OPEN) {
    sess_process(c);
    for (int round = 0;
         round < ROUNDS_PER_PROCESS && c->state == CS_OPEN && !c->fatal;
         round++) {
      if (c->pin_len > 0) {
        size_t n =
            sess_recv(c, c->pin + c->pin_off, c->pin_len);
        c->pin_off += n;
        c->pin_len -= n;
        if (c->pin_len > 0) {
          c->pause |= PAUSE_SESSION;
          break;
        }
        c->pause &= ~(unsigned)PAUSE_SESSION;
        sess_process(c);
        continue;
      }
      int rv = read_plain(c);
      if (rv < 0)
        return; /* closed */
      if (rv == 0) {
        if (c->eof && !c->eof_told && c->cin_len == c->cin_off) {
          c->eof_told = 1;
          sess_eof(c);
          sess_process(c);
        }
        break;
      }
    }
    if (c->state == CS_OPEN && c->pin_len == 0 && c->cin_len > c->cin_off &&
        !(c->pause & PAUSE_SESSION))
      kick(c); /* more input than one round took */
  }
  if (c->fatal) {
    conn_close(c);
    return;
  }
  flush(c);
  if (c->fatal) {
    conn_close(c);
    return;
  }
  drain_step(c);
  if (c->state != CS_CLOSED) {
    update_reading(c);
    c->in_process = 0;
  }
}

/* ---- connections ---- */

static void conn_free(tcp_conn *c) {
  h3g_tcp_listener *l = c->l;
  sess_free(c);
  if (c->ssl != NULL)
    wolfSSL_free(c->ssl);
  free(c->cin);
  free(c->pin);
  free(c->out);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    l->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  l->nconns--;
  H3G_DEC(tcp_connections_active);
  free(c);
  maybe_finish_shutdown(l);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  tcp_conn *c = h->data;
  if (--c->open_handles == 0)
    conn_free(c);
}

static void conn_close(tcp_conn *c) {
  if (c->state == CS_CLOSED)
    return;
  c->state = CS_CLOSED;
  unkick(c);
  /* The session's bridge releases its upstream side now, not after the
   * handles are closed: nothing of the session runs after this. */
  sess_free(c);
  c->session = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void client_name(uv_tcp_t *tcp, char *buf, size_t cap) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char ip[64] = "?";
  int port = 0;
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
      uv_ip4_name(a, ip, sizeof(ip));
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, ip, sizeof(ip));
      port = ntohs(a->sin6_port);
    }
  }
  snprintf(buf, cap, "%s:%d", ip, port);
}

static void listener_handle_gone(h3g_tcp_listener *l) {
  if (--l->open_handles > 0)
    return;
  void (*cb)(void *) = l->shutdown_cb;
  void *arg = l->shutdown_arg;
  free(l);
  if (cb != NULL)
    cb(arg);
}

static void on_listener_handle_closed(uv_handle_t *h) {
  listener_handle_gone(h->data);
}

static void on_refused_closed(uv_handle_t *h) {
  h3g_tcp_listener *l = h->data;
  free(h);
  listener_handle_gone(l);
}

/* wolfSSL (without OPENSSL_ALL, so no select callback) takes the client's
 * first protocol that is on this list: clients list h2 first. */
static const unsigned char alpn_list[] = "h2,http/1.1";

static void on_connection(uv_stream_t *server, int status) {
  h3g_tcp_listener *l = server->data;
  if (status != 0) {
    h3g_warn("%s: accept: %s", l->name, uv_strerror(status));
    return;
  }
  if (l->nconns >= l->cfg->tcp_max_connections || l->shutting_down) {
    uv_tcp_t *t = malloc(sizeof(*t));
    if (t == NULL)
      return;
    uv_tcp_init(l->loop, t);
    t->data = l;
    l->open_handles++;
    if (uv_accept(server, (uv_stream_t *)t) == 0)
      H3G_INC(tcp_connections_refused);
    uv_close((uv_handle_t *)t, on_refused_closed);
    return;
  }
  tcp_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->l = l;
  /* Heads are written whatever the soft limit says: room for an interim
   * and a final one, each up to max_header_size plus our additions. */
  c->out_cap =
      OUT_SOFT + 2 * ((size_t)l->cfg->max_header_size + 1024) + TLS_SLACK * 8;
  c->cin = malloc(CIN_CAP);
  c->pin = malloc(PIN_CAP);
  c->out = malloc(c->out_cap);
  uv_tcp_init(l->loop, &c->tcp);
  uv_timer_init(l->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = l->conns;
  if (l->conns != NULL)
    l->conns->prev = c;
  l->conns = c;
  l->nconns++;
  H3G_INC(tcp_connections_accepted);
  H3G_INC(tcp_connections_active);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || c->cin == NULL ||
      c->pin == NULL || c->out == NULL) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  client_name(&c->tcp, c->client, sizeof(c->client));
  if (l->ssl_ctx != NULL) {
    c->ssl = wolfSSL_new(l->ssl_ctx);
    if (c->ssl == NULL) {
      conn_close(c);
      return;
    }
    wolfSSL_SetIOReadCtx(c->ssl, c);
    wolfSSL_SetIOWriteCtx(c->ssl, c);
    /* "h2" or "http/1.1" when the client offers them; a client without
     * ALPN, or with only protocols we lack, still gets HTTP/1.1. */
    wolfSSL_UseALPN(c->ssl, (char *)(uintptr_t)alpn_list,
                    sizeof(alpn_list) - 1, WOLFSSL_ALPN_CONTINUE_ON_MISMATCH);
    c->state = CS_HANDSHAKE;
    uv_timer_start(&c->timer, on_session_timer,
                   l->cfg->tcp_handshake_timeout_ms, 0);
  } else {
    c->state = CS_HANDSHAKE; /* completes at once in handshake() */
  }
  conn_process(c);
}

/* ---- listener ---- */

/* A congestion control the kernel does not have: an error, H3G_ERR_INVAL. */
static int unknown_congestion_control(const char *name) {
  h3g_error("[tcp] congestion_control: the kernel has no \"%s\" (see "
            "/proc/sys/net/ipv4/tcp_available_congestion_control)",
            name);
  return H3G_ERR_INVAL;
}

/*
 * [tcp] congestion_control: set on the listening socket, which the kernel
 * hands on to every connection it accepts (a route's congctl still wins).
 * Returns 0, or H3G_ERR_INVAL when the kernel has no such algorithm. One
 * the kernel has but does not allow this process (not listed in
 * net.ipv4.tcp_allowed_congestion_control, without CAP_NET_ADMIN) is a
 * warning: connections keep the system's default.
 */

static int set_congestion_control_fd(int fd, const char *name,
                                     const char *what) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name,
                 (socklen_t)strlen(name)) == 0) {
    h3g_debug("%s: TCP congestion control %s", what, name);
    return 0;
  }
  int err = errno;
  if (err == ENOENT)
    return unknown_congestion_control(name);
  h3g_warn("[tcp] congestion_control: \"%s\" is not allowed here (%s; see "
           "net.ipv4.tcp_allowed_congestion_control): %s connections use "
           "the system default",
           name, strerror(err), what);
  return 0;
}

static int set_congestion_control(uv_tcp_t *server, const char *name,
                                  const char *what) {
  uv_os_fd_t fd;
  if (name[0] == '\0' || uv_fileno((uv_handle_t *)server, &fd) != 0)
    return 0;
  return set_congestion_control_fd(fd, name, what);
}

int h3g_tcp_congestion_check(const char *name) {
  if (name[0] == '\0')
    return 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return 0; /* nothing to ask: the listener's own setsockopt will say */
  int err = 0;
  if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name,
                 (socklen_t)strlen(name)) != 0)
    err = errno;
  close(fd);
  return err == ENOENT ? unknown_congestion_control(name) : 0;
}

int h3g_tcp_listener_set_congestion_control(h3g_tcp_listener *l,
                                            const char *name) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&l->server, &fd) != 0)
    return 0;
  if (name[0] != '\0')
    return set_congestion_control_fd(fd, name, l->name);
  /* Back to the system's default: a listening socket has no "unset", so
   * the default is named. */
  char def[32] = "";
  FILE *f = fopen("/proc/sys/net/ipv4/tcp_congestion_control", "r");
  if (f != NULL) {
    if (fgets(def, sizeof(def), f) == NULL)
      def[0] = '\0';
    fclose(f);
  }
  def[strcspn(def, " \n")] = '\0';
  if (def[0] == '\0') {
    h3g_warn("%s: cannot read the system's TCP congestion control: new "
             "connections keep the one set before",
             l->name);
    return 0;
  }
  return set_congestion_control_fd(fd, def, l->name);
}

int h3g_tcp_listener_new(h3g_tcp_listener **pl, void *loop,
                         const h3g_config *cfg, const char *name,
                         const char *address, uint16_t port, h3g_tls_ctx *tls,
                         const h3g_h1_env *env) {
  struct sockaddr_storage ss;
  int rv;

  *pl = NULL;
  if (uv_ip4_addr(address, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(address, port, (struct sockaddr_in6 *)&ss) != 0) {
    h3g_error("%s: bad address %s", name, address);
    return H3G_ERR_INVAL;
  }
  h3g_tcp_listener *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return H3G_ERR_NOMEM;
  l->loop = loop;
  l->cfg = cfg;
  l->name = name;
  l->env = env;
  if (tls != NULL) {
    l->ssl_ctx = h3g_tls_ctx_native(tls);
    wolfSSL_CTX_SetIORecv(l->ssl_ctx, on_tls_recv);
    wolfSSL_CTX_SetIOSend(l->ssl_ctx, on_tls_send);
  }
  uv_tcp_init(l->loop, &l->server);
  uv_idle_init(l->loop, &l->kick);
  uv_timer_init(l->loop, &l->deadline);
  l->server.data = l->kick.data = l->deadline.data = l;
  l->open_handles = 3;

  rv = uv_tcp_bind(&l->server, (const struct sockaddr *)&ss, 0);
  if (rv == 0 &&
      set_congestion_control(&l->server, cfg->tcp_congestion_control, name) !=
          0)
    rv = UV_EINVAL;
  else if (rv == 0)
    rv = uv_listen((uv_stream_t *)&l->server, 511, on_connection);
  if (rv != 0) {
    h3g_error("%s: cannot listen on %s port %u: %s", name, address, port,
              uv_strerror(rv));
    /* l is freed once its handles are closed. */
    l->shutting_down = l->closing = 1;
    uv_close((uv_handle_t *)&l->server, on_listener_handle_closed);
    uv_close((uv_handle_t *)&l->kick, on_listener_handle_closed);
    uv_close((uv_handle_t *)&l->deadline, on_listener_handle_closed);
    return rv == UV_EADDRINUSE ? H3G_ERR_INUSE : H3G_ERR_IO;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  uv_tcp_getsockname(&l->server, (struct sockaddr *)&bound, &blen);
  l->port = h3g_sockaddr_port((struct sockaddr *)&bound);
  if (strchr(address, ':') != NULL)
    h3g_info("listening on %s [%s]:%u", name, address, l->port);
  else
    h3g_info("listening on %s %s:%u", name, address, l->port);
  *pl = l;
  return 0;
}

uint16_t h3g_tcp_listener_port(const h3g_tcp_listener *l) {
  return l->port;
}

/* The server handle closed at the start of the shutdown; the other two
 * once the last connection is gone. */
static void maybe_finish_shutdown(h3g_tcp_listener *l) {
  if (!l->shutting_down || l->closing || l->nconns > 0)
    return;
  l->closing = 1;
  uv_close((uv_handle_t *)&l->kick, on_listener_handle_closed);
  uv_close((uv_handle_t *)&l->deadline, on_listener_handle_closed);
}

static void on_deadline(uv_timer_t *t) {
  h3g_tcp_listener *l = t->data;
  if (l->nconns > 0)
    h3g_info("%s: shutdown deadline: closing %zu connections", l->name,
             l->nconns);
  tcp_conn *c = l->conns;
  while (c != NULL) {
    tcp_conn *next = c->next;
    if (c->state == CS_OPEN)
      sess_expire(c);
    conn_close(c);
    c = next;
  }
}

void h3g_tcp_listener_set_tls(h3g_tcp_listener *l, h3g_tls_ctx *tls) {
  if (l->ssl_ctx == NULL || tls == NULL)
    return;
  l->ssl_ctx = h3g_tls_ctx_native(tls);
  wolfSSL_CTX_SetIORecv(l->ssl_ctx, on_tls_recv);
  wolfSSL_CTX_SetIOSend(l->ssl_ctx, on_tls_send);
}

void h3g_tcp_listener_expire(h3g_tcp_listener *l) {
  if (l->shutting_down && !l->closing)
    uv_timer_start(&l->deadline, on_deadline, 0, 0);
}

void h3g_tcp_listener_shutdown(h3g_tcp_listener *l, uint64_t deadline_ms,
                               void (*cb)(void *arg), void *arg) {
  l->shutting_down = 1;
  l->shutdown_cb = cb;
  l->shutdown_arg = arg;
  uv_close((uv_handle_t *)&l->server, on_listener_handle_closed);
  for (tcp_conn *c = l->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->state == CS_HANDSHAKE)
      conn_close(c);
    else if (c->state == CS_OPEN) {
      sess_shutdown(c);
      kick(c);
    }
  }
  uv_timer_start(&l->deadline, on_deadline, deadline_ms, 0);
  maybe_finish_shutdown(l);
}
