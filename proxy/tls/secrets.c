/*
 * Secrets and session ticket sealing. See secrets.h for the file, the
 * rotation and the context binding.
 *
 * A sealed ticket: key_name = period (4 bytes, big endian) + a 12-byte
 * fingerprint of the secret (and context) it was sealed with; AES-256-GCM
 * with a random 96-bit nonce (in iv), key_name and the connection's
 * binding (the QUIC version) as associated data, the tag in mac. Decryption
 * finds the secret by fingerprint, checks the period is within one of now,
 * derives that period's key and opens the ticket.
 */
#include "secrets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* wolfSSL needs its build options before any of its headers. */
#include <wolfssl/options.h>

#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "log.h"

#define MAX_FILE_SIZE 16384
#define FP_LEN 12
#define NONCE_LEN 12
#define TAG_LEN 16
/* Without rotation, tickets live a day. TLS 1.3 allows seven. */
#define LIFETIME_NO_ROTATION (24 * 3600)
#define LIFETIME_MAX (7 * 24 * 3600)

_Static_assert(WOLFSSL_TICKET_NAME_SZ == 4 + FP_LEN, "ticket name layout");
_Static_assert(WOLFSSL_TICKET_IV_SZ >= NONCE_LEN, "ticket iv layout");
_Static_assert(WOLFSSL_TICKET_MAC_SZ >= TAG_LEN, "ticket mac layout");

typedef struct ticket_ctx {
  h3g_secrets *s;
  h3g_ticket_binder bind; /* NULL: tickets bound to nothing more */
  uint8_t digest[WC_SHA256_DIGEST_SIZE]; /* of the context string */
  uint8_t fp[H3G_SECRETS_MAX][FP_LEN];
} ticket_ctx;

struct h3g_secrets {
  char path[1024]; /* "" when random */
  struct stat stamp;
  uint8_t sec[H3G_SECRETS_MAX][H3G_SECRET_MAX];
  size_t len[H3G_SECRETS_MAX];
  size_t n;
  uint64_t rotation_s;
  /* Random mode: sec[0] is the key of period random_period, sec[1] (if n
   * is 2) of the one before; stable never rotates (reset and token keys
   * must outlive ticket periods). */
  uint64_t random_period;
  uint8_t stable[32];
  ticket_ctx **ctxs; /* every context attached (reloads add some) */
  size_t nctx;
};

/* ---- parsing ---- */

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* One secret from a trimmed line. Returns its length or -1. */
static int parse_secret(const char *p, size_t n, uint8_t *out) {
  size_t i;
  for (i = 0; i < n && hexval((unsigned char)p[i]) >= 0; i++)
    ;
  if (i == n) {
    /* Only hex digits: hex, whatever the length (also valid base64, but
     * nobody writes base64 without a letter beyond f). */
    if (n % 2 != 0 || n < 2 * H3G_SECRET_MIN || n > 2 * H3G_SECRET_MAX)
      return -1;
    for (i = 0; i < n / 2; i++)
      out[i] = (uint8_t)(hexval((unsigned char)p[2 * i]) << 4 |
                         hexval((unsigned char)p[2 * i + 1]));
    return (int)(n / 2);
  }
  uint8_t tmp[H3G_SECRET_MAX * 2];
  word32 outlen = sizeof(tmp);
  if (n > 4 * H3G_SECRET_MAX / 3 + 4 ||
      Base64_Decode((const byte *)p, (word32)n, tmp, &outlen) != 0 ||
      outlen < H3G_SECRET_MIN || outlen > H3G_SECRET_MAX) {
    memset(tmp, 0, sizeof(tmp));
    return -1;
  }
  memcpy(out, tmp, outlen);
  memset(tmp, 0, sizeof(tmp));
  return (int)outlen;
}

int h3g_secrets_parse(const char *text, size_t len,
                      uint8_t (*out)[H3G_SECRET_MAX], size_t *lens, char *why,
                      size_t whylen) {
  uint8_t scratch[H3G_SECRET_MAX];
  size_t n = 0, line = 0;
  const char *p = text, *end = text + len;

  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL)
      eol = end;
    const char *a = p, *b = eol;
    p = eol + 1;
    line++;
    while (a < b && (*a == ' ' || *a == '\t' || *a == '\r'))
      a++;
    while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
      b--;
    if (a == b || *a == '#')
      continue;
    if (n == H3G_SECRETS_MAX) {
      snprintf(why, whylen, "line %zu: more than %d secrets", line,
               H3G_SECRETS_MAX);
      return H3G_ERR_INVAL;
    }
    uint8_t *dst = out != NULL ? out[n] : scratch;
    int l = parse_secret(a, (size_t)(b - a), dst);
    if (l < 0) {
      snprintf(why, whylen,
               "line %zu: not a secret (want %d to %d bytes as hex or base64)",
               line, H3G_SECRET_MIN, H3G_SECRET_MAX);
      memset(scratch, 0, sizeof(scratch));
      return H3G_ERR_INVAL;
    }
    if (lens != NULL)
      lens[n] = (size_t)l;
    n++;
  }
  memset(scratch, 0, sizeof(scratch));
  if (n == 0) {
    snprintf(why, whylen, "no secret in the file");
    return H3G_ERR_INVAL;
  }
  return (int)n;
}

/* Reads path whole (at most MAX_FILE_SIZE). Returns the length or an
 * error with why set; *st gets the file's status. */
static int read_file(const char *path, char *buf, size_t cap, struct stat *st,
                     char *why, size_t whylen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return H3G_ERR_IO;
  }
  if (fstat(fileno(f), st) != 0 || !S_ISREG(st->st_mode)) {
    snprintf(why, whylen, "%s: not a regular file", path);
    fclose(f);
    return H3G_ERR_IO;
  }
  size_t n = fread(buf, 1, cap, f);
  int bad = ferror(f) || n == cap;
  fclose(f);
  if (bad) {
    snprintf(why, whylen, "%s: unreadable or over %zu bytes", path, cap - 1);
    return H3G_ERR_IO;
  }
  return (int)n;
}

int h3g_secrets_check_file(const char *path, char *why, size_t whylen) {
  char buf[MAX_FILE_SIZE];
  struct stat st;
  int n = read_file(path, buf, sizeof(buf), &st, why, whylen);
  if (n < 0)
    return n;
  int rv = h3g_secrets_parse(buf, (size_t)n, NULL, NULL, why, whylen);
  memset(buf, 0, sizeof(buf));
  return rv < 0 ? rv : 0;
}

/* ---- derivation ---- */

static int hkdf(const uint8_t *ikm, size_t ikmlen, const char *salt,
                const uint8_t *info, size_t infolen, uint8_t *out,
                size_t outlen) {
  return wc_HKDF(WC_SHA256, ikm, (word32)ikmlen, (const byte *)salt,
                 (word32)strlen(salt), info, (word32)infolen, out,
                 (word32)outlen) == 0
             ? 0
             : H3G_ERR_TLS;
}

static int ctx_fingerprints(ticket_ctx *t) {
  h3g_secrets *s = t->s;
  for (size_t i = 0; i < s->n; i++)
    if (hkdf(s->sec[i], s->len[i], "h3gate ticket name", t->digest,
             sizeof(t->digest), t->fp[i], FP_LEN) != 0)
      return H3G_ERR_TLS;
  return 0;
}

static int all_fingerprints(h3g_secrets *s) {
  for (size_t i = 0; i < s->nctx; i++)
    if (ctx_fingerprints(s->ctxs[i]) != 0)
      return H3G_ERR_TLS;
  return 0;
}

static uint64_t period_now(const h3g_secrets *s) {
  return s->rotation_s > 0 ? (uint64_t)time(NULL) / s->rotation_s : 0;
}

/* Random mode: a fresh key per period, the previous one kept. */
static void random_rotate(h3g_secrets *s, uint64_t period) {
  if (s->path[0] != '\0' || period <= s->random_period)
    return;
  uint8_t fresh[H3G_SECRET_MIN];
  if (h3g_random_bytes(fresh, sizeof(fresh)) != 0)
    return; /* keep the old key a little longer */
  if (period == s->random_period + 1) {
    memcpy(s->sec[1], s->sec[0], s->len[0]);
    s->len[1] = s->len[0];
    s->n = 2;
  } else {
    memset(s->sec[1], 0, sizeof(s->sec[1]));
    s->n = 1;
  }
  memcpy(s->sec[0], fresh, sizeof(fresh));
  s->len[0] = sizeof(fresh);
  memset(fresh, 0, sizeof(fresh));
  s->random_period = period;
  if (all_fingerprints(s) != 0)
    h3g_warn("secrets: cannot derive ticket key names");
}

static int ticket_key(const ticket_ctx *t, size_t idx, uint32_t period,
                      uint8_t key[32]) {
  uint8_t info[WC_SHA256_DIGEST_SIZE + 4];
  memcpy(info, t->digest, WC_SHA256_DIGEST_SIZE);
  info[WC_SHA256_DIGEST_SIZE] = (uint8_t)(period >> 24);
  info[WC_SHA256_DIGEST_SIZE + 1] = (uint8_t)(period >> 16);
  info[WC_SHA256_DIGEST_SIZE + 2] = (uint8_t)(period >> 8);
  info[WC_SHA256_DIGEST_SIZE + 3] = (uint8_t)period;
  return hkdf(t->s->sec[idx], t->s->len[idx], "h3gate ticket key", info,
              sizeof(info), key, 32);
}

/* ---- the ticket callback ---- */

/* Seals (enc) or opens the ticket of connection ssl in place with the key
 * of secret idx and period, key_name and the connection's binding as
 * associated data. Returns 0, or -1 when the key cannot be made or
 * (opening) the ticket does not authenticate. */
static int ticket_gcm(const ticket_ctx *t, WOLFSSL *ssl, size_t idx,
                      uint32_t period, int enc, const unsigned char *key_name,
                      const unsigned char *iv, unsigned char *mac,
                      unsigned char *ticket, int inlen) {
  uint8_t key[32];
  uint8_t aad[WOLFSSL_TICKET_NAME_SZ + H3G_TICKET_BIND_MAX];
  size_t aadlen = WOLFSSL_TICKET_NAME_SZ;
  Aes aes;
  memcpy(aad, key_name, WOLFSSL_TICKET_NAME_SZ);
  if (t->bind != NULL)
    aadlen += H3G_MIN(t->bind(ssl, aad + aadlen), (size_t)H3G_TICKET_BIND_MAX);
  if (ticket_key(t, idx, period, key) != 0)
    return -1;
  int ok = wc_AesInit(&aes, NULL, INVALID_DEVID) == 0;
  ok = ok && wc_AesGcmSetKey(&aes, key, sizeof(key)) == 0;
  if (ok && enc)
    ok = wc_AesGcmEncrypt(&aes, ticket, ticket, (word32)inlen, iv, NONCE_LEN,
                          mac, TAG_LEN, aad, (word32)aadlen) == 0;
  else if (ok)
    ok = wc_AesGcmDecrypt(&aes, ticket, ticket, (word32)inlen, iv, NONCE_LEN,
                          mac, TAG_LEN, aad, (word32)aadlen) == 0;
  wc_AesFree(&aes);
  memset(key, 0, sizeof(key));
  return ok ? 0 : -1;
}

static int seal(ticket_ctx *t, WOLFSSL *ssl, unsigned char *key_name,
                unsigned char *iv, unsigned char *mac, unsigned char *ticket,
                int inlen, int *outlen) {
  h3g_secrets *s = t->s;
  uint32_t period = (uint32_t)period_now(s);

  random_rotate(s, period);
  key_name[0] = (uint8_t)(period >> 24);
  key_name[1] = (uint8_t)(period >> 16);
  key_name[2] = (uint8_t)(period >> 8);
  key_name[3] = (uint8_t)period;
  memcpy(key_name + 4, t->fp[0], FP_LEN);
  memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
  memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
  if (h3g_random_bytes(iv, NONCE_LEN) != 0 ||
      ticket_gcm(t, ssl, 0, period, 1, key_name, iv, mac, ticket, inlen) != 0)
    return WOLFSSL_TICKET_RET_FATAL;
  *outlen = inlen;
  return WOLFSSL_TICKET_RET_OK;
}

static int open_ticket(ticket_ctx *t, WOLFSSL *ssl,
                       const unsigned char *key_name, const unsigned char *iv,
                       unsigned char *mac, unsigned char *ticket, int inlen,
                       int *outlen) {
  h3g_secrets *s = t->s;
  uint64_t now = period_now(s);
  uint32_t period = (uint32_t)key_name[0] << 24 | (uint32_t)key_name[1] << 16 |
                    (uint32_t)key_name[2] << 8 | key_name[3];

  random_rotate(s, now);
  /* The previous, current or (a peer instance's clock ahead) next. */
  if ((uint64_t)period + 1 < now || (uint64_t)period > now + 1)
    return WOLFSSL_TICKET_RET_REJECT;
  size_t idx;
  for (idx = 0; idx < s->n; idx++)
    if (memcmp(t->fp[idx], key_name + 4, FP_LEN) == 0)
      break;
  if (idx == s->n ||
      ticket_gcm(t, ssl, idx, period, 0, key_name, iv, mac, ticket, inlen) != 0)
    return WOLFSSL_TICKET_RET_REJECT;
  *outlen = inlen;
  /* TLS 1.2: resume and send a ticket under the current key. TLS 1.3
   * resumes only on OK (wolfSSL treats CREATE as a miss there) and always
   * sends new tickets anyway. */
  if (idx == 0 && period == (uint32_t)now)
    return WOLFSSL_TICKET_RET_OK;
  return wolfSSL_GetVersion(ssl) == WOLFSSL_TLSV1_3 ? WOLFSSL_TICKET_RET_OK
                                                    : WOLFSSL_TICKET_RET_CREATE;
}

static int on_ticket(WOLFSSL *ssl,
                     unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
                     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc,
                     unsigned char *ticket, int inlen, int *outlen,
                     void *user_ctx) {
  ticket_ctx *t = user_ctx;
  if (t == NULL || inlen <= 0)
    return WOLFSSL_TICKET_RET_FATAL;
  if (enc)
    return seal(t, ssl, key_name, iv, mac, ticket, inlen, outlen);
  return open_ticket(t, ssl, key_name, iv, mac, ticket, inlen, outlen);
}

/* ---- life cycle ---- */

static int load(h3g_secrets *s, int initial) {
  char buf[MAX_FILE_SIZE];
  char why[sizeof(s->path) + 512];
  struct stat st;
  uint8_t sec[H3G_SECRETS_MAX][H3G_SECRET_MAX];
  size_t lens[H3G_SECRETS_MAX];

  int n = read_file(s->path, buf, sizeof(buf), &st, why, sizeof(why));
  if (n >= 0) {
    char detail[256];
    n = h3g_secrets_parse(buf, (size_t)n, sec, lens, detail, sizeof(detail));
    if (n < 0)
      snprintf(why, sizeof(why), "%s: %s", s->path, detail);
  }
  memset(buf, 0, sizeof(buf));
  if (n < 0) {
    if (initial)
      h3g_error("secrets_file %s", why);
    else
      h3g_error("secrets_file %s (keeping the secrets in use)", why);
    return n;
  }
  /* A group of its own may read it (Kubernetes mounts Secrets 0440 for
   * the pod's fsGroup); everyone may not, and nobody else may write. */
  if (st.st_mode & 027)
    h3g_warn("secrets_file %s is readable by every user or writable by "
             "others (chmod 600, or 640 for a group of its own)",
             s->path);
  memset(s->sec, 0, sizeof(s->sec));
  memcpy(s->sec, sec, sizeof(sec));
  memcpy(s->len, lens, sizeof(lens));
  memset(sec, 0, sizeof(sec));
  s->n = (size_t)n;
  s->stamp = st;
  if (all_fingerprints(s) != 0)
    return H3G_ERR_TLS;
  return 0;
}

int h3g_secrets_new(h3g_secrets **ps, const char *path, uint64_t rotation_s) {
  *ps = NULL;
  h3g_secrets *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return H3G_ERR_NOMEM;
  s->rotation_s = rotation_s;
  if (path != NULL && path[0] != '\0') {
    snprintf(s->path, sizeof(s->path), "%s", path);
    int rv = load(s, 1);
    if (rv != 0) {
      h3g_secrets_free(s);
      return rv;
    }
  } else {
    if (h3g_random_bytes(s->stable, sizeof(s->stable)) != 0 ||
        h3g_random_bytes(s->sec[0], H3G_SECRET_MIN) != 0) {
      h3g_secrets_free(s);
      return H3G_ERR_IO;
    }
    s->len[0] = H3G_SECRET_MIN;
    s->n = 1;
    s->random_period = period_now(s);
  }
  *ps = s;
  return 0;
}

void h3g_secrets_free(h3g_secrets *s) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->nctx; i++) {
    memset(s->ctxs[i], 0, sizeof(*s->ctxs[i]));
    free(s->ctxs[i]);
  }
  free(s->ctxs);
  memset(s, 0, sizeof(*s));
  free(s);
}

int h3g_secrets_reload(h3g_secrets *s) {
  struct stat st;
  if (s->path[0] == '\0')
    return 0;
  if (stat(s->path, &st) != 0) {
    h3g_error("secrets_file %s: %s (keeping the secrets in use)", s->path,
              strerror(errno));
    return H3G_ERR_IO;
  }
  if (st.st_size == s->stamp.st_size && st.st_ino == s->stamp.st_ino &&
      st.st_mtim.tv_sec == s->stamp.st_mtim.tv_sec &&
      st.st_mtim.tv_nsec == s->stamp.st_mtim.tv_nsec)
    return 0;
  int rv = load(s, 0);
  if (rv != 0)
    return rv;
  h3g_info("secrets_file %s reloaded (%zu secrets)", s->path, s->n);
  return 1;
}

int h3g_secrets_set_path(h3g_secrets *s, const char *path) {
  if (s->path[0] == '\0' || path == NULL || path[0] == '\0' ||
      strlen(path) >= sizeof(s->path))
    return H3G_ERR_INVAL;
  char old[sizeof(s->path)];
  memcpy(old, s->path, sizeof(old));
  snprintf(s->path, sizeof(s->path), "%s", path);
  int rv = load(s, 0);
  if (rv != 0) {
    memcpy(s->path, old, sizeof(old));
    return rv;
  }
  h3g_info("secrets_file %s in use (%zu secrets)", s->path, s->n);
  return 0;
}

int h3g_secrets_derive(const h3g_secrets *s, const char *label, uint8_t *out,
                       size_t len) {
  const uint8_t *ikm = s->path[0] != '\0' ? s->sec[0] : s->stable;
  size_t ikmlen = s->path[0] != '\0' ? s->len[0] : sizeof(s->stable);
  return hkdf(ikm, ikmlen, "h3gate secret", (const uint8_t *)label,
              strlen(label), out, len);
}

uint32_t h3g_secrets_ticket_lifetime(const h3g_secrets *s) {
  if (s->rotation_s == 0)
    return LIFETIME_NO_ROTATION;
  return (uint32_t)H3G_MIN(s->rotation_s, (uint64_t)LIFETIME_MAX);
}

int h3g_secrets_attach(h3g_secrets *s, void *ssl_ctx, const char *context,
                       h3g_ticket_binder bind) {
  WOLFSSL_CTX *sc = ssl_ctx;
  ticket_ctx **grown = realloc(s->ctxs, (s->nctx + 1) * sizeof(*s->ctxs));
  if (grown == NULL)
    return H3G_ERR_NOMEM;
  s->ctxs = grown;
  ticket_ctx *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return H3G_ERR_NOMEM;
  t->s = s;
  t->bind = bind;
  if (wc_Sha256Hash((const byte *)context, (word32)strlen(context),
                    t->digest) != 0 ||
      ctx_fingerprints(t) != 0) {
    free(t);
    return H3G_ERR_TLS;
  }
  s->ctxs[s->nctx++] = t;
  uint32_t lifetime = h3g_secrets_ticket_lifetime(s);
  if (wolfSSL_CTX_set_TicketEncCb(sc, on_ticket) != WOLFSSL_SUCCESS ||
      wolfSSL_CTX_set_TicketEncCtx(sc, t) != WOLFSSL_SUCCESS ||
      wolfSSL_CTX_set_TicketHint(sc, (int)lifetime) != WOLFSSL_SUCCESS)
    return H3G_ERR_TLS;
  /* wolfSSL also refuses tickets older than the session timeout (its
   * default is minutes). Returns the old value in OpenSSL mode. */
  (void)wolfSSL_CTX_set_timeout(sc, lifetime);
  return 0;
}
