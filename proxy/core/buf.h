/*
 * Byte queue with a hard cap, stored in fixed-size chunks that are taken
 * from a small process-wide pool as bytes arrive and given back as they are
 * released. A full queue refuses more (the producer pauses).
 *
 * Three positions split the bytes: [tail, sent) were handed to a consumer
 * that still holds them (e.g. nghttp3 until the peer acknowledges them, or
 * libuv until a write completes); [sent, head) are waiting to be handed out.
 * The cap bounds the bytes held, except that a consumer which must keep
 * what it was handed for a while (QUIC keeps stream data until it is
 * acknowledged, where TCP's kernel buffer would) can be given an in-flight
 * allowance: up to that many handed-out bytes do not count against the cap.
 * Memory then follows what is really held, chunk by chunk: a queue that
 * drains returns its chunks at once.
 *
 * Everything runs on one thread (the pool is not locked). A leaf module.
 */
#ifndef H3G_BUF_H
#define H3G_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Bytes per chunk. A region given by reserve() or a vector given by
 * take() never crosses a chunk. */
#define H3G_RING_CHUNK (32 * 1024)

typedef struct h3g_ring {
  uint8_t **chunks; /* circular array of nslots chunk pointers */
  size_t nslots;    /* 0 or a power of two */
  size_t first;     /* slot of the chunk that holds position base */
  size_t nchunks;
  uint64_t base;   /* position of the first byte of the first chunk */
  size_t cap;      /* most bytes held, beyond the in-flight allowance */
  size_t inflight; /* handed-out bytes that do not count against cap */
  uint64_t tail;   /* released up to here */
  uint64_t sent;   /* handed out up to here */
  uint64_t head;   /* written up to here */
} h3g_ring;

/* Sets the cap; allocates nothing yet. */
void h3g_ring_init(h3g_ring *r, size_t cap);

/* Sets the in-flight allowance (0 by default). */
void h3g_ring_set_inflight(h3g_ring *r, size_t allowance);

/* Changes the cap (bytes already held stay, even above a lower cap). */
static inline void h3g_ring_set_cap(h3g_ring *r, size_t cap) {
  r->cap = cap;
}

/* Gives every chunk back. The ring may be used again (empty). */
void h3g_ring_free(h3g_ring *r);

static inline size_t h3g_ring_len(const h3g_ring *r) {
  return (size_t)(r->head - r->tail);
}
static inline size_t h3g_ring_unsent(const h3g_ring *r) {
  return (size_t)(r->head - r->sent);
}
/* How many more bytes may be written now. */
static inline size_t h3g_ring_space(const h3g_ring *r) {
  size_t out = (size_t)(r->sent - r->tail);
  size_t counted = h3g_ring_len(r) - (out < r->inflight ? out : r->inflight);
  return counted >= r->cap ? 0 : r->cap - counted;
}

/*
 * Returns in *p and *len the largest contiguous region at head that may be
 * written (0 when full; never past a chunk). Takes a chunk from the pool
 * when head is at a chunk's end. Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_ring_reserve(h3g_ring *r, uint8_t **p, size_t *len);

/* Marks n bytes written at the region given by reserve (n <= its len). */
void h3g_ring_commit(h3g_ring *r, size_t n);

/* Copies len bytes in; returns 0, H3G_ERR_TOOBIG (more than the space:
 * nothing copied) or H3G_ERR_NOMEM. */
int h3g_ring_write(h3g_ring *r, const uint8_t *data, size_t len);

/*
 * Fills at most nv vectors with unsent bytes, oldest first, max bytes in
 * all, and marks them sent. Returns the number of vectors used. The bytes
 * stay valid until released.
 */
size_t h3g_ring_take(h3g_ring *r, size_t max, h3g_iovec *v, size_t nv);

/* Like take, but leaves the bytes unsent. */
size_t h3g_ring_peek(const h3g_ring *r, size_t max, h3g_iovec *v, size_t nv);

/* Marks n unsent bytes as sent without looking at them. */
void h3g_ring_skip(h3g_ring *r, size_t n);

/* Forgets every unsent byte (head goes back to sent). */
void h3g_ring_drop_unsent(h3g_ring *r);

/* Releases n sent bytes (n <= sent - tail); chunks no longer needed go
 * back to the pool. */
void h3g_ring_release(h3g_ring *r, size_t n);

/*
 * Moves bytes at p (inside the region last reserved, at or after head) to
 * head and commits them. Used to drop framing bytes in place.
 */
void h3g_ring_commit_from(h3g_ring *r, const uint8_t *p, size_t n);

/* Chunks in use by all rings, and kept in the pool for reuse. */
size_t h3g_ring_chunks_in_use(void);
size_t h3g_ring_chunks_pooled(void);

/* Gives every pooled chunk back to the C library (e.g. when idle, so
 * that the allocator can return the memory to the system). */
void h3g_ring_pool_trim(void);

#endif /* H3G_BUF_H */
