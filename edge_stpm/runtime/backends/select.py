"""Open a backend for a model: a bundle (export folder), an ONNX graph, an engine or a training checkpoint.

``auto`` picks the best *runnable* artefact and says which and why: a TensorRT engine that this TensorRT and GPU
can run › ONNX Runtime with a GPU provider › PyTorch CUDA (checkpoint) › ONNX Runtime CPU. Nothing here exports or
writes files: a checkpoint runs on PyTorch, and the message says how to export for the faster path.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from edge_stpm.common.errors import UserError
from edge_stpm.common.progress import console
from edge_stpm.contract.artifacts import (
    MANIFEST,
    PRECISIONS,
    engine_path,
    file_sha256,
    frame_engine_path,
    frame_onnx_path,
    is_bundle,
    onnx_path,
    read_manifest,
    verify_bundle,
)
from edge_stpm.runtime.backends.base import Backend
from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
from edge_stpm.runtime.backends.tensorrt_backend import TensorRTBackend, runnable
from edge_stpm.runtime.backends.triton_backend import TritonBackend, parse_target

BACKENDS = ("auto", "tensorrt", "onnxruntime", "pytorch", "triton")
TRAIN_HINT = "pip install \"edge-stpm[train]\""


def have_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def ort_gpu() -> bool:
    return bool({"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(ort.get_available_providers()))


def torch_cuda() -> bool:
    """PyTorch sees a CUDA GPU (False when torch is not installed: the runtime install has none)."""
    if not have_torch():
        return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass
class Choice:
    """What ``resolve`` decided: backend, the file it opens, why, and what was passed over (one line each)."""

    backend: str
    path: Path
    reason: str
    skipped: list[str] = field(default_factory=list)


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return {".engine": "tensorrt", ".plan": "tensorrt", ".onnx": "onnxruntime", ".pt": "pytorch"}.get(path.suffix, "?")


def _need_torch(path: Path) -> None:
    if not have_torch():
        raise UserError(f"{path.name} is a training checkpoint, which needs PyTorch: {TRAIN_HINT}, or on this box run "
                        "a bundle made with: edge-stpm export --checkpoint " + str(path))


def resolve(model: Path, backend: str = "auto", precision: str | None = None) -> Choice:
    """Decide the backend and file for ``model`` without opening it."""
    model = Path(model)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if not model.exists():
        raise UserError(f"model not found: {model}")
    kind = _kind(model)
    if kind == "?":
        raise UserError(f"{model}: expected a bundle folder, an ONNX graph (.onnx), an engine (.engine) or a "
                        "checkpoint (.pt)")
    if kind == "folder":
        return _resolve_folder(model, backend, precision)
    if backend not in ("auto", kind):
        hint = {"pytorch": "give the training checkpoint (.pt)",
                "onnxruntime": "give an .onnx graph or the bundle folder",
                "tensorrt": "build an engine with: edge-stpm build-engine --model BUNDLE"}[backend]
        raise UserError(f"--backend {backend} cannot run {model.name}: {hint}")
    if kind == "pytorch":
        _need_torch(model)
        where = "CUDA (FP16, CUDA graph)" if torch_cuda() else "CPU"
        return Choice("pytorch", model, f"a checkpoint runs on PyTorch {where}; for the faster ONNX Runtime/TensorRT "
                                        f"path export a bundle: edge-stpm export --checkpoint {model}")
    if kind == "onnxruntime":
        return Choice(kind, model,
                      "an ONNX graph runs on ONNX Runtime" + (" (GPU provider)" if ort_gpu() else " (CPU)"))

    ok, why = runnable(model)
    if ok or backend == "tensorrt":
        return Choice("tensorrt", model, f"an engine file runs on TensorRT ({why})")
    fallback = [p for p in (model.with_name(f"model_{precision or 'fp32'}.onnx"), model.with_name("model_fp32.onnx"))
                if p.is_file()]
    if fallback:
        return Choice("onnxruntime", fallback[0],
                      f"engine not runnable here ({why}); its bundle's ONNX graph on ONNX Runtime",
                      [f"{model.name}: {why}"])
    raise UserError(f"cannot run {model}: {why}")


def _listed(folder: Path, names: list[Path]) -> list[Path]:
    """Artefacts that exist and, in a bundle, are listed in its manifest (unlisted files are never picked)."""
    listed = set(read_manifest(folder)["files"]) if is_bundle(folder) else None
    return [p for p in names if p.is_file() and (listed is None or p.name in listed)]


def frame_artefact(backend: Backend, height: int, width: int) -> Path | None:
    """The file a backend's device frame path for ``height`` × ``width`` frames would load — ONNX Runtime's
    ``frame_<W>x<H>_<precision>.onnx`` or TensorRT's ``.engine`` beside its model — where it exists; None where
    there is none or the backend builds its frame path itself (PyTorch, from the checkpoint)."""
    maker = {"onnxruntime": frame_onnx_path, "tensorrt": frame_engine_path}.get(backend.name)
    model = getattr(backend, "path", None)
    if maker is None or model is None:
        return None
    path = maker(Path(model).parent, backend.precision, width, height)
    return path if path.is_file() else None


def unlisted_reason(path: Path) -> str | None:
    """Why an artefact beside a model must not be loaded — its folder is not a bundle, the bundle's manifest does
    not list it, or it no longer matches the manifest's size and sha256 — or None when it is listed and matches."""
    folder = Path(path).parent
    if not is_bundle(folder):
        return f"{folder} has no {MANIFEST}: only files a bundle's manifest lists are loaded (re-export the bundle)"
    try:
        entry = read_manifest(folder)["files"].get(Path(path).name)
    except UserError as exc:
        return str(exc)
    if entry is None:
        return (f"{Path(path).name} is not listed in {MANIFEST} (a file copied in by hand? export --frame-size or "
                "build-engine --frame-size lists it)")
    if Path(path).stat().st_size != entry["bytes"] or file_sha256(Path(path)) != entry["sha256"]:
        return f"{Path(path).name} does not match {MANIFEST} (changed or damaged): copy it again or re-export"
    return None


def _resolve_folder(folder: Path, backend: str, precision: str | None) -> Choice:
    skipped: list[str] = []
    if is_bundle(folder):
        verify_bundle(folder)
    else:
        skipped.append(f"{folder} has no manifest.json: files not verified (re-export to get a bundle)")
    precs = [precision] if precision else ["fp16", "int8", "fp32"]
    engines = _listed(folder, [engine_path(folder, p) for p in precs])
    if backend in ("auto", "tensorrt"):
        for e in engines:
            ok, why = runnable(e)
            if ok:
                return Choice("tensorrt", e, f"{e.name}: {why}", skipped)
            skipped.append(f"{e.name}: {why}")
        if backend == "tensorrt":
            raise UserError(f"no runnable TensorRT engine{' for ' + precision if precision else ''} in {folder}"
                            + (f" ({skipped[-1]})" if engines
                               else ": build one with edge-stpm build-engine --model " + str(folder)))
    ck = folder / "model.pt"
    gpu = backend in ("auto", "onnxruntime") and ort_gpu()
    if backend in ("auto", "onnxruntime"):
        order = [precision] if precision else (["fp16", "fp32", "int8"] if gpu else ["fp32", "fp16", "int8"])
        graphs = _listed(folder, [onnx_path(folder, p) for p in order])
        if graphs and (gpu or backend == "onnxruntime" or not (ck.is_file() and torch_cuda())):
            where = ("ONNX Runtime with a GPU provider" if gpu
                     else "ONNX Runtime CPU (FP32 is the fastest graph on a CPU)")
            why = "; ".join(["no runnable engine" if engines else "no engine in the bundle"]
                            + ([] if gpu else ["no GPU provider"]))
            return Choice("onnxruntime", graphs[0], f"{graphs[0].name} on {where} — {why}", skipped)
        if backend == "onnxruntime":
            raise UserError(f"no ONNX graph{' for ' + precision if precision else ''} in {folder}")
    if backend in ("auto", "pytorch") and ck.is_file():
        _need_torch(ck)
        return Choice("pytorch", ck, "the folder's checkpoint on PyTorch" + (" CUDA" if torch_cuda() else " CPU"),
                      skipped)
    raise UserError(f"nothing runnable in {folder} for --backend {backend}"
                    + (f" and --precision {precision}" if precision else "")
                    + "; export a bundle with edge-stpm export")


def default_workers(model: Path, backend: str, precision: str | None, sources: int, free_run: bool,
                    threads: int | None, cores: int) -> tuple[int, str, Choice | None]:
    """``run --workers``' default, why, and the ``resolve`` choice it looked at (hand it to ``open_backend`` so the
    bundle is verified once): one worker with every core (the lowest verdict latency) unless several free-running
    sources share an ONNX Runtime CPU session and ``--threads`` is not given — then one worker per core (at most one
    per source), each with its share of the cores: on a 2-core CPU two single-thread workers gave 1.3–1.5× the
    frames/s of one two-thread worker with 2 and 4 streams (docs/pipeline.md)."""
    if sources < 2 or not free_run or threads is not None or cores < 2 or parse_target(str(model)) is not None:
        return 1, "", None
    try:
        c = resolve(Path(model), backend, precision)
    except UserError:
        return 1, "", None  # loading the model says what is wrong
    if c.backend != "onnxruntime" or ort_gpu():
        return 1, "", c
    n = min(cores, sources)
    return n, (f"{n} inference workers × {max(1, cores // n)} thread(s): {sources} free-running sources on ONNX "
               "Runtime CPU (--workers 1 for the lowest verdict latency)"), c


def open_backend(model: Path, backend: str = "auto", precision: str | None = None, device: str = "auto",
                 batch: int = 1, threads: int | None = None, verbose: bool = True,
                 choice: Choice | None = None) -> Backend:
    """Open the backend ``resolve`` picks (or ``choice``, what it already picked for this model); prints which and
    why (and what was passed over) when ``verbose``. A Triton URL (``grpc://HOST:PORT/MODEL``) opens the model on
    that server."""
    if parse_target(str(model)) is not None:
        if backend not in ("auto", "triton"):
            raise UserError(f"--backend {backend} cannot run {model}: a Triton URL runs on the server "
                            "(--backend triton)")

        tb = TritonBackend(str(model))
        if verbose:
            console.print(f"backend: {tb.describe()} — a Triton URL: the model runs on the server", highlight=False,
                          soft_wrap=True, markup=False)
        return tb
    if backend == "triton":
        raise UserError(f"--backend triton needs a Triton URL as --model: grpc://HOST:PORT/MODEL, not {model}")
    c = choice if choice is not None else resolve(Path(model), backend, precision)
    if c.backend == "tensorrt":
        b: Backend = TensorRTBackend(c.path)
    elif c.backend == "onnxruntime":
        b = OnnxBackend(c.path, threads=threads)
    else:
        from edge_stpm.training.torch_backend import TorchBackend

        b = TorchBackend(c.path, device=device, precision=precision, batch=batch, threads=threads)
    if verbose:
        for line in c.skipped:
            console.print(f"note: {line}", highlight=False, soft_wrap=True, markup=False)
        console.print(f"backend: {b.describe()} — {c.reason}", highlight=False, soft_wrap=True, markup=False)
    return b
