/*
 * UDP socket with batched I/O. The sizes below trade memory for system
 * calls: one recvmmsg returns up to 64 datagrams (or 16 GRO super-datagrams
 * of up to 64 KiB), and one sendmmsg sends up to 64 GSO runs.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, struct in6_pktinfo */
#include "udp_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

/* Without GRO every datagram needs its own buffer; 2048 bytes hold any QUIC
 * datagram a client sends (we advertise that limit as our
 * max_udp_payload_size transport parameter). */
#define RX_PLAIN_COUNT 64
#define RX_PLAIN_SIZE 2048
/* With GRO one message may carry up to 64 KiB of coalesced datagrams. */
#define RX_GRO_COUNT 16
#define RX_GRO_SIZE 65536
#define RX_CTRL_SIZE 128

#define TX_QUEUE_BYTES (512 * 1024)
#define TX_QUEUE_RUNS 512
#define TX_BATCH 64 /* messages per sendmmsg */
#define TX_CTRL_SIZE                                                           \
  (CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(uint16_t)) +     \
   CMSG_SPACE(sizeof(int)))
/* Linux accepts at most 64 segments per GSO send (UDP_MAX_SEGMENTS), and the
 * whole run must fit in one IP datagram. */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 64000

#define SOCKET_BUFFER_BYTES (4 * 1024 * 1024)

static void set_int_opt(int fd, int level, int name, int value,
                        const char *what) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0)
    h3g_debug("udp: setsockopt %s: %s", what, strerror(errno));
}

/* Asks for a large buffer; SO_*BUFFORCE passes net.core.*mem_max when we
 * have CAP_NET_ADMIN, the plain option is capped by it. */
static void set_buffer(int fd, int force_name, int name, const char *what) {
  int value = SOCKET_BUFFER_BYTES;
  if (setsockopt(fd, SOL_SOCKET, force_name, &value, sizeof(value)) != 0)
    (void)setsockopt(fd, SOL_SOCKET, name, &value, sizeof(value));
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, name, &value, &len) == 0)
    h3g_debug("udp: %s is %d bytes", what, value);
}

static int is_v4_mapped(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET6 &&
         IN6_IS_ADDR_V4MAPPED(
             &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
}

void h3g_udp_addr_format(const struct sockaddr *sa, char *buf, size_t cap) {
  char host[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    snprintf(buf, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
  } else if (is_v4_mapped(sa)) {
    const struct sockaddr_in6 *in6 =
        (const struct sockaddr_in6 *)(const void *)sa;
    inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof(host));
    snprintf(buf, cap, "%s:%u", host, (unsigned)ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 =
        (const struct sockaddr_in6 *)(const void *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    snprintf(buf, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
  } else {
    snprintf(buf, cap, "?");
  }
}

static int parse_address(const char *address, uint16_t port, h3g_udp_addr *a,
                         int *any) {
  memset(a, 0, sizeof(*a));
  if (inet_pton(AF_INET, address, &a->su.in.sin_addr) == 1) {
    a->su.in.sin_family = AF_INET;
    a->su.in.sin_port = htons(port);
    a->len = sizeof(a->su.in);
    *any = a->su.in.sin_addr.s_addr == htonl(INADDR_ANY);
    return 0;
  }
  if (inet_pton(AF_INET6, address, &a->su.in6.sin6_addr) == 1) {
    a->su.in6.sin6_family = AF_INET6;
    a->su.in6.sin6_port = htons(port);
    a->len = sizeof(a->su.in6);
    *any = IN6_IS_ADDR_UNSPECIFIED(&a->su.in6.sin6_addr);
    return 0;
  }
  return H3G_ERR_INVAL;
}

static int alloc_buffers(h3g_udp_socket *s) {
  s->rx_count = s->gro ? RX_GRO_COUNT : RX_PLAIN_COUNT;
  s->rx_size = s->gro ? RX_GRO_SIZE : RX_PLAIN_SIZE;
  s->rx_buf = malloc(s->rx_count * s->rx_size);
  s->rx_ctrl = calloc(s->rx_count, RX_CTRL_SIZE);
  s->rx_hdrs = calloc(s->rx_count, sizeof(*s->rx_hdrs));
  s->rx_iov = calloc(s->rx_count, sizeof(*s->rx_iov));
  s->rx_names = calloc(s->rx_count, sizeof(*s->rx_names));
  s->rx_msgs = calloc(s->rx_count, sizeof(*s->rx_msgs));

  s->tx_cap = TX_QUEUE_BYTES;
  s->tx_buf = malloc(s->tx_cap);
  s->runs_cap = TX_QUEUE_RUNS;
  s->runs = calloc(s->runs_cap, sizeof(*s->runs));
  s->tx_ctrl = calloc(TX_BATCH, TX_CTRL_SIZE);
  s->tx_hdrs = calloc(TX_BATCH, sizeof(*s->tx_hdrs));
  s->tx_iov = calloc(TX_BATCH, sizeof(*s->tx_iov));
  s->tx_msg_run = calloc(TX_BATCH, sizeof(*s->tx_msg_run));
  s->tx_msg_bytes = calloc(TX_BATCH, sizeof(*s->tx_msg_bytes));

  if (s->rx_buf == NULL || s->rx_ctrl == NULL || s->rx_hdrs == NULL ||
      s->rx_iov == NULL || s->rx_names == NULL || s->rx_msgs == NULL ||
      s->tx_buf == NULL || s->runs == NULL || s->tx_ctrl == NULL ||
      s->tx_hdrs == NULL || s->tx_iov == NULL || s->tx_msg_run == NULL ||
      s->tx_msg_bytes == NULL)
    return H3G_ERR_NOMEM;

  for (size_t i = 0; i < s->rx_count; i++) {
    s->rx_iov[i] = (struct iovec){
        .iov_base = s->rx_buf + i * s->rx_size,
        .iov_len = s->rx_size,
    };
    s->rx_hdrs[i].msg_hdr = (struct msghdr){
        .msg_name = &s->rx_names[i],
        .msg_iov = &s->rx_iov[i],
        .msg_iovlen = 1,
        .msg_control = s->rx_ctrl + i * RX_CTRL_SIZE,
    };
  }
  return 0;
}

int h3g_udp_open(h3g_udp_socket *s, const char *address, uint16_t port) {
  h3g_udp_addr addr;
  int any = 0;

  *s = (h3g_udp_socket){.fd = -1};
  if (parse_address(address, port, &addr, &any) != 0) {
    h3g_error("udp: %s is not an IPv4 or IPv6 address", address);
    return H3G_ERR_INVAL;
  }

  int family = addr.su.sa.sa_family;
  s->fd =
      socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (s->fd < 0) {
    h3g_error("udp: socket: %s", strerror(errno));
    return H3G_ERR_IO;
  }

  set_int_opt(s->fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (family == AF_INET6) {
    if (any)
      set_int_opt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY");
    set_int_opt(s->fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO");
    set_int_opt(s->fd, IPPROTO_IPV6, IPV6_RECVTCLASS, 1, "IPV6_RECVTCLASS");
    set_int_opt(s->fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO,
                "IPV6_MTU_DISCOVER");
    if (any) {
      /* IPv4 datagrams arriving as mapped addresses. */
      set_int_opt(s->fd, IPPROTO_IP, IP_RECVTOS, 1, "IP_RECVTOS");
      set_int_opt(s->fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO,
                  "IP_MTU_DISCOVER");
    }
  } else {
    set_int_opt(s->fd, IPPROTO_IP, IP_PKTINFO, 1, "IP_PKTINFO");
    set_int_opt(s->fd, IPPROTO_IP, IP_RECVTOS, 1, "IP_RECVTOS");
    set_int_opt(s->fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO,
                "IP_MTU_DISCOVER");
  }
  set_buffer(s->fd, SO_RCVBUFFORCE, SO_RCVBUF, "SO_RCVBUF");
  set_buffer(s->fd, SO_SNDBUFFORCE, SO_SNDBUF, "SO_SNDBUF");

  int one = 1;
  s->gro = setsockopt(s->fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) == 0;
  int segsize = 0;
  socklen_t optlen = sizeof(segsize);
  s->gso = getsockopt(s->fd, IPPROTO_UDP, UDP_SEGMENT, &segsize, &optlen) == 0;

  if (bind(s->fd, &addr.su.sa, addr.len) != 0) {
    h3g_error("udp: bind %s port %u: %s", address, (unsigned)port,
              strerror(errno));
    h3g_udp_close(s);
    return H3G_ERR_IO;
  }
  s->bound.len = sizeof(s->bound.su);
  if (getsockname(s->fd, &s->bound.su.sa, &s->bound.len) != 0) {
    h3g_error("udp: getsockname: %s", strerror(errno));
    h3g_udp_close(s);
    return H3G_ERR_IO;
  }

  if (alloc_buffers(s) != 0) {
    h3g_udp_close(s);
    return H3G_ERR_NOMEM;
  }
  h3g_debug("udp: GSO %s, GRO %s, %zu receive buffers of %zu bytes",
            s->gso ? "on" : "off", s->gro ? "on" : "off", s->rx_count,
            s->rx_size);
  return 0;
}

void h3g_udp_close(h3g_udp_socket *s) {
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  free(s->rx_buf);
  free(s->rx_ctrl);
  free(s->rx_hdrs);
  free(s->rx_iov);
  free(s->rx_names);
  free(s->rx_msgs);
  free(s->tx_buf);
  free(s->runs);
  free(s->tx_ctrl);
  free(s->tx_hdrs);
  free(s->tx_iov);
  free(s->tx_msg_run);
  free(s->tx_msg_bytes);
  *s = (h3g_udp_socket){.fd = -1};
}

void h3g_udp_fail(h3g_udp_socket *s, const char *why) {
  if (s->failed)
    return;
  s->failed = 1;
  snprintf(s->failure, sizeof(s->failure), "%s", why);
  h3g_error("udp: the socket failed: %s", s->failure);
}

/* Whether the descriptor is still our socket, bound to our port. A socket
 * destroyed with SOCK_DESTROY loses a port the kernel chose ([listener]
 * port = any): it is bound to that port again, which the clients and the
 * Alt-Svc already know. */
static int still_bound(const h3g_udp_socket *s) {
  h3g_udp_addr now;
  now.len = sizeof(now.su);
  if (getsockname(s->fd, &now.su.sa, &now.len) != 0 ||
      now.su.sa.sa_family != s->bound.su.sa.sa_family)
    return 0;
  uint16_t port = h3g_sockaddr_port(&now.su.sa);
  if (port == h3g_sockaddr_port(&s->bound.su.sa))
    return 1;
  if (port != 0 || bind(s->fd, &s->bound.su.sa, s->bound.len) != 0)
    return 0;
  h3g_warn("udp: the socket lost its port; bound to it again");
  return 1;
}

/*
 * An error that may concern the socket itself, not one datagram or peer:
 * fatal when it was shut down or closed under us or is no longer bound to
 * its port; otherwise a one-off that passes (logged, counted). Returns 0
 * or H3G_ERR_IO.
 */
static int socket_error(h3g_udp_socket *s, const char *op, int err) {
  if (err != EPIPE && err != EBADF && err != ENOTSOCK && still_bound(s)) {
    H3G_INC(quic_socket_errors);
    h3g_warn("udp: %s: %s (a one-off: the socket is still bound, going on)", op,
             strerror(err));
    return 0;
  }
  char why[96];
  snprintf(why, sizeof(why), "%s: %s", op,
           err == EPIPE ? "Broken pipe (the socket was shut down)"
                        : strerror(err));
  h3g_udp_fail(s, why);
  return H3G_ERR_IO;
}

int h3g_udp_clear_error(h3g_udp_socket *s) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (s->failed)
    return H3G_ERR_IO;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err != 0)
    return socket_error(s, "poll", err);
  if (!still_bound(s)) {
    h3g_udp_fail(s, "poll: the socket is no longer bound to its port");
    return H3G_ERR_IO;
  }
  H3G_INC(quic_socket_errors);
  h3g_warn("udp: poll reported an error, none is pending: going on");
  return 0;
}

static void read_ancillary(const h3g_udp_socket *s, struct msghdr *h,
                           h3g_udp_msg *m) {
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm != NULL;
       cm = CMSG_NXTHDR(h, cm)) {
    if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
      memset(&m->local, 0, sizeof(m->local));
      if (s->bound.su.sa.sa_family == AF_INET6) {
        m->local.su.in6.sin6_family = AF_INET6;
        m->local.su.in6.sin6_addr.s6_addr[10] = 0xff;
        m->local.su.in6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&m->local.su.in6.sin6_addr.s6_addr[12], &pi.ipi_addr, 4);
        m->local.su.in6.sin6_port = s->bound.su.in6.sin6_port;
        m->local.len = sizeof(m->local.su.in6);
      } else {
        m->local.su.in.sin_family = AF_INET;
        m->local.su.in.sin_addr = pi.ipi_addr;
        m->local.su.in.sin_port = s->bound.su.in.sin_port;
        m->local.len = sizeof(m->local.su.in);
      }
    } else if (cm->cmsg_level == IPPROTO_IPV6 &&
               cm->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
      memset(&m->local, 0, sizeof(m->local));
      m->local.su.in6.sin6_family = AF_INET6;
      m->local.su.in6.sin6_addr = pi.ipi6_addr;
      m->local.su.in6.sin6_port = s->bound.su.in6.sin6_port;
      if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
        m->local.su.in6.sin6_scope_id = pi.ipi6_ifindex;
      m->local.len = sizeof(m->local.su.in6);
    } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TOS) {
      uint8_t tos;
      memcpy(&tos, CMSG_DATA(cm), 1);
      m->ecn = tos & IPTOS_ECN_MASK;
    } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_TCLASS) {
      int tclass;
      memcpy(&tclass, CMSG_DATA(cm), sizeof(tclass));
      m->ecn = (uint8_t)(tclass & IPTOS_ECN_MASK);
    } else if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO) {
      int segsize;
      memcpy(&segsize, CMSG_DATA(cm), sizeof(segsize));
      if (segsize > 0)
        m->segsize = (size_t)segsize;
    }
  }
}

int h3g_udp_recv(h3g_udp_socket *s) {
  for (size_t i = 0; i < s->rx_count; i++) {
    s->rx_hdrs[i].msg_hdr.msg_namelen = sizeof(h3g_sockaddr);
    s->rx_hdrs[i].msg_hdr.msg_controllen = RX_CTRL_SIZE;
    s->rx_hdrs[i].msg_hdr.msg_flags = 0;
  }

  if (s->failed)
    return H3G_ERR_IO;
  int n;
  do {
    n = recvmmsg(s->fd, s->rx_hdrs, (unsigned)s->rx_count, 0, NULL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK)
      return 0;
    /* ICMP errors (ECONNREFUSED...) are reported on the next receive of an
     * unconnected socket on some kernels; they concern one peer only. Out
     * of memory is a moment. */
    if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH ||
        err == ENOMEM || err == ENOBUFS)
      return 0;
    return socket_error(s, "recvmmsg", err) == 0 ? 0 : H3G_ERR_IO;
  }

  int out = 0;
  for (int i = 0; i < n; i++) {
    struct msghdr *h = &s->rx_hdrs[i].msg_hdr;
    if (h->msg_flags & MSG_TRUNC) {
      H3G_INC(quic_packets_dropped);
      continue;
    }
    h3g_udp_msg *m = &s->rx_msgs[out++];
    m->data = s->rx_buf + (size_t)i * s->rx_size;
    m->len = s->rx_hdrs[i].msg_len;
    m->segsize = 0;
    m->ecn = 0;
    m->local.len = 0;
    memcpy(&m->remote.su, &s->rx_names[i], sizeof(m->remote.su));
    m->remote.len = h->msg_namelen;
    read_ancillary(s, h, m);
    if (m->segsize == 0 || m->segsize > m->len)
      m->segsize = m->len;
    if (m->local.len == 0)
      m->local = s->bound;
  }
  return out;
}

uint8_t *h3g_udp_tx_reserve(h3g_udp_socket *s, size_t len) {
  if (s->nruns == s->runs_cap || s->tx_cap - s->tx_used < len)
    return NULL;
  return s->tx_buf + s->tx_used;
}

static int addr_eq(const h3g_udp_addr *a, const struct sockaddr *sa,
                   socklen_t len) {
  return a->len == len && memcmp(&a->su, sa, len) == 0;
}

void h3g_udp_tx_commit(h3g_udp_socket *s, const struct sockaddr *local,
                       socklen_t locallen, const struct sockaddr *remote,
                       socklen_t remotelen, uint8_t ecn, size_t len) {
  if (local == NULL) {
    local = &s->bound.su.sa;
    locallen = s->bound.len;
  }
  if (len == 0)
    return;

  h3g_udp_run *last = s->nruns > s->head ? &s->runs[s->nruns - 1] : NULL;
  if (last != NULL && !last->sealed && last->ecn == ecn &&
      len <= last->segsize && last->len + len <= GSO_MAX_BYTES &&
      last->len / last->segsize < GSO_MAX_SEGMENTS &&
      last->off + last->len == s->tx_used &&
      addr_eq(&last->remote, remote, remotelen) &&
      addr_eq(&last->local, local, locallen)) {
    last->len += (uint32_t)len;
    if (len < last->segsize || last->len / last->segsize == GSO_MAX_SEGMENTS)
      last->sealed = 1;
  } else {
    h3g_udp_run *r = &s->runs[s->nruns++];
    *r = (h3g_udp_run){
        .off = (uint32_t)s->tx_used,
        .len = (uint32_t)len,
        .segsize = (uint16_t)len,
        .ecn = ecn,
    };
    memcpy(&r->local.su, local, locallen);
    r->local.len = locallen;
    memcpy(&r->remote.su, remote, remotelen);
    r->remote.len = remotelen;
  }
  s->tx_used += len;
}

int h3g_udp_tx_send(h3g_udp_socket *s, const struct sockaddr *local,
                    socklen_t locallen, const struct sockaddr *remote,
                    socklen_t remotelen, uint8_t ecn, const uint8_t *data,
                    size_t len) {
  uint8_t *p = h3g_udp_tx_reserve(s, len);
  if (p == NULL) {
    if (h3g_udp_tx_flush(s) != 0)
      return H3G_ERR_AGAIN;
    p = h3g_udp_tx_reserve(s, len);
    if (p == NULL)
      return H3G_ERR_AGAIN;
  }
  memcpy(p, data, len);
  h3g_udp_tx_commit(s, local, locallen, remote, remotelen, ecn, len);
  return 0;
}

int h3g_udp_tx_empty(const h3g_udp_socket *s) {
  return s->head == s->nruns;
}

/* Fills message i of the next sendmmsg: bytes of run r from its offset
 * off, as GSO segments when nsegs > 1. */
static void build_msg(h3g_udp_socket *s, size_t i, size_t r, size_t off,
                      size_t bytes) {
  const h3g_udp_run *run = &s->runs[r];
  struct msghdr *h = &s->tx_hdrs[i].msg_hdr;
  uint8_t *ctrl = s->tx_ctrl + i * TX_CTRL_SIZE;
  size_t ctrllen = 0;

  s->tx_iov[i] = (struct iovec){
      .iov_base = s->tx_buf + run->off + off,
      .iov_len = bytes,
  };
  s->tx_msg_run[i] = (uint32_t)r;
  s->tx_msg_bytes[i] = (uint32_t)bytes;
  memset(ctrl, 0, TX_CTRL_SIZE);
  *h = (struct msghdr){
      .msg_name = (void *)&run->remote.su,
      .msg_namelen = run->remote.len,
      .msg_iov = &s->tx_iov[i],
      .msg_iovlen = 1,
      .msg_control = ctrl,
      .msg_controllen = TX_CTRL_SIZE,
  };

  struct cmsghdr *cm = CMSG_FIRSTHDR(h);
  /* The source address the client sent to, so that replies leave from it
   * when we are bound to a wildcard address. */
  if (run->local.su.sa.sa_family == AF_INET) {
    struct in_pktinfo pi = {.ipi_spec_dst = run->local.su.in.sin_addr};
    cm->cmsg_level = IPPROTO_IP;
    cm->cmsg_type = IP_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(pi));
    memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
    ctrllen += CMSG_SPACE(sizeof(pi));
  } else {
    struct in6_pktinfo pi = {.ipi6_addr = run->local.su.in6.sin6_addr};
    if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
      pi.ipi6_ifindex = run->local.su.in6.sin6_scope_id;
    cm->cmsg_level = IPPROTO_IPV6;
    cm->cmsg_type = IPV6_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(pi));
    memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
    ctrllen += CMSG_SPACE(sizeof(pi));
  }
  if (bytes > run->segsize) {
    uint16_t segsize = run->segsize;
    cm = CMSG_NXTHDR(h, cm);
    cm->cmsg_level = IPPROTO_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(segsize));
    memcpy(CMSG_DATA(cm), &segsize, sizeof(segsize));
    ctrllen += CMSG_SPACE(sizeof(segsize));
  }
  if (run->ecn != 0) {
    int tos = run->ecn;
    cm = CMSG_NXTHDR(h, cm);
    /* IPv4 (also as mapped addresses on an IPv6 socket) takes IP_TOS;
     * native IPv6 takes the traffic class. */
    if (run->remote.su.sa.sa_family == AF_INET ||
        is_v4_mapped(&run->remote.su.sa)) {
      cm->cmsg_level = IPPROTO_IP;
      cm->cmsg_type = IP_TOS;
    } else {
      cm->cmsg_level = IPPROTO_IPV6;
      cm->cmsg_type = IPV6_TCLASS;
    }
    cm->cmsg_len = CMSG_LEN(sizeof(tos));
    memcpy(CMSG_DATA(cm), &tos, sizeof(tos));
    ctrllen += CMSG_SPACE(sizeof(tos));
  }
  h->msg_controllen = ctrllen;
}

static size_t datagrams_in(const h3g_udp_run *run, size_t bytes) {
  return (bytes + run->segsize - 1) / run->segsize;
}

/* Message i was sent (or dropped): account its bytes to its run. */
static void advance(h3g_udp_socket *s, size_t i) {
  s->runs[s->tx_msg_run[i]].sent += s->tx_msg_bytes[i];
  while (s->head < s->nruns && s->runs[s->head].sent == s->runs[s->head].len)
    s->head++;
}

int h3g_udp_tx_flush(h3g_udp_socket *s) {
  while (s->head < s->nruns && !s->failed) {
    size_t nmsg = 0;
    for (size_t r = s->head; r < s->nruns && nmsg < TX_BATCH; r++) {
      const h3g_udp_run *run = &s->runs[r];
      size_t off = run->sent;
      if (s->gso) {
        build_msg(s, nmsg++, r, off, run->len - off);
        continue;
      }
      while (off < run->len && nmsg < TX_BATCH) {
        size_t bytes = H3G_MIN((size_t)run->segsize, run->len - off);
        build_msg(s, nmsg++, r, off, bytes);
        off += bytes;
      }
    }

    int n = sendmmsg(s->fd, s->tx_hdrs, (unsigned)nmsg, 0);
    if (n < 0) {
      int err = errno;
      if (err == EINTR)
        continue;
      if (err == EAGAIN || err == EWOULDBLOCK)
        return H3G_ERR_AGAIN;
      const h3g_udp_run *run = &s->runs[s->tx_msg_run[0]];
      if ((err == EIO || err == EINVAL) && s->gso &&
          s->tx_msg_bytes[0] > run->segsize) {
        /* The device or kernel cannot segment: send datagrams one by one
         * from now on (ngtcp2's examples do the same on EIO). */
        h3g_warn("udp: GSO send failed (%s), disabling GSO", strerror(err));
        s->gso = 0;
        continue;
      }
      /* Errors about one destination (unreachable, refused by a filter,
       * too big) drop its datagrams; the socket's own (shut down, closed,
       * unbound, a pending error) are sorted by socket_error. */
      if (err == EPIPE || err == EBADF || err == ENOTSOCK ||
          err == ECONNABORTED || err == ENOTCONN || err == EDESTADDRREQ ||
          err == EFAULT)
        (void)socket_error(s, "sendmmsg", err);
      h3g_debug("udp: sendmmsg: %s: %zu datagrams dropped", strerror(err),
                datagrams_in(run, s->tx_msg_bytes[0]));
      H3G_ADD(quic_packets_dropped, datagrams_in(run, s->tx_msg_bytes[0]));
      advance(s, 0);
      continue;
    }

    H3G_INC(quic_send_batches);
    for (int i = 0; i < n; i++) {
      H3G_ADD(quic_datagrams_sent,
              datagrams_in(&s->runs[s->tx_msg_run[i]], s->tx_msg_bytes[i]));
      advance(s, (size_t)i);
    }
  }

  s->nruns = 0;
  s->head = 0;
  s->tx_used = 0;
  return s->failed ? H3G_ERR_IO : 0;
}
