"""Self-checks of the scripted origin (upstream.py) over plain HTTP/1.1,
without the gateway: when a gateway test fails, these tell whether the
harness itself is sound. They run even when h3gate is not built."""

import hashlib
import io
import json
import socket

import pycurl
import pytest

from conftest import KiB, MiB, PatternReader, Upstream, expected_sha256


def http1(up, path, method="GET", body=None, chunked=False, headers=()):
    c = pycurl.Curl()
    sha, n, keep, hdrs = hashlib.sha256(), [0], io.BytesIO(), []

    def write(d):
        sha.update(d)
        n[0] += len(d)
        if keep.tell() < MiB:
            keep.write(d)
    c.setopt(pycurl.URL, "http://%s%s" % (up.address, path))
    c.setopt(pycurl.WRITEFUNCTION, write)
    c.setopt(pycurl.HEADERFUNCTION, lambda h: hdrs.append(h.decode("latin-1").strip()))
    c.setopt(pycurl.HTTPHEADER, list(headers) + ["Expect:"])
    c.setopt(pycurl.TIMEOUT, 20)
    if method == "HEAD":
        c.setopt(pycurl.NOBODY, 1)
    if body is not None:
        c.setopt(pycurl.POST, 1)
        c.setopt(pycurl.READFUNCTION, PatternReader(body).read)
        c.setopt(pycurl.POSTFIELDSIZE_LARGE, -1 if chunked else body)
    err = None
    try:
        c.perform()
    except pycurl.error as e:
        err = e.args[0]
    status = c.getinfo(pycurl.RESPONSE_CODE)
    c.close()
    return status, n[0], sha.hexdigest(), keep.getvalue(), err, hdrs


@pytest.fixture
def up():
    u = Upstream(name="selfcheck").start()
    yield u
    u.stop()


@pytest.mark.parametrize("kind", ["bytes", "chunked", "close"])
@pytest.mark.parametrize("n", [0, 1, 70000, 3 * MiB + 1])
def test_generated_bodies(up, kind, n):
    status, got, sha, _, err, _ = http1(up, "/%s/%d" % (kind, n))
    assert (status, err, got, sha) == (200, None, n, expected_sha256(n))


@pytest.mark.parametrize("mode", ["stream", "spool"])
@pytest.mark.parametrize("chunked", [False, True])
def test_echo(up, mode, chunked):
    n = 2 * MiB + 3
    status, got, sha, _, err, _ = http1(up, "/echo?mode=" + mode, body=n, chunked=chunked)
    assert (status, err, got, sha) == (200, None, n, expected_sha256(n))
    req = up.last_request("/echo")
    assert req.body_complete and req.body_sha256 == expected_sha256(n)
    assert req.framing == ("chunked" if chunked else "content-length")


def test_headers_and_head(up):
    status, _, _, body, err, _ = http1(up, "/headers?a=1", headers=["X-A: b"])
    j = json.loads(body)
    assert status == 200 and j["target"] == "/headers?a=1"
    assert ["X-A", "b"] in j["headers"]
    status, got, _, _, err, hdrs = http1(up, "/bytes/1000", method="HEAD")
    assert status == 200 and got == 0 and "Content-Length: 1000" in hdrs


def test_malformed_kinds_are_malformed(up):
    head, body = Upstream.malformed_kinds()
    # libcurl is lenient about some kinds (cl-te, dup-cl, ...); check those
    # it rejects, and that every kind exists.
    for kind in ("bad-status-line", "bad-version", "garbage", "bad-chunk-start",
                 "close-before-head", "no-colon"):
        assert kind in head
        status, got, _, _, err, _ = http1(up, "/malformed/" + kind)
        assert err is not None or status != 200, kind
    for kind in body:
        if kind == "stall-mid-body":
            continue
        status, got, sha, _, err, _ = http1(up, "/malformed/" + kind)
        assert status == 200 and err is not None, kind
        assert got == Upstream.MALFORMED_MID_BYTES and sha == expected_sha256(got), kind


def test_bad_request_heads_are_recorded(up):
    for raw in (b"GET / HTTP/1.1\r\n\r\n",                        # no Host
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                b"GET / HTTP/1.1\nHost: a\n\n",                   # bare LF
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", up.port))
        s.sendall(raw)
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 400")
        s.close()
    up.wait_for(lambda: len(up.errors) == 4, what="4 errors")


def test_scripted_response(up):
    up.script("x", b"HTTP/1.1 299 Odd\r\nContent-Length: 3\r\n\r\nabc", close=False)
    status, got, _, body, err, _ = http1(up, "/script/x")
    assert (status, body, err) == (299, b"abc", None)


def test_counts_connections(up):
    for _ in range(3):
        http1(up, "/bytes/10")     # a new curl handle each time
        up.wait_for(lambda: up.open_conns == 0)
    assert up.accepts == 3 and up.peak_open_conns == 1
    assert [c.requests for c in up.conns] == [1, 1, 1]
    assert all(r.t_end is not None for r in up.requests)
    assert expected_sha256(0) == hashlib.sha256(b"").hexdigest()
    assert KiB == 1024
