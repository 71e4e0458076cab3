"""Training: student regression on the frozen teacher, model selection on held-out good images,
threshold calibration, and the checkpoint."""
from __future__ import annotations

import contextlib
import copy
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import output_dir, write_json
from edge_stpm.common.images import FIT_MODES, good_images, load_images
from edge_stpm.common.progress import bar, console
from edge_stpm.contract.options import DEFAULT_FIT, DEFAULT_PIXEL_METHOD, RANGES, default_input_blur
from edge_stpm.contract.tiles import TileGrid, parse_tiles, per_frame
from edge_stpm.runtime.learn import thresholds
from edge_stpm.runtime.learn.synthetic import proxy_auroc
from edge_stpm.training import checkpoint as ckpt_io
from edge_stpm.training.backbones import get_spec, pretrained_state
from edge_stpm.training.devices import low_memory_default, pick_device, return_freed_memory, set_threads
from edge_stpm.training.evaluate import torch_infer
from edge_stpm.training.figures import loss_curve
from edge_stpm.training.heads.memory import (
    DEFAULT_BANK_MAX_MB,
    DEFAULT_CORESET,
    DEFAULT_CORESET_CHUNK,
    PROJECTION_DIMS,
    fit_memory,
)
from edge_stpm.training.model import (
    DEFAULT_HEAD,
    DEFAULT_LOSS_REDUCTION,
    DEFAULT_MAP_COMBINE,
    DEFAULT_SCORE_TOP_PERCENT,
    HEADS,
    LOSS_REDUCTIONS,
    MAP_COMBINES,
    STPM,
    InspectionPipeline,
    Preprocess,
    good_head_weights,
    good_level_weights,
    level_distance,
    stpm_loss,
)


@dataclass
class TrainConfig:
    """Every setting of a training run. Optimiser as the official STPM code (SGD lr 0.4, momentum 0.9, weight decay
    1e-4, batch 32, checkpoint chosen by held-out loss); loss reduction, fit, smoothing and epochs as chosen by the
    rule in benchmarks/results/accuracy/RULE.md (the official code sums the loss over the batch, trains 100 epochs on
    stretched input and does not smooth); the head (levels' weighted sum, top-2 % image score) by RULE_R2.md (the
    official head multiplies the levels and takes the max)."""

    data: Path
    out: Path
    backbone: str = "resnet18"
    epochs: int = 30
    lr: float = 0.4
    loss: str = DEFAULT_LOSS_REDUCTION
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 32
    val_fraction: float = 0.2
    image_size: int = 256
    fit: str | None = None  # None: the fit the head was chosen with (contract.options.DEFAULT_FIT)
    tiles: str | None = None  # ROWSxCOLS: the tiled fit (contract/tiles.py); None / 1x1: the whole frame
    tile_overlap: float = 0.125
    sigma: float = 4.0
    input_blur: float | None = None  # σ of the input blur (model pixels); None: the head's (default_input_blur)
    score_top_percent: float = DEFAULT_SCORE_TOP_PERCENT
    map_combine: str = DEFAULT_MAP_COMBINE
    head: str = DEFAULT_HEAD
    coreset: float = DEFAULT_CORESET
    bank_max_mb: float = DEFAULT_BANK_MAX_MB
    coreset_dims: int = PROJECTION_DIMS  # k-center on a random projection to this many dims; 0 = the features
    coreset_chunk: int = DEFAULT_CORESET_CHUNK  # > 0: chunked k-center (runtime/learn/coreset.py), 0 = exact
    seed: int = 0
    device: str = "auto"
    teacher_weights: str | None = None
    threshold_method: str = "logsigma"
    threshold_k: float | None = None  # None: the head's (contract.options.DEFAULT_THRESHOLD_K)
    low_memory: bool | None = None
    teacher_cache: bool | None = None
    threads: int | None = None
    quiet: bool = False
    init_from: Path | None = None  # fine-tune: start from this checkpoint's student and teacher, add its images
    extra: dict[str, Any] = field(default_factory=dict)


def _check(cfg: TrainConfig) -> None:
    get_spec(cfg.backbone)
    if cfg.fit is None:
        cfg.fit = DEFAULT_FIT.get(cfg.head, "pad")
    if cfg.fit not in FIT_MODES:
        raise UserError(f"unknown fit mode {cfg.fit!r}; choose one of {', '.join(FIT_MODES)}")
    parse_tiles(cfg.tiles, cfg.tile_overlap)
    if cfg.loss not in LOSS_REDUCTIONS:
        raise UserError(f"unknown loss reduction {cfg.loss!r}; choose one of {', '.join(LOSS_REDUCTIONS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UserError("epochs, batch size and learning rate must be positive")
    if not 0 < cfg.val_fraction < 1:
        raise UserError("--val-fraction must be between 0 and 1")
    if cfg.image_size % 16 or cfg.image_size < 32:
        raise UserError("--size must be a multiple of 16, at least 32")
    if cfg.sigma < 0:
        raise UserError("--smoothing must be 0 (no smoothing) or positive")
    if cfg.input_blur is None:
        cfg.input_blur = default_input_blur(cfg.head, cfg.image_size)
    if not RANGES["input_blur"][0] <= cfg.input_blur <= RANGES["input_blur"][1]:
        raise UserError(f"--input-blur must be in {RANGES['input_blur'][0]:g}..{RANGES['input_blur'][1]:g} pixels "
                        f"(0 = none), not {cfg.input_blur:g}")
    if cfg.map_combine not in MAP_COMBINES:
        raise UserError(f"unknown map combination {cfg.map_combine!r}; choose one of {', '.join(MAP_COMBINES)}")
    if not 0 <= cfg.score_top_percent <= 10:
        raise UserError("--score-top must be in 0..10 (% of the map; 0 = its max)")
    if cfg.head not in HEADS + ("auto",):
        raise UserError(f"unknown head {cfg.head!r}; choose one of {', '.join(HEADS)}, auto")
    if not 0 < cfg.coreset <= 1 or cfg.bank_max_mb <= 0:
        raise UserError("--coreset must be in (0, 1] and --bank-max-mb positive")
    if cfg.threshold_k is not None and not 0 < cfg.threshold_k <= 10:
        raise UserError("--threshold-k must be in (0, 10]")
    if cfg.threshold_method not in thresholds.METHODS:
        raise UserError(f"unknown threshold method {cfg.threshold_method!r}; choose one of {', '.join(thresholds.METHODS)}")


class _KeepRunningStats:
    """Context for checkpoint recomputation: batch norm still normalises with the batch's statistics (so the
    recomputed activations equal the first pass) but does not update its running statistics a second time."""

    def __init__(self, module: nn.Module) -> None:
        self.bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self) -> None:
        self.saved = [m.momentum for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, mom in zip(self.bns, self.saved):
            m.momentum = mom


def student_features(student: nn.Module, x: torch.Tensor, low_memory: bool) -> list[torch.Tensor]:
    """The student's pyramid. ``low_memory``: activation checkpointing per block (each child of each stage):
    only block inputs are kept for the backward pass and each block is recomputed there, cutting peak memory
    several-fold for about a third more compute; the gradients are the same."""
    if not low_memory:
        return student(x)
    feats = []
    ctx = lambda: (contextlib.nullcontext(), _KeepRunningStats(student))  # noqa: E731
    for stage in student.stages:
        for block in stage.children():
            x = checkpoint(block, x, use_reentrant=False, context_fn=ctx)
        feats.append(x)
    return feats


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB), from getrusage (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@torch.no_grad()
def score_images(pipe: InspectionPipeline, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Run the pipeline over uint8 ``(N, H, W, 3)`` images; returns maps ``(N, H, W)`` and scores ``(N,)``."""
    maps, scores = [], []
    for i in range(0, len(images), batch_size):
        m, s = pipe(images[i : i + batch_size])
        maps.append(m[:, 0].float().cpu().numpy())
        scores.append(s.float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


TEACHER_CACHE_MAX_BYTES = 6 * 2**30  # never more than this for the cached teacher pyramid
TEACHER_CACHE_RAM_SHARE = 0.35  # ... nor more than this share of the memory available when training starts


class TeacherCache:
    """The frozen teacher's pyramid of every training and held-out image, computed once (float32, in eval mode, as
    every step computed it) instead of once per epoch. Valid because the training views are fixed: there is no
    augmentation, so image ``i`` always reaches the teacher as the same tensor. ``None`` from ``build`` when it
    would not fit (see ``TEACHER_CACHE_*``); training then runs the teacher every step, with the same result."""

    def __init__(self, levels: list[torch.Tensor]) -> None:
        self.levels = levels

    def __getitem__(self, idx: torch.Tensor) -> list[torch.Tensor]:
        return [lv[idx] for lv in self.levels]

    @staticmethod
    def bytes_needed(stpm: STPM, n: int, size: int) -> int:
        with torch.no_grad():
            feats = stpm.teacher(torch.zeros(1, 3, size, size, device=next(stpm.teacher.parameters()).device))
        return n * sum(f.numel() * 4 for f in feats)

    @staticmethod
    @torch.no_grad()
    def build(stpm: STPM, pre: Preprocess, images: torch.Tensor, batch_size: int, amp: bool,
              wanted: bool | None, low_memory: bool) -> "TeacherCache | None":
        if wanted is False:
            return None
        need = TeacherCache.bytes_needed(stpm, len(images), images.shape[1])
        if wanted is None:
            budget = min(TEACHER_CACHE_MAX_BYTES, TEACHER_CACHE_RAM_SHARE * psutil.virtual_memory().available)
            if images.is_cuda:
                free, _ = torch.cuda.mem_get_info(images.device)
                budget = min(budget, TEACHER_CACHE_RAM_SHARE * free)
            if low_memory:
                budget /= 4
            if need > budget:
                return None
        levels: list[list[torch.Tensor]] = []
        for i in range(0, len(images), batch_size):
            x = pre(images[i : i + batch_size]).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                t = stpm.teacher(x)
            levels.append([f.float() for f in t])
        return TeacherCache([torch.cat(parts) for parts in zip(*levels)])


@torch.no_grad()
def _val_loss(stpm: STPM, pre: Preprocess, images: torch.Tensor, batch_size: int, amp: bool,
              cache: TeacherCache | None = None, val_idx: torch.Tensor | None = None) -> float:
    stpm.eval()
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = pre(images[i : i + batch_size]).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            if cache is not None and val_idx is not None:
                t, s = cache[val_idx[i : i + batch_size]], stpm.student(x)
            else:
                t, s = stpm(x)
        per_image = sum(level_distance(a.float(), b.float()).mean(dim=(1, 2, 3)) for a, b in zip(t, s))
        total += float(per_image.sum())
    return total / len(images)


def _inputs(cfg: TrainConfig, init: dict[str, Any] | None = None) -> tuple[list[Path], Any, str]:
    """The good images and the teacher's weights (UserError for too few images). With ``init`` (``--init-from``)
    its teacher, and its own good images (those still on this machine) after the new ones."""
    paths = good_images(Path(cfg.data))
    if init is not None:
        have = set(paths)
        old = [Path(x) for x in init["training"].get("train_images", []) + init["training"].get("val_images", [])]
        paths += [q for q in old if q.is_file() and q not in have]
        return _enough(paths, cfg), None, init["teacher_source"]  # its teacher is loaded into the new STPM
    teacher_state, teacher_source = pretrained_state(cfg.backbone, cfg.teacher_weights)
    if teacher_source == "random":
        console.print("[yellow]warning: teacher has random weights (for tests only); the model will not be useful")
    return _enough(paths, cfg), teacher_state, teacher_source


def _enough(paths: list[Path], cfg: TrainConfig) -> list[Path]:
    if len(paths) < 5:
        raise UserError(f"only {len(paths)} good images in {cfg.data}: need at least 5 (20% are held out)")
    return paths


def _init_checkpoint(cfg: TrainConfig) -> dict[str, Any] | None:
    """``--init-from``: the checkpoint to fine-tune (the same backbone; a student to start from, unless the head is
    memory, which trains nothing)."""
    if cfg.init_from is None:
        return None
    ck = ckpt_io.read(Path(cfg.init_from))
    if ck["backbone"] != cfg.backbone:
        raise UserError(f"--init-from {cfg.init_from} is a {ck['backbone']} model; train it with --backbone "
                        f"{ck['backbone']}")
    if not ck["student"] and cfg.head != "memory":
        raise UserError(f"--init-from {cfg.init_from} has no trained student (a memory-bank head): add reviewed good "
                        "parts to it with edge-stpm update-memory, or train without --init-from")
    return ck


def _split(cfg: TrainConfig, paths: list[Path], device: torch.device, rng: np.random.Generator,
           grid: TileGrid | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Decode every image (on ``device``; with a tile grid, every image's tiles in a row) and hold out
    ``val_fraction`` of the images: (images, val image indices, train image indices)."""
    with bar(cfg.quiet) as progress:
        task = progress.add_task("decode images", total=len(paths), info="")
        images_np = load_images(paths, cfg.image_size, cfg.fit, on_done=lambda n: progress.advance(task, n),
                                tiles=grid)
    images = torch.from_numpy(images_np).to(device)
    perm = rng.permutation(len(paths))
    n_val = max(1, int(round(cfg.val_fraction * len(paths))))
    return images, np.sort(perm[:n_val]), perm[n_val:]


def _step(stpm: STPM, x: torch.Tensor, t: list[torch.Tensor] | None, opt: torch.optim.Optimizer, scaler: Any,
          reduction: str, cuda: bool, low_memory: bool) -> float:
    """One SGD step of the student on normalised ``x`` (the teacher's pyramid ``t`` from the cache, or computed
    here); returns the batch loss."""
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        if t is None:
            with torch.no_grad():
                t = stpm.teacher(x)
        loss = stpm_loss(t, student_features(stpm.student, x, low_memory), reduction)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


def _head(stpm: STPM, cfg: TrainConfig, head: str, device: torch.device, val_images: torch.Tensor,
          memory: torch.Tensor | None = None) -> tuple[InspectionPipeline, dict[str, Any]]:
    """The inspection pipeline of the kept student and/or memory bank with ``head``, and the head's settings for
    the checkpoint: for ``weighted_sum`` each STPM level is weighted by 1 / its spread on the held-out good images;
    for head ``both`` each of the two maps likewise (``head_weights``)."""
    weights = None
    if cfg.map_combine == "weighted_sum" and head != "memory":
        weights = good_level_weights(InspectionPipeline(stpm, cfg.image_size, input_blur=cfg.input_blur or 0.0)
                                     .to(device).eval(), val_images, cfg.batch_size)
    head_weights = None
    if head == "both":
        head_weights = good_head_weights(stpm, cfg.image_size, memory, weights, val_images.to(device), 8,
                                         input_blur=cfg.input_blur or 0.0)
    memory = memory if head != "stpm" else None
    pipe = InspectionPipeline(stpm, cfg.image_size, sigma=cfg.sigma, top_percent=cfg.score_top_percent,
                              level_weights=weights, head=head, memory=memory,
                              head_weights=head_weights, input_blur=cfg.input_blur or 0.0).to(device).eval()
    return pipe, {"level_weights": weights, "head": head, "memory": memory, "head_weights": head_weights}


def _calibrated_head(stpm: STPM, cfg: TrainConfig, device: torch.device, val_images: torch.Tensor,
                     memory: torch.Tensor | None,
                     grid: TileGrid | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The head (``cfg.head``, or for ``auto`` the one of stpm / memory / both with the highest proxy AUROC on
    synthetic anomalies of the held-out good images), its thresholds and its no-defect check. Returns (head
    settings, thresholds, proxy report with ``choice`` for auto)."""
    good = val_images.cpu().numpy()
    tried: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
    for head in (("memory", "both", "stpm") if cfg.head == "auto" else (cfg.head,)):
        pipe, settings = _head(stpm, cfg, head, device, val_images, memory)
        val_maps, val_scores = score_images(pipe, val_images, 8 if memory is not None else cfg.batch_size)
        k = thresholds.default_k(head) if cfg.threshold_k is None else cfg.threshold_k
        thr = thresholds.calibrate(per_frame(grid, val_scores), val_maps, cfg.threshold_method, k,
                                   pixel_method=DEFAULT_PIXEL_METHOD.get(cfg.head))
        proxy = proxy_auroc(torch_infer(pipe, device), good, val_scores, seed=cfg.seed) | {"tiles": grid is not None}
        tried[head] = (settings, thr, proxy)
    best = max(tried, key=lambda h: tried[h][2]["mean"])  # first of equals: the cheaper head
    settings, thr, proxy = tried[best]
    if cfg.head == "auto":
        proxy = proxy | {"choice": {"chosen": best, "by": "highest mean proxy image AUROC",
                                    "mean": {h: t[2]["mean"] for h, t in tried.items()}}}
    return settings, thr, proxy


def _fit_student(stpm: STPM, pre: Preprocess, images: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray,
                 cfg: TrainConfig, device: torch.device, low_memory: bool,
                 rng: np.random.Generator) -> dict[str, Any]:
    """The SGD epochs of the student; loads the epoch with the lowest held-out loss into ``stpm`` and returns what
    the summary reports of the fit."""
    cuda = device.type == "cuda"
    opt = torch.optim.SGD(stpm.student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    c0 = time.perf_counter()
    cache = TeacherCache.build(stpm, pre, images, cfg.batch_size, cuda, cfg.teacher_cache, low_memory)
    cache_s = time.perf_counter() - c0
    val_idx_t = torch.from_numpy(val_idx).to(device)
    val_images = images[val_idx_t]
    n_batches = math.ceil(len(train_idx) / cfg.batch_size)
    history: list[dict[str, float]] = []
    best = (math.inf, -1, copy.deepcopy(stpm.student.state_dict()))
    diverged_at: int | None = None
    train_images_seen, train_seconds = 0, 0.0

    with bar(cfg.quiet) as progress:
        task = progress.add_task(f"train {cfg.backbone}", total=cfg.epochs * n_batches, info="")
        for epoch in range(1, cfg.epochs + 1):
            stpm.train()
            order = torch.from_numpy(rng.permutation(train_idx)).to(device)
            e0 = time.perf_counter()
            running, seen = 0.0, 0
            for b in range(n_batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                loss = _step(stpm, pre(images[idx]), cache[idx] if cache is not None else None, opt, scaler, cfg.loss,
                             cuda, low_memory)
                running += loss * (1 if cfg.loss == "sum" else len(idx))
                seen += len(idx)
                progress.update(task, advance=1, info=f"epoch {epoch}/{cfg.epochs} loss {running / seen:.4f}")
            if cuda:
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - e0
            train_images_seen += seen
            train_loss = running / seen
            val_loss = _val_loss(stpm, pre, val_images, cfg.batch_size, cuda, cache, val_idx_t)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "seconds": time.perf_counter() - e0})
            if math.isfinite(val_loss) and val_loss < best[0]:
                best = (val_loss, epoch, copy.deepcopy(stpm.student.state_dict()))
            progress.update(task, info=f"epoch {epoch}/{cfg.epochs} loss {train_loss:.4f} val {val_loss:.4f} "
                                       f"best {best[0]:.4f}@{best[1]}")
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                diverged_at = epoch
                console.print(f"[yellow]training diverged at epoch {epoch} (loss not finite); keeping epoch {best[1]}")
                break
    cached = cache is not None
    del cache  # the pyramid can be large; thresholds and the checkpoint do not need it
    if best[1] < 0:
        raise UserError("training diverged before any usable epoch: lower --lr")
    stpm.student.load_state_dict(best[2])
    return {"best_epoch": best[1], "best_val_loss": best[0], "epochs_run": len(history), "diverged_at": diverged_at,
            "history": history, "train_seconds": train_seconds,
            "train_images_per_s": train_images_seen / train_seconds if train_seconds else None,
            "teacher_cache": cached, "teacher_cache_seconds": cache_s if cached else None}


def _no_student_fit() -> dict[str, Any]:
    """What the summary says of the student when the head needs none (memory): nothing was trained."""
    return {"best_epoch": 0, "best_val_loss": None, "epochs_run": 0, "diverged_at": None, "history": [],
            "train_seconds": 0.0, "train_images_per_s": None, "teacher_cache": False, "teacher_cache_seconds": None}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fit the head (train the student and keep the epoch with the lowest validation loss; and/or build the memory
    bank), calibrate thresholds, write RUN_DIR/model.pt. Returns the training summary stored in the checkpoint.
    """
    _check(cfg)
    out = output_dir(Path(cfg.out))
    device = pick_device(cfg.device)
    if device.type == "cpu":
        set_threads(cfg.threads)
    init = _init_checkpoint(cfg)
    paths, teacher_state, teacher_source = _inputs(cfg, init)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    t0 = time.perf_counter()
    grid = parse_tiles(cfg.tiles, cfg.tile_overlap)
    images, val_idx, train_idx = _split(cfg, paths, device, rng, grid)
    decode_s = time.perf_counter() - t0
    warnings = [w for w in (thresholds.few_held_out(len(val_idx)),) if w]
    for w in warnings:
        console.print(f"warning: {w}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    n = grid.count if grid else 1
    rows = lambda idx: (np.asarray(idx)[:, None] * n + np.arange(n)).ravel()  # noqa: E731  image → its tiles' rows
    val_images = images[torch.from_numpy(rows(val_idx)).to(device)]
    low_memory = low_memory_default(device) if cfg.low_memory is None else cfg.low_memory
    if low_memory and device.type == "cpu":
        return_freed_memory()
    stpm = STPM(cfg.backbone, teacher_state).to(device)
    if init is not None:
        stpm.teacher.load_state_dict(init["teacher"])
        if init["student"]:
            stpm.student.load_state_dict(init["student"])
    spec = get_spec(cfg.backbone)
    pre = Preprocess(spec.mean, spec.std, cfg.input_blur or 0.0, cfg.image_size).to(device)
    cuda = device.type == "cuda"
    if cfg.head == "memory":
        fit = _no_student_fit()
    else:
        stpm = stpm.to(memory_format=torch.channels_last)
        fit = _fit_student(stpm, pre, images, rows(train_idx), rows(val_idx), cfg, device, low_memory, rng)
    stpm = stpm.float().to(memory_format=torch.contiguous_format).eval()
    memory, memory_info = (None, None) if cfg.head == "stpm" else fit_memory(
        stpm.teacher, pre, images[torch.from_numpy(rows(np.sort(train_idx))).to(device)], cfg.batch_size, cfg.coreset,
        cfg.bank_max_mb, cfg.seed, cfg.quiet, cfg.coreset_dims, cfg.coreset_chunk)
    head_settings, thr, proxy = _calibrated_head(stpm, cfg, device, val_images, memory, grid)
    if head_settings["head"] == "memory":
        fit = _no_student_fit() | {"student_fitted_for_auto": fit}
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "quiet"},
        "device": str(device) if not cuda else torch.cuda.get_device_name(device),
        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "warnings": warnings,
        "val_images": [str(paths[i]) for i in val_idx],
        "train_images": [str(paths[i]) for i in np.sort(train_idx)],
        **fit, "memory": memory_info if head_settings["head"] != "stpm" else None, "no_defect_check": proxy,
        "decode_seconds": decode_s, "wall_seconds": time.perf_counter() - t0,
        "low_memory": low_memory, "threads": torch.get_num_threads() if not cuda else None,
        "peak_rss_mb": peak_rss_mb(),
    }
    ckpt_io.save(out / "model.pt", stpm.cpu(), image_size=cfg.image_size, fit=cfg.fit, thresholds=thr,
                 teacher_source=teacher_source, training=summary, sigma=cfg.sigma,
                 top_percent=cfg.score_top_percent, tiles=grid.as_meta() if grid else None,
                 input_blur=cfg.input_blur or 0.0, **head_settings)
    write_json(out / "training.json", {k: v for k, v in summary.items() if k not in ("val_images", "train_images")}
               | {"thresholds": thr})
    if fit["history"]:
        _plot_history(fit["history"], fit["best_epoch"], out / "loss.png")
    return summary


def _plot_history(history: list[dict[str, float]], best_epoch: int, path: Path) -> None:
    loss_curve(history, best_epoch, path)
