"""Open a backend for a model file: explicit, or ``auto`` (TensorRT › ONNX Runtime GPU › PyTorch CUDA › ONNX Runtime CPU)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..export.artifacts import onnx_path
from .base import Backend

BACKENDS = ("auto", "tensorrt", "onnxruntime", "pytorch")


def have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def ort_gpu() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return bool({"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(ort.get_available_providers()))


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return {".engine": "tensorrt", ".plan": "tensorrt", ".onnx": "onnxruntime", ".pt": "pytorch"}.get(path.suffix, "?")


def resolve(model: Path, backend: str = "auto", precision: str | None = None) -> tuple[str, Path, str]:
    """Decide (backend, file, reason) for ``model``: a checkpoint, an ONNX graph, an engine, or an export folder."""
    model = Path(model)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not model.exists():
        raise UserError(f"model not found: {model}")
    kind = _kind(model)
    if kind == "?":
        raise UserError(f"{model}: expected a checkpoint (.pt), an ONNX graph (.onnx), an engine (.engine) or an export folder")
    if backend != "auto":
        if kind == "folder":
            return backend, _pick_in_folder(model, backend, precision), f"--backend {backend}"
        if kind != backend and not (backend == "onnxruntime" and kind == "pytorch"):
            raise UserError(f"--backend {backend} cannot run {model.name}; give a {backend} model file")
        if backend == "onnxruntime" and kind == "pytorch":
            return backend, auto_onnx(model), "--backend onnxruntime on a checkpoint: exported FP32 ONNX beside it"
        return backend, model, f"--backend {backend}"
    if kind != "folder":
        if kind == "tensorrt":
            return kind, model, "an engine file runs on TensorRT"
        if kind == "onnxruntime":
            return kind, model, "an ONNX graph runs on ONNX Runtime" + (" (GPU provider)" if ort_gpu() else " (CPU)")
        if torch_cuda():
            return "pytorch", model, "checkpoint and a CUDA GPU: PyTorch CUDA (FP16, CUDA graph)"
        return "onnxruntime", auto_onnx(model), "checkpoint without a GPU: ONNX Runtime CPU is the fastest CPU path (FP32 ONNX exported beside it)"
    engines = sorted(model.glob("*.engine"))
    if engines and have_tensorrt():
        return "tensorrt", _pick_in_folder(model, "tensorrt", precision), "TensorRT is installed and the folder has an engine"
    reason = "no TensorRT" if not have_tensorrt() else "no engine in the folder"
    if ort_gpu():
        return "onnxruntime", _pick_in_folder(model, "onnxruntime", precision), f"{reason}; ONNX Runtime has a GPU provider"
    ck = model / "model.pt"
    if torch_cuda() and ck.is_file():
        return "pytorch", ck, f"{reason}; PyTorch sees a CUDA GPU"
    return "onnxruntime", _pick_in_folder(model, "onnxruntime", precision or "fp32"), f"{reason}; no GPU: ONNX Runtime CPU"


def _pick_in_folder(folder: Path, backend: str, precision: str | None) -> Path:
    if backend == "tensorrt":
        cands = sorted(folder.glob(f"*{precision or ''}*.engine"))
    elif backend == "onnxruntime":
        cands = [onnx_path(folder, precision)] if precision else [onnx_path(folder, p) for p in ("fp32", "fp16", "int8")]
        cands = [c for c in cands if c.is_file()]
    else:
        cands = [folder / "model.pt"] if (folder / "model.pt").is_file() else []
    if not cands:
        raise UserError(f"no {backend} model{' for ' + precision if precision else ''} in {folder}")
    return cands[0]


def auto_onnx(ckpt: Path) -> Path:
    """The FP32 ONNX graph of a checkpoint, exported once into ``<run>/onnx/`` and re-exported when the checkpoint changes."""
    from ..checkpoint import file_sha256
    from ..export.exporter import export

    folder = ckpt.parent / "onnx"
    path = onnx_path(folder, "fp32")
    sha = file_sha256(ckpt)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        try:
            if json.loads(meta.read_text()).get("checkpoint_sha256") == sha:
                return path
        except (OSError, json.JSONDecodeError):
            pass
    export(ckpt, ["fp32"], folder, batch=1, quiet=True)
    return path


def open_backend(model: Path, backend: str = "auto", precision: str | None = None, device: str = "auto",
                 batch: int = 1, threads: int | None = None, verbose: bool = True) -> Backend:
    """Open the backend ``resolve`` picks; prints which and why when ``verbose``."""
    name, path, reason = resolve(Path(model), backend, precision)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        b: Backend = TensorRTBackend(path)
    elif name == "onnxruntime":
        from .onnx import OnnxBackend

        b = OnnxBackend(path, threads=threads)
    else:
        from .torch import TorchBackend

        b = TorchBackend(path, device=device, precision=precision, batch=batch, threads=threads)
    if verbose:
        from ..progress import console

        console.print(f"backend: {b.describe()} — {reason}", highlight=False)
    return b
