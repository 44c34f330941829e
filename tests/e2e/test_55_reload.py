"""Reloads (SIGHUP, h3gate --reload PIDFILE): the whole file is read and
checked first; a broken one leaves the running configuration in place
(logged FILE:LINE, counted); a good one takes effect for new requests at
once while requests in flight finish on the route and pool they started
with; new handshakes use new certificates; nothing fails while reloads
happen under load on every protocol."""

import os
import signal
import subprocess
import threading
import time

from conftest import H3GATE_BIN, SLOW, MiB, expected_sha256
from testenv.clients import H1Client, H2Client, H3Client
from testenv.groups import Fleet, group, route, served_by, wait_until
from test_54_probes_signals import _cert_files, stop_at_once


def reload_and_wait(gw, ok=True):
    """SIGHUP, then the log line that says how it went (counted, so that
    the n-th reload is waited for)."""
    m = gw.metrics()
    before = m["reloads"] + m["reload_failures"]
    gw.send_signal(signal.SIGHUP)
    gw.signalled = False
    deadline = time.monotonic() + 10 * SLOW
    while True:
        m = gw.metrics()
        if m["reloads"] + m["reload_failures"] > before:
            break
        assert time.monotonic() < deadline, "no reload outcome after SIGHUP"
        time.sleep(0.02)
    assert (m["reloads"] > 0) if ok else True
    return m


def two_groups(fl, to):
    return [group("one", [fl["one1"]]), group("two", [fl["two1"]]),
            route("all", to)]


def new_fleet(tmp_path):
    d = tmp_path / "fleet"
    d.mkdir(exist_ok=True)
    return Fleet(str(d))


def start_pair(tmp_path, routed, name):
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    gw = routed(two_groups(fl, "one"), name=name)
    return fl, gw


def rewrite(gw, blocks=None, text=None):
    if blocks is not None:
        gw.blocks = list(blocks)
    body = gw.config_text() if text is None else text
    with open(gw.config_path, "w") as f:
        f.write(body)


def slow_request(gw, server, delay_ms=1500):
    """An HTTP/3 GET of /slow that server answers after delay_ms, in a
    thread, returned once server has the request: (thread, out), out["r"]
    the result when the thread ends."""
    out = {}

    def run():
        with H3Client(gw) as c:
            out["r"] = c.get("/slow?delay=%d" % delay_ms, timeout=20)

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: any("/slow" in r.get("target", "") for r in server.records()),
               what="the slow request at %s" % server.ident)
    return t, out


def test_reload_switches_routes_for_new_requests(tmp_path, routed):
    fl, gw = start_pair(tmp_path, routed, "reload-routes")
    try:
        with H3Client(gw) as c:
            assert served_by(c.get("/a")) == "one1"
        rewrite(gw, two_groups(fl, "two"))
        m = reload_and_wait(gw)
        assert m["reloads"] == 1 and m["reload_failures"] == 0, m
        gw.wait_log("configuration reloaded: 1 routes, 2 upstream groups")
        for cl in (H3Client(gw), H2Client(gw), H1Client(gw)):
            with cl as c:
                r = c.get("/b")
                assert r.status == 200 and served_by(r) == "two1", r
    finally:
        fl.stop()


def test_request_in_flight_finishes_on_its_old_route(tmp_path, routed):
    fl, gw = start_pair(tmp_path, routed, "reload-inflight")
    try:
        t, out = slow_request(gw, fl["one1"])
        rewrite(gw, two_groups(fl, "two"))
        reload_and_wait(gw)
        with H3Client(gw) as c:
            assert served_by(c.get("/new")) == "two1"
        t.join(20 * SLOW)
        r = out["r"]
        assert r.error is None and r.status == 200 and served_by(r) == "one1", r
    finally:
        fl.stop()


def test_broken_reload_keeps_the_running_configuration(tmp_path, routed):
    fl, gw = start_pair(tmp_path, routed, "reload-broken")
    try:
        good = gw.config_text()
        rewrite(gw, text=good + "\n[route bad]\nupstream = nowhere\n")
        m = reload_and_wait(gw, ok=False)
        assert m["reload_failures"] == 1 and m["reloads"] == 0, m
        gw.wait_log("[route bad] upstream: no [upstream nowhere] section")
        gw.wait_log("reload of %s failed: the configuration in use stays" % gw.config_path)
        with H3Client(gw) as c:
            assert served_by(c.get("/still")) == "one1"
        assert gw.admin_get("/readyz")[0] == 200
    finally:
        fl.stop()


def test_route_counters_go_on_across_reloads(tmp_path, routed):
    """Per-route counters and histograms are not reset by a reload: a route
    kept by name counts on (a request that was in flight at the reload
    included), a new one starts at zero, and no counter ever goes back."""
    fl, gw = start_pair(tmp_path, routed, "reload-counters")
    try:
        with H3Client(gw) as c:
            for i in range(4):
                assert c.get("/n-%d" % i).status == 200
        t, out = slow_request(gw, fl["one1"])
        before = gw.series()
        assert before.get("route_requests_total", route="all") == 5
        assert before.get("route_responses_total", route="all", **{"class": "2xx"}) == 4
        rewrite(gw, two_groups(fl, "two") + [route("extra", "one", path="/extra")])
        reload_and_wait(gw)
        t.join(20 * SLOW)
        assert out["r"].status == 200, out["r"]
        with H3Client(gw) as c:
            assert served_by(c.get("/after")) == "two1"
            assert served_by(c.get("/extra/1")) == "one1"
        after = gw.series()
        assert after.get("route_requests_total", route="all") == 6
        # The request in flight at the reload ended on the old table and
        # counts here too.
        assert after.get("route_responses_total", route="all", **{"class": "2xx"}) == 6
        assert after.get("route_request_duration_seconds_count", route="all") == 6
        assert after.get("route_requests_total", route="extra") == 1
        h3 = after.find("request_duration_seconds_bucket", route="all", protocol="h3")
        assert max(v for _, v in h3) == 6, h3
    finally:
        fl.stop()


def _server_view(gw, address):
    for g in gw.upstreams()["groups"]:
        for srv in g["servers"]:
            if srv["address"] == address:
                return srv
    raise AssertionError("no server %s in /upstreams" % address)


HANGING_CHECK = {"health_check": "GET /health?delay=60000", "health_timeout": "30s",
                 "health_interval": "100ms", "health_fall": "3"}


def test_readyz_waits_for_a_first_health_check(tmp_path, routed):
    """A server is in service from the start (requests are served), but
    /readyz says ready only once its health check passed: while the first
    check hangs, 503 and why; once a check passes, 200."""
    fl = new_fleet(tmp_path)
    fl.add("a1")
    gw = routed([group("app", [fl["a1"]], **HANGING_CHECK), route("all", "app")],
                name="readyz-first-check")
    try:
        wait_until(lambda: any("/health" in r.get("target", "") for r in fl["a1"].records()),
                   what="the first health check at the server")
        assert gw.admin_get("/readyz") == (
            503, "not ready: [upstream app] waits for a first health check to pass\n")
        assert _server_view(gw, fl["a1"].address)["checked"] is False
        with H3Client(gw) as c:
            r = c.get("/served")
        assert r.status == 200 and served_by(r) == "a1", r
        rewrite(gw, [group("app", [fl["a1"]], health_check="GET /health",
                           health_interval="100ms"), route("all", "app")])
        reload_and_wait(gw)
        wait_until(lambda: gw.admin_get("/readyz") == (200, "ready\n"),
                   what="/readyz 200 once a check passed")
        assert _server_view(gw, fl["a1"].address)["checked"] is True
    finally:
        fl.stop()


def test_reload_keeps_what_health_checks_found(tmp_path, routed):
    """A reload does not forget the servers' health: one found down stays
    out, one found up stays known up (so /readyz does not drop to 503 while
    the new checks run), and the statistics go on counting."""
    from testenv.gateway import refusing_address
    fl = new_fleet(tmp_path)
    fl.add("a1")
    down = refusing_address()
    checks = {"health_check": "GET /health", "health_interval": "100ms",
              "health_fall": "1"}
    gw = routed([group("app", [fl["a1"], down], **checks), route("all", "app")],
                name="reload-health")
    try:
        wait_until(lambda: _server_view(gw, down)["active_out"]
                   and _server_view(gw, fl["a1"].address)["checked"],
                   what="the down server out and a1 checked")
        assert gw.admin_get("/readyz") == (200, "ready\n")
        with H3Client(gw) as c:
            for i in range(5):
                r = c.get("/before-%d" % i)
                assert r.status == 200 and served_by(r) == "a1", r
        served = _server_view(gw, fl["a1"].address)["requests"]
        assert served >= 5
        # A request in flight holds the old table (and its groups) open.
        t, out = slow_request(gw, fl["a1"], delay_ms=3000)
        # New checks that would need three failures to take a server out,
        # and that hang on the good one: only what was known before keeps
        # the down server out and the gateway ready.
        rewrite(gw, [group("app", [fl["a1"], down], **HANGING_CHECK), route("all", "app")])
        reload_and_wait(gw)
        gw.wait_log("configuration reloaded")
        assert gw.admin_get("/readyz") == (200, "ready\n")
        # The old group's checks stopped: the down server counts once,
        # though the old group lives on for the request in flight.
        assert gw.metrics()["upstreams_unhealthy"] == 1
        assert t.is_alive(), "the slow request ended before the check"
        t.join(20 * SLOW)
        assert out["r"].status == 200, out["r"]
        v_down, v_up = _server_view(gw, down), _server_view(gw, fl["a1"].address)
        assert v_down["active_out"] is True and v_down["up"] is False, v_down
        assert v_up["checked"] is True and v_up["up"] is True, v_up
        assert v_up["requests"] >= served, (v_up, served)
        gw.wait_metrics(lambda m: m["upstreams_unhealthy"] == 1, timeout=10,
                        what="one server out by its check")
        with H3Client(gw) as c:
            for i in range(5):
                r = c.get("/after-%d" % i)
                assert r.status == 200 and served_by(r) == "a1", r
    finally:
        fl.stop()


def test_reload_by_pid_file(tmp_path, routed):
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    pid_file = str(tmp_path / "h3gate.pid")
    gw = routed(two_groups(fl, "one"), {"server": {"pid_file": pid_file}},
                name="reload-pid")
    try:
        assert int(open(pid_file).read()) == gw.pid
        rewrite(gw, two_groups(fl, "two"))
        p = subprocess.run([H3GATE_BIN, "--reload", pid_file], timeout=10)
        assert p.returncode == 0
        gw.wait_log("configuration reloaded")
        with H3Client(gw) as c:
            assert served_by(c.get("/x")) == "two1"
        p = subprocess.run([H3GATE_BIN, "--reload", str(tmp_path / "none.pid")],
                           stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 2 and b"no process id" in p.stderr
    finally:
        fl.stop()
    gw.stop()
    assert not os.path.exists(pid_file), "the pid file outlived the gateway"


def test_reload_by_a_stale_pid_file_signals_nobody(tmp_path):
    """A pid file left behind whose process id now belongs to another
    program: --reload refuses to send it SIGHUP (which would end it)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        stale = tmp_path / "stale.pid"
        stale.write_text("%d\n" % other.pid)
        p = subprocess.run([H3GATE_BIN, "--reload", str(stale)],
                           stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 1, p
        assert ("names process %d, which is sleep, not h3gate" % other.pid).encode() \
            in p.stderr, p.stderr
        assert other.poll() is None, "the other program got the signal"
    finally:
        other.kill()
        other.wait()


def test_certificate_rotation(tmp_path, routed):
    """A client that trusts only the new CA fails before the reload and
    succeeds after; one that trusts only the old CA the other way round."""
    fl, gw = start_pair(tmp_path, routed, "reload-certs")
    try:
        cert, key = _cert_files(tmp_path, "rotated")
        new_ca = str(tmp_path / "rotated-ca.crt")
        with open(cert, "rb") as f:
            pems = f.read().split(b"-----END CERTIFICATE-----")
        with open(new_ca, "wb") as f:
            f.write(pems[1].lstrip() + b"-----END CERTIFICATE-----\n")
        with H3Client(gw) as c:
            assert c.get("/old").status == 200
        with H3Client(gw, ca=new_ca) as c:
            assert c.get("/new-before").error is not None
        gw.config["listener"]["cert"] = cert
        gw.config["listener"]["key"] = key
        rewrite(gw)
        reload_and_wait(gw)
        with H3Client(gw, ca=new_ca) as c:
            r = c.get("/new-after")
            assert r.error is None and r.status == 200, r
        # The TCP listener's handshakes too.
        import socket
        import ssl
        ctx = ssl.create_default_context(cafile=new_ca)
        with socket.create_connection(("127.0.0.1", gw.tcp_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() is not None
        with H3Client(gw) as c:
            assert c.get("/old-after").error is not None
    finally:
        fl.stop()


def test_twenty_reloads_under_load(tmp_path, routed, upstream):
    """HTTP/3, HTTP/2 and HTTP/1.1 clients (uploads, downloads, and long
    downloads that span several reloads) run while 20 reloads alternate two
    valid files and a broken one: every request succeeds, every body is
    exact, no client connection breaks (each client keeps the one it
    opened), and requests after a good reload go to its route."""
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")

    def blocks(to):
        return two_groups(fl, to) + [
            group("big", [upstream.address]),
            route("big", "big", path="/bytes/ /slow/")]
    gw = routed(blocks("one"), name="reload-load")
    stop = threading.Event()
    results = {"ok": 0, "bad": []}
    lock = threading.Lock()

    def worker(cls, long):
        with cls(gw) as c:
            i = 0
            connects = 0
            while not stop.is_set():
                i += 1
                n = 0
                if long:
                    n = 1 * MiB
                    r = c.get("/slow/%d?rate=%d" % (n, 2 * MiB), timeout=30)
                elif i % 3 == 0:
                    r = c.request("/up?delay=20", method="POST", body=b"x" * 65536)
                else:
                    r = c.get("/down?delay=10")
                connects += r.num_connects or 0
                ok = r.error is None and r.status == 200 and \
                    (not long or (r.body_len == n and r.sha256 == expected_sha256(n)))
                with lock:
                    if ok:
                        results["ok"] += 1
                    else:
                        results["bad"].append(repr(r)[:300])
            with lock:
                results.setdefault("connects", []).append((cls.__name__, long, connects))

    threads = [threading.Thread(target=worker, args=(cls, long))
               for cls, long in ((H3Client, False), (H3Client, True),
                                 (H2Client, False), (H2Client, True),
                                 (H1Client, False))]
    for t in threads:
        t.start()
    try:
        one = gw.config_text()
        rewrite(gw, blocks("two"))
        two = gw.config_text()
        broken = one + "\n[route broken]\nhost = x.test\nupstream = nowhere\n"
        plan = [two, broken, one] * 7
        for n, text in enumerate(plan[:20]):
            # Each reload lands among requests in flight: a few complete
            # between one reload and the next.
            with lock:
                seen = results["ok"] + len(results["bad"])
            deadline = time.monotonic() + 10 * SLOW
            while True:
                with lock:
                    if results["ok"] + len(results["bad"]) >= seen + 4:
                        break
                assert time.monotonic() < deadline, "the load stalled"
                time.sleep(0.005)
            rewrite(gw, text=text)
            reload_and_wait(gw, ok=text is not broken)
        m = gw.metrics()
        assert m["reloads"] == sum(1 for t in plan[:20] if t is not broken), m
        assert m["reload_failures"] == sum(1 for t in plan[:20] if t is broken), m
    finally:
        stop.set()
        for t in threads:
            t.join(30 * SLOW)
    assert not results["bad"], results["bad"][:5]
    assert results["ok"] >= 80, results
    # One connection a client, opened by its first request: none broke.
    for name, long, connects in results["connects"]:
        assert connects == 1, (name, long, connects, results["connects"])
    # The last good file routes to "two"; the broken one after it changed
    # nothing.
    with H3Client(gw) as c:
        assert served_by(c.get("/after")) == "two1"
    fl.stop()


def test_websocket_tunnel_lives_through_reloads(tmp_path, routed, wsapp):
    """A WebSocket tunnel open across three reloads (one broken) keeps
    echoing; its access line, written when it ends, is one clean tunnel."""
    import asyncio
    from test_51_websocket_tcp import ws_connect
    from testenv.groups import group as g_, route as r_
    app = wsapp()
    blocks = [g_("ws", [app.address]), r_("app", "ws", path="/")]
    gw = routed(blocks, name="reload-ws")

    async def go():
        async with ws_connect(gw, "/echo?t=reload") as ws:
            for i in range(4):
                msg = "message %d" % i
                await ws.send(msg)
                assert await ws.recv() == msg
                if i < 3:
                    text = gw.config_text()
                    if i == 1:
                        text += "\n[route broken]\nupstream = nowhere\n"
                    rewrite(gw, text=text)
                    await asyncio.get_running_loop().run_in_executor(
                        None, lambda ok=(i != 1): reload_and_wait(gw, ok))
    asyncio.run(asyncio.wait_for(go(), 30 * SLOW))
    rec = gw.wait_access(lambda r: r.get("tunnel") == "websocket")
    assert rec[0].get("outcome") == "ok" and rec[0].get("status") == "101", rec
    m = gw.metrics()
    assert m["reloads"] == 2 and m["reload_failures"] == 1, m


def test_reload_moves_listeners_to_new_ports(tmp_path, routed):
    """New ports in the file: the new sockets are bound and serve, the old
    ones stop taking connections and drain the request they carry."""
    from conftest import free_port
    fl, gw = start_pair(tmp_path, routed, "reload-ports")
    try:
        t, out = slow_request(gw, fl["one1"])
        old_udp, old_tcp = gw.port, gw.tcp_port
        udp, tcp = free_port("udp"), free_port("tcp")
        gw.config["listener"]["port"] = str(udp)
        gw.config["tcp"]["port"] = str(tcp)
        rewrite(gw)
        reload_and_wait(gw)
        gw.wait_log("listening on udp 127.0.0.1:%d" % udp)
        gw.wait_log("listening on tcp 127.0.0.1:%d" % tcp)
        gw.port, gw.tcp_port = udp, tcp
        with H3Client(gw) as c:
            r = c.get("/new-port")
            assert r.status == 200 and served_by(r) == "one1", r
        with H1Client(gw) as c:
            assert c.get("/new-tcp-port").status == 200
        t.join(20 * SLOW)
        r = out["r"]
        assert r.error is None and r.status == 200, r
        gw.port, gw.tcp_port = old_udp, old_tcp
        with H3Client(gw) as c:
            assert c.get("/old-port", connect_timeout=2, timeout=3).error is not None
        gw.port, gw.tcp_port = udp, tcp
        assert gw.metrics()["reloads"] == 1
    finally:
        fl.stop()


# ---- every listener follows the file -----------------------------------------

def hup_and_wait_log(gw, text, count=1):
    """SIGHUP when the admin listener itself moves (reload_and_wait reads
    the metrics there): the outcome is waited for in the log."""
    gw.send_signal(signal.SIGHUP)
    gw.signalled = False
    gw.wait_log(text, count=count)


def refused(port):
    """1 if a TCP connect to 127.0.0.1:port is refused."""
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_reload_moves_the_admin_listener(tmp_path, routed):
    """A new [server] admin port: the new listener answers (/healthz,
    /metrics counting the reload, /readyz), the old port refuses. A port
    held by another socket: the reload logs an error and the admin
    listener in use goes on answering."""
    import socket
    from conftest import free_port
    fl, gw = start_pair(tmp_path, routed, "reload-admin")
    try:
        old = gw.admin_port
        new = free_port("tcp")
        gw.config["server"]["admin"] = "127.0.0.1:%d" % new
        rewrite(gw)
        hup_and_wait_log(gw, "admin listening on tcp 127.0.0.1:%d" % new)
        gw.wait_log("configuration reloaded")
        gw.admin_port = new
        assert gw.admin_get("/healthz")[0] == 200
        m = gw.metrics()
        assert m["reloads"] == 1 and m["reload_failures"] == 0, m
        assert gw.admin_get("/readyz")[0] == 200
        assert "two" in gw.admin_get("/upstreams")[1]
        assert refused(old), "the old admin port still takes connections"
        with H3Client(gw) as c:
            assert served_by(c.get("/after-admin-move")) == "one1"

        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        try:
            taken = held.getsockname()[1]
            gw.config["server"]["admin"] = "127.0.0.1:%d" % taken
            rewrite(gw)
            m = reload_and_wait(gw)
            gw.wait_log("reload: cannot listen on admin 127.0.0.1:%d: the old "
                        "admin listener stays" % taken)
            assert m["reloads"] == 2, m
            assert gw.admin_get("/healthz")[0] == 200
        finally:
            held.close()
    finally:
        fl.stop()


def redirect_location(port, path="/a?b"):
    import socket
    from test_20_tcp_fallback import read_response
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line, fields, _ = read_response(s)
        return line, fields.get("location")
    finally:
        s.close()


def test_reload_adds_moves_and_removes_the_redirect_listener(tmp_path, routed):
    from conftest import free_port
    fl, gw = start_pair(tmp_path, routed, "reload-redirect")
    try:
        want = "https://localhost:%d/a?b" % gw.tcp_port
        p1 = free_port("tcp")
        gw.config["redirect"] = {"address": "127.0.0.1", "port": str(p1)}
        rewrite(gw)
        reload_and_wait(gw)
        gw.wait_log("listening on redirect 127.0.0.1:%d" % p1)
        assert redirect_location(p1) == ("HTTP/1.1 308 Permanent Redirect", want)

        p2 = free_port("tcp")
        gw.config["redirect"]["port"] = str(p2)
        rewrite(gw)
        m = reload_and_wait(gw)
        assert m["reloads"] == 2, m
        gw.wait_log("listening on redirect 127.0.0.1:%d" % p2)
        assert redirect_location(p2) == ("HTTP/1.1 308 Permanent Redirect", want)
        assert refused(p1), "the old redirect port still takes connections"

        del gw.config["redirect"]
        rewrite(gw)
        m = reload_and_wait(gw)
        assert m["reloads"] == 3, m
        gw.wait_log("the redirect listener drains")
        assert refused(p2), "the redirect listener outlived its removal"
        with H1Client(gw) as c:
            assert c.get("/still-https").status == 200
    finally:
        fl.stop()


def big_blocks(fl, upstream):
    return two_groups(fl, "one") + [
        group("big", [upstream.address]),
        route("big", "big", path="/slow/")]


def start_long_download(cls, gw, n, rate):
    """A download of n bytes at rate bytes/s in a thread, returned once its
    first body bytes came: (thread, out), out["r"] the result at the end."""
    out = {}
    started = threading.Event()

    def run():
        with cls(gw) as c:
            out["r"] = c.get("/slow/%d?rate=%d" % (n, rate), timeout=60,
                             on_data=lambda r: started.set())
    t = threading.Thread(target=run)
    t.start()
    assert started.wait(10 * SLOW), "the long download never started"
    return t, out


def finish_download(t, out, n):
    """Waits for a start_long_download: complete, every byte right."""
    t.join(60 * SLOW)
    r = out["r"]
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == expected_sha256(n), r


def alt_svc(gw):
    with H1Client(gw) as c:
        r = c.get("/alt")
        assert r.status == 200, r
        return r.header("alt-svc") or ""


def test_reload_turns_the_tcp_listener_off_and_on(tmp_path, routed, upstream):
    """[tcp] enabled = no: a long HTTP/2 download in flight finishes byte for
    byte, new TCP connections are refused, HTTP/3 goes on; = yes again:
    HTTP/2 serves again."""
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    gw = routed(big_blocks(fl, upstream), name="reload-tcp-off")
    try:
        n = 3 * MiB
        t, out = start_long_download(H2Client, gw, n, 2 * MiB)
        tcp_port = gw.tcp_port
        gw.config["tcp"]["enabled"] = "no"
        rewrite(gw)
        m = reload_and_wait(gw)
        assert m["reloads"] == 1 and m["reload_failures"] == 0, m
        gw.wait_log("reload: [tcp] enabled = no: the TCP listener drains")
        assert refused(tcp_port), "the TCP listener still accepts"
        assert gw.admin_get("/health")[0] == 200
        with H3Client(gw) as c:
            assert served_by(c.get("/h3-still")) == "one1"
        finish_download(t, out, n)

        gw.config["tcp"]["enabled"] = "yes"
        gw.config["tcp"]["port"] = str(tcp_port)
        rewrite(gw)
        m = reload_and_wait(gw)
        assert m["reloads"] == 2 and m["reload_failures"] == 0, m
        gw.wait_log("listening on tcp 127.0.0.1:%d" % tcp_port, count=2)
        with H2Client(gw) as c:
            r = c.get("/h2-again")
            assert r.status == 200 and served_by(r) == "one1", r
        assert 'h3=":%d"' % gw.port in alt_svc(gw)
    finally:
        fl.stop()


def test_reload_turns_the_quic_listener_off_and_on(tmp_path, routed, upstream):
    """[listener] enabled = no: a long HTTP/3 download in flight finishes byte
    for byte, new QUIC connections fail, TCP responses stop advertising h3;
    = yes again: HTTP/3 serves again and Alt-Svc advertises it."""
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    gw = routed(big_blocks(fl, upstream), name="reload-quic-off")
    try:
        udp_port = gw.port
        assert 'h3=":%d"' % udp_port in alt_svc(gw)
        n = 3 * MiB
        t, out = start_long_download(H3Client, gw, n, 2 * MiB)
        gw.config["listener"]["enabled"] = "no"
        rewrite(gw)
        m = reload_and_wait(gw)
        assert m["reloads"] == 1 and m["reload_failures"] == 0, m
        gw.wait_log("reload: [listener] enabled = no: the QUIC listener drains")
        assert "h3=" not in alt_svc(gw)
        assert gw.admin_get("/health/quic")[0] == 503
        finish_download(t, out, n)
        with H3Client(gw) as c:
            r = c.get("/h3-off", connect_timeout=2, timeout=3)
            assert r.error is not None, r
        assert "h3=" not in alt_svc(gw)

        gw.config["listener"]["enabled"] = "yes"
        gw.config["listener"]["port"] = str(udp_port)
        rewrite(gw)
        m = reload_and_wait(gw)
        assert m["reloads"] == 2 and m["reload_failures"] == 0, m
        gw.wait_log("listening on udp 127.0.0.1:%d" % udp_port, count=2)
        with H3Client(gw) as c:
            r = c.get("/h3-again")
            assert r.status == 200 and served_by(r) == "one1", r
        assert 'h3=":%d"' % udp_port in alt_svc(gw)
        assert gw.admin_get("/health/quic")[0] == 200
    finally:
        fl.stop()


def test_reload_refuses_to_turn_every_listener_off(tmp_path, routed):
    fl, gw = start_pair(tmp_path, routed, "reload-no-listener")
    try:
        gw.config["listener"]["enabled"] = "no"
        gw.config["tcp"]["enabled"] = "no"
        rewrite(gw)
        m = reload_and_wait(gw, ok=False)
        assert m["reload_failures"] == 1 and m["reloads"] == 0, m
        gw.wait_log("%s: no listener: [listener] and [tcp] are both disabled"
                    % gw.config_path)
        with H3Client(gw) as c:
            assert served_by(c.get("/still-h3")) == "one1"
        with H2Client(gw) as c:
            assert c.get("/still-h2").status == 200
    finally:
        fl.stop()


def test_reload_moves_the_pid_file(tmp_path, routed):
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    first = str(tmp_path / "first.pid")
    second = str(tmp_path / "second.pid")
    gw = routed(two_groups(fl, "one"), {"server": {"pid_file": first}},
                name="reload-pid-move")
    try:
        assert int(open(first).read()) == gw.pid
        gw.config["server"]["pid_file"] = second
        rewrite(gw)
        reload_and_wait(gw)
        assert int(open(second).read()) == gw.pid
        assert not os.path.exists(first), "the old pid file stayed"
        p = subprocess.run([H3GATE_BIN, "--reload", second], timeout=10)
        assert p.returncode == 0
        gw.wait_log("configuration reloaded", count=2)
    finally:
        fl.stop()
    gw.stop()
    assert not os.path.exists(second), "the pid file outlived the gateway"


def test_reload_changes_tcp_congestion_control(tmp_path, routed):
    """New TCP connections take a reload's [tcp] congestion_control; one
    the kernel lacks fails the reload (as it fails a start) and the
    listener goes on with the one in use."""
    from test_20_tcp_fallback import read_response, server_side_cc, tls_socket, CA
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    gw = routed(two_groups(fl, "one"), {"tcp": {"congestion_control": "reno"}},
                name="reload-cc")
    CA[0] = gw.certs.ca

    def cc_of_a_new_connection():
        s = tls_socket(gw.tcp_port)
        try:
            s.sendall(b"GET /cc HTTP/1.1\r\nHost: localhost\r\n\r\n")
            line, _, _ = read_response(s)
            assert line.startswith("HTTP/1.1 200"), line
            return server_side_cc(gw.tcp_port)
        finally:
            s.close()
    try:
        assert cc_of_a_new_connection() == ["reno"]
        gw.config["tcp"]["congestion_control"] = "cubic"
        rewrite(gw)
        reload_and_wait(gw)
        assert cc_of_a_new_connection() == ["cubic"]

        gw.config["tcp"]["congestion_control"] = "nosuchcc"
        rewrite(gw)
        m = reload_and_wait(gw, ok=False)
        assert m["reload_failures"] == 1 and m["reloads"] == 1, m
        gw.wait_log('[tcp] congestion_control: the kernel has no "nosuchcc"')
        gw.wait_log("reload of %s failed" % gw.config_path)
        assert cc_of_a_new_connection() == ["cubic"]
    finally:
        fl.stop()


def test_second_sigterm_cuts_short_the_listeners_a_reload_retired(tmp_path, routed):
    """Listeners a reload moved away from drain what they carry; a stop at
    once (a second SIGTERM) cuts them short too, not only the current
    ones: the gateway exits within seconds, not at shutdown_timeout."""
    from conftest import free_port
    fl = new_fleet(tmp_path)
    fl.add("one1", "two1")
    gw = routed(two_groups(fl, "one"), overrides={"server": {"shutdown_timeout": "60s"}},
                name="reload-stop-now")
    try:
        out = {}

        def hang(kind, client):
            with client as c:
                out[kind] = c.get("/hang-%s?delay=60000" % kind, timeout=90)

        threads = [threading.Thread(target=hang, args=("h3", H3Client(gw))),
                   threading.Thread(target=hang, args=("h1", H1Client(gw)))]
        for t in threads:
            t.start()
        wait_until(lambda: {r.get("target", "").split("?")[0] for r in fl["one1"].records()}
                   >= {"/hang-h3", "/hang-h1"}, what="both hanging requests at the server")
        gw.config["listener"]["port"] = str(free_port("udp"))
        gw.config["tcp"]["port"] = str(free_port("tcp"))
        rewrite(gw)
        reload_and_wait(gw)
        gw.wait_log("listening on tcp 127.0.0.1:%s" % gw.config["tcp"]["port"])
        stop_at_once(gw, "shutting down: draining for up to 60000 ms")
        for t in threads:
            t.join(30 * SLOW)
        for kind in ("h3", "h1"):
            r = out[kind]
            assert r.error is not None or r.status >= 500, (kind, r)
    finally:
        fl.stop()
