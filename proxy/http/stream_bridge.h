/*
 * The bridge: maps one client request (HTTP/3 stream, or later an HTTP/2
 * stream or HTTP/1.1 exchange) onto one HTTP/1.1 exchange with the upstream.
 *
 * It does no I/O of its own: it talks to the client side through
 * h3g_frontend_ops and to the upstream through h3g_upstream_ops, so tests
 * drive it with fakes. It owns two bounded rings (request body towards the
 * upstream, response body towards the client), each of the configured
 * stream buffer size; memory per stream never depends on body sizes.
 *
 * Backpressure: request body credit is given back to the client (consume)
 * only for bytes the upstream accepted; upstream reads stop while the
 * response ring is full and resume when the front end reports bytes done.
 *
 * Life cycle: the front end creates the bridge when a request stream opens
 * and frees it when the stream is gone; h3g_bridge_free() is valid in every
 * state (it cancels the upstream wait or releases the connection).
 */
#ifndef H3G_STREAM_BRIDGE_H
#define H3G_STREAM_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "bridge_timer.h"
#include "config.h"
#include "frontend.h"
#include "http_headers.h"
#include "priority.h"
#include "upstream_pool.h"

typedef struct h3g_bridge h3g_bridge;

typedef struct h3g_router h3g_router;
typedef struct h3g_route h3g_route;

/* What every bridge of one server shares. */
typedef struct h3g_bridge_env {
  const h3g_config *cfg;
  /* Each request's route is chosen in router when its head is complete
   * (route.h); without a router, every request takes `route`. */
  h3g_router *router;
  h3g_route *route;
  const h3g_timer_ops *timers; /* NULL: no header or 100-continue timers */
  void *loop;
  /* The Alt-Svc the HTTP/3 front end adds to final response heads, so
   * clients refresh their entry (alt_svc.h); NULL: none, upstream's kept. */
  const struct h3g_alt_svc *alt_svc;
  /* Response body bytes the front end may hold after taking them (until
   * its peer acknowledges them) without counting against
   * stream_buffer_size: QUIC keeps sent stream data in our memory, where
   * TCP keeps it in the kernel's socket buffer. 0 for TCP front ends. */
  size_t resp_inflight;
} h3g_bridge_env;

/*
 * Creates a bridge for a new request. conn_key identifies the client
 * connection (requests of one connection wait for the upstream in urgency
 * order; connections take turns). client is "ip:port" and protocol is
 * "h3" (both copied, for the access log). Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_bridge_new(h3g_bridge **pb, const h3g_bridge_env *env,
                   const h3g_frontend_ops *fe, void *fs, const void *conn_key,
                   const char *client, const char *protocol);

/*
 * The client's connection was offered extended CONNECT (the front end sent
 * SETTINGS_ENABLE_CONNECT_PROTOCOL = 1; an HTTP/1.1 WebSocket Upgrade
 * stands for one): a request with :protocol is well-formed there even
 * after a reload turned WebSockets off (it is then refused by its route,
 * 501). Without this call, :protocol is malformed (RFC 8441 §3, RFC 9220
 * §3). Call before the head.
 */
void h3g_bridge_connect_offered(h3g_bridge *b);

/*
 * The client's priority for this request (RFC 9218), as the front end
 * knows it: its protocol library's reading of the request's Priority
 * field, or a PRIORITY_UPDATE. Any time; a request still waiting for an
 * upstream connection moves to its new place. Without a call, the bridge
 * reads the request's priority field itself at end_headers.
 */
void h3g_bridge_set_priority(h3g_bridge *b, h3g_priority prio);

/* Releases the upstream side, writes the access log line, frees b.
 * NULL is a no-op. */
void h3g_bridge_free(h3g_bridge *b);

/*
 * Adds one request header field, in received order (pseudo-header fields
 * included). Returns 0, H3G_ERR_TOOBIG (field section over the limit: the
 * front end answers 431 via h3g_bridge_end_headers' result) or
 * H3G_ERR_NOMEM.
 */
int h3g_bridge_add_field(h3g_bridge *b, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen);

/*
 * The request head is complete; end_stream is 1 when no body follows.
 * Validates it and starts the upstream exchange. Returns 0 (the bridge may
 * already have answered with an error response, e.g. 431 or 503), or
 * H3G_ERR_PROTO for a malformed request: the front end resets the stream
 * (H3_MESSAGE_ERROR) and frees the bridge; nothing reached the upstream.
 */
int h3g_bridge_end_headers(h3g_bridge *b, int end_stream);

/*
 * 0-RTT (RFC 8470). Before end_headers: the request arrives as TLS early
 * data and the handshake has not completed, so it may be a replay. At
 * end_headers, a body-less GET, HEAD or OPTIONS goes upstream at once with
 * "Early-Data: 1" (unless the client sent one); anything else is held
 * (its body buffered within the usual credit) until
 * h3g_bridge_handshake_done(), which a replayed handshake never reaches.
 * If the upstream answers 425 to a request we marked, it is sent once more
 * after the handshake, and the client never sees the 425.
 */
void h3g_bridge_set_early(h3g_bridge *b);
void h3g_bridge_handshake_done(h3g_bridge *b);

/*
 * The client connection's ID for the access log (HTTP/3: the QUIC
 * connection ID in hex, of which the first H3G_ACCESS_CID_LEN digits are
 * kept, copied). Any time before the bridge is freed; NULL or "" clears
 * it. Without a call the line shows none.
 */
void h3g_bridge_set_conn_id(h3g_bridge *b, const char *cid);

/*
 * Request body bytes. The bridge copies them. Returns 0, H3G_ERR_PROTO
 * (more than the declared content-length, or body after trailers / before
 * headers: malformed) or H3G_ERR_TOOBIG (more than the credit given: the
 * client broke flow control).
 */
int h3g_bridge_recv_body(h3g_bridge *b, const uint8_t *data, size_t len);

/*
 * Adds a request trailer field. Returns 0, H3G_ERR_TOOBIG (the trailer
 * section is over max_header_size: the front end goes on, and
 * h3g_bridge_end_request refuses the request), H3G_ERR_PROTO (no body
 * phase: trailers before the head or after the end) or H3G_ERR_NOMEM.
 */
int h3g_bridge_add_trailer(h3g_bridge *b, const uint8_t *name, size_t namelen,
                           const uint8_t *value, size_t valuelen);

/*
 * The client ended its side of the stream. Returns 0, or H3G_ERR_PROTO when
 * the body is shorter than the declared content-length or the trailers are
 * malformed or were over max_header_size.
 */
int h3g_bridge_end_request(h3g_bridge *b);

/*
 * The client reset the stream or asked us to stop sending: the upstream
 * exchange is cut (its connection closed, never reused). The front end
 * still frees the bridge.
 */
void h3g_bridge_client_abort(h3g_bridge *b);

/*
 * The front end refused the request as malformed itself (e.g. a field its
 * HTTP/3 library would have dropped silently): as client_abort, but logged
 * "malformed" and not counted as a client reset (the front end counts its
 * own malformed-request metric). The front end resets the stream and still
 * frees the bridge.
 */
void h3g_bridge_reject(h3g_bridge *b);

/*
 * Sets the outcome the access log line shows (a static string), for an
 * exchange the front end ended for its own reason (e.g. "client timeout").
 * The last call before the bridge is freed wins.
 */
void h3g_bridge_set_outcome(h3g_bridge *b, const char *outcome);

/* Flags of h3g_bridge_take_body(). */
enum {
  H3G_BODY_END = 1,      /* the body ends after the bytes returned */
  H3G_BODY_TRAILERS = 2, /* with END: trailers follow, see get_trailers */
};

/*
 * Hands out up to max unsent response body bytes in at most nv vectors
 * (nv >= 1; each vector is at most H3G_RING_CHUNK bytes) and sets *flags. The bytes stay valid
 * until h3g_bridge_body_done() releases them. Returns the number of vectors
 * (0 with flags 0 means "nothing now": body_ready will be called when that
 * changes).
 */
size_t h3g_bridge_take_body(h3g_bridge *b, h3g_iovec *v, size_t nv,
                            size_t max, unsigned *flags);

/* The front end is done with n bytes handed out (acknowledged or written),
 * oldest first. May resume upstream reads. */
void h3g_bridge_body_done(h3g_bridge *b, size_t n);

/* Response trailers (valid until the bridge is freed); n is 0 if none. */
void h3g_bridge_get_trailers(h3g_bridge *b, const h3g_field **fields,
                             size_t *n);

/* 1 once the response (head, body, trailers) was fully handed out. */
int h3g_bridge_response_done(const h3g_bridge *b);

/* Whether the request's route lets the front end add Alt-Svc to its
 * response (1 before a route was chosen). */
int h3g_bridge_alt_svc(const h3g_bridge *b);

/* What a bridge holds now, for tests and fuzzers that check its
 * bounds: ring bytes are those written and not yet released (handed out
 * or not), so req_held <= req_cap and resp_held <= resp_cap plus the
 * handed-out bytes within resp_inflight (buf.h). */
typedef struct h3g_bridge_usage {
  size_t req_held;      /* request body bytes waiting for the upstream */
  size_t req_cap;       /* the request ring's cap: the current window */
  size_t resp_held;     /* response body bytes not yet released */
  size_t resp_cap;      /* stream_buffer_size */
  size_t resp_inflight; /* the front end's in-flight allowance */
  const char *outcome;  /* "ok", or why the exchange ended early (as the
                         * access log line would show it now) */
} h3g_bridge_usage;

void h3g_bridge_get_usage(const h3g_bridge *b, h3g_bridge_usage *out);



#endif /* H3G_STREAM_BRIDGE_H */
