/*
 * upstream_pool over TLS against a wolfSSL server on 127.0.0.1 in the same
 * loop (each accepted socket gets a server session fed from libuv reads;
 * what it sends goes out with uv_write). As test_upstream_pool.c: each
 * case drives a scenario from callbacks, runs the loop until every handle
 * is closed, then asserts the totals. Certificates are made at run time by
 * certs/make-certs.sh.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <wolfssl/options.h>

#include <wolfssl/ssl.h>

#include "log.h"
#include "metrics.h"
#include "unit.h"
#include "upstream_pool.h"
#include "upstream_tls.h"

static uv_loop_t loop;
static char dir[64], ca_file[128], chain_file[128], key_file[128];

/* ---- a TLS echo server --------------------------------------------------- */

typedef enum srv_mode {
  SRV_ECHO, /* TLS, writes back whatever it decrypts */
  SRV_HOLD, /* accepts and never reads nor writes */
} srv_mode;

typedef struct srv_conn {
  uv_tcp_t h;
  struct srv *s;
  struct srv_conn *prev, *next;
  WOLFSSL *ssl;
  uint8_t *in; /* ciphertext received, not yet read by wolfSSL */
  size_t in_off, in_len, in_cap;
  int accepted;
  char buf[16384];
} srv_conn;

typedef struct srv {
  uv_tcp_t listener;
  WOLFSSL_CTX *ctx;
  int started, closed;
  uint16_t port;
  srv_mode mode;
  int accepts, handshakes, resumed;
  srv_conn *conns;
} srv;

typedef struct srv_write {
  uv_write_t req;
  char data[];
} srv_write;

static void on_srv_conn_close(uv_handle_t *h) {
  srv_conn *sc = h->data;
  if (sc->prev != NULL)
    sc->prev->next = sc->next;
  else
    sc->s->conns = sc->next;
  if (sc->next != NULL)
    sc->next->prev = sc->prev;
  wolfSSL_free(sc->ssl);
  free(sc->in);
  free(sc);
}

static void srv_conn_close(srv_conn *sc) {
  if (!uv_is_closing((uv_handle_t *)&sc->h))
    uv_close((uv_handle_t *)&sc->h, on_srv_conn_close);
}

static int srv_io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg) {
  (void)ssl;
  srv_conn *sc = arg;
  size_t n = sc->in_len - sc->in_off;
  if (n == 0)
    return WOLFSSL_CBIO_ERR_WANT_READ;
  if (n > (size_t)sz)
    n = (size_t)sz;
  memcpy(buf, sc->in + sc->in_off, n);
  sc->in_off += n;
  if (sc->in_off == sc->in_len)
    sc->in_off = sc->in_len = 0;
  return (int)n;
}

static void on_srv_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static int srv_io_send(WOLFSSL *ssl, char *buf, int sz, void *arg) {
  (void)ssl;
  srv_conn *sc = arg;
  if (uv_is_closing((uv_handle_t *)&sc->h))
    return WOLFSSL_CBIO_ERR_CONN_CLOSE;
  srv_write *w = malloc(sizeof(*w) + (size_t)sz);
  memcpy(w->data, buf, (size_t)sz);
  uv_buf_t b = uv_buf_init(w->data, (unsigned int)sz);
  if (uv_write(&w->req, (uv_stream_t *)&sc->h, &b, 1, on_srv_written) != 0) {
    free(w);
    return WOLFSSL_CBIO_ERR_CONN_CLOSE;
  }
  return sz;
}

static void on_srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  srv_conn *sc = h->data;
  (void)suggested;
  buf->base = sc->buf;
  buf->len = sizeof(sc->buf);
}

static void on_srv_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  srv_conn *sc = st->data;
  if (nread < 0) {
    srv_conn_close(sc);
    return;
  }
  if (nread == 0)
    return;
  if (sc->in_len + (size_t)nread > sc->in_cap) {
    sc->in_cap = (sc->in_len + (size_t)nread) * 2;
    sc->in = realloc(sc->in, sc->in_cap);
  }
  memcpy(sc->in + sc->in_len, buf->base, (size_t)nread);
  sc->in_len += (size_t)nread;
  if (!sc->accepted) {
    int r = wolfSSL_accept(sc->ssl);
    if (r != WOLFSSL_SUCCESS) {
      if (wolfSSL_get_error(sc->ssl, r) != WOLFSSL_ERROR_WANT_READ)
        srv_conn_close(sc);
      return;
    }
    sc->accepted = 1;
    sc->s->handshakes++;
    sc->s->resumed += wolfSSL_session_reused(sc->ssl) == 1;
  }
  char plain[16384];
  for (;;) {
    int r = wolfSSL_read(sc->ssl, plain, sizeof(plain));
    if (r <= 0) {
      if (wolfSSL_get_error(sc->ssl, r) != WOLFSSL_ERROR_WANT_READ)
        srv_conn_close(sc);
      return;
    }
    CHECK_EQ_INT(wolfSSL_write(sc->ssl, plain, r), r);
  }
}

static void on_srv_connection(uv_stream_t *l, int status) {
  srv *s = l->data;
  if (status != 0)
    return;
  srv_conn *sc = calloc(1, sizeof(*sc));
  sc->s = s;
  uv_tcp_init(&loop, &sc->h);
  sc->h.data = sc;
  sc->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = sc;
  s->conns = sc;
  if (uv_accept(l, (uv_stream_t *)&sc->h) != 0) {
    srv_conn_close(sc);
    return;
  }
  s->accepts++;
  if (s->mode == SRV_HOLD)
    return;
  sc->ssl = wolfSSL_new(s->ctx);
  wolfSSL_SetIOReadCtx(sc->ssl, sc);
  wolfSSL_SetIOWriteCtx(sc->ssl, sc);
  uv_read_start((uv_stream_t *)&sc->h, on_srv_alloc, on_srv_read);
}

static void srv_start(srv *s, srv_mode mode) {
  struct sockaddr_in a;
  struct sockaddr_storage got;
  int len = sizeof(got);
  s->mode = mode;
  s->ctx = wolfSSL_CTX_new(wolfTLSv1_3_server_method());
  CHECK(s->ctx != NULL);
  CHECK(wolfSSL_CTX_use_certificate_chain_file(s->ctx, chain_file) ==
        WOLFSSL_SUCCESS);
  CHECK(wolfSSL_CTX_use_PrivateKey_file(
            s->ctx, key_file, WOLFSSL_FILETYPE_PEM) == WOLFSSL_SUCCESS);
  wolfSSL_CTX_SetIORecv(s->ctx, srv_io_recv);
  wolfSSL_CTX_SetIOSend(s->ctx, srv_io_send);
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&loop, &s->listener);
  s->listener.data = s;
  CHECK_EQ_INT(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
  CHECK_EQ_INT(uv_listen((uv_stream_t *)&s->listener, 64, on_srv_connection),
               0);
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
  s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
  s->started = 1;
}

/* Sends close_notify on every accepted connection, keeping the sockets. */
static void srv_close_notify(srv *s) {
  for (srv_conn *sc = s->conns; sc != NULL; sc = sc->next)
    if (sc->ssl != NULL && sc->accepted)
      wolfSSL_shutdown(sc->ssl);
}

static void srv_close(srv *s) {
  if (!s->started || s->closed)
    return;
  s->closed = 1;
  for (srv_conn *sc = s->conns; sc != NULL; sc = sc->next)
    srv_conn_close(sc);
  uv_close((uv_handle_t *)&s->listener, NULL);
}

/* ---- the pool's users ---------------------------------------------------- */

enum { EV_READY, EV_FAIL, EV_READ, EV_EOF, EV_ERROR, EV_WRITTEN };

#define BIG (256 * 1024)

typedef struct user user;
struct user {
  h3g_upstream_waiter w;
  h3g_upconn *conn;
  int ready, reused, fails, fail_err, reads, eofs, errors, err;
  int written, written_status;
  size_t got;
  size_t room;   /* what on_alloc offers */
  uint8_t *data; /* everything read, in order (BIG bytes) */
  uint8_t rbuf[4096];
  void (*hook)(user *u, int ev);
};

static struct {
  h3g_upstream_pool *pool;
  h3g_upstream_tls_ctx *tls;
  srv srv;
  uv_timer_t step, watchdog;
  void (*step_fn)(void);
  int pool_closed;
  h3g_metrics m0;
} g;

#define DELTA(name) (h3g_stats.name - g.m0.name)
#define OPS h3g_upstream_pool_ops

static void on_ready(void *ctx, h3g_upconn *conn, int reused) {
  user *u = ctx;
  u->ready++;
  u->conn = conn;
  u->reused = reused;
  if (u->hook != NULL)
    u->hook(u, EV_READY);
}

static void on_fail(void *ctx, int err) {
  user *u = ctx;
  u->fails++;
  u->fail_err = err;
  if (u->hook != NULL)
    u->hook(u, EV_FAIL);
}

static void on_alloc(void *ctx, uint8_t **buf, size_t *len) {
  user *u = ctx;
  *buf = u->rbuf;
  *len = H3G_MIN(u->room, sizeof(u->rbuf));
}

static void on_read(void *ctx, size_t nread) {
  user *u = ctx;
  u->reads++;
  if (u->got + nread <= BIG)
    memcpy(u->data + u->got, u->rbuf, nread);
  u->got += nread;
  if (u->hook != NULL)
    u->hook(u, EV_READ);
}

static void on_eof(void *ctx) {
  user *u = ctx;
  u->eofs++;
  if (u->hook != NULL)
    u->hook(u, EV_EOF);
}

static void on_error(void *ctx, int err) {
  user *u = ctx;
  u->errors++;
  u->err = err;
  if (u->hook != NULL)
    u->hook(u, EV_ERROR);
}

static void on_written(void *ctx, int status) {
  user *u = ctx;
  u->written++;
  u->written_status = status;
  if (u->hook != NULL)
    u->hook(u, EV_WRITTEN);
}

static const h3g_upstream_events user_events = {
    .on_ready = on_ready,
    .on_fail = on_fail,
    .on_alloc = on_alloc,
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_written = on_written,
};

static uint8_t big_in[BIG];

static void user_init(user *u, void (*hook)(user *, int)) {
  uint8_t *data = u->data != NULL ? u->data : malloc(BIG);
  *u = (user){.hook = hook, .data = data, .room = sizeof(u->rbuf)};
  u->w = (h3g_upstream_waiter){.ev = &user_events, .ctx = u};
}

static h3g_upstream_pool_stats stats(void) {
  h3g_upstream_pool_stats st;
  h3g_upstream_pool_get_stats(g.pool, &st);
  return st;
}

/* ---- harness ------------------------------------------------------------- */

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "watchdog: test case hung\n");
  abort();
}

static void on_step(uv_timer_t *t) {
  (void)t;
  void (*fn)(void) = g.step_fn;
  g.step_fn = NULL;
  if (fn != NULL)
    fn();
}

static void after(uint64_t ms, void (*fn)(void)) {
  g.step_fn = fn;
  uv_timer_start(&g.step, on_step, ms, 0);
}

/* Starts a case: the loop, a server in mode, a client context trusting
 * the test CA and a pool of size 2 to it (sni NULL: the host, 127.0.0.1). */
static int begin(srv_mode mode, const char *sni, uint64_t connect_ms) {
  memset(&g, 0, sizeof(g));
  g.m0 = h3g_stats;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &g.step);
  uv_timer_init(&loop, &g.watchdog);
  uv_timer_start(&g.watchdog, on_watchdog, 10000, 0);
  uv_unref((uv_handle_t *)&g.watchdog);
  srv_start(&g.srv, mode);
  char err[256] = "";
  h3g_upstream_tls_config tc = {.ca_file = ca_file, .verify = 1};
  int rv = h3g_upstream_tls_ctx_new(&g.tls, &tc, err, sizeof(err));
  CHECK_EQ_INT(rv, 0);
  if (rv != 0)
    return rv;
  h3g_upstream_pool_config cfg = {
      .host = "127.0.0.1",
      .port = g.srv.port,
      .size = 2,
      .queue_size = 4,
      .connect_timeout_ms = connect_ms,
      .idle_timeout_ms = 10000,
      .tls = g.tls,
      .sni = sni,
  };
  rv = h3g_upstream_pool_new(&g.pool, &loop, &cfg);
  CHECK_EQ_INT(rv, 0);
  return rv;
}

static void on_pool_closed(void *arg) {
  (void)arg;
  g.pool_closed++;
  g.pool = NULL;
  srv_close(&g.srv);
}

static void finish(void) {
  h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
}

static void run_and_end(void) {
  if (g.pool != NULL) {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(g.pool_closed, 1);
  } else {
    srv_close(&g.srv);
  }
  uv_close((uv_handle_t *)&g.step, NULL);
  uv_close((uv_handle_t *)&g.watchdog, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  wolfSSL_CTX_free(g.srv.ctx);
  h3g_upstream_tls_ctx_free(g.tls);
  CHECK_EQ_INT(DELTA(upstream_conns_busy), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_idle), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_active), 0);
}

/* ---- cases --------------------------------------------------------------- */

static user u1, u2, u3;

/*
 * u1: a fresh TLS connection carries 256 KiB each way, byte for byte, and
 * goes back idle (the session ticket that arrived meanwhile did not spoil
 * it); u2 reuses it; u3, while u2 holds it, gets a second connection that
 * resumes the session.
 */
static void step_acquire_u2(void) {
  CHECK_EQ_INT(OPS.acquire(g.pool, &u2.w), 0);
}

static void echo_hook(user *u, int ev) {
  if (u == &u1 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 0);
    h3g_iovec iov[2] = {{big_in, 1000}, {big_in + 1000, BIG - 1000}};
    CHECK_EQ_INT(OPS.write(u->conn, iov, 2), 0);
    OPS.read_start(u->conn);
  } else if (u == &u1 && ev == EV_READ && u->got == BIG) {
    CHECK(memcmp(u->data, big_in, BIG) == 0);
    CHECK_EQ_INT(u->written, 1);
    CHECK_EQ_INT(u->written_status, 0);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(stats().idle, 1);
    after(50, step_acquire_u2);
  } else if (u == &u2 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 1);
    CHECK(u->conn == u1.conn);
    CHECK_EQ_INT(OPS.acquire(g.pool, &u3.w), 0);
  } else if (u == &u3 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 0);
    CHECK(u->conn != u2.conn);
    h3g_iovec iov = {(const uint8_t *)"ping", 4};
    CHECK_EQ_INT(OPS.write(u->conn, &iov, 1), 0);
    OPS.read_start(u->conn);
  } else if (u == &u3 && ev == EV_READ && u->got == 4) {
    CHECK(memcmp(u->data, "ping", 4) == 0);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.opened, 2);
    CHECK_EQ_INT(st.tls_resumed, 1);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_INT(g.srv.handshakes, 2);
    CHECK_EQ_INT(g.srv.resumed, 1);
    OPS.release(u2.conn, 1);
    OPS.release(u->conn, 1);
    finish();
  } else if (ev == EV_FAIL || ev == EV_ERROR || ev == EV_EOF) {
    CHECK(!"unexpected event");
    finish();
  }
}

static void test_tls_echo_reuse_resume(void) {
  for (size_t i = 0; i < BIG; i++)
    big_in[i] = (uint8_t)(i * 7 + (i >> 9));
  if (begin(SRV_ECHO, "localhost", 2000) != 0) {
    run_and_end();
    return;
  }
  user_init(&u1, echo_hook);
  user_init(&u2, echo_hook);
  user_init(&u3, echo_hook);
  CHECK_EQ_INT(OPS.acquire(g.pool, &u1.w), 0);
  run_and_end();
  CHECK_EQ_INT(u1.ready + u2.ready + u3.ready, 3);
  CHECK_EQ_INT(u1.fails + u2.fails + u3.fails, 0);
}

/* A name the certificate does not carry: on_fail(H3G_ERR_TLS). */
static void fail_hook(user *u, int ev) {
  if (ev == EV_FAIL) {
    CHECK_EQ_INT(u->fail_err, H3G_ERR_TLS);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.failed, 1);
    CHECK_EQ_INT(st.opened, 0);
    finish();
  } else {
    CHECK(!"unexpected event");
    if (ev == EV_READY)
      OPS.release(u->conn, 0);
    finish();
  }
}

static void test_tls_name_mismatch(void) {
  if (begin(SRV_ECHO, "other.example", 2000) != 0) {
    run_and_end();
    return;
  }
  user_init(&u1, fail_hook);
  CHECK_EQ_INT(OPS.acquire(g.pool, &u1.w), 0);
  run_and_end();
  CHECK_EQ_INT(u1.fails, 1);
  CHECK_EQ_INT(g.srv.accepts, 1);
}

/* A server that never answers the ClientHello: the connect timeout covers
 * the handshake. */
static void timeout_hook(user *u, int ev) {
  if (ev == EV_FAIL) {
    CHECK_EQ_INT(u->fail_err, H3G_ERR_TIMEOUT);
    finish();
  } else {
    CHECK(!"unexpected event");
    finish();
  }
}

static void test_tls_handshake_timeout(void) {
  if (begin(SRV_HOLD, NULL, 100) != 0) {
    run_and_end();
    return;
  }
  user_init(&u1, timeout_hook);
  CHECK_EQ_INT(OPS.acquire(g.pool, &u1.w), 0);
  run_and_end();
  CHECK_EQ_INT(u1.fails, 1);
  CHECK_EQ_INT(g.srv.accepts, 1);
}

/*
 * The host's IP address verified (sni NULL); the idle connection is then
 * dropped when the server sends close_notify on it.
 */
static void step_check_dropped(void) {
  h3g_upstream_pool_stats st = stats();
  CHECK_EQ_INT(st.idle, 0);
  CHECK_EQ_INT(st.closed, 1);
  finish();
}

static void step_close_notify(void) {
  CHECK_EQ_INT(stats().idle, 1);
  srv_close_notify(&g.srv);
  after(100, step_check_dropped);
}

static void notify_hook(user *u, int ev) {
  if (ev == EV_READY) {
    h3g_iovec iov = {(const uint8_t *)"hi", 2};
    CHECK_EQ_INT(OPS.write(u->conn, &iov, 1), 0);
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u->got == 2) {
    OPS.release(u->conn, 1);
    after(50, step_close_notify);
  } else if (ev != EV_READ && ev != EV_WRITTEN) {
    CHECK(!"unexpected event");
    finish();
  }
}

static void test_tls_idle_close_notify(void) {
  if (begin(SRV_ECHO, NULL, 2000) != 0) {
    run_and_end();
    return;
  }
  user_init(&u1, notify_hook);
  CHECK_EQ_INT(OPS.acquire(g.pool, &u1.w), 0);
  run_and_end();
  CHECK_EQ_INT(u1.ready, 1);
}

/* A busy connection reads the server's close_notify as on_eof. */
static void step_notify_busy(void) {
  srv_close_notify(&g.srv);
}

static void eof_hook(user *u, int ev) {
  if (ev == EV_READY) {
    h3g_iovec iov = {(const uint8_t *)"hi", 2};
    CHECK_EQ_INT(OPS.write(u->conn, &iov, 1), 0);
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u->got == 2) {
    after(20, step_notify_busy);
  } else if (ev == EV_EOF) {
    OPS.release(u->conn, 1); /* taken as 0: the connection ended */
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.idle, 0);
    finish();
  } else if (ev != EV_READ && ev != EV_WRITTEN) {
    CHECK(!"unexpected event");
    finish();
  }
}

static void test_tls_busy_close_notify(void) {
  if (begin(SRV_ECHO, NULL, 2000) != 0) {
    run_and_end();
    return;
  }
  user_init(&u1, eof_hook);
  CHECK_EQ_INT(OPS.acquire(g.pool, &u1.w), 0);
  run_and_end();
  CHECK_EQ_INT(u1.eofs, 1);
  CHECK_EQ_INT(u1.errors, 0);
}

/*
 * A user that stops reading after its first bytes, with the rest already
 * decrypted inside the session and nothing more to come from the socket,
 * gets the rest, byte for byte, once it reads again (delivered from the
 * loop, not from inside read_start()).
 */
static int resumed_from_call;

static void step_resume_reading(void) {
  CHECK_EQ_INT(u1.got, 5);
  int reads = u1.reads;
  resumed_from_call = 1;
  OPS.read_start(u1.conn);
  resumed_from_call = 0;
  CHECK_EQ_INT(u1.reads, reads);
}

static void pause_hook(user *u, int ev) {
  CHECK(!resumed_from_call);
  if (ev == EV_READY) {
    h3g_iovec iov = {(const uint8_t *)"hello world", 11};
    CHECK_EQ_INT(OPS.write(u->conn, &iov, 1), 0);
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u->reads == 1) {
    OPS.read_stop(u->conn);
    after(50, step_resume_reading);
  } else if (ev == EV_READ && u->got == 11) {
    CHECK(memcmp(u->data, "hello world", 11) == 0);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(stats().idle, 1);
    finish();
  } else if (ev != EV_READ && ev != EV_WRITTEN) {
    CHECK(!"unexpected event");
    finish();
  }
}

static void test_tls_read_pause_resume(void) {
  if (begin(SRV_ECHO, NULL, 2000) != 0) {
    run_and_end();
    return;
  }
  user_init(&u1, pause_hook);
  u1.room = 5;
  CHECK_EQ_INT(OPS.acquire(g.pool, &u1.w), 0);
  run_and_end();
  CHECK_EQ_INT(u1.got, 11);
  CHECK_EQ_INT(u1.reads, 3);
}

static int make_certs(void) {
  const char *src = getenv("H3G_SRC");
  char cmd[512];
  snprintf(dir, sizeof(dir), "/tmp/h3g_pooltls_XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  snprintf(cmd, sizeof(cmd), "bash %s/certs/make-certs.sh %s 2>/dev/null",
           src != NULL ? src : "../..", dir);
  if (system(cmd) != 0)
    return -1;
  snprintf(ca_file, sizeof(ca_file), "%s/ca.crt", dir);
  snprintf(chain_file, sizeof(chain_file), "%s/server-chain.crt", dir);
  snprintf(key_file, sizeof(key_file), "%s/server.key", dir);
  return 0;
}

int main(void) {
  if (getenv("H3G_TEST_DEBUG") != NULL)
    h3g_log_set_level(H3G_LOG_DEBUG);
  wolfSSL_Init();
  if (make_certs() != 0) {
    fprintf(stderr, "cannot make the test certificates\n");
    return 1;
  }
  RUN(test_tls_echo_reuse_resume);
  RUN(test_tls_name_mismatch);
  RUN(test_tls_handshake_timeout);
  RUN(test_tls_idle_close_notify);
  RUN(test_tls_busy_close_notify);
  RUN(test_tls_read_pause_resume);
  free(u1.data);
  free(u2.data);
  free(u3.data);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  wolfSSL_Cleanup();
  return unit_report();
}
