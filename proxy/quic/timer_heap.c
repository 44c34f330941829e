/*
 * Binary min-heap on node->at. Each node remembers its position (idx, 1
 * based), so a deadline moves or leaves in O(log n) without a search.
 */
#include "timer_heap.h"

#include <stdlib.h>

void h3g_theap_free(h3g_theap *h) {
  for (size_t i = 0; i < h->n; i++)
    h->v[i]->idx = 0;
  free(h->v);
  *h = (h3g_theap){0};
}

static void place(h3g_theap *h, size_t i, h3g_theap_node *node) {
  h->v[i] = node;
  node->idx = i + 1;
}

static void sift_up(h3g_theap *h, size_t i) {
  h3g_theap_node *node = h->v[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (h->v[parent]->at <= node->at)
      break;
    place(h, i, h->v[parent]);
    i = parent;
  }
  place(h, i, node);
}

static void sift_down(h3g_theap *h, size_t i) {
  h3g_theap_node *node = h->v[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= h->n)
      break;
    if (child + 1 < h->n && h->v[child + 1]->at < h->v[child]->at)
      child++;
    if (node->at <= h->v[child]->at)
      break;
    place(h, i, h->v[child]);
    i = child;
  }
  place(h, i, node);
}

int h3g_theap_set(h3g_theap *h, h3g_theap_node *node, uint64_t at) {
  if (node->idx != 0) {
    uint64_t old = node->at;
    node->at = at;
    if (at < old)
      sift_up(h, node->idx - 1);
    else if (at > old)
      sift_down(h, node->idx - 1);
    return 0;
  }
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    h3g_theap_node **v = realloc(h->v, cap * sizeof(*v));
    if (v == NULL)
      return H3G_ERR_NOMEM;
    h->v = v;
    h->cap = cap;
  }
  node->at = at;
  place(h, h->n, node);
  h->n++;
  sift_up(h, h->n - 1);
  return 0;
}

void h3g_theap_remove(h3g_theap *h, h3g_theap_node *node) {
  if (node->idx == 0)
    return;
  size_t i = node->idx - 1;
  node->idx = 0;
  h->n--;
  if (i == h->n)
    return;
  h3g_theap_node *last = h->v[h->n];
  place(h, i, last);
  if (i > 0 && h->v[(i - 1) / 2]->at > last->at)
    sift_up(h, i);
  else
    sift_down(h, i);
}
