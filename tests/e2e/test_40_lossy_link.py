"""Over an emulated lossy link (testenv/netem.py: 40 ms RTT, 2% random loss
each way, 100 Mbit/s), h3gate delivers every byte: the short form of the
network benchmark (tests/bench/netbench.py --quick) loads a 61-resource page,
downloads and uploads 20 MiB over HTTP/3 (libcurl and ngtcp2's gtlsclient)
and HTTP/2, each body checked byte-exact (length and SHA-256) by the client
or, for uploads, by the origin. Timings are printed, never asserted.

The emulator must leave nothing behind: its namespaces are gone after a
run, after an exception inside a Link, and after the benchmark is stopped
with SIGTERM mid-run.

Needs root, nftables (`nft`), tc, /dev/net/tun and gtlsclient: without them
these tests fail under CI (CI set) and are skipped otherwise."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import H3GATE_BIN, SRC
from testenv import netem
from testenv.require import require_netbench

NETBENCH = os.path.join(SRC, "tests", "bench", "netbench.py")


def test_quick_benchmark_bodies_are_byte_exact(tmp_path):
    require_netbench()
    out = tmp_path / "quick.json"
    p = subprocess.Popen([sys.executable, NETBENCH, "--quick", "--bin", H3GATE_BIN,
                          "--json", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=60)
        pytest.fail("netbench --quick did not finish in 240 s:\n%s" % stderr[-3000:])
    print(stdout)
    assert p.returncode == 0, "netbench --quick exited %d:\n%s\n%s" % (
        p.returncode, stdout[-3000:], stderr[-3000:])
    left = netem.namespaces_of(p.pid)
    assert left == [], "namespaces left behind: %s" % left

    data = json.loads(out.read_text())
    (link,) = data["links"]
    assert link["link"]["loss_pct"] == 2 and link["link"]["rtt_ms"] == 40
    got = {(r["proto"], r["workload"]): r for r in link["results"]}
    want = {("h3-bbr", "page"): "h3", ("h3-bbr", "down"): "h3",
            ("gtls-bbr", "page"): "h3", ("gtls-bbr", "down"): "h3",
            ("gtls-bbr", "up"): "h3",
            ("h2-bbr", "page"): "h2", ("h2-bbr", "down"): "h2", ("h2-bbr", "up"): "h2"}
    assert sorted(got) == sorted(want)
    for key, version in want.items():
        for rep in got[key]["reps"]:
            assert rep["ok"], "%s %s: %s" % (key[0], key[1], rep.get("errors"))
            assert rep["versions"] == [version], (key, rep["versions"])
            if key[1] == "page" and key[0] != "gtls-bbr":
                # The page went over one multiplexed connection, and all of
                # its 60 subresources arrived whole.
                assert rep["conns"] == 1, (key, rep["conns"])
                assert len(rep["resources"]) == 60
                assert all(r["error"] is None for r in rep["resources"])


def test_link_is_removed_after_an_exception():
    require_netbench()
    link = netem.Link(20, loss_pct=1, rate_mbit=20)
    with pytest.raises(RuntimeError, match="boom"):
        with link:
            names = list(link.ns.values())
            assert all(n in os.listdir(netem.NETNS_DIR) for n in names)
            # The link carries traffic both ways before the failure.
            link.run(netem.CLIENT, [sys.executable, "-c",
                                    "import socket; s = socket.create_connection("
                                    "('%s', 9), timeout=5)" % link.addr[netem.SERVER]],
                     check=False)
            raise RuntimeError("boom")
    assert not any(n in os.listdir(netem.NETNS_DIR) for n in names)
    assert link.relay.poll() is not None, "the relay outlived its link"


def test_sigterm_mid_run_leaves_nothing_behind():
    require_netbench()
    p = subprocess.Popen([sys.executable, NETBENCH, "--bin", H3GATE_BIN, "--rtt", "40",
                          "--loss", "0", "--rate", "none", "--proto", "h2-bbr",
                          "--workload", "down", "--reps", "3", "--no-origin-check"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "link up" not in seen:
            assert time.monotonic() < deadline, "no link came up:\n" + seen
            line = p.stderr.readline()
            assert line, "netbench ended early:\n" + seen
            seen += line
        assert netem.namespaces_of(p.pid), "the link's namespaces are not there"
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode != 0
    left = netem.namespaces_of(p.pid)
    assert left == [], "namespaces left behind: %s" % left
