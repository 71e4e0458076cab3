"""A new look of the same part — a lamp that aged, a lens that moved — estimated from a few reviewed good parts and
carried to the good parts the model already knows, so that a memory update learns the new look on all of them.

The look is a defocus, then a tone curve. For each Gaussian σ of ``SIGMAS`` (pixels at model resolution) the old
images are blurred and a tone curve is fitted by per-channel histogram matching (the table that maps the pooled
pixel distribution of the blurred old images onto that of the new ones); the σ kept is the one whose blurred,
tone-mapped old images come closest to the new images' sharpness (mean absolute Laplacian). Blurring first matters:
a blur narrows the histogram, and a tone curve fitted on sharp images would take that for a loss of contrast. Both
are global: a drift that moves only part of the image is not a look.
Torch-free (numpy, OpenCV)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIGMAS = tuple(round(0.25 * i, 2) for i in range(13))  # 0 … 3 px


@dataclass(frozen=True)
class Look:
    lut: np.ndarray  # (256, 3) uint8: blurred old value → new value, per channel (B, G, R)
    sigma: float     # Gaussian blur at model resolution, px (0: none), applied before the tone curve

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` images in the new look."""
        return tone(blur(images, self.sigma), self.lut)

    def describe(self) -> dict[str, float]:
        mid = self.lut[128].astype(float).mean()
        return {"sigma_px": self.sigma, "mid_grey_to": round(mid, 1)}


def _match(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The 256-entry table mapping ``old``'s value distribution onto ``new``'s (both uint8, one channel, pooled)."""
    h_old = np.bincount(old.ravel(), minlength=256).astype(np.float64)
    h_new = np.bincount(new.ravel(), minlength=256).astype(np.float64)
    c_old, c_new = np.cumsum(h_old) / h_old.sum(), np.cumsum(h_new) / h_new.sum()
    return np.clip(np.round(np.interp(c_old, c_new, np.arange(256))), 0, 255).astype(np.uint8)


def sharpness(images: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey images: what defocus lowers."""
    return float(np.mean([np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_32F)).mean()
                          for im in images]))


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return images
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in images])


def tone(images: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return np.stack([np.stack([cv2.LUT(im[..., c], lut[:, c]) for c in range(3)], axis=-1) for im in images])


def estimate(old: np.ndarray, new: np.ndarray) -> Look:
    """The look that carries ``old`` uint8 ``(n, H, W, 3)`` images to ``new`` ones (see the module doc)."""
    target = sharpness(new)
    best: tuple[float, Look] | None = None
    for s in SIGMAS:
        b = blur(old, s)
        lut = np.stack([_match(b[..., c], new[..., c]) for c in range(3)], axis=1)
        miss = abs(sharpness(tone(b, lut)) - target)
        if best is None or miss < best[0]:
            best = (miss, Look(lut, float(s)))
    assert best is not None
    return best[1]
