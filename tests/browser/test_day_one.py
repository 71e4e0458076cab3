"""Day one of a box, as a new user would live it (issue 40): a station whose only recipe has **no model yet** judges
nothing — the PLC sees no Trigger Ready and error 7, /healthz says why (503), nothing enters the record — while the
live frames flow; the engineer collects 20 parts on the Recipes page, fits them there, reads the report card and
deploys: the PLC is ready, /healthz is 200, the next parts are judged by the new model; the next start finds the
model in the store. In Chromium; screenshots: $EDGE_STPM_SCREENSHOTS (else the test's folder)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stop(p: subprocess.Popen) -> None:
    """End a station process: SIGTERM, up to 60 s for it to close, then kill."""
    p.terminate()
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()


def _health(base: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _registers(port: int, wait_s: float = 30.0) -> list[int]:
    """Holding registers 0–15. The station starts its PLC servers a moment after its HTTP server; a station with no
    model says 503 from the start (its problems say "starting" until the PLC listens), so a test that reads the
    registers after any answer retries the connection for up to ``wait_s`` seconds, then an OSError."""
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient("127.0.0.1", port=port)
    deadline = time.monotonic() + wait_s
    while not c.connect():
        if time.monotonic() > deadline:
            raise ConnectionRefusedError(f"no Modbus server on port {port} after {wait_s:g} s")
        time.sleep(0.2)
    try:
        return list(c.read_holding_registers(0, count=16).registers)
    finally:
        c.close()


def _start(tmp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(tmp / "st.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait(what, timeout: float, p: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if what():
                return
        except OSError:
            pass
        assert p.poll() is None, p.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_box_with_no_model_learns_its_first_part(synth_dir: Path, tmp_path: Path) -> None:
    from conftest import SIZE
    from edge_stpm.common.files import data_dir
    from edge_stpm.training.export.teacher_pack import write_teacher_pack
    from helpers.line_parts import free_port
    from test_webapp import _api, _need_browser, _page_as, _sessions, station_file

    _need_browser()
    if not (data_dir() / "teacher" / "teacher.json").is_file():  # the box's own pack (the station's XDG_DATA_HOME)
        write_teacher_pack(data_dir() / "teacher", "mobilenet_v2", SIZE)
    shots = Path(os.environ.get("EDGE_STPM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    port, modbus = free_port(), free_port()
    station_file(tmp_path, port, '[[recipes]]\nname = "part"\nindex = 0\n', synth_dir / "train" / "good")
    with open(tmp_path / "st.toml", "a") as fh:
        fh.write(f'[modbus]\nbind = "127.0.0.1:{modbus}"\n')
    base = f"http://127.0.0.1:{port}"
    p = _start(tmp_path)
    try:
        _wait(lambda: _health(base)[0] == 503 and "no model yet" in _health(base)[1], 90, p)
        regs = _registers(modbus)  # the PLC server listens a moment after HTTP: retried
        assert regs[0] & 1 == 0 and regs[1] == 7, regs  # no Trigger Ready, error 7
        assert _api(base, "GET", "/api/results?limit=50") == []  # nothing judged, nothing recorded
        with _page_as(base, "engineer", "/app/live") as (page, errors):
            time.sleep(3)  # a few frames of the stream
            page.screenshot(path=str(shots / "day_one_live_no_model.png"))
            page.goto(f"{base}/app/recipes")
            page.wait_for_selector("#recipes:has-text('no model yet')")
            page.screenshot(path=str(shots / "day_one_no_model.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone on the line
            page.screenshot(path=str(shots / "day_one_no_model_390.png"))
            page.set_viewport_size({"width": 1280, "height": 800})
            page.fill("#collect input[name=count]", "20")
            page.fill("#collect input[name=min_change]", "0")
            page.click("#collect button[type=submit]")
            _wait(lambda: _api(base, "GET", "/api/collect", role="engineer")["state"] == "done", 60, p)
            page.select_option("#fit-recipe", "part")
            page.click("#fit button[type=submit]")
            page.wait_for_function("document.body.dataset.fit === 'done'", timeout=180000)
            assert "20 (4 held out" in page.text_content("#fit-card")
            assert "only 4 held-out good images (fewer than 16)" in page.text_content("#fit-card .warn")
            page.click("#fit-deploy")
            page.wait_for_selector("#toast:has-text('is live')")
            page.screenshot(path=str(shots / "day_one_deployed.png"), full_page=True)
            # a second fit of the same collection, tiled 2×2 from the page: the card says so; discarded
            page.select_option("#fit-tiles", "2x2")
            page.click("#fit button[type=submit]")
            page.wait_for_function("document.body.dataset.fit === 'done'", timeout=180000)
            assert "2×2, each inspected at the model's size" in page.text_content("#fit-card")
            card = _api(base, "GET", "/api/fit", role="engineer")["card"]
            assert (card["tiles"]["rows"], card["tiles"]["cols"]) == (2, 2), card
            page.screenshot(path=str(shots / "day_one_fit_tiled.png"), full_page=True)
            page.click("#fit-discard")
            page.wait_for_selector("#fit-card", state="hidden")
            for bad in ("9x9", "two", 7):  # one line, 422, nothing started
                with pytest.raises(urllib.error.HTTPError) as exc:
                    _api(base, "POST", "/api/fit", {"recipe": "part", "tiles": bad}, role="engineer")
                assert exc.value.code == 422 and "tiles" in exc.value.read().decode()
            assert _api(base, "GET", "/api/fit", role="engineer")["state"] != "running"
            assert not errors, errors
        _wait(lambda: _health(base)[0] == 200, 30, p)
        regs = _registers(modbus)
        assert regs[0] & 1 == 1 and regs[1] == 0, regs  # Trigger Ready, no error
        _wait(lambda: len(_api(base, "GET", "/api/results?limit=50")) >= 10, 60, p)
        rows = _api(base, "GET", "/api/results?limit=50")
        assert {r["verdict"] for r in rows} <= {"OK", "NG", "REVIEW"} and all(r["model_sha256"] for r in rows)
        p.terminate()
        p.communicate(timeout=60)
        p = _start(tmp_path)  # the next start: the first model comes back from the store
        _sessions.clear()  # the sessions of the first start are gone with it
        _wait(lambda: _health(base)[0] == 200, 90, p)
        v = _api(base, "GET", "/models.json")["part"]
        assert v["loaded"] == 1 and v["current"] == 1, v
    finally:
        _stop(p)
