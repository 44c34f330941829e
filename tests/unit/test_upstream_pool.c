/*
 * upstream_pool against a real TCP server on 127.0.0.1 (or a Unix-socket
 * server) inside the same loop, in libuv's test style: each case starts the
 * server and a pool, drives a scenario from the callbacks, runs the loop until
 * every handle is closed, then asserts the totals. Timeouts are tens of
 * milliseconds; no assertion depends on timing beyond the order of events.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "metrics.h"
#include "unit.h"
#include "upstream_pool.h"

static uv_loop_t loop;

/* ---- a scripted upstream ------------------------------------------------- */

typedef enum srv_mode {
  SRV_ECHO,  /* writes back whatever it reads */
  SRV_HOLD,  /* accepts and never reads nor writes */
  SRV_RESET, /* resets the connection when a byte arrives */
  SRV_CLOSE, /* closes the connection (FIN) when a byte arrives */
  SRV_HALF,  /* echoes; at the client's EOF, writes "bye" and closes */
} srv_mode;

typedef union srv_handle {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} srv_handle;

typedef struct srv_conn {
  srv_handle h;
  struct srv *s;
  struct srv_conn *prev, *next;
  char buf[4096];
} srv_conn;

typedef struct srv {
  srv_handle listener;
  int started, closed;
  int unix_socket; /* listens on unix_path */
  char unix_path[64];
  uint16_t port;
  srv_mode mode;
  int accepts;
  /* how the reads of accepted connections ended: a clean EOF, a reset
   * (ECONNRESET), anything else */
  int eofs, resets, read_errors;
  srv_conn *conns;
} srv;

typedef struct echo_write {
  uv_write_t req;
  char data[4096];
} echo_write;

static void on_srv_conn_close(uv_handle_t *h) {
  srv_conn *sc = h->data;
  if (sc->prev != NULL)
    sc->prev->next = sc->next;
  else
    sc->s->conns = sc->next;
  if (sc->next != NULL)
    sc->next->prev = sc->prev;
  free(sc);
}

static void srv_conn_close(srv_conn *sc) {
  if (!uv_is_closing((uv_handle_t *)&sc->h))
    uv_close((uv_handle_t *)&sc->h, on_srv_conn_close);
}

static void on_srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  srv_conn *sc = h->data;
  (void)suggested;
  buf->base = sc->buf;
  buf->len = sizeof(sc->buf);
}

static void on_echo_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void on_bye_written(uv_write_t *req, int status) {
  srv_conn *sc = req->data;
  (void)status;
  free(req);
  srv_conn_close(sc);
}

static void on_srv_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  srv_conn *sc = st->data;
  if (nread < 0) {
    if (nread == UV_EOF)
      sc->s->eofs++;
    else if (nread == UV_ECONNRESET)
      sc->s->resets++;
    else
      sc->s->read_errors++;
    if (nread == UV_EOF && sc->s->mode == SRV_HALF &&
        !uv_is_closing((uv_handle_t *)&sc->h)) {
      /* Our side stays open for writing after the client's FIN. */
      uv_read_stop(st);
      uv_write_t *req = malloc(sizeof(*req));
      uv_buf_t b = uv_buf_init((char *)"bye", 3);
      req->data = sc;
      if (uv_write(req, st, &b, 1, on_bye_written) == 0)
        return;
      free(req);
    }
    srv_conn_close(sc);
    return;
  }
  if (nread == 0)
    return;
  if (sc->s->mode == SRV_RESET) {
    if (!uv_is_closing((uv_handle_t *)&sc->h))
      uv_tcp_close_reset(&sc->h.tcp, on_srv_conn_close);
    return;
  }
  if (sc->s->mode == SRV_CLOSE) {
    srv_conn_close(sc);
    return;
  }
  echo_write *ew = malloc(sizeof(*ew));
  memcpy(ew->data, buf->base, (size_t)nread);
  uv_buf_t b = uv_buf_init(ew->data, (unsigned int)nread);
  if (uv_write(&ew->req, st, &b, 1, on_echo_written) != 0)
    free(ew);
}

static void on_srv_connection(uv_stream_t *l, int status) {
  srv *s = l->data;
  if (status != 0)
    return;
  srv_conn *sc = calloc(1, sizeof(*sc));
  sc->s = s;
  if (s->unix_socket)
    uv_pipe_init(&loop, &sc->h.pipe, 0);
  else
    uv_tcp_init(&loop, &sc->h.tcp);
  sc->h.handle.data = sc;
  sc->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = sc;
  s->conns = sc;
  if (uv_accept(l, (uv_stream_t *)&sc->h) != 0) {
    srv_conn_close(sc);
    return;
  }
  s->accepts++;
  if (s->mode != SRV_HOLD)
    uv_read_start((uv_stream_t *)&sc->h, on_srv_alloc, on_srv_read);
}

/* Cases run over Unix sockets when this is set: srv_start() and
 * make_pool() then use unix_path() instead of 127.0.0.1. */
static int over_unix;

static const char *unix_path(int n) {
  static char path[2][64];
  snprintf(path[n], sizeof(path[n]), "/tmp/h3g-test-pool-%ld-%d.sock",
           (long)getpid(), n);
  return path[n];
}

static void srv_start_unix(srv *s, srv_mode mode, const char *path) {
  s->mode = mode;
  s->unix_socket = 1;
  snprintf(s->unix_path, sizeof(s->unix_path), "%s", path);
  unlink(path);
  uv_pipe_init(&loop, &s->listener.pipe, 0);
  s->listener.handle.data = s;
  CHECK_EQ_INT(uv_pipe_bind(&s->listener.pipe, path), 0);
  CHECK_EQ_INT(uv_listen(&s->listener.stream, 64, on_srv_connection), 0);
  s->started = 1;
}

static void srv_start(srv *s, srv_mode mode) {
  struct sockaddr_in a;
  struct sockaddr_storage got;
  int len = sizeof(got);
  if (over_unix) {
    srv_start_unix(s, mode, unix_path(0));
    return;
  }
  s->mode = mode;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&loop, &s->listener.tcp);
  s->listener.handle.data = s;
  CHECK_EQ_INT(uv_tcp_bind(&s->listener.tcp, (const struct sockaddr *)&a, 0),
               0);
  CHECK_EQ_INT(uv_listen(&s->listener.stream, 64, on_srv_connection), 0);
  uv_tcp_getsockname(&s->listener.tcp, (struct sockaddr *)&got, &len);
  s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
  s->started = 1;
}

/* Closes the server's side of every accepted connection. */
static void srv_close_conns(srv *s) {
  for (srv_conn *sc = s->conns; sc != NULL; sc = sc->next)
    srv_conn_close(sc);
}

static void srv_close(srv *s) {
  if (!s->started || s->closed)
    return;
  s->closed = 1;
  srv_close_conns(s);
  uv_close(&s->listener.handle, NULL);
  if (s->unix_socket)
    unlink(s->unix_path);
}

/* A port on 127.0.0.1 where nothing listens. */
static uint16_t dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  bind(fd, (struct sockaddr *)&a, sizeof(a));
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

/* ---- the pool's users ---------------------------------------------------- */

enum { EV_READY, EV_FAIL, EV_ALLOC, EV_READ, EV_EOF, EV_ERROR, EV_WRITTEN };

typedef struct user user;
struct user {
  h3g_upstream_waiter w;
  int id;
  h3g_upconn *conn;
  int ready, reused, fails, fail_err, allocs, reads, eofs, errors, err;
  int written, written_status, events;
  int after_health; /* events that came right after an on_health */
  size_t got;
  uint8_t data[64]; /* everything read, in order */
  size_t room;      /* what on_alloc offers; 0 = no room */
  uint8_t rbuf[64];
  void (*hook)(user *u, int ev);
};

/* What one test case shares with its callbacks. */
static struct {
  h3g_upstream_pool *pool;
  srv srv, srv2;
  uv_timer_t step, watchdog;
  void (*step_fn)(void);
  int pool_closed;
  int order[8], norder;
  int health_ok, health_bad; /* on_health(1) and (0) calls */
  int health_pending;        /* an on_health no user event followed yet */
  h3g_metrics m0;
} g;

static void on_health(void *arg, int ok) {
  CHECK(arg == &g);
  if (ok)
    g.health_ok++;
  else
    g.health_bad++;
  g.health_pending = 1;
}

/* Every user event notes whether an on_health came just before it. */
static void note_event(user *u) {
  u->events++;
  u->after_health += g.health_pending;
  g.health_pending = 0;
}

#define DELTA(name) (h3g_stats.name - g.m0.name)
#define OPS h3g_upstream_pool_ops

static void on_ready(void *ctx, h3g_upconn *conn, int reused) {
  user *u = ctx;
  u->ready++;
  note_event(u);
  u->conn = conn;
  u->reused = reused;
  if (g.norder < (int)H3G_ARRAY_LEN(g.order))
    g.order[g.norder++] = u->id;
  if (u->hook != NULL)
    u->hook(u, EV_READY);
}

static void on_fail(void *ctx, int err) {
  user *u = ctx;
  u->fails++;
  note_event(u);
  u->fail_err = err;
  if (u->hook != NULL)
    u->hook(u, EV_FAIL);
}

static void on_alloc(void *ctx, uint8_t **buf, size_t *len) {
  user *u = ctx;
  u->allocs++;
  *buf = u->rbuf;
  *len = H3G_MIN(u->room, sizeof(u->rbuf));
  if (u->hook != NULL)
    u->hook(u, EV_ALLOC);
}

static void on_read(void *ctx, size_t nread) {
  user *u = ctx;
  u->reads++;
  note_event(u);
  if (u->got + nread <= sizeof(u->data))
    memcpy(u->data + u->got, u->rbuf, nread);
  u->got += nread;
  if (u->hook != NULL)
    u->hook(u, EV_READ);
}

static void on_eof(void *ctx) {
  user *u = ctx;
  u->eofs++;
  note_event(u);
  if (u->hook != NULL)
    u->hook(u, EV_EOF);
}

static void on_error(void *ctx, int err) {
  user *u = ctx;
  u->errors++;
  note_event(u);
  u->err = err;
  if (u->hook != NULL)
    u->hook(u, EV_ERROR);
}

static void on_written(void *ctx, int status) {
  user *u = ctx;
  u->written++;
  note_event(u);
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

static void user_init(user *u, int id, void (*hook)(user *, int)) {
  *u = (user){.id = id, .room = sizeof(u->rbuf), .hook = hook};
  u->w = (h3g_upstream_waiter){.ev = &user_events, .ctx = u};
}

static int acquire(user *u) {
  return OPS.acquire(g.pool, &u->w);
}

static void send_str(user *u, const char *s) {
  h3g_iovec iov = {.base = (const uint8_t *)s, .len = strlen(s)};
  CHECK_EQ_INT(OPS.write(u->conn, &iov, 1), 0);
}

static h3g_upstream_pool_stats stats(void) {
  h3g_upstream_pool_stats st;
  h3g_upstream_pool_get_stats(g.pool, &st);
  return st;
}

/* Whether address text "ip:port" ends in port. */
static int same_port(const char *address, uint16_t port) {
  const char *colon = strrchr(address, ':');
  return colon != NULL && strtoul(colon + 1, NULL, 10) == port;
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

/* Runs fn from the loop after ms (one step pending at a time). */
static void after(uint64_t ms, void (*fn)(void)) {
  g.step_fn = fn;
  uv_timer_start(&g.step, on_step, ms, 0);
}

static void begin(void) {
  memset(&g, 0, sizeof(g));
  g.m0 = h3g_stats;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &g.step);
  uv_timer_init(&loop, &g.watchdog);
  uv_timer_start(&g.watchdog, on_watchdog, 10000, 0);
  uv_unref((uv_handle_t *)&g.watchdog);
}

/*
 * Makes g.pool for 127.0.0.1:port. Returns 0, or the error of
 * h3g_upstream_pool_new (a failed CHECK): the case must then call abandon()
 * and return, as nothing it would drive exists.
 */
static int make_pool_cfg(h3g_upstream_pool_config *cfg) {
  cfg->on_health = on_health;
  cfg->health_arg = &g;
  int rv = h3g_upstream_pool_new(&g.pool, &loop, cfg);
  CHECK_EQ_INT(rv, 0);
  return rv;
}

static int make_pool(uint16_t port, uint32_t size, uint32_t queue,
                     uint64_t connect_ms, uint64_t idle_ms) {
  h3g_upstream_pool_config cfg = {
      .host = "127.0.0.1",
      .port = port,
      .unix_path = over_unix ? unix_path(0) : NULL,
      .size = size,
      .queue_size = queue,
      .connect_timeout_ms = connect_ms,
      .idle_timeout_ms = idle_ms,
  };
  return make_pool_cfg(&cfg);
}

/* Ends a case whose pool could not be made: closes what begin() and
 * srv_start() opened, so that the next case starts afresh. */
static void abandon(void) {
  srv_close(&g.srv);
  srv_close(&g.srv2);
  uv_close((uv_handle_t *)&g.step, NULL);
  uv_close((uv_handle_t *)&g.watchdog, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void on_pool_closed(void *arg) {
  (void)arg;
  g.pool_closed++;
  g.pool = NULL;
  srv_close(&g.srv);
  srv_close(&g.srv2);
}

/* Ends the case: closes the pool, then (from its callback) the server. */
static void finish(void) {
  h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
}

static void run_and_end(void) {
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(g.pool_closed, 1);
  uv_close((uv_handle_t *)&g.step, NULL);
  uv_close((uv_handle_t *)&g.watchdog, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(g.health_pending, 0); /* each was followed by a user event */
  /* Every gauge the pool moves is back to where it was. */
  CHECK_EQ_INT(DELTA(upstream_conns_busy), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_idle), 0);
  CHECK_EQ_INT(DELTA(upstream_queue_waiting), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_active), 0);
}

/* ---- cases --------------------------------------------------------------- */

static user u1, u2, u3, u4, u5, u6;

/* Fresh connect (its time noted in the waiter), write, read, release;
 * the next acquire reuses it (connect time 0). */
static void reuse_hook(user *u, int ev) {
  if (u == &u1 && ev == EV_READY) {
    h3g_iovec iov[9] = {{(const uint8_t *)"x", 1}};
    CHECK_EQ_INT(u->reused, 0);
    /* Opened for it: how long that took, at least 1 us, under the
     * connect timeout (1 s here). */
    CHECK(u->w.connect_us >= 1 && u->w.connect_us < 1000000);
    CHECK_EQ_INT(OPS.write(u->conn, iov, 0), H3G_ERR_INVAL);
    CHECK_EQ_INT(OPS.write(u->conn, iov, 9), H3G_ERR_INVAL);
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (u == &u1 && ev == EV_READ && u->got == 4) {
    CHECK_MEM(u->data, u->got, "ping");
    CHECK_EQ_INT(u->written, 1);
    CHECK_EQ_INT(u->written_status, 0);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(stats().idle, 1);
    u2.w.connect_us = 99; /* a waiter reused: acquire starts it over */
    CHECK_EQ_INT(acquire(&u2), 0);
    CHECK_EQ_INT(u2.ready, 0); /* never answered from inside acquire */
    CHECK_EQ_INT(stats().busy, 1);
    CHECK_EQ_INT(stats().idle, 0);
  } else if (u == &u2 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 1);
    CHECK_EQ_INT(u->w.connect_us, 0); /* kept alive: no connect */
    CHECK(u->conn == u1.conn);
    OPS.release(u->conn, 1);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.opened, 1);
    CHECK_EQ_INT(st.reused, 1);
    CHECK_EQ_INT(st.idle, 1);
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_INT(st.closed, 0);
    finish();
  }
}

static void test_connect_write_read_reuse(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 2, 4, 1000, 10000) != 0) {
    abandon();
    return;
  }
  CHECK(strcmp(OPS.name(g.pool), "127.0.0.1:") > 0);
  user_init(&u1, 1, reuse_hook);
  user_init(&u2, 2, reuse_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(u1.ready, 0);
  CHECK_EQ_INT(stats().connecting, 1);
  run_and_end();
  CHECK_EQ_INT(g.srv.accepts, 1);
  CHECK_EQ_INT(u1.ready, 1);
  CHECK_EQ_INT(u2.ready, 1);
  CHECK_EQ_INT(u1.fails + u2.fails + u1.errors + u2.errors, 0);
  CHECK_EQ_INT(DELTA(upstream_connects), 1);
  CHECK_EQ_INT(DELTA(upstream_reuses), 1);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 1);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
  CHECK_EQ_INT(DELTA(upstream_connect_failures), 0);
  /* u1's response began (u2 read nothing): one good signal, just before
   * u1's on_read. */
  CHECK_EQ_INT(g.health_ok, 1);
  CHECK_EQ_INT(g.health_bad, 0);
  CHECK_EQ_INT(u1.after_health, 1);
}

/* size 1: later acquires wait and are served in arrival order. */
static void fifo_hook(user *u, int ev) {
  if (ev != EV_READY)
    return;
  if (u == &u1) {
    CHECK_EQ_INT(stats().waiting, 2);
    CHECK_EQ_INT(u->reused, 0);
  } else {
    CHECK_EQ_INT(u->reused, 1);
    CHECK(u->conn == u1.conn);
  }
  OPS.release(u->conn, 1);
  if (u == &u3)
    finish();
}

static void test_size_limit_fifo(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 4, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, fifo_hook);
  user_init(&u2, 2, fifo_hook);
  user_init(&u3, 3, fifo_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  CHECK_EQ_INT(acquire(&u3), 0);
  CHECK_EQ_INT(acquire(&u3), H3G_ERR_INVAL); /* already waiting */
  h3g_upstream_pool_stats st = stats();
  CHECK_EQ_INT(st.connecting, 1);
  CHECK_EQ_INT(st.waiting, 2);
  CHECK_EQ_INT(DELTA(upstream_queue_waiting), 2);
  run_and_end();
  CHECK_EQ_INT(g.norder, 3);
  CHECK_EQ_INT(g.order[0], 1);
  CHECK_EQ_INT(g.order[1], 2);
  CHECK_EQ_INT(g.order[2], 3);
  CHECK_EQ_INT(g.srv.accepts, 1);
  CHECK_EQ_INT(DELTA(upstream_reuses), 2);
}

/*
 * RFC 9218 in the wait queue: requests of one client connection are served
 * most urgent first (a PRIORITY_UPDATE moves a queued one), client
 * connections take turns, so urgency never lets one overtake another.
 */
static void urgency_hook(user *u, int ev) {
  if (ev != EV_READY)
    return;
  if (u == &u1) {
    CHECK_EQ_INT(stats().waiting, 5);
    /* The client raises u6 (u=6) to u=1 while it waits. */
    OPS.set_urgency(g.pool, &u6.w, 1);
    CHECK_EQ_INT(u6.w.urgency, 1);
  }
  OPS.release(u->conn, 1);
  if (g.norder == 6)
    finish();
}

static void test_queue_urgency_and_turns(void) {
  static int conn_a, conn_b;
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 8, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user *all[] = {&u1, &u2, &u3, &u4, &u5, &u6};
  const void *group[] = {&conn_a, &conn_a, &conn_a, &conn_a, &conn_b, &conn_a};
  uint8_t urgency[] = {3, 6, 6, 0, 7, 6};
  for (int i = 0; i < 6; i++) {
    user_init(all[i], i + 1, urgency_hook);
    all[i]->w.group = group[i];
    all[i]->w.urgency = urgency[i];
    CHECK_EQ_INT(acquire(all[i]), 0);
  }
  run_and_end();
  /* u1 had the connection; then conn_a's most urgent (u4), conn_b's turn
   * (u5, however low its urgency), conn_a's raised u6, then arrival. */
  int want[] = {1, 4, 5, 6, 2, 3};
  CHECK_EQ_INT(g.norder, 6);
  for (int i = 0; i < 6; i++)
    CHECK_EQ_INT(g.order[i], want[i]);
  CHECK_EQ_INT(g.srv.accepts, 1);
}

/* Idle connections are reused most recently released first. */
static void lifo_hook(user *u, int ev) {
  if (ev != EV_READY)
    return;
  if (u == &u3) {
    CHECK(u->conn == u2.conn);
    CHECK_EQ_INT(u->reused, 1);
    OPS.release(u->conn, 1);
    finish();
    return;
  }
  if (u1.ready + u2.ready < 2)
    return;
  CHECK(u1.conn != u2.conn);
  OPS.release(u1.conn, 1);
  OPS.release(u2.conn, 1);
  CHECK_EQ_INT(stats().idle, 2);
  CHECK_EQ_INT(acquire(&u3), 0);
}

static void test_idle_lifo(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 2, 2, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, lifo_hook);
  user_init(&u2, 2, lifo_hook);
  user_init(&u3, 3, lifo_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  run_and_end();
  CHECK_EQ_INT(u3.ready, 1);
  CHECK_EQ_INT(g.srv.accepts, 2);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 2);
}

/* Queue full: NOMEM. Then pool_close with a waiter and a busy connection:
 * the waiter fails at once, the busy connection keeps working until it is
 * released. */
static void close_busy_hook(user *u, int ev) {
  if (u == &u1 && ev == EV_READY) {
    h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
    CHECK_EQ_INT(u2.fails, 1);
    CHECK_EQ_INT(u2.fail_err, H3G_ERR_CLOSED);
    CHECK_EQ_INT(acquire(&u4), H3G_ERR_CLOSED);
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (u == &u1 && ev == EV_READ && u->got == 4) {
    CHECK_EQ_INT(g.pool_closed, 0);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(g.pool_closed, 0); /* only from a close callback */
  }
}

static void test_queue_full_and_close_busy(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, close_busy_hook);
  user_init(&u2, 2, close_busy_hook);
  user_init(&u3, 3, close_busy_hook);
  user_init(&u4, 4, close_busy_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  CHECK_EQ_INT(acquire(&u3), H3G_ERR_NOMEM);
  CHECK_EQ_INT(DELTA(upstream_queue_rejected), 1);
  CHECK_EQ_INT(stats().waiting, 1);
  run_and_end();
  CHECK_EQ_INT(u1.ready, 1);
  CHECK_EQ_INT(u1.got, 4);
  CHECK_EQ_INT(u2.events, 1);
  CHECK_EQ_INT(u3.events, 0);
  CHECK_EQ_INT(u4.events, 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 1);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
}

/* A queued waiter times out after connect_timeout_ms. */
static void queue_timeout_hook(user *u, int ev) {
  if (u == &u2 && ev == EV_FAIL) {
    CHECK_EQ_INT(u->fail_err, H3G_ERR_AGAIN); /* not a connect timeout */
    CHECK_EQ_INT(u1.ready, 1);
    CHECK_EQ_INT(stats().waiting, 0);
    CHECK_EQ_INT(stats().failed, 0);
    OPS.release(u1.conn, 1);
    finish();
  }
}

static void test_queue_timeout(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 2, 30, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, queue_timeout_hook);
  user_init(&u2, 2, queue_timeout_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  run_and_end();
  CHECK_EQ_INT(u2.fails, 1);
  CHECK_EQ_INT(u2.ready, 0);
  CHECK_EQ_INT(DELTA(upstream_timeouts), 1);
  CHECK_EQ_INT(g.health_ok + g.health_bad, 0); /* busy is not broken */
}

/* Nothing listens: each waiter gets its own attempt, and REFUSED. */
static void refused_hook(user *u, int ev) {
  (void)u;
  if (ev == EV_FAIL && u1.fails + u2.fails == 2) {
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.failed, 2);
    CHECK_EQ_INT(st.opened, 0);
    CHECK_EQ_INT(st.connecting + st.waiting + st.busy + st.idle, 0);
    finish();
  }
}

static void test_connect_refused(void) {
  begin();
  if (make_pool(dead_port(), 1, 2, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, refused_hook);
  user_init(&u2, 2, refused_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  CHECK_EQ_INT(u1.fails, 0);
  run_and_end();
  CHECK_EQ_INT(u1.fails, 1);
  CHECK_EQ_INT(u1.fail_err, H3G_ERR_REFUSED);
  CHECK_EQ_INT(u2.fails, 1);
  CHECK_EQ_INT(u2.fail_err, H3G_ERR_REFUSED);
  CHECK_EQ_INT(u1.ready + u2.ready, 0);
  CHECK_EQ_INT(DELTA(upstream_connect_failures), 2);
  CHECK_EQ_INT(DELTA(upstream_connects), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 0);
  /* One bad signal per failed connect, each just before its on_fail. */
  CHECK_EQ_INT(g.health_bad, 2);
  CHECK_EQ_INT(g.health_ok, 0);
  CHECK_EQ_INT(u1.after_health, 1);
  CHECK_EQ_INT(u2.after_health, 1);
}

/*
 * Connect timeout. A listening socket that is never accepted from, with a
 * backlog of 0, holds one handshaken connection; Linux then drops further
 * SYNs, so our connect neither succeeds nor fails until its timer.
 */
static void connect_timeout_hook(user *u, int ev) {
  if (ev == EV_READY) /* this kernel completed the handshake anyway */
    OPS.release(u->conn, 0);
  finish();
}

static void test_connect_timeout(void) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  CHECK_EQ_INT(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  CHECK_EQ_INT(listen(lfd, 0), 0);
  getsockname(lfd, (struct sockaddr *)&a, &len);
  int fill[2];
  for (size_t i = 0; i < H3G_ARRAY_LEN(fill); i++) {
    fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rv = connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    CHECK(rv == 0 || errno == EINPROGRESS);
  }
  begin();
  if (make_pool(ntohs(a.sin_port), 1, 2, 40, 10000) != 0) {
    abandon();
    goto out;
  }
  user_init(&u1, 1, connect_timeout_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  if (u1.ready == 1) {
    printf("connect timeout: kernel accepted beyond the backlog; skipped\n");
  } else {
    CHECK_EQ_INT(u1.fails, 1);
    CHECK_EQ_INT(u1.fail_err, H3G_ERR_TIMEOUT);
    CHECK_EQ_INT(DELTA(upstream_timeouts), 1);
    CHECK_EQ_INT(DELTA(upstream_connect_failures), 1);
    CHECK_EQ_INT(g.health_bad, 1);
    CHECK_EQ_INT(u1.after_health, 1);
  }
out:
  for (size_t i = 0; i < H3G_ARRAY_LEN(fill); i++)
    close(fill[i]);
  close(lfd);
}

/* The upstream closes an idle connection: the watcher drops it, and the
 * next acquire opens a new one. */
static void idle_closed_wait(void) {
  h3g_upstream_pool_stats st = stats();
  if (st.idle != 0) {
    after(5, idle_closed_wait);
    return;
  }
  CHECK_EQ_INT(st.closed, 1);
  CHECK_EQ_INT(acquire(&u2), 0);
}

static int idle_closed_immediate;

static void idle_closed_hook(user *u, int ev) {
  if (u == &u1 && ev == EV_READY) {
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (u == &u1 && ev == EV_READ && u->got == 4) {
    OPS.release(u->conn, 1);
    srv_close_conns(&g.srv);
    if (idle_closed_immediate) {
      /* Still on the idle list: the FIN is only known to the kernel. */
      CHECK_EQ_INT(stats().idle, 1);
      CHECK_EQ_INT(acquire(&u2), 0);
      CHECK_EQ_INT(stats().idle, 0);
    } else {
      after(5, idle_closed_wait);
    }
  } else if (u == &u2 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 0);
    CHECK_EQ_INT(g.srv.accepts, 2);
    OPS.release(u->conn, 1);
    finish();
  }
}

static void idle_closed_case(int immediate) {
  idle_closed_immediate = immediate;
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 2, 2, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, idle_closed_hook);
  user_init(&u2, 2, idle_closed_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u2.ready, 1);
  CHECK_EQ_INT(u1.events, 3); /* ready, written, read */
  CHECK_EQ_INT(DELTA(upstream_connects), 2);
  CHECK_EQ_INT(DELTA(upstream_reuses), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 2);
}

static void test_idle_closed_by_upstream(void) {
  idle_closed_case(0);
}

/* Same, with acquire in the very callback that closed the upstream side:
 * the peek at reuse time finds the FIN. */
static void test_idle_closed_seen_at_acquire(void) {
  idle_closed_case(1);
}

/* A connection released while the upstream has just closed it is not
 * handed to the waiter: the waiter gets a new one. The release runs from a
 * timer so that no poll phase (where the watcher would see the FIN) comes
 * between it and the hand-over. */
static void release_closed(void) {
  srv_close_conns(&g.srv);
  OPS.release(u1.conn, 1);
}

static void release_closed_hook(user *u, int ev) {
  if (u == &u1 && ev == EV_READY) {
    after(5, release_closed);
  } else if (u == &u2 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 0);
    CHECK(u->conn != u1.conn);
    CHECK_EQ_INT(g.srv.accepts, 2);
    OPS.release(u->conn, 1);
    finish();
  }
}

static void test_released_conn_closed_before_handoff(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, release_closed_hook);
  user_init(&u2, 2, release_closed_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  run_and_end();
  CHECK_EQ_INT(u2.ready, 1);
  CHECK_EQ_INT(u2.fails, 0);
  CHECK_EQ_INT(DELTA(upstream_reuses), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 2);
}

/* Idle connections expire. */
static void idle_expiry_wait(void) {
  h3g_upstream_pool_stats st = stats();
  if (st.idle != 0) {
    after(5, idle_expiry_wait);
    return;
  }
  CHECK_EQ_INT(st.closed, 1);
  CHECK_EQ_INT(st.busy + st.connecting + st.waiting, 0);
  finish();
}

static void idle_expiry_hook(user *u, int ev) {
  if (ev != EV_READY)
    return;
  OPS.release(u->conn, 1);
  CHECK_EQ_INT(stats().idle, 1);
  after(5, idle_expiry_wait);
}

static void test_idle_expiry(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 2, 2, 1000, 30) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, idle_expiry_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.ready, 1);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 1);
}

/* The read timeout fires while reading; release(0) closes and counts a
 * poisoned connection. */
static void read_timeout_hook(user *u, int ev) {
  if (ev == EV_READY) {
    OPS.set_read_timeout(u->conn, 30);
    OPS.read_start(u->conn);
  } else if (ev == EV_ERROR) {
    CHECK_EQ_INT(u->err, H3G_ERR_TIMEOUT);
    OPS.read_start(u->conn); /* dead: nothing more */
    OPS.release(u->conn, 0);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.closed, 1);
    CHECK_EQ_INT(st.busy + st.idle, 0);
    finish();
  }
}

static void test_read_timeout(void) {
  begin();
  srv_start(&g.srv, SRV_HOLD);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, read_timeout_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.errors, 1);
  CHECK_EQ_INT(u1.reads + u1.eofs, 0);
  CHECK_EQ_INT(DELTA(upstream_timeouts), 1);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 1);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 1);
  CHECK_EQ_INT(g.health_bad, 1);
  CHECK_EQ_INT(g.health_ok, 0);
  CHECK_EQ_INT(u1.after_health, 1);
}

/* read_stop pauses the read timeout; a timeout with reading never started
 * does not fire either. */
static int paused_phase;

static void read_paused_check(void) {
  CHECK_EQ_INT(u1.errors, 0); /* 4 timeouts' worth later: still nothing */
  paused_phase = 1;
  OPS.read_start(u1.conn);
}

static void read_stop_hook(user *u, int ev) {
  if (ev == EV_READY) {
    OPS.set_read_timeout(u->conn, 20);
    OPS.read_start(u->conn);
    OPS.read_stop(u->conn);
    after(80, read_paused_check);
  } else if (ev == EV_ERROR) {
    CHECK_EQ_INT(paused_phase, 1);
    CHECK_EQ_INT(u->err, H3G_ERR_TIMEOUT);
    OPS.release(u->conn, 0);
    finish();
  }
}

static void test_read_stop_pauses_timeout(void) {
  paused_phase = 0;
  begin();
  srv_start(&g.srv, SRV_HOLD);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, read_stop_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.errors, 1);
}

/* on_alloc with no room stops reading without an error (UV_ENOBUFS is
 * absorbed), and the read timeout is paused meanwhile. */
static void alloc_resume(void) {
  CHECK_EQ_INT(u1.reads, 0);
  CHECK_EQ_INT(u1.errors, 0);
  CHECK_EQ_INT(u1.allocs, 1);
  u1.room = sizeof(u1.rbuf);
  OPS.read_start(u1.conn);
}

static void alloc_zero_hook(user *u, int ev) {
  if (ev == EV_READY) {
    OPS.set_read_timeout(u->conn, 20);
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (ev == EV_ALLOC && u->room == 0 && u->allocs == 1) {
    after(60, alloc_resume);
  } else if (ev == EV_READ && u->got == 4) {
    CHECK_MEM(u->data, u->got, "ping");
    OPS.release(u->conn, 1);
    finish();
  }
}

static void test_alloc_zero_pauses(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, alloc_zero_hook);
  u1.room = 0;
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.errors + u1.eofs, 0);
  CHECK_EQ_INT(u1.got, 4);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
}

/* release(0) closes; the next acquire opens a new connection. */
static void not_reusable_hook(user *u, int ev) {
  if (ev != EV_READY)
    return;
  if (u == &u1) {
    OPS.release(u->conn, 0);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.closed, 1);
    CHECK_EQ_INT(st.idle + st.busy, 0);
    CHECK_EQ_INT(acquire(&u2), 0);
  } else {
    CHECK_EQ_INT(u->reused, 0);
    OPS.release(u->conn, 1);
    finish();
  }
}

static void test_release_not_reusable(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, not_reusable_hook);
  user_init(&u2, 2, not_reusable_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u2.ready, 1);
  CHECK_EQ_INT(g.srv.accepts, 2);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 1);
  CHECK_EQ_INT(DELTA(upstream_connects), 2);
}

/*
 * cancel in every waiting state: while its connection is being opened
 * (the connection is kept, idle), while an idle one is being handed over
 * (it goes back), and while queued (it is skipped).
 */
static void cancel_wait_idle(void) {
  if (stats().idle != 1) {
    after(5, cancel_wait_idle);
    return;
  }
  CHECK_EQ_INT(acquire(&u2), 0);
  CHECK_EQ_INT(stats().busy, 1);
  OPS.cancel(g.pool, &u2.w);
  OPS.cancel(g.pool, &u2.w); /* no-op */
  CHECK_EQ_INT(stats().idle, 1);
  CHECK_EQ_INT(acquire(&u3), 0);
}

static void cancel_hook(user *u, int ev) {
  if (u != &u3)
    return;
  if (ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 0); /* it never carried a request */
    CHECK_EQ_INT(acquire(&u4), 0);
    CHECK_EQ_INT(stats().waiting, 1);
    OPS.cancel(g.pool, &u4.w);
    CHECK_EQ_INT(stats().waiting, 0);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(stats().idle, 1);
    after(20, finish);
  }
}

static void test_cancel(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 2, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, cancel_hook);
  user_init(&u2, 2, cancel_hook);
  user_init(&u3, 3, cancel_hook);
  user_init(&u4, 4, cancel_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  OPS.cancel(g.pool, &u1.w);
  CHECK_EQ_INT(stats().connecting, 1);
  after(5, cancel_wait_idle);
  run_and_end();
  CHECK_EQ_INT(u1.events + u2.events + u4.events, 0);
  CHECK_EQ_INT(u3.ready, 1);
  CHECK_EQ_INT(g.srv.accepts, 1);
}

/* pool_close with a waiter in every state plus an idle and a busy
 * connection. */
static void close_all_hook(user *u, int ev) {
  if (ev == EV_READY && (u == &u1 || u == &u2)) {
    if (u == &u2)
      OPS.release(u->conn, 1);
    if (u1.ready + u2.ready < 2)
      return;
    CHECK_EQ_INT(acquire(&u3), 0); /* takes the idle one */
    CHECK_EQ_INT(acquire(&u5), 0); /* opens the third */
    CHECK_EQ_INT(acquire(&u4), 0); /* queued */
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.busy, 2);
    CHECK_EQ_INT(st.connecting, 1);
    CHECK_EQ_INT(st.waiting, 1);
    h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
    CHECK_EQ_INT(u3.fails + u4.fails + u5.fails, 3);
    CHECK_EQ_INT(acquire(&u6), H3G_ERR_CLOSED);
    send_str(&u1, "ping");
    OPS.read_start(u1.conn);
  } else if (u == &u1 && ev == EV_READ && u->got == 4) {
    OPS.release(u->conn, 1);
  }
}

static void test_pool_close_everything(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 3, 2, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, close_all_hook);
  user_init(&u2, 2, close_all_hook);
  user_init(&u3, 3, close_all_hook);
  user_init(&u4, 4, close_all_hook);
  user_init(&u5, 5, close_all_hook);
  user_init(&u6, 6, close_all_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(acquire(&u2), 0);
  run_and_end();
  CHECK_EQ_INT(u3.fail_err, H3G_ERR_CLOSED);
  CHECK_EQ_INT(u4.fail_err, H3G_ERR_CLOSED);
  CHECK_EQ_INT(u5.fail_err, H3G_ERR_CLOSED);
  CHECK_EQ_INT(u3.events + u4.events + u5.events, 3);
  CHECK_EQ_INT(u6.events, 0);
  CHECK_EQ_INT(u1.got, 4);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 2);
  CHECK_EQ_INT(g.health_bad, 0); /* shutting down says nothing of health */
}

/* No callback after release: not a pending write's completion (and
 * release(1) with a write pending closes), not the rest of a read. */
static uint8_t *big;
#define BIG_LEN (64u << 20)

static void pending_write_hook(user *u, int ev) {
  if (ev != EV_READY)
    return;
  h3g_iovec iov[2] = {{big, BIG_LEN / 2}, {big + BIG_LEN / 2, BIG_LEN / 2}};
  CHECK_EQ_INT(OPS.write(u->conn, iov, 2), 0);
  CHECK_EQ_INT(OPS.write(u->conn, iov, 1), H3G_ERR_INVAL); /* one at a time */
  OPS.read_start(u->conn);
  OPS.release(u->conn, 1);
  h3g_upstream_pool_stats st = stats();
  CHECK_EQ_INT(st.closed, 1);
  CHECK_EQ_INT(st.idle, 0);
  after(30, finish);
}

static void test_no_callback_after_release_write(void) {
  big = calloc(1, BIG_LEN);
  begin();
  srv_start(&g.srv, SRV_HOLD);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, pending_write_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.events, 1); /* on_ready only */
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 1);
  free(big);
}

static void inflight_wait(void) {
  if (stats().closed != 1) {
    after(5, inflight_wait);
    return;
  }
  CHECK_EQ_INT(stats().idle, 0);
  finish();
}

static void inflight_hook(user *u, int ev) {
  if (ev == EV_READY) {
    send_str(u, "abcdef");
    OPS.read_start(u->conn);
  } else if (ev == EV_READ) {
    /* The rest is on its way or already in the socket; the pool's
     * watcher reads it and drops the connection. */
    OPS.release(u->conn, 1);
    after(5, inflight_wait);
  }
}

static void test_no_callback_after_release_read(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, inflight_hook);
  u1.room = 2;
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.reads, 1);
  CHECK_EQ_INT(u1.got, 2);
  CHECK_EQ_INT(u1.eofs + u1.errors, 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 1);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
}

/* ---- health events ------------------------------------------------------- */

/*
 * The good signal comes once per hand-over, with the first byte, however
 * many reads follow; an EOF after response bytes is no failure.
 */
static void health_ok_hook(user *u, int ev) {
  if (ev == EV_READY && u == &u1) {
    send_str(u, "abcdef");
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u == &u1 && u->got == 6) {
    CHECK_EQ_INT(u->reads, 3); /* 2 bytes of room each time */
    CHECK_EQ_INT(g.health_ok, 1);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(acquire(&u2), 0);
  } else if (ev == EV_READY && u == &u2) {
    CHECK_EQ_INT(u->reused, 1);
    send_str(u, "xy");
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u == &u2 && u->got == 2) {
    CHECK_EQ_INT(g.health_ok, 2); /* a new hand-over, a new signal */
    srv_close_conns(&g.srv);
  } else if (ev == EV_EOF && u == &u2) {
    OPS.release(u->conn, 0);
    finish();
  }
}

static void test_health_first_byte_once(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, health_ok_hook);
  user_init(&u2, 2, health_ok_hook);
  u1.room = 2;
  CHECK_EQ_INT(acquire(&u1), 0);
  CHECK_EQ_INT(g.health_ok + g.health_bad, 0); /* never from acquire() */
  run_and_end();
  CHECK_EQ_INT(u1.got, 6);
  CHECK_EQ_INT(u2.eofs, 1);
  CHECK_EQ_INT(g.health_ok, 2);
  CHECK_EQ_INT(g.health_bad, 0);
  CHECK_EQ_INT(u1.after_health, 1); /* its first on_read only */
  CHECK_EQ_INT(u2.after_health, 1);
}

/* A reset while a request is out: on_health(0), then on_error(IO). */
static void health_reset_hook(user *u, int ev) {
  if (ev == EV_READY) {
    send_str(u, "GET");
    OPS.read_start(u->conn);
  } else if (ev == EV_ERROR || ev == EV_EOF) {
    OPS.release(u->conn, 0);
    finish();
  }
}

static void test_health_reset(void) {
  begin();
  srv_start(&g.srv, SRV_RESET);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, health_reset_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.errors, 1);
  CHECK_EQ_INT(u1.err, H3G_ERR_IO);
  CHECK_EQ_INT(u1.eofs, 0);
  CHECK_EQ_INT(g.health_bad, 1);
  CHECK_EQ_INT(g.health_ok, 0);
  CHECK_EQ_INT(u1.after_health, 1);
}

/*
 * EOF before any byte of a response is a failure, also on a connection
 * that answered its previous user: "any byte" counts from the hand-over.
 */
static void health_eof_hook(user *u, int ev) {
  if (ev == EV_READY && u == &u1) {
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u == &u1 && u->got == 4) {
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(acquire(&u2), 0);
  } else if (ev == EV_READY && u == &u2) {
    CHECK_EQ_INT(u->reused, 1);
    srv_close_conns(&g.srv); /* the upstream drops it unanswered */
    OPS.read_start(u->conn);
  } else if (ev == EV_EOF && u == &u2) {
    OPS.release(u->conn, 0);
    finish();
  }
}

static void test_health_eof_before_response(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, health_eof_hook);
  user_init(&u2, 2, health_eof_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u2.eofs, 1);
  CHECK_EQ_INT(g.health_ok, 1);
  CHECK_EQ_INT(g.health_bad, 1);
  CHECK_EQ_INT(u2.after_health, 1);
}

/* Same with a server that closes on the request of a fresh connection. */
static void test_health_eof_fresh(void) {
  begin();
  srv_start(&g.srv, SRV_CLOSE);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, health_reset_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.eofs + u1.errors, 1);
  CHECK_EQ_INT(g.health_bad, 1);
  CHECK_EQ_INT(g.health_ok, 0);
  CHECK_EQ_INT(u1.after_health, 1);
}

/* ---- tunnels (upgraded connections) ---------------------------------------
 */

/*
 * upgrade(): the connection now carries a tunnel and leaves the pool's
 * count: with size 1, a waiter queued behind it is served (by a new
 * connection) while the tunnel is still held and still works. Released,
 * even as reusable, the tunnel's connection is closed, never offered, and
 * not counted as poisoned; the next acquire gets the other, idle one.
 */
static void upgrade_hook(user *u, int ev) {
  if (u == &u1 && ev == EV_READY) {
    CHECK_EQ_INT(acquire(&u2), 0);
    CHECK_EQ_INT(stats().waiting, 1);
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (u == &u1 && ev == EV_READ && u->got == 4) {
    int64_t busy = h3g_stats.upstream_conns_busy;
    OPS.upgrade(u->conn);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.waiting, 0);
    CHECK_EQ_INT(st.connecting, 1); /* u2's, opened for the free slot */
    CHECK_EQ_INT(h3g_stats.upstream_conns_busy, busy - 1);
    CHECK_EQ_INT(u2.ready, 0); /* never answered from inside upgrade() */
    OPS.upgrade(u->conn);      /* a no-op once upgraded */
    CHECK_EQ_INT(stats().connecting, 1);
  } else if (u == &u2 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 0);
    CHECK(u->conn != u1.conn);
    CHECK_EQ_INT(g.srv.accepts, 2);
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(stats().idle, 1);
    /* The tunnel still carries bytes both ways. */
    send_str(&u1, "more");
  } else if (u == &u1 && ev == EV_READ && u->got == 8) {
    CHECK_MEM(u->data, u->got, "pingmore");
    int64_t poisoned = h3g_stats.upstream_conns_poisoned;
    uint64_t closed = stats().closed;
    OPS.release(u->conn, 1);
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.idle, 1); /* u2's only */
    CHECK_EQ_INT(st.closed, closed + 1);
    CHECK_EQ_INT(h3g_stats.upstream_conns_poisoned, poisoned);
    CHECK_EQ_INT(acquire(&u3), 0);
  } else if (u == &u3 && ev == EV_READY) {
    CHECK_EQ_INT(u->reused, 1);
    CHECK(u->conn == u2.conn);
    OPS.release(u->conn, 1);
    finish();
  }
}

static void test_upgrade_frees_slot(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 4, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, upgrade_hook);
  user_init(&u2, 2, upgrade_hook);
  user_init(&u3, 3, upgrade_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.ready + u2.ready + u3.ready, 3);
  CHECK_EQ_INT(u1.got, 8);
  CHECK_EQ_INT(u1.errors + u1.eofs + u2.errors + u3.errors, 0);
  CHECK_EQ_INT(g.srv.accepts, 2);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 2);
  CHECK_EQ_INT(DELTA(upstream_reuses), 1);
}

/*
 * A pool closed while a tunnel is held: the tunnel keeps working (as busy
 * connections do), and the pool finishes only once it was released.
 */
static void tunnel_release_late(void) {
  CHECK_EQ_INT(g.pool_closed, 0);
  CHECK_MEM(u1.data, u1.got, "pingpong");
  OPS.release(u1.conn, 0);
}

static void tunnel_close_hook(user *u, int ev) {
  if (ev == EV_READY) {
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u->got == 4) {
    OPS.upgrade(u->conn);
    h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
    CHECK_EQ_INT(g.pool_closed, 0);
    send_str(u, "pong");
  } else if (ev == EV_READ && u->got == 8) {
    after(20, tunnel_release_late);
  }
}

static void test_pool_close_waits_for_tunnel(void) {
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, tunnel_close_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.got, 8);
  CHECK_EQ_INT(u1.errors + u1.eofs, 0);
  CHECK_EQ_INT(DELTA(upstream_conns_closed), 1);
}

/*
 * shutdown_write(): refused while a write is pending; then our FIN reaches
 * the server (a clean EOF) while reading goes on, so the server's last
 * bytes and its own FIN still arrive. The tunnel's EOF says nothing of the
 * server's health.
 */
static void half_close_hook(user *u, int ev) {
  if (ev == EV_READY) {
    OPS.upgrade(u->conn);
    send_str(u, "x");
    CHECK_EQ_INT(OPS.shutdown_write(u->conn), H3G_ERR_INVAL);
    OPS.read_start(u->conn);
  } else if (ev == EV_WRITTEN) {
    CHECK_EQ_INT(OPS.shutdown_write(u->conn), 0);
    CHECK_EQ_INT(OPS.shutdown_write(u->conn), 0); /* once is enough */
    CHECK_EQ_INT(g.srv.eofs, 0);
  } else if (ev == EV_EOF) {
    CHECK_MEM(u->data, u->got, "xbye");
    CHECK_EQ_INT(g.srv.eofs, 1);
    OPS.release(u->conn, 0);
    finish();
  } else if (ev == EV_ERROR) {
    OPS.release(u->conn, 0);
    finish();
  }
}

static void test_shutdown_write(void) {
  begin();
  srv_start(&g.srv, SRV_HALF);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, half_close_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.written, 1);
  CHECK_EQ_INT(u1.eofs, 1);
  CHECK_EQ_INT(u1.errors, 0);
  CHECK_MEM(u1.data, u1.got, "xbye");
  CHECK_EQ_INT(g.srv.eofs, 1);
  CHECK_EQ_INT(g.srv.resets, 0);
  CHECK_EQ_INT(g.health_bad, 0);
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
}

/*
 * reset(): the server sees the connection reset (ECONNRESET), not a clean
 * EOF as after a release. Over a Unix socket there is no reset: it ends
 * plainly. Neither counts as poisoned for a tunnel.
 */
static int tunnel_end_by_reset;

static void tunnel_end_wait(void) {
  if (g.srv.eofs + g.srv.resets + g.srv.read_errors == 0) {
    after(5, tunnel_end_wait);
    return;
  }
  finish();
}

static void tunnel_end_hook(user *u, int ev) {
  if (ev == EV_READY) {
    OPS.upgrade(u->conn);
    send_str(u, "ping");
    OPS.read_start(u->conn);
  } else if (ev == EV_READ && u->got == 4) {
    /* The server has read everything and reads on. */
    if (tunnel_end_by_reset)
      OPS.reset(u->conn);
    else
      OPS.release(u->conn, 0);
    CHECK_EQ_INT(stats().closed, 1);
    after(5, tunnel_end_wait);
  }
}

static void tunnel_end_case(int by_reset) {
  tunnel_end_by_reset = by_reset;
  begin();
  srv_start(&g.srv, SRV_ECHO);
  if (make_pool(g.srv.port, 1, 1, 1000, 10000) != 0) {
    abandon();
    return;
  }
  user_init(&u1, 1, tunnel_end_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.got, 4);
  CHECK_EQ_INT(u1.events, 3); /* ready, written, read: none after */
  CHECK_EQ_INT(DELTA(upstream_conns_poisoned), 0);
  CHECK_EQ_INT(g.srv.read_errors, 0);
  if (by_reset && !over_unix) {
    CHECK_EQ_INT(g.srv.resets, 1);
    CHECK_EQ_INT(g.srv.eofs, 0);
  } else {
    CHECK_EQ_INT(g.srv.eofs, 1);
    CHECK_EQ_INT(g.srv.resets, 0);
  }
}

static void test_reset_tunnel(void) {
  tunnel_end_case(1);
  tunnel_end_case(0);
  over_unix = 1;
  tunnel_end_case(1);
  over_unix = 0;
}

/* ---- Unix-domain sockets ------------------------------------------------- */

/* Cases that drive a server through srv_start()/make_pool(), run again
 * over a Unix socket. */
static void test_connect_write_read_reuse(void);
static void test_idle_closed_by_upstream(void);
static void test_idle_closed_seen_at_acquire(void);
static void test_released_conn_closed_before_handoff(void);
static void test_idle_expiry(void);
static void test_read_timeout(void);
static void test_queue_timeout(void);
static void test_cancel(void);
static void test_pool_close_everything(void);
static void test_no_callback_after_release_write(void);
static void test_health_eof_before_response(void);
static void test_health_eof_fresh(void);

static void test_unix_cases(void) {
  void (*cases[])(void) = {
      test_connect_write_read_reuse,
      test_idle_closed_by_upstream,
      test_idle_closed_seen_at_acquire,
      test_released_conn_closed_before_handoff,
      test_idle_expiry,
      test_read_timeout,
      test_queue_timeout,
      test_cancel,
      test_pool_close_everything,
      test_no_callback_after_release_write,
      test_health_eof_before_response,
      test_health_eof_fresh,
  };
  over_unix = 1;
  for (size_t i = 0; i < H3G_ARRAY_LEN(cases); i++) {
    int failed_before = unit_failures;
    cases[i]();
    if (unit_failures != failed_before)
      fprintf(stderr, "  (over a Unix socket, case %zu)\n", i);
  }
  over_unix = 0;
}

/* Names, addresses, and a socket path where nobody listens. */
static void unix_refused_hook(user *u, int ev) {
  (void)u;
  if (ev == EV_FAIL)
    finish();
}

static void test_unix_names_and_refused(void) {
  h3g_upstream_pool *p = NULL;
  char longpath[200];
  memset(longpath, 'a', sizeof(longpath) - 1);
  longpath[sizeof(longpath) - 1] = '\0';
  h3g_upstream_pool_config cfg = {.unix_path = "", .size = 1};
  begin();
  CHECK_EQ_INT(h3g_upstream_pool_new(&p, &loop, &cfg), H3G_ERR_INVAL);
  cfg.unix_path = longpath;
  CHECK_EQ_INT(h3g_upstream_pool_new(&p, &loop, &cfg), H3G_ERR_INVAL);
  CHECK(p == NULL);
  /* A custom name, for TCP too. */
  cfg = (h3g_upstream_pool_config){
      .host = "127.0.0.1", .port = 8080, .name = "app-1", .size = 1};
  if (h3g_upstream_pool_new(&p, &loop, &cfg) == 0) {
    CHECK(strcmp(OPS.name(p), "app-1") == 0);
    CHECK(strcmp(h3g_upstream_pool_address(p), "127.0.0.1:8080") == 0);
    h3g_upstream_pool_close(p, NULL, NULL);
  } else {
    CHECK(0);
  }
  const char *path = unix_path(1);
  unlink(path);
  cfg = (h3g_upstream_pool_config){.unix_path = path,
                                   .size = 1,
                                   .queue_size = 1,
                                   .connect_timeout_ms = 1000};
  if (make_pool_cfg(&cfg) != 0) {
    abandon();
    return;
  }
  char want[80];
  snprintf(want, sizeof(want), "unix:%s", path);
  CHECK(strcmp(OPS.name(g.pool), want) == 0);
  CHECK(strcmp(h3g_upstream_pool_address(g.pool), want) == 0);
  user_init(&u1, 1, unix_refused_hook);
  CHECK_EQ_INT(acquire(&u1), 0);
  run_and_end();
  CHECK_EQ_INT(u1.fails, 1);
  CHECK_EQ_INT(u1.fail_err, H3G_ERR_REFUSED);
  CHECK_EQ_INT(g.health_bad, 1);
  CHECK_EQ_INT(u1.after_health, 1);
  CHECK_EQ_INT(DELTA(upstream_connect_failures), 1);
}

/* ---- re-resolution ------------------------------------------------------- */

/*
 * The address changes (the hook stands for the DNS answer): idle
 * connections to the old one close at once, a busy one finishes its
 * exchange there and closes when released, new connects go to the new
 * one. A failed resolution keeps the address and the connections.
 */
static int resolve_phase; /* 0: A, 1: B, 2: failure */
static struct sockaddr_storage addr_a, addr_b;
static uint64_t resolutions_seen;

static int resolve_hook(void *arg, int status, struct sockaddr_storage *a) {
  CHECK(arg == &g);
  CHECK_EQ_INT(status, 0);
  if (resolve_phase == 2)
    return H3G_ERR_NOTFOUND;
  *a = resolve_phase == 0 ? addr_a : addr_b;
  return 0;
}

static void change_step(void);

/* Runs change_step once a resolution newer than resolutions_seen ended. */
static void await_resolution(void) {
  if (stats().resolutions <= resolutions_seen) {
    after(2, await_resolution);
    return;
  }
  resolutions_seen = stats().resolutions;
  change_step();
}

static char addr_b_text[64];

static void change_hook(user *u, int ev) {
  if (ev == EV_READY && (u == &u1 || u == &u2)) {
    if (u1.ready + u2.ready < 2)
      return;
    send_str(&u1, "ping");
    OPS.read_start(u1.conn);
  } else if (ev == EV_READ && u == &u1 && u->got == 4) {
    OPS.release(u->conn, 1);
    CHECK_EQ_INT(stats().idle, 1);
    resolve_phase = 1; /* the name moves to B */
    after(0, await_resolution);
  } else if (ev == EV_READ && u == &u2 && u->got == 4) {
    OPS.release(u->conn, 1); /* to A: closed, not kept */
    h3g_upstream_pool_stats st = stats();
    CHECK_EQ_INT(st.closed, 2);
    CHECK_EQ_INT(st.idle, 0);
    CHECK_EQ_INT(acquire(&u3), 0);
  } else if (ev == EV_READY && u == &u3) {
    CHECK_EQ_INT(u->reused, 0);
    CHECK_EQ_INT(g.srv2.accepts, 1);
    OPS.release(u->conn, 1);
    resolve_phase = 2;
    after(0, await_resolution);
  }
}

static void change_step(void) {
  h3g_upstream_pool_stats st = stats();
  if (resolve_phase == 0) {
    /* The address is A whatever localhost resolved to at creation. */
    CHECK(same_port(h3g_upstream_pool_address(g.pool), g.srv.port));
    CHECK_EQ_INT(acquire(&u1), 0);
    CHECK_EQ_INT(acquire(&u2), 0);
  } else if (resolve_phase == 1) {
    CHECK(strcmp(h3g_upstream_pool_address(g.pool), addr_b_text) == 0);
    CHECK_EQ_INT(st.idle, 0); /* u1's connection to A closed */
    CHECK_EQ_INT(st.closed, 1);
    CHECK_EQ_INT(st.busy, 1); /* u2's goes on */
    send_str(&u2, "pong");
    OPS.read_start(u2.conn);
  } else if (st.resolve_failures < 2) {
    CHECK_EQ_INT(st.idle, 1);
    after(0, await_resolution);
  } else {
    CHECK(strcmp(h3g_upstream_pool_address(g.pool), addr_b_text) == 0);
    CHECK_EQ_INT(st.idle, 1); /* kept */
    CHECK_EQ_INT(st.closed, 2);
    finish();
  }
}

static void test_resolve_change(void) {
  resolve_phase = 0;
  resolutions_seen = 0;
  begin();
  srv_start(&g.srv, SRV_ECHO);
  srv_start(&g.srv2, SRV_ECHO);
  uv_ip4_addr("127.0.0.1", g.srv.port, (struct sockaddr_in *)&addr_a);
  uv_ip4_addr("127.0.0.1", g.srv2.port, (struct sockaddr_in *)&addr_b);
  snprintf(addr_b_text, sizeof(addr_b_text), "127.0.0.1:%u",
           (unsigned)g.srv2.port);
  h3g_upstream_pool_config cfg = {
      .host = "localhost",
      .port = g.srv.port,
      .size = 2,
      .queue_size = 2,
      .connect_timeout_ms = 1000,
      .idle_timeout_ms = 10000,
      .resolve_interval_ms = 5,
  };
  if (make_pool_cfg(&cfg) != 0) {
    abandon();
    return;
  }
  h3g_upstream_pool_set_resolve_hook(g.pool, resolve_hook, &g);
  user_init(&u1, 1, change_hook);
  user_init(&u2, 2, change_hook);
  user_init(&u3, 3, change_hook);
  after(0, await_resolution);
  run_and_end();
  CHECK_EQ_INT(g.srv.accepts, 2);
  CHECK_EQ_INT(g.srv2.accepts, 1);
  CHECK_EQ_INT(u2.got, 4);
  CHECK_EQ_INT(u1.errors + u2.errors + u3.errors, 0);
  CHECK_EQ_INT(u1.fails + u2.fails + u3.fails, 0);
}

/*
 * Closing a pool while its resolver's lookup is in flight: the pool's close
 * callback waits for the resolver's, which waits for the lookup's callback
 * (test_resolver.c closes a resolver in every state of its lookup). Here
 * the lookup already ran and only its callback is pending when the pool is
 * closed (under ASan, a pool freed too early is a use after free).
 */
static uv_work_t marker;
static int marker_done;
static volatile int marker_ran;

static void on_marker_work(uv_work_t *w) {
  (void)w;
  __atomic_store_n(&marker_ran, 1, __ATOMIC_SEQ_CST);
}

static void on_marker_done(uv_work_t *w, int status) {
  (void)w;
  (void)status;
  marker_done++;
}

static void close_in_flight_ran(void) {
  CHECK_EQ_INT(stats().resolving, 1);
  /* One worker thread, FIFO: once the marker ran, the lookup is done. */
  uv_queue_work(&loop, &marker, on_marker_work, on_marker_done);
  while (!__atomic_load_n(&marker_ran, __ATOMIC_SEQ_CST))
    uv_sleep(1);
  CHECK_EQ_INT(stats().resolving, 1); /* its callback has not run */
  finish();
}

static void test_resolve_close_in_flight(void) {
  h3g_upstream_pool_config cfg = {
      .host = "localhost", .port = 80, .size = 1, .resolve_interval_ms = 20};
  marker_done = 0;
  marker_ran = 0;
  begin();
  if (make_pool_cfg(&cfg) != 0) {
    abandon();
    return;
  }
  /* Due at the same time as the resolver's timer and started after it:
   * runs right after the lookup was submitted. */
  after(20, close_in_flight_ran);
  run_and_end();
  CHECK_EQ_INT(g.pool_closed, 1);
  CHECK_EQ_INT(marker_done, 1);
}

/* Creation: argument checks, names, IPv6 literals. */
static void test_new(void) {
  h3g_upstream_pool *p = NULL;
  h3g_upstream_pool_config cfg = {.host = "127.0.0.1", .port = 80, .size = 0};
  begin();
  CHECK_EQ_INT(h3g_upstream_pool_new(&p, &loop, &cfg), H3G_ERR_INVAL);
  CHECK(p == NULL);
  cfg.size = 1;
  cfg.host = NULL;
  CHECK_EQ_INT(h3g_upstream_pool_new(&p, &loop, &cfg), H3G_ERR_INVAL);
  /* A failed creation (localhost may not resolve in a bare chroot) is a
   * failed check, and p stays NULL: nothing is done with it. */
  cfg.host = "localhost";
  int rv = h3g_upstream_pool_new(&p, &loop, &cfg);
  CHECK_EQ_INT(rv, 0);
  if (rv == 0) {
    CHECK(strcmp(OPS.name(p), "localhost:80") == 0);
    h3g_upstream_pool_close(p, NULL, NULL);
  } else {
    CHECK(p == NULL);
  }
  cfg.host = "::1";
  cfg.port = 8080;
  p = NULL;
  rv = h3g_upstream_pool_new(&p, &loop, &cfg);
  CHECK_EQ_INT(rv, 0);
  if (rv == 0) {
    CHECK(strcmp(OPS.name(p), "[::1]:8080") == 0);
    h3g_upstream_pool_close(p, NULL, NULL);
  } else {
    CHECK(p == NULL);
  }
  g.pool_closed = 1;
  run_and_end();
}

int main(void) {
  /* One worker thread makes the order of lookups and other work known
   * (test_resolve_close_in_flight). */
  setenv("UV_THREADPOOL_SIZE", "1", 1);
  /* H3G_TEST_DEBUG=1 shows the pool's debug log (and exercises it). */
  if (getenv("H3G_TEST_DEBUG") != NULL)
    h3g_log_set_level(H3G_LOG_DEBUG);
  RUN(test_new);
  RUN(test_connect_write_read_reuse);
  RUN(test_size_limit_fifo);
  RUN(test_queue_urgency_and_turns);
  RUN(test_idle_lifo);
  RUN(test_queue_full_and_close_busy);
  RUN(test_queue_timeout);
  RUN(test_connect_refused);
  RUN(test_connect_timeout);
  RUN(test_idle_closed_by_upstream);
  RUN(test_idle_closed_seen_at_acquire);
  RUN(test_released_conn_closed_before_handoff);
  RUN(test_idle_expiry);
  RUN(test_read_timeout);
  RUN(test_read_stop_pauses_timeout);
  RUN(test_alloc_zero_pauses);
  RUN(test_release_not_reusable);
  RUN(test_cancel);
  RUN(test_pool_close_everything);
  RUN(test_no_callback_after_release_write);
  RUN(test_no_callback_after_release_read);
  RUN(test_health_first_byte_once);
  RUN(test_health_reset);
  RUN(test_health_eof_before_response);
  RUN(test_health_eof_fresh);
  RUN(test_upgrade_frees_slot);
  RUN(test_pool_close_waits_for_tunnel);
  RUN(test_shutdown_write);
  RUN(test_reset_tunnel);
  RUN(test_unix_cases);
  RUN(test_unix_names_and_refused);
  RUN(test_resolve_change);
  RUN(test_resolve_close_in_flight);
  return unit_report();
}
