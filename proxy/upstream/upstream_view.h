/*
 * What the admin listener shows of routes and upstream groups: labelled
 * Prometheus series for /metrics and a JSON document for /upstreams
 * (docs/routes.md "Visibility"). Read-only; renders from the live objects
 * on the loop's thread.
 */
#ifndef H3G_UPSTREAM_VIEW_H
#define H3G_UPSTREAM_VIEW_H

#include <stddef.h>

#include "route.h"
#include "upstream_group.h"

typedef struct h3g_upstream_view {
  h3g_router *router;
  h3g_upstream_group **groups; /* in configuration order */
  size_t ngroups;
} h3g_upstream_view;

/*
 * Each writes at most cap bytes of its text into buf (NUL-terminated when
 * cap > 0) and returns the length of the whole text, as snprintf does.
 * view is an h3g_upstream_view (const void * to fit h3g_admin_render).
 */
size_t h3g_upstream_view_metrics(const void *view, char *buf, size_t cap);
size_t h3g_upstream_view_json(const void *view, char *buf, size_t cap);

#endif /* H3G_UPSTREAM_VIEW_H */
