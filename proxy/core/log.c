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

static const char *dash(const char *s) {
  return s != NULL && s[0] != '\0' ? s : "-";
}

void h3g_access_log(const h3g_access_record *rec) {
  if (access_fp == NULL)
    return;
  char ts[40];
  format_time(ts, sizeof(ts), rec->start_wall_us);
  /* Fields are space-separated; the path is quoted (it cannot contain a
   * quote that survived request validation unescaped, but be safe). */
  fprintf(access_fp,
          "%s client=%s proto=%s method=%s authority=%s path=\"%s\" "
          "status=%d in=%llu out=%llu duration_ms=%.3f route=%s upstream=%s "
          "outcome=%s%s%s\n",
          ts, dash(rec->client), dash(rec->protocol), dash(rec->method),
          dash(rec->authority), dash(rec->path), rec->status,
          (unsigned long long)rec->bytes_in, (unsigned long long)rec->bytes_out,
          (double)rec->duration_us / 1000.0, dash(rec->route),
          dash(rec->upstream), dash(rec->outcome),
          rec->tunnel != NULL ? " tunnel=" : "",
          rec->tunnel != NULL ? rec->tunnel : "");
}
