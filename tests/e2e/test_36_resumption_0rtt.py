"""Session resumption and 0-RTT (RFC 9001 §4.6, RFC 8470), safe by default.

Real clients resume: ngtcp2's gtlsclient (--session-file, --tp-file) and
libcurl's HTTP/3 (its session cache, CURLSSLOPT_EARLYDATA). What happened
is read from both ends: h3gate's counters (resumptions, 0-RTT accepted,
early requests forwarded / held / retried) and the upstream's record of
which requests arrived, how often, and with which Early-Data value.

Replay: a UDP relay records the client's first flight (ClientHello and
0-RTT packets) and sends it again later from another socket, as an
attacker who captured it would. The replay resumes the session and its
0-RTT is decrypted, but its handshake can never complete: a POST in it
must never reach the upstream a second time; a GET may (that is what
Early-Data: 1 tells the upstream)."""
import io
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pycurl
import pytest

from conftest import GTLSCLIENT, H3GATE_BIN, SLOW, expected_sha256, sha256_file

pytestmark = pytest.mark.usefixtures("need_gtlsclient")

SECRET_A = "6a" * 32
SECRET_B = "b7" * 32


def write_secrets(path, *secrets):
    with open(path, "w") as f:
        f.write("# h3gate test secrets\n")
        for s in secrets:
            f.write(s + "\n")
    os.chmod(path, 0o600)
    return str(path)


def gtls(gw, paths, tmp_path, tag, port=None, extra=(), data=None, state=None):
    """One gtlsclient connection to gw (or to port: a relay) for paths, with
    the session and transport parameter files of tmp_path (so a second
    call resumes and may send 0-RTT; state: another directory for them).
    Returns (CompletedProcess, dir)."""
    state = state or tmp_path
    d = str(tmp_path / ("dl-" + tag))
    os.makedirs(d, exist_ok=True)
    cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
           "--download=%s" % d, "--session-file=%s" % (state / "session.pem"),
           "--tp-file=%s" % (state / "tp.pem"), "--wait-for-ticket"]
    if data is not None:
        cmd += ["--data=%s" % data, "--http-method=POST"]
    cmd += list(extra) + ["127.0.0.1", str(port or gw.port)]
    cmd += ["https://localhost:%d%s" % (gw.port, p) for p in paths]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=60 * SLOW)
    return p, d


def ok(p):
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]


def delta(gw, before, *keys):
    m = gw.metrics()
    return {k: m[k] - before.get(k, 0) for k in keys}


KEYS = ("quic_resumptions", "quic_early_data_accepted", "h3_early_requests",
        "h3_early_forwarded", "h3_early_held", "h3_early_retries")


# ---- resumption and 0-RTT with two real clients ---------------------------

def test_gtlsclient_0rtt_get_goes_early_with_early_data_header(gateway, upstream, tmp_path):
    gw = gateway()
    p, _ = gtls(gw, ["/headers/first"], tmp_path, "1")
    ok(p)
    m0 = gw.metrics()
    assert m0["quic_resumptions"] == 0 and m0["quic_early_data_accepted"] == 0
    p, d = gtls(gw, ["/bytes/20000"], tmp_path, "2")
    ok(p)
    assert "Early data was rejected" not in p.stderr.decode(errors="replace")
    assert sha256_file(os.path.join(d, "20000")) == expected_sha256(20000)
    got = delta(gw, m0, *KEYS)
    assert got == {"quic_resumptions": 1, "quic_early_data_accepted": 1,
                   "h3_early_requests": 1, "h3_early_forwarded": 1,
                   "h3_early_held": 0, "h3_early_retries": 0}, got
    first = upstream.requests_for("/headers/first")
    early = upstream.requests_for("/bytes/20000")
    assert len(first) == 1 and first[0].header("early-data") is None
    assert len(early) == 1 and early[0].header("early-data") == "1", early[0].headers


def test_gtlsclient_0rtt_post_waits_for_handshake(gateway, upstream, tmp_path):
    """An unsafe method sent as 0-RTT is held until the handshake completes,
    then goes upstream once, without Early-Data, and the client gets its
    normal answer (no 425)."""
    gw = gateway()
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(3000))
    ok(gtls(gw, ["/headers/warmup"], tmp_path, "1")[0])
    m0 = gw.metrics()
    p, d = gtls(gw, ["/sink/x"], tmp_path, "2", data=str(body))
    ok(p)
    got = delta(gw, m0, *KEYS)
    assert got["quic_early_data_accepted"] == 1 and got["h3_early_held"] == 1, got
    assert got["h3_early_forwarded"] == 0, got
    posts = upstream.requests_for("/sink/x")
    assert len(posts) == 1, posts
    assert posts[0].method == "POST" and posts[0].header("early-data") is None
    assert posts[0].body_len == 3000
    with open(os.path.join(d, "x"), "rb") as f:
        assert b'"len": 3000' in f.read()


def test_upstream_425_is_retried_after_handshake(gateway, upstream, tmp_path):
    """The upstream refuses early requests (425): h3gate sends the request
    again after the handshake, the client sees 200 and the right bytes."""
    gw = gateway()
    ok(gtls(gw, ["/headers/warmup"], tmp_path, "1")[0])
    m0 = gw.metrics()
    p, d = gtls(gw, ["/tooearly/5000"], tmp_path, "2")
    ok(p)
    assert sha256_file(os.path.join(d, "5000")) == expected_sha256(5000)
    got = delta(gw, m0, *KEYS)
    assert got["h3_early_forwarded"] == 1 and got["h3_early_retries"] == 1, got
    seen = upstream.requests_for("/tooearly/5000")
    assert [r.header("early-data") for r in seen] == ["1", None], seen
    line = gw.wait_access(path="/tooearly/5000")[0]
    assert line.int("status") == 200, line


def test_client_sent_early_data_header_gets_the_425(gateway, upstream, tmp_path):
    """A request that already carries Early-Data: 1 comes from an
    intermediary that retries by itself (RFC 8470 §5.2): its 425 passes
    through instead of being retried here."""
    gw = gateway()
    ok(gtls(gw, ["/headers/warmup"], tmp_path, "1")[0])
    m0 = gw.metrics()
    c = pycurl.Curl()
    buf = io.BytesIO()
    c.setopt(pycurl.URL, gw.url("/tooearly/10"))
    c.setopt(pycurl.HTTP_VERSION, 31)
    c.setopt(pycurl.CAINFO, gw.certs.ca)
    c.setopt(pycurl.IPRESOLVE, pycurl.IPRESOLVE_V4)
    c.setopt(pycurl.HTTPHEADER, ["Early-Data: 1"])
    c.setopt(pycurl.WRITEDATA, buf)
    c.perform()
    assert c.getinfo(pycurl.RESPONSE_CODE) == 425
    c.close()
    assert delta(gw, m0, "h3_early_retries")["h3_early_retries"] == 0


def test_libcurl_resumes_and_sends_0rtt(gateway, upstream):
    gw = gateway()
    c = pycurl.Curl()
    codes = []
    for i in range(3):
        buf = io.BytesIO()
        c.setopt(pycurl.URL, gw.url("/bytes/%d" % (1000 + i)))
        c.setopt(pycurl.HTTP_VERSION, 31)
        c.setopt(pycurl.CAINFO, gw.certs.ca)
        c.setopt(pycurl.IPRESOLVE, pycurl.IPRESOLVE_V4)
        c.setopt(pycurl.FRESH_CONNECT, 1)
        c.setopt(pycurl.FORBID_REUSE, 1)
        c.setopt(pycurl.SSL_OPTIONS, 64)  # CURLSSLOPT_EARLYDATA (curl >= 8.11)
        c.setopt(pycurl.WRITEDATA, buf)
        c.perform()
        codes.append(c.getinfo(pycurl.RESPONSE_CODE))
        assert len(buf.getvalue()) == 1000 + i
    c.close()
    assert codes == [200, 200, 200]
    m = gw.metrics()
    assert m["quic_connections_accepted"] == 3
    assert m["quic_resumptions"] == 2, m
    assert m["quic_early_data_accepted"] == 2, m
    marks = [upstream.requests_for("/bytes/%d" % (1000 + i))[0].header("early-data")
             for i in range(3)]
    assert marks == [None, "1", "1"], marks


def test_early_data_off(gateway, upstream, tmp_path):
    gw = gateway({"listener": {"early_data": "off"}})
    ok(gtls(gw, ["/headers/warmup"], tmp_path, "1")[0])
    p, _ = gtls(gw, ["/bytes/100"], tmp_path, "2")
    ok(p)
    m = gw.metrics()
    assert m["quic_resumptions"] == 1, "resumption still works"
    assert m["quic_early_data_accepted"] == 0 and m["h3_early_requests"] == 0
    assert upstream.requests_for("/bytes/100")[0].header("early-data") is None


def test_tcp_listener_resumes_tls(gateway):
    """The fallback listener's tickets come from the same secrets: libcurl's
    second TLS connection resumes."""
    gw = gateway()
    c = pycurl.Curl()
    for i in range(2):
        buf = io.BytesIO()
        c.setopt(pycurl.URL, gw.tcp_url("/bytes/10"))
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        c.setopt(pycurl.CAINFO, gw.certs.ca)
        c.setopt(pycurl.IPRESOLVE, pycurl.IPRESOLVE_V4)
        c.setopt(pycurl.FRESH_CONNECT, 1)
        c.setopt(pycurl.FORBID_REUSE, 1)
        c.setopt(pycurl.WRITEDATA, buf)
        c.perform()
        assert c.getinfo(pycurl.RESPONSE_CODE) == 200
    c.close()
    m = gw.metrics()
    assert m["tcp_connections_accepted"] == 2 and m["tcp_resumptions"] == 1, m


# ---- shared secrets, rotation, context binding ----------------------------

def test_secrets_file_shared_by_two_instances(gateway, upstream, tmp_path):
    """A ticket from one instance resumes (with 0-RTT) at another that reads
    the same secrets file; an instance with another secret, or the same
    secret but different limits a 0-RTT client relies on, does a full
    handshake instead."""
    same = write_secrets(tmp_path / "a.keys", SECRET_A)
    other = write_secrets(tmp_path / "b.keys", SECRET_B)
    gw1 = gateway({"listener": {"secrets_file": same}})
    gw2 = gateway({"listener": {"secrets_file": same}})
    gw3 = gateway({"listener": {"secrets_file": other}})
    gw4 = gateway({"listener": {"secrets_file": same, "max_streams": "50"}})
    ok(gtls(gw1, ["/headers/one"], tmp_path, "1")[0])
    # The session file holds gw1's ticket; connect to the others with it.
    p, _ = gtls(gw2, ["/bytes/300"], tmp_path, "2")
    ok(p)
    m2 = gw2.metrics()
    assert m2["quic_resumptions"] == 1 and m2["quic_early_data_accepted"] == 1, m2
    for gw in (gw3, gw4):
        # The newest ticket (from gw2) is sealed with secret A and gw2's
        # context: neither of these may open it.
        p, _ = gtls(gw, ["/bytes/400"], tmp_path, "3-%s" % gw.name,
                    extra=["--disable-early-data"])
        ok(p)
        m = gw.metrics()
        assert m["quic_resumptions"] == 0, (gw.name, m)
        ok(gtls(gw2, ["/headers/refresh"], tmp_path, "r-%s" % gw.name)[0])


def test_ticket_survives_one_rotation_and_file_rollover(gateway, upstream, tmp_path):
    """ticket_rotation = 3s: a ticket issued just before a period boundary
    still resumes just after it. Rolling the file over (new secret on top,
    old one kept below, SIGHUP) keeps old tickets working; dropping the old
    secret ends them."""
    keys = write_secrets(tmp_path / "k.keys", SECRET_A)
    gw = gateway({"listener": {"secrets_file": keys, "ticket_rotation": "3s"}})
    # Wait until 2.2 s into a 3 s period, take a ticket, cross the boundary.
    now = time.time()
    wait = (2.2 - now % 3) % 3
    time.sleep(wait)
    ok(gtls(gw, ["/headers/before"], tmp_path, "1")[0])
    left = 3 - time.time() % 3
    assert left < 0.8, "too slow to test the boundary (%.2f s left)" % left
    time.sleep(left + 0.2)
    ok(gtls(gw, ["/headers/after"], tmp_path, "2", extra=["--disable-early-data"])[0])
    assert gw.metrics()["quic_resumptions"] == 1

    # Rollover: the new secret first, the old one still accepted.
    write_secrets(tmp_path / "k.keys", SECRET_B, SECRET_A)
    ok(gtls(gw, ["/headers/pre-roll"], tmp_path, "3", extra=["--disable-early-data"])[0])
    old = tmp_path / "old-ticket"
    old.mkdir()
    shutil.copy(tmp_path / "session.pem", old)
    shutil.copy(tmp_path / "tp.pem", old)
    gw.proc.send_signal(signal.SIGHUP)  # not send_signal(): that means "stopping"
    gw.wait_log("reloaded (2 secrets)")
    ok(gtls(gw, ["/headers/roll"], tmp_path, "4", extra=["--disable-early-data"])[0])
    assert gw.metrics()["quic_resumptions"] == 3
    # That connection got a ticket under the new secret; one under the old
    # secret alone no longer opens.
    write_secrets(tmp_path / "k.keys", SECRET_B)
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_log("reloaded (1 secret")
    ok(gtls(gw, ["/headers/new"], tmp_path, "5", extra=["--disable-early-data"])[0])
    assert gw.metrics()["quic_resumptions"] == 4
    ok(gtls(gw, ["/headers/old"], tmp_path, "6", extra=["--disable-early-data"],
            state=old)[0])
    assert gw.metrics()["quic_resumptions"] == 4, "a ticket of a dropped secret"


def _reload_with(gw, **listener):
    """The gateway's file with these [listener] keys (its ports as bound),
    then a reload, waited for. Returns the metrics."""
    from test_55_reload import reload_and_wait
    gw.config["listener"].update(listener)
    gw.config["listener"]["port"] = str(gw.port)
    gw.config["server"]["admin"] = "127.0.0.1:%d" % gw.admin_port
    gw.write_config()
    return reload_and_wait(gw, ok=False)


def test_reload_to_another_secrets_file(gateway, upstream, tmp_path):
    """A reload that names another secrets file reads it at once (the
    tickets it can open follow it); one that cannot be read or parsed fails
    the reload and the file in use stays."""
    a = write_secrets(tmp_path / "a.keys", SECRET_A)
    ab = write_secrets(tmp_path / "ba.keys", SECRET_B, SECRET_A)
    b = write_secrets(tmp_path / "b.keys", SECRET_B)
    bad = tmp_path / "bad.keys"
    bad.write_text("not-a-secret\n")
    gw = gateway({"listener": {"secrets_file": a}})
    ok(gtls(gw, ["/headers/a"], tmp_path, "1")[0])
    # Two copies of the ticket sealed under A (a resumption stores the
    # new ticket where the old one was).
    old, old2 = tmp_path / "ticket-a", tmp_path / "ticket-a2"
    for d in (old, old2):
        d.mkdir()
        shutil.copy(tmp_path / "session.pem", d)
        shutil.copy(tmp_path / "tp.pem", d)

    # B first, A still accepted: the ticket sealed under A resumes.
    m = _reload_with(gw, secrets_file=ab)
    assert m["reloads"] == 1 and m["reload_failures"] == 0, m
    gw.wait_log("secrets_file %s in use (2 secrets)" % ab)
    ok(gtls(gw, ["/headers/ba"], tmp_path, "2", extra=["--disable-early-data"])[0])
    assert gw.metrics()["quic_resumptions"] == 1

    # A file that does not parse: the reload fails, B+A stay in use.
    m = _reload_with(gw, secrets_file=str(bad))
    assert m["reload_failures"] == 1 and m["reloads"] == 1, m
    gw.wait_log("[listener] secrets_file: line 1: not a secret")
    ok(gtls(gw, ["/headers/still"], tmp_path, "3", extra=["--disable-early-data"],
            state=old)[0])
    assert gw.metrics()["quic_resumptions"] == 2

    # B alone: a ticket sealed under A alone no longer opens; B's do.
    m = _reload_with(gw, secrets_file=b)
    assert m["reloads"] == 2, m
    gw.wait_log("secrets_file %s in use (1 secret" % b)
    ok(gtls(gw, ["/headers/b-old"], tmp_path, "4", extra=["--disable-early-data"],
            state=old2)[0])
    assert gw.metrics()["quic_resumptions"] == 2, "a ticket of a secret no longer in the file"
    ok(gtls(gw, ["/headers/b-new"], tmp_path, "5", extra=["--disable-early-data"])[0])
    assert gw.metrics()["quic_resumptions"] == 3


def test_bad_secrets_file_is_a_config_error(gateway, tmp_path):
    bad = tmp_path / "bad.keys"
    bad.write_text("not-a-secret\n")
    gw = gateway({"listener": {"secrets_file": str(bad)}}, start=False)
    p = subprocess.run([H3GATE_BIN,
                        "--check-config", gw.config_path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p
    assert "[listener] secrets_file: line 1: not a secret" in p.stderr, p.stderr


# ---- replay -----------------------------------------------------------------

class Relay:
    """A UDP relay between one client and the gateway that records the
    datagrams the client sent before the gateway's first answer."""

    def __init__(self, gw_port):
        self.gw = ("127.0.0.1", gw_port)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.first_flight = []
        self.answered = False
        self.client = None
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            r, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in r:
                data, self.client = self.front.recvfrom(65536)
                if not self.answered:
                    self.first_flight.append(data)
                self.back.sendto(data, self.gw)
            if self.back in r:
                data, _ = self.back.recvfrom(65536)
                self.answered = True
                if self.client:
                    self.front.sendto(data, self.client)

    def close(self):
        self.stop.set()
        self.t.join(2)
        self.front.close()
        self.back.close()

    def replay(self, settle=0.5):
        """Sends the first flight again from a new socket; returns how many
        datagrams came back."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        for d in self.first_flight:
            s.sendto(d, self.gw)
        s.settimeout(settle)
        n = 0
        try:
            while True:
                s.recvfrom(65536)
                n += 1
        except socket.timeout:
            pass
        s.close()
        return n


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_replayed_0rtt(gateway, upstream, tmp_path, method):
    gw = gateway({"listener": {"handshake_timeout": "1s"}})
    ok(gtls(gw, ["/headers/warmup"], tmp_path, "1")[0])
    relay = Relay(gw.port)
    try:
        data = None
        if method == "POST":
            data = tmp_path / "body.bin"
            data.write_bytes(b"pay once\n" * 100)
            data = str(data)
        p, _ = gtls(gw, ["/sink/replay" if data else "/headers/replay"], tmp_path,
                    "2", port=relay.port, data=data)
        ok(p)
        assert relay.first_flight, "nothing recorded"
        m0 = gw.metrics()
        assert m0["quic_early_data_accepted"] == 1
        gw.wait_metrics(lambda m: m["quic_connections_active"] == 0, timeout=10,
                        what="the original connection to end")
        answers = relay.replay()
    finally:
        relay.close()
    assert answers > 0, "the gateway ignored the replay"
    # The replay resumed the session and its 0-RTT was decrypted...
    gw.wait_metrics(lambda m: m["quic_early_data_accepted"] == 2 or
                    m["h3_early_requests"] == 2, timeout=5,
                    what="the replayed 0-RTT to be read")
    # ...but its handshake never completes: the connection expires.
    gw.wait_metrics(lambda m: m["quic_connections_active"] == 0, timeout=10,
                    what="the replayed connection to expire")
    m = gw.metrics()
    path = "/sink/replay" if method == "POST" else "/headers/replay"
    seen = upstream.requests_for(path)
    if method == "POST":
        assert m["h3_early_held"] == 2, m
        assert len(seen) == 1, "a replayed POST reached the upstream"
        assert seen[0].header("early-data") is None
    else:
        assert m["h3_early_forwarded"] == 2, m
        # A replayed safe request may arrive again, marked as early.
        assert 1 <= len(seen) <= 2
        assert all(r.header("early-data") == "1" for r in seen)
