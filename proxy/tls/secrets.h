/*
 * The gateway's long-lived secrets: TLS session ticket keys (both the QUIC
 * and the TCP listener), the key of QUIC address-validation tokens (Retry
 * and NEW_TOKEN) and the key of stateless reset tokens.
 *
 * With [listener] secrets_file, all of them come from that file, so that
 * several instances behind one address (or one instance across restarts)
 * resume each other's TLS sessions, accept each other's tokens and can
 * reset each other's connections. Without it they are random per process.
 *
 * The file: one secret per line, hex (64 to 128 digits, e.g. from
 * "openssl rand -hex 32") or base64 of 32 to 64 bytes; blank lines and
 * lines starting with "#" are ignored. The first secret is the current
 * one; the others (at most H3G_SECRETS_MAX - 1) are older ones, still
 * accepted when decrypting tickets, so that the file itself can be rolled
 * over without breaking resumption: put the new secret first, keep the old
 * one below it for a ticket lifetime, then remove it.
 *
 * Ticket keys rotate on a schedule without any coordination: the key of
 * rotation period e (wall-clock seconds / rotation) is derived from the
 * secret and e, tickets are sealed with the current period's key and
 * accepted from the previous, current and next period (clock skew between
 * instances), so a ticket survives one rotation. Without a file, each
 * period gets a fresh random key and only the previous one is kept.
 * Ticket keys are also bound to a context string per TLS context (for QUIC:
 * the transport parameters and HTTP/3 settings a client remembers for
 * 0-RTT, RFC 9000 §7.4.1, RFC 9114 §7.2.4.2): an instance configured
 * differently cannot decrypt the ticket and does a full handshake instead
 * of accepting 0-RTT under limits it would not honour.
 */
#ifndef H3G_SECRETS_H
#define H3G_SECRETS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define H3G_SECRETS_MAX 8
#define H3G_SECRET_MIN 32
#define H3G_SECRET_MAX 64

typedef struct h3g_secrets h3g_secrets;

/*
 * Parses a secrets file's text. Returns the number of secrets (1 to
 * H3G_SECRETS_MAX), or H3G_ERR_INVAL with a reason in why ("line 3: ...").
 * out and lens may be NULL (check only).
 */
int h3g_secrets_parse(const char *text, size_t len,
                      uint8_t (*out)[H3G_SECRET_MAX], size_t *lens, char *why,
                      size_t whylen);

/*
 * Reads and parses path. Returns 0, H3G_ERR_IO (cannot read, why says so)
 * or H3G_ERR_INVAL (why says what is wrong).
 */
int h3g_secrets_check_file(const char *path, char *why, size_t whylen);

/*
 * Creates the secrets from path (NULL or "": random per process);
 * rotation_s is the ticket key period in seconds (0: no rotation). Returns
 * 0, H3G_ERR_IO, H3G_ERR_INVAL (logged) or H3G_ERR_NOMEM.
 */
int h3g_secrets_new(h3g_secrets **ps, const char *path, uint64_t rotation_s);

/* NULL is a no-op. Every context attached must be freed first. */
void h3g_secrets_free(h3g_secrets *s);

/*
 * Re-reads the file if it changed (size, time or inode). A file that no
 * longer parses is reported and the secrets in use are kept. Returns 1
 * when new secrets were loaded, 0 when nothing changed (or no file), or a
 * negative error (logged).
 */
int h3g_secrets_reload(h3g_secrets *s);

/*
 * Reads the secrets from path from now on (a reload named another file;
 * s must have been made from a file too): as if the file in use had been
 * rewritten. When path cannot be read or parsed, nothing changes. Returns
 * 0 or a negative error (logged).
 */
int h3g_secrets_set_path(h3g_secrets *s, const char *path);

/*
 * A key for purpose label (e.g. "quic reset"), derived from the current
 * secret: the same on every instance sharing the file. Returns 0 or
 * H3G_ERR_TLS.
 */
int h3g_secrets_derive(const h3g_secrets *s, const char *label, uint8_t *out,
                       size_t len);

/*
 * What a ticket is bound to beyond its context, per connection: bind(ssl)
 * (a WOLFSSL *) writes up to H3G_TICKET_BIND_MAX bytes to out and returns
 * how many. A ticket sealed on one connection opens only on a connection
 * that binds the same bytes (authenticated with the ticket, not stored in
 * it). QUIC binds the version: RFC 9369 §3.3 forbids accepting a ticket
 * issued under another QUIC version.
 */
#define H3G_TICKET_BIND_MAX 8
typedef size_t (*h3g_ticket_binder)(void *ssl, uint8_t *out);

/*
 * Makes the wolfSSL context (a WOLFSSL_CTX *) seal and open its session
 * tickets with these secrets, bound to context (see above) and to what
 * bind (NULL: nothing) says of each connection, and sets the ticket
 * lifetime to one rotation period (one day without rotation). Returns 0,
 * H3G_ERR_NOMEM or H3G_ERR_TLS.
 */
int h3g_secrets_attach(h3g_secrets *s, void *ssl_ctx, const char *context,
                       h3g_ticket_binder bind);

/* Ticket lifetime in seconds (what attach configured). */
uint32_t h3g_secrets_ticket_lifetime(const h3g_secrets *s);

#endif /* H3G_SECRETS_H */
