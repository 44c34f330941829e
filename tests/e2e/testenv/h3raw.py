"""Scripts for h3raw (tests/tools/h3raw.c), the raw HTTP/3 client that can
send any frame on any stream, and a runner that returns its report.

  run = run_h3raw(gw, Script(Stream().headers(get(gw, "/x")).fin()))
  run.streams[0]["status"], run.conn["connection_close"]

Environment: H3GATE_H3RAW, the binary (ctest sets it to <build>/tests/h3raw).
"""

import json
import os
import subprocess
import tempfile

from testenv.require import require

H3RAW = os.environ.get("H3GATE_H3RAW", "")
SANITIZE = os.environ.get("H3GATE_SANITIZE", "").strip().lower() in (
    "1", "on", "true", "yes")
SLOW = 3.0 if SANITIZE else 1.0

# HTTP/3 frame types and error codes (RFC 9114 §7.2, §8.1; RFC 9218 §7.2:
# PRIORITY_UPDATE is 0xF0700 for request streams, 0xF0701 for pushes).
FRAME_DATA = 0x0
FRAME_HEADERS = 0x1
FRAME_CANCEL_PUSH = 0x3
FRAME_SETTINGS = 0x4
FRAME_PUSH_PROMISE = 0x5
FRAME_GOAWAY = 0x7
FRAME_MAX_PUSH_ID = 0xD
FRAME_PRIORITY_UPDATE = 0xF0700
FRAME_PRIORITY_UPDATE_PUSH = 0xF0701
# Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2).
STREAM_CONTROL = 0x0
STREAM_PUSH = 0x1
STREAM_QPACK_ENCODER = 0x2
STREAM_QPACK_DECODER = 0x3
# HTTP/3 and QPACK error codes (RFC 9114 §8.1, RFC 9204 §6).
H3_NO_ERROR = 0x100
H3_GENERAL_PROTOCOL_ERROR = 0x101
H3_INTERNAL_ERROR = 0x102
H3_STREAM_CREATION_ERROR = 0x103
H3_CLOSED_CRITICAL_STREAM = 0x104
H3_FRAME_UNEXPECTED = 0x105
H3_FRAME_ERROR = 0x106
H3_EXCESSIVE_LOAD = 0x107
H3_ID_ERROR = 0x108
H3_SETTINGS_ERROR = 0x109
H3_MISSING_SETTINGS = 0x10A
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E
QPACK_DECOMPRESSION_FAILED = 0x200
QPACK_ENCODER_STREAM_ERROR = 0x201
QPACK_DECODER_STREAM_ERROR = 0x202


def frame(ftype, payload=b""):
    """An HTTP/3 frame's bytes: type, length, payload."""
    return varint(ftype) + varint(len(payload)) + payload


def q(b):
    """A quoted h3raw script string for bytes (str is taken as latin-1)."""
    if isinstance(b, str):
        b = b.encode("latin-1")
    out = ['"']
    for c in b:
        if 0x20 <= c < 0x7F and c not in (0x22, 0x5C):
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    out.append('"')
    return "".join(out)


def varint(n):
    """QUIC variable-length integer encoding (RFC 9000 §16)."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    if n < 1 << 30:
        return (n | 0x80000000).to_bytes(4, "big")
    return (n | 0xC000000000000000).to_bytes(8, "big")


def get(gw, path, extra=(), method="GET"):
    """The field list of a simple request to gw."""
    return [(":method", method), (":scheme", "https"),
            (":authority", gw.authority), (":path", path)] + list(extra)


class Stream:
    """The actions of one request stream in an h3raw script."""

    def __init__(self):
        self.lines = ["stream"]

    def headers(self, fields):
        self.lines.append("headers")
        for name, value in fields:
            self.lines.append("  field %s %s" % (q(name), q(value)))
        self.lines.append("end")
        return self

    def static_headers(self, lines):
        """Field lines given as h3raw commands (static, static-name...)."""
        self.lines += ["headers"] + ["  " + x for x in lines] + ["end"]
        return self

    def data(self, b):
        self.lines.append("data %s" % q(b))
        return self

    def raw(self, b):
        self.lines.append("raw %s" % q(b))
        return self

    def frame(self, ftype, payload):
        self.lines.append("frame %d %s" % (ftype, q(payload)))
        return self

    def control(self, ftype, payload):
        """A frame on our control stream, sent when this action runs."""
        self.lines.append("control %d %s" % (ftype, q(payload)))
        return self

    def priority_update(self, stream_id, value):
        """RFC 9218 §7.2 PRIORITY_UPDATE for a request stream."""
        return self.control(FRAME_PRIORITY_UPDATE, varint(stream_id) + value.encode())

    # Our unidirectional streams (h3raw.c: control-raw, encoder, decoder,
    # uni, ...); each runs in this stream's turn.
    def _uni(self, word, *args):
        self.lines.append(" ".join([word] + [str(a) for a in args]))
        return self

    def control_raw(self, b):
        """Bytes as they are on our control stream."""
        return self._uni("control-raw", q(b))

    def control_fin(self):
        return self._uni("control-fin")

    def control_reset(self, code):
        return self._uni("control-reset", code)

    def encoder(self, b):
        """Bytes on our QPACK encoder stream."""
        return self._uni("encoder", q(b))

    def encoder_fin(self):
        return self._uni("encoder-fin")

    def encoder_reset(self, code):
        return self._uni("encoder-reset", code)

    def decoder(self, b):
        """Bytes on our QPACK decoder stream."""
        return self._uni("decoder", q(b))

    def decoder_fin(self):
        return self._uni("decoder-fin")

    def decoder_reset(self, code):
        return self._uni("decoder-reset", code)

    def uni(self, b):
        """Opens one more unidirectional stream carrying b as it is (its
        stream type first: varint(type) + ...)."""
        return self._uni("uni", q(b))

    def uni_send(self, b):
        return self._uni("uni-send", q(b))

    def uni_fin(self):
        return self._uni("uni-fin")

    def uni_reset(self, code):
        return self._uni("uni-reset", code)

    def uni_wait_closed(self):
        """Waits until the newest uni stream is closed (the server stopped
        reading it, or its end was acknowledged)."""
        return self._uni("uni-wait-closed")

    def stop_server(self, stream_type, code):
        """STOP_SENDING on the server's unidirectional stream of that type."""
        return self._uni("stop-server", stream_type, code)

    def pause(self, ms):
        self.lines.append("pause %d" % ms)
        return self

    def fin(self):
        self.lines.append("fin")
        return self

    def reset(self, code):
        self.lines.append("reset %d" % code)
        return self

    def stop(self, code):
        """STOP_SENDING on this stream: we want no more of the response."""
        self.lines.append("stop %d" % code)
        return self


class Script:
    def __init__(self, *streams, concurrent=False, linger=100, timeout_ms=None,
                 settings=(), omit=(), no_settings=False):
        """settings: (id, value) pairs of our SETTINGS frame; omit: names of
        our streams not to open ("control", "encoder", "decoder");
        no_settings: our control stream starts with no SETTINGS frame."""
        self.streams = list(streams)
        self.concurrent = concurrent
        self.linger = linger
        self.timeout_ms = timeout_ms
        self.settings = list(settings)
        self.omit = list(omit)
        self.no_settings = no_settings

    def text(self):
        lines = ["linger %d" % self.linger]
        if self.concurrent:
            lines.append("concurrent")
        if self.timeout_ms is not None:
            lines.append("timeout %d" % self.timeout_ms)
        for sid, value in self.settings:
            lines.append("setting %d %d" % (sid, value))
        for name in self.omit:
            lines.append("omit %s" % name)
        if self.no_settings:
            lines.append("no-settings")
        for s in self.streams:
            lines += s.lines
        return "\n".join(lines) + "\n"


class Run:
    """What h3raw reported: .streams (one dict per script stream, in script
    order) and .conn (the connection line)."""

    def __init__(self, script, stdout, stderr):
        self.script = script
        lines = [json.loads(x) for x in stdout.splitlines() if x.strip()]
        self.streams = lines[:-1]
        self.conn = lines[-1]
        self.stderr = stderr

    def __repr__(self):
        return "h3raw script:\n%s\nh3raw output:\n%s\n%s" % (
            self.script, "\n".join(json.dumps(s) for s in self.streams),
            json.dumps(self.conn))


def run_h3raw(gw, script, timeout=5.0, refused_ok=False):
    """Runs h3raw against gw's UDP port in a scratch directory. refused_ok:
    a handshake that did not complete (h3raw's exit status 3, e.g. the
    server refused the connection) is a result too, not a failure."""
    require(H3RAW and os.path.isfile(H3RAW) and os.access(H3RAW, os.X_OK),
            "h3raw not available: set H3GATE_H3RAW to <build>/tests/h3raw "
            "(got %r)" % H3RAW)
    text = script.text() if isinstance(script, Script) else script
    with tempfile.TemporaryDirectory(prefix="h3raw-") as d:
        path = os.path.join(d, "script.h3raw")
        with open(path, "w", encoding="latin-1") as f:
            f.write(text)
        p = subprocess.run(
            [H3RAW, "--host", "127.0.0.1", "--port", str(gw.port),
             "--ca", gw.certs.ca, "--timeout", str(timeout * SLOW),
             "--script", path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="latin-1", timeout=60 * SLOW, cwd=d)
    assert p.returncode == 0 or (refused_ok and p.returncode == 3), "h3raw exited %d:\n%s\n%s\nscript:\n%s" % (
        p.returncode, p.stderr, p.stdout, text)
    return Run(text, p.stdout, p.stderr)
