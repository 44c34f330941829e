/* Fixed-bound latency histograms (histogram.h). */
#include "histogram.h"

static const struct {
  uint64_t us;
  const char *label;
} bounds[H3G_HIST_BOUNDS] = {
    {500, "0.0005"},  {1000, "0.001"},  {2500, "0.0025"}, {5000, "0.005"},
    {10000, "0.01"},  {25000, "0.025"}, {50000, "0.05"},  {100000, "0.1"},
    {250000, "0.25"}, {500000, "0.5"},  {1000000, "1"},   {2500000, "2.5"},
    {5000000, "5"},   {10000000, "10"}, {30000000, "30"}, {60000000, "60"},
};

uint64_t h3g_hist_bound_us(unsigned i) {
  return bounds[i].us;
}

const char *h3g_hist_bound_label(unsigned i) {
  return bounds[i].label;
}

void h3g_histogram_observe(h3g_histogram *h, uint64_t us) {
  /* Sixteen bounds: a scan from the small end, where most requests land,
   * beats a binary search's branches. */
  unsigned i = 0;
  while (i < H3G_HIST_BOUNDS && us > bounds[i].us)
    i++;
  h->counts[i]++;
  h->sum_us += us;
  h->count++;
}
