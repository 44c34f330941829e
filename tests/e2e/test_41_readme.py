"""The README's commands work as written.

README.md marks the shell blocks to run: `<!-- doc-test: serve -->` before
a block whose commands set up and start h3gate (a line ending in `&` runs
in the background, the last line is the server: it must log "ready"), and
`<!-- doc-test: client -->` before one run against it (each command must
succeed). They run in the source tree, as a reader would run them, with
nothing changed; the server then gets SIGTERM and must exit 0.

Needs root (the shipped configuration listens on port 443) and ports 443
and 8080 free.
"""

import os
import re
import signal
import socket
import subprocess
import time

from conftest import SLOW, SRC
from testenv.require import require

MARK = re.compile(r"^<!-- doc-test: (serve|client) -->\s*$")


def doc_blocks():
    """{kind: [command lines]} of the marked blocks, comments kept (bash
    ignores them), blank lines dropped."""
    with open(os.path.join(SRC, "README.md")) as f:
        lines = f.read().splitlines()
    out = {}
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        i += 1
        if not m:
            continue
        assert lines[i].startswith("```sh"), "a doc-test mark must precede a sh block"
        i += 1
        block = []
        while not lines[i].startswith("```"):
            if lines[i].strip():
                block.append(lines[i])
            i += 1
        out[m.group(1)] = block
    return out


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def port_free(port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout * SLOW
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def test_running_it_yourself(tmp_path):
    blocks = doc_blocks()
    assert set(blocks) == {"serve", "client"}, blocks
    require(os.geteuid() == 0, "the README's server listens on port 443: run as root")
    require(all(port_free(p, k) for p in (443, 8080)
                for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM)),
            "ports 443 and 8080 must be free")
    background = []
    server = None
    err_path = tmp_path / "server.stderr"
    try:
        *setup, last = blocks["serve"]
        for line in setup:
            if line.rstrip().split("#")[0].rstrip().endswith("&"):
                cmd = line.split("#")[0].rstrip()[:-1]
                background.append(subprocess.Popen(
                    ["bash", "-c", "exec " + cmd], cwd=SRC,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True))
                continue
            p = subprocess.run(["bash", "-c", line], cwd=SRC, capture_output=True,
                               text=True, timeout=900)
            assert p.returncode == 0, "README command failed: %s\n%s%s" % (
                line, p.stdout[-2000:], p.stderr[-2000:])
        with open(err_path, "wb") as err:
            server = subprocess.Popen(["bash", "-c", "exec " + last], cwd=SRC,
                                      stdout=subprocess.DEVNULL, stderr=err)

        def ready():
            assert server.poll() is None, err_path.read_text()[-3000:]
            return " ready: " in err_path.read_text()
        wait_for(ready, 20, "the README's server to be ready")
        # The app was started in the background ("&"): a person types the
        # next commands after it is up; the test waits for it the same way.
        wait_for(lambda: accepts(8080), 30, "the README's app to listen on 8080")
        for line in blocks["client"]:
            p = subprocess.run(["bash", "-c", line], cwd=SRC, capture_output=True,
                               text=True, timeout=120)
            assert p.returncode == 0, "README command failed: %s\n%s%s" % (
                line, p.stdout[-2000:], p.stderr[-2000:])
            assert "Hello from a legacy HTTP/1.1 app" in p.stdout, p.stdout[-2000:]
        server.send_signal(signal.SIGTERM)
        assert server.wait(30 * SLOW) == 0, err_path.read_text()[-3000:]
        server = None
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for b in background:
            os.killpg(b.pid, signal.SIGTERM)
            b.wait(10)
