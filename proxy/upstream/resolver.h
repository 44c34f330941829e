/*
 * The address of one upstream server named by host and port (libuv).
 *
 * A resolver resolves its host once, synchronously, when it is created, and
 * then, when asked to, again every interval in the background
 * (uv_getaddrinfo on libuv's thread pool, so the loop never blocks). It
 * keeps the first usable address (IPv4 or IPv6) of the answer. When a
 * re-resolution finds a different address, the resolver takes it, logs an
 * info line ("upstream NAME: HOST now resolves to ADDR (was ADDR)") and
 * calls on_change. When one fails, the previous address stays and a warning
 * is logged once, until a lookup succeeds again.
 *
 * Everything runs on the loop's thread; no function here may be called from
 * another thread.
 */
#ifndef H3G_RESOLVER_H
#define H3G_RESOLVER_H

#include <stdint.h>

#include "common.h"

struct sockaddr;
struct sockaddr_storage;

typedef struct h3g_resolver h3g_resolver;

typedef struct h3g_resolver_config {
  const char *host; /* a name or a literal address; copied */
  uint16_t port;
  /* Names the server in log lines ("upstream NAME: ..."); copied. */
  const char *name;
  /*
   * 0: host is resolved at creation only. Otherwise it is resolved again
   * this often (measured from the end of the previous lookup, so lookups
   * never overlap), unless it is a literal address, which never changes.
   */
  uint64_t interval_ms;
  /*
   * Called (with arg) after a re-resolution changed the address, from the
   * lookup's libuv callback only: never from inside h3g_resolver_new() or
   * h3g_resolver_close(), never after h3g_resolver_close(). _address() and
   * _sockaddr() already give the new address. on_change may call any
   * function here, including h3g_resolver_close(). NULL: not told.
   */
  void (*on_change)(void *arg);
  void *arg;
} h3g_resolver_config;

/* Counters of the background lookups (the one at creation is not
 * counted). */
typedef struct h3g_resolver_stats {
  uint64_t resolutions; /* re-resolutions completed */
  uint64_t failures;    /* of which failed (the old address stayed) */
  uint32_t resolving;   /* 1 while a lookup is in flight */
} h3g_resolver_stats;

/*
 * Creates a resolver on loop (a uv_loop_t *, kept opaque here): resolves
 * cfg->host synchronously (the loop blocks for that lookup only) and, when
 * cfg->interval_ms asks for it and host is a name, starts the timer of the
 * background lookups. Returns 0 and sets *rp, or (with *rp NULL)
 * H3G_ERR_INVAL (no loop, no host or an empty one), H3G_ERR_NOMEM, or
 * H3G_ERR_NOTFOUND when host does not resolve to an IPv4 or IPv6 address
 * (logged: "upstream HOST: cannot resolve: REASON").
 */
int h3g_resolver_new(h3g_resolver **rp, void *loop,
                     const h3g_resolver_config *cfg);

/*
 * Stops re-resolving: the timer is closed, and a lookup in flight is
 * cancelled, or awaited when it already runs on a worker thread (libuv
 * cannot stop it). No on_change follows. cb(arg) runs later, from a libuv
 * callback, never from inside this call, once the timer is closed and no
 * lookup is in flight; the resolver is freed when cb returns (cb may still
 * call _address(), _sockaddr() and _get_stats()). Whatever on_change's arg
 * points to must therefore outlive cb: a pool owning a resolver must not be
 * freed before the resolver's close callback. Call it once; NULL is a
 * no-op. cb may be NULL.
 */
void h3g_resolver_close(h3g_resolver *r, void (*cb)(void *arg), void *arg);

/* The current address as text: "ip:port" or "[ip6]:port". Valid until the
 * resolver is freed; the text changes when the address does. */
const char *h3g_resolver_address(const h3g_resolver *r);

/* The current address (a sockaddr_in or sockaddr_in6, port included), for
 * connect. Valid until the resolver is freed; it changes when the address
 * does. */
const struct sockaddr *h3g_resolver_sockaddr(const h3g_resolver *r);

void h3g_resolver_get_stats(const h3g_resolver *r, h3g_resolver_stats *out);

/*
 * Testing aid (production code leaves it unset): hook(arg, status, addr) is
 * called with the outcome of each background lookup before the resolver
 * acts on it: status 0 and *addr the first usable address, or
 * H3G_ERR_NOTFOUND (addr unspecified). It returns the status to act on and
 * may rewrite *addr, to stand for a DNS answer that changed or failed.
 */
void h3g_resolver_set_hook(h3g_resolver *r,
                           int (*hook)(void *arg, int status,
                                       struct sockaddr_storage *addr),
                           void *arg);

#endif /* H3G_RESOLVER_H */
