"""The upstream pool around failures: idle connections the upstream closed
are dropped before reuse, a GET that dies on a reused connection before any
response byte is retried once on a fresh one (a POST never is), idle
connections expire, an upstream that breaks mid-body resets the client's
stream, and a client that cancels frees its upstream connection."""

import socket
import struct
import time

from conftest import SLOW, KiB, MiB, expected_sha256


def assert_ok(r, n):
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r


def assert_accounting(m):
    """Every connection opened is either idle in the pool, busy, or closed."""
    assert m["upstream_connects"] == (m["upstream_conns_closed"] + m["upstream_conns_idle"]
                                      + m["upstream_conns_busy"]), m


def test_idle_connection_closed_by_upstream_is_dropped(gateway, upstream, h3):
    gw = gateway()
    cl = h3(gw)
    assert_ok(cl.get("/bytes/100?linger_close=100"), 100)
    first = upstream.conns[0]
    upstream.wait_conn_closed(first.id)
    assert first.closed_by == "upstream", first
    # The gateway notices the close while the connection is idle, before
    # anyone asks for it.
    m = gw.wait_metrics(lambda m: m["upstream_conns_idle"] == 0
                        and m["upstream_conns_closed"] == 1,
                        what="the closed idle connection dropped from the pool")
    assert_accounting(m)
    before = m
    r = cl.get("/bytes/4096")
    assert_ok(r, 4096)
    assert upstream.accepts == 2
    assert len(upstream.requests) == 2, upstream.requests
    assert upstream.last_request("/bytes/4096").index == 0
    m = gw.wait_idle()
    assert m["upstream_reuses"] == before["upstream_reuses"], m
    assert m["responses_generated"] == 0, m
    assert_accounting(m)


def _drop_when_reused(conn, req):
    """Answers on a fresh connection; on a reused one, takes the request
    and closes without a byte of response."""
    if req.index > 0:
        conn.info.note = "dropped a request on a reused connection"
        return False
    conn.body.drain()
    conn.resp.simple(200, b"fresh:%d\n" % req.conn_id)
    return True


def test_get_retried_once_on_fresh_connection(gateway, upstream, h3):
    upstream.script("drop-reused", _drop_when_reused)
    gw = gateway()
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10"), 10)
    first = upstream.conns[0].id
    r = cl.get("/script/drop-reused")
    assert r.error is None and r.status == 200, r
    reqs = upstream.requests_for("/script/drop-reused")
    assert len(reqs) == 2, "want the GET twice (reused conn, then a fresh one): %s" % reqs
    assert reqs[0].conn_id == first and reqs[0].index == 1, reqs
    assert reqs[1].conn_id != first and reqs[1].index == 0, reqs
    assert r.body == b"fresh:%d\n" % reqs[1].conn_id
    m = gw.wait_idle()
    assert m["responses_generated"] == 0, m
    assert_accounting(m)


def test_get_not_retried_twice(gateway, upstream, h3):
    """Retry means once: when the fresh connection fails too, 502."""
    def always_drop(conn, req):
        return False
    upstream.script("drop-always", always_drop)
    gw = gateway()
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10"), 10)
    r = cl.get("/script/drop-always")
    assert r.error is None and r.status == 502, r
    reqs = upstream.requests_for("/script/drop-always")
    assert len(reqs) == 2, reqs
    assert reqs[1].index == 0, "the retry must use a fresh connection: %s" % reqs


def test_post_never_retried(gateway, upstream, h3):
    upstream.script("drop-reused", _drop_when_reused)
    gw = gateway()
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10"), 10)
    r = cl.post("/script/drop-reused", 100)
    assert r.error is None and r.status == 502, r
    gw.wait_idle()
    reqs = upstream.requests_for("/script/drop-reused")
    assert len(reqs) == 1, "a POST was sent again: %s" % reqs
    assert reqs[0].method == "POST" and reqs[0].index == 1
    m = gw.wait_idle()
    assert m["responses_generated"] == 1, m
    assert_accounting(m)


def test_idle_connections_expire(gateway, upstream, h3):
    gw = gateway({"upstream": {"idle_timeout": "1s"}})
    from conftest import H3Multi
    with H3Multi(gw) as mh:
        rs = mh.run([{"path": "/bytes/1000?delay=300&i=%d" % i} for i in range(4)])
    for r in rs:
        assert_ok(r, 1000)
    m = gw.wait_idle()
    assert m["upstream_conns_idle"] == 4, m
    t0 = time.monotonic()
    m = gw.wait_metrics(lambda m: m["upstream_conns_idle"] == 0, timeout=6,
                        what="idle connections to expire (idle_timeout 1s)")
    took = time.monotonic() - t0
    assert took > 0.4, "idle connections closed after %.2fs (timeout 1s)" % took
    assert m["upstream_conns_closed"] == 4, m
    assert_accounting(m)
    for c in upstream.conns:
        upstream.wait_conn_closed(c.id)
        assert c.closed_by == "peer", c


def _reset_mid_body(conn, req):
    conn.body.drain()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 * MiB))
    conn.sendall(bytes(b"".join(bytes(p) for p in _pattern(300 * KiB))))
    time.sleep(0.2)
    # SO_LINGER 0: close() sends a TCP RST.
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.info.note = "reset mid-body"
    return False


def _pattern(n):
    from upstream import iter_pattern
    return iter_pattern(n)


def test_upstream_reset_mid_body_resets_client_stream(gateway, upstream, h3):
    upstream.script("rst", _reset_mid_body)
    gw = gateway()
    cl = h3(gw)
    before = gw.metrics()
    r = cl.get("/script/rst", timeout=20)
    assert r.error is not None, "a reset upstream gave a clean %d-byte body" % r.body_len
    assert r.body_len <= 300 * KiB
    assert r.sha256 == expected_sha256(r.body_len), "the body prefix is corrupted"
    r2 = cl.get("/bytes/1000")
    assert_ok(r2, 1000)
    assert r2.num_connects == 0
    m = gw.wait_idle()
    assert m["h3_streams_reset_by_gateway"] - before["h3_streams_reset_by_gateway"] == 1, m
    assert_accounting(m)


def test_upstream_closes_mid_body_resets_client_stream(gateway, upstream, h3):
    gw = gateway()
    cl = h3(gw)
    for kind in ("close-short-cl", "close-short-chunked"):
        r = cl.get("/malformed/%s" % kind, timeout=20)
        assert r.error is not None, "%s: clean short body %s" % (kind, r)
        assert r.sha256 == expected_sha256(r.body_len)
    assert_ok(cl.get("/bytes/1000"), 1000)
    assert_accounting(gw.wait_idle())


def test_client_cancel_frees_upstream_connection(gateway, upstream, h3):
    gw = gateway()
    cl = h3(gw)
    before = gw.metrics()
    r = cl.get("/slow/%d?rate=%d" % (200 * MiB, 16 * MiB), abort_after=1 * MiB, timeout=30)
    assert r.error is not None and r.error[0] == 23, r    # CURLE_WRITE_ERROR
    req = upstream.last_request("/slow/")
    # libcurl sends its STOP_SENDING/RESET_STREAM when next driven.
    r2 = cl.get("/bytes/%d" % (64 * KiB))
    assert_ok(r2, 64 * KiB)
    c = upstream.wait_conn_closed(req.conn_id, timeout=5 * SLOW)
    assert c.closed_by == "peer", c
    assert upstream.last_request("/bytes/%d" % (64 * KiB)).conn_id != req.conn_id
    m = gw.wait_idle()
    assert m["upstream_conns_busy"] == 0, m
    assert m["h3_streams_reset_by_client"] - before["h3_streams_reset_by_client"] >= 1, m
    assert m["upstream_conns_idle"] == 1, m
    assert_accounting(m)


def test_client_connection_vanishes_frees_upstream_connection(gateway, upstream, h3):
    """The whole QUIC connection goes (the client closes its handle) in the
    middle of a slow download."""
    from conftest import H3Client
    gw = gateway()
    cl = H3Client(gw)
    r = cl.get("/slow/%d?rate=%d" % (100 * MiB, 8 * MiB), abort_after=512 * KiB)
    cl.close()
    assert r.error is not None, r
    req = upstream.last_request("/slow/")
    c = upstream.wait_conn_closed(req.conn_id, timeout=10 * SLOW)
    assert c.closed_by == "peer", c
    m = gw.wait_metrics(lambda m: m["upstream_conns_busy"] == 0
                        and m["h3_streams_active"] == 0, timeout=10,
                        what="the vanished client's stream and upstream conn freed")
    assert_accounting(m)


def test_client_stop_sending_cuts_the_exchange_at_once(gateway, upstream):
    """STOP_SENDING on a request whose body is still coming and whose
    response has not started (the app waits for the rest of the body): the
    gateway cuts the exchange at once, not when the response next has bytes
    to send or the connection ends. The app's connection closes before a
    second request, 3 s later on the same QUIC connection, reaches the app;
    that request is served."""
    from conftest import uid
    from testenv.h3raw import H3_REQUEST_CANCELLED, Script, Stream, get, run_h3raw
    gw = gateway()
    before = gw.metrics()
    t = uid()
    hang, later = "/hang?t=" + t, "/bytes/10?t=" + t
    fields = get(gw, hang, extra=[("content-length", "100")], method="POST")
    # The pause lets the request reach the app before the STOP_SENDING.
    run = run_h3raw(gw, Script(Stream().headers(fields).data(b"x" * 10).pause(1000)
                               .stop(H3_REQUEST_CANCELLED).pause(120000)
                               .data(b"x" * 90).fin(),
                               Stream().pause(3000).headers(get(gw, later)).fin(),
                               concurrent=True), timeout=20)
    cut, ok = run.streams
    # Without the cut the stream waits on the app until h3raw's timeout.
    assert cut["timeout"] is False and cut["status"] is None, run
    assert cut["reset"] == H3_REQUEST_CANCELLED, run
    assert ok["status"] == 200 and ok["body_len"] == 10, run
    assert run.conn["connection_close"] is None, run
    req = upstream.last_request(hang)
    if req is not None:   # else the cut came before the app was reached
        c = upstream.wait_conn_closed(req.conn_id, timeout=5 * SLOW)
        assert c.closed_by == "peer", c
        second = upstream.last_request(later)
        assert c.closed_at < second.t_start, \
            "the app's connection closed only after the next request came (%.3f s later)" % (
                c.closed_at - second.t_start)
    rec = gw.wait_access(path=hang)[0]
    assert rec.get("outcome") == "client-reset", rec.raw
    m = gw.wait_idle()
    assert m["h3_streams_reset_by_client"] - before["h3_streams_reset_by_client"] == 1, m
    assert m["upstream_conns_busy"] == 0, m
    assert_accounting(m)
