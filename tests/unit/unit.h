/*
 * Minimal unit-test harness: CHECK records a failure and goes on; a test
 * file's main() runs its cases with RUN and returns unit_report().
 */
#ifndef H3G_UNIT_H
#define H3G_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_checks, unit_failures, unit_cases, unit_case_failed;

#define CHECK(cond)                                                            \
  do {                                                                         \
    unit_checks++;                                                             \
    if (!(cond)) {                                                             \
      unit_failures++;                                                         \
      unit_case_failed = 1;                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long unit_a_ = (long long)(a), unit_b_ = (long long)(b);              \
    unit_checks++;                                                             \
    if (unit_a_ != unit_b_) {                                                  \
      unit_failures++;                                                         \
      unit_case_failed = 1;                                                    \
      fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,    \
              __LINE__, #a, unit_a_, #b, unit_b_);                             \
    }                                                                          \
  } while (0)

#define CHECK_MEM(p, n, s)                                                     \
  CHECK((n) == strlen(s) && memcmp((p), (s), (n)) == 0)

static int unit_passed, unit_failed_cases;

#define RUN(fn)                                                                \
  do {                                                                         \
    unit_case_failed = 0;                                                      \
    unit_cases++;                                                              \
    fn();                                                                      \
    if (unit_case_failed) {                                                    \
      unit_failed_cases++;                                                     \
      fprintf(stderr, "FAIL %s\n", #fn);                                       \
    } else {                                                                   \
      unit_passed++;                                                           \
    }                                                                          \
  } while (0)

static inline int unit_report(void) {
  printf("%d checks\n%d passed, %d failed\n", unit_checks, unit_passed,
         unit_failed_cases);
  return unit_failed_cases ? 1 : 0;
}

#endif /* H3G_UNIT_H */
