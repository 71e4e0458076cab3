"""A diagnosis for issue 38's review-band target (test labels; reported, chooses nothing): on addendum 5's I1p banks
(σ 1 input blur, cached by ``input_blur.py``), the image threshold's k (logsigma on the held-out good scores) against
the share of good test parts a review band of 0.5 sends to REVIEW, false calls, recall and precision.

    nice -n 19 python3 benchmarks/r4/review_band_k.py   # writes benchmarks/results/r4/review_band_k.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import input_blur as ib  # noqa: E402

from edge_stpm.runtime.learn import thresholds  # noqa: E402

KS = (2.0, 2.5, 3.0, 3.5, 4.0)


def main() -> None:
    import torch

    z = np.load("/tmp/r4I/images.npz", allow_pickle=True)
    labels, paths = z["labels"], list(z["train_paths"])
    fe = np.load("/tmp/r4I/features_s1.npz")
    smooth = bc.Smooth(bc.SIGMA, bc.SIZE)
    out = {}
    for seed in (0, 1, 2):
        ck = torch.load(ib.CHECKPOINTS[seed], map_location="cpu", weights_only=False)
        val = np.array([p in set(ck["training"]["val_images"]) for p in paths])
        bank = np.load(f"/tmp/r4I/bank_s1_seed{seed}.npy")
        sq = (bank * bank).sum(1)
        _, vs = bc.maps_scores(bc.nearest(fe["train"][val], bank, sq)[0], smooth)
        _, ts = bc.maps_scores(bc.nearest(fe["test"], bank, sq)[0], smooth)
        zero, bad = float(np.median(vs)), labels == 1
        rows = {}
        for k in KS:
            t = thresholds.good_threshold(vs, "logsigma", None, k)
            u = (ts - zero) / (t - zero)
            pred = ts >= t
            rows[str(k)] = {"review_share": float((u[~bad] >= 0.5).mean()), "false_calls": float(pred[~bad].mean()),
                            "recall": float(pred[bad].mean()), "precision": float(pred[bad].sum() / max(1, pred.sum()))}
        out[str(seed)] = rows
        print(seed, {k: {m: round(v, 3) for m, v in r.items()} for k, r in rows.items()}, flush=True)
    (ROOT / "benchmarks" / "results" / "r4" / "review_band_k.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
