#include <stdlib.h>

#include "buf.h"
#include "unit.h"

#define CH H3G_RING_CHUNK

/* Fills n bytes of a pattern starting at offset off. */
static void pattern(uint8_t *p, size_t n, size_t off) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)((off + i) * 131 + ((off + i) >> 9));
}

static int check_pattern(const h3g_iovec *v, size_t nv, size_t off) {
  for (size_t k = 0; k < nv; k++)
    for (size_t i = 0; i < v[k].len; i++, off++)
      if (v[k].base[i] != (uint8_t)(off * 131 + (off >> 9)))
        return 0;
  return 1;
}

static void test_write_take_release(void) {
  h3g_ring r;
  h3g_ring_init(&r, 8);
  CHECK_EQ_INT(h3g_ring_space(&r), 8);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"abcdef", 6), 0);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"xyz", 3), H3G_ERR_TOOBIG);
  h3g_iovec v[2];
  CHECK_EQ_INT(h3g_ring_take(&r, 4, v, 2), 1);
  CHECK_MEM(v[0].base, v[0].len, "abcd");
  CHECK_EQ_INT(h3g_ring_unsent(&r), 2);
  CHECK_EQ_INT(h3g_ring_space(&r), 2); /* taken bytes still occupy space */
  h3g_ring_release(&r, 4);
  CHECK_EQ_INT(h3g_ring_space(&r), 6);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"ghijk", 5), 0);
  CHECK_EQ_INT(h3g_ring_take(&r, 100, v, 2), 1);
  CHECK_MEM(v[0].base, v[0].len, "efghijk");
  h3g_ring_release(&r, 7);
  CHECK_EQ_INT(h3g_ring_len(&r), 0);
  h3g_ring_free(&r);
  h3g_ring_free(&r); /* double free is a no-op */
  h3g_ring_free(NULL);
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
  h3g_iovec v[2];
  CHECK_EQ_INT(h3g_ring_peek(&r, 100, v, 2), 1);
  CHECK_MEM(v[0].base, v[0].len, "hello");
  CHECK_EQ_INT(h3g_ring_unsent(&r), 5); /* peek leaves bytes unsent */
  h3g_ring_skip(&r, 5);
  h3g_ring_release(&r, 5);
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, 16);
  h3g_ring_free(&r);
}

/* Regions and vectors never cross a chunk; bytes come back in order
 * across chunks; a full ring offers nothing. */
static void test_chunks(void) {
  size_t cap = 3 * CH + 100;
  uint8_t *src = malloc(cap);
  pattern(src, cap, 0);
  h3g_ring r;
  h3g_ring_init(&r, cap);
  size_t chunks0 = h3g_ring_chunks_in_use();
  CHECK_EQ_INT(h3g_ring_write(&r, src, CH - 10), 0);
  uint8_t *p;
  size_t n;
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, 10); /* the rest of the first chunk only */
  memcpy(p, src + CH - 10, 10);
  h3g_ring_commit(&r, 10);
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, CH); /* a fresh chunk */
  memcpy(p, src + CH, CH);
  h3g_ring_commit(&r, CH);
  CHECK_EQ_INT(h3g_ring_write(&r, src + 2 * CH, CH + 100), 0);
  CHECK_EQ_INT(h3g_ring_space(&r), 0);
  CHECK_EQ_INT(h3g_ring_reserve(&r, &p, &n), 0);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 4);
  h3g_iovec v[8];
  /* A take that starts mid-chunk and spans three. */
  CHECK_EQ_INT(h3g_ring_take(&r, 5, v, 8), 1);
  CHECK_EQ_INT(h3g_ring_take(&r, 2 * CH, v, 8), 3);
  CHECK_EQ_INT(v[0].len, CH - 5);
  CHECK_EQ_INT(v[1].len, CH);
  CHECK_EQ_INT(v[2].len, 5);
  CHECK(check_pattern(v, 3, 5));
  /* nv limits the vectors. */
  CHECK_EQ_INT(h3g_ring_take(&r, SIZE_MAX, v, 1), 1);
  CHECK_EQ_INT(v[0].len, CH - 5);
  CHECK(check_pattern(v, 1, 2 * CH + 5));
  CHECK_EQ_INT(h3g_ring_take(&r, SIZE_MAX, v, 8), 1);
  CHECK_EQ_INT(v[0].len, 100);
  CHECK(check_pattern(v, 1, 3 * CH));
  /* Releasing gives whole chunks back as soon as nothing in them is held. */
  h3g_ring_release(&r, CH - 1);
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 4);
  h3g_ring_release(&r, 1);
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 3);
  h3g_ring_release(&r, 2 * CH + 100);
  CHECK_EQ_INT(h3g_ring_len(&r), 0);
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 0);
  h3g_ring_free(&r);
  free(src);
}

/* The in-flight allowance: handed-out bytes up to it do not count against
 * the cap, beyond it they do. */
static void test_inflight_allowance(void) {
  h3g_ring r;
  h3g_ring_init(&r, 100);
  h3g_ring_set_inflight(&r, 250);
  uint8_t buf[400];
  pattern(buf, sizeof(buf), 0);
  CHECK_EQ_INT(h3g_ring_write(&r, buf, 100), 0);
  CHECK_EQ_INT(h3g_ring_space(&r), 0);
  h3g_iovec v[4];
  CHECK_EQ_INT(h3g_ring_take(&r, 60, v, 4), 1);
  CHECK_EQ_INT(h3g_ring_space(&r), 60); /* taken, not yet released */
  CHECK_EQ_INT(h3g_ring_write(&r, buf + 100, 60), 0);
  CHECK_EQ_INT(h3g_ring_take(&r, SIZE_MAX, v, 4), 1);
  CHECK_EQ_INT(h3g_ring_space(&r), 100);
  CHECK_EQ_INT(h3g_ring_write(&r, buf + 160, 100), 0);
  CHECK_EQ_INT(h3g_ring_take(&r, SIZE_MAX, v, 4), 1);
  /* 260 handed out, 250 of them free: 10 count against the cap. */
  CHECK_EQ_INT(h3g_ring_len(&r), 260);
  CHECK_EQ_INT(h3g_ring_space(&r), 90);
  CHECK_EQ_INT(h3g_ring_write(&r, buf + 260, 91), H3G_ERR_TOOBIG);
  h3g_ring_release(&r, 160);
  CHECK_EQ_INT(h3g_ring_space(&r), 100);
  h3g_ring_free(&r);
  /* The allowance survives free (it belongs to the ring's owner). */
  CHECK_EQ_INT(r.inflight, 250);
}

static void test_drop_unsent(void) {
  h3g_ring r;
  h3g_ring_init(&r, 2 * CH);
  size_t chunks0 = h3g_ring_chunks_in_use();
  uint8_t *big = calloc(1, 2 * CH);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"abcdef", 6), 0);
  h3g_iovec v[2];
  h3g_ring_take(&r, 2, v, 2);
  CHECK_EQ_INT(h3g_ring_write(&r, big, 2 * CH - 6), 0);
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 2);
  h3g_ring_drop_unsent(&r);
  CHECK_EQ_INT(h3g_ring_unsent(&r), 0);
  CHECK_EQ_INT(h3g_ring_len(&r), 2); /* handed-out bytes stay until released */
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 1);
  CHECK_EQ_INT(h3g_ring_write(&r, (const uint8_t *)"xy", 2), 0);
  CHECK_EQ_INT(h3g_ring_take(&r, 100, v, 2), 1);
  CHECK_MEM(v[0].base, v[0].len, "xy");
  h3g_ring_release(&r, 4);
  CHECK_EQ_INT(h3g_ring_chunks_in_use() - chunks0, 0);
  h3g_ring_free(&r);
  free(big);
}

/* Many rings cycling many chunks: the pool is reused and bounded, and
 * trimming it gives everything back. */
static void test_pool(void) {
  h3g_ring rings[4];
  uint8_t *data = malloc(4 * CH);
  pattern(data, 4 * CH, 0);
  size_t chunks0 = h3g_ring_chunks_in_use();
  for (int round = 0; round < 50; round++) {
    for (int i = 0; i < 4; i++) {
      h3g_ring_init(&rings[i], 4 * CH);
      CHECK_EQ_INT(h3g_ring_write(&rings[i], data, 4 * CH), 0);
    }
    for (int i = 0; i < 4; i++) {
      h3g_iovec v[8];
      size_t nv = h3g_ring_take(&rings[i], SIZE_MAX, v, 8);
      CHECK_EQ_INT(nv, 4);
      CHECK(check_pattern(v, nv, 0));
      h3g_ring_free(&rings[i]);
    }
  }
  CHECK_EQ_INT(h3g_ring_chunks_in_use(), chunks0);
  CHECK(h3g_ring_chunks_pooled() >= 16);
  h3g_ring_pool_trim();
  CHECK_EQ_INT(h3g_ring_chunks_pooled(), 0);
  free(data);
}

int main(void) {
  RUN(test_drop_unsent);
  RUN(test_write_take_release);
  RUN(test_reserve_commit_from);
  RUN(test_chunks);
  RUN(test_inflight_allowance);
  RUN(test_pool);
  return unit_report();
}
