"""RULE_R3.md addendum 1's threshold setting, for the round-3 default's checkpoints (nothing retrained): each
checkpoint's held-out good images set the image threshold by ``logsigma`` with k = 3 (today), 2.5, 2 and by
``percentile`` (the 99.5th); the test split only judges it (precision / recall at each threshold). The rule: the
default becomes the setting with the highest 3-seed mean recall among those whose 3-seed mean precision is ≥ 0.90.

    python benchmarks/r3/threshold_k.py DATA OUT.json CHECKPOINT [CHECKPOINT ...]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge_stpm.common.images import labelled_test_images, load_images
from edge_stpm.training import checkpoint
from edge_stpm.runtime.learn import thresholds
from edge_stpm.training.evaluate import score_set, torch_infer

SETTINGS = [("logsigma", 3.0), ("logsigma", 2.5), ("logsigma", 2.0), ("percentile", None)]
PRECISION_FLOOR = 0.90


def one(ckpt: Path, data: Path) -> dict:
    pipe, meta = checkpoint.load_pipeline(ckpt)
    ck = checkpoint.read(ckpt)
    size, fit = meta["image_size"], meta["fit"]
    infer = torch_infer(pipe, torch.device("cpu"))
    val = [Path(p) for p in ck["training"]["val_images"]]
    _, good = score_set(infer, load_images(val, size, fit), 16, True)
    items = labelled_test_images(data)
    _, test = score_set(infer, load_images([i.path for i in items], size, fit), 16, True)
    labels = np.array([i.label for i in items])
    rows = {}
    for method, k in SETTINGS:
        thr = thresholds.good_threshold(good, method, k=k if k is not None else thresholds.DEFAULT_K)
        name = f"{method} k={k}" if k is not None else f"{method} q={thresholds.DEFAULT_IMAGE_Q}"
        rows[name] = thresholds.precision_recall_f1(test, labels, thr)
    return {"checkpoint": str(ckpt), "n_good_heldout": int(len(good)), "settings": rows}


def main() -> int:
    data, out, ckpts = Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
    t0 = time.perf_counter()
    runs = [one(c, data) for c in ckpts]
    names = list(runs[0]["settings"])
    mean = {n: {m: float(np.mean([r["settings"][n][m] for r in runs])) for m in ("precision", "recall", "f1")}
            for n in names}
    ok = [n for n in names if mean[n]["precision"] >= PRECISION_FLOOR]
    chosen = max(ok, key=lambda n: mean[n]["recall"]) if ok else None
    report = {"rule": "highest 3-seed mean recall with 3-seed mean precision >= 0.90 (RULE_R3.md addendum 1)",
              "runs": runs, "mean": mean, "chosen": chosen, "seconds": time.perf_counter() - t0}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for n in names:
        print(f"{n:22s} precision {mean[n]['precision']:.3f} recall {mean[n]['recall']:.3f} f1 {mean[n]['f1']:.3f}")
    print("chosen:", chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
