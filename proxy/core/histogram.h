/*
 * Latency histograms with fixed bucket bounds, for Prometheus' histogram
 * type (the per-route request duration and upstream first-byte series,
 * docs/routes.md "Visibility"). Fixed bounds keep each histogram a small
 * array, so their memory is known when the routes are built and an
 * observation is a short scan, no allocation.
 *
 * Bounds, in seconds: 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25
 * 0.5 1 2.5 5 10 30 60, then +Inf.
 */
#ifndef H3G_HISTOGRAM_H
#define H3G_HISTOGRAM_H

#include <stdint.h>

#define H3G_HIST_BOUNDS 16

typedef struct h3g_histogram {
  /* Observations per bucket, not cumulative: counts[i] those at most
   * bound i and above bound i - 1; counts[H3G_HIST_BOUNDS] those above
   * the largest bound. */
  uint64_t counts[H3G_HIST_BOUNDS + 1];
  uint64_t sum_us;
  uint64_t count;
} h3g_histogram;

/* Bound i in microseconds, and as Prometheus' le label writes it ("0.5",
 * "1", "60"); i < H3G_HIST_BOUNDS. */
uint64_t h3g_hist_bound_us(unsigned i);
const char *h3g_hist_bound_label(unsigned i);

/* Adds one observation of us microseconds. */
void h3g_histogram_observe(h3g_histogram *h, uint64_t us);

#endif /* H3G_HISTOGRAM_H */
