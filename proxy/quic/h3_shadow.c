/*
 * Request stream shadow: frame layer, field sections, content-length.
 *
 * The frame and message states follow nghttp3's own reading of a request
 * stream (RFC 9114 §4.1): a header section, DATA frames, an optional
 * trailer section, then nothing; frames of unknown type are skipped
 * anywhere. Where nghttp3 refuses the framing itself (DATA before the
 * header section, anything after the trailers, an empty header section),
 * the shadow stops judging: nghttp3 acts on those very bytes, mostly with
 * a connection error, and reads nothing of the stream after them. A stream
 * that ends inside a frame the shadow refuses itself.
 *
 * Field sections are decoded with nghttp3's public QPACK decoder rather
 * than a decoder of our own: the shadow must see exactly the fields nghttp3
 * will see (Huffman padding, integer overflow, string limits), or a field
 * read two ways could slip through.
 */
#include "h3_shadow.h"

#include "common.h"
#include "http_headers.h"

enum {
  FRAME_DATA = 0x0,
  FRAME_HEADERS = 0x1,
};

/* Frame layer. */
enum {
  SH_FRAME_HEADER = 0, /* reading a frame's type and length */
  SH_HEADERS,          /* decoding a HEADERS payload */
  SH_SKIP,             /* DATA or unknown payload */
  SH_OFF,              /* nghttp3 judges the rest (see above) */
  SH_MALFORMED,        /* refused; sticky */
};

/* Message layer. */
enum {
  MSG_HEADER = 0, /* before the end of the header section */
  MSG_BODY,       /* after it: DATA, trailers, or the end */
  MSG_DONE,       /* after the trailer section */
};

/* Length of the frame header in sh->hd once it is complete, else 0. */
static size_t frame_header_len(const h3g_h3_shadow *sh) {
  size_t tlen = h3g_varint_len(sh->hd[0]);
  if (sh->hdlen <= tlen)
    return 0;
  size_t n = tlen + h3g_varint_len(sh->hd[tlen]);
  return sh->hdlen == n ? n : 0;
}

int h3g_h3_shadow_decoder_new(nghttp3_qpack_decoder **pdec) {
  return nghttp3_qpack_decoder_new(pdec, 0, 0, nghttp3_mem_default());
}

void h3g_h3_shadow_init(h3g_h3_shadow *sh, int64_t stream_id) {
  *sh = (h3g_h3_shadow){.stream_id = stream_id, .content_length = -1};
}

void h3g_h3_shadow_free(h3g_h3_shadow *sh) {
  nghttp3_qpack_stream_context_del(sh->sctx);
  sh->sctx = NULL;
  sh->state = SH_OFF;
}

static int refuse(h3g_h3_shadow *sh, const char **why, const char *reason) {
  sh->state = SH_MALFORMED;
  if (why != NULL && reason != NULL)
    *why = reason;
  return H3G_ERR_PROTO;
}

/* A frame header was read. Returns 0, H3G_ERR_PROTO or NGHTTP3_ERR_NOMEM. */
static int on_frame(h3g_h3_shadow *sh, uint64_t type, uint64_t len,
                    const char **why) {
  sh->left = len;
  switch (type) {
  case FRAME_DATA:
    if (sh->msg != MSG_BODY) {
      sh->state = SH_OFF; /* H3_FRAME_UNEXPECTED, from nghttp3 */
      return 0;
    }
    /* Refused at the frame header: the body announces more than the
     * declared length, and none of it needs to be seen. */
    if (sh->content_length >= 0 &&
        len > (uint64_t)sh->content_length - sh->body)
      return refuse(sh, why, "DATA beyond the declared content-length");
    sh->body += len;
    sh->state = len > 0 ? SH_SKIP : SH_FRAME_HEADER;
    return 0;
  case FRAME_HEADERS:
    if (sh->msg == MSG_DONE || (sh->msg == MSG_HEADER && len == 0)) {
      sh->state = SH_OFF; /* nghttp3 fails the connection */
      return 0;
    }
    sh->trailer = sh->msg == MSG_BODY;
    if (len == 0) {
      sh->msg = MSG_DONE; /* an empty trailer section */
      sh->state = SH_FRAME_HEADER;
      return 0;
    }
    if (sh->sctx == NULL &&
        nghttp3_qpack_stream_context_new(&sh->sctx, sh->stream_id,
                                         nghttp3_mem_default()) != 0)
      return NGHTTP3_ERR_NOMEM;
    sh->state = SH_HEADERS;
    return 0;
  default:
    /* Reserved and unknown types are skipped (RFC 9114 §9); the types
     * HTTP/3 forbids on request streams nghttp3 refuses itself. */
    sh->state = len > 0 ? SH_SKIP : SH_FRAME_HEADER;
    return 0;
  }
}

/*
 * Decodes n bytes of a HEADERS payload; last: they end it. Returns 0,
 * H3G_ERR_PROTO with *bad_at set, or the decoder's error.
 *
 * The decoder returns after each field, so every call after the first
 * starts at a field's first byte; *bad_at, where the call that produced a
 * refused field started, is thus that field's start (or, for a field begun
 * in an earlier chunk, p: nothing of it here may pass either).
 */
static int decode(h3g_h3_shadow *sh, nghttp3_qpack_decoder *dec,
                  const uint8_t *p, size_t n, int last, const uint8_t **bad_at,
                  const char **why) {
  for (;;) {
    nghttp3_qpack_nv nv;
    uint8_t flags = NGHTTP3_QPACK_DECODE_FLAG_NONE;
    const uint8_t *start = p;
    nghttp3_ssize nread = nghttp3_qpack_decoder_read_request(
        dec, sh->sctx, &nv, &flags, p, n, last);
    if (nread < 0)
      return (int)nread;
    p += nread;
    n -= (size_t)nread;

    if (flags & NGHTTP3_QPACK_DECODE_FLAG_EMIT) {
      nghttp3_vec name = nghttp3_rcbuf_get_buf(nv.name);
      nghttp3_vec value = nghttp3_rcbuf_get_buf(nv.value);
      const char *bad = NULL;
      int rv =
          h3g_request_field_check(name.base, name.len, value.base, value.len,
                                  sh->trailer, &sh->content_length, &bad);
      nghttp3_rcbuf_decref(nv.name);
      nghttp3_rcbuf_decref(nv.value);
      if (rv != 0) {
        *bad_at = start;
        return refuse(sh, why, bad);
      }
      continue;
    }
    if (flags & NGHTTP3_QPACK_DECODE_FLAG_BLOCKED) {
      /* Only a dynamic table blocks, and the decoder has none: it refuses
       * such a section before it could block. Never reached. */
      return NGHTTP3_ERR_QPACK_DECOMPRESSION_FAILED;
    }
    if (flags & NGHTTP3_QPACK_DECODE_FLAG_FINAL) {
      nghttp3_qpack_stream_context_reset(sh->sctx);
      sh->msg = sh->trailer ? MSG_DONE : MSG_BODY;
    }
    /* Without EMIT the decoder took every byte (or ended the section). */
    return 0;
  }
}

/* The stream ended at a frame boundary or inside a frame. */
static int on_fin(h3g_h3_shadow *sh, const char **why) {
  if (sh->state != SH_FRAME_HEADER || sh->hdlen > 0) {
    /* RFC 9114 §7.1: a truncated last frame is H3_FRAME_ERROR (nghttp3
     * 1.8 says H3_GENERAL_PROTOCOL_ERROR when the type is cut). */
    sh->state = SH_OFF;
    return NGHTTP3_ERR_H3_FRAME_ERROR;
  }
  if (sh->msg == MSG_HEADER) {
    sh->state = SH_OFF; /* no request: nghttp3's call */
    return 0;
  }
  if (sh->content_length >= 0 && sh->body != (uint64_t)sh->content_length)
    return refuse(sh, why, "body shorter than the declared content-length");
  sh->state = SH_OFF;
  return 0;
}

int h3g_h3_shadow_feed(h3g_h3_shadow *sh, nghttp3_qpack_decoder *dec,
                       const uint8_t *data, size_t len, int fin, size_t *pgood,
                       const char **why) {
  const uint8_t *p = data, *end = len > 0 ? data + len : data;
  /* Where the frame header being read started (data if in a past chunk). */
  const uint8_t *hd_at = data;
  int rv;

  *pgood = len;
  while (p != end) {
    switch (sh->state) {
    case SH_FRAME_HEADER: {
      if (sh->hdlen == 0)
        hd_at = p;
      sh->hd[sh->hdlen++] = *p++;
      size_t n = frame_header_len(sh);
      if (n == 0)
        break;
      uint64_t type = h3g_varint_get(sh->hd);
      uint64_t flen = h3g_varint_get(sh->hd + h3g_varint_len(sh->hd[0]));
      sh->hdlen = 0;
      rv = on_frame(sh, type, flen, why);
      if (rv == H3G_ERR_PROTO)
        *pgood = (size_t)(hd_at - data);
      if (rv != 0)
        return rv;
      break;
    }
    case SH_HEADERS: {
      size_t n = (size_t)H3G_MIN(sh->left, (uint64_t)(end - p));
      const uint8_t *bad_at = p;
      sh->left -= n;
      rv = decode(sh, dec, p, n, sh->left == 0, &bad_at, why);
      if (rv == H3G_ERR_PROTO)
        *pgood = (size_t)(bad_at - data);
      if (rv != 0)
        return rv;
      p += n;
      if (sh->left == 0)
        sh->state = SH_FRAME_HEADER;
      break;
    }
    case SH_SKIP: {
      size_t n = (size_t)H3G_MIN(sh->left, (uint64_t)(end - p));
      sh->left -= n;
      p += n;
      if (sh->left == 0)
        sh->state = SH_FRAME_HEADER;
      break;
    }
    case SH_MALFORMED: *pgood = 0; return H3G_ERR_PROTO;
    case SH_OFF:
    default: return 0;
    }
  }
  if (sh->state == SH_MALFORMED) {
    *pgood = 0;
    return H3G_ERR_PROTO;
  }
  if (fin && sh->state != SH_OFF)
    return on_fin(sh, why);
  return 0;
}
