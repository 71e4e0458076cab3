"""CPU threads without busy-waiting, torch-free.

PyTorch's OpenMP workers spin while they wait; when another process holds a core they burn the time slices the
working thread needs and a 50 ms MobileNetV2 batch takes seconds. ``OMP_WAIT_POLICY=PASSIVE`` (and
``GOMP_SPINCOUNT=0`` for GNU OpenMP) make them sleep instead. OpenMP reads these when the library loads, so
``edge_stpm/__init__`` calls ``quiet_openmp()`` before anything imports torch; a user's own setting wins.
ONNX Runtime's own pool is told not to spin in ``runtime/backends/onnxruntime_backend.py``.
"""
from __future__ import annotations

import os


def quiet_openmp() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", "0")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's limit), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
