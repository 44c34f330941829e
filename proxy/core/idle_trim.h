/*
 * Memory given back to the system once the gateway goes quiet.
 *
 * The C library keeps the pages of freed objects for the next allocation:
 * after a burst of connections every object is gone, yet the process keeps
 * its peak resident size (docs/memory.md has the measurements). Trimming
 * costs a walk over the free heap, so it is done only when activity has
 * stopped, never on the request path.
 *
 * h3g_idle_trim decides when: it is shown a snapshot of the activity
 * counters once a tick (server.c's timer), and asks for a trim after the
 * first tick in which nothing changed since a tick in which something did.
 * So a quiet period gets one trim, 1 to 2 ticks after its start, and a
 * gateway that stays quiet is never trimmed again. A leaf: no I/O, no
 * clock of its own.
 */
#ifndef H3G_IDLE_TRIM_H
#define H3G_IDLE_TRIM_H

#include <stdint.h>

#include "metrics.h"

/* The counters whose movement means activity: traffic, requests, and the
 * live counts (objects that are freed, even without traffic, free memory
 * worth giving back). A metrics scrape changes none of them. */
#define H3G_IDLE_TRIM_WATCH(X)                                                 \
  X(quic_datagrams_received)                                                   \
  X(quic_datagrams_sent)                                                       \
  X(quic_connections_active)                                                   \
  X(tcp_connections_accepted)                                                  \
  X(tcp_connections_active)                                                    \
  X(requests_total)                                                            \
  X(request_body_bytes)                                                        \
  X(response_body_bytes)                                                       \
  X(bridges_active)                                                            \
  X(upstream_conns_active)                                                     \
  X(buffer_chunks_active)

typedef struct h3g_idle_trim {
#define H3G_IDLE_TRIM_FIELD(name) int64_t name;
  H3G_IDLE_TRIM_WATCH(H3G_IDLE_TRIM_FIELD)
#undef H3G_IDLE_TRIM_FIELD
  int moved; /* something changed since the last trim */
} h3g_idle_trim;

/* Starts from m's current values: nothing has moved yet (a gateway that
 * just started has nothing to give back). */
void h3g_idle_trim_init(h3g_idle_trim *t, const h3g_metrics *m);

/* One tick with the current counters. Returns 1 when a trim is due now,
 * else 0. */
int h3g_idle_trim_tick(h3g_idle_trim *t, const h3g_metrics *m);

/*
 * Gives free memory back to the system: the body-chunk pool's free chunks
 * (h3g_ring_pool_trim) and, with glibc, every whole free page malloc holds
 * (malloc_trim). Counts it in memory_trims and its CPU time in
 * memory_trim_us. Returns that CPU time in microseconds.
 */
uint64_t h3g_memory_trim(void);

#endif /* H3G_IDLE_TRIM_H */
