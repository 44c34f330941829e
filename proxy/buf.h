/*
 * Fixed-capacity byte ring. Every ring gets its hard cap when it is created;
 * a full ring refuses more (the producer pauses), it never grows.
 *
 * Three positions split the bytes: [tail, sent) were handed to a consumer
 * that still holds them (e.g. nghttp3 until the peer acknowledges them, or
 * libuv until a write completes); [sent, head) are waiting to be handed out;
 * the rest is free. A leaf module.
 */
#ifndef H3G_BUF_H
#define H3G_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct h3g_ring {
  uint8_t *data; /* NULL until the first reserve (lazy) */
  size_t cap;
  uint64_t tail; /* released up to here */
  uint64_t sent; /* handed out up to here */
  uint64_t head; /* written up to here */
} h3g_ring;

/* Sets the capacity; allocates nothing yet. */
void h3g_ring_init(h3g_ring *r, size_t cap);
void h3g_ring_free(h3g_ring *r);

static inline size_t h3g_ring_len(const h3g_ring *r) {
  return (size_t)(r->head - r->tail);
}
static inline size_t h3g_ring_unsent(const h3g_ring *r) {
  return (size_t)(r->head - r->sent);
}
static inline size_t h3g_ring_space(const h3g_ring *r) {
  return r->cap - (size_t)(r->head - r->tail);
}

/*
 * Returns the largest contiguous free region at head in *p and *len (0 when
 * full). Allocates the storage on first use. Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_ring_reserve(h3g_ring *r, uint8_t **p, size_t *len);

/* Marks n bytes written at the region given by reserve (n <= its len). */
void h3g_ring_commit(h3g_ring *r, size_t n);

/* Copies len bytes in; returns 0 or H3G_ERR_TOOBIG (nothing copied). */
int h3g_ring_write(h3g_ring *r, const uint8_t *data, size_t len);

/*
 * Fills at most two regions with unsent bytes (max bytes in all) and marks
 * them sent. Returns the number of regions (0, 1 or 2).
 */
size_t h3g_ring_take(h3g_ring *r, size_t max, const uint8_t **p1, size_t *l1,
                     const uint8_t **p2, size_t *l2);

/* Like take, but leaves the bytes unsent. */
size_t h3g_ring_peek(const h3g_ring *r, size_t max, const uint8_t **p1,
                     size_t *l1, const uint8_t **p2, size_t *l2);

/* Marks n unsent bytes as sent without looking at them. */
void h3g_ring_skip(h3g_ring *r, size_t n);

/* Forgets every unsent byte (head goes back to sent). */
void h3g_ring_drop_unsent(h3g_ring *r);

/* Releases n sent bytes (n <= sent - tail). */
void h3g_ring_release(h3g_ring *r, size_t n);

/*
 * Moves bytes at p (inside the region last reserved, at or after head) to
 * head and commits them. Used to drop framing bytes in place.
 */
void h3g_ring_commit_from(h3g_ring *r, const uint8_t *p, size_t n);

#endif /* H3G_BUF_H */
