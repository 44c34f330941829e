/*
 * Keep-alive connections to one HTTP/1.1 upstream server, on libuv.
 *
 * Each connection is one heap object holding its stream (a uv_tcp_t, or a
 * uv_pipe_t for a Unix socket: only opening it differs), one uv_timer_t,
 * its connect and write requests. It lives in exactly one per-state list
 * (conn_set_state() is the only place that moves it):
 *
 *   CONNECTING --connected--> BUSY (for its waiter) or offered (see below)
 *       |  \--refused / timeout--> CLOSING (the waiter gets on_fail)
 *   offered: HANDOFF to the queue head, or IDLE when nobody waits
 *   IDLE --acquire()--> HANDOFF --its timer fires--> BUSY --release(1)-->
 *       offered again;  BUSY --release(0)--> CLOSING
 *   IDLE / HANDOFF --upstream closed it, sent bytes, idle expiry--> CLOSING
 *   CLOSING: uv_close()d; freed when both of its handles are closed.
 *
 * The one timer per connection serves whatever the state needs: connect
 * timeout (CONNECTING), idle expiry (IDLE), the deferred on_ready
 * (HANDOFF), the read timeout (BUSY). So idle expiry costs no pool-wide
 * sweep, and handing a connection over costs no extra handle.
 *
 * Answers are never given from inside acquire() or release(): a connection
 * promised to a waiter sits in HANDOFF with its timer started at 0 ms and
 * on_ready is called from that timer callback, in FIFO order. A connect
 * error that libuv reports synchronously is deferred the same way (the
 * CONNECTING timer fires at once and reports c->connect_err instead of a
 * timeout). Only h3g_upstream_pool_close() calls on_fail from inside itself.
 *
 * The wait queue (wait_queue.h) serves client connections in turn, each
 * one's most urgent request first; a single timer is armed for the
 * deadline of the waiter that has waited longest (its arrival list keeps
 * that one first whatever the serving order); on expiry it fails at most
 * QUEUE_EXPIRE_BATCH waiters and re-arms at 0 ms for the rest, so a burst
 * of timeouts cannot monopolise one loop iteration.
 *
 * Re-resolution is the resolver's (resolver.h); the pool reacts to its
 * on_change. Every connection remembers the address generation it was
 * opened for; when the address changes, idle connections of an older
 * generation are closed and busy ones are closed instead of offered when
 * released, so the old address drains as its exchanges end. The pool is
 * freed only after the resolver's close callback, which may come after
 * every handle of the pool is closed (a lookup running on a worker thread
 * cannot be stopped).
 *
 * TLS (cfg.tls set) is a transport hook on the same machine: a connection
 * stays CONNECTING through the handshake (the connect timer keeps running,
 * so the handshake counts against connect_timeout), and past it every read
 * of the socket goes through the session (on_tls_read): ciphertext is fed,
 * plaintext delivered to the user, and the idle watcher decrypts what
 * arrives too, so a post-handshake message (a session ticket) keeps the
 * connection while close_notify, application data, EOF or an error drop
 * it. A user's write is encrypted as the session's output buffer allows
 * and flushed with one uv_write at a time (tls_write_req); on_written comes
 * once all of it went out. A read resumed over plaintext already decrypted
 * is served from the connection's timer, never from inside read_start().
 */
#include "upstream_pool.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include "log.h"
#include "metrics.h"
#include "resolver.h"
#include "upstream_tls.h"

#define MAX_IOV 8
/* Waiters failed per queue-timer callback before yielding to the loop. */
#define QUEUE_EXPIRE_BATCH 64
/* TCP keep-alive probes on pooled connections start after this (s). */
#define KEEPALIVE_DELAY_S 60
/* Ciphertext read from a TLS connection's socket per read callback (fed
 * to its session at once, so one buffer per pool suffices). */
#define TLS_READ_CHUNK (16 * 1024)

typedef enum conn_state {
  CONN_CONNECTING,
  CONN_IDLE,
  CONN_HANDOFF,
  CONN_BUSY,
  /* Upgraded (a WebSocket tunnel): still its user's, but out of the
   * pool's count, so the slot serves other requests; closed on release. */
  CONN_TUNNEL,
  CONN_CLOSING,
  CONN_NSTATES,
} conn_state;

/* Who reads from the socket. */
typedef enum conn_reader {
  READER_NONE,
  READER_USER,  /* the user's on_alloc/on_read */
  READER_WATCH, /* the pool's idle watcher: any event kills the connection */
  READER_HANDSHAKE, /* TLS: the pool, during the handshake */
} conn_reader;

/* Pool-side state of a waiter, kept in w->queued. */
enum {
  WAIT_NONE = 0,
  WAIT_QUEUED,     /* in the FIFO queue */
  WAIT_CONNECTING, /* w->conn is being opened for it */
  WAIT_HANDOFF,    /* w->conn is promised to it; on_ready is pending */
};

struct h3g_upconn {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;   /* TCP pools */
    uv_pipe_t pipe; /* Unix-socket pools */
  } io;
  uv_timer_t timer;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_write_t tls_write_req; /* TLS: the flush of ciphertext in flight */
  h3g_upstream_tls *tls;    /* TLS: the session, else NULL */
  size_t tls_flushing;      /* TLS: bytes of that flush */
  h3g_iovec wiov[MAX_IOV];  /* TLS: the user's write, still to encrypt */
  size_t wn, wi;            /* its elements, and the first unencrypted */
  h3g_upstream_pool *pool;
  h3g_upconn *prev, *next; /* in pool->conns[state] */
  conn_state state;
  conn_reader reader;
  int nhandles;                  /* handles not yet closed */
  h3g_upstream_waiter *waiter;   /* CONNECTING/HANDOFF: for whom (or NULL) */
  const h3g_upstream_events *ev; /* BUSY: the user */
  void *ctx;
  uint64_t read_timeout_ms;
  uint32_t addr_gen;        /* p->addr_gen when it was opened */
  uint64_t start_ns;        /* when its connect began (h3g_now_ns) */
  int connect_err;          /* deferred synchronous connect error */
  int pending_err;          /* deferred on_error for the user */
  unsigned established : 1; /* the TCP connect succeeded */
  unsigned carried : 1;     /* has been handed to a user before */
  unsigned write_pending : 1;
  unsigned dead : 1;     /* EOF, read or write error seen */
  unsigned answered : 1; /* a byte was read since the hand-over */
  /* TLS: plaintext waits in the session for the timer to deliver it */
  unsigned tls_deliver : 1;
  unsigned reset_on_close : 1; /* close with a TCP reset (op_reset) */
  unsigned shut : 1;           /* the write side was shut down */
  uv_shutdown_t shutdown_req;
};

typedef struct conn_list {
  h3g_upconn *head, *tail;
  uint32_t n;
} conn_list;

struct h3g_upstream_pool {
  uv_loop_t *loop;
  h3g_upstream_pool_config cfg; /* its strings are the copies below */
  char *host, *unix_path, *name;
  /* TLS: the server name (cfg.sni, else host), and TLS_READ_CHUNK bytes
   * to read ciphertext into. */
  char *sni;
  uint8_t *tls_rbuf;
  /* TCP: where new connects go (h3g_resolver_sockaddr()); NULL once it is
   * closed, when no connect starts any more. */
  h3g_resolver *resolver;
  int resolver_closed; /* its close callback ran (or there is none) */
  uint32_t addr_gen;   /* bumped when the resolver's address changes */
  /* The address as text, "unix:PATH" or the resolver's, copied so that it
   * outlives the resolver. */
  char address[sizeof("unix:") + sizeof(((struct sockaddr_un *)0)->sun_path)];
  conn_list conns[CONN_NSTATES];
  h3g_waitq queue;
  uv_timer_t qtimer;
  h3g_upstream_pool_stats stats; /* the counters; gauges come from lists */
  int closing;
  int qtimer_closed;
  void (*close_cb)(void *arg);
  void *close_arg;
  /* Idle connections read into this: whatever arrives is discarded and
   * the connection closed, so one small shared buffer suffices. */
  char scratch[64];
};

static void on_conn_timer(uv_timer_t *t);
static void on_connect(uv_connect_t *req, int status);
static void on_conn_handle_close(uv_handle_t *h);
static void on_watch_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_watch_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_user_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_user_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_write(uv_write_t *req, int status);
static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_tls_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_tls_written(uv_write_t *req, int status);
static void tls_deliver(h3g_upconn *c);
static void conn_tls_start(h3g_upconn *c);
static void conn_established(h3g_upconn *c);
static void on_queue_timer(uv_timer_t *t);
static void on_qtimer_close(uv_handle_t *h);
static void pool_serve(h3g_upstream_pool *p);

/* ---- lists and state ----------------------------------------------------- */

static void list_remove(conn_list *l, h3g_upconn *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    l->head = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  else
    l->tail = c->prev;
  c->prev = c->next = NULL;
  l->n--;
}

static void list_push_front(conn_list *l, h3g_upconn *c) {
  c->prev = NULL;
  c->next = l->head;
  if (l->head != NULL)
    l->head->prev = c;
  else
    l->tail = c;
  l->head = c;
  l->n++;
}

static void list_push_back(conn_list *l, h3g_upconn *c) {
  c->next = NULL;
  c->prev = l->tail;
  if (l->tail != NULL)
    l->tail->next = c;
  else
    l->head = c;
  l->tail = c;
  l->n++;
}

static void gauge_add(conn_state s, int64_t d) {
  if (s == CONN_IDLE)
    H3G_ADD(upstream_conns_idle, d);
  else if (s == CONN_BUSY || s == CONN_HANDOFF)
    H3G_ADD(upstream_conns_busy, d);
}

/*
 * The one place a connection changes state. IDLE is a stack (the most
 * recently used connection has the warmest congestion window and is the
 * least likely to have been closed by the upstream's own idle timer);
 * HANDOFF is FIFO so on_ready answers come in the order they were decided.
 */
static void conn_set_state(h3g_upconn *c, conn_state to) {
  h3g_upstream_pool *p = c->pool;
  list_remove(&p->conns[c->state], c);
  gauge_add(c->state, -1);
  c->state = to;
  if (to == CONN_IDLE)
    list_push_front(&p->conns[to], c);
  else
    list_push_back(&p->conns[to], c);
  gauge_add(to, 1);
}

static uint32_t pool_total(const h3g_upstream_pool *p) {
  return p->conns[CONN_CONNECTING].n + p->conns[CONN_IDLE].n +
         p->conns[CONN_HANDOFF].n + p->conns[CONN_BUSY].n;
}

/* Whether c belongs to a user (an exchange, or a tunnel after it). */
static int held(const h3g_upconn *c) {
  return c->state == CONN_BUSY || c->state == CONN_TUNNEL;
}

/* The passive health signal (upstream_pool.h says when). Callers invoke it
 * from libuv callbacks only, just before the user's own event. */
static void health(h3g_upstream_pool *p, int ok) {
  if (p->cfg.on_health != NULL)
    p->cfg.on_health(p->cfg.health_arg, ok);
}

/* The same for what happens on a held connection: a tunnel's end, however
 * abrupt, says nothing about the server's health (apps drop sockets). */
static void conn_health(const h3g_upconn *c, int ok) {
  if (c->state != CONN_TUNNEL)
    health(c->pool, ok);
}

/* ---- the wait queue ------------------------------------------------------ */

static h3g_upstream_waiter *entry_waiter(h3g_waitq_entry *e) {
  return e != NULL ? H3G_CONTAINER_OF(e, h3g_upstream_waiter, qe) : NULL;
}

/* Arms the queue timer for the deadline of the waiter that has waited
 * longest (whatever order the queue serves in, it expires first). */
static void queue_timer_update(h3g_upstream_pool *p) {
  if (p->closing)
    return;
  h3g_upstream_waiter *oldest = entry_waiter(h3g_waitq_oldest(&p->queue));
  if (oldest == NULL || p->cfg.connect_timeout_ms == 0) {
    uv_timer_stop(&p->qtimer);
    return;
  }
  uint64_t due = oldest->since_ns / 1000000u + p->cfg.connect_timeout_ms;
  uint64_t now = uv_now(p->loop);
  uv_timer_start(&p->qtimer, on_queue_timer, due > now ? due - now : 0, 0);
}

/* Queues w (front = 1: a waiter that lost the connection promised to it
 * keeps its place and its original deadline). Returns 0 or H3G_ERR_NOMEM. */
static int queue_push(h3g_upstream_pool *p, h3g_upstream_waiter *w,
                      int front) {
  h3g_waitq_entry *was_oldest = h3g_waitq_oldest(&p->queue);
  /* A waiter without a group is a group of its own. */
  const void *key = w->group != NULL ? w->group : (const void *)w;
  int rv = h3g_waitq_push(&p->queue, &w->qe, key, w->urgency,
                          w->since_ns, front);
  if (rv != 0)
    return rv;
  w->queued = WAIT_QUEUED;
  H3G_INC(upstream_queue_waiting);
  if (h3g_waitq_oldest(&p->queue) != was_oldest)
    queue_timer_update(p);
  return 0;
}

static void queue_remove(h3g_upstream_pool *p, h3g_upstream_waiter *w) {
  int was_oldest = h3g_waitq_oldest(&p->queue) == &w->qe;
  h3g_waitq_remove(&p->queue, &w->qe);
  w->queued = WAIT_NONE;
  H3G_DEC(upstream_queue_waiting);
  if (was_oldest)
    queue_timer_update(p);
}

/* The waiter to serve next (wait_queue.h), removed from the queue. */
static h3g_upstream_waiter *queue_pop(h3g_upstream_pool *p) {
  h3g_waitq_entry *oldest = h3g_waitq_oldest(&p->queue);
  h3g_upstream_waiter *w = entry_waiter(h3g_waitq_pop(&p->queue));
  if (w == NULL)
    return NULL;
  w->queued = WAIT_NONE;
  H3G_DEC(upstream_queue_waiting);
  if (oldest == &w->qe)
    queue_timer_update(p);
  return w;
}

static void on_queue_timer(uv_timer_t *t) {
  h3g_upstream_pool *p = t->data;
  uint64_t now = uv_now(p->loop);
  for (int i = 0; i < QUEUE_EXPIRE_BATCH; i++) {
    h3g_upstream_waiter *w = entry_waiter(h3g_waitq_oldest(&p->queue));
    if (w == NULL || w->since_ns / 1000000u + p->cfg.connect_timeout_ms > now)
      break;
    queue_remove(p, w);
    H3G_INC(upstream_timeouts);
    h3g_debug("upstream %s: waited %llu ms for a connection", p->name,
              (unsigned long long)p->cfg.connect_timeout_ms);
    /* The callback may acquire or cancel: the queue is re-read each turn.
     * AGAIN, not TIMEOUT: the server is busy, nothing says it is broken. */
    w->ev->on_fail(w->ctx, H3G_ERR_AGAIN);
  }
  queue_timer_update(p);
}

/* ---- connections --------------------------------------------------------- */

static void conn_detach_waiter(h3g_upconn *c) {
  h3g_upstream_waiter *w = c->waiter;
  if (w == NULL)
    return;
  w->queued = WAIT_NONE;
  w->conn = NULL;
  c->waiter = NULL;
}

static void conn_close(h3g_upconn *c) {
  h3g_upstream_pool *p = c->pool;
  if (c->state == CONN_CLOSING)
    return;
  assert(c->waiter == NULL);
  if (c->established) {
    p->stats.closed++;
    H3G_INC(upstream_conns_closed);
  }
  conn_set_state(c, CONN_CLOSING);
  c->ev = NULL;
  c->ctx = NULL;
  c->reader = READER_NONE;
  /* A pending connect or write completes with UV_ECANCELED before the
   * close callbacks run; their callbacks see CLOSING and stay silent. A
   * reset is possible on TCP only, and not once the write side was shut
   * down (libuv refuses it then): those close plainly. */
  if (!c->reset_on_close || p->cfg.unix_path != NULL || c->shut ||
      uv_tcp_close_reset(&c->io.tcp, on_conn_handle_close) != 0)
    uv_close(&c->io.handle, on_conn_handle_close);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

static void pool_free(h3g_upstream_pool *p) {
  h3g_waitq_free(&p->queue);
  free(p->host);
  free(p->unix_path);
  free(p->name);
  free(p->sni);
  free(p->tls_rbuf);
  free(p);
}

/* Frees p once nothing refers to it: every handle closed, and the
 * resolver closed (its lookup's callback would call back into p). */
static void pool_maybe_finish(h3g_upstream_pool *p) {
  if (!p->closing || !p->qtimer_closed || p->conns[CONN_CLOSING].n != 0 ||
      p->conns[CONN_TUNNEL].n != 0 || pool_total(p) != 0 ||
      !p->resolver_closed)
    return;
  void (*cb)(void *) = p->close_cb;
  void *arg = p->close_arg;
  h3g_debug("upstream %s: pool closed", p->name);
  if (cb != NULL)
    cb(arg);
  pool_free(p);
}

static void on_conn_handle_close(uv_handle_t *h) {
  h3g_upconn *c = h->data;
  if (--c->nhandles > 0)
    return;
  h3g_upstream_pool *p = c->pool;
  list_remove(&p->conns[CONN_CLOSING], c);
  h3g_upstream_tls_free(c->tls);
  free(c);
  H3G_DEC(upstream_conns_active);
  pool_maybe_finish(p);
}

/*
 * A connection on the idle list may have been closed by the upstream in a
 * way the watcher has not been told about yet (the FIN arrived during this
 * loop iteration). One non-blocking peek tells for sure; it costs a system
 * call per reuse, which is far cheaper than a request sent into a dead
 * socket.
 */
static int conn_alive(h3g_upconn *c) {
  uv_os_fd_t fd;
  if (uv_fileno(&c->io.handle, &fd) != 0)
    return 0;
  char b;
  ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/* Pops the most recently used idle connection that is still alive,
 * closing the dead ones found on the way. */
static h3g_upconn *idle_take(h3g_upstream_pool *p) {
  h3g_upconn *c;
  while ((c = p->conns[CONN_IDLE].head) != NULL) {
    if (conn_alive(c))
      return c;
    h3g_debug("upstream %s: idle connection closed by upstream", p->name);
    conn_close(c);
  }
  return NULL;
}

/* Lets the pool's watcher read from c: any byte, EOF or error closes it. */
static int conn_watch(h3g_upconn *c) {
  if (c->reader == READER_WATCH)
    return 0;
  if (c->reader == READER_USER)
    uv_read_stop(&c->io.stream);
  c->reader = READER_NONE;
  int rv = c->tls != NULL
               ? uv_read_start(&c->io.stream, on_tls_alloc, on_tls_read)
               : uv_read_start(&c->io.stream, on_watch_alloc, on_watch_read);
  if (rv != 0)
    return H3G_ERR_IO;
  c->reader = READER_WATCH;
  return 0;
}

/* c, promised to a waiter, turned out dead: the waiter keeps its place at
 * the head of the queue and is served again from what is left. */
static void conn_lost_handoff(h3g_upconn *c) {
  h3g_upstream_pool *p = c->pool;
  h3g_upstream_waiter *w = c->waiter;
  int lost = 0;
  if (w != NULL) {
    conn_detach_waiter(c);
    lost = queue_push(p, w, 1) != 0;
  }
  conn_close(c);
  pool_serve(p);
  /* Only when no group record could be had for it (out of memory). */
  if (lost)
    w->ev->on_fail(w->ctx, H3G_ERR_NOMEM);
}

/* c (watched) is promised to w; on_ready comes from c's timer. */
static void conn_handoff(h3g_upconn *c, h3g_upstream_waiter *w) {
  assert(c->reader == READER_WATCH);
  conn_set_state(c, CONN_HANDOFF);
  c->waiter = w;
  w->queued = WAIT_HANDOFF;
  w->conn = c;
  uv_timer_start(&c->timer, on_conn_timer, 0, 0);
}

/* c is free and healthy: give it to the first waiter, or keep it idle. */
static void conn_offer(h3g_upconn *c) {
  h3g_upstream_pool *p = c->pool;
  uv_timer_stop(&c->timer);
  c->read_timeout_ms = 0;
  c->pending_err = 0;
  if (c->addr_gen != p->addr_gen) {
    h3g_debug("upstream %s: closing a connection to the previous address",
              p->name);
    conn_close(c);
    pool_serve(p);
    return;
  }
  if (conn_watch(c) != 0) {
    conn_close(c);
    pool_serve(p);
    return;
  }
  if (h3g_waitq_len(&p->queue) > 0) {
    conn_handoff(c, queue_pop(p));
    return;
  }
  conn_set_state(c, CONN_IDLE);
  if (p->cfg.idle_timeout_ms > 0)
    uv_timer_start(&c->timer, on_conn_timer, p->cfg.idle_timeout_ms, 0);
}

/* Makes c w's connection and tells w. Nothing touches c after on_ready:
 * the user may release it from inside. */
static void conn_give(h3g_upconn *c, h3g_upstream_waiter *w) {
  h3g_upstream_pool *p = c->pool;
  int reused = c->carried;
  if (c->reader == READER_WATCH)
    uv_read_stop(&c->io.stream);
  c->reader = READER_NONE;
  uv_timer_stop(&c->timer);
  conn_set_state(c, CONN_BUSY);
  c->ev = w->ev;
  c->ctx = w->ctx;
  c->carried = 1;
  c->read_timeout_ms = 0;
  c->pending_err = 0;
  c->answered = 0;
  if (reused) {
    p->stats.reused++;
    H3G_INC(upstream_reuses);
  }
  w->ev->on_ready(w->ctx, c, reused);
}

void h3g_upconn_rebind(h3g_upconn *c, const h3g_upstream_events *ev,
                       void *ctx) {
  c->ev = ev;
  c->ctx = ctx;
}

static int map_connect_error(int uverr) {
  switch (uverr) {
  case UV_ECONNREFUSED:
  case UV_ECONNRESET:
  case UV_ECONNABORTED:
  case UV_EHOSTUNREACH:
  case UV_ENETUNREACH:
  case UV_EHOSTDOWN:
  case UV_ENETDOWN:
  case UV_EADDRNOTAVAIL:
  /* Unix sockets: no socket file, or one nobody may reach; EAGAIN is a
   * full listen backlog (a Unix-socket connect does not wait for room). */
  case UV_ENOENT:
  case UV_ENOTDIR:
  case UV_EACCES:
  case UV_EPERM:
  case UV_EAGAIN: return H3G_ERR_REFUSED;
  case UV_ETIMEDOUT: return H3G_ERR_TIMEOUT;
  default: return H3G_ERR_IO;
  }
}

/* The connect for c failed (err): the waiter it was opened for fails; the
 * freed capacity goes to the next waiter, which gets its own attempt. */
static void conn_connect_failed(h3g_upconn *c, int err) {
  h3g_upstream_pool *p = c->pool;
  h3g_upstream_waiter *w = c->waiter;
  p->stats.failed++;
  H3G_INC(upstream_connect_failures);
  if (err == H3G_ERR_TIMEOUT)
    H3G_INC(upstream_timeouts);
  if (err == H3G_ERR_TLS && c->tls != NULL) {
    const char *why = h3g_upstream_tls_error(c->tls);
    h3g_error("upstream %s: TLS handshake failed: %s", p->name,
              why[0] != '\0' ? why : "the server closed the connection");
  } else if (err == H3G_ERR_TLS) {
    h3g_error("upstream %s: cannot start a TLS session for %s", p->name,
              p->sni);
  } else {
    h3g_warn("upstream %s: connect failed: %s", p->name, h3g_strerror(err));
  }
  conn_detach_waiter(c);
  conn_close(c);
  pool_serve(p);
  /* A local failure (H3G_ERR_IO: out of descriptors...) says nothing of
   * the server; a failed handshake does. */
  if (err == H3G_ERR_REFUSED || err == H3G_ERR_TIMEOUT || err == H3G_ERR_TLS)
    health(p, 0);
  if (w != NULL)
    w->ev->on_fail(w->ctx, err);
}

static h3g_upconn *conn_alloc(h3g_upstream_pool *p) {
  h3g_upconn *c = malloc(sizeof(*c));
  if (c != NULL) {
    *c = (h3g_upconn){.pool = p, .state = CONN_CONNECTING};
    H3G_INC(upstream_conns_active);
  }
  return c;
}

/* Opens c, from conn_alloc(), for w (counted against size at once).
 * Connect errors come later, from callbacks. */
static void conn_start(h3g_upconn *c, h3g_upstream_waiter *w) {
  h3g_upstream_pool *p = c->pool;
  c->waiter = w;
  /* None of the init calls makes a system call (the socket is created by
   * connect), so they cannot fail on Unix. */
  if (p->unix_path != NULL)
    uv_pipe_init(p->loop, &c->io.pipe, 0);
  else
    uv_tcp_init(p->loop, &c->io.tcp);
  uv_timer_init(p->loop, &c->timer);
  c->io.handle.data = c;
  c->timer.data = c;
  c->nhandles = 2;
  c->addr_gen = p->addr_gen;
  c->start_ns = h3g_now_ns();
  list_push_back(&p->conns[CONN_CONNECTING], c);
  w->queued = WAIT_CONNECTING;
  w->conn = c;
  int rv = 0;
  if (p->unix_path != NULL) /* its errors, all of them, come to on_connect */
    uv_pipe_connect(&c->connect_req, &c->io.pipe, p->unix_path, on_connect);
  else
    rv = uv_tcp_connect(&c->connect_req, &c->io.tcp,
                        h3g_resolver_sockaddr(p->resolver), on_connect);
  if (rv != 0) {
    c->connect_err = map_connect_error(rv);
    uv_timer_start(&c->timer, on_conn_timer, 0, 0);
  } else if (p->cfg.connect_timeout_ms > 0) {
    uv_timer_start(&c->timer, on_conn_timer, p->cfg.connect_timeout_ms, 0);
  }
  h3g_debug("upstream %s: connecting (%u open)", p->name, pool_total(p));
}

/*
 * Gives free capacity to queued waiters in the queue's order: idle
 * connections first, then new connections up to size. Bounded by the queue
 * length and the pool size. Never fails a waiter (release() calls it): a
 * waiter leaves the queue only once its connection exists.
 */
static void pool_serve(h3g_upstream_pool *p) {
  while (!p->closing && h3g_waitq_len(&p->queue) > 0) {
    h3g_upconn *c = idle_take(p);
    if (c != NULL) {
      conn_handoff(c, queue_pop(p));
      continue;
    }
    if (pool_total(p) >= p->cfg.size || (c = conn_alloc(p)) == NULL)
      break;
    conn_start(c, queue_pop(p));
  }
}

static void on_connect(uv_connect_t *req, int status) {
  h3g_upconn *c = H3G_CONTAINER_OF(req, h3g_upconn, connect_req);
  if (c->state == CONN_CLOSING)
    return;
  if (status != 0) {
    conn_connect_failed(c, map_connect_error(status));
    return;
  }
  h3g_upstream_pool *p = c->pool;
  if (p->unix_path == NULL) {
    /* Requests are written whole; do not let Nagle hold the last segment. */
    uv_tcp_nodelay(&c->io.tcp, 1);
    uv_tcp_keepalive(&c->io.tcp, 1, KEEPALIVE_DELAY_S);
  }
  if (p->cfg.tls != NULL) {
    conn_tls_start(c);
    return;
  }
  conn_established(c);
}

/* c is connected (and past its handshake): it serves its waiter, or the
 * queue or the idle list when its waiter cancelled meanwhile. */
static void conn_established(h3g_upconn *c) {
  h3g_upstream_pool *p = c->pool;
  uv_timer_stop(&c->timer);
  c->established = 1;
  p->stats.opened++;
  H3G_INC(upstream_connects);
  h3g_debug("upstream %s: connected", p->name);
  h3g_upstream_waiter *w = c->waiter;
  if (w != NULL) {
    w->connect_us = H3G_MAX((h3g_now_ns() - c->start_ns) / 1000u, 1u);
    conn_detach_waiter(c);
    conn_give(c, w);
  } else {
    /* Its waiter cancelled meanwhile. */
    conn_offer(c);
  }
}

/* One timer per connection; what it means depends on the state. */
static void on_conn_timer(uv_timer_t *t) {
  h3g_upconn *c = t->data;
  h3g_upstream_pool *p = c->pool;
  switch (c->state) {
  case CONN_CONNECTING:
    conn_connect_failed(c,
                        c->connect_err != 0 ? c->connect_err : H3G_ERR_TIMEOUT);
    return;
  case CONN_HANDOFF: {
    h3g_upstream_waiter *w = c->waiter;
    if (w == NULL) { /* cannot happen: cancel() re-offers the conn */
      conn_offer(c);
      return;
    }
    /* The watcher only learns of a FIN in the poll phase, which may not
     * have run since this connection was released; look once more. */
    if (!conn_alive(c)) {
      h3g_debug("upstream %s: connection closed by upstream before reuse",
                p->name);
      conn_lost_handoff(c);
      return;
    }
    conn_detach_waiter(c);
    conn_give(c, w);
    return;
  }
  case CONN_IDLE:
    h3g_debug("upstream %s: idle connection expired", p->name);
    conn_close(c);
    pool_serve(p);
    return;
  case CONN_BUSY:
  case CONN_TUNNEL: {
    const h3g_upstream_events *ev = c->ev;
    void *ctx = c->ctx;
    if (c->pending_err != 0) {
      int err = c->pending_err;
      c->pending_err = 0;
      conn_health(c, 0);
      ev->on_error(ctx, err);
      return;
    }
    if (c->tls_deliver) {
      c->tls_deliver = 0;
      if (c->reader == READER_USER && c->read_timeout_ms > 0)
        uv_timer_start(&c->timer, on_conn_timer, c->read_timeout_ms, 0);
      tls_deliver(c);
      return;
    }
    if (c->reader != READER_USER || c->read_timeout_ms == 0)
      return;
    uv_read_stop(&c->io.stream);
    c->reader = READER_NONE;
    c->dead = 1;
    H3G_INC(upstream_timeouts);
    h3g_debug("upstream %s: no byte for %llu ms", p->name,
              (unsigned long long)c->read_timeout_ms);
    conn_health(c, 0);
    ev->on_error(ctx, H3G_ERR_TIMEOUT);
    return;
  }
  case CONN_CLOSING:
  case CONN_NSTATES: break;
  }
}

static void on_watch_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  h3g_upconn *c = h->data;
  H3G_UNUSED(suggested);
  buf->base = c->pool->scratch;
  buf->len = sizeof(c->pool->scratch);
}

/* An unused connection (idle, or promised to a waiter) can no longer carry
 * a request: it is closed, and a waiter it was promised to is served
 * again. */
static void watch_lost(h3g_upconn *c, const char *why) {
  h3g_upstream_pool *p = c->pool;
  h3g_debug("upstream %s: unused connection %s", p->name, why);
  if (c->state == CONN_HANDOFF) {
    conn_lost_handoff(c);
    return;
  }
  conn_close(c);
  pool_serve(p);
}

/* Anything on a connection nobody uses means it cannot carry a request:
 * EOF or reset (the upstream's idle timer), or bytes we never asked for. */
static void on_watch_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  h3g_upconn *c = s->data;
  H3G_UNUSED(buf);
  if (nread == 0)
    return;
  watch_lost(c, nread > 0 ? "received unexpected bytes" : "closed by upstream");
}

/* ---- the user's reads and writes ----------------------------------------- */

static void on_user_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  h3g_upconn *c = h->data;
  uint8_t *b = NULL;
  size_t len = 0;
  H3G_UNUSED(suggested);
  if (c->ev != NULL)
    c->ev->on_alloc(c->ctx, &b, &len);
  buf->base = (char *)b;
  buf->len = b != NULL ? len : 0;
}

static void user_read_stop(h3g_upconn *c) {
  if (c->reader != READER_USER)
    return;
  uv_read_stop(&c->io.stream);
  c->reader = READER_NONE;
  c->tls_deliver = 0;
  if (c->pending_err == 0)
    uv_timer_stop(&c->timer);
}

/* A held connection's socket ended (nread is UV_EOF or an error): the
 * connection is dead and its user hears of it, plain or TLS alike. */
static void user_read_ended(h3g_upconn *c, ssize_t nread) {
  const h3g_upstream_events *ev = c->ev;
  void *ctx = c->ctx;
  user_read_stop(c);
  c->dead = 1;
  if (nread == UV_EOF) {
    /* Closed before the response began: the server dropped the request. */
    if (!c->answered)
      conn_health(c, 0);
    ev->on_eof(ctx);
  } else {
    h3g_debug("upstream %s: read: %s", c->pool->name, uv_strerror((int)nread));
    conn_health(c, 0);
    ev->on_error(ctx, H3G_ERR_IO);
  }
}

static void on_user_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  h3g_upconn *c = s->data;
  H3G_UNUSED(buf);
  if (nread == 0 || c->ev == NULL)
    return;
  if (nread == UV_ENOBUFS) {
    /* The user gave no room: a pause, not an error. */
    user_read_stop(c);
    return;
  }
  if (nread > 0) {
    if (c->read_timeout_ms > 0 && c->pending_err == 0)
      uv_timer_start(&c->timer, on_conn_timer, c->read_timeout_ms, 0);
    if (!c->answered) {
      c->answered = 1;
      health(c->pool, 1);
    }
    /* May release c; c is not touched afterwards. libuv's read loop then
     * goes on with whatever callbacks c has by then. */
    c->ev->on_read(c->ctx, (size_t)nread);
    return;
  }
  user_read_ended(c, nread);
}

static void on_write(uv_write_t *req, int status) {
  h3g_upconn *c = H3G_CONTAINER_OF(req, h3g_upconn, write_req);
  c->write_pending = 0;
  /* A write abandoned by release() completes (often UV_ECANCELED) after
   * its user left: release(1) is refused while a write is pending, so a
   * write always belongs to the current user or to nobody. */
  if (!held(c) || c->ev == NULL)
    return;
  if (status != 0) {
    c->dead = 1;
    h3g_debug("upstream %s: write: %s", c->pool->name, uv_strerror(status));
  }
  c->ev->on_written(c->ctx, status != 0 ? H3G_ERR_IO : 0);
}

/* ---- TLS transport ------------------------------------------------------- */

/* Sends the oldest pending ciphertext unless a flush is in flight. Returns
 * 0 or H3G_ERR_IO (uv_write refused: the connection is dead). */
static int tls_flush(h3g_upconn *c) {
  if (c->tls_flushing > 0 || c->state == CONN_CLOSING)
    return 0;
  const uint8_t *ptr;
  size_t len;
  h3g_upstream_tls_pending_output(c->tls, &ptr, &len);
  if (len == 0)
    return 0;
  uv_buf_t b = uv_buf_init((char *)ptr, (unsigned int)len);
  int rv = uv_write(&c->tls_write_req, &c->io.stream, &b, 1, on_tls_written);
  if (rv != 0) {
    h3g_debug("upstream %s: write: %s", c->pool->name, uv_strerror(rv));
    c->dead = 1;
    return H3G_ERR_IO;
  }
  c->tls_flushing = len;
  return 0;
}

/* Encrypts as much of the user's pending write as the session takes.
 * Returns 0 or H3G_ERR_TLS. */
static int tls_encrypt(h3g_upconn *c) {
  while (c->wi < c->wn) {
    int n = h3g_upstream_tls_write(c->tls, c->wiov + c->wi, c->wn - c->wi);
    if (n == H3G_ERR_AGAIN)
      return 0;
    if (n < 0) {
      h3g_warn("upstream %s: TLS: %s", c->pool->name,
               h3g_upstream_tls_error(c->tls));
      c->dead = 1;
      return H3G_ERR_TLS;
    }
    size_t k = (size_t)n;
    while (c->wi < c->wn && (k > 0 || c->wiov[c->wi].len == 0)) {
      size_t step = H3G_MIN(k, c->wiov[c->wi].len);
      c->wiov[c->wi].base += step;
      c->wiov[c->wi].len -= step;
      k -= step;
      if (c->wiov[c->wi].len == 0)
        c->wi++;
    }
  }
  return 0;
}

/* The user's write is over when all of it is encrypted and sent. */
static int tls_write_done(const h3g_upconn *c) {
  return c->wi == c->wn && c->tls_flushing == 0 &&
         h3g_upstream_tls_output_len(c->tls) == 0;
}

static void on_tls_written(uv_write_t *req, int status) {
  h3g_upconn *c = H3G_CONTAINER_OF(req, h3g_upconn, tls_write_req);
  size_t sent = c->tls_flushing;
  c->tls_flushing = 0;
  if (c->state == CONN_CLOSING)
    return;
  int err = 0;
  if (status != 0) {
    h3g_debug("upstream %s: write: %s", c->pool->name, uv_strerror(status));
    c->dead = 1;
    err = H3G_ERR_IO;
  } else {
    h3g_upstream_tls_consume_output(c->tls, sent);
    if (held(c) && c->write_pending)
      err = tls_encrypt(c);
    if (err == 0)
      err = tls_flush(c);
  }
  switch (c->state) {
  case CONN_CONNECTING:
    if (err != 0)
      conn_connect_failed(c, err);
    return;
  case CONN_BUSY:
  case CONN_TUNNEL:
    if (!c->write_pending || c->ev == NULL || (err == 0 && !tls_write_done(c)))
      return;
    c->write_pending = 0;
    c->ev->on_written(c->ctx, err != 0 ? H3G_ERR_IO : 0);
    return;
  case CONN_IDLE:
  case CONN_HANDOFF:
    if (err != 0)
      watch_lost(c, "failed to send");
    return;
  case CONN_CLOSING:
  case CONN_NSTATES: break;
  }
}

/* Drives the handshake of c (CONNECTING) with what arrived so far. */
static void conn_tls_handshake(h3g_upconn *c) {
  int rc = h3g_upstream_tls_handshake(c->tls);
  if (tls_flush(c) != 0) {
    conn_connect_failed(c, H3G_ERR_IO);
    return;
  }
  if (rc == H3G_ERR_AGAIN)
    return;
  if (rc != 0) {
    conn_connect_failed(c, H3G_ERR_TLS);
    return;
  }
  uv_read_stop(&c->io.stream);
  c->reader = READER_NONE;
  h3g_debug("upstream %s: %s%s", c->pool->name,
            h3g_upstream_tls_version(c->tls),
            h3g_upstream_tls_resumed(c->tls) ? ", resumed" : "");
  if (h3g_upstream_tls_resumed(c->tls))
    c->pool->stats.tls_resumed++;
  conn_established(c);
}

/* c's TCP connect succeeded: starts its handshake, under the connect
 * timer still running. */
static void conn_tls_start(h3g_upconn *c) {
  h3g_upstream_pool *p = c->pool;
  int rv = h3g_upstream_tls_new(&c->tls, p->cfg.tls, p->sni);
  if (rv != 0) {
    conn_connect_failed(c, rv == H3G_ERR_NOMEM ? rv : H3G_ERR_TLS);
    return;
  }
  if (uv_read_start(&c->io.stream, on_tls_alloc, on_tls_read) != 0) {
    conn_connect_failed(c, H3G_ERR_IO);
    return;
  }
  c->reader = READER_HANDSHAKE;
  conn_tls_handshake(c);
}

/* Reads at most what the session's input buffer takes; none (UV_ENOBUFS)
 * when it is full, which only a user who stopped taking plaintext
 * leaves it. */
static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  h3g_upconn *c = h->data;
  H3G_UNUSED(suggested);
  buf->base = (char *)c->pool->tls_rbuf;
  buf->len = H3G_MIN(h3g_upstream_tls_input_room(c->tls), TLS_READ_CHUNK);
}

/* Decrypts what arrived into the user's buffers while the user reads,
 * and tells the user of close_notify or a TLS failure. Nothing touches c
 * once it is no longer the user's (any callback may release it; its memory
 * stays until its handles are closed). */
static void tls_deliver(h3g_upconn *c) {
  while (held(c) && c->reader == READER_USER) {
    const h3g_upstream_events *ev = c->ev;
    void *ctx = c->ctx;
    uint8_t *b = NULL;
    size_t len = 0;
    ev->on_alloc(ctx, &b, &len);
    if (b == NULL || len == 0) {
      user_read_stop(c); /* a pause: read_start() resumes */
      return;
    }
    int r = h3g_upstream_tls_read(c->tls, b, len);
    if (h3g_upstream_tls_output_len(c->tls) > 0 && tls_flush(c) != 0)
      r = H3G_ERR_IO;
    if (r > 0) {
      if (!c->answered) {
        c->answered = 1;
        health(c->pool, 1);
      }
      ev->on_read(ctx, (size_t)r);
      continue;
    }
    if (r == 0)
      return;
    user_read_stop(c);
    c->dead = 1;
    if (r == H3G_ERR_CLOSED) {
      /* Closed before the response began: the server dropped the request. */
      if (!c->answered)
        conn_health(c, 0);
      ev->on_eof(ctx);
      return;
    }
    if (r == H3G_ERR_TLS)
      h3g_warn("upstream %s: TLS: %s", c->pool->name,
               h3g_upstream_tls_error(c->tls));
    conn_health(c, 0);
    ev->on_error(ctx, r == H3G_ERR_TLS ? H3G_ERR_TLS : H3G_ERR_IO);
    return;
  }
}

/* An idle or promised connection read something: a post-handshake
 * message (a session ticket) keeps it; anything else drops it. */
static void tls_watch(h3g_upconn *c) {
  uint8_t b[64];
  int r = h3g_upstream_tls_read(c->tls, b, sizeof(b));
  if (r == 0 && h3g_upstream_tls_output_len(c->tls) > 0 && tls_flush(c) != 0)
    r = H3G_ERR_IO;
  if (r == 0)
    return;
  watch_lost(c, r > 0                 ? "received unexpected bytes"
                : r == H3G_ERR_CLOSED ? "closed by upstream (close_notify)"
                                      : "failed (TLS)");
}

static void on_tls_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  h3g_upconn *c = s->data;
  H3G_UNUSED(buf);
  if (nread == 0 || c->state == CONN_CLOSING)
    return;
  if (nread > 0 &&
      h3g_upstream_tls_feed(c->tls, c->pool->tls_rbuf, (size_t)nread) != 0)
    nread = UV_ENOBUFS; /* cannot happen: alloc gave at most the room */
  switch (c->reader) {
  case READER_HANDSHAKE:
    if (nread < 0) {
      h3g_debug("upstream %s: %s during the TLS handshake", c->pool->name,
                nread == UV_EOF ? "closed" : uv_strerror((int)nread));
      conn_connect_failed(c, nread == UV_EOF ? H3G_ERR_TLS : H3G_ERR_REFUSED);
      return;
    }
    conn_tls_handshake(c);
    return;
  case READER_WATCH:
    if (nread < 0)
      watch_lost(c, "closed by upstream");
    else
      tls_watch(c);
    return;
  case READER_USER: break;
  case READER_NONE: return;
  }
  if (nread == UV_ENOBUFS) {
    user_read_stop(c);
    return;
  }
  if (nread > 0 && c->read_timeout_ms > 0 && c->pending_err == 0)
    uv_timer_start(&c->timer, on_conn_timer, c->read_timeout_ms, 0);
  tls_deliver(c);
  if (nread > 0 || !held(c) || c->reader != READER_USER)
    return;
  /* The socket ended without close_notify; what it carried is delivered. */
  user_read_ended(c, nread);
}

/* The user's write on a TLS connection (op_write's contract). */
static int tls_user_write(h3g_upconn *c, const h3g_iovec *iov, size_t n) {
  memcpy(c->wiov, iov, n * sizeof(*iov));
  c->wn = n;
  c->wi = 0;
  c->write_pending = 1;
  if (tls_encrypt(c) != 0 || tls_flush(c) != 0) {
    c->write_pending = 0;
    c->wn = c->wi = 0;
    return H3G_ERR_IO;
  }
  if (tls_write_done(c)) {
    /* Nothing to send (an empty write): let uv_write report it. */
    uv_buf_t none = uv_buf_init(NULL, 0);
    if (uv_write(&c->write_req, &c->io.stream, &none, 1, on_write) != 0) {
      c->write_pending = 0;
      return H3G_ERR_IO;
    }
  }
  return 0;
}

/* ---- operations ---------------------------------------------------------- */

static int op_acquire(void *pool, h3g_upstream_waiter *w) {
  h3g_upstream_pool *p = pool;
  if (p->closing)
    return H3G_ERR_CLOSED;
  if (w == NULL || w->ev == NULL || w->queued != WAIT_NONE)
    return H3G_ERR_INVAL;
  w->since_ns = uv_now(p->loop) * 1000000u;
  w->conn = NULL;
  w->connect_us = 0;
  if (h3g_waitq_len(&p->queue) == 0) {
    h3g_upconn *c = idle_take(p);
    if (c != NULL) {
      conn_handoff(c, w);
      return 0;
    }
    if (pool_total(p) < p->cfg.size) {
      if ((c = conn_alloc(p)) == NULL)
        return H3G_ERR_NOMEM;
      conn_start(c, w);
      return 0;
    }
  }
  if (h3g_waitq_len(&p->queue) >= p->cfg.queue_size ||
      queue_push(p, w, 0) != 0) {
    H3G_INC(upstream_queue_rejected);
    h3g_debug("upstream %s: wait queue full (%zu)", p->name,
              h3g_waitq_len(&p->queue));
    return H3G_ERR_NOMEM;
  }
  return 0;
}

static void op_cancel(void *pool, h3g_upstream_waiter *w) {
  h3g_upstream_pool *p = pool;
  h3g_upconn *c = w->conn;
  switch (w->queued) {
  case WAIT_QUEUED: queue_remove(p, w); break;
  case WAIT_CONNECTING:
    /* The connect goes on: a connection will be wanted soon enough, and
     * it serves the queue or the idle list when it is up. */
    conn_detach_waiter(c);
    break;
  case WAIT_HANDOFF:
    conn_detach_waiter(c);
    conn_offer(c);
    break;
  default: break;
  }
}

static void op_set_urgency(void *pool, h3g_upstream_waiter *w,
                           uint8_t urgency) {
  h3g_upstream_pool *p = pool;
  w->urgency = urgency;
  if (w->queued == WAIT_QUEUED)
    h3g_waitq_set_urgency(&p->queue, &w->qe, urgency);
}

static int op_write(h3g_upconn *c, const h3g_iovec *iov, size_t n) {
  if (c == NULL || !held(c) || n == 0 || n > MAX_IOV ||
      c->write_pending)
    return H3G_ERR_INVAL;
  if (c->tls != NULL)
    return tls_user_write(c, iov, n);
  uv_buf_t bufs[MAX_IOV];
  for (size_t i = 0; i < n; i++) {
    bufs[i].base = (char *)iov[i].base;
    bufs[i].len = iov[i].len;
  }
  /* libuv copies bufs into the request (the array need not outlive this
   * call); beyond 4 elements that copy is its own small allocation. */
  int rv =
      uv_write(&c->write_req, &c->io.stream, bufs, (unsigned int)n, on_write);
  if (rv != 0) {
    h3g_debug("upstream %s: write: %s", c->pool->name, uv_strerror(rv));
    c->dead = 1;
    return H3G_ERR_IO;
  }
  c->write_pending = 1;
  return 0;
}

static void op_read_start(h3g_upconn *c) {
  if (c == NULL || !held(c) || c->dead || c->reader == READER_USER)
    return;
  int rv = c->tls != NULL
               ? uv_read_start(&c->io.stream, on_tls_alloc, on_tls_read)
               : uv_read_start(&c->io.stream, on_user_alloc, on_user_read);
  if (rv != 0) {
    /* Reported from the timer, never from inside this call. */
    h3g_debug("upstream %s: read start: %s", c->pool->name, uv_strerror(rv));
    c->dead = 1;
    c->pending_err = H3G_ERR_IO;
    uv_timer_start(&c->timer, on_conn_timer, 0, 0);
    return;
  }
  c->reader = READER_USER;
  if (c->tls != NULL && h3g_upstream_tls_has_input(c->tls)) {
    /* Plaintext already here is delivered from the timer. */
    c->tls_deliver = 1;
    uv_timer_start(&c->timer, on_conn_timer, 0, 0);
  } else if (c->read_timeout_ms > 0) {
    uv_timer_start(&c->timer, on_conn_timer, c->read_timeout_ms, 0);
  }
}

static void op_read_stop(h3g_upconn *c) {
  if (c == NULL || !held(c))
    return;
  user_read_stop(c);
}

static void op_set_read_timeout(h3g_upconn *c, uint64_t ms) {
  if (c == NULL || !held(c))
    return;
  c->read_timeout_ms = ms;
  if (c->reader != READER_USER || c->pending_err != 0 || c->tls_deliver)
    return;
  if (ms > 0)
    uv_timer_start(&c->timer, on_conn_timer, ms, 0);
  else
    uv_timer_stop(&c->timer);
}

static void op_release(h3g_upconn *c, int reusable) {
  if (c == NULL)
    return;
  if (!held(c)) {
    h3g_warn("upstream: release of a connection that is not held");
    return;
  }
  int tunnel = c->state == CONN_TUNNEL;
  if (tunnel)
    reusable = 0; /* whatever the tunnel carried is not HTTP */
  h3g_upstream_pool *p = c->pool;
  c->ev = NULL;
  c->ctx = NULL;
  user_read_stop(c);
  uv_timer_stop(&c->timer);
  c->pending_err = 0;
  if (reusable && c->write_pending) {
    h3g_warn("upstream %s: connection released as reusable while a write "
             "is pending; closing it",
             p->name);
    reusable = 0;
  }
  if (reusable && c->tls != NULL && h3g_upstream_tls_has_input(c->tls)) {
    h3g_debug("upstream %s: connection released with unread bytes; "
              "closing it",
              p->name);
    reusable = 0;
  }
  if (reusable && c->dead) {
    h3g_debug("upstream %s: connection released as reusable after an "
              "error; closing it",
              p->name);
    reusable = 0;
  }
  if (!reusable && !tunnel)
    H3G_INC(upstream_conns_poisoned);
  if (!reusable || p->closing) {
    conn_close(c);
    pool_serve(p);
    return;
  }
  conn_offer(c);
}

static void op_upgrade(h3g_upconn *c) {
  if (c == NULL || c->state != CONN_BUSY)
    return;
  conn_set_state(c, CONN_TUNNEL);
  /* Its slot is free: a waiter may have it now (answered from the loop). */
  pool_serve(c->pool);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  h3g_upconn *c = H3G_CONTAINER_OF(req, h3g_upconn, shutdown_req);
  if (status != 0 && status != UV_ECANCELED)
    h3g_debug("upstream %s: shutdown: %s", c->pool->name, uv_strerror(status));
}

static int op_shutdown_write(h3g_upconn *c) {
  if (c == NULL || !held(c) || c->write_pending)
    return H3G_ERR_INVAL;
  if (c->shut)
    return 0;
  if (c->tls != NULL && (h3g_upstream_tls_close_notify(c->tls) != 0 ||
                         tls_flush(c) != 0))
    return H3G_ERR_IO;
  /* libuv sends the FIN once the writes queued before it (the
   * close_notify) have gone. */
  int rv = uv_shutdown(&c->shutdown_req, &c->io.stream, on_shutdown);
  if (rv != 0) {
    h3g_debug("upstream %s: shutdown: %s", c->pool->name, uv_strerror(rv));
    c->dead = 1;
    return H3G_ERR_IO;
  }
  c->shut = 1;
  return 0;
}

static void op_reset(h3g_upconn *c) {
  if (c == NULL || !held(c))
    return;
  c->reset_on_close = 1;
  op_release(c, 0);
}

static const char *op_name(void *pool) {
  h3g_upstream_pool *p = pool;
  return p->name;
}

const h3g_upstream_ops h3g_upstream_pool_ops = {
    .acquire = op_acquire,
    .cancel = op_cancel,
    .set_urgency = op_set_urgency,
    .write = op_write,
    .read_start = op_read_start,
    .read_stop = op_read_stop,
    .set_read_timeout = op_set_read_timeout,
    .release = op_release,
    .name = op_name,
    .upgrade = op_upgrade,
    .shutdown_write = op_shutdown_write,
    .reset = op_reset,
};

/* The connection operations by name, for tables layered on pools. */
int h3g_upconn_write(h3g_upconn *c, const h3g_iovec *iov, size_t n) {
  return op_write(c, iov, n);
}
void h3g_upconn_read_start(h3g_upconn *c) { op_read_start(c); }
void h3g_upconn_read_stop(h3g_upconn *c) { op_read_stop(c); }
void h3g_upconn_set_read_timeout(h3g_upconn *c, uint64_t ms) {
  op_set_read_timeout(c, ms);
}
void h3g_upconn_release(h3g_upconn *c, int reusable) {
  op_release(c, reusable);
}
void h3g_upconn_upgrade(h3g_upconn *c) { op_upgrade(c); }
int h3g_upconn_shutdown_write(h3g_upconn *c) { return op_shutdown_write(c); }
void h3g_upconn_reset(h3g_upconn *c) { op_reset(c); }

/* ---- the address --------------------------------------------------------- */

/* The resolver's address changed (resolver.h): new connects go there from
 * now on; idle connections to the previous address close now, busy ones
 * when released (conn_offer). */
static void on_address_change(void *arg) {
  h3g_upstream_pool *p = arg;
  p->addr_gen++;
  snprintf(p->address, sizeof(p->address), "%s",
           h3g_resolver_address(p->resolver));
  h3g_upconn *c = p->conns[CONN_IDLE].head;
  while (c != NULL) {
    h3g_upconn *next = c->next;
    if (c->addr_gen != p->addr_gen)
      conn_close(c);
    c = next;
  }
  pool_serve(p);
}

/* The counters of the resolver outlive it in p->stats. */
static void on_resolver_close(void *arg) {
  h3g_upstream_pool *p = arg;
  h3g_resolver_stats rs;
  h3g_resolver_get_stats(p->resolver, &rs);
  p->stats.resolutions = rs.resolutions;
  p->stats.resolve_failures = rs.failures;
  p->resolver = NULL;
  p->resolver_closed = 1;
  pool_maybe_finish(p);
}

/* ---- the pool ------------------------------------------------------------ */

static char *dup_str(const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

int h3g_upstream_pool_new(h3g_upstream_pool **pp, void *loop,
                          const h3g_upstream_pool_config *cfg) {
  *pp = NULL;
  if (loop == NULL || cfg == NULL || cfg->size == 0)
    return H3G_ERR_INVAL;
  int unix_socket = cfg->unix_path != NULL;
  if (unix_socket ? cfg->unix_path[0] == '\0' ||
                        strlen(cfg->unix_path) >=
                            sizeof(((struct sockaddr_un *)0)->sun_path)
                  : cfg->host == NULL || cfg->host[0] == '\0')
    return H3G_ERR_INVAL;
  h3g_upstream_pool *p = malloc(sizeof(*p));
  if (p == NULL)
    return H3G_ERR_NOMEM;
  *p = (h3g_upstream_pool){.loop = loop, .cfg = *cfg};
  h3g_waitq_init(&p->queue);
  int rv = 0;
  if (unix_socket) {
    p->unix_path = dup_str(cfg->unix_path);
    if (p->unix_path == NULL)
      rv = H3G_ERR_NOMEM;
  } else {
    p->host = dup_str(cfg->host);
    if (p->host == NULL)
      rv = H3G_ERR_NOMEM;
  }
  if (rv == 0 && cfg->name != NULL) {
    p->name = dup_str(cfg->name);
  } else if (rv == 0) {
    const char *what = unix_socket ? cfg->unix_path : cfg->host;
    size_t len = strlen(what) + sizeof("unix:[]:65535");
    p->name = malloc(len);
    if (p->name != NULL && unix_socket)
      snprintf(p->name, len, "unix:%s", what);
    else if (p->name != NULL)
      snprintf(p->name, len, strchr(what, ':') != NULL ? "[%s]:%u" : "%s:%u",
               what, (unsigned)cfg->port);
  }
  if (rv == 0 && p->name == NULL)
    rv = H3G_ERR_NOMEM;
  if (rv == 0 && cfg->tls != NULL) {
    const char *sni = cfg->sni != NULL ? cfg->sni : cfg->host;
    if (sni == NULL || sni[0] == '\0') {
      rv = H3G_ERR_INVAL; /* a Unix socket names no server: give sni */
    } else {
      p->sni = dup_str(sni);
      p->tls_rbuf = malloc(TLS_READ_CHUNK);
      if (p->sni == NULL || p->tls_rbuf == NULL)
        rv = H3G_ERR_NOMEM;
    }
  }
  /* Last: once it exists, the resolver is closed, never just freed. */
  if (rv == 0 && !unix_socket) {
    h3g_resolver_config rc = {
        .host = p->host,
        .port = cfg->port,
        .name = p->name,
        .interval_ms = cfg->resolve_interval_ms,
        .on_change = on_address_change,
        .arg = p,
    };
    rv = h3g_resolver_new(&p->resolver, loop, &rc);
  }
  if (rv != 0) {
    pool_free(p);
    return rv;
  }
  p->cfg.host = p->host;
  p->cfg.unix_path = p->unix_path;
  p->cfg.name = p->name;
  p->cfg.sni = p->sni;
  if (unix_socket) {
    snprintf(p->address, sizeof(p->address), "unix:%s", p->unix_path);
    p->resolver_closed = 1;
  } else {
    snprintf(p->address, sizeof(p->address), "%s",
             h3g_resolver_address(p->resolver));
  }
  uv_timer_init(p->loop, &p->qtimer);
  p->qtimer.data = p;
  *pp = p;
  return 0;
}

static void on_qtimer_close(uv_handle_t *h) {
  h3g_upstream_pool *p = h->data;
  p->qtimer_closed = 1;
  pool_maybe_finish(p);
}

/* Fails the waiter of every connection in list s and closes them. */
static void close_pending_conns(h3g_upstream_pool *p, conn_state s) {
  h3g_upconn *c;
  while ((c = p->conns[s].head) != NULL) {
    h3g_upstream_waiter *w = c->waiter;
    conn_detach_waiter(c);
    conn_close(c);
    if (w != NULL)
      w->ev->on_fail(w->ctx, H3G_ERR_CLOSED);
  }
}

void h3g_upstream_pool_close(h3g_upstream_pool *p, void (*cb)(void *arg),
                             void *arg) {
  if (p == NULL)
    return;
  if (p->closing) {
    h3g_warn("upstream %s: pool closed twice", p->name);
    return;
  }
  h3g_debug("upstream %s: closing pool (%u busy)", p->name,
            p->conns[CONN_BUSY].n);
  p->closing = 1;
  p->close_cb = cb;
  p->close_arg = arg;
  uv_timer_stop(&p->qtimer);
  /* Callbacks may release their connections or cancel other waiters: every
   * loop re-reads its list head. */
  h3g_upstream_waiter *w;
  while ((w = queue_pop(p)) != NULL)
    w->ev->on_fail(w->ctx, H3G_ERR_CLOSED);
  close_pending_conns(p, CONN_CONNECTING);
  close_pending_conns(p, CONN_HANDOFF);
  h3g_upconn *c;
  while ((c = p->conns[CONN_IDLE].head) != NULL)
    conn_close(c);
  /* A lookup in flight may hold the resolver after every handle here is
   * closed: pool_maybe_finish() waits for its close callback. */
  h3g_resolver_close(p->resolver, on_resolver_close, p);
  /* The pool is freed from a close callback, never from inside this call. */
  uv_close((uv_handle_t *)&p->qtimer, on_qtimer_close);
}

void h3g_upstream_pool_get_stats(const h3g_upstream_pool *p,
                                 h3g_upstream_pool_stats *out) {
  *out = p->stats;
  out->busy = p->conns[CONN_BUSY].n + p->conns[CONN_HANDOFF].n;
  out->idle = p->conns[CONN_IDLE].n;
  out->connecting = p->conns[CONN_CONNECTING].n;
  out->waiting = (uint32_t)h3g_waitq_len(&p->queue);
  if (p->resolver != NULL) {
    h3g_resolver_stats rs;
    h3g_resolver_get_stats(p->resolver, &rs);
    out->resolutions = rs.resolutions;
    out->resolve_failures = rs.failures;
    out->resolving = rs.resolving;
  }
}

const char *h3g_upstream_pool_address(const h3g_upstream_pool *p) {
  return p->address;
}

void h3g_upstream_pool_set_resolve_hook(
    h3g_upstream_pool *p,
    int (*hook)(void *arg, int status, struct sockaddr_storage *addr),
    void *arg) {
  if (p->resolver != NULL)
    h3g_resolver_set_hook(p->resolver, hook, arg);
}
