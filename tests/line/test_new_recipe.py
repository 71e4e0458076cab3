"""A recipe created over the API (issue 40): ``POST /api/recipes`` on a real station (``run --config``) on loopback —
roles (401 / 403, audited), the body limit (413 before reading), bad input (422, one line each, nothing created);
the PLC selects the new recipe by Modbus register 11 at once and sees error 7 while it has no model; a deployed
bundle makes it judge parts; after a restart it is there with its PLC index and its deployed version."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"viewer": "viewer-token-0001", "operator": "operator-token-01", "engineer": "engineer-token-01"}


def _call(base: str, method: str, path: str, body: Any = None, role: str | None = "engineer",
          raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {TOKENS[role]}"} if role else {})
    req = urllib.request.Request(base + path, data=data, method=method, headers=h | (headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, json.loads(text) if r.headers.get("Content-Type", "").startswith("application/json") \
                else text.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _start(st: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(st)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _until(what, timeout: float, p: subprocess.Popen, why: str = "timed out") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = what()
            if got:
                return got
        except OSError:
            pass
        assert p.poll() is None, p.stderr.read()
        assert time.monotonic() < deadline, why
        time.sleep(0.3)


def _regs(port: int, write: int | None = None) -> list[int]:
    """The box's holding registers, after writing ``write`` to the recipe register (11) when given."""
    from pymodbus.client import ModbusTcpClient

    from edge_stpm.runtime.line import plc

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    deadline = time.monotonic() + 30
    while not c.connect():  # a station with no model says 503 from the start: /healthz cannot say when Modbus is up
        assert time.monotonic() < deadline, "the box's Modbus server did not come up"
        time.sleep(0.2)
    try:
        if write is not None:
            c.write_register(plc.RECIPE, write, device_id=1)
        return list(c.read_holding_registers(0, count=12, device_id=1).registers)
    finally:
        c.close()


def start_box(tmp: Path, exported: Path, synth_dir: Path) -> dict[str, Any]:
    """A station (``run --config``) in ``tmp`` on loopback: recipe ``a`` (index 0) with the exported model, a Modbus
    server, the three role tokens, a record, a model store; started and answering /healthz. Its state for the tests
    (tests/line/test_manage_recipes.py starts its own): base URL, Modbus port, folder, station file, process."""
    from helpers.line_parts import free_port

    port, modbus = free_port(), free_port()
    st = tmp / "st.toml"
    st.write_text(f"""version = 2
[[recipes]]
name = "a"
index = 0
model = "{exported}"
roi = [0, 0, 120, 120]
min_defect_area = 5
[[sources]]
spec = "{synth_dir / 'train' / 'good'}"
[run]
headless = true
loop = true
threads = 1
[modbus]
bind = "127.0.0.1:{modbus}"
[http]
bind = "127.0.0.1:{port}"
viewer_token = "{TOKENS['viewer']}"
operator_token = "{TOKENS['operator']}"
engineer_token = "{TOKENS['engineer']}"
[history]
db = "{tmp / 'h.db'}"
[store]
root = "{tmp / 'models'}"
[evidence]
folder = "{tmp / 'evidence'}"
""")
    base = f"http://127.0.0.1:{port}"
    state = {"base": base, "modbus": modbus, "tmp": tmp, "st": st, "proc": _start(st), "bundle": exported}
    _until(lambda: _call(base, "GET", "/healthz", role=None)[0] == 200, 90, state["proc"], "the station did not start")
    _plc_listens(modbus)
    return state


def _plc_listens(port: int) -> None:
    """/healthz says 200 only once the PLC servers listen (it says "starting" before): one connect, no retry."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def stop_box(state: dict[str, Any]) -> None:
    p = state["proc"]
    p.terminate()
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()


def restart_box(state: dict[str, Any]) -> None:
    """The station stopped (SIGTERM) and started again on the same file, answering /healthz."""
    stop_box(state)
    state["proc"] = _start(state["st"])
    _until(lambda: _call(state["base"], "GET", "/healthz", role=None)[0] == 200, 90, state["proc"], "no restart")
    _plc_listens(state["modbus"])


@pytest.fixture(scope="module")
def box(exported: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("pymodbus")
    state = start_box(tmp_path_factory.mktemp("newrecipe"), exported, synth_dir)
    yield state
    stop_box(state)


def _names(base: str) -> list[tuple[str, int]]:
    return [(r["name"], r["index"]) for r in _call(base, "GET", "/api/recipes", role="viewer")[1]]


def test_only_an_engineer_creates_a_recipe_and_the_body_is_capped(box) -> None:
    from edge_stpm.runtime.station.audit import query
    from edge_stpm.runtime.web.server import RECIPE_BODY

    base = box["base"]
    assert _call(base, "POST", "/api/recipes", {"name": "x1"}, role=None)[0] == 401
    assert _call(base, "POST", "/api/recipes", {"name": "x1"}, role=None,
                 headers={"Authorization": "Bearer wrong-token-0000"})[0] == 401
    assert _call(base, "POST", "/api/recipes", {"name": "x1"}, role="viewer")[0] == 403
    assert _call(base, "POST", "/api/recipes", {"name": "x1"}, role="operator")[0] == 403
    big = json.dumps({"name": "x1", "copy_from": "a" * RECIPE_BODY}).encode()
    assert _call(base, "POST", "/api/recipes", raw=big)[0] == 413
    assert _names(base) == [("a", 0)], "nothing created"
    rows = [a for a in query(box["tmp"] / "h.db") if a["action"] == "create recipe"]
    assert [(a["who"].split("@")[0], a["outcome"]) for a in rows if not a["who"].startswith("anonymous@")] == [
        ("viewer", "refused"), ("operator", "refused")]
    assert {a["detail"] for a in rows if a["who"].startswith("anonymous@")} == {"no credentials (401)",
                                                                              "bad credentials (401)"}


@pytest.mark.parametrize("body, says", [
    ({"name": "a"}, "name a: recipe a already exists (PLC index 0)"),
    ({"name": "b", "plc_index": 0}, "plc_index 0 is taken by recipe a"),
    ({"name": "b", "plc_index": 65536}, "plc_index 65536 is out of range: 0–65535"),
    ({"name": "b", "plc_index": -1}, "plc_index -1 is out of range: 0–65535"),
    ({"name": "b", "plc_index": "3"}, "plc_index: a whole number 0–65535"),
    ({"name": "bad name!"}, "name bad name!: use 1–64 letters, digits"),
    ({"name": "-b"}, "name -b: use 1–64 letters"),
    ({"name": "b" * 65}, "use 1–64 letters"),
    ({}, "name: give the new recipe's name"),
    ({"name": "b", "copy_from": "zz"}, "copy_from 'zz': no recipe of that name on this station"),
    ({"name": "b", "index": 3}, "unknown key 'index': a new recipe takes name, plc_index, copy_from"),
    ({"name": "recipes.json"}, "reserved"),
])
def test_bad_input_is_422_in_one_line_and_creates_nothing(box, body: dict[str, Any], says: str) -> None:
    code, text = _call(box["base"], "POST", "/api/recipes", body)
    assert code == 422 and says in text and "\n" not in text.strip(), (code, text)
    assert _names(box["base"]) == [("a", 0)]


def test_the_plc_selects_a_created_recipe_at_once_and_it_survives_a_restart(box) -> None:
    """Created with the next free index and with one typed; register 11 selects it at once (error 7, no Trigger
    Ready: no model yet); a deployed bundle makes it judge; after a restart: the same index, the same version."""
    from edge_stpm.runtime.line import plc
    from edge_stpm.runtime.station.audit import query
    from edge_stpm.runtime.station.control import zip_bundle

    base, modbus, p = box["base"], box["modbus"], box["proc"]
    code, r = _call(base, "POST", "/api/recipes", {"name": "b"})
    assert code == 200 and (r["recipe"], r["index"], r["has_model"]) == ("b", 1, False), r
    code, r = _call(base, "POST", "/api/recipes", {"name": "c.2", "plc_index": 9, "copy_from": "a"})
    assert code == 200 and r["index"] == 9, r
    got = {x["name"]: x for x in _call(base, "GET", "/api/recipes", role="viewer")[1]}
    assert (got["c.2"]["roi"], got["c.2"]["min_defect_area"]) == ([0, 0, 120, 120], 5)  # a's settings
    assert (got["b"]["roi"], got["b"]["min_defect_area"], got["b"]["has_model"]) == (None, 0, False)

    regs = _regs(modbus, write=1)  # the PLC selects b by its index
    assert regs[plc.ERROR_CODE] == plc.ERR_NO_MODEL and not regs[plc.STATUS] & plc.BIT_TRIGGER_READY, regs
    assert _call(base, "GET", "/healthz", role=None)[0] == 503
    assert _call(base, "GET", "/api/live", role="viewer")[1]["recipe"]["name"] == "b"
    code, r = _call(base, "POST", "/api/deploy?recipe=b", raw=zip_bundle(box["bundle"]),
                    headers={"Content-Type": "application/zip"})
    assert code == 200 and r["after"]["version"] == 1, r
    regs = _until(lambda: (lambda g: g if g[plc.STATUS] & plc.BIT_TRIGGER_READY else None)(_regs(modbus)), 10, p)
    assert regs[plc.ERROR_CODE] == plc.ERR_NONE, regs
    rows = _until(lambda: _call(base, "GET", "/api/results?recipe=b&limit=20", role="viewer")[1], 30, p)
    assert {x["recipe_index"] for x in rows} == {1} and all(x["verdict"] in ("OK", "NG", "REVIEW") for x in rows)

    p.terminate()
    p.communicate(timeout=60)
    p = box["proc"] = _start(box["st"])  # the next start finds b and c.2 in the model store
    out = _until(lambda: _call(base, "GET", "/healthz", role=None)[0] == 200, 90, p, "no restart")
    assert out
    models = _call(base, "GET", "/models.json", role="viewer")[1]
    assert (models["b"]["loaded"], models["b"]["current"]) == (1, 1), models["b"]
    got = {x["name"]: x for x in _call(base, "GET", "/api/recipes", role="viewer")[1]}
    assert [(n, got[n]["index"], got[n]["has_model"]) for n in ("a", "b", "c.2")] == [
        ("a", 0, True), ("b", 1, True), ("c.2", 9, False)]
    assert _regs(modbus, write=1)[plc.ERROR_CODE] == plc.ERR_NONE
    regs = _regs(modbus, write=9)
    assert regs[plc.ERROR_CODE] == plc.ERR_NO_MODEL and not regs[plc.STATUS] & plc.BIT_TRIGGER_READY, regs
    assert _regs(modbus, write=0)[plc.ERROR_CODE] == plc.ERR_NONE
    made = [a for a in query(box["tmp"] / "h.db") if a["action"] == "create recipe" and a["outcome"] == "ok"]
    assert [(a["recipe"], a["who"].split("@")[0], a["after"]["index"]) for a in made] == [("b", "engineer", 1),
                                                                                        ("c.2", "engineer", 9)]
