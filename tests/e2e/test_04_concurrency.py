"""Concurrency: many streams on one QUIC connection, the upstream pool's size
limit and wait queue, many QUIC connections."""

import threading
import time

from conftest import SLOW, H3Multi, KiB, MiB, expected_sha256


def assert_ok(r, n):
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r


def assert_one_connection(gw, rs):
    """All of rs ran on one QUIC connection (with a report if not)."""
    if sum(r.num_connects for r in rs) == 1:
        return
    m = gw.metrics()
    raise AssertionError(
        "%d QUIC connections (gateway accepted %s, refused %s); client ports %s;\n"
        "gateway stderr tail:\n%s" % (
            sum(r.num_connects for r in rs), m["quic_connections_accepted"],
            m["quic_connections_refused"], sorted({r.local_port for r in rs}),
            "\n".join(gw.stderr_text().splitlines()[-30:])))


def test_100_concurrent_streams_on_one_connection(gateway, upstream):
    gw = gateway({"upstream": {"pool_size": "128"}, "listener": {"max_streams": "100"}})
    n = 64 * KiB
    with H3Multi(gw) as m:
        rs = m.run([{"path": "/bytes/%d?delay=400&i=%d" % (n, i)} for i in range(100)],
                   timeout=60)
    for r in rs:
        assert_ok(r, n)
    assert_one_connection(gw, rs)
    assert len(upstream.requests) == 100
    # The streams really ran at the same time: the upstream held most of
    # them at once (each waits 400 ms before answering).
    assert upstream.peak_inflight >= 90, "peak concurrency at the upstream: %d" % (
        upstream.peak_inflight)
    m = gw.wait_idle()
    assert m["quic_connections_accepted"] == 1, m
    assert m["h3_streams_opened"] == 100, m
    assert m["responses_2xx"] == 100, m


def test_pool_limit_queues_requests(gateway, upstream):
    pool = 4
    gw = gateway({"upstream": {"pool_size": str(pool), "queue_size": "64"}})
    t0 = time.monotonic()
    with H3Multi(gw) as m:
        rs = m.run([{"path": "/bytes/%d?delay=200&i=%d" % (1000 + i, i)}
                    for i in range(20)], timeout=60)
    took = time.monotonic() - t0
    for i, r in enumerate(rs):
        assert_ok(r, 1000 + i)
    assert upstream.peak_open_conns <= pool, (
        "the upstream saw %d connections at once, pool_size is %d"
        % (upstream.peak_open_conns, pool))
    assert upstream.peak_inflight <= pool
    assert upstream.accepts <= pool, upstream.conns
    # 20 requests of 200 ms through 4 connections take at least 5 rounds.
    assert took >= 0.9, "finished in %.2fs: requests were not queued" % took
    m = gw.wait_idle()
    assert m["upstream_conns_busy"] == 0 and m["upstream_queue_waiting"] == 0, m


def test_queue_full_requests_are_refused_quickly(gateway, upstream):
    """pool_size 1 and queue_size 2: of 10 simultaneous slow requests, 3 get
    through; the others are refused with 503 at once, not left waiting."""
    gw = gateway({"upstream": {"pool_size": "1", "queue_size": "2"}})
    with H3Multi(gw) as m:
        rs = m.run([{"path": "/bytes/100?delay=700&i=%d" % i} for i in range(10)],
                   timeout=30)
    ok = [r for r in rs if r.error is None and r.status == 200]
    refused = [r for r in rs if r.error is None and r.status == 503]
    assert len(ok) == 3 and len(refused) == 7, rs
    for r in ok:
        assert_ok(r, 100)
    for r in refused:
        assert r.time_total < 0.6 * SLOW + 0.3, "a refusal waited %.2fs" % r.time_total
    m = gw.wait_idle()
    assert m["upstream_queue_rejected"] == 7, m
    assert upstream.peak_open_conns == 1


def test_mixed_concurrent_transfers(gateway, upstream):
    gw = gateway()
    specs, sizes = [], []
    for i in range(24):
        n = [0, 1, 1000, 64 * KiB + 1, 1 * MiB, 4 * MiB + 3][i % 6]
        kind = ["bytes", "chunked", "close"][i % 3]
        specs.append({"path": "/%s/%d?i=%d" % (kind, n, i)})
        sizes.append(n)
    for i in range(6):
        n = [1, 1000, 1 * MiB, 3 * MiB + 5, 100 * KiB, 0][i]
        specs.append({"path": "/echo?u=%d" % i, "method": "POST", "body": n})
        sizes.append(n)
    with H3Multi(gw) as m:
        rs = m.run(specs, timeout=60)
    for r, n in zip(rs, sizes):
        assert_ok(r, n)
    assert_one_connection(gw, rs)
    for req in upstream.requests_for("/echo"):
        assert req.body_complete and req.body_sha256 == expected_sha256(req.body_len)


def test_many_quic_connections_come_and_go(gateway, upstream, h3):
    gw = gateway()
    for i in range(20):
        cl = h3(gw)
        assert_ok(cl.get("/bytes/%d" % (i * 10)), i * 10)
        assert cl.get("/bytes/1").num_connects == 0
        cl.close()
    m = gw.wait_metrics(lambda m: m["quic_connections_active"] == 0, timeout=10,
                        what="all QUIC connections closed")
    assert m["quic_connections_accepted"] == 20, m
    assert upstream.accepts == 1, "20 clients, one kept-alive upstream connection"


def test_concurrent_connections_with_concurrent_streams(gateway, upstream):
    """Four QUIC connections, each with ten streams, all at the same time."""
    gw = gateway()
    results = [None] * 4

    def client(idx):
        with H3Multi(gw) as m:
            results[idx] = m.run([{"path": "/bytes/%d?c=%d&k=%d" % (256 * KiB + k, idx, k)}
                                  for k in range(10)], timeout=30)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * SLOW)
    for batch in results:
        assert batch is not None, "a client thread did not finish"
        for k, r in enumerate(batch):
            assert_ok(r, 256 * KiB + k)
    m = gw.wait_idle()
    assert m["quic_connections_accepted"] == 4, m


def test_max_streams_is_enforced(gateway, upstream):
    """max_streams 10: a client with 30 requests queues the rest itself (the
    gateway advertised 10), so the upstream never holds more than 10."""
    gw = gateway({"listener": {"max_streams": "10"}})
    with H3Multi(gw) as m:
        rs = m.run([{"path": "/bytes/1000?delay=100&i=%d" % i} for i in range(30)],
                   timeout=30)
    for r in rs:
        assert_ok(r, 1000)
    assert_one_connection(gw, rs)
    assert upstream.peak_inflight <= 10, upstream.peak_inflight


def test_max_connections_is_enforced(gateway, upstream, h3):
    gw = gateway({"listener": {"max_connections": "2"}})
    a, b = h3(gw), h3(gw)
    assert_ok(a.get("/bytes/10"), 10)
    assert_ok(b.get("/bytes/10"), 10)
    c = h3(gw)
    r = c.get("/bytes/10", connect_timeout=3, timeout=5)
    assert r.error is not None, "a third connection was accepted: %s" % r
    assert gw.metrics()["quic_connections_refused"] >= 1
    a.close()
    gw.wait_metrics(lambda m: m["quic_connections_active"] <= 1, timeout=5,
                    what="the closed connection to go")
    assert_ok(h3(gw).get("/bytes/20"), 20)
