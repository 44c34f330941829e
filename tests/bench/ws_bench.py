#!/usr/bin/python3
"""WebSocket echo benchmark: prints figures, asserts nothing.

Small messages (64 B by default) echoed by tests/e2e/testenv/wsapp.py
(python3-websockets), each connection doing send-then-wait-for-the-echo in
a loop, reached three ways:

  direct     ws:// straight to the app (no gateway): the app's and the
             client's own cost
  http/1.1   wss:// through the gateway's TCP+TLS listener (Upgrade)
  h3         RFC 9220 extended CONNECT through the gateway's QUIC listener,
             with h3ws (tests/tools/h3ws.c; H3GATE_H3WS or --h3ws)

One line per case: messages per second (a message and its echo), and CPU
per message of the gateway and of the app, from /proc/<pid>/stat
(utime + stime) before and after. The rates are bounded by the Python app
and client on a 2-core machine; the gateway's CPU per message is the
figure to compare between releases. Bounded in time (about 20 s).

  tests/bench/ws_bench.py [--bin build/h3gate] [--h3ws build/tests/h3ws]
                          [--conns 8] [--seconds 4] [--size 64]
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import websockets  # noqa: E402
from testenv.gateway import Certs, Gateway  # noqa: E402
from testenv.wsapp import WsApp  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


async def ping_pong(url, conns, seconds, size, ssl_ctx=None):
    """conns connections, each echoing size-byte messages one at a time
    for seconds; returns the number of echoes received."""
    msg = os.urandom(size)
    kw = {"compression": None}
    if ssl_ctx is not None:
        kw.update(ssl=ssl_ctx, server_hostname="localhost")
    socks = [await websockets.connect(url, **kw) for _ in range(conns)]
    stop = time.monotonic() + seconds

    async def loop(ws):
        n = 0
        while time.monotonic() < stop:
            await ws.send(msg)
            got = await ws.recv()
            assert got == msg
            n += 1
        return n
    counts = await asyncio.gather(*(loop(ws) for ws in socks))
    await asyncio.gather(*(ws.close() for ws in socks))
    return sum(counts)


def measure(name, pids, work):
    """Runs work() -> messages; prints the line; returns messages/s."""
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    n = work()
    wall = time.monotonic() - t0
    cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    us = lambda k: "%6.1f us/msg" % (cpu[k] / n * 1e6) if k in cpu and n else "     -      "  # noqa: E731
    print("%-9s %6d msgs  %8.0f msg/s   gateway CPU %s   app CPU %s"
          % (name, n, n / wall, us("gateway"), us("app")), flush=True)
    return n / wall


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("H3GATE_BIN")
                    or os.path.join(SRC, "build", "h3gate"))
    ap.add_argument("--h3ws", default=os.environ.get("H3GATE_H3WS")
                    or os.path.join(SRC, "build", "tests", "h3ws"))
    ap.add_argument("--conns", type=int, default=8, help="concurrent connections/tunnels")
    ap.add_argument("--seconds", type=float, default=4.0, help="per Python case")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    os.environ["H3GATE_BIN"] = args.bin
    import testenv.gateway
    testenv.gateway.H3GATE_BIN = args.bin

    work = tempfile.mkdtemp(prefix="ws-bench-")
    certs_dir = os.path.join(work, "certs")
    os.makedirs(certs_dir)
    subprocess.run(["bash", os.path.join(SRC, "certs", "make-certs.sh"), certs_dir],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    certs = Certs(certs_dir)
    app = WsApp(work).start()
    gw_dir = os.path.join(work, "gw")
    os.makedirs(gw_dir)
    gw = Gateway(gw_dir, certs, app.address,
                 {"server": {"access_log": "off"}}, name="bench-gw")
    import ssl
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        gw.start()
        print("WebSocket echo, %d B messages, %d connections, one message in flight each"
              % (args.size, args.conns))
        app_pid = {"app": app.proc.pid}
        both = {"app": app.proc.pid, "gateway": gw.pid}
        measure("direct", app_pid, lambda: asyncio.run(ping_pong(
            "ws://%s/echo" % app.address, args.conns, args.seconds, args.size)))
        rate = measure("http/1.1", both, lambda: asyncio.run(ping_pong(
            "wss://localhost:%d/echo" % gw.tcp_port, args.conns, args.seconds, args.size,
            ctx)))
        if os.access(args.h3ws, os.X_OK):
            # As many messages as the HTTP/1.1 case moved in its time.
            per = max(100, int(rate * args.seconds / args.conns))

            def h3():
                p = subprocess.run(
                    [args.h3ws, "--host", "127.0.0.1", "--port", str(gw.port),
                     "--ca", certs.ca, "--authority", gw.authority, "--path", "/echo",
                     "--tunnels", str(args.conns), "--messages", str(per),
                     "--size", str(args.size), "--timeout", "20",
                     # nghttp3 1.8 as a client does not record the server's
                     # SETTINGS_ENABLE_CONNECT_PROTOCOL (it keeps 0), so h3ws
                     # cannot see the gateway's 1: do not wait for it.
                     "--ignore-settings"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40)
                rep = json.loads(p.stdout.decode().strip().splitlines()[-1])
                if p.returncode != 0:
                    print("h3ws exited %d: %s" % (p.returncode, rep.get("failures")))
                return rep.get("messages_ok", 0)
            measure("h3", both, h3)
        else:
            print("h3        skipped: no h3ws at %s (H3GATE_H3WS or --h3ws)" % args.h3ws)
        print("gateway peak RSS %.1f MiB" % (gw.rss_peak_kib() / 1024))
    finally:
        if gw.alive():
            gw.stop()
        app.stop()
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
