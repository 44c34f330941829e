#!/usr/bin/python3
"""h3gate benchmarks: prints figures, asserts nothing (targets are judged by
people reading the figures, never by timed unit tests on shared machines).

Starts the real binary in front of the scripted upstream (tests/e2e) and
drives it with libcurl's HTTP/3 (pycurl). For each scenario it prints the
client-side rate and the gateway's own CPU time (from /proc), which is the
figure that matters on a shared 2-core machine: CPU per GiB moved and per
request served, and the gateway's peak RSS.

  tests/bench/bench.py [--bin build/h3gate] [--quick] [--only small,...]
"""
import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import pycurl  # noqa: E402
from upstream import Upstream  # noqa: E402

MiB = 1024 * 1024
HZ = os.sysconf("SC_CLK_TCK")


def free_udp_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def make_certs(dirname):
    src = os.path.join(HERE, "..", "..", "certs", "make-certs.sh")
    subprocess.run(["bash", src, dirname], check=True, stdout=subprocess.DEVNULL)


def start_gateway(binary, work, up_port, extra=""):
    port = free_udp_port()
    ini = os.path.join(work, "bench.ini")
    with open(ini, "w") as f:
        f.write("[server]\nlog_level = info\naccess_log = off\n"
                "[listener]\naddress = 127.0.0.1\nport = %d\n"
                "cert = %s/server.crt\nkey = %s/server.key\n%s"
                "[upstream]\nserver = 127.0.0.1:%d\n"
                % (port, work, work, extra, up_port))
    p = subprocess.Popen([binary, "-c", ini], stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "listening on udp" in line:
            break
    import threading
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, port


class Client:
    def __init__(self, port, ca):
        self.port, self.ca = port, ca

    def handle(self):
        c = pycurl.Curl()
        c.setopt(pycurl.HTTP_VERSION, 31)  # CURL_HTTP_VERSION_3ONLY
        c.setopt(pycurl.CAINFO, self.ca)
        c.setopt(pycurl.CAPATH, None)
        c.setopt(pycurl.RESOLVE, ["localhost:%d:127.0.0.1" % self.port])
        c.setopt(pycurl.PIPEWAIT, 1)
        return c

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)


def scenario_download(cl, gw, size):
    c = cl.handle()
    h = hashlib.sha256()
    c.setopt(pycurl.URL, cl.url("/bytes/%d" % size))
    c.setopt(pycurl.WRITEFUNCTION, h.update)
    cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
    c.perform()
    dt, cpu = time.monotonic() - t0, cpu_seconds(gw.pid) - cpu0
    c.close()
    gib = size / (1024 * MiB)
    print("download %4d MiB   %7.1f MiB/s   gateway CPU %.2f s/GiB"
          % (size // MiB, size / MiB / dt, cpu / gib))


def scenario_upload(cl, gw, size):
    c = cl.handle()
    data = os.urandom(MiB)
    sent = [0]

    def read(n):
        left = size - sent[0]
        if left <= 0:
            return b""
        chunk = data[: min(n, left)]
        sent[0] += len(chunk)
        return chunk

    c.setopt(pycurl.URL, cl.url("/sink"))
    c.setopt(pycurl.UPLOAD, 1)
    c.setopt(pycurl.CUSTOMREQUEST, "POST")
    c.setopt(pycurl.INFILESIZE_LARGE, size)
    c.setopt(pycurl.READFUNCTION, read)
    c.setopt(pycurl.WRITEFUNCTION, lambda b: None)
    cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
    c.perform()
    dt, cpu = time.monotonic() - t0, cpu_seconds(gw.pid) - cpu0
    c.close()
    gib = size / (1024 * MiB)
    print("upload   %4d MiB   %7.1f MiB/s   gateway CPU %.2f s/GiB"
          % (size // MiB, size / MiB / dt, cpu / gib))


def scenario_small(cl, gw, total, conns, streams):
    """total GETs of 100 B over conns connections, streams in flight each."""
    multis = []
    for _ in range(conns):
        m = pycurl.CurlMulti()
        m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        multis.append(m)
    per = total // conns
    done = [0]
    cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
    queued = [0] * conns
    active = [set() for _ in range(conns)]

    def add(i):
        c = cl.handle()
        c.setopt(pycurl.URL, cl.url("/bytes/100"))
        c.setopt(pycurl.WRITEFUNCTION, lambda b: None)
        multis[i].add_handle(c)
        active[i].add(c)
        queued[i] += 1

    for i in range(conns):
        for _ in range(min(streams, per)):
            add(i)
    while done[0] < per * conns:
        for i, m in enumerate(multis):
            while m.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            while True:
                nq, ok, bad = m.info_read()
                for c in ok + [b[0] for b in bad]:
                    m.remove_handle(c)
                    active[i].discard(c)
                    c.close()
                    done[0] += 1
                    if queued[i] < per:
                        add(i)
                if nq == 0:
                    break
            m.select(0.001)
    dt, cpu = time.monotonic() - t0, cpu_seconds(gw.pid) - cpu0
    print("small GET x%d (%d conns x %d streams)   %7.0f req/s   "
          "gateway CPU %.1f us/req" % (total, conns, streams, total / dt,
                                       cpu * 1e6 / total))


def scenario_handshakes(cl, gw, n, resume):
    """n connections one after the other, one 100-byte GET each: full
    handshakes, or resumed ones sending the GET as 0-RTT."""
    c = cl.handle()
    c.setopt(pycurl.URL, cl.url("/bytes/100"))
    c.setopt(pycurl.WRITEFUNCTION, lambda b: None)
    c.setopt(pycurl.FRESH_CONNECT, 1)
    c.setopt(pycurl.FORBID_REUSE, 1)
    if resume:
        c.setopt(pycurl.SSL_OPTIONS, 64)  # CURLSSLOPT_EARLYDATA
        c.perform()  # the first connection fetches the ticket
    else:
        c.setopt(pycurl.SSL_SESSIONID_CACHE, 0)
    cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
    for _ in range(n):
        c.perform()
    dt, cpu = time.monotonic() - t0, cpu_seconds(gw.pid) - cpu0
    c.close()
    print("handshakes x%d %-17s %7.0f conn/s   gateway CPU %.0f us/conn"
          % (n, "(resumed + 0-RTT)" if resume else "(full)", n / dt,
             cpu * 1e6 / n))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "h3gate"))
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--only", default="download,upload,small,handshakes",
                    help="comma-separated scenarios to run (default: all): "
                         "download, upload, small, handshakes")
    args = ap.parse_args()
    only = set(args.only.split(","))
    up = Upstream()
    up.start()
    work = tempfile.mkdtemp(prefix="h3gate-bench-")
    make_certs(work)
    gw, port = start_gateway(os.path.abspath(args.bin), work, up.port)
    try:
        cl = Client(port, os.path.join(work, "ca.crt"))
        big = 256 * MiB if args.quick else 1024 * MiB
        out = subprocess.run([os.path.abspath(args.bin), "--version"],
                             capture_output=True, text=True).stdout.strip()
        print(out)
        if "download" in only:
            scenario_download(cl, gw, big)
        if "upload" in only:
            scenario_upload(cl, gw, big // 2)
        if "small" in only:
            scenario_small(cl, gw, 2000 if args.quick else 10000, 10, 10)
        nh = 200 if args.quick else 1000
        if "handshakes" in only:
            scenario_handshakes(cl, gw, nh, resume=False)
            scenario_handshakes(cl, gw, nh, resume=True)
        print("gateway peak RSS %.1f MiB" % (vm_hwm_kib(gw.pid) / 1024))
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(timeout=15)
        up.stop() if hasattr(up, "stop") else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
