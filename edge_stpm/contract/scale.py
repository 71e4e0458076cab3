"""One score scale for every head and every path (host, frame graph, Triton): 0 = a typical good part, 1 = the
threshold.

A raw image score ``s`` or map value ``m`` is shown, compared and sent as ``u = (s − zero) / (threshold − zero)``.
``zero`` is the calibration's good median — the held-out good images' image-score p50 for the score, their maps'
pixel p50 for the map — stored by calibration as ``thresholds["score_scale"] = {"kind": "good", "image_zero",
"pixel_zero"}``. So a typical good part scores about 0 whatever the head (the memory head's good parts sat at 0.92 of
the threshold on the old scale), the overlay's colour from 0.5 starts halfway from typical good to the threshold, and
a review band of 0.5 means that same halfway.

Models calibrated before this scale (no ``score_scale`` in their thresholds) carry the **old** scale, kind
``threshold``: zero = 0, so ``u = s / threshold`` as before. Their metadata says so; ``edge-stpm calibrate`` and a
re-export move a checkpoint to the new one.

A threshold factor ``f`` (``--threshold``, a recipe's ``threshold``) puts the threshold at ``u = f`` of the stored
scale: raw = zero + f · (stored threshold − zero); on the old scale that is f × the threshold, as it always was.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

GOOD = "good"            # 0 = the calibration's good median, 1 = the threshold
THRESHOLD = "threshold"  # the old scale: 0 = a zero score, 1 = the threshold
KINDS = (GOOD, THRESHOLD)


@dataclass(frozen=True)
class ScoreScale:
    """The scale of one model at one threshold factor: raw zero and raw threshold ("one"), image and pixel."""

    kind: str
    image_zero: float
    image_one: float
    pixel_zero: float
    pixel_one: float

    @classmethod
    def of(cls, thresholds: Mapping[str, Any], factor: float = 1.0) -> "ScoreScale":
        """The scale a model's ``thresholds`` (metadata) carry, with the threshold moved to ``factor`` on it."""
        ti, tp = float(thresholds["image"]), float(thresholds["pixel"])
        zi, zp, kind = 0.0, 0.0, THRESHOLD
        s = thresholds.get("score_scale")
        if isinstance(s, Mapping) and s.get("kind") == GOOD:
            zi, zp = float(s["image_zero"]), float(s["pixel_zero"])
            kind = GOOD
            if not (zi < ti and zp < tp):  # a zero at or above its threshold makes no scale: the old one
                zi, zp, kind = 0.0, 0.0, THRESHOLD
        f = float(factor)
        return cls(kind, zi, zi + f * (ti - zi), zp, zp + f * (tp - zp))

    def image(self, raw: float) -> float:
        """A raw image score on this scale."""
        return (float(raw) - self.image_zero) / (self.image_one - self.image_zero)

    def raw_image(self, u: float) -> float:
        """The raw image score at ``u`` on this scale."""
        return self.image_zero + float(u) * (self.image_one - self.image_zero)

    def pixel(self, amap: np.ndarray) -> np.ndarray:
        """A raw map on this scale (float32, same shape)."""
        return ((np.asarray(amap, np.float32) - np.float32(self.pixel_zero))
                / np.float32(self.pixel_one - self.pixel_zero))

    def raw_pixel(self, u: float) -> float:
        """The raw map value at ``u`` on this scale."""
        return self.pixel_zero + float(u) * (self.pixel_one - self.pixel_zero)

    def describe(self) -> dict[str, Any]:
        """What a record row, a message or a report says of the scale its scores are on."""
        return {"kind": self.kind, "image_zero": self.image_zero, "image_threshold": self.image_one,
                "pixel_zero": self.pixel_zero, "pixel_threshold": self.pixel_one}


def good_scale(image_scores: np.ndarray, pixels: np.ndarray) -> dict[str, Any]:
    """The ``score_scale`` entry calibration stores: the held-out good images' score p50 and pixel p50."""
    return {"kind": GOOD, "image_zero": float(np.percentile(np.asarray(image_scores, np.float64), 50)),
            "pixel_zero": float(np.median(np.asarray(pixels, np.float32)))}


def kind_of(thresholds: Mapping[str, Any]) -> str:
    """Which scale a model's thresholds carry (``good`` or the old ``threshold``)."""
    return ScoreScale.of(thresholds).kind
