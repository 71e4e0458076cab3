"""Image AUROC, pixel AUROC and AUPRO up to a false-positive rate of 0.3 (standard MVTec AD definition)."""
from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import roc_curve

from edge_stpm.runtime.learn.auroc import auroc


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC of image scores ``(N,)`` against labels ``(N,)`` (1 = defective); None if one class."""
    return auroc(scores, labels)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float | None:
    """AUROC over all pixels: maps ``(N, H, W)`` float, masks ``(N, H, W)`` bool; None if one class."""
    return auroc(np.asarray(maps, np.float32), np.asarray(masks, bool))


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of an ROC curve, for figures."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def components(masks: np.ndarray) -> np.ndarray:
    """8-connected component labels of each mask, numbered globally from 1: int32 ``(N, H, W)``, 0 = normal."""
    out = np.zeros(masks.shape, np.int32)
    offset = 0
    for i, m in enumerate(np.asarray(masks, bool)):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        lab = lab.astype(np.int32)
        lab[lab > 0] += offset
        out[i] = lab
        offset += n - 1
    return out


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap against the pixel false-positive rate, at every distinct threshold (descending).

    PRO at a threshold is the mean, over all connected ground-truth regions of all images, of the fraction
    of the region's pixels at or above the threshold; FPR is the fraction of normal pixels at or above it.
    Returns (fpr, pro), both starting at 0.
    """
    labels = components(masks).ravel()
    scores = np.asarray(maps, np.float32).ravel()
    n_regions = int(labels.max())
    normal = labels == 0
    n_normal = int(normal.sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError("PRO needs at least one defect region and one normal pixel")
    sizes = np.bincount(labels, minlength=n_regions + 1).astype(np.float64)
    weight = np.where(normal, 0.0, 1.0 / (sizes[labels] * n_regions))
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    fpr = np.cumsum(normal[order]) / n_normal
    pro = np.cumsum(weight[order])
    last = np.r_[s[1:] != s[:-1], True]
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3) -> float | None:
    """Area under the PRO–FPR curve from 0 to ``max_fpr``, divided by ``max_fpr`` (1.0 = perfect).

    None when there is no defect region. The curve is linearly interpolated at ``max_fpr``.
    """
    if not np.asarray(masks, bool).any():
        return None
    fpr, pro = pro_curve(maps, masks)
    return integrate_to(fpr, pro, max_fpr) / max_fpr


def integrate_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under the piecewise-linear curve (x ascending) from x[0] to ``x_max``."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    if xs[-1] < x_max and keep.sum() < len(x):
        j = int(keep.sum())
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        yi = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.r_[xs, x_max], np.r_[ys, yi]
    return float(np.trapezoid(ys, xs))
