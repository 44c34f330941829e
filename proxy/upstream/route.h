/*
 * The route table: which [route NAME] a request belongs to, chosen once
 * when its head is complete (docs/routes.md "Matching").
 *
 * A leaf: no I/O, no event loop. The server fills in each route's
 * upstream (ops and group) after building the table; the bridge reads a
 * route's settings and upstream from the route it is given, nothing else.
 */
#ifndef H3G_ROUTE_H
#define H3G_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "histogram.h"
#include "upstream_pool.h"

/* The client protocols route histograms are kept by, in the order of
 * h3g_route_protocols: "h3", "h2", "http/1.1". */
#define H3G_ROUTE_PROTOCOLS 3
extern const char *const h3g_route_protocols[H3G_ROUTE_PROTOCOLS];

/* The index of protocol ("h3", "h2" or "http/1.1") in h3g_route_protocols,
 * or -1 for anything else. */
int h3g_route_protocol(const char *protocol);

/* Counters of one route (metrics, read by the admin listener). */
typedef struct h3g_route_stats {
  uint64_t requests;
  uint64_t responses[5]; /* by class: 1xx .. 5xx */
  uint64_t duration_us_sum;
  uint64_t duration_count;
  /* By client protocol: every exchange's duration (head received to last
   * byte handed over, as the access log's duration_ms), and the upstream's
   * time to first byte for those that got one (first_byte_ms). */
  h3g_histogram duration[H3G_ROUTE_PROTOCOLS];
  h3g_histogram first_byte[H3G_ROUTE_PROTOCOLS];
  size_t refs; /* route tables sharing them (h3g_router_inherit_stats) */
} h3g_route_stats;

typedef struct h3g_route {
  const h3g_route_conf *conf;   /* name, settings (conf->s) */
  const h3g_group_conf *group;  /* the group's configuration */
  const h3g_upstream_ops *ops;  /* the group's upstream, set by the server */
  void *pool;
  h3g_route_stats *stats; /* never NULL in a route table */
} h3g_route;

typedef struct h3g_router h3g_router;

/*
 * Builds the table of cfg's routes (cfg must outlive it; its routes
 * already passed h3g_config_load's checks). Routes start with ops and pool
 * NULL. Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_router_new(h3g_router **out, const h3g_config *cfg);
void h3g_router_free(h3g_router *r);

/*
 * Each route of r (just built by a reload) whose name a route of old has
 * counts on in old's counters and histograms, shared: requests still
 * running on old count in the same place, and /metrics never sees a
 * counter go back.
 */
void h3g_router_inherit_stats(h3g_router *r, const h3g_router *old);

/* The routes in cfg's order (h3g_router_count of them). */
size_t h3g_router_count(const h3g_router *r);
h3g_route *h3g_router_route(h3g_router *r, size_t i);

/*
 * The route for a request to host (the :authority or Host value as the
 * client sent it: any case, with or without a port or a trailing dot; NULL
 * or empty matches only routes without host) and target (the request
 * target; only its path, before '?', is matched, after decoding the
 * percent-encoded unreserved characters ("%61" is "a", "%2e" is ".";
 * "%2F" stays) and removing "." and ".." segments). Returns NULL when no
 * route matches. Never allocates; uses static buffers, so one thread only
 * (the loop's).
 */
h3g_route *h3g_router_match(const h3g_router *r, const char *host,
                            size_t hostlen, const char *target,
                            size_t targetlen);

/*
 * Configuration reloads: a request holds the router whose route it took
 * (hold when chosen, put when the request is gone), so that its route,
 * settings and upstream group outlive a reload that replaced them. retire
 * says no new request will take r; cb(arg) runs once nothing holds it (at
 * once when nothing does), and the caller frees r (and what its routes
 * point to) from there.
 */
void h3g_router_hold(h3g_router *r);
void h3g_router_put(h3g_router *r);
void h3g_router_retire(h3g_router *r, void (*cb)(void *arg), void *arg);

#endif /* H3G_ROUTE_H */
