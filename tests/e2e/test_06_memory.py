"""Backpressure: a 100 MiB body passes between a fast side and a slow side
while the gateway's peak RSS (VmHWM) stays under 64 MiB. Each test starts its
own gateway, because VmHWM is the peak over the process's whole life."""

import pytest

from conftest import SANITIZE, MiB, expected_sha256

RSS_LIMIT_KIB = 64 * 1024
BIG = 100 * MiB
RATE = 32 * MiB    # ~3 s per 100 MiB


def check_rss(gw, what):
    peak = gw.rss_peak_kib()
    if SANITIZE:
        pytest.skip("%s: RSS limit not checked in the sanitizer build (ASan's shadow "
                    "memory and quarantine inflate RSS); peak was %d KiB" % (what, peak))
    assert peak < RSS_LIMIT_KIB, "%s: h3gate peak RSS %d KiB >= %d KiB" % (
        what, peak, RSS_LIMIT_KIB)


def test_slow_client_download_bounded_memory(gateway, upstream, h3):
    gw = gateway()
    r = h3(gw).get("/bytes/%d" % BIG, pace=RATE, timeout=90)
    assert r.error is None and r.status == 200, r
    assert r.body_len == BIG and r.sha256 == expected_sha256(BIG)
    assert r.time_total >= BIG / RATE * 0.8, "the client did not read slowly"
    m = gw.wait_idle()
    assert m["upstream_read_pauses"] > 0, (
        "the client read slower than the upstream sent, yet the gateway never "
        "paused its upstream reads: %s" % m)
    check_rss(gw, "slow reader, 100 MiB download")


def test_slow_upstream_upload_bounded_memory(gateway, upstream, h3):
    gw = gateway()
    r = h3(gw).post("/sink?rate=%d" % RATE, BIG, timeout=90)
    assert r.error is None and r.status == 200, r
    j = r.json()
    assert j["len"] == BIG and j["sha256"] == expected_sha256(BIG), j
    req = upstream.last_request("/sink")
    assert req.body_complete and req.body_len == BIG
    gw.wait_idle()
    check_rss(gw, "slow upstream reader, 100 MiB upload")


def test_several_slow_clients_bounded_memory(gateway, upstream):
    """Four slow readers at once: memory grows with streams x buffer, not
    with body size."""
    from conftest import H3Multi
    gw = gateway()
    n = 25 * MiB
    with H3Multi(gw) as m:
        rs = m.run([{"path": "/bytes/%d?k=%d" % (n, k), "pace": RATE // 4}
                    for k in range(4)], timeout=90)
    for r in rs:
        assert r.error is None and r.status == 200, r
        assert r.body_len == n and r.sha256 == expected_sha256(n)
    gw.wait_idle()
    check_rss(gw, "four slow readers, 25 MiB each")
