/*
 * The TLS key log ([debug] keylog_file): the secrets of every TLS 1.3
 * handshake the gateway makes, QUIC and TCP alike, appended to one file in
 * the NSS key log format (one "LABEL <client random> <secret>" line per
 * secret, hex) that Wireshark and tshark read to decrypt a capture.
 *
 * Unsafe for production: whoever reads the file can decrypt every
 * connection it covers, and the file grows with traffic. Off by default:
 * on only when the configuration key names a file, or, when the key is
 * left out, the SSLKEYLOGFILE environment variable does (the convention
 * every TLS tool follows). "keylog_file = off" written in the file keeps
 * it off whatever the environment says.
 *
 * One file per process, opened once at startup. A TLS module: it includes
 * wolfSSL, its callers do not (contexts are passed as void *).
 */
#ifndef H3G_KEYLOG_H
#define H3G_KEYLOG_H

#include "common.h"
#include "config.h"

/*
 * Opens the key log (cfg->keylog_file, else SSLKEYLOGFILE when
 * cfg->keylog_env) for appending (created with mode 0600, never
 * truncated) and logs a warning that secrets are being written. Does
 * nothing but return 0 when logging is off (then it only notes that a set
 * SSLKEYLOGFILE is ignored). Returns 0 or H3G_ERR_IO (the file cannot be
 * opened: logged). Call once, before the TLS contexts are built.
 */
int h3g_keylog_open(const h3g_config *cfg);

/*
 * Makes ssl_ctx (a WOLFSSL_CTX *) report its connections' secrets to the
 * key log, when one is open; otherwise does nothing. Must be called before
 * the context creates its first connection (wolfSSL copies the setting into
 * each connection when it is created).
 */
void h3g_keylog_attach(void *ssl_ctx);

/* Closes the key log, if open. Safe to call more than once. */
void h3g_keylog_close(void);

#endif /* H3G_KEYLOG_H */
