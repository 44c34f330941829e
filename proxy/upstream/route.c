/*
 * The route table.
 *
 * Hosts are keys of one open-addressing hash table: exact names as they
 * are ("app.example.com"), wildcards with their star ("*.example.com").
 * A request's host is looked up exactly, then as each of its wildcard
 * suffixes from the longest, then the routes without host: a handful of
 * hash probes whatever the number of routes.
 *
 * Path prefixes are keys of a second hash table, (host bucket, prefix).
 * A prefix can only match where the path has a segment boundary ("/api"
 * before a '/' or at the end, "/api/" after a '/'), so a path is looked
 * up at each of its boundaries, longest first: as many probes as the path
 * has segments, whatever the number of prefixes (a linear scan of 1000
 * prefixes of one host cost microseconds a request). The hashes of all
 * those lengths come from one pass over the path.
 */
#include "route.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Longest host and path the matcher looks at: a longer host matches no
 * named host (DNS names are at most 253 bytes), a longer path no route. */
#define HOST_MAX 256
#define PATH_MAX_MATCH (64 * 1024)

typedef struct entry {
  const char *prefix;
  size_t len;
  uint32_t route;
  uint32_t bucket;
  uint64_t hash; /* of the prefix, mixed with the bucket */
} entry;

typedef struct bucket {
  const char *key; /* NULL: the routes without host */
  size_t keylen;
  entry *e;
  size_t n;
} bucket;

struct h3g_router {
  h3g_route *routes;
  size_t nroutes;
  bucket *buckets; /* buckets[0] is the routes without host */
  size_t nbuckets;
  uint32_t *slots; /* bucket index + 1; 0 empty */
  size_t nslots;   /* a power of two, at least twice nbuckets */
  bool have_wild;
  entry *entries;   /* every (bucket, prefix), longest first */
  size_t nentries;
  uint32_t *pslots; /* entries index + 1; 0 empty */
  size_t npslots;   /* a power of two, at least twice nentries */
  size_t max_prefix; /* the longest prefix: longer path parts never match */
  size_t holds;      /* requests that took a route of it */
  void (*retired)(void *arg); /* set by retire: called at holds 0 */
  void *retired_arg;
};

static uint64_t hash_key(const char *s, size_t n) { return h3g_fnv1a(s, n); }

/* The prefix hash of a path's first bytes (FNV-1a step by step, so that
 * one pass gives the hash of every length), then mixed with a bucket. */
#define PREFIX_SEED 1469598103934665603ull
static inline uint64_t prefix_step(uint64_t h, unsigned char c) {
  return (h ^ c) * 1099511628211ull;
}
static inline uint64_t prefix_key(uint64_t h, size_t len, uint32_t b) {
  h ^= (uint64_t)len * 0x9e3779b97f4a7c15ull ^ (uint64_t)b << 32;
  h ^= h >> 29;
  return h * 0xbf58476d1ce4e5b9ull;
}

static bucket *find(const h3g_router *r, const char *key, size_t n) {
  size_t mask = r->nslots - 1;
  for (size_t i = (size_t)hash_key(key, n) & mask;; i = (i + 1) & mask) {
    uint32_t s = r->slots[i];
    if (s == 0)
      return NULL;
    bucket *b = &r->buckets[s - 1];
    if (b->keylen == n && memcmp(b->key, key, n) == 0)
      return b;
  }
}

static int compare_entries(const void *pa, const void *pb) {
  const entry *a = pa, *b = pb;
  if (a->len != b->len)
    return a->len > b->len ? -1 : 1;
  return a->route < b->route ? -1 : a->route > b->route;
}

/* The bucket of key (NULL: no host), made if need be. */
static bucket *bucket_of(h3g_router *r, const char *key) {
  if (key == NULL)
    return &r->buckets[0];
  size_t n = strlen(key);
  bucket *b = find(r, key, n);
  if (b != NULL)
    return b;
  b = &r->buckets[r->nbuckets];
  *b = (bucket){.key = key, .keylen = n};
  size_t mask = r->nslots - 1;
  size_t i = (size_t)hash_key(key, n) & mask;
  while (r->slots[i] != 0)
    i = (i + 1) & mask;
  r->slots[i] = (uint32_t)++r->nbuckets;
  if (key[0] == '*')
    r->have_wild = true;
  return b;
}

int h3g_router_new(h3g_router **out, const h3g_config *cfg) {
  h3g_router *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return H3G_ERR_NOMEM;
  size_t keys = 1, pairs = 0;
  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    keys += cfg->routes[i].nhosts;
    pairs += (size_t)H3G_MAX(cfg->routes[i].nhosts, 1u) *
             cfg->routes[i].npaths;
  }
  r->nslots = 16;
  while (r->nslots < 2 * keys)
    r->nslots *= 2;
  r->routes = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*r->routes));
  r->buckets = calloc(keys, sizeof(*r->buckets));
  r->slots = calloc(r->nslots, sizeof(*r->slots));
  entry *all = calloc(pairs ? pairs : 1, sizeof(*all));
  if (r->routes == NULL || r->buckets == NULL || r->slots == NULL ||
      all == NULL) {
    free(all);
    h3g_router_free(r);
    return H3G_ERR_NOMEM;
  }
  r->nroutes = cfg->nroutes;
  r->nbuckets = 1;
  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    r->routes[i] = (h3g_route){.conf = &cfg->routes[i],
                               .group = &cfg->groups[cfg->routes[i].group],
                               .stats = calloc(1, sizeof(h3g_route_stats))};
    if (r->routes[i].stats == NULL) {
      free(all);
      h3g_router_free(r);
      return H3G_ERR_NOMEM;
    }
    r->routes[i].stats->refs = 1;
  }

  /* First count each bucket's entries, then carve them out of `all`. */
  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    const h3g_route_conf *rc = &cfg->routes[i];
    for (uint32_t h = 0; h < H3G_MAX(rc->nhosts, 1u); h++)
      bucket_of(r, rc->nhosts ? rc->hosts[h] : NULL)->n += rc->npaths;
  }
  size_t used = 0;
  for (size_t b = 0; b < r->nbuckets; b++) {
    r->buckets[b].e = all + used;
    used += r->buckets[b].n;
    r->buckets[b].n = 0;
  }
  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    const h3g_route_conf *rc = &cfg->routes[i];
    for (uint32_t h = 0; h < H3G_MAX(rc->nhosts, 1u); h++) {
      bucket *b = bucket_of(r, rc->nhosts ? rc->hosts[h] : NULL);
      for (uint32_t p = 0; p < rc->npaths; p++)
        b->e[b->n++] = (entry){.prefix = rc->paths[p],
                               .len = strlen(rc->paths[p]),
                               .route = i};
    }
  }
  for (size_t b = 0; b < r->nbuckets; b++) {
    bucket *bk = &r->buckets[b];
    qsort(bk->e, bk->n, sizeof(entry), compare_entries);
    for (size_t i = 0; i < bk->n; i++) {
      entry *e = &bk->e[i];
      uint64_t h = PREFIX_SEED;
      for (size_t k = 0; k < e->len; k++)
        h = prefix_step(h, (unsigned char)e->prefix[k]);
      e->bucket = (uint32_t)b;
      e->hash = prefix_key(h, e->len, e->bucket);
      r->max_prefix = H3G_MAX(r->max_prefix, e->len);
    }
  }
  r->entries = all;
  r->nentries = pairs;
  r->npslots = 16;
  while (r->npslots < 2 * pairs)
    r->npslots *= 2;
  r->pslots = calloc(r->npslots, sizeof(*r->pslots));
  if (r->pslots == NULL) {
    h3g_router_free(r);
    return H3G_ERR_NOMEM;
  }
  /* Within a bucket the entries are in matching order: of two equal
   * prefixes (which the configuration refuses), the first is kept. */
  size_t mask = r->npslots - 1;
  for (size_t b = 0; b < r->nbuckets; b++) {
    const bucket *bk = &r->buckets[b];
    for (size_t i = 0; i < bk->n; i++) {
      const entry *e = &bk->e[i];
      size_t j = (size_t)e->hash & mask;
      bool dup = false;
      for (; r->pslots[j] != 0 && !dup; j = (j + 1) & mask) {
        const entry *o = &r->entries[r->pslots[j] - 1];
        dup = o->hash == e->hash && o->bucket == e->bucket &&
              o->len == e->len && memcmp(o->prefix, e->prefix, e->len) == 0;
      }
      if (!dup)
        r->pslots[j] = (uint32_t)(e - r->entries) + 1;
    }
  }
  *out = r;
  return 0;
}

static void stats_put(h3g_route_stats *st) {
  if (st != NULL && --st->refs == 0)
    free(st);
}

void h3g_router_free(h3g_router *r) {
  if (r == NULL)
    return;
  if (r->buckets != NULL)
    free(r->buckets[0].e); /* every bucket's entries are one block */
  free(r->buckets);
  free(r->slots);
  free(r->pslots);
  for (size_t i = 0; r->routes != NULL && i < r->nroutes; i++)
    stats_put(r->routes[i].stats);
  free(r->routes);
  free(r);
}

void h3g_router_inherit_stats(h3g_router *r, const h3g_router *old) {
  for (size_t i = 0; i < r->nroutes; i++)
    for (size_t k = 0; k < old->nroutes; k++)
      if (strcmp(r->routes[i].conf->name, old->routes[k].conf->name) == 0) {
        stats_put(r->routes[i].stats);
        r->routes[i].stats = old->routes[k].stats;
        r->routes[i].stats->refs++;
        break;
      }
}

const char *const h3g_route_protocols[H3G_ROUTE_PROTOCOLS] = {"h3", "h2",
                                                              "http/1.1"};

int h3g_route_protocol(const char *protocol) {
  for (int i = 0; protocol != NULL && i < H3G_ROUTE_PROTOCOLS; i++)
    if (strcmp(protocol, h3g_route_protocols[i]) == 0)
      return i;
  return -1;
}

void h3g_router_hold(h3g_router *r) { r->holds++; }

void h3g_router_put(h3g_router *r) {
  if (--r->holds == 0 && r->retired != NULL)
    r->retired(r->retired_arg);
}

void h3g_router_retire(h3g_router *r, void (*cb)(void *arg), void *arg) {
  r->retired = cb;
  r->retired_arg = arg;
  if (r->holds == 0)
    cb(arg);
}

size_t h3g_router_count(const h3g_router *r) { return r->nroutes; }

h3g_route *h3g_router_route(h3g_router *r, size_t i) {
  return i < r->nroutes ? &r->routes[i] : NULL;
}

/* "/a" matches "/a", "/a/..." but not "/ab"; "/a/" matches "/a/...". */
static bool prefix_matches(const entry *e, const char *path, size_t n) {
  if (n < e->len || memcmp(path, e->prefix, e->len) != 0)
    return false;
  return e->prefix[e->len - 1] == '/' || n == e->len || path[e->len] == '/';
}

/* The path's candidate lengths (segment boundaries), longest last, with
 * the hash of each: filled once a request by boundaries(). */
typedef struct cut {
  size_t len;
  uint64_t hash;
} cut;

/* At most two cuts a byte up to the longest prefix, and the whole path. */
static cut cuts[2 * 1024 + 2];

/*
 * Fills cuts with the lengths a prefix could have to match path (n
 * bytes): before each '/' ("/api" of "/api/x"), after it ("/api/"), and n
 * (the whole path), none longer than max. Returns the count, or 0 when
 * max is beyond what cuts can hold (then match_bucket scans).
 */
static size_t boundaries(const char *path, size_t n, size_t max) {
  if (max > 1024)
    return 0;
  /* A '/' at max still ends a prefix of max bytes before it. */
  size_t nc = 0, end = H3G_MIN(n, max + 1);
  uint64_t h = PREFIX_SEED;
  for (size_t i = 0; i < end; i++) {
    if (path[i] == '/' && i > 0)
      cuts[nc++] = (cut){i, h};
    if (i == max)
      break;
    h = prefix_step(h, (unsigned char)path[i]);
    if (path[i] == '/')
      cuts[nc++] = (cut){i + 1, h};
  }
  if (n <= max && (nc == 0 || cuts[nc - 1].len != n))
    cuts[nc++] = (cut){n, h};
  return nc;
}

static const entry *lookup(const h3g_router *r, uint32_t b, const char *path,
                           const cut *c) {
  uint64_t key = prefix_key(c->hash, c->len, b);
  size_t mask = r->npslots - 1;
  for (size_t j = (size_t)key & mask; r->pslots[j] != 0; j = (j + 1) & mask) {
    const entry *e = &r->entries[r->pslots[j] - 1];
    if (e->hash == key && e->bucket == b && e->len == c->len &&
        memcmp(e->prefix, path, c->len) == 0)
      return e;
  }
  return NULL;
}

static const entry *match_bucket(const h3g_router *r, const bucket *b,
                                 const char *path, size_t n, size_t ncuts) {
  if (ncuts == 0) {
    for (size_t i = 0; i < b->n; i++)
      if (prefix_matches(&b->e[i], path, n))
        return &b->e[i];
    return NULL;
  }
  uint32_t bi = (uint32_t)(b - r->buckets);
  for (size_t k = ncuts; k-- > 0;) {
    const entry *e = lookup(r, bi, path, &cuts[k]);
    if (e != NULL && prefix_matches(e, path, n))
      return e;
  }
  return NULL;
}

static bool is_dot(const char *s, size_t n, size_t *dots) {
  size_t d = 0;
  for (size_t i = 0; i < n; i++, d++)
    if (s[i] != '.')
      return false;
  *dots = d;
  return d == 1 || d == 2;
}

/*
 * Writes path (n bytes, starting with '/') over itself without "." and
 * ".." segments (RFC 3986 §5.2.4). Returns the new length (never longer).
 */
static size_t remove_dots(char *path, size_t n) {
  size_t o = 0, i = 0;
  while (i < n) {
    /* path[i] is '/': one segment follows, up to the next '/'. */
    size_t s = i + 1, e = s;
    while (e < n && path[e] != '/')
      e++;
    size_t dots;
    if (is_dot(path + s, e - s, &dots)) {
      if (dots == 2)
        while (o > 0 && path[--o] != '/')
          ;
      if (e == n) /* a last "." or ".." leaves a directory: "/a/." is "/a/" */
        path[o++] = '/';
    } else {
      memmove(path + o, path + i, e - i);
      o += e - i;
    }
    i = e;
  }
  return o == 0 ? (path[0] = '/', 1) : o;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (char)(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 3986 §2.3: their percent-encoded forms mean the same (RFC 9110
 * §4.2.3), so they are decoded before matching; anything else, "%2F"
 * above all, stays encoded and is no segment boundary. */
static bool unreserved(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
         c == '~';
}

/* The encoded unreserved byte at p[i] ("%61"), or -1. */
static int encoded_unreserved(const char *p, size_t n, size_t i) {
  if (p[i] != '%' || i + 2 >= n)
    return -1;
  int hi = hex_value(p[i + 1]), lo = hex_value(p[i + 2]);
  if (hi < 0 || lo < 0 || !unreserved(hi * 16 + lo))
    return -1;
  return hi * 16 + lo;
}

/* Whether path needs normalizing: a dot segment or an encoded unreserved
 * byte. Most paths have neither and are matched as they are. */
static bool needs_normalizing(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '/' && i + 1 < n && p[i + 1] == '.')
      return true;
    if (p[i] == '%' && encoded_unreserved(p, n, i) >= 0)
      return true;
  }
  return false;
}

/* path as matched: encoded unreserved bytes decoded, then dot segments
 * removed, into out (room for n bytes). Returns the length. */
static size_t normalize(const char *p, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int c = encoded_unreserved(p, n, i);
    if (c >= 0) {
      out[o++] = (char)c;
      i += 2;
    } else {
      out[o++] = p[i];
    }
  }
  return remove_dots(out, o);
}

h3g_route *h3g_router_match(const h3g_router *r, const char *host,
                            size_t hostlen, const char *target,
                            size_t targetlen) {
  static char norm[PATH_MAX_MATCH];
  size_t n = 0;
  while (n < targetlen && target[n] != '?' && target[n] != '#')
    n++;
  const char *path = target;
  if (n == 0 || path[0] != '/') {
    /* "*" (OPTIONS) or an absolute form the front end kept: only "/"
     * prefixes (the default path) can match it. */
    path = "/";
    n = 1;
  } else if (needs_normalizing(path, n)) {
    if (n > sizeof(norm))
      return NULL;
    n = normalize(path, n, norm);
    path = norm;
  }

  /* The host: lowercase, without port and trailing dot, in key[1..]. */
  char key[HOST_MAX + 2];
  size_t hl = 0;
  if (host != NULL && hostlen > 0) {
    size_t end = hostlen;
    if (host[0] == '[') {
      const char *close = memchr(host, ']', hostlen);
      end = close != NULL ? (size_t)(close - host) + 1 : hostlen;
    } else {
      const char *colon = memchr(host, ':', hostlen);
      if (colon != NULL)
        end = (size_t)(colon - host);
    }
    if (end > 1 && host[end - 1] == '.')
      end--;
    if (end <= HOST_MAX) {
      for (size_t i = 0; i < end; i++)
        key[1 + i] = (char)tolower((unsigned char)host[i]);
      hl = end;
    }
  }
  const entry *e;
  const bucket *b;
  size_t nc = boundaries(path, n, r->max_prefix);
  if (hl > 0) {
    if ((b = find(r, key + 1, hl)) != NULL &&
        (e = match_bucket(r, b, path, n, nc)) != NULL)
      return &r->routes[e->route];
    /* "a.b.example.com": "*.b.example.com", then "*.example.com"... */
    for (size_t i = 1; r->have_wild && i < hl; i++) {
      if (key[1 + i] != '.')
        continue;
      char saved = key[i];
      key[i] = '*';
      b = find(r, key + i, hl + 1 - i);
      key[i] = saved;
      if (b != NULL && (e = match_bucket(r, b, path, n, nc)) != NULL)
        return &r->routes[e->route];
    }
  }
  if ((e = match_bucket(r, &r->buckets[0], path, n, nc)) != NULL)
    return &r->routes[e->route];
  return NULL;
}
