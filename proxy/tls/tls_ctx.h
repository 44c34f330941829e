/*
 * TLS contexts (wolfSSL). The only modules that include wolfSSL are this one,
 * the QUIC connection module and (later) the TCP + TLS listener.
 */
#ifndef H3G_TLS_CTX_H
#define H3G_TLS_CTX_H

#include "common.h"
#include "config.h"

typedef struct h3g_tls_ctx h3g_tls_ctx;

/*
 * Initialises wolfSSL once per process and builds the QUIC server context:
 * TLS 1.3 only, ALPN "h3" (a client that offers no "h3" fails the handshake
 * with no_application_protocol), certificate chain and key from cfg,
 * session tickets on. Returns 0, H3G_ERR_TLS (with a logged reason: bad
 * certificate, key mismatch) or H3G_ERR_NOMEM.
 */
struct h3g_secrets;
/* ticket_context: what a resumed client remembers and relies on for 0-RTT
 * (transport parameters, HTTP/3 settings; see secrets.h). 0-RTT is
 * offered in tickets only when cfg->early_data is on. */
int h3g_tls_ctx_new_quic(h3g_tls_ctx **pctx, const h3g_config *cfg,
                         struct h3g_secrets *secrets,
                         const char *ticket_context);

/*
 * Builds the TCP listener's server context: TLS 1.2 and 1.3 (nothing
 * older), forward-secret AEAD suites, the same certificate chain and key,
 * session tickets on. ALPN is set per connection by the listener
 * (wolfSSL_UseALPN with "http/1.1" and continue-on-mismatch: this wolfSSL
 * build calls no select callback), so a client without ALPN, or offering
 * only protocols we lack, still gets HTTP/1.1. Returns as
 * h3g_tls_ctx_new_quic.
 */
int h3g_tls_ctx_new_tcp(h3g_tls_ctx **pctx, const h3g_config *cfg,
                        struct h3g_secrets *secrets);

void h3g_tls_ctx_free(h3g_tls_ctx *ctx);

/* The WOLFSSL_CTX * behind ctx (opaque here so callers need no wolfSSL). */
void *h3g_tls_ctx_native(h3g_tls_ctx *ctx);

/* wolfSSL's version string, for --version. */
const char *h3g_tls_version(void);

/*
 * --check-config's look at a listener's certificate chain file and key:
 * both readable, the key matching the first certificate, that certificate
 * valid now, and each certificate issued by the next one in the file.
 * Returns 0, or H3G_ERR_INVAL with the reason in err (cap bytes). A
 * certificate that expires within 14 days is fine but sets warn (wcap
 * bytes; "" when nothing to say).
 */
int h3g_tls_check_files(const char *cert, const char *key, char *err,
                        size_t cap, char *warn, size_t wcap);

/* Releases wolfSSL's process-wide state (at exit, for leak checkers). */
void h3g_tls_cleanup(void);

#endif /* H3G_TLS_CTX_H */
