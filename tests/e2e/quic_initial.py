"""A QUIC v1 client that only ever sends its first flight.

For tests that need many handshakes which never finish (handshake limits,
tokens from a chosen source address): each attempt is a real client Initial
(RFC 9000 §17.2.2, protected as RFC 9001 §5 says) carrying a complete TLS
1.3 ClientHello (x25519, TLS_AES_128_GCM_SHA256, ALPN h3, QUIC transport
parameters), so the gateway creates a connection and answers with its
handshake flight. The client never reads that flight's keys and never sends
another packet, so the gateway's connection stays in the handshake until its
handshake timeout.

What came back for each attempt is classified from the server's packets:
"handshake" (an Initial with CRYPTO data or a Handshake packet: the server
holds state for it), "retry" (with the token, which follow_retry() echoes),
("close", error code) for a stateless CONNECTION_CLOSE, or None.

Needs python3-cryptography (AES-GCM and AES-ECB; HKDF is done with hmac).
"""
import hashlib
import hmac
import os
import socket
import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION_1 = 0x00000001
INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")

CONNECTION_REFUSED = 0x02
INVALID_TOKEN = 0x0b


# --------------------------------------------------------------------------
# keys (RFC 9001 §5.2)

def _hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand_label(secret, label, length):
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


class Keys:
    def __init__(self, dcid, side):
        initial = _hkdf_extract(INITIAL_SALT_V1, dcid)
        secret = _hkdf_expand_label(initial, side, 32)
        self.key = _hkdf_expand_label(secret, b"quic key", 16)
        self.iv = _hkdf_expand_label(secret, b"quic iv", 12)
        self.hp = _hkdf_expand_label(secret, b"quic hp", 16)

    def nonce(self, pn):
        return bytes(a ^ b for a, b in zip(self.iv, pn.to_bytes(12, "big")))

    def mask(self, sample):
        enc = Cipher(algorithms.AES(self.hp), modes.ECB()).encryptor()
        return enc.update(sample) + enc.finalize()


# --------------------------------------------------------------------------
# encoding

def varint(v):
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return struct.pack("!H", 0x4000 | v)
    if v < 0x40000000:
        return struct.pack("!I", 0x80000000 | v)
    return struct.pack("!Q", 0xc000000000000000 | v)


def read_varint(b, i):
    n = 1 << (b[i] >> 6)
    v = b[i] & 0x3f
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def _ext(typ, body):
    return struct.pack("!HH", typ, len(body)) + body


def _x25519_public():
    return X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def client_hello(scid, sni="localhost"):
    """A TLS 1.3 ClientHello as a QUIC client sends it (RFC 9001 §8)."""
    name = sni.encode()
    def param(pid, v):
        return varint(pid) + varint(len(varint(v))) + varint(v)
    # What an HTTP/3 client announces: the server opens its control and
    # QPACK streams as soon as it has 1-RTT keys.
    tp = (varint(0x0f) + varint(len(scid)) + scid              # initial_scid
          + param(0x01, 30000)                                  # idle timeout
          + param(0x04, 1 << 20)                                # max_data
          + param(0x05, 1 << 18) + param(0x06, 1 << 18)         # stream data
          + param(0x07, 1 << 18)
          + param(0x08, 0) + param(0x09, 3))                    # streams
    exts = b"".join([
        _ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),
        _ext(10, struct.pack("!HH", 2, 0x001d)),                # x25519
        _ext(13, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401)),
        _ext(16, struct.pack("!HB", 3, 2) + b"h3"),
        _ext(43, struct.pack("!BH", 2, 0x0304)),
        _ext(51, struct.pack("!HHH", 36, 0x001d, 32) + _x25519_public()),
        _ext(0x39, tp),
    ])
    body = (b"\x03\x03" + os.urandom(32) + b"\x00"               # no session id
            + struct.pack("!HH", 2, 0x1301) + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    return b"\x01" + len(body).to_bytes(3, "big") + body


def initial_packet(dcid, scid, token=b"", pn=0, crypto=None, size=1200, offset=0):
    """A protected client Initial of size bytes (the datagram minimum);
    crypto (default: a whole ClientHello) goes in one CRYPTO frame at
    offset."""
    keys = Keys(dcid, b"client in")
    crypto = client_hello(scid) if crypto is None else crypto
    frames = b"\x06" + varint(offset) + varint(len(crypto)) + crypto
    pnlen = 4
    head = (bytes([0xc0 | (pnlen - 1)]) + struct.pack("!I", VERSION_1)
            + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
            + varint(len(token)) + token)
    # Length field: 2 bytes of varint, covers the packet number and payload.
    overhead = len(head) + 2 + pnlen + 16
    frames += b"\x00" * max(0, size - overhead - len(frames))
    length = pnlen + len(frames) + 16
    header = head + struct.pack("!H", 0x4000 | length) + pn.to_bytes(pnlen, "big")
    ct = AESGCM(keys.key).encrypt(keys.nonce(pn), frames, header)
    pn_off = len(header) - pnlen
    mask = keys.mask(ct[4 - pnlen:4 - pnlen + 16])
    out = bytearray(header + ct)
    out[0] ^= mask[0] & 0x0f
    for k in range(pnlen):
        out[pn_off + k] ^= mask[1 + k]
    return bytes(out)


# --------------------------------------------------------------------------
# decoding what the server sent

def _frames_of_initial(pkt, pn_off, length, keys):
    """Decrypts one server Initial; returns its plaintext or None."""
    sample = pkt[pn_off + 4:pn_off + 20]
    if len(sample) < 16:
        return None
    mask = keys.mask(sample)
    first = pkt[0] ^ (mask[0] & 0x0f)
    pnlen = (first & 0x03) + 1
    pn = 0
    for k in range(pnlen):
        pn = (pn << 8) | (pkt[pn_off + k] ^ mask[1 + k])
    header = bytearray(pkt[:pn_off + pnlen])
    header[0] = first
    for k in range(pnlen):
        header[pn_off + k] = pkt[pn_off + k] ^ mask[1 + k]
    try:
        return AESGCM(keys.key).decrypt(keys.nonce(pn), pkt[pn_off + pnlen:pn_off + length],
                                        bytes(header))
    except InvalidTag:
        return None


def _scan_frames(p):
    """("close", code), ("handshake", None) for CRYPTO data, or None."""
    i, crypto = 0, False
    while i < len(p):
        t = p[i]
        i += 1
        if t in (0x00, 0x01):
            continue
        if t in (0x02, 0x03):
            _, i = read_varint(p, i)
            _, i = read_varint(p, i)
            n, i = read_varint(p, i)
            _, i = read_varint(p, i)
            for _ in range(2 * n):
                _, i = read_varint(p, i)
            if t == 0x03:
                for _ in range(3):
                    _, i = read_varint(p, i)
        elif t == 0x06:
            _, i = read_varint(p, i)
            n, i = read_varint(p, i)
            i += n
            crypto = True
        elif t == 0x1c:
            code, i = read_varint(p, i)
            return ("close", code)
        else:
            break
    return ("handshake", None) if crypto else None


def parse_datagram(data, keys_for):
    """[(dcid, outcome, extra)] for the long-header packets in data.
    keys_for(dcid) gives the Keys to open a server Initial sent to dcid."""
    out = []
    i = 0
    while i < len(data) and data[i] & 0x80:
        first = data[i]
        version = struct.unpack("!I", data[i + 1:i + 5])[0]
        j = i + 5
        dl = data[j]
        dcid = data[j + 1:j + 1 + dl]
        j += 1 + dl
        sl = data[j]
        scid = data[j + 1:j + 1 + sl]
        j += 1 + sl
        if version == 0:
            out.append((dcid, "version_negotiation", None))
            break
        typ = (first >> 4) & 0x03
        if typ == 3:
            out.append((dcid, "retry", (scid, data[j:len(data) - 16])))
            break
        if typ == 0:
            tl, j = read_varint(data, j)
            j += tl
        length, j = read_varint(data, j)
        if typ == 0:
            keys = keys_for(dcid)
            plain = _frames_of_initial(data[i:j + length], j - i, length, keys) \
                if keys else None
            found = _scan_frames(plain) if plain is not None else None
            if found is not None:
                out.append((dcid,) + found)
        elif typ == 2:
            out.append((dcid, "handshake", None))
        i = j + length
    return out


# --------------------------------------------------------------------------
# the client

class Attempt:
    """One connection attempt: its connection IDs and what came back."""

    def __init__(self, dcid, scid, token=b""):
        self.dcid = dcid          # the destination CID of our last Initial
        self.scid = scid
        self.token = token
        self.outcome = None       # "handshake", "retry", "close" or None
        self.close_code = None
        self.retry = None         # (new dcid, token) of a Retry

    def __repr__(self):
        return "<Attempt %s %s>" % (self.outcome, self.close_code)


class InitialFlood:
    """Connection attempts from one UDP socket bound to source (any
    loopback address on Linux: 127.0.0.2 works without configuration)."""

    def __init__(self, port, host="127.0.0.1", source="127.0.0.1"):
        self.dest = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.by_scid = {}

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self, n=1, token=b""):
        """Sends n new attempts, each with its own connection IDs."""
        made, packets = [], []
        for _ in range(n):
            a = Attempt(os.urandom(8), os.urandom(8), token)
            self.by_scid[a.scid] = a
            packets.append(initial_packet(a.dcid, a.scid, token))
            made.append(a)
        # Built first, then sent back to back: the burst takes microseconds,
        # and sent_span says on which clock seconds it went out.
        first = time.monotonic()
        for p in packets:
            self.sock.sendto(p, self.dest)
        self.sent_span = (first, time.monotonic())
        return made

    def start_in_pieces(self, cuts, order=None):
        """One new attempt whose ClientHello goes in CRYPTO frames cut at
        the byte offsets cuts, one frame an Initial, sent in order (a
        permutation of the pieces' indexes; default as they come)."""
        a = Attempt(os.urandom(8), os.urandom(8))
        self.by_scid[a.scid] = a
        ch = client_hello(a.scid)
        bounds = [0] + list(cuts) + [len(ch)]
        pieces = list(zip(bounds, bounds[1:]))
        for pn, k in enumerate(order if order is not None else range(len(pieces))):
            lo, hi = pieces[k]
            self.sock.sendto(initial_packet(a.dcid, a.scid, pn=pn, crypto=ch[lo:hi],
                                            offset=lo), self.dest)
        return a

    def follow_retry(self, attempts):
        """Echoes the token of each attempt that got a Retry, as a client
        does (a new Initial to the Retry's source CID); resets outcomes."""
        for a in attempts:
            assert a.outcome == "retry", a
            a.dcid, a.token = a.retry
            a.outcome = a.close_code = a.retry = None
            self.sock.sendto(initial_packet(a.dcid, a.scid, a.token), self.dest)

    def collect(self, attempts, timeout=2.0, quiet=0.5):
        """Reads answers until each attempt has one, or until timeout, or
        until nothing arrived for quiet seconds after the first answer.
        Returns the attempts."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if all(a.outcome is not None for a in attempts):
                break
            wait = deadline - time.monotonic()
            if last is not None:
                wait = min(wait, last + quiet - time.monotonic())
                if wait <= 0:
                    break
            self.sock.settimeout(max(wait, 0.001))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            last = time.monotonic()
            for dcid, kind, extra in parse_datagram(data, self._keys_for):
                a = self.by_scid.get(dcid)
                if a is None or a.outcome in ("handshake", "close"):
                    continue
                a.outcome = kind
                if kind == "close":
                    a.close_code = extra
                elif kind == "retry":
                    a.retry = extra
        return attempts

    def _keys_for(self, dcid):
        a = self.by_scid.get(dcid)
        return Keys(a.dcid, b"server in") if a is not None else None


def outcomes(attempts):
    """{outcome: count}, with closes as "close:0x<code>"."""
    out = {}
    for a in attempts:
        k = a.outcome if a.outcome != "close" else "close:0x%x" % a.close_code
        out[k] = out.get(k, 0) + 1
    return out


def read_token_file(path):
    """The token in a gtlsclient --token-file (PEM "QUIC TOKEN")."""
    import base64
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("-----")]
    return base64.b64decode("".join(lines))


def write_token_file(path, token):
    import base64
    b = base64.b64encode(token).decode()
    with open(path, "w") as f:
        f.write("-----BEGIN QUIC TOKEN-----\n")
        for k in range(0, len(b), 64):
            f.write(b[k:k + 64] + "\n")
        f.write("-----END QUIC TOKEN-----\n")
