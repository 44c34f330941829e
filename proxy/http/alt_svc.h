/*
 * The Alt-Svc field value (RFC 7838) that tells clients of the TCP
 * listener where HTTP/3 is served: h3=":PORT"; ma=SECONDS, or
 * h3="HOST:PORT"; ma=SECONDS when a host is configured, "clear" while the
 * gateway drains and once its UDP socket failed (RFC 7838 §3: clients
 * forget the h3 they learned, instead of trying a dead path until max-age
 * runs out), and nothing at all when the QUIC listener does not serve
 * (disabled, or not started).
 *
 * A leaf module: depends on common.h and config.h. The server tells it the
 * QUIC listener's state; front ends ask for the value per response.
 */
#ifndef H3G_ALT_SVC_H
#define H3G_ALT_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "config.h"

/* What the QUIC listener is doing, as far as advertising goes. */
typedef enum h3g_alt_svc_quic {
  H3G_ALT_SVC_QUIC_OFF = 0,  /* not serving: advertise nothing */
  H3G_ALT_SVC_QUIC_SERVING,  /* advertise h3 */
  H3G_ALT_SVC_QUIC_DRAINING, /* shutting down: "clear" */
  H3G_ALT_SVC_QUIC_FAILED    /* the UDP socket failed for good: "clear" */
} h3g_alt_svc_quic;

typedef struct h3g_alt_svc {
  int enabled;             /* [alt_svc] enabled */
  int keep_upstream;       /* [alt_svc] upstream = keep */
  uint16_t port;           /* advertised port; 0 until the QUIC port is known */
  uint16_t cfg_port;       /* [alt_svc] port, 0 = the UDP port */
  uint32_t max_age;        /* seconds */
  char host[H3G_HOST_MAX]; /* "" = same host */
  h3g_alt_svc_quic quic;
} h3g_alt_svc;

/* Reads [alt_svc] from cfg; the QUIC state starts OFF. */
void h3g_alt_svc_init(h3g_alt_svc *a, const h3g_config *cfg);

/* The QUIC listener's state and its bound UDP port (used when [alt_svc]
 * port is 0). */
void h3g_alt_svc_set_quic(h3g_alt_svc *a, h3g_alt_svc_quic state,
                          uint16_t udp_port);

/*
 * Writes the field value (no NUL needed, but one is added when it fits)
 * into buf. Returns its length, or 0 when no Alt-Svc field should be sent
 * (disabled, QUIC not serving, or cap too small: 300 bytes always fit).
 * Usable for HTTP/3 responses as well as TCP ones.
 */
size_t h3g_alt_svc_value(const h3g_alt_svc *a, char *buf, size_t cap);

/* 1 if a response's own Alt-Svc field must be dropped (ours replaces it):
 * enabled, upstream = replace, and QUIC serving, draining or failed. */
int h3g_alt_svc_replaces_upstream(const h3g_alt_svc *a);

/* 1 if ours is added (h3g_alt_svc_value would return > 0) and the
 * upstream's, if any, is not kept instead. */
int h3g_alt_svc_adds(const h3g_alt_svc *a);

#endif /* H3G_ALT_SVC_H */
