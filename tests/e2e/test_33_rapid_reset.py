"""Rapid reset (CVE-2023-44487) on HTTP/3: a client that opens requests and
cancels them at once. Each cancel stops its upstream work immediately; past
[listener] max_resets_per_second cancels in a second the connection is
closed with H3_EXCESSIVE_LOAD (0x107). Driven by the raw HTTP/3 client
(h3raw), with a low limit so a short burst proves it."""
import json
import os
import subprocess
import tempfile

import pytest

H3RAW = os.environ.get("H3GATE_H3RAW", "")
pytestmark = pytest.mark.skipif(
    not (H3RAW and os.access(H3RAW, os.X_OK)),
    reason="h3raw not available (set H3GATE_H3RAW; ctest does)")

H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_CANCELLED = 0x10c


def run_h3raw(gw, script):
    with tempfile.TemporaryDirectory(prefix="h3raw-") as d:
        path = os.path.join(d, "s.h3raw")
        with open(path, "w") as f:
            f.write(script)
        p = subprocess.run([H3RAW, "--host", "127.0.0.1", "--port", str(gw.port),
                            "--ca", gw.certs.ca, "--timeout", "3",
                            "--script", path],
                           capture_output=True, text=True, timeout=90, cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    return lines[:-1], lines[-1]


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
