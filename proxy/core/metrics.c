/* Renders the X-macro list of metrics.h. */
#include "metrics.h"

#include <stdio.h>

h3g_metrics h3g_stats;

size_t h3g_metrics_render(char *buf, size_t cap) {
  size_t used = 0;
  int n;
#define H3G_METRIC_RENDER(name, kind, help)                                    \
  n = snprintf(buf + (used < cap ? used : cap), used < cap ? cap - used : 0,   \
               "# HELP h3gate_" #name " " help "\n# TYPE h3gate_" #name        \
               " " #kind "\nh3gate_" #name " %lld\n",                          \
               (long long)h3g_stats.name);                                     \
  if (n > 0)                                                                   \
    used += (size_t)n;
  H3G_METRICS(H3G_METRIC_RENDER)
#undef H3G_METRIC_RENDER
  return used;
}
