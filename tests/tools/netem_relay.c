/*
 * netem_relay: the delay element of the e2e network emulator
 * (tests/e2e/testenv/netem.py). This kernel has no netem qdisc, so the
 * propagation delay of an emulated link is made here, in user space.
 *
 *   netem_relay [-d DELAY_US] [-q SLOTS] NETNS_A DEV_A NETNS_B DEV_B
 *
 * It enters network namespace NETNS_A (a name under /run/netns, or a path),
 * creates TUN device DEV_A there (IFF_TUN | IFF_NO_PI: bare IP packets, no
 * virtio-net header, so the kernel hands over one packet per read and never
 * a GSO batch), does the same for NETNS_B / DEV_B, and keeps both file
 * descriptors. Every packet read from one device is written to the other
 * DELAY_US microseconds later (the one-way delay, RTT / 2). Delay is
 * constant, so each direction is a FIFO of release times and packets are
 * never reordered. Loss and the rate limit are not done here: nftables and
 * tbf in the namespaces do them, so the relay only has to be fast and exact.
 *
 * Each direction holds at most SLOTS packets (default 8192; 2 KiB each,
 * allocated once at start, nothing per packet). A packet arriving at a
 * full line is dropped and counted, as a router drops at a full buffer;
 * the calibration checks this never happens at the rates benchmarked.
 *
 * Timing: one thread, epoll over both devices and a timerfd armed at the
 * earliest release time (CLOCK_MONOTONIC, absolute, timer slack 1 ns), so
 * wake-ups are not rounded to milliseconds. Reads are batched (at most
 * READ_BATCH per device per wake-up, so one busy direction cannot starve
 * the other or delay releases).
 *
 * Once both devices exist it prints "ready" on stdout; the caller then
 * configures addresses, routes and qdiscs. SIGTERM or SIGINT end it (the
 * devices vanish with their descriptors); it also ends when its parent
 * dies. SIGUSR1 prints the counters. Counters go to stderr as one line:
 *
 *   stats a2b rx=N tx=N full=N err=N late=N,...,N b2a rx=N ...
 *
 * (late: how many packets left less than 50, 100, 200, 500 us, 1, 2, 5 ms
 * after their release time, and later than that).
 *
 * Exit status: 0 after a signal, 1 on a setup error, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SLOT_SIZE 2048
/* Packets read from one device per wake-up: enough to amortise the
 * epoll_wait, few enough that releases due meanwhile are at most some
 * tens of microseconds late. */
#define READ_BATCH 32
#define DEFAULT_SLOTS 8192
#define MAX_SLOTS (1u << 20)
#define LATE_BINS 8

static const uint64_t late_edges_ns[LATE_BINS - 1] = {
    50000, 100000, 200000, 500000, 1000000, 2000000, 5000000};

struct line {
  int in_fd;  /* read packets here */
  int out_fd; /* and write them here, DELAY later */
  uint64_t *release_ns;
  uint16_t *len;
  unsigned char *data; /* cap * SLOT_SIZE */
  uint32_t cap, head, count;
  uint64_t rx, tx, full, err;
  /* How late packets left: counts below 50, 100, 200, 500 us, 1, 2, 5 ms,
   * and beyond. */
  uint64_t late[LATE_BINS];
};

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t stats_flag;

static void on_stop(int sig) {
  (void)sig;
  stop_flag = 1;
}

static void on_stats(int sig) {
  (void)sig;
  stats_flag = 1;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(void) {
  fprintf(stderr, "usage: netem_relay [-d DELAY_US] [-q SLOTS] "
                  "NETNS_A DEV_A NETNS_B DEV_B\n");
}

static int open_netns(const char *name) {
  char path[4096];
  if (strchr(name, '/'))
    snprintf(path, sizeof(path), "%s", name);
  else
    snprintf(path, sizeof(path), "/run/netns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fprintf(stderr, "netem_relay: open %s: %s\n", path, strerror(errno));
  return fd;
}

/* Creates TUN device dev inside the network namespace at ns and returns
 * its non-blocking descriptor, or -1. The calling thread is back in the
 * namespace at home when it returns. */
static int make_tun(int home, const char *ns, const char *dev) {
  int nsfd = open_netns(ns);
  if (nsfd < 0)
    return -1;
  if (setns(nsfd, CLONE_NEWNET) != 0) {
    fprintf(stderr, "netem_relay: setns %s: %s\n", ns, strerror(errno));
    close(nsfd);
    return -1;
  }
  close(nsfd);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "netem_relay: /dev/net/tun: %s\n", strerror(errno));
  } else {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
      fprintf(stderr, "netem_relay: TUNSETIFF %s in %s: %s\n", dev, ns,
              strerror(errno));
      close(fd);
      fd = -1;
    }
  }
  if (setns(home, CLONE_NEWNET) != 0) {
    fprintf(stderr, "netem_relay: setns back: %s\n", strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static int line_init(struct line *l, int in_fd, int out_fd, uint32_t cap) {
  *l = (struct line){.in_fd = in_fd, .out_fd = out_fd, .cap = cap};
  l->release_ns = calloc(cap, sizeof(*l->release_ns));
  l->len = calloc(cap, sizeof(*l->len));
  l->data = malloc((size_t)cap * SLOT_SIZE);
  if (!l->release_ns || !l->len || !l->data)
    return -1;
  /* Touch the buffer now, so page faults do not land in the timed path. */
  memset(l->data, 0, (size_t)cap * SLOT_SIZE);
  return 0;
}

static void line_free(struct line *l) {
  free(l->release_ns);
  free(l->len);
  free(l->data);
}

/* Reads up to READ_BATCH packets from l->in_fd into the line. */
static void line_read(struct line *l, uint64_t delay_ns) {
  static unsigned char scratch[SLOT_SIZE];
  for (int i = 0; i < READ_BATCH; i++) {
    unsigned char *dst = scratch;
    uint32_t tail = 0;
    if (l->count < l->cap) {
      tail = (l->head + l->count) % l->cap;
      dst = l->data + (size_t)tail * SLOT_SIZE;
    }
    ssize_t n = read(l->in_fd, dst, SLOT_SIZE);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        l->err++;
      return;
    }
    if (n == 0)
      return;
    l->rx++;
    if (dst == scratch) {
      l->full++;
      continue;
    }
    l->release_ns[tail] = now_ns() + delay_ns;
    l->len[tail] = (uint16_t)n;
    l->count++;
  }
}

/* Writes every packet whose release time has come. Returns the release
 * time of the next packet, or 0 when the line is empty. */
static uint64_t line_release(struct line *l) {
  while (l->count > 0) {
    uint32_t h = l->head;
    uint64_t now = now_ns();
    if (l->release_ns[h] > now)
      return l->release_ns[h];
    ssize_t n = write(l->out_fd, l->data + (size_t)h * SLOT_SIZE, l->len[h]);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == ENOBUFS))
      return now + 50000; /* the receiving stack is busy: retry soon */
    if (n < 0) {
      l->err++;
    } else {
      l->tx++;
      uint64_t late = now - l->release_ns[h];
      int b = 0;
      while (b < LATE_BINS - 1 && late >= late_edges_ns[b])
        b++;
      l->late[b]++;
    }
    l->head = (h + 1) % l->cap;
    l->count--;
  }
  return 0;
}

static void print_line(const char *name, const struct line *l) {
  fprintf(stderr, " %s rx=%llu tx=%llu full=%llu err=%llu late=", name,
          (unsigned long long)l->rx, (unsigned long long)l->tx,
          (unsigned long long)l->full, (unsigned long long)l->err);
  for (int b = 0; b < LATE_BINS; b++)
    fprintf(stderr, "%s%llu", b ? "," : "", (unsigned long long)l->late[b]);
}

static void print_stats(const struct line *ab, const struct line *ba) {
  fputs("stats", stderr);
  print_line("a2b", ab);
  print_line("b2a", ba);
  fputc('\n', stderr);
  fflush(stderr);
}

static int arm(int tfd, uint64_t at_ns) {
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  its.it_value.tv_sec = (time_t)(at_ns / 1000000000u);
  its.it_value.tv_nsec = (long)(at_ns % 1000000000u);
  return timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static int relay(struct line *ab, struct line *ba, uint64_t delay_ns) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep < 0 || tfd < 0) {
    fprintf(stderr, "netem_relay: epoll/timerfd: %s\n", strerror(errno));
    return 1;
  }
  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.ptr = ab;
  epoll_ctl(ep, EPOLL_CTL_ADD, ab->in_fd, &ev);
  ev.data.ptr = ba;
  epoll_ctl(ep, EPOLL_CTL_ADD, ba->in_fd, &ev);
  ev.data.ptr = NULL;
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

  uint64_t armed = 0;
  while (!stop_flag) {
    if (stats_flag) {
      stats_flag = 0;
      print_stats(ab, ba);
    }
    uint64_t n1 = line_release(ab);
    uint64_t n2 = line_release(ba);
    uint64_t next = n1 == 0 ? n2 : (n2 == 0 || n1 < n2 ? n1 : n2);
    if (next != 0 && next != armed) {
      if (arm(tfd, next) != 0) {
        fprintf(stderr, "netem_relay: timerfd_settime: %s\n",
                strerror(errno));
        return 1;
      }
      armed = next;
    }
    struct epoll_event evs[4];
    int n = epoll_wait(ep, evs, 4, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "netem_relay: epoll_wait: %s\n", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      struct line *l = evs[i].data.ptr;
      if (l == NULL) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof(expirations)) < 0 &&
            errno != EAGAIN)
          return 1;
        armed = 0;
        continue;
      }
      line_read(l, delay_ns);
    }
  }
  close(tfd);
  close(ep);
  return 0;
}

int main(int argc, char **argv) {
  unsigned long delay_us = 0;
  unsigned long slots = DEFAULT_SLOTS;
  int opt;
  while ((opt = getopt(argc, argv, "d:q:")) != -1) {
    char *end;
    switch (opt) {
    case 'd':
      delay_us = strtoul(optarg, &end, 10);
      if (*end || delay_us > 10000000ul) {
        usage();
        return 2;
      }
      break;
    case 'q':
      slots = strtoul(optarg, &end, 10);
      if (*end || slots < 16 || slots > MAX_SLOTS) {
        usage();
        return 2;
      }
      break;
    default:
      usage();
      return 2;
    }
  }
  if (argc - optind != 4) {
    usage();
    return 2;
  }
  const char *ns_a = argv[optind], *dev_a = argv[optind + 1];
  const char *ns_b = argv[optind + 2], *dev_b = argv[optind + 3];

  /* The relay must not outlive the emulator that started it. */
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent)
    return 1;
  prctl(PR_SET_TIMERSLACK, 1ul);

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_stats;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) {
    fprintf(stderr, "netem_relay: /proc/self/ns/net: %s\n", strerror(errno));
    return 1;
  }
  int fd_a = make_tun(home, ns_a, dev_a);
  int fd_b = fd_a < 0 ? -1 : make_tun(home, ns_b, dev_b);
  close(home);
  if (fd_a < 0 || fd_b < 0)
    return 1;

  struct line ab, ba;
  if (line_init(&ab, fd_a, fd_b, (uint32_t)slots) != 0 ||
      line_init(&ba, fd_b, fd_a, (uint32_t)slots) != 0) {
    fprintf(stderr, "netem_relay: out of memory\n");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);

  int rc = relay(&ab, &ba, (uint64_t)delay_us * 1000u);
  print_stats(&ab, &ba);
  line_free(&ab);
  line_free(&ba);
  close(fd_a);
  close(fd_b);
  return rc;
}
