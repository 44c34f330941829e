/* The QUIC client plumbing shared by the test tools (quic_client.h). */
#include "quic_client.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

int qc_socket_open(qc_socket *s, const char *host, const char *port, char *err,
                   size_t errlen) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
  struct addrinfo *res;

  s->fd = -1;
  int rv = getaddrinfo(host, port, &hints, &res);
  if (rv != 0) {
    snprintf(err, errlen, "%s:%s: %s", host, port, gai_strerror(rv));
    return -1;
  }
  s->fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  if (s->fd < 0 || connect(s->fd, res->ai_addr, res->ai_addrlen) != 0) {
    snprintf(err, errlen, "%s:%s: %s", host, port, strerror(errno));
    freeaddrinfo(res);
    return -1;
  }
  memcpy(&s->remote, res->ai_addr, res->ai_addrlen);
  s->remotelen = res->ai_addrlen;
  freeaddrinfo(res);
  s->locallen = sizeof(s->local);
  if (getsockname(s->fd, (struct sockaddr *)&s->local, &s->locallen) != 0) {
    snprintf(err, errlen, "getsockname: %s", strerror(errno));
    return -1;
  }
  return 0;
}

ngtcp2_path qc_socket_path(qc_socket *s) {
  return (ngtcp2_path){
      .local = {.addr = (struct sockaddr *)&s->local, .addrlen = s->locallen},
      .remote = {.addr = (struct sockaddr *)&s->remote,
                 .addrlen = s->remotelen},
  };
}

int qc_socket_send(const qc_socket *s, const uint8_t *data, size_t len) {
  ssize_t n;
  do
    n = send(s->fd, data, len, 0);
  while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
}

int qc_tls_new(WOLFSSL_CTX **pctx, WOLFSSL **pssl, const char *ca,
               const char *sni, ngtcp2_crypto_conn_ref *ref, char *err,
               size_t errlen) {
  wolfSSL_Init();
  *pssl = NULL;
  *pctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
  if (*pctx == NULL ||
      ngtcp2_crypto_wolfssl_configure_client_context(*pctx) != 0) {
    snprintf(err, errlen, "cannot set up the TLS client context");
    return -1;
  }
  if (ca != NULL) {
    if (wolfSSL_CTX_load_verify_locations(*pctx, ca, NULL) != WOLFSSL_SUCCESS) {
      snprintf(err, errlen, "%s: cannot load the CA certificate", ca);
      return -1;
    }
    wolfSSL_CTX_set_verify(*pctx, WOLFSSL_VERIFY_PEER, NULL);
  } else {
    wolfSSL_CTX_set_verify(*pctx, WOLFSSL_VERIFY_NONE, NULL);
  }
  *pssl = wolfSSL_new(*pctx);
  if (*pssl == NULL) {
    snprintf(err, errlen, "wolfSSL_new failed");
    return -1;
  }
  wolfSSL_set_app_data(*pssl, ref);
  wolfSSL_set_connect_state(*pssl);
  char alpn[] = "h3";
  if (wolfSSL_UseALPN(*pssl, alpn, 2, WOLFSSL_ALPN_FAILED_ON_MISMATCH) !=
          WOLFSSL_SUCCESS ||
      wolfSSL_UseSNI(*pssl, WOLFSSL_SNI_HOST_NAME, sni,
                     (unsigned short)strlen(sni)) != WOLFSSL_SUCCESS) {
    snprintf(err, errlen, "cannot set ALPN or SNI");
    return -1;
  }
  if (ca != NULL && wolfSSL_check_domain_name(*pssl, sni) != WOLFSSL_SUCCESS) {
    snprintf(err, errlen, "cannot set the name to verify");
    return -1;
  }
  return 0;
}

int qc_rand(uint8_t *dest, size_t len) {
  while (len > 0) {
    ssize_t k = getrandom(dest, len, 0);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    dest += k;
    len -= (size_t)k;
  }
  return 0;
}

int qc_on_get_new_connection_id(ngtcp2_conn *conn, ngtcp2_cid *cid,
                                uint8_t *token, size_t cidlen,
                                void *user_data) {
  (void)conn;
  (void)user_data;
  if (qc_rand(cid->data, cidlen) != 0 ||
      qc_rand(token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  return 0;
}
