/*
 * The TLS key log. See keylog.h for the contract.
 *
 * wolfSSL builds the lines itself: with OPENSSL_EXTRA and
 * HAVE_SECRET_CALLBACK (scripts/deps.sh) a context's keylog callback is
 * copied into every connection it creates and called once per TLS 1.3
 * secret as it is derived (CLIENT_EARLY_TRAFFIC_SECRET when 0-RTT is
 * accepted, CLIENT_ and SERVER_HANDSHAKE_TRAFFIC_SECRET,
 * CLIENT_ and SERVER_TRAFFIC_SECRET_0; EXPORTER_SECRET only in a wolfSSL
 * built with HAVE_KEYING_MATERIAL, which ours is not: nothing here exports
 * keys, and decrypting needs only the others). QUIC runs the same
 * TLS 1.3 key schedule (wolfSSL hands the secrets to ngtcp2 after deriving
 * them), so one callback covers both listeners. wolfSSL's server side has
 * no such callback for TLS 1.2, so a TCP client that negotiates TLS 1.2
 * is not logged.
 *
 * SSLKEYLOGFILE: the convention every TLS tool follows (NSS, libcurl,
 * browsers, ngtcp2's examples), so it is honoured when the configuration
 * leaves keylog_file out. A variable meant for clients can leak into a
 * server's unit file or image, though, so it never writes silently: the
 * same loud warning names the variable at every start, and
 * "keylog_file = off" written in the configuration overrides it.
 */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "keylog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* wolfSSL needs its build options before any of its headers. */
#include <wolfssl/options.h>

#include <wolfssl/ssl.h>

#include "log.h"

#if !defined(OPENSSL_EXTRA) || !defined(HAVE_SECRET_CALLBACK)
#error "wolfSSL must be built with OPENSSL_EXTRA and HAVE_SECRET_CALLBACK \
(scripts/deps.sh)"
#endif

/* Longest line: "CLIENT_HANDSHAKE_TRAFFIC_SECRET", a 32-byte client random
 * and a SHA-384 secret in hex, blanks and newline: 195 bytes. */
#define KEYLOG_LINE_MAX 256

static int keylog_fd = -1;
static int keylog_failed; /* a write failed: said once, not per line */

/*
 * One secret, as wolfSSL formats it ("LABEL RANDOM SECRET", upper-case
 * hex, no newline). Written lower-case, as NSS, libcurl and OpenSSL write
 * it, so that key logs from both ends compare equal, with the newline, in
 * one write(2) to an O_APPEND file: lines from several processes sharing
 * the file never interleave, and nothing is held in a stdio buffer (a
 * crash loses no line, which is when one wants the log most).
 */
static void on_keylog_line(const WOLFSSL *ssl, const char *line) {
  char buf[KEYLOG_LINE_MAX];
  size_t n = strlen(line);
  H3G_UNUSED(ssl);

  if (keylog_fd < 0)
    return;
  if (n + 1 > sizeof(buf)) {
    if (!keylog_failed)
      h3g_warn("tls: key log: a %zu-byte line, not written", n);
    keylog_failed = 1;
    return;
  }
  const char *sp = memchr(line, ' ', n);
  size_t label = sp != NULL ? (size_t)(sp - line) : n;
  for (size_t i = 0; i < n; i++) {
    char ch = line[i];
    buf[i] = i > label && ch >= 'A' && ch <= 'F' ? (char)(ch - 'A' + 'a') : ch;
  }
  buf[n++] = '\n';
  for (size_t off = 0; off < n;) {
    ssize_t w = write(keylog_fd, buf + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      if (!keylog_failed)
        h3g_warn("tls: key log: write failed: %s", strerror(errno));
      keylog_failed = 1;
      break;
    }
    off += (size_t)w;
  }
  explicit_bzero(buf, sizeof(buf));
}

int h3g_keylog_open(const h3g_config *cfg) {
  const char *env = getenv("SSLKEYLOGFILE");
  const char *path = cfg->keylog_file, *source = "[debug] keylog_file";

  if (env != NULL && env[0] == '\0')
    env = NULL;
  if (path[0] == '\0') {
    if (env != NULL && !cfg->keylog_env) {
      h3g_info("SSLKEYLOGFILE is set but ignored: [debug] keylog_file = off");
      return 0;
    }
    if (env == NULL)
      return 0;
    path = env;
    source = "SSLKEYLOGFILE";
  } else if (env != NULL) {
    h3g_info("SSLKEYLOGFILE is set but [debug] keylog_file takes precedence");
  }
  if (keylog_fd >= 0)
    return 0;
  int fd =
      open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) {
    h3g_error("tls: key log %s (%s): %s", path, source, strerror(errno));
    return H3G_ERR_IO;
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0)
    h3g_warn("tls: key log %s is readable by other users (mode %03o)", path,
             (unsigned)(st.st_mode & 0777));
  keylog_fd = fd;
  keylog_failed = 0;
  h3g_warn("tls: WRITING TLS SECRETS to %s (%s): anyone who reads it can "
           "decrypt this gateway's traffic; for debugging only, never in "
           "production",
           path, source);
  return 0;
}

void h3g_keylog_attach(void *ssl_ctx) {
  if (keylog_fd < 0 || ssl_ctx == NULL)
    return;
  wolfSSL_CTX_set_keylog_callback((WOLFSSL_CTX *)ssl_ctx, on_keylog_line);
}

void h3g_keylog_close(void) {
  if (keylog_fd < 0)
    return;
  close(keylog_fd);
  keylog_fd = -1;
}
