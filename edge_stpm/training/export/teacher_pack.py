"""``edge-stpm teacher``: the teacher pack a box needs to learn a part without PyTorch (``edge-stpm fit``).

A pack is a folder with
- ``features_fp32.onnx``: uint8 BGR NHWC ``(1, S, S, 3)`` → the memory head's patch features ``(1, D, h, w)`` —
  exactly ``heads.memory.patch_features`` of the frozen ImageNet teacher (levels 2 + 3, 3×3 averaging, stride 8);
- ``template_fp32.onnx``: the whole memory-head inspection graph (the graph ``export`` writes for a memory model)
  with a placeholder bank; ``fit`` puts the coreset of the box's good parts into its two bank initializers;
- ``template_fp16.onnx``: the same with the teacher in FP16 and the head in FP32 (``export``'s FP16 graph), for
  ``fit --precision fp16`` (TensorRT 10 and later build an FP16 engine only from an FP16 graph);
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

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import output_dir, write_json
from edge_stpm.contract.artifacts import file_sha256, graph_metadata, library_versions
from edge_stpm.contract.options import DEFAULT_FIT, DEFAULT_PIXEL_METHOD, default_input_blur
from edge_stpm.runtime.learn.pack import (
    BANK_SQ,
    BANK_T,
    FEATURES,
    PACK_FORMAT,
    TEACHER_JSON,
    TEMPLATE,
    TEMPLATE_FP16,
)
from edge_stpm.training.backbones import get_spec, pretrained_state
from edge_stpm.training.export.onnx_graphs import _trace, export_onnx
from edge_stpm.training.heads.memory import LEVELS, patch_features
from edge_stpm.training.model import DEFAULT_SCORE_TOP_PERCENT, STPM, InspectionPipeline, Preprocess

LICENCES = {"mobilenet_v2": "torchvision ImageNet weights (BSD-3-Clause code; weights from torchvision's model zoo)",
            "efficientnet_lite0": "EfficientNet-Lite0 ImageNet weights (Apache-2.0, tensorflow/tpu)",
            "resnet18": "torchvision ImageNet weights (BSD-3-Clause code; weights from torchvision's model zoo)"}


class PatchFeatures(nn.Module):
    """uint8 BGR NHWC → the memory head's patch features of the frozen teacher ``(B, D, h, w)`` (of an STPM or of an
    inspection pipeline: anything with the teacher and its backbone's name), the input blurred by ``input_blur``
    (σ, pixels of the ``size``² input) as the inspection graph blurs it."""

    def __init__(self, stpm: STPM | InspectionPipeline, input_blur: float = 0.0, size: int = 0) -> None:
        super().__init__()
        spec = get_spec(stpm.backbone)
        self.preprocess = Preprocess(spec.mean, spec.std, input_blur, size)
        self.teacher = stpm.teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_features(self.teacher(self.preprocess(x)))


def _meta(backbone: str, size: int, fit: str, sigma: float, top_percent: float, dims: int,
          source: str, input_blur: float = 0.0) -> dict[str, Any]:
    """What a checkpoint of a memory model would say, for the template graph's metadata."""
    spec = get_spec(backbone)
    return {"backbone": backbone, "image_size": size, "fit": fit, "mean": list(spec.mean), "std": list(spec.std),
            "smoothing_sigma": sigma, "input_blur": input_blur, "score_top_percent": top_percent,
            "level_weights": None, "head": "memory",
            "head_weights": None, "memory": {"entries": 2, "dims": dims, "bytes": 8 * dims}, "tiles": None,
            "thresholds": {"image": 1.0, "pixel": 1.0, "method": "placeholder"}, "teacher_source": source}


def write_teacher_pack(out: Path, backbone: str = "mobilenet_v2", image_size: int = 256, fit: str | None = None,
                       sigma: float = 4.0, top_percent: float = DEFAULT_SCORE_TOP_PERCENT,
                       input_blur: float | None = None) -> dict[str, Any]:
    """Write a teacher pack into ``out`` (see the module doc); returns its ``teacher.json``. ``input_blur`` None: the
    memory head's default for this size (``contract.options.default_input_blur``); its pixel threshold method is the
    head's too."""
    if image_size % 16 or image_size < 32:
        raise UserError(f"--size must be a multiple of 16 and at least 32, not {image_size}")
    fit = fit or DEFAULT_FIT["memory"]
    blur = default_input_blur("memory", image_size) if input_blur is None else float(input_blur)
    state, source = pretrained_state(backbone)
    if state is None:
        raise UserError(f"no ImageNet weights for {backbone} on this machine: a teacher pack needs the real "
                        "teacher (see .ci/fetch_weights.sh)")
    stpm = STPM(backbone, state).eval()
    out = output_dir(Path(out))
    meta = _meta(backbone, image_size, fit, sigma, top_percent, 0, source, blur)
    dims, grid = _features_graph(stpm, image_size, out, meta, blur)
    meta = _meta(backbone, image_size, fit, sigma, top_percent, dims, source, blur)
    bank = torch.randn(2, dims, generator=torch.Generator().manual_seed(0))  # placeholder: fit replaces it
    pipe = InspectionPipeline(stpm, image_size, sigma=sigma, top_percent=top_percent, head="memory", memory=bank,
                              input_blur=blur)
    export_onnx(pipe.eval(), "fp32", 1, out / TEMPLATE, graph_metadata(meta, "fp32", 1, "teacher-pack"))
    export_onnx(pipe.eval(), "fp16", 1, out / TEMPLATE_FP16, graph_metadata(meta, "fp16", 1, "teacher-pack"))
    doc = _doc(backbone, image_size, fit, sigma, top_percent, dims, grid, source, out, TEMPLATE, TEMPLATE_FP16,
               blur, DEFAULT_PIXEL_METHOD["memory"])
    write_json(out / TEACHER_JSON, doc)
    return doc


def _features_graph(model: STPM | InspectionPipeline, size: int, out: Path, meta: dict[str, Any],
                    input_blur: float) -> tuple[int, tuple[int, int]]:
    """``out/features_fp32.onnx`` of ``model``'s teacher; returns (feature dims, grid)."""
    feat = PatchFeatures(model, input_blur, size).eval()
    x = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        probe = feat(x)
    dims, grid = int(probe.shape[1]), (int(probe.shape[2]), int(probe.shape[3]))
    md = graph_metadata(meta | {"memory": {"entries": 2, "dims": dims, "bytes": 8 * dims}}, "fp32", 1, "teacher-pack")
    _trace(feat, (x,), ["image"], ["features"], out / FEATURES, md | {"kind": "teacher-features"},
           "the teacher's feature graph")
    return dims, grid


def _doc(backbone: str, size: int, fit: str, sigma: float, top_percent: float, dims: int, grid: tuple[int, int],
         source: str, out: Path, template: str, template_fp16: str | None = None, input_blur: float = 0.0,
         pixel_method: str | None = None) -> dict[str, Any]:
    files = [FEATURES, template] + ([template_fp16] if template_fp16 else [])
    return {"format": PACK_FORMAT, "backbone": backbone, "image_size": size, "fit": fit,
            "features": {"file": FEATURES, "dims": dims, "grid": list(grid), "levels": [i + 2 for i in LEVELS],
                         "stride": size // grid[0], "averaging": "3x3", "input_blur": input_blur},
            "template": {"file": template, "bank_t": BANK_T, "bank_sq": BANK_SQ,
                         **({"fp16": template_fp16} if template_fp16 else {})},
            "head": {"smoothing_sigma": sigma, "score_top_percent": top_percent}
                    | ({"pixel_method": pixel_method} if pixel_method else {}),
            "teacher_source": source, "licence": LICENCES.get(backbone, "see the backbone's weights"),
            "sha256": {f: file_sha256(out / f) for f in files},
            "versions": library_versions()}


def bundle_pack(pipe: InspectionPipeline, meta: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """An exported memory bundle carries its teacher pack too (the template is the bundle's own FP32 graph), and
    ``fit.json`` with what its model was learned from — so a box can update it (``update-memory --bundle``) or fit
    a new version with its teacher (``fit --teacher BUNDLE``). None for other heads and tiled fits (no pack)."""
    if meta.get("head") != "memory" or meta.get("tiles"):
        return None
    size = int(meta["image_size"])
    blur = float(meta.get("input_blur", 0.0))
    dims, grid = _features_graph(pipe, size, out, meta, blur)
    fp16 = "model_fp16.onnx" if (out / "model_fp16.onnx").is_file() else None
    doc = _doc(meta["backbone"], size, meta["fit"], float(meta.get("smoothing_sigma", 0.0)),
               float(meta.get("score_top_percent", 0.0)), dims, grid, meta.get("teacher_source", "?"), out,
               "model_fp32.onnx", fp16, blur, "p999" if (meta.get("thresholds") or {}).get("pixel_method") == "p999"
               else None)  # a segf1 threshold needs synthetic maps: a box's update then uses logsigma's pixel k
    write_json(out / TEACHER_JSON, doc)
    tr = meta.get("training", {})
    mem = tr.get("memory") or {}
    write_json(out / "fit.json", {
        "teacher": "the checkpoint's own", "images": len(tr.get("train_images", [])) + len(tr.get("val_images", [])),
        "held_out": len(tr.get("val_images", [])), "train_images": len(tr.get("train_images", [])),
        "patches_per_image": grid[0] * grid[1], "coreset": float(mem.get("coreset", 0.01)),
        **({"patches": int(mem["patches"])} if mem.get("patches") else {}),
        "val_images": list(tr.get("val_images", [])), "train_image_paths": list(tr.get("train_images", [])), "thresholds": meta.get("thresholds", {}),
        "memory_updates": list(tr.get("memory_updates", []))})
    return doc
