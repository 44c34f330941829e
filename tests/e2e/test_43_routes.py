"""Routes (docs/routes.md): each request is matched once against the
[route NAME] sections by host (exact, then the longest wildcard, then
routes without host; case, port and a trailing dot ignored) and by path
prefix (the longest wins, on a segment boundary, after removing dot
segments and decoding unreserved characters), and goes to a server of the
route's [upstream NAME] group, over HTTP/3, HTTP/2 and HTTP/1.1 alike, one
request at a time or multiplexed. The authority that routes: HTTP/1.1
absolute-form, HTTP/2 Host without :authority, never a Host that disagrees.
No match: 421 on HTTP/3 and HTTP/2, 404 on HTTP/1.1 (404 everywhere with
no_route = not_found), nothing upstream, bodies or not. Per-route settings:
header edits both ways, max_request_body, alt_svc, response_timeout,
request_body_timeout, early_data, forwarding fields. The file without
routes still serves every host; unix-socket and IPv6 servers."""

import os

import pytest

from conftest import uid
from testenv.groups import (PROTOS, Fleet, HostClients, RoutedFactory, group,
                            route, served_by)

GROUPS = {
    "app": ("app1", "app2", "app3"),
    "api": ("api1", "api2", "api3"),
    "static": ("st1", "st2"),
    "www": ("www1", "www2"),
}
SERVER_GROUP = {s: g for g, ss in GROUPS.items() for s in ss}


def routing_blocks(fl):
    blocks = [group(g, [fl[s] for s in ss]) for g, ss in GROUPS.items()]
    blocks += [
        route("static", "static", host="app.example.com", path="/static/ /assets/"),
        route("api", "api", host="app.example.com, api.example.com", path="/api"),
        route("api-admin", "www", host="app.example.com", path="/api/admin"),
        route("app", "app", host="app.example.com *.app.example.com"),
        route("www", "www", host="*.example.com"),
        # Hosts written with capitals and a trailing dot in the file.
        route("upper", "static", host="UPPER.Example.NET., *.Wild.NET"),
        # Per-route settings, on a host of their own.
        route("edits", "www", host="edit.test", path="/edit",
              add_request_header=["X-Gateway: h3gate", "X-Route-Seen: edits"],
              remove_request_header="X-Secret",
              add_response_header="X-Served-Route: edits"),
        route("small", "www", host="edit.test", path="/small", max_request_body="1KiB"),
        route("noalt", "www", host="edit.test", path="/noalt", alt_svc="off"),
        route("plain", "www", host="edit.test"),
    ]
    return blocks


@pytest.fixture(scope="module")
def env(tmp_path_factory, certs):
    fl = Fleet(str(tmp_path_factory.mktemp("routes-fleet")))
    fl.add(*SERVER_GROUP)
    f = RoutedFactory(tmp_path_factory, certs)
    gw = f(routing_blocks(fl), name="routes-gw")
    hc = HostClients(gw)
    yield gw, fl, hc
    hc.close()
    f.finish()
    fl.stop()


def sent_upstream(fl, tag):
    """Records (across every server) of requests whose target has tag."""
    return [r for r in fl.records() if tag in r["target"]]


def check_routed(env, proto, host, path, want_group):
    gw, fl, hc = env
    tag = uid()
    sep = "&" if "?" in path else "?"
    target = "%s%st=%s" % (path, sep, tag)
    r = hc.get(proto, host, target, as_is=True)
    assert r.error is None and r.status == 200, (proto, host, path, r, r.body[:300])
    sid = served_by(r)
    assert SERVER_GROUP.get(sid) == want_group, (
        "%s %s%s went to %s (group %s), want group %s"
        % (proto, host, path, sid, SERVER_GROUP.get(sid), want_group))
    recs = sent_upstream(fl, tag)
    assert len(recs) == 1 and recs[0]["id"] == sid, recs
    # The request goes upstream as the client wrote it.
    assert recs[0]["target"] == target, recs[0]
    assert recs[0]["host"] == host, recs[0]
    r.tag = tag
    return r


# (host, path, group): exact and wildcard hosts, case, port, trailing dot.
HOST_CASES = [
    ("app.example.com", "/", "app"),
    ("APP.Example.COM", "/page", "app"),
    ("app.example.com:8443", "/page", "app"),
    ("app.example.com.", "/page", "app"),
    ("App.Example.Com.:443", "/static/a.css", "static"),
    ("x.app.example.com", "/", "app"),            # the longest wildcard wins
    ("a.b.app.example.com", "/x", "app"),         # at any depth
    ("xapp.example.com", "/", "www"),             # *.app.example.com is not *app.
    ("x.app.example.com", "/api/v1", "app"),      # route api is not on that host
    ("api.example.com", "/api/v1", "api"),
    ("API.EXAMPLE.COM", "/api", "api"),
    ("api.example.com", "/other", "www"),         # no path of the exact host: wildcard
    ("foo.example.com", "/api/v1", "www"),
    ("deep.foo.example.com", "/", "www"),
    ("upper.example.net", "/", "static"),
    ("Upper.Example.Net.:8443", "/", "static"),
    ("a.wild.net", "/", "static"),
    ("A.B.WILD.NET.", "/", "static"),
]


@pytest.mark.parametrize("proto", PROTOS)
def test_host_matching(env, proto):
    for host, path, grp in HOST_CASES:
        check_routed(env, proto, host, path, grp)


# (path, group) on app.example.com: longest prefix, segment boundary,
# query, dot segments removed before matching.
PATH_CASES = [
    ("/", "app"),
    ("/api", "api"),
    ("/api/", "api"),
    ("/api/v1/users", "api"),
    ("/api?x=1", "api"),
    ("/apix", "app"),                   # /api does not match /apix
    ("/api-docs", "app"),
    ("/api/admin", "www"),              # the longest prefix wins
    ("/api/admin/users", "www"),
    ("/api/adminx", "api"),
    ("/static/a.css", "static"),
    ("/static", "app"),                 # /static/ needs its slash
    ("/staticx/a.css", "app"),
    ("/assets/img/logo.png", "static"),
    ("/static/../api/v1", "api"),       # matched as /api/v1
    ("/static/./a.css", "static"),
    ("/x/../static/a.css", "static"),
    ("/api/%2e%2e/static/a.css", "static"),
    ("/api/%2E%2E/assets/a.png", "static"),
    ("/assets/%2e/../api/admin/x", "www"),
    ("/api/v1/../../static/a.css", "static"),
    ("/../api/x", "api"),               # no climbing above the root
    ("/static/..", "app"),              # matched as /
    ("/assets/x/%2e%2e", "static"),     # matched as /assets/
    ("/static/.%2e/api/v1", "api"),
    ("/./api", "api"),
    ("/API/v1", "app"),                 # paths are case-sensitive
    ("/api%2Fv1", "app"),               # an encoded "/" is no segment boundary
    ("/x?next=/api/v1", "app"),         # the query is not the path
    ("/?/static/a.css", "app"),
    ("/api;v=1", "app"),                # only "/" and "?" end the prefix
]


@pytest.mark.parametrize("proto", PROTOS)
def test_path_matching(env, proto):
    for path, grp in PATH_CASES:
        check_routed(env, proto, "app.example.com", path, grp)


def test_percent_encoded_unreserved_characters_match_as_decoded(env):
    """RFC 9110 §4.2.3: characters outside the reserved set are equivalent
    to their percent-encoded octets, so /%61pi is /api to the application
    behind the gateway, and must be routed as /api."""
    for proto in PROTOS:
        for path, grp in (("/%61pi/v1", "api"), ("/%61%70%69", "api"),
                          ("/st%61tic/a.css", "static"), ("/api/%61dmin/x", "www")):
            check_routed(env, proto, "app.example.com", path, grp)


@pytest.mark.parametrize("proto", ["h3", "h2"])
def test_multiplexed_requests_route_one_by_one(env, proto):
    """Sixty requests at once on one connection, for hosts and paths of
    every group: each goes where its own host and path say."""
    from testenv.load import run_load
    gw, fl, hc = env
    cases = HOST_CASES + [("app.example.com", p, g) for p, g in PATH_CASES[:12]]
    specs, want = [], []
    for i in range(60):
        host, path, grp = cases[i % len(cases)]
        sep = "&" if "?" in path else "?"
        specs.append({"path": "%s%si=%d" % (path, sep, i), "headers": ["Host: %s" % host]})
        want.append(grp)
    rs = run_load(gw, specs, proto=proto, concurrency=60)
    got = [(r.status, SERVER_GROUP.get(served_by(r))) for r in rs]
    assert got == [(200, g) for g in want], [
        (s["headers"][0], s["path"], g, w) for s, g, w in zip(specs, got, want)
        if g != (200, w)]
    assert sum(1 for r in rs if r.num_connects) == 1, "not one connection"


def test_access_log_names_route_and_server(env):
    gw, fl, hc = env
    sent = []
    for proto in PROTOS:
        for host, path, grp, name in (("app.example.com", "/api/v1", "api", "api"),
                                      ("app.example.com", "/static/x", "static", "static"),
                                      ("q.app.example.com", "/", "app", "app"),
                                      ("edit.test", "/zzz", "www", "plain")):
            r = check_routed(env, proto, host, path, grp)
            sent.append((r.tag, name, fl[served_by(r)].address))
    # An HTTP/3 request is logged when its stream closes, which needs the
    # client to acknowledge the response: closing the clients does that.
    hc.close()
    for tag, name, address in sent:
        line = gw.wait_access(lambda a: tag in a.get("path", ""))[0]
        assert line.get("route") == name, line.raw
        assert line.get("upstream") == address, line.raw


def test_wildcard_host_falls_back_to_routes_without_host(fleet, routed):
    fleet.add("w1", "any1")
    gw = routed([group("w", [fleet["w1"]]), group("any", [fleet["any1"]]),
                 route("w", "w", host="*.ex.test", path="/only"),
                 route("any", "any")])
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            for host, path, want in (("a.ex.test", "/only/x", "w1"),
                                     ("a.b.ex.test", "/only", "w1"),
                                     ("a.ex.test", "/other", "any1"),
                                     ("ex.test", "/only", "any1"),
                                     ("elsewhere.test", "/only", "any1")):
                r = hc.get(proto, host, path)
                assert r.status == 200 and served_by(r) == want, (proto, host, path, r)
    finally:
        hc.close()


def test_requests_spread_over_the_group(env):
    """Round robin (the default) sends a route's requests to every server
    of its group, and only to its group."""
    gw, fl, hc = env
    seen = set()
    for i in range(9):
        r = hc.get("h2", "app.example.com", "/api/x?i=%d" % i)
        assert r.status == 200, r
        seen.add(served_by(r))
    assert seen == set(GROUPS["api"]), seen


# ---- no route ----------------------------------------------------------------

NO_MATCH_HOSTS = ["example.com", "app.example.org", "notexample.com", "localhost",
                  "example.com.:443", "[::1]:8443", "127.0.0.1", "wild.net", "xwild.net"]
NO_MATCH_STATUS = {"h3": 421, "h2": 421, "http/1.1": 404}


@pytest.mark.parametrize("proto", PROTOS)
def test_no_match_misdirected(env, proto):
    gw, fl, hc = env
    before = gw.series().get("requests_unrouted") or 0
    tag = uid()
    for host in NO_MATCH_HOSTS:
        r = hc.get(proto, host, "/api/v1?t=%s" % tag)
        assert r.error is None, (host, r)
        assert r.status == NO_MATCH_STATUS[proto], (
            "%s Host %s: want %d, got %s" % (proto, host, NO_MATCH_STATUS[proto], r))
        assert served_by(r) is None, r.headers
    # Still on the same connection afterwards.
    r = check_routed(env, proto, "app.example.com", "/", "app")
    assert r.num_connects == 0, r
    gw.wait_idle()
    assert sent_upstream(fl, tag) == []
    s = gw.wait_series(lambda s: (s.get("requests_unrouted") or 0)
                       - before >= len(NO_MATCH_HOSTS), what="unrouted counter")
    assert s.get("requests_unrouted") - before == len(NO_MATCH_HOSTS)
    lines = gw.wait_access(lambda a: tag in a.get("path", ""), count=len(NO_MATCH_HOSTS))
    for a in lines:
        assert a.get("upstream") == "-" and a.get("route") in ("-", None), a.raw
        assert a.int("status") == NO_MATCH_STATUS[proto], a.raw


@pytest.mark.parametrize("proto", PROTOS)
def test_no_match_with_a_body(env, proto):
    """Requests with bodies (declared, chunked, large) that match no route:
    answered 421/404 while the body is still coming, nothing upstream, and
    the gateway goes on serving."""
    gw, fl, hc = env
    tag = uid()
    for body, chunked in ((10, False), (200 * 1024, False), (300 * 1024, True)):
        r = hc.request(proto, "nowhere.example.org", "/upload?t=%s" % tag, "POST",
                       body=body, chunked=chunked)
        # The answer may come before the body is sent; the client gets it
        # (HTTP/2 and HTTP/3 may then stop the upload, with NO_ERROR).
        assert r.error is None and r.status == NO_MATCH_STATUS[proto], (body, chunked, r)
    assert gw.alive(), gw.stderr_text()[-3000:]
    check_routed(env, proto, "app.example.com", "/api/after-unrouted-body", "api")
    gw.wait_idle()
    assert sent_upstream(fl, tag) == []


def test_no_route_not_found(fleet, routed):
    fleet.add("w1", "w2")
    gw = routed([group("web", [fleet["w1"], fleet["w2"]]),
                 route("web", "web", host="www.example.net")],
                {"server": {"no_route": "not_found"}})
    hc = HostClients(gw)
    try:
        tag = uid()
        for proto in PROTOS:
            r = hc.get(proto, "www.example.net", "/?t=%s" % tag)
            assert r.status == 200 and served_by(r) in ("w1", "w2"), r
            for host in ("example.net", "other.example.net", "www.example.org"):
                r = hc.get(proto, host, "/miss?t=%s" % tag)
                assert r.error is None and r.status == 404, (proto, host, r)
                assert served_by(r) is None, r.headers
        gw.wait_idle()
        assert fleet.total(predicate=lambda rec: "/miss" in rec["target"]) == 0
        assert fleet.total(predicate=lambda rec: tag in rec["target"]) == 3
    finally:
        hc.close()


# ---- per-route settings -------------------------------------------------------

def headers_seen(rec, name):
    return [v for k, v in rec["headers"] if k.lower() == name.lower()]


@pytest.mark.parametrize("proto", PROTOS)
def test_route_header_edits(env, proto):
    gw, fl, hc = env
    tag = uid()
    r = hc.get(proto, "edit.test", "/edit/x?t=%s" % tag,
               headers=["X-Secret: s3cr3t", "X-Keep: kept", "x-SECRET: again"])
    assert r.status == 200, r
    assert r.header("x-served-route") == "edits", r.headers
    rec = sent_upstream(fl, tag)[0]
    assert headers_seen(rec, "X-Gateway") == ["h3gate"], rec["headers"]
    assert headers_seen(rec, "X-Route-Seen") == ["edits"], rec["headers"]
    assert headers_seen(rec, "X-Secret") == [], rec["headers"]
    assert headers_seen(rec, "X-Keep") == ["kept"], rec["headers"]
    # Another route of the same host and group: no edits.
    tag2 = uid()
    r = hc.get(proto, "edit.test", "/other?t=%s" % tag2, headers=["X-Secret: s3cr3t"])
    assert r.status == 200 and r.header("x-served-route") is None, r.headers
    rec = sent_upstream(fl, tag2)[0]
    assert headers_seen(rec, "X-Secret") == ["s3cr3t"], rec["headers"]
    assert headers_seen(rec, "X-Gateway") == [], rec["headers"]


@pytest.mark.parametrize("proto", PROTOS)
def test_route_max_request_body(env, proto):
    gw, fl, hc = env
    tag = uid()
    r = hc.request(proto, "edit.test", "/small/up?t=%s&n=at" % tag, "POST", body=1024)
    assert r.status == 200 and r.json()["body_len"] == 1024, r
    r = hc.request(proto, "edit.test", "/small/up?t=%s&n=over" % tag, "POST", body=2048)
    assert r.error is None and r.status == 413, r
    # The same body on another route of the same group passes.
    r = hc.request(proto, "edit.test", "/plain/up?t=%s&n=other" % tag, "POST", body=2048)
    assert r.status == 200 and r.json()["body_len"] == 2048, r
    gw.wait_idle()
    got = sorted(rec["target"].rsplit("=", 1)[1] for rec in sent_upstream(fl, tag))
    assert got == ["at", "other"], got


@pytest.mark.parametrize("proto", ["h2", "http/1.1"])
def test_route_alt_svc_off(env, proto):
    gw, fl, hc = env
    r = hc.get(proto, "edit.test", "/noalt/x")
    assert r.status == 200 and served_by(r) in GROUPS["www"], r
    assert r.header_all("alt-svc") == [], r.headers
    r = hc.get(proto, "edit.test", "/other")
    assert r.status == 200, r
    assert r.header_all("alt-svc") == ['h3=":%d"; ma=86400' % gw.port], r.headers


# ---- compatibility and transports -----------------------------------------

def test_legacy_single_upstream_serves_every_host(gateway, fleet):
    (srv,) = fleet.add("only")
    gw = gateway(upstream=srv.address)
    assert "[route" not in open(gw.config_path).read()
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            for host in ("localhost", "app.example.com", "whatever.invalid", None):
                r = hc.get(proto, host, "/any/path?h=%s" % host)
                assert r.status == 200 and served_by(r) == "only", (proto, host, r)
        assert srv.count() == 3 * 4
    finally:
        hc.close()


def test_unnamed_upstream_is_the_group_default(fleet, routed):
    fleet.add("d1", "x1")
    gw = routed([group(None, [fleet["d1"]]), group("x", [fleet["x1"]]),
                 route("x", "x", path="/x"), route("rest", "default")])
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            assert served_by(hc.get(proto, "any.host", "/x/1")) == "x1"
            assert served_by(hc.get(proto, "any.host", "/y")) == "d1"
        assert "default" in [g["name"] for g in gw.upstreams()["groups"]]
    finally:
        hc.close()


def test_unix_socket_server(fleet, routed, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("sock"))
    fleet.add("sock1", listen="unix:" + os.path.join(d, "s1.sock"))
    fleet.add("tcp1")
    assert fleet["sock1"].address.startswith("unix:/"), fleet["sock1"].address
    gw = routed([group("local", [fleet["sock1"]]),
                 group("net", [fleet["tcp1"]]),
                 route("local", "local", path="/local"),
                 route("net", "net")])
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            r = hc.request(proto, "localhost", "/local/x", "POST", body=5000)
            assert r.status == 200 and served_by(r) == "sock1", r
            assert r.json()["body_len"] == 5000
            r = hc.get(proto, "localhost", "/elsewhere")
            assert r.status == 200 and served_by(r) == "tcp1", r
        line = gw.wait_access(lambda a: a.get("path", "").startswith("/local"))[0]
        assert line.get("route") == "local", line.raw
        assert line.get("upstream") == fleet["sock1"].address, line.raw
        assert fleet["sock1"].count() == 3
        s = gw.wait_series(lambda s: s.get("upstream_server_requests_total", group="local",
                                           server=fleet["sock1"].address) == 3,
                           what="the unix-socket server's request counter")
        assert s.get("upstream_server_up", group="local", server=fleet["sock1"].address) == 1
    finally:
        hc.close()


def test_route_response_timeout_overrides_the_group(fleet, routed):
    fleet.add("t1")
    gw = routed([group("g", [fleet["t1"]], response_timeout="1s"),
                 route("patient", "g", path="/report", response_timeout="4s"),
                 route("rest", "g")])
    hc = HostClients(gw)
    try:
        r = hc.get("h3", "localhost", "/page?delay=2000")
        assert r.error is None and r.status == 504, r
        r = hc.get("h3", "localhost", "/report?delay=2000")
        assert r.status == 200 and served_by(r) == "t1", r
    finally:
        hc.close()


def test_route_forwarding_overrides(fleet, routed):
    fleet.add("f1")
    gw = routed([group("g", [fleet["f1"]]),
                 route("bare", "g", path="/bare", via="off", x_forwarded="off"),
                 route("told", "g", path="/told", forwarded="on"),
                 route("rest", "g")],
                {"forwarding": {"via": "on", "x_forwarded": "on", "forwarded": "off"}})
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            tag = uid()
            assert hc.get(proto, "localhost", "/bare?t=%s" % tag).status == 200
            assert hc.get(proto, "localhost", "/full?t=%s" % tag).status == 200
            assert hc.get(proto, "localhost", "/told?t=%s" % tag).status == 200
            recs = {r["target"].split("?")[0]: r for r in fleet.records()
                    if tag in r["target"]}
            assert headers_seen(recs["/full"], "Via"), recs["/full"]["headers"]
            assert headers_seen(recs["/full"], "X-Forwarded-For"), recs["/full"]["headers"]
            assert headers_seen(recs["/bare"], "Via") == [], recs["/bare"]["headers"]
            assert headers_seen(recs["/bare"], "X-Forwarded-For") == [], (
                recs["/bare"]["headers"])
            assert headers_seen(recs["/full"], "Forwarded") == [], recs["/full"]["headers"]
            fwd = headers_seen(recs["/told"], "Forwarded")
            assert len(fwd) == 1 and "for=" in fwd[0] and "proto=https" in fwd[0], (
                recs["/told"]["headers"])
    finally:
        hc.close()


def test_ipv6_server(fleet, routed):
    fleet.add("v6", listen="[::1]:0")
    assert fleet["v6"].address.startswith("[::1]:"), fleet["v6"].address
    gw = routed([group("g", [fleet["v6"]]), route("g", "g")])
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            r = hc.request(proto, "localhost", "/six", "POST", body=1234)
            assert r.status == 200 and served_by(r) == "v6", r
            assert r.json()["body_len"] == 1234
        gw.wait_series(lambda s: s.get("upstream_server_requests_total", group="g",
                                       server=fleet["v6"].address) == 3,
                       what="the IPv6 server's request counter")
        line = gw.wait_access(lambda a: a.get("path") == "/six")[0]
        assert line.get("upstream") == fleet["v6"].address, line.raw
    finally:
        hc.close()


# ---- which authority a request is routed by ----------------------------------

def test_http11_absolute_form_routes_by_its_authority(env, certs):
    """RFC 9112 §3.2.2: with an absolute-form target the Host field is
    ignored; the target's authority picks the route."""
    import socket
    import ssl
    gw, fl, hc = env
    ctx = ssl.create_default_context(cafile=certs.ca)
    for target, grp in (("https://api.example.com/api/v1", "api"),
                        ("https://app.example.com:443/static/a.css", "static"),
                        ("http://x.app.example.com/api/x", "app")):
        tag = uid()
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=10),
                             server_hostname="localhost") as s:
            s.sendall(("GET %s?t=%s HTTP/1.1\r\nHost: www.example.com\r\n"
                       "Connection: close\r\n\r\n" % (target, tag)).encode())
            data = b""
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        assert data.startswith(b"HTTP/1.1 200 "), data[:300]
        recs = sent_upstream(fl, tag)
        assert len(recs) == 1 and SERVER_GROUP[recs[0]["id"]] == grp, (target, recs)


def test_http2_authority_and_host_disagree(env):
    """RFC 9113 §8.3.1: :authority and a different Host: the request is
    refused as malformed, or routed by :authority; never by Host."""
    from testenv.h2raw import H2Raw, StreamResult
    gw, fl, hc = env
    tag = uid()
    with H2Raw(gw) as c:
        c.conn.config.validate_outbound_headers = False
        sid = c.conn.get_next_available_stream_id()
        c.streams[sid] = StreamResult(sid)
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                  (":authority", "api.example.com"),
                                  (":path", "/api/v1?t=%s" % tag),
                                  ("host", "www.example.com")], end_stream=True)
        c.flush()
        c.run_until(lambda: c.streams[sid].ended or c.streams[sid].reset is not None)
        st = c.streams[sid]
    recs = sent_upstream(fl, tag)
    if st.status == 200:
        assert len(recs) == 1 and SERVER_GROUP[recs[0]["id"]] == "api", recs
    else:
        assert st.reset is not None or st.status == 400, vars(st)
        assert recs == [], recs


def test_http2_host_without_authority(env):
    """RFC 9113 §8.3.1: a request may carry Host instead of :authority;
    then Host is what routes it."""
    from testenv.h2raw import H2Raw, StreamResult
    gw, fl, hc = env
    tag = uid()
    with H2Raw(gw) as c:
        c.conn.config.validate_outbound_headers = False
        sid = c.conn.get_next_available_stream_id()
        c.streams[sid] = StreamResult(sid)
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                  (":path", "/static/a.css?t=%s" % tag),
                                  ("host", "App.Example.com")], end_stream=True)
        c.flush()
        c.run_until(lambda: c.streams[sid].ended or c.streams[sid].reset is not None)
        st = c.streams[sid]
    assert st.status == 200, vars(st)
    recs = sent_upstream(fl, tag)
    assert len(recs) == 1 and SERVER_GROUP[recs[0]["id"]] == "static", recs


# ---- early data per route --------------------------------------------------

def _gtls_get(gw, path, tmp_path, tag):
    """One gtlsclient connection for path, keeping its session and
    transport parameters in tmp_path (so the next one resumes and may send
    the request as 0-RTT)."""
    import subprocess
    from conftest import GTLSCLIENT, SLOW
    d = str(tmp_path / ("dl-" + tag))
    os.makedirs(d, exist_ok=True)
    cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
           "--download=%s" % d, "--session-file=%s" % (tmp_path / "session.pem"),
           "--tp-file=%s" % (tmp_path / "tp.pem"), "--wait-for-ticket",
           "127.0.0.1", str(gw.port), "https://localhost:%d%s" % (gw.port, path)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]


def test_route_early_data_off(fleet, routed, tmp_path, need_gtlsclient):
    """early_data = off on a route: its 0-RTT requests wait for the
    handshake and go upstream without Early-Data; another route's go early,
    marked Early-Data: 1 (RFC 8470)."""
    fleet.add("e1")
    gw = routed([group("g", [fleet["e1"]]),
                 route("careful", "g", path="/careful", early_data="off"),
                 route("rest", "g")])
    _gtls_get(gw, "/warmup", tmp_path, "1")
    m0 = gw.metrics()
    _gtls_get(gw, "/careful/x", tmp_path, "2")
    m1 = gw.metrics()
    _gtls_get(gw, "/eager/x", tmp_path, "3")
    m2 = gw.metrics()
    assert m1["quic_early_data_accepted"] - m0["quic_early_data_accepted"] == 1, (m0, m1)
    assert m1["h3_early_held"] - m0["h3_early_held"] == 1, (m0, m1)
    assert m1["h3_early_forwarded"] - m0["h3_early_forwarded"] == 0, (m0, m1)
    assert m2["h3_early_forwarded"] - m1["h3_early_forwarded"] == 1, (m1, m2)
    recs = {r["target"]: r for r in fleet["e1"].records()}
    assert headers_seen(recs["/careful/x"], "Early-Data") == [], recs["/careful/x"]
    assert headers_seen(recs["/eager/x"], "Early-Data") == ["1"], recs["/eager/x"]


def test_route_request_body_timeout(fleet, routed):
    """request_body_timeout = 1s on one route: a body that stalls 2.5 s is
    cut there (408), and passes on another route (the listener's 60 s)."""
    from testenv.h3raw import Script, Stream, get, run_h3raw
    fleet.add("b1")
    gw = routed([group("g", [fleet["b1"]]),
                 route("strict", "g", path="/strict", request_body_timeout="1s"),
                 route("rest", "g")])
    streams = []
    for path in ("/strict/up", "/lenient/up"):
        s = Stream().headers(get(gw, path, [("content-length", "100")], "POST"))
        s.data(b"x" * 10).pause(2500).data(b"y" * 90).fin()
        streams.append(s)
    run = run_h3raw(gw, Script(*streams, concurrent=True), timeout=10.0)
    statuses = [st.get("status") for st in run.streams]
    assert statuses == [408, 200], run
    line = gw.wait_access(path="/strict/up")[0]
    assert line["outcome"] == "body-timeout" and line.get("route") == "strict", line.raw


def test_http3_authority_and_host_disagree(env):
    """RFC 9114 §4.3.1: :authority and Host must agree; a request where
    they do not is malformed, or routed by :authority; never by Host."""
    from testenv.h3raw import Script, Stream, run_h3raw
    gw, fl, hc = env
    tag = uid()
    s = Stream().headers([(":method", "GET"), (":scheme", "https"),
                          (":authority", "api.example.com"),
                          (":path", "/api/v1?t=%s" % tag), ("host", "www.example.com")]).fin()
    run = run_h3raw(gw, Script(s), timeout=5.0)
    st = run.streams[0]
    recs = sent_upstream(fl, tag)
    if st.get("status") == 200:
        assert len(recs) == 1 and SERVER_GROUP[recs[0]["id"]] == "api", recs
    else:
        assert st.get("status") in (None, 400), run
        assert recs == [], recs


def test_hosts_given_as_addresses(fleet, routed):
    """A route's host may be an IPv4 or IPv6 literal: requests that name the
    gateway by address, with or without a port, take it."""
    fleet.add("byip", "byname")
    gw = routed([group("ip", [fleet["byip"]]), group("name", [fleet["byname"]]),
                 route("ip", "ip", host="127.0.0.1 [::1]"),
                 route("name", "name", host="name.test")])
    hc = HostClients(gw)
    try:
        for proto in PROTOS:
            for host in ("127.0.0.1", "127.0.0.1:443", "[::1]", "[::1]:8443"):
                r = hc.get(proto, host, "/x")
                assert r.status == 200 and served_by(r) == "byip", (proto, host, r)
            r = hc.get(proto, "name.test", "/x")
            assert r.status == 200 and served_by(r) == "byname", (proto, r)
            assert hc.get(proto, "127.0.0.2", "/x").status in (404, 421)
    finally:
        hc.close()
