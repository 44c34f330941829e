/*
 * Keep-alive TCP connections to one HTTP/1.1 upstream (libuv).
 *
 * HTTP/1.1 does not multiplex, so each exchange holds one connection. The
 * pool keeps at most `size` connections (busy + idle + connecting); callers
 * beyond that wait in a FIFO queue of at most `queue_size` entries.
 * An idle connection is watched for reads: if the upstream closes it or sends
 * anything, it is dropped before reuse. Idle connections expire after
 * idle_timeout_ms.
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

typedef struct h3g_upconn h3g_upconn;
typedef struct h3g_upstream_pool h3g_upstream_pool;

/* A scatter element for writes (same layout idea as struct iovec). */
typedef struct h3g_iovec {
  const uint8_t *base;
  size_t len;
} h3g_iovec;

/*
 * Events a pool delivers to the user of a connection (or of a wait). ctx is
 * the pointer given with the waiter. After release() or cancel() no event is
 * delivered for that user any more.
 */
typedef struct h3g_upstream_events {
  /* acquire() succeeded: conn is yours until release(). reused is 1 for a
   * connection that already carried a request. */
  void (*on_ready)(void *ctx, h3g_upconn *conn, int reused);
  /* acquire() failed: H3G_ERR_REFUSED (connect refused/unreachable/reset),
   * H3G_ERR_TIMEOUT (connect timeout or waited in the queue longer than the
   * connect timeout), H3G_ERR_IO, H3G_ERR_CLOSED (pool shutting down). */
  void (*on_fail)(void *ctx, int err);
  /* Reading is started and bytes may arrive: give a buffer. Setting *len
   * to 0 means "no room": the pool stops reading (as read_stop). */
  void (*on_alloc)(void *ctx, uint8_t **buf, size_t *len);
  /* nread bytes were placed at the start of the last buffer given. */
  void (*on_read)(void *ctx, size_t nread);
  /* The upstream closed its sending side. */
  void (*on_eof)(void *ctx);
  /* The connection failed: H3G_ERR_IO (reset or write error),
   * H3G_ERR_TIMEOUT (no byte received within the read timeout while reading
   * was started and a request was outstanding). The connection is dead;
   * release() it with reusable = 0. */
  void (*on_error)(void *ctx, int err);
  /* The last write() finished; status 0 or H3G_ERR_IO. */
  void (*on_written)(void *ctx, int status);
} h3g_upstream_events;

/* What a user embeds to wait for a connection. Fields are the pool's. */
typedef struct h3g_upstream_waiter {
  struct h3g_upstream_waiter *prev, *next;
  const h3g_upstream_events *ev;
  void *ctx;
  uint64_t since_ns;
  int queued;
} h3g_upstream_waiter;

/* The operations a connection user calls; upstream_pool provides
 * h3g_upstream_pool_ops, tests provide fakes. */
typedef struct h3g_upstream_ops {
  /*
   * Asks pool for a connection for w (ev and ctx must be set). The answer
   * comes later as on_ready or on_fail, never from inside this call.
   * Returns 0, or H3G_ERR_NOMEM when the wait queue is full (the caller
   * answers 503), or H3G_ERR_CLOSED when the pool is shutting down.
   */
  int (*acquire)(void *pool, h3g_upstream_waiter *w);
  /* Withdraws a pending acquire (no event follows). No-op if not pending. */
  void (*cancel)(void *pool, h3g_upstream_waiter *w);
  /*
   * Writes all of iov (at most 8 elements). The bytes must stay valid until
   * on_written. One write at a time. Returns 0 or H3G_ERR_IO.
   */
  int (*write)(h3g_upconn *c, const h3g_iovec *iov, size_t n);
  /* Starts or stops delivering on_alloc/on_read/on_eof. */
  void (*read_start)(h3g_upconn *c);
  void (*read_stop)(h3g_upconn *c);
  /* Sets the read timeout (ms, 0 = none): on_error(H3G_ERR_TIMEOUT) when no
   * byte arrives for that long while reading is started. */
  void (*set_read_timeout)(h3g_upconn *c, uint64_t ms);
  /*
   * Ends the user's hold on c. reusable = 1 returns it to the idle list
   * (only when both messages ended cleanly); 0 closes it. No event is
   * delivered to the user afterwards; a pending write is abandoned.
   */
  void (*release)(h3g_upconn *c, int reusable);
  /* "host:port" of the upstream, for logs. */
  const char *(*name)(void *pool);
} h3g_upstream_ops;

extern const h3g_upstream_ops h3g_upstream_pool_ops;

typedef struct h3g_upstream_pool_config {
  const char *host;          /* name or address; resolved at start */
  uint16_t port;
  uint32_t size;             /* max connections, >= 1 */
  uint32_t queue_size;       /* max waiters beyond size */
  uint64_t connect_timeout_ms;
  uint64_t idle_timeout_ms;  /* idle keep-alive connections expire */
} h3g_upstream_pool_config;

/* Counters a pool keeps (for metrics and tests). */
typedef struct h3g_upstream_pool_stats {
  uint32_t busy;      /* held by users */
  uint32_t idle;      /* kept alive, waiting for reuse */
  uint32_t connecting;
  uint32_t waiting;   /* queued acquires */
  uint64_t opened;    /* connections opened in total */
  uint64_t reused;    /* acquires served by an idle connection */
  uint64_t closed;    /* connections closed in total */
  uint64_t failed;    /* connect failures */
} h3g_upstream_pool_stats;

/*
 * Creates a pool on loop (a uv_loop_t *, kept opaque here). Resolves host
 * synchronously (at start-up only). Returns 0, H3G_ERR_NOMEM, or
 * H3G_ERR_NOTFOUND when the host does not resolve.
 */
int h3g_upstream_pool_new(h3g_upstream_pool **pp, void *loop,
                          const h3g_upstream_pool_config *cfg);

/*
 * Starts shutting down: fails every queued waiter with H3G_ERR_CLOSED,
 * closes idle connections, refuses new acquires; busy connections close as
 * they are released. cb(arg) runs once every handle is closed; the pool is
 * then freed.
 */
void h3g_upstream_pool_close(h3g_upstream_pool *p, void (*cb)(void *arg),
                             void *arg);

void h3g_upstream_pool_get_stats(const h3g_upstream_pool *p,
                                 h3g_upstream_pool_stats *out);

#endif /* H3G_UPSTREAM_POOL_H */
