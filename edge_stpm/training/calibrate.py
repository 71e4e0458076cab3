"""``edge-stpm calibrate``: recompute a checkpoint's thresholds without retraining."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import labelled_test_images, load_images
from edge_stpm.contract import tiles
from edge_stpm.contract.options import DEFAULT_BANK_MAX_MB, DEFAULT_CORESET
from edge_stpm.runtime.learn import thresholds
from edge_stpm.runtime.learn.synthetic import anomalies
from edge_stpm.training import checkpoint
from edge_stpm.training.backbones import get_spec
from edge_stpm.training.evaluate import ScoreFn, score_set, torch_infer
from edge_stpm.training.heads.memory import fit_memory
from edge_stpm.training.model import HEADS, MAP_COMBINES, Preprocess, good_head_weights, good_level_weights


def recalibrate(ckpt: Path, method: str = "logsigma", sigma: float | None = None, data: Path | None = None,
                quiet: bool = False, top_percent: float | None = None, combine: str | None = None,
                head: str | None = None, coreset: float = DEFAULT_CORESET,
                bank_max_mb: float = DEFAULT_BANK_MAX_MB, k: float | None = None, pixel_method: str | None = None,
                infer: ScoreFn | None = None) -> dict[str, Any]:
    """Recompute thresholds of a checkpoint from its held-out good images (optionally with another smoothing
    sigma, image score, level combination or head), or, with ``data``, set the image threshold to the F1 optimum
    of that labelled split; rewrite it. A ``head`` of memory or both builds the memory bank from the checkpoint's
    training images (nothing is trained); stpm and both need a trained student. ``k``: the image threshold's k
    (None: the head's default). ``pixel_method`` (None: the checkpoint's own; ``"method"``: ``method`` with the pixel
    k 3, as before round 4 and wherever a checkpoint names none): a pixel-only
    method of ``thresholds.PIXEL_METHODS`` — ``segf1`` scores the no-defect check's synthetic anomalies of the
    held-out images (its kinds, sizes and seed) and takes the SegF1 optimum, ``p999`` the held-out pixels' 99.9th
    percentile; the image threshold and the bank are unchanged. ``infer``: score with this function instead of the
    checkpoint's own pipeline (it must be that pipeline, e.g. a cached one; not with a sigma / score / combine /
    head change)."""
    ck = checkpoint.read(Path(ckpt))
    pixel_method = ck["thresholds"].get("pixel_method") if pixel_method is None else pixel_method
    pixel_method = None if pixel_method == "method" else pixel_method
    if method not in thresholds.METHODS:
        raise UserError(f"unknown threshold method {method!r}; choose one of {', '.join(thresholds.METHODS)}")
    if pixel_method is not None and pixel_method not in thresholds.PIXEL_METHODS:
        raise UserError(f"unknown pixel threshold method {pixel_method!r}; choose one of "
                        f"{', '.join(thresholds.PIXEL_METHODS)}")
    if infer is not None and (sigma, top_percent, combine, head) != (None, None, None, None):
        raise UserError("a given scoring function cannot be used with a smoothing, score, combine or head change")
    if sigma is not None:
        if sigma < 0:
            raise UserError("--smoothing must be 0 (no smoothing) or positive")
        ck["smoothing_sigma"] = float(sigma)
    if top_percent is not None:
        ck["score_top_percent"] = float(top_percent)
    stpm = checkpoint.build_stpm(ck)
    size, fit = ck["image_size"], ck["fit"]
    val = [Path(p) for p in ck["training"].get("val_images", []) if Path(p).is_file()]
    if not val:
        raise UserError("the checkpoint's held-out images are not on this machine: retrain here to calibrate")
    grid = tiles.from_meta(ck)
    val_images = load_images(val, size, fit, tiles=grid)
    if combine is not None:
        if combine not in MAP_COMBINES:
            raise UserError(f"unknown map combination {combine!r}; choose one of {', '.join(MAP_COMBINES)}")
        ck["level_weights"] = (list(good_level_weights(checkpoint.pipeline(ck | {"level_weights": None}, stpm),
                                                       torch.from_numpy(val_images)))
                               if combine == "weighted_sum" else None)
    if head is not None:
        _change_head(ck, stpm, head, coreset, bank_max_mb, torch.from_numpy(val_images), quiet)
    if infer is None:
        infer = torch_infer(checkpoint.pipeline(ck, stpm), torch.device("cpu"))
    maps, scores = score_set(infer, val_images, 16, quiet, "held-out good images")
    synthetic = (synthetic_maps(infer, val_images, int(ck["training"].get("config", {}).get("seed", 0)), quiet)
                 if pixel_method == "segf1" else None)
    thr = thresholds.calibrate(tiles.per_frame(grid, scores), maps, method, thresholds.default_k(ck.get("head", "stpm")) if k is None else k,
                               pixel_method=pixel_method, synthetic=synthetic)
    if data is not None:
        items = labelled_test_images(Path(data))
        _, s = score_set(infer, load_images([i.path for i in items], size, fit, tiles=grid), 16, quiet,
                         "labelled split")
        f1 = thresholds.f1_optimal(tiles.per_frame(grid, s), np.array([i.label for i in items]))
        thr |= {"method": "f1", "image": f1["threshold"], "f1_on": str(data), "f1": f1}
    checkpoint.save(Path(ckpt), stpm, image_size=size, fit=fit, thresholds=thr, teacher_source=ck["teacher_source"],
                    training=ck["training"], sigma=ck.get("smoothing_sigma", 0.0),
                    top_percent=ck.get("score_top_percent", 0.0), level_weights=ck.get("level_weights"),
                    head=ck.get("head", "stpm"), memory=ck.get("memory_bank"), head_weights=ck.get("head_weights"),
                    tiles=ck.get("tiles"), input_blur=ck.get("input_blur", 0.0))
    return thr


def synthetic_maps(infer: ScoreFn, good: np.ndarray, seed: int, quiet: bool = True,
                   batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``(K·N, H, W)`` float32 (map units) of the no-defect check's synthetic anomalies of the uint8 held-out
    images ``good`` ``(N, H, W, 3)`` (``synthetic_defects.anomalies``, every kind, this ``seed``) and their masks
    ``(K·N, H, W)`` bool, scored by ``infer`` in batches of ``batch_size`` (as ``evaluate.no_defect_check``)."""
    maps, masks = [], []
    for kind, images, m in anomalies(good, seed):
        maps.append(score_set(infer, images, batch_size, quiet, f"synthetic {kind}")[0])
        masks.append(m)
    return np.concatenate(maps), np.concatenate(masks)


def _change_head(ck: dict[str, Any], stpm: Any, head: str, coreset: float, bank_max_mb: float,
                 val_images: torch.Tensor, quiet: bool) -> None:
    """Set ``ck``'s head: build the memory bank from its training images where the new head needs one."""
    if head not in HEADS:
        raise UserError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if head != "memory" and not ck["student"]:
        raise UserError(f"head {head} needs a trained student and this checkpoint has none: "
                        f"train with --head {head}")
    have = ck.get("memory_bank") is not None and (ck["training"].get("memory") or {}).get("coreset") == coreset
    if head != "stpm" and not have:
        train = [Path(p) for p in ck["training"].get("train_images", []) if Path(p).is_file()]
        if not train:
            raise UserError("the checkpoint's training images are not on this machine: retrain here with --head")
        images = torch.from_numpy(load_images(train, ck["image_size"], ck["fit"], tiles=tiles.from_meta(ck)))
        spec = get_spec(ck["backbone"])
        pre = Preprocess(spec.mean, spec.std, ck.get("input_blur", 0.0), ck["image_size"])
        bank, info = fit_memory(stpm.teacher, pre, images, 16, coreset, bank_max_mb,
                                int(ck["training"].get("config", {}).get("seed", 0)), quiet)
        ck["memory_bank"] = bank
        ck["training"] = ck["training"] | {"memory": info}
    ck["head"] = head
    if head == "stpm":
        ck["memory_bank"] = None
    ck["head_weights"] = (list(good_head_weights(stpm, ck["image_size"], ck["memory_bank"], ck.get("level_weights"),
                                                 val_images, input_blur=ck.get("input_blur", 0.0)))
                         if head == "both" else None)
