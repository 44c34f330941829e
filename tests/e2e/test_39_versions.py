"""QUIC versions: v1 (RFC 9000) and v2 (RFC 9369), and Version Negotiation
for anything else (RFC 9000 §6, §17.2.1).

gtlsclient picks its version with -v ("v1", "v2" or any hex number: a
version ngtcp2 does not know is sent with v1's packet layout) and, after a
Version Negotiation packet, the first of --preferred-versions the server
listed. What the gateway did is read from its counters
(quic_connections_v2, quic_version_negotiations, quic_resumptions,
quic_new_tokens_*), the raw Version Negotiation packet from a socket of our
own, and whether the client offered resumption and 0-RTT from the
client's own key log (CLIENT_EARLY_TRAFFIC_SECRET is derived only from a
resumed session).

RFC 9369 §3.3: session tickets and NEW_TOKEN tokens are specific to the
version of the connection that issued them; a server must not accept one
from another version (the client gets a full handshake, or stays
unvalidated, and still gets its answer).

Compatible version negotiation (RFC 9368): a client that starts in v1 and
offers v2 in its version_information is moved to the version [listener]
quic_versions prefers (v2 by default) during the handshake.
"""
import os
import socket
import struct
import subprocess

import pytest

from conftest import GTLSCLIENT, SLOW, expected_sha256, sha256_file

pytestmark = pytest.mark.usefixtures("need_gtlsclient")

V1, V2 = 0x00000001, 0x6b3343cf
UNKNOWN = 0x1a2a3a4b  # not reserved (0x?a?a?a?a), not a version anyone speaks


def fetch(gw, tmp_path, name, n=100 * 1000, extra=(), keylog=None):
    """One gtlsclient connection downloading /bytes/n; checks the body.
    keylog: the client's own key log (SSLKEYLOGFILE in its environment
    only)."""
    d = tmp_path / name
    d.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    if keylog is not None:
        env["SSLKEYLOGFILE"] = str(keylog)
    cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
           "--download=%s" % d] + list(extra) + [
               "127.0.0.1", str(gw.port), gw.url("/bytes/%d" % n)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=env, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    f = d / str(n)
    assert os.path.getsize(f) == n
    assert sha256_file(str(f)) == expected_sha256(n)
    return p


def early_secret_offered(keylog):
    return "CLIENT_EARLY_TRAFFIC_SECRET" in keylog.read_text()


# ---- the versions we speak ----------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_each_version_carries_requests(gateway, tmp_path, version):
    gw = gateway()
    fetch(gw, tmp_path, "dl", 1000 * 1000, ["-v", version])
    m = gw.metrics()
    assert m["quic_connections_accepted"] == 1, m
    assert m["quic_connections_v2"] == (1 if version == "v2" else 0), m
    assert m["quic_version_negotiations"] == 0, m
    recs = gw.wait_access(path="/bytes/1000000")
    assert recs[0]["proto"] == "h3" and recs[0]["status"] == "200"


@pytest.mark.parametrize("preferred,want_v2", [("v2", 1), ("v1", 0)])
def test_unknown_version_is_negotiated(gateway, tmp_path, preferred, want_v2):
    """A first flight in a version we do not speak gets Version Negotiation;
    the client starts again in the version it prefers of those we listed."""
    gw = gateway()
    fetch(gw, tmp_path, "dl", extra=["-v", "0x%08x" % UNKNOWN,
                                     "--preferred-versions=%s" % preferred])
    m = gw.metrics()
    assert m["quic_version_negotiations"] >= 1, m
    assert m["quic_connections_accepted"] == 1, m
    assert m["quic_connections_v2"] == want_v2, m


# ---- Version Negotiation on the wire ------------------------------------------

def long_header(version, dcid, scid, size):
    first = 0xc0 | (os.urandom(1)[0] & 0x3f)
    head = struct.pack("!BI", first, version) + bytes([len(dcid)]) + dcid + \
        bytes([len(scid)]) + scid
    return head + os.urandom(size - len(head))


def exchange(port, datagram, wait=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.settimeout(wait)
        s.sendto(datagram, ("127.0.0.1", port))
        try:
            return s.recv(65536)
        except socket.timeout:
            return None
    finally:
        s.close()


def parse_vn(pkt):
    assert pkt[0] & 0x80, "not a long header"
    version = struct.unpack("!I", pkt[1:5])[0]
    i = 5
    dcid = pkt[i + 1:i + 1 + pkt[i]]
    i += 1 + pkt[i]
    scid = pkt[i + 1:i + 1 + pkt[i]]
    i += 1 + pkt[i]
    rest = pkt[i:]
    assert len(rest) % 4 == 0 and rest, rest
    return version, dcid, scid, [struct.unpack("!I", rest[j:j + 4])[0]
                                 for j in range(0, len(rest), 4)]


@pytest.mark.parametrize("version", [UNKNOWN, 0xff00001d, 0x5a6a7a8a],
                         ids=["unknown", "draft-29", "reserved"])
def test_version_negotiation_packet(gateway, version):
    """RFC 9000 §17.2.1: version 0, the client's connection IDs swapped,
    then the versions we speak (v1 and v2) and a reserved one (§15, so that
    clients keep handling versions they do not know)."""
    gw = gateway()
    dcid, scid = os.urandom(12), os.urandom(9)
    pkt = exchange(gw.port, long_header(version, dcid, scid, 1200))
    assert pkt is not None, "no Version Negotiation for 0x%08x" % version
    v, got_dcid, got_scid, versions = parse_vn(pkt)
    assert v == 0
    assert got_dcid == scid and got_scid == dcid
    assert V1 in versions and V2 in versions, ["%08x" % x for x in versions]
    assert version not in versions
    assert any(x & 0x0f0f0f0f == 0x0a0a0a0a for x in versions), versions
    assert gw.metrics()["quic_version_negotiations"] == 1


def test_no_version_negotiation_for_small_or_vn_datagrams(gateway, h3):
    """Below 1200 bytes an unknown version gets nothing (it could not start
    a connection, and an answer would amplify spoofed traffic); a Version
    Negotiation packet sent to the server is dropped, never answered."""
    gw = gateway()
    assert exchange(gw.port, long_header(UNKNOWN, os.urandom(8), os.urandom(8), 1199),
                    wait=0.5) is None
    vn = struct.pack("!BI", 0x80, 0) + b"\x08" + os.urandom(8) + b"\x08" + \
        os.urandom(8) + struct.pack("!II", V1, V2) + os.urandom(1200 - 31)
    assert exchange(gw.port, vn, wait=0.5) is None
    m = gw.metrics()
    assert m["quic_version_negotiations"] == 0, m
    assert m["quic_connections_accepted"] == 0, m
    r = h3(gw).get("/bytes/10")
    assert r.error is None and r.status == 200


# ---- tickets and tokens are version-specific (RFC 9369 §3.3) ------------------

@pytest.mark.parametrize("issued,used", [("v1", "v2"), ("v2", "v1")])
def test_ticket_is_version_specific(gateway, tmp_path, issued, used):
    gw = gateway()
    sess, tp = tmp_path / "session.pem", tmp_path / "tp.pem"
    keep = ["--session-file=%s" % sess, "--tp-file=%s" % tp, "--wait-for-ticket"]
    fetch(gw, tmp_path, "first", extra=["-v", issued] + keep)
    assert sess.exists(), "gtlsclient saved no ticket"
    # Control: a ticket resumes (with 0-RTT) a connection of its version.
    fetch(gw, tmp_path, "second", extra=["-v", issued] + keep)
    m = gw.metrics()
    assert m["quic_resumptions"] == 1 and m["quic_early_data_accepted"] == 1, m
    # The client offers it (and 0-RTT) in the other version: full handshake,
    # no early data taken, the request still answered.
    log = tmp_path / "other.keys"
    fetch(gw, tmp_path, "third", extra=["-v", used] + keep, keylog=log)
    assert early_secret_offered(log), "the client did not offer its ticket"
    m = gw.metrics()
    assert m["quic_connections_v2"] == (1 if used == "v2" else 2), m
    assert m["quic_resumptions"] == 1, m
    assert m["quic_early_data_accepted"] == 1, m


def test_new_token_is_version_specific(gateway, tmp_path):
    gw = gateway({"listener": {"retry": "always"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", extra=["-v", "v1", "--token-file=%s" % tok])
    assert tok.exists(), "gtlsclient saved no NEW_TOKEN token"
    saved = tok.read_bytes()
    fetch(gw, tmp_path, "second", extra=["-v", "v2", "--token-file=%s" % tok])
    m = gw.metrics()
    assert m["quic_new_tokens_rejected"] == 1, m
    assert m["quic_new_tokens_accepted"] == 0, m
    assert m["quic_retries_sent"] == 2, "a v1 token in v2 counts as none: %s" % m
    # Control: the v1 token validates a v1 connection.
    tok.write_bytes(saved)
    fetch(gw, tmp_path, "third", extra=["-v", "v1", "--token-file=%s" % tok])
    m = gw.metrics()
    assert m["quic_new_tokens_accepted"] == 1, m
    assert m["quic_retries_sent"] == 2, m


# ---- compatible version negotiation (RFC 9368) --------------------------------

# A client whose first flight is v1 and whose version_information offers v1
# and v2 (gtlsclient's available versions; without them it offers only the
# version it starts in), in either order of the client's preference. The
# gateway chooses by its own order ([listener] quic_versions), whatever the
# client's.
V1_OFFERING_V2 = ["-v", "v1", "--available-versions=v1,v2"]
OFFERS = {"offer-v1-v2": V1_OFFERING_V2,
          "offer-v2-v1": ["-v", "v1", "--available-versions=v2,v1"]}


@pytest.mark.parametrize("offer", sorted(OFFERS))
@pytest.mark.parametrize("quic_versions, want_v2", [
    (None, 1), ("v2, v1", 1), ("v1, v2", 0), ("v1", 0)],
    ids=["default", "v2-first", "v1-first", "v1-only"])
def test_compatible_negotiation_follows_quic_versions(gateway, tmp_path,
                                                      quic_versions, want_v2,
                                                      offer):
    """A client that starts in v1 and offers v2 is moved to v2 during the
    handshake (no Version Negotiation, no extra round trip) when
    [listener] quic_versions prefers it, as by default; it stays in v1 when
    v1 is preferred or v2 not served."""
    gw = gateway({"listener": {"quic_versions": quic_versions}})
    fetch(gw, tmp_path, "dl", 1000 * 1000, OFFERS[offer])
    m = gw.metrics()
    assert m["quic_connections_accepted"] == 1, m
    assert m["quic_connections_v2"] == want_v2, m
    assert m["quic_version_negotiations"] == 0, m
    # A client that offers nothing else keeps its version, whatever we prefer.
    fetch(gw, tmp_path, "v1", extra=["-v", "v1"])
    assert gw.metrics()["quic_connections_v2"] == want_v2


def test_v1_only_refuses_v2_with_version_negotiation(gateway, tmp_path):
    """quic_versions = v1: a v2 first flight gets Version Negotiation listing
    v1 alone; the client starts again in v1."""
    gw = gateway({"listener": {"quic_versions": "v1"}})
    dcid, scid = os.urandom(12), os.urandom(9)
    pkt = exchange(gw.port, long_header(V2, dcid, scid, 1200))
    assert pkt is not None, "no Version Negotiation for v2"
    _, _, _, versions = parse_vn(pkt)
    assert V1 in versions and V2 not in versions, ["%08x" % x for x in versions]
    fetch(gw, tmp_path, "dl", extra=["-v", "v2", "--preferred-versions=v2,v1"])
    m = gw.metrics()
    assert m["quic_version_negotiations"] == 2, m
    assert m["quic_connections_accepted"] == 1, m
    assert m["quic_connections_v2"] == 0, m


def test_ticket_after_compatible_negotiation(gateway, tmp_path):
    """A ticket from a connection moved from v1 to v2 is a v2 ticket: it
    resumes (with 0-RTT) the next connection that ends up in v2, whichever
    version it starts in, and not one that stays in v1."""
    gw = gateway()
    sess, tp = tmp_path / "session.pem", tmp_path / "tp.pem"
    keep = ["--session-file=%s" % sess, "--tp-file=%s" % tp, "--wait-for-ticket"]
    fetch(gw, tmp_path, "first", extra=V1_OFFERING_V2 + keep)
    assert sess.exists(), "gtlsclient saved no ticket"
    saved = sess.read_bytes(), tp.read_bytes()
    fetch(gw, tmp_path, "again", extra=V1_OFFERING_V2 + keep)
    m = gw.metrics()
    assert m["quic_connections_v2"] == 2, m
    assert m["quic_resumptions"] == 1 and m["quic_early_data_accepted"] == 1, m
    # Started in v1, staying in v1: the client offers the ticket and 0-RTT,
    # gets a full handshake, and its answer.
    sess.write_bytes(saved[0])
    tp.write_bytes(saved[1])
    log = tmp_path / "v1.keys"
    fetch(gw, tmp_path, "v1", extra=["-v", "v1"] + keep, keylog=log)
    assert early_secret_offered(log), "the client did not offer its ticket"
    m = gw.metrics()
    assert m["quic_connections_v2"] == 2, m
    assert m["quic_resumptions"] == 1 and m["quic_early_data_accepted"] == 1, m


def test_new_token_after_compatible_negotiation(gateway, tmp_path):
    """A NEW_TOKEN token is checked in the next connection's first Initial,
    before any negotiation: it is bound to the version the issuing
    connection started in. A client that starts in v1 again (and is moved
    to v2 again) skips the Retry."""
    gw = gateway({"listener": {"retry": "always"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", extra=V1_OFFERING_V2 + ["--token-file=%s" % tok])
    assert tok.exists(), "gtlsclient saved no NEW_TOKEN token"
    fetch(gw, tmp_path, "second", extra=V1_OFFERING_V2 + ["--token-file=%s" % tok])
    m = gw.metrics()
    assert m["quic_connections_v2"] == 2, m
    assert m["quic_new_tokens_accepted"] == 1, m
    assert m["quic_retries_sent"] == 1, m
