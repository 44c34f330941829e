/*
 * libFuzzer target for the configuration reader (config.c): the input is an
 * INI file, loaded from memory with h3g_config_load_string.
 *
 * Besides memory errors it checks the reader's promises: a load returns 0 or
 * H3G_ERR_INVAL, a failed load says why, and a loaded config dumps to text
 * that loads back to the same dump. Relative paths resolve into a private
 * directory holding a stand-in certificate (c.pem) and key (k.pem), so
 * inputs that name them load fully and reach the dump round trip.
 */
#define _GNU_SOURCE /* open_memstream */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fixture[256];

static void remove_fixture(void) {
  char path[300];
  snprintf(path, sizeof(path), "%s/c.pem", fixture);
  unlink(path);
  snprintf(path, sizeof(path), "%s/k.pem", fixture);
  unlink(path);
  rmdir(fixture);
}

static void write_fixture(const char *name, const char *text) {
  char path[300];
  snprintf(path, sizeof(path), "%s/%s", fixture, name);
  FILE *f = fopen(path, "w");
  if (f == NULL)
    abort();
  fputs(text, f);
  fclose(f);
}

/* The directory relative paths resolve against, made on first use. */
static const char *fixture_dir(void) {
  if (fixture[0] != '\0')
    return fixture;
  const char *tmp = getenv("TMPDIR");
  snprintf(fixture, sizeof(fixture), "%s/h3g-fuzz-config-XXXXXX",
           tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
  if (mkdtemp(fixture) == NULL)
    abort();
  write_fixture("c.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n"
                         "-----END CERTIFICATE-----\n");
  write_fixture("k.pem", "-----BEGIN PRIVATE KEY-----\nMIGH\n"
                         "-----END PRIVATE KEY-----\n");
  atexit(remove_fixture);
  return fixture;
}

static char *dump(const h3g_config *cfg, size_t *len) {
  char *text = NULL;
  FILE *f = open_memstream(&text, len);
  if (f == NULL)
    abort();
  h3g_config_dump(cfg, f);
  fclose(f);
  return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char err[16384];
  h3g_config cfg;
  h3g_config_defaults(&cfg);
  int rc = h3g_config_load_string(&cfg, (const char *)data, size, "fuzz.ini",
                                  fixture_dir(), err, sizeof(err));
  if (memchr(err, '\0', sizeof(err)) == NULL)
    abort();
  if (rc != 0) {
    if (rc != H3G_ERR_INVAL || err[0] == '\0')
      abort();
    return 0;
  }

  size_t len1, len2;
  char *text1 = dump(&cfg, &len1);
  h3g_config again;
  h3g_config_defaults(&again);
  rc = h3g_config_load_string(&again, text1, len1, "dump.ini", NULL, err,
                              sizeof(err));
  /* Only a value with a run of blanks longer than inih's line buffer
   * cannot be written back (inih trims every piece of a long line). */
  if (rc != 0 && strstr(err, "line too long to split") == NULL)
    abort();
  if (rc == 0) {
    char *text2 = dump(&again, &len2);
    if (len1 != len2 || memcmp(text1, text2, len1) != 0)
      abort();
    free(text2);
  }
  free(text1);
  /* A loaded configuration owns its groups and routes. */
  h3g_config_free(&again);
  h3g_config_free(&cfg);
  return 0;
}
