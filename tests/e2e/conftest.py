"""Fixtures and helpers for h3gate's end-to-end tests.

Layout follows curl's tests/http: session fixtures start a scripted origin
(upstream.py) and the gateway; tests drive real HTTP/3 clients (libcurl via
pycurl, ngtcp2's gtlsclient, headless Chromium) and assert on what the client
got, what the origin received, the access log and the /metrics counters.

Environment:
  H3GATE_BIN       the gateway binary (default <src>/build/h3gate)
  H3GATE_SRC       the source tree (default: two levels above this file)
  H3GATE_SANITIZE  "1"/"ON"/"true" for an ASan+UBSan build (skips RSS limits)
  H3GATE_KEEP      keep each gateway's work directory (for debugging)
"""

import hashlib
import http.client
import io
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Re-exported for the test modules.
from upstream import KiB, MiB, PatternReader, Upstream, expected_sha256  # noqa: E402,F401

try:
    import pycurl
except ImportError:  # pragma: no cover - Debian's python3-pycurl is expected
    pycurl = None

HERE = os.path.dirname(os.path.abspath(__file__))
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

CURL_HTTP_VERSION_3ONLY = getattr(pycurl, "CURL_HTTP_VERSION_3ONLY", 31)
CURL_HTTP_VERSION_2TLS = getattr(pycurl, "CURL_HTTP_VERSION_2TLS", 4)
CURL_HTTP_VERSION_1_1 = getattr(pycurl, "CURL_HTTP_VERSION_1_1", 2)


def have_gateway():
    return os.path.isfile(H3GATE_BIN) and os.access(H3GATE_BIN, os.X_OK)


def pytest_collection_modifyitems(config, items):
    # Every e2e test runs the gateway; skip them all (with the reason) when
    # the binary is not there rather than erroring in fixtures.
    if have_gateway():
        return
    skip = pytest.mark.skip(reason="h3gate binary not built (%s)" % H3GATE_BIN)
    for item in items:
        if not os.path.basename(str(item.fspath)).startswith("test_00_"):
            item.add_marker(skip)


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


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("certs"))
    script = os.path.join(SRC, "certs", "make-certs.sh")
    if os.path.isfile(script):
        _run(["bash", script, out])
    else:
        _openssl_certs(out)
    for name in ("ca.crt", "server.crt", "server.key", "spki.txt"):
        assert os.path.isfile(os.path.join(out, name)), "certs: %s missing" % name
    return Certs(out)


# --------------------------------------------------------------------------
# config files

def render_ini(sections):
    """INI text from {section: {key: value}}; a value of None drops the key.
    Keys keep their insertion order, so line numbers are predictable."""
    lines = []
    for section, keys in sections.items():
        if lines:
            lines.append("")
        lines.append("[%s]" % section)
        for k, v in keys.items():
            if v is None:
                continue
            lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


def merge_config(base, overrides):
    out = {s: dict(k) for s, k in base.items()}
    for section, keys in (overrides or {}).items():
        out.setdefault(section, {}).update(keys)
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

class Gateway:
    """One h3gate process. Use the `gateway` fixture to make these."""

    def __init__(self, workdir, certs, upstream_addr, overrides=None, name="gw"):
        self.workdir = workdir
        self.name = name
        self.certs = certs
        self.port = free_port("both")
        self.admin_port = free_port("tcp")
        self.upstream_addr = upstream_addr
        base = {
            "server": {"log_level": "info", "access_log": "-",
                       "shutdown_timeout": "10s",
                       "admin": "127.0.0.1:%d" % self.admin_port},
            "listener": {"address": "127.0.0.1", "port": str(self.port),
                         "cert": certs.cert, "key": certs.key},
            "upstream": {"server": upstream_addr},
        }
        self.config = merge_config(base, overrides)
        adm = self.config["server"].get("admin")
        if adm in (None, "off"):
            self.admin_port = None
        elif adm:
            self.admin_port = int(adm.rsplit(":", 1)[1])
        self.port = int(self.config["listener"].get("port") or self.port)
        self.config_path = os.path.join(workdir, "h3gate.ini")
        self.stdout_path = os.path.join(workdir, "stdout.log")
        self.stderr_path = os.path.join(workdir, "stderr.log")
        with open(self.config_path, "w") as f:
            f.write(render_ini(self.config))
        self.proc = None
        self.returncode = None
        self.signalled = False

    @property
    def authority(self):
        return "localhost:%d" % self.port

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)

    # ---- process -----------------------------------------------------------

    def start(self, wait=True):
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
        self.proc = subprocess.Popen([H3GATE_BIN, "-c", self.config_path],
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
        # "ready" is logged once every listener (UDP, TCP, admin) is bound.
        pat = re.compile(r" h3gate \S+ ready: ")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pat.search(self.stderr_text()):
                return
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s before it was ready:\n%s"
                                     % (self.name, self.proc.returncode,
                                        self.stderr_text()[-4000:]))
            time.sleep(0.02)
        raise AssertionError("%s did not log 'ready' (port %d) within "
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
        """A gateway whose TCP listener has a port of its own (bind(0) for
        TCP; the default, the UDP port's number, may be taken for TCP by
        another socket of the run), in gw.tcp_port; started, and returned
        once that listener is ready."""
        port = free_port("tcp")
        gw = self(merge_config({"tcp": {"port": str(port)}}, overrides),
                  start=False, **kw)
        gw.tcp_port = port
        gw.start()
        pat = re.compile(r"listening on tcp 127\.0\.0\.1:%d\b" % port)
        deadline = time.monotonic() + 10.0 * SLOW
        while not pat.search(gw.stderr_text()):
            assert gw.alive(), gw.stderr_text()
            assert time.monotonic() < deadline, (
                "no tcp listener:\n" + gw.stderr_text())
            time.sleep(0.05)
        return gw

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


# --------------------------------------------------------------------------
# upstream fixtures

@pytest.fixture
def upstream():
    """A fresh scripted origin for one test (its counters start at zero)."""
    up = Upstream(name="upstream").start()
    yield up
    up.stop()
    up.assert_clean()


@pytest.fixture(scope="session")
def shared_upstream():
    """One scripted origin for the whole session. Counters are shared:
    tests that count accepts or connections use `upstream` instead."""
    up = Upstream(name="shared-upstream").start()
    yield up
    up.stop()
    up.assert_clean()


@pytest.fixture
def gateway(tmp_path_factory, certs, upstream):
    """Factory: gateway(overrides=None, upstream=None) -> started Gateway,
    in front of the test's `upstream` unless told otherwise. Every gateway
    made is stopped with SIGTERM at teardown (before the upstream stops) and
    must exit 0 without sanitizer reports."""
    f = GatewayFactory(tmp_path_factory, certs, lambda: upstream)
    yield f
    f.finish()


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory, certs, shared_upstream):
    """One gateway in front of shared_upstream for the whole session."""
    f = GatewayFactory(tmp_path_factory, certs, lambda: shared_upstream)
    gw = f(name="shared-gw")
    yield gw
    f.finish()


# --------------------------------------------------------------------------
# HTTP/3 clients: libcurl (pycurl)

class Result:
    """What one HTTP/3 exchange gave the client."""

    def __init__(self):
        self.status = 0
        self.headers = []           # final response header block [(name, value)]
        self.all_header_blocks = []
        self.http_version = None
        self.body_len = 0
        self.sha256 = None
        self.body = b""             # the first `keep` bytes
        self.error = None           # None or (curl code, message)
        self.num_connects = None
        self.local_port = None
        self.time_total = None
        self.first_byte_at = None   # monotonic time of the first body byte
        self._sha = hashlib.sha256()

    @property
    def ok(self):
        return self.error is None

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return "<Result status=%s len=%d err=%s v=%s conns=%s>" % (
            self.status, self.body_len, self.error, self.http_version, self.num_connects)


class _Transfer:
    """Callbacks and options for one easy handle."""

    def __init__(self, c, url, port, ca, method="GET", body=None, chunked=False,
                 headers=(), timeout=60, connect_timeout=10, pace=None,
                 abort_after=None, abort_upload_after=None, keep=1 * MiB,
                 on_data=None, hold_upload_at=None):
        self.c = c
        self.r = Result()
        self.keep = keep
        self.pace = pace
        self.abort_after = abort_after
        self.on_data = on_data
        self.t0 = None
        self._buf = io.BytesIO()
        self._hdr_block = None
        # hold_upload_at: the upload stops there until the final response
        # head has arrived (a client that uploads slower than the server
        # answers), then goes on.
        self._held = False
        self._final_head = False

        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.HTTP_VERSION, CURL_HTTP_VERSION_3ONLY)
        c.setopt(pycurl.CAINFO, ca)
        c.setopt(pycurl.CAPATH, None)   # do not scan the system CA directory
        c.setopt(pycurl.SSL_VERIFYPEER, 1)
        c.setopt(pycurl.SSL_VERIFYHOST, 2)
        c.setopt(pycurl.RESOLVE, ["localhost:%d:127.0.0.1" % port])
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000 * SLOW))
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(connect_timeout * 1000 * SLOW))
        c.setopt(pycurl.USERAGENT, "h3gate-e2e/1")
        c.setopt(pycurl.WRITEFUNCTION, self._write)
        c.setopt(pycurl.HEADERFUNCTION, self._header)
        hdrs = list(headers)
        if not any(h.lower().startswith("expect:") for h in hdrs):
            hdrs.append("Expect:")
        c.setopt(pycurl.HTTPHEADER, hdrs)
        if method == "HEAD":
            c.setopt(pycurl.NOBODY, 1)
        elif body is not None:
            if isinstance(body, int):
                reader, n = PatternReader(body), body
            else:
                reader, n = io.BytesIO(body), len(body)
            read = reader.read
            if abort_upload_after is not None:
                def read(want, _r=reader, _limit=abort_upload_after):
                    if _r.pos >= _limit:
                        return pycurl.READFUNC_ABORT
                    return _r.read(min(want, _limit - _r.pos))
            if hold_upload_at is not None:
                def held(want, _r=reader, _at=hold_upload_at, _read=read):
                    if _r.pos >= _at and not self._final_head:
                        self._held = True
                        return pycurl.READFUNC_PAUSE
                    if _r.pos < _at:
                        want = min(want, _at - _r.pos)
                    return _read(want)
                read = held
            c.setopt(pycurl.POST, 1)
            c.setopt(pycurl.READFUNCTION, read)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, -1 if chunked else n)
            if method != "POST":
                c.setopt(pycurl.CUSTOMREQUEST, method)
        elif method != "GET":
            c.setopt(pycurl.CUSTOMREQUEST, method)

    def _header(self, line):
        text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            self._hdr_block = []
            self.r.all_header_blocks.append((text, self._hdr_block))
            self.r.headers = self._hdr_block
        elif text and self._hdr_block is not None:
            k, _, v = text.partition(":")
            self._hdr_block.append((k.strip().lower(), v.strip()))
        elif not text and self.r.all_header_blocks:
            status = self.r.all_header_blocks[-1][0].split()
            if len(status) > 1 and not status[1].startswith("1"):
                self._final_head = True
                if self._held:
                    self._held = False
                    self.c.pause(pycurl.PAUSE_CONT)

    def _write(self, data):
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
            self.r.first_byte_at = now
        self.r._sha.update(data)
        self.r.body_len += len(data)
        if self._buf.tell() < self.keep:
            self._buf.write(data[: self.keep - self._buf.tell()])
        if self.on_data is not None:
            self.on_data(self.r)
        if self.abort_after is not None and self.r.body_len >= self.abort_after:
            return 0  # CURLE_WRITE_ERROR: curl resets the stream
        if self.pace:
            # Read no faster than pace bytes/s: sleeping here stalls curl, so
            # the QUIC flow-control window stops opening.
            ahead = self.r.body_len / self.pace - (now - self.t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
        return None

    def finish(self, err=None):
        c, r = self.c, self.r
        if err is not None:
            r.error = err
        r.status = c.getinfo(pycurl.RESPONSE_CODE)
        r.http_version = c.getinfo(pycurl.INFO_HTTP_VERSION)
        r.num_connects = c.getinfo(pycurl.NUM_CONNECTS)
        r.local_port = c.getinfo(pycurl.LOCAL_PORT)
        r.time_total = c.getinfo(pycurl.TOTAL_TIME)
        r.sha256 = r._sha.hexdigest()
        r.body = self._buf.getvalue()
        return r


class H3Client:
    """libcurl HTTP/3 client bound to one gateway. One easy handle: requests
    reuse its QUIC connection (Result.num_connects is 0 on reuse)."""

    http_version = CURL_HTTP_VERSION_3ONLY

    def __init__(self, gw, ca=None):
        self.gw = gw
        self.port = gw.port if hasattr(gw, "port") else int(gw)
        self.ca = ca or gw.certs.ca
        self.curl = pycurl.Curl()

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)

    def request(self, path, method="GET", **kw):
        """kw: body (int: that many pattern bytes, or bytes), chunked (no
        declared length), headers (["Name: value"]), timeout, connect_timeout,
        pace (bytes/s read limit), abort_after (response bytes, then abort),
        abort_upload_after (request bytes, then abort), keep (body bytes
        kept in Result.body), on_data (called with the Result per write)."""
        c = self.curl
        c.reset()
        t = _Transfer(c, self.url(path), self.port, self.ca, method=method, **kw)
        c.setopt(pycurl.HTTP_VERSION, self.http_version)
        err = None
        try:
            c.perform()
        except pycurl.error as e:
            err = (e.args[0], e.args[1] if len(e.args) > 1 else "")
        return t.finish(err)

    def get(self, path, **kw):
        return self.request(path, "GET", **kw)

    def post(self, path, body, **kw):
        return self.request(path, "POST", body=body, **kw)

    def close(self):
        self.curl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TcpClient(H3Client):
    """libcurl over TLS to the gateway's TCP listener: HTTP/2 (proto "h2")
    or HTTP/1.1 ("http/1.1"). One easy handle: requests reuse its
    connection when the protocol lets them (num_connects 0 on reuse)."""

    VERSIONS = {"h2": CURL_HTTP_VERSION_2TLS, "http/1.1": CURL_HTTP_VERSION_1_1}

    def __init__(self, gw, proto, port=None):
        super().__init__(gw)
        self.port = port or getattr(gw, "tcp_port", None) or gw.port
        self.http_version = self.VERSIONS[proto]


def client_for(proto, gw):
    """A libcurl client of gw speaking proto: "h3", "h2" or "http/1.1"
    (the last two need gw.tcp_port: GatewayFactory.with_tcp)."""
    return H3Client(gw) if proto == "h3" else TcpClient(gw, proto)


class H3Multi:
    """Concurrent HTTP/3 requests multiplexed on one QUIC connection (a
    CurlMulti with PIPEWAIT and at most one connection per host). The
    connection cache lives in the multi handle: later batches reuse it."""

    def __init__(self, gw, ca=None, max_host_connections=1):
        self.gw = gw
        self.port = gw.port
        self.ca = ca or gw.certs.ca
        self.m = pycurl.CurlMulti()
        self.m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        if max_host_connections:
            self.m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, max_host_connections)

    def run(self, specs, timeout=60):
        """specs: list of dicts with "path" and H3Client.request keywords
        (plus "method"). Returns Results in the same order."""
        transfers = []
        for spec in specs:
            spec = dict(spec)
            path = spec.pop("path")
            c = pycurl.Curl()
            t = _Transfer(c, "https://localhost:%d%s" % (self.port, path), self.port,
                          self.ca, **spec)
            self.prepare(c)
            c.setopt(pycurl.PIPEWAIT, 1)
            self.m.add_handle(c)
            transfers.append(t)
        by_handle = {id(t.c): t for t in transfers}
        errors = {}
        deadline = time.monotonic() + timeout * SLOW + 5
        remaining = len(transfers)
        while remaining:
            while True:
                ret, _ = self.m.perform()
                if ret != pycurl.E_CALL_MULTI_PERFORM:
                    break
            while True:
                queued, ok_list, err_list = self.m.info_read()
                for c in ok_list:
                    errors[id(c)] = None
                    remaining -= 1
                for c, code, msg in err_list:
                    errors[id(c)] = (code, msg)
                    remaining -= 1
                if not queued:
                    break
            if not remaining:
                break
            if time.monotonic() > deadline:
                for t in transfers:
                    if id(t.c) not in errors:
                        errors[id(t.c)] = (-1, "test deadline passed")
                break
            self.m.select(0.05)
        results = []
        for t in transfers:
            results.append(t.finish(errors.get(id(t.c))))
            self.m.remove_handle(t.c)
            t.c.close()
        assert set(by_handle) == {id(t.c) for t in transfers}
        return results

    def prepare(self, c):
        """Per-handle options of a subclass (e.g. another HTTP version)."""

    def close(self):
        self.m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def h3_request_with(client, path, method="GET", setup=None, **kw):
    """client.request(path, method, **kw), but setup(curl, transfer) runs
    just before perform, to set what the helpers do not cover (a header
    callback that records raw lines, CURLOPT_EXPECT_100_TIMEOUT_MS, ...).
    The options are reset on the client's next request."""
    c = client.curl
    c.reset()
    t = _Transfer(c, client.url(path), client.port, client.ca, method=method, **kw)
    c.setopt(pycurl.HTTP_VERSION, client.http_version)
    if setup is not None:
        setup(c, t)
    err = None
    try:
        c.perform()
    except pycurl.error as e:
        err = (e.args[0], e.args[1] if len(e.args) > 1 else "")
    return t.finish(err)


@pytest.fixture
def h3():
    """Factory: h3(gw) -> H3Client, closed at teardown."""
    made = []

    def make(gw):
        c = H3Client(gw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


# --------------------------------------------------------------------------
# HTTP/3 clients: ngtcp2's gtlsclient and Chromium

def gtlsclient_download(gw, paths, download_dir, timeout=60, extra=()):
    """Runs gtlsclient for paths on one connection, saving bodies under
    download_dir (file name = last path segment). Returns CompletedProcess."""
    if not os.access(GTLSCLIENT, os.X_OK):
        pytest.skip("gtlsclient (ngtcp2-client) is not installed")
    os.makedirs(download_dir, exist_ok=True)
    cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
           "--download=%s" % download_dir] + list(extra) + [
               "127.0.0.1", str(gw.port)] + [gw.url(p) for p in paths]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout * SLOW)


def chromium_fetch(gw, path, workdir, timeout=90):
    """Loads gw.url(path) in headless Chromium forced onto QUIC for the
    gateway's origin. Returns (dom text, net-log JSON text, CompletedProcess)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Chromium is not installed (%s)" % CHROMIUM)
    profile = os.path.join(workdir, "profile")
    os.makedirs(profile, exist_ok=True)
    netlog = os.path.join(workdir, "netlog.json")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
           "--user-data-dir=%s" % profile,
           "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
           "--enable-quic", "--origin-to-force-quic-on=localhost:%d" % gw.port,
           "--ignore-certificate-errors-spki-list=%s" % gw.certs.spki,
           "--log-net-log=%s" % netlog, "--net-log-capture-mode=Default",
           "--virtual-time-budget=5000",
           "--dump-dom", gw.url(path)]
    # Its own process group, so that a hung browser is killed with every
    # helper process it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError("Chromium did not finish within %ds:\n%s"
                             % (timeout, err.decode(errors="replace")[-3000:]))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # stray helpers, if any
        except ProcessLookupError:
            pass
    p = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    try:
        with open(netlog, errors="replace") as f:
            log = f.read()
    except FileNotFoundError:
        log = ""
    return p.stdout.decode(errors="replace"), log, p


_ids = itertools.count(1)


def uid():
    """A unique token for query strings, so a test can find its own
    request among the shared upstream's records."""
    return "%d-%d" % (os.getpid(), next(_ids))


def netlog_quic_requests(netlog_text, port):
    """(authority, path) of every request Chromium sent over QUIC to
    localhost:port, from a --log-net-log file."""
    import json
    try:
        d = json.loads(netlog_text)
    except ValueError:
        # Chromium may be killed before it closes the JSON array.
        try:
            d = json.loads(netlog_text.rstrip().rstrip(",") + "]}")
        except ValueError:
            return []
    names = {v: k for k, v in d.get("constants", {}).get("logEventTypes", {}).items()}
    out = []
    for e in d.get("events", []):
        if names.get(e.get("type")) != "HTTP_TRANSACTION_QUIC_SEND_REQUEST_HEADERS":
            continue
        hdrs = e.get("params", {}).get("headers", [])
        auth = [h.split(": ", 1)[1] for h in hdrs if h.startswith(":authority: ")]
        path = [h.split(": ", 1)[1] for h in hdrs if h.startswith(":path: ")]
        if auth and path and auth[0] == "localhost:%d" % port:
            out.append((auth[0], path[0]))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()

