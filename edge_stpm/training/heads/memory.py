"""The memory-bank head (PatchCore's recipe, Roth et al., CVPR 2022) on the frozen teacher's pyramid.

Features: pyramid levels 2 and 3 (strides 8 and 16), each averaged over its 3×3 neighbourhood, level 3
bilinearly resized to level 2's grid, concatenated along channels → ``(B, D, h, w)`` at stride 8 (D = 128 for
MobileNetV2). Memory: the patches of the training images, reduced by greedy k-center (coreset) selection on a
random projection (or, by default, on the features themselves). Map: each patch's Euclidean distance to its nearest memory entry, computed in the graph as one
MatMul, ‖m‖² − 2 f·mᵀ, a ReduceMin, then + ‖f‖², so every backend computes the same score. Nothing is trained.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edge_stpm.common.progress import bar

LEVELS = (1, 2)  # indices into the trunk's three levels (strides 4, 8, 16): levels 2 and 3
from edge_stpm.contract.options import (  # noqa: E402,F401
    DEFAULT_BANK_MAX_MB,
    DEFAULT_CORESET,
    DEFAULT_CORESET_CHUNK,
    DEFAULT_CORESET_DIMS,
)
from edge_stpm.runtime.learn.coreset import bank_entries, select  # noqa: E402,F401  (bank_entries: re-exported)

PROJECTION_DIMS = DEFAULT_CORESET_DIMS  # the k-center selection runs on a random projection to this many dimensions


def patch_features(levels: list[torch.Tensor]) -> torch.Tensor:
    """The teacher's pyramid → locally aware patch features ``(B, D, h, w)`` float32 at level 2's stride."""
    feats = [F.avg_pool2d(levels[i].float(), 3, stride=1, padding=1) for i in LEVELS]
    size = feats[0].shape[-2:]
    feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
    return torch.cat(feats, dim=1)


def feature_dims(channels: tuple[int, ...]) -> int:
    """D of ``patch_features`` for a backbone with these level channels."""
    return sum(channels[i] for i in LEVELS)


class MemoryBank(nn.Module):
    """Nearest-neighbour distance of every patch to a fixed bank ``(M, D)``: ``(B, D, h, w)`` → ``(B, 1, h, w)``."""

    def __init__(self, bank: torch.Tensor) -> None:
        super().__init__()
        bank = bank.detach().float().contiguous()
        self.register_buffer("bank_t", bank.t().contiguous())  # (D, M): the MatMul's constant operand
        self.register_buffer("bank_sq", (bank * bank).sum(dim=1).view(1, 1, -1))  # (1, 1, M)

    @property
    def entries(self) -> int:
        return int(self.bank_t.shape[1])

    @property
    def bank(self) -> torch.Tensor:
        return self.bank_t.t()

    def nbytes(self) -> int:
        return int(self.bank_t.numel() * 4)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, d, h, w = feats.shape
        f = feats.float().flatten(2).transpose(1, 2)  # (B, hw, D)
        # ‖m‖² − 2 f·m per entry (B, hw, M), its minimum over the bank, then + ‖f‖² (constant along the bank, so it is
        # added after the ReduceMin: one full-size elementwise op fewer than ‖f‖² − 2 f·m + ‖m‖², the same distances)
        part = self.bank_sq - 2.0 * torch.matmul(f, self.bank_t)
        nearest = torch.amin(part, dim=2) + (f * f).sum(dim=2)  # ONNX ReduceMin
        return torch.sqrt(torch.clamp(nearest, min=0.0)).view(b, 1, h, w)


@torch.no_grad()
def k_center_greedy(feats: torch.Tensor, k: int, seed: int = 0, dims: int = PROJECTION_DIMS,
                    on_step: Callable[[int], None] | None = None, chunk: int = DEFAULT_CORESET_CHUNK) -> torch.Tensor:
    """Indices of ``k`` rows of ``feats`` ``(N, D)`` chosen by greedy k-center (farthest point) selection, on a
    seeded Gaussian random projection to ``dims`` dimensions (as PatchCore; distances are approximately kept).
    The selection itself is ``runtime/learn/coreset.select`` (numpy, shared with the box's torch-free fit): exact,
    from a seeded random first row, or with ``chunk`` > 0 and N > ``chunk`` chunked (cost linear in N).
    ``on_step(n)`` reports progress every 256 selections."""
    n = feats.shape[0]
    if k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed))
    if dims and feats.shape[1] > dims:
        proj = torch.randn(feats.shape[1], dims, generator=g) / math.sqrt(dims)
        z = feats.float() @ proj
    else:
        z = feats.float()
    return torch.from_numpy(select(z.numpy(), k, seed, chunk, on_step))


@torch.no_grad()
def collect_patches(teacher: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Patch features of every normalised image batch the iterable yields → ``(N·h·w, D)`` float32."""
    out = []
    for x in batches:
        f = patch_features(teacher(x))
        out.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).float())
    return torch.cat(out)


def build_bank(patches: torch.Tensor, fraction: float, max_mb: float, seed: int,
               on_step: Callable[[int], None] | None = None, dims: int = PROJECTION_DIMS,
               chunk: int = DEFAULT_CORESET_CHUNK) -> torch.Tensor:
    """The memory: the coreset of ``patches`` ``(N, D)`` within the budget → ``(M, D)`` float32 (k-center on a
    projection to ``dims``; 0 = on the features themselves; ``chunk`` as ``k_center_greedy``)."""
    k = bank_entries(patches.shape[0], fraction, patches.shape[1], max_mb)
    return patches[k_center_greedy(patches, k, seed, dims=dims, on_step=on_step, chunk=chunk)].contiguous()


def fit_memory(teacher: nn.Module, preprocess: nn.Module, images: torch.Tensor, batch_size: int, coreset: float,
               max_mb: float, seed: int, quiet: bool = False,
               dims: int = PROJECTION_DIMS, chunk: int = DEFAULT_CORESET_CHUNK) -> tuple[torch.Tensor, dict[str, Any]]:
    """The memory bank of good images (uint8 NHWC ``images``): the teacher's patch features of all of them,
    reduced to the coreset budget, with progress; returns the bank ``(M, D)`` and what the summary reports."""
    t0 = time.perf_counter()
    teacher.eval()
    with bar(quiet) as progress:
        task = progress.add_task("teacher features", total=len(images), info="")

        def batches() -> Iterator[torch.Tensor]:
            for i in range(0, len(images), batch_size):
                yield preprocess(images[i : i + batch_size])
                progress.advance(task, min(batch_size, len(images) - i))

        patches = collect_patches(teacher, batches()).cpu()
        features_s = time.perf_counter() - t0
        k = bank_entries(patches.shape[0], coreset, patches.shape[1], max_mb)
        task = progress.add_task("coreset (k-center)", total=k, info=f"{k} of {patches.shape[0]} patches")
        bank = build_bank(patches, coreset, max_mb, seed, on_step=lambda n: progress.advance(task, n), dims=dims,
                          chunk=chunk)
    return bank, {"images": int(len(images)), "patches": int(patches.shape[0]), "entries": int(bank.shape[0]),
                  "dims": int(bank.shape[1]), "bytes": int(bank.numel() * 4), "coreset": coreset,
                  "bank_max_mb": max_mb, "projection_dims": dims, "coreset_chunk": chunk,
                  "features_seconds": features_s,
                  "coreset_seconds": time.perf_counter() - t0 - features_s}
