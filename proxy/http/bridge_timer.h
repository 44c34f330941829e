/*
 * One-shot timers, as the front end lends them to the bridge and its parts
 * (request header and body timeouts, the 100-continue wait), so that none
 * of them needs an event loop of its own.
 */
#ifndef H3G_BRIDGE_TIMER_H
#define H3G_BRIDGE_TIMER_H

#include <stdint.h>

typedef struct h3g_timer h3g_timer;

typedef struct h3g_timer_ops {
  /* Calls cb(arg) once, after ms. Returns the timer, or NULL when none can
   * be made (the caller then goes without). After cb ran, the timer is
   * released: do not cancel it. */
  h3g_timer *(*start)(void *loop, uint64_t ms, void (*cb)(void *arg),
                      void *arg);
  /* Stops t and releases it; cb is not called. NULL is a no-op. */
  void (*cancel)(h3g_timer *t);
} h3g_timer_ops;

#endif /* H3G_BRIDGE_TIMER_H */
