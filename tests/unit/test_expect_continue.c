/*
 * expect_continue.h: the hold of a request body behind "Expect:
 * 100-continue" (RFC 9110 §10.1.1) until the upstream's 100, a final
 * status (the body is refused) or the timer, and its cancel. Driven
 * directly with fake timers that the test fires; every start, cancel and
 * callback is counted and the totals asserted.
 */
#include <stdlib.h>
#include <string.h>

#include "bridge_timer.h"
#include "expect_continue.h"
#include "http_headers.h"
#include "unit.h"

/* ---- fake timers ----------------------------------------------------- */

struct h3g_timer {
  int live;
  uint64_t ms;
  void (*cb)(void *arg);
  void *arg;
};

static struct h3g_timer timers[8];
static int starts, cancels, fired, refuse_start;
static void *loop_seen;

static h3g_timer *t_start(void *loop, uint64_t ms, void (*cb)(void *arg),
                          void *arg) {
  starts++;
  loop_seen = loop;
  if (refuse_start)
    return NULL;
  for (size_t i = 0; i < 8; i++)
    if (!timers[i].live) {
      timers[i] = (struct h3g_timer){1, ms, cb, arg};
      return &timers[i];
    }
  return NULL;
}

static void t_cancel(h3g_timer *t) {
  CHECK(t != NULL && t->live); /* never a timer that fired or was stopped */
  cancels++;
  if (t != NULL)
    t->live = 0;
}

static const h3g_timer_ops ops = {.start = t_start, .cancel = t_cancel};

static int live_timers(void) {
  int n = 0;
  for (size_t i = 0; i < 8; i++)
    n += timers[i].live;
  return n;
}

/* Fires t as the loop would: it is released before its callback runs. */
static void fire(h3g_timer *t) {
  CHECK(t != NULL && t->live);
  if (t == NULL || !t->live)
    return;
  t->live = 0;
  fired++;
  t->cb(t->arg);
}

static void reset_timers(void) {
  memset(timers, 0, sizeof(timers));
  starts = cancels = fired = refuse_start = 0;
  loop_seen = NULL;
}

/* ---- what the bridge would do ------------------------------------------ */

static int releases; /* bodies released by the timer */

static void on_timeout(void *arg) {
  if (h3g_expect_timed_out(arg))
    releases++;
}

static h3g_headers fields;

static h3g_expect asked_with(const char *name, const char *value) {
  h3g_headers_free(&fields);
  h3g_headers_init(&fields, 65536);
  h3g_headers_add(&fields, (const uint8_t *)":method", 7,
                  (const uint8_t *)"PUT", 3);
  if (name != NULL)
    h3g_headers_add(&fields, (const uint8_t *)name, strlen(name),
                    (const uint8_t *)value, strlen(value));
  h3g_expect x = {0};
  h3g_expect_on_head(&x, &fields);
  return x;
}

static void hold(h3g_expect *x, int body_follows) {
  h3g_expect_hold(x, body_follows, &ops, (void *)&ops, 1500, on_timeout, x);
}

/* ---- cases ------------------------------------------------------------- */

/* The Expect field's value is case-insensitive; only 100-continue counts. */
static void test_on_head(void) {
  CHECK_EQ_INT(asked_with("expect", "100-continue").asked, 1);
  CHECK_EQ_INT(asked_with("expect", "100-Continue").asked, 1);
  CHECK_EQ_INT(asked_with("Expect", "100-CONTINUE").asked, 1);
  CHECK_EQ_INT(asked_with(NULL, NULL).asked, 0);
  CHECK_EQ_INT(asked_with("expect", "").asked, 0);
  CHECK_EQ_INT(asked_with("expect", "100-continued").asked, 0);
  CHECK_EQ_INT(asked_with("expect", "100-contin").asked, 0);
  CHECK_EQ_INT(asked_with("expect", "200-continue").asked, 0);
  CHECK_EQ_INT(asked_with("x-expect", "100-continue").asked, 0);
}

/* Held from the connection until the 100, which releases it and stops the
 * timer. */
static void test_hold_until_100(void) {
  reset_timers();
  h3g_expect x = asked_with("expect", "100-continue");
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  hold(&x, 1);
  CHECK_EQ_INT(x.hold, 1);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 1);
  CHECK_EQ_INT(starts, 1);
  CHECK(x.timer != NULL);
  if (x.timer != NULL)
    CHECK_EQ_INT(x.timer->ms, 1500);
  CHECK(loop_seen == (void *)&ops);
  /* A second connection of the same request: the hold stands, no second
   * timer. */
  hold(&x, 1);
  CHECK_EQ_INT(starts, 1);
  CHECK_EQ_INT(h3g_expect_answered(&x, 100, &ops), 1);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  CHECK(x.timer == NULL);
  CHECK_EQ_INT(x.refused, 0);
  /* The final status after the body went: nothing more to release. */
  CHECK_EQ_INT(h3g_expect_answered(&x, 200, &ops), 0);
  CHECK_EQ_INT(x.refused, 0);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  CHECK_EQ_INT(starts, 1);
  CHECK_EQ_INT(cancels, 1);
  CHECK_EQ_INT(fired, 0);
  CHECK_EQ_INT(live_timers(), 0);
}

/* A final status before any 100 refuses the body for good, even on
 * another connection. */
static void test_final_status_refuses_body(void) {
  const int finals[] = {200, 302, 401, 413, 417, 500};
  for (size_t i = 0; i < sizeof(finals) / sizeof(finals[0]); i++) {
    reset_timers();
    h3g_expect x = asked_with("expect", "100-continue");
    hold(&x, 1);
    CHECK_EQ_INT(h3g_expect_answered(&x, finals[i], &ops), 0);
    CHECK_EQ_INT(x.refused, 1);
    CHECK_EQ_INT(x.hold, 0);
    CHECK_EQ_INT(h3g_expect_blocks_body(&x), 1);
    CHECK(x.timer == NULL);
    hold(&x, 1);
    CHECK_EQ_INT(x.hold, 0);
    CHECK_EQ_INT(h3g_expect_blocks_body(&x), 1);
    CHECK_EQ_INT(h3g_expect_answered(&x, 100, &ops), 0);
    CHECK_EQ_INT(h3g_expect_blocks_body(&x), 1);
    CHECK_EQ_INT(starts, 1);
    CHECK_EQ_INT(cancels, 1);
    CHECK_EQ_INT(live_timers(), 0);
  }
}

/* No 100 in time: the timer releases the body, and is not cancelled after
 * it fired. */
static void test_timeout_releases(void) {
  reset_timers();
  releases = 0;
  h3g_expect x = asked_with("expect", "100-continue");
  hold(&x, 1);
  h3g_timer *t = x.timer;
  fire(t);
  CHECK_EQ_INT(releases, 1);
  CHECK_EQ_INT(x.hold, 0);
  CHECK(x.timer == NULL);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  /* A late 100, then the end of the exchange: nothing to do, no cancel of
   * the timer that already ran. */
  CHECK_EQ_INT(h3g_expect_answered(&x, 100, &ops), 0);
  h3g_expect_cancel(&x, &ops);
  CHECK_EQ_INT(starts, 1);
  CHECK_EQ_INT(fired, 1);
  CHECK_EQ_INT(cancels, 0);
  CHECK_EQ_INT(releases, 1);
  CHECK_EQ_INT(live_timers(), 0);
}

/* The exchange ends while held: the timer is stopped once and never
 * fires. */
static void test_cancel(void) {
  reset_timers();
  releases = 0;
  h3g_expect x = asked_with("expect", "100-continue");
  hold(&x, 1);
  h3g_expect_cancel(&x, &ops);
  CHECK(x.timer == NULL);
  h3g_expect_cancel(&x, &ops);
  h3g_expect_cancel(&x, NULL);
  CHECK_EQ_INT(starts, 1);
  CHECK_EQ_INT(cancels, 1);
  CHECK_EQ_INT(fired, 0);
  CHECK_EQ_INT(releases, 0);
  CHECK_EQ_INT(live_timers(), 0);
  /* Without a hold there is nothing to stop. */
  h3g_expect none = asked_with(NULL, NULL);
  h3g_expect_cancel(&none, &ops);
  CHECK_EQ_INT(cancels, 1);
}

/* Nothing held when not asked, when no body follows, or without a timer
 * (no wait that could never end). */
static void test_no_hold(void) {
  reset_timers();
  h3g_expect x = asked_with(NULL, NULL);
  hold(&x, 1);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  CHECK_EQ_INT(h3g_expect_answered(&x, 417, &ops), 0);
  CHECK_EQ_INT(x.refused, 0);
  x = asked_with("expect", "100-continue");
  hold(&x, 0);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  CHECK_EQ_INT(starts, 0);

  h3g_expect_hold(&x, 1, NULL, NULL, 1500, on_timeout, &x);
  CHECK_EQ_INT(x.hold, 0);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  refuse_start = 1;
  hold(&x, 1);
  CHECK_EQ_INT(starts, 1);
  CHECK_EQ_INT(x.hold, 0);
  CHECK(x.timer == NULL);
  CHECK_EQ_INT(h3g_expect_blocks_body(&x), 0);
  CHECK_EQ_INT(cancels, 0);
  CHECK_EQ_INT(live_timers(), 0);
}

int main(void) {
  RUN(test_on_head);
  RUN(test_hold_until_100);
  RUN(test_final_status_refuses_body);
  RUN(test_timeout_releases);
  RUN(test_cancel);
  RUN(test_no_hold);
  h3g_headers_free(&fields);
  return unit_report();
}
