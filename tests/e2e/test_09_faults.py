"""Faults under load.

* The upstream application is killed (SIGKILL) while it sends responses:
  each client sees its response broken, never ended as if complete (HTTP/3:
  the stream is reset; HTTP/2: RST_STREAM; HTTP/1.1: the connection closes
  before the declared length), and what it got is an intact prefix. The
  HTTP/3 and HTTP/2 connections survive; once the application is started
  again on the same port, the next requests succeed.
* SIGTERM while downloads and uploads are in flight over HTTP/3 and HTTP/2:
  every request that started completes byte-exact; new ones are refused the
  way each protocol refuses them (HTTP/3: GOAWAY on the open connection and
  CONNECTION_REFUSED for a new one; HTTP/2: GOAWAY(NO_ERROR) that keeps the
  streams in flight; TCP: the listening socket is closed), and the gateway
  exits 0 within shutdown_timeout."""

import re
import signal
import socket
import threading
import time

import pytest

from conftest import SLOW, H3Client, H3Multi, KiB, MiB, expected_sha256
from testenv.clients import (CURL_HTTP_VERSION_2_0, CURL_HTTP_VERSION_3, H1Client,
                             H2Client, H2Multi)
from testenv.gateway import tcp_gw
from testenv.h2raw import H2Raw
from testenv.h3raw import H3_NO_ERROR, Script, Stream, get, run_h3raw
from testenv.origin import OriginProcess

QUIC_CONNECTION_REFUSED = 0x2   # RFC 9000 §20.1
H2_NO_ERROR = 0x0

# libcurl's error for each kind of break: (code, message pattern).
BROKEN = {
    # the stream was reset (libcurl 8.14 says CURLE_PARTIAL_FILE)
    "h3": (18, r"HTTP/3 stream \d+ reset by server"),
    # RST_STREAM
    "h2": (92, r"HTTP/2 stream \d+ was not closed cleanly: INTERNAL_ERROR"),
    # the connection closed before Content-Length bytes: libcurl notices
    # either the missing bytes or the missing TLS close_notify first
    "h1": ((18, 56), r"transfer closed with \d+ bytes remaining|TLS connection was "
           r"non-properly terminated"),
}


def assert_ok(r, n, version=None):
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r
    if version is not None:
        assert r.http_version == version, r


def assert_upload_ok(r, n, version=None):
    assert r.error is None and r.status == 200, r
    got = r.json()
    assert got["len"] == n and got["sha256"] == expected_sha256(n), got
    if version is not None:
        assert r.http_version == version, r


# ---- the upstream application dies mid-response ---------------------------

@pytest.fixture
def origin():
    o = OriginProcess().start()
    yield o
    o.kill()


def test_upstream_killed_mid_response_resets_then_recovers(gateway, origin):
    gw = tcp_gw(gateway, upstream=origin.address)
    clients = {"h3": H3Client(gw), "h2": H2Client(gw), "h1": H1Client(gw, gw.tcp_port)}
    try:
        for name, cl in clients.items():
            assert_ok(cl.get("/bytes/1000?warm"), 1000)
        before = gw.metrics()
        # Long paced bodies: still flowing when the application dies.
        n = 64 * MiB
        flowing = {name: threading.Event() for name in clients}
        results = {}

        def download(name):
            results[name] = clients[name].get(
                "/slow/%d?rate=%d&who=%s" % (n, 4 * MiB, name), timeout=60,
                on_data=lambda r: r.body_len >= 256 * KiB and flowing[name].set())

        threads = [threading.Thread(target=download, args=(name,)) for name in clients]
        for t in threads:
            t.start()
        for name, ev in flowing.items():
            assert ev.wait(10 * SLOW), "%s: the download did not start" % name
        origin.kill()
        for t in threads:
            t.join(30 * SLOW)
            assert not t.is_alive(), "a client never saw the end of its response"

        for name, r in results.items():
            assert r.error is not None, (
                "%s: the response ended as if complete after %d bytes" % (name, r.body_len))
            code, pattern = BROKEN[name]
            codes = code if isinstance(code, tuple) else (code,)
            assert r.error[0] in codes and re.search(pattern, r.error[1]), (name, r)
            assert 256 * KiB <= r.body_len < n, (name, r)
            assert r.sha256 == expected_sha256(r.body_len), "%s: prefix corrupted" % name

        # The application is back on the same port: the next requests
        # succeed, HTTP/3 and HTTP/2 on the connections that saw the reset.
        origin.start()
        for name, cl in clients.items():
            r = cl.get("/bytes/%d?after=%s" % (300 * KiB, name))
            assert_ok(r, 300 * KiB)
            if name != "h1":
                assert r.num_connects == 0, "%s: the reset cost the connection" % name
            assert_upload_ok(cl.post("/sink?after=%s" % name, 1 * MiB), 1 * MiB)
        m = gw.wait_idle()
        assert m["h3_streams_reset_by_gateway"] > before["h3_streams_reset_by_gateway"], m
        assert m["h2_streams_reset_by_gateway"] > before["h2_streams_reset_by_gateway"], m
    finally:
        for cl in clients.values():
            cl.close()


# ---- SIGTERM under load -----------------------------------------------------

def test_sigterm_under_load_finishes_started_requests(gateway, upstream):
    timeout_s = 15
    gw = tcp_gw(gateway, {"server": {"shutdown_timeout": "%ds" % timeout_s}})
    n, rate = 6 * MiB, 2 * MiB            # about 3 s each, paced by the origin
    started = {}                          # download name -> Event
    results = {}

    def specs(proto):
        out = []
        for i in range(2):
            name = "%s-down-%d" % (proto, i)
            started[name] = threading.Event()
            out.append({"path": "/slow/%d?rate=%d&who=%s" % (n, rate, name),
                        "on_data": (lambda ev: lambda r: r.body_len >= 64 * KiB
                                    and ev.set())(started[name])})
        for i in range(2):
            out.append({"path": "/sink?rate=%d&who=%s-up-%d" % (rate, proto, i),
                        "method": "POST", "body": n})
        return out

    h3_specs, h2_specs = specs("h3"), specs("h2")

    def run(proto, multi_cls, sp):
        with multi_cls(gw) as m:
            results[proto] = m.run(sp, timeout=60)

    def raw():
        # Raw HTTP/3 and HTTP/2 clients that report the frames they got:
        # their requests are in flight when the signal comes.
        results["h3raw"] = run_h3raw(gw, Script(
            Stream().headers(get(gw, "/slow/%d?rate=%d&who=h3raw" % (n, rate))).fin(),
            linger=2000), timeout=30)

    def raw2():
        with H2Raw(gw, timeout=30, see_past_goaway=True) as c:
            sid = c.request("/slow/%d?rate=%d&who=h2raw" % (n, rate))
            c.run_until(lambda: c.streams[sid].ended or c.streams[sid].reset is not None)
            c.run_until(lambda: c.goaway is not None, timeout=10)
            results["h2raw"] = (c.streams[sid], c.goaway, c.goaway_last_stream, sid)

    threads = [threading.Thread(target=run, args=("h3", H3Multi, h3_specs)),
               threading.Thread(target=run, args=("h2", H2Multi, h2_specs)),
               threading.Thread(target=raw), threading.Thread(target=raw2)]
    for t in threads:
        t.start()
    for name, ev in started.items():
        assert ev.wait(10 * SLOW), "%s did not start" % name
    upstream.wait_for(lambda: len([r for r in upstream.requests
                                   if r.target.startswith("/sink")
                                   and r.body_len >= 64 * KiB]) == 4
                      and any("who=h3raw" in r.target for r in upstream.requests)
                      and any("who=h2raw" in r.target for r in upstream.requests),
                      timeout=10 * SLOW, what="the four uploads and the raw clients' "
                      "requests under way")

    gw.send_signal(signal.SIGTERM)
    t_sig = time.monotonic()
    deadline = t_sig + 5 * SLOW
    while gw.admin_get("/health")[0] != 503:
        assert time.monotonic() < deadline, "/health never said 503 after SIGTERM"
        time.sleep(0.01)

    # New connections are refused: TCP by the closed listening socket,
    # QUIC with a CONNECTION_CLOSE(CONNECTION_REFUSED) in answer to the
    # Initial. (h3raw, because libcurl 8.14 ignores that answer and waits
    # for its connect timeout.)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=5).close()
    late = run_h3raw(gw, Script(Stream().headers(get(gw, "/bytes/10?late")).fin()),
                     refused_ok=True)
    assert late.conn["handshake"] is False, late
    assert late.conn["close_type"] == "transport", late
    assert late.conn["connection_close"] == QUIC_CONNECTION_REFUSED, late
    assert not any("late" in r.target for r in upstream.requests)
    # (The requests in flight keep the gateway, and its admin listener, up.)
    m = gw.metrics()
    assert m["quic_connections_refused"] >= 1, m

    for t in threads:
        t.join(45 * SLOW)
        assert not t.is_alive(), "a client did not finish"
    for proto, version in (("h3", CURL_HTTP_VERSION_3), ("h2", CURL_HTTP_VERSION_2_0)):
        down0, down1, up0, up1 = results[proto]
        assert_ok(down0, n, version)
        assert_ok(down1, n, version)
        assert_upload_ok(up0, n, version)
        assert_upload_ok(up1, n, version)
    run_ = results["h3raw"]
    (st,) = run_.streams
    assert st["status"] == 200 and st["fin"] and st["body_len"] == n, run_
    assert st["reset"] is None, run_
    assert run_.conn["goaway"] is not None, "no HTTP/3 GOAWAY: %r" % run_
    assert run_.conn["connection_close"] == H3_NO_ERROR, run_
    st2, goaway2, last2, sid2 = results["h2raw"]
    assert st2.status == 200 and st2.ended and st2.body_len == n, vars(st2)
    assert st2.reset is None, vars(st2)
    assert goaway2 == H2_NO_ERROR, "HTTP/2 GOAWAY: %r" % goaway2
    assert last2 >= sid2, "the GOAWAY disowned the stream in flight: %d" % last2

    left = timeout_s - (time.monotonic() - t_sig)
    gw.stop(timeout=max(left, 0.5))        # signalled already: waits, exit 0
