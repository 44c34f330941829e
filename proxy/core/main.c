/*
 * Command line: validates the configuration, then hands over to the server.
 * Exit status: 0 ok, 1 runtime failure (e.g. cannot bind), 2 usage or
 * configuration error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "secrets.h"
#include "upstream_group.h"
#include "upstream_tls.h"
#include "server.h"
#include "tls_ctx.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: h3gate -c FILE        run with the configuration FILE\n"
          "       h3gate --config FILE  (the same)\n"
          "       h3gate --check-config FILE\n"
          "       h3gate -t -c FILE     validate FILE (and its certificates)\n"
          "                             and exit (0 ok, 2 not)\n"
          "       h3gate --reload PIDFILE\n"
          "                             ask the h3gate whose [server] pid_file\n"
          "                             is PIDFILE to reload (SIGHUP)\n"
          "       h3gate --version      print versions and exit\n"
          "       h3gate --help         print this help and exit\n"
          "\n"
          "h3gate terminates HTTP/3 (QUIC + TLS 1.3) and forwards each request\n"
          "to an HTTP/1.1 upstream over pooled keep-alive connections.\n"
          "Signals: SIGTERM or SIGINT drain in-flight requests, then exit (a\n"
          "second one stops at once); SIGHUP reloads the configuration;\n"
          "SIGUSR1 reopens the access log.\n");
}

static int load(h3g_config *cfg, const char *path) {
  static char err[16384];
  err[0] = '\0';
  h3g_config_defaults(cfg);
  if (h3g_config_load(cfg, path, err, sizeof(err)) != 0) {
    fputs(err, stderr);
    if (err[0] != '\0' && err[strlen(err) - 1] != '\n')
      fputc('\n', stderr);
    return 2;
  }
  /* The config checks that the secrets file is readable; its content is
   * the secrets module's to judge, here so that --check-config catches it
   * too. */
  if (cfg->secrets_file[0] != '\0' &&
      h3g_secrets_check_file(cfg->secrets_file, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s:0: [listener] secrets_file: %s\n", path, err);
    return 2;
  }
  for (uint32_t i = 0; i < cfg->ngroups; i++) {
    const h3g_group_conf *g = &cfg->groups[i];
    int tls = 0;
    for (uint32_t k = 0; k < g->nservers; k++)
      tls |= g->servers[k].kind == H3G_SERVER_TLS;
    if (tls && !g->tls_verify)
      fprintf(stderr,
              "%s:%u: [upstream %s] tls_verify: warning: off, so anyone on "
              "the path can pose as these servers\n",
              path, g->line, g->name);
    /* What only building the TLS context tells: a key that does not match
     * its certificate, a CA file without a usable certificate. */
    h3g_upstream_tls_ctx *ctx = NULL;
    if (h3g_upstream_group_tls(g, &ctx, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s:%u: [upstream %s] tls_ca: %s\n", path, g->line,
              g->name, err);
      return 2;
    }
    h3g_upstream_tls_ctx_free(ctx);
  }
  return 0;
}

/* What only --check-config looks at: the listener's certificate and key
 * (they are loaded at start too, but a renewal is checked before the
 * restart or reload that would fail on it). */
static int check_certs(const h3g_config *cfg, const char *path) {
  char err[512], warn[512];
  if (!cfg->listen_enabled && !cfg->tcp_enabled)
    return 0;
  if (h3g_tls_check_files(cfg->cert_file, cfg->key_file, err, sizeof(err),
                          warn, sizeof(warn)) != 0) {
    fprintf(stderr, "%s:0: [listener] cert: %s\n", path, err);
    return 2;
  }
  if (warn[0] != '\0')
    fprintf(stderr, "%s:0: [listener] cert: warning: %s\n", path, warn);
  return 0;
}

/* The command name (/proc/PID/comm) of process pid ("self": this one)
 * into buf; "" when it cannot be read. */
static void comm_of(const char *pid, char *buf, size_t cap) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%s/comm", pid);
  buf[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return;
  if (fgets(buf, (int)cap, f) == NULL)
    buf[0] = '\0';
  fclose(f);
  buf[strcspn(buf, "\n")] = '\0';
}

/* --reload PIDFILE: SIGHUP to the process the file names, when it is an
 * h3gate (a stale file may name a process id given to another program
 * since, which SIGHUP would end). */
static int send_reload(const char *pidfile) {
  long pid = h3g_pid_file_read(pidfile);
  if (pid <= 1) {
    fprintf(stderr, "h3gate: %s: no process id in it\n", pidfile);
    return 2;
  }
  char id[32], them[64], us[64];
  snprintf(id, sizeof(id), "%ld", pid);
  comm_of(id, them, sizeof(them));
  comm_of("self", us, sizeof(us));
  if (them[0] != '\0' && us[0] != '\0' && strcmp(them, us) != 0) {
    fprintf(stderr,
            "h3gate: %s names process %ld, which is %s, not %s: a stale "
            "file? not signalled\n",
            pidfile, pid, them, us);
    return 1;
  }
  if (kill((pid_t)pid, SIGHUP) != 0) {
    fprintf(stderr, "h3gate: process %ld: %s\n", pid, strerror(errno));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  enum { OPT_CHECK = 256, OPT_VERSION, OPT_HELP, OPT_RELOAD };
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"check-config", required_argument, NULL, OPT_CHECK},
      {"version", no_argument, NULL, OPT_VERSION},
      {"help", no_argument, NULL, OPT_HELP},
      {"reload", required_argument, NULL, OPT_RELOAD},
      {NULL, 0, NULL, 0},
  };
  const char *config = NULL;
  const char *check = NULL;
  int c;
  int test = 0;
  while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config = optarg;
      break;
    case 't': /* nginx's habit: -t -c FILE */
      test = 1;
      break;
    case OPT_CHECK:
      check = optarg;
      break;
    case OPT_RELOAD:
      return send_reload(optarg);
    case 'V':
    case OPT_VERSION: {
      char v[512];
      h3g_server_versions(v, sizeof(v));
      printf("h3gate %s (%s)\n", H3G_VERSION, v);
      return 0;
    }
    case 'h':
    case OPT_HELP:
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "h3gate: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  static h3g_config cfg;
  if (test && check == NULL) {
    if (config == NULL) {
      fprintf(stderr, "h3gate: -t needs -c FILE\n");
      return 2;
    }
    check = config;
  }
  if (check != NULL) {
    int rv = load(&cfg, check);
    if (rv == 0)
      rv = check_certs(&cfg, check);
    if (rv == 0) {
      h3g_config_print_routes(&cfg, stdout);
      printf("%s: ok\n", check);
    }
    h3g_config_free(&cfg);
    return rv;
  }
  if (config == NULL) {
    fprintf(stderr, "h3gate: no configuration file (use -c FILE)\n");
    usage(stderr);
    return 2;
  }
  int rv = load(&cfg, config);
  const h3g_server_reload reload = {.path = config, .load = load};
  if (rv == 0)
    rv = h3g_server_run(&cfg, &reload);
  h3g_config_free(&cfg);
  return rv;
}
