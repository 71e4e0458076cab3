"""``edge-stpm triton-repo``: a Triton Inference Server model repository from a bundle.

Models written (``NAME`` defaults to ``edge_stpm``):

- ``NAME`` — Python backend (``model.py`` beside this file + the bundle's graph, ONNX Runtime inside): dynamic batching
  over requests (``max_batch_size``, preferred batch sizes, queue delay), CPU instances. Runs on any Triton with the
  Python backend; the one served for real in our tests.
- ``NAME_onnxruntime`` — the same graph for Triton's ``onnxruntime_onnx`` backend. The graph has a static batch (as
  every edge-stpm graph: TensorRT engines are built without optimisation profiles), so ``max_batch_size: 0`` and
  no dynamic batching: many clients are served one request at a time per instance.
- ``NAME_tensorrt`` — only where the bundle holds an engine built on this server's GPU (``build-engine``): the
  plan for ``tensorrt_plan``, same contract.

Every model's ``config.pbtxt`` carries the artefact contract (input ``image`` uint8 NHWC BGR, outputs
``anomaly_map`` float32 and ``score`` float32) and, as the parameter ``edge_stpm_metadata`` (JSON), what the
camera box needs: thresholds, fit mode, input size, image score, smoothing, the graph's and checkpoint's SHA-256 —
a client reads them from the server (``runtime/backends/triton_backend.py``) and needs no model file. Each config is
parsed with the model-config protobuf ``tritonclient`` ships before it is written (where tritonclient is installed).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir, write_bytes, write_text
from edge_stpm.common.progress import console
from edge_stpm.contract.artifacts import (
    INPUT_NAME,
    OUTPUT_NAMES,
    engine_path,
    file_sha256,
    onnx_path,
    read_engine,
    read_onnx_metadata,
)

METADATA_PARAM = "edge_stpm_metadata"


def contract_metadata(md: dict[str, Any], graph_sha256: str) -> dict[str, Any]:
    """What a client needs from the server to inspect like the bundle would."""
    keys = ("backbone", "image_size", "fit", "precision", "batch", "thresholds", "smoothing_sigma",
            "input_blur", "score_top_percent", "checkpoint_sha256", "tiles")
    return ({k: md[k] for k in keys if md.get(k) is not None}
            | {"graph_sha256": graph_sha256, "format": "edge-stpm-triton", "format_version": 1})


def _params(params: dict[str, str]) -> str:
    return "".join(f'parameters: {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n'
                   for k, v in params.items())


def _io(size: int, batch_dims: list[int]) -> str:
    b = "".join(f"{d}, " for d in batch_dims)
    return (f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [ {b}{size}, {size}, 3 ] }} ]\n'
            f'output [ {{ name: "{OUTPUT_NAMES[0]}" data_type: TYPE_FP32 dims: [ {b}1, {size}, {size} ] }},\n'
            f'         {{ name: "{OUTPUT_NAMES[1]}" data_type: TYPE_FP32 '
            f'dims: [ {", ".join(map(str, batch_dims)) or "1"} ] }} ]\n')


def python_config(name: str, size: int, meta: dict[str, Any], max_batch: int, preferred: list[int],
                  queue_delay_us: int, instances: int, env: Path | None, threads: int) -> str:
    params = {METADATA_PARAM: json.dumps(meta), "intra_op_threads": str(threads)}
    if env is not None:
        params["EXECUTION_ENV_PATH"] = str(env)
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n' + _io(size, [])
            + f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
              f"max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n" + _params(params))


def static_config(name: str, platform: str, size: int, batch: int, meta: dict[str, Any], instances: int,
                  kind: str) -> str:
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: 0\n' + _io(size, [batch])
            + f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n"
            + _params({METADATA_PARAM: json.dumps(meta)}))


def check_config(text: str, where: str) -> None:
    """Parse with Triton's own ModelConfig protobuf (tritonclient); UserError naming the file if it does not."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise UserError(f"{where}: not a valid Triton model config ({exc})") from None


def write_repository(bundle: Path, out: Path, name: str = "edge_stpm", precision: str = "fp32", max_batch: int = 8,
                     queue_delay_us: int = 500, instances: int = 1, env: Path | None = None,
                     threads: int = 0) -> dict[str, Any]:
    """Write (or refresh) the repository; returns {model name: backend} of what was written."""
    bundle, out = Path(bundle), Path(out)
    graph = onnx_path(bundle, precision) if bundle.is_dir() else bundle
    if not graph.is_file():
        raise UserError(f"no {precision} graph in {bundle}: export one (edge-stpm export --precision {precision})")
    md = read_onnx_metadata(graph)
    if md.get("kind") == "frame":
        raise UserError(f"{graph} is a frame graph: give the bundle or its model_<precision>.onnx")
    if env is not None and not (Path(env) / "bin" / "python").exists() and not str(env).endswith(".tar.gz"):
        raise UserError(f"--python-env {env}: not a virtualenv (no bin/python) or a conda-pack .tar.gz")
    if env is not None:
        _check_env(Path(env))
    size, batch = int(md["image_size"]), int(md["batch"])
    meta = contract_metadata(md, file_sha256(graph))
    preferred = sorted({b for b in (max_batch // 2, max_batch) if b >= 1})
    written: dict[str, Any] = {}
    models = {name: ("python", python_config(name, size, meta, max_batch, preferred, queue_delay_us, instances, env,
                                             threads)),
              f"{name}_onnxruntime": ("onnxruntime_onnx", static_config(f"{name}_onnxruntime", "onnxruntime_onnx", size,
                                                                         batch, meta, instances, "KIND_AUTO"))}
    eng = engine_path(bundle, precision) if bundle.is_dir() else None
    if eng is not None and eng.is_file():
        models[f"{name}_tensorrt"] = ("tensorrt_plan", static_config(f"{name}_tensorrt", "tensorrt_plan", size, batch,
                                                                      meta, instances, "KIND_GPU"))
    for model, (backend, cfg) in models.items():
        check_config(cfg, f"{model}/config.pbtxt")
        ver = ensure_dir(out / model / "1")
        if backend == "tensorrt_plan":
            write_bytes(ver / "model.plan", read_engine(eng)[1])  # type: ignore[arg-type]  # eng: set for this model
        else:
            _copy(graph, ver / "model.onnx")
        if backend == "python":
            _copy(Path(__file__).with_name("model.py"), ver / "model.py")
        write_text(out / model / "config.pbtxt", cfg)
        written[model] = backend
    return written


def _check_env(env: Path) -> None:
    """The Python-backend environment needs numpy and onnxruntime; Triton 2.51's backend stub (the nvidia-pytriton
    wheel's) mis-sizes outputs with numpy 2 ("output tensor shape does not match size"): say so now."""
    py = env / "bin" / "python"
    if not py.exists():
        return  # a conda-pack archive: checked by the server when it unpacks it
    try:
        r = subprocess.run([str(py), "-c", "import numpy, onnxruntime; print(numpy.__version__)"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"--python-env {env}: its python does not run ({exc})") from None
    if r.returncode != 0:
        raise UserError(f"--python-env {env}: needs numpy and onnxruntime (pip install 'numpy<2' onnxruntime there)")

    if int(r.stdout.strip().split(".")[0]) >= 2:
        console.print(f"note: --python-env {env} has numpy {r.stdout.strip()}: Triton servers up to 2.51 need "
                      "numpy 1.x in a Python-backend environment (pip install 'numpy<2' there)", highlight=False,
                      markup=False,
                      soft_wrap=True)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
