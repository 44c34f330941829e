"""Running it like infrastructure: the /healthz and /readyz probes, the drain
that a load balancer sees first (drain_delay), a second SIGTERM that stops at
once, SIGUSR1 reopening the access log, and refusals during the drain that a
client cannot turn into a flood (CONNECTION_REFUSED a few times a second per
source, then silence)."""

import os
import signal
import threading
import time

from conftest import SLOW, H3Client, expected_sha256, refusing_address


def wait_for(pred, what, timeout=5.0):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, "%s: not within %.0fs" % (what, timeout)
        time.sleep(0.02)


def hanging_request(gw, upstream, timeout=60):
    """An HTTP/3 GET of /hang (the upstream never answers it) in a thread,
    returned once the upstream has it: (thread, out), out["r"] the result
    when the thread ends. It holds a drain open until shutdown_timeout."""
    out = {}

    def run():
        with H3Client(gw) as cl:
            out["r"] = cl.get("/hang", timeout=timeout)

    t = threading.Thread(target=run)
    t.start()
    upstream.wait_for(lambda: upstream.requests_for("/hang"), what="the hanging request")
    return t, out


def stop_at_once(gw, draining_line):
    """SIGTERM, the drain's first line, then a second SIGTERM: the gateway
    must be gone within seconds. Returns how long it took."""
    gw.send_signal(signal.SIGTERM)
    gw.wait_log(draining_line)
    t0 = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    gw.wait_log("while draining: stopping now")
    gw.stop(timeout=15)
    took = time.monotonic() - t0
    assert took < 5 * SLOW, took
    return took


def test_healthz_and_readyz(gateway):
    gw = gateway()
    assert gw.admin_get("/healthz") == (200, "ok\n")
    assert gw.admin_get("/readyz") == (200, "ready\n")


def test_readyz_not_ready_while_a_group_has_no_server(gateway, tmp_path):
    """A group whose only server fails its active health check makes the
    gateway not ready (a load balancer should send nobody here), while
    liveness stays 200: restarting the gateway would not help."""
    gw = gateway({"upstream": {"server": refusing_address(),
                               "health_check": "GET /up",
                               "health_interval": "100ms",
                               "health_fall": "1"}})
    status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
        gw.admin_get("/readyz")), "/readyz 503")
    assert body.startswith("not ready: [upstream] has no server in service") or \
        body.startswith("not ready: [upstream default] has no server in service"), body
    assert gw.admin_get("/healthz")[0] == 200


def test_a_port_in_use_stops_the_start_with_exit_1(gateway):
    """The UDP port is taken: exit 1, the log says which bind failed and
    that the start failed, and no word of a drain (nothing was served)."""
    import socket
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        gw = gateway({"listener": {"port": str(taken.getsockname()[1])}}, start=False)
        gw.start(wait=False)
        assert gw.proc.wait(15 * SLOW) == 1
        err = gw.stderr_text()
        assert "udp: bind 127.0.0.1 port %d: Address already in use"\
            % taken.getsockname()[1] in err, err
        assert "start-up failed: stopping" in err, err
        assert "draining" not in err and " ready: " not in err, err
    finally:
        taken.close()


def test_drain_delay_serves_while_not_ready(gateway, upstream):
    """SIGTERM with drain_delay: /readyz says 503 at once, yet new
    connections and requests are served for the delay; then the drain, and
    exit 0."""
    gw = gateway({"server": {"drain_delay": "2s"}})
    gw.send_signal(signal.SIGTERM)
    wait_for(lambda: gw.admin_get("/readyz")[0] == 503, "/readyz 503 after SIGTERM")
    assert gw.admin_get("/readyz")[1] == "draining\n"
    gw.wait_log("draining: not ready, still serving for 2000 ms")
    with H3Client(gw) as cl:
        r = cl.get("/bytes/1000", timeout=5)
    assert r.error is None and r.status == 200 and r.sha256 == expected_sha256(1000), r
    took = gw.stop(timeout=15)
    assert took < 10 * SLOW


def test_second_sigterm_stops_at_once(gateway, upstream):
    """A request that would hold the drain for 60 s: the second SIGTERM
    ends it now, and the gateway exits 0."""
    gw = gateway({"server": {"shutdown_timeout": "60s"}})
    t, result = hanging_request(gw, upstream)
    stop_at_once(gw, "shutting down: draining for up to 60000 ms")
    t.join(30 * SLOW)
    r = result["r"]
    assert r.error is not None or r.status >= 500, r
    recs = [rec for rec in gw.access_log() if rec.get("path") == "/hang"]
    assert recs and recs[-1].get("outcome") == "shutdown", recs


def test_sigusr1_reopens_the_access_log(gateway, tmp_path):
    """logrotate moves the file away and sends SIGUSR1: new lines go to a
    new file of the configured name, the old one keeps the old lines.
    (Markers with their "?": lines also say first_byte_ms.)"""
    path = str(tmp_path / "access.log")
    gw = gateway({"server": {"access_log": path}})
    with H3Client(gw) as cl:
        assert cl.get("/bytes/1?first").status == 200
    wait_for(lambda: os.path.exists(path) and "?first" in open(path).read(),
             "the first line")
    os.rename(path, path + ".1")
    gw.send_signal(signal.SIGUSR1)
    gw.signalled = False          # the gateway goes on running
    gw.wait_log("access log reopened")
    with H3Client(gw) as cl:
        assert cl.get("/bytes/1?second").status == 200
    wait_for(lambda: os.path.exists(path) and "?second" in open(path).read(),
             "the line after the reopen")
    assert "?second" not in open(path + ".1").read()
    assert "?first" not in open(path).read()


def test_http1_keep_alive_is_told_to_close_by_the_drain(gateway, upstream):
    """An HTTP/1.1 keep-alive connection with a request in flight when the
    drain starts: its response says `Connection: close` and the connection
    ends after it (the client goes elsewhere for the next one); no Alt-Svc
    offering h3 on it."""
    import socket
    import ssl
    from testenv.gateway import tcp_gw
    from test_20_tcp_fallback import read_response
    gw = tcp_gw(gateway, {"server": {"shutdown_timeout": "20s"}})
    ctx = ssl.create_default_context(cafile=gw.certs.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=10 * SLOW),
                        server_hostname="localhost")
    try:
        s.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, fields, body = read_response(s)
        assert status.endswith("200 OK") and fields.get("connection") != "close", fields
        assert fields.get("alt-svc", "").startswith("h3="), fields
        s.sendall(b"GET /bytes/7?delay=1500 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        upstream.wait_for(lambda: upstream.requests_for("/bytes/7"), what="the second request")
        gw.send_signal(signal.SIGTERM)
        gw.wait_log("shutting down: draining")
        status, fields, body = read_response(s)
        assert status.endswith("200 OK") and len(body) == 7, (status, fields)
        assert fields.get("connection") == "close", fields
        assert fields.get("alt-svc") == "clear", fields
        try:
            assert s.recv(100) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
    finally:
        s.close()
    assert gw.stop(timeout=15) < 10 * SLOW


def test_draining_refusals_are_bounded_per_source(gateway, upstream):
    """While draining, a source gets CONNECTION_REFUSED a few times a
    second and then no answer, so a client that retries at once cannot make
    the gateway answer it thousands of times; another source still gets its
    own refusals."""
    from quic_initial import InitialFlood, outcomes
    gw = gateway({"server": {"shutdown_timeout": "30s"},
                  "listener": {"retry": "never"}})
    t, _ = hanging_request(gw, upstream, timeout=40)
    gw.send_signal(signal.SIGTERM)
    gw.wait_log("shutting down: draining")
    with InitialFlood(gw.port, source="127.0.0.1") as f:
        got = outcomes(f.collect(f.start(10), timeout=2 * SLOW))
        # The budget is 3 a second per source, counted per second of the
        # gateway's monotonic clock (the same clock as time.monotonic, read
        # when its loop wakes): a burst that straddles a second boundary, or
        # that the loop reads in two turns across one, may use two budgets.
        first, last = f.sent_span
        seconds = int(last + 0.1) - int(first) + 1
    refused = got.get("close:0x2", 0)
    assert 1 <= refused <= 3 * seconds, (got, seconds)
    assert got.get(None, 0) >= 10 - 3 * seconds, (got, seconds)
    assert got.get("handshake", 0) == 0, got
    with InitialFlood(gw.port, source="127.0.0.3") as f:
        other = outcomes(f.collect(f.start(2), timeout=2 * SLOW))
    assert other.get("close:0x2", 0) == 2, other
    gw.send_signal(signal.SIGTERM)    # stop now
    gw.stop(timeout=10)
    t.join(45 * SLOW)


# ---- -t: the configuration and its certificates --------------------------

def _cert_files(tmp_path, name, not_after_days=30, not_before_days=-1,
                wrong_issuer=False):
    """A CA and a leaf for localhost made with python3-cryptography: the
    chain file (leaf then CA, or leaf then an unrelated CA) and the key."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def make(subject, issuer, key, sign_key, ca, nb, na):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now + datetime.timedelta(days=nb))
             .not_valid_after(now + datetime.timedelta(days=na))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                critical=False)
        return b.sign(sign_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make("t-ca", "t-ca", ca_key, ca_key, True, -2, 365)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = make("other-ca", "other-ca", other_key, other_key, True, -2, 365)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = make("localhost", "t-ca", key, ca_key, False, not_before_days, not_after_days)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    chain = tmp_path / (name + ".crt")
    chain.write_bytes(pem(leaf) + pem(other if wrong_issuer else ca))
    kf = tmp_path / (name + ".key")
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return str(chain), str(kf)


def _t(tmp_path, cert, key):
    import subprocess
    from conftest import H3GATE_BIN
    ini = tmp_path / "t.ini"
    ini.write_text("[listener]\ncert = %s\nkey = %s\n[upstream]\nserver = 127.0.0.1:9\n"
                   % (cert, key))
    p = subprocess.run([H3GATE_BIN, "-t", "-c", str(ini)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30, text=True)
    return p.returncode, p.stdout, p.stderr


def test_t_accepts_a_good_chain(tmp_path):
    rc, out, err = _t(tmp_path, *_cert_files(tmp_path, "good"))
    assert rc == 0 and out.rstrip().endswith(": ok") and "warning" not in err, (rc, out, err)


def test_t_refuses_a_key_of_another_certificate(tmp_path):
    cert, _ = _cert_files(tmp_path, "a")
    _, other_key = _cert_files(tmp_path, "b")
    rc, out, err = _t(tmp_path, cert, other_key)
    assert rc == 2 and "does not match the certificate" in err, (rc, err)


def test_t_refuses_expired_and_not_yet_valid(tmp_path):
    rc, _, err = _t(tmp_path, *_cert_files(tmp_path, "old", not_after_days=-1,
                                           not_before_days=-30))
    assert rc == 2 and "has expired" in err, (rc, err)
    rc, _, err = _t(tmp_path, *_cert_files(tmp_path, "new", not_before_days=2))
    assert rc == 2 and "not valid yet" in err, (rc, err)


def test_t_warns_within_14_days(tmp_path):
    rc, out, err = _t(tmp_path, *_cert_files(tmp_path, "soon", not_after_days=5))
    assert rc == 0 and "warning: " in err and "expires within 14 days" in err, (rc, err)


def test_t_refuses_a_chain_out_of_order(tmp_path):
    rc, _, err = _t(tmp_path, *_cert_files(tmp_path, "wrong", wrong_issuer=True))
    assert rc == 2 and "not issued by the one after it" in err, (rc, err)


def test_t_refuses_an_unreadable_key(tmp_path):
    cert, key = _cert_files(tmp_path, "perm")
    os.chmod(key, 0)
    if os.access(key, os.R_OK):     # root reads anything: take the file away
        os.unlink(key)
    rc, _, err = _t(tmp_path, cert, key)
    assert rc == 2, (rc, err)


def test_clients_give_up_on_a_draining_gateway(gateway, upstream, tmp_path):
    """Real clients against a draining gateway make a handful of attempts,
    not a loop of them: libcurl (which once made 1,479 attempts in 5 s
    against CONNECTION_REFUSED), ngtcp2's client and Chromium."""
    import subprocess
    from conftest import GTLSCLIENT
    from testenv.require import require
    gw = gateway({"server": {"shutdown_timeout": "30s"}})
    t, _ = hanging_request(gw, upstream, timeout=40)
    gw.send_signal(signal.SIGTERM)
    gw.wait_log("shutting down: draining")
    before = gw.metrics()["quic_connections_refused"]
    with H3Client(gw) as cl:
        r = cl.get("/late", connect_timeout=3, timeout=4)
    assert r.error is not None, r
    curl_attempts = gw.metrics()["quic_connections_refused"] - before
    require(os.access(GTLSCLIENT, os.X_OK), "gtlsclient is not installed")
    before = gw.metrics()["quic_connections_refused"]
    # (The example client exits 0 whatever happened: the gateway counts.)
    subprocess.run([GTLSCLIENT, "-q", "--timeout=3s", "127.0.0.1", str(gw.port),
                    gw.url("/late")], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)
    ngtcp2_attempts = gw.metrics()["quic_connections_refused"] - before
    # Chromium forced onto QUIC for the origin (no TCP to fall back to):
    # its page load fails, after a handful of attempts.
    from testenv.clients import chromium_fetch
    before = gw.metrics()["quic_connections_refused"]
    dom, _, p = chromium_fetch(gw, "/late", str(tmp_path), timeout=60)
    chromium_attempts = gw.metrics()["quic_connections_refused"] - before
    assert '"target": "/late"' not in dom and not upstream.requests_for("/late"), dom[-500:]
    print("attempts while draining: libcurl %d, gtlsclient %d, chromium %d"
          % (curl_attempts, ngtcp2_attempts, chromium_attempts))
    # Datagrams the listener refused (answered or not; a client's
    # retransmissions count too): a handful a second, where a client that
    # was answered every time looped at about 280 a second.
    assert 1 <= curl_attempts <= 100, curl_attempts
    assert 1 <= ngtcp2_attempts <= 100, ngtcp2_attempts
    assert 1 <= chromium_attempts <= 100, chromium_attempts
    gw.send_signal(signal.SIGTERM)
    gw.stop(timeout=10)
    t.join(45 * SLOW)
