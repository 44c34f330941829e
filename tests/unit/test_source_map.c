#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "source_map.h"
#include "unit.h"

static const uint8_t key[16] = {0, 1, 2,  3,  4,  5,  6,  7,
                                8, 9, 10, 11, 12, 13, 14, 15};

static h3g_source_key v4(const char *ip, uint16_t port) {
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
  h3g_source_key k;
  CHECK_EQ_INT(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
  CHECK_EQ_INT(h3g_source_key_of(&k, (struct sockaddr *)&sin), 0);
  return k;
}

static h3g_source_key v6(const char *ip, uint16_t port) {
  struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons(port)};
  h3g_source_key k;
  CHECK_EQ_INT(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
  CHECK_EQ_INT(h3g_source_key_of(&k, (struct sockaddr *)&sin6), 0);
  return k;
}

static int same(h3g_source_key a, h3g_source_key b) {
  return memcmp(a.b, b.b, sizeof(a.b)) == 0;
}

static void test_keys(void) {
  /* Ports never matter. */
  CHECK(same(v4("192.0.2.1", 1), v4("192.0.2.1", 2)));
  CHECK(!same(v4("192.0.2.1", 1), v4("192.0.2.2", 1)));
  /* IPv6: the /64 prefix. */
  CHECK(same(v6("2001:db8:1:2::1", 1), v6("2001:db8:1:2:ffff::9", 7)));
  CHECK(!same(v6("2001:db8:1:2::1", 1), v6("2001:db8:1:3::1", 1)));
  /* An IPv4-mapped address is its IPv4 address, not a /64 of them. */
  CHECK(same(v6("::ffff:192.0.2.1", 5), v4("192.0.2.1", 6)));
  CHECK(!same(v6("::ffff:192.0.2.1", 5), v6("::ffff:192.0.2.2", 5)));
  /* IPv4 and IPv6 never collide, even with the same bytes. */
  CHECK(!same(v4("32.1.13.184", 1), v6("2001:db8::", 1)));

  struct sockaddr sa = {.sa_family = AF_UNIX};
  h3g_source_key k;
  CHECK_EQ_INT(h3g_source_key_of(&k, &sa), H3G_ERR_INVAL);
}

static void test_counts(void) {
  h3g_source_map m;
  h3g_source_key a = v4("192.0.2.1", 1), b = v6("2001:db8::1", 1);

  CHECK_EQ_INT(h3g_source_map_init(&m, key), 0);
  CHECK_EQ_INT(h3g_source_map_get(&m, &a), 0);
  CHECK_EQ_INT(h3g_source_map_dec(&m, &a), 0);
  CHECK_EQ_INT(h3g_source_map_inc(&m, &a), 0);
  CHECK_EQ_INT(h3g_source_map_inc(&m, &a), 0);
  CHECK_EQ_INT(h3g_source_map_inc(&m, &b), 0);
  CHECK_EQ_INT(h3g_source_map_get(&m, &a), 2);
  CHECK_EQ_INT(h3g_source_map_get(&m, &b), 1);
  CHECK_EQ_INT(m.count, 2);
  CHECK_EQ_INT(h3g_source_map_dec(&m, &a), 1);
  CHECK_EQ_INT(h3g_source_map_get(&m, &a), 1);
  CHECK_EQ_INT(h3g_source_map_dec(&m, &a), 1);
  /* At zero the entry is gone. */
  CHECK_EQ_INT(h3g_source_map_get(&m, &a), 0);
  CHECK_EQ_INT(h3g_source_map_dec(&m, &a), 0);
  CHECK_EQ_INT(m.count, 1);
  CHECK_EQ_INT(h3g_source_map_dec(&m, &b), 1);
  CHECK_EQ_INT(m.count, 0);
  h3g_source_map_free(&m);
  h3g_source_map_free(&m);
}

/* Random increments and decrements against a plain array: exercises growth
 * and the backward-shift deletion across wrapped clusters. */
static void test_against_reference(void) {
  enum { N = 2000 };
  static h3g_source_key keys[N];
  static uint32_t counts[N];
  h3g_source_map m;
  uint64_t x = 88172645463325252ull;

  CHECK_EQ_INT(h3g_source_map_init(&m, key), 0);
  for (size_t i = 0; i < N; i++) {
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin6.sin6_addr.s6_addr[0] = 0x20;
    sin6.sin6_addr.s6_addr[6] = (uint8_t)i;
    sin6.sin6_addr.s6_addr[7] = (uint8_t)(i >> 8);
    sin.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)i);
    CHECK_EQ_INT(h3g_source_key_of(&keys[i], i % 2 ? (struct sockaddr *)&sin6
                                                   : (struct sockaddr *)&sin),
                 0);
  }
  size_t max_sources = 0;
  for (int round = 0; round < 40000; round++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t i = (size_t)(x % N);
    if (counts[i] > 0 && (x >> 32) % 2 == 0) {
      CHECK_EQ_INT(h3g_source_map_dec(&m, &keys[i]), 1);
      counts[i]--;
    } else {
      CHECK_EQ_INT(h3g_source_map_inc(&m, &keys[i]), 0);
      counts[i]++;
    }
    max_sources = m.count > max_sources ? m.count : max_sources;
  }
  size_t sources = 0;
  for (size_t i = 0; i < N; i++) {
    CHECK_EQ_INT(h3g_source_map_get(&m, &keys[i]), counts[i]);
    sources += counts[i] > 0;
  }
  CHECK_EQ_INT(m.count, sources);
  CHECK(max_sources > 64); /* the table grew */
  CHECK(m.count * 2 <= m.cap);
  /* Emptied, every lookup misses again. */
  for (size_t i = 0; i < N; i++)
    while (counts[i] > 0) {
      CHECK_EQ_INT(h3g_source_map_dec(&m, &keys[i]), 1);
      counts[i]--;
    }
  CHECK_EQ_INT(m.count, 0);
  for (size_t i = 0; i < N; i++)
    CHECK_EQ_INT(h3g_source_map_get(&m, &keys[i]), 0);
  h3g_source_map_free(&m);
}

int main(void) {
  RUN(test_keys);
  RUN(test_counts);
  RUN(test_against_reference);
  return unit_report();
}
