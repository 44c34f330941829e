/*
 * histogram.h: fixed bounds, inclusive upper bounds (Prometheus' le), an
 * overflow bucket above the largest, sum and count.
 */
#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "unit.h"

/* The bounds rise, and each label reads as its microseconds. */
static void test_bounds(void) {
  for (unsigned i = 0; i < H3G_HIST_BOUNDS; i++) {
    if (i > 0)
      CHECK(h3g_hist_bound_us(i) > h3g_hist_bound_us(i - 1));
    double s = strtod(h3g_hist_bound_label(i), NULL);
    CHECK_EQ_INT((long long)(s * 1e6 + 0.5), h3g_hist_bound_us(i));
  }
  CHECK_EQ_INT(h3g_hist_bound_us(0), 500);
  CHECK_EQ_INT(h3g_hist_bound_us(H3G_HIST_BOUNDS - 1), 60000000);
}

static void test_observe(void) {
  h3g_histogram h;
  memset(&h, 0, sizeof(h));
  h3g_histogram_observe(&h, 0);
  h3g_histogram_observe(&h, 500); /* on the bound: that bucket */
  h3g_histogram_observe(&h, 501); /* just above: the next */
  h3g_histogram_observe(&h, 60000000);
  h3g_histogram_observe(&h, 60000001); /* above every bound */
  h3g_histogram_observe(&h, UINT64_MAX / 4);
  CHECK_EQ_INT(h.counts[0], 2);
  CHECK_EQ_INT(h.counts[1], 1);
  CHECK_EQ_INT(h.counts[H3G_HIST_BOUNDS - 1], 1);
  CHECK_EQ_INT(h.counts[H3G_HIST_BOUNDS], 2);
  CHECK_EQ_INT(h.count, 6);
  uint64_t total = 0;
  for (unsigned i = 0; i <= H3G_HIST_BOUNDS; i++)
    total += h.counts[i];
  CHECK_EQ_INT(total, h.count);
  CHECK(h.sum_us == 0 + 500 + 501 + 60000000 + 60000001 + UINT64_MAX / 4);
}

int main(void) {
  RUN(test_bounds);
  RUN(test_observe);
  return unit_report();
}
