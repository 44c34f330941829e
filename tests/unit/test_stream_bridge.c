#define _GNU_SOURCE /* memmem */
/*
 * The bridge driven by fakes: a fake front end records what the client would
 * see, a fake upstream records the bytes written and lets each test play the
 * upstream's part (ready, written, reads, EOF, errors).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "route.h"
#include "stream_bridge.h"
#include "unit.h"
#include "ws_key.h"

/* ---- the clock --------------------------------------------------------- */

/* h3g_now_ns() as the bridge sees it (linked with --wrap=h3g_now_ns): the
 * real clock, moved forward by the tests that need time to pass (the
 * tunnel's idle timer); new_bridge_with() sets it back. */
static uint64_t clock_skew_ns;

uint64_t __real_h3g_now_ns(void);
uint64_t __wrap_h3g_now_ns(void);
uint64_t __wrap_h3g_now_ns(void) {
  return __real_h3g_now_ns() + clock_skew_ns;
}

/* ---- fake upstream ----------------------------------------------------- */

typedef struct fake_up {
  h3g_upstream_waiter *waiter;
  int acquires;
  int cancels;
  int acquire_rv;
  char wrote[65536];
  size_t wrote_len;
  int writes_pending;
  int write_rv; /* what write() returns: 0, or a failure (nothing sent) */
  /* the pending write's vectors: its bytes must stay valid until it
   * completes, as libuv reads them as the socket takes them */
  h3g_iovec pending[8];
  size_t npending;
  size_t pending_at; /* where its copy starts in wrote */
  int reading;
  int read_starts;
  uint64_t read_timeout;
  int released;
  int reusable;
  int set_urgencies;
  /* tunnels (upstream_pool.h) */
  int upgrades;
  int upgrade_heads; /* fe.heads when upgrade() was called */
  int shutdowns;     /* shutdown_write() calls that succeeded */
  int shutdown_rv;   /* what shutdown_write() returns */
  size_t wrote_at_shutdown;
  int resets;
} fake_up;

static fake_up up;
static h3g_upconn *const FAKE_CONN = (h3g_upconn *)&up;

static int f_acquire(void *pool, h3g_upstream_waiter *w) {
  (void)pool;
  up.acquires++;
  if (up.acquire_rv != 0)
    return up.acquire_rv;
  up.waiter = w;
  return 0;
}
static void f_cancel(void *pool, h3g_upstream_waiter *w) {
  (void)pool;
  (void)w;
  up.cancels++;
  up.waiter = NULL;
}
static void f_set_urgency(void *pool, h3g_upstream_waiter *w,
                          uint8_t urgency) {
  (void)pool;
  CHECK(w == up.waiter);
  up.set_urgencies++;
  w->urgency = urgency;
}
static int f_write(h3g_upconn *c, const h3g_iovec *iov, size_t n) {
  (void)c;
  CHECK(up.writes_pending == 0);
  if (up.write_rv != 0)
    return up.write_rv;
  up.pending_at = up.wrote_len;
  up.npending = n;
  memcpy(up.pending, iov, n * sizeof(*iov));
  for (size_t i = 0; i < n; i++) {
    memcpy(up.wrote + up.wrote_len, iov[i].base, iov[i].len);
    up.wrote_len += iov[i].len;
  }
  up.writes_pending++;
  return 0;
}
static void f_read_start(h3g_upconn *c) {
  (void)c;
  up.reading = 1;
  up.read_starts++;
}
static void f_read_stop(h3g_upconn *c) {
  (void)c;
  up.reading = 0;
}
static void f_set_read_timeout(h3g_upconn *c, uint64_t ms) {
  (void)c;
  up.read_timeout = ms;
}
static void f_release(h3g_upconn *c, int reusable) {
  (void)c;
  up.released++;
  up.reusable = reusable;
}
static const char *f_name(void *pool) {
  (void)pool;
  return "fake:80";
}

typedef struct fake_fe fake_fe;
static int fe_heads_now(void);

/* The tunnel operations, held to their contract: upgrade() once, on a
 * held connection; shutdown_write() never with a write pending (the pool
 * refuses it) nor twice; reset() in place of release(). */
static void f_upgrade(h3g_upconn *c) {
  CHECK(c == FAKE_CONN);
  CHECK_EQ_INT(up.released + up.resets, 0);
  up.upgrades++;
  up.upgrade_heads = fe_heads_now();
}
static int f_shutdown_write(h3g_upconn *c) {
  CHECK(c == FAKE_CONN);
  CHECK_EQ_INT(up.released + up.resets, 0);
  CHECK_EQ_INT(up.writes_pending, 0);
  if (up.writes_pending)
    return H3G_ERR_INVAL;
  if (up.shutdown_rv != 0)
    return up.shutdown_rv;
  CHECK_EQ_INT(up.shutdowns, 0);
  up.shutdowns++;
  up.wrote_at_shutdown = up.wrote_len;
  return 0;
}
static void f_reset(h3g_upconn *c) {
  CHECK(c == FAKE_CONN);
  CHECK_EQ_INT(up.released + up.resets, 0);
  up.resets++;
  up.reading = 0;
}

static const h3g_upstream_ops fake_ops = {
    .acquire = f_acquire,
    .cancel = f_cancel,
    .set_urgency = f_set_urgency,
    .write = f_write,
    .read_start = f_read_start,
    .read_stop = f_read_stop,
    .set_read_timeout = f_set_read_timeout,
    .release = f_release,
    .name = f_name,
    .upgrade = f_upgrade,
    .shutdown_write = f_shutdown_write,
    .reset = f_reset,
};

/* An upstream that cannot carry tunnels (upgrade is NULL). */
static const h3g_upstream_ops fake_ops_no_tunnels = {
    .acquire = f_acquire,
    .cancel = f_cancel,
    .set_urgency = f_set_urgency,
    .write = f_write,
    .read_start = f_read_start,
    .read_stop = f_read_stop,
    .set_read_timeout = f_set_read_timeout,
    .release = f_release,
    .name = f_name,
};

/* Completes the pending write as the upstream socket would. */
static void up_written(h3g_bridge *b) {
  (void)b;
  CHECK(up.writes_pending == 1);
  size_t at = up.pending_at;
  for (size_t i = 0; i < up.npending; i++) {
    CHECK(memcmp(up.pending[i].base, up.wrote + at, up.pending[i].len) == 0);
    at += up.pending[i].len;
  }
  up.writes_pending = 0;
  up.waiter->ev->on_written(up.waiter->ctx, 0);
}

/* Delivers bytes from the upstream through on_alloc/on_read, in as many
 * reads as the bridge's buffer allows. Returns bytes delivered. */
static size_t up_send(const char *data, size_t len) {
  size_t done = 0;
  while (done < len && up.reading) {
    uint8_t *buf;
    size_t cap;
    up.waiter->ev->on_alloc(up.waiter->ctx, &buf, &cap);
    if (cap == 0) {
      up.reading = 0; /* as the pool does */
      break;
    }
    size_t n = H3G_MIN(cap, len - done);
    memcpy(buf, data + done, n);
    done += n;
    up.waiter->ev->on_read(up.waiter->ctx, n);
    if (up.released)
      break;
  }
  return done;
}

/* ---- fake front end --------------------------------------------------- */

struct fake_fe {
  int heads;
  int status;
  int interim_status;
  int has_body;
  char fields[4096];
  int body_ready;
  size_t consumed;
  int stop_request;
  int stop_before_head; /* stop_request came before the final head */
  int refuse_heads;     /* final heads to refuse (send_head fails) */
  int aborted;
  h3g_abort_code abort_code;
  int set_priorities;
  h3g_priority prio;
  uint64_t rtt;  /* what rtt_ns reports */
  size_t grown;  /* grow_window totals */
  int grows;
};

static fake_fe fe;

static int fe_heads_now(void) {
  return fe.heads;
}

/* The client connection's count of open tunnels (frontend.h), which the
 * bridges of one connection share: tests with two connections point
 * tunnel_counter at another. Never reset: a count left behind by a freed
 * bridge shows in the next test. */
static uint32_t conn_tunnels, other_conn_tunnels;
static uint32_t *tunnel_counter = &conn_tunnels;

static uint32_t *fe_tunnels(void *fs) {
  (void)fs;
  return tunnel_counter;
}

static int fe_send_head(void *fs, int status, const h3g_field *fields,
                        size_t n, int interim, int has_body) {
  (void)fs;
  if (interim) {
    fe.interim_status = status;
    return 0;
  }
  if (fe.refuse_heads > 0) {
    fe.refuse_heads--;
    return H3G_ERR_NOMEM;
  }
  fe.heads++;
  fe.status = status;
  fe.has_body = has_body;
  fe.fields[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    strncat(fe.fields, (const char *)fields[i].name, fields[i].namelen);
    strcat(fe.fields, ": ");
    strncat(fe.fields, (const char *)fields[i].value, fields[i].valuelen);
    strcat(fe.fields, "\n");
  }
  return 0;
}
static void fe_body_ready(void *fs) {
  (void)fs;
  fe.body_ready++;
}
static void fe_consume(void *fs, size_t n) {
  (void)fs;
  fe.consumed += n;
}
static void fe_stop_request(void *fs) {
  (void)fs;
  fe.stop_request++;
  fe.stop_before_head = fe.heads == 0;
}
static void fe_abort(void *fs, h3g_abort_code code) {
  (void)fs;
  fe.aborted++;
  fe.abort_code = code;
}

static void fe_set_priority(void *fs, h3g_priority prio) {
  (void)fs;
  fe.set_priorities++;
  fe.prio = prio;
}

static uint64_t fe_rtt_ns(void *fs) {
  (void)fs;
  return fe.rtt;
}
static void fe_grow_window(void *fs, size_t n) {
  (void)fs;
  fe.grown += n;
  fe.grows++;
}

/* A front end with a request window (HTTP/3, HTTP/2). */
static const h3g_frontend_ops fake_fe_window_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .rtt_ns = fe_rtt_ns,
    .grow_window = fe_grow_window,
    .tunnels = fe_tunnels,
};

static const h3g_frontend_ops fake_fe_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .set_priority = fe_set_priority,
    .tunnels = fe_tunnels,
};

/* A front end that carries no tunnels (tunnels is NULL). */
static const h3g_frontend_ops fake_fe_no_tunnel_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
};

/* ---- fake timers ------------------------------------------------------ */

typedef struct fake_timer {
  int used;
  uint64_t ms;
  void (*cb)(void *);
  void *arg;
} fake_timer;

static fake_timer timers[8];

static h3g_timer *ft_start(void *loop, uint64_t ms, void (*cb)(void *),
                           void *arg) {
  (void)loop;
  for (size_t i = 0; i < H3G_ARRAY_LEN(timers); i++)
    if (!timers[i].used) {
      timers[i] = (fake_timer){1, ms, cb, arg};
      return (h3g_timer *)&timers[i];
    }
  return NULL;
}
static void ft_cancel(h3g_timer *t) { ((fake_timer *)(void *)t)->used = 0; }
static const h3g_timer_ops fake_timers = {.start = ft_start,
                                          .cancel = ft_cancel};

/* Fires the live timer of the given duration. Returns 1 if one fired. */
static int fire_timer(uint64_t ms) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(timers); i++)
    if (timers[i].used && timers[i].ms == ms) {
      timers[i].used = 0;
      timers[i].cb(timers[i].arg);
      return 1;
    }
  return 0;
}

/* ---- helpers --------------------------------------------------------- */

static h3g_config cfg;
/* The one route every request takes: the request settings the tests set
 * (rconf.s) and the fake upstream. */
static h3g_route_conf rconf;
static h3g_route route;
static h3g_route_stats route_stats;
static h3g_bridge_env env;

/* Whether new bridges are told their connection offered extended CONNECT,
 * as the front ends do while a route takes WebSockets. */
static int offer_connect = 1;

/* A bridge for a request of protocol ("h3", or "http/1.1" for the TCP
 * front end), after a reset of the fakes and the settings. */
static h3g_bridge *new_bridge_proto(size_t bufsize, const h3g_frontend_ops *ops,
                                    const char *protocol) {
  memset(&up, 0, sizeof(up));
  memset(&fe, 0, sizeof(fe));
  memset(&cfg, 0, sizeof(cfg));
  clock_skew_ns = 0;
  cfg.stream_buffer_size = (uint32_t)bufsize;
  cfg.max_header_size = 16384;
  cfg.request_header_timeout_ms = 10000;
  /* WebSockets as configured by default (config/h3gate.ini). */
  cfg.websocket_any = 1;
  cfg.tunnel_idle_timeout_ms = 3600000;
  cfg.max_tunnels = 10000;
  cfg.max_tunnels_per_connection = 100;
  rconf = (h3g_route_conf){.name = "test"};
  rconf.s.response_timeout_ms = 60000;
  rconf.s.expect_continue_timeout_ms = 1000;
  rconf.s.alt_svc = 1;
  rconf.s.websocket = 1;
  route_stats = (h3g_route_stats){.refs = 1};
  route = (h3g_route){
      .conf = &rconf, .ops = &fake_ops, .pool = NULL, .stats = &route_stats};
  memset(timers, 0, sizeof(timers));
  env = (h3g_bridge_env){.cfg = &cfg, .route = &route, .timers = &fake_timers};
  h3g_bridge *b = NULL;
  CHECK_EQ_INT(
      h3g_bridge_new(&b, &env, ops, &fe, &env, "127.0.0.1:1", protocol), 0);
  if (b != NULL && offer_connect)
    h3g_bridge_connect_offered(b);
  return b;
}

static h3g_bridge *new_bridge_with(size_t bufsize,
                                   const h3g_frontend_ops *ops) {
  return new_bridge_proto(bufsize, ops, "h3");
}

static h3g_bridge *new_bridge(size_t bufsize) {
  return new_bridge_with(bufsize, &fake_fe_ops);
}

static void add(h3g_bridge *b, const char *name, const char *value) {
  CHECK_EQ_INT(h3g_bridge_add_field(b, (const uint8_t *)name, strlen(name),
                                    (const uint8_t *)value, strlen(value)),
               0);
}

static void add_request(h3g_bridge *b, const char *method, const char *path) {
  add(b, ":method", method);
  add(b, ":scheme", "https");
  add(b, ":authority", "example.com");
  add(b, ":path", path);
}

/* Collects the whole available body (and releases it, as acks would). */
static size_t drain_body(h3g_bridge *b, char *out, size_t cap,
                         unsigned *flags) {
  size_t total = 0;
  *flags = 0;
  for (;;) {
    h3g_iovec v[2];
    unsigned fl;
    size_t n = h3g_bridge_take_body(b, v, 2, SIZE_MAX, &fl);
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
      if (total + v[i].len <= cap)
        memcpy(out + total, v[i].base, v[i].len);
      total += v[i].len;
      got += v[i].len;
    }
    *flags |= fl;
    if (got)
      h3g_bridge_body_done(b, got);
    if (n == 0 || (fl & H3G_BODY_END))
      break;
  }
  return total;
}

/* The access log goes to a new temporary file, named into path (a
 * "/tmp/h3g-access-XXXXXX" buffer). */
static void access_log_to_temp(char *path) {
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ_INT(h3g_access_log_open(path), 0);
}

/* Closes the access log and reads what it wrote into text (cap bytes,
 * NUL-terminated); the file goes. */
static void access_log_take(const char *path, char *text, size_t cap) {
  h3g_access_log_close();
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  size_t n = f ? fread(text, 1, cap - 1, f) : 0;
  text[n] = '\0';
  if (f)
    fclose(f);
  unlink(path);
}

/* ---- tests ---------------------------------------------------------- */

static void test_get_content_length(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/x?y=1");
  add(b, "accept", "*/*");
  add(b, "cookie", "a=1");
  add(b, "cookie", "b=2");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(up.acquires, 1);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  CHECK(up.reading);
  CHECK_EQ_INT(up.read_timeout, 0); /* request not fully written yet */
  up.wrote[up.wrote_len] = '\0';
  CHECK(strncmp(up.wrote, "GET /x?y=1 HTTP/1.1\r\n", 21) == 0);
  CHECK(strstr(up.wrote, "ost: example.com\r\n") != NULL);
  CHECK(strstr(up.wrote, "cookie: a=1; b=2\r\n") != NULL);
  CHECK(strstr(up.wrote, "ontent-Length") == NULL);
  CHECK(strstr(up.wrote, "\r\n\r\n") == up.wrote + up.wrote_len - 4);
  up_written(b);
  CHECK_EQ_INT(up.read_timeout, 60000);
  const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                     "Connection: keep-alive\r\nX-A: 1\r\n\r\nhello";
  up_send(resp, strlen(resp));
  CHECK_EQ_INT(fe.heads, 1);
  CHECK_EQ_INT(fe.status, 200);
  CHECK(fe.has_body);
  CHECK(strstr(fe.fields, "connection") == NULL);
  CHECK(strstr(fe.fields, "x-a: 1") != NULL);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 1);
  char body[64];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "hello");
  CHECK(flags & H3G_BODY_END);
  CHECK(h3g_bridge_response_done(b));
  h3g_bridge_free(b);
}

static void test_post_chunked_and_credit(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/echo");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  CHECK_EQ_INT(fe.consumed, 0); /* nothing accepted upstream yet */
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "ransfer-Encoding: chunked\r\n") != NULL);
  CHECK(strstr(up.wrote, "\r\n\r\n3\r\nabc\r\n") != NULL);
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 3);
  CHECK_EQ_INT(up.read_timeout, 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"de", 2), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0); /* write of "de" in flight */
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 5);
  up_written(b); /* the last chunk */
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "2\r\nde\r\n0\r\n\r\n") != NULL);
  CHECK_EQ_INT(up.read_timeout, 60000);
  const char *resp = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n"
                     "\r\n5\r\nabcde\r\n0\r\nx-sum: 5\r\n\r\n";
  up_send(resp, strlen(resp));
  CHECK_EQ_INT(fe.status, 201);
  CHECK(strstr(fe.fields, "transfer-encoding") == NULL);
  char body[64];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "abcde");
  CHECK(flags & H3G_BODY_TRAILERS);
  const h3g_field *tf;
  size_t nt;
  h3g_bridge_get_trailers(b, &tf, &nt);
  CHECK_EQ_INT(nt, 1);
  CHECK_EQ_INT(up.reusable, 1);
  h3g_bridge_free(b);
}

/* A trailer section over max_header_size is refused at the end of the
 * request, not forwarded without the fields that did not fit. */
static void test_trailers_over_the_cap(void) {
  char big[1024];
  memset(big, 't', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  up_written(b);
  int rv = 0;
  for (int i = 0; i < 20 && rv == 0; i++)
    rv = h3g_bridge_add_trailer(b, (const uint8_t *)"x-t", 3,
                                (const uint8_t *)big, strlen(big));
  CHECK_EQ_INT(rv, H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h3g_bridge_end_request(b), H3G_ERR_PROTO);
  CHECK_EQ_INT(up.writes_pending, 0); /* no last chunk, no trailers */
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);
}

static void test_post_content_length_mismatch(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "content-length", "4");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "ontent-Length: 4\r\n") != NULL);
  up_written(b);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"ab", 2), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), H3G_ERR_PROTO);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0); /* half a message went out */
  h3g_bridge_free(b);
}

/* Body past the declared content-length while the request still waits
 * for a connection: the wait is withdrawn, so the refused request is never
 * sent (nothing more reaches the upstream after H3G_ERR_PROTO). */
static void test_body_past_length_while_waiting(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abcde", 5),
               H3G_ERR_PROTO);
  CHECK_EQ_INT(up.cancels, 1);
  CHECK(up.waiter == NULL);
  h3g_bridge_free(b);
  CHECK_EQ_INT(up.wrote_len, 0);
}

static void test_malformed_request_never_reaches_upstream(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  add(b, "Bad-Case", "1");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), H3G_ERR_PROTO);
  CHECK_EQ_INT(up.acquires, 0);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  add_request(b, "GET", "/");
  add(b, "transfer-encoding", "chunked");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), H3G_ERR_PROTO);
  CHECK_EQ_INT(up.acquires, 0);
  h3g_bridge_free(b);
}

static void test_refused_gives_502(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_fail(up.waiter->ctx, H3G_ERR_REFUSED);
  CHECK_EQ_INT(fe.status, 502);
  char body[64];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK(n > 0 && strncmp(body, "502", 3) == 0);
  CHECK(flags & H3G_BODY_END);
  h3g_bridge_free(b);
}

static void test_timeout_gives_504_and_queue_full_503(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  up.waiter->ev->on_error(up.waiter->ctx, H3G_ERR_TIMEOUT);
  CHECK_EQ_INT(fe.status, 504);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* A connect timeout and a wait-queue timeout both give 504. */
  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_fail(up.waiter->ctx, H3G_ERR_TIMEOUT);
  CHECK_EQ_INT(fe.status, 504);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_fail(up.waiter->ctx, H3G_ERR_AGAIN);
  CHECK_EQ_INT(fe.status, 504);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  up.acquire_rv = H3G_ERR_NOMEM;
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(fe.status, 503);
  h3g_bridge_free(b);
}

static void test_malformed_response_before_and_after_head(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *bad = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n";
  up_send(bad, strlen(bad));
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(fe.aborted, 0);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  /* head and first chunk in one read, the broken chunk in the next: the
   * head is out by then, so only a reset is honest */
  const char *mid = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n";
  up_send(mid, strlen(mid));
  CHECK_EQ_INT(fe.status, 200);
  up_send("zz\r\n", 4);
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(fe.abort_code, H3G_ABORT_INTERNAL);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* head and broken chunk in the same read: nothing went out yet, so 502 */
  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *same = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "zz\r\nhello\r\n";
  up_send(same, strlen(same));
  CHECK_EQ_INT(fe.heads, 1);
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(fe.aborted, 0);
  h3g_bridge_free(b);

  /* a first chunk parsed before the error must not leak into the 502 body */
  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *part = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\nzz\r\n";
  up_send(part, strlen(part));
  CHECK_EQ_INT(fe.status, 502);
  char body[64];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK(n >= 3 && memcmp(body, "502", 3) == 0);
  h3g_bridge_free(b);
}

static void test_truncated_body_resets(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  up_send(r, strlen(r));
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(fe.aborted, 1);
  h3g_bridge_free(b);
}

static void test_close_delimited(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *r = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcdef";
  up_send(r, strlen(r));
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(fe.aborted, 0);
  CHECK_EQ_INT(up.reusable, 0);
  char body[64];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "abcdef");
  CHECK(flags & H3G_BODY_END);
  h3g_bridge_free(b);
}

static void test_backpressure_pauses_reads(void) {
  h3g_bridge *b = new_bridge(16);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  char resp[256];
  int hl = snprintf(resp, sizeof(resp),
                    "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n");
  memset(resp + hl, 'z', 40);
  size_t total = (size_t)hl + 40;
  size_t sent = up_send(resp, total);
  CHECK(sent < total);
  CHECK(!up.reading); /* ring full: reads paused */
  size_t got = 0;
  int starts_before = up.read_starts;
  while (got < 40) {
    h3g_iovec v[2];
    unsigned fl;
    size_t n = h3g_bridge_take_body(b, v, 2, SIZE_MAX, &fl);
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
      len += v[i].len;
    CHECK(len <= 16);
    got += len;
    h3g_bridge_body_done(b, len);
    if (got < 40) {
      CHECK(up.read_starts > starts_before);
      starts_before = up.read_starts;
      sent += up_send(resp + sent, total - sent);
    }
    if (len == 0)
      break;
  }
  CHECK_EQ_INT(got, 40);
  CHECK_EQ_INT(up.reusable, 1);
  h3g_bridge_free(b);
}

/* A POST of content-length n whose head went upstream (the first write
 * completed); nothing of the body has arrived yet. */
static h3g_bridge *early_upload(const char *cl) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/upload");
  add(b, "content-length", cl);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  return b;
}

/*
 * RFC 9110 §15, RFC 9112 §9.5, RFC 9114 §4.1: a complete final answer
 * before the request body went out (an app refusing an upload) is passed
 * on, with or without "Connection: close"; the rest of the body is not
 * sent, the client is asked to stop (before the head goes out, so that
 * HTTP/1.1 can say "close"), and the connection is closed, never reused.
 */
static void test_early_response_stops_request(void) {
  const char *answers[] = {
      "HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n"
      "Connection: close\r\n\r\nno\n",
      "HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nno\n",
      "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n"
      "Content-Length: 3\r\n\r\nno\n",
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(answers); i++) {
    int64_t early_before = h3g_stats.upstream_early_responses;
    h3g_bridge *b = early_upload("100000");
    size_t wrote = up.wrote_len;
    up_send(answers[i], strlen(answers[i]));
    CHECK_EQ_INT(fe.status, i == 2 ? 401 : 413);
    CHECK_EQ_INT(fe.stop_request, 1);
    CHECK(fe.stop_before_head);
    CHECK_EQ_INT(fe.aborted, 0);
    CHECK_EQ_INT(up.released, 1);
    CHECK_EQ_INT(up.reusable, 0);
    CHECK_EQ_INT(h3g_stats.upstream_early_responses, early_before + 1);
    char body[16];
    unsigned flags;
    size_t n = drain_body(b, body, sizeof(body), &flags);
    CHECK_MEM(body, n, "no\n");
    CHECK(flags & H3G_BODY_END);
    CHECK(h3g_bridge_response_done(b));
    /* late body bytes are never written; their credit comes back so the
     * client can finish */
    CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"xx", 2), 0);
    CHECK_EQ_INT(fe.consumed, 2);
    CHECK_EQ_INT(up.wrote_len, wrote);
    h3g_bridge_free(b);
  }
}

/* An early answer whose head the front end cannot take becomes a 502: the
 * client is asked to stop sending once, not again for the 502. */
static void test_early_response_head_refused_stops_once(void) {
  h3g_bridge *b = early_upload("100000");
  fe.refuse_heads = 1;
  const char *r = "HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nno\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.stop_request, 1);
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(fe.heads, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);
}

/* The same when part of the body went and more waits in the queue: the
 * write in flight is abandoned, the queued bytes are dropped and credited,
 * and nothing more is written. */
static void test_early_response_after_part_of_body(void) {
  h3g_bridge *b = early_upload("10000");
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  up_written(b); /* the first bytes went */
  CHECK_EQ_INT(fe.consumed, 3);
  char more[1000];
  memset(more, 'm', sizeof(more));
  /* a write in flight, then bytes queued behind it */
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)more, sizeof(more)), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)more, sizeof(more)), 0);
  size_t wrote = up.wrote_len;
  const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(fe.stop_request, 1);
  CHECK_EQ_INT(fe.consumed, 3 + 2 * sizeof(more));
  up.writes_pending = 0; /* the pool abandoned it */
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)more, sizeof(more)), 0);
  CHECK_EQ_INT(up.wrote_len, wrote);
  char body[16];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "ok");
  h3g_bridge_free(b);

  /* The client already sent everything but it still waits for the
   * upstream: no stop (the client is done), the credit still comes back,
   * the connection is still closed. */
  b = early_upload("6");
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"def", 3), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  r = "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 413);
  CHECK_EQ_INT(fe.stop_request, 0);
  CHECK_EQ_INT(fe.consumed, 6);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* The head first, the end of the response later: the head goes out as
   * usual (the upload goes on meanwhile), the end stops it. */
  b = early_upload("10000");
  r = "HTTP/1.1 413 Too Large\r\nContent-Length: 4\r\n\r\nno";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 413);
  CHECK_EQ_INT(fe.stop_request, 0);
  CHECK_EQ_INT(up.released, 0);
  up_send("!\n", 2);
  CHECK_EQ_INT(fe.stop_request, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(up.released, 1);
  h3g_bridge_free(b);

  /* A close-delimited early answer: complete at the upstream's EOF. */
  b = early_upload("10000");
  r = "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\nno";
  up_send(r, strlen(r));
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(fe.status, 401);
  CHECK_EQ_INT(fe.stop_request, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);
}

/* Early or not, what cannot be framed with certainty is still refused:
 * bytes after the end, or a malformed head, give the gateway's 502 and
 * close the connection. */
static void test_early_response_defences_kept(void) {
  const char *bad[] = {
      "HTTP/1.1 413 Too Large\r\nContent-Length: 2\r\n\r\nnoEVIL",
      "HTTP/1.1 413 Too Large\r\nContent-Length: 2\r\n"
      "Transfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    int64_t early_before = h3g_stats.upstream_early_responses;
    h3g_bridge *b = early_upload("10000");
    up_send(bad[i], strlen(bad[i]));
    CHECK_EQ_INT(fe.status, 502);
    CHECK_EQ_INT(up.reusable, 0);
    CHECK_EQ_INT(h3g_stats.upstream_early_responses, early_before);
    h3g_bridge_free(b);
  }
}

/* Not early: the whole request was handed over (the last write still in
 * flight) before the answer; the connection is reused once the write is
 * done, as after any clean exchange. */
static void test_answer_after_whole_request_reuses(void) {
  int64_t early_before = h3g_stats.upstream_early_responses;
  h3g_bridge *b = early_upload("3");
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  const char *r = "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 413);
  CHECK_EQ_INT(up.released, 0);
  up_written(b);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 1);
  CHECK_EQ_INT(fe.stop_request, 0);
  CHECK_EQ_INT(h3g_stats.upstream_early_responses, early_before);
  h3g_bridge_free(b);
}

static void test_retry_once_on_stale_connection(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 1);
  up_written(b);
  up.waiter->ev->on_eof(up.waiter->ctx); /* stale keep-alive */
  CHECK_EQ_INT(up.acquires, 2);
  CHECK_EQ_INT(fe.heads, 0);
  up.released = 0;
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 1);
  up_written(b);
  up.waiter->ev->on_eof(up.waiter->ctx); /* again: no second retry */
  CHECK_EQ_INT(up.acquires, 2);
  CHECK_EQ_INT(fe.status, 502);
  h3g_bridge_free(b);

  /* never for POST */
  b = new_bridge(4096);
  add_request(b, "POST", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 1);
  up_written(b);
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(fe.status, 502);
  h3g_bridge_free(b);
}

static void test_client_abort_poisons_connection(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  h3g_bridge_client_abort(b);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* abort while waiting in the queue cancels the wait */
  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  h3g_bridge_client_abort(b);
  CHECK_EQ_INT(up.cancels, 1);
  h3g_bridge_free(b);
}

static void test_head_and_interim(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "HEAD", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *r = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.interim_status, 103);
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(fe.has_body, 0);
  CHECK_EQ_INT(up.reusable, 1);
  h3g_bridge_free(b);
}

/* The upstream may answer before it has read the whole request (here a
 * 304 while the write of the head and body is still with the socket): the
 * head must outlive that write, whatever the response does. */
static void test_answer_while_head_is_written(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "content-length", "10");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"0123456789", 10),
               0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  CHECK_EQ_INT(up.writes_pending, 1);
  const char *r = "HTTP/1.1 304 Not Modified\r\n\r\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 304);
  up_written(b); /* reads the head and body again, as the socket would */
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 1);
  h3g_bridge_free(b);
}

/* A request head over max_header_size gets 431 without reaching the
 * upstream; when it was a HEAD request, the answer has no content either
 * (RFC 9110 §9.3.2), though the head was never validated. */
static void test_431_to_head_has_no_body(void) {
  static const char *const methods[] = {"HEAD", "GET"};
  char big[1024];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  for (size_t k = 0; k < H3G_ARRAY_LEN(methods); k++) {
    h3g_bridge *b = new_bridge(4096);
    add_request(b, methods[k], "/");
    for (int i = 0; i < 20; i++)
      add(b, "x-big", big);
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
    CHECK_EQ_INT(up.acquires, 0);
    CHECK_EQ_INT(fe.status, 431);
    CHECK_EQ_INT(fe.has_body, k == 1);
    h3g_bridge_free(b);
  }
}

static void test_forwarding_fields(void) {
  h3g_bridge *b = new_bridge(4096);
  rconf.s.fwd_x_forwarded = 1;
  rconf.s.fwd_via = 1;
  rconf.s.fwd_forwarded = 1;
  add_request(b, "GET", "/");
  add(b, "x-forwarded-for", "6.6.6.6"); /* spoofed: client not trusted */
  add(b, "via", "1.1 evil");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "6.6.6.6") == NULL);
  CHECK(strstr(up.wrote, "evil") == NULL);
  CHECK(strstr(up.wrote, "x-forwarded-for: 127.0.0.1\r\n") != NULL);
  CHECK(strstr(up.wrote, "x-forwarded-proto: https\r\n") != NULL);
  CHECK(strstr(up.wrote, "x-forwarded-host: example.com\r\n") != NULL);
  CHECK(strstr(up.wrote, "via: 3 h3gate\r\n") != NULL);
  CHECK(strstr(up.wrote,
               "forwarded: for=127.0.0.1;proto=https;host=\"example.com\"") !=
        NULL);
  h3g_bridge_free(b);

  /* a trusted proxy's chain is kept and ours appended */
  b = new_bridge(4096);
  rconf.s.fwd_x_forwarded = 1;
  rconf.s.fwd_via = 1;
  cfg.ntrusted = 1;
  cfg.trusted[0] = (h3g_cidr){.family = 4, .prefix = 8, .addr = {127}};
  add_request(b, "GET", "/");
  add(b, "x-forwarded-for", "6.6.6.6");
  add(b, "x-forwarded-proto", "http");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "x-forwarded-for: 6.6.6.6, 127.0.0.1\r\n") != NULL);
  CHECK(strstr(up.wrote, "x-forwarded-proto: http\r\n") != NULL);
  CHECK(strstr(up.wrote, "x-forwarded-proto: https") == NULL);
  h3g_bridge_free(b);
}

static void test_body_limit(void) {
  h3g_bridge *b = new_bridge(4096);
  rconf.s.max_request_body = 4;
  add_request(b, "POST", "/");
  add(b, "content-length", "5");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(fe.status, 413);
  CHECK_EQ_INT(up.acquires, 0);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  rconf.s.max_request_body = 4;
  add_request(b, "POST", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  CHECK_EQ_INT(fe.heads, 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"de", 2), 0);
  CHECK_EQ_INT(fe.status, 413);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* Answered by its declared size and asked to stop: a front end that
   * drops the body's bytes from then on (HTTP/2 does) ends the request
   * short of its length, and the answer given stands (no reset). */
  b = new_bridge(4096);
  rconf.s.max_request_body = 4;
  add_request(b, "POST", "/");
  add(b, "content-length", "2048");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(fe.status, 413);
  CHECK_EQ_INT(fe.stop_request, 1);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(fe.aborted, 0);
  h3g_bridge_free(b);

  /* Not asked to stop, a short body is still malformed. */
  b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "content-length", "5");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), H3G_ERR_PROTO);
  h3g_bridge_free(b);
}

/* The access log names the upstream only when the request involved it:
 * a connection was handed to it, or one opened for it failed. */
static void test_access_log_upstream(void) {
  char path[] = "/tmp/h3g-access-XXXXXX";
  access_log_to_temp(path);

  h3g_bridge *b = new_bridge(4096); /* malformed */
  add(b, ":method", "GET");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), H3G_ERR_PROTO);
  h3g_bridge_free(b);
  b = new_bridge(4096); /* 413 by its declared size */
  rconf.s.max_request_body = 4;
  add_request(b, "POST", "/big");
  add(b, "content-length", "5");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  h3g_bridge_free(b);
  b = new_bridge(4096); /* 503: the wait queue is full */
  up.acquire_rv = H3G_ERR_NOMEM;
  add_request(b, "GET", "/full");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  h3g_bridge_free(b);
  b = new_bridge(4096); /* the pool shut down while it waited */
  add_request(b, "GET", "/closing");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_fail(up.waiter->ctx, H3G_ERR_CLOSED);
  h3g_bridge_free(b);
  b = new_bridge(4096); /* the client left while it waited */
  add_request(b, "GET", "/gone");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  h3g_bridge_free(b);
  b = new_bridge(4096); /* refused by the upstream */
  add_request(b, "GET", "/refused");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_fail(up.waiter->ctx, H3G_ERR_REFUSED);
  h3g_bridge_free(b);
  b = new_bridge(4096); /* sent */
  add_request(b, "GET", "/sent");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *r = "HTTP/1.1 204 No Content\r\n\r\n";
  up_send(r, strlen(r));
  h3g_bridge_free(b);

  char text[8192];
  access_log_take(path, text, sizeof(text));
  const char *want[][2] = {
      {"path=\"-\"", "upstream=- outcome=malformed"},
      {"path=\"/big\"", "upstream=- outcome=body-too-large"},
      {"path=\"/full\"", "upstream=- outcome=queue-full"},
      {"path=\"/closing\"", "upstream=- outcome=shutting-down"},
      {"path=\"/gone\"", "upstream=- outcome=client-gone"},
      {"path=\"/refused\"", "upstream=fake:80 outcome=upstream-refused"},
      {"path=\"/sent\"", "upstream=fake:80 outcome=ok"},
  };
  char *line = text;
  for (size_t i = 0; i < H3G_ARRAY_LEN(want); i++) {
    char *end = strchr(line, '\n');
    CHECK(end != NULL);
    if (end == NULL)
      break;
    *end = '\0';
    if (strstr(line, want[i][0]) == NULL || strstr(line, want[i][1]) == NULL)
      fprintf(stderr, "line %zu: %s\n  want %s ... %s\n", i, line, want[i][0],
              want[i][1]);
    CHECK(strstr(line, want[i][0]) != NULL);
    CHECK(strstr(line, want[i][1]) != NULL);
    line = end + 1;
  }
}

static void test_header_timeout(void) {
  h3g_bridge *b = new_bridge(4096);
  add(b, ":method", "GET");
  CHECK(fire_timer(10000));
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(fe.abort_code, H3G_ABORT_REJECTED);
  CHECK_EQ_INT(up.acquires, 0);
  h3g_bridge_free(b);

  /* a complete head cancels it */
  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK(!fire_timer(10000));
  h3g_bridge_free(b);
}

static void test_expect_continue(void) {
  /* body held until the upstream's 100 */
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "expect", "100-continue");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "abc") == NULL);
  up_written(b);
  const char *cont = "HTTP/1.1 100 Continue\r\n\r\n";
  up_send(cont, strlen(cont));
  CHECK_EQ_INT(fe.interim_status, 100);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "\r\n\r\nabc") != NULL);
  h3g_bridge_free(b);

  /* or until the timeout */
  b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "expect", "100-continue");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK(fire_timer(1000));
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "abc") != NULL);
  h3g_bridge_free(b);

  /* a final answer first: the body never goes */
  b = new_bridge(4096);
  add_request(b, "POST", "/");
  add(b, "expect", "100-continue");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *no = "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n";
  up_send(no, strlen(no));
  CHECK_EQ_INT(fe.status, 417);
  up.wrote[up.wrote_len] = '\0';
  CHECK(strstr(up.wrote, "abc") == NULL);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);
}

/* A write that fails at once while the body waits for 100-continue: the
 * connection is dead, 502 (not a wait for a 100 on it). And a 100 whose
 * release of the body fails that way: 502, and the 100 is not passed on
 * after it. */
static void test_expect_continue_write_fails(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "PUT", "/");
  add(b, "expect", "100-continue");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.write_rv = H3G_ERR_IO;
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  add_request(b, "PUT", "/");
  add(b, "expect", "100-continue");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b); /* the head; the body waits for 100 */
  up.write_rv = H3G_ERR_IO;
  const char *r = "HTTP/1.1 100 Continue\r\n\r\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(fe.interim_status, 0);
  CHECK_EQ_INT(up.released, 1);
  h3g_bridge_free(b);
}

static void test_bytes_after_response(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEVIL";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(up.reusable, 0);
  char body[64];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK(n >= 3 && memcmp(body, "502", 3) == 0);
  h3g_bridge_free(b);
}

/* 0-RTT (RFC 8470): safe and body-less goes at once, marked; the rest
 * waits for the handshake; a 425 to a marked request is retried. */
static int wrote_has(const char *needle) {
  return memmem(up.wrote, up.wrote_len, needle, strlen(needle)) != NULL;
}

static void test_early_data(void) {
  /* A GET: forwarded at once with Early-Data: 1. */
  h3g_bridge *b = new_bridge(4096);
  rconf.s.early_data = 1;
  add_request(b, "GET", "/");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(up.acquires, 1);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK(wrote_has("\r\nearly-data: 1\r\n"));
  h3g_bridge_handshake_done(b);
  CHECK_EQ_INT(up.acquires, 1);
  h3g_bridge_free(b);

  /* A POST: held, body buffered, sent unmarked after the handshake. */
  b = new_bridge(4096);
  rconf.s.early_data = 1;
  add_request(b, "POST", "/");
  add(b, "content-length", "3");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(up.acquires, 0);
  CHECK_EQ_INT((int)fe.consumed, 0);
  h3g_bridge_handshake_done(b);
  CHECK_EQ_INT(up.acquires, 1);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK(!wrote_has("early-data"));
  CHECK(wrote_has("\r\n\r\nabc"));
  CHECK_EQ_INT((int)fe.consumed, 3);
  h3g_bridge_free(b);

  /* A GET with a body (no FIN with the head) is held too; a freed held
   * request never touched the upstream. */
  b = new_bridge(4096);
  rconf.s.early_data = 1;
  add_request(b, "GET", "/");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(up.acquires, 0);
  h3g_bridge_free(b);
  CHECK_EQ_INT(up.acquires, 0);
  CHECK_EQ_INT(up.cancels, 0);

  /* 425 before the handshake: nothing reaches the client; sent again,
   * unmarked, on a new connection once the handshake completes. */
  b = new_bridge(4096);
  rconf.s.early_data = 1;
  add_request(b, "GET", "/x");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 1);
  up_written(b);
  const char *too_early = "HTTP/1.1 425 Too Early\r\nContent-Length: 0\r\n\r\n";
  up_send(too_early, strlen(too_early));
  CHECK_EQ_INT(fe.heads, 0);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(up.acquires, 1);
  h3g_bridge_handshake_done(b);
  CHECK_EQ_INT(up.acquires, 2);
  up.wrote_len = 0;
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK(wrote_has("GET /x HTTP/1.1\r\n"));
  CHECK(!wrote_has("early-data"));
  /* A second 425 goes to the client: no endless loop. */
  up_send(too_early, strlen(too_early));
  CHECK_EQ_INT(fe.status, 425);
  h3g_bridge_free(b);

  /* 425 after the handshake completed: sent again at once. */
  b = new_bridge(4096);
  rconf.s.early_data = 1;
  add_request(b, "HEAD", "/");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  h3g_bridge_handshake_done(b);
  up_send(too_early, strlen(too_early));
  CHECK_EQ_INT(up.acquires, 2);
  CHECK_EQ_INT(fe.heads, 0);
  h3g_bridge_free(b);

  /* The client marked it itself (an intermediary): its 425 passes. */
  b = new_bridge(4096);
  rconf.s.early_data = 1;
  add_request(b, "GET", "/");
  add(b, "early-data", "1");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK(wrote_has("\r\nearly-data: 1\r\n"));
  {
    const char *first = memmem(up.wrote, up.wrote_len, "early-data", 10);
    CHECK(first != NULL);
    if (first != NULL) /* the client's field only, not a second one */
      CHECK(memmem(first + 1, up.wrote_len - (size_t)(first + 1 - up.wrote),
                   "early-data", 10) == NULL);
  }
  up_send(too_early, strlen(too_early));
  CHECK_EQ_INT(fe.status, 425);
  CHECK_EQ_INT(up.acquires, 1);
  h3g_bridge_free(b);

  /* 0-RTT switched off for the listener: even a GET waits. */
  b = new_bridge(4096);
  rconf.s.early_data = 0;
  add_request(b, "GET", "/");
  h3g_bridge_set_early(b);
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(up.acquires, 0);
  h3g_bridge_handshake_done(b);
  CHECK_EQ_INT(up.acquires, 1);
  h3g_bridge_free(b);
}

/* A stalled request body: 408 when the client has credit and sends
 * nothing; never while the upstream is what holds the body back. */
static void test_body_timeout(void) {
  h3g_bridge *b = new_bridge(4096);
  rconf.s.request_body_timeout_ms = 2;
  add_request(b, "POST", "/");
  add(b, "content-length", "10");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
  /* The 3 bytes are with the upstream's socket (a write in flight): not
   * the client's stall. */
  usleep(5000);
  CHECK(fire_timer(2));
  CHECK_EQ_INT(fe.heads, 0);
  up_written(b); /* now all credit is back with the client */
  usleep(5000);
  CHECK(fire_timer(2));
  CHECK_EQ_INT(fe.status, 408);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(fe.stop_request, 1);
  h3g_bridge_free(b);

  /* Body keeps coming: no timeout; a bodiless request arms nothing. */
  b = new_bridge(4096);
  rconf.s.request_body_timeout_ms = 50;
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK(!fire_timer(50));
  h3g_bridge_free(b);

  /* Off (0): no timer at all. */
  b = new_bridge(4096);
  rconf.s.request_body_timeout_ms = 0;
  add_request(b, "POST", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK(!fire_timer(0));
  h3g_bridge_free(b);
}

/* RFC 9218: the request's priority orders its wait for a connection
 * (grouped by client connection); an update moves a waiting request; the
 * origin's Priority field is merged into what the front end schedules. */
static void test_priority(void) {
  h3g_bridge *b = new_bridge(4096);
  add_request(b, "GET", "/img");
  add(b, "priority", "u=5, i");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(up.waiter->urgency, 5);
  CHECK(up.waiter->group == &env);
  /* A PRIORITY_UPDATE while it waits. */
  h3g_bridge_set_priority(b, (h3g_priority){.urgency = 2, .incremental = 1});
  CHECK_EQ_INT(up.set_urgencies, 1);
  CHECK_EQ_INT(up.waiter->urgency, 2);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                     "Priority: u=1\r\n\r\nok";
  up_send(resp, strlen(resp));
  CHECK_EQ_INT(fe.heads, 1);
  CHECK_EQ_INT(fe.set_priorities, 1);
  CHECK_EQ_INT(fe.prio.urgency, 1);     /* the origin's */
  CHECK_EQ_INT(fe.prio.incremental, 1); /* the client's, kept */
  /* End to end: the field still reaches the client. */
  CHECK(strstr(fe.fields, "priority: u=1") != NULL);
  h3g_bridge_free(b);

  /* No priority field: RFC 9218 defaults; a response without one changes
   * nothing; a front end that already told the bridge wins. */
  b = new_bridge(4096);
  add_request(b, "GET", "/");
  add(b, "priority", "u=0");
  h3g_bridge_set_priority(b, (h3g_priority){.urgency = 6, .incremental = 0});
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(up.waiter->urgency, 6);
  CHECK_EQ_INT(up.set_urgencies, 0); /* not waiting yet when told */
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  up_send(resp, strlen(resp));
  CHECK_EQ_INT(fe.heads, 1);
  CHECK_EQ_INT(fe.set_priorities, 0);
  h3g_bridge_free(b);

  b = new_bridge(4096);
  add_request(b, "GET", "/");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 1), 0);
  CHECK_EQ_INT(up.waiter->urgency, 3);
  h3g_bridge_free(b);
}

/* Sends body bytes as the client would, using all the credit it has,
 * and lets the upstream take each write at once. Returns bytes sent. */
static size_t upload(h3g_bridge *b, size_t n) {
  static const uint8_t block[4096];
  size_t sent = 0;
  while (sent < n) {
    size_t k = H3G_MIN(sizeof(block), n - sent);
    CHECK_EQ_INT(h3g_bridge_recv_body(b, block, k), 0);
    sent += k;
    while (up.writes_pending) {
      up.wrote_len = 0; /* the fake keeps no more than 64 KiB */
      up_written(b);
    }
  }
  return sent;
}

/* The request window doubles while whole windows come back faster than
 * two round trips (the upstream keeps up), up to max_stream_window, and
 * never without a round-trip time or when credit comes back slowly. */
static void test_request_window_autotuning(void) {
  h3g_bridge *b;
  /* fe.rtt: 10 s (every window counts as fast), 1 ns (every window took
   * longer than two round trips), 0 (no round-trip time known). */
  uint64_t rtts[] = {10ull * 1000000000u, 1, 0};
  for (size_t k = 0; k < H3G_ARRAY_LEN(rtts); k++) {
    b = new_bridge_with(4096, &fake_fe_window_ops);
    cfg.max_stream_window = 16384;
    fe.rtt = rtts[k];
    add_request(b, "POST", "/sink");
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
    up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
    up_written(b); /* the head */
    if (k == 0) {
      upload(b, 4096);
      CHECK_EQ_INT(fe.grows, 1); /* 4 KiB -> 8 KiB */
      CHECK_EQ_INT(fe.grown, 4096);
      /* The client may now have 8 KiB outstanding: the queue takes it. */
      upload(b, 8192);
      CHECK_EQ_INT(fe.grows, 2); /* -> 16 KiB, the maximum */
      CHECK_EQ_INT(fe.grown, 12288);
      upload(b, 64 * 1024);
      CHECK_EQ_INT(fe.grows, 2);
      CHECK_EQ_INT(fe.consumed, 4096 + 8192 + 64 * 1024);
    } else {
      upload(b, 64 * 1024);
      CHECK_EQ_INT(fe.grows, 0);
    }
    h3g_bridge_free(b);
  }
}

/* ---- WebSocket tunnels ------------------------------------------------ */

/* RFC 6455 §1.3's example key, as an HTTP/1.1 client would send it. */
#define CLIENT_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define CLIENT_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* An extended CONNECT for a WebSocket (RFC 9220 §3), as the HTTP/3 and
 * HTTP/2 front ends pass it; protocol is :protocol's value. */
static void add_connect(h3g_bridge *b, const char *path, const char *protocol) {
  add(b, ":method", "CONNECT");
  add(b, ":protocol", protocol);
  add(b, ":scheme", "https");
  add(b, ":path", path);
  add(b, ":authority", "example.com");
}

/* The same handshake from an HTTP/1.1 client: its front end passes the
 * GET with "Upgrade: websocket" as an extended CONNECT, with the client's
 * own fields but Connection and Upgrade (h1_session.c). key and version
 * NULL: left out. */
static void add_h1_upgrade(h3g_bridge *b, const char *key,
                           const char *version) {
  add_connect(b, "/chat", "websocket");
  if (key != NULL)
    add(b, "sec-websocket-key", key);
  if (version != NULL)
    add(b, "sec-websocket-version", version);
  add(b, "sec-websocket-protocol", "chat");
}

/* How many times needle occurs in what the upstream was sent. */
static int wrote_count(const char *needle) {
  int n = 0;
  size_t nl = strlen(needle);
  const char *p = up.wrote, *end = up.wrote + up.wrote_len;
  while ((p = memmem(p, (size_t)(end - p), needle, nl)) != NULL) {
    n++;
    p += nl;
  }
  return n;
}

/* The length of the request head the upstream was sent first. */
static size_t wrote_head_len(void) {
  const char *e = memmem(up.wrote, up.wrote_len, "\r\n\r\n", 4);
  return e != NULL ? (size_t)(e - up.wrote) + 4 : 0;
}

/* The Sec-WebSocket-Key of the last head the upstream was sent, into
 * key (H3G_WS_KEY_LEN + 1 bytes). Returns 1 if it has exactly one, of
 * the length of a key. */
static int wrote_key(char *key) {
  static const char name[] = "\r\nsec-websocket-key: ";
  const char *p = NULL, *q = up.wrote, *end = up.wrote + up.wrote_len;
  while ((q = memmem(q, (size_t)(end - q), name, sizeof(name) - 1)) != NULL) {
    p = q + sizeof(name) - 1;
    q = p;
  }
  if (p == NULL || end - p < H3G_WS_KEY_LEN + 2 ||
      memcmp(p + H3G_WS_KEY_LEN, "\r\n", 2) != 0)
    return 0;
  memcpy(key, p, H3G_WS_KEY_LEN);
  key[H3G_WS_KEY_LEN] = '\0';
  return 1;
}

/* A 101 for key (its Accept computed by ws_key.h), with extra fields
 * ("Name: value\r\n"...), into buf. Returns its length. */
static size_t make_101(char *buf, size_t cap, const char *key,
                       const char *extra) {
  char accept[H3G_WS_ACCEPT_LEN + 1];
  CHECK_EQ_INT(h3g_ws_accept((const uint8_t *)key, strlen(key), accept), 0);
  int n = snprintf(buf, cap,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                   accept, extra);
  CHECK(n > 0 && (size_t)n < cap);
  return (size_t)n;
}

/* The one live timer's duration, or 0 when none is (or several are). */
static uint64_t live_timer_ms(void) {
  uint64_t ms = 0;
  int live = 0;
  for (size_t i = 0; i < H3G_ARRAY_LEN(timers); i++)
    if (timers[i].used) {
      live++;
      ms = timers[i].ms;
    }
  return live == 1 ? ms : 0;
}

/* Fires the one live timer, whatever its duration. */
static void fire_live_timer(void) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(timers); i++)
    if (timers[i].used) {
      timers[i].used = 0;
      timers[i].cb(timers[i].arg);
      return;
    }
  CHECK(0 && "no live timer");
}

static const char *outcome_of(const h3g_bridge *b) {
  h3g_bridge_usage u;
  h3g_bridge_get_usage(b, &u);
  return u.outcome;
}

/* Collects what the front end can take now (without releasing it). */
static size_t take_now(h3g_bridge *b, char *out, size_t cap, unsigned *flags) {
  h3g_iovec v[4];
  size_t total = 0;
  size_t n = h3g_bridge_take_body(b, v, 4, SIZE_MAX, flags);
  for (size_t i = 0; i < n; i++) {
    if (total + v[i].len <= cap)
      memcpy(out + total, v[i].base, v[i].len);
    total += v[i].len;
  }
  return total;
}

/*
 * A WebSocket tunnel opened from HTTP/3, up to the 101: the bridge has
 * sent the handshake head and its write completed; held bytes (if any)
 * were received before the connection came. The 101 (with its Accept for
 * the key the upstream got) and tail (the tunnel's first bytes, in the
 * same read) are delivered. Returns the bridge, tunnel open.
 */
static h3g_bridge *open_tunnel(size_t bufsize, const char *held,
                               const char *tail) {
  h3g_bridge *b = new_bridge(bufsize);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  if (held != NULL)
    CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)held, strlen(held)),
                 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  char key[H3G_WS_KEY_LEN + 1];
  CHECK(wrote_key(key));
  char resp[512];
  size_t n = make_101(resp, sizeof(resp), key, "");
  size_t tl = tail != NULL ? strlen(tail) : 0;
  if (tl > 0)
    memcpy(resp + n, tail, tl);
  up_send(resp, n + tl);
  CHECK_EQ_INT(up.upgrades, 1);
  CHECK_EQ_INT(fe.status, 200);
  return b;
}

/*
 * RFC 9220 §3 to RFC 6455 §4.1: an extended CONNECT goes upstream as the
 * HTTP/1.1 handshake, a GET with a fresh key of ours (the client's key
 * and version are not passed); client bytes wait for the 101; a 101 with
 * the right Accept gives the client a 200 with no Accept, after which
 * bytes go raw both ways; the client's end shuts our write side once
 * its bytes went, the upstream's end ends the response, and the
 * connection, never reused, is released once both sides ended.
 */
static void test_tunnel_h3_open_and_close(void) {
  int64_t opened0 = h3g_stats.tunnels_opened, open0 = h3g_stats.tunnels_open;
  int64_t up0 = h3g_stats.tunnel_bytes_up, down0 = h3g_stats.tunnel_bytes_down;
  int64_t req0 = h3g_stats.request_body_bytes;
  int64_t resp0 = h3g_stats.response_body_bytes;
  h3g_bridge *b = new_bridge(4096);
  add_connect(b, "/chat?room=1", "websocket");
  add(b, "sec-websocket-key", "Y2xpZW50J3Mgb3duIGtleQ==");
  add(b, "sec-websocket-version", "13");
  add(b, "sec-websocket-protocol", "chat, superchat");
  add(b, "origin", "https://example.com");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(conn_tunnels, 1); /* counted from its admission */
  CHECK_EQ_INT(h3g_stats.tunnels_open, open0 + 1);
  /* Bytes before the connection, then before the 101: held. */
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"hel", 3), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"lo", 2), 0);
  CHECK_EQ_INT(up.writes_pending, 1);
  size_t head_len = wrote_head_len();
  CHECK_EQ_INT(up.wrote_len, head_len); /* the head alone */
  up.wrote[up.wrote_len] = '\0';
  CHECK(strncmp(up.wrote, "GET /chat?room=1 HTTP/1.1\r\n", 27) == 0);
  CHECK(wrote_has("\r\nHost: example.com\r\n"));
  CHECK_EQ_INT(wrote_count("\r\nconnection: Upgrade\r\n"), 1);
  CHECK_EQ_INT(wrote_count("\r\nupgrade: websocket\r\n"), 1);
  CHECK_EQ_INT(wrote_count("\r\nsec-websocket-version: 13\r\n"), 1);
  CHECK_EQ_INT(wrote_count("sec-websocket-version"), 1);
  CHECK_EQ_INT(wrote_count("sec-websocket-key"), 1);
  CHECK(wrote_has("\r\nsec-websocket-protocol: chat, superchat\r\n"));
  CHECK(wrote_has("\r\norigin: https://example.com\r\n"));
  CHECK(!wrote_has("Y2xpZW50J3Mgb3duIGtleQ=="));
  CHECK(!wrote_has("CONNECT"));
  CHECK(!wrote_has("protocol: websocket"));
  CHECK(!wrote_has("ontent-Length"));
  CHECK(!wrote_has("ransfer-Encoding"));
  char key[H3G_WS_KEY_LEN + 1];
  CHECK(wrote_key(key));
  CHECK(key[22] == '=' && key[23] == '=');
  up_written(b);
  CHECK_EQ_INT(up.wrote_len, head_len); /* still nothing of the tunnel */
  CHECK_EQ_INT(fe.consumed, 0);         /* so no credit back either */
  CHECK_EQ_INT(fe.heads, 0);

  /* The 101, with the tunnel's first bytes in the same read. */
  char resp[512];
  size_t n =
      make_101(resp, sizeof(resp), key, "Sec-WebSocket-Protocol: chat\r\n");
  memcpy(resp + n, "\x81\x02hi", 4);
  up_send(resp, n + 4);
  CHECK_EQ_INT(up.upgrades, 1);
  CHECK_EQ_INT(up.upgrade_heads, 0); /* left the pool before the 200 */
  CHECK_EQ_INT(fe.heads, 1);
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(fe.has_body, 1);
  CHECK(strstr(fe.fields, "sec-websocket-protocol: chat\n") != NULL);
  CHECK(strstr(fe.fields, "sec-websocket-accept") == NULL);
  CHECK(strstr(fe.fields, "upgrade") == NULL);
  CHECK(strstr(fe.fields, "connection") == NULL);
  CHECK(strstr(fe.fields, "content-length") == NULL);
  CHECK_EQ_INT(up.read_timeout, 0); /* the idle timer watches a tunnel */
  CHECK_EQ_INT(h3g_stats.tunnels_opened, opened0 + 1);
  CHECK_EQ_INT(live_timer_ms(), 3600000);
  /* The held bytes go now, raw (no chunk framing), and only now are they
   * credited. */
  CHECK_EQ_INT(up.writes_pending, 1);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "hello");
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 5);
  /* The bytes behind the 101 are the client's first. */
  char body[64];
  unsigned flags;
  CHECK(fe.body_ready > 0);
  n = take_now(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "\x81\x02hi");
  CHECK_EQ_INT(flags, 0);
  h3g_bridge_body_done(b, n);

  /* Both ways, as they come. */
  up_send("\x81\x03"
          "abc",
          5);
  n = take_now(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n,
            "\x81\x03"
            "abc");
  h3g_bridge_body_done(b, n);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"xyz", 3), 0);
  CHECK_MEM(up.wrote + head_len + 5, up.wrote_len - head_len - 5, "xyz");

  /* The client's end: our FIN once "xyz" went, not before. */
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(up.shutdowns, 0);
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 8);
  CHECK_EQ_INT(up.shutdowns, 1);
  CHECK_EQ_INT(up.wrote_at_shutdown, head_len + 8);
  CHECK_EQ_INT(up.released, 0); /* the upstream may still send */
  up_send("bye", 3);
  n = take_now(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "bye");
  CHECK_EQ_INT(flags, 0);
  h3g_bridge_body_done(b, n);

  /* The upstream's end: the stream ends, the connection is closed. */
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(up.resets, 0);
  CHECK_EQ_INT(live_timer_ms(), 0); /* the idle timer went with it */
  n = take_now(b, body, sizeof(body), &flags);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(flags, H3G_BODY_END);
  CHECK(h3g_bridge_response_done(b));
  CHECK_EQ_INT(fe.aborted, 0);
  CHECK(strcmp(outcome_of(b), "ok") == 0);
  /* Tunnel bytes are counted as such, not as bodies. */
  CHECK_EQ_INT(h3g_stats.tunnel_bytes_up - up0, 8);
  CHECK_EQ_INT(h3g_stats.tunnel_bytes_down - down0, 12);
  CHECK_EQ_INT(h3g_stats.request_body_bytes, req0);
  CHECK_EQ_INT(h3g_stats.response_body_bytes, resp0);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
  CHECK_EQ_INT(h3g_stats.tunnels_open, open0);
}

/*
 * Once the upstream ended its side, the client's bytes still go: the
 * upstream only shut its write side (a half-closed TCP connection reads
 * on), and the bridge keeps the connection for them until the client's
 * end, which then closes it. (A WebSocket server that sends its Close and
 * its FIN first still reads the client's Close frame.)
 */
static void test_tunnel_upstream_ends_first(void) {
  h3g_bridge *b = open_tunnel(4096, NULL, NULL);
  size_t head_len = wrote_head_len();
  up.waiter->ev->on_eof(up.waiter->ctx);
  char body[16];
  unsigned flags;
  CHECK_EQ_INT(take_now(b, body, sizeof(body), &flags), 0);
  CHECK_EQ_INT(flags, H3G_BODY_END);
  CHECK_EQ_INT(up.released, 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"late", 4), 0);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "late");
  CHECK_EQ_INT(fe.consumed, 0); /* credited once written, not dropped */
  if (up.writes_pending)
    up_written(b);
  CHECK_EQ_INT(fe.consumed, 4);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(up.shutdowns, 1);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(fe.aborted, 0);
  CHECK(strcmp(outcome_of(b), "ok") == 0);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/* The client ended its side before the 101: the held bytes go after it,
 * then our FIN. */
static void test_tunnel_client_ends_before_101(void) {
  h3g_bridge *b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"last", 4), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  size_t head_len = wrote_head_len();
  CHECK_EQ_INT(up.wrote_len, head_len);
  CHECK_EQ_INT(up.shutdowns, 0);
  char key[H3G_WS_KEY_LEN + 1], resp[512];
  CHECK(wrote_key(key));
  size_t n = make_101(resp, sizeof(resp), key, "");
  up_send(resp, n);
  CHECK_EQ_INT(fe.status, 200);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "last");
  CHECK_EQ_INT(up.shutdowns, 0);
  up_written(b);
  CHECK_EQ_INT(up.shutdowns, 1);
  CHECK_EQ_INT(up.wrote_at_shutdown, head_len + 4);
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* With nothing held, our FIN follows the 101 at once. */
  b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK(wrote_key(key));
  n = make_101(resp, sizeof(resp), key, "");
  up_send(resp, n);
  CHECK_EQ_INT(up.shutdowns, 1);
  CHECK_EQ_INT(up.wrote_at_shutdown, wrote_head_len());
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/*
 * The 101 may come before the handshake's write is reported done (the
 * upstream answered what it read at once): the tunnel opens all the same,
 * and that write's completion must not put the response timeout back on
 * the tunnel's connection (a quiet upstream would then be cut after
 * response_timeout instead of tunnel_idle_timeout).
 */
static void test_tunnel_101_before_head_written(void) {
  h3g_bridge *b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"held", 4), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  CHECK_EQ_INT(up.writes_pending, 1);
  size_t head_len = wrote_head_len();
  char key[H3G_WS_KEY_LEN + 1], resp[512];
  CHECK(wrote_key(key));
  size_t n = make_101(resp, sizeof(resp), key, "");
  up_send(resp, n);
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(up.upgrades, 1);
  CHECK_EQ_INT(up.read_timeout, 0);
  CHECK_EQ_INT(up.wrote_len, head_len); /* one write at a time */
  up_written(b);
  CHECK_EQ_INT(up.read_timeout, 0);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "held");
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 4);
  CHECK_EQ_INT(up.read_timeout, 0);
  h3g_bridge_free(b);

  /* The 101 and the upstream's end of its side, both before that write's
   * completion: the completion does not end the tunnel (the end of the
   * handshake's message is not the end of the client's side); the held
   * bytes still go, and the connection waits for the client's end. */
  b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"held", 4), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  head_len = wrote_head_len();
  CHECK(wrote_key(key));
  n = make_101(resp, sizeof(resp), key, "");
  up_send(resp, n);
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(up.released, 0);
  up_written(b);
  CHECK_EQ_INT(up.released, 0);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "held");
  if (up.writes_pending)
    up_written(b);
  CHECK_EQ_INT(fe.consumed, 4);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(up.shutdowns, 1);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK(strcmp(outcome_of(b), "ok") == 0);
  h3g_bridge_free(b);
}

/*
 * The 200 that opens a tunnel to an HTTP/3 or HTTP/2 client carries no
 * content-length (ws-spec; RFC 9114 §4.1.2 would make the tunnel's DATA
 * malformed against it), even when the upstream's 101 wrongly has one
 * (RFC 9110 §8.6: never in a 1xx); the fields the client may use
 * (protocol, extensions) and the route's own response fields are kept.
 */
static void test_tunnel_200_fields(void) {
  static const h3g_header_edit hsts = {.name = "strict-transport-security",
                                       .value = "max-age=60"};
  h3g_bridge *b = new_bridge(4096);
  rconf.s.add_response = (h3g_header_edit *)&hsts;
  rconf.s.nadd_response = 1;
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  char key[H3G_WS_KEY_LEN + 1], resp[512];
  CHECK(wrote_key(key));
  size_t n = make_101(resp, sizeof(resp), key,
                      "Content-Length: 0\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                      "Sec-WebSocket-Protocol: chat\r\n");
  up_send(resp, n);
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(fe.has_body, 1);
  CHECK(strstr(fe.fields, "content-length") == NULL);
  CHECK(strstr(fe.fields, "sec-websocket-accept") == NULL);
  CHECK(strstr(fe.fields, "sec-websocket-extensions: permessage-deflate\n") !=
        NULL);
  CHECK(strstr(fe.fields, "sec-websocket-protocol: chat\n") != NULL);
  CHECK(strstr(fe.fields, "strict-transport-security: max-age=60\n") != NULL);
  if (strstr(fe.fields, "content-length") != NULL)
    fprintf(stderr, "  the 200's fields:\n%s", fe.fields);
  h3g_bridge_free(b);
}

/*
 * On a route without WebSockets an HTTP/1.1 handshake goes on as the plain
 * GET it is underneath; one that declared a body (Content-Length: 3) must
 * not leave the upstream waiting for bytes that never come on a connection
 * given back for reuse: the next request's first bytes would be read as
 * them. Either the body goes (as any request's), or the request is
 * refused before it reaches the upstream.
 */
static void test_tunnel_h1_route_off_declared_body(void) {
  const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  h3g_bridge *b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
  rconf.s.websocket = 0;
  add_h1_upgrade(b, CLIENT_KEY, "13");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  if (up.acquires == 1) {
    up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
    if (up.writes_pending)
      up_written(b);
    size_t head_len = wrote_head_len();
    int declared = wrote_has("\r\nContent-Length: 3\r\n");
    up_send(r, strlen(r));
    CHECK_EQ_INT(fe.status, 200);
    /* Reusable only after the whole message it announced. */
    CHECK(!(up.released && up.reusable) || !declared ||
          up.wrote_len == head_len + 3);
  } else {
    CHECK_EQ_INT(fe.status, 400);
  }
  h3g_bridge_free(b);

  /* The body, when the client sends it, goes after the head. */
  b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
  rconf.s.websocket = 0;
  add_h1_upgrade(b, CLIENT_KEY, "13");
  add(b, "content-length", "3");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  if (up.acquires == 1) {
    up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
    if (up.writes_pending)
      up_written(b);
    size_t head_len = wrote_head_len();
    CHECK(wrote_has("\r\nContent-Length: 3\r\n"));
    CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"abc", 3), 0);
    CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "abc");
    if (up.writes_pending)
      up_written(b);
    CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
    up_send(r, strlen(r));
    CHECK_EQ_INT(fe.status, 200);
    CHECK_EQ_INT(up.released, 1);
    CHECK_EQ_INT(up.reusable, 1);
  } else {
    CHECK_EQ_INT(fe.status, 400);
  }
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/* The 101 in two reads, split inside its head: the tunnel opens once the
 * head is whole, and the bytes after it are the tunnel's. */
static void test_tunnel_101_split(void) {
  char key[H3G_WS_KEY_LEN + 1], resp[512];
  for (size_t cut = 1; cut < 60; cut += 7) {
    h3g_bridge *b = new_bridge(4096);
    add_connect(b, "/chat", "websocket");
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
    up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
    up_written(b);
    CHECK(wrote_key(key));
    size_t n = make_101(resp, sizeof(resp), key, "");
    memcpy(resp + n, "\x82\x01z", 3);
    up_send(resp, cut);
    CHECK_EQ_INT(up.upgrades, 0);
    CHECK_EQ_INT(fe.heads, 0);
    up_send(resp + cut, n + 3 - cut);
    CHECK_EQ_INT(up.upgrades, 1);
    CHECK_EQ_INT(fe.status, 200);
    char body[16];
    unsigned flags;
    size_t got = take_now(b, body, sizeof(body), &flags);
    CHECK_MEM(body, got, "\x82\x01z");
    h3g_bridge_free(b);
  }
}

/* RFC 6455 §4.1: the client (here, the gateway for it) fails the
 * handshake on a 101 without the right Accept or the upgrade fields; a 2xx
 * would read as the tunnel opening to an HTTP/3 client. All 502: nothing
 * of the client's went, its credit comes back, the connection is closed. */
static void test_tunnel_bad_upgrade(void) {
  static const char *const bad[] = {
      /* @: the right Accept, ~: all of it but its last character */
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: " CLIENT_ACCEPT
      "\r\n\r\n", /* another key's */
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: ~\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: @\r\nContent-Length: 0\r\n\r\n",
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    int64_t open0 = h3g_stats.tunnels_opened;
    h3g_bridge *b = new_bridge(4096);
    add_connect(b, "/chat", "websocket");
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
    CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"held", 4), 0);
    up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
    up_written(b);
    size_t head_len = wrote_head_len();
    char key[H3G_WS_KEY_LEN + 1], accept[H3G_WS_ACCEPT_LEN + 1];
    CHECK(wrote_key(key));
    CHECK_EQ_INT(h3g_ws_accept((const uint8_t *)key, H3G_WS_KEY_LEN, accept),
                 0);
    char resp[512];
    size_t n = 0;
    for (const char *p = bad[i]; *p != '\0' && n + 32 < sizeof(resp); p++) {
      if (*p == '@' || *p == '~') {
        size_t al = *p == '@' ? H3G_WS_ACCEPT_LEN : H3G_WS_ACCEPT_LEN - 1;
        memcpy(resp + n, accept, al);
        n += al;
      } else {
        resp[n++] = *p;
      }
    }
    up_send(resp, n);
    if (fe.status != 502)
      fprintf(stderr, "  answer %zu: status %d\n", i, fe.status);
    CHECK_EQ_INT(fe.heads, 1);
    CHECK_EQ_INT(fe.status, 502);
    CHECK_EQ_INT(up.upgrades, 0);
    CHECK_EQ_INT(up.released, 1);
    CHECK_EQ_INT(up.reusable, 0);
    CHECK_EQ_INT(up.wrote_len, head_len);
    CHECK_EQ_INT(fe.consumed, 4);
    CHECK(strcmp(outcome_of(b), "upstream-bad-upgrade") == 0);
    CHECK_EQ_INT(h3g_stats.tunnels_opened, open0);
    char body[64];
    unsigned flags;
    size_t got = drain_body(b, body, sizeof(body), &flags);
    CHECK(got >= 3 && memcmp(body, "502", 3) == 0);
    CHECK(flags & H3G_BODY_END);
    /* Later bytes are not for anyone: credited at once, never written. */
    CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"more", 4), 0);
    CHECK_EQ_INT(fe.consumed, 8);
    CHECK_EQ_INT(up.wrote_len, head_len);
    h3g_bridge_free(b);
    CHECK_EQ_INT(conn_tunnels, 0);
  }
}

/* Any other answer (a 403, a 404) is passed on as an ordinary response:
 * nothing was upgraded nor written of the tunnel, so the connection may be
 * reused; the held bytes never reach it. */
static void test_tunnel_refused_by_upstream(void) {
  int64_t refused0 = h3g_stats.tunnels_refused;
  h3g_bridge *b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"held", 4), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  size_t head_len = wrote_head_len();
  const char *r = "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 403);
  CHECK_EQ_INT(fe.has_body, 1);
  CHECK_EQ_INT(up.upgrades, 0);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 1);
  char body[16];
  unsigned flags;
  size_t n = drain_body(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "no");
  CHECK(flags & H3G_BODY_END);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"more", 4), 0);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(up.wrote_len, head_len);
  CHECK_EQ_INT(up.shutdowns, 0);
  CHECK_EQ_INT(conn_tunnels, 1); /* counted until freed */
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
  CHECK_EQ_INT(h3g_stats.tunnels_refused, refused0 + 1);

  /* The answer while the handshake's write is still in flight: the same,
   * the connection given back once the write is done. */
  b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"held", 4), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  r = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 404);
  CHECK_EQ_INT(up.released, 0);
  up_written(b);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 1);
  CHECK_EQ_INT(up.wrote_len, wrote_head_len());
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/*
 * Refused before any upstream is involved: a :protocol other than
 * websocket, a route, front end or upstream without tunnels (501), a
 * declared body (400), and, when no route takes WebSockets (so extended
 * CONNECT was never offered), any :protocol at all (malformed: the front
 * end resets the stream). None is counted as an open tunnel.
 */
static void test_tunnel_refused_here(void) {
  int64_t open0 = h3g_stats.tunnels_open;
  struct {
    const char *protocol;
    int route_off, no_fe, no_up, body;
    int status;
    const char *outcome;
  } cases[] = {
      {"foo", 0, 0, 0, 0, 501, "unknown-protocol"},
      {"websockets", 0, 0, 0, 0, 501, "unknown-protocol"},
      {"websocket", 1, 0, 0, 0, 501, "websocket-off"},
      {"websocket", 0, 1, 0, 0, 501, "websocket-off"},
      {"websocket", 0, 0, 1, 0, 501, "websocket-off"},
      {"websocket", 0, 0, 0, 1, 400, "tunnel-with-body"},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(cases); i++) {
    h3g_bridge *b = new_bridge_with(
        4096, cases[i].no_fe ? &fake_fe_no_tunnel_ops : &fake_fe_ops);
    rconf.s.websocket = !cases[i].route_off;
    if (cases[i].no_up)
      route.ops = &fake_ops_no_tunnels;
    add_connect(b, "/chat", cases[i].protocol);
    if (cases[i].body)
      add(b, "content-length", "5");
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
    CHECK_EQ_INT(up.acquires, 0);
    CHECK_EQ_INT(fe.status, cases[i].status);
    CHECK(strcmp(outcome_of(b), cases[i].outcome) == 0);
    CHECK_EQ_INT(conn_tunnels, 0);
    CHECK_EQ_INT(h3g_stats.tunnels_open, open0);
    char body[64], want[64];
    unsigned flags;
    size_t n = drain_body(b, body, sizeof(body), &flags);
    snprintf(want, sizeof(want), "%d %s\n", cases[i].status,
             cases[i].status == 501 ? "Not Implemented" : "Bad Request");
    CHECK_MEM(body, n, want);
    h3g_bridge_free(b);
  }

  /* Upgrade tokens compare case-insensitively (RFC 9110 §7.8). */
  h3g_bridge *b = new_bridge(4096);
  add_connect(b, "/chat", "WebSocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(conn_tunnels, 1);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);

  /* No route took WebSockets when the connection opened:
   * SETTINGS_ENABLE_CONNECT_PROTOCOL was not sent, so :protocol is
   * malformed (RFC 9220 §3, RFC 8441 §4), whatever the configuration says
   * now. */
  offer_connect = 0;
  b = new_bridge(4096);
  offer_connect = 1;
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), H3G_ERR_PROTO);
  CHECK_EQ_INT(up.acquires, 0);
  CHECK_EQ_INT(fe.heads, 0);
  CHECK_EQ_INT(conn_tunnels, 0);
  CHECK(strcmp(outcome_of(b), "malformed") == 0);
  h3g_bridge_free(b);

  /* Offered when the connection opened, then a reload turned WebSockets
   * off everywhere: well-formed, refused by the route (501). */
  b = new_bridge(4096);
  cfg.websocket_any = 0;
  rconf.s.websocket = 0;
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(up.acquires, 0);
  CHECK_EQ_INT(fe.status, 501);
  CHECK(strcmp(outcome_of(b), "websocket-off") == 0);
  CHECK_EQ_INT(conn_tunnels, 0);
  h3g_bridge_free(b);

  /* Malformed whatever the settings: CONNECT without :protocol, :protocol
   * without CONNECT, extended CONNECT without :authority. */
  static const char *const forms[][5][2] = {
      {{":method", "CONNECT"}, {":authority", "example.com:443"}},
      {{":method", "GET"},
       {":protocol", "websocket"},
       {":scheme", "https"},
       {":path", "/"},
       {":authority", "example.com"}},
      {{":method", "CONNECT"},
       {":protocol", "websocket"},
       {":scheme", "https"},
       {":path", "/"}},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(forms); i++) {
    b = new_bridge(4096);
    for (size_t k = 0; k < 5 && forms[i][k][0] != NULL; k++)
      add(b, forms[i][k][0], forms[i][k][1]);
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), H3G_ERR_PROTO);
    CHECK_EQ_INT(up.acquires, 0);
    h3g_bridge_free(b);
  }
  CHECK_EQ_INT(conn_tunnels, 0);
  CHECK_EQ_INT(h3g_stats.tunnels_open, open0);
}

/* max_tunnels_per_connection counts the tunnels of one client connection
 * (open or being opened), max_tunnels those of the whole gateway: over
 * either, 503 without an upstream. Freeing a bridge gives its place back. */
static void test_tunnel_limits(void) {
  h3g_bridge *a = new_bridge(4096);
  cfg.max_tunnels_per_connection = 1;
  add_connect(a, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(a, 0), 0);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(conn_tunnels, 1);
  /* A second stream of the same connection. */
  h3g_bridge *b = NULL;
  CHECK_EQ_INT(
      h3g_bridge_new(&b, &env, &fake_fe_ops, &fe, &env, "127.0.0.1:1", "h3"),
      0);
  h3g_bridge_connect_offered(b);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(fe.status, 503);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK(strcmp(outcome_of(b), "too-many-tunnels") == 0);
  CHECK_EQ_INT(conn_tunnels, 1);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 1);
  /* Another connection is not limited by this one's count... */
  tunnel_counter = &other_conn_tunnels;
  fe.status = 0;
  CHECK_EQ_INT(
      h3g_bridge_new(&b, &env, &fake_fe_ops, &fe, &env, "127.0.0.1:2", "h3"),
      0);
  h3g_bridge_connect_offered(b);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(fe.status, 0);
  CHECK_EQ_INT(other_conn_tunnels, 1);
  h3g_bridge_free(b);
  CHECK_EQ_INT(other_conn_tunnels, 0);
  /* ... but by the gateway's, with one tunnel open in all. */
  cfg.max_tunnels = (uint32_t)h3g_stats.tunnels_open;
  CHECK_EQ_INT(
      h3g_bridge_new(&b, &env, &fake_fe_ops, &fe, &env, "127.0.0.1:2", "h3"),
      0);
  h3g_bridge_connect_offered(b);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(fe.status, 503);
  CHECK_EQ_INT(other_conn_tunnels, 0);
  h3g_bridge_free(b);
  tunnel_counter = &conn_tunnels;
  /* The first one's place comes back when it is freed. */
  h3g_bridge_free(a);
  CHECK_EQ_INT(conn_tunnels, 0);
  fe.status = 0;
  CHECK_EQ_INT(
      h3g_bridge_new(&b, &env, &fake_fe_ops, &fe, &env, "127.0.0.1:1", "h3"),
      0);
  h3g_bridge_connect_offered(b);
  cfg.max_tunnels = (uint32_t)h3g_stats.tunnels_open + 1;
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(fe.status, 0);
  CHECK_EQ_INT(conn_tunnels, 1);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/* RFC 9220 §3 by way of RFC 9114 §4.4: the client's reset of an open
 * tunnel resets the TCP connection (reset(), not release()); before the
 * 101 there is no tunnel yet, and the exchange is only cut. */
static void test_tunnel_client_abort(void) {
  h3g_bridge *b = open_tunnel(4096, NULL, NULL);
  h3g_bridge_client_abort(b);
  CHECK_EQ_INT(up.resets, 1);
  CHECK_EQ_INT(up.released, 0);
  CHECK_EQ_INT(fe.aborted, 0); /* the client's doing: nothing to tell it */
  CHECK_EQ_INT(live_timer_ms(), 0);
  CHECK(strcmp(outcome_of(b), "client-reset") == 0);
  h3g_bridge_free(b);
  CHECK_EQ_INT(up.resets + up.released, 1);
  CHECK_EQ_INT(conn_tunnels, 0);

  /* With a write of the tunnel in flight. */
  b = open_tunnel(4096, "abc", NULL);
  CHECK_EQ_INT(up.writes_pending, 1);
  h3g_bridge_client_abort(b);
  CHECK_EQ_INT(up.resets, 1);
  CHECK_EQ_INT(up.released, 0);
  h3g_bridge_free(b);

  /* After the upstream ended its side (the stream's FIN went). */
  b = open_tunnel(4096, NULL, NULL);
  up.waiter->ev->on_eof(up.waiter->ctx);
  h3g_bridge_client_abort(b);
  CHECK_EQ_INT(up.resets, 1);
  CHECK_EQ_INT(up.released, 0);
  h3g_bridge_free(b);

  /* Before the 101: the handshake is abandoned on a closed connection. */
  b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  h3g_bridge_client_abort(b);
  CHECK_EQ_INT(up.resets + up.released, 1);
  CHECK(up.resets == 1 || up.reusable == 0);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/* The upstream's connection failing under an open tunnel resets the
 * client's stream with H3_CONNECT_ERROR (RFC 9114 §4.4). */
static void test_tunnel_upstream_error(void) {
  h3g_bridge *b = open_tunnel(4096, "abc", "\x81\x01x");
  up_written(b);
  up.waiter->ev->on_error(up.waiter->ctx, H3G_ERR_IO);
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(fe.abort_code, H3G_ABORT_CONNECT);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(up.acquires, 1); /* never sent again */
  CHECK_EQ_INT(live_timer_ms(), 0);
  CHECK(strcmp(outcome_of(b), "upstream-reset") == 0);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);

  /* Our FIN could not be sent: the same. */
  b = open_tunnel(4096, NULL, NULL);
  up.shutdown_rv = H3G_ERR_IO;
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(fe.abort_code, H3G_ABORT_CONNECT);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);
}

/* A connection kept alive and closed under the handshake (nothing of an
 * answer came): sent again on a fresh one, with the same key; the 101 there
 * opens the tunnel, and the held bytes go once. */
static void test_tunnel_handshake_retried(void) {
  h3g_bridge *b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"held", 4), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 1);
  up_written(b);
  char key1[H3G_WS_KEY_LEN + 1], key2[H3G_WS_KEY_LEN + 1];
  CHECK(wrote_key(key1));
  size_t head_len = wrote_head_len();
  up.waiter->ev->on_eof(up.waiter->ctx);
  CHECK_EQ_INT(up.acquires, 2);
  CHECK_EQ_INT(fe.heads, 0);
  up.released = 0;
  up.wrote_len = 0;
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK_EQ_INT(up.wrote_len, head_len);
  CHECK(wrote_key(key2));
  CHECK(strcmp(key1, key2) == 0);
  char resp[512];
  size_t n = make_101(resp, sizeof(resp), key2, "");
  up_send(resp, n);
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(up.upgrades, 1);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "held");
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/*
 * tunnel_idle_timeout: no byte either way for that long ends the tunnel
 * (the stream is cancelled, the connection closed). Its timer is armed once
 * and, when bytes came meanwhile, re-armed for what is left.
 */
static void test_tunnel_idle_timeout(void) {
  const uint64_t s = 1000000000ull;
  h3g_bridge *b = open_tunnel(4096, NULL, NULL);
  CHECK_EQ_INT(live_timer_ms(), 3600000);
  /* Fired early (no time passed): re-armed, nothing ended. */
  fire_live_timer();
  CHECK_EQ_INT(fe.aborted, 0);
  uint64_t ms = live_timer_ms();
  CHECK(ms > 3599000 && ms <= 3600000);
  /* Client bytes at 3000 s; at 4000 s, 1000 s idle: 2600 s to go. */
  clock_skew_ns += 3000 * s;
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"x", 1), 0);
  up_written(b);
  clock_skew_ns += 1000 * s;
  fire_live_timer();
  CHECK_EQ_INT(fe.aborted, 0);
  ms = live_timer_ms();
  CHECK(ms > 2599000 && ms <= 2600000);
  /* Upstream bytes count as well. */
  clock_skew_ns += 2000 * s;
  up_send("y", 1);
  clock_skew_ns += 600 * s;
  fire_live_timer();
  CHECK_EQ_INT(fe.aborted, 0);
  ms = live_timer_ms();
  CHECK(ms > 2999000 && ms <= 3000000);
  /* Then silence for the whole timeout. */
  clock_skew_ns += 3000 * s + 1000000;
  fire_live_timer();
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(fe.abort_code, H3G_ABORT_CANCELLED);
  CHECK_EQ_INT(up.released + up.resets, 1);
  CHECK_EQ_INT(up.reusable, 0);
  CHECK_EQ_INT(live_timer_ms(), 0);
  CHECK(strcmp(outcome_of(b), "tunnel-idle-timeout") == 0);
  /* Nothing more reaches the front end or the upstream. */
  size_t wrote = up.wrote_len;
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"z", 1), 0);
  CHECK_EQ_INT(up.wrote_len, wrote);
  h3g_bridge_free(b);
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(conn_tunnels, 0);

  /* Half closed (the upstream ended its side, the client has not): still
   * a tunnel, still ended when idle. */
  b = open_tunnel(4096, NULL, NULL);
  up.waiter->ev->on_eof(up.waiter->ctx);
  char body[8];
  unsigned flags;
  CHECK_EQ_INT(take_now(b, body, sizeof(body), &flags), 0);
  CHECK_EQ_INT(flags, H3G_BODY_END);
  CHECK_EQ_INT(live_timer_ms(), 3600000);
  clock_skew_ns += 3600 * s + 1000000;
  fire_live_timer();
  CHECK_EQ_INT(fe.aborted, 1);
  CHECK_EQ_INT(up.released + up.resets, 1);
  CHECK(strcmp(outcome_of(b), "tunnel-idle-timeout") == 0);
  h3g_bridge_free(b);

  /* A handshake waiting for its answer is the response timeout's
   * (the pool's), not the tunnel's: no tunnel timer before the 101. */
  b = new_bridge(4096);
  add_connect(b, "/chat", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  CHECK_EQ_INT(live_timer_ms(), 0);
  CHECK_EQ_INT(up.read_timeout, 60000);
  h3g_bridge_free(b);
}

/*
 * Backpressure is the body's: client bytes are credited only once the
 * upstream took them (a full request ring takes nothing more), and
 * upstream reads pause while the response ring is full and resume as the
 * front end is done with bytes.
 */
static void test_tunnel_backpressure(void) {
  static char big[3 * 4096], got[3 * 4096];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (char)('a' + i % 23);
  h3g_bridge *b = open_tunnel(4096, NULL, NULL);
  size_t head_len = wrote_head_len();
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)big, 4096), 0);
  CHECK_EQ_INT(up.writes_pending, 1);
  CHECK_EQ_INT(fe.consumed, 0);
  /* The window is used up: a client that ignored it overflows. */
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)big, 1),
               H3G_ERR_TOOBIG);
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 4096);
  CHECK_EQ_INT(up.wrote_len, head_len + 4096);
  CHECK(memcmp(up.wrote + head_len, big, 4096) == 0);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)big, 10), 0);
  up_written(b);
  CHECK_EQ_INT(fe.consumed, 4106);

  /* Upstream to client: three rings' worth. */
  size_t sent = up_send(big, sizeof(big));
  CHECK(sent < sizeof(big));
  CHECK(!up.reading);
  size_t have = 0;
  int rounds = 0;
  while (have < sizeof(big) && rounds++ < 100) {
    unsigned flags;
    size_t n = take_now(b, got + have, sizeof(got) - have, &flags);
    CHECK(n <= 4096);
    have += n;
    h3g_bridge_body_done(b, n);
    if (sent < sizeof(big)) {
      CHECK(up.reading); /* resumed */
      sent += up_send(big + sent, sizeof(big) - sent);
    }
  }
  CHECK_EQ_INT(have, sizeof(big));
  CHECK(memcmp(got, big, sizeof(big)) == 0);
  h3g_bridge_free(b);
}

/*
 * The access log line of a tunnel: status 200 (what the client saw), the
 * bytes each way, and tunnel=websocket; a refused handshake has no tunnel
 * field; an idle tunnel says so.
 */
static void test_tunnel_access_log(void) {
  char path[] = "/tmp/h3g-access-XXXXXX";
  access_log_to_temp(path);

  h3g_bridge *b = open_tunnel(4096, "abc", "\x81\x01x");
  up_written(b);
  char body[64];
  unsigned flags;
  size_t n = take_now(b, body, sizeof(body), &flags);
  h3g_bridge_body_done(b, n);
  up_send("0123456789", 10);
  n = take_now(b, body, sizeof(body), &flags);
  h3g_bridge_body_done(b, n);
  CHECK_EQ_INT(h3g_bridge_end_request(b), 0);
  up.waiter->ev->on_eof(up.waiter->ctx);
  n = take_now(b, body, sizeof(body), &flags);
  h3g_bridge_free(b);

  b = new_bridge(4096); /* a wrong Accept */
  add_connect(b, "/refused", "websocket");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *r = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: " CLIENT_ACCEPT "\r\n\r\n";
  up_send(r, strlen(r));
  h3g_bridge_free(b);

  b = open_tunnel(4096, NULL, NULL);
  clock_skew_ns += 3601ull * 1000000000ull;
  fire_live_timer();
  h3g_bridge_free(b);

  char text[8192];
  access_log_take(path, text, sizeof(text));
  const char *want[][3] = {
      {"path=\"/chat\" status=200 in=3 out=13 ",
       "outcome=ok tunnel=websocket\n", NULL},
      {"path=\"/refused\" status=502 ", "outcome=upstream-bad-upgrade\n",
       "tunnel="},
      {"path=\"/chat\" status=200 in=0 out=0 ",
       "outcome=tunnel-idle-timeout tunnel=websocket\n", NULL},
  };
  char *line = text;
  for (size_t i = 0; i < H3G_ARRAY_LEN(want); i++) {
    char *end = strchr(line, '\n');
    CHECK(end != NULL);
    if (end == NULL)
      break;
    char saved = end[1];
    end[1] = '\0';
    int ok = strstr(line, want[i][0]) != NULL &&
             strstr(line, want[i][1]) != NULL &&
             (want[i][2] == NULL || strstr(line, want[i][2]) == NULL);
    CHECK(ok);
    if (!ok)
      fprintf(stderr, "line %zu: %s  want %s ... %s\n", i, line, want[i][0],
              want[i][1]);
    end[1] = saved;
    line = end + 1;
  }
}

/*
 * HTTP/1.1 clients (RFC 6455 §4.1 end to end): their own key goes
 * upstream, and they get the 101 itself, Accept included; the gateway
 * still checks the Accept. A handshake without a usable key or version is
 * refused (400); on a route without WebSockets the GET goes on as a plain
 * request, ended with its head.
 */
static void test_tunnel_h1_client(void) {
  h3g_bridge *b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
  add_h1_upgrade(b, CLIENT_KEY, "13");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(conn_tunnels, 1);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  size_t head_len = wrote_head_len();
  CHECK_EQ_INT(up.wrote_len, head_len);
  CHECK(strncmp(up.wrote, "GET /chat HTTP/1.1\r\n", 20) == 0);
  CHECK_EQ_INT(wrote_count("\r\nsec-websocket-key: " CLIENT_KEY "\r\n"), 1);
  CHECK_EQ_INT(wrote_count("sec-websocket-key"), 1);
  CHECK_EQ_INT(wrote_count("\r\nsec-websocket-version: 13\r\n"), 1);
  CHECK_EQ_INT(wrote_count("\r\nconnection: Upgrade\r\n"), 1);
  CHECK_EQ_INT(wrote_count("onnection:"), 1);
  CHECK_EQ_INT(wrote_count("\r\nupgrade: websocket\r\n"), 1);
  CHECK_EQ_INT(wrote_count("pgrade:"), 1);
  const char *r = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: " CLIENT_ACCEPT "\r\n"
                  "Sec-WebSocket-Protocol: chat\r\n\r\n\x81\x01!";
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 101);
  CHECK_EQ_INT(fe.has_body, 1);
  CHECK_EQ_INT(up.upgrades, 1);
  CHECK(strstr(fe.fields, "sec-websocket-accept: " CLIENT_ACCEPT "\n") != NULL);
  CHECK(strstr(fe.fields, "sec-websocket-protocol: chat\n") != NULL);
  char body[16];
  unsigned flags;
  size_t n = take_now(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "\x81\x01!");
  h3g_bridge_body_done(b, n);
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"up", 2), 0);
  CHECK_MEM(up.wrote + head_len, up.wrote_len - head_len, "up");
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);

  /* The Accept is checked for its key too. */
  b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
  add_h1_upgrade(b, "x3JJHMbDL1EzLkh9GBhXDw==", "13");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  up_send(r, strlen(r));
  CHECK_EQ_INT(fe.status, 502);
  CHECK_EQ_INT(up.upgrades, 0);
  CHECK_EQ_INT(up.reusable, 0);
  h3g_bridge_free(b);

  /* Any other answer is the client's to read, a 2xx included. */
  b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
  add_h1_upgrade(b, CLIENT_KEY, "13");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  up_written(b);
  const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
  up_send(ok, strlen(ok));
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(up.upgrades, 0);
  n = drain_body(b, body, sizeof(body), &flags);
  CHECK_MEM(body, n, "hi");
  h3g_bridge_free(b);

  /* No key, a key that is not one, another version: 400, nothing sent. */
  static const char *const keys[][2] = {
      {NULL, "13"}, {"c2hvcnQ=", "13"}, {CLIENT_KEY, "8"}, {CLIENT_KEY, NULL}};
  for (size_t i = 0; i < H3G_ARRAY_LEN(keys); i++) {
    b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
    add_h1_upgrade(b, keys[i][0], keys[i][1]);
    CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
    CHECK_EQ_INT(fe.status, 400);
    CHECK_EQ_INT(up.acquires, 0);
    CHECK_EQ_INT(conn_tunnels, 0);
    h3g_bridge_free(b);
  }

  /* A route without WebSockets: a plain GET, no upgrade asked, no body
   * framing, the request over with its head. */
  b = new_bridge_proto(4096, &fake_fe_ops, "http/1.1");
  rconf.s.websocket = 0;
  add_h1_upgrade(b, CLIENT_KEY, "13");
  CHECK_EQ_INT(h3g_bridge_end_headers(b, 0), 0);
  CHECK_EQ_INT(up.acquires, 1);
  CHECK_EQ_INT(conn_tunnels, 0);
  up.waiter->ev->on_ready(up.waiter->ctx, FAKE_CONN, 0);
  CHECK_EQ_INT(up.wrote_len, wrote_head_len());
  up.wrote[up.wrote_len] = '\0';
  CHECK(strncmp(up.wrote, "GET /chat HTTP/1.1\r\n", 20) == 0);
  CHECK(strstr(up.wrote, "pgrade") == NULL);
  CHECK(strstr(up.wrote, "onnection") == NULL);
  CHECK(strstr(up.wrote, "ransfer-Encoding") == NULL);
  CHECK(strstr(up.wrote, "ontent-Length") == NULL);
  up_written(b);
  CHECK_EQ_INT(up.read_timeout, 60000); /* the request is all sent */
  CHECK_EQ_INT(h3g_bridge_recv_body(b, (const uint8_t *)"x", 1), H3G_ERR_PROTO);
  const char *plain = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  up_send(plain, strlen(plain));
  CHECK_EQ_INT(fe.status, 200);
  CHECK_EQ_INT(up.upgrades, 0);
  CHECK_EQ_INT(up.released, 1);
  CHECK_EQ_INT(up.reusable, 1);
  h3g_bridge_free(b);
  CHECK_EQ_INT(conn_tunnels, 0);
}

/* Run last: every case freed its bridges and their body chunks. */
static void test_everything_freed(void) {
  CHECK_EQ_INT(h3g_stats.bridges_active, 0);
  CHECK_EQ_INT(h3g_stats.buffer_chunks_active, 0);
  CHECK_EQ_INT(h3g_stats.tunnels_open, 0);
  CHECK_EQ_INT(conn_tunnels, 0);
  CHECK_EQ_INT(other_conn_tunnels, 0);
}

int main(void) {
  RUN(test_get_content_length);
  RUN(test_post_chunked_and_credit);
  RUN(test_trailers_over_the_cap);
  RUN(test_post_content_length_mismatch);
  RUN(test_malformed_request_never_reaches_upstream);
  RUN(test_body_past_length_while_waiting);
  RUN(test_refused_gives_502);
  RUN(test_timeout_gives_504_and_queue_full_503);
  RUN(test_malformed_response_before_and_after_head);
  RUN(test_truncated_body_resets);
  RUN(test_close_delimited);
  RUN(test_backpressure_pauses_reads);
  RUN(test_early_response_stops_request);
  RUN(test_retry_once_on_stale_connection);
  RUN(test_client_abort_poisons_connection);
  RUN(test_head_and_interim);
  RUN(test_431_to_head_has_no_body);
  RUN(test_answer_while_head_is_written);
  RUN(test_forwarding_fields);
  RUN(test_body_limit);
  RUN(test_access_log_upstream);
  RUN(test_header_timeout);
  RUN(test_expect_continue);
  RUN(test_expect_continue_write_fails);
  RUN(test_early_response_after_part_of_body);
  RUN(test_early_response_head_refused_stops_once);
  RUN(test_early_response_defences_kept);
  RUN(test_answer_after_whole_request_reuses);
  RUN(test_bytes_after_response);
  RUN(test_early_data);
  RUN(test_body_timeout);
  RUN(test_priority);
  RUN(test_request_window_autotuning);
  RUN(test_tunnel_h3_open_and_close);
  RUN(test_tunnel_upstream_ends_first);
  RUN(test_tunnel_client_ends_before_101);
  RUN(test_tunnel_101_split);
  RUN(test_tunnel_200_fields);
  RUN(test_tunnel_101_before_head_written);
  RUN(test_tunnel_bad_upgrade);
  RUN(test_tunnel_refused_by_upstream);
  RUN(test_tunnel_refused_here);
  RUN(test_tunnel_limits);
  RUN(test_tunnel_client_abort);
  RUN(test_tunnel_upstream_error);
  RUN(test_tunnel_handshake_retried);
  RUN(test_tunnel_idle_timeout);
  RUN(test_tunnel_backpressure);
  RUN(test_tunnel_access_log);
  RUN(test_tunnel_h1_client);
  RUN(test_tunnel_h1_route_off_declared_body);
  RUN(test_everything_freed); /* last */
  return unit_report();
}
