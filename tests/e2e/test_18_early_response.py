"""An application that answers an upload before reading it (a 413 or 401
sent at once, as Express, Django and Rails do) is heard: the client gets
the application's status and body, on HTTP/3, HTTP/2 and HTTP/1.1, with
or without "Connection: close" from the application (RFC 9110 §15,
RFC 9112 §9.5). The gateway stops sending the body upstream and closes
that upstream connection (never reuses it: the bytes the application did
not read stay there); the client's request stream is ended as its
protocol wants: HTTP/3 STOP_SENDING with H3_NO_ERROR (RFC 9114 §4.1),
HTTP/2 RST_STREAM(NO_ERROR) after the complete response (RFC 9113 §8.1),
HTTP/1.1 "Connection: close" and a lingering close (RFC 9112 §9.6). The
next request works, on the same client connection where the protocol
allows it, and no upload hangs. A body the gateway could send completely
before the answer (0 bytes here) is an ordinary exchange."""

import pytest

from conftest import (GatewayFactory, KiB, MiB, client_for, expected_sha256,
                      uid)
from testenv.h2raw import H2Raw
from testenv.h3raw import H3_NO_ERROR, Script, Stream, run_h3raw

PROTOS = ["h3", "h2", "http/1.1"]
SIZES = [0, 1 * MiB, 100 * MiB]


@pytest.fixture(scope="module")
def egw(tmp_path_factory, certs, shared_upstream):
    """One gateway (UDP and TCP) in front of the session's upstream."""
    f = GatewayFactory(tmp_path_factory, certs, lambda: shared_upstream)
    yield f.with_tcp(name="early-gw")
    f.finish()


def page(code):
    return b"refused by the app: %d\n" % code


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("n", SIZES, ids=["0B", "1MiB", "100MiB"])
@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "close"])
@pytest.mark.parametrize("code", [413, 401])
def test_early_answer_reaches_the_client(egw, shared_upstream, proto, n,
                                         close, code):
    upstream = shared_upstream
    path = "/early/%d?close=%d&t=%s" % (code, int(close), uid())
    early_before = egw.metrics()["upstream_early_responses"]
    cl = client_for(proto, egw)
    try:
        # The 1 MiB upload waits at 64 KiB until the answer is in: without
        # that, the gateway could sometimes hand the whole body to the
        # kernel before the answer comes, and the exchange would not be
        # early. 100 MiB cannot fit anywhere before the answer.
        hold = 64 * KiB if n == 1 * MiB else None
        r = cl.post(path, n, timeout=60, hold_upload_at=hold)
        # What the client saw.
        assert r.error is None, (proto, r)
        assert r.status == code, r
        assert r.body == page(code), r.body
        if code == 401:
            assert r.header("www-authenticate") == 'Basic realm="e2e"', r.headers
        if proto == "http/1.1" and n > 0:
            # The rest of the body will not be read: the gateway says so.
            assert r.header("connection") == "close", r.headers
        # The next request works, on the same connection where it may.
        r2 = cl.get("/bytes/%d" % (64 * KiB))
        assert r2.error is None and r2.status == 200, r2
        assert r2.sha256 == expected_sha256(64 * KiB)
        if proto != "http/1.1" or n == 0:
            assert r2.num_connects == 0, ("a new connection was needed", r2)
        else:
            assert r2.num_connects == 1, r2
    finally:
        cl.close()

    # What the upstream saw: the request, answered before its body was
    # read; then the gateway closed that connection and sent nothing more
    # on it (or, 0 bytes with keep-alive, kept it for reuse).
    req = upstream.last_request(path)
    assert req is not None
    assert req.declared_length == n, req
    if n == 0 and not close:
        c = upstream.conn(req.conn_id)
        assert c.closed_at is None, ("a clean exchange's connection was "
                                     "closed", c)
    else:
        c = upstream.wait_conn_closed(req.conn_id, timeout=15)
        assert c.closed_by == "peer", ("the gateway should close it", c)
        assert c.requests == req.index + 1, ("a request followed", c)
    if n > 0:
        # The body stopped: the upstream never got all of it.
        assert req.body_len < n, req
        assert not req.body_complete, req

    m = egw.wait_metrics(lambda m: m["upstream_conns_busy"] == 0)
    assert m["upstream_early_responses"] == early_before + (1 if n else 0), m
    line = egw.wait_access(path=path)[0]
    assert line.int("status") == code and line["outcome"] == "ok", line.raw


def test_h3_early_answer_stop_sending_no_error(egw, shared_upstream):
    """RFC 9114 §4.1: the complete response, then STOP_SENDING with
    H3_NO_ERROR on the request stream (seen by a raw HTTP/3 client, which
    then keeps using the connection)."""
    path = "/early/413?t=%s" % uid()
    s = Stream().headers([(":method", "POST"), (":scheme", "https"),
                          (":authority", egw.authority), (":path", path),
                          ("content-length", str(1 * MiB))])
    s.data(b"x" * 1000).pause(30000).data(b"y" * 1000)
    after = Stream().headers([(":method", "GET"), (":scheme", "https"),
                              (":authority", egw.authority),
                              (":path", "/bytes/100")]).fin()
    run = run_h3raw(egw, Script(s, after), timeout=20.0)
    st, nxt = run.streams
    assert st["status"] == 413 and st["fin"] and st["reset"] is None, run
    assert st["body_len"] == len(page(413)), run
    assert st["stop_sending"] == H3_NO_ERROR, run
    assert nxt["status"] == 200 and nxt["body_len"] == 100, run
    assert run.conn["connection_close"] in (None, H3_NO_ERROR), run


def test_h2_early_answer_rst_stream_no_error(egw, shared_upstream):
    """RFC 9113 §8.1: the complete response (END_STREAM), then RST_STREAM
    with NO_ERROR; the connection goes on."""
    path = "/early/401?t=%s" % uid()
    with H2Raw(egw) as c:
        sid = c.request(path, [("content-length", str(1 * MiB))],
                        method="POST", end_stream=False)
        c.conn.send_data(sid, b"x" * 1000)
        c.flush()
        st = c.streams[sid]
        c.run_until(lambda: st.reset is not None, timeout=10)
        assert st.status == 401 and st.ended, vars(st)
        assert st.body_len == len(page(401)), vars(st)
        assert st.reset == 0, ("RST_STREAM must say NO_ERROR", vars(st))
        nxt = c.request("/bytes/100")
        c.run_until_done([nxt])
        assert c.streams[nxt].status == 200 and c.streams[nxt].body_len == 100
        assert c.goaway is None
