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

typedef struct fake_fe {
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
} fake_fe;

static fake_fe fe;

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
};

static const h3g_frontend_ops fake_fe_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .set_priority = fe_set_priority,
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
static h3g_bridge_env env;

static h3g_bridge *new_bridge_with(size_t bufsize,
                                   const h3g_frontend_ops *ops) {
  memset(&up, 0, sizeof(up));
  memset(&fe, 0, sizeof(fe));
  memset(&cfg, 0, sizeof(cfg));
  cfg.stream_buffer_size = (uint32_t)bufsize;
  cfg.max_header_size = 16384;
  cfg.request_header_timeout_ms = 10000;
  rconf = (h3g_route_conf){.name = "test"};
  rconf.s.response_timeout_ms = 60000;
  rconf.s.expect_continue_timeout_ms = 1000;
  rconf.s.alt_svc = 1;
  route = (h3g_route){.conf = &rconf, .ops = &fake_ops, .pool = NULL};
  memset(timers, 0, sizeof(timers));
  env = (h3g_bridge_env){.cfg = &cfg, .route = &route, .timers = &fake_timers};
  h3g_bridge *b = NULL;
  CHECK_EQ_INT(h3g_bridge_new(&b, &env, ops, &fe, &env, "127.0.0.1:1", "h3"),
               0);
  return b;
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
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ_INT(h3g_access_log_open(path), 0);

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
  h3g_access_log_close();

  char text[8192];
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
  text[n] = '\0';
  if (f)
    fclose(f);
  unlink(path);
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

/* Run last: every case freed its bridges and their body chunks. */
static void test_everything_freed(void) {
  CHECK_EQ_INT(h3g_stats.bridges_active, 0);
  CHECK_EQ_INT(h3g_stats.buffer_chunks_active, 0);
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
  RUN(test_everything_freed); /* last */
  return unit_report();
}
