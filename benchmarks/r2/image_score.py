"""Post-processing candidates on trained checkpoints, no retraining (issue: accuracy on hard real data, round 2).

For each checkpoint: the per-level distance maps of the whole test split and of the held-out good images (the
checkpoint's validation split) are computed once; then every candidate head is scored with the evaluation's own
metrics (image AUROC, pixel AUROC, AUPRO@0.3 at model resolution):

- image score: max (the current head), mean of the top q % of the map (q = 0.1, 0.5, 1, 2, 5), mean of the map;
- map: product of the levels (current) or the sum of levels each standardised by its mean and std over the held-out
  good images' maps (statistics from good images only), then the same smoothing.

Nothing here is chosen on test labels per run: every candidate is fixed before it is scored, and the choice of a
new default is made by the rule (mean over seeds of ½·(image + pixel AUROC), ≥ +0.005) in RESULTS.md.

usage: python benchmarks/r2/image_score.py --data ../shared/data/magnetic_tile --out benchmarks/results/accuracy/r2_heads \
           CKPT [CKPT ...]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_stpm.training import checkpoint, metrics
from edge_stpm.common.images import GOOD, labelled_test_images, load_images, read_mask
from edge_stpm.training.model import GaussianSmooth, level_distance

TOP_Q = (0.1, 0.5, 1.0, 2.0, 5.0)


@torch.no_grad()
def level_maps(pipe, images: np.ndarray, batch: int = 16) -> list[np.ndarray]:
    """Per level: the distance map upsampled to the input size, ``(N, S, S)`` float32 (before product/smoothing)."""
    size = pipe.image_size
    out: list[list[np.ndarray]] = []
    for i in range(0, len(images), batch):
        x = pipe.preprocess(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
        t, s = pipe.teacher(x), pipe.student(x)
        lv = [F.interpolate(level_distance(a, b), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
              for a, b in zip(t, s)]
        if not out:
            out = [[] for _ in lv]
        for k, m in enumerate(lv):
            out[k].append(m.numpy())
    return [np.concatenate(x) for x in out]


def smooth(maps: np.ndarray, sigma: float, size: int) -> np.ndarray:
    if sigma <= 0:
        return maps
    g = GaussianSmooth(sigma, size)
    with torch.no_grad():
        return np.concatenate([g(torch.from_numpy(maps[i:i + 32, None]))[:, 0].numpy() for i in range(0, len(maps), 32)])


def image_scores(maps: np.ndarray) -> dict[str, np.ndarray]:
    flat = maps.reshape(len(maps), -1)
    srt = np.sort(flat, axis=1)
    out = {"max": srt[:, -1], "mean": flat.mean(1)}
    for q in TOP_Q:
        k = max(1, math.ceil(q / 100 * flat.shape[1]))
        out[f"top{q:g}%"] = srt[:, -k:].mean(1)
    return out


def study(ckpt: Path, data: Path) -> dict:
    pipe, meta = checkpoint.load_pipeline(ckpt)
    pipe.eval()
    size, fit, sigma = meta["image_size"], meta["fit"], float(meta.get("smoothing_sigma", 0.0))
    ck = checkpoint.read(ckpt)
    val_paths = [Path(p) for p in ck["training"]["val_images"]]
    items = labelled_test_images(data)
    test = load_images([it.path for it in items], size, fit)
    masks = np.stack([read_mask(it, size, fit) for it in items])
    labels = np.array([it.label for it in items])
    defects = np.array([it.defect for it in items])
    good_lv = level_maps(pipe, load_images(val_paths, size, fit))
    test_lv = level_maps(pipe, test)
    mu = [float(m.mean()) for m in good_lv]
    sd = [float(m.std()) for m in good_lv]
    heads = {
        "product": smooth(np.prod(test_lv, axis=0), sigma, size),
        "sum_standardised": smooth(sum((m - a) / b for m, a, b in zip(test_lv, mu, sd)), sigma, size),
    }
    res: dict = {"checkpoint": str(ckpt), "sigma": sigma, "level_mean": mu, "level_std": sd, "candidates": {}}
    for head, maps in heads.items():
        pix = metrics.pixel_auroc(maps, masks)
        pro = metrics.aupro(maps, masks)
        per_defect_pix = {d: metrics.pixel_auroc(maps[(defects == GOOD) | (defects == d)],
                                                 masks[(defects == GOOD) | (defects == d)])
                          for d in sorted(set(defects.tolist()) - {GOOD})}
        for name, sc in image_scores(maps).items():
            per_defect = {d: metrics.image_auroc(sc[(defects == GOOD) | (defects == d)],
                                                 labels[(defects == GOOD) | (defects == d)])
                          for d in sorted(set(defects.tolist()) - {GOOD})}
            res["candidates"][f"{head}/{name}"] = {"image_auroc": metrics.image_auroc(sc, labels), "pixel_auroc": pix,
                                                   "aupro": pro, "per_defect_image": per_defect,
                                                   "per_defect_pixel": per_defect_pix}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/magnetic_tile"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy/r2_heads"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    for i, ck in enumerate(a.checkpoints):
        r = study(ck, a.data)
        name = a.out / f"{ck.parent.parent.name}_{i}.json"
        tmp = name.with_suffix(".tmp")
        tmp.write_text(json.dumps(r, indent=1))
        tmp.replace(name)
        for k, v in r["candidates"].items():
            print(f"{ck}  {k:28s} image {v['image_auroc']:.4f} pixel {v['pixel_auroc']:.4f} aupro {v['aupro']:.4f}")


if __name__ == "__main__":
    main()
