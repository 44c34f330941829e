#include "priority.h"
#include "unit.h"

/* Parses s over the defaults; returns the mask (or error) and *out. */
static int parse(const char *s, h3g_priority *out) {
  *out = H3G_PRIORITY_DEFAULT;
  return h3g_priority_parse(out, (const uint8_t *)s, strlen(s));
}

static void expect(const char *s, int mask, int u, int i) {
  h3g_priority p;
  int rv = parse(s, &p);
  if (rv != mask || p.urgency != u || p.incremental != i)
    fprintf(stderr, "value \"%s\": mask %d u=%d i=%d\n", s, rv, p.urgency,
            p.incremental);
  CHECK_EQ_INT(rv, mask);
  CHECK_EQ_INT(p.urgency, u);
  CHECK_EQ_INT(p.incremental, i);
}

enum { U = H3G_PRIORITY_HAS_U, I = H3G_PRIORITY_HAS_I, BAD = H3G_ERR_PROTO };

static void test_browser_values(void) {
  expect("u=0, i", U | I, 0, 1);
  expect("u=1", U, 1, 0);
  expect("i", I, 3, 1);
  expect("u=5, i", U | I, 5, 1);
  expect("u=4,i", U | I, 4, 1);
  expect("  u=2  ,\ti=?0", U | I, 2, 0);
  expect("i=?1", I, 3, 1);
  expect("", 0, 3, 0);
  expect("   ", 0, 3, 0);
}

/* RFC 9218 §4: a parameter with an unusable value is ignored, the rest
 * of the field still counts. */
static void test_ignored_parameters(void) {
  expect("u=8", 0, 3, 0);
  expect("u=-1", 0, 3, 0);
  expect("u=1.5", 0, 3, 0);
  expect("u=\"1\"", 0, 3, 0);
  expect("u=?1", 0, 3, 0);
  expect("u, i", I, 3, 1); /* bare u is Boolean true: not an Integer */
  expect("i=1", 0, 3, 0);  /* not a Boolean */
  expect("i=tok", 0, 3, 0);
  expect("u=2, i=5", U, 2, 0);
  expect("x=1, u=6", U, 6, 0);               /* unknown keys are skipped */
  expect("u=1;a=b, i;q=\"s\"", U | I, 1, 1); /* parameters skipped */
  expect("foo=(a b \"c\"), u=7", U, 7, 0);   /* inner list skipped */
  expect("bin=:aGk=:, u=0", U, 0, 0);
  expect("t=*tok/x:y, u=0", U, 0, 0);
  expect("d=-12.345, u=0", U, 0, 0);
}

/* A repeated key: the last one counts, even when it is unusable. */
static void test_last_wins(void) {
  expect("u=1, u=6", U, 6, 0);
  expect("u=1, u=9", 0, 3, 0);
  expect("i, i=?0", I, 3, 0);
}

/* Not a Dictionary at all: the whole field is ignored, *p untouched. */
static void test_malformed(void) {
  const char *bad[] = {
      "u=1,", /* trailing comma */
      ",u=1",
      "u=1 i",
      "U=1", /* uppercase key */
      "u=",
      "u=1;",
      "u=\"unterminated",
      "u=\"bad\\q\"",
      "u=:not base64!:",
      "u=(1 2",
      "u=1.",
      "u=1.2345",
      "u=1234567890123456", /* 16 digits */
      "u=1234567890123.5",
      "u=?2",
      "1=1",
      "u=1,,i",
      "u=\x01",
      "u=@123",
  };
  for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
    h3g_priority p = {.urgency = 6, .incremental = 1};
    int rv = h3g_priority_parse(&p, (const uint8_t *)bad[k], strlen(bad[k]));
    if (rv != BAD)
      fprintf(stderr, "accepted \"%s\"\n", bad[k]);
    CHECK_EQ_INT(rv, BAD);
    CHECK_EQ_INT(p.urgency, 6);
    CHECK_EQ_INT(p.incremental, 1);
  }
}

static h3g_field field(const char *name, const char *value) {
  return (h3g_field){.name = (const uint8_t *)name,
                     .namelen = strlen(name),
                     .value = (const uint8_t *)value,
                     .valuelen = strlen(value)};
}

static void test_request_fields(void) {
  h3g_headers h;
  h3g_headers_init(&h, 65536);
  h3g_priority p = h3g_priority_of_request(&h);
  CHECK_EQ_INT(p.urgency, 3);
  CHECK_EQ_INT(p.incremental, 0);
  CHECK_EQ_INT(h3g_headers_add(&h, (const uint8_t *)"priority", 8,
                               (const uint8_t *)"u=1", 3),
               0);
  CHECK_EQ_INT(h3g_headers_add(&h, (const uint8_t *)"accept", 6,
                               (const uint8_t *)"*/*", 3),
               0);
  CHECK_EQ_INT(h3g_headers_add(&h, (const uint8_t *)"Priority", 8,
                               (const uint8_t *)"i", 1),
               0);
  p = h3g_priority_of_request(&h);
  CHECK_EQ_INT(p.urgency, 1);
  CHECK_EQ_INT(p.incremental, 1);
  /* One bad line spoils the combined value: defaults. */
  CHECK_EQ_INT(h3g_headers_add(&h, (const uint8_t *)"priority", 8,
                               (const uint8_t *)"u=", 2),
               0);
  p = h3g_priority_of_request(&h);
  CHECK_EQ_INT(p.urgency, 3);
  CHECK_EQ_INT(p.incremental, 0);
  h3g_headers_free(&h);

  /* A key on a later line repeats one of an earlier line. */
  h3g_headers_init(&h, 65536);
  h3g_headers_add(&h, (const uint8_t *)"priority", 8, (const uint8_t *)"u=1",
                  3);
  h3g_headers_add(&h, (const uint8_t *)"priority", 8, (const uint8_t *)"", 0);
  h3g_headers_add(&h, (const uint8_t *)"priority", 8, (const uint8_t *)"u=9",
                  3);
  p = h3g_priority_of_request(&h);
  CHECK_EQ_INT(p.urgency, 3);
  h3g_headers_free(&h);
}

/* RFC 9218 §8: the response's parameters replace the client's; the ones
 * it leaves out keep the client's. */
static void test_merge_response(void) {
  h3g_priority p = {.urgency = 5, .incremental = 1};
  h3g_field f[] = {field("content-type", "image/png"),
                   field("priority", "u=1")};
  CHECK_EQ_INT(h3g_priority_merge_response(&p, f, 2), 1);
  CHECK_EQ_INT(p.urgency, 1);
  CHECK_EQ_INT(p.incremental, 1);

  h3g_field none[] = {field("content-type", "text/html")};
  p = (h3g_priority){.urgency = 5, .incremental = 1};
  CHECK_EQ_INT(h3g_priority_merge_response(&p, none, 1), 0);
  CHECK_EQ_INT(p.urgency, 5);

  h3g_field bad[] = {field("priority", "u=1,")};
  CHECK_EQ_INT(h3g_priority_merge_response(&p, bad, 1), 0);
  CHECK_EQ_INT(p.urgency, 5);

  h3g_field useless[] = {field("priority", "u=11, x")};
  CHECK_EQ_INT(h3g_priority_merge_response(&p, useless, 1), 0);
  CHECK_EQ_INT(p.urgency, 5);
  CHECK_EQ_INT(p.incremental, 1);

  h3g_field inc_only[] = {field("priority", "i=?0")};
  CHECK_EQ_INT(h3g_priority_merge_response(&p, inc_only, 1), 1);
  CHECK_EQ_INT(p.urgency, 5);
  CHECK_EQ_INT(p.incremental, 0);
}

int main(void) {
  RUN(test_browser_values);
  RUN(test_ignored_parameters);
  RUN(test_last_wins);
  RUN(test_malformed);
  RUN(test_request_fields);
  RUN(test_merge_response);
  return unit_report();
}
