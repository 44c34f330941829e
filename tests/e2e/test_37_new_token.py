"""NEW_TOKEN tokens (RFC 9000 §8.1.3): after each handshake the gateway
gives the client a token sealing its IP address and the time; a later
connection from that address presenting it is validated at once (no Retry,
not counted as unvalidated). A token that does not verify (damaged, expired,
another address) is no error: it counts as no token.

ngtcp2's gtlsclient keeps the token with --token-file. It cannot choose its
source address, so the address binding is shown with quic_initial's raw
client, which replays the saved token from 127.0.0.1 (accepted) and from
127.0.0.2 (refused).
"""
import os
import time

from conftest import SLOW, gtlsclient_download
from testenv.require import require

try:
    from quic_initial import InitialFlood, outcomes, read_token_file, write_token_file
except ImportError:  # pragma: no cover - Debian's python3-cryptography
    InitialFlood = None

TOKEN_MAGIC_REGULAR = 0x36


def fetch(gw, tmp_path, name, token_file):
    """One gtlsclient connection that reads and saves token_file."""
    p = gtlsclient_download(gw, ["/bytes/1000"], str(tmp_path / name),
                            extra=["--token-file=%s" % token_file])
    assert p.returncode == 0, p.stderr[-2000:]
    assert os.path.getsize(tmp_path / name / "1000") == 1000


def test_token_skips_retry(gateway, tmp_path):
    gw = gateway({"listener": {"retry": "always"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", tok)
    m1 = gw.metrics()
    assert m1["quic_retries_sent"] == 1
    assert m1["quic_new_tokens_sent"] == 1
    assert m1["quic_new_tokens_accepted"] == 0
    assert os.path.exists(tok), "gtlsclient saved no NEW_TOKEN token"

    fetch(gw, tmp_path, "second", tok)
    m2 = gw.metrics()
    assert m2["quic_retries_sent"] == 1, "a valid token must spare the Retry"
    assert m2["quic_new_tokens_accepted"] == 1
    assert m2["quic_new_tokens_rejected"] == 0
    assert m2["quic_connections_accepted"] == 2
    assert m2["quic_new_tokens_sent"] == 2


def test_damaged_token_is_no_token(gateway, tmp_path):
    require(InitialFlood is not None, "python3-cryptography is not installed")
    gw = gateway({"listener": {"retry": "always"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", tok)
    token = bytearray(read_token_file(tok))
    assert token[0] == TOKEN_MAGIC_REGULAR
    token[len(token) // 2] ^= 0x55
    write_token_file(tok, bytes(token))

    fetch(gw, tmp_path, "second", tok)
    m = gw.metrics()
    assert m["quic_new_tokens_rejected"] == 1
    assert m["quic_new_tokens_accepted"] == 0
    assert m["quic_retries_sent"] == 2, "a bad token means a Retry, as no token"
    assert m["quic_invalid_tokens"] == 0, "a bad NEW_TOKEN token is not INVALID_TOKEN"


def test_token_is_bound_to_the_address(gateway, tmp_path):
    require(InitialFlood is not None, "python3-cryptography is not installed")
    gw = gateway({"listener": {"retry": "always", "handshake_timeout": "2s"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", tok)
    token = read_token_file(tok)
    base = gw.metrics()

    with InitialFlood(gw.port, source="127.0.0.1") as f:
        got = f.collect(f.start(1, token=token), timeout=3 * SLOW)
    assert outcomes(got) == {"handshake": 1}, got
    m = gw.metrics()
    assert m["quic_new_tokens_accepted"] == 1
    assert m["quic_retries_sent"] == base["quic_retries_sent"]

    with InitialFlood(gw.port, source="127.0.0.2") as f:
        got = f.collect(f.start(1, token=token), timeout=3 * SLOW)
    assert outcomes(got) == {"retry": 1}, got
    m = gw.metrics()
    assert m["quic_new_tokens_rejected"] == 1
    assert m["quic_new_tokens_accepted"] == 1
    assert m["quic_retries_sent"] == base["quic_retries_sent"] + 1


def test_token_expires(gateway, tmp_path):
    require(InitialFlood is not None, "python3-cryptography is not installed")
    lifetime = 2.0
    gw = gateway({"listener": {"retry": "always", "handshake_timeout": "2s",
                               "new_token_lifetime": "%dms" % (lifetime * 1000)}})
    tok = tmp_path / "token.pem"
    issued = time.monotonic()
    fetch(gw, tmp_path, "first", tok)
    token = read_token_file(tok)
    with InitialFlood(gw.port) as f:
        got = f.collect(f.start(1, token=token), timeout=3 * SLOW)
        assert time.monotonic() - issued < lifetime, "too slow to test expiry"
        assert outcomes(got) == {"handshake": 1}, got
        time.sleep(lifetime - (time.monotonic() - issued) + 0.2)
        got = f.collect(f.start(1, token=token), timeout=3 * SLOW)
        assert outcomes(got) == {"retry": 1}, got
    m = gw.metrics()
    assert m["quic_new_tokens_accepted"] == 1
    assert m["quic_new_tokens_rejected"] == 1


def test_token_passes_the_unvalidated_cap(gateway, tmp_path):
    require(InitialFlood is not None, "python3-cryptography is not installed")
    # retry = never: with the cap full, only a token gets a client in.
    gw = gateway({"listener": {"retry": "never", "handshake_timeout": "5s",
                               "max_unvalidated_handshakes": "2"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", tok)
    with InitialFlood(gw.port, source="127.0.0.2") as f:
        got = f.collect(f.start(3), timeout=3 * SLOW)
        assert outcomes(got) == {"handshake": 2, None: 1}, got
        assert gw.metrics()["quic_handshakes_capped_total"] == 1
        fetch(gw, tmp_path, "second", tok)
    m = gw.metrics()
    assert m["quic_new_tokens_accepted"] == 1
    assert m["quic_handshakes_capped_total"] == 1
    assert m["quic_retries_sent"] == 0


def test_lifetime_zero_issues_and_accepts_none(gateway, tmp_path):
    gw = gateway({"listener": {"retry": "always", "new_token_lifetime": "0"}})
    tok = tmp_path / "token.pem"
    fetch(gw, tmp_path, "first", tok)
    m = gw.metrics()
    assert m["quic_new_tokens_sent"] == 0
    assert not os.path.exists(tok)
