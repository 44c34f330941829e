"""Headless Chromium opening one page and reading what the page reported
(window.result, once document.title is "PASS" or "FAIL"), driven through the
DevTools protocol by a short Node script with chrome-remote-interface
(tests/e2e/browser, installed by scripts/deps.sh), as test_22 does.

  result, events = page_result(url, certs.spki, workdir, extra_flags)

The browser trusts the test certificate by its key and resolves every
name but localhost to nothing (DEPENDENCIES.md). extra_flags: e.g.
["--disable-http2"] to keep Chromium on HTTP/1.1.
"""

import json
import os
import shutil
import signal
import subprocess
import time

from testenv.gateway import CHROMIUM, SLOW
from testenv.require import require

NODE = shutil.which("node") or "/usr/bin/node"
BROWSER_MODULES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "..", "browser", "node_modules"))

CDP_SCRIPT = r"""
// argv: DevTools browser WebSocket URL, page URL, timeout in ms.
const [wsUrl, url, ms] = process.argv.slice(2);
const CDP = require("chrome-remote-interface");
const out = (o) => console.log(JSON.stringify(o));
const sleep = (t) => new Promise((r) => setTimeout(r, t));
(async () => {
  const client = await CDP({ target: wsUrl, local: true });
  const { targetId } = await client.send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await client.send("Target.attachToTarget", { targetId, flatten: true });
  client.on("Network.webSocketCreated." + sessionId, (p) => out({ event: "ws-created", url: p.url }));
  client.on("Network.webSocketHandshakeResponseReceived." + sessionId,
            (p) => out({ event: "ws-handshake", status: p.response.status }));
  client.on("Network.webSocketClosed." + sessionId, () => out({ event: "ws-closed" }));
  client.on("Network.responseReceived." + sessionId, (p) => {
    if (p.type === "Document") out({ event: "response", protocol: p.response.protocol });
  });
  await client.send("Network.enable", {}, sessionId);
  await client.send("Page.enable", {}, sessionId);
  const nav = await client.send("Page.navigate", { url }, sessionId);
  if (nav.errorText) { out({ event: "navfail", error: nav.errorText }); process.exit(2); }
  const deadline = Date.now() + Number(ms);
  for (;;) {
    const ev = await client.send("Runtime.evaluate", {
      // Not "!== 'pending'": until the page commits this runs in about:blank.
      expression: "['PASS', 'FAIL'].includes(document.title) ? " +
                  "JSON.stringify(window.result || null) : null",
      returnByValue: true }, sessionId);
    if (ev.result && ev.result.value) { out({ event: "result", result: JSON.parse(ev.result.value) }); break; }
    if (Date.now() > deadline) { out({ event: "timeout" }); break; }
    await sleep(50);
  }
  try { await client.send("Browser.close"); } catch (e) { /* closing */ }
  process.exit(0);
})().catch((e) => { out({ event: "fatal", error: String(e) }); process.exit(2); });
"""


def node_env():
    if not os.access(NODE, os.X_OK):
        return None
    env = dict(os.environ, NODE_PATH=BROWSER_MODULES)
    p = subprocess.run([NODE, "-e", "require.resolve('chrome-remote-interface')"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return env if p.returncode == 0 else None


def page_result(url, spki, workdir, extra_flags=(), timeout=40):
    """Opens url in a fresh headless Chromium; returns (window.result or
    None, the script's events)."""
    require(os.access(CHROMIUM, os.X_OK), "Chromium is not installed (%s)" % CHROMIUM)
    env = node_env()
    require(env is not None, "no Node.js with the npm package chrome-remote-interface "
            "(%s): run scripts/deps.sh" % BROWSER_MODULES)
    profile = os.path.join(workdir, "profile")
    os.makedirs(profile, exist_ok=True)
    script = os.path.join(workdir, "page.js")
    with open(script, "w") as f:
        f.write(CDP_SCRIPT)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
           "--user-data-dir=%s" % profile,
           "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
           "--ignore-certificate-errors-spki-list=%s" % spki,
           "--log-net-log=%s" % os.path.join(workdir, "netlog.json"),
           "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
           ] + list(extra_flags) + ["about:blank"]
    err_path = os.path.join(workdir, "chromium.stderr")
    deadline = time.monotonic() + timeout * SLOW
    with open(err_path, "wb") as err:
        browser = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                   stdin=subprocess.DEVNULL, cwd=workdir,
                                   start_new_session=True)
    try:
        active = os.path.join(profile, "DevToolsActivePort")
        while True:
            if os.path.exists(active):
                with open(active) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[1].startswith("/devtools/browser/"):
                    break
            if browser.poll() is not None or time.monotonic() > deadline:
                with open(err_path, errors="replace") as f:
                    raise AssertionError("Chromium gave no DevTools port:\n" + f.read()[-3000:])
            time.sleep(0.05)
        ws_url = "ws://127.0.0.1:%s%s" % (lines[0].strip(), lines[1].strip())
        left = max(5.0, deadline - time.monotonic())
        p = subprocess.run([NODE, script, ws_url, url, str(int(left * 1000) - 2000)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=left + 5, env=env)
        events = [json.loads(line) for line in p.stdout.decode().splitlines()
                  if line.startswith("{")]
        assert p.returncode == 0, (p.returncode, events,
                                   p.stderr.decode(errors="replace")[-2000:])
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            pass
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            pass
    results = [e["result"] for e in events if e.get("event") == "result"]
    return (results[0] if results else None), events
