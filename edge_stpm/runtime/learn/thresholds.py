"""Thresholds from good images only, score normalisation (1.0 = threshold), and the F1-optimal threshold."""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.contract.options import DEFAULT_THRESHOLD_K, PIXEL_THRESHOLD_K
from edge_stpm.contract.scale import good_scale

METHODS = ("logsigma", "percentile", "sigma")
DEFAULT_IMAGE_Q = 99.5
DEFAULT_PIXEL_Q = 99.9
DEFAULT_K = 3.0
PIXEL_METHODS = ("segf1", "p999")  # pixel-threshold-only methods (RULE_R4.md P1, P2); the image threshold keeps METHODS
# Fewer held-out good images than this and the thresholds are not to be trusted: on magnetic tile (the memory head's
# defaults, 3 seeds; benchmarks/results/r4/small_sets, RULE_R4.md addendum 17) 40 good images (8 held out) called
# 9.7 % of new good parts NG, 80 (16 held out) 6.9 %, 714 (143 held out) 3.8 %.
MIN_HELD_OUT = 16
SEGF1_CANDIDATES = 200  # P1: candidate pixel thresholds, quantiles of the held-out good pixels from p50 to the max
P999_Q = 99.9  # P2: the percentile of the held-out good pixels


def few_held_out(n: int) -> str | None:
    """The warning ``train`` and ``fit`` give when the thresholds come from fewer than ``MIN_HELD_OUT`` held-out good
    images (None otherwise): what that cost where it was measured, and what to do."""
    if n >= MIN_HELD_OUT:
        return None
    return (f"the thresholds come from only {n} held-out good image{'s' if n != 1 else ''} (fewer than "
            f"{MIN_HELD_OUT}): with the memory head on magnetic tile, 40 good images (8 held out) called 9.7 % of new "
            "good parts NG and caught 54 % of the defects, against 3.8 % and 89 % with 714; add good images (about "
            f"{MIN_HELD_OUT * 5} give {MIN_HELD_OUT} held out)")


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
              seed: int = 0, pixel_k: float = PIXEL_THRESHOLD_K, pixel_method: str | None = None,
              synthetic: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Image and pixel thresholds from held-out good images (``k`` for the image threshold, ``pixel_k`` for the
    pixel threshold, with logsigma / sigma).

    image_scores: ``(N,)`` image scores; maps: ``(N, H, W)`` anomaly maps. Pixels are subsampled to at
    most ``max_pixels`` (seeded). Returns the dict stored in checkpoints as ``thresholds``.
    ``pixel_method`` (None: the pixel threshold by ``method`` and ``pixel_k``, as always) sets the pixel threshold
    alone from all held-out pixels (``pixel_threshold``); ``synthetic`` = (maps, masks) of synthetic anomalies of
    these images, needed by ``segf1``. The result then also has ``pixel_method`` (and ``pixel_segf1``).
    """
    scores = np.asarray(image_scores, np.float64)
    pixels = np.asarray(maps, np.float32).ravel()
    chosen = None if pixel_method is None else pixel_threshold(pixels, pixel_method, synthetic)
    if pixels.size > max_pixels:
        pixels = np.random.default_rng(seed).choice(pixels, max_pixels, replace=False)
    image_t = good_threshold(scores, method, image_q, k)
    pixel_t = (good_threshold(pixels, method, pixel_q, pixel_k, default_q=DEFAULT_PIXEL_Q) if chosen is None
               else chosen.pop("threshold"))
    out = {
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
        # the one score scale (contract/scale.py): 0 = these good images' median score / pixel, 1 = the threshold
        "score_scale": good_scale(scores, pixels),
    }
    if chosen is not None:  # the pixel threshold's own method: pixel_k / pixel_q no longer describe it
        out |= {"pixel_k": None, "pixel_q": None, "pixel_method": pixel_method}
        out |= {"pixel_segf1": chosen} if pixel_method == "segf1" else {}
    return out


def pixel_threshold(pixels: np.ndarray, method: str,
                    synthetic: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The pixel threshold (map units) by a pixel-only method from held-out good pixel values (any shape):
    ``p999`` their 99.9th percentile; ``segf1`` the SegF1 optimum on ``synthetic`` = (maps ``(M, H, W)``, masks
    ``(M, H, W)`` bool) among ``segf1_candidates`` (``segf1_threshold``). Returns ``threshold`` and, for segf1,
    the F1 / precision / recall there and the candidates' range."""
    if method not in PIXEL_METHODS:
        raise UserError(f"unknown pixel threshold method {method!r}; choose one of {', '.join(PIXEL_METHODS)}")
    pixels = np.asarray(pixels, np.float32).ravel()
    if pixels.size == 0:
        raise UserError("no good-image pixels to set a pixel threshold from")
    if method == "p999":
        return {"threshold": float(np.percentile(pixels, P999_Q))}
    if synthetic is None:
        raise UserError("the segf1 pixel threshold needs synthetic anomalies (maps and masks) of the held-out images")
    return segf1_threshold(pixels, *synthetic)


def segf1_candidates(good_pixels: np.ndarray, n: int = SEGF1_CANDIDATES) -> np.ndarray:
    """``n`` candidate pixel thresholds (map units, float32, ascending): the quantiles of the good pixel values at
    ``n`` evenly spaced levels from 0.5 (their p50) to 1.0 (their max), both included."""
    q = np.quantile(np.asarray(good_pixels, np.float64).ravel(), np.linspace(0.5, 1.0, n))
    return np.maximum.accumulate(q.astype(np.float32))


def segf1_curve(maps: np.ndarray, masks: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
    """SegF1 at each candidate threshold at once: map ≥ threshold (compared in float32, as
    ``segmetrics.seg_f1``) = predicted defective; TP / FP / FN over every pixel of ``maps`` ``(M, H, W)`` against
    ``masks`` (bool, same shape). Returns int64 ``tp``, ``fp``, ``fn`` and float64 ``f1``, ``precision``,
    ``recall`` per candidate (an undefined ratio is 0)."""
    values = np.asarray(maps, np.float32).ravel()
    truth = np.asarray(masks, bool).ravel()
    if values.shape != truth.shape:
        raise UserError(f"maps {np.shape(maps)} and masks {np.shape(masks)} differ in shape")
    pos, neg = np.sort(values[truth]), np.sort(values[~truth])
    c = np.asarray(candidates, np.float32)
    tp = (pos.size - np.searchsorted(pos, c, "left")).astype(np.int64)
    fp = (neg.size - np.searchsorted(neg, c, "left")).astype(np.int64)
    fn = pos.size - tp
    ratio = lambda a, b: np.divide(a, b, out=np.zeros(len(c)), where=b > 0)  # noqa: E731
    return {"tp": tp, "fp": fp, "fn": fn, "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def segf1_threshold(good_pixels: np.ndarray, maps: np.ndarray, masks: np.ndarray,
                    n: int = SEGF1_CANDIDATES) -> dict[str, Any]:
    """The candidate (``segf1_candidates`` of the good pixels) with the highest SegF1 on the synthetic anomalies
    ``maps`` / ``masks`` (``segf1_curve``); of equal F1 the highest threshold (less colour on good parts).
    Returns ``threshold`` (map units) and ``f1``, ``precision``, ``recall`` there, ``candidates`` (n), their
    ``range`` (p50, max) and the ``images`` / ``defect_pixels`` it was chosen on."""
    if not np.asarray(masks, bool).any():
        raise UserError("the synthetic anomalies have no defect pixels to choose a pixel threshold on")
    cands = segf1_candidates(good_pixels, n)
    curve = segf1_curve(maps, masks, cands)
    i = len(cands) - 1 - int(np.argmax(curve["f1"][::-1]))
    return {"threshold": float(cands[i]), "f1": float(curve["f1"][i]), "precision": float(curve["precision"][i]),
            "recall": float(curve["recall"][i]), "candidates": int(n), "range": [float(cands[0]), float(cands[-1])],
            "images": int(np.shape(maps)[0]), "defect_pixels": int(np.count_nonzero(masks))}


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
