/*
 * The configuration: one INI file (inih), described by one schema table in
 * config.c (section, key, type, bounds, default, field) that
 * config/h3gate.ini mirrors key for key.
 *
 * A leaf module: depends on common.h and log.h.
 */
#ifndef H3G_CONFIG_H
#define H3G_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "log.h"

#define H3G_PATH_MAX 1024
#define H3G_HOST_MAX 256

typedef struct h3g_config {
  /* [server] */
  h3g_log_level log_level;
  char access_log[H3G_PATH_MAX];     /* "-" stdout, "off", or a file */
  uint64_t shutdown_timeout_ms;      /* grace for in-flight requests */
  char admin_address[H3G_HOST_MAX];  /* metrics listener, "" = off */
  uint16_t admin_port;

  /* [listener] */
  char listen_address[H3G_HOST_MAX]; /* IPv4 or IPv6 literal */
  uint16_t listen_port;
  char cert_file[H3G_PATH_MAX];      /* PEM chain; relative to the INI */
  char key_file[H3G_PATH_MAX];       /* PEM key; relative to the INI */
  uint64_t idle_timeout_ms;          /* QUIC max_idle_timeout */
  uint64_t handshake_timeout_ms;
  uint32_t max_connections;
  uint32_t max_streams;              /* concurrent bidi streams per conn */
  uint32_t stream_buffer_size;       /* per stream, per direction (bytes) */
  uint32_t max_header_size;          /* field section size, both sides */

  /* [upstream] */
  char upstream_host[H3G_HOST_MAX];
  uint16_t upstream_port;
  uint32_t pool_size;
  uint32_t queue_size;
  uint64_t connect_timeout_ms;
  uint64_t response_timeout_ms;      /* no byte from upstream for this long */
  uint64_t upstream_idle_timeout_ms; /* idle keep-alive expiry */
} h3g_config;

/* Fills cfg with every key's default. */
void h3g_config_defaults(h3g_config *cfg);

/*
 * Reads path over the defaults already in cfg. Every problem is reported as
 * one line "FILE:LINE: [section] key: reason" (LINE 0 when the problem is not
 * tied to a line, e.g. a missing required key or an unreadable certificate),
 * appended to err (always NUL-terminated, truncated if errlen is short).
 * Checks: unknown sections and keys, syntax errors, values of the wrong type
 * or outside their bounds, required keys, that cert and key files are
 * readable. Relative paths are resolved against the INI file's directory.
 * Returns 0, H3G_ERR_NOTFOUND (file missing) or H3G_ERR_INVAL (any problem).
 */
int h3g_config_load(h3g_config *cfg, const char *path, char *err,
                    size_t errlen);

/* Writes every key and its current value as INI text to f (a FILE *). */
void h3g_config_dump(const h3g_config *cfg, void *f);

#endif /* H3G_CONFIG_H */
