"""A real web server behind a route: Debian's nginx, reached over a unix
socket and over TCP as the two servers of one upstream group, next to the
scripted origin on another route. What nginx answers (static files, ranges,
conditional requests, its own 404, request fields it saw) must arrive
intact over HTTP/3, HTTP/2 and HTTP/1.1.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import time

import pytest

from testenv.clients import H1Client, H2Client, H3Client
from testenv.require import require

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    types {{ application/octet-stream bin; text/plain txt; }}
    server {{
        listen 127.0.0.1:{port};
        listen unix:{d}/nginx.sock;
        root {d}/www;
        add_header X-Served-By nginx always;
        location = /static/seen {{
            default_type text/plain;
            return 200 "gw=$http_x_gateway cookie=$http_cookie via=$http_via\\n";
        }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def nginx(tmp_path):
    exe = shutil.which("nginx") or ("/usr/sbin/nginx"
                                    if os.path.exists("/usr/sbin/nginx") else None)
    require(exe is not None, "nginx is not installed (scripts/deps.sh installs it)")
    d = tmp_path / "nginx"
    (d / "www" / "static").mkdir(parents=True)
    big = os.urandom(3 * 1024 * 1024 + 17)
    (d / "www" / "static" / "big.bin").write_bytes(big)
    (d / "www" / "static" / "small.txt").write_text("hello from nginx\n")
    port = free_port()
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port))
    proc = subprocess.Popen([exe, "-c", str(d / "nginx.conf"), "-p", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = d / "nginx.sock"
    deadline = time.monotonic() + 10
    while not sock.exists() or not _listening(port):
        assert proc.poll() is None, "nginx exited: %s" % proc.stderr.read()
        assert time.monotonic() < deadline, "nginx did not start"
        time.sleep(0.02)
    yield {"dir": d, "port": port, "sock": str(sock),
           "big_sha": hashlib.sha256(big).hexdigest(), "big_len": len(big)}
    proc.terminate()
    proc.wait(10)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def nginx_access(nginx):
    try:
        return (nginx["dir"] / "access.log").read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture
def gw(gateway, upstream, nginx):
    return gateway.with_tcp({
        "upstream": None,
        "upstream app": {"server": upstream.address},
        "upstream static": {"server": ["unix:" + nginx["sock"],
                                       "127.0.0.1:%d" % nginx["port"]]},
        "route static": {"path": "/static/", "upstream": "static",
                         "add_request_header": "X-Gateway: h3gate"},
        "route app": {"upstream": "app"},
    })


@pytest.mark.parametrize("client", [H3Client, H2Client, H1Client],
                         ids=["h3", "h2", "h1"])
def test_nginx_behind_a_route(gw, nginx, upstream, client):
    with client(gw) as cl:
        for _ in range(2):  # both servers of the group, round robin
            r = cl.get("/static/big.bin")
            assert r.error is None and r.status == 200, r
            assert r.body_len == nginx["big_len"]
            assert r.sha256 == nginx["big_sha"]
            assert r.header("x-served-by") == "nginx"

        r = cl.get("/static/big.bin", headers=["Range: bytes=100-199"])
        assert r.status == 206 and r.body_len == 100, r
        assert r.header("content-range") == "bytes 100-199/%d" % nginx["big_len"]

        r = cl.get("/static/small.txt", keep=1000)
        assert r.status == 200 and r.body == b"hello from nginx\n", r
        etag = r.header("etag")
        assert etag
        r = cl.get("/static/small.txt", headers=["If-None-Match: " + etag])
        assert r.status == 304 and r.body_len == 0, r

        r = cl.request("/static/small.txt", "HEAD")
        assert r.status == 200 and r.body_len == 0, r
        assert r.header("content-length") == "17"

        r = cl.get("/static/missing")
        assert r.status == 404 and r.header("x-served-by") == "nginx", r

        r = cl.get("/static/seen", keep=1000, headers=["Cookie: a=1"])
        assert r.status == 200, r
        assert r.body.startswith(b"gw=h3gate cookie=a=1 via="), r.body

        # The other route goes to the scripted origin, not nginx.
        r = cl.get("/bytes/1000")
        assert r.status == 200 and r.body_len == 1000, r
        assert r.header("x-served-by") is None
    assert len(upstream.requests_for("/bytes/")) == 1
    recs = gw.wait_access(path="/bytes/1000")
    assert recs[-1]["route"] == "app" and recs[-1]["upstream"] == upstream.address
    static = gw.wait_access(lambda rec: rec["route"] == "static", count=8)
    assert all(rec["upstream"] in ("unix:" + nginx["sock"],
                                   "127.0.0.1:%d" % nginx["port"])
               for rec in static), [rec.raw for rec in static]
    # nginx logs a request after answering it: wait for its eight lines.
    deadline = time.monotonic() + 10
    while len(nginx_access(nginx)) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = nginx_access(nginx)
    assert len(lines) == 8, lines
    # nginx saw requests over both transports of the group.
    assert any(l.startswith("unix:") for l in lines), lines[-5:]
    assert any(l.startswith("127.0.0.1 ") for l in lines), lines[-5:]
