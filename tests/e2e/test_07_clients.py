"""Independent HTTP/3 clients: ngtcp2's gtlsclient (GnuTLS) and headless
Chromium (its own QUIC stack), besides libcurl used everywhere else."""

import os

import pytest

from conftest import (MiB, expected_sha256, gtlsclient_download,
                      chromium_fetch, netlog_quic_requests, sha256_file)


def test_gtlsclient_download_1mib(shared_gateway, shared_upstream, tmp_path):
    gw = shared_gateway
    d = str(tmp_path / "dl")
    p = gtlsclient_download(gw, ["/bytes/%d" % MiB], d)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    path = os.path.join(d, str(MiB))
    assert os.path.isfile(path), os.listdir(d)
    assert os.path.getsize(path) == MiB
    assert sha256_file(path) == expected_sha256(MiB)
    recs = gw.wait_access(path="/bytes/%d" % MiB)
    assert recs[-1]["proto"] == "h3" and recs[-1]["status"] == "200", recs[-1].raw


def test_gtlsclient_several_streams(shared_gateway, tmp_path):
    gw = shared_gateway
    d = str(tmp_path / "dl")
    sizes = {"/bytes/%d" % (3 * MiB + 1): 3 * MiB + 1,
             "/chunked/%d" % (MiB + 7): MiB + 7,
             "/close/%d" % 99999: 99999}
    p = gtlsclient_download(gw, list(sizes), d)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    for path, n in sizes.items():
        f = os.path.join(d, path.rsplit("/", 1)[1])
        assert os.path.getsize(f) == n, path
        assert sha256_file(f) == expected_sha256(n), path


@pytest.mark.usefixtures("need_chromium")
def test_chromium_loads_page_over_h3(shared_gateway, shared_upstream, tmp_path):
    gw = shared_gateway
    dom, netlog, p = chromium_fetch(gw, "/page", str(tmp_path))
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
    assert "served-through-h3gate" in dom, dom[:2000]
    # The gateway served it over HTTP/3 ...
    recs = gw.wait_access(path="/page")
    assert recs[-1]["proto"] == "h3" and recs[-1]["status"] == "200", recs[-1].raw
    assert recs[-1]["method"] == "GET"
    # ... Chromium says it used QUIC for it ...
    sent = netlog_quic_requests(netlog, gw.port)
    assert ("localhost:%d" % gw.port, "/page") in sent, sent
    # ... and the request reached the upstream with Chromium's fields.
    req = shared_upstream.last_request("/page")
    assert req is not None
    assert "Chrome" in (req.header("user-agent") or ""), req.headers
    assert req.header_all("host") == [gw.authority]


# (Not --nat-rebinding: in this paced download gtlsclient 1.11 then drops what
# reaches its old socket and, having only ACKs to send, never speaks from the
# new one, so it idles out whatever the server; test_34_migration.py rebinds
# during an upload, and asserts the migration counters and the qlog.)
@pytest.mark.parametrize("extra", [["--key-update=50ms"], ["--change-local-addr=50ms"]],
                         ids=["key-update", "migration"])
def test_gtlsclient_download_survives(shared_gateway, tmp_path, extra):
    """A key update, or a migration to a new client address (with path
    validation) mid-download: the transfer completes byte-exact."""
    gw = shared_gateway
    d = str(tmp_path / "dl")
    n = 2 * MiB
    p = gtlsclient_download(gw, ["/slow/%d?rate=%d" % (n, 4 * MiB)], d, extra=extra)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    f = os.path.join(d, "%d?rate=%d" % (n, 4 * MiB))
    if not os.path.exists(f):
        f = os.path.join(d, str(n))
    assert os.path.getsize(f) == n, os.listdir(d)
    assert sha256_file(f) == expected_sha256(n)


def test_gtlsclient_resumption(shared_gateway, tmp_path):
    """A second connection resumes the TLS session (and may send 0-RTT)."""
    gw = shared_gateway
    sess, tp = str(tmp_path / "session.pem"), str(tmp_path / "tp.pem")
    for i in range(2):
        d = str(tmp_path / ("dl%d" % i))
        p = gtlsclient_download(gw, ["/bytes/%d" % (100000 + i)], d,
                                extra=["--session-file=%s" % sess, "--tp-file=%s" % tp,
                                       "--wait-for-ticket"])
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
        f = os.path.join(d, str(100000 + i))
        assert sha256_file(f) == expected_sha256(100000 + i)
    assert os.path.getsize(sess) > 0
