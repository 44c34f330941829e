/*
 * Tests for config.c: the value syntax, every key's bounds, the messages
 * (text and line numbers), paths, long lines, the dump round trip, and that
 * config/h3gate.ini and config/sidecar.ini mirror the schema.
 *
 * Each test writes its INI text to t.ini in a fresh mkdtemp directory, which
 * is also the working directory, so messages start "t.ini:LINE:".
 */
#define _GNU_SOURCE
#include "config.h"
#include "unit.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[PATH_MAX];
static char err[32768];

#define PEM_CERT                                                               \
  "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
#define PEM_KEY                                                                \
  "-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n"

/* Five lines: what every loadable file needs. */
#define REQUIRED                                                               \
  "[listener]\n"                                                               \
  "cert = certs/server.crt\n"                                                  \
  "key = certs/server.key\n"                                                   \
  "[upstream]\n"                                                               \
  "server = 127.0.0.1:8080\n"

#define CHECK_ERR(s)                                                           \
  do {                                                                         \
    const char *want_ = (s);                                                   \
    CHECK(strstr(err, want_) != NULL);                                         \
    if (strstr(err, want_) == NULL)                                            \
      fprintf(stderr, "  wanted: %s\n  err was:\n%s\n", want_, err);           \
  } while (0)

#define CHECK_STR(a, b)                                                        \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    CHECK(strcmp(a_, b_) == 0);                                                \
    if (strcmp(a_, b_) != 0)                                                   \
      fprintf(stderr, "  got \"%s\"\n  expected \"%s\"\n", a_, b_);            \
  } while (0)

/* tmp/rel, in one of a few rotating buffers. */
static const char *in_tmp(const char *rel) {
  static char bufs[4][PATH_MAX + 64];
  static int next;
  char *b = bufs[next++ % 4];
  snprintf(b, sizeof(bufs[0]), "%s/%s", tmp, rel);
  return b;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  fputs(text, f);
  fclose(f);
}

static void make_dir(const char *path) {
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "cannot mkdir %s: %s\n", path, strerror(errno));
    exit(2);
  }
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  char *buf = NULL;
  size_t cap = 0, len = 0, r;
  do {
    if (len + 4096 + 1 > cap) {
      cap = (len + 4096 + 1) * 2;
      buf = realloc(buf, cap);
      if (buf == NULL)
        exit(2);
    }
    r = fread(buf + len, 1, 4096, f);
    len += r;
  } while (r > 0);
  fclose(f);
  buf[len] = '\0';
  return buf;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s != '\0'; s++)
    n += *s == '\n';
  return n;
}

/* Releases what cfg owns (its groups and routes) and refills it with the
 * defaults. Every h3g_config of these tests starts zeroed ({0}) and ends
 * with h3g_config_free, so that the leak checker sees every load freed. */
static void reset(h3g_config *cfg) {
  h3g_config_free(cfg);
  h3g_config_defaults(cfg);
}

/* Loads text (as t.ini) over the defaults. */
static int load(const char *text, h3g_config *cfg) {
  write_file("t.ini", text);
  reset(cfg);
  memset(err, 'x', sizeof(err));
  return h3g_config_load(cfg, "t.ini", err, sizeof(err));
}

/* Like load, with the text built by printf. */
static int loadf(h3g_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int loadf(h3g_config *cfg, const char *fmt, ...) {
  static char text[65536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  return load(text, cfg);
}

/* The group called name, or NULL. */
static const h3g_group_conf *group_named(const h3g_config *c,
                                         const char *name) {
  for (uint32_t i = 0; i < c->ngroups; i++)
    if (strcmp(c->groups[i].name, name) == 0)
      return &c->groups[i];
  return NULL;
}

/* The route called name, or NULL. */
static const h3g_route_conf *route_named(const h3g_config *c,
                                         const char *name) {
  for (uint32_t i = 0; i < c->nroutes; i++)
    if (strcmp(c->routes[i].name, name) == 0)
      return &c->routes[i];
  return NULL;
}

/* The group name, or an empty one after a failed check (so that a test
 * goes on reading zeroes rather than crash). */
static const h3g_group_conf *group(const h3g_config *c, const char *name) {
  static const h3g_group_conf none;
  const h3g_group_conf *g = group_named(c, name);
  CHECK(g != NULL);
  if (g == NULL)
    fprintf(stderr, "  no [upstream %s]\n", name);
  return g != NULL ? g : &none;
}

static const h3g_route_conf *route(const h3g_config *c, const char *name) {
  static const h3g_route_conf none;
  const h3g_route_conf *r = route_named(c, name);
  CHECK(r != NULL);
  if (r == NULL)
    fprintf(stderr, "  no [route %s]\n", name);
  return r != NULL ? r : &none;
}

/* Server i of a group, or an empty one after a failed check. */
static const h3g_server_conf *server_of(const h3g_group_conf *g, uint32_t i) {
  static const h3g_server_conf none;
  CHECK(i < g->nservers);
  return i < g->nservers ? &g->servers[i] : &none;
}

/* The unnamed [upstream] section's first server. */
static const h3g_server_conf *upstream_server(const h3g_config *c) {
  return server_of(group(c, "default"), 0);
}

static void check_same_group(const h3g_group_conf *a,
                             const h3g_group_conf *b) {
  CHECK_STR(a->name, b->name);
  CHECK_EQ_INT(a->nservers, b->nservers);
  for (uint32_t i = 0; i < a->nservers && i < b->nservers; i++) {
    const h3g_server_conf *x = &a->servers[i], *y = &b->servers[i];
    CHECK_EQ_INT(x->kind, y->kind);
    CHECK_STR(x->host, y->host);
    CHECK_EQ_INT(x->port, y->port);
    CHECK_STR(x->path, y->path);
    CHECK_STR(x->address, y->address);
    CHECK_EQ_INT(x->weight, y->weight);
    CHECK_EQ_INT(x->backup, y->backup);
  }
  CHECK_EQ_INT(a->balance, b->balance);
  CHECK_EQ_INT(a->hash_key, b->hash_key);
  CHECK_STR(a->hash_name, b->hash_name);
  CHECK_STR(a->hash_key_text, b->hash_key_text);
  CHECK_EQ_INT(a->pool_size, b->pool_size);
  CHECK_EQ_INT(a->queue_size, b->queue_size);
  CHECK_EQ_INT(a->connect_timeout_ms, b->connect_timeout_ms);
  CHECK_EQ_INT(a->response_timeout_ms, b->response_timeout_ms);
  CHECK_EQ_INT(a->idle_timeout_ms, b->idle_timeout_ms);
  CHECK_EQ_INT(a->expect_continue_timeout_ms, b->expect_continue_timeout_ms);
  CHECK_EQ_INT(a->retries, b->retries);
  CHECK_EQ_INT(a->max_fails, b->max_fails);
  CHECK_EQ_INT(a->fail_timeout_ms, b->fail_timeout_ms);
  CHECK_EQ_INT(a->max_fail_timeout_ms, b->max_fail_timeout_ms);
  CHECK_EQ_INT(a->resolve_interval_ms, b->resolve_interval_ms);
  CHECK_STR(a->health_check, b->health_check);
  CHECK_STR(a->health_method, b->health_method);
  CHECK_STR(a->health_path, b->health_path);
  CHECK_EQ_INT(a->health_interval_ms, b->health_interval_ms);
  CHECK_EQ_INT(a->health_timeout_ms, b->health_timeout_ms);
  CHECK_STR(a->health_status, b->health_status);
  CHECK_EQ_INT(a->health_status_lo, b->health_status_lo);
  CHECK_EQ_INT(a->health_status_hi, b->health_status_hi);
  CHECK_EQ_INT(a->health_rise, b->health_rise);
  CHECK_EQ_INT(a->health_fall, b->health_fall);
  CHECK_STR(a->health_host, b->health_host);
  CHECK_STR(a->tls_ca, b->tls_ca);
  CHECK_EQ_INT(a->tls_verify, b->tls_verify);
  CHECK_STR(a->tls_sni, b->tls_sni);
  CHECK_STR(a->tls_cert, b->tls_cert);
  CHECK_STR(a->tls_key, b->tls_key);
}

static void check_same_edits(const h3g_header_edit *a, uint32_t na,
                             const h3g_header_edit *b, uint32_t nb) {
  CHECK_EQ_INT(na, nb);
  for (uint32_t i = 0; i < na && i < nb; i++) {
    CHECK_STR(a[i].name, b[i].name);
    CHECK((a[i].value == NULL) == (b[i].value == NULL));
    if (a[i].value != NULL && b[i].value != NULL)
      CHECK_STR(a[i].value, b[i].value);
  }
}

static void check_same_route(const h3g_route_conf *a,
                             const h3g_route_conf *b) {
  CHECK_STR(a->name, b->name);
  CHECK_STR(a->hosts_text, b->hosts_text);
  CHECK_EQ_INT(a->nhosts, b->nhosts);
  for (uint32_t i = 0; i < a->nhosts && i < b->nhosts; i++)
    CHECK_STR(a->hosts[i], b->hosts[i]);
  CHECK_STR(a->paths_text, b->paths_text);
  CHECK_EQ_INT(a->npaths, b->npaths);
  for (uint32_t i = 0; i < a->npaths && i < b->npaths; i++)
    CHECK_STR(a->paths[i], b->paths[i]);
  CHECK_STR(a->upstream, b->upstream);
  CHECK_EQ_INT(a->group, b->group);
  const h3g_route_settings *x = &a->s, *y = &b->s;
  CHECK_EQ_INT(x->response_timeout_ms, y->response_timeout_ms);
  CHECK_EQ_INT(x->request_body_timeout_ms, y->request_body_timeout_ms);
  CHECK_EQ_INT(x->expect_continue_timeout_ms, y->expect_continue_timeout_ms);
  CHECK_EQ_INT(x->max_request_body, y->max_request_body);
  CHECK_EQ_INT(x->early_data, y->early_data);
  CHECK_EQ_INT(x->fwd_forwarded, y->fwd_forwarded);
  CHECK_EQ_INT(x->fwd_x_forwarded, y->fwd_x_forwarded);
  CHECK_EQ_INT(x->fwd_via, y->fwd_via);
  CHECK_EQ_INT(x->alt_svc, y->alt_svc);
  CHECK_EQ_INT(x->websocket, y->websocket);
  check_same_edits(x->add_request, x->nadd_request, y->add_request,
                   y->nadd_request);
  check_same_edits(x->remove_request, x->nremove_request, y->remove_request,
                   y->nremove_request);
  check_same_edits(x->add_response, x->nadd_response, y->add_response,
                   y->nadd_response);
}

/* The [upstream NAME] groups and [route NAME] routes, field by field. */
static void check_same_named(const h3g_config *a, const h3g_config *b) {
  CHECK_EQ_INT(a->ngroups, b->ngroups);
  for (uint32_t i = 0; i < a->ngroups && i < b->ngroups; i++)
    check_same_group(&a->groups[i], &b->groups[i]);
  CHECK_EQ_INT(a->nroutes, b->nroutes);
  CHECK_EQ_INT(a->routes_implicit, b->routes_implicit);
  /* Derived from the routes, not a key of its own. */
  CHECK_EQ_INT(a->websocket_any, b->websocket_any);
  for (uint32_t i = 0; i < a->nroutes && i < b->nroutes; i++)
    check_same_route(&a->routes[i], &b->routes[i]);
}

/* Every global key (the sections other than [upstream] and [route]). */
static void check_same_globals(const h3g_config *a, const h3g_config *b) {
  CHECK_EQ_INT(a->log_level, b->log_level);
  CHECK_STR(a->access_log, b->access_log);
  CHECK_EQ_INT(a->shutdown_timeout_ms, b->shutdown_timeout_ms);
  CHECK_STR(a->admin_address, b->admin_address);
  CHECK_EQ_INT(a->admin_port, b->admin_port);
  CHECK_EQ_INT(a->listen_enabled, b->listen_enabled);
  CHECK_EQ_INT(a->tcp_enabled, b->tcp_enabled);
  CHECK_STR(a->tcp_address, b->tcp_address);
  CHECK_EQ_INT(a->tcp_port, b->tcp_port);
  CHECK_EQ_INT(a->tcp_handshake_timeout_ms, b->tcp_handshake_timeout_ms);
  CHECK_EQ_INT(a->tcp_idle_timeout_ms, b->tcp_idle_timeout_ms);
  CHECK_EQ_INT(a->tcp_header_timeout_ms, b->tcp_header_timeout_ms);
  CHECK_EQ_INT(a->tcp_max_connections, b->tcp_max_connections);
  CHECK_EQ_INT(a->alt_svc_enabled, b->alt_svc_enabled);
  CHECK_EQ_INT(a->alt_svc_port, b->alt_svc_port);
  CHECK_STR(a->alt_svc_host, b->alt_svc_host);
  CHECK_EQ_INT(a->alt_svc_max_age, b->alt_svc_max_age);
  CHECK_EQ_INT(a->alt_svc_upstream, b->alt_svc_upstream);
  CHECK_STR(a->redirect_address, b->redirect_address);
  CHECK_EQ_INT(a->redirect_port, b->redirect_port);
  CHECK_STR(a->listen_address, b->listen_address);
  CHECK_EQ_INT(a->listen_port, b->listen_port);
  CHECK_STR(a->cert_file, b->cert_file);
  CHECK_STR(a->key_file, b->key_file);
  CHECK_EQ_INT(a->idle_timeout_ms, b->idle_timeout_ms);
  CHECK_EQ_INT(a->handshake_timeout_ms, b->handshake_timeout_ms);
  CHECK_EQ_INT(a->max_connections, b->max_connections);
  CHECK_EQ_INT(a->max_streams, b->max_streams);
  CHECK_EQ_INT(a->stream_buffer_size, b->stream_buffer_size);
  CHECK_EQ_INT(a->connection_window, b->connection_window);
  CHECK_EQ_INT(a->max_header_size, b->max_header_size);
  CHECK_EQ_INT(a->max_request_body, b->max_request_body);
  CHECK_EQ_INT(a->request_body_timeout_ms, b->request_body_timeout_ms);
  CHECK_EQ_INT(a->early_data, b->early_data);
  CHECK_EQ_INT(a->websocket, b->websocket);
  CHECK_EQ_INT(a->tunnel_idle_timeout_ms, b->tunnel_idle_timeout_ms);
  CHECK_EQ_INT(a->max_tunnels, b->max_tunnels);
  CHECK_EQ_INT(a->max_tunnels_per_connection, b->max_tunnels_per_connection);
  CHECK_EQ_INT(a->no_route, b->no_route);
  CHECK_EQ_INT(a->fwd_forwarded, b->fwd_forwarded);
  CHECK_EQ_INT(a->fwd_x_forwarded, b->fwd_x_forwarded);
  CHECK_EQ_INT(a->fwd_via, b->fwd_via);
}

static void check_same(const h3g_config *a, const h3g_config *b) {
  check_same_globals(a, b);
  check_same_named(a, b);
}

/* Dumps cfg into a string (caller frees). */
static char *dump(const h3g_config *cfg) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f == NULL)
    exit(2);
  h3g_config_dump(cfg, f);
  fclose(f);
  return text;
}

/* ---- value syntax ------------------------------------------------------- */

static void test_parse_duration(void) {
  static const struct {
    const char *in;
    int rc;
    uint64_t ms;
  } cases[] = {
      {"0", 0, 0},
      {"10", 0, 10000},
      {"1500ms", 0, 1500},
      {"30s", 0, 30000},
      {"2m", 0, 120000},
      {"1h", 0, 3600000},
      {"007s", 0, 7000},
      {"30 s", 0, 30000},
      {"0ms", 0, 0},
      {"", H3G_ERR_INVAL, 0},
      {"s", H3G_ERR_INVAL, 0},
      {"-1s", H3G_ERR_INVAL, 0},
      {"+1s", H3G_ERR_INVAL, 0},
      {"1.5s", H3G_ERR_INVAL, 0},
      {"10x", H3G_ERR_INVAL, 0},
      {"10sec", H3G_ERR_INVAL, 0},
      {"10S", H3G_ERR_INVAL, 0},
      {"10d", H3G_ERR_INVAL, 0},
      {" 10s", H3G_ERR_INVAL, 0},
      {"10s ", H3G_ERR_INVAL, 0},
      {"0x10", H3G_ERR_INVAL, 0},
      {"18446744073709551615ms", 0, UINT64_MAX},
      {"18446744073709551616ms", H3G_ERR_TOOBIG, 0},
      {"18446744073709551615s", H3G_ERR_TOOBIG, 0},
      {"5124095576030432h", H3G_ERR_TOOBIG, 0},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(cases); i++) {
    uint64_t v = 12345;
    int rc = h3g_config_parse_duration(cases[i].in, &v);
    CHECK_EQ_INT(rc, cases[i].rc);
    CHECK(v == (rc == 0 ? cases[i].ms : 12345));
    if (rc != cases[i].rc)
      fprintf(stderr, "  duration input \"%s\"\n", cases[i].in);
  }
}

static void test_parse_size(void) {
  static const struct {
    const char *in;
    int rc;
    uint64_t bytes;
  } cases[] = {
      {"0", 0, 0},
      {"1", 0, 1},
      {"1B", 0, 1},
      {"16k", 0, 16384},
      {"16K", 0, 16384},
      {"16KiB", 0, 16384},
      {"16 KiB", 0, 16384},
      {"1m", 0, 1048576},
      {"1M", 0, 1048576},
      {"1MiB", 0, 1048576},
      {"1g", 0, 1073741824},
      {"1G", 0, 1073741824},
      {"2GiB", 0, 2147483648},
      {"1kb", H3G_ERR_INVAL, 0},
      {"1KB", H3G_ERR_INVAL, 0},
      {"1kib", H3G_ERR_INVAL, 0},
      {"1b", H3G_ERR_INVAL, 0},
      {"1.5M", H3G_ERR_INVAL, 0},
      {"-1", H3G_ERR_INVAL, 0},
      {"M", H3G_ERR_INVAL, 0},
      {"", H3G_ERR_INVAL, 0},
      {"1T", H3G_ERR_INVAL, 0},
      {"17179869184G", H3G_ERR_TOOBIG, 0},
      {"17179869183G", 0, 17179869183ull * 1073741824ull},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(cases); i++) {
    uint64_t v = 12345;
    int rc = h3g_config_parse_size(cases[i].in, &v);
    CHECK_EQ_INT(rc, cases[i].rc);
    CHECK(v == (rc == 0 ? cases[i].bytes : 12345));
    if (rc != cases[i].rc)
      fprintf(stderr, "  size input \"%s\"\n", cases[i].in);
  }
}

static void test_parse_bool(void) {
  static const char *const yes[] = {"yes", "true", "on", "1", "YES", "True"};
  static const char *const no[] = {"no", "false", "off", "0", "NO", "Off"};
  static const char *const bad[] = {"", "2", "y", "n", "maybe", "yes ", "01"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(yes); i++) {
    int v = -1;
    CHECK_EQ_INT(h3g_config_parse_bool(yes[i], &v), 0);
    CHECK_EQ_INT(v, 1);
  }
  for (size_t i = 0; i < H3G_ARRAY_LEN(no); i++) {
    int v = -1;
    CHECK_EQ_INT(h3g_config_parse_bool(no[i], &v), 0);
    CHECK_EQ_INT(v, 0);
  }
  for (size_t i = 0; i < H3G_ARRAY_LEN(bad); i++) {
    int v = -1;
    CHECK_EQ_INT(h3g_config_parse_bool(bad[i], &v), H3G_ERR_INVAL);
    CHECK_EQ_INT(v, -1);
  }
}

/* ---- loading ------------------------------------------------------------ */

static void test_defaults(void) {
  h3g_config c = {0};
  memset(&c, 0x5a, sizeof(c));
  h3g_config_defaults(&c);
  CHECK_EQ_INT(c.log_level, H3G_LOG_INFO);
  CHECK_STR(c.access_log, "-");
  CHECK_EQ_INT(c.shutdown_timeout_ms, 10000);
  CHECK_STR(c.admin_address, "");
  CHECK_EQ_INT(c.admin_port, 0);
  CHECK_STR(c.listen_address, "0.0.0.0");
  CHECK_EQ_INT(c.listen_port, 443);
  CHECK_STR(c.cert_file, "");
  CHECK_STR(c.key_file, "");
  CHECK_EQ_INT(c.idle_timeout_ms, 30000);
  CHECK_EQ_INT(c.handshake_timeout_ms, 10000);
  CHECK_EQ_INT(c.max_connections, 10000);
  CHECK_EQ_INT(c.max_streams, 100);
  CHECK_EQ_INT(c.stream_buffer_size, 256 * 1024);
  CHECK_EQ_INT(c.connection_window, 16 * 1024 * 1024);
  CHECK_EQ_INT(c.max_header_size, 64 * 1024);
  CHECK_EQ_INT(c.max_handshakes_per_source, 32);
  CHECK_EQ_INT(c.max_unvalidated_handshakes, 1024);
  CHECK_EQ_INT(c.new_token_lifetime_ms, 24 * 3600000);
  CHECK_STR(c.quic_versions, "v2, v1");
  CHECK_EQ_INT(c.nquic_versions, 2);
  CHECK_EQ_INT(c.quic_version[0], H3G_QUIC_V2);
  CHECK_EQ_INT(c.quic_version[1], H3G_QUIC_V1);
  CHECK_EQ_INT(c.no_route, H3G_NO_ROUTE_MISDIRECTED);
  CHECK_EQ_INT(c.websocket, 1);
  CHECK_EQ_INT(c.tunnel_idle_timeout_ms, 3600000);
  CHECK_EQ_INT(c.max_tunnels, 10000);
  CHECK_EQ_INT(c.max_tunnels_per_connection, 100);
  /* Known once the routes are: none yet. */
  CHECK_EQ_INT(c.websocket_any, 0);
  /* No group, no route: the file brings them. */
  CHECK(c.groups == NULL);
  CHECK_EQ_INT(c.ngroups, 0);
  CHECK(c.routes == NULL);
  CHECK_EQ_INT(c.nroutes, 0);
  CHECK_EQ_INT(c.routes_implicit, 0);
  h3g_config_free(&c);
  h3g_config_free(&c); /* twice, and on the defaults: a no-op */
  h3g_config_free(NULL);
}

/* A group's keys at their defaults (docs/routes.md). */
static void test_group_defaults(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(REQUIRED, &c), 0);
  const h3g_group_conf *g = group(&c, "default");
  CHECK_EQ_INT(g->line, 4);
  CHECK_EQ_INT(g->nservers, 1);
  CHECK_EQ_INT(g->balance, H3G_BALANCE_ROUND_ROBIN);
  CHECK_EQ_INT(g->hash_key, H3G_HASH_CLIENT_IP);
  CHECK_STR(g->hash_key_text, "client_ip");
  CHECK_EQ_INT(g->pool_size, 64);
  CHECK_EQ_INT(g->queue_size, 1024);
  CHECK_EQ_INT(g->connect_timeout_ms, 5000);
  CHECK_EQ_INT(g->response_timeout_ms, 60000);
  CHECK_EQ_INT(g->idle_timeout_ms, 4000);
  CHECK_EQ_INT(g->expect_continue_timeout_ms, 1000);
  CHECK_EQ_INT(g->retries, 2);
  CHECK_EQ_INT(g->max_fails, 3);
  CHECK_EQ_INT(g->fail_timeout_ms, 5000);
  CHECK_EQ_INT(g->max_fail_timeout_ms, 120000);
  CHECK_EQ_INT(g->resolve_interval_ms, 30000);
  CHECK_STR(g->health_check, "");
  CHECK_EQ_INT(g->health_interval_ms, 5000);
  CHECK_EQ_INT(g->health_timeout_ms, 2000);
  CHECK_STR(g->health_status, "200-399");
  CHECK_EQ_INT(g->health_status_lo, 200);
  CHECK_EQ_INT(g->health_status_hi, 399);
  CHECK_EQ_INT(g->health_rise, 2);
  CHECK_EQ_INT(g->health_fall, 3);
  CHECK_STR(g->health_host, "");
  CHECK_STR(g->tls_ca, "system");
  CHECK_EQ_INT(g->tls_verify, 1);
  CHECK_STR(g->tls_sni, "");
  CHECK_STR(g->tls_cert, "");
  CHECK_STR(g->tls_key, "");
  h3g_config_free(&c);
}

static void test_minimal(void) {
  h3g_config c = {0}, d = {0};
  CHECK_EQ_INT(load(REQUIRED, &c), 0);
  CHECK_STR(err, "");
  CHECK_STR(c.cert_file, in_tmp("certs/server.crt"));
  CHECK_STR(c.key_file, in_tmp("certs/server.key"));
  /* The unnamed [upstream] is the group "default", with one server. */
  CHECK_EQ_INT(c.ngroups, 1);
  const h3g_server_conf *sv = upstream_server(&c);
  CHECK_EQ_INT(sv->kind, H3G_SERVER_TCP);
  CHECK_STR(sv->host, "127.0.0.1");
  CHECK_EQ_INT(sv->port, 8080);
  CHECK_STR(sv->address, "127.0.0.1:8080");
  CHECK_EQ_INT(sv->weight, 1);
  CHECK_EQ_INT(sv->backup, 0);
  CHECK_EQ_INT(sv->line, 5);
  /* Everything else stays at its default. */
  h3g_config_defaults(&d);
  snprintf(d.cert_file, sizeof(d.cert_file), "%s", c.cert_file);
  snprintf(d.key_file, sizeof(d.key_file), "%s", c.key_file);
  check_same_globals(&c, &d);
  h3g_config_free(&c);
  h3g_config_free(&d);
}

static const char full_ini[] = "; every key, none at its default\n"
                               "[server]\n"
                               "log_level = debug\n"
                               "access_log = logs/access.log\n"
                               "shutdown_timeout = 1500ms\n"
                               "admin = [::1]:9901\n"
                               "\n"
                               "[listener]\n"
                               "address = ::\n"
                               "port = 8443\n"
                               "cert = certs/server.crt\n"
                               "key = certs/server.key\n"
                               "idle_timeout = 2m\n"
                               "handshake_timeout = 5s\n"
                               "max_connections = 1000000\n"
                               "max_streams = 7\n"
                               "stream_buffer_size = 1MiB\n"
                               "connection_window = 64MiB\n"
                               "max_header_size = 1025\n"
                               "\n"
                               "[upstream]\n"
                               "server = app.internal:3000\n"
                               "pool_size = 10000\n"
                               "queue_size = 0\n"
                               "connect_timeout = 250ms\n"
                               "response_timeout = 1h\n"
                               "idle_timeout = 90s\n";

static void test_every_key(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(full_ini, &c), 0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(c.log_level, H3G_LOG_DEBUG);
  CHECK_STR(c.access_log, in_tmp("logs/access.log"));
  CHECK_EQ_INT(c.shutdown_timeout_ms, 1500);
  CHECK_STR(c.admin_address, "::1");
  CHECK_EQ_INT(c.admin_port, 9901);
  CHECK_STR(c.listen_address, "::");
  CHECK_EQ_INT(c.listen_port, 8443);
  CHECK_EQ_INT(c.idle_timeout_ms, 120000);
  CHECK_EQ_INT(c.handshake_timeout_ms, 5000);
  CHECK_EQ_INT(c.max_connections, 1000000);
  CHECK_EQ_INT(c.max_streams, 7);
  CHECK_EQ_INT(c.stream_buffer_size, 1048576);
  CHECK_EQ_INT(c.connection_window, 64 * 1048576);
  CHECK_EQ_INT(c.max_header_size, 1025);
  const h3g_group_conf *g = group(&c, "default");
  CHECK_STR(server_of(g, 0)->host, "app.internal");
  CHECK_EQ_INT(server_of(g, 0)->port, 3000);
  CHECK_EQ_INT(g->pool_size, 10000);
  CHECK_EQ_INT(g->queue_size, 0);
  CHECK_EQ_INT(g->connect_timeout_ms, 250);
  CHECK_EQ_INT(g->response_timeout_ms, 3600000);
  CHECK_EQ_INT(g->idle_timeout_ms, 90000);
  /* The implicit route takes the group's response timeout. */
  CHECK_EQ_INT(route(&c, "default")->s.response_timeout_ms, 3600000);
  h3g_config_free(&c);
}

/*
 * One key at a time after REQUIRED (on line 7, after its section line); want
 * is NULL when the value loads, or the reason expected after
 * "t.ini:7: [section] key: ". The "upstream" cases go in REQUIRED's own
 * [upstream] section (reopened: an unnamed [upstream] may be, as in older
 * files), whose messages name it [upstream], as written.
 */
static const struct {
  const char *section, *key, *value, *want;
} value_cases[] = {
    {"server", "log_level", "error", NULL},
    {"server", "log_level", "WARN", NULL},
    {"server", "log_level", "verbose",
     "expected error, warn, info or debug, not \"verbose\""},
    {"server", "access_log", "off", NULL},
    {"server", "access_log", "-", NULL},
    {"server", "access_log", "\"\"", "the path is empty"},
    {"server", "shutdown_timeout", "0", NULL},
    {"server", "shutdown_timeout", "1h", NULL},
    {"server", "shutdown_timeout", "61m", "61m is above the maximum 1h"},
    {"server", "shutdown_timeout", "3600001ms",
     "3600001ms is above the maximum 1h"},
    {"server", "shutdown_timeout", "-1s",
     "expected a duration such as 1500ms, 30s, 5m or 1h, not \"-1s\""},
    {"server", "shutdown_timeout", "1.5s", "expected a duration"},
    {"server", "shutdown_timeout", "99999999999999999999",
     "99999999999999999999 is too large"},
    {"server", "admin", "off", NULL},
    {"server", "admin", "127.0.0.1:9901", NULL},
    {"server", "admin", "[::1]:9901", NULL},
    {"server", "admin", "127.0.0.1:0", NULL},
    {"server", "admin", "localhost:9901", "\"localhost\" is not an IPv4"},
    {"server", "admin", "127.0.0.1", "expected host:port"},
    {"server", "admin", "127.0.0.1:65536",
     "the port 65536 is above the maximum 65535"},
    {"server", "admin", "::1:9901", "put an IPv6 address in brackets"},
    {"listener", "address", "::", NULL},
    {"listener", "address", "0.0.0.0", NULL},
    {"listener", "address", "[::1]", NULL},
    {"listener", "address", "fe80::1", NULL},
    {"listener", "address", "localhost",
     "expected an IPv4 or IPv6 address, not \"localhost\""},
    {"listener", "address", "1.2.3.256", "expected an IPv4 or IPv6 address"},
    {"listener", "address", "\"\"", "expected an IPv4 or IPv6 address"},
    {"listener", "port", "0", NULL},
    {"listener", "port", "65535", NULL},
    {"listener", "port", "65536", "65536 is above the maximum 65535"},
    {"listener", "port", "443x", "expected a whole number, not \"443x\""},
    {"listener", "port", "-1", "expected a whole number"},
    {"listener", "idle_timeout", "1s", NULL},
    {"listener", "idle_timeout", "1h", NULL},
    {"listener", "idle_timeout", "999ms", "999ms is below the minimum 1s"},
    {"listener", "idle_timeout", "2h", "2h is above the maximum 1h"},
    {"listener", "handshake_timeout", "5m", NULL},
    {"listener", "handshake_timeout", "301s", "301s is above the maximum 5m"},
    {"listener", "handshake_timeout", "0", "0 is below the minimum 1s"},
    {"listener", "max_connections", "1", NULL},
    {"listener", "max_connections", "1000000", NULL},
    {"listener", "max_connections", "0", "0 is below the minimum 1"},
    {"listener", "max_connections", "1000001",
     "1000001 is above the maximum 1000000"},
    {"listener", "max_connections", "10k", "expected a whole number"},
    {"listener", "max_streams", "10000", NULL},
    {"listener", "max_streams", "10001", "10001 is above the maximum 10000"},
    {"listener", "connection_window", "64KiB", NULL},
    {"listener", "connection_window", "1GiB", NULL},
    {"listener", "connection_window", "65535",
     "65535 is below the minimum 64KiB"},
    {"listener", "connection_window", "2GiB", "2GiB is above the maximum 1GiB"},
    {"listener", "stream_buffer_size", "16KiB", NULL},
    {"listener", "stream_buffer_size", "16k", NULL},
    {"listener", "stream_buffer_size", "16MiB", NULL},
    {"listener", "stream_buffer_size", "256 KiB", NULL},
    {"listener", "stream_buffer_size", "16383",
     "16383 is below the minimum 16KiB"},
    {"listener", "stream_buffer_size", "16777217B",
     "16777217B is above the maximum 16MiB"},
    {"listener", "stream_buffer_size", "1G", "1G is above the maximum 16MiB"},
    {"listener", "stream_buffer_size", "256kb",
     "expected a size such as 16384, 64KiB, 16MiB or 1GiB, not \"256kb\""},
    {"listener", "max_header_size", "1KiB", NULL},
    {"listener", "max_header_size", "1M", NULL},
    {"listener", "max_header_size", "1023", "1023 is below the minimum 1KiB"},
    {"listener", "max_handshakes_per_source", "0", NULL},
    {"listener", "max_handshakes_per_source", "1000000", NULL},
    {"listener", "max_handshakes_per_source", "1000001",
     "1000001 is above the maximum 1000000"},
    {"listener", "max_handshakes_per_source", "-1", "expected a whole number"},
    {"listener", "max_unvalidated_handshakes", "0", NULL},
    {"listener", "max_unvalidated_handshakes", "1k", "expected a whole number"},
    {"listener", "new_token_lifetime", "0", NULL},
    {"listener", "new_token_lifetime", "168h", NULL},
    {"listener", "new_token_lifetime", "169h",
     "169h is above the maximum 168h"},
    {"listener", "new_token_lifetime", "1d",
     "expected a duration such as 1500ms, 30s, 5m or 1h, not \"1d\""},
    {"listener", "websocket", "off", NULL},
    {"listener", "websocket", "maybe", "expected yes or no, not \"maybe\""},
    {"listener", "tunnel_idle_timeout", "1s", NULL},
    {"listener", "tunnel_idle_timeout", "168h", NULL},
    {"listener", "tunnel_idle_timeout", "0", "0 is below the minimum 1s"},
    {"listener", "tunnel_idle_timeout", "999ms",
     "999ms is below the minimum 1s"},
    {"listener", "tunnel_idle_timeout", "169h",
     "169h is above the maximum 168h"},
    {"listener", "max_tunnels", "0", NULL},
    {"listener", "max_tunnels", "10000000", NULL},
    {"listener", "max_tunnels", "10000001",
     "10000001 is above the maximum 10000000"},
    {"listener", "max_tunnels", "-1", "expected a whole number"},
    {"listener", "max_tunnels_per_connection", "0", NULL},
    {"listener", "max_tunnels_per_connection", "10000", NULL},
    {"listener", "max_tunnels_per_connection", "10001",
     "10001 is above the maximum 10000"},
    {"listener", "quic_versions", "v1", NULL},
    {"listener", "quic_versions", "v2", NULL},
    {"listener", "quic_versions", "v1, v2", NULL},
    {"listener", "quic_versions", "V2 ,v1", NULL},
    {"listener", "quic_versions", "v3",
     "expected QUIC versions v1 and v2, not \"v3\""},
    {"listener", "quic_versions", "v1 v2",
     "expected QUIC versions v1 and v2, not \"v1 v2\""},
    {"listener", "quic_versions", "0x00000001",
     "expected QUIC versions v1 and v2, not \"0x00000001\""},
    {"listener", "quic_versions", "v1,",
     "expected QUIC versions v1 and v2, not \"\""},
    {"listener", "quic_versions", "\"\"",
     "expected QUIC versions v1 and v2, not \"\""},
    {"listener", "quic_versions", "v2, v1, v2", "v2 is listed twice"},
    {"upstream", "server", "localhost:80", NULL},
    {"upstream", "server", "[::1]:8080", NULL},
    {"upstream", "server", "10.0.0.1:65535", NULL},
    {"upstream", "server", "my_app-1.svc.cluster.local:8080", NULL},
    {"upstream", "server", "::1:8080", "put an IPv6 address in brackets"},
    {"upstream", "server", "app", "expected host:port, not \"app\""},
    {"upstream", "server", "app:0", "the port 0 is below the minimum 1"},
    {"upstream", "server", ":80", "the host is empty"},
    /* A blank ends the address (weight=N and backup may follow). */
    {"upstream", "server", "bad host:80", "expected host:port, not \"bad\""},
    {"upstream", "server", "a..b:80",
     "\"a..b\" is not a host name or IPv4 address"},
    {"upstream", "server", "app:http", "the port \"http\" is not a number"},
    {"upstream", "server", "[::1]8080", "expected [address]:port"},
    {"upstream", "server", "[1.2.3.4]:80",
     "\"1.2.3.4\" is not an IPv6 address"},
    {"upstream", "pool_size", "0", "0 is below the minimum 1"},
    {"upstream", "pool_size", "10000", NULL},
    {"upstream", "pool_size", "10001", "10001 is above the maximum 10000"},
    {"upstream", "queue_size", "0", NULL},
    {"upstream", "queue_size", "1000000", NULL},
    {"upstream", "queue_size", "1000001",
     "1000001 is above the maximum 1000000"},
    {"upstream", "connect_timeout", "1ms", NULL},
    {"upstream", "connect_timeout", "5m", NULL},
    {"upstream", "connect_timeout", "0", "0 is below the minimum 1ms"},
    {"upstream", "connect_timeout", "301s", "301s is above the maximum 5m"},
    {"upstream", "response_timeout", "1ms", NULL},
    {"upstream", "response_timeout", "3601s", "3601s is above the maximum 1h"},
    {"upstream", "idle_timeout", "1s", NULL},
    {"upstream", "idle_timeout", "0", "0 is below the minimum 1s"},
};

static void test_values_and_bounds(void) {
  h3g_config c = {0};
  for (size_t i = 0; i < H3G_ARRAY_LEN(value_cases); i++) {
    char want[512], section_line[64];
    /* upstream.server is in REQUIRED: replace that line by a comment. */
    int is_server = strcmp(value_cases[i].key, "server") == 0;
    int is_group = strcmp(value_cases[i].section, "upstream") == 0;
    if (is_group)
      snprintf(section_line, sizeof(section_line), "; still in [upstream]");
    else
      snprintf(section_line, sizeof(section_line), "[%s]",
               value_cases[i].section);
    int rc =
        loadf(&c,
              "[listener]\ncert = certs/server.crt\n"
              "key = certs/server.key\n[upstream]\n%s\n%s\n%s = %s\n",
              is_server ? "; server below" : "server = 127.0.0.1:8080",
              section_line, value_cases[i].key, value_cases[i].value);
    if (value_cases[i].want == NULL) {
      CHECK_EQ_INT(rc, 0);
      CHECK_STR(err, "");
    } else {
      CHECK_EQ_INT(rc, H3G_ERR_INVAL);
      snprintf(want, sizeof(want), "t.ini:7: [%s] %s: %s",
               is_group ? "upstream" : value_cases[i].section,
               value_cases[i].key, value_cases[i].want);
      CHECK_ERR(want);
      /* One problem, one line: a bad required value is not also "not set". */
      CHECK_EQ_INT(count_lines(err), 1);
    }
  }
  h3g_config_free(&c);
}

static void test_stored_values(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(loadf(&c, REQUIRED "[server]\nlog_level = WARN\n"
                                  "admin = 127.0.0.1:9901\n"
                                  "[listener]\naddress = [::1]\n"),
               0);
  CHECK_EQ_INT(c.log_level, H3G_LOG_WARN);
  CHECK_STR(c.admin_address, "127.0.0.1");
  CHECK_EQ_INT(c.admin_port, 9901);
  CHECK_STR(c.listen_address, "::1");

  CHECK_EQ_INT(loadf(&c, "[listener]\ncert = certs/server.crt\n"
                         "key = certs/server.key\n"
                         "[upstream]\nserver = [2001:db8::5]:81\n"),
               0);
  CHECK_STR(upstream_server(&c)->host, "2001:db8::5");
  CHECK_EQ_INT(upstream_server(&c)->port, 81);
  CHECK_STR(upstream_server(&c)->address, "[2001:db8::5]:81");

  /* QUIC versions: in the order given, written back normalised. */
  CHECK_EQ_INT(loadf(&c, REQUIRED "[listener]\nquic_versions = V1 ,v2\n"), 0);
  CHECK_STR(c.quic_versions, "v1, v2");
  CHECK_EQ_INT(c.nquic_versions, 2);
  CHECK_EQ_INT(c.quic_version[0], H3G_QUIC_V1);
  CHECK_EQ_INT(c.quic_version[1], H3G_QUIC_V2);
  CHECK_EQ_INT(loadf(&c, REQUIRED "[listener]\nquic_versions = v1\n"), 0);
  CHECK_STR(c.quic_versions, "v1");
  CHECK_EQ_INT(c.nquic_versions, 1);
  CHECK_EQ_INT(c.quic_version[0], H3G_QUIC_V1);
  h3g_config_free(&c);
}

/* [tcp], [alt_svc], [redirect] and [listener] enabled. */
static void test_fallback_keys(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(loadf(&c, REQUIRED "[listener]\nenabled = no\n"
                                  "[tcp]\naddress = ::1\nport = 8443\n"
                                  "header_timeout = 1s\n"
                                  "[alt_svc]\nhost = h3.example.com\n"
                                  "port = 443\nmax_age = 60\n"
                                  "upstream = keep\n"
                                  "[redirect]\nport = 8080\n"),
               0);
  CHECK_EQ_INT(c.listen_enabled, 0);
  CHECK_STR(c.tcp_address, "::1");
  CHECK_EQ_INT(c.tcp_port, 8443);
  CHECK_EQ_INT(c.tcp_header_timeout_ms, 1000);
  CHECK_STR(c.alt_svc_host, "h3.example.com");
  CHECK_EQ_INT(c.alt_svc_port, 443);
  CHECK_EQ_INT(c.alt_svc_max_age, 60);
  CHECK_EQ_INT(c.alt_svc_upstream, H3G_ALT_SVC_KEEP);
  CHECK_STR(c.redirect_address, "");
  CHECK_EQ_INT(c.redirect_port, 8080);
  /* The address is an IP literal or empty; the advertised host a name. */
  CHECK_EQ_INT(loadf(&c, REQUIRED "[tcp]\naddress = example.com\n"),
               H3G_ERR_INVAL);
  CHECK_EQ_INT(loadf(&c, REQUIRED "[alt_svc]\nhost = a b\n"), H3G_ERR_INVAL);
  CHECK_EQ_INT(loadf(&c, REQUIRED "[alt_svc]\nupstream = merge\n"),
               H3G_ERR_INVAL);
  /* "any": the kernel picks (the ready line says which). */
  CHECK_EQ_INT(loadf(&c, REQUIRED "[tcp]\nport = any\n[redirect]\nport = any\n"),
               0);
  CHECK_EQ_INT(c.tcp_port, H3G_PORT_ANY);
  CHECK_EQ_INT(c.redirect_port, H3G_PORT_ANY);
  CHECK_EQ_INT(loadf(&c, REQUIRED "[tcp]\nport = anything\n"), H3G_ERR_INVAL);
  CHECK_EQ_INT(loadf(&c, REQUIRED "[tcp]\nport = 65536\n"), H3G_ERR_INVAL);
  h3g_config_free(&c);
}

static void test_unknown_section(void) {
  h3g_config c = {0};
  int rc = load(REQUIRED "[nope]\nx = 1\ny = 2\n[ listener ]\nport = 1\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  /* One message for the section, none for the keys in it. */
  CHECK_STR(err, "t.ini:6: [nope]: unknown section (expected [server], "
                 "[listener], [tcp], [alt_svc], [redirect], [forwarding], "
                 "[debug], [upstream NAME] or [route NAME])\n");
  CHECK_EQ_INT(c.listen_port, 443);

  rc = load(REQUIRED "[]\n[listener\nport = 1\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:6: []: unknown section");
  CHECK_ERR("t.ini:7: syntax error: a section line needs a closing \"]\"");
  CHECK_EQ_INT(count_lines(err), 2);

  /* "upstream" and "route" must be whole words. */
  rc = load(REQUIRED "[upstreams]\n[router x]\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:6: [upstreams]: unknown section");
  CHECK_ERR("t.ini:7: [router x]: unknown section");
  CHECK_EQ_INT(count_lines(err), 2);
  h3g_config_free(&c);
}

static void test_unknown_key(void) {
  h3g_config c = {0};
  int rc = load(REQUIRED "[listener]\nmax_conections = 5\n"
                         "idle_timeout = 1m\n"
                         "[server]\nmax_streams = 5\nfrobnicate = 1\n",
                &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:7: [listener] max_conections: unknown key (did you mean "
            "max_connections?)\n");
  CHECK_ERR("t.ini:10: [server] max_streams: unknown key (it belongs in "
            "[listener])\n");
  CHECK_ERR("t.ini:11: [server] frobnicate: unknown key\n");
  CHECK_EQ_INT(count_lines(err), 3);
  h3g_config_free(&c);
}

static void test_duplicate_key(void) {
  h3g_config c = {0};
  int rc = load(REQUIRED "; still in [upstream]\npool_size = 1\n\n"
                         "pool_size = 2\nserver = 127.0.0.1:8080\n",
                &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:9: [upstream] pool_size: duplicate key (first "
            "set on line 7)\n");
  /* server repeats (one line a server), but not with the same address. */
  CHECK_ERR("t.ini:10: [upstream] server: 127.0.0.1:8080 is listed "
            "twice (first on line 5)\n");
  CHECK_EQ_INT(count_lines(err), 2);
  /* Nothing is stored when the file has a problem. */
  CHECK_EQ_INT(c.ngroups, 0);
  CHECK(c.groups == NULL);

  /* The unnamed [upstream] may be opened again (older files did), and its
   * keys are read as the first one's; a named group's section may not, and
   * its keys are not read (and not reported). */
  rc = load(REQUIRED "[upstream]\npool_size = 0\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_STR(err, "t.ini:7: [upstream] pool_size: 0 is below the minimum 1\n");
  rc = load(REQUIRED "[upstream]\npool_size = 7\n", &c);
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(c.ngroups, 1);
  CHECK_EQ_INT(c.groups[0].pool_size, 7);
  CHECK_EQ_INT(c.groups[0].nservers, 1);
  rc = load(REQUIRED "[upstream default]\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_STR(err, "t.ini:6: [upstream default]: duplicate section name (first "
                 "on line 4)\n");
  h3g_config_free(&c);
}

static void test_missing_required(void) {
  h3g_config c = {0};
  int rc = load("; nothing here\n[server]\nlog_level = debug\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_STR(err, "t.ini:0: [listener] cert: required, but not set\n"
                 "t.ini:0: [listener] key: required, but not set\n"
                 "t.ini:0: [upstream] server: required, but not set\n");
  CHECK_EQ_INT(c.log_level, H3G_LOG_INFO);

  /* A value already in cfg (say, from a flag) satisfies a required key. */
  write_file("t.ini", "[listener]\nkey = certs/server.key\n"
                      "[upstream]\nserver = 127.0.0.1:8080\n");
  reset(&c);
  snprintf(c.cert_file, sizeof(c.cert_file), "%s", in_tmp("certs/server.crt"));
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", err, sizeof(err)), 0);
  CHECK_STR(c.cert_file, in_tmp("certs/server.crt"));

  /* A group without a server is reported on its section line. */
  CHECK_EQ_INT(load("[listener]\ncert = certs/server.crt\n"
                    "key = certs/server.key\n[upstream]\npool_size = 2\n",
                    &c),
               H3G_ERR_INVAL);
  CHECK_STR(err, "t.ini:4: [upstream] server: required, but not "
                 "set\n");
  CHECK_EQ_INT(loadf(&c, REQUIRED "[upstream app]\n[route r]\nupstream = "
                                  "app\n"),
               H3G_ERR_INVAL);
  CHECK_STR(err, "t.ini:6: [upstream app] server: required, but not set\n");
  h3g_config_free(&c);
}

/* The groups and routes a load brings replace cfg's on success (freed,
 * for the leak checker to see) and are left alone on failure. */
static void test_reload_replaces_named(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(loadf(&c, REQUIRED "[upstream b]\nserver = 10.0.0.2:80\n"
                                  "[route r]\nupstream = b\n"),
               0);
  CHECK_EQ_INT(c.ngroups, 2);
  write_file("t.ini", REQUIRED);
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", err, sizeof(err)), 0);
  CHECK_EQ_INT(c.ngroups, 1);
  CHECK_EQ_INT(c.nroutes, 1);
  CHECK_EQ_INT(c.routes_implicit, 1);
  write_file("t.ini", REQUIRED "[upstream x]\n");
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", err, sizeof(err)), H3G_ERR_INVAL);
  CHECK_EQ_INT(c.ngroups, 1);
  CHECK_STR(upstream_server(&c)->address, "127.0.0.1:8080");
  CHECK_EQ_INT(h3g_config_load_string(&c, REQUIRED, strlen(REQUIRED), "m.ini",
                                      tmp, err, sizeof(err)),
               0);
  CHECK_EQ_INT(c.ngroups, 1);
  h3g_config_free(&c);
  CHECK(c.groups == NULL && c.routes == NULL);
  CHECK_EQ_INT(c.ngroups + c.nroutes + c.routes_implicit, 0);
}

static void test_cert_checks(void) {
  h3g_config c = {0};
  write_file(in_tmp("certs/not-pem.crt"), "hello\n");
  write_file(in_tmp("certs/empty.key"), "");
  make_dir(in_tmp("certs/dir.crt"));
  int rc = load("[listener]\n"
                "cert = certs/missing.crt\n"
                "key = certs/server.crt\n"
                "[upstream]\n"
                "server = 127.0.0.1:8080\n",
                &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  char want[PATH_MAX + 256];
  snprintf(want, sizeof(want),
           "t.ini:2: [listener] cert: cannot open %s: No such file or "
           "directory\n",
           in_tmp("certs/missing.crt"));
  CHECK_ERR(want);
  /* A certificate where the key belongs is caught at load time. */
  snprintf(want, sizeof(want),
           "t.ini:3: [listener] key: %s is not a PEM private key (found no "
           "\"PRIVATE KEY-----\")\n",
           in_tmp("certs/server.crt"));
  CHECK_ERR(want);
  CHECK_EQ_INT(count_lines(err), 2);

  rc = load("[listener]\ncert = certs/dir.crt\nkey = certs/empty.key\n"
            "[upstream]\nserver = 127.0.0.1:8080\n",
            &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:2: [listener] cert: ");
  CHECK_ERR("dir.crt is not a regular file\n");
  CHECK_ERR("t.ini:3: [listener] key: ");
  CHECK_ERR("empty.key is not a PEM private key");

  rc = load("[listener]\ncert = certs/not-pem.crt\nkey = certs/server.key\n"
            "[upstream]\nserver = 127.0.0.1:8080\n",
            &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("not-pem.crt is not a PEM certificate (found no \"-----BEGIN "
            "CERTIFICATE-----\")\n");

  /* Permission bits mean nothing to root, who runs CI's containers. */
  if (geteuid() != 0) {
    write_file(in_tmp("certs/locked.key"), PEM_KEY);
    chmod(in_tmp("certs/locked.key"), 0);
    rc = load("[listener]\ncert = certs/server.crt\nkey = certs/locked.key\n"
              "[upstream]\nserver = 127.0.0.1:8080\n",
              &c);
    CHECK_EQ_INT(rc, H3G_ERR_INVAL);
    CHECK_ERR("Permission denied");
  }

  /* A cert set before the load (not in the file) is checked too, at 0. */
  write_file("t.ini", "[listener]\nkey = certs/server.key\n"
                      "[upstream]\nserver = 127.0.0.1:8080\n");
  reset(&c);
  snprintf(c.cert_file, sizeof(c.cert_file), "%s", in_tmp("certs/nope.crt"));
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", err, sizeof(err)), H3G_ERR_INVAL);
  CHECK_ERR("t.ini:0: [listener] cert: cannot open ");
  h3g_config_free(&c);
}

static void test_relative_paths(void) {
  h3g_config c = {0};
  char ini[PATH_MAX + 512];
  make_dir(in_tmp("sub"));
  make_dir(in_tmp("sub/certs"));
  write_file(in_tmp("sub/certs/server.crt"), PEM_CERT);
  snprintf(ini, sizeof(ini),
           "[server]\naccess_log = ./logs/a.log\n"
           "[listener]\ncert = certs/server.crt\n"
           "key = %s\n"
           "[upstream]\nserver = 127.0.0.1:8080\n",
           in_tmp("certs/server.key"));
  write_file(in_tmp("sub/x.ini"), ini);

  /* An absolute INI path: paths are relative to its directory. */
  reset(&c);
  CHECK_EQ_INT(h3g_config_load(&c, in_tmp("sub/x.ini"), err, sizeof(err)), 0);
  CHECK_STR(err, "");
  CHECK_STR(c.cert_file, in_tmp("sub/certs/server.crt"));
  CHECK_STR(c.key_file, in_tmp("certs/server.key"));
  CHECK_STR(c.access_log, in_tmp("sub/logs/a.log"));

  /* A relative INI path: the stored paths are still absolute. */
  reset(&c);
  CHECK_EQ_INT(h3g_config_load(&c, "sub/x.ini", err, sizeof(err)), 0);
  CHECK_STR(c.cert_file, in_tmp("sub/certs/server.crt"));
  CHECK(c.access_log[0] == '/');
  reset(&c);
  CHECK_EQ_INT(h3g_config_load(&c, "./sub/../sub/x.ini", err, sizeof(err)), 0);
  CHECK(c.cert_file[0] == '/');
  CHECK(strstr(c.cert_file, "sub/certs/server.crt") != NULL);

  /* "-" and "off" are words, not files. */
  CHECK_EQ_INT(load(REQUIRED "[server]\naccess_log = off\n", &c), 0);
  CHECK_STR(c.access_log, "off");
  CHECK_EQ_INT(load(REQUIRED "[server]\naccess_log = /var/log/h3.log\n", &c),
               0);
  CHECK_STR(c.access_log, "/var/log/h3.log");

  /* From a string, against the given directory. */
  static const char text[] = "[listener]\ncert = server.crt\n"
                             "key = ../certs/server.key\n"
                             "[upstream]\nserver = 127.0.0.1:8080\n";
  write_file(in_tmp("sub/server.crt"), PEM_CERT);
  reset(&c);
  CHECK_EQ_INT(h3g_config_load_string(&c, text, sizeof(text) - 1, "mem.ini",
                                      in_tmp("sub"), err, sizeof(err)),
               0);
  CHECK_STR(c.cert_file, in_tmp("sub/server.crt"));
  CHECK_STR(c.key_file, in_tmp("sub/../certs/server.key"));
  h3g_config_free(&c);
}

static void test_syntax(void) {
  h3g_config c = {0};
  int rc = load("log_level = debug\n"   /* 1: before any section */
                REQUIRED                /* 2-6 */
                "just some words\n"     /* 7 */
                "= value\n"             /* 8 */
                "[server] trailing\n"   /* 9 */
                "log_level = \"debug\n" /* 10 */
                "access_log = \"\n",    /* 11 */
                &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_STR(err,
            "t.ini:1: log_level: the key comes before any [section] line\n"
            "t.ini:7: syntax error: expected \"key = value\" or "
            "\"[section]\"\n"
            "t.ini:8: syntax error: no key before \"=\"\n"
            "t.ini:9: [server]: syntax error: unexpected text after \"]\"\n"
            "t.ini:10: [server] log_level: the quoted value has no closing "
            "'\"'\n"
            "t.ini:11: [server] access_log: the quoted value has no closing "
            "'\"'\n");
  h3g_config_free(&c);
}

static void test_comments_quotes_blanks(void) {
  h3g_config c = {0};
  int rc = load("\xEF\xBB\xBF; a BOM, then a comment\r\n"
                "# another comment\r\n"
                "   [listener]   ; indented, with a comment\r\n"
                "\tcert = certs/server.crt ; inline\r\n"
                "  key: certs/server.key # inline too\r\n"
                "port = 8443;not a comment\r\n"
                "address = \"::1\"\r\n"
                "[upstream]\r\n"
                "server=127.0.0.1:8080\r\n"
                "[server]\r\n"
                "access_log = \"  spaced;#name.log \" ; comment\r\n"
                "log_level = debug#not-a-comment\r\n",
                &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  /* "8443;not a comment" and "debug#..." are values: ';' and '#' start a
   * comment only at the start of a line or after a blank. */
  CHECK_ERR("t.ini:6: [listener] port: expected a whole number, not "
            "\"8443;not a comment\"\n");
  CHECK_ERR("t.ini:12: [server] log_level: expected error, warn, info or "
            "debug, not \"debug#not-a-comment\"\n");
  CHECK_EQ_INT(count_lines(err), 2);

  rc = load("\xEF\xBB\xBF[listener]\r\n"
            "\tcert = certs/server.crt ; inline\r\n"
            "  key: certs/server.key # inline too\r\n"
            "address = \"::1\"\r\n"
            "[upstream]\r\n"
            "server=127.0.0.1:8080\r\n"
            "[server]\r\n"
            "access_log = \"  spaced;#name.log \" ; comment\r\n",
            &c);
  CHECK_EQ_INT(rc, 0);
  CHECK_STR(err, "");
  CHECK_STR(c.cert_file, in_tmp("certs/server.crt"));
  CHECK_STR(c.key_file, in_tmp("certs/server.key"));
  CHECK_STR(c.listen_address, "::1");
  CHECK_STR(c.access_log, in_tmp("  spaced;#name.log "));

  /* A blank before ';' ends the value even inside quotes. */
  rc = load(REQUIRED "[server]\naccess_log = \"a ;b\"\n", &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:7: [server] access_log: the quoted value has no closing");
  h3g_config_free(&c);
}

static void test_line_numbers_and_many_errors(void) {
  h3g_config c = {0};
  int rc = load("; comment\n"               /* 1 */
                "\n"                        /* 2 */
                "[server]\n"                /* 3 */
                "log_level = loud\n"        /* 4 */
                "   \n"                     /* 5 */
                "[listener]\n"              /* 6 */
                "cert = certs/server.crt\n" /* 7 */
                "; key is missing\n"        /* 8 */
                "max_streams = 0\n"         /* 9 */
                "max_streams = 1\n"         /* 10 */
                "[upstream]\n"              /* 11 */
                "server = 127.0.0.1:8080\n" /* 12 */
                "pool_size = 0\n"           /* 13 */
                "colour = blue\n",          /* 14 */
                &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_STR(err,
            "t.ini:4: [server] log_level: expected error, warn, info or "
            "debug, not \"loud\"\n"
            "t.ini:9: [listener] max_streams: 0 is below the minimum 1\n"
            "t.ini:10: [listener] max_streams: duplicate key (first set on "
            "line 9)\n"
            "t.ini:13: [upstream] pool_size: 0 is below the minimum "
            "1\n"
            "t.ini:14: [upstream] colour: unknown key\n"
            "t.ini:0: [listener] key: required, but not set\n");
  h3g_config_free(&c);
}

static void test_long_lines(void) {
  h3g_config c = {0};
  char *text = malloc(1 << 20), *p;
  char longname[1200], want[256];
  if (text == NULL)
    exit(2);

  /* A comment far longer than inih's 200-byte line buffer, with text that
   * would be a key if the tail were read as a line of its own. */
  p = text;
  p += sprintf(p, REQUIRED "; still in [upstream]\n; ");
  memset(p, 'x', 4000);
  p += 4000;
  p += sprintf(p, " pool_size = 0\n");
  /* A long value: a relative path of 700 bytes with blanks, ';' and '#'
   * (not after a blank) inside, split across several inih lines. */
  p += sprintf(p, "[server]\naccess_log = logs/");
  size_t at = 0;
  for (int i = 0; i < 100; i++)
    at += (size_t)sprintf(longname + at, "a b;c#%d", i % 10);
  p += sprintf(p, "%s.log ; and a long comment %0300d\n", longname, 0);
  /* Then a bad line, to check the line count went on right. */
  p += sprintf(p, "log_level = chatty\n");
  int rc = load(text, &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_STR(err, "t.ini:10: [server] log_level: expected error, warn, info or "
                 "debug, not \"chatty\"\n");
  p = strstr(text, "log_level = chatty");
  memcpy(p, "log_level = debug\n", 19);
  rc = load(text, &c);
  CHECK_EQ_INT(rc, 0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(group(&c, "default")->pool_size, 64);
  char path[PATH_MAX + 1300];
  snprintf(path, sizeof(path), "%s/logs/%s.log", tmp, longname);
  CHECK_STR(c.access_log, path);

  /* A certificate 600 bytes deep: loads and passes the PEM check. */
  char dir[1024] = "deep";
  make_dir(in_tmp(dir));
  for (int i = 0; i < 10; i++) {
    strcat(dir, "/ddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
    make_dir(in_tmp(dir));
  }
  strcat(dir, "/server.crt");
  write_file(in_tmp(dir), PEM_CERT);
  rc = loadf(&c,
             "[listener]\ncert = %s\nkey = certs/server.key\n"
             "[upstream]\nserver = 127.0.0.1:8080\n",
             in_tmp(dir));
  CHECK_EQ_INT(rc, 0);
  CHECK_STR(c.cert_file, in_tmp(dir));

  /* A value too long for the field: reported, with its line. */
  p = text;
  p += sprintf(p, REQUIRED "[server]\naccess_log = /");
  memset(p, 'y', 1500);
  p += 1500;
  p += sprintf(p, "\nlog_level = x\n");
  rc = load(text, &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:7: [server] access_log: the path is longer than 1023 "
            "bytes\n");
  CHECK_ERR("t.ini:8: [server] log_level: expected");
  CHECK_EQ_INT(count_lines(err), 2);

  /* Blanks everywhere a piece could end: cannot be split. */
  p = text;
  p += sprintf(p, REQUIRED "[server]\naccess_log = a");
  memset(p, ' ', 300);
  p += 300;
  p += sprintf(p, "b\nlog_level = x\n");
  rc = load(text, &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  snprintf(want, sizeof(want),
           "t.ini:7: line too long to split for the INI "
           "parser (315 bytes, lines of at most 197)\n");
  CHECK_ERR(want);
  CHECK_ERR("t.ini:8: [server] log_level: expected");
  CHECK_EQ_INT(count_lines(err), 2);

  /* Long section and key names are unknown names, shown cut short. */
  p = text;
  p += sprintf(p, REQUIRED "[");
  memset(p, 's', 300);
  p += 300;
  p += sprintf(p, "]\nk = 1\n[server]\n");
  memset(p, 'k', 300);
  p += 300;
  p += sprintf(p, " = 1\n");
  rc = load(text, &c);
  CHECK_EQ_INT(rc, H3G_ERR_INVAL);
  CHECK_ERR("t.ini:6: [ssssssssssssssssssssssssssssssssssssssssssssssss...]: "
            "unknown section");
  CHECK_ERR(
      "t.ini:9: [server] kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...: "
      "unknown key\n");
  CHECK_EQ_INT(count_lines(err), 2);
  free(text);
  h3g_config_free(&c);
}

static void test_dump_round_trip(void) {
  h3g_config a = {0}, b = {0};
  CHECK_EQ_INT(load(full_ini, &a), 0);
  char *text = dump(&a);
  /* Every key is there, as "key = value". */
  static const char *const keys[] = {"log_level",
                                     "access_log",
                                     "shutdown_timeout",
                                     "admin",
                                     "address",
                                     "port",
                                     "cert",
                                     "key",
                                     "idle_timeout",
                                     "handshake_timeout",
                                     "max_connections",
                                     "max_streams",
                                     "stream_buffer_size",
                                     "max_header_size",
                                     "server",
                                     "pool_size",
                                     "queue_size",
                                     "connect_timeout",
                                     "response_timeout"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(keys); i++) {
    char needle[64];
    snprintf(needle, sizeof(needle), "\n%s = ", keys[i]);
    CHECK(strstr(text, needle) != NULL);
  }
  CHECK(strstr(text, "\nshutdown_timeout = 1500ms\n") != NULL);
  CHECK(strstr(text, "\nidle_timeout = 2m\n") != NULL);
  CHECK(strstr(text, "\nstream_buffer_size = 1MiB\n") != NULL);
  CHECK(strstr(text, "\nmax_header_size = 1025B\n") != NULL);
  CHECK(strstr(text, "\nadmin = [::1]:9901\n") != NULL);
  CHECK(strstr(text, "\nresponse_timeout = 1h\n") != NULL);
  CHECK(strstr(text, "\nlog_level = debug\n") != NULL);
  CHECK_EQ_INT(load(text, &b), 0);
  CHECK_STR(err, "");
  check_same(&a, &b);
  free(text);

  /* Values that need quotes, a long path, an IPv4 upstream, admin off. */
  CHECK_EQ_INT(
      load(REQUIRED "[server]\naccess_log = \" lead and trail \"\n", &a), 0);
  char longpath[900];
  memset(longpath, 'z', sizeof(longpath) - 1);
  longpath[0] = '/';
  longpath[sizeof(longpath) - 1] = '\0';
  snprintf(a.access_log, sizeof(a.access_log), "%s", longpath);
  text = dump(&a);
  CHECK(strstr(text, "\nadmin = off\n") != NULL);
  CHECK(strstr(text, "\n[upstream]\nserver = 127.0.0.1:8080 "
                     "weight=1\n") != NULL);
  /* The implicit route is made again by the load, not written. */
  CHECK(strstr(text, "[route") == NULL);
  CHECK_EQ_INT(load(text, &b), 0);
  check_same(&a, &b);
  free(text);
  CHECK_EQ_INT(
      load(REQUIRED "[server]\naccess_log = \" lead and trail \"\n", &a), 0);
  text = dump(&a);
  CHECK_EQ_INT(load(text, &b), 0);
  CHECK_STR(b.access_log, in_tmp(" lead and trail "));
  check_same(&a, &b);
  free(text);

  /* The defaults leave required keys unset: dumped as comments. */
  reset(&a);
  text = dump(&a);
  CHECK(strstr(text, "\n; cert = (required, not set)\n") != NULL);
  CHECK_EQ_INT(load(text, &b), H3G_ERR_INVAL);
  CHECK_EQ_INT(count_lines(err), 3);
  CHECK_ERR("t.ini:0: [upstream] server: required, but not set\n");
  free(text);
  h3g_config_free(&a);
  h3g_config_free(&b);
}

/* ---- [upstream NAME] and [route NAME] ---------------------------------- */

/* What every file of the named-section tests starts with: lines 1-3. */
#define LISTENER                                                               \
  "[listener]\n"                                                               \
  "cert = certs/server.crt\n"                                                  \
  "key = certs/server.key\n"

/* A file (after LISTENER, so its first line is line 4) and the exact
 * messages it gets, all of them. */
static const struct {
  const char *text, *want;
} named_errors[] = {
    /* section names */
    {"[upstream a]\nserver = 10.0.0.1:80\n[upstream a]\nserver = 10.0.0.2:80\n"
     "[route r]\nupstream = a\n",
     "t.ini:6: [upstream a]: duplicate section name (first on line 4)\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "[route r]\nupstream = a\n",
     "t.ini:8: [route r]: duplicate section name (first on line 6)\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route]\nupstream = a\n",
     "t.ini:6: [route]: a route needs a name, as in [route app]\n"},
    {"[upstream a/b]\nserver = 10.0.0.1:80\n",
     "t.ini:4: [upstream a/b]: the name may hold letters, digits, '_', '-' "
     "and '.' (at most 63)\n"
     "t.ini:0: [upstream] server: required, but not set\n"},
    /* servers */
    {"[upstream a]\nserver = app\n",
     "t.ini:5: [upstream a] server: expected host:port, not \"app\"\n"},
    {"[upstream a]\nserver = app:0\n",
     "t.ini:5: [upstream a] server: the port 0 is below the minimum 1\n"},
    {"[upstream a]\nserver = unix:\n",
     "t.ini:5: [upstream a] server: expected unix:/path, a socket path of at "
     "most 107 bytes, not \"unix:\"\n"},
    {"[upstream a]\nserver = ftp://x:1\n",
     "t.ini:5: [upstream a] server: expected host:port, unix:/path or "
     "https://host:port, not \"ftp://x:1\"\n"},
    {"[upstream a]\nserver = \"\"\n",
     "t.ini:5: [upstream a] server: expected an address: host:port, "
     "unix:/path or https://host:port\n"},
    {"[upstream a]\nserver = 10.0.0.1:80 weight=0\n",
     "t.ini:5: [upstream a] server: weight must be a whole number from 1 to "
     "1000, not \"0\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80 weight=1001\n",
     "t.ini:5: [upstream a] server: weight must be a whole number from 1 to "
     "1000, not \"1001\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80 weight=x\n",
     "t.ini:5: [upstream a] server: weight must be a whole number from 1 to "
     "1000, not \"x\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80 heavy\n",
     "t.ini:5: [upstream a] server: expected weight=N or backup after the "
     "address, not \"heavy\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nserver = 10.0.0.2:80\n"
     "server = 10.0.0.1:80 weight=2\n",
     "t.ini:7: [upstream a] server: 10.0.0.1:80 is listed twice (first on "
     "line 5)\n"},
    /* http:// and the bare address are one server */
    {"[upstream a]\nserver = http://app\nserver = app:80\n",
     "t.ini:6: [upstream a] server: app:80 is listed twice (first on line "
     "5)\n"},
    {"[upstream a]\nserver = 10.0.0.1:80 backup\nserver = 10.0.0.2:80 backup\n",
     "t.ini:5: [upstream a] server: every server is a backup: at least one "
     "must not be\n"},
    /* group keys */
    {"[upstream a]\nserver = 10.0.0.1:80\nhash_key = ip\n",
     "t.ini:6: [upstream a] hash_key: expected client_ip, header:NAME or "
     "cookie:NAME, not \"ip\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhash_key = header:\n",
     "t.ini:6: [upstream a] hash_key: \"\" is not a header name\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhash_key = cookie:a b\n",
     "t.ini:6: [upstream a] hash_key: \"a b\" is not a cookie name\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nbalance = random\n",
     "t.ini:6: [upstream a] balance: expected round_robin, least_conn or "
     "hash, not \"random\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhealth_check = GET\n",
     "t.ini:6: [upstream a] health_check: expected off or \"METHOD /path\", "
     "not \"GET\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhealth_check = GET up\n",
     "t.ini:6: [upstream a] health_check: expected off or \"METHOD /path\", "
     "not \"GET up\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhealth_status = 600\n",
     "t.ini:6: [upstream a] health_status: expected a status from 100 to 599 "
     "or a range such as 200-399, not \"600\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhealth_status = 399-200\n",
     "t.ini:6: [upstream a] health_status: expected a status from 100 to 599 "
     "or a range such as 200-399, not \"399-200\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nhealth_status = 2xx\n",
     "t.ini:6: [upstream a] health_status: expected a status from 100 to 599 "
     "or a range such as 200-399, not \"2xx\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\nretries = 11\n",
     "t.ini:6: [upstream a] retries: 11 is above the maximum 10\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\npool_sise = 3\n",
     "t.ini:6: [upstream a] pool_sise: unknown key (did you mean "
     "pool_size?)\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\npath = /x\n",
     "t.ini:6: [upstream a] path: unknown key (it belongs in [route NAME])\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\npool_size = 1\npool_size = 2\n",
     "t.ini:7: [upstream a] pool_size: duplicate key (first set on line 6)\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\ntls_cert = certs/server.crt\n",
     "t.ini:6: [upstream a] tls_cert: a client certificate needs both "
     "tls_cert and tls_key\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\ntls_key = certs/server.key\n",
     "t.ini:6: [upstream a] tls_key: a client certificate needs both "
     "tls_cert and tls_key\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\ntls_cert = certs/server.key\n"
     "tls_key = certs/server.key\n",
     "t.ini:6: [upstream a] tls_cert: @/certs/server.key is not a PEM "
     "certificate (found no \"-----BEGIN CERTIFICATE-----\")\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\ntls_ca = nope.pem\n",
     "t.ini:6: [upstream a] tls_ca: cannot open @/nope.pem: No such file or "
     "directory\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\ntls_ca = certs/server.key\n",
     "t.ini:6: [upstream a] tls_ca: @/certs/server.key is not a PEM "
     "certificate file (found no \"-----BEGIN CERTIFICATE-----\")\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\ntls_sni = a b\n",
     "t.ini:6: [upstream a] tls_sni: expected a host name or an IP address, "
     "not \"a b\"\n"},
    /* the groups and routes as a whole */
    {"[upstream a]\nserver = 10.0.0.1:80\n[upstream b]\nserver = 10.0.0.2:80\n",
     "t.ini:0: [route]: 2 [upstream] groups, but no [route] names which "
     "requests go where\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nhost = a.example.com\n",
     "t.ini:6: [route r] upstream: required, but not set\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nhost = a.example.com\n"
     "upstream = b\n",
     "t.ini:8: [route r] upstream: no [upstream b] section\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a b\n",
     "t.ini:7: [route r] upstream: expected a name of letters, digits, '_', "
     "'-' and '.', not \"a b\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n"
     "[route r1]\nhost = a.example.com\npath = /api\nupstream = a\n"
     "[route r2]\nhost = b.example.com A.example.com.\npath = /x /api\n"
     "upstream = a\n",
     "t.ini:12: [route r2] path: /api on a.example.com is already matched by "
     "[route r1] (line 6)\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r1]\nupstream = a\n"
     "[route r2]\nupstream = a\n",
     "t.ini:8: [route r2] path: / on any host is already matched by [route "
     "r1] (line 6)\n"},
    /* hosts */
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "host = app.example.com:443\n",
     "t.ini:8: [route r] host: expected host names or *.example.com "
     "wildcards (without a port), not \"app.example.com:443\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "host = a..b\n",
     "t.ini:8: [route r] host: expected host names or *.example.com "
     "wildcards (without a port), not \"a..b\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "host = *\n",
     "t.ini:8: [route r] host: expected host names or *.example.com "
     "wildcards (without a port), not \"*\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "host = a.*.com\n",
     "t.ini:8: [route r] host: expected host names or *.example.com "
     "wildcards (without a port), not \"a.*.com\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "host = [::1]:443\n",
     "t.ini:8: [route r] host: expected host names or *.example.com "
     "wildcards (without a port), not \"[::1]:443\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "host = a.com, A.com\n",
     "t.ini:8: [route r] host: \"a.com\" is listed twice\n"},
    /* paths */
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "path = api\n",
     "t.ini:8: [route r] path: expected path prefixes starting with \"/\" (no "
     "query), not \"api\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "path = /a /api?x=1\n",
     "t.ini:8: [route r] path: expected path prefixes starting with \"/\" (no "
     "query), not \"/api?x=1\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "path = \"\"\n",
     "t.ini:8: [route r] path: expected path prefixes starting with \"/\" (no "
     "query), not \"\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "path = /a, /a\n",
     "t.ini:8: [route r] path: \"/a\" is listed twice\n"},
    /* header edits */
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "add_request_header = Connection: close\n",
     "t.ini:8: [route r] add_request_header: connection is managed by the "
     "gateway and cannot be added\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "add_request_header = Content-Length: 5\n",
     "t.ini:8: [route r] add_request_header: content-length is managed by the "
     "gateway and cannot be added\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "add_response_header = Transfer-Encoding: chunked\n",
     "t.ini:8: [route r] add_response_header: transfer-encoding is managed by "
     "the gateway and cannot be added\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "remove_request_header = Host\n",
     "t.ini:8: [route r] remove_request_header: host is managed by the "
     "gateway and cannot be removed\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "add_request_header = X-Gateway h3gate\n",
     "t.ini:8: [route r] add_request_header: expected \"Name: value\", not "
     "\"X-Gateway h3gate\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "add_request_header = \": v\"\n",
     "t.ini:8: [route r] add_request_header: expected \"Name: value\", not "
     "\": v\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "remove_request_header = X A\n",
     "t.ini:8: [route r] remove_request_header: expected a field name, not "
     "\"X A\"\n"},
    /* route keys */
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "response_timeout = 0\n",
     "t.ini:8: [route r] response_timeout: 0 is below the minimum 1ms\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "early_data = maybe\n",
     "t.ini:8: [route r] early_data: expected yes or no, not \"maybe\"\n"},
    {"[upstream a]\nserver = 10.0.0.1:80\n[route r]\nupstream = a\n"
     "pool_size = 3\n",
     "t.ini:8: [route r] pool_size: unknown key (it belongs in [upstream "
     "NAME])\n"},
};

/* want with each "@" replaced by the test directory. */
static void expand_tmp(const char *want, char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = want; *p != '\0' && n + 1 < cap; p++) {
    if (*p == '@') {
      n += (size_t)snprintf(out + n, cap - n, "%s", tmp);
      n = H3G_MIN(n, cap - 1);
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
}

static void test_named_errors(void) {
  h3g_config c = {0};
  for (size_t i = 0; i < H3G_ARRAY_LEN(named_errors); i++) {
    char want[2048];
    expand_tmp(named_errors[i].want, want, sizeof(want));
    int rc = loadf(&c, LISTENER "%s", named_errors[i].text);
    CHECK_EQ_INT(rc, H3G_ERR_INVAL);
    CHECK_STR(err, want);
    if (strcmp(err, want) != 0)
      fprintf(stderr, "  file:\n%s\n", named_errors[i].text);
    /* A failed load leaves cfg as it was. */
    CHECK_EQ_INT(c.ngroups + c.nroutes, 0);
  }
  h3g_config_free(&c);
}

/* Servers of each kind, with weight and backup. */
static void test_servers(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(LISTENER "[upstream app]\n"
                             "server = app.internal:3000\n"
                             "server = [2001:DB8::1]:8080 weight=5\n"
                             "server = unix:run/app.sock backup\n"
                             "server = unix:/run/abs.sock weight=1000\n"
                             "server = https://api.internal\n"
                             "server = https://api.internal:8443/ backup "
                             "weight=3\n"
                             "server = http://plain.internal\n"
                             "server = https://[::1]\n",
                    &c),
               0);
  CHECK_STR(err, "");
  const h3g_group_conf *g = group(&c, "app");
  CHECK_EQ_INT(g->line, 4);
  CHECK_EQ_INT(g->nservers, 8);
  static const struct {
    h3g_server_kind kind;
    const char *host;
    unsigned port;
    const char *path, *address;
    unsigned weight, backup;
  } want[] = {
      {H3G_SERVER_TCP, "app.internal", 3000, "", "app.internal:3000", 1, 0},
      {H3G_SERVER_TCP, "2001:DB8::1", 8080, "", "[2001:DB8::1]:8080", 5, 0},
      {H3G_SERVER_UNIX, "", 0, "@/run/app.sock", "unix:@/run/app.sock", 1, 1},
      {H3G_SERVER_UNIX, "", 0, "/run/abs.sock", "unix:/run/abs.sock", 1000, 0},
      {H3G_SERVER_TLS, "api.internal", 443, "", "https://api.internal:443", 1,
       0},
      {H3G_SERVER_TLS, "api.internal", 8443, "", "https://api.internal:8443",
       3, 1},
      {H3G_SERVER_TCP, "plain.internal", 80, "", "plain.internal:80", 1, 0},
      {H3G_SERVER_TLS, "::1", 443, "", "https://[::1]:443", 1, 0},
  };
  for (uint32_t i = 0; i < H3G_ARRAY_LEN(want); i++) {
    const h3g_server_conf *sv = server_of(g, i);
    char path[PATH_MAX + 64], address[PATH_MAX + 64];
    expand_tmp(want[i].path, path, sizeof(path));
    expand_tmp(want[i].address, address, sizeof(address));
    CHECK_EQ_INT(sv->kind, want[i].kind);
    CHECK_STR(sv->host, want[i].host);
    CHECK_EQ_INT(sv->port, want[i].port);
    CHECK_STR(sv->path, path);
    CHECK_STR(sv->address, address);
    CHECK_EQ_INT(sv->weight, want[i].weight);
    CHECK_EQ_INT(sv->backup, want[i].backup);
    CHECK_EQ_INT(sv->line, 5 + i);
  }

  /* A unix: path is relative to the INI file's directory. */
  static const char text[] = LISTENER "[upstream]\nserver = unix:app.sock\n";
  make_dir(in_tmp("sub"));
  write_file(in_tmp("sub/certs.crt"), PEM_CERT);
  reset(&c);
  snprintf(c.cert_file, sizeof(c.cert_file), "%s", in_tmp("certs/server.crt"));
  CHECK_EQ_INT(h3g_config_load_string(&c, text, sizeof(text) - 1, "m.ini",
                                      in_tmp("sub"), err, sizeof(err)),
               H3G_ERR_INVAL); /* certs/ is not under sub/ */
  make_dir(in_tmp("sub/certs"));
  write_file(in_tmp("sub/certs/server.crt"), PEM_CERT);
  write_file(in_tmp("sub/certs/server.key"), PEM_KEY);
  CHECK_EQ_INT(h3g_config_load_string(&c, text, sizeof(text) - 1, "m.ini",
                                      in_tmp("sub"), err, sizeof(err)),
               0);
  CHECK_STR(upstream_server(&c)->path, in_tmp("sub/app.sock"));

  /* The group keys, as stored. */
  CHECK_EQ_INT(load(LISTENER "[upstream a]\nserver = https://a:1\n"
                             "balance = least_conn\nhash_key = "
                             "header:X-User\nhealth_check = HEAD  /up\n"
                             "health_status = 204\nhealth_host = up.local\n"
                             "tls_ca = certs/server.crt\ntls_verify = off\n"
                             "tls_sni = api.example\n"
                             "tls_cert = certs/server.crt\n"
                             "tls_key = certs/server.key\nretries = 0\n"
                             "max_fails = 0\nresolve = 0\n",
                    &c),
               0);
  CHECK_STR(err, "");
  g = group(&c, "a");
  CHECK_EQ_INT(g->balance, H3G_BALANCE_LEAST_CONN);
  CHECK_EQ_INT(g->hash_key, H3G_HASH_HEADER);
  CHECK_STR(g->hash_name, "x-user");
  CHECK_STR(g->hash_key_text, "header:X-User");
  CHECK_STR(g->health_method, "HEAD");
  CHECK_STR(g->health_path, "/up");
  CHECK_STR(g->health_check, "HEAD /up");
  CHECK_EQ_INT(g->health_status_lo, 204);
  CHECK_EQ_INT(g->health_status_hi, 204);
  CHECK_STR(g->health_host, "up.local");
  CHECK_STR(g->tls_ca, in_tmp("certs/server.crt"));
  CHECK_EQ_INT(g->tls_verify, 0);
  CHECK_STR(g->tls_sni, "api.example");
  CHECK_STR(g->tls_cert, in_tmp("certs/server.crt"));
  CHECK_STR(g->tls_key, in_tmp("certs/server.key"));
  CHECK_EQ_INT(g->retries, 0);
  CHECK_EQ_INT(g->max_fails, 0);
  CHECK_EQ_INT(g->resolve_interval_ms, 0);
  CHECK_EQ_INT(load(LISTENER "[upstream a]\nserver = a:1\nbalance = hash\n"
                             "hash_key = cookie:SID\n",
                    &c),
               0);
  CHECK_EQ_INT(group(&c, "a")->balance, H3G_BALANCE_HASH);
  CHECK_EQ_INT(group(&c, "a")->hash_key, H3G_HASH_COOKIE);
  CHECK_STR(group(&c, "a")->hash_name, "SID"); /* cookie names keep case */
  h3g_config_free(&c);
}

/* A route's settings: its own, else its group's (response_timeout,
 * expect_continue_timeout), else the global keys', wherever in the file
 * those are. */
static void test_route_inheritance(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(LISTENER "[upstream a]\nserver = 10.0.0.1:80\n"
                             "response_timeout = 5s\n"
                             "expect_continue_timeout = 2s\n"
                             "[upstream b]\nserver = 10.0.0.2:80\n"
                             "[route inherit]\nhost = a.example.com\n"
                             "upstream = a\n"
                             "[route own]\nhost = b.example.com\n"
                             "upstream = a\nresponse_timeout = 9s\n"
                             "expect_continue_timeout = 3s\n"
                             "request_body_timeout = 0\n"
                             "max_request_body = 10\nearly_data = on\n"
                             "forwarded = off\nx_forwarded = on\nvia = on\n"
                             "alt_svc = on\n"
                             "add_request_header = X-A:  1 2\n"
                             "add_request_header = x-b:\n"
                             "remove_request_header = Cookie\n"
                             "add_response_header = Strict-Transport-"
                             "Security: max-age=60\n"
                             "[route other]\nupstream = b\n"
                             "[listener]\nrequest_body_timeout = 7s\n"
                             "max_request_body = 1MiB\nearly_data = off\n"
                             "[forwarding]\nforwarded = on\nx_forwarded = off\n"
                             "via = off\n[alt_svc]\nenabled = no\n",
                    &c),
               0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(c.nroutes, 3);
  CHECK_EQ_INT(c.routes_implicit, 0);
  const h3g_route_conf *r = route(&c, "inherit");
  CHECK_EQ_INT(r->group, 0);
  CHECK_EQ_INT(r->s.response_timeout_ms, 5000);
  CHECK_EQ_INT(r->s.expect_continue_timeout_ms, 2000);
  CHECK_EQ_INT(r->s.request_body_timeout_ms, 7000);
  CHECK_EQ_INT(r->s.max_request_body, 1048576);
  CHECK_EQ_INT(r->s.early_data, 0);
  CHECK_EQ_INT(r->s.fwd_forwarded, 1);
  CHECK_EQ_INT(r->s.fwd_x_forwarded, 0);
  CHECK_EQ_INT(r->s.fwd_via, 0);
  CHECK_EQ_INT(r->s.alt_svc, 0);
  CHECK_EQ_INT(r->s.nadd_request + r->s.nremove_request + r->s.nadd_response,
               0);
  r = route(&c, "own");
  CHECK_EQ_INT(r->group, 0);
  CHECK_EQ_INT(r->s.response_timeout_ms, 9000);
  CHECK_EQ_INT(r->s.expect_continue_timeout_ms, 3000);
  CHECK_EQ_INT(r->s.request_body_timeout_ms, 0);
  CHECK_EQ_INT(r->s.max_request_body, 10);
  CHECK_EQ_INT(r->s.early_data, 1);
  CHECK_EQ_INT(r->s.fwd_forwarded, 0);
  CHECK_EQ_INT(r->s.fwd_x_forwarded, 1);
  CHECK_EQ_INT(r->s.fwd_via, 1);
  CHECK_EQ_INT(r->s.alt_svc, 1);
  CHECK_EQ_INT(r->s.nadd_request, 2);
  if (r->s.nadd_request == 2) {
    CHECK_STR(r->s.add_request[0].name, "x-a");
    CHECK_STR(r->s.add_request[0].value, "1 2");
    CHECK_STR(r->s.add_request[1].name, "x-b");
    CHECK_STR(r->s.add_request[1].value, "");
  }
  CHECK_EQ_INT(r->s.nremove_request, 1);
  if (r->s.nremove_request == 1) {
    CHECK_STR(r->s.remove_request[0].name, "cookie");
    CHECK(r->s.remove_request[0].value == NULL);
  }
  CHECK_EQ_INT(r->s.nadd_response, 1);
  if (r->s.nadd_response == 1) {
    CHECK_STR(r->s.add_response[0].name, "strict-transport-security");
    CHECK_STR(r->s.add_response[0].value, "max-age=60");
  }
  r = route(&c, "other");
  CHECK_EQ_INT(r->group, 1);
  CHECK_STR(r->upstream, "b");
  CHECK_EQ_INT(r->nhosts, 0);
  CHECK_EQ_INT(r->npaths, 1);
  CHECK_STR(r->npaths ? r->paths[0] : "", "/");
  CHECK_EQ_INT(r->s.response_timeout_ms, 60000);
  CHECK_EQ_INT(r->s.expect_continue_timeout_ms, 1000);
  CHECK_EQ_INT(r->s.request_body_timeout_ms, 7000);
  h3g_config_free(&c);
}

/*
 * WebSockets: [listener] websocket is every route's default and a route's
 * own websocket overrides it; websocket_any (whether the HTTP/2 and HTTP/3
 * front ends offer extended CONNECT) is 1 exactly when some route takes
 * WebSockets, the implicit route included, and is worked out afresh by
 * every load.
 */
static void test_websocket_settings(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(REQUIRED, &c), 0);
  CHECK_EQ_INT(c.websocket, 1);
  CHECK_EQ_INT(c.tunnel_idle_timeout_ms, 3600000);
  CHECK_EQ_INT(c.max_tunnels, 10000);
  CHECK_EQ_INT(c.max_tunnels_per_connection, 100);
  CHECK_EQ_INT(route(&c, "default")->s.websocket, 1);
  CHECK_EQ_INT(c.websocket_any, 1);

  CHECK_EQ_INT(load(REQUIRED "[listener]\nwebsocket = off\n"
                             "tunnel_idle_timeout = 90s\nmax_tunnels = 7\n"
                             "max_tunnels_per_connection = 3\n",
                    &c),
               0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(c.websocket, 0);
  CHECK_EQ_INT(c.tunnel_idle_timeout_ms, 90000);
  CHECK_EQ_INT(c.max_tunnels, 7);
  CHECK_EQ_INT(c.max_tunnels_per_connection, 3);
  CHECK_EQ_INT(route(&c, "default")->s.websocket, 0);
  CHECK_EQ_INT(c.websocket_any, 0);

  /* Off by default, on for one route: offered. */
  CHECK_EQ_INT(load(LISTENER "websocket = off\n"
                             "[upstream]\nserver = 10.0.0.1:80\n"
                             "[route chat]\npath = /chat\nupstream = default\n"
                             "websocket = on\n"
                             "[route rest]\nupstream = default\n",
                    &c),
               0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(route(&c, "chat")->s.websocket, 1);
  CHECK_EQ_INT(route(&c, "rest")->s.websocket, 0);
  CHECK_EQ_INT(c.websocket_any, 1);

  /* On by default, off for every route: not offered. */
  CHECK_EQ_INT(load(LISTENER "[upstream]\nserver = 10.0.0.1:80\n"
                             "[route a]\npath = /a\nupstream = default\n"
                             "websocket = off\n"
                             "[route b]\nupstream = default\nwebsocket = no\n",
                    &c),
               0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(c.websocket, 1);
  CHECK_EQ_INT(route(&c, "a")->s.websocket, 0);
  CHECK_EQ_INT(route(&c, "b")->s.websocket, 0);
  CHECK_EQ_INT(c.websocket_any, 0);

  /* Where [listener] comes after the routes, they still inherit it. */
  CHECK_EQ_INT(load("[upstream]\nserver = 10.0.0.1:80\n"
                    "[route a]\nupstream = default\n"
                    "[listener]\ncert = certs/server.crt\n"
                    "key = certs/server.key\nwebsocket = off\n",
                    &c),
               0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(route(&c, "a")->s.websocket, 0);
  CHECK_EQ_INT(c.websocket_any, 0);

  /* A route's own value is checked as a boolean. */
  CHECK_EQ_INT(load(REQUIRED "[route r]\nupstream = default\n"
                             "websocket = sometimes\n",
                    &c),
               H3G_ERR_INVAL);
  CHECK_ERR("[route r] websocket: expected yes or no, not \"sometimes\"");
  h3g_config_free(&c);

  /* The dump keeps a route's override and the listener's default. */
  h3g_config a = {0}, b = {0};
  CHECK_EQ_INT(load(LISTENER
                    "websocket = off\ntunnel_idle_timeout = 5m\n"
                    "max_tunnels = 12\nmax_tunnels_per_connection = 2\n"
                    "[upstream]\nserver = 10.0.0.1:80\n"
                    "[route chat]\npath = /chat\nupstream = default\n"
                    "websocket = on\n"
                    "[route rest]\nupstream = default\n",
                    &a),
               0);
  char *text = dump(&a);
  CHECK_EQ_INT(load(text, &b), 0);
  CHECK_STR(err, "");
  check_same(&a, &b);
  CHECK_EQ_INT(b.websocket, 0);
  CHECK_EQ_INT(route(&b, "chat")->s.websocket, 1);
  CHECK_EQ_INT(route(&b, "rest")->s.websocket, 0);
  CHECK_EQ_INT(b.websocket_any, 1);
  free(text);
  h3g_config_free(&a);
  h3g_config_free(&b);
}

/* A file without [route]: one route, "default", to its only group. */
static void test_implicit_route(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(REQUIRED "[listener]\nearly_data = off\n", &c), 0);
  CHECK_EQ_INT(c.nroutes, 1);
  CHECK_EQ_INT(c.routes_implicit, 1);
  const h3g_route_conf *r = route(&c, "default");
  CHECK_STR(r->upstream, "default");
  CHECK_EQ_INT(r->group, 0);
  CHECK_EQ_INT(r->nhosts, 0);
  CHECK_EQ_INT(r->npaths, 1);
  CHECK_STR(r->npaths ? r->paths[0] : "", "/");
  CHECK_EQ_INT(r->s.response_timeout_ms, 60000);
  CHECK_EQ_INT(r->s.request_body_timeout_ms, 60000);
  CHECK_EQ_INT(r->s.early_data, 0);
  CHECK_EQ_INT(r->s.fwd_x_forwarded, 1);
  CHECK_EQ_INT(r->s.alt_svc, 1);

  /* Its one group may have a name. */
  CHECK_EQ_INT(load(LISTENER "[upstream app]\nserver = 10.0.0.1:80\n", &c), 0);
  CHECK_EQ_INT(c.routes_implicit, 1);
  CHECK_STR(route(&c, "default")->upstream, "app");

  /* With a [route], there is no implicit one, even for one group. */
  CHECK_EQ_INT(load(REQUIRED "[route api]\npath = /api\nupstream = default\n",
                    &c),
               0);
  CHECK_EQ_INT(c.nroutes, 1);
  CHECK_EQ_INT(c.routes_implicit, 0);
  CHECK(route_named(&c, "default") == NULL);
  /* and a route may be called "default" */
  CHECK_EQ_INT(load(REQUIRED "[route default]\nupstream = default\n", &c), 0);
  CHECK_EQ_INT(c.routes_implicit, 0);
  h3g_config_free(&c);
}

static const char routes_ini[] =
    LISTENER
    "[upstream]\nserver = 127.0.0.1:8080\n"
    "[upstream rails]\n"
    "server = 10.0.0.11:3000 weight=2\n"
    "server = 10.0.0.12:3000\n"
    "server = [2001:db8::13]:3000 backup\n"
    "balance = least_conn\nhealth_check = GET /up\nhealth_status = 200-299\n"
    "health_host = rails.local\nretries = 1\nmax_fails = 5\n"
    "fail_timeout = 1500ms\nmax_fail_timeout = 1h\nresolve = 0\n"
    "[upstream api]\n"
    "server = https://api.internal:8443\n"
    "tls_ca = certs/server.crt\ntls_sni = api.example\ntls_verify = off\n"
    "tls_cert = certs/server.crt\ntls_key = certs/server.key\n"
    "balance = hash\nhash_key = cookie:sid\n"
    "[upstream static]\nserver = unix:run/static.sock\n"
    "pool_size = 8\nqueue_size = 0\nconnect_timeout = 250ms\n"
    "idle_timeout = 90s\nexpect_continue_timeout = 10ms\n"
    "[route static]\nhost = app.example.com\npath = /static/ /assets/\n"
    "upstream = static\n"
    "[route api]\nhost = app.example.com, api.example.com\npath = /api/\n"
    "upstream = api\nresponse_timeout = 5m\n"
    "add_request_header = X-Gateway: h3gate\n"
    "add_request_header = X-Empty:\n"
    "remove_request_header = X-Debug\n"
    "add_response_header = X-Frame-Options: DENY\n"
    "[route app]\nhost = APP.example.com. *.app.example.com\n"
    "upstream = rails\nearly_data = off\nalt_svc = off\n"
    "[route rest]\nupstream = default\nmax_request_body = 1MiB\n";

/* dump, then load: the same groups and routes. */
static void test_named_round_trip(void) {
  h3g_config a = {0}, b = {0};
  make_dir(in_tmp("run"));
  CHECK_EQ_INT(load(routes_ini, &a), 0);
  CHECK_STR(err, "");
  CHECK_EQ_INT(a.ngroups, 4);
  CHECK_EQ_INT(a.nroutes, 4);
  char *text = dump(&a);
  CHECK(strstr(text, "\n[upstream]\nserver = 127.0.0.1:8080 "
                     "weight=1\n") != NULL);
  CHECK(strstr(text, "\n[upstream rails]\nserver = 10.0.0.11:3000 weight=2\n"
                     "server = 10.0.0.12:3000 weight=1\n"
                     "server = [2001:db8::13]:3000 weight=1 backup\n"
                     "balance = least_conn\n") != NULL);
  CHECK(strstr(text, "\n[route api]\nhost = app.example.com, "
                     "api.example.com\npath = /api/\nupstream = api\n"
                     "response_timeout = 5m\n") != NULL);
  CHECK(strstr(text, "\nadd_request_header = x-gateway: h3gate\n") != NULL);
  CHECK(strstr(text, "\nremove_request_header = x-debug\n") != NULL);
  CHECK(strstr(text, "\n[route rest]\nhost = \"\"\npath = /\n") != NULL);
  CHECK_EQ_INT(load(text, &b), 0);
  CHECK_STR(err, "");
  check_same(&a, &b);
  /* and once more: the dump of the reloaded file is the same text */
  char *again = dump(&b);
  CHECK_STR(again, text);
  free(again);
  free(text);
  h3g_config_free(&a);
  h3g_config_free(&b);
}

/* --check-config's table: exact hosts, then wildcards longest first, then
 * any host; within a host, longer paths first, then file order. */
static void test_print_routes(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(LISTENER "[upstream a]\nserver = 10.0.0.1:80\n"
                             "server = 10.0.0.2:80 weight=3 backup\n"
                             "[upstream b]\nserver = unix:/run/b.sock\n"
                             "balance = hash\n"
                             "[route any]\nupstream = a\n"
                             "[route anyapi]\npath = /api\nupstream = b\n"
                             "[route wild]\nhost = *.example.com\n"
                             "upstream = a\n"
                             "[route deepwild]\nhost = *.b.example.com\n"
                             "upstream = b\n"
                             "[route exact]\nhost = z.example.com "
                             "a.example.com\npath = / /static/\n"
                             "upstream = a\n"
                             "[route also]\nhost = a.example.com\n"
                             "path = /assets/\nupstream = b\n",
                    &c),
               0);
  CHECK_STR(err, "");
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f == NULL)
    exit(2);
  h3g_config_print_routes(&c, f);
  fclose(f);
  char want[4096];
  size_t n = 0;
#define ROW(h, p, r, u)                                                        \
  n += (size_t)snprintf(want + n, sizeof(want) - n,                           \
                        "  %-32s %-24s %-16s %s\n", h, p, r, u)
  n += (size_t)snprintf(want, sizeof(want),
                        "routes, in matching order (6 routes, 2 groups):\n");
  ROW("HOST", "PATH", "ROUTE", "UPSTREAM");
  ROW("a.example.com", "/static/", "exact", "a");
  ROW("a.example.com", "/assets/", "also", "b");
  ROW("a.example.com", "/", "exact", "a");
  ROW("z.example.com", "/static/", "exact", "a");
  ROW("z.example.com", "/", "exact", "a");
  ROW("*.b.example.com", "/", "deepwild", "b");
  ROW("*.example.com", "/", "wild", "a");
  ROW("*", "/api", "anyapi", "b");
  ROW("*", "/", "any", "a");
#undef ROW
  snprintf(want + n, sizeof(want) - n,
           "upstream a (round_robin):\n"
           "  10.0.0.1:80 weight=1\n"
           "  10.0.0.2:80 weight=3 backup\n"
           "upstream b (hash):\n"
           "  unix:/run/b.sock weight=1\n");
  CHECK_STR(text, want);
  free(text);
  h3g_config_free(&c);
}

static void test_string_and_files(void) {
  h3g_config c = {0};
  /* No NUL terminator needed; a NUL inside is an error on its line. */
  static const char text[] = "[server]\nlog_level = debug\0junk\n[listener]\n";
  reset(&c);
  CHECK_EQ_INT(h3g_config_load_string(&c, text, sizeof(text) - 1, "m.ini", tmp,
                                      err, sizeof(err)),
               H3G_ERR_INVAL);
  CHECK_ERR("m.ini:2: the line contains a NUL byte\n");
  CHECK_ERR("m.ini:0: [listener] cert: required");

  /* Missing, a directory, too big. */
  CHECK_EQ_INT(h3g_config_load(&c, "nope.ini", err, sizeof(err)),
               H3G_ERR_NOTFOUND);
  CHECK_STR(err, "nope.ini:0: cannot open: No such file or directory\n");
  CHECK_EQ_INT(h3g_config_load(&c, "nope/x.ini", err, sizeof(err)),
               H3G_ERR_NOTFOUND);
  CHECK_EQ_INT(h3g_config_load(&c, "certs", err, sizeof(err)), H3G_ERR_IO);
  CHECK_ERR("certs:0: not a regular file");
  FILE *f = fopen("big.ini", "w");
  CHECK(f != NULL);
  for (int i = 0; f != NULL && i < 80000; i++)
    fputs("; filler line\n", f);
  if (f != NULL)
    fclose(f);
  CHECK_EQ_INT(h3g_config_load(&c, "big.ini", err, sizeof(err)), H3G_ERR_INVAL);
  CHECK_ERR("big.ini:0: larger than 1 MiB");

  /* err may be NULL, or short: always terminated, whole lines only. */
  CHECK_EQ_INT(h3g_config_load(&c, "nope.ini", NULL, 0), H3G_ERR_NOTFOUND);
  CHECK_EQ_INT(load("[server]\n", &c), H3G_ERR_INVAL);
  char small[100];
  memset(small, 'x', sizeof(small));
  reset(&c);
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", small, sizeof(small)),
               H3G_ERR_INVAL);
  CHECK(memchr(small, '\0', sizeof(small)) != NULL);
  CHECK_STR(small, "t.ini:0: [listener] cert: required, but not set\n"
                   "(2 more problems not shown)\n");
  char tiny[8];
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", tiny, sizeof(tiny)), H3G_ERR_INVAL);
  CHECK(strlen(tiny) < sizeof(tiny));
  CHECK_EQ_INT(h3g_config_load(&c, "t.ini", NULL, 0), H3G_ERR_INVAL);
  h3g_config_free(&c);
}

/*
 * config/h3gate.ini names every key at its default; config/sidecar.ini
 * loads. Both are read from the source tree, with their relative cert
 * paths pointed at stand-in PEM files under tmp.
 */
/* keylog_file left out defers to SSLKEYLOGFILE; written, even as off, not. */
static void test_keylog_env(void) {
  h3g_config c = {0};
  CHECK_EQ_INT(load(REQUIRED, &c), 0);
  CHECK_EQ_INT(c.keylog_env, 1);
  CHECK_STR(c.keylog_file, "");
  CHECK_EQ_INT(loadf(&c, "%s[debug]\nkeylog_file = off\n", REQUIRED), 0);
  CHECK_EQ_INT(c.keylog_env, 0);
  CHECK_STR(c.keylog_file, "");
  CHECK_EQ_INT(loadf(&c, "%s[debug]\nkeylog_file = k.log\n", REQUIRED), 0);
  CHECK_EQ_INT(c.keylog_env, 0);
  CHECK_STR(c.keylog_file, in_tmp("k.log"));
  h3g_config_free(&c);
}

static void test_shipped_configs(void) {
  const char *src = getenv("H3G_SRC"), *data = getenv("H3G_TEST_DATA");
  char path[PATH_MAX + 64], srcbuf[PATH_MAX];
  h3g_config c = {0}, d = {0};
  if (src == NULL && data != NULL) {
    snprintf(srcbuf, sizeof(srcbuf), "%s/..", data);
    src = srcbuf;
  }
  CHECK(src != NULL);
  if (src == NULL) {
    fprintf(stderr, "  set H3G_SRC to the source tree\n");
    return;
  }

  snprintf(path, sizeof(path), "%s/config/h3gate.ini", src);
  char *ref = read_file(path);
  CHECK(ref != NULL);
  if (ref == NULL)
    return;
  make_dir(in_tmp("ref"));
  make_dir(in_tmp("ref/config"));
  make_dir(in_tmp("ref/certs"));
  make_dir(in_tmp("ref/certs/out"));
  write_file(in_tmp("ref/certs/out/server-chain.crt"), PEM_CERT);
  write_file(in_tmp("ref/certs/out/server.key"), PEM_KEY);
  reset(&c);
  CHECK_EQ_INT(h3g_config_load_string(&c, ref, strlen(ref), "h3gate.ini",
                                      in_tmp("ref/config"), err, sizeof(err)),
               0);
  CHECK_STR(err, "");
  /* Every key at its default: the globals of the defaults, the group and
   * the implicit route of REQUIRED. */
  reset(&d);
  snprintf(d.cert_file, sizeof(d.cert_file), "%s",
           in_tmp("ref/config/../certs/out/server-chain.crt"));
  snprintf(d.key_file, sizeof(d.key_file), "%s",
           in_tmp("ref/config/../certs/out/server.key"));
  check_same_globals(&c, &d);
  CHECK_EQ_INT(load(REQUIRED, &d), 0);
  check_same_named(&c, &d);

  /* Each key the dump writes is set in the reference file. */
  char *text = dump(&c);
  for (char *line = strtok(text, "\n"); line != NULL;
       line = strtok(NULL, "\n")) {
    char needle[128];
    const char *eq = strstr(line, " = ");
    if (line[0] == ';' || line[0] == '[' || eq == NULL)
      continue;
    snprintf(needle, sizeof(needle), "\n%.*s = ", (int)(eq - line), line);
    CHECK(strstr(ref, needle) != NULL);
    if (strstr(ref, needle) == NULL)
      fprintf(stderr, "  config/h3gate.ini does not set %s\n", needle + 1);
  }
  free(text);
  free(ref);

  snprintf(path, sizeof(path), "%s/config/sidecar.ini", src);
  ref = read_file(path);
  CHECK(ref != NULL);
  if (ref == NULL)
    return;
  make_dir(in_tmp("etc"));
  make_dir(in_tmp("etc/certs"));
  write_file(in_tmp("etc/certs/server-chain.crt"), PEM_CERT);
  write_file(in_tmp("etc/certs/server.key"), PEM_KEY);
  reset(&c);
  CHECK_EQ_INT(h3g_config_load_string(&c, ref, strlen(ref), "sidecar.ini",
                                      in_tmp("etc"), err, sizeof(err)),
               0);
  CHECK_STR(err, "");
  CHECK_STR(c.listen_address, "0.0.0.0");
  CHECK_EQ_INT(c.listen_port, 443);
  CHECK_STR(upstream_server(&c)->host, "127.0.0.1");
  CHECK_EQ_INT(upstream_server(&c)->port, 8080);
  CHECK_STR(c.cert_file, in_tmp("etc/certs/server-chain.crt"));
  free(ref);
  h3g_config_free(&c);
  h3g_config_free(&d);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  H3G_UNUSED(st);
  H3G_UNUSED(flag);
  H3G_UNUSED(ftw);
  if (remove(path) != 0)
    fprintf(stderr, "could not remove %s: %s\n", path, strerror(errno));
  return 0;
}

int main(void) {
  const char *base = getenv("TMPDIR");
  char tmpl[PATH_MAX];
  snprintf(tmpl, sizeof(tmpl), "%s/h3g-config-XXXXXX",
           base != NULL && base[0] != '\0' ? base : "/tmp");
  if (mkdtemp(tmpl) == NULL || realpath(tmpl, tmp) == NULL || chdir(tmp) != 0) {
    perror("test directory");
    return 2;
  }
  make_dir(in_tmp("certs"));
  write_file(in_tmp("certs/server.crt"), PEM_CERT);
  write_file(in_tmp("certs/server.key"), PEM_KEY);

  RUN(test_parse_duration);
  RUN(test_parse_size);
  RUN(test_parse_bool);
  RUN(test_defaults);
  RUN(test_group_defaults);
  RUN(test_minimal);
  RUN(test_every_key);
  RUN(test_values_and_bounds);
  RUN(test_stored_values);
  RUN(test_fallback_keys);
  RUN(test_unknown_section);
  RUN(test_unknown_key);
  RUN(test_duplicate_key);
  RUN(test_missing_required);
  RUN(test_reload_replaces_named);
  RUN(test_cert_checks);
  RUN(test_relative_paths);
  RUN(test_syntax);
  RUN(test_comments_quotes_blanks);
  RUN(test_line_numbers_and_many_errors);
  RUN(test_long_lines);
  RUN(test_dump_round_trip);
  RUN(test_string_and_files);
  RUN(test_keylog_env);
  RUN(test_shipped_configs);
  RUN(test_named_errors);
  RUN(test_servers);
  RUN(test_route_inheritance);
  RUN(test_websocket_settings);
  RUN(test_implicit_route);
  RUN(test_named_round_trip);
  RUN(test_print_routes);

  if (chdir("/") == 0)
    nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return unit_report();
}
