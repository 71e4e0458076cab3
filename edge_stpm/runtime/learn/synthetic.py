"""A model check that needs no defect samples: synthetic anomalies made from the user's own held-out good images,
and the proxy AUROC of a model on them (per kind), for ``train``'s summary, ``evaluate`` and ``--head auto``.

Kinds (each on a copy of a good image, inside a random region; ``mask`` marks the region):
- ``cutpaste``: a patch of another good image pasted elsewhere (CutPaste, Li et al. 2021);
- ``perlin``: a Perlin-noise texture blended into a Perlin-shaped region (DRAEM, Zavrtanik et al. 2021);
- ``line``: a thin dark or bright line (a scratch);
- ``blur``: a Gaussian blur inside an ellipse (a smudge, a defocused spot);
- ``brightness``: a brightness change inside an ellipse (a stain, a dent catching the light).
Seeded; the same images and seed give the same anomalies. Written here (numpy + OpenCV) rather than taken from a
library: the augmentation libraries that have such transforms (albumentations, imgaug) carry none of these masks.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import cv2
import numpy as np

from edge_stpm.runtime.learn.auroc import auroc

KINDS = ("cutpaste", "perlin", "line", "blur", "brightness")


def perlin(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin (gradient) noise ``shape`` float32 in about [-0.7, 0.7], ``cells`` lattice cells across."""
    h, w = shape
    angles = rng.uniform(0, 2 * np.pi, (cells + 1, cells + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], -1)
    ys, xs = np.linspace(0, cells, h, endpoint=False), np.linspace(0, cells, w, endpoint=False)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def dot(dy: int, dx: int) -> np.ndarray:
        g = grads[(y0 + dy)[:, None], (x0 + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    u, v = fade(fx), fade(fy)
    top = dot(0, 0) * (1 - u) + dot(0, 1) * u
    bottom = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return (top * (1 - v) + bottom * v).astype(np.float32)


def _ellipse(shape: tuple[int, int], rng: np.random.Generator, lo: float = 0.05, hi: float = 0.15) -> np.ndarray:
    h, w = shape
    m = np.zeros((h, w), np.uint8)
    axes = (int(rng.uniform(lo, hi) * w) + 1, int(rng.uniform(lo, hi) * h) + 1)
    centre = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
    cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _cutpaste(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    ph, pw = int(rng.uniform(0.08, 0.2) * h) + 2, int(rng.uniform(0.08, 0.2) * w) + 2
    sy, sx = rng.integers(0, h - ph), rng.integers(0, w - pw)
    ty, tx = rng.integers(0, h - ph), rng.integers(0, w - pw)
    patch = np.rot90(other[sy : sy + ph, sx : sx + pw], int(rng.integers(0, 4)))
    patch = cv2.resize(np.ascontiguousarray(patch), (pw, ph))
    out, mask = img.copy(), np.zeros((h, w), bool)
    out[ty : ty + ph, tx : tx + pw] = patch
    mask[ty : ty + ph, tx : tx + pw] = True
    return out, mask


def _perlin(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    shape_noise = perlin((h, w), int(rng.choice([2, 4, 8])), rng)
    mask = shape_noise > np.quantile(shape_noise, 1 - rng.uniform(0.02, 0.08))
    texture = (perlin((h, w), 16, rng) * 2 + 0.5).clip(0, 1)[..., None] * 255
    beta = rng.uniform(0.1, 0.4)  # subtle: a proxy every model passes ranks nothing
    out = img.astype(np.float32)
    out[mask] = (1 - beta) * out[mask] + beta * np.broadcast_to(texture, out.shape)[mask]
    return out.clip(0, 255).astype(np.uint8), mask


def _line(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    m = np.zeros((h, w), np.uint8)
    p0 = (int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.15, 0.85) * h))
    ang, length = rng.uniform(0, np.pi), rng.uniform(0.1, 0.35) * max(h, w)
    p1 = (int(p0[0] + length * np.cos(ang)), int(p0[1] + length * np.sin(ang)))
    cv2.line(m, p0, p1, 1, max(1, int(round(h / 128))), cv2.LINE_AA)
    mask = m.astype(bool)
    out = img.astype(np.float32)
    out[mask] += rng.choice([-1.0, 1.0]) * rng.uniform(30, 70)  # darker or brighter than the surface under it
    return out.clip(0, 255).astype(np.uint8), mask


def _blur(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = _ellipse(img.shape[:2], rng)
    out = img.copy()
    out[mask] = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 3.0))[mask]
    return out, mask


def _brightness(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = _ellipse(img.shape[:2], rng)
    out = img.astype(np.float32)
    out[mask] = out[mask] * rng.choice([rng.uniform(0.8, 0.9), rng.uniform(1.1, 1.2)])
    return out.clip(0, 255).astype(np.uint8), mask


_MAKERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "cutpaste": _cutpaste, "perlin": _perlin, "line": _line, "blur": _blur, "brightness": _brightness}


def make(images: np.ndarray, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One anomalous copy of each uint8 image ``(N, H, W, 3)`` → (images, masks ``(N, H, W)`` bool)."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    out, masks = [], []
    for i, img in enumerate(images):
        other = images[(i + 1 + int(rng.integers(0, max(1, len(images) - 1)))) % len(images)]
        a, m = _MAKERS[kind](img, other, rng)
        out.append(a)
        masks.append(m)
    return np.stack(out), np.stack(masks)


def anomalies(good: np.ndarray, seed: int = 0) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The no-defect check's synthetic anomalies WITH their masks, kind by kind in ``KINDS`` order: (kind, images
    ``(N, H, W, 3)`` uint8, masks ``(N, H, W)`` bool) — exactly the images ``proxy_auroc`` scores for the same
    uint8 ``good`` images ``(N, H, W, 3)`` and ``seed`` (``make``); one kind at a time to bound memory."""
    for kind in KINDS:
        images, masks = make(good, kind, seed)
        yield kind, images, masks


def proxy_auroc(infer: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], good: np.ndarray,
                good_scores: np.ndarray | None = None, seed: int = 0, batch: int = 8) -> dict[str, Any]:
    """Image AUROC of ``infer`` (uint8 batch → maps, scores) between held-out good images and their synthetic
    anomalous copies, per kind, and their mean ("mean"); pixel AUROC per kind. Labels are made, not given."""
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got = [infer(x[i : i + batch]) for i in range(0, len(x), batch)]
        return np.concatenate([np.asarray(g[0]).reshape(-1, *x.shape[1:3]) for g in got]), \
            np.concatenate([np.asarray(g[1]).reshape(-1) for g in got])

    if good_scores is None:
        good_scores = run(good)[1]
    out: dict[str, Any] = {"images": int(len(good)), "seed": seed, "kinds": {}}
    for kind in KINDS:
        bad, masks = make(good, kind, seed)
        maps, scores = run(bad)
        labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
        out["kinds"][kind] = {"image_auroc": auroc(np.r_[good_scores, scores], labels),
                              "pixel_auroc": auroc(np.asarray(maps, np.float32), masks)}
    out["mean"] = float(np.mean([k["image_auroc"] for k in out["kinds"].values()]))
    return out
