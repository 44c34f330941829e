/*
 * libFuzzer target for the client unidirectional stream shadow
 * (proxy/quic/h3_uni_shadow.c).
 *
 * Input: a sequence of commands, each one byte and its operands:
 *   bits 0-1  the stream (client unidirectional streams 2, 6, 10, 14)
 *   bits 2-3  0: data, the next byte is its length, the bytes follow;
 *             1: the same, with FIN; 2: RESET_STREAM; 3: the stream closed
 *   bits 4-7  MAX_STREAMS (for PRIORITY_UPDATE element IDs), times 16
 * A stream that ended (FIN, reset, closed) takes no more commands: QUIC
 * never reuses a stream ID.
 *
 * Checked: an error is sticky and names why; nothing is handed on after
 * it; nghttp3 is never told about nothing; and what the shadow hands on
 * for a stream, fed to a fresh shadow, is handed on unchanged and
 * accepted (a PRIORITY_UPDATE rewritten once is canonical), up to the
 * error or the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h3_uni_shadow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STREAMS 4
#define OUT_MAX 4096

typedef struct sink {
  uint8_t out[STREAMS][OUT_MAX];
  size_t n[STREAMS];
  int fin[STREAMS];
  int failed;
} sink;

static size_t index_of(int64_t id) {
  return (size_t)(id - 2) / 4;
}

static int on_emit(void *ud, int64_t id, const uint8_t *p, size_t len,
                   int fin) {
  sink *k = ud;
  size_t i = index_of(id);
  if (i >= STREAMS || (len == 0 && !fin) || k->failed || k->fin[i])
    abort();
  size_t room = OUT_MAX - k->n[i];
  memcpy(k->out[i] + k->n[i], p, len < room ? len : room);
  k->n[i] += len < room ? len : room;
  k->fin[i] |= fin;
  return 0;
}

static int on_replay(void *ud, int64_t id, const uint8_t *p, size_t len,
                     int fin) {
  return on_emit(ud, id, p, len, fin);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static sink k, again;
  h3g_h3_uni_shadow u, v;
  uint64_t max_streams = 100;
  int ended[STREAMS] = {0};
  size_t i = 0;

  memset(&k, 0, sizeof(k));
  h3g_h3_uni_shadow_init(&u, max_streams);
  while (i < size) {
    uint8_t c = data[i++];
    int64_t id = 2 + 4 * (int64_t)(c & 3);
    int op = (c >> 2) & 3;
    if (c >> 4)
      h3g_h3_uni_shadow_set_max_streams(&u, (uint64_t)(c >> 4) * 16);
    int rv = 0;
    size_t s = index_of(id);
    if (op <= 1) {
      size_t len = i < size ? data[i++] : 0;
      if (len > size - i)
        len = size - i;
      if (!ended[s])
        rv =
            h3g_h3_uni_shadow_feed(&u, id, data + i, len, op == 1, on_emit, &k);
      i += len;
    } else if (op == 2 && !ended[s]) {
      rv = h3g_h3_uni_shadow_reset(&u, id);
    } else if (!ended[s]) {
      h3g_h3_uni_shadow_closed(&u, id);
    }
    ended[s] |= op != 0;
    if (rv != 0) {
      if (u.error != rv || u.why == NULL)
        abort();
      k.failed = 1;
      /* Sticky, silent. */
      if (h3g_h3_uni_shadow_feed(&u, id, data, 0, 1, on_emit, &k) != rv)
        abort();
      break;
    }
  }

  /* What was handed on is a fixed point, each stream alone. */
  for (size_t s = 0; s < STREAMS; s++) {
    if (k.n[s] == 0 || k.n[s] == OUT_MAX)
      continue;
    memset(&again, 0, sizeof(again));
    h3g_h3_uni_shadow_init(&v, 1u << 30);
    int64_t id = 2 + 4 * (int64_t)s;
    if (h3g_h3_uni_shadow_feed(&v, id, k.out[s], k.n[s], 0, on_replay,
                               &again) != 0 ||
        again.n[s] != k.n[s] || memcmp(again.out[s], k.out[s], k.n[s]) != 0)
      abort();
  }
  return 0;
}
