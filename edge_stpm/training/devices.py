"""Device and CPU-thread choices shared by training, evaluation and the PyTorch backend (imports torch)."""
from __future__ import annotations

import ctypes.util

import psutil
import torch

from edge_stpm.common.errors import UserError
from edge_stpm.common.threads import available_cores


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """Set PyTorch's CPU threads: ``threads``, else the cores this process may run on. Returns the count."""
    n = int(threads) if threads else available_cores()
    if n < 1:
        raise UserError("--threads must be at least 1")
    torch.set_num_threads(n)
    return n


LOW_MEMORY_BELOW_GB = 12.0


def low_memory_default(device: torch.device) -> bool:
    """Activation checkpointing by default only on CPU machines with under 12 GB of RAM (an 8 GB Jetson-class
    box): it cuts training's peak memory about 2.5× but makes each step about 2× slower."""
    if device.type != "cpu":
        return False
    return bool(psutil.virtual_memory().total / 2**30 < LOW_MEMORY_BELOW_GB)


def return_freed_memory() -> None:
    """glibc: two malloc arenas and trim freed memory at once, so the large per-step activation buffers go back
    to the OS instead of piling up per thread (a no-op where mallopt does not exist)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 2)   # M_ARENA_MAX
        libc.mallopt(-1, 0)   # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
