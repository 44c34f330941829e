/* Routes and upstream groups for /metrics and /upstreams: see the header. */
#include "upstream_view.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct out {
  char *buf;
  size_t cap, used;
} out;

static void put(out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(out *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = o->used < o->cap ? o->cap - o->used : 0;
  int n = vsnprintf(room ? o->buf + o->used : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    o->used += (size_t)n;
}

/* s as a Prometheus label value or a JSON string body: '\\', '"' and
 * control bytes escaped (both formats read "\\n" and "\\\\" alike; other
 * control bytes become \\u00XX, which only JSON needs: label values here
 * are names and addresses, never control bytes but for a hostile path). */
static void put_escaped(out *o, const char *s, int json) {
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      put(o, "\\%c", c);
    else if (c == '\n')
      put(o, "\\n");
    else if (c < 0x20)
      put(o, json ? "\\u%04x" : "?", c);
    else
      put(o, "%c", c);
  }
}

static const char *const classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

static void header(out *o, const char *name, const char *type,
                   const char *help) {
  put(o, "# HELP h3gate_%s %s\n# TYPE h3gate_%s %s\n", name, help, name, type);
}

static void route_label(out *o, const h3g_route *r) {
  put(o, "{route=\"");
  put_escaped(o, r->conf->name, 0);
  put(o, "\"");
}

static void server_label(out *o, const h3g_group_conf *g,
                         const h3g_server_view *v) {
  put(o, "{group=\"");
  put_escaped(o, g->name, 0);
  put(o, "\",server=\"");
  put_escaped(o, v->conf->address, 0);
  put(o, "\"");
}

/* One route's histogram for one protocol: cumulative buckets, +Inf (the
 * count), sum and count. */
static void put_histogram(out *o, const char *name, const h3g_route *r,
                          const char *proto, const h3g_histogram *h) {
  uint64_t cum = 0;
  for (unsigned i = 0; i <= H3G_HIST_BOUNDS; i++) {
    cum += h->counts[i];
    put(o, "h3gate_%s_bucket", name);
    route_label(o, r);
    put(o, ",protocol=\"%s\",le=\"%s\"} %llu\n", proto,
        i < H3G_HIST_BOUNDS ? h3g_hist_bound_label(i) : "+Inf",
        (unsigned long long)cum);
  }
  put(o, "h3gate_%s_sum", name);
  route_label(o, r);
  put(o, ",protocol=\"%s\"} %.6f\n", proto, (double)h->sum_us / 1e6);
  put(o, "h3gate_%s_count", name);
  route_label(o, r);
  put(o, ",protocol=\"%s\"} %llu\n", proto, (unsigned long long)h->count);
}

/* The routes' histograms, every route and protocol (a fixed set of
 * series: H3G_ROUTE_PROTOCOLS per route, each of H3G_HIST_BOUNDS + 3
 * samples). */
static void put_histograms(out *o, h3g_router *router, size_t nr) {
  static const struct {
    const char *name, *help;
    int first_byte;
  } hist[] = {
      {"request_duration_seconds",
       "request durations by route and client protocol, head received to "
       "last byte handed over (WebSocket tunnels: their whole life)",
       0},
      {"upstream_first_byte_seconds",
       "time from handing a request its upstream connection to the first "
       "response byte, by route and client protocol",
       1},
  };
  for (size_t k = 0; k < H3G_ARRAY_LEN(hist); k++) {
    header(o, hist[k].name, "histogram", hist[k].help);
    for (size_t i = 0; i < nr; i++) {
      const h3g_route *r = h3g_router_route(router, i);
      for (int p = 0; p < H3G_ROUTE_PROTOCOLS; p++)
        put_histogram(o, hist[k].name, r, h3g_route_protocols[p],
                      hist[k].first_byte ? &r->stats->first_byte[p]
                                         : &r->stats->duration[p]);
    }
  }
}

size_t h3g_upstream_view_metrics(const void *arg, char *buf, size_t cap) {
  const h3g_upstream_view *view = arg;
  out o = {.buf = buf, .cap = cap};
  size_t nr = view->router != NULL ? h3g_router_count(view->router) : 0;

  header(&o, "route_requests_total", "counter", "requests routed, by route");
  for (size_t i = 0; i < nr; i++) {
    const h3g_route *r = h3g_router_route(view->router, i);
    put(&o, "h3gate_route_requests_total");
    route_label(&o, r);
    put(&o, "} %llu\n", (unsigned long long)r->stats->requests);
  }
  header(&o, "route_responses_total", "counter",
         "responses sent, by route and status class");
  for (size_t i = 0; i < nr; i++) {
    const h3g_route *r = h3g_router_route(view->router, i);
    for (int k = 0; k < 5; k++) {
      put(&o, "h3gate_route_responses_total");
      route_label(&o, r);
      put(&o, ",class=\"%s\"} %llu\n", classes[k],
          (unsigned long long)r->stats->responses[k]);
    }
  }
  header(&o, "route_request_duration_seconds", "summary",
         "request durations, head received to last byte handed over");
  for (size_t i = 0; i < nr; i++) {
    const h3g_route *r = h3g_router_route(view->router, i);
    put(&o, "h3gate_route_request_duration_seconds_sum");
    route_label(&o, r);
    put(&o, "} %.6f\n", (double)r->stats->duration_us_sum / 1e6);
    put(&o, "h3gate_route_request_duration_seconds_count");
    route_label(&o, r);
    put(&o, "} %llu\n", (unsigned long long)r->stats->duration_count);
  }

  put_histograms(&o, view->router, nr);

  static const struct {
    const char *name, *type, *help;
  } series[] = {
      {"upstream_server_up", "gauge",
       "1 while the server is in service, 0 while it is out"},
      {"upstream_server_requests_total", "counter",
       "requests sent to the server (each try counts)"},
      {"upstream_server_failures_total", "counter",
       "connects refused or timed out, connections reset or timed out"},
      {"upstream_server_responses_total", "counter",
       "responses from the server's requests, by status class"},
      {"upstream_server_first_byte_seconds", "summary",
       "time from sending a request to the first response byte"},
      {"upstream_server_connections", "gauge",
       "the server's pool connections, by state"},
      {"upstream_server_waiting", "gauge",
       "requests waiting for a connection to the server"},
      {"upstream_server_connects_total", "counter",
       "connections to the server opened (and handed over)"},
      {"upstream_server_connect_failures_total", "counter",
       "connects to the server that failed (refused, timed out, TLS)"},
      {"upstream_server_reuses_total", "counter",
       "requests served on a kept-alive connection"},
      {"upstream_server_health_checks_total", "counter",
       "active health checks of the server, and failed ones"},
  };
  for (size_t k = 0; k < H3G_ARRAY_LEN(series); k++) {
    header(&o, series[k].name, series[k].type, series[k].help);
    for (size_t gi = 0; gi < view->ngroups; gi++) {
      const h3g_upstream_group *g = view->groups[gi];
      if (g == NULL)
        continue;
      const h3g_group_conf *gc = h3g_upstream_group_conf(g);
      for (size_t si = 0; si < h3g_upstream_group_size(g); si++) {
        h3g_server_view v;
        h3g_upstream_group_server(g, si, &v);
        switch (k) {
        case 0:
          put(&o, "h3gate_%s", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %d\n", v.up);
          break;
        case 1:
          put(&o, "h3gate_%s", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %llu\n", (unsigned long long)v.requests);
          break;
        case 2:
          put(&o, "h3gate_%s", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %llu\n", (unsigned long long)v.failures);
          break;
        case 3:
          for (int c = 0; c < 5; c++) {
            put(&o, "h3gate_%s", series[k].name);
            server_label(&o, gc, &v);
            put(&o, ",class=\"%s\"} %llu\n", classes[c],
                (unsigned long long)v.responses[c]);
          }
          break;
        case 4:
          put(&o, "h3gate_%s_sum", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %.6f\n", (double)v.first_byte_us_sum / 1e6);
          put(&o, "h3gate_%s_count", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %llu\n", (unsigned long long)v.first_byte_count);
          break;
        case 5: {
          const char *states[] = {"busy", "idle", "connecting"};
          uint32_t counts[] = {v.pool.busy, v.pool.idle, v.pool.connecting};
          for (int c = 0; c < 3; c++) {
            put(&o, "h3gate_%s", series[k].name);
            server_label(&o, gc, &v);
            put(&o, ",state=\"%s\"} %u\n", states[c], counts[c]);
          }
          break;
        }
        case 6:
          put(&o, "h3gate_%s", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %u\n", v.pool.waiting);
          break;
        case 7:
        case 8:
        case 9:
          put(&o, "h3gate_%s", series[k].name);
          server_label(&o, gc, &v);
          put(&o, "} %llu\n",
              (unsigned long long)(k == 7   ? v.pool.opened
                                   : k == 8 ? v.pool.failed
                                            : v.pool.reused));
          break;
        default:
          for (int c = 0; c < 2; c++) {
            put(&o, "h3gate_%s", series[k].name);
            server_label(&o, gc, &v);
            put(&o, ",result=\"%s\"} %llu\n", c ? "failed" : "all",
                (unsigned long long)(c ? v.health_failures : v.health_checks));
          }
          break;
        }
      }
    }
  }
  return o.used;
}

static void put_json_string(out *o, const char *s) {
  put(o, "\"");
  put_escaped(o, s, 1);
  put(o, "\"");
}

static void put_json_words(out *o, char *const *words, uint32_t n) {
  put(o, "[");
  for (uint32_t i = 0; i < n; i++) {
    put(o, i ? ", " : "");
    put_json_string(o, words[i]);
  }
  put(o, "]");
}

static const char *const balance_names[] = {"round_robin", "least_conn",
                                            "hash"};

size_t h3g_upstream_view_json(const void *arg, char *buf, size_t cap) {
  const h3g_upstream_view *view = arg;
  out o = {.buf = buf, .cap = cap};
  put(&o, "{\"groups\": [");
  for (size_t gi = 0; gi < view->ngroups; gi++) {
    const h3g_upstream_group *g = view->groups[gi];
    if (g == NULL)
      continue;
    const h3g_group_conf *gc = h3g_upstream_group_conf(g);
    put(&o, "%s\n  {\"name\": ", gi ? "," : "");
    put_json_string(&o, gc->name);
    put(&o, ", \"balance\": \"%s\", \"health_check\": ",
        balance_names[gc->balance]);
    if (gc->health_check[0] != '\0')
      put_json_string(&o, gc->health_check);
    else
      put(&o, "null");
    put(&o, ", \"servers\": [");
    for (size_t si = 0; si < h3g_upstream_group_size(g); si++) {
      h3g_server_view v;
      h3g_upstream_group_server(g, si, &v);
      put(&o, "%s\n    {\"address\": ", si ? "," : "");
      put_json_string(&o, v.conf->address);
      put(&o,
          ", \"weight\": %u, \"backup\": %s, \"up\": %s, \"passive_out\": %s"
          ", \"active_out\": %s, \"checked\": %s, \"fails\": %u"
          ", \"cooldown_ms\": %llu"
          ", \"busy\": %u, \"idle\": %u, \"connecting\": %u, \"waiting\": %u"
          ", \"requests\": %llu, \"failures\": %llu}",
          v.conf->weight, v.conf->backup ? "true" : "false",
          v.up ? "true" : "false", v.passive_out ? "true" : "false",
          v.active_out ? "true" : "false", v.checked ? "true" : "false",
          v.fails, (unsigned long long)v.cooldown_left_ms, v.pool.busy,
          v.pool.idle, v.pool.connecting, v.pool.waiting,
          (unsigned long long)v.requests, (unsigned long long)v.failures);
    }
    put(&o, "]}");
  }
  put(&o, "],\n \"routes\": [");
  size_t nr = view->router != NULL ? h3g_router_count(view->router) : 0;
  for (size_t i = 0; i < nr; i++) {
    const h3g_route *r = h3g_router_route(view->router, i);
    put(&o, "%s\n  {\"name\": ", i ? "," : "");
    put_json_string(&o, r->conf->name);
    put(&o, ", \"hosts\": ");
    put_json_words(&o, r->conf->hosts, r->conf->nhosts);
    put(&o, ", \"paths\": ");
    put_json_words(&o, r->conf->paths, r->conf->npaths);
    put(&o, ", \"upstream\": ");
    put_json_string(&o, r->conf->upstream);
    put(&o, ", \"requests\": %llu}", (unsigned long long)r->stats->requests);
  }
  put(&o, "]}\n");
  return o.used;
}
