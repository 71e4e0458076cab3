"""ONNX Runtime backend: a graph from ``edge-stpm export``; providers chosen automatically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..threads import available_cores
from ..artifacts import INPUT_NAME, read_onnx_metadata
from .base import Backend

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str], allow_gpu: bool = True) -> list[str]:
    """TensorRT › CUDA › CPU among ``available``; CPU only when ``allow_gpu`` is False."""
    wanted = PREFERRED if allow_gpu else ("CPUExecutionProvider",)
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, allow_gpu: bool = True) -> None:
        import onnxruntime as ort

        self.metadata = read_onnx_metadata(Path(path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or available_cores()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(ort.get_available_providers(), allow_gpu)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise UserError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        self.providers = self.session.get_providers()
        self.image_size = int(self.metadata["image_size"])
        self.batch = int(self.metadata["batch"])
        self.precision = self.metadata["precision"]
        self.device = {"TensorrtExecutionProvider": "GPU (TensorRT EP)", "CUDAExecutionProvider": "GPU (CUDA EP)"}.get(
            self.providers[0], f"CPU ({opts.intra_op_num_threads} threads)")

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.uint8)})
        return amap[:, 0], score
