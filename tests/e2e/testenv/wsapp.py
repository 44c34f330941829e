"""A WebSocket upstream application for h3gate's tests, in a process of its
own (a slow or stuck upstream can never block the test), built on Debian's
python3-websockets 10.4.

Two listeners on 127.0.0.1, ports of the kernel's choosing, printed as one
JSON line on stdout ({"port": N, "raw_port": M, "pid": P}):

port: python3-websockets' server; the path chooses the behaviour.
  /echo             echoes every message, text and binary (64 MiB at most)
  /headers          first sends the upgrade request as a JSON text message
                    {"path", "headers": [[name, value], ...]}, then echoes
  /close-after/N    echoes N messages, then closes (1000, "after N")
  /slow             stops reading the socket (backpressure towards the
                    gateway) until WsApp.resume() (SIGUSR1), then echoes
  /slow-echo/BPS    echoes, but takes messages in at most BPS bytes a second
                    on average (a slow reader that keeps reading)
  /sink             reads and counts; a text message "?" is answered with
                    {"bytes": B, "messages": M} (the count before the "?")
  /broadcast        each message goes to every open /broadcast connection
  /refuse/N         answers N (403, 404, 400...) with a small text body, no
                    upgrade ("refused N\n")
  /page             a small HTML page (plain HTTP) that opens
                    wss://<its host>/echo and reports in document.title
  anything else without Upgrade: 200, a JSON body {"plain": true, "path",
                    "headers"} (a request the gateway did not upgrade)
  The server accepts permessage-deflate and the subprotocols "chat" and
  "superchat" when offered.

raw_port: a plain asyncio server for upgrades a library would refuse to
  give: /bad-accept (101 with a wrong Sec-WebSocket-Accept), /no-accept,
  /no-upgrade (101 without Upgrade), /frames-with-101 (101 and a server
  text frame "first" in the same write, then echoes), /reset-after-101 (101,
  then a TCP reset), /reset-on-data (101, then a reset at the first byte
  received), /echo (a frame-level echo). The last path segment chooses,
  so a gateway's route prefix may come first (/raw/bad-accept).
  ?delay_ms=N waits N ms before the 101 and records the bytes that came
  before it ("early_bytes" of the raw-101 event): a gateway must hold a
  client's tunnel bytes until the 101.

Every happening is one JSON line appended to the events file, so tests wait
for events instead of sleeping:
  {"event": "request", "server": "ws"|"raw", "path", "headers", "upgrade"}
  {"event": "open", "conn", "path", "headers"}
  {"event": "paused"|"resumed", "conn", "path"}
  {"event": "closed", "conn", "path", "code", "reason", "close_rcvd",
   "lost" (null, or the error that ended the TCP connection, e.g.
   "ConnectionResetError"), "in_bytes", "in_msgs", "out_bytes", "out_msgs"}
  {"event": "raw-101", "path", "early_bytes"}
  {"event": "raw-closed", "path", "how": "eof"|"reset"|"app", "in_bytes"}

  app = WsApp(tmpdir).start(); app.address; app.wait_event(...); app.stop()
"""

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------
# the test side


class WsApp:
    """This file run as a child process; its events file read back."""

    def __init__(self, workdir, name="wsapp"):
        self.name = name
        self.events_path = os.path.join(workdir, "%s-events.jsonl" % name)
        self.stderr_path = os.path.join(workdir, "%s-stderr.log" % name)
        self.proc = None
        self.port = self.raw_port = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def raw_address(self):
        return "127.0.0.1:%d" % self.raw_port

    def start(self, timeout=10.0):
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--events", self.events_path],
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        assert line, "wsapp did not start:\n" + self.stderr_text()
        info = json.loads(line)
        self.port, self.raw_port = info["port"], info["raw_port"]
        return self

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def events(self, event=None, **match):
        """Events so far, optionally those of one kind whose fields equal
        match's."""
        try:
            with open(self.events_path) as f:
                evs = [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []
        return [e for e in evs if (event is None or e["event"] == event)
                and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, event, predicate=None, count=1, timeout=10.0, **match):
        """Waits until count events of this kind match (fields equal to
        match's, and predicate(e) if given); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.events(event, **match)
                   if predicate is None or predicate(e)]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    "%s: %d %r event(s) matching %r within %.0fs, want %d; events:\n%s"
                    % (self.name, len(got), event, match, timeout, count,
                       "\n".join(json.dumps(e) for e in self.events()[-20:])))
            time.sleep(0.02)

    def resume(self):
        """Every /slow connection starts reading again."""
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self._err.close()


# --------------------------------------------------------------------------
# the server side (this file run as a program)

PAGE = """<!doctype html><meta charset="utf-8"><title>pending</title>
<script>
// Opens wss://<this host>/echo, checks text and binary echoes (up to 1 MiB)
// byte for byte, closes; the outcome lands in window.result and the title.
function pattern(n) {
  const a = new Uint8Array(n); let x = n;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; a[i] = x >>> 24; }
  return a;
}
async function run() {
  const ws = new WebSocket("wss://" + location.host + "/echo", ["chat"]);
  ws.binaryType = "arraybuffer";
  const queue = []; let wake = null;
  ws.onmessage = e => { queue.push(e.data); if (wake) { wake(); wake = null; } };
  const next = () => queue.length ? Promise.resolve(queue.shift())
    : new Promise(r => { wake = () => r(queue.shift()); });
  const closed = new Promise(r => { ws.onclose = r; });
  await new Promise((ok, bad) => {
    ws.onopen = ok;
    ws.onerror = () => bad(new Error("WebSocket error before open"));
  });
  const out = {protocol: ws.protocol, extensions: ws.extensions, sizes: []};
  for (const text of ["hello", "h\u00e9llo \u2713", "x".repeat(70000)]) {
    ws.send(text);
    const got = await next();
    if (got !== text) throw new Error("text echo differs (" + text.length + " chars)");
  }
  for (const n of [1, 125, 126, 65535, 65536, 1 << 20]) {
    const sent = pattern(n);
    ws.send(sent);
    const got = new Uint8Array(await next());
    if (got.length !== n) throw new Error("binary " + n + ": got " + got.length);
    for (let i = 0; i < n; i++)
      if (got[i] !== sent[i]) throw new Error("binary " + n + ": byte " + i + " differs");
    out.sizes.push(n);
  }
  ws.close(1000, "bye");
  const e = await closed;
  out.close = {code: e.code, clean: e.wasClean};
  return out;
}
run().then(out => { window.result = {ok: true, ...out}; document.title = "PASS"; },
           err => { window.result = {ok: false, error: String(err)}; document.title = "FAIL"; });
</script>
"""


def serve(events_path):
    import asyncio
    import socket
    import struct
    from http import HTTPStatus

    import websockets
    import websockets.legacy.server

    sys.path.insert(0, HERE)
    import wsframe

    out = open(events_path, "a", buffering=1)

    def note(event, **fields):
        fields = dict(event=event, t=time.time(), **fields)
        out.write(json.dumps(fields) + "\n")

    state = {"conns": 0, "paused": {}, "broadcast": set()}

    class Protocol(websockets.legacy.server.WebSocketServerProtocol):
        lost = None

        def connection_lost(self, exc):
            self.lost = exc
            super().connection_lost(exc)

    # python3-websockets 10.4 writes an early response's status with
    # .value and .phrase: it must be an HTTPStatus.
    async def process_request(path, headers):
        upgrade = "websocket" in headers.get("Upgrade", "").lower()
        note("request", server="ws", path=path, upgrade=upgrade,
             headers=list(headers.raw_items()))
        parts = path.split("?")[0].strip("/").split("/")
        if parts[0] == "refuse":
            status = int(parts[1])
            return HTTPStatus(status), [("Content-Type", "text/plain")], b"refused %d\n" % status
        if parts[0] == "page":
            return HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8")], PAGE.encode()
        if not upgrade:
            body = json.dumps({"plain": True, "path": path,
                               "headers": list(headers.raw_items())}).encode()
            return HTTPStatus.OK, [("Content-Type", "application/json")], body
        return None

    async def handler(ws):
        state["conns"] += 1
        cid = state["conns"]
        st = {"in_bytes": 0, "in_msgs": 0, "out_bytes": 0, "out_msgs": 0}
        path = ws.path
        parts = path.split("?")[0].strip("/").split("/")
        note("open", conn=cid, path=path, headers=list(ws.request_headers.raw_items()))

        def size(msg):
            return len(msg.encode() if isinstance(msg, str) else msg)

        async def send(msg):
            st["out_bytes"] += size(msg)
            st["out_msgs"] += 1
            await ws.send(msg)

        async def messages(limit=None):
            while limit is None or st["in_msgs"] < limit:
                msg = await ws.recv()
                st["in_bytes"] += size(msg)
                st["in_msgs"] += 1
                yield msg

        try:
            kind = parts[0]
            if kind == "headers":
                await send(json.dumps({"path": path,
                                       "headers": list(ws.request_headers.raw_items())}))
            if kind == "slow":
                ws.transport.pause_reading()
                resume = asyncio.Event()
                state["paused"][cid] = (ws, resume)
                note("paused", conn=cid, path=path)
                await asyncio.wait([asyncio.ensure_future(resume.wait()),
                                    asyncio.ensure_future(ws.wait_closed())],
                                   return_when=asyncio.FIRST_COMPLETED)
                note("resumed", conn=cid, path=path)
            if kind == "sink":
                sunk = {"bytes": 0, "messages": 0}
                async for msg in messages():
                    if msg == "?":
                        await send(json.dumps(sunk))
                    else:
                        sunk["bytes"] += size(msg)
                        sunk["messages"] += 1
            elif kind == "broadcast":
                state["broadcast"].add(ws)
                async for msg in messages():
                    websockets.broadcast(state["broadcast"], msg)
            elif kind == "slow-echo":
                rate = int(parts[1])
                async for msg in messages():
                    await asyncio.sleep(size(msg) / rate)
                    await send(msg)
            else:
                limit = int(parts[1]) if kind == "close-after" else None
                async for msg in messages(limit):
                    await send(msg)
                if limit is not None:
                    await ws.close(1000, "after %d" % limit)
        except websockets.ConnectionClosed:
            pass
        finally:
            state["broadcast"].discard(ws)
            state["paused"].pop(cid, None)
            await ws.wait_closed()
            lost = type(ws.lost).__name__ if ws.lost is not None else None
            rcvd = ws.close_rcvd
            note("closed", conn=cid, path=path, code=ws.close_code,
                 reason=ws.close_reason, close_rcvd=rcvd is not None, lost=lost, **st)

    def resume_all():
        for ws, ev in list(state["paused"].values()):
            ws.transport.resume_reading()
            ev.set()

    # ---- the raw server ----------------------------------------------------

    async def raw_conn(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = [[k.strip(), v.strip()] for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)]
        key = next((v for k, v in headers if k.lower() == "sec-websocket-key"), "")
        note("request", server="raw", path=path, headers=headers,
             upgrade=any(k.lower() == "upgrade" for k, _ in headers))
        kind = path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        query = dict(q.split("=", 1) for q in path.partition("?")[2].split("&") if "=" in q)
        if "delay_ms" in query:
            await asyncio.sleep(int(query["delay_ms"]) / 1000.0)
            await asyncio.sleep(0)
        # What came after the request head before the 101 (asyncio has
        # read all the socket held into the reader's buffer by now).
        early = len(reader._buffer)
        fields = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                  ("Sec-WebSocket-Accept", wsframe.accept_for(key))]
        if kind == "bad-accept":
            fields[2] = ("Sec-WebSocket-Accept", wsframe.accept_for("not the key"))
        elif kind == "no-accept":
            del fields[2]
        elif kind == "no-upgrade":
            del fields[0]
        resp = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(
            "%s: %s\r\n" % f for f in fields) + "\r\n"
        data = resp.encode()
        if kind == "frames-with-101":
            data += wsframe.encode(wsframe.OP_TEXT, b"first", mask=False)
        writer.write(data)
        await writer.drain()
        note("raw-101", path=path, early_bytes=early)

        sock = writer.get_extra_info("socket")

        def reset():
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        how, got = "eof", 0
        msgs = wsframe.Messages()
        try:
            if kind == "reset-after-101":
                reset()
                how = "app"
                return
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                got += len(data)
                if kind == "reset-on-data":
                    reset()
                    how = "app"
                    return
                if kind not in ("echo", "frames-with-101"):
                    continue
                msgs.feed(data)
                for op, payload in msgs.messages():
                    if op == wsframe.OP_PING:
                        op = wsframe.OP_PONG
                    elif op == wsframe.OP_PONG:
                        continue
                    writer.write(wsframe.encode(op, payload, mask=False))
                    if op == wsframe.OP_CLOSE:
                        await writer.drain()
                        writer.close()
                        how = "app"
                        return
                await writer.drain()
        except ConnectionResetError:
            how = "reset"
        finally:
            note("raw-closed", path=path, how=how, in_bytes=got)
            if how == "eof":
                writer.close()

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, resume_all)
        ws_server = await websockets.serve(
            handler, "127.0.0.1", 0, create_protocol=Protocol,
            process_request=process_request, max_size=64 << 20, max_queue=4,
            subprotocols=["chat", "superchat"], ping_interval=None)
        raw_server = await asyncio.start_server(raw_conn, "127.0.0.1", 0)
        print(json.dumps({"port": ws_server.sockets[0].getsockname()[1],
                          "raw_port": raw_server.sockets[0].getsockname()[1],
                          "pid": os.getpid()}), flush=True)
        await stop.wait()
        ws_server.close()
        raw_server.close()

    asyncio.run(main())


if __name__ == "__main__":
    import argparse
    import logging
    ap = argparse.ArgumentParser(description="WebSocket upstream app for tests")
    ap.add_argument("--events", required=True, help="JSON-lines events file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    serve(args.events)
