/*
 * h3ws: WebSocket over HTTP/3 (RFC 9220) load and test client.
 *
 * Opens --connections QUIC connections (ngtcp2 + wolfSSL, ALPN h3) and on
 * each --tunnels extended CONNECT streams at once (nghttp3 encodes the
 * requests: :method CONNECT, :protocol websocket, :scheme https,
 * :authority, :path), then speaks WebSocket (RFC 6455) in the streams'
 * DATA: client frames masked with a random key, server frames unmasked,
 * ping answered with pong, fragmented messages reassembled. Every payload
 * is derived from (connection, tunnel, message) so an echo is checked byte
 * for byte without keeping a copy. One thread, one poll loop.
 *
 *   h3ws --host ADDR --port N [options]
 *
 * Where:
 *   --host ADDR --port N   the server's UDP address
 *   --sni NAME             TLS server name (default localhost)
 *   --ca FILE              verify the server's certificate against FILE
 *                          (without it nothing is verified)
 *   --authority VALUE      :authority (default SNI:PORT)
 *   --path VALUE           :path (default /)
 *   --protocol VALUE       :protocol (default websocket)
 *   --method VALUE         :method (default CONNECT)
 *   --scheme VALUE         :scheme (default https)
 *   --omit NAME            leave out the pseudo-header NAME (:protocol,
 *                          :scheme, :path or :authority); repeatable
 *   --ws-protocol VALUE    sec-websocket-protocol
 *   --ws-extensions VALUE  sec-websocket-extensions
 *   --header NAME VALUE    one more request field; repeatable
 *   --no-ws-version        no sec-websocket-version: 13 field
 *   --ignore-settings      send the CONNECTs without waiting for the
 *                          server's SETTINGS, and even when they do not
 *                          enable extended CONNECT (default: wait, and
 *                          refuse to send without the setting)
 *
 *   --connections N        QUIC connections (default 1)
 *   --tunnels M            tunnels per connection, all concurrent as far
 *                          as the server's stream limit allows (default
 *                          1; 0: connect, read SETTINGS, report)
 *   --messages K           messages per tunnel (default 1): each is sent,
 *                          its echo awaited and checked before the next
 *   --size LIST            message sizes, cycled by message index: a comma
 *                          list of N or A-B (a size drawn in A..B per
 *                          message); K, M, G suffixes are KiB, MiB, GiB
 *                          (default 16)
 *   --text | --binary | --mixed   message type (default binary; mixed
 *                          alternates by message index)
 *   --fragment BYTES       send messages as frames of at most BYTES
 *   --ping                 send a ping before the first message and
 *                          expect its pong
 *   --stream-bytes N       instead of --messages: send N payload bytes as
 *                          messages without waiting for echoes, reading
 *                          and checking the echoes concurrently (at most
 *                          --send-buffer bytes not yet acknowledged by the
 *                          server per tunnel, default 4M)
 *   --read-rate BPS        slow reader: QUIC flow-control credit for a
 *                          tunnel's stream is given back at most BPS bytes
 *                          per second (the bytes are read at once, the
 *                          window reopens slowly)
 *   --stream-window BYTES  our initial per-stream receive window (default
 *                          1M); --conn-window BYTES, the connection's
 *                          (default 64M)
 *   --reset-after BYTES    send the first message (make it larger than
 *                          BYTES), and once the server acknowledged BYTES
 *                          of the stream's DATA, reset the stream with
 *                          H3_REQUEST_CANCELLED (mid-message)
 *   --fin-after-messages   after the messages, end our side with FIN and
 *                          no close frame; the tunnel is ok when the
 *                          server's side ends with FIN
 *   --expect-server-close  the server ends the tunnel (close frame or FIN)
 *                          before or during the messages: ok when it does,
 *                          with every message received checked
 *   --expect-status N      the status each CONNECT must get (default 200;
 *                          another status is ok when nothing is tunnelled)
 *   --expect-reset CODE    each CONNECT must be reset by the server with
 *                          this code (e.g. 0x10e, H3_MESSAGE_ERROR)
 *   --timeout SECS         the whole run's limit (default 30)
 *   --verbose              trace to stderr
 *   --self-test            check the WebSocket framing code and exit
 *
 * The close handshake: after its messages a tunnel sends a close frame
 * (1000), waits for the server's close frame, then ends its side with FIN
 * and waits for the server's FIN. A close frame from the server first is
 * answered with the same code, then FIN.
 *
 * Output: one JSON object on stdout:
 *   {"settings_enable_connect_protocol": true,   (false: some connection's
 *                        SETTINGS lacked it; null: none received)
 *    "tunnels": 1000, "tunnels_ok": 1000, "tunnels_failed": 0,
 *    "statuses": {"200": 1000}, "first_response_headers": [["n", "v"]],
 *    "first_response_body": "", "response_body_bytes": 0,
 *    "messages_sent": ..., "messages_ok": ..., "mismatches": 0,
 *    "payload_bytes_sent": ..., "payload_bytes_received": ...,
 *    "stream_bytes_sent": ..., "stream_bytes_received": ...,
 *    "pongs": 0, "server_close_codes": {"1000": 1000},
 *    "server_end": {"fin": 1000, "reset": 0, "none": 0},
 *    "resets_received": {"0x10e": 1}, "stop_sending_received": {},
 *    "resets_sent": 0, "max_open_tunnels": 100,
 *    "elapsed": 1.23, "messages_per_second": ..., "bytes_per_second": ...,
 *    "failures": [{"connection": 0, "tunnel": 3, "stream": 12,
 *                  "reason": "..."}],   (the first 10)
 *    "connections": [{"index": 0, "handshake": true,
 *       "settings_received": true, "enable_connect_protocol": 1,
 *       "tunnels_ok": ..., "tunnels_failed": ..., "max_open_tunnels": 100,
 *       "statuses": {...},
 *       "messages_ok": ..., "stream_bytes_sent": ...,
 *       "stream_bytes_received": ..., "mismatches": 0,
 *       "resets_received": {...}, "goaway": null,
 *       "connection_close": null | {"code": 256, "type": "application",
 *                                   "reason": "..."},
 *       "idle_close": false, "local_error": null}]}
 * payload_bytes count WebSocket message payloads; stream_bytes count the
 * HTTP/3 DATA payload (WebSocket frames) handed to QUIC and received.
 * Bytes outside printable ASCII in strings appear as \u00XX.
 *
 * Exit status: 0 when every tunnel did what was expected; 1 for a usage
 * error; 2 for a local failure (socket, TLS, memory); 3 when a handshake
 * did not complete; 4 when a tunnel failed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nghttp3/nghttp3.h>

#include "h3ws.h"
#include "quic_client.h"

/* HTTP/3 error codes (RFC 9114 §8.1). */
#define H3_NO_ERROR 0x100
#define H3_INTERNAL_ERROR 0x102
#define H3_REQUEST_CANCELLED 0x10c

#define MAX_FIELDS 32
#define MAX_SIZES 64
#define MAX_FAILURES 10
/* Distinct error codes and statuses the report counts. */
#define MAX_CODES 16
/* Datagrams read per connection per loop round, so one busy connection
 * does not starve the others' timers and writes. */
#define MAX_READS_PER_ROUND 64
/* Packets written per connection per round, for the same reason. */
#define MAX_WRITES_PER_ROUND 256
#define NS ((uint64_t)1000000000)
#define MS ((uint64_t)1000000)

/* ---- options ---- */

typedef struct size_spec {
  uint64_t lo, hi;
} size_spec;

typedef enum msg_type { TYPE_BINARY, TYPE_TEXT, TYPE_MIXED } msg_type;

typedef struct options {
  const char *host, *port, *sni, *ca, *authority, *path, *protocol, *method,
      *scheme, *ws_protocol, *ws_extensions;
  int omit_protocol, omit_scheme, omit_path, omit_authority;
  const char *hname[MAX_FIELDS], *hvalue[MAX_FIELDS];
  size_t nheaders;
  int no_ws_version, ignore_settings;
  unsigned connections, tunnels;
  uint64_t messages;
  size_spec sizes[MAX_SIZES];
  size_t nsizes;
  msg_type type;
  uint64_t fragment;
  int ping;
  uint64_t stream_bytes, send_buffer;
  uint64_t read_rate, stream_window, conn_window;
  uint64_t reset_after;
  int fin_after_messages, expect_server_close;
  int expect_status;
  int64_t expect_reset;
  uint64_t timeout_ns;
  int verbose;
} options;

static options O;

/* ---- bookkeeping ---- */

/* Counts per code (status, error code). */
typedef struct counts {
  uint64_t key[MAX_CODES], n[MAX_CODES];
  size_t len;
  uint64_t other; /* beyond MAX_CODES distinct keys */
} counts;

static void counts_add(counts *c, uint64_t key, uint64_t n) {
  for (size_t i = 0; i < c->len; i++)
    if (c->key[i] == key) {
      c->n[i] += n;
      return;
    }
  if (c->len == MAX_CODES) {
    c->other += n;
    return;
  }
  c->key[c->len] = key;
  c->n[c->len++] = n;
}

static void counts_merge(counts *to, const counts *from) {
  for (size_t i = 0; i < from->len; i++)
    counts_add(to, from->key[i], from->n[i]);
  to->other += from->other;
}

/* One piece of what a tunnel sends: kept until the server acknowledged
 * it (nghttp3 holds pointers into it until then). */
typedef struct chunk {
  struct chunk *next;
  size_t len, handed, acked;
  uint8_t *data;
} chunk;

typedef struct txq {
  chunk *head, *tail, *cur; /* cur: the first chunk not all handed out */
  uint64_t queued, handed, acked;
} txq;

/* A tunnel's life, in order. */
typedef enum tstate {
  T_NEW,       /* not yet opened */
  T_REQUESTED, /* CONNECT sent, no final response yet */
  T_OPEN,      /* 200: messages flow */
  T_CLOSING,   /* our close frame sent (or FIN), waiting for the server */
  T_ANSWERED,  /* a non-200 final response: waiting for its end */
  T_DONE,      /* outcome known */
} tstate;

struct conn;

typedef struct tunnel {
  struct conn *c;
  unsigned index;
  int64_t id; /* -1 until opened */
  tstate state;
  int status;
  /* send side */
  txq tx;
  uint64_t msgs_queued;    /* data messages queued */
  uint64_t payload_queued; /* their payload bytes */
  int fin_wanted, fin_handed, resume, reset_wanted, we_reset;
  int close_sent, ping_sent;
  /* receive side */
  ws_parser ps;
  uint64_t msgs_rx; /* data messages received and checked */
  ws_gen rx_gen;
  uint64_t rx_size, rx_got; /* the message being received */
  unsigned rx_op;           /* its expected opcode */
  int rx_bad;               /* it differs */
  int close_rcvd, pong_rcvd;
  int close_code; /* -1: none, 1005: no code in the frame */
  int server_fin;
  int64_t reset_code, stop_code; /* from the server; -1: none */
  int closed;                    /* ngtcp2 closed the stream */
  uint64_t credit;               /* slow reader: bytes owed to the window */
  double budget;
  uint64_t stream_rx, stream_tx, payload_rx, body;
  uint64_t mismatches;
  int failed, ok;
  char why[160];
} tunnel;

typedef struct conn {
  unsigned index;
  qc_socket sock;
  WOLFSSL_CTX *ssl_ctx;
  WOLFSSL *ssl;
  ngtcp2_conn *q;
  nghttp3_conn *h3;
  ngtcp2_crypto_conn_ref ref;
  tunnel *t;
  unsigned nt, next_open, open_now, max_open, done;
  int handshake_done, settings_received, closed, draining, idle_close;
  uint64_t enable_connect_protocol;
  int64_t goaway;
  const char *local_error;
  int local_liberr;
  uint64_t credit_ts; /* slow reader: last credit round */
  counts statuses, resets, stops;
  /* The start of the server's control stream, up to the end of its
   * SETTINGS frame (see settings_tap). */
  int64_t ctrl_id;
  uint8_t ctrl[4096];
  size_t ctrl_len;
  int settings_parsed;
} conn;

static conn *CONNS;
static unsigned open_now, max_open; /* tunnels open, all connections */
static uint64_t resets_sent;

/* The first tunnel's response (connection 0, tunnel 0). */
typedef struct field {
  char *name, *value;
  size_t namelen, valuelen;
} field;
static field first_headers[MAX_FIELDS * 2];
static size_t nfirst_headers;
static uint8_t first_body[1024];
static size_t first_body_len;

typedef struct failure {
  unsigned conn, tunnel;
  int64_t stream;
  char why[160];
} failure;
static failure FAILURES[MAX_FAILURES];
static size_t nfailures;

static nghttp3_nv NVA[MAX_FIELDS + 8];
static size_t NNV;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void trace(const char *fmt, ...) {
  if (!O.verbose)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "h3ws: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

static void die(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "h3ws: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(code);
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p == NULL)
    die(2, "out of memory");
  return p;
}

/* ---- masks and message plans ---- */

static uint64_t key_state;

/* Masking keys: a fast generator seeded from getrandom() (RFC 6455 §5.3
 * asks for unpredictable keys; a test client only needs them to vary). */
static void next_key(uint8_t key[4]) {
  key_state ^= key_state >> 12;
  key_state ^= key_state << 25;
  key_state ^= key_state >> 27;
  uint64_t v = key_state * 0x2545f4914f6cdd1du;
  memcpy(key, &v, 4);
}

static uint64_t msg_seed(const tunnel *t, uint64_t k) {
  return ws_seed(t->c->index, t->index, k);
}

static uint64_t msg_size(const tunnel *t, uint64_t k) {
  const size_spec *s = &O.sizes[k % O.nsizes];
  if (s->lo == s->hi)
    return s->lo;
  return s->lo + ws_seed(msg_seed(t, k), 0x5349, 0x5a45) % (s->hi - s->lo + 1);
}

static unsigned msg_opcode(const tunnel *t, uint64_t k) {
  (void)t;
  switch (O.type) {
  case TYPE_TEXT: return WS_OP_TEXT;
  case TYPE_BINARY: return WS_OP_BINARY;
  default: return k % 2 == 0 ? WS_OP_TEXT : WS_OP_BINARY;
  }
}

static int stream_mode(void) {
  return O.stream_bytes > 0;
}

/* All the tunnel's messages are sent and their echoes checked. */
static int messages_done(const tunnel *t) {
  if (O.ping && !t->pong_rcvd)
    return 0;
  if (O.reset_after > 0)
    return 0;
  if (stream_mode())
    return t->payload_queued >= O.stream_bytes && t->msgs_rx == t->msgs_queued;
  return t->msgs_rx >= O.messages;
}

static void tunnel_fail(tunnel *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tunnel_fail(tunnel *t, const char *fmt, ...) {
  if (t->failed)
    return;
  t->failed = 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->why, sizeof(t->why), fmt, ap);
  va_end(ap);
  trace("connection %u tunnel %u (stream %" PRId64 "): %s", t->c->index,
        t->index, t->id, t->why);
}

/* ---- what a tunnel sends ---- */

/* Takes data (malloc'd) to send after what is queued. */
static void txq_push(txq *q, uint8_t *data, size_t len) {
  chunk *ch = xcalloc(1, sizeof(*ch));
  ch->data = data;
  ch->len = len;
  if (q->tail)
    q->tail->next = ch;
  else
    q->head = ch;
  q->tail = ch;
  if (q->cur == NULL)
    q->cur = ch;
  q->queued += len;
}

/* The server acknowledged n more bytes: frees what it no longer needs. */
static void txq_ack(txq *q, uint64_t n) {
  q->acked += n;
  while (n > 0 && q->head != NULL) {
    chunk *ch = q->head;
    size_t k = ch->len - ch->acked < n ? ch->len - ch->acked : (size_t)n;
    ch->acked += k;
    n -= k;
    if (ch->acked < ch->len)
      break;
    q->head = ch->next;
    if (q->head == NULL)
      q->tail = NULL;
    if (q->cur == ch)
      q->cur = ch->next;
    free(ch->data);
    free(ch);
  }
}

static void txq_free(txq *q) {
  while (q->head) {
    chunk *ch = q->head;
    q->head = ch->next;
    free(ch->data);
    free(ch);
  }
  *q = (txq){0};
}

static void queue_message(tunnel *t) {
  uint64_t k = t->msgs_queued;
  uint64_t size = msg_size(t, k);
  ws_gen g;
  size_t len;
  unsigned op = msg_opcode(t, k);
  ws_gen_init(&g, msg_seed(t, k), op == WS_OP_TEXT);
  uint8_t *buf = ws_build_message(op, &g, size, O.fragment, next_key, &len);
  if (buf == NULL)
    die(2, "out of memory (a message of %" PRIu64 " bytes)", size);
  txq_push(&t->tx, buf, len);
  t->msgs_queued++;
  t->payload_queued += size;
  t->resume = 1;
}

static void queue_control(tunnel *t, unsigned op, const uint8_t *p, size_t n) {
  uint8_t key[4];
  uint8_t *buf = xcalloc(1, WS_MAX_HEADER + n);
  next_key(key);
  size_t h = ws_put_header(buf, 1, op, n, key);
  memcpy(buf + h, p, n);
  ws_mask(buf + h, n, key, 0);
  txq_push(&t->tx, buf, h + n);
  t->resume = 1;
}

static void queue_close(tunnel *t, int code) {
  uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
  queue_control(t, WS_OP_CLOSE, p, code < 0 || code == 1005 ? 0 : 2);
  t->close_sent = 1;
}

/* After the messages: the close handshake, or FIN alone. */
static void finish_messages(tunnel *t) {
  t->state = T_CLOSING;
  if (O.fin_after_messages) {
    t->fin_wanted = 1;
    t->resume = 1;
  } else {
    queue_close(t, 1000);
  }
}

/* Queues what an open tunnel sends next. */
static void tunnel_pump(tunnel *t) {
  if (t->state != T_OPEN)
    return;
  if (O.ping && !t->ping_sent) {
    static const uint8_t ping[] = "h3ws-ping";
    queue_control(t, WS_OP_PING, ping, sizeof(ping) - 1);
    t->ping_sent = 1;
  }
  if (O.ping && !t->pong_rcvd)
    return;
  if (O.reset_after > 0) {
    if (t->msgs_queued == 0)
      queue_message(t);
    if (t->tx.acked >= O.reset_after && !t->we_reset)
      t->reset_wanted = 1;
    return;
  }
  if (stream_mode()) {
    while (t->payload_queued < O.stream_bytes &&
           t->tx.queued - t->tx.acked < O.send_buffer)
      queue_message(t);
  } else if (t->msgs_queued == t->msgs_rx && t->msgs_queued < O.messages) {
    queue_message(t);
  }
  if (messages_done(t) && !O.expect_server_close)
    finish_messages(t);
}

/* nghttp3 asks for the DATA payload to send. */
static nghttp3_ssize on_read_data(nghttp3_conn *h3, int64_t stream_id,
                                  nghttp3_vec *vec, size_t veccnt,
                                  uint32_t *pflags, void *conn_user_data,
                                  void *stream_user_data) {
  tunnel *t = stream_user_data;
  (void)h3;
  (void)stream_id;
  (void)conn_user_data;
  size_t n = 0;
  uint64_t limit = O.reset_after > 0 ? O.reset_after : UINT64_MAX;
  while (n < veccnt && t->tx.cur != NULL && t->tx.handed < limit) {
    chunk *ch = t->tx.cur;
    size_t k = ch->len - ch->handed;
    if (limit - t->tx.handed < k)
      k = (size_t)(limit - t->tx.handed);
    if (k > 0) {
      vec[n].base = ch->data + ch->handed;
      vec[n].len = k;
      n++;
      ch->handed += k;
      t->tx.handed += k;
      t->stream_tx += k;
    }
    if (ch->handed == ch->len)
      t->tx.cur = ch->next;
    else
      break;
  }
  if (t->tx.cur == NULL && t->fin_wanted) {
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    t->fin_handed = 1;
    return (nghttp3_ssize)n;
  }
  if (n == 0)
    return NGHTTP3_ERR_WOULDBLOCK;
  return (nghttp3_ssize)n;
}

static const nghttp3_data_reader data_reader = {.read_data = on_read_data};

/* ---- what a tunnel receives ---- */

/* Starts checking the echo of the next message. */
static void expect_next(tunnel *t) {
  uint64_t k = t->msgs_rx;
  t->rx_size = msg_size(t, k);
  t->rx_got = 0;
  t->rx_bad = 0;
  t->rx_op = msg_opcode(t, k);
  ws_gen_init(&t->rx_gen, msg_seed(t, k), t->rx_op == WS_OP_TEXT);
}

static int on_ws_data(void *ud, unsigned opcode, const uint8_t *p, size_t n) {
  static uint8_t want[65536];
  tunnel *t = ud;
  (void)opcode;
  t->payload_rx += n;
  if (t->msgs_rx >= t->msgs_queued) {
    t->rx_bad = 1;
    return 0;
  }
  while (n > 0 && !t->rx_bad) {
    if (t->rx_got >= t->rx_size) {
      t->rx_bad = 1;
      break;
    }
    size_t k = n < sizeof(want) ? n : sizeof(want);
    if (t->rx_size - t->rx_got < k)
      k = (size_t)(t->rx_size - t->rx_got);
    ws_gen_fill(&t->rx_gen, want, k);
    if (memcmp(want, p, k) != 0) {
      size_t i = 0;
      while (want[i] == p[i])
        i++;
      tunnel_fail(t,
                  "message %" PRIu64 " differs at byte %" PRIu64
                  " (got 0x%02x, want 0x%02x)",
                  t->msgs_rx, t->rx_got + i, p[i], want[i]);
      t->rx_bad = 1;
    }
    t->rx_got += k;
    p += k;
    n -= k;
  }
  if (!t->rx_bad)
    return 0;
  /* What follows a difference is not compared; only counted. */
  t->rx_got += n;
  return 0;
}

static int on_ws_message_end(void *ud, unsigned opcode) {
  tunnel *t = ud;
  if (t->msgs_rx >= t->msgs_queued) {
    t->mismatches++;
    tunnel_fail(t,
                "a message from the server that is no echo (after %" PRIu64
                " messages)",
                t->msgs_rx);
    return 0;
  }
  if (!t->rx_bad && t->rx_got != t->rx_size)
    tunnel_fail(t, "message %" PRIu64 ": %" PRIu64 " bytes, want %" PRIu64,
                t->msgs_rx, t->rx_got, t->rx_size);
  else if (!t->rx_bad && opcode != t->rx_op)
    tunnel_fail(t, "message %" PRIu64 ": opcode %u, want %u", t->msgs_rx,
                opcode, t->rx_op);
  else if (t->rx_bad && t->rx_got != t->rx_size && !t->failed)
    tunnel_fail(t, "message %" PRIu64 ": %" PRIu64 " bytes, want %" PRIu64,
                t->msgs_rx, t->rx_got, t->rx_size);
  if (t->rx_bad || t->rx_got != t->rx_size || opcode != t->rx_op)
    t->mismatches++;
  t->msgs_rx++;
  if (t->msgs_rx < t->msgs_queued || stream_mode() || t->msgs_rx < O.messages)
    expect_next(t);
  return 0;
}

static int on_ws_control(void *ud, unsigned opcode, const uint8_t *p,
                         size_t n) {
  tunnel *t = ud;
  switch (opcode) {
  case WS_OP_PING:
    if (!t->close_sent)
      queue_control(t, WS_OP_PONG, p, n);
    break;
  case WS_OP_PONG: t->pong_rcvd = 1; break;
  case WS_OP_CLOSE:
    if (t->close_rcvd) {
      tunnel_fail(t, "a second close frame");
      break;
    }
    t->close_rcvd = 1;
    t->close_code = n >= 2 ? (p[0] << 8) | p[1] : 1005;
    if (n == 1)
      tunnel_fail(t, "a close frame of 1 byte");
    if (!messages_done(t) && !O.expect_server_close)
      tunnel_fail(t, "the server closed (%d) after %" PRIu64 " messages",
                  t->close_code, t->msgs_rx);
    if (!t->close_sent)
      queue_close(t, t->close_code);
    /* Both close frames seen: our side ends (RFC 6455 §7.1.1; over
     * HTTP/3 the stream's FIN stands for the TCP close). */
    t->fin_wanted = 1;
    t->resume = 1;
    t->state = T_CLOSING;
    break;
  }
  return 0;
}

static const ws_parser_cb ws_cb = {.on_data = on_ws_data,
                                   .on_message_end = on_ws_message_end,
                                   .on_control = on_ws_control};

/* ---- a tunnel's outcome ---- */

static const char *state_text(const tunnel *t, char *buf, size_t len) {
  switch (t->state) {
  case T_NEW:
    if (!t->c->handshake_done)
      return "no handshake";
    if (!t->c->settings_received && !O.ignore_settings)
      return "no SETTINGS from the server";
    return "never opened (the server's stream limit)";
  case T_REQUESTED: return "no response to the CONNECT";
  case T_ANSWERED:
    snprintf(buf, len, "the server did not end the stream after its %d",
             t->status);
    return buf;
  case T_OPEN:
    if (O.ping && !t->pong_rcvd)
      return "no pong";
    if (O.expect_server_close && messages_done(t))
      return "the server did not end the tunnel";
    snprintf(buf, len,
             "waiting for the echo of message %" PRIu64 " (%" PRIu64
             " of %" PRIu64 " bytes; %" PRIu64 " of %" PRIu64
             " stream bytes acknowledged)",
             t->msgs_rx, t->rx_got, t->rx_size, t->tx.acked, t->tx.queued);
    return buf;
  case T_CLOSING:
    if (t->close_sent && !t->close_rcvd)
      return "no close frame from the server";
    if (!t->server_fin)
      return "the server did not end the stream after the close";
    return "our side did not end";
  case T_DONE: return "done";
  }
  return "?";
}

/* Decides whether the tunnel did what was expected. */
static void tunnel_finish(tunnel *t) {
  char buf[160];
  if (t->state == T_DONE)
    return;
  if (!t->failed) {
    if (O.expect_reset >= 0) {
      if (t->reset_code != O.expect_reset)
        tunnel_fail(t, "want a reset 0x%" PRIx64 "; %s", O.expect_reset,
                    t->reset_code >= 0 ? "got another reset"
                    : t->status >= 0   ? "got a response"
                                       : "the stream ended without one");
      if (t->reset_code >= 0 && t->reset_code != O.expect_reset)
        snprintf(t->why + strlen(t->why), sizeof(t->why) - strlen(t->why),
                 " (0x%" PRIx64 ")", (uint64_t)t->reset_code);
    } else if (t->status < 0) {
      if (t->reset_code >= 0)
        tunnel_fail(
            t, "the server reset the stream (0x%" PRIx64 ") without a response",
            (uint64_t)t->reset_code);
      else
        tunnel_fail(t, "%s", state_text(t, buf, sizeof(buf)));
    } else if (t->reset_code >= 0 && !t->we_reset) {
      tunnel_fail(t,
                  "the server reset the stream (0x%" PRIx64 ") after %" PRIu64
                  " messages",
                  (uint64_t)t->reset_code, t->msgs_rx);
    } else if (t->status / 100 != 2) {
      if (!t->server_fin)
        tunnel_fail(t, "%s", state_text(t, buf, sizeof(buf)));
    } else if (O.reset_after > 0) {
      if (!t->we_reset)
        tunnel_fail(
            t, "the stream ended before %" PRIu64 " bytes were acknowledged",
            O.reset_after);
    } else if (O.expect_server_close) {
      if (!t->close_rcvd && !t->server_fin)
        tunnel_fail(t, "%s", state_text(t, buf, sizeof(buf)));
    } else if (!messages_done(t)) {
      tunnel_fail(t, "the stream ended: %s", state_text(t, buf, sizeof(buf)));
    } else if (O.fin_after_messages) {
      if (!t->server_fin)
        tunnel_fail(t, "the server's side did not end");
    } else if (!t->close_rcvd || !t->server_fin) {
      tunnel_fail(t, "%s", state_text(t, buf, sizeof(buf)));
    }
  }
  t->ok = !t->failed;
  t->state = T_DONE;
  t->c->done++;
  if (t->failed && nfailures < MAX_FAILURES) {
    failure *f = &FAILURES[nfailures++];
    *f = (failure){.conn = t->c->index, .tunnel = t->index, .stream = t->id};
    memcpy(f->why, t->why, sizeof(f->why));
  }
}

/* ---- nghttp3 callbacks ---- */

static void consume(conn *c, int64_t stream_id, tunnel *t, size_t n) {
  if (n == 0)
    return;
  ngtcp2_conn_extend_max_offset(c->q, n);
  if (t != NULL && O.read_rate > 0)
    t->credit += n;
  else
    ngtcp2_conn_extend_max_stream_offset(c->q, stream_id, n);
}

static int on_h3_acked_stream_data(nghttp3_conn *h3, int64_t stream_id,
                                   uint64_t datalen, void *conn_user_data,
                                   void *stream_user_data) {
  tunnel *t = stream_user_data;
  (void)h3;
  (void)stream_id;
  (void)conn_user_data;
  if (t != NULL)
    txq_ack(&t->tx, datalen);
  return 0;
}

static int on_h3_recv_data(nghttp3_conn *h3, int64_t stream_id,
                           const uint8_t *data, size_t datalen,
                           void *conn_user_data, void *stream_user_data) {
  conn *c = conn_user_data;
  tunnel *t = stream_user_data;
  (void)h3;
  consume(c, stream_id, t, datalen);
  if (t == NULL || t->state == T_DONE)
    return 0;
  t->stream_rx += datalen;
  if (t->state == T_OPEN || t->state == T_CLOSING) {
    const char *why = NULL;
    if (!t->reset_wanted &&
        ws_parse(&t->ps, data, datalen, &ws_cb, t, &why) != 0) {
      tunnel_fail(t, "bad WebSocket frame from the server: %s", why);
      t->reset_wanted = 1;
    }
  } else {
    t->body += datalen;
    if (c->index == 0 && t->index == 0 && first_body_len < sizeof(first_body)) {
      size_t k = sizeof(first_body) - first_body_len;
      if (datalen < k)
        k = datalen;
      memcpy(first_body + first_body_len, data, k);
      first_body_len += k;
    }
  }
  return 0;
}

static int on_h3_deferred_consume(nghttp3_conn *h3, int64_t stream_id,
                                  size_t consumed, void *conn_user_data,
                                  void *stream_user_data) {
  (void)h3;
  consume(conn_user_data, stream_id, stream_user_data, consumed);
  return 0;
}

static int on_h3_recv_header(nghttp3_conn *h3, int64_t stream_id, int32_t token,
                             nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                             uint8_t flags, void *conn_user_data,
                             void *stream_user_data) {
  conn *c = conn_user_data;
  tunnel *t = stream_user_data;
  (void)h3;
  (void)stream_id;
  (void)flags;
  if (t == NULL)
    return 0;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
  nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
  if (token == NGHTTP3_QPACK_TOKEN__STATUS) {
    int s = 0;
    for (size_t i = 0; i < v.len && i < 3; i++)
      s = s * 10 + (v.base[i] - '0');
    t->status = s;
  }
  if (c->index == 0 && t->index == 0 && t->status / 100 != 1 &&
      nfirst_headers < sizeof(first_headers) / sizeof(first_headers[0])) {
    field *f = &first_headers[nfirst_headers++];
    f->name = xcalloc(1, n.len + 1);
    f->value = xcalloc(1, v.len + 1);
    memcpy(f->name, n.base, n.len);
    memcpy(f->value, v.base, v.len);
    f->namelen = n.len;
    f->valuelen = v.len;
  }
  return 0;
}

static int on_h3_end_headers(nghttp3_conn *h3, int64_t stream_id, int fin,
                             void *conn_user_data, void *stream_user_data) {
  conn *c = conn_user_data;
  tunnel *t = stream_user_data;
  (void)h3;
  (void)stream_id;
  (void)fin;
  if (t == NULL || t->state != T_REQUESTED)
    return 0;
  if (t->status / 100 == 1)
    return 0; /* informational: the final response follows */
  counts_add(&c->statuses, (uint64_t)t->status, 1);
  if (O.expect_reset >= 0)
    tunnel_fail(t, "status %d, want a reset 0x%" PRIx64, t->status,
                O.expect_reset);
  else if (t->status != O.expect_status)
    tunnel_fail(t, "status %d, want %d", t->status, O.expect_status);
  if (t->status / 100 == 2) {
    t->state = T_OPEN;
    expect_next(t);
    if (t->failed)
      t->reset_wanted = 1;
  } else {
    /* Nothing is tunnelled: our side ends. */
    t->state = T_ANSWERED;
    t->fin_wanted = 1;
    t->resume = 1;
  }
  return 0;
}

static int on_h3_end_stream(nghttp3_conn *h3, int64_t stream_id,
                            void *conn_user_data, void *stream_user_data) {
  tunnel *t = stream_user_data;
  (void)h3;
  (void)conn_user_data;
  trace("stream %" PRId64 ": the server's FIN", stream_id);
  if (t == NULL)
    return 0;
  t->server_fin = 1;
  if (t->state == T_OPEN || t->state == T_CLOSING) {
    if (!ws_parser_idle(&t->ps))
      tunnel_fail(t, "the stream ended inside a WebSocket frame");
    if (t->state == T_OPEN && !O.expect_server_close && !t->we_reset)
      tunnel_fail(t,
                  "the server ended the stream (no close frame) after %" PRIu64
                  " messages",
                  t->msgs_rx);
    if (!t->fin_wanted) {
      /* Nothing more can be answered: our side ends too. */
      t->fin_wanted = 1;
      t->resume = 1;
    }
  }
  return 0;
}

static int on_h3_stop_sending(nghttp3_conn *h3, int64_t stream_id,
                              uint64_t app_error_code, void *conn_user_data,
                              void *stream_user_data) {
  conn *c = conn_user_data;
  (void)h3;
  (void)stream_user_data;
  ngtcp2_conn_shutdown_stream_read(c->q, 0, stream_id, app_error_code);
  return 0;
}

static int on_h3_reset_stream(nghttp3_conn *h3, int64_t stream_id,
                              uint64_t app_error_code, void *conn_user_data,
                              void *stream_user_data) {
  conn *c = conn_user_data;
  (void)h3;
  (void)stream_user_data;
  ngtcp2_conn_shutdown_stream_write(c->q, 0, stream_id, app_error_code);
  return 0;
}

static int on_h3_shutdown(nghttp3_conn *h3, int64_t id, void *conn_user_data) {
  conn *c = conn_user_data;
  (void)h3;
  c->goaway = id;
  trace("connection %u: GOAWAY %" PRId64, c->index, id);
  return 0;
}

static int on_h3_recv_settings(nghttp3_conn *h3,
                               const nghttp3_settings *settings,
                               void *conn_user_data) {
  conn *c = conn_user_data;
  (void)h3;
  (void)settings; /* its enable_connect_protocol: see settings_tap */
  c->settings_received = 1;
  trace("connection %u: SETTINGS, ENABLE_CONNECT_PROTOCOL=%" PRIu64, c->index,
        c->enable_connect_protocol);
  return 0;
}

static const nghttp3_callbacks h3_callbacks = {
    .acked_stream_data = on_h3_acked_stream_data,
    .recv_data = on_h3_recv_data,
    .deferred_consume = on_h3_deferred_consume,
    .recv_header = on_h3_recv_header,
    .end_headers = on_h3_end_headers,
    .end_stream = on_h3_end_stream,
    .stop_sending = on_h3_stop_sending,
    .reset_stream = on_h3_reset_stream,
    .shutdown = on_h3_shutdown,
    .recv_settings = on_h3_recv_settings,
};

/* ---- the server's SETTINGS ---- */

static size_t get_varint(const uint8_t *p, size_t len, uint64_t *v) {
  if (len == 0)
    return 0;
  size_t n = (size_t)1 << (p[0] >> 6);
  if (len < n)
    return 0;
  *v = p[0] & 0x3f;
  for (size_t i = 1; i < n; i++)
    *v = (*v << 8) | p[i];
  return n;
}

/*
 * nghttp3 before 1.14 drops SETTINGS_ENABLE_CONNECT_PROTOCOL on the client
 * side (its settings handler records it only when it is the server;
 * upstream commit 6e67286 "Fix ENABLE_CONNECT_PROTOCOL setting handling"
 * swapped that), so recv_settings always shows 0 with Debian's 1.8. We read
 * the server's first SETTINGS frame from its control stream's bytes
 * ourselves, before nghttp3 gets them: the stream of type 0x00 (RFC 9114
 * §6.2.1), whose first frame must be SETTINGS (§7.2.4).
 */
static void settings_tap(conn *c, int64_t stream_id, uint64_t offset,
                         const uint8_t *data, size_t len) {
  if (c->settings_parsed || ngtcp2_is_bidi_stream(stream_id) ||
      (stream_id & 0x3) != 0x3)
    return;
  if (c->ctrl_id < 0) {
    if (offset != 0 || len == 0 || data[0] != 0x00)
      return;
    c->ctrl_id = stream_id;
  }
  if (stream_id != c->ctrl_id)
    return;
  size_t room = sizeof(c->ctrl) - c->ctrl_len;
  size_t k = room < len ? room : len;
  memcpy(c->ctrl + c->ctrl_len, data, k);
  c->ctrl_len += k;
  uint64_t type, flen;
  size_t a = get_varint(c->ctrl + 1, c->ctrl_len - 1, &type);
  size_t b = a ? get_varint(c->ctrl + 1 + a, c->ctrl_len - 1 - a, &flen) : 0;
  if (b == 0)
    return;
  size_t start = 1 + a + b;
  if (type != 0x04 || flen > sizeof(c->ctrl) - start) {
    c->settings_parsed = 1; /* not ours to judge: nghttp3 will */
    return;
  }
  if (c->ctrl_len < start + flen)
    return;
  c->settings_parsed = 1;
  const uint8_t *p = c->ctrl + start;
  size_t left = (size_t)flen;
  while (left > 0) {
    uint64_t id, value;
    size_t i = get_varint(p, left, &id);
    size_t j = i ? get_varint(p + i, left - i, &value) : 0;
    if (j == 0)
      break;
    if (id == 0x08)
      c->enable_connect_protocol = value;
    p += i + j;
    left -= i + j;
  }
}

/* ---- ngtcp2 callbacks ---- */

static void set_local_error(conn *c, int liberr, const char *what) {
  if (c->local_error == NULL) {
    c->local_error = what;
    c->local_liberr = liberr;
  }
  c->closed = 1;
}

static void on_rand(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  if (qc_rand(dest, destlen) != 0)
    die(2, "getrandom: %s", strerror(errno));
}

static int conn_setup_h3(conn *c);

/* HTTP/3 starts with the handshake: the server's SETTINGS may come in the
 * same flight. */
static int on_handshake_completed(ngtcp2_conn *q, void *user_data) {
  conn *c = user_data;
  (void)q;
  c->handshake_done = 1;
  trace("connection %u: handshake completed", c->index);
  if (c->h3 == NULL && conn_setup_h3(c) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int on_recv_stream_data(ngtcp2_conn *q, uint32_t flags,
                               int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen,
                               void *user_data, void *stream_user_data) {
  conn *c = user_data;
  (void)q;
  if (c->h3 == NULL && conn_setup_h3(c) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  settings_tap(c, stream_id, offset, data, datalen);
  nghttp3_ssize n =
      nghttp3_conn_read_stream(c->h3, stream_id, data, datalen,
                               (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
  if (n < 0) {
    trace("connection %u stream %" PRId64 ": nghttp3: %s", c->index, stream_id,
          nghttp3_strerror((int)n));
    tunnel *t = stream_user_data;
    if (t != NULL && ngtcp2_is_bidi_stream(stream_id) &&
        !nghttp3_err_is_fatal((int)n)) {
      tunnel_fail(t, "HTTP/3 error on the stream: %s",
                  nghttp3_strerror((int)n));
      t->reset_wanted = 1;
      return 0;
    }
    c->local_error = nghttp3_strerror((int)n);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  consume(c, stream_id,
          ngtcp2_is_bidi_stream(stream_id) ? stream_user_data : NULL,
          (size_t)n);
  return 0;
}

static int on_acked_stream_data_offset(ngtcp2_conn *q, int64_t stream_id,
                                       uint64_t offset, uint64_t datalen,
                                       void *user_data,
                                       void *stream_user_data) {
  conn *c = user_data;
  (void)q;
  (void)offset;
  (void)stream_user_data;
  if (c->h3 != NULL &&
      nghttp3_conn_add_ack_offset(c->h3, stream_id, datalen) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int on_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t stream_id,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  conn *c = user_data;
  (void)q;
  trace("connection %u stream %" PRId64 ": closed (0x%" PRIx64 ")", c->index,
        stream_id, app_error_code);
  if (c->h3 != NULL) {
    uint64_t code = (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)
                        ? app_error_code
                        : H3_NO_ERROR;
    int rv = nghttp3_conn_close_stream(c->h3, stream_id, code);
    if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND)
      return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  tunnel *t = stream_user_data;
  if (t == NULL || !ngtcp2_is_bidi_stream(stream_id))
    return 0;
  /* The stream's first error code is the server's STOP_SENDING unless it
   * reset the stream or we cut it ourselves. */
  if ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) && !t->we_reset &&
      t->reset_code < 0 && t->stop_code < 0) {
    t->stop_code = (int64_t)app_error_code;
    counts_add(&c->stops, app_error_code, 1);
  }
  t->closed = 1;
  c->open_now--;
  open_now--;
  t->credit = 0;
  tunnel_finish(t);
  return 0;
}

static int on_stream_reset(ngtcp2_conn *q, int64_t stream_id,
                           uint64_t final_size, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
  conn *c = user_data;
  tunnel *t = stream_user_data;
  (void)q;
  (void)final_size;
  trace("connection %u stream %" PRId64 ": RESET_STREAM 0x%" PRIx64, c->index,
        stream_id, app_error_code);
  if (t != NULL && t->reset_code < 0) {
    t->reset_code = (int64_t)app_error_code;
    counts_add(&c->resets, app_error_code, 1);
  }
  if (c->h3 != NULL && nghttp3_conn_shutdown_stream_read(c->h3, stream_id) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int on_stream_stop_sending(ngtcp2_conn *q, int64_t stream_id,
                                  uint64_t app_error_code, void *user_data,
                                  void *stream_user_data) {
  conn *c = user_data;
  (void)q;
  (void)app_error_code;
  (void)stream_user_data;
  if (c->h3 != NULL && nghttp3_conn_shutdown_stream_read(c->h3, stream_id) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int on_extend_max_stream_data(ngtcp2_conn *q, int64_t stream_id,
                                     uint64_t max_data, void *user_data,
                                     void *stream_user_data) {
  conn *c = user_data;
  (void)q;
  (void)max_data;
  (void)stream_user_data;
  if (c->h3 != NULL && nghttp3_conn_unblock_stream(c->h3, stream_id) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static const ngtcp2_callbacks quic_callbacks = {
    QC_CRYPTO_CALLBACKS,
    .rand = on_rand,
    .get_new_connection_id = qc_on_get_new_connection_id,
    .handshake_completed = on_handshake_completed,
    .recv_stream_data = on_recv_stream_data,
    .acked_stream_data_offset = on_acked_stream_data_offset,
    .stream_close = on_stream_close,
    .stream_reset = on_stream_reset,
    .stream_stop_sending = on_stream_stop_sending,
    .extend_max_stream_data = on_extend_max_stream_data,
};

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  conn *c = ref->user_data;
  return c->q;
}

/* ---- connections ---- */

static void conn_open(conn *c) {
  char err[256];
  if (qc_socket_open(&c->sock, O.host, O.port, err, sizeof(err)) != 0)
    die(2, "%s", err);
  /* Many tunnels' data arrive at once: a small buffer drops datagrams. */
  int sz = 8 * 1024 * 1024;
  setsockopt(c->sock.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  setsockopt(c->sock.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  c->ref = (ngtcp2_crypto_conn_ref){.get_conn = get_conn, .user_data = c};
  if (qc_tls_new(&c->ssl_ctx, &c->ssl, O.ca, O.sni, &c->ref, err,
                 sizeof(err)) != 0)
    die(2, "%s", err);

  ngtcp2_cid dcid = {.datalen = NGTCP2_MIN_INITIAL_DCIDLEN};
  ngtcp2_cid scid = {.datalen = 8};
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  ngtcp2_path path = qc_socket_path(&c->sock);
  on_rand(dcid.data, dcid.datalen, NULL);
  on_rand(scid.data, scid.datalen, NULL);
  ngtcp2_settings_default(&settings);
  settings.initial_ts = now_ns();
  settings.handshake_timeout = O.timeout_ns;
  ngtcp2_transport_params_default(&params);
  params.initial_max_streams_uni = 16;
  params.initial_max_streams_bidi = 0;
  params.initial_max_stream_data_bidi_local = O.stream_window;
  params.initial_max_stream_data_uni = 1024 * 1024;
  params.initial_max_data = O.conn_window;
  params.max_idle_timeout = 60 * NGTCP2_SECONDS;
  int rv =
      ngtcp2_conn_client_new(&c->q, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
                             &quic_callbacks, &settings, &params, NULL, c);
  if (rv != 0)
    die(2, "ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
  ngtcp2_conn_set_tls_native_handle(c->q, c->ssl);
}

/* HTTP/3 on top, once the handshake is done: our control and QPACK
 * streams. */
static int conn_setup_h3(conn *c) {
  nghttp3_settings settings;
  nghttp3_settings_default(&settings);
  int rv = nghttp3_conn_client_new(&c->h3, &h3_callbacks, &settings,
                                   nghttp3_mem_default(), c);
  if (rv != 0)
    die(2, "nghttp3_conn_client_new: %s", nghttp3_strerror(rv));
  int64_t ctrl, enc, dec;
  if (ngtcp2_conn_open_uni_stream(c->q, &ctrl, NULL) != 0 ||
      ngtcp2_conn_open_uni_stream(c->q, &enc, NULL) != 0 ||
      ngtcp2_conn_open_uni_stream(c->q, &dec, NULL) != 0) {
    c->local_error = "the server allows fewer than 3 unidirectional streams";
    return -1;
  }
  if (nghttp3_conn_bind_control_stream(c->h3, ctrl) != 0 ||
      nghttp3_conn_bind_qpack_streams(c->h3, enc, dec) != 0)
    die(2, "nghttp3: cannot bind our streams");
  return 0;
}

/* Opens the tunnels the server's stream limit allows. */
static void conn_open_tunnels(conn *c) {
  while (c->next_open < c->nt) {
    tunnel *t = &c->t[c->next_open];
    int64_t id;
    int rv = ngtcp2_conn_open_bidi_stream(c->q, &id, t);
    if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
      return;
    if (rv != 0) {
      set_local_error(c, rv, ngtcp2_strerror(rv));
      return;
    }
    rv = nghttp3_conn_submit_request(c->h3, id, NVA, NNV, &data_reader, t);
    if (rv != 0) {
      tunnel_fail(t, "nghttp3 refused the request: %s", nghttp3_strerror(rv));
      ngtcp2_conn_shutdown_stream(c->q, 0, id, H3_REQUEST_CANCELLED);
      t->we_reset = 1;
    }
    t->id = id;
    t->state = T_REQUESTED;
    c->next_open++;
    c->open_now++;
    if (c->open_now > c->max_open)
      c->max_open = c->open_now;
    if (++open_now > max_open)
      max_open = open_now;
  }
}

/* Slow reader: gives the tunnels' windows back at --read-rate. */
static void conn_give_credit(conn *c, uint64_t ts) {
  double dt = c->credit_ts ? (double)(ts - c->credit_ts) / 1e9 : 0;
  double cap = (double)O.read_rate / 20;
  if (cap < 1200)
    cap = 1200;
  c->credit_ts = ts;
  for (unsigned i = 0; i < c->next_open; i++) {
    tunnel *t = &c->t[i];
    if (t->closed)
      continue;
    t->budget += dt * (double)O.read_rate;
    if (t->budget > cap)
      t->budget = cap;
    if (t->credit == 0 || t->budget < 1)
      continue;
    uint64_t k =
        (uint64_t)t->budget < t->credit ? (uint64_t)t->budget : t->credit;
    ngtcp2_conn_extend_max_stream_offset(c->q, t->id, k);
    t->credit -= k;
    t->budget -= (double)k;
  }
}

static void send_packet(conn *c, const uint8_t *data, size_t len) {
  int err = qc_socket_send(&c->sock, data, len);
  if (err != 0)
    trace("connection %u: send: %s", c->index, strerror(err));
}

/* Writes packets until ngtcp2 has nothing more to send now (or this
 * round's share is used). */
static void conn_write(conn *c, uint64_t ts) {
  uint8_t buf[1452];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_path_storage_zero(&ps);
  for (int npkt = 0; npkt < MAX_WRITES_PER_ROUND;) {
    int64_t stream_id = -1;
    int fin = 0;
    nghttp3_vec vec[16];
    nghttp3_ssize nvec = 0;
    if (c->h3 != NULL && ngtcp2_conn_get_max_data_left(c->q) > 0) {
      nvec = nghttp3_conn_writev_stream(c->h3, &stream_id, &fin, vec, 16);
      if (nvec < 0) {
        set_local_error(c, 0, nghttp3_strerror((int)nvec));
        return;
      }
    }
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    if (fin)
      flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    ngtcp2_ssize ndatalen = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(
        c->q, &ps.path, &pi, buf, sizeof(buf), &ndatalen, flags, stream_id,
        (const ngtcp2_vec *)vec, (size_t)nvec, ts);
    if (n < 0) {
      switch (n) {
      case NGTCP2_ERR_STREAM_DATA_BLOCKED:
        nghttp3_conn_block_stream(c->h3, stream_id);
        continue;
      case NGTCP2_ERR_STREAM_SHUT_WR:
      case NGTCP2_ERR_STREAM_NOT_FOUND:
        nghttp3_conn_shutdown_stream_write(c->h3, stream_id);
        continue;
      case NGTCP2_ERR_WRITE_MORE:
        if (nghttp3_conn_add_write_offset(c->h3, stream_id, (size_t)ndatalen) !=
            0) {
          set_local_error(c, 0, "nghttp3_conn_add_write_offset failed");
          return;
        }
        continue;
      default: set_local_error(c, (int)n, ngtcp2_strerror((int)n)); return;
      }
    }
    if (ndatalen >= 0 && stream_id >= 0 &&
        nghttp3_conn_add_write_offset(c->h3, stream_id, (size_t)ndatalen) !=
            0) {
      set_local_error(c, 0, "nghttp3_conn_add_write_offset failed");
      return;
    }
    if (n == 0)
      return;
    send_packet(c, buf, (size_t)n);
    npkt++;
  }
}

static void conn_read(conn *c) {
  uint8_t buf[65536];
  for (int i = 0; i < MAX_READS_PER_ROUND && !c->closed; i++) {
    ssize_t n = recv(c->sock.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    ngtcp2_path path = qc_socket_path(&c->sock);
    ngtcp2_pkt_info pi = {0};
    int rv = ngtcp2_conn_read_pkt(c->q, &path, &pi, buf, (size_t)n, now_ns());
    if (rv == 0)
      continue;
    trace("connection %u: read_pkt: %s", c->index, ngtcp2_strerror(rv));
    if (rv == NGTCP2_ERR_DRAINING) {
      c->draining = 1;
      c->closed = 1;
    } else if (rv == NGTCP2_ERR_DROP_CONN) {
      c->closed = 1;
    } else if (rv == NGTCP2_ERR_CRYPTO) {
      set_local_error(c, rv, "TLS handshake failed");
    } else if (rv == NGTCP2_ERR_CALLBACK_FAILURE && c->local_error != NULL) {
      set_local_error(c, rv, c->local_error);
    } else {
      set_local_error(c, rv, ngtcp2_strerror(rv));
    }
  }
}

/* Every tunnel is decided (or there were none to open and SETTINGS
 * arrived). */
static int conn_finished(const conn *c) {
  if (c->closed)
    return 1;
  if (c->nt == 0)
    return c->settings_received;
  return c->done == c->nt;
}

/* One round of work for a connection. */
static void conn_step(conn *c, uint64_t ts) {
  if (c->closed)
    return;
  if (c->handshake_done && c->h3 == NULL && conn_setup_h3(c) != 0)
    return;
  if (c->h3 != NULL) {
    int may_open = O.ignore_settings || c->settings_received;
    if (may_open && c->settings_received && !c->enable_connect_protocol &&
        !O.ignore_settings) {
      for (unsigned i = c->next_open; i < c->nt; i++) {
        tunnel_fail(&c->t[i], "the server's SETTINGS do not enable extended "
                              "CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)");
        tunnel_finish(&c->t[i]);
      }
      c->next_open = c->nt;
    } else if (may_open) {
      conn_open_tunnels(c);
    }
    for (unsigned i = 0; i < c->next_open; i++) {
      tunnel *t = &c->t[i];
      if (t->state == T_DONE || t->closed)
        continue;
      tunnel_pump(t);
      if (t->reset_wanted && !t->we_reset) {
        trace("connection %u stream %" PRId64 ": we reset it", c->index, t->id);
        ngtcp2_conn_shutdown_stream(c->q, 0, t->id, H3_REQUEST_CANCELLED);
        nghttp3_conn_shutdown_stream_write(c->h3, t->id);
        t->we_reset = 1;
        resets_sent++;
      }
      if (t->resume && !t->we_reset) {
        nghttp3_conn_resume_stream(c->h3, t->id);
        t->resume = 0;
      }
    }
    if (O.read_rate > 0)
      conn_give_credit(c, ts);
  }
  conn_write(c, ts);
}

/* The connection is gone (or the run is over): undecided tunnels fail
 * with why. */
static void conn_abandon(conn *c, const char *why) {
  char buf[160];
  for (unsigned i = 0; i < c->nt; i++) {
    tunnel *t = &c->t[i];
    if (t->state == T_DONE)
      continue;
    tunnel_fail(t, "%s: %s", why, state_text(t, buf, sizeof(buf)));
    if (t->id >= 0 && !t->closed && !c->closed && !t->we_reset) {
      ngtcp2_conn_shutdown_stream(c->q, 0, t->id, H3_REQUEST_CANCELLED);
      t->we_reset = 1;
    }
    tunnel_finish(t);
  }
}

/* Sends our CONNECTION_CLOSE unless the connection is already gone. */
static void conn_close(conn *c) {
  uint8_t buf[1280];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_ccerr ccerr;
  if (c->q == NULL || c->draining || c->idle_close ||
      ngtcp2_conn_in_closing_period(c->q) ||
      ngtcp2_conn_in_draining_period(c->q))
    return;
  if (!c->handshake_done && c->local_error == NULL)
    return;
  ngtcp2_ccerr_default(&ccerr);
  if (c->local_liberr != 0)
    ngtcp2_ccerr_set_liberr(&ccerr, c->local_liberr, NULL, 0);
  else
    ngtcp2_ccerr_set_application_error(&ccerr, H3_NO_ERROR, NULL, 0);
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      c->q, &ps.path, &pi, buf, sizeof(buf), &ccerr, now_ns());
  if (n > 0)
    send_packet(c, buf, (size_t)n);
}

static void run(uint64_t start) {
  uint64_t deadline = start + O.timeout_ns;
  struct pollfd *pfd = xcalloc(O.connections, sizeof(*pfd));
  for (;;) {
    uint64_t ts = now_ns();
    int all = 1;
    for (unsigned i = 0; i < O.connections; i++) {
      conn *c = &CONNS[i];
      conn_step(c, ts);
      if (c->closed) {
        char why[200];
        snprintf(why, sizeof(why), "the connection ended (%s)",
                 c->local_error  ? c->local_error
                 : c->draining   ? "the server closed it"
                 : c->idle_close ? "idle timeout"
                                 : "dropped");
        if (c->done < c->nt) {
          static char reasons[64][200];
          memcpy(reasons[i % 64], why, sizeof(why));
          conn_abandon(c, reasons[i % 64]);
        }
      }
      if (!conn_finished(c))
        all = 0;
    }
    if (all)
      break;
    if (ts >= deadline) {
      for (unsigned i = 0; i < O.connections; i++) {
        conn *c = &CONNS[i];
        if (!c->handshake_done && c->local_error == NULL)
          set_local_error(c, 0, "handshake timed out");
        conn_abandon(c, "timeout");
        if (!c->closed)
          conn_write(c, ts);
      }
      break;
    }
    uint64_t wake = deadline;
    for (unsigned i = 0; i < O.connections; i++) {
      conn *c = &CONNS[i];
      pfd[i] =
          (struct pollfd){.fd = c->closed ? -1 : c->sock.fd, .events = POLLIN};
      if (c->closed)
        continue;
      uint64_t e = ngtcp2_conn_get_expiry(c->q);
      if (e < wake)
        wake = e;
      if (O.read_rate > 0 && ts + 5 * MS < wake)
        wake = ts + 5 * MS;
    }
    uint64_t ms = wake > ts ? (wake - ts + MS - 1) / MS : 0;
    if (ms > 1000)
      ms = 1000;
    int pr = poll(pfd, O.connections, (int)ms);
    if (pr < 0 && errno != EINTR)
      die(2, "poll: %s", strerror(errno));
    for (unsigned i = 0; pr > 0 && i < O.connections; i++)
      if (pfd[i].revents & (POLLIN | POLLERR))
        conn_read(&CONNS[i]);
    ts = now_ns();
    for (unsigned i = 0; i < O.connections; i++) {
      conn *c = &CONNS[i];
      if (c->closed || ngtcp2_conn_get_expiry(c->q) > ts)
        continue;
      int rv = ngtcp2_conn_handle_expiry(c->q, ts);
      if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        c->idle_close = 1;
        c->closed = 1;
      } else if (rv != 0) {
        set_local_error(c, rv, ngtcp2_strerror(rv));
      }
    }
  }
  for (unsigned i = 0; i < O.connections; i++)
    conn_close(&CONNS[i]);
  free(pfd);
}

/* ---- report ---- */

static void json_bytes(const void *data, size_t n) {
  const uint8_t *p = data;
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch >= 0x20 && ch < 0x7f)
      putchar(ch);
    else
      printf("\\u%04x", ch);
  }
  putchar('"');
}

static void json_str(const char *s) {
  if (s == NULL)
    printf("null");
  else
    json_bytes(s, strlen(s));
}

static void json_counts(const counts *c, int hex) {
  putchar('{');
  for (size_t i = 0; i < c->len; i++)
    printf(hex ? "%s\"0x%" PRIx64 "\": %" PRIu64
               : "%s\"%" PRIu64 "\": %" PRIu64,
           i ? ", " : "", c->key[i], c->n[i]);
  if (c->other)
    printf("%s\"other\": %" PRIu64, c->len ? ", " : "", c->other);
  putchar('}');
}

typedef struct totals {
  uint64_t ok, failed, msgs_sent, msgs_ok, mismatches, payload_tx, payload_rx,
      stream_tx, stream_rx, body, pongs, fin, reset, none;
  counts closes;
} totals;

static void add_tunnel(totals *s, const tunnel *t) {
  s->ok += t->ok;
  s->failed += !t->ok;
  s->msgs_sent += t->msgs_queued;
  s->msgs_ok += t->msgs_rx - t->mismatches;
  s->mismatches += t->mismatches;
  s->payload_tx += t->payload_queued;
  s->payload_rx += t->payload_rx;
  s->stream_tx += t->stream_tx;
  s->stream_rx += t->stream_rx;
  s->body += t->body;
  s->pongs += t->pong_rcvd;
  if (t->server_fin)
    s->fin++;
  else if (t->reset_code >= 0)
    s->reset++;
  else
    s->none++;
  if (t->close_rcvd)
    counts_add(&s->closes, (uint64_t)t->close_code, 1);
}

static void report(double elapsed) {
  totals all = {0};
  counts statuses = {0}, resets = {0}, stops = {0};
  int ecp = -1; /* -1 none received, 0 some without, 1 all with */
  for (unsigned i = 0; i < O.connections; i++) {
    const conn *c = &CONNS[i];
    if (c->settings_received)
      ecp = (ecp != 0 && c->enable_connect_protocol == 1) ? 1 : 0;
    for (unsigned k = 0; k < c->nt; k++)
      add_tunnel(&all, &c->t[k]);
    counts_merge(&statuses, &c->statuses);
    counts_merge(&resets, &c->resets);
    counts_merge(&stops, &c->stops);
  }
  printf("{\"settings_enable_connect_protocol\": %s", ecp < 0 ? "null"
                                                      : ecp   ? "true"
                                                              : "false");
  printf(", \"tunnels\": %" PRIu64 ", \"tunnels_ok\": %" PRIu64
         ", \"tunnels_failed\": %" PRIu64 ", \"statuses\": ",
         (uint64_t)O.connections * O.tunnels, all.ok, all.failed);
  json_counts(&statuses, 0);
  printf(", \"first_response_headers\": [");
  for (size_t i = 0; i < nfirst_headers; i++) {
    printf(i ? ", [" : "[");
    json_bytes(first_headers[i].name, first_headers[i].namelen);
    printf(", ");
    json_bytes(first_headers[i].value, first_headers[i].valuelen);
    printf("]");
  }
  printf("], \"first_response_body\": ");
  json_bytes(first_body, first_body_len);
  printf(", \"response_body_bytes\": %" PRIu64, all.body);
  printf(", \"messages_sent\": %" PRIu64 ", \"messages_ok\": %" PRIu64
         ", \"mismatches\": %" PRIu64,
         all.msgs_sent, all.msgs_ok, all.mismatches);
  printf(", \"payload_bytes_sent\": %" PRIu64
         ", \"payload_bytes_received\": %" PRIu64
         ", \"stream_bytes_sent\": %" PRIu64
         ", \"stream_bytes_received\": %" PRIu64,
         all.payload_tx, all.payload_rx, all.stream_tx, all.stream_rx);
  printf(", \"pongs\": %" PRIu64 ", \"server_close_codes\": ", all.pongs);
  json_counts(&all.closes, 0);
  printf(", \"server_end\": {\"fin\": %" PRIu64 ", \"reset\": %" PRIu64
         ", \"none\": %" PRIu64 "}, \"resets_received\": ",
         all.fin, all.reset, all.none);
  json_counts(&resets, 1);
  printf(", \"stop_sending_received\": ");
  json_counts(&stops, 1);
  printf(", \"resets_sent\": %" PRIu64 ", \"max_open_tunnels\": %u",
         resets_sent, max_open);
  printf(", \"elapsed\": %.3f, \"messages_per_second\": %.1f"
         ", \"bytes_per_second\": %.0f",
         elapsed, elapsed > 0 ? (double)all.msgs_ok / elapsed : 0.0,
         elapsed > 0 ? (double)all.payload_rx / elapsed : 0.0);
  printf(", \"failures\": [");
  for (size_t i = 0; i < nfailures; i++) {
    printf("%s{\"connection\": %u, \"tunnel\": %u, \"stream\": %" PRId64
           ", \"reason\": ",
           i ? ", " : "", FAILURES[i].conn, FAILURES[i].tunnel,
           FAILURES[i].stream);
    json_str(FAILURES[i].why);
    printf("}");
  }
  printf("], \"connections\": [");
  for (unsigned i = 0; i < O.connections; i++) {
    const conn *c = &CONNS[i];
    totals s = {0};
    for (unsigned k = 0; k < c->nt; k++)
      add_tunnel(&s, &c->t[k]);
    printf("%s{\"index\": %u, \"handshake\": %s, \"settings_received\": %s"
           ", \"enable_connect_protocol\": ",
           i ? ", " : "", i, c->handshake_done ? "true" : "false",
           c->settings_received ? "true" : "false");
    if (c->settings_received)
      printf("%" PRIu64, c->enable_connect_protocol);
    else
      printf("null");
    printf(", \"tunnels_ok\": %" PRIu64 ", \"tunnels_failed\": %" PRIu64
           ", \"max_open_tunnels\": %u, \"statuses\": ",
           s.ok, s.failed, c->max_open);
    json_counts(&c->statuses, 0);
    printf(", \"messages_ok\": %" PRIu64 ", \"mismatches\": %" PRIu64
           ", \"stream_bytes_sent\": %" PRIu64
           ", \"stream_bytes_received\": %" PRIu64 ", \"resets_received\": ",
           s.msgs_ok, s.mismatches, s.stream_tx, s.stream_rx);
    json_counts(&c->resets, 1);
    printf(", \"goaway\": ");
    if (c->goaway >= 0)
      printf("%" PRId64, c->goaway);
    else
      printf("null");
    const ngtcp2_ccerr *cc =
        c->draining && c->q ? ngtcp2_conn_get_ccerr(c->q) : NULL;
    printf(", \"connection_close\": ");
    if (cc != NULL) {
      printf("{\"code\": %" PRIu64 ", \"type\": \"%s\", \"reason\": ",
             cc->error_code,
             cc->type == NGTCP2_CCERR_TYPE_APPLICATION ? "application"
                                                       : "transport");
      if (cc->reason != NULL)
        json_bytes(cc->reason, cc->reasonlen);
      else
        printf("null");
      printf("}");
    } else {
      printf("null");
    }
    printf(", \"idle_close\": %s, \"local_error\": ",
           c->idle_close ? "true" : "false");
    json_str(c->local_error);
    printf("}");
  }
  printf("]}\n");
  fflush(stdout);
}

/* ---- options ---- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: h3ws --host ADDR --port N [--sni NAME] [--ca FILE]\n"
          "  [--authority V] [--path V] [--protocol V] [--method V]\n"
          "  [--scheme V] [--omit :NAME]... [--ws-protocol V]\n"
          "  [--ws-extensions V] [--header NAME VALUE]... [--no-ws-version]\n"
          "  [--ignore-settings] [--connections N] [--tunnels M]\n"
          "  [--messages K] [--size LIST] [--text|--binary|--mixed]\n"
          "  [--fragment B] [--ping] [--stream-bytes N] [--send-buffer B]\n"
          "  [--read-rate BPS] [--stream-window B] [--conn-window B]\n"
          "  [--reset-after B] [--fin-after-messages] [--expect-server-close]\n"
          "  [--expect-status N] [--expect-reset CODE] [--timeout SECS]\n"
          "  [--verbose] | --self-test\n"
          "The options are described at the top of h3ws.c.\n");
}

/* A byte count with an optional K/M/G (binary) suffix. */
static int parse_bytes(const char *s, const char *end, uint64_t *v) {
  char *e;
  errno = 0;
  unsigned long long n = strtoull(s, &e, 10);
  if (e == s || errno != 0)
    return -1;
  uint64_t mult = 1;
  if (e < end && (*e == 'K' || *e == 'k'))
    mult = 1024, e++;
  else if (e < end && (*e == 'M' || *e == 'm'))
    mult = 1024 * 1024, e++;
  else if (e < end && (*e == 'G' || *e == 'g'))
    mult = 1024 * 1024 * 1024, e++;
  if (e != end)
    return -1;
  *v = (uint64_t)n * mult;
  return 0;
}

static uint64_t bytes_opt(const char *name, const char *s) {
  uint64_t v;
  if (parse_bytes(s, s + strlen(s), &v) != 0)
    die(1, "--%s: not a byte count: %s", name, s);
  return v;
}

static void parse_sizes(const char *s) {
  O.nsizes = 0;
  while (*s) {
    const char *end = strchr(s, ',');
    if (end == NULL)
      end = s + strlen(s);
    const char *dash = memchr(s, '-', (size_t)(end - s));
    size_spec sp;
    if (O.nsizes == MAX_SIZES)
      die(1, "--size: at most %d sizes", MAX_SIZES);
    if (dash
            ? parse_bytes(s, dash, &sp.lo) || parse_bytes(dash + 1, end, &sp.hi)
            : parse_bytes(s, end, &sp.lo))
      die(1, "--size: not a size list: %s", s);
    if (!dash)
      sp.hi = sp.lo;
    if (sp.hi < sp.lo || sp.hi > (uint64_t)1 << 31)
      die(1, "--size: bad size or range");
    O.sizes[O.nsizes++] = sp;
    s = *end ? end + 1 : end;
  }
  if (O.nsizes == 0)
    die(1, "--size: empty");
}

static void add_nv(const char *name, const char *value) {
  if (NNV == sizeof(NVA) / sizeof(NVA[0]))
    die(1, "too many request fields");
  NVA[NNV++] = (nghttp3_nv){.name = (const uint8_t *)name,
                            .value = (const uint8_t *)value,
                            .namelen = strlen(name),
                            .valuelen = strlen(value),
                            .flags = NGHTTP3_NV_FLAG_NONE};
}

static void build_request(void) {
  static char authority[300];
  if (O.authority == NULL) {
    snprintf(authority, sizeof(authority), "%s:%s", O.sni, O.port);
    O.authority = authority;
  }
  add_nv(":method", O.method);
  if (!O.omit_protocol)
    add_nv(":protocol", O.protocol);
  if (!O.omit_scheme)
    add_nv(":scheme", O.scheme);
  if (!O.omit_authority)
    add_nv(":authority", O.authority);
  if (!O.omit_path)
    add_nv(":path", O.path);
  if (!O.no_ws_version)
    add_nv("sec-websocket-version", "13");
  if (O.ws_protocol)
    add_nv("sec-websocket-protocol", O.ws_protocol);
  if (O.ws_extensions)
    add_nv("sec-websocket-extensions", O.ws_extensions);
  for (size_t i = 0; i < O.nheaders; i++)
    add_nv(O.hname[i], O.hvalue[i]);
}

enum {
  OPT_HOST = 256,
  OPT_PORT,
  OPT_SNI,
  OPT_CA,
  OPT_AUTHORITY,
  OPT_PATH,
  OPT_PROTOCOL,
  OPT_METHOD,
  OPT_SCHEME,
  OPT_OMIT,
  OPT_WS_PROTOCOL,
  OPT_WS_EXTENSIONS,
  OPT_HEADER,
  OPT_NO_WS_VERSION,
  OPT_IGNORE_SETTINGS,
  OPT_CONNECTIONS,
  OPT_TUNNELS,
  OPT_MESSAGES,
  OPT_SIZE,
  OPT_TEXT,
  OPT_BINARY,
  OPT_MIXED,
  OPT_FRAGMENT,
  OPT_PING,
  OPT_STREAM_BYTES,
  OPT_SEND_BUFFER,
  OPT_READ_RATE,
  OPT_STREAM_WINDOW,
  OPT_CONN_WINDOW,
  OPT_RESET_AFTER,
  OPT_FIN_AFTER,
  OPT_EXPECT_CLOSE,
  OPT_EXPECT_STATUS,
  OPT_EXPECT_RESET,
  OPT_TIMEOUT,
  OPT_VERBOSE,
  OPT_SELF_TEST,
  OPT_HELP,
};

static void parse_options(int argc, char **argv, int *self_test) {
  static const struct option opts[] = {
      {"host", required_argument, NULL, OPT_HOST},
      {"port", required_argument, NULL, OPT_PORT},
      {"sni", required_argument, NULL, OPT_SNI},
      {"ca", required_argument, NULL, OPT_CA},
      {"authority", required_argument, NULL, OPT_AUTHORITY},
      {"path", required_argument, NULL, OPT_PATH},
      {"protocol", required_argument, NULL, OPT_PROTOCOL},
      {"method", required_argument, NULL, OPT_METHOD},
      {"scheme", required_argument, NULL, OPT_SCHEME},
      {"omit", required_argument, NULL, OPT_OMIT},
      {"ws-protocol", required_argument, NULL, OPT_WS_PROTOCOL},
      {"ws-extensions", required_argument, NULL, OPT_WS_EXTENSIONS},
      {"header", required_argument, NULL, OPT_HEADER},
      {"no-ws-version", no_argument, NULL, OPT_NO_WS_VERSION},
      {"ignore-settings", no_argument, NULL, OPT_IGNORE_SETTINGS},
      {"connections", required_argument, NULL, OPT_CONNECTIONS},
      {"tunnels", required_argument, NULL, OPT_TUNNELS},
      {"messages", required_argument, NULL, OPT_MESSAGES},
      {"size", required_argument, NULL, OPT_SIZE},
      {"text", no_argument, NULL, OPT_TEXT},
      {"binary", no_argument, NULL, OPT_BINARY},
      {"mixed", no_argument, NULL, OPT_MIXED},
      {"fragment", required_argument, NULL, OPT_FRAGMENT},
      {"ping", no_argument, NULL, OPT_PING},
      {"stream-bytes", required_argument, NULL, OPT_STREAM_BYTES},
      {"send-buffer", required_argument, NULL, OPT_SEND_BUFFER},
      {"read-rate", required_argument, NULL, OPT_READ_RATE},
      {"stream-window", required_argument, NULL, OPT_STREAM_WINDOW},
      {"conn-window", required_argument, NULL, OPT_CONN_WINDOW},
      {"reset-after", required_argument, NULL, OPT_RESET_AFTER},
      {"fin-after-messages", no_argument, NULL, OPT_FIN_AFTER},
      {"expect-server-close", no_argument, NULL, OPT_EXPECT_CLOSE},
      {"expect-status", required_argument, NULL, OPT_EXPECT_STATUS},
      {"expect-reset", required_argument, NULL, OPT_EXPECT_RESET},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"verbose", no_argument, NULL, OPT_VERBOSE},
      {"self-test", no_argument, NULL, OPT_SELF_TEST},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  double timeout = 30;
  int o;

  O = (options){.sni = "localhost",
                .path = "/",
                .protocol = "websocket",
                .method = "CONNECT",
                .scheme = "https",
                .connections = 1,
                .tunnels = 1,
                .messages = 1,
                .nsizes = 1,
                .sizes = {{16, 16}},
                .send_buffer = 4 * 1024 * 1024,
                .stream_window = 1024 * 1024,
                .conn_window = 64 * 1024 * 1024,
                .expect_status = 200,
                .expect_reset = -1};
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case OPT_HOST: O.host = optarg; break;
    case OPT_PORT: O.port = optarg; break;
    case OPT_SNI: O.sni = optarg; break;
    case OPT_CA: O.ca = optarg; break;
    case OPT_AUTHORITY: O.authority = optarg; break;
    case OPT_PATH: O.path = optarg; break;
    case OPT_PROTOCOL: O.protocol = optarg; break;
    case OPT_METHOD: O.method = optarg; break;
    case OPT_SCHEME: O.scheme = optarg; break;
    case OPT_OMIT:
      if (strcmp(optarg, ":protocol") == 0)
        O.omit_protocol = 1;
      else if (strcmp(optarg, ":scheme") == 0)
        O.omit_scheme = 1;
      else if (strcmp(optarg, ":path") == 0)
        O.omit_path = 1;
      else if (strcmp(optarg, ":authority") == 0)
        O.omit_authority = 1;
      else
        die(1, "--omit: one of :protocol :scheme :path :authority");
      break;
    case OPT_WS_PROTOCOL: O.ws_protocol = optarg; break;
    case OPT_WS_EXTENSIONS: O.ws_extensions = optarg; break;
    case OPT_HEADER:
      if (optind >= argc)
        die(1, "--header NAME VALUE");
      if (O.nheaders == MAX_FIELDS)
        die(1, "--header: at most %d", MAX_FIELDS);
      O.hname[O.nheaders] = optarg;
      O.hvalue[O.nheaders++] = argv[optind++];
      break;
    case OPT_NO_WS_VERSION: O.no_ws_version = 1; break;
    case OPT_IGNORE_SETTINGS: O.ignore_settings = 1; break;
    case OPT_CONNECTIONS:
      O.connections = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case OPT_TUNNELS: O.tunnels = (unsigned)strtoul(optarg, NULL, 10); break;
    case OPT_MESSAGES: O.messages = strtoull(optarg, NULL, 10); break;
    case OPT_SIZE: parse_sizes(optarg); break;
    case OPT_TEXT: O.type = TYPE_TEXT; break;
    case OPT_BINARY: O.type = TYPE_BINARY; break;
    case OPT_MIXED: O.type = TYPE_MIXED; break;
    case OPT_FRAGMENT: O.fragment = bytes_opt("fragment", optarg); break;
    case OPT_PING: O.ping = 1; break;
    case OPT_STREAM_BYTES:
      O.stream_bytes = bytes_opt("stream-bytes", optarg);
      break;
    case OPT_SEND_BUFFER:
      O.send_buffer = bytes_opt("send-buffer", optarg);
      break;
    case OPT_READ_RATE: O.read_rate = bytes_opt("read-rate", optarg); break;
    case OPT_STREAM_WINDOW:
      O.stream_window = bytes_opt("stream-window", optarg);
      break;
    case OPT_CONN_WINDOW:
      O.conn_window = bytes_opt("conn-window", optarg);
      break;
    case OPT_RESET_AFTER:
      O.reset_after = bytes_opt("reset-after", optarg);
      break;
    case OPT_FIN_AFTER: O.fin_after_messages = 1; break;
    case OPT_EXPECT_CLOSE: O.expect_server_close = 1; break;
    case OPT_EXPECT_STATUS: O.expect_status = atoi(optarg); break;
    case OPT_EXPECT_RESET:
      O.expect_reset = (int64_t)strtoull(optarg, NULL, 0);
      break;
    case OPT_TIMEOUT: timeout = strtod(optarg, NULL); break;
    case OPT_VERBOSE: O.verbose = 1; break;
    case OPT_SELF_TEST: *self_test = 1; return;
    case OPT_HELP: usage(stdout); exit(0);
    default: usage(stderr); exit(1);
    }
  }
  if (O.host == NULL || O.port == NULL || optind != argc ||
      !(timeout > 0 && timeout < 86400) || O.connections == 0 ||
      O.connections > 1000 || O.tunnels > 100000) {
    usage(stderr);
    exit(1);
  }
  if (O.reset_after > 0 && (O.stream_bytes > 0 || O.fin_after_messages))
    die(1, "--reset-after goes alone (it sends the first message only)");
  if (O.stream_window == 0 || O.conn_window == 0 || O.send_buffer == 0)
    die(1, "windows and buffers must be above 0");
  O.timeout_ns = (uint64_t)(timeout * 1e9);
}

int main(int argc, char **argv) {
  int self_test = 0;
  parse_options(argc, argv, &self_test);
  if (self_test) {
    int f = ws_self_test();
    printf("h3ws self-test: %s\n", f ? "FAILED" : "ok");
    return f ? 4 : 0;
  }
  build_request();
  uint8_t seed[8];
  on_rand(seed, sizeof(seed), NULL);
  memcpy(&key_state, seed, sizeof(seed));
  key_state |= 1;

  uint64_t start = now_ns();
  CONNS = xcalloc(O.connections, sizeof(conn));
  for (unsigned i = 0; i < O.connections; i++) {
    conn *c = &CONNS[i];
    *c = (conn){.index = i,
                .nt = O.tunnels,
                .goaway = -1,
                .sock.fd = -1,
                .ctrl_id = -1};
    c->t = xcalloc(O.tunnels, sizeof(tunnel));
    for (unsigned k = 0; k < O.tunnels; k++)
      c->t[k] = (tunnel){.c = c,
                         .index = k,
                         .id = -1,
                         .status = -1,
                         .close_code = -1,
                         .reset_code = -1,
                         .stop_code = -1};
    conn_open(c);
  }
  run(start);
  double elapsed = (double)(now_ns() - start) / 1e9;
  report(elapsed);

  int status = 0;
  for (unsigned i = 0; i < O.connections; i++) {
    conn *c = &CONNS[i];
    if (!c->handshake_done)
      status = 3;
    for (unsigned k = 0; k < c->nt; k++)
      if (!c->t[k].ok && status == 0)
        status = 4;
  }
  for (unsigned i = 0; i < O.connections; i++) {
    conn *c = &CONNS[i];
    for (unsigned k = 0; k < c->nt; k++)
      txq_free(&c->t[k].tx);
    free(c->t);
    nghttp3_conn_del(c->h3);
    ngtcp2_conn_del(c->q);
    wolfSSL_free(c->ssl);
    wolfSSL_CTX_free(c->ssl_ctx);
    if (c->sock.fd >= 0)
      close(c->sock.fd);
  }
  for (size_t i = 0; i < nfirst_headers; i++) {
    free(first_headers[i].name);
    free(first_headers[i].value);
  }
  free(CONNS);
  wolfSSL_Cleanup();
  return status;
}
