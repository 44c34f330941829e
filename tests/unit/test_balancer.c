/*
 * Tests for balancer.c: smooth weighted round robin, least_conn and
 * weighted rendezvous hashing, driven directly over node arrays.
 */
#include "balancer.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 8

/* Nodes of the given weights (n of them), ids from their addresses. */
static void make_nodes(h3g_balance_node *nodes, const uint32_t *weights,
                       size_t n) {
  for (size_t i = 0; i < n; i++) {
    char addr[32];
    snprintf(addr, sizeof(addr), "10.0.0.%zu:80", i + 1);
    nodes[i] = (h3g_balance_node){
        .weight = weights[i], .id = h3g_balance_hash(addr, strlen(addr))};
  }
}

/* The node index picked among cand. */
static uint32_t pick(h3g_balance algo, h3g_balance_node *nodes,
                     const uint32_t *cand, size_t ncand, int has_hash,
                     uint64_t key, uint32_t *cursor) {
  size_t i = h3g_balance_pick(algo, nodes, cand, ncand, has_hash, key, cursor);
  CHECK(i < ncand);
  return cand[i < ncand ? i : 0];
}

static const uint32_t all[MAXN] = {0, 1, 2, 3, 4, 5, 6, 7};

/* 5:1:1 goes a a b a c a a, again and again. */
static void test_round_robin_interleaves(void) {
  static const uint32_t w[] = {5, 1, 1};
  h3g_balance_node nodes[3];
  make_nodes(nodes, w, 3);
  uint32_t cursor = 0;
  char seq[7 * 20 + 1];
  for (int i = 0; i < 7 * 20; i++)
    seq[i] = (char)('a' + pick(H3G_BALANCE_ROUND_ROBIN, nodes, all, 3, 0, 0,
                               &cursor));
  seq[7 * 20] = '\0';
  for (int k = 0; k < 20; k++)
    CHECK(memcmp(seq + 7 * k, "aabacaa", 7) == 0);
  if (memcmp(seq, "aabacaa", 7) != 0)
    fprintf(stderr, "  sequence: %.21s...\n", seq);
  /* Any 7 picks in a row, not only the aligned ones, hold 5 a, 1 b, 1 c.
   * Runs of a stay short: two inside a period, four where two periods
   * join ("...c a a | a a b..."), never the five of a plain rotation. */
  int off = 0;
  for (int i = 0; i + 7 <= 7 * 20; i++) {
    int na = 0, nb = 0;
    for (int k = i; k < i + 7; k++) {
      na += seq[k] == 'a';
      nb += seq[k] == 'b';
    }
    off += na != 5 || nb != 1;
  }
  CHECK_EQ_INT(off, 0);
  CHECK(strstr(seq, "aaaaa") == NULL);
}

/* Over every window of sum(weights) picks, each node gets exactly its
 * weight. */
static void check_exact_shares(const uint32_t *w, size_t n, int rounds) {
  h3g_balance_node nodes[MAXN];
  make_nodes(nodes, w, n);
  uint32_t sum = 0, cursor = 0;
  for (size_t i = 0; i < n; i++)
    sum += w[i];
  int mismatched = 0;
  for (int r = 0; r < rounds; r++) {
    uint32_t count[MAXN] = {0};
    for (uint32_t k = 0; k < sum; k++)
      count[pick(H3G_BALANCE_ROUND_ROBIN, nodes, all, n, 0, 0, &cursor)]++;
    for (size_t i = 0; i < n; i++)
      mismatched += count[i] != w[i];
  }
  CHECK_EQ_INT(mismatched, 0);
}

static void test_round_robin_shares(void) {
  static const uint32_t w1[] = {5, 1, 1};
  static const uint32_t w2[] = {3, 2, 1, 4};
  static const uint32_t w3[] = {1, 1, 1, 1, 1};
  static const uint32_t w4[] = {1000, 1, 7, 999, 2};
  check_exact_shares(w1, 3, 100);
  check_exact_shares(w2, 4, 100);
  check_exact_shares(w3, 5, 100);
  check_exact_shares(w4, 5, 10);

  /* Equal weights: strict rotation. */
  h3g_balance_node nodes[3];
  make_nodes(nodes, w3, 3);
  uint32_t cursor = 0;
  for (int i = 0; i < 30; i++)
    CHECK_EQ_INT(pick(H3G_BALANCE_ROUND_ROBIN, nodes, all, 3, 0, 0, &cursor),
                 i % 3);
}

/* A candidate left out (down, cooling off): the others share by weight. */
static void test_round_robin_without_one(void) {
  static const uint32_t w[] = {5, 1, 1, 3};
  h3g_balance_node nodes[4];
  make_nodes(nodes, w, 4);
  uint32_t cursor = 0;
  /* from fresh state, without b: exact over each window of 5+1+3 */
  static const uint32_t no_b[] = {0, 2, 3};
  int mismatched = 0;
  for (int r = 0; r < 50; r++) {
    uint32_t count[4] = {0};
    for (int k = 0; k < 9; k++)
      count[pick(H3G_BALANCE_ROUND_ROBIN, nodes, no_b, 3, 0, 0, &cursor)]++;
    mismatched += count[0] != 5 || count[1] != 0 || count[2] != 1 ||
                  count[3] != 3;
  }
  CHECK_EQ_INT(mismatched, 0);

  /* after a while with all four, then without a: close to 1:1:3 at once */
  make_nodes(nodes, w, 4);
  for (int k = 0; k < 37; k++)
    pick(H3G_BALANCE_ROUND_ROBIN, nodes, all, 4, 0, 0, &cursor);
  static const uint32_t no_a[] = {1, 2, 3};
  uint32_t count[4] = {0};
  for (int k = 0; k < 500; k++)
    count[pick(H3G_BALANCE_ROUND_ROBIN, nodes, no_a, 3, 0, 0, &cursor)]++;
  CHECK_EQ_INT(count[0], 0);
  CHECK(count[1] >= 98 && count[1] <= 102);
  CHECK(count[2] >= 98 && count[2] <= 102);
  CHECK(count[3] >= 298 && count[3] <= 302);

  /* one candidate: always it */
  static const uint32_t only_c[] = {2};
  for (int k = 0; k < 5; k++)
    CHECK_EQ_INT(pick(H3G_BALANCE_ROUND_ROBIN, nodes, only_c, 1, 0, 0, &cursor),
                 2);
}

/* The fewest requests in flight per unit of weight; ties rotate. */
static void test_least_conn(void) {
  static const uint32_t w[] = {1, 1, 1};
  h3g_balance_node nodes[3];
  make_nodes(nodes, w, 3);
  uint32_t cursor = 0;
  nodes[0].load = 3;
  nodes[1].load = 1;
  nodes[2].load = 2;
  for (int k = 0; k < 6; k++)
    CHECK_EQ_INT(pick(H3G_BALANCE_LEAST_CONN, nodes, all, 3, 0, 0, &cursor), 1);

  /* per weight: 6/3 = 2 beats 3/1 */
  static const uint32_t w2[] = {3, 1};
  make_nodes(nodes, w2, 2);
  nodes[0].load = 6;
  nodes[1].load = 3;
  for (int k = 0; k < 4; k++)
    CHECK_EQ_INT(pick(H3G_BALANCE_LEAST_CONN, nodes, all, 2, 0, 0, &cursor), 0);
  nodes[0].load = 7; /* 7/3 > 2/1 */
  nodes[1].load = 2;
  CHECK_EQ_INT(pick(H3G_BALANCE_LEAST_CONN, nodes, all, 2, 0, 0, &cursor), 1);

  /* ties rotate: idle servers share evenly */
  make_nodes(nodes, w, 3);
  uint32_t count[3] = {0};
  cursor = 0;
  for (int k = 0; k < 300; k++)
    count[pick(H3G_BALANCE_LEAST_CONN, nodes, all, 3, 0, 0, &cursor)]++;
  CHECK_EQ_INT(count[0], 100);
  CHECK_EQ_INT(count[1], 100);
  CHECK_EQ_INT(count[2], 100);
  /* a tie of two, with a third busier: the two alternate */
  nodes[1].load = 5;
  uint32_t seen[3] = {0};
  for (int k = 0; k < 100; k++)
    seen[pick(H3G_BALANCE_LEAST_CONN, nodes, all, 3, 0, 0, &cursor)]++;
  CHECK_EQ_INT(seen[1], 0);
  CHECK(seen[0] >= 33 && seen[2] >= 33);

  /* as the caller counts requests in flight: spread by weight */
  static const uint32_t w3[] = {1, 2, 1};
  make_nodes(nodes, w3, 3);
  for (int k = 0; k < 400; k++)
    nodes[pick(H3G_BALANCE_LEAST_CONN, nodes, all, 3, 0, 0, &cursor)].load++;
  CHECK_EQ_INT(nodes[0].load, 100);
  CHECK_EQ_INT(nodes[1].load, 200);
  CHECK_EQ_INT(nodes[2].load, 100);

  /* among candidates only */
  static const uint32_t no_0[] = {1, 2};
  nodes[0].load = 0;
  for (int k = 0; k < 4; k++)
    CHECK(pick(H3G_BALANCE_LEAST_CONN, nodes, no_0, 2, 0, 0, &cursor) != 0);
}

static uint64_t key_of(int i) {
  char k[32];
  snprintf(k, sizeof(k), "198.51.%d.%d", i / 256, i % 256);
  return h3g_balance_hash(k, strlen(k));
}

#define NKEYS 10000

/* A key stays on its server; keys spread by weight; removing a server
 * moves its keys only. */
static void test_hash(void) {
  static const uint32_t w[] = {1, 2, 3, 4};
  h3g_balance_node nodes[4];
  make_nodes(nodes, w, 4);
  uint32_t cursor = 0;
  static uint32_t owner[NKEYS];
  uint32_t count[4] = {0};
  for (int i = 0; i < NKEYS; i++) {
    owner[i] = pick(H3G_BALANCE_HASH, nodes, all, 4, 1, key_of(i), &cursor);
    count[owner[i]]++;
  }
  /* within 2% (of all keys) of the weight's share: 10, 20, 30, 40% */
  for (int s = 0; s < 4; s++) {
    int want = NKEYS * (int)w[s] / 10;
    CHECK(abs((int)count[s] - want) <= NKEYS / 50);
    if (abs((int)count[s] - want) > NKEYS / 50)
      fprintf(stderr, "  server %d: %u keys, expected about %d\n", s,
              count[s], want);
  }
  /* the same key, asked again (and after round robin picks), same server */
  int moved = 0;
  for (int i = 0; i < NKEYS; i += 7) {
    pick(H3G_BALANCE_ROUND_ROBIN, nodes, all, 4, 0, 0, &cursor);
    moved += pick(H3G_BALANCE_HASH, nodes, all, 4, 1, key_of(i), &cursor) !=
             owner[i];
  }
  CHECK_EQ_INT(moved, 0);

  /* each server out in turn: only its keys move, to the others */
  for (uint32_t out = 0; out < 4; out++) {
    uint32_t cand[3], nc = 0;
    for (uint32_t s = 0; s < 4; s++)
      if (s != out)
        cand[nc++] = s;
    int kept_moved = 0;
    uint32_t gained[4] = {0};
    for (int i = 0; i < NKEYS; i++) {
      uint32_t now = pick(H3G_BALANCE_HASH, nodes, cand, 3, 1, key_of(i),
                          &cursor);
      CHECK(now != out);
      if (owner[i] != out)
        kept_moved += now != owner[i];
      else
        gained[now]++;
    }
    CHECK_EQ_INT(kept_moved, 0);
    /* the orphans go to every other server, more to the heavier ones */
    for (uint32_t s = 0; s < 4; s++)
      if (s != out)
        CHECK(gained[s] > 0);
  }

  /* the order of the candidates does not matter */
  static const uint32_t reversed[] = {3, 2, 1, 0};
  moved = 0;
  for (int i = 0; i < NKEYS; i += 3)
    moved += pick(H3G_BALANCE_HASH, nodes, reversed, 4, 1, key_of(i),
                  &cursor) != owner[i];
  CHECK_EQ_INT(moved, 0);

  /* without a key: round robin, by weight */
  make_nodes(nodes, w, 4);
  uint32_t rr[4] = {0};
  for (int k = 0; k < 100; k++)
    rr[pick(H3G_BALANCE_HASH, nodes, all, 4, 0, key_of(k), &cursor)]++;
  CHECK_EQ_INT(rr[0], 10);
  CHECK_EQ_INT(rr[1], 20);
  CHECK_EQ_INT(rr[2], 30);
  CHECK_EQ_INT(rr[3], 40);
}

/* Equal weights: about a quarter each, and a hash spreads short keys. */
static void test_hash_equal_weights(void) {
  static const uint32_t w[] = {1, 1, 1, 1};
  h3g_balance_node nodes[4];
  make_nodes(nodes, w, 4);
  uint32_t cursor = 0, count[4] = {0};
  for (int i = 0; i < NKEYS; i++) {
    char k[16];
    snprintf(k, sizeof(k), "%d", i);
    count[pick(H3G_BALANCE_HASH, nodes, all, 4, 1,
               h3g_balance_hash(k, strlen(k)), &cursor)]++;
  }
  for (int s = 0; s < 4; s++)
    CHECK(abs((int)count[s] - NKEYS / 4) <= NKEYS / 50);
  CHECK(h3g_balance_hash("a", 1) != h3g_balance_hash("b", 1));
  CHECK(h3g_balance_hash("", 0) == h3g_balance_hash("", 0));
}

int main(void) {
  RUN(test_round_robin_interleaves);
  RUN(test_round_robin_shares);
  RUN(test_round_robin_without_one);
  RUN(test_least_conn);
  RUN(test_hash);
  RUN(test_hash_equal_weights);
  return unit_report();
}
