"""One upstream server of a group, in a process of its own, that says who
it is: every response carries `X-Upstream-Id: ID`, and its JSON body names
the server and echoes what it received (method, target, header fields, body
length). Each request head is recorded as one JSON line appended to a log
file before anything is answered, so the records survive a SIGKILL and a
restart on the same address appends to them.

Listens on host:port (port 0: the kernel's choice) or unix:/path, and prints
"listening on ADDRESS" once it accepts connections.

Query parameters: delay=MS waits before answering (with delay_on=ID1,ID2
only on the servers named there); status=N answers N;
close=1 answers with "Connection: close" and closes; reset_on=ID1,ID2 and
drop_on=... make the servers named there read the whole request and then
reset the connection (RST) or close it (FIN) without a response byte.

Standard library only. Run alone: /usr/bin/python3 idserver.py --id a1
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse


class Server:
    def __init__(self, ident, listen, log_path):
        self.ident = ident
        self.listen = listen
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) \
            if log_path else None
        self.seq = 0
        self.conns = 0
        self.lock = threading.Lock()

    def bind(self):
        if self.listen.startswith("unix:"):
            path = self.listen[len("unix:"):]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            address = "unix:" + path
        else:
            host, _, port = self.listen.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
            p = s.getsockname()[1]
            address = ("[%s]:%d" if fam == socket.AF_INET6 else "%s:%d") % (host, p)
        s.listen(1024)
        self.sock = s
        return address

    def record(self, rec):
        if self.log_fd is not None:
            os.write(self.log_fd, (json.dumps(rec) + "\n").encode())

    def serve_forever(self):
        while True:
            conn, _ = self.sock.accept()
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.serve_conn, args=(conn,), daemon=True).start()

    def serve_conn(self, conn):
        rfile = conn.makefile("rb", buffering=65536)
        with self.lock:
            self.conns += 1
            conn_id = self.conns
        try:
            while self.serve_one(conn, rfile, conn_id):
                pass
        except (OSError, ValueError):
            pass
        finally:
            try:
                rfile.close()
                conn.close()
            except OSError:
                pass

    def serve_one(self, conn, rfile, conn_id):
        line = rfile.readline(65537)
        if not line:
            return False
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers = []
        while True:
            h = rfile.readline(65537)
            if not h:
                return False
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append([k.strip(), v.strip()])
        lower = {}
        for k, v in headers:
            lower.setdefault(k.lower(), v)
        with self.lock:
            self.seq += 1
            seq = self.seq
        self.record({"id": self.ident, "seq": seq, "conn": conn_id, "t": time.time(),
                     "method": method,
                     "target": target, "host": lower.get("host"),
                     "rid": lower.get("x-request-id"), "headers": headers})
        if lower.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body_len = 0
        if "transfer-encoding" in lower:
            while True:
                size = int(rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body_len += len(rfile.read(size))
                rfile.readline(16)
        elif "content-length" in lower:
            n = int(lower["content-length"])
            while n > 0:
                got = rfile.read(min(n, 262144))
                if not got:
                    return False
                body_len += len(got)
                n -= len(got)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
        if "delay" in q and ("delay_on" not in q
                             or self.ident in q["delay_on"].split(",")):
            time.sleep(float(q["delay"]) / 1000.0)
        if self.ident in q.get("reset_on", "").split(","):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return False
        if self.ident in q.get("drop_on", "").split(","):
            conn.shutdown(socket.SHUT_RDWR)
            return False
        status = int(q.get("status", "200"))
        close = q.get("close") == "1" or lower.get("connection", "").lower() == "close"
        body = json.dumps({"id": self.ident, "seq": seq, "method": method, "target": target,
                           "headers": headers, "body_len": body_len}).encode()
        head = ["HTTP/1.1 %d %s" % (status, "OK" if status == 200 else "Status"),
                "X-Upstream-Id: %s" % self.ident,
                "Content-Type: application/json",
                "Content-Length: %d" % len(body)]
        if close:
            head.append("Connection: close")
        out = ("\r\n".join(head) + "\r\n\r\n").encode()
        if method != "HEAD" and status not in (204, 304):
            out += body
        conn.sendall(out)
        return not close


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--id", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    srv = Server(args.id, args.listen, args.log)
    address = srv.bind()
    print("listening on %s" % address, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
