/*
 * Levelled diagnostics on stderr, and the access log's sink (one line per
 * request, formatted by access_log.h).
 */
#ifndef H3G_LOG_H
#define H3G_LOG_H

#include <stdint.h>

#include "access_log.h"
#include "common.h"

typedef enum h3g_log_level {
  H3G_LOG_ERROR = 0,
  H3G_LOG_WARN = 1,
  H3G_LOG_INFO = 2,
  H3G_LOG_DEBUG = 3,
} h3g_log_level;

/* Sets the most verbose level that is printed (default H3G_LOG_INFO). */
void h3g_log_set_level(h3g_log_level level);

/*
 * Parses "error", "warn", "info" or "debug". Returns 0 and sets *out, or
 * H3G_ERR_INVAL for anything else.
 */
int h3g_log_level_parse(const char *s, h3g_log_level *out);

int h3g_log_enabled(h3g_log_level level);

/* Prints "<time> <level> <message>\n" to stderr when level is enabled. */
void h3g_log(h3g_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define h3g_error(...) h3g_log(H3G_LOG_ERROR, __VA_ARGS__)
#define h3g_warn(...) h3g_log(H3G_LOG_WARN, __VA_ARGS__)
#define h3g_info(...) h3g_log(H3G_LOG_INFO, __VA_ARGS__)
#define h3g_debug(...)                                                         \
  do {                                                                         \
    if (h3g_log_enabled(H3G_LOG_DEBUG))                                        \
      h3g_log(H3G_LOG_DEBUG, __VA_ARGS__);                                     \
  } while (0)

/*
 * Opens the access log: "-" or NULL means stdout, "off" disables it, anything
 * else is a file opened for append. Returns 0 or H3G_ERR_IO.
 */
int h3g_access_log_open(const char *path);
void h3g_access_log_close(void);

/* Writes buffered access log lines out (once per loop iteration). */
void h3g_access_log_flush(void);

/* The format of the lines written from now on (H3G_ACCESS_KV until
 * set). */
void h3g_access_log_set_format(h3g_access_format fmt);

/* Writes one line for rec in the current format (access_log.h). */
void h3g_access_log(const h3g_access_record *rec);

#endif /* H3G_LOG_H */
