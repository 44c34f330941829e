"""Response mapping, HTTP/1.1 -> HTTP/3: hop-by-hop fields removed, names
lowercased, repeated fields kept in order, interim responses (103 always,
100 only after an Expect, 101 refused), bodiless responses whatever the
upstream claims, trailers, and the response-desync defences: a response
the gateway cannot frame with certainty ends in 502 or a stream reset, and
its upstream connection is closed, never reused."""

import time

import pytest

from conftest import SLOW, KiB, MiB, expected_sha256, h3_request_with, pycurl


# ---- helpers -------------------------------------------------------------------

def raw_headers(lines):
    """A setup for h3_request_with that records every header-callback line
    as (response body bytes received so far, line as libcurl gave it)."""
    def setup(c, t):
        orig = t._header

        def hdr(line):
            lines.append((t.r.body_len, line.decode("latin-1").rstrip("\r\n")))
            return orig(line)
        c.setopt(pycurl.HEADERFUNCTION, hdr)
    return setup


def block_statuses(r):
    return [int(line.split()[1]) for line, _ in r.all_header_blocks]


def assert_ok(r, n=None, body=None):
    assert r.error is None and r.status == 200, r
    if n is not None:
        assert r.body_len == n and r.sha256 == expected_sha256(n), r
    if body is not None:
        assert r.body == body, r.body


def assert_not_reused(upstream, path, next_path="/bytes/100"):
    """The connection that carried path was closed by the gateway and
    carried nothing more; next_path went over a new one."""
    req = upstream.last_request(path)
    assert req is not None, "the upstream never saw %s" % path
    c = upstream.wait_conn_closed(req.conn_id, timeout=10)
    assert c.closed_by == "peer", "the gateway should close it: %s" % c
    assert c.requests == req.index + 1, "a request followed on a broken conn: %s" % c
    nxt = upstream.last_request(next_path)
    assert nxt is not None and nxt.conn_id != req.conn_id, (nxt, req)


# ---- fields --------------------------------------------------------------------

HOP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"X-MiXeD-CaSe: Value-Case-Kept\r\n"
    b"Connection: keep-alive, X-Named-One\r\n"
    b"CONNECTION: x-named-two\r\n"
    b"X-Named-One: drop\r\n"
    b"x-NAMED-two: drop\r\n"
    b"Keep-Alive: timeout=5, max=100\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"Upgrade: h2c\r\n"
    b"TE: trailers\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"X-End: kept\r\n"
    b"\r\n"
    b"5\r\nhello\r\n0\r\n\r\n")


def test_hop_by_hop_fields_removed_names_lowercased(gateway, upstream, h3):
    upstream.script("hop", HOP_RESPONSE, close=False)
    gw = gateway()
    cl = h3(gw)
    lines = []
    r = h3_request_with(cl, "/script/hop", setup=raw_headers(lines))
    assert_ok(r, body=b"hello")
    names = [line.split(":", 1)[0] for _, line in lines
             if ":" in line and not line.startswith("HTTP/")]
    for n in names:
        assert n == n.lower(), "field name %r not lowercased: %s" % (n, names)
    for gone in ("connection", "keep-alive", "proxy-connection", "upgrade", "te",
                 "transfer-encoding", "x-named-one", "x-named-two"):
        assert gone not in names, "hop-by-hop %s reached the client: %s" % (gone, names)
    assert r.header("x-mixed-case") == "Value-Case-Kept", r.headers
    assert r.header("x-end") == "kept" and r.header("content-type") == "text/plain"
    # The connection stayed in step and is reused.
    assert_ok(cl.get("/bytes/100"), 100)
    assert upstream.last_request("/bytes/100").conn_id == upstream.last_request(
        "/script/hop").conn_id


def test_repeated_fields_keep_their_order(gateway, upstream, h3):
    upstream.script("dups", b"HTTP/1.1 200 OK\r\nSet-Cookie: c=3; Path=/\r\n"
                    b"X-List: one\r\nSet-Cookie: a=1\r\nX-Other: o\r\n"
                    b"Set-Cookie: b=2; HttpOnly\r\nX-List: two\r\n"
                    b"Content-Length: 2\r\n\r\nok", close=False)
    gw = gateway()
    r = h3(gw).get("/script/dups")
    assert_ok(r, body=b"ok")
    assert r.header_all("set-cookie") == ["c=3; Path=/", "a=1", "b=2; HttpOnly"], r.headers
    assert r.header_all("x-list") in (["one", "two"], ["one, two"]), r.headers


# ---- interim responses -----------------------------------------------------------

def test_103_early_hints_forwarded(gateway, upstream, h3):
    upstream.script("hints", b"HTTP/1.1 103 Early Hints\r\n"
                    b"Link: </style.css>; rel=preload; as=style\r\n\r\n"
                    b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal", close=False)
    gw = gateway()
    before = gw.metrics()
    r = h3(gw).get("/script/hints")
    assert_ok(r, body=b"final")
    assert block_statuses(r) == [103, 103, 200], r.all_header_blocks
    assert r.all_header_blocks[0][1] == [("link", "</style.css>; rel=preload; as=style")]
    assert r.all_header_blocks[1][1] == [("link", "</app.js>; rel=preload")]
    assert r.header("link") is None, "a hint leaked into the final head"
    m = gw.wait_idle()
    assert m["responses_1xx"] - before["responses_1xx"] == 2, m


def test_100_continue_only_after_expect(gateway, upstream, h3):
    """An unsolicited 100 is dropped (the client did not ask); after an
    Expect: 100-continue it is passed on."""
    upstream.script("unasked-100", b"HTTP/1.1 100 Continue\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", close=False)
    gw = gateway()
    cl = h3(gw)
    r = cl.get("/script/unasked-100")
    assert_ok(r, body=b"yes")
    assert block_statuses(r) == [200], r.all_header_blocks
    r = cl.post("/script/unasked-100", 10, headers=["Expect:"])
    assert_ok(r, body=b"yes")
    assert block_statuses(r) == [200], r.all_header_blocks

    def setup(c, t):
        c.setopt(pycurl.EXPECT_100_TIMEOUT_MS, 20000)
    r = h3_request_with(cl, "/echo?mode=spool", "POST", setup=setup, body=1000,
                        headers=["Expect: 100-continue"])
    assert_ok(r, 1000)
    assert block_statuses(r) == [100, 200], r.all_header_blocks


def test_101_outside_upgrade_is_502(gateway, upstream, h3):
    upstream.script("switch", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\n"
                    b"Connection: upgrade\r\n\r\nfoo-protocol-bytes", close=True,
                    linger=10)
    gw = gateway()
    cl = h3(gw)
    r = cl.get("/script/switch")
    assert r.error is None and r.status == 502, r
    assert block_statuses(r) == [502], r.all_header_blocks
    assert_ok(cl.get("/bytes/100"), 100)
    assert_not_reused(upstream, "/script/switch")


# ---- bodiless responses ---------------------------------------------------------------

@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_status_ignores_content_length(gateway, upstream, h3, code):
    upstream.script("nobody", b"HTTP/1.1 %d Nothing\r\nContent-Length: 5\r\n"
                    b"ETag: \"x\"\r\n\r\n" % code, close=False)
    gw = gateway()
    cl = h3(gw)
    t0 = time.monotonic()
    r = cl.get("/script/nobody", timeout=20)
    assert r.error is None and r.status == code, r
    assert r.body_len == 0, r
    assert time.monotonic() - t0 < 3 * SLOW, "the gateway waited for 5 body bytes"
    # Same upstream connection, still in step.
    r = cl.get("/bytes/100")
    assert_ok(r, 100)
    assert upstream.last_request("/bytes/100").conn_id == upstream.last_request(
        "/script/nobody").conn_id
    assert upstream.accepts == 1, upstream.conns


def test_head_response_has_no_body(gateway, upstream, h3):
    def head(conn, req):
        assert req.method == "HEAD"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                     b"Content-Type: text/plain\r\n\r\n")
        return True
    upstream.script("head", head)
    gw = gateway()
    cl = h3(gw)
    r = cl.request("/script/head", "HEAD", timeout=20)
    assert r.error is None and r.status == 200, r
    assert r.body_len == 0
    assert r.header("content-length") == "5", r.headers
    r = cl.get("/bytes/100")
    assert_ok(r, 100)
    assert upstream.last_request("/bytes/100").conn_id == upstream.last_request(
        "/script/head").conn_id


# ---- trailers ---------------------------------------------------------------------

def test_chunked_trailers_arrive_after_body(gateway, upstream, h3):
    """Trailers of a chunked response become a trailing HEADERS frame.
    libcurl hands HTTP/3 trailers to the header callback after the body."""
    gw = gateway()
    n = 300 * KiB
    lines = []
    r = h3_request_with(h3(gw), "/chunked/%d?trailers=1" % n, setup=raw_headers(lines))
    assert_ok(r, n)
    after_body = [line for got, line in lines if got == n and line]
    assert "x-trailer: yes" in [line.lower() for line in after_body], (
        "no trailer after the body; header lines (bytes seen, line): %s" % lines)
    before_body = [line for got, line in lines if got < n]
    assert not [line for line in before_body if line.lower().startswith("x-trailer")]


# ---- desync defences ------------------------------------------------------------------

DESYNC = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two-cls": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"
               b"hello!!",
    "cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\nhello!!",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5x\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "bad-chunk-ext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;a=\"unterminated\r\nhello\r\n0\r\n\r\n",
    "ctl-in-chunk-ext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\n"
                b"hello",
    "te-not-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    "bytes-after-end": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    "bytes-after-last-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n0\r\n\r\nGARBAGE",
    "bare-lf-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\nhello\r\n0\r\n\r\n",
    "bare-lf-chunk-data-end": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\n0\r\n\r\n",
    "bare-lf-trailers-end": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5\r\nhello\r\n0\r\nX-T: 1\r\n\n",
    "bare-cr-chunk-data-end": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\rX0\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(DESYNC))
def test_desync_defences(gateway, upstream, h3, kind):
    """Each response is sent in one write; then the upstream keeps its side
    open (and records any byte the gateway sends on it)."""
    upstream.script("desync", DESYNC[kind], close=True, linger=10)
    gw = gateway()
    cl = h3(gw)
    assert_ok(cl.get("/bytes/10?warm"), 10)
    r = cl.get("/script/desync", timeout=20)
    assert r.status == 502 or r.error is not None, (
        "%s: the client got a clean response: %s body=%r" % (kind, r, r.body))
    if r.status == 502:
        # The gateway's own 502 must itself be a clean response: no stale
        # upstream bytes after it, no broken stream.
        assert r.error is None, "%s: the generated 502 broke: %s" % (kind, r)
        declared = r.header("content-length")
        assert declared is None or r.body_len == int(declared), (kind, r, r.headers)
        assert b"hello" not in r.body, r.body
    r2 = cl.get("/bytes/100")
    assert_ok(r2, 100)
    assert r2.num_connects == 0, "the failure cost the QUIC connection"
    assert_not_reused(upstream, "/script/desync")
    gw.wait_idle()


BARE_LF_HEADS = {
    "status-line": b"HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\nhello",
    "field-line": b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello",
    "end-of-head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\nhello",
    "bare-cr-end-of-head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\rXhello",
}


@pytest.mark.parametrize("kind", list(BARE_LF_HEADS))
def test_bare_lf_in_response_head_is_502(gateway, upstream, h3, kind):
    """A head whose lines end in a bare LF (or a CR without its LF) is
    refused before any of it reaches the client, whichever llhttp the
    gateway links (8.1 would take most of these): the client gets the
    gateway's 502, and the connection is not reused."""
    upstream.script("barelf", BARE_LF_HEADS[kind], close=True, linger=10)
    gw = gateway()
    cl = h3(gw)
    r = cl.get("/script/barelf", timeout=20)
    assert r.error is None and r.status == 502, (kind, r)
    assert block_statuses(r) == [502], r.all_header_blocks
    assert b"hello" not in r.body, r.body
    assert_ok(cl.get("/bytes/100"), 100)
    assert_not_reused(upstream, "/script/barelf")
    gw.wait_idle()


def test_early_response_keeping_connection_is_passed_on_not_reused(
        gateway, upstream, h3):
    """The upstream answers (completely, keep-alive) before reading the
    request body: the answer reaches the client (RFC 9110 §15, RFC 9114
    §4.1), the rest of the body is not sent, and the connection is closed,
    never reused, since the bytes the upstream did not read could be taken
    for a next request. More in test_17_early_response."""
    seen = {}

    def early(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        seen["closed"], seen["bytes"] = conn.discard_until_close(15)
        return False
    upstream.script("early", early)
    gw = gateway()
    cl = h3(gw)
    n = 32 * MiB
    r = cl.post("/script/early", n, timeout=30)
    assert r.error is None and r.status == 200 and r.body == b"ok", r
    r2 = cl.get("/bytes/100")
    assert_ok(r2, 100)
    assert r2.num_connects == 0, "the early answer cost the QUIC connection"
    req = upstream.last_request("/script/early")
    c = upstream.wait_conn_closed(req.conn_id, timeout=15)
    assert seen.get("closed"), "the gateway did not close the connection"
    assert seen["bytes"] < n, seen
    assert c.closed_by == "peer", c
    assert upstream.last_request("/bytes/100").conn_id != req.conn_id
    gw.wait_idle()


def test_early_response_with_close_is_passed_on(gateway, upstream, h3):
    """The legitimate form: an early final response with Connection: close
    (RFC 9112 9.6) reaches the client."""
    def early(conn, req):
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n"
                     b"Connection: close\r\n\r\nno\n")
        conn.discard_until_close(15)
        return False
    upstream.script("early-close", early)
    gw = gateway()
    cl = h3(gw)
    r = cl.post("/script/early-close", 32 * MiB, timeout=30)
    assert r.status == 403 and r.body == b"no\n", r
    assert_ok(cl.get("/bytes/100"), 100)
    gw.wait_idle()
