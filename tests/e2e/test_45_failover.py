"""Failover within an upstream group (docs/routes.md): a server killed
under load costs no GET and never makes a POST reach the upstreams twice;
it is marked down in /metrics and comes back once it serves again; a group
with every server out answers 503 at once, with Retry-After, without
waiting for a connect timeout; cooldowns double up to max_fail_timeout; a
refused connection is retried on another server, a reset one only for
requests without a body; response timeouts count as failures, in a row; a
lone server is never taken out; pool_size and queue_size per group."""

import collections
import socket
import threading
import time

import pytest

from conftest import SLOW, refusing_address, uid
from testenv.clients import H2Client, H3Client
from testenv.groups import group, route, served_by, wait_until
from testenv.load import run_load


def up_value(gw, grp, address):
    return gw.series().get("upstream_server_up", group=grp, server=address)


# ---- a server dies under load -------------------------------------------

@pytest.mark.parametrize("proto", ["h2", "h3"])
def test_kill_one_of_three_under_load(fleet, routed, proto):
    fleet.add("k1", "k2", "k3")
    gw = routed([group("g", [fleet["k1"], fleet["k2"], fleet["k3"]],
                       max_fails=1, fail_timeout="1s", max_fail_timeout="1s"),
                 route("g", "g")])
    victim = fleet["k2"]
    tag = uid()
    n, rate = 800, 200              # four seconds at 200 requests/s
    # Each answer takes 100 ms, so that the kill finds requests in flight
    # on the victim (about seven at a time).
    specs = []
    for i in range(n):
        if i % 4 == 0:      # not a multiple of the group size: POSTs reach every server
            rid = "%s-post-%d" % (tag, i)
            specs.append({"path": "/p?t=%s&i=%d&delay=100" % (tag, i), "method": "POST",
                          "body": 3000 + i, "headers": ["X-Request-Id: %s" % rid]})
        else:
            specs.append({"path": "/g?t=%s&i=%d&delay=100" % (tag, i)})

    killed_at = []
    marked_down = []
    problems = []

    def killer():
        try:
            watch()
        except Exception as e:      # reported by the test, not lost in the thread
            problems.append(e)

    def watch():
        # Once the load is well under way (a quarter of it on the victim).
        wait_until(lambda: victim.count(lambda r: tag in r["target"]) >= n // 12,
                   timeout=20, what="load reaching the victim")
        victim.kill()
        killed_at.append(time.monotonic())
        # While the load goes on, the dead server is marked down.
        deadline = time.monotonic() + 3 * SLOW
        while time.monotonic() < deadline:
            doc = gw.upstreams()            # valid JSON under load, too
            assert [g["name"] for g in doc["groups"]] == ["g"], doc
            if up_value(gw, "g", victim.address) == 0:
                marked_down.append(time.monotonic())
                break
            time.sleep(0.02)
    k = threading.Thread(target=killer)
    k.start()
    try:
        rs = run_load(gw, specs, proto=proto, concurrency=48, rate=rate, timeout=60)
    finally:
        k.join(30)
    assert not problems, problems
    assert killed_at, "the victim was never killed"
    gets = [r for s, r in zip(specs, rs) if "method" not in s]
    posts = [(s, r) for s, r in zip(specs, rs) if "method" in s]
    failed_gets = [r for r in gets if r.error is not None or r.status != 200]
    assert not failed_gets, "%d of %d GETs failed: %s" % (len(failed_gets), len(gets),
                                                          failed_gets[:5])
    # A POST may fail (its connection broke after the body went out); it
    # must never reach the upstreams twice.
    seen = collections.Counter(r["rid"] for r in fleet.records()
                               if r["method"] == "POST" and tag in r["target"])
    twice = {rid: c for rid, c in seen.items() if c > 1}
    assert not twice, "POSTs sent upstream more than once: %s" % twice
    for s, r in posts:
        rid = s["headers"][0].split(": ", 1)[1]
        if r.error is None and r.status == 200:
            assert seen[rid] == 1, (rid, r)
            assert r.json()["body_len"] == s["body"], r.body[:200]
        else:
            assert r.status in (0, 502, 503), (rid, r)
    # The kill cut requests in flight: GETs the victim had received were
    # answered by another server, or POSTs failed.
    on_victim = {r["target"] for r in victim.records() if tag in r["target"]}
    cut = [r for s, r in zip(specs, rs) if s["path"] in on_victim
           and (served_by(r) != "k2" or r.status != 200)]
    assert cut, "the kill found no request in flight on the victim"
    # After the kill the survivors serve everything.
    late = [r for r in gets[-100:]]
    assert all(served_by(r) in ("k1", "k3") for r in late), collections.Counter(
        served_by(r) for r in late)
    # Marked down (seen while the load went on)...
    assert marked_down, "h3gate_upstream_server_up of the killed server never went to 0"
    assert up_value(gw, "g", fleet["k1"].address) == 1
    assert up_value(gw, "g", fleet["k3"].address) == 1
    s = gw.series()
    assert s.get("upstream_server_failures_total", group="g", server=victim.address) >= 1
    # ... and back once it serves again (passive checks: after its cooldown
    # a request tries it).
    victim.start()
    c = H2Client(gw)
    try:
        wait_until(lambda: served_by(c.get("/again")) == "k2", timeout=10,
                   what="the restarted server serving again")
    finally:
        c.close()
    gw.wait_series(lambda s: s.get("upstream_server_up", group="g",
                                   server=victim.address) == 1,
                   timeout=5, what="the restarted server marked up")


# ---- every server out -----------------------------------------------------

def test_all_servers_down_503_with_retry_after(fleet, routed):
    fleet.add("d1", "d2")
    gw = routed([group("g", [fleet["d1"], fleet["d2"]], max_fails=1, fail_timeout="10s"),
                 route("g", "g")])
    c = H3Client(gw)
    try:
        assert c.get("/warm").status == 200
        fleet["d1"].kill()
        fleet["d2"].kill()
        first = c.get("/first")
        assert first.error is None and first.status in (502, 503), first
        gw.wait_series(lambda s: s.sum("upstream_server_up", group="g") == 0,
                       what="both servers out")
        for i in range(5):
            t0 = time.monotonic()
            r = c.get("/down?i=%d" % i)
            took = time.monotonic() - t0
            assert r.error is None and r.status == 503, r
            ra = r.header("retry-after")
            assert ra is not None and ra.isdigit(), r.headers
            # Seconds until the first cooldown (10 s, just begun) ends.
            assert 8 <= int(ra) <= 10, "Retry-After %s with fail_timeout 10s" % ra
            assert took < 0.5 * SLOW, "503 took %.2fs" % took
    finally:
        c.close()


def test_cooldown_doubles_up_to_max_fail_timeout(fleet, routed):
    """Each failure after a cooldown doubles it (1 s, then 2 s), never past
    max_fail_timeout (2 s); Retry-After tells the time left."""
    fleet.add("c1", "c2")
    gw = routed([group("g", [fleet["c1"], fleet["c2"]], max_fails=1, fail_timeout="1s",
                       max_fail_timeout="2s"),
                 route("g", "g")])
    c = H2Client(gw)
    try:
        assert c.get("/warm").status == 200
        fleet["c1"].kill()
        fleet["c2"].kill()
        seen = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.5:
            r = c.get("/cd")
            assert r.error is None and r.status in (502, 503), r
            if r.status == 503:
                ra = r.header("retry-after")
                assert ra is not None and ra.isdigit() and int(ra) >= 1, r.headers
                seen.append((round(time.monotonic() - t0, 2), int(ra)))
            time.sleep(0.05)
        values = {v for _, v in seen}
        assert 1 in values and 2 in values, "no doubling seen: %s" % seen
        assert max(values) == 2, "cooldown past max_fail_timeout: %s" % seen
        # Still failing, still tried after each cooldown: more failures than
        # the first two.
        s = gw.series()
        assert s.sum("upstream_server_failures_total", group="g") >= 4, (
            s.text_of("h3gate_upstream_server_failures_total"))
    finally:
        c.close()


class Blackhole:
    """A TCP address whose connects hang: a listener with backlog 0 and its
    queue filled, so further SYNs are dropped (a server that is gone from
    the network rather than one that refuses)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(self.sock.getsockname())
            self.fillers.append(f)
        time.sleep(0)

    def hangs(self):
        p = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        p.settimeout(0.5)
        try:
            p.connect(self.sock.getsockname())
            return False
        except socket.timeout:
            return True
        finally:
            p.close()

    def close(self):
        for f in self.fillers:
            f.close()
        self.sock.close()


def test_group_out_answers_before_connect_timeout(routed):
    holes = [Blackhole(), Blackhole()]
    try:
        assert all(h.hangs() for h in holes), "connects to a full backlog did not hang"
        gw = routed([group("g", [h.address for h in holes], connect_timeout="1s",
                           max_fails=1, fail_timeout="20s"),
                     route("g", "g")],
                    {"server": {"shutdown_timeout": "2s"}})
        c = H2Client(gw)
        try:
            t0 = time.monotonic()
            out = []
            t = threading.Thread(target=lambda: out.append(c.get("/first", timeout=20)))
            t.start()
            try:
                # While it waits, the connect shows in /metrics.
                gw.wait_series(lambda s: s.sum("upstream_server_connections", group="g",
                                               state="connecting") == 1,
                               timeout=2, what="a connect in progress")
            finally:
                t.join(30)
            took = time.monotonic() - t0
            first = out[0]
            assert first.error is None and first.status in (502, 503, 504), first
            assert took >= 0.9, "the first request did not wait to connect (%.2fs)" % took
            gw.wait_series(lambda s: s.sum("upstream_server_up", group="g") == 0,
                           what="both servers out")
            for i in range(3):
                t0 = time.monotonic()
                r = c.get("/then?i=%d" % i)
                took = time.monotonic() - t0
                assert r.error is None and r.status == 503, r
                assert took < 0.3 * SLOW, "503 after %.2fs: a connect was tried" % took
                ra = r.header("retry-after")
                assert ra is not None and ra.isdigit() and 15 <= int(ra) <= 20, r.headers
        finally:
            c.close()
    finally:
        for h in holes:
            h.close()


# ---- retries -------------------------------------------------------------

def test_refused_connection_retried_on_another_server(fleet, routed):
    fleet.add("a", "b")
    dead = refusing_address()
    # max_fails 0: the refusing server is never taken out, so every turn of
    # the round robin that picks it needs a retry.
    gw = routed([group("g", [fleet["a"].server_line(), dead, fleet["b"].server_line()],
                       max_fails=0),
                 route("g", "g")])
    tag = uid()
    specs = [{"path": "/r?t=%s&i=%d" % (tag, i)} for i in range(30)]
    specs += [{"path": "/r?t=%s&i=p%d" % (tag, i), "method": "POST", "body": 777,
               "headers": ["X-Request-Id: %s-%d" % (tag, i)]} for i in range(15)]
    rs = run_load(gw, specs, proto="h2", concurrency=1)
    bad = [r for r in rs if r.error is not None or r.status != 200]
    assert not bad, bad[:5]
    assert {served_by(r) for r in rs} == {"a", "b"}
    posts = [r for r in fleet.records() if r["method"] == "POST" and tag in r["target"]]
    assert len(posts) == 15 and len({r["rid"] for r in posts}) == 15, posts
    s = gw.series()
    assert s.get("upstream_server_failures_total", group="g", server=dead) >= 10, (
        s.text_of("h3gate_upstream_server_failures_total"))


def test_without_retries_a_refused_connection_is_502(fleet, routed):
    fleet.add("a")
    dead = refusing_address()
    gw = routed([group("g", [fleet["a"].server_line(), dead], max_fails=0, retries=0),
                 route("g", "g")])
    c = H2Client(gw)
    try:
        got = collections.Counter()
        for i in range(10):
            r = c.get("/n?i=%d" % i)
            got[(r.status, served_by(r))] += 1
        assert got == {(200, "a"): 5, (502, None): 5}, got
    finally:
        c.close()


# ---- what is sent again after a broken connection -----------------------

def test_reset_before_response_resends_only_requests_without_body(fleet, routed):
    """x1 reads each request, then resets (or closes) the connection
    without a response byte. Requests without a body are sent again to x2;
    requests with one are not (502), and reach the upstreams once."""
    fleet.add("x1", "x2")
    gw = routed([group("g", [fleet["x1"], fleet["x2"]], max_fails=0),
                 route("g", "g")])
    tag = uid()
    c = H2Client(gw)
    try:
        for how in ("reset_on", "drop_on"):
            for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "GET", "GET", "HEAD"):
                r = c.request("/m?t=%s&%s=x1&m=%s" % (tag, how, method), method)
                assert r.error is None and r.status == 200, (how, method, r)
                assert served_by(r) == "x2", (how, method, r.headers)
        resent = fleet["x1"].count(lambda r: tag in r["target"])
        assert resent >= 4, "x1 broke only %d requests: nothing was tested" % resent
        assert fleet["x2"].count(lambda r: tag in r["target"]) == 16
        outcomes = collections.Counter()
        for how in ("reset_on", "drop_on"):
            for i, method in enumerate(("POST", "PUT", "POST", "PATCH", "POST", "PUT")):
                rid = "%s-%s-%d" % (tag, how, i)
                r = c.request("/b?t=%s&%s=x1&i=%d" % (tag, how, i), method, body=2000 + i,
                              headers=["X-Request-Id: %s" % rid])
                got = [rec["id"] for rec in fleet.records() if rec["rid"] == rid]
                assert len(got) == 1, "%s %s reached %s" % (method, rid, got)
                if got == ["x2"]:
                    assert r.status == 200 and r.json()["body_len"] == 2000 + i, r
                else:
                    assert r.error is None and r.status == 502, (method, how, r)
                outcomes[got[0]] += 1
        assert outcomes["x1"] >= 4, outcomes
    finally:
        c.close()


# ---- limits of a group ----------------------------------------------------

def test_group_pool_size_and_queue_size(fleet, routed):
    """pool_size=1, queue_size=2: of five requests at once, one is served
    on the one connection, two wait for it (seen in /upstreams and
    /metrics), two are refused with 503 at once; another group's pool is
    not limited."""
    fleet.add("q1", "q2")
    gw = routed([group("small", [fleet["q1"]], pool_size=1, queue_size=2),
                 group("big", [fleet["q2"]]),
                 route("small", "small", path="/small"),
                 route("big", "big")])
    tag = uid()
    specs = [{"path": "/small/x?t=%s&i=%d&delay=700" % (tag, i)} for i in range(5)]
    specs += [{"path": "/big/x?t=%s&i=%d&delay=700" % (tag, i)} for i in range(5)]
    out = []
    t = threading.Thread(target=lambda: out.append(
        run_load(gw, specs, proto="h2", concurrency=10, timeout=30)))
    t.start()
    try:
        def queued():
            doc = gw.upstreams()
            srv = [g for g in doc["groups"] if g["name"] == "small"][0]["servers"][0]
            return srv if srv["waiting"] == 2 and srv["busy"] == 1 else None
        srv = wait_until(queued, timeout=5, what="two requests waiting for the one connection")
        assert srv["idle"] == 0 and srv["connecting"] == 0, srv
        s = gw.series()
        assert s.get("upstream_server_waiting", group="small",
                     server=fleet["q1"].address) == 2, s.text_of("h3gate_upstream_server_waiting")
    finally:
        t.join(30)
    rs = out[0]
    small, big = rs[:5], rs[5:]
    assert collections.Counter(r.status for r in small) == {200: 3, 503: 2}, small
    assert all(r.time_total < 0.5 * SLOW for r in small if r.status == 503), small
    assert all(r.status == 200 for r in big), big
    q1 = [r for r in fleet["q1"].records() if tag in r["target"]]
    assert len(q1) == 3 and len({r["conn"] for r in q1}) == 1, q1
    q2 = [r for r in fleet["q2"].records() if tag in r["target"]]
    assert len(q2) == 5 and len({r["conn"] for r in q2}) == 5, q2


def test_response_timeouts_take_a_server_out(fleet, routed):
    """A server that does not answer within response_timeout, max_fails
    times in a row, is out: 504 for those requests (a timeout is no reset:
    nothing is sent again), then every request goes to the other server."""
    fleet.add("s1", "s2")
    gw = routed([group("g", [fleet["s1"], fleet["s2"]], response_timeout="500ms",
                       max_fails=2, fail_timeout="30s"),
                 route("g", "g")])
    c = H3Client(gw)
    try:
        got = []
        for i in range(10):
            r = c.get("/t?i=%d&delay_on=s1&delay=3000" % i, timeout=10)
            got.append((r.status, served_by(r)))
        assert got[:4] in ([(504, None), (200, "s2")] * 2, [(200, "s2"), (504, None)] * 2), got
        assert got[4:] == [(200, "s2")] * 6, got
        assert fleet["s1"].count(lambda r: "delay_on" in r["target"]) == 2
        s = gw.series()
        assert s.get("upstream_server_up", group="g", server=fleet["s1"].address) == 0
        assert s.get("upstream_server_failures_total", group="g",
                     server=fleet["s1"].address) == 2
    finally:
        c.close()


def test_a_success_clears_the_failure_count(fleet, routed):
    """max_fails counts failures in a row: slow, fast, slow leaves the
    server in; a second slow in a row takes it out."""
    fleet.add("s1", "s2")
    gw = routed([group("g", [fleet["s1"], fleet["s2"]], response_timeout="500ms",
                       max_fails=2, fail_timeout="30s"),
                 route("g", "g")])
    c = H2Client(gw)

    def next_on_s1(slow):
        # Requests alternate; send until one lands on s1 (a 504 is s1 too).
        for i in range(4):
            q = "delay_on=s1&delay=3000" if slow else "fast"
            r = c.get("/a?%s&i=%d" % (q, i), timeout=10)
            if r.status == 504 or served_by(r) == "s1":
                return r.status
        raise AssertionError("no request reached s1")

    def s1_up():
        return up_value(gw, "g", fleet["s1"].address)
    try:
        assert next_on_s1(True) == 504
        assert next_on_s1(False) == 200
        assert next_on_s1(True) == 504
        assert s1_up() == 1, "two failures, not in a row, took s1 out"
        assert next_on_s1(True) == 504
        assert s1_up() == 0, "two failures in a row left s1 in"
    finally:
        c.close()


def test_a_lone_server_is_never_taken_out(fleet, routed):
    """A group of one server is not emptied by passive checks: while it is
    down each request tries it (502), and once back it serves at once."""
    fleet.add("solo")
    gw = routed([group("g", [fleet["solo"]], max_fails=1, fail_timeout="60s"),
                 route("g", "g")])
    c = H2Client(gw)
    try:
        assert c.get("/a").status == 200
        fleet["solo"].kill()
        for i in range(3):
            r = c.get("/down?i=%d" % i)
            assert r.error is None and r.status == 502, r
        assert up_value(gw, "g", fleet["solo"].address) == 1
        fleet["solo"].start()
        r = c.get("/back")
        assert r.status == 200 and served_by(r) == "solo", r
    finally:
        c.close()
