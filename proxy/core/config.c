/*
 * The configuration: one schema table and an INI reader in front of inih.
 *
 * Policy is data: every key is one row of `schema` (section, key, type,
 * bounds, default text, field). Defaults go through the same value parser
 * as the file, so a default can never drift from what a file may say, and
 * h3g_config_dump walks the same rows, so it cannot forget a key.
 *
 * Why a reader of our own in front of inih (on_read_line): inih reads each
 * line into a fixed 200-byte stack buffer (INI_MAX_LINE, compiled into the
 * packaged library) and parses the rest of a longer line as if it were a
 * line of its own, so a long comment can turn into a key. It remembers only
 * the first bad line, passes no line number to the handler in the packaged
 * build, strips " ;" comments but not " #" ones, and reads an indented line
 * as the continuation of the previous value. So the reader hands inih one
 * physical line at a time, already stripped of blanks and comments, reports
 * syntax problems itself (every one, with its line number), tracks the
 * current [section], and hands over only lines inih will accept; inih splits
 * "key = value". A key line too long for inih's buffer is handed over as a
 * first piece and indented continuation pieces, each cut between two
 * non-blank bytes so that inih's trimming loses nothing, and on_key joins
 * them. The reader asks for nothing inih does not do by default, and checks
 * that the pieces came back joined, so a differently built inih yields an
 * error, never a wrong value.
 */
#define _GNU_SOURCE /* memmem */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#define T_SEC 1000ull
#define T_MIN (60 * T_SEC)
#define T_HOUR (60 * T_MIN)
#define Z_KIB 1024ull
#define Z_MIB (1024 * Z_KIB)
#define Z_GIB (1024 * Z_MIB)

/* A configuration file is small; a bigger one is a mistake (or an attack on
 * a fuzzer), and the cap bounds the reader's buffers. */
#define CONFIG_MAX_BYTES (1u << 20)
/* How much of a name or value from the file a message repeats (paths are
 * repeated whole). */
#define SHOWN_MAX 48
/* Room kept in err for the last line, "(N more problems not shown)". */
#define ERR_TAIL 40
/* How far into a cert or key file to look for its PEM header. */
#define PEM_SCAN_BYTES (64 * 1024)
/* Keys longer than this get no "did you mean" (and it bounds the work). */
#define SUGGEST_MAX 64

typedef enum opt_type {
  OPT_ENUM,       /* one of names[], stored as its index in an int-sized enum */
  OPT_BOOL,       /* stored as 0 or 1 in an unsigned integer field */
  OPT_UINT,       /* a count */
  OPT_DURATION,   /* stored in milliseconds */
  OPT_SIZE,       /* stored in bytes */
  OPT_ADDRESS,    /* an IPv4 or IPv6 literal ("[v6]" accepted); "" allowed
                     when the default is "" (meaning "as elsewhere") */
  OPT_HOST,       /* "", a DNS name or an IP literal (not bound) */
  OPT_PATH,       /* a file path, resolved against the INI's directory */
  OPT_LOG_TARGET, /* "-" (stdout), "off", or an OPT_PATH */
  OPT_FILE,       /* "off" (stored as "") or a readable regular file,
                     resolved against the INI's directory */
  OPT_DIR,        /* "off" (stored as "") or a writable directory, resolved
                     against the INI's directory */
  OPT_OUTPUT,     /* "off" (stored as "") or a file the gateway appends to:
                     a writable regular file, or a new name in a writable
                     directory; resolved against the INI's directory */
  OPT_HOSTPORT,   /* host:port, host a DNS name or an address */
  OPT_LISTEN,     /* "off", or address:port (an IP literal: it is bound) */
  OPT_CIDRS,      /* comma-separated IP[/prefix] list, also parsed into
                     cfg->trusted[] (only [forwarding] trusted_proxies) */
  OPT_WORD,       /* "" or a name of lowercase letters, digits and "_" (a
                     kernel module's name, say), at most size - 1 bytes */
  OPT_PORT,       /* a port number in bounds, or "any" (H3G_PORT_ANY: the
                     kernel picks a free one, shown on the ready line) */
  OPT_VERSIONS,   /* comma-separated QUIC versions, each once, in order of
                     preference; also parsed into cfg->quic_version[] (only
                     [listener] quic_versions) */
  /* The named sections' own types (base is the group or route): */
  OPT_SERVER,     /* ADDRESS [weight=N] [backup], appended to servers */
  OPT_HASH_KEY,   /* client_ip | header:NAME | cookie:NAME */
  OPT_HEALTH,     /* "off" or "METHOD /path" */
  OPT_STATUS,     /* a status code or range "200-399" */
  OPT_CA,         /* "system" or a readable PEM file of certificates */
  OPT_NAME,       /* a section name ([upstream NAME] for a route) */
  OPT_HOSTS,      /* host names and *.wildcards, blank or comma separated */
  OPT_PATHS,      /* path prefixes, blank or comma separated */
  OPT_HEADER_ADD, /* "Name: value", appended to the h3g_header_edit list at
                     off, its count at port_off */
  OPT_HEADER_DEL, /* "Name", likewise */
} opt_type;

typedef struct opt {
  const char *section;
  const char *key;
  opt_type type;
  uint64_t min, max;        /* bounds of the number, or of the port */
  const char *def;          /* default as INI text; NULL: required */
  size_t off, size;         /* the field in h3g_config */
  size_t port_off;          /* OPT_HOSTPORT, OPT_LISTEN: the uint16_t port */
  const char *const *names; /* OPT_ENUM: the words, NULL-terminated */
  const char *pem;          /* OPT_PATH: text the file must contain, */
  const char *pem_kind;     /* and what it is then */
  bool repeat;              /* may be given on several lines */
} opt;

#define OPT(sec, k, t, lo, hi, d, f)                                           \
  .section = (sec), .key = (k), .type = (t), .min = (lo), .max = (hi),         \
  .def = (d), .off = offsetof(h3g_config, f),                                  \
  .size = sizeof(((h3g_config *)0)->f)
#define PORT_FIELD(f) .port_off = offsetof(h3g_config, f)

/* [listener] retry: 0 auto, 1 always, 2 never. */
static const char *const retry_names[] = {"auto", "always", "never", NULL};

/* In h3g_cc_algo order. */
static const char *const cc_names[] = {"cubic", "bbr", "reno", NULL};

/* In h3g_log_level order. */
static const char *const log_level_names[] = {"error", "warn", "info", "debug",
                                              NULL};
/* In h3g_alt_svc_upstream order. */
static const char *const alt_svc_upstream_names[] = {"replace", "keep", NULL};

/* [server] access_log_format, in h3g_access_format order. */
static const char *const access_format_names[] = {"kv", "json", "combined",
                                                  NULL};

/* [server] no_route, in the order of H3G_NO_ROUTE_*. */
static const char *const no_route_names[] = {"misdirected", "not_found", NULL};

/* Mirrored key for key, with the reasons, by config/h3gate.ini. */
static const opt schema[] = {
    {OPT("server", "log_level", OPT_ENUM, 0, 0, "info", log_level),
     .names = log_level_names},
    {OPT("server", "access_log", OPT_LOG_TARGET, 0, 0, "-", access_log)},
    {OPT("server", "access_log_format", OPT_ENUM, 0, 0, "kv",
         access_log_format),
     .names = access_format_names},
    {OPT("server", "drain_delay", OPT_DURATION, 0, 5 * T_MIN, "0s",
         drain_delay_ms)},
    {OPT("server", "pid_file", OPT_OUTPUT, 0, 0, "off", pid_file)},
    {OPT("server", "shutdown_timeout", OPT_DURATION, 0, T_HOUR, "10s",
         shutdown_timeout_ms)},
    {OPT("server", "admin", OPT_LISTEN, 0, 65535, "off", admin_address),
     PORT_FIELD(admin_port)},
    {OPT("server", "no_route", OPT_ENUM, 0, 0, "misdirected", no_route),
     .names = no_route_names},

    {OPT("listener", "enabled", OPT_BOOL, 0, 1, "yes", listen_enabled)},
    {OPT("listener", "address", OPT_ADDRESS, 0, 0, "0.0.0.0", listen_address)},
    {OPT("listener", "port", OPT_PORT, 0, 65535, "443", listen_port)},
    {OPT("listener", "cert", OPT_PATH, 0, 0, NULL, cert_file),
     .pem = "-----BEGIN CERTIFICATE-----", .pem_kind = "certificate"},
    {OPT("listener", "key", OPT_PATH, 0, 0, NULL, key_file),
     .pem = "PRIVATE KEY-----", .pem_kind = "private key"},
    {OPT("listener", "idle_timeout", OPT_DURATION, T_SEC, T_HOUR, "30s",
         idle_timeout_ms)},
    {OPT("listener", "handshake_timeout", OPT_DURATION, T_SEC, 5 * T_MIN, "10s",
         handshake_timeout_ms)},
    {OPT("listener", "max_connections", OPT_UINT, 1, 1000000, "10000",
         max_connections)},
    {OPT("listener", "max_streams", OPT_UINT, 1, 10000, "100", max_streams)},
    {OPT("listener", "stream_buffer_size", OPT_SIZE, 16 * Z_KIB, 16 * Z_MIB,
         "256KiB", stream_buffer_size)},
    {OPT("listener", "connection_window", OPT_SIZE, 64 * Z_KIB, Z_GIB, "16MiB",
         connection_window)},
    {OPT("listener", "max_stream_window", OPT_SIZE, 16 * Z_KIB, Z_GIB, "16MiB",
         max_stream_window)},
    {OPT("listener", "max_header_size", OPT_SIZE, Z_KIB, Z_MIB, "64KiB",
         max_header_size)},
    {OPT("listener", "max_request_body", OPT_SIZE, 0, 1024 * Z_GIB, "0",
         max_request_body)},
    {OPT("listener", "request_header_timeout", OPT_DURATION, T_SEC, 5 * T_MIN,
         "10s", request_header_timeout_ms)},
    {OPT("listener", "request_body_timeout", OPT_DURATION, 0, T_HOUR, "60s",
         request_body_timeout_ms)},
    {OPT("listener", "congestion_control", OPT_ENUM, 0, 0, "bbr",
         congestion_control),
     .names = cc_names},
    {OPT("listener", "quic_versions", OPT_VERSIONS, 0, 0, "v2, v1",
         quic_versions)},
    {OPT("listener", "retry", OPT_ENUM, 0, 0, "auto", retry),
     .names = retry_names},
    {OPT("listener", "retry_threshold", OPT_UINT, 0, 1000000, "200",
         retry_threshold)},
    {OPT("listener", "max_handshakes_per_source", OPT_UINT, 0, 1000000, "32",
         max_handshakes_per_source)},
    {OPT("listener", "max_unvalidated_handshakes", OPT_UINT, 0, 1000000, "1024",
         max_unvalidated_handshakes)},
    {OPT("listener", "new_token_lifetime", OPT_DURATION, 0, 7 * 24 * T_HOUR,
         "24h", new_token_lifetime_ms)},
    {OPT("listener", "max_resets_per_second", OPT_UINT, 1, 1000000, "200",
         max_resets_per_second)},
    {OPT("listener", "secrets_file", OPT_FILE, 0, 0, "off", secrets_file)},
    {OPT("listener", "ticket_rotation", OPT_DURATION, 0, 7 * 24 * T_HOUR,
         "12h", ticket_rotation_ms)},
    {OPT("listener", "early_data", OPT_BOOL, 0, 1, "on", early_data)},
    {OPT("listener", "websocket", OPT_BOOL, 0, 1, "on", websocket)},
    {OPT("listener", "tunnel_idle_timeout", OPT_DURATION, T_SEC, 7 * 24 * T_HOUR,
         "1h", tunnel_idle_timeout_ms)},
    {OPT("listener", "max_tunnels", OPT_UINT, 0, 10000000, "10000",
         max_tunnels)},
    {OPT("listener", "max_tunnels_per_connection", OPT_UINT, 0, 10000, "100",
         max_tunnels_per_connection)},

    {OPT("tcp", "enabled", OPT_BOOL, 0, 1, "yes", tcp_enabled)},
    {OPT("tcp", "address", OPT_ADDRESS, 0, 0, "", tcp_address)},
    {OPT("tcp", "port", OPT_PORT, 0, 65535, "0", tcp_port)},
    {OPT("tcp", "handshake_timeout", OPT_DURATION, T_SEC, 5 * T_MIN, "10s",
         tcp_handshake_timeout_ms)},
    {OPT("tcp", "idle_timeout", OPT_DURATION, T_SEC, T_HOUR, "60s",
         tcp_idle_timeout_ms)},
    {OPT("tcp", "header_timeout", OPT_DURATION, T_SEC, 5 * T_MIN, "10s",
         tcp_header_timeout_ms)},
    {OPT("tcp", "congestion_control", OPT_WORD, 0, 0, "",
         tcp_congestion_control)},
    {OPT("tcp", "max_connections", OPT_UINT, 1, 1000000, "10000",
         tcp_max_connections)},

    {OPT("alt_svc", "enabled", OPT_BOOL, 0, 1, "yes", alt_svc_enabled)},
    {OPT("alt_svc", "port", OPT_UINT, 0, 65535, "0", alt_svc_port)},
    {OPT("alt_svc", "host", OPT_HOST, 0, 0, "", alt_svc_host)},
    {OPT("alt_svc", "max_age", OPT_UINT, 0, 1000000000, "86400",
         alt_svc_max_age)},
    {OPT("alt_svc", "upstream", OPT_ENUM, 0, 0, "replace", alt_svc_upstream),
     .names = alt_svc_upstream_names},

    {OPT("redirect", "address", OPT_ADDRESS, 0, 0, "", redirect_address)},
    {OPT("redirect", "port", OPT_PORT, 0, 65535, "0", redirect_port)},

    {OPT("forwarding", "forwarded", OPT_BOOL, 0, 1, "off", fwd_forwarded)},
    {OPT("forwarding", "x_forwarded", OPT_BOOL, 0, 1, "on", fwd_x_forwarded)},
    {OPT("forwarding", "via", OPT_BOOL, 0, 1, "on", fwd_via)},
    {OPT("forwarding", "trusted_proxies", OPT_CIDRS, 0, 0, "",
         trusted_proxies)},

    {OPT("debug", "qlog_dir", OPT_DIR, 0, 0, "off", qlog_dir)},
    {OPT("debug", "keylog_file", OPT_OUTPUT, 0, 0, "off", keylog_file)},
};

#define N_OPTS H3G_ARRAY_LEN(schema)

/* The keys of [upstream NAME] sections: fields of h3g_group_conf. */
#define GOPT(k, t, lo, hi, d, f)                                               \
  .section = "upstream", .key = (k), .type = (t), .min = (lo), .max = (hi),    \
  .def = (d), .off = offsetof(h3g_group_conf, f),                              \
  .size = sizeof(((h3g_group_conf *)0)->f)

static const char *const balance_names[] = {"round_robin", "least_conn",
                                            "hash", NULL};

static const opt group_schema[] = {
    {GOPT("server", OPT_SERVER, 1, 65535, NULL, servers), .repeat = true},
    {GOPT("balance", OPT_ENUM, 0, 0, "round_robin", balance),
     .names = balance_names},
    {GOPT("hash_key", OPT_HASH_KEY, 0, 0, "client_ip", hash_key_text)},
    {GOPT("pool_size", OPT_UINT, 1, 10000, "64", pool_size)},
    {GOPT("queue_size", OPT_UINT, 0, 1000000, "1024", queue_size)},
    {GOPT("connect_timeout", OPT_DURATION, 1, 5 * T_MIN, "5s",
          connect_timeout_ms)},
    {GOPT("response_timeout", OPT_DURATION, 1, T_HOUR, "60s",
          response_timeout_ms)},
    {GOPT("idle_timeout", OPT_DURATION, T_SEC, T_HOUR, "4s", idle_timeout_ms)},
    {GOPT("expect_continue_timeout", OPT_DURATION, 1, T_MIN, "1s",
          expect_continue_timeout_ms)},
    {GOPT("retries", OPT_UINT, 0, 10, "2", retries)},
    {GOPT("max_fails", OPT_UINT, 0, 1000, "3", max_fails)},
    {GOPT("fail_timeout", OPT_DURATION, 100, T_HOUR, "5s", fail_timeout_ms)},
    {GOPT("max_fail_timeout", OPT_DURATION, 100, 24 * T_HOUR, "2m",
          max_fail_timeout_ms)},
    {GOPT("resolve", OPT_DURATION, 0, 24 * T_HOUR, "30s", resolve_interval_ms)},
    {GOPT("health_check", OPT_HEALTH, 0, 0, "off", health_check)},
    {GOPT("health_interval", OPT_DURATION, 10, T_HOUR, "5s",
          health_interval_ms)},
    {GOPT("health_timeout", OPT_DURATION, 10, 5 * T_MIN, "2s",
          health_timeout_ms)},
    {GOPT("health_status", OPT_STATUS, 100, 599, "200-399", health_status)},
    {GOPT("health_rise", OPT_UINT, 1, 100, "2", health_rise)},
    {GOPT("health_fall", OPT_UINT, 1, 100, "3", health_fall)},
    {GOPT("health_host", OPT_HOST, 0, 0, "", health_host)},
    {GOPT("tls_ca", OPT_CA, 0, 0, "system", tls_ca)},
    {GOPT("tls_verify", OPT_BOOL, 0, 1, "on", tls_verify)},
    {GOPT("tls_sni", OPT_HOST, 0, 0, "", tls_sni)},
    {GOPT("tls_cert", OPT_FILE, 0, 0, "off", tls_cert),
     .pem = "-----BEGIN CERTIFICATE-----", .pem_kind = "certificate"},
    {GOPT("tls_key", OPT_FILE, 0, 0, "off", tls_key),
     .pem = "PRIVATE KEY-----", .pem_kind = "private key"},
};

#define N_GROUP_OPTS H3G_ARRAY_LEN(group_schema)
_Static_assert(N_GROUP_OPTS <= H3G_GROUP_KEYS_MAX, "key_line too short");

/* The keys of [route NAME] sections: fields of h3g_route_conf. A route
 * setting without a default is inherited (finish_routes). */
#define ROPT(k, t, lo, hi, d, f)                                               \
  .section = "route", .key = (k), .type = (t), .min = (lo), .max = (hi),       \
  .def = (d), .off = offsetof(h3g_route_conf, f),                              \
  .size = sizeof(((h3g_route_conf *)0)->f)
#define EDIT_COUNT(f) .port_off = offsetof(h3g_route_conf, f)

static const opt route_schema[] = {
    {ROPT("host", OPT_HOSTS, 0, 0, "", hosts_text)},
    {ROPT("path", OPT_PATHS, 0, 0, "/", paths_text)},
    {ROPT("upstream", OPT_NAME, 0, 0, NULL, upstream)},
    {ROPT("response_timeout", OPT_DURATION, 1, T_HOUR, NULL,
          s.response_timeout_ms)},
    {ROPT("request_body_timeout", OPT_DURATION, 0, T_HOUR, NULL,
          s.request_body_timeout_ms)},
    {ROPT("expect_continue_timeout", OPT_DURATION, 1, T_MIN, NULL,
          s.expect_continue_timeout_ms)},
    {ROPT("max_request_body", OPT_SIZE, 0, 1024 * Z_GIB, NULL,
          s.max_request_body)},
    {ROPT("early_data", OPT_BOOL, 0, 1, NULL, s.early_data)},
    {ROPT("forwarded", OPT_BOOL, 0, 1, NULL, s.fwd_forwarded)},
    {ROPT("x_forwarded", OPT_BOOL, 0, 1, NULL, s.fwd_x_forwarded)},
    {ROPT("via", OPT_BOOL, 0, 1, NULL, s.fwd_via)},
    {ROPT("alt_svc", OPT_BOOL, 0, 1, NULL, s.alt_svc)},
    {ROPT("websocket", OPT_BOOL, 0, 1, NULL, s.websocket)},
    {ROPT("add_request_header", OPT_HEADER_ADD, 0, 0, NULL, s.add_request),
     EDIT_COUNT(s.nadd_request), .repeat = true},
    {ROPT("remove_request_header", OPT_HEADER_DEL, 0, 0, NULL,
          s.remove_request),
     EDIT_COUNT(s.nremove_request), .repeat = true},
    {ROPT("add_response_header", OPT_HEADER_ADD, 0, 0, NULL, s.add_response),
     EDIT_COUNT(s.nadd_response), .repeat = true},
};

#define N_ROUTE_OPTS H3G_ARRAY_LEN(route_schema)
_Static_assert(N_ROUTE_OPTS <= H3G_ROUTE_KEYS_MAX, "key_line too short");

/* The [route] keys a route inherits, and from where. */
enum { INHERIT_GROUP, INHERIT_GLOBAL };
static const struct {
  const char *key;
  int from;
  size_t src_off; /* in h3g_group_conf or h3g_config */
} route_inherit[] = {
    {"response_timeout", INHERIT_GROUP,
     offsetof(h3g_group_conf, response_timeout_ms)},
    {"expect_continue_timeout", INHERIT_GROUP,
     offsetof(h3g_group_conf, expect_continue_timeout_ms)},
    {"request_body_timeout", INHERIT_GLOBAL,
     offsetof(h3g_config, request_body_timeout_ms)},
    {"max_request_body", INHERIT_GLOBAL,
     offsetof(h3g_config, max_request_body)},
    {"early_data", INHERIT_GLOBAL, offsetof(h3g_config, early_data)},
    {"forwarded", INHERIT_GLOBAL, offsetof(h3g_config, fwd_forwarded)},
    {"x_forwarded", INHERIT_GLOBAL, offsetof(h3g_config, fwd_x_forwarded)},
    {"via", INHERIT_GLOBAL, offsetof(h3g_config, fwd_via)},
    {"alt_svc", INHERIT_GLOBAL, offsetof(h3g_config, alt_svc_enabled)},
    {"websocket", INHERIT_GLOBAL, offsetof(h3g_config, websocket)},
};

_Static_assert(sizeof(h3g_log_level) == sizeof(uint32_t),
               "OPT_ENUM stores a 32-bit index");
_Static_assert(sizeof(((h3g_config *)0)->admin_port) == sizeof(uint16_t),
               "port fields are uint16_t");

typedef struct unit {
  const char *name;
  uint64_t mult;
} unit;

static const unit duration_units[] = {
    {"ms", 1}, {"s", T_SEC}, {"m", T_MIN}, {"h", T_HOUR}, {"", T_SEC}};
static const unit size_units[] = {{"B", 1},       {"k", Z_KIB}, {"K", Z_KIB},
                                  {"KiB", Z_KIB}, {"m", Z_MIB}, {"M", Z_MIB},
                                  {"MiB", Z_MIB}, {"g", Z_GIB}, {"G", Z_GIB},
                                  {"GiB", Z_GIB}, {"", 1}};

/* ---- numbers ------------------------------------------------------------ */

/* Digits only: signs, blanks and "0x" are mistakes in a config file. */
static int parse_digits(const char **ps, uint64_t *out) {
  const char *s = *ps;
  uint64_t v = 0;
  if (!isdigit((unsigned char)*s))
    return H3G_ERR_INVAL;
  for (; isdigit((unsigned char)*s); s++) {
    uint64_t d = (uint64_t)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return H3G_ERR_TOOBIG;
    v = v * 10 + d;
  }
  *ps = s;
  *out = v;
  return 0;
}

static int parse_uint(const char *s, uint64_t *out) {
  uint64_t v;
  int rc = parse_digits(&s, &v);
  if (rc != 0)
    return rc;
  if (*s != '\0')
    return H3G_ERR_INVAL;
  *out = v;
  return 0;
}

static int parse_with_unit(const char *s, const unit *units, size_t n,
                           uint64_t *out) {
  uint64_t v;
  int rc = parse_digits(&s, &v);
  if (rc != 0)
    return rc;
  while (*s == ' ' || *s == '\t')
    s++;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(s, units[i].name) == 0) {
      if (v > UINT64_MAX / units[i].mult)
        return H3G_ERR_TOOBIG;
      *out = v * units[i].mult;
      return 0;
    }
  }
  return H3G_ERR_INVAL;
}

int h3g_config_parse_duration(const char *s, uint64_t *out) {
  return parse_with_unit(s, duration_units, H3G_ARRAY_LEN(duration_units), out);
}

int h3g_config_parse_size(const char *s, uint64_t *out) {
  return parse_with_unit(s, size_units, H3G_ARRAY_LEN(size_units), out);
}

int h3g_config_parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};
  for (size_t i = 0; i < H3G_ARRAY_LEN(yes); i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  }
  return H3G_ERR_INVAL;
}

/* The largest unit that divides v exactly, so dumps read like a person's. */
static void format_with_unit(char *buf, size_t cap, uint64_t v,
                             const uint64_t *mults, const char *const *names,
                             size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (v % mults[i] == 0 && (v != 0 || i == n - 1)) {
      snprintf(buf, cap, "%llu%s", (unsigned long long)(v / mults[i]),
               names[i]);
      return;
    }
  }
}

static void format_duration(char *buf, size_t cap, uint64_t ms) {
  static const uint64_t mults[] = {T_HOUR, T_MIN, T_SEC, 1};
  static const char *const names[] = {"h", "m", "s", "ms"};
  if (ms == 0) {
    snprintf(buf, cap, "0s");
    return;
  }
  format_with_unit(buf, cap, ms, mults, names, H3G_ARRAY_LEN(mults));
}

static void format_size(char *buf, size_t cap, uint64_t bytes) {
  static const uint64_t mults[] = {Z_GIB, Z_MIB, Z_KIB, 1};
  static const char *const names[] = {"GiB", "MiB", "KiB", "B"};
  format_with_unit(buf, cap, bytes, mults, names, H3G_ARRAY_LEN(mults));
}

/* ---- fields ------------------------------------------------------------- */

static void store_uint(void *field, size_t size, uint64_t v) {
  switch (size) {
  case 1: {
    uint8_t x = (uint8_t)v;
    memcpy(field, &x, sizeof(x));
    break;
  }
  case 2: {
    uint16_t x = (uint16_t)v;
    memcpy(field, &x, sizeof(x));
    break;
  }
  case 4: {
    uint32_t x = (uint32_t)v;
    memcpy(field, &x, sizeof(x));
    break;
  }
  case 8: memcpy(field, &v, sizeof(v)); break;
  default: assert(!"unsupported field size");
  }
}

static uint64_t load_uint(const void *field, size_t size) {
  switch (size) {
  case 1: {
    uint8_t x;
    memcpy(&x, field, sizeof(x));
    return x;
  }
  case 2: {
    uint16_t x;
    memcpy(&x, field, sizeof(x));
    return x;
  }
  case 4: {
    uint32_t x;
    memcpy(&x, field, sizeof(x));
    return x;
  }
  case 8: {
    uint64_t x;
    memcpy(&x, field, sizeof(x));
    return x;
  }
  default: assert(!"unsupported field size"); return 0;
  }
}

/* The field o describes, in the object base (an h3g_config, or for the
 * named sections' keys an h3g_group_conf or h3g_route_conf). */
static char *field_of(void *base, const opt *o) {
  return (char *)base + o->off;
}

static const char *cfield_of(const void *base, const opt *o) {
  return (const char *)base + o->off;
}

static int store_string(char *field, size_t size, const char *s, size_t n) {
  if (n >= size)
    return -1;
  memcpy(field, s, n);
  field[n] = '\0';
  return 0;
}

/* ---- messages ----------------------------------------------------------- */

/*
 * Copies s for a message: at most cap - 4 bytes, control bytes as '?',
 * "..." when cut, so that a hostile or binary file cannot flood or garble
 * the terminal that shows the errors.
 */
static const char *shown(char *buf, size_t cap, const char *s) {
  size_t i = 0;
  assert(cap >= 8);
  for (; s[i] != '\0' && i < cap - 4; i++)
    buf[i] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
  if (s[i] != '\0') {
    memcpy(buf + i, "...", 3);
    i += 3;
  }
  buf[i] = '\0';
  return buf;
}

#define SHOWN_BUF (SHOWN_MAX + 4)
#define SHOWN_PATH (H3G_PATH_MAX + 4)

/* ---- value parsing ------------------------------------------------------ */

/* OPT_OUTPUT: path (absolute) names a writable regular file, or nothing
 * yet in a directory where files can be made. */
static bool output_file_ok(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0)
    return S_ISREG(st.st_mode) && access(path, W_OK) == 0;
  if (errno != ENOENT)
    return false;
  char dir[H3G_PATH_MAX];
  const char *slash = strrchr(path, '/');
  size_t n = slash == path ? 1 : (size_t)(slash - path);
  if (slash == NULL || n >= sizeof(dir))
    return false;
  memcpy(dir, path, n);
  dir[n] = '\0';
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
         access(dir, W_OK | X_OK) == 0;
}

static bool valid_ip(const char *s, int family) {
  unsigned char addr[sizeof(struct in6_addr)];
  return inet_pton(family, s, addr) == 1;
}

/* Letters, digits, '-', '_' and '.', in non-empty labels. */
static bool valid_hostname(const char *s) {
  size_t label = 0, n = 0;
  for (; s[n] != '\0'; n++) {
    unsigned char c = (unsigned char)s[n];
    if (c == '.') {
      if (label == 0)
        return false;
      label = 0;
    } else if (isalnum(c) || c == '-' || c == '_') {
      label++;
    } else {
      return false;
    }
  }
  return n > 0 && n <= 253 && s[0] != '-';
}

/*
 * Joins base and a relative path; an absolute path is kept. Leading "./"
 * parts are dropped so that stored paths look like what a person would
 * write. Returns -1 when the result does not fit in cap.
 */
static int resolve_path(char *out, size_t cap, const char *base,
                        const char *path) {
  int n;
  if (path[0] == '/' || base == NULL || base[0] == '\0') {
    n = snprintf(out, cap, "%s", path);
  } else {
    while (path[0] == '.' && path[1] == '/') {
      path += 2;
      while (path[0] == '/')
        path++;
    }
    const char *sep = base[strlen(base) - 1] == '/' ? "" : "/";
    n = snprintf(out, cap, "%s%s%s", base, sep, path);
  }
  return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/*
 * Checks that path is a regular file we can read that contains `needle`
 * within its first PEM_SCAN_BYTES. O_NONBLOCK and the regular-file check
 * keep a FIFO or device named here from hanging start-up. On a problem,
 * writes why and returns -1.
 */
static int check_pem_file(const opt *o, const char *path, char *why,
                          size_t whylen) {
  char sp[SHOWN_PATH];
  struct stat st;
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    snprintf(why, whylen, "cannot open %s: %s", shown(sp, sizeof(sp), path),
             strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    snprintf(why, whylen, "%s is not a regular file",
             shown(sp, sizeof(sp), path));
    return -1;
  }
  char *buf = malloc(PEM_SCAN_BYTES);
  size_t got = 0;
  int read_errno = 0;
  if (buf == NULL) {
    close(fd);
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  while (got < PEM_SCAN_BYTES) {
    ssize_t r = read(fd, buf + got, PEM_SCAN_BYTES - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      read_errno = errno;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(fd);
  bool found = memmem(buf, got, o->pem, strlen(o->pem)) != NULL;
  free(buf);
  if (read_errno != 0) {
    snprintf(why, whylen, "cannot read %s: %s", shown(sp, sizeof(sp), path),
             strerror(read_errno));
    return -1;
  }
  if (!found) {
    snprintf(why, whylen, "%s is not a PEM %s (found no \"%s\")",
             shown(sp, sizeof(sp), path), o->pem_kind, o->pem);
    return -1;
  }
  return 0;
}

/*
 * Splits "host:port" or "[v6]:port" and parses both into o's fields. With
 * ip_only the host must be an address literal (it will be bound).
 */
static int parse_hostport(const opt *o, const char *s, void *cfg,
                          bool ip_only, char *why, size_t whylen) {
  char sv[SHOWN_BUF];
  const char *host, *port_text;
  size_t host_len;
  bool bracketed = s[0] == '[';
  if (bracketed) {
    const char *close = strchr(s, ']');
    if (close == NULL || close[1] != ':') {
      snprintf(why, whylen, "expected [address]:port, not \"%s\"",
               shown(sv, sizeof(sv), s));
      return -1;
    }
    host = s + 1;
    host_len = (size_t)(close - host);
    port_text = close + 2;
  } else {
    const char *colon = strrchr(s, ':');
    if (colon == NULL) {
      snprintf(why, whylen, "expected host:port, not \"%s\"",
               shown(sv, sizeof(sv), s));
      return -1;
    }
    if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
      snprintf(why, whylen,
               "put an IPv6 address in brackets, as in [::1]:8080, not "
               "\"%s\"",
               shown(sv, sizeof(sv), s));
      return -1;
    }
    host = s;
    host_len = (size_t)(colon - s);
    port_text = colon + 1;
  }

  char hostbuf[H3G_HOST_MAX];
  if (host_len == 0) {
    snprintf(why, whylen, "the host is empty in \"%s\"",
             shown(sv, sizeof(sv), s));
    return -1;
  }
  if (store_string(hostbuf, sizeof(hostbuf), host, host_len) != 0 ||
      host_len >= o->size) {
    snprintf(why, whylen, "the host is longer than %zu bytes",
             H3G_MIN(sizeof(hostbuf), o->size) - 1);
    return -1;
  }
  bool ok;
  if (bracketed)
    ok = valid_ip(hostbuf, AF_INET6);
  else if (ip_only)
    ok = valid_ip(hostbuf, AF_INET);
  else
    ok = valid_ip(hostbuf, AF_INET) || valid_hostname(hostbuf);
  if (!ok) {
    snprintf(why, whylen, "\"%s\" is not %s", shown(sv, sizeof(sv), hostbuf),
             bracketed ? "an IPv6 address"
             : ip_only ? "an IPv4 address (write IPv6 as [addr]:port)"
                       : "a host name or IPv4 address");
    return -1;
  }

  uint64_t port;
  if (parse_uint(port_text, &port) != 0) {
    snprintf(why, whylen, "the port \"%s\" is not a number",
             shown(sv, sizeof(sv), port_text));
    return -1;
  }
  if (port < o->min || port > o->max) {
    snprintf(why, whylen, "the port %s is %s %llu",
             shown(sv, sizeof(sv), port_text),
             port < o->min ? "below the minimum" : "above the maximum",
             (unsigned long long)(port < o->min ? o->min : o->max));
    return -1;
  }
  memcpy(field_of(cfg, o), hostbuf, host_len + 1);
  store_uint((char *)cfg + o->port_off, sizeof(uint16_t), port);
  return 0;
}

static void format_number(const opt *o, uint64_t v, char *buf, size_t cap) {
  if (o->type == OPT_DURATION)
    format_duration(buf, cap, v);
  else if (o->type == OPT_SIZE)
    format_size(buf, cap, v);
  else
    snprintf(buf, cap, "%llu", (unsigned long long)v);
}

static int parse_number(const opt *o, const char *s, void *cfg, char *why,
                        size_t whylen) {
  char sv[SHOWN_BUF], bound[32];
  uint64_t v;
  int rc;
  const char *expected;
  switch (o->type) {
  case OPT_DURATION:
    rc = h3g_config_parse_duration(s, &v);
    expected = "a duration such as 1500ms, 30s, 5m or 1h";
    break;
  case OPT_SIZE:
    rc = h3g_config_parse_size(s, &v);
    expected = "a size such as 16384, 64KiB, 16MiB or 1GiB";
    break;
  default:
    rc = parse_uint(s, &v);
    expected = "a whole number";
    break;
  }
  if (rc == H3G_ERR_TOOBIG) {
    snprintf(why, whylen, "%s is too large", shown(sv, sizeof(sv), s));
    return -1;
  }
  if (rc != 0) {
    snprintf(why, whylen, "expected %s, not \"%s\"", expected,
             shown(sv, sizeof(sv), s));
    return -1;
  }
  if (v < o->min || v > o->max) {
    format_number(o, v < o->min ? o->min : o->max, bound, sizeof(bound));
    snprintf(why, whylen, "%s is %s %s", shown(sv, sizeof(sv), s),
             v < o->min ? "below the minimum" : "above the maximum", bound);
    return -1;
  }
  store_uint(field_of(cfg, o), o->size, v);
  return 0;
}

/*
 * Parses text (already unquoted) into o's field(s) of cfg; base_dir
 * resolves relative paths. On a problem writes why (without the
 * "[section] key: " prefix) and returns -1, leaving the field as it was.
 */
/* Parses one "IP" or "IP/prefix" into *out. Returns 0 or -1. */
static int parse_cidr(const char *text, size_t len, h3g_cidr *out) {
  char buf[64];
  if (len == 0 || len >= sizeof(buf))
    return -1;
  memcpy(buf, text, len);
  buf[len] = '\0';
  char *slash = strchr(buf, '/');
  long prefix = -1;
  if (slash != NULL) {
    char *end;
    *slash = '\0';
    if (slash[1] < '0' || slash[1] > '9')
      return -1;
    prefix = strtol(slash + 1, &end, 10);
    if (*end != '\0')
      return -1;
  }
  *out = (h3g_cidr){0};
  if (inet_pton(AF_INET, buf, out->addr) == 1) {
    out->family = 4;
    if (prefix > 32)
      return -1;
    out->prefix = (uint8_t)(prefix < 0 ? 32 : prefix);
    return 0;
  }
  if (inet_pton(AF_INET6, buf, out->addr) == 1) {
    out->family = 6;
    if (prefix > 128)
      return -1;
    out->prefix = (uint8_t)(prefix < 0 ? 128 : prefix);
    return 0;
  }
  return -1;
}

/* OPT_CIDRS: a comma-separated list (blanks allowed around entries). */
static int parse_cidrs(const opt *o, const char *text, h3g_config *cfg,
                       char *why, size_t whylen) {
  char sv[SHOWN_BUF];
  h3g_cidr list[H3G_MAX_TRUSTED];
  size_t n = 0;
  const char *p = text;
  while (*p != '\0') {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '\0')
      break;
    const char *end = p;
    while (*end != '\0' && *end != ',' && *end != ' ' && *end != '\t')
      end++;
    if (n == H3G_MAX_TRUSTED) {
      snprintf(why, whylen, "more than %d entries", H3G_MAX_TRUSTED);
      return -1;
    }
    if (parse_cidr(p, (size_t)(end - p), &list[n]) != 0) {
      char entry[64];
      size_t el = H3G_MIN((size_t)(end - p), sizeof(entry) - 1);
      memcpy(entry, p, el);
      entry[el] = '\0';
      snprintf(why, whylen,
               "expected IP addresses or IP/prefix entries, not \"%s\"",
               shown(sv, sizeof(sv), entry));
      return -1;
    }
    n++;
    p = end;
  }
  if (store_string(field_of(cfg, o), o->size, text, strlen(text)) != 0) {
    snprintf(why, whylen, "the list is longer than %zu bytes", o->size - 1);
    return -1;
  }
  memcpy(cfg->trusted, list, n * sizeof(list[0]));
  cfg->ntrusted = (uint32_t)n;
  return 0;
}

/* OPT_VERSIONS: "v1" and "v2" (any case), comma-separated, blanks allowed
 * around them; each at most once. Stored normalised ("v2, v1"). */
static int parse_versions(const opt *o, const char *text, h3g_config *cfg,
                          char *why, size_t whylen) {
  static const struct {
    const char *name;
    uint32_t version;
  } known[H3G_MAX_QUIC_VERSIONS] = {{"v1", H3G_QUIC_V1}, {"v2", H3G_QUIC_V2}};
  char sv[SHOWN_BUF];
  uint32_t list[H3G_MAX_QUIC_VERSIONS];
  char norm[sizeof(cfg->quic_versions)] = "";
  size_t n = 0;
  const char *p = text;
  for (;;) {
    while (*p == ' ' || *p == '\t')
      p++;
    const char *end = p;
    while (*end != '\0' && *end != ',')
      end++;
    const char *last = end;
    while (last > p && (last[-1] == ' ' || last[-1] == '\t'))
      last--;
    size_t len = (size_t)(last - p), k = 0;
    while (k < H3G_MAX_QUIC_VERSIONS &&
           !(len == 2 && strncasecmp(p, known[k].name, 2) == 0))
      k++;
    if (k == H3G_MAX_QUIC_VERSIONS) {
      char entry[SHOWN_MAX + 1];
      size_t el = H3G_MIN(len, sizeof(entry) - 1);
      memcpy(entry, p, el);
      entry[el] = '\0';
      snprintf(why, whylen, "expected QUIC versions v1 and v2, not \"%s\"",
               shown(sv, sizeof(sv), entry));
      return -1;
    }
    for (size_t i = 0; i < n; i++)
      if (list[i] == known[k].version) {
        snprintf(why, whylen, "%s is listed twice", known[k].name);
        return -1;
      }
    list[n++] = known[k].version;
    snprintf(norm + strlen(norm), sizeof(norm) - strlen(norm), "%s%s",
             n > 1 ? ", " : "", known[k].name);
    if (*end == '\0')
      break;
    p = end + 1;
  }
  store_string(field_of(cfg, o), o->size, norm, strlen(norm));
  memcpy(cfg->quic_version, list, n * sizeof(list[0]));
  cfg->nquic_versions = (uint32_t)n;
  return 0;
}

int h3g_config_is_trusted(const h3g_config *cfg, const char *ip) {
  uint8_t a[16];
  int fam;
  if (inet_pton(AF_INET, ip, a) == 1)
    fam = 4;
  else if (inet_pton(AF_INET6, ip, a) == 1)
    fam = 6;
  else
    return 0;
  for (uint32_t i = 0; i < cfg->ntrusted; i++) {
    const h3g_cidr *c = &cfg->trusted[i];
    if (c->family != fam)
      continue;
    unsigned bits = c->prefix, k = 0;
    for (; bits >= 8; bits -= 8, k++)
      if (a[k] != c->addr[k])
        break;
    if (bits >= 8)
      continue;
    uint8_t mask = (uint8_t)(0xffu << (8 - bits));
    if (bits == 0 || (a[k] & mask) == (c->addr[k] & mask))
      return 1;
  }
  return 0;
}

/* ---- the named sections' values ----------------------------------------- */

/* Section names: letters, digits, '_', '-', '.'; 1 to H3G_NAME_MAX - 1. */
static bool valid_name(const char *s) {
  size_t n = 0;
  for (; s[n] != '\0'; n++) {
    unsigned char c = (unsigned char)s[n];
    if (!(isalnum(c) || c == '_' || c == '-' || c == '.'))
      return false;
  }
  return n > 0 && n < H3G_NAME_MAX;
}

/* RFC 9110 token characters (a field name). */
static bool valid_token(const char *s, size_t n) {
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL) || c == '\0')
      return false;
  }
  return true;
}

/* Splits text at blanks and commas into a NULL-free array of copies
 * (lowercased when lower). Returns the count, or -1 without memory. */
static int split_words(const char *text, bool lower, char ***out) {
  char **v = NULL;
  int n = 0;
  const char *p = text;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '\0')
      break;
    const char *e = p;
    while (*e != '\0' && *e != ' ' && *e != '\t' && *e != ',')
      e++;
    char **nv = realloc(v, (size_t)(n + 1) * sizeof(*v));
    char *w = strndup(p, (size_t)(e - p));
    if (nv == NULL || w == NULL) {
      free(w);
      v = nv != NULL ? nv : v;
      for (int i = 0; i < n; i++)
        free(v[i]);
      free(v);
      return -1;
    }
    v = nv;
    if (lower)
      for (char *c = w; *c != '\0'; c++)
        *c = (char)tolower((unsigned char)*c);
    v[n++] = w;
    p = e;
  }
  *out = v;
  return n;
}

static void free_words(char **v, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

/* OPT_SERVER: "ADDRESS [weight=N] [backup]". */
static int parse_server(const char *text, const char *base_dir,
                        h3g_group_conf *g, char *why, size_t whylen) {
  char sv[SHOWN_BUF];
  char **words;
  int nw = split_words(text, false, &words);
  if (nw < 0) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  h3g_server_conf srv = {.weight = 1};
  int rc = -1;
  if (nw == 0) {
    snprintf(why, whylen, "expected an address: host:port, unix:/path or "
                          "https://host:port");
    goto out;
  }
  const char *a = words[0];
  if (strncmp(a, "unix:", 5) == 0) {
    char path[H3G_PATH_MAX];
    if (a[5] == '\0' || resolve_path(path, sizeof(path), base_dir, a + 5) != 0 ||
        strlen(path) >= sizeof(srv.path)) {
      snprintf(why, whylen,
               "expected unix:/path, a socket path of at most %zu bytes, not "
               "\"%s\"",
               sizeof(srv.path) - 1, shown(sv, sizeof(sv), a));
      goto out;
    }
    srv.kind = H3G_SERVER_UNIX;
    snprintf(srv.path, sizeof(srv.path), "%s", path);
    snprintf(srv.address, sizeof(srv.address), "unix:%s", path);
  } else {
    const char *hp = a;
    char withport[H3G_HOST_MAX + 16];
    if (strncmp(a, "https://", 8) == 0) {
      srv.kind = H3G_SERVER_TLS;
      hp = a + 8;
    } else if (strncmp(a, "http://", 7) == 0) {
      hp = a + 7;
    } else if (strstr(a, "://") != NULL) {
      snprintf(why, whylen,
               "expected host:port, unix:/path or https://host:port, not "
               "\"%s\"",
               shown(sv, sizeof(sv), a));
      goto out;
    }
    size_t hl = strlen(hp);
    if (hl > 0 && hp[hl - 1] == '/')
      hl--; /* "https://api:8443/" */
    /* A scheme without a port means its default port. */
    const char *close = hp[0] == '[' ? memchr(hp, ']', hl) : NULL;
    const char *colon = close != NULL ? (close + 1 < hp + hl && close[1] == ':'
                                             ? close + 1
                                             : NULL)
                                      : memchr(hp, ':', hl);
    if (colon == NULL && hp != a)
      snprintf(withport, sizeof(withport), "%.*s:%u", (int)hl, hp,
               srv.kind == H3G_SERVER_TLS ? 443u : 80u);
    else
      snprintf(withport, sizeof(withport), "%.*s", (int)hl, hp);
    opt hpo = {.type = OPT_HOSTPORT,
               .min = 1,
               .max = 65535,
               .off = offsetof(h3g_server_conf, host),
               .size = sizeof(srv.host),
               .port_off = offsetof(h3g_server_conf, port)};
    if (parse_hostport(&hpo, withport, &srv, false, why, whylen) != 0)
      goto out;
    bool v6 = strchr(srv.host, ':') != NULL;
    snprintf(srv.address, sizeof(srv.address), "%s%s%s%s:%u",
             srv.kind == H3G_SERVER_TLS ? "https://" : "", v6 ? "[" : "",
             srv.host, v6 ? "]" : "", (unsigned)srv.port);
  }
  for (int i = 1; i < nw; i++) {
    const char *w = words[i];
    uint64_t v;
    if (strcmp(w, "backup") == 0) {
      srv.backup = 1;
    } else if (strncmp(w, "weight=", 7) == 0) {
      if (parse_uint(w + 7, &v) != 0 || v < 1 || v > 1000) {
        snprintf(why, whylen, "weight must be a whole number from 1 to 1000, "
                              "not \"%s\"",
                 shown(sv, sizeof(sv), w + 7));
        goto out;
      }
      srv.weight = (uint32_t)v;
    } else {
      snprintf(why, whylen, "expected weight=N or backup after the address, "
                            "not \"%s\"",
               shown(sv, sizeof(sv), w));
      goto out;
    }
  }
  for (uint32_t i = 0; i < g->nservers; i++) {
    if (strcmp(g->servers[i].address, srv.address) == 0) {
      snprintf(why, whylen, "%s is listed twice (first on line %u)",
               shown(sv, sizeof(sv), srv.address), g->servers[i].line);
      goto out;
    }
  }
  h3g_server_conf *ns =
      realloc(g->servers, (g->nservers + 1) * sizeof(*g->servers));
  if (ns == NULL) {
    snprintf(why, whylen, "out of memory");
    goto out;
  }
  g->servers = ns;
  g->servers[g->nservers++] = srv;
  rc = 0;
out:
  free_words(words, (uint32_t)(nw < 0 ? 0 : nw));
  return rc;
}

/* OPT_HASH_KEY. */
static int parse_hash_key(const char *text, h3g_group_conf *g, char *why,
                          size_t whylen) {
  char sv[SHOWN_BUF];
  h3g_hash_key k;
  const char *name = "";
  if (strcmp(text, "client_ip") == 0) {
    k = H3G_HASH_CLIENT_IP;
  } else if (strncmp(text, "header:", 7) == 0) {
    k = H3G_HASH_HEADER;
    name = text + 7;
  } else if (strncmp(text, "cookie:", 7) == 0) {
    k = H3G_HASH_COOKIE;
    name = text + 7;
  } else {
    snprintf(why, whylen,
             "expected client_ip, header:NAME or cookie:NAME, not \"%s\"",
             shown(sv, sizeof(sv), text));
    return -1;
  }
  if (k != H3G_HASH_CLIENT_IP &&
      (!valid_token(name, strlen(name)) || strlen(name) >= H3G_NAME_MAX)) {
    snprintf(why, whylen, "\"%s\" is not a %s name",
             shown(sv, sizeof(sv), name),
             k == H3G_HASH_HEADER ? "header" : "cookie");
    return -1;
  }
  g->hash_key = k;
  snprintf(g->hash_name, sizeof(g->hash_name), "%s", name);
  snprintf(g->hash_key_text, sizeof(g->hash_key_text), "%s", text);
  if (k == H3G_HASH_HEADER)
    for (char *c = g->hash_name; *c != '\0'; c++)
      *c = (char)tolower((unsigned char)*c);
  return 0;
}

/* OPT_HEALTH: "off" or "METHOD /path". */
static int parse_health(const char *text, h3g_group_conf *g, char *why,
                        size_t whylen) {
  char sv[SHOWN_BUF];
  if (strcmp(text, "off") == 0) {
    g->health_check[0] = g->health_method[0] = g->health_path[0] = '\0';
    return 0;
  }
  const char *sp = strpbrk(text, " \t");
  const char *path = sp;
  while (path != NULL && (*path == ' ' || *path == '\t'))
    path++;
  size_t ml = sp != NULL ? (size_t)(sp - text) : 0;
  if (sp == NULL || !valid_token(text, ml) || ml >= sizeof(g->health_method) ||
      path[0] != '/' || strpbrk(path, " \t") != NULL ||
      strlen(path) >= sizeof(g->health_path)) {
    snprintf(why, whylen, "expected off or \"METHOD /path\", not \"%s\"",
             shown(sv, sizeof(sv), text));
    return -1;
  }
  memcpy(g->health_method, text, ml);
  g->health_method[ml] = '\0';
  snprintf(g->health_path, sizeof(g->health_path), "%s", path);
  snprintf(g->health_check, sizeof(g->health_check), "%s %s",
           g->health_method, g->health_path);
  return 0;
}

/* OPT_STATUS: "204" or "200-399", within o's bounds. */
static int parse_status(const opt *o, const char *text, h3g_group_conf *g,
                        char *why, size_t whylen) {
  char sv[SHOWN_BUF], buf[16];
  uint64_t lo, hi;
  const char *dash = strchr(text, '-');
  if (strlen(text) >= sizeof(buf))
    goto bad;
  snprintf(buf, sizeof(buf), "%s", text);
  if (dash != NULL) {
    buf[dash - text] = '\0';
    if (parse_uint(buf, &lo) != 0 || parse_uint(buf + (dash - text) + 1, &hi))
      goto bad;
  } else {
    if (parse_uint(buf, &lo) != 0)
      goto bad;
    hi = lo;
  }
  if (lo < o->min || hi > o->max || lo > hi)
    goto bad;
  g->health_status_lo = (uint32_t)lo;
  g->health_status_hi = (uint32_t)hi;
  snprintf(g->health_status, sizeof(g->health_status), "%s", text);
  return 0;
bad:
  snprintf(why, whylen,
           "expected a status from 100 to 599 or a range such as 200-399, "
           "not \"%s\"",
           shown(sv, sizeof(sv), text));
  return -1;
}

/* OPT_HOSTS: exact names, IP literals and "*.suffix" wildcards. */
static int parse_hosts(const char *text, h3g_route_conf *r, char *why,
                       size_t whylen) {
  char sv[SHOWN_BUF];
  char **w;
  int n = split_words(text, true, &w);
  if (n < 0) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  for (int i = 0; i < n; i++) {
    size_t l = strlen(w[i]);
    if (l > 1 && w[i][l - 1] == '.')
      w[i][--l] = '\0';
    const char *name = w[i];
    if (name[0] == '*' && name[1] == '.')
      name += 2;
    bool ok = valid_hostname(name) || valid_ip(name, AF_INET) ||
              (name == w[i] && l > 2 && name[0] == '[' && name[l - 1] == ']');
    if (ok && name[0] == '[') {
      char a[H3G_HOST_MAX];
      snprintf(a, sizeof(a), "%.*s", (int)(l - 2), name + 1);
      ok = valid_ip(a, AF_INET6);
    }
    if (!ok) {
      snprintf(why, whylen,
               "expected host names or *.example.com wildcards (without a "
               "port), not \"%s\"",
               shown(sv, sizeof(sv), w[i]));
      free_words(w, (uint32_t)n);
      return -1;
    }
    for (int j = 0; j < i; j++) {
      if (strcmp(w[j], w[i]) == 0) {
        snprintf(why, whylen, "\"%s\" is listed twice",
                 shown(sv, sizeof(sv), w[i]));
        free_words(w, (uint32_t)n);
        return -1;
      }
    }
  }
  if (strlen(text) >= sizeof(r->hosts_text)) {
    snprintf(why, whylen, "the list is longer than %zu bytes",
             sizeof(r->hosts_text) - 1);
    free_words(w, (uint32_t)n);
    return -1;
  }
  free_words(r->hosts, r->nhosts);
  r->hosts = w;
  r->nhosts = (uint32_t)n;
  snprintf(r->hosts_text, sizeof(r->hosts_text), "%s", text);
  return 0;
}

/* OPT_PATHS: prefixes starting with "/". */
static int parse_paths(const char *text, h3g_route_conf *r, char *why,
                       size_t whylen) {
  char sv[SHOWN_BUF];
  char **w;
  int n = split_words(text, false, &w);
  if (n < 0) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  const char *bad = n == 0 ? "" : NULL;
  for (int i = 0; i < n && bad == NULL; i++) {
    if (w[i][0] != '/' || strpbrk(w[i], "?#") != NULL)
      bad = w[i];
    for (int j = 0; j < i && bad == NULL; j++)
      if (strcmp(w[j], w[i]) == 0) {
        snprintf(why, whylen, "\"%s\" is listed twice",
                 shown(sv, sizeof(sv), w[i]));
        free_words(w, (uint32_t)n);
        return -1;
      }
  }
  if (bad != NULL || strlen(text) >= sizeof(r->paths_text)) {
    snprintf(why, whylen,
             "expected path prefixes starting with \"/\" (no query), not "
             "\"%s\"",
             shown(sv, sizeof(sv), bad != NULL ? bad : text));
    free_words(w, (uint32_t)n);
    return -1;
  }
  free_words(r->paths, r->npaths);
  r->paths = w;
  r->npaths = (uint32_t)n;
  snprintf(r->paths_text, sizeof(r->paths_text), "%s", text);
  return 0;
}

/* Fields a route may not add or remove: the gateway frames messages and
 * manages connections itself (RFC 9110 §7.6.1, RFC 9114 §4.2). */
static bool header_is_framing(const char *name) {
  static const char *const names[] = {
      "connection", "keep-alive",     "proxy-connection", "te",
      "trailer",    "transfer-encoding", "upgrade",       "content-length",
      "host",       NULL};
  for (size_t i = 0; names[i] != NULL; i++)
    if (strcasecmp(name, names[i]) == 0)
      return true;
  return name[0] == ':';
}

/* OPT_HEADER_ADD ("Name: value") and OPT_HEADER_DEL ("Name"). */
static int parse_header_edit(const opt *o, const char *text, void *base,
                             char *why, size_t whylen) {
  char sv[SHOWN_BUF];
  size_t nl = o->type == OPT_HEADER_ADD ? strcspn(text, ":") : strlen(text);
  if (!valid_token(text, nl) || (o->type == OPT_HEADER_ADD && text[nl] != ':')) {
    snprintf(why, whylen, "expected %s, not \"%s\"",
             o->type == OPT_HEADER_ADD ? "\"Name: value\"" : "a field name",
             shown(sv, sizeof(sv), text));
    return -1;
  }
  char *name = strndup(text, nl);
  if (name == NULL) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  for (char *c = name; *c != '\0'; c++)
    *c = (char)tolower((unsigned char)*c);
  if (header_is_framing(name)) {
    snprintf(why, whylen, "%s is managed by the gateway and cannot be %s",
             shown(sv, sizeof(sv), name),
             o->type == OPT_HEADER_ADD ? "added" : "removed");
    free(name);
    return -1;
  }
  char *value = NULL;
  if (o->type == OPT_HEADER_ADD) {
    const char *v = text + nl + 1;
    while (*v == ' ' || *v == '\t')
      v++;
    value = strdup(v);
    if (value == NULL) {
      free(name);
      snprintf(why, whylen, "out of memory");
      return -1;
    }
  }
  h3g_header_edit **list = (h3g_header_edit **)field_of(base, o);
  uint32_t *count = (uint32_t *)((char *)base + o->port_off);
  h3g_header_edit *nlist = realloc(*list, (*count + 1) * sizeof(**list));
  if (nlist == NULL) {
    free(name);
    free(value);
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  nlist[*count] = (h3g_header_edit){.name = name, .value = value};
  *list = nlist;
  (*count)++;
  return 0;
}

static int parse_value(const opt *o, const char *text, const char *base_dir,
                       void *cfg, char *why, size_t whylen) {
  char sv[SHOWN_BUF];
  char *field = field_of(cfg, o);
  switch (o->type) {
  case OPT_ENUM:
    for (size_t i = 0; o->names[i] != NULL; i++) {
      if (strcasecmp(text, o->names[i]) == 0) {
        store_uint(field, o->size, i);
        return 0;
      }
    }
    {
      int n = snprintf(why, whylen, "expected ");
      for (size_t i = 0; o->names[i] != NULL && n >= 0 && (size_t)n < whylen;
           i++)
        n += snprintf(why + n, whylen - (size_t)n, "%s%s",
                      i == 0                    ? ""
                      : o->names[i + 1] == NULL ? " or "
                                                : ", ",
                      o->names[i]);
      if (n >= 0 && (size_t)n < whylen)
        snprintf(why + n, whylen - (size_t)n, ", not \"%s\"",
                 shown(sv, sizeof(sv), text));
    }
    return -1;

  case OPT_BOOL: {
    int b;
    if (h3g_config_parse_bool(text, &b) != 0) {
      snprintf(why, whylen, "expected yes or no, not \"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    store_uint(field, o->size, (uint64_t)b);
    return 0;
  }

  case OPT_PORT:
    if (strcmp(text, "any") == 0) {
      store_uint(field, o->size, H3G_PORT_ANY);
      return 0;
    }
    return parse_number(o, text, cfg, why, whylen);

  case OPT_UINT:
  case OPT_DURATION:
  case OPT_SIZE: return parse_number(o, text, cfg, why, whylen);

  case OPT_HOST:
    if (text[0] != '\0' && !valid_hostname(text) && !valid_ip(text, AF_INET) &&
        !valid_ip(text, AF_INET6)) {
      snprintf(why, whylen, "expected a host name or an IP address, not \"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    if (store_string(field, o->size, text, strlen(text)) != 0) {
      snprintf(why, whylen, "longer than %zu bytes", o->size - 1);
      return -1;
    }
    return 0;

  case OPT_ADDRESS: {
    size_t n = strlen(text);
    const char *a = text;
    if (n == 0 && o->def != NULL && o->def[0] == '\0') {
      field[0] = '\0';
      return 0;
    }
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
      a = text + 1;
      n -= 2;
    }
    char buf[H3G_HOST_MAX];
    if (store_string(buf, sizeof(buf), a, n) != 0 ||
        !(valid_ip(buf, AF_INET) || valid_ip(buf, AF_INET6)) ||
        store_string(field, o->size, buf, n) != 0) {
      snprintf(why, whylen, "expected an IPv4 or IPv6 address, not \"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    return 0;
  }

  case OPT_LOG_TARGET:
    if (strcmp(text, "-") == 0 || strcmp(text, "off") == 0)
      return store_string(field, o->size, text, strlen(text));
    H3G_FALLTHROUGH;
  case OPT_FILE:
    if (strcmp(text, "off") == 0) {
      field[0] = '\0';
      return 0;
    }
    H3G_FALLTHROUGH;
  case OPT_PATH: {
    if (text[0] == '\0') {
      snprintf(why, whylen, "the path is empty");
      return -1;
    }
    char path[H3G_PATH_MAX];
    if (resolve_path(path, sizeof(path), base_dir, text) != 0 ||
        store_string(field, o->size, path, strlen(path)) != 0) {
      snprintf(why, whylen, "the path is longer than %zu bytes%s", o->size - 1,
               text[0] == '/' ? "" : " once made absolute");
      return -1;
    }
    if (o->type == OPT_FILE) {
      struct stat st;
      char sp[SHOWN_PATH];
      if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
          access(path, R_OK) != 0) {
        snprintf(why, whylen, "%s is not a readable regular file",
                 shown(sp, sizeof(sp), path));
        return -1;
      }
    }
    return 0;
  }

  case OPT_LISTEN:
    if (strcmp(text, "off") == 0) {
      field[0] = '\0';
      store_uint((char *)cfg + o->port_off, sizeof(uint16_t), 0);
      return 0;
    }
    return parse_hostport(o, text, cfg, true, why, whylen);

  case OPT_HOSTPORT: return parse_hostport(o, text, cfg, false, why, whylen);

  case OPT_WORD: {
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i++) {
      char ch = text[i];
      if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) {
        snprintf(why, whylen,
                 "expected a name of lowercase letters, digits and _, not "
                 "\"%s\"",
                 shown(sv, sizeof(sv), text));
        return -1;
      }
    }
    if (store_string(field, o->size, text, n) != 0) {
      snprintf(why, whylen, "longer than %zu bytes", o->size - 1);
      return -1;
    }
    return 0;
  }

  case OPT_CIDRS: return parse_cidrs(o, text, (h3g_config *)cfg, why, whylen);

  case OPT_SERVER: return parse_server(text, base_dir, cfg, why, whylen);
  case OPT_HASH_KEY: return parse_hash_key(text, cfg, why, whylen);
  case OPT_HEALTH: return parse_health(text, cfg, why, whylen);
  case OPT_STATUS: return parse_status(o, text, cfg, why, whylen);
  case OPT_HOSTS: return parse_hosts(text, cfg, why, whylen);
  case OPT_PATHS: return parse_paths(text, cfg, why, whylen);
  case OPT_HEADER_ADD:
  case OPT_HEADER_DEL: return parse_header_edit(o, text, cfg, why, whylen);
  case OPT_NAME:
    if (!valid_name(text)) {
      snprintf(why, whylen,
               "expected a name of letters, digits, '_', '-' and '.', not "
               "\"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    return store_string(field, o->size, text, strlen(text));
  case OPT_CA: {
    if (strcmp(text, "system") == 0)
      return store_string(field, o->size, text, strlen(text));
    char path[H3G_PATH_MAX];
    if (text[0] == '\0' ||
        resolve_path(path, sizeof(path), base_dir, text) != 0) {
      snprintf(why, whylen, "expected system or a PEM file, not \"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    opt pem = {.pem = "-----BEGIN CERTIFICATE-----",
               .pem_kind = "certificate file"};
    if (check_pem_file(&pem, path, why, whylen) != 0)
      return -1;
    return store_string(field, o->size, path, strlen(path));
  }

  case OPT_VERSIONS:
    return parse_versions(o, text, (h3g_config *)cfg, why, whylen);

  case OPT_DIR: {
    if (strcmp(text, "off") == 0)
      return store_string(field, o->size, "", 0);
    char path[H3G_PATH_MAX];
    struct stat st;
    if (text[0] == '\0' ||
        resolve_path(path, sizeof(path), base_dir, text) != 0 ||
        stat(path, &st) != 0 || !S_ISDIR(st.st_mode) ||
        access(path, W_OK | X_OK) != 0) {
      snprintf(why, whylen, "expected off or a writable directory, not \"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    return store_string(field, o->size, path, strlen(path));
  }

  case OPT_OUTPUT: {
    if (strcmp(text, "off") == 0)
      return store_string(field, o->size, "", 0);
    char path[H3G_PATH_MAX];
    if (text[0] == '\0' ||
        resolve_path(path, sizeof(path), base_dir, text) != 0 ||
        !output_file_ok(path)) {
      snprintf(why, whylen,
               "expected off, or a writable file or a new file in a writable "
               "directory, not \"%s\"",
               shown(sv, sizeof(sv), text));
      return -1;
    }
    return store_string(field, o->size, path, strlen(path));
  }
  }
  assert(!"unknown option type");
  return -1;
}

/* Whether the field holds a value; required keys start out without one. */
static bool opt_is_set(const h3g_config *cfg, const opt *o) {
  return cfield_of(cfg, o)[0] != '\0';
}

void h3g_config_defaults(h3g_config *cfg) {
  *cfg = (h3g_config){0};
  for (size_t i = 0; i < N_OPTS; i++) {
    const opt *o = &schema[i];
    char why[256];
    if (o->def == NULL)
      continue;
    int rc = parse_value(o, o->def, NULL, cfg, why, sizeof(why));
    assert(rc == 0 && "a default in the schema does not parse");
    H3G_UNUSED(rc);
  }
  cfg->keylog_env = 1; /* keylog_file not written anywhere yet */
}

/* ---- the loader --------------------------------------------------------- */

typedef enum section_state {
  SECTION_NONE,  /* no [section] line yet */
  SECTION_KNOWN, /* in a section of the schema */
  SECTION_BAD,   /* in an unknown or malformed one (already reported) */
} section_state;

typedef struct loader {
  h3g_config cfg; /* filled here; copied out only when there is no problem */
  const char *file;
  char base_dir[H3G_PATH_MAX];
  bool have_base;

  const char *data;
  size_t len, pos;
  int line;   /* the physical line last handed to inih */
  char *lbuf; /* that line, stripped (len + 1 bytes) */
  section_state state;
  const char *section; /* schema's name of the current section */

  /* A key line handed to inih in pieces (see on_read_line). */
  bool split;        /* pieces are being handed over */
  bool split_bad;    /* inih did not give them back as one value */
  size_t split_next; /* where in lbuf the next piece starts */
  size_t split_end;  /* lbuf length */
  int split_sent, split_got;
  char *split_key; /* the key, from the first piece (len + 1 bytes) */
  char *joined;    /* the value so far (len + 1 bytes) */
  size_t joined_len;
  int inih_line_max; /* inih's buffer, for the "too long" message */

  int set_line[N_OPTS]; /* where each key was set; 0: not in this file */

  /* The named section being read: its keys go to a group or route. */
  enum { OBJ_NONE, OBJ_GROUP, OBJ_ROUTE } obj_kind;
  uint32_t obj;                      /* index in cfg.groups or cfg.routes */
  char label[H3G_NAME_MAX + 16];     /* "route NAME", for messages */

  char *err;
  size_t errlen, errused;
  unsigned problems, dropped;
} loader;

static void report(loader *ld, int line, const char *section, const char *key,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void report(loader *ld, int line, const char *section, const char *key,
                   const char *fmt, ...) {
  char msg[2 * H3G_PATH_MAX], where[2 * SHOWN_BUF + 8] = "";
  char ss[SHOWN_BUF], sk[SHOWN_BUF];
  if (section != NULL && key != NULL)
    snprintf(where, sizeof(where), "[%s] %s: ", shown(ss, sizeof(ss), section),
             shown(sk, sizeof(sk), key));
  else if (section != NULL)
    snprintf(where, sizeof(where), "[%s]: ", shown(ss, sizeof(ss), section));
  else if (key != NULL)
    snprintf(where, sizeof(where), "%s: ", shown(sk, sizeof(sk), key));
  /* Each part is clamped so that the line always ends in "\n". */
  int w = snprintf(msg, sizeof(msg) - 1, "%s:%d: %s", ld->file, line, where);
  size_t n = w < 0 ? 0 : H3G_MIN((size_t)w, sizeof(msg) - 2);
  va_list ap;
  va_start(ap, fmt);
  w = vsnprintf(msg + n, sizeof(msg) - 1 - n, fmt, ap);
  va_end(ap);
  n = w < 0 ? n : H3G_MIN(n + (size_t)w, sizeof(msg) - 2);
  msg[n++] = '\n';
  msg[n] = '\0';

  ld->problems++;
  if (ld->err == NULL || ld->errlen == 0)
    return;
  /* Whole lines only, in order: once one is left out, so are the rest. */
  if (ld->dropped == 0 && ld->errused + n + ERR_TAIL < ld->errlen) {
    memcpy(ld->err + ld->errused, msg, n + 1);
    ld->errused += n;
  } else {
    ld->dropped++;
  }
}

static const opt *find_opt(const char *section, const char *key) {
  for (size_t i = 0; i < N_OPTS; i++)
    if (strcmp(schema[i].section, section) == 0 &&
        strcmp(schema[i].key, key) == 0)
      return &schema[i];
  return NULL;
}

static const char *find_section(const char *name) {
  for (size_t i = 0; i < N_OPTS; i++)
    if (strcmp(schema[i].section, name) == 0)
      return schema[i].section;
  return NULL;
}

/* "[server], [listener] or [upstream]", from the schema. */
static void list_sections(char *buf, size_t cap) {
  const char *names[N_OPTS + 2];
  size_t n = 0;
  for (size_t i = 0; i < N_OPTS; i++)
    if (n == 0 || strcmp(names[n - 1], schema[i].section) != 0)
      names[n++] = schema[i].section;
  names[n++] = "upstream NAME";
  names[n++] = "route NAME";
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n && used < cap; i++) {
    int w = snprintf(buf + used, cap - used, "%s[%s]",
                     i == 0       ? ""
                     : i + 1 == n ? " or "
                                  : ", ",
                     names[i]);
    if (w < 0)
      break;
    used += (size_t)w;
  }
}

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t prev[SUGGEST_MAX + 1], cur[SUGGEST_MAX + 1];
  assert(lb <= SUGGEST_MAX);
  for (size_t j = 0; j <= lb; j++)
    prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      cur[j] = H3G_MIN(H3G_MIN(prev[j] + 1, cur[j - 1] + 1), sub);
    }
    memcpy(prev, cur, sizeof(prev));
  }
  return prev[lb];
}

/* A hint for an unknown key of section (whose keys are in table): the
 * section it belongs in, or a near miss. */
static void suggest(const opt *table, size_t ntable, const char *section,
                    const char *key, char *buf, size_t cap) {
  static const struct {
    const opt *table;
    size_t n;
    const char *label;
  } tables[] = {{schema, N_OPTS, NULL},
                {group_schema, N_GROUP_OPTS, "upstream NAME"},
                {route_schema, N_ROUTE_OPTS, "route NAME"}};
  buf[0] = '\0';
  for (size_t t = 0; t < H3G_ARRAY_LEN(tables); t++) {
    for (size_t i = 0; i < tables[t].n; i++) {
      const opt *o = &tables[t].table[i];
      if (strcmp(o->key, key) == 0 && strcmp(o->section, section) != 0) {
        snprintf(buf, cap, " (it belongs in [%s])",
                 tables[t].label != NULL ? tables[t].label : o->section);
        return;
      }
    }
  }
  if (strlen(key) > SUGGEST_MAX)
    return;
  size_t best = 3;
  for (size_t i = 0; i < ntable; i++) {
    if (strcmp(table[i].section, section) != 0)
      continue;
    size_t d = edit_distance(key, table[i].key);
    if (d < best) {
      best = d;
      snprintf(buf, cap, " (did you mean %s?)", table[i].key);
    }
  }
}

static void apply_key(loader *ld, const char *key, const char *value) {
  const char *section = ld->section;
  const opt *table = schema;
  size_t ntable = N_OPTS;
  void *base = &ld->cfg;
  uint32_t *key_line = NULL;
  if (ld->obj_kind == OBJ_GROUP) {
    h3g_group_conf *g = &ld->cfg.groups[ld->obj];
    table = group_schema;
    ntable = N_GROUP_OPTS;
    base = g;
    key_line = g->key_line;
    section = ld->label;
  } else if (ld->obj_kind == OBJ_ROUTE) {
    h3g_route_conf *r = &ld->cfg.routes[ld->obj];
    table = route_schema;
    ntable = N_ROUTE_OPTS;
    base = r;
    key_line = r->key_line;
    section = ld->label;
  }
  /* Keys are named per section: [listener] port is not [tcp] port. The
   * named sections' tables carry their kind ("upstream", "route") as
   * section, as ld->section does. */
  const opt *o = NULL;
  for (size_t i = 0; i < ntable && o == NULL; i++)
    if (strcmp(table[i].section, ld->section) == 0 &&
        strcmp(table[i].key, key) == 0)
      o = &table[i];
  char why[H3G_PATH_MAX + 256];
  if (o == NULL) {
    suggest(table, ntable, ld->section, key, why, sizeof(why));
    report(ld, ld->line, section, key, "unknown key%s", why);
    return;
  }
  size_t idx = (size_t)(o - table);
  int first = key_line != NULL ? (int)key_line[idx] : ld->set_line[idx];
  if (first != 0 && !o->repeat) {
    report(ld, ld->line, section, key, "duplicate key (first set on line %d)",
           first);
    return;
  }
  if (first == 0) {
    if (key_line != NULL)
      key_line[idx] = (uint32_t)ld->line;
    else
      ld->set_line[idx] = ld->line;
  }

  /* A value wholly in double quotes keeps its blanks; nothing is escaped. */
  size_t n = strlen(value);
  char *unquoted = NULL;
  if (n > 0 && value[0] == '"') {
    if (n < 2 || value[n - 1] != '"') {
      report(ld, ld->line, section, key,
             "the quoted value has no closing '\"'");
      return;
    }
    unquoted = strndup(value + 1, n - 2);
    if (unquoted == NULL) {
      report(ld, ld->line, section, key, "out of memory");
      return;
    }
    value = unquoted;
  }
  const char *bdir = ld->have_base ? ld->base_dir : NULL;
  uint32_t before = o->type == OPT_SERVER ? ((h3g_group_conf *)base)->nservers
                                          : 0;
  if (parse_value(o, value, bdir, base, why, sizeof(why)) != 0) {
    report(ld, ld->line, section, key, "%s", why);
    /* Its hosts or paths are not what the file meant: comparing them with
     * other routes would only report problems that are not there. */
    if (ld->obj_kind == OBJ_ROUTE)
      ld->cfg.routes[ld->obj].invalid = 1;
  } else if (o->pem != NULL && field_of(base, o)[0] != '\0' &&
           check_pem_file(o, field_of(base, o), why, sizeof(why)) != 0)
    report(ld, ld->line, section, key, "%s", why);
  else if (o->type == OPT_SERVER &&
           ((h3g_group_conf *)base)->nservers > before)
    ((h3g_group_conf *)base)->servers[before].line = (uint32_t)ld->line;
  free(unquoted);
}

/* Hands inih the n bytes at s as one line (with a leading blank if asked). */
static char *hand_over(char *buf, bool indent, const char *s, size_t n) {
  size_t at = 0;
  if (indent)
    buf[at++] = ' ';
  memcpy(buf + at, s, n);
  buf[at + n] = '\n';
  buf[at + n + 1] = '\0';
  return buf;
}

/*
 * Where to end a piece of s that starts at `from` and may hold cap bytes.
 * A piece ends between two non-blank bytes, so that inih's trimming of each
 * piece loses no blank, and the next piece does not start with ';' or '#',
 * which inih would read as a comment. The piece ends after lo. Returns 0
 * when there is no such place.
 */
static size_t split_point(const char *s, size_t from, size_t end, size_t lo,
                          size_t cap) {
  if (end - from <= cap)
    return end;
  for (size_t k = from + cap; k > lo; k--) {
    unsigned char a = (unsigned char)s[k - 1], b = (unsigned char)s[k];
    if (!isspace(a) && !isspace(b) && b != ';' && b != '#')
      return k;
  }
  return 0;
}

static void report_too_long(loader *ld) {
  report(ld, ld->line, NULL, NULL,
         "line too long to split for the INI parser (%zu bytes, lines of "
         "at most %d)",
         ld->split_end, ld->inih_line_max);
}


/* Parses every default of table into base (a new group or route). */
static void named_defaults(const opt *table, size_t n, void *base) {
  for (size_t i = 0; i < n; i++) {
    char why[256];
    if (table[i].def == NULL)
      continue;
    int rc = parse_value(&table[i], table[i].def, NULL, base, why, sizeof(why));
    assert(rc == 0 && "a default in the schema does not parse");
    H3G_UNUSED(rc);
  }
}

static void free_settings(h3g_route_settings *s) {
  h3g_header_edit *lists[] = {s->add_request, s->remove_request,
                              s->add_response};
  uint32_t counts[] = {s->nadd_request, s->nremove_request, s->nadd_response};
  for (size_t l = 0; l < 3; l++) {
    for (uint32_t i = 0; i < counts[l]; i++) {
      free(lists[l][i].name);
      free(lists[l][i].value);
    }
    free(lists[l]);
  }
}

static void free_named(h3g_group_conf *groups, uint32_t ngroups,
                       h3g_route_conf *routes, uint32_t nroutes) {
  for (uint32_t i = 0; i < ngroups; i++)
    free(groups[i].servers);
  free(groups);
  for (uint32_t i = 0; i < nroutes; i++) {
    free_words(routes[i].hosts, routes[i].nhosts);
    free_words(routes[i].paths, routes[i].npaths);
    free_settings(&routes[i].s);
  }
  free(routes);
}

void h3g_config_free(h3g_config *cfg) {
  if (cfg == NULL)
    return;
  free_named(cfg->groups, cfg->ngroups, cfg->routes, cfg->nroutes);
  cfg->groups = NULL;
  cfg->routes = NULL;
  cfg->ngroups = cfg->nroutes = 0;
  cfg->routes_implicit = 0;
  cfg->websocket_any = 0;
}

/*
 * A "[upstream ...]" or "[route ...]" line (name is what is inside the
 * brackets). Returns 0 when name is no such section, 1 after opening it,
 * -1 after reporting why it cannot be opened (its keys are then skipped).
 */
static int open_named_section(loader *ld, const char *name) {
  bool group;
  const char *rest;
  if (strncmp(name, "upstream", 8) == 0 &&
      (name[8] == '\0' || isspace((unsigned char)name[8]))) {
    group = true;
    rest = name + 8;
  } else if (strncmp(name, "route", 5) == 0 &&
             (name[5] == '\0' || isspace((unsigned char)name[5]))) {
    group = false;
    rest = name + 5;
  } else {
    return 0;
  }
  while (isspace((unsigned char)*rest))
    rest++;
  const char *kind = group ? "upstream" : "route";
  char sv[SHOWN_BUF];
  /* Messages name the section as the file wrote it. */
  snprintf(ld->label, sizeof(ld->label), "%s%s%s", kind, *rest ? " " : "",
           shown(sv, sizeof(sv), rest));
  if (*rest == '\0' && group)
    rest = "default"; /* the unnamed [upstream] of older files */
  if (*rest == '\0') {
    report(ld, ld->line, name, NULL,
           "a route needs a name, as in [route app]");
    return -1;
  }
  if (!valid_name(rest)) {
    report(ld, ld->line, ld->label, NULL,
           "the name may hold letters, digits, '_', '-' and '.' (at most "
           "%d)",
           H3G_NAME_MAX - 1);
    return -1;
  }
  uint32_t n = group ? ld->cfg.ngroups : ld->cfg.nroutes;
  /* Files of the single-upstream days may open [upstream] twice; it goes
   * on where it left off (a key set twice is still reported). */
  for (uint32_t i = 0; group && ld->label[8] == '\0' && i < n; i++) {
    if (ld->cfg.groups[i].unnamed) {
      ld->obj_kind = OBJ_GROUP;
      ld->obj = i;
      ld->section = kind;
      return 1;
    }
  }
  for (uint32_t i = 0; i < n; i++) {
    const char *other =
        group ? ld->cfg.groups[i].name : ld->cfg.routes[i].name;
    uint32_t line = group ? ld->cfg.groups[i].line : ld->cfg.routes[i].line;
    if (strcmp(other, rest) == 0) {
      report(ld, ld->line, ld->label, NULL,
             "duplicate section name (first on line %u)", line);
      return -1;
    }
  }
  if (group) {
    h3g_group_conf *v =
        realloc(ld->cfg.groups, (n + 1) * sizeof(*ld->cfg.groups));
    if (v == NULL) {
      report(ld, ld->line, ld->label, NULL, "out of memory");
      return -1;
    }
    ld->cfg.groups = v;
    v[n] = (h3g_group_conf){.line = (uint32_t)ld->line,
                            .unnamed = ld->label[8] == '\0'};
    snprintf(v[n].name, sizeof(v[n].name), "%s", rest);
    named_defaults(group_schema, N_GROUP_OPTS, &v[n]);
    ld->cfg.ngroups = n + 1;
    ld->obj_kind = OBJ_GROUP;
  } else {
    h3g_route_conf *v =
        realloc(ld->cfg.routes, (n + 1) * sizeof(*ld->cfg.routes));
    if (v == NULL) {
      report(ld, ld->line, ld->label, NULL, "out of memory");
      return -1;
    }
    ld->cfg.routes = v;
    v[n] = (h3g_route_conf){.line = (uint32_t)ld->line};
    snprintf(v[n].name, sizeof(v[n].name), "%s", rest);
    named_defaults(route_schema, N_ROUTE_OPTS, &v[n]);
    ld->cfg.nroutes = n + 1;
    ld->obj_kind = OBJ_ROUTE;
  }
  ld->obj = n;
  ld->section = kind;
  return 1;
}

static size_t opt_index(const opt *table, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(table[i].key, key) == 0)
      return i;
  assert(!"no such key");
  return 0;
}

/* The line a route's key was set on, else the route's section line. */
static int route_line(const h3g_route_conf *r, const char *key) {
  uint32_t l = r->key_line[opt_index(route_schema, N_ROUTE_OPTS, key)];
  return (int)(l != 0 ? l : r->line);
}

/* Checks the groups and routes as a whole once the file is read, links
 * each route to its group, fills in inherited settings, and makes the
 * implicit route of a file without [route] sections. */
static void finish_named(loader *ld) {
  h3g_config *cfg = &ld->cfg;
  char label[H3G_NAME_MAX + 16];
  if (cfg->ngroups == 0) {
    report(ld, 0, "upstream", "server", "required, but not set");
    return;
  }
  for (uint32_t i = 0; i < cfg->ngroups; i++) {
    h3g_group_conf *g = &cfg->groups[i];
    snprintf(label, sizeof(label), "upstream%s%s", g->unnamed ? "" : " ",
             g->unnamed ? "" : g->name);
    if (g->nservers == 0 &&
        g->key_line[opt_index(group_schema, N_GROUP_OPTS, "server")] == 0)
      report(ld, (int)g->line, label, "server", "required, but not set");
    bool cert = g->tls_cert[0] != '\0', key = g->tls_key[0] != '\0';
    if (cert != key)
      report(ld,
             (int)g->key_line[opt_index(group_schema, N_GROUP_OPTS,
                                        cert ? "tls_cert" : "tls_key")],
             label, cert ? "tls_cert" : "tls_key",
             "a client certificate needs both tls_cert and tls_key");
    uint32_t primaries = 0;
    for (uint32_t k = 0; k < g->nservers; k++)
      primaries += !g->servers[k].backup;
    if (g->nservers > 0 && primaries == 0)
      report(ld, (int)g->servers[0].line, label, "server",
             "every server is a backup: at least one must not be");
  }

  if (cfg->nroutes == 0) {
    if (cfg->ngroups > 1) {
      report(ld, 0, "route", NULL,
             "%u [upstream] groups, but no [route] names which requests go "
             "where",
             cfg->ngroups);
      return;
    }
    h3g_route_conf *r = calloc(1, sizeof(*r));
    if (r == NULL) {
      report(ld, 0, "route", NULL, "out of memory");
      return;
    }
    snprintf(r->name, sizeof(r->name), "default");
    named_defaults(route_schema, N_ROUTE_OPTS, r);
    snprintf(r->upstream, sizeof(r->upstream), "%s", cfg->groups[0].name);
    cfg->routes = r;
    cfg->nroutes = 1;
    cfg->routes_implicit = 1;
  }

  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    h3g_route_conf *r = &cfg->routes[i];
    snprintf(label, sizeof(label), "route %s", r->name);
    uint32_t gi = 0;
    while (gi < cfg->ngroups && strcmp(cfg->groups[gi].name, r->upstream) != 0)
      gi++;
    if (r->upstream[0] == '\0') {
      if (r->key_line[opt_index(route_schema, N_ROUTE_OPTS, "upstream")] == 0)
        report(ld, (int)r->line, label, "upstream", "required, but not set");
      continue;
    }
    if (gi == cfg->ngroups) {
      char sv[SHOWN_BUF];
      report(ld, route_line(r, "upstream"), label, "upstream",
             "no [upstream %s] section", shown(sv, sizeof(sv), r->upstream));
      continue;
    }
    r->group = gi;
    const h3g_group_conf *g = &cfg->groups[gi];
    for (size_t k = 0; k < H3G_ARRAY_LEN(route_inherit); k++) {
      size_t oi = opt_index(route_schema, N_ROUTE_OPTS, route_inherit[k].key);
      if (r->key_line[oi] != 0)
        continue;
      const opt *o = &route_schema[oi];
      const char *src = route_inherit[k].from == INHERIT_GROUP
                            ? (const char *)g + route_inherit[k].src_off
                            : (const char *)cfg + route_inherit[k].src_off;
      memcpy(field_of(r, o), src, o->size);
    }
    if (r->s.websocket)
      cfg->websocket_any = 1;
  }

  /* Two routes claiming the same host and path: the second could never be
   * chosen, which is always a mistake. */
  for (uint32_t j = 1; j < cfg->nroutes; j++) {
    const h3g_route_conf *b = &cfg->routes[j];
    for (uint32_t i = 0; i < j && !b->invalid; i++) {
      const h3g_route_conf *a = &cfg->routes[i];
      if (a->invalid)
        continue;
      for (uint32_t hb = 0; hb < H3G_MAX(b->nhosts, 1u); hb++) {
        const char *host = b->nhosts ? b->hosts[hb] : NULL;
        bool same_host = false;
        if (host == NULL)
          same_host = a->nhosts == 0;
        for (uint32_t ha = 0; host != NULL && ha < a->nhosts; ha++)
          same_host |= strcmp(a->hosts[ha], host) == 0;
        if (!same_host)
          continue;
        for (uint32_t pb = 0; pb < b->npaths; pb++) {
          for (uint32_t pa = 0; pa < a->npaths; pa++) {
            if (strcmp(a->paths[pa], b->paths[pb]) != 0)
              continue;
            char sv[SHOWN_BUF], sh[SHOWN_BUF];
            snprintf(label, sizeof(label), "route %s", b->name);
            report(ld, route_line(b, "path"), label, "path",
                   "%s on %s is already matched by [route %s] (line %u)",
                   shown(sv, sizeof(sv), b->paths[pb]),
                   host != NULL ? shown(sh, sizeof(sh), host) : "any host",
                   a->name, a->line);
            goto next_route;
          }
        }
      }
    }
  next_route:;
  }
}

/*
 * Called by inih for each line it wants. Serves the next piece of a split
 * line, or the next physical line, cleaned; see the top of this file.
 * budget is what inih's buffer holds besides "\n", NUL and a spare byte:
 * a newer inih discards a line that fills its buffer to the last byte.
 */
static char *on_read_line(char *buf, int num, void *stream) {
  loader *ld = stream;
  size_t budget = num > 16 ? (size_t)num - 3 : 0;
  ld->inih_line_max = num > 3 ? num - 3 : 0;

  if (ld->split) {
    if (ld->split_got != ld->split_sent || ld->split_bad) {
      report_too_long(ld);
      ld->split = false;
    } else if (ld->split_next < ld->split_end) {
      size_t k = split_point(ld->lbuf, ld->split_next, ld->split_end,
                             ld->split_next, budget > 0 ? budget - 1 : 0);
      if (k != 0) {
        hand_over(buf, true, ld->lbuf + ld->split_next, k - ld->split_next);
        ld->split_next = k;
        ld->split_sent++;
        return buf;
      }
      report_too_long(ld);
      ld->split = false;
    } else {
      /* on_key ends a split when the last piece comes back. */
      report_too_long(ld);
      ld->split = false;
    }
  }

  if (ld->pos >= ld->len)
    return NULL;
  const char *p = ld->data + ld->pos;
  const char *nl = memchr(p, '\n', ld->len - ld->pos);
  size_t n = nl != NULL ? (size_t)(nl - p) : ld->len - ld->pos;
  ld->pos += n + (nl != NULL);
  ld->line++;

  if (memchr(p, '\0', n) != NULL) {
    report(ld, ld->line, NULL, NULL, "the line contains a NUL byte");
    return hand_over(buf, false, "", 0);
  }
  if (ld->line == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
    p += 3;
    n -= 3;
  }

  /* Strip blanks and comments into lbuf. */
  size_t a = 0, b = n;
  while (a < b && isspace((unsigned char)p[a]))
    a++;
  if (a < b && (p[a] == ';' || p[a] == '#'))
    b = a;
  for (size_t i = a + 1; i < b; i++) {
    if ((p[i] == ';' || p[i] == '#') && isspace((unsigned char)p[i - 1])) {
      b = i;
      break;
    }
  }
  while (b > a && isspace((unsigned char)p[b - 1]))
    b--;
  char *l = ld->lbuf;
  size_t len = b - a;
  memcpy(l, p + a, len);
  l[len] = '\0';

  if (len == 0)
    return hand_over(buf, false, "", 0);

  if (l[0] == '[') {
    char *close = strchr(l, ']');
    if (close == NULL) {
      report(ld, ld->line, NULL, NULL,
             "syntax error: a section line needs a closing \"]\"");
      ld->state = SECTION_BAD;
      return hand_over(buf, false, "", 0);
    }
    char *name = l + 1, *end = close;
    while (isspace((unsigned char)*name))
      name++;
    while (end > name && isspace((unsigned char)end[-1]))
      end--;
    *end = '\0';
    if (close[1] != '\0')
      report(ld, ld->line, name, NULL,
             "syntax error: unexpected text after \"]\"");
    ld->obj_kind = OBJ_NONE;
    int named = open_named_section(ld, name);
    if (named != 0) {
      if (named < 0) {
        ld->state = SECTION_BAD;
        return hand_over(buf, false, "", 0);
      }
      ld->state = SECTION_KNOWN;
      char hdr[64];
      int w = snprintf(hdr, sizeof(hdr), "[%s]", ld->section);
      if (w > 0 && (size_t)w <= budget)
        return hand_over(buf, false, hdr, (size_t)w);
      return hand_over(buf, false, "", 0);
    }
    ld->section = find_section(name);
    if (ld->section == NULL) {
      char list[128];
      list_sections(list, sizeof(list));
      report(ld, ld->line, name, NULL, "unknown section (expected %s)", list);
      ld->state = SECTION_BAD;
      return hand_over(buf, false, "", 0);
    }
    ld->state = SECTION_KNOWN;
    char hdr[64];
    int w = snprintf(hdr, sizeof(hdr), "[%s]", ld->section);
    if (w > 0 && (size_t)w <= budget)
      return hand_over(buf, false, hdr, (size_t)w);
    return hand_over(buf, false, "", 0);
  }

  /* "key = value": inih splits at the first '=' or ':', and so do we. */
  size_t sep = strcspn(l, "=:");
  if (sep == len) {
    report(ld, ld->line, NULL, NULL,
           "syntax error: expected \"key = value\" or \"[section]\"");
    return hand_over(buf, false, "", 0);
  }
  size_t key_end = sep;
  while (key_end > 0 && isspace((unsigned char)l[key_end - 1]))
    key_end--;
  if (key_end == 0) {
    report(ld, ld->line, NULL, NULL, "syntax error: no key before \"%c\"",
           l[sep]);
    return hand_over(buf, false, "", 0);
  }
  if (ld->state != SECTION_KNOWN) {
    if (ld->state == SECTION_NONE) {
      char key[SHOWN_BUF];
      size_t kn = H3G_MIN(key_end, sizeof(key) - 1);
      memcpy(key, l, kn);
      key[kn] = '\0';
      report(ld, ld->line, NULL, key,
             "the key comes before any [section] line");
    }
    return hand_over(buf, false, "", 0);
  }
  if (len <= budget)
    return hand_over(buf, false, l, len);

  size_t v = sep + 1;
  while (v < len && isspace((unsigned char)l[v]))
    v++;
  ld->split_end = len;
  size_t k = v < len ? split_point(l, 0, len, v, budget) : 0;
  if (k == 0 && key_end + 2 > budget) {
    /* No key is that long: say so rather than blame the line's length. */
    l[key_end] = '\0';
    report(ld, ld->line, ld->section, l, "unknown key");
    return hand_over(buf, false, "", 0);
  }
  if (k == 0) {
    report_too_long(ld);
    return hand_over(buf, false, "", 0);
  }
  ld->split = true;
  ld->split_bad = false;
  ld->split_next = k;
  ld->split_sent = 1;
  ld->split_got = 0;
  return hand_over(buf, false, l, k);
}

/* Called by inih for each key = value (or continuation piece) it parsed. */
static int on_key(void *user, const char *section, const char *name,
                  const char *value) {
  loader *ld = user;
  assert(ld->state == SECTION_KNOWN && strcmp(section, ld->section) == 0);
  H3G_UNUSED(section);
  if (!ld->split) {
    apply_key(ld, name, value);
    return 1;
  }
  size_t n = strlen(value);
  if (ld->split_got == 0) {
    strcpy(ld->split_key, name);
    ld->joined_len = 0;
  } else if (strcmp(ld->split_key, name) != 0 &&
             (strlen(name) < 31 ||
              strncmp(ld->split_key, name, strlen(name)) != 0)) {
    /* Not a continuation (inih passes the key again, cut to its name
     * buffer of 50 bytes), so this inih reads indented lines as keys. */
    ld->split_bad = true;
  }
  if (ld->joined_len + n > ld->split_end)
    ld->split_bad = true;
  if (ld->split_bad)
    return 1;
  memcpy(ld->joined + ld->joined_len, value, n + 1);
  ld->joined_len += n;
  ld->split_got++;
  if (ld->split_got == ld->split_sent && ld->split_next >= ld->split_end) {
    ld->split = false;
    apply_key(ld, ld->split_key, ld->joined);
  }
  return 1;
}

static void finish_report(loader *ld) {
  if (ld->dropped == 0 || ld->err == NULL || ld->errlen == 0)
    return;
  snprintf(ld->err + ld->errused, ld->errlen - ld->errused,
           "(%u more problems not shown)\n", ld->dropped);
}

static int load_text(h3g_config *cfg, const char *data, size_t len,
                     const char *name, const char *base_dir, char *err,
                     size_t errlen) {
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  loader *ld = calloc(1, sizeof(*ld));
  if (ld == NULL)
    return H3G_ERR_NOMEM;
  ld->file = name != NULL ? name : "(config)";
  ld->err = err;
  ld->errlen = err != NULL ? errlen : 0;
  if (len > CONFIG_MAX_BYTES) {
    report(ld, 0, NULL, NULL, "the file is larger than %u bytes",
           CONFIG_MAX_BYTES);
    free(ld);
    return H3G_ERR_INVAL;
  }
  if (base_dir != NULL) {
    if (snprintf(ld->base_dir, sizeof(ld->base_dir), "%s", base_dir) >=
        (int)sizeof(ld->base_dir)) {
      report(ld, 0, NULL, NULL, "the directory name is too long");
      free(ld);
      return H3G_ERR_INVAL;
    }
    ld->have_base = true;
  } else if (getcwd(ld->base_dir, sizeof(ld->base_dir)) != NULL) {
    ld->have_base = true;
  }
  char *bufs = malloc(3 * (len + 1));
  if (bufs == NULL) {
    free(ld);
    return H3G_ERR_NOMEM;
  }
  ld->lbuf = bufs;
  ld->split_key = bufs + len + 1;
  ld->joined = bufs + 2 * (len + 1);
  ld->cfg = *cfg;
  ld->cfg.groups = NULL; /* the file's sections replace cfg's */
  ld->cfg.routes = NULL;
  ld->cfg.ngroups = ld->cfg.nroutes = ld->cfg.routes_implicit = 0;
  ld->cfg.websocket_any = 0;
  ld->data = data;
  ld->len = len;

  int rc = ini_parse_stream(on_read_line, ld, on_key, ld);
  if (ld->split)
    report_too_long(ld);
  if (rc == -2) {
    free(bufs);
    free(ld);
    return H3G_ERR_NOMEM;
  }
  /* The reader hands inih only lines it accepts; this is a safety net. */
  if (rc != 0 && ld->problems == 0)
    report(ld, 0, NULL, NULL, "the INI parser rejected line %d of its input",
           rc);

  for (size_t i = 0; i < N_OPTS; i++) {
    const opt *o = &schema[i];
    char why[H3G_PATH_MAX + 256];
    /* A required key that was present with a bad value was reported on
     * its own line already; "not set" would be a second, wrong message. */
    if (o->def == NULL && !opt_is_set(&ld->cfg, o) && ld->set_line[i] == 0)
      report(ld, 0, o->section, o->key, "required, but not set");
    else if (o->pem != NULL && ld->set_line[i] == 0 &&
             opt_is_set(&ld->cfg, o) &&
             check_pem_file(o, field_of(&ld->cfg, o), why, sizeof(why)) != 0)
      report(ld, 0, o->section, o->key, "%s", why);
  }

  /* Left out, keylog_file defers to SSLKEYLOGFILE; "off" written in the
   * file silences the variable too (keylog.c). */
  ld->cfg.keylog_env =
      ld->set_line[find_opt("debug", "keylog_file") - schema] == 0;

  finish_named(ld);

  rc = ld->problems == 0 ? 0 : H3G_ERR_INVAL;
  if (rc == 0) {
    h3g_config_free(cfg);
    *cfg = ld->cfg;
  } else {
    h3g_config_free(&ld->cfg);
  }
  finish_report(ld);
  free(bufs);
  free(ld);
  return rc;
}

int h3g_config_load_string(h3g_config *cfg, const char *data, size_t len,
                           const char *name, const char *base_dir, char *err,
                           size_t errlen) {
  return load_text(cfg, data, len, name, base_dir, err, errlen);
}

/* The directory of path, made absolute so that stored paths survive a
 * chdir. Returns -1 when it does not fit. */
static int dir_of(const char *path, char *out, size_t cap) {
  const char *slash = strrchr(path, '/');
  char dir[H3G_PATH_MAX];
  if (slash == NULL) {
    snprintf(dir, sizeof(dir), ".");
  } else if (slash == path) {
    snprintf(dir, sizeof(dir), "/");
  } else {
    size_t n = (size_t)(slash - path);
    if (store_string(dir, sizeof(dir), path, n) != 0)
      return -1;
  }
  if (dir[0] == '/')
    return snprintf(out, cap, "%s", dir) < (int)cap ? 0 : -1;
  char cwd[H3G_PATH_MAX];
  if (getcwd(cwd, sizeof(cwd)) == NULL)
    return snprintf(out, cap, "%s", dir) < (int)cap ? 0 : -1;
  if (strcmp(dir, ".") == 0)
    return snprintf(out, cap, "%s", cwd) < (int)cap ? 0 : -1;
  return resolve_path(out, cap, cwd, dir);
}

static int load_failure(const char *path, char *err, size_t errlen, int rc,
                        const char *what, const char *detail) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s:0: %s%s\n", path, what, detail);
  return rc;
}

int h3g_config_load(h3g_config *cfg, const char *path, char *err,
                    size_t errlen) {
  char base[H3G_PATH_MAX];
  struct stat st;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    return load_failure(path, err, errlen,
                        e == ENOENT || e == ENOTDIR ? H3G_ERR_NOTFOUND
                                                    : H3G_ERR_IO,
                        "cannot open: ", strerror(e));
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return load_failure(path, err, errlen, H3G_ERR_IO, "not a regular file",
                        "");
  }
  if (st.st_size > (off_t)CONFIG_MAX_BYTES) {
    close(fd);
    return load_failure(path, err, errlen, H3G_ERR_INVAL,
                        "larger than 1 MiB, the limit for a config file", "");
  }
  if (dir_of(path, base, sizeof(base)) != 0) {
    close(fd);
    return load_failure(path, err, errlen, H3G_ERR_INVAL,
                        "the directory name is too long", "");
  }
  /* One byte more than the limit, to notice a file that grew meanwhile. */
  char *data = malloc(CONFIG_MAX_BYTES + 1);
  if (data == NULL) {
    close(fd);
    return H3G_ERR_NOMEM;
  }
  size_t got = 0;
  while (got <= CONFIG_MAX_BYTES) {
    ssize_t r = read(fd, data + got, CONFIG_MAX_BYTES + 1 - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      free(data);
      return load_failure(path, err, errlen, H3G_ERR_IO,
                          "cannot read: ", strerror(e));
    }
    if (r == 0)
      break;
    got += (size_t)r;
  }
  close(fd);
  int rc = load_text(cfg, data, got, path, base, err, errlen);
  free(data);
  return rc;
}

/* ---- dump --------------------------------------------------------------- */

/* Text that would not read back the same unquoted. */
static bool needs_quotes(const char *s) {
  size_t n = strlen(s);
  return n == 0 || isspace((unsigned char)s[0]) ||
         isspace((unsigned char)s[n - 1]) || s[0] == '"' || s[0] == ';' ||
         s[0] == '#';
}

static void format_value(const void *cfg, const opt *o, char *buf,
                         size_t cap) {
  const char *field = cfield_of(cfg, o);
  switch (o->type) {
  case OPT_ENUM: {
    uint64_t v = load_uint(field, o->size);
    size_t count = 0;
    while (o->names[count] != NULL)
      count++;
    snprintf(buf, cap, "%s", v < count ? o->names[v] : "?");
    return;
  }
  case OPT_BOOL:
    snprintf(buf, cap, "%s", load_uint(field, o->size) ? "yes" : "no");
    return;
  case OPT_PORT:
    if (load_uint(field, o->size) == H3G_PORT_ANY) {
      snprintf(buf, cap, "any");
      return;
    }
    format_number(o, load_uint(field, o->size), buf, cap);
    return;
  case OPT_UINT:
  case OPT_DURATION:
  case OPT_SIZE: format_number(o, load_uint(field, o->size), buf, cap); return;
  case OPT_FILE:
  case OPT_OUTPUT:
  case OPT_DIR: snprintf(buf, cap, "%s", field[0] ? field : "off"); return;
  case OPT_ADDRESS:
  case OPT_HOST:
  case OPT_WORD:
  case OPT_PATH:
  case OPT_CIDRS:
  case OPT_VERSIONS:
  case OPT_LOG_TARGET:
  case OPT_HASH_KEY:
  case OPT_STATUS:
  case OPT_CA:
  case OPT_NAME:
  case OPT_HOSTS:
  case OPT_PATHS: snprintf(buf, cap, "%s", field); return;
  case OPT_HEALTH: snprintf(buf, cap, "%s", field[0] ? field : "off"); return;
  case OPT_SERVER:
  case OPT_HEADER_ADD:
  case OPT_HEADER_DEL: break; /* one line each: dump_named */
  case OPT_LISTEN:
  case OPT_HOSTPORT: {
    unsigned port =
        (unsigned)load_uint((const char *)cfg + o->port_off, sizeof(uint16_t));
    if (field[0] == '\0')
      snprintf(buf, cap, "%s", o->type == OPT_LISTEN ? "off" : "");
    else if (strchr(field, ':') != NULL)
      snprintf(buf, cap, "[%s]:%u", field, port);
    else
      snprintf(buf, cap, "%s:%u", field, port);
    return;
  }
  }
  buf[0] = '\0';
}

static void dump_line(FILE *out, const char *key, const char *value) {
  if (needs_quotes(value))
    fprintf(out, "%s = \"%s\"\n", key, value);
  else
    fprintf(out, "%s = %s\n", key, value);
}

static void dump_named(const opt *table, size_t n, const void *base,
                       FILE *out) {
  char value[H3G_PATH_MAX + H3G_HOST_MAX];
  for (size_t i = 0; i < n; i++) {
    const opt *o = &table[i];
    if (o->type == OPT_SERVER) {
      const h3g_group_conf *g = base;
      for (uint32_t k = 0; k < g->nservers; k++) {
        const h3g_server_conf *sv = &g->servers[k];
        snprintf(value, sizeof(value), "%s weight=%u%s", sv->address,
                 sv->weight, sv->backup ? " backup" : "");
        dump_line(out, o->key, value);
      }
    } else if (o->type == OPT_HEADER_ADD || o->type == OPT_HEADER_DEL) {
      const h3g_header_edit *list =
          *(h3g_header_edit *const *)cfield_of(base, o);
      uint32_t count = *(const uint32_t *)((const char *)base + o->port_off);
      for (uint32_t k = 0; k < count; k++) {
        snprintf(value, sizeof(value), "%s%s%s", list[k].name,
                 list[k].value != NULL ? ": " : "",
                 list[k].value != NULL ? list[k].value : "");
        dump_line(out, o->key, value);
      }
    } else {
      format_value(base, o, value, sizeof(value));
      dump_line(out, o->key, value);
    }
  }
}

void h3g_config_dump(const h3g_config *cfg, void *f) {
  FILE *out = f;
  const char *section = NULL;
  char value[H3G_PATH_MAX + H3G_HOST_MAX];
  fprintf(out, "; h3gate %s configuration\n", H3G_VERSION);
  for (size_t i = 0; i < N_OPTS; i++) {
    const opt *o = &schema[i];
    if (section == NULL || strcmp(section, o->section) != 0) {
      section = o->section;
      fprintf(out, "\n[%s]\n", section);
    }
    if (o->def == NULL && !opt_is_set(cfg, o)) {
      fprintf(out, "; %s = (required, not set)\n", o->key);
      continue;
    }
    format_value(cfg, o, value, sizeof(value));
    dump_line(out, o->key, value);
  }
  for (uint32_t i = 0; i < cfg->ngroups; i++) {
    if (cfg->groups[i].unnamed)
      fprintf(out, "\n[upstream]\n");
    else
      fprintf(out, "\n[upstream %s]\n", cfg->groups[i].name);
    dump_named(group_schema, N_GROUP_OPTS, &cfg->groups[i], out);
  }
  for (uint32_t i = 0; i < cfg->nroutes && !cfg->routes_implicit; i++) {
    fprintf(out, "\n[route %s]\n", cfg->routes[i].name);
    dump_named(route_schema, N_ROUTE_OPTS, &cfg->routes[i], out);
  }
}

/* One (host, path) pair of the route table, for printing in the order the
 * router tries them. */
typedef struct table_row {
  const char *host; /* NULL: any host */
  const char *path;
  uint32_t route;
} table_row;

/* Exact hosts, then wildcards longest first, then any host; within a
 * host, longer paths first, then declaration order. */
static int host_rank(const char *h) {
  return h == NULL ? 2 : h[0] == '*' ? 1 : 0;
}

static int compare_rows(const void *pa, const void *pb) {
  const table_row *a = pa, *b = pb;
  int ra = host_rank(a->host), rb = host_rank(b->host);
  if (ra != rb)
    return ra - rb;
  if (ra == 1 && strlen(a->host) != strlen(b->host))
    return strlen(a->host) > strlen(b->host) ? -1 : 1;
  int c = ra == 2 ? 0 : strcmp(a->host, b->host);
  if (c != 0)
    return c;
  size_t la = strlen(a->path), lb = strlen(b->path);
  if (la != lb)
    return la > lb ? -1 : 1;
  return a->route < b->route ? -1 : a->route > b->route;
}

void h3g_config_print_routes(const h3g_config *cfg, void *f) {
  FILE *out = f;
  size_t n = 0;
  for (uint32_t i = 0; i < cfg->nroutes; i++)
    n += (size_t)H3G_MAX(cfg->routes[i].nhosts, 1u) * cfg->routes[i].npaths;
  table_row *rows = calloc(n ? n : 1, sizeof(*rows));
  if (rows == NULL)
    return;
  size_t k = 0;
  for (uint32_t i = 0; i < cfg->nroutes; i++) {
    const h3g_route_conf *r = &cfg->routes[i];
    for (uint32_t h = 0; h < H3G_MAX(r->nhosts, 1u); h++)
      for (uint32_t p = 0; p < r->npaths; p++)
        rows[k++] = (table_row){r->nhosts ? r->hosts[h] : NULL, r->paths[p],
                                i};
  }
  qsort(rows, n, sizeof(*rows), compare_rows);
  fprintf(out, "routes, in matching order (%u route%s, %u group%s):\n",
          cfg->nroutes, cfg->nroutes == 1 ? "" : "s", cfg->ngroups,
          cfg->ngroups == 1 ? "" : "s");
  fprintf(out, "  %-32s %-24s %-16s %s\n", "HOST", "PATH", "ROUTE",
          "UPSTREAM");
  for (size_t i = 0; i < n; i++) {
    const h3g_route_conf *r = &cfg->routes[rows[i].route];
    fprintf(out, "  %-32s %-24s %-16s %s\n",
            rows[i].host != NULL ? rows[i].host : "*", rows[i].path, r->name,
            r->upstream);
  }
  for (uint32_t i = 0; i < cfg->ngroups; i++) {
    const h3g_group_conf *g = &cfg->groups[i];
    fprintf(out, "upstream %s (%s):\n", g->name,
            balance_names[g->balance]);
    for (uint32_t s = 0; s < g->nservers; s++)
      fprintf(out, "  %s weight=%u%s\n", g->servers[s].address,
              g->servers[s].weight, g->servers[s].backup ? " backup" : "");
  }
  free(rows);
}
