/*
 * libFuzzer target for the HTTP/1.1 response parser (proxy/upstream/h1_codec.c).
 *
 * Input: one control byte, then the bytes an upstream sends. The control
 * byte picks HEAD or not, the head cap, and a piece size. Each input is
 * parsed whole (one read), one byte per read, in pieces of the chosen
 * size, and in reads of changing sizes (1 to 64 bytes, a sequence that the
 * control byte and the input's length pick), each followed by finish (the
 * connection's EOF) as the bridge does; the four must agree (the parser's
 * results may not depend on how TCP cut the stream): the same sequence of
 * events (heads with their status and fields, trailers, the end; body
 * bytes compared as one stream, since where a read ends splits them),
 * the same verdict and the same bytes used. The callbacks check what they
 * are promised.
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
  /* every event in order, body bytes as one run between other events */
  uint64_t events;
  int nevents;
  int in_body;
} outcome;

enum { EV_HEAD = 1, EV_INTERIM, EV_BODY, EV_TRAILERS, EV_COMPLETE };

static uint64_t mix(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* Starts an event record in the sequence digest (a body run continues). */
static void event(outcome *o, uint8_t type) {
  if (type == EV_BODY && o->in_body)
    return;
  o->in_body = type == EV_BODY;
  o->nevents++;
  o->events = mix(o->events, &type, 1);
}

static void event_fields(outcome *o, const h3g_headers *h) {
  for (size_t i = 0; i < h->nfields; i++) {
    o->events = mix(o->events, h->fields[i].name, h->fields[i].namelen);
    o->events = mix(o->events, (const uint8_t *)":", 1);
    o->events = mix(o->events, h->fields[i].value, h->fields[i].valuelen);
    o->events = mix(o->events, (const uint8_t *)"\n", 1);
  }
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
  event(o, interim ? EV_INTERIM : EV_HEAD);
  uint8_t st[2] = {(uint8_t)(status >> 8), (uint8_t)status};
  o->events = mix(o->events, st, 2);
  event_fields(o, fields);
  check_fields(o, fields);
  return 0;
}

static int on_body(void *ud, const uint8_t *d, size_t len) {
  outcome *o = ud;
  if (len == 0 || o->heads != 1 || o->completes != 0)
    abort();
  o->body_len += len;
  o->body_hash = mix(o->body_hash, d, len);
  event(o, EV_BODY);
  o->events = mix(o->events, d, len);
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
  event(o, EV_TRAILERS);
  event_fields(o, fields);
  check_fields(o, fields);
  return 0;
}

static int on_complete(void *ud) {
  outcome *o = ud;
  if (o->heads != 1 || o->completes != 0)
    abort();
  o->completes++;
  event(o, EV_COMPLETE);
  return 0;
}

static const h3g_h1_callbacks cbs = {
    .on_head = on_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
};

/* Read sizes for PIECE_VARY: 1 to 64, from a generator seeded by seed. */
static size_t vary(uint64_t *seed) {
  *seed ^= *seed << 13;
  *seed ^= *seed >> 7;
  *seed ^= *seed << 17;
  return 1 + (size_t)(*seed % 64);
}

#define PIECE_VARY ((size_t)-1)

/* Feeds data in pieces of size piece (0: all at once; PIECE_VARY: sizes
 * from vary()), then finishes. */
static void run(h3g_h1_parser *p, const uint8_t *data, size_t size, int head,
                size_t piece, uint64_t seed, outcome *o) {
  memset(o, 0, sizeof(*o));
  h3g_h1_parser_reset(p, head);
  size_t off = 0;
  while (off < size) {
    size_t want = piece == PIECE_VARY ? vary(&seed) : piece;
    size_t n = want ? H3G_MIN(want, size - off) : size - off;
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
         a->field_hash == b->field_hash && a->used == b->used &&
         a->events == b->events && a->nevents == b->nevents;
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
  outcome whole, bytes, pieces, varied;
  uint64_t seed = 0x9e3779b97f4a7c15ull ^ ((uint64_t)ctl << 32) ^ size;
  if (h3g_h1_parser_new(&p, NULL, NULL, cap) != 0)
    return 0;
  h3g_h1_parser_free(p);
  if (h3g_h1_parser_new(&p, &cbs, &whole, cap) != 0)
    return 0;
  run(p, data, size, head, 0, 0, &whole);
  h3g_h1_parser_free(p);

  if (h3g_h1_parser_new(&p, &cbs, &bytes, cap) != 0)
    return 0;
  run(p, data, size, head, 1, 0, &bytes);
  h3g_h1_parser_free(p);

  /* The same parser object again, as a pooled connection reuses it. */
  if (h3g_h1_parser_new(&p, &cbs, &pieces, cap) != 0)
    return 0;
  run(p, data, size, head, piece, 0, &pieces);
  run(p, data, size, head, piece, 0, &pieces);
  h3g_h1_parser_free(p);

  if (h3g_h1_parser_new(&p, &cbs, &varied, cap) != 0)
    return 0;
  run(p, data, size, head, PIECE_VARY, seed, &varied);
  h3g_h1_parser_free(p);

  if (!same(&whole, &bytes) || !same(&whole, &pieces) ||
      !same(&whole, &varied))
    abort();
  return 0;
}
