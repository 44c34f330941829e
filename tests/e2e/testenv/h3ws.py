"""Runner for h3ws (tests/tools/h3ws.c), the WebSocket-over-HTTP/3 (RFC
9220) load and test client: extended CONNECT tunnels over one or more QUIC
connections, echoes checked byte for byte, a JSON report.

  rep = run_h3ws(gw, "--tunnels", 10, "--messages", 5, "--size", "1,64K")
  rep["tunnels_ok"], rep["statuses"], rep["failures"]

run_h3ws returns the parsed report (a dict) with two more keys: "exit"
(h3ws's exit status: 0 when every tunnel did what was expected, 4 when
one failed, 3 when a handshake did not complete) and "stderr". It fails
the test on a usage or local error (status 1 or 2) or when no report came.
start_h3ws starts it in the background (H3wsRun.wait() gives the report),
for tests that watch the gateway while the tunnels run.

Environment: H3GATE_H3WS, the binary (ctest sets it to <build>/tests/h3ws).
Missing, the test is skipped, or fails under CI (testenv.require).
"""

import json
import os
import subprocess
import tempfile

from testenv.require import require

H3WS = os.environ.get("H3GATE_H3WS", "")
SANITIZE = os.environ.get("H3GATE_SANITIZE", "").strip().lower() in (
    "1", "on", "true", "yes")
SLOW = 3.0 if SANITIZE else 1.0

H3_MESSAGE_ERROR = 0x10E
H3_REQUEST_CANCELLED = 0x10C
H3_CONNECT_ERROR = 0x10F


def require_h3ws():
    require(H3WS and os.path.isfile(H3WS) and os.access(H3WS, os.X_OK),
            "h3ws not available: set H3GATE_H3WS to <build>/tests/h3ws "
            "(got %r)" % H3WS)


def h3ws_command(gw, *args, timeout=30.0):
    """The command line: gw's UDP port, its CA, then args (str()'d)."""
    return [H3WS, "--host", "127.0.0.1", "--port", str(gw.port),
            "--ca", gw.certs.ca, "--authority", gw.authority,
            "--timeout", str(timeout * SLOW)] + [str(a) for a in args]


class H3wsRun:
    """h3ws running in the background."""

    def __init__(self, cmd):
        self.cmd = cmd
        self._dir = tempfile.TemporaryDirectory(prefix="h3ws-")
        self.out = open(os.path.join(self._dir.name, "out"), "w+b")
        self.err = open(os.path.join(self._dir.name, "err"), "w+b")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err,
                                     cwd=self._dir.name)

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("h3ws did not finish in %.0f s: %s" % (
                timeout, " ".join(self.cmd)))
        self.out.seek(0)
        self.err.seek(0)
        stdout = self.out.read().decode("latin-1")
        stderr = self.err.read().decode("latin-1")
        self.out.close()
        self.err.close()
        self._dir.cleanup()
        assert rc in (0, 3, 4), "h3ws exited %d:\n%s\n%s\ncommand: %s" % (
            rc, stderr, stdout, " ".join(self.cmd))
        lines = [x for x in stdout.splitlines() if x.strip()]
        assert lines, "h3ws printed no report (exit %d):\n%s" % (rc, stderr)
        rep = json.loads(lines[-1])
        rep["exit"] = rc
        rep["stderr"] = stderr
        return rep


def start_h3ws(gw, *args, timeout=30.0):
    require_h3ws()
    return H3wsRun(h3ws_command(gw, *args, timeout=timeout))


def run_h3ws(gw, *args, timeout=30.0):
    """Runs h3ws against gw with args; returns its report (see above)."""
    return start_h3ws(gw, *args, timeout=timeout).wait(timeout * SLOW + 30)


def summary(rep):
    """A short text of a report for assertion messages."""
    keys = ("exit", "settings_enable_connect_protocol", "tunnels",
            "tunnels_ok", "tunnels_failed", "statuses", "messages_ok",
            "mismatches", "resets_received", "stop_sending_received",
            "server_end", "server_close_codes", "first_response_headers",
            "first_response_body", "failures")
    conns = [{k: c.get(k) for k in ("index", "handshake", "connection_close",
                                    "local_error", "goaway")}
             for c in rep.get("connections", [])][:3]
    return json.dumps(dict({k: rep.get(k) for k in keys}, connections=conns),
                      indent=1)
