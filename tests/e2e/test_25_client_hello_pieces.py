"""A ClientHello may come in CRYPTO frames cut anywhere and in any order
(RFC 9000 §19.6, §7.5): the gateway hands the TLS stack the bytes in order
and the handshake goes on, however they were cut. Cuts inside the
handshake message's 4-byte header once made wolfSSL fail the handshake with
CRYPTO_ERROR 0x100 and no alert (first piece under 4 bytes, second ending
at byte 4); browsers that cut their ClientHello at random (Chromium's
"chaos protection") then give up on HTTP/3 for the origin.

quic_initial.InitialFlood sends the pieces, one CRYPTO frame an Initial;
the outcome is what the gateway's first answer carries: CRYPTO frames
(its ServerHello) or a CONNECTION_CLOSE."""
import pytest

from conftest import SLOW

try:
    from quic_initial import InitialFlood, outcomes
except ImportError:  # pragma: no cover - Debian's python3-cryptography
    InitialFlood = None

pytestmark = pytest.mark.usefixtures("need_cryptography")


CASES = [
    ((2, 4), None), ((1, 4), None), ((3, 4), None), ((1, 2, 3, 4, 5), None),
    ((2,), None), ((4,), None), ((2, 3), None), ((100, 700), None),
    # Out of order after the first (a client's first Initial starts its
    # ClientHello): the rest of the message before the header's end.
    ((2, 4), (0, 2, 1)), ((1, 4, 60), (0, 3, 2, 1)),
]


def test_client_hello_in_pieces_completes_the_handshake(gateway):
    """Each way of cutting, its own connection, one gateway: every one gets
    the gateway's ServerHello."""
    gw = gateway({"listener": {"retry": "never"}})
    got = {}
    with InitialFlood(gw.port) as f:
        for cuts, order in CASES:
            a = f.start_in_pieces(cuts, order)
            f.collect([a], timeout=3 * SLOW)
            got[(cuts, order)] = outcomes([a])
    bad = {k: v for k, v in got.items() if v != {"handshake": 1}}
    assert not bad, bad
    m = gw.metrics()
    assert m["quic_connections_accepted"] >= len(CASES), m
