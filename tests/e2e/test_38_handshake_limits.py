"""Limits on handshakes in progress (RFC 9000 §8.1): per client source
([listener] max_handshakes_per_source: an IPv4 address or IPv6 /64) and
for clients whose address no token validated (max_unvalidated_handshakes).

quic_initial.InitialFlood plays the abuser: real client Initials (complete
ClientHellos) from 127.0.0.2 whose handshakes never finish. Real clients
(libcurl's HTTP/3) come from 127.0.0.1 and must still be served; the
abandoned handshakes must end (a short handshake_timeout) and give their
share back.
"""
import pytest

from conftest import SLOW

try:
    from quic_initial import CONNECTION_REFUSED, InitialFlood, outcomes
except ImportError:  # pragma: no cover - Debian's python3-cryptography
    InitialFlood = None

pytestmark = pytest.mark.usefixtures("need_cryptography")

ABUSER = "127.0.0.2"


def listener(**keys):
    base = {"handshake_timeout": "3s"}
    base.update({k: str(v) for k, v in keys.items()})
    return {"listener": base}


def wait_handshakes_gone(gw):
    """Every abandoned handshake timed out (3s) and was freed."""
    gw.wait_metrics(lambda m: m["quic_connections_active"] == 0, timeout=10,
                    what="abandoned handshakes to time out")


def test_per_source_cap_drops_with_retry_never(gateway, h3):
    gw = gateway(listener(retry="never", max_handshakes_per_source=4))
    with InitialFlood(gw.port, source=ABUSER) as f:
        got = f.collect(f.start(10), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 4, None: 6}, got
        m = gw.metrics()
        assert m["quic_connections_accepted"] == 4
        assert m["quic_handshakes_capped_source"] == 6
        assert m["quic_handshakes_capped_total"] == 0
        assert m["quic_retries_sent"] == 0
        assert m["quic_packets_dropped"] >= 6

        # Another source is not affected while the four are held.
        c = h3(gw)
        r = c.get("/bytes/10")
        assert r.error is None and r.status == 200, r
        c.close()

        # The abandoned handshakes end and free the source's share.
        wait_handshakes_gone(gw)
        got = f.collect(f.start(4), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 4}, got
    assert gw.metrics()["quic_handshakes_capped_source"] == 6


def test_per_source_cap_retry_then_refused_when_validated(gateway):
    # retry = auto with the default threshold (200): only the cap asks for
    # address validation.
    gw = gateway(listener(max_handshakes_per_source=4))
    with InitialFlood(gw.port, source=ABUSER) as f:
        got = f.collect(f.start(10), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 4, "retry": 6}, got
        m = gw.metrics()
        assert m["quic_retries_sent"] == 6
        assert m["quic_handshakes_capped_source"] == 6
        assert m["quic_connections_accepted"] == 4

        # The source proves its address, but is still over its cap: a
        # validated client is refused at once, not left to time out.
        retried = [a for a in got if a.outcome == "retry"]
        f.follow_retry(retried)
        f.collect(retried, timeout=3 * SLOW)
        # Six at once from one source: three refusals, then silence (a
        # source is told "refused" at most three times a second, so a client
        # that retries at once cannot make the gateway answer it in a loop).
        assert outcomes(retried) == {"close:0x%x" % CONNECTION_REFUSED: 3,
                                     None: 3}, retried
        m = gw.metrics()
        assert m["quic_handshakes_capped_source"] == 12
        assert m["quic_connections_refused"] == 6
        assert m["quic_invalid_tokens"] == 0
        assert m["quic_connections_accepted"] == 4


def test_established_connections_do_not_count(gateway, h3):
    gw = gateway(listener(retry="never", max_handshakes_per_source=1))
    # Three connections from 127.0.0.1, one after the other, all kept open.
    for _ in range(3):
        r = h3(gw).get("/bytes/10")
        assert r.error is None and r.status == 200, r
    m = gw.metrics()
    assert m["quic_connections_active"] == 3
    assert m["quic_handshakes_capped_source"] == 0
    # A handshake in progress does count.
    with InitialFlood(gw.port, source="127.0.0.1") as f:
        got = f.collect(f.start(2), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 1, None: 1}, got
    assert gw.metrics()["quic_handshakes_capped_source"] == 1


def test_default_per_source_cap_and_zero_means_no_limit(gateway):
    gw = gateway(listener(retry="never"))
    with InitialFlood(gw.port, source=ABUSER) as f:
        got = f.collect(f.start(40), timeout=3 * SLOW)
    assert outcomes(got) == {"handshake": 32, None: 8}, got
    assert gw.metrics()["quic_handshakes_capped_source"] == 8
    gw.stop()

    gw = gateway(listener(retry="never", max_handshakes_per_source=0,
                          max_unvalidated_handshakes=0))
    with InitialFlood(gw.port, source=ABUSER) as f:
        got = f.collect(f.start(40), timeout=3 * SLOW)
    assert outcomes(got) == {"handshake": 40}, got
    m = gw.metrics()
    assert m["quic_handshakes_capped_source"] == 0
    assert m["quic_handshakes_capped_total"] == 0


def test_unvalidated_cap_sends_retry_and_validated_clients_pass(gateway, h3):
    gw = gateway(listener(max_unvalidated_handshakes=3,
                          max_handshakes_per_source=0))
    with InitialFlood(gw.port, source=ABUSER) as f:
        got = f.collect(f.start(5), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 3, "retry": 2}, got
        m = gw.metrics()
        assert m["quic_handshakes_capped_total"] == 2
        assert m["quic_handshakes_capped_source"] == 0
        assert m["quic_retries_sent"] == 2

        # With the Retry token their address is validated: the cap on
        # unvalidated handshakes no longer applies.
        retried = [a for a in got if a.outcome == "retry"]
        f.follow_retry(retried)
        f.collect(retried, timeout=3 * SLOW)
        assert outcomes(retried) == {"handshake": 2}, retried
        assert gw.metrics()["quic_connections_accepted"] == 5

        # A real client meanwhile follows its Retry and is served.
        r = h3(gw).get("/bytes/10")
        assert r.error is None and r.status == 200, r
        m = gw.metrics()
        assert m["quic_handshakes_capped_total"] == 3
        assert m["quic_retries_sent"] == 3


def test_unvalidated_cap_drops_with_retry_never(gateway, h3):
    gw = gateway(listener(retry="never", max_unvalidated_handshakes=3))
    with InitialFlood(gw.port, source=ABUSER) as f:
        got = f.collect(f.start(5), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 3, None: 2}, got
        m = gw.metrics()
        assert m["quic_handshakes_capped_total"] == 2
        assert m["quic_retries_sent"] == 0
        # A real client's first Initials are dropped too, but once the
        # abandoned handshakes time out (3s) its retransmission gets in.
        r = h3(gw).get("/bytes/10", connect_timeout=15)
        assert r.error is None and r.status == 200, r
        assert gw.metrics()["quic_handshakes_capped_total"] >= 3
