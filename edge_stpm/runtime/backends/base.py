"""The one small Backend interface every runtime implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class BackendUnavailable(Exception):
    """A remote backend (a Triton server) did not answer this request; the loop counts its frames as failed and
    goes on — the next request tries again."""


class FrameRunner(ABC):
    """The device frame path for one camera frame size (``framepath.FramePipeline`` as the backend runs it): one
    uint8 frame in, the model-resolution map, the score and the colour-blended overlay out."""

    name: str = "frame path"
    width: int
    height: int

    @abstractmethod
    def run(self, frame: np.ndarray, index_scale: float) -> tuple[np.ndarray, float, np.ndarray]:
        """uint8 BGR ``(H, W, 3)`` and ``overlay.index_scale(pixel threshold)`` → (float32 map ``(S, S)``, score,
        uint8 BGR overlay ``(H, W, 3)``)."""

    def close(self) -> None:  # noqa: B027 — an optional hook: a no-op by default, not abstract
        """Release device resources (no-op where there are none)."""


class Backend(ABC):
    """Loads one model file and turns uint8 BGR batches ``(B, S, S, 3)`` into maps ``(B, S, S)`` and scores ``(B,)``.

    Attributes: ``name`` (backend), ``image_size`` (S), ``batch`` (static batch, or None if any),
    ``precision``, ``device`` (text), ``metadata`` (thresholds, fit mode, backbone...). ``concurrent``: ``infer``
    may be called from several threads at once (the loop's ``--workers``).
    """

    name: str = "backend"
    concurrent: bool = False
    image_size: int
    batch: int | None
    precision: str
    device: str
    metadata: dict[str, Any]

    @abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``(B, S, S, 3)`` → (float32 maps ``(B, S, S)``, float32 scores ``(B,)``)."""

    def infer_any(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like ``infer`` for any number of images: splits into and pads up to the static batch."""
        b = self.batch
        if b is None or len(images) == b:
            return self.infer(images)
        maps, scores = [], []
        for i in range(0, len(images), b):
            chunk = images[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            m, s = self.infer(chunk)
            maps.append(m[:n])
            scores.append(s[:n])
        return np.concatenate(maps), np.concatenate(scores)

    @property
    def accelerated(self) -> bool:
        """Whether the model runs on an accelerator (GPU / DLA), where the frame path pays off; on a CPU, OpenCV's
        fit and colour on the host are cheaper than the same work as graph ops."""
        return False

    def frame_runner(self, height: int, width: int) -> FrameRunner | None:
        """The device frame path for frames of this size, or None where this backend has none (the caller then
        fits and colours on the host)."""
        return None

    def describe(self) -> str:
        return f"{self.name} {self.precision} on {self.device} (batch {self.batch or 'any'}, {self.image_size}²)"

    def close(self) -> None:  # noqa: B027 — an optional hook: a no-op by default, not abstract
        """Release device resources (no-op where there are none)."""
