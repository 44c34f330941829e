"""Checks that several test modules run over different protocols (the same
scenario over HTTP/3, HTTP/2 and HTTP/1.1), and the assertions they share."""

from upstream import KiB, MiB, Upstream, expected_sha256

MID = Upstream.MALFORMED_MID_BYTES


def assert_ok(r, n):
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r


def assert_reset(r, full=None):
    """The client saw an error, and whatever body it got is an intact prefix."""
    assert r.error is not None, (
        "a broken upstream body ended as a clean, successful response "
        "(%d bytes): the stream should have been reset" % r.body_len)
    if full is not None:
        assert r.body_len < full
    assert r.sha256 == expected_sha256(r.body_len), "the body prefix is corrupted"


def check_failing_neighbours(m):
    """On one multiplexed connection m (H3Multi, or an HTTP/2 one): a good
    download and a small one beside streams whose upstream breaks mid body,
    sends a bad head or closes short. The good ones are exact, the broken
    ones reset or 502, and the same connection serves the next batch."""
    good_n = 4 * MiB
    rs = m.run([
        {"path": "/slow/%d?rate=%d" % (good_n, 4 * MiB)},
        {"path": "/malformed/bad-chunk-mid?delay=200"},
        {"path": "/malformed/bad-status-line?delay=100"},
        {"path": "/malformed/close-short-cl?delay=300"},
        {"path": "/bytes/%d?delay=50" % (512 * KiB)},
    ], timeout=30)
    good, mid, head, short, small = rs
    assert_ok(good, good_n)
    assert_ok(small, 512 * KiB)
    assert_reset(mid, 4 * MID)
    assert_reset(short, 4 * MID)
    assert head.error is None and head.status == 502, head
    assert sum(r.num_connects for r in rs) == 1
    again = m.run([{"path": "/bytes/1000"}, {"path": "/chunked/2000"}])
    for r, n in zip(again, (1000, 2000)):
        assert_ok(r, n)
        assert r.num_connects == 0
