/*
 * wolfSSL server contexts. QUIC carries TLS 1.3 only (RFC 9001 §4.2), and
 * the ngtcp2 crypto helper installs the QUIC method callbacks that move
 * handshake bytes between wolfSSL and ngtcp2.
 *
 * Session tickets are sealed with keys from secrets.h (shared by instances
 * through [listener] secrets_file, rotated on a schedule) and, for QUIC,
 * bound to the transport parameters and HTTP/3 settings a client keeps for
 * 0-RTT. With [listener] early_data on (the default), QUIC tickets offer
 * 0-RTT with the max early data size of 0xffffffff that RFC 9001 §4.6.1
 * requires; what may be forwarded early is the HTTP/3 session's and the
 * bridge's decision (safe methods only, RFC 8470). The TCP listener never
 * accepts TLS early data: HTTP/1.1 and HTTP/2 have no way to hold it back.
 */
#include "tls_ctx.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* wolfSSL needs its build options before any of its headers. */
#include <wolfssl/options.h>

#include <wolfssl/ssl.h>

#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "keylog.h"
#include "log.h"
#include "secrets.h"

struct h3g_tls_ctx {
  WOLFSSL_CTX *ssl_ctx;
};

/* TLS 1.3 suites with AEADs every QUIC client implements (RFC 9001 §5.3):
 * AES-GCM first (AES-NI), ChaCha20-Poly1305 for clients without it. */
static const char quic_ciphers[] = "TLS_AES_128_GCM_SHA256:"
                                   "TLS_AES_256_GCM_SHA384:"
                                   "TLS_CHACHA20_POLY1305_SHA256";
static const char quic_groups[] = "X25519:P-256:P-384:P-521";
static const unsigned char alpn_h3[] = {2, 'h', '3'};

static int wolfssl_ready;

static const char *last_error(char *buf) {
  unsigned long err = wolfSSL_ERR_get_error();
  if (err == 0)
    return "no detail";
  return wolfSSL_ERR_error_string(err, buf);
}

/* Picks "h3" from the client's list; anything else fails the handshake with
 * no_application_protocol (RFC 9001 §8.1). wolfSSL calls this only when
 * built with OPENSSL_ALL (or nginx/haproxy compatibility); otherwise it
 * matches against the per-connection list that quic_conn.c sets with
 * wolfSSL_UseALPN, to the same effect. */
static int on_alpn_select(WOLFSSL *ssl, const unsigned char **out,
                          unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg) {
  H3G_UNUSED(ssl);
  H3G_UNUSED(arg);
  for (const unsigned char *p = in, *end = in + inlen; p < end;) {
    size_t len = *p;
    if ((size_t)(end - p) < 1 + len)
      break;
    if (len == alpn_h3[0] && memcmp(p + 1, alpn_h3 + 1, len) == 0) {
      *out = p + 1;
      *outlen = (unsigned char)len;
      return SSL_TLSEXT_ERR_OK;
    }
    p += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/*
 * What both contexts share: wolfSSL's global init (once), a context of the
 * given method, the certificate chain and the key, which must match.
 * Returns 0 with *pctx set, H3G_ERR_NOMEM or H3G_ERR_TLS (logged).
 */
static int ctx_new(h3g_tls_ctx **pctx, WOLFSSL_METHOD *method) {
  char errbuf[WOLFSSL_MAX_ERROR_SZ];
  *pctx = NULL;
  if (!wolfssl_ready) {
    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
      h3g_error("tls: wolfSSL_Init failed");
      return H3G_ERR_TLS;
    }
    wolfssl_ready = 1;
  }
  h3g_tls_ctx *ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL)
    return H3G_ERR_NOMEM;
  ctx->ssl_ctx = method != NULL ? wolfSSL_CTX_new(method) : NULL;
  if (ctx->ssl_ctx == NULL) {
    h3g_error("tls: wolfSSL_CTX_new: %s", last_error(errbuf));
    free(ctx);
    return H3G_ERR_NOMEM;
  }
  h3g_keylog_attach(ctx->ssl_ctx); /* [debug] keylog_file, when open */
  *pctx = ctx;
  return 0;
}

static int ctx_load_identity(WOLFSSL_CTX *sc, const h3g_config *cfg) {
  char errbuf[WOLFSSL_MAX_ERROR_SZ];
  if (wolfSSL_CTX_use_certificate_chain_file(sc, cfg->cert_file) !=
      WOLFSSL_SUCCESS) {
    h3g_error("tls: certificate chain %s: %s", cfg->cert_file,
              last_error(errbuf));
    return H3G_ERR_TLS;
  }
  if (wolfSSL_CTX_use_PrivateKey_file(
          sc, cfg->key_file, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
    h3g_error("tls: private key %s: %s", cfg->key_file, last_error(errbuf));
    return H3G_ERR_TLS;
  }
  if (wolfSSL_CTX_check_private_key(sc) != WOLFSSL_SUCCESS) {
    h3g_error("tls: private key %s does not match certificate %s",
              cfg->key_file, cfg->cert_file);
    return H3G_ERR_TLS;
  }
  return 0;
}

/*
 * A QUIC ticket is bound to the version of the connection that got it (RFC
 * 9369 §3.3: a ticket from a v1 connection must not resume a v2 one, nor
 * the other way round), the version the connection runs in once
 * negotiated (RFC 9368), whatever version its first Initial used.
 *
 * A ticket is sealed after the handshake, when ngtcp2 knows that version,
 * and opened inside the ClientHello, before ngtcp2 has read the client's
 * transport parameters: ngtcp2 decides the version from them (the client's
 * chosen and offered versions, our preference) only when the handshake
 * keys are installed. So the ticket's opening hands them to ngtcp2 first,
 * as ngtcp2's wolfSSL helper would a moment later (it skips that once the
 * version is known); wolfSSL has them by then, the extension coming before
 * the pre_shared_key one. If they are refused, the ticket is not opened
 * and the helper refuses them again, for the handshake to fail as it
 * should.
 */
static size_t quic_ticket_binding(void *ssl, uint8_t *out) {
  ngtcp2_crypto_conn_ref *ref = wolfSSL_get_app_data((WOLFSSL *)ssl);
  if (ref == NULL)
    return 0;
  ngtcp2_conn *conn = ref->get_conn(ref);
  if (ngtcp2_conn_get_negotiated_version(conn) == 0) {
    const uint8_t *tp = NULL;
    size_t tplen = 0;
    wolfSSL_get_peer_quic_transport_params((WOLFSSL *)ssl, &tp, &tplen);
    if (ngtcp2_conn_decode_and_set_remote_transport_params(conn, tp, tplen) !=
        0)
      return 0;
  }
  uint32_t v = ngtcp2_conn_get_negotiated_version(conn);
  out[0] = (uint8_t)(v >> 24);
  out[1] = (uint8_t)(v >> 16);
  out[2] = (uint8_t)(v >> 8);
  out[3] = (uint8_t)v;
  return 4;
}

int h3g_tls_ctx_new_quic(h3g_tls_ctx **pctx, const h3g_config *cfg,
                         h3g_secrets *secrets, const char *ticket_context) {
  char errbuf[WOLFSSL_MAX_ERROR_SZ];
  h3g_tls_ctx *ctx;
  int rv = ctx_new(&ctx, wolfTLSv1_3_server_method());
  if (rv != 0)
    return rv;
  WOLFSSL_CTX *sc = ctx->ssl_ctx;

  if (ngtcp2_crypto_wolfssl_configure_server_context(sc) != 0) {
    h3g_error("tls: cannot configure the context for QUIC");
    goto fail;
  }
  if (wolfSSL_CTX_set_cipher_list(sc, quic_ciphers) != WOLFSSL_SUCCESS) {
    h3g_error("tls: cipher list: %s", last_error(errbuf));
    goto fail;
  }
  if (wolfSSL_CTX_set1_curves_list(sc, quic_groups) != WOLFSSL_SUCCESS) {
    h3g_error("tls: groups: %s", last_error(errbuf));
    goto fail;
  }
  wolfSSL_CTX_set_alpn_select_cb(sc, on_alpn_select, NULL);
  if (ctx_load_identity(sc, cfg) != 0)
    goto fail;
  if ((rv = h3g_secrets_attach(secrets, sc, ticket_context,
                               quic_ticket_binding)) != 0) {
    h3g_error("tls: cannot install the session ticket keys");
    goto fail;
  }
#ifdef WOLFSSL_EARLY_DATA
  wolfSSL_CTX_set_max_early_data(sc, cfg->early_data ? UINT32_MAX : 0);
#endif
  *pctx = ctx;
  return 0;

fail:
  h3g_tls_ctx_free(ctx);
  return H3G_ERR_TLS;
}

/* TLS 1.2 suites for the TCP listener: forward secret AEADs only. TLS 1.3
 * suites are wolfSSL's defaults, all AEADs. */
static const char tcp_ciphers[] = "TLS13-AES128-GCM-SHA256:"
                                  "TLS13-AES256-GCM-SHA384:"
                                  "TLS13-CHACHA20-POLY1305-SHA256:"
                                  "ECDHE-ECDSA-AES128-GCM-SHA256:"
                                  "ECDHE-RSA-AES128-GCM-SHA256:"
                                  "ECDHE-ECDSA-AES256-GCM-SHA384:"
                                  "ECDHE-RSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                  "ECDHE-RSA-CHACHA20-POLY1305";

int h3g_tls_ctx_new_tcp(h3g_tls_ctx **pctx, const h3g_config *cfg,
                        h3g_secrets *secrets) {
  char errbuf[WOLFSSL_MAX_ERROR_SZ];
  h3g_tls_ctx *ctx;
  int rv = ctx_new(&ctx, wolfSSLv23_server_method());
  if (rv != 0)
    return rv;
  WOLFSSL_CTX *sc = ctx->ssl_ctx;

  if (wolfSSL_CTX_SetMinVersion(sc, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
    h3g_error("tls: minimum version: %s", last_error(errbuf));
    goto fail;
  }
  if (wolfSSL_CTX_set_cipher_list(sc, tcp_ciphers) != WOLFSSL_SUCCESS) {
    h3g_error("tls: cipher list: %s", last_error(errbuf));
    goto fail;
  }
  if (wolfSSL_CTX_set1_curves_list(sc, quic_groups) != WOLFSSL_SUCCESS) {
    h3g_error("tls: groups: %s", last_error(errbuf));
    goto fail;
  }
  if (ctx_load_identity(sc, cfg) != 0)
    goto fail;
#ifdef HAVE_SESSION_TICKET
  /* TLS 1.2 tickets (RFC 5077); TLS 1.3 sends NewSessionTicket anyway. */
  wolfSSL_CTX_UseSessionTicket(sc);
#endif
  if (h3g_secrets_attach(secrets, sc, "tcp", NULL) != 0) {
    h3g_error("tls: cannot install the session ticket keys");
    goto fail;
  }
#ifdef WOLFSSL_EARLY_DATA
  wolfSSL_CTX_set_max_early_data(sc, 0);
#endif
  *pctx = ctx;
  return 0;

fail:
  h3g_tls_ctx_free(ctx);
  return H3G_ERR_TLS;
}

void h3g_tls_ctx_free(h3g_tls_ctx *ctx) {
  if (ctx == NULL)
    return;
  wolfSSL_CTX_free(ctx->ssl_ctx);
  free(ctx);
}

void *h3g_tls_ctx_native(h3g_tls_ctx *ctx) {
  return ctx->ssl_ctx;
}

void h3g_tls_cleanup(void) {
  if (wolfssl_ready) {
    wolfSSL_Cleanup();
    wolfssl_ready = 0;
  }
}

int h3g_tls_check_files(const char *cert, const char *key, char *err,
                        size_t cap, char *warn, size_t wcap) {
  int rv = H3G_ERR_INVAL;
  WOLFSSL_CTX *ctx = NULL;
  WOLFSSL_X509 *leaf = NULL;
  warn[0] = err[0] = '\0';
  if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
    snprintf(err, cap, "%s is not readable by this user",
             access(cert, R_OK) != 0 ? cert : key);
    return rv;
  }
  ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
  if (ctx == NULL) {
    snprintf(err, cap, "out of memory");
    return H3G_ERR_NOMEM;
  }
  if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert) != WOLFSSL_SUCCESS) {
    snprintf(err, cap, "%s: no usable PEM certificate chain", cert);
    goto done;
  }
  if (wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) !=
      WOLFSSL_SUCCESS) {
    snprintf(err, cap, "%s: no usable PEM private key", key);
    goto done;
  }
  if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
    snprintf(err, cap, "%s does not match the certificate in %s", key, cert);
    goto done;
  }
  leaf = wolfSSL_X509_load_certificate_file(cert, WOLFSSL_FILETYPE_PEM);
  if (leaf == NULL) {
    snprintf(err, cap, "%s: cannot read the first certificate", cert);
    goto done;
  }
  time_t now = time(NULL), soon = now + 14 * 24 * 3600;
  const WOLFSSL_ASN1_TIME *na = wolfSSL_X509_get_notAfter(leaf);
  const WOLFSSL_ASN1_TIME *nb = wolfSSL_X509_get_notBefore(leaf);
  if (na != NULL && wolfSSL_X509_cmp_time(na, &now) <= 0) {
    snprintf(err, cap, "%s: the certificate has expired", cert);
    goto done;
  }
  if (nb != NULL && wolfSSL_X509_cmp_time(nb, &now) > 0) {
    snprintf(err, cap, "%s: the certificate is not valid yet", cert);
    goto done;
  }
  if (na != NULL && wolfSSL_X509_cmp_time(na, &soon) <= 0)
    snprintf(warn, wcap, "%s: the certificate expires within 14 days", cert);
  /* The chain in the file: each certificate issued by the next (the
   * client gets them in this order and must be able to walk them). */
  STACK_OF(WOLFSSL_X509) *chain = NULL;
  if (wolfSSL_CTX_get0_chain_certs(ctx, &chain) == WOLFSSL_SUCCESS &&
      chain != NULL) {
    WOLFSSL_X509 *prev = leaf;
    for (int i = 0; i < wolfSSL_sk_X509_num(chain); i++) {
      WOLFSSL_X509 *next = wolfSSL_sk_X509_value(chain, i);
      if (wolfSSL_X509_NAME_cmp(wolfSSL_X509_get_issuer_name(prev),
                                wolfSSL_X509_get_subject_name(next)) != 0) {
        snprintf(err, cap,
                 "%s: certificate %d is not issued by the one after it "
                 "(the chain is out of order or incomplete)",
                 cert, i + 1);
        goto done;
      }
      prev = next;
    }
  }
  rv = 0;
done:
  wolfSSL_X509_free(leaf);
  wolfSSL_CTX_free(ctx);
  return rv;
}

const char *h3g_tls_version(void) { return wolfSSL_lib_version(); }
