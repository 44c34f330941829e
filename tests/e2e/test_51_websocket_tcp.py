"""WebSockets through the TCP + TLS listener (issue 12, /work/ws-spec.md):
HTTP/1.1 Upgrade (RFC 6455) and HTTP/2 extended CONNECT (RFC 8441), in
front of testenv/wsapp.py (python3-websockets 10.4 in its own process, and a
raw server for 101s no library sends).

HTTP/1.1: python3-websockets' client, and raw TLS sockets where the test
must see bytes (refusals, 502s, EOFs). HTTP/2: testenv/h2raw.py's extended
CONNECT on python3-h2 4.1 with testenv/h2ws.py's frames. Chromium: a page
from the app opens wss://<host>/echo through the gateway, once over HTTP/2
(Chromium's default once the gateway advertises
SETTINGS_ENABLE_CONNECT_PROTOCOL on the page's connection) and once with
--disable-http2 (HTTP/1.1 Upgrade).

Access log outcomes are the log's tokens (client-reset, upstream-reset,
tunnel-idle-timeout: values are unquoted, so words are joined by hyphens).

What the client got is asserted first, then what the app saw (its events
file), then the gateway's metrics and access log. Nothing sleeps and then
asserts: tests wait for app events, access log lines and metrics."""

import asyncio
import base64
import json
import random
import signal
import socket
import ssl
import struct

import pytest

from conftest import MiB, SLOW, uid
from testenv.gateway import tcp_gw
from testenv.groups import RoutedFactory, group, route
from testenv.h2raw import H2Raw
from testenv.h2ws import H2WebSocket
from testenv.require import require
from testenv import wsframe

try:
    import websockets
except ImportError:      # the wsapp fixture's require() reports it
    websockets = None

PROTOCOL_ERROR, CONNECT_ERROR, CANCEL = 0x1, 0xa, 0x8
ENABLE_CONNECT_PROTOCOL = 0x8
SIZES = [0, 1, 125, 126, 65535, 65536, 1 * MiB, 16 * MiB]


# --------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    require(websockets is not None, "python3-websockets is not installed")
    from testenv.wsapp import WsApp
    a = WsApp(str(tmp_path_factory.mktemp("wsapp"))).start()
    yield a
    a.stop()


def ws_blocks(app):
    """/raw/... to the raw server, /off/... to the app with websocket = off,
    the rest to the app."""
    return [group("ws", [app.address]), group("raw", [app.raw_address]),
            route("raw", "raw", path="/raw/"),
            route("off", "ws", path="/off/", websocket="off"),
            route("app", "ws", path="/")]


FORWARDING = {"forwarding": {"forwarded": "on", "x_forwarded": "on", "via": "on"}}


@pytest.fixture(scope="module")
def wgw(tmp_path_factory, certs, app):
    """One gateway in front of the app for the module's tests (each finds
    its own records by a unique token in its path)."""
    f = RoutedFactory(tmp_path_factory, certs)
    gw = f(ws_blocks(app), FORWARDING, name="ws-gw")
    assert gw.tcp_port
    yield gw
    f.finish()


@pytest.fixture
def routed_ws(tmp_path_factory, certs, app):
    """Factory: a gateway of its own (settings to try) in front of the app."""
    f = RoutedFactory(tmp_path_factory, certs)
    yield lambda overrides=None, name=None: f(ws_blocks(app), overrides, name=name)
    f.finish()


# --------------------------------------------------------------------------
# helpers

def payload(n, seed=0):
    return random.Random(n * 7919 + seed).randbytes(n)


def assert_same(got, sent, what):
    if got == sent:
        return
    n = min(len(got), len(sent))
    first = next((i for i in range(n) if got[i] != sent[i]), n)
    raise AssertionError("%s: got %d bytes/chars, sent %d; first difference at %d"
                         % (what, len(got), len(sent), first))


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def tls_ctx(gw, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=gw.certs.ca)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def ws_connect(gw, path, **kw):
    """python3-websockets' client to wss://localhost:<tcp port><path>,
    HTTP/1.1 by ALPN, through the gateway."""
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", 10 * SLOW)
    return websockets.connect("wss://localhost:%d%s" % (gw.tcp_port, path),
                              ssl=tls_ctx(gw), host="127.0.0.1", port=gw.tcp_port,
                              server_hostname="localhost", **kw)


def h1_socket(gw, timeout=10):
    raw = socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=timeout * SLOW)
    s = tls_ctx(gw).wrap_socket(raw, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "http/1.1"
    return s


def upgrade_head(gw, path, key=None, extra=()):
    lines = ["GET %s HTTP/1.1" % path, "Host: localhost:%d" % gw.tcp_port,
             "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: %s" % (key or wsframe.new_key()),
             "Sec-WebSocket-Version: 13"] + list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Reader:
    """A raw TLS socket's bytes: one response head, then what follows."""

    def __init__(self, s):
        self.s = s
        self.buf = b""
        self.msgs = wsframe.Messages()
        self.pending = []

    def _more(self):
        try:
            d = self.s.recv(256 * 1024)
        except (ConnectionResetError, ssl.SSLEOFError):
            return False
        if not d:
            return False
        self.buf += d
        return True

    def head(self):
        """(status, {lower name: [values]}): raises EOFError when the
        connection ends first."""
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise EOFError("connection ended before a response head: %r" % self.buf)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields.setdefault(k.strip().lower(), []).append(v.strip())
        return int(lines[0].split(" ")[1]), fields

    def body(self, fields):
        n = int(fields.get("content-length", ["0"])[0])
        while len(self.buf) < n and self._more():
            pass
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def until_eof(self, timeout=10):
        """Reads until the peer closes (EOF or reset); the bytes. Fails when
        the connection is still open after timeout."""
        self.s.settimeout(timeout * SLOW)
        try:
            while self._more():
                pass
        except socket.timeout:
            raise AssertionError("the connection was still open after %.0fs" % timeout)
        out, self.buf = self.buf, b""
        return out

    def message(self, timeout=10):
        """The next WebSocket message (opcode, payload) after the head."""
        self.s.settimeout(timeout * SLOW)
        while not self.pending:
            self.msgs.feed(self.buf)
            self.buf = b""
            self.pending += self.msgs.messages()
            if not self.pending and not self._more():
                raise EOFError("connection ended before a message")
        return self.pending.pop(0)


def tunnel_lines(gw, path):
    return gw.wait_access(path=path)


def metric_delta(after, before, name):
    return after.get(name, 0) - before.get(name, 0)


def app_requests(app, token):
    return [e for e in app.events("request") if token in e["path"]]


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name]


# --------------------------------------------------------------------------
# HTTP/1.1 Upgrade

def test_h1_echo_byte_exact(wgw, app):
    """Text and binary messages from 0 B to 16 MiB come back as sent; the
    app saw every byte and a clean close; the access log has the tunnel."""
    path = "/echo?t=" + uid()
    texts = ["", "hello", "h\u00e9llo \u2713 " * 5000]

    async def go():
        async with ws_connect(wgw, path, compression=None) as ws:
            for n in SIZES:
                sent = payload(n)
                await ws.send(sent)
                assert_same(await ws.recv(), sent, "binary message of %d bytes" % n)
            for t in texts:
                await ws.send(t)
                assert_same(await ws.recv(), t, "text message of %d chars" % len(t))
    run(go())
    total = sum(SIZES) + sum(len(t.encode()) for t in texts)
    ev = app.wait_event("closed", path=path)[0]
    assert ev["close_rcvd"] and ev["code"] == 1000, ev
    assert ev["in_bytes"] == total and ev["out_bytes"] == total, ev
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("tunnel") == "websocket", rec.raw
    assert rec["status"] == "101" and rec["proto"] == "http/1.1", rec.raw
    assert rec.get("outcome") == "ok", rec.raw
    assert rec.int("in") >= total and rec.int("out") >= total, rec.raw


def test_h1_upgrade_request_passes_through(wgw, app):
    """The upstream gets the client's own key, version, subprotocol and
    extension offer, the forwarding fields; the client gets the upstream's
    choice of subprotocol and extension (permessage-deflate then works end
    to end)."""
    path = "/headers?t=" + uid()

    async def go():
        async with ws_connect(wgw, path, subprotocols=["chat"],
                              extra_headers=[("X-Test", "yes")]) as ws:
            seen = json.loads(await ws.recv())
            key = ws.request_headers["Sec-WebSocket-Key"]
            assert ws.subprotocol == "chat"
            assert "permessage-deflate" in ws.response_headers.get(
                "Sec-WebSocket-Extensions", ""), ws.response_headers
            big = b"compressible " * 100000
            await ws.send(big)
            assert_same(await ws.recv(), big, "a deflated message")
            return seen, key
    seen, key = run(go())
    h = seen["headers"]
    assert seen["path"] == path
    assert header_values(h, "sec-websocket-key") == [key], h
    assert header_values(h, "sec-websocket-version") == ["13"], h
    assert [v.lower() for v in header_values(h, "upgrade")] == ["websocket"], h
    assert "upgrade" in ",".join(header_values(h, "connection")).lower(), h
    assert header_values(h, "sec-websocket-protocol") == ["chat"], h
    assert "permessage-deflate" in ",".join(header_values(h, "sec-websocket-extensions")), h
    assert header_values(h, "x-test") == ["yes"], h
    assert header_values(h, "x-forwarded-for") == ["127.0.0.1"], h
    assert any("for=127.0.0.1" in v for v in header_values(h, "forwarded")), h
    assert header_values(h, "host") == ["localhost:%d" % wgw.tcp_port], h


@pytest.mark.parametrize("status", [403, 404, 400])
def test_h1_upstream_refusal_passes_and_closes(wgw, app, status):
    """A non-101 answer reaches the client as it was (status, body), with
    Connection: close, and the connection ends after it."""
    path = "/refuse/%d?t=%s" % (status, uid())
    s = h1_socket(wgw)
    try:
        s.sendall(upgrade_head(wgw, path))
        r = Reader(s)
        got, fields = r.head()
        assert got == status, fields
        assert r.body(fields) == b"refused %d\n" % status
        assert "close" in ",".join(fields.get("connection", [])).lower(), fields
        assert "upgrade" not in fields, fields
        r.until_eof()
    finally:
        s.close()
    assert len(app_requests(app, path)) == 1
    rec = tunnel_lines(wgw, path)[0]
    assert rec["status"] == str(status), rec.raw


@pytest.mark.parametrize("kind", ["bad-accept", "no-accept", "no-upgrade"])
def test_h1_bad_101_is_502(wgw, app, kind):
    """A 101 with a wrong or missing Sec-WebSocket-Accept, or without
    Upgrade: websocket, is not passed on: the client gets 502, and the
    upstream connection is closed."""
    path = "/raw/%s?t=%s" % (kind, uid())
    s = h1_socket(wgw)
    try:
        s.sendall(upgrade_head(wgw, path))
        r = Reader(s)
        status, fields = r.head()
        assert status == 502, (status, fields)
    finally:
        s.close()
    app.wait_event("raw-closed", path=path)
    rec = tunnel_lines(wgw, path)[0]
    assert rec["status"] == "502", rec.raw


def test_h1_server_frames_in_the_101_packet(wgw, app):
    """Frames the upstream sent in the same write as its 101 reach the
    client after the 101, in order."""
    path = "/raw/frames-with-101?t=" + uid()

    async def go():
        async with ws_connect(wgw, path, compression=None) as ws:
            assert await ws.recv() == "first"
            await ws.send(b"abc")
            assert await ws.recv() == b"abc"
    run(go())
    app.wait_event("raw-closed", path=path)


def test_h1_upstream_close_ends_client_connection(wgw, app):
    """The upstream's close handshake, then its TCP close, end the
    client's connection: the client reads EOF."""
    path = "/close-after/1?t=" + uid()
    s = h1_socket(wgw)
    try:
        s.sendall(upgrade_head(wgw, path))
        r = Reader(s)
        status, fields = r.head()
        assert status == 101, fields
        s.sendall(wsframe.encode(wsframe.OP_TEXT, b"one"))
        assert r.message() == (wsframe.OP_TEXT, b"one")
        op, body = r.message()
        assert op == wsframe.OP_CLOSE and wsframe.parse_close(body) == (1000, "after 1")
        s.sendall(wsframe.encode(wsframe.OP_CLOSE, body))
        r.until_eof()
    finally:
        s.close()
    ev = app.wait_event("closed", path=path)[0]
    assert ev["close_rcvd"], ev
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("outcome") == "ok", rec.raw


def test_h1_client_close_without_close_frame(wgw, app):
    """The client closes its TCP connection with no close frame: the
    upstream's connection ends too (no close frame reached it)."""
    path = "/echo?t=" + uid()
    s = h1_socket(wgw)
    try:
        s.sendall(upgrade_head(wgw, path))
        r = Reader(s)
        assert r.head()[0] == 101
        s.sendall(wsframe.encode(wsframe.OP_BINARY, b"x" * 1000))
        assert r.message() == (wsframe.OP_BINARY, b"x" * 1000)
    finally:
        s.close()
    ev = app.wait_event("closed", path=path)[0]
    assert not ev["close_rcvd"] and ev["in_bytes"] == 1000, ev
    tunnel_lines(wgw, path)


def test_h1_client_abort_closes_upstream(wgw, app):
    """A client that resets its TCP connection mid-tunnel: the upstream
    connection is closed, the log says the client reset."""
    path = "/echo?t=" + uid()
    s = h1_socket(wgw)
    r = Reader(s)
    s.sendall(upgrade_head(wgw, path))
    assert r.head()[0] == 101
    s.sendall(wsframe.encode(wsframe.OP_TEXT, b"hi"))
    assert r.message() == (wsframe.OP_TEXT, b"hi")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    ev = app.wait_event("closed", path=path)[0]
    assert not ev["close_rcvd"], ev
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("outcome") == "client-reset", rec.raw
    assert rec["status"] == "101" and rec.get("tunnel") == "websocket", rec.raw


@pytest.mark.parametrize("kind", ["reset-after-101", "reset-on-data"])
def test_h1_upstream_reset_ends_client_connection(wgw, app, kind):
    """The upstream resets the connection after its 101: the client's
    connection ends (no close frame), the log says the upstream reset."""
    path = "/raw/%s?t=%s" % (kind, uid())
    s = h1_socket(wgw)
    try:
        s.sendall(upgrade_head(wgw, path))
        r = Reader(s)
        try:
            status, _ = r.head()
        except EOFError:
            status = None     # reset before the 101 was passed on
        if status == 101:
            s.sendall(wsframe.encode(wsframe.OP_TEXT, b"trigger"))
            rest = r.until_eof()
            assert b"\x88" not in rest[:1], "a close frame from nowhere: %r" % rest
        else:
            assert status in (None, 502), status
    finally:
        s.close()
    app.wait_event("raw-closed", path=path)
    rec = tunnel_lines(wgw, path)[0]
    if rec["status"] == "101":
        # A reset that lands right behind the 101, before the gateway read
        # again, may reach it as a plain end of stream (Linux reports the
        # reset to whichever call sees the socket's error first): then the
        # tunnel ended empty, which is what the gateway saw.
        seen = ("upstream-reset", "ok") if kind == "reset-after-101" \
            else ("upstream-reset",)
        assert rec.get("outcome") in seen, rec.raw
        if rec.get("outcome") == "ok":
            assert rec.int("out") == 0, rec.raw


@pytest.mark.parametrize("token", ["h2c", "foo"])
def test_h1_other_upgrade_tokens_are_a_plain_request(gateway, upstream, token):
    """Upgrade: h2c or foo is removed: the upstream sees a plain request,
    and the connection stays an HTTP/1.1 one (a second request on it)."""
    gw = tcp_gw(gateway)
    t = uid()
    s = h1_socket(gw)
    try:
        r = Reader(s)
        for i in range(2):
            s.sendall(("GET /headers?t=%s-%d HTTP/1.1\r\nHost: localhost\r\n"
                       "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: %s\r\n"
                       "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" % (t, i, token)).encode())
            status, fields = r.head()
            assert status == 200, fields
            r.body(fields)
            req = upstream.last_request("/headers?t=%s-%d" % (t, i))
            assert req is not None
            assert req.header("upgrade") is None, req.headers
            assert req.header("http2-settings") is None, req.headers
            assert "upgrade" not in (req.header("connection") or "").lower(), req.headers
    finally:
        s.close()


def test_h1_upgrade_to_a_plain_upstream_closes_after(gateway, upstream):
    """Upgrade: websocket to an upstream that answers 200 (no upgrade):
    the 200 is passed on, then the client connection is closed."""
    gw = tcp_gw(gateway)
    path = "/headers?t=" + uid()
    s = h1_socket(gw)
    try:
        s.sendall(upgrade_head(gw, path))
        r = Reader(s)
        status, fields = r.head()
        assert status == 200, fields
        assert json.loads(r.body(fields))["target"] == path
        assert "close" in ",".join(fields.get("connection", [])).lower(), fields
        r.until_eof()
    finally:
        s.close()


def test_h1_route_websocket_off_is_a_plain_request(wgw, app):
    """websocket = off on the route: Upgrade is removed, the app answers
    the plain request it got (its JSON 200)."""
    path = "/off/echo?t=" + uid()
    s = h1_socket(wgw)
    try:
        s.sendall(upgrade_head(wgw, path))
        r = Reader(s)
        status, fields = r.head()
        assert status == 200, fields
        body = json.loads(r.body(fields))
        assert body["plain"] is True
    finally:
        s.close()
    ev, = app_requests(app, path)
    assert not ev["upgrade"], ev
    assert not header_values(ev["headers"], "upgrade"), ev


def test_h1_metrics_and_pool(wgw, app):
    """tunnels_open counts the open tunnel, which holds no pooled upstream
    connection; opened and the byte counters move by what was sent."""
    path = "/echo?t=" + uid()
    before = wgw.metrics()
    sizes = [10, 1000, 100000]

    async def go():
        async with ws_connect(wgw, path, compression=None) as ws:
            m = wgw.wait_metrics(lambda m: metric_delta(m, before, "tunnels_open") == 1,
                                 what="tunnels_open + 1")
            assert metric_delta(m, before, "tunnels_opened") == 1, m
            assert m.get("upstream_conns_busy", 0) == 0, m
            for n in sizes:
                await ws.send(payload(n))
                await ws.recv()
    run(go())
    m = wgw.wait_metrics(lambda m: metric_delta(m, before, "tunnels_open") == 0,
                         what="tunnels_open back")
    up = metric_delta(m, before, "tunnel_bytes_up")
    down = metric_delta(m, before, "tunnel_bytes_down")
    # Frame headers, masks and the close frames, and no more.
    assert sum(sizes) <= up <= sum(sizes) + 4096, m
    assert sum(sizes) <= down <= sum(sizes) + 4096, m
    assert metric_delta(m, before, "tunnels_refused") == 0, m
    rec = tunnel_lines(wgw, path)[0]
    assert rec.float("duration_ms") >= 0 and rec.get("tunnel") == "websocket", rec.raw


def test_h1_slow_upstream_backpressure(wgw, app):
    """An upstream that stops reading stops the client's writes (the
    gateway buffers a bounded amount); once it reads again every message
    comes back in order."""
    path = "/slow?t=" + uid()
    piece = 64 * 1024
    limit = 64 * MiB

    async def go():
        async with ws_connect(wgw, path, compression=None, max_queue=None) as ws:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: app.wait_event("paused", path=path))
            sent = []
            pending = None
            while sum(len(x) for x in sent) < limit:
                msg = payload(piece, seed=len(sent))
                t = asyncio.ensure_future(ws.send(msg))
                sent.append(msg)
                done, _ = await asyncio.wait([t], timeout=2 * SLOW)
                if not done:
                    pending = t
                    break
            assert pending is not None, \
                "%d bytes written to a tunnel whose upstream reads nothing" % limit
            app.resume()
            await pending
            for i, msg in enumerate(sent):
                assert_same(await ws.recv(), msg, "message %d after the stall" % i)
            return len(sent)
    n = run(go(), timeout=90)
    ev = app.wait_event("closed", path=path)[0]
    assert ev["in_msgs"] == n, ev


# --------------------------------------------------------------------------
# HTTP/2 extended CONNECT (RFC 8441)

def test_h2_setting_advertised(wgw):
    with H2Raw(wgw) as c:
        c.run_until(lambda: ENABLE_CONNECT_PROTOCOL in c.remote_settings)
        assert c.remote_settings[ENABLE_CONNECT_PROTOCOL] == 1


def test_h2_setting_absent_and_protocol_refused_when_websocket_off(gateway, app):
    """With websocket = off everywhere the setting is not sent, and an
    extended CONNECT is malformed: RST_STREAM PROTOCOL_ERROR."""
    gw = tcp_gw(gateway, {"listener": {"websocket": "off"}}, upstream=app.address)
    path = "/echo?t=" + uid()
    with H2Raw(gw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() is None, ws.stream.headers
        assert ws.stream.reset == PROTOCOL_ERROR
        assert ENABLE_CONNECT_PROTOCOL not in c.remote_settings or \
            c.remote_settings[ENABLE_CONNECT_PROTOCOL] == 0, c.remote_settings
    assert not app_requests(app, path)


def test_h2_connection_that_was_offered_gets_501_after_a_reload_turns_websocket_off(
        gateway, app):
    """The setting cannot be taken back from a live connection (RFC 8441
    §3): after a reload turns WebSockets off, an extended CONNECT on a
    connection that was offered it is well-formed and refused by its route
    (501); a new connection is not offered it (malformed there)."""
    from test_55_reload import reload_and_wait
    gw = tcp_gw(gateway, upstream=app.address)
    path = "/echo?t=" + uid()
    with H2Raw(gw) as c:
        c.run_until(lambda: ENABLE_CONNECT_PROTOCOL in c.remote_settings)
        assert c.remote_settings[ENABLE_CONNECT_PROTOCOL] == 1
        gw.config["listener"]["websocket"] = "off"
        gw.config["listener"]["port"] = str(gw.port)
        gw.config["tcp"]["port"] = str(gw.tcp_port)
        gw.config["server"]["admin"] = "127.0.0.1:%d" % gw.admin_port
        gw.write_config()
        m = reload_and_wait(gw)
        assert m["reloads"] == 1 and m["reload_failures"] == 0, m
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 501, (ws.stream.headers, ws.stream.reset)
        assert c.goaway is None
    with H2Raw(gw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() is None, ws.stream.headers
        assert ws.stream.reset == PROTOCOL_ERROR
        assert c.remote_settings.get(ENABLE_CONNECT_PROTOCOL, 0) == 0, c.remote_settings
    assert not app_requests(app, path)


def test_h2_echo_byte_exact(wgw, app):
    path = "/echo?t=" + uid()
    texts = ["", "hello", "h\u00e9llo \u2713 " * 5000]
    with H2Raw(wgw, timeout=30) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200, ws.stream.headers
        assert ws.header("content-length") is None, ws.stream.headers
        for n in SIZES:
            sent = payload(n)
            ws.send(sent)
            op, got = ws.recv()
            assert op == wsframe.OP_BINARY
            assert_same(got, sent, "binary message of %d bytes" % n)
        for t in texts:
            ws.send(t)
            op, got = ws.recv()
            assert op == wsframe.OP_TEXT
            assert_same(got.decode(), t, "text message of %d chars" % len(t))
        assert ws.close() == (1000, "")
    total = sum(SIZES) + sum(len(t.encode()) for t in texts)
    ev = app.wait_event("closed", path=path)[0]
    assert ev["close_rcvd"] and ev["in_bytes"] == total, ev
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("tunnel") == "websocket", rec.raw
    assert rec["status"] == "200" and rec["proto"] == "h2", rec.raw
    assert rec.get("outcome") == "ok", rec.raw
    assert rec.int("in") >= total and rec.int("out") >= total, rec.raw


def test_h2_upgrade_request_made_by_the_gateway(wgw, app):
    """The upstream gets GET with Upgrade/Connection, version 13, a fresh
    valid key of the gateway's (the client's own key and version fields are
    not forwarded), the client's subprotocol and other fields, Host from
    :authority, and the forwarding fields."""
    keys = []
    for _ in range(2):
        path = "/headers?t=" + uid()
        with H2Raw(wgw) as c:
            ws = H2WebSocket(c, path, protocols=["chat"],
                             extra=[("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="),
                                    ("sec-websocket-version", "8"), ("x-test", "yes")])
            assert ws.wait_response() == 200, ws.stream.headers
            assert ws.header("sec-websocket-protocol") == "chat", ws.stream.headers
            assert ws.header("sec-websocket-accept") is None, ws.stream.headers
            op, body = ws.recv()
            ws.close()
        h = json.loads(body)["headers"]
        key = header_values(h, "sec-websocket-key")
        assert len(key) == 1 and len(base64.b64decode(key[0], validate=True)) == 16, h
        assert key[0] != "AAAAAAAAAAAAAAAAAAAAAA==", h
        keys.append(key[0])
        assert header_values(h, "sec-websocket-version") == ["13"], h
        assert [v.lower() for v in header_values(h, "upgrade")] == ["websocket"], h
        assert "upgrade" in ",".join(header_values(h, "connection")).lower(), h
        assert header_values(h, "sec-websocket-protocol") == ["chat"], h
        assert header_values(h, "x-test") == ["yes"], h
        assert header_values(h, "host") == [wgw.authority], h
        assert header_values(h, "x-forwarded-for") == ["127.0.0.1"], h
        assert any("for=127.0.0.1" in v for v in header_values(h, "forwarded")), h
    assert keys[0] != keys[1], keys


def test_h2_extension_negotiation_passes(wgw, app):
    path = "/echo?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path, extra=[("sec-websocket-extensions",
                                          "permessage-deflate; client_max_window_bits")])
        assert ws.wait_response() == 200, ws.stream.headers
        assert "permessage-deflate" in (ws.header("sec-websocket-extensions") or ""), \
            ws.stream.headers
        ws.close()
    ev = app.wait_event("open", path=path)[0]
    assert header_values(ev["headers"], "sec-websocket-extensions"), ev


@pytest.mark.parametrize("status", [403, 404, 400])
def test_h2_upstream_refusal_passes(wgw, app, status):
    path = "/refuse/%d?t=%s" % (status, uid())
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == status, ws.stream.headers
        assert ws.wait_end() == ("end", None)
        assert bytes(ws.stream.data) == b"refused %d\n" % status
    assert len(app_requests(app, path)) == 1


def test_h2_refused_handshake_stops_the_clients_early_bytes(wgw, app):
    """Tunnel bytes sent before the answer, and the app refuses: the whole
    403 (END_STREAM), then RST_STREAM with NO_ERROR (RFC 9113 §8.1: the
    client may stop sending); nothing reaches the app; the connection goes
    on."""
    path = "/refuse/403?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        ws.send(b"early bird")
        st = ws.stream
        c.run_until(lambda: st.reset is not None, timeout=10)
        assert st.status == 403 and st.ended, vars(st)
        assert bytes(st.data) == b"refused 403\n", vars(st)
        assert st.reset == 0, ("RST_STREAM must say NO_ERROR", vars(st))
        nxt = c.request("/plain?t=" + uid())
        c.run_until_done([nxt])
        assert c.streams[nxt].status == 200 and c.goaway is None
    assert not app.events("open", path=path)


@pytest.mark.parametrize("kind", ["bad-accept", "no-accept", "no-upgrade"])
def test_h2_bad_101_is_502(wgw, app, kind):
    path = "/raw/%s?t=%s" % (kind, uid())
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 502, ws.stream.headers
    app.wait_event("raw-closed", path=path)


def test_h2_server_frames_in_the_101_packet(wgw, app):
    path = "/raw/frames-with-101?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200, ws.stream.headers
        assert ws.recv() == (wsframe.OP_TEXT, b"first")
        ws.send(b"abc")
        assert ws.recv() == (wsframe.OP_BINARY, b"abc")
        ws.close()


def malformed(kind, path, authority):
    base = {":method": "CONNECT", ":protocol": "websocket", ":scheme": "https",
            ":path": path, ":authority": authority}
    if kind == "plain CONNECT":
        return [(":method", "CONNECT"), (":authority", authority)]
    if kind == "plain CONNECT with :path":
        return [(":method", "CONNECT"), (":scheme", "https"), (":path", path),
                (":authority", authority)]
    if kind == ":protocol on GET":
        base[":method"] = "GET"
    elif kind.startswith("no "):
        del base[kind[3:]]
    return list(base.items())


@pytest.mark.parametrize("kind", ["plain CONNECT", "plain CONNECT with :path",
                                  ":protocol on GET", "no :path", "no :scheme",
                                  "no :authority"])
def test_h2_malformed_extended_connect_reset(wgw, app, kind):
    """Malformed (RFC 8441 §4, RFC 9113 §8.5): RST_STREAM PROTOCOL_ERROR,
    nothing reaches the upstream, the connection still serves."""
    path = "/echo?t=" + uid()
    n_before = len(app.events("request"))
    with H2Raw(wgw, validate=False) as c:
        c.run_until(lambda: ENABLE_CONNECT_PROTOCOL in c.remote_settings)
        ws = H2WebSocket(c, path, fields=malformed(kind, path, wgw.authority))
        status = ws.wait_response()
        assert status is None and ws.stream.reset == PROTOCOL_ERROR, \
            (kind, status, ws.stream.headers, ws.stream.reset, c.goaway)
        ok = H2WebSocket(c, "/echo?t=" + uid())
        assert ok.wait_response() == 200
        ok.close()
    assert not app_requests(app, path)
    assert len(app.events("request")) == n_before + 1


@pytest.mark.parametrize("case,want", [("protocol foo", 501), ("route off", 501),
                                       ("content-length", 400)])
def test_h2_refused_by_the_gateway(wgw, app, case, want):
    path = ("/off/echo?t=" if case == "route off" else "/echo?t=") + uid()
    before = wgw.metrics()
    with H2Raw(wgw) as c:
        c.run_until(lambda: ENABLE_CONNECT_PROTOCOL in c.remote_settings)
        if case == "protocol foo":
            ws = H2WebSocket(c, path, fields=[(":method", "CONNECT"), (":protocol", "foo"),
                                              (":scheme", "https"), (":path", path),
                                              (":authority", wgw.authority)])
        elif case == "content-length":
            ws = H2WebSocket(c, path, extra=[("content-length", "5")])
        else:
            ws = H2WebSocket(c, path)
        assert ws.wait_response() == want, (case, ws.stream.headers, ws.stream.reset)
    assert not app_requests(app, path)
    m = wgw.metrics()
    assert metric_delta(m, before, "tunnels_opened") == 0, m


def test_h2_data_before_200_is_held(wgw, app):
    """Tunnel bytes a client sends right after its HEADERS wait in the
    gateway until the upstream's 101, and are not lost."""
    path = "/raw/echo?delay_ms=300&t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        ws.send(b"early bird")
        assert ws.wait_response() == 200, ws.stream.headers
        assert ws.recv() == (wsframe.OP_BINARY, b"early bird")
        ws.close()
    ev = app.wait_event("raw-101", path=path)[0]
    assert ev["early_bytes"] == 0, ev


def test_h2_upstream_reset_is_connect_error(wgw, app):
    path = "/raw/reset-on-data?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200, ws.stream.headers
        ws.send(b"trigger")
        assert ws.wait_end() == ("reset", CONNECT_ERROR)
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("outcome") == "upstream-reset", rec.raw


def test_h2_client_reset_resets_upstream(wgw, app):
    path = "/echo?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200
        ws.send("hi")
        assert ws.recv() == (wsframe.OP_TEXT, b"hi")
        c.reset_stream(ws.sid, CANCEL)
        ev = app.wait_event("closed", path=path)[0]
        assert not ev["close_rcvd"] and ev["lost"] == "ConnectionResetError", ev
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("outcome") == "client-reset", rec.raw


def test_h2_client_end_stream_is_upstream_eof(wgw, app):
    """END_STREAM from the client: the upstream reads EOF (the gateway
    shuts down its write side); the app then closes, which ends the
    client's stream."""
    path = "/echo?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200
        ws.send(b"last")
        assert ws.recv() == (wsframe.OP_BINARY, b"last")
        c.send(ws.sid, b"", end_stream=True)
        ev = app.wait_event("closed", path=path)[0]
        assert not ev["close_rcvd"] and ev["lost"] is None, ev
        assert ws.wait_end() == ("end", None)
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("outcome") == "ok", rec.raw


def test_h2_upstream_close_ends_stream(wgw, app):
    path = "/close-after/1?t=" + uid()
    with H2Raw(wgw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200
        ws.send("one")
        assert ws.recv() == (wsframe.OP_TEXT, b"one")
        op, body = ws.recv()
        assert op == wsframe.OP_CLOSE and wsframe.parse_close(body) == (1000, "after 1")
        ws.send_frame(wsframe.OP_CLOSE, body)
        assert ws.wait_end() == ("end", None)
        c.send(ws.sid, b"", end_stream=True)
    rec = tunnel_lines(wgw, path)[0]
    assert rec.get("outcome") == "ok", rec.raw


def test_h2_slow_upstream_backpressure(wgw, app):
    """An upstream that reads nothing: the stream's flow-control window
    closes after a bounded amount; once the app reads, everything echoes."""
    path = "/slow?t=" + uid()
    limit = 64 * MiB
    with H2Raw(wgw, timeout=60) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200
        app.wait_event("paused", path=path)
        msgs, sent = [], 0
        while sent < limit:
            msgs.append(payload(64 * 1024, seed=len(msgs)))
            f = wsframe.encode(wsframe.OP_BINARY, msgs[-1])
            done = c.send_some(ws.sid, f, stall=2 * SLOW)
            sent += done
            if done < len(f):
                rest = f[done:]
                break
        else:
            raise AssertionError("%d bytes accepted on a tunnel whose upstream "
                                 "reads nothing" % limit)
        app.resume()
        c.send(ws.sid, rest)
        for i, msg in enumerate(msgs):
            op, got = ws.recv()
            assert_same(got, msg, "message %d after the stall" % i)
        ws.close()


def test_h2_idle_tunnel_times_out(routed_ws, app):
    gw = routed_ws({"listener": {"tunnel_idle_timeout": "1s"}})
    path = "/echo?t=" + uid()
    with H2Raw(gw) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200
        ws.wait_end(timeout=10 * SLOW)
    app.wait_event("closed", path=path)
    rec = tunnel_lines(gw, path)[0]
    assert rec.get("outcome") == "tunnel-idle-timeout", rec.raw


def test_tunnel_limits_503(routed_ws, app):
    """max_tunnels_per_connection on one HTTP/2 connection, then
    max_tunnels for the gateway (an HTTP/1.1 Upgrade over it): 503, and
    tunnels_refused counts them."""
    gw = routed_ws({"listener": {"max_tunnels": "2", "max_tunnels_per_connection": "1"}})
    t = uid()
    with H2Raw(gw) as c1, H2Raw(gw) as c2:
        a = H2WebSocket(c1, "/echo?t=%s-a" % t)
        assert a.wait_response() == 200
        b = H2WebSocket(c1, "/echo?t=%s-b" % t)
        assert b.wait_response() == 503, b.stream.headers
        c = H2WebSocket(c2, "/echo?t=%s-c" % t)
        assert c.wait_response() == 200
        s = h1_socket(gw)
        try:
            s.sendall(upgrade_head(gw, "/echo?t=%s-d" % t))
            status, fields = Reader(s).head()
            assert status == 503, fields
        finally:
            s.close()
        m = gw.metrics()
        assert m.get("tunnels_refused") == 2 and m.get("tunnels_open") == 2, m
        a.close()
        c.close()
    assert not app_requests(app, "%s-b" % t) and not app_requests(app, "%s-d" % t)


def test_h2_drain_goaway_then_reset(routed_ws, app):
    """SIGTERM: GOAWAY; the open tunnel still carries messages until
    shutdown_timeout, then it is reset; the gateway exits 0."""
    gw = routed_ws({"server": {"shutdown_timeout": "1s"}})
    path = "/echo?t=" + uid()
    with H2Raw(gw, see_past_goaway=True) as c:
        ws = H2WebSocket(c, path)
        assert ws.wait_response() == 200
        gw.send_signal(signal.SIGTERM)
        c.run_until(lambda: c.goaway is not None)
        ws.send("still here")
        assert ws.recv() == (wsframe.OP_TEXT, b"still here")
        # Returns at the stream's end, or when the connection closes.
        c.run_until(lambda: ws.stream.reset is not None or ws.stream.ended,
                    timeout=15 * SLOW)
        seen = "client saw: stream reset %s, ended %s, GOAWAY %s" % (
            ws.stream.reset, ws.stream.ended, c.goaway)
    app.wait_event("closed", path=path)
    gw.stop()
    rec = [r for r in gw.access_log() if r.get("path") == path]
    assert rec and rec[0].get("outcome") == "shutdown", (seen, [r.raw for r in rec])


# --------------------------------------------------------------------------
# Chromium

@pytest.mark.parametrize("http", ["h2", "http/1.1"])
def test_chromium_websocket(wgw, app, tmp_path, http, need_chromium):
    """Chromium loads /page (served by the app through the gateway), whose
    script echoes text and binary messages up to 1 MiB over
    wss://<host>/echo. Default flags: the page comes over h2 and so does
    the WebSocket (RFC 8441, the gateway advertises the setting);
    --disable-http2: both over HTTP/1.1."""
    from testenv.wsbrowser import page_result
    flags = ["--disable-http2"] if http == "http/1.1" else []
    n_before = len([r for r in wgw.access_log() if r.get("tunnel") == "websocket"])
    result, events = page_result("https://localhost:%d/page?t=%s" % (wgw.tcp_port, uid()),
                                 wgw.certs.spki, str(tmp_path), flags)
    assert result is not None and result.get("ok"), (result, events)
    assert result["sizes"] == [1, 125, 126, 65535, 65536, 1 << 20], result
    assert result["protocol"] == "chat", result
    assert result["close"] == {"code": 1000, "clean": True}, result
    docs = [e for e in events if e.get("event") == "response"]
    assert docs and docs[0]["protocol"] == http, events
    recs = wgw.wait_access(lambda r: r.get("tunnel") == "websocket", count=n_before + 1)
    rec = recs[-1]
    assert rec["path"] == "/echo" and rec["proto"] == http, rec.raw
    assert rec["status"] == ("200" if http == "h2" else "101"), rec.raw
    assert rec.get("outcome") == "ok", rec.raw
