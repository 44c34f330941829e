/*
 * Keep-alive connections to one HTTP/1.1 upstream server (libuv), over TCP
 * to host:port or over a Unix-domain stream socket.
 *
 * HTTP/1.1 does not multiplex, so each exchange holds one connection. The
 * pool keeps at most `size` connections (busy + idle + connecting); callers
 * beyond that wait in a FIFO queue of at most `queue_size` entries.
 * An idle connection is watched for reads: if the upstream closes it or sends
 * anything, it is dropped before reuse. Idle connections expire after
 * idle_timeout_ms.
 *
 * Everything runs on the loop's thread; no function here may be called from
 * another thread. Answers to acquire() and every event come from libuv
 * callbacks (or, for on_fail(H3G_ERR_CLOSED), from inside
 * h3g_upstream_pool_close()). A callback may call any operation, including
 * release() of its own connection and acquire().
 *
 * The user of a connection (the stream bridge) sees it only through
 * h3g_upstream_ops and receives events through h3g_upstream_events, so the
 * bridge never calls libuv and unit tests can replace both.
 */
#ifndef H3G_UPSTREAM_POOL_H
#define H3G_UPSTREAM_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "wait_queue.h"

typedef struct h3g_upconn h3g_upconn;
typedef struct h3g_upstream_pool h3g_upstream_pool;


/*
 * Events a pool delivers to the user of a connection (or of a wait). ctx is
 * the pointer given with the waiter. After release() or cancel() no event is
 * delivered for that user any more.
 */
typedef struct h3g_upstream_events {
  /* acquire() succeeded: conn is yours until release(). reused is 1 for a
   * connection that already carried a request. */
  void (*on_ready)(void *ctx, h3g_upconn *conn, int reused);
  /* acquire() failed: H3G_ERR_REFUSED (connect refused, unreachable, reset
   * during the connect; for a Unix socket also a missing socket file or a
   * full listen backlog), H3G_ERR_TIMEOUT (the connect took longer than the
   * connect timeout), H3G_ERR_AGAIN (waited in the queue longer than the
   * connect timeout without getting a connection: the server is busy, not
   * known to be broken), H3G_ERR_TLS (the TLS handshake failed:
   * certificate, name, alert, or the server closed during it; logged with
   * the reason; the handshake counts in the connect timeout), H3G_ERR_IO (a
   * local failure, e.g. out of file descriptors), H3G_ERR_CLOSED (pool
   * shutting down). */
  void (*on_fail)(void *ctx, int err);
  /* Reading is started and bytes may arrive: give a buffer. Setting *len
   * to 0 means "no room": the pool stops reading (as read_stop, so the read
   * timeout pauses too) without any error; read_start() resumes. Must not
   * call any operation of the pool. */
  void (*on_alloc)(void *ctx, uint8_t **buf, size_t *len);
  /* nread bytes were placed at the start of the last buffer given. */
  void (*on_read)(void *ctx, size_t nread);
  /* The upstream closed its sending side (with TLS: close_notify, or the
   * socket's end). Reading stops; no more on_read. */
  void (*on_eof)(void *ctx);
  /* The connection failed: H3G_ERR_IO (read error such as a reset),
   * H3G_ERR_TIMEOUT (no byte received within the read timeout while reading
   * was started), H3G_ERR_TLS (a record that does not decrypt, or an alert,
   * on a TLS connection). Reading stops; the connection is dead: release()
   * it with reusable = 0. A failed write is reported by on_written only. */
  void (*on_error)(void *ctx, int err);
  /* The last write() finished; status 0 or H3G_ERR_IO (then the connection
   * is dead: release() it with reusable = 0). */
  void (*on_written)(void *ctx, int status);
} h3g_upstream_events;

/*
 * What a user embeds to wait for a connection. The user sets ev and ctx,
 * and group and urgency for the wait queue (zero the rest once, e.g. with a
 * designated initialiser); every other field is the pool's. The waiter must
 * stay valid while a wait is pending (from acquire() until on_ready, on_fail
 * or cancel()); it may be reused for another acquire() afterwards.
 */
typedef struct h3g_upstream_waiter {
  h3g_waitq_entry qe; /* wait queue links (pool's) */
  const h3g_upstream_events *ev;
  void *ctx;
  /* Identifies the client connection the request came on (requests of one
   * connection are ordered by urgency; connections take turns). NULL puts
   * the waiter in a group of its own. */
  const void *group;
  uint8_t urgency; /* RFC 9218: 0 most urgent .. 7; 3 by default */
  uint64_t since_ns;  /* loop time of acquire(), in ns */
  /* Set before on_ready: how long the connection handed over took to
   * open (connect, and the TLS handshake), in microseconds (at least 1),
   * when it was opened for this wait; 0 when it was kept alive or had been
   * opened for another. For the access log. */
  uint64_t connect_us;
  int queued;         /* non-zero while a wait is pending (pool's state) */
  h3g_upconn *conn;   /* connection being opened or handed over for it */
  /* Balancing by key (upstream_group.c): set by the user before acquire()
   * when its group hashes requests; has_hash 0 balances as round robin. */
  uint64_t hash;
  int has_hash;
  /* A group's, while it routes the wait (zero them with the rest): */
  const h3g_upstream_events *user_ev; /* the user's ev and ctx, while */
  void *user_ctx;                     /* ev/ctx are the group's */
  void *server;      /* the server last chosen for this request */
  uint64_t tried;    /* servers already tried (bit i: server i < 64) */
  uint32_t attempts; /* acquires made for this request */
} h3g_upstream_waiter;

/* The operations a connection user calls; upstream_pool provides
 * h3g_upstream_pool_ops, tests provide fakes. */
typedef struct h3g_upstream_ops {
  /*
   * Asks pool for a connection for w (ev and ctx must be set). The answer
   * comes later as on_ready or on_fail, never from inside this call.
   * Returns 0, or H3G_ERR_NOMEM when the wait queue is full or memory for a
   * new connection is lacking (the caller answers 503), H3G_ERR_CLOSED when
   * the pool is shutting down, or H3G_ERR_INVAL when w is already waiting.
   * No event follows a non-zero return.
   */
  int (*acquire)(void *pool, h3g_upstream_waiter *w);
  /* (A group may also return H3G_ERR_UNAVAILABLE: every server is out.) */
  /* Withdraws a pending acquire (no event follows). No-op if not pending. */
  void (*cancel)(void *pool, h3g_upstream_waiter *w);
  /* Sets w->urgency; a waiter still queued moves to its new place (a
   * client reprioritised the request). */
  void (*set_urgency)(void *pool, h3g_upstream_waiter *w, uint8_t urgency);
  /*
   * Writes all of iov (1 to 8 elements). The bytes must stay valid until
   * on_written (or release()). One write at a time. Returns 0 (on_written
   * follows), H3G_ERR_IO (no on_written follows), or H3G_ERR_INVAL for a
   * caller bug: n out of range, a write already pending, c not held.
   */
  int (*write)(h3g_upconn *c, const h3g_iovec *iov, size_t n);
  /* Starts or stops delivering on_alloc/on_read/on_eof/on_error (read side).
   * Both are idempotent; read_start() after on_eof or on_error does
   * nothing. */
  void (*read_start)(h3g_upconn *c);
  void (*read_stop)(h3g_upconn *c);
  /* Sets the read timeout (ms, 0 = none): on_error(H3G_ERR_TIMEOUT) when no
   * byte arrives for that long while reading is started. The clock restarts
   * at this call, at read_start() and at every read; it is paused while
   * reading is stopped. A new connection starts with none. */
  void (*set_read_timeout)(h3g_upconn *c, uint64_t ms);
  /*
   * Ends the user's hold on c. reusable = 1 returns it to the pool (handed
   * to the first waiter, or kept idle; only when both messages ended
   * cleanly); 0 closes it. No event is delivered to the user afterwards,
   * not even the completion of a pending write, which is abandoned.
   * reusable = 1 while a write is pending, or after on_eof/on_error, is
   * treated as 0. The pool counts releases with 0 as poisoned.
   */
  void (*release)(h3g_upconn *c, int reusable);
  /* The pool's name (config name, or "host:port" / "unix:PATH"), for
   * logs. */
  const char *(*name)(void *pool);
  /* Optional (NULL: none). The server w was last sent to, for the access
   * log ("host:port", "unix:/path"...); NULL when none was chosen. */
  const char *(*server_name)(void *pool, const h3g_upstream_waiter *w);
  /* Optional. The exchange of w is over: status is what the client got (0:
   * none), first_byte_us how long the upstream took to its first response
   * byte after the request was sent (0: no byte came). For statistics. */
  void (*finish)(void *pool, const h3g_upstream_waiter *w, int status,
                 uint64_t first_byte_us);
  /* Optional. After acquire() returned H3G_ERR_UNAVAILABLE: whole seconds
   * until a server may serve again (Retry-After), 0 when unknown. */
  uint32_t (*retry_after)(void *pool);
  /*
   * Tunnels (WebSocket). Optional as a set: NULL upgrade means this
   * upstream cannot carry one. upgrade(): the exchange on c ended with a
   * 101 and c now carries a tunnel: it no longer counts against the pool's
   * size (a waiter may get the slot), sends no health signal, and is
   * closed when released, never reused. shutdown_write(): sends the end of
   * our side (TLS close_notify, then FIN) once the pending write is done;
   * reading goes on. Returns 0, H3G_ERR_INVAL (a write is pending, or c is
   * not held) or H3G_ERR_IO. reset(): as release(c, 0), but a TCP
   * connection ends with a reset (RST) rather than a FIN (not after
   * shutdown_write, nor on a Unix socket: those end plainly).
   */
  void (*upgrade)(h3g_upconn *c);
  int (*shutdown_write)(h3g_upconn *c);
  void (*reset)(h3g_upconn *c);
} h3g_upstream_ops;

extern const h3g_upstream_ops h3g_upstream_pool_ops;

typedef struct h3g_upstream_pool_config {
  const char *host;          /* name or address (TCP); see resolve_interval_ms */
  uint16_t port;
  /* Non-NULL: connect to this Unix-domain stream socket instead (host, port
   * and resolve_interval_ms are then unused). At most 107 bytes. */
  const char *unix_path;
  /* What the name op returns and logs show; NULL: "host:port" ("[v6]:port")
   * or "unix:PATH". Copied. */
  const char *name;
  uint32_t size;             /* max connections, >= 1 */
  uint32_t queue_size;       /* max waiters beyond size */
  uint64_t connect_timeout_ms; /* also the longest wait in the queue;
                                * 0 = none */
  uint64_t idle_timeout_ms;  /* idle keep-alive connections expire; 0 = never */
  /*
   * 0: host is resolved once, at creation. Otherwise host is resolved again
   * this often, asynchronously (the pool's resolver, resolver.h), unless it
   * is a literal address. When the first usable address changes, new
   * connects go to the new one, idle connections opened before the change
   * are closed, and busy ones are closed when released (they finish their
   * exchange); an info line tells. When a re-resolution fails, the old
   * address stays; a warning is logged once until one succeeds.
   */
  uint64_t resolve_interval_ms;
  /*
   * Passive health signal of this server (NULL: none), called with
   * health_arg:
   *   ok = 0: a connect failed with H3G_ERR_REFUSED, H3G_ERR_TIMEOUT or
   *           H3G_ERR_TLS (also when its waiter has cancelled meanwhile);
   *           a held connection failed (every on_error: read error such as
   *           a reset, read timeout, a TLS failure); a held connection got
   *           EOF (or close_notify) before any byte was read since it was
   *           handed to its current user.
   *   ok = 1: the first byte read on a held connection since it was handed
   *           to its current user (a response began); once per hand-over.
   * Not for a wait-queue timeout (H3G_ERR_AGAIN), a local connect failure
   * (H3G_ERR_IO), the pool closing, a failed write (the read side reports
   * a reset), or anything on an idle connection.
   * Called from libuv callbacks only, never from inside acquire(),
   * cancel(), release(), read_start() or h3g_upstream_pool_close(). When
   * the same event reaches a user (on_fail, on_error, on_eof or on_read),
   * on_health comes immediately before it. on_health must not call
   * h3g_upstream_pool_close() nor any h3g_upstream_pool_ops operation on
   * this pool; h3g_upstream_pool_get_stats() and _address() are fine.
   */
  void (*on_health)(void *arg, int ok);
  void *health_arg;
  /* TLS to the server: an h3g_upstream_tls_ctx * (upstream_tls.h), which
   * must outlive the pool; NULL: plain. A connection is handed to a user
   * only after its handshake, which counts against connect_timeout_ms; the
   * context's session cache resumes sessions across connections. */
  void *tls;
  /* The server name sent and verified; NULL: host (required with
   * unix_path). Copied. */
  const char *sni;
} h3g_upstream_pool_config;

/* Counters a pool keeps (for metrics and tests). */
typedef struct h3g_upstream_pool_stats {
  uint32_t busy;      /* held by users (or being handed to one) */
  uint32_t idle;      /* kept alive, waiting for reuse */
  uint32_t connecting;
  uint32_t waiting;   /* queued acquires */
  uint64_t opened;    /* connections established in total */
  uint64_t reused;    /* acquires served by a connection that had carried a
                       * request before (on_ready with reused = 1) */
  uint64_t closed;    /* established connections closed in total */
  uint64_t failed;    /* connect failures (refused, timeout, error, TLS) */
  uint64_t tls_resumed; /* TLS handshakes that resumed a session */
  uint64_t resolutions;      /* asynchronous re-resolutions completed */
  uint64_t resolve_failures; /* of which failed (the old address stayed) */
  uint32_t resolving;        /* 1 while a re-resolution is in flight */
} h3g_upstream_pool_stats;

/*
 * Creates a pool on loop (a uv_loop_t *, kept opaque here). For TCP,
 * creates the pool's resolver (resolver.h), which resolves host
 * synchronously, keeping the first address found (IPv4 or IPv6), and
 * re-resolves it if resolve_interval_ms asks for it. A Unix socket path is not checked here (a missing file is a refused
 * connect later). No connection is opened before the first acquire(). The
 * strings of cfg are copied. Returns 0, H3G_ERR_NOMEM, H3G_ERR_INVAL (no
 * host and no unix_path, an empty or too long unix_path, size 0), or
 * H3G_ERR_NOTFOUND when the host does not resolve.
 */
int h3g_upstream_pool_new(h3g_upstream_pool **pp, void *loop,
                          const h3g_upstream_pool_config *cfg);

/*
 * Starts shutting down: fails every pending waiter (queued, or waiting for a
 * connect or a hand-over) with H3G_ERR_CLOSED from inside this call, closes
 * idle and connecting connections, refuses new acquires, stops
 * re-resolving (closes its resolver: a resolution in flight is cancelled,
 * or awaited when it already runs); busy connections keep working and
 * close as they are released. cb(arg) runs later, from a libuv callback,
 * once every handle is closed and the resolver's close callback has run
 * (so only after every busy connection was released); the pool is then
 * freed. Call it once.
 */
void h3g_upstream_pool_close(h3g_upstream_pool *p, void (*cb)(void *arg),
                             void *arg);

void h3g_upstream_pool_get_stats(const h3g_upstream_pool *p,
                                 h3g_upstream_pool_stats *out);

/*
 * Sends c's events to ev and ctx from now on: a group hands a connection
 * it received on its user's behalf to that user. Only from on_ready.
 */
void h3g_upconn_rebind(h3g_upconn *c, const h3g_upstream_events *ev,
                       void *ctx);

/* h3g_upstream_pool_ops' connection operations, by name, so that a table
 * layered on pools (upstream_group.c) can name them at compile time. */
int h3g_upconn_write(h3g_upconn *c, const h3g_iovec *iov, size_t n);
void h3g_upconn_read_start(h3g_upconn *c);
void h3g_upconn_read_stop(h3g_upconn *c);
void h3g_upconn_set_read_timeout(h3g_upconn *c, uint64_t ms);
void h3g_upconn_release(h3g_upconn *c, int reusable);
void h3g_upconn_upgrade(h3g_upconn *c);
int h3g_upconn_shutdown_write(h3g_upconn *c);
void h3g_upconn_reset(h3g_upconn *c);

/* The address new connections go to, for logs and metrics: "ip:port",
 * "[ip6]:port" or "unix:PATH". The pointer stays valid until the pool is
 * freed; the text changes when a re-resolution changes the address. */
const char *h3g_upstream_pool_address(const h3g_upstream_pool *p);

/*
 * Testing aid (production code leaves it unset): sets the hook of the
 * pool's resolver (h3g_resolver_set_hook() in resolver.h), which sees the
 * outcome of each asynchronous re-resolution before the pool acts on it.
 * No-op for a Unix-socket pool, which has no resolver.
 */
struct sockaddr_storage;
void h3g_upstream_pool_set_resolve_hook(
    h3g_upstream_pool *p,
    int (*hook)(void *arg, int status, struct sockaddr_storage *addr),
    void *arg);

#endif /* H3G_UPSTREAM_POOL_H */
