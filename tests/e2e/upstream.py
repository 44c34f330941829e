"""A scripted HTTP/1.1 origin for h3gate's end-to-end tests.

It parses every request itself (no http.server), so a test can see exactly
what the gateway sent: the raw request head, the parsed header fields, the
body's framing, length and SHA-256, and which TCP connection carried it. It
also counts accepts and the peak number of open connections and requests in
flight, and checks each request head against RFC 9112: anything the gateway
got wrong lands in Upstream.errors.

Behaviours are chosen by path (see Upstream._route). Bodies are never held
whole in memory: generated bodies come from a repeating pseudo-random
pattern (pattern_bytes / expected_sha256), received bodies are hashed as they
stream in, and /echo streams what it reads straight back.

One thread accepts; one thread serves each connection. Standard library only.
Run it alone for manual checks: /usr/bin/python3 upstream.py --port 8080
"""

import argparse
import functools
import hashlib
import json
import random
import re
import socket
import tempfile
import threading
import time
import urllib.parse

# The body pattern: PATTERN_PERIOD pseudo-random bytes repeated. The period is
# prime so that it never lines up with a power-of-two buffer size: a chunk
# dropped, repeated or reordered anywhere changes the SHA-256.
PATTERN_PERIOD = 65521
PATTERN = random.Random(0x5EED).randbytes(PATTERN_PERIOD)
_SLICE_MAX = 1 << 20
_BIG = memoryview(PATTERN * (_SLICE_MAX // PATTERN_PERIOD + 2))

KiB = 1024
MiB = 1024 * 1024


def pattern_bytes(offset, n):
    """The n bytes of the pattern stream at offset (n <= 1 MiB), zero-copy."""
    if n > _SLICE_MAX:
        raise ValueError("pattern slices are at most 1 MiB")
    start = offset % PATTERN_PERIOD
    return _BIG[start:start + n]


def iter_pattern(n, piece=256 * KiB, offset=0):
    """Yields the first n bytes of the pattern stream in pieces."""
    end = offset + n
    while offset < end:
        k = min(piece, end - offset)
        yield pattern_bytes(offset, k)
        offset += k


@functools.lru_cache(maxsize=64)
def expected_sha256(n):
    """SHA-256 (hex) of the first n bytes of the pattern stream."""
    h = hashlib.sha256()
    for piece in iter_pattern(n, piece=_SLICE_MAX):
        h.update(piece)
    return h.hexdigest()


class PatternReader:
    """A file-like reader of the first n pattern bytes (for uploads)."""

    def __init__(self, n):
        self.size = n
        self.pos = 0

    def read(self, want):
        k = min(want, self.size - self.pos, _SLICE_MAX)
        if k <= 0:
            return b""
        data = bytes(pattern_bytes(self.pos, k))
        self.pos += k
        return data


# Bodies of the /chunked responses use these chunk sizes in turn: tiny, odd,
# around common buffer sizes, and larger than one QUIC packet or TCP segment.
CHUNK_SIZES = (1, 7, 100, 4095, 4096, 4097, 16384, 65536 + 13, 1000, 200000, 3)

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
REQUEST_LINE_RE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)$")
MAX_HEAD = 1 * MiB

HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te",
              "transfer-encoding", "upgrade")


class ProtocolError(Exception):
    pass


class PeerClosed(Exception):
    pass


class Request:
    """One request as the upstream received it."""

    def __init__(self, conn_id, index):
        self.conn_id = conn_id
        self.index = index          # 0 for the first request on the conn
        self.method = None
        self.target = None
        self.path = None
        self.query = {}
        self.version = None
        self.headers = []           # [(name as sent, value)]
        self.raw_head = b""
        self.framing = "none"       # "none", "content-length", "chunked"
        self.declared_length = None
        self.body_len = 0
        self.body_sha256 = None     # set when the body was read completely
        self.body_complete = False
        self.trailers = []
        self.t_start = time.monotonic()
        self.t_end = None
        self.expect_continue = False
        self.t_first_body = None    # when the first body byte was read
        self.errors = []

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def to_json(self):
        return {
            "conn": self.conn_id,
            "index": self.index,
            "method": self.method,
            "target": self.target,
            "version": self.version,
            "headers": [[k, v] for k, v in self.headers],
            "raw_head": self.raw_head.decode("latin-1"),
            "framing": self.framing,
            "declared_length": self.declared_length,
            "body_len": self.body_len,
            "body_sha256": self.body_sha256,
        }

    def __repr__(self):
        return "<Request conn=%s #%d %s %s framing=%s body=%d>" % (
            self.conn_id, self.index, self.method, self.target, self.framing,
            self.body_len)


class ConnInfo:
    """One accepted TCP connection."""

    def __init__(self, conn_id, peer):
        self.id = conn_id
        self.peer = peer
        self.accepted_at = time.monotonic()
        self.closed_at = None
        self.closed_by = None       # "peer", "upstream", "stop", "error"
        self.requests = 0
        self.note = None
        self.peer_closed = False    # the gateway closed first

    def __repr__(self):
        return "<Conn %d %s reqs=%d closed_by=%s>" % (
            self.id, self.peer, self.requests, self.closed_by)


class Body:
    """Reads one request body (any framing) and hashes it as it goes."""

    def __init__(self, conn, req):
        self.conn = conn
        self.req = req
        self.sha = hashlib.sha256()
        self.remaining = req.declared_length if req.framing == "content-length" else 0
        self.chunk_left = 0
        self.done = req.framing == "none" or (
            req.framing == "content-length" and req.declared_length == 0)
        if self.done:
            self._finish()

    def _finish(self):
        self.done = True
        self.req.body_complete = True
        self.req.body_sha256 = self.sha.hexdigest()

    def _account(self, data):
        if data and self.req.t_first_body is None:
            self.req.t_first_body = time.monotonic()
        self.sha.update(data)
        self.req.body_len += len(data)

    def read(self, n=256 * KiB):
        """Returns up to n body bytes, b"" at the end of the body."""
        if self.done:
            return b""
        if self.conn.send_continue_pending:
            self.conn.send_continue_pending = False
            self.conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.req.framing == "content-length":
            data = self.conn.read_some(min(n, self.remaining))
            self.remaining -= len(data)
            self._account(data)
            if self.remaining == 0:
                self._finish()
            return data
        # chunked
        if self.chunk_left == 0:
            line = self.conn.read_line()
            size_txt = line.split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_txt):
                raise ProtocolError("bad chunk size line %r" % line[:40])
            size = int(size_txt, 16)
            if size == 0:
                while True:
                    t = self.conn.read_line()
                    if t == b"":
                        break
                    self.req.trailers.append(t.decode("latin-1"))
                self._finish()
                return b""
            self.chunk_left = size
        data = self.conn.read_some(min(n, self.chunk_left))
        self.chunk_left -= len(data)
        self._account(data)
        if self.chunk_left == 0:
            if self.conn.read_exact(2) != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
        return data

    def drain(self):
        while self.read():
            pass


class Conn:
    """Socket helpers for one connection (blocking I/O)."""

    def __init__(self, server, sock, info):
        self.server = server
        self.sock = sock
        self.info = info
        self.rfile = sock.makefile("rb", buffering=256 * KiB)
        self.send_continue_pending = False
        self.method = None

    def read_some(self, n):
        data = self.rfile.read1(n)
        if not data:
            raise PeerClosed()
        return data

    def read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) != n:
            raise PeerClosed()
        return data

    def read_line(self, limit=64 * KiB):
        line = self.rfile.readline(limit + 1)
        if not line:
            raise PeerClosed()
        if len(line) > limit:
            raise ProtocolError("line too long")
        if not line.endswith(b"\r\n"):
            if line.endswith(b"\n"):
                raise ProtocolError("bare LF line ending")
            raise PeerClosed()
        return line[:-2]

    def sendall(self, data):
        self.sock.sendall(data)

    def wait_peer_close(self, timeout):
        """Waits until the peer closes (returns True) or timeout passes.
        Bytes the peer sends meanwhile are recorded as a note."""
        deadline = time.monotonic() + timeout
        while not self.server.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.info.peer_closed = True
                return True
            finally:
                try:
                    self.sock.settimeout(None)
                except OSError:
                    pass
            if not data:
                self.info.peer_closed = True
                return True
            self.server._error(
                "conn %d: received %d more bytes on a connection that should be "
                "abandoned: %r" % (self.info.id, len(data), data[:60]))
        return False

    def discard_until_close(self, timeout):
        """Reads and throws away whatever the peer sends (bytes already
        buffered included) until it closes or timeout passes. Unlike
        wait_peer_close, bytes are expected here (a request body the
        script chose not to read). Returns (closed, bytes discarded)."""
        import select
        n = 0
        deadline = time.monotonic() + timeout
        while not self.server.stopping.is_set():
            try:
                self.sock.setblocking(False)
                try:
                    data = self.rfile.read1(256 * KiB)
                finally:
                    self.sock.setblocking(True)
            except (ConnectionResetError, BrokenPipeError):
                self.info.peer_closed = True
                return True, n
            if data:
                n += len(data)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False, n
            readable, _, _ = select.select([self.sock], [], [], min(left, 0.2))
            if not readable:
                continue
            try:
                data = self.sock.recv(256 * KiB)
            except (ConnectionResetError, BrokenPipeError):
                self.info.peer_closed = True
                return True, n
            if not data:
                self.info.peer_closed = True
                return True, n
            n += len(data)
        return False, n


class Response:
    """Writes one response; suppresses the body for HEAD."""

    def __init__(self, conn, req):
        self.conn = conn
        self.req = req
        self.head_only = req.method == "HEAD"
        self.chunked = False

    def head(self, status, headers=(), reason=None):
        reason = reason or {200: "OK", 204: "No Content", 404: "Not Found"}.get(status, "Status")
        lines = ["HTTP/1.1 %d %s" % (status, reason),
                 "Server: h3gate-test-upstream",
                 "X-Upstream-Conn: %d" % self.req.conn_id,
                 "X-Upstream-Req: %d" % self.req.index]
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
            if k.lower() == "transfer-encoding" and "chunked" in v.lower():
                self.chunked = True
        self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def body(self, data):
        if self.head_only or not data:
            return
        if self.chunked:
            self.conn.sendall(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        else:
            self.conn.sendall(data)

    def end(self, trailers=()):
        if self.head_only or not self.chunked:
            return
        tail = b"0\r\n"
        for k, v in trailers:
            tail += ("%s: %s\r\n" % (k, v)).encode("latin-1")
        self.conn.sendall(tail + b"\r\n")

    def simple(self, status, body=b"", ctype="text/plain", headers=()):
        self.head(status, [("Content-Type", ctype),
                           ("Content-Length", str(len(body)))] + list(headers))
        self.body(body)


class Upstream:
    """The scripted origin. start() binds 127.0.0.1 on an ephemeral port."""

    def __init__(self, host="127.0.0.1", port=0, name="upstream"):
        self.host = host
        self.name = name
        self._want_port = port
        self.port = None
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self._listener = None
        self._threads = []
        self._socks = {}
        self._scripts = {}
        self._next_conn = 1
        self.reset_stats()

    # ---- lifecycle -------------------------------------------------------

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self._want_port))
        s.listen(512)
        self._listener = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="%s-accept" % self.name,
                             daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout=5):
        self.stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self.lock:
            socks = list(self._socks.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- what tests read ---------------------------------------------------

    def reset_stats(self):
        with getattr(self, "lock", threading.Condition()):
            self.requests = []
            self.conns = []
            self.errors = []
            self.accepts = 0
            self.open_conns = 0
            self.peak_open_conns = 0
            self.inflight = 0
            self.peak_inflight = 0

    def _error(self, msg):
        with self.lock:
            self.errors.append(msg)
            self.lock.notify_all()

    def wait_for(self, predicate, timeout=5.0, what="condition"):
        """Waits until predicate() (called under the lock) is true."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: timed out after %.1fs waiting for %s"
                                         % (self.name, timeout, what))
                self.lock.wait(min(left, 0.1))

    def requests_for(self, path_prefix):
        with self.lock:
            return [r for r in self.requests if r.target and r.target.startswith(path_prefix)]

    def last_request(self, path_prefix=""):
        reqs = self.requests_for(path_prefix)
        return reqs[-1] if reqs else None

    def wait_request_done(self, path_prefix, count=1, timeout=5.0):
        """Waits until count requests under path_prefix have finished."""
        self.wait_for(lambda: len([r for r in self.requests
                                   if r.target and r.target.startswith(path_prefix)
                                   and r.t_end is not None]) >= count,
                      timeout, "%d finished request(s) for %s" % (count, path_prefix))
        return self.requests_for(path_prefix)

    def conn(self, conn_id):
        with self.lock:
            for c in self.conns:
                if c.id == conn_id:
                    return c
        return None

    def wait_conn_closed(self, conn_id, timeout=5.0):
        self.wait_for(lambda: any(c.id == conn_id and c.closed_at is not None
                                  for c in self.conns),
                      timeout, "connection %d to close" % conn_id)
        return self.conn(conn_id)

    def assert_clean(self):
        """Fails if the gateway sent anything that broke HTTP/1.1 rules."""
        with self.lock:
            errs = list(self.errors)
        assert not errs, "%s saw protocol errors from the gateway:\n  %s" % (
            self.name, "\n  ".join(errs))

    def script(self, name, action, close=True, linger=10.0):
        """Registers what GET /script/<name> does: raw bytes to send (then
        wait up to linger seconds for the gateway to close and, when close,
        close the connection), or a callable(conn, req) that returns whether
        to keep the connection alive."""
        with self.lock:
            self._scripts[name] = (action, close, linger)

    # ---- serving -----------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                cid = self._next_conn
                self._next_conn += 1
                info = ConnInfo(cid, "%s:%d" % peer)
                self.conns.append(info)
                self.accepts += 1
                self.open_conns += 1
                self.peak_open_conns = max(self.peak_open_conns, self.open_conns)
                self._socks[cid] = sock
                self.lock.notify_all()
            t = threading.Thread(target=self._serve_conn, args=(sock, info),
                                 name="%s-conn-%d" % (self.name, cid), daemon=True)
            t.start()
            with self.lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)

    def _serve_conn(self, sock, info):
        conn = Conn(self, sock, info)
        closed_by = "upstream"
        try:
            while not self.stopping.is_set():
                req = self._read_request(conn, info)
                if req is None:
                    closed_by = "peer"
                    break
                keep = self._handle(conn, req)
                if not keep:
                    break
        except PeerClosed:
            closed_by = "peer"
        except (ConnectionResetError, BrokenPipeError):
            closed_by = "peer"
        except ProtocolError as e:
            self._error("conn %d: %s" % (info.id, e))
            closed_by = "error"
            try:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            except OSError:
                pass
        except OSError as e:
            closed_by = "stop" if self.stopping.is_set() else "error: %s" % e
        finally:
            if info.peer_closed:
                closed_by = "peer"
            with self.lock:
                self._socks.pop(info.id, None)
                info.closed_at = time.monotonic()
                info.closed_by = closed_by
                self.open_conns -= 1
                self.lock.notify_all()
            try:
                conn.rfile.close()
            except OSError:
                pass
            sock.close()

    def _read_request(self, conn, info):
        head = bytearray()
        while True:
            line = conn.rfile.readline(64 * KiB + 1)
            if not line:
                if head:
                    raise ProtocolError("connection closed inside a request head")
                return None
            if not head and line in (b"\r\n", b"\n"):
                # RFC 9112 2.2 lets a server ignore one empty line; a proxy
                # should not send it, so it is an error worth knowing about.
                raise ProtocolError("empty line before the request line")
            head += line
            if len(head) > MAX_HEAD:
                raise ProtocolError("request head larger than 1 MiB")
            if line in (b"\r\n", b"\n"):
                break
        with self.lock:
            req = Request(info.id, info.requests)
            info.requests += 1
        req.raw_head = bytes(head)
        self._parse_head(req, bytes(head))
        with self.lock:
            self.requests.append(req)
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
            self.lock.notify_all()
        return req

    def _parse_head(self, req, head):
        if b"\r\n" not in head or re.search(rb"(?<!\r)\n", head):
            raise ProtocolError("request head uses bare LF: %r" % head[:80])
        lines = head[:-4].split(b"\r\n")
        m = REQUEST_LINE_RE.match(lines[0])
        if not m:
            raise ProtocolError("bad request line %r" % lines[0][:100])
        req.method = m.group(1).decode()
        req.target = m.group(2).decode("latin-1")
        req.version = "%s.%s" % (m.group(3).decode(), m.group(4).decode())
        if req.version != "1.1":
            raise ProtocolError("request version HTTP/%s, expected 1.1" % req.version)
        parsed = urllib.parse.urlsplit(req.target)
        if not req.target.startswith("/"):
            raise ProtocolError("request target not in origin-form: %r" % req.target)
        req.path = parsed.path
        req.query = dict(urllib.parse.parse_qsl(parsed.query))
        for raw in lines[1:]:
            if raw[:1] in (b" ", b"\t"):
                raise ProtocolError("obsolete line folding in %r" % raw[:60])
            name, sep, value = raw.partition(b":")
            if not sep or not TOKEN_RE.match(name):
                raise ProtocolError("bad header line %r" % raw[:60])
            value = value.strip(b" \t")
            if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
                raise ProtocolError("control character in header %r" % name)
            req.headers.append((name.decode(), value.decode("latin-1")))
        hosts = req.header_all("host")
        if len(hosts) != 1:
            raise ProtocolError("%d Host header fields" % len(hosts))
        te = req.header_all("transfer-encoding")
        cl = req.header_all("content-length")
        if te and cl:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if te:
            if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
                raise ProtocolError("unsupported Transfer-Encoding %r" % te)
            req.framing = "chunked"
        elif cl:
            if len(set(cl)) != 1 or not re.fullmatch(r"[0-9]{1,18}", cl[0]):
                raise ProtocolError("bad Content-Length %r" % cl)
            req.framing = "content-length"
            req.declared_length = int(cl[0])
        expect = req.header("expect")
        if expect is not None and expect.lower() == "100-continue":
            req.expect_continue = True

    def _handle(self, conn, req):
        conn.send_continue_pending = req.expect_continue
        body = Body(conn, req)
        resp = Response(conn, req)
        # Script callables (Upstream.script) read the body and answer
        # through these.
        conn.body, conn.resp = body, resp
        keep = True
        try:
            delay = float(req.query.get("delay", "0")) / 1000.0
            if delay > 0:
                self.stopping.wait(delay)
            keep = self._route(conn, req, body, resp)
            if keep:
                body.drain()
                if (req.header("connection") or "").lower() == "close":
                    keep = False
        finally:
            with self.lock:
                req.t_end = time.monotonic()
                self.inflight -= 1
                self.lock.notify_all()
        return keep

    # ---- behaviours ------------------------------------------------------

    def _route(self, conn, req, body, resp):
        """Serves req. Returns whether the connection stays open."""
        parts = req.path.strip("/").split("/")
        kind = parts[0]
        arg = parts[1] if len(parts) > 1 else ""
        q = req.query

        if kind == "bytes":
            n = int(arg)
            body.drain()
            extra = [("Priority", q["priority"])] if "priority" in q else []
            resp.head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(n)),
                            ("X-Body-Sha256", expected_sha256(n))] + extra)
            for piece in iter_pattern(n):
                resp.body(piece)
            if "linger_close" in q:
                # Keep-alive response, then the server closes the idle
                # connection on its own (as an upstream idle timeout would).
                self.stopping.wait(float(q["linger_close"]) / 1000.0)
                conn.info.note = "closed while idle"
                return False
            if "extra" in q:
                conn.sendall(q["extra"].encode())
            return True

        if kind == "chunked":
            n = int(arg)
            body.drain()
            resp.head(200, [("Content-Type", "application/octet-stream"),
                            ("Transfer-Encoding", "chunked")])
            off, i = 0, 0
            while off < n:
                k = min(CHUNK_SIZES[i % len(CHUNK_SIZES)], n - off)
                i += 1
                data = b"".join(bytes(p) for p in iter_pattern(k, offset=off))
                if not resp.head_only:
                    ext = b";ext=%d" % i if i % 5 == 0 else b""
                    conn.sendall(b"%x%s\r\n" % (k, ext) + data + b"\r\n")
                off += k
            trailers = [("X-Trailer", "yes")] if q.get("trailers") else []
            resp.end(trailers)
            return True

        if kind == "close":
            n = int(arg)
            body.drain()
            conn.sendall(b"HTTP/1.1 200 OK\r\nServer: h3gate-test-upstream\r\n"
                         b"Content-Type: application/octet-stream\r\n"
                         b"X-Upstream-Conn: %d\r\nConnection: close\r\n\r\n"
                         % req.conn_id)
            if not resp.head_only:
                for piece in iter_pattern(n):
                    conn.sendall(piece)
            return False

        if kind == "slow":
            n = int(arg)
            rate = int(q.get("rate", str(1 * MiB)))
            body.drain()
            resp.head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(n))])
            if resp.head_only:
                return True
            self._paced_send(conn, n, rate)
            return True

        if kind == "echo":
            return self._echo(conn, req, body, resp, q.get("mode", "stream"))

        if kind == "sink":
            rate = int(q.get("rate", "0"))
            t0 = time.monotonic()
            got = 0
            while True:
                piece = body.read(64 * KiB if rate == 0 else max(1, min(64 * KiB, rate // 20)))
                if not piece:
                    break
                got += len(piece)
                if rate:
                    ahead = got / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        self.stopping.wait(ahead)
            out = json.dumps({"len": req.body_len, "sha256": req.body_sha256,
                              "framing": req.framing}).encode()
            resp.simple(200, out, "application/json")
            return True

        if kind == "hang":
            conn.wait_peer_close(float(q.get("max", "60")))
            conn.info.note = "hang ended"
            return False

        if kind == "status":
            code = int(arg)
            if code in (204, 304) or 100 <= code < 200:
                resp.head(code, [("X-Status", str(code))])
            else:
                extra = [("Location", "/bytes/1")] if 300 <= code < 400 else []
                resp.simple(code, b"status %d\n" % code, headers=extra)
            return True

        if kind == "tooearly":
            # An app that refuses replayable requests (RFC 8470 §5.2): 425
            # to anything marked Early-Data: 1, else N pattern bytes.
            body.drain()
            if req.header("early-data") == "1":
                resp.simple(425, b"too early\n")
                return True
            n = int(arg)
            resp.head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(n))])
            for piece in iter_pattern(n):
                resp.body(piece)
            return True

        if kind == "early":
            # An app that refuses an upload before reading it (Express,
            # Django and Rails answer 413 or 401 this way): the complete
            # answer goes at once, the body unread. With ?close=1 it says
            # "Connection: close" and, as servers do (RFC 9112 9.6), reads
            # and drops what still comes until the gateway closes; without,
            # it keeps the connection and, like Node's http module, reads
            # the rest of the body by its framing before the next request.
            code = int(arg)
            page = b"refused by the app: %d\n" % code
            head = ["HTTP/1.1 %d %s" % (code, {413: "Content Too Large",
                                                401: "Unauthorized"}.get(code, "Status")),
                    "Server: h3gate-test-upstream",
                    "X-Upstream-Conn: %d" % req.conn_id,
                    "Content-Type: text/plain",
                    "Content-Length: %d" % len(page)]
            if code == 401:
                head.append('WWW-Authenticate: Basic realm="e2e"')
            if q.get("close") == "1":
                head.append("Connection: close")
            # One write, as frameworks send a short answer.
            conn.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + page)
            if q.get("close") == "1":
                conn.info.note = "early answer, then discarding"
                conn.discard_until_close(float(q.get("linger", "30")))
                return False
            conn.info.note = "early answer, kept alive"
            return True

        if kind == "headers":
            body.drain()
            out = json.dumps(req.to_json(), indent=1).encode()
            resp.simple(200, out, "application/json")
            return True

        if kind == "resp-headers":
            # End-to-end fields that must pass, and hop-by-hop fields that
            # an HTTP/3 response must not carry (RFC 9114 4.2).
            body.drain()
            payload = b"resp-headers ok\n"
            resp.head(200, [
                ("Content-Type", "text/plain"),
                ("X-Upstream", "yes"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/"),
                ("X-Big", "v" * 8000),
                ("Connection", "keep-alive"),
                ("Connection", "X-Hop-Named"),
                ("X-Hop-Named", "must-not-pass"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("Proxy-Connection", "keep-alive"),
                ("Transfer-Encoding", "chunked"),
            ])
            resp.body(payload)
            resp.end()
            return True

        if kind == "page" or kind == "":
            body.drain()
            html = (b"<!DOCTYPE html><html><head><title>h3gate e2e</title></head>"
                    b"<body><h1 id=\"marker\">served-through-h3gate</h1>"
                    b"<p>conn %d</p></body></html>" % req.conn_id)
            resp.simple(200, html, "text/html; charset=utf-8",
                        headers=[("Cache-Control", "no-store")])
            return True

        if kind == "malformed":
            return self._malformed(conn, req, body, arg)

        if kind == "script":
            with self.lock:
                entry = self._scripts.get(arg)
            if entry is None:
                resp.simple(404, b"no script %s\n" % arg.encode())
                return True
            action, close, linger = entry
            if callable(action):
                return action(conn, req)
            body.drain()
            conn.sendall(action)
            if close:
                conn.wait_peer_close(linger)
                return False
            return True

        body.drain()
        resp.simple(404, b"not found\n")
        return True

    def _paced_send(self, conn, n, rate, offset=0):
        piece = max(1, min(256 * KiB, rate // 20))
        t0 = time.monotonic()
        sent = 0
        while sent < n:
            if self.stopping.is_set():
                raise OSError("stopping")
            k = min(piece, n - sent)
            conn.sendall(pattern_bytes(offset + sent, k))
            sent += k
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                self.stopping.wait(ahead)

    def _echo(self, conn, req, body, resp, mode):
        ctype = req.header("content-type") or "application/octet-stream"
        if mode == "spool":
            # Read it all first (to disk), like an application server that
            # parses the whole request before answering.
            with tempfile.TemporaryFile() as f:
                while True:
                    piece = body.read()
                    if not piece:
                        break
                    f.write(piece)
                n = f.tell()
                f.seek(0)
                resp.head(200, [("Content-Type", ctype), ("Content-Length", str(n)),
                                ("X-Echo-Mode", "spool")])
                while True:
                    piece = f.read(256 * KiB)
                    if not piece:
                        break
                    resp.body(piece)
            return True
        # Stream: answer at once and send back each piece as it arrives.
        if req.framing == "content-length":
            hdrs = [("Content-Length", str(req.declared_length))]
        else:
            hdrs = [("Transfer-Encoding", "chunked")]
        resp.head(200, [("Content-Type", ctype), ("X-Echo-Mode", "stream")] + hdrs)
        while True:
            piece = body.read()
            if not piece:
                break
            resp.body(piece)
        resp.end()
        return True

    # Kinds of broken response. The first group breaks before the gateway
    # could have sent a status (expect 502); the second breaks mid-body
    # (expect the HTTP/3 stream to be reset). After sending, the upstream
    # keeps the connection open until the gateway closes it, so the gateway
    # must notice the error itself rather than wait for EOF; "close-*" kinds
    # close on purpose.
    MALFORMED_HEAD = {
        "bad-status-line": b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
        "garbage": b"this is not an http response\r\n\r\n",
        "bad-version": b"HTTP/9.7 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "bad-chunk-start": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nhello\r\n0\r\n\r\n",
        "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "dup-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                  b"hello!",
        "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello",
        "no-colon": b"HTTP/1.1 200 OK\r\nX-No-Colon-Here\r\nContent-Length: 2\r\n\r\nok",
        "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    }
    MALFORMED_CLOSE_HEAD = {
        "close-before-head": b"",
        "close-partial-head": b"HTTP/1.1 200 OK\r\nContent-Le",
    }
    MALFORMED_BODY = ("bad-chunk-mid", "close-short-cl", "close-short-chunked",
                      "stall-mid-body")
    MALFORMED_MID_BYTES = 256 * KiB

    @classmethod
    def malformed_kinds(cls):
        head = sorted(cls.MALFORMED_HEAD) + sorted(cls.MALFORMED_CLOSE_HEAD) + ["huge-head"]
        return head, list(cls.MALFORMED_BODY)

    def _malformed(self, conn, req, body, kind):
        body.drain()
        conn.info.note = "malformed " + kind
        if kind in self.MALFORMED_HEAD:
            conn.sendall(self.MALFORMED_HEAD[kind])
            conn.wait_peer_close(30)
            return False
        if kind in self.MALFORMED_CLOSE_HEAD:
            if self.MALFORMED_CLOSE_HEAD[kind]:
                conn.sendall(self.MALFORMED_CLOSE_HEAD[kind])
            return False
        if kind == "huge-head":
            # 128 KiB of header fields: over any sane max_header_size.
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for i in range(128):
                conn.sendall(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000))
            conn.sendall(b"Content-Length: 2\r\n\r\nok")
            conn.wait_peer_close(30)
            return False
        n = self.MALFORMED_MID_BYTES
        if kind == "bad-chunk-mid":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in iter_pattern(n, piece=16 * KiB):
                conn.sendall(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
            conn.sendall(b"xyz-not-hex\r\n" + bytes(pattern_bytes(0, 100)))
            conn.wait_peer_close(30)
            return False
        if kind == "close-short-cl":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * n))
            for piece in iter_pattern(n):
                conn.sendall(piece)
            return False
        if kind == "close-short-chunked":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in iter_pattern(n, piece=16 * KiB):
                conn.sendall(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
            return False
        if kind == "stall-mid-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * n))
            for piece in iter_pattern(n):
                conn.sendall(piece)
            conn.wait_peer_close(60)
            return False
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    up = Upstream(args.host, args.port).start()
    print("upstream listening on %s" % up.address, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        up.stop()


if __name__ == "__main__":
    main()
