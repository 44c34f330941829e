/* Error names, clocks, randomness and small socket-address helpers. */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

const char *h3g_strerror(int err) {
  switch (err) {
  case H3G_OK: return "ok";
  case H3G_ERR_NOMEM: return "out of memory";
  case H3G_ERR_INVAL: return "invalid argument";
  case H3G_ERR_PROTO: return "protocol error";
  case H3G_ERR_TOOBIG: return "too big";
  case H3G_ERR_IO: return "I/O error";
  case H3G_ERR_TIMEOUT: return "timed out";
  case H3G_ERR_CLOSED: return "closed";
  case H3G_ERR_AGAIN: return "try again";
  case H3G_ERR_REFUSED: return "connection refused";
  case H3G_ERR_NOTFOUND: return "not found";
  case H3G_ERR_TLS: return "TLS error";
  case H3G_ERR_QUIC: return "QUIC error";
  case H3G_ERR_INUSE: return "address in use";
  case H3G_ERR_UNAVAILABLE: return "no server available";
  default: return "unknown error";
  }
}

uint64_t h3g_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t h3g_wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int h3g_random_bytes(uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return H3G_ERR_IO;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

uint16_t h3g_sockaddr_port(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
  return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
}

long h3g_pid_file_read(const char *path) {
  FILE *f = fopen(path, "r");
  long pid = 0;
  if (f == NULL)
    return 0;
  if (fscanf(f, "%ld", &pid) != 1 || pid < 0)
    pid = 0;
  fclose(f);
  return pid;
}
