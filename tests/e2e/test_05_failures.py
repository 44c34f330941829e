"""Upstream failures: refused (502), silent (504), malformed before the head
was forwarded (502), broken mid-body (the HTTP/3 stream is reset, never a
clean short body), client cancellations. After each failure the same QUIC
connection keeps working and other streams are unaffected."""

import time

import pytest

from conftest import (SLOW, GatewayFactory, H3Multi, KiB, MiB, Upstream,
                      refusing_address)

from testenv.scenarios import MID, assert_ok, assert_reset, check_failing_neighbours

HEAD_KINDS, BODY_KINDS = Upstream.malformed_kinds()


@pytest.fixture(scope="module")
def failing(tmp_path_factory, certs):
    """One upstream and one gateway for this module's malformed cases."""
    up = Upstream(name="failures-upstream").start()
    f = GatewayFactory(tmp_path_factory, certs, lambda: up)
    gw = f(name="failures-gw")
    yield gw, up
    f.finish()
    up.stop()
    up.assert_clean()


# ---- no usable upstream -----------------------------------------------------

def test_upstream_refuses_502(gateway, h3):
    gw = gateway(upstream=refusing_address())
    cl = h3(gw)
    t0 = time.monotonic()
    r = cl.get("/bytes/10")
    assert r.error is None, r
    assert r.status == 502, r
    assert time.monotonic() - t0 < 5 * SLOW
    r2 = cl.get("/bytes/10")
    assert r2.status == 502 and r2.num_connects == 0, r2
    m = gw.wait_idle()
    assert m["upstream_connect_failures"] >= 2, m
    assert m["responses_5xx"] == 2 and m["responses_generated"] == 2, m


def test_upstream_silent_504(gateway, upstream, h3):
    gw = gateway({"upstream": {"response_timeout": "1s"}})
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10"), 10)
    t0 = time.monotonic()
    r = cl.get("/hang", timeout=20)
    took = time.monotonic() - t0
    assert r.error is None and r.status == 504, r
    assert 0.8 <= took < 5 * SLOW, "504 after %.2fs with response_timeout 1s" % took
    hung = upstream.last_request("/hang")
    c = upstream.wait_conn_closed(hung.conn_id)
    assert c.closed_by == "peer", "the gateway should close the hung connection: %s" % c
    r2 = cl.get("/bytes/2048")
    assert_ok(r2, 2048)
    assert r2.num_connects == 0
    m = gw.wait_idle()
    assert m["upstream_timeouts"] >= 1, m


def test_upstream_stalls_mid_body_stream_reset(gateway, upstream, h3):
    gw = gateway({"upstream": {"response_timeout": "1s"}})
    cl = h3(gw)
    before = gw.metrics()
    t0 = time.monotonic()
    r = cl.get("/malformed/stall-mid-body", timeout=20)
    assert time.monotonic() - t0 < 6 * SLOW
    assert r.status in (0, 200)
    assert_reset(r, 4 * MID)
    r2 = cl.get("/bytes/2048")
    assert_ok(r2, 2048)
    assert r2.num_connects == 0
    m = gw.wait_idle()
    assert m["h3_streams_reset_by_gateway"] - before["h3_streams_reset_by_gateway"] >= 1, m


# ---- malformed responses ----------------------------------------------------

@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_malformed_before_head_502(failing, h3, kind):
    gw, up = failing
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10?warm"), 10)
    before = gw.metrics()
    t0 = time.monotonic()
    r = cl.get("/malformed/%s" % kind, timeout=20)
    took = time.monotonic() - t0
    assert r.error is None, r
    assert r.status == 502, "malformed upstream response '%s': client got %s" % (kind, r)
    assert took < 5 * SLOW, "the gateway took %.1fs to notice" % took
    # Next request on the same QUIC connection.
    r2 = cl.get("/bytes/%d" % (3 * KiB))
    assert_ok(r2, 3 * KiB)
    assert r2.num_connects == 0, "the failure cost the QUIC connection"
    m = gw.wait_idle()
    assert m["responses_generated"] - before["responses_generated"] == 1, m
    if not kind.startswith("close-"):
        assert (m["upstream_malformed_responses"]
                - before["upstream_malformed_responses"]) == 1, m


@pytest.mark.parametrize("kind", [k for k in BODY_KINDS if k != "stall-mid-body"])
def test_broken_mid_body_resets_stream(failing, h3, kind):
    gw, up = failing
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10?warm"), 10)
    before = gw.metrics()
    t0 = time.monotonic()
    r = cl.get("/malformed/%s" % kind, timeout=20)
    assert time.monotonic() - t0 < 5 * SLOW
    assert r.status in (0, 200), r
    assert_reset(r, 4 * MID)
    r2 = cl.get("/bytes/%d" % (5 * KiB))
    assert_ok(r2, 5 * KiB)
    assert r2.num_connects == 0, "the failure cost the QUIC connection"
    m = gw.wait_idle()
    assert m["h3_streams_reset_by_gateway"] - before["h3_streams_reset_by_gateway"] == 1, m


def test_bad_upstream_conns_are_not_reused(failing, h3):
    """After a malformed response the upstream connection is discarded: the
    upstream (which keeps its side open) sees it closed, and sees no further
    request on it (assert_clean at teardown checks that)."""
    gw, up = failing
    cl = h3(gw)
    for kind in ("bad-status-line", "bad-chunk-mid", "cl-te"):
        r = cl.get("/malformed/%s" % kind, timeout=20)
        assert r.status == 502 or r.error is not None, r
        req = up.last_request("/malformed/%s" % kind)
        c = up.wait_conn_closed(req.conn_id)
        assert c.closed_by == "peer", c
        assert c.requests == req.index + 1, "a request followed on a broken conn: %s" % c


def test_good_stream_unaffected_by_failing_neighbours(failing):
    gw, up = failing
    with H3Multi(gw) as m:
        check_failing_neighbours(m)


# ---- the client gives up ----------------------------------------------------

def test_client_cancels_download(gateway, upstream, h3):
    gw = gateway()
    cl = h3(gw)
    before = gw.metrics()
    r = cl.get("/bytes/%d" % (100 * MiB), abort_after=1 * MiB, timeout=30)
    assert r.error is not None and r.error[0] == 23, r   # CURLE_WRITE_ERROR
    req = upstream.last_request("/bytes/")
    # libcurl sends its STOP_SENDING only when the connection is next
    # driven: the next request on the same connection does that.
    r2 = cl.get("/bytes/%d" % (64 * KiB))
    assert_ok(r2, 64 * KiB)
    assert r2.num_connects == 0
    # The upstream connection still had ~99 MiB to send: it cannot be
    # reused, so the gateway closes it rather than read all that.
    c = upstream.wait_conn_closed(req.conn_id, timeout=5)
    assert c.closed_by == "peer", c
    assert upstream.last_request("/bytes/%d" % (64 * KiB)).conn_id != req.conn_id
    m = gw.wait_idle()
    assert m["h3_streams_reset_by_client"] - before["h3_streams_reset_by_client"] >= 1, m
    assert m["upstream_conns_busy"] == 0


def test_client_cancels_upload(gateway, upstream, h3):
    gw = gateway()
    cl = h3(gw)
    r = cl.post("/sink?rate=%d" % (4 * MiB), 50 * MiB, abort_upload_after=2 * MiB,
                timeout=30)
    assert r.error is not None, r
    upstream.wait_for(lambda: upstream.requests_for("/sink"), what="the upload to start")
    req = upstream.last_request("/sink")
    c = upstream.wait_conn_closed(req.conn_id, timeout=5)
    assert not req.body_complete, req
    assert c.closed_by == "peer", c
    r2 = cl.post("/echo", 10 * KiB)
    assert_ok(r2, 10 * KiB)
    gw.wait_idle()
