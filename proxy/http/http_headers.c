/*
 * Field storage and header rules.
 *
 * Storage: one arena for the bytes and one array of h3g_field. Both start
 * small and double, but are never grown past what max_section_size allows:
 * every field costs at least 32 in the RFC 9114 §4.2.2 count, so at most
 * max_section_size / 32 fields fit, and the bytes of names and values never
 * exceed max_section_size. Requests are usually a few hundred bytes while
 * the cap is tens of KiB; allocating the cap up front would waste most of
 * it on every stream.
 */
#include "http_headers.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_MIN 256
#define FIELDS_MIN 16
#define FIELD_OVERHEAD 32 /* RFC 9114 §4.2.2 */

/* ---- character classes ------------------------------------------------- */

/*
 * Character classes as bits of one table, so that each check is one load
 * per byte. The numbers in the table are sums of these bits.
 *   TCHAR  RFC 9110 §5.6.2 token characters (field names, methods).
 *   FVCHAR RFC 9110 §5.5 field-vchar: VCHAR and obs-text.
 *   PATH   what may appear in an origin-form :path written into the HTTP/1.1
 *          request line: VCHAR except "#" (RFC 9112 §3.2.1 has no fragment).
 *   AUTH   RFC 3986 §3.2 authority without userinfo: unreserved, pct-encoded
 *          ("%" and hex digits), sub-delims, ":" and the IP-literal "[" "]".
 */
enum {
  C_TCHAR = 1u << 0,
  C_FVCHAR = 1u << 1,
  C_PATH = 1u << 2,
  C_AUTH = 1u << 3,
};

/* Generated from the definitions above; one row per 16 byte values. */
/* clang-format off */
static const uint8_t cclass[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 10 */
     0, 15,  6,  3, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15,  6, /* 20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14,  6, 14,  6,  6, /* 30 */
     6, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14,  6, 14,  7, 15, /* 50 */
     7, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6,  7,  6, 15,  0, /* 70 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 80 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 90 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* a0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* b0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* c0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* d0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* e0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* f0 */
};
/* clang-format on */

static int all_in(const uint8_t *s, size_t n, uint8_t cls) {
  for (size_t i = 0; i < n; i++)
    if (!(cclass[s[i]] & cls))
      return 0;
  return 1;
}

static inline uint8_t lower(uint8_t c) {
  return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

static int eq_ci(const uint8_t *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++)
    if (lower(a[i]) != lower((uint8_t)b[i]))
      return 0;
  return 1;
}

static int eq_ci2(const uint8_t *a, size_t alen, const uint8_t *b,
                  size_t blen) {
  return eq_ci(a, alen, (const char *)b, blen);
}

static inline int is_ows(uint8_t c) {
  return c == ' ' || c == '\t';
}

/* ---- well-known names --------------------------------------------------- */

/*
 * The header rules as data (h2o's token table in miniature). Hop-by-hop is
 * exactly what RFC 9110 §7.6.1 lists: Connection itself, and Proxy-
 * Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade, which
 * intermediaries remove whether or not Connection names them. RFC 2616's
 * list also had Trailer, Proxy-Authenticate and Proxy-Authorization; RFC
 * 9110 dropped them (Trailer describes the message's trailer section end to
 * end, and the proxy-auth fields are consumed or forwarded by policy, not by
 * framing), so they are forwarded like any other field.
 */
enum token {
  TOK_CONNECTION,
  TOK_KEEP_ALIVE,
  TOK_PROXY_CONNECTION,
  TOK_TE,
  TOK_TRANSFER_ENCODING,
  TOK_UPGRADE,
  TOK_HOST,
  TOK_CONTENT_LENGTH,
  TOK_COOKIE,
  TOK_FORWARDED,
  TOK_VIA,
  TOK_X_FORWARDED_FOR,
  TOK_X_FORWARDED_HOST,
  TOK_X_FORWARDED_PORT,
  TOK_X_FORWARDED_PROTO,
  TOK_X_REAL_IP,
  TOK_COUNT,
  TOK_NONE = TOK_COUNT
};

#define HBH H3G_FIELD_HOP_BY_HOP
#define CONN H3G_FIELD_CONN_SPECIFIC
#define FWD H3G_FIELD_FORWARDING
#define FRAME H3G_FIELD_FRAMING

static const struct {
  const char *name;
  uint8_t len;
  uint8_t flags;
} tokens[TOK_COUNT] = {
#define T(id, s, f) [id] = {s, sizeof(s) - 1, f}
    T(TOK_CONNECTION, "connection", HBH | CONN),
    T(TOK_KEEP_ALIVE, "keep-alive", HBH | CONN),
    T(TOK_PROXY_CONNECTION, "proxy-connection", HBH | CONN),
    /* TE is hop-by-hop, but HTTP/3 allows "te: trailers" (RFC 9114 §4.2). */
    T(TOK_TE, "te", HBH),
    T(TOK_TRANSFER_ENCODING, "transfer-encoding", HBH | CONN | FRAME),
    T(TOK_UPGRADE, "upgrade", HBH | CONN),
    T(TOK_HOST, "host", FRAME),
    T(TOK_CONTENT_LENGTH, "content-length", FRAME),
    T(TOK_COOKIE, "cookie", H3G_FIELD_COOKIE),
    T(TOK_FORWARDED, "forwarded", FWD),
    T(TOK_VIA, "via", FWD),
    T(TOK_X_FORWARDED_FOR, "x-forwarded-for", FWD),
    T(TOK_X_FORWARDED_HOST, "x-forwarded-host", FWD),
    T(TOK_X_FORWARDED_PORT, "x-forwarded-port", FWD),
    T(TOK_X_FORWARDED_PROTO, "x-forwarded-proto", FWD),
    T(TOK_X_REAL_IP, "x-real-ip", FWD),
#undef T
};

#undef HBH
#undef CONN
#undef FWD
#undef FRAME

/* Sixteen short names: comparing the length first rejects nearly all. */
static enum token lookup(const uint8_t *name, size_t len) {
  for (unsigned i = 0; i < TOK_COUNT; i++)
    if (tokens[i].len == len && eq_ci(name, len, tokens[i].name, len))
      return (enum token)i;
  return TOK_NONE;
}

unsigned h3g_field_flags(const uint8_t *name, size_t namelen) {
  enum token t = lookup(name, namelen);
  return t == TOK_NONE ? 0 : tokens[t].flags;
}

int h3g_field_name_eq(const h3g_field *f, const char *name) {
  return eq_ci(f->name, f->namelen, name, strlen(name));
}

/* ---- storage ------------------------------------------------------------ */

int h3g_headers_init(h3g_headers *h, size_t max_section_size) {
  *h = (h3g_headers){.max_section_size = max_section_size};
  return 0;
}

void h3g_headers_free(h3g_headers *h) {
  if (h == NULL)
    return;
  free(h->arena);
  free(h->fields);
  size_t max = h->max_section_size;
  *h = (h3g_headers){.max_section_size = max};
}

void h3g_headers_clear(h3g_headers *h) {
  h->arena_used = 0;
  h->nfields = 0;
  h->section_size = 0;
}

/*
 * Makes room for `need` more arena bytes. The new arena is filled before
 * the old one is released, so the fields can be rebased from pointers that
 * are still valid.
 */
static int arena_reserve(h3g_headers *h, size_t need) {
  if (h->arena != NULL && h->arena_cap - h->arena_used >= need)
    return 0;
  size_t want = h->arena_used + need;
  size_t cap = h->arena_cap ? h->arena_cap : ARENA_MIN;
  while (cap < want && cap <= SIZE_MAX / 2)
    cap *= 2;
  if (cap < want)
    cap = want;
  /* The caller checked the section cap, so want <= max_section_size. */
  if (cap > h->max_section_size)
    cap = H3G_MAX(want, h->max_section_size);
  if (cap == 0)
    cap = 1;
  uint8_t *na = malloc(cap);
  if (na == NULL)
    return H3G_ERR_NOMEM;
  if (h->arena != NULL) {
    memcpy(na, h->arena, h->arena_used);
    for (size_t i = 0; i < h->nfields; i++) {
      h3g_field *f = &h->fields[i];
      f->name = na + (f->name - h->arena);
      f->value = na + (f->value - h->arena);
    }
    free(h->arena);
  }
  h->arena = na;
  h->arena_cap = cap;
  return 0;
}

static int fields_reserve(h3g_headers *h) {
  if (h->nfields < h->fields_cap)
    return 0;
  size_t cap = h->fields_cap ? h->fields_cap * 2 : FIELDS_MIN;
  size_t most = h->max_section_size / FIELD_OVERHEAD + 1;
  if (cap > most)
    cap = H3G_MAX(most, h->nfields + 1);
  h3g_field *nf = realloc(h->fields, cap * sizeof(*nf));
  if (nf == NULL)
    return H3G_ERR_NOMEM;
  h->fields = nf;
  h->fields_cap = cap;
  return 0;
}

/* Adds n to the section size, or refuses if the cap would be passed. */
static int charge(h3g_headers *h, size_t n) {
  if (n > h->max_section_size - h->section_size)
    return H3G_ERR_TOOBIG;
  return 0;
}

int h3g_headers_add(h3g_headers *h, const uint8_t *name, size_t namelen,
                    const uint8_t *value, size_t valuelen) {
  if (h->section_size > h->max_section_size || namelen > h->max_section_size ||
      valuelen > h->max_section_size)
    return H3G_ERR_TOOBIG;
  size_t bytes = namelen + valuelen;
  int rv = charge(h, bytes + FIELD_OVERHEAD);
  if (rv == 0)
    rv = fields_reserve(h);
  if (rv == 0)
    rv = arena_reserve(h, bytes);
  if (rv != 0)
    return rv;
  uint8_t *dst = h->arena + h->arena_used;
  if (namelen)
    memcpy(dst, name, namelen);
  if (valuelen)
    memcpy(dst + namelen, value, valuelen);
  h->fields[h->nfields++] = (h3g_field){.name = dst,
                                        .namelen = namelen,
                                        .value = dst + namelen,
                                        .valuelen = valuelen};
  h->arena_used += bytes;
  h->section_size += bytes + FIELD_OVERHEAD;
  return 0;
}

/*
 * The last field's name and value sit back to back at the end of the arena
 * (h3g_headers_add puts them there and only this function moves the end),
 * so a value grows in place and a name grows by shifting its value up.
 */
int h3g_headers_append_last(h3g_headers *h, int to_name, const uint8_t *data,
                            size_t len) {
  if (h->nfields == 0)
    return H3G_ERR_INVAL;
  h3g_field *f = &h->fields[h->nfields - 1];
  if (f->name + f->namelen != f->value ||
      f->value + f->valuelen != h->arena + h->arena_used)
    return H3G_ERR_INVAL;
  if (len == 0)
    return 0;
  if (len > h->max_section_size)
    return H3G_ERR_TOOBIG;
  int rv = charge(h, len);
  if (rv == 0)
    rv = arena_reserve(h, len);
  if (rv != 0)
    return rv;
  f = &h->fields[h->nfields - 1];
  uint8_t *name = h->arena + (f->name - h->arena);
  if (to_name) {
    if (f->valuelen)
      memmove(name + f->namelen + len, f->value, f->valuelen);
    memcpy(name + f->namelen, data, len);
    f->namelen += len;
    f->value = name + f->namelen;
  } else {
    memcpy(h->arena + h->arena_used, data, len);
    f->valuelen += len;
  }
  h->arena_used += len;
  h->section_size += len;
  return 0;
}

void h3g_headers_trim_last(h3g_headers *h) {
  if (h->nfields == 0)
    return;
  h3g_field *f = &h->fields[h->nfields - 1];
  size_t n = f->valuelen;
  while (n > 0 && is_ows(f->value[n - 1]))
    n--;
  size_t cut = f->valuelen - n;
  if (cut == 0)
    return;
  /*
   * The bytes are given back to the arena as well as to the count: were
   * only the count refunded, a peer could send fields padded with long
   * runs of whitespace and grow the arena without bound under the cap.
   */
  if (f->value + f->valuelen == h->arena + h->arena_used)
    h->arena_used -= cut;
  h->section_size -= cut;
  f->valuelen = n;
}

const h3g_field *h3g_headers_find(const h3g_headers *h, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (eq_ci(f->name, f->namelen, name, n))
      return &h->fields[i];
  }
  return NULL;
}

int h3g_headers_list_has(const h3g_headers *h, const char *name,
                         const char *token) {
  return h3g_headers_list_has_n(h, name, (const uint8_t *)token,
                                strlen(token));
}

int h3g_headers_list_has_n(const h3g_headers *h, const char *name,
                           const uint8_t *token, size_t tl) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (!eq_ci(f->name, f->namelen, name, nl))
      continue;
    const uint8_t *v = f->value;
    size_t n = f->valuelen, j = 0;
    while (j < n) {
      while (j < n && (is_ows(v[j]) || v[j] == ','))
        j++;
      size_t start = j;
      while (j < n && v[j] != ',' && !is_ows(v[j]))
        j++;
      if (j > start && eq_ci2(v + start, j - start, token, tl))
        return 1;
    }
  }
  return 0;
}

/* ---- validation --------------------------------------------------------- */

static int refuse(const char **why, const char *reason) {
  if (why != NULL)
    *why = reason;
  return H3G_ERR_PROTO;
}

/* RFC 9110 §5.5: field-vchar, with SP and HTAB allowed only inside. */
static const char *check_value(const uint8_t *v, size_t n) {
  if (n == 0)
    return NULL;
  if (is_ows(v[0]) || is_ows(v[n - 1]))
    return "leading or trailing whitespace in field value";
  for (size_t i = 0; i < n; i++)
    if (!(cclass[v[i]] & C_FVCHAR) && !is_ows(v[i]))
      return "invalid character in field value";
  return NULL;
}

/* Regular names in HTTP/3 are lowercase tokens (RFC 9114 §4.2). */
static const char *check_name(const uint8_t *s, size_t n) {
  if (n == 0)
    return "empty field name";
  for (size_t i = 0; i < n; i++) {
    if (s[i] >= 'A' && s[i] <= 'Z')
      return "uppercase character in field name";
    if (!(cclass[s[i]] & C_TCHAR))
      return "invalid character in field name";
  }
  return NULL;
}

/*
 * Content-Length = 1*DIGIT, but RFC 9110 §8.6 lets a recipient accept a list
 * of identical values ("5, 5"), as an upstream proxy may have merged
 * repeated fields. Every value in every content-length field must equal
 * *cl once it is set (-1 before the first). Empty list elements, signs and
 * values past INT64_MAX are refused: a length read two ways is how requests
 * get smuggled.
 */
static const char *parse_content_length(const uint8_t *v, size_t n,
                                        int64_t *cl) {
  size_t i = 0;
  for (;;) {
    while (i < n && is_ows(v[i]))
      i++;
    if (i == n || v[i] < '0' || v[i] > '9')
      return "invalid content-length";
    int64_t x = 0;
    while (i < n && v[i] >= '0' && v[i] <= '9') {
      int d = v[i++] - '0';
      if (x > (INT64_MAX - d) / 10)
        return "content-length too large";
      x = x * 10 + d;
    }
    if (*cl >= 0 && *cl != x)
      return "content-length values differ";
    *cl = x;
    while (i < n && is_ows(v[i]))
      i++;
    if (i == n)
      return NULL;
    if (v[i++] != ',')
      return "invalid content-length";
  }
}

/* :authority and host: non-empty, no userinfo, authority characters. */
static const char *check_authority(const h3g_field *f) {
  if (f->valuelen == 0)
    return "empty :authority or host";
  if (memchr(f->value, '@', f->valuelen) != NULL)
    return "userinfo in :authority or host";
  if (!all_in(f->value, f->valuelen, C_AUTH))
    return "invalid character in :authority or host";
  return NULL;
}

static h3g_field *pseudo_slot(h3g_request_pseudo *ps, const h3g_field *f) {
  const uint8_t *n = f->name;
  size_t len = f->namelen;
#define IS(s) (len == sizeof(s) - 1 && memcmp(n, s, len) == 0)
  if (IS(":method"))
    return &ps->method;
  if (IS(":scheme"))
    return &ps->scheme;
  if (IS(":authority"))
    return &ps->authority;
  if (IS(":path"))
    return &ps->path;
  if (IS(":protocol"))
    return &ps->protocol;
#undef IS
  return NULL;
}

static int value_is(const h3g_field *f, const char *s) {
  size_t n = strlen(s);
  return f->valuelen == n && memcmp(f->value, s, n) == 0;
}

int h3g_request_validate(const h3g_headers *h, h3g_request_pseudo *out,
                         int64_t *content_length, const char **why) {
  h3g_request_pseudo ps = {0};
  const h3g_field *host = NULL;
  int64_t cl = -1;
  int regular = 0;
  const char *bad;

  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (f->namelen == 0)
      return refuse(why, "empty field name");
    if ((bad = check_value(f->value, f->valuelen)) != NULL)
      return refuse(why, bad);
    if (f->name[0] == ':') {
      if (regular)
        return refuse(why, "pseudo-header field after regular field");
      h3g_field *slot = pseudo_slot(&ps, f);
      if (slot == NULL)
        return refuse(why, "unknown pseudo-header field");
      if (slot->namelen != 0)
        return refuse(why, "repeated pseudo-header field");
      *slot = *f;
      continue;
    }
    regular = 1;
    if ((bad = check_name(f->name, f->namelen)) != NULL)
      return refuse(why, bad);
    enum token t = lookup(f->name, f->namelen);
    if (t == TOK_NONE)
      continue;
    if (tokens[t].flags & H3G_FIELD_CONN_SPECIFIC)
      return refuse(why, "connection-specific field");
    switch (t) {
    case TOK_TE:
      /* Tokens are case-insensitive (RFC 9110 §10.1.4). */
      if (!eq_ci(f->value, f->valuelen, "trailers", 8))
        return refuse(why, "te other than trailers");
      break;
    case TOK_HOST:
      if (host != NULL)
        return refuse(why, "repeated host field");
      host = f;
      break;
    case TOK_CONTENT_LENGTH:
      if ((bad = parse_content_length(f->value, f->valuelen, &cl)) != NULL)
        return refuse(why, bad);
      break;
    default: break;
    }
  }

  if (ps.method.namelen == 0)
    return refuse(why, "missing :method");
  if (ps.method.valuelen == 0 ||
      !all_in(ps.method.value, ps.method.valuelen, C_TCHAR))
    return refuse(why, "invalid :method");
  /*
   * CONNECT asks for a TCP tunnel to any host (RFC 9114 §4.4), which a
   * gateway in front of its own apps does not give. Extended CONNECT
   * (RFC 8441 §4, RFC 9220 §3) asks for a protocol on this origin; it
   * carries :scheme, :path and :authority like any request, checked
   * below. Which protocols are served is the bridge's business; here only
   * the form counts. :protocol means nothing without CONNECT.
   */
  if (value_is(&ps.method, "CONNECT")) {
    if (ps.protocol.namelen == 0)
      return refuse(why, "CONNECT is not supported (the gateway tunnels "
                         "WebSockets only, by extended CONNECT)");
    if (ps.protocol.valuelen == 0 ||
        !all_in(ps.protocol.value, ps.protocol.valuelen, C_TCHAR))
      return refuse(why, "invalid :protocol");
    if (ps.authority.namelen == 0)
      return refuse(why, "extended CONNECT without :authority");
  } else if (ps.protocol.namelen != 0) {
    return refuse(why, ":protocol is only valid with CONNECT");
  }
  if (ps.scheme.namelen == 0)
    return refuse(why, "missing :scheme");
  if (ps.path.namelen == 0)
    return refuse(why, "missing :path");
  /*
   * The upstream is an http(s) origin; a request for another scheme would
   * be forwarded as if it were http, so it is refused (RFC 9114 §4.3.1 lets
   * a server refuse schemes it is not authoritative for).
   */
  if (!eq_ci(ps.scheme.value, ps.scheme.valuelen, "https", 5) &&
      !eq_ci(ps.scheme.value, ps.scheme.valuelen, "http", 4))
    return refuse(why, "unsupported :scheme");
  if (ps.path.valuelen == 0)
    return refuse(why, "empty :path");
  if (value_is(&ps.path, "*")) {
    if (!value_is(&ps.method, "OPTIONS"))
      return refuse(why, ":path \"*\" is only valid with OPTIONS");
  } else if (ps.path.value[0] != '/') {
    return refuse(why, ":path does not start with \"/\"");
  }
  /* The path goes into the HTTP/1.1 request line: a space there would
   * split it into another request. */
  if (!all_in(ps.path.value, ps.path.valuelen, C_PATH))
    return refuse(why, "invalid character in :path");
  /* http and https have a mandatory authority (RFC 9114 §4.3.1). */
  if (ps.authority.namelen == 0 && host == NULL)
    return refuse(why, "missing :authority and host");
  if (ps.authority.namelen != 0 &&
      (bad = check_authority(&ps.authority)) != NULL)
    return refuse(why, bad);
  if (host != NULL && (bad = check_authority(host)) != NULL)
    return refuse(why, bad);
  if (host != NULL && ps.authority.namelen != 0 &&
      !eq_ci2(host->value, host->valuelen, ps.authority.value,
              ps.authority.valuelen))
    return refuse(why, "host differs from :authority");

  if (out != NULL)
    *out = ps;
  if (content_length != NULL)
    *content_length = cl;
  return 0;
}

int h3g_trailers_validate(const h3g_headers *h, const char **why) {
  const char *bad;
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (f->namelen > 0 && f->name[0] == ':')
      return refuse(why, "pseudo-header field in trailers");
    if ((bad = check_name(f->name, f->namelen)) != NULL ||
        (bad = check_value(f->value, f->valuelen)) != NULL)
      return refuse(why, bad);
    unsigned fl = h3g_field_flags(f->name, f->namelen);
    if (fl & H3G_FIELD_CONN_SPECIFIC)
      return refuse(why, "connection-specific field");
    if (fl & (H3G_FIELD_HOP_BY_HOP | H3G_FIELD_FRAMING))
      return refuse(why, "field not allowed in trailers");
  }
  return 0;
}

/*
 * The per-field half of the two functions above, for a front end that sees
 * fields one at a time (and whose HTTP/3 library drops some fields it
 * dislikes instead of reporting them). It applies exactly their rules that
 * need no other field; the helpers are shared, so the two cannot drift.
 */
int h3g_request_field_check(const uint8_t *name, size_t namelen,
                            const uint8_t *value, size_t valuelen, int trailer,
                            int64_t *content_length, const char **why) {
  const char *bad;

  if (trailer) {
    if (namelen > 0 && name[0] == ':')
      return refuse(why, "pseudo-header field in trailers");
    if ((bad = check_name(name, namelen)) != NULL ||
        (bad = check_value(value, valuelen)) != NULL)
      return refuse(why, bad);
    unsigned fl = h3g_field_flags(name, namelen);
    if (fl & H3G_FIELD_CONN_SPECIFIC)
      return refuse(why, "connection-specific field");
    if (fl & (H3G_FIELD_HOP_BY_HOP | H3G_FIELD_FRAMING))
      return refuse(why, "field not allowed in trailers");
    return 0;
  }

  if (namelen == 0)
    return refuse(why, "empty field name");
  if ((bad = check_value(value, valuelen)) != NULL)
    return refuse(why, bad);
  const h3g_field f = {
      .name = name, .namelen = namelen, .value = value, .valuelen = valuelen};
  if (name[0] == ':') {
    h3g_request_pseudo ps = {0};
    const h3g_field *slot = pseudo_slot(&ps, &f);
    if (slot == NULL)
      return refuse(why, "unknown pseudo-header field");
    if (slot == &ps.authority && (bad = check_authority(&f)) != NULL)
      return refuse(why, bad);
    return 0;
  }
  if ((bad = check_name(name, namelen)) != NULL)
    return refuse(why, bad);
  enum token t = lookup(name, namelen);
  if (t == TOK_NONE)
    return 0;
  if (tokens[t].flags & H3G_FIELD_CONN_SPECIFIC)
    return refuse(why, "connection-specific field");
  switch (t) {
  case TOK_TE:
    if (!eq_ci(value, valuelen, "trailers", 8))
      return refuse(why, "te other than trailers");
    break;
  case TOK_HOST:
    if ((bad = check_authority(&f)) != NULL)
      return refuse(why, bad);
    break;
  case TOK_CONTENT_LENGTH:
    if ((bad = parse_content_length(value, valuelen, content_length)) != NULL)
      return refuse(why, bad);
    break;
  default: break;
  }
  return 0;
}

/* ---- response filtering ------------------------------------------------- */

typedef struct conn_options {
  struct {
    const uint8_t *s;
    size_t n;
  } opt[H3G_MAX_CONNECTION_OPTIONS];
  size_t n;
} conn_options;

/*
 * Collects the connection options of one Connection field value
 * (#connection-option, RFC 9110 §7.6.1 and §5.6.1). Options that name
 * hop-by-hop fields are dropped anyway, and "close" names no field, so only
 * the rest is kept, once each: a normal response keeps none, and the
 * per-field check below stays a short loop.
 */
static int collect_options(conn_options *co, const h3g_field *f) {
  const uint8_t *v = f->value;
  size_t n = f->valuelen, i = 0;
  while (i < n) {
    while (i < n && (is_ows(v[i]) || v[i] == ','))
      i++;
    size_t start = i;
    while (i < n && !is_ows(v[i]) && v[i] != ',')
      i++;
    size_t len = i - start;
    if (len == 0)
      continue;
    const uint8_t *s = v + start;
    if (eq_ci(s, len, "close", 5) ||
        (h3g_field_flags(s, len) & H3G_FIELD_HOP_BY_HOP))
      continue;
    size_t k;
    for (k = 0; k < co->n; k++)
      if (eq_ci2(co->opt[k].s, co->opt[k].n, s, len))
        break;
    if (k < co->n)
      continue;
    if (co->n == H3G_MAX_CONNECTION_OPTIONS)
      return H3G_ERR_TOOBIG;
    co->opt[co->n].s = s;
    co->opt[co->n].n = len;
    co->n++;
  }
  return 0;
}

int h3g_response_filter(h3g_headers *h, h3g_field *out, size_t outcap,
                        size_t *nout) {
  conn_options co = {.n = 0};
  int rv;

  for (size_t i = 0; i < h->nfields; i++) {
    h3g_field *f = &h->fields[i];
    /* The name lives in our own arena; the const is only for readers. */
    uint8_t *name = h->arena + (f->name - h->arena);
    for (size_t j = 0; j < f->namelen; j++)
      name[j] = lower(name[j]);
    if (f->namelen == 10 && memcmp(name, "connection", 10) == 0 &&
        (rv = collect_options(&co, f)) != 0)
      return rv;
  }

  size_t n = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (h3g_field_flags(f->name, f->namelen) & H3G_FIELD_HOP_BY_HOP)
      continue;
    size_t k;
    for (k = 0; k < co.n; k++)
      if (co.opt[k].n == f->namelen &&
          eq_ci2(co.opt[k].s, co.opt[k].n, f->name, f->namelen))
        break;
    if (k < co.n)
      continue;
    if (n == outcap)
      return H3G_ERR_TOOBIG;
    out[n++] = *f;
  }
  *nout = n;
  return 0;
}
