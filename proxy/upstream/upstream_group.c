/*
 * Upstream groups: see upstream_group.h.
 *
 * The group is a layer over the servers' pools. acquire() puts the group
 * between the pool and the user for the length of the wait: the waiter's
 * ev and ctx are swapped for the group's (the user's are kept in the
 * waiter), so that a failed connect comes back here and can be tried on
 * another server; on_ready swaps them back and hands the connection over
 * (h3g_upconn_rebind), after which the group is out of the data path.
 */
#include "upstream_group.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "balancer.h"
#include "health_check.h"
#include "log.h"
#include "upstream_tls.h"

typedef struct server {
  h3g_upstream_group *g;
  uint32_t index;
  const h3g_server_conf *conf;
  h3g_upstream_pool *pool;
  /* Passive health. */
  uint32_t fails;          /* failures in a row */
  bool passive_out;        /* out since max_fails failures in a row */
  bool probing;            /* one request is trying it after a cooldown */
  uint64_t down_until_ns;  /* while passive_out: end of the cooldown */
  uint64_t cooldown_ms;    /* the last cooldown given */
  bool active_out;         /* out by the active health check */
  h3g_health_check *hc;    /* NULL: no active checks */
  /* Statistics. */
  uint64_t requests, failures;
  uint64_t responses[5];
  uint64_t first_byte_us_sum, first_byte_count;
} server;

struct h3g_upstream_group {
  uv_loop_t *loop;
  const h3g_group_conf *conf;
  h3g_upstream_tls_ctx *tls; /* for https:// servers (one per group, so
                              * their sessions resume); NULL: none */
  server *servers;
  h3g_balance_node *nodes;
  uint32_t *cand; /* scratch: candidates of one pick */
  size_t n;
  uint32_t cursor;
  bool closing;
  size_t open; /* pools not yet closed */
  void (*close_cb)(void *arg);
  void *close_arg;
};

static const h3g_upstream_events group_events;

static uint64_t bit_of(const server *s) {
  return s->index < 64 ? 1ull << s->index : 0;
}

/* In service: not out, or out but its cooldown is over and no other
 * request is trying it yet. */
static bool usable(const server *s, uint64_t now) {
  if (s->active_out)
    return false;
  if (!s->passive_out)
    return true;
  return !s->probing && now >= s->down_until_ns;
}

/*
 * Picks a server for w: among primaries in service not yet tried for this
 * request, else backups likewise; if every server in service was tried,
 * any in service (a second try of the same server beats no try). NULL
 * when none is in service.
 */
static server *pick(h3g_upstream_group *g, const h3g_upstream_waiter *w) {
  uint64_t now = h3g_now_ns();
  for (int pass = 0; pass < 4; pass++) {
    bool backup = pass & 1, untried = pass < 2;
    size_t nc = 0;
    for (size_t i = 0; i < g->n; i++) {
      server *s = &g->servers[i];
      if ((bool)s->conf->backup != backup || !usable(s, now))
        continue;
      if (untried && (w->tried & bit_of(s)))
        continue;
      if (g->conf->balance == H3G_BALANCE_LEAST_CONN) {
        h3g_upstream_pool_stats st;
        h3g_upstream_pool_get_stats(s->pool, &st);
        g->nodes[i].load = (uint64_t)st.busy + st.connecting + st.waiting;
      }
      g->cand[nc++] = (uint32_t)i;
    }
    if (nc == 0)
      continue;
    size_t k = h3g_balance_pick(g->conf->balance, g->nodes, g->cand, nc,
                                w->has_hash, w->hash, &g->cursor);
    server *s = &g->servers[g->cand[k]];
    if (s->passive_out)
      s->probing = true;
    return s;
  }
  return NULL;
}

static void restore_user(h3g_upstream_waiter *w) {
  w->ev = w->user_ev;
  w->ctx = w->user_ctx;
  w->user_ev = NULL;
  w->user_ctx = NULL;
}

/* Sends w to s's pool. Returns what the pool's acquire() returns. */
static int send_to(server *s, h3g_upstream_waiter *w) {
  w->server = s;
  w->tried |= bit_of(s);
  w->attempts++;
  s->requests++;
  return h3g_upstream_pool_ops.acquire(s->pool, w);
}

static int group_acquire(void *pool, h3g_upstream_waiter *w) {
  h3g_upstream_group *g = pool;
  if (w->queued || w->user_ev != NULL)
    return H3G_ERR_INVAL;
  if (g->closing)
    return H3G_ERR_CLOSED;
  server *s = pick(g, w);
  if (s == NULL)
    return H3G_ERR_UNAVAILABLE;
  w->user_ev = w->ev;
  w->user_ctx = w->ctx;
  w->ev = &group_events;
  w->ctx = w;
  int rv = send_to(s, w);
  if (rv != 0) {
    s->probing = false;
    restore_user(w);
  }
  return rv;
}

static void group_cancel(void *pool, h3g_upstream_waiter *w) {
  if (w->user_ev == NULL)
    return; /* not waiting through this group */
  server *s = w->server;
  h3g_upstream_pool_ops.cancel(s->pool, w);
  /* A probe given up before it said anything: the next request probes. */
  s->probing = false;
  restore_user(w);
  H3G_UNUSED(pool);
}

static void group_set_urgency(void *pool, h3g_upstream_waiter *w,
                              uint8_t urgency) {
  H3G_UNUSED(pool);
  if (w->user_ev != NULL)
    h3g_upstream_pool_ops.set_urgency(((server *)w->server)->pool, w, urgency);
  else
    w->urgency = urgency;
}

static const char *group_name(void *pool) {
  return ((h3g_upstream_group *)pool)->conf->name;
}

static const char *group_server_name(void *pool,
                                     const h3g_upstream_waiter *w) {
  H3G_UNUSED(pool);
  return w->server != NULL ? ((const server *)w->server)->conf->address : NULL;
}

static void group_finish(void *pool, const h3g_upstream_waiter *w,
                         int status, uint64_t first_byte_us) {
  H3G_UNUSED(pool);
  server *s = w->server;
  if (s == NULL)
    return;
  if (status >= 100 && status < 600)
    s->responses[status / 100 - 1]++;
  if (first_byte_us > 0) {
    s->first_byte_us_sum += first_byte_us;
    s->first_byte_count++;
  }
}

static uint32_t group_retry_after(void *pool) {
  return h3g_upstream_group_retry_after(pool);
}

const h3g_upstream_ops h3g_upstream_group_ops = {
    .acquire = group_acquire,
    .cancel = group_cancel,
    .set_urgency = group_set_urgency,
    .write = h3g_upconn_write,
    .read_start = h3g_upconn_read_start,
    .read_stop = h3g_upconn_read_stop,
    .set_read_timeout = h3g_upconn_set_read_timeout,
    .release = h3g_upconn_release,
    .upgrade = h3g_upconn_upgrade,
    .shutdown_write = h3g_upconn_shutdown_write,
    .reset = h3g_upconn_reset,
    .name = group_name,
    .server_name = group_server_name,
    .finish = group_finish,
    .retry_after = group_retry_after,
};

/* ---- events of a wait ----------------------------------------------- */

static void on_ready(void *ctx, h3g_upconn *c, int reused) {
  h3g_upstream_waiter *w = ctx;
  restore_user(w);
  h3g_upconn_rebind(c, w->ev, w->ctx);
  w->ev->on_ready(w->ctx, c, reused);
}

static bool worth_another_server(int err) {
  return err == H3G_ERR_REFUSED || err == H3G_ERR_TIMEOUT ||
         err == H3G_ERR_IO || err == H3G_ERR_TLS;
}

static void on_fail(void *ctx, int err) {
  h3g_upstream_waiter *w = ctx;
  server *s = w->server;
  h3g_upstream_group *g = s->g;
  /* Nothing of the request was written: another server may take it. */
  if (!g->closing && worth_another_server(err) &&
      w->attempts <= g->conf->retries) {
    server *next = pick(g, w);
    if (next != NULL && next != s) {
      h3g_debug("upstream %s: %s failed (%s): trying %s", g->conf->name,
                s->conf->address, h3g_strerror(err), next->conf->address);
      if (send_to(next, w) == 0)
        return;
      next->probing = false;
    }
  }
  restore_user(w);
  w->ev->on_fail(w->ctx, err);
}

static void on_unused(void *ctx) { H3G_UNUSED(ctx); }

static void on_unused_alloc(void *ctx, uint8_t **buf, size_t *len) {
  H3G_UNUSED(ctx);
  *buf = NULL;
  *len = 0;
}

static void on_unused_size(void *ctx, size_t n) {
  H3G_UNUSED(ctx);
  H3G_UNUSED(n);
}

static void on_unused_err(void *ctx, int err) {
  H3G_UNUSED(ctx);
  H3G_UNUSED(err);
}

/* Only on_ready and on_fail reach the group: the connection is rebound to
 * its user before anything else can happen on it. */
static const h3g_upstream_events group_events = {
    .on_ready = on_ready,
    .on_fail = on_fail,
    .on_alloc = on_unused_alloc,
    .on_read = on_unused_size,
    .on_eof = on_unused,
    .on_error = on_unused_err,
    .on_written = on_unused_err,
};

/* ---- health --------------------------------------------------------- */

static void on_health(void *arg, int ok) {
  server *s = arg;
  const h3g_group_conf *gc = s->g->conf;
  if (ok) {
    if (s->passive_out)
      h3g_info("upstream %s: %s answers again: back in service", gc->name,
               s->conf->address);
    s->fails = 0;
    s->passive_out = false;
    s->probing = false;
    s->cooldown_ms = 0;
    return;
  }
  s->fails++;
  s->failures++;
  /* A lone server is never taken out by passive checks: there is nowhere
   * else to send its requests, and an app that is restarting or had one
   * bad moment would get 503s for longer than it was away (a sidecar's
   * usual case). Active checks still take it out. */
  if (gc->max_fails == 0 || s->g->n == 1)
    return;
  uint64_t now = h3g_now_ns();
  if (s->passive_out) {
    if (!s->probing)
      return; /* a request that started before it went out */
    s->probing = false;
    s->cooldown_ms = H3G_MIN(s->cooldown_ms * 2, gc->max_fail_timeout_ms);
  } else if (s->fails >= gc->max_fails) {
    s->passive_out = true;
    s->cooldown_ms = H3G_MIN(gc->fail_timeout_ms, gc->max_fail_timeout_ms);
  } else {
    return;
  }
  s->down_until_ns = now + s->cooldown_ms * 1000000ull;
  h3g_warn("upstream %s: %s out for %llu ms after %u failures in a row",
           gc->name, s->conf->address, (unsigned long long)s->cooldown_ms,
           s->fails);
}

static void on_active_change(void *arg, int healthy) {
  server *s = arg;
  s->active_out = !healthy;
}

/* The active check of s, when the group has one. Returns 0 or an error of
 * h3g_health_check_new (the configuration was checked: NOMEM, really). */
static int start_health_check(server *s) {
  const h3g_group_conf *gc = s->g->conf;
  if (gc->health_check[0] == '\0')
    return 0;
  char host[H3G_HOST_MAX + 16];
  const h3g_server_conf *sc = s->conf;
  if (gc->health_host[0] != '\0')
    snprintf(host, sizeof(host), "%s", gc->health_host);
  else if (sc->kind == H3G_SERVER_UNIX)
    snprintf(host, sizeof(host), "localhost");
  else if (strchr(sc->host, ':') != NULL)
    snprintf(host, sizeof(host), "[%s]:%u", sc->host, (unsigned)sc->port);
  else
    snprintf(host, sizeof(host), "%s:%u", sc->host, (unsigned)sc->port);
  char name[H3G_NAME_MAX + H3G_PATH_MAX];
  snprintf(name, sizeof(name), "%s %s", gc->name, sc->address);
  h3g_health_check_config hcfg = {
      .name = name,
      .method = gc->health_method,
      .path = gc->health_path,
      .host = host,
      .interval_ms = gc->health_interval_ms,
      .timeout_ms = gc->health_timeout_ms,
      .status_lo = gc->health_status_lo,
      .status_hi = gc->health_status_hi,
      .rise = gc->health_rise,
      .fall = gc->health_fall,
  };
  return h3g_health_check_new(&s->hc, s->g->loop, &h3g_upstream_pool_ops,
                              s->pool, &hcfg, on_active_change, s);
}

uint32_t h3g_upstream_group_retry_after(const h3g_upstream_group *g) {
  uint64_t now = h3g_now_ns(), best = UINT64_MAX;
  for (size_t i = 0; i < g->n; i++) {
    const server *s = &g->servers[i];
    if (s->active_out) {
      /* Back after health_rise good checks at the soonest. */
      best = H3G_MIN(best, g->conf->health_interval_ms *
                               g->conf->health_rise * 1000000ull);
      continue;
    }
    if (s->passive_out && s->down_until_ns > now)
      best = H3G_MIN(best, s->down_until_ns - now);
    else if (s->passive_out)
      best = 0;
  }
  if (best == UINT64_MAX)
    return 0;
  return (uint32_t)H3G_MAX((best + 999999999ull) / 1000000000ull, 1ull);
}

/* ---- life cycle ----------------------------------------------------- */

int h3g_upstream_group_tls(const h3g_group_conf *conf,
                           h3g_upstream_tls_ctx **out, char *err,
                           size_t errlen) {
  *out = NULL;
  int tls = 0;
  for (uint32_t i = 0; i < conf->nservers; i++)
    tls |= conf->servers[i].kind == H3G_SERVER_TLS;
  if (!tls)
    return 0;
  h3g_upstream_tls_config tc = {
      .ca_file = conf->tls_ca,
      .verify = (int)conf->tls_verify,
      .cert_file = conf->tls_cert[0] != '\0' ? conf->tls_cert : NULL,
      .key_file = conf->tls_key[0] != '\0' ? conf->tls_key : NULL,
  };
  return h3g_upstream_tls_ctx_new(out, &tc, err, errlen);
}

/* Frees what the group owns besides its pools (closed before). */
static void group_free(h3g_upstream_group *g) {
  h3g_upstream_tls_ctx_free(g->tls);
  free(g->servers);
  free(g->nodes);
  free(g->cand);
  free(g);
}

int h3g_upstream_group_new(h3g_upstream_group **out, void *loop,
                           const h3g_group_conf *conf, char *err,
                           size_t errlen) {
  h3g_upstream_group *g = calloc(1, sizeof(*g));
  if (g == NULL)
    return H3G_ERR_NOMEM;
  g->loop = loop;
  g->conf = conf;
  g->n = conf->nservers;
  g->servers = calloc(g->n ? g->n : 1, sizeof(*g->servers));
  g->nodes = calloc(g->n ? g->n : 1, sizeof(*g->nodes));
  g->cand = calloc(g->n ? g->n : 1, sizeof(*g->cand));
  if (g->servers == NULL || g->nodes == NULL || g->cand == NULL) {
    group_free(g);
    return H3G_ERR_NOMEM;
  }
  char why[512] = "";
  int rv = h3g_upstream_group_tls(conf, &g->tls, why, sizeof(why));
  if (rv != 0) {
    snprintf(err, errlen, "[upstream %s] TLS: %s", conf->name, why);
    group_free(g);
    return rv;
  }
  if (g->tls != NULL && !conf->tls_verify)
    h3g_warn("upstream %s: tls_verify is off: the servers' certificates "
             "are not checked",
             conf->name);
  for (size_t i = 0; i < g->n && rv == 0; i++) {
    const h3g_server_conf *sc = &conf->servers[i];
    server *s = &g->servers[i];
    *s = (server){.g = g, .index = (uint32_t)i, .conf = sc};
    g->nodes[i] = (h3g_balance_node){
        .weight = sc->weight,
        .id = h3g_balance_hash(sc->address, strlen(sc->address))};
    h3g_upstream_pool_config pc = {
        .name = sc->address,
        .host = sc->kind == H3G_SERVER_UNIX ? NULL : sc->host,
        .port = sc->port,
        .unix_path = sc->kind == H3G_SERVER_UNIX ? sc->path : NULL,
        .resolve_interval_ms = conf->resolve_interval_ms,
        .on_health = on_health,
        .health_arg = s,
        .tls = sc->kind == H3G_SERVER_TLS ? g->tls : NULL,
        .sni = conf->tls_sni[0] != '\0' ? conf->tls_sni : NULL,
        .size = conf->pool_size,
        .queue_size = conf->queue_size,
        .connect_timeout_ms = conf->connect_timeout_ms,
        .idle_timeout_ms = conf->idle_timeout_ms,
    };
    rv = h3g_upstream_pool_new(&s->pool, loop, &pc);
    if (rv != 0) {
      snprintf(err, errlen, "[upstream %s] server %s (line %u): %s",
               conf->name, sc->address, sc->line,
               rv == H3G_ERR_NOTFOUND ? "the name does not resolve"
                                      : h3g_strerror(rv));
      break;
    }
    g->open++;
    rv = start_health_check(s);
    if (rv != 0)
      snprintf(err, errlen, "[upstream %s] health_check: %s", conf->name,
               h3g_strerror(rv));
  }
  if (rv != 0) {
    /* Pools made so far close asynchronously; the group goes with the
     * last of them. */
    h3g_upstream_group_close(g, NULL, NULL);
    return rv;
  }
  *out = g;
  return 0;
}

void h3g_upstream_group_inherit(h3g_upstream_group *g,
                                const h3g_upstream_group *old) {
  for (size_t i = 0; i < g->n; i++) {
    server *s = &g->servers[i];
    const server *o = NULL;
    for (size_t k = 0; k < old->n && o == NULL; k++)
      if (strcmp(old->servers[k].conf->address, s->conf->address) == 0)
        o = &old->servers[k];
    if (o == NULL)
      continue;
    s->fails = o->fails;
    /* A lone server is never out by passive checks (on_health). */
    if (g->n > 1) {
      s->passive_out = o->passive_out;
      s->probing = false; /* the probe, if any, runs on old */
      s->down_until_ns = o->down_until_ns;
      s->cooldown_ms = o->cooldown_ms;
    }
    if (s->hc != NULL && o->hc != NULL) {
      h3g_health_check_inherit(s->hc, o->hc);
      s->active_out = !h3g_health_check_healthy(s->hc);
    }
    s->requests = o->requests;
    s->failures = o->failures;
    memcpy(s->responses, o->responses, sizeof(s->responses));
    s->first_byte_us_sum = o->first_byte_us_sum;
    s->first_byte_count = o->first_byte_count;
  }
}

void h3g_upstream_group_stop_checks(h3g_upstream_group *g) {
  for (size_t i = 0; i < g->n; i++) {
    h3g_health_check_close(g->servers[i].hc);
    g->servers[i].hc = NULL;
  }
}

static void on_pool_closed(void *arg) {
  h3g_upstream_group *g = arg;
  if (--g->open > 0)
    return;
  if (g->close_cb != NULL)
    g->close_cb(g->close_arg);
  group_free(g); /* every pool, so every TLS session, is gone */
}

void h3g_upstream_group_close(h3g_upstream_group *g, void (*cb)(void *arg),
                              void *arg) {
  g->closing = true;
  g->close_cb = cb;
  g->close_arg = arg;
  size_t pools = g->open;
  if (pools == 0) {
    g->open = 1;
    on_pool_closed(g);
    return;
  }
  for (size_t i = 0; i < g->n; i++) {
    /* The check gives its connection back at once, before its pool. */
    h3g_health_check_close(g->servers[i].hc);
    g->servers[i].hc = NULL;
    if (g->servers[i].pool != NULL)
      h3g_upstream_pool_close(g->servers[i].pool, on_pool_closed, g);
  }
}

const h3g_group_conf *h3g_upstream_group_conf(const h3g_upstream_group *g) {
  return g->conf;
}

size_t h3g_upstream_group_size(const h3g_upstream_group *g) { return g->n; }

void h3g_upstream_group_server(const h3g_upstream_group *g, size_t i,
                               h3g_server_view *out) {
  const server *s = &g->servers[i];
  uint64_t now = h3g_now_ns();
  *out = (h3g_server_view){
      .conf = s->conf,
      .resolved = s->conf->address,
      .up = usable(s, now) || (s->passive_out && s->probing),
      .passive_out = s->passive_out,
      .active_out = s->active_out,
      .fails = s->fails,
      .cooldown_left_ms = s->passive_out && s->down_until_ns > now
                              ? (s->down_until_ns - now) / 1000000ull
                              : 0,
      .requests = s->requests,
      .failures = s->failures,
      .first_byte_us_sum = s->first_byte_us_sum,
      .first_byte_count = s->first_byte_count,
  };
  memcpy(out->responses, s->responses, sizeof(out->responses));
  h3g_upstream_pool_get_stats(s->pool, &out->pool);
  if (s->hc != NULL) {
    h3g_health_check_stats hs;
    h3g_health_check_get_stats(s->hc, &hs);
    out->health_checks = hs.checks;
    out->health_failures = hs.failures;
    out->checked = hs.known;
  } else {
    out->checked = 1;
  }
}
