"""The STFPM peer side by side: anomalib 2.7.0's STFPM (its torch model's anomaly map and max-of-map score, its
``STFPMLoss``, its optimiser — SGD lr 0.4, momentum 0.9, weight decay 1e-3 — batch 32, the last epoch kept, as its
Lightning module trains) on the same magnetic-tile split as one of our checkpoints, with the same MobileNetV2
ImageNet teacher (our trunk's three levels; its student the same trunk with random weights, because its timm
extractor would download weights, which cannot happen here), the same input (our fit and normalisation), scored with
the same metric code. As ``../shared/docs/anchors.md`` ran it. Runs in the anomalib virtualenv (see
``anomalib_peer.py``); nothing of anomalib is committed or imported by the product.

    python benchmarks/r3/anomalib_stfpm_peer.py CHECKPOINT DATA OUT.json [EPOCHS]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge_stpm.common.images import load_images
from edge_stpm.training import checkpoint
from edge_stpm.training.backbones import build_trunk
from edge_stpm.training.model import Preprocess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomalib_peer import score_peer  # noqa: E402  (the same test loop and metrics as the PatchCore peer)


class Levels(torch.nn.Module):
    """A trunk's three levels under the layer names anomalib's STFPM iterates over."""

    def __init__(self, trunk: torch.nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(("layer1", "layer2", "layer3"), self.trunk(x)))


def build(ck: dict) -> torch.nn.Module:
    from anomalib.models.image.stfpm.anomaly_map import AnomalyMapGenerator
    from anomalib.models.image.stfpm.torch_model import STFPMModel

    model = STFPMModel.__new__(STFPMModel)  # its __init__ builds timm extractors that download ImageNet weights
    torch.nn.Module.__init__(model)
    model.tiler, model.backbone = None, ck["backbone"]
    model.teacher_model = Levels(checkpoint.build_stpm(ck).teacher).eval()
    for p in model.teacher_model.parameters():
        p.requires_grad = False
    model.student_model = Levels(build_trunk(ck["backbone"]))
    model.anomaly_map_generator = AnomalyMapGenerator()
    return model


def main() -> int:
    from anomalib.models.image.stfpm.loss import STFPMLoss

    ckpt, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    torch.manual_seed(0)
    ck = checkpoint.read(ckpt)
    size, fit = ck["image_size"], ck["fit"]
    pre = Preprocess(ck["mean"], ck["std"])
    model, loss_fn = build(ck), STFPMLoss()
    opt = torch.optim.SGD(model.student_model.parameters(), lr=0.4, momentum=0.9, dampening=0.0, weight_decay=0.001)
    train = torch.from_numpy(load_images([Path(p) for p in ck["training"]["train_images"]], size, fit))
    t0, losses = time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        model.teacher_model.eval()
        order, total = torch.randperm(len(train)), 0.0
        for i in range(0, len(train), 32):
            t, s = model(pre(train[order[i : i + 32]]))
            loss = loss_fn(t, s)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total)
        print(f"epoch {epoch + 1}/{epochs} loss {total:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    fit_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        res, per_image = score_peer(model, pre, data, size, fit)
    report = {"peer": "anomalib 2.7.0 STFPMModel + STFPMLoss (torch), MobileNetV2 torchvision ImageNet teacher levels "
              "1-3, student random init, SGD 0.4/0.9/1e-3, batch 32, last epoch kept",
              "checkpoint_split": str(ckpt), "train_images": len(train), "epochs": epochs, "epoch_losses": losses,
              "fit_seconds": fit_s, "pytorch_ms_per_image_p50": 1e3 * float(np.median(per_image)),
              "threads": torch.get_num_threads(), "image_size": size, "fit": fit,
              **res}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    o = res["overall"]
    print(f"anomalib STFPM: image {o['image_auroc']:.4f} pixel {o['pixel_auroc']:.4f} AUPRO {o['aupro']:.4f}; "
          f"train {fit_s:.0f} s; {report['pytorch_ms_per_image_p50']:.1f} ms/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
