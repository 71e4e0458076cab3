"""The small public API for line software: ``Inspector.load(path).inspect(frame)``.

>>> insp = Inspector.load("engines/mytile")        # a checkpoint, .onnx, .engine or export folder
>>> r = insp.inspect(cv2.imread("part.png"))       # uint8 BGR, any size
>>> r.ng, r.normalised_score, r.anomaly_map.shape  # verdict, score / threshold, (H, W) float32
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .overlay import ALPHA, inspection_overlay
from .data import fit_image, unfit_map
from .errors import UserError
from .runtime.base import Backend
from .runtime.select import open_backend


@dataclass
class InspectionResult:
    """One frame's result. ``anomaly_map`` is float32 ``(H, W)`` at the frame's size; ``score`` is the raw image
    score, ``normalised_score`` = score / image threshold (1.0 = threshold), ``ng`` = normalised ≥ 1;
    ``image_threshold`` and ``pixel_threshold`` are the raw thresholds in force."""

    score: float
    normalised_score: float
    ng: bool
    anomaly_map: np.ndarray
    pixel_threshold: float
    image_threshold: float = float("nan")

    @property
    def verdict(self) -> str:
        return "NG" if self.ng else "OK"

    def overlay(self, frame: np.ndarray, alpha: float = ALPHA, text: Sequence[str] = ()) -> np.ndarray:
        """The frame with colour near/above the threshold, contours on NG only, a colour bar and the banner."""
        return inspection_overlay(frame, self.anomaly_map, self.pixel_threshold, self.ng, self.normalised_score,
                                  self.image_threshold, list(text), alpha)


class Inspector:
    """Frames in, verdicts out, over any backend. Thresholds come from the model's metadata; ``threshold`` scales
    them, normalised like every score shown (1.2 = 1.2 × the stored thresholds, image and pixel alike)."""

    def __init__(self, backend: Backend, threshold: float | None = None) -> None:
        self.backend = backend
        md = backend.metadata
        thr = md["thresholds"]
        scale = 1.0 if threshold is None else float(threshold)
        if not scale > 0:
            raise UserError(f"--threshold must be positive (1.0 = the stored threshold), not {threshold}")
        self.threshold_scale = scale
        self.image_threshold = float(thr["image"]) * scale
        self.pixel_threshold = float(thr["pixel"]) * scale
        self.size = int(md["image_size"])
        self.fit = md.get("fit", "stretch")

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", threshold: float | None = None,
             precision: str | None = None, threads: int | None = None, verbose: bool = False) -> "Inspector":
        return cls(open_backend(Path(path), backend, precision, threads=threads, verbose=verbose), threshold)

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """A uint8 BGR frame of any size → the model input ``(S, S, 3)``."""
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        return fit_image(frame, self.size, self.fit)

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        return self.inspect_batch([frame])[0]

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        batch = np.stack([self.prepare(f) for f in frames])
        maps, scores = self.backend.infer_any(batch)
        return [self.result(f, m, s) for f, m, s in zip(frames, maps, scores)]

    def result(self, frame: np.ndarray, amap: np.ndarray, score: float) -> InspectionResult:
        norm = float(score) / self.image_threshold
        return InspectionResult(float(score), norm, norm >= 1.0, unfit_map(amap, frame.shape[:2], self.fit),
                                self.pixel_threshold, self.image_threshold)

    def close(self) -> None:
        self.backend.close()
