/*
 * Building HTTP/3 streams byte by byte in unit tests: a bounded buffer and
 * QUIC variable-length integers, in the shortest form or a given width
 * (RFC 9000 §16 allows any width a value fits in).
 */
#ifndef H3G_WIRE_BYTES_H
#define H3G_WIRE_BYTES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct bytes {
  uint8_t b[8192];
  size_t n;
} bytes;

static inline void put(bytes *o, const void *p, size_t n) {
  if (o->n + n > sizeof(o->b))
    abort();
  memcpy(o->b + o->n, p, n);
  o->n += n;
}

static inline void put_byte(bytes *o, uint8_t c) {
  put(o, &c, 1);
}

/* A variable-length integer in `width` bytes (0: the shortest). */
static inline void put_varint_w(bytes *o, uint64_t v, size_t width) {
  if (width == 0)
    width = v < 64 ? 1 : v < 16384 ? 2 : v < (1u << 30) ? 4 : 8;
  uint8_t bits = width == 1 ? 0 : width == 2 ? 0x40 : width == 4 ? 0x80 : 0xc0;
  for (size_t i = 0; i < width; i++) {
    uint8_t c = (uint8_t)(v >> (8 * (width - 1 - i)));
    put_byte(o, i == 0 ? (uint8_t)(c | bits) : c);
  }
}

static inline void put_varint(bytes *o, uint64_t v) {
  put_varint_w(o, v, 0);
}

#endif /* H3G_WIRE_BYTES_H */
