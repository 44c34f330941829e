/*
 * The UDP socket of the QUIC listener (Linux).
 *
 * Receive: recvmmsg into preallocated buffers; each message carries, from
 * ancillary data, the local address the datagram was sent to (IP_PKTINFO /
 * IPV6_PKTINFO: needed for QUIC paths when bound to a wildcard address), its
 * ECN bits (IP_RECVTOS / IPV6_RECVTCLASS) and, with UDP GRO, the size of the
 * datagrams the kernel coalesced into it.
 *
 * Transmit: a bounded queue of datagrams grouped into runs (same local and
 * remote address, same ECN codepoint, equal sizes except a shorter last
 * one). A flush sends the queue with sendmmsg, one message per run with
 * UDP_SEGMENT (GSO) where the kernel supports it, else one message per
 * datagram. When the socket buffer is full the queue is kept, never
 * dropped: the caller waits for writability and flushes again.
 *
 * Every buffer is allocated by h3g_udp_open; nothing is allocated per
 * datagram. A leaf module: depends on common.h, log.h and metrics.h.
 */
#ifndef H3G_UDP_SOCKET_H
#define H3G_UDP_SOCKET_H

#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "common.h"

typedef union h3g_sockaddr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} h3g_sockaddr;

typedef struct h3g_udp_addr {
  h3g_sockaddr su;
  socklen_t len; /* 0: unknown */
} h3g_udp_addr;

/* One received message: one datagram, or several of segsize bytes each
 * (the last may be shorter) coalesced by GRO. */
typedef struct h3g_udp_msg {
  uint8_t *data;
  size_t len;
  size_t segsize;
  h3g_udp_addr remote;
  h3g_udp_addr local; /* the address the datagrams were sent to */
  uint8_t ecn;        /* the ECN bits of the IP header */
} h3g_udp_msg;

/* A run of queued datagrams sent with one sendmsg (GSO). */
typedef struct h3g_udp_run {
  h3g_udp_addr local, remote;
  uint32_t off;  /* first byte in the queue buffer */
  uint32_t len;  /* bytes in the run */
  uint32_t sent; /* bytes already sent (whole datagrams) */
  uint16_t segsize;
  uint8_t ecn;
  uint8_t sealed; /* ended by a shorter datagram or full */
} h3g_udp_run;

typedef struct h3g_udp_socket {
  int fd;
  h3g_udp_addr bound;
  int gso; /* the kernel accepts UDP_SEGMENT */
  int gro; /* UDP_GRO is on: receive buffers are 64 KiB */
  /* Set once the socket is dead for good (closed or shut down under us,
   * no longer bound to its port): every later receive or flush fails at
   * once. failure says why, e.g. "sendmmsg: Broken pipe". */
  int failed;
  char failure[96];

  /* receive */
  size_t rx_count; /* messages per recvmmsg */
  size_t rx_size;  /* bytes per message buffer */
  uint8_t *rx_buf;
  uint8_t *rx_ctrl;
  struct mmsghdr *rx_hdrs;
  struct iovec *rx_iov;
  h3g_sockaddr *rx_names;
  h3g_udp_msg *rx_msgs;

  /* transmit queue */
  uint8_t *tx_buf;
  size_t tx_cap;
  size_t tx_used;
  h3g_udp_run *runs;
  size_t runs_cap;
  size_t nruns;
  size_t head; /* first run not completely sent */
  uint8_t *tx_ctrl;
  struct mmsghdr *tx_hdrs;
  struct iovec *tx_iov;
  uint32_t *tx_msg_run;   /* run of each message in one sendmmsg */
  uint32_t *tx_msg_bytes; /* bytes of each message */
} h3g_udp_socket;

/*
 * Opens a nonblocking UDP socket bound to address (an IPv4 or IPv6
 * literal; "::" also accepts IPv4 as mapped addresses) and port (0: any).
 * Returns 0, H3G_ERR_INVAL (not an address literal), H3G_ERR_IO (socket or
 * bind failed; logged) or H3G_ERR_NOMEM.
 */
int h3g_udp_open(h3g_udp_socket *s, const char *address, uint16_t port);

/* Closes the socket and frees the buffers. Safe on a zeroed socket. */
void h3g_udp_close(h3g_udp_socket *s);

/*
 * Reads one batch. Returns the number of messages stored in s->rx_msgs
 * (valid until the next call; 0 when there was nothing to read, or after
 * an error that concerns one peer or a moment) or H3G_ERR_IO when the
 * socket failed (s->failed is set). Truncated datagrams are dropped and
 * counted.
 *
 * Errors are sorted by what they say about the socket: ICMP news about a
 * peer and memory pressure pass; EPIPE (shut down), EBADF and ENOTSOCK
 * (closed under us), or any error of a socket no longer bound to its port
 * fail it; any other error of a socket still bound is a one-off (e.g. an
 * administrator's SOCK_DESTROY), logged and counted (quic_socket_errors).
 */
int h3g_udp_recv(h3g_udp_socket *s);

/*
 * poll(2) reported an error condition: reads (and so clears) the socket's
 * pending error and sorts it as h3g_udp_recv does. Returns 0 (a one-off:
 * the socket can be watched again) or H3G_ERR_IO (s->failed is set).
 */
int h3g_udp_clear_error(h3g_udp_socket *s);

/* Marks s failed for good, with why (e.g. "shut down"). Logged once. */
void h3g_udp_fail(h3g_udp_socket *s, const char *why);

/* Space for one datagram of up to len bytes at the end of the queue, or
 * NULL when the queue is full (flush it first). */
uint8_t *h3g_udp_tx_reserve(h3g_udp_socket *s, size_t len);

/*
 * Queues the len bytes just written at the pointer h3g_udp_tx_reserve
 * returned, as one datagram from local (may be NULL: the bound address) to
 * remote with the ECN codepoint ecn.
 */
void h3g_udp_tx_commit(h3g_udp_socket *s, const struct sockaddr *local,
                       socklen_t locallen, const struct sockaddr *remote,
                       socklen_t remotelen, uint8_t ecn, size_t len);

/* Copies one datagram into the queue. Returns 0 or H3G_ERR_AGAIN (the
 * queue is full and the socket too). */
int h3g_udp_tx_send(h3g_udp_socket *s, const struct sockaddr *local,
                    socklen_t locallen, const struct sockaddr *remote,
                    socklen_t remotelen, uint8_t ecn, const uint8_t *data,
                    size_t len);

/*
 * Sends the queue. Returns 0 when it is empty, H3G_ERR_AGAIN when the
 * socket buffer is full (what is left stays queued: flush again when the
 * socket is writable), or H3G_ERR_IO when the socket failed (as in
 * h3g_udp_recv; the queue is dropped, s->failed is set). Datagrams the
 * kernel refuses for other reasons (unreachable, too big) are dropped and
 * counted.
 */
int h3g_udp_tx_flush(h3g_udp_socket *s);

/* 1 when nothing is queued. */
int h3g_udp_tx_empty(const h3g_udp_socket *s);

/* Formats addr as "ip:port" ("[ip6]:port" for IPv6, IPv4-mapped addresses
 * as IPv4). Always NUL-terminates. */
void h3g_udp_addr_format(const struct sockaddr *sa, char *buf, size_t cap);

#endif /* H3G_UDP_SOCKET_H */
