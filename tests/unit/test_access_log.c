/*
 * access_log.h: the three line formats, field by field, and their
 * escaping: kv (the default, as it always was plus the new fields), JSON
 * (every string escaped as RFC 8259 requires, non-UTF-8 bytes as \u00XX,
 * none and absent values as null), and combined (Apache/nginx, protocol
 * version in the request line, extensions after it). Lines are compared
 * whole, so a changed byte in any format fails here first.
 */
#include <stdio.h>
#include <string.h>

#include "access_log.h"
#include "unit.h"

static char buf[H3G_ACCESS_LINE_MAX];

/* 2026-11-21T08:00:00.123Z */
#define WALL 1795248000123456ull

static h3g_access_record full(void) {
  return (h3g_access_record){
      .start_wall_us = WALL,
      .duration_us = 6250,
      .client = "192.0.2.1:50000",
      .protocol = "h3",
      .method = "GET",
      .authority = "example.com",
      .path = "/index.html?q=1",
      .status = 200,
      .bytes_in = 42,
      .bytes_out = 4096,
      .upstream = "10.0.0.2:8080",
      .route = "api",
      .outcome = "ok",
      .connect_us = 1500,
      .first_byte_us = 3001,
      .cid = "0123456789abcdef0011",
      .early = 1,
      .referer = "https://example.com/",
      .user_agent = "probe/1.0",
  };
}

/* A record as the bridge makes it for a request the gateway answered
 * alone, over HTTP/2: no route, no upstream, no timings, no CID. */
static h3g_access_record alone(void) {
  return (h3g_access_record){
      .start_wall_us = WALL,
      .duration_us = 1,
      .client = "[2001:db8::1]:443",
      .protocol = "h2",
      .method = "BREW",
      .authority = "",
      .path = "",
      .status = 400,
      .upstream = "-",
      .route = "-",
      .outcome = "malformed",
      .connect_us = -1,
      .first_byte_us = -1,
      .referer = "",
      .user_agent = "",
  };
}

static const char *line(h3g_access_format fmt, const h3g_access_record *r) {
  size_t n = h3g_access_format_line(buf, sizeof(buf), fmt, r);
  CHECK_EQ_INT(n, strlen(buf));
  CHECK(n > 0 && buf[n - 1] == '\n');
  return buf;
}

#define CHECK_LINE(fmt, rec, want)                                             \
  do {                                                                         \
    const char *got_ = line((fmt), (rec));                                     \
    CHECK(strcmp(got_, want) == 0);                                            \
    if (strcmp(got_, want) != 0)                                               \
      fprintf(stderr, "  got:  %s  want: %s", got_, want);                     \
  } while (0)

/* kv: the older fields in their order, the newer ones between
 * duration_ms and route (lines still end "route= upstream= outcome=[
 * tunnel=]"). */
static void test_kv(void) {
  h3g_access_record r = full();
  CHECK_LINE(H3G_ACCESS_KV, &r,
             "2026-11-21T08:00:00.123Z client=192.0.2.1:50000 proto=h3 "
             "method=GET authority=example.com path=\"/index.html?q=1\" "
             "status=200 in=42 out=4096 duration_ms=6.250 connect_ms=1.500 "
             "first_byte_ms=3.001 cid=0123456789abcdef early=1 "
             "referer=\"https://example.com/\" user_agent=\"probe/1.0\" "
             "route=api upstream=10.0.0.2:8080 outcome=ok\n");
  r.tunnel = "websocket";
  r.connect_us = 0;
  r.early = 0;
  r.cid = NULL;
  CHECK_LINE(H3G_ACCESS_KV, &r,
             "2026-11-21T08:00:00.123Z client=192.0.2.1:50000 proto=h3 "
             "method=GET authority=example.com path=\"/index.html?q=1\" "
             "status=200 in=42 out=4096 duration_ms=6.250 connect_ms=0.000 "
             "first_byte_ms=3.001 cid=- early=0 "
             "referer=\"https://example.com/\" user_agent=\"probe/1.0\" "
             "route=api upstream=10.0.0.2:8080 outcome=ok tunnel=websocket\n");
  r = alone();
  CHECK_LINE(H3G_ACCESS_KV, &r,
             "2026-11-21T08:00:00.123Z client=[2001:db8::1]:443 proto=h2 "
             "method=BREW authority=- path=\"-\" status=400 in=0 out=0 "
             "duration_ms=0.001 connect_ms=- first_byte_ms=- cid=- early=0 "
             "referer=- user_agent=- route=- upstream=- outcome=malformed\n");
}

/* kv keeps every line parseable: quoted values escape '"' and '\', bare
 * ones spaces and quotes too, control bytes everywhere. */
static void test_kv_escaping(void) {
  h3g_access_record r = alone();
  r.path = "/a\"b\\c\x01";
  r.authority = "evil host\"x";
  r.user_agent = "Mozilla/5.0 (X11; \"q\")\x7f";
  r.referer = "\xc3\xa9t\xc3\xa9"; /* UTF-8 passes as it is */
  CHECK_LINE(H3G_ACCESS_KV, &r,
             "2026-11-21T08:00:00.123Z client=[2001:db8::1]:443 proto=h2 "
             "method=BREW authority=evil\\x20host\\x22x "
             "path=\"/a\\\"b\\\\c\\x01\" status=400 in=0 out=0 "
             "duration_ms=0.001 connect_ms=- first_byte_ms=- cid=- early=0 "
             "referer=\"\xc3\xa9t\xc3\xa9\" "
             "user_agent=\"Mozilla/5.0 (X11; \\\"q\\\")\\x7f\" "
             "route=- upstream=- outcome=malformed\n");
}

/* json: the same fields in the same order, "time" first. */
static void test_json(void) {
  h3g_access_record r = full();
  CHECK_LINE(H3G_ACCESS_JSON, &r,
             "{\"time\":\"2026-11-21T08:00:00.123Z\","
             "\"client\":\"192.0.2.1:50000\",\"proto\":\"h3\","
             "\"method\":\"GET\",\"authority\":\"example.com\","
             "\"path\":\"/index.html?q=1\",\"status\":200,\"in\":42,"
             "\"out\":4096,\"duration_ms\":6.250,"
             "\"connect_ms\":1.500,\"first_byte_ms\":3.001,"
             "\"cid\":\"0123456789abcdef\",\"early\":true,"
             "\"referer\":\"https://example.com/\","
             "\"user_agent\":\"probe/1.0\",\"route\":\"api\","
             "\"upstream\":\"10.0.0.2:8080\",\"outcome\":\"ok\","
             "\"tunnel\":null}\n");
  r = alone();
  r.tunnel = "websocket";
  CHECK_LINE(H3G_ACCESS_JSON, &r,
             "{\"time\":\"2026-11-21T08:00:00.123Z\","
             "\"client\":\"[2001:db8::1]:443\",\"proto\":\"h2\","
             "\"method\":\"BREW\",\"authority\":null,\"path\":null,"
             "\"status\":400,\"in\":0,\"out\":0,\"duration_ms\":0.001,"
             "\"connect_ms\":null,\"first_byte_ms\":null,\"cid\":null,"
             "\"early\":false,\"referer\":null,\"user_agent\":null,"
             "\"route\":null,\"upstream\":null,"
             "\"outcome\":\"malformed\",\"tunnel\":\"websocket\"}\n");
}

/* JSON string escaping: the two characters that must be, the control
 * characters with their short forms or \u00XX, well-formed UTF-8 as it
 * is (2, 3 and 4 bytes), and every malformed byte as \u00XX: a stray
 * continuation byte, a lead byte without its continuation, an overlong
 * form, a surrogate, a code point above U+10FFFF, a sequence cut by the
 * string's end. */
static void test_json_escaping(void) {
  h3g_access_record r = alone();
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"a\"b\\c/d", "\"a\\\"b\\\\c/d\""},
      {"\n\r\t\b\f\x01\x1f\x7f", "\"\\n\\r\\t\\u0008\\u000c\\u0001\\u001f"
                                 "\\u007f\""},
      {"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
       "\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
      {"\x80x", "\"\\u0080x\""},
      {"\xc3x", "\"\\u00c3x\""},
      {"\xc0\xaf", "\"\\u00c0\\u00af\""},
      {"\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\""},
      {"\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\""},
      {"\xe2\x82", "\"\\u00e2\\u0082\""},
      {"\xff", "\"\\u00ff\""},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    r.user_agent = cases[i].in;
    const char *got = line(H3G_ACCESS_JSON, &r);
    const char *key = strstr(got, "\"user_agent\":");
    CHECK(key != NULL);
    if (key == NULL)
      continue;
    key += strlen("\"user_agent\":");
    size_t n = strlen(cases[i].out);
    CHECK(strncmp(key, cases[i].out, n) == 0 && key[n] == ',');
    if (strncmp(key, cases[i].out, n) != 0)
      fprintf(stderr, "  case %zu: got %.*s\n", i, (int)n + 8, key);
  }
}

/* combined: "host - - [time] "request" status bytes "referer" "agent"",
 * the version of each protocol in the request line, then the gateway's
 * fields. */
static void test_combined(void) {
  h3g_access_record r = full();
  CHECK_LINE(H3G_ACCESS_COMBINED, &r,
             "192.0.2.1 - - [21/Nov/2026:08:00:00 +0000] "
             "\"GET /index.html?q=1 HTTP/3\" 200 4096 "
             "\"https://example.com/\" \"probe/1.0\" authority=example.com "
             "route=api upstream=10.0.0.2:8080 connect_ms=1.500 "
             "first_byte_ms=3.001 duration_ms=6.250 in=42 "
             "cid=0123456789abcdef early=1 outcome=ok\n");
  r.protocol = "h2";
  line(H3G_ACCESS_COMBINED, &r);
  CHECK(strstr(buf, "\"GET /index.html?q=1 HTTP/2.0\" 200") != NULL);
  r.protocol = "http/1.1";
  r.client = "2001:db8::7:55012"; /* the TCP listener's IPv6 form */
  line(H3G_ACCESS_COMBINED, &r);
  CHECK(strncmp(buf, "2001:db8::7 - - [", 17) == 0);
  CHECK(strstr(buf, "\"GET /index.html?q=1 HTTP/1.1\" 200") != NULL);

  r = alone();
  r.tunnel = "websocket";
  r.user_agent = "say \"hi\"\x01";
  CHECK_LINE(H3G_ACCESS_COMBINED, &r,
             "2001:db8::1 - - [21/Nov/2026:08:00:00 +0000] "
             "\"BREW - HTTP/2.0\" 400 0 \"-\" \"say \\\"hi\\\"\\x01\" "
             "authority=- route=- upstream=- connect_ms=- first_byte_ms=- "
             "duration_ms=0.001 in=0 cid=- early=0 outcome=malformed "
             "tunnel=websocket\n");
}

/* The time of each line is its own, whichever second the line before was
 * in (the formatter keeps the last second it wrote). */
static void test_time_of_each_line(void) {
  h3g_access_record r = full();
  static const struct {
    uint64_t wall_us;
    const char *iso, *clf;
  } t[] = {
      {WALL, "2026-11-21T08:00:00.123Z", "[21/Nov/2026:08:00:00 +0000]"},
      {WALL + 999000, "2026-11-21T08:00:01.122Z",
       "[21/Nov/2026:08:00:01 +0000]"},
      {WALL - 123456, "2026-11-21T08:00:00.000Z",
       "[21/Nov/2026:08:00:00 +0000]"},
      {1704067199999999ull, "2023-12-31T23:59:59.999Z",
       "[31/Dec/2023:23:59:59 +0000]"},
      {1709251200000000ull, "2024-03-01T00:00:00.000Z",
       "[01/Mar/2024:00:00:00 +0000]"},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    r.start_wall_us = t[i].wall_us;
    CHECK(strncmp(line(H3G_ACCESS_KV, &r), t[i].iso, strlen(t[i].iso)) == 0);
    line(H3G_ACCESS_JSON, &r);
    CHECK(strncmp(buf + 9, t[i].iso, strlen(t[i].iso)) == 0);
    line(H3G_ACCESS_COMBINED, &r);
    CHECK(strstr(buf, t[i].clf) != NULL);
  }
}

/* A line that does not fit is cut, still one line; a record at the
 * bridge's caps, every byte escaped six-fold in JSON, fits the maximum. */
static void test_cut_and_worst_case(void) {
  h3g_access_record r = full();
  char small[64];
  size_t n = h3g_access_format_line(small, sizeof(small), H3G_ACCESS_JSON, &r);
  CHECK_EQ_INT(n, sizeof(small) - 1);
  CHECK(small[n - 1] == '\n' && small[n] == '\0');
  CHECK(memchr(small, '\n', n - 1) == NULL);

  static char method[32], authority[256], path[1024], ref[512], ua[512],
      up[301], route[65];
  memset(method, 1, sizeof(method) - 1);
  memset(authority, 1, sizeof(authority) - 1);
  memset(path, 1, sizeof(path) - 1);
  memset(ref, 1, sizeof(ref) - 1);
  memset(ua, 1, sizeof(ua) - 1);
  memset(up, 1, sizeof(up) - 1);
  memset(route, 1, sizeof(route) - 1);
  r.method = method;
  r.authority = authority;
  r.path = path;
  r.referer = ref;
  r.user_agent = ua;
  r.upstream = up;
  r.route = route;
  r.outcome = route;
  r.client = route;
  r.tunnel = route;
  for (int f = 0; f < 3; f++) {
    n = h3g_access_format_line(buf, sizeof(buf), (h3g_access_format)f, &r);
    CHECK(n < sizeof(buf) - 2); /* not cut */
    CHECK(buf[n - 1] == '\n');
    CHECK(f != H3G_ACCESS_JSON || buf[n - 2] == '}');
  }
}

int main(void) {
  RUN(test_kv);
  RUN(test_kv_escaping);
  RUN(test_json);
  RUN(test_json_escaping);
  RUN(test_combined);
  RUN(test_time_of_each_line);
  RUN(test_cut_and_worst_case);
  return unit_report();
}
