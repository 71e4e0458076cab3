"""Reviewed good parts join the memory in seconds, with nothing trained (``edge-stpm update-memory --checkpoint``).

The new good images' patch features (the frozen teacher's, as the bank was built) enter the bank by the same methods
as a bundle's update (``runtime/learn/update.py``; the default ``auto`` is transfer where the checkpoint's training
images are on this machine, else reselect): reselect puts them beside the bank's entries and greedy k-center picks
the new bank from both within the budget — the coreset fraction of all patches seen so far, capped in bytes as before —
so a new good variant, far from every entry, is taken first; extend keeps every entry and adds new ones to the bank's
own spacing; transfer carries the new look to the training images too (``runtime/learn/look.py``). The
thresholds are then calibrated again, the same method, on the old held-out good images plus the new held-out ones
(``DIR/test/good`` of a ``dataset --from-history`` folder). A checkpoint with an STPM student keeps it unchanged
(``both``: the STPM map is as before; only the memory changes).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import list_images, load_images
from edge_stpm.contract import tiles
from edge_stpm.contract.options import DEFAULT_UPDATE_METHOD, UPDATE_METHODS
from edge_stpm.runtime.learn import thresholds
from edge_stpm.runtime.learn.update import DEFAULT_GROWTH, carry_look, extended, resolve_method
from edge_stpm.training import checkpoint
from edge_stpm.training.backbones import get_spec
from edge_stpm.training.evaluate import score_set, torch_infer
from edge_stpm.training.heads.memory import PROJECTION_DIMS, bank_entries, collect_patches, k_center_greedy
from edge_stpm.training.model import Preprocess


def _good_folders(data: Path) -> tuple[list[Path], list[Path]]:
    """(images for the memory, held-out images for the thresholds): an MVTec folder's train/good and test/good,
    or every image of a plain folder (then nothing new is held out)."""
    data = Path(data)
    if (data / "train" / "good").is_dir():
        held = data / "test" / "good"
        return list_images(data / "train" / "good"), (list_images(held) if held.is_dir() else [])
    if data.is_dir():
        return list_images(data), []
    raise UserError(f"no folder at {data}")


def update_memory(ckpt: Path, data: Path, out: Path, quiet: bool = False,
                  method: str = DEFAULT_UPDATE_METHOD) -> dict[str, Any]:
    """Write ``out``: ``ckpt`` with the good images of ``data`` added to its memory and its thresholds calibrated
    again; returns what changed and how long each step took."""
    t0 = time.perf_counter()
    ck = checkpoint.read(Path(ckpt))
    if ck.get("memory_bank") is None:
        raise UserError(f"{ckpt} has no memory bank (head {ck.get('head', 'stpm')}): reviewed good parts join a "
                        "memory-bank head only; for an STPM head fine-tune with train --init-from")
    if method not in UPDATE_METHODS:
        raise UserError(f"method must be one of {', '.join(UPDATE_METHODS)}, not {method}")
    new, held = _good_folders(data)
    if not new:
        raise UserError(f"no good images in {data} (expected train/good/ of a dataset --from-history folder, or "
                        "a folder of images)")
    old_val = [Path(p) for p in ck["training"].get("val_images", []) if Path(p).is_file()]
    if not old_val and not held:
        raise UserError("no held-out good images to calibrate on: the checkpoint's are not on this machine and "
                        f"{data} has no test/good/")
    method, why = resolve_method(method, list(ck["training"].get("train_images", [])))
    size, fit = ck["image_size"], ck["fit"]
    stpm = checkpoint.build_stpm(ck)
    spec = get_spec(ck["backbone"])
    pre = Preprocess(spec.mean, spec.std, ck.get("input_blur", 0.0), size)
    grid = tiles.from_meta(ck)
    stpm.teacher.eval()

    def feats(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images)
        with torch.no_grad():
            return collect_patches(stpm.teacher, (pre(x[i : i + 16]) for i in range(0, len(x), 16))).cpu()

    patches = feats(load_images(new, size, fit, tiles=grid))
    look = None
    if method == "transfer":  # the held-out images come in the new look
        carried, good, look = carry_look(list(ck["training"].get("train_images", [])), new, old_val, size, fit, grid)
        patches = torch.cat([patches, feats(carried)])
    else:
        good = load_images(old_val, size, fit, tiles=grid) if old_val else np.empty((0, size, size, 3), np.uint8)
    t_feat = time.perf_counter()
    old = ck["memory_bank"].float()
    info = dict(ck["training"].get("memory") or {})
    max_mb = float(info.get("bank_max_mb", 32.0))
    seen = int(info.get("patches", old.shape[0])) + int(patches.shape[0])
    if method == "reselect":
        k = max(old.shape[0], bank_entries(seen, float(info.get("coreset", 0.01)), old.shape[1], max_mb))
        pool = torch.cat([old, patches])
        bank = pool[k_center_greedy(pool, k, int(ck["training"].get("config", {}).get("seed", 0)),
                                    dims=int(info.get("projection_dims", PROJECTION_DIMS)))].contiguous()
    else:
        bank = torch.from_numpy(extended(old.numpy(), patches.numpy(), DEFAULT_GROWTH, max_mb)).contiguous()
    t_core = time.perf_counter()
    ck["memory_bank"] = bank
    val = old_val + held
    infer = torch_infer(checkpoint.pipeline(ck, stpm), torch.device("cpu"))
    good = np.concatenate([good, load_images(held, size, fit, tiles=grid)]) if held else good
    maps, scores = score_set(infer, good, 16, quiet, "held-out good images")
    old_thr = ck["thresholds"]
    thr = thresholds.calibrate(tiles.per_frame(grid, scores), maps, **_same_method(old_thr))
    t_cal = time.perf_counter()
    step = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "from": str(ckpt), "data": str(data),
            "mode": method, "why": why, "look": look.describe() if look is not None else None,
            "added_images": len(new), "held_out_added": len(held), "patches_added": int(patches.shape[0]),
            "entries_before": int(old.shape[0]), "entries_after": int(bank.shape[0]),
            "features_seconds": t_feat - t0, "coreset_seconds": t_core - t_feat, "calibrate_seconds": t_cal - t_core,
            "image_threshold_before": float(old_thr["image"]), "image_threshold_after": float(thr["image"])}
    training = ck["training"] | {
        "train_images": list(ck["training"].get("train_images", [])) + [str(p) for p in new],
        "val_images": [str(p) for p in val],
        "memory": info | {"patches": seen, "entries": int(bank.shape[0]), "bytes": int(bank.numel() * 4)},
        "memory_updates": list(ck["training"].get("memory_updates", [])) + [step]}
    checkpoint.save(Path(out), stpm, image_size=size, fit=fit, thresholds=thr, teacher_source=ck["teacher_source"],
                    training=training, sigma=ck.get("smoothing_sigma", 0.0),
                    top_percent=ck.get("score_top_percent", 0.0),
                    level_weights=ck.get("level_weights"), head=ck.get("head", "memory"), memory=bank,
                    head_weights=ck.get("head_weights"), tiles=ck.get("tiles"), input_blur=ck.get("input_blur", 0.0))
    return step | {"seconds": time.perf_counter() - t0, "out": str(out)}


def _same_method(thr: dict[str, Any]) -> dict[str, Any]:
    """The calibration settings the checkpoint's thresholds were made with (an F1 threshold, set on a labelled split,
    cannot be remade from good images: logsigma then, and ``calibrate --data`` again if wanted)."""
    method = thr.get("method", "logsigma")
    if method not in thresholds.METHODS:
        return {"method": "logsigma"}
    out: dict[str, Any] = {"method": method}
    for key in ("k", "pixel_k", "image_q", "pixel_q"):
        if thr.get(key) is not None:
            out[key] = thr[key]
    if thr.get("pixel_method") == "p999":  # segf1 needs the synthetic maps: logsigma's pixel k then
        out["pixel_method"] = "p999"
    return out
