/*
 * Connection-ID table: linear probing keeps a lookup within one or two cache
 * lines for the usual 18-byte IDs, and the load factor stays at or below
 * one half, so probe sequences are short even before SipHash spreads keys.
 */
#include "cid_map.h"

#include <stdlib.h>
#include <string.h>

#define CID_MAP_MIN_CAP 64

static uint64_t rotl64(uint64_t x, unsigned b) {
  return (x << b) | (x >> (64 - b));
}

static uint64_t load_le64(const uint8_t *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
         (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = rotl64(v1, 13);                                                       \
    v1 ^= v0;                                                                  \
    v0 = rotl64(v0, 32);                                                       \
    v2 += v3;                                                                  \
    v3 = rotl64(v3, 16);                                                       \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = rotl64(v3, 21);                                                       \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = rotl64(v1, 17);                                                       \
    v1 ^= v2;                                                                  \
    v2 = rotl64(v2, 32);                                                       \
  } while (0)

uint64_t h3g_siphash24(uint64_t k0, uint64_t k1, const uint8_t *data,
                       size_t len) {
  uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
  uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
  uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
  uint64_t v3 = k1 ^ 0x7465646279746573ull;
  size_t whole = len - len % 8;
  uint64_t m;

  for (size_t i = 0; i < whole; i += 8) {
    m = load_le64(data + i);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }

  m = (uint64_t)(len & 0xff) << 56;
  for (size_t i = 0; i < len % 8; i++)
    m |= (uint64_t)data[whole + i] << (8 * i);
  v3 ^= m;
  SIPROUND;
  SIPROUND;
  v0 ^= m;

  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

void h3g_siphash_key(const uint8_t key[16], uint64_t *k0, uint64_t *k1) {
  *k0 = load_le64(key);
  *k1 = load_le64(key + 8);
}

int h3g_cid_map_init(h3g_cid_map *m, const uint8_t key[16]) {
  *m = (h3g_cid_map){
      .slots = calloc(CID_MAP_MIN_CAP, sizeof(h3g_cid_slot)),
      .cap = CID_MAP_MIN_CAP,
  };
  h3g_siphash_key(key, &m->k0, &m->k1);
  return m->slots != NULL ? 0 : H3G_ERR_NOMEM;
}

void h3g_cid_map_free(h3g_cid_map *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = 0;
  m->count = 0;
}

/* Index of cid's slot, or of the empty slot where it would go. */
static size_t find_slot(const h3g_cid_map *m, const uint8_t *cid, size_t len,
                        uint64_t hash) {
  size_t mask = m->cap - 1;
  size_t i = (size_t)hash & mask;

  for (;;) {
    const h3g_cid_slot *s = &m->slots[i];
    if (s->value == NULL ||
        (s->hash == hash && s->len == len && memcmp(s->cid, cid, len) == 0))
      return i;
    i = (i + 1) & mask;
  }
}

static int grow(h3g_cid_map *m) {
  size_t ncap = m->cap * 2;
  h3g_cid_slot *nslots = calloc(ncap, sizeof(*nslots));
  if (nslots == NULL)
    return H3G_ERR_NOMEM;

  for (size_t i = 0; i < m->cap; i++) {
    const h3g_cid_slot *s = &m->slots[i];
    if (s->value == NULL)
      continue;
    size_t j = (size_t)s->hash & (ncap - 1);
    while (nslots[j].value != NULL)
      j = (j + 1) & (ncap - 1);
    nslots[j] = *s;
  }
  free(m->slots);
  m->slots = nslots;
  m->cap = ncap;
  return 0;
}

int h3g_cid_map_put(h3g_cid_map *m, const uint8_t *cid, size_t cidlen,
                    void *value) {
  if (cidlen > H3G_CID_MAX || value == NULL)
    return H3G_ERR_INVAL;
  if ((m->count + 1) * 2 > m->cap) {
    int rv = grow(m);
    if (rv != 0)
      return rv;
  }

  uint64_t hash = h3g_siphash24(m->k0, m->k1, cid, cidlen);
  h3g_cid_slot *s = &m->slots[find_slot(m, cid, cidlen, hash)];
  if (s->value == NULL) {
    s->hash = hash;
    s->len = (uint8_t)cidlen;
    memcpy(s->cid, cid, cidlen);
    m->count++;
  }
  s->value = value;
  return 0;
}

void *h3g_cid_map_get(const h3g_cid_map *m, const uint8_t *cid, size_t cidlen) {
  if (cidlen > H3G_CID_MAX || m->count == 0)
    return NULL;
  uint64_t hash = h3g_siphash24(m->k0, m->k1, cid, cidlen);
  return m->slots[find_slot(m, cid, cidlen, hash)].value;
}

int h3g_cid_map_remove(h3g_cid_map *m, const uint8_t *cid, size_t cidlen,
                       const void *owner) {
  if (cidlen > H3G_CID_MAX || m->count == 0)
    return 0;

  uint64_t hash = h3g_siphash24(m->k0, m->k1, cid, cidlen);
  size_t mask = m->cap - 1;
  size_t hole = find_slot(m, cid, cidlen, hash);
  if (m->slots[hole].value == NULL ||
      (owner != NULL && m->slots[hole].value != owner))
    return 0;

  /* Backward-shift deletion: walk the cluster after the hole and move back
   * every entry whose home slot does not lie cyclically in (hole, j]. */
  for (size_t j = (hole + 1) & mask; m->slots[j].value != NULL;
       j = (j + 1) & mask) {
    size_t home = (size_t)m->slots[j].hash & mask;
    int stays =
        hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole].value = NULL;
  m->count--;
  return 1;
}
