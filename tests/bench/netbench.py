#!/usr/bin/python3
"""HTTP/3 vs HTTP/2 vs HTTP/1.1 through h3gate over emulated bad links:
prints figures, asserts nothing.

Each link (RTT, random loss each way, optional rate limit) is a pair of
network namespaces joined by tests/e2e/testenv/netem.py (a delay relay,
nftables loss, tbf). The real gateway and the origin (tests/e2e/upstream.py,
the scripted upstream) run in the server namespace, clients in the client
namespace, so every byte between client and gateway crosses the link.

  /usr/bin/python3 tests/bench/netbench.py [--quick] [--rtt 40,100]
      [--loss 0,1,2,5] [--rate none,20,100] [--proto h3-cubic,h3-bbr,...]
      [--workload page,page-prio,down,up,ttfb] [--reps 5] [--json FILE]
      [--bin build/h3gate] [--gw-set listener.stream_buffer_size=1MiB]
      [--calibrate]

Protocols (all through h3gate; the TCP ones over its HTTPS fallback):
  h3-cubic, h3-bbr, h3-default  libcurl HTTP/3; the gateway's
                                [listener] congestion_control = cubic / bbr
                                / not set (the binary's default)
  h2-bbr, h2-cubic              libcurl HTTP/2, one TCP connection
  h1x6-bbr, h1x6-cubic          libcurl HTTP/1.1, up to six connections
  gtls-cubic, gtls-bbr          ngtcp2's gtlsclient (HTTP/3, another
                                client stack) with --cc cubic / bbr,
                                against the cubic / bbr gateway: page,
                                down, up
For TCP the congestion control is set per route (`ip route ... congctl`)
in both namespaces, so it applies to both directions; the route wins over
the listening socket's, so h3gate's own [tcp] congestion_control does not
change these labels (`ss -tin` in the server namespace shows it). libcurl's QUIC stack
(the sender of its HTTP/3 uploads) always uses cubic, whatever the label.

Workloads (every body checked byte-exact: length and SHA-256):
  page       an HTML document (20 KiB), then, once it has arrived, 60
             subresources at once: 10 CSS + 30 JS of 10 KiB, 15 images of
             100 KiB, 5 images of 1 MiB; multiplexed on one connection
             (HTTP/2, HTTP/3) or over six (HTTP/1.1, as browsers do).
             Page time runs from the start of connection setup (handshake
             included) to the last byte; resource times are completion
             times from that same start.
  page-prio  the same with the RFC 9218 `priority` request fields a
             browser sends, loosely after Chromium's mapping of its request
             priorities (HIGHEST u=0, MEDIUM u=1, LOW u=2, IDLE u=4;
             images incremental):
               HTML "u=0, i"; CSS "u=0"; JS "u=1";
               100 KiB images (in view) "u=2, i"; 1 MiB images (below the
               fold) "u=4, i"
  down       one 20 MiB GET
  up         one 20 MiB POST to /sink (the origin hashes what it got)
  ttfb       time to the first response byte (handshake included) of a
             first visit (full handshake), then of a repeat visit on a new
             connection (session resumption; 0-RTT for HTTP/3, which the
             TCP listener never accepts)
gtlsclient requests the whole page at once (HTML and subresources together)
and is timed from its process start to its exit: an independent check of
the page time, not a like-for-like figure.

Every transfer has a time limit (--timeout); one that runs out is reported
as failed, never waited for. --quick: one rep of page, down and up over
h3-bbr (libcurl; page and down), gtls-bbr and h2-bbr on one link (40 ms,
2% loss, 100 Mbit/s), as the e2e correctness check (test_40_lossy_link.py)
runs it. Exit status: 0, or 1 when a transfer failed (wrong bytes, error,
time limit), or 2 when no link can be emulated here.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
E2E = os.path.join(SRC, "tests", "e2e")
sys.path.insert(0, E2E)

from testenv import netem  # noqa: E402
from upstream import KiB, MiB, PatternReader, expected_sha256  # noqa: E402

PYTHON = "/usr/bin/python3"
GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
ORIGIN_PORT = 8080
# One gateway per QUIC congestion control; the TCP listener shares the port.
GW_PORT = {"cubic": 4433, "bbr": 4434, "default": 4435}
ADMIN_PORT = {"cubic": 9901, "bbr": 9902, "default": 9903}

# name: (client, congestion control: the gateway's for QUIC, the route's for TCP)
PROTOS = {
    "h3-cubic": ("h3", "cubic"),
    "h3-bbr": ("h3", "bbr"),
    "h3-default": ("h3", "default"),
    "h2-bbr": ("h2", "bbr"),
    "h2-cubic": ("h2", "cubic"),
    "h1x6-bbr": ("h1", "bbr"),
    "h1x6-cubic": ("h1", "cubic"),
    "gtls-cubic": ("gtls", "cubic"),
    "gtls-bbr": ("gtls", "bbr"),
}
WORKLOADS = ("page", "page-prio", "down", "up", "ttfb")
GTLS_WORKLOADS = ("page", "down", "up")
BASELINE = "h2-bbr"
BULK = 20 * MiB
TTFB_SIZE = 1 * KiB

HTML = ("index.html", 20 * KiB, "u=0, i")


def page_resources():
    """(name, size, priority field) of the 60 subresources, in document
    order."""
    res = [("css%d.css" % i, 10 * KiB, "u=0") for i in range(10)]
    res += [("js%d.js" % i, 10 * KiB, "u=1") for i in range(30)]
    res += [("img%d.jpg" % i, 100 * KiB, "u=2, i") for i in range(15)]
    res += [("big%d.jpg" % i, 1 * MiB, "u=4, i") for i in range(5)]
    return res


def res_path(name, size):
    # The origin's /bytes/N serves N pattern bytes and ignores further path
    # segments: the last one names the resource (and gtlsclient's file).
    return "/bytes/%d/%s" % (size, name)


# --------------------------------------------------------------------------
# the client side: `netbench.py --worker JOB` runs inside the client
# namespace and prints one JSON result

def _curl_consts():
    import pycurl
    return {
        "h3": getattr(pycurl, "CURL_HTTP_VERSION_3ONLY", 31),
        "h2": getattr(pycurl, "CURL_HTTP_VERSION_2TLS", 4),
        "h1": getattr(pycurl, "CURL_HTTP_VERSION_1_1", 2),
    }


class _Xfer:
    """One easy handle whose body is hashed as it arrives."""

    def __init__(self, job, path, size, prio=None, body=None):
        import pycurl
        self.c = c = pycurl.Curl()
        self.name = path.rsplit("/", 1)[-1]
        self.size = size
        self.sha = hashlib.sha256()
        self.n = 0
        self.t_add = None
        self.t_done = None
        self.t_first = None
        self.error = None
        self.body = b""
        self.limit = job["timeout"]
        url = "https://localhost:%d%s" % (job["port"], path)
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.HTTP_VERSION, _curl_consts()[job["client"]])
        c.setopt(pycurl.CAINFO, job["ca"])
        c.setopt(pycurl.CAPATH, None)
        c.setopt(pycurl.SSL_VERIFYPEER, 1)
        c.setopt(pycurl.SSL_VERIFYHOST, 2)
        c.setopt(pycurl.RESOLVE, ["localhost:%d:%s" % (job["port"], job["host"])])
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.TIMEOUT_MS, int(job["timeout"] * 1000))
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(min(job["timeout"], 30) * 1000))
        c.setopt(pycurl.WRITEFUNCTION, self._write)
        hdrs = ["Expect:"]
        if prio:
            hdrs.append("priority: %s" % prio)
        c.setopt(pycurl.HTTPHEADER, hdrs)
        if job["client"] != "h1":
            c.setopt(pycurl.PIPEWAIT, 1)
        if body is not None:
            reader = PatternReader(body)
            c.setopt(pycurl.POST, 1)
            c.setopt(pycurl.READFUNCTION, reader.read)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, body)

    def _write(self, data):
        if self.t_first is None:
            self.t_first = time.monotonic()
        self.sha.update(data)
        self.n += len(data)
        if len(self.body) < 4096:
            self.body += data[:4096 - len(self.body)]

    def check(self):
        """None if the body is the expected one, else what is wrong."""
        import pycurl
        if self.error and self.error[0] in (28, -1):
            return "timed out (limit %g s)" % self.limit
        if self.error:
            return "curl error %s: %s" % self.error
        status = self.c.getinfo(pycurl.RESPONSE_CODE)
        if status != 200:
            return "status %d" % status
        if self.n != self.size:
            return "%d bytes, want %d" % (self.n, self.size)
        if self.sha.hexdigest() != expected_sha256(self.size):
            return "SHA-256 differs"
        return None

    def version(self):
        import pycurl
        v = self.c.getinfo(pycurl.INFO_HTTP_VERSION)
        return {2: "http/1.1", 3: "h2", 30: "h3"}.get(v, str(v))


def _run_multi(m, xfers, deadline):
    """Drives m until every transfer of xfers finished or deadline passed;
    stamps t_done and error on each."""
    import pycurl
    by_id = {id(x.c): x for x in xfers}
    pending = len(xfers)
    while pending:
        while True:
            ret, _ = m.perform()
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                break
        while True:
            queued, ok, bad = m.info_read()
            now = time.monotonic()
            for c in ok:
                by_id[id(c)].t_done = now
                pending -= 1
            for c, code, msg in bad:
                x = by_id[id(c)]
                x.t_done, x.error = now, (code, msg)
                pending -= 1
            if not queued:
                break
        if not pending:
            break
        if time.monotonic() > deadline:
            for x in xfers:
                if x.t_done is None:
                    x.t_done, x.error = time.monotonic(), (-1, "benchmark deadline")
            break
        m.select(0.01)


def worker_page(job):
    import pycurl
    m = pycurl.CurlMulti()
    if job["client"] == "h1":
        m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 6)
    else:
        m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
    prio = job.get("prio")
    deadline = time.monotonic() + job["timeout"] + 5
    t0 = time.monotonic()
    html = _Xfer(job, res_path(HTML[0], HTML[1]), HTML[1], HTML[2] if prio else None)
    m.add_handle(html.c)
    html.t_add = t0
    _run_multi(m, [html], deadline)
    subs = []
    if html.error is None:
        for name, size, pri in page_resources():
            x = _Xfer(job, res_path(name, size), size, pri if prio else None)
            subs.append(x)
        t_sub = time.monotonic()
        for x in subs:
            x.t_add = t_sub
            m.add_handle(x.c)
        _run_multi(m, subs, deadline)
    errors = []
    conns = 0
    versions = set()
    out = []
    for x in [html] + subs:
        e = x.check()
        if e:
            errors.append("%s: %s" % (x.name, e))
        conns += x.c.getinfo(pycurl.NUM_CONNECTS)
        versions.add(x.version())
        out.append({"name": x.name, "size": x.size, "done_ms": (x.t_done - t0) * 1000,
                    "error": e})
        m.remove_handle(x.c)
        x.c.close()
    m.close()
    end = max(x.t_done for x in [html] + subs)
    return {"ok": not errors and len(subs) == 60, "page_ms": (end - t0) * 1000,
            "html_ms": (html.t_done - t0) * 1000, "resources": out[1:],
            "errors": errors[:5], "nerrors": len(errors), "conns": conns,
            "versions": sorted(versions)}


def worker_bulk(job, up):
    import pycurl
    if up:
        x = _Xfer(job, "/sink", 0, body=BULK)
    else:
        x = _Xfer(job, res_path("bulk.bin", BULK), BULK)
    t0 = time.monotonic()
    try:
        x.c.perform()
    except pycurl.error as e:
        x.error = (e.args[0], e.args[1] if len(e.args) > 1 else "")
    dt = time.monotonic() - t0
    if up:
        err = None
        if x.error:
            err = x.check()
        else:
            try:
                got = json.loads(x.body)
                if got.get("len") != BULK or got.get("sha256") != expected_sha256(BULK):
                    err = "origin got %s bytes, sha %s" % (got.get("len"), got.get("sha256"))
            except ValueError:
                err = "status %d, body %r" % (x.c.getinfo(pycurl.RESPONSE_CODE), x.body[:80])
    else:
        err = x.check()
    v = x.version()
    x.c.close()
    return {"ok": err is None, "time_ms": dt * 1000, "mbit": BULK * 8 / dt / 1e6,
            "errors": [err] if err else [], "versions": [v]}


def worker_ttfb(job):
    import pycurl
    out = {"ok": True, "errors": []}
    c = None
    for visit in ("first", "repeat"):
        x = _Xfer(job, res_path("ttfb%s.bin" % visit, TTFB_SIZE), TTFB_SIZE)
        if c is None:
            c = x.c
        else:
            # The same handle keeps its TLS session cache: a new connection
            # resumes (and sends 0-RTT where the protocol allows it).
            x.c.close()
            x.c = c
            c.setopt(pycurl.WRITEFUNCTION, x._write)
            c.setopt(pycurl.URL, "https://localhost:%d%s" % (
                job["port"], res_path("ttfb%s.bin" % visit, TTFB_SIZE)))
            c.setopt(pycurl.FRESH_CONNECT, 1)
        if job["client"] == "h3":
            c.setopt(pycurl.SSL_OPTIONS, 64)   # CURLSSLOPT_EARLYDATA
        t0 = time.monotonic()
        try:
            c.perform()
        except pycurl.error as e:
            x.error = (e.args[0], e.args[1] if len(e.args) > 1 else "")
        err = x.check()
        if err:
            out["ok"] = False
            out["errors"].append("%s: %s" % (visit, err))
        out[visit + "_ms"] = ((x.t_first or time.monotonic()) - t0) * 1000
        out[visit + "_connect_ms"] = c.getinfo(pycurl.APPCONNECT_TIME) * 1000
        out[visit + "_conns"] = c.getinfo(pycurl.NUM_CONNECTS)
        out["versions"] = [x.version()]
        # Let the session ticket arrive before the repeat visit (untimed).
        time.sleep(job["rtt_ms"] / 1000 * 2 + 0.1)
    c.close()
    return out


def worker_gtls(job, workload):
    """gtlsclient on one connection, timed from process start to exit."""
    d = tempfile.mkdtemp(prefix="netbench-gtls-")
    try:
        extra = []
        if workload == "page":
            items = [HTML[:2]] + [r[:2] for r in page_resources()]
            paths = [res_path(n, s) for n, s in items]
        elif workload == "down":
            items = [("bulk.bin", BULK)]
            paths = [res_path("bulk.bin", BULK)]
        else:
            data = os.path.join(d, "upload.bin")
            with open(data, "wb") as f:
                r = PatternReader(BULK)
                while True:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    f.write(b)
            items = []
            paths = ["/sink"]
            extra = ["--data=%s" % data, "--http-method=POST"]
        dl = os.path.join(d, "dl")
        os.makedirs(dl)
        if job.get("cc") in ("cubic", "bbr"):
            extra.append("--cc=%s" % job["cc"])
        cmd = [GTLSCLIENT, "--exit-on-all-streams-close", "-q", "--no-quic-dump",
               "--no-http-dump", "--timeout=%ds" % max(10, int(job["timeout"])),
               "--download=%s" % dl] + extra + [
            job["host"], str(job["port"])] + [
            "https://localhost:%d%s" % (job["port"], p) for p in paths]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=job["timeout"] + 5)
            rc, err = p.returncode, p.stderr.decode(errors="replace")[-300:]
        except subprocess.TimeoutExpired:
            rc, err = -1, "timed out"
        dt = time.monotonic() - t0
        errors = []
        if rc != 0:
            errors.append("gtlsclient exit %s: %s" % (rc, err))
        for name, size in items:
            f = os.path.join(dl, name)
            if not os.path.isfile(f):
                errors.append("%s: missing" % name)
                continue
            h = hashlib.sha256()
            with open(f, "rb") as g:
                for b in iter(lambda: g.read(1 << 20), b""):
                    h.update(b)
            if os.path.getsize(f) != size or h.hexdigest() != expected_sha256(size):
                errors.append("%s: %d bytes or SHA-256 differ" % (name, os.path.getsize(f)))
        if workload == "up" and rc == 0:
            f = os.path.join(dl, "sink")
            try:
                with open(f) as g:
                    got = json.load(g)
                if got.get("len") != BULK or got.get("sha256") != expected_sha256(BULK):
                    errors.append("origin got %s bytes" % got.get("len"))
            except (OSError, ValueError) as e:
                errors.append("sink answer: %s" % e)
        res = {"ok": not errors, "errors": errors[:5], "nerrors": len(errors),
               "versions": ["h3"]}
        if workload == "page":
            res["page_ms"] = dt * 1000
        else:
            res["time_ms"] = dt * 1000
            res["mbit"] = BULK * 8 / dt / 1e6
        return res
    finally:
        shutil.rmtree(d, ignore_errors=True)


def worker_main(spec):
    job = json.loads(spec)
    w = job["workload"]
    if job["client"] == "gtls":
        res = worker_gtls(job, w)
    elif w in ("page", "page-prio"):
        job["prio"] = w == "page-prio"
        res = worker_page(job)
    elif w in ("down", "up"):
        res = worker_bulk(job, w == "up")
    elif w == "ttfb":
        res = worker_ttfb(job)
    else:
        raise SystemExit("unknown workload %s" % w)
    print(json.dumps(res))
    return 0


# --------------------------------------------------------------------------
# the server side: origin and gateways in the server namespace

class ServerSide:
    """The origin and one gateway per QUIC congestion control needed, in
    link's server namespace."""

    def __init__(self, link, binary, work, ccs, gw_set=(), qlog_dir=None):
        self.link = link
        self.binary = binary
        self.work = work
        self.ccs = ccs
        self.gw_set = gw_set
        self.qlog_dir = qlog_dir
        self.gws = {}
        self.origin = None

    def start(self):
        self.origin = self.link.popen(
            netem.SERVER, [PYTHON, os.path.join(E2E, "upstream.py"), "--port",
                           str(ORIGIN_PORT)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.origin.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("origin did not start: %r" % line)
        for cc in self.ccs:
            self.gws[cc] = self._start_gw(cc)
        return self

    def _ini(self, cc):
        sections = {
            "server": {"log_level": "info", "access_log": "off",
                       "admin": "127.0.0.1:%d" % ADMIN_PORT[cc]},
            "listener": {"address": "0.0.0.0", "port": str(GW_PORT[cc]),
                         "cert": os.path.join(self.work, "server-chain.crt"),
                         "key": os.path.join(self.work, "server.key")},
            "upstream": {"server": "127.0.0.1:%d" % ORIGIN_PORT},
        }
        if cc != "default":
            sections["listener"]["congestion_control"] = cc
        if self.qlog_dir:
            d = os.path.join(self.qlog_dir, cc)
            os.makedirs(d, exist_ok=True)
            sections.setdefault("debug", {})["qlog_dir"] = d
        for item in self.gw_set:
            key, _, value = item.partition("=")
            sec, _, k = key.partition(".")
            sections.setdefault(sec, {})[k] = value
        lines = []
        for sec, kv in sections.items():
            lines.append("[%s]" % sec)
            lines += ["%s = %s" % (k, v) for k, v in kv.items()]
        return "\n".join(lines) + "\n"

    def _start_gw(self, cc):
        ini = os.path.join(self.work, "gw-%s.ini" % cc)
        with open(ini, "w") as f:
            f.write(self._ini(cc))
        errpath = os.path.join(self.work, "gw-%s.stderr" % cc)
        err = open(errpath, "wb")
        p = self.link.popen(netem.SERVER, [self.binary, "-c", ini], stdout=subprocess.DEVNULL,
                            stderr=err)
        err.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(errpath, errors="replace") as f:
                text = f.read()
            if " ready: " in text:
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("gateway (%s) did not start:\n%s" % (cc, text[-2000:]))

    def port(self, cc):
        return GW_PORT[cc]

    def tcp_port(self):
        return GW_PORT[next(iter(self.gws))]

    def metrics(self, cc):
        code = ("import sys, urllib.request\n"
                "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
        p = self.link.run(netem.SERVER, [PYTHON, "-c", code,
                                         "http://127.0.0.1:%d/metrics" % ADMIN_PORT[cc]],
                          check=False, timeout=20)
        out = {}
        for line in p.stdout.splitlines():
            if line and not line.startswith("#"):
                name, _, v = line.partition(" ")
                try:
                    out[name.replace("h3gate_", "", 1)] = float(v.split()[0])
                except (ValueError, IndexError):
                    pass
        return out

    def peak_rss_kib(self):
        """{cc: the gateway's peak resident size so far (VmHWM), KiB}. (`ip
        netns exec` execs the gateway: its pid is the Popen's.)"""
        out = {}
        for cc, p in self.gws.items():
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            out[cc] = int(line.split()[1])
            except OSError:
                pass
        return out

    def stop(self):
        """SIGTERM to each gateway; returns {cc: exit status}."""
        codes = {}
        for cc, p in self.gws.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for cc, p in self.gws.items():
            try:
                codes[cc] = p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[cc] = p.wait(5)
        if self.origin is not None and self.origin.poll() is None:
            self.origin.terminate()
            try:
                self.origin.wait(5)
            except subprocess.TimeoutExpired:
                self.origin.kill()
        return codes


def origin_check(link):
    """The origin alone, on the server's loopback: a 20 MiB GET and the
    page's 60 subresources over six connections, to show it is not what
    limits a link."""
    code = r'''
import http.client, sys, time, threading
port = int(sys.argv[1]); n = int(sys.argv[2])
def get(path):
    c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", path)
    r = c.getresponse(); k = 0
    while True:
        b = r.read(1 << 20)
        if not b: break
        k += len(b)
    c.close(); return k
t = time.monotonic(); k = get("/bytes/%d/x" % n); dt = time.monotonic() - t
print("%.0f" % (k * 8 / dt / 1e6))
'''
    p = link.run(netem.SERVER, [PYTHON, "-c", code, str(ORIGIN_PORT), str(BULK)],
                 check=False, timeout=60)
    return p.stdout.strip() or p.stderr.strip()[-200:]


# --------------------------------------------------------------------------
# orchestration

def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def run_job(link, job, timeout):
    argv = [PYTHON, os.path.abspath(__file__), "--worker", json.dumps(job)]
    try:
        p = link.run(netem.CLIENT, argv, check=False, timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        return {"ok": False, "errors": ["worker did not finish (killed)"], "timeout": True}
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"ok": False, "errors": ["worker exit %d: %s" % (p.returncode,
                                                                 p.stderr[-400:])]}
    return json.loads(lines[-1])


def summarize(workload, reps):
    ok = [r for r in reps if r.get("ok")]
    s = {"reps": len(reps), "failed": len(reps) - len(ok)}
    if workload in ("page", "page-prio"):
        s["page_ms"] = [r["page_ms"] for r in ok if "page_ms" in r]
        res = [x["done_ms"] for r in ok for x in r.get("resources", [])]
        small = [x["done_ms"] for r in ok for x in r.get("resources", [])
                 if x["size"] == 10 * KiB]
        s.update(page_med=pct(s["page_ms"], 0.5), page_p90=pct(s["page_ms"], 0.9),
                 res_med=pct(res, 0.5), res_p90=pct(res, 0.9), small_med=pct(small, 0.5))
    elif workload in ("down", "up"):
        t = [r["time_ms"] for r in ok]
        s.update(time_med=pct(t, 0.5), time_p90=pct(t, 0.9),
                 mbit_med=pct([r["mbit"] for r in ok], 0.5))
    elif workload == "ttfb":
        f = [r["first_ms"] for r in ok]
        rp = [r["repeat_ms"] for r in ok]
        s.update(first_med=pct(f, 0.5), first_p90=pct(f, 0.9), repeat_med=pct(rp, 0.5),
                 repeat_p90=pct(rp, 0.9))
        s["early_data_accepted"] = sum(r.get("early_data_accepted", 0) for r in reps)
    s["errors"] = [e for r in reps for e in r.get("errors", [])][:3]
    return s


def fmt(v, unit=""):
    return "-" if v is None else "%.0f%s" % (v, unit)


def ratio(v, base):
    if v is None or not base:
        return "-"
    return "%.2f" % (v / base)


def print_link_report(link_desc, results, protos, workloads, reps, out=print):
    out("")
    out("=" * 100)
    out("%s; %d rep(s) each; times in ms, ratio = this / %s" % (link_desc, reps, BASELINE))
    for w in workloads:
        rows = [(p, results.get((p, w))) for p in protos if results.get((p, w))]
        if not rows:
            continue
        base = results.get((BASELINE, w))
        out("")
        if w in ("page", "page-prio"):
            out("%s: HTML 20 KiB, then 60 subresources (40 x 10 KiB, 15 x 100 KiB, "
                "5 x 1 MiB)%s" % (w, " with priority fields" if w == "page-prio" else ""))
            out("  %-11s %8s %8s %6s | %8s %8s %9s | %s" % (
                "proto", "page med", "p90", "ratio", "res med", "res p90", "small med",
                "failed"))
            for p, s in rows:
                out("  %-11s %8s %8s %6s | %8s %8s %9s | %d/%d %s" % (
                    p, fmt(s.get("page_med")), fmt(s.get("page_p90")),
                    ratio(s.get("page_med"), base and base.get("page_med")),
                    fmt(s.get("res_med")), fmt(s.get("res_p90")), fmt(s.get("small_med")),
                    s["failed"], s["reps"], "; ".join(s["errors"])[:120]))
        elif w in ("down", "up"):
            out("%s: one 20 MiB %s" % (w, "GET" if w == "down" else "POST (origin hashes it)"))
            out("  %-11s %8s %8s %6s %9s | %s" % ("proto", "time med", "p90", "ratio",
                                                   "Mbit/s", "failed"))
            for p, s in rows:
                out("  %-11s %8s %8s %6s %9s | %d/%d %s" % (
                    p, fmt(s.get("time_med")), fmt(s.get("time_p90")),
                    ratio(s.get("time_med"), base and base.get("time_med")),
                    "-" if s.get("mbit_med") is None else "%.1f" % s["mbit_med"],
                    s["failed"], s["reps"], "; ".join(s["errors"])[:120]))
        elif w == "ttfb":
            out("ttfb: time to first byte of a 1 KiB GET on a new connection, first visit "
                "(full handshake) and repeat visit (resumption; 0-RTT on HTTP/3)")
            out("  %-11s %9s %8s %6s | %10s %8s %6s | %5s | %s" % (
                "proto", "first med", "p90", "ratio", "repeat med", "p90", "ratio",
                "0-RTT", "failed"))
            for p, s in rows:
                out("  %-11s %9s %8s %6s | %10s %8s %6s | %5s | %d/%d %s" % (
                    p, fmt(s.get("first_med")), fmt(s.get("first_p90")),
                    ratio(s.get("first_med"), base and base.get("first_med")),
                    fmt(s.get("repeat_med")), fmt(s.get("repeat_p90")),
                    ratio(s.get("repeat_med"), base and base.get("repeat_med")),
                    s.get("early_data_accepted", "-") if PROTOS[p][0] == "h3" else "-",
                    s["failed"], s["reps"], "; ".join(s["errors"])[:120]))


def parse_list(text, allowed=None, conv=str):
    items = [x.strip() for x in text.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise SystemExit("unknown: %s (choose from %s)" % (", ".join(bad),
                                                               ", ".join(allowed)))
    return [conv(x) for x in items]


def rate_conv(x):
    return None if x.lower() in ("none", "0", "no") else float(x)


def run_link(args, rtt, loss, rate, work, out, progress):
    """Runs every selected protocol and workload over one link; returns its
    description, {(proto, workload): summary}, the raw results and what the
    link and gateways saw (exit statuses, peak RSS, loss counters)."""
    protos, workloads = args.proto, args.workload
    ccs = []
    for p in protos:
        client, cc = PROTOS[p]
        want = cc if client in ("h3", "gtls") else None
        if want and want not in ccs:
            ccs.append(want)
    if not ccs:
        ccs = ["cubic"]   # the TCP protocols only need some gateway
    raw = {}
    # What the link and the gateways saw: each gateway's exit status and
    # peak RSS, and the loss rule's counters.
    seen = {"gateways": {}, "loss_counters": None}
    gateways = seen["gateways"]
    with netem.Link(rtt, loss, rate) as link:
        desc = link.describe()
        progress("link up: %s (%s)" % (desc, link.tag))
        srv = ServerSide(link, args.bin, work, ccs, args.gw_set, args.qlog).start()
        try:
            if args.origin_check:
                progress("origin alone (server loopback), 20 MiB GET: %s Mbit/s"
                         % origin_check(link))
            for w in workloads:
                for rep in range(args.reps):
                    for p in protos:
                        client, cc = PROTOS[p]
                        if client == "gtls" and w not in GTLS_WORKLOADS:
                            continue
                        if "%s:%s" % (p, w) in args.skip:
                            continue
                        if client in ("h2", "h1"):
                            link.set_tcp_cc(cc)
                            port = srv.tcp_port()
                            gw_cc = next(iter(srv.gws))
                        else:
                            port = srv.port(cc)
                            gw_cc = cc
                        job = {"workload": w, "client": client, "port": port,
                               "host": link.addr[netem.SERVER],
                               "ca": os.path.join(work, "ca.crt"),
                               "timeout": args.timeout, "rtt_ms": rtt, "cc": cc}
                        m0 = srv.metrics(gw_cc) if w == "ttfb" and client == "h3" else None
                        r = run_job(link, job, args.timeout)
                        if m0 is not None:
                            m1 = srv.metrics(gw_cc)
                            r["early_data_accepted"] = int(
                                m1.get("quic_early_data_accepted", 0)
                                - m0.get("quic_early_data_accepted", 0))
                        raw.setdefault((p, w), []).append(r)
                        progress("  %-10s %-9s rep %d: %s" % (p, w, rep + 1, brief(w, r)))
        finally:
            peaks = srv.peak_rss_kib()
            codes = srv.stop()
            for cc, code in codes.items():
                gateways[cc] = {"exit": code, "vmhwm_kib": peaks.get(cc)}
                if code != 0:
                    progress("gateway (%s) exited %s" % (cc, code))
            progress("gateway peak RSS (VmHWM): %s" % ", ".join(
                "%s %s KiB" % (cc, kib) for cc, kib in sorted(peaks.items())))
            ls = link.loss_counters()
            seen["loss_counters"] = ls
            progress("link counters (arrived, dropped by the loss rule): %s; tbf drops %s"
                     % (ls, link.shaper_drops()))
    results = {k: summarize(k[1], v) for k, v in raw.items()}
    print_link_report(desc, results, protos, workloads, args.reps, out)
    return desc, results, raw, seen


def brief(w, r):
    if not r.get("ok"):
        return "FAILED %s" % "; ".join(r.get("errors", []))[:200]
    if "page_ms" in r and "html_ms" not in r:
        return "page %.0f ms (gtlsclient process)" % r["page_ms"]
    if "page_ms" in r:
        return "page %.0f ms (html %.0f ms, %s conns, %s)" % (
            r["page_ms"], r.get("html_ms", 0), r.get("conns", "?"),
            ",".join(r.get("versions", [])))
    if "mbit" in r:
        return "%.0f ms, %.1f Mbit/s (%s)" % (r["time_ms"], r["mbit"],
                                            ",".join(r.get("versions", [])))
    if "first_ms" in r:
        return "first %.0f ms, repeat %.0f ms, 0-RTT accepted %s" % (
            r["first_ms"], r["repeat_ms"], r.get("early_data_accepted", "-"))
    return json.dumps(r)[:200]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--bin", default=os.environ.get("H3GATE_BIN")
                    or os.path.join(SRC, "build", "h3gate"))
    ap.add_argument("--rtt", default="40,100", help="ms, comma-separated")
    ap.add_argument("--loss", default="0,1,2,5", help="%% each way, comma-separated")
    ap.add_argument("--rate", default="none,20,100", help="Mbit/s or none, comma-separated")
    ap.add_argument("--proto", default="h3-cubic,h3-bbr,h2-bbr,h2-cubic,h1x6-bbr",
                    help="from: %s" % ", ".join(PROTOS))
    ap.add_argument("--workload", default="page,page-prio,down,up,ttfb",
                    help="from: %s" % ", ".join(WORKLOADS))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip", action="append", default=[], metavar="PROTO:WORKLOAD",
                    help="leave out one combination (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds one transfer (or one page) may take")
    ap.add_argument("--quick", action="store_true",
                    help="1 rep of page, down, up over h3-bbr (no up), gtls-bbr and "
                         "h2-bbr, one link (40 ms, 2%% loss, 100 Mbit/s)")
    ap.add_argument("--gw-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra gateway configuration (repeatable)")
    ap.add_argument("--qlog", metavar="DIR", help="the gateways write qlog traces here")
    ap.add_argument("--json", metavar="FILE", help="also write every result here")
    ap.add_argument("--no-origin-check", dest="origin_check", action="store_false")
    ap.add_argument("--calibrate", action="store_true",
                    help="measure the emulator alone (first RTT/loss/rate given) and exit")
    args = ap.parse_args(argv)

    if args.quick:
        args.rtt, args.loss, args.rate = "40", "2", "100"
        args.proto, args.workload, args.reps = "h3-bbr,gtls-bbr,h2-bbr", "page,down,up", 1
        # libcurl's HTTP/3 upload (cubic, 128 KiB in flight) needs about a
        # minute for 20 MiB over this link; gtlsclient uploads over HTTP/3.
        args.skip = args.skip + ["h3-bbr:up"]
        args.timeout = min(args.timeout, 60.0)
    rtts = parse_list(args.rtt, conv=float)
    losses = parse_list(args.loss, conv=float)
    rates = parse_list(args.rate, conv=rate_conv)
    args.proto = parse_list(args.proto, PROTOS)
    args.workload = parse_list(args.workload, WORKLOADS)
    args.bin = os.path.abspath(args.bin)

    why = netem.problems()
    if why:
        print("netbench: cannot emulate a link here: %s" % "; ".join(why), file=sys.stderr)
        return 2
    if args.calibrate:
        res = netem.calibrate(rtts[0], losses[-1], rates[-1])
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return 0
    if not os.access(args.bin, os.X_OK):
        print("netbench: no gateway binary at %s" % args.bin, file=sys.stderr)
        return 2
    if any(PROTOS[p][0] == "gtls" for p in args.proto) and not os.access(GTLSCLIENT, os.X_OK):
        print("netbench: gtlsclient is not installed", file=sys.stderr)
        return 2

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    def out(msg):
        print(msg, flush=True)

    version = subprocess.run([args.bin, "--version"], capture_output=True,
                             text=True).stdout.strip()
    out("netbench: %s (%s); relay %s" % (version, args.bin, netem.find_relay()))
    work = tempfile.mkdtemp(prefix="netbench-")
    all_out = []
    failed = 0
    try:
        subprocess.run(["bash", os.path.join(SRC, "certs", "make-certs.sh"), work],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for rtt in rtts:
            for loss in losses:
                for rate in rates:
                    desc, results, raw, seen = run_link(args, rtt, loss, rate, work, out,
                                                        progress)
                    failed += sum(s["failed"] for s in results.values())
                    all_out.append({
                        "link": {"rtt_ms": rtt, "loss_pct": loss, "rate_mbit": rate,
                                 "describe": desc},
                        "gateways": seen["gateways"],
                        "loss_counters": seen["loss_counters"],
                        "results": [{"proto": p, "workload": w, "summary": s,
                                     "reps": raw[(p, w)]}
                                    for (p, w), s in results.items()]})
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump({"version": version, "links": all_out}, f, indent=1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out("")
    out("netbench: %d failed transfer(s)%s" % (
        failed, "" if not failed else " (see FAILED lines)"))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
