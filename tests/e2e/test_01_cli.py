"""The command line: --version, --help, --check-config, bad command lines,
bad configuration files (exit 2, one "FILE:LINE: [section] key: reason" line
per problem), and exit 1 when the gateway cannot start."""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import (H3GATE_BIN, SLOW, free_port, ini_line_of, render_ini)


def run(args, timeout=20, cwd=None):
    return subprocess.run([H3GATE_BIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=timeout * SLOW, cwd=cwd)


def good_sections(certs, port=None):
    """Every key of the documented schema, with the documented examples."""
    return {
        "server": {"log_level": "info", "access_log": "-", "shutdown_timeout": "10s",
                   "admin": "off"},
        "listener": {"address": "127.0.0.1", "port": str(port or "any"),
                     "cert": certs.cert, "key": certs.key, "idle_timeout": "30s",
                     "handshake_timeout": "10s", "max_connections": "10000",
                     "max_streams": "100", "stream_buffer_size": "256KiB",
                     "max_header_size": "64KiB"},
        "upstream": {"server": "127.0.0.1:%d" % free_port("tcp"), "pool_size": "64",
                     "queue_size": "1024", "connect_timeout": "5s",
                     "response_timeout": "60s", "idle_timeout": "60s"},
    }


def write(tmp_path, text, name="h3gate.ini"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def problem_lines(stderr, path):
    """The "FILE:LINE: ..." lines of a config report, as (line, rest)."""
    out = []
    for line in stderr.decode(errors="replace").splitlines():
        m = re.search(r"%s:(\d+): (.*)$" % re.escape(path), line)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


# ---- --version, --help, command line ------------------------------------

def test_version():
    p = run(["--version"])
    assert p.returncode == 0, p.stderr
    assert re.match(rb"^h3gate 0\.1\.0\b", p.stdout), p.stdout


def test_help():
    p = run(["--help"])
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode().lower()
    assert "usage" in text, text
    assert "-c" in text or "--config" in text, text
    for opt in ("--check-config", "--version", "--help"):
        assert opt in text, "--help does not mention %s:\n%s" % (opt, text)


@pytest.mark.parametrize("args", [["--no-such-option"], ["-c"], ["--config"],
                                  ["--check-config"], ["-Z"]],
                         ids=["unknown-long", "c-without-file", "config-without-file",
                              "check-config-without-file", "unknown-short"])
def test_bad_command_line_exits_2(args):
    p = run(args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.strip(), "no message on stderr for a bad command line"


# ---- --check-config -------------------------------------------------------

def test_check_config_ok(tmp_path, certs):
    path = write(tmp_path, render_ini(good_sections(certs)))
    p = run(["--check-config", path])
    assert p.returncode == 0, p.stderr
    out = (p.stdout + p.stderr).decode()
    assert "%s: ok" % path in out, out


def test_check_config_minimal_uses_defaults(tmp_path, certs):
    """Only the keys without a sensible default: the rest default."""
    text = render_ini({"listener": {"port": "any", "cert": certs.cert,
                                    "key": certs.key},
                       "upstream": {"server": "127.0.0.1:8080"}})
    path = write(tmp_path, text)
    p = run(["--check-config", path])
    assert p.returncode == 0, p.stderr


def test_check_config_does_not_bind(tmp_path, certs):
    """Validation only: a port in use by someone else is not its concern."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        path = write(tmp_path, render_ini(good_sections(certs, s.getsockname()[1])))
        p = run(["--check-config", path])
        assert p.returncode == 0, p.stderr
    finally:
        s.close()


def test_check_config_relative_paths_resolve_against_ini_dir(tmp_path, certs):
    d = tmp_path / "conf"
    d.mkdir()
    shutil.copy(certs.cert, d / "server.crt")
    shutil.copy(certs.key, d / "server.key")
    sec = good_sections(certs)
    sec["listener"]["cert"] = "server.crt"
    sec["listener"]["key"] = "server.key"
    path = write(d, render_ini(sec))
    p = run(["--check-config", path], cwd="/")
    assert p.returncode == 0, p.stderr


# Each case: (id, section, key, bad value). The bad key is appended to its
# section so its line number is known.
BAD_VALUES = [
    ("unknown-key", "listener", "no_such_key", "1"),
    ("int-not-a-number", "upstream", "pool_size", "lots"),
    ("pool-size-zero", "upstream", "pool_size", "0"),
    ("port-out-of-range", "listener", "port", "70000"),
    ("max-streams-negative", "listener", "max_streams", "-5"),
    ("duration-garbage", "upstream", "response_timeout", "soon"),
    ("duration-bad-unit", "listener", "idle_timeout", "30 parsecs"),
    ("size-garbage", "listener", "stream_buffer_size", "big"),
    ("log-level", "server", "log_level", "loud"),
    ("upstream-no-port", "upstream", "server", "127.0.0.1"),
    ("upstream-bad-port", "upstream", "server", "127.0.0.1:99999"),
    ("listen-bad-address", "listener", "address", "999.1.2.3"),
    ("admin-bad", "server", "admin", "not-an-address"),
]


def sections_with(certs, section, key, value):
    sec = good_sections(certs)
    sec[section].pop(key, None)
    sec[section][key] = value   # last in its section
    return sec


@pytest.mark.parametrize("case", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_check_config_bad_value(tmp_path, certs, case):
    _, section, key, value = case
    text = render_ini(sections_with(certs, section, key, value))
    path = write(tmp_path, text)
    line = ini_line_of(text, section, key)
    p = run(["--check-config", path])
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    probs = problem_lines(p.stderr, path)
    assert probs, "no 'FILE:LINE:' line in stderr:\n%s" % p.stderr.decode()
    want = re.compile(r"^\[%s\] %s: \S" % (re.escape(section), re.escape(key)))
    assert any(n == line and want.search(rest) for n, rest in probs), (
        "want '%s:%d: [%s] %s: <reason>', got:\n%s"
        % (path, line, section, key, p.stderr.decode()))
    assert len(probs) == 1, "one problem, several lines:\n%s" % p.stderr.decode()


def test_check_config_unknown_section(tmp_path, certs):
    text = render_ini(good_sections(certs)) + "\n[nonsense]\nfoo = bar\n"
    path = write(tmp_path, text)
    lines = text.splitlines()
    sect_line = lines.index("[nonsense]") + 1
    p = run(["--check-config", path])
    assert p.returncode == 2, p.stderr
    probs = problem_lines(p.stderr, path)
    assert any(n in (sect_line, sect_line + 1) and "[nonsense]" in rest
               for n, rest in probs), p.stderr.decode()


def test_check_config_syntax_error(tmp_path, certs):
    text = render_ini(good_sections(certs))
    lines = text.splitlines()
    at = lines.index("[upstream]") + 1
    lines.insert(at, "this line is not a key value pair")
    text = "\n".join(lines) + "\n"
    path = write(tmp_path, text)
    p = run(["--check-config", path])
    assert p.returncode == 2, p.stderr
    probs = problem_lines(p.stderr, path)
    assert any(n == at + 1 for n, _ in probs), (
        "want a problem at line %d:\n%s" % (at + 1, p.stderr.decode()))


@pytest.mark.parametrize("key", ["cert", "key"])
def test_check_config_missing_cert_file(tmp_path, certs, key):
    missing = str(tmp_path / ("missing-%s.pem" % key))
    text = render_ini(sections_with(certs, "listener", key, missing))
    path = write(tmp_path, text)
    line = ini_line_of(text, "listener", key)
    p = run(["--check-config", path])
    assert p.returncode == 2, p.stderr
    probs = problem_lines(p.stderr, path)
    # config.h: a file that cannot be read may be reported on its key's
    # line or on line 0; either way the section, key and file are named.
    assert any(n in (0, line) and rest.startswith("[listener] %s:" % key)
               for n, rest in probs), p.stderr.decode()
    assert os.path.basename(missing) in p.stderr.decode(), (
        "the message does not name the missing file:\n%s" % p.stderr.decode())


def test_check_config_missing_upstream_server(tmp_path, certs):
    sec = good_sections(certs)
    del sec["upstream"]["server"]
    path = write(tmp_path, render_ini(sec))
    p = run(["--check-config", path])
    assert p.returncode == 2, p.stderr
    probs = problem_lines(p.stderr, path)
    assert any(rest.startswith("[upstream] server:") for _, rest in probs), (
        p.stderr.decode())


def test_check_config_reports_every_problem(tmp_path, certs):
    sec = good_sections(certs)
    sec["listener"]["max_streams"] = "many"
    sec["upstream"]["connect_timeout"] = "whenever"
    text = render_ini(sec)
    path = write(tmp_path, text)
    want = {ini_line_of(text, "listener", "max_streams"),
            ini_line_of(text, "upstream", "connect_timeout")}
    p = run(["--check-config", path])
    assert p.returncode == 2, p.stderr
    got = {n for n, _ in problem_lines(p.stderr, path)}
    assert want <= got, "want problems at lines %s, got:\n%s" % (
        sorted(want), p.stderr.decode())


def test_check_config_missing_file(tmp_path):
    path = str(tmp_path / "nope.ini")
    p = run(["--check-config", path])
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert path in p.stderr.decode(), p.stderr.decode()


# ---- running with a bad configuration or an unusable port ----------------

def test_run_with_bad_config_exits_2(tmp_path, certs):
    text = render_ini(sections_with(certs, "upstream", "pool_size", "lots"))
    path = write(tmp_path, text)
    line = ini_line_of(text, "upstream", "pool_size")
    p = run(["-c", path])
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert any(n == line for n, _ in problem_lines(p.stderr, path)), p.stderr.decode()


def _start_expect_exit(args, timeout=10):
    proc = subprocess.Popen([H3GATE_BIN] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("h3gate kept running although it could not start:\n%s"
                             % err.decode(errors="replace"))
    return proc.returncode, err.decode(errors="replace")


def test_udp_port_in_use_exits_1(tmp_path, certs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        path = write(tmp_path, render_ini(good_sections(certs, port)))
        code, err = _start_expect_exit(["-c", path])
    finally:
        s.close()
    assert code == 1, (code, err)
    assert str(port) in err, "the error does not name the port:\n%s" % err


def test_admin_port_in_use_exits_1(tmp_path, certs):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        sec = good_sections(certs)
        sec["server"]["admin"] = "127.0.0.1:%d" % port
        path = write(tmp_path, render_ini(sec))
        code, err = _start_expect_exit(["-c", path])
    finally:
        s.close()
    assert code == 1, (code, err)


def test_starts_with_full_config_and_stops(gateway, certs, upstream):
    """Every documented key at its documented example value runs."""
    sec = good_sections(certs)
    sec["server"]["admin"] = "127.0.0.1:0"
    sec["upstream"]["server"] = upstream.address
    gw = gateway(overrides=sec)
    assert gw.alive()
    t0 = time.monotonic()
    gw.stop()
    assert time.monotonic() - t0 < 5 * SLOW, "idle gateway took long to stop"
