"""Connection migration (RFC 9000 §9): the client moves to a new UDP port
mid-transfer and the connection carries on, validated by PATH_CHALLENGE and
PATH_RESPONSE. ngtcp2's gtlsclient is the client: --change-local-addr opens
a new socket and migrates to it (with one of the spare connection IDs the
gateway issued); with --nat-rebinding it just starts sending from the new
socket with the same connection ID, as if a NAT had changed its mapping.

Asserted on what the gateway says it did (quic_migrations,
quic_path_validations_*), on its qlog (our PATH_CHALLENGE came back in the
client's PATH_RESPONSE), and on the transfer: byte-exact, one request at
the upstream and in the access log.

gtlsclient 1.11's --nat-rebinding only swaps its socket: it drops what still
arrives on the old one and says nothing from the new one until it has
something to send. In a download it sends only ACKs, which it has none to
send once it drops the packets, so it idles out, whatever the server (the
client log shows "ignore packet from unknown path" and no timer but the
idle one). A full-speed download from ngtcp2's own gtlsserver does survive,
thanks to window updates in flight at the moment of rebinding, but that is
luck. An upload keeps the client sending, so the NAT rebinding test
uploads.
"""
import glob
import hashlib
import json
import os
import subprocess

import pytest

from conftest import (GTLSCLIENT, MiB, SLOW, expected_sha256, sha256_file,
                      uid)

pytestmark = pytest.mark.usefixtures("need_gtlsclient")


def gtlsclient(gw, urls, download, extra=(), timeout=60):
    os.makedirs(download, exist_ok=True)
    cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
           "--download=%s" % download] + list(extra) + [
               "127.0.0.1", str(gw.port)] + [gw.url(u) for u in urls]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout * SLOW)


def qlog_records(qdir):
    files = glob.glob(os.path.join(str(qdir), "*.sqlog"))
    assert len(files) == 1, files
    with open(files[0], "rb") as f:
        chunks = f.read().split(b"\x1e")
    return [json.loads(c) for c in chunks if c.strip()]


def frames(rec):
    return (rec.get("data") or {}).get("frames") or []


def path_frames(recs, event, kind):
    """Data of every `kind` frame in `event` records, with record indexes."""
    return [(i, fr.get("data")) for i, r in enumerate(recs)
            if r.get("name") == event
            for fr in frames(r) if fr.get("frame_type") == kind]


def assert_path_validated(recs):
    """Our PATH_CHALLENGE was echoed by a PATH_RESPONSE from the client."""
    sent = {d for _, d in path_frames(recs, "transport:packet_sent", "path_challenge")}
    echoed = {d for _, d in path_frames(recs, "transport:packet_received",
                                         "path_response")}
    assert sent, "no PATH_CHALLENGE sent"
    assert sent & echoed, "no PATH_RESPONSE matched a PATH_CHALLENGE: %s / %s" % (
        sent, echoed)
    return min(i for i, d in path_frames(recs, "transport:packet_sent",
                                         "path_challenge"))


def assert_migrated_once(gw):
    m = gw.wait_metrics(lambda m: m["quic_migrations"] >= 1, what="a migration")
    assert m["quic_path_validations_succeeded"] >= 1, m
    assert m["quic_path_validations_failed"] == 0, m
    assert m["quic_connections_accepted"] == 1, "the client reconnected: %s" % m
    return m


def one_request(gw, upstream, target):
    """target went to the upstream once and is logged once, as h3 200."""
    upstream.wait_request_done(target)
    assert len(upstream.requests_for(target)) == 1
    recs = gw.wait_access(path=target)
    assert len([r for r in gw.access_log() if r.get("path") == target]) == 1
    assert recs[0]["proto"] == "h3" and recs[0]["status"] == "200", recs[0].raw
    return recs[0]


def test_migration_mid_download(gateway, upstream, tmp_path):
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    gw = gateway({"debug": {"qlog_dir": str(qdir)}})
    n = 2 * MiB
    target = "/slow/%d?rate=%d&id=%s" % (n, 4 * MiB, uid())
    d = str(tmp_path / "dl")
    p = gtlsclient(gw, [target], d, ["--change-local-addr=50ms"])
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    f = os.path.join(d, target.rsplit("/", 1)[1])
    assert os.path.getsize(f) == n
    assert sha256_file(f) == expected_sha256(n)

    assert_migrated_once(gw)
    one_request(gw, upstream, target)
    gw.stop()
    assert_path_validated(qlog_records(qdir))


def test_nat_rebinding_mid_upload(gateway, upstream, tmp_path):
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    gw = gateway({"debug": {"qlog_dir": str(qdir)}})
    body = tmp_path / "upload.bin"
    # Big enough that the upload is still running 10 ms in.
    data = os.urandom(32 * MiB)
    body.write_bytes(data)
    target = "/sink?id=%s" % uid()
    d = str(tmp_path / "dl")
    p = gtlsclient(gw, [target], d, ["--data=%s" % body, "-m", "POST",
                                     "--change-local-addr=10ms", "--nat-rebinding"])
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    with open(os.path.join(d, target.rsplit("/", 1)[1])) as f:
        got = json.load(f)
    assert got["len"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()

    assert_migrated_once(gw)
    rec = one_request(gw, upstream, target)
    assert rec.int("in") == len(data), rec.raw
    gw.stop()
    assert_path_validated(qlog_records(qdir))


def test_second_request_after_migration(gateway, upstream, tmp_path):
    """With one stream at a time, the client's second request can only
    start once the first is done, well after it migrated: it is served on
    the new path, by the same connection."""
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    gw = gateway({"listener": {"max_streams": "1"},
                  "debug": {"qlog_dir": str(qdir)}})
    first = "/slow/%d?rate=%d&id=%s" % (MiB, 4 * MiB, uid())
    second = "/bytes/%d?id=%s" % (100000, uid())
    d = str(tmp_path / "dl")
    p = gtlsclient(gw, [first, second], d, ["--change-local-addr=50ms"])
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    for target, n in ((first, MiB), (second, 100000)):
        f = os.path.join(d, target.rsplit("/", 1)[1])
        assert os.path.getsize(f) == n, target
        assert sha256_file(f) == expected_sha256(n), target

    m = assert_migrated_once(gw)
    assert m["h3_streams_opened"] == 2, m
    one_request(gw, upstream, first)
    one_request(gw, upstream, second)
    gw.stop()
    recs = qlog_records(qdir)
    challenged_at = assert_path_validated(recs)
    # Stream 4 (the second request) reaches us only after the migration.
    stream4 = [i for i, r in enumerate(recs)
               if r.get("name") == "transport:packet_received"
               for fr in frames(r)
               if fr.get("frame_type") == "stream" and fr.get("stream_id") == 4]
    assert stream4, "no frame of stream 4 received"
    assert min(stream4) > challenged_at, (min(stream4), challenged_at)
