"""Request mapping, HTTP/3 -> HTTP/1.1, checked on what the upstream
RECEIVED: the request line, Host from :authority, cookie fields joined,
body framing (chunked for an unknown length, Content-Length for a known
one), request trailers, Expect: 100-continue, the forwarding fields
(Forwarded, X-Forwarded-*, Via) with and without trusted proxies, and the
request limits (max_request_body, request_header_timeout)."""

import json
import re
import time

import pytest

from conftest import (SLOW, KiB, MiB, expected_sha256, h3_request_with, pycurl,
                      uid)
from testenv.h3raw import run_h3raw as run_h3raw_shared
from testenv.require import require

# ---- helpers -------------------------------------------------------------------

FWD_NAMES = ("forwarded", "x-forwarded-for", "x-forwarded-proto",
             "x-forwarded-host", "via")

TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
FWD_PAIR_RE = re.compile(r'\s*(%s+)=(%s+|"(?:[^"\\]|\\.)*")\s*' % (TCHAR, TCHAR))


def parse_forwarded(value):
    """RFC 7239 field value -> [[(name lowercased, value unquoted, raw value)]]
    per element. Raises AssertionError on a syntax error (a value with a
    ':' or '[' that is not quoted, for example)."""
    elements = []
    for element in split_outside_quotes(value, ","):
        pairs = []
        for pair in split_outside_quotes(element, ";"):
            m = FWD_PAIR_RE.fullmatch(pair)
            assert m, "Forwarded: bad forwarded-pair %r in %r" % (pair, value)
            raw = m.group(2)
            v = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
            pairs.append((m.group(1).lower(), v, raw))
        elements.append(pairs)
    return elements


def split_outside_quotes(s, sep):
    out, cur, quoted, esc = [], "", False, False
    for ch in s:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\" and quoted:
            cur += ch
            esc = True
        elif ch == '"':
            cur += ch
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    assert not quoted, "unterminated quoted-string in %r" % s
    out.append(cur)
    return out


def our_forwarded(gw, client="127.0.0.1"):
    """The element h3gate must add, as parsed pairs (order kept)."""
    return [("for", client), ("proto", "https"), ("host", gw.authority)]


def fwd_fields(req):
    return {n: req.header_all(n) for n in FWD_NAMES}


def get_headers(cl, upstream, headers=()):
    tag = uid()
    r = cl.get("/headers?id=%s" % tag, headers=list(headers))
    assert r.error is None and r.status == 200, r
    return upstream.last_request("/headers?id=%s" % tag)


def expect_timeout(ms):
    """A setup for h3_request_with: how long libcurl itself waits for a 100
    before it sends the body anyway."""
    def setup(c, t):
        c.setopt(pycurl.EXPECT_100_TIMEOUT_MS, ms)
    return setup


def block_statuses(r):
    return [int(line.split()[1]) for line, _ in r.all_header_blocks]


# ---- request line and Host ----------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "DELETE", "PURGE", "PUT"])
def test_request_line_and_host_first(gateway, upstream, h3, method):
    gw = gateway()
    target = "/headers/p%%20q/r?q=1&z=%%7E&id=%s" % uid()
    kw = {"body": 100} if method == "PUT" else {}
    r = h3(gw).request(target, method, **kw)
    assert r.error is None and r.status == 200, r
    req = upstream.last_request("/headers/")
    lines = req.raw_head.split(b"\r\n")
    assert lines[0] == b"%s %s HTTP/1.1" % (method.encode(), target.encode()), lines[0]
    assert lines[1].lower() == b"host: " + gw.authority.encode(), (
        "Host (from :authority) must be the first field: %r" % lines[:3])
    assert req.header_all("host") == [gw.authority]
    names = [k.lower() for k, _ in req.headers]
    assert not [n for n in names if n.startswith(":")], names
    if method == "PUT":
        assert req.framing == "content-length" and req.declared_length == 100
        assert req.body_sha256 == expected_sha256(100)
    else:
        assert req.framing == "none" and req.body_len == 0, req


def test_cookie_fields_joined_in_order(gateway, upstream, h3):
    gw = gateway()
    req = get_headers(h3(gw), upstream,
                      ["Cookie: a=1", "X-Between: x", "Cookie: b=2", "Cookie: c=3"])
    assert req.header_all("cookie") == ["a=1; b=2; c=3"], (
        "RFC 9114 4.2.1: cookie fields joined with '; ' into one line: %r"
        % req.header_all("cookie"))
    assert req.header_all("x-between") == ["x"]


# ---- body framing ----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 100 * KiB + 7, 3 * MiB + 1],
                         ids=["1B", "100KiB+7", "3MiB+1"])
def test_unknown_length_body_goes_chunked(gateway, upstream, h3, n):
    gw = gateway()
    r = h3(gw).post("/sink?id=%s" % uid(), n, chunked=True, timeout=60)
    assert r.error is None and r.status == 200, r
    req = upstream.last_request("/sink")
    assert req.header_all("content-length") == [], req.headers
    assert [v.lower() for v in req.header_all("transfer-encoding")] == ["chunked"], (
        req.headers)
    # upstream.Body parsed every chunk-size line and CRLF strictly.
    assert req.framing == "chunked" and req.body_complete, req
    assert req.body_len == n and req.body_sha256 == expected_sha256(n), req
    assert req.trailers == [], req.trailers
    assert r.json() == {"len": n, "sha256": expected_sha256(n), "framing": "chunked"}


def test_empty_unknown_length_body(gateway, upstream, h3):
    gw = gateway()
    r = h3(gw).post("/sink?id=%s" % uid(), 0, chunked=True)
    assert r.error is None and r.status == 200, r
    req = upstream.last_request("/sink")
    assert req.body_complete and req.body_len == 0, req
    assert req.framing in ("chunked", "content-length"), (
        "a POST without framing leaves its length to guesswork: %r" % req.headers)


@pytest.mark.parametrize("n", [0, 1, 256 * KiB + 1, 3 * MiB],
                         ids=["0B", "1B", "256KiB+1", "3MiB"])
def test_known_length_body_keeps_content_length(gateway, upstream, h3, n):
    gw = gateway()
    r = h3(gw).post("/sink?id=%s" % uid(), n, timeout=60)
    assert r.error is None and r.status == 200, r
    req = upstream.last_request("/sink")
    assert req.header_all("transfer-encoding") == [], req.headers
    assert req.header_all("content-length") == [str(n)], req.headers
    assert req.framing == "content-length" and req.body_complete
    assert req.body_len == n and req.body_sha256 == expected_sha256(n)


def test_answer_right_after_complete_body_is_not_an_early_answer(gateway, upstream, h3):
    """The upstream reads the whole (declared-length) body and answers at
    once, possibly before the client's end of stream reached the gateway:
    the body was complete upstream, so this is a normal exchange (200, the
    connection reused), not an answer "before the request body ended"."""
    def fast(conn, req):
        conn.body.drain()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
        return True
    upstream.script("fast-answer", fast)
    gw = gateway()
    cl = h3(gw)
    bad = []
    for i in range(40):
        n = (10, 256 * KiB + 1, 1)[i % 3]
        r = cl.post("/script/fast-answer?i=%d" % i, n)
        if not (r.error is None and r.status == 200 and r.body == b"yes"):
            bad.append((i, n, r))
    assert not bad, "%d of 40 exchanges failed: %s" % (len(bad), bad[:5])
    assert upstream.accepts == 1, upstream.conns
    m = gw.wait_idle()
    assert m["upstream_malformed_responses"] == 0, m


def test_request_trailers_become_chunked_trailers(gateway, upstream):
    """HEADERS, DATA, DATA, trailing HEADERS, end: the upstream gets a
    chunked body whose last chunk carries the trailer fields. libcurl has
    no way to send HTTP/3 request trailers (pycurl lacks TRAILERFUNCTION,
    and libcurl sends trailers only on HTTP/1.1), so h3raw writes them."""
    gw = gateway()
    path = "/sink?t=trailers"
    script = ("linger 100\nstream\nheaders\n  field \":method\" \"POST\"\n"
              "  field \":scheme\" \"https\"\n  field \":authority\" \"%s\"\n"
              "  field \":path\" \"%s\"\nend\n"
              "data-fill 1000\ndata-fill 2345\n"
              "headers\n  field \"x-checksum\" \"abc123\"\n"
              "  field \"x-second\" \"2\"\nend\nfin\n" % (gw.authority, path))
    streams, conn, took = run_h3raw(gw, script, timeout=10 * SLOW)
    st = streams[0]
    assert st["status"] == 200 and st["fin"] and st["reset"] is None, (st, conn)
    req = upstream.last_request(path)
    assert req.framing == "chunked" and req.body_complete, req
    assert req.body_len == 3345, req
    assert req.header_all("content-length") == [], req.headers
    assert [t.lower() for t in req.trailers] == ["x-checksum: abc123", "x-second: 2"], (
        req.trailers)


# ---- Expect: 100-continue ---------------------------------------------------------

def test_expect_100_from_upstream_reaches_client(gateway, upstream, h3):
    """The upstream answers 100 when it starts reading (upstream.Body): the
    client sees the 100, then the final response; the body arrives whole.
    libcurl is told to wait 20 s for the 100, and the gateway 30 s: only a
    forwarded 100 makes this quick."""
    gw = gateway({"upstream": {"expect_continue_timeout": "30s"}})
    n = 200 * KiB
    t0 = time.monotonic()
    r = h3_request_with(h3(gw), "/sink?id=%s" % uid(), "POST",
                        setup=expect_timeout(20000), body=n,
                        headers=["Expect: 100-continue"], timeout=60)
    took = time.monotonic() - t0
    assert r.error is None and r.status == 200, r
    assert block_statuses(r) == [100, 200], r.all_header_blocks
    assert took < 8 * SLOW, "%.1fs: the 100 was not passed on at once" % took
    req = upstream.last_request("/sink")
    assert req.expect_continue, "Expect was not forwarded: %r" % req.headers
    assert req.body_complete and req.body_sha256 == expected_sha256(n)
    assert r.json()["sha256"] == expected_sha256(n)


def test_expect_without_100_body_sent_after_timeout(gateway, upstream, h3):
    """The upstream never says 100 and just waits for the body: the gateway
    holds it for expect_continue_timeout (2 s), then sends it anyway.
    libcurl sends its body after 100 ms, so any hold is the gateway's."""
    def silent(conn, req):
        conn.send_continue_pending = False
        conn.body.drain()
        out = json.dumps({"len": req.body_len, "sha256": req.body_sha256}).encode()
        conn.resp.simple(200, out, "application/json")
        return True
    upstream.script("silent-expect", silent)
    gw = gateway({"upstream": {"expect_continue_timeout": "2s"}})
    n = 64 * KiB
    r = h3_request_with(h3(gw), "/script/silent-expect", "POST",
                        setup=expect_timeout(100), body=n,
                        headers=["Expect: 100-continue"], timeout=60)
    assert r.error is None and r.status == 200, r
    assert r.json() == {"len": n, "sha256": expected_sha256(n)}
    req = upstream.last_request("/script/silent-expect")
    assert req.expect_continue, req.headers
    held = req.t_first_body - req.t_start
    assert held >= 1.2, ("the body reached the upstream %.2fs after the head; "
                         "expect_continue_timeout is 2s" % held)
    assert held < 12 * SLOW, "the body was held %.1fs (timeout 2s)" % held


@pytest.mark.parametrize("code", [401, 413])
def test_expect_final_status_body_never_sent(gateway, upstream, h3, code):
    """The upstream refuses at once without reading: the client gets that
    response and not one body byte goes upstream; since the upstream still
    expects the declared body, the gateway must close that connection.
    (417 is left out: libcurl retries a 417 without Expect, by design.)"""
    seen = {}

    def refuse(conn, req):
        conn.send_continue_pending = False
        time.sleep(0.3)     # time for a gateway that does not hold to send
        msg = b"refused %d\n" % code
        conn.sendall(b"HTTP/1.1 %d Refused\r\nContent-Type: text/plain\r\n"
                     b"WWW-Authenticate: Basic realm=\"e2e\"\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (code, len(msg), msg))
        seen["closed"], seen["bytes"] = conn.discard_until_close(8)
        return False
    upstream.script("refuse", refuse)
    gw = gateway()
    cl = h3(gw)
    r = h3_request_with(cl, "/script/refuse", "POST", setup=expect_timeout(100),
                        body=256 * KiB, headers=["Expect: 100-continue"], timeout=30)
    assert r.error is None, r
    assert r.status == code, r
    assert r.body == b"refused %d\n" % code
    assert 100 not in block_statuses(r), r.all_header_blocks
    req = upstream.last_request("/script/refuse")
    upstream.wait_conn_closed(req.conn_id, timeout=10)
    assert seen.get("bytes") == 0, (
        "%s body bytes reached the upstream after it answered %d"
        % (seen.get("bytes"), code))
    assert seen.get("closed"), "the gateway kept a connection that still owes a body"
    assert req.body_len == 0
    # The next request works, on a fresh connection.
    r2 = cl.get("/bytes/100")
    assert r2.error is None and r2.status == 200 and r2.body_len == 100, r2
    assert upstream.last_request("/bytes/100").conn_id != req.conn_id


# ---- forwarding fields -------------------------------------------------------------

FWD_CASES = {
    "defaults": {},
    "forwarded-on": {"forwarded": "on"},
    "x-forwarded-off": {"x_forwarded": "off"},
    "via-off": {"via": "off"},
    "all-on": {"forwarded": "on", "x_forwarded": "on", "via": "on"},
    "all-off": {"forwarded": "off", "x_forwarded": "off", "via": "off"},
}


@pytest.mark.parametrize("case", list(FWD_CASES))
def test_forwarding_fields(gateway, upstream, h3, case):
    keys = FWD_CASES[case]
    gw = gateway({"forwarding": keys} if keys else None)
    req = get_headers(h3(gw), upstream)
    on = {"forwarded": False, "x_forwarded": True, "via": True}
    on.update({k: v == "on" for k, v in keys.items()})
    got = fwd_fields(req)
    want = {
        "x-forwarded-for": ["127.0.0.1"] if on["x_forwarded"] else [],
        "x-forwarded-proto": ["https"] if on["x_forwarded"] else [],
        "x-forwarded-host": [gw.authority] if on["x_forwarded"] else [],
        "via": ["3 h3gate"] if on["via"] else [],
    }
    for name, value in want.items():
        assert got[name] == value, "%s: %s is %r, want %r" % (case, name, got[name], value)
    if on["forwarded"]:
        assert len(got["forwarded"]) == 1, got["forwarded"]
        els = parse_forwarded(got["forwarded"][0])
        assert [[(k, v) for k, v, _ in el] for el in els] == [our_forwarded(gw)], (
            got["forwarded"])
    else:
        assert got["forwarded"] == [], got["forwarded"]


SPOOF = ["X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: http",
         "X-Forwarded-Host: evil.example", "X-Forwarded-Port: 1",
         "Forwarded: for=6.6.6.6;proto=http", "Via: 1.1 evil-proxy"]


@pytest.mark.parametrize("trusted", [None, "10.0.0.0/8, ::1"],
                         ids=["nobody-trusted", "others-trusted"])
def test_spoofed_forwarding_fields_dropped(gateway, upstream, h3, trusted):
    fwd = {"forwarded": "on"}
    if trusted:
        fwd["trusted_proxies"] = trusted
    gw = gateway({"forwarding": fwd})
    req = get_headers(h3(gw), upstream, SPOOF)
    got = fwd_fields(req)
    assert got["x-forwarded-for"] == ["127.0.0.1"], got
    assert got["x-forwarded-proto"] == ["https"], got
    assert got["x-forwarded-host"] == [gw.authority], got
    assert got["via"] == ["3 h3gate"], got
    assert len(got["forwarded"]) == 1, got
    els = parse_forwarded(got["forwarded"][0])
    assert [[(k, v) for k, v, _ in el] for el in els] == [our_forwarded(gw)], got
    assert "1" not in req.header_all("x-forwarded-port"), req.headers
    assert "6.6.6.6" not in req.raw_head.decode("latin-1")
    assert "evil" not in req.raw_head.decode("latin-1")


@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.0/8", "::1, 127.0.0.1/32"])
def test_trusted_proxy_fields_kept_and_appended(gateway, upstream, h3, trusted):
    gw = gateway({"forwarding": {"forwarded": "on", "trusted_proxies": trusted}})
    cl = h3(gw)
    req = get_headers(cl, upstream, SPOOF)
    got = fwd_fields(req)
    assert got["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"], got
    assert got["x-forwarded-proto"] == ["http"], got
    assert got["x-forwarded-host"] == ["evil.example"], got
    assert got["via"] == ["1.1 evil-proxy, 3 h3gate"], got
    assert len(got["forwarded"]) == 1, got
    els = parse_forwarded(got["forwarded"][0])
    assert len(els) == 2, got["forwarded"]
    assert [(k, v) for k, v, _ in els[0]] == [("for", "6.6.6.6"), ("proto", "http")]
    assert [(k, v) for k, v, _ in els[1]] == our_forwarded(gw), got["forwarded"]

    # Several incoming fields are one list: ours goes at its end.
    req = get_headers(cl, upstream, ["X-Forwarded-For: 1.1.1.1",
                                     "X-Forwarded-For: 2.2.2.2, 3.3.3.3"])
    assert req.header_all("x-forwarded-for") == ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"], (
        req.headers)
    # Nothing incoming: just ours, no stray separator.
    req = get_headers(cl, upstream)
    got = fwd_fields(req)
    assert got["x-forwarded-for"] == ["127.0.0.1"], got
    assert got["via"] == ["3 h3gate"], got
    assert got["x-forwarded-proto"] == ["https"], got
    assert got["x-forwarded-host"] == [gw.authority], got
    assert [[(k, v) for k, v, _ in el] for el in parse_forwarded(got["forwarded"][0])] \
        == [our_forwarded(gw)], got


def test_forwarded_quotes_ipv6_and_host(gateway, upstream, h3):
    """Over IPv6: for="[::1]" (RFC 7239 6: quoted, bracketed), and the host
    value "localhost:PORT" quoted too (':' is not a token character)."""
    try:
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
    except OSError as e:
        require(False, "no IPv6 loopback here: %s" % e)
    gw = gateway({"listener": {"address": "::1"}, "forwarding": {"forwarded": "on"}})
    assert re.search(r"ready: udp \[::1\]:%d\b" % gw.port, gw.stderr_text())

    def v6(c, t):
        c.setopt(pycurl.RESOLVE, ["localhost:%d:[::1]" % gw.port])
    tag = uid()
    r = h3_request_with(h3(gw), "/headers?id=%s" % tag, setup=v6)
    assert r.error is None and r.status == 200, r
    req = upstream.last_request("/headers?id=%s" % tag)
    got = fwd_fields(req)
    assert got["x-forwarded-for"] == ["::1"], got
    assert len(got["forwarded"]) == 1, got
    els = parse_forwarded(got["forwarded"][0])
    assert len(els) == 1, got
    pairs = {k: (v, raw) for k, v, raw in els[0]}
    assert pairs["for"] == ("[::1]", '"[::1]"'), got["forwarded"]
    assert pairs["host"] == (gw.authority, '"%s"' % gw.authority), got["forwarded"]
    assert pairs["proto"][0] == "https", got["forwarded"]


# ---- max_request_body --------------------------------------------------------------

def test_declared_length_over_limit_413_nothing_upstream(gateway, upstream, h3):
    gw = gateway({"listener": {"max_request_body": "1KiB"}})
    cl = h3(gw)
    r = cl.post("/sink?t=at-limit", 1024)
    assert r.error is None and r.status == 200, r
    assert r.json()["len"] == 1024
    accepts = upstream.accepts
    before = gw.metrics()
    r = cl.post("/sink?t=over", 1025)
    assert r.error is None and r.status == 413, r
    r = cl.post("/sink?t=way-over", 50 * MiB, timeout=30)
    assert r.error is None and r.status == 413, r
    gw.wait_idle()
    assert upstream.requests_for("/sink?t=over") == []
    assert upstream.requests_for("/sink?t=way-over") == []
    assert upstream.accepts == accepts, upstream.conns
    m = gw.wait_idle()
    assert m["responses_4xx"] - before["responses_4xx"] == 2, m
    assert m["responses_generated"] - before["responses_generated"] == 2, m
    # The QUIC connection and the pooled upstream connection still serve.
    r = cl.get("/bytes/10")
    assert r.error is None and r.status == 200 and r.num_connects == 0, r
    assert upstream.last_request("/bytes/10").conn_id == upstream.last_request(
        "/sink?t=at-limit").conn_id


def test_unknown_length_over_limit_413_and_upstream_closed(gateway, upstream, h3):
    gw = gateway({"listener": {"max_request_body": "64KiB"}})
    cl = h3(gw)
    r = cl.post("/sink?t=under", 64 * KiB, chunked=True)
    assert r.error is None and r.status == 200, r
    assert r.json() == {"len": 64 * KiB, "sha256": expected_sha256(64 * KiB),
                        "framing": "chunked"}
    # /sink answers only after the whole body: no response head is out
    # when the body passes the limit, so the client gets a 413.
    r = cl.post("/sink?t=over", 1 * MiB, chunked=True, timeout=30)
    assert r.status == 413, r
    reqs = upstream.requests_for("/sink?t=over")
    assert len(reqs) <= 1
    if reqs:
        req = reqs[0]
        assert not req.body_complete, "the upstream got a whole body over the limit"
        assert req.body_len <= 64 * KiB, req
        c = upstream.wait_conn_closed(req.conn_id)
        assert c.closed_by == "peer", c
    r = cl.get("/bytes/10")
    assert r.error is None and r.status == 200, r
    if reqs:
        assert upstream.last_request("/bytes/10").conn_id != reqs[0].conn_id
    gw.wait_idle()


def test_unknown_length_over_limit_after_response_head_resets(gateway, upstream, h3):
    """/echo answers at once: when the body passes the limit the head may
    be out already; then the stream is reset. Never a clean 200."""
    gw = gateway({"listener": {"max_request_body": "64KiB"}})
    cl = h3(gw)
    r = cl.post("/echo?t=over", 2 * MiB, chunked=True, timeout=30)
    assert not (r.error is None and r.status == 200), (
        "a body over max_request_body was echoed in full: %s" % r)
    assert r.status == 413 or r.error is not None, r
    req = upstream.last_request("/echo?t=over")
    if req is not None:
        assert req.body_len <= 64 * KiB, req
        c = upstream.wait_conn_closed(req.conn_id)
        assert c.closed_by == "peer", c
    r = cl.get("/bytes/10")
    assert r.error is None and r.status == 200, r
    gw.wait_idle()


# ---- request_header_timeout -----------------------------------------------------------

H3_REQUEST_REJECTED = 0x10B


def run_h3raw(gw, script, timeout):
    """Runs tests/tools/h3raw (testenv.h3raw); returns (stream reports,
    connection report, seconds it took)."""
    t0 = time.monotonic()
    run = run_h3raw_shared(gw, script, timeout)
    return run.streams, run.conn, time.monotonic() - t0


def good_stream(gw, path):
    return ("stream\nheaders\n  field \":method\" \"GET\"\n  field \":scheme\" \"https\"\n"
            "  field \":authority\" \"%s\"\n  field \":path\" \"%s\"\nend\nfin\n"
            % (gw.authority, path))


# A HEADERS frame that promises 32 bytes of field section and delivers only
# its 2-byte QPACK prefix: the section can never complete.
PARTIAL_HEADERS = 'raw "\\x01\\x20\\x00\\x00"\n'


@pytest.mark.parametrize("how", ["stalled", "trickled"])
def test_request_header_timeout_resets_stream(gateway, upstream, how):
    gw = gateway({"listener": {"request_header_timeout": "1s"}})
    if how == "stalled":
        first = "stream\n" + PARTIAL_HEADERS
    else:
        # One byte of the frame every 300 ms: progress does not extend the
        # limit, which is for the whole header section.
        first = "stream\n" + "".join('raw "\\x%02x"\npause 300\n' % b
                                     for b in b"\x01\x20\x00\x00" + b"\x51" * 12)
    script = "linger 200\n" + first + good_stream(gw, "/bytes/7?after=%s" % how)
    streams, conn, took = run_h3raw(gw, script, timeout=10 * SLOW)
    st, good = streams
    assert not st["timeout"], "the stalled stream was never reset: %s" % streams
    assert st["reset"] == H3_REQUEST_REJECTED, (
        "want a reset with H3_REQUEST_REJECTED (0x10b): %s" % st)
    assert st["status"] is None, st
    assert good["status"] == 200 and good["body_len"] == 7 and good["fin"], (
        "the connection should outlive the stalled stream: %s %s" % (good, conn))
    assert conn["connection_close"] in (None, 0x100), conn
    if how == "stalled":
        assert 0.8 <= took < 8 * SLOW, "the stream was reset after %.1fs (limit 1s)" % took
    assert [r.target for r in upstream.requests] == ["/bytes/7?after=%s" % how], (
        upstream.requests)
    gw.wait_metrics(lambda m: m["h3_streams_active"] == 0 and m["upstream_conns_busy"] == 0,
                    what="the stalled stream released")


def test_request_header_timeout_spares_slow_body(gateway, upstream):
    """The limit is for the header section only: a body that takes longer
    than it is fine."""
    gw = gateway({"listener": {"request_header_timeout": "1s"}})
    path = "/sink?t=slow-body"
    script = ("linger 100\nstream\nheaders\n  field \":method\" \"POST\"\n"
              "  field \":scheme\" \"https\"\n  field \":authority\" \"%s\"\n"
              "  field \":path\" \"%s\"\n  field \"content-length\" \"30\"\nend\n"
              % (gw.authority, path)
              + "".join("data-fill 10\npause 700\n" for _ in range(3)) + "fin\n")
    streams, conn, took = run_h3raw(gw, script, timeout=15 * SLOW)
    st = streams[0]
    assert st["status"] == 200 and st["fin"] and st["reset"] is None, (st, conn)
    req = upstream.last_request(path)
    assert req.body_complete and req.body_len == 30, req
