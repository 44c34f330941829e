/*
 * quic_client: the QUIC client plumbing the test tools share (h3raw,
 * h3ws): a connected UDP socket, a wolfSSL client for ALPN h3 with an
 * optional CA to verify the server, random bytes and new connection IDs.
 * What the tools do with the connection (their callbacks, transport
 * parameters, streams) stays in each tool.
 *
 * The functions that can fail write a one-line reason into err (the
 * tool decides how to die) and return -1; they return 0 on success.
 */
#ifndef QUIC_CLIENT_H
#define QUIC_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <wolfssl/options.h>

#include <wolfssl/ssl.h>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

/* The ngtcp2 callbacks every client takes from the crypto helper, for a
 * designated-initialiser table: { QC_CRYPTO_CALLBACKS, .rand = ..., }. */
#define QC_CRYPTO_CALLBACKS                                                    \
  .client_initial = ngtcp2_crypto_client_initial_cb,                           \
  .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,                       \
  .encrypt = ngtcp2_crypto_encrypt_cb, .decrypt = ngtcp2_crypto_decrypt_cb,    \
  .hp_mask = ngtcp2_crypto_hp_mask_cb,                                         \
  .recv_retry = ngtcp2_crypto_recv_retry_cb,                                   \
  .update_key = ngtcp2_crypto_update_key_cb,                                   \
  .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,           \
  .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,       \
  .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,         \
  .version_negotiation = ngtcp2_crypto_version_negotiation_cb

/* A UDP socket connected to the server, and both addresses. */
typedef struct qc_socket {
  int fd; /* -1 when not open */
  struct sockaddr_storage local, remote;
  socklen_t locallen, remotelen;
} qc_socket;

/* Resolves host:port and connects a UDP socket to the first address. On
 * failure s->fd may be open (the caller closes it). */
int qc_socket_open(qc_socket *s, const char *host, const char *port, char *err,
                   size_t errlen);

/* The socket's path, pointing into s (valid while s is). */
ngtcp2_path qc_socket_path(qc_socket *s);

/* Sends one datagram. A lost datagram is QUIC's to recover from: returns
 * 0, or the errno of a failed send for the caller to trace. */
int qc_socket_send(const qc_socket *s, const uint8_t *data, size_t len);

/*
 * A TLS 1.3 client context and session for QUIC, ALPN "h3", SNI sni.
 * With ca, the server's chain must lead to it and its name match sni;
 * without, nothing is verified. ref is the crypto helper's way back to
 * the ngtcp2 connection (set its get_conn and user_data first). On
 * failure *pctx and *pssl may be set (the caller frees them).
 */
int qc_tls_new(WOLFSSL_CTX **pctx, WOLFSSL **pssl, const char *ca,
               const char *sni, ngtcp2_crypto_conn_ref *ref, char *err,
               size_t errlen);

/* Fills dest with random bytes. Returns 0, or -1 when getrandom fails
 * (errno set). */
int qc_rand(uint8_t *dest, size_t len);

/* ngtcp2's get_new_connection_id callback: random CID and reset token.
 * Returns 0 or NGTCP2_ERR_CALLBACK_FAILURE. */
int qc_on_get_new_connection_id(ngtcp2_conn *conn, ngtcp2_cid *cid,
                                uint8_t *token, size_t cidlen, void *user_data);

#endif /* QUIC_CLIENT_H */
