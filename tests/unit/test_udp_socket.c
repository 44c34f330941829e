#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string.h>

#include "metrics.h"
#include "udp_socket.h"
#include "unit.h"

/* A plain UDP socket on 127.0.0.1, the peer of the socket under test. */
static int peer_open(struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  socklen_t len = sizeof(*addr);
  *addr = (struct sockaddr_in){.sin_family = AF_INET};
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)addr, sizeof(*addr));
  getsockname(fd, (struct sockaddr *)addr, &len);
  return fd;
}

static void queue(h3g_udp_socket *s, const struct sockaddr_in *to, size_t len,
                  uint8_t ecn, uint8_t fill) {
  uint8_t *p = h3g_udp_tx_reserve(s, 1500);
  CHECK(p != NULL);
  if (p == NULL)
    return;
  memset(p, fill, len);
  h3g_udp_tx_commit(s, NULL, 0, (const struct sockaddr *)to, sizeof(*to), ecn,
                    len);
}

static void test_send_groups_runs(void) {
  h3g_udp_socket s;
  struct sockaddr_in to;
  int peer = peer_open(&to);

  CHECK_EQ_INT(h3g_udp_open(&s, "127.0.0.1", 0), 0);
  for (int i = 0; i < 10; i++)
    queue(&s, &to, 1200, 0, (uint8_t)i);
  queue(&s, &to, 500, 0, 10);  /* a shorter datagram ends the run */
  queue(&s, &to, 1200, 0, 11); /* so this one starts a new run */
  queue(&s, &to, 1200, 2, 12); /* another ECN codepoint: new run */
  CHECK_EQ_INT(s.nruns, 3);
  CHECK_EQ_INT(h3g_udp_tx_flush(&s), 0);
  CHECK(h3g_udp_tx_empty(&s));

  uint8_t buf[2048];
  for (int i = 0; i < 13; i++) {
    struct pollfd pfd = {.fd = peer, .events = POLLIN};
    CHECK_EQ_INT(poll(&pfd, 1, 1000), 1);
    ssize_t n = recv(peer, buf, sizeof(buf), 0);
    CHECK_EQ_INT(n, i == 10 ? 500 : 1200);
    CHECK_EQ_INT(buf[0], i);
  }
  h3g_udp_close(&s);
  close(peer);
}

static void test_recv_reports_addresses_and_ecn(void) {
  h3g_udp_socket s;
  struct sockaddr_in from;
  int peer = peer_open(&from);
  int tos = 0x02; /* ECT(0) */

  CHECK_EQ_INT(h3g_udp_open(&s, "127.0.0.1", 0), 0);
  setsockopt(peer, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
  sendto(peer, "hello", 5, 0, &s.bound.su.sa, s.bound.len);
  struct pollfd pfd = {.fd = s.fd, .events = POLLIN};
  CHECK_EQ_INT(poll(&pfd, 1, 1000), 1);
  CHECK_EQ_INT(h3g_udp_recv(&s), 1);
  const h3g_udp_msg *m = &s.rx_msgs[0];
  CHECK_MEM(m->data, m->len, "hello");
  CHECK_EQ_INT(m->segsize, 5);
  CHECK_EQ_INT(m->ecn, 2);
  CHECK_EQ_INT(m->remote.su.in.sin_port, from.sin_port);
  CHECK_EQ_INT(m->local.su.sa.sa_family, AF_INET);
  CHECK_EQ_INT(m->local.su.in.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  CHECK_EQ_INT(m->local.su.in.sin_port, s.bound.su.in.sin_port);
  CHECK_EQ_INT(h3g_udp_recv(&s), 0); /* nothing more */

  char text[64];
  h3g_udp_addr_format(&m->local.su.sa, text, sizeof(text));
  CHECK(strncmp(text, "127.0.0.1:", 10) == 0);
  h3g_udp_close(&s);
  close(peer);
}

/* Socket to socket: with GSO and GRO the run may arrive as one message of
 * several segments; either way the datagrams come out whole. */
static void test_gso_to_gro(void) {
  h3g_udp_socket a, b;
  CHECK_EQ_INT(h3g_udp_open(&a, "127.0.0.1", 0), 0);
  CHECK_EQ_INT(h3g_udp_open(&b, "127.0.0.1", 0), 0);
  for (int i = 0; i < 5; i++)
    queue(&a, &b.bound.su.in, i == 4 ? 700 : 1200, 0, (uint8_t)(i + 1));
  CHECK_EQ_INT(a.nruns, 1);
  CHECK_EQ_INT(h3g_udp_tx_flush(&a), 0);

  int seen = 0;
  size_t total = 0;
  while (seen < 5) {
    struct pollfd pfd = {.fd = b.fd, .events = POLLIN};
    if (poll(&pfd, 1, 1000) != 1)
      break;
    int n = h3g_udp_recv(&b);
    for (int i = 0; i < n; i++) {
      const h3g_udp_msg *m = &b.rx_msgs[i];
      for (size_t off = 0; off < m->len; off += m->segsize) {
        size_t len = H3G_MIN(m->segsize, m->len - off);
        seen++;
        CHECK_EQ_INT(m->data[off], seen);
        CHECK_EQ_INT(len, seen == 5 ? 700 : 1200);
        total += len;
      }
    }
  }
  CHECK_EQ_INT(seen, 5);
  CHECK_EQ_INT(total, 4 * 1200 + 700);
  h3g_udp_close(&a);
  h3g_udp_close(&b);
}

/* A socket shut down under us (by another holder of the descriptor) is
 * dead for good: the flush says so, drops the queue, and every later
 * receive or flush fails at once. */
static void test_shut_down_socket_fails(void) {
  h3g_udp_socket s;
  struct sockaddr_in to;
  int peer = peer_open(&to);
  CHECK_EQ_INT(h3g_udp_open(&s, "127.0.0.1", 0), 0);
  (void)shutdown(s.fd, SHUT_RDWR); /* ENOTCONN, but done */
  queue(&s, &to, 1200, 0, 1);
  CHECK_EQ_INT(h3g_udp_tx_flush(&s), H3G_ERR_IO);
  CHECK(s.failed);
  CHECK(strstr(s.failure, "Broken pipe") != NULL);
  CHECK(h3g_udp_tx_empty(&s));
  CHECK_EQ_INT(h3g_udp_recv(&s), H3G_ERR_IO);
  queue(&s, &to, 1200, 0, 2);
  CHECK_EQ_INT(h3g_udp_tx_flush(&s), H3G_ERR_IO);
  h3g_udp_close(&s);
  close(peer);
}

/* The descriptor closed under us: failed. */
static void test_closed_socket_fails(void) {
  h3g_udp_socket s;
  CHECK_EQ_INT(h3g_udp_open(&s, "127.0.0.1", 0), 0);
  int saved = dup(s.fd);
  close(s.fd);
  CHECK_EQ_INT(h3g_udp_recv(&s), H3G_ERR_IO);
  CHECK(s.failed);
  CHECK(strstr(s.failure, "recvmmsg") != NULL);
  dup2(saved, s.fd); /* h3g_udp_close closes it */
  close(saved);
  h3g_udp_close(&s);
}

/* What concerns one destination, or a one-off of a socket still bound,
 * is not a failure. */
static void test_one_off_errors_pass(void) {
  h3g_udp_socket s;
  struct sockaddr_in to;
  int peer = peer_open(&to);
  CHECK_EQ_INT(h3g_udp_open(&s, "127.0.0.1", 0), 0);
  /* An IPv6 destination from an IPv4 socket: refused per datagram. */
  struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(9)};
  v6.sin6_addr.s6_addr[15] = 1;
  uint8_t *p = h3g_udp_tx_reserve(&s, 100);
  memset(p, 0, 100);
  h3g_udp_tx_commit(&s, NULL, 0, (const struct sockaddr *)&v6, sizeof(v6), 0,
                    100);
  queue(&s, &to, 1200, 0, 3);
  int64_t dropped = h3g_stats.quic_packets_dropped;
  CHECK_EQ_INT(h3g_udp_tx_flush(&s), 0);
  CHECK(!s.failed);
  CHECK_EQ_INT(h3g_stats.quic_packets_dropped, dropped + 1);
  uint8_t buf[2048];
  struct pollfd pfd = {.fd = peer, .events = POLLIN};
  CHECK_EQ_INT(poll(&pfd, 1, 1000), 1);
  CHECK_EQ_INT(recv(peer, buf, sizeof(buf), 0), 1200);
  /* A poll error with nothing pending on a socket still bound. */
  int64_t errors = h3g_stats.quic_socket_errors;
  CHECK_EQ_INT(h3g_udp_clear_error(&s), 0);
  CHECK(!s.failed);
  CHECK_EQ_INT(h3g_stats.quic_socket_errors, errors + 1);
  CHECK_EQ_INT(h3g_udp_recv(&s), 0);
  h3g_udp_close(&s);
  close(peer);
}

static void test_open_refuses_names(void) {
  h3g_udp_socket s;
  CHECK_EQ_INT(h3g_udp_open(&s, "localhost", 0), H3G_ERR_INVAL);
  h3g_udp_close(&s);
}

int main(void) {
  RUN(test_send_groups_runs);
  RUN(test_recv_reports_addresses_and_ecn);
  RUN(test_gso_to_gro);
  RUN(test_open_refuses_names);
  RUN(test_shut_down_socket_fails);
  RUN(test_closed_socket_fails);
  RUN(test_one_off_errors_pass);
  return unit_report();
}
