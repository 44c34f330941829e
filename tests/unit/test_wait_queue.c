#include <stdlib.h>

#include "unit.h"
#include "wait_queue.h"

typedef struct item {
  h3g_waitq_entry e;
  int id;
} item;

static int id_of(h3g_waitq_entry *e) {
  return e != NULL ? H3G_CONTAINER_OF(e, item, e)->id : -1;
}

static void push(h3g_waitq *q, item *it, int id, const void *key,
                 unsigned urgency, uint64_t since) {
  it->id = id;
  CHECK_EQ_INT(h3g_waitq_push(q, &it->e, key, urgency, since, 0), 0);
}

/* One client: most urgent first, then arrival. */
static void test_one_group_urgency_then_arrival(void) {
  h3g_waitq q;
  item it[6] = {0};
  int key;
  h3g_waitq_init(&q);
  push(&q, &it[0], 0, &key, 5, 1);
  push(&q, &it[1], 1, &key, 5, 2);
  push(&q, &it[2], 2, &key, 1, 3);
  push(&q, &it[3], 3, &key, 3, 4);
  push(&q, &it[4], 4, &key, 1, 5);
  push(&q, &it[5], 5, &key, 0, 6);
  CHECK_EQ_INT(h3g_waitq_len(&q), 6);
  CHECK_EQ_INT(id_of(h3g_waitq_oldest(&q)), 0);
  int want[] = {5, 2, 4, 3, 0, 1};
  for (size_t i = 0; i < 6; i++) {
    CHECK_EQ_INT(id_of(h3g_waitq_peek(&q)), want[i]);
    CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), want[i]);
  }
  CHECK(h3g_waitq_pop(&q) == NULL);
  CHECK(h3g_waitq_oldest(&q) == NULL);
  CHECK_EQ_INT(h3g_waitq_len(&q), 0);
  h3g_waitq_free(&q);
}

/* Clients take turns: urgency never lets one client overtake another. */
static void test_groups_take_turns(void) {
  h3g_waitq q;
  item a[3] = {0}, b[2] = {0}, c[1] = {0};
  int ka, kb, kc;
  h3g_waitq_init(&q);
  push(&q, &a[0], 10, &ka, 7, 1);
  push(&q, &a[1], 11, &ka, 7, 2);
  push(&q, &a[2], 12, &ka, 0, 3);
  push(&q, &b[0], 20, &kb, 0, 4);
  push(&q, &b[1], 21, &kb, 0, 5);
  push(&q, &c[0], 30, &kc, 0, 6);
  /* a's turn (its most urgent), b, c, a, b, a. */
  int want[] = {12, 20, 30, 10, 21, 11};
  for (size_t i = 0; i < 6; i++)
    CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), want[i]);
  CHECK(h3g_waitq_pop(&q) == NULL);
  h3g_waitq_free(&q);
}

/* A group that empties and comes back joins the back of the turn order. */
static void test_group_rejoins_at_back(void) {
  h3g_waitq q;
  item a[2] = {0}, b[2] = {0};
  int ka, kb;
  h3g_waitq_init(&q);
  push(&q, &a[0], 1, &ka, 3, 1);
  push(&q, &b[0], 2, &kb, 3, 2);
  push(&q, &b[1], 3, &kb, 3, 3);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 1); /* a empties */
  push(&q, &a[1], 4, &ka, 0, 4);             /* a again, behind b */
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 2);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 4);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 3);
  h3g_waitq_free(&q);
}

static void test_remove_and_oldest(void) {
  h3g_waitq q;
  item it[4] = {0};
  int ka, kb;
  h3g_waitq_init(&q);
  push(&q, &it[0], 0, &ka, 3, 10);
  push(&q, &it[1], 1, &kb, 0, 20);
  push(&q, &it[2], 2, &ka, 0, 30);
  push(&q, &it[3], 3, &kb, 3, 40);
  h3g_waitq_remove(&q, &it[0].e);
  CHECK(!it[0].e.queued);
  h3g_waitq_remove(&q, &it[0].e); /* not queued: no-op */
  CHECK_EQ_INT(id_of(h3g_waitq_oldest(&q)), 1);
  h3g_waitq_remove(&q, &it[1].e);
  CHECK_EQ_INT(id_of(h3g_waitq_oldest(&q)), 2);
  CHECK_EQ_INT(h3g_waitq_len(&q), 2);
  /* a's turn still comes first; its one entry is 2. */
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 2);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 3);
  CHECK(h3g_waitq_pop(&q) == NULL);
  /* Removing the last entries of every group leaves a usable queue. */
  push(&q, &it[0], 0, &ka, 3, 50);
  h3g_waitq_remove(&q, &it[0].e);
  CHECK(h3g_waitq_peek(&q) == NULL);
  push(&q, &it[1], 1, &kb, 3, 60);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 1);
  h3g_waitq_free(&q);
}

/* A PRIORITY_UPDATE moves a waiting entry, keeping arrival order within
 * its new urgency. */
static void test_set_urgency(void) {
  h3g_waitq q;
  item it[4] = {0};
  int k;
  h3g_waitq_init(&q);
  push(&q, &it[0], 0, &k, 1, 1);
  push(&q, &it[1], 1, &k, 6, 2);
  push(&q, &it[2], 2, &k, 1, 3);
  push(&q, &it[3], 3, &k, 6, 4);
  h3g_waitq_set_urgency(&q, &it[3].e, 1);  /* arrived last: after 2 */
  h3g_waitq_set_urgency(&q, &it[1].e, 1);  /* arrived before 2 */
  h3g_waitq_set_urgency(&q, &it[1].e, 1);  /* same: no change */
  h3g_waitq_set_urgency(&q, &it[0].e, 99); /* clamped to 7 */
  CHECK_EQ_INT(it[0].e.urgency, 7);
  int want[] = {1, 2, 3, 0};
  for (size_t i = 0; i < 4; i++)
    CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), want[i]);
  item lone = {0};
  h3g_waitq_set_urgency(&q, &lone.e, 0); /* not queued: no-op */
  CHECK(!lone.e.queued);
  h3g_waitq_free(&q);
}

/* front = 1: a waiter that lost its connection is served first again. */
static void test_push_front(void) {
  h3g_waitq q;
  item it[4] = {0};
  int ka, kb;
  h3g_waitq_init(&q);
  push(&q, &it[0], 0, &ka, 3, 10);
  push(&q, &it[1], 1, &kb, 3, 20);
  push(&q, &it[2], 2, &ka, 3, 30);
  it[3].id = 3;
  CHECK_EQ_INT(h3g_waitq_push(&q, &it[3].e, &kb, 3, 5, 1), 0);
  CHECK_EQ_INT(id_of(h3g_waitq_oldest(&q)), 3);
  /* kb existed: its place in the turn order is unchanged (after ka). */
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 0);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 3);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 2);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 1);
  /* A new group pushed to the front takes the next turn. */
  int kc;
  push(&q, &it[0], 0, &ka, 3, 40);
  push(&q, &it[1], 1, &kb, 3, 41);
  CHECK_EQ_INT(h3g_waitq_push(&q, &it[2].e, &kc, 3, 42, 1), 0);
  CHECK_EQ_INT(id_of(h3g_waitq_pop(&q)), 2);
  h3g_waitq_free(&q);
}

static void test_bad_arguments(void) {
  h3g_waitq q;
  item it = {0};
  int k;
  h3g_waitq_init(&q);
  CHECK_EQ_INT(h3g_waitq_push(&q, &it.e, NULL, 3, 1, 0), H3G_ERR_INVAL);
  CHECK_EQ_INT(h3g_waitq_push(&q, &it.e, &k, 3, 1, 0), 0);
  CHECK_EQ_INT(h3g_waitq_push(&q, &it.e, &k, 3, 1, 0), H3G_ERR_INVAL);
  CHECK_EQ_INT(h3g_waitq_len(&q), 1);
  h3g_waitq_free(&q);
}

/* Many groups (the hash table grows) and many entries: every entry comes
 * out exactly once, each group's in its own order, groups interleaved. */
static void test_many_groups(void) {
  enum { NG = 300, PER = 7 };
  h3g_waitq q;
  item *it = calloc(NG * PER, sizeof(*it));
  char *keys = calloc(NG, 1);
  int *seen = calloc(NG * PER, sizeof(*seen));
  int *last_u = calloc(NG, sizeof(*last_u));
  h3g_waitq_init(&q);
  uint64_t t = 0;
  for (int r = 0; r < PER; r++)
    for (int g = 0; g < NG; g++) {
      int id = g * PER + r;
      push(&q, &it[id], id, &keys[g], (unsigned)((g + r * 3) % 8), ++t);
    }
  CHECK_EQ_INT(h3g_waitq_len(&q), NG * PER);
  for (int g = 0; g < NG; g++)
    last_u[g] = -1;
  /* The first NG pops give every group one turn. */
  char *turned = calloc(NG, 1);
  for (int i = 0; i < NG * PER; i++) {
    int id = id_of(h3g_waitq_pop(&q));
    CHECK(id >= 0 && id < NG * PER);
    if (id < 0 || id >= NG * PER)
      break;
    CHECK(!seen[id]);
    seen[id] = 1;
    int g = id / PER;
    if (i < NG) {
      CHECK(!turned[g]);
      turned[g] = 1;
    }
    CHECK(it[id].e.urgency >= last_u[g]);
    last_u[g] = it[id].e.urgency;
  }
  CHECK(h3g_waitq_pop(&q) == NULL);
  h3g_waitq_free(&q);
  free(turned);
  free(last_u);
  free(seen);
  free(keys);
  free(it);
}

int main(void) {
  RUN(test_one_group_urgency_then_arrival);
  RUN(test_groups_take_turns);
  RUN(test_group_rejoins_at_back);
  RUN(test_remove_and_oldest);
  RUN(test_set_urgency);
  RUN(test_push_front);
  RUN(test_bad_arguments);
  RUN(test_many_groups);
  return unit_report();
}
