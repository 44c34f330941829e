/*
 * The shadow of an HTTP/3 request stream: its frames and field sections,
 * checked before nghttp3 sees them.
 *
 * nghttp3 silently drops request fields it finds invalid (an empty name,
 * CR, LF, NUL, SP or ":" in a name, CR, LF or NUL in a value, whitespace
 * around a value, a host that is not an authority) and hands on the rest,
 * so the gateway would forward a repaired request; and it treats a body
 * that disagrees with content-length as a connection error. RFC 9114
 * §4.1.2 wants both refused as malformed, as stream errors. The shadow
 * parses the frame layer of the stream incrementally, decodes every HEADERS
 * payload with a QPACK decoder of its own (the same library code as
 * nghttp3's, without a dynamic table: the session advertises
 * SETTINGS_QPACK_MAX_TABLE_CAPACITY 0, so each field section is
 * self-contained), checks each field with h3g_request_field_check(), and
 * compares the DATA payload with the declared content-length.
 *
 * Frame order it leaves to nghttp3, which refuses it itself: after a frame
 * it cannot follow it stops checking the stream. A field section it cannot
 * decode is a connection error, reported as nghttp3 would report it; a
 * stream that ends inside a frame is one too (H3_FRAME_ERROR, RFC 9114
 * §7.1), which nghttp3 1.8 misnames when the frame type is cut.
 *
 * Cost: no allocation but one QPACK stream context per stream that sends a
 * field section (and the decoder's own buffers for literal strings). DATA
 * payload is skipped, never copied.
 */
#ifndef H3G_H3_SHADOW_H
#define H3G_H3_SHADOW_H

#include <stddef.h>
#include <stdint.h>

#include <nghttp3/nghttp3.h>

/* One request stream's shadow state. Zeroed by h3g_h3_shadow_init. */
typedef struct h3g_h3_shadow {
  nghttp3_qpack_stream_context *sctx; /* made at the first HEADERS frame */
  int64_t stream_id;
  int64_t content_length; /* declared by the header section; -1: none */
  uint64_t body;          /* DATA payload announced by frame headers */
  uint64_t left;          /* payload bytes of the current frame not seen */
  uint8_t hd[16];         /* a frame header split across calls */
  uint8_t hdlen;
  uint8_t state;   /* frame layer (h3_shadow.c) */
  uint8_t msg;     /* message layer: header section, body, after trailers */
  uint8_t trailer; /* the HEADERS frame being decoded is a trailer section */
} h3g_h3_shadow;

/*
 * Makes a QPACK decoder with no dynamic table, to be shared by the shadows
 * of one connection. Returns 0 or NGHTTP3_ERR_NOMEM.
 */
int h3g_h3_shadow_decoder_new(nghttp3_qpack_decoder **pdec);

/* Prepares sh for a new client bidirectional stream. */
void h3g_h3_shadow_init(h3g_h3_shadow *sh, int64_t stream_id);

/* Releases what sh holds; sh may be fed no more. Safe twice. */
void h3g_h3_shadow_free(h3g_h3_shadow *sh);

/*
 * Takes the next len bytes of the stream (fin: the stream ends after them)
 * before they go to nghttp3. Returns:
 *   0              the bytes (and the FIN) may go to nghttp3;
 *   H3G_ERR_PROTO  the request is malformed (RFC 9114 §4.1.2), *why says
 *                  how: a field h3g_request_field_check() refuses, a DATA
 *                  frame beyond the declared content-length, or the stream
 *                  ends short of it. Only the first *pgood bytes may go to
 *                  nghttp3, without the FIN: they stop before the refused
 *                  field, DATA frame header or FIN, so nghttp3 sees the
 *                  request up to its defect (the fields before it, for the
 *                  access log) but never the end of the section holding
 *                  it. The rest and every later byte must be withheld; the
 *                  caller resets the stream with H3_MESSAGE_ERROR. Every
 *                  later call returns H3G_ERR_PROTO with *pgood 0.
 *   NGHTTP3_ERR_NOMEM or an NGHTTP3_ERR_QPACK_* code
 *                  a connection error, the same nghttp3 would report for
 *                  these bytes (QPACK_DECOMPRESSION_FAILED for a field
 *                  section that refers to a dynamic table);
 *   NGHTTP3_ERR_H3_FRAME_ERROR
 *                  a connection error: the stream ended (fin) inside a
 *                  frame's type, length or payload.
 * dec is the connection's h3g_h3_shadow_decoder_new() decoder.
 */
int h3g_h3_shadow_feed(h3g_h3_shadow *sh, nghttp3_qpack_decoder *dec,
                       const uint8_t *data, size_t len, int fin, size_t *pgood,
                       const char **why);

#endif /* H3G_H3_SHADOW_H */
