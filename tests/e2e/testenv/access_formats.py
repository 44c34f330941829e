"""The access log's formats read back ([server] access_log_format): kv
(parse_access_line in gateway.py), json and combined, each into a dict
under the kv names, so a test checks the three alike."""

import json
import re

from testenv.gateway import ACCESS_FIELD_RE, AccessLine, parse_access_line

# "host - - [21/Nov/2026:08:00:00 +0000] "GET / HTTP/3" 200 1234 "ref" "ua" k=v..."
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
COMBINED_RE = re.compile(
    r'^(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    + _QUOTED + r' (\d+) (\d+) ' + _QUOTED + ' ' + _QUOTED + r'(.*)$')

# The protocol as the request line of combined names it.
VERSION_OF = {"h3": "HTTP/3", "h2": "HTTP/2.0", "http/1.1": "HTTP/1.1"}


def unescape_nginx(s):
    r"""A quoted kv or combined value: \" and \\ by a backslash, other
    bytes as \xHH."""
    return re.sub(r'\\x([0-9a-f]{2})|\\(.)',
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), s)


def parse_json_line(line):
    """One JSON access log line: an AccessLine of its object (values keep
    their JSON types), with .raw and .time."""
    obj = json.loads(line)
    rec = AccessLine(obj)
    rec.raw = line
    rec.time = obj["time"]
    return rec


def parse_combined_line(line):
    """One combined line: the standard part as client (host only), method,
    path, version, status, out, referer, user_agent (strings, "-" as they
    are), and the key=value extensions after it."""
    m = COMBINED_RE.match(line)
    assert m, "not a combined line: %r" % line
    host, when, request, status, out, referer, agent, rest = m.groups()
    parts = unescape_nginx(request).split(" ")
    assert len(parts) >= 3, "request line %r" % request
    method, path, version = parts[0], " ".join(parts[1:-1]), parts[-1]
    rec = AccessLine(client=host, method=method, path=path, version=version,
                     status=status, out=out, referer=unescape_nginx(referer),
                     user_agent=unescape_nginx(agent))
    for f in ACCESS_FIELD_RE.finditer(rest):
        rec[f.group(1)] = unescape_nginx(f.group(2))
    rec.raw = line
    rec.time = when
    return rec


def parse_kv_line(line):
    """One kv line (parse_access_line), with its quoted values unescaped
    as h3gate escapes them."""
    rec = parse_access_line(line)
    for m in ACCESS_FIELD_RE.finditer(line.partition(" ")[2]):
        v = m.group(2)
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            rec[m.group(1)] = unescape_nginx(v[1:-1])
    return rec


PARSERS = {"kv": parse_kv_line, "json": parse_json_line, "combined": parse_combined_line}


def read_access(path, fmt):
    """The parsed lines of the access log file at path, in format fmt."""
    try:
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [PARSERS[fmt](line) for line in lines if line.strip()]
