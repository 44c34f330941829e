/*
 * The admin listener: plain HTTP/1.1 on a (loopback) TCP port, for
 * operators and tests. GET /metrics returns every metric in Prometheus text
 * format; GET /health returns 200 "ok" (503 "draining" while shutting down).
 * Each connection serves one request and is closed.
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

/* Makes /health answer 503 from now on. */
void h3g_admin_set_draining(h3g_admin *a);

/* The port the listener is bound to (the kernel's pick for port 0). */
uint16_t h3g_admin_port(const h3g_admin *a);

/* Closes the listener and open admin connections; cb(arg) runs when every
 * handle is closed and a is freed. */
void h3g_admin_close(h3g_admin *a, void (*cb)(void *arg), void *arg);

#endif /* H3G_ADMIN_H */
