#!/usr/bin/python3
"""An emulated network link between two network namespaces, for e2e tests
and benchmarks over delay, loss and a rate limit (this kernel has no netem
qdisc).

    with Link(rtt_ms=40, loss_pct=2, rate_mbit=100) as link:
        srv = link.popen(SERVER, [h3gate, "-c", ini])    # in the server side
        link.run(CLIENT, [client, link.addr[SERVER], ...])

Topology (names are unique per process and Link, h3gnetem-<pid>-<n>-c/-s):

    client netns                                      server netns
    10.200.0.1 tun0 <-> netem_relay (delay) <-> tun0 10.200.1.1
                        (root netns)

* Delay: tests/tools/netem_relay.c holds every packet for rtt/2 in each
  direction (constant delay, FIFO, no reordering). TUN devices without
  IFF_VNET_HDR carry one IP packet per read/write, never a GSO batch.
* Loss: an nftables rule in each namespace drops arriving packets at random
  (`numgen random mod 10000 < loss*100`, prerouting, per packet: what the
  relay writes into a TUN device is one packet), so both directions lose
  loss_pct of their packets independently. A counter in front of the drop
  rule counts what arrived, so the loss actually applied can be read back.
* Rate: tbf, one per direction, `rate_mbit` each way. The queue sits on the
  *receiving* side: the TUN device's ingress is redirected to an ifb device
  whose root qdisc is the tbf. Put on the TUN egress instead (in the sender's
  own namespace: shaper="sender"), the bottleneck queue would belong to the
  sending host's stack, where TCP Small Queues and the UDP socket's send
  buffer push back on the sender instead of letting the queue fill and drop
  as a router's does; with the queue on the far side, both TCP and QUIC meet
  a real drop-tail bottleneck. Queue limit: max(RTT, 50 ms) at the rate
  (about one bandwidth-delay product, the classic buffer size for one
  flow; the 50 ms floor keeps short-RTT links from getting buffers too
  small for a burst of a few dozen packets). Burst: max(10 full packets,
  1 ms at the rate), small enough that the shaper smooths at the
  millisecond scale, large enough for the timer granularity.
* MTU 1500 on every device, GSO on the TUN devices limited to one segment,
  IPv6 off (no router solicitations on the link), rp_filter off, lo up.
* TCP congestion control per route (`ip route ... congctl`; the sysctl is
  read-only here): set_tcp_cc("cubic") for both directions.

Everything is undone on exit, exceptions, Ctrl-C and SIGTERM: processes
left in the namespaces are killed, the relay stops (its TUN devices go with
it), the namespaces (with their rules, qdiscs, routes) are deleted. A run
killed with SIGKILL leaves namespaces named after a dead pid; the next Link
removes them (sweep_stale).

Calibration (the emulator alone, no gateway):
    /usr/bin/python3 tests/e2e/testenv/netem.py calibrate [--rtt 40]
        [--loss 2] [--rate 100] [--json FILE]
"""

import argparse
import atexit
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("H3GATE_SRC") or os.path.normpath(os.path.join(HERE, "..", "..", ".."))
PYTHON = "/usr/bin/python3"

CLIENT = "client"
SERVER = "server"
SIDES = (CLIENT, SERVER)
ADDR = {CLIENT: "10.200.0.1", SERVER: "10.200.1.1"}
NET = {CLIENT: "10.200.0.0/24", SERVER: "10.200.1.0/24"}
TUN = "tun0"
IFB = "ifb0"
MTU = 1500
PREFIX = "h3gnetem"
NETNS_DIR = "/run/netns"
NFT_TABLE = "h3gnetem"

_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


class NetemError(RuntimeError):
    """The emulated link could not be set up (or torn down)."""


def _which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SBIN)


# --------------------------------------------------------------------------
# the relay binary

_built_relay = None


def find_relay(build=True):
    """Path of netem_relay: $H3GATE_NETEM_RELAY, next to $H3GATE_BIN's
    build tree, or build/tests/ of the source tree. When none exists and a
    C compiler does, builds one into a temporary directory (removed at
    exit). Returns None when there is none."""
    global _built_relay
    cands = [os.environ.get("H3GATE_NETEM_RELAY")]
    gw = os.environ.get("H3GATE_BIN")
    if gw:
        cands.append(os.path.join(os.path.dirname(gw), "tests", "netem_relay"))
    cands.append(os.path.join(SRC, "build", "tests", "netem_relay"))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if _built_relay or not build:
        return _built_relay
    src = os.path.join(SRC, "tests", "tools", "netem_relay.c")
    cc = _which("cc") or _which("gcc")
    if not cc or not os.path.isfile(src):
        return None
    d = tempfile.mkdtemp(prefix="h3gnetem-relay-")
    atexit.register(shutil.rmtree, d, True)
    out = os.path.join(d, "netem_relay")
    p = subprocess.run([cc, "-O2", "-o", out, src], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    if p.returncode != 0:
        raise NetemError("building netem_relay failed:\n" + p.stdout.decode(errors="replace"))
    _built_relay = out
    return out


def problems():
    """Why a Link cannot be made here (an empty list when it can)."""
    out = []
    if os.geteuid() != 0:
        out.append("not root (network namespaces, TUN devices and nftables need it)")
    for tool in ("ip", "tc", "nft"):
        if not _which(tool):
            out.append("%s is not installed%s" % (tool, " (Debian package nftables)"
                                                  if tool == "nft" else ""))
    if not os.path.exists("/dev/net/tun"):
        out.append("/dev/net/tun is missing")
    try:
        if find_relay() is None:
            out.append("netem_relay is not built (cmake target netem_relay) and "
                       "no C compiler to build it")
    except NetemError as e:
        out.append(str(e))
    return out


# --------------------------------------------------------------------------
# cleanup of this process's links, and of links of dead processes

_live = set()
_seq = itertools.count(1)
_handlers_installed = False
_NAME_RE = re.compile(r"^%s-(\d+)-(\d+)-[cs]$" % PREFIX)


def _ns_names():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_processes(ns):
    """SIGKILLs every process inside network namespace ns (only ours live
    there: the namespace exists for one Link). Returns their pids."""
    p = subprocess.run([_which("ip") or "ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=10)
    pids = [int(x) for x in p.stdout.split() if x.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _delete_ns(ns):
    ip = _which("ip") or "ip"
    for _ in range(50):
        _kill_ns_processes(ns)
        subprocess.run([ip, "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10)
        if ns not in _ns_names():
            return True
        time.sleep(0.1)
    return False


def sweep_stale():
    """Deletes namespaces left by Links of processes that no longer exist
    (a run killed with SIGKILL). Returns their names."""
    gone = []
    for ns in _ns_names():
        m = _NAME_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_ns(ns)
            gone.append(ns)
    return gone


def namespaces_of(pid):
    """Namespaces of process pid's Links still present (a leak check)."""
    mine = "%s-%d-" % (PREFIX, pid)
    return [n for n in _ns_names() if n.startswith(mine)]


def leftovers():
    """Namespaces of this process's Links still present (a leak check)."""
    return namespaces_of(os.getpid())


def _teardown_all():
    for link in list(_live):
        try:
            link.down()
        except Exception:  # noqa: BLE001 - at exit, clean up what we can
            pass


def _on_signal(signum, frame):
    # SIGTERM/SIGHUP become KeyboardInterrupt so that `with Link(...)` and
    # finally blocks run; a second signal while cleaning up is ignored.
    if _live:
        signal.signal(signum, signal.SIG_IGN)
        raise KeyboardInterrupt("signal %d" % signum)
    raise SystemExit(128 + signum)


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


# --------------------------------------------------------------------------
# the link

class Link:
    """Two network namespaces joined by an emulated link. Use as a context
    manager (or up()/down()). Attributes: ns[side], addr[side] (the
    client's and server's addresses), rtt_ms, loss_pct, rate_mbit, relay
    (the relay's Popen once up)."""

    def __init__(self, rtt_ms, loss_pct=0.0, rate_mbit=None, *, mtu=MTU,
                 queue_ms=None, burst_bytes=None, shaper="receiver", tcp_cc=None,
                 slots=None, relay=None):
        if rtt_ms < 0 or rtt_ms > 10000:
            raise ValueError("rtt_ms out of range")
        if not 0 <= loss_pct <= 100:
            raise ValueError("loss_pct out of range")
        if rate_mbit is not None and rate_mbit <= 0:
            raise ValueError("rate_mbit must be positive (or None: no limit)")
        if shaper not in ("receiver", "sender"):
            raise ValueError("shaper is 'receiver' or 'sender'")
        self.rtt_ms = rtt_ms
        self.loss_pct = loss_pct
        self.rate_mbit = rate_mbit
        self.mtu = mtu
        self.shaper = shaper
        self.tcp_cc = tcp_cc
        self.slots = slots
        self._relay_path = relay
        self.queue_ms = queue_ms if queue_ms is not None else max(rtt_ms, 50)
        self.tag = "%s-%d-%d" % (PREFIX, os.getpid(), next(_seq))
        self.ns = {CLIENT: self.tag + "-c", SERVER: self.tag + "-s"}
        self.addr = dict(ADDR)
        self._burst = burst_bytes
        self._procs = []
        self.relay = None
        self._relay_err = []
        self._relay_cv = threading.Condition()
        self._state = "new"

    # ---- figures -----------------------------------------------------------

    @property
    def queue_bytes(self):
        """tbf queue limit, bytes (None without a rate limit)."""
        if self.rate_mbit is None:
            return None
        return max(int(self.rate_mbit * 1e6 / 8 * self.queue_ms / 1000), 4 * (self.mtu + 14))

    @property
    def burst_bytes(self):
        """tbf burst, bytes (None without a rate limit)."""
        if self.rate_mbit is None:
            return None
        if self._burst:
            return self._burst
        return max(10 * (self.mtu + 14), int(self.rate_mbit * 1e6 / 8 / 1000))

    def describe(self):
        rate = "no rate limit" if self.rate_mbit is None else (
            "%g Mbit/s each way (tbf at the %s, queue %d B = %g ms, burst %d B)"
            % (self.rate_mbit, self.shaper, self.queue_bytes, self.queue_ms,
               self.burst_bytes))
        return "RTT %g ms, loss %g%% each way, %s" % (self.rtt_ms, self.loss_pct, rate)

    # ---- commands in a namespace -------------------------------------------

    def cmd(self, side, argv):
        """argv prefixed to run inside side's namespace."""
        return [_which("ip") or "ip", "netns", "exec", self.ns[side]] + list(argv)

    def run(self, side, argv, check=True, timeout=60, **kw):
        """Runs argv in side's namespace; returns the CompletedProcess
        (stdout/stderr captured as text unless told otherwise)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("text", True)
        p = subprocess.run(self.cmd(side, argv), timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise NetemError("%s: %s exited %d:\n%s%s" % (
                self.ns[side], " ".join(argv[:6]), p.returncode, p.stdout or "",
                p.stderr or ""))
        return p

    def popen(self, side, argv, **kw):
        """Starts argv in side's namespace (subprocess.Popen keywords). The
        process is killed at down() if it is still running."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.cmd(side, argv), **kw)
        self._procs.append(p)
        return p

    def sh(self, side, script, timeout=30):
        """Runs a shell script (set -e) in side's namespace."""
        return self.run(side, ["sh", "-ec", script], timeout=timeout)

    # ---- lifecycle ---------------------------------------------------------

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def up(self):
        if self._state != "new":
            raise NetemError("a Link is brought up once")
        sweep_stale()
        why = problems()
        if why:
            raise NetemError("network emulation unavailable: " + "; ".join(why))
        _install_handlers()
        self._state = "up"
        _live.add(self)
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self):
        ip = _which("ip")
        for side in SIDES:
            subprocess.run([ip, "netns", "add", self.ns[side]], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10)
        relay = self._relay_path or find_relay()
        argv = [relay, "-d", str(int(round(self.rtt_ms * 1000 / 2)))]
        if self.slots:
            argv += ["-q", str(self.slots)]
        argv += [self.ns[CLIENT], TUN, self.ns[SERVER], TUN]
        self.relay = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read_relay_stderr, daemon=True).start()
        ready, _, _ = select.select([self.relay.stdout], [], [], 10)
        line = self.relay.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.relay.kill()
            self.relay.wait(5)
            raise NetemError("netem_relay did not start: %s" % " ".join(self._relay_err))
        for side in SIDES:
            self.sh(side, self._setup_script(side))
        self.set_loss(self.loss_pct)
        if self.rate_mbit is not None:
            for side in SIDES:
                self.sh(side, self._shaper_script(side))
        if self.tcp_cc:
            self.set_tcp_cc(self.tcp_cc)

    def _setup_script(self, side):
        peer = SERVER if side == CLIENT else CLIENT
        return "\n".join([
            "ip link set dev lo up",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            "for f in all default %s; do echo 0 > /proc/sys/net/ipv4/conf/$f/rp_filter; done"
            % TUN,
            "ip link set dev %s mtu %d txqueuelen 1000 gso_max_segs 1 gso_max_size %d"
            % (TUN, self.mtu, self.mtu),
            "ip addr add %s/32 dev %s" % (self.addr[side], TUN),
            "ip link set dev %s up" % TUN,
            "ip route add %s dev %s" % (NET[peer], TUN),
        ])

    def _shaper_script(self, side):
        tbf = "tbf rate %dkbit burst %d limit %d" % (
            int(self.rate_mbit * 1000), self.burst_bytes, self.queue_bytes)
        if self.shaper == "sender":
            return "tc qdisc add dev %s root %s" % (TUN, tbf)
        # The queue of the traffic arriving here: an ifb device that gets the
        # TUN device's ingress, shaped by its root tbf.
        return "\n".join([
            "ip link add %s type ifb" % IFB,
            "ip link set dev %s mtu %d txqueuelen 1000 up" % (IFB, self.mtu),
            "tc qdisc add dev %s root %s" % (IFB, tbf),
            "tc qdisc add dev %s handle ffff: ingress" % TUN,
            "tc filter add dev %s parent ffff: protocol all u32 match u32 0 0 "
            "action mirred egress redirect dev %s" % (TUN, IFB),
        ])

    def set_loss(self, loss_pct):
        """Sets the random loss of both directions (0 removes it)."""
        if not 0 <= loss_pct <= 100:
            raise ValueError("loss_pct out of range")
        self.loss_pct = loss_pct
        k = int(round(loss_pct * 100))
        rules = ['iifname "%s" counter' % TUN]
        if k > 0:
            rules.append('iifname "%s" numgen random mod 10000 < %d counter drop' % (TUN, k))
        text = ("table inet %s {}\nflush table inet %s\n"
                "table inet %s {\n chain loss {\n"
                "  type filter hook prerouting priority raw; policy accept;\n%s\n }\n}\n"
                % (NFT_TABLE, NFT_TABLE, NFT_TABLE, "\n".join("  " + r for r in rules)))
        for side in SIDES:
            self.run(side, [_which("nft"), "-f", "-"], input=text)

    def set_tcp_cc(self, algo, sides=SIDES):
        """TCP congestion control of connections over the link, per route:
        sides=(SERVER,) for the server->client direction only."""
        if algo not in ("bbr", "cubic", "reno"):
            raise ValueError("unknown congestion control %r" % algo)
        for side in sides:
            peer = SERVER if side == CLIENT else CLIENT
            self.run(side, ["ip", "route", "replace", NET[peer], "dev", TUN,
                            "congctl", algo])
        self.tcp_cc = algo

    def loss_counters(self):
        """{side: (packets that arrived from the link, packets dropped)}."""
        out = {}
        for side in SIDES:
            text = self.run(side, [_which("nft"), "list", "table", "inet", NFT_TABLE]).stdout
            counts = [int(m) for m in re.findall(r"counter packets (\d+)", text)]
            out[side] = (counts[0] if counts else 0, counts[1] if len(counts) > 1 else 0)
        return out

    def shaper_drops(self):
        """{side: packets the tbf of traffic arriving at side dropped}."""
        out = {}
        if self.rate_mbit is None:
            return out
        for side in SIDES:
            if self.shaper == "sender":
                dev, where = TUN, (SERVER if side == CLIENT else CLIENT)
            else:
                dev, where = IFB, side
            text = self.run(where, ["tc", "-s", "qdisc", "show", "dev", dev]).stdout
            m = re.search(r"dropped (\d+)", text)
            out[side] = int(m.group(1)) if m else 0
        return out

    def dev_stat(self, side, name, dev=TUN):
        """/sys/class/net/DEV/statistics/NAME inside side's namespace."""
        p = self.run(side, ["cat", "/sys/class/net/%s/statistics/%s" % (dev, name)])
        return int(p.stdout.strip())

    def _read_relay_stderr(self):
        for raw in self.relay.stderr:
            with self._relay_cv:
                self._relay_err.append(raw.decode(errors="replace").rstrip())
                self._relay_cv.notify_all()

    def relay_stats(self, timeout=5.0):
        """The relay's counters: {"c2s": {rx, tx, full, err}, "s2c": {...}}
        (c2s: client to server)."""
        with self._relay_cv:
            n = len(self._relay_err)
            self.relay.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + timeout
            while not any(x.startswith("stats ") for x in self._relay_err[n:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NetemError("netem_relay did not report its counters")
                self._relay_cv.wait(left)
            line = [x for x in self._relay_err[n:] if x.startswith("stats ")][0]
        return _parse_stats(line)

    def down(self):
        """Stops everything this Link started and deletes its namespaces.
        Safe to call twice. Raises NetemError if a namespace survives."""
        if self._state in ("new", "down"):
            self._state = "down"
            return
        self._state = "down"
        try:
            for p in self._procs:
                if p.poll() is None:
                    p.kill()
            for p in self._procs:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            for side in SIDES:
                if self.ns[side] in _ns_names():
                    _kill_ns_processes(self.ns[side])
            if self.relay is not None and self.relay.poll() is None:
                self.relay.terminate()
                try:
                    self.relay.wait(5)
                except subprocess.TimeoutExpired:
                    self.relay.kill()
                    self.relay.wait(5)
            left = [self.ns[s] for s in SIDES
                    if self.ns[s] in _ns_names() and not _delete_ns(self.ns[s])]
        finally:
            _live.discard(self)
        if left:
            raise NetemError("namespaces left behind: %s" % ", ".join(left))


LATE_EDGES_US = (50, 100, 200, 500, 1000, 2000, 5000)


def _parse_stats(line):
    out = {}
    for name, key in (("a2b", "c2s"), ("b2a", "s2c")):
        m = re.search(r"%s rx=(\d+) tx=(\d+) full=(\d+) err=(\d+) late=([\d,]+)"
                      % name, line)
        d = dict(zip(("rx", "tx", "full", "err"), map(int, m.groups()[:4])))
        d["late"] = [int(x) for x in m.group(5).split(",")]
        out[key] = d
    return out


def late_summary(st0, st1, key):
    """From two relay_stats: the share of packets of direction key that
    left the relay more than 200 us, 1 ms and 5 ms after their time."""
    h = [b - a for a, b in zip(st0[key]["late"], st1[key]["late"])]
    n = sum(h) or 1
    return {"packets": sum(h), "over_200us": sum(h[3:]) / n, "over_1ms": sum(h[5:]) / n,
            "over_5ms": h[-1] / n}


# --------------------------------------------------------------------------
# probes: small programs run inside a namespace (`netem.py probe KIND ...`)

def _probe_udp_sink(a):
    """Counts datagrams on a UDP port until `idle` seconds pass without one
    (after the first) or `max` seconds in all. Prints JSON."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", a.port))
    print("ready", flush=True)
    n = nbytes = 0
    t_first = t_last = None
    deadline = time.monotonic() + a.max
    while time.monotonic() < deadline:
        wait = a.idle if t_first is not None else deadline - time.monotonic()
        r, _, _ = select.select([s], [], [], max(0.0, wait))
        if not r:
            if t_first is not None:
                break
            continue
        while True:
            try:
                data = s.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            now = time.monotonic()
            t_first = t_first or now
            t_last = now
            n += 1
            nbytes += len(data)
    print(json.dumps({"packets": n, "bytes": nbytes,
                      "span": (t_last - t_first) if t_first else 0.0}))


def _probe_udp_send(a):
    """Sends `count` datagrams (or for `duration` seconds) of `size` bytes,
    at `pps` per second (0: as fast as possible). Prints JSON."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((a.host, a.port))
    buf = b"\x5a" * a.size
    sent = errs = 0
    t0 = time.monotonic()
    end = t0 + a.duration if a.duration else None
    while True:
        if a.count and sent + errs >= a.count:
            break
        if end is not None and ((sent + errs) & 63) == 0 and time.monotonic() >= end:
            break
        if a.pps:
            ahead = (sent + errs) / a.pps - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        try:
            s.send(buf)
            sent += 1
        except OSError:
            errs += 1
    print(json.dumps({"sent": sent, "errors": errs, "duration": time.monotonic() - t0}))


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PING = struct.Struct("!IQQQ")   # seq, client send, server receive, server send


def _probe_ping_server(a):
    """Echoes ping probes until `idle` seconds pass without one, stamping
    into each its kernel receive time and its send time."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", a.port))
    print("ready", flush=True)
    while True:
        r, _, _ = select.select([s], [], [], a.idle)
        if not r:
            break
        data, anc, _, peer = s.recvmsg(2048, 64)
        t_rx = None
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", blob[:16])
                t_rx = sec * 1000000000 + nsec
        seq, t_send, _, _ = PING.unpack_from(data)
        t_rx = t_rx or time.time_ns()
        s.sendto(PING.pack(seq, t_send, t_rx, time.time_ns()) + data[PING.size:], peer)


def _probe_ping_client(a):
    """Sends `count` probes `interval` s apart; prints per-probe times."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.connect((a.host, a.port))
    pad = b"\0" * max(0, a.size - PING.size)
    out = {}
    t0 = time.monotonic()
    nxt = 0
    last_send = None
    while True:
        now = time.monotonic()
        if nxt < a.count and now >= t0 + nxt * a.interval:
            s.send(PING.pack(nxt, time.time_ns(), 0, 0) + pad)
            nxt += 1
            last_send = now
            continue
        if nxt >= a.count and now > last_send + a.wait:
            break
        wake = (t0 + nxt * a.interval) if nxt < a.count else last_send + a.wait
        r, _, _ = select.select([s], [], [], max(0.0, min(wake - now, 0.05)))
        if r:
            data, anc, _, _ = s.recvmsg(2048, 64)
            t_rx = None
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", blob[:16])
                    t_rx = sec * 1000000000 + nsec
            seq, t_send, t_srx, t_stx = PING.unpack_from(data)
            out[seq] = (t_send, t_srx, t_stx, t_rx or time.time_ns())
    print(json.dumps({"sent": a.count, "probes": out}))


def _probe_tcp_source(a):
    """Accepts one TCP connection and sends to it for `duration` seconds.
    Prints JSON with the congestion control the connection used."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(1)
    print("ready", flush=True)
    ls.settimeout(30)
    c, _ = ls.accept()
    cc = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    buf = b"\xa5" * (256 * 1024)
    sent = 0
    end = time.monotonic() + a.duration
    try:
        while time.monotonic() < end:
            sent += c.send(buf)
    except OSError:
        pass
    info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    total_retrans = struct.unpack_from("I", info, 100)[0]   # tcpi_total_retrans
    c.close()
    print(json.dumps({"cc": cc, "sent": sent, "retrans": total_retrans}))


def _probe_tcp_sink(a):
    """Connects and reads until the peer closes; prints JSON: bytes, the
    whole transfer's duration and the last `tail` seconds' rate."""
    s = socket.create_connection((a.host, a.port), timeout=30)
    t0 = time.monotonic()
    n = 0
    marks = []
    while True:
        try:
            data = s.recv(1 << 20)
        except OSError:
            break
        if not data:
            break
        n += len(data)
        marks.append((time.monotonic(), n))
    t1 = time.monotonic()
    tail_rate = None
    if marks:
        cut = marks[-1][0] - a.tail
        base = next(((t, b) for t, b in marks if t >= cut), marks[0])
        if marks[-1][0] > base[0]:
            tail_rate = (marks[-1][1] - base[1]) / (marks[-1][0] - base[0])
    print(json.dumps({"bytes": n, "duration": t1 - t0, "tail_rate": tail_rate}))


def _probe_main(argv):
    ap = argparse.ArgumentParser(prog="netem.py probe")
    ap.add_argument("kind", choices=["udp-sink", "udp-send", "ping-server",
                                     "ping-client", "tcp-source", "tcp-sink"])
    ap.add_argument("--host", default=ADDR[SERVER])
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--size", type=int, default=1200)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--pps", type=float, default=0)
    ap.add_argument("--duration", type=float, default=0)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--wait", type=float, default=1.0)
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--max", type=float, default=60.0)
    ap.add_argument("--tail", type=float, default=2.0)
    a = ap.parse_args(argv)
    {"udp-sink": _probe_udp_sink, "udp-send": _probe_udp_send,
     "ping-server": _probe_ping_server, "ping-client": _probe_ping_client,
     "tcp-source": _probe_tcp_source, "tcp-sink": _probe_tcp_sink}[a.kind](a)


# --------------------------------------------------------------------------
# calibration: the emulator alone

def _probe(*args):
    return [PYTHON, os.path.abspath(__file__), "probe"] + [str(x) for x in args]


def _start_ready(link, side, argv):
    p = link.popen(side, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r, _, _ = select.select([p.stdout], [], [], 15)
    line = p.stdout.readline() if r else ""
    if line.strip() != "ready":
        p.kill()
        raise NetemError("probe %s did not start: %s" % (argv[3:5], p.stderr.read()[-500:]))
    return p


def _finish(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if not lines:
        raise NetemError("probe failed: %s" % err[-800:])
    return json.loads(lines[-1])


def _pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def measure_udp_pps(link, seconds=2.0, size=1200):
    """Client -> server, as fast as one Python sender can go: the packets
    per second the relay forwarded, and whether it kept up (a TUN queue
    overflow means the relay, not the sender, was the limit)."""
    sink = _start_ready(link, SERVER, _probe("udp-sink", "--port", 9001,
                                             "--idle", 1.0, "--max", seconds + 20))
    drop0 = link.dev_stat(CLIENT, "tx_dropped")
    st0 = link.relay_stats()
    t0 = time.monotonic()
    snd = link.run(CLIENT, _probe("udp-send", "--host", link.addr[SERVER],
                                  "--port", 9001, "--size", size, "--duration", seconds),
                   timeout=seconds + 30)
    sent = json.loads(snd.stdout.strip().splitlines()[-1])
    time.sleep(link.rtt_ms / 2000 + 0.2)
    st1 = link.relay_stats()
    dt = time.monotonic() - t0
    got = _finish(sink, 30)
    drop1 = link.dev_stat(CLIENT, "tx_dropped")
    fwd = st1["c2s"]["tx"] - st0["c2s"]["tx"]
    return {"sent": sent["sent"], "send_pps": sent["sent"] / sent["duration"],
            "relay_forwarded": fwd, "relay_pps": fwd / sent["duration"],
            "relay_full_drops": st1["c2s"]["full"] - st0["c2s"]["full"],
            "tun_queue_drops": drop1 - drop0, "received": got["packets"],
            "mbit": fwd * size * 8 / sent["duration"] / 1e6, "wall": dt}


def measure_delay(link, count=300, interval=0.01, size=200):
    """UDP ping-pong with kernel receive timestamps: one-way delay each way
    and RTT (server turnaround removed), as errors against the configured
    figures, in microseconds."""
    srv = _start_ready(link, SERVER, _probe("ping-server", "--port", 9002,
                                            "--idle", 3.0))
    st0 = link.relay_stats()
    cli = link.run(CLIENT, _probe("ping-client", "--host", link.addr[SERVER],
                                  "--port", 9002, "--count", count, "--interval", interval,
                                  "--size", size, "--wait", link.rtt_ms / 1000 + 1.0),
                   timeout=count * interval + 60)
    res = json.loads(cli.stdout.strip().splitlines()[-1])
    st1 = link.relay_stats()
    srv.kill()
    srv.wait(5)
    one = link.rtt_ms * 1000 / 2
    up, down, rtt = [], [], []
    for t_send, t_srx, t_stx, t_rx in res["probes"].values():
        up.append((t_srx - t_send) / 1000 - one)
        down.append((t_rx - t_stx) / 1000 - one)
        rtt.append(((t_rx - t_send) - (t_stx - t_srx)) / 1000 - 2 * one)
    def summ(v):
        return {"median_us": _pct(v, 0.5), "p99_us": _pct(v, 0.99),
                "max_us": max(v) if v else float("nan")}
    return {"probes": count, "answered": len(res["probes"]), "c2s": summ(up),
            "s2c": summ(down), "rtt": summ(rtt),
            "relay_late": {k: late_summary(st0, st1, k) for k in ("c2s", "s2c")}}


def measure_tcp(link, seconds=4.0, cc=None, port=9003):
    """Server -> client bulk TCP for `seconds`: goodput over the whole
    transfer (slow start included) and over its last 2 s, the congestion
    control the server's socket got from the route, its retransmits."""
    if cc:
        link.set_tcp_cc(cc)
    src = _start_ready(link, SERVER, _probe("tcp-source", "--port", port,
                                            "--duration", seconds))
    snk = link.run(CLIENT, _probe("tcp-sink", "--host", link.addr[SERVER],
                                  "--port", port, "--tail", 2.0), timeout=seconds + 60)
    got = json.loads(snk.stdout.strip().splitlines()[-1])
    info = _finish(src, 30)
    return {"cc": info["cc"], "mbit": got["bytes"] * 8 / got["duration"] / 1e6,
            "tail_mbit": (got["tail_rate"] or 0) * 8 / 1e6, "retrans": info["retrans"],
            "bytes": got["bytes"]}


def measure_loss(link, count=20000, pps=10000, size=200):
    """count datagrams each way at pps: the share lost, from the receivers'
    counts and from the nftables counters."""
    out = {}
    for src, dst, port in ((CLIENT, SERVER, 9004), (SERVER, CLIENT, 9005)):
        c0 = link.loss_counters()[dst]
        sink = _start_ready(link, dst, _probe("udp-sink", "--port", port,
                                              "--idle", 1.0, "--max", count / pps + 30))
        snd = link.run(src, _probe("udp-send", "--host", link.addr[dst], "--port",
                                   port, "--size", size, "--count", count, "--pps", pps),
                       timeout=count / pps + 60)
        sent = json.loads(snd.stdout.strip().splitlines()[-1])["sent"]
        got = _finish(sink, 30)["packets"]
        c1 = link.loss_counters()[dst]
        arrived, dropped = c1[0] - c0[0], c1[1] - c0[1]
        out["c2s" if src == CLIENT else "s2c"] = {
            "sent": sent, "received": got, "lost_pct": 100.0 * (sent - got) / sent,
            "nft_dropped_pct": 100.0 * dropped / arrived if arrived else float("nan")}
    return out


def calibrate(rtt_ms=40, loss_pct=2.0, rate_mbit=100, out=print):
    """Measures the emulator alone and prints the figures. Returns them."""
    res = {"rtt_ms": rtt_ms, "loss_pct": loss_pct, "rate_mbit": rate_mbit}
    out("netem calibration (no gateway): relay %s" % find_relay())

    with Link(rtt_ms) as link:
        out("link: " + link.describe())
        r = measure_udp_pps(link)
        res["udp_pps"] = r
        out("  UDP blast 1200 B c->s: sender %.0f pps, relay forwarded %.0f pps "
            "(%.0f Mbit/s), relay queue-full drops %d, TUN queue drops %d%s"
            % (r["send_pps"], r["relay_pps"], r["mbit"], r["relay_full_drops"],
               r["tun_queue_drops"], " (relay saturated)" if r["tun_queue_drops"] else
               " (sender-limited: the relay kept up)"))
        d = measure_delay(link)
        res["delay"] = d
        out("  delay, %d probes (%d answered), error vs configured (one-way %.1f ms, "
            "RTT %g ms):" % (d["probes"], d["answered"], rtt_ms / 2, rtt_ms))
        for k in ("c2s", "s2c", "rtt"):
            out("    %-4s median %+7.0f us   p99 %+7.0f us   max %+7.0f us"
                % (k, d[k]["median_us"], d[k]["p99_us"], d[k]["max_us"]))
        late = d["relay_late"]
        out("    relay release lateness (packets later than their time by >200 us / "
            ">1 ms / >5 ms): c2s %.1f%% / %.1f%% / %.1f%%, s2c %.1f%% / %.1f%% / %.1f%%"
            % tuple(100 * late[k][x] for k in ("c2s", "s2c")
                    for x in ("over_200us", "over_1ms", "over_5ms")))
        for cc in ("bbr", "cubic"):
            t = measure_tcp(link, cc=cc)
            res["tcp_%s" % cc] = t
            out("  TCP s->c 4 s, no loss, no rate limit, route congctl %s (socket: %s): "
                "%.0f Mbit/s (last 2 s %.0f), %d retransmits"
                % (cc, t["cc"], t["mbit"], t["tail_mbit"], t["retrans"]))

    if rate_mbit:
        with Link(rtt_ms, 0, rate_mbit) as link:
            out("link: " + link.describe())
            for cc in ("bbr", "cubic"):
                t = measure_tcp(link, cc=cc, seconds=6.0)
                res["tcp_rate_%s" % cc] = t
                out("  TCP s->c 6 s, route congctl %s: %.1f Mbit/s (last 2 s %.1f, "
                    "limit %g), %d retransmits, tbf drops %s"
                    % (cc, t["mbit"], t["tail_mbit"], rate_mbit, t["retrans"],
                       link.shaper_drops()))
            d = measure_delay(link, count=100)
            res["delay_rate"] = d
            out("  idle RTT error with the shaper: median %+.0f us, p99 %+.0f us"
                % (d["rtt"]["median_us"], d["rtt"]["p99_us"]))

    if loss_pct:
        with Link(rtt_ms, loss_pct) as link:
            out("link: " + link.describe())
            lo = measure_loss(link)
            res["loss"] = lo
            for k in ("c2s", "s2c"):
                out("  loss %s: %d sent, %d received: %.2f%% lost (nft dropped %.2f%% of "
                    "arrivals; configured %g%%)" % (k, lo[k]["sent"], lo[k]["received"],
                                                    lo[k]["lost_pct"],
                                                    lo[k]["nft_dropped_pct"], loss_pct))
            for cc in ("bbr", "cubic"):
                t = measure_tcp(link, cc=cc, seconds=6.0)
                res["tcp_loss_%s" % cc] = t
                out("  TCP s->c 6 s with %g%% loss, route congctl %s: %.1f Mbit/s "
                    "(last 2 s %.1f), %d retransmits"
                    % (loss_pct, cc, t["mbit"], t["tail_mbit"], t["retrans"]))
    return res


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "probe":
        return _probe_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="measure the emulator alone")
    c.add_argument("--rtt", type=float, default=40)
    c.add_argument("--loss", type=float, default=2.0)
    c.add_argument("--rate", type=float, default=100, help="Mbit/s; 0 skips the rate test")
    c.add_argument("--json", help="also write the figures to this file")
    sub.add_parser("sweep", help="delete namespaces left by killed runs")
    a = ap.parse_args(argv)
    if a.cmd == "sweep":
        for ns in sweep_stale():
            print("deleted", ns)
        return 0
    res = calibrate(a.rtt, a.loss, a.rate or None)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
