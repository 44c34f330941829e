"""Request bodies: POST echoed byte-exact (known and unknown length), PUT, and
what framing the upstream was given."""

import pytest

from conftest import KiB, MiB, expected_sha256, uid

SIZES = [0, 1 * KiB, 1 * MiB, 100 * MiB]
SIZE_IDS = ["0B", "1KiB", "1MiB", "100MiB"]


def assert_upstream_body(req, n):
    assert req is not None, "the upstream never saw the request"
    assert req.body_complete, "the upstream did not get a complete body: %r" % req
    assert req.body_len == n, "upstream got %d body bytes, want %d" % (req.body_len, n)
    assert req.body_sha256 == expected_sha256(n), "request body corrupted on the way"


def assert_echo(r, n):
    assert r.error is None, r
    assert r.status == 200, r
    assert r.http_version == 30
    assert r.body_len == n, "echo returned %d bytes, want %d" % (r.body_len, n)
    assert r.sha256 == expected_sha256(n), "echoed body differs"


@pytest.mark.parametrize("n", SIZES, ids=SIZE_IDS)
def test_post_echo_streaming(shared_gateway, shared_upstream, h3, n):
    """The upstream answers at once and echoes while still reading: the
    gateway must move both directions at the same time."""
    tag = uid()
    r = h3(shared_gateway).post("/echo?id=%s" % tag, n, timeout=180)
    assert_echo(r, n)
    req = shared_upstream.last_request("/echo?id=%s" % tag)
    assert_upstream_body(req, n)
    assert req.method == "POST"
    if n:
        # The client declared the length (content-length): a legacy
        # upstream should get it, not a chunked body.
        assert req.framing == "content-length", req.framing
        assert req.declared_length == n


@pytest.mark.parametrize("n", [1 * KiB, 10 * MiB], ids=["1KiB", "10MiB"])
def test_post_echo_after_whole_body(shared_gateway, shared_upstream, h3, n):
    """The upstream reads the whole body before it answers (spooled)."""
    tag = uid()
    r = h3(shared_gateway).post("/echo?mode=spool&id=%s" % tag, n, timeout=60)
    assert_echo(r, n)
    assert r.header("x-echo-mode") == "spool"
    assert_upstream_body(shared_upstream.last_request("/echo?mode=spool&id=%s" % tag), n)


@pytest.mark.parametrize("n", [1 * KiB, 1 * MiB, 10 * MiB], ids=["1KiB", "1MiB", "10MiB"])
def test_post_unknown_length(shared_gateway, shared_upstream, h3, n):
    """No content-length from the client: the gateway must frame the body
    for HTTP/1.1 itself (chunked, or a length once it has seen it all)."""
    tag = uid()
    r = h3(shared_gateway).post("/sink?id=%s" % tag, n, chunked=True, timeout=60)
    assert r.error is None and r.status == 200, r
    j = r.json()
    assert j["len"] == n and j["sha256"] == expected_sha256(n), j
    req = shared_upstream.last_request("/sink?id=%s" % tag)
    assert_upstream_body(req, n)
    assert req.framing in ("chunked", "content-length"), req.framing


def test_post_unknown_length_echo_streaming(shared_gateway, shared_upstream, h3):
    tag = uid()
    n = 5 * MiB + 17
    r = h3(shared_gateway).post("/echo?id=%s" % tag, n, chunked=True, timeout=60)
    assert_echo(r, n)
    assert_upstream_body(shared_upstream.last_request("/echo?id=%s" % tag), n)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "no-length"])
def test_post_around_buffer_size(shared_gateway, shared_upstream, h3, chunked):
    cl = h3(shared_gateway)
    for n in (256 * KiB - 1, 256 * KiB, 256 * KiB + 1, 768 * KiB + 5):
        tag = uid()
        assert_echo(cl.post("/echo?id=%s" % tag, n, chunked=chunked), n)
        assert_upstream_body(shared_upstream.last_request("/echo?id=%s" % tag), n)


def test_put_body(shared_gateway, shared_upstream, h3):
    tag = uid()
    n = 2 * MiB + 1
    r = h3(shared_gateway).request("/sink?id=%s" % tag, "PUT", body=n)
    assert r.error is None and r.status == 200, r
    req = shared_upstream.last_request("/sink?id=%s" % tag)
    assert req.method == "PUT"
    assert_upstream_body(req, n)


def test_post_with_expect_100_continue(shared_gateway, shared_upstream, h3):
    """A client that asks for 100-continue gets its body through (whether
    the gateway answers the expectation itself or relays the upstream's)."""
    tag = uid()
    n = 1 * MiB
    r = h3(shared_gateway).post("/echo?mode=spool&id=%s" % tag, n,
                                headers=["Expect: 100-continue"], timeout=30)
    assert_echo(r, n)
    assert_upstream_body(shared_upstream.last_request("/echo?mode=spool&id=%s" % tag), n)


def test_many_posts_on_one_connection(shared_gateway, shared_upstream, h3):
    cl = h3(shared_gateway)
    for i in range(20):
        n = 1 + i * 7919
        tag = uid()
        r = cl.post("/echo?id=%s" % tag, n)
        assert_echo(r, n)
        assert_upstream_body(shared_upstream.last_request("/echo?id=%s" % tag), n)
        if i:
            assert r.num_connects == 0


def test_upstream_answers_before_reading_body(gateway, upstream, h3):
    """A legacy app refuses a large upload at once (413, Connection: close)
    without reading it: the client gets the 413, not an error."""
    import socket as _socket

    def refuse(conn, req):
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n"
                     b"Connection: close\r\n\r\ntoo large")
        # Lingering close (as Apache does): no RST that could destroy the
        # response before the gateway read it.
        conn.sock.shutdown(_socket.SHUT_WR)
        conn.sock.settimeout(3)
        try:
            while conn.sock.recv(65536):
                pass
        except OSError:
            pass
        return False

    upstream.script("refuse-upload", refuse)
    gw = gateway()
    cl = h3(gw)
    r = cl.post("/script/refuse-upload", 20 * MiB, timeout=30)
    assert r.status == 413, r
    assert r.error is None, r
    assert r.body == b"too large"
    r2 = cl.post("/echo", 1000)
    assert_echo(r2, 1000)
