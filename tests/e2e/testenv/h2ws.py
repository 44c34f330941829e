"""WebSocket messages over an HTTP/2 extended CONNECT stream (RFC 8441), on
an H2Raw connection: the client side of a gateway's RFC 8441 front end.

  with H2Raw(gw) as c:
      ws = H2WebSocket(c, "/echo", protocols=["chat"])
      assert ws.wait_response() == 200
      ws.send(b"bytes"); ws.recv()          # (wsframe.OP_BINARY, b"bytes")
      ws.close()                            # close handshake, END_STREAM

Frames are masked as a client's must be (wsframe); no extension is
offered unless the caller adds a sec-websocket-extensions field, so payloads
arrive as sent.
"""

import time

from testenv import wsframe


class H2WebSocket:
    def __init__(self, conn, path, protocols=(), extra=(), fields=None):
        self.c = conn
        extra = list(extra)
        if protocols:
            extra.append(("sec-websocket-protocol", ", ".join(protocols)))
        self.sid = conn.connect(path, extra=extra, fields=fields)
        self.msgs = wsframe.Messages()
        self.pending = []

    @property
    def stream(self):
        return self.c.streams[self.sid]

    @property
    def status(self):
        return self.stream.status

    def header(self, name):
        return self.stream.header(name)

    def wait_response(self, timeout=None):
        """The response's :status (None when the stream was reset first)."""
        st = self.stream
        self.c.run_until(lambda: st.status is not None or st.reset is not None
                         or self.c.goaway is not None, timeout)
        return st.status

    def wait_end(self, timeout=None):
        """Waits until the stream ended (END_STREAM from the gateway) or was
        reset; returns ("end", None) or ("reset", code)."""
        st = self.stream
        self.c.run_until(lambda: st.ended or st.reset is not None
                         or self.c.goaway is not None, timeout)
        return ("end", None) if st.ended else ("reset", st.reset)

    def send_frame(self, opcode, payload=b"", end_stream=False):
        self.c.send(self.sid, wsframe.encode(opcode, payload, mask=True),
                    end_stream=end_stream)

    def send(self, msg):
        self.send_frame(wsframe.OP_TEXT if isinstance(msg, str) else wsframe.OP_BINARY,
                        msg)

    def _take(self):
        st = self.stream
        if st.data:
            self.msgs.feed(bytes(st.data))
            del st.data[:]
            self.pending += self.msgs.messages()
        return bool(self.pending)

    def recv(self, timeout=None):
        """The next message (opcode, payload); a close frame is returned as
        (OP_CLOSE, payload). Fails when the stream ends first."""
        st = self.stream
        deadline = time.monotonic() + (timeout or self.c.timeout)
        while not self._take():
            if st.ended or st.reset is not None:
                raise AssertionError("stream %d %s before a message came" % (
                    self.sid, "ended" if st.ended else "reset (%s)" % st.reset))
            if time.monotonic() > deadline:
                raise AssertionError("no message on stream %d within %.0fs" % (
                    self.sid, timeout or self.c.timeout))
            if not self.c.pump(deadline):
                raise AssertionError("connection closed while waiting for a message")
        return self.pending.pop(0)

    def close(self, code=1000, reason=""):
        """Close handshake, then END_STREAM; returns the server's close
        (code, reason) and waits for its END_STREAM."""
        self.send_frame(wsframe.OP_CLOSE, wsframe.close_payload(code, reason))
        while True:
            op, payload = self.recv()
            if op == wsframe.OP_CLOSE:
                break
        self.c.send(self.sid, b"", end_stream=True)
        self.wait_end()
        return wsframe.parse_close(payload)
