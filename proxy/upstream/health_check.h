/*
 * Active health checks of one upstream server (docs/routes.md, the
 * health_* keys of [upstream NAME]).
 *
 * A check asks the server for one HTTP/1.1 request over a connection of the
 * server's pool, seen only through h3g_upstream_ops: so it runs over
 * whatever the pool speaks (TCP, a unix socket, TLS), and tests may give
 * either the real pool or a fake (it calls acquire, cancel, write,
 * read_start, set_read_timeout, release, and name at creation only). One
 * check runs at a time:
 *
 *   1. acquire a connection (the waiter is in a wait-queue group of its
 *      own, urgency 0); the check's deadline, timeout_ms, starts here;
 *   2. write the request head: "METHOD PATH HTTP/1.1", "Host: HOST",
 *      "User-Agent: h3gate-health-check", an Accept field taking any media
 *      type, each ended by CRLF, then an empty line (no body);
 *   3. parse the response with h1_codec: interim (1xx) responses are
 *      skipped, the final status is kept, the body is read and thrown away
 *      (a response to HEAD has none);
 *   4. release the connection, reusable only when the exchange ended
 *      cleanly (the whole response read, keep-alive allowed, nothing after
 *      it, the request fully written), else not reusable (closed).
 *
 * A check succeeds when the final status lies within [status_lo,
 * status_hi] and the response completed before the deadline, or when the
 * body grew beyond H3G_HEALTH_CHECK_MAX_BODY bytes after such a status
 * (the rest is not waited for; the connection is closed). It fails on: no
 * connection (refused, connect timeout, pool wait queue full), the
 * deadline passing (the pending wait is cancelled or the connection
 * released, never leaked), a write error, a malformed or oversized
 * response head, a status out of range, EOF or a reset before the response
 * was complete. A connection that had carried requests before and was
 * closed or reset before any response byte (a kept-alive connection the
 * server dropped just then) is not held against the server: the check
 * acquires once more, within the same deadline.
 *
 * Verdict: the server starts healthy, so a gateway that starts serves at
 * once instead of answering 503 for rise * interval; a server that is down
 * at start goes out after `fall` checks (and passive checks see it before
 * that). `fall` failures in a row turn a healthy server unhealthy,
 * `rise` successes in a row turn an unhealthy one healthy; each turn calls
 * on_change and is logged (a warning when the server goes out, info when
 * it comes back), with the reason of the last check.
 *
 * Timing: the first check starts on the loop's next iteration after
 * h3g_health_check_new(); each further one interval_ms after the previous
 * one ended, so slow checks never pile up.
 *
 * Everything runs on the loop's thread. Metrics: health_checks,
 * health_check_failures (counters) and upstreams_unhealthy (gauge: servers
 * out by their health check now).
 */
#ifndef H3G_HEALTH_CHECK_H
#define H3G_HEALTH_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "upstream_pool.h"

/* Body bytes read at most per check; beyond, the status decides alone. */
#define H3G_HEALTH_CHECK_MAX_BODY (64 * 1024)
/* Cap of a response head (and trailers), counted as h3g_headers does. */
#define H3G_HEALTH_CHECK_MAX_HEAD (16 * 1024)

typedef struct h3g_health_check h3g_health_check;

typedef struct h3g_health_check_config {
  /* For logs ("upstream NAME: ..."); NULL: the pool's name(). Copied. */
  const char *name;
  /* A token ("GET", "HEAD", ...), at most 32 bytes. Copied. */
  const char *method;
  /* Origin-form target: starts with '/', no space or control byte, at most
   * 2048 bytes. Copied. */
  const char *path;
  /* The Host field's value: no space or control byte, at most 256 bytes;
   * NULL: the pool's name() ("host:port"). Copied. */
  const char *host;
  uint64_t interval_ms;          /* >= 1: from the end of a check to the next */
  uint64_t timeout_ms;           /* >= 1: from the start of the acquire */
  uint32_t status_lo, status_hi; /* accepted, inclusive; 100 <= lo <= hi
                                  * <= 599 */
  uint32_t rise; /* >= 1: successes in a row that bring a server back */
  uint32_t fall; /* >= 1: failures in a row that take it out */
} h3g_health_check_config;

/* What a health check counts (for metrics, the admin page and tests). */
typedef struct h3g_health_check_stats {
  uint64_t checks;      /* checks ended (succeeded or failed) */
  uint64_t failures;    /* checks that failed */
  uint64_t flips;       /* verdict changes (on_change calls) */
  uint32_t ok_run;      /* successes in a row now (0 after a failure) */
  uint32_t fail_run;    /* failures in a row now (0 after a success) */
  uint32_t last_status; /* final status of the last response, 0 if none */
  int healthy;
  int known;   /* a verdict was seen: a check passed, or the server went
                * out (before that, "healthy" is only the starting guess) */
  int running; /* 1 while a check is in flight */
} h3g_health_check_stats;

/*
 * Creates a health check of the server behind pool (used only through
 * ops, never closed here) on loop (a uv_loop_t *), and schedules its first
 * check. on_change(arg, healthy) is called, from a libuv callback, each
 * time the verdict turns, never from inside this function nor after
 * h3g_health_check_close(); it may call any function here, including
 * close() on hc. on_change may be NULL.
 *
 * Returns 0 and sets *out, H3G_ERR_INVAL for a NULL argument or a field
 * out of the bounds above, or H3G_ERR_NOMEM.
 */
int h3g_health_check_new(h3g_health_check **out, void *loop,
                         const h3g_upstream_ops *ops, void *pool,
                         const h3g_health_check_config *cfg,
                         void (*on_change)(void *arg, int healthy), void *arg);

/* 1 if the server is healthy now, 0 if a health check took it out. */
int h3g_health_check_healthy(const h3g_health_check *hc);

/*
 * hc, new, goes on from where from (the same server's check before a
 * reload) stands: verdict, runs and counts; its first check still starts
 * on the next iteration. The upstreams_unhealthy gauge stays right as
 * from closes. Calls no callback.
 */
void h3g_health_check_inherit(h3g_health_check *hc,
                              const h3g_health_check *from);

void h3g_health_check_get_stats(const h3g_health_check *hc,
                                h3g_health_check_stats *out);

/*
 * Stops checking, at any moment (also from on_change): a pending acquire
 * is cancelled and a held connection released (not reusable) before this
 * returns, so the pool may be closed right after; no callback follows.
 * The memory is freed later, from a libuv close callback: let the loop run
 * before closing it. Call it once; NULL is a no-op.
 *
 * The pool should outlive hc. If the pool starts closing first, the check
 * in flight ends without a verdict (on_fail(H3G_ERR_CLOSED) is not the
 * server's fault) and no further check starts; hc must still be closed.
 */
void h3g_health_check_close(h3g_health_check *hc);

#endif /* H3G_HEALTH_CHECK_H */
