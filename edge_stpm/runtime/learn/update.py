"""Reviewed good parts join a fitted bundle's memory on the runtime install (``edge-stpm update-memory --bundle``).

What it does, in the order it is done:
1. the bundle's bank is read from its graph (the two initializers a teacher pack names) and its teacher pack is the
   one the bundle carries — the new patches are the same teacher's;
2. the new good images' patch features are computed with ONNX Runtime (``DIR/train/good`` of a
   ``dataset --from-history`` folder; ``DIR/test/good`` is held out for the thresholds — a plain folder is split as
   ``fit`` splits one);
3. the new patches enter the bank by one of ``MODES`` (``--method``): ``reselect`` chooses the whole bank again by
   greedy k-center from the old entries and the new patches within the coreset share of every patch seen; ``extend``
   keeps every old entry and continues greedy k-center over the new patches until each is as close to an entry as the
   old patches were (the bank's own spacing, ``coreset.spacing``), at most doubling the bank; ``transfer`` also
   carries the new look (``look.py``: a defocus and a tone curve estimated from the new parts, at the images' own
   resolution) to the model's own training images and extends the bank with all of them; ``auto`` (the default, by
   ``benchmarks/results/learn/drift/RULE.md`` addendum 5) is transfer where those training images are on this
   machine, else reselect. On magnetic tile at the issue's drift (γ 1.3, σ 0.75 px: 43.7 % false calls) one update
   with 50 reviewed parts left 2.1 % with transfer and 26.9 % with reselect (``benchmarks/results/learn/drift/``);
4. thresholds, no-defect check, self-test, README and manifest exactly as ``fit`` writes them, calibrated on the old
   held-out good images (those still on this machine; in the new look with ``transfer``) plus the new held-out ones.
The new bundle appears only complete; the old one is not touched.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import fit_images, list_images, load_images, read_image
from edge_stpm.contract.artifacts import onnx_path, read_onnx_metadata
from edge_stpm.contract.options import DEFAULT_BANK_MAX_MB, DEFAULT_UPDATE_METHOD, UPDATE_METHODS
from edge_stpm.contract.tiles import TileGrid, from_meta
from edge_stpm.runtime.learn.coreset import bank_entries, extend, select, spacing
from edge_stpm.runtime.learn.fit import (
    MIN_IMAGES,
    VAL_FRACTION,
    FitConfig,
    Progress,
    _build,
    need_room,
    patches,
    publish,
    split,
)
from edge_stpm.runtime.learn.look import Look, estimate
from edge_stpm.runtime.learn.pack import Pack, read_pack

# reselect: the whole bank chosen again from old + new within the coreset share; extend: the old entries kept, new
# ones added to the bank's spacing; transfer: the new look carried to the model's own training images (look.py),
# then extend with all of them; auto: transfer where those images are on this machine, else reselect
MODES = UPDATE_METHODS
DEFAULT_GROWTH = 1.0  # extend and transfer: the bank grows by at most this share of its entries per update
# transfer: the look is estimated on at most this many pixels of old images (and of new ones), about 190 MB of
# decoded frames and three times that at the peak; magnetic tile's 571 training images (58 M pixels) all fit
LOOK_PIXELS = 64_000_000


@dataclass
class UpdateConfig:
    bundle: Path
    data: Path
    out: Path
    seed: int = 0
    growth: float = DEFAULT_GROWTH
    bank_max_mb: float = DEFAULT_BANK_MAX_MB
    threads: int | None = None
    mode: str = DEFAULT_UPDATE_METHOD


def read_bank(pack: Pack, bundle: Path) -> np.ndarray:
    """The memory bank ``(M, D)`` float32 in the bundle's FP32 graph."""
    name = pack.doc["template"]["bank_t"]
    model = onnx.load(str(onnx_path(bundle, "fp32")))
    for init in model.graph.initializer:
        if init.name == name:
            return np.ascontiguousarray(numpy_helper.to_array(init).T, np.float32)
    raise UserError(f"{bundle}: its graph has no memory bank ({name}): only a memory-bank bundle can take new parts")


def _new_images(data: Path, seed: int) -> tuple[list[Path], list[Path]]:
    """(images for the memory, held-out images for the thresholds)."""
    data = Path(data)
    if (data / "train" / "good").is_dir():
        held = data / "test" / "good"
        return list_images(data / "train" / "good"), (list_images(held) if held.is_dir() else [])
    if not data.is_dir():
        raise UserError(f"no folder at {data}")
    paths = list_images(data)
    if len(paths) < MIN_IMAGES:
        return paths, []
    val, train = split(len(paths), VAL_FRACTION, seed)
    return [paths[i] for i in train], [paths[i] for i in val]


def _old_report(bundle: Path) -> dict[str, Any]:
    f = Path(bundle) / "fit.json"
    try:
        doc = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _check(cfg: UpdateConfig) -> None:
    if cfg.mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, not {cfg.mode}")
    if not 0 <= cfg.growth <= 10:
        raise UserError(f"growth must be between 0 and 10, not {cfg.growth}")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: update-memory writes a new bundle folder")


def resolve_method(mode: str, train_paths: list[str]) -> tuple[str, str]:
    """(the method that runs, why): ``auto`` is transfer where the model's own training images ``train_paths`` are
    on this machine (a model fitted or updated here), else reselect. Used by ``--bundle`` and ``--checkpoint``."""
    if mode != "auto":
        return mode, f"--method {mode}"
    if any(Path(p).is_file() for p in train_paths):
        return "transfer", "auto: the model's training images are on this machine, so the new look is carried to them"
    return "reselect", "auto: the model's training images are not on this machine, so the bank is chosen again"


def extended(old: np.ndarray, feats: np.ndarray, growth: float, bank_max_mb: float,
             on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``old`` with rows of ``feats`` added until every one is within the bank's own spacing of an entry, at most
    ``growth`` × its entries more and within ``bank_max_mb`` (modes extend and transfer); ``on_step(done, cap)``."""
    cap = max(min(int(round(growth * len(old))), bank_entries(10**12, 1.0, old.shape[1], bank_max_mb) - len(old)), 0)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if on_step is not None:
            on_step(done[0], cap)

    return np.concatenate([old, feats[extend(old, feats, spacing(old), cap, step)]])


def new_bank(cfg: UpdateConfig, old: np.ndarray, feats: np.ndarray, seen: int, coreset: float,
             on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The bank after the update: ``old`` extended by rows of ``feats`` (or, mode reselect, chosen again)."""
    if cfg.mode == "reselect":
        pool = np.concatenate([old, feats])
        k = max(len(old), bank_entries(seen, coreset, old.shape[1], cfg.bank_max_mb))
        return pool[select(pool, k, cfg.seed)]
    return extended(old, feats, cfg.growth, cfg.bank_max_mb, on_step)


def _load(paths: list[Path], pack: Pack, grid: TileGrid | None = None) -> np.ndarray:
    """The images (a tiled bundle's: their tiles, image by image) at the pack's size."""
    if not paths:
        return np.empty((0, pack.size, pack.size, 3), np.uint8)
    return load_images(paths, pack.size, pack.doc["fit"], tiles=grid)


def _sample(paths: list[Path], seed: int) -> list[np.ndarray]:
    """Images read in a seeded order until ``LOOK_PIXELS`` would be passed (all of them when they fit: the look's
    histograms and sharpness do not depend on the order)."""
    out: list[np.ndarray] = []
    seen = 0
    for i in np.random.default_rng(seed).permutation(len(paths)):
        img = read_image(paths[int(i)])
        seen += img.shape[0] * img.shape[1]
        if out and seen > LOOK_PIXELS:
            break
        out.append(img)
    return out


def carry_look(train_paths: list[str], new: list[Path], old_val: list[Path], size: int, fit_mode: str,
               grid: TileGrid | None, on_step: Callable[[int, int], None] | None = None, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, Look]:
    """(the model's own training images in the new look, its held-out images in the new look, the look) — mode
    transfer, for a bundle and a checkpoint alike. The look is estimated and carried at the images' own resolution
    (look.py) on at most ``LOOK_PIXELS`` of old and of new images, then every image is carried one at a time and
    fitted to the model's size like any other (memory stays bounded for camera-sized frames). One UserError when
    the training images are no longer on this machine."""
    paths = [Path(p) for p in train_paths if Path(p).is_file()]
    if not paths:
        raise UserError("the model's own training images are not on this machine: the new look cannot be carried "
                        "to them (update without it)")
    look = estimate(_sample(paths, seed), _sample(list(new), seed), on_step)
    n = grid.count if grid is not None else 1

    def carried(ps: list[Path]) -> np.ndarray:
        out = np.empty((len(ps) * n, size, size, 3), np.uint8)
        for i, p in enumerate(ps):
            out[i * n : (i + 1) * n] = fit_images([look.apply_one(read_image(p))], size, fit_mode, grid)
        return out

    return carried(paths), carried(list(old_val)), look


def update(cfg: UpdateConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Write the bundle ``cfg.out``: ``cfg.bundle`` with the good images of ``cfg.data`` in its memory and its
    thresholds calibrated again (see the module doc); returns the report (``fit.json`` of the new bundle)."""
    _check(cfg)
    t0 = time.perf_counter()
    tell = progress or (lambda stage, done, total: None)
    pack = read_pack(cfg.bundle)
    old = read_bank(pack, cfg.bundle)
    new, held = _new_images(cfg.data, cfg.seed)
    if not new:
        raise UserError(f"no good images in {cfg.data} (expected train/good/ of a dataset --from-history folder, "
                        "or a folder of images)")
    before = _old_report(cfg.bundle)
    method, why = resolve_method(cfg.mode, before.get("train_image_paths", []))
    cfg = replace(cfg, mode=method)
    old_val = [Path(p) for p in before.get("val_images", []) if Path(p).is_file()]
    if not old_val and not held:
        raise UserError(f"no held-out good images to calibrate on: the bundle's are not on this machine and {cfg.data} "
                        f"has too few images to hold some out (at least {MIN_IMAGES}) and no test/good/")
    grid = from_meta(read_onnx_metadata(pack.template))  # a tiled bundle is updated with tiles
    images = _load(new, pack, grid)
    done = [0]

    def step_on(n: int) -> None:
        done[0] += n
        tell("teacher features", done[0], len(images))

    feats = patches(pack, images, cfg.threads, step_on)
    look = None
    if cfg.mode != "transfer":
        good = _load(old_val, pack, grid)
    else:  # the held-out images come in the new look
        carried, good, look = carry_look(before.get("train_image_paths", []), new, old_val, pack.size,
                                         pack.doc["fit"], grid, lambda i, n: tell("the new look (defocus tried)", i, n),
                                         cfg.seed)
        done[0] = 0

        def carried_on(n: int) -> None:
            done[0] += n
            tell("teacher features of the training images in the new look", done[0], len(carried))

        feats = np.concatenate([feats, patches(pack, carried, cfg.threads, carried_on)])
    t_feat = time.perf_counter()
    seen = int(before.get("patches", before.get("train_images", len(old)) * before.get("patches_per_image", 1)))
    need_room(Path(cfg.out), pack, len(old) + max(len(old), 1))
    bank = new_bank(cfg, old, feats, seen + len(feats), float(before.get("coreset", 0.01)),
                    lambda n, cap: tell("memory (new entries, at most)", n, cap))
    t_core = time.perf_counter()
    val = old_val + held
    good = np.concatenate([good, _load(held, pack, grid)])
    step = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": str(cfg.bundle),
            "data": str(cfg.data), "mode": cfg.mode, "why": why, "added_images": len(new),
            "held_out_added": len(held),
            "patches_added": int(len(feats)), "entries_before": int(len(old)), "entries_after": int(len(bank)),
            "image_threshold_before": float(before.get("thresholds", {}).get("image", float("nan"))),
            "look": look.describe() if look is not None else None}
    info = {k: before[k] for k in ("teacher", "coreset_chunk", "patches_per_image") if k in before} | {
        "coreset": float(before.get("coreset", 0.01)),
        "data": str(cfg.data), "images": int(before.get("images", 0)) + len(new) + len(held),
        "held_out": len(val), "train_images": int(before.get("train_images", 0)) + len(new),
        "patches": seen + len(feats), "seed": cfg.seed, "tiles": grid.as_meta() if grid else None,
        "val_images": [str(p) for p in val],
        "train_image_paths": list(before.get("train_image_paths", [])) + [str(p) for p in new],
        "memory_updates": list(before.get("memory_updates", [])) + [step]}
    # the update keeps the graphs its bundle had: FP32, and FP16 when the bundle carries an FP16 template
    precisions = ("fp32", "fp16") if pack.template_for("fp16") is not None else ("fp32",)
    fit_cfg = FitConfig(cfg.bundle, cfg.data, cfg.out, seed=cfg.seed, threads=cfg.threads, precisions=precisions,
                        tiles=grid)
    return publish(Path(cfg.out), lambda tmp: _build(fit_cfg, pack, bank, good, tmp, info),
                   {"features": t_feat - t0, "coreset": t_core - t_feat}, t0)
