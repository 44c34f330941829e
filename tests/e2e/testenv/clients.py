"""Clients of the gateway under test: libcurl (pycurl) over HTTP/3,
HTTP/2 and HTTP/1.1, one transfer or many multiplexed; ngtcp2's gtlsclient;
headless Chromium; and what they return (Result)."""

import hashlib
import io
import itertools
import json
import os
import signal
import subprocess
import time

from testenv.gateway import CHROMIUM, GTLSCLIENT, SLOW
from testenv.require import require
from upstream import MiB, PatternReader

try:
    import pycurl
except ImportError:  # pragma: no cover - Debian's python3-pycurl is expected
    pycurl = None

CURL_HTTP_VERSION_3ONLY = getattr(pycurl, "CURL_HTTP_VERSION_3ONLY", 31)
CURL_HTTP_VERSION_2TLS = getattr(pycurl, "CURL_HTTP_VERSION_2TLS", 4)
CURL_HTTP_VERSION_1_1 = getattr(pycurl, "CURL_HTTP_VERSION_1_1", 2)
CURL_HTTP_VERSION_2_0 = getattr(pycurl, "CURL_HTTP_VERSION_2_0", 3)
CURL_HTTP_VERSION_3 = getattr(pycurl, "CURL_HTTP_VERSION_3", 30)

# --------------------------------------------------------------------------
# HTTP/3 clients: libcurl (pycurl)

class Result:
    """What one HTTP/3 exchange gave the client."""

    def __init__(self):
        self.status = 0
        self.headers = []           # final response header block [(name, value)]
        self.all_header_blocks = []
        self.http_version = None
        self.body_len = 0
        self.sha256 = None
        self.body = b""             # the first `keep` bytes
        self.error = None           # None or (curl code, message)
        self.num_connects = None
        self.local_port = None
        self.time_total = None
        self.first_byte_at = None   # monotonic time of the first body byte
        self._sha = hashlib.sha256()

    @property
    def ok(self):
        return self.error is None

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return "<Result status=%s len=%d err=%s v=%s conns=%s>" % (
            self.status, self.body_len, self.error, self.http_version, self.num_connects)


class _Transfer:
    """Callbacks and options for one easy handle."""

    def __init__(self, c, url, port, ca, method="GET", body=None, chunked=False,
                 headers=(), timeout=60, connect_timeout=10, pace=None,
                 abort_after=None, abort_upload_after=None, keep=1 * MiB,
                 on_data=None, hold_upload_at=None):
        self.c = c
        self.r = Result()
        self.keep = keep
        self.pace = pace
        self.abort_after = abort_after
        self.on_data = on_data
        self.t0 = None
        self._buf = io.BytesIO()
        self._hdr_block = None
        # hold_upload_at: the upload stops there until the final response
        # head has arrived (a client that uploads slower than the server
        # answers), then goes on.
        self._held = False
        self._final_head = False

        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.HTTP_VERSION, CURL_HTTP_VERSION_3ONLY)
        c.setopt(pycurl.CAINFO, ca)
        c.setopt(pycurl.CAPATH, None)   # do not scan the system CA directory
        c.setopt(pycurl.SSL_VERIFYPEER, 1)
        c.setopt(pycurl.SSL_VERIFYHOST, 2)
        c.setopt(pycurl.RESOLVE, ["localhost:%d:127.0.0.1" % port])
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000 * SLOW))
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(connect_timeout * 1000 * SLOW))
        c.setopt(pycurl.USERAGENT, "h3gate-e2e/1")
        c.setopt(pycurl.WRITEFUNCTION, self._write)
        c.setopt(pycurl.HEADERFUNCTION, self._header)
        hdrs = list(headers)
        if not any(h.lower().startswith("expect:") for h in hdrs):
            hdrs.append("Expect:")
        c.setopt(pycurl.HTTPHEADER, hdrs)
        if method == "HEAD":
            c.setopt(pycurl.NOBODY, 1)
        elif body is not None:
            if isinstance(body, int):
                reader, n = PatternReader(body), body
            else:
                reader, n = io.BytesIO(body), len(body)
            read = reader.read
            if abort_upload_after is not None:
                def read(want, _r=reader, _limit=abort_upload_after):
                    if _r.pos >= _limit:
                        return pycurl.READFUNC_ABORT
                    return _r.read(min(want, _limit - _r.pos))
            if hold_upload_at is not None:
                def held(want, _r=reader, _at=hold_upload_at, _read=read):
                    if _r.pos >= _at and not self._final_head:
                        self._held = True
                        return pycurl.READFUNC_PAUSE
                    if _r.pos < _at:
                        want = min(want, _at - _r.pos)
                    return _read(want)
                read = held
            c.setopt(pycurl.POST, 1)
            c.setopt(pycurl.READFUNCTION, read)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, -1 if chunked else n)
            if method != "POST":
                c.setopt(pycurl.CUSTOMREQUEST, method)
        elif method != "GET":
            c.setopt(pycurl.CUSTOMREQUEST, method)

    def _header(self, line):
        text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            self._hdr_block = []
            self.r.all_header_blocks.append((text, self._hdr_block))
            self.r.headers = self._hdr_block
        elif text and self._hdr_block is not None:
            k, _, v = text.partition(":")
            self._hdr_block.append((k.strip().lower(), v.strip()))
        elif not text and self.r.all_header_blocks:
            status = self.r.all_header_blocks[-1][0].split()
            if len(status) > 1 and not status[1].startswith("1"):
                self._final_head = True
                if self._held:
                    self._held = False
                    self.c.pause(pycurl.PAUSE_CONT)

    def _write(self, data):
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
            self.r.first_byte_at = now
        self.r._sha.update(data)
        self.r.body_len += len(data)
        if self._buf.tell() < self.keep:
            self._buf.write(data[: self.keep - self._buf.tell()])
        if self.on_data is not None:
            self.on_data(self.r)
        if self.abort_after is not None and self.r.body_len >= self.abort_after:
            return 0  # CURLE_WRITE_ERROR: curl resets the stream
        if self.pace:
            # Read no faster than pace bytes/s: sleeping here stalls curl, so
            # the QUIC flow-control window stops opening.
            ahead = self.r.body_len / self.pace - (now - self.t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
        return None

    def finish(self, err=None):
        c, r = self.c, self.r
        if err is not None:
            r.error = err
        r.status = c.getinfo(pycurl.RESPONSE_CODE)
        r.http_version = c.getinfo(pycurl.INFO_HTTP_VERSION)
        r.num_connects = c.getinfo(pycurl.NUM_CONNECTS)
        r.local_port = c.getinfo(pycurl.LOCAL_PORT)
        r.time_total = c.getinfo(pycurl.TOTAL_TIME)
        r.sha256 = r._sha.hexdigest()
        r.body = self._buf.getvalue()
        return r


class H3Client:
    """libcurl HTTP/3 client bound to one gateway. One easy handle: requests
    reuse its QUIC connection (Result.num_connects is 0 on reuse)."""

    http_version = CURL_HTTP_VERSION_3ONLY

    def __init__(self, gw, ca=None):
        self.gw = gw
        self.port = gw.port if hasattr(gw, "port") else int(gw)
        self.ca = ca or gw.certs.ca
        self.curl = pycurl.Curl()

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)

    def request(self, path, method="GET", setup=None, **kw):
        """kw: body (int: that many pattern bytes, or bytes), chunked (no
        declared length), headers (["Name: value"]), timeout, connect_timeout,
        pace (bytes/s read limit), abort_after (response bytes, then abort),
        abort_upload_after (request bytes, then abort), keep (body bytes
        kept in Result.body), on_data (called with the Result per write).
        setup(curl, transfer), when given, sets more options last."""
        c = self.curl
        c.reset()
        t = _Transfer(c, self.url(path), self.port, self.ca, method=method, **kw)
        c.setopt(pycurl.HTTP_VERSION, self.http_version)
        if setup is not None:
            setup(c, t)
        err = None
        try:
            c.perform()
        except pycurl.error as e:
            err = (e.args[0], e.args[1] if len(e.args) > 1 else "")
        return t.finish(err)

    def get(self, path, **kw):
        return self.request(path, "GET", **kw)

    def post(self, path, body, **kw):
        return self.request(path, "POST", body=body, **kw)

    def close(self):
        self.curl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class H1Client(H3Client):
    """libcurl over HTTP/1.1 + TLS to the gateway's TCP port. One easy
    handle: requests reuse its connection (num_connects 0 on reuse)."""

    http_version = CURL_HTTP_VERSION_1_1

    def __init__(self, gw, port=None):
        super().__init__(gw)
        self.port = port or getattr(gw, "tcp_port", None) or gw.port


class H2Client(H3Client):
    """libcurl over HTTP/2 + TLS to the gateway's TCP port. One easy handle:
    requests reuse its connection (num_connects 0 on reuse)."""

    http_version = CURL_HTTP_VERSION_2TLS

    def __init__(self, gw, port=None):
        super().__init__(gw)
        self.port = port or gw.tcp_port


def client_for(proto, gw):
    """A libcurl client of gw speaking proto: "h3", "h2" or "http/1.1"."""
    return {"h3": H3Client, "h2": H2Client, "http/1.1": H1Client}[proto](gw)


class H3Multi:
    """Concurrent HTTP/3 requests multiplexed on one QUIC connection (a
    CurlMulti with PIPEWAIT and at most one connection per host). The
    connection cache lives in the multi handle: later batches reuse it."""

    def __init__(self, gw, ca=None, max_host_connections=1):
        self.gw = gw
        self.port = gw.port
        self.ca = ca or gw.certs.ca
        self.m = pycurl.CurlMulti()
        self.m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        if max_host_connections:
            self.m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, max_host_connections)

    def run(self, specs, timeout=60):
        """specs: list of dicts with "path" and H3Client.request keywords
        (plus "method"). Returns Results in the same order."""
        transfers = []
        for spec in specs:
            spec = dict(spec)
            path = spec.pop("path")
            c = pycurl.Curl()
            t = _Transfer(c, "https://localhost:%d%s" % (self.port, path), self.port,
                          self.ca, **spec)
            self.prepare(c)
            c.setopt(pycurl.PIPEWAIT, 1)
            self.m.add_handle(c)
            transfers.append(t)
        by_handle = {id(t.c): t for t in transfers}
        errors = {}
        deadline = time.monotonic() + timeout * SLOW + 5
        remaining = len(transfers)
        while remaining:
            while True:
                ret, _ = self.m.perform()
                if ret != pycurl.E_CALL_MULTI_PERFORM:
                    break
            while True:
                queued, ok_list, err_list = self.m.info_read()
                for c in ok_list:
                    errors[id(c)] = None
                    remaining -= 1
                for c, code, msg in err_list:
                    errors[id(c)] = (code, msg)
                    remaining -= 1
                if not queued:
                    break
            if not remaining:
                break
            if time.monotonic() > deadline:
                for t in transfers:
                    if id(t.c) not in errors:
                        errors[id(t.c)] = (-1, "test deadline passed")
                break
            self.m.select(0.05)
        results = []
        for t in transfers:
            results.append(t.finish(errors.get(id(t.c))))
            self.m.remove_handle(t.c)
            t.c.close()
        assert set(by_handle) == {id(t.c) for t in transfers}
        return results

    def prepare(self, c):
        """Per-handle options of a subclass (e.g. another HTTP version)."""

    def close(self):
        self.m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class H2Multi(H3Multi):
    """Concurrent requests multiplexed on one HTTP/2 connection to the
    gateway's TCP listener: H3Multi with libcurl told to speak HTTP/2."""

    def __init__(self, gw, ca=None, max_host_connections=1):
        super().__init__(gw, ca, max_host_connections)
        self.port = gw.tcp_port

    def prepare(self, c):
        c.setopt(pycurl.HTTP_VERSION, CURL_HTTP_VERSION_2TLS)


def fresh_connections(gw, specs, concurrency, version="h3", timeout=120):
    """Runs each spec (a dict as for H3Multi.run) on a connection of its
    own, opened for it and closed right after it (libcurl's FRESH_CONNECT
    and FORBID_REUSE), with at most `concurrency` in progress at once.
    version "h3" (the UDP port) or "h2" (the TCP port). Returns Results in
    the order of specs."""
    port = gw.port if version == "h3" else gw.tcp_port
    m = pycurl.CurlMulti()
    transfers = [None] * len(specs)
    errors = {}
    by_handle = {}
    nxt = 0
    running = 0
    deadline = time.monotonic() + timeout * SLOW
    try:
        while nxt < len(specs) or running:
            while running < concurrency and nxt < len(specs):
                spec = dict(specs[nxt])
                path = spec.pop("path")
                c = pycurl.Curl()
                t = _Transfer(c, "https://localhost:%d%s" % (port, path), port,
                              gw.certs.ca, **spec)
                if version == "h2":
                    c.setopt(pycurl.HTTP_VERSION, CURL_HTTP_VERSION_2TLS)
                c.setopt(pycurl.FRESH_CONNECT, 1)
                c.setopt(pycurl.FORBID_REUSE, 1)
                transfers[nxt] = t
                by_handle[id(c)] = nxt
                m.add_handle(c)
                nxt += 1
                running += 1
            while m.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            while True:
                queued, ok_list, err_list = m.info_read()
                done = [(c, None) for c in ok_list] + [
                    (c, (code, msg)) for c, code, msg in err_list]
                for c, err in done:
                    i = by_handle[id(c)]
                    errors[i] = err
                    transfers[i].finish(err)
                    m.remove_handle(c)
                    c.close()
                    running -= 1
                if not queued:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("%d of %d transfers still running after %.0f s"
                                     % (running + len(specs) - nxt, len(specs),
                                        timeout * SLOW))
            if running:
                m.select(0.05)
    finally:
        m.close()
    return [t.r for t in transfers]


def h3_request_with(client, path, method="GET", setup=None, **kw):
    """client.request(path, method, setup=setup, **kw): setup(curl,
    transfer) runs just before perform, to set what the helpers do not
    cover (a header callback that records raw lines,
    CURLOPT_EXPECT_100_TIMEOUT_MS, ...). The options are reset on the
    client's next request."""
    return client.request(path, method, setup=setup, **kw)


# --------------------------------------------------------------------------
# HTTP/3 clients: ngtcp2's gtlsclient and Chromium

def gtlsclient_download(gw, paths, download_dir, timeout=60, extra=()):
    """Runs gtlsclient for paths on one connection, saving bodies under
    download_dir (file name = last path segment). Returns CompletedProcess."""
    require(os.access(GTLSCLIENT, os.X_OK),
            "gtlsclient (ngtcp2-client) is not installed (%s)" % GTLSCLIENT)
    os.makedirs(download_dir, exist_ok=True)
    cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--timeout=10s",
           "--download=%s" % download_dir] + list(extra) + [
               "127.0.0.1", str(gw.port)] + [gw.url(p) for p in paths]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout * SLOW)


def chromium_fetch(gw, path, workdir, timeout=90):
    """Loads gw.url(path) in headless Chromium forced onto QUIC for the
    gateway's origin. Returns (dom text, net-log JSON text, CompletedProcess)."""
    require(os.access(CHROMIUM, os.X_OK), "Chromium is not installed (%s)" % CHROMIUM)
    profile = os.path.join(workdir, "profile")
    os.makedirs(profile, exist_ok=True)
    netlog = os.path.join(workdir, "netlog.json")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
           "--user-data-dir=%s" % profile,
           "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
           "--enable-quic", "--origin-to-force-quic-on=localhost:%d" % gw.port,
           "--ignore-certificate-errors-spki-list=%s" % gw.certs.spki,
           "--log-net-log=%s" % netlog, "--net-log-capture-mode=Default",
           "--virtual-time-budget=5000",
           "--dump-dom", gw.url(path)]
    # Its own process group, so that a hung browser is killed with every
    # helper process it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError("Chromium did not finish within %ds:\n%s"
                             % (timeout, err.decode(errors="replace")[-3000:]))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # stray helpers, if any
        except ProcessLookupError:
            pass
    p = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    try:
        with open(netlog, errors="replace") as f:
            log = f.read()
    except FileNotFoundError:
        log = ""
    return p.stdout.decode(errors="replace"), log, p


_ids = itertools.count(1)


def uid():
    """A unique token for query strings, so a test can find its own
    request among the shared upstream's records."""
    return "%d-%d" % (os.getpid(), next(_ids))


def netlog_events(netlog_text):
    """(event type name, event) for each event of a --log-net-log file, or
    None when it cannot be read."""
    try:
        d = json.loads(netlog_text)
    except ValueError:
        # Chromium may be killed before it closes the JSON array.
        try:
            d = json.loads(netlog_text.rstrip().rstrip(",") + "]}")
        except ValueError:
            return None
    names = {v: k for k, v in d.get("constants", {}).get("logEventTypes", {}).items()}
    return [(names.get(e.get("type"), ""), e) for e in d.get("events", [])]


def netlog_quic_requests(netlog_text, port):
    """(authority, path) of every request Chromium sent over QUIC to
    localhost:port, from a --log-net-log file."""
    out = []
    for name, e in netlog_events(netlog_text) or []:
        if name != "HTTP_TRANSACTION_QUIC_SEND_REQUEST_HEADERS":
            continue
        hdrs = e.get("params", {}).get("headers", [])
        auth = [h.split(": ", 1)[1] for h in hdrs if h.startswith(":authority: ")]
        path = [h.split(": ", 1)[1] for h in hdrs if h.startswith(":path: ")]
        if auth and path and auth[0] == "localhost:%d" % port:
            out.append((auth[0], path[0]))
    return out


def netlog_quic_trouble(netlog_text, limit=20):
    """What went wrong with QUIC in a --log-net-log file, for assertion
    messages: closed sessions with their errors, failed alternative jobs,
    and origins marked broken."""
    events = netlog_events(netlog_text)
    if events is None:
        return ["(no readable net log)"]
    out = []
    for name, e in events:
        if ("CLOSE" in name and "QUIC" in name) or "BROKEN" in name or \
                ("QUIC" in name and "ERROR" in name) or \
                (name.startswith("HTTP_STREAM_JOB") and e.get("params", {}).get("net_error")):
            out.append("%s %s" % (name, json.dumps(e.get("params", {}))[:300]))
    return out[:limit]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()

