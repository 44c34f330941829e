/*
 * Name resolution of one upstream server, on libuv.
 *
 * One timer and one uv_getaddrinfo request at a time: the timer is re-armed
 * only when the request is answered, so lookups never overlap and a slow
 * DNS server slows the interval down instead of piling requests up.
 *
 * The timer handle exists even when nothing is re-resolved (it is then
 * never started, so it keeps no loop alive): closing it is what gives
 * h3g_resolver_close() its callback from the loop in every case.
 *
 * The request may be running on a worker thread when the resolver is
 * closed; uv_cancel() cannot stop it then, and its callback will come
 * whatever we do. So the resolver is freed only once that callback has
 * run (resolver_maybe_finish()), never from inside h3g_resolver_close().
 */
#include "resolver.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "log.h"

struct h3g_resolver {
  uv_loop_t *loop;
  char *host, *name;
  uint16_t port;
  uint64_t interval_ms;
  void (*on_change)(void *arg);
  void *arg;
  struct sockaddr_storage addr;
  char address[sizeof("[]:65535") + INET6_ADDRSTRLEN];
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  h3g_resolver_stats stats;
  int closing;
  int timer_closed;
  int resolving; /* gai is in flight */
  int failing;   /* the failure was logged; quiet until a success */
  int (*hook)(void *arg, int status, struct sockaddr_storage *addr);
  void *hook_arg;
  void (*close_cb)(void *arg);
  void *close_arg;
};

static const struct addrinfo resolve_hints = {
    .ai_family = AF_UNSPEC,
    .ai_socktype = SOCK_STREAM,
    .ai_protocol = IPPROTO_TCP,
    .ai_flags = AI_NUMERICSERV,
};

/* The first IPv4 or IPv6 address of res into *out. Returns 0 or
 * H3G_ERR_NOTFOUND. */
static int first_usable(const struct addrinfo *res,
                        struct sockaddr_storage *out) {
  for (; res != NULL; res = res->ai_next) {
    if ((res->ai_family != AF_INET && res->ai_family != AF_INET6) ||
        res->ai_addrlen > sizeof(*out))
      continue;
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    return 0;
  }
  return H3G_ERR_NOTFOUND;
}

static int same_address(const struct sockaddr_storage *a,
                        const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family)
    return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
         memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* r->address from r->addr. */
static void format_address(h3g_resolver *r) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int v6 = r->addr.ss_family == AF_INET6;
  if (v6)
    uv_ip6_name((const struct sockaddr_in6 *)&r->addr, ip, sizeof(ip));
  else
    uv_ip4_name((const struct sockaddr_in *)&r->addr, ip, sizeof(ip));
  snprintf(r->address, sizeof(r->address), v6 ? "[%s]:%u" : "%s:%u", ip,
           (unsigned)h3g_sockaddr_port((const struct sockaddr *)&r->addr));
}

/* The lookup at creation, blocking. */
static int resolve_now(const char *host, uint16_t port,
                       struct sockaddr_storage *out) {
  struct addrinfo *res = NULL;
  char service[8];
  snprintf(service, sizeof(service), "%u", (unsigned)port);
  int rv = getaddrinfo(host, service, &resolve_hints, &res);
  if (rv != 0) {
    h3g_warn("upstream %s: cannot resolve: %s", host, gai_strerror(rv));
    return rv == EAI_MEMORY ? H3G_ERR_NOMEM : H3G_ERR_NOTFOUND;
  }
  int err = first_usable(res, out);
  freeaddrinfo(res);
  return err;
}

/* A literal address needs no re-resolution; the answer does not block. */
static int host_is_literal(const char *host) {
  struct addrinfo hints = {.ai_flags = AI_NUMERICHOST};
  struct addrinfo *res = NULL;
  if (getaddrinfo(host, NULL, &hints, &res) != 0)
    return 0;
  freeaddrinfo(res);
  return 1;
}

static void resolver_free(h3g_resolver *r) {
  if (r == NULL)
    return;
  free(r->host);
  free(r->name);
  free(r);
}

/* Frees r once nothing refers to it: its timer closed, and no
 * getaddrinfo request in flight (its callback would find r gone). */
static void resolver_maybe_finish(h3g_resolver *r) {
  if (!r->closing || !r->timer_closed || r->resolving)
    return;
  if (r->close_cb != NULL)
    r->close_cb(r->close_arg);
  resolver_free(r);
}

/* The address is *a from now on. */
static void resolver_set_address(h3g_resolver *r,
                                 const struct sockaddr_storage *a) {
  char was[sizeof(r->address)];
  memcpy(was, r->address, sizeof(was));
  r->addr = *a;
  format_address(r);
  h3g_info("upstream %s: %s now resolves to %s (was %s)", r->name, r->host,
           r->address, was);
  if (r->on_change != NULL)
    r->on_change(r->arg);
}

static void on_timer(uv_timer_t *t);

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  h3g_resolver *r = req->data;
  r->resolving = 0;
  if (r->closing) { /* cancelled (UV_EAI_CANCELED), or finished anyway */
    uv_freeaddrinfo(res);
    resolver_maybe_finish(r);
    return;
  }
  struct sockaddr_storage a;
  int err = status == 0 ? first_usable(res, &a) : H3G_ERR_NOTFOUND;
  uv_freeaddrinfo(res);
  r->stats.resolutions++;
  if (r->hook != NULL)
    err = r->hook(r->hook_arg, err, &a);
  if (err != 0) {
    r->stats.failures++;
    if (!r->failing)
      h3g_warn("upstream %s: cannot resolve %s (%s); keeping %s", r->name,
               r->host, status != 0 ? uv_strerror(status) : "no usable address",
               r->address);
    r->failing = 1;
  } else {
    if (r->failing)
      h3g_info("upstream %s: %s resolves again", r->name, r->host);
    r->failing = 0;
    if (!same_address(&a, &r->addr))
      resolver_set_address(r, &a); /* on_change may close r */
  }
  if (!r->closing)
    uv_timer_start(&r->timer, on_timer, r->interval_ms, 0);
}

static void on_timer(uv_timer_t *t) {
  h3g_resolver *r = t->data;
  char service[8];
  snprintf(service, sizeof(service), "%u", (unsigned)r->port);
  /* libuv copies host, service and hints into the request. */
  r->gai.data = r;
  int rv = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, service,
                          &resolve_hints);
  if (rv != 0) {
    if (!r->failing)
      h3g_warn("upstream %s: cannot resolve %s (%s); keeping %s", r->name,
               r->host, uv_strerror(rv), r->address);
    r->failing = 1;
    uv_timer_start(&r->timer, on_timer, r->interval_ms, 0);
    return;
  }
  r->resolving = 1;
}

static void on_timer_close(uv_handle_t *h) {
  h3g_resolver *r = h->data;
  r->timer_closed = 1;
  resolver_maybe_finish(r);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

int h3g_resolver_new(h3g_resolver **rp, void *loop,
                     const h3g_resolver_config *cfg) {
  *rp = NULL;
  if (loop == NULL || cfg == NULL || cfg->host == NULL || cfg->host[0] == '\0')
    return H3G_ERR_INVAL;
  h3g_resolver *r = malloc(sizeof(*r));
  if (r == NULL)
    return H3G_ERR_NOMEM;
  *r = (h3g_resolver){
      .loop = loop,
      .port = cfg->port,
      .interval_ms = cfg->interval_ms,
      .on_change = cfg->on_change,
      .arg = cfg->arg,
  };
  r->host = dup_str(cfg->host);
  r->name = dup_str(cfg->name != NULL ? cfg->name : cfg->host);
  int rv = r->host == NULL || r->name == NULL
               ? H3G_ERR_NOMEM
               : resolve_now(r->host, r->port, &r->addr);
  if (rv != 0) {
    resolver_free(r);
    return rv;
  }
  format_address(r);
  uv_timer_init(r->loop, &r->timer);
  r->timer.data = r;
  if (r->interval_ms > 0 && !host_is_literal(r->host))
    uv_timer_start(&r->timer, on_timer, r->interval_ms, 0);
  *rp = r;
  return 0;
}

void h3g_resolver_close(h3g_resolver *r, void (*cb)(void *arg), void *arg) {
  if (r == NULL)
    return;
  if (r->closing) {
    h3g_warn("upstream %s: resolver closed twice", r->name);
    return;
  }
  r->closing = 1;
  r->close_cb = cb;
  r->close_arg = arg;
  uv_close((uv_handle_t *)&r->timer, on_timer_close);
  /* When the lookup already runs on a worker thread, uv_cancel() fails and
   * its callback comes when it is done; either way resolver_maybe_finish()
   * waits for that callback. */
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->gai);
}

const char *h3g_resolver_address(const h3g_resolver *r) {
  return r->address;
}

const struct sockaddr *h3g_resolver_sockaddr(const h3g_resolver *r) {
  return (const struct sockaddr *)&r->addr;
}

void h3g_resolver_get_stats(const h3g_resolver *r, h3g_resolver_stats *out) {
  *out = r->stats;
  out->resolving = r->resolving ? 1 : 0;
}

void h3g_resolver_set_hook(h3g_resolver *r,
                           int (*hook)(void *arg, int status,
                                       struct sockaddr_storage *addr),
                           void *arg) {
  r->hook = hook;
  r->hook_arg = arg;
}
