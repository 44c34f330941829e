/*
 * 0-RTT requests (early_data.h).
 */
#include "early_data.h"

#include <string.h>

#include "metrics.h"

void h3g_early_received(h3g_early *e) {
  e->early = 1;
}

static int method_is(const h3g_field *method, const char *m) {
  size_t n = strlen(m);
  return method->valuelen == n && memcmp(method->value, m, n) == 0;
}

/* Safe methods (RFC 9110 §9.2.1) that h3gate lets through as 0-RTT. */
static int method_safe(const h3g_field *method) {
  return method_is(method, "GET") || method_is(method, "HEAD") ||
         method_is(method, "OPTIONS");
}

void h3g_early_on_head(h3g_early *e, const h3g_headers *fields,
                       const h3g_field *method, int end_stream, int allowed) {
  if (!e->early)
    return;
  /* RFC 8470 §5.1, RFC 9001 §9.2: only a request that does no harm when
   * replayed goes ahead of the handshake, marked so the upstream can
   * still say 425; anything else waits for the handshake, which a replay
   * never completes. */
  H3G_INC(h3_early_requests);
  if (end_stream && method_safe(method) && allowed) {
    e->fwd = 1;
    /* A client that is itself an intermediary marks the request "1", and
     * retries a 425 itself; any other value means nothing (RFC 8470 §5.1
     * defines only "1"), so ours replaces it. */
    const h3g_field *f = h3g_headers_find(fields, "early-data");
    e->added = f == NULL || f->valuelen != 1 || f->value[0] != '1';
    H3G_INC(h3_early_forwarded);
  } else {
    e->hold = 1;
    H3G_INC(h3_early_held);
  }
}

int h3g_early_handshake_done(h3g_early *e) {
  e->early = 0;
  if (!e->hold)
    return 0;
  e->hold = 0;
  return 1;
}

int h3g_early_too_early(h3g_early *e, int status) {
  if (status != 425 || !e->added || e->retried)
    return 0;
  e->redo = 1;
  return 1;
}

/*
 * RFC 8470 §5.2: a 425 to a request we sent ahead of the handshake means
 * "send it again once the handshake is complete"; without Early-Data then,
 * since it no longer is early.
 */
void h3g_early_resend(h3g_early *e) {
  e->redo = 0;
  e->retried = 1;
  e->fwd = 0;
  e->added = 0;
  H3G_INC(h3_early_retries);
}

int h3g_early_wait_handshake(h3g_early *e) {
  if (e->early)
    e->hold = 1;
  return e->early;
}
