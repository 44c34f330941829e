/* Tests for proxy/quic/h3_uni_shadow.c: the client's unidirectional streams
 * (stream types, control frames, QPACK encoder instructions), each case
 * fed whole, split in two at every byte boundary, and byte by byte; the
 * bytes handed on to nghttp3 and the error must be the same every way. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp3/nghttp3.h>

#include "common.h"
#include "h3_uni_shadow.h"
#include "unit.h"
#include "wire_bytes.h"

#define CONTROL 2 /* client unidirectional stream IDs */
#define ENCODER 6
#define DECODER 10
#define OTHER 14
#define MAX_BIDI 100

/* ---- building streams ---------------------------------------------------- */

static void put_frame(bytes *o, uint64_t type, const void *p, size_t n) {
  put_varint(o, type);
  put_varint(o, n);
  put(o, p, n);
}

static void put_frame_b(bytes *o, uint64_t type, const bytes *payload) {
  put_frame(o, type, payload->b, payload->n);
}

/* A control stream: its type and an empty SETTINGS frame. */
static bytes control(void) {
  bytes o = {.n = 0};
  put_varint(&o, 0x00);
  put_frame(&o, 0x04, "", 0);
  return o;
}

/* A frame whose payload is one integer (GOAWAY, MAX_PUSH_ID, ...). */
static void put_int_frame(bytes *o, uint64_t type, uint64_t v) {
  bytes p = {.n = 0};
  put_varint(&p, v);
  put_frame_b(o, type, &p);
}

static void put_priority_update(bytes *o, uint64_t id, const char *value) {
  bytes p = {.n = 0};
  put_varint(&p, id);
  put(&p, value, strlen(value));
  put_frame_b(o, 0xf0700, &p);
}

/* ---- feeding ------------------------------------------------------------- */

/* What nghttp3 would have been given, per stream. */
typedef struct sink {
  bytes got[4];
  int64_t ids[4];
  int fin[4];
  size_t calls;
} sink;

static int on_emit(void *ud, int64_t id, const uint8_t *p, size_t n, int fin) {
  sink *k = ud;
  size_t i = 0;
  while (i < 4 && k->ids[i] != id && k->ids[i] != -1)
    i++;
  if (i == 4)
    abort();
  k->ids[i] = id;
  CHECK(n > 0 || fin); /* nghttp3 must never be told about nothing */
  CHECK(!k->fin[i]);
  put(&k->got[i], p, n);
  k->fin[i] |= fin;
  k->calls++;
  return 0;
}

static void sink_init(sink *k) {
  memset(k, 0, sizeof(*k));
  for (size_t i = 0; i < 4; i++)
    k->ids[i] = -1;
}

static const bytes *sink_of(const sink *k, int64_t id) {
  static const bytes none = {.n = 0};
  for (size_t i = 0; i < 4; i++)
    if (k->ids[i] == id)
      return &k->got[i];
  return &none;
}

static int sink_fin(const sink *k, int64_t id) {
  for (size_t i = 0; i < 4; i++)
    if (k->ids[i] == id)
      return k->fin[i];
  return 0;
}

/* Feeds s to stream id in pieces: cut = 0 whole, cut = SIZE_MAX byte by
 * byte, otherwise in two at cut. Stops at the first error, returned. */
static int feed_split(h3g_h3_uni_shadow *u, sink *k, int64_t id, const bytes *s,
                      int fin, size_t cut) {
  size_t at = 0;
  while (at < s->n || (at == 0 && s->n == 0)) {
    size_t n = cut == 0          ? s->n - at
               : cut == SIZE_MAX ? 1
               : at == 0         ? cut
                                 : s->n - at;
    if (n > s->n - at)
      n = s->n - at;
    int last = at + n == s->n;
    int rv =
        h3g_h3_uni_shadow_feed(u, id, s->b + at, n, fin && last, on_emit, k);
    if (rv != 0)
      return rv;
    at += n;
    if (s->n == 0)
      break;
  }
  return 0;
}

typedef struct expect {
  int rv;           /* the error, 0: none */
  const bytes *out; /* what nghttp3 gets when rv is 0 (NULL: the input) */
  int fin;          /* and whether it ends */
} expect;

/* Runs one control-stream case every way it can be cut. */
static void check_stream(int64_t id, const bytes *in, int fin, expect e) {
  for (size_t cut = 0; cut <= in->n + 1; cut++) {
    size_t c = cut == in->n + 1 ? SIZE_MAX : cut;
    h3g_h3_uni_shadow u;
    sink k;
    h3g_h3_uni_shadow_init(&u, MAX_BIDI);
    sink_init(&k);
    int rv = feed_split(&u, &k, id, in, fin, c);
    CHECK_EQ_INT(rv, e.rv);
    if (rv != e.rv) {
      fprintf(stderr, "  (cut %zu, why: %s)\n", cut, u.why ? u.why : "-");
      return;
    }
    if (rv != 0) {
      CHECK(u.why != NULL);
      /* Sticky: the next call says the same and hands nothing on. */
      size_t calls = k.calls;
      CHECK_EQ_INT(h3g_h3_uni_shadow_feed(&u, id, in->b, in->n, 0, on_emit, &k),
                   e.rv);
      CHECK_EQ_INT(k.calls, calls);
      continue;
    }
    const bytes *want = e.out != NULL ? e.out : in;
    const bytes *got = sink_of(&k, id);
    CHECK_EQ_INT(got->n, want->n);
    CHECK(got->n == want->n && memcmp(got->b, want->b, got->n) == 0);
    CHECK_EQ_INT(sink_fin(&k, id), e.fin);
  }
}

static void check_control(const bytes *in, int rv) {
  check_stream(CONTROL, in, 0, (expect){.rv = rv});
}

/* ---- control stream ------------------------------------------------------ */

static void test_control_valid_passes_unchanged(void) {
  bytes s = {.n = 0};
  put_varint(&s, 0x00);
  bytes settings = {.n = 0};
  put_varint(&settings, 0x01);
  put_varint(&settings, 0);
  put_varint(&settings, 0x06);
  put_varint(&settings, 16384);
  put_varint(&settings, 0x07);
  put_varint(&settings, 0);
  put_varint(&settings, 0x21); /* reserved: ignored */
  put_varint(&settings, 1234567);
  put_varint_w(&settings, 0x33, 8); /* H3_DATAGRAM, a long encoding */
  put_varint(&settings, 1);
  put_frame_b(&s, 0x04, &settings);
  put_frame(&s, 0x21, "padding", 7);     /* reserved frame type */
  put_frame(&s, 0x1f * 3 + 0x21, "", 0); /* empty, reserved */
  put_frame(&s, 0x4242, "unknown", 7);   /* unknown type */
  put_int_frame(&s, 0x0d, 10);           /* MAX_PUSH_ID */
  put_int_frame(&s, 0x0d, 10);           /* the same again */
  put_int_frame(&s, 0x0d, 20);
  put_int_frame(&s, 0x07, 1000); /* GOAWAY, a push ID */
  put_int_frame(&s, 0x07, 1000);
  put_int_frame(&s, 0x07, 3);
  put_int_frame(&s, 0x07, 0);
  check_control(&s, 0);
}

static void test_control_must_start_with_settings(void) {
  static const uint64_t types[] = {0x07, 0x0d, 0x21, 0xf0700, 0x00, 0x03};
  for (size_t i = 0; i < H3G_ARRAY_LEN(types); i++) {
    bytes s = {.n = 0};
    put_varint(&s, 0x00);
    put_int_frame(&s, types[i], 0);
    check_control(&s, NGHTTP3_ERR_H3_MISSING_SETTINGS);
  }
}

static void test_control_second_settings(void) {
  bytes s = control();
  put_frame(&s, 0x04, "", 0);
  check_control(&s, NGHTTP3_ERR_H3_FRAME_UNEXPECTED);
}

static void test_control_forbidden_frame_types(void) {
  /* DATA, HEADERS, PUSH_PROMISE, and HTTP/2's PRIORITY, PING,
   * WINDOW_UPDATE, CONTINUATION. */
  static const uint64_t types[] = {0x00, 0x01, 0x05, 0x02, 0x06, 0x08, 0x09};
  for (size_t i = 0; i < H3G_ARRAY_LEN(types); i++) {
    bytes s = control();
    put_frame(&s, types[i], "ab", 2);
    check_control(&s, NGHTTP3_ERR_H3_FRAME_UNEXPECTED);
    /* Refused at the header: what would follow does not matter. */
    bytes t = control();
    put_varint(&t, types[i]);
    put_varint(&t, 100000);
    check_control(&t, NGHTTP3_ERR_H3_FRAME_UNEXPECTED);
  }
}

static void test_control_one_integer_frames_layout(void) {
  static const uint64_t types[] = {0x07, 0x0d, 0x03};
  for (size_t i = 0; i < H3G_ARRAY_LEN(types); i++) {
    bytes s = control(); /* empty */
    put_frame(&s, types[i], "", 0);
    check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);

    s = control(); /* a byte after the integer */
    put_frame(&s, types[i], "\x05\x00", 2);
    check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);

    s = control(); /* the integer cut short by the frame */
    put_frame(&s, types[i], "\x40", 1);
    check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);

    s = control(); /* longer than any integer */
    put_frame(&s, types[i], "\xc0\x00\x00\x00\x00\x00\x00\x00\x00", 9);
    check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
  }
}

static void test_control_goaway_may_not_grow(void) {
  bytes s = control();
  put_int_frame(&s, 0x07, 8);
  put_int_frame(&s, 0x07, 9);
  check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
  /* Any push ID is valid, the largest too (RFC 9114 §5.2). */
  s = control();
  put_int_frame(&s, 0x07, (1ull << 62) - 1);
  put_int_frame(&s, 0x07, 1);
  check_control(&s, 0);
}

static void test_control_max_push_id_may_not_shrink(void) {
  bytes s = control();
  put_int_frame(&s, 0x0d, 8);
  put_int_frame(&s, 0x0d, 7);
  check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
}

static void test_control_cancel_push_is_id_error(void) {
  /* Nothing was ever promised, with or without MAX_PUSH_ID. */
  bytes s = control();
  put_int_frame(&s, 0x03, 0);
  check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
  s = control();
  put_int_frame(&s, 0x0d, 100);
  put_int_frame(&s, 0x03, 5);
  check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
}

static void test_control_settings_errors(void) {
  for (uint64_t id = 0x02; id <= 0x05; id++) { /* HTTP/2's */
    bytes s = {.n = 0}, p = {.n = 0};
    put_varint(&s, 0x00);
    put_varint(&p, id);
    put_varint(&p, 0);
    put_frame_b(&s, 0x04, &p);
    check_control(&s, NGHTTP3_ERR_H3_SETTINGS_ERROR);
  }
  /* Twice, whether known (0x06) or not, even with the same value. */
  static const uint64_t twice[] = {0x06, 0x01, 0x21, 0x123456};
  for (size_t i = 0; i < H3G_ARRAY_LEN(twice); i++) {
    bytes s = {.n = 0}, p = {.n = 0};
    put_varint(&s, 0x00);
    put_varint(&p, twice[i]);
    put_varint(&p, 0);
    put_varint(&p, 0x07);
    put_varint(&p, 0);
    put_varint_w(&p, twice[i], 8);
    put_varint(&p, 0);
    put_frame_b(&s, 0x04, &p);
    check_control(&s, NGHTTP3_ERR_H3_SETTINGS_ERROR);
  }
  /* 0x00 is not one of HTTP/2's settings: unknown, ignored. */
  bytes s = {.n = 0}, p = {.n = 0};
  put_varint(&s, 0x00);
  put_varint(&p, 0x00);
  put_varint(&p, 7);
  put_frame_b(&s, 0x04, &p);
  check_control(&s, 0);
}

static void test_control_settings_layout(void) {
  /* An identifier without its value. */
  bytes s = {.n = 0}, p = {.n = 0};
  put_varint(&s, 0x00);
  put_varint(&p, 0x06);
  put_frame_b(&s, 0x04, &p);
  put_int_frame(&s, 0x07, 0); /* a valid frame after it changes nothing */
  check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
  /* A value whose integer runs past the frame's end. */
  s = (bytes){.n = 0};
  put_varint(&s, 0x00);
  put_frame(&s, 0x04, "\x06\x40", 2);
  put_frame(&s, 0x21, "", 0);
  check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
  /* An identifier that does. */
  s = (bytes){.n = 0};
  put_varint(&s, 0x00);
  put_frame(&s, 0x04, "\x06\x01\x80\x00", 4);
  put_frame(&s, 0x21, "xx", 2);
  check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
}

static void test_priority_update_is_rewritten(void) {
  static const struct {
    const char *value, *canonical;
  } cases[] = {
      {"u=5", "u=5"},
      {"u=5, i", "u=5, i"},
      {"i, u=1", "u=1, i"},
      {"", "u=3"}, /* every parameter defaults */
      {"i=?0", "u=3"},
      {"u=9", "u=3"}, /* out of range: ignored */
      {"u=2, x=\"a long extension\", i=?1", "u=2, i"}, /* > 8 bytes */
      {"u=0;a=1, foo=(1 2)", "u=0"},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(cases); i++) {
    bytes in = control(), out = control();
    put_priority_update(&in, 8, cases[i].value);
    put_priority_update(&out, 8, cases[i].canonical);
    check_stream(CONTROL, &in, 0, (expect){.out = &out});
  }
  /* A non-minimal element ID comes out minimal. */
  bytes in = control(), out = control(), p = {.n = 0};
  put_varint_w(&p, 4, 8);
  put(&p, "u=1", 3);
  put_frame_b(&in, 0xf0700, &p);
  put_priority_update(&out, 4, "u=1");
  check_stream(CONTROL, &in, 0, (expect){.out = &out});
}

static void test_priority_update_unparsable_is_ignored(void) {
  static const char *const bad[] = {"u=",    "U=1", "u=1,", "u=1 i",  ",",
                                    "u=\"x", "1",   "u=1;", "u=1.5.5"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    bytes in = control(), out = control();
    put_priority_update(&in, 0, bad[i]);
    put_int_frame(&in, 0x07, 0); /* the stream goes on */
    put_int_frame(&out, 0x07, 0);
    check_stream(CONTROL, &in, 0, (expect){.out = &out});
  }
  /* Too long to hold: ignored, but its element ID still checked. */
  char big[H3G_H3_UNI_HOLD_MAX + 10];
  memset(big, 'a', sizeof(big) - 1);
  big[0] = 'u';
  big[1] = '=';
  big[2] = '1';
  big[3] = ',';
  big[4] = ' ';
  big[sizeof(big) - 1] = '\0';
  bytes in = control(), out = control();
  put_priority_update(&in, 4, big);
  check_stream(CONTROL, &in, 0, (expect){.out = &out});
  in = control();
  put_priority_update(&in, 2, big);
  check_control(&in, NGHTTP3_ERR_H3_ID_ERROR);
}

static void test_priority_update_ids(void) {
  /* Not a client bidirectional stream, for a value that parses or not. */
  static const uint64_t ids[] = {1, 2, 3, 5, 6, 7};
  for (size_t i = 0; i < H3G_ARRAY_LEN(ids); i++) {
    bytes s = control();
    put_priority_update(&s, ids[i], "u=1");
    check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
    s = control();
    put_priority_update(&s, ids[i], "u=");
    check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
  }
  /* Beyond the limit: MAX_BIDI streams are 0 .. 4 * (MAX_BIDI - 1). */
  bytes s = control();
  put_priority_update(&s, 4 * (MAX_BIDI - 1), "u=1");
  check_control(&s, 0);
  s = control();
  put_priority_update(&s, 4 * MAX_BIDI, "u=1");
  check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
  /* ... and the limit moves with MAX_STREAMS. */
  h3g_h3_uni_shadow u;
  sink k;
  h3g_h3_uni_shadow_init(&u, MAX_BIDI);
  h3g_h3_uni_shadow_set_max_streams(&u, MAX_BIDI + 1);
  sink_init(&k);
  CHECK_EQ_INT(feed_split(&u, &k, CONTROL, &s, 0, 0), 0);
  /* For a push: never promised. */
  bytes p = {.n = 0};
  put_varint(&p, 0);
  put(&p, "u=1", 3);
  s = control();
  put_frame_b(&s, 0xf0701, &p);
  check_control(&s, NGHTTP3_ERR_H3_ID_ERROR);
  /* Layout: empty, or ending inside the element ID. */
  s = control();
  put_frame(&s, 0xf0700, "", 0);
  check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
  s = control();
  put_frame(&s, 0xf0700, "\x40", 1);
  check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
  s = control();
  put_frame(&s, 0xf0701, "\x80\x00", 2);
  check_control(&s, NGHTTP3_ERR_H3_FRAME_ERROR);
}

/* ---- stream types and critical streams ----------------------------------- */

static void test_stream_types(void) {
  bytes s = {.n = 0};
  put_varint(&s, 0x01); /* push */
  put_varint(&s, 0);
  check_stream(OTHER, &s, 0,
               (expect){.rv = NGHTTP3_ERR_H3_STREAM_CREATION_ERROR});

  /* Unknown and reserved types pass, with their FIN. */
  static const uint64_t unknown[] = {0x21, 0x1f * 1000 + 0x21, 0x04, 0x54,
                                     (1ull << 62) - 1};
  for (size_t i = 0; i < H3G_ARRAY_LEN(unknown); i++) {
    s = (bytes){.n = 0};
    put_varint(&s, unknown[i]);
    put(&s, "whatever", 8);
    check_stream(OTHER, &s, 1, (expect){.fin = 1});
    check_stream(OTHER, &s, 0, (expect){.fin = 0});
  }
  /* The decoder stream: anything, nghttp3 judges it. */
  s = (bytes){.n = 0};
  put_varint(&s, 0x03);
  put(&s, "\x80\x41\x01", 3);
  check_stream(DECODER, &s, 0, (expect){.fin = 0});
}

static void test_second_critical_streams(void) {
  static const uint64_t types[] = {0x00, 0x02, 0x03};
  for (size_t i = 0; i < H3G_ARRAY_LEN(types); i++) {
    h3g_h3_uni_shadow u;
    sink k;
    bytes s = {.n = 0};
    put_varint_w(&s, types[i], (size_t)1 << i); /* any encoding */
    h3g_h3_uni_shadow_init(&u, MAX_BIDI);
    sink_init(&k);
    CHECK_EQ_INT(feed_split(&u, &k, CONTROL, &s, 0, 0), 0);
    CHECK_EQ_INT(feed_split(&u, &k, OTHER, &s, 0, SIZE_MAX),
                 NGHTTP3_ERR_H3_STREAM_CREATION_ERROR);
  }
  /* One of each is fine. */
  h3g_h3_uni_shadow u;
  sink k;
  h3g_h3_uni_shadow_init(&u, MAX_BIDI);
  sink_init(&k);
  bytes c = control(), e = {.n = 0}, d = {.n = 0};
  put_varint(&e, 0x02);
  put_varint(&d, 0x03);
  CHECK_EQ_INT(feed_split(&u, &k, CONTROL, &c, 0, 0), 0);
  CHECK_EQ_INT(feed_split(&u, &k, ENCODER, &e, 0, 0), 0);
  CHECK_EQ_INT(feed_split(&u, &k, DECODER, &d, 0, 0), 0);
}

static void test_critical_streams_may_not_end(void) {
  bytes c = control(), e = {.n = 0}, d = {.n = 0};
  put_varint(&e, 0x02);
  put_varint(&d, 0x03);
  const bytes *streams[] = {&c, &e, &d};
  for (size_t i = 0; i < 3; i++) {
    check_stream(CONTROL, streams[i], 1,
                 (expect){.rv = NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM});
    /* FIN alone, later. */
    h3g_h3_uni_shadow u;
    sink k;
    h3g_h3_uni_shadow_init(&u, MAX_BIDI);
    sink_init(&k);
    CHECK_EQ_INT(feed_split(&u, &k, CONTROL, streams[i], 0, 0), 0);
    CHECK_EQ_INT(h3g_h3_uni_shadow_feed(&u, CONTROL, NULL, 0, 1, on_emit, &k),
                 NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM);
    /* Or reset. */
    h3g_h3_uni_shadow_init(&u, MAX_BIDI);
    CHECK_EQ_INT(feed_split(&u, &k, CONTROL, streams[i], 0, 0), 0);
    CHECK_EQ_INT(h3g_h3_uni_shadow_reset(&u, CONTROL),
                 NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM);
  }
  /* The control stream ending in the middle of a frame: closed, too. */
  bytes t = control();
  put_varint(&t, 0x07);
  check_stream(CONTROL, &t, 1,
               (expect){.rv = NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM});
}

static void test_stream_ending_inside_its_type_is_tolerated(void) {
  static const char *const partial[] = {"", "\x40", "\x80\x00", "\xc0\x00\x00"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(partial); i++) {
    bytes s = {.n = 0};
    put(&s, partial[i], strlen(partial[i]));
    /* FIN: nghttp3 never hears of the stream. */
    h3g_h3_uni_shadow u;
    sink k;
    h3g_h3_uni_shadow_init(&u, MAX_BIDI);
    sink_init(&k);
    CHECK_EQ_INT(feed_split(&u, &k, OTHER, &s, 1, SIZE_MAX), 0);
    CHECK_EQ_INT(k.calls, 0);
    /* Reset: the same. */
    h3g_h3_uni_shadow_init(&u, MAX_BIDI);
    CHECK_EQ_INT(feed_split(&u, &k, OTHER, &s, 0, SIZE_MAX), 0);
    CHECK_EQ_INT(h3g_h3_uni_shadow_reset(&u, OTHER), 0);
    CHECK_EQ_INT(k.calls, 0);
  }
  /* A control stream type in two bytes: held until whole. */
  bytes s = {.n = 0};
  put_varint_w(&s, 0x00, 2);
  put_frame(&s, 0x04, "", 0);
  check_stream(CONTROL, &s, 0, (expect){.fin = 0});
}

static void test_slots_are_reused(void) {
  h3g_h3_uni_shadow u;
  sink k;
  h3g_h3_uni_shadow_init(&u, MAX_BIDI);
  bytes s = {.n = 0};
  put_varint(&s, 0x21);
  for (int64_t id = 2; id < 2 + 4 * 100; id += 4) {
    sink_init(&k);
    CHECK_EQ_INT(feed_split(&u, &k, id, &s, 0, 0), 0);
    if (id % 3 == 0)
      CHECK_EQ_INT(h3g_h3_uni_shadow_reset(&u, id), 0);
    else
      h3g_h3_uni_shadow_closed(&u, id);
  }
}

/* ---- the QPACK encoder stream -------------------------------------------- */

static void test_encoder_stream(void) {
  bytes s = {.n = 0};
  put_varint(&s, 0x02);
  put(&s, "\x20\x20", 2); /* Set Dynamic Table Capacity 0, twice */
  check_stream(ENCODER, &s, 0, (expect){.fin = 0});

  static const char *const bad[] = {
      "\x21",         /* capacity 1 */
      "\x3f\x01",     /* capacity 32 */
      "\x3f\x80\x00", /* 31 + 0, over-long: still 31 */
      "\xc0\x01x",    /* insert with static name reference */
      "\x80\x01x",    /* insert with dynamic name reference */
      "\x41x\x01y",   /* insert with literal name */
      "\x00",         /* duplicate */
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    bytes t = {.n = 0};
    put_varint(&t, 0x02);
    put(&t, "\x20", 1);
    put(&t, bad[i], strlen(bad[i]) ? strlen(bad[i]) : 1);
    check_stream(ENCODER, &t, 0,
                 (expect){.rv = NGHTTP3_ERR_QPACK_ENCODER_STREAM_ERROR});
  }
  /* A literal longer than nghttp3's 256-byte name limit: still the QPACK
   * error RFC 9204 §3.2.2 names, not nghttp3's internal error. */
  bytes t = {.n = 0};
  put_varint(&t, 0x02);
  put(&t, "\x5f\xff\x01", 3);
  check_stream(ENCODER, &t, 0,
               (expect){.rv = NGHTTP3_ERR_QPACK_ENCODER_STREAM_ERROR});
}

int main(void) {
  RUN(test_control_valid_passes_unchanged);
  RUN(test_control_must_start_with_settings);
  RUN(test_control_second_settings);
  RUN(test_control_forbidden_frame_types);
  RUN(test_control_one_integer_frames_layout);
  RUN(test_control_goaway_may_not_grow);
  RUN(test_control_max_push_id_may_not_shrink);
  RUN(test_control_cancel_push_is_id_error);
  RUN(test_control_settings_errors);
  RUN(test_control_settings_layout);
  RUN(test_priority_update_is_rewritten);
  RUN(test_priority_update_unparsable_is_ignored);
  RUN(test_priority_update_ids);
  RUN(test_stream_types);
  RUN(test_second_critical_streams);
  RUN(test_critical_streams_may_not_end);
  RUN(test_stream_ending_inside_its_type_is_tolerated);
  RUN(test_slots_are_reused);
  RUN(test_encoder_stream);
  return unit_report();
}
