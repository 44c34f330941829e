/*
 * Client TLS to upstream servers over memory buffers (wolfSSL).
 *
 * wolfSSL reads and writes through per-session I/O callbacks that move
 * bytes between it and two capped byte queues; the caller moves them
 * between the queues and the socket. The send callback is never refused in
 * practice: write() admits plaintext only while the worst-case ciphertext
 * of it fits below OUT_MAX - OUT_RESERVE, so what wolfSSL emits on its own
 * (handshake flights, alerts, key update replies) always has room, and a
 * record wolfSSL has started is never left half-buffered inside it.
 *
 * Resumption: wolfSSL hands each session that can resume (a TLS 1.3 ticket
 * arriving after the handshake, or a TLS 1.2 session) to on_new_session,
 * which keeps a copy in the context's table under the connection's server
 * name. wolfSSL's own process-wide cache is not used for these sessions
 * (NO_INTERNAL_STORE): the table is per context and bounded.
 */
#include "upstream_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* wolfSSL needs its build options before any of its headers. */
#include <wolfssl/options.h>

#include <wolfssl/error-ssl.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "buf.h"

/* Largest plaintext of one record (RFC 8446 §5.1). */
#define RECORD_MAX 16384
/* Most a record adds to its plaintext: header 5, TLS 1.2 explicit nonce 8
 * or TLS 1.3 content type 1, AEAD tag 16, rounded up generously. */
#define RECORD_OVERHEAD 64

typedef struct cached_session {
  char name[H3G_UPSTREAM_TLS_NAME_MAX + 1]; /* "" when the slot is free */
  WOLFSSL_SESSION *sess;
  uint64_t used; /* ctx->clock at the last store or offer */
} cached_session;

struct h3g_upstream_tls_ctx {
  WOLFSSL_CTX *ssl_ctx;
  int verify;
  uint64_t clock;
  cached_session cache[H3G_UPSTREAM_TLS_SESSIONS_MAX];
  /* Plaintext of iovs gathered into one record (sessions share it: one
   * thread, and no write() calls another). */
  uint8_t scratch[RECORD_MAX];
};

struct h3g_upstream_tls {
  h3g_upstream_tls_ctx *ctx;
  WOLFSSL *ssl;
  h3g_ring in;  /* ciphertext fed, not yet read by wolfSSL */
  h3g_ring out; /* ciphertext produced, not yet consumed */
  int handshake_done;
  int closing; /* close_notify queued */
  int peer_closed;
  int failed;       /* a fatal error was reported: every later call fails */
  int ip;           /* the server name is an IP address */
  int verify_err;   /* first certificate error the verify callback saw */
  int verify_depth; /* and where in the chain */
  char name[H3G_UPSTREAM_TLS_NAME_MAX + 1];
  char error[H3G_UPSTREAM_TLS_ERROR_MAX];
};

/* TLS 1.2 suites: forward-secret AEADs only; TLS 1.3 suites are all AEADs. */
static const char client_ciphers[] = "TLS13-AES128-GCM-SHA256:"
                                     "TLS13-AES256-GCM-SHA384:"
                                     "TLS13-CHACHA20-POLY1305-SHA256:"
                                     "ECDHE-ECDSA-AES128-GCM-SHA256:"
                                     "ECDHE-RSA-AES128-GCM-SHA256:"
                                     "ECDHE-ECDSA-AES256-GCM-SHA384:"
                                     "ECDHE-RSA-AES256-GCM-SHA384:"
                                     "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                     "ECDHE-RSA-CHACHA20-POLY1305";
static const char client_groups[] = "X25519:P-256:P-384:P-521";
static const char alpn_http11[] = "http/1.1";

static void fmt(char *buf, size_t len, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t len, const char *f, ...) {
  if (buf == NULL || len == 0)
    return;
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, len, f, ap);
  va_end(ap);
}

/* The reason of wolfSSL's last queued error, or of code when the queue is
 * empty. */
static const char *wolf_reason(int code) {
  unsigned long e = wolfSSL_ERR_get_error();
  const char *r = NULL;
  if (e != 0)
    r = wolfSSL_ERR_reason_error_string(e);
  if (r == NULL && code != 0)
    r = wolfSSL_ERR_reason_error_string((unsigned long)code);
  return r != NULL ? r : "no detail";
}

/* ---- context ------------------------------------------------------------ */

/* Checks that path can be opened for reading, so the reason names errno
 * rather than wolfSSL's "bad file". */
static int readable(const char *what, const char *path, char *err,
                    size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fmt(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
    return H3G_ERR_IO;
  }
  fclose(f);
  return 0;
}

static cached_session *cache_find(h3g_upstream_tls_ctx *ctx, const char *name) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(ctx->cache); i++)
    if (ctx->cache[i].sess != NULL && strcmp(ctx->cache[i].name, name) == 0)
      return &ctx->cache[i];
  return NULL;
}

/* The slot for name: its own, a free one, or the least recently used. */
static cached_session *cache_slot(h3g_upstream_tls_ctx *ctx, const char *name) {
  cached_session *c = cache_find(ctx, name), *lru = NULL;
  if (c != NULL)
    return c;
  for (size_t i = 0; i < H3G_ARRAY_LEN(ctx->cache); i++) {
    c = &ctx->cache[i];
    if (c->sess == NULL)
      return c;
    if (lru == NULL || c->used < lru->used)
      lru = c;
  }
  return lru;
}

/*
 * wolfSSL calls this with each session that may be resumed. It keeps
 * ownership of sess (we return 0), which its connection goes on updating,
 * so the cache keeps a copy of its own.
 */
static int on_new_session(WOLFSSL *ssl, WOLFSSL_SESSION *sess) {
  h3g_upstream_tls *s = wolfSSL_get_app_data(ssl);
  if (s == NULL || !wolfSSL_SESSION_is_resumable(sess))
    return 0;
  WOLFSSL_SESSION *copy = wolfSSL_SESSION_dup(sess);
  if (copy == NULL)
    return 0;
  h3g_upstream_tls_ctx *ctx = s->ctx;
  cached_session *c = cache_slot(ctx, s->name);
  wolfSSL_SESSION_free(c->sess);
  c->sess = copy;
  memcpy(c->name, s->name, sizeof(c->name));
  c->used = ++ctx->clock;
  return 0;
}

/* Keeps the first certificate error of the handshake for the reason; the
 * verdict stays wolfSSL's. */
static int on_verify(int preverify, WOLFSSL_X509_STORE_CTX *store) {
  if (preverify)
    return preverify;
  WOLFSSL *ssl = wolfSSL_X509_STORE_CTX_get_ex_data(
      store, wolfSSL_get_ex_data_X509_STORE_CTX_idx());
  h3g_upstream_tls *s = ssl != NULL ? wolfSSL_get_app_data(ssl) : NULL;
  if (s != NULL && s->verify_err == 0) {
    s->verify_err = wolfSSL_X509_STORE_CTX_get_error(store);
    s->verify_depth = wolfSSL_X509_STORE_CTX_get_error_depth(store);
    if (s->verify_err == 0)
      s->verify_err = VERIFY_CERT_ERROR;
  }
  return preverify;
}

static int ctx_load(h3g_upstream_tls_ctx *ctx,
                    const h3g_upstream_tls_config *cfg, char *err,
                    size_t errlen) {
  WOLFSSL_CTX *c = ctx->ssl_ctx;
  int rv;
  if (wolfSSL_CTX_SetMinVersion(c, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
      wolfSSL_CTX_set_cipher_list(c, client_ciphers) != WOLFSSL_SUCCESS ||
      wolfSSL_CTX_set1_curves_list(c, client_groups) != WOLFSSL_SUCCESS) {
    fmt(err, errlen, "cannot set TLS versions, suites or groups: %s",
        wolf_reason(0));
    return H3G_ERR_TLS;
  }
  if (cfg->verify) {
    const char *ca = cfg->ca_file;
    if (ca == NULL || strcmp(ca, "system") == 0) {
      if (wolfSSL_CTX_load_system_CA_certs(c) != WOLFSSL_SUCCESS) {
        fmt(err, errlen, "cannot load the system CA store: %s", wolf_reason(0));
        return H3G_ERR_TLS;
      }
    } else {
      if ((rv = readable("CA file", ca, err, errlen)) != 0)
        return rv;
      if (wolfSSL_CTX_load_verify_locations(c, ca, NULL) != WOLFSSL_SUCCESS) {
        fmt(err, errlen, "CA file %s holds no usable certificate: %s", ca,
            wolf_reason(0));
        return H3G_ERR_TLS;
      }
    }
    wolfSSL_CTX_set_verify(c, WOLFSSL_VERIFY_PEER, on_verify);
  } else {
    wolfSSL_CTX_set_verify(c, WOLFSSL_VERIFY_NONE, NULL);
  }
  if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
    fmt(err, errlen,
        "a client certificate needs both a certificate "
        "and a key file");
    return H3G_ERR_INVAL;
  }
  if (cfg->cert_file != NULL) {
    if ((rv = readable("client certificate", cfg->cert_file, err, errlen)) ||
        (rv = readable("client key", cfg->key_file, err, errlen)))
      return rv;
    if (wolfSSL_CTX_use_certificate_chain_file(c, cfg->cert_file) !=
        WOLFSSL_SUCCESS) {
      fmt(err, errlen, "client certificate %s: %s", cfg->cert_file,
          wolf_reason(0));
      return H3G_ERR_TLS;
    }
    if (wolfSSL_CTX_use_PrivateKey_file(
            c, cfg->key_file, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
      fmt(err, errlen, "client key %s: %s", cfg->key_file, wolf_reason(0));
      return H3G_ERR_TLS;
    }
    if (wolfSSL_CTX_check_private_key(c) != WOLFSSL_SUCCESS) {
      fmt(err, errlen, "client key %s does not match certificate %s",
          cfg->key_file, cfg->cert_file);
      return H3G_ERR_TLS;
    }
  }
#ifdef HAVE_SESSION_TICKET
  wolfSSL_CTX_UseSessionTicket(c); /* TLS 1.2 tickets (RFC 5077) */
#endif
  wolfSSL_CTX_set_session_cache_mode(c, WOLFSSL_SESS_CACHE_CLIENT |
                                            WOLFSSL_SESS_CACHE_NO_INTERNAL);
  wolfSSL_CTX_sess_set_new_cb(c, on_new_session);
  return 0;
}

int h3g_upstream_tls_ctx_new(h3g_upstream_tls_ctx **pctx,
                             const h3g_upstream_tls_config *cfg, char *err,
                             size_t errlen) {
  *pctx = NULL;
  fmt(err, errlen, "%s", "");
  if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
    fmt(err, errlen, "cannot initialise wolfSSL");
    return H3G_ERR_TLS;
  }
  h3g_upstream_tls_ctx *ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL) {
    wolfSSL_Cleanup();
    fmt(err, errlen, "out of memory");
    return H3G_ERR_NOMEM;
  }
  ctx->verify = cfg->verify != 0;
  ctx->ssl_ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
  if (ctx->ssl_ctx == NULL) {
    free(ctx);
    wolfSSL_Cleanup();
    fmt(err, errlen, "out of memory");
    return H3G_ERR_NOMEM;
  }
  int rv = ctx_load(ctx, cfg, err, errlen);
  if (rv != 0) {
    h3g_upstream_tls_ctx_free(ctx);
    return rv;
  }
  *pctx = ctx;
  return 0;
}

void h3g_upstream_tls_ctx_free(h3g_upstream_tls_ctx *ctx) {
  if (ctx == NULL)
    return;
  for (size_t i = 0; i < H3G_ARRAY_LEN(ctx->cache); i++)
    wolfSSL_SESSION_free(ctx->cache[i].sess);
  wolfSSL_CTX_free(ctx->ssl_ctx);
  free(ctx);
  wolfSSL_Cleanup();
}

size_t h3g_upstream_tls_ctx_cached(const h3g_upstream_tls_ctx *ctx) {
  size_t n = 0;
  for (size_t i = 0; i < H3G_ARRAY_LEN(ctx->cache); i++)
    n += ctx->cache[i].sess != NULL;
  return n;
}

/* ---- I/O callbacks over the queues -------------------------------------- */

static int on_io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg) {
  H3G_UNUSED(ssl);
  h3g_upstream_tls *s = arg;
  if (h3g_ring_unsent(&s->in) == 0)
    return WOLFSSL_CBIO_ERR_WANT_READ;
  h3g_iovec v[4];
  size_t nv = h3g_ring_peek(&s->in, (size_t)sz, v, H3G_ARRAY_LEN(v)), got = 0;
  for (size_t i = 0; i < nv; i++) {
    memcpy(buf + got, v[i].base, v[i].len);
    got += v[i].len;
  }
  h3g_ring_skip(&s->in, got);
  h3g_ring_release(&s->in, got);
  return (int)got;
}

static int on_io_send(WOLFSSL *ssl, char *buf, int sz, void *arg) {
  H3G_UNUSED(ssl);
  h3g_upstream_tls *s = arg;
  size_t len = (size_t)sz;
  if (h3g_ring_space(&s->out) < len) {
    /* Cannot happen while write() keeps the reserve; wolfSSL keeps the
     * bytes and sends them on its next call. */
    return WOLFSSL_CBIO_ERR_WANT_WRITE;
  }
  if (h3g_ring_write(&s->out, (const uint8_t *)buf, len) != 0)
    return WOLFSSL_CBIO_ERR_GENERAL;
  return sz;
}

/* ---- IP addresses in the certificate --------------------------------------
 */

/*
 * This wolfSSL build does not keep the iPAddress entries of a certificate's
 * subjectAltName (it lacks WOLFSSL_IP_ALT_NAME), so neither its IP check
 * nor wolfSSL_X509_check_ip_asc can succeed. The leaf's DER is walked here
 * instead: Certificate > tbsCertificate > [3] extensions > the extension
 * 2.5.29.17 > GeneralNames > [7] iPAddress (RFC 5280 §4.1, §4.2.1.6).
 */

/* Reads one DER element at *p (before end): its tag, and its contents in
 * *v, *vlen; moves *p past it. Returns 0 or -1 when malformed. */
static int der_next(const uint8_t **p, const uint8_t *end, uint8_t *tag,
                    const uint8_t **v, size_t *vlen) {
  const uint8_t *q = *p;
  if (end - q < 2)
    return -1;
  *tag = *q++;
  size_t len = *q++;
  if (len & 0x80) {
    size_t n = len & 0x7f;
    if (n == 0 || n > 4 || (size_t)(end - q) < n)
      return -1;
    len = 0;
    while (n--)
      len = (len << 8) | *q++;
  }
  if ((size_t)(end - q) < len)
    return -1;
  *v = q;
  *vlen = len;
  *p = q + len;
  return 0;
}

/* Enters the element at *p, which must have tag want: [*p, *end) becomes
 * its contents. */
static int der_enter(const uint8_t **p, const uint8_t **end, uint8_t want) {
  uint8_t tag;
  const uint8_t *v;
  size_t vlen;
  if (der_next(p, *end, &tag, &v, &vlen) != 0 || tag != want)
    return -1;
  *p = v;
  *end = v + vlen;
  return 0;
}

/* 1 when the certificate der lists the address ip (4 or 16 bytes) among
 * its subjectAltName iPAddress entries, else 0. */
static int cert_has_ip(const uint8_t *der, size_t len, const uint8_t *ip,
                       size_t iplen) {
  static const uint8_t san_oid[] = {0x55, 0x1d, 0x11};
  const uint8_t *p = der, *end = der + len, *v;
  size_t vlen;
  uint8_t tag;
  if (der_enter(&p, &end, 0x30) != 0 || der_enter(&p, &end, 0x30) != 0)
    return 0;
  while (p < end) { /* the fields of tbsCertificate */
    if (der_next(&p, end, &tag, &v, &vlen) != 0)
      return 0;
    if (tag != 0xa3)
      continue;
    const uint8_t *e = v, *eend = v + vlen;
    if (der_enter(&e, &eend, 0x30) != 0)
      return 0;
    while (e < eend) { /* each Extension */
      const uint8_t *x, *xend;
      if (der_next(&e, eend, &tag, &x, &vlen) != 0 || tag != 0x30)
        return 0;
      xend = x + vlen;
      if (der_next(&x, xend, &tag, &v, &vlen) != 0 || tag != 0x06)
        return 0;
      if (vlen != sizeof(san_oid) || memcmp(v, san_oid, vlen) != 0)
        continue;
      if (der_next(&x, xend, &tag, &v, &vlen) != 0)
        return 0;
      if (tag == 0x01 && der_next(&x, xend, &tag, &v, &vlen) != 0)
        return 0; /* critical */
      if (tag != 0x04)
        return 0;
      const uint8_t *g = v, *gend = v + vlen;
      if (der_enter(&g, &gend, 0x30) != 0)
        return 0;
      while (g < gend) { /* each GeneralName */
        if (der_next(&g, gend, &tag, &v, &vlen) != 0)
          return 0;
        if (tag == 0x87 && vlen == iplen && memcmp(v, ip, iplen) == 0)
          return 1;
      }
      return 0;
    }
    return 0;
  }
  return 0;
}

/* With verification on and an IP address for a name, checks it against
 * the server's certificate once the handshake is done (a resumed session
 * was checked when it was made). Returns 0 or H3G_ERR_TLS with the reason
 * set. */
static int check_ip(h3g_upstream_tls *s) {
  if (!s->ip || !s->ctx->verify || wolfSSL_session_reused(s->ssl) == 1)
    return 0;
  uint8_t addr[16];
  size_t alen = 4;
  if (inet_pton(AF_INET, s->name, addr) != 1) {
    alen = 16;
    if (inet_pton(AF_INET6, s->name, addr) != 1)
      return H3G_ERR_TLS;
  }
  int found = 0;
  WOLFSSL_X509 *x = wolfSSL_get_peer_certificate(s->ssl);
  if (x != NULL) {
    int dlen = 0;
    const unsigned char *der = wolfSSL_X509_get_der(x, &dlen);
    if (der != NULL && dlen > 0)
      found = cert_has_ip(der, (size_t)dlen, addr, alen);
    wolfSSL_X509_free(x);
  }
  if (found)
    return 0;
  /* A TLS 1.2 session is handed over before this check: never offer it. */
  cached_session *c = cache_find(s->ctx, s->name);
  if (c != NULL) {
    wolfSSL_SESSION_free(c->sess);
    c->sess = NULL;
    c->name[0] = '\0';
  }
  fmt(s->error, sizeof(s->error),
      "certificate verify failed: certificate does not match %s", s->name);
  return H3G_ERR_TLS;
}

/* ---- session ------------------------------------------------------------ */

int h3g_upstream_tls_new(h3g_upstream_tls **ps, h3g_upstream_tls_ctx *ctx,
                         const char *sni) {
  *ps = NULL;
  size_t nlen = sni != NULL ? strlen(sni) : 0;
  if (nlen == 0 || nlen > H3G_UPSTREAM_TLS_NAME_MAX)
    return H3G_ERR_INVAL;
  h3g_upstream_tls *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return H3G_ERR_NOMEM;
  s->ctx = ctx;
  memcpy(s->name, sni, nlen + 1);
  h3g_ring_init(&s->in, H3G_UPSTREAM_TLS_IN_MAX);
  h3g_ring_init(&s->out, H3G_UPSTREAM_TLS_OUT_MAX);
  unsigned char addr[16];
  s->ip =
      inet_pton(AF_INET, sni, addr) == 1 || inet_pton(AF_INET6, sni, addr) == 1;

  s->ssl = wolfSSL_new(ctx->ssl_ctx);
  if (s->ssl == NULL) {
    free(s);
    return H3G_ERR_NOMEM;
  }
  WOLFSSL *ssl = s->ssl;
  wolfSSL_set_app_data(ssl, s);
  wolfSSL_SSLSetIORecv(ssl, on_io_recv);
  wolfSSL_SSLSetIOSend(ssl, on_io_send);
  wolfSSL_SetIOReadCtx(ssl, s);
  wolfSSL_SetIOWriteCtx(ssl, s);
  wolfSSL_set_connect_state(ssl);

  int ok =
      wolfSSL_UseALPN(ssl, (char *)alpn_http11, sizeof(alpn_http11) - 1,
                      WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) == WOLFSSL_SUCCESS;
  if (ok && !s->ip)
    ok = wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, sni,
                        (unsigned short)nlen) == WOLFSSL_SUCCESS;
  if (ok && ctx->verify && !s->ip) /* an IP address: check_ip() */
    ok = wolfSSL_check_domain_name(ssl, sni) == WOLFSSL_SUCCESS;
  if (!ok) {
    h3g_upstream_tls_free(s);
    return H3G_ERR_TLS;
  }
  cached_session *c = cache_find(ctx, s->name);
  if (c != NULL) {
    /* A session that cannot be set (expired) is dropped; the handshake
     * goes on in full. */
    if (wolfSSL_set_session(ssl, c->sess) == WOLFSSL_SUCCESS) {
      c->used = ++ctx->clock;
    } else {
      wolfSSL_SESSION_free(c->sess);
      c->sess = NULL;
      c->name[0] = '\0';
    }
  }
  *ps = s;
  return 0;
}

void h3g_upstream_tls_free(h3g_upstream_tls *s) {
  if (s == NULL)
    return;
  wolfSSL_free(s->ssl);
  h3g_ring_free(&s->in);
  h3g_ring_free(&s->out);
  free(s);
}

int h3g_upstream_tls_feed(h3g_upstream_tls *s, const uint8_t *data,
                          size_t len) {
  if (len == 0)
    return 0;
  return h3g_ring_write(&s->in, data, len);
}

size_t h3g_upstream_tls_input_room(const h3g_upstream_tls *s) {
  return h3g_ring_space(&s->in);
}

/* The names of the alerts of RFC 8446 §6 (wolfSSL's table lacks the TLS
 * 1.3 ones). */
static const char *alert_name(int code) {
  switch (code) {
  case 0: return "close_notify";
  case 10: return "unexpected_message";
  case 20: return "bad_record_mac";
  case 22: return "record_overflow";
  case 40: return "handshake_failure";
  case 42: return "bad_certificate";
  case 43: return "unsupported_certificate";
  case 44: return "certificate_revoked";
  case 45: return "certificate_expired";
  case 46: return "certificate_unknown";
  case 47: return "illegal_parameter";
  case 48: return "unknown_ca";
  case 49: return "access_denied";
  case 50: return "decode_error";
  case 51: return "decrypt_error";
  case 70: return "protocol_version";
  case 71: return "insufficient_security";
  case 80: return "internal_error";
  case 86: return "inappropriate_fallback";
  case 90: return "user_canceled";
  case 109: return "missing_extension";
  case 110: return "unsupported_extension";
  case 112: return "unrecognized_name";
  case 116: return "certificate_required";
  case 120: return "no_application_protocol";
  default: return "unknown";
  }
}

/* What a certificate error means, in words, for the common ones. */
static const char *cert_error_text(int code) {
  switch (code) {
  case ASN_NO_SIGNER_E: return "no trusted CA signed it";
  case ASN_SIG_CONFIRM_E: return "its signature does not verify";
  case ASN_AFTER_DATE_E: return "it has expired";
  case ASN_BEFORE_DATE_E: return "it is not valid yet";
  case ASN_SELF_SIGNED_E: return "it is self-signed";
  case ASN_PATHLEN_SIZE_E:
  case ASN_PATHLEN_INV_E: return "the chain is longer than a CA allows";
  default: {
    const char *r = wolfSSL_ERR_reason_error_string((unsigned long)code);
    return r != NULL ? r : "unknown error";
  }
  }
}

/* Sets the reason of a failure with wolfSSL's error code err. */
static int fail(h3g_upstream_tls *s, int err) {
  if (s->verify_err == DOMAIN_NAME_MISMATCH || err == DOMAIN_NAME_MISMATCH ||
      s->verify_err == IPADDR_MISMATCH || err == IPADDR_MISMATCH) {
    fmt(s->error, sizeof(s->error),
        "certificate verify failed: certificate does not match %s", s->name);
  } else if (s->verify_err != 0) {
    fmt(s->error, sizeof(s->error),
        "certificate verify failed: %s (certificate %d of the chain, "
        "error %d)",
        cert_error_text(s->verify_err), s->verify_depth, s->verify_err);
  } else if (err == FATAL_ERROR) {
    WOLFSSL_ALERT_HISTORY h;
    memset(&h, 0, sizeof(h));
    wolfSSL_get_alert_history(s->ssl, &h);
    fmt(s->error, sizeof(s->error), "the server sent the alert %s (%d)",
        alert_name(h.last_rx.code), h.last_rx.code);
  } else {
    fmt(s->error, sizeof(s->error), "%s (%d)", wolf_reason(err), err);
  }
  wolfSSL_ERR_clear_error();
  s->failed = 1;
  return H3G_ERR_TLS;
}

int h3g_upstream_tls_handshake(h3g_upstream_tls *s) {
  if (s->handshake_done)
    return 0;
  if (s->failed)
    return H3G_ERR_TLS;
  int ret = wolfSSL_connect(s->ssl);
  if (ret == WOLFSSL_SUCCESS) {
    if (check_ip(s) != 0) {
      s->failed = 1;
      return H3G_ERR_TLS;
    }
    s->handshake_done = 1;
    return 0;
  }
  int err = wolfSSL_get_error(s->ssl, ret);
  if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
    return H3G_ERR_AGAIN;
  return fail(s, err);
}

int h3g_upstream_tls_write(h3g_upstream_tls *s, const h3g_iovec *iov,
                           size_t n) {
  if (s->failed)
    return H3G_ERR_TLS;
  if (!s->handshake_done)
    return H3G_ERR_AGAIN;
  if (s->closing)
    return H3G_ERR_CLOSED;
  size_t taken = 0, i = 0, off = 0;
  uint8_t *scratch = s->ctx->scratch;
  for (;;) {
    while (i < n && off == iov[i].len) {
      i++;
      off = 0;
    }
    if (i == n)
      break;
    size_t space = h3g_ring_space(&s->out);
    size_t limit = space > H3G_UPSTREAM_TLS_OUT_RESERVE + RECORD_OVERHEAD
                       ? space - H3G_UPSTREAM_TLS_OUT_RESERVE - RECORD_OVERHEAD
                       : 0;
    limit = H3G_MIN(limit, RECORD_MAX);
    if (limit == 0)
      break;
    /* One record: straight from iov when one element fills it, else the
     * elements gathered into the scratch buffer. */
    const uint8_t *rec;
    size_t len = H3G_MIN(iov[i].len - off, limit);
    if (len == limit || i + 1 == n) {
      rec = iov[i].base + off;
      off += len;
    } else {
      len = 0;
      while (i < n && len < limit) {
        size_t k = H3G_MIN(iov[i].len - off, limit - len);
        memcpy(scratch + len, iov[i].base + off, k);
        len += k;
        off += k;
        if (off == iov[i].len) {
          i++;
          off = 0;
        }
      }
      rec = scratch;
    }
    int ret = wolfSSL_write(s->ssl, rec, (int)len);
    if (ret != (int)len) {
      int err = wolfSSL_get_error(s->ssl, ret);
      /* The admission above leaves room for every record. */
      return fail(s, err);
    }
    taken += len;
  }
  if (taken == 0) {
    for (size_t k = 0; k < n; k++)
      if (iov[k].len > 0)
        return H3G_ERR_AGAIN;
  }
  return (int)taken;
}

int h3g_upstream_tls_read(h3g_upstream_tls *s, uint8_t *buf, size_t cap) {
  if (s->failed)
    return H3G_ERR_TLS;
  if (!s->handshake_done)
    return H3G_ERR_AGAIN;
  if (s->peer_closed)
    return H3G_ERR_CLOSED;
  if (cap == 0)
    return 0;
  int ret = wolfSSL_read(s->ssl, buf, (int)H3G_MIN(cap, (size_t)INT_MAX));
  if (ret > 0)
    return ret;
  int err = wolfSSL_get_error(s->ssl, ret);
  if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
    return 0;
  if (err == WOLFSSL_ERROR_ZERO_RETURN) {
    s->peer_closed = 1;
    return H3G_ERR_CLOSED;
  }
  return fail(s, err);
}

int h3g_upstream_tls_has_input(const h3g_upstream_tls *s) {
  return h3g_ring_unsent(&s->in) > 0 || wolfSSL_pending(s->ssl) > 0;
}

void h3g_upstream_tls_pending_output(const h3g_upstream_tls *s,
                                     const uint8_t **ptr, size_t *len) {
  h3g_iovec v;
  if (h3g_ring_peek(&s->out, SIZE_MAX, &v, 1) == 0) {
    *ptr = NULL;
    *len = 0;
    return;
  }
  *ptr = v.base;
  *len = v.len;
}

size_t h3g_upstream_tls_output_len(const h3g_upstream_tls *s) {
  return h3g_ring_unsent(&s->out);
}

void h3g_upstream_tls_consume_output(h3g_upstream_tls *s, size_t n) {
  h3g_ring_skip(&s->out, n);
  h3g_ring_release(&s->out, n);
}

int h3g_upstream_tls_close_notify(h3g_upstream_tls *s) {
  if (s->closing)
    return 0;
  s->closing = 1;
  if (!s->handshake_done)
    return 0;
  int ret = wolfSSL_shutdown(s->ssl);
  if (ret == WOLFSSL_SUCCESS || ret == WOLFSSL_SHUTDOWN_NOT_DONE)
    return 0;
  int err = wolfSSL_get_error(s->ssl, ret);
  if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
    return 0;
  return fail(s, err);
}

int h3g_upstream_tls_resumed(const h3g_upstream_tls *s) {
  return s->handshake_done && wolfSSL_session_reused(s->ssl) == 1;
}

const char *h3g_upstream_tls_alpn(const h3g_upstream_tls *s) {
  char *proto = NULL;
  unsigned short len = 0;
  if (wolfSSL_ALPN_GetProtocol(s->ssl, &proto, &len) != WOLFSSL_SUCCESS ||
      proto == NULL)
    return NULL;
  /* The only protocol offered, so the only one the server may choose. */
  if (len == sizeof(alpn_http11) - 1 && memcmp(proto, alpn_http11, len) == 0)
    return alpn_http11;
  return NULL;
}

const char *h3g_upstream_tls_version(const h3g_upstream_tls *s) {
  return s->handshake_done ? wolfSSL_get_version(s->ssl) : "none";
}

const char *h3g_upstream_tls_error(const h3g_upstream_tls *s) {
  return s->error;
}
