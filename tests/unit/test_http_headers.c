/* Tests for proxy/http/http_headers.c: storage, the flags table, request and
 * trailer validation, response filtering. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_headers.h"
#include "unit.h"

#define U8(s) ((const uint8_t *)(s))

static int add(h3g_headers *h, const char *name, const char *value) {
  return h3g_headers_add(h, U8(name), strlen(name), U8(value), strlen(value));
}

/* Builds a list from NULL-terminated name, value pairs. */
static void build(h3g_headers *h, const char *const *nv) {
  h3g_headers_init(h, 64 * 1024);
  for (size_t i = 0; nv[i] != NULL; i += 2)
    CHECK_EQ_INT(add(h, nv[i], nv[i + 1]), 0);
}

static int validate(const char *const *nv, const char **why,
                    h3g_request_pseudo *ps, int64_t *cl) {
  h3g_headers h;
  h3g_request_pseudo tmp;
  int64_t tmpcl;
  build(&h, nv);
  int rv = h3g_request_validate(&h, ps ? ps : &tmp, cl ? cl : &tmpcl, why);
  h3g_headers_free(&h);
  return rv;
}

#define GET_BASE ":method", "GET", ":scheme", "https", ":path", "/"
#define AUTH ":authority", "example.com"

/* Expects the request to be refused with exactly this reason. */
#define REFUSED(reason, ...)                                                   \
  do {                                                                         \
    const char *nv_[] = {__VA_ARGS__, NULL};                                   \
    const char *why_ = NULL;                                                   \
    CHECK_EQ_INT(validate(nv_, &why_, NULL, NULL), H3G_ERR_PROTO);             \
    CHECK(why_ != NULL && strcmp(why_, reason) == 0);                          \
    if (why_ == NULL || strcmp(why_, reason) != 0)                             \
      fprintf(stderr, "  why: %s (wanted %s)\n", why_ ? why_ : "(null)",       \
              reason);                                                         \
  } while (0)

#define ACCEPTED(...)                                                          \
  do {                                                                         \
    const char *nv_[] = {__VA_ARGS__, NULL};                                   \
    const char *why_ = NULL;                                                   \
    int rv_ = validate(nv_, &why_, NULL, NULL);                                \
    CHECK_EQ_INT(rv_, 0);                                                      \
    if (rv_ != 0)                                                              \
      fprintf(stderr, "  why: %s\n", why_ ? why_ : "(null)");                  \
  } while (0)

/* ---- storage ------------------------------------------------------------ */

static void test_add_find_clear(void) {
  h3g_headers h;
  CHECK_EQ_INT(h3g_headers_init(&h, 4096), 0);
  CHECK(h3g_headers_find(&h, "a") == NULL);
  CHECK_EQ_INT(add(&h, "content-type", "text/plain"), 0);
  CHECK_EQ_INT(add(&h, "X-Foo", "bar"), 0);
  CHECK_EQ_INT(add(&h, "empty", ""), 0);
  CHECK_EQ_INT(h.nfields, 3);
  CHECK_EQ_INT(h.section_size, 12 + 10 + 32 + 5 + 3 + 32 + 5 + 32);
  const h3g_field *f = h3g_headers_find(&h, "x-foo");
  CHECK(f != NULL && f == &h.fields[1]);
  CHECK_MEM(f->value, f->valuelen, "bar");
  CHECK(h3g_headers_find(&h, "CONTENT-TYPE") == &h.fields[0]);
  CHECK(h3g_headers_find(&h, "x-fo") == NULL);
  CHECK(h3g_field_name_eq(&h.fields[1], "x-FOO"));
  CHECK(!h3g_field_name_eq(&h.fields[1], "x-foo2"));
  CHECK_EQ_INT(h.fields[2].valuelen, 0);
  h3g_headers_clear(&h);
  CHECK_EQ_INT(h.nfields, 0);
  CHECK_EQ_INT(h.section_size, 0);
  CHECK(h.arena != NULL);
  CHECK_EQ_INT(add(&h, "a", "b"), 0);
  CHECK_MEM(h.fields[0].name, h.fields[0].namelen, "a");
  h3g_headers_free(&h);
  h3g_headers_free(&h); /* twice is fine */
  h3g_headers_free(NULL);
  h3g_headers zero = {0};
  h3g_headers_free(&zero);
}

static void test_cap(void) {
  h3g_headers h;
  h3g_headers_init(&h, 100);
  CHECK_EQ_INT(add(&h, "abc", "defgh"), 0); /* 40 */
  CHECK_EQ_INT(add(&h, "abc", "defgh"), 0); /* 80 */
  /* 80 + 32 + 9 > 100 */
  CHECK_EQ_INT(add(&h, "abc", "defgh9"), H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h.nfields, 2);
  /* Even an empty field costs 32. */
  CHECK_EQ_INT(h3g_headers_add(&h, NULL, 0, NULL, 0), H3G_ERR_TOOBIG);
  h3g_headers_free(&h);

  h3g_headers_init(&h, 100);
  CHECK_EQ_INT(add(&h, "abcdefghij", "0123456789012345678901234567"), 0);
  CHECK_EQ_INT(h.section_size, 70);
  CHECK_EQ_INT(add(&h, "", ""), H3G_ERR_TOOBIG); /* 70 + 32 */
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0,
                                       U8("012345678901234567890123"
                                          "4567890"),
                                       31),
               H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0,
                                       U8("012345678901234567890123"
                                          "456789"),
                                       30),
               0);
  CHECK_EQ_INT(h.section_size, 100); /* exactly at the cap is fine */
  CHECK_EQ_INT(h3g_headers_append_last(&h, 1, U8("x"), 1), H3G_ERR_TOOBIG);
  /* Huge lengths must not overflow the check. */
  CHECK_EQ_INT(h3g_headers_add(&h, U8("a"), SIZE_MAX, U8("b"), 1),
               H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0, U8("a"), SIZE_MAX),
               H3G_ERR_TOOBIG);
  h3g_headers_free(&h);

  h3g_headers_init(&h, 0);
  CHECK_EQ_INT(add(&h, "", ""), H3G_ERR_TOOBIG);
  h3g_headers_free(&h);
}

/* Growing the arena moves it; fields[] must follow. */
static void test_growth_rebases(void) {
  h3g_headers h;
  h3g_headers_init(&h, 1 << 20);
  char name[32], value[64];
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof(name), "name-%d", i);
    snprintf(value, sizeof(value), "value-%d-%0*d", i, i % 40, 0);
    CHECK_EQ_INT(add(&h, name, value), 0);
  }
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof(name), "name-%d", i);
    snprintf(value, sizeof(value), "value-%d-%0*d", i, i % 40, 0);
    CHECK_MEM(h.fields[i].name, h.fields[i].namelen, name);
    CHECK_MEM(h.fields[i].value, h.fields[i].valuelen, value);
  }
  CHECK(h.arena_cap <= h.max_section_size);
  CHECK(h.fields_cap <= h.max_section_size / 32 + 1);
  h3g_headers_free(&h);
}

/* A small cap bounds the allocations too. */
static void test_growth_bounded(void) {
  h3g_headers h;
  h3g_headers_init(&h, 300);
  int n = 0;
  while (add(&h, "a", "b") == 0)
    n++;
  CHECK_EQ_INT(n, 300 / 34);
  CHECK(h.arena_cap <= 300);
  CHECK(h.fields_cap <= 300 / 32 + 1);
  h3g_headers_free(&h);
}

static void test_append_last(void) {
  h3g_headers h;
  h3g_headers_init(&h, 1 << 16);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0, U8("x"), 1), H3G_ERR_INVAL);
  CHECK_EQ_INT(add(&h, "first", "1"), 0);
  CHECK_EQ_INT(h3g_headers_add(&h, U8("Con"), 3, NULL, 0), 0);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 1, U8("tent-"), 5), 0);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 1, U8("Type"), 4), 0);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0, U8("text/"), 5), 0);
  /* a name piece after value bytes shifts the value */
  CHECK_EQ_INT(h3g_headers_append_last(&h, 1, U8("X"), 1), 0);
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0, U8("html"), 4), 0);
  CHECK_MEM(h.fields[1].name, h.fields[1].namelen, "Content-TypeX");
  CHECK_MEM(h.fields[1].value, h.fields[1].valuelen, "text/html");
  CHECK_MEM(h.fields[0].value, h.fields[0].valuelen, "1");
  CHECK_EQ_INT(h.section_size, 5 + 1 + 32 + 13 + 9 + 32);
  /* Force growth while appending, many times. */
  for (int i = 0; i < 2000; i++)
    CHECK_EQ_INT(h3g_headers_append_last(&h, 0, U8("z"), 1), 0);
  CHECK_EQ_INT(h.fields[1].valuelen, 9 + 2000);
  CHECK_MEM(h.fields[0].name, h.fields[0].namelen, "first");
  CHECK(memcmp(h.fields[1].value, "text/htmlzzz", 12) == 0);
  h3g_headers_free(&h);
}

static void test_trim_last(void) {
  h3g_headers h;
  h3g_headers_init(&h, 1 << 16);
  h3g_headers_trim_last(&h); /* empty: no-op */
  CHECK_EQ_INT(add(&h, "a", "x y \t "), 0);
  size_t used = h.arena_used, size = h.section_size;
  h3g_headers_trim_last(&h);
  CHECK_MEM(h.fields[0].value, h.fields[0].valuelen, "x y");
  CHECK_EQ_INT(h.arena_used, used - 3);
  CHECK_EQ_INT(h.section_size, size - 3);
  /* appending after a trim goes on after the kept bytes */
  CHECK_EQ_INT(h3g_headers_append_last(&h, 0, U8("z"), 1), 0);
  CHECK_MEM(h.fields[0].value, h.fields[0].valuelen, "x yz");
  CHECK_EQ_INT(add(&h, "b", "   "), 0);
  h3g_headers_trim_last(&h);
  CHECK_EQ_INT(h.fields[1].valuelen, 0);
  h3g_headers_free(&h);

  /* Whitespace padding cannot grow the arena past the cap. */
  h3g_headers_init(&h, 1000);
  for (int i = 0; i < 1000; i++) {
    if (add(&h, "p", "x                                                 ") != 0)
      break;
    h3g_headers_trim_last(&h);
  }
  CHECK(h.arena_cap <= 1000);
  h3g_headers_free(&h);
}

/* ---- flags table -------------------------------------------------------- */

static unsigned flags(const char *name) {
  return h3g_field_flags(U8(name), strlen(name));
}

static void test_flags(void) {
  const unsigned HBH = H3G_FIELD_HOP_BY_HOP, CONN = H3G_FIELD_CONN_SPECIFIC;
  CHECK_EQ_INT(flags("connection"), HBH | CONN);
  CHECK_EQ_INT(flags("keep-alive"), HBH | CONN);
  CHECK_EQ_INT(flags("proxy-connection"), HBH | CONN);
  CHECK_EQ_INT(flags("transfer-encoding"), HBH | CONN | H3G_FIELD_FRAMING);
  CHECK_EQ_INT(flags("upgrade"), HBH | CONN);
  CHECK_EQ_INT(flags("te"), HBH);
  CHECK_EQ_INT(flags("host"), H3G_FIELD_FRAMING);
  CHECK_EQ_INT(flags("content-length"), H3G_FIELD_FRAMING);
  CHECK_EQ_INT(flags("cookie"), H3G_FIELD_COOKIE);
  CHECK_EQ_INT(flags("forwarded"), H3G_FIELD_FORWARDING);
  CHECK_EQ_INT(flags("via"), H3G_FIELD_FORWARDING);
  CHECK_EQ_INT(flags("x-forwarded-for"), H3G_FIELD_FORWARDING);
  CHECK_EQ_INT(flags("x-forwarded-proto"), H3G_FIELD_FORWARDING);
  CHECK_EQ_INT(flags("x-forwarded-host"), H3G_FIELD_FORWARDING);
  CHECK_EQ_INT(flags("x-forwarded-port"), H3G_FIELD_FORWARDING);
  CHECK_EQ_INT(flags("x-real-ip"), H3G_FIELD_FORWARDING);
  /* RFC 9110 §7.6.1 no longer lists these as hop-by-hop. */
  CHECK_EQ_INT(flags("trailer"), 0);
  CHECK_EQ_INT(flags("proxy-authenticate"), 0);
  CHECK_EQ_INT(flags("proxy-authorization"), 0);
  CHECK_EQ_INT(flags("set-cookie"), 0);
  CHECK_EQ_INT(flags("Connection"), HBH | CONN);
  CHECK_EQ_INT(flags("TRANSFER-ENCODING"), HBH | CONN | H3G_FIELD_FRAMING);
  CHECK_EQ_INT(flags("connectio"), 0);
  CHECK_EQ_INT(flags("connections"), 0);
  CHECK_EQ_INT(flags(""), 0);
}

/* ---- request validation ------------------------------------------------- */

static void test_validate_ok(void) {
  const char *nv[] = {":method", "GET",        ":scheme",
                      "https",   ":authority", "example.com:8443",
                      ":path",   "/a/b?c=d&e", "user-agent",
                      "t/1",     "accept",     "*/*",
                      "cookie",  "a=b",        "cookie",
                      "c=d",     "te",         "trailers",
                      NULL};
  h3g_request_pseudo ps;
  int64_t cl = 7;
  const char *why = NULL;
  CHECK_EQ_INT(validate(nv, &why, &ps, &cl), 0);
  CHECK_EQ_INT(cl, -1);
  /* pointers are into a freed list now: compare lengths only */
  CHECK_EQ_INT(ps.method.valuelen, 3);
  CHECK_EQ_INT(ps.scheme.valuelen, 5);
  CHECK_EQ_INT(ps.authority.valuelen, 16);
  CHECK_EQ_INT(ps.path.valuelen, 10);
  CHECK_EQ_INT(ps.protocol.namelen, 0);

  h3g_headers h;
  build(&h, nv);
  CHECK_EQ_INT(h3g_request_validate(&h, &ps, &cl, &why), 0);
  CHECK_MEM(ps.method.value, ps.method.valuelen, "GET");
  CHECK_MEM(ps.authority.value, ps.authority.valuelen, "example.com:8443");
  CHECK_MEM(ps.path.value, ps.path.valuelen, "/a/b?c=d&e");
  h3g_headers_free(&h);

  ACCEPTED(GET_BASE, AUTH);
  ACCEPTED(":method", "GET", ":scheme", "http", ":path", "/", AUTH);
  ACCEPTED(":method", "GET", ":scheme", "HTTPS", ":path", "/", AUTH);
  ACCEPTED(":path", "/", ":authority", "a", ":scheme", "https", ":method",
           "PURGE");
  ACCEPTED(":method", "OPTIONS", ":scheme", "https", ":path", "*", AUTH);
  ACCEPTED(GET_BASE, "host", "example.com");
  ACCEPTED(GET_BASE, ":authority", "Example.COM", "host", "example.com");
  ACCEPTED(GET_BASE, ":authority", "[::1]:443");
  ACCEPTED(GET_BASE, ":authority", "a%41.b-c_d~e!$&'()*+,;=");
  ACCEPTED(GET_BASE, AUTH, "x", "");
  ACCEPTED(GET_BASE, AUTH, "x", "a b\tc");
  ACCEPTED(GET_BASE, AUTH, "x", "\x80\xff obs-text");
  ACCEPTED(GET_BASE, AUTH, "x", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
  ACCEPTED(GET_BASE, AUTH, "!#$%&'*+-.^_`|~09az", "v");
  ACCEPTED(GET_BASE, AUTH, "te", "Trailers");
  ACCEPTED(GET_BASE, AUTH, "trailer", "x", "proxy-authorization", "y");
  ACCEPTED(":method", "GET", ":scheme", "https", ":path",
           "/!$&'()*+,;=:@-._~%20?/?[]\"<>\\^`{|}", AUTH);
}

static void test_validate_content_length(void) {
  int64_t cl = 0;
  const char *why = NULL;
  {
    const char *nv[] = {GET_BASE, AUTH, "content-length", "42", NULL};
    CHECK_EQ_INT(validate(nv, &why, NULL, &cl), 0);
    CHECK_EQ_INT(cl, 42);
  }
  {
    const char *nv[] = {GET_BASE, AUTH, "content-length", "0", NULL};
    CHECK_EQ_INT(validate(nv, &why, NULL, &cl), 0);
    CHECK_EQ_INT(cl, 0);
  }
  {
    const char *nv[] = {
        GET_BASE, AUTH, "content-length", "5, 5", "content-length", "5", NULL};
    CHECK_EQ_INT(validate(nv, &why, NULL, &cl), 0);
    CHECK_EQ_INT(cl, 5);
  }
  {
    const char *nv[] = {GET_BASE, AUTH, "content-length", "9223372036854775807",
                        NULL};
    CHECK_EQ_INT(validate(nv, &why, NULL, &cl), 0);
    CHECK_EQ_INT(cl, INT64_MAX);
  }
  {
    const char *nv[] = {GET_BASE, AUTH, "content-length", "007", NULL};
    CHECK_EQ_INT(validate(nv, &why, NULL, &cl), 0);
    CHECK_EQ_INT(cl, 7);
  }
  REFUSED("content-length too large", GET_BASE, AUTH, "content-length",
          "9223372036854775808");
  REFUSED("content-length too large", GET_BASE, AUTH, "content-length",
          "99999999999999999999999");
  REFUSED("content-length values differ", GET_BASE, AUTH, "content-length", "5",
          "content-length", "6");
  REFUSED("content-length values differ", GET_BASE, AUTH, "content-length",
          "5,6");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "+5");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "-1");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "5a");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "0x5");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "5,");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "5,,5");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "5 5");
  REFUSED("invalid content-length", GET_BASE, AUTH, "content-length", "5.0");
}

static void test_validate_pseudo(void) {
  REFUSED("missing :method", ":scheme", "https", ":path", "/", AUTH);
  REFUSED("missing :scheme", ":method", "GET", ":path", "/", AUTH);
  REFUSED("missing :path", ":method", "GET", ":scheme", "https", AUTH);
  REFUSED("repeated pseudo-header field", GET_BASE, AUTH, ":path", "/x");
  REFUSED("repeated pseudo-header field", ":method", "GET", ":method", "GET",
          ":scheme", "https", ":path", "/", AUTH);
  REFUSED("repeated pseudo-header field", GET_BASE, AUTH, AUTH);
  REFUSED("unknown pseudo-header field", GET_BASE, AUTH, ":status", "200");
  REFUSED("unknown pseudo-header field", GET_BASE, AUTH, ":Path", "/");
  REFUSED("unknown pseudo-header field", GET_BASE, AUTH, ":", "x");
  REFUSED("pseudo-header field after regular field", ":method", "GET",
          ":scheme", "https", "accept", "*/*", ":path", "/", AUTH);
  REFUSED("invalid :method", ":method", "", ":scheme", "https", ":path", "/",
          AUTH);
  REFUSED("invalid :method", ":method", "G(T", ":scheme", "https", ":path", "/",
          AUTH);
  REFUSED("invalid :method", ":method", "G T", ":scheme", "https", ":path", "/",
          AUTH);
  REFUSED("unsupported :scheme", ":method", "GET", ":scheme", "ftp", ":path",
          "/", AUTH);
  REFUSED("unsupported :scheme", ":method", "GET", ":scheme", "", ":path", "/",
          AUTH);
  REFUSED("empty :path", ":method", "GET", ":scheme", "https", ":path", "",
          AUTH);
  REFUSED(":path does not start with \"/\"", ":method", "GET", ":scheme",
          "https", ":path", "a/b", AUTH);
  REFUSED(":path does not start with \"/\"", ":method", "GET", ":scheme",
          "https", ":path", "https://example.com/", AUTH);
  REFUSED(":path \"*\" is only valid with OPTIONS", ":method", "GET", ":scheme",
          "https", ":path", "*", AUTH);
  REFUSED(":path does not start with \"/\"", ":method", "OPTIONS", ":scheme",
          "https", ":path", "**", AUTH);
  REFUSED("invalid character in :path", ":method", "GET", ":scheme", "https",
          ":path", "/a b", AUTH);
  REFUSED("invalid character in :path", ":method", "GET", ":scheme", "https",
          ":path", "/a#frag", AUTH);
  REFUSED("invalid character in :path", ":method", "GET", ":scheme", "https",
          ":path", "/\x80", AUTH);
  REFUSED("invalid character in :path", ":method", "GET", ":scheme", "https",
          ":path", "/a\tb", AUTH);
  REFUSED("invalid character in field value", ":method", "GET", ":scheme",
          "https", ":path", "/a\r\nb", AUTH);
  REFUSED("leading or trailing whitespace in field value", ":method", "GET",
          ":scheme", "https", ":path", "/a ", AUTH);
  /* A plain CONNECT (a TCP tunnel anywhere) is refused, with or without
   * :path; extended CONNECT (RFC 8441 §4, RFC 9220 §3) has the form of a
   * request for this origin, and :protocol needs CONNECT. */
  REFUSED("CONNECT is not supported (the gateway tunnels WebSockets only, "
          "by extended CONNECT)",
          ":method", "CONNECT", ":authority", "example.com:443");
  REFUSED("CONNECT is not supported (the gateway tunnels WebSockets only, "
          "by extended CONNECT)",
          ":method", "CONNECT", ":scheme", "https", ":path", "/chat", AUTH);
  REFUSED(":protocol is only valid with CONNECT", GET_BASE, AUTH, ":protocol",
          "websocket");
  REFUSED("missing :scheme", ":method", "CONNECT", ":protocol", "websocket",
          ":path", "/chat", AUTH);
  REFUSED("missing :path", ":method", "CONNECT", ":protocol", "websocket",
          ":scheme", "https", AUTH);
  REFUSED("extended CONNECT without :authority", ":method", "CONNECT",
          ":protocol", "websocket", ":scheme", "https", ":path", "/chat",
          "host", "example.com");
  REFUSED("invalid :protocol", ":method", "CONNECT", ":protocol", "",
          ":scheme", "https", ":path", "/chat", AUTH);
  REFUSED("invalid :protocol", ":method", "CONNECT", ":protocol", "web socket",
          ":scheme", "https", ":path", "/chat", AUTH);
  REFUSED("repeated pseudo-header field", ":method", "CONNECT", ":protocol",
          "websocket", ":protocol", "websocket", ":scheme", "https", ":path",
          "/chat", AUTH);
  {
    /* Any token passes here: which protocols are served is the bridge's. */
    const char *why = NULL;
    h3g_request_pseudo ps;
    const char *nv[] = {":method", "CONNECT", ":protocol", "websocket",
                        ":scheme", "https",   ":path",     "/chat",
                        AUTH,      NULL};
    CHECK(validate(nv, &why, &ps, NULL) == 0);
    CHECK(ps.protocol.namelen == 9 && ps.protocol.valuelen == 9);
    const char *nv2[] = {":method", "CONNECT", ":protocol", "foo",
                         ":scheme", "https",   ":path",     "/",
                         AUTH,      NULL};
    CHECK(validate(nv2, &why, NULL, NULL) == 0);
  }
}

static void test_validate_authority(void) {
  REFUSED("missing :authority and host", GET_BASE);
  REFUSED("empty :authority or host", GET_BASE, ":authority", "");
  REFUSED("empty :authority or host", GET_BASE, "host", "");
  REFUSED("userinfo in :authority or host", GET_BASE, ":authority",
          "user:pw@example.com");
  REFUSED("userinfo in :authority or host", GET_BASE, "host", "u@example.com");
  REFUSED("invalid character in :authority or host", GET_BASE, ":authority",
          "exa mple.com");
  REFUSED("invalid character in :authority or host", GET_BASE, ":authority",
          "example.com/x");
  REFUSED("invalid character in :authority or host", GET_BASE, "host", "a\"b");
  REFUSED("host differs from :authority", GET_BASE, AUTH, "host",
          "other.example");
  REFUSED("host differs from :authority", GET_BASE, AUTH, "host",
          "example.com:443");
  REFUSED("repeated host field", GET_BASE, "host", "a", "host", "a");
}

static void test_validate_fields(void) {
  REFUSED("empty field name", GET_BASE, AUTH, "", "x");
  REFUSED("uppercase character in field name", GET_BASE, AUTH, "Accept", "*/*");
  REFUSED("uppercase character in field name", GET_BASE, AUTH, "x-fOo", "1");
  REFUSED("invalid character in field name", GET_BASE, AUTH, "a b", "1");
  REFUSED("invalid character in field name", GET_BASE, AUTH, "a:b", "1");
  REFUSED("invalid character in field name", GET_BASE, AUTH, "a(b)", "1");
  REFUSED("invalid character in field name", GET_BASE, AUTH, "\x80", "1");
  REFUSED("invalid character in field value", GET_BASE, AUTH, "x", "a\rb");
  REFUSED("invalid character in field value", GET_BASE, AUTH, "x", "a\nb");
  REFUSED("invalid character in field value", GET_BASE, AUTH, "x", "a\x01");
  REFUSED("invalid character in field value", GET_BASE, AUTH, "x", "a\x7f");
  REFUSED("invalid character in field value", GET_BASE, AUTH, "x", "\x1f");
  REFUSED("leading or trailing whitespace in field value", GET_BASE, AUTH, "x",
          " a");
  REFUSED("leading or trailing whitespace in field value", GET_BASE, AUTH, "x",
          "a\t");
  REFUSED("leading or trailing whitespace in field value", GET_BASE, AUTH, "x",
          " ");
  REFUSED("connection-specific field", GET_BASE, AUTH, "connection",
          "keep-alive");
  REFUSED("connection-specific field", GET_BASE, AUTH, "keep-alive", "5");
  REFUSED("connection-specific field", GET_BASE, AUTH, "proxy-connection", "x");
  REFUSED("connection-specific field", GET_BASE, AUTH, "transfer-encoding",
          "chunked");
  REFUSED("connection-specific field", GET_BASE, AUTH, "upgrade", "h2c");
  REFUSED("te other than trailers", GET_BASE, AUTH, "te", "gzip");
  REFUSED("te other than trailers", GET_BASE, AUTH, "te", "trailers, gzip");
  REFUSED("te other than trailers", GET_BASE, AUTH, "te", "");

  /* NUL inside a value (not expressible with C strings above). */
  h3g_headers h;
  const char *nv[] = {GET_BASE, AUTH, NULL};
  build(&h, nv);
  CHECK_EQ_INT(h3g_headers_add(&h, U8("x"), 1, U8("a\0b"), 3), 0);
  const char *why = NULL;
  h3g_request_pseudo ps;
  int64_t cl;
  CHECK_EQ_INT(h3g_request_validate(&h, &ps, &cl, &why), H3G_ERR_PROTO);
  CHECK(why != NULL && strcmp(why, "invalid character in field value") == 0);
  h3g_headers_free(&h);
  build(&h, nv);
  CHECK_EQ_INT(h3g_headers_add(&h, U8("x\0"), 2, U8("a"), 1), 0);
  CHECK_EQ_INT(h3g_request_validate(&h, &ps, &cl, &why), H3G_ERR_PROTO);
  CHECK(why != NULL && strcmp(why, "invalid character in field name") == 0);
  h3g_headers_free(&h);

  /* Every byte value in a name and in a value, one at a time. */
  for (int c = 0; c < 256; c++) {
    build(&h, nv);
    uint8_t b = (uint8_t)c;
    CHECK_EQ_INT(h3g_headers_add(&h, &b, 1, U8("v"), 1), 0);
    int rv = h3g_request_validate(&h, &ps, &cl, &why);
    int tchar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
    CHECK_EQ_INT(rv, tchar ? 0 : H3G_ERR_PROTO);
    h3g_headers_free(&h);

    build(&h, nv);
    uint8_t v[3] = {'a', b, 'a'};
    CHECK_EQ_INT(h3g_headers_add(&h, U8("x"), 1, v, 3), 0);
    rv = h3g_request_validate(&h, &ps, &cl, &why);
    int ok = c == '\t' || (c >= 0x20 && c != 0x7f);
    CHECK_EQ_INT(rv, ok ? 0 : H3G_ERR_PROTO);
    h3g_headers_free(&h);
  }
}

static void test_validate_null_out(void) {
  /* *why may be NULL-pointer-free: why == NULL is allowed. */
  h3g_headers h;
  const char *nv[] = {":method", "GET", NULL};
  build(&h, nv);
  h3g_request_pseudo ps;
  int64_t cl;
  CHECK_EQ_INT(h3g_request_validate(&h, &ps, &cl, NULL), H3G_ERR_PROTO);
  h3g_headers_free(&h);
  /* An empty section misses :method. */
  h3g_headers_init(&h, 100);
  const char *why = NULL;
  CHECK_EQ_INT(h3g_request_validate(&h, &ps, &cl, &why), H3G_ERR_PROTO);
  CHECK(why != NULL && strcmp(why, "missing :method") == 0);
  h3g_headers_free(&h);
}

static int trailers(const char *const *nv, const char **why) {
  h3g_headers h;
  build(&h, nv);
  int rv = h3g_trailers_validate(&h, why);
  h3g_headers_free(&h);
  return rv;
}

#define TRAILERS_REFUSED(reason, ...)                                          \
  do {                                                                         \
    const char *nv_[] = {__VA_ARGS__, NULL};                                   \
    const char *why_ = NULL;                                                   \
    CHECK_EQ_INT(trailers(nv_, &why_), H3G_ERR_PROTO);                         \
    CHECK(why_ != NULL && strcmp(why_, reason) == 0);                          \
  } while (0)

static void test_trailers(void) {
  const char *why = NULL;
  const char *ok[] = {"x-checksum", "abc", "server-timing", "a;dur=1", NULL};
  CHECK_EQ_INT(trailers(ok, &why), 0);
  const char *none[] = {NULL};
  CHECK_EQ_INT(trailers(none, &why), 0);
  TRAILERS_REFUSED("pseudo-header field in trailers", ":path", "/");
  TRAILERS_REFUSED("uppercase character in field name", "X-Sum", "1");
  TRAILERS_REFUSED("invalid character in field name", "x sum", "1");
  TRAILERS_REFUSED("empty field name", "", "1");
  TRAILERS_REFUSED("invalid character in field value", "x", "a\nb");
  TRAILERS_REFUSED("leading or trailing whitespace in field value", "x", "a ");
  TRAILERS_REFUSED("connection-specific field", "connection", "close");
  TRAILERS_REFUSED("connection-specific field", "transfer-encoding", "chunked");
  TRAILERS_REFUSED("field not allowed in trailers", "te", "trailers");
  TRAILERS_REFUSED("field not allowed in trailers", "content-length", "5");
  TRAILERS_REFUSED("field not allowed in trailers", "host", "a");
}

/* ---- response filtering ------------------------------------------------- */

static void check_filtered(const char *const *in, const char *const *want) {
  h3g_headers h;
  build(&h, in);
  h3g_field out[64];
  size_t n = 99;
  CHECK_EQ_INT(h3g_response_filter(&h, out, 64, &n), 0);
  size_t k = 0;
  while (want[2 * k] != NULL)
    k++;
  CHECK_EQ_INT(n, k);
  for (size_t i = 0; i < n && i < k; i++) {
    CHECK_MEM(out[i].name, out[i].namelen, want[2 * i]);
    CHECK_MEM(out[i].value, out[i].valuelen, want[2 * i + 1]);
  }
  h3g_headers_free(&h);
}

static void test_filter(void) {
  {
    const char *in[] = {"Content-Type",
                        "text/html",
                        "Connection",
                        "keep-alive",
                        "Keep-Alive",
                        "timeout=5",
                        "Transfer-Encoding",
                        "chunked",
                        "Set-Cookie",
                        "a=1",
                        "SET-COOKIE",
                        "b=2",
                        "Upgrade",
                        "h2c",
                        "TE",
                        "trailers",
                        "Proxy-Connection",
                        "x",
                        "Trailer",
                        "X-Sum",
                        "Via",
                        "1.1 old",
                        NULL};
    const char *want[] = {"content-type", "text/html", "set-cookie", "a=1",
                          "set-cookie",   "b=2",       "trailer",    "X-Sum",
                          "via",          "1.1 old",   NULL};
    check_filtered(in, want);
  }
  {
    /* Fields named by Connection go, in any case, with OWS and empty
     * elements; "close" names nothing. */
    const char *in[] = {
        "X-A", "1",   "Connection", " x-a ,,X-B\t, close", "x-b",
        "2",   "X-C", "3",          "connection",          "X-c",
        "X-D", "4",   NULL};
    const char *want[] = {"x-d", "4", NULL};
    check_filtered(in, want);
  }
  {
    const char *in[] = {"Server", "old", "Connection", "close", NULL};
    const char *want[] = {"server", "old", NULL};
    check_filtered(in, want);
  }
  {
    const char *in[] = {NULL};
    const char *want[] = {NULL};
    check_filtered(in, want);
  }
  {
    /* A token that is a prefix of a name does not remove it. */
    const char *in[] = {"Connection", "x-lon", "X-Long", "1",
                        "x-lo",       "2",     NULL};
    const char *want[] = {"x-long", "1", "x-lo", "2", NULL};
    check_filtered(in, want);
  }
}

static void test_filter_caps(void) {
  h3g_headers h;
  const char *in[] = {"A", "1", "B", "2", "C", "3", NULL};
  build(&h, in);
  h3g_field out[3];
  size_t n = 0;
  CHECK_EQ_INT(h3g_response_filter(&h, out, 2, &n), H3G_ERR_TOOBIG);
  CHECK_EQ_INT(h3g_response_filter(&h, out, 3, &n), 0);
  CHECK_EQ_INT(n, 3);
  h3g_headers_free(&h);

  /* Hop-by-hop options and repeats do not count towards the cap. */
  h3g_headers_init(&h, 1 << 16);
  char v[4096];
  size_t len = 0;
  for (int i = 0; i < H3G_MAX_CONNECTION_OPTIONS; i++)
    len += (size_t)snprintf(v + len, sizeof(v) - len,
                            "o%d, keep-alive, "
                            "close, O%d, ",
                            i, i);
  CHECK_EQ_INT(add(&h, "Connection", v), 0);
  CHECK_EQ_INT(add(&h, "o0", "x"), 0);
  CHECK_EQ_INT(add(&h, "o31", "x"), 0);
  CHECK_EQ_INT(add(&h, "o32", "kept"), 0);
  h3g_field out2[8];
  CHECK_EQ_INT(h3g_response_filter(&h, out2, 8, &n), 0);
  CHECK_EQ_INT(n, 1);
  CHECK_MEM(out2[0].value, out2[0].valuelen, "kept");
  CHECK_EQ_INT(add(&h, "Connection", "one-more"), 0);
  CHECK_EQ_INT(h3g_response_filter(&h, out2, 8, &n), H3G_ERR_TOOBIG);
  h3g_headers_free(&h);
}

int main(void) {
  RUN(test_add_find_clear);
  RUN(test_cap);
  RUN(test_growth_rebases);
  RUN(test_growth_bounded);
  RUN(test_append_last);
  RUN(test_trim_last);
  RUN(test_flags);
  RUN(test_validate_ok);
  RUN(test_validate_content_length);
  RUN(test_validate_pseudo);
  RUN(test_validate_authority);
  RUN(test_validate_fields);
  RUN(test_validate_null_out);
  RUN(test_trailers);
  RUN(test_filter);
  RUN(test_filter_caps);
  return unit_report();
}
