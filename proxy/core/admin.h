/*
 * The admin listener: plain HTTP/1.1 on a (loopback) TCP port, for
 * operators and tests. GET /metrics returns every metric in Prometheus text
 * format. Each connection serves one request and is closed.
 *
 * Health, for load balancers and orchestrators (text/plain, one line):
 *
 *   GET /health       the gateway as a whole: 200 "ok"; 503 "draining"
 *                     while shutting down; if the UDP socket failed,
 *                     200 "degraded: ..." while the TCP listener still
 *                     serves (a balancer must keep sending it TCP: taking
 *                     it out would turn an HTTP/3 outage into a total one,
 *                     on every instance at once if they all share the
 *                     fault), 503 "down: ..." when nothing serves.
 *   GET /health/quic  HTTP/3 alone, for a balancer's UDP pool (or a
 *                     liveness probe that should restart a gateway whose
 *                     socket died): 200 "ok"; 503 "draining", "down: ..."
 *                     after a failure, "off" when no QUIC listener runs.
 *
 * Probes, for Kubernetes and the like (text/plain, one line):
 *
 *   GET /healthz      liveness: 200 "ok" whenever the event loop turns (a
 *                     stuck loop answers late or not at all).
 *   GET /readyz       readiness: 200 "ready" when the listeners are bound
 *                     and every upstream group has a server in service
 *                     (h3g_admin_set_ready); 503 "draining" from the first
 *                     SIGTERM on (before the listeners stop accepting, for
 *                     drain_delay), 503 "not ready: ..." otherwise.
 *
 * GET /upstreams answers a JSON view of the upstream groups, their servers'
 * health and pools, and the routes (docs/routes.md "Visibility").
 */
#ifndef H3G_ADMIN_H
#define H3G_ADMIN_H

#include <stdint.h>

#include "common.h"

typedef struct h3g_admin h3g_admin;

/*
 * Listens on host:port (loop is a uv_loop_t *). Returns 0, H3G_ERR_IO
 * (bind/listen failed, logged) or H3G_ERR_NOMEM.
 */
int h3g_admin_new(h3g_admin **pa, void *loop, const char *host, uint16_t port);

/* Makes /health, /health/quic and /readyz answer 503 from now on. */
void h3g_admin_set_draining(h3g_admin *a);

/*
 * What /readyz asks besides draining: fn returns 1 when ready, else 0 with
 * a reason written into why (cap bytes). Without a call, /readyz answers
 * 200 "ready" while not draining.
 */
typedef int (*h3g_admin_ready_fn)(const void *arg, char *why, size_t cap);
void h3g_admin_set_ready(h3g_admin *a, h3g_admin_ready_fn fn, const void *arg);

/* The port the listener is bound to (the kernel's pick for port 0). */
uint16_t h3g_admin_port(const h3g_admin *a);

/* Which listeners serve (both 0 until told): the QUIC listener, the TCP
 * one (HTTPS fallback). */
void h3g_admin_set_serving(h3g_admin *a, int quic, int tcp);

/* The QUIC listener's UDP socket failed for good; why (copied) says how.
 * why NULL: the QUIC listener now is a new one (a reload), not failed. */
void h3g_admin_set_quic_failed(h3g_admin *a, const char *why);

/*
 * What /metrics adds after the process-wide metrics, and what /upstreams
 * answers: each function writes at most cap bytes into buf and returns
 * the length the whole text needs (as snprintf; called again with a
 * larger buffer when it did not fit). arg is passed through. Without a
 * call, /upstreams answers 404.
 */
typedef size_t (*h3g_admin_render)(const void *arg, char *buf, size_t cap);
void h3g_admin_set_view(h3g_admin *a, h3g_admin_render metrics,
                        h3g_admin_render json, const void *arg);

/* Closes the listener and open admin connections; cb(arg) runs when every
 * handle is closed and a is freed. */
void h3g_admin_close(h3g_admin *a, void (*cb)(void *arg), void *arg);

#endif /* H3G_ADMIN_H */
