/*
 * libFuzzer target for the HTTP/3 request check (proxy/quic/h3_shadow.c): the
 * frames and QPACK field sections of one request stream, fed in pieces the
 * input chooses, then to nghttp3 as the session does.
 *
 * Input: a control byte, a cut list, then the stream.
 *   ctl bit 0    the stream is the rest of the input as it is (raw);
 *                otherwise it is built from the ops below
 *   ctl bit 1    the stream does not end (no FIN)
 *   ctl bit 2    the cut list repeats until the stream is used up;
 *                otherwise what is left after it goes in one piece
 *   ctl bit 3    the FIN comes in a call of its own, with no bytes
 *   then one byte n and n bytes: the sizes of the pieces (0 is a call
 *   with no bytes)
 * Ops (built streams), each an op byte (kind = op & 7, arg = op >> 3):
 *   0  HEADERS frame of arg fields (see field()); a byte follows: bit 0
 *      encodes with nghttp3's own QPACK encoder (Huffman, static table),
 *      bits 1-2 make the declared length 1 short (1) or 1 long (2)
 *   1  DATA frame of (arg << 8 | next byte) filler bytes
 *   2  a frame of another type (reserved, unknown, or one HTTP/3 forbids
 *      on a request stream; arg picks), next byte bytes long
 *   3  raw bytes: a length byte and that many bytes
 *   4  the end of the stream (the rest of the input is not used)
 *   5  HEADERS frame of a valid request head (GET or POST, by arg's low
 *      bit) followed by (arg >> 1) more fields
 *   6  DATA frame whose type and length are written with varints of 1, 2,
 *      4 or 8 bytes (arg & 3), next byte bytes long
 *   7  as 3
 *
 * Each stream is fed three ways: whole, in the input's pieces, and a byte
 * at a time. Checked, besides memory errors and leaks:
 *   - a call returns 0, H3G_ERR_PROTO or an nghttp3 error; *pgood never
 *     exceeds the bytes fed, and is all of them on 0; a refusal says why;
 *   - a refused stream stays refused: every later call returns
 *     H3G_ERR_PROTO with *pgood 0;
 *   - the verdict (accepted, refused, connection error) does not depend on
 *     the cuts, and where a refusal stops the stream only moves forward
 *     with finer cuts (whole <= pieces <= bytes: a field begun in an
 *     earlier piece has partly gone to nghttp3 already, never completed);
 *   - nghttp3, fed what the shadow let through as h3_session.c feeds it,
 *     never reports a field that h3g_request_field_check() refuses, nor
 *     more body than a declared content-length, nor a complete request
 *     whose body is shorter than it; and what it is fed, walked frame by
 *     frame here, never announces DATA beyond the declared length, nor
 *     ends (FIN) short of it. nghttp3 would refuse those itself, but as
 *     a connection error, where RFC 9114 §4.1.2 wants a stream error.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp3/nghttp3.h>

#include "common.h"
#include "h3_shadow.h"
#include "http_headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
  STREAM_MAX = 64 * 1024,
  FIELDS_MAX = 64,
  STREAM_ID = 0,
};

/* ---- reading the input ------------------------------------------------ */

typedef struct reader {
  const uint8_t *p;
  size_t n;
} reader;

static int next(reader *r, uint8_t *out) {
  if (r->n == 0)
    return 0;
  *out = *r->p++;
  r->n--;
  return 1;
}

static uint8_t next0(reader *r) {
  uint8_t c = 0;
  next(r, &c);
  return c;
}

/* ---- building the stream ---------------------------------------------- */

typedef struct stream {
  uint8_t b[STREAM_MAX];
  size_t n;
  int full;
} stream;

static void put(stream *s, const void *p, size_t n) {
  if (n > STREAM_MAX - s->n) {
    s->full = 1;
    n = STREAM_MAX - s->n;
  }
  if (n > 0)
    memcpy(s->b + s->n, p, n);
  s->n += n;
}

static void put_byte(stream *s, uint8_t c) {
  put(s, &c, 1);
}

/* RFC 9000 §16 variable-length integer in width bytes (0: shortest). */
static void put_varint(stream *s, uint64_t v, size_t width) {
  if (width == 0)
    width = v < 64 ? 1 : v < 16384 ? 2 : v < (1u << 30) ? 4 : 8;
  uint8_t bits = width == 1 ? 0 : width == 2 ? 0x40 : width == 4 ? 0x80 : 0xc0;
  for (size_t i = 0; i < width; i++) {
    uint8_t c = (uint8_t)(v >> (8 * (width - 1 - i)));
    put_byte(s, i == 0 ? (uint8_t)(c | bits) : c);
  }
}

/* RFC 7541 §5.1 prefixed integer; first holds the bits above the prefix. */
static void put_qint(stream *s, uint8_t first, unsigned prefix, uint64_t v) {
  uint64_t max = (1u << prefix) - 1;
  if (v < max) {
    put_byte(s, (uint8_t)(first | v));
    return;
  }
  put_byte(s, (uint8_t)(first | max));
  v -= max;
  while (v >= 128) {
    put_byte(s, (uint8_t)(0x80 | (v & 0x7f)));
    v >>= 7;
  }
  put_byte(s, (uint8_t)v);
}

/* Names and values that the checks treat specially. */
static const char *const dict[] = {
    ":method",     ":scheme",    ":authority", ":path",
    ":protocol",   ":status",    ":foo",       "content-length",
    "host",        "te",         "connection", "keep-alive",
    "proxy-connection", "transfer-encoding", "upgrade", "cookie",
    "priority",    "expect",     "Content-Length", "x-a",
    "GET",         "POST",       "HEAD",       "CONNECT",
    "https",       "http",       "example.com", "example.com:443",
    "a@b",         "/",          "/x?y=1",     "*",
    "0",           "5",          "10",         "1, 1",
    "01",          "-1",         "18446744073709551616", "trailers",
    "gzip",        "100-continue", " x",       "x ",
    "x\ty",        "a\r\nb",     "a\nb",       "",
    "u=1, i",      "x:y",        "\x7f",       "\x80\xff",
};

typedef struct str {
  const uint8_t *p;
  size_t n;
  uint8_t raw[128];
} str;

/* A string: a byte with the high bit set picks a dictionary entry, else
 * it is a length and that many bytes follow. */
static void get_str(reader *r, str *out) {
  uint8_t s = next0(r);
  if (s & 0x80) {
    const char *d = dict[(s & 0x7f) % H3G_ARRAY_LEN(dict)];
    out->p = (const uint8_t *)d;
    out->n = strlen(d);
    return;
  }
  size_t n = H3G_MIN((size_t)s, r->n);
  memcpy(out->raw, r->p, n);
  r->p += n;
  r->n -= n;
  out->p = out->raw;
  out->n = n;
}

/* RFC 9204 Appendix A: the static table entries requests use most. */
enum {
  S_AUTHORITY = 0,
  S_PATH = 1,
  S_METHOD_GET = 17,
  S_METHOD_POST = 20,
  S_SCHEME_HTTPS = 23,
  S_STATIC_ENTRIES = 99,
};

/* One field section being built, in both encodings. */
typedef struct section {
  stream lines; /* hand-encoded field lines, after the prefix */
  nghttp3_nv nv[FIELDS_MAX];
  str names[FIELDS_MAX], values[FIELDS_MAX];
  size_t nnv;
} section;

static void sec_add_nv(section *sec, const str *name, const str *value) {
  if (sec->nnv == FIELDS_MAX)
    return;
  size_t i = sec->nnv++;
  sec->names[i] = *name;
  sec->values[i] = *value;
  if (name->p == name->raw)
    sec->names[i].p = sec->names[i].raw;
  if (value->p == value->raw)
    sec->values[i].p = sec->values[i].raw;
  sec->nv[i] = (nghttp3_nv){
      .name = sec->names[i].p,
      .namelen = sec->names[i].n,
      .value = sec->values[i].p,
      .valuelen = sec->values[i].n,
  };
}

static void sec_literal(section *sec, const str *name, const str *value) {
  put_qint(&sec->lines, 0x20, 3, name->n); /* literal name, no Huffman */
  put(&sec->lines, name->p, name->n);
  put_qint(&sec->lines, 0x00, 7, value->n);
  put(&sec->lines, value->p, value->n);
  sec_add_nv(sec, name, value);
}

/* One field from the input: its representation (indexed static entry,
 * static name with a literal value, or literal name and value) and its
 * strings. Static entries are known to the hand encoder only. */
static void field(reader *r, section *sec) {
  uint8_t rep = next0(r);
  str name, value;
  switch (rep & 3) {
  case 0: /* indexed field line, static table */
    put_qint(&sec->lines, 0xc0, 6, next0(r) % S_STATIC_ENTRIES);
    break;
  case 1: /* literal with a static name reference */
    put_qint(&sec->lines, 0x50, 4, next0(r) % S_STATIC_ENTRIES);
    get_str(r, &value);
    put_qint(&sec->lines, 0x00, 7, value.n);
    put(&sec->lines, value.p, value.n);
    break;
  default:
    get_str(r, &name);
    get_str(r, &value);
    sec_literal(sec, &name, &value);
    break;
  }
}

/* Adds name: value to the nv list only (the hand encoding of the same
 * field is written by the caller). */
static void nv_only(section *sec, const char *name, const char *value) {
  str n = {.p = (const uint8_t *)name, .n = strlen(name)};
  str v = {.p = (const uint8_t *)value, .n = strlen(value)};
  sec_add_nv(sec, &n, &v);
}

/* The four pseudo-header fields of a valid request, both encodings. */
static void sec_request_head(section *sec, int post) {
  put_qint(&sec->lines, 0xc0, 6, post ? S_METHOD_POST : S_METHOD_GET);
  put_qint(&sec->lines, 0xc0, 6, S_SCHEME_HTTPS);
  put_qint(&sec->lines, 0x50, 4, S_AUTHORITY);
  put_qint(&sec->lines, 0x00, 7, 11);
  put(&sec->lines, "example.com", 11);
  put_qint(&sec->lines, 0x50, 4, S_PATH);
  put_qint(&sec->lines, 0x00, 7, 1);
  put(&sec->lines, "/", 1);
  nv_only(sec, ":method", post ? "POST" : "GET");
  nv_only(sec, ":scheme", "https");
  nv_only(sec, ":authority", "example.com");
  nv_only(sec, ":path", "/");
}

/* Appends a HEADERS frame holding sec; how = the op's extra byte. */
static void put_headers(stream *s, section *sec, uint8_t how) {
  stream *payload = malloc(sizeof(*payload));
  if (payload == NULL)
    abort();
  payload->n = 0;
  payload->full = 0;
  if (how & 1) {
    nghttp3_qpack_encoder *enc;
    nghttp3_buf pbuf, rbuf, ebuf;
    const nghttp3_mem *mem = nghttp3_mem_default();
    if (nghttp3_qpack_encoder_new(&enc, 0, mem) != 0)
      abort();
    nghttp3_buf_init(&pbuf);
    nghttp3_buf_init(&rbuf);
    nghttp3_buf_init(&ebuf);
    if (nghttp3_qpack_encoder_encode(enc, &pbuf, &rbuf, &ebuf, STREAM_ID,
                                     sec->nv, sec->nnv) != 0)
      abort();
    /* No dynamic table: nothing on the encoder stream. */
    if (nghttp3_buf_len(&ebuf) != 0)
      abort();
    put(payload, pbuf.pos, nghttp3_buf_len(&pbuf));
    put(payload, rbuf.pos, nghttp3_buf_len(&rbuf));
    nghttp3_buf_free(&pbuf, mem);
    nghttp3_buf_free(&rbuf, mem);
    nghttp3_buf_free(&ebuf, mem);
    nghttp3_qpack_encoder_del(enc);
  } else {
    put_byte(payload, 0x00); /* Required Insert Count 0 */
    put_byte(payload, 0x00); /* Delta Base 0 */
    put(payload, sec->lines.b, sec->lines.n);
  }
  uint64_t len = payload->n;
  if (((how >> 1) & 3) == 1 && len > 0)
    len--;
  else if (((how >> 1) & 3) == 2)
    len++;
  put_varint(s, 0x01, 0);
  put_varint(s, len, 0);
  put(s, payload->b, payload->n);
  free(payload);
}

static void put_filler(stream *s, size_t n) {
  static const uint8_t filler[256];
  while (n > 0) {
    size_t k = H3G_MIN(n, sizeof(filler));
    put(s, filler, k);
    n -= k;
  }
}

static void build(reader *r, stream *s) {
  static const uint64_t other_types[] = {
      0x21, 0x40, 0x1f * 7 + 0x21, 0x3fffffffffffffffull,
      0x02, 0x03, 0x04, 0x05, 0x07, 0x0d, 0x0f00, 0x10,
      0x06, 0x08, 0x09, 0x0e, 0x0f, 0x1e, 0x20, 0xf0700,
  };
  section *sec = malloc(sizeof(*sec));
  if (sec == NULL)
    abort();
  uint8_t op;
  while (!s->full && next(r, &op)) {
    uint8_t arg = op >> 3;
    switch (op & 7) {
    case 0:
    case 5:
      sec->lines.n = 0;
      sec->lines.full = 0;
      sec->nnv = 0;
      if ((op & 7) == 5) {
        sec_request_head(sec, arg & 1);
        arg >>= 1;
      }
      for (uint8_t i = 0; i < arg && r->n > 0; i++)
        field(r, sec);
      put_headers(s, sec, next0(r));
      break;
    case 1: {
      size_t len = (size_t)arg << 8 | next0(r);
      put_varint(s, 0x00, 0);
      put_varint(s, len, 0);
      put_filler(s, len);
      break;
    }
    case 2: {
      uint8_t len = next0(r);
      put_varint(s, other_types[arg % H3G_ARRAY_LEN(other_types)], 0);
      put_varint(s, len, 0);
      put_filler(s, len);
      break;
    }
    case 4:
      free(sec);
      return;
    case 6: {
      size_t width = (size_t)1 << (arg & 3);
      uint8_t len = next0(r);
      put_varint(s, 0x00, width);
      put_varint(s, len, width);
      put_filler(s, len);
      break;
    }
    default: {
      uint8_t len = next0(r);
      size_t n = H3G_MIN((size_t)len, r->n);
      put(s, r->p, n);
      r->p += n;
      r->n -= n;
      break;
    }
    }
  }
  free(sec);
}

/* ---- nghttp3, fed what the shadow lets through ------------------------- */

typedef struct oracle {
  nghttp3_conn *h3;
  int off;                /* stopped: the session reads no more */
  int64_t content_length; /* as the fields nghttp3 reported declare */
  uint64_t body;
  /* what the shadow let through, in order, and whether the FIN went too */
  uint8_t *passed;
  size_t passed_len;
  int fin_passed;
} oracle;

static void check_field(oracle *o, nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                        int trailer) {
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
  nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
  int64_t cl = o->content_length;
  const char *why = NULL;
  if (h3g_request_field_check(n.base, n.len, v.base, v.len, trailer,
                              trailer ? &cl : &o->content_length, &why) != 0)
    abort(); /* a field the shadow should have stopped */
}

static int on_recv_header(nghttp3_conn *h3, int64_t stream_id, int32_t token,
                          nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                          uint8_t flags, void *conn_user_data,
                          void *stream_user_data) {
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(token);
  H3G_UNUSED(flags);
  H3G_UNUSED(stream_user_data);
  check_field(conn_user_data, name, value, 0);
  return 0;
}

static int on_recv_trailer(nghttp3_conn *h3, int64_t stream_id,
                           int32_t token, nghttp3_rcbuf *name,
                           nghttp3_rcbuf *value, uint8_t flags,
                           void *conn_user_data, void *stream_user_data) {
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(token);
  H3G_UNUSED(flags);
  H3G_UNUSED(stream_user_data);
  check_field(conn_user_data, name, value, 1);
  return 0;
}

static int on_recv_data(nghttp3_conn *h3, int64_t stream_id,
                        const uint8_t *data, size_t len, void *conn_user_data,
                        void *stream_user_data) {
  oracle *o = conn_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(data);
  H3G_UNUSED(stream_user_data);
  o->body += len;
  if (o->content_length >= 0 && o->body > (uint64_t)o->content_length)
    abort();
  return 0;
}

static int on_end_stream(nghttp3_conn *h3, int64_t stream_id,
                         void *conn_user_data, void *stream_user_data) {
  oracle *o = conn_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(stream_user_data);
  if (o->content_length >= 0 && o->body != (uint64_t)o->content_length)
    abort();
  return 0;
}

/* nghttp3 refused the message itself: the session stops reading. */
static int on_stop_sending(nghttp3_conn *h3, int64_t stream_id,
                           uint64_t app_error_code, void *conn_user_data,
                           void *stream_user_data) {
  oracle *o = conn_user_data;
  H3G_UNUSED(h3);
  H3G_UNUSED(stream_id);
  H3G_UNUSED(app_error_code);
  H3G_UNUSED(stream_user_data);
  o->off = 1;
  return 0;
}

static const nghttp3_callbacks oracle_callbacks = {
    .recv_header = on_recv_header,
    .recv_trailer = on_recv_trailer,
    .recv_data = on_recv_data,
    .end_stream = on_end_stream,
    .stop_sending = on_stop_sending,
};

/* For a stream of n bytes. */
static void oracle_init(oracle *o, size_t n) {
  nghttp3_settings settings;
  nghttp3_settings_default(&settings);
  settings.qpack_max_dtable_capacity = 0;
  settings.qpack_blocked_streams = 0;
  *o = (oracle){.content_length = -1, .passed = malloc(n ? n : 1)};
  if (o->passed == NULL)
    abort();
  if (nghttp3_conn_server_new(&o->h3, &oracle_callbacks, &settings,
                              nghttp3_mem_default(), o) != 0)
    abort();
  /* As stream_open() does: nghttp3 learns of the stream first. */
  if (nghttp3_conn_read_stream(o->h3, STREAM_ID, NULL, 0, 0) < 0)
    o->off = 1;
}

/* The bytes (and FIN) the shadow let through, as h3_session.c passes
 * them on. */
static void oracle_feed(oracle *o, const uint8_t *p, size_t n, int fin) {
  if (n > 0) {
    memcpy(o->passed + o->passed_len, p, n); /* a prefix of the stream */
    o->passed_len += n;
  }
  o->fin_passed |= fin;
  if (o->off || (n == 0 && !fin))
    return;
  nghttp3_ssize rv = nghttp3_conn_read_stream(o->h3, STREAM_ID, p, n, fin);
  if (rv < 0)
    o->off = 1; /* the stream (MALFORMED_HTTP_MESSAGING) or the connection
                 * ends; nothing more is read */
}

/* Reads a QUIC varint at p (n bytes available) into *v. Returns its
 * length, or 0 when it is not all there. */
static size_t get_varint(const uint8_t *p, size_t n, uint64_t *v) {
  if (n == 0 || h3g_varint_len(p[0]) > n)
    return 0;
  *v = h3g_varint_get(p);
  return h3g_varint_len(p[0]);
}

/*
 * The DATA payload that frame headers announce in p, after a complete
 * header section, walked here apart from the shadow. Returns -1 when the
 * stream breaks a frame rule nghttp3 enforces itself (DATA before the
 * header section, anything after the trailers, an empty section, a type
 * forbidden on request streams): the shadow leaves those to nghttp3 and is
 * not judged. *whole: p ends at a frame boundary after a header section.
 */
static int64_t data_announced(const uint8_t *p, size_t n, int *whole) {
  enum { BEFORE, BODY, AFTER } state = BEFORE;
  uint64_t data = 0;
  size_t off = 0;
  *whole = 0;
  while (off < n) {
    uint64_t type, len;
    size_t a = get_varint(p + off, n - off, &type);
    size_t b = a ? get_varint(p + off + a, n - off - a, &len) : 0;
    if (b == 0)
      return (int64_t)data; /* a frame header cut short */
    off += a + b;
    switch (type) {
    case 0x00:
      if (state != BODY)
        return -1;
      data += len;
      break;
    case 0x01:
      if (len == 0 || state == AFTER)
        return -1;
      state = state == BEFORE ? BODY : AFTER;
      break;
    case 0x02: case 0x03: case 0x04: case 0x05: case 0x06: case 0x07:
    case 0x08: case 0x09: case 0x0d:
      return -1;
    default:
      break;
    }
    if (len > n - off)
      return (int64_t)data; /* a payload cut short */
    off += (size_t)len;
  }
  *whole = state != BEFORE;
  return (int64_t)data;
}

/* What nghttp3 was given holds to the declared length: never more DATA
 * than it, and all of it by a FIN the shadow let through. */
static void oracle_check_length(const oracle *o) {
  int whole;
  int64_t data = data_announced(o->passed, o->passed_len, &whole);
  if (data < 0 || o->content_length < 0)
    return;
  if (data > o->content_length)
    abort();
  if (o->fin_passed && whole && data != o->content_length)
    abort();
}

/* ---- feeding the shadow --------------------------------------------------- */

enum { CUT_WHOLE, CUT_INPUT, CUT_BYTES };

typedef struct cuts {
  const uint8_t *size;
  size_t n;
  int repeat;
} cuts;

/* What one way of feeding the stream ended with. */
typedef struct verdict {
  int rv;      /* 0, H3G_ERR_PROTO or the first nghttp3 error */
  size_t stop; /* on H3G_ERR_PROTO: the bytes that went to nghttp3 */
} verdict;

/* Calls a piece may take before the rest goes in one (zero-size pieces). */
#define CALLS_MAX (256u * 1024u)

static size_t piece_size(int how, const cuts *c, size_t call, size_t left) {
  size_t k = left;
  if (how == CUT_BYTES)
    k = 1;
  else if (how == CUT_INPUT && call < CALLS_MAX &&
           (call < c->n || (c->repeat && c->n > 0)))
    k = c->size[call % c->n];
  return H3G_MIN(k, left);
}

static int sticky(h3g_h3_shadow *sh, nghttp3_qpack_decoder *dec,
                  const uint8_t *p, size_t n, int fin) {
  size_t good = 1;
  const char *why = NULL;
  return h3g_h3_shadow_feed(sh, dec, p, n, fin, &good, &why) ==
             H3G_ERR_PROTO &&
         good == 0;
}

static verdict run(const uint8_t *d, size_t n, int fin, int fin_alone,
                   int how, const cuts *c, oracle *o) {
  h3g_h3_shadow sh;
  nghttp3_qpack_decoder *dec;
  verdict v = {0, n};
  if (h3g_h3_shadow_decoder_new(&dec) != 0)
    abort();
  h3g_h3_shadow_init(&sh, STREAM_ID);
  size_t off = 0;
  for (size_t call = 0;; call++) {
    size_t k = piece_size(how, c, call, n - off);
    int last = off + k == n;
    int call_fin = fin && last && !fin_alone;
    size_t good = (size_t)-1;
    const char *why = NULL;
    int rv = h3g_h3_shadow_feed(&sh, dec, d + off, k, call_fin, &good, &why);
    if (good > k)
      abort();
    if (rv == 0) {
      if (good != k)
        abort();
      if (o != NULL)
        oracle_feed(o, d + off, k, call_fin);
    } else if (rv == H3G_ERR_PROTO) {
      if (why == NULL || why[0] == '\0')
        abort();
      if (o != NULL)
        oracle_feed(o, d + off, good, 0);
      v.rv = rv;
      v.stop = off + good;
      /* Refused for good: the rest, a FIN, an empty call. */
      if (!sticky(&sh, dec, d + off + k, n - off - k, 0) ||
          !sticky(&sh, dec, d + n, 0, 1) || !sticky(&sh, dec, d, 0, 0))
        abort();
      break;
    } else if (rv <= NGHTTP3_ERR_INVALID_ARGUMENT) {
      v.rv = rv; /* a connection error: the connection closes */
      break;
    } else {
      abort();
    }
    off += k;
    if (last && !(fin && fin_alone))
      break;
    if (last) {
      rv = h3g_h3_shadow_feed(&sh, dec, d + n, 0, 1, &good, &why);
      if (rv == 0 && good != 0)
        abort();
      if (rv == 0 && o != NULL)
        oracle_feed(o, d + n, 0, 1);
      if (rv == H3G_ERR_PROTO && (good != 0 || why == NULL))
        abort();
      if (rv != 0) {
        v.rv = rv;
        v.stop = n;
      }
      break;
    }
  }
  h3g_h3_shadow_free(&sh);
  h3g_h3_shadow_free(&sh); /* safe twice */
  nghttp3_qpack_decoder_del(dec);
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  reader r = {data, size};
  uint8_t ctl;
  if (!next(&r, &ctl))
    return 0;
  cuts c = {.repeat = (ctl >> 2) & 1};
  size_t ncuts = next0(&r);
  c.n = H3G_MIN(ncuts, r.n);
  c.size = r.p;
  r.p += c.n;
  r.n -= c.n;
  if (c.repeat) {
    size_t sum = 0;
    for (size_t i = 0; i < c.n; i++)
      sum += c.size[i];
    if (sum == 0)
      c.repeat = 0;
  }

  stream *s = malloc(sizeof(*s));
  if (s == NULL)
    abort();
  s->n = 0;
  s->full = 0;
  if (ctl & 1)
    put(s, r.p, r.n);
  else
    build(&r, s);
  /* An exact-size copy, so that ASan sees a read past the stream. */
  uint8_t *d = malloc(s->n ? s->n : 1);
  if (d == NULL)
    abort();
  memcpy(d, s->b, s->n);
  size_t n = s->n;
  free(s);

  int fin = !(ctl & 2);
  int fin_alone = (ctl >> 3) & 1;
  oracle o;
  oracle_init(&o, n);
  verdict whole = run(d, n, fin, fin_alone, CUT_WHOLE, &c, NULL);
  verdict pieces = run(d, n, fin, fin_alone, CUT_INPUT, &c, &o);
  verdict bytes = run(d, n, fin, fin_alone, CUT_BYTES, &c, NULL);
  oracle_check_length(&o);
  nghttp3_conn_del(o.h3);
  free(o.passed);
  free(d);

  if (whole.rv != pieces.rv || whole.rv != bytes.rv)
    abort();
  if (whole.rv == H3G_ERR_PROTO &&
      !(whole.stop <= pieces.stop && pieces.stop <= bytes.stop))
    abort();
  return 0;
}
