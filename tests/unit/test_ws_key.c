/*
 * ws_key.h: the WebSocket handshake's key and its accept value (RFC 6455
 * §1.3, §4.1, §4.2.2). The accept values below were computed outside the
 * gateway (SHA-1 and base64 of key + GUID), so they check wolfSSL's use
 * here, not agree with it.
 */
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "unit.h"
#include "ws_key.h"

#define U8(s) ((const uint8_t *)(s))

/* key -> Sec-WebSocket-Accept: RFC 6455 §1.3's own example, then two
 * more (the second is the one MDN's WebSocket server guide uses). */
static const struct {
  const char *key, *accept;
} vectors[] = {
    {"dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
    {"x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="},
    {"AQIDBAUGBwgJCgsMDQ4PEC==", "OfS0wDaT5NoxF2gqm7Zj2YtetzM="},
};

static void test_accept_vectors(void) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(vectors); i++) {
    char out[H3G_WS_ACCEPT_LEN + 8];
    memset(out, 'z', sizeof(out));
    CHECK_EQ_INT(h3g_ws_accept(U8(vectors[i].key), strlen(vectors[i].key), out),
                 0);
    CHECK_EQ_INT(strlen(out), H3G_WS_ACCEPT_LEN);
    CHECK(strcmp(out, vectors[i].accept) == 0);
    if (strcmp(out, vectors[i].accept) != 0)
      fprintf(stderr, "  %s -> %s, expected %s\n", vectors[i].key, out,
              vectors[i].accept);
    CHECK(h3g_ws_accept_matches(U8(vectors[i].key), strlen(vectors[i].key),
                                U8(vectors[i].accept),
                                strlen(vectors[i].accept)));
  }
}

/* A key of 256 bytes is still hashed (no real key is that long, but it
 * is the documented limit); one more byte is refused. */
static void test_accept_key_length_limit(void) {
  char key[258];
  char out[H3G_WS_ACCEPT_LEN + 1];
  memset(key, 'a', sizeof(key));
  CHECK_EQ_INT(h3g_ws_accept(U8(key), 256, out), 0);
  CHECK(strcmp(out, "hGYmbL4+tZasIpvu77RkHkumz+0=") == 0);
  CHECK_EQ_INT(h3g_ws_accept(U8(key), 257, out), H3G_ERR_INVAL);
  /* ... and never matches anything, not even what a 256-byte key gives. */
  CHECK(!h3g_ws_accept_matches(U8(key), 257, U8("hGYmbL4+tZasIpvu77RkHkumz+0="),
                               28));
  CHECK(h3g_ws_accept_matches(U8(key), 256, U8("hGYmbL4+tZasIpvu77RkHkumz+0="),
                              28));
}

static int is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* The value of one base64 character (is_b64 must hold). */
static unsigned b64_value(char c) {
  if (c >= 'A' && c <= 'Z')
    return (unsigned)(c - 'A');
  if (c >= 'a' && c <= 'z')
    return (unsigned)(c - 'a') + 26;
  if (c >= '0' && c <= '9')
    return (unsigned)(c - '0') + 52;
  return c == '+' ? 62 : 63;
}

/* RFC 6455 §4.1: a nonce of 16 random bytes, base64-encoded: 22 base64
 * characters (the last one carrying 2 bits, its low 4 zero) and "==". */
static void check_key_form(const char *k) {
  CHECK_EQ_INT(strlen(k), H3G_WS_KEY_LEN);
  for (size_t i = 0; i < 22; i++)
    CHECK(is_b64(k[i]));
  CHECK(k[22] == '=' && k[23] == '=');
  CHECK(is_b64(k[21]) && (b64_value(k[21]) & 0xf) == 0);
}

static void test_new_keys(void) {
  enum { N = 16 };
  char keys[N][H3G_WS_KEY_LEN + 8];
  for (size_t i = 0; i < N; i++) {
    memset(keys[i], 'z', sizeof(keys[i]));
    CHECK_EQ_INT(h3g_ws_key_new(keys[i]), 0);
    check_key_form(keys[i]);
    /* A fresh key has an accept value like any other. */
    char acc[H3G_WS_ACCEPT_LEN + 1];
    CHECK_EQ_INT(h3g_ws_accept(U8(keys[i]), H3G_WS_KEY_LEN, acc), 0);
    CHECK(h3g_ws_accept_matches(U8(keys[i]), H3G_WS_KEY_LEN, U8(acc),
                                strlen(acc)));
  }
  /* Random, not a counter or a constant: all different (a collision of 128
   * random bits among 16 keys does not happen). */
  for (size_t i = 0; i < N; i++)
    for (size_t j = i + 1; j < N; j++)
      CHECK(strcmp(keys[i], keys[j]) != 0);
}

static void test_accept_matches(void) {
  const uint8_t *key = U8("dGhlIHNhbXBsZSBub25jZQ==");
  size_t kl = 24;
  /* Surrounding SP and HTAB are a field value's optional whitespace. */
  static const char *const good[] = {
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
      " s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\t",
      " \t s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \t ",
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(good); i++)
    CHECK(h3g_ws_accept_matches(key, kl, U8(good[i]), strlen(good[i])));
  static const char *const bad[] = {
      "",
      " ",
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo",   /* truncated */
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo==", /* one byte more */
      "S3pPLMBiTxaQ9kYGzzhZRbK+xOo=",  /* case matters in base64 */
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOp=",  /* one bit off */
      "s3pPLMBiTxa Q9kYGzzhZRbK+xOo=", /* inner space */
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r",
      "dGhlIHNhbXBsZSBub25jZQ==",     /* the key itself */
      "HSmrc0sMlYUkAGmm5OPpG2HaGWk=", /* another key's answer */
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    CHECK(!h3g_ws_accept_matches(key, kl, U8(bad[i]), strlen(bad[i])));
    if (h3g_ws_accept_matches(key, kl, U8(bad[i]), strlen(bad[i])))
      fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
  }
  /* The value's length is what counts, not a NUL in it. */
  CHECK(
      !h3g_ws_accept_matches(key, kl, U8("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=x"), 29));
  CHECK(
      h3g_ws_accept_matches(key, kl, U8("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=x"), 28));
  /* The key as sent, byte for byte: a key with whitespace is another key
   * (the accept is computed over what went on the wire). */
  CHECK(!h3g_ws_accept_matches(U8(" dGhlIHNhbXBsZSBub25jZQ=="), 25, U8(good[0]),
                               strlen(good[0])));
}

int main(void) {
  RUN(test_accept_vectors);
  RUN(test_accept_key_length_limit);
  RUN(test_new_keys);
  RUN(test_accept_matches);
  return unit_report();
}
