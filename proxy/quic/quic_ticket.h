/*
 * The ticket context of the QUIC listener's TLS (secrets.h): what a
 * resumed client remembers from this configuration and relies on for
 * 0-RTT. Defined in quic_conn.c, which sets the transport parameters it
 * covers; a header of its own so that the server can ask for it without
 * the QUIC libraries' headers.
 */
#ifndef H3G_QUIC_TICKET_H
#define H3G_QUIC_TICKET_H

#include <stddef.h>

#include "config.h"

/* Writes the context into buf (NUL-terminated, cut to cap). */
void h3g_quic_ticket_context(const h3g_config *cfg, char *buf, size_t cap);

#endif /* H3G_QUIC_TICKET_H */
