/*
 * The access log's record of one finished request, and its three line
 * formats ([server] access_log_format): kv (key=value, the default), json
 * (one object per line) and combined (Apache/nginx "combined" followed by
 * key=value extensions). Field names and their meaning: README "Logs";
 * the sink (stdout or a file, buffered) is log.c's.
 *
 * A leaf: formats into a caller's buffer, no I/O, no allocation. The loop's
 * thread only: it keeps the last second it formatted, for the next line.
 */
#ifndef H3G_ACCESS_LOG_H
#define H3G_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

/* [server] access_log_format, in the order of config.c's names. */
typedef enum h3g_access_format {
  H3G_ACCESS_KV = 0,
  H3G_ACCESS_JSON = 1,
  H3G_ACCESS_COMBINED = 2,
} h3g_access_format;

/* The QUIC connection ID as the access log shows it: its first 8 bytes in
 * hex (16 characters), plus the NUL. */
#define H3G_ACCESS_CID_LEN 16

/* One finished request, as the access log records it. Strings may be NULL
 * (shown as "-", or null in JSON) unless said otherwise. */
typedef struct h3g_access_record {
  uint64_t start_wall_us; /* when the exchange began (its stream opened;
                           * HTTP/1.1: its head was read) */
  uint64_t duration_us;   /* until the last response byte was handed over */
  const char *client;     /* "ip:port" */
  const char *protocol;   /* "h3", "h2", "http/1.1" */
  const char *method;
  const char *authority;
  const char *path;
  int status;           /* 0 when no status was sent (stream reset) */
  uint64_t bytes_in;    /* request body bytes received from the client */
  uint64_t bytes_out;   /* response body bytes sent to the client */
  const char *upstream; /* the server the request went to ("host:port",
                         * "unix:/path", "https://host:port") or whose
                         * connect failed, "-" when the gateway
                         * answered alone */
  const char *route;    /* the [route] chosen, "-" before or none */
  const char *outcome;  /* "ok", or why the exchange ended early */
  const char *tunnel;   /* the protocol tunnelled ("websocket"), NULL
                         * for a plain exchange (no kv field logged) */
  /* How long the upstream connection handed to the request took to open
   * (connect, TLS handshake), 0 for one kept alive from earlier; -1 when
   * no connection was handed over. */
  int64_t connect_us;
  /* From the hand-over of that connection (the request head goes out) to
   * the first response byte; -1 when none came. */
  int64_t first_byte_us;
  const char *cid;     /* HTTP/3: the connection's ID, hex (at most
                        * H3G_ACCESS_CID_LEN shown); else NULL */
  int early;           /* 1: the request came as 0-RTT early data */
  const char *referer; /* the request's fields, NULL or "" if absent */
  const char *user_agent;
} h3g_access_record;

/*
 * Writes rec as one line in format fmt into buf, ending with '\n' and NUL
 * terminated, and returns its length (without the NUL). cap must be at
 * least 2; a line that does not fit is cut and still ends with '\n'
 * (H3G_ACCESS_LINE_MAX fits any record whose strings stay within the
 * bridge's caps: method 31, authority 255, path 1023, referer and
 * user-agent 511 bytes, names and addresses 300).
 *
 * Escaping: kv and combined quote the path, referer and user-agent (and
 * combined its request line), with '"' and '\' escaped by a backslash and
 * control bytes as \xHH; unquoted kv values escape spaces the same way.
 * JSON strings are escaped as JSON requires, and bytes that are not UTF-8
 * appear as \u00XX (their Latin-1 reading), so every line is valid JSON.
 */
#define H3G_ACCESS_LINE_MAX (32 * 1024)
size_t h3g_access_format_line(char *buf, size_t cap, h3g_access_format fmt,
                              const h3g_access_record *rec);

#endif /* H3G_ACCESS_LOG_H */
