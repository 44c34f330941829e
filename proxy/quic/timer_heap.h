/*
 * Deadlines in nanoseconds, earliest first: a binary min-heap of nodes
 * embedded in their owners. The QUIC listener keeps one for all its
 * connections and sleeps on one timerfd until the earliest, because
 * libuv's timers count whole milliseconds and QUIC pacing needs
 * sub-millisecond wake-ups (a 100 Mbit/s flow sends a packet every
 * 120 us; at millisecond granularity it can only send in bursts).
 *
 * No I/O, no clock: a leaf module.
 */
#ifndef H3G_TIMER_HEAP_H
#define H3G_TIMER_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Embedded in the owner; zero it (or call h3g_theap_node_init) first. */
typedef struct h3g_theap_node {
  uint64_t at;
  size_t idx; /* position + 1 in the heap; 0 when not in it */
} h3g_theap_node;

typedef struct h3g_theap {
  h3g_theap_node **v;
  size_t n, cap;
} h3g_theap;

static inline void h3g_theap_init(h3g_theap *h) {
  *h = (h3g_theap){0};
}

/* Frees the array (nodes still in it are forgotten). */
void h3g_theap_free(h3g_theap *h);

/* Puts node in the heap with deadline at, or moves it there if it is in
 * already. Returns 0 or H3G_ERR_NOMEM (node unchanged). */
int h3g_theap_set(h3g_theap *h, h3g_theap_node *node, uint64_t at);

/* Takes node out. No-op when it is not in the heap. */
void h3g_theap_remove(h3g_theap *h, h3g_theap_node *node);

/* The node with the earliest deadline, or NULL. */
static inline h3g_theap_node *h3g_theap_top(const h3g_theap *h) {
  return h->n > 0 ? h->v[0] : NULL;
}

static inline int h3g_theap_contains(const h3g_theap_node *node) {
  return node->idx != 0;
}

#endif /* H3G_TIMER_HEAP_H */
