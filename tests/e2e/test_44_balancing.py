"""Balancing within an upstream group (docs/routes.md): smooth weighted
round robin (shares within 5 % over 10 000 requests, and smooth: every
window of sum(weights) requests is one full turn), least_conn (an idle
server is preferred to one holding slow requests), hash on a header, a
cookie or the client's address (a key stays on its server; when that server
goes, only its keys move), and backup servers (used only while every
primary is out)."""

import collections
import itertools
import threading


from conftest import pycurl, uid
from testenv.clients import H2Client, H3Client
from testenv.groups import PROTOS, HostClients, group, route, served_by, wait_until
from testenv.load import run_load


def counts(results):
    return collections.Counter(served_by(r) for r in results)


def all_ok(results):
    bad = [r for r in results if r.error is not None or r.status != 200]
    assert not bad, "%d of %d failed, e.g. %s" % (len(bad), len(results), bad[:3])


# ---- round robin --------------------------------------------------------------

WEIGHTS = {"w5": 5, "w3": 3, "w2": 2}


def test_weighted_round_robin_shares(fleet, routed):
    fleet.add(*WEIGHTS)
    gw = routed([group("web", [fleet[s].server_line(w) for s, w in WEIGHTS.items()]),
                 route("web", "web")])
    n = 10000
    tag = uid()
    rs = run_load(gw, [{"path": "/rr?t=%s&i=%d" % (tag, i)} for i in range(n)],
                  proto="h2", concurrency=32, timeout=120)
    all_ok(rs)
    got = counts(rs)
    upstream_side = fleet.count(list(WEIGHTS), lambda r: tag in r["target"])
    assert dict(got) == upstream_side, (got, upstream_side)
    total_w = sum(WEIGHTS.values())
    for s, w in WEIGHTS.items():
        want = n * w / total_w
        assert abs(got[s] - want) <= 0.05 * want, (
            "%s (weight %d) served %d of %d, want %.0f +-5%%: %s" % (s, w, got[s], n, want,
                                                                    dict(got)))


def test_weighted_round_robin_is_smooth(fleet, routed):
    """One request at a time: the picks repeat with period sum(weights),
    every window of that length holds each server weight times, and the
    heaviest server never serves three in a row (5,3,2 interleaved, not
    5 then 3 then 2)."""
    fleet.add(*WEIGHTS)
    gw = routed([group("web", [fleet[s].server_line(w) for s, w in WEIGHTS.items()]),
                 route("web", "web")])
    hc = HostClients(gw)
    try:
        seq = []
        for i in range(30):
            r = hc.get("http/1.1", "localhost", "/seq/%d" % i)
            assert r.status == 200, r
            seq.append(served_by(r))
    finally:
        hc.close()
    period = sum(WEIGHTS.values())
    for i in range(len(seq) - period + 1):
        assert collections.Counter(seq[i:i + period]) == WEIGHTS, (i, seq)
    longest = max(len(list(g)) for _, g in itertools.groupby(seq))
    assert longest <= 2, "not smooth: %s" % seq


def test_round_robin_is_the_default_and_unweighted(fleet, routed):
    fleet.add("r1", "r2", "r3", "r4")
    gw = routed([group("web", [fleet[s] for s in ("r1", "r2", "r3", "r4")]),
                 route("web", "web")])
    rs = run_load(gw, [{"path": "/d?i=%d" % i} for i in range(400)], proto="h3",
                  concurrency=8)
    all_ok(rs)
    assert counts(rs) == {"r1": 100, "r2": 100, "r3": 100, "r4": 100}, counts(rs)


# ---- least_conn -----------------------------------------------------------

def test_least_conn_prefers_idle_server(fleet, routed):
    fleet.add("l1", "l2", "l3")
    gw = routed([group("lc", [fleet["l1"], fleet["l2"], fleet["l3"]],
                       balance="least_conn"),
                 route("lc", "lc")])
    tag = uid()
    slow = []

    def hold(i):
        with H2Client(gw) as c:
            slow.append(c.get("/slow?t=%s&i=%d&delay=2500" % (tag, i), timeout=20))
    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        # Both slow requests are held upstream: on two different servers.
        wait_until(lambda: fleet.total(predicate=lambda r: tag in r["target"]) == 2,
                   timeout=5, what="two slow requests upstream")
        held = [r["id"] for r in fleet.records() if tag in r["target"]]
        assert len(set(held)) == 2, "least_conn put both slow requests on %s" % held
        idle = ({"l1", "l2", "l3"} - set(held)).pop()
        quick = []
        with H3Client(gw) as c:
            for i in range(12):
                r = c.get("/quick?t=%s&i=%d" % (tag, i))
                assert r.status == 200, r
                quick.append(served_by(r))
        assert slow == [], "the slow requests ended before the quick ones: %s" % slow
        assert quick == [idle] * 12, (
            "with %s busy, quick requests went to %s (want all on %s)" % (held, quick, idle))
    finally:
        for t in threads:
            t.join(30)
    assert len(slow) == 2 and all(r.status == 200 for r in slow), slow


def test_least_conn_counts_in_flight_per_weight(fleet, routed):
    """Eight slow requests at once over weights 3 and 1: in flight per
    weight stays even, so six on the heavy server and two on the light."""
    fleet.add("heavy", "light")
    gw = routed([group("lc", [fleet["heavy"].server_line(3), fleet["light"].server_line(1)],
                       balance="least_conn"),
                 route("lc", "lc")])
    rs = run_load(gw, [{"path": "/w?i=%d&delay=800" % i} for i in range(8)], proto="h2",
                  concurrency=8)
    all_ok(rs)
    assert counts(rs) == {"heavy": 6, "light": 2}, counts(rs)


# ---- hash ------------------------------------------------------------------

HASHED = ("h1", "h2", "h3")


def hash_group(fleet, routed, key, **extra):
    fleet.add(*HASHED)
    return routed([group("h", [fleet[s] for s in HASHED], balance="hash", hash_key=key,
                         max_fails=1, fail_timeout="30s", **extra),
                   route("h", "h")])


def placement(hc, keys, header_of, protos=PROTOS, rounds=2):
    """{key: server}, asserting that every request of a key (every round,
    every protocol) went to the same server."""
    where = {}
    for _ in range(rounds):
        for proto in protos:
            for k in keys:
                h = header_of(k)
                r = hc.get(proto, "localhost", "/hash?k=%s" % k,
                           headers=h if isinstance(h, list) else [h])
                assert r.status == 200, (k, r)
                s = served_by(r)
                assert where.setdefault(k, s) == s, (
                    "key %s went to %s, then to %s (%s)" % (k, where[k], s, proto))
    return where


def check_only_dead_keys_move(fleet, gw, hc, keys, header_of):
    before = placement(hc, keys, header_of)
    assert len(set(before.values())) == 3, "30 keys did not reach all 3 servers: %s" % before
    victim = collections.Counter(before.values()).most_common(1)[0][0]
    fleet[victim].kill()
    # Its keys still get answers (connection refused: another server).
    for k in keys:
        h = header_of(k)
        r = hc.get("h2", "localhost", "/hash?k=%s&after-kill" % k,
                   headers=h if isinstance(h, list) else [h])
        assert r.status == 200 and served_by(r) != victim, (k, r)
    after = placement(hc, keys, header_of)
    moved = {k for k in keys if after[k] != before[k]}
    assert moved == {k for k in keys if before[k] == victim}, (
        "moved %s; the dead server %s held %s" % (
            sorted(moved), victim, sorted(k for k in keys if before[k] == victim)))
    # The dead server's keys spread over the others, they do not all pile on one.
    orphans = [k for k in keys if before[k] == victim]
    if len(orphans) >= 6:
        assert len({after[k] for k in orphans}) == 2, after


def test_hash_header_keeps_keys_and_moves_only_the_dead(fleet, routed):
    gw = hash_group(fleet, routed, "header:X-User")
    hc = HostClients(gw)
    try:
        keys = ["user%d" % i for i in range(30)]
        # Field names are case-insensitive (RFC 9110 §5.1).
        names = itertools.cycle(["X-User", "x-user", "X-USER"])
        check_only_dead_keys_move(fleet, gw, hc, keys, lambda k: "%s: %s" % (next(names), k))
    finally:
        hc.close()


def test_hash_without_key_is_round_robin(fleet, routed):
    gw = hash_group(fleet, routed, "header:X-User")
    hc = HostClients(gw)
    try:
        seen = collections.Counter()
        for i in range(9):
            r = hc.get("h2", "localhost", "/nokey?i=%d" % i)
            assert r.status == 200, r
            seen[served_by(r)] += 1
        assert seen == {"h1": 3, "h2": 3, "h3": 3}, seen
    finally:
        hc.close()


def test_hash_cookie(fleet, routed):
    gw = hash_group(fleet, routed, "cookie:session")
    hc = HostClients(gw)
    try:
        keys = ["s%03d" % i for i in range(30)]
        # Only the named cookie counts: other cookies around it change nothing.
        # Also split over several Cookie fields, as HTTP/2 and HTTP/3
        # clients may send them (RFC 9113 §8.2.3, RFC 9114 §4.2.1).
        jar = itertools.cycle([["Cookie: session=%s"], ["Cookie: theme=dark; session=%s"],
                               ["Cookie: session=%s; lang=fr; a=1"], ["Cookie: b=2; session=%s"],
                               ["Cookie: theme=dark", "Cookie: session=%s"],
                               ["Cookie: session=%s", "Cookie: z=9"]])
        check_only_dead_keys_move(fleet, gw, hc, keys,
                                  lambda k: [h.replace("%s", k) for h in next(jar)])
    finally:
        hc.close()


def test_hash_client_ip(fleet, routed):
    gw = hash_group(fleet, routed, "client_ip")
    where = {}
    for n in range(1, 13):
        ip = "127.0.0.%d" % n
        for proto_client in (H3Client, H2Client):
            c = proto_client(gw)
            try:
                for i in range(3):
                    def bind(curl, t, _ip=ip):
                        curl.setopt(pycurl.INTERFACE, _ip)
                    r = c.request("/ip?n=%d&i=%d" % (n, i), setup=bind)
                    assert r.status == 200, (ip, r)
                    assert where.setdefault(ip, served_by(r)) == served_by(r), (
                        "%s went to %s and to %s" % (ip, where[ip], served_by(r)))
            finally:
                c.close()
    line = gw.wait_access(lambda a: a.get("client", "").startswith("127.0.0.12:"))[0]
    assert line.get("upstream") == fleet[where["127.0.0.12"]].address, line.raw
    assert len(set(where.values())) >= 2, "12 client addresses all on one server: %s" % where


# ---- backup -----------------------------------------------------------------

def test_backup_only_when_every_primary_is_out(fleet, routed):
    fleet.add("p1", "p2", "bk")
    gw = routed([group("b", [fleet["p1"], fleet["p2"], fleet["bk"].server_line(backup=True)],
                       max_fails=1, fail_timeout="1s", max_fail_timeout="1s"),
                 route("b", "b")])
    c = H2Client(gw)
    try:
        def serve(n, tag):
            got = collections.Counter()
            for i in range(n):
                r = c.get("/b?t=%s&i=%d" % (tag, i))
                assert r.status == 200, (tag, i, r)
                got[served_by(r)] += 1
            return got
        assert serve(10, "all-up") == {"p1": 5, "p2": 5}
        fleet["p1"].kill()
        # p1 refuses: its requests are retried on p2, never on the backup.
        assert serve(10, "p1-down") == {"p2": 10}
        fleet["p2"].kill()
        assert serve(10, "both-down") == {"bk": 10}
        fleet["p1"].start()
        # After its cooldown p1 is tried again, succeeds, and the backup
        # goes back to waiting.
        wait_until(lambda: served_by(c.get("/b?probe")) == "p1", timeout=10,
                   what="p1 back in service")
        assert serve(6, "p1-back") == {"p1": 6}
        assert fleet["bk"].count(lambda r: "t=all-up" in r["target"]
                                 or "t=p1-down" in r["target"]
                                 or "t=p1-back" in r["target"]) == 0
    finally:
        c.close()


def test_hash_keys_come_back_with_their_server(fleet, routed):
    """Rendezvous hashing: when a server that went comes back, its keys go
    back to it and the others' keys stay where they are."""
    fleet.add(*HASHED)
    gw = routed([group("h", [fleet[s] for s in HASHED], balance="hash",
                       hash_key="header:X-User", max_fails=1, fail_timeout="1s",
                       max_fail_timeout="1s"),
                 route("h", "h")])
    hc = HostClients(gw)
    try:
        keys = ["back%d" % i for i in range(24)]
        header_of = lambda k: "X-User: %s" % k  # noqa: E731
        before = placement(hc, keys, header_of, protos=("h2",), rounds=1)
        victim = collections.Counter(before.values()).most_common(1)[0][0]
        fleet[victim].kill()
        during = placement(hc, keys, header_of, protos=("h2",), rounds=1)
        assert victim not in during.values(), during
        fleet[victim].start()
        # After its cooldown a request tries it again and it is back.
        mine = [k for k in keys if before[k] == victim]
        wait_until(lambda: served_by(hc.get("h2", "localhost", "/hash?k=probe",
                                            headers=[header_of(mine[0])])) == victim,
                   timeout=10, what="%s serving its keys again" % victim)
        after = placement(hc, keys, header_of, rounds=2)
        assert after == before, {k: (before[k], after[k]) for k in keys
                                 if before[k] != after[k]}
    finally:
        hc.close()
