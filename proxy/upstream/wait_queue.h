/*
 * The order in which requests waiting for an upstream connection are
 * served (RFC 9218 urgency, fairly across client connections).
 *
 * Each entry belongs to a group (the client connection it came from,
 * an opaque key) and has an urgency, 0 (most urgent) to 7. The next entry
 * served is chosen in two steps:
 *
 *   1. Groups take turns, round robin, in the order they first queued: a
 *      client that queued a hundred requests cannot push back another
 *      client's single one. Priorities only ever order requests of the
 *      same client, never one client against another (RFC 9218 §12).
 *   2. Within the group whose turn it is: the lowest urgency first, then
 *      arrival order. A page's HTML and CSS do not wait behind its images.
 *
 * Every entry is also on an arrival list, so the pool can expire the
 * longest-waiting entry first whatever the serving order.
 *
 * Entries are embedded in their owner's object; the queue allocates only
 * its per-group records (kept in a hash table, recycled through a small
 * free list). No I/O, no clock: the caller supplies arrival times.
 */
#ifndef H3G_WAIT_QUEUE_H
#define H3G_WAIT_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* RFC 9218 §4.1: urgencies 0..7, 3 when the client said nothing. */
#define H3G_URGENCY_LEVELS 8
#define H3G_URGENCY_DEFAULT 3

typedef struct h3g_waitq_group h3g_waitq_group;

/* Embedded in the waiting object. Every field is the queue's while the
 * entry is queued; zero it before first use. */
typedef struct h3g_waitq_entry {
  struct h3g_waitq_entry *aprev, *anext; /* arrival list */
  struct h3g_waitq_entry *uprev, *unext; /* its group's urgency bucket */
  h3g_waitq_group *group;
  uint64_t since; /* arrival time, the caller's unit */
  uint8_t urgency;
  uint8_t queued;
} h3g_waitq_entry;

typedef struct h3g_waitq {
  h3g_waitq_entry *ahead, *atail; /* arrival order */
  h3g_waitq_group *turn;          /* ring of groups with entries; next up */
  h3g_waitq_group **table;        /* hash of groups by key */
  size_t tsize;                   /* power of two, or 0 before first use */
  size_t ngroups;
  size_t len;
  h3g_waitq_group *spare; /* recycled group records */
  size_t nspare;
} h3g_waitq;

/* An empty queue. */
void h3g_waitq_init(h3g_waitq *q);

/* Frees the queue's own memory. Entries still queued are forgotten (their
 * owners must not use them with this queue again). */
void h3g_waitq_free(h3g_waitq *q);

/*
 * Queues e (not queued) for group key (any non-NULL pointer that identifies
 * the client connection) with the given urgency (values above 7 count as
 * 7) and arrival time since. front = 1 puts it first of its urgency in its
 * group and first on the arrival list, for an entry that is given back its
 * place (its group's turn comes first too if the group was empty). Returns 0,
 * H3G_ERR_INVAL (e already queued, key NULL) or H3G_ERR_NOMEM (no group
 * record); nothing is queued on error.
 */
int h3g_waitq_push(h3g_waitq *q, h3g_waitq_entry *e, const void *key,
                   unsigned urgency, uint64_t since, int front);

/* Removes and returns the entry to serve next (see above), or NULL when
 * the queue is empty. The group that was served goes to the back of the
 * turn order. */
h3g_waitq_entry *h3g_waitq_pop(h3g_waitq *q);

/* The entry h3g_waitq_pop() would return, left queued; NULL when empty. */
h3g_waitq_entry *h3g_waitq_peek(const h3g_waitq *q);

/* Removes e. No-op when e is not queued. */
void h3g_waitq_remove(h3g_waitq *q, h3g_waitq_entry *e);

/* Changes the urgency of queued e (keeping arrival order within the new
 * urgency). No-op when e is not queued. */
void h3g_waitq_set_urgency(h3g_waitq *q, h3g_waitq_entry *e, unsigned urgency);

/* The entry that has waited longest (first on the arrival list), or NULL. */
static inline h3g_waitq_entry *h3g_waitq_oldest(const h3g_waitq *q) {
  return q->ahead;
}

static inline size_t h3g_waitq_len(const h3g_waitq *q) {
  return q->len;
}

#endif /* H3G_WAIT_QUEUE_H */
