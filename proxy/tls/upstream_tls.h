/*
 * TLS to an upstream server (the client side; wolfSSL behind it).
 *
 * A session is a byte pump that does no I/O, like a connection filter: the
 * caller feeds it the ciphertext it read from the socket, drives the
 * handshake, encrypts what it wants to send, decrypts what arrived, and
 * sends the ciphertext the session has pending. Nothing here touches a
 * socket or a loop, so unit tests pump bytes between a session and a test
 * server in memory.
 *
 * Every buffer has a hard cap (below). A full input buffer refuses more
 * (the caller stops reading the socket until h3g_upstream_tls_read() makes
 * room); a full output buffer makes h3g_upstream_tls_write() take fewer
 * bytes or none (the caller sends what is pending first).
 *
 * Session resumption: a context keeps, per server name, the last session
 * (TLS 1.3 ticket or TLS 1.2 session) a connection to that name received,
 * at most H3G_UPSTREAM_TLS_SESSIONS_MAX names (the least recently used name
 * goes first), and each new session for that name offers it. The cache is
 * the context's: sessions of two contexts never mix, so a session verified
 * against one CA set is never offered under another. Several connections
 * may offer the same ticket; a server that takes tickets once only answers
 * the second with a full handshake.
 *
 * Everything runs on one thread: a context and its sessions are not
 * locked. No wolfSSL type appears here; only the TLS files include wolfSSL.
 */
#ifndef H3G_UPSTREAM_TLS_H
#define H3G_UPSTREAM_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Most ciphertext received and not yet decrypted: four full records. */
#define H3G_UPSTREAM_TLS_IN_MAX (64 * 1024)
/* Most ciphertext waiting to be sent. h3g_upstream_tls_write() leaves
 * H3G_UPSTREAM_TLS_OUT_RESERVE of it for the handshake, alerts and
 * post-handshake messages, which are never refused for lack of room. */
#define H3G_UPSTREAM_TLS_OUT_MAX (128 * 1024)
#define H3G_UPSTREAM_TLS_OUT_RESERVE (32 * 1024)
/* Server names whose last session a context keeps. */
#define H3G_UPSTREAM_TLS_SESSIONS_MAX 64
/* Longest server name (RFC 1035: 253 characters). */
#define H3G_UPSTREAM_TLS_NAME_MAX 253
/* Longest reason kept by h3g_upstream_tls_error(), with its NUL. */
#define H3G_UPSTREAM_TLS_ERROR_MAX 256

typedef struct h3g_upstream_tls_ctx h3g_upstream_tls_ctx;
typedef struct h3g_upstream_tls h3g_upstream_tls;

typedef struct h3g_upstream_tls_config {
  /* PEM file of the CAs the server's certificate must chain to; NULL or
   * "system": the system's store. Not read when verify is 0. */
  const char *ca_file;
  /* 1: the certificate must chain to a CA above and match the server name
   * given to h3g_upstream_tls_new(); 0: any certificate is accepted. */
  int verify;
  /* Client certificate chain and its key (PEM), both or neither; NULL: no
   * client certificate is offered. */
  const char *cert_file;
  const char *key_file;
} h3g_upstream_tls_config;

/*
 * Builds a client context: TLS 1.2 or 1.3 (nothing older), forward-secret
 * AEAD suites, session tickets on, the CAs and client certificate of cfg.
 * Each context holds one reference to wolfSSL's process-wide state.
 * Returns 0 with *pctx set, or with *pctx NULL and a one-line reason in
 * err (NUL-terminated, cut to errlen; err may be NULL when errlen is 0):
 * H3G_ERR_INVAL (cert_file without key_file or the other way round),
 * H3G_ERR_IO (a file cannot be read: "cannot read CA file X: ..."),
 * H3G_ERR_TLS (a file holds no usable certificate or key, the key does not
 * match the certificate, the system store is empty), H3G_ERR_NOMEM.
 */
int h3g_upstream_tls_ctx_new(h3g_upstream_tls_ctx **pctx,
                             const h3g_upstream_tls_config *cfg, char *err,
                             size_t errlen);

/* Frees ctx and the sessions it caches. Every session made from it must be
 * freed first. NULL is a no-op. */
void h3g_upstream_tls_ctx_free(h3g_upstream_tls_ctx *ctx);

/* Number of server names with a cached session (for tests and metrics). */
size_t h3g_upstream_tls_ctx_cached(const h3g_upstream_tls_ctx *ctx);

/*
 * Starts a client session of ctx for the server called sni: a DNS name is
 * sent as SNI and, with verify on, must match the certificate (a wildcard
 * certificate matches one label); an IP address (v4 or v6) is not sent
 * (RFC 6066 §3) and must be one of the certificate's subjectAltName IP
 * addresses (checked when wolfSSL has finished the handshake, so a
 * mismatch fails handshake() after the client's Finished went out, before
 * any application data). ALPN
 * offers "http/1.1". The cached session for sni, if any, is offered.
 * Nothing is sent before h3g_upstream_tls_handshake(). Returns 0 with *ps
 * set, H3G_ERR_INVAL (sni NULL, empty or longer than
 * H3G_UPSTREAM_TLS_NAME_MAX), H3G_ERR_NOMEM or H3G_ERR_TLS.
 */
int h3g_upstream_tls_new(h3g_upstream_tls **ps, h3g_upstream_tls_ctx *ctx,
                         const char *sni);

/* Frees s without sending anything (call close_notify first for a clean
 * close). NULL is a no-op. */
void h3g_upstream_tls_free(h3g_upstream_tls *s);

/*
 * Takes len bytes of ciphertext read from the socket. All or nothing:
 * returns 0, H3G_ERR_TOOBIG when len exceeds h3g_upstream_tls_input_room()
 * (nothing taken), or H3G_ERR_NOMEM.
 */
int h3g_upstream_tls_feed(h3g_upstream_tls *s, const uint8_t *data, size_t len);

/* How many more bytes feed() takes now. */
size_t h3g_upstream_tls_input_room(const h3g_upstream_tls *s);

/*
 * Drives the handshake with what was fed so far; ciphertext to send may be
 * pending afterwards (whatever it returns). Returns 0 once the handshake is
 * done (and again on every later call), H3G_ERR_AGAIN when more input is
 * needed (send what is pending, feed what arrives, call again), or
 * H3G_ERR_TLS when it failed (and on every later call): the reason is in
 * h3g_upstream_tls_error() ("certificate verify failed: no trusted CA
 * signed it (...)", "certificate verify failed: certificate does not match
 * NAME", "the server sent the alert handshake_failure (40)"), and an alert
 * for the server may be pending. In TLS 1.3 a server that refuses the
 * client's certificate does so after the client is done: its alert comes
 * out of the first read().
 */
int h3g_upstream_tls_handshake(h3g_upstream_tls *s);

/*
 * Encrypts plaintext from iov (n elements, any sizes) in records of up to
 * 16 KiB, appending the ciphertext to the pending output. Takes as many
 * bytes as the output buffer has room for, in order. Returns the number of
 * bytes taken (> 0 when total is > 0, 0 for an empty iov), H3G_ERR_AGAIN
 * when no byte fits (send what is pending first) or the handshake is not
 * done, H3G_ERR_CLOSED after close_notify() was queued, H3G_ERR_TLS
 * (reason in h3g_upstream_tls_error()). After any H3G_ERR_TLS, from any
 * call, write(), read() and handshake() return H3G_ERR_TLS.
 */
int h3g_upstream_tls_write(h3g_upstream_tls *s, const h3g_iovec *iov, size_t n);

/*
 * Decrypts into buf (at most cap bytes, cap clamped to INT_MAX). Returns
 * the number of bytes placed (> 0), 0 when none is available now (feed
 * more; post-handshake messages such as session tickets are handled on
 * the way), H3G_ERR_CLOSED once the server's close_notify was read,
 * H3G_ERR_AGAIN before the handshake is done, H3G_ERR_TLS (reason in
 * h3g_upstream_tls_error()). After the handshake, ciphertext may be pending
 * afterwards (a reply to a key update).
 */
int h3g_upstream_tls_read(h3g_upstream_tls *s, uint8_t *buf, size_t cap);

/* 1 when decrypted bytes or fed ciphertext wait inside s (a read() may
 * give bytes without another feed()), else 0. */
int h3g_upstream_tls_has_input(const h3g_upstream_tls *s);

/*
 * The oldest ciphertext waiting to be sent, as one contiguous region (*len
 * 0 when nothing waits); more may follow the region. The bytes stay valid
 * and in place until consumed, even while more output is added.
 */
void h3g_upstream_tls_pending_output(const h3g_upstream_tls *s,
                                     const uint8_t **ptr, size_t *len);

/* Total ciphertext waiting to be sent. */
size_t h3g_upstream_tls_output_len(const h3g_upstream_tls *s);

/* Drops the first n bytes of pending output (they were sent); n is at most
 * h3g_upstream_tls_output_len(). */
void h3g_upstream_tls_consume_output(h3g_upstream_tls *s, size_t n);

/* Queues a close_notify alert (once; later calls do nothing). Returns 0 or
 * H3G_ERR_TLS. Writes are refused afterwards. */
int h3g_upstream_tls_close_notify(h3g_upstream_tls *s);

/* 1 when the handshake is done and resumed a cached session, else 0. */
int h3g_upstream_tls_resumed(const h3g_upstream_tls *s);

/* The protocol the server chose by ALPN ("http/1.1"), or NULL for none. */
const char *h3g_upstream_tls_alpn(const h3g_upstream_tls *s);

/* "TLSv1.3" or "TLSv1.2" once the handshake is done, for logs. */
const char *h3g_upstream_tls_version(const h3g_upstream_tls *s);

/* Why the last call failed with H3G_ERR_TLS ("" when none did). */
const char *h3g_upstream_tls_error(const h3g_upstream_tls *s);

#endif /* H3G_UPSTREAM_TLS_H */
