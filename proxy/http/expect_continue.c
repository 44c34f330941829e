/*
 * "Expect: 100-continue" (expect_continue.h).
 */
#include "expect_continue.h"

#include <strings.h>

void h3g_expect_on_head(h3g_expect *x, const h3g_headers *fields) {
  const h3g_field *ex = h3g_headers_find(fields, "expect");
  x->asked = ex != NULL && ex->valuelen == 12 &&
             strncasecmp((const char *)ex->value, "100-continue", 12) == 0;
}

void h3g_expect_hold(h3g_expect *x, int body_follows,
                     const h3g_timer_ops *timers, void *loop, uint64_t ms,
                     void (*cb)(void *arg), void *arg) {
  /* A running timer means a hold from an earlier connection of this
   * request still stands. */
  if (!x->asked || !body_follows || x->timer != NULL || x->refused)
    return;
  x->hold = 1;
  if (timers != NULL)
    x->timer = timers->start(loop, ms, cb, arg);
  if (x->timer == NULL)
    x->hold = 0; /* no timer: do not risk holding forever */
}

/* RFC 9110 §10.1.1: a client (here, we) need not wait for 100 forever. */
int h3g_expect_timed_out(h3g_expect *x) {
  x->timer = NULL;
  if (!x->hold)
    return 0;
  x->hold = 0;
  return 1;
}

/* 100 releases the body; a final status means the body is not wanted. */
int h3g_expect_answered(h3g_expect *x, int status,
                        const h3g_timer_ops *timers) {
  if (!x->hold)
    return 0;
  x->hold = 0;
  h3g_expect_cancel(x, timers);
  if (status >= 200) {
    x->refused = 1;
    return 0;
  }
  return 1;
}

int h3g_expect_blocks_body(const h3g_expect *x) {
  return x->hold || x->refused;
}

void h3g_expect_cancel(h3g_expect *x, const h3g_timer_ops *timers) {
  if (x->timer != NULL && timers != NULL)
    timers->cancel(x->timer);
  x->timer = NULL;
}
