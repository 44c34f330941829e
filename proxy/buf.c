/*
 * The ring keeps absolute 64-bit positions; the offset in storage is the
 * position modulo cap. Positions never wrap in practice (2^64 bytes).
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void h3g_ring_init(h3g_ring *r, size_t cap) {
  *r = (h3g_ring){.cap = cap};
}

void h3g_ring_free(h3g_ring *r) {
  if (r == NULL)
    return;
  free(r->data);
  r->data = NULL;
  r->tail = r->sent = r->head = 0;
}

static size_t ring_off(const h3g_ring *r, uint64_t pos) {
  return (size_t)(pos % r->cap);
}

int h3g_ring_reserve(h3g_ring *r, uint8_t **p, size_t *len) {
  if (r->data == NULL) {
    r->data = malloc(r->cap);
    if (r->data == NULL)
      return H3G_ERR_NOMEM;
  }
  size_t space = h3g_ring_space(r);
  size_t off = ring_off(r, r->head);
  size_t contig = r->cap - off;
  *p = r->data + off;
  *len = H3G_MIN(space, contig);
  return 0;
}

void h3g_ring_commit(h3g_ring *r, size_t n) { r->head += n; }

void h3g_ring_commit_from(h3g_ring *r, const uint8_t *p, size_t n) {
  uint8_t *dst = r->data + ring_off(r, r->head);
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
    n = H3G_MIN(n, len);
    memcpy(p, data, n);
    r->head += n;
    data += n;
    len -= n;
  }
  return 0;
}

size_t h3g_ring_peek(const h3g_ring *r, size_t max, const uint8_t **p1,
                     size_t *l1, const uint8_t **p2, size_t *l2) {
  size_t avail = H3G_MIN(h3g_ring_unsent(r), max);
  *l1 = *l2 = 0;
  if (avail == 0)
    return 0;
  size_t off = ring_off(r, r->sent);
  size_t first = H3G_MIN(avail, r->cap - off);
  *p1 = r->data + off;
  *l1 = first;
  if (first == avail)
    return 1;
  *p2 = r->data;
  *l2 = avail - first;
  return 2;
}

size_t h3g_ring_take(h3g_ring *r, size_t max, const uint8_t **p1, size_t *l1,
                     const uint8_t **p2, size_t *l2) {
  size_t n = h3g_ring_peek(r, max, p1, l1, p2, l2);
  r->sent += *l1 + *l2;
  return n;
}

void h3g_ring_skip(h3g_ring *r, size_t n) { r->sent += n; }

void h3g_ring_drop_unsent(h3g_ring *r) { r->head = r->sent; }

void h3g_ring_release(h3g_ring *r, size_t n) {
  r->tail += n;
  /* An empty ring restarts at offset 0 so the next reserve gets the whole
   * storage as one contiguous region (fewer, larger reads). */
  if (r->tail == r->head && r->sent == r->head) {
    r->tail = r->sent = r->head = 0;
  }
}
