#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets whose inputs are op codes
(fuzz_h3_shadow, fuzz_stream_bridge) into tests/fuzz/corpus/<target>/, so
that each seed says what it is. The formats are described at the top of
each target's source; run this after changing one (the other corpora are
plain protocol text, written by hand).

    /usr/bin/python3 tests/fuzz/make_seeds.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data, kind="corpus"):
    d = os.path.join(HERE, kind, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# ---- fuzz_h3_shadow ---------------------------------------------------------

SHADOW_DICT = [
    ":method", ":scheme", ":authority", ":path", ":protocol", ":status",
    ":foo", "content-length", "host", "te", "connection", "keep-alive",
    "proxy-connection", "transfer-encoding", "upgrade", "cookie", "priority",
    "expect", "Content-Length", "x-a", "GET", "POST", "HEAD", "CONNECT",
    "https", "http", "example.com", "example.com:443", "a@b", "/", "/x?y=1",
    "*", "0", "5", "10", "1, 1", "01", "-1", "18446744073709551616",
    "trailers", "gzip", "100-continue", " x", "x ", "x\ty", "a\r\nb", "a\nb",
    "", "u=1, i", "x:y", "\x7f", "\x80\xff",
]


def sd(word):
    """A shadow string: a dictionary entry."""
    return [0x80 | SHADOW_DICT.index(word)]


def shadow_seeds():
    t = "fuzz_h3_shadow"
    REQ_GET, REQ_POST = 0x05, 0x05 | (1 << 3)

    def req(post, extra):
        return (0x05 | (((extra << 1) | post) << 3))

    def lit(name, value):  # literal name and value
        return [2] + sd(name) + sd(value)

    END = 0x04

    def data(n):
        return [0x01 | ((n >> 8) << 3), n & 0xff]

    write(t, "get", [0x00, 0, REQ_GET, 0x00, END])
    write(t, "post-cl-data",
          [0x00, 0, req(1, 1)] + lit("content-length", "5") + [0x00]
          + data(5) + [END])
    write(t, "post-cl-data-encoder-cuts",
          [0x04, 3, 1, 2, 3, req(1, 1)] + lit("content-length", "5")
          + [0x01] + data(5) + [END])
    write(t, "post-trailers",
          [0x00, 2, 7, 0, REQ_POST, 0x00] + data(3)
          + [0x00 | (1 << 3)] + lit("x-a", "0") + [0x00, END])
    write(t, "uppercase-name",
          [0x00, 0, req(0, 1)] + lit("Content-Length", "5") + [0x00, END])
    write(t, "cl-longer-than-body",
          [0x00, 0, req(1, 1)] + lit("content-length", "10") + [0x00]
          + data(5) + [END])
    write(t, "data-beyond-cl",
          [0x08, 1, 9, req(1, 1)] + lit("content-length", "5") + [0x00]
          + data(9) + [END])
    write(t, "crlf-value-encoder",
          [0x00, 0, req(0, 1)] + lit("x-a", "a\r\nb") + [0x01, END])
    write(t, "varint8-unknown-frames",
          [0x04, 2, 1, 0, REQ_POST, 0x00, 0x02, 3, 0x02 | (3 << 3), 0,
           0x06 | (3 << 3), 7, 0x06 | (2 << 3), 0, END])
    # static table references: :method GET, :scheme https, :authority and
    # :path with literal values, then an indexed "accept: */*" (31)
    write(t, "static-refs",
          [0x00, 0, 0x00 | (5 << 3), 0, 17, 0, 23, 1, 0] + sd("example.com")
          + [1, 1] + sd("/") + [0, 31, 0x00, END])
    write(t, "te-trailers-and-connection",
          [0x00, 0, req(0, 2)] + lit("te", "trailers")
          + lit("connection", "keep-alive") + [0x00, END])
    write(t, "no-fin", [0x02, 0, REQ_POST, 0x00] + data(3) + [END])
    write(t, "headers-frame-one-short", [0x00, 0, REQ_GET, 0x02, END])
    sec = (bytes([0, 0, 0xc0 | 17, 0xc0 | 23, 0x50, 11]) + b"example.com"
           + bytes([0x51, 1]) + b"/")
    write(t, "raw-get", bytes([0x01, 0, 0x01, len(sec)]) + sec)


# ---- fuzz_stream_bridge -------------------------------------------------------

BRIDGE_DICT = [
    ":method", ":scheme", ":authority", ":path", ":protocol",
    "content-length", "host", "te", "connection", "transfer-encoding",
    "cookie", "priority", "expect", "early-data", "x-forwarded-for",
    "forwarded", "via", "x-forwarded-proto", "x-forwarded-host", "x-a",
    "GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "https",
    "example.com", "/", "*", "0", "3", "10", "100", "70000", "trailers",
    "100-continue", "u=0, i", "1", "a=b", "1.2.3.4", "Content-Length",
    " x", "a\r\nb", "",
]
METHODS = ["GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "PATCH", "BREW"]
BODY_SIZES = [1, 5, 100, 1000, 4096, 10000, 33000, 70000]
READ_ALL = 7


def bd(word):
    return 0x80 | BRIDGE_DICT.index(word)


def op(kind, arg=0):
    return kind | (arg << 4)


def field(name, value):
    return [op(0), bd(name), bd(value)]


def trailer(name, value):
    return [op(4), bd(name), bd(value)]


def head(method, authority=True):
    return [op(1, METHODS.index(method) | (8 if authority else 0))]


def end_headers(end_stream):
    return [op(2, 1 if end_stream else 0)]


def body(size):
    return [op(3, BODY_SIZES.index(size))]


def body_raw(data):
    return [op(3, 8), len(data)] + list(data)


END_REQUEST = [op(5)]
ABORT, REJECT, EARLY, HANDSHAKE = [op(6, 0)], [op(6, 2)], [op(6, 4)], [op(6, 6)]
READY, READY_REUSED, FAIL_REFUSED = [op(7, 0)], [op(7, 1)], [op(7, 8)]
WRITTEN, WRITE_FAILED = [op(12, 0)], [op(12, 1)]
EOF, RESET = [op(11, 1)], [op(11, 0)]
TAKE_ALL = [op(13, 1 | (3 << 2))]
TAKE_SMALL = [op(13, 0 | (1 << 2))]
DONE_ALL, DONE_HALF = [op(14, 0)], [op(14, 2)]


def canned(i, read=READ_ALL):
    return [op(8, i), read]


def filler(n_index, read=READ_ALL):
    return [op(9, read), 0xff, n_index]


def raw(data, read=READ_ALL):
    assert len(data) < 0xff
    return [op(9, read), len(data)] + list(data)


def deliver(read=READ_ALL):
    return [op(10, read)]


def time(ms_index):
    return [op(15, ms_index)]


def cfg(sbs=1, mhs=2, mrb=0, window=True, inflight=False, msw=1,
        body_timeout=False, early=False, fwd=0b111, trusted=False,
        acquire_fails=0, timer_fails=0, no_timers=False, head_fails=0,
        write_fails=0, rtt=2, v6=False, ws=False, ws_route_off=False,
        no_tunnels=False, no_tunnel_allowed=False, h1=False):
    return [
        sbs | (mhs << 2) | (mrb << 4) | (0x40 if window else 0)
        | (0x80 if inflight else 0),
        msw | (4 if body_timeout else 0) | (8 if early else 0) | (fwd << 4)
        | (0x80 if trusted else 0),
        acquire_fails | (timer_fails << 4) | (0x80 if no_timers else 0),
        head_fails | (write_fails << 4),
        rtt | (4 if v6 else 0) | (8 if ws else 0)
        | (0x10 if ws_route_off else 0) | (0x20 if no_tunnels else 0)
        | (0x40 if no_tunnel_allowed else 0) | (0x80 if h1 else 0),
    ]


# WebSockets (cfg(ws=True)): the request head is an extended CONNECT.
WS_PROTOCOLS = ["websocket", "websocket", "WebSocket", "foo"]


def ws_head(protocol="websocket", key=False, content_length=False):
    return [op(1, WS_PROTOCOLS.index(protocol) | (4 if key else 0)
               | (8 if content_length else 0))]


# The upstream's answers to the handshake (ev_ws_answer()).
WS_101, WS_101_PROTOCOL, WS_101_WRONG_ACCEPT, WS_101_NO_UPGRADE = 0, 1, 2, 3
WS_101_NO_ACCEPT, WS_101_CONTENT_LENGTH, WS_100_101, WS_200 = 4, 5, 6, 7


def ws_answer(form, frames=False, read=READ_ALL):
    return [op(9, 0), 0xfe, form | (8 if frames else 0) | (read << 4)]


def bridge_seeds():
    t = "fuzz_stream_bridge"
    get = head("GET") + end_headers(True) + READY + WRITTEN
    write(t, "get-200", cfg() + get + canned(0) + TAKE_ALL + DONE_ALL)
    write(t, "get-chunked-trailers-upstream",
          cfg() + get
          + raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n")
          + raw(b"x\r\n0\r\nx-t: 1\r\n") + raw(b"\r\n") + TAKE_ALL
          + DONE_ALL)
    write(t, "post-chunked-trailers",
          cfg() + head("POST") + end_headers(False) + READY + WRITTEN
          + body(100) + WRITTEN + trailer("x-a", "1") + END_REQUEST
          + WRITTEN + canned(1) + TAKE_ALL + DONE_ALL)
    write(t, "post-content-length-connection-close",
          cfg(trusted=True) + head("POST") + field("content-length", "10")
          + field("x-forwarded-for", "1.2.3.4") + end_headers(False)
          + body_raw(b"0123456789") + END_REQUEST + READY + WRITTEN
          + canned(9) + TAKE_ALL)
    write(t, "expect-continue",
          cfg() + head("PUT") + field("expect", "100-continue")
          + field("content-length", "3") + end_headers(False) + READY
          + WRITTEN + canned(3) + body_raw(b"abc") + END_REQUEST + WRITTEN
          + canned(0) + TAKE_ALL + time(9))
    write(t, "expect-continue-timeout",
          cfg() + head("PUT") + field("expect", "100-continue")
          + end_headers(False) + READY + WRITTEN + body(5) + time(9)
          + WRITTEN + END_REQUEST + WRITTEN + canned(0) + TAKE_ALL)
    write(t, "early-data-425-retried",
          cfg(early=True) + EARLY + head("GET") + end_headers(True) + READY
          + WRITTEN + canned(7) + HANDSHAKE + READY + WRITTEN + canned(0)
          + TAKE_ALL)
    write(t, "early-data-post-held",
          cfg(early=True) + EARLY + head("POST") + end_headers(False)
          + body(5) + END_REQUEST + HANDSHAKE + READY + WRITTEN
          + canned(0) + TAKE_ALL)
    write(t, "backpressure-large-response",
          cfg(sbs=0, inflight=True) + get + canned(13)
          + filler(7, 5) + TAKE_SMALL + DONE_HALF + deliver(6) + TAKE_ALL
          + DONE_ALL + deliver() + TAKE_ALL + DONE_ALL + deliver()
          + TAKE_ALL + DONE_ALL)
    write(t, "upload-window-grows",
          cfg(sbs=1, msw=2, rtt=3) + head("PUT") + end_headers(False)
          + READY + WRITTEN + body(4096) + WRITTEN + body(4096) + WRITTEN
          + body(10000) + WRITTEN + body(10000) + WRITTEN + END_REQUEST
          + WRITTEN + canned(0) + TAKE_ALL)
    write(t, "body-limit-413",
          cfg(mrb=1) + head("POST") + end_headers(False) + READY + WRITTEN
          + body(100) + TAKE_ALL)
    write(t, "content-length-over-limit-413",
          cfg(mrb=1) + head("POST") + field("content-length", "100")
          + end_headers(False) + TAKE_ALL)
    write(t, "malformed-uppercase",
          cfg() + head("GET") + field("Content-Length", "3")
          + end_headers(True))
    write(t, "header-timeout", cfg() + head("GET") + time(13))
    write(t, "body-timeout-408",
          cfg(body_timeout=True) + head("POST") + end_headers(False) + READY
          + WRITTEN + body(5) + WRITTEN + time(7) + TAKE_ALL)
    write(t, "stale-connection-retried",
          cfg() + head("GET") + end_headers(True) + READY_REUSED + WRITTEN
          + EOF + READY + WRITTEN + canned(0) + TAKE_ALL)
    write(t, "connect-refused-502",
          cfg() + head("GET") + end_headers(True) + FAIL_REFUSED + TAKE_ALL)
    write(t, "malformed-response-502",
          cfg() + get + canned(11) + TAKE_ALL)
    write(t, "truncated-body-reset",
          cfg() + get + canned(13) + filler(2) + TAKE_ALL + RESET)
    write(t, "head-431",
          cfg(mhs=0) + head("HEAD") + [op(0), bd("x-a"), 0x7f] + [0x61] * 63
          + [op(0), bd("x-a"), 0x7f] + [0x62] * 63
          + [op(0), bd("x-a"), 0x7f] + [0x63] * 63
          + [op(0), bd("x-a"), 0x7f] + [0x64] * 63
          + [op(0), bd("x-a"), 0x7f] + [0x65] * 63
          + end_headers(True) + TAKE_ALL)
    write(t, "client-abort-mid-response",
          cfg() + get + canned(13) + filler(2) + TAKE_ALL + ABORT)
    write(t, "reject-while-waiting",
          cfg() + head("POST") + end_headers(False) + body(5) + REJECT)
    write(t, "interim-103-and-hop-by-hop",
          cfg() + get + canned(4) + canned(12) + TAKE_ALL + DONE_ALL)
    write(t, "head-request-204-304",
          cfg() + head("HEAD") + end_headers(True) + READY + WRITTEN
          + canned(6) + TAKE_ALL)
    write(t, "close-delimited",
          cfg() + get + canned(8) + EOF + TAKE_ALL)
    write(t, "answer-before-body-desync",
          cfg() + head("POST") + field("content-length", "100")
          + end_headers(False) + READY + WRITTEN + body(5) + WRITTEN
          + canned(0) + TAKE_ALL)
    write(t, "write-failed",
          cfg() + head("GET") + end_headers(True) + READY + WRITE_FAILED
          + TAKE_ALL)
    write(t, "no-timers-ipv6",
          cfg(no_timers=True, v6=True, trusted=True) + head("OPTIONS")
          + field("forwarded", "a=b") + end_headers(True) + READY + WRITTEN
          + canned(0) + TAKE_ALL)


def ws_seeds():
    t = "fuzz_stream_bridge"
    ws = cfg(ws=True)
    asked = ws_head() + end_headers(False) + body_raw(b"held") + READY \
        + WRITTEN
    opened = asked + ws_answer(WS_101, frames=True) + TAKE_ALL + DONE_ALL \
        + WRITTEN
    write(t, "ws-h3-tunnel",
          ws + ws_head(key=True) + end_headers(False) + body_raw(b"held")
          + READY + WRITTEN + ws_answer(WS_101_PROTOCOL, frames=True)
          + TAKE_ALL + DONE_ALL + WRITTEN + body_raw(b"more") + WRITTEN
          + END_REQUEST + raw(b"bye") + TAKE_ALL + DONE_ALL + EOF + TAKE_ALL)
    write(t, "ws-h3-client-fin-first",
          ws + opened + END_REQUEST + raw(b"\x88\x00") + EOF + TAKE_ALL
          + DONE_ALL)
    write(t, "ws-h3-101-in-pieces",
          ws + asked + ws_answer(WS_100_101, frames=True, read=2) + TAKE_ALL
          + DONE_ALL + WRITTEN)
    for name, form in [("wrong-accept", WS_101_WRONG_ACCEPT),
                       ("no-upgrade", WS_101_NO_UPGRADE),
                       ("no-accept", WS_101_NO_ACCEPT),
                       ("200", WS_200)]:
        write(t, "ws-h3-%s-502" % name,
              ws + asked + ws_answer(form, frames=True) + TAKE_ALL
              + body_raw(b"late") + END_REQUEST)
    write(t, "ws-h3-403-passed",
          ws + asked
          + raw(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
          + TAKE_ALL + DONE_ALL + body_raw(b"late") + END_REQUEST)
    write(t, "ws-h3-stale-connection-retried",
          ws + ws_head() + end_headers(False) + body_raw(b"held")
          + READY_REUSED + WRITTEN + EOF + READY + WRITTEN
          + ws_answer(WS_101) + WRITTEN + TAKE_ALL)
    write(t, "ws-idle-timeout", ws + opened + time(11) + TAKE_ALL)
    write(t, "ws-client-abort-reset", ws + opened + body(100) + ABORT)
    write(t, "ws-upstream-reset", ws + opened + RESET + TAKE_ALL)
    write(t, "ws-backpressure",
          cfg(sbs=0, ws=True) + opened + filler(7, 5) + TAKE_SMALL
          + DONE_HALF + deliver(6) + body(4096) + TAKE_ALL + DONE_ALL
          + WRITTEN + deliver() + TAKE_ALL + DONE_ALL)
    write(t, "ws-unknown-protocol-501",
          ws + ws_head("foo") + end_headers(False) + TAKE_ALL)
    write(t, "ws-case-insensitive-token",
          ws + ws_head("WebSocket") + end_headers(False) + READY + WRITTEN
          + ws_answer(WS_101) + TAKE_ALL)
    write(t, "ws-with-body-400",
          ws + ws_head(content_length=True) + end_headers(False) + TAKE_ALL)
    write(t, "ws-route-off-501",
          cfg(ws=True, ws_route_off=True) + ws_head() + end_headers(False)
          + TAKE_ALL)
    write(t, "ws-front-end-without-tunnels-501",
          cfg(ws=True, no_tunnels=True) + ws_head() + end_headers(False)
          + TAKE_ALL)
    write(t, "ws-over-limit-503",
          cfg(ws=True, no_tunnel_allowed=True) + ws_head()
          + end_headers(False) + TAKE_ALL)
    write(t, "ws-not-offered-malformed",
          cfg() + field(":method", "CONNECT") + field(":protocol", "https")
          + field(":scheme", "https") + field(":authority", "example.com")
          + field(":path", "/") + end_headers(False))
    h1 = cfg(ws=True, h1=True, window=False)
    write(t, "ws-h1-tunnel",
          h1 + ws_head(key=True) + end_headers(False) + READY + WRITTEN
          + ws_answer(WS_101_PROTOCOL, frames=True) + TAKE_ALL + DONE_ALL
          + body_raw(b"up") + WRITTEN + END_REQUEST + EOF + TAKE_ALL)
    write(t, "ws-h1-wrong-accept-502",
          h1 + ws_head(key=True) + end_headers(False) + READY + WRITTEN
          + ws_answer(WS_101_WRONG_ACCEPT) + TAKE_ALL)
    write(t, "ws-h1-200-passed",
          h1 + ws_head(key=True) + end_headers(False) + READY + WRITTEN
          + ws_answer(WS_200) + TAKE_ALL)
    write(t, "ws-h1-no-key-400",
          h1 + ws_head() + end_headers(False) + TAKE_ALL)
    write(t, "ws-h1-route-off-plain-get",
          cfg(ws=True, h1=True, ws_route_off=True) + ws_head(key=True)
          + end_headers(False) + READY + WRITTEN + body(5) + canned(0)
          + TAKE_ALL)


def ws_regressions():
    """Inputs that break an invariant of fuzz_stream_bridge with the
    bridge of 552e008 (found reading it; ctest replays
    tests/fuzz/regression/)."""
    t = "fuzz_stream_bridge"
    ws = cfg(ws=True)
    asked = ws_head() + end_headers(False) + body_raw(b"held") + READY \
        + WRITTEN
    # The client's bytes after the upstream's end of its side were
    # credited and dropped, not written (the connection waits for them).
    write(t, "ws-upstream-ends-first-client-bytes-dropped",
          ws + asked + ws_answer(WS_101) + WRITTEN + EOF + TAKE_ALL
          + body_raw(b"late") + WRITTEN + END_REQUEST, "regression")
    # A 101 before the handshake's write completed: the completion put the
    # response timeout on the tunnel's connection.
    write(t, "ws-101-before-handshake-written-read-timeout",
          ws + ws_head() + end_headers(False) + body_raw(b"held") + READY
          + ws_answer(WS_101) + WRITTEN + WRITTEN + TAKE_ALL, "regression")
    # The 101's content-length went to the HTTP/3 client's 200.
    write(t, "ws-101-content-length-on-200",
          ws + asked + ws_answer(WS_101_CONTENT_LENGTH) + TAKE_ALL,
          "regression")
    # An HTTP/1.1 handshake with a Content-Length on a route without
    # WebSockets: the plain GET went with "Content-Length: 3" but was taken
    # as ended, and its connection given back as reusable without the
    # body the upstream waits for (a desync of the next request).
    write(t, "ws-h1-route-off-get-with-body-desync",
          cfg(ws=True, h1=True, ws_route_off=True, window=False)
          + ws_head(key=True, content_length=True) + end_headers(False)
          + READY + WRITTEN + canned(0) + TAKE_ALL, "regression")


if __name__ == "__main__":
    shadow_seeds()
    bridge_seeds()
    ws_seeds()
    ws_regressions()
