"""Malformed HTTP/3 requests are rejected, never repaired and forwarded
(RFC 9114 §4.1.2, §4.2, §4.3; issue 3).

libcurl and browsers cannot send a malformed request, so these tests use
h3raw (tests/tools/h3raw.c), which writes HEADERS and DATA frames and QPACK
field sections byte by byte. Each case sends one malformed request on a
fresh stream and then a good GET on the same connection, and checks:

  - the malformed stream was reset with H3_MESSAGE_ERROR or answered 400,
    never 2xx;
  - the upstream received nothing for it (for the cases whose defect is in
    the body or the trailers, which a streaming gateway sees only after it
    forwarded the head: the upstream never received a complete request);
  - the good GET then succeeded on the same, still open, connection.

The two frame-sequence cases (DATA before HEADERS, DATA after trailers) are
connection errors of type H3_FRAME_UNEXPECTED in RFC 9114 §4.1; there the
connection may close and the follow-up GET uses a new one.

Every failure message carries the h3raw script that reproduces it:
  h3raw --host 127.0.0.1 --port PORT --ca CA --script FILE

Environment: H3GATE_H3RAW, the h3raw binary (ctest sets it).
"""

import pytest

from conftest import SLOW, GatewayFactory, Upstream
from testenv.h3raw import (H3_FRAME_UNEXPECTED, H3_MESSAGE_ERROR, Script,
                           Stream, q)
from testenv.h3raw import run_h3raw as h3raw

GOOD_LEN = 7


def request(gw, path, method="GET", extra=()):
    return [(":method", method), (":scheme", "https"),
            (":authority", gw.authority), (":path", path)] + list(extra)


def good_get(gw, path):
    return Stream().headers(request(gw, path)).fin()


# --------------------------------------------------------------------------
# fixtures and checks

@pytest.fixture(scope="module")
def env(tmp_path_factory, certs):
    """One upstream and one gateway for the module (cases use unique paths)."""
    up = Upstream(name="malformed-upstream").start()
    f = GatewayFactory(tmp_path_factory, certs, lambda: up)
    gw = f(name="malformed-gw")
    yield gw, up
    f.finish()
    up.stop()
    up.assert_clean()


class Mark:
    """What the upstream and the metrics held before a case."""

    def __init__(self, gw, up):
        self.gw = gw
        self.up = up
        with up.lock:
            self.nreq = len(up.requests)
            self.nerr = len(up.errors)
        self.metrics = gw.metrics()

    def new_requests(self):
        self.gw.wait_idle()
        with self.up.lock:
            return list(self.up.requests[self.nreq:]), list(self.up.errors[self.nerr:])


def check_rejected(st, allow=(H3_MESSAGE_ERROR,)):
    """Problems (a list of strings) unless the stream was refused: reset
    with an allowed code, or answered 400. A 2xx is never acceptable."""
    if st["timeout"]:
        return ["no answer to the malformed request within the timeout"]
    status = st["status"]
    if status is not None and 200 <= status < 300:
        return ["the malformed request was answered %d: it was forwarded" % status]
    if st["reset"] is not None:
        if st["reset"] not in allow:
            return ["the malformed stream was reset with 0x%x, want %s" % (
                st["reset"], " or ".join("0x%x" % a for a in allow))]
        return []
    if status == 400 and st["fin"]:
        return []
    return ["the malformed request was neither reset nor answered 400 "
            "(status %s, fin %s)" % (status, st["fin"])]


def check_good(st):
    if st["stream"] is None:
        return ["the good request after the malformed one was never sent "
                "(the connection was gone)"]
    if not (st["status"] == 200 and st["fin"] and st["reset"] is None
            and st["body_len"] == GOOD_LEN):
        return ["the good request after the malformed one failed: status %s, "
                "reset %s, body %d" % (st["status"], st["reset"], st["body_len"])]
    return []


def check_not_forwarded(mark, good_targets, body_case=False):
    """Problems unless the upstream saw exactly the good requests. For
    body_case, a request whose head went out before the defect arrived is
    allowed if its body never completed (the gateway cut the upstream
    connection)."""
    problems = []
    reqs, errs = mark.new_requests()
    if errs:
        problems.append("the upstream got a broken request: %s" % errs)
    seen = sorted(r.target for r in reqs if r.target in good_targets)
    if seen != sorted(good_targets):
        problems.append("good requests at the upstream: %s, want %s"
                        % (seen, sorted(good_targets)))
    for r in reqs:
        if r.target in good_targets:
            continue
        if not body_case:
            problems.append("the malformed request reached the upstream: %r"
                            % r.raw_head.decode("latin-1"))
        elif r.body_complete:
            problems.append("the upstream received a complete request for a "
                            "malformed one (body %d bytes): %r"
                            % (r.body_len, r.raw_head.decode("latin-1")))
        else:
            c = mark.up.wait_conn_closed(r.conn_id, timeout=5 * SLOW)
            if c.closed_by != "peer":
                problems.append("the upstream connection of a half-forwarded "
                                "malformed request was not closed by the "
                                "gateway: %r" % c)
    return problems


def assert_no_problems(problems, run):
    assert not problems, "\n".join(["- " + p for p in problems] + [repr(run)])


def assert_good(st, run):
    assert_no_problems(check_good(st), run)


# --------------------------------------------------------------------------
# the cases

def hdr_case(extra=(), replace=None, drop=(), order=None, method="GET"):
    """A header-section case: the base request with fields added, replaced
    ({name: value}), dropped, or a full custom order."""
    def build(gw, path):
        if order is not None:
            subst = {"{path}": path, "{relpath}": path.lstrip("/"),
                     "{auth}": gw.authority}
            fields = [(n, subst.get(v, v)) for n, v in order]
        else:
            fields = [(n, (replace or {}).get(n, v)) for n, v in
                      request(gw, path, method) if n not in drop]
            fields += list(extra)
        return Stream().headers(fields).fin()
    return build


HEADER_CASES = {
    "uppercase-name": hdr_case([("X-Upper", "1")]),
    "uppercase-pseudo": hdr_case(order=[(":Method", "GET"), (":scheme", "https"),
                                        (":authority", "{auth}"), (":path", "{path}")]),
    "unknown-pseudo": hdr_case([(":foo", "bar")]),
    "repeated-method": hdr_case([(":method", "GET")]),
    "repeated-path": hdr_case(order=[(":method", "GET"), (":scheme", "https"),
                                     (":authority", "{auth}"), (":path", "{path}"),
                                     (":path", "{path}")]),
    "missing-method": hdr_case(drop=[":method"]),
    "missing-scheme": hdr_case(drop=[":scheme"]),
    "missing-path": hdr_case(drop=[":path"]),
    "empty-path": hdr_case(replace={":path": ""}),
    "path-without-slash": hdr_case(order=[(":method", "GET"), (":scheme", "https"),
                                          (":authority", "{auth}"),
                                          (":path", "{relpath}")]),
    "pseudo-after-regular": hdr_case(order=[(":method", "GET"), (":scheme", "https"),
                                            (":authority", "{auth}"), ("x-a", "1"),
                                            (":path", "{path}")]),
    "connection": hdr_case([("connection", "close")]),
    "keep-alive": hdr_case([("keep-alive", "timeout=5")]),
    "proxy-connection": hdr_case([("proxy-connection", "keep-alive")]),
    "transfer-encoding": hdr_case([("transfer-encoding", "chunked")]),
    "upgrade": hdr_case([("upgrade", "websocket")]),
    "te-gzip": hdr_case([("te", "gzip")]),
    "value-cr": hdr_case([("x-v", "a\rb")]),
    "value-lf": hdr_case([("x-v", "a\nb")]),
    "value-nul": hdr_case([("x-v", "a\x00b")]),
    "value-crlf-injection": hdr_case([("x-v", "a\r\nx-injected: 1")]),
    "name-cr": hdr_case([("x-a\rb", "1")]),
    "name-lf": hdr_case([("x-a\nb", "1")]),
    "name-nul": hdr_case([("x-a\x00b", "1")]),
    "name-space": hdr_case([("x-a b", "1")]),
    "name-colon": hdr_case([("x-a:b", "1")]),
    "value-leading-space": hdr_case([("x-v", " v")]),
    "value-trailing-space": hdr_case([("x-v", "v ")]),
    "value-leading-tab": hdr_case([("x-v", "\tv")]),
    "value-trailing-tab": hdr_case([("x-v", "v\t")]),
    "empty-name": hdr_case([("", "v")]),
    "content-length-two-values": hdr_case([("content-length", "0"),
                                           ("content-length", "1")]),
    "content-length-list-differs": hdr_case([("content-length", "0, 1")]),
    "host-differs-from-authority": hdr_case([("host", "other.example")]),
    "host-invalid-characters": hdr_case([("host", "other example")]),
}


def post(gw, path, extra=()):
    return request(gw, path, "POST", extra)


def body_case_cl_short(gw, path):
    # Declares 10 bytes, sends 5 and ends the stream.
    return (Stream().headers(post(gw, path, [("content-length", "10")]))
            .data(b"12345").fin())


def body_case_cl_long(gw, path):
    # Declares 5 bytes, sends 10 in one DATA frame.
    return (Stream().headers(post(gw, path, [("content-length", "5")]))
            .data(b"1234567890").fin())


def body_case_cl_two_values_with_body(gw, path):
    return (Stream().headers(post(gw, path, [("content-length", "5"),
                                             ("content-length", "6")]))
            .data(b"12345").fin())


def body_case_pseudo_in_trailers(gw, path):
    return (Stream().headers(post(gw, path)).data(b"abc")
            .headers([(":path", "/x")]).fin())


def body_case_uppercase_trailer(gw, path):
    return (Stream().headers(post(gw, path)).data(b"abc")
            .headers([("X-Trailer", "1")]).fin())


BODY_CASES = {
    "content-length-body-shorter": body_case_cl_short,
    "content-length-body-longer": body_case_cl_long,
    "content-length-two-values-with-body": body_case_cl_two_values_with_body,
    "pseudo-header-in-trailers": body_case_pseudo_in_trailers,
    "uppercase-trailer-name": body_case_uppercase_trailer,
}


def data_frame(payload):
    return bytes([0x00, len(payload)]) + payload


def frame_case_data_before_headers(gw, path):
    return (Stream().raw(data_frame(b"abc")).headers(post(gw, path))
            .data(b"def").fin())


def frame_case_data_after_trailers(gw, path):
    return (Stream().headers(post(gw, path)).data(b"abc")
            .headers([("x-trailer", "1")]).data(b"def").fin())


FRAME_CASES = {
    "data-before-headers": frame_case_data_before_headers,
    "data-after-trailers": frame_case_data_after_trailers,
}


def malformed_path(case):
    # /bytes/ answers 200 at the upstream: a forwarded request would show.
    return "/bytes/3?m=%s" % case


def good_path(case):
    return "/bytes/%d?ok=%s" % (GOOD_LEN, case)


def run_case(env, case, build, body_case=False):
    gw, up = env
    mark = Mark(gw, up)
    bad, ok = malformed_path(case), good_path(case)
    run = h3raw(gw, Script(build(gw, bad), good_get(gw, ok)))
    assert run.conn["handshake"] and run.conn["local_error"] is None, run
    problems = check_rejected(run.streams[0])
    if run.conn["connection_close"] is not None:
        problems.append("the connection was closed (0x%x) for a stream error"
                        % run.conn["connection_close"])
    problems += check_good(run.streams[1])
    problems += check_not_forwarded(mark, [ok] if run.streams[1]["status"] else [],
                                    body_case=body_case)
    m = gw.metrics()
    if m["h3_malformed_requests"] != mark.metrics["h3_malformed_requests"] + 1:
        problems.append("h3_malformed_requests went from %d to %d, want +1" % (
            mark.metrics["h3_malformed_requests"], m["h3_malformed_requests"]))
    assert_no_problems(problems, run)


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_malformed_header_section(env, case):
    run_case(env, case, HEADER_CASES[case])


@pytest.mark.parametrize("case", sorted(BODY_CASES))
def test_malformed_body_or_trailers(env, case):
    run_case(env, case, BODY_CASES[case], body_case=True)


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_invalid_frame_sequence(env, case):
    """RFC 9114 §4.1: a connection error H3_FRAME_UNEXPECTED; a stream error
    H3_MESSAGE_ERROR is accepted too. Either way nothing complete reaches
    the upstream, and the gateway keeps serving (on a new connection if
    this one was closed)."""
    gw, up = env
    mark = Mark(gw, up)
    bad, ok = malformed_path(case), good_path(case)
    run = h3raw(gw, Script(FRAME_CASES[case](gw, bad), good_get(gw, ok)))
    assert run.conn["handshake"] and run.conn["local_error"] is None, run
    st = run.streams[0]
    closed = run.conn["connection_close"]
    problems = []
    if closed is not None:
        if closed != H3_FRAME_UNEXPECTED:
            problems.append("connection closed with 0x%x, want "
                            "H3_FRAME_UNEXPECTED (0x105)" % closed)
        if st["status"] is not None and 200 <= st["status"] < 300:
            problems.append("the malformed request was answered %d" % st["status"])
        if run.streams[1]["status"] is None:
            retry = h3raw(gw, Script(good_get(gw, ok)))
            problems += check_good(retry.streams[0])
        else:
            problems += check_good(run.streams[1])
    else:
        problems += check_rejected(st, allow=(H3_MESSAGE_ERROR, H3_FRAME_UNEXPECTED))
        problems += check_good(run.streams[1])
    problems += check_not_forwarded(mark, [ok], body_case=True)
    assert_no_problems(problems, run)


# --------------------------------------------------------------------------
# positive controls: what h3raw builds is accepted when it is well-formed

def test_control_literal_get(env):
    gw, up = env
    path = "/bytes/%d?control=literal" % GOOD_LEN
    mark = Mark(gw, up)
    run = h3raw(gw, Script(good_get(gw, path)))
    assert_good(run.streams[0], run)
    assert run.conn["connection_close"] is None, run
    reqs, errs = mark.new_requests()
    assert not errs and len(reqs) == 1, (reqs, errs, run)
    r = reqs[0]
    first = r.raw_head.split(b"\r\n", 1)[0]
    assert first == ("GET %s HTTP/1.1" % path).encode(), r.raw_head
    assert r.header_all("host") == [gw.authority], r.headers


def test_control_static_table_get(env):
    """The same request from static-table references (RFC 9204 Appendix A:
    17 is :method GET, 23 :scheme https, 0 :authority, 1 :path)."""
    gw, up = env
    path = "/bytes/%d?control=static" % GOOD_LEN
    mark = Mark(gw, up)
    s = Stream().static_headers(["static 17", "static 23",
                                 "static-name 0 %s" % q(gw.authority),
                                 "static-name 1 %s" % q(path)]).fin()
    run = h3raw(gw, Script(s))
    assert_good(run.streams[0], run)
    reqs, errs = mark.new_requests()
    assert not errs and [r.target for r in reqs] == [path], (reqs, errs, run)
    assert reqs[0].raw_head.startswith(("GET %s HTTP/1.1\r\n" % path).encode())
    assert reqs[0].header_all("host") == [gw.authority]


def test_control_te_trailers_accepted(env):
    gw, up = env
    path = "/bytes/%d?control=te-trailers" % GOOD_LEN
    mark = Mark(gw, up)
    run = h3raw(gw, Script(Stream().headers(request(gw, path, extra=[("te", "trailers")])).fin()))
    assert_good(run.streams[0], run)
    reqs, errs = mark.new_requests()
    assert not errs and [r.target for r in reqs] == [path], (reqs, errs, run)


def test_control_post_with_content_length(env):
    gw, up = env
    path = "/bytes/%d?control=post-cl" % GOOD_LEN
    mark = Mark(gw, up)
    s = (Stream().headers(post(gw, path, [("content-length", "10")]))
         .data(b"12345").data(b"67890").fin())
    run = h3raw(gw, Script(s))
    assert_good(run.streams[0], run)
    reqs, errs = mark.new_requests()
    assert not errs and [r.target for r in reqs] == [path], (reqs, errs, run)
    r = reqs[0]
    assert r.method == "POST" and r.framing == "content-length", r
    assert r.body_complete and r.body_len == 10, r


def test_control_post_with_trailers(env):
    gw, up = env
    path = "/bytes/%d?control=post-trailers" % GOOD_LEN
    mark = Mark(gw, up)
    s = (Stream().headers(post(gw, path)).data(b"abc")
         .headers([("x-trailer", "1")]).fin())
    run = h3raw(gw, Script(s))
    assert_good(run.streams[0], run)
    reqs, errs = mark.new_requests()
    assert not errs and [r.target for r in reqs] == [path], (reqs, errs, run)
    assert reqs[0].body_complete and reqs[0].body_len == 3, reqs[0]


# --------------------------------------------------------------------------
# many at once

def test_malformed_interleaved_with_good_concurrently(env):
    """20 malformed and 20 good requests, interleaved and concurrent on one
    connection: every good one succeeds, no malformed one is forwarded."""
    gw, up = env
    mark = Mark(gw, up)
    kinds = sorted(HEADER_CASES)
    streams, good = [], []
    for i in range(20):
        case = kinds[i % len(kinds)]
        streams.append(HEADER_CASES[case](gw, "/bytes/3?mc=%d-%s" % (i, case)))
        path = "/bytes/%d?okc=%d" % (GOOD_LEN, i)
        streams.append(good_get(gw, path))
        good.append(path)
    run = h3raw(gw, Script(*streams, concurrent=True), timeout=10)
    problems = []
    if run.conn["connection_close"] is not None:
        problems.append("the connection was closed (0x%x)" % run.conn["connection_close"])
    for i in range(20):
        problems += ["malformed stream %d: %s" % (2 * i, p)
                     for p in check_rejected(run.streams[2 * i])]
        problems += ["good stream %d: %s" % (2 * i + 1, p)
                     for p in check_good(run.streams[2 * i + 1])]
    problems += check_not_forwarded(mark, good)
    m = gw.metrics()
    if m["h3_malformed_requests"] != mark.metrics["h3_malformed_requests"] + 20:
        problems.append("h3_malformed_requests went from %d to %d, want +20" % (
            mark.metrics["h3_malformed_requests"], m["h3_malformed_requests"]))
    assert_no_problems(problems, run)


# --------------------------------------------------------------------------
# observability

@pytest.mark.parametrize("case", ["uppercase-name", "host-differs-from-authority"])
def test_access_log_names_malformed(env, case):
    """A refused request is logged as malformed, whichever layer caught it
    (nghttp3's own checks or the gateway's validation)."""
    gw, up = env
    path = "/bytes/3?log=%s" % case
    run = h3raw(gw, Script(HEADER_CASES[case](gw, path)))
    assert_no_problems(check_rejected(run.streams[0]), run)
    recs = gw.wait_access(path=path)
    assert recs[-1].get("outcome") == "malformed", (
        "access log line for a malformed request: %s\n%r" % (recs[-1].raw, run))
