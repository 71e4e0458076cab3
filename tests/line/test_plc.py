"""The PLC handshake over Modbus TCP, driven by a real pymodbus client against a running ``edge-stpm run`` in
trigger mode: 1,000 trigger → results ready → ack cycles, each one result with its own id, equal to its row in
the inspection record and to the verdict the same model gives the same image; a trigger while busy is an error
code, never a silent drop."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.line_parts import free_port, image_folder, modbus_cycles
from edge_stpm.runtime.line import plc
from edge_stpm.runtime.inspector import Inspector

pytest.importorskip("pymodbus")
N = 1000


def _drive(cycles_fn, exported: Path, tmp_path: Path, flag: str, port: int, n: int, *extra) -> tuple[list, list]:
    """``edge-stpm run --trigger plc`` on tmp_path/parts, recording into tmp_path/h.db, driven by ``cycles_fn``
    (a real Modbus or OPC UA client) for ``n`` cycles; the run must then end by itself (exit 0)."""
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(exported / "model_fp32.onnx"),
                          "--source", str(tmp_path / "parts"), "--headless", "--trigger", "plc", flag,
                          f"127.0.0.1:{port}", "--history-db", str(tmp_path / "h.db"), "--max-frames", str(n),
                          *map(str, extra)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        result = cycles_fn(port, n, p)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    return result


def test_thousand_modbus_cycles_each_one_result(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    images = image_folder(synth_dir, tmp_path / "parts", N)
    port = free_port()
    db = tmp_path / "h.db"
    seen, cycles = _drive(modbus_cycles, exported, tmp_path, "--modbus", port, N, "--summary-json", tmp_path / "s.json")
    ids = [s[0] for s in seen]
    assert ids == list(range(1, N + 1)), "trigger ids strictly increasing, one result per trigger"
    assert [s[3] for s in seen] == list(range(1, N + 1)), "part counter"
    con = sqlite3.connect(str(db))
    rows = con.execute("SELECT trigger_id, verdict, normalised_score, frame FROM inspections ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(s[0], s[1]) for s in seen]
    # SCORE = the score on the scale × 1000, clamped to the register's 0..65535 (0 = a typical good part or better)
    assert all(abs(min(65535, max(0, round(r[2] * 1000))) - s[2]) <= 1 for r, s in zip(rows, seen))
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    expect = [insp.inspect(cv2.imread(str(images[r[3]]))).verdict for r in rows[:200]]
    insp.close()
    assert [r[1] for r in rows[:200]] == expect, "the verdict infer gives for the same image"
    summary = __import__("json").loads((tmp_path / "s.json").read_text())
    box = next(x for x in summary["sinks"] if x["sink"] == "plc")
    assert box["plc_triggers"] == N and box["plc_rejected_triggers"] == 1
    print(f"\nbox cycle trigger seen → results ready: p50 {box['plc_cycle_ms_p50']:.2f} ms, p99 "
          f"{box['plc_cycle_ms_p99']:.2f} ms; client-side cycle trigger→results ready incl. Modbus polling: p50 {np.percentile(cycles, 50):.2f} ms, "
          f"p99 {np.percentile(cycles, 99):.2f} ms over {len(cycles)} cycles")


def test_handshake_state_machine() -> None:
    st = plc.PlcState()
    assert st.registers()[plc.STATUS] == plc.BIT_TRIGGER_READY
    assert st.trigger() == 1
    assert st.trigger() is None and st.registers()[plc.ERROR_CODE] == plc.ERR_BUSY
    st.write_command(0)
    assert st.triggers.qsize() == 1  # the refused trigger was not queued


def test_a_recipe_with_no_model_yet_refuses_triggers_with_error_7() -> None:
    """No model: no Trigger Ready, error 7 in the register (and its bit), every trigger refused with 7 and nothing
    queued; a model deployed: Trigger Ready again and error 0, with nothing for the PLC to clear."""

    class Port(plc.OneModel):
        has = False

        def ready(self) -> bool:
            return self.has

    st, port = plc.PlcState(), Port()
    st.connect_recipes(port)
    regs = st.registers()
    assert regs[plc.STATUS] == plc.BIT_ERROR and regs[plc.ERROR_CODE] == plc.ERR_NO_MODEL == 7
    assert st.trigger() is None and st.rejected == 1 and st.triggers.qsize() == 0
    assert st.registers()[plc.ERROR_CODE] == 7
    port.has = True  # the refused trigger's 7 clears itself
    assert st.registers()[plc.STATUS] == plc.BIT_TRIGGER_READY and st.registers()[plc.ERROR_CODE] == 0
    assert st.trigger() == 1


def test_modbus_port_in_use_and_bad_bind_are_one_line(tmp_path: Path) -> None:
    from edge_stpm.common.bind import parse_bind
    from edge_stpm.common.errors import UserError

    port = free_port()
    srv = plc.ModbusServer(plc.PlcState(), "127.0.0.1", port).start()
    try:
        with pytest.raises(UserError, match="--modbus"):
            plc.ModbusServer(plc.PlcState(), "127.0.0.1", port).start()
    finally:
        srv.close()
    with pytest.raises(UserError, match="--modbus"):
        parse_bind("host:notaport", what="--modbus")


def test_opcua_client_reads_state_results_and_triggers(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("asyncua")
    from helpers.line_parts import OPCUA_USER, opcua_cycles

    n = 50
    image_folder(synth_dir, tmp_path / "parts", n)
    port = free_port()
    db = tmp_path / "h.db"
    seen, cycles = _drive(opcua_cycles, exported, tmp_path, "--opcua", port, n, "--opcua-user", ":".join(OPCUA_USER))
    assert [s[0] for s in seen] == list(range(1, n + 1)) and [s[3] for s in seen] == list(range(1, n + 1))
    con = sqlite3.connect(str(db))
    rows = con.execute("SELECT result_id, trigger_id, verdict FROM inspections ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(s[2], s[0], s[1]) for s in seen]


def test_opcua_refuses_anonymous_off_loopback() -> None:
    pytest.importorskip("asyncua")
    from edge_stpm.runtime.line.opcua import OpcuaServer, parse_user
    from edge_stpm.common.errors import UserError

    with pytest.raises(UserError, match="--opcua-user"):
        OpcuaServer(plc.PlcState(), "0.0.0.0", 4840, None, loopback=False)
    with pytest.raises(UserError, match="USER:PASSWORD"):
        parse_user("nopassword")


def test_opcua_node_ids_are_stable_strings_and_the_server_says_who_it_is() -> None:
    """Node ids were numbers in creation order (adding a node renumbered the rest) and the server called itself
    FreeOpcUa's example; now string ids of the browse path, edge-stpm's name and version, a per-box URI, and
    SelectRecipe refusing an unknown index with error 6 until a known one."""
    pytest.importorskip("asyncua")
    import asyncio
    import socket

    from asyncua import Client, ua

    from edge_stpm import __version__
    from edge_stpm.runtime.line.opcua import NAMESPACE, OpcuaServer
    from helpers.line_parts import free_port

    port = free_port()
    st = plc.PlcState()
    srv = OpcuaServer(st, "127.0.0.1", port, ("plc", "pw-for-the-test")).start()

    async def main() -> None:
        c = Client(f"opc.tcp://127.0.0.1:{port}/edge-stpm/", timeout=10)
        c.set_user("plc")
        c.set_password("pw-for-the-test")  # anonymous sessions are read-only (tests/test_opcua_security.py)
        async with c:
            idx = await c.get_namespace_index(NAMESPACE)
            state = c.get_node(f"ns={idx};s=VisionSystem.State")
            assert await state.read_value() == "Operational"
            verdict = c.get_node(f"ns={idx};s=VisionSystem.ResultManagement.LastResult.Verdict")
            assert (await verdict.read_browse_name()).Name == "Verdict"
            product = await c.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo_ProductName).read_value()
            version = await c.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion).read_value()
            maker = await c.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo_ManufacturerName).read_value()
            assert (product, version, maker) == ("edge-stpm", __version__, "edge-stpm project")
            uri = (await c.get_node(ua.ObjectIds.Server_ServerArray).read_value())[0]
            assert uri == f"urn:edge-stpm:{socket.gethostname()}"
            vs = c.get_node(f"ns={idx};s=VisionSystem")
            assert await vs.call_method(f"{idx}:SelectRecipe", ua.Variant(7, ua.VariantType.UInt16)) is False
            assert await c.get_node(f"ns={idx};s=VisionSystem.ErrorCode").read_value() == plc.ERR_RECIPE
            try:
                await vs.call_method(f"{idx}:Trigger")
                raise AssertionError("a trigger with an unknown recipe was accepted")
            except ua.UaStatusCodeError as exc:
                assert exc.code == ua.StatusCodes.BadResourceUnavailable
            assert await vs.call_method(f"{idx}:SelectRecipe", ua.Variant(0, ua.VariantType.UInt16)) is True
            assert await c.get_node(f"ns={idx};s=VisionSystem.ErrorCode").read_value() == plc.ERR_NONE

    try:
        asyncio.run(main())
    finally:
        srv.close()
    assert st.next_trigger == 1, "nothing was triggered"


@pytest.mark.parametrize("flag", ["--modbus", "--opcua", "--http"])
def test_every_listener_reports_a_port_in_use_in_one_line(exported: Path, synth_dir: Path, flag: str) -> None:
    """A rule, not a list: each listener's failed bind is one `error:` line, no traceback, exit 2 (the OPC UA server
    printed asyncua's traceback first; Modbus a 'never awaited' warning after)."""
    import socket

    if flag == "--opcua":
        pytest.importorskip("asyncua")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        r = subprocess.run([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(exported), "--source",
                            str(synth_dir / "video.avi"), "--headless", "--no-history", flag,
                            f"127.0.0.1:{s.getsockname()[1]}"], capture_output=True, text=True, timeout=120)
    finally:
        s.close()
    lines = [line for line in r.stderr.splitlines() if not line.startswith("backend:")]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {flag} 127.0.0.1:"), r.stderr
