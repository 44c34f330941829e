/*
 * The accounting of one exchange: its timings and byte counts while it
 * runs, and at its end, when the bridge is freed, its access log line
 * (log.h), its route's statistics and histograms (route.h) and the
 * upstream's finish() (upstream_pool.h: how the server it went to
 * answered, for passive health checks and balancing).
 *
 * No I/O: the access log is written by log.c, the finish() by whoever
 * implements the upstream ops.
 */
#ifndef H3G_BRIDGE_LOG_H
#define H3G_BRIDGE_LOG_H

#include <stdint.h>

#include "http_headers.h"
#include "route.h"
#include "upstream_pool.h"

typedef struct h3g_bridge_log {
  uint64_t start_ns;      /* monotonic: the request stream opened */
  uint64_t start_wall_us; /* the same moment, wall clock, for the line */
  uint64_t bytes_in;      /* request body bytes received from the client */
  uint64_t bytes_out;     /* response body bytes handed to the front end */
  uint64_t sent_ns;       /* the request head went out on a connection */
  uint64_t first_byte_us; /* from sent_ns to the first response byte; 0
                           * while none came on the current connection */
  uint64_t connect_us;    /* how long the current connection took to open,
                           * 0 for one kept alive (meaningful once sent_ns
                           * is set) */
} h3g_bridge_log;

/* The exchange starts now. */
void h3g_bridge_log_start(h3g_bridge_log *l);

/* A connection was handed to the request: first-byte timing starts over.
 * connect_us: how long it took to open, 0 when it was kept alive (the
 * waiter's connect_us, upstream_pool.h). */
void h3g_bridge_log_sent(h3g_bridge_log *l, uint64_t connect_us);

/* nread bytes of the response arrived. */
void h3g_bridge_log_read(h3g_bridge_log *l, size_t nread);

/* How the exchange ended, as the bridge knows it when it is freed. */
typedef struct h3g_bridge_end {
  const char *client;        /* "ip:port" */
  const char *protocol;      /* "h3", "h2", "http/1.1" */
  const h3g_headers *fields; /* the request's field section */
  /* Its validated pseudo-header fields; NULL when it never was validated
   * (the line then shows what the request claimed). */
  const h3g_request_pseudo *pseudo;
  int status;          /* the status the client got, 0 if none */
  const char *outcome; /* "ok", or why the exchange ended early */
  h3g_route *route;    /* NULL before (or without) a route */
  /* The upstream the request went to (or whose connect failed), NULL
   * when the gateway answered alone; and the request's waiter there. */
  const h3g_upstream_ops *ops;
  void *pool;
  h3g_upstream_waiter *waiter;
  const char *tunnel; /* "websocket" once a tunnel opened, else NULL */
  const char *cid;    /* HTTP/3: the QUIC connection's ID in hex, else
                       * NULL */
  int early;          /* the request came as 0-RTT early data */
} h3g_bridge_end;

/*
 * Writes the access log line, adds the exchange to its route's statistics
 * and its protocol's histograms (durations always, first byte when one
 * came; an unknown protocol is counted in the statistics only), and tells
 * the upstream how it ended (finish(), when it has one).
 */
void h3g_bridge_log_end(const h3g_bridge_log *l, const h3g_bridge_end *e);

#endif /* H3G_BRIDGE_LOG_H */
