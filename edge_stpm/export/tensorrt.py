"""The thin TensorRT layer: build an engine from an edge-stpm ONNX graph and check engines at load.

Only ``build_engine`` and ``deserialize`` call TensorRT. Which ONNX variant and which flags each TensorRT
major version gets is decided by plain functions (``build_plan``) that tests exercise without TensorRT.
API used (present from TRT 8.5 through 11): Builder, create_network, OnnxParser, set_memory_pool_limit,
timing caches, build_serialized_network, Runtime.deserialize_cuda_engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import write_bytes, write_json
from .artifacts import read_onnx_metadata, sidecar

INSTALL_HINT = ("TensorRT is not installed: pip install tensorrt (desktop, CUDA 12/13) or use JetPack's python3-libnvinfer; "
                "the ONNX graphs run now with: edge-stpm run --model <model_*.onnx>")


@dataclass(frozen=True)
class BuildPlan:
    """What a TensorRT version gets for a precision: the ONNX graph to parse and the flags to set."""

    onnx_precision: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]


def trt_major_minor(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        raise UserError(f"cannot read TensorRT version {version!r}") from None
    return major, minor


def build_plan(version: str, precision: str) -> BuildPlan:
    """The ONNX variant and flags per TensorRT version (../docs: 8.5/8.6, 10.x, 11.x).

    8.x: explicit-batch flag; FP16 from the FP32 graph + FP16 flag; INT8 from the Q/DQ graph + INT8 (+FP16).
    10.x: explicit batch implied; precision carried by the graph, network strongly typed.
    11.x: strongly typed always (no flag to set); precision only from the graph.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    major, minor = trt_major_minor(version)
    if major == 8 and minor >= 5:
        return {"fp32": BuildPlan("fp32", ("EXPLICIT_BATCH",), ()),
                "fp16": BuildPlan("fp32", ("EXPLICIT_BATCH",), ("FP16",)),
                "int8": BuildPlan("int8", ("EXPLICIT_BATCH",), ("INT8", "FP16"))}[precision]
    if major == 10:
        return BuildPlan(precision, ("STRONGLY_TYPED",), ())
    if major == 11:
        return BuildPlan(precision, (), ())
    raise UserError(f"TensorRT {version} is not supported: edge-stpm builds with TensorRT 8.5/8.6, 10.x or 11.x")


def engine_metadata(graph_md: dict[str, Any], trt_version: str, gpu: dict[str, Any], plan: BuildPlan) -> dict[str, Any]:
    """What is stored beside an engine: the graph's metadata plus the TensorRT version, GPU and flags."""
    return graph_md | {"format": "edge-stpm-engine", "tensorrt_version": trt_version, "gpu_name": gpu["name"],
                       "compute_capability": gpu["compute_capability"], "onnx_precision": plan.onnx_precision,
                       "network_flags": list(plan.network_flags), "builder_flags": list(plan.builder_flags)}


def check_engine(md: dict[str, Any], trt_version: str, gpu: dict[str, Any], path: Path) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU, saying to rebuild."""
    if md.get("format") != "edge-stpm-engine":
        raise UserError(f"{path} has no edge-stpm engine metadata beside it ({sidecar(path).name}): rebuild with edge-stpm build-engine")
    if md.get("tensorrt_version") != trt_version:
        raise UserError(f"{path} was built by TensorRT {md.get('tensorrt_version')}, this is TensorRT {trt_version}: "
                        f"rebuild it here with edge-stpm build-engine")
    if md.get("compute_capability") != gpu["compute_capability"] or md.get("gpu_name") != gpu["name"]:
        raise UserError(f"{path} was built for {md.get('gpu_name')} (sm {md.get('compute_capability')}), this GPU is "
                        f"{gpu['name']} (sm {gpu['compute_capability']}): rebuild it here with edge-stpm build-engine")


def read_engine_metadata(path: Path) -> dict[str, Any]:
    meta_path = sidecar(Path(path))
    if not Path(path).is_file():
        raise UserError(f"engine not found: {path}")
    if not meta_path.is_file():
        raise UserError(f"{path} has no metadata file {meta_path.name} beside it: rebuild with edge-stpm build-engine")
    try:
        return json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"cannot read engine metadata {meta_path}: rebuild with edge-stpm build-engine") from None


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return trt


def build_engine(onnx_file: Path, precision: str, out: Path, workspace_mib: int = 2048,
                 timing_cache: Path | None = None) -> dict[str, Any]:
    """Parse an edge-stpm ONNX graph and build a serialized engine at ``out`` (+ ``out.json``)."""
    from ..runtime.cuda import gpu_info

    md = read_onnx_metadata(onnx_file)
    trt = import_tensorrt()
    plan = build_plan(trt.__version__, precision)
    if md["precision"] != plan.onnx_precision:
        raise UserError(f"TensorRT {trt.__version__} builds {precision} from the {plan.onnx_precision} graph, "
                        f"not {onnx_file.name} ({md['precision']})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_file).read_bytes()):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append(f"node {e.node()} ({e.node_name() if hasattr(e, 'node_name') else '?'}): {e.desc()}")
        raise UserError(f"TensorRT cannot parse {onnx_file}: " + " | ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_file} (see the log above)")
    write_bytes(out, bytes(serialized))
    if timing_cache:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    meta = engine_metadata(md, trt.__version__, gpu_info(), plan)
    write_json(sidecar(out), meta)
    return meta


def deserialize(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Load an engine after checking its metadata against this TensorRT and GPU: (trt module, engine, metadata)."""
    from ..runtime.cuda import gpu_info

    md = read_engine_metadata(path)
    trt = import_tensorrt()
    check_engine(md, trt.__version__, gpu_info(), Path(path))
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise UserError(f"TensorRT could not deserialize {path}: rebuild it with edge-stpm build-engine")
    return trt, engine, md
