"""The browser journey (issue 4): headless Chromium loads a page from the
HTTPS fallback listener over TCP + TLS, learns the gateway's Alt-Svc from
that response, and a later navigation of the same origin arrives over
HTTP/3 on the UDP port the field names.

Trust, and why QUIC is not forced. Chromium is told to accept the test
certificate by its key (--ignore-certificate-errors-spki-list, the base64
SHA-256 of the SubjectPublicKeyInfo in certs' spki.txt). That alone works
for TCP but not for QUIC: Chromium accepts a certificate from a non-public
root over QUIC only for hosts listed in --origin-to-force-quic-on. The test
therefore lists localhost with a port nothing uses (localhost:9): the host
"localhost" is on the list, so the alternative service's certificate is
accepted, while the real origin (localhost:<tcp port>) is not forced onto
QUIC. Chromium only goes to HTTP/3 because the gateway's Alt-Svc told it
to; the first navigation proves that by arriving over TCP.

Evidence: the gateway's access log (proto=http/1.1 or h2 for the first
navigation, proto=h3 for a later one) and Chromium's own view of each
document response (the DevTools protocol's Network.responseReceived
"protocol", and the navigation timing entry's nextHopProtocol).

Chromium is driven through the DevTools protocol by a short Node script
using chrome-remote-interface, a maintained DevTools client from the npm
registry (tests/e2e/browser, pinned in its package-lock.json and installed
by scripts/deps.sh with npm ci; it brings its own WebSocket, which Node 18
and 20 lack), so several navigations share one browser and one
alternative-service cache."""

import json
import os
import signal
import subprocess
import time

from conftest import CHROMIUM, SLOW, netlog_quic_requests, netlog_quic_trouble
from testenv.gateway import tcp_gw
from testenv.require import require
from testenv.wsbrowser import BROWSER_MODULES, NODE, node_env

# Navigations tried at most before the test gives up on seeing h3.
MAX_NAVIGATIONS = 8
JOURNEY_TIMEOUT = 60

CDP_SCRIPT = r"""
// argv: DevTools browser WebSocket URL, page URL, most navigations.
const [wsUrl, base, maxNav] = process.argv.slice(2);
const CDP = require("chrome-remote-interface");
const out = (o) => console.log(JSON.stringify(o));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The next event `method` of the session, or a rejection after ms.
function waitFor(client, method, sessionId, ms) {
  const name = method + "." + sessionId;
  return new Promise((resolve, reject) => {
    const l = (params) => { clearTimeout(t); resolve(params); };
    const t = setTimeout(() => {
      client.removeListener(name, l);
      reject(new Error("timeout"));
    }, ms);
    client.once(name, l);
  });
}

(async () => {
  let client;
  try {
    // The browser target itself, by the URL Chromium wrote to
    // DevToolsActivePort; `local` takes the protocol's description from
    // the package instead of asking the browser for it.
    client = await CDP({ target: wsUrl, local: true });
  } catch (e) {
    out({ event: "fatal", error: "DevTools connection failed: " + String(e) });
    process.exit(2);
  }
  let closing = false;
  client.on("disconnect", () => {
    if (closing) return;
    out({ event: "fatal", error: "DevTools connection closed" });
    process.exit(2);
  });
  try {
    const { targetId } = await client.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await client.send("Target.attachToTarget",
                                            { targetId, flatten: true });
    client.on("Network.responseReceived." + sessionId, (p) => {
      if (p.type !== "Document") return;
      const r = p.response;
      const h = Object.fromEntries(Object.entries(r.headers || {})
        .map(([k, v]) => [k.toLowerCase(), v]));
      out({ event: "response", url: r.url, protocol: r.protocol,
            status: r.status, altsvc: h["alt-svc"] || null });
    });
    await client.send("Network.enable", {}, sessionId);
    await client.send("Page.enable", {}, sessionId);
    let h3 = 0;
    for (let i = 1; i <= Number(maxNav) && h3 < 2; i++) {
      const url = base + "?nav=" + i;
      const load = waitFor(client, "Page.loadEventFired", sessionId, 15000);
      const r = await client.send("Page.navigate", { url }, sessionId);
      if (r.errorText) {
        load.catch(() => {}); // no load event will come for it
        out({ event: "navfail", url, error: r.errorText });
        continue;
      }
      await load;
      const ev = await client.send("Runtime.evaluate", {
        expression: "JSON.stringify([performance.getEntriesByType('navigation')[0]" +
                    ".nextHopProtocol, document.getElementById('marker') ? " +
                    "document.getElementById('marker').textContent : null])",
        returnByValue: true }, sessionId);
      const [proto, marker] = JSON.parse(ev.result.value);
      out({ event: "loaded", nav: i, url, protocol: proto, marker });
      if (proto === "h3") h3++;
      // Chromium validates the alternative in the background, and the
      // gateway closes the idle TCP connection after 1 s: wait past that.
      await sleep(1500);
    }
    closing = true;
    try { await client.send("Browser.close"); } catch (e) { /* closing */ }
    process.exit(0);
  } catch (e) {
    out({ event: "fatal", error: String(e) });
    process.exit(2);
  }
})();
"""


def chromium_cmd(profile, spki, netlog, extra=()):
    """Chromium's flags as DEPENDENCIES.md prescribes for this closed
    network, with the localhost:9 trust trick instead of forcing QUIC."""
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
            "--user-data-dir=%s" % profile,
            "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
            "--enable-quic", "--origin-to-force-quic-on=localhost:9",
            "--ignore-certificate-errors-spki-list=%s" % spki,
            "--log-net-log=%s" % netlog, "--net-log-capture-mode=Default",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            ] + list(extra) + ["about:blank"]


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def browser_journey(url, spki, workdir, max_nav=MAX_NAVIGATIONS,
                    timeout=JOURNEY_TIMEOUT):
    """Navigates one headless Chromium to url?nav=1, url?nav=2, ... until two
    loads came over h3 or max_nav were made. Returns the script's events
    (dicts) and the net-log text."""
    require(os.access(CHROMIUM, os.X_OK), "Chromium is not installed (%s)" % CHROMIUM)
    env = node_env()
    require(env is not None, "no Node.js with the npm package chrome-remote-interface "
            "(%s) to drive DevTools: run scripts/deps.sh" % BROWSER_MODULES)
    profile = os.path.join(workdir, "profile")
    os.makedirs(profile, exist_ok=True)
    netlog = os.path.join(workdir, "netlog.json")
    script = os.path.join(workdir, "journey.js")
    with open(script, "w") as f:
        f.write(CDP_SCRIPT)
    err_path = os.path.join(workdir, "chromium.stderr")
    deadline = time.monotonic() + timeout * SLOW
    with open(err_path, "wb") as err:
        # Its own process group, so a hung browser dies with its helpers.
        browser = subprocess.Popen(chromium_cmd(profile, spki, netlog),
                                   stdout=subprocess.DEVNULL, stderr=err,
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
                    raise AssertionError("Chromium gave no DevTools port:\n"
                                         + f.read()[-3000:])
            time.sleep(0.05)
        ws_url = "ws://127.0.0.1:%s%s" % (lines[0].strip(), lines[1].strip())
        left = max(5.0, deadline - time.monotonic())
        try:
            p = subprocess.run([NODE, script, ws_url, url, str(max_nav)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=left, env=env)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("the DevTools script did not finish within %.0fs; "
                                 "output so far:\n%s" % (left, (e.stdout or b"")
                                                         .decode(errors="replace")))
        events = [json.loads(line) for line in p.stdout.decode().splitlines()
                  if line.startswith("{")]
        assert p.returncode == 0, (p.returncode, events,
                                   p.stderr.decode(errors="replace")[-2000:])
        # Browser.close lets Chromium finish its net log cleanly.
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            pass
    finally:
        kill_group(browser)
    try:
        with open(netlog, errors="replace") as f:
            log = f.read()
    except FileNotFoundError:
        log = ""
    return events, log


def page_requests(gw):
    """The access log's records of the journey's page loads, in order."""
    return [r for r in gw.access_log() if r.get("path", "").startswith("/page?nav=")]


def test_browser_journey_tcp_then_h3(gateway, tmp_path):
    """First navigation over TCP + TLS with Alt-Svc, a later one over HTTP/3
    to the advertised UDP port, on the same origin (https://localhost:<tcp
    port>); the TCP and UDP ports differ, so Chromium followed the field."""
    # A browser applies Alt-Svc when it opens a new connection; it keeps
    # using a live h2 connection. A short TCP idle timeout (and the pause
    # between navigations, longer than it) makes each navigation need one.
    gw = tcp_gw(gateway, {"tcp": {"idle_timeout": "1s"}})
    assert gw.tcp_port != gw.port
    origin = "https://localhost:%d" % gw.tcp_port
    events, netlog = browser_journey(origin + "/page", gw.certs.spki, str(tmp_path))
    loads = [e for e in events if e.get("event") == "loaded"]
    responses = [e for e in events if e.get("event") == "response"]
    assert loads, events
    assert all(e["marker"] == "served-through-h3gate" for e in loads), loads

    # Chromium's view: the first document came over TCP (HTTP/1.1, or h2
    # once the fallback speaks it) carrying our Alt-Svc; a later one over h3.
    assert loads[0]["protocol"] in ("http/1.1", "h2"), loads
    first = responses[0]
    assert first["protocol"] in ("http/1.1", "h2"), responses
    assert first["altsvc"] == 'h3=":%d"; ma=86400' % gw.port, first
    h3_loads = [e for e in loads if e["protocol"] == "h3"]
    assert h3_loads, "no navigation came over HTTP/3: %s\nChromium's QUIC trouble:\n%s" % (
        loads, "\n".join(netlog_quic_trouble(netlog)))

    # The gateway's view, from its access log.
    gw.wait_access(lambda r: r.get("path", "").startswith("/page?nav="),
                   count=len(loads))
    recs = page_requests(gw)
    assert recs[0]["path"] == "/page?nav=1", [r.raw for r in recs]
    assert recs[0]["proto"] in ("http/1.1", "h2"), recs[0].raw
    h3_recs = [r for r in recs if r["proto"] == "h3"]
    assert h3_recs, [r.raw for r in recs]
    assert all(r["status"] == "200" for r in recs), [r.raw for r in recs]
    first_h3 = recs.index(h3_recs[0])
    assert first_h3 >= 1
    # Every load from the first h3 one on stays on h3.
    assert all(r["proto"] == "h3" for r in recs[first_h3:]), [r.raw for r in recs]
    assert {e["url"].rsplit("?", 1)[1] for e in h3_loads} == \
        {r["path"].rsplit("?", 1)[1] for r in h3_recs}

    # And Chromium's net log: those requests went over QUIC, to the origin.
    quic = [path for _, path in netlog_quic_requests(netlog, gw.tcp_port)]
    if netlog:
        for r in h3_recs:
            assert r["path"] in quic, (r["path"], quic)
        assert "/page?nav=1" not in quic, quic


def test_no_h3_advertised_when_quic_disabled(gateway, tmp_path):
    """With [listener] enabled = no the fallback advertises nothing (as
    test_20 checks with libcurl), and the browser stays on TCP for every
    navigation."""
    gw = gateway({"listener": {"enabled": "no"}, "tcp": {"port": "any"}})
    events, _ = browser_journey("https://localhost:%d/page" % gw.tcp_port, gw.certs.spki,
                                str(tmp_path), max_nav=3)
    loads = [e for e in events if e.get("event") == "loaded"]
    assert len(loads) == 3, events
    assert all(e["protocol"] in ("http/1.1", "h2") for e in loads), loads
    assert all(e.get("altsvc") is None for e in events
               if e.get("event") == "response"), events
    recs = page_requests(gw)
    assert len(recs) == 3 and all(r["proto"] in ("http/1.1", "h2") for r in recs), \
        [r.raw for r in recs]
