/*
 * Handshakes in progress per client source, for the QUIC listener's
 * [listener] max_handshakes_per_source limit.
 *
 * A source is an IPv4 address (/32) or an IPv6 /64 prefix: one IPv6 host
 * usually owns a whole /64 and can pick a fresh address in it for every
 * connection, so counting full IPv6 addresses would limit nothing. An
 * IPv4-mapped IPv6 address (a dual-stack socket) counts as its IPv4
 * address. Ports are ignored.
 *
 * Open addressing with linear probing and backward-shift deletion, like
 * cid_map (whose SipHash-2-4 it uses, under its own random key: clients
 * choose their source addresses within their prefixes). An entry exists
 * only while its count is above zero, so the table holds at most one entry
 * per handshake in progress. It grows (doubling) when more than half full,
 * which happens on h3g_source_map_inc (one per accepted connection), never
 * on a lookup.
 *
 * A leaf module: depends only on common.h and cid_map.h.
 */
#ifndef H3G_SOURCE_MAP_H
#define H3G_SOURCE_MAP_H

#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "common.h"

/* A family byte (4 or 6) and the address's first 4 or 8 bytes. */
#define H3G_SOURCE_KEYLEN 9

typedef struct h3g_source_key {
  uint8_t b[H3G_SOURCE_KEYLEN];
} h3g_source_key;

typedef struct h3g_source_slot {
  uint64_t hash;
  uint32_t count; /* 0: the slot is empty */
  h3g_source_key key;
} h3g_source_slot;

typedef struct h3g_source_map {
  h3g_source_slot *slots;
  size_t cap;      /* a power of two */
  size_t count;    /* sources with a count above zero */
  uint64_t k0, k1; /* SipHash key */
} h3g_source_map;

/*
 * The source of address sa (AF_INET or AF_INET6). Returns 0, or
 * H3G_ERR_INVAL for another family (*k is then zeroed: all such addresses
 * share one key).
 */
int h3g_source_key_of(h3g_source_key *k, const struct sockaddr *sa);

/* Prepares an empty table hashed under key (16 random bytes). Returns 0 or
 * H3G_ERR_NOMEM. */
int h3g_source_map_init(h3g_source_map *m, const uint8_t key[16]);

/* Releases the table. Safe on a zeroed or already freed table. */
void h3g_source_map_free(h3g_source_map *m);

/* The count of k (0 when k has no entry). */
uint32_t h3g_source_map_get(const h3g_source_map *m, const h3g_source_key *k);

/* Adds one to k's count, creating its entry. Returns 0, or H3G_ERR_NOMEM
 * (the table could not grow; nothing changed). */
int h3g_source_map_inc(h3g_source_map *m, const h3g_source_key *k);

/* Takes one from k's count and removes the entry at zero. Returns 1, or 0
 * when k has no entry (nothing changed). */
int h3g_source_map_dec(h3g_source_map *m, const h3g_source_key *k);

#endif /* H3G_SOURCE_MAP_H */
