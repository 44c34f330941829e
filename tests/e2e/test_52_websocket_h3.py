"""WebSockets over HTTP/3 (RFC 9220 extended CONNECT; issue 12,
/work/ws-spec.md), in front of testenv/wsapp.py (python3-websockets 10.4 in
its own process, and a raw server for 101s no library sends).

The client is h3ws (tests/tools/h3ws.c, run by testenv/h3ws.py): nghttp3
encodes the extended CONNECTs, WebSocket frames go in the streams' DATA,
every echo is checked byte for byte against a payload derived from
(connection, tunnel, message). Malformed requests, which no library sends,
go through h3raw scripts.

What the client got is asserted first, then what the app saw (its events
file), then the gateway's metrics and access log. Nothing sleeps and then
asserts: tests wait for app events, access log lines and metrics. Timings
are printed, never asserted."""

import pytest

from conftest import SANITIZE, SLOW, MiB, uid
from testenv.groups import RoutedFactory, group, route
from testenv.h3raw import H3_MESSAGE_ERROR, Script, Stream, get, run_h3raw
from testenv.h3ws import (H3_CONNECT_ERROR, require_h3ws, run_h3ws, start_h3ws,
                          summary)
from testenv.require import require

try:
    import websockets
except ImportError:      # the app fixture's require() reports it
    websockets = None

SIZES = "1,125,126,65535,65536,1M,16M"
NSIZES = 7
STREAM_BUFFER = 256 * 1024


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


@pytest.fixture(scope="module")
def wgw(tmp_path_factory, certs, app):
    """One gateway in front of the app for the module's tests (each finds
    its own records by a unique token in its path)."""
    require_h3ws()
    f = RoutedFactory(tmp_path_factory, certs)
    gw = f(ws_blocks(app), {"listener": {"stream_buffer_size": "256KiB"}},
           name="ws-h3-gw")
    yield gw
    f.finish()


@pytest.fixture
def routed_ws(tmp_path_factory, certs, app):
    """Factory: a gateway of its own (settings to try) in front of the app."""
    require_h3ws()
    f = RoutedFactory(tmp_path_factory, certs)
    yield lambda overrides=None, blocks=None, name=None: f(
        blocks if blocks is not None else ws_blocks(app), overrides, name=name)
    f.finish()


# --------------------------------------------------------------------------
# helpers

def h3ws(gw, path, *args, timeout=30, ok=True):
    """Runs h3ws on path; with ok, every tunnel must have done what was
    expected (exit 0)."""
    rep = run_h3ws(gw, "--path", path, *args, timeout=timeout)
    if ok:
        assert rep["exit"] == 0 and rep["tunnels_failed"] == 0, summary(rep)
    return rep


def metric_delta(after, before, name):
    return after.get(name, 0) - before.get(name, 0)


def settled(gw):
    """Metrics once no tunnel is open and no upstream connection busy."""
    return gw.wait_metrics(lambda m: m.get("tunnels_open", 0) == 0
                           and m.get("upstream_conns_busy", 0) == 0,
                           timeout=10, what="no open tunnel, no busy upstream")


def app_requests(app, token):
    return [e for e in app.events("request") if token in e["path"]]


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name]


def check_rss(what, peak_kib, base_kib, limit_kib):
    print("%s: gateway peak RSS %d KiB (%d KiB before, +%d KiB; limit +%d KiB)"
          % (what, peak_kib, base_kib, peak_kib - base_kib, limit_kib))
    if SANITIZE:
        return    # ASan's shadow memory and quarantine inflate RSS
    assert peak_kib - base_kib < limit_kib, \
        "%s: gateway peak RSS grew by %d KiB (>= %d KiB)" % (
            what, peak_kib - base_kib, limit_kib)


# --------------------------------------------------------------------------
# SETTINGS

def test_setting_advertised(wgw):
    rep = h3ws(wgw, "/", "--tunnels", 0)
    assert rep["settings_enable_connect_protocol"] is True, summary(rep)


def test_no_setting_and_protocol_malformed_when_websocket_off(routed_ws, app):
    """[listener] websocket = off and no route turning it on: no
    SETTINGS_ENABLE_CONNECT_PROTOCOL, and a :protocol sent anyway is
    malformed (H3_MESSAGE_ERROR); nothing reaches the app."""
    gw = routed_ws({"listener": {"websocket": "off"}},
                   blocks=[group("ws", [app.address]), route("app", "ws", path="/")])
    rep = h3ws(gw, "/", "--tunnels", 0)
    assert rep["settings_enable_connect_protocol"] is False, summary(rep)
    path = "/echo?t=" + uid()
    rep = h3ws(gw, path, "--ignore-settings", "--expect-reset", H3_MESSAGE_ERROR)
    assert rep["resets_received"] == {"0x10e": 1}, summary(rep)
    assert not app_requests(app, path)


# --------------------------------------------------------------------------
# tunnels

@pytest.mark.parametrize("kind,extra", [("--text", ["--ping"]),
                                        ("--binary", ["--fragment", "64K"])])
def test_echo_byte_exact(wgw, app, kind, extra):
    """Text and binary messages of 1 B to 16 MiB come back byte for byte
    (the text run starts with a ping, the binary one sends 64 KiB
    fragments); the close handshake completes both ways."""
    path = "/echo?t=" + uid()
    rep = h3ws(wgw, path, kind, "--messages", NSIZES, "--size", SIZES, *extra,
               timeout=60)
    assert rep["statuses"] == {"200": 1} and rep["messages_ok"] == NSIZES, summary(rep)
    assert rep["mismatches"] == 0 and rep["server_close_codes"] == {"1000": 1}, summary(rep)
    assert rep["server_end"]["fin"] == 1, summary(rep)
    if "--ping" in extra:
        assert rep["pongs"] == 1, summary(rep)
    headers = dict(rep["first_response_headers"])
    assert headers.get(":status") == "200" and "content-length" not in headers, headers
    ev = app.wait_event("closed", path=path)[0]
    assert ev["in_msgs"] == NSIZES and ev["code"] == 1000 and ev["close_rcvd"], ev
    print("echo %s: %.2f s, %.0f MB/s" % (kind, rep["elapsed"],
                                        rep["bytes_per_second"] / 1e6))


def test_upgrade_request_made_by_the_gateway(wgw, app):
    """The app gets an HTTP/1.1 GET with Upgrade, Connection, version 13, a
    fresh key (not the client's), and the client's subprotocol and other
    fields; the chosen subprotocol comes back on the 200."""
    path = "/echo?t=" + uid()
    rep = h3ws(wgw, path, "--ws-protocol", "chat", "--header", "x-test", "yes",
               "--header", "sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    headers = rep["first_response_headers"]
    assert header_values(headers, "sec-websocket-protocol") == ["chat"], headers
    req = app.wait_event("request", path=path)[0]
    h = req["headers"]
    assert req["upgrade"], req
    assert [v.lower() for v in header_values(h, "upgrade")] == ["websocket"], h
    assert "upgrade" in ",".join(header_values(h, "connection")).lower(), h
    assert header_values(h, "sec-websocket-version") == ["13"], h
    keys = header_values(h, "sec-websocket-key")
    assert len(keys) == 1 and keys[0] != "dGhlIHNhbXBsZSBub25jZQ==", h
    assert header_values(h, "sec-websocket-protocol") == ["chat"], h
    assert header_values(h, "x-test") == ["yes"], h
    assert header_values(h, "host") == [wgw.authority], h


def test_1000_tunnels_over_10_connections(wgw, app):
    """1000 concurrent tunnels (100 per connection) x 100 messages each, all
    exact. While they are all open, tunnels_open counts them and, once every
    101 is in, no pooled upstream connection is busy (an upgraded one
    leaves the pool); afterwards no tunnel is open."""
    path = "/echo?t=" + uid()
    before = settled(wgw)
    run = start_h3ws(wgw, "--path", path, "--connections", 10, "--tunnels", 100,
                     "--messages", 100, "--size", "1-1000", "--mixed", timeout=120)
    try:
        during = wgw.wait_metrics(
            lambda m: (metric_delta(m, before, "tunnels_opened") == 1000
                       and metric_delta(m, before, "tunnels_open") == 1000
                       and m.get("upstream_conns_busy") == 0) or not run.running(),
            timeout=60, what="1000 tunnels open, no busy upstream connection")
    finally:
        rep = run.wait(180 * SLOW)
    assert rep["exit"] == 0, summary(rep)
    assert metric_delta(during, before, "tunnels_open") == 1000, during
    assert during.get("upstream_conns_busy") == 0, during
    assert rep["tunnels_ok"] == 1000 and rep["statuses"] == {"200": 1000}, summary(rep)
    assert rep["messages_ok"] == 100000 and rep["mismatches"] == 0, summary(rep)
    assert rep["max_open_tunnels"] == 1000, summary(rep)
    print("1000 tunnels x 100 messages: %.1f s, %.0f messages/s; gateway peak RSS "
          "%d KiB" % (rep["elapsed"], rep["messages_per_second"], wgw.rss_peak_kib()))
    closed = app.wait_event("closed", path=path, count=1000, timeout=30 * SLOW)
    assert all(e["in_msgs"] == 100 and e["close_rcvd"] for e in closed), \
        [e for e in closed if e["in_msgs"] != 100 or not e["close_rcvd"]][:3]
    m = settled(wgw)
    assert metric_delta(m, before, "tunnels_opened") == 1000, m
    assert metric_delta(m, before, "tunnels_refused") == 0, m
    assert m.get("tunnels_open") == 0 and m.get("upstream_conns_busy") == 0, m


def test_slow_reader_256mib_bounded_memory(routed_ws, app):
    """256 MiB sent and echoed while the client gives the window back at 48
    MiB/s: everything arrives exact, the gateway pauses its upstream reads,
    and its RSS stays within a bound set by its stream buffers."""
    gw = routed_ws({"listener": {"stream_buffer_size": "256KiB"}}, name="ws-slow-gw")
    base = gw.rss_peak_kib()
    before = gw.metrics()
    total = 256 * MiB
    path = "/echo?t=" + uid()
    rep = h3ws(gw, path, "--stream-bytes", total, "--size", "1M", "--binary",
               "--read-rate", "48M", "--stream-window", "256K", timeout=120)
    assert rep["messages_ok"] == 256 and rep["mismatches"] == 0, summary(rep)
    assert rep["payload_bytes_received"] == total, summary(rep)
    print("256 MiB through a slow reader: %.1f s (%.1f MB/s)"
          % (rep["elapsed"], rep["bytes_per_second"] / 1e6))
    m = settled(gw)
    assert metric_delta(m, before, "upstream_read_pauses") > 0, \
        "the client read slowly, yet the gateway never paused the upstream: %s" % m
    assert metric_delta(m, before, "tunnel_bytes_down") == rep["stream_bytes_received"], m
    # Up: one stream's receive window (which may grow to max_stream_window,
    # 16 MiB by default) plus buffers; down: the stream buffer. 64 stream
    # buffers on top of both is generous.
    check_rss("slow reader, 256 MiB", gw.rss_peak_kib(), base,
              (16 * MiB + 64 * STREAM_BUFFER) // 1024)


def test_slow_upstream_256mib_bounded_memory(routed_ws, app):
    """256 MiB sent to an app that takes them in at 64 MB/s and echoes:
    everything arrives exact, and the gateway holds no more than its
    buffers while the client is made to wait (flow-control credit only for
    bytes the app took)."""
    gw = routed_ws({"listener": {"stream_buffer_size": "256KiB"}},
                   name="ws-slow-up-gw")
    base = gw.rss_peak_kib()
    before = gw.metrics()
    total = 256 * MiB
    path = "/slow-echo/%d?t=%s" % (64 * 1000 * 1000, uid())
    rep = h3ws(gw, path, "--stream-bytes", total, "--size", "1M", "--binary",
               timeout=120)
    assert rep["messages_ok"] == 256 and rep["mismatches"] == 0, summary(rep)
    assert rep["payload_bytes_received"] == total, summary(rep)
    print("256 MiB through a slow upstream: %.1f s (%.1f MB/s)"
          % (rep["elapsed"], rep["bytes_per_second"] / 1e6))
    m = settled(gw)
    assert metric_delta(m, before, "tunnel_bytes_up") == rep["stream_bytes_sent"], m
    check_rss("slow upstream, 256 MiB", gw.rss_peak_kib(), base,
              (16 * MiB + 64 * STREAM_BUFFER) // 1024)


# --------------------------------------------------------------------------
# the app says no, or says 101 wrongly

@pytest.mark.parametrize("status", [403, 404, 400])
def test_upstream_refusal_passes(wgw, app, status):
    """An answer other than 101 is the client's answer, body included;
    nothing is tunnelled."""
    path = "/refuse/%d?t=%s" % (status, uid())
    before = settled(wgw)
    rep = h3ws(wgw, path, "--expect-status", status)
    assert rep["statuses"] == {str(status): 1}, summary(rep)
    assert rep["first_response_body"] == "refused %d\n" % status, summary(rep)
    assert rep["stream_bytes_sent"] == 0, summary(rep)
    assert app.wait_event("request", path=path)[0]["upgrade"]
    assert not app.events("open", path=path)
    m = settled(wgw)
    assert metric_delta(m, before, "tunnels_opened") == 0, m
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("status") == str(status) and rec.get("tunnel") is None, rec.raw


def test_refused_handshake_stops_the_clients_early_bytes(wgw, app):
    """The client sends tunnel bytes before the answer (allowed: RFC 9220
    §3 / RFC 8441 §4 let DATA follow the CONNECT at once); the app refuses.
    The client gets the whole 403, then STOP_SENDING with H3_NO_ERROR (RFC
    9114 §4.1: nothing will read the rest), nothing of its bytes reaches the
    app, and the connection serves the next request."""
    path = "/refuse/403?t=" + uid()
    plain = "/plain?t=" + uid()
    fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
              (":authority", wgw.authority), (":path", path),
              ("sec-websocket-version", "13")]
    s = Stream().headers(fields).data(b"\x82\x05hello").pause(30000).data(b"\x82\x01!")
    run = run_h3raw(wgw, Script(s, Stream().headers(get(wgw, plain)).fin()), timeout=20.0)
    refused, nxt = run.streams
    assert refused["status"] == 403 and refused["fin"] and refused["reset"] is None, run
    assert refused["body_len"] == len("refused 403\n"), run
    assert refused["stop_sending"] == 0x100, run       # H3_NO_ERROR
    assert not refused["timeout"], run
    assert nxt["status"] == 200 and run.conn["connection_close"] is None, run
    assert not app.events("open", path=path)
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("status") == "403" and rec.get("tunnel") is None, rec.raw


@pytest.mark.parametrize("kind", ["bad-accept", "no-accept", "no-upgrade"])
def test_bad_101_is_502(wgw, app, kind):
    path = "/raw/%s?t=%s" % (kind, uid())
    rep = h3ws(wgw, path, "--expect-status", 502)
    assert rep["statuses"] == {"502": 1}, summary(rep)
    app.wait_event("raw-101", path=path)


# --------------------------------------------------------------------------
# ends of a tunnel

def test_client_reset_mid_message_closes_upstream(wgw, app):
    """The client resets its stream (H3_REQUEST_CANCELLED) 100 kB into a
    1 MiB message: the app's TCP connection is reset, no message reached
    it."""
    path = "/echo?t=" + uid()
    rep = h3ws(wgw, path, "--reset-after", 100000, "--size", "1M")
    assert rep["resets_sent"] == 1 and rep["statuses"] == {"200": 1}, summary(rep)
    ev = app.wait_event("closed", path=path)[0]
    assert not ev["close_rcvd"] and ev["in_msgs"] == 0, ev
    assert ev["lost"] == "ConnectionResetError", ev
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("outcome") == "client-reset" and rec.get("tunnel") == "websocket", rec.raw
    assert rec.int("in") >= 100000, rec.raw


def test_client_fin_without_close_frame(wgw, app):
    """FIN after two messages, no close frame: the app reads EOF, closes,
    and the client's stream ends with FIN."""
    path = "/echo?t=" + uid()
    rep = h3ws(wgw, path, "--messages", 2, "--fin-after-messages")
    assert rep["messages_ok"] == 2 and rep["server_end"]["fin"] == 1, summary(rep)
    ev = app.wait_event("closed", path=path)[0]
    assert not ev["close_rcvd"] and ev["lost"] is None and ev["in_msgs"] == 2, ev
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("outcome") == "ok", rec.raw


def test_upstream_close_ends_client_stream(wgw, app):
    """The app closes after 3 echoes (1000 "after 3"): the client answers
    the close frame and the stream ends with FIN."""
    path = "/close-after/3?t=" + uid()
    rep = h3ws(wgw, path, "--messages", 3, "--expect-server-close")
    assert rep["messages_ok"] == 3 and rep["server_close_codes"] == {"1000": 1}, summary(rep)
    assert rep["server_end"]["fin"] == 1, summary(rep)
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("outcome") == "ok", rec.raw


def test_upstream_reset_is_connect_error(wgw, app):
    """The app's TCP connection resets: the stream is reset with
    H3_CONNECT_ERROR."""
    path = "/raw/reset-on-data?t=" + uid()
    rep = h3ws(wgw, path, ok=False)
    assert rep["statuses"] == {"200": 1}, summary(rep)
    assert rep["resets_received"] == {"0x%x" % H3_CONNECT_ERROR: 1}, summary(rep)
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("outcome") == "upstream-reset", rec.raw


# --------------------------------------------------------------------------
# drain

def test_drain_goaway_then_tunnel_ends(routed_ws, app):
    """SIGTERM while a tunnel streams: the connection gets GOAWAY, the
    tunnel keeps carrying exact echoes until shutdown_timeout, then it
    ends (access log outcome "shutdown", the app's connection closed) and
    the gateway exits 0."""
    import signal
    gw = routed_ws({"server": {"shutdown_timeout": "2s"}}, name="ws-h3-drain")
    path = "/echo?t=" + uid()
    # 1 GiB at 8 MB/s would take two minutes: the drain ends it first.
    run = start_h3ws(gw, "--path", path, "--stream-bytes", 1024 * MiB,
                     "--size", "64K", "--binary", "--read-rate", "8M",
                     "--stream-window", "256K", timeout=60)
    try:
        gw.wait_metrics(lambda m: m.get("tunnel_bytes_down", 0) >= MiB,
                        timeout=15 * SLOW, what="a tunnel echoing 1 MiB")
        gw.send_signal(signal.SIGTERM)
        gw.wait_log("shutting down: draining", timeout=10 * SLOW)
        # Echoes go on while the drain waits for the tunnel.
        start = gw.metrics().get("tunnel_bytes_down", 0)
        gw.wait_metrics(lambda m: m.get("tunnel_bytes_down", 0) >= start + MiB,
                        timeout=10 * SLOW, what="1 MiB more echoed while draining")
        took = gw.stop(timeout=20)
    finally:
        rep = run.wait(90 * SLOW)
    print("the gateway exited %.1f s after SIGTERM" % took)
    conn = rep["connections"][0]
    assert conn["goaway"] is not None, summary(rep)
    assert rep["statuses"] == {"200": 1} and rep["mismatches"] == 0, summary(rep)
    assert 0 < rep["payload_bytes_received"] < 1024 * MiB, summary(rep)
    # Cut at shutdown_timeout: the stream reset or the connection closed.
    assert rep["tunnels_failed"] == 1, summary(rep)
    assert rep["resets_received"] or conn["connection_close"] is not None, summary(rep)
    app.wait_event("closed", path=path)
    rec = [r for r in gw.access_log() if r.get("path") == path]
    assert rec and rec[0].get("outcome") == "shutdown", [r.raw for r in rec]


# --------------------------------------------------------------------------
# refusals

def malformed(kind, gw, path):
    """The field list of a malformed (extended) CONNECT."""
    base = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
            (":authority", gw.authority), (":path", path)]
    if kind == "plain CONNECT":
        return [(":method", "CONNECT"), (":authority", gw.authority)]
    if kind == "CONNECT with :path, no :protocol":
        return [f for f in base if f[0] != ":protocol"]
    if kind == ":protocol on GET":
        return [(":method", "GET")] + base[1:]
    return [f for f in base if f[0] != kind[3:]]


@pytest.mark.parametrize("kind", ["plain CONNECT", "CONNECT with :path, no :protocol",
                                  ":protocol on GET", "no :scheme", "no :path",
                                  "no :authority"])
def test_malformed_extended_connect_reset(wgw, app, kind):
    """Malformed (RFC 9220 §3, RFC 9114 §4.4, §4.1.2): the stream is reset
    with H3_MESSAGE_ERROR, nothing reaches the app, and the connection
    serves the next request."""
    token = uid()
    path = "/echo?t=" + token
    plain = "/plain?t=" + uid()
    run = run_h3raw(wgw, Script(Stream().headers(malformed(kind, wgw, path)),
                                Stream().headers(get(wgw, plain)).fin()))
    bad, ok = run.streams
    assert bad["status"] is None and bad["reset"] == H3_MESSAGE_ERROR, (kind, run)
    assert ok["status"] == 200 and run.conn["connection_close"] is None, run
    assert not app_requests(app, token)
    assert app.wait_event("request", path=plain)


def test_connection_offered_before_a_reload_turned_websocket_off_gets_501(routed_ws, app):
    """SETTINGS cannot be taken back: on a connection opened while
    WebSockets were on, an extended CONNECT after a reload turned them off
    is well-formed and refused by its route (501), not reset as malformed."""
    import threading
    from test_55_reload import reload_and_wait
    gw = routed_ws(name="ws-h3-reload-off")
    plain = "/plain?t=" + uid()
    path = "/echo?t=" + uid()
    fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
              (":authority", gw.authority), (":path", path),
              ("sec-websocket-version", "13")]
    # The CONNECT goes 8 s after the first request, on the same connection:
    # the reload happens in between (waited for below, before the CONNECT
    # is looked at).
    script = Script(Stream().headers(get(gw, plain)).fin(),
                    Stream().pause(8000).headers(fields).fin())
    out = {}
    t = threading.Thread(target=lambda: out.update(run=run_h3raw(gw, script, timeout=30.0)))
    t.start()
    app.wait_event("request", path=plain)
    gw.config["listener"]["websocket"] = "off"
    gw.write_config()
    m = reload_and_wait(gw)
    assert m["reloads"] == 1 and m["reload_failures"] == 0, m
    assert t.is_alive(), "the CONNECT went before the reload was done"
    t.join(40 * SLOW)
    first, ws = out["run"].streams
    assert first["status"] == 200, out["run"]
    assert ws["status"] == 501 and ws["reset"] is None, out["run"]
    assert out["run"].conn["connection_close"] is None, out["run"]
    assert not app_requests(app, path.split("=")[1])


def test_unknown_protocol_is_501(wgw, app):
    token = uid()
    fields = [(":method", "CONNECT"), (":protocol", "foo"), (":scheme", "https"),
              (":authority", wgw.authority), (":path", "/echo?t=" + token)]
    run = run_h3raw(wgw, Script(Stream().headers(fields)))
    assert run.streams[0]["status"] == 501, run
    rep = h3ws(wgw, "/echo?t=" + token, "--protocol", "foo", "--expect-status", 501)
    assert rep["statuses"] == {"501": 1}, summary(rep)
    assert not app_requests(app, token)


def test_route_websocket_off_is_501(wgw, app):
    path = "/off/echo?t=" + uid()
    before = settled(wgw)
    rep = h3ws(wgw, path, "--expect-status", 501)
    assert rep["statuses"] == {"501": 1} and rep["stream_bytes_sent"] == 0, summary(rep)
    assert not app_requests(app, path)
    m = settled(wgw)
    assert metric_delta(m, before, "tunnels_opened") == 0, m
    assert metric_delta(m, before, "tunnels_refused") == 1, m


# --------------------------------------------------------------------------
# visibility

def test_access_log_and_metrics(wgw, app):
    """One access line when the tunnel ends: status=200, tunnel=websocket,
    outcome=ok, in/out the tunnel's bytes each way; the metrics count the
    tunnel and the same bytes."""
    path = "/echo?t=" + uid()
    before = settled(wgw)
    rep = h3ws(wgw, path, "--messages", 3, "--size", "10,1000,100000")
    up, down = rep["stream_bytes_sent"], rep["stream_bytes_received"]
    assert up >= 101010 and down >= 101010, summary(rep)
    rec = wgw.wait_access(path=path)[0]
    assert rec.get("status") == "200" and rec.get("tunnel") == "websocket", rec.raw
    assert rec.get("outcome") == "ok" and rec.float("duration_ms") >= 0, rec.raw
    assert rec.int("in") == up and rec.int("out") == down, (up, down, rec.raw)
    m = settled(wgw)
    assert metric_delta(m, before, "tunnels_opened") == 1, m
    assert metric_delta(m, before, "tunnels_refused") == 0, m
    assert metric_delta(m, before, "tunnel_bytes_up") == up, (up, m)
    assert metric_delta(m, before, "tunnel_bytes_down") == down, (down, m)
