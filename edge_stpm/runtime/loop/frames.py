"""What every frame source gives the loop: ``Frame`` and the ``Source`` interface (sources.py: OpenCV, folders;
basler.py: Basler cameras)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """A frame: running index, uint8 BGR image ``(H, W, 3)``, capture time (s, monotonic), read time (ms); in
    trigger mode the trigger's id; from an industrial camera what it reported (frame id, timestamp)."""

    index: int
    image: np.ndarray
    t_capture: float
    read_ms: float
    trigger_id: int | None = None
    camera: dict | None = None


class Source(ABC):
    """Base: ``read()`` returns the next Frame, or None at the end; ``end_reason`` says why it ended."""

    live = False
    end_reason = "end of stream"
    dropped = 0
    reconnects = 0
    ended = False  # True once read() has returned the end (a live source still reconnecting is not ended)
    fps: float | None = None  # frames per second when the source knows it (video files, most cameras)

    @abstractmethod
    def read(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None at the end."""

    def close(self) -> None:  # noqa: B027 — an optional hook: a no-op by default, not abstract
        pass
