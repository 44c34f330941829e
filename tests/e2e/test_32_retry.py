"""Address validation with Retry (RFC 9000 §8.1.2): stateless, encrypted,
expiring tokens; always, never, or above a number of handshakes in
progress. Real clients (libcurl's HTTP/3, ngtcp2's example client) must
follow the Retry and complete their requests."""
import os
import subprocess

import pytest

GTLSCLIENT = "/usr/bin/gtlsclient"


def test_retry_always_real_clients_follow(gateway, h3):
    gw = gateway({"listener": {"retry": "always"}})
    r = h3(gw).get("/bytes/50000")
    assert r.error is None and r.status == 200 and r.body_len == 50000, r
    m = gw.metrics()
    assert m["quic_retries_sent"] >= 1
    assert m["quic_invalid_tokens"] == 0
    assert m["quic_connections_accepted"] == 1, \
        "a Retry must not create connection state"


@pytest.mark.usefixtures("need_gtlsclient")
def test_retry_with_gtlsclient(gateway, tmp_path):
    gw = gateway({"listener": {"retry": "always"}})
    p = subprocess.run([GTLSCLIENT, "--exit-on-all-streams-close", "-q",
                        "--download=%s" % tmp_path, "127.0.0.1", str(gw.port),
                        "https://localhost:%d/bytes/1000" % gw.port],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr[-2000:]
    assert os.path.getsize(tmp_path / "1000") == 1000
    assert gw.metrics()["quic_retries_sent"] >= 1


def test_retry_never_and_auto_below_threshold(gateway, h3):
    for mode in ("never", "auto"):
        gw = gateway({"listener": {"retry": mode}})
        r = h3(gw).get("/bytes/10")
        assert r.error is None and r.status == 200, r
        assert gw.metrics()["quic_retries_sent"] == 0, mode
        gw.stop()


def test_retry_auto_above_threshold(gateway, h3):
    gw = gateway({"listener": {"retry": "auto", "retry_threshold": "0"}})
    r = h3(gw).get("/bytes/10")
    assert r.error is None and r.status == 200, r
    assert gw.metrics()["quic_retries_sent"] >= 1
