/*
 * early_data.h: the decisions about a request received as 0-RTT early data
 * (RFC 8470): which go upstream at once marked "Early-Data: 1", which wait
 * for the handshake, and the one retry of a 425 to a request we marked.
 * Driven directly, with the h3_early_* metrics it counts.
 */
#include <string.h>

#include "early_data.h"
#include "http_headers.h"
#include "metrics.h"
#include "unit.h"

static h3g_headers fields;
static h3g_field method;

/* A request's field section with :method m (and early-data: 1 when
 * marked by the client). */
static void request(const char *m, int client_marked) {
  h3g_headers_free(&fields);
  h3g_headers_init(&fields, 65536);
  h3g_headers_add(&fields, (const uint8_t *)":method", 7, (const uint8_t *)m,
                  strlen(m));
  h3g_headers_add(&fields, (const uint8_t *)":path", 5, (const uint8_t *)"/",
                  1);
  if (client_marked)
    h3g_headers_add(&fields, (const uint8_t *)"early-data", 10,
                    (const uint8_t *)"1", 1);
  method = *h3g_headers_find(&fields, ":method");
}

/* An early request whose head is now complete. */
static h3g_early early_head(const char *m, int end_stream, int allowed,
                            int client_marked) {
  h3g_early e = {0};
  request(m, client_marked);
  h3g_early_received(&e);
  h3g_early_on_head(&e, &fields, &method, end_stream, allowed);
  return e;
}

/* A request received after the handshake is none of this part's business. */
static void test_not_early_left_alone(void) {
  h3g_metrics before = h3g_stats;
  h3g_early e = {0};
  request("POST", 0);
  h3g_early_on_head(&e, &fields, &method, 0, 1);
  CHECK_EQ_INT(e.hold, 0);
  CHECK_EQ_INT(e.fwd, 0);
  CHECK_EQ_INT(e.added, 0);
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 0);
  CHECK_EQ_INT(e.redo, 0);
  CHECK_EQ_INT(h3g_early_handshake_done(&e), 0);
  CHECK_EQ_INT(h3g_early_wait_handshake(&e), 0);
  CHECK_EQ_INT(e.hold, 0);
  CHECK_EQ_INT(h3g_stats.h3_early_requests, before.h3_early_requests);
  CHECK_EQ_INT(h3g_stats.h3_early_forwarded, before.h3_early_forwarded);
  CHECK_EQ_INT(h3g_stats.h3_early_held, before.h3_early_held);

  /* The handshake completed before the head did: not early any more. */
  h3g_early_received(&e);
  CHECK_EQ_INT(h3g_early_handshake_done(&e), 0);
  h3g_early_on_head(&e, &fields, &method, 0, 1);
  CHECK_EQ_INT(e.hold, 0);
  CHECK_EQ_INT(h3g_stats.h3_early_requests, before.h3_early_requests);
}

/* RFC 9110 §9.2.1 safe methods, body-less, on a route that allows it:
 * forwarded at once and marked by us. Methods are case-sensitive. */
static void test_safe_methods_forwarded(void) {
  const char *safe[] = {"GET", "HEAD", "OPTIONS"};
  for (size_t i = 0; i < 3; i++) {
    h3g_metrics before = h3g_stats;
    h3g_early e = early_head(safe[i], 1, 1, 0);
    CHECK_EQ_INT(e.early, 1);
    CHECK_EQ_INT(e.fwd, 1);
    CHECK_EQ_INT(e.added, 1);
    CHECK_EQ_INT(e.hold, 0);
    CHECK_EQ_INT(h3g_stats.h3_early_requests, before.h3_early_requests + 1);
    CHECK_EQ_INT(h3g_stats.h3_early_forwarded, before.h3_early_forwarded + 1);
    CHECK_EQ_INT(h3g_stats.h3_early_held, before.h3_early_held);
    /* Nothing was held: the handshake releases nothing. */
    CHECK_EQ_INT(h3g_early_handshake_done(&e), 0);
    CHECK_EQ_INT(e.early, 0);
  }
}

/* Anything else waits for the handshake: unsafe or unknown methods, a
 * method in the wrong case, a body, a route with early_data off. */
static void test_others_held(void) {
  const char *unsafe[] = {"POST", "PUT", "DELETE", "PATCH", "get",
                          "GETS", "GE",  "HEADX",  "TRACE", "CONNECT"};
  for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
    h3g_metrics before = h3g_stats;
    h3g_early e = early_head(unsafe[i], 1, 1, 0);
    CHECK_EQ_INT(e.hold, 1);
    CHECK_EQ_INT(e.fwd, 0);
    CHECK_EQ_INT(e.added, 0);
    CHECK_EQ_INT(h3g_stats.h3_early_requests, before.h3_early_requests + 1);
    CHECK_EQ_INT(h3g_stats.h3_early_held, before.h3_early_held + 1);
    CHECK_EQ_INT(h3g_stats.h3_early_forwarded, before.h3_early_forwarded);
  }
  h3g_early body = early_head("GET", 0, 1, 0);
  CHECK_EQ_INT(body.hold, 1);
  CHECK_EQ_INT(body.fwd, 0);
  h3g_early refused = early_head("GET", 1, 0, 0);
  CHECK_EQ_INT(refused.hold, 1);
  CHECK_EQ_INT(refused.fwd, 0);
}

/* A held request goes when the handshake completes, once. */
static void test_hold_released_by_handshake(void) {
  h3g_early e = early_head("POST", 0, 1, 0);
  CHECK_EQ_INT(e.hold, 1);
  CHECK_EQ_INT(h3g_early_handshake_done(&e), 1);
  CHECK_EQ_INT(e.hold, 0);
  CHECK_EQ_INT(e.early, 0);
  CHECK_EQ_INT(h3g_early_handshake_done(&e), 0);
  /* Never marked: a 425 reaches the client. */
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 0);
  CHECK_EQ_INT(e.redo, 0);
}

/* RFC 8470 §5.2: a 425 to a request we marked is sent again once, after
 * the handshake and unmarked; a second 425 goes to the client. */
static void test_425_retried_once(void) {
  h3g_metrics before = h3g_stats;
  h3g_early e = early_head("GET", 1, 1, 0);
  CHECK_EQ_INT(e.fwd, 1);
  CHECK_EQ_INT(h3g_early_too_early(&e, 200), 0);
  CHECK_EQ_INT(h3g_early_too_early(&e, 400), 0);
  CHECK_EQ_INT(e.redo, 0);
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 1);
  CHECK_EQ_INT(e.redo, 1);
  h3g_early_resend(&e);
  CHECK_EQ_INT(e.redo, 0);
  CHECK_EQ_INT(e.retried, 1);
  CHECK_EQ_INT(e.fwd, 0);
  CHECK_EQ_INT(e.added, 0); /* the head is rebuilt without Early-Data */
  CHECK_EQ_INT(h3g_stats.h3_early_retries, before.h3_early_retries + 1);
  /* The handshake has not completed: the request waits for it. */
  CHECK_EQ_INT(h3g_early_wait_handshake(&e), 1);
  CHECK_EQ_INT(e.hold, 1);
  CHECK_EQ_INT(h3g_early_handshake_done(&e), 1);
  CHECK_EQ_INT(e.hold, 0);
  /* The second answer is a 425 again: the client sees it. */
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 0);
  CHECK_EQ_INT(e.redo, 0);
  CHECK_EQ_INT(h3g_stats.h3_early_retries, before.h3_early_retries + 1);
}

/* The 425 came after the handshake completed: sent again at once. */
static void test_425_after_handshake_sent_now(void) {
  h3g_early e = early_head("HEAD", 1, 1, 0);
  CHECK_EQ_INT(h3g_early_handshake_done(&e), 0);
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 1);
  h3g_early_resend(&e);
  CHECK_EQ_INT(h3g_early_wait_handshake(&e), 0);
  CHECK_EQ_INT(e.hold, 0);
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 0);
}

/* RFC 8470 §5.2: a client that sent Early-Data itself is an intermediary
 * that retries by itself: forwarded early, not marked by us, its 425 not
 * retried. */
static void test_client_marked_not_retried(void) {
  h3g_metrics before = h3g_stats;
  h3g_early e = early_head("GET", 1, 1, 1);
  CHECK_EQ_INT(e.fwd, 1);
  CHECK_EQ_INT(e.added, 0);
  CHECK_EQ_INT(e.hold, 0);
  CHECK_EQ_INT(h3g_early_too_early(&e, 425), 0);
  CHECK_EQ_INT(e.redo, 0);
  CHECK_EQ_INT(h3g_stats.h3_early_retries, before.h3_early_retries);
}

/* RFC 8470 §5.1 defines only "1": a client's other value marks nothing,
 * so the gateway adds its own (and forwarding.c drops the client's). */
static void test_client_value_other_than_1_replaced(void) {
  const char *values[] = {"0", "11", "yes", ""};
  for (size_t i = 0; i < 4; i++) {
    h3g_early e = {0};
    request("GET", 0);
    h3g_headers_add(&fields, (const uint8_t *)"early-data", 10,
                    (const uint8_t *)values[i], strlen(values[i]));
    method = *h3g_headers_find(&fields, ":method");
    h3g_early_received(&e);
    h3g_early_on_head(&e, &fields, &method, 1, 1);
    CHECK_EQ_INT(e.fwd, 1);
    CHECK_EQ_INT(e.added, 1);
    /* ours, so a 425 is ours to retry */
    CHECK_EQ_INT(h3g_early_too_early(&e, 425), 1);
  }
}

int main(void) {
  RUN(test_not_early_left_alone);
  RUN(test_safe_methods_forwarded);
  RUN(test_others_held);
  RUN(test_hold_released_by_handshake);
  RUN(test_425_retried_once);
  RUN(test_425_after_handshake_sent_now);
  RUN(test_client_marked_not_retried);
  RUN(test_client_value_other_than_1_replaced);
  h3g_headers_free(&fields);
  return unit_report();
}
