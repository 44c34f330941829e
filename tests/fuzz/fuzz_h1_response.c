/*
 * libFuzzer target for the HTTP/1.1 response parser (proxy/h1_codec.c).
 *
 * Input: one control byte, then the bytes an upstream sends. The control
 * byte picks HEAD or not, the head cap, and a second way to cut the input
 * into feeds. Each input is parsed whole, one byte per feed, and in the
 * chosen pieces, each followed by finish; the three must agree (the
 * parser's results may not depend on how TCP cut the stream), and the
 * callbacks check what they are promised.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h1_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct outcome {
  int rv;
  int complete;
  int keep_alive;
  int heads; /* final heads */
  int interims;
  int trailers;
  int completes;
  int last_status;
  uint64_t body_len;
  uint64_t body_hash;
  uint64_t field_hash;
  size_t used;
} outcome;

static uint64_t mix(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* Reads every byte of every field (so that a dangling pointer shows under
 * ASan) and runs the forwarding filter as the bridge does. */
static void check_fields(outcome *o, h3g_headers *h) {
  for (size_t i = 0; i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    if (f->namelen == 0)
      abort();
    o->field_hash = mix(o->field_hash, f->name, f->namelen);
    o->field_hash = mix(o->field_hash, f->value, f->valuelen);
    for (size_t j = 0; j < f->valuelen; j++)
      if (f->value[j] == '\r' || f->value[j] == '\n' || f->value[j] == 0)
        abort();
    if (f->valuelen &&
        (f->value[0] == ' ' || f->value[0] == '\t' ||
         f->value[f->valuelen - 1] == ' ' || f->value[f->valuelen - 1] == '\t'))
      abort();
  }
  h3g_field *out = malloc(sizeof(*out) * (h->nfields + 1));
  size_t n = 0;
  if (out == NULL)
    abort();
  if (h3g_response_filter(h, out, h->nfields + 1, &n) == 0) {
    for (size_t i = 0; i < n; i++) {
      if (h3g_field_flags(out[i].name, out[i].namelen) & H3G_FIELD_HOP_BY_HOP)
        abort();
      for (size_t j = 0; j < out[i].namelen; j++)
        if (out[i].name[j] >= 'A' && out[i].name[j] <= 'Z')
          abort();
    }
  }
  free(out);
}

static int on_head(void *ud, int status, h3g_headers *fields, int interim) {
  outcome *o = ud;
  if (status < 100 || status > 599 || status == 101 ||
      interim != (status < 200) || o->heads != 0 || o->completes != 0)
    abort();
  if (interim)
    o->interims++;
  else
    o->heads++;
  o->last_status = status;
  check_fields(o, fields);
  return 0;
}

static int on_body(void *ud, const uint8_t *d, size_t len) {
  outcome *o = ud;
  if (len == 0 || o->heads != 1 || o->completes != 0)
    abort();
  o->body_len += len;
  o->body_hash = mix(o->body_hash, d, len);
  return 0;
}

static int on_trailers(void *ud, h3g_headers *fields) {
  outcome *o = ud;
  if (o->heads != 1 || o->completes != 0 || fields->nfields == 0)
    abort();
  for (size_t i = 0; i < fields->nfields; i++)
    if (h3g_field_flags(fields->fields[i].name, fields->fields[i].namelen) &
        (H3G_FIELD_HOP_BY_HOP | H3G_FIELD_FRAMING))
      abort();
  o->trailers++;
  check_fields(o, fields);
  return 0;
}

static int on_complete(void *ud) {
  outcome *o = ud;
  if (o->heads != 1 || o->completes != 0)
    abort();
  o->completes++;
  return 0;
}

static const h3g_h1_callbacks cbs = {
    .on_head = on_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
};

/* Feeds data in pieces of the sizes step() gives, then finishes. */
static void run(h3g_h1_parser *p, const uint8_t *data, size_t size, int head,
                size_t piece, outcome *o) {
  memset(o, 0, sizeof(*o));
  h3g_h1_parser_reset(p, head);
  size_t off = 0;
  while (off < size) {
    size_t n = piece ? H3G_MIN(piece, size - off) : size - off;
    size_t c = 0;
    int rv = h3g_h1_parser_feed(p, data + off, n, &c);
    if (c > n)
      abort();
    o->used += c;
    if (rv != 0) {
      o->rv = rv;
      /* errors are sticky */
      if (h3g_h1_parser_feed(p, data, size, &c) != rv ||
          h3g_h1_parser_finish(p) != rv)
        abort();
      break;
    }
    if (h3g_h1_parser_complete(p))
      break;
    if (c != n)
      abort();
    off += n;
  }
  if (o->rv == 0)
    o->rv = h3g_h1_parser_finish(p);
  o->complete = h3g_h1_parser_complete(p);
  o->keep_alive = h3g_h1_parser_keep_alive(p);
  if (o->complete != (o->completes == 1))
    abort();
  if (o->keep_alive && !o->complete)
    abort();
  if (o->rv != 0 && o->complete)
    abort();
  if (h3g_h1_parser_reason(p) == NULL)
    abort();
}

/*
 * Whether a response is refused may not depend on the cuts, but which
 * error is found first may: a value over the cap that also holds a NUL is
 * H3G_ERR_TOOBIG when it arrives a byte at a time and H3G_ERR_PROTO when
 * llhttp sees the NUL before handing the value over.
 */
static int same(const outcome *a, const outcome *b) {
  if ((a->rv != 0) != (b->rv != 0))
    return 0;
  if (a->rv != 0)
    return 1;
  return a->complete == b->complete && a->keep_alive == b->keep_alive &&
         a->heads == b->heads && a->interims == b->interims &&
         a->trailers == b->trailers && a->last_status == b->last_status &&
         a->body_len == b->body_len && a->body_hash == b->body_hash &&
         a->field_hash == b->field_hash && a->used == b->used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t caps[4] = {64, 256, 4096, 65536};
  if (size < 1)
    return 0;
  uint8_t ctl = data[0];
  data++;
  size--;
  int head = ctl & 1;
  size_t cap = caps[(ctl >> 1) & 3];
  size_t piece = (size_t)(ctl >> 3) + 2; /* 2..33 */

  h3g_h1_parser *p = NULL;
  outcome whole, bytes, pieces;
  if (h3g_h1_parser_new(&p, NULL, NULL, cap) != 0)
    return 0;
  h3g_h1_parser_free(p);
  if (h3g_h1_parser_new(&p, &cbs, &whole, cap) != 0)
    return 0;
  run(p, data, size, head, 0, &whole);
  h3g_h1_parser_free(p);

  if (h3g_h1_parser_new(&p, &cbs, &bytes, cap) != 0)
    return 0;
  run(p, data, size, head, 1, &bytes);
  h3g_h1_parser_free(p);

  /* The same parser object again, as a pooled connection reuses it. */
  if (h3g_h1_parser_new(&p, &cbs, &pieces, cap) != 0)
    return 0;
  run(p, data, size, head, piece, &pieces);
  run(p, data, size, head, piece, &pieces);
  h3g_h1_parser_free(p);

  if (!same(&whole, &bytes) || !same(&whole, &pieces))
    abort();
  return 0;
}
