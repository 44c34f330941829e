/*
 * The accounting of one exchange (bridge_log.h).
 */
#include "bridge_log.h"

#include <string.h>

#include "common.h"
#include "log.h"

void h3g_bridge_log_start(h3g_bridge_log *l) {
  *l = (h3g_bridge_log){
      .start_ns = h3g_now_ns(),
      .start_wall_us = h3g_wall_us(),
  };
}

void h3g_bridge_log_sent(h3g_bridge_log *l, uint64_t connect_us) {
  l->sent_ns = h3g_now_ns();
  l->first_byte_us = 0;
  l->connect_us = connect_us;
}

void h3g_bridge_log_read(h3g_bridge_log *l, size_t nread) {
  if (l->first_byte_us == 0 && nread > 0 && l->sent_ns != 0)
    l->first_byte_us = H3G_MAX((h3g_now_ns() - l->sent_ns) / 1000u, 1u);
}

/* A NUL-terminated copy of a field value for the access log. */
static void field_str(const h3g_field *f, char *out, size_t cap) {
  size_t n = f->namelen ? H3G_MIN(f->valuelen, cap - 1) : 0;
  if (n)
    memcpy(out, f->value, n);
  out[n] = '\0';
}

/* The server that answered (or failed), else the upstream's name; "-"
 * when the gateway answered alone. */
static const char *upstream_name(const h3g_bridge_end *e) {
  if (e->ops == NULL)
    return "-";
  const char *n = e->ops->server_name != NULL
                      ? e->ops->server_name(e->pool, e->waiter)
                      : NULL;
  return n != NULL ? n : e->ops->name(e->pool);
}

/* A request field's value for the access log ("" when absent). */
static void header_str(const h3g_headers *fields, const char *name, char *out,
                       size_t cap) {
  const h3g_field *f = h3g_headers_find(fields, name);
  if (f != NULL)
    field_str(f, out, cap);
  else
    out[0] = '\0';
}

void h3g_bridge_log_end(const h3g_bridge_log *l, const h3g_bridge_end *e) {
  char method[32], authority[256], path[1024], referer[512], agent[512];
  h3g_request_pseudo ps;
  if (e->pseudo != NULL) {
    ps = *e->pseudo;
  } else {
    /* A refused request still gets a line; show what it claimed. */
    const h3g_field *f;
    memset(&ps, 0, sizeof(ps));
    if ((f = h3g_headers_find(e->fields, ":method")) != NULL)
      ps.method = *f;
    if ((f = h3g_headers_find(e->fields, ":authority")) != NULL)
      ps.authority = *f;
    if ((f = h3g_headers_find(e->fields, ":path")) != NULL)
      ps.path = *f;
  }
  field_str(&ps.method, method, sizeof(method));
  field_str(&ps.authority, authority, sizeof(authority));
  field_str(&ps.path, path, sizeof(path));
  header_str(e->fields, "referer", referer, sizeof(referer));
  header_str(e->fields, "user-agent", agent, sizeof(agent));
  h3g_access_record rec = {
      .start_wall_us = l->start_wall_us,
      .duration_us = (h3g_now_ns() - l->start_ns) / 1000u,
      .client = e->client,
      .protocol = e->protocol,
      .method = method,
      .authority = authority,
      .path = path,
      .status = e->status,
      .bytes_in = l->bytes_in,
      .bytes_out = l->bytes_out,
      .upstream = upstream_name(e),
      .route = e->route != NULL ? e->route->conf->name : "-",
      .outcome = e->outcome,
      .tunnel = e->tunnel,
      .connect_us = l->sent_ns != 0 ? (int64_t)l->connect_us : -1,
      .first_byte_us = l->first_byte_us != 0 ? (int64_t)l->first_byte_us : -1,
      .cid = e->cid,
      .early = e->early,
      .referer = referer,
      .user_agent = agent,
  };
  h3g_access_log(&rec);
  if (e->route != NULL) {
    h3g_route_stats *st = e->route->stats;
    if (rec.status >= 100 && rec.status < 600)
      st->responses[rec.status / 100 - 1]++;
    st->duration_us_sum += rec.duration_us;
    st->duration_count++;
    int proto = h3g_route_protocol(e->protocol);
    if (proto >= 0) {
      h3g_histogram_observe(&st->duration[proto], rec.duration_us);
      if (l->first_byte_us != 0)
        h3g_histogram_observe(&st->first_byte[proto], l->first_byte_us);
    }
  }
  if (e->ops != NULL && e->ops->finish != NULL)
    e->ops->finish(e->pool, e->waiter, rec.status, l->first_byte_us);
}
