/*
 * Alt-Svc values. With upstream = keep, a response that carries its own
 * Alt-Svc passes unchanged and ours is not added (two fields would be one
 * list to the client, RFC 7838 §3, and the upstream knows its topology
 * better); a response without one still gets ours.
 */
#include "alt_svc.h"

#include <stdio.h>
#include <string.h>

void h3g_alt_svc_init(h3g_alt_svc *a, const h3g_config *cfg) {
  *a = (h3g_alt_svc){
      .enabled = cfg->alt_svc_enabled != 0,
      .keep_upstream = cfg->alt_svc_upstream == H3G_ALT_SVC_KEEP,
      .cfg_port = cfg->alt_svc_port,
      .port = cfg->alt_svc_port,
      .max_age = cfg->alt_svc_max_age,
      .quic = H3G_ALT_SVC_QUIC_OFF,
  };
  snprintf(a->host, sizeof(a->host), "%s", cfg->alt_svc_host);
}

void h3g_alt_svc_set_quic(h3g_alt_svc *a, h3g_alt_svc_quic state,
                          uint16_t udp_port) {
  a->quic = state;
  a->port = a->cfg_port != 0 ? a->cfg_port : udp_port;
}

size_t h3g_alt_svc_value(const h3g_alt_svc *a, char *buf, size_t cap) {
  int n;
  if (!a->enabled || a->quic == H3G_ALT_SVC_QUIC_OFF)
    return 0;
  if (a->quic == H3G_ALT_SVC_QUIC_DRAINING ||
      a->quic == H3G_ALT_SVC_QUIC_FAILED)
    n = snprintf(buf, cap, "clear");
  else if (a->port == 0)
    return 0;
  else if (a->host[0] == '\0')
    n = snprintf(buf, cap, "h3=\":%u\"; ma=%u", a->port, a->max_age);
  else if (strchr(a->host, ':') != NULL) /* an IPv6 literal */
    n = snprintf(buf, cap, "h3=\"[%s]:%u\"; ma=%u", a->host, a->port,
                 a->max_age);
  else
    n = snprintf(buf, cap, "h3=\"%s:%u\"; ma=%u", a->host, a->port, a->max_age);
  if (n < 0 || (size_t)n >= cap)
    return 0;
  return (size_t)n;
}

int h3g_alt_svc_replaces_upstream(const h3g_alt_svc *a) {
  return a->enabled && !a->keep_upstream && a->quic != H3G_ALT_SVC_QUIC_OFF;
}

int h3g_alt_svc_adds(const h3g_alt_svc *a) {
  return a->enabled && a->quic != H3G_ALT_SVC_QUIC_OFF &&
         (a->quic != H3G_ALT_SVC_QUIC_SERVING || a->port != 0);
}
