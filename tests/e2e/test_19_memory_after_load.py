"""Memory after load: once 2000 QUIC connections (and a few hundred HTTP/2
ones) have come and gone, every live count in /metrics is back to zero (no
connection, stream, bridge, upstream connection or body chunk is left
alive), and once traffic stops the gateway gives its free memory back to
the system, so its resident size returns to within RSS_MARGIN of what it
was before the load (docs/memory.md has the measurements behind the bound).
"""

import time

import pytest

from conftest import SANITIZE, KiB, expected_sha256
from testenv.clients import CURL_HTTP_VERSION_2_0, fresh_connections

# What may stay resident after the load, above the warmed-up gateway's
# resident size: tables sized for the peak (connection ID map, timer heap:
# about 20 KiB a thousand connections), heap pages shared by a few
# long-lived objects that cannot be given back, and library code first run
# during the load. Without the trim, about 25 MiB stays (docs/memory.md).
RSS_MARGIN_KIB = 4 * 1024
# The load must have grown the heap well past that, or the check proves
# nothing.
PEAK_MIN_GROWTH_KIB = 12 * 1024

N_QUIC = 2000
N_H2 = 300
BODY = 64 * KiB

# Every live count of proxy/core/metrics.h: all zero once every client is gone
# and the pool's idle connections have expired.
LIVE = ("quic_connections_active", "h3_streams_active", "h2_streams_active",
        "tcp_connections_active", "bridges_active", "upstream_conns_active",
        "upstream_conns_busy", "upstream_conns_idle", "upstream_queue_waiting",
        "buffer_chunks_active")


def proc_status(gw):
    out = {}
    with open("/proc/%d/status" % gw.pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def specs(n):
    """Three downloads to one upload, each BODY bytes."""
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append({"path": "/sink?i=%d" % i, "method": "POST", "body": BODY})
        else:
            out.append({"path": "/bytes/%d?i=%d" % (BODY, i)})
    return out


def check_results(rs, version=None):
    bad = []
    for s, r in zip(specs(len(rs)), rs):
        if r.error is not None or r.status != 200:
            bad.append((s["path"], r))
        elif version is not None and r.http_version != version:
            bad.append((s["path"], "HTTP version %s" % r.http_version))
        elif s.get("method") == "POST":
            got = r.json()
            if got["len"] != BODY or got["sha256"] != expected_sha256(BODY):
                bad.append((s["path"], got))
        elif r.body_len != BODY or r.sha256 != expected_sha256(BODY):
            bad.append((s["path"], r))
    assert not bad, "%d of %d transfers failed, first: %s" % (len(bad), len(rs), bad[:3])


def wait_all_released(gw, timeout=20):
    return gw.wait_metrics(lambda m: all(m[k] == 0 for k in LIVE), timeout=timeout,
                           what="every live count back to zero (%s)" % ", ".join(LIVE))


@pytest.fixture
def memgw(gateway):
    # Idle upstream connections expire after 1 s, so that "no upstream
    # connection" is reached soon after the load.
    return gateway({"server": {"access_log": "off"},
                    "upstream": {"idle_timeout": "1s"}})


def test_quic_load_releases_everything_and_rss_returns(memgw, upstream):
    gw = memgw
    # The baseline: a gateway that served a request and then went quiet
    # (its first trim), so pages every request touches are counted in.
    check_results(fresh_connections(gw, specs(4), 4))
    wait_all_released(gw)
    gw.wait_metrics(lambda m: m["memory_trims"] >= 1, timeout=10,
                    what="the trim after the warm-up")
    base = proc_status(gw)
    trims0 = gw.metrics()["memory_trims"]

    rs = fresh_connections(gw, specs(N_QUIC), concurrency=100)
    check_results(rs)
    assert len(upstream.requests_for("/")) >= N_QUIC
    peak = proc_status(gw)["VmHWM"]

    m = wait_all_released(gw)
    assert m["quic_connections_accepted"] >= N_QUIC + 4, m
    assert m["requests_total"] >= N_QUIC + 4, m
    # A slow build may pause (and trim) in the middle of the load: the trim
    # that counts is the one after it, which leaves no chunk pooled.
    m = gw.wait_metrics(lambda m: m["memory_trims"] > trims0 and
                        m["buffer_chunks_pooled"] == 0, timeout=10,
                        what="a trim once the load stopped")
    print("trims %d, %d us of CPU in all; VmRSS before %d KiB, peak %d KiB"
          % (m["memory_trims"], m["memory_trim_us"], base["VmRSS"], peak))

    if SANITIZE:
        pytest.skip("RSS not checked in the sanitizer build (ASan keeps freed "
                    "memory in its quarantine); peak was %d KiB" % peak)
    assert peak - base["VmRSS"] >= PEAK_MIN_GROWTH_KIB, (
        "the load grew the gateway by only %d KiB: it proves nothing"
        % (peak - base["VmRSS"]))
    # The last trim may still be a tick away when the counts reach zero:
    # wait (bounded) for the resident size to come down.
    limit = base["VmRSS"] + RSS_MARGIN_KIB
    deadline = time.monotonic() + 10
    now = proc_status(gw)
    while now["VmRSS"] > limit and time.monotonic() < deadline:
        time.sleep(0.1)
        now = proc_status(gw)
    assert now["VmRSS"] <= limit, (
        "VmRSS stayed above %d KiB once quiet: %s (before the load %s, peak %d KiB)"
        % (limit, now, base, peak))


def test_http2_load_releases_everything(memgw, upstream):
    gw = memgw
    rs = fresh_connections(gw, specs(N_H2), concurrency=30, version="h2")
    check_results(rs, version=CURL_HTTP_VERSION_2_0)
    m = wait_all_released(gw)
    assert m["h2_connections"] >= N_H2, m
    assert m["h2_streams_opened"] >= N_H2, m
