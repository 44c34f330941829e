"""A server given by name follows its DNS: h3gate looks the name up again in
the background ([upstream] resolve) and sends new connections to the new
address, closing idle ones to the old (docs/routes.md, upstream_pool.h).

The gateway runs in a mount namespace of its own whose /etc/hosts is a file
of the test's, rewritten in place (same inode) to move the name: the C
library reads /etc/hosts on every lookup, as it would a changed DNS answer.
"""

import os
import shutil
import subprocess

import pytest

from testenv.clients import H1Client, H3Client
from testenv.require import require
from upstream import Upstream

NAME = "app.h3gate.test"


def can_unshare_mount():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "--mount", "--", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p.returncode == 0


@pytest.fixture
def two_origins():
    """Two origins on one port number, at 127.0.0.2 and 127.0.0.3."""
    a = Upstream(host="127.0.0.2", name="a").start()
    b = Upstream(host="127.0.0.3", port=a.port, name="b").start()
    yield a, b
    for u in (a, b):
        u.stop()
        u.assert_clean()


def write_hosts(path, ip):
    # In place: the bind mount follows the inode, not the name.
    with open(path, "r+") as f:
        f.seek(0)
        f.truncate()
        f.write("127.0.0.1 localhost\n%s %s\n" % (ip, NAME))


def test_address_change_followed(gateway, tmp_path, two_origins):
    require(can_unshare_mount(), "needs root and unshare --mount (util-linux)")
    a, b = two_origins
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    write_hosts(str(hosts), "127.0.0.2")
    gw = gateway({"upstream": {"server": "%s:%d" % (NAME, a.port),
                               "resolve": "100ms", "idle_timeout": "1h"}},
                 start=False)
    gw.wrapper = ["unshare", "--mount", "--", "sh", "-c",
                  'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]
    gw.start()

    with H3Client(gw) as cl:
        for _ in range(3):
            r = cl.get("/bytes/100")
            assert r.status == 200 and r.error is None, r
    assert len(a.requests) == 3 and len(b.requests) == 0
    old_conn = a.requests[-1].conn_id
    gw.wait_metrics(lambda m: m["upstream_conns_idle"] == 1, what="one idle")

    write_hosts(str(hosts), "127.0.0.3")
    gw.wait_log("%s now resolves to 127.0.0.3" % NAME)
    # The idle connection to the old address goes at once.
    a.wait_conn_closed(old_conn)
    with H1Client(gw) as cl:
        for _ in range(3):
            r = cl.get("/bytes/100")
            assert r.status == 200 and r.error is None, r
    assert len(a.requests) == 3, "a request went to the old address"
    assert len(b.requests) == 3

    # A failed lookup keeps the last address (and says so once).
    with open(str(hosts), "r+") as f:
        f.truncate(0)
    gw.wait_log("cannot resolve %s" % NAME)
    with H3Client(gw) as cl:
        r = cl.get("/bytes/100")
        assert r.status == 200 and r.error is None, r
    assert len(b.requests) == 4
