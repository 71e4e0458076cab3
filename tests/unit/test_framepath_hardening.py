"""Hardening of the device frame path (issue 37) and the overlay's banner (issue 38): the memory head's frame graph
passes TensorRT's rules and matches the host path; a frame path that cannot run costs bench only its own columns;
a frame graph is used only when the bundle's manifest lists it (same sha256) and it passes the bundle's self-test;
the banner says the result's own verdict (REVIEW too)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_stpm.contract.artifacts import MANIFEST, frame_onnx_path
from edge_stpm.common.errors import UserError
from edge_stpm.common.images import list_images, read_image
from edge_stpm.runtime.inspector import InspectionResult, Inspector, frame_self_test

SIZE = (200, 150)  # (width, height): a landscape camera frame larger than the model input (128²), small to be quick


@pytest.fixture(scope="module")
def memory_frames(trained_memory: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the memory-head checkpoint with the frame graph for SIZE."""
    from edge_stpm.training.export.exporter import export

    out = tmp_path_factory.mktemp("memory_frames") / "bundle"
    export(trained_memory / "model.pt", ["fp32"], out, quiet=True, frame_sizes=[SIZE])
    return out


def _frames(synth_dir: Path, w: int, h: int) -> list[np.ndarray]:
    paths = sorted(list_images(synth_dir / "test" / "good"))[:2] + sorted(
        p for d in (synth_dir / "test").iterdir() if d.name != "good" for p in list_images(d))[:2]
    return [cv2.resize(read_image(p), (w, h), interpolation=cv2.INTER_AREA) for p in paths]


def test_memory_head_frame_graph_passes_the_rules_and_matches_the_host_path(memory_frames: Path,
                                                                           synth_dir: Path) -> None:
    """Before: export failed — /Resize_2 (the map back to the frame) took its sizes from a Shape of the map output,
    which constant folding left alone. Bounds as tests/test_framepath.py (1e-4 on map and score)."""
    from edge_stpm.contract.trt_rules import check_file

    path = frame_onnx_path(memory_frames, "fp32", *SIZE)
    assert check_file(path) == []
    device = Inspector.load(memory_frames, "onnxruntime", precision="fp32", frame_path="device")
    host = Inspector.load(memory_frames, "onnxruntime", precision="fp32", frame_path="host")
    try:
        for frame in _frames(synth_dir, *SIZE):
            rd, rh = device.inspect(frame), host.inspect(frame)
            assert rd.path == "device" and rh.path == "host", device.path_note
            assert abs(rd.score - rh.score) <= 1e-4 * abs(rh.score)
            assert np.linalg.norm(rd.model_map - rh.model_map) <= 1e-4 * np.linalg.norm(rh.model_map)
    finally:
        device.close()
        host.close()


def test_bench_keeps_the_row_when_the_frame_graph_fails(trained_memory: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the frame graph's export failure dropped the whole ONNX Runtime row (the product's main row)."""
    from edge_stpm import bench
    from edge_stpm.training.export import exporter

    def refuse(*args: object, **kwargs: object) -> None:
        raise UserError("node /Resize_2 (Resize): [constant-operand] operand 3 must be a constant")

    monkeypatch.setattr(exporter, "export_frame_onnx", refuse)  # where the export imports it
    r = bench.bench(trained_memory / "model.pt", ["onnxruntime"], ["fp32"], [1], iters=3, warmup=0,
                    work=tmp_path / "work", quiet=True, frame_sizes=[(64, 48)])
    row = next(x for x in r["rows"] if x["backend"] == "onnxruntime")
    assert row["status"] == "ok", row["reason"]
    assert row["images_per_s"] and row["frames"]["64x48"]["host_e2e_ms"] > 0
    assert "/Resize_2" in row["frames"]["64x48"]["device_error"]
    notes = bench.frame_path_notes(r)
    assert len(notes) == 1 and "/Resize_2" in notes[0] and notes[0] in bench.not_run(r)
    assert any(t[0] == "onnxruntime" and t[1] == "fp32" for t in bench.table_rows(r))
    assert "/Resize_2" in bench.markdown(r)


def _unlist(bundle: Path, name: str) -> None:
    doc = json.loads((bundle / MANIFEST).read_text())
    del doc["files"][name]
    (bundle / MANIFEST).write_text(json.dumps(doc))


def test_an_unlisted_frame_graph_is_not_used(memory_frames: Path, synth_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(memory_frames, bundle)
    _unlist(bundle, frame_onnx_path(bundle, "fp32", *SIZE).name)
    insp = Inspector.load(bundle, "onnxruntime", precision="fp32", frame_path="device")
    try:
        assert insp.inspect(_frames(synth_dir, *SIZE)[0]).path == "host"
        assert "not listed in manifest.json" in insp.path_note
    finally:
        insp.close()


def test_a_frame_graph_changed_after_loading_is_not_used(memory_frames: Path, synth_dir: Path,
                                                         tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(memory_frames, bundle)
    insp = Inspector.load(bundle, "onnxruntime", precision="fp32", frame_path="device")  # verified here
    try:
        with open(frame_onnx_path(bundle, "fp32", *SIZE), "ab") as fh:
            fh.write(b"\0")
        assert insp.inspect(_frames(synth_dir, *SIZE)[0]).path == "host"
        assert "does not match manifest.json" in insp.path_note
    finally:
        insp.close()


class _Off:
    """A frame runner whose scores are off by ``by`` × the image threshold."""

    name = "off"

    def __init__(self, inner: object, by: float) -> None:
        self.inner, self.by = inner, by

    def run(self, frame: np.ndarray, scale: float) -> tuple[np.ndarray, float, np.ndarray]:
        m, s, o = self.inner.run(frame, scale)  # type: ignore[attr-defined]
        return m, s + self.by, o


def test_frame_self_test(memory_frames: Path) -> None:
    """The listed frame graph passes the bundle's self-test; one whose scores are off by 0.05 × the threshold
    (FP32 tolerance 0.01) fails it, naming the image; no selftest.json: no self-test, so not used."""
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend, OnnxFrameRunner

    w, h = SIZE
    b = OnnxBackend(memory_frames / "model_fp32.onnx")
    runner = OnnxFrameRunner(frame_onnx_path(memory_frames, "fp32", w, h))
    thr = float(b.metadata["thresholds"]["image"])
    try:
        assert frame_self_test(b, runner, memory_frames, h, w) is None
        why = frame_self_test(b, _Off(runner, 0.05 * thr), memory_frames, h, w)  # type: ignore[arg-type]
        assert why is not None and "selftest_0" in why and "tolerance 0.01" in why
        why = frame_self_test(b, runner, memory_frames / "nowhere", h, w)
        assert why is not None and "no self-test" in why
    finally:
        runner.close()
        b.close()


def _banner_texts(r: InspectionResult, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    texts: list[str] = []
    real = cv2.putText

    def spy(img: np.ndarray, text: str, *args: object, **kwargs: object) -> np.ndarray:
        texts.append(text)
        return real(img, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cv2, "putText", spy)
    r.overlay(np.zeros((120, 160, 3), np.uint8), text=["hud"])
    monkeypatch.setattr(cv2, "putText", real)
    return texts


@pytest.mark.parametrize("device", [False, True])
def test_the_banner_says_review_for_a_review_result(device: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a REVIEW result's picture said ``OK 0.92`` above a REVIEW verdict (host and device paths alike)."""
    from edge_stpm.runtime.overlay import banner_head

    r = InspectionResult(0.92, 0.92, False, np.zeros((8, 8), np.float32), (120, 160), "stretch", 1.0, 1.0,
                         coloured=np.zeros((120, 160, 3), np.uint8) if device else None, review=True)
    assert r.verdict == "REVIEW"
    texts = _banner_texts(r, monkeypatch)
    assert "REVIEW 0.92" in texts and "OK 0.92" not in texts
    assert banner_head(False, 0.92)[0] == "OK 0.92" and banner_head(True, 1.5)[0] == "NG 1.50"  # the old bool
