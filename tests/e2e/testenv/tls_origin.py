"""An HTTP/1.1 origin over TLS (Python's ssl module), for upstream TLS tests.

Every request is answered with a JSON object saying what the TLS layer saw:
the server name the client sent (SNI), whether the session was resumed,
the client certificate's subject when one was presented, the ALPN protocol,
and the request's path and Host. Handshake failures are recorded too, so a
test can tell "refused by the gateway" from "never reached the origin".
"""

import json
import socket
import ssl
import threading


class TLSOrigin:
    def __init__(self, cert, key, client_ca=None):
        """client_ca: a CA file; when given, a client certificate signed by
        it is required."""
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.ctx.sni_callback = self._on_sni
        self.sni_seen = []
        self.handshakes = []   # dicts: sni, resumed, client_cert, alpn
        self.failures = []     # handshake errors (text)
        self.requests = 0
        self._lock = threading.Lock()
        # Both loopbacks, so that "localhost" reaches it whichever address
        # the system's resolver gives first (::1 on some machines).
        self.sock = socket.socket(socket.AF_INET6)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _on_sni(self, sslobj, name, ctx):
        with self._lock:
            self.sni_seen.append(name)

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._lock:
                self.failures.append(str(e))
            raw.close()
            return
        peer = s.getpeercert()
        info = {
            "sni": getattr(s, "server_hostname", None),
            "resumed": s.session_reused,
            "client_cert": (dict(x[0] for x in peer.get("subject", ()))
                            .get("commonName") if peer else None),
            "alpn": s.selected_alpn_protocol(),
        }
        with self._lock:
            info["sni"] = self.sni_seen[-1] if self.sni_seen else None
            self.handshakes.append(info)
        f = s.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                host = None
                length = 0
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode().partition(":")
                    if name.lower() == "host":
                        host = value.strip()
                    if name.lower() == "content-length":
                        length = int(value.strip())
                if length:
                    f.read(length)
                with self._lock:
                    self.requests += 1
                body = json.dumps(dict(info, path=target, host=host,
                                       method=method)).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self._stop = True
        self.sock.close()
