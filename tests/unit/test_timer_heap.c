#include <stdlib.h>

#include "timer_heap.h"
#include "unit.h"

static void test_order_and_moves(void) {
  h3g_theap h;
  h3g_theap_node n[5] = {0};
  h3g_theap_init(&h);
  CHECK(h3g_theap_top(&h) == NULL);
  uint64_t at[] = {50, 10, 40, 30, 20};
  for (int i = 0; i < 5; i++)
    CHECK_EQ_INT(h3g_theap_set(&h, &n[i], at[i]), 0);
  CHECK(h3g_theap_top(&h) == &n[1]);
  CHECK_EQ_INT(h3g_theap_set(&h, &n[0], 5), 0); /* earlier: moves up */
  CHECK(h3g_theap_top(&h) == &n[0]);
  CHECK_EQ_INT(h3g_theap_set(&h, &n[0], 45), 0); /* later: moves down */
  CHECK(h3g_theap_top(&h) == &n[1]);
  h3g_theap_remove(&h, &n[1]);
  CHECK(!h3g_theap_contains(&n[1]));
  h3g_theap_remove(&h, &n[1]); /* not in: no-op */
  CHECK(h3g_theap_top(&h) == &n[4]);
  h3g_theap_node *want[] = {&n[4], &n[3], &n[2], &n[0]};
  for (int i = 0; i < 4; i++) {
    CHECK(h3g_theap_top(&h) == want[i]);
    h3g_theap_remove(&h, want[i]);
  }
  CHECK(h3g_theap_top(&h) == NULL);
  CHECK_EQ_INT(h.n, 0);
  h3g_theap_free(&h);
}

/* Random sets and removes against a plain array: the top is always the
 * earliest, and every node knows whether it is in. */
static void test_random_against_reference(void) {
  enum { N = 500, OPS = 20000 };
  h3g_theap h;
  h3g_theap_node *nodes = calloc(N, sizeof(*nodes));
  uint64_t *ref = calloc(N, sizeof(*ref)); /* 0 = absent */
  h3g_theap_init(&h);
  srand(7);
  for (int op = 0; op < OPS; op++) {
    int i = rand() % N;
    if (rand() % 3 == 0) {
      h3g_theap_remove(&h, &nodes[i]);
      ref[i] = 0;
    } else {
      uint64_t at = 1 + (uint64_t)(rand() % 100000);
      CHECK_EQ_INT(h3g_theap_set(&h, &nodes[i], at), 0);
      ref[i] = at;
    }
    uint64_t min = 0;
    size_t count = 0;
    for (int k = 0; k < N; k++) {
      if (ref[k] != 0) {
        count++;
        if (min == 0 || ref[k] < min)
          min = ref[k];
      }
      if ((ref[k] != 0) != h3g_theap_contains(&nodes[k])) {
        CHECK(0);
        break;
      }
    }
    CHECK_EQ_INT(h.n, count);
    if (count > 0 && h3g_theap_top(&h)->at != min) {
      CHECK(0);
      break;
    }
  }
  /* Draining in order gives ascending deadlines. */
  uint64_t last = 0;
  while (h3g_theap_top(&h) != NULL) {
    h3g_theap_node *t = h3g_theap_top(&h);
    CHECK(t->at >= last);
    last = t->at;
    h3g_theap_remove(&h, t);
  }
  h3g_theap_free(&h);
  free(ref);
  free(nodes);
}

int main(void) {
  RUN(test_order_and_moves);
  RUN(test_random_against_reference);
  return unit_report();
}
