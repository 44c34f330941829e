"""What routes and groups show (docs/routes.md, Visibility): the labelled
/metrics series per route and per server, the admin listener's
GET /upstreams JSON, and the access log's route= and upstream= fields
(upstream= names the server that answered, also after a retry)."""

import pytest

from conftest import refusing_address, uid
from testenv.groups import PROTOS, HostClients, group, route, served_by


@pytest.fixture
def vis(fleet, routed):
    """Two routes of app.test over two groups, and a group with a server
    that refuses."""
    fleet.add("w1", "w2", "a1", "f1")
    dead = refusing_address()
    gw = routed([
        group("web", [fleet["w1"].server_line(weight=2), fleet["w2"]]),
        group("api", [fleet["a1"]], balance="least_conn"),
        group("flaky", [dead, fleet["f1"].server_line(backup=True)], max_fails=1,
              fail_timeout="30s"),
        route("api", "api", host="app.test", path="/api"),
        route("web", "web", host="app.test"),
        route("flaky", "flaky", host="flaky.test"),
    ])
    hc = HostClients(gw)
    yield gw, fleet, hc, dead
    hc.close()


def drive(hc):
    """6 pages (web: 4 to w1, 2 to w2), 3 api 200s, 2 api 404s, 2 requests
    for no route."""
    for i in range(6):
        r = hc.get(PROTOS[i % 3], "app.test", "/page?i=%d" % i)
        assert r.status == 200, r
    for i in range(3):
        assert hc.get("h2", "app.test", "/api/x?i=%d" % i).status == 200
    for i in range(2):
        assert hc.get("h3", "app.test", "/api/missing?status=404&i=%d" % i).status == 404
    for proto in ("h3", "http/1.1"):
        assert hc.get(proto, "nowhere.test", "/").status in (404, 421)
    # An HTTP/3 exchange is counted when its stream closes, which needs the
    # client to acknowledge the response: closing the clients does that.
    hc.close()


def test_metrics_per_route_and_server(vis):
    gw, fl, hc, dead = vis
    drive(hc)
    gw.wait_idle()
    s = gw.wait_series(lambda s: s.get("route_requests_total", route="web") == 6
                       and s.get("route_requests_total", route="api") == 5
                       and s.sum("route_responses_total", route="api") == 5
                       and s.sum("route_responses_total", route="web") == 6,
                       what="route request and response counters")
    w1, w2, a1 = fl["w1"].address, fl["w2"].address, fl["a1"].address
    assert s.get("route_responses_total", route="web", **{"class": "2xx"}) == 6
    assert s.get("route_responses_total", route="api", **{"class": "2xx"}) == 3
    assert s.get("route_responses_total", route="api", **{"class": "4xx"}) == 2
    assert s.get("route_request_duration_seconds_count", route="web") == 6
    assert s.get("route_request_duration_seconds_sum", route="web") > 0
    assert s.get("requests_unrouted") == 2
    assert s.get("upstream_server_requests_total", group="web", server=w1) == 4
    assert s.get("upstream_server_requests_total", group="web", server=w2) == 2
    assert s.get("upstream_server_requests_total", group="api", server=a1) == 5
    assert s.get("upstream_server_responses_total", group="api", server=a1,
                 **{"class": "4xx"}) == 2
    assert s.get("upstream_server_responses_total", group="web", server=w1,
                 **{"class": "2xx"}) == 4
    assert s.get("upstream_server_first_byte_seconds_count", group="web", server=w1) == 4
    assert s.get("upstream_server_first_byte_seconds_sum", group="web", server=w1) > 0
    for g, srv in (("web", w1), ("web", w2), ("api", a1)):
        assert s.get("upstream_server_failures_total", group=g, server=srv) == 0
        assert s.get("upstream_server_up", group=g, server=srv) == 1
        assert s.get("upstream_server_connections", group=g, server=srv, state="busy") == 0
        assert s.get("upstream_server_connections", group=g, server=srv,
                     state="connecting") == 0
        assert s.get("upstream_server_connections", group=g, server=srv, state="idle") >= 1
        assert s.get("upstream_server_waiting", group=g, server=srv) == 0
    # A server of the group is listed before it served anything.
    assert s.get("upstream_server_up", group="flaky", server=fl["f1"].address) == 1
    assert s.get("upstream_server_requests_total", group="flaky",
                 server=fl["f1"].address) == 0


def test_metrics_failed_server(vis):
    gw, fl, hc, dead = vis
    r = hc.get("h2", "flaky.test", "/x")
    # The primary refuses, so the backup (the only other server) answers.
    assert r.status == 200 and served_by(r) == "f1", r
    s = gw.wait_series(lambda s: s.get("upstream_server_up", group="flaky", server=dead) == 0,
                       what="the refusing server marked down")
    assert s.get("upstream_server_failures_total", group="flaky", server=dead) >= 1
    assert s.get("upstream_server_requests_total", group="flaky",
                 server=fl["f1"].address) == 1


def as_bool(v):
    assert v in (True, False, 0, 1), v
    return bool(v)


def test_admin_upstreams_json(vis):
    gw, fl, hc, dead = vis
    drive(hc)
    assert hc.get("h2", "flaky.test", "/x").status == 200
    gw.wait_idle()
    doc = gw.upstreams()
    assert set(doc) >= {"groups", "routes"}, doc
    groups = {g["name"]: g for g in doc["groups"]}
    assert set(groups) == {"web", "api", "flaky"}, doc["groups"]
    assert groups["web"]["balance"] == "round_robin"
    assert groups["api"]["balance"] == "least_conn"
    keys = {"address", "weight", "backup", "up", "fails", "cooldown_ms", "busy", "idle",
            "connecting", "waiting", "requests", "failures"}
    for g in groups.values():
        for srv in g["servers"]:
            assert keys <= set(srv), (g["name"], srv)
    web = {srv["address"]: srv for srv in groups["web"]["servers"]}
    assert set(web) == {fl["w1"].address, fl["w2"].address}, web
    w1 = web[fl["w1"].address]
    assert w1["weight"] == 2 and web[fl["w2"].address]["weight"] == 1
    assert w1["requests"] == 4 and web[fl["w2"].address]["requests"] == 2, web
    assert as_bool(w1["up"]) and not as_bool(w1["backup"])
    assert w1["failures"] == 0 and w1["fails"] == 0 and w1["cooldown_ms"] == 0
    assert w1["busy"] == 0 and w1["connecting"] == 0 and w1["waiting"] == 0
    assert w1["idle"] >= 1
    api = groups["api"]["servers"]
    assert len(api) == 1 and api[0]["requests"] == 5, api
    flaky = {srv["address"]: srv for srv in groups["flaky"]["servers"]}
    d = flaky[dead]
    assert not as_bool(d["up"]) and d["failures"] >= 1 and d["fails"] >= 1, d
    assert 0 < d["cooldown_ms"] <= 30000, d
    b = flaky[fl["f1"].address]
    assert as_bool(b["backup"]) and as_bool(b["up"]) and b["requests"] == 1, b
    routes = {r["name"]: r for r in doc["routes"]}
    assert set(routes) == {"api", "web", "flaky"}, doc["routes"]
    assert routes["api"]["hosts"] == ["app.test"] and routes["api"]["paths"] == ["/api"]
    assert routes["api"]["upstream"] == "api"
    assert routes["web"]["hosts"] == ["app.test"] and routes["web"]["paths"] == ["/"]
    assert routes["web"]["upstream"] == "web"


def test_access_log_route_and_upstream(vis):
    gw, fl, hc, dead = vis
    tag = uid()
    for proto in PROTOS:
        assert hc.get(proto, "app.test", "/api/a?t=%s" % tag).status == 200
        assert hc.get(proto, "app.test", "/b?t=%s" % tag).status == 200
        # Refused by the first server, answered by the backup: upstream=
        # names the server that answered.
        r = hc.get(proto, "flaky.test", "/c?t=%s" % tag)
        assert r.status == 200 and served_by(r) == "f1", r
        assert hc.get(proto, "nowhere.test", "/d?t=%s" % tag).status in (404, 421)
    # An HTTP/3 request is logged when its stream closes, which needs the
    # client to acknowledge the response: closing the clients does that.
    hc.close()
    lines = gw.wait_access(lambda a: tag in a.get("path", ""), count=12)
    for a in lines:
        path = a["path"]
        want = {"/api/a": ("api", fl["a1"].address),
                "/b": ("web", None),
                "/c": ("flaky", fl["f1"].address),
                "/d": ("-", "-")}[path.split("?")[0]]
        assert a.get("route") == want[0], a.raw
        if want[1] is not None:
            assert a.get("upstream") == want[1], a.raw
        else:
            assert a.get("upstream") in (fl["w1"].address, fl["w2"].address), a.raw


def test_durations_are_in_seconds(vis):
    gw, fl, hc, dead = vis
    a1 = fl["a1"].address
    before = gw.series()
    for i in range(2):
        assert hc.get("h2", "app.test", "/api/slow?delay=300&i=%d" % i).status == 200
    gw.wait_idle()
    s = gw.wait_series(lambda s: s.get("route_request_duration_seconds_count", route="api")
                       - (before.get("route_request_duration_seconds_count", route="api") or 0)
                       == 2, what="two api requests timed")

    def grew(name, **labels):
        return s.get(name, **labels) - (before.get(name, **labels) or 0)
    assert 0.6 <= grew("route_request_duration_seconds_sum", route="api") < 5, s.text_of(
        "h3gate_route_request_duration")
    assert grew("upstream_server_first_byte_seconds_count", group="api", server=a1) == 2
    assert 0.6 <= grew("upstream_server_first_byte_seconds_sum", group="api", server=a1) < 5


def test_gateway_answers_count_for_their_route(fleet, routed):
    """A 502 the gateway makes (the lone server refuses) and a 413 it makes
    (max_request_body) are responses of the route that took the request."""
    dead = refusing_address()
    fleet.add("ok1")
    gw = routed([group("gone", [dead]), group("fine", [fleet["ok1"]]),
                 route("gone", "gone", path="/gone"),
                 route("fine", "fine", max_request_body="1KiB")])
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            assert hc.get(proto, "localhost", "/gone/x").status == 502
            assert hc.request(proto, "localhost", "/up", "POST", body=4096,
                              headers=["Expect: 100-continue"]).status == 413
        # An HTTP/3 exchange is counted when its stream closes, which needs
        # the client to acknowledge the response: closing the clients does.
        hc.close()
        gw.wait_idle()
        s = gw.wait_series(
            lambda s: s.get("route_responses_total", route="gone", **{"class": "5xx"}) == 3
            and s.get("route_responses_total", route="fine", **{"class": "4xx"}) == 3,
            what="route response counters")
        assert s.get("route_requests_total", route="gone") == 3
        assert s.get("route_requests_total", route="fine") == 3
        assert s.get("upstream_server_failures_total", group="gone", server=dead) == 3
        assert s.get("upstream_server_requests_total", group="fine",
                     server=fleet["ok1"].address) == 0
    finally:
        hc.close()
