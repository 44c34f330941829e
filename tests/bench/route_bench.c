/*
 * route_bench: the cost of choosing a request's route (h3g_router_match),
 * in nanoseconds per request, over tables of 1 and 1000 routes.
 *
 *   cmake --build build --target route_bench && ./build/tests/route_bench
 *
 * (optionally with a number of lookups per table: route_bench 10000000).
 * Built by CMake, not run by ctest: timings belong to a quiet machine.
 *
 * Tables, built from INI text by h3g_config_load_string as the server
 * builds them:
 *   1 route        a file without [route]: every request, any host
 *   1000 hosts     one route per host (h0.example.com ...), plus a
 *                  *.example.com wildcard
 *   1000 paths     one host, one route per path prefix (/p0 ... /p999)
 * Requests are realistic: an :authority with or without a port, mixed
 * case now and then, paths with segments and queries, a few with dot
 * segments and a few that match nothing; they are made once, before the
 * clock starts, and cycled through.
 */
#define _GNU_SOURCE
#include "route.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NREQ 4096 /* distinct requests, a power of two */

typedef struct request {
  char host[64];
  char target[96];
  size_t hostlen, targetlen;
} request;

static char dir[PATH_MAX];
static char listener[2 * PATH_MAX + 64];

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  fputs(text, f);
  fclose(f);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift: the same requests on every run. */
static uint32_t next_rand(void) {
  static uint32_t x = 2463534242u;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

static void set(request *r, const char *host, const char *target) {
  snprintf(r->host, sizeof(r->host), "%s", host);
  snprintf(r->target, sizeof(r->target), "%s", target);
  r->hostlen = strlen(r->host);
  r->targetlen = strlen(r->target);
}

/* A request to host h (index), path under prefix p (index). */
static void make_request(request *r, int h, int p) {
  char host[64], target[96];
  uint32_t v = next_rand();
  snprintf(host, sizeof(host), "%s%d.example.com%s", v & 1 ? "h" : "H", h,
           v & 2 ? ":443" : "");
  switch ((v >> 2) % 8) {
  case 0: snprintf(target, sizeof(target), "/p%d", p); break;
  case 1:
    snprintf(target, sizeof(target), "/p%d/items/%u?sort=asc&page=%u", p,
             v % 100000, v % 10);
    break;
  case 2:
    snprintf(target, sizeof(target), "/p%d/static/app.%08x.js", p, v);
    break;
  case 3:
    snprintf(target, sizeof(target), "/p%d/./a/../b/index.html", p);
    break;
  case 4: snprintf(target, sizeof(target), "/nomatch/%u", v % 1000); break;
  default:
    snprintf(target, sizeof(target), "/p%d/api/v2/users/%u/orders", p,
             v % 100000);
    break;
  }
  set(r, host, target);
}

static int load(h3g_config *cfg, const char *routes) {
  size_t n = strlen(listener) + strlen(routes);
  char *text = malloc(n + 1);
  char err[4096];
  if (text == NULL)
    return -1;
  snprintf(text, n + 1, "%s%s", listener, routes);
  h3g_config_defaults(cfg);
  int rc = h3g_config_load_string(cfg, text, n, "bench.ini", dir, err,
                                  sizeof(err));
  free(text);
  if (rc != 0)
    fprintf(stderr, "%s", err);
  return rc;
}

/* Times lookups over the requests; prints and returns ns per lookup. */
static double run(const char *name, const char *routes, const request *reqs,
                  long lookups) {
  h3g_config cfg = {0};
  h3g_router *router = NULL;
  if (load(&cfg, routes) != 0 || h3g_router_new(&router, &cfg) != 0) {
    fprintf(stderr, "%s: the table does not build\n", name);
    exit(1);
  }
  size_t matched = 0;
  /* warm the caches and the branch predictor */
  for (long i = 0; i < NREQ; i++) {
    const request *q = &reqs[i & (NREQ - 1)];
    matched += h3g_router_match(router, q->host, q->hostlen, q->target,
                                q->targetlen) != NULL;
  }
  matched = 0;
  uint64_t t0 = now_ns();
  for (long i = 0; i < lookups; i++) {
    const request *q = &reqs[i & (NREQ - 1)];
    matched += h3g_router_match(router, q->host, q->hostlen, q->target,
                                q->targetlen) != NULL;
  }
  uint64_t t1 = now_ns();
  double ns = (double)(t1 - t0) / (double)lookups;
  printf("%-12s %5zu routes  %8.1f ns per request  (%ld lookups, %.0f%% "
         "matched)\n",
         name, h3g_router_count(router), ns, lookups,
         100.0 * (double)matched / (double)lookups);
  h3g_router_free(router);
  h3g_config_free(&cfg);
  return ns;
}

int main(int argc, char **argv) {
  long lookups = argc > 1 ? atol(argv[1]) : 4000000;
  if (lookups <= 0)
    lookups = 4000000;
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof(dir), "%s/h3g-route-bench-XXXXXX",
           base != NULL && base[0] != '\0' ? base : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 2;
  }
  char crt[PATH_MAX + 16], key[PATH_MAX + 16];
  snprintf(crt, sizeof(crt), "%s/s.crt", dir);
  snprintf(key, sizeof(key), "%s/s.key", dir);
  write_file(crt, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
  write_file(key, "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n");
  snprintf(listener, sizeof(listener), "[listener]\ncert = %s\nkey = %s\n",
           crt, key);

  size_t cap = 256 * 1024;
  char *text = malloc(cap);
  request *reqs = malloc(NREQ * sizeof(*reqs));
  if (text == NULL || reqs == NULL)
    return 2;

  /* 1 route: any host, any path. */
  for (int i = 0; i < NREQ; i++)
    make_request(&reqs[i], (int)(next_rand() % 1000),
                 (int)(next_rand() % 1000));
  double one = run("1 route", "[upstream]\nserver = 127.0.0.1:8080\n", reqs,
                   lookups);

  /* 1000 hosts (and a wildcard): requests to known hosts, some to
   * subdomains only the wildcard takes, a few to unknown hosts. */
  size_t n = (size_t)snprintf(text, cap, "[upstream a]\nserver = "
                                         "127.0.0.1:8080\n");
  for (int i = 0; i < 1000; i++)
    n += (size_t)snprintf(text + n, cap - n,
                          "[route h%d]\nhost = h%d.example.com\n"
                          "upstream = a\n",
                          i, i);
  snprintf(text + n, cap - n,
           "[route wild]\nhost = *.example.com\nupstream = a\n");
  for (int i = 0; i < NREQ; i++) {
    make_request(&reqs[i], (int)(next_rand() % 1000),
                 (int)(next_rand() % 1000));
    if (i % 16 == 0)
      set(&reqs[i], "cdn.assets.example.com", "/img/logo.png");
    else if (i % 16 == 1)
      set(&reqs[i], "unknown.example.org:443", "/");
  }
  double hosts = run("1000 hosts", text, reqs, lookups);

  /* 1 host, 1000 path prefixes. */
  n = (size_t)snprintf(text, cap, "[upstream a]\nserver = 127.0.0.1:8080\n");
  for (int i = 0; i < 1000; i++)
    n += (size_t)snprintf(text + n, cap - n,
                          "[route p%d]\nhost = h7.example.com\npath = /p%d\n"
                          "upstream = a\n",
                          i, i);
  for (int i = 0; i < NREQ; i++)
    make_request(&reqs[i], 7, (int)(next_rand() % 1000));
  double paths = run("1000 paths", text, reqs, lookups);

  printf("routing over 1000 routes: %.0f ns (hosts), %.0f ns (paths) per "
         "request; 1 route: %.0f ns\n",
         hosts, paths, one);
  free(text);
  free(reqs);
  unlink(crt);
  unlink(key);
  rmdir(dir);
  return 0;
}
