"""A tiny RFC 6455 frame codec, for test clients that carry WebSocket bytes
themselves (the HTTP/2 extended CONNECT client, the raw upstream server).

  data = encode(OP_TEXT, b"hi")                 # a masked client frame
  d = Decoder(); d.feed(data); d.frames()       # [Frame(fin, opcode, ...)]
  m = Messages(); m.feed(data); m.messages()    # [(OP_TEXT, b"hi")], control
                                                # frames as they come

Masking XORs the payload as one big integer: linear, and fast enough for
16 MiB in Python.
"""

import base64
import hashlib
import os
import struct

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (str or bytes)."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def xor_mask(data, mask):
    n = len(data)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def encode(opcode, payload=b"", mask=True, fin=True, rsv=0):
    """One frame. mask: True (client frames), False (server frames)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        return head + key + xor_mask(payload, key)
    return head + bytes(payload)


def close_payload(code=1000, reason=""):
    return struct.pack(">H", code) + reason.encode()


def parse_close(payload):
    """(code, reason) of a close frame's payload; (1005, "") when empty."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack(">H", payload[:2])[0], payload[2:].decode(errors="replace")


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode = fin, rsv, opcode
        self.masked, self.payload = masked, payload

    def __repr__(self):
        return "Frame(op=%d fin=%d rsv=%d masked=%d len=%d)" % (
            self.opcode, self.fin, self.rsv, self.masked, len(self.payload))


class Decoder:
    """Frames out of a byte stream fed in pieces; payloads come unmasked."""

    def __init__(self):
        self.buf = bytearray()
        self.out = []

    def feed(self, data):
        self.buf += data
        while True:
            f = self._one()
            if f is None:
                break
            self.out.append(f)

    def _one(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, pos = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack(">Q", b[2:10])[0], 10
        masked = bool(b[1] & 0x80)
        end = pos + (4 if masked else 0) + n
        if len(b) < end:
            return None
        payload = bytes(b[end - n:end])
        if masked:
            payload = xor_mask(payload, bytes(b[pos:pos + 4]))
        f = Frame(bool(b[0] & 0x80), (b[0] >> 4) & 7, b[0] & 0x0F, masked, payload)
        del b[:end]
        return f

    def frames(self):
        out, self.out = self.out, []
        return out


class Messages(Decoder):
    """Whole messages: (opcode, payload), fragments joined; control frames
    (close, ping, pong) are returned where they arrive."""

    def __init__(self):
        super().__init__()
        self.partial = None

    def messages(self):
        out = []
        for f in self.frames():
            if f.opcode >= OP_CLOSE:
                out.append((f.opcode, f.payload))
            elif f.opcode == OP_CONT:
                self.partial[1].append(f.payload)
            else:
                self.partial = (f.opcode, [f.payload])
            if f.opcode < OP_CLOSE and f.fin:
                op, parts = self.partial
                out.append((op, b"".join(parts)))
                self.partial = None
        return out
