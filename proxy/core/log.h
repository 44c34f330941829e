/*
 * Levelled diagnostics on stderr, and the access log (one line per request).
 */
#ifndef H3G_LOG_H
#define H3G_LOG_H

#include <stdint.h>

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

/* One finished request, as the access log records it. */
typedef struct h3g_access_record {
  uint64_t start_wall_us;   /* when the request headers were complete */
  uint64_t duration_us;     /* until the last response byte was handed over */
  const char *client;       /* "ip:port" */
  const char *protocol;     /* "h3", "h2", "http/1.1" */
  const char *method;
  const char *authority;
  const char *path;
  int status;               /* 0 when no status was sent (stream reset) */
  uint64_t bytes_in;        /* request body bytes received from the client */
  uint64_t bytes_out;       /* response body bytes sent to the client */
  const char *upstream;     /* the server the request went to ("host:port",
                             * "unix:/path", "https://host:port") or whose
                             * connect failed, "-" when the gateway
                             * answered alone */
  const char *route;        /* the [route] chosen, "-" before or none */
  const char *outcome;      /* "ok", or why the exchange ended early */
  const char *tunnel;       /* the protocol tunnelled ("websocket"), NULL
                             * for a plain exchange (no field logged) */
} h3g_access_record;

/*
 * Opens the access log: "-" or NULL means stdout, "off" disables it, anything
 * else is a file opened for append. Returns 0 or H3G_ERR_IO.
 */
int h3g_access_log_open(const char *path);
void h3g_access_log_close(void);

/* Writes buffered access log lines out (once per loop iteration). */
void h3g_access_log_flush(void);

/* Writes one line for rec (fields that are NULL print as "-"). */
void h3g_access_log(const h3g_access_record *rec);

#endif /* H3G_LOG_H */
