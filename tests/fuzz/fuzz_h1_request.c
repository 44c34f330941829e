/*
 * libFuzzer target for the HTTP/1.1 request parser (proxy/upstream/h1_codec.c), as
 * the TCP listener's session drives it.
 *
 * Input: one control byte (the head cap and a feed size), then the bytes a
 * client sends. Each input is parsed whole, one byte per feed, and in
 * pieces of the chosen size, re-feeding what a pause left, over as many
 * requests as the input holds; the three runs must agree (see same()),
 * and the callbacks check what they are promised.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h1_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct outcome {
  int rv;
  int heads, completes, trailers;
  int in_body;
  uint64_t body_len, hash;
} outcome;

static uint64_t mix(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

static int on_head(void *ud, h3g_h1_request_head *h) {
  outcome *o = ud;
  if (o->in_body || h->targetlen == 0 || h->version_minor > 1 ||
      h->body < -1)
    abort();
  for (size_t i = 0; i < h->fields->nfields; i++) {
    const h3g_field *f = &h->fields->fields[i];
    if (f->namelen == 0)
      abort();
    for (size_t j = 0; j < f->valuelen; j++)
      if (f->value[j] == '\r' || f->value[j] == '\n' || f->value[j] == 0)
        abort();
    o->hash = mix(o->hash, f->name, f->namelen);
    o->hash = mix(o->hash, f->value, f->valuelen);
  }
  o->hash = mix(o->hash, h->target, h->targetlen);
  o->hash = mix(o->hash, (const uint8_t *)h->method, strlen(h->method));
  o->heads++;
  o->in_body = h->body != 0;
  return 0;
}

static int on_body(void *ud, const uint8_t *d, size_t n) {
  outcome *o = ud;
  if (n == 0)
    abort();
  o->body_len += n;
  o->hash = mix(o->hash, d, n);
  return 0;
}

static int on_trailers(void *ud, h3g_headers *t) {
  outcome *o = ud;
  o->trailers += (int)t->nfields;
  return 0;
}

static int on_complete(void *ud) {
  outcome *o = ud;
  o->completes++;
  o->in_body = 0;
  return 0;
}

static const h3g_h1_request_callbacks cbs = {
    .on_head = on_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
};

static void run(const uint8_t *d, size_t n, size_t step, size_t cap,
                outcome *o) {
  h3g_h1_request_parser *p;
  memset(o, 0, sizeof(*o));
  if (h3g_h1_request_parser_new(&p, &cbs, o, cap) != 0)
    abort();
  size_t off = 0;
  int stalls = 0;
  while (off < n && stalls < 4) {
    if (h3g_h1_request_parser_complete(p))
      h3g_h1_request_parser_reset(p);
    size_t len = step == 0 ? n - off : (step < n - off ? step : n - off);
    size_t used = 0;
    o->rv = h3g_h1_request_parser_feed(p, d + off, len, &used);
    if (o->rv != 0)
      break;
    if (used > len)
      abort();
    stalls = used == 0 ? stalls + 1 : 0;
    off += used;
  }
  h3g_h1_request_parser_free(p);
}

/*
 * Whether a request is refused, and how many requests completed before,
 * may not depend on the cuts; which error is found first may (a value
 * over the cap that also holds a control byte is H3G_ERR_TOOBIG a byte at
 * a time, H3G_ERR_PROTO when llhttp sees the byte before handing the value
 * over), and so may the body bytes delivered before the error.
 */
static int same(const outcome *a, const outcome *b) {
  if ((a->rv != 0) != (b->rv != 0) || a->completes != b->completes)
    return 0;
  if (a->rv != 0)
    return 1;
  return a->heads == b->heads && a->body_len == b->body_len &&
         a->trailers == b->trailers && a->hash == b->hash;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  outcome a, b, c;
  if (size < 1)
    return 0;
  size_t cap = 256u << (data[0] & 7);
  size_t step = 1 + (data[0] >> 3);
  data++;
  size--;
  run(data, size, 0, cap, &a);
  run(data, size, 1, cap, &b);
  run(data, size, step, cap, &c);
  if (!same(&a, &b) || !same(&a, &c))
    abort();
  return 0;
}
