"""A new part type from the Recipes page (issue 40), in Chromium: the engineer creates recipe ``part-b`` (the next
free PLC index, 1); the PLC selects it by register 11 at once and sees error 7 (no model yet); collect → fit → deploy
on the page, and the recipe judges parts; after a restart it is there with its index and its version.
Screenshot: $EDGE_STPM_SCREENSHOTS/new_recipe.png (else the test's folder)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def _select(port: int, index: int) -> list[int]:
    """The PLC writes ``index`` to the recipe register (11); the registers after it."""
    from pymodbus.client import ModbusTcpClient

    from edge_stpm.runtime.line import plc

    c = ModbusTcpClient("127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while not c.connect():  # after a start the PLC server listens a moment after /healthz answers
        assert time.monotonic() < deadline, "the box's Modbus server did not come up"
        time.sleep(0.2)
    try:
        c.write_register(plc.RECIPE, index, device_id=1)
        return list(c.read_holding_registers(0, count=16, device_id=1).registers)
    finally:
        c.close()


def test_a_recipe_created_on_the_page_learns_its_part(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    from conftest import SIZE
    from edge_stpm.common.files import data_dir
    from edge_stpm.runtime.line import plc
    from edge_stpm.training.export.teacher_pack import write_teacher_pack
    from helpers.line_parts import free_port
    from test_day_one import _health, _registers, _start, _stop, _wait
    from test_webapp import _api, _need_browser, _page_as, _sessions, station_file

    _need_browser()
    if not (data_dir() / "teacher" / "teacher.json").is_file():  # the box's own pack (the station's XDG_DATA_HOME)
        write_teacher_pack(data_dir() / "teacher", "mobilenet_v2", SIZE)
    shots = Path(os.environ.get("EDGE_STPM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    port, modbus = free_port(), free_port()
    station_file(tmp_path, port, f'[[recipes]]\nname = "part-a"\nindex = 0\nmodel = "{exported}"\n',
                 synth_dir / "train" / "good")
    with open(tmp_path / "st.toml", "a") as fh:
        fh.write(f'[modbus]\nbind = "127.0.0.1:{modbus}"\n')
    base = f"http://127.0.0.1:{port}"
    p = _start(tmp_path)
    try:
        _wait(lambda: _health(base)[0] == 200, 90, p)
        with _page_as(base, "engineer", "/app/recipes") as (page, errors):
            page.wait_for_selector("#recipes:has-text('part-a')")
            page.fill("#new-recipe input[name=name]", "part-b")
            page.click("#new-recipe button[type=submit]")
            page.wait_for_selector("#recipes:has-text('part-b')")
            assert "PLC index 1" in page.text_content("#new-recipe-result")
            page.screenshot(path=str(shots / "new_recipe.png"), full_page=True)
            regs = _select(modbus, 1)  # the PLC selects the new recipe by its index
            assert regs[plc.ERROR_CODE] == plc.ERR_NO_MODEL and not regs[plc.STATUS] & plc.BIT_TRIGGER_READY, regs
            page.fill("#collect input[name=count]", "20")
            page.fill("#collect input[name=min_change]", "0")
            page.click("#collect button[type=submit]")
            _wait(lambda: _api(base, "GET", "/api/collect", role="engineer")["state"] == "done", 60, p)
            assert _api(base, "GET", "/api/collect", role="engineer")["recipe"] == "part-b"
            page.select_option("#fit-recipe", "part-b")
            page.click("#fit button[type=submit]")
            page.wait_for_function("document.body.dataset.fit === 'done'", timeout=180000)
            page.click("#fit-deploy")
            page.wait_for_selector("#toast:has-text('part-b: v1 is live')")
            assert not errors, errors
        _wait(lambda: _registers(modbus)[plc.STATUS] & plc.BIT_TRIGGER_READY, 30, p)
        assert _registers(modbus)[plc.ERROR_CODE] == plc.ERR_NONE
        _wait(lambda: len(_api(base, "GET", "/api/results?recipe=part-b&limit=20")) >= 10, 60, p)
        p.terminate()
        p.communicate(timeout=60)
        p = _start(tmp_path)  # the next start: part-b from the store's recipes.json, its v1 from its versions
        _sessions.clear()
        _wait(lambda: _health(base)[0] == 200, 90, p)
        got = {r["name"]: r for r in _api(base, "GET", "/api/recipes")}
        assert (got["part-b"]["index"], got["part-b"]["version"], got["part-b"]["has_model"]) == (1, 1, True), got
        assert _select(modbus, 1)[plc.ERROR_CODE] == plc.ERR_NONE
    finally:
        _stop(p)
