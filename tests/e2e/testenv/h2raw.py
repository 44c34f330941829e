"""A scripted HTTP/2 client over TLS (python3-h2 for framing), for what
libcurl cannot do: send PRIORITY_UPDATE frames (RFC 9218 §7.1), read the
server's SETTINGS, and record in which order the server interleaved the
DATA of its responses; and open RFC 8441 extended CONNECT tunnels
(connect(), send(), the stream's bytes kept in .data; testenv/h2ws.py
carries WebSocket messages over them).

  with H2Raw(gw) as c:
      s = c.request("/bytes/100", [("priority", "u=1")])
      c.priority_update(s, "u=0")
      c.run_until_done([s])
      c.streams[s].status, c.streams[s].data_first, c.remote_settings
"""

import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

FRAME_PRIORITY_UPDATE = 0x10
SETTINGS_NO_RFC7540_PRIORITIES = 0x9


class StreamResult:
    def __init__(self, sid):
        self.sid = sid
        self.status = None
        self.headers = []
        self.body_len = 0
        self.data_first = -1  # on a counter shared by all streams
        self.data_last = -1
        self.ended = False
        self.reset = None
        self.keep = False       # keep the DATA bytes in .data
        self.data = bytearray()

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Raw:
    def __init__(self, gw, timeout=10.0, read_rate=None, conn_window=64 << 20,
                 see_past_goaway=False, validate=True):
        """read_rate (bytes/s): read no faster. conn_window: the connection
        flow-control window (the protocol's default, 65535, at least).
        validate=False lets python3-h2 send header blocks it would refuse
        (malformed requests, on purpose).
        see_past_goaway: record a GOAWAY frame (goaway, goaway_last_stream)
        but keep it from python3-h2, which would refuse the frames of the
        streams a graceful GOAWAY lets finish.
        A small connection window makes the server choose, at every
        WINDOW_UPDATE, which of its streams with data goes next, so its
        scheduling shows whatever the kernel's socket buffers hold."""
        self.gw = gw
        self.timeout = timeout
        self.read_rate = read_rate
        self.read_bytes = 0
        self.read_t0 = None
        ctx = ssl.create_default_context(cafile=gw.certs.ca)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if read_rate:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", gw.tcp_port))
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                      validate_outbound_headers=validate,
                                      normalize_outbound_headers=validate))
        self.conn.initiate_connection()
        # Large windows, so flow control never decides which stream the
        # server sends next: the server's scheduler does.
        self.conn.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 * 1024 * 1024})
        if conn_window > 65535:
            self.conn.increment_flow_control_window(conn_window - 65535)
        self.flush()
        self.streams = {}
        self.remote_settings = {}
        self.goaway = None
        self.goaway_last_stream = None
        self.see_past_goaway = see_past_goaway
        self.inbuf = b""
        self.seq = 0

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, extra=(), method="GET", end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"),
                  (":authority", self.gw.authority), (":path", path)] + list(extra)
        self.conn.send_headers(sid, fields, end_stream=end_stream)
        self.flush()
        self.streams[sid] = StreamResult(sid)
        return sid

    def connect(self, path, protocol="websocket", extra=(), fields=None):
        """Opens an extended CONNECT stream (RFC 8441 §4) whose DATA is kept
        in .data: fields replaces the whole pseudo-header list when given
        (malformed requests). Returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        if fields is None:
            fields = [(":method", "CONNECT"), (":protocol", protocol),
                      (":scheme", "https"), (":path", path),
                      (":authority", self.gw.authority)]
        self.conn.send_headers(sid, list(fields) + list(extra), end_stream=False)
        self.flush()
        self.streams[sid] = StreamResult(sid)
        self.streams[sid].keep = True
        return sid

    def send(self, sid, data, end_stream=False, timeout=None):
        """Sends data on stream sid as flow control allows, reading (and
        answering) the peer while its windows are shut; fails when no
        credit comes for timeout seconds."""
        t = timeout or self.timeout
        done = self.send_some(sid, data, stall=t)
        if done < len(data):
            raise AssertionError("h2raw: no flow-control credit on stream %d for %.0fs"
                                 % (sid, t))
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def send_some(self, sid, data, stall):
        """Sends what flow control lets through until all of data is sent or
        no credit came for stall seconds; returns the bytes sent."""
        view = memoryview(data)
        sent = 0
        deadline = time.monotonic() + stall
        while sent < len(view):
            st = self.streams[sid]
            if st.reset is not None or (self.goaway is not None
                                        and not self.see_past_goaway):
                raise AssertionError("h2raw: stream %d reset (%s) or GOAWAY (%s) while "
                                     "sending" % (sid, st.reset, self.goaway))
            n = min(len(view) - sent, self.conn.local_flow_control_window(sid),
                    self.conn.max_outbound_frame_size)
            if n <= 0:
                if time.monotonic() > deadline:
                    break
                if not self.pump(min(deadline, time.monotonic() + 0.2)):
                    raise AssertionError("h2raw: connection closed while sending")
                continue
            self.conn.send_data(sid, bytes(view[sent:sent + n]))
            sent += n
            self.flush()
            deadline = time.monotonic() + stall
        return sent

    def reset_stream(self, sid, code=0x8):
        self.conn.reset_stream(sid, code)
        self.flush()

    def priority_update(self, sid, value, frame_stream=0):
        """Writes a PRIORITY_UPDATE frame (h2 does not know the type)."""
        self.flush()
        payload = struct.pack(">I", sid & 0x7FFFFFFF) + value.encode()
        hdr = struct.pack(">I", len(payload))[1:] + bytes([FRAME_PRIORITY_UPDATE, 0])
        hdr += struct.pack(">I", frame_stream)
        self.sock.sendall(hdr + payload)

    def _on_event(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.remote_settings[int(k)] = v.new_value
        elif isinstance(ev, h2.events.ResponseReceived):
            st = self.streams[ev.stream_id]
            st.headers = [(k, v) for k, v in ev.headers]
            st.status = int(dict(ev.headers)[":status"])
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams[ev.stream_id]
            if ev.data:
                if st.data_first < 0:
                    st.data_first = self.seq
                st.data_last = self.seq
                self.seq += 1
                if st.keep:
                    st.data += ev.data
            st.body_len += len(ev.data)
            self.conn.acknowledge_received_data(ev.flow_controlled_length,
                                               ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.streams[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code

    def pump(self, deadline):
        """Reads and handles what arrives until deadline; False on EOF."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(256 * 1024)
        except socket.timeout:
            return True
        if not data:
            return False
        if self.read_rate:
            if self.read_t0 is None:
                self.read_t0 = time.monotonic()
            self.read_bytes += len(data)
            ahead = self.read_bytes / self.read_rate - (time.monotonic() - self.read_t0)
            if ahead > 0:
                time.sleep(ahead)
        if self.see_past_goaway:
            data = self._strip_goaway(data)
        for ev in self.conn.receive_data(data):
            self._on_event(ev)
        self.flush()
        return True

    def _strip_goaway(self, data):
        """The whole frames of what arrived, less GOAWAY frames (recorded);
        a partial frame waits for the rest."""
        self.inbuf += data
        out = []
        while len(self.inbuf) >= 9:
            length = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + length:
                break
            frame, self.inbuf = self.inbuf[:9 + length], self.inbuf[9 + length:]
            if frame[3] == 0x7:     # GOAWAY: last stream id, error code
                self.goaway_last_stream = int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF
                self.goaway = int.from_bytes(frame[13:17], "big")
            else:
                out.append(frame)
        return b"".join(out)

    def run_until(self, predicate, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("h2raw: condition not met in time; streams: %r"
                                     % {k: vars(v) for k, v in self.streams.items()})
            if not self.pump(deadline):
                break
        return predicate()

    def run_until_done(self, sids, timeout=None):
        return self.run_until(
            lambda: all(self.streams[s].ended or self.streams[s].reset is not None
                        for s in sids) or self.goaway is not None, timeout)

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
