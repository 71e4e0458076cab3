"""The memory bank's coreset in numpy (torch-free: ``train`` and the box's own fit use the same code).

Greedy k-center (farthest-point) selection, PatchCore's coreset: start from a seeded random patch, then repeatedly
take the patch farthest from everything chosen. Exact, it costs k passes over all N patches — quadratic in practice
(1 % of N is kept), and memory-bound: on magnetic tile (≈ 400 k patches, 128 dims) it took ≈ 10 minutes on this
2-core CPU, and a 2×2 tiled fit (4× the patches and 4× the entries) did not finish.

``chunked`` makes the cost grow linearly with N: the patches are shuffled (seeded) into chunks of at most ``chunk``
rows, and each chunk keeps its share of the k entries by exact greedy selection within itself. Each pass then reads
one chunk (cache-sized) instead of all N, and the number of passes stays k. What it gives up: a chunk does not know
the other chunks' centres, so two chunks may both keep nearby patches; every patch is still within its own chunk's
covering radius of an entry. ``covering_radius`` measures that against the exact selection.

``two_stage`` (the default above ``EXACT_MAX`` patches: benchmarks/results/learn/RULE.md, addendum 3) keeps what the
chunks lose: stage 1 runs the chunked selection for ``OVERSAMPLE`` × k candidates, stage 2 the exact greedy for k
entries among the candidates only. Stage 1 grows linearly with N; stage 2 costs a tenth of the exact N·k.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from edge_stpm.contract.options import DEFAULT_CORESET_EXACT_MAX

CHUNK = 32_768  # patches per chunk: 16 MB of 128-dim float32 — stays in a CPU's cache while it is scanned k times
STEP = 256      # on_step is called every this many selections
EXACT_MAX = DEFAULT_CORESET_EXACT_MAX  # patches: the exact greedy up to here (≈ 2 min on a 2-core CPU), two-stage above
OVERSAMPLE = 10        # two-stage: stage 1 keeps this many candidates per entry

OnStep = Callable[[int], None]


def bank_entries(n_patches: int, fraction: float, dims: int, max_mb: float) -> int:
    """How many patches the coreset keeps: ``fraction`` of them, at least 1, at most what ``max_mb`` holds."""
    cap = max(1, int(max_mb * 2**20 // (4 * dims)))
    return max(1, min(n_patches, math.ceil(fraction * n_patches), cap))


def greedy(z: np.ndarray, k: int, first: int, on_step: OnStep | None = None) -> np.ndarray:
    """Indices of ``k`` rows of ``z`` ``(N, D)`` float32 by exact greedy k-center from row ``first``."""
    n = z.shape[0]
    if k >= n:
        return np.arange(n)
    z_sq = np.einsum("ij,ij->i", z, z)
    min_d = np.full(n, np.inf, np.float32)
    chosen = np.empty(k, np.int64)
    idx = int(first)
    for i in range(k):
        chosen[i] = idx
        c = z[idx]
        d = z_sq - 2.0 * (z @ c) + float(c @ c)
        np.minimum(min_d, d, out=min_d)
        idx = int(np.argmax(min_d))
        if on_step is not None and (i + 1) % STEP == 0:
            on_step(STEP)
    return chosen


def shares(sizes: list[int], k: int) -> list[int]:
    """``k`` split over chunks in proportion to their sizes (largest remainders), each at least 1, summing to k."""
    n = sum(sizes)
    raw = [k * s / n for s in sizes]
    out = [max(1, math.floor(r)) for r in raw]
    order = sorted(range(len(sizes)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    i = 0
    while sum(out) < k:
        out[order[i % len(order)]] += 1
        i += 1
    while sum(out) > k:  # only when k < the number of chunks: drop from the smallest
        j = min((j for j in range(len(out)) if out[j] > 0), key=lambda j: sizes[j])
        out[j] -= 1
    return [min(o, s) for o, s in zip(out, sizes, strict=True)]


def method(n: int, k: int, chunk: int = 0, exact_max: int = EXACT_MAX) -> str:
    """Which selection ``select`` runs for ``n`` patches and ``k`` entries: all, chunked, exact or two-stage."""
    if k >= n:
        return "all"
    if chunk > 0:
        return "chunked" if n > chunk else "exact"
    return "exact" if n <= exact_max or OVERSAMPLE * k >= n else "two-stage"


def select(feats: np.ndarray, k: int, seed: int = 0, chunk: int = 0, on_step: OnStep | None = None,
           exact_max: int = EXACT_MAX) -> np.ndarray:
    """Indices of ``k`` rows of ``feats`` ``(N, D)``: by ``method`` — chunks of ``chunk`` rows when it is above 0,
    else the exact greedy k-center up to ``exact_max`` rows and the two-stage one above (see the module doc).
    Seeded: the same inputs give the same indices. ``on_step`` counts up to about k whatever the method."""
    z = np.ascontiguousarray(feats, np.float32)
    n = z.shape[0]
    how = method(n, k, chunk, exact_max)
    rng = np.random.default_rng(int(seed))
    if how == "all":
        return np.arange(n)
    if how == "exact":
        return greedy(z, k, int(rng.integers(n)), on_step)
    if how == "chunked":
        return _chunked(z, k, chunk, rng, on_step)
    return two_stage(z, k, rng, on_step)


def _chunked(z: np.ndarray, k: int, chunk: int, rng: np.random.Generator, on_step: OnStep | None) -> np.ndarray:
    n = z.shape[0]
    order = rng.permutation(n)
    parts = np.array_split(order, math.ceil(n / chunk))
    out = []
    for part, kk in zip(parts, shares([len(p) for p in parts], k), strict=True):
        if kk:
            local = greedy(z[part], kk, int(rng.integers(len(part))), on_step)
            out.append(part[local])
    return np.concatenate(out)


def two_stage(z: np.ndarray, k: int, rng: np.random.Generator, on_step: OnStep | None = None) -> np.ndarray:
    """``k`` rows: ``OVERSAMPLE`` × k candidates by chunks of ``CHUNK``, then the exact greedy among them. Progress
    is reported in stage-weighted steps that add up to about k (stage 1 costs ≈ 10·k·CHUNK, stage 2 ≈ 10·k²)."""
    m = min(z.shape[0], OVERSAMPLE * k)
    first = CHUNK / (CHUNK + k)  # stage 1's share of the work
    cand = _chunked(z, m, CHUNK, rng, _scaled(on_step, k * first / m))
    local = greedy(z[cand], k, int(rng.integers(len(cand))), _scaled(on_step, 1.0 - first))
    return cand[local]


def _scaled(on_step: OnStep | None, factor: float) -> OnStep | None:
    """``on_step`` fed ``factor`` × the steps it is given, in whole steps (the remainder carried)."""
    if on_step is None:
        return None
    carry = [0.0]

    def step(n: int) -> None:
        carry[0] += n * factor
        whole = int(carry[0])
        if whole:
            carry[0] -= whole
            on_step(whole)
    return step


def covering_radius(feats: np.ndarray, chosen: np.ndarray, block: int = 65_536) -> float:
    """The largest distance from any row of ``feats`` to its nearest chosen row (what a coreset promises)."""
    z = np.ascontiguousarray(feats, np.float32)
    c = z[chosen]
    c_sq = np.einsum("ij,ij->i", c, c)
    worst = 0.0
    for i in range(0, len(z), block):
        b = z[i : i + block]
        d = np.einsum("ij,ij->i", b, b)[:, None] - 2.0 * (b @ c.T) + c_sq[None, :]
        worst = max(worst, float(np.sqrt(max(0.0, d.min(axis=1).max()))))
    return worst


def spacing(bank: np.ndarray, block: int = 4096) -> float:
    """The smallest distance between two entries of a greedy k-center bank ``(M, D)``. Greedy selection takes each
    entry at the current covering radius, which only shrinks, so this is the radius at the last pick: every patch
    the bank was chosen from lies within about this distance of an entry."""
    z = np.ascontiguousarray(bank, np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    best = np.inf
    for i in range(0, len(z), block):
        d = sq[i : i + block, None] - 2.0 * (z[i : i + block] @ z.T) + sq[None, :]
        rows = np.arange(i, min(i + block, len(z)))
        d[rows - i, rows] = np.inf
        best = min(best, float(d.min()))
    return float(np.sqrt(max(best, 0.0)))


def extend(bank: np.ndarray, new: np.ndarray, radius: float, cap: int,
           on_step: OnStep | None = None) -> np.ndarray:
    """Indices of rows of ``new`` to add to ``bank``: greedy k-center continued from the bank's entries, until every
    new patch is within ``radius`` of an entry (the bank's own spacing: new parts covered as densely as the old ones)
    or ``cap`` rows are taken. The old entries all stay."""
    z = np.ascontiguousarray(new, np.float32)
    if cap <= 0 or len(z) == 0:
        return np.empty(0, np.int64)
    z_sq = np.einsum("ij,ij->i", z, z)
    b = np.ascontiguousarray(bank, np.float32)
    b_sq = np.einsum("ij,ij->i", b, b)
    min_d = np.full(len(z), np.inf, np.float32)
    for i in range(0, len(b), 2048):
        d = z_sq[:, None] - 2.0 * (z @ b[i : i + 2048].T) + b_sq[None, i : i + 2048]
        np.minimum(min_d, d.min(axis=1), out=min_d)
    limit = np.float32(radius) ** 2
    chosen: list[int] = []
    while len(chosen) < cap:
        idx = int(np.argmax(min_d))
        if min_d[idx] <= limit:
            break
        chosen.append(idx)
        c = z[idx]
        np.minimum(min_d, z_sq - 2.0 * (z @ c) + float(c @ c), out=min_d)
        if on_step is not None and len(chosen) % STEP == 0:
            on_step(STEP)
    return np.asarray(chosen, np.int64)
