"""The access log's formats ([server] access_log_format = kv | json |
combined), each read back field by field after the same requests over
HTTP/3, HTTP/2 and HTTP/1.1: the request as the client sent it (with a
Referer and a User-Agent that need escaping), the route and upstream, the
upstream connect and first-byte times, the QUIC connection ID (the one the
client chose, as the qlog file is named) and the 0-RTT flag, bytes each
way, status, duration and outcome. Then the per-route, per-protocol
histograms of /metrics, whose buckets must count exactly the durations and
first-byte times the log shows."""

import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import GTLSCLIENT, SLOW, KiB, client_for
from testenv.access_formats import VERSION_OF, read_access
from testenv.groups import PROTOS, Series

FORMATS = ("kv", "json", "combined")
REFERER = 'https://ref.example/from?q="x"'
AGENT = 'e2e "agent" \\ 1'
DEFAULT_AGENT = "h3gate-e2e/1"  # what testenv's libcurl clients send
FIRST_BYTE_DELAY = 0.15  # s: the origin's pause before /script/slow-head
BOUNDS_US = (500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
             500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000)
LE = ("0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
      "0.25", "0.5", "1", "2.5", "5", "10", "30", "60")


# ---- helpers ---------------------------------------------------------------

def slow_head(conn, req):
    time.sleep(FIRST_BYTE_DELAY)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    return True


def start(gateway, upstream, tmp_path, fmt):
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    log = str(tmp_path / "access.log")
    upstream.script("slow-head", slow_head)
    gw = gateway.with_tcp({"server": {"access_log": log, "access_log_format": fmt},
                           "listener": {"max_request_body": "1KiB"},
                           "debug": {"qlog_dir": str(qdir)}})
    return gw, log, qdir


def none(v):
    """A field's "no value", as each format spells it."""
    return v is None or v == "-"


def us(v):
    """A time field in ms ("1.250", or a JSON number) as integer µs; None
    for none."""
    if none(v):
        return None
    return int(round(float(v) * 1000))


def norm(fmt, rec):
    """One parsed line as Python values under the kv names."""
    if fmt == "combined":
        proto = {v: k for k, v in VERSION_OF.items()}.get(rec["version"], rec["version"])
        host = rec["client"]
    else:
        proto = rec["proto"]
        host = rec["client"].rsplit(":", 1)[0]
    early = rec["early"]
    return {
        "host": host, "client": rec["client"], "proto": proto,
        "method": rec["method"], "path": rec["path"],
        "status": int(rec["status"]), "in": int(rec["in"]), "out": int(rec["out"]),
        "duration_us": us(rec["duration_ms"]), "route": rec["route"],
        "upstream": None if none(rec["upstream"]) else rec["upstream"],
        "outcome": rec["outcome"], "connect_us": us(rec["connect_ms"]),
        "first_byte_us": us(rec["first_byte_ms"]),
        "cid": None if none(rec["cid"]) else rec["cid"],
        "early": early if isinstance(early, bool) else early == "1",
        "referer": None if none(rec["referer"]) else rec["referer"],
        "user_agent": None if none(rec["user_agent"]) else rec["user_agent"],
        "tunnel": rec.get("tunnel"),
        "raw": rec.raw,
    }


def wait_lines(path, fmt, n, timeout=10.0):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        recs = read_access(path, fmt)
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


def drive(gw, upstream):
    """Four requests per protocol on one connection each: a page with a
    Referer and a User-Agent to escape, an upload, a response whose head
    comes FIRST_BYTE_DELAY late, and an upload over max_request_body that
    the gateway refuses alone (413). Returns {(proto, path): Result}."""
    got = {}
    for proto in PROTOS:
        cl = client_for(proto, gw)
        try:
            p = "?p=%s" % proto
            got[proto, "/bytes/1000" + p] = cl.get(
                "/bytes/1000" + p, headers=["Referer: " + REFERER, "User-Agent: " + AGENT])
            got[proto, "/sink" + p] = cl.post("/sink" + p, 600)
            got[proto, "/script/slow-head" + p] = cl.get("/script/slow-head" + p)
            got[proto, "/sink/too-big" + p] = cl.post("/sink/too-big" + p, 2 * KiB)
        finally:
            # An HTTP/3 exchange is logged when its stream closes, which
            # needs the client to acknowledge the response.
            cl.close()
    for (proto, path), r in got.items():
        want = 413 if "too-big" in path else 200
        assert r.status == want, (proto, path, r)
    return got


# ---- every format, field by field ------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_field_by_field(gateway, upstream, tmp_path, fmt):
    gw, log, qdir = start(gateway, upstream, tmp_path, fmt)
    connects0 = gw.metrics()["upstream_connects"]
    got = drive(gw, upstream)
    recs = [norm(fmt, r) for r in wait_lines(log, fmt, len(got))]
    assert len(recs) == len(got), [r["raw"] for r in recs]
    by_key = {(r["proto"], r["path"]): r for r in recs}
    assert set(by_key) == set(got), sorted(by_key)

    qlogs = [os.path.basename(f)[:-len(".sqlog")] for f in glob.glob(str(qdir / "*.sqlog"))]
    assert len(qlogs) == 1, qlogs  # one HTTP/3 connection
    for (proto, path), r in got.items():
        rec = by_key[proto, path]
        why = rec["raw"]
        assert rec["host"] == "127.0.0.1", why
        if fmt != "combined":
            assert rec["client"] == "127.0.0.1:%d" % r.local_port, (why, r.local_port)
        assert rec["method"] == ("POST" if "sink" in path else "GET"), why
        assert rec["status"] == r.status, why
        assert rec["out"] == r.body_len, why
        assert rec["route"] == "default", why
        assert rec["outcome"] == ("body-too-large" if "too-big" in path else "ok"), why
        assert rec["early"] is False, why
        assert rec["tunnel"] is None, why
        assert 0 < rec["duration_us"] < 10e6 * SLOW, why
        if "/bytes/" in path:
            assert (rec["referer"], rec["user_agent"]) == (REFERER, AGENT), why
        else:
            assert (rec["referer"], rec["user_agent"]) == (None, DEFAULT_AGENT), why
        if proto == "h3":
            # The ID the client chose for its connection (the qlog file's
            # name): its first 8 bytes, in hex.
            assert re.fullmatch(r"[0-9a-f]{16}", rec["cid"] or ""), why
            assert qlogs[0].startswith(rec["cid"]), (why, qlogs)
        else:
            assert rec["cid"] is None, why
        if "too-big" in path:
            # Refused by its declared length: no upstream, no timings.
            assert rec["upstream"] is None, why
            assert rec["connect_us"] is None and rec["first_byte_us"] is None, why
            continue
        assert rec["upstream"] == upstream.address, why
        assert rec["in"] == (600 if "sink" in path else 0), why
        assert rec["connect_us"] is not None and rec["connect_us"] >= 0, why
        assert rec["first_byte_us"] is not None, why
        assert 0 < rec["first_byte_us"] <= rec["duration_us"], why
        if "slow-head" in path:
            assert rec["first_byte_us"] >= FIRST_BYTE_DELAY * 1e6, why

    # A connect time on exactly the requests that opened a connection; 0
    # on those that reused one.
    opened = gw.metrics()["upstream_connects"] - connects0
    fresh = [r for r in recs if r["connect_us"]]
    assert len(fresh) == opened >= 1, ([r["raw"] for r in fresh], opened)
    assert all(r["connect_us"] < 5e6 * SLOW for r in fresh), [r["raw"] for r in fresh]
    # The first request of the run opened the first connection.
    assert by_key["h3", "/bytes/1000?p=h3"]["connect_us"] > 0

    check_histograms(gw, recs)


def bucket_counts(values):
    return [sum(1 for v in values if v <= b) for b in BOUNDS_US]


def check_histograms(gw, recs):
    """The /metrics histograms of route "default" hold exactly what the
    access log shows, per protocol: counts, sums and every bucket."""
    s = Series(gw.admin_get("/metrics")[1])
    for name, field in (("request_duration_seconds", "duration_us"),
                        ("upstream_first_byte_seconds", "first_byte_us")):
        assert "# TYPE h3gate_%s histogram" % name in s.text
        for proto in PROTOS:
            values = [r[field] for r in recs if r["proto"] == proto and r[field] is not None]
            labels = {"route": "default", "protocol": proto}
            what = s.text_of("h3gate_" + name)
            assert s.get(name + "_count", **labels) == len(values), (proto, what)
            assert s.get(name + "_bucket", le="+Inf", **labels) == len(values), what
            assert abs(s.get(name + "_sum", **labels) - sum(values) / 1e6) < 1e-5 * (1 + len(values)), what
            got = [s.get(name + "_bucket", le=le, **labels) for le in LE]
            assert got == sorted(got), ("not cumulative", proto, got)
            assert got == bucket_counts(values), (proto, got, values)
        # Four requests a protocol, three of which got a first byte.
        assert len(s.find(name + "_count", route="default")) == len(PROTOS)
    assert s.get("request_duration_seconds_count", route="default", protocol="h3") == 4
    assert s.get("upstream_first_byte_seconds_count", route="default", protocol="h2") == 3
    # The older summary agrees: every exchange of the route.
    assert s.get("route_request_duration_seconds_count", route="default") == len(recs)


def test_default_is_kv(gateway, upstream, tmp_path):
    """Without the key, lines are kv, as they always were: the older
    fields keep their names, forms and order (the newer ones sit between
    duration_ms and route)."""
    log = str(tmp_path / "access.log")
    gw = gateway({"server": {"access_log": log}})
    cl = client_for("h3", gw)
    assert cl.get("/bytes/10?default").status == 200
    cl.close()
    recs = wait_lines(log, "kv", 1)
    assert len(recs) == 1
    rec = recs[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z client=127\.0\.0\.1:\d+ "
                    r"proto=h3 method=GET authority=\S+ path=\"/bytes/10\?default\" "
                    r"status=200 in=0 out=10 duration_ms=\d+\.\d{3} "
                    r"connect_ms=\d+\.\d{3} first_byte_ms=\d+\.\d{3} cid=[0-9a-f]{16} "
                    r"early=0 referer=- user_agent=\"h3gate-e2e/1\" route=default "
                    r"upstream=\S+ outcome=ok$", rec.raw), rec.raw


def test_reload_changes_the_format(gateway, upstream, tmp_path):
    """A reload (SIGHUP) that changes access_log_format: lines of requests
    after it are in the new format, those before stay as written."""
    log = str(tmp_path / "access.log")
    gw = gateway({"server": {"access_log": log}})
    cl = client_for("h3", gw)
    assert cl.get("/bytes/10?before").status == 200
    cl.close()
    assert len(wait_lines(log, "kv", 1)) == 1
    gw.config["server"]["access_log_format"] = "json"
    gw.write_config()
    gw.send_signal(signal.SIGHUP)
    gw.signalled = False  # it goes on running
    gw.wait_log("configuration reloaded")
    cl = client_for("h3", gw)
    assert cl.get("/bytes/10?after").status == 200
    cl.close()
    deadline = time.monotonic() + 10 * SLOW
    while True:
        with open(log) as f:
            lines = f.read().splitlines()
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 2, lines
    assert lines[0].split(" ")[2] == "proto=h3" and 'path="/bytes/10?before"' in lines[0]
    assert json.loads(lines[1])["path"] == "/bytes/10?after", lines[1]


# ---- 0-RTT -----------------------------------------------------------------

@pytest.mark.usefixtures("need_gtlsclient")
@pytest.mark.parametrize("fmt", FORMATS)
def test_0rtt_request_is_flagged(gateway, upstream, tmp_path, fmt):
    """gtlsclient resumes its session and sends its second request as 0-RTT
    early data: that line says early, the first one does not."""
    log = str(tmp_path / "access.log")
    gw = gateway({"server": {"access_log": log, "access_log_format": fmt}})
    for i, path in enumerate(("/bytes/10?first", "/bytes/10?early")):
        d = tmp_path / ("dl%d" % i)
        d.mkdir()
        p = subprocess.run(
            [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
             "--download=%s" % d, "--session-file=%s" % (tmp_path / "session.pem"),
             "--tp-file=%s" % (tmp_path / "tp.pem"), "--wait-for-ticket",
             "127.0.0.1", str(gw.port), "https://localhost:%d%s" % (gw.port, path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            timeout=60 * SLOW)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert gw.metrics()["h3_early_forwarded"] == 1
    recs = {r["path"]: r for r in (norm(fmt, x) for x in wait_lines(log, fmt, 2))}
    assert recs["/bytes/10?first"]["early"] is False, recs["/bytes/10?first"]["raw"]
    assert recs["/bytes/10?early"]["early"] is True, recs["/bytes/10?early"]["raw"]
    # Two connections, two IDs.
    cids = {r["cid"] for r in recs.values()}
    assert len(cids) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", c) for c in cids), cids


# ---- a WebSocket tunnel ----------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_tunnel_line(gateway, wsapp, tmp_path, fmt):
    """A WebSocket over HTTP/1.1: its line says tunnel, 101, the bytes each
    way; its whole life is one observation of the duration histogram."""
    import asyncio
    import ssl

    import websockets
    app = wsapp()
    log = str(tmp_path / "access.log")
    gw = gateway.with_tcp({"server": {"access_log": log, "access_log_format": fmt}},
                          upstream=app.address)
    ctx = ssl.create_default_context(cafile=gw.certs.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    msg = b"m" * 5000

    async def go():
        async with websockets.connect(
                "wss://localhost:%d/echo?fmt=%s" % (gw.tcp_port, fmt), ssl=ctx,
                host="127.0.0.1", port=gw.tcp_port, server_hostname="localhost",
                compression=None, open_timeout=10 * SLOW) as ws:
            await ws.send(msg)
            assert await ws.recv() == msg
    asyncio.run(asyncio.wait_for(go(), 30 * SLOW))
    recs = [norm(fmt, r) for r in wait_lines(log, fmt, 1)]
    assert len(recs) == 1, [r["raw"] for r in recs]
    rec = recs[0]
    why = rec["raw"]
    assert rec["tunnel"] == "websocket", why
    assert (rec["proto"], rec["method"], rec["status"]) == ("http/1.1", "GET", 101), why
    assert rec["path"] == "/echo?fmt=%s" % fmt and rec["outcome"] == "ok", why
    assert rec["in"] >= len(msg) and rec["out"] >= len(msg), why
    assert rec["upstream"] == app.address and rec["cid"] is None, why
    assert rec["connect_us"] > 0 and rec["first_byte_us"] > 0, why
    s = Series(gw.admin_get("/metrics")[1])
    assert s.get("request_duration_seconds_count", route="default", protocol="http/1.1") == 1
    assert s.get("upstream_first_byte_seconds_count", route="default",
                 protocol="http/1.1") == 1
