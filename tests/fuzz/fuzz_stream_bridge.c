#define _GNU_SOURCE /* memmem */
/*
 * libFuzzer target for the stream bridge (proxy/http/stream_bridge.c): one
 * request driven through a sequence of front-end, upstream and timer
 * events decoded from the input, against fakes that hold the bridge to its
 * contracts (frontend.h, upstream_pool.h's h3g_upstream_ops, the timer
 * ops) and a fake clock.
 *
 * Input: five configuration bytes (see setup()), then events, one op byte
 * each (kind = op & 15, arg = op >> 4) and the bytes some of them take:
 *   0  the client adds a field (two strings, see get_str())
 *   1  the client adds a request's pseudo-header fields (arg: method and
 *      authority or host); with WebSockets on (c4 bit 3), an extended
 *      CONNECT to /chat instead (arg: :protocol websocket, websocket,
 *      WebSocket or foo (bits 0-1), the client's Sec-WebSocket-Key and
 *      version 13 (bit 2), a content-length of 3 (bit 3))
 *   2  the head ends (arg bit 0: with the stream)
 *   3  request body bytes (arg: a size, or with bit 3 a length byte and
 *      that many bytes), within the credit the bridge gave
 *   4  a trailer field          5  the client ends the stream
 *   6  arg 0-1 client abort, 2-3 reject, 4-5 0-RTT, 6-7 handshake done,
 *      8-15 a priority (urgency arg & 7)
 *   7  the pool answers a pending acquire: ready (arg bit 0: reused), or
 *      with arg bit 3 a failure
 *   8  the upstream sends a canned response (arg) and as much of what it
 *      sent as can be read, in reads of the size the next byte picks
 *   9  the upstream sends raw bytes (a length byte, the bytes), same;
 *      a length byte of 0xfe: an answer to the WebSocket handshake on
 *      this connection, picked by the next byte (see ev_ws_answer())
 *  10  pending upstream bytes are read (arg: read size)
 *  11  upstream EOF (arg bit 0) or read error (bit 1: a timeout)
 *  12  the pending write completes (arg bit 0: with an error)
 *  13  the front end takes response body (arg: vectors and a maximum)
 *  14  the front end is done with taken bytes (arg: how many)
 *  15  time passes (arg picks how long); due timers fire
 * The end of the input frees the bridge. Events that make no sense in the
 * state reached (a read while not reading, body before the head) are
 * skipped, so that every sequence a front end and a pool can produce is
 * reachable and none other.
 *
 * Checked after every event and in every callback, besides memory errors
 * and leaks:
 *   - nothing reaches the upstream after a refusal: a request refused at
 *     end_headers (malformed, 413, 431) was never sent nor even queued for
 *     a connection; after any refusal or failure (an outcome other than
 *     "ok", a front-end cut) the bridge holds no connection and no wait,
 *     and never writes or acquires again;
 *   - buffers are bounded: the request ring never holds more than its cap
 *     (the window given) nor more than the credit outstanding, the window
 *     never grows past max_stream_window, the response ring never holds
 *     more than its cap plus the in-flight allowance, and every ring chunk
 *     is given back when the bridge is freed;
 *   - the stream ends exactly once: at most one final head, interim heads
 *     only before it, at most one abort, at most one end of body, never
 *     both an end and an abort, and no front-end call after an abort or a
 *     front-end cut;
 *   - credit given back never exceeds the bytes received, and a client
 *     that keeps to its credit never overflows the bridge (TOOBIG);
 *   - what the upstream is sent parses as one HTTP/1.1 request per
 *     connection whose body is the client's body (never past a declared
 *     content-length or max_request_body), and a 0-RTT request reaches it
 *     before the handshake only when safe (RFC 8470: a body-less GET, HEAD
 *     or OPTIONS marked Early-Data); bytes given to write() and body bytes
 *     handed to the front end stay unchanged until released;
 *   - the body the front end gets is the upstream's, byte for byte (or the
 *     gateway's own error text), and a connection is given back as
 *     reusable only after a complete request and a complete keep-alive
 *     response;
 *   - timers: none is cancelled after it fired or twice, none outlives the
 *     bridge;
 *   - WebSocket tunnels: the upstream gets a GET handshake with our
 *     Connection/Upgrade fields, one key and version 13 (hop-by-hop fields
 *     are otherwise never passed); no client byte is written before a 101
 *     whose Accept is right for that key, and upgrade() is called only
 *     then, once; after it the client's bytes reach the upstream in order
 *     and unchanged, credit comes back only for bytes written, our FIN
 *     (shutdown_write) comes only after every one of them and never with
 *     a write pending, no write follows it; the client gets the tunnel's
 *     bytes as the upstream sent them after the 101 (as a 200 without
 *     content-length or Accept on HTTP/3, the 101 itself on HTTP/1.1);
 *     the connection has no read timeout while it is a tunnel, is never
 *     released as reusable, and is reset() only once upgraded; the
 *     tunnel counts (the front end's and tunnels_open) are back to 0 when
 *     the bridge is freed. An idle timeout may cancel a tunnel whose
 *     response already ended (the client's side is still open).
 *
 * The clock is the fake one (linked with --wrap=h3g_now_ns), so a run
 * depends on nothing but its input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "h1_codec.h"
#include "log.h"
#include "metrics.h"
#include "route.h"
#include "stream_bridge.h"
#include "ws_key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
uint64_t __wrap_h3g_now_ns(void);

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      broken(__LINE__, #cond);                                                 \
  } while (0)

/* H3G_FUZZ_TRACE=1 in the environment prints what happens (to read why
 * an input broke an invariant). */
static int tracing;
#define TRACE(...)                                                             \
  do {                                                                         \
    if (tracing)                                                               \
      fprintf(stderr, __VA_ARGS__);                                            \
  } while (0)

static void broken(int line, const char *what) {
  fprintf(stderr, "fuzz_stream_bridge.c:%d: invariant broken: %s\n", line,
          what);
  abort();
}

enum {
  BODY_KEEP = 1u << 20, /* body bytes compared; beyond, only counted */
  MAX_CONNS = 8,
  MAX_TIMERS = 16,
  WRITE_MAX = 1u << 20,
};

/* ---- the input -------------------------------------------------------- */

typedef struct reader {
  const uint8_t *p;
  size_t n;
} reader;

static reader in;

static uint8_t next0(void) {
  if (in.n == 0)
    return 0;
  in.n--;
  return *in.p++;
}

/* Names and values the bridge treats specially. */
static const char *const dict[] = {
    ":method", ":scheme", ":authority", ":path", ":protocol",
    "content-length", "host", "te", "connection", "transfer-encoding",
    "cookie", "priority", "expect", "early-data", "x-forwarded-for",
    "forwarded", "via", "x-forwarded-proto", "x-forwarded-host", "x-a",
    "GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "https",
    "example.com", "/", "*", "0", "3", "10", "100", "70000", "trailers",
    "100-continue", "u=0, i", "1", "a=b", "1.2.3.4", "Content-Length",
    " x", "a\r\nb", "",
};

typedef struct str {
  const uint8_t *p;
  size_t n;
  uint8_t raw[256];
} str;

/* A byte with the high bit set picks a dictionary entry; any other is a
 * length, and that many bytes follow (a quarter of them, times 4, with
 * bit 6: long values for the size caps). */
static void get_str(str *out) {
  uint8_t s = next0();
  if (s & 0x80) {
    const char *d = dict[(s & 0x7f) % H3G_ARRAY_LEN(dict)];
    out->p = (const uint8_t *)d;
    out->n = strlen(d);
    return;
  }
  size_t n = H3G_MIN((size_t)(s & 0x3f), in.n);
  memcpy(out->raw, in.p, n);
  in.p += n;
  in.n -= n;
  if (s & 0x40) {
    for (size_t i = n; i < 4 * n; i++)
      out->raw[i] = out->raw[i % n];
    n *= 4;
  }
  out->p = out->raw;
  out->n = n;
}

/* ---- the world the bridge lives in ------------------------------------- */

typedef struct fake_timer {
  int live;
  uint64_t due_ns;
  void (*cb)(void *arg);
  void *arg;
} fake_timer;

/* One upstream connection as the pool would hand it out. */
typedef struct fake_conn {
  int released;
  int reusable;
  int reading;
  int closed_read; /* on_eof or on_error delivered */
  uint64_t read_timeout;
  /* the write in flight: where its bytes are, and what they were */
  int writing;
  h3g_iovec iov[8];
  size_t niov;
  uint8_t *snap;
  size_t snap_len;
  /* what the upstream has sent and not yet been read */
  uint8_t *outbox;
  size_t out_len, out_off;
  /* the request as the upstream reads it */
  h3g_h1_request_parser *rq;
  int rq_off; /* the method is not llhttp's: no parsing */
  int rq_heads, rq_complete;
  int rq_chunked; /* trailers can go with the body */
  uint64_t rq_body;
  /* WebSocket: the head given to write() at on_ready was a handshake,
   * with this key; upgrade() came; the tunnel's bytes the upstream read;
   * our FIN was sent */
  int handshake;
  char key[H3G_WS_KEY_LEN + 1];
  int upgraded;
  uint64_t tun_up;
  int shut;
} fake_conn;

typedef struct world {
  h3g_config cfg;
  h3g_route_conf rconf; /* the one route: its settings (rconf.s) */
  h3g_route route;      /* its upstream: fake_ops, this world as pool */
  h3g_route_stats route_stats;
  h3g_bridge_env env;
  h3g_bridge *b;
  uint64_t now_ns;
  int loop; /* only its address is used */
  uint8_t acquire_fails, head_fails, write_fails, timer_fails;
  unsigned acquires_seen, heads_seen, writes_seen, timers_seen;
  uint64_t rtt;

  /* the client */
  int phase;   /* enum phase */
  int cut;     /* the front end calls nothing but free from now on */
  int refused; /* nothing may reach the upstream any more */
  int early, handshake;
  int body_at_headers; /* the head ended with the stream */
  int trailers_dropped; /* add_trailer refused a field as too big */
  char method[16];
  uint64_t received, consumed, grown;
  uint8_t *body; /* the first BODY_KEEP bytes the client sent */
  size_t body_cap;

  /* what the front end was given */
  int heads, aborted, ended, stops;
  int want; /* a front end that pulls when told: told since its last
             * "nothing now" (a final head with a body, or body_ready) */
  int status, has_body, from_gateway;
  uint8_t *taken; /* response body handed out, in order */
  size_t taken_len, taken_cap;
  uint64_t done;
  /* handed-out bytes not yet released: where they are (for the check that
   * they stay unchanged) */
  h3g_iovec out_v[64];
  size_t out_at[64], out_n;

  /* WebSockets (c4 bits 3-7) */
  int ws, h1;
  uint32_t conn_tunnels; /* the front end's count (frontend.h) */
  int tunnel_opened;     /* upgrade() was called */
  int up_eof;            /* the upgraded connection's upstream ended */
  int abort_after_end;   /* an idle tunnel cancelled after its END */
  int declared_body;     /* the client sent a content-length */

  /* the pool */
  int waiting;
  h3g_upstream_waiter *waiter; /* the bridge's, given at acquire */
  unsigned acquires, writes;
  fake_conn *conn; /* held by the bridge, or NULL */
  fake_conn conns[MAX_CONNS];
  size_t nconns;
  /* the response as the upstream sent it on conn, parsed aside */
  h3g_h1_parser *ref;
  int ref_failed;
  uint8_t *ref_body;
  size_t ref_len, ref_cap;

  fake_timer timers[MAX_TIMERS];
} world;

enum phase { P_HEADERS, P_BODY, P_TRAILERS, P_ENDED };

static world w;

uint64_t __wrap_h3g_now_ns(void) {
  return w.now_ns;
}

static int bit(uint8_t mask, unsigned *seen) {
  unsigned i = (*seen)++;
  return i < 8 && ((mask >> i) & 1);
}

static void append(uint8_t **buf, size_t *len, size_t *cap,
                   const uint8_t *p, size_t n) {
  if (*len + n > *cap) {
    size_t c = H3G_MAX(*cap * 2, *len + n);
    uint8_t *nb = realloc(*buf, c);
    if (nb == NULL)
      abort();
    *buf = nb;
    *cap = c;
  }
  if (n > 0)
    memcpy(*buf + *len, p, n);
  *len += n;
}

static int name_is(const h3g_field *f, const char *name) {
  return h3g_field_name_eq(f, name);
}

/* Lowercase token names, no hop-by-hop field, no CR, LF or NUL. */
static void check_fields(const h3g_field *f, size_t n) {
  for (size_t i = 0; i < n; i++) {
    CHECK(f[i].namelen > 0);
    for (size_t j = 0; j < f[i].namelen; j++)
      CHECK(!(f[i].name[j] >= 'A' && f[i].name[j] <= 'Z'));
    CHECK(!(h3g_field_flags(f[i].name, f[i].namelen) &
            H3G_FIELD_HOP_BY_HOP));
    for (size_t j = 0; j < f[i].valuelen; j++)
      CHECK(f[i].value[j] != '\r' && f[i].value[j] != '\n' &&
            f[i].value[j] != 0);
  }
}

/* ---- fake timers ------------------------------------------------------ */

static h3g_timer *ft_start(void *loop, uint64_t ms, void (*cb)(void *),
                           void *arg) {
  CHECK(loop == &w.loop);
  if (bit(w.timer_fails, &w.timers_seen))
    return NULL;
  for (size_t i = 0; i < MAX_TIMERS; i++)
    if (!w.timers[i].live) {
      w.timers[i] = (fake_timer){1, w.now_ns + ms * 1000000u, cb, arg};
      return (h3g_timer *)&w.timers[i];
    }
  return NULL;
}

static void ft_cancel(h3g_timer *t) {
  fake_timer *ft = (fake_timer *)(void *)t;
  CHECK(ft != NULL);
  CHECK(ft->live); /* never a fired or cancelled one */
  ft->live = 0;
}

static const h3g_timer_ops fake_timers = {.start = ft_start,
                                          .cancel = ft_cancel};

/* Runs every timer due by now, earliest first. */
static void fire_due(void) {
  for (int guard = 0; guard < 1000; guard++) {
    fake_timer *t = NULL;
    for (size_t i = 0; i < MAX_TIMERS; i++)
      if (w.timers[i].live && w.timers[i].due_ns <= w.now_ns &&
          (t == NULL || w.timers[i].due_ns < t->due_ns))
        t = &w.timers[i];
    if (t == NULL)
      return;
    t->live = 0; /* released once its callback runs */
    TRACE("  timer fires\n");
    t->cb(t->arg);
  }
  broken(__LINE__, "timers keep firing without time passing");
}

/* ---- the upstream's view of the request -------------------------------- */

static int known_method(const char *m) {
  static const char *const ms[] = {"GET", "HEAD", "POST", "PUT", "DELETE",
                                   "OPTIONS", "TRACE", "PATCH"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(ms); i++)
    if (strcmp(m, ms[i]) == 0)
      return 1;
  return 0;
}

static int rq_on_head(void *ud, h3g_h1_request_head *h) {
  fake_conn *c = ud;
  CHECK(c->rq_heads == 0); /* one request per connection, never two */
  c->rq_heads++;
  const h3g_field *early = NULL;
  int keys = 0, versions = 0;
  for (size_t i = 0; i < h->fields->nfields; i++) {
    const h3g_field *f = &h->fields->fields[i];
    if (name_is(f, "early-data"))
      early = f;
    if (name_is(f, "sec-websocket-key"))
      keys++;
    if (name_is(f, "sec-websocket-version"))
      versions++;
    /* what the client sent as hop-by-hop never goes on; only our own
     * framing does, and a handshake's Connection and Upgrade */
    if (name_is(f, "transfer-encoding"))
      CHECK(f->valuelen == 7 && memcmp(f->value, "chunked", 7) == 0);
    else if (c->handshake && name_is(f, "connection"))
      CHECK(f->valuelen == 7 && memcmp(f->value, "Upgrade", 7) == 0);
    else if (c->handshake && name_is(f, "upgrade"))
      CHECK(f->valuelen == 9 && memcmp(f->value, "websocket", 9) == 0);
    else
      CHECK(!(h3g_field_flags(f->name, f->namelen) & H3G_FIELD_HOP_BY_HOP));
  }
  if (c->handshake) {
    /* RFC 6455 §4.1: a GET without a body, one key, version 13. */
    CHECK(w.ws);
    CHECK(strcmp(h->method, "GET") == 0);
    CHECK(h->body == 0);
    CHECK(keys == 1 && versions == 1);
  }
  if (w.early && !w.handshake) {
    /* RFC 8470: before the handshake, only what is safe to replay, and
     * marked so that the origin can refuse it with 425. */
    CHECK(w.rconf.s.early_data);
    CHECK(w.body_at_headers);
    CHECK(strcmp(w.method, "GET") == 0 || strcmp(w.method, "HEAD") == 0 ||
          strcmp(w.method, "OPTIONS") == 0);
    CHECK(early != NULL && early->valuelen == 1 && early->value[0] == '1');
  }
  if (w.rconf.s.max_request_body > 0 && h->body >= 0)
    CHECK((uint64_t)h->body <= w.rconf.s.max_request_body);
  c->rq_chunked = h->body == -1;
  return 0;
}

static int rq_on_body(void *ud, const uint8_t *d, size_t n) {
  fake_conn *c = ud;
  CHECK(c->rq_body + n <= w.received);
  if (w.rconf.s.max_request_body > 0)
    CHECK(c->rq_body + n <= w.rconf.s.max_request_body);
  if (c->rq_body < BODY_KEEP) {
    size_t k = (size_t)H3G_MIN((uint64_t)n, BODY_KEEP - c->rq_body);
    CHECK(memcmp(d, w.body + c->rq_body, k) == 0);
  }
  c->rq_body += n;
  return 0;
}

static int rq_on_complete(void *ud) {
  fake_conn *c = ud;
  CHECK(c->rq_heads == 1);
  /* The whole body, and trailers only if all of them were kept; a
   * handshake has none (the client's bytes wait for the 101). */
  CHECK(c->rq_body == (c->handshake ? 0 : w.received));
  CHECK(!(c->rq_chunked && w.trailers_dropped));
  c->rq_complete = 1;
  return 0;
}

static const h3g_h1_request_callbacks rq_callbacks = {
    .on_head = rq_on_head,
    .on_body = rq_on_body,
    .on_complete = rq_on_complete,
};

/* The upstream reads tunnel bytes: the client's, in order, unchanged. */
static void tunnel_reads(fake_conn *c, const uint8_t *p, size_t n) {
  CHECK(c->tun_up + n <= w.received);
  if (c->tun_up < BODY_KEEP) {
    size_t k = (size_t)H3G_MIN((uint64_t)n, BODY_KEEP - c->tun_up);
    CHECK(memcmp(p, w.body + c->tun_up, k) == 0);
  }
  c->tun_up += n;
}

/* The upstream reads what one write sent. */
static void upstream_reads(fake_conn *c, const uint8_t *p, size_t n) {
  while (n > 0 && !c->rq_off) {
    if (c->upgraded && h3g_h1_request_parser_complete(c->rq)) {
      tunnel_reads(c, p, n);
      return;
    }
    CHECK(!c->rq_complete); /* nothing after the request: no pipelining,
                             * no desync */
    size_t used = 0;
    int rv = h3g_h1_request_parser_feed(c->rq, p, n, &used);
    if (rv != 0) {
      /* llhttp knows a fixed list of methods; any other token is valid
       * HTTP and is passed on, but cannot be parsed here. */
      CHECK(!known_method(w.method));
      c->rq_off = 1;
      return;
    }
    CHECK(used <= n);
    if (used == 0 && !h3g_h1_request_parser_complete(c->rq))
      broken(__LINE__, "the request parser made no progress");
    p += used;
    n -= used;
    if (h3g_h1_request_parser_complete(c->rq) && n > 0)
      broken(__LINE__, "bytes after the complete request");
  }
}

/* ---- the fake pool ------------------------------------------------------ */

static fake_conn *held(h3g_upconn *uc) {
  fake_conn *c = (fake_conn *)(void *)uc;
  CHECK(c != NULL && c == w.conn && !c->released);
  return c;
}

static int f_acquire(void *pool, h3g_upstream_waiter *wt) {
  CHECK(pool == &w);
  CHECK(!w.refused);
  CHECK(!w.waiting && w.conn == NULL);
  CHECK(wt->ev != NULL);
  CHECK(w.waiter == NULL || w.waiter == wt);
  w.acquires++;
  TRACE("  up: acquire%s\n",
        w.acquire_fails >> (w.acquires_seen & 7) & 1 ? " (fails)" : "");
  if (bit(w.acquire_fails, &w.acquires_seen))
    return w.acquires_seen & 1 ? H3G_ERR_NOMEM : H3G_ERR_CLOSED;
  w.waiter = wt;
  w.waiting = 1;
  return 0;
}

static void f_cancel(void *pool, h3g_upstream_waiter *wt) {
  CHECK(pool == &w);
  H3G_UNUSED(wt);
  TRACE("  up: cancel\n");
  w.waiting = 0;
}

static void f_set_urgency(void *pool, h3g_upstream_waiter *wt,
                          uint8_t urgency) {
  CHECK(pool == &w);
  CHECK(urgency <= 7);
  wt->urgency = urgency;
}

static int f_write(h3g_upconn *uc, const h3g_iovec *iov, size_t n) {
  fake_conn *c = held(uc);
  CHECK(!w.refused);
  CHECK(!c->writing);
  CHECK(!c->shut);
  CHECK(n >= 1 && n <= 8);
  w.writes++;
  if (bit(w.write_fails, &w.writes_seen))
    return H3G_ERR_IO;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    CHECK(iov[i].base != NULL || iov[i].len == 0);
    total += iov[i].len;
  }
  CHECK(total > 0 && total <= WRITE_MAX);
  TRACE("  up: write %zu bytes\n", total);
  c->snap = malloc(total);
  if (c->snap == NULL)
    abort();
  c->snap_len = 0;
  for (size_t i = 0; i < n; i++) {
    if (iov[i].len > 0)
      memcpy(c->snap + c->snap_len, iov[i].base, iov[i].len);
    c->snap_len += iov[i].len;
    c->iov[i] = iov[i];
  }
  c->niov = n;
  c->writing = 1;
  return 0;
}

static void f_read_start(h3g_upconn *uc) {
  fake_conn *c = held(uc);
  if (!c->closed_read)
    c->reading = 1;
}

static void f_read_stop(h3g_upconn *uc) {
  held(uc)->reading = 0;
}

static void f_set_read_timeout(h3g_upconn *uc, uint64_t ms) {
  held(uc)->read_timeout = ms;
}

static void drop_write(fake_conn *c) {
  free(c->snap);
  c->snap = NULL;
  c->writing = 0;
}

static void f_release(h3g_upconn *uc, int reusable) {
  fake_conn *c = held(uc);
  CHECK(!(reusable && c->upgraded));
  if (reusable && !c->writing && !c->closed_read) {
    /* Both messages ended cleanly, on both sides of the connection. */
    CHECK(c->rq_off || c->rq_complete);
    CHECK(!w.ref_failed && h3g_h1_parser_complete(w.ref) &&
          h3g_h1_parser_keep_alive(w.ref));
    /* Bytes the upstream sent after the response and we have not read
     * are the pool's to find: it drops an idle connection that sends. */
  }
  TRACE("  up: release%s\n", reusable ? " (reusable)" : "");
  c->released = 1;
  c->reusable = reusable;
  c->reading = 0;
  drop_write(c); /* abandoned */
  w.conn = NULL;
}

static const char *f_name(void *pool) {
  CHECK(pool == &w);
  return "fuzz:80";
}

/* The 101 carried the right Accept for the key this connection was sent:
 * somewhere in what the upstream sent (the bridge read its head whole). */
static int accept_sent(const fake_conn *c) {
  char acc[H3G_WS_ACCEPT_LEN + 1];
  if (c->key[0] == 0 ||
      h3g_ws_accept((const uint8_t *)c->key, strlen(c->key), acc) != 0)
    return 0;
  return memmem(c->outbox, c->out_off, acc, H3G_WS_ACCEPT_LEN) != NULL;
}

static void f_upgrade(h3g_upconn *uc) {
  fake_conn *c = held(uc);
  TRACE("  up: upgrade\n");
  CHECK(!w.refused);
  CHECK(c->handshake && !c->upgraded);
  CHECK(accept_sent(c));
  CHECK(!w.ref_failed && h3g_h1_parser_upgraded(w.ref));
  c->upgraded = 1;
  w.tunnel_opened = 1;
}

static int f_shutdown_write(h3g_upconn *uc) {
  fake_conn *c = held(uc);
  TRACE("  up: shutdown_write\n");
  CHECK(c->upgraded);
  CHECK(!c->writing); /* the pool would refuse it */
  CHECK(!c->shut);
  /* The client ended its side, and every byte it sent went before. */
  CHECK(w.phase == P_ENDED);
  CHECK(c->tun_up == w.received);
  c->shut = 1;
  return 0;
}

static void f_reset(h3g_upconn *uc) {
  fake_conn *c = held(uc);
  TRACE("  up: reset\n");
  CHECK(c->upgraded);
  c->released = 1;
  c->reusable = 0;
  c->reading = 0;
  drop_write(c);
  w.conn = NULL;
}

static const h3g_upstream_ops fake_ops = {
    .acquire = f_acquire,
    .cancel = f_cancel,
    .set_urgency = f_set_urgency,
    .write = f_write,
    .read_start = f_read_start,
    .read_stop = f_read_stop,
    .set_read_timeout = f_set_read_timeout,
    .release = f_release,
    .name = f_name,
    .upgrade = f_upgrade,
    .shutdown_write = f_shutdown_write,
    .reset = f_reset,
};

/* ---- the reference reading of the response ----------------------------- */

static int ref_on_body(void *ud, const uint8_t *d, size_t n) {
  H3G_UNUSED(ud);
  append(&w.ref_body, &w.ref_len, &w.ref_cap, d, n);
  return 0;
}

static const h3g_h1_callbacks ref_callbacks = {.on_body = ref_on_body};

/* ---- the fake front end ------------------------------------------------- */

/* Front-end calls are allowed until the stream was cut, by either side. */
static void fe_call_allowed(void) {
  CHECK(!w.aborted);
  CHECK(!w.cut);
}

static int fe_send_head(void *fs, int status, const h3g_field *fields,
                        size_t n, int interim, int has_body) {
  CHECK(fs == &w);
  fe_call_allowed();
  CHECK(!w.ended);
  CHECK(w.heads == 0); /* interim heads too come before the final one */
  CHECK(status >= 100 && status <= 599);
  /* A tunnel opens with the 101 itself to an HTTP/1.1 client. */
  CHECK(interim == (status < 200) ||
        (status == 101 && !interim && w.h1 && w.tunnel_opened));
  CHECK(!(interim && has_body));
  if (strcmp(w.method, "HEAD") == 0 || status == 204 || status == 304)
    CHECK(!has_body);
  check_fields(fields, n);
  h3g_bridge_usage u;
  h3g_bridge_get_usage(w.b, &u);
  if (w.tunnel_opened && !interim && strcmp(u.outcome, "ok") == 0) {
    /* RFC 9220 §3, RFC 8441 §5: a 2xx on HTTP/3 and HTTP/2, without a
     * content-length (its DATA is the tunnel's) or the Accept of a key
     * the client never sent; the 101 with its Accept on HTTP/1.1. */
    int cl = 0, accept = 0;
    for (size_t i = 0; i < n; i++) {
      cl += name_is(&fields[i], "content-length");
      accept += name_is(&fields[i], "sec-websocket-accept");
    }
    CHECK(has_body);
    CHECK(cl == 0);
    CHECK(w.h1 ? status == 101 && accept == 1 : status == 200 && !accept);
  }
  TRACE("  fe: head %d%s%s%s\n", status, interim ? " (interim)" : "",
        has_body ? " with body" : "",
        w.head_fails >> (w.heads_seen & 7) & 1 ? " (fails)" : "");
  if (bit(w.head_fails, &w.heads_seen))
    return H3G_ERR_CLOSED;
  if (interim)
    return 0;
  w.heads++;
  w.status = status;
  w.has_body = has_body;
  w.from_gateway = strcmp(u.outcome, "ok") != 0;
  if (w.from_gateway) {
    /* The gateway's own answer: no upstream connection behind it. */
    CHECK(status >= 400);
    CHECK(w.conn == NULL && !w.waiting);
  }
  if (!has_body)
    w.ended = 1;
  w.want = has_body;
  return 0;
}

static void fe_body_ready(void *fs) {
  CHECK(fs == &w);
  fe_call_allowed();
  CHECK(w.heads == 1 && w.has_body && !w.ended);
  w.want = 1;
}

static void fe_consume(void *fs, size_t n) {
  CHECK(fs == &w);
  fe_call_allowed();
  w.consumed += n;
  TRACE("  fe: consume %zu\n", n);
  CHECK(w.consumed <= w.received);
}

static void fe_stop_request(void *fs) {
  CHECK(fs == &w);
  fe_call_allowed();
  w.stops++;
  TRACE("  fe: stop request\n");
  CHECK(w.stops == 1);
}

static void fe_abort(void *fs, h3g_abort_code code) {
  CHECK(fs == &w);
  fe_call_allowed();
  /* An idle tunnel whose response ended is still open the other way. */
  if (w.ended) {
    CHECK(w.tunnel_opened && code == H3G_ABORT_CANCELLED);
    w.abort_after_end = 1;
  }
  CHECK(code >= H3G_ABORT_INTERNAL && code <= H3G_ABORT_CONNECT);
  /* CONNECT_ERROR only for a tunnel's connection (RFC 9114 §4.4). */
  CHECK(code != H3G_ABORT_CONNECT || w.tunnel_opened);
  TRACE("  fe: abort %d\n", (int)code);
  /* The front end resets the stream and calls nothing but free; the
   * exchange is over upstream too. */
  w.aborted = 1;
  w.cut = 1;
  w.refused = 1;
}

static uint32_t *fe_tunnels(void *fs) {
  CHECK(fs == &w);
  return &w.conn_tunnels;
}

static uint64_t fe_rtt_ns(void *fs) {
  CHECK(fs == &w);
  return w.rtt;
}

static void fe_grow_window(void *fs, size_t n) {
  CHECK(fs == &w);
  fe_call_allowed();
  w.grown += n;
  TRACE("  fe: window +%zu\n", n);
  CHECK(w.cfg.stream_buffer_size + w.grown <=
        H3G_MAX(w.cfg.max_stream_window, w.cfg.stream_buffer_size));
}

static void fe_set_priority(void *fs, h3g_priority prio) {
  CHECK(fs == &w);
  fe_call_allowed();
  CHECK(prio.urgency <= 7);
}

/* With a request window (HTTP/3, HTTP/2), and without (HTTP/1.1); each
 * with a count of tunnels, and without (a front end that carries none). */
static const h3g_frontend_ops fe_window_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .rtt_ns = fe_rtt_ns,
    .grow_window = fe_grow_window,
    .set_priority = fe_set_priority,
    .tunnels = fe_tunnels,
};

static const h3g_frontend_ops fe_plain_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .tunnels = fe_tunnels,
};

static const h3g_frontend_ops fe_window_notun_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .rtt_ns = fe_rtt_ns,
    .grow_window = fe_grow_window,
    .set_priority = fe_set_priority,
};

static const h3g_frontend_ops fe_plain_notun_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
};

/* ---- the invariants after every event ---------------------------------- */

/* Bytes handed out and not yet released are still what they were. */
static void check_outstanding(void) {
  for (size_t i = 0; i < w.out_n; i++)
    CHECK(memcmp(w.out_v[i].base, w.taken + w.out_at[i], w.out_v[i].len) ==
          0);
}

static void check_world(void) {
  h3g_bridge_usage u;
  h3g_bridge_get_usage(w.b, &u);
  size_t sbs = w.cfg.stream_buffer_size;
  size_t max_window = H3G_MAX(w.cfg.max_stream_window, sbs);
  /* request side */
  CHECK(w.consumed <= w.received);
  CHECK(u.req_cap >= sbs && u.req_cap <= max_window);
  CHECK(u.req_held <= u.req_cap);
  CHECK(u.req_held <= w.received - w.consumed);
  /* response side: handed-out bytes stay held until released; beyond the
   * in-flight allowance, everything counts against the cap */
  uint64_t out = w.taken_len - w.done;
  CHECK(u.resp_cap == sbs && u.resp_inflight == w.env.resp_inflight);
  CHECK(u.resp_held >= out);
  CHECK(u.resp_held - H3G_MIN(out, (uint64_t)u.resp_inflight) <= u.resp_cap);
  /* after a refusal or failure, nothing upstream */
  if (strcmp(u.outcome, "ok") != 0)
    w.refused = 1;
  if (w.refused)
    CHECK(w.conn == NULL && !w.waiting);
  CHECK(!(w.ended && w.aborted) || w.abort_after_end);
  /* tunnels: one request, counted once at most; a tunnel's connection has
   * no read timeout, and its credit is only for bytes the upstream took */
  CHECK(w.conn_tunnels <= 1);
  if (w.conn != NULL && w.conn->upgraded) {
    CHECK(w.conn->read_timeout == 0);
    CHECK(w.consumed <= w.conn->tun_up);
  }
  check_outstanding();
}

/* ---- events ------------------------------------------------------------- */

/* The HTTP/1.1 front end leaves what follows a handshake's head unread
 * until the 101 went (h1_session.c): then it is the tunnel's. A body the
 * head declared is passed as any request's. */
static int h1_held(void) {
  return w.h1 && strcmp(w.method, "CONNECT") == 0 && !w.tunnel_opened &&
         !w.declared_body;
}

static void client_refused(void) {
  w.cut = 1;
  w.refused = 1;
}

static void ev_field(int trailer) {
  str name, value;
  get_str(&name);
  get_str(&value);
  if (w.cut)
    return;
  if (!trailer) {
    if (w.phase != P_HEADERS)
      return;
    if (name.n == 7 && memcmp(name.p, ":method", 7) == 0 && w.method[0] == 0)
      snprintf(w.method, sizeof(w.method), "%.*s", (int)value.n, value.p);
    if (name.n == 14 && memcmp(name.p, "content-length", 14) == 0)
      w.declared_body = 1;
    CHECK(h3g_bridge_add_field(w.b, name.p, name.n, value.p, value.n) == 0);
    return;
  }
  if ((w.phase != P_BODY && w.phase != P_TRAILERS) || h1_held())
    return;
  w.phase = P_TRAILERS;
  int rv = h3g_bridge_add_trailer(w.b, name.p, name.n, value.p, value.n);
  CHECK(rv == 0 || rv == H3G_ERR_TOOBIG);
  if (rv == H3G_ERR_TOOBIG)
    w.trailers_dropped = 1;
}

static void ev_request_head(uint8_t arg) {
  static const char *const methods[] = {"GET", "POST", "HEAD", "PUT",
                                        "OPTIONS", "DELETE", "PATCH",
                                        "BREW"};
  if (w.cut || w.phase != P_HEADERS)
    return;
  if (w.ws) {
    static const char *const protocols[4] = {"websocket", "websocket",
                                             "WebSocket", "foo"};
    const char *f[10][2] = {
        {":method", "CONNECT"}, {":protocol", protocols[arg & 3]},
        {":scheme", "https"},   {":authority", "example.com"},
        {":path", "/chat"},     {"sec-websocket-protocol", "chat"}};
    size_t n = 6;
    if (arg & 4) {
      f[n][0] = "sec-websocket-key", f[n++][1] = "dGhlIHNhbXBsZSBub25jZQ==";
      f[n][0] = "sec-websocket-version", f[n++][1] = "13";
    }
    if (arg & 8) {
      f[n][0] = "content-length", f[n++][1] = "3";
      w.declared_body = 1;
    }
    if (w.method[0] == 0)
      snprintf(w.method, sizeof(w.method), "CONNECT");
    for (size_t i = 0; i < n; i++)
      CHECK(h3g_bridge_add_field(w.b, (const uint8_t *)f[i][0], strlen(f[i][0]),
                                 (const uint8_t *)f[i][1],
                                 strlen(f[i][1])) == 0);
    return;
  }
  const char *m = methods[arg & 7];
  const char *f[8][2] = {{":method", m}, {":scheme", "https"}};
  size_t n = 2;
  if (arg & 8)
    f[n][0] = ":authority", f[n++][1] = "example.com";
  f[n][0] = ":path", f[n++][1] = strcmp(m, "OPTIONS") == 0 ? "*" : "/p?q";
  if (!(arg & 8))
    f[n][0] = "host", f[n++][1] = "example.com:8443";
  if (w.method[0] == 0)
    snprintf(w.method, sizeof(w.method), "%s", m);
  for (size_t i = 0; i < n; i++)
    CHECK(h3g_bridge_add_field(w.b, (const uint8_t *)f[i][0],
                               strlen(f[i][0]), (const uint8_t *)f[i][1],
                               strlen(f[i][1])) == 0);
}

static void ev_end_headers(uint8_t arg) {
  if (w.cut || w.phase != P_HEADERS)
    return;
  int end_stream = arg & 1;
  w.phase = end_stream ? P_ENDED : P_BODY;
  w.body_at_headers = end_stream;
  int rv = h3g_bridge_end_headers(w.b, end_stream);
  CHECK(rv == 0 || rv == H3G_ERR_PROTO);
  h3g_bridge_usage u;
  h3g_bridge_get_usage(w.b, &u);
  if (rv == H3G_ERR_PROTO || strcmp(u.outcome, "header-too-large") == 0 ||
      strcmp(u.outcome, "body-too-large") == 0) {
    /* refused by its head: the upstream never heard of it */
    CHECK(w.acquires == 0 && w.writes == 0);
  }
  if (rv == H3G_ERR_PROTO)
    client_refused();
}

static void ev_body(uint8_t arg) {
  static const size_t sizes[8] = {1, 5, 100, 1000, 4096, 10000, 33000, 70000};
  uint8_t raw[256];
  size_t n;
  const uint8_t *p;
  uint8_t *filler = NULL;
  if (arg & 8) {
    n = next0();
    n = H3G_MIN(n, in.n);
    memcpy(raw, in.p, n);
    in.p += n;
    in.n -= n;
    p = raw;
  } else {
    n = sizes[arg & 7];
    filler = malloc(n);
    if (filler == NULL)
      abort();
    for (size_t i = 0; i < n; i++)
      filler[i] = (uint8_t)((w.received + i) * 7 + (w.received + i) / 251);
    p = filler;
  }
  uint64_t window = w.cfg.stream_buffer_size + w.grown;
  uint64_t credit = window - (w.received - w.consumed);
  n = (size_t)H3G_MIN((uint64_t)n, credit);
  if (w.cut || w.phase != P_BODY || n == 0 || h1_held()) {
    free(filler);
    return;
  }
  if (w.received < BODY_KEEP) {
    size_t len = (size_t)w.received;
    append(&w.body, &len, &w.body_cap, p,
           (size_t)H3G_MIN((uint64_t)n, BODY_KEEP - w.received));
  }
  w.received += n;
  int rv = h3g_bridge_recv_body(w.b, p, n);
  free(filler);
  /* within its credit the client never overflows the bridge */
  CHECK(rv == 0 || rv == H3G_ERR_PROTO);
  if (rv == H3G_ERR_PROTO)
    client_refused();
}

static void ev_end_request(void) {
  if (w.cut || (w.phase != P_BODY && w.phase != P_TRAILERS))
    return;
  w.phase = P_ENDED;
  int rv = h3g_bridge_end_request(w.b);
  CHECK(rv == 0 || rv == H3G_ERR_PROTO);
  if (rv == H3G_ERR_PROTO)
    client_refused();
}

static void ev_client(uint8_t arg) {
  if (w.cut)
    return;
  switch (arg >> 1) {
  case 0:
    h3g_bridge_client_abort(w.b);
    client_refused();
    break;
  case 1:
    h3g_bridge_reject(w.b);
    client_refused();
    break;
  case 2:
    /* 0-RTT is QUIC's (the TCP front ends never mark requests early). */
    if (w.phase == P_HEADERS && !w.handshake && !w.h1) {
      w.early = 1;
      h3g_bridge_set_early(w.b);
    }
    break;
  case 3:
    if (!w.handshake) {
      w.handshake = 1;
      h3g_bridge_handshake_done(w.b);
    }
    break;
  default:
    h3g_bridge_set_priority(w.b, (h3g_priority){.urgency = arg & 7,
                                                .incremental = arg & 1});
    break;
  }
}

static void ev_pool(uint8_t arg) {
  static const int errs[4] = {H3G_ERR_REFUSED, H3G_ERR_TIMEOUT, H3G_ERR_IO,
                              H3G_ERR_CLOSED};
  if (!w.waiting)
    return;
  w.waiting = 0;
  if (arg & 8) {
    w.waiter->ev->on_fail(w.waiter->ctx, errs[arg & 3]);
    return;
  }
  if (w.nconns == MAX_CONNS)
    return; /* the waiter stays queued */
  fake_conn *c = &w.conns[w.nconns++];
  if (h3g_h1_request_parser_new(&c->rq, &rq_callbacks, c, 1u << 20) != 0)
    abort();
  /* The response is read aside, as the bridge should read it. */
  h3g_h1_parser_reset(w.ref, strcmp(w.method, "HEAD") == 0);
  w.ref_failed = 0;
  w.ref_len = 0;
  w.conn = c;
  /* What the upstream is told to expect, from the head written at once
   * (a handshake's answer may be a 101, and its key gives the Accept). */
  static const char up_field[] = "\r\nupgrade: websocket\r\n";
  static const char key_field[] = "\r\nsec-websocket-key: ";
  w.waiter->ev->on_ready(w.waiter->ctx, (h3g_upconn *)(void *)c, arg & 1);
  const uint8_t *end = w.conn == c && c->writing
                           ? memmem(c->snap, c->snap_len, "\r\n\r\n", 4)
                           : NULL;
  size_t head = end != NULL ? (size_t)(end - c->snap) + 2 : 0;
  if (head > 0 &&
      memmem(c->snap, head, up_field, sizeof(up_field) - 1) != NULL) {
    c->handshake = 1;
    h3g_h1_parser_expect_upgrade(w.ref);
    const uint8_t *k = memmem(c->snap, head, key_field, sizeof(key_field) - 1);
    CHECK(k != NULL);
    k += sizeof(key_field) - 1;
    CHECK(k + H3G_WS_KEY_LEN + 2 <= c->snap + head);
    memcpy(c->key, k, H3G_WS_KEY_LEN);
    c->key[H3G_WS_KEY_LEN] = 0;
  }
}

/* Reads what the upstream sent, in reads of at most max bytes, while the
 * bridge reads and has room, as the pool does. */
static void deliver(size_t max) {
  fake_conn *c = w.conn;
  while (c != NULL && w.conn == c && c->reading && c->out_off < c->out_len) {
    uint8_t *buf = NULL;
    size_t cap = 0;
    w.waiter->ev->on_alloc(w.waiter->ctx, &buf, &cap);
    if (cap == 0) {
      c->reading = 0; /* no room: the pool stops reading */
      return;
    }
    CHECK(buf != NULL);
    size_t n = H3G_MIN(H3G_MIN(cap, max), c->out_len - c->out_off);
    memcpy(buf, c->outbox + c->out_off, n);
    c->out_off += n;
    if (!w.ref_failed) {
      const uint8_t *d = c->outbox + c->out_off - n;
      size_t used = 0;
      if (h3g_h1_parser_feed(w.ref, d, n, &used) != 0)
        w.ref_failed = 1;
      else if (h3g_h1_parser_upgraded(w.ref))
        /* after a 101, the tunnel's bytes: the client's to read */
        append(&w.ref_body, &w.ref_len, &w.ref_cap, d + used, n - used);
    }
    w.waiter->ev->on_read(w.waiter->ctx, n);
  }
}

static const size_t read_sizes[8] = {1, 2, 7, 64, 500, 4096, 40000,
                                     SIZE_MAX};

static void upstream_sends(const uint8_t *p, size_t n, size_t max) {
  fake_conn *c = w.conn;
  if (c == NULL || c->closed_read)
    return;
  size_t cap = c->out_len;
  uint8_t *box = c->outbox;
  append(&box, &c->out_len, &cap, p, n);
  c->outbox = box;
  deliver(max);
}

static void ev_canned(uint8_t arg) {
  static const char *const canned[16] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"
      "\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
      "0\r\nx-t: 1\r\nContent-Length: 1\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\n",
      "HTTP/1.1 103 Early Hints\r\nLink: </s>; rel=preload\r\n\r\n",
      "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
      "HTTP/1.1 425 Too Early\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.0 200 OK\r\n\r\nuntil the connection closes",
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
      "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "HTTP/1.1 200 OK\r\nPriority: u=0\r\nAlt-Svc: clear\r\nKeep-Alive: "
      "x\r\nConnection: keep-alive, x-b\r\nX-B: 1\r\nContent-Length: 2"
      "\r\n\r\nok",
      "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n",
      "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n",
  };
  const char *t = canned[arg & 15];
  upstream_sends((const uint8_t *)t, strlen(t), read_sizes[next0() & 7]);
}

/*
 * An answer to the WebSocket handshake on this connection (for the key it
 * was sent, or RFC 6455's example key when it was sent none), picked by v:
 * bits 0-2: a 101 with the right Accept, the same with a protocol, with a
 * wrong Accept, without Upgrade, without Accept, with a content-length,
 * after a 100, or a 200 with the upgrade's fields; bit 3: WebSocket frame
 * bytes behind it; bits 4-6: the read size.
 */
static void ev_ws_answer(uint8_t v) {
  fake_conn *c = w.conn;
  if (c == NULL)
    return;
  char acc[H3G_WS_ACCEPT_LEN + 1];
  const char *key = c->key[0] ? c->key : "dGhlIHNhbXBsZSBub25jZQ==";
  if (h3g_ws_accept((const uint8_t *)key, strlen(key), acc) != 0)
    abort();
  /* @: the right Accept; ~: a wrong one of the same length */
  static const char *const forms[8] = {
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\n"
      "Sec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: ~\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nContent-Length: 0\r\n"
      "Sec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: @\r\n\r\n",
      "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: @\r\nContent-Length: 0\r\n\r\n",
  };
  char text[512];
  size_t n = 0;
  for (const char *f = forms[v & 7]; *f != 0; f++) {
    if (*f == '@' || *f == '~') {
      memcpy(text + n, acc, H3G_WS_ACCEPT_LEN);
      if (*f == '~')
        text[n] = text[n] == 'x' ? 'y' : 'x';
      n += H3G_WS_ACCEPT_LEN;
    } else {
      text[n++] = *f;
    }
  }
  if (v & 8) {
    memcpy(text + n, "\x81\x05hello", 7);
    n += 7;
  }
  upstream_sends((const uint8_t *)text, n, read_sizes[(v >> 4) & 7]);
}

/* Raw bytes, or with a length byte of 0xff, a run of filler body bytes
 * (0xfe: an answer to the WebSocket handshake, ev_ws_answer()). */
static void ev_raw(uint8_t arg) {
  uint8_t len = next0();
  if (len == 0xfe) {
    ev_ws_answer(next0());
    return;
  }
  if (len == 0xff) {
    static const size_t runs[8] = {1, 10, 1000, 8192, 32768, 32769, 65536,
                                   100000};
    size_t n = runs[next0() & 7];
    uint8_t *p = malloc(n);
    if (p == NULL)
      abort();
    for (size_t i = 0; i < n; i++)
      p[i] = (uint8_t)('a' + (i * 13 + i / 26) % 26);
    upstream_sends(p, n, read_sizes[arg & 7]);
    free(p);
    return;
  }
  size_t n = H3G_MIN((size_t)len, in.n);
  uint8_t raw[256];
  memcpy(raw, in.p, n);
  in.p += n;
  in.n -= n;
  upstream_sends(raw, n, read_sizes[arg & 7]);
}

static void ev_upstream_end(uint8_t arg) {
  fake_conn *c = w.conn;
  if (c == NULL || !c->reading || c->out_off < c->out_len)
    return;
  if (arg & 1) {
    c->closed_read = 1;
    c->reading = 0;
    if (c->upgraded)
      w.up_eof = 1;
    w.waiter->ev->on_eof(w.waiter->ctx);
  } else if (!(arg & 2) || c->read_timeout > 0) {
    c->closed_read = 1;
    c->reading = 0;
    w.waiter->ev->on_error(w.waiter->ctx,
                           arg & 2 ? H3G_ERR_TIMEOUT : H3G_ERR_IO);
  }
}

static void ev_written(uint8_t arg) {
  fake_conn *c = w.conn;
  if (c == NULL || !c->writing)
    return;
  /* The bytes given to write() are still there, unchanged. */
  size_t at = 0;
  for (size_t i = 0; i < c->niov; i++) {
    if (c->iov[i].len > 0)
      CHECK(memcmp(c->iov[i].base, c->snap + at, c->iov[i].len) == 0);
    at += c->iov[i].len;
  }
  int status = arg & 1 ? H3G_ERR_IO : 0;
  if (status == 0)
    upstream_reads(c, c->snap, c->snap_len);
  drop_write(c);
  w.waiter->ev->on_written(w.waiter->ctx, status);
}

static int can_take(void) {
  return !w.cut && !w.aborted && !w.ended && w.heads == 1 && w.has_body;
}

/* The front end pulls body. Returns 1 if it got bytes or the end. */
static int take(size_t nv, size_t max) {
  h3g_iovec v[8];
  if (w.out_n + nv > H3G_ARRAY_LEN(w.out_v))
    return 0; /* the model's limit, not the bridge's */
  unsigned flags = 0xff;
  size_t n = h3g_bridge_take_body(w.b, v, nv, max, &flags);
  TRACE("  fe: took %zu vectors, flags %u\n", n, flags);
  CHECK(n <= nv);
  CHECK((flags & ~(unsigned)(H3G_BODY_END | H3G_BODY_TRAILERS)) == 0);
  CHECK(!(flags & H3G_BODY_TRAILERS) || (flags & H3G_BODY_END));
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    CHECK(v[i].len > 0 && v[i].len <= H3G_RING_CHUNK);
    CHECK(w.out_n < H3G_ARRAY_LEN(w.out_v));
    w.out_v[w.out_n] = v[i];
    w.out_at[w.out_n++] = w.taken_len;
    append(&w.taken, &w.taken_len, &w.taken_cap, v[i].base, v[i].len);
    total += v[i].len;
  }
  CHECK(total <= max);
  /* The body is the upstream's, or the gateway's error text. */
  if (w.from_gateway) {
    CHECK(w.taken_len < 128);
    char text[128];
    int tl = snprintf(text, sizeof(text), "%d ", w.status);
    CHECK(w.taken_len == 0 ||
          memcmp(w.taken, text, H3G_MIN((size_t)tl, w.taken_len)) == 0);
  } else {
    CHECK(w.taken_len <= w.ref_len);
    CHECK(w.taken_len == 0 || memcmp(w.taken, w.ref_body, w.taken_len) == 0);
  }
  if (flags & H3G_BODY_END) {
    w.ended = 1;
    if (w.from_gateway)
      CHECK(w.taken_len > 0 && w.taken[w.taken_len - 1] == '\n');
    else
      CHECK(w.taken_len == w.ref_len);
  }
  if (flags & H3G_BODY_TRAILERS) {
    const h3g_field *f = NULL;
    size_t nf = 0;
    h3g_bridge_get_trailers(w.b, &f, &nf);
    CHECK(nf > 0);
    check_fields(f, nf);
    for (size_t i = 0; i < nf; i++)
      CHECK(!(h3g_field_flags(f[i].name, f[i].namelen) & H3G_FIELD_FRAMING));
  }
  if (n == 0 && flags == 0) {
    w.want = 0; /* nothing now: body_ready follows when that changes */
    return 0;
  }
  return 1;
}

static void ev_take(uint8_t arg) {
  static const size_t maxes[4] = {1, 1000, 40000, SIZE_MAX};
  if (can_take())
    take(1 + (arg & 3) * 2, maxes[arg >> 2]);
}

/* The front end is done with the n oldest bytes it took. */
static void release_taken(size_t n) {
  /* Forget the outstanding vectors the release covers, oldest first. */
  w.done += n;
  size_t keep = 0;
  for (size_t i = 0; i < w.out_n; i++) {
    size_t end = w.out_at[i] + w.out_v[i].len;
    if (end <= w.done)
      continue;
    if (w.out_at[i] < w.done) {
      size_t cut = (size_t)(w.done - w.out_at[i]);
      w.out_v[i].base += cut;
      w.out_v[i].len -= cut;
      w.out_at[i] += cut;
    }
    w.out_v[keep] = w.out_v[i];
    w.out_at[keep++] = w.out_at[i];
  }
  w.out_n = keep;
  h3g_bridge_body_done(w.b, n);
}

static void ev_done(uint8_t arg) {
  uint64_t out = w.taken_len - w.done;
  if (w.cut || w.aborted || out == 0)
    return;
  release_taken((arg & 3) == 0   ? (size_t)out
                : (arg & 3) == 1 ? 1
                : (arg & 3) == 2 ? (size_t)(out + 1) / 2
                                 : (size_t)H3G_MIN(out, (uint64_t)1000));
}

/*
 * At the end of the input, before the front end lets go: it pulls only
 * when told (as nghttp3 does after a WOULDBLOCK) and releases what it took,
 * and the pool reads while the bridge reads. A response the upstream
 * completed must then reach its end: a missed body_ready or a read never
 * resumed would leave the stream hanging until a timeout.
 */
static void drain(void) {
  for (int guard = 0; guard < 100000 && can_take(); guard++) {
    int progress = 0;
    fake_conn *c = w.conn;
    if (c != NULL && c->reading && c->out_off < c->out_len) {
      deliver(SIZE_MAX);
      progress = 1;
    }
    if (can_take() && w.want && take(8, SIZE_MAX))
      progress = 1;
    if (!w.cut && !w.aborted && w.taken_len > w.done) {
      release_taken((size_t)(w.taken_len - w.done));
      progress = 1;
    }
    if (!progress)
      break;
    check_world();
  }
  if (!can_take())
    return;
  h3g_bridge_usage u;
  h3g_bridge_get_usage(w.b, &u);
  fake_conn *c = w.conn;
  CHECK(u.resp_held == 0 || w.want);          /* body_ready was missed */
  CHECK(c == NULL || c->closed_read || c->out_off == c->out_len ||
        c->reading);                          /* reads never resumed */
  /* A tunnel's response ends with the upstream's end of its side. */
  int ref_done =
      h3g_h1_parser_upgraded(w.ref) ? w.up_eof : h3g_h1_parser_complete(w.ref);
  if (w.from_gateway ||
      (!w.ref_failed && ref_done && (c == NULL || c->out_off == c->out_len)))
    CHECK(w.ended);                           /* the end never came */
}

static void ev_time(uint8_t arg) {
  static const uint64_t ms[16] = {0,    1,    9,     10,    49,    50,
                                  99,   100,  999,   1000,  1001,  5000,
                                  9999, 10000, 60000, 3600000};
  w.now_ns += ms[arg] * 1000000u;
  fire_due();
}

/* ---- one run ------------------------------------------------------------ */

/*
 * The configuration bytes:
 *   c0  stream_buffer_size (bits 0-1), max_header_size (2-3),
 *       max_request_body (4-5), a front end with a request window (6),
 *       an in-flight allowance (7)
 *   c1  max_stream_window (0-1), request_body_timeout (2), early_data (3),
 *       Forwarded (4), X-Forwarded-* (5), Via (6), a trusted client (7)
 *   c2  acquires that fail (0-3), timers that cannot start (4-6), no
 *       timers at all (7)
 *   c3  heads the front end cannot send (0-3), writes that fail (4-7)
 *   c4  the round-trip time (0-1), an IPv6 client (2), WebSockets on
 *       (3: routes take them, a 5 s tunnel idle timeout), the route
 *       without them (4), a front end without tunnels (5), no tunnel
 *       allowed per connection (6), an HTTP/1.1 client (7)
 */
static void setup(const uint8_t *c) {
  static const uint32_t sbs[4] = {1024, 4096, 16384, 40000};
  static const uint32_t mhs[4] = {1024, 2048, 16384, 65536};
  static const uint64_t mrb[4] = {0, 10, 5000, 100000};
  static const uint64_t rtts[4] = {0, 1, 1000000, 10000000000ull};
  memset(&w, 0, sizeof(w));
  w.now_ns = 1000000000000ull;
  w.cfg.stream_buffer_size = sbs[c[0] & 3];
  w.cfg.max_header_size = mhs[(c[0] >> 2) & 3];
  w.rconf.s.max_request_body = mrb[(c[0] >> 4) & 3];
  w.cfg.max_stream_window = w.cfg.stream_buffer_size << (2 * (c[1] & 3));
  w.rconf.s.request_body_timeout_ms = c[1] & 4 ? 50 : 0;
  w.rconf.s.early_data = (c[1] >> 3) & 1;
  w.rconf.s.fwd_forwarded = (c[1] >> 4) & 1;
  w.rconf.s.fwd_x_forwarded = (c[1] >> 5) & 1;
  w.rconf.s.fwd_via = (c[1] >> 6) & 1;
  w.rconf.s.alt_svc = 1;
  if (c[1] & 0x80) {
    w.cfg.ntrusted = 2;
    w.cfg.trusted[0] = (h3g_cidr){.family = 4, .prefix = 8, .addr = {127}};
    w.cfg.trusted[1] =
        (h3g_cidr){.family = 6, .prefix = 128, .addr = {[15] = 1}};
  }
  w.cfg.request_header_timeout_ms = 10000;
  w.rconf.s.response_timeout_ms = 60000;
  w.rconf.s.expect_continue_timeout_ms = 1000;
  snprintf(w.rconf.name, sizeof(w.rconf.name), "fuzz");
  w.route_stats = (h3g_route_stats){.refs = 1};
  w.route = (h3g_route){
      .conf = &w.rconf, .ops = &fake_ops, .pool = &w, .stats = &w.route_stats};
  w.acquire_fails = c[2] & 15;
  w.timer_fails = (c[2] >> 4) & 7;
  w.head_fails = c[3] & 15;
  w.write_fails = c[3] >> 4;
  w.rtt = rtts[c[4] & 3];
  w.ws = (c[4] >> 3) & 1;
  w.h1 = (c[4] >> 7) & 1;
  w.cfg.websocket_any = (uint32_t)w.ws;
  w.rconf.s.websocket = w.ws && !(c[4] & 0x10);
  w.cfg.tunnel_idle_timeout_ms = 5000;
  w.cfg.max_tunnels = 10000;
  w.cfg.max_tunnels_per_connection = c[4] & 0x40 ? 0 : 100;
  w.env = (h3g_bridge_env){
      .cfg = &w.cfg,
      .route = &w.route,
      .timers = c[2] & 0x80 ? NULL : &fake_timers,
      .loop = &w.loop,
      .resp_inflight = c[0] & 0x80 ? 8192 : 0,
  };
  if (h3g_h1_parser_new(&w.ref, &ref_callbacks, NULL, w.cfg.max_header_size) !=
          0)
    abort();
  int window = c[0] & 0x40, tunnels = !(c[4] & 0x20);
  const h3g_frontend_ops *fe =
      window ? (tunnels ? &fe_window_ops : &fe_window_notun_ops)
             : (tunnels ? &fe_plain_ops : &fe_plain_notun_ops);
  CHECK(h3g_bridge_new(&w.b, &w.env, fe, &w, &w,
                       c[4] & 4 ? "[::1]:443" : "127.0.0.1:5000",
                       w.h1 ? "http/1.1" : "h3") == 0);
  if (w.cfg.websocket_any)
    h3g_bridge_connect_offered(w.b);
}

static void teardown(void) {
  h3g_bridge_free(w.b);
  /* Nothing of the bridge outlives it, its tunnel count included. */
  CHECK(w.conn_tunnels == 0);
  CHECK(h3g_stats.tunnels_open == 0);
  for (size_t i = 0; i < MAX_TIMERS; i++)
    CHECK(!w.timers[i].live);
  CHECK(w.conn == NULL && !w.waiting);
  CHECK(h3g_ring_chunks_in_use() == 0);
  /* Pooled chunks back to malloc: libFuzzer looks for leaks after an
   * input that allocated more than it freed, and that costs. */
  h3g_ring_pool_trim();
  for (size_t i = 0; i < w.nconns; i++) {
    h3g_h1_request_parser_free(w.conns[i].rq);
    free(w.conns[i].outbox);
    free(w.conns[i].snap);
  }
  h3g_h1_parser_free(w.ref);
  free(w.ref_body);
  free(w.taken);
  free(w.body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int started;
  if (!started) {
    /* The bridge's warnings (malformed responses) would fill the log. */
    tracing = getenv("H3G_FUZZ_TRACE") != NULL;
    h3g_log_set_level(tracing ? H3G_LOG_DEBUG : H3G_LOG_ERROR);
    started = 1;
  }
  if (size < 5)
    return 0;
  setup(data);
  in = (reader){data + 5, size - 5};
  check_world();
  while (in.n > 0) {
    uint8_t op = next0();
    uint8_t arg = op >> 4;
    static const char *const names[16] = {
        "field", "request head", "end headers", "body", "trailer",
        "end request", "client", "pool", "canned response", "raw response",
        "read", "upstream end", "written", "take", "done", "time"};
    TRACE("%s %u\n", names[op & 15], arg);
    switch (op & 15) {
    case 0: ev_field(0); break;
    case 1: ev_request_head(arg); break;
    case 2: ev_end_headers(arg); break;
    case 3: ev_body(arg); break;
    case 4: ev_field(1); break;
    case 5: ev_end_request(); break;
    case 6: ev_client(arg); break;
    case 7: ev_pool(arg); break;
    case 8: ev_canned(arg); break;
    case 9: ev_raw(arg); break;
    case 10: deliver(read_sizes[arg & 7]); break;
    case 11: ev_upstream_end(arg); break;
    case 12: ev_written(arg); break;
    case 13: ev_take(arg); break;
    case 14: ev_done(arg); break;
    default: ev_time(arg); break;
    }
    check_world();
  }
  drain();
  teardown();
  return 0;
}
