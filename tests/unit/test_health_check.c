/*
 * health_check over the real upstream pool, against small HTTP/1.1 servers
 * on 127.0.0.1 in the same loop. Intervals are tens of milliseconds; every
 * case runs the loop until the counter it waits for reaches its value (with
 * a generous deadline), then asserts the totals. Nothing sleeps.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "health_check.h"
#include "log.h"
#include "metrics.h"
#include "unit.h"
#include "upstream_pool.h"

static uv_loop_t loop;

/* ---- a scripted HTTP/1.1 server ------------------------------------------ */

typedef enum srv_mode {
  SRV_ANSWER,    /* answers each request head with s->status */
  SRV_SILENT,    /* reads and never answers */
  SRV_GARBAGE,   /* answers with bytes that are not HTTP */
  SRV_TRUNCATED, /* sends part of a response, then closes */
  SRV_HANGUP,    /* closes at each request without a byte */
  SRV_BIG,       /* answers s->status with a body over the check's cap */
  SRV_ONE_SHOT,  /* answers a connection's first request, closes at the
                    next without a byte (a keep-alive timeout's race) */
} srv_mode;

typedef struct srv_conn {
  uv_tcp_t h;
  struct srv *s;
  struct srv_conn *prev, *next;
  char rbuf[2048];
  char req[4096]; /* the request head being received */
  size_t reqlen;
  int served; /* requests answered on this connection */
} srv_conn;

typedef struct srv {
  uv_tcp_t listener;
  int started, closed;
  uint16_t port;
  srv_mode mode;
  int status;
  int accepts, requests;
  char first_req[512];
  srv_conn *conns;
} srv;

typedef struct srv_write {
  uv_write_t req;
  char data[]; /* what is written */
} srv_write;

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
  buf->base = sc->rbuf;
  buf->len = sizeof(sc->rbuf);
}

static void on_srv_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void srv_send(srv_conn *sc, const char *data, size_t len) {
  srv_write *w = malloc(sizeof(*w) + len);
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned int)len);
  if (uv_write(&w->req, (uv_stream_t *)&sc->h, &b, 1, on_srv_written) != 0)
    free(w);
}

/* Answers one complete request head (HEAD gets no body). */
static void srv_answer(srv_conn *sc) {
  srv *s = sc->s;
  char out[512];
  int n;
  int head = strncmp(sc->req, "HEAD ", 5) == 0;
  switch (s->mode) {
  case SRV_SILENT: return;
  case SRV_HANGUP: srv_conn_close(sc); return;
  case SRV_BIG: {
    size_t body = H3G_HEALTH_CHECK_MAX_BODY + 8000;
    n = snprintf(out, sizeof(out),
                 "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n", s->status,
                 body);
    srv_send(sc, out, (size_t)n);
    char *big = malloc(body);
    memset(big, 'x', body);
    srv_send(sc, big, body);
    free(big);
    return;
  }
  case SRV_ONE_SHOT:
    if (sc->served++ > 0) {
      srv_conn_close(sc);
      return;
    }
    n = snprintf(out, sizeof(out), "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n",
                 s->status);
    break;
  case SRV_GARBAGE:
    n = snprintf(out, sizeof(out), "hello there\r\n\r\n");
    break;
  case SRV_TRUNCATED:
    n = snprintf(out, sizeof(out),
                 "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    srv_send(sc, out, (size_t)n);
    srv_conn_close(sc);
    return;
  case SRV_ANSWER:
  default:
    if (s->status == 204 || s->status == 304)
      n = snprintf(out, sizeof(out), "HTTP/1.1 %d X\r\n\r\n", s->status);
    else
      n = snprintf(out, sizeof(out),
                   "HTTP/1.1 100 Continue\r\n\r\n"
                   "HTTP/1.1 %d X\r\nContent-Length: 12\r\n\r\n%s",
                   s->status, head ? "" : "status body!");
    break;
  }
  srv_send(sc, out, (size_t)n);
}

static void on_srv_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  srv_conn *sc = st->data;
  srv *s = sc->s;
  if (nread < 0) {
    srv_conn_close(sc);
    return;
  }
  if (sc->reqlen + (size_t)nread >= sizeof(sc->req)) {
    srv_conn_close(sc);
    return;
  }
  memcpy(sc->req + sc->reqlen, buf->base, (size_t)nread);
  sc->reqlen += (size_t)nread;
  sc->req[sc->reqlen] = '\0';
  char *end;
  while ((end = strstr(sc->req, "\r\n\r\n")) != NULL) {
    size_t hlen = (size_t)(end + 4 - sc->req);
    if (s->requests++ == 0 && hlen < sizeof(s->first_req)) {
      memcpy(s->first_req, sc->req, hlen);
      s->first_req[hlen] = '\0';
    }
    srv_answer(sc);
    if (uv_is_closing((uv_handle_t *)&sc->h))
      return;
    memmove(sc->req, sc->req + hlen, sc->reqlen - hlen + 1);
    sc->reqlen -= hlen;
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
  uv_read_start((uv_stream_t *)&sc->h, on_srv_alloc, on_srv_read);
}

static void srv_start(srv *s, srv_mode mode, int status) {
  struct sockaddr_in a;
  struct sockaddr_storage got;
  int len = sizeof(got);
  s->mode = mode;
  s->status = status;
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

static void srv_close(srv *s) {
  if (!s->started || s->closed)
    return;
  s->closed = 1;
  for (srv_conn *sc = s->conns; sc != NULL; sc = sc->next)
    srv_conn_close(sc);
  uv_close((uv_handle_t *)&s->listener, NULL);
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

/* ---- harness ------------------------------------------------------------- */

static struct {
  h3g_upstream_pool *pool;
  h3g_health_check *hc;
  srv srv;
  uv_timer_t watchdog, tick;
  int pool_closed;
  int changes, last_change;
  int busy_at_change; /* pool's busy + waiting seen from on_change */
  int close_on_change;
  h3g_metrics m0;
} g;

#define DELTA(name) (h3g_stats.name - g.m0.name)

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "watchdog: test case hung\n");
  abort();
}

static void begin(void) {
  memset(&g, 0, sizeof(g));
  g.m0 = h3g_stats;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &g.tick);
  uv_timer_init(&loop, &g.watchdog);
  uv_timer_start(&g.watchdog, on_watchdog, 30000, 0);
  uv_unref((uv_handle_t *)&g.watchdog);
}

static h3g_upstream_pool_stats pool_stats(void) {
  h3g_upstream_pool_stats st;
  h3g_upstream_pool_get_stats(g.pool, &st);
  return st;
}

static int make_pool(uint16_t port, uint32_t size) {
  h3g_upstream_pool_config cfg = {
      .host = "127.0.0.1",
      .port = port,
      .size = size,
      .queue_size = 4,
      .connect_timeout_ms = 1000,
      .idle_timeout_ms = 10000,
  };
  int rv = h3g_upstream_pool_new(&g.pool, &loop, &cfg);
  CHECK_EQ_INT(rv, 0);
  return rv;
}

static void on_change(void *arg, int healthy) {
  CHECK(arg == &g);
  g.changes++;
  g.last_change = healthy;
  h3g_upstream_pool_stats st = pool_stats();
  g.busy_at_change = (int)(st.busy + st.waiting);
  if (g.close_on_change) {
    h3g_health_check_close(g.hc);
    g.hc = NULL;
  }
}

static h3g_health_check_config base_config(void) {
  return (h3g_health_check_config){
      .method = "GET",
      .path = "/healthz",
      .host = "app.test",
      .interval_ms = 20,
      .timeout_ms = 2000,
      .status_lo = 200,
      .status_hi = 399,
      .rise = 2,
      .fall = 3,
  };
}

static int make_hc(const h3g_health_check_config *cfg) {
  int rv = h3g_health_check_new(&g.hc, &loop, &h3g_upstream_pool_ops, g.pool,
                                cfg, on_change, &g);
  CHECK_EQ_INT(rv, 0);
  return rv;
}

static h3g_health_check_stats hc_stats(void) {
  h3g_health_check_stats st;
  h3g_health_check_get_stats(g.hc, &st);
  return st;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
}

/*
 * Runs the loop until pred() holds or ms pass; returns pred(). A loop
 * iteration may block until the next timer of anyone (a pool's queue
 * timer is a second away): a 5 ms tick bounds how late pred() is seen.
 */
static int run_until(int (*pred)(void), uint64_t ms) {
  uv_timer_start(&g.tick, on_tick, 5, 5);
  uv_update_time(&loop);
  uint64_t deadline = uv_now(&loop) + ms;
  int ok;
  while (!(ok = pred())) {
    uv_update_time(&loop);
    if (uv_now(&loop) >= deadline)
      break;
    uv_run(&loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&g.tick);
  return ok;
}

#define WAIT_FOR(cond)                                                         \
  do {                                                                         \
    int wait_ok_ = run_until(cond, 5000);                                      \
    CHECK(wait_ok_);                                                           \
  } while (0)

static void on_pool_closed(void *arg) {
  (void)arg;
  g.pool_closed++;
  g.pool = NULL;
  srv_close(&g.srv);
}

/* Ends the case: the health check, then the pool, then the server; runs
 * the loop until every handle is closed. */
static void finish(void) {
  h3g_health_check_close(g.hc);
  g.hc = NULL;
  if (g.pool != NULL) {
    h3g_upstream_pool_stats st = pool_stats();
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.waiting, 0);
    h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
  } else {
    srv_close(&g.srv);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(g.pool_closed, 1);
  uv_close((uv_handle_t *)&g.watchdog, NULL);
  uv_close((uv_handle_t *)&g.tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_busy), 0);
  CHECK_EQ_INT(DELTA(upstream_conns_active), 0);
  CHECK_EQ_INT(DELTA(upstreams_unhealthy), 0);
}

/* Ends a case whose set-up failed. */
static void abandon(void) {
  if (g.pool != NULL) {
    h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
    g.pool = NULL;
  } else {
    g.pool_closed = 1;
    srv_close(&g.srv);
  }
  finish();
}

/* Predicates for run_until. */
static int n_checks;
static int checks_reached(void) {
  return hc_stats().checks >= (uint64_t)n_checks;
}
static int n_changes;
static int changes_reached(void) {
  return g.changes >= n_changes;
}
static int n_failures;
static int failures_reached(void) {
  return hc_stats().failures >= (uint64_t)n_failures;
}

static void wait_checks(int n) {
  n_checks = n;
  WAIT_FOR(checks_reached);
}
static void wait_changes(int n) {
  n_changes = n;
  WAIT_FOR(changes_reached);
}
static void wait_failures(int n) {
  n_failures = n;
  WAIT_FOR(failures_reached);
}

/* ---- cases --------------------------------------------------------------- */

static void test_new_refuses(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 200);
  if (make_pool(g.srv.port, 2) != 0) {
    abandon();
    return;
  }
  static const struct {
    const char *method, *path, *host;
    uint32_t lo, hi, rise, fall;
    uint64_t interval, timeout;
  } bad[] = {
      {NULL, "/", "h", 200, 399, 1, 1, 10, 10},
      {"", "/", "h", 200, 399, 1, 1, 10, 10},
      {"G T", "/", "h", 200, 399, 1, 1, 10, 10},
      {"GET", NULL, "h", 200, 399, 1, 1, 10, 10},
      {"GET", "healthz", "h", 200, 399, 1, 1, 10, 10},
      {"GET", "/a b", "h", 200, 399, 1, 1, 10, 10},
      {"GET", "/a\r\nX: y", "h", 200, 399, 1, 1, 10, 10},
      {"GET", "/", "", 200, 399, 1, 1, 10, 10},
      {"GET", "/", "h\r\n", 200, 399, 1, 1, 10, 10},
      {"GET", "/", "h", 99, 399, 1, 1, 10, 10},
      {"GET", "/", "h", 300, 200, 1, 1, 10, 10},
      {"GET", "/", "h", 200, 600, 1, 1, 10, 10},
      {"GET", "/", "h", 200, 399, 0, 1, 10, 10},
      {"GET", "/", "h", 200, 399, 1, 0, 10, 10},
      {"GET", "/", "h", 200, 399, 1, 1, 0, 10},
      {"GET", "/", "h", 200, 399, 1, 1, 10, 0},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    h3g_health_check_config cfg = {
        .method = bad[i].method,
        .path = bad[i].path,
        .host = bad[i].host,
        .status_lo = bad[i].lo,
        .status_hi = bad[i].hi,
        .rise = bad[i].rise,
        .fall = bad[i].fall,
        .interval_ms = bad[i].interval,
        .timeout_ms = bad[i].timeout,
    };
    h3g_health_check *hc = (h3g_health_check *)&g;
    int rv = h3g_health_check_new(&hc, &loop, &h3g_upstream_pool_ops, g.pool,
                                  &cfg, NULL, NULL);
    if (rv != H3G_ERR_INVAL)
      fprintf(stderr, "bad config %zu accepted\n", i);
    CHECK_EQ_INT(rv, H3G_ERR_INVAL);
    CHECK(hc == NULL);
  }
  h3g_health_check_config ok = base_config();
  CHECK_EQ_INT(h3g_health_check_new(NULL, &loop, &h3g_upstream_pool_ops, g.pool,
                                    &ok, NULL, NULL),
               H3G_ERR_INVAL);
  h3g_health_check_close(NULL);
  finish();
}

/* A server answering 200 stays healthy; one keep-alive connection serves
 * every check; the request is exactly the documented one. */
static void test_healthy_stays_healthy(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 200);
  h3g_health_check_config cfg = base_config();
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 1);
  wait_checks(5);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.failures, 0);
  CHECK_EQ_INT(st.flips, 0);
  CHECK_EQ_INT(st.last_status, 200);
  CHECK(st.ok_run >= 5);
  CHECK_EQ_INT(g.changes, 0);
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 1);
  CHECK(strcmp(g.srv.first_req, "GET /healthz HTTP/1.1\r\n"
                                "Host: app.test\r\n"
                                "User-Agent: h3gate-health-check\r\n"
                                "Accept: */*\r\n\r\n") == 0);
  CHECK_EQ_INT(g.srv.accepts, 1);
  h3g_upstream_pool_stats ps = pool_stats();
  CHECK_EQ_INT(ps.opened, 1);
  CHECK(ps.reused >= 4);
  CHECK(DELTA(health_checks) >= 5);
  CHECK_EQ_INT(DELTA(health_check_failures), 0);
  finish();
}

/* 500 takes the server out after `fall` checks, with one on_change; 200
 * brings it back after `rise`. */
static void test_fall_then_rise(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 500);
  h3g_health_check_config cfg = base_config();
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_changes(1);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(g.last_change, 0);
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 0);
  CHECK_EQ_INT(st.checks, 3);
  CHECK_EQ_INT(st.failures, 3);
  CHECK_EQ_INT(st.fail_run, 3);
  CHECK_EQ_INT(st.last_status, 500);
  CHECK_EQ_INT(DELTA(upstreams_unhealthy), 1);
  /* Further failures do not turn it again. */
  wait_checks(6);
  CHECK_EQ_INT(g.changes, 1);
  CHECK_EQ_INT(hc_stats().fail_run, 6);
  /* An answer out of range is a clean exchange: the connection was kept. */
  CHECK_EQ_INT(g.srv.accepts, 1);

  g.srv.status = 200;
  wait_changes(2);
  st = hc_stats();
  CHECK_EQ_INT(g.last_change, 1);
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 1);
  CHECK_EQ_INT(st.ok_run, 2);
  CHECK_EQ_INT(st.fail_run, 0);
  CHECK_EQ_INT(st.flips, 2);
  CHECK_EQ_INT(DELTA(upstreams_unhealthy), 0);
  /* One success does not bring it back: a failure resets the run. */
  g.srv.status = 503;
  wait_changes(3);
  uint64_t checks = hc_stats().checks;
  g.srv.status = 200;
  n_checks = (int)checks + 1;
  WAIT_FOR(checks_reached);
  g.srv.status = 503;
  n_checks = (int)checks + 2;
  WAIT_FOR(checks_reached);
  g.srv.status = 200;
  n_checks = (int)checks + 3;
  WAIT_FOR(checks_reached);
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 0);
  CHECK_EQ_INT(g.changes, 3);
  wait_changes(4);
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 1);
  finish();
}

/* A server that never answers: each check times out, counts as a failure,
 * and its connection goes back (closed), never leaked. */
static void test_timeout_releases(void) {
  begin();
  srv_start(&g.srv, SRV_SILENT, 0);
  h3g_health_check_config cfg = base_config();
  cfg.timeout_ms = 40;
  cfg.fall = 2;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_changes(1);
  CHECK_EQ_INT(g.last_change, 0);
  CHECK_EQ_INT(g.busy_at_change, 0);
  wait_failures(3);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.checks, st.failures);
  CHECK_EQ_INT(st.last_status, 0);
  h3g_upstream_pool_stats ps = pool_stats();
  CHECK_EQ_INT(ps.idle, 0);
  CHECK_EQ_INT(ps.reused, 0);
  /* Each check opened its own connection: a timed-out one is closed. */
  CHECK(ps.opened >= 3);
  CHECK(ps.closed + 1 >= ps.opened);
  finish();
}

/* Refused connections are failures. */
static void test_refused(void) {
  begin();
  h3g_health_check_config cfg = base_config();
  cfg.fall = 2;
  if (make_pool(dead_port(), 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_changes(1);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(g.last_change, 0);
  CHECK_EQ_INT(st.failures, 2);
  CHECK_EQ_INT(st.checks, 2);
  CHECK_EQ_INT(g.busy_at_change, 0);
  CHECK(pool_stats().failed >= 2);
  finish();
}

/* The accepted range is inclusive at both ends; 204 has no body. */
static int range_case(int status, uint32_t lo, uint32_t hi) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, status);
  h3g_health_check_config cfg = base_config();
  cfg.status_lo = lo;
  cfg.status_hi = hi;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return -1;
  }
  wait_checks(2);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.last_status, status);
  CHECK_EQ_INT(g.srv.accepts, 1); /* the exchange ended cleanly */
  int failures = (int)st.failures;
  finish();
  return failures;
}

static void test_status_range_inclusive(void) {
  CHECK_EQ_INT(range_case(200, 201, 204), 2);
  CHECK_EQ_INT(range_case(201, 201, 204), 0);
  CHECK_EQ_INT(range_case(204, 201, 204), 0);
  CHECK_EQ_INT(range_case(205, 201, 204), 2);
  CHECK_EQ_INT(range_case(204, 204, 204), 0);
  CHECK_EQ_INT(range_case(503, 200, 399), 2);
}

/* HEAD: the response has no body whatever Content-Length says, and the
 * connection is reused. */
static void test_head(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 200);
  h3g_health_check_config cfg = base_config();
  cfg.method = "HEAD";
  cfg.host = NULL;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_checks(3);
  CHECK_EQ_INT(hc_stats().failures, 0);
  CHECK_EQ_INT(g.srv.accepts, 1);
  char want[128];
  snprintf(want, sizeof(want),
           "HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n",
           (unsigned)g.srv.port);
  CHECK(strncmp(g.srv.first_req, want, strlen(want)) == 0);
  finish();
}

/* Bytes that are not HTTP, and a response cut short, are failures; the
 * connection is not reused. */
static void bad_answer_case(srv_mode mode) {
  begin();
  srv_start(&g.srv, mode, 200);
  h3g_health_check_config cfg = base_config();
  cfg.fall = 2;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_changes(1);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.failures, 2);
  CHECK_EQ_INT(g.busy_at_change, 0);
  CHECK_EQ_INT(pool_stats().reused, 0);
  CHECK_EQ_INT(pool_stats().idle, 0);
  finish();
}

static void test_malformed_and_truncated(void) {
  bad_answer_case(SRV_GARBAGE);
  bad_answer_case(SRV_TRUNCATED);
}

/* A kept-alive connection closed at the check's request, before any
 * response byte, is not held against the server: the check asks for
 * another connection. A fresh one closed so is a failure. */
static void test_reused_conn_dropped_is_retried(void) {
  begin();
  srv_start(&g.srv, SRV_ONE_SHOT, 200);
  h3g_health_check_config cfg = base_config();
  cfg.fall = 1;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_checks(4);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.failures, 0);
  CHECK_EQ_INT(g.changes, 0);
  /* The first check opened a connection, each later one tried the kept
   * one and then opened another. */
  CHECK_EQ_INT(g.srv.accepts, 4);
  CHECK_EQ_INT(g.srv.requests, 7);
  finish();
}

static void test_fresh_conn_dropped_fails(void) {
  begin();
  srv_start(&g.srv, SRV_HANGUP, 200);
  h3g_health_check_config cfg = base_config();
  cfg.fall = 2;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  wait_changes(1);
  CHECK_EQ_INT(hc_stats().failures, 2);
  CHECK_EQ_INT(g.srv.accepts, 2);
  finish();
}

/* A body beyond the cap is not waited for: the status decides, and the
 * connection, with the rest of the body on its way, is closed. */
static int big_body_case(int status) {
  begin();
  srv_start(&g.srv, SRV_BIG, status);
  h3g_health_check_config cfg = base_config();
  cfg.fall = 1;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return -1;
  }
  wait_checks(2);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.last_status, status);
  CHECK_EQ_INT(g.srv.accepts, 2);
  CHECK_EQ_INT(pool_stats().reused, 0);
  int failures = (int)st.failures;
  finish();
  return failures;
}

static void test_body_over_cap(void) {
  CHECK_EQ_INT(big_body_case(200), 0);
  CHECK_EQ_INT(big_body_case(500), 2);
}

/* Closing while the check holds a connection releases it at once. */
static int is_exchanging(void) {
  return hc_stats().running && pool_stats().busy == 1 && g.srv.requests == 1;
}

static void test_close_while_exchanging(void) {
  begin();
  srv_start(&g.srv, SRV_SILENT, 0);
  h3g_health_check_config cfg = base_config();
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  WAIT_FOR(is_exchanging);
  h3g_health_check_close(g.hc);
  g.hc = NULL;
  CHECK_EQ_INT(pool_stats().busy, 0);
  CHECK_EQ_INT(g.changes, 0);
  finish();
}

/* Closing while the check waits for a connection withdraws the wait. */
static void on_blocker_ready(void *ctx, h3g_upconn *c, int reused) {
  (void)reused;
  *(h3g_upconn **)ctx = c;
}
static void on_blocker_fail(void *ctx, int err) {
  (void)ctx;
  (void)err;
  CHECK(0);
}
static void on_blocker_nop(void *ctx) {
  (void)ctx;
}
static void on_blocker_alloc(void *ctx, uint8_t **b, size_t *n) {
  (void)ctx;
  *b = NULL;
  *n = 0;
}
static void on_blocker_read(void *ctx, size_t n) {
  (void)ctx;
  (void)n;
}
static void on_blocker_status(void *ctx, int st) {
  (void)ctx;
  (void)st;
}
static const h3g_upstream_events blocker_events = {
    .on_ready = on_blocker_ready,
    .on_fail = on_blocker_fail,
    .on_alloc = on_blocker_alloc,
    .on_read = on_blocker_read,
    .on_eof = on_blocker_nop,
    .on_error = on_blocker_status,
    .on_written = on_blocker_status,
};
static h3g_upconn *blocker_conn;
static int blocker_held(void) {
  return blocker_conn != NULL;
}
static int hc_queued(void) {
  return pool_stats().waiting == 1;
}

static void test_close_while_waiting(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 200);
  h3g_health_check_config cfg = base_config();
  if (make_pool(g.srv.port, 1) != 0) {
    abandon();
    return;
  }
  /* Another user holds the pool's only connection. */
  blocker_conn = NULL;
  h3g_upstream_waiter w = {.ev = &blocker_events, .ctx = &blocker_conn};
  CHECK_EQ_INT(h3g_upstream_pool_ops.acquire(g.pool, &w), 0);
  WAIT_FOR(blocker_held);
  if (make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  WAIT_FOR(hc_queued);
  CHECK_EQ_INT(hc_stats().running, 1);
  h3g_health_check_close(g.hc);
  g.hc = NULL;
  CHECK_EQ_INT(pool_stats().waiting, 0);
  h3g_upstream_pool_ops.release(blocker_conn, 1);
  finish();
}

/* A check still waiting for a connection at its deadline withdraws its
 * wait and fails. */
static int hc_failed_twice(void) {
  return hc_stats().failures >= 2;
}

static void test_deadline_while_waiting(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 200);
  h3g_health_check_config cfg = base_config();
  cfg.timeout_ms = 30;
  cfg.fall = 2;
  if (make_pool(g.srv.port, 1) != 0) {
    abandon();
    return;
  }
  blocker_conn = NULL;
  h3g_upstream_waiter w = {.ev = &blocker_events, .ctx = &blocker_conn};
  CHECK_EQ_INT(h3g_upstream_pool_ops.acquire(g.pool, &w), 0);
  WAIT_FOR(blocker_held);
  if (make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  WAIT_FOR(hc_failed_twice);
  CHECK_EQ_INT(g.changes, 1);
  CHECK_EQ_INT(g.busy_at_change, 1); /* the blocker alone, nobody waiting */
  CHECK_EQ_INT(g.srv.requests, 0);
  /* The connection comes free: the next checks pass. */
  h3g_upstream_pool_ops.release(blocker_conn, 1);
  wait_changes(2);
  CHECK_EQ_INT(h3g_health_check_healthy(g.hc), 1);
  finish();
}

/* The pool closing under a waiting check stops the checks without a
 * verdict; the check must still be closed. */
static void test_pool_closes_first(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 200);
  h3g_health_check_config cfg = base_config();
  cfg.fall = 1;
  if (make_pool(g.srv.port, 1) != 0) {
    abandon();
    return;
  }
  blocker_conn = NULL;
  h3g_upstream_waiter w = {.ev = &blocker_events, .ctx = &blocker_conn};
  CHECK_EQ_INT(h3g_upstream_pool_ops.acquire(g.pool, &w), 0);
  WAIT_FOR(blocker_held);
  if (make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  WAIT_FOR(hc_queued);
  h3g_upstream_pool_close(g.pool, on_pool_closed, NULL);
  h3g_health_check_stats st = hc_stats();
  CHECK_EQ_INT(st.running, 0);
  CHECK_EQ_INT(st.checks, 0);
  CHECK_EQ_INT(st.healthy, 1);
  CHECK_EQ_INT(g.changes, 0);
  h3g_upstream_pool_ops.release(blocker_conn, 1);
  g.pool = NULL;
  finish();
}

/* on_change may close the health check. */
static int hc_gone(void) {
  return g.hc == NULL;
}

static void test_close_from_on_change(void) {
  begin();
  srv_start(&g.srv, SRV_ANSWER, 500);
  h3g_health_check_config cfg = base_config();
  cfg.fall = 1;
  if (make_pool(g.srv.port, 2) != 0 || make_hc(&cfg) != 0) {
    abandon();
    return;
  }
  g.close_on_change = 1;
  WAIT_FOR(hc_gone);
  CHECK_EQ_INT(g.changes, 1);
  CHECK_EQ_INT(g.last_change, 0);
  finish();
}

int main(void) {
  if (getenv("H3G_TEST_DEBUG") != NULL)
    h3g_log_set_level(H3G_LOG_DEBUG);
  RUN(test_new_refuses);
  RUN(test_healthy_stays_healthy);
  RUN(test_fall_then_rise);
  RUN(test_timeout_releases);
  RUN(test_refused);
  RUN(test_status_range_inclusive);
  RUN(test_head);
  RUN(test_malformed_and_truncated);
  RUN(test_body_over_cap);
  RUN(test_reused_conn_dropped_is_retried);
  RUN(test_fresh_conn_dropped_fails);
  RUN(test_close_while_exchanging);
  RUN(test_close_while_waiting);
  RUN(test_deadline_while_waiting);
  RUN(test_pool_closes_first);
  RUN(test_close_from_on_change);
  return unit_report();
}
