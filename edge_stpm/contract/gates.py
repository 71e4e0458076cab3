"""The precision gates a graph must pass to ship in a bundle, and the parity figures they read: torch-free, so that
``export`` (against PyTorch FP32) and the box's ``fit`` (against its own FP32 graph) apply the same bounds."""
from __future__ import annotations

from typing import Any

import numpy as np

FP32_MAX_REL_L2 = 1e-4
# Precision gates on held-out good images, against PyTorch FP32: the map's relative L2 error and the score error
# in units of the image threshold (what decides verdicts). Measured (16 held-out images): magnetic tile FP16
# 0.020 / 0.0017 median / 0.0088 max, INT8 0.092 / 0.0062 / 0.036; synthetic test fixture FP16 0.009 / 0.0016 /
# 0.0077, INT8 0.159 / 0.033 / 0.058. Bounds: about 2x the worse of the two. With --data also the AUROC drop.
GATES = {"fp16": {"map_rel_l2": 0.05, "score_err_median": 0.01, "score_err_max": 0.05},
         "int8": {"map_rel_l2": 0.30, "score_err_median": 0.06, "score_err_max": 0.15}}
MAX_AUROC_DROP = 0.010


def gate_failures(prec: str, parity: dict[str, float], test: dict[str, Any] | None,
                  fp32_test: dict[str, Any] | None) -> list[str]:
    """What a graph misses of its precision gate, each with the figure and the bound (empty: it passes)."""
    out = [f"{k} {parity[k]:.3g} > {bound:g} (by {parity[k] - bound:.3g})"
           for k, bound in GATES.get(prec, {}).items() if not parity[k] <= bound]
    if test is not None and fp32_test is not None and prec != "fp32":
        for k in ("image_auroc", "pixel_auroc"):
            if test.get(k) is not None and fp32_test.get(k) is not None and fp32_test[k] - test[k] > MAX_AUROC_DROP:
                drop = fp32_test[k] - test[k]
                out.append(f"{k} drops {100 * drop:.2f} points below FP32 (> {100 * MAX_AUROC_DROP:.1f}; "
                           f"by {100 * (drop - MAX_AUROC_DROP):.2f})")
    return out


def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    """‖a − ref‖₂ / ‖ref‖₂ over all elements."""
    return float(np.linalg.norm((a - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-30))


def parity_figures(maps: np.ndarray, scores: np.ndarray, ref_maps: np.ndarray, ref_scores: np.ndarray,
                   image_threshold: float) -> dict[str, float]:
    """A graph's agreement with its reference: map relative L2, score relative error, score error in units of
    the image threshold (median, max)."""
    err = np.abs(scores - ref_scores)
    return {"images": len(scores), "map_rel_l2": rel_l2(maps, ref_maps),
            "score_max_rel_err": float(np.max(err / np.maximum(np.abs(ref_scores), 1e-30))),
            "score_err_median": float(np.median(err / image_threshold)),
            "score_err_max": float(np.max(err / image_threshold))}
