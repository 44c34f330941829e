/* Tests for proxy/quic/h3_shadow.c: the frame layer, field checks and
 * content-length of a request stream, fed whole, split at every byte
 * boundary, and byte by byte. Also h3g_request_field_check()
 * (proxy/http/http_headers.c), which the shadow applies to each field. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp3/nghttp3.h>

#include "common.h"
#include "h3_shadow.h"
#include "http_headers.h"
#include "unit.h"
#include "wire_bytes.h"

#define U8(s) ((const uint8_t *)(s))
#define STREAM_ID 4

/* ---- building request streams ------------------------------------------ */

/* RFC 7541 §5.1 prefixed integer; first holds the bits above the prefix. */
static void put_qint(bytes *o, uint8_t first, unsigned prefix, uint64_t v) {
  uint64_t max = (1u << prefix) - 1;
  if (v < max) {
    put_byte(o, (uint8_t)(first | v));
    return;
  }
  put_byte(o, (uint8_t)(first | max));
  v -= max;
  while (v >= 128) {
    put_byte(o, (uint8_t)(0x80 | (v & 0x7f)));
    v >>= 7;
  }
  put_byte(o, (uint8_t)v);
}

/* A field section being built; fields[] remembers where each line began. */
typedef struct section {
  bytes b;
  size_t field_at[32];
  size_t nfields;
} section;

static void sec_init(section *s) {
  memset(s, 0, sizeof(*s));
  put_byte(&s->b, 0x00); /* Required Insert Count 0 */
  put_byte(&s->b, 0x00); /* Delta Base 0 */
}

static void sec_mark(section *s) {
  s->field_at[s->nfields++] = s->b.n;
}

/* Literal field line with literal name, no Huffman (RFC 9204 §4.5.6). */
static void sec_lit(section *s, const char *name, size_t nlen,
                    const char *value, size_t vlen) {
  sec_mark(s);
  put_qint(&s->b, 0x20, 3, nlen);
  put(&s->b, name, nlen);
  put_qint(&s->b, 0x00, 7, vlen);
  put(&s->b, value, vlen);
}

static void sec_lits(section *s, const char *name, const char *value) {
  sec_lit(s, name, strlen(name), value, strlen(value));
}

/* Indexed field line, static table (§4.5.2). */
static void sec_static(section *s, unsigned idx) {
  sec_mark(s);
  put_qint(&s->b, 0xc0, 6, idx);
}

/* Literal field line with a static name reference (§4.5.4). */
static void sec_static_name(section *s, unsigned idx, const char *value) {
  sec_mark(s);
  put_qint(&s->b, 0x50, 4, idx);
  put_qint(&s->b, 0x00, 7, strlen(value));
  put(&s->b, value, strlen(value));
}

/* RFC 9204 Appendix A. */
enum {
  S_AUTHORITY = 0,
  S_PATH = 1,
  S_CONTENT_LENGTH = 4,
  S_METHOD_GET = 17,
  S_METHOD_POST = 20,
  S_SCHEME_HTTPS = 23,
};

static void sec_request(section *s, unsigned method) {
  sec_init(s);
  sec_static(s, method);
  sec_static(s, S_SCHEME_HTTPS);
  sec_static_name(s, S_AUTHORITY, "example.com");
  sec_static_name(s, S_PATH, "/x?y=1");
}

/* Appends a frame; returns the offset of its payload in o. */
static size_t put_frame(bytes *o, uint64_t type, const void *payload,
                        size_t n) {
  put_varint(o, type);
  put_varint(o, n);
  size_t at = o->n;
  put(o, payload, n);
  return at;
}

static size_t put_headers(bytes *o, const section *s) {
  return put_frame(o, 0x1, s->b.b, s->b.n);
}

/* ---- feeding ------------------------------------------------------------ */

typedef struct result {
  int rv;          /* first non-zero return, or 0 */
  size_t good;     /* absolute: bytes that may reach nghttp3 */
  size_t at_start; /* the chunk that returned rv */
  size_t at_end;
  int64_t content_length;
} result;

/* Feeds b in chunks ending at cuts[0..ncuts) (the last must be n); fin goes
 * with the last chunk. After a refusal every later chunk must be refused
 * with nothing to pass. */
static result feed_chunks(const uint8_t *b, size_t n, int fin,
                          const size_t *cuts, size_t ncuts) {
  nghttp3_qpack_decoder *dec = NULL;
  h3g_h3_shadow sh;
  result r = {.rv = 0, .good = n};
  size_t from = 0;

  CHECK_EQ_INT(h3g_h3_shadow_decoder_new(&dec), 0);
  h3g_h3_shadow_init(&sh, STREAM_ID);
  for (size_t i = 0; i < ncuts; i++) {
    size_t to = cuts[i];
    size_t good = 12345;
    const char *why = NULL;
    int last = i + 1 == ncuts;
    int rv = h3g_h3_shadow_feed(&sh, dec, b + from, to - from, last && fin,
                                &good, &why);
    if (r.rv != 0) {
      if (r.rv == H3G_ERR_PROTO) {
        CHECK_EQ_INT(rv, H3G_ERR_PROTO);
        CHECK_EQ_INT(good, 0);
      }
    } else if (rv != 0) {
      r.rv = rv;
      r.at_start = from;
      r.at_end = to;
      if (rv == H3G_ERR_PROTO) {
        CHECK(why != NULL);
        CHECK(good <= to - from);
        r.good = from + good;
      }
    } else {
      CHECK_EQ_INT(good, to - from);
    }
    from = to;
  }
  r.content_length = sh.content_length;
  h3g_h3_shadow_free(&sh);
  h3g_h3_shadow_free(&sh); /* twice is allowed */
  nghttp3_qpack_decoder_del(dec);
  return r;
}

/*
 * What a case expects: rv; for a refusal, the offending element spans
 * [start, end) of the stream (a field line, a DATA frame header; for a
 * stream ending short, start = end = n). It is seen when its last byte
 * (or the FIN) arrives, and nghttp3 may get everything before it, or
 * before that chunk if the element began earlier.
 */
typedef struct expect {
  int rv;
  size_t start, end;
  int64_t content_length; /* checked when rv is 0 */
} expect;

static int check_result(const result *r, const expect *e, size_t n) {
  int ok = 1;
#define EXPECT(c)                                                              \
  do {                                                                         \
    CHECK(c);                                                                  \
    if (!(c))                                                                  \
      ok = 0;                                                                  \
  } while (0)
  EXPECT(r->rv == e->rv);
  if (e->rv == H3G_ERR_PROTO && r->rv == H3G_ERR_PROTO) {
    size_t seen = e->end == n && e->start == n ? n : e->end - 1;
    if (seen == n)
      EXPECT(r->at_end == n);
    else
      EXPECT(r->at_start <= seen && seen < r->at_end);
    EXPECT(r->good == H3G_MAX(e->start, r->at_start));
  } else if (e->rv == 0 && r->rv == 0) {
    EXPECT(r->content_length == e->content_length);
  }
#undef EXPECT
  return ok;
}

/* Whole, split in two at every byte boundary, and byte by byte. */
static void run(const bytes *o, int fin, expect e) {
  size_t n = o->n;
  size_t cuts[2];
  result r;

  cuts[0] = n;
  r = feed_chunks(o->b, n, fin, cuts, 1);
  if (!check_result(&r, &e, n))
    fprintf(stderr, "  whole: rv %d good %zu\n", r.rv, r.good);

  for (size_t k = 0; k <= n; k++) {
    cuts[0] = k;
    cuts[1] = n;
    r = feed_chunks(o->b, n, fin, cuts, 2);
    if (!check_result(&r, &e, n)) {
      fprintf(stderr, "  split at %zu: rv %d good %zu\n", k, r.rv, r.good);
      break;
    }
  }

  size_t *each = malloc((n + 1) * sizeof(*each));
  size_t ncuts = 0;
  for (size_t k = 1; k <= n; k++)
    each[ncuts++] = k;
  if (ncuts == 0)
    each[ncuts++] = 0;
  r = feed_chunks(o->b, n, fin, each, ncuts);
  if (!check_result(&r, &e, n))
    fprintf(stderr, "  byte by byte: rv %d good %zu\n", r.rv, r.good);
  free(each);
}

static const expect OK = {.rv = 0, .content_length = -1};

/* ---- valid streams ------------------------------------------------------ */

static void test_get(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_GET);
  sec_lits(&s, "user-agent", "unit/1.0");
  sec_lits(&s, "te", "trailers");
  sec_lits(&s, "x-empty", "");
  sec_lits(&s, "x-inner", "a b\tc");
  put_headers(&o, &s);
  run(&o, 1, OK);
}

static void test_post_with_content_length(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "10");
  put_headers(&o, &s);
  put_frame(&o, 0x0, "12345", 5);
  put_frame(&o, 0x0, "", 0);
  put_frame(&o, 0x0, "67890", 5);
  run(&o, 1, (expect){.rv = 0, .content_length = 10});
}

static void test_equal_content_lengths(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_lits(&s, "content-length", "3");
  sec_lits(&s, "content-length", "3, 3");
  put_headers(&o, &s);
  put_frame(&o, 0x0, "abc", 3);
  run(&o, 1, (expect){.rv = 0, .content_length = 3});
}

static void test_trailers_and_unknown_frames(void) {
  section s, t;
  bytes o = {.n = 0};
  /* Reserved frame types (0x1f * N + 0x21), with long varints. */
  put_varint_w(&o, 0x21, 8);
  put_varint_w(&o, 3, 4);
  put(&o, "zzz", 3);
  sec_request(&s, S_METHOD_POST);
  put_headers(&o, &s);
  put_frame(&o, 0x40, "", 0);
  put_frame(&o, 0x0, "abc", 3);
  put_frame(&o, 0x5f, "\x01\x02", 2);
  sec_init(&t);
  sec_lits(&t, "x-trailer", "1");
  put_headers(&o, &t);
  put_frame(&o, 0x3e, "q", 1);
  run(&o, 1, OK);
}

static void test_empty_trailer_section(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "2");
  put_headers(&o, &s);
  put_frame(&o, 0x0, "ab", 2);
  put_frame(&o, 0x1, "", 0);
  run(&o, 1, (expect){.rv = 0, .content_length = 2});
}

static void test_open_stream(void) {
  /* No FIN yet: a body of unknown length still coming. */
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  put_headers(&o, &s);
  put_frame(&o, 0x0, "abc", 3);
  put_varint(&o, 0x0);
  put_varint(&o, 1000); /* a frame whose payload has not arrived */
  run(&o, 0, OK);
}

/* ---- malformed header sections ----------------------------------------- */

typedef struct bad_field {
  const char *name;
  size_t namelen;
  const char *value;
  size_t valuelen;
} bad_field;

#define BF(n, v)                                                               \
  { n, sizeof(n) - 1, v, sizeof(v) - 1 }

static const bad_field bad_fields[] = {
    BF("x-v", "a\rb"),
    BF("x-v", "a\nb"),
    BF("x-v", "a\0b"),
    BF("x-v", "a\r\nx-injected: 1"),
    BF("x-v", " v"),
    BF("x-v", "v "),
    BF("x-v", "\tv"),
    BF("x-v", "v\t"),
    BF("x-v", "a\x7f"),
    BF("x-a\rb", "1"),
    BF("x-a\nb", "1"),
    BF("x-a\0b", "1"),
    BF("x-a b", "1"),
    BF("x-a:b", "1"),
    BF("", "v"),
    BF("X-Upper", "1"),
    BF(":foo", "bar"),
    BF("connection", "close"),
    BF("keep-alive", "timeout=5"),
    BF("proxy-connection", "keep-alive"),
    BF("transfer-encoding", "chunked"),
    BF("upgrade", "websocket"),
    BF("te", "gzip"),
    BF("host", "other example"),
    BF("host", "user@example.com"),
    BF("host", ""),
    BF("content-length", "0, 1"),
    BF("content-length", "-1"),
    BF("content-length", "99999999999999999999"),
};

/* The bad field after the pseudo-header fields, then one good field: the
 * refusal comes in the middle of the frame. */
static void test_bad_field_mid_section(void) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad_fields); i++) {
    const bad_field *f = &bad_fields[i];
    section s;
    bytes o = {.n = 0};
    sec_request(&s, S_METHOD_GET);
    sec_lits(&s, "accept", "*/*");
    sec_lit(&s, f->name, f->namelen, f->value, f->valuelen);
    size_t k = s.nfields - 1;
    size_t field_end = s.b.n;
    sec_lits(&s, "x-after", "1");
    size_t at = put_headers(&o, &s);
    put_frame(&o, 0x0, "", 0);
    run(&o, 1,
        (expect){.rv = H3G_ERR_PROTO,
                 .start = at + s.field_at[k],
                 .end = at + field_end});
    if (unit_case_failed) {
      fprintf(stderr, "  bad field %zu\n", i);
      return;
    }
  }
}

/* The bad field last: its end is the frame's end, which nghttp3 must
 * never see (it would report the section complete without the field). */
static void test_bad_field_last(void) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad_fields); i++) {
    const bad_field *f = &bad_fields[i];
    section s;
    bytes o = {.n = 0};
    sec_request(&s, S_METHOD_GET);
    sec_lit(&s, f->name, f->namelen, f->value, f->valuelen);
    size_t at = put_headers(&o, &s);
    run(&o, 1,
        (expect){.rv = H3G_ERR_PROTO,
                 .start = at + s.field_at[s.nfields - 1],
                 .end = o.n});
    if (unit_case_failed) {
      fprintf(stderr, "  bad field %zu\n", i);
      return;
    }
  }
}

static void test_content_lengths_differ(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_lits(&s, "content-length", "5");
  sec_lits(&s, "content-length", "6");
  size_t at = put_headers(&o, &s);
  put_frame(&o, 0x0, "12345", 5);
  run(&o, 1,
      (expect){
          .rv = H3G_ERR_PROTO, .start = at + s.field_at[5], .end = at + s.b.n});
}

/* The bad field as the first of the section: nothing of the section's
 * payload may pass, only the frame header. */
static void test_bad_first_field(void) {
  section s;
  bytes o = {.n = 0};
  sec_init(&s);
  sec_lits(&s, "x-v", "a\nb");
  sec_static(&s, S_METHOD_GET);
  size_t at = put_headers(&o, &s);
  run(&o, 1,
      (expect){.rv = H3G_ERR_PROTO, .start = at, .end = at + s.field_at[1]});
}

/* ---- content-length against DATA --------------------------------------- */

static void test_body_longer(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "5");
  put_headers(&o, &s);
  put_frame(&o, 0x0, "123", 3);
  size_t hd = o.n;
  put_frame(&o, 0x0, "456", 3);
  run(&o, 1, (expect){.rv = H3G_ERR_PROTO, .start = hd, .end = hd + 2});
}

static void test_body_longer_in_one_frame(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "5");
  put_headers(&o, &s);
  size_t hd = o.n;
  put_frame(&o, 0x0, "1234567890", 10);
  run(&o, 1, (expect){.rv = H3G_ERR_PROTO, .start = hd, .end = hd + 2});
}

static void test_body_with_content_length_zero(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static(&s, S_CONTENT_LENGTH); /* content-length: 0 */
  put_headers(&o, &s);
  size_t hd = o.n;
  put_frame(&o, 0x0, "x", 1);
  run(&o, 1, (expect){.rv = H3G_ERR_PROTO, .start = hd, .end = hd + 2});
}

static void test_body_shorter(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "10");
  put_headers(&o, &s);
  put_frame(&o, 0x0, "12345", 5);
  run(&o, 1, (expect){.rv = H3G_ERR_PROTO, .start = o.n, .end = o.n});
}

static void test_no_body_with_content_length(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "1");
  put_headers(&o, &s);
  run(&o, 1, (expect){.rv = H3G_ERR_PROTO, .start = o.n, .end = o.n});
}

static void test_body_shorter_after_trailers(void) {
  section s, t;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "4");
  put_headers(&o, &s);
  put_frame(&o, 0x0, "abc", 3);
  sec_init(&t);
  sec_lits(&t, "x-t", "1");
  put_headers(&o, &t);
  run(&o, 1, (expect){.rv = H3G_ERR_PROTO, .start = o.n, .end = o.n});
}

/* ---- trailers ----------------------------------------------------------- */

static void trailer_case(const char *name, const char *value) {
  section s, t;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  put_headers(&o, &s);
  put_frame(&o, 0x0, "abc", 3);
  sec_init(&t);
  sec_lits(&t, "x-ok", "1");
  sec_lits(&t, name, value);
  size_t at = put_headers(&o, &t);
  run(&o, 1,
      (expect){
          .rv = H3G_ERR_PROTO, .start = at + t.field_at[1], .end = at + t.b.n});
}

static void test_bad_trailers(void) {
  trailer_case(":path", "/x");
  trailer_case("X-Trailer", "1");
  trailer_case("content-length", "3");
  trailer_case("transfer-encoding", "chunked");
  trailer_case("te", "trailers");
  trailer_case("host", "example.com");
  trailer_case("x-v", "a\r\nb");
  trailer_case("x-v", " lead");
}

/* ---- what the shadow leaves to nghttp3 --------------------------------- */

/* DATA before the header section is nghttp3's connection error: the shadow
 * stops judging, even a bad field after it. */
static void test_frame_order_left_to_nghttp3(void) {
  section s;
  bytes o = {.n = 0};
  put_frame(&o, 0x0, "abc", 3);
  sec_request(&s, S_METHOD_GET);
  sec_lits(&s, "x-v", "a\nb");
  put_headers(&o, &s);
  run(&o, 1, OK);
}

static void test_data_after_trailers_left_to_nghttp3(void) {
  section s, t;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  put_headers(&o, &s);
  sec_init(&t);
  sec_lits(&t, "x-t", "1");
  put_headers(&o, &t);
  put_frame(&o, 0x0, "def", 3);
  run(&o, 1, OK);
}

/* RFC 9114 §7.1: a stream that ends inside a frame, wherever in it. */
static void test_truncated_frame_is_frame_error(void) {
  static const expect FRAME_ERROR = {.rv = NGHTTP3_ERR_H3_FRAME_ERROR};
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_POST);
  sec_static_name(&s, S_CONTENT_LENGTH, "10");
  put_headers(&o, &s);
  size_t head = o.n;
  put_varint(&o, 0x0);
  put_varint(&o, 10);
  put(&o, "12345", 5); /* inside the payload */
  run(&o, 1, FRAME_ERROR);

  o.n = head;
  put_varint_w(&o, 0x0, 2);
  o.n--; /* inside the frame type (nghttp3: H3_GENERAL_PROTOCOL_ERROR) */
  run(&o, 1, FRAME_ERROR);

  o.n = head;
  put_varint(&o, 0x21);
  put_varint_w(&o, 3, 4);
  o.n -= 2; /* inside the length of an unknown frame */
  run(&o, 1, FRAME_ERROR);

  bytes h = {.n = 0}; /* inside the HEADERS frame */
  sec_request(&s, S_METHOD_GET);
  put_headers(&h, &s);
  h.n -= 3;
  run(&h, 1, FRAME_ERROR);

  /* Without the FIN, the same bytes are only a stream still open. */
  run(&h, 0, OK);
}

/* A field section that refers to a dynamic table we never allowed. */
static void test_dynamic_table_reference(void) {
  bytes p = {.n = 0}, o = {.n = 0};
  put_byte(&p, 0x02); /* Required Insert Count 1 (encoded) */
  put_byte(&p, 0x00);
  put_byte(&p, 0x80); /* indexed, dynamic, relative 0 */
  put_frame(&o, 0x1, p.b, p.n);
  run(&o, 1, (expect){.rv = NGHTTP3_ERR_QPACK_DECOMPRESSION_FAILED});

  bytes q = {.n = 0}, o2 = {.n = 0};
  put_byte(&q, 0x00);
  put_byte(&q, 0x00);
  put_byte(&q, 0x80); /* dynamic reference with Required Insert Count 0 */
  put_frame(&o2, 0x1, q.b, q.n);
  run(&o2, 1, (expect){.rv = NGHTTP3_ERR_QPACK_DECOMPRESSION_FAILED});
}

static void test_section_cut_short(void) {
  section s;
  bytes o = {.n = 0};
  sec_request(&s, S_METHOD_GET);
  s.b.n -= 2; /* the last value loses its end: the frame ends mid-field */
  put_headers(&o, &s);
  run(&o, 1, (expect){.rv = NGHTTP3_ERR_QPACK_DECOMPRESSION_FAILED});
}

/* ---- Huffman, from nghttp3's own encoder -------------------------------- */

static void encode(bytes *o, const char *const *nv) {
  nghttp3_qpack_encoder *enc = NULL;
  nghttp3_buf pbuf, rbuf, ebuf;
  nghttp3_nv nva[16];
  size_t n = 0;

  for (; nv[2 * n] != NULL; n++)
    nva[n] = (nghttp3_nv){.name = U8(nv[2 * n]),
                          .value = U8(nv[2 * n + 1]),
                          .namelen = strlen(nv[2 * n]),
                          .valuelen = strlen(nv[2 * n + 1])};
  CHECK_EQ_INT(nghttp3_qpack_encoder_new(&enc, 0, nghttp3_mem_default()), 0);
  nghttp3_buf_init(&pbuf);
  nghttp3_buf_init(&rbuf);
  nghttp3_buf_init(&ebuf);
  CHECK_EQ_INT(
      nghttp3_qpack_encoder_encode(enc, &pbuf, &rbuf, &ebuf, STREAM_ID, nva, n),
      0);
  CHECK_EQ_INT(nghttp3_buf_len(&ebuf), 0);
  bytes payload = {.n = 0};
  put(&payload, pbuf.pos, nghttp3_buf_len(&pbuf));
  put(&payload, rbuf.pos, nghttp3_buf_len(&rbuf));
  put_frame(o, 0x1, payload.b, payload.n);
  nghttp3_buf_free(&pbuf, nghttp3_mem_default());
  nghttp3_buf_free(&rbuf, nghttp3_mem_default());
  nghttp3_buf_free(&ebuf, nghttp3_mem_default());
  nghttp3_qpack_encoder_del(enc);
}

static void test_huffman(void) {
  /* clang-format off */
  static const char *const good[] = {
      ":method", "GET",
      ":scheme", "https",
      ":authority", "www.example.com",
      ":path", "/index.html?q=huffman",
      "user-agent", "a rather long user agent string, Huffman coded",
      "accept-language", "en-GB,en;q=0.9",
      NULL};
  /* clang-format on */
  bytes o = {.n = 0};
  encode(&o, good);
  run(&o, 1, OK);

  /* Whatever the encoding, a value with CR LF is found. The field is the
   * last one, so the refusal falls inside the frame's last bytes. */
  /* clang-format off */
  static const char *const bad[] = {
      ":method", "GET",
      ":scheme", "https",
      ":authority", "www.example.com",
      ":path", "/",
      "x-forwarded-note", "innocent\r\nx-injected: yes",
      NULL};
  /* clang-format on */
  bytes b = {.n = 0};
  encode(&b, bad);
  for (size_t k = 0; k <= b.n; k++) {
    size_t cuts[2] = {k, b.n};
    result r = feed_chunks(b.b, b.n, 1, cuts, 2);
    CHECK_EQ_INT(r.rv, H3G_ERR_PROTO);
    CHECK(r.good < b.n);
  }
}

/* ---- h3g_request_field_check -------------------------------------------- */

static int fc(const char *name, const char *value, int trailer, int64_t *cl) {
  int64_t tmp = -1;
  const char *why = NULL;
  int rv =
      h3g_request_field_check(U8(name), strlen(name), U8(value), strlen(value),
                              trailer, cl ? cl : &tmp, &why);
  if (rv != 0)
    CHECK(why != NULL);
  return rv;
}

static void test_field_check(void) {
  int64_t cl = -1;
  CHECK_EQ_INT(fc(":method", "GET", 0, NULL), 0);
  CHECK_EQ_INT(fc(":authority", "example.com:443", 0, NULL), 0);
  CHECK_EQ_INT(fc(":authority", "a b", 0, NULL), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc(":authority", "", 0, NULL), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc(":status", "200", 0, NULL), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc(":path", "", 0, NULL), 0); /* a whole-section rule */
  CHECK_EQ_INT(fc("te", "Trailers", 0, NULL), 0);
  CHECK_EQ_INT(fc("host", "example.com", 0, NULL), 0);
  CHECK_EQ_INT(fc("content-length", "5", 0, &cl), 0);
  CHECK_EQ_INT(cl, 5);
  CHECK_EQ_INT(fc("content-length", "5, 5", 0, &cl), 0);
  CHECK_EQ_INT(fc("content-length", "6", 0, &cl), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc("content-length", "", 0, NULL), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc("x-obs", "caf\xc3\xa9", 0, NULL), 0);
  CHECK_EQ_INT(fc("x-a", "", 1, NULL), 0);
  CHECK_EQ_INT(fc("", "", 1, NULL), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc("te", "trailers", 1, NULL), H3G_ERR_PROTO);
  CHECK_EQ_INT(fc("x-v", "a\tb", 1, NULL), 0);
  CHECK_EQ_INT(fc("x-v", "a\001b", 1, NULL), H3G_ERR_PROTO);
}

int main(void) {
  RUN(test_get);
  RUN(test_post_with_content_length);
  RUN(test_equal_content_lengths);
  RUN(test_trailers_and_unknown_frames);
  RUN(test_empty_trailer_section);
  RUN(test_open_stream);
  RUN(test_bad_field_mid_section);
  RUN(test_bad_field_last);
  RUN(test_content_lengths_differ);
  RUN(test_bad_first_field);
  RUN(test_body_longer);
  RUN(test_body_longer_in_one_frame);
  RUN(test_body_with_content_length_zero);
  RUN(test_body_shorter);
  RUN(test_no_body_with_content_length);
  RUN(test_body_shorter_after_trailers);
  RUN(test_bad_trailers);
  RUN(test_frame_order_left_to_nghttp3);
  RUN(test_data_after_trailers_left_to_nghttp3);
  RUN(test_truncated_frame_is_frame_error);
  RUN(test_dynamic_table_reference);
  RUN(test_section_cut_short);
  RUN(test_huffman);
  RUN(test_field_check);
  return unit_report();
}
