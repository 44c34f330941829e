/*
 * The forwarded request's fields (forwarding.h).
 */
#include "forwarding.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void h3g_forward_client_ip(const char *client, char *out, size_t cap) {
  const char *c = client;
  size_t n;
  if (c[0] == '[') {
    const char *end = strchr(c, ']');
    c++;
    n = end != NULL ? (size_t)(end - c) : strlen(c);
  } else {
    const char *colon = strrchr(c, ':');
    n = colon != NULL ? (size_t)(colon - c) : strlen(c);
  }
  n = H3G_MIN(n, cap - 1);
  memcpy(out, c, n);
  out[n] = '\0';
}

static int route_removes(const h3g_route_settings *rs, const h3g_field *f) {
  for (uint32_t i = 0; i < rs->nremove_request; i++)
    if (h3g_field_name_eq(f, rs->remove_request[i].name))
      return 1;
  return 0;
}

/* A trusted proxy's Forwarded, X-Forwarded-For or Via that we join with
 * our own entry (the route adds ours); when we add none, its chain is
 * passed on as received. */
static int joined_with_ours(const h3g_route_settings *rs, const h3g_field *f) {
  return (rs->fwd_forwarded && h3g_field_name_eq(f, "forwarded")) ||
         (rs->fwd_x_forwarded && h3g_field_name_eq(f, "x-forwarded-for")) ||
         (rs->fwd_via && h3g_field_name_eq(f, "via"));
}

typedef struct fwd_build {
  const h3g_forward_in *in;
  h3g_forward *out;
  int trusted;
  size_t vcap;  /* of out->values */
  size_t vused; /* bytes of out->values used */
} fwd_build;

/* Appends "name: <a trusted proxy's values, joined>, <ours>" to extra. */
__attribute__((format(printf, 3, 4))) static void
add_joined(fwd_build *fb, const char *name, const char *fmt, ...) {
  const h3g_headers *h = fb->in->fields;
  char *v = fb->out->values + fb->vused;
  size_t vl = 0;
  for (size_t i = 0; fb->trusted && i < h->nfields; i++) {
    const h3g_field *f = &h->fields[i];
    /* What the route removes is gone, from the chain too (and was not
     * counted in vcap). */
    if (h3g_field_name_eq(f, name) && !route_removes(fb->in->rs, f)) {
      memcpy(v + vl, f->value, f->valuelen);
      vl += f->valuelen;
      v[vl++] = ',';
      v[vl++] = ' ';
    }
  }
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(v + vl, fb->vcap - fb->vused - vl, fmt, ap);
  va_end(ap);
  vl += w > 0 ? (size_t)w : 0;
  fb->out->extra[fb->out->nextra++] =
      (h3g_field){(const uint8_t *)name, strlen(name), (const uint8_t *)v, vl};
  fb->vused += vl;
}

static void add_field(h3g_forward *out, const char *name, const uint8_t *value,
                      size_t valuelen) {
  out->extra[out->nextra++] =
      (h3g_field){(const uint8_t *)name, strlen(name), value, valuelen};
}

int h3g_forward_build(h3g_forward *out, const h3g_forward_in *in) {
  const h3g_headers *h = in->fields;
  const h3g_route_settings *rs = in->rs;
  size_t n = h->nfields;
  *out = (h3g_forward){0};
  out->fields = malloc(sizeof(*out->fields) * (n ? n : 1));
  if (out->fields == NULL)
    return H3G_ERR_NOMEM;
  char ip[64];
  h3g_forward_client_ip(in->client, ip, sizeof(ip));
  int trusted = h3g_config_is_trusted(in->cfg, ip);
  /* What a trusted proxy said before us, joined per field. */
  size_t theirs_len = 0;
  for (size_t i = 0; i < n; i++) {
    const h3g_field *f = &h->fields[i];
    if (f->namelen > 0 && f->name[0] == ':')
      continue;
    unsigned flags = h3g_field_flags(f->name, f->namelen);
    if (flags & H3G_FIELD_HOP_BY_HOP)
      continue;
    if (h3g_field_name_eq(f, "host") || h3g_field_name_eq(f, "content-length"))
      continue;
    if (route_removes(rs, f))
      continue;
    /* Ours replaces a client's Early-Data that is not "1" (early_data.h). */
    if (in->early_data && h3g_field_name_eq(f, "early-data"))
      continue;
    if (in->websocket_key != NULL &&
        (h3g_field_name_eq(f, "sec-websocket-key") ||
         h3g_field_name_eq(f, "sec-websocket-version")))
      continue;
    if (flags & H3G_FIELD_FORWARDING) {
      /* RFC 7239 §8.1: never pass on what an untrusted client claims. */
      if (!trusted)
        continue;
      if (joined_with_ours(rs, f)) {
        theirs_len += f->valuelen + 2;
        continue; /* re-emitted below with our entry appended */
      }
    }
    out->fields[out->nfields++] = *f;
  }
  const h3g_field *host = in->host;
  out->extra = malloc(sizeof(*out->extra) * (10 + rs->nadd_request));
  size_t hostlen = host ? host->valuelen : 0;
  fwd_build fb = {
      .in = in,
      .out = out,
      .trusted = trusted,
      .vcap = theirs_len + 3 * (hostlen + sizeof(ip) + 64),
  };
  out->values = out->extra != NULL ? malloc(fb.vcap) : NULL;
  if (out->values == NULL) {
    h3g_forward_free(out);
    return H3G_ERR_NOMEM;
  }
  if (in->websocket_key != NULL) {
    add_field(out, "connection", (const uint8_t *)"Upgrade", 7);
    add_field(out, "upgrade", (const uint8_t *)"websocket", 9);
    add_field(out, "sec-websocket-version", (const uint8_t *)"13", 2);
    add_field(out, "sec-websocket-key", (const uint8_t *)in->websocket_key,
              strlen(in->websocket_key));
  }
  int v6 = strchr(ip, ':') != NULL;
  int hl = (int)hostlen;
  const char *hv = host ? (const char *)host->value : "";
  if (rs->fwd_forwarded)
    add_joined(&fb, "forwarded", "for=%s%s%s;proto=https%s%.*s%s",
               v6 ? "\"[" : "", ip, v6 ? "]\"" : "", hostlen ? ";host=\"" : "",
               hl, hv, hostlen ? "\"" : "");
  if (rs->fwd_x_forwarded) {
    add_joined(&fb, "x-forwarded-for", "%s", ip);
    if (!trusted || h3g_headers_find(h, "x-forwarded-proto") == NULL)
      add_field(out, "x-forwarded-proto", (const uint8_t *)"https", 5);
    if (host != NULL &&
        (!trusted || h3g_headers_find(h, "x-forwarded-host") == NULL))
      add_field(out, "x-forwarded-host", host->value, host->valuelen);
  }
  if (in->early_data)
    add_field(out, "early-data", (const uint8_t *)"1", 1);
  if (rs->fwd_via)
    add_joined(&fb, "via", "%s h3gate",
               strcmp(in->protocol, "h3") == 0   ? "3"
               : strcmp(in->protocol, "h2") == 0 ? "2"
                                                 : "1.1");
  for (uint32_t i = 0; i < rs->nadd_request; i++) {
    const h3g_header_edit *e = &rs->add_request[i];
    add_field(out, e->name, (const uint8_t *)e->value, strlen(e->value));
    fb.vused += strlen(e->name) + strlen(e->value) + 4;
  }
  /* The upgrade's fields: names, values and separators. */
  out->extra_size = fb.vused + (in->websocket_key != NULL ? 128 : 0);
  return 0;
}

void h3g_forward_free(h3g_forward *f) {
  if (f == NULL)
    return;
  free(f->fields);
  free(f->extra);
  free(f->values);
  *f = (h3g_forward){0};
}
