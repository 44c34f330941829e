/*
 * The access log's line formats (access_log.h).
 *
 * Each line is assembled in the caller's buffer and handed to stdio once,
 * so a request costs one fwrite into the log's buffer. The buffer keeps
 * two bytes for the '\n' and the NUL whatever was cut before them.
 *
 * A line is on the path of every request, so it is built without printf:
 * numbers are written digit by digit, strings are copied in runs of bytes
 * that need no escaping, and the date and time down to the second are
 * formatted once a second (the last one kept per form: lines of one
 * second share it).
 */
#include "access_log.h"

#include <string.h>
#include <time.h>

#include "common.h"

typedef struct line {
  char *buf;
  size_t room; /* text bytes allowed: cap - 2 ('\n' and NUL kept) */
  size_t len;
} line;

static void put(line *l, const char *s, size_t n) {
  size_t left = l->room - l->len;
  if (n > left)
    n = left;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void put_str(line *l, const char *s) {
  put(l, s, strlen(s));
}

static void put_char(line *l, char c) {
  if (l->len < l->room)
    l->buf[l->len++] = c;
}

static void put_u64(line *l, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  put(l, tmp + sizeof(tmp) - n, n);
}

/* A status: 0 or a three-digit number, but any int prints right. */
static void put_int(line *l, int v) {
  if (v < 0) {
    put_char(l, '-');
    put_u64(l, (uint64_t)0 - (uint64_t)(int64_t)v);
  } else {
    put_u64(l, (uint64_t)v);
  }
}

/* v as exactly width digits (v < 10^width). */
static void put_digits(line *l, unsigned v, unsigned width) {
  char tmp[8];
  for (unsigned i = width; i-- > 0; v /= 10)
    tmp[i] = (char)('0' + v % 10);
  put(l, tmp, width);
}

static const char hex[] = "0123456789abcdef";

static void put_hex_escape(line *l, const char *prefix, unsigned char c) {
  put_str(l, prefix);
  put_char(l, hex[c >> 4]);
  put_char(l, hex[c & 15]);
}

static int is_none(const char *s) {
  return s == NULL || s[0] == '\0' || (s[0] == '-' && s[1] == '\0');
}

/* ---- escaping ------------------------------------------------------------ */

/* Inside a quoted kv or combined value: '"' and '\' escaped by a
 * backslash, control bytes as \xHH (nginx's escaping), other bytes as
 * they are. */
static int quoted_special(unsigned char c) {
  return c < 0x20 || c == '"' || c == '\\' || c == 0x7f;
}

static void put_quoted_body(line *l, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  for (;;) {
    const unsigned char *run = p;
    while (*p != '\0' && !quoted_special(*p))
      p++;
    put(l, (const char *)run, (size_t)(p - run));
    if (*p == '\0')
      return;
    if (*p == '"' || *p == '\\') {
      put_char(l, '\\');
      put_char(l, (char)*p);
    } else {
      put_hex_escape(l, "\\x", *p);
    }
    p++;
  }
}

/* A quoted kv value, or a bare "-" when there is none. */
static void put_kv_quoted(line *l, const char *s) {
  if (is_none(s)) {
    put_char(l, '-');
    return;
  }
  put_char(l, '"');
  put_quoted_body(l, s);
  put_char(l, '"');
}

/* An unquoted kv value: a space, '"', '\' or control byte would end or
 * confuse it, so those become \xHH. */
static void put_kv_bare(line *l, const char *s) {
  if (is_none(s)) {
    put_char(l, '-');
    return;
  }
  const unsigned char *p = (const unsigned char *)s;
  for (;;) {
    const unsigned char *run = p;
    while (*p != '\0' && *p != ' ' && !quoted_special(*p))
      p++;
    put(l, (const char *)run, (size_t)(p - run));
    if (*p == '\0')
      return;
    put_hex_escape(l, "\\x", *p++);
  }
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p) {
  unsigned char c = p[0];
  if (c >= 0xc2 && c <= 0xdf)
    return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 &&
                   (p[3] & 0xc0) == 0x80
               ? 4
               : 0;
  }
  return 0;
}

/* A JSON string (RFC 8259 §7), or null when there is none. The NUL ends
 * the string, so reading p[1..3] of a short sequence stops at it (a NUL
 * is no continuation byte). */
static void put_json_string(line *l, const char *s) {
  if (is_none(s)) {
    put_str(l, "null");
    return;
  }
  put_char(l, '"');
  const unsigned char *p = (const unsigned char *)s;
  for (;;) {
    const unsigned char *run = p;
    while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
      p++;
    put(l, (const char *)run, (size_t)(p - run));
    unsigned char c = *p;
    if (c == '\0')
      break;
    if (c >= 0x80) {
      size_t n = utf8_len(p);
      if (n > 0) {
        put(l, (const char *)p, n);
        p += n;
      } else {
        put_hex_escape(l, "\\u00", c);
        p++;
      }
      continue;
    }
    switch (c) {
    case '"': put_str(l, "\\\""); break;
    case '\\': put_str(l, "\\\\"); break;
    case '\n': put_str(l, "\\n"); break;
    case '\r': put_str(l, "\\r"); break;
    case '\t': put_str(l, "\\t"); break;
    default: put_hex_escape(l, "\\u00", c); break;
    }
    p++;
  }
  put_char(l, '"');
}

/* ---- values -------------------------------------------------------------- */

/* Microseconds as milliseconds with three decimals; "-" (null in JSON)
 * when negative (none). */
static void put_ms(line *l, int64_t us, int json) {
  if (us < 0) {
    put_str(l, json ? "null" : "-");
    return;
  }
  put_u64(l, (uint64_t)us / 1000);
  put_char(l, '.');
  put_digits(l, (unsigned)((uint64_t)us % 1000), 3);
}

/* The last second formatted in one form. */
typedef struct second_text {
  int64_t secs; /* -1: none yet */
  size_t len;
  char text[32];
} second_text;

static second_text *second_of(second_text *cache, uint64_t wall_us,
                              struct tm *tm) {
  int64_t secs = (int64_t)(wall_us / 1000000u);
  if (cache->secs == secs)
    return NULL;
  time_t t = (time_t)secs;
  gmtime_r(&t, tm);
  cache->secs = secs;
  return cache;
}

/* "2026-11-21T08:00:00.123Z" */
static void put_time_iso(line *l, uint64_t wall_us) {
  static second_text cache = {.secs = -1};
  struct tm tm;
  second_text *c = second_of(&cache, wall_us, &tm);
  if (c != NULL) {
    line t = {.buf = c->text, .room = sizeof(c->text)};
    put_digits(&t, (unsigned)(tm.tm_year + 1900) % 10000, 4);
    put_char(&t, '-');
    put_digits(&t, (unsigned)tm.tm_mon + 1, 2);
    put_char(&t, '-');
    put_digits(&t, (unsigned)tm.tm_mday, 2);
    put_char(&t, 'T');
    put_digits(&t, (unsigned)tm.tm_hour, 2);
    put_char(&t, ':');
    put_digits(&t, (unsigned)tm.tm_min, 2);
    put_char(&t, ':');
    put_digits(&t, (unsigned)tm.tm_sec, 2);
    c->len = t.len;
  }
  put(l, cache.text, cache.len);
  put_char(l, '.');
  put_digits(l, (unsigned)(wall_us / 1000u % 1000u), 3);
  put_char(l, 'Z');
}

/* Common Log Format's "[10/Oct/2000:13:55:36 +0000]", in UTC, with the
 * month's English name whatever the locale. */
static void put_time_clf(line *l, uint64_t wall_us) {
  static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr",
                                         "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"};
  static second_text cache = {.secs = -1};
  struct tm tm;
  second_text *c = second_of(&cache, wall_us, &tm);
  if (c != NULL) {
    line t = {.buf = c->text, .room = sizeof(c->text)};
    put_char(&t, '[');
    put_digits(&t, (unsigned)tm.tm_mday, 2);
    put_char(&t, '/');
    put_str(&t, months[tm.tm_mon % 12]);
    put_char(&t, '/');
    put_digits(&t, (unsigned)(tm.tm_year + 1900) % 10000, 4);
    put_char(&t, ':');
    put_digits(&t, (unsigned)tm.tm_hour, 2);
    put_char(&t, ':');
    put_digits(&t, (unsigned)tm.tm_min, 2);
    put_char(&t, ':');
    put_digits(&t, (unsigned)tm.tm_sec, 2);
    put_str(&t, " +0000]");
    c->len = t.len;
  }
  put(l, cache.text, cache.len);
}

/* The request line's protocol version. */
static const char *http_version(const char *protocol) {
  if (protocol == NULL)
    return "-";
  if (strcmp(protocol, "h3") == 0)
    return "HTTP/3";
  if (strcmp(protocol, "h2") == 0)
    return "HTTP/2.0";
  if (strcmp(protocol, "http/1.1") == 0)
    return "HTTP/1.1";
  return "-";
}

/* The client's address without its port: "ip:port", "[ip6]:port" or
 * "ip6:port" (the TCP listener's form) give "ip" or "ip6". */
static void put_client_host(line *l, const char *client) {
  if (is_none(client)) {
    put_char(l, '-');
    return;
  }
  const char *colon = strrchr(client, ':');
  size_t n = colon != NULL ? (size_t)(colon - client) : strlen(client);
  if (n >= 2 && client[0] == '[' && client[n - 1] == ']') {
    client++;
    n -= 2;
  }
  for (size_t i = 0; i < n; i++)
    put_char(l, client[i] == ' ' ? '?' : client[i]);
}

/* The CID as shown: at most H3G_ACCESS_CID_LEN hex digits. */
static void put_cid(line *l, const char *cid, int json) {
  if (is_none(cid)) {
    put_str(l, json ? "null" : "-");
    return;
  }
  size_t n = strlen(cid);
  if (n > H3G_ACCESS_CID_LEN)
    n = H3G_ACCESS_CID_LEN;
  if (json)
    put_char(l, '"');
  for (size_t i = 0; i < n; i++)
    put_char(l, strchr(hex, cid[i]) != NULL ? cid[i] : '?');
  if (json)
    put_char(l, '"');
}

/* ---- the formats --------------------------------------------------------- */

/* The gateway's fields shared by kv and combined's extensions:
 * "route=... upstream=... connect_ms=... first_byte_ms=...". */
static void put_kv_upstream(line *l, const h3g_access_record *r) {
  put_str(l, " route=");
  put_kv_bare(l, r->route);
  put_str(l, " upstream=");
  put_kv_bare(l, r->upstream);
}

static void put_kv_timings(line *l, const h3g_access_record *r) {
  put_str(l, " connect_ms=");
  put_ms(l, r->connect_us, 0);
  put_str(l, " first_byte_ms=");
  put_ms(l, r->first_byte_us, 0);
}

static void put_kv_conn(line *l, const h3g_access_record *r) {
  put_str(l, " cid=");
  put_cid(l, r->cid, 0);
  put_str(l, r->early ? " early=1" : " early=0");
}

static void put_kv_tunnel(line *l, const h3g_access_record *r) {
  if (r->tunnel != NULL) {
    put_str(l, " tunnel=");
    put_kv_bare(l, r->tunnel);
  }
}

static void format_kv(line *l, const h3g_access_record *r) {
  put_time_iso(l, r->start_wall_us);
  put_str(l, " client=");
  put_kv_bare(l, r->client);
  put_str(l, " proto=");
  put_kv_bare(l, r->protocol);
  put_str(l, " method=");
  put_kv_bare(l, r->method);
  put_str(l, " authority=");
  put_kv_bare(l, r->authority);
  /* The path is always quoted, even when empty ("-" inside). */
  put_str(l, " path=\"");
  put_quoted_body(l, is_none(r->path) ? "-" : r->path);
  put_str(l, "\" status=");
  put_int(l, r->status);
  put_str(l, " in=");
  put_u64(l, r->bytes_in);
  put_str(l, " out=");
  put_u64(l, r->bytes_out);
  put_str(l, " duration_ms=");
  put_ms(l, (int64_t)r->duration_us, 0);
  /* The newer fields sit between the older ones' two runs, which keep
   * their order: up to duration_ms, and "route=... upstream=...
   * outcome=...[ tunnel=...]" to the end, as lines always had them. */
  put_kv_timings(l, r);
  put_kv_conn(l, r);
  put_str(l, " referer=");
  put_kv_quoted(l, r->referer);
  put_str(l, " user_agent=");
  put_kv_quoted(l, r->user_agent);
  put_kv_upstream(l, r);
  put_str(l, " outcome=");
  put_kv_bare(l, r->outcome);
  put_kv_tunnel(l, r);
}

static void json_key(line *l, const char *key) {
  put_str(l, ",\"");
  put_str(l, key);
  put_str(l, "\":");
}

static void format_json(line *l, const h3g_access_record *r) {
  put_str(l, "{\"time\":\"");
  put_time_iso(l, r->start_wall_us);
  put_char(l, '"');
  json_key(l, "client");
  put_json_string(l, r->client);
  json_key(l, "proto");
  put_json_string(l, r->protocol);
  json_key(l, "method");
  put_json_string(l, r->method);
  json_key(l, "authority");
  put_json_string(l, r->authority);
  json_key(l, "path");
  put_json_string(l, r->path);
  json_key(l, "status");
  put_int(l, r->status);
  json_key(l, "in");
  put_u64(l, r->bytes_in);
  json_key(l, "out");
  put_u64(l, r->bytes_out);
  json_key(l, "duration_ms");
  put_ms(l, (int64_t)r->duration_us, 1);
  json_key(l, "connect_ms");
  put_ms(l, r->connect_us, 1);
  json_key(l, "first_byte_ms");
  put_ms(l, r->first_byte_us, 1);
  json_key(l, "cid");
  put_cid(l, r->cid, 1);
  json_key(l, "early");
  put_str(l, r->early ? "true" : "false");
  json_key(l, "referer");
  put_json_string(l, r->referer);
  json_key(l, "user_agent");
  put_json_string(l, r->user_agent);
  json_key(l, "route");
  put_json_string(l, r->route);
  json_key(l, "upstream");
  put_json_string(l, r->upstream);
  json_key(l, "outcome");
  put_json_string(l, r->outcome);
  json_key(l, "tunnel");
  put_json_string(l, r->tunnel);
  put_char(l, '}');
}

/* Apache's and nginx's "combined":
 *   host - - [time] "request line" status bytes "referer" "user-agent"
 * then the gateway's fields as key=value pairs, as nginx log_format
 * extensions usually add them. */
static void format_combined(line *l, const h3g_access_record *r) {
  put_client_host(l, r->client);
  put_str(l, " - - ");
  put_time_clf(l, r->start_wall_us);
  put_str(l, " \"");
  put_quoted_body(l, is_none(r->method) ? "-" : r->method);
  put_char(l, ' ');
  put_quoted_body(l, is_none(r->path) ? "-" : r->path);
  put_char(l, ' ');
  put_str(l, http_version(r->protocol));
  put_str(l, "\" ");
  put_int(l, r->status);
  put_char(l, ' ');
  put_u64(l, r->bytes_out);
  put_str(l, " \"");
  put_quoted_body(l, is_none(r->referer) ? "-" : r->referer);
  put_str(l, "\" \"");
  put_quoted_body(l, is_none(r->user_agent) ? "-" : r->user_agent);
  put_str(l, "\" authority=");
  put_kv_bare(l, r->authority);
  put_kv_upstream(l, r);
  put_kv_timings(l, r);
  put_str(l, " duration_ms=");
  put_ms(l, (int64_t)r->duration_us, 0);
  put_str(l, " in=");
  put_u64(l, r->bytes_in);
  put_kv_conn(l, r);
  put_str(l, " outcome=");
  put_kv_bare(l, r->outcome);
  put_kv_tunnel(l, r);
}

size_t h3g_access_format_line(char *buf, size_t cap, h3g_access_format fmt,
                              const h3g_access_record *rec) {
  line l = {.buf = buf, .room = cap - 2};
  switch (fmt) {
  case H3G_ACCESS_JSON: format_json(&l, rec); break;
  case H3G_ACCESS_COMBINED: format_combined(&l, rec); break;
  case H3G_ACCESS_KV:
  default: format_kv(&l, rec); break;
  }
  l.buf[l.len++] = '\n';
  l.buf[l.len] = '\0';
  return l.len;
}
