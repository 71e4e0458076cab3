"""ONNX Runtime backend: a graph from ``edge-stpm export``; providers chosen automatically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_stpm.common.errors import UserError
from edge_stpm.common.threads import available_cores
from edge_stpm.contract.artifacts import FRAME_INPUTS, INPUT_NAME, frame_onnx_path, read_onnx_metadata
from edge_stpm.runtime.backends.base import Backend, FrameRunner

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str], allow_gpu: bool = True) -> list[str]:
    """TensorRT › CUDA › CPU among ``available``; CPU only when ``allow_gpu`` is False."""
    wanted = PREFERRED if allow_gpu else ("CPUExecutionProvider",)
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


def open_session(path: Path, threads: int | None, allow_gpu: bool) -> tuple[Any, str]:
    """An ONNX Runtime session (all graph optimisations, no spinning threads) and a description of its device."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = choose_providers(ort.get_available_providers(), allow_gpu)
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise UserError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
    device = {"TensorrtExecutionProvider": "GPU (TensorRT EP)", "CUDAExecutionProvider": "GPU (CUDA EP)"}.get(
        session.get_providers()[0], f"CPU ({opts.intra_op_num_threads} threads)")
    return session, device


class OnnxFrameRunner(FrameRunner):
    """A frame graph (``frame_<W>x<H>_<precision>.onnx``) in ONNX Runtime."""

    name = "onnxruntime frame graph"

    def __init__(self, path: Path, threads: int | None = None, allow_gpu: bool = True) -> None:
        self.metadata = read_onnx_metadata(Path(path))
        if self.metadata.get("kind") != "frame":
            raise UserError(f"{path} is not a frame graph")
        self.session, self.device = open_session(Path(path), threads, allow_gpu)
        self.width, self.height = int(self.metadata["frame"]["width"]), int(self.metadata["frame"]["height"])
        self.scale = np.zeros(1, np.float32)

    def run(self, frame: np.ndarray, index_scale: float) -> tuple[np.ndarray, float, np.ndarray]:
        self.scale[0] = index_scale
        amap, score, shown = self.session.run(None, {FRAME_INPUTS[0]: np.ascontiguousarray(frame[None], np.uint8),
                                                     FRAME_INPUTS[1]: self.scale})
        return amap[0, 0], float(score[0]), shown[0]


class OnnxBackend(Backend):
    name = "onnxruntime"
    concurrent = True  # InferenceSession.run is thread-safe; each call runs on its caller's thread + intra-op pool

    def __init__(self, path: Path, threads: int | None = None, allow_gpu: bool = True) -> None:
        self.path, self.threads, self.allow_gpu = Path(path), threads, allow_gpu
        self.metadata = read_onnx_metadata(Path(path))
        if self.metadata.get("kind") == "frame":
            raise UserError(f"{path} is a frame graph (camera frames of one size): run the bundle or model_*.onnx; "
                            "the frame graph is used by itself when the camera's size matches")
        self.session, self.device = open_session(Path(path), threads, allow_gpu)
        self.providers = self.session.get_providers()
        self.image_size = int(self.metadata["image_size"])
        self.batch = int(self.metadata["batch"])
        self.precision = self.metadata["precision"]

    @property
    def accelerated(self) -> bool:
        return self.providers[0] != "CPUExecutionProvider"

    def frame_runner(self, height: int, width: int) -> FrameRunner | None:
        path = frame_onnx_path(self.path.parent, self.precision, width, height)
        return OnnxFrameRunner(path, self.threads, self.allow_gpu) if path.is_file() else None

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.uint8)})
        return amap[:, 0], score
