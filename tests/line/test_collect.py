"""`edge-stpm collect` (issue 30, day one): raw frames in MVTec layout with no model — near-duplicates of a stopped
conveyor skipped (sensor noise and all), the count right, the frames bit-exact (after the ROI), a contact sheet;
one frame per PLC trigger over a real pymodbus client, and per software trigger of Basler's emulated camera;
bad input one line."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_stpm.cli import app
from edge_stpm.common.errors import UserError
from edge_stpm.runtime.learn.collect import CollectSettings
from edge_stpm.runtime.station import app as station_app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _conveyor(synth_dir: Path, dst: Path, parts: int, repeats: int) -> list[np.ndarray]:
    """``parts`` distinct parts, each shown ``repeats`` times with sensor noise (σ 2 grey levels, seeded), as the
    frames of a conveyor that stops under the camera; returns each part's first frame."""
    src = sorted((synth_dir / "test").glob("*/*.png"))[:parts]
    dst.mkdir()
    rng = np.random.default_rng(0)
    firsts = []
    for i, p in enumerate(src):
        img = cv2.imread(str(p))
        for k in range(repeats):
            noisy = img if k == 0 else np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(dst / f"{i * repeats + k:05d}.png"), noisy)
        firsts.append(img)
    return firsts


def test_collect_skips_a_stopped_conveyor_and_keeps_raw_frames(synth_dir: Path, tmp_path: Path) -> None:
    firsts = _conveyor(synth_dir, tmp_path / "line", 12, 5)
    out = tmp_path / "data"
    r = runner.invoke(app, ["collect", "--source", str(tmp_path / "line"), "--out", str(out), "--count", "8"])
    assert r.exit_code == 0, r.output
    kept = sorted((out / "train" / "good").glob("*.png"))
    assert [p.name for p in kept] == [f"{i:05d}.png" for i in range(8)]
    for p, want in zip(kept, firsts):
        assert np.array_equal(cv2.imread(str(p)), want), f"{p.name}: not the raw frame of its part"
    assert "8 frames kept" in r.output and "28 near-duplicates skipped of 36 seen" in r.output, r.output
    assert "ended: target reached" in r.output.replace("\n", " "), r.output  # it said "SIGTERM" before
    sheet = cv2.imread(str(out / "contact_sheet.jpg"))
    assert sheet is not None and sheet.shape[1] == 8 * 128 and sheet.shape[0] == 128 + 16

    # again into the same folder, with a ROI and more than the source holds: numbering goes on, the rest is said
    r = runner.invoke(app, ["collect", "--source", str(tmp_path / "line"), "--out", str(out), "--count", "100",
                            "--roi", "10,20,64,48"])
    assert r.exit_code == 0, r.output
    kept = sorted((out / "train" / "good").glob("*.png"))
    assert len(kept) == 8 + 12 and "only 12 of the 100" in r.output.replace("\n", " ")
    assert "ended: end of stream" in r.output.replace("\n", " "), r.output
    assert np.array_equal(cv2.imread(str(kept[8])), firsts[0][20:68, 10:74])
    # every frame kept, with --min-change 0
    r = runner.invoke(app, ["collect", "--source", str(tmp_path / "line"), "--out", str(tmp_path / "all"),
                            "--count", "60", "--min-change", "0"])
    assert r.exit_code == 0 and len(list((tmp_path / "all" / "train" / "good").glob("*.png"))) == 60


def test_collect_one_frame_per_plc_trigger(synth_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pymodbus")
    from helpers.line_parts import free_port, modbus_cycles

    firsts = _conveyor(synth_dir, tmp_path / "line", 10, 1)
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "collect", "--source", str(tmp_path / "line"),
                          "--out", str(tmp_path / "data"), "--count", "6", "--trigger", "plc", "--modbus",
                          f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen, _ = modbus_cycles(port, 6, p, check_busy=False)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert [s[0] for s in seen] == list(range(1, 7)) and {s[1] for s in seen} == {"OK"}
    kept = sorted((tmp_path / "data" / "train" / "good").glob("*.png"))
    assert len(kept) == 6
    for k, want in zip(kept, firsts):
        assert np.array_equal(cv2.imread(str(k)), want)


def test_collect_from_a_software_triggered_basler_camera(synth_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pypylon.pylon", reason="pypylon not installed (pip install 'edge-stpm[basler]')")
    src = sorted((synth_dir / "test").glob("*/*.png"))[:5]
    (tmp_path / "parts").mkdir()
    for i, s in enumerate(src):
        (tmp_path / "parts" / f"{i:03d}.png").write_bytes(s.read_bytes())
    spec = (f"basler://0815-0000?pixel_format=BGR8Packed&width=128&height=128&image_files={tmp_path / 'parts'}"
            "&trigger=software")
    r = subprocess.run([sys.executable, "-m", "edge_stpm.cli", "collect", "--source", spec, "--out",
                        str(tmp_path / "data"), "--count", "12"], capture_output=True, text=True, cwd=ROOT,
                       env=os.environ | {"PYLON_CAMEMU": "2"}, timeout=120)
    assert r.returncode == 0, r.stderr
    kept = sorted((tmp_path / "data" / "train" / "good").glob("*.png"))
    # the emulator plays the 5 files in turn, one per software trigger: 12 frames kept, none a near-duplicate of
    # the one before (consecutive files differ), each bit-exact to its file
    assert len(kept) == 12
    for i, k in enumerate(kept):
        assert np.array_equal(cv2.imread(str(k)), cv2.imread(str(tmp_path / "parts" / f"{i % 5:03d}.png")))


def test_collect_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, msg in ((["--source", "a", "--source", "b"], "exactly one --source"),
                      (["--source", str(tmp_path), "--trigger", "plc"], "--trigger plc needs a PLC connection"),
                      (["--source", str(tmp_path), "--trigger", "http"], "--trigger http needs the HTTP server"),
                      (["--source", str(tmp_path), "--roi", "1,2,3"], "--roi")):
        r = runner.invoke(app, ["collect", "--out", str(tmp_path / "o"), *args])
        lines = [x for x in r.output.strip().splitlines() if x.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], r.output


def test_collect_with_a_station_file_takes_its_source_and_the_first_recipe_roi(exported: Path, synth_dir: Path,
                                                                              tmp_path: Path) -> None:
    _conveyor(synth_dir, tmp_path / "line", 6, 1)
    st = tmp_path / "st.toml"
    st.write_text(f'[[recipes]]\nname = "a"\nindex = 0\nmodel = "{exported}"\nroi = [4, 6, 50, 40]\n'
                  f'[[sources]]\nspec = "{tmp_path / "line"}"\n')
    r = runner.invoke(app, ["collect", "--config", str(st), "--out", str(tmp_path / "d"), "--count", "4"])
    assert r.exit_code == 0, r.output
    kept = sorted((tmp_path / "d" / "train" / "good").glob("*.png"))
    assert len(kept) == 4 and {cv2.imread(str(k)).shape for k in kept} == {(40, 50, 3)}


def test_collect_run_is_undone_in_reverse_when_a_step_fails(tmp_path: Path) -> None:
    """collect's run is built by runtime/station/app.py like run's: a source that cannot be opened after the live view
    started closes the live view again (its port free, its threads gone) and says one UserError."""
    from helpers.line_parts import free_port

    port, said = free_port(), []
    before = set(threading.enumerate())
    cfg = CollectSettings([str(tmp_path / "missing.mp4")], tmp_path / "o", http=f"127.0.0.1:{port}")
    with pytest.raises(UserError, match="source not found"):
        station_app.collect(cfg, said.append, said.append, said.append)
    assert said == [f"live view: http://127.0.0.1:{port}/"], said  # it had started
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # closed again
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(threading.enumerate()) - before, set(threading.enumerate()) - before
    assert not (tmp_path / "o").exists()  # nothing written
