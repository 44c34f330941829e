#include "ws_key.h"

#include <string.h>
#include <sys/random.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/sha.h>

#include "common.h"

/* RFC 6455 §1.3: the GUID every server appends to the key. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int encode(const uint8_t *in, size_t inlen, char *out, size_t want) {
  word32 outlen = (word32)want + 1;
  if (Base64_Encode_NoNl(in, (word32)inlen, (byte *)out, &outlen) != 0 ||
      outlen != want)
    return H3G_ERR_INVAL;
  out[want] = '\0';
  return 0;
}

int h3g_ws_key_new(char *out) {
  uint8_t raw[16];
  size_t got = 0;
  while (got < sizeof(raw)) {
    ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
    if (n <= 0)
      return H3G_ERR_IO;
    got += (size_t)n;
  }
  return encode(raw, sizeof(raw), out, H3G_WS_KEY_LEN) == 0 ? 0 : H3G_ERR_IO;
}

int h3g_ws_accept(const uint8_t *key, size_t keylen, char *out) {
  uint8_t buf[256 + sizeof(ws_guid)];
  uint8_t digest[WC_SHA_DIGEST_SIZE];
  if (keylen > 256)
    return H3G_ERR_INVAL;
  memcpy(buf, key, keylen);
  memcpy(buf + keylen, ws_guid, sizeof(ws_guid) - 1);
  if (wc_ShaHash(buf, (word32)(keylen + sizeof(ws_guid) - 1), digest) != 0)
    return H3G_ERR_INVAL;
  return encode(digest, sizeof(digest), out, H3G_WS_ACCEPT_LEN);
}

int h3g_ws_accept_matches(const uint8_t *key, size_t keylen,
                          const uint8_t *value, size_t valuelen) {
  char want[H3G_WS_ACCEPT_LEN + 1];
  if (h3g_ws_accept(key, keylen, want) != 0)
    return 0;
  while (valuelen > 0 && (*value == ' ' || *value == '\t')) {
    value++;
    valuelen--;
  }
  while (valuelen > 0 &&
         (value[valuelen - 1] == ' ' || value[valuelen - 1] == '\t'))
    valuelen--;
  return valuelen == H3G_WS_ACCEPT_LEN &&
         memcmp(value, want, H3G_WS_ACCEPT_LEN) == 0;
}
