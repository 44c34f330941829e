/*
 * An upstream group: the servers of one [upstream NAME] section, each with
 * its own connection pool, behind the same h3g_upstream_ops table as a
 * single pool, so the bridge does not know whether it talks to one server
 * or twenty.
 *
 * acquire() picks a server (balancer.h) among those in service, and
 * answers H3G_ERR_UNAVAILABLE at once when none is: the caller answers
 * 503 with h3g_upstream_group_retry_after(). A connect that fails is tried
 * on another server of the group, up to the group's `retries`, before the
 * user hears of it. Passive health: a server's pool reports each failure
 * and each response start (upstream_pool.h on_health); `max_fails`
 * failures in a row take it out for a cooldown that doubles while it keeps
 * failing; after a cooldown one request probes it. Active health
 * (health_check.h), when configured, takes servers out and back too.
 * Backup servers serve only while every primary is out.
 *
 * Everything runs on the loop's thread.
 */
#ifndef H3G_UPSTREAM_GROUP_H
#define H3G_UPSTREAM_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "upstream_pool.h"

typedef struct h3g_upstream_group h3g_upstream_group;
typedef struct h3g_upstream_tls_ctx h3g_upstream_tls_ctx;

extern const h3g_upstream_ops h3g_upstream_group_ops;

/*
 * Creates the group of conf on loop (a uv_loop_t *): one pool per server,
 * names resolved now (a name that does not resolve is an error, as at
 * start-up before), health checks started. conf must outlive the group.
 * On error writes a line saying which server and why into err. Returns 0,
 * H3G_ERR_NOMEM, H3G_ERR_NOTFOUND (a name does not resolve), H3G_ERR_TLS
 * (the TLS settings cannot be used) or H3G_ERR_INVAL.
 */
int h3g_upstream_group_new(h3g_upstream_group **out, void *loop,
                           const h3g_group_conf *conf, char *err,
                           size_t errlen);

/*
 * The TLS client context for conf's https:// servers, built from its tls_
 * keys (upstream_tls.h); *out is NULL when conf has none. Returns 0 or an
 * error of h3g_upstream_tls_ctx_new, with its reason in err. For the
 * group, and for --check-config, which builds it to see it can.
 */
int h3g_upstream_group_tls(const h3g_group_conf *conf,
                           h3g_upstream_tls_ctx **out, char *err,
                           size_t errlen);

/*
 * Closes every pool and health check (as h3g_upstream_pool_close: waiters
 * fail with H3G_ERR_CLOSED, busy connections finish); cb(arg) runs once
 * everything is closed, and the group is freed. Call it once.
 */
void h3g_upstream_group_close(h3g_upstream_group *g, void (*cb)(void *arg),
                              void *arg);

/* Whole seconds (at least 1) until a server of g may serve again, for
 * Retry-After; 0 when unknown. */
uint32_t h3g_upstream_group_retry_after(const h3g_upstream_group *g);

/* One server's state, for metrics and the admin view. */
typedef struct h3g_server_view {
  const h3g_server_conf *conf;
  const char *resolved;   /* "ip:port" connected to now, or conf->address */
  int up;                 /* 1: in service (or probing after a cooldown) */
  int passive_out;        /* out after max_fails failures */
  int active_out;         /* out by the active health check */
  int checked;            /* no active check, or it has a verdict (see
                           * h3g_health_check_stats.known) */
  uint32_t fails;         /* failures in a row */
  uint64_t cooldown_left_ms;
  h3g_upstream_pool_stats pool;
  uint64_t requests;      /* acquires sent to this server */
  uint64_t failures;      /* failures reported (connect, reset, timeout) */
  uint64_t responses[5];  /* by class, 1xx .. 5xx */
  uint64_t first_byte_us_sum;
  uint64_t first_byte_count;
  uint64_t health_checks, health_failures;
} h3g_server_view;

/*
 * g, just built by a reload, takes over what old (the group of the same
 * name it replaces) knows of each server they share (same address): out
 * of service or not, passive and active health, the active check's runs,
 * and the statistics. A server old did not have starts as at start-up.
 * Requests still running on old count there only.
 */
void h3g_upstream_group_inherit(h3g_upstream_group *g,
                                const h3g_upstream_group *old);

/* The active checks of g stop (a reload replaced it: the new group's
 * checks go on); the servers keep the verdicts they had. */
void h3g_upstream_group_stop_checks(h3g_upstream_group *g);

const h3g_group_conf *h3g_upstream_group_conf(const h3g_upstream_group *g);
size_t h3g_upstream_group_size(const h3g_upstream_group *g);
void h3g_upstream_group_server(const h3g_upstream_group *g, size_t i,
                               h3g_server_view *out);

#endif /* H3G_UPSTREAM_GROUP_H */
