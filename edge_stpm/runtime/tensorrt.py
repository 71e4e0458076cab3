"""TensorRT engine backend: self-describing engine files, compatibility checks, tensors bound by name, pinned
host + device buffers through cuda-python, one stream, async copies, ``execute_async_v3``. Needs TensorRT and a
GPU; everything else is checked first so that ``--backend auto`` can fall back with a reason."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import INPUT_NAME, OUTPUT_NAMES, read_engine
from ..errors import UserError
from .base import Backend

INSTALL_HINT = ("TensorRT is not installed: desktop: pip install \"edge-stpm[tensorrt-cu12]\" (CUDA 12 driver) or "
                "\"edge-stpm[tensorrt-cu13]\" (CUDA 13 driver); Jetson: JetPack's python3-libnvinfer (see the README). "
                "The ONNX graphs run now with: edge-stpm run --model {onnx}")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(INSTALL_HINT.format(onnx="<bundle folder or model_fp32.onnx>")) from None
    return trt


def have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def trt_major_minor(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        raise UserError(f"cannot read TensorRT version {version!r}") from None
    return major, minor


def check_engine(md: dict[str, Any], trt_version: str, gpu: dict[str, Any], path: Path) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU, saying to rebuild."""
    if md.get("format") != "edge-stpm-engine":
        raise UserError(f"{path} has no edge-stpm engine metadata: rebuild with edge-stpm build-engine")
    if md.get("tensorrt_version") != trt_version:
        raise UserError(f"{path} was built by TensorRT {md.get('tensorrt_version')}, this is TensorRT {trt_version}: "
                        f"rebuild it here with edge-stpm build-engine")
    if md.get("compute_capability") != gpu["compute_capability"] or md.get("gpu_name") != gpu["name"]:
        raise UserError(f"{path} was built for {md.get('gpu_name')} (sm {md.get('compute_capability')}), this GPU is "
                        f"{gpu['name']} (sm {gpu['compute_capability']}): rebuild it here with edge-stpm build-engine")


def runnable(path: Path) -> tuple[bool, str]:
    """Whether this machine can run the engine at ``path`` (TensorRT and cuda-python installed, same TensorRT
    version and GPU as the build), and if not, why — without deserializing it."""
    from .cuda import gpu_info

    if not have_tensorrt():
        return False, "TensorRT is not installed"
    import tensorrt as trt

    try:
        md, _ = read_engine(path)
        check_engine(md, trt.__version__, gpu_info(), Path(path))
    except UserError as exc:
        return False, str(exc)
    except Exception as exc:  # cuda-python missing or no usable GPU/driver
        return False, f"no usable CUDA GPU ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return True, f"TensorRT {trt.__version__} and a matching GPU"


def deserialize(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Load an engine after checking its metadata against this TensorRT and GPU: (trt module, engine, metadata)."""
    from .cuda import gpu_info

    md, blob = read_engine(path)
    trt = import_tensorrt()
    check_engine(md, trt.__version__, gpu_info(), Path(path))
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise UserError(f"TensorRT could not deserialize {path}: rebuild it with edge-stpm build-engine")
    return trt, engine, md


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
        from .cuda import HostDeviceBuffer, Stream

        trt, engine, self.metadata = deserialize(Path(path))
        self.engine = engine
        self.image_size = int(self.metadata["image_size"])
        self.batch = int(self.metadata["batch"])
        self.precision = self.metadata["precision"]
        self.device = f"{self.metadata['gpu_name']} (TensorRT {trt.__version__})"
        specs = []
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            specs.append(TensorSpec(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                                    tuple(engine.get_tensor_shape(n)), np.dtype(trt.nptype(engine.get_tensor_dtype(n)))))
        by_name = check_io(specs, self.batch, self.image_size)
        context = engine.create_execution_context()
        self.context = context
        self.stream = Stream()
        self.buffers = {n: HostDeviceBuffer(s.shape, s.dtype) for n, s in by_name.items()}
        for n, buf in self.buffers.items():
            if by_name[n].is_input:
                context.set_input_shape(n, buf.shape)
            context.set_tensor_address(n, buf.device)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        context = self.context
        inp = self.buffers[INPUT_NAME]
        np.copyto(inp.host, batch)
        inp.to_device(self.stream)
        if not context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for n in OUTPUT_NAMES:
            self.buffers[n].to_host(self.stream)
        self.stream.synchronize()
        return self.buffers[OUTPUT_NAMES[0]].host[:, 0].copy(), self.buffers[OUTPUT_NAMES[1]].host.copy()

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.free()
        self.stream.close()
