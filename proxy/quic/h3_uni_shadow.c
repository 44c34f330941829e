/*
 * Client unidirectional stream shadow: stream types, control frames, QPACK
 * encoder instructions (h3_uni_shadow.h says which rules and why).
 *
 * Bytes that pass go to the emit function in as few calls as possible:
 * stretches of the input that pass unchanged are handed on as they are;
 * the shadow's own copies (a stream type or frame header split across
 * calls, a held frame) are handed on when their turn comes, always in
 * stream order.
 */
#include "h3_uni_shadow.h"

#include <string.h>

#include <nghttp3/nghttp3.h>

#include "common.h"
#include "priority.h"

/* Stream types (RFC 9114 §6.2, RFC 9204 §4.2). */
enum {
  STREAM_CONTROL = 0x00,
  STREAM_PUSH = 0x01,
  STREAM_ENCODER = 0x02,
  STREAM_DECODER = 0x03,
};

/* Frame types (RFC 9114 §7.2, §11.2.1; RFC 9218 §7.2). */
enum {
  FRAME_DATA = 0x00,
  FRAME_HEADERS = 0x01,
  FRAME_H2_PRIORITY = 0x02,
  FRAME_CANCEL_PUSH = 0x03,
  FRAME_SETTINGS = 0x04,
  FRAME_PUSH_PROMISE = 0x05,
  FRAME_H2_PING = 0x06,
  FRAME_GOAWAY = 0x07,
  FRAME_H2_WINDOW_UPDATE = 0x08,
  FRAME_H2_CONTINUATION = 0x09,
  FRAME_MAX_PUSH_ID = 0x0d,
  FRAME_PRIORITY_UPDATE = 0xf0700,
  FRAME_PRIORITY_UPDATE_PUSH = 0xf0701,
};

/* What a slot's stream is. */
enum {
  KIND_TYPE = 0, /* its stream type is still being read */
  KIND_CONTROL,
  KIND_ENCODER,
  KIND_DECODER,
  KIND_OTHER, /* unknown type: nghttp3 stops reading it */
};

/* The control stream's frame layer. */
enum {
  CT_HEADER = 0, /* reading a frame's type and length */
  CT_PASS,       /* a payload that streams through (unknown frames) */
  CT_SETTINGS,   /* a SETTINGS payload: streams through, read on the way */
  CT_HOLD,       /* a payload held until whole */
};

/* QPACK "Set Dynamic Table Capacity" to 0: '001' and a 5-bit prefix 0. */
#define QPACK_SET_CAPACITY_0 0x20

void h3g_h3_uni_shadow_init(h3g_h3_uni_shadow *u, uint64_t max_bidi_streams) {
  *u = (h3g_h3_uni_shadow){.max_bidi_streams = max_bidi_streams};
  for (size_t i = 0; i < H3G_H3_UNI_SLOTS; i++)
    u->slots[i].id = -1;
}

void h3g_h3_uni_shadow_set_max_streams(h3g_h3_uni_shadow *u, uint64_t max) {
  u->max_bidi_streams = max;
}

static h3g_h3_uni_slot *slot_find(h3g_h3_uni_shadow *u, int64_t id) {
  for (size_t i = 0; i < H3G_H3_UNI_SLOTS; i++)
    if (u->slots[i].id == id)
      return &u->slots[i];
  return NULL;
}

static int fail(h3g_h3_uni_shadow *u, int error, const char *why) {
  u->error = error;
  u->why = why;
  return error;
}

/* ---- emitting ---- */

/* One feed's output: a stretch of the input waiting to be handed on. */
typedef struct out {
  h3g_h3_uni_emit_fn emit;
  void *ud;
  int64_t id;
  const uint8_t *from; /* NULL: nothing pending */
} out;

/* Hands on the pending stretch of input up to `to`. */
static int flush(out *o, const uint8_t *to) {
  const uint8_t *from = o->from;
  o->from = NULL;
  if (from == NULL || to == from)
    return 0;
  return o->emit(o->ud, o->id, from, (size_t)(to - from), 0);
}

/* Hands on bytes of the shadow's own (after the pending stretch). */
static int emit_copy(out *o, const uint8_t *p, size_t n) {
  return n == 0 ? 0 : o->emit(o->ud, o->id, p, n, 0);
}

/* ---- the control stream ---- */

/*
 * A control frame header was read (u->ctrl.type, .len, and its bytes in
 * .hd). Decides by the frame type, hands on the header of a frame that
 * streams through and sets the state for its payload. Returns 0 or an
 * error.
 */
static int ctrl_on_header(h3g_h3_uni_shadow *u, out *o) {
  uint64_t type = u->ctrl.type, len = u->ctrl.len;

  /* RFC 9114 §6.2.1, §7.2.4: SETTINGS first, and only once. */
  if (!u->settings_seen && type != FRAME_SETTINGS)
    return fail(u, NGHTTP3_ERR_H3_MISSING_SETTINGS,
                "the control stream does not start with SETTINGS");
  switch (type) {
  case FRAME_SETTINGS:
    if (u->settings_seen)
      return fail(u, NGHTTP3_ERR_H3_FRAME_UNEXPECTED,
                  "a second SETTINGS frame");
    u->settings_seen = 1;
    u->ctrl.state = CT_SETTINGS;
    u->ctrl.vlen = u->ctrl.have_id = u->ctrl.nseen = 0;
    return emit_copy(o, u->ctrl.hd, u->ctrl.hdsize);
  case FRAME_DATA:
    return fail(u, NGHTTP3_ERR_H3_FRAME_UNEXPECTED,
                "DATA on the control stream");
  case FRAME_HEADERS:
    return fail(u, NGHTTP3_ERR_H3_FRAME_UNEXPECTED,
                "HEADERS on the control stream");
  case FRAME_PUSH_PROMISE:
    /* §7.2.5: a client never sends PUSH_PROMISE, on any stream. */
    return fail(u, NGHTTP3_ERR_H3_FRAME_UNEXPECTED,
                "PUSH_PROMISE from a client");
  case FRAME_H2_PRIORITY:
  case FRAME_H2_PING:
  case FRAME_H2_WINDOW_UPDATE:
  case FRAME_H2_CONTINUATION:
    /* §7.2.8: HTTP/2 frame types without an HTTP/3 meaning. */
    return fail(u, NGHTTP3_ERR_H3_FRAME_UNEXPECTED, "an HTTP/2 frame type");
  case FRAME_CANCEL_PUSH:
  case FRAME_GOAWAY:
  case FRAME_MAX_PUSH_ID:
    /* Exactly one integer (§7.1): 1 to 8 bytes. */
    if (len == 0 || len > 8)
      return fail(u, NGHTTP3_ERR_H3_FRAME_ERROR,
                  "a CANCEL_PUSH, GOAWAY or MAX_PUSH_ID frame whose payload "
                  "is not one integer");
    u->ctrl.state = CT_HOLD;
    return 0;
  case FRAME_PRIORITY_UPDATE:
  case FRAME_PRIORITY_UPDATE_PUSH:
    if (len == 0)
      return fail(u, NGHTTP3_ERR_H3_FRAME_ERROR,
                  "an empty PRIORITY_UPDATE frame");
    u->ctrl.state = CT_HOLD;
    return 0;
  default:
    /* Unknown and reserved types are ignored (§9); nghttp3 skips them. */
    u->ctrl.state = CT_PASS;
    return emit_copy(o, u->ctrl.hd, u->ctrl.hdsize);
  }
}

/* One whole integer of a SETTINGS payload. Returns 0 or an error. */
static int ctrl_on_setting_int(h3g_h3_uni_shadow *u, uint64_t v) {
  if (u->ctrl.have_id) {
    /* A value: the ones nghttp3 knows it checks itself. */
    u->ctrl.have_id = 0;
    return 0;
  }
  u->ctrl.have_id = 1;
  /* §7.2.4.1: HTTP/2 settings without an HTTP/3 counterpart. */
  if (v >= 0x02 && v <= 0x05)
    return fail(u, NGHTTP3_ERR_H3_SETTINGS_ERROR, "an HTTP/2 setting");
  /* §7.2.4: "MUST NOT occur more than once"; a receiver MAY refuse it. */
  for (size_t i = 0; i < u->ctrl.nseen; i++)
    if (u->ctrl.seen[i] == v)
      return fail(u, NGHTTP3_ERR_H3_SETTINGS_ERROR, "a setting given twice");
  if (u->ctrl.nseen < H3G_H3_UNI_SETTINGS_SEEN)
    u->ctrl.seen[u->ctrl.nseen++] = v;
  return 0;
}

/* Reads n bytes of a SETTINGS payload. Returns 0 or an error. */
static int ctrl_settings_bytes(h3g_h3_uni_shadow *u, const uint8_t *p,
                               size_t n) {
  for (size_t i = 0; i < n; i++) {
    u->ctrl.v[u->ctrl.vlen++] = p[i];
    if (u->ctrl.vlen < h3g_varint_len(u->ctrl.v[0]))
      continue;
    u->ctrl.vlen = 0;
    int rv = ctrl_on_setting_int(u, h3g_varint_get(u->ctrl.v));
    if (rv != 0)
      return rv;
  }
  return 0;
}

/* A PRIORITY_UPDATE for a request stream, held whole (or its first
 * H3G_H3_UNI_HOLD_MAX bytes), with a valid element ID at the front. */
static int ctrl_priority_update(h3g_h3_uni_shadow *u, out *o, uint64_t id,
                                size_t idlen) {
  /* RFC 9218 §7.2: a request stream, within the stream limit. */
  if ((id & 0x3) != 0)
    return fail(u, NGHTTP3_ERR_H3_ID_ERROR,
                "a PRIORITY_UPDATE for a stream that is not a request stream");
  if (id / 4 + 1 > u->max_bidi_streams)
    return fail(u, NGHTTP3_ERR_H3_ID_ERROR,
                "a PRIORITY_UPDATE for a stream beyond the stream limit");
  if (u->ctrl.len > H3G_H3_UNI_HOLD_MAX)
    return 0; /* too long to act on: ignored */
  h3g_priority pri = H3G_PRIORITY_DEFAULT;
  if (h3g_priority_parse(&pri, u->ctrl.held + idlen,
                         (size_t)u->ctrl.len - idlen) < 0)
    return 0; /* not a Dictionary: ignored (h3_uni_shadow.h says why) */

  /* The canonical frame, all parameters given: type (4 bytes), length,
   * element ID, "u=N" and maybe ", i". */
  uint8_t f[4 + 1 + 8 + 6];
  char value[6] = {'u', '=', (char)('0' + pri.urgency), ',', ' ', 'i'};
  size_t vlen = pri.incremental ? 6 : 3;
  uint8_t idbuf[8];
  size_t idn = h3g_varint_put(idbuf, id);
  size_t n = h3g_varint_put(f, FRAME_PRIORITY_UPDATE);
  f[n++] = (uint8_t)(idn + vlen); /* at most 14: one byte */
  memcpy(f + n, idbuf, idn);
  memcpy(f + n + idn, value, vlen);
  return emit_copy(o, f, n + idn + vlen);
}

/* A held frame is whole. Returns 0 or an error. */
static int ctrl_on_held(h3g_h3_uni_shadow *u, out *o) {
  const uint8_t *h = u->ctrl.held;
  size_t len = (size_t)H3G_MIN(u->ctrl.len, (uint64_t)H3G_H3_UNI_HOLD_MAX);
  size_t n = h3g_varint_len(h[0]);
  uint64_t v = n <= len ? h3g_varint_get(h) : 0;

  switch (u->ctrl.type) {
  case FRAME_PRIORITY_UPDATE:
  case FRAME_PRIORITY_UPDATE_PUSH:
    if (n > u->ctrl.len)
      return fail(u, NGHTTP3_ERR_H3_FRAME_ERROR,
                  "a PRIORITY_UPDATE frame that ends inside its element ID");
    if (u->ctrl.type == FRAME_PRIORITY_UPDATE_PUSH)
      return fail(u, NGHTTP3_ERR_H3_ID_ERROR,
                  "a PRIORITY_UPDATE for a push: none was ever promised");
    return ctrl_priority_update(u, o, v, n);
  default: break;
  }

  if (n != len)
    return fail(u, NGHTTP3_ERR_H3_FRAME_ERROR,
                "a CANCEL_PUSH, GOAWAY or MAX_PUSH_ID frame whose payload "
                "is not one integer");
  switch (u->ctrl.type) {
  case FRAME_CANCEL_PUSH:
    /* §7.2.3: a push ID no PUSH_PROMISE mentioned; this server never
     * pushes. */
    return fail(u, NGHTTP3_ERR_H3_ID_ERROR,
                "a CANCEL_PUSH: no push was ever promised");
  case FRAME_GOAWAY:
    /* §5.2: a client's GOAWAY carries a push ID, never increasing. */
    if (u->goaway_seen && v > u->goaway_id)
      return fail(u, NGHTTP3_ERR_H3_ID_ERROR,
                  "a GOAWAY with a larger ID than an earlier one");
    u->goaway_seen = 1;
    u->goaway_id = v;
    break;
  case FRAME_MAX_PUSH_ID:
    /* §7.2.7: it cannot go down. */
    if (u->max_push_seen && v < u->max_push_id)
      return fail(u, NGHTTP3_ERR_H3_ID_ERROR,
                  "a MAX_PUSH_ID smaller than an earlier one");
    u->max_push_seen = 1;
    u->max_push_id = v;
    break;
  default: break;
  }
  int rv = emit_copy(o, u->ctrl.hd, u->ctrl.hdsize);
  return rv != 0 ? rv : emit_copy(o, h, len);
}

/* Control stream bytes after its stream type. */
static int ctrl_feed(h3g_h3_uni_shadow *u, out *o, const uint8_t *p,
                     const uint8_t *end) {
  int rv;

  /* A payload that streams through may continue from the last call. */
  if (u->ctrl.state == CT_PASS || u->ctrl.state == CT_SETTINGS)
    o->from = p;
  while (p != end) {
    switch (u->ctrl.state) {
    case CT_HEADER: {
      if (u->ctrl.hdlen == 0 && (rv = flush(o, p)) != 0)
        return rv;
      u->ctrl.hd[u->ctrl.hdlen++] = *p++;
      size_t tlen = h3g_varint_len(u->ctrl.hd[0]);
      if (u->ctrl.hdlen <= tlen ||
          u->ctrl.hdlen < tlen + h3g_varint_len(u->ctrl.hd[tlen]))
        break;
      u->ctrl.type = h3g_varint_get(u->ctrl.hd);
      u->ctrl.len = u->ctrl.left = h3g_varint_get(u->ctrl.hd + tlen);
      u->ctrl.hdsize = u->ctrl.hdlen;
      if ((rv = ctrl_on_header(u, o)) != 0)
        return rv;
      u->ctrl.hdlen = 0;
      if (u->ctrl.state != CT_HOLD)
        o->from = p; /* the payload streams through */
      if (u->ctrl.left == 0 && u->ctrl.state != CT_HOLD)
        u->ctrl.state = CT_HEADER; /* an empty SETTINGS or unknown frame */
      break;
    }
    case CT_PASS:
    case CT_SETTINGS: {
      size_t n = (size_t)H3G_MIN(u->ctrl.left, (uint64_t)(end - p));
      if (u->ctrl.state == CT_SETTINGS &&
          (rv = ctrl_settings_bytes(u, p, n)) != 0)
        return rv;
      p += n;
      u->ctrl.left -= n;
      if (u->ctrl.left > 0)
        break;
      if (u->ctrl.state == CT_SETTINGS && (u->ctrl.vlen > 0 || u->ctrl.have_id))
        return fail(u, NGHTTP3_ERR_H3_FRAME_ERROR,
                    "a SETTINGS frame that ends inside a setting");
      u->ctrl.state = CT_HEADER;
      break;
    }
    case CT_HOLD: {
      size_t n = (size_t)H3G_MIN(u->ctrl.left, (uint64_t)(end - p));
      uint64_t at = u->ctrl.len - u->ctrl.left;
      if (at < H3G_H3_UNI_HOLD_MAX)
        memcpy(u->ctrl.held + at, p,
               (size_t)H3G_MIN((uint64_t)n, H3G_H3_UNI_HOLD_MAX - at));
      p += n;
      u->ctrl.left -= n;
      if (u->ctrl.left > 0)
        break;
      if ((rv = ctrl_on_held(u, o)) != 0)
        return rv;
      u->ctrl.state = CT_HEADER;
      break;
    }
    default: return fail(u, NGHTTP3_ERR_H3_INTERNAL_ERROR, "shadow state");
    }
  }
  return 0; /* the caller hands on what streams through up to end */
}

/* ---- streams ---- */

/* The stream type of slot s is whole (s->type holds its bytes). */
static int on_stream_type(h3g_h3_uni_shadow *u, h3g_h3_uni_slot *s, out *o) {
  switch (h3g_varint_get(s->type)) {
  case STREAM_CONTROL:
    if (u->have_control)
      return fail(u, NGHTTP3_ERR_H3_STREAM_CREATION_ERROR,
                  "a second control stream");
    u->have_control = 1;
    s->kind = KIND_CONTROL;
    break;
  case STREAM_PUSH:
    return fail(u, NGHTTP3_ERR_H3_STREAM_CREATION_ERROR,
                "a push stream from a client");
  case STREAM_ENCODER:
    if (u->have_encoder)
      return fail(u, NGHTTP3_ERR_H3_STREAM_CREATION_ERROR,
                  "a second QPACK encoder stream");
    u->have_encoder = 1;
    s->kind = KIND_ENCODER;
    break;
  case STREAM_DECODER:
    if (u->have_decoder)
      return fail(u, NGHTTP3_ERR_H3_STREAM_CREATION_ERROR,
                  "a second QPACK decoder stream");
    u->have_decoder = 1;
    s->kind = KIND_DECODER;
    break;
  default:
    /* RFC 9114 §6.2: never a connection error; nghttp3 stops reading it
     * with H3_STREAM_CREATION_ERROR. */
    s->kind = KIND_OTHER;
    break;
  }
  return emit_copy(o, s->type, s->typelen);
}

int h3g_h3_uni_shadow_feed(h3g_h3_uni_shadow *u, int64_t stream_id,
                           const uint8_t *data, size_t len, int fin,
                           h3g_h3_uni_emit_fn emit, void *ud) {
  const uint8_t *p = data, *end = len > 0 ? data + len : data;
  out o = {.emit = emit, .ud = ud, .id = stream_id};
  int rv;

  if (u->error != 0)
    return u->error;
  h3g_h3_uni_slot *s = slot_find(u, stream_id);
  if (s == NULL) {
    if (len == 0)
      return 0; /* ended before its stream type: never existed */
    s = slot_find(u, -1);
    if (s == NULL)
      return fail(u, NGHTTP3_ERR_H3_INTERNAL_ERROR,
                  "more unidirectional streams than the transport allows");
    *s = (h3g_h3_uni_slot){.id = stream_id, .kind = KIND_TYPE};
  }

  while (s->kind == KIND_TYPE && p != end) {
    s->type[s->typelen++] = *p++;
    if (s->typelen == h3g_varint_len(s->type[0]) &&
        (rv = on_stream_type(u, s, &o)) != 0)
      return rv;
  }
  if (s->kind == KIND_TYPE) {
    if (fin)
      s->id = -1; /* §6.2: closed before its header; tolerated */
    return 0;
  }

  switch (s->kind) {
  case KIND_CONTROL:
    if ((rv = ctrl_feed(u, &o, p, end)) != 0)
      return rv;
    break;
  case KIND_ENCODER:
    for (const uint8_t *q = p; q != end; q++)
      if (*q != QPACK_SET_CAPACITY_0)
        return fail(u, NGHTTP3_ERR_QPACK_ENCODER_STREAM_ERROR,
                    "an encoder instruction beyond a dynamic table of "
                    "capacity 0");
    o.from = p;
    break;
  default: o.from = p; break;
  }
  if ((rv = flush(&o, end)) != 0)
    return rv;

  if (!fin)
    return 0;
  if (s->kind == KIND_OTHER) {
    s->id = -1;
    return emit(ud, stream_id, end, 0, 1);
  }
  return fail(u, NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM,
              s->kind == KIND_CONTROL   ? "the control stream ended"
              : s->kind == KIND_ENCODER ? "the QPACK encoder stream ended"
                                        : "the QPACK decoder stream ended");
}

int h3g_h3_uni_shadow_reset(h3g_h3_uni_shadow *u, int64_t stream_id) {
  h3g_h3_uni_slot *s = slot_find(u, stream_id);
  if (u->error != 0)
    return u->error;
  if (s == NULL)
    return 0;
  switch (s->kind) {
  case KIND_CONTROL:
    return fail(u, NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM,
                "the control stream was reset");
  case KIND_ENCODER:
  case KIND_DECODER:
    return fail(u, NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM,
                "a QPACK stream was reset");
  default: s->id = -1; return 0;
  }
}

void h3g_h3_uni_shadow_closed(h3g_h3_uni_shadow *u, int64_t stream_id) {
  h3g_h3_uni_slot *s = slot_find(u, stream_id);
  if (s != NULL)
    s->id = -1;
}
