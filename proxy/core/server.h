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
 * Runs the gateway until it is shut down. Returns the process exit status:
 * 0 after a graceful shutdown, 1 when start-up failed (logged).
 */
int h3g_server_run(const h3g_config *cfg);

/* Writes the versions of the libraries in use into buf, for --version. */
void h3g_server_versions(char *buf, size_t cap);

#endif /* H3G_SERVER_H */
