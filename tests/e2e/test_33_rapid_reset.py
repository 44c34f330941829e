"""Rapid reset (CVE-2023-44487) on HTTP/3: a client that opens requests and
cancels them at once. Each cancel stops its upstream work immediately; past
[listener] max_resets_per_second cancels in a second the connection is
closed with H3_EXCESSIVE_LOAD (0x107). Driven by the raw HTTP/3 client
(h3raw), with a low limit so a short burst proves it."""
from testenv.h3raw import run_h3raw as run_h3raw_shared

H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_CANCELLED = 0x10c


def run_h3raw(gw, script):
    run = run_h3raw_shared(gw, script, timeout=3)
    return run.streams, run.conn


def reset_script(gw, n, path="/hang"):
    out = ["concurrent", "linger 300"]
    for i in range(n):
        out += ["stream", "headers",
                '  field ":method" "GET"', '  field ":scheme" "https"',
                '  field ":authority" "%s"' % gw.authority,
                '  field ":path" "%s?r=%d"' % (path, i), "end",
                "reset %d" % H3_REQUEST_CANCELLED]
    return "\n".join(out) + "\n"


def test_rapid_reset_closes_connection(gateway, upstream):
    gw = gateway({"listener": {"max_resets_per_second": "10"}})
    _, conn = run_h3raw(gw, reset_script(gw, 40))
    assert conn.get("connection_close") == H3_EXCESSIVE_LOAD, conn
    m = gw.wait_metrics(lambda m: m["upstream_conns_busy"] == 0,
                        what="upstream work cancelled")
    assert m["h3_excessive_load_closes"] >= 1
    # Each cancel stopped its upstream work at once: every request the
    # upstream saw lost its connection to the gateway, none ran on.
    upstream.wait_for(lambda: upstream.inflight == 0, 10,
                      "the upstream's cancelled requests to end")
    for r in upstream.requests:
        c = upstream.wait_conn_closed(r.conn_id)
        assert c.closed_by == "peer", c


def test_cancels_below_the_limit_are_fine(gateway, upstream, h3):
    gw = gateway({"listener": {"max_resets_per_second": "100"}})
    _, conn = run_h3raw(gw, reset_script(gw, 20))
    assert conn.get("connection_close") in (None, 0), conn
    assert gw.metrics()["h3_excessive_load_closes"] == 0
    r = h3(gw).get("/bytes/10")
    assert r.error is None and r.status == 200, r
