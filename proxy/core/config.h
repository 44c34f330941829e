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

/* One entry of [forwarding] trusted_proxies: an address and prefix. */
typedef struct h3g_cidr {
  uint8_t family; /* 4 or 6 */
  uint8_t prefix; /* bits */
  uint8_t addr[16];
} h3g_cidr;

#define H3G_MAX_TRUSTED 32

/* QUIC versions [listener] quic_versions can name (RFC 9000, RFC 9369). */
#define H3G_QUIC_V1 0x00000001u
#define H3G_QUIC_V2 0x6b3343cfu
#define H3G_MAX_QUIC_VERSIONS 2

/* What the TCP listener does with an Alt-Svc field from the upstream. */
typedef enum h3g_alt_svc_upstream {
  H3G_ALT_SVC_REPLACE = 0, /* drop it, send ours */
  H3G_ALT_SVC_KEEP,        /* pass it on, add none */
} h3g_alt_svc_upstream;

/* [listener] congestion_control, in the order of config.c's names. */
typedef enum h3g_cc_algo {
  H3G_CC_CUBIC = 0,
  H3G_CC_BBR = 1,
  H3G_CC_RENO = 2,
} h3g_cc_algo;

/* A port key set to "any": the kernel picks a free port, which h3gate
 * reports on its "ready" line. */
#define H3G_PORT_ANY 0x10000u

/* The port to bind for a configured one: 0 (the kernel picks) for "any". */
static inline uint16_t h3g_bind_port(uint32_t port) {
  return port == H3G_PORT_ANY ? 0 : (uint16_t)port;
}


#define H3G_NAME_MAX 64

/* [server] no_route. */
enum {
  H3G_NO_ROUTE_MISDIRECTED = 0, /* 421 on HTTP/3 and HTTP/2, 404 on 1.1 */
  H3G_NO_ROUTE_NOT_FOUND = 1,   /* 404 on all three */
};

/* How a server of a group is reached. */
typedef enum h3g_server_kind {
  H3G_SERVER_TCP = 0, /* host:port */
  H3G_SERVER_UNIX,    /* unix:/path */
  H3G_SERVER_TLS,     /* https://host:port */
} h3g_server_kind;

/* One `server = ADDRESS [weight=N] [backup]` line. */
typedef struct h3g_server_conf {
  h3g_server_kind kind;
  char host[H3G_HOST_MAX]; /* TCP, TLS: a name or an address literal */
  uint16_t port;
  char path[108];          /* UNIX: the socket's path (sun_path's size) */
  char address[H3G_PATH_MAX]; /* as a person writes it, for logs and labels:
                                 "10.0.0.1:80", "unix:/run/a.sock",
                                 "https://api:8443" */
  uint32_t weight;         /* 1..1000 */
  uint32_t backup;         /* 1: serves only while every primary is out */
  uint32_t line;
} h3g_server_conf;

/* [upstream NAME] balance. */
typedef enum h3g_balance {
  H3G_BALANCE_ROUND_ROBIN = 0,
  H3G_BALANCE_LEAST_CONN = 1,
  H3G_BALANCE_HASH = 2,
} h3g_balance;

/* [upstream NAME] hash_key. */
typedef enum h3g_hash_key {
  H3G_HASH_CLIENT_IP = 0,
  H3G_HASH_HEADER = 1,
  H3G_HASH_COOKIE = 2,
} h3g_hash_key;

#define H3G_GROUP_KEYS_MAX 40
#define H3G_ROUTE_KEYS_MAX 24

/* One [upstream NAME] section (config.c's group schema names the keys). */
typedef struct h3g_group_conf {
  char name[H3G_NAME_MAX];
  uint32_t line;    /* of the section line */
  uint32_t unnamed; /* written "[upstream]": the group "default" */
  h3g_server_conf *servers;
  uint32_t nservers;
  h3g_balance balance;
  h3g_hash_key hash_key;
  char hash_name[H3G_NAME_MAX]; /* the header's or cookie's name */
  char hash_key_text[H3G_NAME_MAX + 8]; /* as written, for dump */
  uint32_t pool_size;
  uint32_t queue_size;
  uint64_t connect_timeout_ms;
  uint64_t response_timeout_ms; /* no byte from upstream for this long */
  uint64_t idle_timeout_ms;     /* idle keep-alive expiry */
  uint64_t expect_continue_timeout_ms;
  uint32_t retries;
  uint32_t max_fails;           /* 0: passive checks off */
  uint64_t fail_timeout_ms;
  uint64_t max_fail_timeout_ms;
  uint64_t resolve_interval_ms; /* 0: names resolved at start only */
  char health_check[H3G_PATH_MAX + 32]; /* "METHOD /path", "" = off */
  char health_method[16];
  char health_path[H3G_PATH_MAX];
  uint64_t health_interval_ms;
  uint64_t health_timeout_ms;
  char health_status[16]; /* as written */
  uint32_t health_status_lo, health_status_hi;
  uint32_t health_rise, health_fall;
  char health_host[H3G_HOST_MAX]; /* "" = the server's host */
  char tls_ca[H3G_PATH_MAX];      /* "system" or a PEM file */
  uint32_t tls_verify;
  char tls_sni[H3G_HOST_MAX];     /* "" = the server's host */
  char tls_cert[H3G_PATH_MAX];    /* "" = no client certificate */
  char tls_key[H3G_PATH_MAX];
  uint32_t key_line[H3G_GROUP_KEYS_MAX]; /* where each key was set, 0: not */
} h3g_group_conf;

/* A header line of add_request_header / add_response_header (value set)
 * or remove_request_header (value NULL). Owned by the route. */
typedef struct h3g_header_edit {
  char *name;
  char *value;
} h3g_header_edit;

/* What a request's route decides for it: the settings the bridge reads.
 * Every field starts as the group's or the global value and a route key
 * overrides it. */
typedef struct h3g_route_settings {
  uint64_t response_timeout_ms;
  uint64_t request_body_timeout_ms;
  uint64_t expect_continue_timeout_ms;
  uint64_t max_request_body; /* 0 = unlimited */
  uint32_t early_data;
  uint32_t fwd_forwarded, fwd_x_forwarded, fwd_via;
  uint32_t alt_svc;
  uint32_t websocket; /* WebSocket tunnels (RFC 9220, 8441, 6455) */
  h3g_header_edit *add_request;
  uint32_t nadd_request;
  h3g_header_edit *remove_request;
  uint32_t nremove_request;
  h3g_header_edit *add_response;
  uint32_t nadd_response;
} h3g_route_settings;

/* One [route NAME] section. */
typedef struct h3g_route_conf {
  char name[H3G_NAME_MAX];
  uint32_t line;
  char hosts_text[1024]; /* as written ("" = any host) */
  char **hosts;          /* lowercased: "a.example.com", "*.example.com" */
  uint32_t nhosts;       /* 0 = any host */
  char paths_text[1024]; /* as written */
  char **paths;          /* prefixes; at least "/" */
  uint32_t npaths;
  char upstream[H3G_NAME_MAX];
  uint32_t group;        /* index into h3g_config.groups */
  uint32_t invalid;      /* a key of it was refused (loader's) */
  h3g_route_settings s;
  uint32_t key_line[H3G_ROUTE_KEYS_MAX]; /* where each key was set, 0: not */
} h3g_route_conf;

typedef struct h3g_config {
  /* [server] */
  h3g_log_level log_level;
  char access_log[H3G_PATH_MAX];     /* "-" stdout, "off", or a file */
  h3g_access_format access_log_format; /* kv, json or combined */
  uint64_t shutdown_timeout_ms;      /* grace for in-flight requests */
  uint64_t drain_delay_ms;           /* serve on, not ready, after SIGTERM */
  char pid_file[H3G_PATH_MAX];       /* "" = none; for h3gate --reload */
  char admin_address[H3G_HOST_MAX];  /* metrics listener, "" = off */
  uint16_t admin_port;

  /* [listener] */
  uint32_t listen_enabled;           /* 0: no QUIC listener, no Alt-Svc h3 */
  char listen_address[H3G_HOST_MAX]; /* IPv4 or IPv6 literal */
  uint32_t listen_port;             /* 0 or H3G_PORT_ANY: a free one */
  char cert_file[H3G_PATH_MAX];      /* PEM chain; relative to the INI */
  char key_file[H3G_PATH_MAX];       /* PEM key; relative to the INI */
  uint64_t idle_timeout_ms;          /* QUIC max_idle_timeout */
  uint64_t handshake_timeout_ms;
  uint32_t max_connections;
  uint32_t max_streams;              /* concurrent bidi streams per conn */
  uint32_t stream_buffer_size;       /* per stream, per direction (bytes) */
  uint32_t connection_window;        /* request bytes in flight, all streams */
  uint32_t max_stream_window;        /* a request body's window may grow to
                                      * this (at least stream_buffer_size) */
  uint32_t max_header_size;          /* field section size, both sides */
  uint64_t max_request_body;         /* bytes, 0 = unlimited (413) */
  h3g_cc_algo congestion_control;
  char quic_versions[16]; /* as written (normalised), for dump */
  uint32_t quic_version[H3G_MAX_QUIC_VERSIONS]; /* served, preferred first */
  uint32_t nquic_versions;
  uint32_t retry;            /* 0 auto, 1 always, 2 never (config.c) */
  uint32_t retry_threshold;  /* auto: handshakes in progress before Retry */
  uint32_t max_handshakes_per_source; /* per IPv4 / IPv6 /64, 0 = no limit */
  uint32_t max_unvalidated_handshakes; /* not address-validated, 0 = no limit */
  uint64_t new_token_lifetime_ms;   /* NEW_TOKEN tokens, 0 = none issued */
  uint32_t max_resets_per_second; /* client stream cancels before closing */
  char secrets_file[H3G_PATH_MAX];   /* "" = random per process */
  uint64_t ticket_rotation_ms;       /* ticket key period, 0 = none */
  uint32_t early_data;               /* accept 0-RTT (safe methods only) */
  uint32_t websocket;                /* routes' default: WebSocket tunnels */
  uint64_t tunnel_idle_timeout_ms;   /* a tunnel silent both ways ends */
  uint32_t max_tunnels;              /* open tunnels, whole gateway */
  uint32_t max_tunnels_per_connection;
  char qlog_dir[H3G_PATH_MAX];       /* [debug] "" = off */
  char keylog_file[H3G_PATH_MAX];    /* [debug] TLS secrets, "" = off */
  uint32_t keylog_env;               /* keylog_file not in the file: the
                                        SSLKEYLOGFILE variable decides */
  uint64_t request_header_timeout_ms;
  uint64_t request_body_timeout_ms;  /* body stalled with credit; 0 = off */

  /* [tcp]: the HTTPS (TCP + TLS) fallback listener */
  uint32_t tcp_enabled;
  char tcp_address[H3G_HOST_MAX];    /* "" = listen_address */
  uint32_t tcp_port; /* 0 = the UDP listener's port; or H3G_PORT_ANY */
  uint64_t tcp_handshake_timeout_ms;
  uint64_t tcp_idle_timeout_ms;      /* keep-alive between requests */
  uint64_t tcp_header_timeout_ms;    /* whole request head (slowloris) */
  uint32_t tcp_max_connections;
  /* TCP congestion control of accepted connections ("" = the system's);
   * the kernel's names are at most 15 bytes (TCP_CA_NAME_MAX). */
  char tcp_congestion_control[16];

  /* [alt_svc] */
  uint32_t alt_svc_enabled;
  uint16_t alt_svc_port;             /* 0 = the UDP listener's port */
  char alt_svc_host[H3G_HOST_MAX];   /* "" = same host */
  uint32_t alt_svc_max_age;          /* seconds ("ma") */
  h3g_alt_svc_upstream alt_svc_upstream;

  /* [redirect]: plain-HTTP listener answering 308 to https (port 0: off) */
  char redirect_address[H3G_HOST_MAX]; /* "" = listen_address */
  uint32_t redirect_port; /* 0 = off; or H3G_PORT_ANY */

  /* [server] no_route: what a request matching no route gets. */
  uint32_t no_route; /* H3G_NO_ROUTE_* */

  /* [upstream NAME] and [route NAME] sections, in file order. The
   * unnamed [upstream] section is the group "default"; a file without
   * [route] sections gets one route, "default", matching every request,
   * to its only group. Owned: h3g_config_free() releases them. */
  h3g_group_conf *groups;
  uint32_t ngroups;
  h3g_route_conf *routes;
  uint32_t nroutes;
  uint32_t routes_implicit; /* 1: the "default" route was made, not read */
  /* 1 when some route takes WebSocket tunnels: the HTTP/2 and HTTP/3
   * front ends then announce extended CONNECT (RFC 8441, RFC 9220). */
  uint32_t websocket_any;

  /* [forwarding] */
  uint32_t fwd_forwarded;   /* add RFC 7239 Forwarded */
  uint32_t fwd_x_forwarded; /* add X-Forwarded-For/-Proto/-Host */
  uint32_t fwd_via;         /* add Via (RFC 9110 §7.6.3) */
  char trusted_proxies[1024]; /* as written, for dump */
  h3g_cidr trusted[H3G_MAX_TRUSTED];
  uint32_t ntrusted;
} h3g_config;

/*
 * Releases what cfg owns (its groups and routes) and leaves them empty.
 * Safe on a config that owns nothing (after h3g_config_defaults).
 */
void h3g_config_free(h3g_config *cfg);

/*
 * Writes the resolved route table to f (a FILE *): each route in matching
 * order with its hosts, paths, group and the group's servers.
 */
void h3g_config_print_routes(const h3g_config *cfg, void *f);

/*
 * Fills cfg with every key's default (the required keys cert, key and
 * server are left empty, port 0). The defaults are the schema's default
 * texts parsed by the same code as the file's values.
 */
void h3g_config_defaults(h3g_config *cfg);

/*
 * Reads path over the values already in cfg (normally the defaults). Every
 * problem is reported as one line "FILE:LINE: [section] key: reason\n", FILE
 * being path as given; LINE is the line the problem is on, 0 when it is tied
 * to no line (a missing required key, a file that cannot be opened). The
 * lines are written to err in file order, all of them, not just the first;
 * err is always NUL-terminated when errlen > 0, and when it is too short the
 * lines that do not fit are left out (a last line says how many). err may be
 * NULL when errlen is 0.
 *
 * Checks: syntax, unknown sections and keys, keys set twice, values of the
 * wrong type or outside their bounds, required keys, and that each cert and
 * key file is a readable regular file holding a PEM certificate or private
 * key (reported on the line that names the file). Relative paths are
 * resolved against the INI file's directory (made absolute with the current
 * directory) and stored resolved. Lines of any length are read. On any
 * error, cfg is left unchanged.
 *
 * Syntax: "[section]" and "key = value" lines (":" works as "="); blank
 * lines; comments from a ";" or "#" at the start of a line or after a blank
 * to the end of the line, also inside quotes; leading and trailing blanks
 * are dropped; a value wholly inside "..." keeps the blanks and ";"/"#"
 * inside the quotes (but not " ;"/" #"); there are no escapes.
 *
 * [upstream NAME] and [route NAME] sections may repeat with distinct
 * names (docs/routes.md); problems in them are reported as
 * "FILE:LINE: [route NAME] key: reason". They replace cfg's groups and
 * routes on success (cfg must own none it still needs).
 *
 * Returns 0, H3G_ERR_NOTFOUND (no such file), H3G_ERR_IO (it exists but
 * cannot be read), H3G_ERR_NOMEM, or H3G_ERR_INVAL (any other problem).
 */
int h3g_config_load(h3g_config *cfg, const char *path, char *err,
                    size_t errlen);

/*
 * Like h3g_config_load, from len bytes of INI text at data (no NUL needed;
 * a NUL byte inside is an error). name stands for the file in messages;
 * base_dir (NULL: the current directory) is what relative paths are
 * resolved against. Texts over 1 MiB are refused. Returns 0, H3G_ERR_NOMEM
 * or H3G_ERR_INVAL. For tests and fuzzing.
 */
int h3g_config_load_string(h3g_config *cfg, const char *data, size_t len,
                           const char *name, const char *base_dir, char *err,
                           size_t errlen);

/*
 * Writes every key and its current value as INI text to f (a FILE *), in
 * the units a person would write (30s, 256KiB). Loading the text back gives
 * the same configuration. A required key that is not set is written as a
 * comment, so the text then fails to load with "required".
 */
void h3g_config_dump(const h3g_config *cfg, void *f);

/*
 * The value syntax of the INI file, for command-line flags and tests. Each
 * takes the whole of s (no blanks around it) and returns 0, H3G_ERR_INVAL
 * (not that syntax) or H3G_ERR_TOOBIG (does not fit in 64 bits); *out is
 * untouched on error.
 *
 * Durations: a whole number and one of ms, s, m, h; a bare number means
 * seconds ("1500ms", "30s", "30"). Stores milliseconds.
 * Sizes: a whole number and one of B, k/K/KiB, m/M/MiB, g/G/GiB (powers of
 * 1024); a bare number means bytes ("256KiB", "1M"). Stores bytes.
 * Blanks may separate the number from its unit ("30 s").
 * Booleans: yes/no, true/false, on/off, 1/0, in any case. Stores 1 or 0.
 */
int h3g_config_parse_duration(const char *s, uint64_t *out);
int h3g_config_parse_size(const char *s, uint64_t *out);
int h3g_config_parse_bool(const char *s, int *out);

/*
 * 1 if the textual address ip (IPv4 or IPv6 literal, no port) is inside
 * one of cfg's [forwarding] trusted_proxies, else 0.
 */
int h3g_config_is_trusted(const h3g_config *cfg, const char *ip);

#endif /* H3G_CONFIG_H */
