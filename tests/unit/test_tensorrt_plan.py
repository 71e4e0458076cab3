"""The TensorRT layer's plain decisions, tested without TensorRT (no TensorRT result is faked)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_stpm.contract.artifacts import pack_engine, read_engine, unpack_engine, write_engine
from edge_stpm.common.errors import UserError
from edge_stpm.training.export.tensorrt_engines import build_plan, engine_metadata, timing_cache_path
from edge_stpm.common.files import write_json
from edge_stpm.runtime.backends.tensorrt_backend import TensorSpec, check_engine, check_io, frame_io, model_io, runnable


@pytest.mark.parametrize("version,precision,onnx,net,flags,pin", [
    ("8.6.1", "fp32", "fp32", ("EXPLICIT_BATCH",), (), False),
    ("8.6.1", "fp16", "fp32", ("EXPLICIT_BATCH",), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), True),
    ("8.5.2", "int8", "int8", ("EXPLICIT_BATCH",), ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"), True),
    ("10.3.0", "fp16", "fp16", ("STRONGLY_TYPED",), (), False),
    ("10.13.1", "int8", "int8", ("STRONGLY_TYPED",), (), False),
    ("11.0.0", "fp16", "fp16", (), (), False),
    ("11.2.0", "int8", "int8", (), (), False),
])
def test_build_plan_per_version(version: str, precision: str, onnx: str, net: tuple, flags: tuple, pin: bool) -> None:
    plan = build_plan(version, precision)
    assert (plan.onnx_precision, plan.network_flags, plan.builder_flags, plan.pin_head_fp32) == (onnx, net, flags, pin)
    assert plan.cleared_flags == ("TF32",), "FP32 layers must be FP32, not TF32"


@pytest.mark.parametrize("version", ["7.2.3", "8.4.0", "9.0.0", "12.0.0", "abc"])
def test_unsupported_versions_refused(version: str) -> None:
    with pytest.raises(UserError):
        build_plan(version, "fp16")


def test_unknown_precision_refused() -> None:
    with pytest.raises(UserError, match="precision"):
        build_plan("10.3.0", "int4")


GRAPH_MD = {"backbone": "mobilenet_v2", "image_size": 128, "batch": 1, "precision": "fp32",
            "thresholds": {"image": 1.0, "pixel": 0.5, "method": "percentile"}}
GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_engine_metadata_records_what_was_built() -> None:
    md = engine_metadata(GRAPH_MD, "8.6.1", GPU, build_plan("8.6.1", "fp16"), "fp16")
    assert md["precision"] == "fp16" and md["onnx_precision"] == "fp32" and md["head_pinned_fp32"]


def test_self_describing_engine_round_trip_and_mismatch(tmp_path: Path) -> None:
    md = engine_metadata(GRAPH_MD | {"precision": "fp16"}, "10.3.0", GPU, build_plan("10.3.0", "fp16"), "fp16")
    eng = tmp_path / "m.engine"
    write_engine(eng, md, b"PLAN\x00\x01")
    (tmp_path / "m.engine.json").unlink()  # a copied engine without its sidecar still describes itself
    back, blob = read_engine(eng)
    assert back == md and blob == b"PLAN\x00\x01"
    check_engine(back, "10.3.0", GPU, eng)
    with pytest.raises(UserError, match="TensorRT 8.6.1.*rebuild"):
        check_engine(back, "8.6.1", GPU, eng)
    with pytest.raises(UserError, match="Orin.*rebuild"):
        check_engine(back, "10.3.0", {"name": "Orin", "compute_capability": "8.7"}, eng)
    assert unpack_engine(b"plain plan") == (None, b"plain plan")
    with pytest.raises(UserError, match="truncated"):
        unpack_engine(pack_engine(md, b"x")[:20])


def test_plain_engine_without_metadata_refused(tmp_path: Path) -> None:
    eng = tmp_path / "x.engine"
    eng.write_bytes(b"\0")
    with pytest.raises(UserError, match="rebuild"):
        read_engine(eng)
    write_json(tmp_path / "x.engine.json", {"format": "edge-stpm-engine"})
    with pytest.raises(UserError, match="x.engine.json: field backbone is missing"):
        read_engine(eng)  # a sidecar is checked against the graph schema like a header
    md = {"format": "edge-stpm-engine", "backbone": "resnet18", "image_size": 256, "batch": 1, "precision": "fp16",
          "thresholds": {"image": 1.0, "pixel": 2.0}}
    write_json(tmp_path / "x.engine.json", md)
    assert read_engine(eng)[0] == md


def test_engine_not_runnable_without_tensorrt_says_why(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    eng = tmp_path / "m.engine"
    write_engine(eng, {"format": "edge-stpm-engine"}, b"x")
    assert runnable(eng) == (False, "TensorRT is not installed")


def test_timing_cache_keyed_by_version_and_gpu(tmp_path: Path) -> None:
    a = timing_cache_path(tmp_path, "10.3.0", GPU)
    assert a.name == "timing_trt10.3.0_nvidia-h100-80gb-hbm3_sm90.cache"
    assert a != timing_cache_path(tmp_path, "8.6.1", GPU)
    assert a != timing_cache_path(tmp_path, "10.3.0", {"name": "Orin", "compute_capability": "8.7"})


def test_io_binding_by_name() -> None:
    specs = [TensorSpec("score", False, (1,), np.dtype(np.float32)),
             TensorSpec("image", True, (1, 128, 128, 3), np.dtype(np.uint8)),
             TensorSpec("anomaly_map", False, (1, 1, 128, 128), np.dtype(np.float32))]
    assert set(check_io(specs, model_io(1, 128))) == {"image", "anomaly_map", "score"}
    with pytest.raises(UserError, match="'image' is .* expected \\(1, 256, 256, 3\\)"):
        check_io(specs, model_io(1, 256))
    with pytest.raises(UserError, match="no tensor"):
        check_io(specs[:2], model_io(1, 128))


def test_frame_engine_io_binding_by_name() -> None:
    """A frame engine's tensors: the frame and index scale in; map, score and the uint8 overlay out."""
    specs = [TensorSpec("frame", True, (1, 480, 640, 3), np.dtype(np.uint8)),
             TensorSpec("index_scale", True, (1,), np.dtype(np.float32)),
             TensorSpec("anomaly_map", False, (1, 1, 256, 256), np.dtype(np.float32)),
             TensorSpec("score", False, (1,), np.dtype(np.float32)),
             TensorSpec("overlay", False, (1, 480, 640, 3), np.dtype(np.uint8))]
    assert len(check_io(specs, frame_io(480, 640, 256))) == 5
    with pytest.raises(UserError, match="'frame' is"):
        check_io(specs, frame_io(1080, 1920, 256))
