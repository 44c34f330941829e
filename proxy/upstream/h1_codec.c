/*
 * HTTP/1.1 request writing and strict response parsing over llhttp.
 *
 * llhttp does the byte-level work; this file adds what a gateway needs and
 * llhttp 8.1 leaves to its user (each found by feeding it crafted
 * responses, see tests/unit/test_h1_codec.c):
 *   - it accepts obsolete line folding without an error or a lenient flag,
 *     and whitespace between a field name and its colon ("X : y"), both of
 *     which RFC 9112 §5.1/§5.2 says a proxy must reject or repair, and an
 *     empty field name (": y");
 *   - it accepts any three digits as a status code and any HTTP/x.y version;
 *   - it reads a body after a 1xx, 204 or 304 head that declares one, which
 *     RFC 9112 §6.3 says those responses never have;
 *   - it keeps the trailing whitespace of field values;
 *   - it leaves transfer codings other than chunked to the user;
 *   - it accepts framing fields among the trailers;
 *   - it takes a bare LF as the end of the status or request line and as
 *     the empty line that ends a head or trailers, and after a CR that ends
 *     the status line, a head, a chunk line, chunk data or trailers it
 *     skips whatever byte comes instead of the LF (see fx_execute).
 * Everything else (Content-Length with Transfer-Encoding, repeated
 * Content-Length, invalid lengths, chunk sizes and extensions, bare CR, NUL
 * and other controls in values) it rejects itself when no lenient flag is
 * set, and none is.
 *
 * The same code builds against llhttp 9.2 (the system library on Debian
 * 13), which differs in four ways that show: it refuses folding, empty
 * names and "X : y" itself, before the callbacks see them, in its own words
 * (see llhttp_error_reason); it refuses a Content-Length trailer itself
 * (this file refuses it first, on both); it accepts several extensions on
 * one chunk (RFC 9112 §7.1.1), which 8.1 refuses; and it refuses bare CR
 * and LF in the framing itself (this file refuses them first, on both).
 */
#include "h1_codec.h"

#include <stdlib.h>
#include <string.h>

#include "llhttp.h"

/* Cap on the chunk extensions of one chunk (names and values of all of
 * them together). They are legal (RFC 9112 §7.1.1) but nothing here uses
 * them, and llhttp parses them without a limit. */
#define MAX_CHUNK_EXT 1024

/* ---- request writing ---------------------------------------------------- */

typedef struct writer {
  uint8_t *buf;
  size_t cap;
  size_t len;
  int full;
} writer;

static void put(writer *w, const void *data, size_t n) {
  if (w->full || n > w->cap - w->len) {
    w->full = 1;
    return;
  }
  if (n)
    memcpy(w->buf + w->len, data, n);
  w->len += n;
}

static void puts_(writer *w, const char *s) {
  put(w, s, strlen(s));
}

static void put_field(writer *w, const h3g_field *f) {
  put(w, f->name, f->namelen);
  put(w, ": ", 2);
  put(w, f->value, f->valuelen);
  put(w, "\r\n", 2);
}

static void put_uint(writer *w, uint64_t v) {
  char tmp[20];
  size_t i = sizeof(tmp);
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(w, tmp + i, sizeof(tmp) - i);
}

/*
 * HTTP/3 may split the cookie field into crumbs; an HTTP/1.1 origin
 * expects one line, so they are joined with "; " (RFC 9114 §4.2.1) where
 * the first crumb was.
 */
static void put_cookies(writer *w, const h3g_field *fields, size_t n,
                        size_t first) {
  put(w, fields[first].name, fields[first].namelen);
  put(w, ": ", 2);
  const char *sep = "";
  for (size_t i = first; i < n; i++) {
    const h3g_field *f = &fields[i];
    if (!(h3g_field_flags(f->name, f->namelen) & H3G_FIELD_COOKIE))
      continue;
    puts_(w, sep);
    put(w, f->value, f->valuelen);
    sep = "; ";
  }
  put(w, "\r\n", 2);
}

int64_t h3g_h1_write_request(const h3g_h1_request *req, uint8_t *buf,
                             size_t cap) {
  writer w = {.buf = buf, .cap = cap};
  int cookies_done = 0;

  put(&w, req->method, req->methodlen);
  put(&w, " ", 1);
  put(&w, req->target, req->targetlen);
  puts_(&w, " HTTP/1.1\r\n");
  /* Host first: RFC 9112 §3.2 asks for it right after the request line. */
  puts_(&w, req->hostlen ? "Host: " : "Host:");
  put(&w, req->host, req->hostlen);
  put(&w, "\r\n", 2);

  for (size_t i = 0; i < req->nfields; i++) {
    const h3g_field *f = &req->fields[i];
    unsigned fl = h3g_field_flags(f->name, f->namelen);
    /* The framing is ours to write; a copy from the client would let it
     * describe the body differently from what is sent. */
    if (fl & (H3G_FIELD_HOP_BY_HOP | H3G_FIELD_FRAMING))
      continue;
    if (fl & H3G_FIELD_COOKIE) {
      if (!cookies_done)
        put_cookies(&w, req->fields, req->nfields, i);
      cookies_done = 1;
      continue;
    }
    put_field(&w, f);
  }
  for (size_t i = 0; i < req->nextra; i++)
    put_field(&w, &req->extra[i]);

  if (req->content_length >= 0) {
    puts_(&w, "Content-Length: ");
    put_uint(&w, (uint64_t)req->content_length);
    put(&w, "\r\n", 2);
  } else if (req->content_length == -1) {
    puts_(&w, "Transfer-Encoding: chunked\r\n");
  }
  put(&w, "\r\n", 2);
  return w.full ? H3G_ERR_TOOBIG : (int64_t)w.len;
}

size_t h3g_h1_chunk_header(size_t len, uint8_t *buf, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  char tmp[16];
  size_t i = sizeof(tmp);
  do {
    tmp[--i] = hex[len & 0xf];
    len >>= 4;
  } while (len);
  size_t n = sizeof(tmp) - i;
  if (cap < n + 2)
    return 0;
  memcpy(buf, tmp + i, n);
  buf[n] = '\r';
  buf[n + 1] = '\n';
  return n + 2;
}

int64_t h3g_h1_write_trailers(const h3g_field *fields, size_t n, uint8_t *buf,
                              size_t cap) {
  writer w = {.buf = buf, .cap = cap};
  puts_(&w, "0\r\n");
  for (size_t i = 0; i < n; i++)
    put_field(&w, &fields[i]);
  put(&w, "\r\n", 2);
  return w.full ? H3G_ERR_TOOBIG : (int64_t)w.len;
}

/* ---- response parsing --------------------------------------------------- */

/*
 * Where the parser is within one response. IDLE until the first byte after
 * reset; HEAD while a status line and fields are read (again after each
 * interim response); BODY after a final head; TRAILERS after the last
 * chunk; DONE when the response is complete; FAILED after any error (the
 * error is then sticky until reset).
 */
enum phase { PH_IDLE, PH_HEAD, PH_BODY, PH_TRAILERS, PH_DONE, PH_FAILED };

/*
 * How the bytes fed so far end, for line_start() on the next feed: in
 * the middle of a line, right after an LF, or after an LF and SP/HTAB.
 */
enum tail { TAIL_MID, TAIL_LF, TAIL_LF_WS };

/*
 * What the response and the request parser share: the field section being
 * read and its checks, the chunk-extension cap, and the error state.
 */
typedef struct h1_fields {
  h3g_headers fields; /* the head being read, then the trailers */
  size_t ext_bytes;   /* chunk extension bytes of the current chunk */
  /* The buffer being parsed, for line_start(). */
  const uint8_t *feed_start;
  const char *reason;
  const char *too_large; /* the reason for a head over the cap */
  int err;
  enum phase phase;
  uint8_t in_name; /* a field name is being read */
  uint8_t tail;    /* enum tail, carried from one feed to the next */
  /* The last byte llhttp took was a CR of the framing: the next byte must
   * be LF (carried from one feed to the next). */
  uint8_t cr_pending;
  uint8_t in_chunk_data; /* between a chunk's size line and its data end */
} h1_fields;

struct h3g_h1_parser {
  llhttp_t ll;
  h3g_h1_callbacks cb;
  void *ud;
  h1_fields fx;
  size_t max_head_bytes;
  size_t status_bytes; /* reason phrase bytes of the current head */
  uint8_t head_request;
  uint8_t interim; /* the current head is 1xx */
  uint8_t started;
  uint8_t keep_alive;
  uint8_t force_close;
  uint8_t upgrade_ok; /* the request asked for an upgrade: 101 is final */
  uint8_t upgraded;   /* a 101 ended the exchange: the rest is a tunnel */
};

static h3g_h1_parser *parser_of(llhttp_t *ll) {
  return H3G_CONTAINER_OF(ll, h3g_h1_parser, ll);
}

/* Records an error and returns what makes llhttp stop (-1 is an error
 * for every callback type). */
static int fx_fail(h1_fields *f, int err, const char *reason) {
  if (f->phase != PH_FAILED) {
    f->err = err;
    f->reason = reason;
    f->phase = PH_FAILED;
  }
  return -1;
}

static int fail(h3g_h1_parser *p, int err, const char *reason) {
  return fx_fail(&p->fx, err, reason);
}

/* A user callback refused: keep its code. */
static int fail_cb(h3g_h1_parser *p, int rv) {
  return fail(p, rv, "stopped by a callback");
}

/* What storing a piece of a field returned. */
static int fx_store_error(h1_fields *f, int rv) {
  switch (rv) {
  case 0: return 0;
  case H3G_ERR_TOOBIG: return fx_fail(f, rv, f->too_large);
  case H3G_ERR_NOMEM: return fx_fail(f, rv, "out of memory");
  default: return fx_fail(f, H3G_ERR_PROTO, "field value without a name");
  }
}

/* RFC 9110 §5.6.2 tchar, one bit per ASCII code. */
static const uint32_t tchar_bits[4] = {0x00000000u, 0x03ff6cfau, 0xc7fffffeu,
                                       0x57ffffffu};

static inline int is_token_char(uint8_t c) {
  return c < 128 && (tchar_bits[c >> 5] >> (c & 31) & 1u);
}

static int eq_ci(const uint8_t *a, size_t n, const char *b) {
  if (n != strlen(b))
    return 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = a[i];
    if (c >= 'A' && c <= 'Z')
      c = (uint8_t)(c + 32);
    if (c != (uint8_t)b[i])
      return 0;
  }
  return 1;
}

static int on_message_begin(llhttp_t *ll) {
  h3g_h1_parser *p = parser_of(ll);
  h3g_headers_clear(&p->fx.fields);
  p->fx.phase = PH_HEAD;
  p->fx.in_name = 0;
  p->interim = 0;
  p->status_bytes = 0;
  return 0;
}

static int on_status(llhttp_t *ll, const char *at, size_t len) {
  h3g_h1_parser *p = parser_of(ll);
  H3G_UNUSED(at);
  p->status_bytes += len;
  if (p->status_bytes > p->max_head_bytes)
    return fail(p, H3G_ERR_TOOBIG, "response head too large");
  return 0;
}

static int fx_header_field(h1_fields *f, const char *at, size_t len) {
  const uint8_t *s = (const uint8_t *)at;
  /* llhttp 8.1 takes "Name : value" as a name with a trailing space. */
  for (size_t i = 0; i < len; i++)
    if (!is_token_char(s[i]))
      return fx_fail(f, H3G_ERR_PROTO, "invalid character in field name");
  int rv = f->in_name ? h3g_headers_append_last(&f->fields, 1, s, len)
                      : h3g_headers_add(&f->fields, s, len, NULL, 0);
  f->in_name = 1;
  return fx_store_error(f, rv);
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len) {
  return fx_header_field(&parser_of(ll)->fx, at, len);
}

/*
 * RFC 9110 §6.5.1 forbids framing fields in trailers. llhttp 8.1 lets them
 * through and 9.2 refuses only Content-Length; dropping them would leave a
 * response whose framing the origin and the gateway may read differently,
 * so both are refused, here, before llhttp 9.2 looks at the value.
 */
static int is_framing_trailer(const h3g_field *f) {
  return eq_ci(f->name, f->namelen, "content-length") ||
         eq_ci(f->name, f->namelen, "transfer-encoding");
}

static int fx_header_field_complete(h1_fields *f) {
  /* llhttp 8.1 takes ": value" as a field with an empty name. */
  if (!f->in_name || f->fields.nfields == 0 ||
      f->fields.fields[f->fields.nfields - 1].namelen == 0)
    return fx_fail(f, H3G_ERR_PROTO, "empty field name");
  f->in_name = 0;
  if (f->phase == PH_TRAILERS &&
      is_framing_trailer(&f->fields.fields[f->fields.nfields - 1]))
    return fx_fail(f, H3G_ERR_PROTO, "framing field in trailers");
  return 0;
}

static int on_header_field_complete(llhttp_t *ll) {
  return fx_header_field_complete(&parser_of(ll)->fx);
}

/*
 * Whether at is at the start of a line, or past nothing but SP/HTAB since
 * the LF that ended the previous line; *ws tells whether there were any.
 * Before the start of the buffer, tail says how the previous one ended.
 */
static int line_start(const uint8_t *feed_start, uint8_t tail,
                      const uint8_t *at, int *ws) {
  const uint8_t *q = at;
  while (q > feed_start && (q[-1] == ' ' || q[-1] == '\t'))
    q--;
  if (q == feed_start) {
    *ws = q != at || tail == TAIL_LF_WS;
    return tail != TAIL_MID;
  }
  *ws = q != at;
  return q[-1] == '\n';
}

/*
 * llhttp 8.1 accepts obsolete line folding and hands the continuation line
 * over as one more piece of the value, with nothing to tell it from a
 * piece cut by the end of a buffer. A folded piece starts a line (it
 * begins with its SP/HTAB, or follows them); a genuine value piece follows
 * the colon, more of the value, or the start of the buffer in the middle
 * of a line.
 */
static int fx_header_value(h1_fields *f, const char *at, size_t len) {
  const uint8_t *s = (const uint8_t *)at;
  int ws;
  /* llhttp reports an empty value as an empty piece placed past the end of
   * its line; it carries nothing to check. */
  if (len == 0)
    return 0;
  if (line_start(f->feed_start, f->tail, s, &ws))
    return fx_fail(f, H3G_ERR_PROTO, "obsolete line folding");
  /* llhttp 8.1 refuses these itself; checked again because what reaches
   * HTTP/3 clients must not depend on which llhttp the build links (the
   * system one on Debian 13). */
  for (size_t i = 0; i < len; i++)
    if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
      return fx_fail(f, H3G_ERR_PROTO, "invalid character in field value");
  return fx_store_error(f, h3g_headers_append_last(&f->fields, 0, s, len));
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len) {
  return fx_header_value(&parser_of(ll)->fx, at, len);
}

static int fx_header_value_complete(h1_fields *f) {
  h3g_headers_trim_last(&f->fields);
  return 0;
}

static int on_header_value_complete(llhttp_t *ll) {
  return fx_header_value_complete(&parser_of(ll)->fx);
}

/*
 * The gateway cannot undo gzip, deflate or compress transfer codings, and
 * Transfer-Encoding is hop-by-hop, so forwarding such a body would hand the
 * client bytes it has no way to decode. The only coding accepted is one
 * "chunked" (RFC 9112 §7: never applied twice), over all fields together.
 * With "chunked, gzip" llhttp would read a close-delimited body (§6.3
 * rule 4); that is refused for the same reason.
 */
static const char *check_te_fields(const h3g_headers *h, int *present) {
  int chunked = 0, other = 0;
  *present = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (!eq_ci(f->name, f->namelen, "transfer-encoding"))
      continue;
    *present = 1;
    const uint8_t *v = f->value;
    size_t n = f->valuelen, j = 0;
    while (j < n) {
      while (j < n && (v[j] == ' ' || v[j] == '\t' || v[j] == ','))
        j++;
      size_t start = j;
      while (j < n && v[j] != ',')
        j++;
      size_t end = j;
      while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
        end--;
      if (end == start)
        continue;
      if (eq_ci(v + start, end - start, "chunked"))
        chunked++;
      else
        other++;
    }
  }
  if (*present && (chunked != 1 || other != 0))
    return "unsupported transfer coding";
  return NULL;
}

static const char *check_transfer_encoding(h3g_h1_parser *p, int *present) {
  return check_te_fields(&p->fx.fields, present);
}

static int on_headers_complete(llhttp_t *ll) {
  h3g_h1_parser *p = parser_of(ll);
  int status = ll->status_code;
  const char *bad;
  int te;

  if (ll->http_major != 1)
    return fail(p, H3G_ERR_PROTO, "unsupported HTTP version");
  if (status < 100 || status > 599)
    return fail(p, H3G_ERR_PROTO, "invalid status code");
  /* A 101 answers only a request that asked for an upgrade (RFC 9110
   * §15.2.2). It is that exchange's last HTTP message: parsing stops right
   * after its head, and whatever follows belongs to the new protocol. */
  if (status == 101) {
    if (!p->upgrade_ok)
      return fail(p, H3G_ERR_PROTO, "101 without upgrade");
    p->interim = 0;
    if (p->cb.on_head) {
      int rv = p->cb.on_head(p->ud, status, &p->fx.fields, 0);
      if (rv != 0)
        return fail_cb(p, rv);
    }
    h3g_headers_clear(&p->fx.fields);
    p->upgraded = 1;
    p->keep_alive = 0;
    p->fx.phase = PH_DONE;
    return HPE_PAUSED;
  }
  if ((bad = check_transfer_encoding(p, &te)) != NULL)
    return fail(p, H3G_ERR_PROTO, bad);
  /* RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty
   * framing; the message may be read, but the connection must go. */
  if (te && ll->http_minor == 0)
    p->force_close = 1;

  p->interim = status < 200;
  if (!p->interim)
    p->fx.phase = PH_BODY;
  if (p->cb.on_head) {
    int rv = p->cb.on_head(p->ud, status, &p->fx.fields, p->interim);
    if (rv != 0)
      return fail_cb(p, rv);
  }
  h3g_headers_clear(&p->fx.fields);
  /* RFC 9112 §6.3 rule 1: whatever the fields say, these have no body. */
  if (p->head_request || p->interim || status == 204 || status == 304)
    return 1;
  return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len) {
  h3g_h1_parser *p = parser_of(ll);
  if (p->cb.on_body && len) {
    int rv = p->cb.on_body(p->ud, (const uint8_t *)at, len);
    if (rv != 0)
      return fail_cb(p, rv);
  }
  return 0;
}

static int fx_chunk_extension(h1_fields *f, size_t len) {
  f->ext_bytes += len;
  if (f->ext_bytes > MAX_CHUNK_EXT)
    return fx_fail(f, H3G_ERR_PROTO, "chunk extension too long");
  return 0;
}

static int on_chunk_extension(llhttp_t *ll, const char *at, size_t len) {
  H3G_UNUSED(at);
  return fx_chunk_extension(&parser_of(ll)->fx, len);
}

static int fx_chunk_header(h1_fields *f, const llhttp_t *ll) {
  f->ext_bytes = 0;
  f->in_chunk_data = ll->content_length > 0;
  /* The last chunk: what follows are trailer fields, which llhttp reports
   * through the same field callbacks. */
  if (ll->content_length == 0) {
    f->phase = PH_TRAILERS;
    f->in_name = 0;
    h3g_headers_clear(&f->fields);
  }
  return 0;
}

static int on_chunk_header(llhttp_t *ll) {
  return fx_chunk_header(&parser_of(ll)->fx, ll);
}

static int fx_chunk_complete(h1_fields *f) {
  f->in_chunk_data = 0;
  return 0;
}

static int on_chunk_complete(llhttp_t *ll) {
  return fx_chunk_complete(&parser_of(ll)->fx);
}

/*
 * Routing fields (Host) and hop-by-hop fields mean nothing once the body
 * has been read (RFC 9110 §6.5.1) and could mislead a client that merges
 * trailers into the head, so they are dropped before the trailers are
 * reported (Content-Length and Transfer-Encoding were refused already).
 */
static void drop_forbidden_trailers(h3g_headers *h) {
  size_t k = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    unsigned fl = h3g_field_flags(h->fields[i].name, h->fields[i].namelen);
    if (!(fl & (H3G_FIELD_FRAMING | H3G_FIELD_HOP_BY_HOP)))
      h->fields[k++] = h->fields[i];
  }
  h->nfields = k;
}

/*
 * Pausing here stops llhttp exactly at the end of the message, so feed can
 * tell how many bytes it used: an interim response is followed by its
 * final response (feed resets llhttp and goes on), a final one by nothing
 * this exchange may read.
 */
static int on_message_complete(llhttp_t *ll) {
  h3g_h1_parser *p = parser_of(ll);
  int rv;

  if (p->interim) {
    p->fx.phase = PH_HEAD;
    return HPE_PAUSED;
  }
  if (p->fx.phase == PH_TRAILERS) {
    drop_forbidden_trailers(&p->fx.fields);
    if (p->fx.fields.nfields && p->cb.on_trailers &&
        (rv = p->cb.on_trailers(p->ud, &p->fx.fields)) != 0)
      return fail_cb(p, rv);
  }
  p->keep_alive = (uint8_t)(llhttp_should_keep_alive(ll) && !p->force_close);
  p->fx.phase = PH_DONE;
  if (p->cb.on_complete && (rv = p->cb.on_complete(p->ud)) != 0)
    return fail_cb(p, rv);
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
    .on_message_complete = on_message_complete,
};

int h3g_h1_parser_new(h3g_h1_parser **pp, const h3g_h1_callbacks *cb, void *ud,
                      size_t max_head_bytes) {
  h3g_h1_parser *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return H3G_ERR_NOMEM;
  if (cb != NULL)
    p->cb = *cb;
  p->ud = ud;
  p->max_head_bytes = max_head_bytes;
  h3g_headers_init(&p->fx.fields, max_head_bytes);
  p->fx.too_large = "response head too large";
  llhttp_init(&p->ll, HTTP_RESPONSE, &settings);
  h3g_h1_parser_reset(p, 0);
  *pp = p;
  return 0;
}

void h3g_h1_parser_free(h3g_h1_parser *p) {
  if (p == NULL)
    return;
  h3g_headers_free(&p->fx.fields);
  free(p);
}

void h3g_h1_parser_reset(h3g_h1_parser *p, int head_request) {
  llhttp_reset(&p->ll);
  h3g_headers_clear(&p->fx.fields);
  p->status_bytes = 0;
  p->fx.ext_bytes = 0;
  p->fx.feed_start = NULL;
  p->fx.reason = NULL;
  p->fx.err = 0;
  p->fx.phase = PH_IDLE;
  p->head_request = head_request ? 1 : 0;
  p->fx.in_name = 0;
  p->interim = 0;
  p->started = 0;
  p->keep_alive = 0;
  p->force_close = 0;
  p->upgrade_ok = 0;
  p->upgraded = 0;
  p->fx.tail = TAIL_LF;
  p->fx.cr_pending = 0;
  p->fx.in_chunk_data = 0;
}

/* How the fed bytes end, for line_start() on the next feed. */
static void next_tail(uint8_t *tail, const uint8_t *data, size_t len) {
  size_t i = len;
  while (i > 0 && (data[i - 1] == ' ' || data[i - 1] == '\t'))
    i--;
  if (i == 0) {
    if (len > 0 && *tail == TAIL_LF)
      *tail = TAIL_LF_WS;
  } else if (data[i - 1] != '\n') {
    *tail = TAIL_MID;
  } else {
    *tail = i < len ? TAIL_LF_WS : TAIL_LF;
  }
}

static void note_tail(h3g_h1_parser *p, const uint8_t *data, size_t len) {
  next_tail(&p->fx.tail, data, len);
}

/*
 * The reason for an error llhttp found itself. llhttp 9 refuses obsolete
 * line folding, an empty field name and "X : y" before the callbacks see
 * them (8.1 hands them over, and the callbacks above name them), all as
 * HPE_INVALID_HEADER_TOKEN in its own words; they are named here from the
 * byte where it stopped, so that logs say the same whichever llhttp the
 * build links. Only a line that starts with SP/HTAB after a field of the
 * same section is folding: llhttp 8.1 takes one that starts the trailers
 * as a field name. llhttp 9.2 may stop at the end of the buffer (a fold
 * whose SP/HTAB ends it), so pos may equal end.
 */
static const char *fx_llhttp_reason(const h1_fields *f, const llhttp_t *ll,
                                    const uint8_t *pos, const uint8_t *end) {
  const char *why = llhttp_get_error_reason(ll);
  int ws;

  if (llhttp_get_errno(ll) != HPE_INVALID_HEADER_TOKEN || pos == NULL ||
      pos < f->feed_start || pos > end)
    return why;
  int c = pos < end ? *pos : -1;
  if (line_start(f->feed_start, f->tail, pos, &ws)) {
    if ((ws || c == ' ' || c == '\t') && f->fields.nfields > 0)
      return "obsolete line folding";
    if (!ws && c == ':')
      return "empty field name";
  }
  if (why != NULL && strcmp(why, "Invalid header value char") == 0)
    return "invalid character in field value";
  return "invalid character in field name";
}

/*
 * How many of the next bytes llhttp will take as body data (a chunk's
 * data, or a body delimited by its length or by the close, which ends
 * where llhttp pauses); 0 when the next byte is framing: a start line,
 * fields, a chunk line, the CRLF after chunk data, trailers, or the empty
 * lines llhttp skips before a start line.
 */
static uint64_t fx_body_left(const h1_fields *f, const llhttp_t *ll) {
  if (f->phase != PH_BODY)
    return 0;
  if (ll->flags & F_CHUNKED)
    return f->in_chunk_data ? ll->content_length : 0;
  return UINT64_MAX;
}

static llhttp_errno_t fx_line_error(h1_fields *f, const char *reason,
                                    const uint8_t *at, const uint8_t **stop) {
  fx_fail(f, H3G_ERR_PROTO, reason);
  *stop = at;
  return HPE_USER;
}

/*
 * llhttp_execute over data, refusing a bare CR or LF anywhere in the
 * framing. RFC 9112 §2.2 lets a recipient take a bare LF as a line end,
 * but hops that read it differently disagree on where a message ends.
 * llhttp 9 refuses both itself; llhttp 8.1 (Debian 12) takes a bare LF
 * that ends the status or request line, the head or the trailers, and
 * after a CR that ends the status line, the head, a chunk line, chunk
 * data or the trailers it skips whatever byte comes in place of the LF.
 * Body data may hold both. Whether a byte is framing is only known from
 * llhttp's state once the bytes before it are parsed, so llhttp is run up
 * to each CR and LF outside the body: a framing LF not preceded by a
 * framing CR is refused before llhttp sees it; a framing CR is parsed
 * alone and the next byte, in this feed or the next, must be LF. So the
 * outcome and its reason do not depend on where the input is cut.
 *
 * Returns what llhttp_execute returned, with *stop where it stopped (the
 * end of data for HPE_OK), or HPE_USER after recording the error, with
 * *stop at the offending byte.
 */
static llhttp_errno_t fx_execute(h1_fields *f, llhttp_t *ll,
                                 const uint8_t *data, size_t len,
                                 const uint8_t **stop) {
  size_t done = 0, i = 0;
  llhttp_errno_t e;
  int ws;

  while (i < len) {
    if (f->cr_pending) {
      if (data[i] != '\n')
        return fx_line_error(f, "bare CR", data + i, stop);
      f->cr_pending = 0;
      i++;
      continue;
    }
    if (data[i] != '\r' && data[i] != '\n') {
      i++;
      continue;
    }
    if (i > done) {
      e = llhttp_execute(ll, (const char *)data + done, i - done);
      if (e != HPE_OK)
        goto stopped;
      done = i;
    }
    uint64_t body = fx_body_left(f, ll);
    if (body > 0) {
      i += (size_t)H3G_MIN(body, (uint64_t)(len - i));
      continue;
    }
    if (data[i] == '\n')
      return fx_line_error(f, "bare LF", data + i, stop);
    /* llhttp 8.1 takes a line of nothing but SP/HTAB after a field as
     * folding that adds nothing to the value, and tells no callback (9.2
     * refuses it, as the value callback does for any other fold). */
    if ((f->phase == PH_HEAD || f->phase == PH_TRAILERS) &&
        f->fields.nfields > 0 &&
        line_start(f->feed_start, f->tail, data + i, &ws) && ws)
      return fx_line_error(f, "obsolete line folding", data + i, stop);
    e = llhttp_execute(ll, (const char *)data + i, 1);
    if (e != HPE_OK)
      goto stopped;
    done = ++i;
    f->cr_pending = 1;
  }
  if (len > done) {
    e = llhttp_execute(ll, (const char *)data + done, len - done);
    if (e != HPE_OK)
      goto stopped;
  }
  *stop = data + len;
  return HPE_OK;

stopped:
  *stop = (const uint8_t *)llhttp_get_error_pos(ll);
  return e;
}

static const char *llhttp_error_reason(const h3g_h1_parser *p,
                                       const uint8_t *pos, const uint8_t *end) {
  return fx_llhttp_reason(&p->fx, &p->ll, pos, end);
}

int h3g_h1_parser_feed(h3g_h1_parser *p, const uint8_t *data, size_t len,
                       size_t *consumed) {
  size_t off = 0;

  *consumed = 0;
  if (p->fx.phase == PH_FAILED)
    return p->fx.err;
  if (p->fx.phase == PH_DONE || len == 0)
    return 0;
  p->started = 1;
  p->fx.feed_start = data;
  for (;;) {
    const uint8_t *pos;
    llhttp_errno_t e = fx_execute(&p->fx, &p->ll, data + off, len - off, &pos);
    if (e == HPE_OK) {
      off = len;
      break;
    }
    if (e == HPE_PAUSED && p->fx.phase != PH_FAILED) {
      off = (size_t)(pos - data);
      if (p->fx.phase == PH_DONE)
        break;
      /* An interim response ended: its final response follows, parsed
       * from a clean state (llhttp would otherwise apply the interim
       * response's Connection: close to it). */
      llhttp_reset(&p->ll);
      continue;
    }
    if (p->fx.phase != PH_FAILED)
      fail(p, H3G_ERR_PROTO, llhttp_error_reason(p, pos, data + len));
    if (pos != NULL && pos >= data && pos <= data + len)
      *consumed = (size_t)(pos - data);
    p->fx.feed_start = NULL;
    return p->fx.err;
  }
  note_tail(p, data, off);
  p->fx.feed_start = NULL;
  *consumed = off;
  return 0;
}

int h3g_h1_parser_finish(h3g_h1_parser *p) {
  if (p->fx.phase == PH_FAILED)
    return p->fx.err;
  if (p->fx.phase == PH_DONE || !p->started)
    return 0;
  /* Completes a close-delimited body through on_message_complete. */
  llhttp_finish(&p->ll);
  if (p->fx.phase == PH_DONE) {
    p->keep_alive = 0;
    return 0;
  }
  if (p->fx.phase == PH_FAILED)
    return p->fx.err;
  fail(p, H3G_ERR_PROTO, "connection closed before the response was complete");
  return p->fx.err;
}

void h3g_h1_parser_expect_upgrade(h3g_h1_parser *p) {
  p->upgrade_ok = 1;
}

int h3g_h1_parser_upgraded(const h3g_h1_parser *p) {
  return p->upgraded;
}

int h3g_h1_parser_complete(const h3g_h1_parser *p) {
  return p->fx.phase == PH_DONE;
}

int h3g_h1_parser_started(const h3g_h1_parser *p) {
  return p->started;
}

int h3g_h1_parser_keep_alive(const h3g_h1_parser *p) {
  return p->fx.phase == PH_DONE && p->keep_alive;
}

const char *h3g_h1_parser_reason(const h3g_h1_parser *p) {
  if (p->fx.reason != NULL)
    return p->fx.reason;
  return p->fx.phase == PH_FAILED ? "error" : "no error";
}

/* ---- request parsing ---------------------------------------------------- */

/*
 * The server side of the TCP listener. The same llhttp gaps as for
 * responses are closed here (folding, "X : y", empty names, trailing
 * whitespace, framing trailers, transfer codings), plus RFC 9112 §3.2's
 * Host rule. Parsing pauses after the head so that the caller feeds body
 * bytes only as fast as the upstream takes them (flow control: a chunked
 * body never decodes to more bytes than were fed).
 */
struct h3g_h1_request_parser {
  llhttp_t ll;
  h3g_h1_request_callbacks cb;
  void *ud;
  h1_fields fx;
  uint8_t *target; /* the request target, up to max_head_bytes */
  size_t targetlen, targetcap;
  size_t max_head_bytes;
  uint8_t started;
};

static h3g_h1_request_parser *rparser_of(llhttp_t *ll) {
  return H3G_CONTAINER_OF(ll, h3g_h1_request_parser, ll);
}

static int rfail(h3g_h1_request_parser *p, int err, const char *reason) {
  return fx_fail(&p->fx, err, reason);
}

static int ron_message_begin(llhttp_t *ll) {
  h3g_h1_request_parser *p = rparser_of(ll);
  h3g_headers_clear(&p->fx.fields);
  p->targetlen = 0;
  p->fx.phase = PH_HEAD;
  p->fx.in_name = 0;
  return 0;
}

static int ron_url(llhttp_t *ll, const char *at, size_t len) {
  h3g_h1_request_parser *p = rparser_of(ll);
  /* llhttp reports an empty target ("CONNECT \r\n") as an empty piece,
   * before any was stored: nothing to copy, no buffer yet. */
  if (len == 0)
    return 0;
  if (len > p->max_head_bytes - p->targetlen)
    return rfail(p, H3G_ERR_TOOBIG, "request target too long");
  if (p->targetlen + len > p->targetcap) {
    size_t cap = H3G_MAX(p->targetcap * 2, (size_t)256);
    while (cap < p->targetlen + len)
      cap *= 2;
    cap = H3G_MIN(cap, p->max_head_bytes);
    uint8_t *t = realloc(p->target, cap);
    if (t == NULL)
      return rfail(p, H3G_ERR_NOMEM, "out of memory");
    p->target = t;
    p->targetcap = cap;
  }
  memcpy(p->target + p->targetlen, at, len);
  p->targetlen += len;
  return 0;
}

static int ron_header_field(llhttp_t *ll, const char *at, size_t len) {
  return fx_header_field(&rparser_of(ll)->fx, at, len);
}

static int ron_header_field_complete(llhttp_t *ll) {
  return fx_header_field_complete(&rparser_of(ll)->fx);
}

static int ron_header_value(llhttp_t *ll, const char *at, size_t len) {
  return fx_header_value(&rparser_of(ll)->fx, at, len);
}

static int ron_header_value_complete(llhttp_t *ll) {
  return fx_header_value_complete(&rparser_of(ll)->fx);
}

static int ron_headers_complete(llhttp_t *ll) {
  h3g_h1_request_parser *p = rparser_of(ll);
  const char *bad;
  int te, hosts = 0, upgrade = 0;

  if (ll->http_major != 1 || ll->http_minor > 1)
    return rfail(p, H3G_ERR_PROTO, "unsupported HTTP version");
  if (p->targetlen == 0)
    return rfail(p, H3G_ERR_PROTO, "empty request target");
  /* RFC 9112 §3.2, RFC 3986: a target is visible ASCII; anything else
   * (raw UTF-8, tab) must be percent-encoded. llhttp 9 refuses these
   * bytes, 8 lets them through: the same answer on both. */
  for (size_t i = 0; i < p->targetlen; i++)
    if (p->target[i] <= 0x20 || p->target[i] >= 0x7f)
      return rfail(p, H3G_ERR_PROTO, "invalid character in request target");
  if ((bad = check_te_fields(&p->fx.fields, &te)) != NULL)
    return rfail(p, H3G_ERR_PROTO, bad);
  /* RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; a
   * gateway cannot tell what the client meant. */
  if (te && ll->http_minor == 0)
    return rfail(p, H3G_ERR_PROTO, "transfer coding in HTTP/1.0");
  for (size_t i = 0; i < p->fx.fields.nfields; i++) {
    const h3g_field *f = &p->fx.fields.fields[i];
    if (eq_ci(f->name, f->namelen, "host"))
      hosts++;
    else if (eq_ci(f->name, f->namelen, "upgrade"))
      upgrade = 1;
  }
  if (hosts > 1)
    return rfail(p, H3G_ERR_PROTO, "more than one Host field");
  if (hosts == 0 && ll->http_minor == 1)
    return rfail(p, H3G_ERR_PROTO, "no Host field");

  h3g_h1_request_head head = {
      .method = llhttp_method_name((llhttp_method_t)ll->method),
      .target = p->target,
      .targetlen = p->targetlen,
      .version_minor = ll->http_minor,
      .fields = &p->fx.fields,
      .body = (ll->flags & F_CHUNKED)          ? -1
              : (ll->flags & F_CONTENT_LENGTH) ? (int64_t)ll->content_length
                                               : 0,
      .keep_alive = llhttp_should_keep_alive(ll),
      .upgrade = upgrade,
  };
  p->fx.phase = PH_BODY;
  if (p->cb.on_head) {
    int rv = p->cb.on_head(p->ud, &head);
    if (rv != 0)
      return rfail(p, rv, "stopped by a callback");
  }
  h3g_headers_clear(&p->fx.fields);
  /* Without a body the request completes in the same call (pausing here
   * would leave on_complete to a feed with nothing to feed). */
  return head.body != 0 ? HPE_PAUSED : 0;
}

static int ron_body(llhttp_t *ll, const char *at, size_t len) {
  h3g_h1_request_parser *p = rparser_of(ll);
  if (p->cb.on_body && len) {
    int rv = p->cb.on_body(p->ud, (const uint8_t *)at, len);
    if (rv != 0)
      return rfail(p, rv, "stopped by a callback");
  }
  return 0;
}

static int ron_chunk_extension(llhttp_t *ll, const char *at, size_t len) {
  H3G_UNUSED(at);
  return fx_chunk_extension(&rparser_of(ll)->fx, len);
}

static int ron_chunk_header(llhttp_t *ll) {
  return fx_chunk_header(&rparser_of(ll)->fx, ll);
}

static int ron_chunk_complete(llhttp_t *ll) {
  return fx_chunk_complete(&rparser_of(ll)->fx);
}

static int ron_message_complete(llhttp_t *ll) {
  h3g_h1_request_parser *p = rparser_of(ll);
  int rv;
  if (p->fx.phase == PH_TRAILERS) {
    drop_forbidden_trailers(&p->fx.fields);
    if (p->fx.fields.nfields && p->cb.on_trailers &&
        (rv = p->cb.on_trailers(p->ud, &p->fx.fields)) != 0)
      return rfail(p, rv, "stopped by a callback");
  }
  p->fx.phase = PH_DONE;
  if (p->cb.on_complete && (rv = p->cb.on_complete(p->ud)) != 0)
    return rfail(p, rv, "stopped by a callback");
  return HPE_PAUSED;
}

static const llhttp_settings_t request_settings = {
    .on_message_begin = ron_message_begin,
    .on_url = ron_url,
    .on_header_field = ron_header_field,
    .on_header_field_complete = ron_header_field_complete,
    .on_header_value = ron_header_value,
    .on_header_value_complete = ron_header_value_complete,
    .on_headers_complete = ron_headers_complete,
    .on_body = ron_body,
    .on_chunk_extension_name = ron_chunk_extension,
    .on_chunk_extension_value = ron_chunk_extension,
    .on_chunk_header = ron_chunk_header,
    .on_chunk_complete = ron_chunk_complete,
    .on_message_complete = ron_message_complete,
};

int h3g_h1_request_parser_new(h3g_h1_request_parser **pp,
                              const h3g_h1_request_callbacks *cb, void *ud,
                              size_t max_head_bytes) {
  h3g_h1_request_parser *p = calloc(1, sizeof(*p));
  *pp = NULL;
  if (p == NULL)
    return H3G_ERR_NOMEM;
  if (cb != NULL)
    p->cb = *cb;
  p->ud = ud;
  p->max_head_bytes = max_head_bytes;
  h3g_headers_init(&p->fx.fields, max_head_bytes);
  p->fx.too_large = "request head too large";
  llhttp_init(&p->ll, HTTP_REQUEST, &request_settings);
  h3g_h1_request_parser_reset(p);
  *pp = p;
  return 0;
}

void h3g_h1_request_parser_free(h3g_h1_request_parser *p) {
  if (p == NULL)
    return;
  h3g_headers_free(&p->fx.fields);
  free(p->target);
  free(p);
}

void h3g_h1_request_parser_reset(h3g_h1_request_parser *p) {
  llhttp_reset(&p->ll);
  h3g_headers_clear(&p->fx.fields);
  p->targetlen = 0;
  p->fx.ext_bytes = 0;
  p->fx.feed_start = NULL;
  p->fx.reason = NULL;
  p->fx.err = 0;
  p->fx.phase = PH_IDLE;
  p->fx.in_name = 0;
  p->started = 0;
  p->fx.tail = TAIL_LF;
  p->fx.cr_pending = 0;
  p->fx.in_chunk_data = 0;
}

/* llhttp's own refusals, named as the response side names them. */
static const char *request_error_reason(const h3g_h1_request_parser *p,
                                        const uint8_t *pos,
                                        const uint8_t *end) {
  return fx_llhttp_reason(&p->fx, &p->ll, pos, end);
}

int h3g_h1_request_parser_feed(h3g_h1_request_parser *p, const uint8_t *data,
                               size_t len, size_t *consumed) {
  size_t off;

  *consumed = 0;
  if (p->fx.phase == PH_FAILED)
    return p->fx.err;
  if (p->fx.phase == PH_DONE || len == 0)
    return 0;
  p->started = 1;
  p->fx.feed_start = data;
  const uint8_t *pos;
  llhttp_errno_t e = fx_execute(&p->fx, &p->ll, data, len, &pos);
  if (e == HPE_OK) {
    off = len;
  } else if (e == HPE_PAUSED && p->fx.phase != PH_FAILED) {
    off = (size_t)(pos - data);
    llhttp_resume(&p->ll);
  } else if (e == HPE_PAUSED_UPGRADE && p->fx.phase == PH_DONE) {
    off = (size_t)(pos - data);
  } else {
    if (p->fx.phase != PH_FAILED)
      rfail(p, H3G_ERR_PROTO, request_error_reason(p, pos, data + len));
    if (pos != NULL && pos >= data && pos <= data + len)
      *consumed = (size_t)(pos - data);
    p->fx.feed_start = NULL;
    return p->fx.err;
  }
  next_tail(&p->fx.tail, data, off);
  p->fx.feed_start = NULL;
  *consumed = off;
  return 0;
}

int h3g_h1_request_parser_in_head(const h3g_h1_request_parser *p) {
  return p->fx.phase == PH_HEAD;
}

int h3g_h1_request_parser_in_body(const h3g_h1_request_parser *p) {
  return p->fx.phase == PH_BODY || p->fx.phase == PH_TRAILERS;
}

int h3g_h1_request_parser_complete(const h3g_h1_request_parser *p) {
  return p->fx.phase == PH_DONE;
}

const char *h3g_h1_request_parser_reason(const h3g_h1_request_parser *p) {
  if (p->fx.reason != NULL)
    return p->fx.reason;
  return p->fx.phase == PH_FAILED ? "error" : "no error";
}

#define H3G_STR_(x) #x
#define H3G_STR(x) H3G_STR_(x)
const char *h3g_h1_version(void) {
  return "llhttp " H3G_STR(LLHTTP_VERSION_MAJOR) "." H3G_STR(
      LLHTTP_VERSION_MINOR) "." H3G_STR(LLHTTP_VERSION_PATCH);
}
