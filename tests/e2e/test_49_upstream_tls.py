"""TLS to the upstream (`server = https://host:port`): the certificate is
verified against tls_ca and the server name, SNI is sent, sessions resume
across connections, a client certificate is presented when configured, and
a server that fails verification gets no request: the client gets 502 and
the log says why.
"""

import json
import os
import subprocess

import pytest

from testenv.clients import H1Client, H3Client
from testenv.tls_origin import TLSOrigin


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def pki(tmp_path, certs):
    """Another CA (that signed nothing of ours), and a client certificate
    signed by the test CA."""
    d = str(tmp_path)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.crt",
            "-subj", "/CN=other test CA", "-days", "2", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=h3gate-client",
            cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", certs.ca, "-CAkey",
            os.path.join(certs.dir, "ca.key"), "-CAcreateserial", "-out", "client.crt",
            "-days", "2", cwd=d)
    return {"other_ca": os.path.join(d, "other-ca.crt"),
            "client_crt": os.path.join(d, "client.crt"),
            "client_key": os.path.join(d, "client.key")}


@pytest.fixture
def origin(certs):
    o = TLSOrigin(certs.cert, certs.key)
    yield o
    o.stop()


def tls_gateway(gateway, server, **group):
    return gateway({"upstream": None,
                    "upstream secure": dict({"server": server}, **group)})


def test_verified_with_sni_and_resumption(gateway, certs, origin):
    gw = tls_gateway(gateway, "https://localhost:%d" % origin.port,
                     tls_ca=certs.ca, idle_timeout="1s")
    with H3Client(gw) as cl:
        r = cl.get("/first", keep=4096)
        assert r.status == 200 and r.error is None, r
        seen = json.loads(r.body)
        assert seen["sni"] == "localhost"
        assert seen["alpn"] == "http/1.1"
        assert seen["path"] == "/first" and seen["resumed"] is False
    # The idle connection expires; the next one resumes the session.
    gw.wait_metrics(lambda m: m["upstream_conns_idle"] == 0
                    and m["upstream_conns_closed"] >= 1,
                    timeout=10, what="the idle connection to expire")
    with H1Client(gw) as cl:
        r = cl.get("/second", keep=4096)
        assert r.status == 200 and r.error is None, r
        assert json.loads(r.body)["resumed"] is True, r.body
    assert len(origin.handshakes) == 2 and origin.failures == []
    access = gw.access_log()
    assert access[-1]["upstream"] == "https://localhost:%d" % origin.port


def test_wrong_ca_is_502_and_logged(gateway, origin, pki):
    gw = tls_gateway(gateway, "https://localhost:%d" % origin.port,
                     tls_ca=pki["other_ca"])
    with H3Client(gw) as cl:
        r = cl.get("/never")
        assert r.status == 502 and r.error is None, r
    gw.wait_log("TLS handshake failed: certificate verify failed")
    assert origin.requests == 0


def test_wrong_name_is_502(gateway, certs, origin):
    gw = tls_gateway(gateway, "https://127.0.0.1:%d" % origin.port,
                     tls_ca=certs.ca, tls_sni="app.internal")
    with H3Client(gw) as cl:
        r = cl.get("/never")
        assert r.status == 502, r
    gw.wait_log("does not match app.internal")
    assert origin.requests == 0
    assert origin.sni_seen == ["app.internal"]


def test_verify_off_warns_and_sends_sni(gateway, origin, pki):
    gw = tls_gateway(gateway, "https://127.0.0.1:%d" % origin.port,
                     tls_ca=pki["other_ca"], tls_verify="off",
                     tls_sni="app.internal")
    gw.wait_log("tls_verify is off")
    with H3Client(gw) as cl:
        r = cl.get("/x", keep=4096)
        assert r.status == 200, r
        assert json.loads(r.body)["sni"] == "app.internal"


def test_client_certificate(gateway, certs, pki):
    o = TLSOrigin(certs.cert, certs.key, client_ca=certs.ca)
    try:
        gw = tls_gateway(gateway, "https://localhost:%d" % o.port,
                         tls_ca=certs.ca, tls_cert=pki["client_crt"],
                         tls_key=pki["client_key"])
        with H3Client(gw) as cl:
            r = cl.get("/me", keep=4096)
            assert r.status == 200, r
            assert json.loads(r.body)["client_cert"] == "h3gate-client"
        # Without one, the origin refuses the handshake: no request, 502.
        gw2 = tls_gateway(gateway, "https://localhost:%d" % o.port, tls_ca=certs.ca)
        with H3Client(gw2) as cl:
            r = cl.get("/me")
            assert r.status == 502, r
        assert o.requests == 1
    finally:
        o.stop()
