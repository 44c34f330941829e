/*
 * bridge_log.h: one exchange's accounting: its timings while it runs, and
 * at its end the access record, the route's statistics and histograms and
 * the upstream's finish(). Driven directly on a fake clock; the access record is caught
 * as log.c would receive it (the test links with --wrap=h3g_now_ns,
 * --wrap=h3g_wall_us and --wrap=h3g_access_log). Every record and
 * finish() is counted and the totals asserted.
 */
#include <stdio.h>
#include <string.h>

#include "bridge_log.h"
#include "http_headers.h"
#include "log.h"
#include "route.h"
#include "unit.h"
#include "upstream_pool.h"

/* ---- fake clock -------------------------------------------------------- */

static uint64_t now_ns = 1000000000u, wall_us = 1700000000000000u;

uint64_t __wrap_h3g_now_ns(void);
uint64_t __wrap_h3g_now_ns(void) {
  return now_ns;
}
uint64_t __wrap_h3g_wall_us(void);
uint64_t __wrap_h3g_wall_us(void) {
  return wall_us;
}

/* ---- the access log, caught -------------------------------------------- */

typedef struct seen_record {
  h3g_access_record rec;
  /* Copies: the record's strings live only during the call. */
  char client[64], protocol[16], method[64], authority[512], path[2048];
  char upstream[128], route[128], outcome[64];
  char cid[64], referer[1024], user_agent[1024];
} seen_record;

static seen_record seen;
static int records;

static void copy(char *dst, size_t cap, const char *s) {
  snprintf(dst, cap, "%s", s != NULL ? s : "(null)");
}

void __wrap_h3g_access_log(const h3g_access_record *rec);
void __wrap_h3g_access_log(const h3g_access_record *rec) {
  records++;
  seen.rec = *rec;
  copy(seen.client, sizeof(seen.client), rec->client);
  copy(seen.protocol, sizeof(seen.protocol), rec->protocol);
  copy(seen.method, sizeof(seen.method), rec->method);
  copy(seen.authority, sizeof(seen.authority), rec->authority);
  copy(seen.path, sizeof(seen.path), rec->path);
  copy(seen.upstream, sizeof(seen.upstream), rec->upstream);
  copy(seen.route, sizeof(seen.route), rec->route);
  copy(seen.outcome, sizeof(seen.outcome), rec->outcome);
  copy(seen.cid, sizeof(seen.cid), rec->cid);
  copy(seen.referer, sizeof(seen.referer), rec->referer);
  copy(seen.user_agent, sizeof(seen.user_agent), rec->user_agent);
}

/* ---- fake upstream ------------------------------------------------------ */

static int pool_obj;
static h3g_upstream_waiter waiter;
static int finishes, last_status = -1;
static uint64_t last_first_byte;
static const void *finish_pool, *finish_waiter;
static const char *server; /* what server_name() answers */

static const char *f_name(void *pool) {
  CHECK(pool == &pool_obj);
  return "backend";
}
static const char *f_server_name(void *pool, const h3g_upstream_waiter *w) {
  CHECK(pool == &pool_obj);
  CHECK(w == &waiter);
  return server;
}
static void f_finish(void *pool, const h3g_upstream_waiter *w, int status,
                     uint64_t first_byte_us) {
  finishes++;
  finish_pool = pool;
  finish_waiter = w;
  last_status = status;
  last_first_byte = first_byte_us;
}

static const h3g_upstream_ops ops = {
    .name = f_name, .server_name = f_server_name, .finish = f_finish};
/* An upstream with neither server_name nor finish. */
static const h3g_upstream_ops bare_ops = {.name = f_name};

/* ---- a request and a route ---------------------------------------------- */

static h3g_headers fields;
static h3g_request_pseudo pseudo;
static h3g_route_conf route_conf;
static h3g_route route;
static h3g_route_stats route_stats;

static void add(const char *name, const char *value) {
  CHECK_EQ_INT(h3g_headers_add(&fields, (const uint8_t *)name, strlen(name),
                               (const uint8_t *)value, strlen(value)),
               0);
}

/* A valid request GET https://example.com/index.html, validated. */
static void request(void) {
  h3g_headers_free(&fields);
  h3g_headers_init(&fields, 65536);
  add(":method", "GET");
  add(":scheme", "https");
  add(":authority", "example.com");
  add(":path", "/index.html");
  int64_t cl;
  const char *why;
  CHECK_EQ_INT(h3g_request_validate(&fields, &pseudo, &cl, &why), 0);
}

/* Validates the request again after fields were added (adding may move
 * the field storage the pseudo-header fields point into). */
static void revalidate(void) {
  int64_t cl;
  const char *why;
  CHECK_EQ_INT(h3g_request_validate(&fields, &pseudo, &cl, &why), 0);
}

static void reset(void) {
  memset(&seen, 0, sizeof(seen));
  records = finishes = 0;
  last_status = -1;
  last_first_byte = 0;
  finish_pool = finish_waiter = NULL;
  server = "10.0.0.2:8080";
  memset(&route_conf, 0, sizeof(route_conf));
  snprintf(route_conf.name, sizeof(route_conf.name), "api");
  route_stats = (h3g_route_stats){.refs = 1};
  route = (h3g_route){.conf = &route_conf, .stats = &route_stats};
  request();
}

static h3g_bridge_end end_of(int status) {
  return (h3g_bridge_end){
      .client = "192.0.2.1:50000",
      .protocol = "h3",
      .fields = &fields,
      .pseudo = &pseudo,
      .status = status,
      .outcome = "ok",
      .route = &route,
      .ops = &ops,
      .pool = &pool_obj,
      .waiter = &waiter,
  };
}

/* ---- cases -------------------------------------------------------------- */

/* Time to first byte runs from the head going out on a connection to the
 * first response byte on it; a new connection starts it over. */
static void test_first_byte_timing(void) {
  h3g_bridge_log l;
  now_ns = 5000000000u;
  wall_us = 1700000000000000u;
  h3g_bridge_log_start(&l);
  CHECK_EQ_INT(l.start_ns, 5000000000u);
  CHECK_EQ_INT(l.start_wall_us, 1700000000000000u);
  CHECK_EQ_INT(l.bytes_in + l.bytes_out + l.sent_ns + l.first_byte_us, 0);
  /* No byte counts before anything was sent. */
  now_ns += 1000000;
  h3g_bridge_log_read(&l, 10);
  CHECK_EQ_INT(l.first_byte_us, 0);
  h3g_bridge_log_sent(&l, 0);
  now_ns += 750000;
  h3g_bridge_log_read(&l, 0); /* no byte yet */
  CHECK_EQ_INT(l.first_byte_us, 0);
  now_ns += 250000;
  h3g_bridge_log_read(&l, 100);
  CHECK_EQ_INT(l.first_byte_us, 1000);
  now_ns += 5000000;
  h3g_bridge_log_read(&l, 100); /* later reads leave it */
  CHECK_EQ_INT(l.first_byte_us, 1000);
  /* Sent again on another connection: timed afresh. */
  h3g_bridge_log_sent(&l, 0);
  CHECK_EQ_INT(l.first_byte_us, 0);
  now_ns += 2000;
  h3g_bridge_log_read(&l, 1);
  CHECK_EQ_INT(l.first_byte_us, 2);
  /* A byte within the same microsecond still counts as one came. */
  h3g_bridge_log_sent(&l, 0);
  h3g_bridge_log_read(&l, 1);
  CHECK_EQ_INT(l.first_byte_us, 1);
}

/* The record of a complete exchange: its request as validated, the
 * upstream's server, its route, counts, duration, and the finish(). */
static void test_record_fields(void) {
  reset();
  h3g_bridge_log l;
  now_ns = 1000000000u;
  wall_us = 1700000000123456u;
  h3g_bridge_log_start(&l);
  now_ns += 2000000;
  h3g_bridge_log_sent(&l, 0);
  now_ns += 3000000;
  h3g_bridge_log_read(&l, 512);
  l.bytes_in = 42;
  l.bytes_out = 4096;
  now_ns += 1000000;
  h3g_bridge_end e = end_of(200);
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(records, 1);
  CHECK_EQ_INT(seen.rec.start_wall_us, 1700000000123456u);
  CHECK_EQ_INT(seen.rec.duration_us, 6000);
  CHECK(strcmp(seen.client, "192.0.2.1:50000") == 0);
  CHECK(strcmp(seen.protocol, "h3") == 0);
  CHECK(strcmp(seen.method, "GET") == 0);
  CHECK(strcmp(seen.authority, "example.com") == 0);
  CHECK(strcmp(seen.path, "/index.html") == 0);
  CHECK_EQ_INT(seen.rec.status, 200);
  CHECK_EQ_INT(seen.rec.bytes_in, 42);
  CHECK_EQ_INT(seen.rec.bytes_out, 4096);
  CHECK(strcmp(seen.upstream, "10.0.0.2:8080") == 0);
  CHECK(strcmp(seen.route, "api") == 0);
  CHECK(strcmp(seen.outcome, "ok") == 0);
  CHECK_EQ_INT(finishes, 1);
  CHECK_EQ_INT(last_status, 200);
  CHECK_EQ_INT(last_first_byte, 3000);
  CHECK(finish_pool == &pool_obj);
  CHECK(finish_waiter == &waiter);

  /* No server chosen yet (a failed connect to the group): its name. */
  server = NULL;
  h3g_bridge_log_end(&l, &e);
  CHECK(strcmp(seen.upstream, "backend") == 0);
  e.ops = &bare_ops;
  h3g_bridge_log_end(&l, &e);
  CHECK(strcmp(seen.upstream, "backend") == 0);
  CHECK_EQ_INT(records, 3);
  CHECK_EQ_INT(finishes, 2); /* bare_ops has no finish() */
}

/* A request refused before routing: route "-", upstream "-" (the gateway
 * answered alone), no finish(), no route statistics; the line shows what
 * the request claimed. */
static void test_gateway_answered_alone(void) {
  reset();
  h3g_headers_free(&fields);
  h3g_headers_init(&fields, 65536);
  add(":method", "BREW");
  add(":path", "/pot");
  add(":authority", "tea.example");
  h3g_bridge_log l;
  h3g_bridge_log_start(&l);
  h3g_bridge_end e = end_of(400);
  e.pseudo = NULL;
  e.route = NULL;
  e.ops = NULL;
  e.outcome = "malformed";
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(records, 1);
  CHECK(strcmp(seen.route, "-") == 0);
  CHECK(strcmp(seen.upstream, "-") == 0);
  CHECK(strcmp(seen.method, "BREW") == 0);
  CHECK(strcmp(seen.path, "/pot") == 0);
  CHECK(strcmp(seen.authority, "tea.example") == 0);
  CHECK(strcmp(seen.outcome, "malformed") == 0);
  CHECK_EQ_INT(seen.rec.status, 400);
  CHECK_EQ_INT(finishes, 0);

  /* Nothing claimed at all: empty, not garbage. */
  h3g_headers_clear(&fields);
  h3g_bridge_log_end(&l, &e);
  CHECK(strcmp(seen.method, "") == 0);
  CHECK(strcmp(seen.path, "") == 0);
  CHECK(strcmp(seen.authority, "") == 0);

  /* Routed, but answered by the gateway (a 413 by size, no upstream): the
   * route is named, the upstream is not, and the route counts it. */
  request();
  e = end_of(413);
  e.ops = NULL;
  h3g_bridge_log_end(&l, &e);
  CHECK(strcmp(seen.route, "api") == 0);
  CHECK(strcmp(seen.upstream, "-") == 0);
  CHECK_EQ_INT(route.stats->responses[3], 1);
  CHECK_EQ_INT(records, 3);
  CHECK_EQ_INT(finishes, 0);
}

/* An exchange aborted before any status: status 0 in the record, in the
 * finish() call, and no response class counted (its duration is). */
static void test_status_0_after_abort(void) {
  reset();
  h3g_bridge_log l;
  now_ns = 1000000000u;
  h3g_bridge_log_start(&l);
  h3g_bridge_log_sent(&l, 0);
  now_ns += 9000000;
  h3g_bridge_end e = end_of(0);
  e.outcome = "upstream-reset";
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(records, 1);
  CHECK_EQ_INT(seen.rec.status, 0);
  CHECK(strcmp(seen.outcome, "upstream-reset") == 0);
  CHECK_EQ_INT(finishes, 1);
  CHECK_EQ_INT(last_status, 0);
  CHECK_EQ_INT(last_first_byte, 0); /* no byte came */
  uint64_t sum = 0;
  for (int i = 0; i < 5; i++)
    sum += route.stats->responses[i];
  CHECK_EQ_INT(sum, 0);
  CHECK_EQ_INT(route.stats->duration_count, 1);
  CHECK_EQ_INT(route.stats->duration_us_sum, 9000);
}

/* Route statistics by status class, with durations summed. */
static void test_route_stats_by_class(void) {
  reset();
  const int status[] = {101, 200, 204, 301, 304, 404, 429, 500, 503, 599};
  const uint64_t want[5] = {1, 2, 2, 2, 3};
  h3g_bridge_log l;
  uint64_t sum = 0;
  for (size_t i = 0; i < sizeof(status) / sizeof(status[0]); i++) {
    now_ns = 1000000000u;
    h3g_bridge_log_start(&l);
    now_ns += (i + 1) * 1000;
    sum += (i + 1);
    h3g_bridge_end e = end_of(status[i]);
    h3g_bridge_log_end(&l, &e);
    CHECK_EQ_INT(last_status, status[i]);
  }
  for (int c = 0; c < 5; c++)
    CHECK_EQ_INT(route.stats->responses[c], want[c]);
  CHECK_EQ_INT(route.stats->duration_count, 10);
  CHECK_EQ_INT(route.stats->duration_us_sum, sum);
  CHECK_EQ_INT(route.stats->requests, 0); /* counted when routed, not here */
  CHECK_EQ_INT(records, 10);
  CHECK_EQ_INT(finishes, 10);
}

/* Fields longer than the record's copies are cut, never overrun. */
static void test_long_fields_cut(void) {
  reset();
  static char longpath[4096];
  longpath[0] = '/';
  memset(longpath + 1, 'p', sizeof(longpath) - 2);
  h3g_headers_free(&fields);
  h3g_headers_init(&fields, 65536);
  add(":method", "GET");
  add(":scheme", "https");
  add(":authority", "example.com");
  add(":path", longpath);
  int64_t cl;
  const char *why;
  CHECK_EQ_INT(h3g_request_validate(&fields, &pseudo, &cl, &why), 0);
  h3g_bridge_log l;
  h3g_bridge_log_start(&l);
  h3g_bridge_end e = end_of(200);
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(records, 1);
  CHECK_EQ_INT(strlen(seen.path), 1023);
  CHECK(strncmp(seen.path, longpath, 1023) == 0);
}

/* The upstream timings of the record: connect time as the pool measured it
 * (0 for a kept-alive connection), first byte from the hand-over; both
 * "none" (-1) when no connection was handed over or no byte came. */
static void test_upstream_timings(void) {
  reset();
  h3g_bridge_log l;
  h3g_bridge_end e = end_of(200);
  now_ns = 1000000000u;
  h3g_bridge_log_start(&l);
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(seen.rec.connect_us, -1);
  CHECK_EQ_INT(seen.rec.first_byte_us, -1);

  /* A new connection that took 1.5 ms to open, a first byte 4 ms after. */
  h3g_bridge_log_sent(&l, 1500);
  now_ns += 4000000;
  h3g_bridge_log_read(&l, 10);
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(seen.rec.connect_us, 1500);
  CHECK_EQ_INT(seen.rec.first_byte_us, 4000);

  /* Sent again on a kept-alive connection, no byte yet: connect 0. */
  h3g_bridge_log_sent(&l, 0);
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(seen.rec.connect_us, 0);
  CHECK_EQ_INT(seen.rec.first_byte_us, -1);
  CHECK_EQ_INT(records, 3);
}

/* The front end's facts (QUIC connection ID, 0-RTT) and the request's
 * Referer and User-Agent reach the record; absent ones are empty. */
static void test_connection_and_request_facts(void) {
  reset();
  h3g_bridge_log l;
  h3g_bridge_log_start(&l);
  h3g_bridge_end e = end_of(200);
  h3g_bridge_log_end(&l, &e);
  CHECK(strcmp(seen.cid, "(null)") == 0);
  CHECK_EQ_INT(seen.rec.early, 0);
  CHECK(strcmp(seen.referer, "") == 0);
  CHECK(strcmp(seen.user_agent, "") == 0);

  add("referer", "https://example.com/from");
  add("user-agent", "probe/1.0 (\"quoted\")");
  revalidate();
  e.cid = "0123456789abcdef";
  e.early = 1;
  h3g_bridge_log_end(&l, &e);
  CHECK(strcmp(seen.cid, "0123456789abcdef") == 0);
  CHECK_EQ_INT(seen.rec.early, 1);
  CHECK(strcmp(seen.referer, "https://example.com/from") == 0);
  CHECK(strcmp(seen.user_agent, "probe/1.0 (\"quoted\")") == 0);

  /* A user-agent longer than the record's copy is cut at 511 bytes. */
  static char agent[2000];
  memset(agent, 'a', sizeof(agent) - 1);
  request();
  add("user-agent", agent);
  revalidate();
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(strlen(seen.user_agent), 511);
  CHECK_EQ_INT(records, 3);
}

/* Durations go to the route's histogram of the request's protocol, first
 * bytes only when one came; an unknown protocol counts in the route's
 * statistics but in no histogram. */
static void test_route_histograms(void) {
  reset();
  h3g_bridge_log l;
  static const struct {
    const char *proto;
    uint64_t duration_us, first_byte_us; /* first_byte 0: none came */
  } ex[] = {
      {"h3", 300, 100},       {"h3", 700, 0},          {"h2", 1000, 1000},
      {"http/1.1", 2000000, 1500000}, {"http/1.1", 90000000, 0},
      {"spdy", 1000, 10},
  };
  for (size_t i = 0; i < H3G_ARRAY_LEN(ex); i++) {
    now_ns = 1000000000u;
    h3g_bridge_log_start(&l);
    if (ex[i].first_byte_us != 0) {
      h3g_bridge_log_sent(&l, 0);
      now_ns += ex[i].first_byte_us * 1000;
      h3g_bridge_log_read(&l, 1);
    }
    now_ns = 1000000000u + ex[i].duration_us * 1000;
    h3g_bridge_end e = end_of(200);
    e.protocol = ex[i].proto;
    h3g_bridge_log_end(&l, &e);
  }
  const h3g_route_stats *st = route.stats;
  CHECK_EQ_INT(st->duration_count, 6);
  /* h3: 300 us and 700 us in the buckets of 0.5 ms and 1 ms. */
  CHECK_EQ_INT(st->duration[0].count, 2);
  CHECK_EQ_INT(st->duration[0].sum_us, 1000);
  CHECK_EQ_INT(st->duration[0].counts[0], 1);
  CHECK_EQ_INT(st->duration[0].counts[1], 1);
  CHECK_EQ_INT(st->first_byte[0].count, 1);
  CHECK_EQ_INT(st->first_byte[0].counts[0], 1);
  /* h2: 1 ms exactly is in the 1 ms bucket (le is inclusive). */
  CHECK_EQ_INT(st->duration[1].count, 1);
  CHECK_EQ_INT(st->duration[1].counts[1], 1);
  CHECK_EQ_INT(st->first_byte[1].counts[1], 1);
  /* http/1.1: 2 s in the 2.5 s bucket; 90 s above every bound. */
  CHECK_EQ_INT(st->duration[2].count, 2);
  CHECK_EQ_INT(st->duration[2].counts[11], 1);
  CHECK_EQ_INT(st->duration[2].counts[H3G_HIST_BOUNDS], 1);
  CHECK_EQ_INT(st->duration[2].sum_us, 92000000);
  CHECK_EQ_INT(st->first_byte[2].count, 1);
  CHECK_EQ_INT(st->first_byte[2].sum_us, 1500000);
  CHECK_EQ_INT(st->first_byte[2].counts[11], 1);
  /* "spdy": in the route's sums, in no histogram. */
  uint64_t hist = 0;
  for (int p = 0; p < H3G_ROUTE_PROTOCOLS; p++)
    hist += st->duration[p].count;
  CHECK_EQ_INT(hist, 5);
  CHECK_EQ_INT(records, 6);

  /* A request without a route counts nowhere. */
  h3g_bridge_end e = end_of(404);
  e.route = NULL;
  h3g_bridge_log_end(&l, &e);
  CHECK_EQ_INT(st->duration_count, 6);
  CHECK_EQ_INT(st->duration[0].count + st->duration[1].count +
                   st->duration[2].count,
               5);
}

int main(void) {
  RUN(test_first_byte_timing);
  RUN(test_record_fields);
  RUN(test_gateway_answered_alone);
  RUN(test_status_0_after_abort);
  RUN(test_route_stats_by_class);
  RUN(test_long_fields_cut);
  RUN(test_upstream_timings);
  RUN(test_connection_and_request_facts);
  RUN(test_route_histograms);
  h3g_headers_free(&fields);
  return unit_report();
}
