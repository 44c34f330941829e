/* secrets.h: the secrets file's syntax, derivation, ticket lifetime. */
#include "secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

static const char hex_a[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/* base64 of the 32 bytes 0x00..0x1f */
static const char b64_a[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

static int parse(const char *text, uint8_t (*out)[H3G_SECRET_MAX],
                 size_t *lens, char *why) {
  return h3g_secrets_parse(text, strlen(text), out, lens, why, 256);
}

static void test_parse_hex_base64_comments(void) {
  uint8_t out[H3G_SECRETS_MAX][H3G_SECRET_MAX];
  size_t lens[H3G_SECRETS_MAX];
  char why[256] = "";
  char text[512];
  snprintf(text, sizeof(text), "# a comment\n\n  %s  \r\n%s\n", hex_a, b64_a);
  CHECK_EQ_INT(parse(text, out, lens, why), 2);
  CHECK_EQ_INT((int)lens[0], 32);
  CHECK_EQ_INT((int)lens[1], 32);
  for (int i = 0; i < 32; i++)
    CHECK(out[0][i] == i && out[1][i] == i);
  /* Uppercase hex and 64-byte secrets. */
  char big[200];
  memset(big, 'A', 128);
  big[128] = '\0';
  CHECK_EQ_INT(parse(big, out, lens, why), 1);
  CHECK_EQ_INT((int)lens[0], 64);
  CHECK(out[0][0] == 0xaa && out[0][63] == 0xaa);
}

static void test_parse_refusals(void) {
  char why[256];
  char text[2048];
  /* Too short: 31 bytes. */
  CHECK_EQ_INT(parse("000102030405060708090a0b0c0d0e0f101112131415161718191a"
                     "1b1c1d1e",
                     NULL, NULL, why),
               H3G_ERR_INVAL);
  CHECK(strstr(why, "line 1: not a secret") != NULL);
  CHECK_EQ_INT(parse("# only comments\n\n", NULL, NULL, why), H3G_ERR_INVAL);
  CHECK(strstr(why, "no secret") != NULL);
  CHECK_EQ_INT(parse("", NULL, NULL, why), H3G_ERR_INVAL);
  snprintf(text, sizeof(text), "%s\nnot base64 !!\n", hex_a);
  CHECK_EQ_INT(parse(text, NULL, NULL, why), H3G_ERR_INVAL);
  CHECK(strstr(why, "line 2") != NULL);
  /* Odd number of hex digits, and too long (65 bytes). */
  snprintf(text, sizeof(text), "%s0", hex_a);
  CHECK_EQ_INT(parse(text, NULL, NULL, why), H3G_ERR_INVAL);
  memset(text, 'b', 130);
  text[130] = '\0';
  CHECK_EQ_INT(parse(text, NULL, NULL, why), H3G_ERR_INVAL);
  /* More than H3G_SECRETS_MAX. */
  text[0] = '\0';
  for (int i = 0; i <= H3G_SECRETS_MAX; i++) {
    strcat(text, hex_a);
    strcat(text, "\n");
  }
  CHECK_EQ_INT(parse(text, NULL, NULL, why), H3G_ERR_INVAL);
  CHECK(strstr(why, "more than") != NULL);
}

static char *write_tmp(const char *text) {
  static char path[64];
  snprintf(path, sizeof(path), "/tmp/h3g_secrets_XXXXXX");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0)
    return NULL;
  CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);
  return path;
}

static void test_file_and_derivation(void) {
  char why[256];
  char text[256];
  snprintf(text, sizeof(text), "%s\n", hex_a);
  char *path = write_tmp(text);
  if (path == NULL)
    return;
  CHECK_EQ_INT(h3g_secrets_check_file(path, why, sizeof(why)), 0);
  CHECK_EQ_INT(h3g_secrets_check_file("/nonexistent/h3g", why, sizeof(why)),
               H3G_ERR_IO);

  /* Two instances reading one file derive the same keys; labels differ;
   * random secrets differ from them and from each other. */
  h3g_secrets *a, *b, *r1, *r2;
  CHECK_EQ_INT(h3g_secrets_new(&a, path, 3600), 0);
  CHECK_EQ_INT(h3g_secrets_new(&b, path, 60), 0);
  CHECK_EQ_INT(h3g_secrets_new(&r1, NULL, 0), 0);
  CHECK_EQ_INT(h3g_secrets_new(&r2, "", 0), 0);
  uint8_t ka[32], kb[32], kc[32], kr1[32], kr2[32];
  CHECK_EQ_INT(h3g_secrets_derive(a, "quic stateless reset", ka, 32), 0);
  CHECK_EQ_INT(h3g_secrets_derive(b, "quic stateless reset", kb, 32), 0);
  CHECK_EQ_INT(h3g_secrets_derive(a, "quic address token", kc, 32), 0);
  CHECK_EQ_INT(h3g_secrets_derive(r1, "quic stateless reset", kr1, 32), 0);
  CHECK_EQ_INT(h3g_secrets_derive(r2, "quic stateless reset", kr2, 32), 0);
  CHECK(memcmp(ka, kb, 32) == 0);
  CHECK(memcmp(ka, kc, 32) != 0);
  CHECK(memcmp(ka, kr1, 32) != 0 && memcmp(kr1, kr2, 32) != 0);

  /* Lifetimes: one rotation period, a day without rotation. */
  CHECK_EQ_INT((int)h3g_secrets_ticket_lifetime(a), 3600);
  CHECK_EQ_INT((int)h3g_secrets_ticket_lifetime(r1), 24 * 3600);

  /* Reload: unchanged is 0; a broken file keeps the old secrets. */
  CHECK_EQ_INT(h3g_secrets_reload(a), 0);
  FILE *f = fopen(path, "w");
  fputs("garbage that is longer than before\n", f);
  fclose(f);
  CHECK(h3g_secrets_reload(a) < 0);
  CHECK_EQ_INT(h3g_secrets_derive(a, "quic stateless reset", kc, 32), 0);
  CHECK(memcmp(ka, kc, 32) == 0);
  f = fopen(path, "w");
  fprintf(f, "%s\n%s\n", b64_a, hex_a);
  fprintf(f, "# the new secret is the first: base64 of the same bytes\n");
  fclose(f);
  CHECK_EQ_INT(h3g_secrets_reload(a), 1);
  CHECK_EQ_INT(h3g_secrets_derive(a, "quic stateless reset", kc, 32), 0);
  CHECK(memcmp(ka, kc, 32) == 0); /* same bytes, same key */

  h3g_secrets_free(a);
  h3g_secrets_free(b);
  h3g_secrets_free(r1);
  h3g_secrets_free(r2);
  h3g_secrets_free(NULL);
  unlink(path);
}

int main(void) {
  RUN(test_parse_hex_base64_comments);
  RUN(test_parse_refusals);
  RUN(test_file_and_derivation);
  return unit_report();
}
