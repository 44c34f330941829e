/*
 * glibc's malloc returns memory to the system by itself only from the top
 * of its heap (M_TRIM_THRESHOLD): one long-lived object allocated late in
 * a burst pins everything below it. malloc_trim(0) also releases the whole
 * free pages inside the heap (madvise(MADV_DONTNEED)), whatever is above
 * them. It walks every free chunk, which is why it runs only when quiet.
 */
#include "idle_trim.h"

#include <string.h>
#include <time.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "buf.h"

void h3g_idle_trim_init(h3g_idle_trim *t, const h3g_metrics *m) {
  *t = (h3g_idle_trim){
#define H3G_IDLE_TRIM_INIT(name) .name = m->name,
      H3G_IDLE_TRIM_WATCH(H3G_IDLE_TRIM_INIT)
#undef H3G_IDLE_TRIM_INIT
  };
}

int h3g_idle_trim_tick(h3g_idle_trim *t, const h3g_metrics *m) {
  int changed = 0;
#define H3G_IDLE_TRIM_CMP(name)                                                \
  if (t->name != m->name) {                                                    \
    t->name = m->name;                                                         \
    changed = 1;                                                               \
  }
  H3G_IDLE_TRIM_WATCH(H3G_IDLE_TRIM_CMP)
#undef H3G_IDLE_TRIM_CMP
  if (changed) {
    t->moved = 1;
    return 0;
  }
  if (!t->moved)
    return 0;
  t->moved = 0;
  return 1;
}

static uint64_t cpu_us(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0;
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t h3g_memory_trim(void) {
  uint64_t t0 = cpu_us();
  h3g_ring_pool_trim();
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  uint64_t spent = cpu_us() - t0;
  H3G_INC(memory_trims);
  H3G_ADD(memory_trim_us, spent);
  return spent;
}
