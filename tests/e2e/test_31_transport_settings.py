"""Transport settings read back from qlog ([debug] qlog_dir): the
congestion control in force, pacing, and ECN marks reported in our ACKs.

ngtcp2's own qlog records leave the congestion controller out, so h3gate
writes a first record stating its settings; ECN reporting is visible in
ngtcp2's records of the ACK frames we send (ect0/ect1/ce counts), which
only appear when we read the marks of the client's packets (IP_RECVTOS).
ngtcp2's example client marks its packets ECT(0), which makes it the
client of choice here.
"""
import glob
import json
import subprocess

import pytest

GTLSCLIENT = "/usr/bin/gtlsclient"


def records(path):
    with open(path, "rb") as f:
        for chunk in f.read().split(b"\x1e"):
            chunk = chunk.strip()
            if chunk:
                yield json.loads(chunk)


@pytest.mark.parametrize("cc", ["cubic", "bbr", "reno", None])
def test_congestion_control_is_recorded(gateway, h3, tmp_path, cc):
    """None: the key left out; the default is bbr."""
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    listener = {"congestion_control": cc} if cc else {}
    gw = gateway({"listener": listener, "debug": {"qlog_dir": str(qdir)}})
    cc = cc or "bbr"
    r = h3(gw).get("/bytes/100000")
    assert r.error is None and r.status == 200, r
    gw.stop()
    files = glob.glob(str(qdir / "*.sqlog"))
    assert len(files) == 1, files
    recs = list(records(files[0]))
    assert recs[0]["name"] == "h3gate:settings"
    assert recs[0]["data"]["congestion_control"] == cc
    assert recs[0]["data"]["pacing"] is True
    assert any(r.get("qlog_version") for r in recs), "no ngtcp2 qlog header"
    assert any(r.get("name") == "transport:packet_sent" for r in recs)


@pytest.mark.usefixtures("need_gtlsclient")
def test_ecn_marks_are_read_and_reported(gateway, tmp_path):
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    gw = gateway({"debug": {"qlog_dir": str(qdir)}})
    out = tmp_path / "dl"
    out.mkdir()
    p = subprocess.run([GTLSCLIENT, "--exit-on-all-streams-close", "-q",
                        "--download=%s" % out, "127.0.0.1", str(gw.port),
                        "https://localhost:%d/bytes/1000000" % gw.port],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr[-2000:]
    gw.stop()
    files = glob.glob(str(qdir / "*.sqlog"))
    assert files
    ecn_acks = 0
    for rec in records(files[0]):
        if rec.get("name") != "transport:packet_sent":
            continue
        for fr in rec.get("data", {}).get("frames", []):
            if fr.get("frame_type") == "ack" and ("ect0" in fr or "ect1" in fr):
                ecn_acks += 1
    assert ecn_acks > 0, "no ACK of ours carried ECN counts"


def test_bad_qlog_dir_is_a_config_error(tmp_path, certs):
    from conftest import H3GATE_BIN, render_ini  # noqa: E402
    ini = tmp_path / "g.ini"
    ini.write_text(render_ini({
        "listener": {"cert": certs.cert, "key": certs.key},
        "upstream": {"server": "127.0.0.1:1"},
        "debug": {"qlog_dir": str(tmp_path / "missing")}}))
    p = subprocess.run([H3GATE_BIN, "--check-config", str(ini)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "[debug] qlog_dir" in p.stderr


def test_limits_from_the_ini_are_the_transport_parameters(gateway, h3, tmp_path):
    """The connection limits of [listener] are what the gateway announces in
    its transport parameters (RFC 9000 §18.2), read back from its qlog."""
    qdir = tmp_path / "qlog"
    qdir.mkdir()
    gw = gateway({"listener": {"idle_timeout": "17s", "max_streams": "23",
                               "stream_buffer_size": "96KiB",
                               "connection_window": "1536KiB"},
                  "debug": {"qlog_dir": str(qdir)}})
    cl = h3(gw)
    r = cl.post("/sink", 3 * 1024 * 1024, timeout=30)  # past both windows
    assert r.error is None and r.status == 200, r
    assert r.json()["len"] == 3 * 1024 * 1024, r.json()
    gw.stop()
    files = glob.glob(str(qdir / "*.sqlog"))
    assert len(files) == 1, files
    local = [r["data"] for r in records(files[0])
             if r.get("name") == "transport:parameters_set"
             and r.get("data", {}).get("owner") == "local"]
    assert local, "no local transport parameters in the qlog"
    tp = local[0]
    assert tp["max_idle_timeout"] == 17000, tp
    assert tp["initial_max_streams_bidi"] == 23, tp
    assert tp["initial_max_stream_data_bidi_remote"] == 96 * 1024, tp
    assert tp["initial_max_data"] == 1536 * 1024, tp
    assert tp["initial_max_streams_uni"] == 3, tp
