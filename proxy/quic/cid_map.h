/*
 * The connection-ID table of one QUIC listener: every connection ID a
 * connection has issued, and the client's original destination connection ID
 * while the handshake runs, maps to that connection, so each datagram finds
 * its connection by the destination connection ID in its header.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones, so lookups never slow down as connections come and go). Keys
 * are hashed with SipHash-2-4 under a random per-table key: clients choose
 * their initial destination connection IDs, and a predictable hash would let
 * them aim collisions at one bucket.
 *
 * The table grows (doubling) when it becomes more than half full; that is
 * the only allocation after h3g_cid_map_init, and it happens per new
 * connection ID, never per packet.
 *
 * A leaf module: depends only on common.h.
 */
#ifndef H3G_CID_MAP_H
#define H3G_CID_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* The longest connection ID QUIC v1 allows (RFC 9000 §17.2). */
#define H3G_CID_MAX 20

typedef struct h3g_cid_slot {
  void *value; /* NULL: the slot is empty */
  uint64_t hash;
  uint8_t len;
  uint8_t cid[H3G_CID_MAX];
} h3g_cid_slot;

typedef struct h3g_cid_map {
  h3g_cid_slot *slots;
  size_t cap; /* a power of two */
  size_t count;
  uint64_t k0, k1; /* SipHash key */
} h3g_cid_map;

/*
 * Prepares an empty table hashed under key (16 random bytes). Returns 0 or
 * H3G_ERR_NOMEM.
 */
int h3g_cid_map_init(h3g_cid_map *m, const uint8_t key[16]);

/* Releases the table. Safe on a zeroed or already freed table. */
void h3g_cid_map_free(h3g_cid_map *m);

/*
 * Maps cid to value, replacing an existing mapping of cid. Refuses
 * (H3G_ERR_INVAL) a cid longer than H3G_CID_MAX or a NULL value. Returns 0,
 * H3G_ERR_INVAL or H3G_ERR_NOMEM (the table could not grow; nothing
 * changed).
 */
int h3g_cid_map_put(h3g_cid_map *m, const uint8_t *cid, size_t cidlen,
                    void *value);

/* Returns the value cid maps to, or NULL. */
void *h3g_cid_map_get(const h3g_cid_map *m, const uint8_t *cid, size_t cidlen);

/*
 * Removes the mapping of cid if it maps to owner (any value when owner is
 * NULL). Returns 1 if a mapping was removed, 0 otherwise.
 */
int h3g_cid_map_remove(h3g_cid_map *m, const uint8_t *cid, size_t cidlen,
                       const void *owner);

/* The SipHash key (k0, k1) of 16 key bytes (little endian, as the
 * reference implementation reads them); for every table keyed like this. */
void h3g_siphash_key(const uint8_t key[16], uint64_t *k0, uint64_t *k1);

/* SipHash-2-4 of data under (k0, k1), exposed for tests. */
uint64_t h3g_siphash24(uint64_t k0, uint64_t k1, const uint8_t *data,
                       size_t len);

#endif /* H3G_CID_MAP_H */
