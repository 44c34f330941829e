"""HTTP/3 and QPACK connection errors, each with the code its RFC names
(RFC 9114 §6.2, §7, §8; RFC 9204 §4.2, §6; RFC 9218 §7.2). The audit
behind this list is docs/http3-errors.md.

Every case is one h3raw connection (tests/tools/h3raw.c) that breaks one
rule on its unidirectional or request streams, then asks for a tagged
path. Checked, in this order:

  - what the client saw: the CONNECTION_CLOSE code (an application close)
    and no answer to its request; or, for what must be tolerated, the
    connection left open and the request answered;
  - what the upstream saw: nothing of the connection that broke a rule;
  - another client's request, held at the upstream while the rule was
    broken, is still answered: one connection's error is nobody else's;
  - /metrics: h3_protocol_error_closes counted the close.

Environment: H3GATE_H3RAW, the h3raw binary (ctest sets it).
"""

import threading

import pytest

from conftest import GatewayFactory, Upstream, uid
from testenv.h3raw import (FRAME_CANCEL_PUSH, FRAME_DATA, FRAME_GOAWAY,
                           FRAME_HEADERS, FRAME_MAX_PUSH_ID,
                           FRAME_PRIORITY_UPDATE, FRAME_PRIORITY_UPDATE_PUSH,
                           FRAME_PUSH_PROMISE, FRAME_SETTINGS,
                           H3_CLOSED_CRITICAL_STREAM, H3_FRAME_ERROR,
                           H3_FRAME_UNEXPECTED, H3_ID_ERROR,
                           H3_MISSING_SETTINGS, H3_NO_ERROR,
                           H3_SETTINGS_ERROR, H3_STREAM_CREATION_ERROR,
                           QPACK_DECODER_STREAM_ERROR,
                           QPACK_DECOMPRESSION_FAILED,
                           QPACK_ENCODER_STREAM_ERROR, STREAM_CONTROL,
                           STREAM_PUSH, STREAM_QPACK_DECODER,
                           STREAM_QPACK_ENCODER, Script, Stream, frame, get,
                           run_h3raw, varint)

H2_FRAMES = {"PRIORITY": 0x02, "PING": 0x06, "WINDOW_UPDATE": 0x08,
             "CONTINUATION": 0x09}
H2_SETTINGS = {"HTTP/2 ENABLE_PUSH": 0x02, "HTTP/2 MAX_CONCURRENT_STREAMS": 0x03,
               "HTTP/2 INITIAL_WINDOW_SIZE": 0x04, "HTTP/2 MAX_FRAME_SIZE": 0x05}
SETTINGS_MAX_FIELD_SECTION_SIZE = 0x06
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x08
SETTINGS_H3_DATAGRAM = 0x33
RESERVED = 0x21  # 0x1f * N + 0x21: reserved stream, frame and setting types


# --------------------------------------------------------------------------
# the gateway, a neighbour, and the checks

@pytest.fixture(scope="module")
def env(tmp_path_factory, certs):
    """One upstream and one gateway for the module (cases use unique tags)."""
    up = Upstream(name="h3-errors-upstream").start()
    f = GatewayFactory(tmp_path_factory, certs, lambda: up)
    gw = f(name="h3-errors-gw")
    yield gw, up
    f.finish()
    up.stop()
    up.assert_clean()


class Neighbour:
    """Another client's request, held at the upstream until released: it
    is in flight on its own connection while a case breaks a rule."""

    def __init__(self, gw, up):
        self.gw, self.up = gw, up
        self.path = "/script/hold-" + uid()
        self.release = threading.Event()
        self.result = {}

        def hold(conn, req):
            self.release.wait(30)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nneighbour")
            return True

        up.script(self.path.rsplit("/", 1)[1], hold)
        script = Script(Stream().headers(get(gw, self.path)).fin())
        self.thread = threading.Thread(target=self._run, args=(script,))
        self.thread.start()
        up.wait_for(lambda: any(r.target == self.path for r in up.requests),
                    timeout=10, what="the neighbour's request at the upstream")

    def _run(self, script):
        try:
            self.result["run"] = run_h3raw(self.gw, script, timeout=30)
        except Exception as e:  # reported by finish()
            self.result["error"] = e

    def finish(self):
        self.release.set()
        self.thread.join(60)
        assert "error" not in self.result, self.result["error"]
        run = self.result["run"]
        st = run.streams[0]
        assert st["status"] == 200 and st["body_len"] == 9 and st["fin"], \
            "the neighbour's request failed: %r" % run
        assert run.conn["connection_close"] in (None, H3_NO_ERROR), run


def tagged(gw, tag):
    """The request each case asks for after breaking (or bending) a rule."""
    return get(gw, "/bytes/5?case=" + tag)


def upstream_saw(up, tag):
    with up.lock:
        return [r for r in up.requests if r.query.get("case") == tag]


def run_tagged(env, streams, linger, script):
    """Runs the script, its last stream asking for a freshly tagged path,
    while a neighbour connection makes requests. Returns the tag, the
    h3_protocol_error_closes count before, and h3raw's report."""
    gw, up = env
    tag = uid()
    streams = list(streams)
    streams[-1].headers(tagged(gw, tag)).fin()
    before = gw.metrics()["h3_protocol_error_closes"]
    nb = Neighbour(gw, up)
    try:
        run = run_h3raw(gw, Script(*streams, linger=linger, **script), timeout=10)
    finally:
        nb.finish()
    return tag, before, run


def breaks(env, expected, *streams, **script):
    """Runs the script (its first stream breaks a rule before asking for
    the tagged path, unless it asks itself) and checks the connection was
    closed with `expected`, the request never answered nor forwarded, the
    neighbour served. Returns h3raw's report."""
    gw, up = env
    tag, before, run = run_tagged(env, streams, 300, script)
    assert run.conn["connection_close"] == expected, \
        "want CONNECTION_CLOSE 0x%x: %r" % (expected, run)
    assert run.conn["close_type"] == "application", run
    assert run.streams[-1]["status"] is None, run
    assert upstream_saw(up, tag) == [], "the request reached the upstream"
    gw.wait_metrics(lambda m: m["h3_protocol_error_closes"] == before + 1,
                    what="h3_protocol_error_closes counted once")
    return run


def tolerates(env, *streams, **script):
    """Runs the script and checks the connection stayed up and its tagged
    request was answered and forwarded once, the neighbour too."""
    gw, up = env
    tag, before, run = run_tagged(env, streams, 100, script)
    assert run.conn["connection_close"] is None, run
    st = run.streams[-1]
    assert st["status"] == 200 and st["body_len"] == 5 and st["fin"], run
    assert len(upstream_saw(up, tag)) == 1, run
    assert gw.metrics()["h3_protocol_error_closes"] == before
    return run


def ctrl(payload):
    """Bytes of our control stream's SETTINGS frame, after the type."""
    return frame(FRAME_SETTINGS, payload)


def settings(*pairs):
    return b"".join(varint(i) + varint(v) for i, v in pairs)


# --------------------------------------------------------------------------
# unidirectional streams (RFC 9114 §6.2, RFC 9204 §4.2)

def test_unknown_stream_types_are_ignored(env):
    """§6.2, §6.2.3: never a connection error; the gateway aborts reading
    with H3_STREAM_CREATION_ERROR (a SHOULD), or lets a finished one be.
    With the decoder stream left out the client has one stream to spare:
    the second unknown stream opens only once the first gave it back."""
    run = tolerates(env, Stream()
                    .uni(varint(RESERVED) + b"padding").uni_wait_closed()
                    .uni(varint(0x4242) + b"extension").uni_fin().uni_wait_closed(),
                    omit=["decoder"])
    assert run.conn["uni"][0]["close_code"] == H3_STREAM_CREATION_ERROR, run
    assert run.conn["uni"][1]["closed"], run


@pytest.mark.parametrize("partial", [b"", b"\x40", b"\x80\x00\x00"],
                         ids=["empty", "1-of-2", "3-of-4"])
@pytest.mark.parametrize("end", ["fin", "reset"])
def test_stream_closed_before_its_type_is_tolerated(env, partial, end):
    """§6.2: 'A receiver MUST tolerate unidirectional streams being closed
    or reset prior to the reception of the unidirectional stream header'
    (nghttp3 1.8 closes the connection for a type cut short)."""
    s = Stream().uni(partial)
    s = s.uni_fin() if end == "fin" else s.uni_reset(RESERVED)
    tolerates(env, s.uni_wait_closed(), omit=["decoder"])


def test_push_stream_from_a_client_is_stream_creation_error(env):
    """§6.2.2: only servers push."""
    breaks(env, H3_STREAM_CREATION_ERROR,
           Stream().uni(varint(STREAM_PUSH) + varint(0)), omit=["decoder"])


@pytest.mark.parametrize("stream_type, omit", [
    (STREAM_CONTROL, "decoder"),
    (STREAM_QPACK_ENCODER, "decoder"),
    (STREAM_QPACK_DECODER, "encoder"),
], ids=["control", "encoder", "decoder"])
def test_second_critical_stream_is_stream_creation_error(env, stream_type, omit):
    """§6.2.1: one control stream per peer; RFC 9204 §4.2: at most one
    encoder and one decoder stream."""
    extra = ctrl(b"") if stream_type == STREAM_CONTROL else b""
    breaks(env, H3_STREAM_CREATION_ERROR,
           Stream().uni(varint(stream_type) + extra), omit=[omit])


@pytest.mark.parametrize("which", ["control", "encoder", "decoder"])
@pytest.mark.parametrize("how", ["fin", "reset"])
def test_closing_a_critical_stream_is_closed_critical_stream(env, which, how):
    """§6.2.1: 'The sender MUST NOT close the control stream'; RFC 9204
    §4.2: nor either QPACK stream. FIN or RESET_STREAM alike."""
    s = Stream()
    getattr(s, "%s_%s" % (which, how))(*([] if how == "fin" else [H3_NO_ERROR]))
    breaks(env, H3_CLOSED_CRITICAL_STREAM, s)


@pytest.mark.parametrize("stream_type", [STREAM_CONTROL, STREAM_QPACK_ENCODER,
                                         STREAM_QPACK_DECODER],
                         ids=["control", "encoder", "decoder"])
def test_asking_the_gateway_to_close_a_critical_stream(env, stream_type):
    """§6.2.1: 'the receiver MUST NOT request that the sender close the
    control stream'; RFC 9204 §4.2 likewise: STOP_SENDING on one of the
    gateway's critical streams closes the connection, as the frame arrives
    (ngtcp2's recv_stop_sending). A request answered before it is not
    undone."""
    gw, up = env
    tag = uid()
    before = gw.metrics()["h3_protocol_error_closes"]
    nb = Neighbour(gw, up)
    try:
        run = run_h3raw(gw, Script(Stream().headers(tagged(gw, tag)).fin(),
                                   Stream().stop_server(stream_type, H3_NO_ERROR)),
                        timeout=10)
    finally:
        nb.finish()
    assert run.streams[0]["status"] == 200, run
    assert run.conn["connection_close"] == H3_CLOSED_CRITICAL_STREAM, run
    assert run.conn["close_type"] == "application", run
    gw.wait_metrics(lambda m: m["h3_protocol_error_closes"] == before + 1,
                    what="h3_protocol_error_closes counted once")


# --------------------------------------------------------------------------
# the control stream (RFC 9114 §6.2.1, §7.2)

def test_control_stream_must_start_with_settings(env):
    breaks(env, H3_MISSING_SETTINGS,
           Stream().control(FRAME_GOAWAY, varint(0)), no_settings=True)


def test_second_settings_is_frame_unexpected(env):
    breaks(env, H3_FRAME_UNEXPECTED, Stream().control(FRAME_SETTINGS, b""))


@pytest.mark.parametrize("ftype", [FRAME_DATA, FRAME_HEADERS, FRAME_PUSH_PROMISE]
                         + list(H2_FRAMES.values()),
                         ids=["DATA", "HEADERS", "PUSH_PROMISE"] + list(H2_FRAMES))
def test_request_and_http2_frames_on_the_control_stream(env, ftype):
    """§7.2.1, §7.2.2, §7.2.5 (a client never sends PUSH_PROMISE), §7.2.8
    (HTTP/2's frame types): H3_FRAME_UNEXPECTED."""
    breaks(env, H3_FRAME_UNEXPECTED, Stream().control(ftype, b"\x00\x00"))


@pytest.mark.parametrize("ftype, payload", [
    (FRAME_SETTINGS, b""),
    (FRAME_GOAWAY, varint(0)),
    (FRAME_MAX_PUSH_ID, varint(0)),
    (FRAME_CANCEL_PUSH, varint(0)),
    (FRAME_PUSH_PROMISE, varint(0) + b"\x00\x00"),
] + [(t, b"\x00") for t in H2_FRAMES.values()],
    ids=["SETTINGS", "GOAWAY", "MAX_PUSH_ID", "CANCEL_PUSH", "PUSH_PROMISE"]
    + list(H2_FRAMES))
def test_control_and_http2_frames_on_a_request_stream(env, ftype, payload):
    """§7.2.3, §7.2.4, §7.2.5, §7.2.6, §7.2.7, §7.2.8: H3_FRAME_UNEXPECTED
    (PRIORITY_UPDATE: test_16)."""
    breaks(env, H3_FRAME_UNEXPECTED, Stream().frame(ftype, payload))


def test_unknown_and_reserved_frames_are_ignored(env):
    """§7.2.8, §9: on the control stream and on a request stream."""
    tolerates(env, Stream().control(RESERVED, b"x" * 100)
              .control(0x1f * 7 + 0x21, b"").control(0x4242, b"unknown")
              .frame(RESERVED, b"pad").frame(0xabcdef, b"?"))


# ---- GOAWAY, MAX_PUSH_ID, CANCEL_PUSH ---------------------------------------

def test_client_goaway_carries_a_push_id_that_may_only_go_down(env):
    """§5.2, §7.2.6: any push ID (1 is no stream ID), the same or smaller
    ones again; the client may still send requests."""
    tolerates(env, Stream()
              .control(FRAME_GOAWAY, varint((1 << 62) - 1))
              .control(FRAME_GOAWAY, varint(5)).control(FRAME_GOAWAY, varint(5))
              .control(FRAME_GOAWAY, varint(1)))


def test_goaway_with_a_larger_id_is_id_error(env):
    """§5.2: 'Receiving a GOAWAY containing a larger identifier than
    previously received MUST be treated as ... H3_ID_ERROR.'"""
    breaks(env, H3_ID_ERROR, Stream().control(FRAME_GOAWAY, varint(4))
           .control(FRAME_GOAWAY, varint(5)))


def test_max_push_id_may_grow(env):
    tolerates(env, Stream().control(FRAME_MAX_PUSH_ID, varint(3))
              .control(FRAME_MAX_PUSH_ID, varint(3))
              .control(FRAME_MAX_PUSH_ID, varint(100)))


def test_max_push_id_going_down_is_id_error(env):
    """§7.2.7: H3_ID_ERROR (nghttp3 1.8 says H3_FRAME_ERROR)."""
    breaks(env, H3_ID_ERROR, Stream().control(FRAME_MAX_PUSH_ID, varint(10))
           .control(FRAME_MAX_PUSH_ID, varint(9)))


@pytest.mark.parametrize("max_push_id", [None, 10])
def test_cancel_push_is_id_error(env, max_push_id):
    """§7.2.3: 'If a server receives a CANCEL_PUSH frame for a push ID that
    has not yet been mentioned by a PUSH_PROMISE frame, this MUST be
    treated as ... H3_ID_ERROR'; this gateway never promises a push
    (nghttp3 1.8 says H3_FRAME_UNEXPECTED)."""
    s = Stream()
    if max_push_id is not None:
        s.control(FRAME_MAX_PUSH_ID, varint(max_push_id))
    breaks(env, H3_ID_ERROR, s.control(FRAME_CANCEL_PUSH, varint(1)))


@pytest.mark.parametrize("ftype", [FRAME_GOAWAY, FRAME_MAX_PUSH_ID,
                                   FRAME_CANCEL_PUSH],
                         ids=["GOAWAY", "MAX_PUSH_ID", "CANCEL_PUSH"])
@pytest.mark.parametrize("payload", [b"", b"\x05\x00", b"\x40",
                                     b"\xc0" + b"\x00" * 8],
                         ids=["empty", "byte-after", "integer-cut", "too-long"])
def test_one_integer_frame_layout_is_frame_error(env, ftype, payload):
    """§7.1: 'A frame payload that contains additional bytes after the
    identified fields or a frame payload that terminates before the end of
    the identified fields MUST be treated as ... H3_FRAME_ERROR' (nghttp3
    1.8 reads bytes after a GOAWAY's or MAX_PUSH_ID's integer as the next
    frame)."""
    breaks(env, H3_FRAME_ERROR, Stream().control(ftype, payload))


# ---- SETTINGS ----------------------------------------------------------------

@pytest.mark.parametrize("setting", list(H2_SETTINGS.values()), ids=list(H2_SETTINGS))
def test_http2_settings_are_settings_error(env, setting):
    """§7.2.4.1: HTTP/2's settings without an HTTP/3 counterpart."""
    breaks(env, H3_SETTINGS_ERROR, Stream(), settings=[(setting, 0)])


@pytest.mark.parametrize("setting", [SETTINGS_MAX_FIELD_SECTION_SIZE, RESERVED],
                         ids=["known", "reserved"])
def test_duplicate_setting_is_settings_error(env, setting):
    """§7.2.4: 'The same setting identifier MUST NOT occur more than once';
    a receiver MAY refuse it with H3_SETTINGS_ERROR, and the gateway does
    (nghttp3 1.8 lets most pass)."""
    breaks(env, H3_SETTINGS_ERROR, Stream(),
           settings=[(setting, 100), (0x07, 0), (setting, 100)])


@pytest.mark.parametrize("setting", [SETTINGS_ENABLE_CONNECT_PROTOCOL,
                                     SETTINGS_H3_DATAGRAM],
                         ids=["ENABLE_CONNECT_PROTOCOL", "H3_DATAGRAM"])
def test_boolean_setting_out_of_range_is_settings_error(env, setting):
    """RFC 9220 §3 (RFC 8441 §3), RFC 9297 §2.1.1: 0 or 1 only."""
    tolerates(env, Stream(), settings=[(setting, 1)])
    breaks(env, H3_SETTINGS_ERROR, Stream(), settings=[(setting, 2)])


def test_unknown_settings_are_ignored(env):
    """§7.2.4: 'An implementation MUST ignore any parameter with an
    identifier it does not understand' (0x00 is no HTTP/2 setting)."""
    tolerates(env, Stream(), settings=[(RESERVED, 7), (0x00, 1),
                                       (0x1f * 9 + 0x21, (1 << 62) - 1)])


@pytest.mark.parametrize("payload", [varint(SETTINGS_MAX_FIELD_SECTION_SIZE),
                                     varint(SETTINGS_MAX_FIELD_SECTION_SIZE) + b"\x40"],
                         ids=["no-value", "value-cut"])
def test_settings_ending_inside_a_setting_is_frame_error(env, payload):
    """§7.1: a SETTINGS payload that ends inside a setting."""
    breaks(env, H3_FRAME_ERROR, Stream().control_raw(ctrl(payload))
           .control(RESERVED, b""), no_settings=True)


# ---- frames on request streams -----------------------------------------------

@pytest.mark.parametrize("tail", [b"\x40", varint(RESERVED) + b"\x80\x00",
                                  frame(RESERVED, b"abc")[:-1]],
                         ids=["type-cut", "length-cut", "payload-cut"])
def test_request_stream_ending_inside_a_frame_is_frame_error(env, tail):
    """§7.1: 'When a stream terminates cleanly, if the last frame on the
    stream was truncated, this MUST be treated as ... H3_FRAME_ERROR'
    (nghttp3 1.8 says H3_GENERAL_PROTOCOL_ERROR for a cut frame type)."""
    breaks(env, H3_FRAME_ERROR, Stream().raw(tail).fin(), Stream())


# --------------------------------------------------------------------------
# PRIORITY_UPDATE (RFC 9218 §7.2)

ONE_CONN = {"upstream": {"pool_size": "1"}}


def upstream_order(up, t):
    return [r.query["tag"][len(t) + 1:] for r in up.requests
            if r.query.get("tag", "").startswith(t + "-")]


def test_priority_update_that_does_not_parse_is_ignored(gateway, upstream):
    """RFC 9218 §7 lets a server close the connection for a Priority Field
    Value that does not parse (MAY); §4 has it parsed as RFC 8941 says,
    which ignores such a value. The gateway ignores the frame: the request
    keeps its priority, the connection its other requests. Three requests
    wait for the one upstream connection: r3 asked u=1, then gets an
    update that does not parse; r2 gets a valid u=0. Served: r2, r3, r1
    (applied as defaults, r3 would come last; nghttp3 alone closes the
    connection)."""
    gw = gateway(ONE_CONN)
    t = uid()
    streams = [Stream().headers(get(gw, "/bytes/10?delay=800&tag=%s-first" % t)).fin(),
               Stream().headers(get(gw, "/bytes/10?tag=%s-r1" % t)).fin(),
               Stream().headers(get(gw, "/bytes/10?tag=%s-r2" % t)).fin(),
               Stream().headers(get(gw, "/bytes/10?tag=%s-r3" % t,
                                    [("priority", "u=1")])).fin()]
    streams[3].pause(200).priority_update(12, "u=0, i=?") \
        .priority_update(8, "u=0")
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=15)
    assert run.conn["connection_close"] is None, run
    assert all(s["status"] == 200 for s in run.streams), run
    assert upstream_order(upstream, t) == ["first", "r2", "r3", "r1"], run
    assert gw.metrics()["h3_protocol_error_closes"] == 0


def test_priority_update_longer_than_8_bytes_is_applied(gateway, upstream):
    """nghttp3 1.8 ignores a Priority Field Value over 8 bytes; the
    gateway hands it on rewritten ("u=0, i=?0" is 9 bytes)."""
    gw = gateway(ONE_CONN)
    t = uid()
    streams = [Stream().headers(get(gw, "/bytes/10?delay=800&tag=%s-first" % t)).fin()]
    streams += [Stream().headers(get(gw, "/bytes/10?tag=%s-r%d" % (t, i))).fin()
                for i in (1, 2, 3)]
    streams[3].pause(200).priority_update(12, "u=0, i=?0")
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=15)
    assert all(s["status"] == 200 for s in run.streams), run
    assert upstream_order(upstream, t) == ["first", "r3", "r1", "r2"], run


@pytest.mark.parametrize("element, value", [
    (2, "u="), (1, "u=1"), (4 * 10000, "u=1"), (6, "u=1, x=" + "y" * 100)],
    ids=["unidirectional-unparsable", "server-initiated",
         "beyond-the-limit", "unidirectional-long"])
def test_priority_update_element_id_checked_whatever_the_value(env, element, value):
    """RFC 9218 §7.2: not a request stream, or beyond the stream limit:
    H3_ID_ERROR, also when the value is ignored (nghttp3 1.8 answers the
    first H3_GENERAL_PROTOCOL_ERROR and lets the last pass)."""
    breaks(env, H3_ID_ERROR, Stream().priority_update(element, value))


@pytest.mark.parametrize("ftype", [FRAME_PRIORITY_UPDATE, FRAME_PRIORITY_UPDATE_PUSH],
                         ids=["request", "push"])
@pytest.mark.parametrize("payload", [b"", b"\x40"], ids=["empty", "id-cut"])
def test_priority_update_layout_is_frame_error(env, ftype, payload):
    breaks(env, H3_FRAME_ERROR, Stream().control(ftype, payload))


# --------------------------------------------------------------------------
# QPACK (RFC 9204)

def test_encoder_may_set_capacity_zero(env):
    """§4.3.1: Set Dynamic Table Capacity within our limit (0)."""
    tolerates(env, Stream().encoder(b"\x20\x20"))


@pytest.mark.parametrize("instruction", [
    b"\x21",                          # Set Dynamic Table Capacity 1
    b"\xc0\x01x",                     # Insert with (static) Name Reference
    b"\x41x\x01y",                    # Insert with Literal Name
    b"\x5f\xf1\x01" + b"n" * 300 + b"\x01v",   # ... a 300-byte name
    b"\x00",                          # Duplicate
], ids=["capacity", "insert-name-ref", "insert-literal", "insert-long-name",
        "duplicate"])
def test_encoder_instruction_beyond_capacity_zero(env, instruction):
    """§4.3.1, §3.2.2: a capacity over SETTINGS_QPACK_MAX_TABLE_CAPACITY (0),
    or an entry larger than the table: QPACK_ENCODER_STREAM_ERROR
    (nghttp3 1.8 says H3_INTERNAL_ERROR for a name over 256 bytes)."""
    breaks(env, QPACK_ENCODER_STREAM_ERROR, Stream().encoder(instruction))


def test_decoder_may_cancel_streams(env):
    """§4.4.2: Stream Cancellation is always valid."""
    tolerates(env, Stream().decoder(b"\x40\x44"))


@pytest.mark.parametrize("instruction", [b"\x80", b"\x00", b"\x01"],
                         ids=["section-ack", "increment-zero", "increment-beyond"])
def test_decoder_instruction_about_nothing(env, instruction):
    """§4.4.1: a Section Acknowledgment with nothing to acknowledge; §4.4.3:
    an Insert Count Increment of zero or beyond what was sent (the gateway
    inserted nothing): QPACK_DECODER_STREAM_ERROR."""
    breaks(env, QPACK_DECODER_STREAM_ERROR, Stream().decoder(instruction))


@pytest.mark.parametrize("prefix, lines", [
    (b"\x02\x00", ["raw-line \"\\x80\""]),
    (b"\x00\x00", ["raw-line \"\\x80\""]),
    (b"\x00\x00", ["raw-line \"\\xff\\x24\""]),  # static index 99
    (b"\x00\x00", ["raw-line \"\\x10\""]),
], ids=["required-insert-count", "dynamic-reference", "static-index",
        "post-base-reference"])
def test_field_section_that_cannot_be_decoded(env, prefix, lines):
    """RFC 9204 §2.2.3, §3.1, §4.5.1.1: a reference to a dynamic table we
    never allowed, or a static index past the table:
    QPACK_DECOMPRESSION_FAILED."""
    prefix_line = "prefix \"%s\"" % "".join("\\x%02x" % c for c in prefix)
    breaks(env, QPACK_DECOMPRESSION_FAILED,
           Stream().static_headers([prefix_line] + lines).fin(), Stream())
