/*
 * h3raw: sends scripted HTTP/3 requests, well-formed or not, over one QUIC
 * connection and reports what the server did with each of them.
 *
 * libcurl and browsers cannot send a malformed HTTP/3 request, and a library
 * encoder would not let a test choose every byte; h3raw encodes HEADERS and
 * DATA frames and QPACK field sections itself (h3raw_codec.c), so anything
 * can go on a request stream. QUIC and TLS are ngtcp2 with its wolfSSL
 * helper.
 *
 *   h3raw --host ADDR --port N [--sni NAME] [--ca FILE] [--timeout SECS]
 *         [--verbose] --script FILE|-
 *
 * The script is text, one command a line; "#" starts a comment. Arguments
 * are bare words or "quoted strings" with the escapes \\ \" \r \n \t \0 and
 * \xHH, so any byte can be written. Numbers may be decimal or 0x-hex.
 *
 *   concurrent          start every stream at once (default: each stream
 *                       starts when the previous one is done)
 *   timeout MS          per-stream limit (default: --timeout)
 *   linger MS           keep the connection open MS after the last stream
 *                       (to see a late CONNECTION_CLOSE); default 0
 *   setting ID VALUE    add a SETTINGS entry on our control stream (the
 *                       default SETTINGS frame is empty, so the server may
 *                       not use the QPACK dynamic table); repeat an ID to
 *                       send it twice
 *   no-settings         our control stream starts with its stream type
 *                       only: whatever follows comes from the actions
 *   omit NAME           do not open our NAME stream (control, encoder or
 *                       decoder) at the start; the server allows a client
 *                       three unidirectional streams, so omitting one
 *                       frees one for "uni"
 *   stream              start the next request stream; actions follow:
 *     headers           a HEADERS frame (header or trailer section); field
 *                       lines follow, up to "end":
 *       field NAME VALUE        literal field line with literal name
 *       static INDEX            indexed field line, static table
 *       static-name INDEX VALUE literal with static name reference
 *       raw-line BYTES          field line bytes as they are
 *       prefix BYTES            replaces the section prefix (default 00 00)
 *     end
 *     data BYTES        a DATA frame
 *     data-fill N       a DATA frame of N bytes "x"
 *     frame TYPE BYTES  a frame of any type with that payload
 *     raw BYTES         bytes as they are (a frame cut in two, a bad length)
 *     pause MS          wait before the next action (cut short once the
 *                       server sent STOP_SENDING: nothing more can go)
 *     fin               end our side of the stream
 *     reset CODE        reset our side of the stream (RESET_STREAM)
 *     stop CODE         STOP_SENDING on the stream: we want no more of the
 *                       response (sent once the handshake is confirmed)
 *     control TYPE BYTES  a frame of any type with that payload on our
 *                       control stream, sent when this action's turn
 *                       comes (e.g. PRIORITY_UPDATE, type 0xf0700: the
 *                       payload is the stream id as a varint, then the
 *                       priority value)
 *     control-raw BYTES bytes as they are on our control stream
 *     control-fin       end our control stream (FIN)
 *     control-reset CODE  reset our control stream, once the server has
 *                       acknowledged what was sent on it before (the same
 *                       for every reset below)
 *     encoder BYTES     bytes on our QPACK encoder stream (instructions)
 *     encoder-fin, encoder-reset CODE
 *     decoder BYTES     bytes on our QPACK decoder stream
 *     decoder-fin, decoder-reset CODE
 *     uni BYTES         open one more unidirectional stream and send BYTES
 *                       on it as they are: its stream type is their first
 *                       varint (or part of it); waits while the server
 *                       allows no more streams
 *     uni-send BYTES, uni-fin, uni-reset CODE
 *                       the same on the newest "uni" stream (in script
 *                       order)
 *     uni-wait-closed   wait until the newest "uni" stream is closed (its
 *                       FIN or reset acknowledged, or the server asked
 *                       STOP_SENDING and our reset was acknowledged)
 *     stop-server TYPE CODE  STOP_SENDING on the server's unidirectional
 *                       stream of that type (0 control, 2 encoder, 3
 *                       decoder), once it has arrived
 *   The actions on unidirectional streams run in their request stream's
 *   turn, after our control stream opened, and may follow its fin or
 *   reset.
 *
 * A stream is done when the server ended its side (FIN, RESET_STREAM or the
 * stream closed) and every action ran or could not (STOP_SENDING), or when
 * its time is up (then h3raw cancels it with H3_REQUEST_CANCELLED). Its
 * report is frozen then: later frames are the answer to our cancellation.
 *
 * Output, on stdout, one JSON object per line: one per script stream, in
 * script order,
 *   {"index": 0, "stream": 0, "status": 200, "informational": [103],
 *    "headers": [["server", "x"]], "trailers": [], "body_len": 5,
 *    "data_first": 3, "data_last": 9,
 *    "fin": true, "reset": null, "stop_sending": null, "timeout": false,
 *    "error": null}
 * ("error" names a response h3raw could not parse; data_first and
 * data_last number the first and last pieces of DATA payload received for
 * the stream on one counter shared by all streams, in arrival order, so
 * the order in which the server interleaved its responses can be seen;
 * -1 when none), then one about the
 * connection:
 *   {"connection_close": null, "close_type": null, "frame_type": null,
 *    "reason": null, "uni": [], "goaway": null, "idle_close": false,
 *    "handshake": true, "local_error": null}
 * where connection_close is the code of a CONNECTION_CLOSE the server sent
 * and "uni" has one entry per "uni" stream opened, in script order:
 *   {"stream": 18, "closed": true, "close_code": 259}
 * (close_code: the code of the RESET_STREAM that closed it, ours or the
 * one ngtcp2 sends when the server asks STOP_SENDING; null if it ended
 * with FIN or is still open).
 * Bytes outside printable ASCII in names and values appear as \u00XX, so a
 * JSON reader that maps code points to bytes (latin-1) gets them back.
 *
 * Example: a GET, then the same request with an uppercase field name, on
 * one connection:
 *
 *   stream
 *   headers
 *     static 17                  # :method GET
 *     static 23                  # :scheme https
 *     static-name 0 "localhost"  # :authority
 *     field ":path" "/"
 *   end
 *   fin
 *   stream
 *   headers
 *     static 17
 *     static 23
 *     static-name 0 "localhost"
 *     field ":path" "/"
 *     field "X-Upper" "1"
 *   end
 *   fin
 *
 * Exit status: 0 when the script ran, whatever the server did; 1 for a usage
 * or script error; 2 for a local failure (socket, TLS, memory); 3 when the
 * handshake did not complete.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "h3raw.h"
#include "quic_client.h"

/* HTTP/3 codes and types (RFC 9114 §7.2, §8.1, §6.2). */
#define H3_NO_ERROR 0x100
#define H3_REQUEST_CANCELLED 0x10c
#define H3_FRAME_DATA 0x00
#define H3_FRAME_HEADERS 0x01
#define H3_FRAME_SETTINGS 0x04
#define H3_FRAME_GOAWAY 0x07
#define H3_STREAM_CONTROL 0x00
#define H3_STREAM_QPACK_ENCODER 0x02
#define H3_STREAM_QPACK_DECODER 0x03

/* A HEADERS or control frame larger than this is not buffered. */
#define MAX_FRAME_BUFFER (1024 * 1024)
/* Packets read per loop iteration, so timers and writes are not starved. */
#define MAX_READS_PER_ROUND 64
#define MAX_UNI_STREAMS 16
/* Unidirectional streams a script may open with "uni". */
#define MAX_EXTRA_UNI 8
#define MAX_INFORMATIONAL 16
#define MAX_TOKENS 8
#define MS ((uint64_t)1000000)

/* ---- the script ---- */

typedef enum act_kind {
  ACT_SEND,
  ACT_FIN,
  ACT_PAUSE,
  ACT_RESET,
  ACT_UNI_SEND,    /* bytes on one of our unidirectional streams */
  ACT_UNI_FIN,     /* its end */
  ACT_UNI_RESET,   /* its reset */
  ACT_UNI_OPEN,    /* a new unidirectional stream */
  ACT_UNI_WAIT,    /* wait until one closed */
  ACT_STOP_SERVER, /* STOP_SENDING on one of the server's */
  ACT_STOP,        /* STOP_SENDING on this request stream */
} act_kind;

/* Our unidirectional streams, as actions name them: the three opened at
 * the start, and those opened by "uni" (UNI_EXTRA + their index). */
enum { UNI_CONTROL = 0, UNI_ENCODER, UNI_DECODER, UNI_EXTRA };

typedef struct act {
  act_kind kind;
  h3r_bytes wire;  /* ACT_SEND, ACT_UNI_SEND, ACT_UNI_OPEN; lives until
                    * exit: ngtcp2 keeps pointers */
  uint64_t num;    /* ACT_PAUSE: ms; ACT_*RESET, ACT_STOP*: code */
  unsigned target; /* ACT_UNI_*: UNI_*; ACT_STOP_SERVER: a stream type */
  int started;
} act;

/* Bytes queued on one stream, sent in order. */
typedef struct sendq {
  int64_t id; /* -1 until opened */
  ngtcp2_vec *segs;
  size_t nsegs, cap;
  size_t seg, off; /* the next byte to hand to ngtcp2 */
  uint64_t queued, acked; /* bytes pushed; acknowledged by the server */
  unsigned fin_wanted : 1, fin_sent : 1, dead : 1, blocked : 1;
} sendq;

/* Reassembles HTTP/3 frames from stream bytes. DATA payloads are counted,
 * not kept. */
typedef struct frame_rx {
  uint8_t hdr[16];
  size_t hdrlen;
  int in_payload;
  uint64_t type, len, got;
  h3r_bytes payload;
  int too_big;
} frame_rx;

typedef struct rstream {
  size_t index;
  act *acts;
  size_t nacts, cap, next;
  int opened, done;
  uint64_t eligible_at, opened_at, pause_until;
  sendq q;
  frame_rx rx;
  /* what the server did */
  int status; /* -1: none */
  int informational[MAX_INFORMATIONAL];
  size_t ninformational;
  h3r_fields headers, trailers;
  uint64_t body_len;
  int64_t data_first, data_last; /* -1: no DATA payload yet */
  int fin, closed, timed_out;
  int we_cut;          /* we reset or cancelled it */
  int64_t reset, stop; /* -1: none; stop: the server's STOP_SENDING */
  const char *error;
} rstream;

typedef struct uni_rx {
  int64_t id;
  uint8_t typebuf[8];
  size_t typelen;
  int have_type;
  uint64_t type;
  frame_rx rx;
} uni_rx;

typedef struct client {
  /* script */
  rstream *streams;
  size_t nstreams, cap;
  int concurrent;
  uint64_t timeout_ns, linger_ns;
  h3r_bytes settings; /* SETTINGS payload */
  /* options */
  const char *host, *port, *sni, *ca;
  int verbose;
  /* connection */
  qc_socket sock;
  WOLFSSL_CTX *ssl_ctx;
  WOLFSSL *ssl;
  ngtcp2_conn *conn;
  ngtcp2_crypto_conn_ref conn_ref;
  /* our control, encoder and decoder streams (UNI_CONTROL..UNI_DECODER),
   * then the script's (UNI_EXTRA + i) */
  sendq uq[UNI_EXTRA + MAX_EXTRA_UNI];
  h3r_bytes uwire[UNI_EXTRA];
  int omit[UNI_EXTRA]; /* "omit": not opened */
  int no_settings;
  size_t nextra, nextra_script;
  int extra_closed[MAX_EXTRA_UNI];
  int64_t extra_close_code[MAX_EXTRA_UNI];
  uni_rx uni[MAX_UNI_STREAMS];
  size_t nuni;
  int handshake_done, uni_opened;
  int confirmed; /* HANDSHAKE_DONE received (RFC 9001 §4.1.2) */
  int closed;   /* no more packets: peer closed, idle, local error */
  int draining; /* the peer sent CONNECTION_CLOSE */
  int idle_close;
  int64_t goaway;
  int64_t data_seq; /* pieces of DATA payload received, all streams */
  const char *local_error;
  int local_liberr; /* ngtcp2 error to send in our CONNECTION_CLOSE */
} client;

static client C;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void trace(const char *fmt, ...) {
  if (!C.verbose)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "h3raw: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

static void die(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "h3raw: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(code);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (q == NULL)
    die(2, "out of memory");
  return q;
}

/* ---- script reader ---- */

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Splits a line into tokens. Returns the count, or -1 with *why set. */
static int tokenize(const char *s, h3r_bytes tok[MAX_TOKENS],
                    const char **why) {
  int n = 0;
  for (;;) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
      s++;
    if (*s == '\0' || *s == '#')
      return n;
    if (n == MAX_TOKENS) {
      *why = "too many arguments";
      return -1;
    }
    h3r_bytes *t = &tok[n++];
    t->len = 0;
    if (*s != '"') {
      const char *e = s;
      while (*e && *e != ' ' && *e != '\t' && *e != '\r' && *e != '\n')
        e++;
      if (h3r_bytes_append(t, s, (size_t)(e - s)) != 0)
        die(2, "out of memory");
      s = e;
      continue;
    }
    s++;
    /* An empty quoted string still needs a non-NULL buffer. */
    if (h3r_bytes_append(t, "", 1) != 0)
      die(2, "out of memory");
    t->len = 0;
    for (;;) {
      int c = (unsigned char)*s++;
      if (c == '\0') {
        *why = "unterminated string";
        return -1;
      }
      if (c == '"')
        break;
      if (c == '\\') {
        int e = (unsigned char)*s++;
        switch (e) {
        case '\\': c = '\\'; break;
        case '"': c = '"'; break;
        case 'r': c = '\r'; break;
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case '0': c = 0; break;
        case 'x': {
          int h = hexval(s[0]), l = h < 0 ? -1 : hexval(s[1]);
          if (h < 0 || l < 0) {
            *why = "bad \\x escape";
            return -1;
          }
          c = h * 16 + l;
          s += 2;
          break;
        }
        default: *why = "unknown escape"; return -1;
        }
      }
      if (h3r_bytes_byte(t, (uint8_t)c) != 0)
        die(2, "out of memory");
    }
  }
}

static int tok_is(const h3r_bytes *t, const char *word) {
  size_t n = strlen(word);
  return t->len == n && memcmp(t->data, word, n) == 0;
}

static int tok_num(const h3r_bytes *t, uint64_t *v) {
  char buf[32];
  char *end;
  if (t->len == 0 || t->len >= sizeof(buf))
    return -1;
  memcpy(buf, t->data, t->len);
  buf[t->len] = '\0';
  if (buf[0] == '-')
    return -1;
  errno = 0;
  unsigned long long x = strtoull(buf, &end, 0);
  if (errno != 0 || *end != '\0')
    return -1;
  *v = x;
  return 0;
}

static act *stream_add_act(rstream *st, act_kind kind) {
  if (st->nacts == st->cap) {
    st->cap = st->cap ? 2 * st->cap : 8;
    st->acts = xrealloc(st->acts, st->cap * sizeof(*st->acts));
  }
  act *a = &st->acts[st->nacts++];
  *a = (act){.kind = kind};
  return a;
}

static void script_error(const char *file, int line, const char *why) {
  die(1, "%s:%d: %s", file, line, why);
}

/* "control", "encoder" or "decoder": UNI_*, else -1. */
static int uni_name(const h3r_bytes *t) {
  static const char *const names[UNI_EXTRA] = {"control", "encoder", "decoder"};
  for (int i = 0; i < UNI_EXTRA; i++)
    if (tok_is(t, names[i]))
      return i;
  return -1;
}

/* A unidirectional stream action: NAME-raw / NAME BYTES, NAME-fin,
 * NAME-reset CODE, where NAME is control, encoder, decoder or uni (the
 * newest "uni" stream: UNI_EXTRA here). "control BYTES" does not exist:
 * "control TYPE BYTES" sends a frame. Returns 0 or -1. */
static int uni_action(const h3r_bytes *cmd, unsigned *target, act_kind *kind) {
  static const struct {
    const char *word;
    unsigned target;
    act_kind kind;
  } table[] = {
      {"control-raw", UNI_CONTROL, ACT_UNI_SEND},
      {"control-fin", UNI_CONTROL, ACT_UNI_FIN},
      {"control-reset", UNI_CONTROL, ACT_UNI_RESET},
      {"encoder", UNI_ENCODER, ACT_UNI_SEND},
      {"encoder-fin", UNI_ENCODER, ACT_UNI_FIN},
      {"encoder-reset", UNI_ENCODER, ACT_UNI_RESET},
      {"decoder", UNI_DECODER, ACT_UNI_SEND},
      {"decoder-fin", UNI_DECODER, ACT_UNI_FIN},
      {"decoder-reset", UNI_DECODER, ACT_UNI_RESET},
      {"uni-send", UNI_EXTRA, ACT_UNI_SEND},
      {"uni-fin", UNI_EXTRA, ACT_UNI_FIN},
      {"uni-reset", UNI_EXTRA, ACT_UNI_RESET},
      {"uni-wait-closed", UNI_EXTRA, ACT_UNI_WAIT},
  };
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
    if (tok_is(cmd, table[i].word)) {
      *target = table[i].target;
      *kind = table[i].kind;
      return 0;
    }
  return -1;
}

/* Reads the script from f. Exits with status 1 on an error. */
static void read_script(FILE *f, const char *file) {
  char *line = NULL;
  size_t linecap = 0;
  h3r_bytes tok[MAX_TOKENS] = {{0}};
  h3r_bytes section = {0}; /* field lines of the open headers block */
  h3r_bytes prefix = {0};
  int in_headers = 0, have_prefix = 0, lineno = 0;
  rstream *st = NULL;
  const char *why = NULL;

  while (getline(&line, &linecap, f) >= 0) {
    lineno++;
    int n = tokenize(line, tok, &why);
    if (n < 0)
      script_error(file, lineno, why);
    if (n == 0)
      continue;
    const h3r_bytes *cmd = &tok[0];
    uint64_t a1 = 0, a2 = 0;
    unsigned target = 0;
    act_kind kind = ACT_SEND;

    if (in_headers) {
      int rv = 0;
      if (tok_is(cmd, "end") && n == 1) {
        h3r_bytes payload = {0};
        act *a = stream_add_act(st, ACT_SEND);
        if (have_prefix)
          rv = h3r_bytes_append(&payload, prefix.data, prefix.len);
        else
          rv = h3r_qpack_prefix(&payload);
        rv = rv || h3r_bytes_append(&payload, section.data, section.len);
        rv = rv || h3r_put_frame(&a->wire, H3_FRAME_HEADERS, payload.data,
                                 payload.len);
        h3r_bytes_free(&payload);
        in_headers = 0;
      } else if (tok_is(cmd, "field") && n == 3) {
        rv = h3r_qpack_literal(&section, tok[1].data, tok[1].len, tok[2].data,
                               tok[2].len);
      } else if (tok_is(cmd, "static") && n == 2 &&
                 tok_num(&tok[1], &a1) == 0) {
        rv = h3r_qpack_static(&section, a1);
      } else if (tok_is(cmd, "static-name") && n == 3 &&
                 tok_num(&tok[1], &a1) == 0) {
        rv = h3r_qpack_static_name(&section, a1, tok[2].data, tok[2].len);
      } else if (tok_is(cmd, "raw-line") && n == 2) {
        rv = h3r_bytes_append(&section, tok[1].data, tok[1].len);
      } else if (tok_is(cmd, "prefix") && n == 2) {
        prefix.len = 0;
        rv = h3r_bytes_append(&prefix, tok[1].data, tok[1].len);
        have_prefix = 1;
      } else {
        script_error(file, lineno,
                     "expected field, static, static-name, "
                     "raw-line, prefix or end");
      }
      if (rv != 0)
        die(2, "out of memory");
      continue;
    }

    if (tok_is(cmd, "concurrent") && n == 1) {
      C.concurrent = 1;
    } else if (tok_is(cmd, "timeout") && n == 2 && tok_num(&tok[1], &a1) == 0) {
      C.timeout_ns = a1 * MS;
    } else if (tok_is(cmd, "linger") && n == 2 && tok_num(&tok[1], &a1) == 0) {
      C.linger_ns = a1 * MS;
    } else if (tok_is(cmd, "setting") && n == 3 && tok_num(&tok[1], &a1) == 0 &&
               tok_num(&tok[2], &a2) == 0) {
      if (h3r_put_varint(&C.settings, a1) || h3r_put_varint(&C.settings, a2))
        die(2, "out of memory");
    } else if (tok_is(cmd, "no-settings") && n == 1) {
      C.no_settings = 1;

    } else if (tok_is(cmd, "omit") && n == 2 && uni_name(&tok[1]) >= 0) {
      C.omit[uni_name(&tok[1])] = 1;
    } else if (tok_is(cmd, "stream") && n == 1) {
      if (C.nstreams == C.cap) {
        C.cap = C.cap ? 2 * C.cap : 8;
        C.streams = xrealloc(C.streams, C.cap * sizeof(*C.streams));
      }
      st = &C.streams[C.nstreams];
      *st = (rstream){.index = C.nstreams,
                      .status = -1,
                      .data_first = -1,
                      .data_last = -1,
                      .reset = -1,
                      .stop = -1,
                      .q = {.id = -1}};
      C.nstreams++;
    } else if (st == NULL) {
      script_error(file, lineno,
                   "unknown global command, or an action "
                   "before the first \"stream\"");
    } else if (tok_is(cmd, "headers") && n == 1) {
      in_headers = 1;
      have_prefix = 0;
      section.len = 0;
    } else if (tok_is(cmd, "data") && n == 2) {
      act *a = stream_add_act(st, ACT_SEND);
      if (h3r_put_frame(&a->wire, H3_FRAME_DATA, tok[1].data, tok[1].len))
        die(2, "out of memory");
    } else if (tok_is(cmd, "data-fill") && n == 2 &&
               tok_num(&tok[1], &a1) == 0 && a1 <= 64u * 1024 * 1024) {
      act *a = stream_add_act(st, ACT_SEND);
      uint8_t *fill = malloc(a1 ? a1 : 1);
      if (fill == NULL)
        die(2, "out of memory");
      memset(fill, 'x', a1);
      if (h3r_put_frame(&a->wire, H3_FRAME_DATA, fill, a1))
        die(2, "out of memory");
      free(fill);
    } else if (tok_is(cmd, "frame") && n == 3 && tok_num(&tok[1], &a1) == 0 &&
               a1 < (1ull << 62)) {
      act *a = stream_add_act(st, ACT_SEND);
      if (h3r_put_frame(&a->wire, a1, tok[2].data, tok[2].len))
        die(2, "out of memory");
    } else if (tok_is(cmd, "raw") && n == 2) {
      act *a = stream_add_act(st, ACT_SEND);
      if (h3r_bytes_append(&a->wire, tok[1].data, tok[1].len))
        die(2, "out of memory");
    } else if (tok_is(cmd, "pause") && n == 2 && tok_num(&tok[1], &a1) == 0) {
      stream_add_act(st, ACT_PAUSE)->num = a1;
    } else if (tok_is(cmd, "fin") && n == 1) {
      stream_add_act(st, ACT_FIN);
    } else if (tok_is(cmd, "reset") && n == 2 && tok_num(&tok[1], &a1) == 0 &&
               a1 < (1ull << 62)) {
      stream_add_act(st, ACT_RESET)->num = a1;
    } else if (tok_is(cmd, "stop") && n == 2 && tok_num(&tok[1], &a1) == 0 &&
               a1 < (1ull << 62)) {
      stream_add_act(st, ACT_STOP)->num = a1;
    } else if (tok_is(cmd, "control") && n == 3 && tok_num(&tok[1], &a1) == 0 &&
               a1 < (1ull << 62)) {
      act *a = stream_add_act(st, ACT_UNI_SEND);
      a->target = UNI_CONTROL;
      if (h3r_put_frame(&a->wire, a1, tok[2].data, tok[2].len))
        die(2, "out of memory");
    } else if (tok_is(cmd, "uni") && n == 2) {
      if (C.nextra_script == MAX_EXTRA_UNI)
        script_error(file, lineno, "too many \"uni\" streams");
      act *a = stream_add_act(st, ACT_UNI_OPEN);
      a->target = UNI_EXTRA + (unsigned)C.nextra_script++;
      if (h3r_bytes_append(&a->wire, tok[1].data, tok[1].len))
        die(2, "out of memory");
    } else if (uni_action(cmd, &target, &kind) == 0 &&
               n == (kind == ACT_UNI_FIN || kind == ACT_UNI_WAIT ? 1 : 2) &&
               (kind != ACT_UNI_RESET ||
                (tok_num(&tok[1], &a1) == 0 && a1 < (1ull << 62)))) {
      if (target == UNI_EXTRA) {
        if (C.nextra_script == 0)
          script_error(file, lineno, "no \"uni\" stream before this");
        target = UNI_EXTRA + (unsigned)C.nextra_script - 1;
      }
      act *a = stream_add_act(st, kind);
      a->target = target;
      a->num = a1;
      if (kind == ACT_UNI_SEND &&
          h3r_bytes_append(&a->wire, tok[1].data, tok[1].len))
        die(2, "out of memory");
    } else if (tok_is(cmd, "stop-server") && n == 3 &&
               tok_num(&tok[1], &a1) == 0 && a1 <= H3_STREAM_QPACK_DECODER &&
               a1 != 1 && tok_num(&tok[2], &a2) == 0 && a2 < (1ull << 62)) {
      act *a = stream_add_act(st, ACT_STOP_SERVER);
      a->target = (unsigned)a1;
      a->num = a2;
    } else {
      script_error(file, lineno, "unknown command or wrong arguments");
    }
  }
  if (in_headers)
    script_error(file, lineno, "headers block without \"end\"");
  for (size_t i = 0; i < C.nstreams; i++)
    for (size_t k = 0; k < C.streams[i].nacts; k++) {
      const act *a = &C.streams[i].acts[k];
      if ((a->kind == ACT_UNI_SEND || a->kind == ACT_UNI_FIN ||
           a->kind == ACT_UNI_RESET) &&
          a->target < UNI_EXTRA && C.omit[a->target])
        die(1, "%s: stream %zu: an action on an omitted stream", file, i + 1);
    }
  /* Nothing may follow the end of the send side but pauses. */
  for (size_t i = 0; i < C.nstreams; i++) {
    int ended = 0;
    for (size_t k = 0; k < C.streams[i].nacts; k++) {
      act_kind kind = C.streams[i].acts[k].kind;
      if (ended && (kind == ACT_SEND || kind == ACT_FIN || kind == ACT_RESET))
        die(1, "%s: stream %zu: an action after fin or reset", file, i + 1);
      ended = ended || kind == ACT_FIN || kind == ACT_RESET;
    }
  }
  for (int i = 0; i < MAX_TOKENS; i++)
    h3r_bytes_free(&tok[i]);
  h3r_bytes_free(&section);
  h3r_bytes_free(&prefix);
  free(line);
}

/* ---- send queues ---- */

static void sendq_push(sendq *q, const uint8_t *data, size_t len) {
  if (len == 0)
    return;
  q->queued += len;
  if (q->nsegs == q->cap) {
    q->cap = q->cap ? 2 * q->cap : 8;
    q->segs = xrealloc(q->segs, q->cap * sizeof(*q->segs));
  }
  q->segs[q->nsegs++] = (ngtcp2_vec){.base = (uint8_t *)data, .len = len};
}

static int sendq_pending(const sendq *q) {
  if (q->id < 0 || q->dead || q->blocked)
    return 0;
  return q->seg < q->nsegs || (q->fin_wanted && !q->fin_sent);
}

/* Fills v with the unsent bytes; returns the count and sets *all when they
 * are all of them. */
static size_t sendq_vec(const sendq *q, ngtcp2_vec *v, size_t max, int *all) {
  size_t n = 0;
  for (size_t i = q->seg; i < q->nsegs && n < max; i++, n++) {
    v[n] = q->segs[i];
    if (i == q->seg) {
      v[n].base += q->off;
      v[n].len -= q->off;
    }
  }
  *all = q->seg + n == q->nsegs;
  return n;
}

static void sendq_advance(sendq *q, size_t n) {
  while (n > 0 && q->seg < q->nsegs) {
    size_t left = q->segs[q->seg].len - q->off;
    size_t k = n < left ? n : left;
    q->off += k;
    n -= k;
    if (q->off == q->segs[q->seg].len) {
      q->seg++;
      q->off = 0;
    }
  }
}

/* ---- response parsing ---- */

typedef void (*frame_cb)(void *ud, uint64_t type, const uint8_t *p, size_t len,
                         int whole);

/*
 * Feeds stream bytes to rx. DATA payloads go to cb in pieces (whole = 0);
 * other frames whole (whole = 1), or not at all when larger than
 * MAX_FRAME_BUFFER (then cb sees type with len 0 and whole = -1).
 */
static void frame_rx_feed(frame_rx *rx, const uint8_t *p, size_t n, frame_cb cb,
                          void *ud) {
  while (n > 0) {
    if (!rx->in_payload) {
      rx->hdr[rx->hdrlen++] = *p++;
      n--;
      uint64_t type, len;
      size_t a = h3r_get_varint(rx->hdr, rx->hdrlen, &type);
      size_t b = a ? h3r_get_varint(rx->hdr + a, rx->hdrlen - a, &len) : 0;
      if (a == 0 || b == 0)
        continue;
      rx->hdrlen = 0;
      rx->in_payload = 1;
      rx->type = type;
      rx->len = len;
      rx->got = 0;
      rx->payload.len = 0;
      rx->too_big = type != H3_FRAME_DATA && len > MAX_FRAME_BUFFER;
      if (rx->too_big)
        cb(ud, type, NULL, 0, -1);
    } else {
      uint64_t left = rx->len - rx->got;
      size_t k = left < n ? (size_t)left : n;
      if (rx->type == H3_FRAME_DATA) {
        if (k > 0)
          cb(ud, rx->type, p, k, 0);
      } else if (!rx->too_big && h3r_bytes_append(&rx->payload, p, k) != 0) {
        die(2, "out of memory");
      }
      rx->got += k;
      p += k;
      n -= k;
    }
    if (rx->in_payload && rx->got == rx->len) {
      rx->in_payload = 0;
      if (rx->type != H3_FRAME_DATA && !rx->too_big)
        cb(ud, rx->type, rx->payload.data, rx->payload.len, 1);
    }
  }
}

static int frame_rx_idle(const frame_rx *rx) {
  return !rx->in_payload && rx->hdrlen == 0;
}

static void fields_move(h3r_fields *to, h3r_fields *from) {
  h3r_fields_free(to);
  *to = *from;
  *from = (h3r_fields){0};
}

static void on_request_frame(void *ud, uint64_t type, const uint8_t *p,
                             size_t len, int whole) {
  rstream *st = ud;
  if (type == H3_FRAME_DATA) {
    if (st->status < 0 && st->error == NULL)
      st->error = "DATA before the final HEADERS";
    st->body_len += len;
    if (len > 0) {
      if (st->data_first < 0)
        st->data_first = C.data_seq;
      st->data_last = C.data_seq++;
    }
    return;
  }
  if (type != H3_FRAME_HEADERS)
    return; /* unknown and reserved frame types are ignored (§9) */
  if (whole < 0) {
    st->error = st->error ? st->error : "HEADERS frame too large";
    return;
  }
  h3r_fields f = {0};
  const char *why = NULL;
  if (h3r_qpack_decode(p, len, &f, &why) != 0) {
    st->error = st->error ? st->error : why;
    h3r_fields_free(&f);
    return;
  }
  int status = -1;
  for (size_t i = 0; i < f.n; i++) {
    const h3r_bytes *nm = &f.v[i].name, *v = &f.v[i].value;
    if (nm->len == 7 && memcmp(nm->data, ":status", 7) == 0 && v->len == 3 &&
        v->data[0] >= '1' && v->data[0] <= '9' && v->data[1] >= '0' &&
        v->data[1] <= '9' && v->data[2] >= '0' && v->data[2] <= '9')
      status = (v->data[0] - '0') * 100 + (v->data[1] - '0') * 10 +
               (v->data[2] - '0');
  }
  if (st->status >= 0) {
    fields_move(&st->trailers, &f);
  } else if (status >= 100 && status < 200) {
    if (st->ninformational < MAX_INFORMATIONAL)
      st->informational[st->ninformational++] = status;
  } else if (status >= 0) {
    st->status = status;
    fields_move(&st->headers, &f);
  } else if (st->error == NULL) {
    st->error = "response HEADERS without a valid :status";
  }
  h3r_fields_free(&f);
}

static void on_control_frame(void *ud, uint64_t type, const uint8_t *p,
                             size_t len, int whole) {
  client *c = ud;
  uint64_t id;
  if (type == H3_FRAME_GOAWAY && whole == 1 && h3r_get_varint(p, len, &id))
    c->goaway = (int64_t)id;
}

static uni_rx *uni_find(client *c, int64_t id) {
  for (size_t i = 0; i < c->nuni; i++)
    if (c->uni[i].id == id)
      return &c->uni[i];
  if (c->nuni == MAX_UNI_STREAMS)
    return NULL;
  uni_rx *u = &c->uni[c->nuni++];
  *u = (uni_rx){.id = id};
  return u;
}

static void uni_feed(client *c, int64_t id, const uint8_t *p, size_t n) {
  uni_rx *u = uni_find(c, id);
  if (u == NULL)
    return;
  while (n > 0 && !u->have_type) {
    u->typebuf[u->typelen++] = *p++;
    n--;
    if (h3r_get_varint(u->typebuf, u->typelen, &u->type) != 0) {
      u->have_type = 1;
      trace("server uni stream %" PRId64 ": type 0x%" PRIx64, id, u->type);
    }
  }
  if (n > 0 && u->type == H3_STREAM_CONTROL)
    frame_rx_feed(&u->rx, p, n, on_control_frame, c);
}

/* ---- ngtcp2 callbacks ---- */

static void on_rand(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  if (qc_rand(dest, destlen) != 0)
    die(2, "getrandom: %s", strerror(errno));
}

static int on_handshake_completed(ngtcp2_conn *conn, void *user_data) {
  client *c = user_data;
  (void)conn;
  c->handshake_done = 1;
  trace("handshake completed");
  return 0;
}

/* Our unidirectional streams count what the server acknowledged, so that a
 * reset can wait until the server has read what went before it. */
static int on_acked_stream_data_offset(ngtcp2_conn *conn, int64_t stream_id,
                                       uint64_t offset, uint64_t datalen,
                                       void *user_data,
                                       void *stream_user_data) {
  client *c = user_data;
  (void)conn;
  (void)stream_user_data;
  for (size_t i = 0; i < UNI_EXTRA + c->nextra; i++)
    if (c->uq[i].id == stream_id && offset + datalen > c->uq[i].acked)
      c->uq[i].acked = offset + datalen;
  return 0;
}

static int on_handshake_confirmed(ngtcp2_conn *conn, void *user_data) {
  client *c = user_data;
  (void)conn;
  c->confirmed = 1;
  return 0;
}

static int on_recv_stream_data(ngtcp2_conn *conn, uint32_t flags,
                               int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen,
                               void *user_data, void *stream_user_data) {
  client *c = user_data;
  (void)offset;
  if (ngtcp2_is_bidi_stream(stream_id)) {
    rstream *st = stream_user_data;
    /* A finished stream's report is final: what follows is the server's
     * answer to our cancellation. */
    if (st != NULL && !st->done) {
      frame_rx_feed(&st->rx, data, datalen, on_request_frame, st);
      if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
        st->fin = 1;
        if (!frame_rx_idle(&st->rx) && st->error == NULL)
          st->error = "stream ended inside a frame";
        trace("stream %" PRId64 ": FIN", stream_id);
      }
    }
  } else {
    uni_feed(c, stream_id, data, datalen);
  }
  /* Everything is consumed at once: give the credit back. */
  ngtcp2_conn_extend_max_stream_offset(conn, stream_id, datalen);
  ngtcp2_conn_extend_max_offset(conn, datalen);
  return 0;
}

static int on_stream_reset(ngtcp2_conn *conn, int64_t stream_id,
                           uint64_t final_size, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
  rstream *st = stream_user_data;
  (void)conn;
  (void)final_size;
  (void)user_data;
  trace("stream %" PRId64 ": RESET_STREAM 0x%" PRIx64, stream_id,
        app_error_code);
  if (st != NULL && !st->done && ngtcp2_is_bidi_stream(stream_id) &&
      st->reset < 0)
    st->reset = (int64_t)app_error_code;
  return 0;
}

/* ngtcp2 calls this when we stop reading a stream ourselves; a server's
 * STOP_SENDING is answered by ngtcp2 alone (RESET_STREAM with its code)
 * and only shows in the stream's close (on_stream_close). */
static int on_stream_stop_sending(ngtcp2_conn *conn, int64_t stream_id,
                                  uint64_t app_error_code, void *user_data,
                                  void *stream_user_data) {
  (void)conn;
  (void)user_data;
  (void)stream_user_data;
  trace("stream %" PRId64 ": we stop reading (0x%" PRIx64 ")", stream_id,
        app_error_code);
  return 0;
}

static int on_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  client *c = user_data;
  (void)conn;
  trace("stream %" PRId64 ": closed (0x%" PRIx64 ")", stream_id,
        app_error_code);
  if (stream_user_data == NULL)
    return 0;
  if (ngtcp2_is_bidi_stream(stream_id)) {
    rstream *st = stream_user_data;
    /* The stream's first error code is the server's STOP_SENDING unless
     * the server reset the stream or we cut it ourselves. */
    if ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) && !st->done &&
        !st->we_cut && st->reset < 0 && st->stop < 0) {
      st->stop = (int64_t)app_error_code;
      trace("stream %" PRId64 ": the server sent STOP_SENDING 0x%" PRIx64,
            stream_id, app_error_code);
    }
    st->closed = 1;
    st->q.dead = 1;
  } else {
    /* One of the script's "uni" streams (its user data is its slot in
     * extra_closed): closed after its FIN or RESET_STREAM was acked. */
    int *closed = stream_user_data;
    size_t i = (size_t)(closed - c->extra_closed);
    *closed = 1;
    c->uq[UNI_EXTRA + i].dead = 1;
    if (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)
      c->extra_close_code[i] = (int64_t)app_error_code;
  }
  return 0;
}

static const ngtcp2_callbacks callbacks = {
    QC_CRYPTO_CALLBACKS,
    .rand = on_rand,
    .get_new_connection_id = qc_on_get_new_connection_id,
    .handshake_completed = on_handshake_completed,
    .handshake_confirmed = on_handshake_confirmed,
    .acked_stream_data_offset = on_acked_stream_data_offset,
    .recv_stream_data = on_recv_stream_data,
    .stream_reset = on_stream_reset,
    .stream_stop_sending = on_stream_stop_sending,
    .stream_close = on_stream_close,
};

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  client *c = ref->user_data;
  return c->conn;
}

/* ---- connection setup ---- */

static void open_socket(client *c) {
  char err[256];
  if (qc_socket_open(&c->sock, c->host, c->port, err, sizeof(err)) != 0)
    die(2, "%s", err);
}

static void setup_tls(client *c) {
  char err[256];
  c->conn_ref = (ngtcp2_crypto_conn_ref){.get_conn = get_conn, .user_data = c};
  if (qc_tls_new(&c->ssl_ctx, &c->ssl, c->ca, c->sni, &c->conn_ref, err,
                 sizeof(err)) != 0)
    die(2, "%s", err);
}

static void setup_quic(client *c) {
  ngtcp2_cid dcid = {.datalen = NGTCP2_MIN_INITIAL_DCIDLEN};
  ngtcp2_cid scid = {.datalen = 8};
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  ngtcp2_path path = qc_socket_path(&c->sock);

  on_rand(dcid.data, dcid.datalen, NULL);
  on_rand(scid.data, scid.datalen, NULL);
  ngtcp2_settings_default(&settings);
  settings.initial_ts = now_ns();
  settings.handshake_timeout = c->timeout_ns;
  ngtcp2_transport_params_default(&params);
  params.initial_max_streams_uni = MAX_UNI_STREAMS;
  params.initial_max_stream_data_bidi_local = 1024 * 1024;
  params.initial_max_stream_data_uni = 1024 * 1024;
  params.initial_max_data = 16 * 1024 * 1024;
  params.max_idle_timeout = 30 * NGTCP2_SECONDS;
  int rv =
      ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
                             &callbacks, &settings, &params, NULL, c);
  if (rv != 0)
    die(2, "ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
  ngtcp2_conn_set_tls_native_handle(c->conn, c->ssl);
}

/* Opens the control and QPACK streams once the handshake is done (those
 * the script did not omit). */
static int open_uni_streams(client *c) {
  static const uint64_t types[UNI_EXTRA] = {
      H3_STREAM_CONTROL, H3_STREAM_QPACK_ENCODER, H3_STREAM_QPACK_DECODER};
  for (int i = 0; i < UNI_EXTRA; i++) {
    c->uq[i] = (sendq){.id = -1};
    if (c->omit[i])
      continue;
    if (ngtcp2_conn_open_uni_stream(c->conn, &c->uq[i].id, NULL) != 0) {
      c->local_error = "the server allows fewer than 3 unidirectional streams";
      return -1;
    }
    if (h3r_put_varint(&c->uwire[i], types[i]) ||
        (i == UNI_CONTROL && !c->no_settings &&
         h3r_put_frame(&c->uwire[i], H3_FRAME_SETTINGS, c->settings.data,
                       c->settings.len)))
      die(2, "out of memory");
    sendq_push(&c->uq[i], c->uwire[i].data, c->uwire[i].len);
  }
  c->uni_opened = 1;
  return 0;
}

/* ---- I/O ---- */

static void send_packet(client *c, const uint8_t *data, size_t len) {
  /* A lost datagram (EAGAIN, ECONNREFUSED) is QUIC's to recover from. */
  int err = qc_socket_send(&c->sock, data, len);
  if (err != 0)
    trace("send: %s", strerror(err));
}

static sendq *next_queue(client *c) {
  for (size_t i = 0; c->uni_opened && i < UNI_EXTRA + c->nextra; i++)
    if (sendq_pending(&c->uq[i]))
      return &c->uq[i];
  for (size_t i = 0; i < c->nstreams; i++)
    if (c->streams[i].opened && sendq_pending(&c->streams[i].q))
      return &c->streams[i].q;
  return NULL;
}

static void set_local_error(client *c, int liberr, const char *what) {
  if (c->local_error == NULL) {
    c->local_error = what;
    c->local_liberr = liberr;
  }
  c->closed = 1;
}

/* Writes packets until ngtcp2 has nothing more to send now. */
static void write_packets(client *c, uint64_t ts) {
  uint8_t buf[1452];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_vec vec[16];

  ngtcp2_path_storage_zero(&ps);
  for (size_t i = 0; i < UNI_EXTRA + c->nextra; i++)
    c->uq[i].blocked = 0;
  for (size_t i = 0; i < c->nstreams; i++)
    c->streams[i].q.blocked = 0;
  for (;;) {
    sendq *q = next_queue(c);
    int all = 0;
    size_t nv = q ? sendq_vec(q, vec, 16, &all) : 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    int fin = q != NULL && q->fin_wanted && all;
    if (fin)
      flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    ngtcp2_ssize ndatalen = -1;
    ngtcp2_ssize nwrite = ngtcp2_conn_writev_stream(
        c->conn, &ps.path, &pi, buf, sizeof(buf), &ndatalen, flags,
        q ? q->id : -1, vec, nv, ts);
    if (q != NULL && ndatalen >= 0) {
      size_t total = 0;
      for (size_t i = 0; i < nv; i++)
        total += vec[i].len;
      sendq_advance(q, (size_t)ndatalen);
      if (fin && (size_t)ndatalen == total)
        q->fin_sent = 1;
    }
    if (nwrite < 0) {
      switch (nwrite) {
      case NGTCP2_ERR_WRITE_MORE: continue;
      case NGTCP2_ERR_STREAM_DATA_BLOCKED: q->blocked = 1; continue;
      case NGTCP2_ERR_STREAM_SHUT_WR:
      case NGTCP2_ERR_STREAM_NOT_FOUND: q->dead = 1; continue;
      default:
        set_local_error(c, (int)nwrite, ngtcp2_strerror((int)nwrite));
        return;
      }
    }
    if (nwrite == 0)
      return;
    send_packet(c, buf, (size_t)nwrite);
  }
}

static void read_packets(client *c) {
  uint8_t buf[65536];
  for (int i = 0; i < MAX_READS_PER_ROUND && !c->closed; i++) {
    ssize_t n = recv(c->sock.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      /* ECONNREFUSED: an ICMP error for an earlier datagram; keep going,
       * the handshake timeout bounds a server that is not there. */
      return;
    }
    ngtcp2_path path = qc_socket_path(&c->sock);
    ngtcp2_pkt_info pi = {0};
    int rv =
        ngtcp2_conn_read_pkt(c->conn, &path, &pi, buf, (size_t)n, now_ns());
    if (rv == 0)
      continue;
    trace("read_pkt: %s", ngtcp2_strerror(rv));
    if (rv == NGTCP2_ERR_DRAINING) {
      c->draining = 1;
      c->closed = 1;
    } else if (rv == NGTCP2_ERR_DROP_CONN) {
      c->closed = 1;
    } else if (rv == NGTCP2_ERR_CRYPTO) {
      set_local_error(c, rv, "TLS handshake failed");
    } else {
      set_local_error(c, rv, ngtcp2_strerror(rv));
    }
  }
}

/* Sends our CONNECTION_CLOSE unless the connection is already gone. */
static void close_connection(client *c) {
  uint8_t buf[1280];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_ccerr ccerr;

  if (c->draining || c->idle_close || ngtcp2_conn_in_closing_period(c->conn) ||
      ngtcp2_conn_in_draining_period(c->conn))
    return;
  ngtcp2_ccerr_default(&ccerr);
  if (c->local_liberr != 0)
    ngtcp2_ccerr_set_liberr(&ccerr, c->local_liberr, NULL, 0);
  else
    ngtcp2_ccerr_set_application_error(&ccerr, H3_NO_ERROR, NULL, 0);
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      c->conn, &ps.path, &pi, buf, sizeof(buf), &ccerr, now_ns());
  if (n > 0)
    send_packet(c, buf, (size_t)n);
}

/* ---- the script runner ---- */

static void stream_finish(client *c, rstream *st) {
  st->done = 1;
  trace("script stream %zu (id %" PRId64 ") done", st->index + 1, st->q.id);
  if (st->timed_out && st->opened && !st->closed) {
    st->we_cut = 1;
    ngtcp2_conn_shutdown_stream(c->conn, 0, st->q.id, H3_REQUEST_CANCELLED);
  }
}

/* Runs the actions of st that are due. */
static void run_actions(client *c, rstream *st, uint64_t ts) {
  while (st->next < st->nacts) {
    act *a = &st->acts[st->next];
    switch (a->kind) {
    case ACT_PAUSE:
      if (!a->started) {
        a->started = 1;
        st->pause_until = ts + a->num * MS;
      }
      /* Pauses only space out what is sent: once the server asked us to
       * stop sending (or we reset), nothing is left to wait for. */
      if (ts < st->pause_until && !st->q.dead)
        return;
      break;
    case ACT_SEND:
      if (!st->q.dead)
        sendq_push(&st->q, a->wire.data, a->wire.len);
      break;
    case ACT_FIN: st->q.fin_wanted = 1; break;
    case ACT_UNI_SEND:
    case ACT_UNI_FIN:
    case ACT_UNI_RESET: {
      /* After our SETTINGS, which open the control stream, and after the
       * "uni" stream they name. */
      if (!c->uni_opened || a->target >= UNI_EXTRA + c->nextra)
        return;
      sendq *q = &c->uq[a->target];
      if (a->kind == ACT_UNI_SEND && !q->dead)
        sendq_push(q, a->wire.data, a->wire.len);
      else if (a->kind == ACT_UNI_FIN)
        q->fin_wanted = 1;
      else if (a->kind == ACT_UNI_RESET && !q->dead) {
        /* Once the server has what was sent before (its stream type, say),
         * and the handshake is confirmed: before, ngtcp2 1.11's client can
         * lose a queued RESET_STREAM while it writes handshake packets. */
        if (!c->confirmed || q->acked < q->queued)
          return;
        ngtcp2_conn_shutdown_stream_write(c->conn, 0, q->id, a->num);
        q->dead = 1;
      }
      break;
    }
    case ACT_UNI_WAIT:
      if (a->target >= UNI_EXTRA + c->nextra ||
          !c->extra_closed[a->target - UNI_EXTRA])
        return;
      break;
    case ACT_UNI_OPEN: {
      if (!c->uni_opened || a->target != UNI_EXTRA + c->nextra)
        return; /* "uni" streams open in script order */
      int64_t id;
      size_t i = c->nextra;
      int rv = ngtcp2_conn_open_uni_stream(c->conn, &id, &c->extra_closed[i]);
      if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
        return; /* until the server allows one more */
      if (rv != 0) {
        set_local_error(c, rv, ngtcp2_strerror(rv));
        return;
      }
      c->uq[a->target] = (sendq){.id = id};
      c->extra_close_code[i] = -1;
      c->nextra++;
      sendq_push(&c->uq[a->target], a->wire.data, a->wire.len);
      trace("uni stream %zu: opened stream %" PRId64, i + 1, id);
      break;
    }
    case ACT_STOP_SERVER: {
      const uni_rx *u = NULL;
      for (size_t i = 0; i < c->nuni && u == NULL; i++)
        if (c->uni[i].have_type && c->uni[i].type == a->target)
          u = &c->uni[i];
      /* Until the server's stream of that type arrived, and the handshake
       * is confirmed: before, ngtcp2 1.11's client can lose a queued
       * STOP_SENDING while it writes its handshake packets. */
      if (u == NULL || !c->confirmed)
        return;
      int rv = ngtcp2_conn_shutdown_stream_read(c->conn, 0, u->id, a->num);
      trace("STOP_SENDING on server stream %" PRId64 ": %s", u->id,
            rv == 0 ? "queued" : ngtcp2_strerror(rv));
      break;
    }
    case ACT_RESET:
      if (!st->q.dead)
        ngtcp2_conn_shutdown_stream_write(c->conn, 0, st->q.id, a->num);
      st->q.dead = 1;
      st->we_cut = 1;
      break;
    case ACT_STOP: {
      if (!c->confirmed)
        return; /* as for ACT_STOP_SERVER */
      int rv = ngtcp2_conn_shutdown_stream_read(c->conn, 0, st->q.id, a->num);
      trace("STOP_SENDING on stream %" PRId64 ": %s", st->q.id,
            rv == 0 ? "queued" : ngtcp2_strerror(rv));
      break;
    }
    }
    st->next++;
  }
}

/* Opens streams that may start, runs due actions, finishes streams. */
static void run_script(client *c, uint64_t ts) {
  for (size_t i = 0; i < c->nstreams; i++) {
    rstream *st = &c->streams[i];
    if (st->done)
      continue;
    if (!st->opened) {
      if (st->eligible_at == 0)
        st->eligible_at = ts;
      int64_t id;
      int rv = ngtcp2_conn_open_bidi_stream(c->conn, &id, st);
      if (rv == 0) {
        st->opened = 1;
        st->opened_at = ts;
        st->q.id = id;
        trace("script stream %zu: opened stream %" PRId64, i + 1, id);
      } else if (rv != NGTCP2_ERR_STREAM_ID_BLOCKED) {
        set_local_error(c, rv, ngtcp2_strerror(rv));
        return;
      } else if (ts - st->eligible_at > c->timeout_ns) {
        st->timed_out = 1;
        stream_finish(c, st);
        continue;
      } else {
        return; /* streams open in script order */
      }
    }
    run_actions(c, st, ts);
    int answered = st->fin || st->reset >= 0 || st->closed;
    int acted = st->next == st->nacts || st->q.dead;
    if (answered && acted) {
      stream_finish(c, st);
    } else if (ts - st->opened_at > c->timeout_ns) {
      st->timed_out = 1;
      stream_finish(c, st);
    }
    if (!st->done && !c->concurrent)
      return;
  }
}

static int all_done(const client *c) {
  for (size_t i = 0; i < c->nstreams; i++)
    if (!c->streams[i].done)
      return 0;
  return 1;
}

/* The earliest time the runner has something to do (0: none). */
static uint64_t next_wakeup(const client *c) {
  uint64_t t = 0;
  for (size_t i = 0; i < c->nstreams; i++) {
    const rstream *st = &c->streams[i];
    uint64_t w = 0;
    if (st->done)
      continue;
    if (st->opened) {
      w = st->opened_at + c->timeout_ns + 1;
      if (st->pause_until > 0 && st->next < st->nacts &&
          st->acts[st->next].kind == ACT_PAUSE && st->pause_until < w)
        w = st->pause_until;
    } else if (st->eligible_at > 0) {
      w = st->eligible_at + c->timeout_ns + 1;
    }
    if (w > 0 && (t == 0 || w < t))
      t = w;
  }
  return t;
}

static void run(client *c) {
  uint64_t start = now_ns();
  uint64_t linger_until = 0;

  for (;;) {
    uint64_t ts = now_ns();
    if (c->handshake_done && !c->closed) {
      if (!c->uni_opened && open_uni_streams(c) != 0) {
        c->closed = 1;
        break;
      }
      run_script(c, ts);
    }
    if (!c->closed)
      write_packets(c, ts);
    if (c->closed)
      break;
    if (!c->handshake_done && ts - start > c->timeout_ns) {
      set_local_error(c, 0, "handshake timed out");
      break;
    }
    if (c->handshake_done && all_done(c)) {
      if (linger_until == 0)
        linger_until = ts + c->linger_ns;
      if (ts >= linger_until)
        break;
    }

    uint64_t wake = ngtcp2_conn_get_expiry(c->conn);
    uint64_t w = next_wakeup(c);
    if (w != 0 && w < wake)
      wake = w;
    if (!c->handshake_done && start + c->timeout_ns + 1 < wake)
      wake = start + c->timeout_ns + 1;
    if (linger_until != 0 && linger_until < wake)
      wake = linger_until;
    uint64_t ms = wake > ts ? (wake - ts + MS - 1) / MS : 0;
    if (ms > 1000)
      ms = 1000;
    struct pollfd pfd = {.fd = c->sock.fd, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)ms);
    if (pr < 0 && errno != EINTR)
      die(2, "poll: %s", strerror(errno));
    if (pr > 0)
      read_packets(c);
    if (c->closed)
      break;
    ts = now_ns();
    if (ngtcp2_conn_get_expiry(c->conn) <= ts) {
      int rv = ngtcp2_conn_handle_expiry(c->conn, ts);
      if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        c->idle_close = 1;
        c->closed = 1;
      } else if (rv != 0) {
        set_local_error(c, rv, ngtcp2_strerror(rv));
      }
    }
  }
  close_connection(c);
}

/* ---- report ---- */

static void json_bytes(const uint8_t *p, size_t n) {
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

static void json_fields(const h3r_fields *f) {
  putchar('[');
  for (size_t i = 0; i < f->n; i++) {
    printf(i ? ", [" : "[");
    json_bytes(f->v[i].name.data, f->v[i].name.len);
    printf(", ");
    json_bytes(f->v[i].value.data, f->v[i].value.len);
    putchar(']');
  }
  putchar(']');
}

static void json_code(int64_t v) {
  if (v < 0)
    printf("null");
  else
    printf("%" PRId64, v);
}

static void report(client *c) {
  for (size_t i = 0; i < c->nstreams; i++) {
    rstream *st = &c->streams[i];
    printf("{\"index\": %zu, \"stream\": ", i);
    json_code(st->opened ? st->q.id : -1);
    printf(", \"status\": ");
    json_code(st->status);
    printf(", \"informational\": [");
    for (size_t k = 0; k < st->ninformational; k++)
      printf(k ? ", %d" : "%d", st->informational[k]);
    printf("], \"headers\": ");
    json_fields(&st->headers);
    printf(", \"trailers\": ");
    json_fields(&st->trailers);
    printf(", \"body_len\": %" PRIu64 ", \"data_first\": %" PRId64
           ", \"data_last\": %" PRId64 ", \"fin\": %s, \"reset\": ",
           st->body_len, st->data_first, st->data_last,
           st->fin ? "true" : "false");
    json_code(st->reset);
    printf(", \"stop_sending\": ");
    json_code(st->stop);
    printf(", \"timeout\": %s, \"error\": ", st->timed_out ? "true" : "false");
    if (st->error)
      json_bytes((const uint8_t *)st->error, strlen(st->error));
    else
      printf("null");
    printf("}\n");
  }

  const ngtcp2_ccerr *cc = c->draining ? ngtcp2_conn_get_ccerr(c->conn) : NULL;
  printf("{\"connection_close\": ");
  if (cc != NULL)
    printf("%" PRIu64 ", \"close_type\": \"%s\", \"frame_type\": %" PRIu64
           ", \"reason\": ",
           cc->error_code,
           cc->type == NGTCP2_CCERR_TYPE_APPLICATION ? "application"
                                                     : "transport",
           cc->frame_type);
  else
    printf("null, \"close_type\": null, \"frame_type\": null, \"reason\": ");
  if (cc != NULL && cc->reason != NULL)
    json_bytes(cc->reason, cc->reasonlen);
  else
    printf("null");
  printf(", \"uni\": [");
  for (size_t i = 0; i < c->nextra; i++) {
    printf("%s{\"stream\": %" PRId64 ", \"closed\": %s, \"close_code\": ",
           i ? ", " : "", c->uq[UNI_EXTRA + i].id,
           c->extra_closed[i] ? "true" : "false");
    json_code(c->extra_close_code[i]);
    printf("}");
  }
  printf("], \"goaway\": ");
  json_code(c->goaway);
  printf(", \"idle_close\": %s, \"handshake\": %s, \"local_error\": ",
         c->idle_close ? "true" : "false",
         c->handshake_done ? "true" : "false");
  if (c->local_error)
    json_bytes((const uint8_t *)c->local_error, strlen(c->local_error));
  else
    printf("null");
  printf("}\n");
  fflush(stdout);
}

/* Releases what the script and the connection allocated. */
static void client_free(client *c) {
  for (size_t i = 0; i < c->nstreams; i++) {
    rstream *st = &c->streams[i];
    for (size_t k = 0; k < st->nacts; k++)
      h3r_bytes_free(&st->acts[k].wire);
    free(st->acts);
    free(st->q.segs);
    h3r_bytes_free(&st->rx.payload);
    h3r_fields_free(&st->headers);
    h3r_fields_free(&st->trailers);
  }
  free(c->streams);
  for (size_t i = 0; i < c->nuni; i++)
    h3r_bytes_free(&c->uni[i].rx.payload);
  for (size_t i = 0; i < UNI_EXTRA + MAX_EXTRA_UNI; i++)
    free(c->uq[i].segs);
  for (size_t i = 0; i < UNI_EXTRA; i++)
    h3r_bytes_free(&c->uwire[i]);
  h3r_bytes_free(&c->settings);
  ngtcp2_conn_del(c->conn);
  wolfSSL_free(c->ssl);
  wolfSSL_CTX_free(c->ssl_ctx);
  if (c->sock.fd >= 0)
    close(c->sock.fd);
}

/* ---- main ---- */

static void usage(FILE *f) {
  fprintf(f, "usage: h3raw --host ADDR --port N [--sni NAME] [--ca FILE] "
             "[--timeout SECS] [--verbose] --script FILE|-\n"
             "The script format is described at the top of h3raw.c.\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"host", required_argument, NULL, 'h'},
      {"port", required_argument, NULL, 'p'},
      {"sni", required_argument, NULL, 's'},
      {"ca", required_argument, NULL, 'c'},
      {"timeout", required_argument, NULL, 't'},
      {"script", required_argument, NULL, 'f'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, '?'},
      {NULL, 0, NULL, 0},
  };
  const char *script = NULL;
  double timeout = 5.0;
  int o;

  C = (client){.sni = "localhost", .sock.fd = -1, .goaway = -1};
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'h': C.host = optarg; break;
    case 'p': C.port = optarg; break;
    case 's': C.sni = optarg; break;
    case 'c': C.ca = optarg; break;
    case 't': timeout = strtod(optarg, NULL); break;
    case 'f': script = optarg; break;
    case 'v': C.verbose = 1; break;
    default: usage(stderr); return 1;
    }
  }
  if (C.host == NULL || C.port == NULL || script == NULL || optind != argc ||
      !(timeout > 0 && timeout < 3600)) {
    usage(stderr);
    return 1;
  }
  C.timeout_ns = (uint64_t)(timeout * 1e9);

  FILE *f = strcmp(script, "-") == 0 ? stdin : fopen(script, "r");
  if (f == NULL)
    die(1, "%s: %s", script, strerror(errno));
  read_script(f, strcmp(script, "-") == 0 ? "<stdin>" : script);
  if (f != stdin)
    fclose(f);

  open_socket(&C);
  setup_tls(&C);
  setup_quic(&C);
  run(&C);
  report(&C);

  int status = C.handshake_done ? 0 : 3;
  client_free(&C);
  wolfSSL_Cleanup();
  return status;
}
