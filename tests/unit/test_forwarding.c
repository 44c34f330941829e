/*
 * forwarding.h: which of a client's request fields go upstream, and what
 * the gateway adds (Forwarded, X-Forwarded-*, Via, Early-Data, the route's
 * edits), for trusted and untrusted clients. Driven directly: a field
 * section, a configuration with trusted_proxies, route settings.
 */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "forwarding.h"
#include "http_headers.h"
#include "unit.h"

/* ---- fixtures ---------------------------------------------------------- */

static h3g_config cfg; /* only trusted[] is read */

/* Trusts 10.0.0.0/8 and ::1/128. */
static void trust_proxies(void) {
  memset(&cfg, 0, sizeof(cfg));
  cfg.trusted[0] = (h3g_cidr){.family = 4, .prefix = 8, .addr = {10}};
  cfg.trusted[1] = (h3g_cidr){.family = 6, .prefix = 128};
  cfg.trusted[1].addr[15] = 1;
  cfg.ntrusted = 2;
}

/* All three forwarding fields on, no edits. */
static h3g_route_settings all_on(void) {
  return (h3g_route_settings){
      .fwd_forwarded = 1, .fwd_x_forwarded = 1, .fwd_via = 1};
}

static void add(h3g_headers *h, const char *name, const char *value) {
  CHECK_EQ_INT(h3g_headers_add(h, (const uint8_t *)name, strlen(name),
                               (const uint8_t *)value, strlen(value)),
               0);
}

/* A request's section with its pseudo-header fields. */
static void request(h3g_headers *h) {
  h3g_headers_init(h, 65536);
  add(h, ":method", "GET");
  add(h, ":scheme", "https");
  add(h, ":authority", "example.com");
  add(h, ":path", "/");
}

static int build(h3g_forward *fw, const h3g_headers *h, const char *client,
                 const char *protocol, const h3g_route_settings *rs,
                 int early) {
  return h3g_forward_build(fw, &(h3g_forward_in){
                                   .fields = h,
                                   .host = h3g_headers_find(h, ":authority"),
                                   .client = client,
                                   .protocol = protocol,
                                   .cfg = &cfg,
                                   .rs = rs,
                                   .early_data = early,
                               });
}

/* How many of the passed (extra = 0) or added (extra = 1) fields are named
 * name; *value gets the last one's value, NUL-terminated. */
static int count(const h3g_forward *fw, int extra, const char *name,
                 char *value, size_t cap) {
  const h3g_field *list = extra ? fw->extra : fw->fields;
  size_t n = extra ? fw->nextra : fw->nfields;
  int c = 0;
  for (size_t i = 0; i < n; i++) {
    if (!h3g_field_name_eq(&list[i], name))
      continue;
    c++;
    if (value != NULL) {
      size_t l = list[i].valuelen < cap - 1 ? list[i].valuelen : cap - 1;
      memcpy(value, list[i].value, l);
      value[l] = '\0';
    }
  }
  return c;
}

/* Exactly one field named name among the added ones, with value want. */
static void check_added(const h3g_forward *fw, const char *name,
                        const char *want) {
  char v[8192] = "";
  CHECK_EQ_INT(count(fw, 1, name, v, sizeof(v)), 1);
  if (strcmp(v, want) != 0)
    fprintf(stderr, "  %s: \"%.120s\", expected \"%s\"\n", name, v, want);
  CHECK(strcmp(v, want) == 0);
}

/* Exactly one field named name passed on, with value want. */
static void check_passed(const h3g_forward *fw, const char *name,
                         const char *want) {
  char v[8192] = "";
  CHECK_EQ_INT(count(fw, 0, name, v, sizeof(v)), 1);
  if (strcmp(v, want) != 0)
    fprintf(stderr, "  %s: \"%.120s\", expected \"%s\"\n", name, v, want);
  CHECK(strcmp(v, want) == 0);
}

/* The forwarding fields a client may claim. */
static void spoofed_fields(h3g_headers *h) {
  add(h, "x-forwarded-for", "198.51.100.1");
  add(h, "forwarded", "for=198.51.100.1");
  add(h, "via", "1.1 edge");
  add(h, "x-forwarded-proto", "http");
  add(h, "x-forwarded-host", "claimed.example");
  add(h, "x-forwarded-port", "8443");
  add(h, "x-real-ip", "198.51.100.1");
}

/* ---- cases --------------------------------------------------------------- */

/* RFC 7239 §8.1: an untrusted client's forwarding fields are dropped, and
 * ours alone describe it. */
static void test_untrusted_client_fields_dropped(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  add(&h, "accept", "*/*");
  spoofed_fields(&h);
  h3g_route_settings rs = all_on();
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 0), 0);
  CHECK_EQ_INT(fw.nfields, 1);
  check_passed(&fw, "accept", "*/*");
  const char *gone[] = {
      "x-forwarded-for",  "forwarded",        "via",      "x-forwarded-proto",
      "x-forwarded-host", "x-forwarded-port", "x-real-ip"};
  for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
    CHECK_EQ_INT(count(&fw, 0, gone[i], NULL, 0), 0);
  check_added(&fw, "forwarded",
              "for=203.0.113.7;proto=https;host=\"example.com\"");
  check_added(&fw, "x-forwarded-for", "203.0.113.7");
  check_added(&fw, "x-forwarded-proto", "https");
  check_added(&fw, "x-forwarded-host", "example.com");
  check_added(&fw, "via", "3 h3gate");
  CHECK_EQ_INT(count(&fw, 1, "early-data", NULL, 0), 0);
  CHECK_EQ_INT(fw.nextra, 5);
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/* A trusted proxy's chain comes first, joined with our entry; its own
 * X-Forwarded-Proto/-Host stand, ours are not added. */
static void test_trusted_client_fields_joined(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  spoofed_fields(&h);
  add(&h, "x-forwarded-for", "192.0.2.9"); /* a second line joins too */
  add(&h, "Via", "2 other");               /* as an HTTP/1.1 client sends */
  h3g_route_settings rs = all_on();
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "10.1.2.3:4000", "h2", &rs, 0), 0);
  check_added(&fw, "x-forwarded-for", "198.51.100.1, 192.0.2.9, 10.1.2.3");
  check_added(&fw, "forwarded",
              "for=198.51.100.1, "
              "for=10.1.2.3;proto=https;host=\"example.com\"");
  check_added(&fw, "via", "1.1 edge, 2 other, 2 h3gate");
  /* The joined fields are not also passed as received. */
  CHECK_EQ_INT(count(&fw, 0, "x-forwarded-for", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "forwarded", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "via", NULL, 0), 0);
  check_passed(&fw, "x-forwarded-proto", "http");
  check_passed(&fw, "x-forwarded-host", "claimed.example");
  check_passed(&fw, "x-forwarded-port", "8443");
  check_passed(&fw, "x-real-ip", "198.51.100.1");
  CHECK_EQ_INT(count(&fw, 1, "x-forwarded-proto", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 1, "x-forwarded-host", NULL, 0), 0);
  h3g_forward_free(&fw);
  h3g_headers_free(&h);

  /* Trusted, but with no X-Forwarded-Proto/-Host of its own: ours. */
  request(&h);
  add(&h, "x-forwarded-for", "198.51.100.1");
  CHECK_EQ_INT(build(&fw, &h, "10.1.2.3:4000", "h3", &rs, 0), 0);
  check_added(&fw, "x-forwarded-for", "198.51.100.1, 10.1.2.3");
  check_added(&fw, "x-forwarded-proto", "https");
  check_added(&fw, "x-forwarded-host", "example.com");
  check_added(&fw, "forwarded",
              "for=10.1.2.3;proto=https;host=\"example.com\"");
  check_added(&fw, "via", "3 h3gate");
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/* RFC 7239 §6: an IPv6 node is quoted and bracketed in Forwarded; bare in
 * X-Forwarded-For. An IPv6 trusted proxy is matched by address. */
static void test_ipv6_client(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  add(&h, "x-forwarded-for", "198.51.100.1");
  h3g_route_settings rs = all_on();
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "[2001:db8::1]:443", "h3", &rs, 0), 0);
  check_added(&fw, "forwarded",
              "for=\"[2001:db8::1]\";proto=https;host=\"example.com\"");
  check_added(&fw, "x-forwarded-for", "2001:db8::1"); /* untrusted */
  h3g_forward_free(&fw);

  CHECK_EQ_INT(build(&fw, &h, "[::1]:50000", "h3", &rs, 0), 0);
  check_added(&fw, "x-forwarded-for", "198.51.100.1, ::1"); /* trusted */
  check_added(&fw, "forwarded",
              "for=\"[::1]\";proto=https;host=\"example.com\"");
  h3g_forward_free(&fw);
  h3g_headers_free(&h);

  /* Without an authority, Forwarded has no host and there is no
   * X-Forwarded-Host. */
  h3g_headers_init(&h, 65536);
  add(&h, ":method", "GET");
  add(&h, ":path", "/");
  CHECK_EQ_INT(build(&fw, &h, "192.0.2.1:1", "http/1.1", &rs, 0), 0);
  check_added(&fw, "forwarded", "for=192.0.2.1;proto=https");
  CHECK_EQ_INT(count(&fw, 1, "x-forwarded-host", NULL, 0), 0);
  check_added(&fw, "via", "1.1 h3gate");
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/* Each of forwarded, x_forwarded and via off: ours is not added, and an
 * untrusted client's copy is still dropped. */
static void test_forwarding_fields_off(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  spoofed_fields(&h);
  h3g_route_settings none = {0};
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &none, 0), 0);
  CHECK_EQ_INT(fw.nfields, 0);
  CHECK_EQ_INT(fw.nextra, 0);
  h3g_forward_free(&fw);

  const char *names[] = {"forwarded", "x-forwarded-for", "via"};
  for (int off = 0; off < 3; off++) {
    h3g_route_settings rs = all_on();
    uint32_t *flag[] = {&rs.fwd_forwarded, &rs.fwd_x_forwarded, &rs.fwd_via};
    *flag[off] = 0;
    CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 0), 0);
    for (int i = 0; i < 3; i++)
      CHECK_EQ_INT(count(&fw, 1, names[i], NULL, 0), i == off ? 0 : 1);
    CHECK_EQ_INT(count(&fw, 1, "x-forwarded-proto", NULL, 0), off == 1 ? 0 : 1);
    CHECK_EQ_INT(count(&fw, 1, "x-forwarded-host", NULL, 0), off == 1 ? 0 : 1);
    CHECK_EQ_INT(fw.nfields, 0);
    h3g_forward_free(&fw);
  }
  h3g_headers_free(&h);
}

/* A trusted proxy's chain is passed on as is when we add no entry of our
 * own to it ([forwarding]: "then they are kept"). */
static void test_trusted_chain_kept_when_off(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  add(&h, "x-forwarded-for", "198.51.100.1");
  add(&h, "forwarded", "for=198.51.100.1");
  add(&h, "via", "1.1 edge");
  h3g_route_settings none = {0};
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "10.1.2.3:4000", "h3", &none, 0), 0);
  check_passed(&fw, "x-forwarded-for", "198.51.100.1");
  check_passed(&fw, "forwarded", "for=198.51.100.1");
  check_passed(&fw, "via", "1.1 edge");
  CHECK_EQ_INT(fw.nextra, 0);
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/* Pseudo-header, hop-by-hop (RFC 9110 §7.6.1) and framing fields never
 * pass, whoever sends them; the rest pass in received order, repeated
 * fields and case as received. */
static void test_hop_by_hop_and_framing_never_passed(void) {
  trust_proxies();
  const char *clients[] = {"203.0.113.7:5555", "10.1.2.3:4000"};
  for (int c = 0; c < 2; c++) {
    h3g_headers h;
    request(&h);
    add(&h, "accept", "text/html");
    add(&h, "Connection", "close");
    add(&h, "keep-alive", "timeout=5");
    add(&h, "proxy-connection", "keep-alive");
    add(&h, "te", "trailers");
    add(&h, "transfer-encoding", "chunked");
    add(&h, "upgrade", "websocket");
    add(&h, "host", "example.com");
    add(&h, "Content-Length", "5");
    add(&h, "x-a", "1");
    add(&h, "X-A", "2");
    add(&h, "cookie", "a=b");
    h3g_route_settings rs = {0};
    h3g_forward fw;
    CHECK_EQ_INT(build(&fw, &h, clients[c], "h3", &rs, 0), 0);
    CHECK_EQ_INT(fw.nfields, 4);
    if (fw.nfields == 4) {
      CHECK_MEM(fw.fields[0].name, fw.fields[0].namelen, "accept");
      CHECK_MEM(fw.fields[1].name, fw.fields[1].namelen, "x-a");
      CHECK_MEM(fw.fields[1].value, fw.fields[1].valuelen, "1");
      CHECK_MEM(fw.fields[2].name, fw.fields[2].namelen, "X-A");
      CHECK_MEM(fw.fields[2].value, fw.fields[2].valuelen, "2");
      CHECK_MEM(fw.fields[3].name, fw.fields[3].namelen, "cookie");
    }
    CHECK_EQ_INT(fw.nextra, 0);
    h3g_forward_free(&fw);
    h3g_headers_free(&h);
  }
}

/* The route's remove_request_header (stored lowercase) removes whatever
 * the case the client used; add_request_header goes after ours, in the
 * route's order, and is counted in extra_size. */
static void test_route_edits(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  add(&h, "X-Debug", "1");
  add(&h, "x-debug", "2");
  add(&h, "accept", "*/*");
  add(&h, "X-Internal-Token", "secret");
  h3g_header_edit rm[] = {{.name = "x-debug"}, {.name = "x-internal-token"}};
  h3g_header_edit ad[] = {{.name = "x-env", .value = "prod"},
                          {.name = "x-route", .value = "api"}};
  h3g_route_settings rs = all_on();
  rs.remove_request = rm;
  rs.nremove_request = 2;
  rs.add_request = ad;
  rs.nadd_request = 2;
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 1), 0);
  CHECK_EQ_INT(fw.nfields, 1);
  check_passed(&fw, "accept", "*/*");
  CHECK_EQ_INT(count(&fw, 0, "x-debug", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "x-internal-token", NULL, 0), 0);
  /* forwarded, x-forwarded-for/-proto/-host, early-data, via, then the
   * route's two. */
  CHECK_EQ_INT(fw.nextra, 8);
  if (fw.nextra == 8) {
    CHECK_MEM(fw.extra[6].name, fw.extra[6].namelen, "x-env");
    CHECK_MEM(fw.extra[6].value, fw.extra[6].valuelen, "prod");
    CHECK_MEM(fw.extra[7].name, fw.extra[7].namelen, "x-route");
    CHECK_MEM(fw.extra[7].value, fw.extra[7].valuelen, "api");
  }
  /* extra_size covers the values we built (Forwarded, X-Forwarded-For,
   * Via) and the route's fields. */
  size_t need = 0;
  for (size_t i = 0; i < fw.nextra; i++) {
    const h3g_field *f = &fw.extra[i];
    if (i >= 6)
      need += f->namelen + f->valuelen;
    else if (h3g_field_name_eq(f, "forwarded") ||
             h3g_field_name_eq(f, "x-forwarded-for") ||
             h3g_field_name_eq(f, "via"))
      need += f->valuelen;
  }
  CHECK(fw.extra_size >= need);
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/* A route that removes a forwarding field removes a trusted proxy's copy
 * too: it is neither passed on nor joined into our entry, however long. */
static void test_route_removes_trusted_chain(void) {
  trust_proxies();
  static char longv[6000];
  memset(longv, '9', sizeof(longv) - 1);
  h3g_headers h;
  request(&h);
  add(&h, "x-forwarded-for", longv);
  add(&h, "Via", longv);
  add(&h, "forwarded", "for=198.51.100.1");
  h3g_header_edit rm[] = {{.name = "x-forwarded-for"}, {.name = "via"}};
  h3g_route_settings rs = all_on();
  rs.remove_request = rm;
  rs.nremove_request = 2;
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "10.1.2.3:4000", "h3", &rs, 0), 0);
  check_added(&fw, "x-forwarded-for", "10.1.2.3");
  check_added(&fw, "via", "3 h3gate");
  check_added(&fw, "forwarded",
              "for=198.51.100.1, "
              "for=10.1.2.3;proto=https;host=\"example.com\"");
  CHECK_EQ_INT(count(&fw, 0, "x-forwarded-for", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "via", NULL, 0), 0);
  h3g_forward_free(&fw);

  /* Ours off: the removed chain is not passed as is either. */
  h3g_route_settings off = {0};
  off.remove_request = rm;
  off.nremove_request = 2;
  CHECK_EQ_INT(build(&fw, &h, "10.1.2.3:4000", "h3", &off, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "x-forwarded-for", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "via", NULL, 0), 0);
  check_passed(&fw, "forwarded", "for=198.51.100.1");
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/* RFC 8470 §5.1: "Early-Data: 1" only when the caller asks for it. */
static void test_early_data_only_when_asked(void) {
  trust_proxies();
  h3g_headers h;
  request(&h);
  h3g_route_settings rs = {0};
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 0), 0);
  CHECK_EQ_INT(count(&fw, 1, "early-data", NULL, 0), 0);
  CHECK_EQ_INT(fw.nextra, 0);
  h3g_forward_free(&fw);
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 1), 0);
  check_added(&fw, "early-data", "1");
  CHECK_EQ_INT(fw.nextra, 1);
  h3g_forward_free(&fw);
  /* The client's own Early-Data is an ordinary field: passed as is. */
  add(&h, "early-data", "1");
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 0), 0);
  check_passed(&fw, "early-data", "1");
  CHECK_EQ_INT(fw.nextra, 0);
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
  /* A client's value other than "1": ours replaces it (early_data.h). */
  request(&h);
  add(&h, "early-data", "0");
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 1), 0);
  CHECK_EQ_INT(count(&fw, 0, "early-data", NULL, 0), 0);
  check_added(&fw, "early-data", "1");
  h3g_forward_free(&fw);
  h3g_headers_free(&h);
}

/*
 * RFC 6455 §4.1 behind extended CONNECT: with a key of ours, the client's
 * Sec-WebSocket-Key and -Version (whatever their case) are not passed on,
 * the handshake's own fields are added first (Connection: Upgrade,
 * Upgrade: websocket, version 13, our key), and the client's other
 * WebSocket fields (protocol, extensions) go as they are. Without a key,
 * the client's fields are ordinary ones.
 */
static void test_websocket_key(void) {
  static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
  trust_proxies();
  h3g_headers h;
  request(&h);
  add(&h, "sec-websocket-key", "Y2xpZW50J3Mgb3duIGtleQ==");
  add(&h, "Sec-WebSocket-Version", "13");
  add(&h, "sec-websocket-protocol", "chat, superchat");
  add(&h, "sec-websocket-extensions", "permessage-deflate");
  add(&h, "origin", "https://example.com");
  add(&h, "connection", "Upgrade");
  add(&h, "upgrade", "websocket");
  h3g_route_settings rs = all_on();
  h3g_forward plain, fw;
  CHECK_EQ_INT(build(&plain, &h, "203.0.113.7:5555", "h3", &rs, 0), 0);
  CHECK_EQ_INT(h3g_forward_build(&fw,
                                 &(h3g_forward_in){
                                     .fields = &h,
                                     .host = h3g_headers_find(&h, ":authority"),
                                     .client = "203.0.113.7:5555",
                                     .protocol = "h3",
                                     .cfg = &cfg,
                                     .rs = &rs,
                                     .websocket_key = key,
                                 }),
               0);
  /* Passed: the client's protocol, extensions and origin, nothing else. */
  CHECK_EQ_INT(fw.nfields, 3);
  check_passed(&fw, "sec-websocket-protocol", "chat, superchat");
  check_passed(&fw, "sec-websocket-extensions", "permessage-deflate");
  check_passed(&fw, "origin", "https://example.com");
  CHECK_EQ_INT(count(&fw, 0, "sec-websocket-key", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "sec-websocket-version", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "connection", NULL, 0), 0);
  CHECK_EQ_INT(count(&fw, 0, "upgrade", NULL, 0), 0);
  /* Added: the handshake's fields first, in this order, then the usual
   * forwarding fields (as without a key). */
  static const char *const hs[][2] = {{"connection", "Upgrade"},
                                      {"upgrade", "websocket"},
                                      {"sec-websocket-version", "13"},
                                      {"sec-websocket-key", key}};
  CHECK_EQ_INT(fw.nextra, plain.nextra + 4);
  size_t hs_bytes = 0;
  for (size_t i = 0; i < 4 && i < fw.nextra; i++) {
    CHECK_MEM(fw.extra[i].name, fw.extra[i].namelen, hs[i][0]);
    CHECK_MEM(fw.extra[i].value, fw.extra[i].valuelen, hs[i][1]);
    check_added(&fw, hs[i][0], hs[i][1]);
    hs_bytes += fw.extra[i].namelen + fw.extra[i].valuelen + 4; /* ": " CRLF */
  }
  for (size_t i = 0; i < plain.nextra && i + 4 < fw.nextra; i++) {
    CHECK(fw.extra[i + 4].namelen == plain.extra[i].namelen &&
          memcmp(fw.extra[i + 4].name, plain.extra[i].name,
                 plain.extra[i].namelen) == 0);
    CHECK(fw.extra[i + 4].valuelen == plain.extra[i].valuelen &&
          memcmp(fw.extra[i + 4].value, plain.extra[i].value,
                 plain.extra[i].valuelen) == 0);
  }
  /* The head's buffer is sized with extra_size: the handshake's fields are
   * counted in it whole. */
  CHECK(fw.extra_size >= plain.extra_size + hs_bytes);
  h3g_forward_free(&fw);

  /* Without a key (a plain request): the client's WebSocket fields are
   * ordinary end-to-end fields, and nothing is added for them. */
  CHECK_EQ_INT(plain.nfields, 5);
  check_passed(&plain, "sec-websocket-key", "Y2xpZW50J3Mgb3duIGtleQ==");
  check_passed(&plain, "sec-websocket-version", "13");
  CHECK_EQ_INT(count(&plain, 0, "connection", NULL, 0), 0);
  CHECK_EQ_INT(count(&plain, 0, "upgrade", NULL, 0), 0);
  CHECK_EQ_INT(count(&plain, 1, "connection", NULL, 0), 0);
  CHECK_EQ_INT(count(&plain, 1, "upgrade", NULL, 0), 0);
  CHECK_EQ_INT(count(&plain, 1, "sec-websocket-key", NULL, 0), 0);
  h3g_forward_free(&plain);
  h3g_headers_free(&h);
}

static void test_client_ip(void) {
  char ip[64];
  h3g_forward_client_ip("192.0.2.1:443", ip, sizeof(ip));
  CHECK(strcmp(ip, "192.0.2.1") == 0);
  h3g_forward_client_ip("[2001:db8::1]:443", ip, sizeof(ip));
  CHECK(strcmp(ip, "2001:db8::1") == 0);
  h3g_forward_client_ip("192.0.2.1", ip, sizeof(ip));
  CHECK(strcmp(ip, "192.0.2.1") == 0);
  char small[5];
  h3g_forward_client_ip("192.0.2.1:443", small, sizeof(small));
  CHECK(strcmp(small, "192.") == 0);
  h3g_forward_client_ip("[2001:db8::1]:443", small, sizeof(small));
  CHECK(strcmp(small, "2001") == 0);
}

static void test_free(void) {
  h3g_forward_free(NULL);
  h3g_headers h;
  request(&h);
  h3g_route_settings rs = all_on();
  h3g_forward fw;
  CHECK_EQ_INT(build(&fw, &h, "203.0.113.7:5555", "h3", &rs, 0), 0);
  h3g_forward_free(&fw);
  CHECK(fw.fields == NULL && fw.extra == NULL && fw.values == NULL);
  CHECK_EQ_INT(fw.nfields + fw.nextra, 0);
  h3g_forward_free(&fw); /* twice is harmless */
  h3g_headers_free(&h);
}

int main(void) {
  RUN(test_untrusted_client_fields_dropped);
  RUN(test_trusted_client_fields_joined);
  RUN(test_ipv6_client);
  RUN(test_forwarding_fields_off);
  RUN(test_trusted_chain_kept_when_off);
  RUN(test_hop_by_hop_and_framing_never_passed);
  RUN(test_route_edits);
  RUN(test_route_removes_trusted_chain);
  RUN(test_early_data_only_when_asked);
  RUN(test_websocket_key);
  RUN(test_client_ip);
  RUN(test_free);
  return unit_report();
}
