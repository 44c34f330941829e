/*
 * h3gate: HTTP/3 termination gateway.
 *
 * Definitions every module may include: error codes, small helpers. This
 * header depends on nothing but the C library.
 */
#ifndef H3G_COMMON_H
#define H3G_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define H3G_VERSION "0.1.0"

/*
 * Error codes. Functions return 0 on success or one of these (negative).
 * Library errors are translated into these at the module boundary that calls
 * the library.
 */
enum {
  H3G_OK = 0,
  H3G_ERR_NOMEM = -1,      /* allocation failed or a fixed pool is empty */
  H3G_ERR_INVAL = -2,      /* bad argument or value */
  H3G_ERR_PROTO = -3,      /* peer violated the protocol */
  H3G_ERR_TOOBIG = -4,     /* a hard size cap would be exceeded */
  H3G_ERR_IO = -5,         /* socket or file error */
  H3G_ERR_TIMEOUT = -6,    /* a timer expired */
  H3G_ERR_CLOSED = -7,     /* the peer closed or the object is closing */
  H3G_ERR_AGAIN = -8,      /* no progress possible now; retry when woken */
  H3G_ERR_REFUSED = -9,    /* connection refused / not reachable */
  H3G_ERR_NOTFOUND = -10,  /* lookup failed (file, key, route) */
  H3G_ERR_TLS = -11,       /* TLS library failure */
  H3G_ERR_QUIC = -12,      /* QUIC library failure */
  H3G_ERR_INUSE = -13,     /* the address (port) is in use */
  H3G_ERR_UNAVAILABLE = -14, /* every server that could serve is out */
};

/* A scatter element (same layout idea as struct iovec). */
typedef struct h3g_iovec {
  const uint8_t *base;
  size_t len;
} h3g_iovec;

/* Returns a static, human-readable name for an H3G_ERR_* code. */
const char *h3g_strerror(int err);

#define H3G_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define H3G_MIN(a, b) ((a) < (b) ? (a) : (b))
#define H3G_MAX(a, b) ((a) > (b) ? (a) : (b))
#define H3G_UNUSED(x) ((void)(x))
/* Marks a deliberate fall-through to the next case label: gcc also takes a
 * comment, clang only the attribute. */
#define H3G_FALLTHROUGH __attribute__((fallthrough))

/* Recovers the enclosing struct from a pointer to one of its members. */
#define H3G_CONTAINER_OF(ptr, type, member)                                    \
  ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Monotonic time in nanoseconds. */
uint64_t h3g_now_ns(void);

/* FNV-1a, 64 bits, of n bytes: for hash tables and balancing keys (not
 * for anything an attacker must not steer). */
static inline uint64_t h3g_fnv1a(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* Wall-clock time in microseconds since the epoch (logs, and address tokens
 * that must mean the same on another instance). */
uint64_t h3g_wall_us(void);

/* Fills p with n bytes from the kernel's CSPRNG (getrandom), waiting for
 * it to be seeded if need be. Returns 0 or H3G_ERR_IO. */
int h3g_random_bytes(uint8_t *p, size_t n);

/* The process id a pid file (as [server] pid_file writes it) holds, or 0
 * when it cannot be read or holds none. */
long h3g_pid_file_read(const char *path);

/* QUIC variable-length integers (RFC 9000 §16), as HTTP/3 frames use
 * them: the length of one from its first byte, and its value from p, which
 * holds all h3g_varint_len(p[0]) bytes. */
static inline size_t h3g_varint_len(uint8_t first) {
  return (size_t)1 << (first >> 6);
}

static inline uint64_t h3g_varint_get(const uint8_t *p) {
  size_t n = h3g_varint_len(p[0]);
  uint64_t v = p[0] & 0x3f;
  for (size_t i = 1; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* Writes v (below 2^62) at p in its shortest form; returns its length. */
static inline size_t h3g_varint_put(uint8_t *p, uint64_t v) {
  size_t n = v < 64 ? 1 : v < 16384 ? 2 : v < (1u << 30) ? 4 : 8;
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
  p[0] |= (uint8_t)((n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : 3) << 6);
  return n;
}

struct sockaddr;

/* The port of an IPv4 or IPv6 socket address, in host order. */
uint16_t h3g_sockaddr_port(const struct sockaddr *sa);

#endif /* H3G_COMMON_H */
