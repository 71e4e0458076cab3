"""The device frame path: one graph from the camera frame to the coloured overlay, run by ONNX Runtime and by
PyTorch on the CPU, against the host path (OpenCV fit, model graph, OpenCV unfit and colour).

Bounds, from measurements on 2026-11-27 (mobilenet_v2, random and trained students, 640×480 and 1920×1080,
pad/stretch/crop): map relative L2 to the host path 1.4e-7–5.9e-7, score relative error ≤ 2.4e-7, overlay mean
absolute difference ≤ 3e-5 grey levels with single pixels off by ≤ 3 (a map value on a table-bin edge). The tests
allow 1e-4 on map and score (the FP32 export gate) and 0.02 grey levels / 0.1 % of pixels on the overlay."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_stpm.contract.artifacts import frame_onnx_path
from edge_stpm.common.images import list_images, read_image
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.runtime.overlay import index_scale

SIZES = [(200, 150), (96, 160)]  # (width, height): landscape (pad fits) and portrait


@pytest.fixture(scope="module")
def frame_bundle(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_stpm.training.export.exporter import export

    out = tmp_path_factory.mktemp("frames") / "bundle"
    export(trained / "model.pt", ["fp32"], out, quiet=True, frame_sizes=SIZES)
    return out


def _frames(synth_dir: Path, w: int, h: int) -> list[np.ndarray]:
    paths = sorted(list_images(synth_dir / "test" / "good"))[:2] + sorted(
        p for d in (synth_dir / "test").iterdir() if d.name != "good" for p in list_images(d))[:4]
    return [cv2.resize(read_image(p), (w, h), interpolation=cv2.INTER_AREA) for p in paths]


def _overlay_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), float((d.max(axis=2) > 0).mean())


def test_frame_graphs_written_checked_and_listed(frame_bundle: Path) -> None:
    from edge_stpm.contract.artifacts import verify_bundle
    from edge_stpm.contract.trt_rules import check_file

    for w, h in SIZES:
        path = frame_onnx_path(frame_bundle, "fp32", w, h)
        assert path.is_file() and check_file(path) == []
    verify_bundle(frame_bundle)  # the manifest covers the frame graphs


@pytest.mark.parametrize("size", SIZES)
def test_device_path_matches_host_path(frame_bundle: Path, synth_dir: Path, size: tuple[int, int]) -> None:
    w, h = size
    device = Inspector.load(frame_bundle, "onnxruntime", precision="fp32", frame_path="device")
    host = Inspector.load(frame_bundle, "onnxruntime", precision="fp32", frame_path="host")
    try:
        for frame in _frames(synth_dir, w, h):
            rd, rh = device.inspect(frame), host.inspect(frame)
            assert rd.path == "device" and rh.path == "host"
            assert abs(rd.score - rh.score) <= 1e-4 * abs(rh.score)
            assert np.linalg.norm(rd.model_map - rh.model_map) <= 1e-4 * np.linalg.norm(rh.model_map)
            mean, share = _overlay_diff(rd.overlay(frame, text=["x"]), rh.overlay(frame, text=["x"]))
            assert mean <= 0.02 and share <= 1e-3, (mean, share)
        assert "device frame path" in device.path_note
    finally:
        device.close()
        host.close()


def test_pytorch_cpu_runs_the_same_frame_path(trained: Path, frame_bundle: Path, synth_dir: Path) -> None:
    """The checkpoint's PyTorch backend builds the same FramePipeline: equal to the exported graph in ORT."""
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxFrameRunner
    from edge_stpm.training.torch_backend import TorchBackend

    w, h = SIZES[0]
    backend = TorchBackend(trained / "model.pt", device="cpu")
    runner = backend.frame_runner(h, w)
    graph = OnnxFrameRunner(frame_onnx_path(frame_bundle, "fp32", w, h), allow_gpu=False)
    sc = ScoreScale.of(backend.metadata["thresholds"])
    assert sc.kind == "good" and sc.pixel_zero > 0  # the graph subtracts a real zero: its parity is tested here
    scale = index_scale(sc.pixel_one, sc.pixel_zero)
    for frame in _frames(synth_dir, w, h)[:3]:
        mt, st, ot = runner.run(frame, scale)
        mo, so, oo = graph.run(frame, scale)
        assert abs(st - so) <= 1e-4 * abs(so)
        assert np.linalg.norm(mt - mo) <= 1e-4 * np.linalg.norm(mo)
        mean, share = _overlay_diff(ot, oo)
        assert mean <= 0.02 and share <= 1e-3


def test_colour_follows_the_threshold(frame_bundle: Path, synth_dir: Path) -> None:
    """A defective frame: at the stored threshold some pixels are coloured; with the threshold raised so the map's
    maximum is under half of it (where colour starts) none are — the index scale is a graph input, so
    --threshold needs no re-export."""
    w, h = SIZES[0]
    frame = _frames(synth_dir, w, h)[-1]
    low = Inspector.load(frame_bundle, "onnxruntime", precision="fp32", frame_path="device")
    r = low.inspect(frame)
    assert r.coloured is not None and (r.coloured != frame).any()
    # the threshold factor on the score scale that puts the map's maximum at 0.25 of it (colour starts at 0.5)
    top = float(low.scale.pixel(np.array(r.anomaly_map.max())))
    high = Inspector.load(frame_bundle, "onnxruntime", precision="fp32", frame_path="device", threshold=4.0 * top)
    try:
        assert np.array_equal(high.inspect(frame).coloured, frame)
    finally:
        low.close()
        high.close()


def test_other_sizes_fall_back_to_the_host_path(frame_bundle: Path, synth_dir: Path) -> None:
    insp = Inspector.load(frame_bundle, "onnxruntime", precision="fp32", frame_path="device")
    try:
        frame = _frames(synth_dir, 120, 90)[0]
        assert insp.inspect(frame).path == "host"
        assert "120x90: host path" in insp.path_note
    finally:
        insp.close()


def test_auto_keeps_the_host_path_on_a_cpu(frame_bundle: Path, synth_dir: Path) -> None:
    """On a CPU the frame graph's fit/colour ops cost more than OpenCV's (bench: benchmarks/results/frame_path),
    so ``auto`` uses the device path only where the model runs on an accelerator."""
    insp = Inspector.load(frame_bundle, "onnxruntime", precision="fp32")
    try:
        assert not insp.backend.accelerated
        assert insp.inspect(_frames(synth_dir, *SIZES[0])[0]).path == "host"
        assert "runs on the CPU" in insp.path_note
    finally:
        insp.close()
