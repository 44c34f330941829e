#!/usr/bin/python3
"""The gateway's memory around a burst of QUIC connections: prints figures,
asserts nothing (test_19_memory_after_load.py asserts the bounds).

Starts the real binary in front of the scripted upstream and opens N QUIC
connections with libcurl (pycurl), C at a time, each for one request (a GET
of SIZE bytes; every fourth a POST of SIZE bytes) and closed right after it.
Prints the gateway's resident size (VmRSS, its anonymous part RssAnon, the
peak VmHWM) at start, after the load, and once it went quiet, with the live
counts and trims from /metrics.

  /usr/bin/python3 tests/bench/memload.py [--bin build/h3gate] [--n 2000]
      [--concurrency 200] [--size 65536] [--rounds 1] [--quiet 5]
      [--gw-set listener.max_handshakes_per_source=2000]

--quiet: seconds to wait after the live counts reached zero (the trim comes
1 to 2 s after traffic stops). An older binary (without the trim) shows what
the C library keeps.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from upstream import Upstream  # noqa: E402
from testenv import gateway as gwmod  # noqa: E402
from testenv.clients import fresh_connections  # noqa: E402

LIVE = ("quic_connections_active", "h3_streams_active", "bridges_active",
        "upstream_conns_active", "buffer_chunks_active", "buffer_chunks_pooled")


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon"):
                out[k] = int(v.split()[0])
    return "VmRSS %(VmRSS)6d KiB  RssAnon %(RssAnon)6d KiB  VmHWM %(VmHWM)6d KiB" % out


def live(m):
    return ", ".join("%s %s" % (k, m.get(k, "-")) for k in LIVE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "h3gate"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--size", type=int, default=64 * 1024)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quiet", type=float, default=5.0)
    ap.add_argument("--gw-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra gateway configuration (repeatable)")
    args = ap.parse_args()
    conf = {"server": {"access_log": "off"}, "upstream": {"idle_timeout": "1s"}}
    for item in args.gw_set:
        key, _, value = item.partition("=")
        sec, _, k = key.partition(".")
        conf.setdefault(sec, {})[k] = value
    gwmod.H3GATE_BIN = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="h3gate-memload-")
    up = Upstream().start()
    gw = None
    try:
        subprocess.run(["bash", os.path.join(HERE, "..", "..", "certs", "make-certs.sh"),
                        os.path.join(work, "certs")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gw = gwmod.Gateway(work, gwmod.Certs(os.path.join(work, "certs")), up.address,
                           conf).start()
        print("%s" % subprocess.run([gwmod.H3GATE_BIN, "--version"], capture_output=True,
                                    text=True).stdout.strip())
        print("start         %s" % status(gw.pid))
        for rnd in range(args.rounds):
            specs = [{"path": "/sink", "method": "POST", "body": args.size} if i % 4 == 3
                     else {"path": "/bytes/%d" % args.size} for i in range(args.n)]
            t0 = time.monotonic()
            rs = fresh_connections(gw, specs, args.concurrency, timeout=600)
            failed = [r for r in rs if r.error is not None or r.status != 200]
            bad = len(failed)
            print("round %d: %d connections, %d at once, %d B each, %.1f s, %d failed"
                  % (rnd + 1, args.n, args.concurrency, args.size,
                     time.monotonic() - t0, bad))
            if failed:
                print("  first failure: %r %s" % (failed[0], failed[0].error))
            print("after load    %s" % status(gw.pid))
            deadline = time.monotonic() + 60
            while True:
                m = gw.metrics()
                if all(m.get(k, 0) == 0 for k in LIVE[:5]) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            print("released      %s  (%s)" % (status(gw.pid), live(m)))
            print("  handshakes capped per source %s, in all %s; refused %s; Retry %s"
                  % (m.get("quic_handshakes_capped_source"),
                     m.get("quic_handshakes_capped_total"),
                     m.get("quic_connections_refused"), m.get("quic_retries_sent")))
            time.sleep(args.quiet)
            m = gw.metrics()
            print("quiet %3.0f s   %s  (memory_trims %s, memory_trim_us %s)"
                  % (args.quiet, status(gw.pid), m.get("memory_trims", "-"),
                     m.get("memory_trim_us", "-")))
    finally:
        if gw is not None:
            gw.stop()
        up.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
