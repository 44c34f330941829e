"""The gateway under test, as e2e tests and benchmarks drive it: its
configuration (INI rendering), one h3gate process (start, ready, ports,
metrics, access log, stop), a factory that stops every gateway it made, and
the development certificates.

A gateway binds its UDP port, and its admin listener, to a free port of the
kernel's choosing ("any", port 0) and learns them from its own "ready" line,
so two listeners can never be handed the same port by a test.
"""

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

HERE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SRC = os.environ.get("H3GATE_SRC") or os.path.normpath(os.path.join(HERE, "..", ".."))
H3GATE_BIN = os.environ.get("H3GATE_BIN") or os.path.join(SRC, "build", "h3gate")
SANITIZE = os.environ.get("H3GATE_SANITIZE", "").strip().lower() in ("1", "on", "true", "yes")
GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
CHROMIUM = "/usr/bin/chromium"

# Timeouts scale up under sanitizers (ASan makes the gateway 2-3x slower).
SLOW = 3.0 if SANITIZE else 1.0
READY_TIMEOUT = 15.0 * SLOW

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: UndefinedBehaviorSanitizer", "AddressSanitizer:DEADLYSIGNAL")



def have_gateway():
    return os.path.isfile(H3GATE_BIN) and os.access(H3GATE_BIN, os.X_OK)


# --------------------------------------------------------------------------
# ports and certificates

def free_port(kind="udp"):
    """A port on 127.0.0.1 that bind(0) just handed out (then released).
    kind "both": free for UDP and TCP at once (the gateway's HTTPS fallback
    listens on the UDP listener's port number by default)."""
    if kind == "both":
        for _ in range(100):
            port = free_port("udp")
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
            finally:
                t.close()
        raise RuntimeError("no port free for both UDP and TCP")
    s = socket.socket(socket.AF_INET,
                      socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def refusing_address():
    """host:port where nothing listens (reserved by bind(0), then closed)."""
    return "127.0.0.1:%d" % free_port("tcp")


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, **kw)


def _openssl_certs(out):
    """Fallback while certs/make-certs.sh does not exist: an ECDSA P-256 CA
    and a leaf for DNS:localhost, IP:127.0.0.1."""
    p = lambda name: os.path.join(out, name)  # noqa: E731
    _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
          "-out", p("ca.key")])
    _run(["openssl", "req", "-x509", "-new", "-key", p("ca.key"), "-sha256",
          "-days", "30", "-subj", "/CN=h3gate e2e test CA", "-out", p("ca.crt"),
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
          "-out", p("server.ec.key")])
    _run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", p("server.ec.key"),
          "-out", p("server.key")])
    _run(["openssl", "req", "-new", "-key", p("server.key"), "-subj", "/CN=localhost",
          "-out", p("server.csr")])
    with open(p("server.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run(["openssl", "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"),
          "-CAkey", p("ca.key"), "-CAcreateserial", "-days", "30", "-sha256",
          "-extfile", p("server.ext"), "-out", p("server.crt")])
    with open(p("server-chain.crt"), "wb") as f:
        for name in ("server.crt", "ca.crt"):
            with open(p(name), "rb") as g:
                f.write(g.read())
    with open(p("spki.txt"), "w") as f:
        f.write(spki_sha256(p("server.crt")) + "\n")


def spki_sha256(cert_path):
    """Base64 SHA-256 of a certificate's SubjectPublicKeyInfo (Chromium's
    --ignore-certificate-errors-spki-list format)."""
    pub = _run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"]).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, stdout=subprocess.PIPE, timeout=30).stdout
    import base64
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class Certs:
    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.cert = os.path.join(d, "server.crt")
        self.chain = os.path.join(d, "server-chain.crt")
        self.key = os.path.join(d, "server.key")
        with open(os.path.join(d, "spki.txt")) as f:
            self.spki = f.read().strip()


# --------------------------------------------------------------------------
# config files

def render_ini(sections):
    """INI text from {section: {key: value}}; a value of None drops the key,
    a list gives the key once per element (server, header edits). Keys keep
    their insertion order, so line numbers are predictable."""
    lines = []
    for section, keys in sections.items():
        if keys is None:
            continue
        if lines:
            lines.append("")
        lines.append("[%s]" % section)
        for k, v in keys.items():
            for one in (v if isinstance(v, (list, tuple)) else [v]):
                if one is not None:
                    lines.append("%s = %s" % (k, one))
    return "\n".join(lines) + "\n"


def merge_config(base, overrides):
    """base with overrides applied; an override section of None removes the
    section (e.g. {"upstream": None} for a file of named groups): it stays
    as None, so that merging the result into another base removes it
    there too, and render_ini leaves it out."""
    out = {s: (dict(k) if k is not None else None) for s, k in base.items()}
    for section, keys in (overrides or {}).items():
        if keys is None:
            out[section] = None
        else:
            if out.get(section) is None:
                out[section] = {}
            out[section].update(keys)
    return out


def ini_line_of(text, section, key):
    """1-based line number of key in section of INI text."""
    cur = None
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            cur = s[1:-1].strip()
        elif cur == section and re.match(r"^%s\s*=" % re.escape(key), s):
            return i
    raise KeyError("%s.%s not in config" % (section, key))


# --------------------------------------------------------------------------
# the access log

ACCESS_FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
ACCESS_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


class AccessLine(dict):
    """One access log line: a dict of its fields (path unquoted), plus
    .time and .raw. Numbers stay strings; use .int()/.float()."""

    def int(self, key):
        return int(self[key])

    def float(self, key):
        return float(self[key])


def parse_access_line(line):
    line = line.rstrip("\n")
    ts, _, rest = line.partition(" ")
    rec = AccessLine()
    rec.raw = line
    rec.time = ts
    for m in ACCESS_FIELD_RE.finditer(rest):
        v = m.group(2)
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        rec[m.group(1)] = v
    return rec


# --------------------------------------------------------------------------
# the gateway

# "udp 127.0.0.1:4433" on the ready line (an IPv6 host in brackets).
READY_ADDR_RE = re.compile(r"\b(udp|tcp|redirect|admin) (?:\[[^\]]*\]|[^ ,\[]+):(\d+)")


class Gateway:
    """One h3gate process. Use the `gateway` fixture to make these."""

    def __init__(self, workdir, certs, upstream_addr, overrides=None, name="gw"):
        self.workdir = workdir
        self.name = name
        self.certs = certs
        self.upstream_addr = upstream_addr
        # Ports: the kernel's pick, read back from the ready line (port,
        # tcp_port, redirect_port, admin_port), unless overrides set them.
        base = {
            "server": {"log_level": "info", "access_log": "-",
                       "shutdown_timeout": "10s", "admin": "127.0.0.1:0"},
            "listener": {"address": "127.0.0.1", "port": "any",
                         "cert": certs.cert, "key": certs.key},
            # Not the UDP port's number (the default): that number may be
            # held by another TCP socket of the test run.
            "tcp": {"port": "any"},
            "upstream": {"server": upstream_addr},
        }
        self.config = merge_config(base, overrides)
        self.port = self.tcp_port = self.redirect_port = self.admin_port = None
        self.config_path = os.path.join(workdir, "h3gate.ini")
        self.stdout_path = os.path.join(workdir, "stdout.log")
        self.stderr_path = os.path.join(workdir, "stderr.log")
        self.write_config()
        self.proc = None
        self.returncode = None
        self.signalled = False

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write(render_ini(self.config))

    @property
    def authority(self):
        return "localhost:%d" % self.port

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)

    def tcp_url(self, path):
        """The URL of path on the HTTPS fallback (TCP) listener."""
        return "https://localhost:%d%s" % (self.tcp_port, path)

    # ---- process -----------------------------------------------------------

    def start(self, wait=True):
        # Started again: keep the ports it had, so clients (and tickets,
        # tokens, Alt-Svc) see the same gateway.
        if self.port is not None and self.config["listener"].get("port") == "any":
            self.config["listener"]["port"] = str(self.port)
            if self.config.get("tcp", {}).get("port") == "any" and self.tcp_port:
                self.config["tcp"]["port"] = str(self.tcp_port)
            if self.config["server"].get("admin") == "127.0.0.1:0" and self.admin_port:
                self.config["server"]["admin"] = "127.0.0.1:%d" % self.admin_port
            self.write_config()
        env = dict(os.environ)
        # A developer's SSLKEYLOGFILE (meant for clients) would make every
        # gateway here write its secrets; test_35 opts in.
        if not getattr(self, "keep_sslkeylogfile", False):
            env.pop("SSLKEYLOGFILE", None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:"
                       "handle_segv=1:detect_stack_use_after_return=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        # wrapper: a command that execs its arguments in some setting of the
        # test's (a mount namespace, say); the gateway keeps the same pid.
        cmd = list(getattr(self, "wrapper", None) or []) + [H3GATE_BIN, "-c",
                                                             self.config_path]
        self.proc = subprocess.Popen(cmd,
                                     stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)
        if wait:
            self.wait_ready()
        return self

    def stderr_text(self):
        try:
            with open(self.stderr_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stdout_text(self):
        try:
            with open(self.stdout_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Waits for the ready line (logged once every listener is bound)
        and reads the bound ports from it."""
        pat = re.compile(r" h3gate \S+ ready: ([^;\n]*)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pat.findall(self.stderr_text())
            if found:
                ports = dict((kind, int(port)) for kind, port in
                             READY_ADDR_RE.findall(found[-1]))
                self.port = ports.get("udp", self.port)
                self.tcp_port = ports.get("tcp")
                self.redirect_port = ports.get("redirect")
                self.admin_port = ports.get("admin")
                return
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s before it was ready:\n%s"
                                     % (self.name, self.proc.returncode,
                                        self.stderr_text()[-4000:]))
            time.sleep(0.02)
        raise AssertionError("%s did not log 'ready' (port %s) within "
                             "%.0fs:\n%s" % (self.name, self.port, timeout,
                                            self.stderr_text()[-4000:]))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sanitizer_reports(self):
        text = self.stderr_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    def assert_no_sanitizer_reports(self):
        found = self.sanitizer_reports()
        assert not found, "%s: sanitizer reported %s:\n%s" % (
            self.name, found, self.stderr_text()[-8000:])

    def send_signal(self, sig):
        self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0, sig=signal.SIGTERM, expect_code=0):
        """Sends sig, waits for the exit; asserts the exit code and that the
        sanitizers reported nothing. Returns the seconds the exit took."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None and not self.signalled:
            self.send_signal(sig)
        try:
            self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self._close_files()
            raise AssertionError("%s did not exit within %.0fs of signal %d:\n%s"
                                 % (self.name, timeout * SLOW, sig,
                                    self.stderr_text()[-4000:]))
        took = time.monotonic() - t0
        self._close_files()
        self.returncode = self.proc.returncode
        self.assert_no_sanitizer_reports()
        if expect_code is not None:
            assert self.returncode == expect_code, "%s exited %s (want %s):\n%s" % (
                self.name, self.returncode, expect_code, self.stderr_text()[-4000:])
        return took

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    # ---- observation -------------------------------------------------------

    def metrics(self, timeout=5.0):
        """GET /metrics on the admin listener: {name without prefix: number}."""
        assert self.admin_port, "admin listener is off in this gateway's config"
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
                c.request("GET", "/metrics")
                r = c.getresponse()
                body = r.read().decode()
                c.close()
                assert r.status == 200, "GET /metrics: %d %s" % (r.status, body[:200])
                break
            except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        out = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition(" ")
            value = value.strip().split(" ")[0]
            if name.startswith("h3gate_"):
                name = name[len("h3gate_"):]
            out[name] = float(value) if "." in value or "e" in value else int(value)
        return out

    def wait_metrics(self, predicate, timeout=5.0, what="metrics condition"):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            m = self.metrics()
            if predicate(m):
                return m
            if time.monotonic() > deadline:
                raise AssertionError("%s: timed out waiting for %s; metrics now: %s"
                                     % (self.name, what, m))
            time.sleep(0.05)

    def wait_idle(self, timeout=5.0):
        """Waits until no upstream connection is busy and no request waits
        for one. (h3_streams_active is not checked: a stream stays open until
        the client acknowledges its last bytes, and an idle libcurl handle
        processes no packets until its next transfer.)"""
        return self.wait_metrics(
            lambda m: m.get("upstream_conns_busy", 0) == 0
            and m.get("upstream_queue_waiting", 0) == 0,
            timeout, "idle (no busy upstream connections, no waiters)")

    def wait_quiescent(self, timeout=5.0):
        """After every client has closed: no QUIC connection, stream, busy
        upstream connection or waiter is left (a leak check)."""
        return self.wait_metrics(
            lambda m: m.get("quic_connections_active", 0) == 0
            and m.get("h3_streams_active", 0) == 0
            and m.get("upstream_conns_busy", 0) == 0
            and m.get("upstream_queue_waiting", 0) == 0,
            timeout, "quiescence after all clients closed (no QUIC connections, "
            "streams, busy upstream connections or waiters)")

    def access_log(self):
        """Parsed access log lines written so far."""
        path = self.stdout_path
        acc = self.config["server"].get("access_log", "-")
        if acc not in ("-", "off", None):
            path = acc if os.path.isabs(acc) else os.path.join(self.workdir, acc)
        try:
            with open(path, "r", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        return [parse_access_line(line) for line in text.splitlines()
                if " client=" in line]

    def wait_log(self, text, count=1, timeout=10.0):
        """Waits until text appears count times in the gateway's stderr."""
        deadline = time.monotonic() + timeout * SLOW
        while self.stderr_text().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError("%s: %r not logged %d time(s) within %.0fs:\n%s"
                                     % (self.name, text, count, timeout,
                                        self.stderr_text()[-3000:]))
            time.sleep(0.02)

    def wait_access(self, predicate=None, count=1, timeout=5.0, path=None):
        """Waits until count lines matching predicate (and path) exist."""
        def match(rec):
            if path is not None and rec.get("path") != path:
                return False
            return predicate is None or predicate(rec)
        deadline = time.monotonic() + timeout * SLOW
        while True:
            got = [r for r in self.access_log() if match(r)]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d access log line(s) for %s within %.0fs, want "
                                     "%d; log:\n%s" % (self.name, len(got), path or "?",
                                                       timeout, count,
                                                       "\n".join(r.raw for r in
                                                                 self.access_log()[-20:])))
            time.sleep(0.05)

    def admin_get(self, path, timeout=5.0):
        """GET path on the admin listener: (status, body text)."""
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            c.close()

    def rss_peak_kib(self):
        """VmHWM (peak resident set) of the running gateway, in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/%d/status" % self.proc.pid)


class GatewayFactory:
    def __init__(self, tmp_factory, certs, default_upstream):
        self.tmp_factory = tmp_factory
        self.certs = certs
        self.default_upstream = default_upstream
        self.made = []

    def __call__(self, overrides=None, upstream=None, start=True, name=None):
        """Starts a gateway. upstream: an Upstream, a "host:port" string, or
        None for the test's `upstream` fixture. overrides: {section: {k: v}}."""
        if upstream is None:
            upstream = self.default_upstream()
        addr = upstream if isinstance(upstream, str) else upstream.address
        name = name or "gw%d" % (len(self.made) + 1)
        workdir = str(self.tmp_factory.mktemp(name))
        gw = Gateway(workdir, self.certs, addr, overrides, name=name)
        self.made.append(gw)
        if start:
            gw.start()
        return gw

    def with_tcp(self, overrides=None, **kw):
        """A started gateway whose TCP listener has a port of its own (see
        tcp_gw), in gw.tcp_port."""
        return tcp_gw(self, overrides, **kw)

    def finish(self):
        """Stops every gateway still running (SIGTERM, exit 0, clean
        sanitizer output); kills any that will not stop."""
        problems = []
        for gw in self.made:
            try:
                if gw.alive():
                    if gw.admin_port and not gw.signalled:
                        gw.wait_quiescent(timeout=10)
                    gw.stop()
                elif gw.proc is not None:
                    gw._close_files()
                    gw.assert_no_sanitizer_reports()
            except AssertionError as e:
                problems.append(str(e))
            finally:
                gw.kill()
            if not os.environ.get("H3GATE_KEEP") and not problems:
                shutil.rmtree(gw.workdir, ignore_errors=True)
        if problems:
            pytest.fail("gateway teardown:\n" + "\n\n".join(problems), pytrace=False)


def tcp_gw(factory, overrides=None, **kw):
    """A started gateway whose TCP fallback listens on a port of the
    kernel's choosing ([tcp] port = any; gw.tcp_port, from the ready line)
    rather than the UDP port's number, which some other TCP socket of the
    test run may hold."""
    gw = factory(merge_config({"tcp": {"port": "any"}}, overrides), **kw)
    assert gw.tcp_port, "no TCP listener on the ready line:\n" + gw.stderr_text()[-2000:]
    return gw
