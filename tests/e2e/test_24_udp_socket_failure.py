"""The UDP socket failing at run time (issue 10 §7). When it is dead for
good (here: shut down from outside, through a duplicate taken with
pidfd_getfd, so sends fail with EPIPE and poll says hung up), HTTP/3 is
no longer served and the gateway says so: TCP responses carry
"Alt-Svc: clear" instead of advertising h3, QUIC connections in flight are
dropped (their upstream connections closed), /health answers 200
"degraded" (the TCP fallback still serves: a load balancer must keep
sending it TCP) and /health/quic 503 with the reason. A one-off socket
error (an administrator's "ss -K", SOCK_DESTROY) is not a failure: the
listener keeps reading and serving."""

import threading

from conftest import (KiB, MiB, client_for, expected_sha256, h3_request_with,
                      pycurl)
from testenv.require import require
from testenv.sockfault import FaultUnavailable, destroy_socket, shutdown_socket


def alt_svc_of(gw, proto):
    cl = client_for(proto, gw)
    try:
        r = cl.get("/bytes/10")
    finally:
        cl.close()
    assert r.error is None and r.status == 200, (proto, r)
    return r.header("alt-svc")


def h3_works(gw):
    cl = client_for("h3", gw)
    try:
        r = cl.get("/bytes/%d" % (64 * KiB), timeout=5, connect_timeout=2)
    finally:
        cl.close()
    return r.error is None and r.status == 200 and r.sha256 == expected_sha256(64 * KiB)


def fault(fn, *args):
    try:
        fn(*args)
    except FaultUnavailable as e:
        require(False, str(e))


def test_dead_udp_socket_withdraws_h3(gateway, upstream):
    gw = gateway.with_tcp()
    assert h3_works(gw)
    assert alt_svc_of(gw, "h2") == 'h3=":%d"; ma=86400' % gw.port
    assert gw.admin_get("/health") == (200, "ok\n")
    assert gw.admin_get("/health/quic") == (200, "ok\n")

    # An HTTP/3 download in flight when the socket dies.
    got = {}

    def stall_detector(c, t):
        # Gives up when no byte came for 3 s, instead of waiting for the
        # QUIC idle timeout: the gateway cannot even say goodbye.
        c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        c.setopt(pycurl.LOW_SPEED_TIME, 3)

    def download():
        cl = client_for("h3", gw)
        try:
            got["r"] = h3_request_with(
                cl, "/slow/%d?rate=%d" % (8 * MiB, 256 * KiB),
                setup=stall_detector, timeout=60)
        finally:
            cl.close()
    t = threading.Thread(target=download)
    t.start()
    upstream.wait_for(lambda: any(r.path.startswith("/slow/")
                                  for r in upstream.requests),
                      timeout=10, what="the HTTP/3 download to start")

    fault(shutdown_socket, gw.pid, gw.port)

    # The download's QUIC connection is given up: its upstream connection
    # is closed by the gateway, long before the 32 s the body would take.
    slow = upstream.last_request("/slow/")
    c = upstream.wait_conn_closed(slow.conn_id, timeout=15)
    assert c.closed_by == "peer", c
    t.join(70)
    assert got["r"].error is not None, got["r"]

    # TCP clients are told to forget h3, and are still served.
    for proto in ("h2", "http/1.1"):
        assert alt_svc_of(gw, proto) == "clear", proto
    assert not h3_works(gw)

    status, body = gw.admin_get("/health")
    assert status == 200 and body.startswith("degraded:"), (status, body)
    assert "Broken pipe" in body or "shut down" in body, body
    status, body = gw.admin_get("/health/quic")
    assert status == 503 and body.startswith("down:"), (status, body)

    m = gw.metrics()
    assert m["quic_socket_failed"] == 1, m
    assert m["upstream_conns_busy"] == 0, m
    assert "HTTP/3 is no longer served" in gw.stderr_text()


def test_dead_udp_socket_without_tcp_is_unhealthy(gateway, upstream):
    """With no TCP listener nothing serves any more: /health says 503."""
    gw = gateway({"tcp": {"enabled": "no"}})
    assert h3_works(gw)
    fault(shutdown_socket, gw.pid, gw.port)
    assert not h3_works(gw)
    gw.wait_metrics(lambda m: m["quic_socket_failed"] == 1,
                    what="the socket failure to be noticed")
    status, body = gw.admin_get("/health")
    assert status == 503 and body.startswith("down:"), (status, body)


def test_one_off_socket_error_keeps_serving(gateway, upstream):
    """SOCK_DESTROY ("ss -K") aborts the socket once; bound to its port,
    it still works. libuv stops watching a descriptor that reports an
    error: the listener must clear the error and watch again, not go deaf
    while it goes on advertising h3."""
    gw = gateway.with_tcp()
    assert h3_works(gw)
    fault(destroy_socket, gw.port)
    assert h3_works(gw)
    assert alt_svc_of(gw, "h2") == 'h3=":%d"; ma=86400' % gw.port
    assert gw.admin_get("/health") == (200, "ok\n")
    m = gw.metrics()
    assert m["quic_socket_errors"] >= 1 and m["quic_socket_failed"] == 0, m


def test_health_quic_off_without_quic_listener(gateway, upstream):
    gw = gateway.with_tcp({"listener": {"enabled": "no"}})
    assert alt_svc_of(gw, "h2") is None
    assert gw.admin_get("/health") == (200, "ok\n")
    assert gw.admin_get("/health/quic") == (503, "off: no QUIC listener\n")
