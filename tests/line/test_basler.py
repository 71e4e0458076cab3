"""Basler cameras through pypylon, tested against pylon's own camera emulator (``PYLON_CAMEMU=2``: two emulated
cameras, serials 0815-0000 and 0815-0001; its image player feeds files from a folder). What was tested with real
hardware: nothing (none here) — see docs/cameras.md. The pixel-format conversions need no camera."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("PYLON_CAMEMU", "2")  # before pylon's first use in this process

import cv2
import numpy as np
import pytest

from helpers.line_parts import free_port, modbus_cycles
from edge_stpm.runtime.loop import pixels
from edge_stpm.runtime.loop.basler import parse_spec
from edge_stpm.common.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
ENV = os.environ | {"PYLON_CAMEMU": "2"}


def _pylon():
    return pytest.importorskip("pypylon.pylon", reason="pypylon not installed (pip install 'edge-stpm[basler]')")


# --- pixel formats: hand-made patterns, no camera -----------------------------------------------------------------

def test_bayer_patterns_demosaic_to_the_colours_they_sampled() -> None:
    rng = np.random.default_rng(0)
    # flat colour patches 8×8: bilinear demosaicing is exact inside a flat patch, so every interior pixel must
    # come back as its colour; a swapped pattern would swap red and blue (checked: distance ≥ 100)
    colours = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = np.kron(colours, np.ones((8, 8, 1), np.uint8)).astype(np.uint8)
    inner = np.zeros(img.shape[:2], bool)
    for y in range(4):
        for x in range(4):
            inner[y * 8 + 2:y * 8 + 6, x * 8 + 2:x * 8 + 6] = True
    for pat in ("RG", "GR", "GB", "BG"):
        out = pixels.to_bgr(pixels.mosaic(img, pat), f"Bayer{pat}8")
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.abs(out[inner].astype(int) - img[inner]).max() == 0, pat
        out12 = pixels.to_bgr(pixels.mosaic(img.astype(np.uint16) << 4, pat), f"Bayer{pat}12")
        assert np.abs(out12[inner].astype(int) - img[inner]).max() == 0, f"{pat} 12-bit"
    wrong = pixels.to_bgr(pixels.mosaic(img, "RG"), "BayerBG8")
    assert np.abs(wrong[inner].astype(int) - img[inner]).max() >= 100, "the pattern matters"


def test_mono_and_packed_colour_formats() -> None:
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = pixels.to_bgr(g, "Mono8")
    assert out.shape == (16, 16, 3) and (out == g[..., None]).all()
    assert (pixels.to_bgr(g.astype(np.uint16) << 4, "Mono12")[..., 1] == g).all(), "12 bits scaled to 8"
    assert (pixels.to_bgr(g.astype(np.uint16) << 8, "Mono16")[..., 2] == g).all()
    bgr = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert (pixels.to_bgr(bgr[..., ::-1].copy(), "RGB8Packed") == bgr).all()
    assert (pixels.to_bgr(bgr, "BGR8Packed") == bgr).all()
    bgra = np.concatenate([bgr, np.full((8, 8, 1), 7, np.uint8)], axis=2)
    assert (pixels.to_bgr(bgra, "BGRA8Packed") == bgr).all()
    with pytest.raises(UserError, match="not supported"):
        pixels.to_bgr(g, "YUV422Packed")


def test_spec_parsing_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    s = parse_spec("basler://0815-0001?exposure_us=2500&gain=3&trigger=software&buffers=4")
    assert s.selector == {"serial": "0815-0001"} and s.settings == {"exposure_us": 2500.0, "gain": 3.0,
                                                                   "trigger": "software", "buffers": 4}
    assert parse_spec("basler://model=acA1920-40gc").selector == {"model": "acA1920-40gc"}
    assert parse_spec("basler://").selector == {}
    for bad, msg in (("basler://x?foo=1", "unknown camera setting"), ("basler://x?trigger=Line9", "trigger must be"),
                     ("basler://x?width=1.5", "whole number"), ("basler://x?buffers=1", "buffers must be"),
                     ("basler://colour=red", "serial number"), ("basler://x?features=/nope.pfs", "not found"),
                     ("basler://x?activation=Both", "activation must be")):
        with pytest.raises(UserError, match=msg) as e:
            parse_spec(bad)
        assert "\n" not in str(e.value)


# --- the emulated cameras ---------------------------------------------------------------------------------------

def _parts(synth_dir: Path, dst: Path, n: int) -> list[Path]:
    """``n`` distinct colour test images of the synthetic set, as PNG files the emulator plays in name order."""
    src = sorted((synth_dir / "test").glob("*/*.png"))[:n]
    dst.mkdir()
    out = []
    for i, p in enumerate(src):
        q = dst / f"{i:03d}.png"
        q.write_bytes(p.read_bytes())
        out.append(q)
    return out


def _spec(folder: Path, serial: str = "0815-0000", **extra: object) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"pixel_format": "BGR8Packed", "width": 128, "height": 128,
                                         "image_files": folder, **extra}.items())
    return f"basler://{serial}?{q}"


def test_software_trigger_frames_arrive_in_order_and_bit_exact(synth_dir: Path, tmp_path: Path) -> None:
    _pylon()
    from edge_stpm.runtime.loop.sources import open_source

    files = _parts(synth_dir, tmp_path / "parts", 6)
    refs = [cv2.imread(str(p)) for p in files]
    src = open_source(_spec(tmp_path / "parts", trigger="software"))
    try:
        frames = [src.read(3.0) for _ in range(20)]
    finally:
        src.close()
    assert all(f is not None for f in frames)
    assert [f.camera["frame_id"] for f in frames] == list(range(1, 21)), "one software trigger = one frame, in order"
    assert [f.index for f in frames] == list(range(20))
    for i, f in enumerate(frames):
        assert np.array_equal(f.image, refs[i % len(refs)]), f"frame {i} is not file {i % len(refs)} bit for bit"
    st = src.stats()
    assert st["missed"] == 0 and st["failed_buffers"] == 0 and st["serial"] == "0815-0000"


def test_free_run_keeps_the_newest_and_counts_what_it_dropped(tmp_path: Path) -> None:
    _pylon()
    from edge_stpm.runtime.loop.sources import open_source

    src = open_source("basler://0815-0001?width=320&height=240&frame_rate=200")
    try:
        time.sleep(0.5)  # nobody reads: the camera goes on, the source keeps one frame
        first = src.read(2.0)
        later = [src.read(2.0) for _ in range(5)]
    finally:
        src.close()
    assert first is not None and all(f is not None for f in later)
    ids = [first.camera["frame_id"]] + [f.camera["frame_id"] for f in later]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert first.camera["frame_id"] > 5, "the newest frame, not the first one"
    assert src.stats()["dropped"] >= first.camera["frame_id"] - 2, src.stats()


def test_settings_are_read_back_and_refusals_are_one_line() -> None:
    _pylon()
    from edge_stpm.runtime.loop.sources import open_source

    src = open_source("basler://0815-0001?pixel_format=BayerRG12&exposure_us=2500&gain=3.3&width=640&height=480"
                      "&offset_x=16&binning=2")
    try:
        f = src.read(3.0)
        st = src.stats()
    finally:
        src.close()
    assert f is not None and f.image.shape == (480, 640, 3)
    s = st["settings"]
    assert s["pixel_format"] == "BayerRG12" and s["width"] == 640 and s["offset_x"] == 16 and s["binning"] == 2
    assert abs(s["exposure_us"] - 2500) < 1 and abs(s["gain"] - 3.3) < 0.01, s  # the camera rounds gain to its steps
    for bad, msg in (("basler://9999-9999", r"no such camera; connected: Emulation 0815-0000, Emulation 0815-0001"),
                     ("basler://0815-0000?gain=99999", r"gain=99999.0 refused by Gain \(the camera allows 0..48\)"),
                     ("basler://0815-0000?pixel_format=RGB12Packed", "not available on this camera; it offers Mono8"),
                     ("basler://0815-0000?pixel_format=YUV422Packed", "not one the loop can convert"),
                     ("basler://0815-0000?width=5000", "refused by Width"),
                     ("basler://0815-0000?trigger=Line1&debounce_us=5", "no debounce_us setting")):
        with pytest.raises(UserError, match=msg) as e:
            open_source(bad)
        assert "\n" not in str(e.value)


def test_failed_buffers_counted_and_a_lost_camera_reconnects(tmp_path: Path) -> None:
    _pylon()
    from edge_stpm.runtime.loop.sources import open_source

    src = open_source("basler://0815-0000?width=320&height=240", reconnect_s=5.0)
    try:
        nm = src.cam.GetNodeMap()
        nm.GetNode("ForceFailedBufferCount").SetValue(3)  # the emulator's failure injection
        nm.GetNode("ForceFailedBuffer").Execute()
        time.sleep(0.5)
        assert src.stats()["failed_buffers"] == 3
        src.cam.Close()  # the camera goes away under the grab thread
        deadline = time.monotonic() + 8
        while src.stats()["reconnects"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert src.stats()["reconnects"] == 1 and not src.stats()["lost"]
        assert src.read(3.0) is not None, "frames again after the reconnect"
    finally:
        src.close()


def test_camera_vanishing_mid_run_ends_the_run_with_record_and_recording_finalised(
        exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    _pylon()
    from edge_stpm.runtime.loop.pipeline import RunOptions, run
    from edge_stpm.runtime.loop.sinks.record import RecordSink, query
    from edge_stpm.runtime.loop.sources import open_source
    from edge_stpm.runtime.inspector import Inspector

    _parts(synth_dir, tmp_path / "parts", 4)
    src = open_source(_spec(tmp_path / "parts", trigger="software"), reconnect_s=1.0)
    gone = threading.Event()

    def unplug(frame, res) -> None:  # after 5 results the camera disappears and is not found again
        if frame.index == 4 and not gone.is_set():
            gone.set()
            src._find = lambda: (_ for _ in ()).throw(UserError("unplugged"))  # type: ignore[method-assign]
            src.cam.Close()

    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    db = tmp_path / "h.db"
    try:
        s = run(insp, src, RunOptions(headless=True, record=tmp_path / "r.avi", sinks=[RecordSink(db, "sha")]),
                on_frame=unplug, specs=["cam"])
    finally:
        insp.close()
    assert "camera 0815-0000 lost, no reconnect within 1 s" in s.end_reason
    assert s.frames >= 5 and len(query(db, None, None, None, 1000)) == s.frames
    cap = cv2.VideoCapture(str(tmp_path / "r.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == s.frames, "the recording is finalised and holds every frame"
    cap.release()


def _run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_stpm.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=ENV)


def test_run_on_a_triggered_camera_gives_infers_verdicts_with_camera_ids(exported: Path, synth_dir: Path,
                                                                          tmp_path: Path) -> None:
    _pylon()
    from edge_stpm.runtime.inspector import Inspector

    files = _parts(synth_dir, tmp_path / "parts", 15)
    n = 30
    r = _run(["run", "--model", str(exported / "model_fp32.onnx"), "--source",
              _spec(tmp_path / "parts", trigger="software"), "--headless", "--max-frames", str(n),
              "--events", str(tmp_path / "ev.jsonl"), "--history-db", str(tmp_path / "h.db"),
              "--summary-json", str(tmp_path / "s.json")])
    assert r.returncode == 0, r.stderr
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    try:
        expect = [insp.inspect(cv2.imread(str(files[i % len(files)]))) for i in range(n)]
    finally:
        insp.close()
    rows = sqlite3.connect(str(tmp_path / "h.db")).execute(
        "SELECT frame, verdict, score, camera FROM inspections ORDER BY id").fetchall()
    assert len(rows) == n
    assert [json.loads(c)["frame_id"] for *_, c in rows] == list(range(1, n + 1))
    assert [v for _, v, _, _ in rows] == [e.verdict for e in expect], "the verdicts infer gives on the same files"
    assert max(abs(sc - e.score) for (_, _, sc, _), e in zip(rows, expect)) < 1e-5
    assert "NG" in {e.verdict for e in expect} and "OK" in {e.verdict for e in expect}, "both verdicts are exercised"
    summary = json.loads((tmp_path / "s.json").read_text())
    cam = summary["sources"][0]["camera"]
    assert cam["serial"] == "0815-0000" and cam["missed"] == 0 and cam["trigger"] == "software"


def test_plc_triggers_fire_the_camera_one_frame_each(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """1,000 PLC triggers over Modbus → 1,000 software triggers → 1,000 results: the camera's frame id equals the
    trigger id every time (no frame without a trigger, none lost); the cycle time is printed."""
    _pylon()
    pytest.importorskip("pymodbus")
    _parts(synth_dir, tmp_path / "parts", 8)
    n, port = 1000, free_port()
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(exported / "model_fp32.onnx"),
                          "--source", _spec(tmp_path / "parts", trigger="software"), "--headless", "--trigger", "plc",
                          "--modbus", f"127.0.0.1:{port}", "--history-db", str(tmp_path / "h.db"),
                          "--max-frames", str(n), "--summary-json", str(tmp_path / "s.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        seen, cycles = modbus_cycles(port, n, p, check_busy=False)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert [s[0] for s in seen] == list(range(1, n + 1))
    assert [s[4] for s in seen] == list(range(1, n + 1)), "camera frame id = trigger id: one trigger, one frame"
    box = next(x for x in json.loads((tmp_path / "s.json").read_text())["sinks"] if x["sink"] == "plc")
    print(f"\nsoftware-triggered emulated camera, {n} PLC cycles: box trigger seen → results ready p50 "
          f"{box['plc_cycle_ms_p50']:.2f} ms, p99 {box['plc_cycle_ms_p99']:.2f} ms; Modbus client cycle p50 "
          f"{np.percentile(cycles, 50):.2f} ms, p99 {np.percentile(cycles, 99):.2f} ms")


def test_plc_trigger_with_a_hardware_triggered_camera_is_refused(exported: Path) -> None:
    _pylon()
    r = _run(["run", "--model", str(exported / "model_fp32.onnx"), "--source", "basler://0815-0000?trigger=Line1",
              "--headless", "--trigger", "plc", "--modbus", f"127.0.0.1:{free_port()}", "--no-history"], timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "hardware trigger (Line1)" in r.stderr, r.stderr


def test_cameras_command_lists_the_emulated_cameras(exported: Path) -> None:
    _pylon()
    r = _run(["cameras", "--format", "json"], timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [x for x in json.loads(r.stdout) if x["interface"] != "V4L2"]
    assert [(x["serial"], x["model"], x["format"]) for x in rows] == [
        ("0815-0000", "Emulation", "Mono8 1024×1040"), ("0815-0001", "Emulation", "Mono8 1024×1040")]
    assert rows[0]["source"] == "basler://0815-0000"
    r = _run(["run", "--model", str(exported / "model_fp32.onnx"), "--source", "basler://1234", "--headless",
              "--no-history"], timeout=60)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last == ("error: basler://1234: no such camera; connected: Emulation 0815-0000, "
                                          "Emulation 0815-0001"), r.stderr


def test_http_trigger_fires_the_camera_and_answers_with_the_verdict(exported: Path, synth_dir: Path,
                                                                     tmp_path: Path) -> None:
    """``run --trigger http``: each POST /trigger fires one software trigger and is answered with that frame's
    result (trigger id, camera frame id, verdict — the one infer gives for the file the emulator played)."""
    _pylon()
    import urllib.request

    from edge_stpm.runtime.inspector import Inspector

    files = _parts(synth_dir, tmp_path / "parts", 10)
    n, port = 20, free_port()
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(exported / "model_fp32.onnx"),
                          "--source", _spec(tmp_path / "parts", trigger="software"), "--headless", "--trigger", "http",
                          "--http", f"127.0.0.1:{port}", "--history-db", str(tmp_path / "h.db"), "--max-frames", str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    answers = []
    try:
        deadline = time.monotonic() + 120
        while len(answers) < n and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/trigger", method="POST"),
                                            timeout=15) as r:
                    answers.append(json.loads(r.read()))
            except OSError:
                if p.poll() is not None:
                    break
                time.sleep(0.2)  # the box is still starting
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert [a["trigger_id"] for a in answers] == list(range(1, n + 1))
    assert [a["camera_frame_id"] for a in answers] == list(range(1, n + 1))
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    try:
        expect = [insp.inspect(cv2.imread(str(files[i % len(files)]))).verdict for i in range(n)]
    finally:
        insp.close()
    assert [a["verdict"] for a in answers] == expect
    rows = sqlite3.connect(str(tmp_path / "h.db")).execute("SELECT result_id, trigger_id FROM inspections ORDER BY id").fetchall()
    assert rows == [(a["result_id"], a["trigger_id"]) for a in answers], "the answer names the record's row"
