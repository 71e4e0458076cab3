"""Metrics and thresholds against brute-force references on small hand-made data."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_stpm.training import metrics
from edge_stpm.runtime.learn import thresholds
from edge_stpm.common.errors import UserError


def brute_force_aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3) -> float:
    """Direct definition: for every distinct threshold, PRO = mean over regions of overlap, FPR over normal pixels;
    trapezoid area of PRO(FPR) up to max_fpr (interpolated), divided by max_fpr."""
    normal = ~masks
    pts = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro_vals = []
        for i, m in enumerate(masks):
            n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
            for k in range(1, n):
                r = lab == k
                pro_vals.append(pred[i][r].mean())
        pts.append((fpr, float(np.mean(pro_vals))))
    xs, ys = zip(*pts)
    xs, ys = np.array(xs), np.array(ys)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def small_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 1:3, 1:4] = True          # two regions in image 0
    masks[0, 5:7, 5:7] = True
    masks[1, 0:4, 6:8] = True          # one region in image 1; image 2 is good
    maps = rng.random((3, 8, 8)).astype(np.float32) + masks * rng.random() * 0.8
    return np.round(maps, 2), masks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_brute_force(seed: int) -> None:
    maps, masks = small_case(seed)
    assert metrics.aupro(maps, masks) == pytest.approx(brute_force_aupro(maps, masks), abs=1e-9)


def test_aupro_perfect_and_region_weighting() -> None:
    maps, masks = small_case(0)
    assert metrics.aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    # a big region found and a small one missed: PRO = ½ (regions count equally, not by area)
    masks2 = np.zeros((1, 10, 10), bool)
    masks2[0, :5, :5] = True
    masks2[0, 8, 8] = True
    m = np.zeros((1, 10, 10), np.float32)
    m[0, :5, :5] = 1.0
    fpr, pro = metrics.pro_curve(m, masks2)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0


def pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Brute force: P(score of a positive > score of a negative) + ½ P(tie)."""
    pos, neg = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size))


def test_aurocs_match_a_brute_force_reference() -> None:
    maps, masks = small_case(1)
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(pairwise_auroc(maps.ravel(), masks.ravel()))
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert metrics.image_auroc(scores, labels) == pytest.approx(0.75)
    assert metrics.image_auroc(scores, np.zeros(4)) is None


def test_f1_optimal_matches_exhaustive_search() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(40)
    labels = (scores + rng.normal(0, 0.3, 40) > 0.6).astype(int)
    best = max((thresholds.precision_recall_f1(scores, labels, t)["f1"], t) for t in scores)
    got = thresholds.f1_optimal(scores, labels)
    assert got["f1"] == pytest.approx(best[0])
    assert thresholds.precision_recall_f1(scores, labels, got["threshold"])["f1"] == pytest.approx(best[0])


def test_f1_threshold_refused_on_good_only_set() -> None:
    with pytest.raises(UserError, match="both good and defective"):
        thresholds.f1_optimal(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))


def test_calibrate_percentile_and_sigma() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 0.1, 200)
    maps = rng.random((10, 8, 8))
    p = thresholds.calibrate(scores, maps, "percentile")
    assert p["image"] == pytest.approx(np.percentile(scores, 99.5))
    assert p["pixel"] == pytest.approx(np.percentile(maps, 99.9))
    s = thresholds.calibrate(scores, maps, "sigma", k=3)
    assert s["image"] == pytest.approx(scores.mean() + 3 * scores.std())
    assert s["image"] > 1.2 and s["image"] < 1.45
    ls = thresholds.calibrate(np.exp(scores), maps + 0.1, "logsigma", k=3)
    assert ls["image"] == pytest.approx(np.exp(scores.mean() + 3 * scores.std()))
    assert thresholds.calibrate(scores, maps)["method"] == "logsigma"
    with pytest.raises(UserError):
        thresholds.calibrate(scores, maps, "median")
