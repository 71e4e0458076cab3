"""RULE_R3.md addendum 4, candidate Q: EfficientAD's quantile normalisation for head ``both``. Each map (STPM, memory;
unsmoothed, as ``good_head_weights`` measures them) is mapped so that its held-out good q0.9 → 0 and q0.995 → 0.1;
added, the offsets only shift the sum, so the head's weights become 0.1 / (q0.995 − q0.9) in place of 1 / the
standard deviation. A copy of the ``both`` checkpoint gets those weights, its thresholds are recalibrated on its
held-out good images (nothing retrained), and it is evaluated on the test split beside the original.

    python benchmarks/r3/quantile_norm.py BOTH_CHECKPOINT DATA OUT_DIR
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from edge_stpm.common.images import load_images
from edge_stpm.training import checkpoint
from edge_stpm.training.calibrate import recalibrate
from edge_stpm.training.evaluate import evaluate
from edge_stpm.training.model import InspectionPipeline, anomaly_map


@torch.no_grad()
def quantile_weights(ck: dict, images: torch.Tensor, batch: int = 8) -> tuple[list[float], dict]:
    stpm = checkpoint.build_stpm(ck)
    size = ck["image_size"]
    pipe = InspectionPipeline(stpm, size, level_weights=ck["level_weights"], head="memory",
                              memory=ck["memory_bank"]).eval()
    s_vals, m_vals = [], []
    for i in range(0, len(images), batch):
        x = pipe.preprocess(images[i : i + batch])
        t = pipe.teacher(x)
        s_vals.append(anomaly_map(t, pipe.student(x), (size, size), pipe.level_weights).flatten().numpy())
        m_vals.append(pipe.memory_map(t).flatten().numpy())
    out, q = [], {}
    for name, vals in (("stpm", np.concatenate(s_vals)), ("memory", np.concatenate(m_vals))):
        q90, q995 = np.quantile(vals, [0.9, 0.995])
        q[name] = {"q0.9": float(q90), "q0.995": float(q995), "std": float(vals.std())}
        out.append(float(0.1 / (q995 - q90)))
    return out, q


def main() -> int:
    src, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    ck = checkpoint.read(src)
    if ck["head"] != "both":
        raise SystemExit(f"{src} has head {ck['head']}, not both")
    val = [Path(p) for p in ck["training"]["val_images"]]
    weights, q = quantile_weights(ck, torch.from_numpy(load_images(val, ck["image_size"], ck["fit"])))
    dst = out / "model_quantile.pt"
    shutil.copy(src, dst)
    ck2 = checkpoint.read(dst)
    checkpoint.save(dst, checkpoint.build_stpm(ck2), image_size=ck2["image_size"], fit=ck2["fit"],
                    thresholds=ck2["thresholds"], teacher_source=ck2["teacher_source"], training=ck2["training"],
                    sigma=ck2["smoothing_sigma"], top_percent=ck2["score_top_percent"],
                    level_weights=ck2["level_weights"], head="both", memory=ck2["memory_bank"], head_weights=weights,
                    tiles=ck2.get("tiles"))
    recalibrate(dst, quiet=True)
    rows = {}
    for name, path in (("spread weights (r3_B)", src), ("quantile weights (Q)", dst)):
        r = evaluate(path, data, out / name.split()[0], device="cpu", quiet=True)
        rows[name] = {"head_weights": checkpoint.read(path)["head_weights"],
                      "image_auroc": r["overall"]["image_auroc"], "pixel_auroc": r["overall"]["pixel_auroc"],
                      "aupro": r["overall"]["aupro"],
                      "per_defect_image": {d: b["image_auroc"] for d, b in r["per_defect"].items()},
                      "recall_at_threshold": r["at_stored_threshold"]["recall"],
                      "precision_at_threshold": r["at_stored_threshold"]["precision"]}
        print(name, json.dumps(rows[name]), flush=True)
    (out / "quantile_norm.json").write_text(json.dumps({"checkpoint": str(src), "quantiles": q, "rows": rows},
                                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
