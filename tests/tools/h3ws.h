/*
 * h3ws: a WebSocket-over-HTTP/3 (RFC 9220) load and test client.
 *
 * h3ws_codec.c holds the parts that do no I/O: the deterministic payloads
 * (so an echo can be checked byte for byte without keeping a copy), the
 * WebSocket frame encoder (RFC 6455 §5.2, client frames masked) and an
 * incremental frame parser for what the server sends. h3ws.c holds the
 * QUIC connections (ngtcp2 + wolfSSL), HTTP/3 (nghttp3), the tunnels and
 * the report.
 */
#ifndef H3WS_H
#define H3WS_H

#include <stddef.h>
#include <stdint.h>

/* WebSocket opcodes (RFC 6455 §5.2). */
#define WS_OP_CONT 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xa

/* The largest frame header: 2 bytes, 8 of length, 4 of mask. */
#define WS_MAX_HEADER 14
/* The largest control frame payload (RFC 6455 §5.5). */
#define WS_MAX_CONTROL 125

/*
 * The payload of one message: a stream of bytes from a seed, the same
 * every time. Text payloads are printable ASCII (valid UTF-8); binary
 * payloads are any byte.
 */
typedef struct ws_gen {
  uint64_t s;
  uint64_t word;
  unsigned left; /* bytes of word not yet used */
  int text;
} ws_gen;

/* The seed of message msg of tunnel tunnel on connection conn. */
uint64_t ws_seed(uint64_t conn, uint64_t tunnel, uint64_t msg);
void ws_gen_init(ws_gen *g, uint64_t seed, int text);
/* Appends the next n bytes of the payload to out. */
void ws_gen_fill(ws_gen *g, uint8_t *out, size_t n);

/*
 * Writes a frame header into out (WS_MAX_HEADER bytes): FIN bit, opcode,
 * payload length, and the masking key when mask is not NULL. Returns its
 * length.
 */
size_t ws_put_header(uint8_t *out, int fin, unsigned opcode, uint64_t len,
                     const uint8_t *mask);

/* XORs p[0..n) with the masking key, starting at key byte offset % 4. */
void ws_mask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t offset);

/*
 * The bytes of a whole message as a client sends it: frames of at most
 * frag payload bytes (0: one frame), each masked with a fresh key from
 * next_key, payload from g. Returns a malloc'd buffer and its length in
 * *len, or NULL when memory runs out.
 */
uint8_t *ws_build_message(unsigned opcode, ws_gen *g, uint64_t size,
                          uint64_t frag, void (*next_key)(uint8_t key[4]),
                          size_t *len);

/* What the parser found, told as it goes. Each returns 0 to go on. */
typedef struct ws_parser_cb {
  /* A piece of a data message; opcode is the message's (text/binary). */
  int (*on_data)(void *ud, unsigned opcode, const uint8_t *p, size_t n);
  /* The last frame of a data message ended. */
  int (*on_message_end)(void *ud, unsigned opcode);
  /* A whole control frame (close, ping, pong). */
  int (*on_control)(void *ud, unsigned opcode, const uint8_t *p, size_t n);
} ws_parser_cb;

typedef struct ws_parser {
  uint8_t hdr[WS_MAX_HEADER];
  size_t hdrlen;
  int in_payload;
  unsigned opcode; /* of the current frame */
  int fin;
  uint64_t len, got;
  unsigned msg_opcode; /* the data message in progress, 0: none */
  uint8_t ctl[WS_MAX_CONTROL];
  uint64_t frames;
} ws_parser;

/*
 * Feeds the server's bytes. Returns 0, or -1 with a static reason in *why
 * for a frame a server may not send: masked, reserved bits or opcodes,
 * a fragmented or oversized control frame, a continuation with no message
 * or a new message inside another, a 64-bit length with its top bit set.
 * A callback that returns non-zero stops the parser: -1, *why "stopped".
 */
int ws_parse(ws_parser *ps, const uint8_t *p, size_t n, const ws_parser_cb *cb,
             void *ud, const char **why);

/* Whether the parser is between frames. */
int ws_parser_idle(const ws_parser *ps);

/* Runs the codec's self-checks; returns the number of failures. */
int ws_self_test(void);

#endif /* H3WS_H */
