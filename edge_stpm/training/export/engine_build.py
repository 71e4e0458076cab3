"""``edge-stpm build-engine``: a TensorRT engine for this GPU, added to a bundle (manifest updated)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import output_dir
from edge_stpm.contract.artifacts import (
    engine_path,
    frame_engine_path,
    frame_onnx_path,
    is_bundle,
    onnx_path,
    parse_precisions,
    verify_bundle,
    write_manifest,
)
from edge_stpm.runtime.backends.tensorrt_backend import INSTALL_HINT, have_tensorrt
from edge_stpm.training.export.tensorrt_engines import build_engine, build_plan


def build_into_bundle(model: Path, precision: str, out: Path | None = None, workspace_mib: int = 2048,
                      frame_size: tuple[int, int] | None = None) -> tuple[dict[str, Any], Path]:
    """Check TensorRT first, pick the graph this TensorRT needs for ``precision`` (the frame graph for
    ``frame_size`` (width, height) when given), build, update the manifest."""
    model = Path(model)
    precs = parse_precisions(precision)
    if len(precs) != 1:
        raise UserError("build-engine takes one --precision (fp16, int8 or fp32)")
    prec = precs[0]
    if not model.exists():
        raise UserError(f"model not found: {model}")
    folder = model if model.is_dir() else model.parent
    if model.is_file() and model.suffix != ".onnx":
        raise UserError(f"build-engine needs a bundle folder or an .onnx graph, not {model.name}")
    if is_bundle(folder):
        verify_bundle(folder)
    if not have_tensorrt():
        raise UserError(INSTALL_HINT.format(onnx=folder))
    import tensorrt as trt

    need = build_plan(trt.__version__, prec).onnx_precision
    if frame_size is not None and model.is_dir():
        graph = frame_onnx_path(folder, need, *frame_size)
        hint = f" --frame-size {frame_size[0]}x{frame_size[1]}"
    else:
        graph = onnx_path(folder, need) if model.is_dir() else model
        hint = ""
    if not graph.is_file():
        raise UserError(f"TensorRT {trt.__version__} builds {prec} from the {need} graph, and {graph} is missing: "
                        f"export it with edge-stpm export --precision {need}{hint}")
    engine = Path(out) if out else (frame_engine_path(folder, prec, *frame_size) if frame_size and model.is_dir()
                                    else engine_path(folder, prec))
    output_dir(engine.parent)  # a killed earlier build's temporary is cleaned (said)
    md = build_engine(graph, prec, engine, workspace_mib, timing_cache_dir=folder)
    if is_bundle(folder) and engine.parent.resolve() == folder.resolve():
        write_manifest(folder)
    return md, engine
