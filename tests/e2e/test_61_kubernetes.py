"""The Kubernetes manifests of docker/kubernetes/: valid against the API
schemas (kubernetes-models, with unknown fields refused as the API server's
strict validation does), consistent with each other and with h3gate's own
configuration, their configurations accepted by the image's --check-config,
and the sidecar Pod run for real by `podman kube play`: an HTTP/3 request
from the host reaches the app in the Pod, and the Pod's own preStop hooks,
run as the kubelet runs them, drain the gateway before `podman kube down`."""

import configparser
import glob
import json
import os
import shutil
import subprocess
import threading
import time
import types

import pytest

from conftest import SRC, Certs, H2Client, H3Client
from testenv import containers
from testenv.containers import KUBE_DIR, VALIDATOR_DIR, Podman, wait_for

# The image builds its own h3gate; the host build is not needed.
NEEDS_GATEWAY_BINARY = False

MANIFESTS = sorted(glob.glob(os.path.join(KUBE_DIR, "*.yaml")))


def validate(paths):
    p = subprocess.run(["node", os.path.join(VALIDATOR_DIR, "validate.mjs"), *paths],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), "validate.mjs: exit %d: %s" % (p.returncode, p.stderr)
    return p.returncode, json.loads(p.stdout)["documents"]


def ini_of(docs, configmap):
    """The h3gate.ini a ConfigMap carries, parsed (comments after values
    dropped, as h3gate reads them)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), strict=False)
    cp.read_string(containers.find(docs, "ConfigMap", configmap)["data"]["h3gate.ini"])
    return cp


def seconds(text):
    text = text.strip()
    for unit, mult in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(unit) and text[:-len(unit)].isdigit():
            return int(text[:-len(unit)]) * mult
    raise AssertionError("not a duration: %r" % text)


def workloads():
    """(file, docs, workload doc) for every Pod and Deployment."""
    for path in MANIFESTS:
        docs = containers.load_manifests(os.path.basename(path))
        for d in docs:
            if d["kind"] in ("Pod", "Deployment"):
                yield os.path.basename(path), docs, d


def test_manifests_are_there():
    names = [os.path.basename(p) for p in MANIFESTS]
    assert "sidecar.yaml" in names and "tier.yaml" in names, names
    kinds = {d["kind"] for p in MANIFESTS
             for d in containers.load_manifests(os.path.basename(p))}
    assert {"ConfigMap", "Pod", "Deployment", "Service",
            "PodDisruptionBudget"} <= kinds, kinds


def test_manifests_validate_against_the_kubernetes_schemas():
    containers.require_validator()
    rc, docs = validate(MANIFESTS)
    bad = ["%s #%d %s %s: %s" % (os.path.basename(d["file"]), d["index"], d.get("kind"),
                                 d.get("name"), d["errors"]) for d in docs if d["errors"]]
    assert rc == 0 and not bad, "\n".join(bad)
    assert len(docs) >= 6


def test_validator_refuses_what_the_api_server_refuses(tmp_path):
    """The validator is no rubber stamp: a wrong type, a value outside an
    enum, a missing required field, a misspelt field and an unknown kind
    are each reported where they are."""
    containers.require_validator()
    docs = containers.load_manifests("tier.yaml")
    deploy = containers.find(docs, "Deployment")
    c = containers.pod_spec(deploy)["containers"][0]
    c["livenessProbe"]["periodSeconds"] = "10"
    c["readinesProbe"] = c.pop("readinessProbe")
    del c["volumeMounts"][0]["mountPath"]
    containers.find(docs, "Service")["spec"]["externalTrafficPolicy"] = "Locale"
    docs.append({"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "x"}})
    path = tmp_path / "broken.yaml"
    path.write_text(containers.dump_manifests(docs))
    rc, out = validate([str(path)])
    assert rc == 1
    errors = {d.get("kind"): "\n".join(d["errors"]) for d in out}
    base = "/spec/template/spec/containers/0"
    assert base + "/livenessProbe/periodSeconds: must be integer" in errors["Deployment"]
    assert base + "/readinesProbe: unknown field" in errors["Deployment"]
    assert base + "/volumeMounts/0: must have required property mountPath" in errors["Deployment"]
    assert "/spec/externalTrafficPolicy: must be equal to one of the allowed values" \
        in errors["Service"]
    assert "no schema for apiVersion v1 kind Nope" in errors["Nope"]
    assert errors["ConfigMap"] == "" and errors["PodDisruptionBudget"] == ""


@pytest.mark.parametrize("name", ["sidecar.yaml", "tier.yaml"])
def test_manifests_hang_together(name):
    """What no schema checks: names that refer to each other, ports and
    probes that match h3gate's own configuration, the grace period that
    covers the drain, the privileges."""
    docs = containers.load_manifests(name)
    kind = "Pod" if name == "sidecar.yaml" else "Deployment"
    w = containers.find(docs, kind)
    spec = containers.pod_spec(w)
    gw = next(c for c in spec["containers"] if c["name"] == "h3gate")
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, "%s mounts unknown volume %s" % (c["name"], m["name"])
    for v in volumes.values():
        if "configMap" in v:
            containers.find(docs, "ConfigMap", v["configMap"]["name"])
    secrets = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    assert secrets == {"h3gate-tls", "h3gate-secrets"}

    # h3gate's configuration, from the ConfigMap at the path it is given.
    cm_vol = next(m for m in gw["volumeMounts"]
                  if "configMap" in volumes[m["name"]])
    assert gw["args"] == ["-c", cm_vol["mountPath"] + "/h3gate.ini"]
    ini = ini_of(docs, volumes[cm_vol["name"]]["configMap"]["name"])
    mounts = {m["mountPath"]: volumes[m["name"]] for m in gw["volumeMounts"]}

    def mounted(path, secret):
        d, f = os.path.split(path)
        assert d in mounts and mounts[d].get("secret", {}).get("secretName") == secret, path
        return f

    assert mounted(ini["listener"]["cert"], "h3gate-tls") == "tls.crt"
    assert mounted(ini["listener"]["key"], "h3gate-tls") == "tls.key"
    assert mounted(ini["listener"]["secrets_file"], "h3gate-secrets") == "secrets"

    ports = {p["name"]: p for p in gw["ports"]}
    listen = int(ini["listener"]["port"])
    assert (ports["h3"]["containerPort"], ports["h3"]["protocol"]) == (listen, "UDP")
    assert (ports["https"]["containerPort"], ports["https"]["protocol"]) == (listen, "TCP")
    host, _, admin = ini["server"]["admin"].rpartition(":")
    assert host == "0.0.0.0", "the kubelet probes the Pod's address"
    assert ports["admin"]["containerPort"] == int(admin)
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

    # Stopping: the preStop drain and everything in flight fit in the grace.
    drain = seconds(ini["server"]["drain_delay"]) + seconds(ini["server"]["shutdown_timeout"])
    assert drain > 0
    assert spec["terminationGracePeriodSeconds"] > drain
    assert "kill -TERM 1" in " ".join(gw["lifecycle"]["preStop"]["exec"]["command"])

    # Unprivileged: uid 10001, no capability, 443 through the Pod's sysctl.
    assert spec["securityContext"]["runAsNonRoot"] is True
    sysctls = {s["name"]: int(s["value"]) for s in spec["securityContext"]["sysctls"]}
    assert sysctls["net.ipv4.ip_unprivileged_port_start"] <= listen
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
    assert gw["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["fsGroup"] == 10001

    if kind == "Deployment":
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert w["spec"]["replicas"] >= 2
        svc = containers.find(docs, "Service")
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["externalTrafficPolicy"] == "Local"
        sports = {(p["port"], p["protocol"]): p["targetPort"] for p in svc["spec"]["ports"]}
        assert sports == {(listen, "UDP"): "h3", (listen, "TCP"): "https"}
        assert all(p["name"] != "admin" for p in svc["spec"]["ports"])
        pdb = containers.find(docs, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["minAvailable"] < w["spec"]["replicas"]
    else:
        # The app outlives the gateway's drain (its preStop waits for it).
        app = next(c for c in spec["containers"] if c["name"] != "h3gate")
        assert "9901" in " ".join(app["lifecycle"]["preStop"]["exec"]["command"])
        assert ini["upstream"]["server"].startswith("127.0.0.1:")
        # The Pod's readiness is h3gate's, which waits for the app's
        # health check (the kubelet cannot reach the app on 127.0.0.1).
        assert ini["upstream"]["health_check"].split()[0] in ("GET", "HEAD")
        assert "readinessProbe" not in app


@pytest.mark.parametrize("name", ["sidecar.yaml", "tier.yaml"])
def test_configmap_passes_check_config_in_the_image(name, container_images, certs, tmp_path):
    """h3gate in the image accepts each ConfigMap's file, with the Secrets'
    files where the manifest mounts them."""
    docs = containers.load_manifests(name)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "h3gate.ini").write_text(cm["data"]["h3gate.ini"])
    secret = containers.random_secret_line()
    tls = containers.KubePlay._secret_files("h3gate-tls", certs, secret)
    sec = containers.KubePlay._secret_files("h3gate-secrets", certs, secret)
    for sub, files in (("tls", tls), ("secrets", sec)):
        (tmp_path / sub).mkdir()
        for f, data in files.items():
            (tmp_path / sub / f).write_bytes(data)
            os.chmod(tmp_path / sub / f, 0o444)
    p = Podman().run("run", "--rm", "--network", "none", "--health-interval", "disable",
                     "-v", "%s:/etc/h3gate/config:ro" % (tmp_path / "config"),
                     "-v", "%s:/etc/h3gate/tls:ro" % (tmp_path / "tls"),
                     "-v", "%s:/etc/h3gate/secrets:ro" % (tmp_path / "secrets"),
                     container_images.image, "--check-config",
                     "/etc/h3gate/config/h3gate.ini", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "/etc/h3gate/config/h3gate.ini: ok" in p.stdout + p.stderr


def test_sidecar_pod_runs_with_podman_kube_play(container_images, certs, tmp_path):
    """sidecar.yaml in podman: ready (/readyz through the published admin
    port), a page over HTTP/3 and over TCP from the host, served by the app
    in the Pod. The certificate renewed as the README says (new files in
    the Secret, a reload through exec). Then what the kubelet does to stop
    a Pod: both preStop hooks at once (podman runs none). The gateway's
    drains it: /readyz 503, a download in flight completes, new requests
    are still served during drain_delay, exit 0; the app's returns only
    once the gateway is gone. `podman kube down` removes the rest."""
    play = containers.KubePlay(container_images, certs, str(tmp_path),
                               containers.random_secret_line())
    podman = play.podman
    gw, app = play.container("h3gate"), play.container("app")
    admin = "http://127.0.0.1:%d" % play.ports["admin"]
    try:
        play.play()
        log = containers.LogFollower(podman, gw)
        log.wait_for_line(" ready: ", timeout=60)
        # The Pod's readiness, as the kubelet probes it: h3gate's /readyz
        # through the published admin port (ready once the app's health
        # check passed).
        wait_for("/readyz 200 from the host", lambda: _get(admin + "/readyz") == (200, "ready\n"),
                 timeout=30)
        status, body = _get(admin + "/upstreams")
        assert status == 200, (status, body)
        srv = json.loads(body)["groups"][0]["servers"][0]
        assert srv["checked"] is True and srv["up"] is True, srv
        assert _get(admin + "/healthz") == (200, "ok\n")

        target = types.SimpleNamespace(port=play.ports["h3"], tcp_port=play.ports["https"],
                                       certs=certs)
        with H3Client(target) as cl:
            r = cl.get("/", timeout=20)
        assert r.error is None and r.status == 200 and r.http_version == 30, r
        assert "served via h3gate" in r.body.decode()
        assert "<th>via</th><td>3 h3gate</td>" in r.body.decode()
        with H2Client(target) as cl:
            r = cl.get("/", timeout=20)
        assert r.error is None and r.status == 200, r
        assert "served via h3gate" in r.body.decode()

        # Certificate renewal as the README gives it: the Secret's files
        # change (the kubelet rewrites them), then a reload through exec.
        # New handshakes use the new chain: a client that trusts only the
        # new CA gets in, one that trusts only the old one no longer does.
        renewed = _renew_certificate(play, str(tmp_path / "renewed"))
        podman.run("exec", gw, "bash", "-c", "kill -HUP 1")
        log.wait_for_line("configuration reloaded", timeout=15)
        old_target = target
        target = types.SimpleNamespace(port=play.ports["h3"], tcp_port=play.ports["https"],
                                       certs=renewed)
        with H3Client(target) as cl:
            r = cl.get("/", timeout=20)
        assert r.error is None and r.status == 200, r
        with H3Client(old_target) as cl:
            r = cl.get("/", timeout=20)
        assert r.error is not None, "the old CA still verifies the gateway: %s" % r

        # In flight when the Pod is told to stop, and past drain_delay (5 s)
        # into the drain proper: about 8 s at the client's pace.
        n = 12 << 20
        started = threading.Event()
        result = {}

        def download():
            with H3Client(target) as cl:
                result["r"] = cl.get("/bytes/%d" % n, timeout=60, pace=3 << 19, keep=0,
                                     on_data=lambda _r: started.set())

        t = threading.Thread(target=download)
        t.start()
        assert started.wait(30), "the download did not start"

        hooks = {}
        for name, cmd in play.hooks.items():
            hooks[name] = _Hook(podman, play.container(name), cmd)
        assert set(hooks) == {"h3gate", "app"}
        wait_for("/readyz 503 once the preStop hook ran",
                 lambda: _get(admin + "/readyz") == (503, "draining\n"), timeout=10)
        log.wait_for_line("draining: not ready, still serving", timeout=10)
        # drain_delay: a new connection is still served.
        with H3Client(target) as cl:
            r = cl.get("/", timeout=20)
        assert r.error is None and r.status == 200, r

        log.wait_for_line("shutting down: draining", timeout=15)
        assert t.is_alive(), "the download ended before the drain began"
        t.join(60)
        r = result["r"]
        assert r.error is None and r.status == 200 and r.body_len == n, r
        code = int(podman.out("wait", gw, timeout=60))
        gone = time.monotonic()
        assert code == 0, podman.logs(gw)[-2000:]
        for h in hooks.values():
            h.join(60)
        # The app's hook waited for the gateway; the app still runs (the
        # kubelet would send it SIGTERM now).
        assert hooks["app"].done_at >= gone - 1.0, (hooks["app"].done_at, gone)
        assert hooks["app"].returncode == 0, hooks["app"].output
        assert podman.state(app) == "running"
        log.close()
        assert "all connections closed" in log.text()
    finally:
        play.down()
    assert not podman.exists("pod", play.name)


def _renew_certificate(play, out):
    """A new CA and server certificate (certs/make-certs.sh), written over
    the h3gate-tls Secret's files the way the kubelet updates a Secret
    volume: whole files swapped in, same names, same owner and mode."""
    subprocess.run(["bash", os.path.join(SRC, "certs", "make-certs.sh"), out],
                   check=True, capture_output=True, timeout=60)
    renewed = Certs(out)
    d = play.secret_dirs["h3gate-tls"]
    for name, src in (("tls.crt", renewed.chain), ("tls.key", renewed.key)):
        st = os.stat(os.path.join(d, name))
        tmp = os.path.join(d, "." + name + ".new")
        shutil.copyfile(src, tmp)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o777)
        os.replace(tmp, os.path.join(d, name))
    return renewed


def _get(url):
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


class _Hook:
    """A preStop hook's command run in its container, as the kubelet does."""

    def __init__(self, podman, container, cmd):
        self.done_at = None
        self.returncode = None
        self.output = ""
        self._p = podman.popen("exec", container, *cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        self._t = threading.Thread(target=self._wait, daemon=True)
        self._t.start()

    def _wait(self):
        self.output = self._p.communicate()[0]
        self.returncode = self._p.returncode
        self.done_at = time.monotonic()

    def join(self, timeout):
        self._t.join(timeout)
        assert self.done_at is not None, "a preStop hook still runs"
