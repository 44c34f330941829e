"""Upstream groups and routes as the e2e tests drive them (docs/routes.md):
servers that identify themselves (idserver.py, one process each, so one can
be SIGKILLed and started again on its address), configuration files with
several `[upstream NAME]` and `[route NAME]` sections (repeated keys kept in
order), a gateway started from such a file, the labelled /metrics series,
the admin listener's /upstreams, and requests with a chosen Host."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from testenv.clients import H1Client, H2Client, H3Client
from testenv.gateway import SLOW, Gateway, GatewayFactory, render_ini

IDSERVER_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idserver.py")


# --------------------------------------------------------------------------
# servers

class IdServer:
    """idserver.py in a child process. The first start() takes the address
    it is given (port 0: the kernel's choice); later ones reuse the address
    it got, so the gateway's configuration stays true."""

    def __init__(self, ident, workdir, listen="127.0.0.1:0"):
        self.ident = ident
        self.listen = listen
        self.address = None
        self.log_path = os.path.join(workdir, "%s.requests.jsonl" % ident)
        # A file, not a pipe: a chatty server must never block on stderr.
        self.stderr_path = os.path.join(workdir, "%s.stderr" % ident)
        self.proc = None

    def spawn(self):
        assert self.proc is None or self.proc.poll() is not None, "%s runs" % self.ident
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, IDSERVER_PY, "--id", self.ident,
                 "--listen", self.address or self.listen, "--log", self.log_path],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
        return self

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_listening(self, timeout=10.0):
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("idserver %s did not start: %r %s" % (
                self.ident, line, self.stderr_text()[-2000:]))
        self.address = line.strip().split("listening on ", 1)[1]
        return self

    def start(self):
        return self.spawn().wait_listening()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, then wait until the process (and its sockets) is gone."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            self.proc.stdout.close()

    stop = kill

    def server_line(self, weight=None, backup=False):
        """The value of a `server =` line naming this server."""
        s = self.address
        if weight is not None:
            s += " weight=%d" % weight
        if backup:
            s += " backup"
        return s

    def records(self):
        """Every request head this server received (in all its lives)."""
        try:
            with open(self.log_path) as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def count(self, predicate=None):
        return sum(1 for r in self.records() if predicate is None or predicate(r))


class Fleet:
    """Named servers, started in parallel, killed together at the end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.servers = {}

    def add(self, *idents, listen="127.0.0.1:0"):
        made = []
        for ident in idents:
            assert ident not in self.servers, ident
            s = IdServer(ident, self.workdir, listen)
            self.servers[ident] = s
            made.append(s.spawn())
        for s in made:
            s.wait_listening()
        return made

    def __getitem__(self, ident):
        return self.servers[ident]

    def count(self, idents=None, predicate=None):
        """{ident: requests received} for idents (default: all)."""
        return {i: self.servers[i].count(predicate) for i in (idents or self.servers)}

    def total(self, idents=None, predicate=None):
        return sum(self.count(idents, predicate).values())

    def records(self, idents=None):
        out = []
        for i in idents or self.servers:
            out.extend(self.servers[i].records())
        return out

    def by_address(self):
        return {s.address: s.ident for s in self.servers.values()}

    def stop(self):
        for s in self.servers.values():
            s.kill()


def wait_until(predicate, timeout=10.0, what="condition", interval=0.02):
    """Polls predicate() until it returns something true; returns that."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# configuration

def group(name, servers, **keys):
    """An `[upstream NAME]` block. servers: `server =` values (strings or
    IdServers); keys: more keys (a list value repeats its key)."""
    items = [("server", s if isinstance(s, str) else s.server_line()) for s in servers]
    return ("upstream %s" % name if name else "upstream", items + _items(keys))


def route(name, upstream, host=None, path=None, **keys):
    """A `[route NAME]` block; a list value of keys repeats its key (e.g.
    add_request_header=["A: 1", "B: 2"])."""
    items = []
    if host is not None:
        items.append(("host", host))
    if path is not None:
        items.append(("path", path))
    if upstream is not None:
        items.append(("upstream", upstream))
    return ("route %s" % name, items + _items(keys))


def _items(keys):
    out = []
    for k, v in keys.items():
        for one in (v if isinstance(v, (list, tuple)) else [v]):
            out.append((k, str(one)))
    return out


def render_blocks(blocks):
    """INI text of [(section header, [(key, value)])], keys repeated as given."""
    lines = []
    for header, items in blocks:
        if lines:
            lines.append("")
        lines.append("[%s]" % header)
        lines.extend("%s = %s" % kv for kv in items)
    return "\n".join(lines) + "\n"


def block_line_of(text, header, key, nth=0):
    """1-based line of the nth `key =` line of section [header] in text."""
    cur, seen = None, 0
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            cur = s[1:-1].strip()
        elif cur == header and re.match(r"^%s\s*=" % re.escape(key), s):
            if seen == nth:
                return i
            seen += 1
    raise KeyError("[%s] %s (#%d) not in config" % (header, key, nth))


def section_line_of(text, header):
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip() == "[%s]" % header:
            return i
    raise KeyError("[%s] not in config" % header)


class RoutedGateway(Gateway):
    """A gateway whose file has [upstream NAME] and [route NAME] blocks
    after the usual single sections (server, listener, tcp, ...). Without
    blocks it is the legacy file: one unnamed [upstream]."""

    def __init__(self, workdir, certs, blocks, overrides=None, name="gw"):
        self.blocks = list(blocks)
        legacy = not any(h.startswith("upstream") for h, _ in self.blocks)
        super().__init__(workdir, certs, "127.0.0.1:9", overrides, name=name)
        if not legacy or "upstream" not in (overrides or {}):
            self.config.pop("upstream", None)
        self.write_config()

    def config_text(self):
        text = render_ini(self.config)
        if getattr(self, "blocks", None):
            text += "\n" + render_blocks(self.blocks)
        return text

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write(self.config_text())

    # ---- observation -------------------------------------------------------

    def series(self):
        """The /metrics text as Series (labelled samples)."""
        status, body = self.admin_get("/metrics")
        assert status == 200, "GET /metrics: %d %s" % (status, body[:200])
        return Series(body)

    def wait_series(self, predicate, timeout=5.0, what="metrics condition"):
        last = []

        def check():
            s = self.series()
            last[:] = [s]
            return s if predicate(s) else None
        try:
            return wait_until(check, timeout, what, interval=0.05)
        except AssertionError as e:
            raise AssertionError("%s: %s; labelled series now:\n%s" % (
                self.name, e, last[0].text_of("h3gate_upstream_server_up")
                + last[0].text_of("h3gate_route_") if last else ""))

    def upstreams(self):
        """GET /upstreams on the admin listener, parsed."""
        status, body = self.admin_get("/upstreams")
        assert status == 200, "GET /upstreams: %d %s" % (status, body[:300])
        return json.loads(body)


class RoutedFactory(GatewayFactory):
    """routed(blocks, overrides=None, name=None, start=True) -> RoutedGateway;
    every gateway made is stopped at teardown as GatewayFactory does."""

    def __init__(self, tmp_factory, certs):
        super().__init__(tmp_factory, certs, lambda: None)

    def __call__(self, blocks=(), overrides=None, start=True, name=None):
        name = name or "rgw%d" % (len(self.made) + 1)
        workdir = str(self.tmp_factory.mktemp(name))
        gw = RoutedGateway(workdir, self.certs, blocks, overrides, name=name)
        self.made.append(gw)
        if start:
            gw.start()
        return gw


# --------------------------------------------------------------------------
# labelled metrics

SAMPLE_RE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Series:
    """Samples of a Prometheus text page: name, labels and value."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = SAMPLE_RE.match(line)
            if not m:
                continue
            labels = {k: re.sub(r"\\(.)", r"\1", v)
                      for k, v in LABEL_RE.findall(m.group(2) or "")}
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def find(self, name, **labels):
        """[(labels, value)] of the samples of name whose labels include
        the given ones."""
        if not name.startswith("h3gate_"):
            name = "h3gate_" + name
        return [(l, v) for n, l, v in self.samples if n == name
                and all(l.get(k) == str(x) for k, x in labels.items())]

    def get(self, name, **labels):
        """The value of the one sample of name with these labels; None when
        there is none (several is an error)."""
        found = self.find(name, **labels)
        assert len(found) <= 1, "%d samples of %s%s: %s" % (len(found), name, labels, found)
        return found[0][1] if found else None

    def sum(self, name, **labels):
        return sum(v for _, v in self.find(name, **labels))

    def text_of(self, prefix):
        return "".join(line + "\n" for line in self.text.splitlines()
                       if line.startswith(prefix))


# --------------------------------------------------------------------------
# requests with a chosen Host, over each front end

PROTOS = ("h3", "h2", "http/1.1")
PROTO_VERSION = {"h3": 30, "h2": 2, "http/1.1": 2}


class HostClients:
    """One libcurl client per protocol of one gateway; get(proto, host,
    path) sends Host: host (libcurl makes it :authority on HTTP/2 and
    HTTP/3) to the gateway's own address, so TLS still verifies
    "localhost"."""

    def __init__(self, gw):
        self.gw = gw
        self.clients = {}

    def client(self, proto):
        if proto not in self.clients:
            self.clients[proto] = {"h3": H3Client, "h2": H2Client,
                                   "http/1.1": H1Client}[proto](self.gw)
        return self.clients[proto]

    def request(self, proto, host, path, method="GET", headers=(), as_is=False, **kw):
        hdrs = list(headers)
        if host is not None:
            hdrs.append("Host: %s" % host)
        setup = None
        if as_is:
            def setup(c, t):
                import pycurl
                c.setopt(pycurl.PATH_AS_IS, 1)
        return self.client(proto).request(path, method, headers=hdrs, setup=setup, **kw)

    def get(self, proto, host, path, **kw):
        return self.request(proto, host, path, **kw)

    def close(self):
        for c in self.clients.values():
            c.close()
        self.clients.clear()


def served_by(r):
    """The X-Upstream-Id of a response (None when no upstream answered)."""
    return r.header("x-upstream-id")


def cleanup_dir(path):
    if not os.environ.get("H3GATE_KEEP"):
        shutil.rmtree(path, ignore_errors=True)
