/*
 * Wait queue: see wait_queue.h for the serving order.
 *
 * A group record holds one FIFO per urgency and sits on the turn ring
 * while it has entries. Records are found by key in a chained hash table
 * that doubles when it holds more records than slots; a group that empties
 * is unhashed at once (client connections come and go, so keys are not
 * reused in a meaningful way) and its record kept on a short free list,
 * because with one request in flight per client the same record would
 * otherwise be allocated and freed for every request.
 */
#include "wait_queue.h"

#include <assert.h>
#include <stdlib.h>

/* Group records kept for reuse. */
#define SPARE_MAX 64
#define TABLE_MIN 16

struct h3g_waitq_group {
  const void *key;
  h3g_waitq_group *hnext;         /* hash chain; free list link */
  h3g_waitq_group *rprev, *rnext; /* turn ring */
  struct {
    h3g_waitq_entry *head, *tail;
  } bucket[H3G_URGENCY_LEVELS];
  uint8_t mask; /* bit u set: bucket[u] is not empty */
  size_t n;
};

static size_t key_hash(const void *key, size_t tsize) {
  uint64_t h = (uint64_t)(uintptr_t)key;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return (size_t)h & (tsize - 1);
}

void h3g_waitq_init(h3g_waitq *q) {
  *q = (h3g_waitq){0};
}

void h3g_waitq_free(h3g_waitq *q) {
  for (size_t i = 0; i < q->tsize; i++) {
    h3g_waitq_group *g = q->table[i];
    while (g != NULL) {
      h3g_waitq_group *next = g->hnext;
      free(g);
      g = next;
    }
  }
  free(q->table);
  while (q->spare != NULL) {
    h3g_waitq_group *next = q->spare->hnext;
    free(q->spare);
    q->spare = next;
  }
  *q = (h3g_waitq){0};
}

/* ---- group records ---- */

static h3g_waitq_group *group_find(const h3g_waitq *q, const void *key) {
  if (q->tsize == 0)
    return NULL;
  h3g_waitq_group *g = q->table[key_hash(key, q->tsize)];
  while (g != NULL && g->key != key)
    g = g->hnext;
  return g;
}

static int table_grow(h3g_waitq *q) {
  size_t nsize = q->tsize ? q->tsize * 2 : TABLE_MIN;
  h3g_waitq_group **nt = calloc(nsize, sizeof(*nt));
  if (nt == NULL)
    return H3G_ERR_NOMEM;
  for (size_t i = 0; i < q->tsize; i++) {
    h3g_waitq_group *g = q->table[i];
    while (g != NULL) {
      h3g_waitq_group *next = g->hnext;
      size_t j = key_hash(g->key, nsize);
      g->hnext = nt[j];
      nt[j] = g;
      g = next;
    }
  }
  free(q->table);
  q->table = nt;
  q->tsize = nsize;
  return 0;
}

/* A new, empty record for key, hashed but not on the ring. */
static h3g_waitq_group *group_new(h3g_waitq *q, const void *key) {
  if (q->ngroups >= q->tsize && table_grow(q) != 0 && q->tsize == 0)
    return NULL; /* a full table still works, with longer chains */
  h3g_waitq_group *g = q->spare;
  if (g != NULL) {
    q->spare = g->hnext;
    q->nspare--;
  } else if ((g = malloc(sizeof(*g))) == NULL) {
    return NULL;
  }
  *g = (h3g_waitq_group){.key = key};
  size_t i = key_hash(key, q->tsize);
  g->hnext = q->table[i];
  q->table[i] = g;
  q->ngroups++;
  return g;
}

static void ring_insert(h3g_waitq *q, h3g_waitq_group *g, int first) {
  if (q->turn == NULL) {
    g->rprev = g->rnext = g;
    q->turn = g;
    return;
  }
  /* The ring's back is just before the group whose turn it is. */
  h3g_waitq_group *next = q->turn, *prev = next->rprev;
  g->rprev = prev;
  g->rnext = next;
  prev->rnext = g;
  next->rprev = g;
  if (first)
    q->turn = g;
}

/* g has no entries left: off the ring, out of the table, recycled. */
static void group_release(h3g_waitq *q, h3g_waitq_group *g) {
  assert(g->n == 0);
  if (g->rnext == g) {
    q->turn = NULL;
  } else {
    g->rprev->rnext = g->rnext;
    g->rnext->rprev = g->rprev;
    if (q->turn == g)
      q->turn = g->rnext;
  }
  h3g_waitq_group **pp = &q->table[key_hash(g->key, q->tsize)];
  while (*pp != g)
    pp = &(*pp)->hnext;
  *pp = g->hnext;
  q->ngroups--;
  if (q->nspare < SPARE_MAX) {
    g->hnext = q->spare;
    q->spare = g;
    q->nspare++;
  } else {
    free(g);
  }
}

/* ---- buckets ---- */

/* Links e into g's bucket for e->urgency: first, or after the last entry
 * that arrived no later than e. */
static void bucket_link(h3g_waitq_group *g, h3g_waitq_entry *e, int front) {
  unsigned u = e->urgency;
  h3g_waitq_entry *after = NULL;
  if (!front) {
    after = g->bucket[u].tail;
    while (after != NULL && after->since > e->since)
      after = after->uprev;
  }
  e->uprev = after;
  e->unext = after != NULL ? after->unext : g->bucket[u].head;
  if (e->unext != NULL)
    e->unext->uprev = e;
  else
    g->bucket[u].tail = e;
  if (after != NULL)
    after->unext = e;
  else
    g->bucket[u].head = e;
  g->mask |= (uint8_t)(1u << u);
}

static void bucket_unlink(h3g_waitq_group *g, h3g_waitq_entry *e) {
  unsigned u = e->urgency;
  if (e->uprev != NULL)
    e->uprev->unext = e->unext;
  else
    g->bucket[u].head = e->unext;
  if (e->unext != NULL)
    e->unext->uprev = e->uprev;
  else
    g->bucket[u].tail = e->uprev;
  e->uprev = e->unext = NULL;
  if (g->bucket[u].head == NULL)
    g->mask &= (uint8_t) ~(1u << u);
}

/* ---- operations ---- */

int h3g_waitq_push(h3g_waitq *q, h3g_waitq_entry *e, const void *key,
                   unsigned urgency, uint64_t since, int front) {
  if (e->queued || key == NULL)
    return H3G_ERR_INVAL;
  h3g_waitq_group *g = group_find(q, key);
  int fresh = g == NULL;
  if (fresh && (g = group_new(q, key)) == NULL)
    return H3G_ERR_NOMEM;
  if (fresh)
    ring_insert(q, g, front);

  e->group = g;
  e->since = since;
  e->urgency = (uint8_t)(urgency < H3G_URGENCY_LEVELS ? urgency
                                                      : H3G_URGENCY_LEVELS - 1);
  e->queued = 1;
  bucket_link(g, e, front);
  g->n++;

  if (front) {
    e->aprev = NULL;
    e->anext = q->ahead;
    if (q->ahead != NULL)
      q->ahead->aprev = e;
    else
      q->atail = e;
    q->ahead = e;
  } else {
    e->anext = NULL;
    e->aprev = q->atail;
    if (q->atail != NULL)
      q->atail->anext = e;
    else
      q->ahead = e;
    q->atail = e;
  }
  q->len++;
  return 0;
}

void h3g_waitq_remove(h3g_waitq *q, h3g_waitq_entry *e) {
  if (!e->queued)
    return;
  h3g_waitq_group *g = e->group;
  bucket_unlink(g, e);
  if (e->aprev != NULL)
    e->aprev->anext = e->anext;
  else
    q->ahead = e->anext;
  if (e->anext != NULL)
    e->anext->aprev = e->aprev;
  else
    q->atail = e->aprev;
  e->aprev = e->anext = NULL;
  e->group = NULL;
  e->queued = 0;
  q->len--;
  if (--g->n == 0)
    group_release(q, g);
}

h3g_waitq_entry *h3g_waitq_peek(const h3g_waitq *q) {
  const h3g_waitq_group *g = q->turn;
  if (g == NULL)
    return NULL;
  assert(g->mask != 0);
  return g->bucket[__builtin_ctz(g->mask)].head;
}

h3g_waitq_entry *h3g_waitq_pop(h3g_waitq *q) {
  h3g_waitq_entry *e = h3g_waitq_peek(q);
  if (e == NULL)
    return NULL;
  /* The group had its turn: the next group is up, whether or not this one
   * stays on the ring. */
  q->turn = q->turn->rnext;
  h3g_waitq_remove(q, e);
  return e;
}

void h3g_waitq_set_urgency(h3g_waitq *q, h3g_waitq_entry *e, unsigned urgency) {
  H3G_UNUSED(q);
  if (!e->queued)
    return;
  if (urgency >= H3G_URGENCY_LEVELS)
    urgency = H3G_URGENCY_LEVELS - 1;
  if (urgency == e->urgency)
    return;
  bucket_unlink(e->group, e);
  e->urgency = (uint8_t)urgency;
  bucket_link(e->group, e, 0);
}
