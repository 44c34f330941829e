/*
 * libFuzzer target for the route table (route.c): its answer must be the
 * one a slow, obviously correct matcher gives.
 *
 * Input: byte 0 is the number of routes (1 + b % 8); each route then takes
 * three bytes: a host mask (bit i picks HOSTS[i]; 0: any host) and two path
 * mask bytes (bit i picks PATHS[i]; none: "/"). The rest is the request:
 * its host, a '\n', its target (no '\n': the rest as is). Route tables the
 * configuration refuses (two routes with the same host and path) are
 * skipped.
 *
 * The reference matcher follows docs/routes.md "Matching" literally: the
 * host lowercased, without port and trailing dot (longer than 256 bytes:
 * no host); the path before '?' or '#' ("/" when empty or not starting with
 * "/"), percent-encoded unreserved bytes decoded, then "." and ".."
 * segments removed by RFC 3986 §5.2.4's loop; then the routes of the exact
 * host, of each matching wildcard from the longest, then of any host, each
 * tier's longest matching prefix (on segment boundaries), first declared
 * on a tie.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const HOSTS[] = {"a.example.com", "b.example.com",
                                    "*.example.com", "*.a.example.com",
                                    "example.com",   "*.com",
                                    "x",             "[::1]"};
static const char *const PATHS[] = {"/",       "/a",     "/a/",   "/ab",
                                    "/a/b",    "/static", "/static/", "/x/y/z",
                                    "/~u",     "/a.b",   "/%2f",   "/a/b/"};

#define NHOSTS (sizeof(HOSTS) / sizeof(HOSTS[0]))
#define NPATHS (sizeof(PATHS) / sizeof(PATHS[0]))

static int unreserved(int c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static int hexv(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* RFC 3986 §5.2.4, step by step on strings (in and out NUL-terminated). */
static void remove_dot_segments(const char *in, char *out) {
  char *buf = strdup(in);
  char *p = buf;
  size_t o = 0;
  while (*p != '\0') {
    if (strncmp(p, "../", 3) == 0) {
      p += 3;
    } else if (strncmp(p, "./", 2) == 0) {
      p += 2;
    } else if (strncmp(p, "/./", 3) == 0) {
      p += 2;
    } else if (strcmp(p, "/.") == 0) {
      p[1] = '\0'; /* "/" */
    } else if (strncmp(p, "/../", 4) == 0) {
      p += 3;
      while (o > 0 && out[--o] != '/')
        ;
    } else if (strcmp(p, "/..") == 0) {
      p += 2;
      *p = '/'; /* buffer holds "/" now at p (overwrites the second '.') */
      while (o > 0 && out[--o] != '/')
        ;
    } else if (strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
      break;
    } else {
      size_t n = 1;
      while (p[n] != '\0' && p[n] != '/')
        n++;
      memcpy(out + o, p, n);
      o += n;
      p += n;
    }
  }
  out[o] = '\0';
  if (o == 0)
    strcpy(out, "/");
  free(buf);
}

static int prefix_matches(const char *prefix, const char *path) {
  size_t l = strlen(prefix);
  if (strncmp(prefix, path, l) != 0)
    return 0;
  return prefix[l - 1] == '/' || path[l] == '\0' || path[l] == '/';
}

/* The best route of those whose host list holds `host` (NULL: those with
 * no host), or -1. */
static int best_in_tier(const h3g_config *cfg, const char *host,
                        const char *path) {
  int best = -1;
  size_t best_len = 0;
  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    const h3g_route_conf *r = &cfg->routes[i];
    int in = 0;
    if (host == NULL)
      in = r->nhosts == 0;
    for (uint32_t h = 0; host != NULL && h < r->nhosts; h++)
      in |= strcmp(r->hosts[h], host) == 0;
    if (!in)
      continue;
    for (uint32_t k = 0; k < r->npaths; k++) {
      size_t l = strlen(r->paths[k]);
      if (prefix_matches(r->paths[k], path) && (best < 0 || l > best_len)) {
        best = (int)i;
        best_len = l;
      }
    }
  }
  return best;
}

static int reference(const h3g_config *cfg, const char *host, size_t hostlen,
                     const char *target, size_t targetlen) {
  /* the path */
  size_t n = 0;
  while (n < targetlen && target[n] != '?' && target[n] != '#')
    n++;
  char *dec = malloc(n + 2), *path = malloc(n + 2);
  size_t d = 0;
  if (n == 0 || target[0] != '/') {
    strcpy(dec, "/");
  } else {
    for (size_t i = 0; i < n; i++) {
      int c;
      if (target[i] == '%' && i + 2 < n && hexv(target[i + 1]) >= 0 &&
          hexv(target[i + 2]) >= 0 &&
          unreserved(c = hexv(target[i + 1]) * 16 + hexv(target[i + 2]))) {
        dec[d++] = (char)c;
        i += 2;
      } else {
        dec[d++] = target[i];
      }
    }
    dec[d] = '\0';
  }
  /* A NUL byte in the path: strings stop there for this matcher; the
   * router matches on lengths. Such inputs are skipped by the caller. */
  remove_dot_segments(dec, path);
  free(dec);

  /* the host */
  char key[300] = "";
  size_t end = hostlen;
  if (hostlen > 0 && host[0] == '[') {
    const char *c = memchr(host, ']', hostlen);
    end = c != NULL ? (size_t)(c - host) + 1 : hostlen;
  } else {
    const char *c = memchr(host, ':', hostlen);
    if (c != NULL)
      end = (size_t)(c - host);
  }
  if (end > 1 && host[end - 1] == '.')
    end--;
  if (end > 256)
    end = 0;
  for (size_t i = 0; i < end; i++)
    key[i] = (char)tolower((unsigned char)host[i]);
  key[end] = '\0';

  int r = -1;
  if (end > 0) {
    r = best_in_tier(cfg, key, path);
    /* wildcards, the longest suffix first: at each '.' of the host */
    for (size_t i = 1; r < 0 && i < end; i++) {
      if (key[i] != '.')
        continue;
      char w[300];
      snprintf(w, sizeof(w), "*%s", key + i);
      r = best_in_tier(cfg, w, path);
    }
  }
  if (r < 0)
    r = best_in_tier(cfg, NULL, path);
  free(path);
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t nroutes = 1 + data[0] % 8, pos = 1;
  if (size < pos + 3 * nroutes)
    return 0;
  char ini[8192];
  int w = snprintf(ini, sizeof(ini),
                   "[listener]\ncert = /dev/null\nkey = /dev/null\n"
                   "[upstream app]\nserver = 127.0.0.1:8080\n");
  for (size_t i = 0; i < nroutes; i++, pos += 3) {
    w += snprintf(ini + w, sizeof(ini) - (size_t)w,
                  "[route r%zu]\nupstream = app\nhost =", i);
    for (size_t h = 0; h < NHOSTS; h++)
      if (data[pos] & (1u << h))
        w += snprintf(ini + w, sizeof(ini) - (size_t)w, " %s", HOSTS[h]);
    w += snprintf(ini + w, sizeof(ini) - (size_t)w, "\npath =");
    unsigned mask = data[pos + 1] | (unsigned)data[pos + 2] << 8, any = 0;
    for (size_t p = 0; p < NPATHS; p++)
      if (mask & (1u << p)) {
        w += snprintf(ini + w, sizeof(ini) - (size_t)w, " %s", PATHS[p]);
        any = 1;
      }
    w += snprintf(ini + w, sizeof(ini) - (size_t)w, "%s\n", any ? "" : " /");
  }
  const char *req = (const char *)data + pos;
  size_t reqlen = size - pos;
  if (memchr(req, '\0', reqlen) != NULL)
    return 0; /* the reference works on strings */
  const char *nl = memchr(req, '\n', reqlen);
  size_t hostlen = nl != NULL ? (size_t)(nl - req) : reqlen;
  const char *target = nl != NULL ? nl + 1 : "";
  size_t targetlen = nl != NULL ? reqlen - hostlen - 1 : 0;

  static char err[8192];
  h3g_config cfg;
  h3g_config_defaults(&cfg);
  /* cert and key are checked as PEM files: the table is what is tested,
   * so they are given already "set" and left out of the file. */
  snprintf(cfg.cert_file, sizeof(cfg.cert_file), "set");
  snprintf(cfg.key_file, sizeof(cfg.key_file), "set");
  const char *body = strstr(ini, "[upstream app]");
  if (h3g_config_load_string(&cfg, body, strlen(body), "fuzz.ini", "/",
                             err, sizeof(err)) != 0)
    return 0;
  h3g_router *router;
  if (h3g_router_new(&router, &cfg) != 0)
    abort();
  h3g_route *got = h3g_router_match(router, req, hostlen, target, targetlen);
  int want = reference(&cfg, req, hostlen, target, targetlen);
  int got_i = got != NULL ? (int)(got - h3g_router_route(router, 0)) : -1;
  if (got_i != want) {
    fprintf(stderr, "route mismatch: router %d, reference %d\nhost %.*s\n"
            "target %.*s\n%s", got_i, want, (int)hostlen, req,
            (int)targetlen, target, body);
    abort();
  }
  h3g_router_free(router);
  h3g_config_free(&cfg);
  return 0;
}
