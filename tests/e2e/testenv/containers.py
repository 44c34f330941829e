"""h3gate's container image and Kubernetes manifests, as the e2e tests
drive them: podman with the project's settings (docker/podman/containers.conf),
the images that scripts/container.sh builds (once per test session),
pods in network namespaces of their own whose ports are published on
127.0.0.1 (slirp4netns: no bridge, no firewall rules on the host), the
admin listener asked from inside a container, and the manifests of
docker/kubernetes/ made runnable by podman 4.3's `kube play`.

Everything a test starts is named with a per-process prefix and removed
by the test's finalizers; the base image and the build's cached layers
stay, so that the next run builds in seconds.
"""

import base64
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from testenv.gateway import SRC, free_port
from testenv.require import require

CONTAINER_SH = os.path.join(SRC, "scripts", "container.sh")
PODMAN_CONF = os.path.join(SRC, "docker", "podman", "containers.conf")
KUBE_DIR = os.path.join(SRC, "docker", "kubernetes")
VALIDATOR_DIR = os.path.join(SRC, "tests", "e2e", "kubernetes")

# The tests' own tags: removing them at the end leaves the user's images
# (localhost/h3gate:dev) and the cached layers alone.
IMAGE = "localhost/h3gate:e2e"
APP_IMAGE = "localhost/h3gate-demo-app:e2e"
# A cold build (base image, Debian packages, wolfSSL and ngtcp2 from source,
# h3gate) takes 4-5 minutes on two cores; a warm one seconds.
BUILD_TIMEOUT = 1800
PREFIX = "h3gate-e2e-%d" % os.getpid()


def problems():
    """What is missing for the container tests, as a list of reasons."""
    why = []
    if os.geteuid() != 0:
        why.append("podman runs rootful here: the tests need root")
    for tool, pkg in (("podman", "podman"), ("runc", "runc"),
                      ("slirp4netns", "slirp4netns"), ("catatonit", "catatonit"),
                      ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            why.append("%s is not installed (Debian package %s; scripts/deps.sh)"
                       % (tool, pkg))
    return why


def require_containers():
    why = problems()
    require(not why, "containers: " + "; ".join(why))


def require_validator():
    """node and the npm packages of tests/e2e/kubernetes (scripts/deps.sh
    installs them)."""
    why = []
    if shutil.which("node") is None:
        why.append("node is not installed")
    for pkg in ("kubernetes-models", "yaml"):
        if not os.path.isdir(os.path.join(VALIDATOR_DIR, "node_modules", pkg)):
            why.append("npm package %s missing (npm ci --prefix %s)"
                       % (pkg, VALIDATOR_DIR))
    require(not why, "manifest validation: " + "; ".join(why))


def wait_for(what, fn, timeout, interval=0.1):
    """Calls fn until it returns something true (returned), or fails the
    test after timeout seconds, naming what it waited for and the last
    value or exception seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.0f s waiting for %s (last: %r)"
                        % (timeout, what, last), pytrace=False)
        time.sleep(interval)


class Podman:
    """podman with the project's settings; conf replaces them (a copy with
    more lines, e.g. for kube play)."""

    def __init__(self, conf=PODMAN_CONF):
        self.env = dict(os.environ, CONTAINERS_CONF=conf)

    def run(self, *args, check=True, timeout=120, input=None):
        p = subprocess.run(["podman", *args], env=self.env, input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            pytest.fail("podman %s: exit %d: %s" % (
                " ".join(args), p.returncode, _noise_free(p.stderr)[-2000:]),
                pytrace=False)
        return p

    def out(self, *args, **kw):
        return self.run(*args, **kw).stdout.strip()

    def popen(self, *args, **kw):
        return subprocess.Popen(["podman", *args], env=self.env, **kw)

    def exists(self, kind, name):
        return self.run(kind, "exists", name, check=False).returncode == 0

    def admin_get(self, container, path, port=9901):
        """GET path from the admin listener on 127.0.0.1:port inside the
        container (the image's config binds it to loopback): (status, body)
        or (None, reason) when nothing answers. bash's /dev/tcp: the image
        has no HTTP client."""
        script = ("exec 3<>/dev/tcp/127.0.0.1/%d || exit 7; printf 'GET %s "
                  "HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3;"
                  " cat <&3" % (port, path))
        # Bytes: text mode would turn the CRLFs that end the head into LFs.
        p = subprocess.run(["podman", "exec", container, "bash", "-c", script],
                           env=self.env, capture_output=True, timeout=30)
        out = p.stdout.decode("latin-1")
        if p.returncode != 0 or not out.startswith("HTTP/1."):
            return None, (p.stderr.decode("latin-1") or out).strip()[-200:]
        head, _, body = out.partition("\r\n\r\n")
        return int(head.split()[1]), body

    def logs(self, container):
        p = self.run("logs", container, check=False)
        return p.stdout + p.stderr

    def exit_code(self, container):
        return int(self.out("inspect", "--format", "{{.State.ExitCode}}", container))

    def state(self, container):
        return self.out("inspect", "--format", "{{.State.Status}}", container)


def _noise_free(text):
    # Without systemd, podman reports at every container start that it
    # cannot set up healthcheck timers: not the error a reader looks for.
    return "\n".join(line for line in text.splitlines()
                     if "healthcheck" not in line or "systemd" not in line)


class LogFollower:
    """`podman logs -f CONTAINER` into memory from now on (the container may
    be removed later): wait_for_line() waits for a line event."""

    def __init__(self, podman, container):
        self.lines = []
        self._cond = threading.Condition()
        self._p = podman.popen("logs", "-f", container, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self._p.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for_line(self, needle, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("no log line with %r in %.0f s; log:\n%s" % (
                        needle, timeout, "\n".join(self.lines[-30:])), pytrace=False)
                self._cond.wait(left)

    def text(self):
        with self._cond:
            return "\n".join(self.lines)

    def close(self, timeout=10):
        try:
            self._p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._p.kill()
            self._p.wait()
        self._t.join(timeout=5)


# --------------------------------------------------------------------------
# the images

class Images:
    def __init__(self, image, app_image, base, seconds, log):
        self.image = image
        self.app_image = app_image
        self.base = base            # the image both were built from
        self.seconds = seconds
        self.log = log


def build_images(log_path):
    """scripts/container.sh build with the tests' tags: the base image when
    missing, then both images (from the cache when nothing changed).
    Returns Images; fails the test with the build log's end otherwise."""
    env = dict(os.environ, H3GATE_IMAGE=IMAGE, H3GATE_APP_IMAGE=APP_IMAGE)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        try:
            p = subprocess.run(["bash", CONTAINER_SH, "build"], env=env,
                               stdout=log, stderr=subprocess.STDOUT,
                               timeout=BUILD_TIMEOUT)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout (%d s)" % BUILD_TIMEOUT
    seconds = time.monotonic() - t0
    if rc != 0:
        with open(log_path) as f:
            tail = _noise_free(f.read())[-3000:]
        pytest.fail("scripts/container.sh build failed (%s); end of %s:\n%s"
                    % (rc, log_path, tail), pytrace=False)
    with open(log_path) as f:
        m = re.search(r"^container: building \S+ from (\S+) ", f.read(), re.M)
    assert m, "no base image named in %s" % log_path
    return Images(IMAGE, APP_IMAGE, m.group(1), seconds, log_path)


def remove_images(podman, images):
    # The tags only: the layers are the cache of the next build.
    podman.run("rmi", images.image, images.app_image, check=False)


# --------------------------------------------------------------------------
# a pod: the demo app and h3gate side by side, ports on 127.0.0.1

class DemoPod:
    """A pod in its own network namespace (slirp4netns) with h3gate's UDP
    and TCP 443 published on one free port of 127.0.0.1: the app from
    APP_IMAGE on 127.0.0.1:8080 inside, h3gate from IMAGE with its built-in
    configuration (config/sidecar.ini) and certs mounted read-only."""

    def __init__(self, podman, images, certs_dir, name=None):
        self.podman = podman
        self.images = images
        self.name = name or PREFIX + "-pod"
        self.app = self.name + "-app"
        self.gateway = self.name + "-h3gate"
        self.certs_dir = certs_dir
        self.port = free_port("both")

    def start(self):
        p = self.podman
        p.run("pod", "rm", "-f", "--ignore", self.name)
        # ip_unprivileged_port_start: h3gate (uid 10001) binds 443 without
        # any capability, as in the Kubernetes examples.
        p.run("pod", "create", "--name", self.name, "--network", "slirp4netns",
              "-p", "127.0.0.1:%d:443/udp" % self.port,
              "-p", "127.0.0.1:%d:443/tcp" % self.port,
              "--sysctl", "net.ipv4.ip_unprivileged_port_start=443")
        p.run("run", "-d", "--pod", self.name, "--name", self.app,
              self.images.app_image)
        # No healthcheck timer (there is no systemd to run it): the test runs
        # the image's HEALTHCHECK itself with `podman healthcheck run`.
        p.run("run", "-d", "--pod", self.name, "--name", self.gateway,
              "--cap-drop", "ALL", "--read-only", "--health-interval", "disable",
              "--stop-timeout", "30",
              "-v", "%s:/etc/h3gate/certs:ro" % self.certs_dir, self.images.image)
        return self

    def remove(self):
        self.podman.run("pod", "rm", "-f", "--ignore", "-t", "0", self.name,
                        check=False)


def certs_for_container(certs, dest):
    """A copy of the development certificates that the image's user (uid
    10001) may read, laid out as the image expects (/etc/h3gate/certs)."""
    os.makedirs(dest, exist_ok=True)
    for name in ("server-chain.crt", "server.key", "ca.crt"):
        shutil.copy(os.path.join(certs.dir, name), os.path.join(dest, name))
        os.chown(os.path.join(dest, name), 10001, 10001)
        os.chmod(os.path.join(dest, name), 0o400)
    os.chown(dest, 10001, 10001)
    return dest


# --------------------------------------------------------------------------
# the Kubernetes manifests

def load_manifests(name):
    import yaml
    with open(os.path.join(KUBE_DIR, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def dump_manifests(docs):
    import yaml
    return yaml.safe_dump_all(docs, sort_keys=False)


def find(docs, kind, name=None):
    for d in docs:
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise AssertionError("no %s %s in the manifests" % (kind, name or ""))


def pod_spec(doc):
    """The Pod spec of a Pod, or of a Deployment's template."""
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def kube_play_conf(path, sysctls):
    """A copy of the project's podman settings for kube play: podman 4.3
    ignores a Pod's securityContext.sysctls, so the same sysctls become the
    engine's defaults for every container it creates."""
    with open(PODMAN_CONF) as f:
        text = f.read()
    line = "default_sysctls = [%s]" % ", ".join('"%s=%s"' % kv for kv in sysctls)
    assert "[containers]\n" in text
    text = text.replace("[containers]\n", "[containers]\n" + line + "\n", 1)
    with open(path, "w") as f:
        f.write(text)
    return path


class KubePlay:
    """docker/kubernetes/sidecar.yaml run by podman 4.3's `kube play`, with
    the changes that podman (not Kubernetes) needs, each said where it is
    made: local image names, ports published on free ports of 127.0.0.1,
    Secret volumes as host directories, the Pod's sysctls as engine
    defaults, no restarts. Nothing else of the manifest is touched."""

    def __init__(self, images, certs, workdir, secret_line):
        self.workdir = workdir
        self.docs = load_manifests("sidecar.yaml")
        self.pod = find(self.docs, "Pod")
        self.name = self.pod["metadata"]["name"]
        spec = pod_spec(self.pod)
        sysctls = [(s["name"], s["value"])
                   for s in spec.get("securityContext", {}).get("sysctls", [])]
        self.podman = Podman(kube_play_conf(os.path.join(workdir, "containers.conf"),
                                            sysctls))
        self.ports = {}
        # What the kubelet runs and podman 4.3 does not: preStop hooks and
        # exec readiness probes, by container (the tests run them).
        self.hooks = {}
        self.probes = {}
        port = free_port("both")
        admin = free_port("tcp")
        for c in spec["containers"]:
            c["image"] = {"h3gate": images.image, "app": images.app_image}[c["name"]]
            if c.get("lifecycle", {}).get("preStop", {}).get("exec"):
                self.hooks[c["name"]] = c["lifecycle"]["preStop"]["exec"]["command"]
            if c.get("readinessProbe", {}).get("exec"):
                self.probes[c["name"]] = c["readinessProbe"]["exec"]["command"]
            for p in c.get("ports", []):
                # Kubernetes publishes nothing on the host; podman publishes
                # every containerPort, on the same port unless told otherwise.
                p["hostIP"] = "127.0.0.1"
                p["hostPort"] = admin if p["containerPort"] == 9901 else port
                self.ports[p["name"]] = p["hostPort"]
        # Secret volumes: podman 4.3 writes a Secret's data base64-encoded
        # into the files and ignores stringData; the same files, as the
        # kubelet lays them out (root's, group fsGroup, defaultMode), come
        # from a host directory instead.
        fs_group = spec.get("securityContext", {}).get("fsGroup", 0)
        self.secret_dirs = {}
        for v in spec["volumes"]:
            if "secret" not in v:
                continue
            sec = v.pop("secret")
            d = os.path.join(workdir, "secret-" + sec["secretName"])
            os.makedirs(d, exist_ok=True)
            files = self._secret_files(sec["secretName"], certs, secret_line)
            for fname, data in files.items():
                path = os.path.join(d, fname)
                with open(path, "wb") as f:
                    f.write(data)
                os.chown(path, 0, fs_group)
                os.chmod(path, sec.get("defaultMode", 0o644))
            v["hostPath"] = {"path": d, "type": "Directory"}
            self.secret_dirs[sec["secretName"]] = d
        # The kubelet restarts no container of a Pod it is stopping; podman
        # restarts one that exits (restartPolicy Always), even after a drain.
        spec["restartPolicy"] = "Never"
        self.configmaps = [d["metadata"]["name"] for d in self.docs
                           if d["kind"] == "ConfigMap"]
        self.file = os.path.join(workdir, "play.yaml")
        with open(self.file, "w") as f:
            f.write(dump_manifests(self.docs))

    @staticmethod
    def _secret_files(name, certs, secret_line):
        if name == "h3gate-tls":
            with open(certs.chain, "rb") as f:
                crt = f.read()
            with open(certs.key, "rb") as f:
                key = f.read()
            return {"tls.crt": crt, "tls.key": key}
        if name == "h3gate-secrets":
            return {"secrets": (secret_line + "\n").encode()}
        raise AssertionError("the test knows no Secret %r" % name)

    def container(self, name):
        return "%s-%s" % (self.name, name)

    def play(self):
        self.down()
        p = self.podman.run("kube", "play", "--network", "slirp4netns", self.file,
                            timeout=180)
        return p

    def down(self):
        p = self.podman
        if p.exists("pod", self.name):
            p.run("kube", "down", self.file, check=False, timeout=120)
        # kube play keeps a ConfigMap's files in a named volume.
        for cm in self.configmaps:
            p.run("volume", "rm", "-f", cm, check=False)


def random_secret_line():
    return base64.b16encode(os.urandom(32)).decode().lower()
