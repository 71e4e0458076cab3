"""Area under the ROC curve in numpy (torch- and scikit-learn-free: the box's fit checks its model with it; the
training side's metrics use the same function)."""
from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUROC of ``scores`` against boolean ``labels`` (True = positive), ties counted half (Mann–Whitney U with
    average ranks, as scikit-learn's ``roc_auc_score``); None when one class is absent."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    pos = int(y.sum())
    neg = y.size - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = (ends - counts + ends + 1) / 2.0  # 1-based average rank of each distinct value
    ranks = np.empty(s.size, np.float64)
    ranks[order] = average[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
