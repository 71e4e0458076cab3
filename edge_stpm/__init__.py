"""edge-stpm: real-time visual inspection with Student-Teacher Feature Pyramid Matching."""

from edge_stpm.common.threads import quiet_openmp as _quiet_openmp

_quiet_openmp()  # before torch (if installed) loads OpenMP: workers sleep instead of spinning on busy machines

__version__ = "0.1.0"
