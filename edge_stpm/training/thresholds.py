"""Thresholds from good images only, score normalisation (1.0 = threshold), and the F1-optimal threshold."""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_stpm.contract.errors import UserError
from edge_stpm.contract.options import DEFAULT_THRESHOLD_K, PIXEL_THRESHOLD_K

METHODS = ("logsigma", "percentile", "sigma")
DEFAULT_IMAGE_Q = 99.5
DEFAULT_PIXEL_Q = 99.9
DEFAULT_K = 3.0


def default_k(head: str) -> float:
    """The image threshold's k for a head (``contract.options.DEFAULT_THRESHOLD_K``)."""
    return DEFAULT_THRESHOLD_K.get(head, DEFAULT_K)


def good_threshold(values: np.ndarray, method: str = "logsigma", q: float | None = None, k: float = DEFAULT_K,
                   default_q: float = DEFAULT_IMAGE_Q) -> float:
    """Threshold from a sample of good-image values.

    logsigma (default): exp(mean + k·std of log values) — anomaly scores are positive products of three
    distances and close to log-normal, and with a few dozen held-out images this extrapolates the tail
    where a high percentile can only return the largest value seen. percentile: the ``q``-th percentile.
    sigma: mean + k·std.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise UserError("no good-image scores to set a threshold from")
    if method == "percentile":
        return float(np.percentile(values, default_q if q is None else q))
    if method == "sigma":
        return float(values.mean() + k * values.std())
    if method == "logsigma":
        logs = np.log(np.maximum(values, 1e-30))
        return float(np.exp(logs.mean() + k * logs.std()))
    raise UserError(f"unknown threshold method {method!r}; choose one of {', '.join(METHODS)}")


def calibrate(image_scores: np.ndarray, maps: np.ndarray, method: str = "logsigma", k: float = DEFAULT_K,
              image_q: float = DEFAULT_IMAGE_Q, pixel_q: float = DEFAULT_PIXEL_Q, max_pixels: int = 2_000_000,
              seed: int = 0, pixel_k: float = PIXEL_THRESHOLD_K) -> dict[str, Any]:
    """Image and pixel thresholds from held-out good images (``k`` for the image threshold, ``pixel_k`` for the
    pixel threshold, with logsigma / sigma).

    image_scores: ``(N,)`` image scores; maps: ``(N, H, W)`` anomaly maps. Pixels are subsampled to at
    most ``max_pixels`` (seeded). Returns the dict stored in checkpoints as ``thresholds``.
    """
    scores = np.asarray(image_scores, np.float64)
    pixels = np.asarray(maps, np.float32).ravel()
    if pixels.size > max_pixels:
        pixels = np.random.default_rng(seed).choice(pixels, max_pixels, replace=False)
    image_t = good_threshold(scores, method, image_q, k)
    pixel_t = good_threshold(pixels, method, pixel_q, pixel_k, default_q=DEFAULT_PIXEL_Q)
    return {
        "method": method,
        "k": k if method in ("sigma", "logsigma") else None,
        "pixel_k": pixel_k if method in ("sigma", "logsigma") else None,
        "image_q": image_q if method == "percentile" else None,
        "pixel_q": pixel_q if method == "percentile" else None,
        "image": image_t,
        "pixel": pixel_t,
        "n_good": int(scores.size),
        "good_scores": {
            "mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
            "p50": float(np.percentile(scores, 50)), "p95": float(np.percentile(scores, 95)),
            "p99": float(np.percentile(scores, 99)), "max": float(scores.max()),
        },
    }


def f1_optimal(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The threshold maximising F1 on a labelled set (score ≥ threshold = defective).

    Refuses a set with only one class: there the F1 threshold is meaningless (it collapses to the
    lowest score and flags everything), which is what peer tools silently do.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise UserError("an F1-optimal threshold needs both good and defective images in the labelled set")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp, s = tp[last], fp[last], s[last]
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1))
    return {"threshold": float(s[i]), "f1": float(f1[i]), "precision": float(precision[i]), "recall": float(recall[i])}


def precision_recall_f1(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Image-level precision, recall and F1 with NG = score ≥ threshold."""
    pred = np.asarray(scores) >= threshold
    y = np.asarray(labels).astype(bool)
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": float(threshold), "precision": p, "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn,
            "tn": int((~pred & ~y).sum())}
