/*
 * The server: one libuv loop with the QUIC listener, the upstream pool, the
 * admin listener and signal handling. SIGTERM/SIGINT start a graceful
 * shutdown: new connections are refused, in-flight requests get
 * shutdown_timeout to finish, then everything is closed and freed.
 */
#ifndef H3G_SERVER_H
#define H3G_SERVER_H

#include <stddef.h>

#include "config.h"

/*
 * How the server reads its configuration again (SIGHUP): load fills cfg
 * (defaults first) from path and everything a start would check, printing
 * each problem as "FILE:LINE: ..." on stderr; returns 0 or non-zero.
 */
typedef struct h3g_server_reload {
  const char *path;
  int (*load)(h3g_config *cfg, const char *path);
} h3g_server_reload;

/*
 * Runs the gateway until it is shut down, with cfg (which it may change:
 * a reload puts the new configuration in it, see server.c). reload NULL:
 * SIGHUP reloads only the secrets file. Returns the process exit status:
 * 0 after a graceful shutdown, 1 when start-up failed (logged).
 */
int h3g_server_run(h3g_config *cfg, const h3g_server_reload *reload);

/* Writes the versions of the libraries in use into buf, for --version. */
void h3g_server_versions(char *buf, size_t cap);

#endif /* H3G_SERVER_H */
