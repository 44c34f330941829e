/*
 * Diagnostics go to stderr unbuffered-by-line; the access log is a stdio
 * stream with a large buffer flushed once per event-loop iteration
 * (h3g_access_log_flush), so logging a request costs no system call.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static h3g_log_level log_level = H3G_LOG_INFO;
static FILE *access_fp;
static int access_owned;
static h3g_access_format access_format = H3G_ACCESS_KV;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void h3g_log_set_level(h3g_log_level level) { log_level = level; }

int h3g_log_level_parse(const char *s, h3g_log_level *out) {
  for (size_t i = 0; i < H3G_ARRAY_LEN(level_names); i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (h3g_log_level)i;
      return 0;
    }
  }
  return H3G_ERR_INVAL;
}

int h3g_log_enabled(h3g_log_level level) { return level <= log_level; }

static void format_time(char *buf, size_t cap, uint64_t wall_us) {
  time_t secs = (time_t)(wall_us / 1000000u);
  struct tm tm;
  gmtime_r(&secs, &tm);
  size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, cap - n, ".%03uZ", (unsigned)(wall_us / 1000u % 1000u));
}

void h3g_log(h3g_log_level level, const char *fmt, ...) {
  if (!h3g_log_enabled(level))
    return;
  char ts[40];
  char msg[1024];
  va_list ap;
  format_time(ts, sizeof(ts), h3g_wall_us());
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s %s %s\n", ts, level_names[level], msg);
}

int h3g_access_log_open(const char *path) {
  static int stdout_buffered;
  FILE *fp = NULL;
  int owned = 0;
  if (path == NULL || strcmp(path, "-") == 0) {
    fp = stdout;
  } else if (strcmp(path, "off") != 0) {
    /* Opened before the old one closes: a reopen that fails (SIGUSR1 with
     * the directory gone) keeps logging where it did. */
    fp = fopen(path, "a");
    if (fp == NULL) {
      h3g_error("access log %s: %s", path, strerror(errno));
      return H3G_ERR_IO;
    }
    owned = 1;
    setvbuf(fp, NULL, _IOFBF, 64 * 1024);
  }
  h3g_access_log_close();
  /* stdout's buffer can be set only before its first use. */
  if (fp == stdout && !stdout_buffered) {
    setvbuf(stdout, NULL, _IOFBF, 64 * 1024);
    stdout_buffered = 1;
  }
  access_fp = fp;
  access_owned = owned;
  return 0;
}

void h3g_access_log_close(void) {
  if (access_fp != NULL) {
    fflush(access_fp);
    if (access_owned)
      fclose(access_fp);
  }
  access_fp = NULL;
  access_owned = 0;
}

void h3g_access_log_flush(void) {
  if (access_fp != NULL)
    fflush(access_fp);
}

void h3g_access_log_set_format(h3g_access_format fmt) { access_format = fmt; }

void h3g_access_log(const h3g_access_record *rec) {
  /* One line at a time on the loop's thread: a static buffer keeps the
   * stack small, and the line goes to stdio's buffer in one call. */
  static char line[H3G_ACCESS_LINE_MAX];
  if (access_fp == NULL)
    return;
  size_t n = h3g_access_format_line(line, sizeof(line), access_format, rec);
  fwrite(line, 1, n, access_fp);
}
