/*
 * The shadow of a client's unidirectional streams (RFC 9114 §6.2, RFC 9204
 * §4.2): their stream types, the frames of its control stream and the
 * instructions of its QPACK encoder stream, judged before nghttp3 sees a
 * byte of them, as h3_shadow.h judges request streams.
 *
 * nghttp3 1.8 gets several of these rules wrong (docs/http3-errors.md has
 * the whole audit): it reads a GOAWAY or MAX_PUSH_ID frame with bytes after
 * its integer as if those bytes began the next frame (RFC 9114 §7.1 wants
 * H3_FRAME_ERROR); answers a MAX_PUSH_ID that goes down with
 * H3_FRAME_ERROR (§7.2.7: H3_ID_ERROR) and a client's CANCEL_PUSH with
 * H3_FRAME_UNEXPECTED (§7.2.3: H3_ID_ERROR, nothing was ever promised);
 * lets duplicate settings pass (§7.2.4 allows H3_SETTINGS_ERROR); closes
 * the connection when a stream ends or is reset inside its stream type
 * (§6.2: a receiver MUST tolerate that); checks the element ID of a
 * PRIORITY_UPDATE only when its value fits in 8 bytes and closes the
 * connection when that value does not parse (RFC 9218 §7 allows it, the
 * gateway ignores such a value, see below); and turns an over-long literal
 * on the QPACK encoder stream into H3_INTERNAL_ERROR where RFC 9204 §3.2.2
 * names QPACK_ENCODER_STREAM_ERROR.
 *
 * So the shadow decides every rule of these streams itself (stream types
 * and their number, the frame types allowed on the control stream and
 * their order, the layout of every frame it knows, GOAWAY, MAX_PUSH_ID and
 * CANCEL_PUSH IDs, PRIORITY_UPDATE element IDs, duplicate and HTTP/2
 * settings, encoder instructions, the closing of critical streams) and
 * nghttp3 sees only what passed. Left to nghttp3: the values of the
 * settings it knows (it refuses ENABLE_CONNECT_PROTOCOL and H3_DATAGRAM
 * other than 0 or 1) and the client's QPACK decoder stream, whose
 * instructions are about nghttp3's own encoder state.
 *
 * PRIORITY_UPDATE (RFC 9218 §7.2). A frame whose Priority Field Value
 * parses is handed to nghttp3 rewritten in canonical form ("u=N" or
 * "u=N, i", every parameter given, as §7 says an update is complete), so
 * that nghttp3, which ignores values longer than 8 bytes, applies it. A
 * value that does not parse as a Structured Fields Dictionary (RFC 8941
 * §4.2) is ignored, frame and all: RFC 9218 §4 has receivers parse the
 * value as RFC 8941 says, and RFC 8941 ignores a value that fails to
 * parse; §7 only allows (MAY) a connection error, and closing every
 * request of the connection over a scheduling hint helps nobody. The
 * element ID is checked either way. Values longer than
 * H3G_H3_UNI_HOLD_MAX are ignored the same way.
 *
 * The gateway advertises SETTINGS_QPACK_MAX_TABLE_CAPACITY 0 (h3_shadow.h),
 * so every encoder instruction but "Set Dynamic Table Capacity 0" would
 * exceed the table (RFC 9204 §3.2.2, §4.3.1): QPACK_ENCODER_STREAM_ERROR.
 *
 * Memory: a fixed struct per connection, no allocation. Control frames the
 * shadow must see whole (GOAWAY, MAX_PUSH_ID, CANCEL_PUSH, PRIORITY_UPDATE)
 * are held up to H3G_H3_UNI_HOLD_MAX bytes; everything else streams
 * through.
 */
#ifndef H3G_H3_UNI_SHADOW_H
#define H3G_H3_UNI_SHADOW_H

#include <stddef.h>
#include <stdint.h>

/* Client unidirectional streams open at once that the shadow can follow.
 * The transport lets a client open 3 (initial_max_streams_uni) and ngtcp2
 * grants another only when one has closed, so this is never reached. */
#define H3G_H3_UNI_SLOTS 8
/* The part of a held control frame kept (a PRIORITY_UPDATE longer than this
 * is ignored after its element ID is checked). */
#define H3G_H3_UNI_HOLD_MAX 64
/* Settings identifiers remembered per SETTINGS frame to refuse duplicates;
 * a frame with more settings is checked among its first ones only. */
#define H3G_H3_UNI_SETTINGS_SEEN 32

/* One client unidirectional stream. */
typedef struct h3g_h3_uni_slot {
  int64_t id; /* -1: free */
  uint8_t kind;
  uint8_t typelen;
  uint8_t type[8]; /* the stream type, while incomplete */
} h3g_h3_uni_slot;

/* What every client unidirectional stream of one connection shares. Set up
 * by h3g_h3_uni_shadow_init; fields are private to h3_uni_shadow.c. */
typedef struct h3g_h3_uni_shadow {
  h3g_h3_uni_slot slots[H3G_H3_UNI_SLOTS];
  int error;       /* the connection error returned, sticky; 0: none */
  const char *why; /* what the error was, for the log */
  uint64_t max_bidi_streams;
  uint64_t goaway_id, max_push_id;
  unsigned have_control : 1, have_encoder : 1, have_decoder : 1;
  unsigned settings_seen : 1, goaway_seen : 1, max_push_seen : 1;
  /* the control stream's frame layer */
  struct {
    uint8_t state;
    uint8_t hdlen;  /* bytes of a frame header being read */
    uint8_t hdsize; /* the current frame's header, whole */
    uint8_t hd[16]; /* its type and length */
    uint64_t type, len, left;
    uint8_t held[H3G_H3_UNI_HOLD_MAX];
    /* SETTINGS: the integer being read and the identifiers seen */
    uint8_t vlen, have_id;
    uint8_t v[8];
    uint8_t nseen;
    uint64_t seen[H3G_H3_UNI_SETTINGS_SEEN];
  } ctrl;
} h3g_h3_uni_shadow;

/*
 * Where the shadow hands on the bytes it accepted: the next len bytes of
 * stream_id for nghttp3 (fin: the stream ends after them). They may differ
 * from what the client sent (a PRIORITY_UPDATE rewritten or dropped, a
 * stream type held until whole) but always form a valid stream. Returns 0,
 * or a negative error that ends the feed and is returned by it.
 */
typedef int (*h3g_h3_uni_emit_fn)(void *ud, int64_t stream_id,
                                  const uint8_t *data, size_t len, int fin);

/* Prepares u for a new connection whose client may open max_bidi_streams
 * request streams so far (for PRIORITY_UPDATE element IDs). */
void h3g_h3_uni_shadow_init(h3g_h3_uni_shadow *u, uint64_t max_bidi_streams);

/* The client may now open max request streams in all (MAX_STREAMS). */
void h3g_h3_uni_shadow_set_max_streams(h3g_h3_uni_shadow *u, uint64_t max);

/*
 * Takes the next len bytes of the client's unidirectional stream stream_id
 * (fin: the stream ends after them) and emits what nghttp3 may see.
 * Returns 0, the emit function's error, or the connection error an RFC
 * names, as an nghttp3 error code (the caller closes the connection with
 * nghttp3_err_infer_quic_app_error_code; u->why says what was wrong):
 *   NGHTTP3_ERR_H3_STREAM_CREATION_ERROR  a push stream, or a second
 *       control, encoder or decoder stream (RFC 9114 §6.2.1, §6.2.2,
 *       RFC 9204 §4.2);
 *   NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM  the control, encoder or decoder
 *       stream ended;
 *   NGHTTP3_ERR_H3_MISSING_SETTINGS  the control stream does not start
 *       with SETTINGS;
 *   NGHTTP3_ERR_H3_FRAME_UNEXPECTED  a second SETTINGS, or DATA, HEADERS,
 *       PUSH_PROMISE or an HTTP/2 frame type on the control stream;
 *   NGHTTP3_ERR_H3_FRAME_ERROR  a frame whose payload is not exactly its
 *       fields;
 *   NGHTTP3_ERR_H3_ID_ERROR  a GOAWAY ID above an earlier one, a
 *       MAX_PUSH_ID below an earlier one, any CANCEL_PUSH or push
 *       PRIORITY_UPDATE, a PRIORITY_UPDATE for no request stream or beyond
 *       the stream limit;
 *   NGHTTP3_ERR_H3_SETTINGS_ERROR  a setting given twice, or one of HTTP/2
 *       (0x02 to 0x05);
 *   NGHTTP3_ERR_QPACK_ENCODER_STREAM_ERROR  an encoder instruction other
 *       than Set Dynamic Table Capacity 0.
 * After an error every call returns it again and emits nothing. A stream
 * that ends before its stream type is whole is forgotten (RFC 9114 §6.2):
 * nghttp3 never hears of it.
 */
int h3g_h3_uni_shadow_feed(h3g_h3_uni_shadow *u, int64_t stream_id,
                           const uint8_t *data, size_t len, int fin,
                           h3g_h3_uni_emit_fn emit, void *ud);

/*
 * The client reset stream_id (RESET_STREAM). Returns
 * NGHTTP3_ERR_H3_CLOSED_CRITICAL_STREAM for its control, encoder or decoder
 * stream, else 0 (the stream is forgotten).
 */
int h3g_h3_uni_shadow_reset(h3g_h3_uni_shadow *u, int64_t stream_id);

/* stream_id is closed (ngtcp2's stream_close): forgotten. */
void h3g_h3_uni_shadow_closed(h3g_h3_uni_shadow *u, int64_t stream_id);

#endif /* H3G_H3_UNI_SHADOW_H */
