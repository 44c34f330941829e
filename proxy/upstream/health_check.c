/*
 * Active health checks of one upstream server: see health_check.h.
 */
#include "health_check.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "h1_codec.h"
#include "log.h"
#include "metrics.h"

#define MAX_METHOD 32
#define MAX_PATH 2048
#define MAX_HOST 256

/*
 * The lifecycle, in order. WAIT, ACQUIRE and EXCHANGE turn round once a
 * check; STOPPED and CLOSED are final (CLOSED may follow any state).
 */
typedef enum hc_state {
  HC_WAIT,     /* between checks: the timer counts the interval */
  HC_ACQUIRE,  /* a connection is asked for: the timer is the deadline */
  HC_EXCHANGE, /* a connection is held: request out, response in */
  HC_STOPPED,  /* the pool is closing: no check starts any more */
  HC_CLOSED,   /* close() was called; freed from the timer's close cb */
} hc_state;

struct h3g_health_check {
  uv_timer_t timer; /* the interval in WAIT, the deadline in a check */
  hc_state state;
  const h3g_upstream_ops *ops;
  void *pool;
  void (*on_change)(void *arg, int healthy);
  void *arg;
  char *name;
  uint8_t *req; /* the request head, written as is every check */
  size_t reqlen;
  int head_request;
  uint64_t interval_ms, timeout_ms;
  uint32_t status_lo, status_hi, rise, fall;
  h3g_h1_parser *parser;
  h3g_health_check_stats st;

  /* The check in flight. */
  h3g_upstream_waiter waiter;
  h3g_upconn *conn;
  int reused;    /* conn had carried requests before */
  int retried;   /* the one retry on a fresh connection was used */
  int written;   /* the request head is fully written */
  int status;    /* final status received, 0 before */
  size_t body;   /* body bytes received */
  int body_over; /* the body went beyond H3G_HEALTH_CHECK_MAX_BODY */
  char reason[160];
  uint8_t rbuf[4096];
};

static void on_timer(uv_timer_t *t);
static void on_timer_close(uv_handle_t *h);
static void on_ready(void *ctx, h3g_upconn *conn, int reused);
static void on_fail(void *ctx, int err);
static void on_alloc(void *ctx, uint8_t **buf, size_t *len);
static void on_read(void *ctx, size_t nread);
static void on_eof(void *ctx);
static void on_error(void *ctx, int err);
static void on_written(void *ctx, int status);
static int on_head(void *ud, int status, h3g_headers *fields, int interim);
static int on_body(void *ud, const uint8_t *data, size_t len);

static const h3g_upstream_events hc_events = {
    .on_ready = on_ready,
    .on_fail = on_fail,
    .on_alloc = on_alloc,
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_written = on_written,
};

static const h3g_h1_callbacks hc_parser_callbacks = {
    .on_head = on_head,
    .on_body = on_body,
};

/* ---- the lifecycle ------------------------------------------------------- */

/* The one place the state changes; arms or stops the timer to match. */
static void hc_transit(h3g_health_check *hc, hc_state to) {
  hc_state from = hc->state;
  assert(from != HC_CLOSED);
  switch (to) {
  case HC_WAIT:
    assert(from == HC_ACQUIRE || from == HC_EXCHANGE);
    uv_timer_start(&hc->timer, on_timer, hc->interval_ms, 0);
    break;
  case HC_ACQUIRE:
    /* From EXCHANGE for the retry: the deadline goes on running. */
    assert(from == HC_WAIT || from == HC_EXCHANGE);
    if (from == HC_WAIT)
      uv_timer_start(&hc->timer, on_timer, hc->timeout_ms, 0);
    break;
  case HC_EXCHANGE: assert(from == HC_ACQUIRE); break;
  case HC_STOPPED:
    assert(from != HC_STOPPED);
    uv_timer_stop(&hc->timer);
    break;
  case HC_CLOSED: uv_close((uv_handle_t *)&hc->timer, on_timer_close); break;
  }
  hc->state = to;
}

/* Gives back what the check in flight holds from the pool. */
static void hc_let_go(h3g_health_check *hc, int reusable) {
  if (hc->state == HC_ACQUIRE)
    hc->ops->cancel(hc->pool, &hc->waiter);
  if (hc->conn != NULL) {
    h3g_upconn *c = hc->conn;
    hc->conn = NULL;
    hc->ops->release(c, reusable);
  }
}

static void hc_set_healthy(h3g_health_check *hc, int healthy) {
  hc->st.healthy = healthy;
  hc->st.flips++;
  if (healthy)
    H3G_DEC(upstreams_unhealthy);
  else
    H3G_INC(upstreams_unhealthy);
}

/*
 * Ends the check in flight with its result: releases or cancels what it
 * holds, schedules the next one, counts, and turns the verdict when a run
 * is long enough. on_change is called last, so it may close hc.
 */
static void check_end(h3g_health_check *hc, int ok, int reusable,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void check_end(h3g_health_check *hc, int ok, int reusable,
                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(hc->reason, sizeof(hc->reason), fmt, ap);
  va_end(ap);
  hc_let_go(hc, reusable);
  hc_transit(hc, HC_WAIT);

  hc->st.checks++;
  hc->st.last_status = (uint32_t)hc->status;
  H3G_INC(health_checks);
  int turned = 0;
  if (ok) {
    hc->st.known = 1;
    hc->st.fail_run = 0;
    hc->st.ok_run++;
    if (!hc->st.healthy && hc->st.ok_run >= hc->rise) {
      hc_set_healthy(hc, 1);
      turned = 1;
      h3g_info("upstream %s: health check passed: %s (%u in a row): back in",
               hc->name, hc->reason, hc->st.ok_run);
    }
  } else {
    hc->st.failures++;
    H3G_INC(health_check_failures);
    hc->st.ok_run = 0;
    hc->st.fail_run++;
    if (hc->st.healthy && hc->st.fail_run >= hc->fall) {
      hc->st.known = 1;
      hc_set_healthy(hc, 0);
      turned = 1;
      h3g_warn("upstream %s: health check failed: %s (%u in a row): out",
               hc->name, hc->reason, hc->st.fail_run);
    } else {
      h3g_debug("upstream %s: health check failed: %s (%u in a row)", hc->name,
                hc->reason, hc->st.fail_run);
    }
  }
  if (turned && hc->on_change != NULL)
    hc->on_change(hc->arg, hc->st.healthy);
}

/* The pool is shutting down: not the server's fault, no verdict. */
static void check_stop(h3g_health_check *hc) {
  hc_let_go(hc, 0);
  hc_transit(hc, HC_STOPPED);
  h3g_debug("upstream %s: health checks stop: the pool is closing", hc->name);
}

static void check_acquire(h3g_health_check *hc) {
  hc->waiter = (h3g_upstream_waiter){
      .ev = &hc_events, .ctx = hc, .group = NULL, .urgency = 0};
  hc->conn = NULL;
  hc->written = 0;
  hc->status = 0;
  hc->body = 0;
  hc->body_over = 0;
  h3g_h1_parser_reset(hc->parser, hc->head_request);
  int rv = hc->ops->acquire(hc->pool, &hc->waiter);
  if (rv == H3G_ERR_CLOSED)
    check_stop(hc);
  else if (rv != 0)
    check_end(hc, 0, 0, "no connection: %s", h3g_strerror(rv));
}

static void check_start(h3g_health_check *hc) {
  hc->retried = 0;
  hc_transit(hc, HC_ACQUIRE);
  check_acquire(hc);
}

/*
 * A connection failed before any response byte. A kept-alive one may have
 * been closed by the server at that very moment, which says nothing about
 * its health: such a check asks for a connection once more, within the
 * same deadline. Returns 1 if it did.
 */
static int check_retry(h3g_health_check *hc) {
  if (!hc->reused || hc->retried || h3g_h1_parser_started(hc->parser))
    return 0;
  hc->retried = 1;
  hc_let_go(hc, 0);
  hc_transit(hc, HC_ACQUIRE);
  check_acquire(hc);
  return 1;
}

/* The response is judged by its status (complete, or its body over the
 * cap). */
static void check_judge(h3g_health_check *hc, int reusable) {
  uint32_t s = (uint32_t)hc->status;
  int ok = s >= hc->status_lo && s <= hc->status_hi;
  check_end(hc, ok, reusable, "status %d", hc->status);
}

/* ---- timer --------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  h3g_health_check *hc = t->data;
  switch (hc->state) {
  case HC_WAIT: check_start(hc); break;
  case HC_ACQUIRE:
    check_end(hc, 0, 0, "no connection within %llu ms",
              (unsigned long long)hc->timeout_ms);
    break;
  case HC_EXCHANGE:
    check_end(hc, 0, 0, "no complete response within %llu ms",
              (unsigned long long)hc->timeout_ms);
    break;
  case HC_STOPPED:
  case HC_CLOSED: break;
  }
}

static void on_timer_close(uv_handle_t *h) {
  h3g_health_check *hc = h->data;
  h3g_h1_parser_free(hc->parser);
  free(hc->req);
  free(hc->name);
  free(hc);
}

/* ---- the pool's events --------------------------------------------------- */

static void on_ready(void *ctx, h3g_upconn *conn, int reused) {
  h3g_health_check *hc = ctx;
  assert(hc->state == HC_ACQUIRE);
  hc->conn = conn;
  hc->reused = reused;
  hc_transit(hc, HC_EXCHANGE);
  /* A reused connection may keep its previous user's read timeout; the
   * check's own deadline is the only clock. */
  hc->ops->set_read_timeout(conn, 0);
  h3g_iovec iov = {.base = hc->req, .len = hc->reqlen};
  int rv = hc->ops->write(conn, &iov, 1);
  if (rv != 0) {
    if (!check_retry(hc))
      check_end(hc, 0, 0, "write: %s", h3g_strerror(rv));
    return;
  }
  hc->ops->read_start(conn);
}

static void on_fail(void *ctx, int err) {
  h3g_health_check *hc = ctx;
  assert(hc->state == HC_ACQUIRE);
  if (err == H3G_ERR_CLOSED)
    check_stop(hc);
  else
    check_end(hc, 0, 0, "connect: %s", h3g_strerror(err));
}

static void on_alloc(void *ctx, uint8_t **buf, size_t *len) {
  h3g_health_check *hc = ctx;
  *buf = hc->rbuf;
  *len = sizeof(hc->rbuf);
}

static void on_read(void *ctx, size_t nread) {
  h3g_health_check *hc = ctx;
  size_t consumed = 0;
  int rv = h3g_h1_parser_feed(hc->parser, hc->rbuf, nread, &consumed);
  if (rv == 0 && h3g_h1_parser_complete(hc->parser)) {
    /* Bytes after the response would be read as the next one's start. */
    int reusable = hc->written && consumed == nread &&
                   h3g_h1_parser_keep_alive(hc->parser);
    check_judge(hc, reusable);
  } else if (rv == H3G_ERR_TOOBIG && hc->body_over) {
    check_judge(hc, 0);
  } else if (rv == H3G_ERR_TOOBIG) {
    check_end(hc, 0, 0, "response head over %d bytes",
              H3G_HEALTH_CHECK_MAX_HEAD);
  } else if (rv != 0) {
    check_end(hc, 0, 0, "malformed response: %s",
              h3g_h1_parser_reason(hc->parser));
  }
}

static void on_eof(void *ctx) {
  h3g_health_check *hc = ctx;
  if (check_retry(hc))
    return;
  int started = h3g_h1_parser_started(hc->parser);
  int rv = h3g_h1_parser_finish(hc->parser);
  if (rv == 0 && h3g_h1_parser_complete(hc->parser))
    check_judge(hc, 0);
  else if (!started)
    check_end(hc, 0, 0, "connection closed before any response byte");
  else
    check_end(hc, 0, 0, "connection closed before the response was complete");
}

static void on_error(void *ctx, int err) {
  h3g_health_check *hc = ctx;
  if (!check_retry(hc))
    check_end(hc, 0, 0, "read: %s", h3g_strerror(err));
}

static void on_written(void *ctx, int status) {
  h3g_health_check *hc = ctx;
  if (status == 0) {
    hc->written = 1;
    return;
  }
  if (!check_retry(hc))
    check_end(hc, 0, 0, "write: %s", h3g_strerror(status));
}

/* ---- the parser's callbacks ---------------------------------------------- */

static int on_head(void *ud, int status, h3g_headers *fields, int interim) {
  h3g_health_check *hc = ud;
  H3G_UNUSED(fields);
  if (!interim)
    hc->status = status;
  return 0;
}

static int on_body(void *ud, const uint8_t *data, size_t len) {
  h3g_health_check *hc = ud;
  H3G_UNUSED(data);
  hc->body += len;
  if (hc->body > H3G_HEALTH_CHECK_MAX_BODY) {
    hc->body_over = 1;
    return H3G_ERR_TOOBIG;
  }
  return 0;
}

/* ---- public -------------------------------------------------------------- */

/* RFC 9110 §5.6.2 tchar. */
static int is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

/* Visible ASCII only: no space, no control byte, no DEL, nothing above. */
static int is_visible(const char *s) {
  for (; *s != '\0'; s++)
    if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
      return 0;
  return 1;
}

static int config_check(const h3g_health_check_config *cfg, const char *host) {
  size_t mlen = cfg->method != NULL ? strlen(cfg->method) : 0;
  if (mlen == 0 || mlen > MAX_METHOD)
    return H3G_ERR_INVAL;
  for (size_t i = 0; i < mlen; i++)
    if (!is_tchar((unsigned char)cfg->method[i]))
      return H3G_ERR_INVAL;
  if (cfg->path == NULL || cfg->path[0] != '/' ||
      strlen(cfg->path) > MAX_PATH || !is_visible(cfg->path))
    return H3G_ERR_INVAL;
  if (host == NULL || host[0] == '\0' || strlen(host) > MAX_HOST ||
      !is_visible(host))
    return H3G_ERR_INVAL;
  if (cfg->interval_ms == 0 || cfg->timeout_ms == 0 || cfg->rise == 0 ||
      cfg->fall == 0)
    return H3G_ERR_INVAL;
  if (cfg->status_lo < 100 || cfg->status_lo > cfg->status_hi ||
      cfg->status_hi > 599)
    return H3G_ERR_INVAL;
  return 0;
}

static char *str_copy(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

int h3g_health_check_new(h3g_health_check **out, void *loop,
                         const h3g_upstream_ops *ops, void *pool,
                         const h3g_health_check_config *cfg,
                         void (*on_change)(void *arg, int healthy), void *arg) {
  if (out == NULL || loop == NULL || ops == NULL || pool == NULL || cfg == NULL)
    return H3G_ERR_INVAL;
  *out = NULL;
  const char *host = cfg->host != NULL ? cfg->host : ops->name(pool);
  int rv = config_check(cfg, host);
  if (rv != 0)
    return rv;

  h3g_health_check *hc = malloc(sizeof(*hc));
  if (hc == NULL)
    return H3G_ERR_NOMEM;
  *hc = (h3g_health_check){
      .state = HC_WAIT,
      .ops = ops,
      .pool = pool,
      .on_change = on_change,
      .arg = arg,
      .head_request = strcmp(cfg->method, "HEAD") == 0,
      .interval_ms = cfg->interval_ms,
      .timeout_ms = cfg->timeout_ms,
      .status_lo = cfg->status_lo,
      .status_hi = cfg->status_hi,
      .rise = cfg->rise,
      .fall = cfg->fall,
      .st = {.healthy = 1},
  };
  static const char fmt[] = "%s %s HTTP/1.1\r\nHost: %s\r\n"
                            "User-Agent: h3gate-health-check\r\n"
                            "Accept: */*\r\n\r\n";
  int len = snprintf(NULL, 0, fmt, cfg->method, cfg->path, host);
  hc->name = str_copy(cfg->name != NULL ? cfg->name : ops->name(pool));
  hc->req = malloc((size_t)len + 1);
  if (hc->name == NULL || hc->req == NULL ||
      h3g_h1_parser_new(&hc->parser, &hc_parser_callbacks, hc,
                        H3G_HEALTH_CHECK_MAX_HEAD) != 0) {
    free(hc->name);
    free(hc->req);
    free(hc);
    return H3G_ERR_NOMEM;
  }
  snprintf((char *)hc->req, (size_t)len + 1, fmt, cfg->method, cfg->path, host);
  hc->reqlen = (size_t)len;

  /* Cannot fail on a live loop. */
  uv_timer_init(loop, &hc->timer);
  hc->timer.data = hc;
  uv_timer_start(&hc->timer, on_timer, 0, 0);
  *out = hc;
  return 0;
}

int h3g_health_check_healthy(const h3g_health_check *hc) {
  return hc->st.healthy;
}

void h3g_health_check_inherit(h3g_health_check *hc,
                              const h3g_health_check *from) {
  if (hc->st.healthy != from->st.healthy) {
    if (from->st.healthy)
      H3G_DEC(upstreams_unhealthy);
    else
      H3G_INC(upstreams_unhealthy);
  }
  hc->st = from->st;
  hc->st.running = 0;
}

void h3g_health_check_get_stats(const h3g_health_check *hc,
                                h3g_health_check_stats *out) {
  *out = hc->st;
  out->running = hc->state == HC_ACQUIRE || hc->state == HC_EXCHANGE;
}

void h3g_health_check_close(h3g_health_check *hc) {
  if (hc == NULL || hc->state == HC_CLOSED)
    return;
  hc_let_go(hc, 0);
  if (!hc->st.healthy)
    H3G_DEC(upstreams_unhealthy);
  hc_transit(hc, HC_CLOSED);
}
