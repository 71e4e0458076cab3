"""Image folders in MVTec-AD layout or plain folders of good images; loading and fitting to the model input.

Images are handled as uint8 BGR arrays ``(H, W, 3)`` exactly as OpenCV and cameras deliver them; colour
order and normalisation happen inside the inspection graph (see ``model.InspectionPipeline``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from edge_stpm.common.errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FIT_MODES = ("stretch", "pad", "crop")
GOOD = "good"


@dataclass(frozen=True)
class LabelledImage:
    """One test image: its path, defect type ('good' for defect-free), label 0/1 and mask path if any."""

    path: Path
    defect: str
    label: int
    mask: Path | None


def list_images(folder: Path) -> list[Path]:
    """Sorted image files directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no such folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def good_images(root: Path) -> list[Path]:
    """Training images: ``root/train/good`` in MVTec layout, else the images directly in ``root``."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    folder = root / "train" / GOOD if (root / "train" / GOOD).is_dir() else root
    paths = list_images(folder)
    if not paths:
        raise UserError(f"no images in {folder} (expected {root}/train/good/*.png or a folder of images)")
    return paths


def labelled_test_images(root: Path) -> list[LabelledImage]:
    """Test images of an MVTec-layout folder: ``root/test/<type>/*`` with
    ``root/ground_truth/<type>/<stem>_mask.png``."""
    root = Path(root)
    test = root / "test"
    if not test.is_dir():
        raise UserError(f"no test split in {root} (expected {test}/good and {test}/<defect>/)")
    items: list[LabelledImage] = []
    for sub in sorted(p for p in test.iterdir() if p.is_dir()):
        for path in list_images(sub):
            if sub.name == GOOD:
                items.append(LabelledImage(path, GOOD, 0, None))
            else:
                mask = root / "ground_truth" / sub.name / f"{path.stem}_mask.png"
                items.append(LabelledImage(path, sub.name, 1, mask if mask.exists() else None))
    if not items:
        raise UserError(f"no test images under {test}")
    return items


MIN_IMAGE_SIDE = 8  # pixels: smaller images carry no inspectable texture (and 1-pixel ones broke fitting)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8 BGR ``(H, W, 3)`` as a viewer shows it: grayscale and palette become 3
    channels, alpha is dropped, the EXIF orientation is applied, and 16-bit samples are scaled by their depth
    (65535 → 255, the same for every image: never stretched per image). UserError for anything unreadable or
    with a side under ``MIN_IMAGE_SIDE`` pixels."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise UserError(f"image not found: {path}")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None:
        raise UserError(f"cannot read image (corrupt, not an image, or over OpenCV's size limit): {path}")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:  # float TIFF/EXR: taken as 0..1
        img = (np.clip(np.nan_to_num(img.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if min(img.shape[:2]) < MIN_IMAGE_SIDE:
        raise UserError(f"image {img.shape[1]}×{img.shape[0]} pixels is too small to inspect (at least "
                        f"{MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE}): {path}")
    return img


def crop_roi(img: np.ndarray, roi: tuple[int, int, int, int] | None, what: str = "the frame") -> np.ndarray:
    """The ``roi`` (x, y, w, h in pixels) of ``img`` (a view), or ``img`` itself; UserError if it lies outside."""
    if not roi:
        return img
    x, y, w, h = roi
    out = img[y : y + h, x : x + w]
    if out.size == 0:
        raise UserError(f"--roi {roi} lies outside {what} ({img.shape[1]}x{img.shape[0]})")
    return out


def fit_image(img: np.ndarray, size: int, mode: str = "stretch", interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Fit an image ``(H, W[, C])`` to ``(size, size[, C])``.

    stretch: resize ignoring aspect ratio; pad: keep aspect, pad the short side by edge reflection;
    crop: keep aspect, centre-crop the long side.
    """
    if mode not in FIT_MODES:
        raise UserError(f"unknown fit mode {mode!r}; choose one of {', '.join(FIT_MODES)}")
    h, w = img.shape[:2]
    if mode == "stretch" or h == w:
        return cv2.resize(img, (size, size), interpolation=interpolation)
    if mode == "crop":
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        return cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=interpolation)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(img, (nw, nh), interpolation=interpolation)
    top, left = (size - nh) // 2, (size - nw) // 2
    return cv2.copyMakeBorder(small, top, size - nh - top, left, size - nw - left, cv2.BORDER_REFLECT_101)


def fit_mask(mask: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """Fit a mask exactly like its image; returns bool ``(size, size)``. Padding counts as background."""
    m = (mask > 127).astype(np.uint8) * 255
    if mode == "pad" and mask.shape[0] != mask.shape[1]:
        h, w = m.shape[:2]
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = (size - nh) // 2, (size - nw) // 2
        out = np.zeros((size, size), np.uint8)
        out[top : top + nh, left : left + nw] = small
        return out > 127
    return fit_image(m, size, mode, interpolation=cv2.INTER_LINEAR) > 127


def read_mask(item: LabelledImage, size: int, mode: str = "stretch") -> np.ndarray:
    """Ground-truth mask of a test item at model resolution, bool ``(size, size)``; all False for good images."""
    if item.mask is None:
        return np.zeros((size, size), bool)
    m = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise UserError(f"cannot read mask: {item.mask}")
    return fit_mask(m, size, mode)


def _fit_into(out: np.ndarray, i: int, img: np.ndarray, size: int, mode: str, tiles: Any) -> None:
    n = tiles.count if tiles is not None else 1
    out[i * n : (i + 1) * n] = fit_image(img, size, mode)[None] if tiles is None else tiles.split(img, size, mode)


def fit_images(images: Sequence[np.ndarray], size: int, mode: str = "stretch", tiles: Any = None) -> np.ndarray:
    """Decoded uint8 BGR images of any size fitted as ``load_images`` fits files: ``(N, size, size, 3)``, or with a
    tile grid every image's tiles in a row."""
    n = tiles.count if tiles is not None else 1
    out = np.empty((len(images) * n, size, size, 3), np.uint8)
    for i, img in enumerate(images):
        _fit_into(out, i, img, size, mode, tiles)
    return out


def load_images(
    paths: Sequence[Path], size: int, mode: str = "stretch", on_done: Callable[[int], None] | None = None,
    tiles: Any = None,
) -> np.ndarray:
    """Decode and fit ``paths`` in parallel threads; returns uint8 BGR ``(N, size, size, 3)``, or with a
    ``contract.tiles.TileGrid`` every image's tiles in a row, ``(N·T, size, size, 3)``."""
    if not paths:
        raise UserError("no images to load")
    n = tiles.count if tiles is not None else 1
    out = np.empty((len(paths) * n, size, size, 3), np.uint8)

    def one(i: int) -> int:
        _fit_into(out, i, read_image(paths[i]), size, mode, tiles)
        return i

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(one, range(len(paths))):
            if on_done:
                on_done(1)
    return out


def unfit_map(amap: np.ndarray, shape: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """Map a model-resolution map ``(S, S)`` back onto an image of ``shape`` (H, W), inverting ``fit_image``.

    Pixels of the image the model did not see (outside the centre crop) get 0.
    """
    h, w = shape
    s = amap.shape[0]
    if mode == "stretch" or h == w:
        return cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    if mode == "crop":
        side = min(h, w)
        out = np.zeros((h, w), amap.dtype)
        y0, x0 = (h - side) // 2, (w - side) // 2
        out[y0 : y0 + side, x0 : x0 + side] = cv2.resize(amap, (side, side), interpolation=cv2.INTER_LINEAR)
        return out
    scale = s / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (s - nh) // 2, (s - nw) // 2
    return cv2.resize(amap[top : top + nh, left : left + nw], (w, h), interpolation=cv2.INTER_LINEAR)
