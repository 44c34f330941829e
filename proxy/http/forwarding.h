/*
 * What of a client's request head goes on to the upstream, and what the
 * gateway adds to it: the fields passed on (no pseudo-header, hop-by-hop,
 * Host or Content-Length field, none the route removes, and forwarding
 * fields only from a trusted proxy, RFC 7239 §8.1), then ours: Forwarded,
 * X-Forwarded-For/-Proto/-Host and Via as the route asks (a trusted
 * proxy's values come first, joined with ours; when the route adds none
 * of a kind, a trusted proxy's field of that kind passes as received),
 * Early-Data, and the route's own added fields. A field the route removes
 * is gone whoever sent it: neither passed on nor joined with ours.
 *
 * Pure: the bridge gives the request and the route's settings and writes
 * the resulting lists into the HTTP/1.1 head (h1_codec.h).
 */
#ifndef H3G_FORWARDING_H
#define H3G_FORWARDING_H

#include <stddef.h>

#include "config.h"
#include "http_headers.h"

typedef struct h3g_forward_in {
  const h3g_headers *fields;    /* the request's field section, as received */
  const h3g_field *host;        /* :authority, else the Host field; or NULL */
  const char *client;           /* the client, "ip:port" or "[ip]:port" */
  const char *protocol;         /* "h3", "h2" or "http/1.1", for Via */
  const h3g_config *cfg;        /* which clients are trusted proxies */
  const h3g_route_settings *rs; /* forwarding fields and header edits */
  int early_data;               /* add "Early-Data: 1" (RFC 8470 §5.1) */
  /* Non-NULL: the request opens a WebSocket (RFC 6455 §4.1): the client's
   * own Sec-WebSocket-Key and -Version are not passed on, and ours are
   * added, this key with version 13, after Connection: Upgrade and
   * Upgrade: websocket. */
  const char *websocket_key;
} h3g_forward_in;

/* The fields of the forwarded head. Everything points into the request's
 * field section, the route's settings, or this object. */
typedef struct h3g_forward {
  h3g_field *fields; /* the client's fields passed on, in received order */
  size_t nfields;
  h3g_field *extra; /* ours, to go after them */
  size_t nextra;
  /* Bytes the head needs for the extra fields beyond a small allowance
   * per field: what the buffer of the serialized head is sized with. */
  size_t extra_size;
  char *values; /* the values of ours we built */
} h3g_forward;

/*
 * Builds *out from in. Returns 0 or H3G_ERR_NOMEM (then *out holds
 * nothing). h3g_forward_free releases it either way.
 */
int h3g_forward_build(h3g_forward *out, const h3g_forward_in *in);

/* Releases what f holds. NULL is a no-op. */
void h3g_forward_free(h3g_forward *f);

/* The client's address without its port ("[v6]:p" or "v4:p" -> address),
 * NUL-terminated and cut to cap - 1 bytes. */
void h3g_forward_client_ip(const char *client, char *out, size_t cap);

#endif /* H3G_FORWARDING_H */
