"""A request body that stalls (request_body_timeout): the client has
credit and sends nothing. The exchange ends with 408 and the upstream
connection it held is closed, for HTTP/3 and the TCP listener alike; a
body that keeps flowing, or one the upstream is slow to take, is not cut."""
import socket
import ssl
import time

from testenv.h3raw import Script, Stream
from testenv.h3raw import get as _get
from testenv.h3raw import run_h3raw as h3raw


def request(gw, path, method="GET", extra=()):
    return _get(gw, path, extra, method)


def tls_socket(gw):
    ctx = ssl.create_default_context(cafile=gw.certs.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def test_h3_stalled_body_gets_408(gateway, upstream):
    gw = gateway({"listener": {"request_body_timeout": "1s"}})
    s = Stream().headers(request(gw, "/sink/stall", "POST",
                                 [("content-length", "100")]))
    s.data(b"x" * 10).pause(2500).data(b"y" * 90).fin()
    run = h3raw(gw, Script(s), timeout=5.0)
    st = run.streams[0]
    assert st["status"] == 408, run
    m = gw.metrics()
    assert m["request_body_timeouts"] == 1
    line = gw.wait_access(path="/sink/stall")[0]
    assert line["outcome"] == "body-timeout" and line.int("status") == 408, line
    # The upstream saw an unfinished request whose connection was closed.
    gw.wait_metrics(lambda m: m["upstream_conns_busy"] == 0, timeout=5)
    assert gw.metrics()["upstream_conns_poisoned"] == 1


def test_h3_slow_but_steady_body_passes(gateway, upstream):
    gw = gateway({"listener": {"request_body_timeout": "1s"}})
    s = Stream().headers(request(gw, "/sink/steady", "POST",
                                 [("content-length", "40")]))
    for _ in range(4):
        s.data(b"z" * 10).pause(400)
    s.fin()
    run = h3raw(gw, Script(s), timeout=10.0)
    assert run.streams[0]["status"] == 200, run
    assert upstream.requests_for("/sink/steady")[0].body_len == 40
    assert gw.metrics()["request_body_timeouts"] == 0


def test_slow_upstream_is_not_a_client_stall(gateway, upstream):
    """The upstream reads the body at 20 KiB/s: the client is out of credit
    most of the time, longer than the timeout, and must not be cut."""
    gw = gateway({"listener": {"request_body_timeout": "1s",
                               "stream_buffer_size": "16KiB"}})
    n = 64 * 1024
    s = Stream().headers(request(gw, "/sink/slowup?rate=20000", "POST",
                                 [("content-length", str(n))]))
    for _ in range(n // 8192):
        s.data(b"w" * 8192)
    s.fin()
    run = h3raw(gw, Script(s), timeout=15.0)
    assert run.streams[0]["status"] == 200, run
    assert upstream.requests_for("/sink/slowup")[0].body_len == n
    assert gw.metrics()["request_body_timeouts"] == 0


def test_http1_stalled_body_gets_408(gateway, upstream):
    gw = gateway({"listener": {"request_body_timeout": "1s"}})
    s = tls_socket(gw)
    s.sendall(b"POST /sink/h1stall HTTP/1.1\r\nHost: localhost\r\n"
              b"Content-Length: 100\r\n\r\n" + b"x" * 10)
    t0 = time.monotonic()
    s.settimeout(10)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert 0.8 < time.monotonic() - t0 < 8
    assert gw.metrics()["request_body_timeouts"] == 1
