"""The thin TensorRT builder: an edge-stpm ONNX graph → a self-describing engine file (metadata header).

Only ``build_engine`` and the small helpers it calls touch TensorRT. Which ONNX variant, which flags and whether
the head is pinned to FP32 is decided per TensorRT major version by ``build_plan`` (plain Python, tested without
TensorRT). Every TensorRT name used here is resolved against the real Python bindings of 8.6, 10.x and 11.x in
the tests (``tests/unit/test_tensorrt_bindings.py``); functions listed in ``VERSION_GATED`` run only on those majors.
API used: Logger, Builder, create_network, OnnxParser, create_builder_config, set_memory_pool_limit,
set_flag / clear_flag, timing caches, build_serialized_network.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_bytes
from edge_stpm.contract.artifacts import read_onnx_metadata, write_engine
from edge_stpm.runtime.backends.cuda import gpu_info
from edge_stpm.runtime.backends.tensorrt_backend import import_tensorrt, trt_major_minor

# Functions that touch TensorRT names existing only in some majors (checked against those majors' bindings).
VERSION_GATED = {"pin_head_fp32": (8,), "_error_node_name": (10, 11)}

TRUNK_PREFIXES = ("/teacher/", "/student/")


@dataclass(frozen=True)
class BuildPlan:
    """What a TensorRT version gets for a precision: the ONNX graph to parse, the flags to set and clear, and
    whether the layers outside the trunks must be pinned to FP32 (8.x builds FP16/INT8 with builder flags, which
    would otherwise let TensorRT run the head — normalise, difference, product, smoothing, max — in FP16)."""

    onnx_precision: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...] = ("TF32",)
    pin_head_fp32: bool = False


def build_plan(version: str, precision: str) -> BuildPlan:
    """The ONNX variant and flags per TensorRT version (docs: 8.5/8.6, 10.x, 11.x).

    8.x: explicit-batch flag; FP16 from the FP32 graph + FP16 flag; INT8 from the Q/DQ graph + INT8 (+FP16); head
    pinned to FP32 with OBEY_PRECISION_CONSTRAINTS. 10.x: strongly typed network, precision carried by the graph.
    11.x: strongly typed always (no flag to set). TF32 is cleared everywhere (on by default), so FP32 layers —
    the whole FP32 reference engine, the head of the others — are FP32.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    major, minor = trt_major_minor(version)
    if major == 8 and minor >= 5:
        pin = ("OBEY_PRECISION_CONSTRAINTS",)
        return {"fp32": BuildPlan("fp32", ("EXPLICIT_BATCH",), ()),
                "fp16": BuildPlan("fp32", ("EXPLICIT_BATCH",), ("FP16",) + pin, pin_head_fp32=True),
                "int8": BuildPlan("int8", ("EXPLICIT_BATCH",), ("INT8", "FP16") + pin, pin_head_fp32=True)}[precision]
    if major == 10:
        return BuildPlan(precision, ("STRONGLY_TYPED",), ())
    if major == 11:
        return BuildPlan(precision, (), ())
    raise UserError(f"TensorRT {version} is not supported: edge-stpm builds with TensorRT 8.5/8.6, 10.x or 11.x")


def engine_metadata(graph_md: dict[str, Any], trt_version: str, gpu: dict[str, Any], plan: BuildPlan,
                    precision: str) -> dict[str, Any]:
    """What travels inside an engine: the graph's metadata, with ``precision`` = what was *built* (an 8.x FP16
    engine is built from the FP32 graph), plus the TensorRT version, GPU and flags."""
    return graph_md | {"format": "edge-stpm-engine", "precision": precision, "onnx_precision": plan.onnx_precision,
                       "tensorrt_version": trt_version, "gpu_name": gpu["name"],
                       "compute_capability": gpu["compute_capability"], "network_flags": list(plan.network_flags),
                       "builder_flags": list(plan.builder_flags), "cleared_flags": list(plan.cleared_flags),
                       "head_pinned_fp32": plan.pin_head_fp32}


def timing_cache_path(folder: Path, trt_version: str, gpu: dict[str, Any]) -> Path:
    """A timing cache per TensorRT version and GPU (a cache from another is useless or refused)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu["name"]).strip("-").lower()
    return Path(folder) / f"timing_trt{trt_version}_{slug}_sm{gpu['compute_capability'].replace('.', '')}.cache"


def pin_head_fp32(trt: Any, network: Any) -> int:
    """TensorRT 8.x: every layer outside the teacher/student trunks computes and outputs FP32. Returns how many
    layers were pinned. (Layer names come from the ONNX node names, e.g. ``/teacher/stages.0/...``.)"""
    pinned = 0
    floats = (trt.DataType.FLOAT, trt.DataType.HALF)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name.startswith(TRUNK_PREFIXES):
            continue
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outs or len(outs) != layer.num_outputs:
            continue  # shape, index and Q/DQ layers keep their own types
        layer.precision = trt.DataType.FLOAT
        for j in outs:
            layer.set_output_type(j, trt.DataType.FLOAT)
        pinned += 1
    return pinned


def _error_node_name(error: Any) -> str:
    return error.node_name()


def parser_errors(trt: Any, parser: Any) -> list[str]:
    out = []
    major = trt_major_minor(trt.__version__)[0]
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        name = _error_node_name(error) if major >= 10 else "?"
        out.append(f"node {error.node()} ({name}): {error.desc()}")
    return out


def build_engine(onnx_file: Path, precision: str, out: Path, workspace_mib: int = 2048,
                 timing_cache_dir: Path | None = None) -> dict[str, Any]:
    """Parse an edge-stpm ONNX graph and write a self-describing engine at ``out`` (+ a JSON sidecar for people).

    The GPU is queried first (a cuda-python failure then leaves no half-written engine); the timing cache is
    kept per TensorRT version and GPU in ``timing_cache_dir`` and every cache call's result is checked.
    """
    md = read_onnx_metadata(onnx_file)
    trt = import_tensorrt()
    plan = build_plan(trt.__version__, precision)
    if md["precision"] != plan.onnx_precision:
        raise UserError(f"TensorRT {trt.__version__} builds {precision} from the {plan.onnx_precision} graph, "
                        f"not {Path(onnx_file).name} ({md['precision']})")
    gpu = gpu_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_file).read_bytes()):
        raise UserError(f"TensorRT cannot parse {onnx_file}: " + " | ".join(parser_errors(trt, parser)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    pinned = pin_head_fp32(trt, network) if plan.pin_head_fp32 else 0
    cache_file = timing_cache_path(timing_cache_dir, trt.__version__, gpu) if timing_cache_dir else None
    cache_bytes = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise UserError(f"TensorRT refused the timing cache {cache_file}: delete it and build again")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_file} (see the log above)")
    meta = engine_metadata(md, trt.__version__, gpu, plan, precision) | {"head_layers_pinned": pinned}
    write_engine(out, meta, bytes(serialized))
    if cache_file is not None:
        cache = config.get_timing_cache()
        data = cache.serialize() if cache is not None else None
        if data is None:
            raise UserError("TensorRT could not serialize its timing cache (the engine was written)")
        write_bytes(cache_file, bytes(data))
    return meta
