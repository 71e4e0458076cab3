"""TensorRT engine backend: tensors bound by name, pinned host + device buffers through cuda-python,
one stream, async copies, ``execute_async_v3``. Needs TensorRT and a GPU; everything else is checked first."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..export.artifacts import INPUT_NAME, OUTPUT_NAMES
from .base import Backend


@dataclass(frozen=True)
class TensorSpec:
    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype


def check_io(specs: list[TensorSpec], batch: int, size: int) -> dict[str, TensorSpec]:
    """Check an engine's I/O tensors against the edge-stpm contract; returns them by name."""
    by_name = {s.name: s for s in specs}
    want = {INPUT_NAME: ((batch, size, size, 3), np.uint8, True),
            OUTPUT_NAMES[0]: ((batch, 1, size, size), np.float32, False),
            OUTPUT_NAMES[1]: ((batch,), np.float32, False)}
    for name, (shape, dtype, is_input) in want.items():
        s = by_name.get(name)
        if s is None:
            raise UserError(f"engine has no tensor {name!r} (has {', '.join(by_name)}): rebuild it from an edge-stpm graph")
        if s.shape != shape or np.dtype(s.dtype) != np.dtype(dtype) or s.is_input != is_input:
            raise UserError(f"engine tensor {name!r} is {s.shape} {np.dtype(s.dtype)}, expected {shape} {np.dtype(dtype)}")
    return by_name


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path) -> None:
        from ..export.tensorrt import deserialize
        from .cuda import HostDeviceBuffer, Stream

        trt, self.engine, self.metadata = deserialize(Path(path))
        self.image_size = int(self.metadata["image_size"])
        self.batch = int(self.metadata["batch"])
        self.precision = self.metadata["precision"]
        self.device = f"{self.metadata['gpu_name']} (TensorRT {trt.__version__})"
        specs = []
        for i in range(self.engine.num_io_tensors):
            n = self.engine.get_tensor_name(i)
            specs.append(TensorSpec(n, self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                                    tuple(self.engine.get_tensor_shape(n)), np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))))
        by_name = check_io(specs, self.batch, self.image_size)
        self.context = self.engine.create_execution_context()
        self.stream = Stream()
        self.buffers = {n: HostDeviceBuffer(s.shape, s.dtype) for n, s in by_name.items()}
        for n, buf in self.buffers.items():
            if by_name[n].is_input:
                self.context.set_input_shape(n, buf.shape)
            self.context.set_tensor_address(n, buf.device)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inp = self.buffers[INPUT_NAME]
        np.copyto(inp.host, batch)
        inp.to_device(self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for n in OUTPUT_NAMES:
            self.buffers[n].to_host(self.stream)
        self.stream.synchronize()
        return self.buffers[OUTPUT_NAMES[0]].host[:, 0].copy(), self.buffers[OUTPUT_NAMES[1]].host.copy()

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.free()
        self.stream.close()
