"""TensorRT engine backend: self-describing engine files, compatibility checks, tensors bound by name, pinned
host + device buffers through cuda-python, one stream, async copies, ``execute_async_v3``. Needs TensorRT and a
GPU; everything else is checked first so that ``--backend auto`` can fall back with a reason."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.contract.artifacts import (
    FRAME_INPUTS,
    FRAME_OUTPUTS,
    INPUT_NAME,
    OUTPUT_NAMES,
    frame_engine_path,
    read_engine,
)
from edge_stpm.runtime.backends.base import Backend, FrameRunner
from edge_stpm.runtime.backends.cuda import HostDeviceBuffer, Stream, gpu_info

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


def check_io(specs: list[TensorSpec], want: dict[str, tuple[tuple[int, ...], Any, bool]]) -> dict[str, TensorSpec]:
    """Check an engine's I/O tensors against the edge-stpm contract (name → shape, dtype, is input); returns them
    by name."""
    by_name = {s.name: s for s in specs}
    for name, (shape, dtype, is_input) in want.items():
        s = by_name.get(name)
        if s is None:
            raise UserError(f"engine has no tensor {name!r} (has {', '.join(by_name)}): rebuild it from an "
                            "edge-stpm graph")
        if s.shape != shape or np.dtype(s.dtype) != np.dtype(dtype) or s.is_input != is_input:
            raise UserError(f"engine tensor {name!r} is {s.shape} {np.dtype(s.dtype)}, "
                            f"expected {shape} {np.dtype(dtype)}")
    return by_name


def model_io(batch: int, size: int) -> dict[str, tuple[tuple[int, ...], Any, bool]]:
    return {INPUT_NAME: ((batch, size, size, 3), np.uint8, True),
            OUTPUT_NAMES[0]: ((batch, 1, size, size), np.float32, False),
            OUTPUT_NAMES[1]: ((batch,), np.float32, False)}


def frame_io(height: int, width: int, size: int) -> dict[str, tuple[tuple[int, ...], Any, bool]]:
    return {FRAME_INPUTS[0]: ((1, height, width, 3), np.uint8, True), FRAME_INPUTS[1]: ((1,), np.float32, True),
            FRAME_OUTPUTS[0]: ((1, 1, size, size), np.float32, False), FRAME_OUTPUTS[1]: ((1,), np.float32, False),
            FRAME_OUTPUTS[2]: ((1, height, width, 3), np.uint8, False)}


class _Engine:
    """A deserialized engine with one execution context, one stream and pinned host + device buffers per tensor."""

    def __init__(self, path: Path, want: Any) -> None:
        trt, engine, self.metadata = deserialize(Path(path))
        self.trt_version = trt.__version__
        self.engine = engine
        specs = []
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            specs.append(TensorSpec(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                                    tuple(engine.get_tensor_shape(n)),
                                    np.dtype(trt.nptype(engine.get_tensor_dtype(n)))))
        self.specs = check_io(specs, want(self.metadata))
        self.context = engine.create_execution_context()
        self.stream = Stream()
        self.buffers = {n: HostDeviceBuffer(s.shape, s.dtype) for n, s in self.specs.items()}
        for n, buf in self.buffers.items():
            if self.specs[n].is_input:
                self.context.set_input_shape(n, buf.shape)
            self.context.set_tensor_address(n, buf.device)

    def run(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> None:
        """Copy ``inputs`` up, execute, copy ``outputs`` down, wait."""
        for n, value in inputs.items():
            np.copyto(self.buffers[n].host, value)
            self.buffers[n].to_device(self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for n in outputs:
            self.buffers[n].to_host(self.stream)
        self.stream.synchronize()

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.free()
        self.stream.close()


class TensorRTFrameRunner(FrameRunner):
    """A frame engine (``frame_<W>x<H>_<precision>.engine``, built by ``build-engine --frame-size``): one upload of
    the camera frame, one download of map, score and overlay."""

    name = "tensorrt frame engine"

    def __init__(self, path: Path) -> None:
        self.eng = _Engine(path, lambda md: frame_io(int(md["frame"]["height"]), int(md["frame"]["width"]),
                                                     int(md["image_size"])))
        md = self.eng.metadata
        if md.get("kind") != "frame":
            raise UserError(f"{path} is not a frame engine")
        self.width, self.height = int(md["frame"]["width"]), int(md["frame"]["height"])
        self.scale = np.zeros(1, np.float32)

    def run(self, frame: np.ndarray, index_scale: float) -> tuple[np.ndarray, float, np.ndarray]:
        self.scale[0] = index_scale
        self.eng.run({FRAME_INPUTS[0]: frame[None], FRAME_INPUTS[1]: self.scale}, FRAME_OUTPUTS)
        b = self.eng.buffers
        return (b[FRAME_OUTPUTS[0]].host[0, 0].copy(), float(b[FRAME_OUTPUTS[1]].host[0]),
                b[FRAME_OUTPUTS[2]].host[0].copy())

    def close(self) -> None:
        self.eng.close()


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.eng = _Engine(self.path, lambda md: model_io(int(md["batch"]), int(md["image_size"])))
        self.metadata = self.eng.metadata
        if self.metadata.get("kind") == "frame":
            self.eng.close()
            raise UserError(f"{path} is a frame engine: run the bundle; it is used by itself for frames of its size")
        self.image_size = int(self.metadata["image_size"])
        self.batch = int(self.metadata["batch"])
        self.precision = self.metadata["precision"]
        self.device = f"{self.metadata['gpu_name']} (TensorRT {self.eng.trt_version})"

    @property
    def accelerated(self) -> bool:
        return True

    def frame_runner(self, height: int, width: int) -> FrameRunner | None:
        path = frame_engine_path(self.path.parent, self.precision, width, height)
        return TensorRTFrameRunner(path) if path.is_file() and runnable(path)[0] else None

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.eng.run({INPUT_NAME: batch}, OUTPUT_NAMES)
        b = self.eng.buffers
        return b[OUTPUT_NAMES[0]].host[:, 0].copy(), b[OUTPUT_NAMES[1]].host.copy()

    def close(self) -> None:
        self.eng.close()
