"""Camera pixel formats (GenICam PFNC names) to the loop's uint8 BGR ``(H, W, 3)``.

Mono and packed colour formats are reshaped and reordered; Bayer mosaics are demosaiced with OpenCV (bilinear),
which was cheaper than pylon's format converter at 1024×1040 on our CPU (``benchmarks/camera_source.py``).
Formats of more than 8 bits are scaled to 8 bits by a right shift (12-bit 4095 → 255). No camera SDK is needed here,
so the conversions are tested against hand-made patterns without a camera.
"""
from __future__ import annotations

import cv2
import numpy as np

from edge_stpm.common.errors import UserError

# PFNC Bayer names give the colours of the first two pixels of the first row (BayerRG: R G / G B). OpenCV names
# its codes after the second row's second and third pixels, so PFNC RG is OpenCV's BG (checked by the tests).
_BAYER_CODE = {"RG": cv2.COLOR_BayerBG2BGR, "GR": cv2.COLOR_BayerGB2BGR, "GB": cv2.COLOR_BayerGR2BGR,
               "BG": cv2.COLOR_BayerRG2BGR}
_BITS = {"8": 8, "10": 10, "12": 12, "16": 16}


def supported(fmt: str) -> bool:
    try:
        _parse(fmt)
        return True
    except UserError:
        return False


def _parse(fmt: str) -> tuple[str, int, str]:
    """(family, bits, detail): mono | bayer (detail = pattern) | rgb | bgr | bgra."""
    f = fmt.replace("Packed", "").replace("packed", "")
    if f.startswith("Mono") and f[4:] in _BITS:
        return "mono", _BITS[f[4:]], ""
    if f.startswith("Bayer") and f[5:7] in _BAYER_CODE and f[7:] in _BITS:
        return "bayer", _BITS[f[7:]], f[5:7]
    for fam in ("BGRA", "RGB", "BGR"):
        if f.startswith(fam) and f[len(fam):] in _BITS:
            return fam.lower(), _BITS[f[len(fam):]], ""
    raise UserError(f"pixel format {fmt} is not supported (Mono8/10/12/16, Bayer**8/10/12/16, RGB8, BGR8, BGRA8, "
                    "RGB16)")


def to_bgr(a: np.ndarray, fmt: str) -> np.ndarray:
    """A camera buffer as a numpy array (pypylon's ``GetArray()``: ``(H, W)`` for mono and Bayer, ``(H, W, C)`` for
    packed colour; uint16 for formats of more than 8 bits) → contiguous uint8 BGR ``(H, W, 3)``."""
    family, bits, pattern = _parse(fmt)
    if family == "bayer":
        # demosaic at full depth, then reduce: OpenCV demosaics uint8 and uint16 mosaics alike
        a = cv2.cvtColor(np.ascontiguousarray(a), _BAYER_CODE[pattern])
        return _to8(a, bits)
    a = _to8(a, bits)
    if family == "mono":
        return cv2.cvtColor(a if a.ndim == 2 else a[..., 0], cv2.COLOR_GRAY2BGR)
    if family == "rgb":
        return cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    if family == "bgra":
        return np.ascontiguousarray(a[..., :3])
    return np.ascontiguousarray(a)


def _to8(a: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return a if a.dtype == np.uint8 else a.astype(np.uint8)
    return (a >> (bits - 8)).astype(np.uint8)


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer mosaic a sensor with this PFNC pattern (RG, GR, GB, BG) would record of ``bgr`` — for tests and the
    emulator: one colour sample per pixel."""
    if pattern not in _BAYER_CODE:
        raise UserError(f"unknown Bayer pattern {pattern!r}")
    chan = {"R": 2, "G": 1, "B": 0}
    top, bottom = pattern, {"RG": "GB", "GR": "BG", "GB": "RG", "BG": "GR"}[pattern]
    out = np.empty(bgr.shape[:2], dtype=bgr.dtype)
    for dy, row in enumerate((top, bottom)):
        for dx, c in enumerate(row):
            out[dy::2, dx::2] = bgr[dy::2, dx::2, chan[c]]
    return out
