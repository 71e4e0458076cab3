"""CUDA buffers and streams through cuda-python (``cuda.bindings``): pinned host memory, device memory,
async copies, every return code checked. Imports lazily so machines without CUDA can import edge-stpm."""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from edge_stpm.common.errors import UserError


def cudart() -> Any:
    """The CUDA runtime module of cuda-python: ``cuda.bindings.runtime`` (12.x/13.x) or ``cuda.cudart`` (11.8)."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
            return runtime
        except ImportError:
            raise UserError("cuda-python is not installed: pip install \"edge-stpm[cuda12]\" (CUDA 12 driver, "
                            "JetPack 6) or \"edge-stpm[cuda13]\" (CUDA 13 driver)") from None


def check(result: Any) -> Any:
    """Unpack a cuda-python call result ``(err, *values)``; raise on any error code."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        name = rt.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        if "InsufficientDriver" in name:
            raise UserError(f"CUDA error {name}: this cuda-python needs a newer driver than the installed one; "
                            "on CUDA 12 drivers (JetPack 6) install \"edge-stpm[cuda12]\" (cuda-bindings 12.x)")
        raise RuntimeError(f"CUDA error {int(err)}: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_info(device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a GPU, e.g. ``{'name': 'NVIDIA H100 80GB HBM3', 'compute_capability': '9.0'}``."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


class Stream:
    """One CUDA stream (non-blocking); ``handle`` is the integer TensorRT and copies take."""

    def __init__(self) -> None:
        rt = cudart()
        self.stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
        self.handle = int(self.stream)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        if self.stream is not None:
            check(cudart().cudaStreamDestroy(self.stream))
            self.stream = None


class HostDeviceBuffer:
    """A pinned host array and a device allocation of the same shape and dtype, with async copies."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        rt = cudart()
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.host_ptr = check(rt.cudaMallocHost(self.nbytes))
        self.device_ptr = check(rt.cudaMalloc(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        # a ctypes array exports the buffer protocol; numpy's stubs do not accept it
        self.host: np.ndarray = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)  # type: ignore[call-overload]

    @property
    def device(self) -> int:
        return int(self.device_ptr)

    def to_device(self, stream: Stream) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.device_ptr, self.host_ptr, self.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.stream))

    def to_host(self, stream: Stream) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.host_ptr, self.device_ptr, self.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.stream))

    def free(self) -> None:
        rt = cudart()
        if self.device_ptr is not None:
            check(rt.cudaFree(self.device_ptr))
            self.device_ptr = None
        if self.host_ptr is not None:
            self.host = None  # type: ignore[assignment]  # released with the pinned memory: no use after free()
            check(rt.cudaFreeHost(self.host_ptr))
            self.host_ptr = None
