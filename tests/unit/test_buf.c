#include "buf.h"
#include "unit.h"

static void test_write_take_release(void) {
  h3g_ring r;
  h3g_ring_init(&r, 8);
  CHECK_EQ_INT(h3g_ring_space(&r), 8);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"abcdef", 6), 0);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"xyz", 3), H3G_ERR_TOOBIG);
  const uint8_t *p1, *p2;
  size_t l1, l2;
  CHECK_EQ_INT(h3g_ring_take(&r, 4, &p1, &l1, &p2, &l2), 1);
  CHECK_MEM(p1, l1, "abcd");
  CHECK_EQ_INT(h3g_ring_unsent(&r), 2);
  CHECK_EQ_INT(h3g_ring_space(&r), 2); /* taken bytes still occupy space */
  h3g_ring_release(&r, 4);
  CHECK_EQ_INT(h3g_ring_space(&r), 6);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"ghijk", 5), 0);
  /* wrapped: "efgh" at offsets 4..7, "ijk" at 0..2 */
  CHECK_EQ_INT(h3g_ring_take(&r, 100, &p1, &l1, &p2, &l2), 2);
  CHECK_MEM(p1, l1, "efgh");
  CHECK_MEM(p2, l2, "ijk");
  h3g_ring_release(&r, 7);
  CHECK_EQ_INT(h3g_ring_len(&r), 0);
  h3g_ring_free(&r);
  h3g_ring_free(&r); /* double free is a no-op */
}

static void test_reserve_commit_from(void) {
  h3g_ring r;
  h3g_ring_init(&r, 16);
  uint8_t *p;
  size_t n;
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, 16);
  /* a read placed framing + body; keep only the body bytes */
  memcpy(p, "5\r\nhello\r\n", 10);
  h3g_ring_commit_from(&r, p + 3, 5);
  CHECK_EQ_INT(h3g_ring_len(&r), 5);
  const uint8_t *p1, *p2;
  size_t l1, l2;
  CHECK_EQ_INT(h3g_ring_peek(&r, 100, &p1, &l1, &p2, &l2), 1);
  CHECK_MEM(p1, l1, "hello");
  CHECK_EQ_INT(h3g_ring_unsent(&r), 5); /* peek leaves bytes unsent */
  h3g_ring_skip(&r, 5);
  h3g_ring_release(&r, 5);
  /* empty ring restarts at offset 0: whole capacity contiguous again */
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, 16);
  h3g_ring_free(&r);
}

static void test_contiguous_region_stops_at_end(void) {
  h3g_ring r;
  h3g_ring_init(&r, 10);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"0123456", 7), 0);
  const uint8_t *p1, *p2;
  size_t l1, l2;
  h3g_ring_take(&r, 5, &p1, &l1, &p2, &l2);
  h3g_ring_release(&r, 5);
  uint8_t *p;
  size_t n;
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, 3); /* offsets 7..9 only, not the wrapped part */
  h3g_ring_free(&r);
}

static void test_drop_unsent(void) {
  h3g_ring r;
  h3g_ring_init(&r, 16);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"abcdef", 6), 0);
  const uint8_t *p1, *p2;
  size_t l1, l2;
  h3g_ring_take(&r, 2, &p1, &l1, &p2, &l2);
  h3g_ring_drop_unsent(&r);
  CHECK_EQ_INT(h3g_ring_unsent(&r), 0);
  CHECK_EQ_INT(h3g_ring_len(&r), 2); /* handed-out bytes stay until released */
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"xy", 2), 0);
  CHECK_EQ_INT(h3g_ring_take(&r, 100, &p1, &l1, &p2, &l2), 1);
  CHECK_MEM(p1, l1, "xy");
  h3g_ring_free(&r);
}

int main(void) {
  RUN(test_drop_unsent);
  RUN(test_write_take_release);
  RUN(test_reserve_commit_from);
  RUN(test_contiguous_region_stops_at_end);
  return unit_report();
}
