"""``edge-stpm bench``: latency and throughput per backend × precision × batch, beside the PyTorch eager
FP32 baseline on the same device, in one table (plus JSON, Markdown and a PNG chart)."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import psutil
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_stpm.common.errors import UserError, need_train
from edge_stpm.common.files import write_json, write_text
from edge_stpm.common.images import fit_image, labelled_test_images, load_images
from edge_stpm.common.progress import bar, console
from edge_stpm.common.threads import available_cores
from edge_stpm.contract import tiles
from edge_stpm.contract.artifacts import (
    engine_path,
    frame_onnx_path,
    head_line,
    is_bundle,
    library_versions,
    onnx_path,
    parse_frame_size,
    parse_precisions,
    read_engine,
    read_onnx_metadata,
    tiles_lines,
    verify_bundle,
)
from edge_stpm.contract.options import RANGES, parse_ints
from edge_stpm.runtime.backends.base import Backend
from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
from edge_stpm.runtime.backends.tensorrt_backend import TensorRTBackend, runnable
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.loop.pipeline import RunOptions, camera_stats, run
from edge_stpm.runtime.loop.sources import MemorySource, open_source
from edge_stpm.runtime.overlay import index_scale

FRAME_SHAPE = (480, 640, 3)
FRAME_SIZES = ((640, 480), (1920, 1080))  # (width, height) for the host-path vs device-path comparison


@dataclass
class Row:
    backend: str
    precision: str
    batch: int
    device: str = ""
    status: str = "ok"
    reason: str = ""
    model_ms: dict[str, float] = field(default_factory=dict)
    host_ms: dict[str, float] = field(default_factory=dict)
    e2e_ms_per_frame: float | None = None
    images_per_s: float | None = None
    e2e_fps: float | None = None
    speedup: float | None = None
    image_auroc: float | None = None
    baseline: bool = False
    frames: dict[str, dict[str, Any]] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} b{self.batch}" + (" (baseline)" if self.baseline else "")


def machine() -> dict[str, Any]:
    """CPU model and cores, GPU name and driver, library versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "gpu": None, "driver": None}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10)
        if q.returncode == 0 and q.stdout.strip():
            info["gpu"], info["driver"] = (s.strip() for s in q.stdout.strip().splitlines()[0].split(",", 1))
    except (OSError, subprocess.SubprocessError):
        pass

    info["versions"] = library_versions()
    try:
        import tensorrt

        info["versions"]["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["versions"]["tensorrt"] = "not installed"
    return info


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99))}


def time_host(fn: Callable[[], Any], iters: int, warmup: int) -> list[float]:
    """Wall-clock (monotonic) ms of ``fn`` per call, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def time_cuda_graph(b: Any, iters: int, warmup: int) -> list[float]:
    """Device ms of one CUDA-graph replay per call, measured with CUDA events after synchronisation."""
    import torch

    for _ in range(warmup):
        b.graph.replay()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.graph.replay()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def camera_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic smooth uint8 BGR test frame (blurred noise: a part-like surface, not white noise, so the
    overlay colours about as much as on a real good part)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def end_to_end(insp: Any, frames: list[np.ndarray]) -> Callable[[], None]:
    """One step of the camera loop on host frames: inspect (host path: fit on the host, infer, map back; device
    path: the frame graph) and the finished overlay (contours on NG, colour bar, banner), per frame."""
    def step() -> None:
        for f, r in zip(frames, insp.inspect_batch(frames)):
            r.overlay(f, text=("0.0 fps",))
    return step


class _EveryPicture:
    """A picture sink that takes every drawn overlay (as a recording does), so the loop draws every frame."""

    name, picture, lossless, required, queue_size, batch_max, batch_linger_s = ("every-picture", True, True, False,
                                                                                  64, 1, 0.0)

    def open(self) -> None:
        self.n = 0

    def wants(self, result: Any) -> bool:
        return True

    def take_batch(self, results: list[Any]) -> None:
        self.n += len(results)

    def close(self) -> None:
        pass

    def gauges(self) -> dict[str, Any]:
        return {}


def loop_figures(insp: Any, frame: np.ndarray, n: int) -> dict[str, Any]:
    """The camera loop itself (``app.loop``) on ``n`` copies of ``frame`` from a source that always has a fresh
    frame, the overlay drawn for every frame: frames/s and capture → verdict / capture → picture latency."""
    s = run(insp, MemorySource([frame], n), RunOptions(headless=True, sinks=[_EveryPicture()]))  # type: ignore[list-item]
    return {"frames": s.frames, "fps": s.fps, "verdict_ms": s.latency_ms.get("verdict", {}),
            "picture_ms": s.latency_ms.get("picture", {}), "pictures": s.sinks[0]["taken"] if s.sinks else 0}


def model_concurrent(b: Backend, batch: np.ndarray, workers: int, iters: int, warmup: int) -> dict[str, Any]:
    """The model alone called from ``workers`` threads at once (as the loop's workers call it): frames/s over all
    of them and the per-call latency."""
    for _ in range(warmup):
        b.infer_any(batch)
    lat: list[float] = []

    def work(n: int) -> None:
        for _ in range(n):
            t = time.perf_counter()
            b.infer_any(batch)
            lat.append((time.perf_counter() - t) * 1e3)

    each = max(1, iters // workers)
    threads = [threading.Thread(target=work, args=(each,)) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"fps": len(lat) * batch.shape[0] / (time.perf_counter() - t0), "ms": percentiles(lat)}


def pipeline_figures(model: Path, workers: tuple[int, ...], threads: int | None, iters: int, warmup: int,
                     quiet: bool = True) -> list[dict[str, Any]]:
    """Per loop configuration (``workers`` worker threads × ``threads`` ONNX Runtime threads each; FP32, batch 1,
    host frame path, a 640×480 frame, the overlay drawn for every frame): the model alone with that many concurrent
    callers, then the camera loop — frames/s, capture → verdict and → picture latency, and the two goals' ratios
    (loop frames/s over the best model-alone frames/s of all configurations; verdict p50 − model p50, same
    configuration)."""
    frame = camera_frame(FRAME_SHAPE[1], FRAME_SHAPE[0])
    out = []
    for w in workers:
        t = threads or max(1, available_cores() // w)
        insp = Inspector.load(model, "onnxruntime", precision="fp32" if Path(model).is_dir() else None, threads=t,
                              frame_path="host")
        try:
            m = model_concurrent(insp.backend, insp.inputs(frame), w, max(2 * iters, 60), warmup)
            s = run(insp, MemorySource([frame], max(2 * iters, 60)),
                    RunOptions(headless=True, workers=w, sinks=[_EveryPicture()]))  # type: ignore[list-item]
        finally:
            insp.close()
        out.append({"workers": w, "threads": t, "model_fps": m["fps"], "model_ms": m["ms"], "loop_fps": s.fps,
                    "frames": s.frames, "verdict_ms": s.latency_ms.get("verdict", {}),
                    "picture_ms": s.latency_ms.get("picture", {}), "pictures": s.sinks[-1]["taken"] if s.sinks else 0})
    best = max((r["model_fps"] for r in out), default=0.0)
    for r in out:
        r["loop_over_best_model"] = r["loop_fps"] / best if best else None
        v, m50 = r["verdict_ms"].get("p50"), r["model_ms"].get("p50")
        r["verdict_minus_model_p50_ms"] = v - m50 if v is not None and m50 is not None else None
    return out


PIPELINE_COLUMNS = ["workers × threads", "model frames/s", "model ms p50", "loop frames/s", "loop / best model",
                    "verdict ms p50", "p99", "verdict − model p50", "picture ms p50"]


def pipeline_rows(result: dict[str, Any]) -> list[list[str]]:
    return [[f"{r['workers']} × {r['threads']}", _f(r["model_fps"], ".1f"), _f(r["model_ms"].get("p50")),
             _f(r["loop_fps"], ".1f"), _f(r["loop_over_best_model"]), _f(r["verdict_ms"].get("p50")),
             _f(r["verdict_ms"].get("p99")), _f(r["verdict_minus_model_p50_ms"], "+.2f"),
             _f(r["picture_ms"].get("p50"))] for r in result.get("pipeline", [])]


def source_figures(insp: Any, spec: str, n: int) -> dict[str, Any]:
    """The camera loop on a real source (a camera, a stream): ``n`` frames through the model, no overlay; per
    frame the source's own cost (read / pixel conversion) and capture → verdict (for a software-triggered camera:
    trigger → verdict, the cycle a PLC sees)."""
    src = open_source(spec)
    s = run(insp, src, RunOptions(headless=True, max_frames=n), specs=[spec])
    cam = camera_stats(src)
    return {"source": spec, "frames": s.frames, "fps": s.fps, "read_ms_p50": s.ms.get("read"),
            "cycle_ms": s.latency_ms.get("verdict", {}), "dropped": s.dropped, "missed": cam.get("missed"),
            "end_reason": s.end_reason}


SOURCE_COLUMNS = ["source", "frames", "loop frames/s", "read ms p50", "capture→verdict ms p50", "p99", "dropped",
                  "missed"]


def source_rows(result: dict[str, Any]) -> list[list[str]]:
    return [[r["source"], str(r["frames"]), _f(r["fps"], ".1f"), _f(r["read_ms_p50"]), _f(r["cycle_ms"].get("p50")),
             _f(r["cycle_ms"].get("p99")), str(r["dropped"]), "" if r["missed"] is None else str(r["missed"])]
            for r in result.get("sources", [])]


def frame_paths(b: Backend, sizes: Any, iters: int, warmup: int, why_not: str = "") -> dict[str, dict[str, Any]]:
    """Per frame size: end-to-end ms on the host path and on the device path (where the backend has one for that
    size), and the device path's frame graph alone (host frame in, map/score/overlay back on the host). A device
    path that cannot run (``why_not``: its frame graph could not be exported; or it fails here) costs only its own
    columns: ``device_error`` says why, the host columns and the row stay."""
    out: dict[str, dict[str, Any]] = {}
    for w, h in sizes:
        frame = [camera_frame(w, h)]
        n = max(10, iters // 2)
        entry: dict[str, Any] = {"host_e2e_ms": statistics.median(time_host(end_to_end(_inspector(b, "host"), frame),
                                                                            n, 3))}
        entry["host_e2e_fps"] = 1e3 / entry["host_e2e_ms"]
        if why_not:
            entry["device"], entry["device_error"] = "not run", why_not
        else:
            try:
                entry |= _device_path(b, frame, n)
            except Exception as exc:  # noqa: BLE001 - the frame path's failure is reported in its own cells
                entry["device"], entry["device_error"] = "failed", _why(exc)
        out[f"{w}x{h}"] = entry
    return out


def _inspector(b: Backend, frame_path: str) -> Any:
    return Inspector(b, frame_path=frame_path)


def _device_path(b: Backend, frame: list[np.ndarray], n: int) -> dict[str, Any]:
    """The device frame path for ``frame``'s size: the frame graph alone and end to end (ms, frames/s), or where the
    backend has none for this size (or refused it), why."""
    dev = _inspector(b, "device")
    runner = dev.runner(frame[0])
    if runner is None:
        refused = dev.refused.get(frame[0].shape[:2])
        return {"device": "refused", "device_error": refused} if refused else {"device": "no frame path for this size"}
    try:
        scale = index_scale(dev.pixel_threshold, dev.scale.pixel_zero)
        graph_ms = statistics.median(time_host(lambda: runner.run(frame[0], scale), n, 3))
        e2e_ms = statistics.median(time_host(end_to_end(dev, frame), n, 3))
    finally:
        runner.close()
    return {"device_graph_ms": graph_ms, "device_e2e_ms": e2e_ms, "device": runner.name, "device_e2e_fps": 1e3 / e2e_ms}


def _why(exc: BaseException) -> str:
    """One short line for a table: the exception's type and the first line of its message."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def model_info(model: Path) -> tuple[str, dict[str, Any], Path]:
    """(mode, metadata, folder): ``checkpoint`` for a .pt (needs torch), ``artefacts`` for a bundle, .onnx or engine."""
    model = Path(model)
    if not model.exists():
        raise UserError(f"model not found: {model}")
    if model.suffix == ".pt":
        from edge_stpm.training import checkpoint

        return "checkpoint", checkpoint.meta(checkpoint.read(model)), model.parent
    folder = model if model.is_dir() else model.parent
    if model.is_dir():
        if is_bundle(folder):
            verify_bundle(folder)
        graphs = [onnx_path(folder, p) for p in ("fp32", "fp16", "int8") if onnx_path(folder, p).is_file()]
        if not graphs:
            raise UserError(f"no edge-stpm graphs in {folder}: give a bundle from edge-stpm export")
        return "artefacts", read_onnx_metadata(graphs[0]), folder
    if model.suffix == ".onnx":
        return "artefacts", read_onnx_metadata(model), folder

    return "artefacts", read_engine(model)[0], folder


def bench(model: Path, backends: list[str], precisions: list[str], batches: list[int], iters: int = 50,
          warmup: int = 10, engine: Path | None = None, data: Path | None = None, work: Path = Path("engines/bench"),
          threads: int | None = None, quiet: bool = False,
          frame_sizes: Any = FRAME_SIZES, sources: tuple[str, ...] = (), source_frames: int = 300,
          workers: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run every row and return {'machine', 'model', 'rows'}; rows that cannot run say why.

    A checkpoint: the PyTorch eager FP32 baseline, PyTorch rows and ONNX Runtime rows (graphs exported into
    ``work``). A bundle / graph / engine (no torch needed): its own graphs and engines, with ONNX Runtime FP32 as
    the baseline; its graphs have one static batch.
    """
    mode, meta, folder = model_info(Path(model))
    size, fit = meta["image_size"], meta["fit"]
    cuda = False
    if mode == "checkpoint":
        import torch

        from edge_stpm.training.devices import set_threads

        set_threads(threads)
        cuda = torch.cuda.is_available()
    grid = tiles.from_meta(meta)
    if grid is not None:
        frame_sizes = ()  # a tiled fit runs on the host path: its tiles are cut and stitched there
    test = _test_set(data, size, fit, grid) if data else None
    load_before, t_start = os.getloadavg(), time.perf_counter()
    plan: list[tuple[str, str, int]] = []
    for bsz in batches:
        plan.append(("baseline", "fp32", bsz))
        for be in backends:
            for p in precisions:
                if not (mode == "artefacts" and be == "onnxruntime" and p == "fp32"):  # that row is the baseline
                    plan.append((be, p, bsz))
    rows: list[Row] = []
    with bar(quiet) as progress:
        task = progress.add_task("bench", total=len(plan), info="")
        for be, prec, bsz in plan:
            progress.update(task, info=f"{be} {prec} b{bsz}")
            base_name = "pytorch-eager" if mode == "checkpoint" else "onnxruntime"
            row = Row(be if be != "baseline" else base_name, prec, bsz, baseline=be == "baseline")
            frames = [camera_frame(FRAME_SHAPE[1], FRAME_SHAPE[0], seed) for seed in range(bsz)]
            try:
                if mode == "checkpoint":
                    b, frame_why = _open(be, prec, bsz, Path(model), engine, work, cuda, threads, frame_sizes)
                else:
                    b, frame_why = _open_artefact(be, prec, bsz, Path(model), folder, meta, engine, threads), ""
            except _Unavailable as exc:
                row.status, row.reason = "unavailable", str(exc)
            except Exception as exc:  # a row that fails is reported, the others still run
                row.status, row.reason = "failed", _why(exc)
            else:
                try:
                    _measure(row, b, frames, size, fit, iters, warmup, test, frame_sizes if bsz == 1 else (),
                             frame_why)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    row.status, row.reason = "failed", _why(exc)
                finally:
                    b.close()
            rows.append(row)
            progress.advance(task)
    for r in rows:
        base = next((x for x in rows if x.baseline and x.batch == r.batch and x.status == "ok"), None)
        if base and r.status == "ok" and r.images_per_s and base.images_per_s:
            r.speedup = r.images_per_s / base.images_per_s
    src_rows = []
    if sources:
        insp = Inspector.load(Path(model), "onnxruntime", threads=threads)
        try:
            src_rows = [source_figures(insp, spec, source_frames) for spec in sources]
        finally:
            insp.close()
    pipe = pipeline_figures(Path(model), workers, threads, iters, warmup) if workers and mode == "artefacts" else []
    return {"machine": machine(), "model": str(model), "backbone": meta["backbone"], "image_size": size,
            "head": meta.get("head", "stpm"), "memory": meta.get("memory"), "tiles": meta.get("tiles"), "sources": src_rows, "pipeline": pipe,
            "baseline": "PyTorch eager FP32" if mode == "checkpoint" else "ONNX Runtime FP32",
            "frame_shape": list(FRAME_SHAPE), "frame_sizes": [list(x) for x in frame_sizes], "iters": iters, "warmup": warmup,
            "load": load_report(load_before, time.perf_counter() - t_start),
            "rows": [asdict(r) | {"label": r.label} for r in rows]}


class _Unavailable(Exception):
    pass


def _open_artefact(be: str, prec: str, bsz: int, model: Path, folder: Path, meta: dict[str, Any],
                   engine: Path | None, threads: int | None) -> Backend:
    """A row's backend from a bundle, a graph or an engine (never exports, never imports torch)."""
    if int(meta["batch"]) != bsz:
        raise _Unavailable(f"the bundle's graphs are batch {meta['batch']} (export with --batch {bsz})")
    if be in ("baseline", "onnxruntime"):
        path = model if model.suffix == ".onnx" and be != "baseline" else onnx_path(folder, prec)
        if model.suffix == ".onnx" and be != "baseline" and read_onnx_metadata(model)["precision"] != prec:
            raise _Unavailable(f"{model.name} is the {read_onnx_metadata(model)['precision']} graph")
        if not path.is_file():
            raise _Unavailable(f"no {prec} graph in {folder}")
        return OnnxBackend(path, threads=threads)
    if be == "tensorrt":
        path = engine or (model if model.suffix in (".engine", ".plan") else engine_path(folder, prec))
        if not Path(path).is_file():
            raise _Unavailable(f"no {prec} engine (edge-stpm build-engine --model {folder} --precision {prec})")
        ok, why = runnable(Path(path))
        if not ok:
            raise _Unavailable(why)
        b = TensorRTBackend(Path(path))
        if b.precision != prec:
            b.close()
            raise _Unavailable(f"{Path(path).name} is {b.precision}")
        return b
    if be == "pytorch":
        raise _Unavailable("a bundle has no PyTorch model: bench the training checkpoint for PyTorch rows")
    raise UserError(f"unknown backend {be!r}; choose from onnxruntime, pytorch, tensorrt")


def _open(be: str, prec: str, bsz: int, ckpt: Path, engine: Path | None, work: Path, cuda: bool,
          threads: int | None, frame_sizes: Any = ()) -> tuple[Backend, str]:
    """A row's backend from a checkpoint, and why its device frame path cannot run ("" when it can or is not
    asked for): a frame graph that cannot be exported costs the frame-path columns, never the row."""
    if be == "baseline":
        from edge_stpm.training.torch_backend import TorchBackend

        return TorchBackend(ckpt, device="cuda" if cuda else "cpu", precision="fp32", batch=bsz, cuda_graph=False,
                            optimize=False, threads=threads), ""
    if be == "pytorch":
        from edge_stpm.training.torch_backend import TorchBackend

        if prec == "int8":
            raise _Unavailable("the PyTorch backend has no INT8 path (use ONNX Runtime or TensorRT)")
        if prec == "fp16" and not cuda:
            raise _Unavailable("PyTorch FP16 needs CUDA (CPU half convolutions are slow and unsupported here)")
        return TorchBackend(ckpt, device="cuda" if cuda else "cpu", precision=prec, batch=bsz, threads=threads), ""
    if be == "onnxruntime":
        path, why = _exported(ckpt, prec, bsz, work, list(frame_sizes) if bsz == 1 and prec != "int8" else [])
        return OnnxBackend(path, threads=threads), why
    if be == "tensorrt":
        if engine is None:
            raise _Unavailable("no --engine given")
        ok, why = runnable(engine)
        if not ok:
            raise _Unavailable(why)
        b = TensorRTBackend(engine)
        if b.precision != prec or b.batch != bsz:
            b.close()
            raise _Unavailable(f"--engine is {b.precision} batch {b.batch}")
        return b, ""
    raise UserError(f"unknown backend {be!r}; choose from onnxruntime, pytorch, tensorrt")


def _exported(ckpt: Path, prec: str, bsz: int, work: Path, sizes: list[tuple[int, int]]) -> tuple[Path, str]:
    """The checkpoint's ``prec`` graph exported into ``work`` (cached by the checkpoint's sha256) and, for ``sizes``,
    its frame graphs; returns the model graph and why the frame graphs are missing ("" when they are not). The
    model graph is exported first and on its own, so a frame graph that fails its checks cannot take it along."""
    from edge_stpm.training import checkpoint
    from edge_stpm.training.export.exporter import export

    folder = Path(work) / f"{checkpoint.file_sha256(ckpt)[:12]}_b{bsz}"
    path = onnx_path(folder, prec)

    def run(frame_sizes: list[tuple[int, int]]) -> None:  # speed rows: a graph missing its accuracy gate is timed too
        export(ckpt, [prec], folder, batch=bsz, calib_root=Path(work) / "calibration", quiet=True, force=True,
               frame_sizes=frame_sizes)

    if not path.is_file():
        run([])
    if all(frame_onnx_path(folder, prec, w, h).is_file() for w, h in sizes):
        return path, ""
    try:
        run(sizes)
    except Exception as exc:  # noqa: BLE001 - costs the frame-path columns only
        return path, "frame graph not exported: " + _why(exc)
    return path, ""


def _measure(row: Row, b: Backend, frames: list[np.ndarray], size: int, fit: str, iters: int, warmup: int,
             test: tuple[np.ndarray, np.ndarray, Any] | None, frame_sizes: Any, frame_why: str = "") -> None:
    row.device = b.device
    batch = np.stack([fit_image(f, size, fit) for f in frames])
    host = time_host(lambda: b.infer(batch), iters, warmup)
    row.host_ms = percentiles(host)
    graph = getattr(b, "graph", None)
    row.model_ms = percentiles(time_cuda_graph(b, iters, warmup)) if graph is not None else dict(row.host_ms)
    row.images_per_s = row.batch * 1e3 / statistics.mean(host)
    e2e = time_host(end_to_end(Inspector(b, frame_path="host"), frames), max(10, iters // 2), 3)
    row.e2e_ms_per_frame = statistics.median(e2e) / row.batch
    row.e2e_fps = 1e3 / row.e2e_ms_per_frame
    row.frames = frame_paths(b, frame_sizes, iters, warmup, frame_why)
    if row.batch == 1:
        row.loop = loop_figures(Inspector(b, frame_path="host"), frames[0], max(60, 2 * iters))
    if test is not None:
        from edge_stpm.training.metrics import image_auroc

        images, labels, grid = test
        row.image_auroc = image_auroc(tiles.per_frame(grid, b.infer_any(images)[1]), labels)


def _test_set(data: Path, size: int, fit: str, grid: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    items = labelled_test_images(Path(data))
    return load_images([i.path for i in items], size, fit, tiles=grid), np.array([i.label for i in items]), grid


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "" if v is None else format(v, fmt)


COLUMNS = ["backend", "prec", "batch", "model ms/batch p50", "model frames/s", "e2e ms/frame", "e2e frames/s",
           "speed-up"]


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The runnable rows, in units a person reads: ms per batch (model), ms per frame and frames/s (end-to-end)."""
    out = []
    auroc = any(r["image_auroc"] is not None for r in result["rows"])
    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        row = [r["backend"], r["precision"], str(r["batch"]),
               _f(r["model_ms"].get("p50"), ".2f"), _f(r["images_per_s"], ".1f"), _f(r["e2e_ms_per_frame"], ".2f"),
               _f(r["e2e_fps"], ".1f"), "base" if r["baseline"] else _f(r["speedup"], ".2f") + ("×" if r["speedup"] else "")]
        out.append(row + ([_f(r["image_auroc"], ".4f")] if auroc else []))
    return out


FRAME_COLUMNS = ["backend", "prec", "frame", "model ms", "host e2e ms", "host e2e fps", "device graph ms",
                 "device e2e ms", "device e2e fps", "device e2e / model fps"]


def frame_rows(result: dict[str, Any]) -> list[list[str]]:
    """Host path vs device frame path per row and frame size (batch-1 rows); model = the model graph alone."""
    out = []
    for r in result["rows"]:
        for size, e in (r.get("frames") or {}).items() if r["status"] == "ok" else ():
            model = r["model_ms"].get("p50")
            dev = e.get("device_e2e_ms")
            out.append([r["backend"] + (" (baseline)" if r["baseline"] else ""), r["precision"], size, _f(model),
                        _f(e["host_e2e_ms"]), _f(e["host_e2e_fps"], ".1f"), _f(e.get("device_graph_ms")),
                        _f(dev) if dev else e.get("device", "") + (" (below)" if e.get("device_error") else ""),
                        _f(e.get("device_e2e_fps"), ".1f"),
                        _f(model / dev) if dev and model else ""])
    return out


LOOP_COLUMNS = ["backend", "prec", "model ms p50", "loop frames/s", "loop / model fps", "verdict ms p50",
                "verdict ms p99", "verdict − model p50", "picture ms p50"]


def loop_rows(result: dict[str, Any]) -> list[list[str]]:
    """Batch-1 rows: the camera loop (overlay drawn for every frame) against the model alone, same backend."""
    out = []
    for r in result["rows"]:
        lp = r.get("loop") or {}
        if r["status"] != "ok" or not lp.get("fps") or not r["model_ms"].get("p50"):
            continue
        m50, v = r["model_ms"]["p50"], lp.get("verdict_ms", {})
        out.append([r["backend"], r["precision"], _f(m50), _f(lp["fps"], ".1f"), _f(lp["fps"] * m50 / 1e3),
                    _f(v.get("p50")), _f(v.get("p99")), _f(v["p50"] - m50 if v.get("p50") else None),
                    _f(lp.get("picture_ms", {}).get("p50"))])
    return out


def columns(result: dict[str, Any]) -> list[str]:
    return COLUMNS + (["AUROC"] if any(r["image_auroc"] is not None for r in result["rows"]) else [])


def not_run(result: dict[str, Any]) -> list[str]:
    """One line per reason a row did not run: which backend/precisions/batches and why."""
    groups: dict[tuple[str, str, str], tuple[list[str], list[int]]] = {}
    for r in result["rows"]:
        if r["status"] != "ok":
            precs, batches = groups.setdefault((r["backend"], r["status"], r["reason"]), ([], []))
            precs.append(r["precision"]) if r["precision"] not in precs else None
            batches.append(r["batch"]) if r["batch"] not in batches else None
    return [f"{be} {'/'.join(p)} b{','.join(map(str, b))}: {status} — {reason}"
            for (be, status, reason), (p, b) in groups.items()] + frame_path_notes(result)


def frame_path_notes(result: dict[str, Any]) -> list[str]:
    """One line per row and frame size whose device frame path did not run although the row did: why."""
    return [f"{r['backend']} {r['precision']} b{r['batch']} device frame path {size} (the row ran; host path "
            f"measured): {e['device']} — {e['device_error']}"
            for r in result["rows"] if r["status"] == "ok"
            for size, e in (r.get("frames") or {}).items() if e.get("device_error")]


def load_report(before: tuple[float, float, float], seconds: float) -> dict[str, Any]:
    """The machine's load over the run: load averages before/after and other processes using a lot of CPU."""
    after = os.getloadavg()
    me = psutil.Process()
    mine = {me.pid} | {c.pid for c in me.children(recursive=True)}
    procs = list(psutil.process_iter(["pid", "name"]))
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(0.5)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if p.pid not in mine and pct >= 20:
            busy.append({"pid": p.pid, "name": p.info["name"], "cpu_percent": pct})
    cores = os.cpu_count() or 1
    warn = after[0] > 1.5 * cores or bool(busy)  # bench itself keeps up to `cores` busy
    return {"loadavg_before": list(before), "loadavg_after": list(after), "cores": cores, "busy_processes": busy,
            "seconds": seconds, "busy": warn}


def default_folder(root: Path = Path("bench_results")) -> Path:
    """``bench_results/<host>_<YYYYmmdd-HHMMSS>/``."""
    host = platform.node().split(".")[0] or "machine"
    return Path(root) / f"{host}_{time.strftime('%Y%m%d-%H%M%S')}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    v = ", ".join(f"{k} {x}" for k, x in m["versions"].items())
    head = [f"# edge-stpm bench: {result['backbone']} {result['image_size']}²", "",
            head_line(result), "", *tiles_lines(result),
            f"Machine: {m['cpu']} ({m['cores']} cores); GPU: {m['gpu'] or 'none'}"
            + (f" (driver {m['driver']})" if m["driver"] else "") + f"; {v}.", "",
            f"{result['iters']} timed runs after {result['warmup']} warm-up runs. model = inference only (CUDA events for "
            "CUDA graphs, else wall clock incl. copies); host→host = uint8 batch on the host to map and score on the host; "
            f"end-to-end = a {result['frame_shape'][1]}×{result['frame_shape'][0]} frame resized, inferred, normalised and "
            f"overlaid, per frame. Speed-up = model img/s over the {result.get('baseline', 'PyTorch eager FP32')} baseline "
            "at the same batch.", "",
            "| " + " | ".join(columns(result)) + " |", "|" + "---|" * len(columns(result))]
    fr = frame_rows(result)
    tail = ([""] + ["Frame path (batch 1): host = fit, map back and colour on the host (OpenCV), device = the frame "
                    "graph does them where the model runs; e2e includes the finished overlay (bar, banner, contours "
                    "on NG); model = the model graph alone at its input size.", "",
                    "| " + " | ".join(FRAME_COLUMNS) + " |", "|" + "---|" * len(FRAME_COLUMNS)]
            + ["| " + " | ".join(r) + " |" for r in fr] if fr else [])
    lr = loop_rows(result)
    if lr:
        tail += ["", "The camera loop (batch 1, a source that always has a fresh frame, the overlay drawn for every "
                     "frame as when recording): frames/s and capture → verdict / → picture latency, beside the model "
                     "alone on the same backend.", "",
                 "| " + " | ".join(LOOP_COLUMNS) + " |", "|" + "---|" * len(LOOP_COLUMNS)] + \
            ["| " + " | ".join(r) + " |" for r in lr]
    pr = pipeline_rows(result)
    if pr:
        tail += ["", "Loop configurations (ONNX Runtime FP32, batch 1, 640×480, host path, the overlay drawn for every "
                     "frame): W worker threads × T ONNX Runtime threads each; model = the model alone called by W "
                     "threads at once; loop / best model = the loop's frames/s over the best model-alone frames/s of "
                     "these configurations; verdict − model = capture → verdict p50 minus the model's p50, same "
                     "configuration.", "",
                 "| " + " | ".join(PIPELINE_COLUMNS) + " |", "|" + "---|" * len(PIPELINE_COLUMNS)] + \
            ["| " + " | ".join(r) + " |" for r in pr]
    sr = source_rows(result)
    if sr:
        tail += ["", "The loop on real sources (ONNX Runtime, batch 1, no overlay): the source's own read / pixel "
                     "conversion cost per frame and capture → verdict (a software-triggered camera: trigger → verdict).",
                 "", "| " + " | ".join(SOURCE_COLUMNS) + " |", "|" + "---|" * len(SOURCE_COLUMNS)] + \
            ["| " + " | ".join(r) + " |" for r in sr]
    tail += [""] + [f"- {line}" for line in not_run(result)]
    load = result.get("load")
    if load:
        tail += ["", f"Load average {load['loadavg_before'][0]:.2f} before, {load['loadavg_after'][0]:.2f} after "
                     f"({load['cores']} cores); other busy processes: "
                     + (", ".join(f"{p['name']} {p['cpu_percent']:.0f}%" for p in load["busy_processes"]) or "none")
                     + (" — **the machine was busy: figures are pessimistic**" if load["busy"] else "")]
    return "\n".join(head + ["| " + " | ".join(r) + " |" for r in table_rows(result)] + tail) + "\n"


def save(result: dict[str, Any], folder: Path) -> Path:
    """``bench.json``, ``bench.md`` and (with matplotlib) ``bench.png`` into ``folder``; returns the folder."""
    folder = Path(folder)
    write_json(folder / "bench.json", result)
    write_text(folder / "bench.md", markdown(result))
    plot_path = folder / "bench.png"
    try:
        from edge_stpm.training.figures import bar_chart
    except ImportError:  # the runtime install has no matplotlib
        console.print(f"note: no chart {plot_path}: matplotlib is not installed (it comes with edge-stpm[train])")
        return folder
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    bar_chart([r["label"] for r in ok], [r["e2e_fps"] for r in ok], "end-to-end frames/s",
              f"{result['backbone']} {result['image_size']}² on {result['machine']['gpu'] or result['machine']['cpu']}",
              plot_path)
    return folder


BACKENDS = ("onnxruntime", "pytorch", "tensorrt")


def print_bench(out: Console, err: Console, model: Path, engine: Path | None, backend: str, precision: str,
                batch: str, size: int | None, data: Path | None, iters: int, warmup: int, threads: int | None,
                work: Path, frame_size: str, source: list[str] | None, source_frames: int, workers: str,
                out_dir: Path | None, quiet: bool) -> None:
    """``edge-stpm bench`` with its options as typed: checked (one UserError each), run, printed and saved."""
    be = _backends(backend)
    if iters < 3 or warmup < 0:
        raise UserError("--iters must be at least 3 and --warmup at least 0")
    _check_model(model, size)
    sizes = [parse_frame_size(x) for x in frame_size.split(",") if x.strip()]
    pool = _worker_pool(workers)
    r = bench(model, be, parse_precisions(precision), parse_ints(batch, "--batch"), iters, warmup, engine, data,
              work, threads, quiet, sizes, tuple(source or ()), source_frames, tuple(dict.fromkeys(pool)))
    print_result(out, err, r)
    folder = save(r, out_dir or default_folder())
    out.print(f"results: {folder}/ (bench.json, bench.md, bench.png)", highlight=False)


def _backends(text: str) -> list[str]:
    """--backend: a comma list of onnxruntime, pytorch, tensorrt."""
    be = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in be if x not in BACKENDS]
    if bad or not be:
        raise UserError(f"unknown backend {', '.join(bad) or text!r}; choose from onnxruntime, pytorch, tensorrt")
    return be


def _check_model(model: Path, size: int | None) -> None:
    """A checkpoint needs the training install; --size, when given, must be the model's input size."""
    if Path(model).suffix == ".pt":
        need_train("bench --model CHECKPOINT")
    meta = model_info(model)[1]
    if size is not None and size != meta["image_size"]:
        raise UserError(f"--size {size} differs from the model's input size {meta['image_size']}: train at that size")


def _worker_pool(text: str) -> tuple[int, ...]:
    """--workers: auto (1 and the cores), a comma list of worker counts, or '' (no loop configurations)."""
    pool = (1, available_cores()) if text.strip() == "auto" else tuple(parse_ints(text, "--workers")) if text.strip() \
        else ()
    if pool and max(pool) > RANGES["workers"][1]:
        raise UserError(f"--workers: at most {RANGES['workers'][1]} workers")
    return pool


def print_result(out: Console, err: Console, r: dict[str, Any]) -> None:
    """The main table and the model's head line, the frame-path, loop and source tables (those with rows), the rows
    not run, what the columns mean; a warning on ``err`` when the machine was busy."""
    out.print(_main_table(r))
    out.print(head_line(r), highlight=False, markup=False)
    _print_table(out, "frame path, batch 1: host (OpenCV fit/colour) vs device (frame graph); e2e incl. overlay",
                 FRAME_COLUMNS, frame_rows(r), ("backend", "prec", "frame"))
    _print_table(out, "the camera loop, batch 1, overlay drawn for every frame: vs the model alone", LOOP_COLUMNS,
                 loop_rows(r), ("backend", "prec"))
    _print_table(out, "loop configurations (ONNX Runtime FP32, batch 1, overlay for every frame): W workers × T "
                 "threads", PIPELINE_COLUMNS, pipeline_rows(r), ("workers × threads",))
    _print_table(out, "the loop on real sources (ONNX Runtime, batch 1, no overlay)", SOURCE_COLUMNS, source_rows(r),
                 ("source",))
    for line in not_run(r):
        out.print(f"  not run: {line}", highlight=False, markup=False)
    out.print(f"model = inference only (ms per batch); e2e = a {FRAME_SHAPE[1]}×{FRAME_SHAPE[0]} frame fitted, "
              f"inferred and overlaid (per frame); speed-up vs the {r['baseline']} baseline.", highlight=False)
    if r.get("tiles"):
        out.print(tiles_lines(r)[0] + " model = one input; e2e = the whole frame.", highlight=False)
    if r["load"]["busy"]:
        busy = ", ".join(f"{p['name']} {p['cpu_percent']:.0f}%" for p in r["load"]["busy_processes"]) \
            or "high load average"
        err.print(f"[yellow]warning:[/yellow] the machine was busy during the run ({escape(busy)}; load "
                  f"{r['load']['loadavg_after'][0]:.2f} on {r['load']['cores']} cores): figures are pessimistic")


def _main_table(r: dict[str, Any]) -> Table:
    m = r["machine"]
    t = Table(title=f"edge-stpm bench: {r['backbone']} {r['image_size']}² on {m['gpu'] or m['cpu']} "
                    f"({m['cores']} cores)", title_justify="left")
    for c in columns(r):
        t.add_column(c, justify="left" if c in ("backend", "prec") else "right", no_wrap=c == "backend")
    for row in table_rows(r):
        t.add_row(*row)
    return t


def _print_table(out: Console, title: str, cols: list[str], rows: list[list[str]], left: tuple[str, ...]) -> None:
    """A titled table of text rows (nothing when there are none); ``left`` columns left-aligned, the rest right."""
    if not rows:
        return
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c, justify="left" if c in left else "right")
    for row in rows:
        t.add_row(*row)
    out.print(t)
