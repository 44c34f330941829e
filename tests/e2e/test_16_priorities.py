"""RFC 9218 priorities, end to end (issue 9).

- The wait for an upstream connection is ordered by urgency, then arrival,
  among one client connection's requests; client connections take turns,
  so urgency never lets one client overtake another (RFC 9218 §12).
- Responses leave in urgency order; incremental ones interleave.
- An origin's Priority response field adjusts its response (RFC 9218 §8).
- PRIORITY_UPDATE frames (HTTP/3 §7.2, HTTP/2 §7.1) move a request that is
  still waiting; those for streams that are closed, not yet open, beyond
  the limit or not request streams are handled as the RFC says.
- HTTP/2 announces SETTINGS_NO_RFC7540_PRIORITIES = 1.

What the client received (h3raw / h2raw reports: status, body length, the
order in which DATA arrived) and what the origin saw (the order in which
requests reached it) are asserted; never timings.
"""

import threading
import uuid

import pytest

from conftest import MiB
from testenv.h2raw import SETTINGS_NO_RFC7540_PRIORITIES, H2Raw
from testenv.h3raw import (FRAME_PRIORITY_UPDATE, FRAME_PRIORITY_UPDATE_PUSH,
                           H3_FRAME_UNEXPECTED,
                           H3_ID_ERROR, Script, Stream, get, run_h3raw,
                           varint)

ONE_CONN = {"upstream": {"pool_size": "1"}}


def tag():
    return uuid.uuid4().hex[:8]


def upstream_order(up, t):
    """The `tag` query values of the requests tagged t-..., in the order
    the origin received them."""
    return [r.query["tag"][len(t) + 1:] for r in up.requests
            if r.query.get("tag", "").startswith(t + "-")]


def bid(i):
    """The QUIC stream id of the i-th client-initiated bidirectional stream."""
    return 4 * i


def assert_all_ok(run, n=None):
    for s in run.streams[:n]:
        assert s["status"] == 200 and s["fin"], run
    assert run.conn["connection_close"] in (None, 0x100), run


# ---------------------------------------------------------------------------
# the upstream wait queue

def test_h3_urgent_request_overtakes_queued_ones_at_the_upstream(gateway, upstream):
    gw = gateway(ONE_CONN)
    t = tag()
    streams = [Stream().headers(get(gw, "/bytes/10?delay=600&tag=%s-first" % t)).fin()]
    for i in range(3):
        streams.append(Stream().headers(
            get(gw, "/bytes/10?tag=%s-low%d" % (t, i), [("priority", "u=6")])).fin())
    streams.append(Stream().headers(
        get(gw, "/bytes/10?tag=%s-high" % t, [("priority", "u=0, i")])).fin())
    streams.append(Stream().headers(get(gw, "/bytes/10?tag=%s-default" % t)).fin())
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=15)
    assert_all_ok(run)
    assert upstream_order(upstream, t) == ["first", "high", "default",
                                           "low0", "low1", "low2"], run


def test_h2_urgent_request_overtakes_queued_ones_at_the_upstream(gateway, upstream):
    gw = gateway(ONE_CONN)
    t = tag()
    with H2Raw(gw) as c:
        sids = [c.request("/bytes/10?delay=600&tag=%s-first" % t)]
        sids += [c.request("/bytes/10?tag=%s-low%d" % (t, i), [("priority", "u=5")])
                 for i in range(2)]
        sids.append(c.request("/bytes/10?tag=%s-high" % t, [("priority", "u=1")]))
        c.run_until_done(sids)
        assert all(c.streams[s].status == 200 for s in sids)
    assert upstream_order(upstream, t) == ["first", "high", "low0", "low1"]


def test_client_connections_take_turns_whatever_their_urgency(gateway, upstream):
    """Connection A queues three requests behind its first; connection B
    then queues one at the lowest urgency. B is served after A's next one,
    not after all of A's: priorities order one client's requests only."""
    gw = gateway(ONE_CONN)
    t = tag()
    streams = [Stream().headers(get(gw, "/bytes/10?delay=1500&tag=%s-a0" % t)).fin()]
    streams += [Stream().headers(get(gw, "/bytes/10?tag=%s-a%d" % (t, i),
                                     [("priority", "u=0")])).fin()
                for i in (1, 2, 3)]
    result = {}

    def conn_a():
        result["a"] = run_h3raw(gw, Script(*streams, concurrent=True), timeout=20)

    th = threading.Thread(target=conn_a)
    th.start()
    try:
        gw.wait_metrics(lambda m: m.get("upstream_queue_waiting") == 3, 10,
                        "connection A's three requests queued")
        with H2Raw(gw) as c:
            b = c.request("/bytes/10?tag=%s-b" % t, [("priority", "u=7")])
            gw.wait_metrics(lambda m: m.get("upstream_queue_waiting") == 4, 10,
                            "connection B's request queued")
            c.run_until_done([b], timeout=20)
            assert c.streams[b].status == 200
    finally:
        th.join(60)
    assert_all_ok(result["a"])
    assert upstream_order(upstream, t) == ["a0", "a1", "b", "a2", "a3"]


# ---------------------------------------------------------------------------
# PRIORITY_UPDATE and the wait queue

def test_h3_priority_update_moves_a_waiting_request(gateway, upstream):
    gw = gateway(ONE_CONN)
    t = tag()
    streams = [Stream().headers(get(gw, "/bytes/10?delay=800&tag=%s-first" % t)).fin()]
    for i in (1, 2, 3):
        streams.append(Stream().headers(get(gw, "/bytes/10?tag=%s-r%d" % (t, i))).fin())
    # While all wait, the client raises the last one.
    streams[3].pause(200).priority_update(bid(3), "u=1")
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=15)
    assert_all_ok(run)
    assert upstream_order(upstream, t) == ["first", "r3", "r1", "r2"], run


def test_h3_priority_update_before_its_request_is_applied(gateway, upstream):
    """RFC 9218 §7.2: an update for a stream not yet opened is kept and
    applied when the request arrives (it wins over the request's field)."""
    gw = gateway(ONE_CONN)
    t = tag()
    streams = [Stream().headers(get(gw, "/bytes/10?delay=600&tag=%s-first" % t)).fin()]
    streams.append(Stream().headers(get(gw, "/bytes/10?tag=%s-r1" % t)).fin())
    streams.append(Stream().headers(get(gw, "/bytes/10?tag=%s-r2" % t)).fin())
    late = Stream().priority_update(bid(3), "u=0").pause(50)
    late.headers(get(gw, "/bytes/10?tag=%s-r3" % t, [("priority", "u=7")])).fin()
    streams.append(late)
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=15)
    assert_all_ok(run)
    assert upstream_order(upstream, t) == ["first", "r3", "r1", "r2"], run


def test_h2_priority_update_moves_a_waiting_request(gateway, upstream):
    gw = gateway(ONE_CONN)
    t = tag()
    with H2Raw(gw) as c:
        sids = [c.request("/bytes/10?delay=800&tag=%s-first" % t)]
        sids += [c.request("/bytes/10?tag=%s-r%d" % (t, i)) for i in (1, 2, 3)]
        gw.wait_metrics(lambda m: m.get("upstream_queue_waiting") == 3, 10,
                        "three requests queued")
        c.priority_update(sids[3], "u=0")
        c.run_until_done(sids)
        assert all(c.streams[s].status == 200 for s in sids)
    assert upstream_order(upstream, t) == ["first", "r3", "r1", "r2"]


# ---------------------------------------------------------------------------
# on the wire

BIG = 4 * MiB


def test_h3_urgent_response_overtakes_on_the_wire(gateway):
    """Four equal responses; the last one asked is the urgent one, and it
    finishes first (without priorities it would finish last or together)."""
    gw = gateway()
    streams = [Stream().headers(get(gw, "/bytes/%d" % BIG, [("priority", "u=5")])).fin()
               for _ in range(3)]
    streams.append(Stream().headers(get(gw, "/bytes/%d" % BIG,
                                        [("priority", "u=0")])).fin())
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=30)
    assert_all_ok(run)
    assert [s["body_len"] for s in run.streams] == [BIG] * 4, run
    urgent = run.streams[3]
    assert all(urgent["data_last"] < s["data_last"] for s in run.streams[:3]), run


def interleaved(firsts, lasts):
    """Incremental (RFC 9218 §4.2): the responses progressed together, so
    every one started before any finished and all finished near the end.
    (Sequence numbers count DATA pieces on the connection, from any start.)"""
    base = min(firsts)
    lasts = [x - base for x in lasts]
    return max(firsts) - base < min(lasts) and min(lasts) >= 0.75 * max(lasts)


def one_after_another(firsts, lasts):
    """Not incremental: a response is sent whole before the next, so the
    first to finish does so long before the last."""
    base = min(firsts)
    lasts = [x - base for x in lasts]
    return min(lasts) < 0.6 * max(lasts)


@pytest.mark.parametrize("incremental", [True, False])
def test_h3_incremental_responses_interleave_others_do_not(gateway, incremental):
    gw = gateway()
    n = 4 * MiB
    value = "u=3, i" if incremental else "u=3"
    streams = [Stream().headers(get(gw, "/bytes/%d" % n, [("priority", value)])).fin()
               for _ in range(3)]
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=30)
    assert_all_ok(run)
    firsts = [s["data_first"] for s in run.streams]
    lasts = [s["data_last"] for s in run.streams]
    if incremental:
        assert interleaved(firsts, lasts), run
    else:
        assert one_after_another(firsts, lasts), run


def test_h3_origin_priority_field_adjusts_its_response(gateway):
    """All four asked u=5 (non-incremental: served in stream order); the
    origin says u=0 for the last one, which then finishes first, and the
    field still reaches the client (it is end to end)."""
    gw = gateway()
    streams = [Stream().headers(get(gw, "/bytes/%d" % BIG, [("priority", "u=5")])).fin()
               for _ in range(3)]
    streams.append(Stream().headers(get(gw, "/bytes/%d?priority=u%%3D0" % MiB,
                                        [("priority", "u=5")])).fin())
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=30)
    assert_all_ok(run)
    last = run.streams[3]
    assert ["priority", "u=0"] in last["headers"], run
    assert all(last["data_last"] < s["data_last"] for s in run.streams[:3]), run


def test_h2_urgent_response_overtakes_and_incremental_interleave(gateway):
    """HTTP/2 schedules by RFC 9218 too (nghttp2, after our
    SETTINGS_NO_RFC7540_PRIORITIES = 1)."""
    gw = gateway()
    # Every 64 KiB of connection window, the gateway (nghttp2) picks the
    # stream to send: its schedule shows, not the kernel's buffering.
    with H2Raw(gw, timeout=30, conn_window=65535) as c:
        assert c.run_until(lambda: SETTINGS_NO_RFC7540_PRIORITIES in c.remote_settings)
        assert c.remote_settings[SETTINGS_NO_RFC7540_PRIORITIES] == 1
        low = [c.request("/bytes/%d" % BIG, [("priority", "u=5")]) for _ in range(3)]
        high = c.request("/bytes/%d" % BIG, [("priority", "u=0")])
        c.run_until_done(low + [high])
        st = c.streams
        assert [st[s].body_len for s in low + [high]] == [BIG] * 4
        assert all(st[high].data_last < st[s].data_last for s in low), \
            [(st[s].data_first, st[s].data_last) for s in low + [high]]
        for value, incremental in (("u=3, i", True), ("u=3", False)):
            ids = [c.request("/bytes/%d" % BIG, [("priority", value)])
                   for _ in range(3)]
            c.run_until_done(ids)
            assert all(st[i].body_len == BIG for i in ids)
            firsts = [st[i].data_first for i in ids]
            lasts = [st[i].data_last for i in ids]
            if incremental:
                assert interleaved(firsts, lasts), (firsts, lasts)
            else:
                assert one_after_another(firsts, lasts), (firsts, lasts)


# ---------------------------------------------------------------------------
# PRIORITY_UPDATE edge cases (RFC 9218 §7)

def test_h3_priority_update_for_a_closed_stream_is_ignored(gateway):
    gw = gateway()
    first = Stream().headers(get(gw, "/bytes/10")).fin()
    second = Stream().priority_update(bid(0), "u=1").pause(50)
    second.headers(get(gw, "/bytes/20")).fin()
    run = run_h3raw(gw, Script(first, second), timeout=10)
    assert_all_ok(run)
    assert [s["body_len"] for s in run.streams] == [10, 20]


@pytest.mark.parametrize("element, why", [
    (4 * 10000, "beyond the stream limit"),
    (1, "a server-initiated stream"),
    (2, "a unidirectional stream"),
])
def test_h3_priority_update_for_no_request_stream_is_h3_id_error(gateway, element, why):
    gw = gateway()
    s = Stream().priority_update(element, "u=1").pause(300)
    s.headers(get(gw, "/bytes/10")).fin()
    run = run_h3raw(gw, Script(s, linger=300), timeout=10)
    assert run.conn["connection_close"] == H3_ID_ERROR, (why, run)


def test_h3_priority_update_for_a_push_is_h3_id_error(gateway):
    """This gateway never promises a push, so no push ID is valid."""
    gw = gateway()
    s = Stream().control(FRAME_PRIORITY_UPDATE_PUSH, varint(0) + b"u=1").pause(300)
    s.headers(get(gw, "/bytes/10")).fin()
    run = run_h3raw(gw, Script(s, linger=300), timeout=10)
    assert run.conn["connection_close"] == H3_ID_ERROR, run


def test_h3_priority_update_on_a_request_stream_is_frame_unexpected(gateway, upstream):
    gw = gateway()
    s = Stream().frame(FRAME_PRIORITY_UPDATE, varint(0) + b"u=1")
    s.headers(get(gw, "/bytes/10")).fin()
    run = run_h3raw(gw, Script(s, linger=300), timeout=10)
    assert run.conn["connection_close"] == H3_FRAME_UNEXPECTED, run
    assert upstream.requests == []


def test_h2_priority_update_errors_are_protocol_errors(gateway):
    """RFC 9218 §7.1: a prioritized stream ID of 0, or a PRIORITY_UPDATE
    sent on a stream other than 0, is a connection error PROTOCOL_ERROR.
    An update for a closed stream is ignored."""
    gw = gateway()
    with H2Raw(gw) as c:
        s = c.request("/bytes/10")
        c.run_until_done([s])
        c.priority_update(s, "u=0")  # closed: ignored
        s2 = c.request("/bytes/10")
        c.run_until_done([s2])
        assert c.streams[s2].status == 200 and c.goaway is None
        c.priority_update(0, "u=0")
        c.run_until(lambda: c.goaway is not None)
        assert c.goaway == 1  # PROTOCOL_ERROR
    with H2Raw(gw) as c:
        s = c.request("/bytes/10")
        c.run_until_done([s])
        c.priority_update(s, "u=0", frame_stream=s)
        c.run_until(lambda: c.goaway is not None)
        assert c.goaway == 1
