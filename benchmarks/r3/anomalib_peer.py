"""The peer side by side: anomalib 2.7.0's PatchCore (its torch model: its coreset sampler, nearest-neighbour search,
PatchCore re-weighted image score, its anomaly-map blur) on the same magnetic-tile split as one of our memory-head
checkpoints, with the same MobileNetV2 ImageNet teacher (torchvision weights; anomalib's timm extractor swapped for
our trunk's levels 2 and 3, which is what its ``layers`` pick), the same input (our fit and normalisation), scored
with the same metric code. Runs in a virtualenv that has anomalib (``pip install anomalib==2.7.0``, with torch
from the system site packages); nothing of anomalib is committed or imported by the product.

    python benchmarks/r3/anomalib_peer.py CHECKPOINT DATA OUT.json [CORESET_RATIO]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge_stpm.common.images import labelled_test_images, load_images, read_mask
from edge_stpm.training import checkpoint, metrics
from edge_stpm.training.evaluate import compute_metrics
from edge_stpm.training.model import Preprocess


class TrunkLevels(torch.nn.Module):
    """Our teacher's levels 2 and 3 under the layer names anomalib asks its extractor for."""

    def __init__(self, teacher: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.teacher, self.names = teacher, names

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.teacher(x)
        return {self.names[0]: t[1], self.names[1]: t[2]}


@torch.no_grad()
def score_peer(model: torch.nn.Module, pre: Preprocess, data: Path, size: int, fit: str) -> tuple[dict, list[float]]:
    """A peer model (in eval mode, answering anomalib's InferenceBatch) over the test split, one image at a time,
    scored by our metric code; also the AUROC of the map's max as the image score. Returns (metrics, seconds per
    image)."""
    items = labelled_test_images(data)
    test = torch.from_numpy(load_images([i.path for i in items], size, fit))
    masks = np.stack([read_mask(i, size, fit) for i in items])
    maps, scores, per_image = [], [], []
    for i in range(len(test)):
        t1 = time.perf_counter()
        r = model(pre(test[i : i + 1]))
        per_image.append(time.perf_counter() - t1)
        maps.append(r.anomaly_map[:, 0].numpy())
        scores.append(r.pred_score.reshape(-1).numpy())
    maps, scores = np.concatenate(maps), np.concatenate(scores)
    labels, defects = np.array([i.label for i in items]), np.array([i.defect for i in items])
    res = compute_metrics(maps, scores, labels, masks, defects)
    res["max_of_map_image_auroc"] = metrics.image_auroc(maps.reshape(len(maps), -1).max(1), labels)
    return res, per_image


@torch.no_grad()
def main() -> int:
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    ckpt, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    ratio = float(sys.argv[4]) if len(sys.argv) > 4 else 0.01
    torch.manual_seed(0)
    ck = checkpoint.read(ckpt)
    stpm = checkpoint.build_stpm(ck)
    size, fit = ck["image_size"], ck["fit"]
    pre = Preprocess(ck["mean"], ck["std"])
    names = ["layer2", "layer3"]  # the names its extractor is built with; our levels 2 and 3 answer to them
    model = PatchcoreModel(backbone="resnet18", layers=names, pre_trained=False, num_neighbors=9)
    model.feature_extractor = TrunkLevels(stpm.teacher.eval(), names)
    train = [Path(p) for p in ck["training"]["train_images"]]
    t0 = time.perf_counter()
    imgs = torch.from_numpy(load_images(train, size, fit))
    model.train()  # PatchCore collects embeddings in training mode ...
    model.feature_extractor.eval()  # ... but the frozen teacher's batch norm must keep its ImageNet statistics
    for i in range(0, len(imgs), 16):
        model(pre(imgs[i : i + 16]))
    model.subsample_embedding(ratio)
    fit_s = time.perf_counter() - t0
    model.eval()
    res, per_image = score_peer(model, pre, data, size, fit)
    report = {"peer": "anomalib 2.7.0 PatchcoreModel (torch), MobileNetV2 torchvision ImageNet levels 2+3",
              "checkpoint_split": str(ckpt), "train_images": len(train), "coreset_ratio": ratio,
              "memory_bank": list(model.memory_bank.shape), "fit_seconds": fit_s,
              "pytorch_ms_per_image_p50": 1e3 * float(np.median(per_image)), "threads": torch.get_num_threads(),
              "image_size": size, "fit": fit, **res}
    out.write_text(json.dumps(report, indent=1))
    o = res["overall"]
    print(f"anomalib PatchCore: image {o['image_auroc']:.4f} pixel {o['pixel_auroc']:.4f} AUPRO {o['aupro']:.4f}; "
          f"bank {tuple(model.memory_bank.shape)}; fit {fit_s:.0f} s; {report['pytorch_ms_per_image_p50']:.1f} ms/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
