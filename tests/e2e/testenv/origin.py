"""The scripted origin (upstream.py) in a process of its own, for tests that
kill it: a SIGKILLed origin dies as a crashed application would, its
sockets closed by the kernel, and it can be started again on the same
port."""

import os
import signal
import subprocess
import sys
import time

HERE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
UPSTREAM_PY = os.path.join(HERE, "upstream.py")


class OriginProcess:
    """upstream.py --port N in a child process. The first start() takes a
    port of the kernel's choosing; later ones reuse it."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = 0
        self.proc = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [sys.executable, UPSTREAM_PY, "--host", self.host, "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        assert "listening on" in line, "upstream.py did not start: %r" % line
        self.port = int(line.strip().rsplit(":", 1)[1])
        assert time.monotonic() < deadline
        return self

    def kill(self, timeout=10.0):
        """SIGKILL, and wait until it is gone (its sockets closed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout)
        if self.proc is not None:
            self.proc.stdout.close()

    stop = kill
