"""Lifecycle and observability: graceful shutdown on SIGTERM/SIGINT, the
shutdown deadline, QUIC idle timeout, the access log's fields and the
/metrics listener."""

import os
import re
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest

from conftest import GTLSCLIENT, SLOW, SRC, H3Client, KiB, MiB, expected_sha256, refusing_address
from testenv.h3raw import H3_MESSAGE_ERROR, Script, Stream, run_h3raw
from testenv.require import require


def assert_ok(r, n):
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r


# ---- shutdown -----------------------------------------------------------------

def test_sigterm_lets_inflight_download_finish(gateway, upstream):
    gw = gateway({"server": {"shutdown_timeout": "10s"}})
    n, rate = 2 * MiB, 1 * MiB          # about two seconds
    started = threading.Event()
    result = {}

    def download():
        with H3Client(gw) as cl:
            result["r"] = cl.get("/slow/%d?rate=%d" % (n, rate), timeout=30,
                                 on_data=lambda r: r.body_len >= 64 * KiB and started.set())

    t = threading.Thread(target=download)
    t.start()
    assert started.wait(10 * SLOW), "the download did not start"
    gw.send_signal(signal.SIGTERM)
    t_sig = time.monotonic()
    # Once the gateway drains (/health says 503; a connection whose Initial
    # raced the signal may legitimately still be served), new connections
    # are not accepted.
    deadline = time.monotonic() + 3 * SLOW
    while gw.admin_get("/health")[0] != 503:
        assert time.monotonic() < deadline, "/health never said 503 after SIGTERM"
        assert t.is_alive(), "the download ended before the gateway drained"
        time.sleep(0.01)
    with H3Client(gw) as late:
        r_late = late.get("/bytes/10", connect_timeout=2, timeout=3)
    assert r_late.error is not None or r_late.status >= 500, (
        "a new connection was served while draining: %s" % r_late)
    t.join(30 * SLOW)
    assert not t.is_alive()
    assert_ok(result["r"], n)
    took = gw.stop(timeout=15)      # already signalled: waits, asserts exit 0
    assert time.monotonic() - t_sig < 8 * SLOW, "exit took too long after the last request"
    assert took < 8 * SLOW


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_idle_gateway_stops_promptly(gateway, tmp_path, sig):
    """An open but idle QUIC connection does not hold the exit. The client
    is gtlsclient left running after its download: unlike an idle libcurl
    handle it keeps processing packets (acknowledges the last response
    bytes, receives GOAWAY and CONNECTION_CLOSE)."""
    require(os.access(GTLSCLIENT, os.X_OK), "gtlsclient is not installed")
    gw = gateway()
    d = tmp_path / "dl"
    d.mkdir()
    cli = subprocess.Popen([GTLSCLIENT, "-q", "--timeout=30s", "--download=%s" % d,
                            "127.0.0.1", str(gw.port), gw.url("/bytes/10")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL)
    try:
        gw.wait_access(path="/bytes/10")        # the stream is closed
        assert gw.metrics()["quic_connections_active"] == 1
        took = gw.stop(sig=sig)
        assert took < 3 * SLOW, "idle gateway took %.1fs to exit" % took
    finally:
        cli.kill()
        cli.wait(10)


def test_shutdown_timeout_bounds_the_wait(gateway, upstream):
    """A request that never finishes does not hold the exit past
    shutdown_timeout; the client sees a failure, not a success."""
    gw = gateway({"server": {"shutdown_timeout": "1s"}})
    result = {}

    def hang():
        with H3Client(gw) as cl:
            result["r"] = cl.get("/hang", timeout=20)

    t = threading.Thread(target=hang)
    t.start()
    upstream.wait_for(lambda: upstream.requests_for("/hang"), what="the hanging request")
    took = gw.stop(timeout=10)
    assert took < 4 * SLOW, "exit took %.1fs with shutdown_timeout 1s" % took
    t.join(25 * SLOW)
    r = result["r"]
    assert r.error is not None or r.status >= 500, r


def test_quic_idle_timeout_closes_connection(gateway, h3):
    gw = gateway({"listener": {"idle_timeout": "1s"}})
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10"), 10)
    assert gw.metrics()["quic_connections_active"] == 1
    m = gw.wait_metrics(lambda m: m["quic_connections_active"] == 0, timeout=6,
                        what="the idle QUIC connection to be closed")
    assert m["h3_streams_active"] == 0, m
    # (A new client: libcurl 8.14 fails a transfer on a cached connection
    # whose idle timer expired instead of reconnecting.)
    assert_ok(h3(gw).get("/bytes/20"), 20)


# ---- access log ------------------------------------------------------------------

# A stream (and so its access log line) ends when the client has
# acknowledged the last response bytes; an idle libcurl handle processes no
# packets, so these tests close their client before reading the log.

def test_access_log_fields(gateway, upstream):
    gw = gateway()
    with H3Client(gw) as cl:
        r = cl.get("/bytes/1024?x=y")
    assert_ok(r, 1024)
    rec = gw.wait_access(path="/bytes/1024?x=y")[0]
    t = rec.time.replace("Z", "+00:00")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", t), rec.raw
    when = datetime.fromisoformat(t)
    assert abs(when.timestamp() - time.time()) < 60, rec.raw
    assert rec["client"] == "127.0.0.1:%d" % r.local_port, (rec.raw, r.local_port)
    assert rec["proto"] == "h3"
    assert rec["method"] == "GET"
    assert rec["authority"] == gw.authority
    assert rec["status"] == "200"
    assert rec.int("in") == 0
    assert rec.int("out") == 1024
    assert 0 <= rec.float("duration_ms") < 10000
    assert rec["upstream"] == upstream.address
    assert rec["outcome"] == "ok"


def test_access_log_request_body(gateway, upstream):
    gw = gateway()
    with H3Client(gw) as cl:
        r = cl.post("/sink", 5000)
    assert r.error is None and r.status == 200, r
    rec = gw.wait_access(path="/sink")[0]
    assert rec["method"] == "POST"
    assert rec.int("in") == 5000
    assert rec.int("out") == r.body_len


def test_access_log_failures(gateway, upstream):
    gw = gateway({"upstream": {"response_timeout": "1s"}})
    with H3Client(gw) as cl:
        assert cl.get("/malformed/bad-status-line").status == 502
        r = cl.get("/malformed/close-short-cl")
        assert r.error is not None
        r = cl.get("/bytes/%d" % (20 * MiB), abort_after=256 * KiB)
        assert r.error is not None
        assert cl.get("/hang").status == 504
    bad = gw.wait_access(path="/malformed/bad-status-line")[0]
    assert bad["status"] == "502" and bad["outcome"] != "ok", bad.raw
    short = gw.wait_access(path="/malformed/close-short-cl")[0]
    assert short["status"] in ("0", "200") and short["outcome"] != "ok", short.raw
    assert short.int("out") <= 256 * KiB, short.raw
    cancel = gw.wait_access(path="/bytes/%d" % (20 * MiB))[0]
    assert cancel["outcome"] != "ok", cancel.raw
    assert cancel.int("out") < 20 * MiB
    hang = gw.wait_access(path="/hang")[0]
    assert hang["status"] == "504" and hang["outcome"] != "ok", hang.raw


def test_access_log_refused_upstream(gateway):
    addr = refusing_address()
    gw = gateway(upstream=addr)
    with H3Client(gw) as cl:
        assert cl.get("/x").status == 502
    rec = gw.wait_access(path="/x")[0]
    assert rec["status"] == "502" and rec["outcome"] != "ok", rec.raw
    # The upstream that refused is the one named.
    assert rec["upstream"] == addr, rec.raw


def test_access_log_names_upstream_only_when_reached(gateway, upstream):
    """upstream= names the upstream a request went to (or whose connect
    failed, above); a request the gateway answered alone, before any
    upstream connection, shows "-": malformed, 413 by its declared size,
    431, 503 with the wait queue full."""
    gw = gateway({"listener": {"max_request_body": "1KiB",
                               "max_header_size": "4KiB"},
                  "upstream": {"pool_size": "1", "queue_size": "0",
                               "response_timeout": "1s"}})
    with H3Client(gw) as cl:
        assert_ok(cl.get("/bytes/10?sent"), 10)
        r = cl.post("/sink?too-big", 2 * KiB)
        assert r.status == 413, r
        r = cl.get("/bytes/1?big-head", headers=["X-Big: " + "b" * 8000])
        assert r.status == 431, r
    run = run_h3raw(gw, Script(Stream().headers(
        [(":method", "GET"), (":scheme", "https"), (":authority", gw.authority),
         (":path", "/bytes/1?malformed"), ("X-Upper", "1")]).fin()))
    assert run.streams[0]["reset"] == H3_MESSAGE_ERROR, run
    # The only upstream connection is held by a hanging request: the next
    # one finds the queue (of 0) full.
    hung = {}

    def hang():
        with H3Client(gw) as c:
            hung["r"] = c.get("/hang?max=30")
    t = threading.Thread(target=hang)
    t.start()
    upstream.wait_for(lambda: any(r.path == "/hang" for r in upstream.requests),
                      what="the hanging request")
    with H3Client(gw) as cl:
        r = cl.get("/bytes/1?full")
        assert r.status == 503, r
    t.join(30 * SLOW)
    assert hung["r"].status == 504, hung

    # What the upstream saw: only what the log says reached it.
    seen = {r.target for r in upstream.requests}
    assert seen == {"/bytes/10?sent", "/hang?max=30"}, seen
    want = {"/bytes/10?sent": upstream.address, "/hang?max=30": upstream.address,
            "/sink?too-big": "-", "/bytes/1?big-head": "-",
            "/bytes/1?malformed": "-", "/bytes/1?full": "-"}
    for path, name in want.items():
        rec = gw.wait_access(path=path)[0]
        assert rec["upstream"] == name, (path, rec.raw)


def test_access_log_to_file(gateway, tmp_path):
    path = str(tmp_path / "access.log")
    gw = gateway({"server": {"access_log": path}})
    with H3Client(gw) as cl:
        assert_ok(cl.get("/bytes/7"), 7)
    recs = gw.wait_access(path="/bytes/7")
    assert recs[0]["status"] == "200"
    assert " client=" not in gw.stdout_text()
    gw.stop()
    with open(path) as f:
        assert "path=\"/bytes/7\"" in f.read()


def test_access_log_off(gateway):
    gw = gateway({"server": {"access_log": "off"}})
    with H3Client(gw) as cl:
        assert_ok(cl.get("/bytes/7"), 7)
    gw.stop()
    assert " client=" not in gw.stdout_text()


# ---- metrics ----------------------------------------------------------------------

def metric_names():
    path = os.path.join(SRC, "proxy", "core", "metrics.h")
    with open(path) as f:
        return re.findall(r"^\s*X\((\w+),\s*(?:counter|gauge)", f.read(), re.M)


def test_metrics_lists_every_metric(gateway):
    gw = gateway()
    with H3Client(gw) as cl:
        assert_ok(cl.get("/bytes/10"), 10)
        m = gw.wait_idle()
        assert m["quic_connections_active"] == 1, m
    assert gw.admin_get("/health")[0] == 200
    m = gw.wait_quiescent()
    names = metric_names()
    assert names, "no metric names found in proxy/core/metrics.h"
    missing = [n for n in names if n not in m]
    assert not missing, "metrics missing from /metrics: %s" % missing
    assert m["requests_total"] == 1 and m["responses_2xx"] == 1, m
    assert m["quic_connections_accepted"] == 1, m
    assert m["h3_streams_opened"] == 1 and m["h3_streams_active"] == 0, m
    assert m["upstream_connects"] == 1 and m["upstream_conns_idle"] == 1, m
    assert m["response_body_bytes"] >= 10, m
    assert m["quic_datagrams_received"] > 0 and m["quic_datagrams_sent"] > 0, m
