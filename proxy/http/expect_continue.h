/*
 * "Expect: 100-continue" (RFC 9110 §10.1.1): a client that asked it does
 * not want its body sent before the origin agreed. The bridge passes the
 * field on and holds the body back from the upstream until its 100
 * (Continue), a final answer (then the body is never sent), or
 * expect_continue_timeout_ms, since a client (here, the gateway) need not
 * wait for the 100 forever. The body still flows from the client into the
 * bridge's request ring meanwhile, within the usual credit.
 *
 * Bookkeeping only: timers come from the bridge's h3g_timer_ops; the
 * bridge writes the body when these functions say it may.
 */
#ifndef H3G_EXPECT_CONTINUE_H
#define H3G_EXPECT_CONTINUE_H

#include <stdint.h>

#include "bridge_timer.h"
#include "http_headers.h"

typedef struct h3g_expect {
  int asked;        /* the client sent "expect: 100-continue" */
  int hold;         /* body held until 100, a final head or timeout */
  int refused;      /* a final head came first: the body is not sent */
  h3g_timer *timer; /* expect_continue_timeout_ms, while held */
} h3g_expect;

/* Reads the request's Expect field (fields: its complete field section). */
void h3g_expect_on_head(h3g_expect *x, const h3g_headers *fields);

/*
 * The upstream connection is ready: if the client asked, a body is to
 * follow (body_follows) and none was refused or is held already, holds
 * the body and starts a timer of ms that calls cb(arg), where the bridge
 * calls h3g_expect_timed_out. Without timers (timers NULL, or none could
 * be made) nothing is held: better no wait than one that never ends.
 */
void h3g_expect_hold(h3g_expect *x, int body_follows,
                     const h3g_timer_ops *timers, void *loop, uint64_t ms,
                     void (*cb)(void *arg), void *arg);

/* The hold's timer fired. Returns 1 when the body is released by it (the
 * bridge writes it now), 0 when it was no longer held. */
int h3g_expect_timed_out(h3g_expect *x);

/*
 * The upstream answered with status (100, or a final status) while the
 * body may have been held. Returns 1 when a 100 released the body (the
 * bridge writes it now); a final status refuses it for good.
 */
int h3g_expect_answered(h3g_expect *x, int status, const h3g_timer_ops *timers);

/* 1 while no body byte may be written upstream: held, or refused. */
int h3g_expect_blocks_body(const h3g_expect *x);

/* Stops the timer, if any (the exchange ended). */
void h3g_expect_cancel(h3g_expect *x, const h3g_timer_ops *timers);

#endif /* H3G_EXPECT_CONTINUE_H */
