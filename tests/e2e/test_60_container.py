"""The container image (docker/Dockerfile), built here by
scripts/container.sh with podman and run next to the demo app in one pod,
as a sidecar runs: the runtime stage holds the binary and its libraries
only and runs as uid 10001; HTTP/3 and the HTTPS fallback answer from the
host through the published port; the image's HEALTHCHECK and /readyz say
ready; SIGTERM drains a download in flight to its last byte and the
container exits 0."""

import hashlib
import json
import threading
import types

import pytest

from conftest import H2Client, H3Client
from testenv import containers
from testenv.containers import Podman, wait_for

# The image builds its own h3gate; the host build is not needed.
NEEDS_GATEWAY_BINARY = False

# The demo app's /bytes/N (docker/demo-app/app.py): every 64 KiB write is
# the same printable pattern from its start.
_CHUNK = 64 << 10
_PATTERN = bytes(range(32, 127)) * (_CHUNK // 95 + 1)


def demo_bytes_sha256(n):
    h = hashlib.sha256()
    while n > 0:
        k = min(n, _CHUNK)
        h.update(_PATTERN[:k])
        n -= k
    return h.hexdigest()


@pytest.fixture
def podman():
    return Podman()


@pytest.fixture
def demo_pod(container_images, certs, podman, tmp_path):
    pod = containers.DemoPod(podman, container_images,
                             containers.certs_for_container(certs, str(tmp_path / "certs")))
    yield pod.start()
    pod.remove()
    assert not podman.exists("pod", pod.name)


def test_image_is_lean_unprivileged_and_self_describing(container_images, podman):
    """The runtime stage: uid 10001, no compiler or headers, a few MiB over
    its base (the binary and its runtime libraries); exposes UDP and TCP
    443 and the admin port; HEALTHCHECK on /healthz; SIGTERM to stop."""
    cfg = json.loads(podman.out("image", "inspect", container_images.image))[0]
    conf = cfg["Config"]
    assert conf["User"] == "10001:10001"
    assert {"443/udp", "443/tcp", "9901/tcp"} <= set(conf["ExposedPorts"])
    assert conf["StopSignal"] == "SIGTERM"
    assert conf["Entrypoint"] == ["/usr/local/bin/h3gate"]
    health = cfg.get("Healthcheck")
    assert health and "/healthz" in " ".join(health["Test"]), health

    out = podman.out("run", "--rm", "--network", "none", "--entrypoint", "bash",
                     container_images.image, "-c",
                     "id -u; /usr/local/bin/h3gate --version; "
                     "for t in cc gcc cmake make ld; do command -v $t; done; "
                     "ls /usr/include 2>/dev/null | head -1; true")
    lines = out.splitlines()
    assert lines[0] == "10001"
    assert lines[1].startswith("h3gate ")
    assert lines[2:] == [], "build tools or headers in the runtime image: %s" % lines[2:]

    # The runtime stage's own layers: the runtime libraries, the user, the
    # binary and the configuration files.
    base = int(podman.out("image", "inspect", "--format", "{{.Size}}",
                          container_images.base))
    own = cfg["Size"] - base
    assert 0 < own < 20 << 20, "the runtime stage adds %d bytes to %s" % (
        own, container_images.base)


def test_sidecar_serves_h3_and_fallback_then_drains_on_sigterm(demo_pod, podman, certs):
    """From the host through the pod's published port: a page over HTTP/3
    and over the TCP fallback, both from the app (it lists the Via field the
    gateway added). The image's HEALTHCHECK passes, /readyz says ready.
    SIGTERM during a download: /readyz 503, the download completes byte
    for byte, the container exits 0."""
    gw = demo_pod.gateway
    log = containers.LogFollower(podman, gw)
    log.wait_for_line(" ready: ", timeout=60)
    wait_for("the image's HEALTHCHECK to pass",
             lambda: podman.run("healthcheck", "run", gw, check=False).returncode == 0,
             timeout=30, interval=0.2)
    assert podman.admin_get(gw, "/readyz") == (200, "ready\n")
    assert podman.admin_get(gw, "/healthz") == (200, "ok\n")

    target = types.SimpleNamespace(port=demo_pod.port, tcp_port=demo_pod.port,
                                   certs=certs)
    with H3Client(target) as cl:
        r = cl.get("/", timeout=20)
    assert r.error is None and r.status == 200, r
    assert r.http_version == 30, "not HTTP/3: %s" % r
    page = r.body.decode()
    assert "served via h3gate" in page
    assert "<th>via</th><td>3 h3gate</td>" in page, page[-800:]

    with H2Client(target) as cl:
        r = cl.get("/", timeout=20)
    assert r.error is None and r.status == 200, r
    assert r.http_version == 3, "not HTTP/2: %s" % r  # CURL_HTTP_VERSION_2_0
    assert "served via h3gate" in r.body.decode()
    assert r.header("alt-svc", "").startswith('h3=":443"'), r.headers

    # A download in flight when SIGTERM comes: paced by the client so that
    # it lasts about two seconds, well within shutdown_timeout (8 s).
    n = 8 << 20
    started = threading.Event()
    result = {}

    def download():
        with H3Client(target) as cl:
            result["r"] = cl.get("/bytes/%d" % n, timeout=60, pace=4 << 20,
                                 keep=0, on_data=lambda _r: started.set())

    t = threading.Thread(target=download)
    t.start()
    assert started.wait(30), "the download did not start"
    podman.run("kill", "--signal", "TERM", gw)
    log.wait_for_line("signal 15 received", timeout=10)
    # The download holds the drain open: the admin listener still answers.
    assert podman.admin_get(gw, "/readyz") == (503, "draining\n")
    assert podman.admin_get(gw, "/healthz") == (200, "ok\n")
    t.join(60)
    r = result["r"]
    assert r.error is None and r.status == 200, r
    assert r.body_len == n and r.sha256 == demo_bytes_sha256(n), r

    code = int(podman.out("wait", gw, timeout=60))
    assert code == 0, podman.logs(gw)[-2000:]
    log.close()
    text = log.text()
    assert "shutting down: draining" in text
    assert "all connections closed" in text
    assert "proto=h3 method=GET" in text and "path=\"/bytes/%d\" status=200" % n in text
