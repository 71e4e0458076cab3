"""Every command through typer's test runner, and bad inputs: one clear line, non-zero exit, no traceback."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge_stpm.runtime.learn import thresholds
from edge_stpm.training import checkpoint
from edge_stpm.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(res, pattern: str) -> None:
    text = res.output
    assert res.exit_code == 2, text
    assert "Traceback" not in text
    errors = [l for l in text.strip().splitlines() if l.startswith("error:")]
    assert len(errors) == 1, text
    assert pattern.lower() in text[text.index("error:"):].replace("\n", " ").lower(), text


def test_synth_command(tmp_path: Path) -> None:
    res = invoke("synth", "--out", tmp_path / "s", "--n-train", 6, "--n-test-good", 2, "--n-test-defect", 1,
                 "--video-frames", 6, "--size", 64)
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "s" / "train" / "good").glob("*.png"))) == 6
    cap = cv2.VideoCapture(str(tmp_path / "s" / "video.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_train_and_evaluate_commands(synth_dir: Path, tmp_path: Path, mobilenet_weights: None) -> None:
    res = invoke("train", "--data", synth_dir, "--backbone", "mobilenet_v2", "--head", "stpm", "--epochs", 2, "--batch-size", 8,
                 "--size", 64, "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 0, res.output
    ck = checkpoint.read(tmp_path / "run" / "model.pt")
    assert ck["backbone"] == "mobilenet_v2" and ck["image_size"] == 64
    assert ck["training"]["n_val"] == 12 and ck["thresholds"]["image"] > 0
    assert ck["training"]["warnings"] == [thresholds.few_held_out(12)], "60 images hold out 12, fewer than 16"
    assert "warning: the thresholds come from only 12 held-out good images" in res.output, res.output
    assert "torchvision" in ck["teacher_source"]
    assert (tmp_path / "run" / "loss.png").is_file()
    res = invoke("evaluate", "--checkpoint", tmp_path / "run" / "model.pt", "--data", synth_dir, "--out",
                 tmp_path / "rep", "--quiet")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(rep["per_defect"]) == {"scratch", "spot", "crack", "missing"}
    # This test is about the commands; 2 epochs at 64 px is far from converged, so its figures depend on the
    # machine's floats: seeds 0-4 here (AMD EPYC) gave image 0.990-1.000, pixel 0.982-0.991, AUPRO 0.938-0.968
    # (benchmarks/results/seed_spread.json), an Intel Xeon gave image 0.920 on seed 0. The bounds only say "it
    # learned the defects" (chance is 0.5), 0.12 below that Intel figure; accuracy itself is asserted on the
    # 20-epoch fixture (test_trained_fixture_detects_synthetic_defects).
    o = rep["overall"]
    assert o["image_auroc"] >= 0.80 and o["pixel_auroc"] >= 0.90 and o["aupro"] >= 0.80, o
    for f in ("report.md", "roc_image.png", "roc_pixel.png", "examples.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0


def test_calibrate_command(trained: Path, synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    ck_path = tmp_path / "model.pt"
    shutil.copy(trained / "model.pt", ck_path)
    before = checkpoint.read(ck_path)["thresholds"]
    res = invoke("calibrate", "--checkpoint", ck_path, "--threshold-method", "percentile", "--quiet")
    assert res.exit_code == 0, res.output
    after = checkpoint.read(ck_path)["thresholds"]
    assert after["method"] == "percentile" and after["image"] != before["image"]
    res = invoke("calibrate", "--checkpoint", ck_path, "--data", synth_dir, "--quiet")
    assert res.exit_code == 0, res.output
    f1 = checkpoint.read(ck_path)["thresholds"]
    assert f1["method"] == "f1" and f1["f1"]["f1"] > 0.8
    good_only = tmp_path / "good_only"
    (good_only / "test").mkdir(parents=True)
    shutil.copytree(synth_dir / "test" / "good", good_only / "test" / "good")
    assert_clean_error(invoke("calibrate", "--checkpoint", ck_path, "--data", good_only, "--quiet"),
                       "both good and defective")


def test_trained_fixture_detects_synthetic_defects(trained: Path, synth_dir: Path, tmp_path: Path) -> None:
    res = invoke("evaluate", "--checkpoint", trained / "model.pt", "--data", synth_dir, "--out", tmp_path, "--quiet")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "report.json").read_text())
    # seeds 0-4 (benchmarks/seed_spread.py; the seed stands in for another machine's floats): image 1.000 every
    # seed, pixel 0.9935-0.9945, AUPRO 0.9817-0.9839 (20 epochs at 128 px). Bounds: 0.02 below the worst seed
    # (image 0.02, pixel 0.02, AUPRO 0.03 — over twice the seed spread)
    o = rep["overall"]
    assert o["image_auroc"] >= 0.98 and o["pixel_auroc"] >= 0.97 and o["aupro"] >= 0.95, o


def test_export_and_build_engine_commands(trained: Path, tmp_path: Path) -> None:
    res = invoke("export", "--checkpoint", trained / "model.pt", "--precision", "fp32,fp16", "--out", tmp_path / "e",
                 "--quiet")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "model_fp16.onnx").is_file()
    files = sorted(p.name for p in (tmp_path / "e").iterdir())
    assert {"manifest.json", "README.md", "export.json"} <= set(files)
    res = invoke("build-engine", "--model", tmp_path / "e", "--precision", "fp16")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert_clean_error(res, "TensorRT is not installed")
        assert sorted(p.name for p in (tmp_path / "e").iterdir()) == files, "nothing written without TensorRT"
    else:
        pytest.skip("TensorRT present: the engine build itself is checked by benchmarks/trt_check.sh")
    assert_clean_error(invoke("build-engine", "--model", trained / "model.pt"), "needs a bundle folder or an .onnx")


def test_infer_command(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    res = invoke("infer", synth_dir / "test" / "crack", synth_dir / "test" / "good" / "000.png", "--model", exported,
                 "--out", tmp_path)
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "summary.json").read_text())["images"]
    assert len(rows) == 6 and (tmp_path / "summary.csv").is_file()
    assert all(Path(r["overlay"]).is_file() for r in rows)


def test_bench_command(trained: Path, tmp_path: Path) -> None:
    res = invoke("bench", "--model", trained / "model.pt", "--backend", "onnxruntime,pytorch,tensorrt",
                 "--precision", "fp32,int8", "--batch", "1", "--iters", 3, "--warmup", 1, "--work", tmp_path / "w",
                 "--out", tmp_path / "b", "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert (tmp_path / "b" / "bench.md").is_file() and (tmp_path / "b" / "bench.png").is_file()
    rows = {(x["backend"], x["precision"]): x for x in r["rows"]}
    assert rows[("pytorch-eager", "fp32")]["baseline"] and rows[("pytorch-eager", "fp32")]["status"] == "ok"
    assert rows[("onnxruntime", "fp32")]["status"] == "ok" and rows[("onnxruntime", "fp32")]["speedup"] > 0
    assert rows[("onnxruntime", "int8")]["status"] == "ok"
    assert rows[("pytorch", "int8")]["status"] == "unavailable"
    assert rows[("tensorrt", "fp32")]["status"] == "unavailable"
    assert r["machine"]["cores"] >= 1 and "onnxruntime" in r["machine"]["versions"]
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "| backend |" in md and "- tensorrt fp32/int8 b1: unavailable" in md and (tmp_path / "b" / "bench.png").stat().st_size > 0


# ---- bad inputs --------------------------------------------------------------------------------------------

def test_train_missing_dir(tmp_path: Path) -> None:
    assert_clean_error(invoke("train", "--data", tmp_path / "nope", "--out", tmp_path / "o",
                              "--backbone", "mobilenet_v2"), "not found")


def test_train_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_clean_error(invoke("train", "--data", tmp_path / "empty", "--out", tmp_path / "o",
                              "--backbone", "mobilenet_v2"), "no images")


def test_train_corrupt_image(tmp_path: Path, mobilenet_weights: None) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        cv2.imwrite(str(d / f"{i}.png"), np.full((32, 32, 3), 120, np.uint8))
    (d / "7_bad.png").write_bytes(b"garbage")
    assert_clean_error(invoke("train", "--data", d, "--out", tmp_path / "o", "--backbone", "mobilenet_v2",
                              "--size", 64), "7_bad.png")


def test_unknown_backbone(synth_dir: Path, tmp_path: Path) -> None:
    assert_clean_error(invoke("train", "--data", synth_dir, "--out", tmp_path / "o", "--backbone", "vgg99"),
                       "--backbone': 'vgg99' is not one of")


def test_unwritable_output_dir(synth_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_clean_error(invoke("train", "--data", synth_dir, "--out", blocker / "run", "--backbone", "mobilenet_v2"),
                       "cannot create output folder")


def test_offline_without_weights_says_where(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    res = invoke("train", "--data", synth_dir, "--out", tmp_path / "o", "--backbone", "resnet18")
    assert_clean_error(res, "resnet18-f37072fd.pth")


def test_checkpoint_of_other_format_version(trained: Path, tmp_path: Path, synth_dir: Path) -> None:
    ck = torch.load(trained / "model.pt", weights_only=True)
    ck["format_version"] = 99
    torch.save(ck, tmp_path / "v99.pt")
    assert_clean_error(invoke("evaluate", "--checkpoint", tmp_path / "v99.pt", "--data", synth_dir, "--out",
                              tmp_path / "r"), "format version 99")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert_clean_error(invoke("export", "--checkpoint", tmp_path / "junk.pt", "--out", tmp_path / "e"),
                       "not an edge-stpm checkpoint")


def test_export_bad_inputs(trained: Path, tmp_path: Path) -> None:
    assert_clean_error(invoke("export", "--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "e"),
                       "checkpoint not found")
    assert_clean_error(invoke("export", "--checkpoint", trained / "model.pt", "--precision", "fp8",
                              "--out", tmp_path / "e"), "unknown precision")
    blocker = tmp_path / "f"
    blocker.write_text("x")
    assert_clean_error(invoke("export", "--checkpoint", trained / "model.pt", "--precision", "fp32",
                              "--out", blocker / "e"), "cannot create")
    assert_clean_error(invoke("export", "--checkpoint", trained / "model.pt", "--precision", "fp32",
                              "--frame-size", "640by480", "--out", tmp_path / "e"), "not WIDTHxHEIGHT")
    assert_clean_error(invoke("run", "--model", trained / "model.pt", "--source", tmp_path, "--headless",
                              "--frame-path", "gpu"), "'gpu' is not one of 'auto'")


def test_corrupt_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model_fp16.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    assert_clean_error(invoke("check-graph", bad), "corrupt")
    cv2.imwrite(str(tmp_path / "part.png"), np.full((32, 32, 3), 90, np.uint8))
    assert_clean_error(invoke("infer", tmp_path / "part.png", "--model", bad, "--out", tmp_path / "o"), "corrupt")


def test_engine_from_other_tensorrt_version(tmp_path: Path, synth_dir: Path) -> None:
    eng = tmp_path / "model_fp16.engine"
    eng.write_bytes(b"\0" * 16)
    (tmp_path / "model_fp16.engine.json").write_text(json.dumps(
        {"format": "edge-stpm-engine", "tensorrt_version": "8.6.1", "gpu_name": "X", "compute_capability": "8.7"}))
    res = invoke("run", "--model", eng, "--source", synth_dir / "test" / "good", "--headless")
    try:
        import tensorrt  # noqa: F401
        assert_clean_error(res, "rebuild")
    except ImportError:
        assert_clean_error(res, "TensorRT is not installed")


def test_missing_camera(exported: Path) -> None:
    assert_clean_error(invoke("run", "--model", exported, "--camera", 9, "--headless"), "cannot open camera 9")


def test_gstreamer_pipeline_without_gstreamer(exported: Path) -> None:
    from edge_stpm.runtime.loop.sources import gstreamer_available

    res = invoke("run", "--model", exported, "--source", "videotestsrc ! appsink", "--headless", "--max-frames", 1)
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer")
    assert_clean_error(res, "no GStreamer")


def test_engine_runtime_path_imports_without_torch(tmp_path: Path, synth_dir: Path) -> None:
    import subprocess
    import sys

    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\0")
    (tmp_path / "m.engine.json").write_text("{}")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "from edge_stpm.cli import main; sys.argv = ['edge-stpm', 'run', '--model', sys.argv[1], '--source', "
            "sys.argv[2], '--headless']; main()")
    r = subprocess.run([sys.executable, "-c", code, str(eng), str(synth_dir / "test" / "good")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "ModuleNotFoundError" not in r.stderr and "Traceback" not in r.stderr
    assert "TensorRT is not installed" in r.stderr or "rebuild" in r.stderr
