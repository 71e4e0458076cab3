"""The box on the line: a bundle runs with the runtime-only install (torch really absent), bad inputs and a
missing display end cleanly, a bundle that does not match its manifest is refused, and nothing is written beside
a model by inference. Commands run as real processes (a crash would show as a signal, not a caught exception)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from helpers.edge_cli import cli, one_error

RUNTIME_PY = os.environ.get("EDGE_STPM_RUNTIME_PYTHON")


# --- clean exits (main install) ---------------------------------------------------------------------------------

def test_bad_roi_and_unwritable_record_exit_2_not_sigabrt(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    video = synth_dir / "video.avi"
    one_error(cli("run", "--model", exported, "--source", video, "--headless", "--roi", "1,2,x"), "--roi must be")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_error(cli("run", "--model", exported, "--source", video, "--headless", "--record", blocker / "sub" / "o.avi"),
              "cannot create output folder")
    one_error(cli("run", "--model", exported, "--source", video, "--headless", "--roi", "500,500,10,10"),
              "outside the")  # raised inside the loop while the capture thread is alive


@pytest.mark.parametrize("display", ["", ":97"])
def test_window_without_display_falls_back_to_headless(exported: Path, synth_dir: Path, display: str) -> None:
    env = {"DISPLAY": display, "WAYLAND_DISPLAY": "", "QT_QPA_PLATFORM": ""}
    r = cli("run", "--model", exported, "--source", synth_dir / "video.avi", "--max-frames", 3, env=env)
    assert r.returncode == 0, r.stderr
    assert "no display" in r.stderr and "running headless" in r.stderr and "3 frames" in r.stdout


def test_bundle_tampering_refused(exported: Path, tmp_path: Path, synth_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "README.md"} <= set(manifest["files"])
    with open(bundle / "model_fp32.onnx", "ab") as fh:
        fh.write(b"\0")
    one_error(cli("run", "--model", bundle, "--source", synth_dir / "test" / "good", "--headless"),
              "model_fp32.onnx does not match manifest.json")
    (bundle / "model_fp16.onnx").unlink()
    one_error(cli("infer", synth_dir / "test" / "good", "--model", bundle, "--out", tmp_path / "o"), "incomplete")


def test_checkpoint_runs_on_pytorch_and_writes_nothing_beside_it(trained: Path, synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "only_ckpt"
    run.mkdir()
    shutil.copy(trained / "model.pt", run / "model.pt")
    r = cli("run", "--model", run / "model.pt", "--source", synth_dir / "test" / "good", "--headless",
            "--events", tmp_path / "ev.jsonl", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "PyTorch CPU" in r.stderr and "edge-stpm export --checkpoint" in r.stderr
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]


# --- the runtime-only install (a second virtualenv, torch absent) -------------------------------------------------

needs_runtime = pytest.mark.skipif(not RUNTIME_PY, reason="EDGE_STPM_RUNTIME_PYTHON is not set (a venv with "
                                   "`pip install .` only; .ci/run makes one)")


@needs_runtime
def test_runtime_install_has_no_torch() -> None:
    for mod in ("torch", "torchvision", "sklearn", "matplotlib"):
        r = subprocess.run([RUNTIME_PY, "-c", f"import {mod}"], capture_output=True, text=True)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, mod


@needs_runtime
def test_runtime_install_runs_a_bundle(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "loop"
    r = cli("run", "--model", exported, "--source", synth_dir / "video.avi", "--headless", "--record", out / "o.avi",
            "--events", out / "ev.jsonl", "--summary-json", out / "s.json", python=RUNTIME_PY)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "s.json").read_text())
    assert s["frames"] == 60 and "onnxruntime" in s["backend"]
    cap = cv2.VideoCapture(str(out / "o.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    events = (out / "ev.jsonl").read_text().splitlines() if (out / "ev.jsonl").exists() else []
    assert len(events) == s["ng_frames"]
    r = cli("run", "--model", exported, "--source", synth_dir / "test" / "good", "--headless", python=RUNTIME_PY)
    assert r.returncode == 0 and "10 frames" in r.stdout, r.stderr
    r = cli("infer", synth_dir / "test" / "crack", "--model", exported, "--out", tmp_path / "inf", python=RUNTIME_PY)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "inf" / "summary.csv").read_text().splitlines()) == 1 + 5
    r = cli("bench", "--model", exported, "--backend", "onnxruntime,tensorrt,pytorch", "--precision", "fp32,int8",
            "--batch", "1", "--iters", 3, "--warmup", 1, "--out", tmp_path / "b", "--quiet", python=RUNTIME_PY)
    assert r.returncode == 0, r.stderr
    rows = {(x["backend"], x["precision"], x["baseline"]): x for x in json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]}
    assert rows[("onnxruntime", "fp32", True)]["status"] == "ok" and ("onnxruntime", "fp32", False) not in rows
    assert rows[("onnxruntime", "int8", False)]["status"] == "ok"
    assert rows[("tensorrt", "fp32", False)]["status"] == "unavailable"
    pipe = json.loads((tmp_path / "b" / "bench.json").read_text())["pipeline"]  # --workers auto: 1 and the cores
    assert pipe and pipe[0]["workers"] == 1 and all(p["frames"] == 60 and p["pictures"] == 60 for p in pipe), pipe
    assert all(p["verdict_ms"]["p50"] > 0 and p["loop_over_best_model"] > 0 for p in pipe)
    assert sorted(p.name for p in exported.iterdir() if p.suffix in (".onnx", ".engine")) == \
        ["model_fp16.onnx", "model_fp32.onnx", "model_int8.onnx"]


@needs_runtime
def test_runtime_install_refuses_training_commands_in_one_line(trained: Path, synth_dir: Path, tmp_path: Path) -> None:
    one_error(cli("train", "--data", synth_dir, "--out", tmp_path / "r", python=RUNTIME_PY), "edge-stpm[train]")
    one_error(cli("run", "--model", trained / "model.pt", "--source", synth_dir / "test" / "good", "--headless",
                  python=RUNTIME_PY), "needs PyTorch")


def test_unreadable_image_source_is_one_error(exported: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = cli("run", "--model", exported, "--source", bad, "--headless")
    one_error(r, "no frame could be read")
    assert "note: skipped: cannot read image" in r.stderr


def test_a_full_disk_is_one_line_and_keeps_what_was_written(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Outputs on a small tmpfs: a first `infer` fills its --out, the disk is then filled to the last byte, and the
    second `infer` into the same folder is one `error:` line (No space left on device), exit 2, with every file of the
    first run unchanged and no temporary left behind. Needs a tmpfs mount (root or CAP_SYS_ADMIN)."""
    import hashlib

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        out = disk / "out"
        images = synth_dir / "test" / "good"
        assert cli("infer", "--model", exported, images, "--out", out).returncode == 0
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
        assert "summary.json" in before and len(before) > 2
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as fh:  # to the last byte
            while True:
                fh.write(b"\0" * 4096)
        assert shutil.disk_usage(disk).free < 4096
        one_error(cli("infer", "--model", exported, images, "--out", out), "no space left on device")
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
        assert after == before, "every file of the first run unchanged, nothing half-written left"
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@needs_runtime
def test_runtime_install_runs_a_station_with_its_web_app(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The station, its recipes, its store, its web app and the dataset tool with torch really absent: config check,
    then run --config with the web app serving its pages and API, then the record's reviews → dataset."""
    import socket
    import time
    import urllib.request

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    st = tmp_path / "st.toml"
    st.write_text(f'[[recipes]]\nname = "tile"\nindex = 0\nmodel = "{exported}"\n[[sources]]\nspec = "{synth_dir / "video.avi"}"\n'
                  f'[run]\nheadless = true\nloop = true\n[http]\nbind = "127.0.0.1:{port}"\nengineer_token = "engineer-token-x"\n'
                  f'[history]\ndb = "{tmp_path / "h.db"}"\n[store]\nroot = "{tmp_path / "m"}"\n[evidence]\nfolder = "{tmp_path / "ev"}"\n')
    r = cli("config", "check", st, python=RUNTIME_PY)
    assert r.returncode == 0 and "1 recipes" in r.stdout, r.stderr
    e = dict(os.environ)
    e.pop("EDGE_STPM_RUNTIME_PYTHON", None)
    p = subprocess.Popen([RUNTIME_PY, "-m", "edge_stpm.cli", "run", "--config", str(st)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=e, cwd="/")
    h = {"Authorization": "Bearer engineer-token-x"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                rows = json.loads(urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/results?verdict=NG&evidence=yes&limit=5", headers=h), timeout=5).read())
                if rows:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else "slow"
            time.sleep(0.5)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/app/review", timeout=10).read().decode()
        assert "Review" in page and "/static/app.js" in page
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app.js", timeout=10).status == 200
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/review", method="POST", headers=h | {
            "Content-Type": "application/json"}, data=json.dumps({"result_id": rows[0]["result_id"], "mark": "good"}).encode())
        assert json.loads(urllib.request.urlopen(req, timeout=10).read())["who"].startswith("engineer@")
    finally:
        p.terminate()
        p.communicate(timeout=60)
    r = cli("dataset", "--from-history", tmp_path / "h.db", "--recipe", "tile", "--out", tmp_path / "ds", python=RUNTIME_PY)
    assert r.returncode == 0 and (tmp_path / "ds" / "manifest.json").is_file(), r.stderr
