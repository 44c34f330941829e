/*
 * libFuzzer target for the header rules (proxy/http/http_headers.c): storage,
 * request and trailer validation, response filtering.
 *
 * Input: one control byte (picks the section cap), then lines separated by
 * "\n". A line "name:value" adds a field, split at the first ":" after the
 * first byte (so ":path:/x" is the pseudo-header :path); a line without a
 * ":" adds a name with an empty value. A line starting with "\t" appends
 * the rest to the last value, "\v" to the last name, and "\f" trims the
 * last value, as an HTTP/1.1 parser would.
 *
 * Every accepted request is checked for what the HTTP/1.1 writer relies
 * on, so that nothing a client sends can inject a line or a request.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void build(h3g_headers *h, const uint8_t *d, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t *line = d + i;
    const uint8_t *nl = memchr(line, '\n', n - i);
    size_t len = nl ? (size_t)(nl - line) : n - i;
    i += len + (nl ? 1 : 0);
    int rv;
    if (len > 0 && line[0] == '\t') {
      rv = h3g_headers_append_last(h, 0, line + 1, len - 1);
    } else if (len > 0 && line[0] == '\v') {
      rv = h3g_headers_append_last(h, 1, line + 1, len - 1);
    } else if (len > 0 && line[0] == '\f') {
      h3g_headers_trim_last(h);
      rv = 0;
    } else {
      const uint8_t *colon = len > 1 ? memchr(line + 1, ':', len - 1) : NULL;
      size_t nlen = colon ? (size_t)(colon - line) : len;
      rv = h3g_headers_add(h, line, nlen, colon ? colon + 1 : NULL,
                           colon ? len - nlen - 1 : 0);
    }
    if (rv == H3G_ERR_TOOBIG || rv == H3G_ERR_NOMEM)
      return;
    if (rv != 0 && rv != H3G_ERR_INVAL)
      abort();
  }
}

static int all(const h3g_field *f, int (*ok)(uint8_t)) {
  for (size_t i = 0; i < f->valuelen; i++)
    if (!ok(f->value[i]))
      return 0;
  return 1;
}

static int tchar(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int path_char(uint8_t c) {
  return c > 0x20 && c < 0x7f && c != '#';
}

static int authority_char(uint8_t c) {
  return c > 0x20 && c < 0x7f && c != '@' && c != '/' && c != '"';
}

static int value_char(uint8_t c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int ows(uint8_t c) {
  return c == ' ' || c == '\t';
}

/*
 * What the HTTP/1.1 writer relies on: method, path, authority and host
 * cannot hold a space or a line break (no second request line), values
 * cannot hold a line break (no injected field), and the length is one
 * number.
 */
static void check_request(const h3g_headers *h, const h3g_request_pseudo *ps,
                          int64_t cl) {
  if (ps->method.namelen == 0 || ps->scheme.namelen == 0 ||
      ps->path.namelen == 0)
    abort();
  /* CONNECT only as extended CONNECT (RFC 8441, RFC 9220): with a token
   * :protocol and an :authority; :protocol only with CONNECT. */
  int connect = ps->method.valuelen == 7 &&
                memcmp(ps->method.value, "CONNECT", 7) == 0;
  if (connect != (ps->protocol.namelen != 0))
    abort();
  if (connect && (ps->protocol.valuelen == 0 || !all(&ps->protocol, tchar) ||
                  ps->authority.namelen == 0))
    abort();
  if (ps->method.valuelen == 0 || !all(&ps->method, tchar))
    abort();
  if (ps->path.valuelen == 0 || !all(&ps->path, path_char) ||
      (ps->path.value[0] != '/' &&
       !(ps->path.valuelen == 1 && ps->path.value[0] == '*')))
    abort();
  const h3g_field *host = h3g_headers_find(h, "host");
  if (ps->authority.namelen == 0 && host == NULL)
    abort();
  if (ps->authority.namelen != 0 &&
      (ps->authority.valuelen == 0 || !all(&ps->authority, authority_char)))
    abort();
  if (host != NULL && (host->valuelen == 0 || !all(host, authority_char)))
    abort();
  int64_t seen = -1;
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (f->namelen == 0)
      abort();
    if (!all(f, value_char))
      abort();
    if (f->valuelen && (ows(f->value[0]) || ows(f->value[f->valuelen - 1])))
      abort();
    if (f->name[0] == ':')
      continue;
    for (size_t j = 0; j < f->namelen; j++)
      if (!tchar(f->name[j]) || (f->name[j] >= 'A' && f->name[j] <= 'Z'))
        abort();
    unsigned fl = h3g_field_flags(f->name, f->namelen);
    if (fl & H3G_FIELD_CONN_SPECIFIC)
      abort();
    if (h3g_field_name_eq(f, "content-length")) {
      /* the first number of the list */
      int64_t x = 0;
      size_t j = 0;
      while (j < f->valuelen && f->value[j] >= '0' && f->value[j] <= '9')
        x = x * 10 + (f->value[j++] - '0');
      if (j == 0 || (seen >= 0 && x != seen))
        abort();
      seen = x;
    }
  }
  if (seen != cl)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t caps[4] = {128, 1024, 16384, 65536};
  if (size < 1)
    return 0;
  h3g_headers h;
  h3g_headers_init(&h, caps[data[0] & 3]);
  build(&h, data + 1, size - 1);
  if (h.section_size > h.max_section_size || h.arena_used > h.arena_cap)
    abort();

  h3g_request_pseudo ps;
  int64_t cl = -2;
  const char *why = NULL;
  int rv = h3g_request_validate(&h, &ps, &cl, &why);
  if (rv == 0) {
    if (cl < -1)
      abort();
    check_request(&h, &ps, cl);
  } else if (rv != H3G_ERR_PROTO || why == NULL || why[0] == 0) {
    abort();
  }
  why = NULL;
  rv = h3g_trailers_validate(&h, &why);
  if (rv != 0 && (rv != H3G_ERR_PROTO || why == NULL))
    abort();

  h3g_field *out = malloc(sizeof(*out) * (h.nfields + 1));
  size_t n = 0;
  if (out == NULL)
    abort();
  rv = h3g_response_filter(&h, out, h.nfields, &n);
  if (rv == 0) {
    if (n > h.nfields)
      abort();
    for (size_t i = 0; i < n; i++)
      if (h3g_field_flags(out[i].name, out[i].namelen) & H3G_FIELD_HOP_BY_HOP)
        abort();
  } else if (rv != H3G_ERR_TOOBIG) {
    abort();
  }
  free(out);
  h3g_headers_free(&h);
  return 0;
}
