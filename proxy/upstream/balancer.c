/* Server choice: see balancer.h. */
#include "balancer.h"

#include <math.h>

uint64_t h3g_balance_hash(const void *data, size_t n) {
  uint64_t h = h3g_fnv1a(data, n);
  /* FNV's low bits mix poorly for short keys: finish with a 64-bit mixer
   * (the one of splitmix64). */
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

static size_t pick_round_robin(h3g_balance_node *nodes, const uint32_t *cand,
                               size_t ncand) {
  int64_t total = 0;
  size_t best = 0;
  for (size_t i = 0; i < ncand; i++) {
    h3g_balance_node *n = &nodes[cand[i]];
    n->current += n->weight;
    total += n->weight;
    if (n->current > nodes[cand[best]].current)
      best = i;
  }
  nodes[cand[best]].current -= total;
  return best;
}

static size_t pick_least_conn(h3g_balance_node *nodes, const uint32_t *cand,
                              size_t ncand, uint32_t *cursor) {
  size_t start = *cursor % ncand, best = start;
  for (size_t k = 1; k < ncand; k++) {
    size_t i = (start + k) % ncand;
    const h3g_balance_node *a = &nodes[cand[i]], *b = &nodes[cand[best]];
    /* a->load / a->weight < b->load / b->weight, without division. */
    if (a->load * b->weight < b->load * a->weight)
      best = i;
  }
  (*cursor)++;
  return best;
}

static size_t pick_hash(const h3g_balance_node *nodes, const uint32_t *cand,
                        size_t ncand, uint64_t key) {
  size_t best = 0;
  double best_score = -1;
  for (size_t i = 0; i < ncand; i++) {
    const h3g_balance_node *n = &nodes[cand[i]];
    uint64_t pair[2] = {key, n->id};
    uint64_t h = h3g_balance_hash(pair, sizeof(pair));
    /* u in (0, 1); -w / ln(u) is the weighted rendezvous score. */
    double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;
    double score = -(double)n->weight / log(u);
    if (score > best_score) {
      best_score = score;
      best = i;
    }
  }
  return best;
}

size_t h3g_balance_pick(h3g_balance algo, h3g_balance_node *nodes,
                        const uint32_t *cand, size_t ncand, int has_hash,
                        uint64_t key, uint32_t *cursor) {
  if (ncand <= 1)
    return 0;
  switch (algo) {
  case H3G_BALANCE_LEAST_CONN:
    return pick_least_conn(nodes, cand, ncand, cursor);
  case H3G_BALANCE_HASH:
    if (has_hash)
      return pick_hash(nodes, cand, ncand, key);
    return pick_round_robin(nodes, cand, ncand);
  case H3G_BALANCE_ROUND_ROBIN: break;
  }
  return pick_round_robin(nodes, cand, ncand);
}
