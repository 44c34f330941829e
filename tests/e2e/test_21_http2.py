"""HTTP/2 on the TCP + TLS listener (ALPN "h2", nghttp2): bodies byte-exact
both ways, Alt-Svc, many streams multiplexed on one connection, hop-by-hop
fields, upstream failures (a broken body resets only its stream), client
resets, the access log and Via, bounded memory with a slow reader."""

import json
import signal
import socket
import ssl
import struct
import threading

import pytest

from conftest import (SANITIZE, SLOW, GatewayFactory, KiB, MiB, Upstream,
                      expected_sha256, refusing_address)
from testenv.clients import CURL_HTTP_VERSION_2_0, H2Client, H2Multi
from testenv.gateway import tcp_gw
from testenv.scenarios import check_failing_neighbours

@pytest.fixture
def h2():
    made = []

    def make(gw):
        c = H2Client(gw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def hgw(tmp_path_factory, certs, shared_upstream):
    f = GatewayFactory(tmp_path_factory, certs, lambda: shared_upstream)
    yield tcp_gw(f, name="h2-gw")
    f.finish()


def assert_ok(r, n):
    assert r.error is None and r.status == 200, r
    assert r.http_version == CURL_HTTP_VERSION_2_0, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r


def assert_reset(r, full=None):
    assert r.error is not None, r
    if full is not None:
        assert r.body_len < full
    assert r.sha256 == expected_sha256(r.body_len), "body prefix corrupted"


# ---- bodies ------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1 * KiB, 1 * MiB, 20 * MiB])
def test_get_bytes_exact(hgw, h2, n):
    assert_ok(h2(hgw).get("/bytes/%d" % n), n)


@pytest.mark.parametrize("n", [0, 1 * KiB, 1 * MiB, 20 * MiB])
def test_post_bytes_exact(hgw, h2, n):
    r = h2(hgw).post("/sink", n)
    assert r.error is None and r.status == 200, r
    assert r.http_version == CURL_HTTP_VERSION_2_0
    got = json.loads(r.body)
    assert got["len"] == n and got["sha256"] == expected_sha256(n), got


@pytest.mark.parametrize("n", [1 * KiB, 3 * MiB])
def test_post_echo_no_length(hgw, h2, n):
    r = h2(hgw).post("/echo", n, chunked=True)
    assert_ok(r, n)


def test_chunked_response_with_trailers(hgw, h2):
    assert_ok(h2(hgw).get("/chunked/300000?trailers=1"), 300000)


def test_alt_svc(hgw, h2):
    r = h2(hgw).get("/bytes/10")
    assert r.status == 200 and r.http_version == CURL_HTTP_VERSION_2_0, r
    assert r.header_all("alt-svc") == ['h3=":%d"; ma=86400' % hgw.port]


def test_keep_connection(hgw, h2):
    c = h2(hgw)
    first = c.get("/bytes/100")
    assert_ok(first, 100)
    for n in (0, 5000, 70000):
        r = c.get("/bytes/%d" % n)
        assert_ok(r, n)
        assert r.num_connects == 0


# ---- multiplexing ------------------------------------------------------------

def test_50_concurrent_streams(hgw):
    sizes = [(i * 7919) % (300 * KiB) for i in range(50)]
    specs = []
    for i, n in enumerate(sizes):
        if i % 5 == 0:
            specs.append({"path": "/sink?i=%d" % i, "method": "POST", "body": n})
        else:
            specs.append({"path": "/bytes/%d?i=%d" % (n, i)})
    with H2Multi(hgw) as m:
        rs = m.run(specs, timeout=60)
    for i, (r, n) in enumerate(zip(rs, sizes)):
        if i % 5 == 0:
            assert r.error is None and r.status == 200, r
            got = json.loads(r.body)
            assert got["len"] == n and got["sha256"] == expected_sha256(n)
        else:
            assert_ok(r, n)
    assert sum(r.num_connects for r in rs) == 1


# ---- mapping -----------------------------------------------------------------

def test_request_mapping_via_and_log(gateway, upstream, h2):
    gw = tcp_gw(gateway)
    r = h2(gw).get("/headers?x=1", headers=["X-Mixed-Case: v", "TE: trailers"])
    assert r.status == 200 and r.http_version == CURL_HTTP_VERSION_2_0, r
    req = upstream.last_request("/headers")
    assert req.target == "/headers?x=1"
    assert req.header("host") == "localhost:%d" % gw.tcp_port
    assert req.header("x-mixed-case") == "v"
    assert req.header("te") is None
    assert req.header("via") == "2 h3gate"
    assert req.header("x-forwarded-proto") == "https"
    rec = gw.wait_access(path="/headers?x=1")[-1]
    assert rec["proto"] == "h2", rec


def test_response_hop_by_hop_removed(hgw, h2):
    r = h2(hgw).get("/resp-headers")
    assert r.status == 200 and r.http_version == CURL_HTTP_VERSION_2_0, r
    assert r.header("x-hop-named") is None
    assert r.header("keep-alive") is None
    assert r.header("connection") is None
    assert r.header("transfer-encoding") is None
    assert r.header("x-upstream") == "yes"
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.body == b"resp-headers ok\n"


def test_status_and_head(hgw, h2):
    c = h2(hgw)
    r = c.get("/status/404")
    assert r.status == 404 and r.body == b"status 404\n", r
    r = c.get("/status/204")
    assert r.status == 204 and r.body_len == 0, r
    r = c.request("/bytes/1000", "HEAD")
    assert r.error is None and r.status == 200 and r.body_len == 0, r


# ---- failures ----------------------------------------------------------------

def test_upstream_failures_502_504(gateway, h2):
    gw = tcp_gw(gateway, upstream=refusing_address())
    r = h2(gw).get("/bytes/1")
    assert r.status == 502 and r.http_version == CURL_HTTP_VERSION_2_0, r
    assert r.header("alt-svc") is not None
    gw2 = tcp_gw(gateway, {"upstream": {"response_timeout": "500ms"}})
    r = h2(gw2).get("/hang?max=5")
    assert r.status == 504, r


def test_broken_body_resets_only_its_stream(tmp_path_factory, certs):
    up = Upstream(name="h2-failures-upstream").start()
    f = GatewayFactory(tmp_path_factory, certs, lambda: up)
    try:
        gw = tcp_gw(f, name="h2-failures-gw")
        before = gw.metrics()
        with H2Multi(gw) as m:
            check_failing_neighbours(m)
        m = gw.wait_idle()
        assert (m["h2_streams_reset_by_gateway"]
                - before["h2_streams_reset_by_gateway"]) >= 2, m
    finally:
        f.finish()
        up.stop()


def test_client_cancels_download(gateway, upstream, h2):
    gw = tcp_gw(gateway)
    cl = h2(gw)
    before = gw.metrics()
    r = cl.get("/bytes/%d" % (100 * MiB), abort_after=1 * MiB, timeout=30)
    assert r.error is not None and r.error[0] == 23, r
    r2 = cl.get("/bytes/%d" % (64 * KiB))
    assert_ok(r2, 64 * KiB)
    m = gw.wait_idle()
    assert m["upstream_conns_busy"] == 0
    assert m["h2_streams_opened"] - before["h2_streams_opened"] == 2, m


# ---- raw protocol ------------------------------------------------------------

def h2_socket(gw, alpn=("h2",)):
    ctx = ssl.create_default_context(cafile=gw.certs.ca)
    ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def read_frames(s, until_type, timeout=5):
    """Frames until one of until_type arrives (or EOF): [(type, flags, sid,
    payload)]."""
    s.settimeout(timeout * SLOW)
    buf, out = b"", []
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            return out
        if not d:
            return out
        buf += d
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff,
                 buf[9:9 + n])
            buf = buf[9 + n:]
            out.append(f)
            if f[0] == until_type:
                return out


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HPACK, literal without indexing: :method GET, :scheme https, :path /bytes/10,
# :authority localhost (static table indexes 2, 7, 4 name-only, 1 name-only).
GET_BLOCK = bytes([0x82, 0x87]) + bytes([0x04, 9]) + b"/bytes/10" + \
    bytes([0x01, 9]) + b"localhost"


@pytest.mark.parametrize("offer,want", [(("h2", "http/1.1"), "h2"),
                                        (("h2",), "h2"),
                                        (("http/1.1",), "http/1.1")])
def test_alpn(hgw, offer, want):
    # wolfSSL picks the client's first protocol that we speak.
    s = h2_socket(hgw, alpn=offer)
    try:
        assert s.selected_alpn_protocol() == want
    finally:
        s.close()


def test_rapid_reset_goaway(gateway):
    gw = tcp_gw(gateway)
    s = h2_socket(gw)
    try:
        out = PREFACE + frame(4, 0, 0)
        for i in range(300):
            sid = 1 + 2 * i
            out += frame(1, 0x4, sid, GET_BLOCK)       # HEADERS, END_HEADERS
            out += frame(3, 0, sid, struct.pack(">I", 8))  # RST_STREAM CANCEL
        s.sendall(out)
        frames = read_frames(s, 7)
        goaway = [f for f in frames if f[0] == 7]
        assert goaway, frames
        assert struct.unpack(">I", goaway[0][3][4:8])[0] == 0xb  # CALM
    finally:
        s.close()
    m = gw.wait_idle()
    assert m["h2_rapid_reset_goaways"] + m["h2_streams_reset_by_client"] >= 1, m


def test_malformed_request_reset(hgw):
    s = h2_socket(hgw)
    try:
        # No :path: malformed (RFC 9113 §8.3.1): RST_STREAM PROTOCOL_ERROR.
        block = bytes([0x82, 0x87]) + bytes([0x01, 9]) + b"localhost"
        s.sendall(PREFACE + frame(4, 0, 0) + frame(1, 0x5, 1, block))
        frames = read_frames(s, 3)
        rst = [f for f in frames if f[0] == 3]
        assert rst and rst[0][2] == 1, frames
        assert struct.unpack(">I", rst[0][3])[0] == 1
    finally:
        s.close()


def test_graceful_shutdown_finishes_stream(gateway):
    gw = tcp_gw(gateway, {"server": {"shutdown_timeout": "10s"}})
    timer = threading.Timer(0.4, gw.send_signal, (signal.SIGTERM,))
    with H2Multi(gw) as m:
        timer.start()     # SIGTERM while the transfer runs
        r, = m.run([{"path": "/slow/%d?rate=%d" % (2 * MiB, 2 * MiB)}],
                   timeout=20)
    timer.join()
    assert_ok(r, 2 * MiB)
    gw.stop(timeout=15)   # already signalled: waits, asserts exit 0


# ---- memory ------------------------------------------------------------------

def test_slow_client_bounded_memory(gateway, upstream, h2):
    gw = tcp_gw(gateway)
    big, rate = 50 * MiB, 25 * MiB
    r = h2(gw).get("/bytes/%d" % big, pace=rate, timeout=90)
    assert_ok(r, big)
    assert r.time_total >= big / rate * 0.7, "the client did not read slowly"
    m = gw.wait_idle()
    assert m["upstream_read_pauses"] > 0, m
    peak = gw.rss_peak_kib()
    if SANITIZE:
        pytest.skip("RSS not checked under sanitizers (peak %d KiB)" % peak)
    assert peak < 64 * 1024, peak
