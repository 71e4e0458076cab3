"""The station file and recipes (runtime/station): errors name their key path, one line each; `config check / show
/ schema`; recipes selected by a real pymodbus client through register 11 while `run --config` inspects, each
result equal to that recipe's model on the same image and carrying its recipe; an unknown recipe refused with
code 6 until a known one is written; the ignore mask and the minimum defect area; `history --recipe`."""
from __future__ import annotations

import json
import os
import sqlite3
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as hs
from typer.testing import CliRunner

from edge_stpm.cli import app
from edge_stpm.common.errors import UserErrors
from edge_stpm.runtime.station import config

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _station(tmp_path: Path, bundle: Path, extra: str = "", b_extra: str = "") -> Path:
    f = tmp_path / "station.toml"
    f.write_text(f"""version = 1
recipe = "a"
[[recipes]]
name = "a"
index = 1
model = "{bundle}"
[[recipes]]
name = "b"
index = 2
model = "{bundle}"
threshold = 2.5
{b_extra}
{extra}""")
    return f


def test_errors_name_their_key_path_one_line_each(tmp_path: Path) -> None:
    doc = {"recipes": [{"name": "a", "index": 0, "model": str(tmp_path)},
                       {"name": "b", "index": 1, "model": str(tmp_path / "missing"), "treshold": 2}],
           "run": {"threads": 0, "trigger": "sometimes"}, "http": {"fps": 500}}
    with pytest.raises(UserErrors) as e:
        config.parse(doc, tmp_path, "s.toml")
    assert sorted(e.value.lines) == sorted([
        "s.toml: recipes[1].treshold: unknown key (misspelled? `edge-stpm config schema` lists the keys)",
        "s.toml: run.threads: Input should be greater than or equal to 1",
        "s.toml: run.trigger: Input should be 'free-run', 'plc' or 'http'",
        "s.toml: http.fps: Input should be less than or equal to 120",
        f"s.toml: recipes[1].model: no bundle at {tmp_path / 'missing'}"])
    with pytest.raises(UserErrors, match=r"recipes\[1\].model: no bundle at .*missing"):
        config.parse({"recipes": doc["recipes"][:1] + [{"name": "b", "index": 1, "model": "missing"}]}, tmp_path)
    with pytest.raises(UserErrors, match=r"recipes\[1\].index: 0 is also recipes\[0\].index"):
        config.parse({"recipes": [{"name": "a", "index": 0, "model": "x"}, {"name": "b", "index": 0, "model": "y"}]},
                     tmp_path)


_json = hs.recursive(hs.none() | hs.booleans() | hs.integers(-10**6, 10**6) | hs.floats(allow_nan=True) | hs.text(max_size=8),
                     lambda c: hs.lists(c, max_size=4) | hs.dictionaries(hs.text(max_size=8), c, max_size=4), max_leaves=12)
_keys = hs.sampled_from(["recipes", "sources", "run", "http", "mqtt", "history", "version", "recipe", "x"])


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.dictionaries(_keys, _json | hs.lists(hs.dictionaries(hs.sampled_from(
    ["name", "index", "model", "threshold", "roi", "spec", "camera", "min_defect_area", "ignore_polygons"]), _json,
    max_size=5), max_size=3), max_size=5))
def test_random_documents_are_a_station_or_lines_naming_keys(doc) -> None:
    try:
        config.parse(doc, Path("/nonexistent"), "f")
    except UserErrors as exc:
        assert exc.lines and all(line.startswith("f: ") and "\n" not in line for line in exc.lines), exc.lines


def test_config_commands(exported: Path, tmp_path: Path) -> None:
    good = _station(tmp_path, exported)
    r = runner.invoke(app, ["config", "check", str(good)])
    assert r.exit_code == 0 and "2 recipes (1 a, 2 b)" in r.output, r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[[recipes]]\nname = "a"\nindex = 0\nmodel = "nowhere"\n[run]\nworkers = 99\n')
    r = runner.invoke(app, ["config", "check", str(bad)])
    errs = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(errs) == 2 and "Traceback" not in r.output, r.output
    assert any("run.workers" in e for e in errs)
    r = runner.invoke(app, ["config", "check", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "no station file" in r.output
    r = runner.invoke(app, ["config", "show", str(good)])
    assert r.exit_code == 0 and "fps = 15.0" in r.output and 'trigger = "free-run"' in r.output, r.output
    r = runner.invoke(app, ["config", "schema"])
    assert json.loads(r.output)["title"] == "edge-stpm station file"
    assert r.output == (ROOT / "docs" / "station.schema.json").read_text(), "docs/station.schema.json is stale"
    for example in (ROOT / "docs" / "station").glob("*.toml"):
        config.Station.model_validate(config.read_toml(example))
    one = runner.invoke(app, ["run", "--config", str(good), "--model", str(exported)])
    assert one.exit_code == 2 and "give one or the other" in one.output


def _regs(c):
    return c.read_holding_registers(0, count=12, device_id=1).registers


def _recipe_cycles(port: int, n: int, proc, unknown_at: int) -> list[tuple]:
    """The PLC: selects recipe 1 or 2 (alternating every 10 cycles) through register 11 before each trigger; at
    cycle ``unknown_at`` it first writes 7 and checks that triggers are refused with 6 and the 6 stays."""
    from pymodbus.client import ModbusTcpClient

    from edge_stpm.runtime.line import plc
    from helpers.line_parts import _wait_bit

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    deadline = time.monotonic() + 120
    while not c.connect():
        assert time.monotonic() < deadline and proc.poll() is None, "the box's Modbus server did not come up"
        time.sleep(0.2)
    seen = []
    try:
        for k in range(n):
            _wait_bit(c, plc.BIT_TRIGGER_READY, True)
            if k == unknown_at:
                c.write_register(plc.RECIPE, 7, device_id=1)
                for _ in range(2):
                    c.write_register(plc.COMMAND, plc.CMD_TRIGGER, device_id=1)
                    c.write_register(plc.COMMAND, 0, device_id=1)
                    time.sleep(0.3)  # time enough for a wrong inspection to show
                    r = _regs(c)
                    assert r[plc.ERROR_CODE] == plc.ERR_RECIPE and r[plc.STATUS] & plc.BIT_ERROR, r
                    assert not r[plc.STATUS] & plc.BIT_RESULTS_READY, "nothing inspected"
            recipe = 1 if (k // 10) % 2 == 0 else 2
            c.write_register(plc.RECIPE, recipe, device_id=1)
            assert _regs(c)[plc.ERROR_CODE] != plc.ERR_RECIPE, "a known recipe clears the 6"
            c.write_register(plc.COMMAND, plc.CMD_TRIGGER, device_id=1)
            regs = _wait_bit(c, plc.BIT_RESULTS_READY, True)
            seen.append((regs[plc.TRIGGER_ID], recipe, "NG" if regs[plc.STATUS] & plc.BIT_NG else "OK"))
            c.write_register(plc.COMMAND, plc.CMD_ACK, device_id=1)
            _wait_bit(c, plc.BIT_RESULTS_READY, False)
            c.write_register(plc.COMMAND, 0, device_id=1)
    finally:
        c.close()
    return seen


def test_plc_selects_recipes_and_an_unknown_one_is_refused(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """1,000 cycles, recipe A and B alternating every 10 (as the issue asks); each result equal to `infer` with its
    recipe's model on the same image."""
    pytest.importorskip("pymodbus")
    from helpers.line_parts import free_port, image_folder

    from edge_stpm.runtime.inspector import Inspector

    n = 1000
    images = image_folder(synth_dir, tmp_path / "parts", n)
    port = free_port()
    st = _station(tmp_path, exported, extra=f'[[sources]]\nspec = "{tmp_path / "parts"}"\n[run]\ntrigger = "plc"\n'
                                            f'headless = true\n[modbus]\nbind = "127.0.0.1:{port}"\n'
                                            f'[history]\ndb = "{tmp_path / "h.db"}"\n')
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(st), "--max-frames", str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = _recipe_cycles(port, n, p, unknown_at=55)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "recipe 1 a:" in out and "recipe 2 b:" in out, out
    con = sqlite3.connect(str(tmp_path / "h.db"))
    rows = con.execute("SELECT trigger_id, verdict, normalised_score, frame, recipe_index, recipe_name, model_sha256 "
                       "FROM inspections ORDER BY id").fetchall()
    assert len(rows) == n, "the refused triggers inspected nothing"
    assert [(r[0], r[4], r[1]) for r in rows] == [(s[0], s[1], s[2]) for s in seen]
    assert {r[5] for r in rows if r[4] == 1} == {"a"} and {r[5] for r in rows if r[4] == 2} == {"b"}
    from edge_stpm.contract.artifacts import model_sha256

    assert {r[6] for r in rows} == {model_sha256(exported)}
    # the station file has no version (1): recipe b's threshold 2.5 multiplies the stored raw threshold, as always
    insp = {1: Inspector.load(exported, "onnxruntime", 1.0),
            2: Inspector.load(exported, "onnxruntime", 2.5, threshold_multiple=True)}
    for r in rows:
        want = insp[r[4]].inspect(cv2.imread(str(images[r[3]])))
        assert abs(want.normalised_score - r[2]) <= 1e-4 * max(1.0, abs(r[2])) and want.verdict == r[1], r
    for i in insp.values():
        i.close()
    h = runner.invoke(app, ["history", "--history-db", str(tmp_path / "h.db"), "--recipe", "b", "--limit", "1000",
                            "--format", "json"])
    assert h.exit_code == 0 and {x["recipe_name"] for x in json.loads(h.output)} == {"b"}
    assert len(json.loads(h.output)) == sum(1 for r in rows if r[4] == 2)


def test_ignore_mask_and_minimum_defect_area(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    from edge_stpm.runtime.station.recipes import StationInspector, load_recipes

    defect = next(p for p in sorted((synth_dir / "test").glob("*/*.png")) if p.parent.name != "good")
    frame = cv2.imread(str(defect))
    mask = cv2.imread(str(synth_dir / "ground_truth" / defect.parent.name / f"{defect.stem}_mask.png"), 0)
    st = config.load(_station(tmp_path, exported))
    plain = StationInspector(load_recipes(st.recipes[:1], st.recipes[0]))
    base = plain.inspect(frame)
    assert base.ng and base.recipe == {"index": 1, "name": "a", "model_sha256": base.recipe["model_sha256"]}
    region = int(base.region_map.__ge__(base.pixel_threshold).sum())
    ignore = cv2.dilate(mask, np.ones((41, 41), np.uint8))  # the defect and 20 px around it
    cv2.imwrite(str(tmp_path / "ignore.png"), ignore)
    cases = {"ignore": 'ignore_mask = "ignore.png"', "small": "min_defect_area = 1", "large": "min_defect_area = 100000"}
    got = {}
    for name, line in cases.items():
        s = config.parse(config.read_toml(_station(tmp_path, exported, b_extra=line)), tmp_path)
        b = s.recipes[1].model_copy(update={"threshold": 1.0})
        insp = StationInspector(load_recipes([b], b))
        got[name] = insp.inspect(frame)
        insp.close()
    plain.close()
    # the map is 0 where ignored and the score is taken again over the rest, the graph's way (top 2 %): on this
    # fixture's first crack (measured 2026-12-04) 5.83 → 1.91 normalised; the synthetic map's tails reach further
    # than 20 px at 128², so the bound is a drop of at least 40 %, not a verdict
    from edge_stpm.runtime.station.recipes import score_of

    ig = got["ignore"]
    assert ig.anomaly_map[ignore > 0].max() == 0 and ig.region_map[ignore > 0].max() == 0
    assert ig.score == pytest.approx(score_of(ig.model_map, 2.0)) and ig.model_map.max() < base.model_map.max()
    assert ig.normalised_score <= 0.6 * base.normalised_score, (ig.normalised_score, base.normalised_score)
    assert got["small"].ng and got["small"].defect_area >= 1 and got["small"].defect_area <= region
    assert not got["large"].ng and got["large"].defect_area == got["small"].defect_area
    assert any("min area 100000 px" in n for n in got["large"].notes)
    pic = got["ignore"].overlay(frame)
    assert pic.shape == frame.shape


def _control(tmp_path: Path, bundle: Path):
    from edge_stpm.runtime.station.audit import Audit
    from edge_stpm.runtime.station.control import StationControl
    from edge_stpm.runtime.station.recipes import StationInspector, load_recipes
    from edge_stpm.runtime.station.store import ModelStore

    st = config.parse({"recipes": [{"name": "a", "index": 0, "model": str(bundle)}]}, tmp_path)
    recipes = load_recipes(st.recipes, st.recipes[0], "onnxruntime", threads=1)
    control = StationControl(recipes, ModelStore(tmp_path / "models"), Audit(tmp_path / "h.db"), "onnxruntime", 1,
                             engineer_token="engineer-secret-1")
    control.adopt()
    return StationInspector(recipes, control), control


def test_hot_swap_and_rollback_under_30_fps_lose_no_frame(exported: Path, exported_memory: Path, synth_dir: Path,
                                                         tmp_path: Path) -> None:
    import threading

    from helpers.line_parts import PacedSource

    from edge_stpm.contract.artifacts import model_sha256
    from edge_stpm.runtime.inspector import Inspector
    from edge_stpm.runtime.loop.pipeline import RunOptions, run
    from edge_stpm.runtime.loop.sinks.record import RecordSink

    paths = sorted((synth_dir / "test").glob("*/*.png"))
    images = [cv2.imread(str(p)) for p in paths]
    insp, control = _control(tmp_path, exported)
    n, fps = 240, 30.0
    done: dict = {}

    def swaps() -> None:
        time.sleep(2.5)
        done["deploy"] = control.deploy("a", exported_memory, "test", "fixture")
        time.sleep(2.5)
        done["rollback"] = control.rollback("a", "test")

    t = threading.Thread(target=swaps)
    t.start()
    s = run(insp, [PacedSource(images, n, fps)], RunOptions(headless=True, sinks=[RecordSink(tmp_path / "h.db", "x")]))
    t.join()
    insp.close()
    con = sqlite3.connect(str(tmp_path / "h.db"))
    rows = con.execute("SELECT frame, model_sha256, normalised_score, verdict, verdict_ms FROM inspections ORDER BY id").fetchall()
    assert s.frames == n == len(rows) and [r[0] for r in rows] == list(range(n)), "frames read = inspected = rows"
    sha_a, sha_b = model_sha256(exported), done["deploy"]["after"]["sha256"]
    order = [r[1] for r in rows]
    first_b, last_b = order.index(sha_b), len(order) - 1 - order[::-1].index(sha_b)
    assert set(order[:first_b]) == {sha_a} and set(order[first_b:last_b + 1]) == {sha_b}
    assert set(order[last_b + 1:]) == {sha_a} and last_b + 1 < n, "A, then B, then A again"
    own = {sha_a: Inspector.load(exported, "onnxruntime", threads=1), sha_b: Inspector.load(exported_memory, "onnxruntime", threads=1)}
    for frame, sha, norm, verdict, _ in rows:
        want = own[sha].inspect(images[frame % len(images)])
        assert abs(want.normalised_score - norm) <= 1e-4 * max(1.0, norm) and want.verdict == verdict
    for i in own.values():
        i.close()
    window = [r[4] for r in rows[max(0, first_b - 15):first_b + 15] + rows[max(0, last_b - 15):last_b + 15]]
    print(f"\nswap at frame {first_b}, rollback at {last_b + 1} of {n} at {fps:g} fps: 0 frames lost; verdict latency "
          f"around the swaps max {max(window):.1f} ms (whole run p50 {np.median([r[4] for r in rows]):.1f} ms, max "
          f"{max(r[4] for r in rows):.1f} ms); deploy load {done['deploy']['load_s']:.2f} s, swap {done['deploy']['swap_ms']:.3f} ms")
    from edge_stpm.runtime.station.audit import query

    assert [(a["action"], a["outcome"]) for a in query(tmp_path / "h.db")] == [("deploy", "ok"), ("rollback", "ok"),
                                                                                ("stop", "ok")]


def test_bad_bundles_are_refused_and_the_running_model_stays(exported: Path, trained_memory: Path, synth_dir: Path,
                                                             tmp_path: Path) -> None:
    import shutil

    from edge_stpm.contract.artifacts import write_manifest
    from edge_stpm.common.errors import UserError
    from edge_stpm.runtime.station.audit import query
    from edge_stpm.training.export.exporter import export
    from edge_stpm.training.train import TrainConfig, train

    insp, control = _control(tmp_path, exported)
    running = control.recipes.active.sha256
    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    with open(tampered / "model_fp32.onnx", "r+b") as fh:
        fh.seek(-20, 2)
        fh.write(b"\x00" * 8)
    selftest = tmp_path / "selftest"
    shutil.copytree(exported, selftest)
    doc = json.loads((selftest / "selftest.json").read_text())
    doc["scores"] = {k: [2 * x for x in v] for k, v in doc["scores"].items()}
    (selftest / "selftest.json").write_text(json.dumps(doc))
    write_manifest(selftest)  # a consistent bundle whose graphs do not give its own reference scores
    small = tmp_path / "small_run"
    train(TrainConfig(synth_dir, small, backbone="mobilenet_v2", batch_size=8, image_size=64, head="memory", quiet=True))
    export(small / "model.pt", ["fp32"], tmp_path / "small", quiet=True)
    lite = tmp_path / "lite_run"
    train(TrainConfig(synth_dir, lite, backbone="efficientnet_lite0", batch_size=8, image_size=128, head="memory",
                      quiet=True))
    export(lite / "model.pt", ["fp32"], tmp_path / "lite", quiet=True)
    cases = {tampered: "does not match manifest.json", selftest: "fails its self-test",
             tmp_path / "small": "image_size 64, the running model 128",
             tmp_path / "lite": "backbone efficientnet_lite0, the running model mobilenet_v2"}
    for bundle, why in cases.items():
        with pytest.raises(UserError, match=why):
            control.deploy("a", bundle, "test", str(bundle))
        assert control.recipes.active.sha256 == running and control.recipes.active.version == 0
    insp.close()
    refused = [a for a in query(tmp_path / "h.db") if a["action"] == "deploy"]
    assert [a["outcome"] for a in refused] == ["refused"] * 4
    assert control.store.versions("a")["current"] == 0


def test_deploy_over_http_needs_the_engineer_role(exported: Path, exported_memory: Path, tmp_path: Path) -> None:
    from helpers.line_parts import free_port

    from edge_stpm.common.bind import parse_bind
    from edge_stpm.runtime.web.live import LiveView
    from edge_stpm.runtime.station.audit import query

    insp, control = _control(tmp_path, exported)
    port = free_port()
    view = LiveView(parse_bind(f"127.0.0.1:{port}"), None, {"model": "a"})
    view.control = control
    view.start()
    url = f"http://127.0.0.1:{port}"
    try:
        r = runner.invoke(app, ["deploy", str(exported_memory), "--station", url, "--recipe", "a"])
        assert r.exit_code == 2 and "refused (403)" in r.output and "engineer" in r.output, r.output
        r = runner.invoke(app, ["deploy", str(exported_memory), "--station", url, "--recipe", "a", "--token", "nope"])
        assert r.exit_code == 2 and "401" in r.output  # an unknown token is bad credentials (counted per address)
        r = runner.invoke(app, ["deploy", str(exported_memory), "--station", url, "--recipe", "a", "--token",
                                "engineer-secret-1"])
        assert r.exit_code == 0 and "version 0 → 1 live" in r.output, r.output
        r = runner.invoke(app, ["rollback", "--station", url, "--recipe", "a"], env={"EDGE_STPM_ENGINEER_TOKEN": "engineer-secret-1"})
        assert r.exit_code == 0 and "version 1 → 0 live" in r.output, r.output
        r = runner.invoke(app, ["rollback", "--station", url, "--recipe", "zz", "--token", "engineer-secret-1"])
        assert r.exit_code == 2 and "no recipe named 'zz'" in r.output
        r = runner.invoke(app, ["deploy", str(exported_memory), "--station", "ftp://x", "--recipe", "a"])
        assert r.exit_code == 2 and "give the station's URL" in r.output
    finally:
        view.close()
        insp.close()
    rows = query(tmp_path / "h.db")
    assert [(a["action"], a["outcome"]) for a in rows] == [("deploy", "refused"), ("deploy", "refused"),
                                                           ("deploy", "ok"), ("rollback", "ok"), ("rollback", "refused"),
                                                           ("stop", "ok")]
    assert rows[2]["who"].startswith("engineer@") and rows[2]["after"]["version"] == 1


def test_audit_rows_reach_a_real_rsyslog_as_rfc5424(tmp_path: Path) -> None:
    """Debian's rsyslogd on loopback UDP, its raw messages written to a file: each audit row arrives as one RFC 5424
    message (version 1, ISO time, host, app, structured data)."""
    import re
    import shutil as _sh

    from helpers.line_parts import free_port

    from edge_stpm.runtime.station.audit import Audit, query

    rsyslogd = _sh.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if rsyslogd is None:
        pytest.skip("rsyslogd is not installed (apt-get install rsyslog)")
    port = free_port()
    out = tmp_path / "audit.log"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f'global(workDirectory="{tmp_path}")\nmodule(load="imudp")\n'
                    f'input(type="imudp" address="127.0.0.1" port="{port}")\n'
                    'template(name="raw" type="string" string="%rawmsg%\\n")\n'
                    f'*.* action(type="omfile" file="{out}" template="raw")\n')
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read()
        audit = Audit(tmp_path / "h.db", f"127.0.0.1:{port}")
        audit.write("engineer@127.0.0.1", "deploy", "housing-a", {"version": 1}, {"version": 2}, "ok", "self-test ok")
        audit.write("viewer@10.0.0.9", "rollback", "housing-a", None, None, "refused", "needs the engineer role")
        audit.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
            time.sleep(0.1)
        lines = out.read_text().splitlines()
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(lines) == 2, lines
    rfc5424 = re.compile(r'^<(\d+)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ edge-stpm \d+ audit '
                         r'\[audit@32473 who="([^"]*)" action="(\w+)" recipe="([^"]*)" outcome="(\w+)"\] (.*)$')
    got = [rfc5424.match(line) for line in lines]
    assert all(got), lines
    assert [(m.group(2), m.group(3), m.group(5)) for m in got] == [("engineer@127.0.0.1", "deploy", "ok"),
                                                                     ("viewer@10.0.0.9", "rollback", "refused")]
    assert int(got[0].group(1)) == 4 * 8 + 6 and int(got[1].group(1)) == 4 * 8 + 4  # facility auth, info / warning
    assert [r["action"] for r in query(tmp_path / "h.db")] == ["deploy", "rollback"]


def test_service_notify_healthz_and_sighup_reload(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """`run --config` as systemd runs it: READY and WATCHDOG over a real NOTIFY_SOCKET datagram socket, /healthz 200
    while the source delivers, SIGHUP with a live change (a threshold: applied) and with one that needs a restart
    (refused in one line, the running configuration stays), STOPPING at SIGTERM; `service` prints the unit."""
    import signal
    import socket
    import urllib.request

    from helpers.line_parts import free_port

    from edge_stpm.runtime.station.audit import query

    port = free_port()
    body = (f'[[sources]]\nspec = "{synth_dir / "video.avi"}"\n[run]\nheadless = true\nloop = true\n'
            f'[http]\nbind = "127.0.0.1:{port}"\n[history]\ndb = "{tmp_path / "h.db"}"\n[store]\nroot = "{tmp_path / "m"}"\n')
    st = _station(tmp_path, exported, extra=body)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    msgs: list[bytes] = []

    def drain() -> None:  # as systemd does: read every message as it comes
        try:
            while True:
                msgs.append(sock.recv(100))
        except OSError:
            pass

    import threading

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = os.environ | {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "600000"}
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(st), "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    get = lambda path: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10).read())  # noqa: E731
    try:
        deadline = time.monotonic() + 60
        while b"WATCHDOG=1" not in msgs:
            assert time.monotonic() < deadline and p.poll() is None, (msgs, p.poll())
            time.sleep(0.1)
        assert msgs[0] == b"READY=1"
        assert get("healthz") == {"ok": True, "problems": []}
        assert [r["threshold"] for r in get("recipe")["recipes"]] == [1.0, 2.5]
        st.write_text(st.read_text().replace("threshold = 2.5", "threshold = 3.0"))
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while [r["threshold"] for r in get("recipe")["recipes"]] != [1.0, 3.0]:
            assert time.monotonic() < deadline, "the threshold change was not applied"
            time.sleep(0.2)
        st.write_text(st.read_text().replace("loop = true", "loop = false"))
        p.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert [r["threshold"] for r in get("recipe")["recipes"]] == [1.0, 3.0]
        assert p.poll() is None, "a refused reload does not stop the station"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        time.sleep(0.5)
    finally:
        if p.poll() is None:
            p.kill()
        sock.close()
    assert b"STOPPING=1" in msgs
    refused = [line for line in err.splitlines() if line.startswith("error:")]
    assert refused == ["error: config reload refused: run.loop changed, which needs a restart; the running "
                       "configuration stays"], err
    reloads = [(a["recipe"], a["outcome"], a["after"]) for a in query(tmp_path / "h.db") if a["action"] == "config reload"]
    assert reloads[0][:2] == ("b", "ok") and reloads[0][2]["threshold"] == 3.0 and reloads[1][1] == "refused"
    unit = runner.invoke(app, ["service", "--config", str(st), "--user", "inspect"])
    assert unit.exit_code == 0 and "Type=notify" in unit.output and "WatchdogSec=30" in unit.output
    assert f"run --config {st.resolve()}" in unit.output and "User=inspect" in unit.output


def test_healthz_says_what_is_wrong() -> None:
    from edge_stpm.common.bind import parse_bind
    from edge_stpm.runtime.web.live import LiveView

    v = LiveView(parse_bind("127.0.0.1:1"), None, {"model": "m"}, sources=["cam"], starting=True)
    assert v.health() == (False, ["starting: the sources and the PLC servers are not up yet"])
    v.started()  # the run: its sources open, its PLC servers listen
    assert v.health() == (True, [])  # within the start grace
    v.t_start -= 60
    assert v.health() == (False, ["source 0 (cam) delivers no frames"])
    v.publish(0, None, False, 0.5, 1.0, 30.0, {}, 0, 0)
    assert v.health() == (True, [])
    v.sinks([], "record: disk full")
    assert v.health() == (False, ["output failing: record: disk full"])
    v.triggered = True
    v._last_frame[0] -= 60
    assert v.health()[1] == ["output failing: record: disk full"], "a triggered source waits for its trigger"


def test_drop_folder_deploys_what_stopped_changing_and_refuses_in_place(exported: Path, exported_memory: Path,
                                                                         tmp_path: Path) -> None:
    """Polled by hand (the watcher's thread does the same every 2 s): an item is taken on the second look that finds
    it unchanged; a good bundle goes live, a tampered one is refused with its reason beside it, the model stays."""
    from edge_stpm.contract.artifacts import model_sha256
    from edge_stpm.runtime.station.control import zip_bundle
    from edge_stpm.runtime.station.dropfolder import DropWatcher

    insp, control = _control(tmp_path, exported)
    lines: list[str] = []
    w = DropWatcher(control, tmp_path / "drop", lines.append)
    w.root.mkdir()
    (w.root / "a").mkdir()
    (w.root / "nobody").mkdir()
    data = zip_bundle(exported_memory)
    part = w.root / "a" / "new.zip"
    part.write_bytes(data[: len(data) // 2])  # a copy still under way
    w.poll()
    part.write_bytes(data)
    w.poll()
    assert control.recipes.active.version == 0 and part.exists(), "changed since the last look: not taken yet"
    w.poll()
    assert control.recipes.active.sha256 == model_sha256(exported_memory) and control.recipes.active.version == 1
    assert not part.exists() and len(list((w.root / "a" / ".done").glob("*-new.zip"))) == 1
    tampered = w.root / "a" / "tampered"
    shutil.copytree(exported, tampered)
    with open(tampered / "model_fp32.onnx", "r+b") as fh:
        fh.seek(-20, 2)
        fh.write(b"\x00" * 8)
    w.poll()
    w.poll()
    assert control.recipes.active.version == 1, "the running model stays"
    why = list((w.root / "a" / ".refused").glob("*-tampered.txt"))
    assert len(why) == 1 and "does not match manifest.json" in why[0].read_text()
    assert sum("names no recipe" in x for x in lines) == 1 and (w.root / "nobody").is_dir()
    assert [x.split(":")[0] for x in lines if "recipe a" in x] == ["drop folder", "drop folder"]
    insp.close()


def test_run_with_a_drop_folder(exported: Path, exported_memory: Path, synth_dir: Path, tmp_path: Path) -> None:
    from edge_stpm.contract.artifacts import model_sha256
    from edge_stpm.runtime.station.control import zip_bundle

    st = _station(tmp_path, exported, extra=f'[[sources]]\nspec = "{synth_dir / "test" / "good"}"\n[run]\n'
                                            f'headless = true\nloop = true\n[history]\ndb = "{tmp_path / "h.db"}"\n'
                                            f'[store]\nroot = "{tmp_path / "models"}"\ndrop = "{tmp_path / "drop"}"\n')
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(st)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    new = model_sha256(exported_memory)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "drop" / "a").is_dir():
            assert time.monotonic() < deadline and p.poll() is None, "no drop folder made"
            time.sleep(0.2)
        (tmp_path / "drop" / "a" / ".in.zip").write_bytes(zip_bundle(exported_memory))
        (tmp_path / "drop" / "a" / ".in.zip").rename(tmp_path / "drop" / "a" / "v2.zip")  # as a careful copy does
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(str(tmp_path / "h.db")) as con:
                if con.execute("SELECT COUNT(*) FROM inspections WHERE model_sha256 = ?", (new,)).fetchone()[0] > 5:
                    break
            assert time.monotonic() < deadline and p.poll() is None, "the dropped bundle never went live"
            time.sleep(0.5)
        p.terminate()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert "drop folder: v2.zip deployed to recipe a: v0 → v1 live" in out, out


def test_safe_mode_serves_the_errors_until_sighup_finds_the_file_good(exported: Path, synth_dir: Path,
                                                                       tmp_path: Path) -> None:
    """The unit's `run --config FILE --safe-mode` with a misspelled key: no crash loop — READY and a safe-mode
    STATUS to systemd, the error line with its key path on the page and /healthz 503, watchdog pings; the file fixed
    and SIGHUP: the same process becomes the station (/healthz 200 with the source delivering)."""
    import signal
    import socket
    import threading
    import urllib.error
    import urllib.request

    from helpers.line_parts import free_port

    port = free_port()
    body = (f'[[sources]]\nspec = "{synth_dir / "video.avi"}"\n[run]\nheadless = true\nloop = true\n'
            f'[http]\nbind = "127.0.0.1:{port}"\n[history]\ndb = "{tmp_path / "h.db"}"\n')
    st = _station(tmp_path, exported, extra=body, b_extra="min_defect_aera = 5")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    sock.settimeout(1)
    msgs: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                msgs.append(sock.recv(300))
            except socket.timeout:
                continue
            except OSError:
                return

    threading.Thread(target=drain, daemon=True).start()
    env = os.environ | {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "3000000"}
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(st), "--safe-mode",
                          "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=env)

    def healthz() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                code, text = healthz()
                break
            except OSError:
                assert time.monotonic() < deadline and p.poll() is None, "no safe-mode page"
                time.sleep(0.2)
        assert code == 503 and "recipes[1].min_defect_aera: unknown key" in text, text
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "Safe mode" in page and "recipes[1].min_defect_aera" in page
        time.sleep(2.5)
        assert msgs[0] == b"READY=1" and any(m.startswith(b"STATUS=safe mode: ") for m in msgs), msgs
        assert msgs.count(b"WATCHDOG=1") >= 1 and p.poll() is None, "alive and pinging, not a crash loop"
        st.write_text(st.read_text().replace("min_defect_aera = 5", "min_defect_area = 5"))
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 90
        while True:
            try:
                code, text = healthz()
                if code == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, (code, text)
            time.sleep(0.3)
        assert json.loads(text) == {"ok": True, "problems": []}
        p.terminate()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        sock.close()
    assert "the station file checks now — starting the station" in err, err[-2000:]
    assert "error: " in err and "min_defect_aera" in err
