/*
 * Runs a libFuzzer target without libFuzzer: each regular file in each
 * directory named on the command line (in name order; a directory that does
 * not exist is skipped), or each file named, is passed once to
 * LLVMFuzzerTestOneInput. ctest uses it to replay the committed corpus and
 * regression inputs in every build, gcc and sanitizer builds included.
 * Shared by all fuzz targets.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as with libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Inputs are small; a bigger file is not one. */
#define REPLAY_MAX_BYTES (64u << 20)

static unsigned replayed;

/* Returns 0, or -1 when the file cannot be read. */
static int replay_file(const char *path, off_t size) {
  if (size < 0 || (uint64_t)size > REPLAY_MAX_BYTES) {
    fprintf(stderr, "replay: %s: too large\n", path);
    return -1;
  }
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    return -1;
  }
  /* Exactly size bytes on the heap, so that a sanitizer sees any read past
   * the end of the input, as under libFuzzer. */
  size_t n = (size_t)size;
  uint8_t *buf = malloc(n > 0 ? n : 1);
  if (buf == NULL || fread(buf, 1, n, f) != n) {
    fprintf(stderr, "replay: %s: cannot read\n", path);
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(buf, n);
  free(buf);
  replayed++;
  return 0;
}

static int replay_dir(const char *dir) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort);
  int rc = 0;
  if (n < 0) {
    fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
    return -1;
  }
  for (int i = 0; i < n; i++) {
    char path[4096];
    struct stat st;
    if (names[i]->d_name[0] != '.' &&
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) <
            (int)sizeof(path) &&
        stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        replay_file(path, st.st_size) != 0)
      rc = -1;
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  int rc = 0;
  if (LLVMFuzzerInitialize != NULL)
    LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      if (errno != ENOENT) {
        fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
        rc = 1;
      }
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (replay_dir(argv[i]) != 0)
        rc = 1;
    } else if (replay_file(argv[i], st.st_size) != 0) {
      rc = 1;
    }
  }
  printf("replayed %u inputs\n", replayed);
  return rc;
}
