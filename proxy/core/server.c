/*
 * Start-up builds the pieces in dependency order (TLS contexts, upstream
 * groups and the route table, QUIC listener, TCP + TLS listener, redirect
 * listener, admin); shutdown tears them down in reverse, each step
 * continuing from the previous one's close callback, so nothing is freed
 * while a libuv handle still refers to it. The listeners drain side by
 * side: Alt-Svc turns to "clear" first, so TCP clients stop being sent to
 * a QUIC listener that is going away, and the upstream groups close once
 * the last listener is gone.
 *
 * SIGHUP reloads: the file is read and checked whole (as at start: a
 * failure leaves everything as it was, logged FILE:LINE and counted), the
 * new groups, route table and TLS contexts are built, and only then is
 * the new configuration put in place of the old, in the same h3g_config
 * object every module reads. New requests take the new routes at once;
 * a request in flight keeps the route it took (it holds that route
 * table, route.h), and the old table, its groups (pools and health
 * checks) and its part of the old configuration stay until the last such
 * request is gone, then close. New handshakes use the new certificates;
 * connections keep theirs (old TLS contexts live until exit). Every
 * listener follows the file (move_listeners): a QUIC, TCP, redirect or
 * admin listener with a new address or port, or turned on, is bound
 * first, and only then does the one it replaces stop accepting and
 * drain (as at shutdown, for shutdown_timeout; the admin listener just
 * closes); one turned off drains. A socket that cannot be bound leaves
 * the old listener serving and its old values in the configuration
 * (logged; the reload still counts). A reload that would leave no
 * listener, or name a TCP congestion control the kernel lacks, fails
 * whole, as start-up would. A new [server] pid_file is written, then the
 * old one removed. Another secrets file is checked first and read at
 * the swap. What the running process cannot change (a secrets file
 * turned on or off, the keylog file, QUIC versions, the ticket rotation)
 * keeps its old value, with a warning.
 */
#include "server.h"

#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "admin.h"
#include "alt_svc.h"
#include "h1_codec.h"
#include "h1_session.h"
#include "idle_trim.h"
#include "keylog.h"
#include "log.h"
#include "quic_listener.h"
#include "quic_ticket.h"
#include "stream_bridge.h"
#include "secrets.h"
#include "tcp_listener.h"
#include "tls_ctx.h"
#include "route.h"
#include "upstream_group.h"
#include "upstream_view.h"

/* How often the secrets file is looked at for changes. */
#define SECRETS_CHECK_MS (60 * 1000)
/* How often the activity counters are looked at for a quiet period (see
 * idle_trim.h): free memory goes back 1 to 2 ticks after traffic stops.
 * A tick compares a dozen integers. */
#define IDLE_TRIM_TICK_MS 1000

/* A route table and its groups replaced by a reload, kept until no request
 * holds it (route.h), then closed and freed. arrays owns the configuration
 * parts they point into (its groups and routes only). */
typedef struct retired_gen {
  h3g_router *router;
  h3g_upstream_group **groups;
  size_t ngroups;
  size_t open; /* groups still closing, +1 while closes are asked */
  h3g_config arrays;
} retired_gen;

typedef struct h3g_server {
  uv_loop_t loop;
  h3g_config *cfg;
  const h3g_server_reload *reload;
  h3g_tls_ctx *tls;
  h3g_tls_ctx *tls_tcp;
  /* Contexts replaced by reloads: connections made with them may live on,
   * so they are freed at exit. */
  h3g_tls_ctx **old_tls;
  size_t nold_tls;
  /* The certificate and key files as the contexts in use read them: a
   * reload makes new contexts only when these changed. */
  struct stat cert_st, key_st;
  int quic_failed;
  char quic_why[128]; /* how the UDP socket failed, for a new admin */
  h3g_secrets *secrets;
  h3g_upstream_group **groups; /* one per [upstream NAME], cfg order */
  size_t ngroups;
  size_t groups_open;          /* not yet closed */
  h3g_router *router;
  h3g_upstream_view view;      /* what /metrics and /upstreams show */
  h3g_quic_listener *quic;
  h3g_tcp_listener *tcp;
  h3g_tcp_listener *redirect;
  h3g_alt_svc alt_svc;
  h3g_h1_env tcp_env;
  h3g_h1_env redirect_env;
  int listeners_draining; /* listeners whose shutdown has not completed */
  int retired_open;       /* listeners a reload moved or turned off, draining */
  struct retired_listener *retired; /* those of them a stop can cut short */
  int quic_retiring;      /* of which QUIC ones (Alt-Svc says "clear") */

  h3g_admin *admin;
  h3g_bridge_env env;     /* the QUIC front end's */
  h3g_bridge_env tcp_env_bridge; /* the TCP front ends' */
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_signal_t sighup;
  uv_signal_t sigusr1;
  uv_timer_t drain_timer; /* drain_delay: serving on, /readyz 503 */
  uv_timer_t secrets_timer;
  uv_timer_t trim_timer;
  h3g_idle_trim trim;
  uv_check_t flush;
  int draining;  /* a SIGTERM came: not ready, drain_delay running */
  int stopping;  /* the listeners drain */
  int exit_status;
} h3g_server;

/* The bridge's one-shot timers. Each is its own small allocation, freed
 * from uv_close's callback, so a timer cancelled from inside another
 * callback is never touched after it is gone. */
struct h3g_timer {
  uv_timer_t handle;
  void (*cb)(void *arg);
  void *arg;
};

static void on_timer_closed(uv_handle_t *h) {
  free(H3G_CONTAINER_OF(h, h3g_timer, handle));
}

static void on_timer_fire(uv_timer_t *h) {
  h3g_timer *t = H3G_CONTAINER_OF(h, h3g_timer, handle);
  void (*cb)(void *) = t->cb;
  void *arg = t->arg;
  uv_close((uv_handle_t *)&t->handle, on_timer_closed);
  cb(arg);
}

static h3g_timer *timer_start(void *loop, uint64_t ms, void (*cb)(void *arg),
                              void *arg) {
  h3g_timer *t = malloc(sizeof(*t));
  if (t == NULL)
    return NULL;
  t->cb = cb;
  t->arg = arg;
  uv_timer_init(loop, &t->handle);
  uv_timer_start(&t->handle, on_timer_fire, ms, 0);
  return t;
}

static void timer_cancel(h3g_timer *t) {
  if (t == NULL)
    return;
  uv_timer_stop(&t->handle);
  uv_close((uv_handle_t *)&t->handle, on_timer_closed);
}

static const h3g_timer_ops uv_timer_ops = {
    .start = timer_start,
    .cancel = timer_cancel,
};

static void on_flush(uv_check_t *h) {
  H3G_UNUSED(h);
  h3g_access_log_flush();
}

static void close_handles(h3g_server *s) {
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sighup, NULL);
  uv_close((uv_handle_t *)&s->sigusr1, NULL);
  uv_close((uv_handle_t *)&s->drain_timer, NULL);
  uv_close((uv_handle_t *)&s->secrets_timer, NULL);
  uv_close((uv_handle_t *)&s->trim_timer, NULL);
  uv_close((uv_handle_t *)&s->flush, NULL);
}

static void on_admin_closed(void *arg) {
  h3g_server *s = arg;
  s->admin = NULL;
  close_handles(s);
}

static void on_group_closed(void *arg) {
  h3g_server *s = arg;
  if (--s->groups_open > 0)
    return;
  free(s->groups);
  s->groups = NULL;
  s->ngroups = 0;
  if (s->admin != NULL)
    h3g_admin_close(s->admin, on_admin_closed, s);
  else
    close_handles(s);
}

static void on_listeners_closed(h3g_server *s) {
  if (s->exit_status == 0)
    h3g_info("all connections closed");
  size_t n = 0;
  for (size_t i = 0; i < s->ngroups; i++)
    n += s->groups[i] != NULL;
  s->groups_open = n + 1; /* +1: held until every close is asked */
  for (size_t i = 0; i < s->ngroups; i++)
    if (s->groups[i] != NULL)
      h3g_upstream_group_close(s->groups[i], on_group_closed, s);
  on_group_closed(s);
}

/*
 * One group per [upstream NAME] of cfg and the route table over them, into
 * *pgroups (cfg->ngroups of them) and *prouter. On error says which server
 * of which group failed and why; what was made is left there for the
 * caller to close (groups that failed are NULL).
 */
static int build_upstreams(h3g_server *s, const h3g_config *cfg,
                           h3g_upstream_group ***pgroups, h3g_router **prouter) {
  h3g_upstream_group **groups =
      calloc(cfg->ngroups ? cfg->ngroups : 1, sizeof(*groups));
  *pgroups = groups;
  *prouter = NULL;
  if (groups == NULL)
    return H3G_ERR_NOMEM;
  for (size_t i = 0; i < cfg->ngroups; i++) {
    char err[512] = "";
    int rv = h3g_upstream_group_new(&groups[i], &s->loop, &cfg->groups[i],
                                    err, sizeof(err));
    if (rv != 0) {
      groups[i] = NULL;
      h3g_error("%s", err[0] != '\0' ? err : h3g_strerror(rv));
      return rv;
    }
  }
  int rv = h3g_router_new(prouter, cfg);
  if (rv != 0)
    return rv;
  for (size_t i = 0; i < h3g_router_count(*prouter); i++) {
    h3g_route *r = h3g_router_route(*prouter, i);
    r->ops = &h3g_upstream_group_ops;
    r->pool = groups[r->conf->group];
  }
  return 0;
}

static int make_upstreams(h3g_server *s) {
  int rv = build_upstreams(s, s->cfg, &s->groups, &s->router);
  s->ngroups = s->groups != NULL ? s->cfg->ngroups : 0;
  s->view = (h3g_upstream_view){.router = s->router,
                                .groups = s->groups,
                                .ngroups = s->ngroups};
  return rv;
}

/* Fills g with a route table, its groups and the configuration parts
 * they point into (its groups and routes, taken out of cfg). */
static void gen_take(retired_gen *g, h3g_router *router,
                     h3g_upstream_group **groups, h3g_config *cfg) {
  *g = (retired_gen){.router = router, .groups = groups,
                     .ngroups = cfg->ngroups};
  g->arrays.groups = cfg->groups;
  g->arrays.ngroups = cfg->ngroups;
  g->arrays.routes = cfg->routes;
  g->arrays.nroutes = cfg->nroutes;
  cfg->groups = NULL;
  cfg->routes = NULL;
  cfg->ngroups = cfg->nroutes = 0;
}

static void on_gen_group_closed(void *arg) {
  retired_gen *g = arg;
  if (--g->open > 0)
    return;
  free(g->groups);
  h3g_router_free(g->router);
  h3g_config_free(&g->arrays);
  free(g);
}

/* No request holds the retired table any more: its groups close (their
 * pools are idle by now), then it goes. */
static void on_gen_retired(void *arg) {
  retired_gen *g = arg;
  g->open = 1;
  for (size_t i = 0; i < g->ngroups; i++)
    if (g->groups != NULL && g->groups[i] != NULL) {
      g->open++;
      h3g_upstream_group_close(g->groups[i], on_gen_group_closed, g);
    }
  on_gen_group_closed(g);
}

static void on_listener_closed(h3g_server *s) {
  if (--s->listeners_draining == 0)
    on_listeners_closed(s);
}

/*
 * A listener a reload moved or turned off, while it drains: listed, so
 * that a second SIGTERM cuts it short with the others. (Without memory
 * for the entry it drains unlisted, to its own deadline.)
 */
typedef struct retired_listener {
  h3g_server *s;
  h3g_quic_listener *quic; /* one of the two */
  h3g_tcp_listener *tcp;
  struct retired_listener *next, **pprev;
} retired_listener;

static retired_listener *retired_add(h3g_server *s, h3g_quic_listener *quic,
                                     h3g_tcp_listener *tcp) {
  retired_listener *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  *r = (retired_listener){.s = s,
                          .quic = quic,
                          .tcp = tcp,
                          .next = s->retired,
                          .pprev = &s->retired};
  if (s->retired != NULL)
    s->retired->pprev = &r->next;
  s->retired = r;
  return r;
}

/* The server of a retired listener's close callback (arg: its entry, or
 * the server when it drains unlisted), the entry gone. */
static h3g_server *retired_done(void *arg, int listed) {
  if (!listed)
    return arg;
  retired_listener *r = arg;
  h3g_server *s = r->s;
  *r->pprev = r->next;
  if (r->next != NULL)
    r->next->pprev = r->pprev;
  free(r);
  return s;
}

static void retired_closed(h3g_server *s) {
  s->retired_open--;
  if (s->stopping)
    on_listener_closed(s);
}

static void on_retired_listener_closed(void *arg) {
  retired_closed(retired_done(arg, 1));
}

static void on_unlisted_listener_closed(void *arg) {
  retired_closed(retired_done(arg, 0));
}

/* A QUIC listener a reload moved or turned off finished draining: with
 * none serving any more, Alt-Svc goes from "clear" to nothing. */
static void retired_quic_closed(h3g_server *s) {
  if (--s->quic_retiring == 0 && s->quic == NULL && !s->stopping)
    h3g_alt_svc_set_quic(&s->alt_svc, H3G_ALT_SVC_QUIC_OFF, 0);
  retired_closed(s);
}

static void on_retired_quic_closed(void *arg) {
  retired_quic_closed(retired_done(arg, 1));
}

static void on_unlisted_quic_closed(void *arg) {
  retired_quic_closed(retired_done(arg, 0));
}

/* What Alt-Svc says of the QUIC listener outside shutdown: h3 while one
 * serves, "clear" after its socket failed or while one a reload turned
 * off still drains (clients forget the h3 they learned), else nothing. */
static void alt_svc_update(h3g_server *s) {
  if (s->quic != NULL)
    h3g_alt_svc_set_quic(&s->alt_svc,
                         s->quic_failed ? H3G_ALT_SVC_QUIC_FAILED
                                        : H3G_ALT_SVC_QUIC_SERVING,
                         h3g_quic_listener_port(s->quic));
  else
    h3g_alt_svc_set_quic(&s->alt_svc,
                         s->quic_retiring > 0 ? H3G_ALT_SVC_QUIC_DRAINING
                                              : H3G_ALT_SVC_QUIC_OFF,
                         0);
}

static void on_quic_closed(void *arg) {
  h3g_server *s = arg;
  s->quic = NULL;
  /* The advertisement stays "clear" (not absent) while the TCP side still
   * drains: a browser must drop its h3 entry, not keep it. */
  on_listener_closed(s);
}

static void on_tcp_closed(void *arg) {
  h3g_server *s = arg;
  s->tcp = NULL;
  on_listener_closed(s);
}

static void on_redirect_closed(void *arg) {
  h3g_server *s = arg;
  s->redirect = NULL;
  on_listener_closed(s);
}

static void begin_shutdown(h3g_server *s) {
  if (s->stopping)
    return;
  s->stopping = 1;
  if (s->exit_status == 0)
    h3g_info("shutting down: draining for up to %llu ms",
             (unsigned long long)s->cfg->shutdown_timeout_ms);
  if (s->admin != NULL)
    h3g_admin_set_draining(s->admin);
  if (s->quic != NULL)
    h3g_alt_svc_set_quic(&s->alt_svc, H3G_ALT_SVC_QUIC_DRAINING,
                         h3g_quic_listener_port(s->quic));
  /* One extra count so that a listener finishing at once does not end
   * the shutdown before the others started theirs. */
  s->listeners_draining = 1 + s->retired_open;
  if (s->quic != NULL) {
    s->listeners_draining++;
    h3g_quic_listener_shutdown(s->quic, s->cfg->shutdown_timeout_ms,
                               on_quic_closed, s);
  }
  if (s->tcp != NULL) {
    s->listeners_draining++;
    h3g_tcp_listener_shutdown(s->tcp, s->cfg->shutdown_timeout_ms,
                              on_tcp_closed, s);
  }
  if (s->redirect != NULL) {
    s->listeners_draining++;
    h3g_tcp_listener_shutdown(s->redirect, s->cfg->shutdown_timeout_ms,
                              on_redirect_closed, s);
  }
  on_listener_closed(s);
}

/* The UDP socket failed for good (quic_listener.h): HTTP/3 is gone while
 * the TCP listener may still serve. Clients are told to forget h3, and
 * the health endpoints say why. */
static void on_quic_failed(void *arg, const char *why) {
  h3g_server *s = arg;
  s->quic_failed = 1;
  snprintf(s->quic_why, sizeof(s->quic_why), "%s", why);
  if (!s->stopping)
    h3g_alt_svc_set_quic(&s->alt_svc, H3G_ALT_SVC_QUIC_FAILED,
                         h3g_quic_listener_port(s->quic));
  if (s->admin != NULL)
    h3g_admin_set_quic_failed(s->admin, why);
  h3g_warn("%s", s->tcp != NULL
                     ? "HTTP/3 withdrawn (Alt-Svc: clear); HTTPS over TCP "
                       "still serves"
                     : "HTTP/3 withdrawn and no TCP listener: nothing serves");
}

static void on_drain_timer(uv_timer_t *t) {
  begin_shutdown(t->data);
}

/* Stops at once: what still runs is cut now, as at the deadline. */
static void stop_now(h3g_server *s) {
  begin_shutdown(s);
  if (s->quic != NULL)
    h3g_quic_listener_expire(s->quic);
  if (s->tcp != NULL)
    h3g_tcp_listener_expire(s->tcp);
  if (s->redirect != NULL)
    h3g_tcp_listener_expire(s->redirect);
  /* Expiring may close one at once (its entry goes): the next first. */
  for (retired_listener *r = s->retired, *next; r != NULL; r = next) {
    next = r->next;
    if (r->quic != NULL)
      h3g_quic_listener_expire(r->quic);
    else
      h3g_tcp_listener_expire(r->tcp);
  }
}

/*
 * SIGTERM drains: /readyz says 503 at once, and for drain_delay everything
 * goes on being served, so that load balancers and Kubernetes endpoints
 * take the gateway out before it stops accepting; then the listeners
 * drain for up to shutdown_timeout. A second SIGTERM, or SIGINT while
 * draining (an operator's Ctrl-C), stops at once.
 */
static void on_signal(uv_signal_t *h, int signum) {
  h3g_server *s = h->data;
  if (s->draining) {
    h3g_warn("signal %d while draining: stopping now", signum);
    stop_now(s);
    return;
  }
  s->draining = 1;
  h3g_info("signal %d received", signum);
  if (s->admin != NULL)
    h3g_admin_set_draining(s->admin);
  if (s->cfg->drain_delay_ms > 0) {
    h3g_info("draining: not ready, still serving for %llu ms",
             (unsigned long long)s->cfg->drain_delay_ms);
    uv_timer_start(&s->drain_timer, on_drain_timer, s->cfg->drain_delay_ms,
                   0);
    return;
  }
  begin_shutdown(s);
}

/* SIGUSR1: the access log file is opened again (after logrotate moved
 * it). */
static void on_sigusr1(uv_signal_t *h, int signum) {
  h3g_server *s = h->data;
  H3G_UNUSED(signum);
  if (h3g_access_log_open(s->cfg->access_log) == 0)
    h3g_info("access log reopened");
}

/*
 * /readyz: every upstream group has a server in service that is known to
 * be: with active checks, one of them passed (a server starts in service
 * before its first check, so that requests are served at once, but a
 * load balancer should not send traffic to a gateway whose app has not
 * answered yet).
 */
static int server_ready(const void *arg, char *why, size_t cap) {
  const h3g_server *s = arg;
  for (size_t i = 0; i < s->ngroups; i++) {
    const h3g_upstream_group *g = s->groups[i];
    if (g == NULL)
      continue;
    int up = 0, unchecked = 0;
    for (size_t k = 0; k < h3g_upstream_group_size(g) && !up; k++) {
      h3g_server_view v;
      h3g_upstream_group_server(g, k, &v);
      up = v.up && v.checked;
      unchecked |= v.up && !v.checked;
    }
    if (!up) {
      snprintf(why, cap,
               unchecked ? "[upstream %s] waits for a first health check to "
                           "pass"
                         : "[upstream %s] has no server in service",
               h3g_upstream_group_conf(g)->name);
      return 0;
    }
  }
  return 1;
}

/* A reload's new groups go on from what the groups of the same names
 * know of their servers (health, statistics). */
static void inherit_health(const h3g_server *s, h3g_upstream_group **groups,
                           size_t n) {
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < s->ngroups; k++)
      if (groups[i] != NULL && s->groups[k] != NULL &&
          strcmp(h3g_upstream_group_conf(groups[i])->name,
                 h3g_upstream_group_conf(s->groups[k])->name) == 0) {
        h3g_upstream_group_inherit(groups[i], s->groups[k]);
        break;
      }
}

/* What a running listener cannot take from a reload: the old value stays
 * in next, with a warning when the file asked for another. */
static void keep_bound(const h3g_server *s, h3g_config *next) {
  const h3g_config *cur = s->cfg;
#define KEEP(field, section, key)                                              \
  do {                                                                         \
    if (memcmp(&next->field, &cur->field, sizeof(cur->field)) != 0) {          \
      h3g_warn("%s: [" section "] " key ": changed; it takes effect at the "   \
               "next start",                                                   \
               s->reload->path);                                               \
      memcpy(&next->field, &cur->field, sizeof(cur->field));                   \
    }                                                                          \
  } while (0)
  KEEP(quic_versions, "listener", "quic_versions");
  KEEP(quic_version, "listener", "quic_versions");
  KEEP(nquic_versions, "listener", "quic_versions");
  /* Another file is read at the swap; from random keys to a file or
   * back changes how every key is derived: that waits for a start. */
  if ((cur->secrets_file[0] == '\0') != (next->secrets_file[0] == '\0'))
    KEEP(secrets_file, "listener", "secrets_file");
  KEEP(ticket_rotation_ms, "listener", "ticket_rotation");
  KEEP(keylog_file, "debug", "keylog_file");
  KEEP(keylog_env, "debug", "keylog_file");
#undef KEEP
}

/* Where the TCP listener binds: [tcp] address, else [listener]'s. */
static const char *tcp_address_of(const h3g_config *cfg) {
  return cfg->tcp_address[0] != '\0' ? cfg->tcp_address : cfg->listen_address;
}

/* The TCP listener's port as cfg asks: [tcp] port, else the QUIC
 * listener's bound port, else [listener] port (0: any). */
static uint16_t tcp_port_of(const h3g_server *s, const h3g_config *cfg) {
  return cfg->tcp_port != 0 ? h3g_bind_port(cfg->tcp_port)
         : s->quic != NULL  ? h3g_quic_listener_port(s->quic)
                            : h3g_bind_port(cfg->listen_port);
}

/* Where the redirect listener binds: [redirect] address, else
 * [listener]'s. */
static const char *redirect_address_of(const h3g_config *cfg) {
  return cfg->redirect_address[0] != '\0' ? cfg->redirect_address
                                          : cfg->listen_address;
}

/* The admin listener as start-up sets it up: what it serves, what its
 * /metrics, /upstreams and /readyz report, and the state it tells. */
static void admin_setup(h3g_server *s) {
  h3g_admin_set_serving(s->admin, s->quic != NULL, s->tcp != NULL);
  h3g_admin_set_view(s->admin, h3g_upstream_view_metrics,
                     h3g_upstream_view_json, &s->view);
  h3g_admin_set_ready(s->admin, server_ready, s);
  if (s->quic_failed)
    h3g_admin_set_quic_failed(s->admin, s->quic_why);
  if (s->draining)
    h3g_admin_set_draining(s->admin);
}

/* The QUIC listener stops accepting and drains (as at shutdown, for
 * shutdown_timeout); s->quic is NULL after. */
static void retire_quic(h3g_server *s) {
  h3g_quic_listener *old = s->quic;
  s->quic = NULL;
  h3g_quic_listener_on_failure(old, NULL, NULL);
  s->retired_open++;
  s->quic_retiring++;
  retired_listener *r = retired_add(s, old, NULL);
  if (r != NULL)
    h3g_quic_listener_shutdown(old, s->cfg->shutdown_timeout_ms,
                               on_retired_quic_closed, r);
  else
    h3g_quic_listener_shutdown(old, s->cfg->shutdown_timeout_ms,
                               on_unlisted_quic_closed, s);
}

/* *pl (the TCP or the redirect listener) drains; *pl is NULL after. */
static void retire_tcp(h3g_server *s, h3g_tcp_listener **pl) {
  h3g_tcp_listener *old = *pl;
  *pl = NULL;
  s->retired_open++;
  retired_listener *r = retired_add(s, NULL, old);
  if (r != NULL)
    h3g_tcp_listener_shutdown(old, s->cfg->shutdown_timeout_ms,
                              on_retired_listener_closed, r);
  else
    h3g_tcp_listener_shutdown(old, s->cfg->shutdown_timeout_ms,
                              on_unlisted_listener_closed, s);
}

/* A TCP listener that stays where it was takes a reload's [tcp]
 * congestion_control for the connections it accepts from now on (a
 * listener bound anew gets it from the configuration). */
static void follow_congestion_control(h3g_tcp_listener *l,
                                      const h3g_config *was,
                                      const h3g_config *cfg) {
  if (strcmp(was->tcp_congestion_control, cfg->tcp_congestion_control) != 0)
    (void)h3g_tcp_listener_set_congestion_control(l,
                                                  cfg->tcp_congestion_control);
}

/*
 * The QUIC listener a reload asks for ([listener] enabled, address, port;
 * turning it off is update_removals'): a new address or port, or one
 * turned on, is bound first; the old listener then drains. When the new
 * socket cannot be bound, what ran goes on and was's values stay in the
 * configuration (the reload counts, with an error logged).
 */
static void update_quic(h3g_server *s, const h3g_config *was) {
  h3g_config *cfg = s->cfg;
  if (!cfg->listen_enabled)
    return;
  /* A port of "any" is whatever was bound: only an address or a port
   * asked for by number moves a listener. */
  uint16_t want = h3g_bind_port(cfg->listen_port);
  if (s->quic != NULL &&
      strcmp(was->listen_address, cfg->listen_address) == 0 &&
      (want == 0 || want == h3g_quic_listener_port(s->quic)))
    return;
  h3g_quic_listener *nl = NULL;
  if (h3g_quic_listener_new(&nl, &s->loop, cfg, s->tls, s->secrets, &s->env) !=
      0) {
    h3g_error("reload: cannot listen on udp %s: %s", cfg->listen_address,
              s->quic != NULL ? "still serving HTTP/3 on the old address"
                              : "HTTP/3 stays off");
    memcpy(cfg->listen_address, was->listen_address,
           sizeof(cfg->listen_address));
    cfg->listen_port = was->listen_port;
    cfg->listen_enabled = s->quic != NULL;
    return;
  }
  if (s->quic != NULL)
    retire_quic(s);
  s->quic = nl;
  s->quic_failed = 0;
  h3g_quic_listener_on_failure(nl, on_quic_failed, s);
  if (s->admin != NULL)
    h3g_admin_set_quic_failed(s->admin, NULL);
}

/* The TCP listener a reload asks for ([tcp] enabled, address, port,
 * congestion_control), as update_quic. */
static void update_tcp(h3g_server *s, const h3g_config *was) {
  h3g_config *cfg = s->cfg;
  if (!cfg->tcp_enabled)
    return;
  const char *addr = tcp_address_of(cfg);
  uint16_t port = tcp_port_of(s, cfg);
  if (s->tcp != NULL && strcmp(tcp_address_of(was), addr) == 0 &&
      (port == 0 || port == h3g_tcp_listener_port(s->tcp))) {
    follow_congestion_control(s->tcp, was, cfg);
    return;
  }
  h3g_tcp_listener *nt = NULL;
  if (h3g_tcp_listener_new(&nt, &s->loop, cfg, "tcp", addr, port, s->tls_tcp,
                           &s->tcp_env) != 0) {
    h3g_error("reload: cannot listen on tcp %s: %s", addr,
              s->tcp != NULL ? "still serving on the old address"
                             : "HTTPS over TCP stays off");
    memcpy(cfg->tcp_address, was->tcp_address, sizeof(cfg->tcp_address));
    cfg->tcp_port = was->tcp_port;
    cfg->tcp_enabled = s->tcp != NULL;
    return;
  }
  if (s->tcp != NULL)
    retire_tcp(s, &s->tcp);
  s->tcp = nt;
}

/* A listener a reload turned off drains, unless it is the last one
 * serving (the other could not be bound): that one stays, logged, and
 * the configuration says so. */
static void update_removals(h3g_server *s, const h3g_config *was) {
  h3g_config *cfg = s->cfg;
  if (s->quic != NULL && !cfg->listen_enabled) {
    if (s->tcp == NULL) {
      h3g_error("reload: [listener] enabled = no would leave no listener: "
                "HTTP/3 stays on");
      memcpy(cfg->listen_address, was->listen_address,
             sizeof(cfg->listen_address));
      cfg->listen_port = was->listen_port;
      cfg->listen_enabled = 1;
    } else {
      h3g_info("reload: [listener] enabled = no: the QUIC listener drains");
      retire_quic(s);
      s->quic_failed = 0;
      if (s->admin != NULL)
        h3g_admin_set_quic_failed(s->admin, NULL);
    }
  }
  if (s->tcp != NULL && !cfg->tcp_enabled) {
    if (s->quic == NULL) {
      h3g_error("reload: [tcp] enabled = no would leave no listener: HTTPS "
                "over TCP stays on");
      memcpy(cfg->tcp_address, was->tcp_address, sizeof(cfg->tcp_address));
      cfg->tcp_port = was->tcp_port;
      cfg->tcp_enabled = 1;
    } else {
      h3g_info("reload: [tcp] enabled = no: the TCP listener drains");
      retire_tcp(s, &s->tcp);
    }
  }
}

/* The redirect listener a reload asks for ([redirect] address, port; 0
 * turns it off), as update_quic. Its redirects name the TCP listener's
 * port as it is now. */
static void update_redirect(h3g_server *s, const h3g_config *was) {
  h3g_config *cfg = s->cfg;
  uint16_t https_port =
      s->tcp != NULL ? h3g_tcp_listener_port(s->tcp) : tcp_port_of(s, cfg);
  if (https_port != 0) /* 0 would turn redirect mode off (h1_session.h) */
    s->redirect_env.redirect_port = https_port;
  if (cfg->redirect_port == 0) {
    if (s->redirect != NULL) {
      h3g_info("reload: [redirect] port = 0: the redirect listener drains");
      retire_tcp(s, &s->redirect);
    }
    return;
  }
  const char *addr = redirect_address_of(cfg);
  uint16_t want = h3g_bind_port(cfg->redirect_port);
  if (s->redirect != NULL && strcmp(redirect_address_of(was), addr) == 0 &&
      (want == 0 || want == h3g_tcp_listener_port(s->redirect))) {
    follow_congestion_control(s->redirect, was, cfg);
    return;
  }
  h3g_tcp_listener *nr = NULL;
  if (h3g_tcp_listener_new(&nr, &s->loop, cfg, "redirect", addr, want, NULL,
                           &s->redirect_env) != 0) {
    h3g_error("reload: cannot listen on redirect %s: %s", addr,
              s->redirect != NULL ? "still redirecting on the old address"
                                  : "no redirect listener");
    memcpy(cfg->redirect_address, was->redirect_address,
           sizeof(cfg->redirect_address));
    cfg->redirect_port = s->redirect != NULL ? was->redirect_port : 0;
    return;
  }
  if (s->redirect != NULL)
    retire_tcp(s, &s->redirect);
  s->redirect = nr;
}

/* The admin listener a reload asks for ([server] admin; "" turns it
 * off), as update_quic. The old one closes at once: its requests are
 * one-shot and short. */
static void update_admin(h3g_server *s, const h3g_config *was) {
  h3g_config *cfg = s->cfg;
  if (cfg->admin_address[0] == '\0') {
    if (s->admin != NULL) {
      h3g_info("reload: no [server] admin: the admin listener closes");
      h3g_admin_close(s->admin, NULL, NULL);
      s->admin = NULL;
    }
    return;
  }
  if (s->admin != NULL && strcmp(was->admin_address, cfg->admin_address) == 0 &&
      (cfg->admin_port == 0 || cfg->admin_port == h3g_admin_port(s->admin)))
    return;
  h3g_admin *na = NULL;
  if (h3g_admin_new(&na, &s->loop, cfg->admin_address, cfg->admin_port) != 0) {
    h3g_error("reload: cannot listen on admin %s:%u: %s", cfg->admin_address,
              (unsigned)cfg->admin_port,
              s->admin != NULL ? "the old admin listener stays"
                               : "no admin listener");
    memcpy(cfg->admin_address, was->admin_address, sizeof(cfg->admin_address));
    cfg->admin_port = was->admin_port;
    if (s->admin == NULL)
      cfg->admin_address[0] = '\0';
    return;
  }
  if (s->admin != NULL)
    h3g_admin_close(s->admin, NULL, NULL);
  s->admin = na;
  admin_setup(s);
}

/*
 * A reload's listeners: new ones are bound first (a moved listener's old
 * socket drains after its successor is bound), those turned off drain
 * last, so that something serves throughout; then the redirect and admin
 * listeners, which report on the others.
 */
static void move_listeners(h3g_server *s, const h3g_config *was) {
  update_quic(s, was);
  update_tcp(s, was);
  update_removals(s, was);
  update_redirect(s, was);
  update_admin(s, was);
  if (s->admin != NULL)
    h3g_admin_set_serving(s->admin, s->quic != NULL, s->tcp != NULL);
}

/* Whether st (as stat left it, or zeroed when it failed) still describes
 * path: same file, same size, same modification time. */
static int same_file(const char *path, const struct stat *st) {
  struct stat now;
  if (stat(path, &now) != 0)
    return 0;
  return now.st_dev == st->st_dev && now.st_ino == st->st_ino &&
         now.st_size == st->st_size &&
         now.st_mtim.tv_sec == st->st_mtim.tv_sec &&
         now.st_mtim.tv_nsec == st->st_mtim.tv_nsec;
}

static void note_identity(h3g_server *s) {
  if (stat(s->cfg->cert_file, &s->cert_st) != 0)
    memset(&s->cert_st, 0, sizeof(s->cert_st));
  if (stat(s->cfg->key_file, &s->key_st) != 0)
    memset(&s->key_st, 0, sizeof(s->key_st));
}

/* [server] pid_file: this process's id, for h3gate --reload. Returns 0,
 * or -1 when it could not be written (warned). */
static int write_pid_file(const h3g_config *cfg) {
  if (cfg->pid_file[0] == '\0')
    return 0;
  FILE *f = fopen(cfg->pid_file, "w");
  int rv = f != NULL && fprintf(f, "%ld\n", (long)getpid()) >= 0 ? 0 : -1;
  if (f != NULL && fclose(f) != 0)
    rv = -1;
  if (rv != 0)
    h3g_warn("pid_file %s: cannot write it", cfg->pid_file);
  return rv;
}

/* Removes the pid file at path ("" none) if it still names this process
 * (another instance may have taken the name since). */
static void remove_pid_file(const char *path) {
  if (path[0] != '\0' && h3g_pid_file_read(path) == (long)getpid())
    (void)unlink(path);
}

/* A reload's [server] pid_file: the new file is written first, then the
 * old one goes; when the new one cannot be written, the old one stays,
 * and so does its name in the configuration. */
static void move_pid_file(h3g_server *s, const h3g_config *was) {
  h3g_config *cfg = s->cfg;
  if (strcmp(was->pid_file, cfg->pid_file) == 0)
    return;
  if (write_pid_file(cfg) != 0) {
    memcpy(cfg->pid_file, was->pid_file, sizeof(cfg->pid_file));
    return;
  }
  remove_pid_file(was->pid_file);
}

/*
 * A reload's checks beyond the file's own (config.c, main.c's load):
 * what start-up would refuse only when it builds the listeners. Returns 0
 * or H3G_ERR_INVAL (logged).
 */
static int reload_check(const h3g_server *s, const h3g_config *next) {
  if (!next->listen_enabled && !next->tcp_enabled) {
    h3g_error("%s: no listener: [listener] and [tcp] are both disabled",
              s->reload->path);
    return H3G_ERR_INVAL;
  }
  if ((next->tcp_enabled || next->redirect_port != 0) &&
      h3g_tcp_congestion_check(next->tcp_congestion_control) != 0) {
    h3g_error("%s: [tcp] congestion_control: \"%s\" cannot be used",
              s->reload->path, next->tcp_congestion_control);
    return H3G_ERR_INVAL;
  }
  return 0;
}

/* A new TLS context (for a new identity, or for a listener turned on)
 * takes the place of *cur, which is kept until exit; NULL with a new
 * identity: *cur goes too (that kind of listener is off, and must not
 * start with the old certificate later). */
static void swap_tls(h3g_server *s, h3g_tls_ctx **cur, h3g_tls_ctx *next,
                     int new_identity) {
  if (next == NULL && !new_identity)
    return;
  if (*cur != NULL)
    s->old_tls[s->nold_tls++] = *cur;
  *cur = next;
}

/*
 * SIGHUP: the configuration again (server.c's top comment says what
 * changes and what stays). Nothing is touched until all of the new one
 * was read, checked and built.
 */
static void reload_config(h3g_server *s) {
  h3g_config *next = calloc(1, sizeof(*next));
  h3g_upstream_group **groups = NULL;
  h3g_router *router = NULL;
  h3g_tls_ctx *tls = NULL, *tls_tcp = NULL;
  int rv = next == NULL ? H3G_ERR_NOMEM : 0;

  /* What the swap needs, taken first, so that it cannot fail half way. */
  retired_gen *old = calloc(1, sizeof(*old));
  h3g_config *was = malloc(sizeof(*was));
  h3g_tls_ctx **kept =
      realloc(s->old_tls, (s->nold_tls + 2) * sizeof(*s->old_tls));
  if (kept != NULL)
    s->old_tls = kept;
  if (old == NULL || was == NULL || kept == NULL)
    rv = H3G_ERR_NOMEM;

  h3g_info("reloading %s", s->reload->path);
  if (rv == 0 && s->reload->load(next, s->reload->path) != 0)
    rv = H3G_ERR_INVAL;
  if (rv == 0)
    keep_bound(s, next);
  int new_secrets =
      rv == 0 && strcmp(next->secrets_file, s->cfg->secrets_file) != 0;
  if (new_secrets) {
    char why[1024];
    if (h3g_secrets_check_file(next->secrets_file, why, sizeof(why)) != 0) {
      h3g_error("%s: [listener] secrets_file: %s", s->reload->path, why);
      rv = H3G_ERR_INVAL;
    }
  }
  if (rv == 0)
    rv = reload_check(s, next);
  /* New TLS contexts for a new certificate or key (Kubernetes replaces a
   * Secret's files behind the same names), or for a listener turned on:
   * the sessions and tickets of the ones in use stay valid otherwise. */
  int new_identity =
      rv == 0 && (strcmp(next->cert_file, s->cfg->cert_file) != 0 ||
                  strcmp(next->key_file, s->cfg->key_file) != 0 ||
                  !same_file(next->cert_file, &s->cert_st) ||
                  !same_file(next->key_file, &s->key_st));
  if (rv == 0 && next->listen_enabled && (new_identity || s->tls == NULL)) {
    char ticket_context[256];
    h3g_quic_ticket_context(next, ticket_context, sizeof(ticket_context));
    rv = h3g_tls_ctx_new_quic(&tls, next, s->secrets, ticket_context);
  }
  if (rv == 0 && next->tcp_enabled && (new_identity || s->tls_tcp == NULL))
    rv = h3g_tls_ctx_new_tcp(&tls_tcp, next, s->secrets);
  if (rv == 0)
    rv = build_upstreams(s, next, &groups, &router);
  if (rv == 0) {
    inherit_health(s, groups, next->ngroups);
    h3g_router_inherit_stats(router, s->router);
  }
  if (rv != 0) {
    H3G_INC(reload_failures);
    h3g_error("reload of %s failed: the configuration in use stays",
              s->reload->path);
    h3g_tls_ctx_free(tls);
    h3g_tls_ctx_free(tls_tcp);
    if (groups != NULL) {
      /* What was built closes as a replaced table does (old exists:
       * groups are built only after it was allocated). */
      gen_take(old, router, groups, next);
      on_gen_retired(old);
    } else {
      free(old);
    }
    if (next != NULL)
      h3g_config_free(next);
    free(next);
    free(was);
    return;
  }

  /* Everything is built: the old table retires, the new takes over. was
   * keeps the old configuration's values (its arrays are not its own:
   * it is only read, then freed with free()). */
  gen_take(old, s->router, s->groups, s->cfg);
  /* The new groups check the servers now (they took over what the old
   * checks found): the old ones would only count them twice. */
  for (size_t i = 0; i < old->ngroups; i++)
    if (old->groups[i] != NULL)
      h3g_upstream_group_stop_checks(old->groups[i]);
  *was = *s->cfg;
  *s->cfg = *next; /* its groups and routes now belong to s->cfg */
  free(next);

  s->router = router;
  s->groups = groups;
  s->ngroups = s->cfg->ngroups;
  s->view = (h3g_upstream_view){.router = s->router,
                                .groups = s->groups,
                                .ngroups = s->ngroups};
  s->env.router = router;
  s->tcp_env_bridge.router = router;
  swap_tls(s, &s->tls, tls, new_identity);
  if (tls != NULL && s->quic != NULL)
    h3g_quic_listener_set_tls(s->quic, tls);
  swap_tls(s, &s->tls_tcp, tls_tcp, new_identity);
  if (tls_tcp != NULL && s->tcp != NULL)
    h3g_tcp_listener_set_tls(s->tcp, tls_tcp);
  move_listeners(s, was);
  move_pid_file(s, was);
  if (new_secrets &&
      h3g_secrets_set_path(s->secrets, s->cfg->secrets_file) != 0)
    memcpy(s->cfg->secrets_file, was->secrets_file,
           sizeof(s->cfg->secrets_file));
  if (new_identity) {
    note_identity(s);
    h3g_info("new certificate: new handshakes use %s", s->cfg->cert_file);
  }
  h3g_alt_svc_init(&s->alt_svc, s->cfg);
  alt_svc_update(s);
  h3g_log_set_level(s->cfg->log_level);
  h3g_access_log_set_format(s->cfg->access_log_format);
  if (strcmp(was->access_log, s->cfg->access_log) != 0)
    (void)h3g_access_log_open(s->cfg->access_log);
  free(was);
  h3g_router_retire(old->router, on_gen_retired, old);
  H3G_INC(reloads);
  h3g_info("configuration reloaded: %u routes, %u upstream groups",
           s->cfg->nroutes, s->cfg->ngroups);
}

/* SIGHUP, or the periodic look at the file: a changed secrets file takes
 * effect for session tickets at once (see secrets.h); with a reload
 * function, the whole configuration is read again. */
static void on_sighup(uv_signal_t *h, int signum) {
  h3g_server *s = h->data;
  H3G_UNUSED(signum);
  (void)h3g_secrets_reload(s->secrets);
  if (s->reload == NULL)
    return;
  if (s->draining) {
    h3g_warn("SIGHUP while draining: not reloading");
    return;
  }
  reload_config(s);
}

static void on_secrets_timer(uv_timer_t *t) {
  h3g_server *s = t->data;
  (void)h3g_secrets_reload(s->secrets);
}

static void on_trim_timer(uv_timer_t *t) {
  h3g_server *s = t->data;
  if (!h3g_idle_trim_tick(&s->trim, &h3g_stats))
    return;
  uint64_t us = h3g_memory_trim();
  h3g_debug("quiet: free memory given back to the system (%llu us of CPU)",
            (unsigned long long)us);
}

static void close_leftover(uv_handle_t *h, void *arg) {
  H3G_UNUSED(arg);
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void h3g_server_versions(char *buf, size_t cap) {
  char quic[128];
  h3g_quic_versions(quic, sizeof(quic));
  snprintf(buf, cap, "%s, wolfSSL %s, %s, libuv %s", quic, h3g_tls_version(),
           h3g_h1_version(), uv_version_string());
}

/* Appends ", KIND host:port" (no comma first) to buf, of which *n bytes
 * are used; an IPv6 literal is bracketed. */
static void ready_add(char *buf, size_t cap, size_t *n, const char *kind,
                      const char *host, unsigned port) {
  int k = snprintf(buf + *n, cap - *n,
                   strchr(host, ':') != NULL ? "%s%s [%s]:%u" : "%s%s %s:%u",
                   *n ? ", " : "", kind, host, port);
  if (k > 0 && (size_t)k < cap - *n)
    *n += (size_t)k;
}

/*
 * The addresses every listener is bound to, as the ready line shows them
 * ("udp 127.0.0.1:443, tcp 127.0.0.1:443, admin 127.0.0.1:9901"): with a
 * port set to "any" (or 0 for the admin address) this is the only way to
 * learn which port the kernel picked.
 */
static void ready_addresses(const h3g_server *s, char *buf, size_t cap) {
  const h3g_config *cfg = s->cfg;
  size_t n = 0;
  buf[0] = '\0';
  if (s->quic != NULL)
    ready_add(buf, cap, &n, "udp", cfg->listen_address,
              h3g_quic_listener_port(s->quic));
  if (s->tcp != NULL)
    ready_add(buf, cap, &n, "tcp", tcp_address_of(cfg),
              h3g_tcp_listener_port(s->tcp));
  if (s->redirect != NULL)
    ready_add(buf, cap, &n, "redirect",
              cfg->redirect_address[0] != '\0' ? cfg->redirect_address
                                               : cfg->listen_address,
              h3g_tcp_listener_port(s->redirect));
  if (s->admin != NULL)
    ready_add(buf, cap, &n, "admin", cfg->admin_address,
              h3g_admin_port(s->admin));
}

int h3g_server_run(h3g_config *cfg, const h3g_server_reload *reload) {
  h3g_server *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return 1;
  s->cfg = cfg;
  s->reload = reload;
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&s->loop);
  h3g_log_set_level(cfg->log_level);
  h3g_access_log_set_format(cfg->access_log_format);
  int rv = h3g_access_log_open(cfg->access_log);
  if (rv == 0)
    rv = h3g_keylog_open(cfg); /* before any TLS context exists */

  if (rv == 0)
    rv = h3g_secrets_new(&s->secrets, cfg->secrets_file,
                         cfg->ticket_rotation_ms / 1000);
  if (rv == 0 && cfg->listen_enabled) {
    char ticket_context[256];
    h3g_quic_ticket_context(cfg, ticket_context, sizeof(ticket_context));
    rv = h3g_tls_ctx_new_quic(&s->tls, cfg, s->secrets, ticket_context);
  }
  if (rv == 0 && cfg->tcp_enabled)
    rv = h3g_tls_ctx_new_tcp(&s->tls_tcp, cfg, s->secrets);
  note_identity(s);
  if (rv == 0)
    rv = make_upstreams(s);
  s->env = (h3g_bridge_env){
      .cfg = cfg,
      .router = s->router,
      .timers = &uv_timer_ops,
      .loop = &s->loop,
      .alt_svc = &s->alt_svc,
      /* Sent stream data stays in our memory until acknowledged; the
       * client's flow-control window and the congestion window are its
       * real bounds, this is the hard cap a stream. */
      .resp_inflight = H3G_QUIC_STREAM_INFLIGHT_MAX,
  };
  s->tcp_env_bridge = s->env;
  s->tcp_env_bridge.resp_inflight = 0;
  /* The front ends' environments are set whether or not their listener
   * starts now: a reload may start it later. */
  s->tcp_env = (h3g_h1_env){
      .cfg = cfg,
      .bridge_env = &s->tcp_env_bridge,
      .alt_svc = &s->alt_svc,
  };
  s->redirect_env = (h3g_h1_env){.cfg = cfg};
  h3g_alt_svc_init(&s->alt_svc, cfg);
  if (rv == 0 && cfg->listen_enabled) {
    rv = h3g_quic_listener_new(&s->quic, &s->loop, cfg, s->tls, s->secrets,
                               &s->env);
    if (rv == 0) {
      alt_svc_update(s);
      h3g_quic_listener_on_failure(s->quic, on_quic_failed, s);
    }
  }
  uint16_t https_port = tcp_port_of(s, cfg);
  if (rv == 0 && cfg->tcp_enabled) {
    rv = h3g_tcp_listener_new(&s->tcp, &s->loop, cfg, "tcp",
                              tcp_address_of(cfg), https_port, s->tls_tcp,
                              &s->tcp_env);
    if (rv == 0) {
      https_port = h3g_tcp_listener_port(s->tcp);
    } else if (rv == H3G_ERR_INUSE && cfg->tcp_port == 0 && s->quic != NULL) {
      /* The port was not asked for, only derived from the UDP one: HTTP/3
       * still serves ([tcp] port documents this). */
      h3g_error("tcp: TCP port %u is taken: serving HTTP/3 alone (set [tcp] "
                "port)",
                (unsigned)https_port);
      s->tcp = NULL;
      rv = 0;
    }
  }
  s->redirect_env.redirect_port = https_port;
  if (rv == 0 && cfg->redirect_port != 0)
    rv = h3g_tcp_listener_new(
        &s->redirect, &s->loop, cfg, "redirect", redirect_address_of(cfg),
        h3g_bind_port(cfg->redirect_port), NULL, &s->redirect_env);
  if (rv == 0 && s->quic == NULL && s->tcp == NULL) {
    h3g_error("no listener: [listener] and [tcp] are both disabled");
    rv = H3G_ERR_INVAL;
  }
  if (rv == 0 && cfg->admin_address[0] != '\0') {
    rv = h3g_admin_new(&s->admin, &s->loop, cfg->admin_address,
                       cfg->admin_port);
    if (rv == 0)
      admin_setup(s);
  }

  uv_signal_init(&s->loop, &s->sigterm);
  uv_signal_init(&s->loop, &s->sigint);
  uv_signal_init(&s->loop, &s->sighup);
  uv_signal_init(&s->loop, &s->sigusr1);
  uv_timer_init(&s->loop, &s->drain_timer);
  uv_timer_init(&s->loop, &s->secrets_timer);
  uv_timer_init(&s->loop, &s->trim_timer);
  uv_check_init(&s->loop, &s->flush);
  s->sigterm.data = s->sigint.data = s->sighup.data = s->sigusr1.data = s;
  s->drain_timer.data = s;
  s->secrets_timer.data = s;
  s->trim_timer.data = s;
  if (rv == 0) {
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_signal_start(&s->sigusr1, on_sigusr1, SIGUSR1);
    if (cfg->secrets_file[0] != '\0')
      uv_timer_start(&s->secrets_timer, on_secrets_timer, SECRETS_CHECK_MS,
                     SECRETS_CHECK_MS);
    uv_check_start(&s->flush, on_flush);
    (void)write_pid_file(cfg);
    h3g_idle_trim_init(&s->trim, &h3g_stats);
    uv_timer_start(&s->trim_timer, on_trim_timer, IDLE_TRIM_TICK_MS,
                   IDLE_TRIM_TICK_MS);
    char where[512];
    ready_addresses(s, where, sizeof(where));
    size_t nservers = 0;
    for (uint32_t i = 0; i < cfg->ngroups; i++)
      nservers += cfg->groups[i].nservers;
    if (cfg->ngroups == 1 && nservers == 1)
      h3g_info("h3gate %s ready: %s; upstream %s, pool %u", H3G_VERSION, where,
               cfg->groups[0].servers[0].address, cfg->groups[0].pool_size);
    else
      h3g_info("h3gate %s ready: %s; %u routes, %u upstream groups, %zu "
               "servers",
               H3G_VERSION, where, cfg->nroutes, cfg->ngroups, nservers);
    s->exit_status = 0;
  } else {
    /* What was opened closes, and the process exits 1. */
    s->exit_status = 1;
    h3g_error("start-up failed: stopping");
    begin_shutdown(s);
  }

  uv_run(&s->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&s->loop) != 0) {
    /* A handle someone forgot: close whatever is left so the loop can end,
     * and say so (a bug, but not a reason to hang on exit). */
    h3g_warn("handles left open at exit");
    uv_walk(&s->loop, close_leftover, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
  }
  h3g_router_free(s->router);
  h3g_tls_ctx_free(s->tls);
  h3g_tls_ctx_free(s->tls_tcp);
  for (size_t i = 0; i < s->nold_tls; i++)
    h3g_tls_ctx_free(s->old_tls[i]);
  free(s->old_tls);
  remove_pid_file(cfg->pid_file);
  h3g_secrets_free(s->secrets);
  h3g_tls_cleanup();
  h3g_access_log_close();
  h3g_keylog_close();
  int status = s->exit_status;
  free(s);
  return status;
}
