/* Tests for proxy/upstream/h1_codec.c: request heads, chunk framing, and the
 * response parser, including every way a response can be cut into pieces. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1_codec.h"
#include "unit.h"

#define U8(s) ((const uint8_t *)(s))
#define F(n, v)                                                                \
  { U8(n), sizeof(n) - 1, U8(v), sizeof(v) - 1 }

/* ---- request writing ---------------------------------------------------- */

static void test_write_request_basic(void) {
  const h3g_field fields[] = {F("user-agent", "t/1"), F("accept", "*/*")};
  const h3g_field extra[] = {F("x-forwarded-for", "192.0.2.1"),
                             F("via", "3 h3gate")};
  h3g_h1_request rq = {
      .method = U8("GET"),
      .methodlen = 3,
      .target = U8("/a?b=c"),
      .targetlen = 6,
      .host = U8("example.com"),
      .hostlen = 11,
      .fields = fields,
      .nfields = 2,
      .extra = extra,
      .nextra = 2,
      .content_length = -2,
  };
  uint8_t buf[512];
  const char *want = "GET /a?b=c HTTP/1.1\r\n"
                     "Host: example.com\r\n"
                     "user-agent: t/1\r\n"
                     "accept: */*\r\n"
                     "x-forwarded-for: 192.0.2.1\r\n"
                     "via: 3 h3gate\r\n"
                     "\r\n";
  int64_t n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  CHECK_EQ_INT(n, (int64_t)strlen(want));
  CHECK_MEM(buf, (size_t)n, want);

  /* Every cap short of the length fails; the exact length fits. */
  size_t len = strlen(want);
  for (size_t cap = 0; cap < len; cap++)
    CHECK_EQ_INT(h3g_h1_write_request(&rq, buf, cap), H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h3g_h1_write_request(&rq, buf, len), (int64_t)len);

  rq.content_length = 0;
  n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  CHECK(n > 0 &&
        strstr((const char *)buf, "via: 3 h3gate\r\n"
                                  "Content-Length: 0\r\n\r\n") != NULL);
  rq.content_length = INT64_MAX;
  n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  buf[n] = 0;
  CHECK(n > 0 &&
        strstr((const char *)buf, "Content-Length: 9223372036854775807\r\n"
                                  "\r\n") != NULL);
  rq.content_length = -1;
  n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  buf[n] = 0;
  CHECK(n > 0 && strstr((const char *)buf, "Transfer-Encoding: chunked\r\n"
                                           "\r\n") != NULL);
  CHECK(strstr((const char *)buf, "Content-Length") == NULL);

  /* No host: an empty Host field (RFC 9112 §3.2). */
  rq.host = NULL;
  rq.hostlen = 0;
  rq.nfields = 0;
  rq.nextra = 0;
  rq.content_length = -2;
  n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  CHECK_MEM(buf, (size_t)n, "GET /a?b=c HTTP/1.1\r\nHost:\r\n\r\n");
}

static void test_write_request_cookies_and_skips(void) {
  const h3g_field fields[] = {
      F("accept", "*/*"),
      F("cookie", "a=1"),
      F("host", "evil"),
      F("x-a", "1"),
      F("cookie", "b=2"),
      F("content-length", "99"),
      F("transfer-encoding", "chunked"),
      F("connection", "close"),
      F("keep-alive", "1"),
      F("te", "trailers"),
      F("upgrade", "x"),
      F("proxy-connection", "y"),
      F("cookie", "c=3"),
      F("x-b", "2"),
  };
  h3g_h1_request rq = {
      .method = U8("POST"),
      .methodlen = 4,
      .target = U8("/"),
      .targetlen = 1,
      .host = U8("h"),
      .hostlen = 1,
      .fields = fields,
      .nfields = sizeof(fields) / sizeof(fields[0]),
      .content_length = 5,
  };
  uint8_t buf[512];
  const char *want = "POST / HTTP/1.1\r\n"
                     "Host: h\r\n"
                     "accept: */*\r\n"
                     "cookie: a=1; b=2; c=3\r\n"
                     "x-a: 1\r\n"
                     "x-b: 2\r\n"
                     "Content-Length: 5\r\n"
                     "\r\n";
  int64_t n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  CHECK_EQ_INT(n, (int64_t)strlen(want));
  CHECK_MEM(buf, (size_t)n, want);

  /* One cookie crumb is written as it is. */
  const h3g_field one[] = {F("cookie", "only=1")};
  rq.fields = one;
  rq.nfields = 1;
  rq.content_length = -2;
  n = h3g_h1_write_request(&rq, buf, sizeof(buf));
  CHECK_MEM(buf, (size_t)n,
            "POST / HTTP/1.1\r\nHost: h\r\ncookie: only=1\r\n\r\n");
}

static void test_chunk_header(void) {
  uint8_t buf[32];
  CHECK_EQ_INT(h3g_h1_chunk_header(0, buf, sizeof(buf)), 3);
  CHECK_MEM(buf, 3, "0\r\n");
  CHECK_EQ_INT(h3g_h1_chunk_header(1, buf, sizeof(buf)), 3);
  CHECK_MEM(buf, 3, "1\r\n");
  CHECK_EQ_INT(h3g_h1_chunk_header(0xabc, buf, sizeof(buf)), 5);
  CHECK_MEM(buf, 5, "abc\r\n");
  CHECK_EQ_INT(h3g_h1_chunk_header(16384, buf, sizeof(buf)), 6);
  CHECK_MEM(buf, 6, "4000\r\n");
  CHECK_EQ_INT(h3g_h1_chunk_header(SIZE_MAX, buf, 18), 18);
  CHECK_MEM(buf, 18, "ffffffffffffffff\r\n");
  CHECK_EQ_INT(h3g_h1_chunk_header(SIZE_MAX, buf, 17), 0);
  CHECK_EQ_INT(h3g_h1_chunk_header(0x10, buf, 4), 4);
  CHECK_EQ_INT(h3g_h1_chunk_header(0x100, buf, 4), 0);
  CHECK_MEM(H3G_H1_LAST_CHUNK, strlen(H3G_H1_LAST_CHUNK), "0\r\n\r\n");
}

static void test_write_trailers(void) {
  const h3g_field t[] = {F("x-sum", "abc"), F("server-timing", "a;dur=1")};
  uint8_t buf[128];
  const char *want = "0\r\nx-sum: abc\r\nserver-timing: a;dur=1\r\n\r\n";
  int64_t n = h3g_h1_write_trailers(t, 2, buf, sizeof(buf));
  CHECK_EQ_INT(n, (int64_t)strlen(want));
  CHECK_MEM(buf, (size_t)n, want);
  CHECK_EQ_INT(h3g_h1_write_trailers(t, 2, buf, strlen(want) - 1),
               H3G_ERR_TOOBIG);
  n = h3g_h1_write_trailers(NULL, 0, buf, sizeof(buf));
  CHECK_MEM(buf, (size_t)n, "0\r\n\r\n");
  CHECK_EQ_INT(h3g_h1_write_trailers(NULL, 0, buf, 4), H3G_ERR_TOOBIG);
}

/* ---- response parsing: a recorder of callbacks -------------------------- */

typedef struct rec {
  char log[8192]; /* events: H<status>[fields] I<status>[fields] B T[..] C */
  size_t loglen;
  uint8_t body[8192];
  size_t bodylen;
  int completes;
  int fail_head; /* on_head returns this */
  int fail_body;
  int fail_trailers;
  int fail_complete;
} rec;

static void logs(rec *r, const char *s) {
  size_t n = strlen(s);
  if (n > sizeof(r->log) - 1 - r->loglen)
    n = sizeof(r->log) - 1 - r->loglen;
  memcpy(r->log + r->loglen, s, n);
  r->loglen += n;
  r->log[r->loglen] = 0;
}

static void logn(rec *r, const uint8_t *s, size_t n) {
  char tmp[1024];
  if (n > sizeof(tmp) - 1)
    n = sizeof(tmp) - 1;
  memcpy(tmp, s, n);
  tmp[n] = 0;
  logs(r, tmp);
}

static void log_fields(rec *r, const h3g_headers *h) {
  logs(r, "[");
  for (size_t i = 0; i < h->nfields; i++) {
    logn(r, h->fields[i].name, h->fields[i].namelen);
    logs(r, "=");
    logn(r, h->fields[i].value, h->fields[i].valuelen);
    logs(r, ";");
  }
  logs(r, "]");
}

static int cb_head(void *ud, int status, h3g_headers *fields, int interim) {
  rec *r = ud;
  char tmp[16];
  snprintf(tmp, sizeof(tmp), "%c%d", interim ? 'I' : 'H', status);
  logs(r, tmp);
  log_fields(r, fields);
  return r->fail_head;
}

static int cb_body(void *ud, const uint8_t *data, size_t len) {
  rec *r = ud;
  CHECK(len > 0);
  if (r->loglen == 0 || r->log[r->loglen - 1] != 'B')
    logs(r, "B");
  if (len <= sizeof(r->body) - r->bodylen) {
    memcpy(r->body + r->bodylen, data, len);
    r->bodylen += len;
  }
  return r->fail_body;
}

static int cb_trailers(void *ud, h3g_headers *fields) {
  rec *r = ud;
  logs(r, "T");
  log_fields(r, fields);
  return r->fail_trailers;
}

static int cb_complete(void *ud) {
  rec *r = ud;
  logs(r, "C");
  r->completes++;
  return r->fail_complete;
}

static const h3g_h1_callbacks rec_cb = {
    .on_head = cb_head,
    .on_body = cb_body,
    .on_trailers = cb_trailers,
    .on_complete = cb_complete,
};

/* What parsing one response gave. */
typedef struct result {
  rec r;
  int rv;      /* first error of feed or finish, or 0 */
  size_t used; /* bytes consumed in total */
  int complete;
  int keep_alive;
  const char *reason;
} result;

enum { NO_FINISH = 0, FINISH = 1 };

/*
 * Feeds data cut at the given points (ascending, within (0, len)) to p,
 * stopping at completion or error; a feed before completion must take all
 * it is given. With fed_after (an upgrade), the rest of data after the
 * completing piece is fed once more (*fed_after: what that took, which
 * must be 0: it belongs to the new protocol) and the parser finished.
 */
static void feed_cuts(h3g_h1_parser *p, const char *data, size_t len,
                      const size_t *cuts, size_t ncuts, result *out,
                      size_t *fed_after) {
  size_t prev = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    size_t c = 0;
    int rv = h3g_h1_parser_feed(p, U8(data) + prev, end - prev, &c);
    CHECK(c <= end - prev);
    out->used += c;
    if (rv != 0) {
      out->rv = rv;
      break;
    }
    if (h3g_h1_parser_complete(p)) {
      if (fed_after != NULL) {
        size_t more = 0;
        if (end < len)
          CHECK_EQ_INT(
              h3g_h1_parser_feed(p, U8(data) + end, len - end, &more), 0);
        *fed_after = more;
        CHECK_EQ_INT(h3g_h1_parser_finish(p), 0);
      }
      break;
    }
    CHECK_EQ_INT(c, end - prev); /* short only at the end */
    prev = end;
  }
  out->complete = h3g_h1_parser_complete(p);
  out->keep_alive = h3g_h1_parser_keep_alive(p);
  out->reason = h3g_h1_parser_reason(p);
}

/*
 * Feeds data cut at the given points (ascending, within (0, len)), stops at
 * completion or error, then calls finish if asked and no error happened.
 */
static void parse_cuts(const char *data, size_t len, int head, int finish,
                       const size_t *cuts, size_t ncuts, size_t cap,
                       result *out) {
  memset(out, 0, sizeof(*out));
  h3g_h1_parser *p = NULL;
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &out->r, cap), 0);
  h3g_h1_parser_reset(p, head);
  feed_cuts(p, data, len, cuts, ncuts, out, NULL);
  if (out->rv == 0 && finish) {
    out->rv = h3g_h1_parser_finish(p);
    out->complete = h3g_h1_parser_complete(p);
    out->keep_alive = h3g_h1_parser_keep_alive(p);
    out->reason = h3g_h1_parser_reason(p);
  }
  h3g_h1_parser_free(p);
}

static void parse(const char *data, size_t len, int head, int finish,
                  result *out) {
  parse_cuts(data, len, head, finish, NULL, 0, 16384, out);
}

#define S(lit) lit, sizeof(lit) - 1

static int same(const result *a, const result *b) {
  if (a->rv != b->rv || a->complete != b->complete ||
      a->keep_alive != b->keep_alive)
    return 0;
  if (a->rv != 0)
    return strcmp(a->reason, b->reason) == 0;
  return a->used == b->used && strcmp(a->r.log, b->r.log) == 0 &&
         a->r.bodylen == b->r.bodylen &&
         memcmp(a->r.body, b->r.body, a->r.bodylen) == 0;
}

/*
 * Parses data whole, then byte by byte, then in two pieces at every split
 * point, and checks that all of them agree. Returns the whole-buffer
 * result in *out.
 */
static void parse_every_split(const char *data, size_t len, int head,
                              int finish, result *out) {
  static result r2; /* large: keep off the stack */
  size_t *cuts = malloc(sizeof(size_t) * (len ? len : 1));
  parse(data, len, head, finish, out);
  for (size_t i = 0; i + 1 < len; i++)
    cuts[i] = i + 1;
  parse_cuts(data, len, head, finish, cuts, len ? len - 1 : 0, 16384, &r2);
  CHECK(same(out, &r2));
  if (!same(out, &r2))
    fprintf(stderr, "  byte by byte: rv %d/%d log\n  %s\n  %s\n", out->rv,
            r2.rv, out->r.log, r2.r.log);
  for (size_t k = 1; k < len; k++) {
    parse_cuts(data, len, head, finish, &k, 1, 16384, &r2);
    int ok = same(out, &r2);
    CHECK(ok);
    if (!ok) {
      fprintf(stderr, "  split at %zu: rv %d/%d (%s) log\n  %s\n  %s\n", k,
              out->rv, r2.rv, r2.reason, out->r.log, r2.r.log);
      break;
    }
  }
  free(cuts);
}

static int reason_is(const result *r, const char *s) {
  return r->reason != NULL && strcmp(r->reason, s) == 0;
}

/* The major version of the llhttp the codec was built against: 8 on
 * Debian 12 (sources), 9 on Debian 13 (system library). */
static int llhttp_major(void) {
  return atoi(h3g_h1_version() + strlen("llhttp "));
}

/* ---- response parsing: well-formed responses ---------------------------- */

static result res; /* shared, large */

static void test_content_length(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\n"
                      "Content-Type: text/plain\r\n"
                      "X-Pad:   padded value \t \r\n"
                      "X-Empty:\r\n"
                      "X-Obs: caf\xc3\xa9\r\n"
                      "Content-Length: 11\r\n"
                      "\r\n"
                      "hello world";
  parse_every_split(S(resp), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
  CHECK_EQ_INT(res.used, sizeof(resp) - 1);
  CHECK(strcmp(res.r.log, "H200[Content-Type=text/plain;X-Pad=padded value;"
                          "X-Empty=;X-Obs=caf\xc3\xa9;Content-Length=11;]"
                          "BC") == 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "hello world");
  CHECK_EQ_INT(res.r.completes, 1);
}

static void test_zero_length(void) {
  parse_every_split(S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0,
                    NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK(strcmp(res.r.log, "H200[Content-Length=0;]C") == 0);
  CHECK_EQ_INT(res.keep_alive, 1);
}

static void test_chunked_trailers(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\n"
                      "Transfer-Encoding: chunked\r\n"
                      "Trailer: X-Sum\r\n"
                      "\r\n"
                      "5\r\nhello\r\n"
                      "6;name=value\r\n world\r\n"
                      "A;q=\"quoted\"\r\n0123456789\r\n"
                      "0\r\n"
                      "X-Sum: abc \r\n"
                      "Connection: close\r\n"
                      "X-Other:\tz\r\n"
                      "\r\n";
  parse_every_split(S(resp), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.used, sizeof(resp) - 1);
  CHECK(strcmp(res.r.log, "H200[Transfer-Encoding=chunked;Trailer=X-Sum;]B"
                          "T[X-Sum=abc;X-Other=z;]C") == 0);
  if (strcmp(res.r.log, "H200[Transfer-Encoding=chunked;Trailer=X-Sum;]B"
                        "T[X-Sum=abc;X-Other=z;]C") != 0)
    fprintf(stderr, "  log: %s\n", res.r.log);
  CHECK_MEM(res.r.body, res.r.bodylen, "hello world0123456789");
  /* llhttp honours a Connection: close sent as a trailer. */
  CHECK_EQ_INT(res.keep_alive, 0);

  /* Only regular fields: all reported, in order, and the connection may
   * be reused. */
  const char plain[] = "HTTP/1.1 200 OK\r\n"
                       "Transfer-Encoding: chunked\r\n"
                       "\r\n"
                       "3\r\nabc\r\n"
                       "0\r\n"
                       "X-Sum: abc\r\n"
                       "Server-Timing: db;dur=53\r\n"
                       "X-Empty:\r\n"
                       "\r\n";
  parse_every_split(S(plain), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.used, sizeof(plain) - 1);
  CHECK(strcmp(res.r.log,
               "H200[Transfer-Encoding=chunked;]B"
               "T[X-Sum=abc;Server-Timing=db;dur=53;X-Empty=;]C") == 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "abc");
  CHECK_EQ_INT(res.keep_alive, 1);
}

static void test_chunked_no_trailers(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\n"
                      "transfer-encoding: Chunked\r\n"
                      "\r\n"
                      "1\r\na\r\n"
                      "00\r\n"
                      "\r\n";
  parse_every_split(S(resp), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK(strcmp(res.r.log, "H200[transfer-encoding=Chunked;]BC") == 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "a");
  CHECK_EQ_INT(res.keep_alive, 1);

  /* Trailers that are all dropped: on_trailers is not called. */
  const char resp2[] = "HTTP/1.1 200 OK\r\n"
                       "Transfer-Encoding: chunked\r\n"
                       "\r\n"
                       "0\r\n"
                       "Host: x\r\n"
                       "TE: trailers\r\n"
                       "\r\n";
  parse_every_split(S(resp2), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK(strcmp(res.r.log, "H200[Transfer-Encoding=chunked;]C") == 0);
}

static void test_close_delimited(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\nServer: old\r\n\r\nabc\r\n\r\ndef";
  parse_every_split(S(resp), 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 0);
  CHECK(strcmp(res.r.log, "H200[Server=old;]BC") == 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "abc\r\n\r\ndef");

  /* Before finish, the response is not complete. */
  parse(S(resp), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 0);
  CHECK_EQ_INT(res.keep_alive, 0);
  CHECK(strcmp(res.r.log, "H200[Server=old;]B") == 0);

  /* An empty close-delimited body. */
  parse_every_split(S("HTTP/1.1 200 OK\r\n\r\n"), 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK(strcmp(res.r.log, "H200[]C") == 0);

  /* HTTP/1.0 without a length. */
  parse_every_split(S("HTTP/1.0 200 OK\r\n\r\nxyz"), 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "xyz");
  CHECK_EQ_INT(res.keep_alive, 0);
}

static void test_head(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
  parse_every_split(S(resp), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.complete, 0); /* a GET would wait for the body */
  h3g_h1_parser *p;
  rec r = {0};
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
  h3g_h1_parser_reset(p, 1);
  size_t c;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(resp), sizeof(resp) - 1, &c), 0);
  CHECK_EQ_INT(c, sizeof(resp) - 1);
  CHECK(h3g_h1_parser_complete(p));
  CHECK(h3g_h1_parser_keep_alive(p));
  CHECK(strcmp(r.log, "H200[Content-Length=1234;]C") == 0);
  h3g_h1_parser_free(p);

  /* HEAD with a chunked or a close-delimited response: no body either. */
  parse_every_split(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                    1, NO_FINISH, &res);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
  parse_every_split(S("HTTP/1.1 200 OK\r\n\r\n"), 1, NO_FINISH, &res);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
}

static void test_no_body_statuses(void) {
  parse_every_split(S("HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n"), 0, NO_FINISH,
                    &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
  CHECK(strcmp(res.r.log, "H204[X=1;]C") == 0);

  /* A 304 may announce the length of the representation; no body follows. */
  const char r304[] = "HTTP/1.1 304 Not Modified\r\n"
                      "ETag: \"x\"\r\n"
                      "Content-Length: 5000\r\n\r\n";
  parse_every_split(S(r304), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
  CHECK_EQ_INT(res.used, sizeof(r304) - 1);
  CHECK(strcmp(res.r.log, "H304[ETag=\"x\";Content-Length=5000;]C") == 0);

  /* A 204 that (wrongly) declares a body: the bytes are not body. */
  const char r204[] = "HTTP/1.1 204 No Content\r\n"
                      "Content-Length: 5\r\n\r\nhello";
  parse(S(r204), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.used, sizeof(r204) - 1 - 5);
  CHECK_EQ_INT(res.r.bodylen, 0);
}

static void test_interim(void) {
  const char r100[] = "HTTP/1.1 100 Continue\r\n\r\n"
                      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  parse_every_split(S(r100), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
  CHECK_EQ_INT(res.used, sizeof(r100) - 1);
  CHECK(strcmp(res.r.log, "I100[]H200[Content-Length=2;]BC") == 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "ok");
  CHECK_EQ_INT(res.r.completes, 1);

  const char r103[] = "HTTP/1.1 103 Early Hints\r\n"
                      "Link: </s.css>; rel=preload\r\n\r\n"
                      "HTTP/1.1 102 Processing\r\n\r\n"
                      "HTTP/1.1 103 Early Hints\r\n"
                      "Link: </t.js>; rel=preload\r\n\r\n"
                      "HTTP/1.1 404 Not Found\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n"
                      "3\r\nnop\r\n0\r\n\r\n";
  parse_every_split(S(r103), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK(strcmp(res.r.log, "I103[Link=</s.css>; rel=preload;]I102[]"
                          "I103[Link=</t.js>; rel=preload;]"
                          "H404[Transfer-Encoding=chunked;]BC") == 0);

  /* A 1xx that says Connection: close, or comes as HTTP/1.0, does not
   * stop the final response from being read. */
  const char rclose[] = "HTTP/1.0 100 Continue\r\nConnection: close\r\n"
                        "Content-Length: 3\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
  parse_every_split(S(rclose), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 1);
  CHECK_MEM(res.r.body, res.r.bodylen, "x");

  /* Only a 100, then the connection closes: truncated. */
  parse_every_split(S("HTTP/1.1 100 Continue\r\n\r\n"), 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  CHECK_EQ_INT(res.complete, 0);
}

static void test_keep_alive(void) {
  parse_every_split(S("HTTP/1.1 200 OK\r\nConnection: close\r\n"
                      "Content-Length: 1\r\n\r\nx"),
                    0, NO_FINISH, &res);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 0);
  parse_every_split(S("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\n"
                      "Content-Length: 1\r\n\r\nx"),
                    0, NO_FINISH, &res);
  CHECK_EQ_INT(res.keep_alive, 0);
  parse_every_split(S("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"), 0,
                    NO_FINISH, &res);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 0);
  parse_every_split(S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                      "Content-Length: 1\r\n\r\nx"),
                    0, NO_FINISH, &res);
  CHECK_EQ_INT(res.keep_alive, 1);
  /* Transfer-Encoding in HTTP/1.0: read, but do not reuse (RFC 9112 §6.1). */
  parse_every_split(S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
                    0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.keep_alive, 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "x");
}

static void test_bytes_after_end(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
  size_t msg = sizeof(resp) - 1 - 5;
  parse_every_split(S(resp), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.used, msg);
  CHECK_MEM(res.r.body, res.r.bodylen, "ok");

  /* Feeding after completion consumes nothing until reset; the parser is
   * then ready for the next response on the connection. */
  h3g_h1_parser *p;
  rec r = {0};
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
  size_t c = 99;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(resp), sizeof(resp) - 1, &c), 0);
  CHECK_EQ_INT(c, msg);
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(resp) + c, 5, &c), 0);
  CHECK_EQ_INT(c, 0);
  CHECK_EQ_INT(h3g_h1_parser_finish(p), 0);
  CHECK_EQ_INT(r.completes, 1);
  h3g_h1_parser_reset(p, 0);
  CHECK(!h3g_h1_parser_started(p));
  CHECK(!h3g_h1_parser_complete(p));
  CHECK(!h3g_h1_parser_keep_alive(p));
  const char next[] = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(next), sizeof(next) - 1, &c), 0);
  CHECK_EQ_INT(c, sizeof(next) - 1);
  CHECK(h3g_h1_parser_complete(p));
  CHECK_EQ_INT(r.completes, 2);
  CHECK(strstr(r.log, "H201[Content-Length=0;]C") != NULL);
  h3g_h1_parser_free(p);

  /* A final response followed by another response: only the first. */
  const char two[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  parse(S(two), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.used, (sizeof(two) - 1) / 2);
  CHECK_EQ_INT(res.r.completes, 1);
}

static void test_finish_cases(void) {
  h3g_h1_parser *p;
  rec r = {0};
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
  /* Nothing received: 0, no callbacks. */
  CHECK_EQ_INT(h3g_h1_parser_finish(p), 0);
  CHECK_EQ_INT(r.loglen, 0);
  CHECK(!h3g_h1_parser_started(p));
  CHECK(!h3g_h1_parser_complete(p));
  size_t c;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8("HTTP/1.1 2"), 10, &c), 0);
  CHECK(h3g_h1_parser_started(p));
  CHECK_EQ_INT(h3g_h1_parser_finish(p), H3G_ERR_PROTO);
  /* sticky */
  CHECK_EQ_INT(h3g_h1_parser_finish(p), H3G_ERR_PROTO);
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8("00 OK\r\n"), 7, &c), H3G_ERR_PROTO);
  CHECK(strcmp(h3g_h1_parser_reason(p),
               "connection closed before the response was complete") == 0);
  h3g_h1_parser_reset(p, 0);
  CHECK(strcmp(h3g_h1_parser_reason(p), "no error") == 0);
  h3g_h1_parser_free(p);
  h3g_h1_parser_free(NULL);

  /* Truncated bodies of each kind. */
  parse_every_split(S("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"), 0,
                    FINISH, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  CHECK_EQ_INT(res.complete, 0);
  CHECK_MEM(res.r.body, res.r.bodylen, "hello");
  parse_every_split(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n"),
                    0, FINISH, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  parse_every_split(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n0\r\nX: 1\r\n"),
                    0, FINISH, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  parse_every_split(S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"), 0, FINISH,
                    &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  CHECK_EQ_INT(res.r.loglen, 0);
}

/* ---- response parsing: malformed responses ------------------------------ */

/* Expects H3G_ERR_PROTO (or err) whole and at every split. */
static void expect_error(const char *data, size_t len, int err,
                         const char *reason) {
  parse_every_split(data, len, 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, err);
  if (res.rv != err)
    fprintf(stderr, "  response: %.*s\n", (int)len, data);
  CHECK_EQ_INT(res.complete, 0);
  if (reason != NULL) {
    CHECK(reason_is(&res, reason));
    if (!reason_is(&res, reason))
      fprintf(stderr, "  reason: %s (wanted %s)\n", res.reason, reason);
  }
}

#define BAD(lit, reason) expect_error(S(lit), H3G_ERR_PROTO, reason)

static void test_bad_status_line(void) {
  BAD("HTTP/1.1 2x0 OK\r\n\r\n", NULL);
  BAD("HTTP/1.1 20 OK\r\n\r\n", NULL);
  BAD("HTTX/1.1 200 OK\r\n\r\n", NULL);
  BAD("HTTP/1.1200 OK\r\n\r\n", NULL);
  BAD("garbage\r\n\r\n", NULL);
  BAD("HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version");
  BAD("HTTP/1.1 000 Zero\r\n\r\n", "invalid status code");
  BAD("HTTP/1.1 099 Low\r\n\r\n", "invalid status code");
  BAD("HTTP/1.1 600 High\r\n\r\n", "invalid status code");
  BAD("HTTP/1.1 999 High\r\n\r\n", "invalid status code");
  BAD("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
      "Connection: upgrade\r\n\r\n",
      "101 without upgrade");
  BAD("HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 without upgrade");
  BAD("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching\r\n\r\n",
      "101 without upgrade");
}

static void test_bad_framing(void) {
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
      "Content-Length: 5\r\n\r\n0\r\n\r\n",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
      "hello!",
      NULL);
  /* Equal repeated values are refused too (llhttp; RFC 9110 §8.6 allows
   * either). */
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
      "hello",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello", NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", NULL);
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      "unsupported transfer coding");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
      "unsupported transfer coding");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
      "unsupported transfer coding");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "unsupported transfer coding");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc", NULL);
}

static void test_bad_chunks(void) {
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "10000000000000000\r\n",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhelloX\r\n0\r\n\r\n",
      NULL);
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5 \r\nhello\r\n0\r\n\r\n",
      NULL);
  /* Several extensions on one chunk are valid (RFC 9112 §7.1.1) and
   * llhttp 9 reads them; llhttp 8.1 refuses them, with no lenient flag to
   * change that. */
  const char multi[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5;a=b;c=d\r\nhello\r\n0\r\n\r\n";
  if (llhttp_major() >= 9) {
    parse_every_split(S(multi), 0, NO_FINISH, &res);
    CHECK_EQ_INT(res.rv, 0);
    CHECK_EQ_INT(res.complete, 1);
    CHECK_EQ_INT(res.used, sizeof(multi) - 1);
    CHECK_MEM(res.r.body, res.r.bodylen, "hello");
  } else {
    expect_error(S(multi), H3G_ERR_PROTO, NULL);
  }
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;a=b\x01\r\nhello\r\n0\r\n\r\n",
      NULL);

  /* A long extension is capped. */
  static char big[2048];
  size_t n = (size_t)snprintf(big, sizeof(big),
                              "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                              "chunked\r\n\r\n1;e=");
  memset(big + n, 'v', 1100);
  n += 1100;
  memcpy(big + n, "\r\nx\r\n0\r\n\r\n", 10);
  n += 10;
  parse(big, n, 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  CHECK(reason_is(&res, "chunk extension too long"));
  /* 1000 bytes are fine. */
  n -= 1100 + 10;
  memset(big + n, 'v', 1000);
  n += 1000;
  memcpy(big + n, "\r\nx\r\n0\r\n\r\n", 10);
  n += 10;
  parse(big, n, 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);

  /* The cap counts every extension of a chunk: 100 extensions of 14
   * bytes. llhttp 8.1 refuses the second one already. */
  n = (size_t)snprintf(big, sizeof(big),
                       "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n1");
  for (int i = 0; i < 100; i++)
    n += (size_t)snprintf(big + n, sizeof(big) - n, ";name=0123456789");
  n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nx\r\n0\r\n\r\n");
  parse(big, n, 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_PROTO);
  if (llhttp_major() >= 9)
    CHECK(reason_is(&res, "chunk extension too long"));
  /* Each chunk has a cap of its own. */
  n = (size_t)snprintf(big, sizeof(big),
                       "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    n += (size_t)snprintf(big + n, sizeof(big) - n, "1;e=");
    memset(big + n, 'v', 600);
    n += 600;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nx\r\n");
  }
  n += (size_t)snprintf(big + n, sizeof(big) - n, "0\r\n\r\n");
  parse(big, n, 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_MEM(res.r.body, res.r.bodylen, "xxx");
}

/* Framing fields among the trailers (RFC 9110 §6.5.1) are refused rather
 * than dropped; llhttp 9 would refuse Content-Length itself. */
static void test_bad_trailers(void) {
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n0\r\nX-Sum: abc\r\nContent-Length: 5\r\n\r\n",
      "framing field in trailers");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\ncontent-length: 0\r\n\r\n",
      "framing field in trailers");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nTransfer-Encoding: chunked\r\n\r\n",
      "framing field in trailers");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nX: 1\r\nTRANSFER-ENCODING: gzip\r\n\r\n",
      "framing field in trailers");
  /* Refused at the name, whatever the value. */
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nContent-Length:\r\n\r\n",
      "framing field in trailers");
  /* A name that only starts like one is a regular field. */
  parse_every_split(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "0\r\nContent-Length-X: 1\r\n"
                      "Transfer-Encodings: 2\r\n\r\n"),
                    0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK(strcmp(res.r.log, "H200[Transfer-Encoding=chunked;]"
                          "T[Content-Length-X=1;Transfer-Encodings=2;]C") == 0);
}

static void test_bad_fields(void) {
  BAD("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX:\r\n b\r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: \r\n\tb\r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: a\r\n \r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: a  \r\n  b\r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nT: 1\r\n b\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: a\r\n\t\r\n\r\n", "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: a\r\n\t\x01\r\n\r\n", "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: a\r\n Y: b\r\n\r\n", "obsolete line folding");
  /* A fold of nothing but whitespace, after a value of nothing else, is
   * one llhttp 8.1 reports no piece of. */
  BAD("HTTP/1.1 200 OK\r\nX:\r\n \r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX: \t\r\n \t \r\nContent-Length: 0\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nT:\r\n\t\r\n\r\n",
      "obsolete line folding");
  BAD("HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field name");
  BAD("HTTP/1.1 200 OK\r\nX\t: a\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field name");
  BAD("HTTP/1.1 200 OK\r\nA: b\r\nX  : a\r\n\r\n",
      "invalid character in field name");
  BAD("HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 0\r\n\r\n", NULL);
  BAD("HTTP/1.1 200 OK\r\nX(: a\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field name");
  /* Whitespace that starts the trailers folds nothing: a bad name. */
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n :a\r\n\r\n",
      "invalid character in field name");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\tT: 1\r\n\r\n",
      "invalid character in field name");
  BAD("HTTP/1.1 200 OK\r\nX: a\r\n\x01: b\r\n\r\n",
      "invalid character in field name");
  BAD("HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 0\r\n\r\n",
      "empty field name");
  BAD("HTTP/1.1 200 OK\r\nA: b\r\n: a\r\nContent-Length: 0\r\n\r\n",
      "empty field name");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n: a\r\n\r\n",
      "empty field name");
  BAD("HTTP/1.1 200 OK\r\nX: a\x7f\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field value");
  BAD("HTTP/1.1 200 OK\r\nX: a\x01z\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field value");
  BAD("HTTP/1.1 200 OK\r\nX:\x01\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field value");
  /* Bare CR and LF: refused before llhttp sees them, in the same words
   * whichever llhttp the build links. */
  BAD("HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", "bare CR");
  BAD("HTTP/1.1 200 OK\r\nX: a\nb\r\nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field value");
  BAD("HTTP/1.1 200 OK\r\nX\r\nContent-Length: 0\r\n\r\n",
      "invalid character in field name");
}

/* Every byte value inside a response field value. */
static void test_value_bytes(void) {
  for (int c = 0; c < 256; c++) {
    char resp[64];
    int n = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nX: a");
    resp[n++] = (char)c;
    n += snprintf(resp + n, sizeof(resp) - (size_t)n,
                  "a\r\nContent-Length: 0\r\n\r\n");
    parse(resp, (size_t)n, 0, NO_FINISH, &res);
    int ok = c == '\t' || (c >= 0x20 && c != 0x7f);
    CHECK_EQ_INT(res.rv, ok ? 0 : H3G_ERR_PROTO);
    if (res.rv != (ok ? 0 : H3G_ERR_PROTO))
      fprintf(stderr, "  byte 0x%02x\n", c);
    /* The same words whichever llhttp refused it. */
    const char *why = c == '\r'   ? "bare CR"
                      : c == '\n' ? "bare LF"
                                  : "invalid character in field value";
    if (!ok) {
      CHECK(reason_is(&res, why));
      if (!reason_is(&res, why))
        fprintf(stderr, "  byte 0x%02x: %s\n", c, res.reason);
    }
  }
}

/*
 * Bare LF and bare CR in the framing (RFC 9112 §2.2): llhttp 9 refuses
 * them itself, llhttp 8.1 takes a bare LF at the end of the status line
 * and as the empty line that ends a head or trailers, and any byte after
 * a CR there and at the end of chunk lines. Both are refused in every
 * place, in the same words on both, whole and at every split (a CR that
 * ends one read and the byte after it that starts the next included).
 */
static void test_bare_lf_response(void) {
  /* status line */
  BAD("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("HTTP/1.1 200\nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 \nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 OK\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF");
  /* header lines */
  BAD("HTTP/1.1 200 OK\r\nX: 1\nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 OK\r\nX:\nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("HTTP/1.1 200 OK\r\nX: \nContent-Length: 0\r\n\r\n", "bare LF");
  /* end of head */
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", "bare LF");
  BAD("HTTP/1.1 200 OK\r\n\n", "bare LF");
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\nx", "bare LF");
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n\r\n", "bare LF");
  /* before a start line: llhttp skips empty lines, but only CRLF ones
   * are taken */
  BAD("\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "bare LF");
  BAD("\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "bare LF");
  /* interim responses, and between one and the next head */
  BAD("HTTP/1.1 100 Continue\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
      "\r\n",
      "bare LF");
  BAD("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 100 Continue\r\n\r\n\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
      "bare LF");
  /* chunk size lines, with and without extensions */
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\nx\r\n0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1;a=b\nx\r\n0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1;a\nx\r\n0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1;a=\"b\"\nx\r\n0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nx\r\n0\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0;a=b\n\r\n",
      "bare LF");
  /* chunk data end, also after a chunk whose data ends with CR */
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nx\n0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\n\r\n0\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\nx\r\n0\r\n\r\n",
      "bare LF");
  /* the empty line after the last chunk, trailer lines, end of trailers */
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nx\r\n0\r\n\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nX: 1\nY: 2\r\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nX: 1\n\r\n",
      "bare LF");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nX: 1\r\n\n",
      "bare LF");

  /* A CR must be followed by LF in the same places. */
  BAD("HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n", "bare CR");
  BAD("HTTP/1.1 200\rXContent-Length: 0\r\n\r\n", "bare CR");
  BAD("HTTP/1.1 200 OK\r\r\nContent-Length: 0\r\n\r\n", "bare CR");
  BAD("HTTP/1.1 200 OK\r\nX: 1\rY: 2\r\nContent-Length: 0\r\n\r\n", "bare CR");
  BAD("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\rXy", "bare CR");
  BAD("HTTP/1.1 200 OK\r\n\rXy", "bare CR");
  BAD("\rHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "bare CR");
  BAD("\r\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\rXx\r\n0\r\n\r\n",
      "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1;a=b\rXx\r\n0\r\n\r\n",
      "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nx\rX0\r\n\r\n",
      "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nx\r0\r\n\r\n",
      "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\rX\r\n",
      "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\rX",
      "bare CR");
  BAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nA: 1\r\n\rX",
      "bare CR");

  /* A head refused for its line endings never reaches on_head. */
  parse_every_split(S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n"), 0, FINISH,
                    &res);
  CHECK_EQ_INT(res.r.loglen, 0);
}

/* Bare CR and LF are only framing's business: body data holds any byte. */
static void test_bare_lf_in_body(void) {
  const char cl[] = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
                    "\n\ra\nb\r\r\n\r";
  parse_every_split(S(cl), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.used, sizeof(cl) - 1);
  CHECK_MEM(res.r.body, res.r.bodylen, "\n\ra\nb\r\r\n\r");

  const char closed[] = "HTTP/1.1 200 OK\r\n\r\n\n\r\n\rx\r";
  parse_every_split(S(closed), 0, FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_MEM(res.r.body, res.r.bodylen, "\n\r\n\rx\r");

  /* Chunk data that starts or ends with CR or LF, or is only one, next
   * to the CRLF that ends it. */
  const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         "\r\n"
                         "1\r\n\n\r\n"
                         "1\r\n\r\r\n"
                         "2\r\n\r\n\r\n"
                         "2\r\na\r\r\n"
                         "3;e=v\r\n\nb\n\r\n"
                         "0\r\nX: 1\r\n\r\n";
  parse_every_split(S(chunked), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.used, sizeof(chunked) - 1);
  CHECK_MEM(res.r.body, res.r.bodylen, "\n\r\r\na\r\nb\n");
  CHECK(strcmp(res.r.log, "H200[Transfer-Encoding=chunked;]BT[X=1;]C") == 0);

  /* After an interim response, and for a HEAD response whose next bytes
   * are not looked at. */
  const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n"
                         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\r\n";
  parse_every_split(S(interim), 0, NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_MEM(res.r.body, res.r.bodylen, "\r\n");
  parse_every_split(S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\n\n"), 1,
                    NO_FINISH, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  CHECK_EQ_INT(res.r.bodylen, 0);
}

/* A CR that ends one read and the LF that starts the next, in every place
 * a line ends, one feed per line. */
static void test_crlf_across_reads(void) {
  static const char *const lines[] = {
      "HTTP/1.1 100 Continue\r",
      "\n\r",
      "\nHTTP/1.1 200 OK\r",
      "\nTransfer-Encoding: chunked\r",
      "\n\r",
      "\n3;e=v\r",
      "\nabc\r",
      "\n0\r",
      "\nX: 1\r",
      "\n\r",
      "\n",
  };
  h3g_h1_parser *p;
  rec r = {0};
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
  for (size_t i = 0; i < H3G_ARRAY_LEN(lines); i++) {
    size_t c, n = strlen(lines[i]);
    CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(lines[i]), n, &c), 0);
    CHECK_EQ_INT(c, n);
  }
  CHECK(h3g_h1_parser_complete(p));
  CHECK(strcmp(r.log, "I100[]H200[Transfer-Encoding=chunked;]BT[X=1;]C") == 0);
  CHECK_MEM(r.body, r.bodylen, "abc");
  /* The byte after a CR that ended the last read is checked. */
  h3g_h1_parser_reset(p, 0);
  size_t c;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8("HTTP/1.1 200 OK\r"), 16, &c), 0);
  CHECK_EQ_INT(c, 16);
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8("X"), 1, &c), H3G_ERR_PROTO);
  CHECK_EQ_INT(c, 0);
  CHECK(strcmp(h3g_h1_parser_reason(p), "bare CR") == 0);
  /* reset forgets a CR that ended the last read */
  h3g_h1_parser_reset(p, 0);
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8("HTTP/1.1 200 OK\r"), 16, &c), 0);
  h3g_h1_parser_reset(p, 0);
  const char ok[] = "HTTP/1.1 204 No Content\r\n\r\n";
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(ok), sizeof(ok) - 1, &c), 0);
  CHECK(h3g_h1_parser_complete(p));
  h3g_h1_parser_free(p);
}

static void test_caps(void) {
  /* Head over the cap: name + value + 32 per field. */
  static char buf[70000];
  size_t n = (size_t)snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\n");
  for (int i = 0; i < 100; i++)
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-%03d: %064d\r\n", i, 0);
  n += (size_t)snprintf(buf + n, sizeof(buf) - n, "Content-Length: 0\r\n\r\n");
  /* 100 * (5 + 64 + 32) + 14 + 1 + 32 = 10147 */
  parse_cuts(buf, n, 0, FINISH, NULL, 0, 10147, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
  parse_cuts(buf, n, 0, FINISH, NULL, 0, 10146, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_TOOBIG);
  CHECK(reason_is(&res, "response head too large"));
  CHECK_EQ_INT(res.r.loglen, 0);
  /* the same one byte at a time */
  size_t *cuts = malloc(sizeof(size_t) * n);
  for (size_t i = 0; i + 1 < n; i++)
    cuts[i] = i + 1;
  parse_cuts(buf, n, 0, FINISH, cuts, n - 1, 10146, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_TOOBIG);
  parse_cuts(buf, n, 0, FINISH, cuts, n - 1, 10147, &res);
  CHECK_EQ_INT(res.rv, 0);
  free(cuts);

  /* One endless field name. */
  n = (size_t)snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nX");
  memset(buf + n, 'x', 5000);
  n += 5000;
  parse_cuts(buf, n, 0, NO_FINISH, NULL, 0, 4096, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_TOOBIG);
  /* An endless reason phrase. */
  n = (size_t)snprintf(buf, sizeof(buf), "HTTP/1.1 200 ");
  memset(buf + n, 'r', 5000);
  n += 5000;
  parse_cuts(buf, n, 0, NO_FINISH, NULL, 0, 4096, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_TOOBIG);
  /* Long whitespace padding is counted before it is trimmed. */
  n = (size_t)snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nX: a");
  memset(buf + n, ' ', 5000);
  n += 5000;
  n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n\r\n");
  parse_cuts(buf, n, 0, FINISH, NULL, 0, 4096, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_TOOBIG);
  /* Trailers over the cap. */
  n = (size_t)snprintf(buf, sizeof(buf),
                       "HTTP/1.1 200 OK\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       "0\r\n");
  for (int i = 0; i < 100; i++)
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "T-%03d: %064d\r\n", i, 0);
  n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
  parse_cuts(buf, n, 0, FINISH, NULL, 0, 4096, &res);
  CHECK_EQ_INT(res.rv, H3G_ERR_TOOBIG);
  CHECK(strstr(res.r.log, "H200") != NULL);
  parse_cuts(buf, n, 0, FINISH, NULL, 0, 10100, &res);
  CHECK_EQ_INT(res.rv, 0);
  CHECK_EQ_INT(res.complete, 1);
}

static void test_callback_errors(void) {
  const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n0\r\nX: 1\r\n\r\n";
  int *which[4];
  rec r;
  for (int k = 0; k < 4; k++) {
    memset(&r, 0, sizeof(r));
    which[0] = &r.fail_head;
    which[1] = &r.fail_body;
    which[2] = &r.fail_trailers;
    which[3] = &r.fail_complete;
    *which[k] = H3G_ERR_CLOSED;
    h3g_h1_parser *p;
    CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
    size_t c;
    CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(resp), sizeof(resp) - 1, &c),
                 H3G_ERR_CLOSED);
    CHECK(!h3g_h1_parser_complete(p));
    CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(resp), 1, &c), H3G_ERR_CLOSED);
    CHECK_EQ_INT(h3g_h1_parser_finish(p), H3G_ERR_CLOSED);
    h3g_h1_parser_free(p);
  }
  /* A NULL callback table is allowed. */
  h3g_h1_parser *p;
  CHECK_EQ_INT(h3g_h1_parser_new(&p, NULL, NULL, 4096), 0);
  size_t c;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(resp), sizeof(resp) - 1, &c), 0);
  CHECK(h3g_h1_parser_complete(p));
  h3g_h1_parser_free(p);
}

/* ---- response parsing: the answer to an upgrade (WebSocket) ------------- */

/* What parsing the answer to a handshake gave. */
typedef struct up_result {
  result res;
  int upgraded;
  size_t fed_after; /* consumed by a feed after completion (must be 0) */
} up_result;

/*
 * Feeds data cut at the given points to a parser told to expect an
 * upgrade, as the bridge does: stops at completion or error. A feed that
 * completes the response may stop short of its input; a feed before that
 * must take all of it.
 */
static void parse_upgrade_cuts(const char *data, size_t len, const size_t *cuts,
                               size_t ncuts, up_result *out) {
  memset(out, 0, sizeof(*out));
  h3g_h1_parser *p = NULL;
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &out->res.r, 16384), 0);
  h3g_h1_parser_reset(p, 0);
  h3g_h1_parser_expect_upgrade(p);
  feed_cuts(p, data, len, cuts, ncuts, &out->res, &out->fed_after);
  out->upgraded = h3g_h1_parser_upgraded(p);
  h3g_h1_parser_free(p);
}

/*
 * The answer whole, then at every split point in two pieces, then byte by
 * byte: the same events, the same bytes consumed (the head's length: the
 * new protocol starts right after it), every time.
 */
static void parse_upgrade_every_split(const char *data, size_t len,
                                      up_result *out) {
  static up_result r2;
  parse_upgrade_cuts(data, len, NULL, 0, out);
  for (size_t k = 1; k < len; k++) {
    parse_upgrade_cuts(data, len, &k, 1, &r2);
    int ok = same(&out->res, &r2.res) && r2.upgraded == out->upgraded &&
             r2.fed_after == 0;
    CHECK(ok);
    if (!ok) {
      fprintf(stderr, "  split at %zu: rv %d/%d used %zu/%zu log\n  %s\n  %s\n",
              k, out->res.rv, r2.res.rv, out->res.used, r2.res.used,
              out->res.r.log, r2.res.r.log);
      break;
    }
  }
  size_t *cuts = malloc(sizeof(size_t) * (len ? len : 1));
  for (size_t i = 0; i + 1 < len; i++)
    cuts[i] = i + 1;
  parse_upgrade_cuts(data, len, cuts, len ? len - 1 : 0, &r2);
  CHECK(same(&out->res, &r2.res) && r2.upgraded == out->upgraded);
  free(cuts);
}

#define WS_101                                                                 \
  "HTTP/1.1 101 Switching Protocols\r\n"                                       \
  "Upgrade: websocket\r\n"                                                     \
  "Connection: Upgrade\r\n"                                                    \
  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"                     \
  "\r\n"
#define WS_101_LOG                                                             \
  "H101[Upgrade=websocket;Connection=Upgrade;"                                 \
  "Sec-WebSocket-Accept=s3pPLMBiTxaQ9kYGzzhZRbK+xOo=;]"

/* A 101 ends the exchange as a final response only when the request asked
 * for an upgrade; a reset forgets that the previous request did. */
static void test_upgrade_only_when_expected(void) {
  expect_error(S(WS_101), H3G_ERR_PROTO, "101 without upgrade");
  rec r;
  memset(&r, 0, sizeof(r));
  h3g_h1_parser *p;
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
  h3g_h1_parser_expect_upgrade(p);
  size_t c = 0;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(WS_101), sizeof(WS_101) - 1, &c), 0);
  CHECK(h3g_h1_parser_upgraded(p));
  h3g_h1_parser_reset(p, 0);
  CHECK(!h3g_h1_parser_upgraded(p));
  CHECK(!h3g_h1_parser_complete(p));
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(WS_101), sizeof(WS_101) - 1, &c),
               H3G_ERR_PROTO);
  CHECK(strcmp(h3g_h1_parser_reason(p), "101 without upgrade") == 0);
  CHECK(!h3g_h1_parser_upgraded(p));
  /* Told again: accepted again. */
  h3g_h1_parser_reset(p, 0);
  h3g_h1_parser_expect_upgrade(p);
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(WS_101), sizeof(WS_101) - 1, &c), 0);
  CHECK_EQ_INT(c, sizeof(WS_101) - 1);
  CHECK(h3g_h1_parser_upgraded(p));
  h3g_h1_parser_free(p);
}

/*
 * With the upgrade expected, the 101 is the final head (interim 0): the
 * response is complete and upgraded, not kept alive, and parsing stops
 * right after the head, whatever follows in the same buffer (WebSocket
 * frames, with CR and LF bytes of their own, or bytes that look like
 * HTTP).
 */
static void test_upgrade_stops_after_head(void) {
  static const char *const tails[] = {
      "",
      "\x81\x05hello",
      "\n\x81\x02\r\n", /* a bare LF first: frame bytes */
      "\r\n\r\n",       /* looks like an empty line */
      "\x82\x7e\x00\x0a\r\r\n\n\r\x00xyz",
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
  };
  static up_result res101;
  for (size_t i = 0; i < H3G_ARRAY_LEN(tails); i++) {
    char buf[512];
    size_t tl = i == 4 ? 14 : strlen(tails[i]); /* holds a NUL */
    size_t hl = sizeof(WS_101) - 1;
    memcpy(buf, WS_101, hl);
    memcpy(buf + hl, tails[i], tl);
    parse_upgrade_every_split(buf, hl + tl, &res101);
    CHECK_EQ_INT(res101.res.rv, 0);
    CHECK_EQ_INT(res101.res.complete, 1);
    CHECK_EQ_INT(res101.upgraded, 1);
    CHECK_EQ_INT(res101.res.keep_alive, 0);
    CHECK_EQ_INT(res101.res.used, hl);
    CHECK_EQ_INT(res101.fed_after, 0);
    /* One final head, no body: the frames are not the 101's content. */
    CHECK(strcmp(res101.res.r.log, WS_101_LOG) == 0 ||
          strcmp(res101.res.r.log, WS_101_LOG "C") == 0);
    CHECK_EQ_INT(res101.res.r.bodylen, 0);
    if (res101.res.used != hl || res101.res.rv != 0)
      fprintf(stderr, "  tail %zu: rv %d used %zu of head %zu (%s)\n", i,
              res101.res.rv, res101.res.used, hl, res101.res.reason);
  }

  /* A 101 has no content (RFC 9110 §15.2): framing fields in it do not
   * make the tunnel's first bytes a body. */
  const char framed[] = "HTTP/1.1 101 Switching Protocols\r\n"
                        "Upgrade: websocket\r\nConnection: upgrade\r\n"
                        "Content-Length: 5\r\n\r\nhello";
  parse_upgrade_every_split(S(framed), &res101);
  CHECK_EQ_INT(res101.res.rv, 0);
  CHECK_EQ_INT(res101.upgraded, 1);
  CHECK_EQ_INT(res101.res.used, sizeof(framed) - 1 - 5);
  CHECK_EQ_INT(res101.res.r.bodylen, 0);
}

/* Interim answers before the 101 pass as usual (a 100 Continue, a 103),
 * and the bytes consumed cover them and the 101's head. */
static void test_upgrade_after_interim(void) {
  static up_result r100;
  const char text[] =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" WS_101 "\x81\x01x";
  parse_upgrade_every_split(S(text), &r100);
  CHECK_EQ_INT(r100.res.rv, 0);
  CHECK_EQ_INT(r100.upgraded, 1);
  CHECK_EQ_INT(r100.res.used, sizeof(text) - 1 - 3);
  CHECK(strcmp(r100.res.r.log, "I100[]I103[Link=</a>;]" WS_101_LOG) == 0 ||
        strcmp(r100.res.r.log, "I100[]I103[Link=</a>;]" WS_101_LOG "C") == 0);
  if (r100.res.rv != 0)
    fprintf(stderr, "  %s\n", r100.res.reason);
}

/* Expecting an upgrade, any other final answer is an ordinary response:
 * its body is read as usual and the connection may stay. */
static void test_upgrade_refused_by_upstream(void) {
  static up_result rr;
  const char text[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno";
  parse_upgrade_every_split(S(text), &rr);
  CHECK_EQ_INT(rr.res.rv, 0);
  CHECK_EQ_INT(rr.res.complete, 1);
  CHECK_EQ_INT(rr.upgraded, 0);
  CHECK_EQ_INT(rr.res.keep_alive, 1);
  CHECK_EQ_INT(rr.res.used, sizeof(text) - 1);
  CHECK_MEM(rr.res.r.body, rr.res.r.bodylen, "no");
  CHECK(strcmp(rr.res.r.log, "H403[Content-Length=2;]BC") == 0);
}

/* The head's callback may refuse the 101 (a wrong Sec-WebSocket-Accept):
 * its error stops the parser, and nothing is upgraded. */
static void test_upgrade_refused_by_callback(void) {
  rec r;
  memset(&r, 0, sizeof(r));
  r.fail_head = H3G_ERR_PROTO;
  h3g_h1_parser *p;
  CHECK_EQ_INT(h3g_h1_parser_new(&p, &rec_cb, &r, 4096), 0);
  h3g_h1_parser_expect_upgrade(p);
  size_t c = 0;
  CHECK_EQ_INT(h3g_h1_parser_feed(p, U8(WS_101 "\x81\x01x"),
                                  sizeof(WS_101 "\x81\x01x") - 1, &c),
               H3G_ERR_PROTO);
  CHECK(!h3g_h1_parser_upgraded(p));
  CHECK(!h3g_h1_parser_complete(p));
  CHECK_EQ_INT(h3g_h1_parser_finish(p), H3G_ERR_PROTO);
  h3g_h1_parser_free(p);
}

/* ---- request parsing ---------------------------------------------------- */

typedef struct rq_rec {
  char method[16];
  char target[256];
  int minor, keep_alive, upgrade, heads, completes, ntrailers;
  int64_t body;
  size_t nfields;
  char fields[1024]; /* "name=value;" ... */
  uint8_t bodybuf[4096];
  size_t bodylen;
} rq_rec;

static int rq_on_head(void *ud, h3g_h1_request_head *h) {
  rq_rec *r = ud;
  r->heads++;
  snprintf(r->method, sizeof(r->method), "%s", h->method);
  snprintf(r->target, sizeof(r->target), "%.*s", (int)h->targetlen,
           (const char *)h->target);
  r->minor = h->version_minor;
  r->keep_alive = h->keep_alive;
  r->upgrade = h->upgrade;
  r->body = h->body;
  r->nfields = h->fields->nfields;
  r->fields[0] = '\0';
  for (size_t i = 0; i < h->fields->nfields; i++) {
    const h3g_field *f = &h->fields->fields[i];
    size_t n = strlen(r->fields);
    snprintf(r->fields + n, sizeof(r->fields) - n, "%.*s=%.*s;",
             (int)f->namelen, (const char *)f->name, (int)f->valuelen,
             (const char *)f->value);
  }
  return 0;
}

static int rq_on_body(void *ud, const uint8_t *d, size_t n) {
  rq_rec *r = ud;
  if (n <= sizeof(r->bodybuf) - r->bodylen) {
    memcpy(r->bodybuf + r->bodylen, d, n);
    r->bodylen += n;
  }
  return 0;
}

static int rq_on_trailers(void *ud, h3g_headers *t) {
  ((rq_rec *)ud)->ntrailers = (int)t->nfields;
  return 0;
}

static int rq_on_complete(void *ud) {
  ((rq_rec *)ud)->completes++;
  return 0;
}

static const h3g_h1_request_callbacks rq_cb = {
    .on_head = rq_on_head,
    .on_body = rq_on_body,
    .on_trailers = rq_on_trailers,
    .on_complete = rq_on_complete,
};

/* Feeds text whole (step 0) or in pieces of step bytes, as a connection
 * would, re-feeding what a pause left. Returns feed's result. */
static int rq_parse(const char *text, size_t step, rq_rec *r,
                    size_t *used_out) {
  h3g_h1_request_parser *p;
  size_t len = strlen(text), off = 0;
  int rv = 0;
  memset(r, 0, sizeof(*r));
  CHECK_EQ_INT(h3g_h1_request_parser_new(&p, &rq_cb, r, 4096), 0);
  while (off < len && !h3g_h1_request_parser_complete(p)) {
    size_t n = step == 0 ? len - off : H3G_MIN(step, len - off), used;
    rv = h3g_h1_request_parser_feed(p, U8(text) + off, n, &used);
    if (rv != 0)
      break;
    off += used;
  }
  if (used_out != NULL)
    *used_out = off;
  h3g_h1_request_parser_free(p);
  return rv;
}

static void test_request_basic(void) {
  rq_rec r;
  size_t used;
  const char *get = "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\n"
                    "X-A: 1  \r\nAccept: */*\r\n\r\nGET /next";
  for (size_t step = 0; step < 8; step++) {
    CHECK_EQ_INT(rq_parse(get, step, &r, &used), 0);
    CHECK_EQ_INT(r.heads, 1);
    CHECK_EQ_INT(r.completes, 1);
    CHECK(strcmp(r.method, "GET") == 0);
    CHECK(strcmp(r.target, "/a?b=c") == 0);
    CHECK_EQ_INT(r.minor, 1);
    CHECK_EQ_INT(r.keep_alive, 1);
    CHECK_EQ_INT(r.body, 0);
    CHECK(strcmp(r.fields, "Host=example.com;X-A=1;Accept=*/*;") == 0);
    /* Parsing stops at the end of the request: the next one waits. */
    CHECK_EQ_INT(used, strlen(get) - strlen("GET /next"));
  }
  CHECK_EQ_INT(rq_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                        "Connection: close\r\n\r\nhello",
                        3, &r, NULL),
               0);
  CHECK_EQ_INT(r.body, 5);
  CHECK_EQ_INT(r.keep_alive, 0);
  CHECK_MEM(r.bodybuf, r.bodylen, "hello");
  CHECK_EQ_INT(r.completes, 1);

  CHECK_EQ_INT(rq_parse("POST /c HTTP/1.1\r\nHost: h\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n"
                        "X-T: 1\r\nContent-Type: z\r\n\r\n",
                        0, &r, NULL),
               0);
  CHECK_EQ_INT(r.body, -1);
  CHECK_MEM(r.bodybuf, r.bodylen, "hello world");
  CHECK_EQ_INT(r.ntrailers, 2);
  CHECK_EQ_INT(r.completes, 1);

  /* HTTP/1.0: no Host needed, close unless keep-alive. */
  CHECK_EQ_INT(rq_parse("GET / HTTP/1.0\r\n\r\n", 0, &r, NULL), 0);
  CHECK_EQ_INT(r.minor, 0);
  CHECK_EQ_INT(r.keep_alive, 0);
  CHECK_EQ_INT(rq_parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0,
                        &r, NULL),
               0);
  CHECK_EQ_INT(r.keep_alive, 1);

  /* Absolute-form, asterisk-form and upgrade are the caller's to map. */
  CHECK_EQ_INT(rq_parse("GET http://h:8/p?q HTTP/1.1\r\nHost: h:8\r\n\r\n", 0,
                        &r, NULL),
               0);
  CHECK(strcmp(r.target, "http://h:8/p?q") == 0);
  CHECK_EQ_INT(rq_parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 0, &r, NULL),
               0);
  CHECK(strcmp(r.target, "*") == 0);
  CHECK_EQ_INT(rq_parse("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n\r\n",
                        0, &r, NULL),
               0);
  CHECK_EQ_INT(r.upgrade, 1);
  CHECK_EQ_INT(r.completes, 1);
}

/* A body is never fed past what the caller allows: the head pauses. */
static void test_request_pause_after_head(void) {
  rq_rec r;
  h3g_h1_request_parser *p;
  const char *t = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd";
  size_t used;
  memset(&r, 0, sizeof(r));
  CHECK_EQ_INT(h3g_h1_request_parser_new(&p, &rq_cb, &r, 4096), 0);
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8(t), strlen(t), &used), 0);
  CHECK_EQ_INT(used, strlen(t) - 4);
  CHECK_EQ_INT(r.heads, 1);
  CHECK_EQ_INT(r.bodylen, 0);
  CHECK(h3g_h1_request_parser_in_body(p));
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8(t) + used, 2, &used), 0);
  CHECK_EQ_INT(used, 2);
  CHECK_EQ_INT(r.bodylen, 2);
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8("cd"), 2, &used), 0);
  CHECK(h3g_h1_request_parser_complete(p));
  CHECK_EQ_INT(r.completes, 1);
  /* Next request on the same connection. */
  h3g_h1_request_parser_reset(p);
  const char *g = "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8(g), strlen(g), &used), 0);
  CHECK_EQ_INT(r.completes, 2);
  CHECK(strcmp(r.target, "/2") == 0);
  h3g_h1_request_parser_free(p);
}

static void test_request_refused(void) {
  static const char *const bad[] = {
      /* Host: missing or repeated (RFC 9112 §3.2) */
      "GET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
      /* framing */
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
      "Transfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
      "Content-Length: 3\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "zz\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nContent-Length: 1\r\n\r\n",
      /* fields */
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n \r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX\x7f: a\r\n\r\n",
      /* request line */
      "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
      "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
      "BREW / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
      /* no target: llhttp reports an empty one (an offset of 0 on a
       * target buffer not yet allocated, undefined behaviour) */
      "CONNECT \r\n\r\n",
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    for (size_t step = 0; step < 3; step++) {
      rq_rec r;
      int rv = rq_parse(bad[i], step == 2 ? 1 : step, &r, NULL);
      CHECK_EQ_INT(rv, H3G_ERR_PROTO);
      if (rv != H3G_ERR_PROTO)
        fprintf(stderr, "  accepted case %zu (step %zu)\n", i, step);
      CHECK_EQ_INT(r.completes, 0);
    }
  }
  /* Head over the cap: TOOBIG (431). */
  char big[6000];
  snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: %05000d\r\n\r\n",
           0);
  rq_rec r;
  CHECK_EQ_INT(rq_parse(big, 0, &r, NULL), H3G_ERR_TOOBIG);
  snprintf(big, sizeof(big), "GET /%05000d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
  CHECK_EQ_INT(rq_parse(big, 0, &r, NULL), H3G_ERR_TOOBIG);
}

/* What parsing a request cut at one point (0: whole) gave. */
typedef struct rq_result {
  int rv;
  size_t used;
  int completes;
  char reason[64];
} rq_result;

static void rq_parse_cut(const char *text, size_t cut, rq_rec *r,
                         rq_result *out) {
  h3g_h1_request_parser *p;
  size_t len = strlen(text), off = 0;
  memset(out, 0, sizeof(*out));
  memset(r, 0, sizeof(*r));
  CHECK_EQ_INT(h3g_h1_request_parser_new(&p, &rq_cb, r, 4096), 0);
  while (off < len && !h3g_h1_request_parser_complete(p)) {
    size_t end = off < cut ? cut : len, used;
    out->rv = h3g_h1_request_parser_feed(p, U8(text) + off, end - off, &used);
    if (out->rv != 0)
      break;
    off += used;
  }
  out->used = off;
  out->completes = r->completes;
  snprintf(out->reason, sizeof(out->reason), "%s",
           h3g_h1_request_parser_reason(p));
  h3g_h1_request_parser_free(p);
}

/* Expects H3G_ERR_PROTO for reason, whole, byte by byte and at every
 * split, with no request completed. */
static void rq_expect_bad(const char *text, const char *reason) {
  rq_rec r;
  rq_result res1;
  size_t len = strlen(text);
  for (size_t cut = 0; cut < len; cut++) {
    rq_parse_cut(text, cut, &r, &res1);
    CHECK_EQ_INT(res1.rv, H3G_ERR_PROTO);
    CHECK_EQ_INT(res1.completes, 0);
    CHECK(reason == NULL || strcmp(res1.reason, reason) == 0);
    if (res1.rv != H3G_ERR_PROTO ||
        (reason != NULL && strcmp(res1.reason, reason) != 0)) {
      fprintf(stderr, "  cut %zu: rv %d (%s): %s\n", cut, res1.rv, res1.reason,
              text);
      return;
    }
  }
  CHECK_EQ_INT(rq_parse(text, 1, &r, NULL), H3G_ERR_PROTO);
}

/* Raw non-ASCII or control bytes in the target: refused on both llhttp
 * versions (9 names them itself, hence no reason asserted). */
static void test_request_target_chars(void) {
  rq_expect_bad("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", NULL);
  rq_expect_bad("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", NULL);
  rq_expect_bad("GET /a?q=\x7f HTTP/1.1\r\nHost: h\r\n\r\n", NULL);
  rq_rec r;
  CHECK_EQ_INT(rq_parse("GET /caf%C3%A9?q=%7F HTTP/1.1\r\nHost: h\r\n\r\n", 1,
                        &r, NULL),
               0);
}

static void test_request_bare_lf(void) {
  /* request line */
  rq_expect_bad("GET / HTTP/1.1\nHost: h\r\n\r\n", "bare LF");
  rq_expect_bad("GET / HTTP/1.0\n\r\n", "bare LF");
  rq_expect_bad("GET / HTTP/1.1\nHost: h\n\n", "bare LF");
  rq_expect_bad("GET /\n HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
  /* header lines */
  rq_expect_bad("GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", "bare LF");
  rq_expect_bad("GET / HTTP/1.1\r\nHost: h\n\r\n", "bare LF");
  rq_expect_bad("GET / HTTP/1.1\r\nHost: h\r\nX:\n\r\n", "bare LF");
  /* end of head, and empty lines before a request line */
  rq_expect_bad("GET / HTTP/1.1\r\nHost: h\r\n\n", "bare LF");
  rq_expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\nx",
                "bare LF");
  rq_expect_bad("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
  rq_expect_bad("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
  /* chunk size lines, chunk data end, last chunk, trailers */
  const char *te = "POST / HTTP/1.1\r\nHost: h\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n";
  static const char *const chunks[] = {
      "1\nx\r\n0\r\n\r\n",       "1;a=b\nx\r\n0\r\n\r\n", "1\r\nx\n0\r\n\r\n",
      "1\r\n\r\n0\r\n\r\n",      "1\r\nx\r\n0\n\r\n",     "0\r\n\n",
      "0\r\nX: 1\nY: 2\r\n\r\n", "0\r\nX: 1\n\r\n",       "0\r\nX: 1\r\n\n",
  };
  char buf[256];
  for (size_t i = 0; i < H3G_ARRAY_LEN(chunks); i++) {
    snprintf(buf, sizeof(buf), "%s%s", te, chunks[i]);
    rq_expect_bad(buf, "bare LF");
  }
  /* bare CR */
  rq_expect_bad("GET / HTTP/1.1\rHost: h\r\n\r\n", "bare CR");
  rq_expect_bad("GET / HTTP/1.1\r\nHost: h\r\n\rX", "bare CR");
  rq_expect_bad("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare CR");
  snprintf(buf, sizeof(buf), "%s1\r\nx\rX0\r\n\r\n", te);
  rq_expect_bad(buf, "bare CR");
  snprintf(buf, sizeof(buf), "%s0\r\nX: 1\r\n\rX", te);
  rq_expect_bad(buf, "bare CR");
}

/* Bodies hold any byte, and a CRLF may be cut anywhere. */
static void test_request_bare_lf_in_body(void) {
  static const char *const good[] = {
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n"
      "\n\ra\n\r\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\n\n\r\n1\r\n\r\r\n2\r\n\r\n\r\n3;e=v\r\na\r\n\r\n"
      "0\r\nX: 1\r\n\r\n",
  };
  static const char *const bodies[] = {"\n\ra\n\r\r\n", "\n\r\r\na\r\n"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(good); i++) {
    size_t len = strlen(good[i]);
    for (size_t cut = 0; cut < len; cut++) {
      rq_rec r;
      rq_result res1;
      rq_parse_cut(good[i], cut, &r, &res1);
      CHECK_EQ_INT(res1.rv, 0);
      CHECK_EQ_INT(res1.completes, 1);
      CHECK_EQ_INT(res1.used, len);
      CHECK_MEM(r.bodybuf, r.bodylen, bodies[i]);
      if (res1.rv != 0) {
        fprintf(stderr, "  case %zu cut %zu: %s\n", i, cut, res1.reason);
        break;
      }
    }
    for (size_t step = 1; step < 4; step++) {
      rq_rec r;
      CHECK_EQ_INT(rq_parse(good[i], step, &r, NULL), 0);
      CHECK_EQ_INT(r.completes, 1);
      CHECK_MEM(r.bodybuf, r.bodylen, bodies[i]);
    }
  }
  /* The next request on the connection may start after a CRLF (RFC 9112
   * §2.2), not after a bare LF. */
  h3g_h1_request_parser *p;
  rq_rec r;
  size_t used;
  memset(&r, 0, sizeof(r));
  CHECK_EQ_INT(h3g_h1_request_parser_new(&p, &rq_cb, &r, 4096), 0);
  const char *a = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8(a), strlen(a), &used), 0);
  h3g_h1_request_parser_reset(p);
  const char *b = "\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8(b), strlen(b), &used), 0);
  CHECK_EQ_INT(r.completes, 2);
  h3g_h1_request_parser_reset(p);
  CHECK_EQ_INT(h3g_h1_request_parser_feed(p, U8("\n"), 1, &used),
               H3G_ERR_PROTO);
  CHECK(strcmp(h3g_h1_request_parser_reason(p), "bare LF") == 0);
  h3g_h1_request_parser_free(p);
}

int main(void) {
  RUN(test_write_request_basic);
  RUN(test_write_request_cookies_and_skips);
  RUN(test_chunk_header);
  RUN(test_write_trailers);
  RUN(test_content_length);
  RUN(test_zero_length);
  RUN(test_chunked_trailers);
  RUN(test_chunked_no_trailers);
  RUN(test_close_delimited);
  RUN(test_head);
  RUN(test_no_body_statuses);
  RUN(test_interim);
  RUN(test_keep_alive);
  RUN(test_bytes_after_end);
  RUN(test_finish_cases);
  RUN(test_bad_status_line);
  RUN(test_bad_framing);
  RUN(test_bad_chunks);
  RUN(test_bad_trailers);
  RUN(test_bad_fields);
  RUN(test_value_bytes);
  RUN(test_bare_lf_response);
  RUN(test_bare_lf_in_body);
  RUN(test_crlf_across_reads);
  RUN(test_caps);
  RUN(test_callback_errors);
  RUN(test_upgrade_only_when_expected);
  RUN(test_upgrade_stops_after_head);
  RUN(test_upgrade_after_interim);
  RUN(test_upgrade_refused_by_upstream);
  RUN(test_upgrade_refused_by_callback);
  RUN(test_request_basic);
  RUN(test_request_pause_after_head);
  RUN(test_request_refused);
  RUN(test_request_bare_lf);
  RUN(test_request_target_chars);
  RUN(test_request_bare_lf_in_body);
  return unit_report();
}
