"""The TLS key log ([debug] keylog_file): for debugging only, off by
default. Real clients keep key logs of their own (libcurl through GnuTLS and
ngtcp2's gtlsclient honour SSLKEYLOGFILE), so the gateway's log must hold
the very secrets the client holds: same client random, same
CLIENT_TRAFFIC_SECRET_0 (and the handshake and server secrets), for HTTP/3 and for
HTTPS over TCP alike.

The clients run in subprocesses with SSLKEYLOGFILE in their own
environment, so nothing leaks into this process (GnuTLS reads the variable
once per process) or into other tests.
"""
import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import GTLSCLIENT, H3GATE_BIN, SLOW, render_ini
from testenv.require import require

# One HTTPS request with libcurl; prints {"status": ..., "len": ...}.
CURL_SCRIPT = r"""
import json, sys, pycurl
url, port, ca, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
body = bytearray()
c = pycurl.Curl()
c.setopt(pycurl.URL, url)
c.setopt(pycurl.HTTP_VERSION, {"h3": getattr(pycurl, "CURL_HTTP_VERSION_3ONLY", 31),
                               "h1": pycurl.CURL_HTTP_VERSION_1_1}[version])
c.setopt(pycurl.CAINFO, ca)
c.setopt(pycurl.CAPATH, None)
c.setopt(pycurl.RESOLVE, ["localhost:%d:127.0.0.1" % port])
c.setopt(pycurl.TIMEOUT, 30)
c.setopt(pycurl.WRITEFUNCTION, body.extend)
c.perform()
print(json.dumps({"status": c.getinfo(pycurl.RESPONSE_CODE), "len": len(body),
                  "version": c.getinfo(pycurl.INFO_HTTP_VERSION)}))
"""

LABELS_TLS13 = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")


def client_env(keylog):
    env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    if keylog is not None:
        env["SSLKEYLOGFILE"] = str(keylog)
    return env


def curl(gw, path, version, keylog=None):
    port = gw.port if version == "h3" else gw.tcp_port
    url = "https://localhost:%d%s" % (port, path)
    p = subprocess.run([sys.executable, "-c", CURL_SCRIPT, url, str(port),
                        gw.certs.ca, version],
                       env=client_env(keylog), capture_output=True, text=True,
                       timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def gtlsclient(gw, path, download, keylog=None, extra=()):
    os.makedirs(download, exist_ok=True)
    p = subprocess.run([GTLSCLIENT, "--exit-on-all-streams-close", "-q",
                        "--download=%s" % download] + list(extra) + [
                            "127.0.0.1", str(gw.port), gw.url(path)],
                       env=client_env(keylog), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr[-2000:]


def parse_keylog(path):
    """{client random: {label: secret}}, hex in lower case."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3 or line.startswith("#"):
                continue
            label, random, secret = parts
            out.setdefault(random.lower(), {})[label] = secret.lower()
    return out


def assert_same_secrets(client_log, gw_keys):
    """Every connection in the client's log is in the gateway's, with the
    same secrets under every label both logged. Returns the randoms."""
    mine = parse_keylog(client_log)
    assert mine, "the client logged no secrets"
    for random, secrets in mine.items():
        assert random in gw_keys, "client random %s not in the gateway's key log" % random
        theirs = gw_keys[random]
        for label in LABELS_TLS13:
            assert label in secrets and label in theirs, (label, secrets, theirs)
        for label, secret in secrets.items():
            if label in theirs:
                assert theirs[label] == secret, label
        # No EXPORTER_SECRET: this wolfSSL build has no keying material
        # exporter, so it never derives one (nothing needs it to decrypt).
    return set(mine)


def test_keylog_matches_the_clients(gateway, tmp_path):
    keys = tmp_path / "keys" / "h3gate.keys"
    keys.parent.mkdir()
    keys.write_text("# kept: the log is appended to\n")
    os.chmod(keys, 0o600)
    gw = gateway({"debug": {"keylog_file": str(keys)}})
    assert "WRITING TLS SECRETS to %s ([debug] keylog_file)" % keys in gw.stderr_text()

    h3_log, tcp_log, gtls_log = (tmp_path / n for n in ("curl-h3.keys", "curl-tcp.keys",
                                                        "gtls.keys"))
    r = curl(gw, "/bytes/1000", "h3", h3_log)
    assert r["status"] == 200 and r["len"] == 1000 and r["version"] == 30, r
    r = curl(gw, "/bytes/1001", "h1", tcp_log)
    assert r["status"] == 200 and r["len"] == 1001 and r["version"] == 2, r
    if os.access(GTLSCLIENT, os.X_OK):
        gtlsclient(gw, "/bytes/1002", str(tmp_path / "dl"), gtls_log)
    gw.wait_access(path="/bytes/1001")

    assert keys.read_text().startswith("# kept: the log is appended to\n")
    gw_keys = parse_keylog(keys)
    h3 = assert_same_secrets(h3_log, gw_keys)
    tcp = assert_same_secrets(tcp_log, gw_keys)
    assert len(h3) == 1 and len(tcp) == 1 and h3 != tcp
    seen = h3 | tcp
    if os.access(GTLSCLIENT, os.X_OK):
        seen |= assert_same_secrets(gtls_log, gw_keys)
    # Nothing but these connections was logged, and only whole lines.
    assert set(gw_keys) == seen
    for line in keys.read_text().splitlines()[1:]:
        label, random, secret = line.split(" ")
        assert random == random.lower() and secret == secret.lower()
        assert len(random) == 64 and len(secret) in (64, 96), line
    gw.stop()


@pytest.mark.usefixtures("need_gtlsclient")
def test_keylog_has_the_early_secret_of_0rtt(gateway, tmp_path):
    """A resumed connection that sends 0-RTT: the gateway logs the same
    CLIENT_EARLY_TRAFFIC_SECRET as the client, when it takes early data."""
    keys = tmp_path / "h3gate.keys"
    gw = gateway({"debug": {"keylog_file": str(keys)}})
    sess, tp = str(tmp_path / "session.pem"), str(tmp_path / "tp.pem")
    logs = [tmp_path / ("gtls%d.keys" % i) for i in range(2)]
    for i, log in enumerate(logs):
        gtlsclient(gw, "/bytes/%d" % (2000 + i), str(tmp_path / ("dl%d" % i)), log,
                   ["--session-file=%s" % sess, "--tp-file=%s" % tp,
                    "--wait-for-ticket"])
    gw.wait_access(path="/bytes/2001")
    if gw.metrics().get("quic_early_data_accepted", 0) == 0:
        require(False, "the gateway took no 0-RTT data ([listener] early_data)")
    gw_keys = parse_keylog(keys)
    resumed = assert_same_secrets(logs[1], gw_keys)
    (random,) = resumed
    early = parse_keylog(logs[1])[random]["CLIENT_EARLY_TRAFFIC_SECRET"]
    assert gw_keys[random].get("CLIENT_EARLY_TRAFFIC_SECRET") == early


def test_keylog_file_is_created_private(gateway, tmp_path):
    keys = tmp_path / "new.keys"
    gw = gateway({"debug": {"keylog_file": str(keys)}})
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    curl(gw, "/bytes/10", "h3")
    gw.wait_access(path="/bytes/10")
    assert "CLIENT_TRAFFIC_SECRET_0 " in keys.read_text()


def start_with_sslkeylogfile(gateway, monkeypatch, path, overrides=None):
    gw = gateway(overrides, start=False)
    gw.keep_sslkeylogfile = True
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    try:
        gw.start()
    finally:
        monkeypatch.delenv("SSLKEYLOGFILE")
    return gw


def test_sslkeylogfile_is_honoured_when_the_config_is_silent(gateway, tmp_path,
                                                             monkeypatch):
    """SSLKEYLOGFILE, the convention of every TLS tool, turns the key log on
    when [debug] keylog_file is left out, loudly, with the same secrets the
    clients log, for HTTP/3 and TLS over TCP."""
    env_keys = tmp_path / "env.keys"
    gw = start_with_sslkeylogfile(gateway, monkeypatch, env_keys)
    assert "WRITING TLS SECRETS to %s (SSLKEYLOGFILE)" % env_keys in gw.stderr_text()
    assert stat.S_IMODE(os.stat(env_keys).st_mode) == 0o600
    h3_log, tcp_log = tmp_path / "curl-h3.keys", tmp_path / "curl-tcp.keys"
    r = curl(gw, "/bytes/100", "h3", h3_log)
    assert r["status"] == 200 and r["version"] == 30, r
    r = curl(gw, "/bytes/101", "h1", tcp_log)
    assert r["status"] == 200, r
    gw.wait_access(path="/bytes/101")
    gw_keys = parse_keylog(env_keys)
    h3 = assert_same_secrets(h3_log, gw_keys)
    tcp = assert_same_secrets(tcp_log, gw_keys)
    assert set(gw_keys) == h3 | tcp and h3 != tcp


def test_keylog_file_off_overrides_sslkeylogfile(gateway, tmp_path, monkeypatch):
    """"keylog_file = off" written in the configuration keeps secrets
    unwritten whatever the environment says; no file appears anywhere."""
    env_keys = tmp_path / "env.keys"
    gw = start_with_sslkeylogfile(gateway, monkeypatch, env_keys,
                                  {"debug": {"keylog_file": "off"}})
    before = set(os.listdir(gw.workdir))
    r = curl(gw, "/bytes/100", "h3")
    assert r["status"] == 200, r
    r = curl(gw, "/bytes/101", "h1")
    assert r["status"] == 200, r
    gw.wait_access(path="/bytes/101")
    gw.stop()
    assert not env_keys.exists()
    assert set(os.listdir(gw.workdir)) == before, "a file appeared in the work dir"
    err = gw.stderr_text()
    assert "SSLKEYLOGFILE is set but ignored" in err
    assert "SECRETS" not in err


def test_keylog_file_takes_precedence_over_sslkeylogfile(gateway, tmp_path, monkeypatch):
    env_keys, keys = tmp_path / "env.keys", tmp_path / "cfg.keys"
    gw = start_with_sslkeylogfile(gateway, monkeypatch, env_keys,
                                  {"debug": {"keylog_file": str(keys)}})
    r = curl(gw, "/bytes/100", "h3")
    assert r["status"] == 200, r
    gw.wait_access(path="/bytes/100")
    assert "CLIENT_TRAFFIC_SECRET_0 " in keys.read_text()
    assert not env_keys.exists()
    assert "WRITING TLS SECRETS to %s ([debug] keylog_file)" % keys in gw.stderr_text()


def test_keylog_without_sslkeylogfile_says_nothing(gateway):
    gw = gateway()
    gw.stop()
    assert "SSLKEYLOGFILE" not in gw.stderr_text()
    assert "key log" not in gw.stderr_text()


def test_keylog_in_missing_directory_is_a_config_error(tmp_path, certs):
    ini = tmp_path / "g.ini"
    ini.write_text(render_ini({
        "listener": {"cert": certs.cert, "key": certs.key},
        "upstream": {"server": "127.0.0.1:1"},
        "debug": {"keylog_file": str(tmp_path / "missing" / "keys")}}))
    p = subprocess.run([H3GATE_BIN, "--check-config", str(ini)],
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "[debug] keylog_file" in p.stderr
