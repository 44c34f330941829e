/*
 * The small ops table between a client-facing transport (the HTTP/3 front
 * end today; the TCP + TLS fallback later) and the stream bridge. The bridge
 * calls these on the front end's stream object `fs`; it never knows which
 * transport is behind them.
 */
#ifndef H3G_FRONTEND_H
#define H3G_FRONTEND_H

#include <stddef.h>

#include "http_headers.h"
#include "priority.h"

/* Why an exchange is cut off; each front end maps these to its own codes
 * (HTTP/3: H3_* error codes on RESET_STREAM / STOP_SENDING). */
typedef enum h3g_abort_code {
  H3G_ABORT_INTERNAL = 1,  /* upstream failed mid-response: H3_INTERNAL_ERROR */
  H3G_ABORT_MESSAGE,       /* malformed request: H3_MESSAGE_ERROR */
  H3G_ABORT_INCOMPLETE,    /* request ended too early: H3_REQUEST_INCOMPLETE */
  H3G_ABORT_CANCELLED,     /* gateway gave up: H3_REQUEST_CANCELLED */
  H3G_ABORT_REJECTED,      /* not processed at all: H3_REQUEST_REJECTED */
  H3G_ABORT_CONNECT,       /* a tunnel's upstream connection was reset or
                            * failed: H3_CONNECT_ERROR (RFC 9114 §4.4),
                            * HTTP/2 CONNECT_ERROR */
} h3g_abort_code;

typedef struct h3g_frontend_ops {
  /*
   * Sends a response head. interim is 1 for 1xx heads (a final head
   * follows). has_body is 0 when the response ends with the head (then the
   * front end ends the stream without asking for body bytes). Fields are
   * filtered and lowercase; the front end adds nothing but what its protocol
   * needs. Returns 0 or a negative H3G_ERR_* code.
   */
  int (*send_head)(void *fs, int status, const h3g_field *fields, size_t n,
                   int interim, int has_body);
  /* Response body bytes, its end, or trailers are waiting: pull them with
   * h3g_bridge_take_body(). */
  void (*body_ready)(void *fs);
  /* The client may send n more request body bytes (the upstream took them). */
  void (*consume)(void *fs, size_t n);
  /* The request body is no longer wanted (the response is complete):
   * ask the client to stop sending, with no error (RFC 9114 §4.1). */
  void (*stop_request)(void *fs);
  /* Cuts the exchange off. No further call follows for this stream. */
  void (*abort)(void *fs, h3g_abort_code code);
  /* The connection's smoothed round-trip time in ns, 0 while unknown.
   * NULL: the protocol needs no request window (HTTP/1.1: the kernel's). */
  uint64_t (*rtt_ns)(void *fs);
  /* Lets the client send n more request body bytes than the credit given
   * so far: its window grows (consume() then keeps it at the new size). */
  void (*grow_window)(void *fs, size_t n);
  /* The origin's Priority response field changed the response's priority
   * (RFC 9218 §8; prio is already merged with the client's): schedule the
   * response by it. NULL where the protocol has no scheduling (HTTP/1.1). */
  void (*set_priority)(void *fs, h3g_priority prio);
  /*
   * The client connection's count of open tunnels (WebSocket), which the
   * bridge raises while a tunnel of this stream is open or being opened
   * and lowers when it is freed, for max_tunnels_per_connection. NULL:
   * this front end carries no tunnels (the bridge answers 501).
   *
   * A tunnel's life on the ops above: send_head(200 on HTTP/2 and HTTP/3,
   * 101 on HTTP/1.1, has_body 1); then the "body" both ways is the
   * tunnel's bytes, with the same credit and body_done rules; the
   * response's end is the upstream's end of its side (FIN), the request's
   * end (h3g_bridge_end_request) the client's.
   */
  uint32_t *(*tunnels)(void *fs);
} h3g_frontend_ops;

#endif /* H3G_FRONTEND_H */
