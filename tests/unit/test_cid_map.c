#include <stdlib.h>

#include "cid_map.h"
#include "unit.h"

static const uint8_t key[16] = {0, 1, 2,  3,  4,  5,  6,  7,
                                8, 9, 10, 11, 12, 13, 14, 15};

static void test_siphash_reference_vector(void) {
  /* SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e. */
  uint8_t msg[15];
  for (size_t i = 0; i < sizeof(msg); i++)
    msg[i] = (uint8_t)i;
  uint64_t k0 = 0x0706050403020100ull, k1 = 0x0f0e0d0c0b0a0908ull;
  CHECK(h3g_siphash24(k0, k1, msg, sizeof(msg)) == 0xa129ca6149be45e5ull);
}

static void test_put_get_remove(void) {
  h3g_cid_map m;
  int a, b;
  uint8_t cid1[] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint8_t cid2[] = {1, 2, 3, 4, 5, 6, 7, 9};

  CHECK_EQ_INT(h3g_cid_map_init(&m, key), 0);
  CHECK(h3g_cid_map_get(&m, cid1, sizeof(cid1)) == NULL);
  CHECK_EQ_INT(h3g_cid_map_put(&m, cid1, sizeof(cid1), &a), 0);
  CHECK_EQ_INT(h3g_cid_map_put(&m, cid2, sizeof(cid2), &b), 0);
  CHECK(h3g_cid_map_get(&m, cid1, sizeof(cid1)) == &a);
  CHECK(h3g_cid_map_get(&m, cid2, sizeof(cid2)) == &b);
  /* A prefix is a different ID. */
  CHECK(h3g_cid_map_get(&m, cid1, 7) == NULL);
  /* Removal checks the owner. */
  CHECK_EQ_INT(h3g_cid_map_remove(&m, cid1, sizeof(cid1), &b), 0);
  CHECK_EQ_INT(h3g_cid_map_remove(&m, cid1, sizeof(cid1), &a), 1);
  CHECK(h3g_cid_map_get(&m, cid1, sizeof(cid1)) == NULL);
  CHECK_EQ_INT(h3g_cid_map_remove(&m, cid1, sizeof(cid1), NULL), 0);
  CHECK_EQ_INT(m.count, 1);
  /* Replacing keeps one entry. */
  CHECK_EQ_INT(h3g_cid_map_put(&m, cid2, sizeof(cid2), &a), 0);
  CHECK(h3g_cid_map_get(&m, cid2, sizeof(cid2)) == &a);
  CHECK_EQ_INT(m.count, 1);
  h3g_cid_map_free(&m);
  h3g_cid_map_free(&m);
}

static void test_refuses_bad_input(void) {
  h3g_cid_map m;
  int a;
  uint8_t big[H3G_CID_MAX + 1] = {0};
  CHECK_EQ_INT(h3g_cid_map_init(&m, key), 0);
  CHECK_EQ_INT(h3g_cid_map_put(&m, big, sizeof(big), &a), H3G_ERR_INVAL);
  CHECK_EQ_INT(h3g_cid_map_put(&m, big, 4, NULL), H3G_ERR_INVAL);
  CHECK(h3g_cid_map_get(&m, big, sizeof(big)) == NULL);
  /* A zero-length ID is a valid key. */
  CHECK_EQ_INT(h3g_cid_map_put(&m, big, 0, &a), 0);
  CHECK(h3g_cid_map_get(&m, big, 0) == &a);
  h3g_cid_map_free(&m);
}

/* Random puts and removes against a plain array: exercises growth and the
 * backward-shift deletion across wrapped clusters. */
static void test_against_reference(void) {
  enum { N = 3000 };
  static uint8_t cids[N][H3G_CID_MAX];
  static size_t lens[N];
  static int present[N];
  static int values[N];
  h3g_cid_map m;
  uint64_t x = 88172645463325252ull;

  CHECK_EQ_INT(h3g_cid_map_init(&m, key), 0);
  for (size_t i = 0; i < N; i++) {
    lens[i] = 2 + i % (H3G_CID_MAX - 1);
    for (size_t j = 0; j < lens[i]; j++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      cids[i][j] = (uint8_t)x;
    }
    cids[i][0] = (uint8_t)i; /* distinct keys */
    cids[i][1] = (uint8_t)(i >> 8);
  }
  for (int round = 0; round < 20000; round++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t i = (size_t)(x % N);
    if (present[i] && (x >> 32) % 3 == 0) {
      CHECK_EQ_INT(h3g_cid_map_remove(&m, cids[i], lens[i], &values[i]), 1);
      present[i] = 0;
    } else if (!present[i]) {
      CHECK_EQ_INT(h3g_cid_map_put(&m, cids[i], lens[i], &values[i]), 0);
      present[i] = 1;
    }
  }
  size_t count = 0;
  for (size_t i = 0; i < N; i++) {
    void *v = h3g_cid_map_get(&m, cids[i], lens[i]);
    CHECK(v == (present[i] ? &values[i] : NULL));
    count += (size_t)present[i];
  }
  CHECK_EQ_INT(m.count, count);
  CHECK(m.count * 2 <= m.cap);
  h3g_cid_map_free(&m);
}

int main(void) {
  RUN(test_siphash_reference_vector);
  RUN(test_put_get_remove);
  RUN(test_refuses_bad_input);
  RUN(test_against_reference);
  return unit_report();
}
