/*
 * Per-source handshake counts. The table is small (one entry per source
 * with a handshake in progress) and looked up once per Initial that could
 * start a connection, so the same probing scheme as cid_map serves well.
 */
#include "source_map.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "cid_map.h"

#define SOURCE_MAP_MIN_CAP 64

int h3g_source_key_of(h3g_source_key *k, const struct sockaddr *sa) {
  memset(k, 0, sizeof(*k));
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
    k->b[0] = 4;
    memcpy(k->b + 1, &in->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 =
        (const struct sockaddr_in6 *)(const void *)sa;
    const uint8_t *a = in6->sin6_addr.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      k->b[0] = 4;
      memcpy(k->b + 1, a + 12, 4);
    } else {
      k->b[0] = 6;
      memcpy(k->b + 1, a, 8); /* the /64 prefix */
    }
    return 0;
  }
  return H3G_ERR_INVAL;
}

int h3g_source_map_init(h3g_source_map *m, const uint8_t key[16]) {
  *m = (h3g_source_map){
      .slots = calloc(SOURCE_MAP_MIN_CAP, sizeof(h3g_source_slot)),
      .cap = SOURCE_MAP_MIN_CAP,
  };
  h3g_siphash_key(key, &m->k0, &m->k1);
  return m->slots != NULL ? 0 : H3G_ERR_NOMEM;
}

void h3g_source_map_free(h3g_source_map *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = 0;
  m->count = 0;
}

static uint64_t key_hash(const h3g_source_map *m, const h3g_source_key *k) {
  return h3g_siphash24(m->k0, m->k1, k->b, sizeof(k->b));
}

/* Index of k's slot, or of the empty slot where it would go. */
static size_t find_slot(const h3g_source_map *m, const h3g_source_key *k,
                        uint64_t hash) {
  size_t mask = m->cap - 1;
  size_t i = (size_t)hash & mask;

  for (;;) {
    const h3g_source_slot *s = &m->slots[i];
    if (s->count == 0 ||
        (s->hash == hash && memcmp(s->key.b, k->b, sizeof(k->b)) == 0))
      return i;
    i = (i + 1) & mask;
  }
}

static int grow(h3g_source_map *m) {
  size_t ncap = m->cap * 2;
  h3g_source_slot *nslots = calloc(ncap, sizeof(*nslots));
  if (nslots == NULL)
    return H3G_ERR_NOMEM;

  for (size_t i = 0; i < m->cap; i++) {
    const h3g_source_slot *s = &m->slots[i];
    if (s->count == 0)
      continue;
    size_t j = (size_t)s->hash & (ncap - 1);
    while (nslots[j].count != 0)
      j = (j + 1) & (ncap - 1);
    nslots[j] = *s;
  }
  free(m->slots);
  m->slots = nslots;
  m->cap = ncap;
  return 0;
}

uint32_t h3g_source_map_get(const h3g_source_map *m, const h3g_source_key *k) {
  if (m->count == 0)
    return 0;
  return m->slots[find_slot(m, k, key_hash(m, k))].count;
}

int h3g_source_map_inc(h3g_source_map *m, const h3g_source_key *k) {
  uint64_t hash = key_hash(m, k);
  h3g_source_slot *s = &m->slots[find_slot(m, k, hash)];
  if (s->count > 0) {
    s->count++;
    return 0;
  }
  if ((m->count + 1) * 2 > m->cap) {
    int rv = grow(m);
    if (rv != 0)
      return rv;
    s = &m->slots[find_slot(m, k, hash)];
  }
  s->hash = hash;
  s->key = *k;
  s->count = 1;
  m->count++;
  return 0;
}

int h3g_source_map_dec(h3g_source_map *m, const h3g_source_key *k) {
  if (m->count == 0)
    return 0;
  size_t mask = m->cap - 1;
  size_t hole = find_slot(m, k, key_hash(m, k));
  if (m->slots[hole].count == 0)
    return 0;
  if (--m->slots[hole].count > 0)
    return 1;

  /* Backward-shift deletion, as in cid_map: move back every entry of the
   * cluster whose home slot does not lie cyclically in (hole, j]. */
  for (size_t j = (hole + 1) & mask; m->slots[j].count != 0;
       j = (j + 1) & mask) {
    size_t home = (size_t)m->slots[j].hash & mask;
    int stays =
        hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole].count = 0;
  m->count--;
  return 1;
}
