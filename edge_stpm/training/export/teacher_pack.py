"""``edge-stpm teacher``: the teacher pack a box needs to learn a part without PyTorch (``edge-stpm fit``).

A pack is a folder with
- ``features_fp32.onnx``: uint8 BGR NHWC ``(1, S, S, 3)`` → the memory head's patch features ``(1, D, h, w)`` —
  exactly ``heads.memory.patch_features`` of the frozen ImageNet teacher (levels 2 + 3, 3×3 averaging, stride 8);
- ``template_fp32.onnx``: the whole memory-head inspection graph (the graph ``export`` writes for a memory model)
  with a placeholder bank; ``fit`` puts the coreset of the box's good parts into its two bank initializers;
- ``teacher.json``: the backbone, input size, fit, head settings, the initializers' names, each file's sha256, where
  the teacher's weights come from and their licence (``runtime/learn/pack.py`` reads and checks it).
The teacher is the same as ``train --head memory`` uses, so a box's fit and a workstation's train agree.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_stpm.contract.artifacts import file_sha256, graph_metadata, library_versions
from edge_stpm.contract.errors import UserError
from edge_stpm.contract.files import output_dir, write_json
from edge_stpm.contract.options import DEFAULT_FIT
from edge_stpm.runtime.learn.pack import (
    BANK_SQ, BANK_T, FEATURES, PACK_FORMAT, TEMPLATE, TEACHER_JSON,
)
from edge_stpm.training.backbones import get_spec, pretrained_state
from edge_stpm.training.export.onnx_graphs import _trace, export_onnx
from edge_stpm.training.heads.memory import LEVELS, patch_features
from edge_stpm.training.model import DEFAULT_SCORE_TOP_PERCENT, STPM, InspectionPipeline, Preprocess

LICENCES = {"mobilenet_v2": "torchvision ImageNet weights (BSD-3-Clause code; weights from torchvision's model zoo)",
            "efficientnet_lite0": "EfficientNet-Lite0 ImageNet weights (Apache-2.0, tensorflow/tpu)",
            "resnet18": "torchvision ImageNet weights (BSD-3-Clause code; weights from torchvision's model zoo)"}


class PatchFeatures(nn.Module):
    """uint8 BGR NHWC → the memory head's patch features of the frozen teacher ``(B, D, h, w)``."""

    def __init__(self, stpm: STPM) -> None:
        super().__init__()
        spec = get_spec(stpm.backbone)
        self.preprocess = Preprocess(spec.mean, spec.std)
        self.teacher = stpm.teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_features(self.teacher(self.preprocess(x)))


def _meta(backbone: str, size: int, fit: str, sigma: float, top_percent: float, dims: int,
          source: str) -> dict[str, Any]:
    """What a checkpoint of a memory model would say, for the template graph's metadata."""
    spec = get_spec(backbone)
    return {"backbone": backbone, "image_size": size, "fit": fit, "mean": list(spec.mean), "std": list(spec.std),
            "smoothing_sigma": sigma, "score_top_percent": top_percent, "level_weights": None, "head": "memory",
            "head_weights": None, "memory": {"entries": 2, "dims": dims, "bytes": 8 * dims}, "tiles": None,
            "thresholds": {"image": 1.0, "pixel": 1.0, "method": "placeholder"}, "teacher_source": source}


def write_teacher_pack(out: Path, backbone: str = "mobilenet_v2", image_size: int = 256, fit: str | None = None,
                       sigma: float = 4.0, top_percent: float = DEFAULT_SCORE_TOP_PERCENT) -> dict[str, Any]:
    """Write a teacher pack into ``out`` (see the module doc); returns its ``teacher.json``."""
    if image_size % 16 or image_size < 32:
        raise UserError(f"--size must be a multiple of 16 and at least 32, not {image_size}")
    fit = fit or DEFAULT_FIT["memory"]
    state, source = pretrained_state(backbone)
    if state is None:
        raise UserError(f"no ImageNet weights for {backbone} on this machine: a teacher pack needs the real "
                        "teacher (see .ci/fetch_weights.sh)")
    stpm = STPM(backbone, state).eval()
    out = output_dir(Path(out))
    feat = PatchFeatures(stpm).eval()
    with torch.no_grad():
        probe = feat(torch.zeros((1, image_size, image_size, 3), dtype=torch.uint8))
    dims, grid = int(probe.shape[1]), (int(probe.shape[2]), int(probe.shape[3]))
    meta = _meta(backbone, image_size, fit, sigma, top_percent, dims, source)
    md = graph_metadata(meta, "fp32", 1, "teacher-pack")
    _trace(feat, (torch.zeros((1, image_size, image_size, 3), dtype=torch.uint8),), ["image"], ["features"],
           out / FEATURES, md | {"kind": "teacher-features"}, "the teacher's feature graph")
    bank = torch.randn(2, dims, generator=torch.Generator().manual_seed(0))  # placeholder: fit replaces it
    pipe = InspectionPipeline(stpm, image_size, sigma=sigma, top_percent=top_percent, head="memory", memory=bank)
    export_onnx(pipe.eval(), "fp32", 1, out / TEMPLATE, md)
    doc = {"format": PACK_FORMAT, "backbone": backbone, "image_size": image_size, "fit": fit,
           "features": {"file": FEATURES, "dims": dims, "grid": list(grid), "levels": [i + 2 for i in LEVELS],
                        "stride": image_size // grid[0], "averaging": "3x3"},
           "template": {"file": TEMPLATE, "bank_t": BANK_T, "bank_sq": BANK_SQ},
           "head": {"smoothing_sigma": sigma, "score_top_percent": top_percent},
           "teacher_source": source, "licence": LICENCES.get(backbone, "see the backbone's weights"),
           "sha256": {FEATURES: file_sha256(out / FEATURES), TEMPLATE: file_sha256(out / TEMPLATE)},
           "versions": library_versions()}
    write_json(out / TEACHER_JSON, doc)
    return doc
