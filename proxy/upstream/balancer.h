/*
 * Choosing one server among those that may serve ([upstream NAME]
 * balance). Pure functions over a small state array: no I/O, no clock, so
 * unit tests drive them directly.
 *
 * round_robin: smooth weighted round robin. Each pick adds every
 * candidate's weight to its running score, takes the highest and takes
 * the candidates' total weight off the winner: over any window of
 * sum(weights) picks each server gets exactly its weight, interleaved
 * (a weight 5:1:1 group goes a a b a c a a, not a a a a a b c).
 *
 * least_conn: the fewest requests in flight per unit of weight; ties go
 * round robin, so idle servers share the load evenly.
 *
 * hash: rendezvous (highest random weight) hashing: each (key, server)
 * pair gets a score, scaled by weight, and the best candidate wins. A key
 * stays on its server while it serves; when a server goes, only its keys
 * move, each to its second-best server.
 */
#ifndef H3G_BALANCER_H
#define H3G_BALANCER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct h3g_balance_node {
  uint32_t weight;   /* >= 1 */
  int64_t current;   /* round robin's running score (balancer's) */
  uint64_t load;     /* least_conn: requests in flight, set by the caller */
  uint64_t id;       /* hash: the server's identity (hash of its address) */
} h3g_balance_node;

/*
 * Picks one of the ncand candidates (indices into nodes; ncand >= 1) and
 * returns its position in cand. has_hash and key are used by
 * H3G_BALANCE_HASH only (without a key it balances round robin); *cursor
 * is the tie-breaker state of least_conn (the caller keeps it, zeroed
 * once).
 */
size_t h3g_balance_pick(h3g_balance algo, h3g_balance_node *nodes,
                        const uint32_t *cand, size_t ncand, int has_hash,
                        uint64_t key, uint32_t *cursor);

/* A 64-bit hash of n bytes (FNV-1a, then mixed), for keys and ids. */
uint64_t h3g_balance_hash(const void *data, size_t n);

#endif /* H3G_BALANCER_H */
