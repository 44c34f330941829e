/*
 * upstream_tls.h against a wolfSSL server in this process: both sides talk
 * over memory, the test moves the bytes. Certificates are made at run time
 * (certs/make-certs.sh twice, for a right and a wrong CA, and openssl for a
 * client certificate).
 */
#include "upstream_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wolfssl/options.h>

#include <wolfssl/ssl.h>

#include "unit.h"

static char dir[64];   /* temporary folder of the run */
static char ca_a[128]; /* the CA that signed the server's certificate */
static char ca_b[128]; /* another CA (signed the client certificate) */
static char srv_chain[128], srv_key[128], cli_crt[128], cli_key[128];

static int make_certs(void) {
  const char *src = getenv("H3G_SRC");
  char cmd[2048];
  snprintf(dir, sizeof(dir), "/tmp/h3g_uptls_XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  snprintf(cmd, sizeof(cmd),
           "set -e; cd %s; bash %s/certs/make-certs.sh a 2>/dev/null;"
           " bash %s/certs/make-certs.sh b 2>/dev/null;"
           " openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
           " -out client.key 2>/dev/null;"
           " openssl req -new -key client.key -subj /CN=h3g-test-client"
           " -out client.csr;"
           " printf 'extendedKeyUsage = clientAuth\\n' > client.ext;"
           " openssl x509 -req -in client.csr -CA b/ca.crt -CAkey b/ca.key"
           " -set_serial 0x1234 -days 2 -sha256 -extfile client.ext"
           " -out client.crt 2>/dev/null",
           dir, src != NULL ? src : "../..", src != NULL ? src : "../..");
  if (system(cmd) != 0)
    return -1;
  snprintf(ca_a, sizeof(ca_a), "%s/a/ca.crt", dir);
  snprintf(ca_b, sizeof(ca_b), "%s/b/ca.crt", dir);
  snprintf(srv_chain, sizeof(srv_chain), "%s/a/server-chain.crt", dir);
  snprintf(srv_key, sizeof(srv_key), "%s/a/server.key", dir);
  snprintf(cli_crt, sizeof(cli_crt), "%s/client.crt", dir);
  snprintf(cli_key, sizeof(cli_key), "%s/client.key", dir);
  return 0;
}

/* ---- the server side, over growable memory pipes ------------------------ */

typedef struct pipe_buf {
  uint8_t *p;
  size_t off, len, cap;
} pipe_buf;

static void pipe_put(pipe_buf *b, const uint8_t *d, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

static size_t pipe_avail(const pipe_buf *b) {
  return b->len - b->off;
}

static void pipe_take(pipe_buf *b, size_t n) {
  b->off += n;
  if (b->off == b->len)
    b->off = b->len = 0;
}

typedef struct server {
  WOLFSSL_CTX *ctx;
  WOLFSSL *ssl;
  pipe_buf c2s, s2c;
  int accepted;
  char sni[256];
} server;

static int srv_recv(WOLFSSL *ssl, char *buf, int sz, void *arg) {
  (void)ssl;
  server *sv = arg;
  size_t n = pipe_avail(&sv->c2s);
  if (n == 0)
    return WOLFSSL_CBIO_ERR_WANT_READ;
  if (n > (size_t)sz)
    n = (size_t)sz;
  memcpy(buf, sv->c2s.p + sv->c2s.off, n);
  pipe_take(&sv->c2s, n);
  return (int)n;
}

static int srv_send(WOLFSSL *ssl, char *buf, int sz, void *arg) {
  (void)ssl;
  server *sv = arg;
  pipe_put(&sv->s2c, (const uint8_t *)buf, (size_t)sz);
  return sz;
}

/* A server context: TLS 1.3 (or 1.2 with tls12), the chain signed by CA
 * "a"; with client_ca, a client certificate signed by it is required. */
static WOLFSSL_CTX *server_ctx(int tls12, const char *client_ca) {
  WOLFSSL_CTX *c = wolfSSL_CTX_new(tls12 ? wolfTLSv1_2_server_method()
                                         : wolfTLSv1_3_server_method());
  CHECK(c != NULL);
  CHECK(wolfSSL_CTX_use_certificate_chain_file(c, srv_chain) ==
        WOLFSSL_SUCCESS);
  CHECK(wolfSSL_CTX_use_PrivateKey_file(c, srv_key, WOLFSSL_FILETYPE_PEM) ==
        WOLFSSL_SUCCESS);
  if (client_ca != NULL) {
    CHECK(wolfSSL_CTX_load_verify_locations(c, client_ca, NULL) ==
          WOLFSSL_SUCCESS);
    wolfSSL_CTX_set_verify(
        c, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  } else {
    wolfSSL_CTX_set_verify(c, WOLFSSL_VERIFY_NONE, NULL);
  }
  wolfSSL_CTX_SetIORecv(c, srv_recv);
  wolfSSL_CTX_SetIOSend(c, srv_send);
  return c;
}

static void server_start(server *sv, WOLFSSL_CTX *c) {
  memset(sv, 0, sizeof(*sv));
  sv->ctx = c;
  sv->ssl = wolfSSL_new(c);
  CHECK(sv->ssl != NULL);
  wolfSSL_SetIOReadCtx(sv->ssl, sv);
  wolfSSL_SetIOWriteCtx(sv->ssl, sv);
  static const char h11[] = "http/1.1";
  wolfSSL_UseALPN(sv->ssl, (char *)h11, sizeof(h11) - 1,
                  WOLFSSL_ALPN_CONTINUE_ON_MISMATCH);
  /* Answers whatever name is asked, and keeps it for the test to see. */
  wolfSSL_UseSNI(sv->ssl, WOLFSSL_SNI_HOST_NAME, "localhost", 9);
  wolfSSL_SNI_SetOptions(sv->ssl, WOLFSSL_SNI_HOST_NAME,
                         WOLFSSL_SNI_ANSWER_ON_MISMATCH);
}

static void server_end(server *sv) {
  wolfSSL_free(sv->ssl);
  free(sv->c2s.p);
  free(sv->s2c.p);
  sv->ssl = NULL;
  sv->c2s.p = sv->s2c.p = NULL;
}

/* Moves the client's pending output to the server and what the server sent
 * to the client, as much as the client takes. */
static void pump(h3g_upstream_tls *c, server *sv) {
  const uint8_t *p;
  size_t n;
  for (;;) {
    h3g_upstream_tls_pending_output(c, &p, &n);
    if (n == 0)
      break;
    pipe_put(&sv->c2s, p, n);
    h3g_upstream_tls_consume_output(c, n);
  }
  n = pipe_avail(&sv->s2c);
  size_t room = h3g_upstream_tls_input_room(c);
  if (n > room)
    n = room;
  if (n > 0) {
    CHECK_EQ_INT(h3g_upstream_tls_feed(c, sv->s2c.p + sv->s2c.off, n), 0);
    pipe_take(&sv->s2c, n);
  }
}

/* Runs both handshakes to their end; returns the client's last result. */
static int handshake(h3g_upstream_tls *c, server *sv) {
  int rc = H3G_ERR_AGAIN;
  for (int i = 0; i < 100; i++) {
    rc = h3g_upstream_tls_handshake(c);
    pump(c, sv);
    if (!sv->accepted) {
      int r = wolfSSL_accept(sv->ssl);
      if (r == WOLFSSL_SUCCESS)
        sv->accepted = 1;
      else if (wolfSSL_get_error(sv->ssl, r) != WOLFSSL_ERROR_WANT_READ)
        sv->accepted = -1;
    }
    pump(c, sv);
    if (rc == H3G_ERR_TLS || (rc == 0 && sv->accepted != 0))
      break;
  }
  if (sv->accepted == 1) {
    char *name = NULL;
    unsigned short len =
        wolfSSL_SNI_GetRequest(sv->ssl, WOLFSSL_SNI_HOST_NAME, (void **)&name);
    if (name != NULL && len < sizeof(sv->sni)) {
      memcpy(sv->sni, name, len);
      sv->sni[len] = '\0';
    }
  }
  return rc;
}

static h3g_upstream_tls_ctx *client_ctx(const char *ca, int verify,
                                        int with_cert) {
  h3g_upstream_tls_config cfg = {
      .ca_file = ca,
      .verify = verify,
      .cert_file = with_cert ? cli_crt : NULL,
      .key_file = with_cert ? cli_key : NULL,
  };
  h3g_upstream_tls_ctx *ctx = NULL;
  char err[256] = "";
  int rv = h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err));
  CHECK_EQ_INT(rv, 0);
  if (rv != 0)
    fprintf(stderr, "client context: %s\n", err);
  return ctx;
}

/* Lets the client read whatever the server sent (a session ticket). */
static void client_drain(h3g_upstream_tls *c, server *sv) {
  uint8_t buf[256];
  pump(c, sv);
  CHECK_EQ_INT(h3g_upstream_tls_read(c, buf, sizeof(buf)), 0);
}

/* ---- cases --------------------------------------------------------------- */

static void test_context_errors(void) {
  h3g_upstream_tls_ctx *ctx = (void *)1;
  char err[256];
  h3g_upstream_tls_config cfg = {.ca_file = "/nonexistent/ca.pem", .verify = 1};
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)),
               H3G_ERR_IO);
  CHECK(ctx == NULL);
  CHECK(strstr(err, "cannot read CA file /nonexistent/ca.pem") != NULL);
  CHECK(strstr(err, "No such file") != NULL);

  /* A file with no certificate in it. */
  char junk[128];
  snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
  FILE *f = fopen(junk, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs("not a certificate\n", f);
    fclose(f);
  }
  cfg.ca_file = junk;
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)),
               H3G_ERR_TLS);
  CHECK(strstr(err, junk) != NULL);

  /* Certificate without key, and a key that is not the certificate's. */
  cfg = (h3g_upstream_tls_config){.verify = 0, .cert_file = cli_crt};
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)),
               H3G_ERR_INVAL);
  cfg.key_file = srv_key;
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)),
               H3G_ERR_TLS);
  CHECK(strstr(err, "does not match") != NULL);
  cfg.key_file = "/nonexistent/key.pem";
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)),
               H3G_ERR_IO);
  CHECK(strstr(err, "cannot read client key /nonexistent/key.pem") != NULL);

  /* The system store (NULL and "system") loads on this machine. */
  cfg = (h3g_upstream_tls_config){.ca_file = NULL, .verify = 1};
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)), 0);
  h3g_upstream_tls_ctx_free(ctx);
  cfg.ca_file = "system";
  CHECK_EQ_INT(h3g_upstream_tls_ctx_new(&ctx, &cfg, err, sizeof(err)), 0);
  h3g_upstream_tls_ctx_free(ctx);

  /* Names a session refuses, and the NULL no-ops. */
  ctx = client_ctx(ca_a, 1, 0);
  h3g_upstream_tls *s = (void *)1;
  CHECK_EQ_INT(h3g_upstream_tls_new(&s, ctx, NULL), H3G_ERR_INVAL);
  CHECK(s == NULL);
  CHECK_EQ_INT(h3g_upstream_tls_new(&s, ctx, ""), H3G_ERR_INVAL);
  char longname[300];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  CHECK_EQ_INT(h3g_upstream_tls_new(&s, ctx, longname), H3G_ERR_INVAL);
  h3g_upstream_tls_free(NULL);
  h3g_upstream_tls_ctx_free(NULL);
  h3g_upstream_tls_ctx_free(ctx);
}

static uint8_t *pattern(size_t n, unsigned seed) {
  uint8_t *p = malloc(n ? n : 1);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (uint8_t)(x >> 16);
  }
  return p;
}

/* Client to server: n bytes in writes of two iov elements, read back by
 * the server byte for byte. */
static void send_to_server(h3g_upstream_tls *c, server *sv, size_t n) {
  uint8_t *data = pattern(n, (unsigned)n);
  uint8_t *got = malloc(n + 1);
  size_t sent = 0, recvd = 0;
  for (int rounds = 0; recvd < n && rounds < 10000; rounds++) {
    if (sent < n) {
      size_t left = n - sent, half = left / 2;
      h3g_iovec iov[2] = {{data + sent, half},
                          {data + sent + half, left - half}};
      int w = h3g_upstream_tls_write(c, iov, 2);
      CHECK(w > 0 || w == H3G_ERR_AGAIN);
      if (w > 0)
        sent += (size_t)w;
      CHECK(h3g_upstream_tls_output_len(c) <= H3G_UPSTREAM_TLS_OUT_MAX);
    }
    pump(c, sv);
    for (;;) {
      int r = wolfSSL_read(sv->ssl, got + recvd, (int)(n + 1 - recvd));
      if (r <= 0)
        break;
      recvd += (size_t)r;
    }
  }
  CHECK(sent == n);
  CHECK(recvd == n);
  CHECK(memcmp(got, data, n) == 0);
  free(data);
  free(got);
}

/* Server to client: n bytes, decrypted by the client into small and large
 * buffers alternately. */
static void send_to_client(h3g_upstream_tls *c, server *sv, size_t n) {
  uint8_t *data = pattern(n, (unsigned)n + 7);
  uint8_t *got = malloc(n + 1);
  size_t sent = 0, recvd = 0;
  for (int rounds = 0; recvd < n && rounds < 10000; rounds++) {
    if (sent < n) {
      size_t k = n - sent > 50000 ? 50000 : n - sent;
      int w = wolfSSL_write(sv->ssl, data + sent, (int)k);
      CHECK(w == (int)k);
      sent += k;
    }
    pump(c, sv);
    for (;;) {
      size_t cap = (rounds & 1) ? 1000 : n + 1 - recvd;
      if (cap > n + 1 - recvd)
        cap = n + 1 - recvd;
      int r = h3g_upstream_tls_read(c, got + recvd, cap);
      CHECK(r >= 0);
      if (r <= 0)
        break;
      recvd += (size_t)r;
      pump(c, sv);
    }
  }
  CHECK(recvd == n);
  CHECK(memcmp(got, data, n) == 0);
  free(data);
  free(got);
}

static void test_round_trip(void) {
  WOLFSSL_CTX *sc = server_ctx(0, NULL);
  h3g_upstream_tls_ctx *ctx = client_ctx(ca_a, 1, 0);
  h3g_upstream_tls *c = NULL;
  server sv;
  server_start(&sv, sc);
  CHECK_EQ_INT(h3g_upstream_tls_new(&c, ctx, "localhost"), 0);
  uint8_t one = 'x';
  h3g_iovec iov = {&one, 1};
  CHECK_EQ_INT(h3g_upstream_tls_write(c, &iov, 1), H3G_ERR_AGAIN);
  CHECK_EQ_INT(h3g_upstream_tls_read(c, &one, 1), H3G_ERR_AGAIN);
  CHECK_EQ_INT(handshake(c, &sv), 0);
  CHECK_EQ_INT(sv.accepted, 1);
  CHECK(strcmp(sv.sni, "localhost") == 0);
  CHECK(h3g_upstream_tls_alpn(c) != NULL &&
        strcmp(h3g_upstream_tls_alpn(c), "http/1.1") == 0);
  CHECK(strcmp(h3g_upstream_tls_version(c), "TLSv1.3") == 0);
  CHECK_EQ_INT(h3g_upstream_tls_resumed(c), 0);
  CHECK(strcmp(h3g_upstream_tls_error(c), "") == 0);
  static const size_t sizes[] = {1, 64 * 1024, 1024 * 1024};
  for (size_t i = 0; i < H3G_ARRAY_LEN(sizes); i++) {
    send_to_server(c, &sv, sizes[i]);
    send_to_client(c, &sv, sizes[i]);
  }
  /* close_notify both ways. */
  CHECK_EQ_INT(h3g_upstream_tls_close_notify(c), 0);
  CHECK_EQ_INT(h3g_upstream_tls_write(c, &iov, 1), H3G_ERR_CLOSED);
  pump(c, &sv);
  uint8_t b[16];
  int r = wolfSSL_read(sv.ssl, b, sizeof(b));
  CHECK(r <= 0 && wolfSSL_get_error(sv.ssl, r) == WOLFSSL_ERROR_ZERO_RETURN);
  wolfSSL_shutdown(sv.ssl);
  pump(c, &sv);
  CHECK_EQ_INT(h3g_upstream_tls_read(c, b, sizeof(b)), H3G_ERR_CLOSED);
  CHECK_EQ_INT(h3g_upstream_tls_read(c, b, sizeof(b)), H3G_ERR_CLOSED);
  h3g_upstream_tls_free(c);
  server_end(&sv);
  h3g_upstream_tls_ctx_free(ctx);
  wolfSSL_CTX_free(sc);
}

/* The caps hold: feed refuses past the input cap, and one write takes no
 * more than the output buffer holds. */
static void test_caps(void) {
  WOLFSSL_CTX *sc = server_ctx(0, NULL);
  h3g_upstream_tls_ctx *ctx = client_ctx(ca_a, 1, 0);
  h3g_upstream_tls *c = NULL;
  server sv;
  server_start(&sv, sc);
  CHECK_EQ_INT(h3g_upstream_tls_new(&c, ctx, "localhost"), 0);
  CHECK_EQ_INT(handshake(c, &sv), 0);
  client_drain(c, &sv);
  size_t n = 1024 * 1024;
  uint8_t *data = pattern(n, 1);
  h3g_iovec iov = {data, n};
  int w = h3g_upstream_tls_write(c, &iov, 1);
  CHECK(w > 0 && (size_t)w < n);
  CHECK(h3g_upstream_tls_output_len(c) <= H3G_UPSTREAM_TLS_OUT_MAX);
  iov.base += w;
  iov.len -= (size_t)w;
  CHECK_EQ_INT(h3g_upstream_tls_write(c, &iov, 1), H3G_ERR_AGAIN);
  /* Once sent, more is taken. */
  pump(c, &sv);
  CHECK(h3g_upstream_tls_write(c, &iov, 1) > 0);
  CHECK_EQ_INT(h3g_upstream_tls_input_room(c), H3G_UPSTREAM_TLS_IN_MAX);
  CHECK_EQ_INT(h3g_upstream_tls_feed(c, data, H3G_UPSTREAM_TLS_IN_MAX + 1),
               H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h3g_upstream_tls_input_room(c), H3G_UPSTREAM_TLS_IN_MAX);
  CHECK_EQ_INT(h3g_upstream_tls_feed(c, data, H3G_UPSTREAM_TLS_IN_MAX), 0);
  CHECK_EQ_INT(h3g_upstream_tls_input_room(c), 0);
  CHECK_EQ_INT(h3g_upstream_tls_has_input(c), 1);
  CHECK_EQ_INT(h3g_upstream_tls_feed(c, data, 1), H3G_ERR_TOOBIG);
  /* Garbage as records: a TLS error with a reason. */
  uint8_t b[64];
  CHECK_EQ_INT(h3g_upstream_tls_read(c, b, sizeof(b)), H3G_ERR_TLS);
  CHECK(strlen(h3g_upstream_tls_error(c)) > 0);
  CHECK_EQ_INT(h3g_upstream_tls_read(c, b, sizeof(b)), H3G_ERR_TLS);
  CHECK_EQ_INT(h3g_upstream_tls_write(c, &iov, 1), H3G_ERR_TLS);
  free(data);
  h3g_upstream_tls_free(c);
  server_end(&sv);
  h3g_upstream_tls_ctx_free(ctx);
  wolfSSL_CTX_free(sc);
}

/* One connection with a client context; returns the handshake's result
 * and copies the client's reason into why. */
static int connect_once(WOLFSSL_CTX *sc, h3g_upstream_tls_ctx *ctx,
                        const char *name, char *why, size_t whylen,
                        int *resumed, server *keep) {
  h3g_upstream_tls *c = NULL;
  server sv;
  server_start(&sv, sc);
  CHECK_EQ_INT(h3g_upstream_tls_new(&c, ctx, name), 0);
  int rc = c != NULL ? handshake(c, &sv) : H3G_ERR_INVAL;
  if (c != NULL) {
    snprintf(why, whylen, "%s", h3g_upstream_tls_error(c));
    if (rc == 0 && sv.accepted == 1)
      client_drain(c, &sv); /* the ticket, if any */
    if (resumed != NULL)
      *resumed = h3g_upstream_tls_resumed(c);
  }
  h3g_upstream_tls_free(c);
  if (keep != NULL) {
    *keep = sv;
  } else {
    server_end(&sv);
  }
  return rc;
}

static void test_verify(void) {
  WOLFSSL_CTX *sc = server_ctx(0, NULL);
  char why[256];
  /* The right CA and name. */
  h3g_upstream_tls_ctx *ok = client_ctx(ca_a, 1, 0);
  CHECK_EQ_INT(connect_once(sc, ok, "localhost", why, sizeof(why), NULL, NULL),
               0);
  /* The certificate's IP address; not sent as SNI. */
  server sv;
  CHECK_EQ_INT(connect_once(sc, ok, "127.0.0.1", why, sizeof(why), NULL, &sv),
               0);
  CHECK(strcmp(sv.sni, "") == 0);
  server_end(&sv);
  /* A name the certificate does not carry. */
  CHECK_EQ_INT(
      connect_once(sc, ok, "other.example", why, sizeof(why), NULL, NULL),
      H3G_ERR_TLS);
  CHECK(strstr(why, "does not match other.example") != NULL);
  fprintf(stderr, "name mismatch: %s\n", why);
  CHECK_EQ_INT(connect_once(sc, ok, "127.0.0.2", why, sizeof(why), NULL, NULL),
               H3G_ERR_TLS);
  CHECK(strstr(why, "does not match 127.0.0.2") != NULL);
  /* The wrong CA. */
  h3g_upstream_tls_ctx *wrong = client_ctx(ca_b, 1, 0);
  CHECK_EQ_INT(
      connect_once(sc, wrong, "localhost", why, sizeof(why), NULL, NULL),
      H3G_ERR_TLS);
  CHECK(strstr(why, "certificate verify failed") != NULL);
  fprintf(stderr, "wrong CA: %s\n", why);
  /* The system store does not know the test CA. */
  h3g_upstream_tls_ctx *sys = client_ctx("system", 1, 0);
  CHECK_EQ_INT(connect_once(sc, sys, "localhost", why, sizeof(why), NULL, NULL),
               H3G_ERR_TLS);
  CHECK(strstr(why, "certificate verify failed") != NULL);
  fprintf(stderr, "system store: %s\n", why);
  /* Verification off: the wrong CA and the wrong name pass. */
  h3g_upstream_tls_ctx *off = client_ctx(ca_b, 0, 0);
  CHECK_EQ_INT(
      connect_once(sc, off, "other.example", why, sizeof(why), NULL, NULL), 0);
  h3g_upstream_tls_ctx_free(ok);
  h3g_upstream_tls_ctx_free(wrong);
  h3g_upstream_tls_ctx_free(sys);
  h3g_upstream_tls_ctx_free(off);
  wolfSSL_CTX_free(sc);
}

static void resumption(int tls12) {
  WOLFSSL_CTX *sc = server_ctx(tls12, NULL);
  h3g_upstream_tls_ctx *ctx = client_ctx(ca_a, 1, 0);
  char why[256];
  int resumed = -1;
  CHECK_EQ_INT(h3g_upstream_tls_ctx_cached(ctx), 0);
  CHECK_EQ_INT(
      connect_once(sc, ctx, "localhost", why, sizeof(why), &resumed, NULL), 0);
  CHECK_EQ_INT(resumed, 0);
  CHECK_EQ_INT(h3g_upstream_tls_ctx_cached(ctx), 1);
  CHECK_EQ_INT(
      connect_once(sc, ctx, "localhost", why, sizeof(why), &resumed, NULL), 0);
  CHECK_EQ_INT(resumed, 1);
  /* Again, with the ticket the resumed connection got. */
  CHECK_EQ_INT(
      connect_once(sc, ctx, "localhost", why, sizeof(why), &resumed, NULL), 0);
  CHECK_EQ_INT(resumed, 1);
  /* Another name has no session of its own. */
  CHECK_EQ_INT(
      connect_once(sc, ctx, "127.0.0.1", why, sizeof(why), &resumed, NULL), 0);
  CHECK_EQ_INT(resumed, 0);
  CHECK_EQ_INT(h3g_upstream_tls_ctx_cached(ctx), 2);
  /* Another context does not offer this one's sessions. */
  h3g_upstream_tls_ctx *other = client_ctx(ca_a, 1, 0);
  CHECK_EQ_INT(
      connect_once(sc, other, "localhost", why, sizeof(why), &resumed, NULL),
      0);
  CHECK_EQ_INT(resumed, 0);
  h3g_upstream_tls_ctx_free(other);
  /* A name that failed verification is never resumed, even when the
   * server handed out a session before the failure was found. */
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_INT(
        connect_once(sc, ctx, "127.0.0.2", why, sizeof(why), &resumed, NULL),
        H3G_ERR_TLS);
    CHECK(strstr(why, "does not match 127.0.0.2") != NULL);
  }
  CHECK_EQ_INT(h3g_upstream_tls_ctx_cached(ctx), 2);
  h3g_upstream_tls_ctx_free(ctx);
  wolfSSL_CTX_free(sc);
}

static void test_resumption_tls13(void) {
  resumption(0);
}
static void test_resumption_tls12(void) {
  resumption(1);
}

static void test_client_certificate(void) {
  WOLFSSL_CTX *sc = server_ctx(0, ca_b);
  char why[256];
  server sv;
  h3g_upstream_tls_ctx *with = client_ctx(ca_a, 1, 1);
  CHECK_EQ_INT(connect_once(sc, with, "localhost", why, sizeof(why), NULL, &sv),
               0);
  CHECK_EQ_INT(sv.accepted, 1);
  WOLFSSL_X509 *peer = wolfSSL_get_peer_certificate(sv.ssl);
  CHECK(peer != NULL);
  if (peer != NULL) {
    char cn[64] = "";
    wolfSSL_X509_NAME_get_text_by_NID(wolfSSL_X509_get_subject_name(peer),
                                      NID_commonName, cn, sizeof(cn));
    CHECK(strcmp(cn, "h3g-test-client") == 0);
    wolfSSL_X509_free(peer);
  }
  server_end(&sv);
  /* Without one, the server refuses the handshake. In TLS 1.3 the client
   * is done before the server looks at its certificate: the refusal comes
   * as an alert, which the first read reports. */
  h3g_upstream_tls_ctx *without = client_ctx(ca_a, 1, 0);
  h3g_upstream_tls *c = NULL;
  server_start(&sv, sc);
  CHECK_EQ_INT(h3g_upstream_tls_new(&c, without, "localhost"), 0);
  int rc = handshake(c, &sv);
  CHECK_EQ_INT(sv.accepted, -1);
  if (rc == 0) {
    uint8_t b[16];
    pump(c, &sv);
    CHECK_EQ_INT(h3g_upstream_tls_read(c, b, sizeof(b)), H3G_ERR_TLS);
  } else {
    CHECK_EQ_INT(rc, H3G_ERR_TLS);
  }
  fprintf(stderr, "no client certificate: %s\n", h3g_upstream_tls_error(c));
  CHECK(strstr(h3g_upstream_tls_error(c), "alert") != NULL);
  h3g_upstream_tls_free(c);
  server_end(&sv);
  h3g_upstream_tls_ctx_free(with);
  h3g_upstream_tls_ctx_free(without);
  wolfSSL_CTX_free(sc);
}

int main(void) {
  wolfSSL_Init();
  if (make_certs() != 0) {
    fprintf(stderr, "cannot make the test certificates\n");
    return 1;
  }
  RUN(test_context_errors);
  RUN(test_round_trip);
  RUN(test_caps);
  RUN(test_verify);
  RUN(test_resumption_tls13);
  RUN(test_resumption_tls12);
  RUN(test_client_certificate);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  wolfSSL_Cleanup();
  return unit_report();
}
