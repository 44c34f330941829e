"""A small, bounded load generator on libcurl's multi interface: a fixed
number of requests, at most `concurrency` at once, optionally started at a
steady rate, over HTTP/3, HTTP/2 (multiplexed on one connection) or
HTTP/1.1 (keep-alive, one connection per concurrent request). Easy handles
are reused, so thousands of requests cost little besides the gateway's and
the upstreams' work."""

import time

from testenv.clients import (CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2TLS,
                             CURL_HTTP_VERSION_3ONLY, _Transfer, pycurl)
from testenv.gateway import SLOW


def run_load(gw, specs, proto="h2", concurrency=16, rate=None, timeout=60,
             keep=4096):
    """specs: a list of dicts {"path", and _Transfer keywords: method, body,
    headers, timeout...}. rate: requests started per second (None: as fast
    as concurrency allows). Returns the Results, in the order of specs; a
    transfer that failed has .error set. Raises when the whole run takes
    longer than timeout."""
    port = gw.port if proto == "h3" else gw.tcp_port
    version = {"h3": CURL_HTTP_VERSION_3ONLY, "h2": CURL_HTTP_VERSION_2TLS,
               "http/1.1": CURL_HTTP_VERSION_1_1}[proto]
    m = pycurl.CurlMulti()
    if proto == "http/1.1":
        m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_NOTHING)
        m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, concurrency)
    else:
        m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
    m.setopt(pycurl.M_MAXCONNECTS, concurrency + 4)
    idle = [pycurl.Curl() for _ in range(concurrency)]
    results = [None] * len(specs)
    running = {}
    nxt = 0
    t0 = time.monotonic()
    deadline = t0 + timeout * SLOW
    try:
        while nxt < len(specs) or running:
            now = time.monotonic()
            while idle and nxt < len(specs) and (rate is None or now >= t0 + nxt / rate):
                spec = dict(specs[nxt])
                path = spec.pop("path")
                spec.setdefault("keep", keep)
                c = idle.pop()
                c.reset()
                t = _Transfer(c, "https://localhost:%d%s" % (port, path), port,
                              gw.certs.ca, **spec)
                c.setopt(pycurl.HTTP_VERSION, version)
                if proto != "http/1.1":
                    c.setopt(pycurl.PIPEWAIT, 1)
                running[id(c)] = (nxt, t)
                m.add_handle(c)
                nxt += 1
            while m.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            while True:
                queued, ok_list, err_list = m.info_read()
                done = [(c, None) for c in ok_list] + [
                    (c, (code, msg)) for c, code, msg in err_list]
                for c, err in done:
                    i, t = running.pop(id(c))
                    results[i] = t.finish(err)
                    results[i].index = i
                    m.remove_handle(c)
                    idle.append(c)
                if not queued:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("load: %d of %d requests unfinished after %.0f s"
                                     % (len(running) + len(specs) - nxt, len(specs),
                                        timeout * SLOW))
            if running:
                wait = 0.05
                if rate is not None and nxt < len(specs):
                    wait = max(0.0, min(wait, t0 + nxt / rate - time.monotonic()))
                m.select(wait)
            elif rate is not None and nxt < len(specs):
                time.sleep(max(0.0, t0 + nxt / rate - time.monotonic()))
    finally:
        for c in list(idle):
            c.close()
        for _, (i, t) in list(running.items()):
            m.remove_handle(t.c)
            t.c.close()
        m.close()
    return results
