/*
 * The WebSocket opening handshake's key and its answer (RFC 6455 §4.1,
 * §4.2.2): the gateway makes a fresh Sec-WebSocket-Key for the upstream
 * when the client spoke extended CONNECT (RFC 8441, RFC 9220), and checks
 * the upstream's Sec-WebSocket-Accept against the key it sent.
 *
 * In the TLS layer because SHA-1 and base64 come from wolfSSL; the header
 * names no wolfSSL type, so the bridge can use it.
 */
#ifndef H3G_WS_KEY_H
#define H3G_WS_KEY_H

#include <stddef.h>
#include <stdint.h>

/* A key is 16 random bytes in base64: 24 characters. */
#define H3G_WS_KEY_LEN 24
/* An accept value is a SHA-1 digest in base64: 28 characters. */
#define H3G_WS_ACCEPT_LEN 28

/*
 * Writes a new random key, NUL-terminated, into out (at least
 * H3G_WS_KEY_LEN + 1 bytes). Returns 0, or H3G_ERR_IO when the system's
 * random source fails.
 */
int h3g_ws_key_new(char *out);

/*
 * Writes the Sec-WebSocket-Accept value for key (as sent, keylen bytes),
 * NUL-terminated, into out (at least H3G_WS_ACCEPT_LEN + 1 bytes).
 * Returns 0 or H3G_ERR_INVAL (keylen over 256: no real key is).
 */
int h3g_ws_accept(const uint8_t *key, size_t keylen, char *out);

/* 1 when value (valuelen bytes, surrounding whitespace allowed) is the
 * accept value for key, else 0. */
int h3g_ws_accept_matches(const uint8_t *key, size_t keylen,
                          const uint8_t *value, size_t valuelen);

#endif /* H3G_WS_KEY_H */
