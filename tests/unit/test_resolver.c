/*
 * resolver on a real loop, in libuv's test style: each case drives the
 * resolver from timer callbacks, runs the loop until every handle is
 * closed, then asserts the totals. DNS answers that change or fail are
 * stood for by the test hook; "localhost" and literal addresses are the
 * only names looked up.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "resolver.h"
#include "unit.h"

static uv_loop_t loop;

/* ---- harness ------------------------------------------------------------- */

static struct {
  h3g_resolver *r;
  uv_timer_t step, watchdog;
  void (*step_fn)(void);
  int changes; /* on_change calls */
  int closed;  /* close callbacks */
  int close_arg_ok;
  void (*on_change_fn)(void);
} g;

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "watchdog: test case hung\n");
  abort();
}

static void on_step(uv_timer_t *t) {
  (void)t;
  g.step_fn();
}

static void after(uint64_t ms, void (*fn)(void)) {
  g.step_fn = fn;
  uv_timer_start(&g.step, on_step, ms, 0);
}

static void begin(void) {
  memset(&g, 0, sizeof(g));
  uv_loop_init(&loop);
  uv_timer_init(&loop, &g.step);
  uv_timer_init(&loop, &g.watchdog);
  uv_timer_start(&g.watchdog, on_watchdog, 10000, 0);
  uv_unref((uv_handle_t *)&g.watchdog);
}

static void on_change(void *arg) {
  CHECK(arg == &g);
  g.changes++;
  if (g.on_change_fn != NULL)
    g.on_change_fn();
}

static int make(const char *host, uint16_t port, uint64_t interval_ms) {
  h3g_resolver_config cfg = {.host = host,
                             .port = port,
                             .name = "app",
                             .interval_ms = interval_ms,
                             .on_change = on_change,
                             .arg = &g};
  int rv = h3g_resolver_new(&g.r, &loop, &cfg);
  CHECK_EQ_INT(rv, 0);
  return rv;
}

static void on_closed(void *arg) {
  g.close_arg_ok = arg == &g;
  g.closed++;
  /* Still readable from inside the callback. */
  CHECK(h3g_resolver_address(g.r)[0] != '\0');
  g.r = NULL;
}

static void finish(void) {
  h3g_resolver_close(g.r, on_closed, &g);
}

static void end(void) {
  uv_close((uv_handle_t *)&g.step, NULL);
  uv_close((uv_handle_t *)&g.watchdog, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void run_and_end(void) {
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(g.closed, 1);
  CHECK_EQ_INT(g.close_arg_ok, 1);
  end();
}

static h3g_resolver_stats stats(void) {
  h3g_resolver_stats st;
  h3g_resolver_get_stats(g.r, &st);
  return st;
}

/*
 * Diagnostics go to stderr: a case that checks what was logged sends them
 * to a file for its duration.
 */
static FILE *log_file;
static int saved_stderr = -1;

static void log_capture_start(void) {
  log_file = tmpfile();
  CHECK(log_file != NULL);
  fflush(stderr);
  saved_stderr = dup(STDERR_FILENO);
  dup2(fileno(log_file), STDERR_FILENO);
}

/* Stops capturing; returns how many lines captured contain needle. */
static int log_count(const char *needle) {
  char line[512];
  int n = 0;
  rewind(log_file);
  while (fgets(line, sizeof(line), log_file) != NULL)
    if (strstr(line, needle) != NULL)
      n++;
  return n;
}

static void log_capture_end(void) {
  fflush(stderr);
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  /* Shown, so that a failing case still tells what was logged. */
  char line[512];
  rewind(log_file);
  while (fgets(line, sizeof(line), log_file) != NULL)
    fputs(line, stderr);
  fclose(log_file);
  log_file = NULL;
}

/* ---- creation ------------------------------------------------------------ */

static void on_closed_plain(void *arg) {
  (void)arg;
  g.closed++;
}

/* Argument checks, addresses as text and as sockaddr, and a close callback
 * that comes from the loop, never from inside the call. */
static void test_new(void) {
  h3g_resolver *r = (h3g_resolver *)&g; /* must be reset */
  h3g_resolver_config cfg = {.host = NULL, .port = 80};
  begin();
  CHECK_EQ_INT(h3g_resolver_new(&r, &loop, &cfg), H3G_ERR_INVAL);
  CHECK(r == NULL);
  cfg.host = "";
  CHECK_EQ_INT(h3g_resolver_new(&r, &loop, &cfg), H3G_ERR_INVAL);
  cfg.host = "127.0.0.1";
  CHECK_EQ_INT(h3g_resolver_new(&r, NULL, &cfg), H3G_ERR_INVAL);
  CHECK_EQ_INT(h3g_resolver_new(&r, &loop, NULL), H3G_ERR_INVAL);

  cfg = (h3g_resolver_config){.host = "127.0.0.1", .port = 8080};
  CHECK_EQ_INT(h3g_resolver_new(&r, &loop, &cfg), 0);
  if (r != NULL) {
    CHECK(strcmp(h3g_resolver_address(r), "127.0.0.1:8080") == 0);
    const struct sockaddr *sa = h3g_resolver_sockaddr(r);
    CHECK_EQ_INT(sa->sa_family, AF_INET);
    CHECK_EQ_INT(h3g_sockaddr_port(sa), 8080);
    h3g_resolver_close(r, on_closed_plain, NULL);
    CHECK_EQ_INT(g.closed, 0);
  }
  cfg.host = "::1";
  r = NULL;
  CHECK_EQ_INT(h3g_resolver_new(&r, &loop, &cfg), 0);
  if (r != NULL) {
    CHECK(strcmp(h3g_resolver_address(r), "[::1]:8080") == 0);
    CHECK_EQ_INT(h3g_resolver_sockaddr(r)->sa_family, AF_INET6);
    h3g_resolver_close(r, NULL, NULL); /* no callback wanted */
  }
  /* A name (localhost may not resolve in a bare chroot: a failed check). */
  cfg.host = "localhost";
  r = NULL;
  CHECK_EQ_INT(h3g_resolver_new(&r, &loop, &cfg), 0);
  if (r != NULL) {
    CHECK(strstr(h3g_resolver_address(r), ":8080") != NULL);
    h3g_resolver_close(r, on_closed_plain, NULL);
  }
  h3g_resolver_close(NULL, on_closed_plain, NULL); /* no-op */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(g.closed, 2);
  end();
}

/* ---- re-resolution ------------------------------------------------------- */

static void interval_wait(void) {
  h3g_resolver_stats st = stats();
  if (st.resolutions < 3) {
    after(5, interval_wait);
    return;
  }
  CHECK_EQ_INT(st.failures, 0);
  CHECK_EQ_INT(g.changes, 0); /* localhost stays where it is */
  finish();
}

/* A name is resolved again every interval, asynchronously; a literal
 * address never is (no timer keeps the loop alive), nor is a name with
 * interval 0. */
static void test_interval(void) {
  begin();
  if (make("127.0.0.1", 80, 5) != 0) {
    end();
    return;
  }
  CHECK(!uv_loop_alive(&loop));
  finish();
  run_and_end();

  begin();
  if (make("localhost", 80, 0) != 0) {
    end();
    return;
  }
  CHECK(!uv_loop_alive(&loop));
  finish();
  run_and_end();

  begin();
  if (make("localhost", 80, 5) != 0) {
    end();
    return;
  }
  CHECK(uv_loop_alive(&loop));
  CHECK_EQ_INT(stats().resolutions, 0); /* creation is not counted */
  after(5, interval_wait);
  run_and_end();
}

/*
 * The answer changes, fails, comes back and changes again (the hook stands
 * for DNS): on_change comes for a change only, after the address was
 * taken; a failure keeps the address and is logged once; on_change may
 * close the resolver.
 */
enum {
  PHASE_SAME,    /* the answer is the current address */
  PHASE_B,       /* it moves to B */
  PHASE_FAIL,    /* two lookups fail */
  PHASE_B_AGAIN, /* B again: no change, "resolves again" */
  PHASE_C,       /* it moves to C; on_change closes the resolver */
};
static int phase;
static struct sockaddr_storage addr_same, addr_b, addr_c;
static uint64_t resolutions_seen;

static int change_hook(void *arg, int status, struct sockaddr_storage *a) {
  CHECK(arg == &g);
  CHECK_EQ_INT(status, 0);
  switch (phase) {
  case PHASE_SAME: *a = addr_same; return 0;
  case PHASE_B:
  case PHASE_B_AGAIN: *a = addr_b; return 0;
  case PHASE_FAIL: return H3G_ERR_NOTFOUND;
  default: *a = addr_c; return 0;
  }
}

static void close_from_on_change(void) {
  CHECK(strcmp(h3g_resolver_address(g.r), "127.0.0.3:82") == 0);
  uv_timer_stop(&g.step);
  finish();
}

static void change_step(void);

/* Runs change_step once a lookup newer than resolutions_seen ended. */
static void await_resolution(void) {
  if (stats().resolutions <= resolutions_seen) {
    after(2, await_resolution);
    return;
  }
  resolutions_seen = stats().resolutions;
  change_step();
}

static void change_step(void) {
  h3g_resolver_stats st = stats();
  switch (phase) {
  case PHASE_SAME:
    CHECK_EQ_INT(g.changes, 0);
    phase = PHASE_B;
    break;
  case PHASE_B: {
    CHECK_EQ_INT(g.changes, 1);
    CHECK(strcmp(h3g_resolver_address(g.r), "127.0.0.2:81") == 0);
    const struct sockaddr_in *sin =
        (const struct sockaddr_in *)h3g_resolver_sockaddr(g.r);
    CHECK_EQ_INT(sin->sin_family, AF_INET);
    CHECK_EQ_INT(ntohs(sin->sin_port), 81);
    phase = PHASE_FAIL;
    break;
  }
  case PHASE_FAIL:
    CHECK_EQ_INT(g.changes, 1);
    CHECK(strcmp(h3g_resolver_address(g.r), "127.0.0.2:81") == 0);
    if (st.failures < 2)
      break;
    phase = PHASE_B_AGAIN;
    break;
  case PHASE_B_AGAIN:
    CHECK_EQ_INT(g.changes, 1);
    CHECK_EQ_INT(st.failures, 2);
    g.on_change_fn = close_from_on_change;
    phase = PHASE_C;
    break;
  default:
    CHECK(0); /* the resolver was closed from on_change */
    return;
  }
  after(0, await_resolution);
}

static void test_change(void) {
  phase = PHASE_SAME;
  resolutions_seen = 0;
  begin();
  if (make("localhost", 80, 5) != 0) {
    end();
    return;
  }
  memset(&addr_same, 0, sizeof(addr_same));
  memcpy(&addr_same, h3g_resolver_sockaddr(g.r),
         h3g_resolver_sockaddr(g.r)->sa_family == AF_INET6
             ? sizeof(struct sockaddr_in6)
             : sizeof(struct sockaddr_in));
  uv_ip4_addr("127.0.0.2", 81, (struct sockaddr_in *)&addr_b);
  uv_ip4_addr("127.0.0.3", 82, (struct sockaddr_in *)&addr_c);
  char first[64];
  snprintf(first, sizeof(first), "%s", h3g_resolver_address(g.r));
  h3g_resolver_set_hook(g.r, change_hook, &g);
  log_capture_start();
  after(0, await_resolution);
  run_and_end();
  char want[160];
  snprintf(want, sizeof(want),
           "upstream app: localhost now resolves to 127.0.0.2:81 (was %s)",
           first);
  CHECK_EQ_INT(log_count(want), 1);
  CHECK_EQ_INT(log_count("upstream app: localhost now resolves to "
                         "127.0.0.3:82 (was 127.0.0.2:81)"),
               1);
  CHECK_EQ_INT(log_count("upstream app: cannot resolve localhost (no usable "
                         "address); keeping 127.0.0.2:81"),
               1);
  CHECK_EQ_INT(log_count("upstream app: localhost resolves again"), 1);
  log_capture_end();
  CHECK_EQ_INT(g.changes, 2);
}

/* ---- closing while a lookup is in flight --------------------------------- */

/*
 * getaddrinfo, interposed for this whole test program (libuv's worker
 * threads call it through the dynamic linker): when gai_hold is set, the
 * next lookup, wherever it runs, waits until the test lets it go. So a
 * resolver can be closed while its lookup is running on a worker thread.
 */
static int gai_hold;
static uv_sem_t gai_entered, gai_go;

int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res) {
  typedef int gai_fn(const char *, const char *, const struct addrinfo *,
                     struct addrinfo **);
  static gai_fn *real;
  if (real == NULL)
    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
  if (__atomic_exchange_n(&gai_hold, 0, __ATOMIC_SEQ_CST)) {
    uv_sem_post(&gai_entered);
    uv_sem_wait(&gai_go);
  }
  return real(node, service, hints, res);
}

/*
 * Closing a resolver while its lookup is in flight: it waits for the
 * getaddrinfo callback before its close callback and its freeing. Three
 * ways: the lookup is still queued behind a busy worker thread (uv_cancel
 * succeeds), it is running (uv_cancel fails; the callback comes when it
 * returns), or it already ran and only its callback is pending (uv_cancel
 * fails).
 */
enum { INFLIGHT_RAN, INFLIGHT_QUEUED, INFLIGHT_RUNNING };
static uv_sem_t blocker_sem;
static uv_work_t blocker, marker;
static int blocker_released, blocker_done, marker_done;
static volatile int marker_ran;

static void on_blocker_work(uv_work_t *w) {
  (void)w;
  uv_sem_wait(&blocker_sem);
}

static void on_blocker_done(uv_work_t *w, int status) {
  (void)w;
  (void)status;
  blocker_done++;
}

static void on_marker_work(uv_work_t *w) {
  (void)w;
  __atomic_store_n(&marker_ran, 1, __ATOMIC_SEQ_CST);
}

static void on_marker_done(uv_work_t *w, int status) {
  (void)w;
  (void)status;
  marker_done++;
}

static void release_blocker(void) {
  if (!blocker_released) {
    blocker_released = 1;
    uv_sem_post(&blocker_sem);
  }
}

static void on_inflight_closed(void *arg) {
  /* The cancelled lookup did not have to run: its thread is still held. */
  CHECK_EQ_INT(blocker_released, 0);
  uv_timer_stop(&g.step);
  release_blocker();
  on_closed(arg);
}

static void close_in_flight_queued(void) {
  CHECK_EQ_INT(stats().resolving, 1);
  h3g_resolver_close(g.r, on_inflight_closed, &g);
  /* Should the cancel fail, the lookup waits for the thread: free it
   * later, and the check in the close callback fails. */
  after(2000, release_blocker);
}

static int lookup_released;

static void let_lookup_go(void) {
  lookup_released = 1;
  uv_sem_post(&gai_go);
}

static void on_running_closed(void *arg) {
  /* Not before the running lookup returned and its callback ran. */
  CHECK_EQ_INT(lookup_released, 1);
  on_closed(arg);
}

static void close_in_flight_running(void) {
  CHECK_EQ_INT(stats().resolving, 1);
  uv_sem_wait(&gai_entered); /* the lookup runs, held, on the worker */
  h3g_resolver_close(g.r, on_running_closed, &g);
  /* The timer's close callback runs before this. */
  after(20, let_lookup_go);
}

static void close_in_flight_ran(void) {
  CHECK_EQ_INT(stats().resolving, 1);
  /* One worker thread, FIFO: once the marker ran, the lookup is done. */
  uv_queue_work(&loop, &marker, on_marker_work, on_marker_done);
  while (!__atomic_load_n(&marker_ran, __ATOMIC_SEQ_CST))
    uv_sleep(1);
  CHECK_EQ_INT(stats().resolving, 1); /* its callback has not run */
  finish();
}

static void inflight_case(int how) {
  int queued = how == INFLIGHT_QUEUED;
  blocker_released = blocker_done = marker_done = 0;
  marker_ran = 0;
  lookup_released = 0;
  begin();
  if (queued) {
    CHECK_EQ_INT(uv_sem_init(&blocker_sem, 0), 0);
    uv_queue_work(&loop, &blocker, on_blocker_work, on_blocker_done);
  }
  if (make("localhost", 80, 20) != 0) {
    if (queued)
      release_blocker();
    end();
    return;
  }
  if (how == INFLIGHT_RUNNING) {
    CHECK_EQ_INT(uv_sem_init(&gai_entered, 0), 0);
    CHECK_EQ_INT(uv_sem_init(&gai_go, 0), 0);
    gai_hold = 1; /* after the resolver's own synchronous lookup */
  }
  /* Due at the same time as the resolver's timer and started after it:
   * runs right after the lookup was submitted. */
  after(20, how == INFLIGHT_QUEUED    ? close_in_flight_queued
            : how == INFLIGHT_RUNNING ? close_in_flight_running
                                      : close_in_flight_ran);
  run_and_end();
  CHECK_EQ_INT(g.changes, 0);
  if (how == INFLIGHT_QUEUED) {
    CHECK_EQ_INT(blocker_done, 1);
    uv_sem_destroy(&blocker_sem);
  } else if (how == INFLIGHT_RAN) {
    CHECK_EQ_INT(marker_done, 1);
  } else {
    CHECK_EQ_INT(lookup_released, 1);
    uv_sem_destroy(&gai_entered);
    uv_sem_destroy(&gai_go);
  }
}

static void test_close_in_flight(void) {
  inflight_case(INFLIGHT_QUEUED);
  inflight_case(INFLIGHT_RAN);
  inflight_case(INFLIGHT_RUNNING);
}

int main(void) {
  /* One worker thread makes the order of lookups and other work known
   * (test_close_in_flight). */
  setenv("UV_THREADPOOL_SIZE", "1", 1);
  if (getenv("H3G_TEST_DEBUG") != NULL)
    h3g_log_set_level(H3G_LOG_DEBUG);
  RUN(test_new);
  RUN(test_interval);
  RUN(test_change);
  RUN(test_close_in_flight);
  return unit_report();
}
