"""Alt-Svc on HTTP/3 responses (issue 4): the QUIC front end adds the same
field as the TCP fallback, so a browser that came over HTTP/3 refreshes its
alternative-service entry before max-age runs out. Checked with libcurl's
HTTP/3 (pycurl): the default and a configured value, the upstream's own
field replaced or kept, gateway-made errors, [alt_svc] enabled = no, and
"clear" on a response head sent while the gateway drains (over HTTP/3 and
over the TCP fallback)."""

import signal
import threading
import time

from conftest import SLOW, H3Client, refusing_address
from testenv.require import require
from testenv.clients import H1Client
from testenv.gateway import tcp_gw

UPSTREAM_ALT_SVC = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                    b"Alt-Svc: h2=\":9999\"; ma=5\r\n\r\nok")


def default_value(gw):
    return 'h3=":%d"; ma=86400' % gw.port


def test_h3_alt_svc_default(gateway, h3):
    gw = gateway()
    r = h3(gw).get("/bytes/10")
    assert r.error is None and r.status == 200, r
    assert r.http_version == 30, r
    assert r.header_all("alt-svc") == [default_value(gw)]


def test_h3_alt_svc_configured(gateway, h3):
    gw = gateway({"alt_svc": {"port": "443", "host": "h3.example.com",
                              "max_age": "60"}})
    r = h3(gw).get("/bytes/10")
    assert r.status == 200, r
    assert r.header_all("alt-svc") == ['h3="h3.example.com:443"; ma=60']


def test_h3_alt_svc_configured_port_only(gateway, h3):
    gw = gateway({"alt_svc": {"port": "8443", "max_age": "120"}})
    r = h3(gw).get("/bytes/10")
    assert r.status == 200, r
    assert r.header_all("alt-svc") == ['h3=":8443"; ma=120']


def test_h3_alt_svc_upstream_replaced(gateway, upstream, h3):
    upstream.script("altsvc", UPSTREAM_ALT_SVC, close=False)
    gw = gateway()
    r = h3(gw).get("/script/altsvc")
    assert r.status == 200 and r.body == b"ok", r
    assert r.header_all("alt-svc") == [default_value(gw)]


def test_h3_alt_svc_upstream_kept(gateway, upstream, h3):
    upstream.script("altsvc", UPSTREAM_ALT_SVC, close=False)
    gw = gateway({"alt_svc": {"upstream": "keep"}})
    r = h3(gw).get("/script/altsvc")
    assert r.status == 200 and r.body == b"ok", r
    assert r.header_all("alt-svc") == ['h2=":9999"; ma=5']
    # Without an upstream field, ours is added as usual.
    r = h3(gw).get("/bytes/3")
    assert r.status == 200, r
    assert r.header_all("alt-svc") == [default_value(gw)]


def test_h3_alt_svc_on_gateway_errors(gateway, h3):
    gw = gateway(upstream=refusing_address())
    r = h3(gw).get("/bytes/10")
    assert r.status == 502, r
    assert r.header_all("alt-svc") == [default_value(gw)]


def test_h3_alt_svc_disabled(gateway, upstream, h3):
    upstream.script("altsvc", UPSTREAM_ALT_SVC, close=False)
    gw = gateway({"alt_svc": {"enabled": "no"}})
    c = h3(gw)
    r = c.get("/bytes/10")
    assert r.status == 200 and r.header("alt-svc") is None, r
    # Disabled means hands off: the upstream's own field passes.
    r = c.get("/script/altsvc")
    assert r.header_all("alt-svc") == ['h2=":9999"; ma=5'], r


def test_h3_interim_has_no_alt_svc(gateway, upstream, h3):
    """Only final heads carry it (a 1xx is not a response to cache from)."""
    upstream.script("early", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=False)
    gw = gateway()
    r = h3(gw).get("/script/early")
    assert r.status == 200 and r.body == b"ok", r
    blocks = r.all_header_blocks
    interim = [h for line, h in blocks if " 103" in line]
    if not interim:
        require(False, "libcurl did not report the 103 head: %r" % blocks)
    assert all(k != "alt-svc" for k, _ in interim[0]), interim
    assert r.header_all("alt-svc") == [default_value(gw)]


def held_response(upstream, name):
    """Scripts GET /script/<name> to wait for release before it answers.
    Returns (arrived, release) events."""
    arrived, release = threading.Event(), threading.Event()

    def action(conn, req):
        arrived.set()
        release.wait(20)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                     b"Connection: close\r\n\r\nheld")
        return False
    upstream.script(name, action)
    return arrived, release


def wait_draining(gw):
    deadline = time.monotonic() + 5 * SLOW
    while "shutting down" not in gw.stderr_text():
        assert time.monotonic() < deadline, gw.stderr_text()[-2000:]
        time.sleep(0.02)


def test_alt_svc_clear_while_draining(gateway, upstream):
    """Response heads sent after SIGTERM say "clear" (RFC 7838 §3), over
    HTTP/3 and over the TCP fallback: the upstream holds both answers until
    the gateway is draining. The HTTP/3 request is answered last, so the
    QUIC listener is still draining when the TCP head goes out (once it has
    closed, the TCP side advertises nothing at all)."""
    held3, release3 = held_response(upstream, "held3")
    held1, release1 = held_response(upstream, "held1")
    gw = tcp_gw(gateway, {"server": {"shutdown_timeout": "20s"}})
    c3, c1 = H3Client(gw), H1Client(gw)
    out = {}
    t3 = threading.Thread(target=lambda: out.setdefault(
        "h3", c3.get("/script/held3", timeout=30)))
    t1 = threading.Thread(target=lambda: out.setdefault(
        "h1", c1.get("/script/held1", timeout=30)))
    t3.start()
    t1.start()
    try:
        assert held3.wait(10 * SLOW) and held1.wait(10 * SLOW), \
            "the requests did not reach the upstream"
        # Before the signal, the value is the usual one (on other
        # connections, so the held ones stay held).
        for make in (H3Client, H1Client):
            with make(gw) as other:
                r0 = other.get("/bytes/1")
            assert r0.header_all("alt-svc") == [default_value(gw)], r0
        gw.send_signal(signal.SIGTERM)
        wait_draining(gw)
        release1.set()
        t1.join(30 * SLOW)
    finally:
        release1.set()
        release3.set()
        t1.join(30 * SLOW)
        t3.join(30 * SLOW)
        c1.close()
        c3.close()
    for front in ("h1", "h3"):
        r = out[front]
        assert r.error is None and r.status == 200 and r.body == b"held", (front, r)
        assert r.header_all("alt-svc") == ["clear"], (front, r.headers)
    assert gw.stop() < 20 * SLOW
