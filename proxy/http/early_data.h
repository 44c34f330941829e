/*
 * Requests that arrive as TLS early data (0-RTT; RFC 8470, RFC 9001 §9.2):
 * the bridge's decisions about a request that came before the client's
 * handshake completed, and so may be a replay.
 *
 * A body-less GET, HEAD or OPTIONS, on a route that allows it, goes
 * upstream at once, marked "Early-Data: 1" unless the client marked it
 * itself; anything else is held until the handshake completes, which a
 * replayed handshake never does. If the upstream answers 425 (Too Early)
 * to a request we marked, the request is sent once more, after the
 * handshake, and the client never sees the 425.
 *
 * Bookkeeping only: the bridge asks, acts (starts or holds the upstream
 * exchange, rebuilds the request head) and calls nothing else from here.
 * Counts the h3_early_* metrics.
 */
#ifndef H3G_EARLY_DATA_H
#define H3G_EARLY_DATA_H

#include "http_headers.h"

typedef struct h3g_early {
  int early;   /* received early; the handshake has not completed */
  int hold;    /* not sent upstream until the handshake completes */
  int fwd;     /* sent upstream early, with Early-Data: 1 */
  int added;   /* that Early-Data field is ours (the client had none, or a
                * value other than "1", which ours replaces): the request
                * head carries "Early-Data: 1" */
  int retried; /* answered 425 once and sent again */
  int redo;    /* the upstream's head was a 425 to send again for */
} h3g_early;

/* The request arrives as early data (its head is not complete yet). */
void h3g_early_received(h3g_early *e);

/*
 * The request head is complete and the route chosen: decides whether a
 * request received early goes upstream now or is held (e->hold).
 * fields: the request's field section; method: its :method; end_stream:
 * no body follows; allowed: the route's early_data setting. A request not
 * received early is left alone.
 */
void h3g_early_on_head(h3g_early *e, const h3g_headers *fields,
                       const h3g_field *method, int end_stream, int allowed);

/*
 * The client's handshake completed. Returns 1 when a held request may now
 * go upstream (it is no longer held), else 0.
 */
int h3g_early_handshake_done(h3g_early *e);

/*
 * The upstream's final head has status: returns 1 (and notes e->redo) when
 * it is a 425 to a request we marked and did not send again yet: the
 * response is dropped and the request sent again (h3g_early_resend). Not
 * when the client marked the request itself: it is an intermediary that
 * retries by itself.
 */
int h3g_early_too_early(h3g_early *e, int status);

/* The request goes again after a 425: no longer marked, never again. The
 * bridge rebuilds its head, then asks h3g_early_wait_handshake. */
void h3g_early_resend(h3g_early *e);

/* Returns 1 (and holds the request) when the handshake has not completed
 * yet, so the request sent again must wait for it; 0 to send it now. */
int h3g_early_wait_handshake(h3g_early *e);

#endif /* H3G_EARLY_DATA_H */
