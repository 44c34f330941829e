#include <stdlib.h>

#include "buf.h"
#include "idle_trim.h"
#include "unit.h"

/* One quiet tick after activity asks for one trim; staying quiet asks for
 * no more; new activity arms it again. */
static void test_one_trim_per_quiet_period(void) {
  h3g_metrics m = {0};
  h3g_idle_trim t;
  m.quic_datagrams_received = 5;
  h3g_idle_trim_init(&t, &m);
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0); /* nothing since start */
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
  m.requests_total++;
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0); /* busy */
  m.response_body_bytes += 100;
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0); /* still busy */
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 1); /* quiet: trim */
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0); /* once */
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
  m.quic_datagrams_sent++;
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 1);
}

/* A live count going down (a connection freed after its closing period,
 * with no packet) is activity too: what it freed is worth giving back. A
 * counter no one watches (a metrics scrape moves none) is not. */
static void test_frees_count_scrapes_do_not(void) {
  h3g_metrics m = {.quic_connections_active = 3, .upstream_conns_active = 2};
  h3g_idle_trim t;
  h3g_idle_trim_init(&t, &m);
  m.quic_connections_active = 0;
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 1);
  m.upstream_conns_active = 0;
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 1);
  m.memory_trims += 7;
  m.quic_connections_refused += 1;
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
  CHECK_EQ_INT(h3g_idle_trim_tick(&t, &m), 0);
}

/* The trim empties the chunk pool and counts itself. */
static void test_trim_empties_pool(void) {
  h3g_ring r;
  h3g_ring_init(&r, 4 * H3G_RING_CHUNK);
  static uint8_t data[3 * H3G_RING_CHUNK];
  CHECK_EQ_INT(h3g_ring_write(&r, data, sizeof(data)), 0);
  h3g_ring_free(&r);
  CHECK(h3g_ring_chunks_pooled() >= 3);
  CHECK_EQ_INT(h3g_stats.buffer_chunks_pooled,
               (int64_t)h3g_ring_chunks_pooled());
  int64_t before = h3g_stats.memory_trims;
  h3g_memory_trim();
  CHECK_EQ_INT(h3g_ring_chunks_pooled(), 0);
  CHECK_EQ_INT(h3g_stats.buffer_chunks_pooled, 0);
  CHECK_EQ_INT(h3g_stats.memory_trims, before + 1);
}

int main(void) {
  RUN(test_one_trim_per_quiet_period);
  RUN(test_frees_count_scrapes_do_not);
  RUN(test_trim_empties_pool);
  return unit_report();
}
