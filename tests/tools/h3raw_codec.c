/*
 * h3raw's wire codecs: QUIC varints, HTTP/3 frames, QPACK encoding of
 * request field sections and decoding of response field sections.
 *
 * The encoder is deliberately dumb: it writes exactly the bytes it is given,
 * so a test can put uppercase letters, CR, LF, NUL or nothing at all in a
 * name. The decoder is deliberately strict about what it does not support:
 * we advertise SETTINGS_QPACK_MAX_TABLE_CAPACITY 0, so a dynamic table
 * reference from the server is a protocol error worth reporting, not
 * something to guess around.
 */
#include "h3raw.h"

#include <stdlib.h>
#include <string.h>

/* ---- bytes ---- */

int h3r_bytes_append(h3r_bytes *b, const void *data, size_t len) {
  if (len == 0)
    return 0;
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + len)
      cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL)
      return -1;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

int h3r_bytes_byte(h3r_bytes *b, uint8_t c) {
  return h3r_bytes_append(b, &c, 1);
}

void h3r_bytes_free(h3r_bytes *b) {
  free(b->data);
  *b = (h3r_bytes){0};
}

/* ---- varints and frames ---- */

int h3r_put_varint(h3r_bytes *b, uint64_t v) {
  uint8_t buf[8];
  size_t n;
  if (v < 64) {
    buf[0] = (uint8_t)v;
    n = 1;
  } else if (v < 16384) {
    buf[0] = (uint8_t)(0x40 | (v >> 8));
    buf[1] = (uint8_t)v;
    n = 2;
  } else if (v < (1ull << 30)) {
    n = 4;
    for (size_t i = 0; i < n; i++)
      buf[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    buf[0] |= 0x80;
  } else {
    n = 8;
    for (size_t i = 0; i < n; i++)
      buf[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    buf[0] |= 0xc0;
  }
  return h3r_bytes_append(b, buf, n);
}

size_t h3r_get_varint(const uint8_t *p, size_t len, uint64_t *v) {
  if (len == 0)
    return 0;
  size_t n = (size_t)1 << (p[0] >> 6);
  if (len < n)
    return 0;
  uint64_t x = p[0] & 0x3f;
  for (size_t i = 1; i < n; i++)
    x = (x << 8) | p[i];
  *v = x;
  return n;
}

int h3r_put_frame(h3r_bytes *b, uint64_t type, const uint8_t *payload,
                  size_t len) {
  if (h3r_put_varint(b, type) != 0 || h3r_put_varint(b, len) != 0)
    return -1;
  return h3r_bytes_append(b, payload, len);
}

/* ---- QPACK integers (RFC 9204 §4.1.1, RFC 7541 §5.1) ---- */

/* Appends v with an n-bit prefix; first holds the bits above the prefix. */
static int put_prefix_int(h3r_bytes *b, uint8_t first, unsigned n, uint64_t v) {
  uint64_t max = (1u << n) - 1;
  if (v < max)
    return h3r_bytes_byte(b, (uint8_t)(first | v));
  if (h3r_bytes_byte(b, (uint8_t)(first | max)) != 0)
    return -1;
  v -= max;
  while (v >= 128) {
    if (h3r_bytes_byte(b, (uint8_t)(0x80 | (v & 0x7f))) != 0)
      return -1;
    v >>= 7;
  }
  return h3r_bytes_byte(b, (uint8_t)v);
}

/* Reads an n-bit prefix integer at *pp (< end). Returns 0 or -1. */
static int get_prefix_int(const uint8_t **pp, const uint8_t *end, unsigned n,
                          uint64_t *v) {
  const uint8_t *p = *pp;
  uint64_t max = (1u << n) - 1;
  if (p >= end)
    return -1;
  uint64_t x = *p++ & max;
  if (x == max) {
    unsigned shift = 0;
    for (;;) {
      if (p >= end || shift > 56)
        return -1;
      uint8_t c = *p++;
      x += (uint64_t)(c & 0x7f) << shift;
      shift += 7;
      if (!(c & 0x80))
        break;
    }
  }
  *pp = p;
  *v = x;
  return 0;
}

/* ---- QPACK encoding ---- */

int h3r_qpack_prefix(h3r_bytes *b) {
  static const uint8_t zero[2] = {0, 0};
  return h3r_bytes_append(b, zero, 2);
}

static int put_string(h3r_bytes *b, uint8_t first, unsigned n, const uint8_t *s,
                      size_t len) {
  if (put_prefix_int(b, first, n, len) != 0)
    return -1;
  return h3r_bytes_append(b, s, len);
}

int h3r_qpack_literal(h3r_bytes *b, const uint8_t *name, size_t namelen,
                      const uint8_t *value, size_t valuelen) {
  /* 001N H xxx: literal field line with literal name, N=0, H=0. */
  if (put_string(b, 0x20, 3, name, namelen) != 0)
    return -1;
  return put_string(b, 0x00, 7, value, valuelen);
}

int h3r_qpack_static(h3r_bytes *b, uint64_t index) {
  /* 1T xxxxxx: indexed field line, T=1 (static). */
  return put_prefix_int(b, 0xc0, 6, index);
}

int h3r_qpack_static_name(h3r_bytes *b, uint64_t index, const uint8_t *value,
                          size_t valuelen) {
  /* 01NT xxxx: literal field line with name reference, N=0, T=1. */
  if (put_prefix_int(b, 0x50, 4, index) != 0)
    return -1;
  return put_string(b, 0x00, 7, value, valuelen);
}

/* ---- the static table (RFC 9204 Appendix A) ---- */

static const struct {
  const char *name;
  const char *value;
} static_table[H3R_QPACK_STATIC_SIZE] = {
    {":authority", ""},
    {":path", "/"},
    {"age", "0"},
    {"content-disposition", ""},
    {"content-length", "0"},
    {"cookie", ""},
    {"date", ""},
    {"etag", ""},
    {"if-modified-since", ""},
    {"if-none-match", ""},
    {"last-modified", ""},
    {"link", ""},
    {"location", ""},
    {"referer", ""},
    {"set-cookie", ""},
    {":method", "CONNECT"},
    {":method", "DELETE"},
    {":method", "GET"},
    {":method", "HEAD"},
    {":method", "OPTIONS"},
    {":method", "POST"},
    {":method", "PUT"},
    {":scheme", "http"},
    {":scheme", "https"},
    {":status", "103"},
    {":status", "200"},
    {":status", "304"},
    {":status", "404"},
    {":status", "503"},
    {"accept", "*/*"},
    {"accept", "application/dns-message"},
    {"accept-encoding", "gzip, deflate, br"},
    {"accept-ranges", "bytes"},
    {"access-control-allow-headers", "cache-control"},
    {"access-control-allow-headers", "content-type"},
    {"access-control-allow-origin", "*"},
    {"cache-control", "max-age=0"},
    {"cache-control", "max-age=2592000"},
    {"cache-control", "max-age=604800"},
    {"cache-control", "no-cache"},
    {"cache-control", "no-store"},
    {"cache-control", "public, max-age=31536000"},
    {"content-encoding", "br"},
    {"content-encoding", "gzip"},
    {"content-type", "application/dns-message"},
    {"content-type", "application/javascript"},
    {"content-type", "application/json"},
    {"content-type", "application/x-www-form-urlencoded"},
    {"content-type", "image/gif"},
    {"content-type", "image/jpeg"},
    {"content-type", "image/png"},
    {"content-type", "text/css"},
    {"content-type", "text/html; charset=utf-8"},
    {"content-type", "text/plain"},
    {"content-type", "text/plain;charset=utf-8"},
    {"range", "bytes=0-"},
    {"strict-transport-security", "max-age=31536000"},
    {"strict-transport-security", "max-age=31536000; includesubdomains"},
    {"strict-transport-security",
     "max-age=31536000; includesubdomains; preload"},
    {"vary", "accept-encoding"},
    {"vary", "origin"},
    {"x-content-type-options", "nosniff"},
    {"x-xss-protection", "1; mode=block"},
    {":status", "100"},
    {":status", "204"},
    {":status", "206"},
    {":status", "302"},
    {":status", "400"},
    {":status", "403"},
    {":status", "421"},
    {":status", "425"},
    {":status", "500"},
    {"accept-language", ""},
    {"access-control-allow-credentials", "FALSE"},
    {"access-control-allow-credentials", "TRUE"},
    {"access-control-allow-headers", "*"},
    {"access-control-allow-methods", "get"},
    {"access-control-allow-methods", "get, post, options"},
    {"access-control-allow-methods", "options"},
    {"access-control-expose-headers", "content-length"},
    {"access-control-request-headers", "content-type"},
    {"access-control-request-method", "get"},
    {"access-control-request-method", "post"},
    {"alt-svc", "clear"},
    {"authorization", ""},
    {"content-security-policy",
     "script-src 'none'; object-src 'none'; base-uri 'none'"},
    {"early-data", "1"},
    {"expect-ct", ""},
    {"forwarded", ""},
    {"if-range", ""},
    {"origin", ""},
    {"purpose", "prefetch"},
    {"server", ""},
    {"timing-allow-origin", "*"},
    {"upgrade-insecure-requests", "1"},
    {"user-agent", ""},
    {"x-forwarded-for", ""},
    {"x-frame-options", "deny"},
    {"x-frame-options", "sameorigin"},
};

/* ---- Huffman decoding (RFC 7541 Appendix B) ---- */

/*
 * The HPACK code is canonical: codes of one length are consecutive and
 * ordered by symbol, and each length's first code follows from the previous
 * length's. So the code lengths alone (below, symbols 0..255, then EOS)
 * define it, and decoding needs per length only the first code, the count
 * and where its symbols start in the sorted symbol list.
 */
static const uint8_t huff_len[257] = {
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, /* 0 */
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, /* 16 */
    6,  10, 10, 12, 13, 6,  8,  11, 10, 10, 8,  11, 8,  6,  6,  6,  /* 32 */
    5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8,  15, 6,  12, 10, /* 48 */
    13, 6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  /* 64 */
    7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8,  13, 19, 13, 14, 6,  /* 80 */
    15, 5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,  /* 96 */
    6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7,  15, 11, 14, 13, 28, /* 112 */
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, /* 128 */
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, /* 144 */
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, /* 160 */
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, /* 176 */
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, /* 192 */
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, /* 208 */
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, /* 224 */
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, /* 240 */
    30,                                                             /* EOS */
};

#define HUFF_EOS 256
#define HUFF_MAXLEN 30

static struct {
  int ready;
  uint32_t first[HUFF_MAXLEN + 1]; /* first code of each length */
  uint16_t count[HUFF_MAXLEN + 1];
  uint16_t start[HUFF_MAXLEN + 1]; /* index in sym[] of that first code */
  uint16_t sym[257];               /* symbols sorted by (length, symbol) */
} huff;

static void huff_build(void) {
  size_t k = 0;
  uint32_t code = 0;
  for (unsigned len = 1; len <= HUFF_MAXLEN; len++) {
    code <<= 1;
    huff.first[len] = code;
    huff.start[len] = (uint16_t)k;
    for (unsigned s = 0; s <= HUFF_EOS; s++)
      if (huff_len[s] == len)
        huff.sym[k++] = (uint16_t)s;
    huff.count[len] = (uint16_t)(k - huff.start[len]);
    code += huff.count[len];
  }
  huff.ready = 1;
}

int h3r_huffman_decode(const uint8_t *p, size_t len, h3r_bytes *out) {
  uint32_t code = 0;
  unsigned bits = 0;
  int all_ones = 1;

  if (!huff.ready)
    huff_build();
  for (size_t i = 0; i < len; i++) {
    for (int b = 7; b >= 0; b--) {
      unsigned bit = (p[i] >> b) & 1u;
      code = (code << 1) | bit;
      all_ones = all_ones && bit;
      bits++;
      if (bits > HUFF_MAXLEN)
        return -1;
      if (huff.count[bits] > 0 && code >= huff.first[bits] &&
          code - huff.first[bits] < huff.count[bits]) {
        unsigned s = huff.sym[huff.start[bits] + (code - huff.first[bits])];
        if (s == HUFF_EOS || h3r_bytes_byte(out, (uint8_t)s) != 0)
          return -1;
        code = 0;
        bits = 0;
        all_ones = 1;
      }
    }
  }
  /* What is left must be a prefix of EOS (all ones), at most 7 bits. */
  return bits <= 7 && all_ones ? 0 : -1;
}

/* ---- QPACK decoding ---- */

void h3r_fields_free(h3r_fields *f) {
  for (size_t i = 0; i < f->n; i++) {
    h3r_bytes_free(&f->v[i].name);
    h3r_bytes_free(&f->v[i].value);
  }
  free(f->v);
  *f = (h3r_fields){0};
}

static h3r_field *fields_add(h3r_fields *f) {
  if (f->n == f->cap) {
    size_t cap = f->cap ? 2 * f->cap : 16;
    h3r_field *v = realloc(f->v, cap * sizeof(*v));
    if (v == NULL)
      return NULL;
    f->v = v;
    f->cap = cap;
  }
  h3r_field *x = &f->v[f->n++];
  *x = (h3r_field){0};
  return x;
}

/* Reads a string literal whose H bit is bit n of the first byte. */
static int get_string(const uint8_t **pp, const uint8_t *end, unsigned n,
                      h3r_bytes *out, const char **why) {
  if (*pp >= end) {
    *why = "truncated string";
    return -1;
  }
  int huffman = (**pp >> n) & 1;
  uint64_t len;
  if (get_prefix_int(pp, end, n, &len) != 0 || len > (uint64_t)(end - *pp)) {
    *why = "truncated string";
    return -1;
  }
  int rv = huffman ? h3r_huffman_decode(*pp, (size_t)len, out)
                   : h3r_bytes_append(out, *pp, (size_t)len);
  if (rv != 0) {
    *why = huffman ? "bad Huffman string" : "out of memory";
    return -1;
  }
  *pp += len;
  return 0;
}

static int set_static(h3r_field *f, uint64_t index, int with_value,
                      const char **why) {
  if (index >= H3R_QPACK_STATIC_SIZE) {
    *why = "static table index out of range";
    return -1;
  }
  const char *n = static_table[index].name;
  const char *v = static_table[index].value;
  if (h3r_bytes_append(&f->name, n, strlen(n)) != 0 ||
      (with_value && h3r_bytes_append(&f->value, v, strlen(v)) != 0)) {
    *why = "out of memory";
    return -1;
  }
  return 0;
}

int h3r_qpack_decode(const uint8_t *p, size_t len, h3r_fields *out,
                     const char **why) {
  const uint8_t *end = p + len;
  uint64_t ric, base;

  if (get_prefix_int(&p, end, 8, &ric) != 0 ||
      get_prefix_int(&p, end, 7, &base) != 0) {
    *why = "truncated field section prefix";
    return -1;
  }
  if (ric != 0) {
    *why = "dynamic table used (Required Insert Count > 0)";
    return -1;
  }
  while (p < end) {
    uint8_t c = *p;
    uint64_t index;
    h3r_field *f = fields_add(out);
    if (f == NULL) {
      *why = "out of memory";
      return -1;
    }
    if (c & 0x80) { /* indexed field line */
      if (!(c & 0x40)) {
        *why = "dynamic table reference";
        return -1;
      }
      if (get_prefix_int(&p, end, 6, &index) != 0) {
        *why = "truncated field line";
        return -1;
      }
      if (set_static(f, index, 1, why) != 0)
        return -1;
    } else if (c & 0x40) { /* literal with name reference */
      if (!(c & 0x10)) {
        *why = "dynamic table name reference";
        return -1;
      }
      if (get_prefix_int(&p, end, 4, &index) != 0) {
        *why = "truncated field line";
        return -1;
      }
      if (set_static(f, index, 0, why) != 0 ||
          get_string(&p, end, 7, &f->value, why) != 0)
        return -1;
    } else if (c & 0x20) { /* literal with literal name */
      if (get_string(&p, end, 3, &f->name, why) != 0 ||
          get_string(&p, end, 7, &f->value, why) != 0)
        return -1;
    } else {
      *why = "post-base reference (dynamic table)";
      return -1;
    }
  }
  return 0;
}
