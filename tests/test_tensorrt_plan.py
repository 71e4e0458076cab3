"""The TensorRT layer's plain decisions, tested without TensorRT (no TensorRT result is faked)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_stpm.errors import UserError
from edge_stpm.export.tensorrt import build_plan, check_engine, engine_metadata, read_engine_metadata
from edge_stpm.files import write_json
from edge_stpm.runtime.tensorrt import TensorSpec, check_io


@pytest.mark.parametrize("version,precision,onnx,net,flags", [
    ("8.6.1", "fp32", "fp32", ("EXPLICIT_BATCH",), ()),
    ("8.6.1", "fp16", "fp32", ("EXPLICIT_BATCH",), ("FP16",)),
    ("8.5.2", "int8", "int8", ("EXPLICIT_BATCH",), ("INT8", "FP16")),
    ("10.3.0", "fp16", "fp16", ("STRONGLY_TYPED",), ()),
    ("10.13.1", "int8", "int8", ("STRONGLY_TYPED",), ()),
    ("11.0.0", "fp16", "fp16", (), ()),
    ("11.2.0", "int8", "int8", (), ()),
])
def test_build_plan_per_version(version: str, precision: str, onnx: str, net: tuple, flags: tuple) -> None:
    plan = build_plan(version, precision)
    assert (plan.onnx_precision, plan.network_flags, plan.builder_flags) == (onnx, net, flags)


@pytest.mark.parametrize("version", ["7.2.3", "8.4.0", "9.0.0", "12.0.0", "abc"])
def test_unsupported_versions_refused(version: str) -> None:
    with pytest.raises(UserError):
        build_plan(version, "fp16")


def test_unknown_precision_refused() -> None:
    with pytest.raises(UserError, match="precision"):
        build_plan("10.3.0", "int4")


GRAPH_MD = {"backbone": "mobilenet_v2", "image_size": 128, "batch": 1, "precision": "fp16",
            "thresholds": {"image": 1.0, "pixel": 0.5, "method": "percentile"}}
GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_engine_metadata_round_trip_and_mismatch(tmp_path: Path) -> None:
    md = engine_metadata(GRAPH_MD, "10.3.0", GPU, build_plan("10.3.0", "fp16"))
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\0")
    write_json(tmp_path / "m.engine.json", md)
    back = read_engine_metadata(eng)
    assert back == md
    check_engine(back, "10.3.0", GPU, eng)
    with pytest.raises(UserError, match="TensorRT 8.6.1.*rebuild"):
        check_engine(back, "8.6.1", GPU, eng)
    with pytest.raises(UserError, match="Orin.*rebuild"):
        check_engine(back, "10.3.0", {"name": "Orin", "compute_capability": "8.7"}, eng)


def test_engine_without_metadata_refused(tmp_path: Path) -> None:
    eng = tmp_path / "x.engine"
    eng.write_bytes(b"\0")
    with pytest.raises(UserError, match="rebuild"):
        read_engine_metadata(eng)


def test_io_binding_by_name() -> None:
    specs = [TensorSpec("score", False, (1,), np.dtype(np.float32)),
             TensorSpec("image", True, (1, 128, 128, 3), np.dtype(np.uint8)),
             TensorSpec("anomaly_map", False, (1, 1, 128, 128), np.dtype(np.float32))]
    assert set(check_io(specs, 1, 128)) == {"image", "anomaly_map", "score"}
    with pytest.raises(UserError, match="'image' is .* expected \\(1, 256, 256, 3\\)"):
        check_io(specs, 1, 256)
    with pytest.raises(UserError, match="no tensor"):
        check_io(specs[:2], 1, 128)
