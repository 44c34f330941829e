"""Fixtures and helpers for h3gate's end-to-end tests.

Layout follows curl's tests/http: session fixtures start a scripted origin
(upstream.py) and the gateway; tests drive real HTTP/3 clients (libcurl via
pycurl, ngtcp2's gtlsclient, headless Chromium) and assert on what the client
got, what the origin received, the access log and the /metrics counters.

Environment:
  H3GATE_BIN       the gateway binary (default <src>/build/h3gate)
  H3GATE_SRC       the source tree (default: two levels above this file)
  H3GATE_SANITIZE  "1"/"ON"/"true" for an ASan+UBSan build (skips RSS limits)
  H3GATE_KEEP      keep each gateway's work directory (for debugging)
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from testenv.require import must_run_everything, require  # noqa: E402

# Re-exported for the test modules.
from upstream import KiB, MiB, PatternReader, Upstream, expected_sha256  # noqa: E402,F401

from testenv.clients import pycurl  # noqa: E402,F401

from testenv.gateway import (  # noqa: E402,F401
    CHROMIUM, GTLSCLIENT, H3GATE_BIN, READY_TIMEOUT, SANITIZE, SLOW, SRC,
    AccessLine, Certs, Gateway, GatewayFactory, free_port, have_gateway,
    ini_line_of, merge_config, parse_access_line, refusing_address,
    render_ini, spki_sha256, _openssl_certs, _run)
from testenv.clients import (  # noqa: E402,F401
    CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2TLS, CURL_HTTP_VERSION_3ONLY,
    H3Client, H3Multi, Result, H1Client, H2Client, _Transfer, client_for,
    chromium_fetch, gtlsclient_download, h3_request_with, netlog_quic_requests,
    netlog_quic_trouble,
    sha256_file, uid)


def pytest_collection_modifyitems(config, items):
    # Every e2e test runs the gateway; skip them all (with the reason) when
    # the binary is not there rather than erroring in fixtures. Where every
    # test must run (CI), they fail instead. Modules that never run this
    # binary say NEEDS_GATEWAY_BINARY = False (the container tests build
    # their own in the image).
    if have_gateway():
        return
    items = [i for i in items if getattr(i.module, "NEEDS_GATEWAY_BINARY", True)]
    why = "h3gate binary not built (%s)" % H3GATE_BIN
    if must_run_everything():
        for item in items:
            item.add_marker(pytest.mark.usefixtures("_no_gateway_binary"))
        return
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if not os.path.basename(str(item.fspath)).startswith("test_00_"):
            item.add_marker(skip)


@pytest.fixture
def _no_gateway_binary():
    pytest.fail("h3gate binary not built (%s)" % H3GATE_BIN, pytrace=False)


# Capabilities tests ask for (pytestmark = pytest.mark.usefixtures(...)):
# without them a test skips, or fails where every test must run (CI).

@pytest.fixture
def need_gtlsclient():
    require(os.access(GTLSCLIENT, os.X_OK),
            "gtlsclient (ngtcp2-client) is not installed (%s)" % GTLSCLIENT)


@pytest.fixture
def need_chromium():
    require(os.access(CHROMIUM, os.X_OK), "Chromium is not installed (%s)" % CHROMIUM)


@pytest.fixture
def need_cryptography():
    try:
        import cryptography  # noqa: F401
        ok = True
    except ImportError:
        ok = False
    require(ok, "python3-cryptography is not installed")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("certs"))
    script = os.path.join(SRC, "certs", "make-certs.sh")
    if os.path.isfile(script):
        _run(["bash", script, out])
    else:
        _openssl_certs(out)
    for name in ("ca.crt", "server.crt", "server.key", "spki.txt"):
        assert os.path.isfile(os.path.join(out, name)), "certs: %s missing" % name
    return Certs(out)


# --------------------------------------------------------------------------
# upstream fixtures

@pytest.fixture
def upstream():
    """A fresh scripted origin for one test (its counters start at zero)."""
    up = Upstream(name="upstream").start()
    yield up
    up.stop()
    up.assert_clean()


@pytest.fixture(scope="session")
def shared_upstream():
    """One scripted origin for the whole session. Counters are shared:
    tests that count accepts or connections use `upstream` instead."""
    up = Upstream(name="shared-upstream").start()
    yield up
    up.stop()
    up.assert_clean()


@pytest.fixture
def gateway(tmp_path_factory, certs, upstream):
    """Factory: gateway(overrides=None, upstream=None) -> started Gateway,
    in front of the test's `upstream` unless told otherwise. Every gateway
    made is stopped with SIGTERM at teardown (before the upstream stops) and
    must exit 0 without sanitizer reports."""
    f = GatewayFactory(tmp_path_factory, certs, lambda: upstream)
    yield f
    f.finish()


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory, certs, shared_upstream):
    """One gateway in front of shared_upstream for the whole session."""
    f = GatewayFactory(tmp_path_factory, certs, lambda: shared_upstream)
    gw = f(name="shared-gw")
    yield gw
    f.finish()


@pytest.fixture
def h3():
    """Factory: h3(gw) -> H3Client, closed at teardown."""
    made = []

    def make(gw):
        c = H3Client(gw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.fixture
def wsapp(tmp_path_factory):
    """Factory: wsapp() -> a started WebSocket upstream app
    (testenv.wsapp.WsApp: python3-websockets in a child process, with its
    events file); stopped at teardown."""
    require(_have_websockets(), "python3-websockets is not installed")
    from testenv.wsapp import WsApp
    made = []

    def make(name="wsapp"):
        app = WsApp(str(tmp_path_factory.mktemp(name)), name=name).start()
        made.append(app)
        return app
    yield make
    for app in made:
        app.stop()


def _have_websockets():
    try:
        import websockets  # noqa: F401
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------
# upstream groups and routes (docs/routes.md)

@pytest.fixture
def fleet(tmp_path_factory):
    """Upstream servers that say who they are (testenv.groups.Fleet): one
    process each, SIGKILLed at teardown."""
    from testenv.groups import Fleet
    f = Fleet(str(tmp_path_factory.mktemp("fleet")))
    yield f
    f.stop()


@pytest.fixture
def routed(tmp_path_factory, certs):
    """Factory: routed(blocks, overrides=None) -> a started RoutedGateway
    whose file has the [upstream NAME] / [route NAME] blocks given; stopped
    at teardown like `gateway`'s."""
    from testenv.groups import RoutedFactory
    f = RoutedFactory(tmp_path_factory, certs)
    yield f
    f.finish()


# --------------------------------------------------------------------------
# the container image (docker/, scripts/container.sh; testenv.containers)

@pytest.fixture(scope="session")
def container_images(tmp_path_factory):
    """The h3gate image and the demo app's, built once per session by
    scripts/container.sh (the base image made locally when missing; cached
    layers reused); the tests' tags are removed at the end, the layers
    stay. The image builds its own binary, so the ASan run skips these."""
    from testenv import containers
    if SANITIZE:
        pytest.skip("the image builds its own h3gate: nothing to add under ASan")
    containers.require_containers()
    log = str(tmp_path_factory.mktemp("container-build") / "build.log")
    images = containers.build_images(log)
    yield images
    containers.remove_images(containers.Podman(), images)
