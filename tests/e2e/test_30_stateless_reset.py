"""Stateless Reset (RFC 9000 §10.3) for datagrams of unknown connections.

A raw UDP socket plays a peer whose connection the gateway no longer knows:
a short-header packet with a destination connection ID of the gateway's
length (18 bytes) that matches no connection.
"""
import os
import socket
import time

SCIDLEN = 18


def short_packet(dcid, payload_len):
    return bytes([0x40 | (os.urandom(1)[0] & 0x3f)]) + dcid + os.urandom(payload_len)


def exchange(port, pkt, timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(pkt, ("127.0.0.1", port))
        try:
            return s.recvfrom(2048)[0]
        except socket.timeout:
            return None
    finally:
        s.close()


def test_unknown_connection_gets_a_stateless_reset(gateway):
    gw = gateway()
    dcid = os.urandom(SCIDLEN)
    pkt = short_packet(dcid, 100)
    r1 = exchange(gw.port, pkt)
    assert r1 is not None, "no Stateless Reset for an unknown connection"
    # Looks like a short-header packet (form bit 0, fixed bit 1), never
    # larger than what caused it, at least 21 bytes (RFC 9000 §10.3).
    assert r1[0] & 0xc0 == 0x40, r1[:1].hex()
    assert 21 <= len(r1) < len(pkt), len(r1)
    # The token (last 16 bytes) is a function of the CID: the same for the
    # same CID, different for another one; the rest is random.
    r2 = exchange(gw.port, short_packet(dcid, 80))
    r3 = exchange(gw.port, short_packet(os.urandom(SCIDLEN), 80))
    assert r2 is not None and r3 is not None
    assert r1[-16:] == r2[-16:]
    assert r1[-16:] != r3[-16:]
    assert r1[:-16] != r2[:-16]
    m = gw.metrics()
    assert m["quic_stateless_resets_sent"] >= 3, m["quic_stateless_resets_sent"]


def test_reset_is_shorter_than_a_small_trigger_and_absent_for_tiny_ones(gateway):
    gw = gateway()
    # 30 bytes in: the reset must be at most 29 bytes (no reset loops).
    pkt = short_packet(os.urandom(SCIDLEN), 30 - 1 - SCIDLEN)
    r = exchange(gw.port, pkt)
    assert r is not None and len(r) == len(pkt) - 1, (len(pkt), r and len(r))
    # 22 bytes in: a reset would need 22 bytes at least -> nothing is sent.
    tiny = short_packet(os.urandom(SCIDLEN), 22 - 1 - SCIDLEN)
    assert exchange(gw.port, tiny, timeout=0.5) is None


def test_resets_are_rate_limited(gateway):
    gw = gateway()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(0.5)
    t0 = time.monotonic()
    for _ in range(1500):
        s.sendto(short_packet(os.urandom(SCIDLEN), 60), ("127.0.0.1", gw.port))
    sent_in = time.monotonic() - t0
    got = 0
    try:
        while True:
            s.recvfrom(2048)
            got += 1
    except socket.timeout:
        pass
    s.close()
    # At most 256 a second (plus one more window if the burst straddled a
    # second boundary); the burst takes well under a second here.
    windows = int(sent_in) + 2
    assert 1 <= got <= 256 * windows, (got, sent_in)


def test_real_connections_are_unaffected(gateway, h3):
    gw = gateway()
    cl = h3(gw)
    r = cl.get("/bytes/1000")
    assert r.error is None and r.status == 200 and r.body_len == 1000, r
    exchange(gw.port, short_packet(os.urandom(SCIDLEN), 100))
    r = cl.get("/bytes/1000")
    assert r.error is None and r.status == 200 and r.body_len == 1000, r
    assert r.num_connects == 0, "the reset for a stranger cost our connection"


def test_reset_tokens_come_from_the_secrets_file(gateway, tmp_path):
    """Instances sharing [listener] secrets_file answer a connection ID with
    the same token (the last 16 bytes of the reset), so a client of one
    instance (or of the process before a restart) recognises a reset sent
    by another; without the file each process has its own."""
    keys = tmp_path / "keys"
    keys.write_text("%s\n" % ("5c" * 32))
    keys.chmod(0o600)
    shared = [gateway({"listener": {"secrets_file": str(keys)}}) for _ in range(2)]
    alone = gateway()
    dcid = os.urandom(SCIDLEN)
    tokens = []
    for gw in shared + [alone]:
        r = exchange(gw.port, short_packet(dcid, 100))
        assert r is not None, gw.name
        tokens.append(r[-16:])
    assert tokens[0] == tokens[1], "instances with one secrets file disagree"
    assert tokens[2] != tokens[0], "a process without the file has its own"
    # Another connection ID, another token.
    r = exchange(shared[0].port, short_packet(os.urandom(SCIDLEN), 100))
    assert r[-16:] != tokens[0]
