"""Where the defect is: segmentation figures at one pixel threshold — numpy and OpenCV only (no torch, no
scikit-learn), so any side may import it.

Shapes and units: ``maps`` are float anomaly maps ``(N, H, W)`` (or one ``(H, W)``) in the model's map units (the
unit of the stored pixel threshold); ``masks`` are the true defect masks, bool ``(N, H, W)``; a ``threshold`` is in
map units; areas are pixels of the map's grid (the metrics resolution of ``evaluate.test_inputs``); shares and
ratios are plain fractions (1.0 = 100 %, an area ratio of 2.0 = twice the true area).

- ``seg_f1``: precision, recall and F1 of the binarised maps over all pixels of all test images (MVTec AD 2's
  SegF1: one threshold, pixel counts accumulated over the whole test set, good images included).
- ``region_figures`` / ``region_medians``: per defective image the predicted region's area over the true defect
  area and their IoU, then the median per defect type (a missed defect counts 0 for both).
- ``coloured_shares`` / ``coloured_summary``: on good images, the share of pixels the live overlay colours.

AU-PRO at any FPR limit (MVTec AD 2's 0.05 beside the usual 0.3) is ``metrics.aupro(maps, masks, max_fpr)``;
``evaluate.aupro_at`` computes several limits from one PRO curve.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edge_stpm.runtime.overlay import NEAR

PATCH_STRIDE_PX = 8  # the memory head's patch stride (level 2) in map pixels: the finest outline its map can draw
RULES = ("touching", "all")


def seg_f1(maps: np.ndarray, masks: np.ndarray, threshold: float) -> dict[str, Any]:
    """SegF1 at ``threshold``: pixels with map ≥ threshold are predicted defective; TP / FP / FN are counted over
    every pixel of every image (good images add only FP), then precision TP/(TP+FP), recall TP/(TP+FN), F1 =
    2TP/(2TP+FP+FN). An undefined figure (nothing predicted, or no true defect pixel) is None."""
    pred = np.asarray(maps, np.float32) >= np.float32(threshold)
    truth = np.asarray(masks, bool)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return {"threshold": float(threshold), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "tp": tp, "fp": fp, "fn": fn}


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def widen(mask: np.ndarray, px: int) -> np.ndarray:
    """The mask ``(H, W)`` bool dilated by ``px`` pixels on every side (a (2px+1)² square: every pixel within
    Chebyshev distance ``px`` of the defect) — a thin defect scored at the resolution a strided map can draw."""
    mask = np.asarray(mask, bool)
    if px <= 0:
        return mask
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def predicted_region(pred: np.ndarray, mask: np.ndarray, rule: str = "touching") -> np.ndarray:
    """The predicted region ``(H, W)`` bool of one defective image, from ``pred`` (map ≥ threshold) and its true
    ``mask``, both ``(H, W)`` bool.

    ``touching`` (default): the 8-connected components of ``pred`` that share at least one pixel with the mask —
    the outline an inspector sees drawn on this defect. Stray blobs elsewhere are left out on purpose: they are a
    different failure (false colour), counted by ``seg_f1``'s precision and by ``coloured_shares`` on good parts;
    counting them here would make a tight outline beside one far speck look wide. ``all``: every predicted pixel.
    """
    pred = np.asarray(pred, bool)
    if rule == "all":
        return pred
    if rule != "touching":
        raise ValueError(f"unknown region rule {rule!r}; choose one of {', '.join(RULES)}")
    n, lab = cv2.connectedComponents(pred.astype(np.uint8), connectivity=8)
    hit = np.unique(lab[np.asarray(mask, bool) & pred])
    return np.isin(lab, hit[hit > 0]) if n > 1 else pred


def region_figures(amap: np.ndarray, mask: np.ndarray, threshold: float, rule: str = "touching",
                   widen_px: int = 0) -> dict[str, Any] | None:
    """One defective image: ``area_ratio`` = predicted region area / true area (pixels / pixels) and ``iou`` =
    |region ∩ true| / |region ∪ true|, against the true mask widened by ``widen_px`` (0 = as drawn). ``missed``
    when no predicted pixel lies on the (widened) mask: then area_ratio and iou are 0 whatever ``rule``. None when
    the mask is empty (nothing to compare with). ``amap``, ``mask``: ``(H, W)``."""
    truth = widen(mask, widen_px)
    area = int(np.count_nonzero(truth))
    if area == 0:
        return None
    pred = np.asarray(amap, np.float32) >= np.float32(threshold)
    if not (pred & truth).any():
        return {"area_ratio": 0.0, "iou": 0.0, "missed": True}
    region = predicted_region(pred, truth, rule)
    inter = int(np.count_nonzero(region & truth))
    union = int(np.count_nonzero(region | truth))
    return {"area_ratio": float(np.count_nonzero(region) / area), "iou": inter / union, "missed": False}


def region_medians(maps: np.ndarray, masks: np.ndarray, defects: np.ndarray, threshold: float,
                   rule: str = "touching", widen_px: int = 0) -> dict[str, dict[str, Any]]:
    """Per defect type (``defects`` ``(N,)`` names of the defective images ``maps`` / ``masks`` ``(N, H, W)``):
    ``n`` images scored, ``no_mask`` images skipped for an empty mask, ``missed`` images with no predicted pixel on
    the defect, and the medians of ``region_figures``' area ratio and IoU (a missed defect counts 0)."""
    out: dict[str, dict[str, Any]] = {}
    defects = np.asarray(defects)
    for d in sorted(set(defects.tolist())):
        figs = [region_figures(maps[i], masks[i], threshold, rule, widen_px) for i in np.flatnonzero(defects == d)]
        scored = [f for f in figs if f is not None]
        out[d] = {"n": len(scored), "no_mask": len(figs) - len(scored),
                  "missed": sum(f["missed"] for f in scored),
                  "area_ratio_median": _median([f["area_ratio"] for f in scored]),
                  "iou_median": _median([f["iou"] for f in scored])}
    return out


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def coloured_shares(maps: np.ndarray, pixel_threshold: float, fraction: float = NEAR,
                    zero: float = 0.0) -> np.ndarray:
    """Per image, the share (0–1) of its pixels at or above ``fraction`` on the score scale (raw map ≥ zero +
    fraction · (``pixel_threshold`` − ``zero``); ``zero`` the scale's pixel zero, 0 on the old scale): float64 ``(N,)``.

    With ``fraction`` = ``overlay.NEAR`` (0.5) this is what the live overlay colours: its opacity is 0 below 0.5 and
    positive above (``overlay.alpha_lut``); its 256-bin table starts colour at bin 64, i.e. from 0.498 on the scale,
    so the two differ only for values within 0.4 % below 0.5."""
    maps = np.asarray(maps, np.float32)
    maps = maps.reshape(-1, *maps.shape[-2:])
    on = maps >= np.float32(float(zero) + fraction * (float(pixel_threshold) - float(zero)))
    return on.reshape(len(maps), -1).mean(axis=1, dtype=np.float64)


def coloured_summary(maps: np.ndarray, pixel_threshold: float, fractions: tuple[float, ...] = (NEAR, 0.8, 1.0),
                     zero: float = 0.0) -> dict[str, dict[str, Any]]:
    """On good images ``(N, H, W)``: for each fraction of the pixel threshold (key ``f"{fraction:g}"``) the
    median and 90th percentile (linear interpolation) over the images of ``coloured_shares``, and ``n``."""
    out: dict[str, dict[str, Any]] = {}
    for f in fractions:
        s = coloured_shares(maps, pixel_threshold, f, zero)
        out[f"{f:g}"] = {"n": int(len(s)), "median": float(np.median(s)) if len(s) else None,
                         "p90": float(np.percentile(s, 90)) if len(s) else None}
    return out
