/*
 * The ring keeps absolute 64-bit positions (they never wrap in practice:
 * 2^64 bytes). Chunk k of the circular slot array (counted from first)
 * holds positions [base + k * CHUNK, base + (k + 1) * CHUNK); chunks that
 * hold no byte between tail and head are given back, so at most
 * ceil(len / CHUNK) + 1 chunks are held.
 *
 * The pool keeps up to POOL_MAX chunks for reuse: streams come and go
 * faster than malloc likes, and a busy gateway reuses the same few
 * megabytes. Beyond that, chunks go back to the C library.
 */
#include "buf.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define CHUNK ((size_t)H3G_RING_CHUNK)
/* 8 MiB of chunks kept for reuse at most. */
#define POOL_MAX 256

static uint8_t *pool[POOL_MAX];
static size_t npool;
static size_t in_use;

static uint8_t *chunk_get(void) {
  uint8_t *c;
  if (npool > 0) {
    c = pool[--npool];
    H3G_DEC(buffer_chunks_pooled);
  } else {
    c = malloc(CHUNK);
  }
  if (c != NULL) {
    in_use++;
    H3G_INC(buffer_chunks_active);
  }
  return c;
}

static void chunk_put(uint8_t *c) {
  in_use--;
  H3G_DEC(buffer_chunks_active);
  if (npool < POOL_MAX) {
    pool[npool++] = c;
    H3G_INC(buffer_chunks_pooled);
  } else {
    free(c);
  }
}

size_t h3g_ring_chunks_in_use(void) {
  return in_use;
}

size_t h3g_ring_chunks_pooled(void) {
  return npool;
}

void h3g_ring_pool_trim(void) {
  while (npool > 0)
    free(pool[--npool]);
  h3g_stats.buffer_chunks_pooled = 0;
}

void h3g_ring_init(h3g_ring *r, size_t cap) {
  *r = (h3g_ring){.cap = cap};
}

void h3g_ring_set_inflight(h3g_ring *r, size_t allowance) {
  r->inflight = allowance;
}

static uint8_t **slot(const h3g_ring *r, size_t k) {
  return &r->chunks[(r->first + k) & (r->nslots - 1)];
}

void h3g_ring_free(h3g_ring *r) {
  if (r == NULL)
    return;
  for (size_t k = 0; k < r->nchunks; k++)
    chunk_put(*slot(r, k));
  free(r->chunks);
  size_t cap = r->cap, inflight = r->inflight;
  *r = (h3g_ring){.cap = cap, .inflight = inflight};
}

/* Appends a chunk for positions from base + nchunks * CHUNK. */
static int push_chunk(h3g_ring *r) {
  if (r->nchunks == r->nslots) {
    size_t n = r->nslots ? r->nslots * 2 : 4;
    uint8_t **s = malloc(n * sizeof(*s));
    if (s == NULL)
      return H3G_ERR_NOMEM;
    for (size_t k = 0; k < r->nchunks; k++)
      s[k] = *slot(r, k);
    free(r->chunks);
    r->chunks = s;
    r->nslots = n;
    r->first = 0;
  }
  uint8_t *c = chunk_get();
  if (c == NULL)
    return H3G_ERR_NOMEM;
  *slot(r, r->nchunks) = c;
  r->nchunks++;
  return 0;
}

/* Gives back the chunks wholly before tail and those that start at or
 * after head (they hold no byte: left by drop_unsent, or by a reserve
 * whose read brought nothing). An empty ring holds no chunk. */
static void trim(h3g_ring *r) {
  if (r->tail == r->head) {
    while (r->nchunks > 0) {
      r->nchunks--;
      chunk_put(*slot(r, r->nchunks));
    }
    r->base = r->head;
    return;
  }
  while (r->nchunks > 0 && r->base + CHUNK <= r->tail) {
    chunk_put(*slot(r, 0));
    r->first = (r->first + 1) & (r->nslots - 1);
    r->nchunks--;
    r->base += CHUNK;
  }
  while (r->nchunks > 0 && r->base + (r->nchunks - 1) * CHUNK >= r->head) {
    r->nchunks--;
    chunk_put(*slot(r, r->nchunks));
  }
  if (r->nchunks == 0)
    r->base = r->head;
}

/* The byte at position pos (base <= pos < base + nchunks * CHUNK). */
static uint8_t *at(const h3g_ring *r, uint64_t pos) {
  uint64_t rel = pos - r->base;
  return *slot(r, (size_t)(rel / CHUNK)) + (size_t)(rel % CHUNK);
}

int h3g_ring_reserve(h3g_ring *r, uint8_t **p, size_t *len) {
  size_t space = h3g_ring_space(r);
  *p = NULL;
  *len = 0;
  if (space == 0)
    return 0;
  if (r->nchunks == 0)
    r->base = r->head;
  if (r->head == r->base + r->nchunks * CHUNK) {
    int rv = push_chunk(r);
    if (rv != 0)
      return rv;
  }
  size_t off = (size_t)((r->head - r->base) % CHUNK);
  *p = at(r, r->head);
  *len = H3G_MIN(space, CHUNK - off);
  return 0;
}

void h3g_ring_commit(h3g_ring *r, size_t n) {
  r->head += n;
}

void h3g_ring_commit_from(h3g_ring *r, const uint8_t *p, size_t n) {
  if (n == 0)
    return;
  uint8_t *dst = at(r, r->head);
  if (p != dst)
    memmove(dst, p, n);
  r->head += n;
}

int h3g_ring_write(h3g_ring *r, const uint8_t *data, size_t len) {
  if (len > h3g_ring_space(r))
    return H3G_ERR_TOOBIG;
  while (len > 0) {
    uint8_t *p;
    size_t n;
    int rv = h3g_ring_reserve(r, &p, &n);
    if (rv != 0)
      return rv;
    assert(n > 0);
    n = H3G_MIN(n, len);
    memcpy(p, data, n);
    r->head += n;
    data += n;
    len -= n;
  }
  return 0;
}

size_t h3g_ring_peek(const h3g_ring *r, size_t max, h3g_iovec *v, size_t nv) {
  size_t avail = H3G_MIN(h3g_ring_unsent(r), max);
  uint64_t pos = r->sent;
  size_t i = 0;
  while (avail > 0 && i < nv) {
    size_t off = (size_t)((pos - r->base) % CHUNK);
    size_t n = H3G_MIN(avail, CHUNK - off);
    v[i++] = (h3g_iovec){at(r, pos), n};
    pos += n;
    avail -= n;
  }
  return i;
}

size_t h3g_ring_take(h3g_ring *r, size_t max, h3g_iovec *v, size_t nv) {
  size_t n = h3g_ring_peek(r, max, v, nv);
  for (size_t i = 0; i < n; i++)
    r->sent += v[i].len;
  return n;
}

void h3g_ring_skip(h3g_ring *r, size_t n) {
  r->sent += n;
}

void h3g_ring_drop_unsent(h3g_ring *r) {
  r->head = r->sent;
  trim(r);
}

void h3g_ring_release(h3g_ring *r, size_t n) {
  r->tail += n;
  trim(r);
}
