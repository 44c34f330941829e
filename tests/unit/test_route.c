/*
 * Tests for route.c: which [route NAME] a request's host and target select
 * (docs/routes.md "Matching"). Each table is built from INI text by
 * h3g_config_load_string, as the server builds it.
 */
#define _GNU_SOURCE
#include "route.h"
#include "unit.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[PATH_MAX];
static char err[8192];
static h3g_config cfg;
static h3g_router *router;

/* The [listener] part every file needs, with its PEM files under tmp. */
static char listener[2 * PATH_MAX + 128];

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  fputs(text, f);
  fclose(f);
}

static void drop_table(void) {
  h3g_router_free(router);
  router = NULL;
  h3g_config_free(&cfg);
}

/* Builds the table of routes (INI text of [upstream] and [route]
 * sections). Returns 0 when it loads. */
static int build(const char *routes) {
  drop_table();
  size_t n = strlen(listener) + strlen(routes);
  char *text = malloc(n + 1);
  if (text == NULL)
    exit(2);
  snprintf(text, n + 1, "%s%s", listener, routes);
  h3g_config_defaults(&cfg);
  int rc = h3g_config_load_string(&cfg, text, n, "r.ini", tmp, err,
                                  sizeof(err));
  free(text);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0) {
    fprintf(stderr, "  %s", err);
    return rc;
  }
  CHECK_EQ_INT(h3g_router_new(&router, &cfg), 0);
  return router != NULL ? 0 : -1;
}

/* The name of the route for host (NULL: none) and target, or NULL. */
static const char *match(const char *host, const char *target) {
  if (router == NULL)
    return NULL;
  h3g_route *r = h3g_router_match(router, host, host ? strlen(host) : 0,
                                  target, strlen(target));
  return r != NULL ? r->conf->name : NULL;
}

#define CHECK_ROUTE(host, target, want)                                        \
  do {                                                                         \
    const char *got_ = match((host), (target)), *want_ = (want);               \
    int ok_ = got_ == NULL ? want_ == NULL                                     \
                           : want_ != NULL && strcmp(got_, want_) == 0;        \
    CHECK(ok_);                                                                \
    if (!ok_)                                                                  \
      fprintf(stderr, "  %s %s: got %s, expected %s\n",                       \
              (host) != NULL ? (const char *)(host) : "(no host)", (target),   \
              got_ != NULL ? got_ : "no route",                                \
              want_ != NULL ? want_ : "no route");                             \
  } while (0)

#define GROUP "[upstream a]\nserver = 10.0.0.1:80\n"

static void test_table(void) {
  if (build(GROUP "[route one]\nhost = a.example.com b.example.com\n"
                  "path = /x /y\nupstream = a\n"
                  "[route two]\nupstream = a\n") != 0)
    return;
  CHECK_EQ_INT(h3g_router_count(router), 2);
  h3g_route *r = h3g_router_route(router, 0);
  CHECK(r != NULL && r->conf == &cfg.routes[0]);
  CHECK(r != NULL && r->group == &cfg.groups[0]);
  CHECK(r != NULL && r->ops == NULL && r->pool == NULL);
  CHECK(h3g_router_route(router, 1) != NULL);
  CHECK(h3g_router_route(router, 2) == NULL);
  /* The implicit route of a file without [route]: every request. */
  if (build(GROUP) != 0)
    return;
  CHECK_EQ_INT(h3g_router_count(router), 1);
  CHECK_ROUTE("anything.example", "/", "default");
  CHECK_ROUTE("anything.example", "/deep/path?q", "default");
  CHECK_ROUTE(NULL, "*", "default");
  CHECK_ROUTE("", "", "default");
}

/* An exact host, then the longest wildcard, then the routes without host;
 * a wildcard matches at any depth, not its bare domain. */
static void test_host_precedence(void) {
  if (build(GROUP "[route any]\nupstream = a\n"
                  "[route wild]\nhost = *.example.com\nupstream = a\n"
                  "[route exact]\nhost = app.example.com\nupstream = a\n"
                  "[route deep]\nhost = *.b.example.com\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("app.example.com", "/", "exact");
  CHECK_ROUTE("x.example.com", "/", "wild");
  CHECK_ROUTE("x.app.example.com", "/", "wild");
  CHECK_ROUTE("very.deep.x.example.com", "/", "wild");
  CHECK_ROUTE("example.com", "/", "any");
  CHECK_ROUTE("other.org", "/", "any");
  CHECK_ROUTE("example.com.evil.org", "/", "any");
  CHECK_ROUTE("xexample.com", "/", "any");
  /* longest wildcard first, whatever the declaration order */
  CHECK_ROUTE("a.b.example.com", "/", "deep");
  CHECK_ROUTE("x.a.b.example.com", "/", "deep");
  CHECK_ROUTE("b.example.com", "/", "wild");
  CHECK_ROUTE("ab.example.com", "/", "wild");

  /* Without a route for any host, an unknown host matches nothing. */
  if (build(GROUP "[route exact]\nhost = app.example.com\nupstream = a\n"
                  "[route wild]\nhost = *.example.com\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("other.org", "/", NULL);
  CHECK_ROUTE("example.com", "/", NULL);
  CHECK_ROUTE(NULL, "/", NULL);
  CHECK_ROUTE("", "/", NULL);
  CHECK_ROUTE(".example.com", "/", NULL);
}

/* Case, a port and a trailing dot are ignored; IP literals match. */
static void test_host_forms(void) {
  if (build(GROUP "[route exact]\nhost = App.Example.com\nupstream = a\n"
                  "[route wild]\nhost = *.Wild.example.\nupstream = a\n"
                  "[route v6]\nhost = [2001:DB8::1]\nupstream = a\n"
                  "[route v4]\nhost = 10.0.0.1\nupstream = a\n"
                  "[route any]\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("app.example.com", "/", "exact");
  CHECK_ROUTE("APP.EXAMPLE.COM", "/", "exact");
  CHECK_ROUTE("app.example.com:443", "/", "exact");
  CHECK_ROUTE("app.example.com.", "/", "exact");
  CHECK_ROUTE("App.Example.Com.:8443", "/", "exact");
  CHECK_ROUTE("X.WILD.example", "/", "wild");
  CHECK_ROUTE("x.wild.example.:1", "/", "wild");
  CHECK_ROUTE("[2001:db8::1]", "/", "v6");
  CHECK_ROUTE("[2001:DB8::1]:8443", "/", "v6");
  CHECK_ROUTE("[2001:db8::2]:8443", "/", "any");
  CHECK_ROUTE("10.0.0.1", "/", "v4");
  CHECK_ROUTE("10.0.0.1:8443", "/", "v4");
  CHECK_ROUTE("10.0.0.10", "/", "any");
  CHECK_ROUTE("app.example.com.evil", "/", "any");
  /* a host longer than any name falls to the routes without host */
  char big[600];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  CHECK_ROUTE(big, "/", "any");
}

/* /api matches /api, /api/... and /api?...; /api/ only /api/... */
static void test_path_prefix(void) {
  if (build(GROUP "[route api]\nhost = a.example\npath = /api\nupstream = a\n"
                  "[route slash]\nhost = b.example\npath = /api/\n"
                  "upstream = a\n") != 0)
    return;
  CHECK_ROUTE("a.example", "/api", "api");
  CHECK_ROUTE("a.example", "/api/", "api");
  CHECK_ROUTE("a.example", "/api/x/y", "api");
  CHECK_ROUTE("a.example", "/api?q=1", "api");
  CHECK_ROUTE("a.example", "/api#frag", "api");
  CHECK_ROUTE("a.example", "/apix", NULL);
  CHECK_ROUTE("a.example", "/ap", NULL);
  CHECK_ROUTE("a.example", "/API", NULL); /* paths are case-sensitive */
  CHECK_ROUTE("a.example", "/", NULL);
  CHECK_ROUTE("b.example", "/api/x", "slash");
  CHECK_ROUTE("b.example", "/api/", "slash");
  CHECK_ROUTE("b.example", "/api", NULL);
  CHECK_ROUTE("b.example", "/api?q", NULL);
  CHECK_ROUTE("b.example", "/apix", NULL);
  /* empty segments are segments */
  CHECK_ROUTE("a.example", "/api//x", "api");
  CHECK_ROUTE("b.example", "/api//x", "slash");
  CHECK_ROUTE("b.example", "//api/x", NULL);
}

/* Among a host's routes the longest matching prefix wins, whatever the
 * file order; when none of a host's paths match, the less specific hosts
 * are tried. */
static void test_longest_prefix_and_fallthrough(void) {
  if (build(GROUP "[route short]\nhost = h.example\npath = /a\n"
                  "upstream = a\n"
                  "[route long]\nhost = h.example\npath = /a/b\n"
                  "upstream = a\n"
                  "[route longer_first]\nhost = h.example\npath = /c/d/e\n"
                  "upstream = a\n"
                  "[route c]\nhost = h.example\npath = /c /ab\n"
                  "upstream = a\n"
                  "[route wild_static]\nhost = *.example\npath = /static\n"
                  "upstream = a\n"
                  "[route any_root]\nupstream = a\n"
                  "[route any_admin]\npath = /admin\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("h.example", "/a", "short");
  CHECK_ROUTE("h.example", "/a/c", "short");
  CHECK_ROUTE("h.example", "/a/b", "long");
  CHECK_ROUTE("h.example", "/a/b/c", "long");
  CHECK_ROUTE("h.example", "/a/bc", "short");
  CHECK_ROUTE("h.example", "/ab", "c");
  CHECK_ROUTE("h.example", "/c/d/e/f", "longer_first");
  CHECK_ROUTE("h.example", "/c/d", "c");
  /* fallthrough: h.example has no /static or /admin route */
  CHECK_ROUTE("h.example", "/static/x.css", "wild_static");
  CHECK_ROUTE("h.example", "/admin", "any_admin");
  CHECK_ROUTE("h.example", "/other", "any_root");
  CHECK_ROUTE("x.example", "/a", "any_root");
  CHECK_ROUTE("x.example", "/static", "wild_static");
  CHECK_ROUTE("x.example", "/admin/users", "any_admin");
}

/* The path is matched after removing "." and ".." segments. */
static void test_dot_segments(void) {
  if (build(GROUP "[route static]\npath = /static\nupstream = a\n"
                  "[route admin]\npath = /admin\nupstream = a\n"
                  "[route ab]\npath = /a/b\nupstream = a\n"
                  "[route root]\npath = /\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("h", "/static/x", "static");
  CHECK_ROUTE("h", "/static/../admin", "admin");
  CHECK_ROUTE("h", "/static/../admin?x=/static/", "admin");
  CHECK_ROUTE("h", "/static/%2e%2E/admin", "admin");
  CHECK_ROUTE("h", "/static/%2E./admin/x", "admin");
  CHECK_ROUTE("h", "/static/.%2e/admin", "admin");
  CHECK_ROUTE("h", "/static/./x", "static");
  CHECK_ROUTE("h", "/static/%2e/x", "static");
  CHECK_ROUTE("h", "/static/.", "static");
  CHECK_ROUTE("h", "/static/..", "root");
  CHECK_ROUTE("h", "/a/./b", "ab");
  CHECK_ROUTE("h", "/a/x/../b/c", "ab");
  CHECK_ROUTE("h", "/a/./././b", "ab");
  CHECK_ROUTE("h", "/..", "root");
  CHECK_ROUTE("h", "/../admin", "admin");
  CHECK_ROUTE("h", "/../../../admin", "admin");
  CHECK_ROUTE("h", "/x/y/../../admin", "admin");
  /* not dot segments */
  CHECK_ROUTE("h", "/static/.../admin", "static");
  CHECK_ROUTE("h", "/static/..x/admin", "static");
  CHECK_ROUTE("h", "/static/%2e%2e%2e/admin", "static");
  CHECK_ROUTE("h", "/admin/..hidden", "admin");
  /* Encoded unreserved characters are the characters (RFC 9110 §4.2.3);
   * an encoded slash is not a slash, and other encodings stay. */
  CHECK_ROUTE("h", "/%61dmin", "admin");
  CHECK_ROUTE("h", "/%61%64%6D%69%6e/x", "admin");
  CHECK_ROUTE("h", "/st%61tic/%2E%2E/%61dmin", "admin");
  CHECK_ROUTE("h", "/a%2Fb", "root");
  CHECK_ROUTE("h", "/a%2fb", "root");
  CHECK_ROUTE("h", "/static%2F..%2Fadmin", "root");
  CHECK_ROUTE("h", "/%41dmin", "root"); /* "A": paths are case-sensitive */
  CHECK_ROUTE("h", "/admin%20x", "root");
  CHECK_ROUTE("h", "/admin%", "root");
  CHECK_ROUTE("h", "/admin%6", "root");
  CHECK_ROUTE("h", "/admin%zz", "root");

  /* Without a "/" route, "/static/.." leads nowhere. */
  if (build(GROUP "[route static]\npath = /static\nupstream = a\n"
                  "[route admin]\npath = /admin\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("h", "/static/..", NULL);
  CHECK_ROUTE("h", "/static/../adminx", NULL);
  CHECK_ROUTE("h", "/static/../admin/", "admin");
}

/* "*" (OPTIONS) and an empty target match only "/" prefixes; no host
 * matches only routes without host. */
static void test_odd_targets_and_hosts(void) {
  if (build(GROUP "[route admin]\npath = /admin\nupstream = a\n"
                  "[route named_root]\nhost = h.example\nupstream = a\n"
                  "[route root]\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("x", "*", "root");
  CHECK_ROUTE("x", "", "root");
  CHECK_ROUTE("h.example", "*", "named_root");
  CHECK_ROUTE(NULL, "/admin", "admin");
  CHECK_ROUTE(NULL, "/", "root");
  CHECK_ROUTE("", "/x", "root");
  CHECK_ROUTE("x", "http://h.example/admin", "root");
  if (build(GROUP "[route admin]\npath = /admin\nupstream = a\n") != 0)
    return;
  CHECK_ROUTE("x", "*", NULL);
  CHECK_ROUTE("x", "", NULL);
  CHECK_ROUTE("x", "/", NULL);
  CHECK_ROUTE(NULL, "/admin", "admin");
}

/* A thousand routes: on distinct hosts, and a thousand paths on one. */
static void test_thousand_routes(void) {
  size_t cap = 200000, n = 0;
  char *text = malloc(cap);
  if (text == NULL)
    exit(2);
  n += (size_t)snprintf(text + n, cap - n, GROUP);
  for (int i = 0; i < 1000; i++)
    n += (size_t)snprintf(text + n, cap - n,
                          "[route h%d]\nhost = h%d.example.com\n"
                          "upstream = a\n",
                          i, i);
  n += (size_t)snprintf(text + n, cap - n,
                        "[route w]\nhost = *.example.com\nupstream = a\n");
  if (build(text) == 0) {
    CHECK_EQ_INT(h3g_router_count(router), 1001);
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
      char host[64], want[16];
      snprintf(host, sizeof(host), "H%d.example.com:443", i);
      snprintf(want, sizeof(want), "h%d", i);
      const char *got = match(host, "/index.html");
      bad += got == NULL || strcmp(got, want) != 0;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_ROUTE("h1000.example.com", "/", "w");
    CHECK_ROUTE("x.h10.example.com", "/", "w");
    CHECK_ROUTE("h10.example.org", "/", NULL);
  }

  n = 0;
  n += (size_t)snprintf(text + n, cap - n, GROUP);
  for (int i = 0; i < 1000; i++)
    n += (size_t)snprintf(text + n, cap - n,
                          "[route p%d]\nhost = app.example.com\n"
                          "path = /p%d\nupstream = a\n",
                          i, i);
  if (build(text) == 0) {
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
      char target[64], want[16];
      snprintf(target, sizeof(target), "/p%d/item?id=%d", i, i);
      snprintf(want, sizeof(want), "p%d", i);
      const char *got = match("app.example.com", target);
      bad += got == NULL || strcmp(got, want) != 0;
      snprintf(target, sizeof(target), "/p%d", i);
      got = match("app.example.com", target);
      bad += got == NULL || strcmp(got, want) != 0;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_ROUTE("app.example.com", "/p1000", NULL);
    CHECK_ROUTE("app.example.com", "/p1x", NULL);
    CHECK_ROUTE("app.example.com", "/p", NULL);
    CHECK_ROUTE("app.example.com", "/p10/../p999/x", "p999");
    CHECK_ROUTE("other.example.com", "/p1", NULL);
  }
  free(text);
}

/* A reload's table counts on in the counters of the routes it keeps (by
 * name), shared with the old table while that lives; new routes start at
 * zero; either table may go first. */
static void test_inherit_stats(void) {
  if (build(GROUP "[route one]\nhost = one.example\nupstream = a\n"
                  "[route two]\nupstream = a\n") != 0)
    return;
  h3g_router *old = router;
  h3g_config old_cfg = cfg;
  router = NULL;
  memset(&cfg, 0, sizeof(cfg));
  h3g_router_route(old, 0)->stats->requests = 5;
  h3g_router_route(old, 1)->stats->requests = 7;
  h3g_histogram_observe(&h3g_router_route(old, 1)->stats->duration[0], 1000);
  if (build(GROUP "[route two]\nupstream = a\n"
                  "[route three]\nhost = three.example\nupstream = a\n") != 0) {
    h3g_router_free(old);
    h3g_config_free(&old_cfg);
    return;
  }
  h3g_router_inherit_stats(router, old);
  h3g_route *two = h3g_router_route(router, 0);
  h3g_route *three = h3g_router_route(router, 1);
  CHECK(two->stats == h3g_router_route(old, 1)->stats);
  CHECK_EQ_INT(two->stats->requests, 7);
  CHECK_EQ_INT(two->stats->refs, 2);
  CHECK_EQ_INT(two->stats->duration[0].count, 1);
  CHECK_EQ_INT(three->stats->requests, 0);
  CHECK_EQ_INT(three->stats->refs, 1);
  /* A request still running on the old table counts in the same place. */
  h3g_router_route(old, 1)->stats->requests++;
  CHECK_EQ_INT(two->stats->requests, 8);
  h3g_router_free(old);
  h3g_config_free(&old_cfg);
  CHECK_EQ_INT(two->stats->refs, 1);
  two->stats->requests++;
  CHECK_EQ_INT(two->stats->requests, 9);
}

int main(void) {
  const char *base = getenv("TMPDIR");
  char tmpl[PATH_MAX];
  snprintf(tmpl, sizeof(tmpl), "%s/h3g-route-XXXXXX",
           base != NULL && base[0] != '\0' ? base : "/tmp");
  if (mkdtemp(tmpl) == NULL || realpath(tmpl, tmp) == NULL) {
    perror("test directory");
    return 2;
  }
  char crt[PATH_MAX + 16], key[PATH_MAX + 16];
  snprintf(crt, sizeof(crt), "%s/s.crt", tmp);
  snprintf(key, sizeof(key), "%s/s.key", tmp);
  write_file(crt, "-----BEGIN CERTIFICATE-----\nMIIB\n"
                  "-----END CERTIFICATE-----\n");
  write_file(key, "-----BEGIN PRIVATE KEY-----\nMIGH\n"
                  "-----END PRIVATE KEY-----\n");
  snprintf(listener, sizeof(listener), "[listener]\ncert = %s\nkey = %s\n",
           crt, key);

  RUN(test_table);
  RUN(test_host_precedence);
  RUN(test_host_forms);
  RUN(test_path_prefix);
  RUN(test_longest_prefix_and_fallthrough);
  RUN(test_dot_segments);
  RUN(test_odd_targets_and_hosts);
  RUN(test_thousand_routes);
  RUN(test_inherit_stats);
  drop_table();

  unlink(crt);
  unlink(key);
  rmdir(tmp);
  return unit_report();
}
