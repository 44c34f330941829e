/* Alt-Svc values (RFC 7838) for the TCP listener's responses. */
#include "alt_svc.h"

#include <stdio.h>
#include <string.h>

#include "unit.h"

static size_t value(const h3g_alt_svc *a, char *buf) {
  return h3g_alt_svc_value(a, buf, 300);
}

static void test_defaults(void) {
  h3g_config cfg;
  h3g_alt_svc a;
  char buf[300];
  h3g_config_defaults(&cfg);
  h3g_alt_svc_init(&a, &cfg);
  /* Nothing until the QUIC listener serves. */
  CHECK_EQ_INT(value(&a, buf), 0);
  CHECK(!h3g_alt_svc_adds(&a));
  CHECK(!h3g_alt_svc_replaces_upstream(&a));
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_SERVING, 4433);
  size_t n = value(&a, buf);
  CHECK_MEM(buf, n, "h3=\":4433\"; ma=86400");
  CHECK(h3g_alt_svc_adds(&a));
  CHECK(h3g_alt_svc_replaces_upstream(&a));
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_DRAINING, 4433);
  n = value(&a, buf);
  CHECK_MEM(buf, n, "clear");
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_OFF, 4433);
  CHECK_EQ_INT(value(&a, buf), 0);
}

/* A UDP socket that failed at run time: clients are told to forget h3
 * (even with a port of 0, i.e. never known), and the upstream's own
 * advertisement is still replaced. */
static void test_failed(void) {
  h3g_config cfg;
  h3g_alt_svc a;
  char buf[300];
  h3g_config_defaults(&cfg);
  h3g_alt_svc_init(&a, &cfg);
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_SERVING, 4433);
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_FAILED, 4433);
  size_t n = value(&a, buf);
  CHECK_MEM(buf, n, "clear");
  CHECK(h3g_alt_svc_adds(&a));
  CHECK(h3g_alt_svc_replaces_upstream(&a));
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_FAILED, 0);
  n = value(&a, buf);
  CHECK_MEM(buf, n, "clear");
}

static void test_configured(void) {
  h3g_config cfg;
  h3g_alt_svc a;
  char buf[300];
  h3g_config_defaults(&cfg);
  cfg.alt_svc_port = 443;
  cfg.alt_svc_max_age = 60;
  snprintf(cfg.alt_svc_host, sizeof(cfg.alt_svc_host), "h3.example.com");
  h3g_alt_svc_init(&a, &cfg);
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_SERVING, 8443);
  size_t n = value(&a, buf);
  CHECK_MEM(buf, n, "h3=\"h3.example.com:443\"; ma=60");

  snprintf(cfg.alt_svc_host, sizeof(cfg.alt_svc_host), "2001:db8::1");
  h3g_alt_svc_init(&a, &cfg);
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_SERVING, 8443);
  n = value(&a, buf);
  CHECK_MEM(buf, n, "h3=\"[2001:db8::1]:443\"; ma=60");

  /* Too small a buffer: nothing rather than a cut value. */
  CHECK_EQ_INT(h3g_alt_svc_value(&a, buf, 10), 0);
}

static void test_disabled_and_keep(void) {
  h3g_config cfg;
  h3g_alt_svc a;
  char buf[300];
  h3g_config_defaults(&cfg);
  cfg.alt_svc_enabled = 0;
  h3g_alt_svc_init(&a, &cfg);
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_SERVING, 443);
  CHECK_EQ_INT(value(&a, buf), 0);
  CHECK(!h3g_alt_svc_adds(&a));
  CHECK(!h3g_alt_svc_replaces_upstream(&a));

  cfg.alt_svc_enabled = 1;
  cfg.alt_svc_upstream = H3G_ALT_SVC_KEEP;
  h3g_alt_svc_init(&a, &cfg);
  h3g_alt_svc_set_quic(&a, H3G_ALT_SVC_QUIC_SERVING, 443);
  CHECK(h3g_alt_svc_adds(&a));
  CHECK(!h3g_alt_svc_replaces_upstream(&a));
}

int main(void) {
  RUN(test_defaults);
  RUN(test_failed);
  RUN(test_configured);
  RUN(test_disabled_and_keep);
  return unit_report();
}
