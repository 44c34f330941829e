"""--check-config on files with [upstream NAME] and [route NAME] sections
(docs/routes.md): each mistake is reported as
`FILE:LINE: [section NAME] key: reason` with exit status 2 (duplicate
names, a route naming a missing group, two routes matching the same host
and path, bad server addresses and weights, an unreadable tls_ca, a route
without upstream, a group without server, several groups and no route);
a good file prints its route table (names, hosts, paths, group, servers)
in matching order and exits 0."""

import re
import subprocess

import pytest

from conftest import H3GATE_BIN, SLOW, render_ini
from testenv.groups import block_line_of, group, render_blocks, route, section_line_of


def base(certs):
    return render_ini({
        "server": {"log_level": "info", "admin": "off"},
        "listener": {"address": "127.0.0.1", "port": "any", "cert": certs.cert,
                     "key": certs.key},
    })


def write(tmp_path, certs, blocks, name="h3gate.ini"):
    text = base(certs) + "\n" + render_blocks(blocks)
    p = tmp_path / name
    p.write_text(text)
    return str(p), text


def check(path, *args):
    return subprocess.run([H3GATE_BIN, "--check-config", path] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=20 * SLOW)


def problems(p, path):
    """(line, rest) of every "FILE:LINE: rest" line on stderr."""
    out = []
    for line in p.stderr.decode(errors="replace").splitlines():
        m = re.match(r"^%s:(\d+): (.*)$" % re.escape(path), line)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def assert_reported(p, path, lines, section, key, mention=None):
    """Exit 2 and a `FILE:LINE: [section] key: reason` line, LINE in lines
    (key None: `[section]` followed by ': ' or ' KEY: '; a tuple: any of
    those keys)."""
    text = p.stderr.decode(errors="replace")
    assert p.returncode == 2, "exit %d (want 2):\n%s%s" % (
        p.returncode, p.stdout.decode(), text)
    if key is None:
        want = re.compile(r"^\[%s\](?: [a-z_]+)?: \S" % re.escape(section))
    else:
        keys = key if isinstance(key, tuple) else (key,)
        want = re.compile(r"^\[%s\] (?:%s): \S" % (
            re.escape(section), "|".join(re.escape(k) for k in keys)))
    found = [(n, rest) for n, rest in problems(p, path) if want.match(rest)]
    assert found, "want '%s:LINE: [%s] %s: <reason>', got:\n%s" % (
        path, section, key or "", text)
    assert any(n in lines for n, _ in found), (
        "reported at line %s, want one of %s:\n%s" % ([n for n, _ in found],
                                                     sorted(lines), text))
    if mention is not None:
        assert any(mention in rest for _, rest in found), (
            "the message does not name %r:\n%s" % (mention, text))


S1, S2 = "127.0.0.1:8081", "127.0.0.1:8082"


def good_blocks():
    return [group("web", [S1, S2]), group("api", ["127.0.0.1:9001"]),
            route("api", "api", host="app.example.com", path="/api/"),
            route("web", "web", host="app.example.com")]


@pytest.fixture(autouse=True)
def good_file_is_ok(tmp_path, certs):
    """Every case below is good_blocks() with one mistake: the file without
    it must pass, so that what is reported is the mistake."""
    path, _ = write(tmp_path, certs, good_blocks(), name="good.ini")
    p = check(path)
    assert p.returncode == 0, "the file without the mistake is refused:\n" + (
        p.stderr.decode())


# ---- names --------------------------------------------------------------

def test_duplicate_group_name(tmp_path, certs):
    blocks = good_blocks()
    blocks.insert(1, group("web", ["127.0.0.1:7000"]))
    path, text = write(tmp_path, certs, blocks)
    # The second [upstream web] is the mistake.
    first = section_line_of(text, "upstream web")
    second = [i for i, line in enumerate(text.splitlines(), 1)
              if line.strip() == "[upstream web]"][1]
    assert second > first
    p = check(path)
    assert_reported(p, path, {second, second + 1}, "upstream web", None)
    assert all(n != first for n, _ in problems(p, path)), p.stderr.decode()


def test_duplicate_route_name(tmp_path, certs):
    blocks = good_blocks() + [route("web", "api", host="other.example.com")]
    path, text = write(tmp_path, certs, blocks)
    first, second = [i for i, line in enumerate(text.splitlines(), 1)
                     if line.strip() == "[route web]"]
    p = check(path)
    assert_reported(p, path, {second, second + 1}, "route web", None)
    assert all(n != first for n, _ in problems(p, path)), p.stderr.decode()


def test_route_names_a_missing_group(tmp_path, certs):
    blocks = good_blocks() + [route("ghost", "nosuchgroup", host="ghost.example.com")]
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {block_line_of(text, "route ghost", "upstream")},
                    "route ghost", "upstream", mention="nosuchgroup")


@pytest.mark.parametrize("second_host,second_path", [
    ("app.example.com", "/api/"),
    ("APP.example.com.", "/api/"),          # the same host, written otherwise
], ids=["same", "same-host-spelled-otherwise"])
def test_two_routes_same_host_and_path(tmp_path, certs, second_host, second_path):
    blocks = good_blocks() + [route("shadowed", "web", host=second_host, path=second_path)]
    path, text = write(tmp_path, certs, blocks)
    lines = {block_line_of(text, "route shadowed", "host"),
             block_line_of(text, "route shadowed", "path")}
    p = check(path)
    assert_reported(p, path, lines, "route shadowed", ("host", "path"))


def test_two_routes_without_host_same_path(tmp_path, certs):
    blocks = good_blocks() + [route("any1", "web", path="/x"), route("any2", "api", path="/x")]
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {block_line_of(text, "route any2", "path"),
                              section_line_of(text, "route any2")},
                    "route any2", "path")


# ---- servers ------------------------------------------------------------

BAD_SERVERS = [
    ("no-port", "127.0.0.1"),
    ("port-too-big", "127.0.0.1:99999"),
    ("port-zero", "127.0.0.1:0"),
    ("port-not-number", "127.0.0.1:http"),
    ("v6-unclosed", "[::1:8080"),
    ("v6-no-port", "[::1]"),
    ("unix-empty", "unix:"),
    ("scheme-unknown", "ftp://api.internal:21"),
    ("unknown-flag", "127.0.0.1:8080 heavy"),
    ("empty", ""),
]


@pytest.mark.parametrize("case", BAD_SERVERS, ids=[c[0] for c in BAD_SERVERS])
def test_bad_server_address(tmp_path, certs, case):
    _, bad = case
    blocks = good_blocks()
    blocks[0] = group("web", [S1, bad])
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {block_line_of(text, "upstream web", "server", nth=1)},
                    "upstream web", "server")


BAD_WEIGHTS = ["weight=0", "weight=-1", "weight=abc", "weight=", "weight=2.5",
               "weight=99999999999"]


@pytest.mark.parametrize("weight", BAD_WEIGHTS)
def test_bad_weight(tmp_path, certs, weight):
    blocks = good_blocks()
    blocks[0] = group("web", ["%s %s" % (S1, weight), S2])
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {block_line_of(text, "upstream web", "server", nth=0)},
                    "upstream web", "server", mention="weight")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_tls_ca(tmp_path, certs, kind):
    ca = tmp_path / "no-such-ca.pem"
    if kind == "directory":
        ca.mkdir()
    blocks = good_blocks()
    blocks[1] = group("api", ["https://127.0.0.1:9443"], tls_ca=str(ca))
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    line = block_line_of(text, "upstream api", "tls_ca")
    assert_reported(p, path, {line, 0}, "upstream api", "tls_ca", mention="no-such-ca.pem")


def test_tls_ca_not_pem(tmp_path, certs):
    junk = tmp_path / "junk-ca.pem"
    junk.write_text("this is not a certificate\n")
    blocks = good_blocks()
    blocks[1] = group("api", ["https://127.0.0.1:9443"], tls_ca=str(junk))
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    line = block_line_of(text, "upstream api", "tls_ca")
    assert_reported(p, path, {line, 0}, "upstream api", "tls_ca")


# ---- values ------------------------------------------------------------------

# (id, block index in good_blocks(), key, bad value): the value replaces the
# key's or is added last.
BAD_VALUES = [
    ("route-path-relative", 2, "path", "api"),
    ("route-path-query", 2, "path", "/api?x=1"),
    ("route-host-inner-star", 2, "host", "a*.example.com"),
    ("route-host-star", 2, "host", "*"),
    ("route-alt-svc", 2, "alt_svc", "maybe"),
    ("route-header-no-colon", 2, "add_request_header", "NoColon"),
    ("route-header-bad-name", 2, "add_response_header", "Bad Name: x"),
    ("route-body-size", 2, "max_request_body", "lots"),
    # Fields that frame or address the message (RFC 9110 §6.4, §7.2, §7.6.1)
    # are the gateway's: a route may not add or remove them.
    ("route-add-content-length", 2, "add_request_header", "Content-Length: 5"),
    ("route-add-connection", 2, "add_request_header", "Connection: close"),
    ("route-remove-host", 2, "remove_request_header", "Host"),
    ("route-add-response-te", 2, "add_response_header", "Transfer-Encoding: chunked"),
    ("route-timeout", 2, "response_timeout", "soon"),
    ("route-unknown-key", 2, "balance", "round_robin"),
    ("group-balance", 0, "balance", "fastest"),
    ("group-hash-key", 0, "hash_key", "bogus"),
    ("group-hash-header-empty", 0, "hash_key", "header:"),
    ("group-retries", 0, "retries", "-1"),
    ("group-max-fails", 0, "max_fails", "often"),
    ("group-unknown-key", 0, "upstream", "api"),
]


@pytest.mark.parametrize("case", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value(tmp_path, certs, case):
    _, index, key, value = case
    blocks = good_blocks()
    header, items = blocks[index]
    items = [(k, v) for k, v in items if k != key] + [(key, value)]
    blocks[index] = (header, items)
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {block_line_of(text, header, key)}, header, key)


def test_bad_no_route(tmp_path, certs):
    text = base(certs).replace("[server]\n", "[server]\nno_route = bogus\n", 1) + \
        "\n" + render_blocks(good_blocks())
    p = tmp_path / "h3gate.ini"
    p.write_text(text)
    path = str(p)
    r = check(path)
    assert_reported(r, path, {block_line_of(text, "server", "no_route")}, "server", "no_route")


# ---- what must be there ---------------------------------------------------

def test_route_without_upstream(tmp_path, certs):
    blocks = good_blocks() + [route("lost", None, host="lost.example.com")]
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {section_line_of(text, "route lost"), 0}, "route lost",
                    "upstream")


def test_group_without_server(tmp_path, certs):
    blocks = good_blocks()
    blocks[1] = ("upstream api", [("balance", "least_conn")])
    path, text = write(tmp_path, certs, blocks)
    p = check(path)
    assert_reported(p, path, {section_line_of(text, "upstream api"), 0}, "upstream api",
                    "server")


def test_several_groups_and_no_route(tmp_path, certs):
    path, text = write(tmp_path, certs, [group("web", [S1]), group("api", [S2])])
    p = check(path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.decode()
    assert problems(p, path), "no FILE:LINE: line:\n" + err
    assert "no [route] names which requests go where" in err, err


def test_unnamed_and_named_group_without_route(tmp_path, certs):
    """The unnamed [upstream] is the group "default": with another group
    and no route, the file is refused too."""
    path, text = write(tmp_path, certs, [group(None, [S1]), group("api", [S2])])
    p = check(path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "no [route] names which requests go where" in p.stderr.decode()


def test_run_refuses_what_check_config_refuses(tmp_path, certs):
    blocks = good_blocks() + [route("ghost", "nosuchgroup", host="ghost.example.com")]
    path, text = write(tmp_path, certs, blocks)
    p = subprocess.run([H3GATE_BIN, "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=20 * SLOW)
    assert_reported(p, path, {block_line_of(text, "route ghost", "upstream")},
                    "route ghost", "upstream")


# ---- the route table --------------------------------------------------------

def test_check_config_prints_route_table(tmp_path, certs):
    blocks = [
        group("shallowg", ["127.0.0.1:7001", "127.0.0.1:7002 weight=3"]),
        group("deepg", ["127.0.0.1:7003"]),
        group("exactg", ["127.0.0.1:7004", "127.0.0.1:7005 backup"]),
        group("anyg", ["unix:/run/any.sock"]),
        # Declared out of matching order on purpose.
        route("shallowwild", "shallowg", host="*.example.com"),
        route("fallback", "anyg"),
        route("rootroute", "exactg", host="www.example.com"),
        route("deepwild", "deepg", host="*.a.example.com"),
        route("apiroute", "exactg", host="www.example.com", path="/api/ /v2/"),
    ]
    path, _ = write(tmp_path, certs, blocks)
    p = check(path)
    out = p.stdout.decode()
    assert p.returncode == 0, (out, p.stderr.decode())
    order = ["apiroute", "rootroute", "deepwild", "shallowwild", "fallback"]
    at = {}
    for name in order:
        m = re.search(r"\b%s\b" % name, out)
        assert m, "route %s not in the table:\n%s" % (name, out)
        at[name] = m.start()
    assert sorted(order, key=at.get) == order, (
        "not in matching order (want %s):\n%s" % (order, out))
    lines = out.splitlines()

    def word(w, line):
        return re.search(r"(?<![\w.*/-])%s(?![\w.-])" % re.escape(w), line) is not None

    # Each host and path of a route is on a line with the route's name and
    # its group's name.
    rows = {
        "apiroute": ("exactg", ["www.example.com"], ["/api/", "/v2/"]),
        "rootroute": ("exactg", ["www.example.com"], ["/"]),
        "deepwild": ("deepg", ["*.a.example.com"], ["/"]),
        "shallowwild": ("shallowg", ["*.example.com"], ["/"]),
        "fallback": ("anyg", [], ["/"]),
    }
    for name, (grp, hosts, paths) in rows.items():
        mine = [line for line in lines if word(name, line) and word(grp, line)]
        for h in hosts:
            for pth in paths:
                assert any(word(h, line) and word(pth, line) for line in mine), (
                    "no row of route %s with %s %s and group %s:\n%s" % (name, h, pth, grp,
                                                                         out))
    # Each group's servers: on its routes' rows, or listed under the group.
    servers = {
        "shallowg": ["127.0.0.1:7001", "127.0.0.1:7002"],
        "deepg": ["127.0.0.1:7003"],
        "exactg": ["127.0.0.1:7004", "127.0.0.1:7005"],
        "anyg": ["unix:/run/any.sock"],
    }
    for grp, addrs in servers.items():
        on_rows = [line for line in lines if word(grp, line)]
        if all(any(a in line for line in on_rows) for a in addrs):
            continue
        heads = [i for i, line in enumerate(lines) if word(grp, line)
                 and not any(word(n, line) for n in rows)]
        assert heads, "group %s: its servers %s are not shown:\n%s" % (grp, addrs, out)
        block = []
        for line in lines[heads[0] + 1:]:
            if any(word(g, line) for g in servers if g != grp):
                break
            block.append(line)
        for a in addrs:
            assert any(a in line for line in block), (
                "group %s: server %s not listed under it:\n%s" % (grp, a, out))
    assert any("127.0.0.1:7002" in line and "3" in line.split("7002", 1)[1]
               for line in lines), "weight 3 not shown:\n" + out
    assert any("127.0.0.1:7005" in line and "backup" in line for line in lines), (
        "backup not shown:\n" + out)
