"""The HTTPS fallback (TCP + TLS, HTTP/1.1) and the plain-HTTP redirect
listener: bodies byte-exact through the same upstream, Alt-Svc (default,
configured, upstream replace/keep, none without QUIC), hop-by-hop fields,
upstream failures, keep-alive, the header timeout against slowloris, TLS
1.2 and 1.3, clients without ALPN, 308 redirects, access log protocol."""

import hashlib
import json
import re
import socket
import ssl
import time

import pytest

from conftest import (SLOW, GatewayFactory, KiB, MiB, expected_sha256, pycurl,
                      refusing_address)
from testenv.clients import H1Client
from testenv.gateway import tcp_gw
from testenv.require import require


@pytest.fixture
def h1():
    made = []

    def make(gw, port=None):
        c = H1Client(gw, port)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def tgw(tmp_path_factory, certs, shared_upstream):
    """One gateway with a TCP listener for the module's read-only tests."""
    f = GatewayFactory(tmp_path_factory, certs, lambda: shared_upstream)
    yield tcp_gw(f, name="tcp-gw")
    f.finish()


def tls_socket(port, maximum=None, alpn=("http/1.1",), timeout=10):
    ctx = ssl.create_default_context(cafile=CA[0])
    if maximum is not None:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


CA = [None]


@pytest.fixture(autouse=True)
def _ca(certs):
    CA[0] = certs.ca


def read_response(s, limit=4 * MiB):
    """Reads one HTTP/1.1 response with Content-Length from socket s:
    (status line, {name: value}, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError(buf)
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields.setdefault(k.strip().lower(), v.strip())
    n = int(fields.get("content-length", "0"))
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return lines[0], fields, rest[:n]


# ---- bodies ------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1 * KiB, 1 * MiB, 20 * MiB])
def test_get_bytes_exact(tgw, h1, n):
    r = h1(tgw).get("/bytes/%d" % n)
    assert r.error is None and r.status == 200, r
    assert r.http_version == pycurl.CURL_HTTP_VERSION_1_1 or r.http_version == 2
    assert r.body_len == n and r.sha256 == expected_sha256(n)


@pytest.mark.parametrize("n", [0, 1 * KiB, 1 * MiB, 20 * MiB])
def test_post_bytes_exact(tgw, h1, n):
    r = h1(tgw).post("/sink", n)
    assert r.error is None and r.status == 200, r
    got = json.loads(r.body)
    assert got["len"] == n and got["sha256"] == expected_sha256(n), got


@pytest.mark.parametrize("n", [1 * KiB, 1 * MiB])
def test_post_chunked_echo(tgw, h1, n):
    r = h1(tgw).post("/echo", n, chunked=True)
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n)


def test_chunked_response_with_trailers(tgw, h1):
    r = h1(tgw).get("/chunked/300000?trailers=1")
    assert r.error is None and r.status == 200, r
    assert r.body_len == 300000 and r.sha256 == expected_sha256(300000)


# ---- Alt-Svc -----------------------------------------------------------------

def test_alt_svc_default(tgw, h1):
    r = h1(tgw).get("/bytes/10")
    assert r.header("alt-svc") == 'h3=":%d"; ma=86400' % tgw.port


def test_tcp_port_defaults_to_udp_port(gateway, h1):
    gw = gateway({"tcp": {"port": "0"}})
    if "TCP port %d is taken" % gw.port in gw.stderr_text():
        require(False, "TCP port %d is in use by another socket" % gw.port)
    assert gw.tcp_port == gw.port
    r = h1(gw, gw.port).get("/bytes/10")
    assert r.status == 200, r
    assert r.header("alt-svc") == 'h3=":%d"; ma=86400' % gw.port


def test_tcp_port_taken_serves_http3_alone(gateway, h3):
    """The default TCP port is the UDP port's number; when another socket
    holds it for TCP, the gateway says so and serves HTTP/3 alone (an
    explicit [tcp] port that cannot be bound stops the start instead)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        gw = gateway({"listener": {"port": str(port)}, "tcp": {"port": "0"}})
        assert "TCP port %d is taken: serving HTTP/3 alone" % port in gw.stderr_text()
        assert gw.port == port and gw.tcp_port is None
        r = h3(gw).get("/bytes/10")
        assert r.error is None and r.status == 200, r
        explicit = gateway({"tcp": {"port": str(port)}}, start=False)
        explicit.start(wait=False)
        assert explicit.proc.wait(15 * SLOW) == 1
        assert "cannot listen on 127.0.0.1 port %d" % port in explicit.stderr_text()
    finally:
        holder.close()


def test_alt_svc_on_gateway_errors(gateway, h1):
    gw = tcp_gw(gateway, upstream=refusing_address())
    r = h1(gw).get("/bytes/10")
    assert r.status == 502, r
    assert r.header("alt-svc") == 'h3=":%d"; ma=86400' % gw.port


def test_alt_svc_configured(gateway, h1):
    gw = tcp_gw(gateway, {"alt_svc": {"port": "443", "host": "h3.example.com",
                                      "max_age": "60"}})
    r = h1(gw).get("/bytes/10")
    assert r.header("alt-svc") == 'h3="h3.example.com:443"; ma=60'


def test_alt_svc_upstream_replaced_or_kept(gateway, upstream, h1):
    resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
            b"Alt-Svc: h2=\":9999\"; ma=5\r\n\r\nok")
    upstream.script("altsvc", resp, close=False)
    gw = tcp_gw(gateway)
    r = h1(gw).get("/script/altsvc")
    assert r.status == 200, r
    assert r.header_all("alt-svc") == ['h3=":%d"; ma=86400' % gw.port]
    gw2 = tcp_gw(gateway, {"alt_svc": {"upstream": "keep"}})
    r = h1(gw2).get("/script/altsvc")
    assert r.status == 200, r
    assert r.header_all("alt-svc") == ['h2=":9999"; ma=5']


def test_no_h3_advertised_without_quic(gateway, h1):
    gw = gateway({"listener": {"enabled": "no"}, "tcp": {"port": "any"}})
    assert gw.port is None  # no UDP listener on the ready line
    r = h1(gw, gw.tcp_port).get("/bytes/10")
    assert r.status == 200, r
    assert r.header("alt-svc") is None
    assert "listening on udp" not in gw.stderr_text()


def test_alt_svc_disabled(gateway, h1):
    gw = tcp_gw(gateway, {"alt_svc": {"enabled": "no"}})
    r = h1(gw).get("/bytes/10")
    assert r.status == 200 and r.header("alt-svc") is None, r


# ---- mapping -----------------------------------------------------------------

def test_request_mapping(gateway, upstream, h1):
    gw = tcp_gw(gateway)
    r = h1(gw).get("/headers?x=1", headers=["X-Mixed-Case: v",
                                           "Connection: keep-alive, X-Drop",
                                           "X-Drop: gone", "TE: trailers"])
    assert r.status == 200, r
    req = upstream.last_request("/headers")
    assert req.target == "/headers?x=1"
    assert req.header("host") == "localhost:%d" % gw.tcp_port
    assert req.header("x-mixed-case") == "v"
    assert req.header("x-drop") is None
    assert req.header("te") is None
    assert req.header("via") == "1.1 h3gate"
    assert req.header("x-forwarded-proto") == "https"


def test_response_hop_by_hop_removed(tgw, h1):
    r = h1(tgw).get("/resp-headers")
    assert r.status == 200, r
    assert r.header("x-hop-named") is None
    assert r.header("keep-alive") is None
    assert r.header("proxy-connection") is None
    assert r.header("x-upstream") == "yes"
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.body == b"resp-headers ok\n"


def test_upstream_failures(gateway, h1):
    gw = tcp_gw(gateway, upstream=refusing_address())
    r = h1(gw).get("/bytes/1")
    assert r.status == 502, r
    gw2 = tcp_gw(gateway, {"upstream": {"response_timeout": "500ms"}})
    r = h1(gw2).get("/hang?max=5")
    assert r.status == 504, r


def test_upstream_error_status_passes(tgw, h1):
    r = h1(tgw).get("/status/404")
    assert r.status == 404 and r.body == b"status 404\n", r
    r = h1(tgw).get("/status/204")
    assert r.status == 204, r


# ---- connections -------------------------------------------------------------

def test_keep_alive_reuses_connection(tgw, h1):
    c = h1(tgw)
    first = c.get("/bytes/100")
    assert first.status == 200 and first.num_connects == 1, first
    for n in (0, 5000, 70000):
        r = c.get("/bytes/%d" % n)
        assert r.status == 200 and r.num_connects == 0, r
        assert r.sha256 == expected_sha256(n)
        assert r.local_port == first.local_port


def test_pipelined_requests(tgw):
    s = tls_socket(tgw.tcp_port)
    try:
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"GET /bytes/20 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        l1, f1, b1 = read_response(s)
        l2, f2, b2 = read_response(s)
        assert l1.startswith("HTTP/1.1 200") and len(b1) == 10
        assert l2.startswith("HTTP/1.1 200") and len(b2) == 20
    finally:
        s.close()


def test_slowloris_cut_off(gateway, upstream):
    gw = tcp_gw(gateway, {"tcp": {"header_timeout": "1s"}})
    before = upstream.accepts
    s = tls_socket(gw.tcp_port)
    head = b"GET /bytes/1 HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 40
    t0 = time.monotonic()
    closed = False
    try:
        for i in range(len(head)):
            s.sendall(head[i:i + 1])
            m = gw.metrics()
            assert m.get("upstream_conns_busy", 0) == 0
            time.sleep(0.5)
            if time.monotonic() - t0 > 4 * SLOW:
                break
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        closed = True
    if not closed:
        # The gateway must close: a 408 and/or EOF, or a reset. A timeout
        # (socket.timeout is an OSError too) means it did not.
        s.settimeout(5 * SLOW)
        try:
            data = s.recv(4096)
            while data and not data.endswith(b"\r\n\r\n") and len(data) < 4096:
                more = s.recv(4096)
                if not more:
                    break
                data += more
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
            closed = data == b"" or s.recv(4096) == b""
        except (ConnectionResetError, ssl.SSLError):
            closed = True
    s.close()
    elapsed = time.monotonic() - t0
    assert closed, "the gateway kept a slowloris connection open"
    assert elapsed < 4 * SLOW, elapsed
    assert upstream.last_request("/bytes/1") is None
    assert upstream.accepts == before
    m = gw.metrics()
    assert m["upstream_conns_busy"] == 0
    assert m["tcp_timeouts"] >= 1


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_versions(tgw, version):
    v = getattr(ssl.TLSVersion, version)
    s = tls_socket(tgw.tcp_port, maximum=v)
    try:
        assert s.version() == version.replace("_", ".")
        assert s.selected_alpn_protocol() == "http/1.1"
        s.sendall(b"GET /bytes/1000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line, fields, body = read_response(s)
        assert line.startswith("HTTP/1.1 200"), line
        assert hashlib.sha256(body).hexdigest() == expected_sha256(1000)
    finally:
        s.close()


def test_client_without_alpn(tgw):
    s = tls_socket(tgw.tcp_port, alpn=None)
    try:
        assert s.selected_alpn_protocol() is None
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line, _, body = read_response(s)
        assert line.startswith("HTTP/1.1 200") and len(body) == 10
    finally:
        s.close()


def test_client_offering_only_h2(tgw):
    """ALPN offers h2 now (test_21_http2 covers the protocol itself)."""
    s = tls_socket(tgw.tcp_port, alpn=("h2",))
    try:
        assert s.selected_alpn_protocol() == "h2"
    finally:
        s.close()


def test_malformed_requests_400(tgw):
    for req in (b"GET / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
                # raw UTF-8 and a tab in the target (must be %-encoded)
                b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"):
        s = tls_socket(tgw.tcp_port)
        try:
            s.sendall(req)
            line, fields, _ = read_response(s)
            assert line.startswith("HTTP/1.1 400"), (req, line)
            assert fields.get("connection") == "close"
        finally:
            s.close()


def test_bare_lf_requests_400(tgw):
    """Lines that end in a bare LF, anywhere in the head, or a CR without
    its LF, are refused with 400 whichever llhttp the gateway links."""
    for req in (b"GET /bytes/10 HTTP/1.1\nHost: localhost\r\n\r\n",
                b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\nX: 1\r\n\r\n",
                b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\n\n",
                b"GET /bytes/10 HTTP/1.1\nHost: localhost\n\n",
                b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\n\rX"):
        s = tls_socket(tgw.tcp_port)
        try:
            s.sendall(req)
            line, fields, _ = read_response(s)
            assert line.startswith("HTTP/1.1 400"), (req, line)
            assert fields.get("connection") == "close"
        finally:
            s.close()


def test_bare_lf_in_chunked_request_body_400(tgw):
    """A bare LF that ends a chunk line comes after the head was accepted:
    the request is refused, and the connection is not kept."""
    s = tls_socket(tgw.tcp_port)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n")
        s.settimeout(10)
        got = b""
        while True:
            try:
                d = s.recv(65536)
            except (ConnectionError, OSError):
                break
            if not d:
                break
            got += d
        assert b"hello" not in got, got
        assert got.startswith(b"HTTP/1.1 400"), got[:200]
    finally:
        s.close()


def test_http10_request(tgw):
    s = tls_socket(tgw.tcp_port)
    try:
        s.sendall(b"GET /chunked/5000 HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except ssl.SSLError:
        pass
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert hashlib.sha256(body).hexdigest() == expected_sha256(5000)


def test_access_log_proto(gateway, h1):
    gw = tcp_gw(gateway)
    r = h1(gw).get("/bytes/7")
    assert r.status == 200, r
    rec = gw.wait_access(path="/bytes/7")[-1]
    assert rec["proto"] == "http/1.1", rec


# ---- redirect listener ---------------------------------------------------------

def test_redirect_listener(gateway):
    gw = tcp_gw(gateway, {"redirect": {"address": "127.0.0.1", "port": "any"}})
    rport = gw.redirect_port
    for host, want in ((b"localhost", "https://localhost:%d/a/b?c=d&e" % gw.tcp_port),
                       (b"localhost:80",
                        "https://localhost:%d/a/b?c=d&e" % gw.tcp_port)):
        s = socket.create_connection(("127.0.0.1", rport), timeout=5)
        try:
            s.sendall(b"GET /a/b?c=d&e HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            line, fields, _ = read_response(s)
            assert line == "HTTP/1.1 308 Permanent Redirect", line
            assert fields["location"] == want
            # keep-alive: a second request on the same connection
            s.sendall(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            line, fields, _ = read_response(s)
            assert line.startswith("HTTP/1.1 308")
            assert fields["location"].endswith(":%d/x" % gw.tcp_port)
        finally:
            s.close()
    s = socket.create_connection(("127.0.0.1", rport), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        line, _, _ = read_response(s)
        assert line.startswith("HTTP/1.1 400"), line
    finally:
        s.close()


# ---- shutdown and backpressure ---------------------------------------------------

def test_graceful_shutdown_finishes_download(gateway, h1):
    import signal
    import threading
    gw = tcp_gw(gateway, {"server": {"shutdown_timeout": "20s"}})
    idle = tls_socket(gw.tcp_port)
    idle.sendall(b"GET /bytes/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    read_response(idle)
    n = 2 * MiB
    result = {}

    def run():
        result["r"] = h1(gw).get("/slow/%d?rate=%d" % (n, 1 * MiB))
    t = threading.Thread(target=run)
    t.start()
    gw.wait_metrics(lambda m: m["upstream_conns_busy"] >= 1, what="download")
    took = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    # The idle keep-alive connection is closed at once: EOF or a reset,
    # never a timeout (socket.timeout is an OSError, so it is not caught).
    idle.settimeout(5 * SLOW)
    try:
        assert idle.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError):
        pass
    idle.close()
    t.join(30 * SLOW)
    r = result["r"]
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n)
    assert gw.stop() < 20 * SLOW
    assert time.monotonic() - took < 15 * SLOW


def test_client_not_reading_is_bounded(gateway, upstream):
    """A client that reads nothing holds at most the gateway's fixed output
    buffer plus the bridge's ring: the upstream is paused, not buffered."""
    gw = tcp_gw(gateway)
    s = tls_socket(gw.tcp_port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % (64 * MiB))
    gw.wait_metrics(lambda m: m["upstream_read_pauses"] >= 1,
                    what="upstream reads paused")
    time.sleep(0.5)
    m1 = gw.metrics()["response_body_bytes"]
    time.sleep(0.5)
    m2 = gw.metrics()["response_body_bytes"]
    assert m1 == m2 and m1 < 16 * MiB, (m1, m2)
    # Reading resumes the flow, byte-exact.
    h = hashlib.sha256()
    line, _, first = read_response_head(s)
    h.update(first)
    got = len(first)
    while got < 64 * MiB:
        d = s.recv(1 << 20)
        assert d
        h.update(d)
        got += len(d)
    assert got == 64 * MiB and h.hexdigest() == expected_sha256(64 * MiB)
    s.close()


def read_response_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError(buf)
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), head, rest


def test_max_connections(gateway):
    gw = tcp_gw(gateway, {"tcp": {"max_connections": "1"}})
    held = tls_socket(gw.tcp_port)
    try:
        with pytest.raises((ssl.SSLError, OSError)):
            s = tls_socket(gw.tcp_port, timeout=5)
            s.sendall(b"GET /bytes/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            if not s.recv(100):
                raise OSError("closed")
        assert gw.metrics()["tcp_connections_refused"] >= 1
        held.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line, _, body = read_response(held)
        assert line.startswith("HTTP/1.1 200") and len(body) == 3
    finally:
        held.close()


# ---- [tcp] congestion_control --------------------------------------------

def server_side_cc(port):
    """The congestion control the kernel reports (ss -ti) for established
    TCP connections whose local port is port: the gateway's side."""
    import subprocess
    out = subprocess.run(["ss", "-tinH", "state", "established",
                          "( sport = :%d )" % port],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    # One name a connection (bbr adds a "bbr:(...)" detail: not counted).
    return re.findall(r"\b(reno|cubic|bbr|bic|htcp|vegas|westwood)\b(?!:)", out)


def system_default_cc():
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        return f.read().strip()


@pytest.mark.parametrize("cc", ["reno", "cubic", ""])
def test_tcp_congestion_control_per_socket(gateway, cc):
    """Set on the listening socket, inherited by every accepted connection;
    "" keeps the system's default. reno and cubic are built into every
    Linux kernel; the system default here differs from reno."""
    gw = tcp_gw(gateway, {"tcp": {"congestion_control": '"%s"' % cc}})
    s = tls_socket(gw.tcp_port)
    try:
        s.sendall(b"GET /bytes/100000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line, _, body = read_response(s)
        assert line.startswith("HTTP/1.1 200") and len(body) == 100000
        assert server_side_cc(gw.tcp_port) == [cc or system_default_cc()]
    finally:
        s.close()


def test_tcp_congestion_control_unknown_to_the_kernel_stops_start(gateway):
    gw = gateway({"tcp": {"port": "any", "congestion_control": "nosuchcc"}},
                 start=False)
    gw.start(wait=False)
    assert gw.proc.wait(15 * SLOW) != 0
    assert ('[tcp] congestion_control: the kernel has no "nosuchcc"'
            in gw.stderr_text())


def test_tcp_congestion_control_bad_name_is_a_config_error(gateway):
    gw = gateway({"tcp": {"congestion_control": "BBR!"}}, start=False)
    gw.start(wait=False)
    assert gw.proc.wait(15 * SLOW) == 2
    assert "[tcp] congestion_control: expected a name" in gw.stderr_text()
