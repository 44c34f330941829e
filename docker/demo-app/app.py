#!/usr/bin/env python3
"""A small legacy HTTP/1.1 app to put behind h3gate.

Only Python's standard library: http.server with HTTP/1.1 keep-alive, one
thread per connection. Routes:

  GET  /          an HTML page saying it was served via h3gate, listing the
                  request's headers as the app received them
  POST /echo      the request body back (PUT too); Content-Length or chunked
  GET  /bytes/N   N bytes (at most 1 GiB), streamed with Content-Length
  GET  /health    "ok"

HEAD works wherever GET does. Listens on 127.0.0.1:8080 unless told
otherwise (--host, --port).
"""

import argparse
import html
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 << 20  # a bigger request body is refused (413)
MAX_BYTES = 1 << 30  # /bytes/N serves at most this much
CHUNK = 64 << 10
PATTERN = bytes(range(32, 127)) * (CHUNK // 95 + 1)


class BodyError(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a legacy app would do
    server_version = "h3gate-demo-app/1"
    quiet = False

    # -- request bodies ------------------------------------------------------

    def read_body(self):
        """Reads the whole request body (Content-Length or chunked)."""
        te = self.headers.get("Transfer-Encoding", "")
        if te:
            if te.strip().lower() != "chunked":
                raise BodyError(501, "only chunked transfer-coding is known")
            return self.read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise BodyError(400, "bad Content-Length")
        n = int(length)
        if n > MAX_BODY:
            raise BodyError(413, "request body too large")
        body = self.rfile.read(n)
        if len(body) != n:
            raise BodyError(400, "request body cut short")
        return body

    def read_chunked(self):
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BodyError(400, "bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "bad chunk size") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise BodyError(413, "request body too large")
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.read(2) != b"\r\n":
                raise BodyError(400, "chunk cut short")
            parts.append(data)
        while True:  # trailer fields, up to the empty line
            line = self.rfile.readline(8192)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(parts)

    # -- responses -------------------------------------------------------------

    def reply(self, status, body, content_type="text/plain; charset=utf-8",
              extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def page(self):
        rows = "\n".join(
            "<tr><th>{}</th><td>{}</td></tr>".format(
                html.escape(name), html.escape(value))
            for name, value in self.headers.items())
        client = "{}:{}".format(*self.client_address[:2])
        text = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>h3gate demo</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 50rem;
       padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd;
         vertical-align: top; word-break: break-all; }}
th {{ white-space: nowrap; word-break: normal; }}
code {{ background: #f3f3f3; padding: .1rem .3rem; }}
</style>
</head>
<body>
<h1>Hello from a legacy HTTP/1.1 app, served via h3gate</h1>
<p>Your browser spoke HTTP/3 (QUIC) to h3gate; h3gate passed the request on
to this app over a pooled HTTP/1.1 connection. The app saw
<code>{method} {path} {version}</code> from <code>{client}</code>,
with these headers:</p>
<table>
{rows}
</table>
<p>Try <a href="/bytes/1048576">/bytes/1048576</a>,
<a href="/health">/health</a>, or POST to <code>/echo</code>.</p>
</body>
</html>
""".format(method=html.escape(self.command), path=html.escape(self.path),
           version=html.escape(self.request_version),
           client=html.escape(client), rows=rows)
        self.reply(200, text.encode(), "text/html; charset=utf-8")

    def send_bytes(self, n):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        while n > 0:
            k = min(n, CHUNK)
            self.wfile.write(PATTERN[:k])
            n -= k

    # -- routing -------------------------------------------------------------

    def route(self):
        try:
            body = self.read_body()
        except BodyError as e:
            # The stream is out of step with the request: close it.
            self.close_connection = True
            self.reply(e.status, (e.reason + "\n").encode(),
                       extra=(("Connection", "close"),))
            return
        path = self.path.split("?", 1)[0]
        get = self.command in ("GET", "HEAD")
        if path == "/" and get:
            self.page()
        elif path == "/health" and get:
            self.reply(200, b"ok\n")
        elif path == "/echo" and self.command in ("POST", "PUT"):
            ctype = self.headers.get("Content-Type", "application/octet-stream")
            self.reply(200, body, ctype)
        elif path.startswith("/bytes/") and get:
            arg = path[len("/bytes/"):]
            if not arg.isdigit() or int(arg) > MAX_BYTES:
                self.reply(400, "N must be a number up to {}\n".format(
                    MAX_BYTES).encode())
            else:
                self.send_bytes(int(arg))
        elif path in ("/", "/health", "/echo") or path.startswith("/bytes/"):
            allow = "POST, PUT" if path == "/echo" else "GET, HEAD"
            self.reply(405, b"method not allowed\n", extra=(("Allow", allow),))
        else:
            self.reply(404, b"not found\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = route
    do_OPTIONS = route

    def log_message(self, format, *args):  # noqa: A002 (the base's name)
        if not self.quiet:
            sys.stderr.write("{} {}\n".format(self.address_string(),
                                              format % args))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8080,
                    help="port to listen on (default 8080)")
    ap.add_argument("--idle-timeout", type=float, default=120.0,
                    help="seconds an idle keep-alive connection stays open "
                         "(default 120, longer than h3gate's pool keeps "
                         "idle connections)")
    ap.add_argument("--quiet", action="store_true",
                    help="do not log each request")
    args = ap.parse_args()

    Handler.timeout = args.idle_timeout
    Handler.quiet = args.quiet
    if ":" in args.host:
        Server.address_family = socket.AF_INET6
    server = Server((args.host, args.port), Handler)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print("demo app listening on http://{}:{}/".format(
        "[{}]".format(host) if ":" in host else host, port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
