"""A new look of the same part — a lamp that aged, a lens that moved — estimated from a few reviewed good parts and
carried to the good parts the model already knows, so that a memory update learns the new look on all of them.

The look is a defocus, then a tone curve, both at the **images' own resolution** (as the camera made them, before
the model's resize: a blur at 256² followed by nothing is not a blur at the camera's size followed by the resize,
and the teacher's features tell the two apart — ``benchmarks/results/learn/drift/RULE.md`` addendum 5). For each
Gaussian σ of ``SIGMAS`` (pixels of the image as stored) the old images are blurred and a tone curve is fitted by
per-channel histogram matching (the table that maps the pooled pixel distribution of the blurred old images onto
that of the new ones); the σ kept is the one whose blurred, tone-mapped old images come closest to the new images'
sharpness (mean absolute Laplacian). Blurring first matters: a blur narrows the histogram, and a tone curve fitted on
sharp images would take that for a loss of contrast. Both are global: a drift that moves only part of the image is
not a look. Images are uint8 BGR ``(H, W, 3)`` of any size, in lists or stacked arrays. Torch-free (numpy, OpenCV)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

SIGMAS = tuple(round(0.125 * i, 3) for i in range(25))  # 0 … 3 px of the image as stored

Images = Sequence[np.ndarray]


@dataclass(frozen=True)
class Look:
    lut: np.ndarray  # (256, 3) uint8: blurred old value → new value, per channel (B, G, R)
    sigma: float     # Gaussian blur in pixels of the image as stored (0: none), applied before the tone curve

    def apply_one(self, image: np.ndarray) -> np.ndarray:
        """One uint8 ``(H, W, 3)`` image in the new look."""
        return _tone_one(_blur_one(image, self.sigma), self.lut)

    def apply(self, images: Images) -> list[np.ndarray]:
        """The images in the new look."""
        return [self.apply_one(im) for im in images]

    def describe(self) -> dict[str, float]:
        mid = float(self.lut[128].astype(float).mean())
        return {"sigma_px": float(self.sigma), "mid_grey_to": round(mid, 1)}  # plain floats: a checkpoint keeps them


def _hist(images: Images, c: int) -> np.ndarray:
    return np.sum([np.bincount(im[..., c].ravel(), minlength=256) for im in images], axis=0).astype(np.float64)


def _match(h_old: np.ndarray, h_new: np.ndarray) -> np.ndarray:
    """The 256-entry table mapping the value distribution of histogram ``h_old`` onto ``h_new``'s."""
    c_old, c_new = np.cumsum(h_old) / h_old.sum(), np.cumsum(h_new) / h_new.sum()
    return np.clip(np.round(np.interp(c_old, c_new, np.arange(256))), 0, 255).astype(np.uint8)


def sharpness(images: Images) -> float:
    """Mean absolute Laplacian of the grey images: what defocus lowers."""
    return float(np.mean([np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_32F)).mean()
                          for im in images]))


def _blur_one(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image


def _tone_one(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.ascontiguousarray(lut.reshape(256, 1, 3)))  # one table per channel


def blur(images: Images, sigma: float) -> list[np.ndarray]:
    return [_blur_one(im, sigma) for im in images]


def tone(images: Images, lut: np.ndarray) -> list[np.ndarray]:
    return [_tone_one(im, lut) for im in images]


def estimate(old: Images, new: Images, on_step: Callable[[int, int], None] | None = None) -> Look:
    """The look that carries ``old`` images to ``new`` ones (see the module doc); ``on_step(σ tried, of)``."""
    target = sharpness(new)
    h_new = [_hist(new, c) for c in range(3)]
    best: tuple[float, Look] | None = None
    for i, s in enumerate(SIGMAS):
        if on_step is not None:
            on_step(i, len(SIGMAS))
        b = blur(old, s)
        lut = np.stack([_match(_hist(b, c), h_new[c]) for c in range(3)], axis=1)
        miss = abs(sharpness(tone(b, lut)) - target)
        if best is None or miss < best[0]:
            best = (miss, Look(lut, float(s)))
    assert best is not None
    return best[1]
