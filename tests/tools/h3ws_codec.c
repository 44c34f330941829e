/* h3ws's WebSocket framing and payloads, no I/O (h3ws.h). */
#include "h3ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

uint64_t ws_seed(uint64_t conn, uint64_t tunnel, uint64_t msg) {
  return splitmix64(splitmix64(splitmix64(conn) ^ tunnel) ^ msg);
}

void ws_gen_init(ws_gen *g, uint64_t seed, int text) {
  /* xorshift64* needs a non-zero state. */
  *g = (ws_gen){.s = seed ? seed : 1, .text = text};
}

static uint64_t gen_next(ws_gen *g) {
  g->s ^= g->s >> 12;
  g->s ^= g->s << 25;
  g->s ^= g->s >> 27;
  return g->s * 0x2545f4914f6cdd1du;
}

/* Printable ASCII for text messages: each byte maps to 0x20..0x7e. */
static uint8_t printable[256];

static void to_text(uint8_t *p, size_t n) {
  if (printable[0] == 0)
    for (int i = 0; i < 256; i++)
      printable[i] = (uint8_t)(0x20 + i % 95);
  for (size_t i = 0; i < n; i++)
    p[i] = printable[p[i]];
}

void ws_gen_fill(ws_gen *g, uint8_t *out, size_t n) {
  uint8_t *start = out;
  size_t total = n;
  while (n > 0 && g->left > 0) {
    *out++ = (uint8_t)(g->word >> (8 * (8 - g->left)));
    g->left--;
    n--;
  }
  while (n >= 8) {
    uint64_t w = gen_next(g);
    for (int i = 0; i < 8; i++)
      out[i] = (uint8_t)(w >> (8 * i));
    out += 8;
    n -= 8;
  }
  if (n > 0) {
    g->word = gen_next(g);
    g->left = 8;
    while (n > 0) {
      *out++ = (uint8_t)(g->word >> (8 * (8 - g->left)));
      g->left--;
      n--;
    }
  }
  if (g->text)
    to_text(start, total);
}

size_t ws_put_header(uint8_t *out, int fin, unsigned opcode, uint64_t len,
                     const uint8_t *mask) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
  uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    out[n++] = (uint8_t)(m | len);
  } else if (len < 65536) {
    out[n++] = (uint8_t)(m | 126);
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = (uint8_t)(m | 127);
    for (int i = 7; i >= 0; i--)
      out[n++] = (uint8_t)(len >> (8 * i));
  }
  if (mask) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

void ws_mask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t offset) {
  uint8_t k[4];
  for (int i = 0; i < 4; i++)
    k[i] = key[(offset + (uint64_t)i) & 3];
  size_t i = 0;
  /* Word at a time: the 256 MiB runs mask every byte. */
  uint32_t k32;
  memcpy(&k32, k, 4);
  uint64_t k64 = (uint64_t)k32 | ((uint64_t)k32 << 32);
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    w ^= k64;
    memcpy(p + i, &w, 8);
  }
  for (; i < n; i++)
    p[i] ^= k[i & 3];
}

uint8_t *ws_build_message(unsigned opcode, ws_gen *g, uint64_t size,
                          uint64_t frag, void (*next_key)(uint8_t key[4]),
                          size_t *len) {
  if (frag == 0 || frag > size)
    frag = size;
  uint64_t nframes = size == 0 ? 1 : (size + frag - 1) / frag;
  size_t cap = (size_t)(size + nframes * WS_MAX_HEADER);
  uint8_t *buf = malloc(cap ? cap : 1);
  if (buf == NULL)
    return NULL;
  size_t n = 0;
  uint64_t done = 0;
  for (uint64_t f = 0; f < nframes; f++) {
    uint64_t k = size - done < frag ? size - done : frag;
    uint8_t key[4];
    next_key(key);
    n += ws_put_header(buf + n, f + 1 == nframes, f == 0 ? opcode : WS_OP_CONT,
                       k, key);
    ws_gen_fill(g, buf + n, (size_t)k);
    ws_mask(buf + n, (size_t)k, key, 0);
    n += (size_t)k;
    done += k;
  }
  *len = n;
  return buf;
}

int ws_parser_idle(const ws_parser *ps) {
  return !ps->in_payload && ps->hdrlen == 0;
}

/* The header's length once its first two bytes are known. */
static size_t header_len(const uint8_t *h) {
  size_t n = 2;
  unsigned l = h[1] & 0x7f;
  if (l == 126)
    n += 2;
  else if (l == 127)
    n += 8;
  if (h[1] & 0x80)
    n += 4;
  return n;
}

/* Checks a complete header and starts its payload. */
static int begin_frame(ws_parser *ps, const char **why) {
  const uint8_t *h = ps->hdr;
  unsigned op = h[0] & 0x0f;
  if (h[0] & 0x70) {
    *why = "reserved bits set (no extension was negotiated)";
    return -1;
  }
  if (h[1] & 0x80) {
    *why = "masked frame from the server";
    return -1;
  }
  uint64_t len = h[1] & 0x7f;
  if (len == 126) {
    len = ((uint64_t)h[2] << 8) | h[3];
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++)
      len = (len << 8) | h[2 + i];
    if (len >> 63) {
      *why = "64-bit length with its top bit set";
      return -1;
    }
  }
  ps->fin = (h[0] & 0x80) != 0;
  ps->opcode = op;
  ps->len = len;
  ps->got = 0;
  ps->frames++;
  switch (op) {
  case WS_OP_CONT:
    if (ps->msg_opcode == 0) {
      *why = "continuation frame with no message started";
      return -1;
    }
    break;
  case WS_OP_TEXT:
  case WS_OP_BINARY:
    if (ps->msg_opcode != 0) {
      *why = "new data frame inside a fragmented message";
      return -1;
    }
    ps->msg_opcode = op;
    break;
  case WS_OP_CLOSE:
  case WS_OP_PING:
  case WS_OP_PONG:
    if (!ps->fin || len > WS_MAX_CONTROL) {
      *why = "fragmented or oversized control frame";
      return -1;
    }
    break;
  default: *why = "reserved opcode"; return -1;
  }
  ps->in_payload = 1;
  return 0;
}

/* The current frame's payload is complete. */
static int end_frame(ws_parser *ps, const ws_parser_cb *cb, void *ud) {
  ps->in_payload = 0;
  ps->hdrlen = 0;
  if (ps->opcode >= WS_OP_CLOSE)
    return cb->on_control(ud, ps->opcode, ps->ctl, (size_t)ps->len);
  if (ps->fin) {
    unsigned op = ps->msg_opcode;
    ps->msg_opcode = 0;
    return cb->on_message_end(ud, op);
  }
  return 0;
}

int ws_parse(ws_parser *ps, const uint8_t *p, size_t n, const ws_parser_cb *cb,
             void *ud, const char **why) {
  while (n > 0) {
    if (!ps->in_payload) {
      size_t need = ps->hdrlen < 2 ? 2 : header_len(ps->hdr);
      size_t k = need - ps->hdrlen < n ? need - ps->hdrlen : n;
      memcpy(ps->hdr + ps->hdrlen, p, k);
      ps->hdrlen += k;
      p += k;
      n -= k;
      if (ps->hdrlen == 2 && header_len(ps->hdr) > 2)
        continue;
      if (ps->hdrlen < need)
        return 0;
      if (begin_frame(ps, why) != 0)
        return -1;
      if (ps->len == 0 && end_frame(ps, cb, ud) != 0) {
        *why = "stopped";
        return -1;
      }
      continue;
    }
    uint64_t left = ps->len - ps->got;
    size_t k = left < n ? (size_t)left : n;
    if (ps->opcode >= WS_OP_CLOSE)
      memcpy(ps->ctl + ps->got, p, k);
    else if (cb->on_data(ud, ps->msg_opcode, p, k) != 0) {
      *why = "stopped";
      return -1;
    }
    ps->got += k;
    p += k;
    n -= k;
    if (ps->got == ps->len && end_frame(ps, cb, ud) != 0) {
      *why = "stopped";
      return -1;
    }
  }
  return 0;
}

/* ---- self-test ---- */

static int failures;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "h3ws self-test: %s:%d: %s\n", __FILE__, __LINE__,       \
              #cond);                                                          \
      failures++;                                                              \
    }                                                                          \
  } while (0)

typedef struct rec {
  uint8_t data[4096];
  size_t len;
  unsigned data_op, end_op, messages, controls, last_ctl;
  uint8_t ctl[WS_MAX_CONTROL];
  size_t ctllen;
} rec;

static int rec_data(void *ud, unsigned opcode, const uint8_t *p, size_t n) {
  rec *r = ud;
  r->data_op = opcode;
  if (r->len + n <= sizeof(r->data))
    memcpy(r->data + r->len, p, n);
  r->len += n;
  return 0;
}

static int rec_end(void *ud, unsigned opcode) {
  rec *r = ud;
  r->end_op = opcode;
  r->messages++;
  return 0;
}

static int rec_ctl(void *ud, unsigned opcode, const uint8_t *p, size_t n) {
  rec *r = ud;
  r->controls++;
  r->last_ctl = opcode;
  memcpy(r->ctl, p, n);
  r->ctllen = n;
  return 0;
}

static const ws_parser_cb rec_cb = {
    .on_data = rec_data, .on_message_end = rec_end, .on_control = rec_ctl};

static uint8_t test_key_byte;

static void test_key(uint8_t key[4]) {
  for (int i = 0; i < 4; i++)
    key[i] = (uint8_t)(test_key_byte += 0x35);
}

/* Unmasks a client message in place into what a server would echo
 * (same frames, mask bit and key removed). */
static size_t unmask_message(const uint8_t *in, size_t inlen, uint8_t *out) {
  size_t i = 0, o = 0;
  while (i < inlen) {
    size_t hl = header_len(in + i);
    uint64_t len = in[i + 1] & 0x7f;
    if (len == 126)
      len = ((uint64_t)in[i + 2] << 8) | in[i + 3];
    else if (len == 127) {
      len = 0;
      for (int k = 0; k < 8; k++)
        len = (len << 8) | in[i + 2 + k];
    }
    const uint8_t *key = in + i + hl - 4;
    o += ws_put_header(out + o, (in[i] & 0x80) != 0, in[i] & 0x0f, len, NULL);
    memcpy(out + o, in + i + hl, (size_t)len);
    ws_mask(out + o, (size_t)len, key, 0);
    o += (size_t)len;
    i += hl + (size_t)len;
  }
  return o;
}

static void test_headers(void) {
  static const uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, 16777216};
  uint8_t h[WS_MAX_HEADER];
  uint8_t key[4] = {1, 2, 3, 4};
  static const size_t want[] = {6, 6, 6, 8, 8, 14, 14};
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    size_t n = ws_put_header(h, 1, WS_OP_BINARY, lens[i], key);
    CHECK(n == want[i]);
    CHECK(h[0] == 0x82);
    CHECK((h[1] & 0x80) == 0x80);
    CHECK(header_len(h) == n);
  }
  CHECK(ws_put_header(h, 0, WS_OP_TEXT, 5, NULL) == 2);
  CHECK(h[0] == 0x01 && h[1] == 5);
}

static void test_gen(void) {
  uint8_t a[1000], b[1000];
  ws_gen g1, g2;
  ws_gen_init(&g1, ws_seed(1, 2, 3), 0);
  ws_gen_init(&g2, ws_seed(1, 2, 3), 0);
  ws_gen_fill(&g1, a, sizeof(a));
  /* The same bytes in pieces of any size. */
  size_t off = 0, step = 1;
  while (off < sizeof(b)) {
    size_t k = step < sizeof(b) - off ? step : sizeof(b) - off;
    ws_gen_fill(&g2, b + off, k);
    off += k;
    step = step * 3 % 17 + 1;
  }
  CHECK(memcmp(a, b, sizeof(a)) == 0);
  CHECK(ws_seed(1, 2, 3) != ws_seed(1, 2, 4));
  CHECK(ws_seed(1, 2, 3) != ws_seed(2, 1, 3));
  ws_gen_init(&g1, 7, 1);
  ws_gen_fill(&g1, a, sizeof(a));
  int printable_only = 1;
  for (size_t i = 0; i < sizeof(a); i++)
    if (a[i] < 0x20 || a[i] > 0x7e)
      printable_only = 0;
  CHECK(printable_only);
}

/* A fragmented message with a ping between its frames, fed byte by byte
 * and at once. */
static void test_roundtrip(size_t size, uint64_t frag, unsigned op) {
  ws_gen g;
  size_t len;
  ws_gen_init(&g, ws_seed(9, 9, size), op == WS_OP_TEXT);
  uint8_t *msg = ws_build_message(op, &g, size, frag, test_key, &len);
  CHECK(msg != NULL);
  if (msg == NULL)
    return;
  uint8_t *plain = malloc(len + 16);
  size_t plen = unmask_message(msg, len, plain);
  uint8_t want[4096];
  ws_gen_init(&g, ws_seed(9, 9, size), op == WS_OP_TEXT);
  ws_gen_fill(&g, want, size);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    rec r = {0};
    ws_parser ps = {0};
    const char *why = NULL;
    int rv = 0;
    if (bytewise)
      for (size_t i = 0; i < plen && rv == 0; i++)
        rv = ws_parse(&ps, plain + i, 1, &rec_cb, &r, &why);
    else
      rv = ws_parse(&ps, plain, plen, &rec_cb, &r, &why);
    CHECK(rv == 0);
    CHECK(r.messages == 1 && r.end_op == op);
    CHECK(r.len == size && memcmp(r.data, want, size) == 0);
    CHECK(ws_parser_idle(&ps));
  }
  free(plain);
  free(msg);
}

static void test_interleaved_control(void) {
  uint8_t buf[64];
  size_t n = 0;
  n += ws_put_header(buf + n, 0, WS_OP_TEXT, 2, NULL);
  memcpy(buf + n, "ab", 2), n += 2;
  n += ws_put_header(buf + n, 1, WS_OP_PING, 3, NULL);
  memcpy(buf + n, "xyz", 3), n += 3;
  n += ws_put_header(buf + n, 1, WS_OP_CONT, 1, NULL);
  buf[n++] = 'c';
  rec r = {0};
  ws_parser ps = {0};
  const char *why = NULL;
  CHECK(ws_parse(&ps, buf, n, &rec_cb, &r, &why) == 0);
  CHECK(r.messages == 1 && r.len == 3 && memcmp(r.data, "abc", 3) == 0);
  CHECK(r.controls == 1 && r.last_ctl == WS_OP_PING && r.ctllen == 3);
}

static void expect_error(const uint8_t *p, size_t n) {
  rec r = {0};
  ws_parser ps = {0};
  const char *why = NULL;
  CHECK(ws_parse(&ps, p, n, &rec_cb, &r, &why) == -1 && why != NULL);
}

static void test_errors(void) {
  static const uint8_t masked[] = {0x81, 0x81, 1, 2, 3, 4, 'a'};
  static const uint8_t rsv[] = {0xc1, 0x01, 'a'};
  static const uint8_t cont[] = {0x80, 0x01, 'a'};
  static const uint8_t opcode[] = {0x83, 0x00};
  static const uint8_t bigping[] = {0x89, 0x7e, 0x00, 0x7e};
  static const uint8_t fragping[] = {0x09, 0x00};
  static const uint8_t twice[] = {0x01, 0x01, 'a', 0x01, 0x01, 'b'};
  static const uint8_t top[] = {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0};
  expect_error(masked, sizeof(masked));
  expect_error(rsv, sizeof(rsv));
  expect_error(cont, sizeof(cont));
  expect_error(opcode, sizeof(opcode));
  expect_error(bigping, sizeof(bigping));
  expect_error(fragping, sizeof(fragping));
  expect_error(twice, sizeof(twice));
  expect_error(top, sizeof(top));
}

static void test_mask(void) {
  uint8_t a[37], b[37];
  uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
  for (size_t i = 0; i < sizeof(a); i++)
    a[i] = b[i] = (uint8_t)(i * 7);
  ws_mask(a, sizeof(a), key, 0);
  for (size_t i = 0; i < sizeof(b); i++)
    CHECK(a[i] == (uint8_t)(b[i] ^ key[i & 3]));
  /* Masking in two pieces at an offset is the same as at once. */
  ws_mask(b, 5, key, 0);
  ws_mask(b + 5, sizeof(b) - 5, key, 5);
  CHECK(memcmp(a, b, sizeof(a)) == 0);
}

int ws_self_test(void) {
  failures = 0;
  test_headers();
  test_gen();
  test_mask();
  static const size_t sizes[] = {0, 1, 125, 126, 127, 1000, 4000};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    test_roundtrip(sizes[i], 0, WS_OP_BINARY);
    test_roundtrip(sizes[i], 0, WS_OP_TEXT);
    test_roundtrip(sizes[i], 7, WS_OP_BINARY);
    test_roundtrip(sizes[i], 300, WS_OP_TEXT);
  }
  test_interleaved_control();
  test_errors();
  return failures;
}
